//! Evolving a target version: a LoRA adapter (Hu et al. 2021) trained on a domain corpus with
//! next-token cross-entropy, everything of the base frozen (design.md §5: `T_v = B + LoRA_v`).
//!
//! The adapter starts as PEFT initialises one ([`LoraAdapter::init`]: A uniform in ±1/√in, B =
//! 0, so step 0 is the base) on the chosen projections of the chosen layers, and is saved in
//! PEFT's layout ([`LoraAdapter::save_peft`]), B in the runtime's (GGUF) row order in memory,
//! un-permuted to Hugging Face's on disk.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Var};
use ecspec_model::gguf::GgufFile;
use ecspec_model::{LoadedModel, LoraAdapter, LoraTarget};

use crate::checkpoint::StepRecord;
use crate::error::{Result, TrainError};
use crate::loss::cross_entropy;
use crate::model::{token_tensor, F32Model, LoraPair, Positions};
use crate::optim::NamedVar;
use crate::trainer::{run_settings, BatchLoss, Objective, Run, Schedule, TrainReporter};

/// Settings of a LoRA version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvolveConfig {
    /// Version name (`rust`, `python-docs`, …).
    pub version: String,
    /// Rank r.
    pub rank: usize,
    /// `lora_alpha` (the update is scaled by alpha / r).
    pub alpha: f32,
    /// PEFT module names adapted (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
    /// `up_proj`, `down_proj`).
    pub modules: Vec<String>,
    /// Layers adapted; `None`: the upper half of the base.
    pub layers: Option<Range<usize>>,
    /// Tokens per training window (each window predicts `seq_len − 1` next tokens).
    pub seq_len: usize,
    /// Optimisation.
    pub schedule: Schedule,
    /// `base_model_name_or_path` written into the PEFT config (e.g.
    /// `HuggingFaceTB/SmolLM2-135M-Instruct`); `None`: the GGUF's `general.name`.
    /// Informational: it does not change training (nor a checkpoint's settings).
    #[serde(default)]
    pub base_model: Option<String>,
}

impl Default for EvolveConfig {
    fn default() -> Self {
        Self {
            version: "v1".into(),
            rank: 8,
            alpha: 16.0,
            modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            layers: None,
            seq_len: 128,
            schedule: Schedule {
                steps: 200,
                batch_windows: 4,
                lr: 5e-4,
                warmup_steps: 10,
                weight_decay: 0.0,
                seed: 0,
                checkpoint_every: 50,
            },
            base_model: None,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct EvolveOutcome {
    /// The PEFT adapter directory (`out` itself).
    pub adapter_dir: PathBuf,
    /// The adapter.
    pub adapter: LoraAdapter,
    /// Loss per step, from step 1.
    pub history: Vec<StepRecord>,
    /// Mean training tokens per second.
    pub tokens_per_sec: f64,
}

/// The LoRA targets named by PEFT module names.
pub(crate) fn lora_targets(modules: &[String]) -> Result<Vec<LoraTarget>> {
    modules
        .iter()
        .map(|m| {
            LoraTarget::from_peft_module(m).ok_or_else(|| {
                TrainError::Config(format!(
                    "unknown LoRA module `{m}` (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
                ))
            })
        })
        .collect()
}

fn var_name(layer: usize, t: LoraTarget, half: char) -> String {
    format!("layers.{layer}.{}.lora_{half}", t.peft_module())
}

struct EvolveObjective<'a> {
    model: &'a F32Model,
    pos: Positions,
    windows: &'a [Vec<u32>],
}

impl Objective for EvolveObjective<'_> {
    fn examples(&self) -> usize {
        self.windows.len()
    }

    fn loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let inputs: Vec<&[u32]> = batch
            .iter()
            .map(|&i| &self.windows[i][..self.windows[i].len() - 1])
            .collect();
        let targets: Vec<u32> = batch
            .iter()
            .flat_map(|&i| self.windows[i][1..].iter().copied())
            .collect();
        let tokens = token_tensor(&inputs)?;
        let x = self.model.embed(&tokens)?;
        let h = self.model.run(&self.model.layers, &self.pos, &x)?;
        let logits = self
            .model
            .logits(&h)?
            .reshape((targets.len(), self.model.config.vocab_size))?;
        let ce = cross_entropy(&logits, targets)?.mean_all()?;
        let v = ce.to_scalar::<f32>()?;
        let n = inputs.iter().map(|w| w.len()).sum();
        Ok(BatchLoss {
            loss: ce,
            parts: vec![("ce".into(), v)],
            tokens: n,
        })
    }
}

/// Trains a LoRA version of `base` on `windows` (equal-length token windows of a domain's
/// training split), writing checkpoints, the PEFT adapter and `evolve.json` into `out`.
///
/// # Errors
/// Invalid settings (unknown module, layers out of range), model and I/O errors, a checkpoint
/// made with other settings, a diverged loss.
pub fn evolve(
    base: &LoadedModel,
    windows: &[Vec<u32>],
    cfg: &EvolveConfig,
    out: &Path,
    resume: bool,
    reporter: &mut dyn TrainReporter,
) -> Result<EvolveOutcome> {
    if cfg.seq_len < 2 || windows.iter().any(|w| w.len() != cfg.seq_len) {
        return Err(TrainError::Config(format!(
            "every window must hold seq_len = {} ≥ 2 tokens",
            cfg.seq_len
        )));
    }
    let n = base.transformer.num_layers();
    let layers = cfg.layers.clone().unwrap_or(n / 2..n);
    if layers.is_empty() || layers.end > n {
        return Err(TrainError::Config(format!(
            "LoRA layers {layers:?} of a base with {n} layers"
        )));
    }
    let targets = lora_targets(&cfg.modules)?;
    let config = base.transformer.config().clone();
    let mut adapter = LoraAdapter::init(
        &config,
        cfg.rank,
        cfg.alpha,
        layers.clone(),
        &targets,
        cfg.schedule.seed,
        cfg.base_model.as_deref().unwrap_or(&base.name),
    )
    .map_err(ecspec_model::ModelError::from)?;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    reporter.stage("loading the base in f32", 0);
    let mut f = GgufFile::open(&base.path)?;
    let mut model = F32Model::load(&mut f, 0..n)?;
    let vars = attach_lora(&mut model, &adapter, cfg.rank)?;
    let settings = run_settings(
        cfg,
        &["steps", "checkpoint_every", "base_model"],
        &base.base_hash,
        windows,
        &[(
            "resolved_layers",
            serde_json::json!([layers.start, layers.end]),
        )],
    )?;
    let mut run = Run::start(
        "evolve",
        settings,
        vars,
        &cfg.schedule,
        out,
        resume,
        reporter,
    )?;
    let obj = EvolveObjective {
        model: &model,
        pos: Positions::new(&config, cfg.seq_len)?,
        windows,
    };
    let t0 = Instant::now();
    run.train(&obj, &cfg.schedule, out, reporter)?;
    copy_lora_vars(&mut adapter, run.opt.vars())?;
    adapter
        .save_peft(out, &config)
        .map_err(ecspec_model::ModelError::from)?;
    let tokens_per_sec = run.write_summary(
        out,
        base,
        cfg,
        windows.len(),
        t0,
        &[("layers", serde_json::json!([layers.start, layers.end]))],
    )?;
    Ok(EvolveOutcome {
        adapter_dir: out.to_path_buf(),
        adapter,
        history: run.history,
        tokens_per_sec,
    })
}

/// Puts `adapter`'s pairs into `model`'s layers (indexed from `model.layer_range.start`) as
/// trainable variables, named `layers.{i}.{module}.lora_{A,B}`.
pub(crate) fn attach_lora(
    model: &mut F32Model,
    adapter: &LoraAdapter,
    rank: usize,
) -> Result<Vec<NamedVar>> {
    let config = model.config.clone();
    let first = model.layer_range.start;
    let scale = adapter.scale() as f64;
    let mut vars = Vec::new();
    for (&(layer, t), pair) in adapter.iter() {
        let (out_f, in_f) = t.shape(&config);
        let a = Var::from_vec(pair.a().to_vec(), (rank, in_f), &Device::Cpu)?;
        let b = Var::from_vec(pair.b().to_vec(), (out_f, rank), &Device::Cpu)?;
        let lin = model
            .layers
            .get_mut(layer - first)
            .and_then(|l| l.module_mut(t.peft_module()))
            .ok_or_else(|| TrainError::Config(format!("module {t} of layer {layer}")))?;
        lin.lora = Some(LoraPair {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale,
        });
        vars.push(NamedVar {
            name: var_name(layer, t, 'A'),
            var: a,
        });
        vars.push(NamedVar {
            name: var_name(layer, t, 'B'),
            var: b,
        });
    }
    Ok(vars)
}

/// Copies trained LoRA variables (named as by [`attach_lora`]) back into `adapter`.
pub(crate) fn copy_lora_vars(adapter: &mut LoraAdapter, vars: &[NamedVar]) -> Result<()> {
    for nv in vars {
        let v = nv.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let (layer, t, half) = parse_var_name(&nv.name)?;
        let pair = adapter
            .pair_mut(layer, t)
            .ok_or_else(|| TrainError::Checkpoint(format!("no pair for {}", nv.name)))?;
        match half {
            'A' => pair.a_mut().copy_from_slice(&v),
            _ => pair.b_mut().copy_from_slice(&v),
        }
    }
    Ok(())
}

fn parse_var_name(name: &str) -> Result<(usize, LoraTarget, char)> {
    let bad = || TrainError::Checkpoint(format!("unexpected variable `{name}`"));
    let rest = name.strip_prefix("layers.").ok_or_else(bad)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(bad)?;
    let (module, half) = rest.rsplit_once(".lora_").ok_or_else(bad)?;
    let layer: usize = layer.parse().map_err(|_| bad())?;
    let t = LoraTarget::from_peft_module(module).ok_or_else(bad)?;
    let half = half
        .chars()
        .next()
        .filter(|c| *c == 'A' || *c == 'B')
        .ok_or_else(bad)?;
    Ok((layer, t, half))
}
