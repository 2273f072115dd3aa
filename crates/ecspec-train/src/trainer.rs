//! The training loop both runs share: seeded batch sampling, AdamW with a warm-up, progress
//! reports, periodic checkpoints and exact resume.
//!
//! **Invariant:** a run's trajectory is a function of its settings and seed only. Batches are
//! drawn from one ChaCha8 stream whose position goes into every checkpoint, the learning rate
//! depends on the step number only, and the optimiser's moments are saved — so a run resumed
//! from the checkpoint of step s computes the same batches, updates and losses from step s+1
//! on as a run that never stopped (up to floating-point nondeterminism of the kernels, which
//! on the CPU with a fixed thread count is none in practice; the tests allow 1e-5).

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, CheckpointMeta, StepRecord};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, NamedVar, ParamsAdamW};

/// Progress of a run, reported as it goes. The `ecspec` binary shows bars; libraries and tests
/// pass [`NoReport`].
pub trait TrainReporter {
    /// A stage begins (reading the corpus, computing the base's features, training).
    fn stage(&mut self, _message: &str, _total: u64) {}
    /// Progress within the stage.
    fn advance(&mut self, _done: u64) {}
    /// A training step finished.
    fn step(&mut self, _report: &StepReport<'_>) {}
    /// A line worth showing (checkpoint written, resumed from step s, …).
    fn message(&mut self, _message: &str) {}
}

/// Reports nothing.
pub struct NoReport;
impl TrainReporter for NoReport {}

/// What [`TrainReporter::step`] gets.
pub struct StepReport<'a> {
    /// The step just done.
    pub record: &'a StepRecord,
    /// Steps the run is to reach.
    pub total_steps: usize,
    /// Tokens per second over the steps of this process so far.
    pub tokens_per_sec: f64,
}

/// Optimisation settings common to both runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// Steps to reach (a resumed run continues up to this).
    pub steps: usize,
    /// Windows per batch.
    pub batch_windows: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then constant).
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the batch sampler (and of any initialisation).
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end); 0: only at the end.
    pub checkpoint_every: usize,
}

impl Schedule {
    /// The learning rate of step `step` (from 1).
    pub fn lr_at(&self, step: usize) -> f64 {
        if self.warmup_steps > 0 && step <= self.warmup_steps {
            self.lr * step as f64 / self.warmup_steps as f64
        } else {
            self.lr
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.batch_windows == 0 || !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(TrainError::Config(format!(
                "batch of {} windows at learning rate {}",
                self.batch_windows, self.lr
            )));
        }
        Ok(())
    }

    pub(crate) fn adam(&self) -> ParamsAdamW {
        ParamsAdamW {
            lr: self.lr,
            weight_decay: self.weight_decay,
            ..Default::default()
        }
    }
}

/// One batch's loss.
pub(crate) struct BatchLoss {
    /// The scalar to minimise (in the autograd graph).
    pub loss: Tensor,
    /// Named parts, unweighted.
    pub parts: Vec<(String, f32)>,
    /// Tokens in the batch.
    pub tokens: usize,
}

/// A loss to minimise over numbered examples.
pub(crate) trait Objective {
    /// Number of examples to sample batches from.
    fn examples(&self) -> usize;
    /// The loss over `batch` (example indices).
    fn loss(&self, batch: &[usize]) -> Result<BatchLoss>;
}

/// A run being trained: variables, optimiser, sampler, history.
pub(crate) struct Run {
    pub kind: &'static str,
    pub settings: serde_json::Value,
    pub opt: AdamW,
    pub rng: ChaCha8Rng,
    pub step: usize,
    pub history: Vec<StepRecord>,
}

impl Run {
    /// A fresh run, or the one checkpointed in `out` when `resume` (after checking it was
    /// made with the same settings).
    pub fn start(
        kind: &'static str,
        settings: serde_json::Value,
        vars: Vec<NamedVar>,
        sched: &Schedule,
        out: &Path,
        resume: bool,
        reporter: &mut dyn TrainReporter,
    ) -> Result<Self> {
        sched.check()?;
        let mut opt = AdamW::new(vars, sched.adam())?;
        let mut rng = ChaCha8Rng::seed_from_u64(sched.seed);
        if !resume {
            return Ok(Self {
                kind,
                settings,
                opt,
                rng,
                step: 0,
                history: Vec::new(),
            });
        }
        let ck = checkpoint::load(out)?;
        if ck.meta.kind != kind {
            return Err(TrainError::Checkpoint(format!(
                "{} holds a {} checkpoint, not {kind}",
                out.display(),
                ck.meta.kind
            )));
        }
        if ck.meta.settings != settings {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint in {} was made with other settings:\n  checkpoint: {}\n  now:        {}",
                out.display(),
                ck.meta.settings,
                settings
            )));
        }
        for nv in opt.vars() {
            let t = ck.params.get(&nv.name).ok_or_else(|| {
                TrainError::Checkpoint(format!("parameter `{}` missing", nv.name))
            })?;
            if t.shape() != nv.var.shape() {
                return Err(TrainError::Checkpoint(format!(
                    "parameter `{}` is {:?} in the checkpoint, {:?} in the model",
                    nv.name,
                    t.dims(),
                    nv.var.dims()
                )));
            }
            nv.var.set(t)?;
        }
        let names: Vec<String> = opt.vars().iter().map(|v| v.name.clone()).collect();
        opt.load_state(&ck.adam_state(&names)?)?;
        let pos: u128 = ck.meta.rng_word_pos.parse().map_err(|e| {
            TrainError::Checkpoint(format!("rng_word_pos `{}`: {e}", ck.meta.rng_word_pos))
        })?;
        if ck.meta.rng_seed != sched.seed {
            return Err(TrainError::Checkpoint(format!(
                "seed {} in the checkpoint, {} now",
                ck.meta.rng_seed, sched.seed
            )));
        }
        rng.set_word_pos(pos);
        reporter.message(&format!(
            "resuming {kind} from step {} in {}",
            ck.meta.step,
            out.display()
        ));
        Ok(Self {
            kind,
            settings,
            opt,
            rng,
            step: ck.meta.step,
            history: ck.meta.history,
        })
    }

    fn save(&self, out: &Path, sched: &Schedule) -> Result<()> {
        let meta = CheckpointMeta {
            kind: self.kind.to_string(),
            settings: self.settings.clone(),
            step: self.step,
            optimizer_step: self.opt.step_count(),
            rng_seed: sched.seed,
            rng_word_pos: self.rng.get_word_pos().to_string(),
            history: self.history.clone(),
        };
        checkpoint::save(out, &meta, self.opt.vars(), &self.opt.state()?)
    }

    /// Writes the run's JSON summary to `out/{kind}.json` — the base, `cfg`, the data size,
    /// steps, time spent by this process since `started`, tokens/s and the loss history, plus
    /// `extra` — and returns the mean training tokens/s.
    ///
    /// # Errors
    /// [`crate::TrainError`] for I/O.
    pub fn write_summary<T: serde::Serialize>(
        &self,
        out: &Path,
        base: &ecspec_model::LoadedModel,
        cfg: &T,
        windows: usize,
        started: Instant,
        extra: &[(&str, serde_json::Value)],
    ) -> Result<f64> {
        let tokens_per_sec = mean_tokens_per_sec(&self.history);
        let mut summary = serde_json::json!({
            "kind": self.kind,
            "base": base.path,
            "base_hash": base.base_hash,
            "config": cfg,
            "windows": windows,
            "steps": self.step,
            "seconds_this_process": started.elapsed().as_secs_f64(),
            "tokens_per_sec": tokens_per_sec,
            "history": self.history,
        });
        if let serde_json::Value::Object(m) = &mut summary {
            for (k, v) in extra {
                m.insert((*k).into(), v.clone());
            }
        }
        write_summary(out, &format!("{}.json", self.kind), &summary)?;
        Ok(tokens_per_sec)
    }

    /// Trains up to `sched.steps`, checkpointing as scheduled and at the end.
    pub fn train(
        &mut self,
        obj: &dyn Objective,
        sched: &Schedule,
        out: &Path,
        reporter: &mut dyn TrainReporter,
    ) -> Result<()> {
        let n = obj.examples();
        if n == 0 {
            return Err(TrainError::Corpus("no training examples".into()));
        }
        reporter.stage(&format!("training {}", self.kind), sched.steps as u64);
        reporter.advance(self.step as u64);
        let (mut tokens, started) = (0usize, Instant::now());
        while self.step < sched.steps {
            let t0 = Instant::now();
            let step = self.step + 1;
            let lr = sched.lr_at(step);
            self.opt.params.lr = lr;
            let batch: Vec<usize> = (0..sched.batch_windows)
                .map(|_| self.rng.random_range(0..n))
                .collect();
            let BatchLoss {
                loss,
                parts,
                tokens: ntok,
            } = obj.loss(&batch)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(TrainError::Diverged { step, loss: value });
            }
            let grads = loss.backward()?;
            self.opt.step(&grads)?;
            self.step = step;
            tokens += ntok;
            let record = StepRecord {
                step,
                loss: value,
                parts,
                lr,
                tokens: ntok,
                seconds: t0.elapsed().as_secs_f64(),
            };
            self.history.push(record);
            let tps = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            if let Some(r) = self.history.last() {
                reporter.step(&StepReport {
                    record: r,
                    total_steps: sched.steps,
                    tokens_per_sec: tps,
                });
            }
            if (sched.checkpoint_every > 0 && step.is_multiple_of(sched.checkpoint_every))
                || step == sched.steps
            {
                self.save(out, sched)?;
                reporter.message(&format!(
                    "checkpoint at step {step} in {}",
                    checkpoint::dir(out).display()
                ));
            }
        }
        Ok(())
    }
}

/// Mean tokens per second over `history`.
pub fn mean_tokens_per_sec(history: &[StepRecord]) -> f64 {
    let t: f64 = history.iter().map(|r| r.seconds).sum();
    let n: usize = history.iter().map(|r| r.tokens).sum();
    if t > 0.0 {
        n as f64 / t
    } else {
        0.0
    }
}

/// A short hash of training windows (part of a run's settings: a resumed run must see the
/// same data).
pub fn windows_hash(windows: &[Vec<u32>]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for w in windows {
        h.update((w.len() as u64).to_le_bytes());
        for t in w {
            h.update(t.to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// `value` as JSON with the keys in `drop` removed (settings that may change on resume).
pub(crate) fn settings_json<T: serde::Serialize>(
    value: &T,
    drop: &[&str],
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(value).map_err(|e| TrainError::Config(e.to_string()))?;
    fn strip(v: &mut serde_json::Value, drop: &[&str]) {
        if let serde_json::Value::Object(m) = v {
            for k in drop {
                m.remove(*k);
            }
            for (_, x) in m.iter_mut() {
                strip(x, drop);
            }
        }
    }
    strip(&mut v, drop);
    Ok(v)
}

/// A run's settings as its checkpoint records them: `cfg` without the keys in `drop` (they may
/// change on resume), plus the base's hash, the training data's size and hash, and `extra`
/// (e.g. the teacher of a distillation). A resume must find exactly these again.
pub(crate) fn run_settings<T: serde::Serialize>(
    cfg: &T,
    drop: &[&str],
    base_hash: &str,
    windows: &[Vec<u32>],
    extra: &[(&str, serde_json::Value)],
) -> Result<serde_json::Value> {
    let mut settings = settings_json(cfg, drop)?;
    if let serde_json::Value::Object(m) = &mut settings {
        m.insert("base_hash".into(), base_hash.into());
        m.insert("windows".into(), windows.len().into());
        m.insert("data_hash".into(), windows_hash(windows).into());
        for (k, v) in extra {
            m.insert((*k).into(), v.clone());
        }
    }
    Ok(settings)
}

/// Writes a run's JSON summary to `out/name` (what was trained, on what, and the loss history).
///
/// # Errors
/// [`crate::TrainError`] for I/O.
pub(crate) fn write_summary(
    out: &std::path::Path,
    name: &str,
    summary: &serde_json::Value,
) -> crate::Result<()> {
    let sp = out.join(name);
    std::fs::write(
        &sp,
        serde_json::to_string_pretty(summary).unwrap_or_default(),
    )
    .map_err(|e| crate::TrainError::io(&sp, e))
}
