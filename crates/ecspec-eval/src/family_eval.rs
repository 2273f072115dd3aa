//! `ecspec family eval`: for every target version of a family, how well each kind of edge
//! draft serves it — ECSpec's static shared-backbone draft (trained anchor), the untrained
//! shared-backbone draft, and the conventional draft distilled from the first version, kept
//! stale or re-synchronised — measured by real speculative generation through an in-process
//! cloud (loopback, no link delay) on held-out benchmark prompts, greedy and sampled.
//!
//! Re-synchronising the conventional draft means downloading the draft re-distilled from the
//! new version, whole: its file's bytes, timed through a [`ConstantRate`] link model at each
//! downlink rate asked for (request one way, then the file's serialization and the way back:
//! `RTT + 8·bytes/rate`; TCP slow start is not modelled). ECSpec's static draft downloads 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use ecspec_edge::Summary;
use ecspec_link::LinkConfig;
use ecspec_model::Draft;
use indicatif::ProgressBar;

use crate::prompts;
use crate::resync::resync_seconds;
use ecspec_family::FamilyName;
use ecspec_run::run::{prompt_ids, run_one, LocalCloud, RunSpec};
use ecspec_run::Loaded;
use ecspec_run::{ModeArg, PolicySpec, SamplingArgs};

/// `ecspec family eval`
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Family manifest (TOML).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// Built-in family the manifest belongs to (its wire name and default base file).
    #[arg(long, value_enum, default_value = "smollm2")]
    pub base: FamilyName,
    /// Base GGUF (default: the manifest's `base.file`, else the cache).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Conventional drafts, one per version: DIR/VERSION/draft.safetensors (from `ecspec
    /// family distill-draft --out DIR/VERSION`). Without it the conventional rows are left out.
    #[arg(long, value_name = "DIR")]
    pub conventional_dir: Option<PathBuf>,
    #[command(flatten)]
    pub workload: prompts::WorkloadArgs,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_tokens: u32,
    /// Draft-length policy of every speculative run.
    #[arg(long, default_value = "fixed:4", value_parser = PolicySpec::parse)]
    pub draft_len: PolicySpec,
    /// Drafter of every speculative run: `model` compares the draft kinds on their own;
    /// `lookup` / `hybrid` add context lookup (the same for every draft kind, so it narrows
    /// their differences).
    #[arg(long, default_value = "model", value_name = "SOURCE")]
    pub drafter: ecspec_edge::DraftSource,
    /// Temperatures (0: greedy verification; otherwise rejection sampling).
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub temperatures: Vec<f32>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Downlink rates (Mbit/s) the re-sync download is timed at.
    #[arg(long, value_delimiter = ',', default_value = "10,50,300")]
    pub resync_mbps: Vec<f64>,
    /// RTT (ms) of the re-sync download.
    #[arg(long, default_value_t = 60.0)]
    pub resync_rtt_ms: f64,
    /// Output directory: family-eval.csv, family-eval.md, family-eval.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Totals over a set of generations.
#[derive(Debug, Default, Clone)]
struct Totals {
    prompts: usize,
    generated: usize,
    drafted: u64,
    accepted: u64,
    rounds: u64,
    /// Drafting rounds that stopped at a rejected draft (accepted < drafted).
    rejections: u64,
    committed_in_rounds: f64,
    seconds: f64,
    lossless: Option<bool>,
}

impl Totals {
    fn add(&mut self, s: &Summary, same_as_target: Option<bool>) {
        self.prompts += 1;
        self.generated += s.generated_tokens;
        self.drafted += s.drafted_tokens;
        self.accepted += s.accepted_tokens;
        self.rounds += s.rounds;
        self.rejections += s
            .round_records
            .iter()
            .filter(|r| r.k > 0 && r.accepted < r.k)
            .count() as u64;
        self.committed_in_rounds += s.mean_accepted_tokens * s.rounds as f64;
        self.seconds += s.total_s;
        if let Some(same) = same_as_target {
            self.lossless = Some(self.lossless.unwrap_or(true) && same);
        }
    }
    /// Accepted / drafted tokens.
    fn acceptance_rate(&self) -> Option<f64> {
        (self.drafted > 0).then(|| self.accepted as f64 / self.drafted as f64)
    }
    /// Per-token acceptance probability α, the MLE under the truncated-geometric model of
    /// Leviathan et al. 2023 (arXiv 2211.17192, §3.1): accepted / (accepted + rejections).
    fn alpha(&self) -> Option<f64> {
        (self.accepted + self.rejections > 0)
            .then(|| self.accepted as f64 / (self.accepted + self.rejections) as f64)
    }
    fn mean_accepted(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.committed_in_rounds / self.rounds as f64
        }
    }
    fn goodput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.generated as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One row of the results: a version, a draft, a temperature, a category (or `all`).
#[derive(Debug, Clone)]
struct Row {
    version: String,
    variant: &'static str,
    temperature: f32,
    category: String,
    totals: Totals,
    resync_bytes: Option<u64>,
    resync_s: Vec<f64>,
}

/// One generation: its prompt's category, its summary, and (greedy) whether it equals the
/// target's own output.
type Generation = (String, Summary, Option<bool>);

/// Re-sync download time of `bytes` at `mbps` (Mbit/s) with `rtt_ms` ([`resync_seconds`]).
///
/// # Errors
/// A rate that is not positive, naming `--resync-mbps`.
fn resync_at(bytes: u64, mbps: f64, rtt_ms: f64) -> Result<f64> {
    if !(mbps.is_finite() && mbps > 0.0) {
        bail!("--resync-mbps {mbps}: must be positive");
    }
    Ok(resync_seconds(bytes, mbps * 1e6, rtt_ms / 1e3))
}

/// A draft compared by `family eval` (or the target alone, the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The target alone: the output the drafts must reproduce.
    CloudOnly,
    /// The family's static shared-backbone draft.
    EcspecStatic,
    /// The shared-backbone draft with an untrained anchor.
    SharedUntrained,
    /// The conventional draft of the first version, never re-synced.
    ConventionalStale,
    /// The conventional draft re-distilled for each version (and downloaded again).
    ConventionalResync,
}

impl Variant {
    /// Its name in the CSV, the Markdown and the JSONL records.
    fn name(self) -> &'static str {
        match self {
            Variant::CloudOnly => "cloud-only",
            Variant::EcspecStatic => "ecspec-static",
            Variant::SharedUntrained => "shared-untrained",
            Variant::ConventionalStale => "conventional-stale",
            Variant::ConventionalResync => "conventional-resync",
        }
    }
}

/// Checks the numeric options of `family eval`.
fn check_args(a: &EvalArgs) -> Result<()> {
    if a.temperatures.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
        bail!(
            "--temperatures must be finite and ≥ 0, got {:?}",
            a.temperatures
        );
    }
    if let Some(m) = a
        .resync_mbps
        .iter()
        .find(|m| !(m.is_finite() && **m >= 1e-6))
    {
        bail!("--resync-mbps must be finite and at least 1 bit/s (1e-6), got {m:e}");
    }
    if !(a.resync_rtt_ms.is_finite() && a.resync_rtt_ms >= 0.0) {
        bail!("--resync-rtt-ms must be ≥ 0, got {}", a.resync_rtt_ms);
    }
    Ok(())
}

/// What `family eval` compares: the family, its versions' names, the drafts run on every
/// version, and per version its conventional draft and that draft's file size (bytes).
struct Drafts {
    fam: ecspec_family::Family,
    versions: Vec<String>,
    every_version: Vec<(Variant, Arc<Draft>)>,
    conventional: Vec<(Arc<Draft>, u64)>,
}

/// Opens the family of `a` and loads its drafts (the conventional ones from
/// `--conventional-dir`, when given).
fn load_drafts(a: &EvalArgs) -> Result<Drafts> {
    let fam = ecspec_run::open_family(&a.manifest, a.model.as_deref(), a.base)?;
    let info = ecspec_family::info(a.base);
    if fam.manifest.name != info.wire_name {
        bail!(
            "{}: family `{}` is not the built-in `{}` family (--base {:?})",
            a.manifest.display(),
            fam.manifest.name,
            info.wire_name,
            a.base
        );
    }
    if fam.anchor.is_none() {
        eprintln!("ecspec: note: the manifest names no trained anchor; ecspec-static is the untrained draft");
    }
    let versions: Vec<String> = fam.versions().iter().map(|v| v.spec.name.clone()).collect();
    let mut every_version = vec![
        (Variant::EcspecStatic, Arc::new(fam.draft()?)),
        (
            Variant::SharedUntrained,
            Arc::new(Draft::shared_backbone(
                &fam.base,
                fam.manifest.draft.shared_layers,
                None,
            )?),
        ),
    ];
    let mut conventional = Vec::new();
    match &a.conventional_dir {
        Some(dir) => {
            for v in &versions {
                let f = dir.join(v).join("draft.safetensors");
                let d = Draft::standalone(&fam.base, &f).with_context(|| {
                    format!(
                        "loading the conventional draft of version {v} ({}; build it with `ecspec family distill-draft --version {v} --out {}`)",
                        f.display(),
                        dir.join(v).display()
                    )
                })?;
                let bytes = std::fs::metadata(&f)?.len();
                conventional.push((Arc::new(d), bytes));
            }
            every_version.push((Variant::ConventionalStale, conventional[0].0.clone()));
        }
        None => {
            eprintln!("ecspec: note: no --conventional-dir; the conventional rows are left out")
        }
    }
    Ok(Drafts {
        fam,
        versions,
        every_version,
        conventional,
    })
}


/// Where one version × temperature's generations run and are recorded.
struct EvalCtx<'c> {
    a: &'c EvalArgs,
    d: &'c Drafts,
    questions: &'c [prompts::Question],
    cloud: std::net::SocketAddr,
    link: &'c Option<LinkConfig>,
    bar: &'c ProgressBar,
}

impl EvalCtx<'_> {
    /// Every question with `draft` as `variant` (cloud-only with `mode` CloudOnly) against
    /// version `vname` at `temp`, each recorded in `jsonl`; greedy speculative outputs are
    /// compared with `target_runs`.
    #[allow(clippy::too_many_arguments)]
    async fn generations(
        &self,
        vname: &str,
        temp: f32,
        variant: Variant,
        draft: &Draft,
        target_runs: &[Summary],
        jsonl: &mut impl Write,
    ) -> Result<Vec<Generation>> {
        let mode = if variant == Variant::CloudOnly {
            ModeArg::CloudOnly
        } else {
            ModeArg::Speculative
        };
        let loaded = Loaded {
            info: ecspec_family::info(self.a.base),
            edge_model: self.d.fam.base.clone(),
            draft: draft.clone(),
            draft_desc: variant.name().to_string(),
            target: None,
            // Fixed K: no estimate to start.
            acceptance_prior: None,
        };
        let sampling = SamplingArgs::evaluation(temp, self.a.seed, self.a.drafter);
        let mut runs = Vec::new();
        for (qi, q) in self.questions.iter().enumerate() {
            self.bar.set_message(format!(
                "{vname} · {} · T={temp} · {}",
                variant.name(),
                q.category
            ));
            let ids = prompt_ids(&loaded, &q.turns[0], false)
                .with_context(|| format!("question {}", q.question_id))?;
            let spec = RunSpec {
                outages: ecspec_link::Outages::default(),
                mode,
                draft_len: &self.a.draft_len,
                sampling: &sampling,
                max_tokens: self.a.max_tokens as usize,
                stop: Vec::new(),
                link: self.link.clone(),
                cloud: Some(ecspec_run::run::CloudEndpoint::Tcp(self.cloud.into())),
                virtual_compute: None,
                memory: None,
                energy: None,
                energy_budget: None,
            };
            let s = run_one(&loaded, ids, spec, &mut |_| {})
                .await
                .with_context(|| {
                    format!("{vname} · {} · question {}", variant.name(), q.question_id)
                })?;
            let same = (temp == 0.0 && mode == ModeArg::Speculative)
                .then(|| target_runs.get(qi).is_some_and(|t| t.tokens == s.tokens));
            writeln!(
                jsonl,
                "{}",
                serde_json::json!({
                    "version": vname, "draft": variant.name(), "temperature": temp,
                    "question_id": q.question_id, "category": q.category,
                    "same_as_target": same, "summary": strip_rounds(&s),
                })
            )?;
            self.bar.inc(1);
            runs.push((q.category.clone(), s, same));
        }
        Ok(runs)
    }
}

/// The report rows of one variant's runs on version `vi` at `temp`: all categories, then
/// each. Re-sync: what the conventional edge downloads when version `vi` goes live (nothing
/// for the first version; ECSpec's drafts never).
fn variant_rows(
    a: &EvalArgs,
    d: &Drafts,
    vi: usize,
    temp: f32,
    variant: Variant,
    runs: &[Generation],
) -> Result<Vec<Row>> {
    let (resync_bytes, resync_s) = match variant {
        Variant::ConventionalResync => {
            let bytes = if vi == 0 { 0 } else { d.conventional[vi].1 };
            let secs = a
                .resync_mbps
                .iter()
                .map(|&m| resync_at(bytes, m, a.resync_rtt_ms))
                .collect::<Result<Vec<_>>>()?;
            (Some(bytes), secs)
        }
        Variant::CloudOnly => (None, Vec::new()),
        _ => (Some(0), vec![0.0; a.resync_mbps.len()]),
    };
    let mut all = Totals::default();
    let mut cats: std::collections::BTreeMap<String, Totals> = Default::default();
    for (cat, s, same) in runs {
        all.add(s, *same);
        cats.entry(cat.clone()).or_default().add(s, *same);
    }
    let row = |category: String, totals: Totals| Row {
        version: d.versions[vi].clone(),
        variant: variant.name(),
        temperature: temp,
        category,
        totals,
        resync_bytes,
        resync_s: resync_s.clone(),
    };
    let mut rows = vec![row("all".into(), all)];
    rows.extend(cats.into_iter().map(|(c, t)| row(c, t)));
    Ok(rows)
}

/// Runs `ecspec family eval`.
pub async fn run(a: EvalArgs) -> Result<()> {
    check_args(&a)?;
    let (prompts_path, questions) = a.workload.questions()?;
    let d = load_drafts(&a)?;
    let n_variants = d.every_version.len() + usize::from(!d.conventional.is_empty()) + 1;
    let total = (d.versions.len() * n_variants * a.temperatures.len() * questions.len()) as u64;
    eprintln!(
        "ecspec family eval: {} versions × {} drafts (+ cloud-only) × {} temperatures × {} prompts ({} categories) · {} tokens · draft length {} · drafter {}",
        d.versions.len(),
        n_variants - 1,
        a.temperatures.len(),
        questions.len(),
        questions.iter().map(|q| q.category.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
        a.max_tokens,
        a.draft_len,
        a.drafter
    );
    let bar = ecspec_run::progress::count_bar(total);

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let jsonl_path = a.out.join("family-eval.jsonl");
    let mut jsonl = std::io::BufWriter::new(
        std::fs::File::create(&jsonl_path)
            .with_context(|| format!("creating {}", jsonl_path.display()))?,
    );
    let mut rows: Vec<Row> = Vec::new();
    let link = Some(LinkConfig::constant(1e6, 1e6, 0.0).context("the unshaped link")?);
    for (vi, vname) in d.versions.iter().enumerate() {
        let model = ecspec_run::family_cloud_model(&d.fam, vname)?;
        let cloud = LocalCloud::start_model(model).await?;
        let ctx = EvalCtx {
            a: &a,
            d: &d,
            questions: &questions,
            cloud: cloud.addr,
            link: &link,
            bar: &bar,
        };
        // The target's own output first: greedy speculative runs must reproduce it.
        let mut variants = vec![(Variant::CloudOnly, d.every_version[0].1.clone())];
        variants.extend(d.every_version.iter().cloned());
        if let Some((c, _)) = d.conventional.get(vi) {
            variants.push((Variant::ConventionalResync, c.clone()));
        }
        for &temp in &a.temperatures {
            let mut target_runs: Vec<Summary> = Vec::new();
            for (variant, draft) in &variants {
                let runs = ctx
                    .generations(vname, temp, *variant, draft, &target_runs, &mut jsonl)
                    .await?;
                if *variant == Variant::CloudOnly {
                    target_runs = runs.iter().map(|(_, s, _)| s.clone()).collect();
                }
                rows.extend(variant_rows(&a, &d, vi, temp, *variant, &runs)?);
            }
        }
        cloud.stop().await;
    }
    bar.finish_and_clear();
    jsonl.flush()?;

    let csv_path = a.out.join("family-eval.csv");
    std::fs::write(&csv_path, csv(&rows, &a.resync_mbps))
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let md = markdown(&rows, &a, &prompts_path, questions.len());
    let md_path = a.out.join("family-eval.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    eprintln!(
        "ecspec family eval: wrote {}, {}, {}",
        csv_path.display(),
        md_path.display(),
        jsonl_path.display()
    );
    Ok(())
}

/// The summary without its per-round records (they would dominate the JSONL).
fn strip_rounds(s: &Summary) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.remove("round_records");
        m.remove("text");
    }
    v
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "".into(), |x| format!("{x:.digits$}"))
}

fn csv(rows: &[Row], mbps: &[f64]) -> String {
    let mut out = String::from(
        "version,draft,temperature,category,prompts,generated_tokens,drafted_tokens,accepted_tokens,rounds,rejections,acceptance_rate,alpha_per_token,mean_accepted_tokens,goodput_tok_s,lossless,resync_bytes",
    );
    for m in mbps {
        out.push_str(&format!(",resync_s_at_{m}mbps"));
    }
    out.push('\n');
    for r in rows {
        let t = &r.totals;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.4},{:.3},{},{}",
            r.version,
            r.variant,
            r.temperature,
            r.category,
            t.prompts,
            t.generated,
            t.drafted,
            t.accepted,
            t.rounds,
            t.rejections,
            fmt_opt(t.acceptance_rate(), 4),
            fmt_opt(t.alpha(), 4),
            t.mean_accepted(),
            t.goodput(),
            t.lossless.map_or(String::new(), |b| b.to_string()),
            r.resync_bytes.map_or(String::new(), |b| b.to_string()),
        ));
        for i in 0..mbps.len() {
            out.push(',');
            if let Some(s) = r.resync_s.get(i) {
                out.push_str(&format!("{s:.3}"));
            }
        }
        out.push('\n');
    }
    out
}

fn markdown(rows: &[Row], a: &EvalArgs, prompts: &Path, n_prompts: usize) -> String {
    let rates: Vec<String> = a.resync_mbps.iter().map(|m| format!("{m}")).collect();
    let mut s = format!(
        "### Family eval: {}\n\n{} held-out prompts ({} per category) from `{}`, {} tokens each, draft length `{}`, drafter `{}`, in-process cloud on loopback (no link delay); goodput is generated tokens per second of wall-clock time, prefill included. Re-sync: the conventional edge downloads the draft re-distilled from the new version, whole, timed at {} Mbit/s with {} ms RTT; ECSpec's static draft downloads nothing. For comparison, the FlexSpec/ECSpec paper's motivating figures: acceptance 0.72 with a matched draft, 0.18 after the target drifted.\n\n",
        a.manifest.display(),
        n_prompts,
        a.workload.per_category,
        prompts.display(),
        a.max_tokens,
        a.draft_len,
        a.drafter,
        rates.join(" / "),
        a.resync_rtt_ms
    );
    s.push_str(&format!(
        "| version | draft | T | acceptance rate (accepted/drafted) | α (per-token) | mean accepted tokens/round | goodput (tok/s) | greedy = target | re-sync bytes | re-sync s @ {} Mbit/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
        rates.join("/")
    ));
    for r in rows.iter().filter(|r| r.category == "all") {
        let t = &r.totals;
        let resync = match r.resync_bytes {
            None => "–".to_string(),
            Some(b) => format!("{b}"),
        };
        let secs = if r.resync_s.is_empty() {
            "–".to_string()
        } else {
            r.resync_s
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {} | {} | {} |\n",
            r.version,
            r.variant,
            r.temperature,
            t.acceptance_rate()
                .map_or("–".into(), |x| format!("{x:.3}")),
            t.alpha().map_or("–".into(), |x| format!("{x:.3}")),
            t.mean_accepted(),
            t.goodput(),
            match t.lossless {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "–",
            },
            resync,
            secs
        ));
    }
    // Acceptance per category, greedy.
    let cats: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.category != "all")
        .map(|r| r.category.as_str())
        .collect();
    if let Some(t0) = a.temperatures.first() {
        s.push_str(&format!(
            "\nPer-token α per category (T = {t0}):\n\n| version | draft | {} |\n|---|---|{}\n",
            cats.iter().copied().collect::<Vec<_>>().join(" | "),
            "---|".repeat(cats.len())
        ));
        let keys: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| {
                r.category == "all"
                    && r.temperature == *t0
                    && r.variant != Variant::CloudOnly.name()
            })
            .map(|r| (r.version.as_str(), r.variant))
            .collect();
        for (v, d) in keys {
            let cells: Vec<String> = cats
                .iter()
                .map(|c| {
                    rows.iter()
                        .find(|r| {
                            r.version == v
                                && r.variant == d
                                && r.temperature == *t0
                                && r.category == *c
                        })
                        .and_then(|r| r.totals.alpha())
                        .map_or("–".into(), |x| format!("{x:.2}"))
                })
                .collect();
            s.push_str(&format!("| {v} | {d} | {} |\n", cells.join(" | ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_time_is_rtt_plus_serialization() {
        // 70 786 512 bytes at 10 Mbit/s: 56.6292096 s of serialization, plus 60 ms RTT.
        let s = resync_at(70_786_512, 10.0, 60.0).unwrap();
        assert!((s - 56.689_209_6).abs() < 1e-6, "{s}");
        let s = resync_at(1_000_000, 300.0, 0.0).unwrap();
        assert!((s - 8e6 / 300e6).abs() < 1e-6, "{s}");
        assert!(resync_at(1, 0.0, 60.0).is_err());
    }

    #[test]
    fn totals_weight_rounds_and_keep_losslessness() {
        let mut s = Summary {
            generated_tokens: 10,
            drafted_tokens: 8,
            accepted_tokens: 6,
            rounds: 4,
            mean_accepted_tokens: 2.5,
            total_s: 0.5,
            ..Default::default()
        };
        let mut t = Totals::default();
        t.add(&s, Some(true));
        s.rounds = 1;
        s.mean_accepted_tokens = 5.0;
        s.accepted_tokens = 4;
        t.add(&s, Some(false));
        assert_eq!(t.acceptance_rate(), Some(10.0 / 16.0));
        // No round records: no rejections seen, α = accepted / accepted.
        assert_eq!(t.alpha(), Some(1.0));
        // Rounds (K, accepted): (4, 1) and (4, 0) stop at a rejection, (4, 4) does not, and a
        // round that drafted nothing counts for neither.
        let round = |k: usize, accepted: usize| ecspec_edge::RoundRecord {
            round: 1,
            t_s: 0.0,
            k,
            verify: ecspec_edge::RoundVerify::Greedy,
            source: ecspec_edge::RoundSource::Model,
            accepted,
            draft_s: 0.0,
            reused: 0,
            pre_draft_s: 0.0,
            wait_s: 0.0,
            cloud_compute_s: 0.0,
            uplink_bytes: 0,
            downlink_bytes: 0,
            alpha_estimate: 0.5,
            uplink_bps_estimate: 1e12,
            rtt_s_estimate: 0.0,
            energy_j: None,
        };
        let mut u = Totals::default();
        u.add(
            &Summary {
                drafted_tokens: 12,
                accepted_tokens: 5,
                rounds: 4,
                round_records: vec![round(4, 1), round(4, 0), round(4, 4), round(0, 0)],
                ..Default::default()
            },
            None,
        );
        assert_eq!(u.rejections, 2);
        assert_eq!(u.alpha(), Some(5.0 / 7.0));
        assert_eq!(u.acceptance_rate(), Some(5.0 / 12.0));
        assert!((t.mean_accepted() - 15.0 / 5.0).abs() < 1e-12);
        assert!((t.goodput() - 20.0).abs() < 1e-12);
        assert_eq!(t.lossless, Some(false));
    }
}
