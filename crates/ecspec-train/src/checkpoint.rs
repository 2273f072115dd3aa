//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint is a directory `DIR/checkpoint/` holding
//! - `state.safetensors`: the trainable tensors (`param/<name>`) and AdamW's moments
//!   (`adam_m/<name>`, `adam_v/<name>`), f32;
//! - `state.json`: [`CheckpointMeta`] — the kind of run, its settings (a resumed run must use
//!   the same, except the number of steps), the step, the optimiser's step, the batch
//!   sampler's RNG (seed and ChaCha word position) and the loss history so far.
//!
//! It is written to `checkpoint.tmp/` and then renamed into place (the previous one moved to
//! `checkpoint.old/` first and removed after), so an interrupted write never leaves a torn
//! checkpoint: [`load`] falls back to `checkpoint.old/` if `checkpoint/` is missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Result, TrainError};
use crate::optim::{AdamWState, NamedVar};

/// One training step's record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// Step number, from 1.
    pub step: usize,
    /// The loss minimised.
    pub loss: f32,
    /// Its named parts (e.g. `mse`, `kl`), unweighted.
    pub parts: Vec<(String, f32)>,
    /// Learning rate used.
    pub lr: f64,
    /// Tokens in the batch.
    pub tokens: usize,
    /// Wall time of the step, seconds.
    pub seconds: f64,
}

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// `train-draft` or `evolve`.
    pub kind: String,
    /// The run's settings, without the step count (must match on resume).
    pub settings: serde_json::Value,
    /// Steps done.
    pub step: usize,
    /// AdamW's update count.
    pub optimizer_step: usize,
    /// Seed of the batch sampler.
    pub rng_seed: u64,
    /// ChaCha8 word position of the batch sampler (decimal string: it is a u128).
    pub rng_word_pos: String,
    /// Loss history so far.
    pub history: Vec<StepRecord>,
}

/// Directory of the checkpoint of a run writing to `out`.
pub fn dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

fn with_suffix(p: &Path, s: &str) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(s);
    p.with_file_name(name)
}

/// Writes a checkpoint into `out/checkpoint/`, atomically.
pub fn save(
    out: &Path,
    meta: &CheckpointMeta,
    params: &[NamedVar],
    opt: &AdamWState,
) -> Result<()> {
    let final_dir = dir(out);
    let tmp = with_suffix(&final_dir, ".tmp");
    let old = with_suffix(&final_dir, ".old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for p in params {
        tensors.insert(format!("param/{}", p.name), p.var.as_tensor().copy()?);
    }
    for (name, m, v) in &opt.moments {
        tensors.insert(format!("adam_m/{name}"), m.clone());
        tensors.insert(format!("adam_v/{name}"), v.clone());
    }
    candle_core::safetensors::save(&tensors, tmp.join("state.safetensors"))?;
    let json =
        serde_json::to_string_pretty(meta).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    let jp = tmp.join("state.json");
    std::fs::write(&jp, json).map_err(|e| TrainError::io(&jp, e))?;
    let _ = std::fs::remove_dir_all(&old);
    if final_dir.exists() {
        std::fs::rename(&final_dir, &old).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// A loaded checkpoint.
pub struct Loaded {
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// Saved parameter values by name.
    pub params: HashMap<String, Tensor>,
    /// Saved optimiser state, in the order of `names`.
    pub moments: HashMap<String, (Tensor, Tensor)>,
}

impl Loaded {
    /// The optimiser state for variables `names`, in that order.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] naming a variable without saved moments.
    pub fn adam_state(&self, names: &[String]) -> Result<AdamWState> {
        let mut moments = Vec::with_capacity(names.len());
        for n in names {
            let (m, v) = self
                .moments
                .get(n)
                .ok_or_else(|| TrainError::Checkpoint(format!("no optimizer state for `{n}`")))?;
            moments.push((n.clone(), m.clone(), v.clone()));
        }
        Ok(AdamWState {
            step: self.meta.optimizer_step,
            moments,
        })
    }
}

/// Reads the checkpoint of a run writing to `out`.
///
/// # Errors
/// [`TrainError::Checkpoint`] when there is none or it is malformed.
pub fn load(out: &Path) -> Result<Loaded> {
    let mut d = dir(out);
    if !d.join("state.json").is_file() {
        let old = with_suffix(&d, ".old");
        if old.join("state.json").is_file() {
            d = old;
        } else {
            return Err(TrainError::Checkpoint(format!(
                "no checkpoint in {} to resume from",
                dir(out).display()
            )));
        }
    }
    let jp = d.join("state.json");
    let text = std::fs::read_to_string(&jp).map_err(|e| TrainError::io(&jp, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", jp.display())))?;
    let tensors = candle_core::safetensors::load(d.join("state.safetensors"), &Device::Cpu)?;
    let mut params = HashMap::new();
    let mut m = HashMap::new();
    let mut v = HashMap::new();
    for (k, t) in tensors {
        if let Some(n) = k.strip_prefix("param/") {
            params.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("adam_m/") {
            m.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("adam_v/") {
            v.insert(n.to_string(), t);
        } else {
            return Err(TrainError::Checkpoint(format!(
                "unexpected tensor `{k}` in {}",
                d.display()
            )));
        }
    }
    let mut moments = HashMap::new();
    for (n, mt) in m {
        let vt = v
            .remove(&n)
            .ok_or_else(|| TrainError::Checkpoint(format!("`adam_v/{n}` missing")))?;
        moments.insert(n, (mt, vt));
    }
    Ok(Loaded {
        meta,
        params,
        moments,
    })
}
