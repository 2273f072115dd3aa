//! Training the shared-backbone draft's anchor layer (design.md §5), once, against the base.
//!
//! The draft is `E → L_1..L_k → A → final norm → H`: the base's embedding, first k layers,
//! final norm and head (all frozen) around one anchor layer A, initialised as a copy of the
//! base's last layer L_n and trained to minimise
//!
//! `w_mse · ‖h_D − h_B‖² / ‖h_B‖² + w_kl · KL(p_B ‖ p_D)`
//!
//! where `h_D` is A's output and `h_B` the base's last hidden state (both before the final
//! norm; the squared error is taken relative to the batch's mean square of `h_B`, because a
//! few huge activations of the last layer would otherwise make it thousands of times the KL), and `p_B`, `p_D` the next-token distributions at temperature 1 — feature regression
//! plus knowledge distillation (Hinton et al. 2015); EAGLE (Li et al. 2024, arXiv 2401.15077)
//! regresses draft features onto target features in the same way. With
//! [`DraftTrainConfig::kl_top_k`], `p_B` is the base's top-k renormalised (cheaper: the base's
//! logits are computed once, when the features are).
//!
//! Everything before A is frozen, so A's input `h_k` and the targets `h_B` are computed once
//! per window by the runtime ([`ecspec_model::Transformer`], the same quantized kernels the
//! edge runs the first k layers with) and cached in `OUT/features-<key>.safetensors`; a step
//! then costs one layer forward and backward plus the head.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ecspec_model::anchor::StoreDtype;
use ecspec_model::gguf::GgufFile;
use ecspec_model::{LoadedModel, LoraAdapter, Transformer};
use sha2::{Digest, Sha256};

use crate::checkpoint::StepRecord;
use crate::error::{Result, TrainError};
use crate::loss::{distill_kl, log_softmax_rows, sparse_teacher, Teacher};
use crate::model::{layer_forward, token_tensor, F32Model, Layer, Positions};
use crate::optim::NamedVar;
use crate::trainer::{run_settings, BatchLoss, Objective, Run, Schedule, TrainReporter};

/// Settings of an anchor training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DraftTrainConfig {
    /// k: base layers the draft reuses before its anchor.
    pub shared_layers: usize,
    /// Tokens per training window.
    pub seq_len: usize,
    /// Weight of the feature-regression MSE (relative to the targets' mean square).
    pub mse_weight: f64,
    /// Weight λ of the distillation KL.
    pub kl_weight: f64,
    /// Distil on the base's top-k only (renormalised); `None`: the full distribution.
    pub kl_top_k: Option<usize>,
    /// Optimisation.
    pub schedule: Schedule,
    /// Also train LoRA updates of the draft's own copies of its k lower layers (edge-only;
    /// the embedding, final norm and head stay frozen and shared). `None`: the lower layers
    /// are the base's, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_lora: Option<LowerLora>,
}

/// LoRA on the draft's lower layers (Hu et al. 2021, arXiv 2106.09685): `W + (α/r)·B·A` on
/// the named projections of layers `0..k`, saved in PEFT layout as `OUT/lower/`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LowerLora {
    /// Rank r.
    pub rank: usize,
    /// α (updates scaled by α / r).
    pub alpha: f32,
    /// PEFT module names (`q_proj`, …, `down_proj`).
    pub modules: Vec<String>,
}

impl Default for DraftTrainConfig {
    fn default() -> Self {
        Self {
            shared_layers: 4,
            seq_len: 128,
            mse_weight: 1.0,
            kl_weight: 1.0,
            kl_top_k: None,
            schedule: Schedule {
                steps: 300,
                batch_windows: 4,
                lr: 3e-4,
                warmup_steps: 20,
                weight_decay: 0.0,
                seed: 0,
                checkpoint_every: 50,
            },
            lower_lora: None,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct DraftOutcome {
    /// The trained anchor (`ecspec_model::anchor` format).
    pub anchor_path: PathBuf,
    /// Loss per step, from step 1 (including steps done before a resume).
    pub history: Vec<StepRecord>,
    /// Mean training tokens per second of the steps in `history`.
    pub tokens_per_sec: f64,
    /// The lower layers' LoRA adapter (PEFT layout), with [`DraftTrainConfig::lower_lora`].
    pub lower_adapter: Option<PathBuf>,
}

/// The base's features over the training windows: the anchor's input (after layer k) and the
/// base's last hidden state, `N × T × d` each; optionally the base's top-k distribution.
pub struct BaseFeatures {
    /// After layer k.
    pub anchor_input: Tensor,
    /// After the last layer, before the final norm.
    pub target: Tensor,
    /// `(ids, probs)`, `N × T × k` each, when distilling on the top-k.
    pub top_k: Option<(Tensor, Tensor)>,
}

fn features_key(
    teacher_id: &str,
    n_layers: usize,
    k: usize,
    top_k: Option<usize>,
    windows: &[Vec<u32>],
) -> String {
    let mut h = Sha256::new();
    h.update(teacher_id.as_bytes());
    h.update(n_layers.to_le_bytes());
    h.update(k.to_le_bytes());
    h.update(top_k.unwrap_or(0).to_le_bytes());
    for w in windows {
        h.update((w.len() as u64).to_le_bytes());
        for t in w {
            h.update(t.to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// Runs the base (runtime kernels) over every window and collects [`BaseFeatures`].
///
/// # Errors
/// Model errors (token out of range, context overflow); windows of unequal length.
pub fn compute_features(
    base: &Transformer,
    k: usize,
    top_k: Option<usize>,
    windows: &[Vec<u32>],
    reporter: &mut dyn TrainReporter,
) -> Result<BaseFeatures> {
    let c = base.config();
    let (n, d, v) = (base.num_layers(), c.hidden_size, c.vocab_size);
    if k == 0 || k >= n {
        return Err(TrainError::Config(format!(
            "k = {k} shared layers; the base has {n}"
        )));
    }
    let t = windows.first().map_or(0, |w| w.len());
    if t == 0 || windows.iter().any(|w| w.len() != t) {
        return Err(TrainError::Shape(
            "training windows must be non-empty and of equal length".into(),
        ));
    }
    reporter.stage("computing the teacher's features", windows.len() as u64);
    let (mut inp, mut tgt) = (
        Vec::with_capacity(windows.len() * t * d),
        Vec::with_capacity(windows.len() * t * d),
    );
    let (mut ids, mut probs) = (Vec::new(), Vec::new());
    for (i, w) in windows.iter().enumerate() {
        let mut cache = base.new_cache();
        let mut h = base.embed(w)?;
        base.run_layers(&mut cache, &mut h, 0, 0..k)?;
        inp.extend_from_slice(&h);
        base.run_layers(&mut cache, &mut h, 0, k..n)?;
        tgt.extend_from_slice(&h);
        if let Some(kk) = top_k {
            let logits = base.logits(&h)?;
            let flat: Vec<f32> = logits.row_slices().concat();
            if let Teacher::Sparse {
                ids: i, probs: p, ..
            } = sparse_teacher(&flat, v, kk)
            {
                ids.extend(i);
                probs.extend(p);
            }
        }
        reporter.advance(i as u64 + 1);
    }
    let nw = windows.len();
    let top_k = match top_k {
        Some(kk) => {
            let kk = kk.min(v);
            Some((
                Tensor::from_vec(ids, (nw, t, kk), &Device::Cpu)?,
                Tensor::from_vec(probs, (nw, t, kk), &Device::Cpu)?,
            ))
        }
        None => None,
    };
    Ok(BaseFeatures {
        anchor_input: Tensor::from_vec(inp, (nw, t, d), &Device::Cpu)?,
        target: Tensor::from_vec(tgt, (nw, t, d), &Device::Cpu)?,
        top_k,
    })
}

/// [`compute_features`] of the base, cached in `out` under a key of the base, k, top-k and
/// the windows.
pub fn cached_features(
    base: &LoadedModel,
    k: usize,
    top_k: Option<usize>,
    windows: &[Vec<u32>],
    out: &Path,
    reporter: &mut dyn TrainReporter,
) -> Result<BaseFeatures> {
    cached_teacher_features(
        &base.transformer,
        &base.base_hash,
        k,
        top_k,
        windows,
        out,
        reporter,
    )
}

/// [`compute_features`] of any `teacher` (the base, or a target version), cached in `out`
/// under a key of `teacher_id` (a hash naming the teacher's weights), k, top-k and the windows.
pub fn cached_teacher_features(
    teacher: &Transformer,
    teacher_id: &str,
    k: usize,
    top_k: Option<usize>,
    windows: &[Vec<u32>],
    out: &Path,
    reporter: &mut dyn TrainReporter,
) -> Result<BaseFeatures> {
    let path = out.join(format!(
        "features-{}.safetensors",
        features_key(teacher_id, teacher.num_layers(), k, top_k, windows)
    ));
    if path.is_file() {
        let mut m = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let mut take = |n: &str| {
            m.remove(n).ok_or_else(|| {
                TrainError::Checkpoint(format!("{}: tensor `{n}` missing", path.display()))
            })
        };
        let anchor_input = take("anchor_input")?;
        let target = take("target")?;
        let top_k = if top_k.is_some() {
            Some((take("top_k_ids")?, take("top_k_probs")?))
        } else {
            None
        };
        reporter.message(&format!("using cached teacher features {}", path.display()));
        return Ok(BaseFeatures {
            anchor_input,
            target,
            top_k,
        });
    }
    let f = compute_features(teacher, k, top_k, windows, reporter)?;
    let mut m = std::collections::HashMap::new();
    m.insert("anchor_input".to_string(), f.anchor_input.clone());
    m.insert("target".to_string(), f.target.clone());
    if let Some((i, p)) = &f.top_k {
        m.insert("top_k_ids".to_string(), i.clone());
        m.insert("top_k_probs".to_string(), p.clone());
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&m, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
    Ok(f)
}

/// The anchor training loss over a batch of windows.
pub(crate) struct DraftObjective<'a> {
    pub frozen: &'a F32Model,
    /// With lower-layer LoRA: `frozen` holds layers `0..k` (with their LoRA variables), run
    /// from the embeddings of `windows`; without: the cached anchor inputs are used.
    pub lower: Option<&'a [Vec<u32>]>,
    pub anchor: Layer,
    pub pos: Positions,
    pub feats: &'a BaseFeatures,
    pub cfg: &'a DraftTrainConfig,
}

impl Objective for DraftObjective<'_> {
    fn examples(&self) -> usize {
        self.feats.anchor_input.dim(0).unwrap_or(0)
    }

    fn loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let c = &self.frozen.config;
        let idx = Tensor::from_vec(
            batch.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
            batch.len(),
            &Device::Cpu,
        )?;
        let x = match self.lower {
            None => self.feats.anchor_input.index_select(&idx, 0)?,
            Some(windows) => {
                let ws: Vec<&[u32]> = batch.iter().map(|&i| windows[i].as_slice()).collect();
                let e = self.frozen.embed(&token_tensor(&ws)?)?;
                self.frozen.run(&self.frozen.layers, &self.pos, &e)?
            }
        };
        let tgt = self.feats.target.index_select(&idx, 0)?;
        let (b, t, _) = x.dims3()?;
        let y = layer_forward(&self.anchor, c, &self.pos, &x)?;
        // Relative MSE: the last hidden states of real models carry a few huge activations
        // (SmolLM2: mean square ≈ 4·10³), which would drown the KL term; dividing by the
        // targets' mean square (a constant) puts both terms on the scale of 1.
        let scale = tgt.sqr()?.mean_all()?.to_scalar::<f32>()?.max(1e-12) as f64;
        let mse = ((&y - &tgt)?.sqr()?.mean_all()? / scale)?;
        let logits = self.frozen.logits(&y)?.reshape((b * t, c.vocab_size))?;
        let teacher = match &self.feats.top_k {
            None => {
                let tl = self.frozen.logits(&tgt)?.flatten_all()?.to_vec1::<f32>()?;
                Teacher::Dense(log_softmax_rows(&tl, c.vocab_size))
            }
            Some((ids, probs)) => {
                let k = ids.dim(2)?;
                Teacher::Sparse {
                    k,
                    ids: ids.index_select(&idx, 0)?.flatten_all()?.to_vec1::<u32>()?,
                    probs: probs
                        .index_select(&idx, 0)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                }
            }
        };
        let kl = distill_kl(&logits, Arc::new(teacher))?.mean_all()?;
        let loss = ((&mse * self.cfg.mse_weight)? + (&kl * self.cfg.kl_weight)?)?;
        let parts = vec![
            ("mse".to_string(), mse.to_scalar::<f32>()?),
            ("kl".to_string(), kl.to_scalar::<f32>()?),
        ];
        Ok(BatchLoss {
            loss,
            parts,
            tokens: b * t,
        })
    }
}

/// The frozen f32 parts the anchor run needs (final norm, head) and the initial anchor (the
/// base's last layer).
pub(crate) fn load_frozen_for_draft(base: &LoadedModel) -> Result<F32Model> {
    let mut f = GgufFile::open(&base.path)?;
    let n = base.transformer.num_layers();
    F32Model::load(&mut f, n - 1..n)
}

/// Trains the anchor on `windows` (equal-length token windows of the training split),
/// writing features, checkpoints, `anchor.safetensors` and `train-draft.json` into `out`.
/// With `resume`, continues the checkpoint in `out` up to `cfg.schedule.steps`.
///
/// # Errors
/// Invalid settings, model and I/O errors, a checkpoint made with other settings, a diverged
/// loss.
pub fn train_draft(
    base: &LoadedModel,
    windows: &[Vec<u32>],
    cfg: &DraftTrainConfig,
    out: &Path,
    resume: bool,
    reporter: &mut dyn TrainReporter,
) -> Result<DraftOutcome> {
    if cfg.seq_len == 0 || windows.iter().any(|w| w.len() != cfg.seq_len) {
        return Err(TrainError::Config(format!(
            "every window must hold seq_len = {} tokens",
            cfg.seq_len
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let k = cfg.shared_layers;
    let n = base.transformer.num_layers();
    if k == 0 || k >= n {
        return Err(TrainError::Config(format!(
            "k = {k} shared layers; the base has {n}"
        )));
    }
    // Without lower LoRA: frozen = the last layer (the anchor's initial value) + head. With
    // it: frozen = layers 0..k carrying LoRA variables + head, and the last layer apart.
    let mut lora_vars = Vec::new();
    let mut adapter = None;
    let (frozen, last) = match &cfg.lower_lora {
        None => {
            let f = load_frozen_for_draft(base)?;
            let last = f.layers[0].clone();
            (f, last)
        }
        Some(l) => {
            let mut f = GgufFile::open(&base.path)?;
            let mut lower = F32Model::load(&mut f, 0..k)?;
            let last = Layer::load(&mut f, &lower.config, n - 1)?;
            let targets = crate::evolve::lora_targets(&l.modules)?;
            let a = LoraAdapter::init(
                &lower.config,
                l.rank,
                l.alpha,
                0..k,
                &targets,
                cfg.schedule.seed,
                &base.name,
            )
            .map_err(ecspec_model::ModelError::from)?;
            lora_vars = crate::evolve::attach_lora(&mut lower, &a, l.rank)?;
            adapter = Some(a);
            (lower, last)
        }
    };
    let feats = cached_features(
        base,
        cfg.shared_layers,
        cfg.kl_top_k,
        windows,
        out,
        reporter,
    )?;
    let (anchor, vars) = last.trainable_copy()?;
    let mut vars: Vec<NamedVar> = vars
        .into_iter()
        .map(|(name, var)| NamedVar { name, var })
        .collect();
    vars.extend(lora_vars);
    let settings = run_settings(
        cfg,
        &["steps", "checkpoint_every"],
        &base.base_hash,
        windows,
        &[],
    )?;
    let mut run = Run::start(
        "train-draft",
        settings,
        vars,
        &cfg.schedule,
        out,
        resume,
        reporter,
    )?;
    let obj = DraftObjective {
        frozen: &frozen,
        lower: cfg.lower_lora.as_ref().map(|_| windows),
        anchor,
        pos: Positions::new(&frozen.config, cfg.seq_len)?,
        feats: &feats,
        cfg,
    };
    let t0 = Instant::now();
    run.train(&obj, &cfg.schedule, out, reporter)?;
    let anchor_path = out.join("anchor.safetensors");
    let (anchor_vars, lora_vars): (Vec<NamedVar>, Vec<NamedVar>) = run
        .opt
        .vars()
        .iter()
        .cloned()
        .partition(|v| !v.name.starts_with("layers."));
    save_anchor_vars(&anchor_path, &frozen.config, &anchor_vars)?;
    let lower_adapter = match adapter {
        None => None,
        Some(mut a) => {
            crate::evolve::copy_lora_vars(&mut a, &lora_vars)?;
            let dir = out.join("lower");
            a.save_peft(&dir, &frozen.config)
                .map_err(ecspec_model::ModelError::from)?;
            Some(dir)
        }
    };
    let tokens_per_sec = run.write_summary(out, base, cfg, windows.len(), t0, &[])?;
    Ok(DraftOutcome {
        anchor_path,
        history: run.history,
        tokens_per_sec,
        lower_adapter,
    })
}

/// Writes the anchor's variables in `ecspec_model::anchor`'s format.
pub(crate) fn save_anchor_vars(
    path: &Path,
    config: &ecspec_model::ModelConfig,
    vars: &[NamedVar],
) -> Result<()> {
    let mut data = Vec::with_capacity(vars.len());
    for v in vars {
        data.push((
            v.name.as_str(),
            v.var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ));
    }
    let refs: Vec<(&str, &[f32])> = data.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    ecspec_model::anchor::save_anchor(path, config, &refs, StoreDtype::F16)?;
    Ok(())
}
