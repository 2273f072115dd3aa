//! Distilling a conventional, tightly coupled draft: the baseline ECSpec's static
//! shared-backbone draft is measured against (design.md §5).
//!
//! The student is a standalone model in the base's vocabulary with **its own** embedding (tied
//! to its LM head), L decoder layers and final norm — nothing is shared with the target, so
//! the edge must hold and, when the target changes, re-download all of it. It is initialised
//! from the base (layers `0..L-1` and the last layer, as DistilBERT initialises a student from
//! its teacher's layers, Sanh et al. 2019) and every parameter is trained against one target
//! version `T_v` with the anchor run's objective ([`crate::draft`]):
//!
//! `w_mse · ‖h_S − h_T‖² / ‖h_T‖² + w_kl · KL(p_T ‖ p_S)`
//!
//! `h` being the last hidden states before the final norm and `p` the next-token distributions
//! (the teacher's top-k, renormalised, with [`DistillConfig::kl_top_k`]). The teacher's
//! features are computed once by the runtime and cached like the base's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use ecspec_model::anchor::StoreDtype;
use ecspec_model::gguf::GgufFile;
use ecspec_model::{LoadedModel, Transformer};

use crate::checkpoint::StepRecord;
use crate::draft::{cached_teacher_features, BaseFeatures};
use crate::error::{Result, TrainError};
use crate::loss::{distill_kl, Teacher};
use crate::model::{layer_forward, rms_norm, token_tensor, Layer, Linear, Positions};
use crate::optim::NamedVar;
use crate::trainer::{run_settings, BatchLoss, Objective, Run, Schedule, TrainReporter};

/// Settings of a conventional-draft distillation run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DistillConfig {
    /// L: the student's decoder layers (≥ 1, fewer than the base's).
    pub layers: usize,
    /// Tokens per training window.
    pub seq_len: usize,
    /// Weight of the feature-regression MSE (relative to the targets' mean square).
    pub mse_weight: f64,
    /// Weight of the distillation KL.
    pub kl_weight: f64,
    /// Distil on the teacher's top-k only (renormalised); `None`: the full distribution.
    pub kl_top_k: Option<usize>,
    /// Optimisation.
    pub schedule: Schedule,
}

/// What a finished distillation produced.
#[derive(Debug, Clone)]
pub struct DistillOutcome {
    /// The draft (`ecspec_model::standalone` format, F16).
    pub draft_path: PathBuf,
    /// Its size in bytes: what a conventional edge downloads to re-synchronise.
    pub file_bytes: u64,
    /// Loss per step, from step 1.
    pub history: Vec<StepRecord>,
    /// Mean training tokens per second of the steps in `history`.
    pub tokens_per_sec: f64,
}

struct StudentObjective<'a> {
    config: ecspec_model::ModelConfig,
    embedding: Tensor,
    layers: Vec<Layer>,
    final_norm: Tensor,
    pos: Positions,
    windows: &'a [Vec<u32>],
    feats: &'a BaseFeatures,
    cfg: &'a DistillConfig,
}

impl Objective for StudentObjective<'_> {
    fn examples(&self) -> usize {
        self.windows.len()
    }

    fn loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let c = &self.config;
        let ws: Vec<&[u32]> = batch.iter().map(|&i| self.windows[i].as_slice()).collect();
        let tokens = token_tensor(&ws)?;
        let (b, t) = tokens.dims2()?;
        let mut x = self
            .embedding
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, t, c.hidden_size))?;
        for l in &self.layers {
            x = layer_forward(l, c, &self.pos, &x)?;
        }
        let idx = Tensor::from_vec(
            batch.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
            batch.len(),
            &Device::Cpu,
        )?;
        let tgt = self.feats.target.index_select(&idx, 0)?;
        let scale = tgt.sqr()?.mean_all()?.to_scalar::<f32>()?.max(1e-12) as f64;
        let mse = ((&x - &tgt)?.sqr()?.mean_all()? / scale)?;
        let head = Linear {
            weight: self.embedding.clone(),
            bias: None,
            lora: None,
        };
        let logits = head
            .forward(&rms_norm(&x, &self.final_norm, c.rms_eps)?)?
            .reshape((b * t, c.vocab_size))?;
        let teacher =
            match &self.feats.top_k {
                Some((ids, probs)) => Teacher::Sparse {
                    k: ids.dim(2)?,
                    ids: ids.index_select(&idx, 0)?.flatten_all()?.to_vec1::<u32>()?,
                    probs: probs
                        .index_select(&idx, 0)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                },
                None => return Err(TrainError::Config(
                    "distilling a standalone draft needs kl_top_k (the teacher's top-k is cached)"
                        .into(),
                )),
            };
        let kl = distill_kl(&logits, Arc::new(teacher))?.mean_all()?;
        let loss = ((&mse * self.cfg.mse_weight)? + (&kl * self.cfg.kl_weight)?)?;
        Ok(BatchLoss {
            loss,
            parts: vec![
                ("mse".to_string(), mse.to_scalar::<f32>()?),
                ("kl".to_string(), kl.to_scalar::<f32>()?),
            ],
            tokens: b * t,
        })
    }
}

/// Distils a standalone draft of `cfg.layers` layers from `teacher` (the base or a version
/// built on it; `teacher_id` names its weights, e.g. the base hash plus the adapter's SHA-256)
/// on `windows`, writing cached teacher features, checkpoints, `draft.safetensors` and
/// `distill-draft.json` into `out`. With `resume`, continues the checkpoint in `out`.
///
/// # Errors
/// Invalid settings (L out of range, no `kl_top_k`, a base with an untied LM head), model and
/// I/O errors, a checkpoint made with other settings, a diverged loss.
#[allow(clippy::too_many_arguments)]
pub fn distill_draft(
    base: &LoadedModel,
    teacher: &Transformer,
    teacher_id: &str,
    windows: &[Vec<u32>],
    cfg: &DistillConfig,
    out: &Path,
    resume: bool,
    reporter: &mut dyn TrainReporter,
) -> Result<DistillOutcome> {
    let n = base.transformer.num_layers();
    if cfg.layers == 0 || cfg.layers >= n {
        return Err(TrainError::Config(format!(
            "a distilled draft has 1 ≤ L < {n} layers, got {}",
            cfg.layers
        )));
    }
    if cfg.kl_top_k.is_none() {
        return Err(TrainError::Config(
            "give kl_top_k: the teacher's top-k distribution is what is cached".into(),
        ));
    }
    if cfg.seq_len == 0 || windows.iter().any(|w| w.len() != cfg.seq_len) {
        return Err(TrainError::Config(format!(
            "every window must hold seq_len = {} tokens",
            cfg.seq_len
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let mut f = GgufFile::open(&base.path)?;
    if f.has_tensor("output.weight") {
        return Err(TrainError::Config(format!(
            "{}: the base has its own LM head; standalone drafts tie the head to the embedding",
            base.path.display()
        )));
    }
    let frozen = crate::model::F32Model::load(&mut f, 0..cfg.layers - 1)?;
    let last = Layer::load(&mut f, &frozen.config, n - 1)?;
    let feats =
        cached_teacher_features(teacher, teacher_id, 1, cfg.kl_top_k, windows, out, reporter)?;

    let mut vars = Vec::new();
    let emb = Var::from_tensor(&frozen.embedding.copy()?)?;
    vars.push(NamedVar {
        name: "token_embd.weight".into(),
        var: emb.clone(),
    });
    let norm = Var::from_tensor(&frozen.final_norm.copy()?)?;
    vars.push(NamedVar {
        name: "output_norm.weight".into(),
        var: norm.clone(),
    });
    let mut layers = Vec::with_capacity(cfg.layers);
    for (i, l) in frozen
        .layers
        .iter()
        .chain(std::iter::once(&last))
        .enumerate()
    {
        let (layer, lv) = l.trainable_copy()?;
        layers.push(layer);
        vars.extend(lv.into_iter().map(|(s, var)| NamedVar {
            name: format!("blk.{i}.{s}"),
            var,
        }));
    }
    let settings = run_settings(
        cfg,
        &["steps", "checkpoint_every"],
        &base.base_hash,
        windows,
        &[("teacher", teacher_id.into())],
    )?;
    let mut run = Run::start(
        "distill-draft",
        settings,
        vars,
        &cfg.schedule,
        out,
        resume,
        reporter,
    )?;
    let obj = StudentObjective {
        config: frozen.config.clone(),
        embedding: emb.as_tensor().clone(),
        layers,
        final_norm: norm.as_tensor().clone(),
        pos: Positions::new(&frozen.config, cfg.seq_len)?,
        windows,
        feats: &feats,
        cfg,
    };
    let t0 = Instant::now();
    run.train(&obj, &cfg.schedule, out, reporter)?;
    let draft_path = out.join("draft.safetensors");
    let mut tensors = Vec::with_capacity(run.opt.vars().len());
    for v in run.opt.vars() {
        tensors.push((
            v.name.clone(),
            v.var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ));
    }
    ecspec_model::standalone::save(
        &draft_path,
        &frozen.config,
        cfg.layers,
        &tensors,
        StoreDtype::F16,
    )?;
    let file_bytes = std::fs::metadata(&draft_path)
        .map_err(|e| TrainError::io(&draft_path, e))?
        .len();
    let tokens_per_sec = run.write_summary(
        out,
        base,
        cfg,
        windows.len(),
        t0,
        &[
            ("teacher", teacher_id.into()),
            ("file_bytes", file_bytes.into()),
        ],
    )?;
    Ok(DistillOutcome {
        draft_path,
        file_bytes,
        history: run.history,
        tokens_per_sec,
    })
}
