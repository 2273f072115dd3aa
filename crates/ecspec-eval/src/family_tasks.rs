//! `ecspec family …`: training the family's static draft and evolving target versions
//! (`ecspec-train`), with progress bars.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ecspec_model::{LoadedModel, LoraAdapter, Transformer};
use ecspec_train::{
    corpus, CorpusSpec, DraftTrainConfig, EvolveConfig, Schedule, Split, StepReport, TrainReporter,
};
use indicatif::{ProgressBar, ProgressStyle};

use ecspec_family::FamilyName;
use ecspec_run::open_family;

/// `ecspec family …`
#[derive(Debug, Subcommand)]
pub enum FamilyCommand {
    /// Train the shared-backbone draft's anchor layer against the base (feature regression +
    /// distillation), once. Writes DIR/anchor.safetensors.
    TrainDraft(TrainDraftArgs),
    /// Train a target version: a LoRA adapter on a domain corpus, saved in PEFT layout in DIR.
    Evolve(EvolveArgs),
    /// Distil the conventional baseline: a standalone draft with its own embedding and head,
    /// trained against one version of a family. Writes DIR/draft.safetensors.
    DistillDraft(DistillDraftArgs),
    /// Measure every version against ECSpec's static draft, the untrained draft and the
    /// conventional draft (stale and re-synchronised) on held-out benchmark prompts; writes
    /// CSV, Markdown and JSONL.
    Eval(crate::family_eval::EvalArgs),
    /// Self-distillation data: the base's own greedy and sampled answers to chat prompts made
    /// from the corpora (never the benchmark prompts). Appends to FILE (.jsonl), which
    /// `train-draft --corpus FILE` reads; an interrupted run continues where it stopped.
    SelfDistill(SelfDistillArgs),
    /// In-process greedy speculative decoding with the family's static draft against the
    /// target's own greedy decoding (same prompts, one process, no link): decode speedup with
    /// its spread, acceptance, and the draft's cost per token relative to the target.
    Speedup(crate::speedup::SpeedupArgs),
    /// Rank the tokens of the training corpora by frequency and write the N most frequent: the
    /// FR-Spec vocabulary subset a manifest's `draft.vocab_subset` names (arXiv 2502.14856).
    VocabSubset(VocabSubsetArgs),
}

/// `ecspec family self-distill`
#[derive(Debug, Clone, Args)]
pub struct SelfDistillArgs {
    /// Family whose base answers.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub base: FamilyName,
    /// Base GGUF (default: the family's target, fetched into the cache).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Corpus files or directories the prompts are made from (their training split; give
    /// both prose and code) [default: the corpora this machine has, as for train-draft].
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// Prompts (answers generated).
    #[arg(long, default_value_t = 1024)]
    pub prompts: usize,
    /// Answer tokens at most per prompt.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_new_tokens: u32,
    /// Temperatures, used in turn (0 = greedy).
    #[arg(long, value_delimiter = ',', default_value = "0,0.7")]
    pub temperatures: Vec<f32>,
    /// Seed of the prompts and of the sampled answers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Answers generated at once (one thread each; set --threads 1).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Output file (JSON lines; appended to).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `ecspec family vocab-subset`
#[derive(Debug, Clone, Args)]
pub struct VocabSubsetArgs {
    /// Family whose tokenizer counts.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub base: FamilyName,
    /// Base GGUF (default: the family's target, fetched into the cache).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Corpus files or directories (their training split is counted).
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    pub corpus: Vec<PathBuf>,
    /// File extensions read from directories.
    #[arg(long, value_name = "EXT", value_delimiter = ',')]
    pub ext: Vec<String>,
    /// Tokens counted, shared equally between the corpus paths.
    #[arg(long, default_value_t = 131_072)]
    pub max_tokens: usize,
    /// N: tokens kept.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub size: u32,
    /// Output file (one token id per line, most frequent first).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Settings both trainings share.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Training")]
pub struct CommonTrainArgs {
    /// Family whose base model is trained against.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub base: FamilyName,
    /// Base GGUF (default: the family's target, fetched into the cache).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Steps to reach (with --resume: continue up to this many).
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Output directory (checkpoints, cached features, results).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Continue the checkpoint in --out (same settings required).
    #[arg(long)]
    pub resume: bool,
    /// Corpus files or directories (each gets an equal share of --max-tokens).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// File endings read from corpus directories (default: rs, py, txt, md, rst).
    #[arg(long, value_name = "EXT", value_delimiter = ',')]
    pub ext: Vec<String>,
    /// Training tokens taken from the corpus (split evenly over the --corpus paths).
    #[arg(long, default_value_t = 65_536)]
    pub max_tokens: usize,
    /// Held-out tokens evaluated at the end (0: no evaluation).
    #[arg(long, default_value_t = 8192)]
    pub eval_tokens: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate [default: 3e-4 for the draft, 5e-4 for a version].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Seed of the batch sampler and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
}

/// `ecspec family train-draft`
#[derive(Debug, Clone, Args)]
pub struct TrainDraftArgs {
    /// k: base layers the draft reuses before its anchor.
    #[arg(long, default_value_t = 4)]
    pub shared_layers: usize,
    /// Weight of the feature-regression MSE (relative to the targets' mean square).
    #[arg(long, default_value_t = 1.0)]
    pub mse_weight: f64,
    /// Weight λ of the distillation KL(p_base ‖ p_draft).
    #[arg(long, default_value_t = 1.0)]
    pub kl_weight: f64,
    /// Distil on the base's top-k only (faster); default: the full distribution.
    #[arg(long)]
    pub kl_top_k: Option<usize>,
    /// Also train LoRA updates of rank R on the draft's own copies of its k lower layers
    /// (edge-only; saved as DIR/lower in PEFT layout); 0: the lower layers stay the base's.
    #[arg(long, default_value_t = 0)]
    pub lower_lora_rank: usize,
    /// LoRA alpha of --lower-lora-rank.
    #[arg(long, default_value_t = 32.0)]
    pub lower_lora_alpha: f32,
    /// Projections of the lower layers adapted (PEFT names).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub lower_lora_modules: Vec<String>,
    #[command(flatten)]
    pub common: CommonTrainArgs,
}

/// `ecspec family evolve`
#[derive(Debug, Clone, Args)]
pub struct EvolveArgs {
    /// Version name.
    #[arg(long)]
    pub version: String,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (updates scaled by alpha / r).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Projections adapted (PEFT names).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj"
    )]
    pub modules: Vec<String>,
    /// Layers adapted, inclusive: FIRST-LAST (default: the upper half).
    #[arg(long, value_name = "FIRST-LAST")]
    pub layers: Option<String>,
    #[command(flatten)]
    pub common: CommonTrainArgs,
}

/// `ecspec family distill-draft`
#[derive(Debug, Clone, Args)]
pub struct DistillDraftArgs {
    /// Family manifest (TOML) whose version is the teacher.
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The version distilled from (its name in the manifest).
    #[arg(long)]
    pub version: String,
    /// L: the draft's decoder layers (copies of base layers 0..L-1 and the last layer).
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    /// Weight of the feature-regression MSE (relative to the targets' mean square).
    #[arg(long, default_value_t = 1.0)]
    pub mse_weight: f64,
    /// Weight of the distillation KL(p_version ‖ p_draft).
    #[arg(long, default_value_t = 1.0)]
    pub kl_weight: f64,
    /// Distil on the version's top-k distribution.
    #[arg(long, default_value_t = 64)]
    pub kl_top_k: usize,
    #[command(flatten)]
    pub common: CommonTrainArgs,
}

/// Progress bars on a terminal; plain lines every few percent otherwise.
struct TrainBars {
    bar: Option<ProgressBar>,
    tty: bool,
    total: u64,
    last_line: Instant,
}

impl TrainBars {
    fn new() -> Self {
        Self {
            bar: None,
            tty: std::io::stderr().is_terminal(),
            total: 0,
            last_line: Instant::now(),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl TrainReporter for TrainBars {
    fn stage(&mut self, message: &str, total: u64) {
        self.finish();
        self.total = total;
        eprintln!("ecspec: {message}");
        if self.tty && total > 0 {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "  {bar:32} {pos}/{len} {elapsed_precise} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some(b);
        }
    }

    fn advance(&mut self, done: u64) {
        match &self.bar {
            Some(b) => b.set_position(done),
            None if self.last_line.elapsed().as_secs() >= 10 || done == self.total => {
                self.last_line = Instant::now();
                eprintln!("ecspec:   {done}/{}", self.total);
            }
            None => {}
        }
    }

    fn step(&mut self, r: &StepReport<'_>) {
        let parts: Vec<String> = r
            .record
            .parts
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        let msg = format!(
            "loss {:.4} ({}) lr {:.1e} {:.0} tok/s",
            r.record.loss,
            parts.join(", "),
            r.record.lr,
            r.tokens_per_sec
        );
        match &self.bar {
            Some(b) => {
                b.set_position(r.record.step as u64);
                b.set_message(msg);
            }
            None => {
                if self.last_line.elapsed().as_secs() >= 10
                    || r.record.step == r.total_steps
                    || r.record.step <= 1
                {
                    self.last_line = Instant::now();
                    eprintln!("ecspec:   step {}/{} {msg}", r.record.step, r.total_steps);
                }
            }
        }
    }

    fn message(&mut self, message: &str) {
        match &self.bar {
            Some(b) => b.println(format!("ecspec: {message}")),
            None => eprintln!("ecspec: {message}"),
        }
    }
}

/// Runs a `family` subcommand.
pub fn run(cmd: FamilyCommand) -> Result<()> {
    match cmd {
        FamilyCommand::TrainDraft(a) => train_draft(a),
        FamilyCommand::Evolve(a) => evolve(a),
        FamilyCommand::DistillDraft(a) => distill_draft(a),
        FamilyCommand::VocabSubset(a) => vocab_subset(a),
        FamilyCommand::SelfDistill(a) => self_distill(a),
        FamilyCommand::Speedup(a) => crate::speedup::run(a),
        FamilyCommand::Eval(_) => bail!("`family eval` runs on the async runtime (dispatch)"),
    }
}

fn vocab_subset(a: VocabSubsetArgs) -> Result<()> {
    let info = ecspec_family::info(a.base);
    let path = ecspec_run::model_path(a.model.as_deref(), info.target)?;
    let base =
        LoadedModel::load(&path).with_context(|| format!("loading the base {}", path.display()))?;
    let mut tokens: Vec<u32> = Vec::new();
    for p in &a.corpus {
        let spec = CorpusSpec::new(vec![p.clone()], a.ext.clone());
        let units = corpus::read_units(&spec)
            .with_context(|| format!("reading the corpus {}", p.display()))?;
        let w = corpus::token_windows(
            &base.tokenizer,
            &units,
            Split::Train,
            128,
            a.max_tokens / a.corpus.len(),
        )
        .with_context(|| format!("tokenizing {}", p.display()))?;
        tokens.extend(w.into_iter().flatten());
    }
    let ids = ecspec_family::vocab_subset::most_frequent(tokens.iter().copied(), a.size as usize);
    if ids.len() < a.size as usize {
        eprintln!(
            "ecspec: note: only {} distinct tokens occur in the {} tokens counted, fewer than --size {}: all of them are kept",
            ids.len(),
            tokens.len(),
            a.size
        );
    }
    let covered = {
        let set: std::collections::HashSet<u32> = ids.iter().copied().collect();
        tokens.iter().filter(|t| set.contains(t)).count() as f64 / tokens.len().max(1) as f64
    };
    let header = format!(
        "FR-Spec vocabulary subset: the {} most frequent of {} tokens counted\n(training split of: {}),\n{:.2}% of those tokens; `ecspec family vocab-subset --size {}`",
        ids.len(),
        tokens.len(),
        a.corpus
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        covered * 100.0,
        a.size
    );
    ecspec_family::vocab_subset::write(&a.out, &ids, &header)?;
    eprintln!(
        "ecspec: wrote {} ({} tokens, covering {:.2}% of {} counted)",
        a.out.display(),
        ids.len(),
        covered * 100.0,
        tokens.len()
    );
    Ok(())
}

fn self_distill(a: SelfDistillArgs) -> Result<()> {
    if a.out.extension().is_none_or(|e| e != "jsonl") {
        bail!("--out {}: the samples file must end in .jsonl (train-draft reads such files as samples)", a.out.display());
    }
    let info = ecspec_family::info(a.base);
    let path = ecspec_run::model_path(a.model.as_deref(), info.target)?;
    let base =
        LoadedModel::load(&path).with_context(|| format!("loading the base {}", path.display()))?;
    let paths = if a.corpus.is_empty() {
        default_corpus()
    } else {
        a.corpus.clone()
    };
    if paths.is_empty() {
        bail!("no corpus: give --corpus PATH… (see the ecspec-train crate docs for the packages)");
    }
    let units = corpus::read_units(&CorpusSpec::new(paths, Vec::new()))
        .context("reading the prompt corpora")?;
    let train: Vec<_> = units
        .into_iter()
        .filter(|u| u.split == Split::Train)
        .collect();
    let material = ecspec_train::chat_prompts::material(&train);
    let prompts = ecspec_train::chat_prompts::prompts(&material, a.prompts, a.seed)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cfg = ecspec_train::SelfDistillConfig {
        max_new_tokens: a.max_new_tokens as usize,
        temperatures: a.temperatures.clone(),
        seed: a.seed,
        jobs: a.jobs,
    };
    let mut bars = TrainBars::new();
    let t0 = Instant::now();
    let samples = ecspec_train::self_distill::generate(
        &base.transformer,
        &base.tokenizer,
        base.chat_template.as_ref(),
        &prompts,
        &cfg,
        &a.out,
        &mut bars,
    )?;
    bars.finish();
    let answer_tokens: usize = samples.iter().map(|s| s.ids.len() - s.prompt_tokens).sum();
    let total: usize = samples.iter().map(|s| s.ids.len()).sum();
    println!(
        "{}: {} samples, {} tokens ({} answer tokens) · {:.0} s this run",
        a.out.display(),
        samples.len(),
        total,
        answer_tokens,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn load_base(c: &CommonTrainArgs) -> Result<LoadedModel> {
    let info = ecspec_family::info(c.base);
    let path = ecspec_run::model_path(c.model.as_deref(), info.target)?;
    LoadedModel::load(&path).with_context(|| format!("loading the base {}", path.display()))
}

/// The corpus this machine has from package registries, when none is given: Rust sources of
/// the cargo registry, the Python standard library, the Python docs and the Debian reference.
fn default_corpus() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(h) = cargo_home {
        v.push(h.join("registry/src"));
    }
    if let Ok(out) = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
    {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            v.push(PathBuf::from(s));
        }
    }
    v.push("/usr/share/doc/python3.11/html/_sources".into());
    v.push("/usr/share/debian-reference/debian-reference.en.txt.gz".into());
    v.into_iter().filter(|p| p.exists()).collect()
}

/// Token windows of the train and held-out splits.
struct Windows {
    train: Vec<Vec<u32>>,
    held_out: Vec<Vec<u32>>,
}

/// Train and held-out windows: each corpus path gets an equal share of the token budgets.
fn corpus_windows(
    base: &LoadedModel,
    c: &CommonTrainArgs,
    paths: &[PathBuf],
    seq_len: usize,
) -> Result<Windows> {
    if paths.is_empty() {
        bail!("no corpus: give --corpus PATH… (see the ecspec-train crate docs for the packages)");
    }
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for p in paths {
        let spec = CorpusSpec::new(vec![p.clone()], c.ext.clone());
        let units = corpus::read_units(&spec)
            .with_context(|| format!("reading the corpus {}", p.display()))?;
        let n_held = units.iter().filter(|u| u.split == Split::HeldOut).count();
        let tr = corpus::token_windows(
            &base.tokenizer,
            &units,
            Split::Train,
            seq_len,
            c.max_tokens / paths.len(),
        )
        .with_context(|| format!("tokenizing {}", p.display()))?;
        eprintln!(
            "ecspec: corpus {}: {} units ({} held out), {} training windows",
            p.display(),
            units.len(),
            n_held,
            tr.len()
        );
        train.extend(tr);
        if c.eval_tokens > 0 && n_held > 0 {
            held.extend(corpus::token_windows(
                &base.tokenizer,
                &units,
                Split::HeldOut,
                seq_len,
                c.eval_tokens / paths.len(),
            )?);
        }
    }
    Ok(Windows {
        train,
        held_out: held,
    })
}

fn schedule(c: &CommonTrainArgs, default_lr: f64) -> Schedule {
    Schedule {
        steps: c.steps,
        batch_windows: c.batch,
        lr: c.lr.unwrap_or(default_lr),
        warmup_steps: c.warmup,
        weight_decay: 0.0,
        seed: c.seed,
        checkpoint_every: c.checkpoint_every,
    }
}

fn train_draft(a: TrainDraftArgs) -> Result<()> {
    let c = &a.common;
    let base = load_base(c)?;
    let paths = if c.corpus.is_empty() {
        default_corpus()
    } else {
        c.corpus.clone()
    };
    let Windows {
        train,
        held_out: held,
    } = corpus_windows(&base, c, &paths, c.seq_len)?;
    let cfg = DraftTrainConfig {
        shared_layers: a.shared_layers,
        seq_len: c.seq_len,
        mse_weight: a.mse_weight,
        kl_weight: a.kl_weight,
        kl_top_k: a.kl_top_k,
        schedule: schedule(c, 3e-4),
        lower_lora: (a.lower_lora_rank > 0).then(|| ecspec_train::draft::LowerLora {
            rank: a.lower_lora_rank,
            alpha: a.lower_lora_alpha,
            modules: a.lower_lora_modules.clone(),
        }),
    };
    let mut bars = TrainBars::new();
    let r = ecspec_train::train_draft(&base, &train, &cfg, &c.out, c.resume, &mut bars)?;
    bars.finish();
    let first = r.history.first().map_or(f32::NAN, |s| s.loss);
    let last = r.history.last().map_or(f32::NAN, |s| s.loss);
    println!(
        "anchor: {} · {} steps · loss {first:.4} → {last:.4} · {:.0} tok/s",
        r.anchor_path.display(),
        r.history.len(),
        r.tokens_per_sec
    );
    if !held.is_empty() {
        eprintln!(
            "ecspec: measuring teacher-forced greedy agreement on {} held-out windows",
            held.len()
        );
        let anchor = ecspec_model::anchor::load_anchor(&r.anchor_path, base.transformer.config())?;
        let lower = match &r.lower_adapter {
            Some(dir) => std::sync::Arc::new(Transformer::with_adapter(
                &base.transformer,
                &LoraAdapter::load_peft(dir, base.transformer.config())?,
            )?),
            None => base.transformer.clone(),
        };
        let trained = Transformer::shared_backbone_draft(&lower, a.shared_layers, Some(anchor))?;
        let untrained =
            Transformer::shared_backbone_draft(&base.transformer, a.shared_layers, None)?;
        let at = ecspec_train::eval_alpha(&base.transformer, &trained, &held)?;
        let au = ecspec_train::eval_alpha(&base.transformer, &untrained, &held)?;
        println!(
            "held-out α (teacher-forced greedy agreement with the base, {} positions): trained {:.3} · untrained {:.3}",
            at.positions,
            at.alpha(),
            au.alpha()
        );
        write_json(
            &c.out.join("eval.json"),
            &serde_json::json!({
                "held_out_windows": held.len(), "positions": at.positions,
                "alpha_trained": at.alpha(), "alpha_untrained": au.alpha(),
            }),
        )?;
    }
    Ok(())
}

fn parse_layers(s: &str) -> Result<std::ops::Range<usize>> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--layers {s}: expected FIRST-LAST, e.g. 15-29"))?;
    let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
    if b < a {
        bail!("--layers {s}: the last layer comes before the first");
    }
    Ok(a..b + 1)
}

fn evolve(a: EvolveArgs) -> Result<()> {
    let c = &a.common;
    if c.corpus.is_empty() {
        bail!("give the version's domain corpus with --corpus PATH… (see the ecspec-train crate docs)");
    }
    let base = load_base(c)?;
    // A window of seq_len + 1 tokens predicts seq_len next tokens.
    let Windows {
        train,
        held_out: held,
    } = corpus_windows(&base, c, &c.corpus, c.seq_len + 1)?;
    let cfg = EvolveConfig {
        version: a.version.clone(),
        rank: a.rank,
        alpha: a.alpha,
        modules: a.modules.clone(),
        layers: a.layers.as_deref().map(parse_layers).transpose()?,
        seq_len: c.seq_len + 1,
        schedule: schedule(c, 5e-4),
        base_model: Some(ecspec_family::info(c.base).hf_name.to_string()),
    };
    let mut bars = TrainBars::new();
    let r = ecspec_train::evolve(&base, &train, &cfg, &c.out, c.resume, &mut bars)?;
    bars.finish();
    let first = r.history.first().map_or(f32::NAN, |s| s.loss);
    let last = r.history.last().map_or(f32::NAN, |s| s.loss);
    println!(
        "version {}: {} · {} steps · loss {first:.4} → {last:.4} · {:.0} tok/s",
        a.version,
        r.adapter_dir.display(),
        r.history.len(),
        r.tokens_per_sec
    );
    if !held.is_empty() {
        let adapter = LoraAdapter::load_peft(&c.out, base.transformer.config())?;
        let target = Transformer::with_adapter(&base.transformer, &adapter)?;
        let before = ecspec_train::mean_cross_entropy(&base.transformer, &held)?;
        let after = ecspec_train::mean_cross_entropy(&target, &held)?;
        println!(
            "held-out cross-entropy ({} windows): base {before:.4} → {} {after:.4} nats/token",
            held.len(),
            a.version
        );
        write_json(
            &c.out.join("eval.json"),
            &serde_json::json!({
                "held_out_windows": held.len(), "ce_base": before, "ce_version": after,
            }),
        )?;
    }
    Ok(())
}

fn distill_draft(a: DistillDraftArgs) -> Result<()> {
    let c = &a.common;
    let fam = open_family(&a.manifest, c.model.as_deref(), c.base)?;
    let v = fam.version(&a.version).with_context(|| {
        let names: Vec<&str> = fam
            .versions()
            .iter()
            .map(|v| v.spec.name.as_str())
            .collect();
        format!(
            "--version {}: not in {} (versions: {})",
            a.version,
            a.manifest.display(),
            names.join(", ")
        )
    })?;
    // The teacher's identity: the base, plus the adapter's weights when there is one.
    let teacher_id = match &v.spec.adapter {
        None => fam.base.base_hash.clone(),
        Some(rel) => {
            let f = fam
                .manifest
                .resolve(rel)
                .join(ecspec_model::lora::PEFT_WEIGHTS_FILE);
            format!("{}+{}", fam.base.base_hash, ecspec_family::sha256_file(&f)?)
        }
    };
    let paths = if c.corpus.is_empty() {
        default_corpus()
    } else {
        c.corpus.clone()
    };
    let Windows { train, .. } = corpus_windows(&fam.base, c, &paths, c.seq_len)?;
    let cfg = ecspec_train::DistillConfig {
        layers: a.layers,
        seq_len: c.seq_len,
        mse_weight: a.mse_weight,
        kl_weight: a.kl_weight,
        kl_top_k: Some(a.kl_top_k),
        schedule: schedule(c, 1e-3),
    };
    let mut bars = TrainBars::new();
    let r = ecspec_train::distill_draft(
        &fam.base,
        &v.transformer,
        &teacher_id,
        &train,
        &cfg,
        &c.out,
        c.resume,
        &mut bars,
    )?;
    bars.finish();
    let first = r.history.first().map_or(f32::NAN, |s| s.loss);
    let last = r.history.last().map_or(f32::NAN, |s| s.loss);
    println!(
        "conventional draft from {}: {} ({:.1} MB) · {} steps · loss {first:.4} → {last:.4} · {:.0} tok/s",
        a.version,
        r.draft_path.display(),
        r.file_bytes as f64 / 1e6,
        r.history.len(),
        r.tokens_per_sec
    );
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))
}
