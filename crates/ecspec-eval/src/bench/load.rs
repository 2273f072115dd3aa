//! `ecspec load`: many simulated edges against one cloud. The flags become the models,
//! systems and link scenario of `ecspec bench` (the same loading, system names and scenarios),
//! handed to the `ecspec-load` crate, which runs the load and writes the report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use ecspec_cloud::{CloudModel, CloudServer, ServerConfig};
use ecspec_edge::{Drafter, EdgeConfig, SessionMemory};
use ecspec_load::{Bounds, Cloud, LevelRun, LevelSettings, Load, LocalCloud};

use super::args::ClockArg;
use super::scenario;
use super::setup::{
    check_temperature_and_phase, clocks, load_models, sampling_args, system_loaded, system_setup, Clocks, Models,
};
use super::system::{self, DraftKind, System};
use crate::prompts;
use ecspec_family::FamilyName;
use ecspec_run::run::{edge_setup, prompt_ids, RunSpec};
use ecspec_run::Loaded;
use ecspec_run::{ModeArg, SamplingArgs};

/// Requests per load level when neither `--requests` nor `--duration-s` is given.
const DEFAULT_REQUESTS: usize = 32;

/// Most edges of one closed-loop level (each holds a draft KV cache and a cloud session).
const MAX_EDGES: usize = 4096;

/// Prompts used when the shared data's Spec-Bench file is absent and no `--prompts` is given.
const FALLBACK_PROMPTS: [&str; 6] = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about the sea at night.",
    "What are three tips for writing clear technical documentation?",
    "Translate into French: The weather is lovely today, let us go for a walk.",
    "A train leaves at 3 pm and travels 120 km at 60 km/h. When does it arrive?",
    "Summarise the plot of Romeo and Juliet in three sentences.",
];

/// `ecspec load`
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Model family.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub family: FamilyName,
    /// Family manifest with the target versions and the static draft [default: the shipped
    /// families/<family>/family.toml].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Conventional drafts for the `sd-fixed` systems of a shared-backbone family:
    /// DIR/VERSION/draft.safetensors [default: ~/.cache/ecspec/train/<family>/conventional
    /// when present; without them those systems are skipped].
    #[arg(long, value_name = "DIR")]
    pub conventional_dir: Option<PathBuf>,
    /// Target version the in-process cloud serves [default: the family's first, v0].
    #[arg(long, value_name = "NAME")]
    pub version: Option<String>,
    /// Systems: cloud-only, sd-fixed:K, sd-fixed:K+resync, ecspec, static:POLICY.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cloud-only,sd-fixed:4,ecspec"
    )]
    pub systems: Vec<String>,
    /// Closed loop: this many edges at once, each sending its next request when its last one
    /// ends; one load level per value [default: 1,4,16 unless --rate is given].
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "N,…",
        conflicts_with = "rate"
    )]
    pub concurrency: Vec<usize>,
    /// Open loop: Poisson arrivals at this many requests per second (seeded by --seed); one
    /// load level per value.
    #[arg(long, value_delimiter = ',', value_name = "R,…")]
    pub rate: Vec<f64>,
    /// Requests per load level [default: 32 when --duration-s is not given].
    #[arg(long, value_name = "N")]
    pub requests: Option<usize>,
    /// Seconds per load level: no request starts later (those running finish).
    #[arg(long, value_name = "S")]
    pub duration_s: Option<f64>,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_tokens: u32,
    /// Temperature (0: greedy, and every output is checked against its prompt's reference).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of the samplers and of the open loop's arrivals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Link scenario of every edge: a built-in name (5g-static, 5g-driving, lte-driving,
    /// umts-driving, const-10mbit-60ms, loopback) or a scenario TOML file (as `ecspec bench`).
    #[arg(long, default_value = "const-10mbit-60ms", value_name = "NAME|FILE")]
    pub scenario: String,
    /// Edge e (closed loop) or arrival e (open loop) meets the link e × this many seconds into
    /// its traces (plus the time its request starts), so edges see different phases.
    #[arg(long, default_value_t = 30.0, value_name = "S")]
    pub phase_s: f64,
    #[command(flatten)]
    pub workload: prompts::WorkloadArgs,
    /// Prompts given by the caller (the demo) instead of the workload's.
    #[arg(skip)]
    pub texts: Option<Vec<String>>,
    /// A running cloud server (host:port) instead of the in-process one (its counters, rows
    /// and iterations, are then not reported).
    #[arg(long, value_name = "HOST:PORT")]
    pub cloud: Option<String>,
    /// The TPOT service-level objective, ms: a system's capacity is the highest load level
    /// whose p95 TPOT is within it (with no failed request).
    #[arg(long, default_value_t = 100.0, value_name = "MS")]
    pub slo_tpot_ms: f64,
    /// Write the per-level results as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the results as JSON (setup, levels with every request's record, capacities).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Plot p95 TPOT against load per system (PNG; SVG when FILE ends in .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Clock: `live` (this machine's compute, the emulated link in real time) or `virtual`
    /// (the models really run, so tokens and acceptance are real, but each edge's drafting and
    /// each batched cloud iteration take the profiles' modelled times, on a paused clock
    /// shared by all edges and the in-process cloud).
    #[arg(long, value_enum, default_value = "live")]
    pub clock: ClockArg,
    /// Edge compute times on the virtual clock: `measured` (this machine, now), a shipped
    /// device profile (this-machine, phone-s25ultra, jetson-orin-nano) or a profile file.
    #[arg(long, default_value = "measured", value_name = "NAME|FILE")]
    pub edge_profile: String,
    /// Cloud compute times on the virtual clock: `measured`, datacenter-a100, this-machine or
    /// a profile file (an iteration of r rows takes t_v(0) + t_v per token · (r − 1)).
    #[arg(long, default_value = "measured", value_name = "NAME|FILE")]
    pub cloud_profile: String,
}

/// What one system's edges run: `run::edge_setup` with the system's draft, policy and mode.
struct SystemEdge {
    loaded: Loaded,
    sampling: SamplingArgs,
    policy: String,
    mode: ModeArg,
    max_tokens: usize,
    /// The virtual clock's modelled drafting times (None: live).
    virtual_compute: Option<ecspec_spec::compute::EdgeCompute>,
    /// Load-aware speculation.
    load_aware: bool,
}

impl ecspec_load::EdgeFactory for SystemEdge {
    fn edge(&self, memory: Option<SessionMemory>) -> Result<(EdgeConfig, Option<Drafter>), String> {
        let policy = (self.policy.parse::<ecspec_run::PolicySpec>())
            .map_err(|e| format!("invalid --draft-len: {e}"))?;
        let spec = RunSpec {
            outages: ecspec_link::Outages::default(),
            mode: self.mode,
            draft_len: &policy,
            sampling: &self.sampling,
            max_tokens: self.max_tokens,
            stop: Vec::new(),
            link: None,
            cloud: None,
            virtual_compute: self.virtual_compute,
            memory,
            energy: None,
            energy_budget: None,
        };
        let (mut cfg, drafter) = edge_setup(&self.loaded, &spec).map_err(|e| format!("{e:#}"))?;
        cfg.load_aware = self.load_aware;
        Ok((cfg, drafter))
    }
}

/// The load levels of the command line, checked.
fn loads(a: &LoadArgs) -> Result<Vec<Load>> {
    if !a.rate.is_empty() {
        return a
            .rate
            .iter()
            .map(|&r| {
                if r.is_finite() && r > 0.0 {
                    Ok(Load::Open { rate_per_s: r })
                } else {
                    bail!("--rate {r}: a rate must be a positive number of requests per second")
                }
            })
            .collect();
    }
    let levels = if a.concurrency.is_empty() {
        vec![1, 4, 16]
    } else {
        a.concurrency.clone()
    };
    levels
        .into_iter()
        .map(|n| {
            if (1..=MAX_EDGES).contains(&n) {
                Ok(Load::Closed { edges: n })
            } else {
                bail!("--concurrency {n}: between 1 and {MAX_EDGES} edges")
            }
        })
        .collect()
}

/// The systems of the command line, checked: each a cloud system (no edge-only), named once.
fn systems(names: &[String]) -> Result<Vec<System>> {
    let mut out: Vec<System> = Vec::new();
    for n in names {
        let s = system::parse(n)?;
        match &s {
            System::EdgeOnly => {
                bail!("--systems edge-only: it does not use the cloud, so it puts no load on it")
            }
            System::Speculative {
                budget: Some(_), ..
            } => {
                bail!("--systems {n}: energy budgets are not supported by `ecspec load` (use `ecspec bench`)")
            }
            _ => {}
        }
        if out.iter().any(|t| t.name() == s.name()) {
            bail!("--systems names {n:?} twice");
        }
        out.push(s);
    }
    if out.is_empty() {
        bail!("--systems: name at least one system");
    }
    Ok(out)
}

/// The prompts: the workload's first turns, or the built-in list when the default prompts
/// file is absent; with where they came from.
fn questions(a: &LoadArgs) -> Result<(String, Vec<String>)> {
    if let Some(t) = &a.texts {
        return Ok(("the caller's prompts".into(), t.clone()));
    }
    let w = &a.workload;
    if w.prompts.is_none() && !prompts::default_spec_bench().exists() {
        eprintln!(
            "ecspec load: note: {} is absent (set ECSPEC_DATA_DIR or give --prompts); using {} built-in prompts",
            prompts::default_spec_bench().display(),
            FALLBACK_PROMPTS.len()
        );
        return Ok((
            "built-in prompts".into(),
            FALLBACK_PROMPTS.iter().map(|s| s.to_string()).collect(),
        ));
    }
    let (path, qs) = w.questions()?;
    Ok((
        path.display().to_string(),
        qs.into_iter().map(|q| q.turns[0].clone()).collect(),
    ))
}

/// Runs `ecspec load`.
///
/// # Errors
/// Bad arguments (naming the flag), missing models, prompts or traces, an unreachable
/// `--cloud`, unwritable output files.
impl LoadArgs {
    /// `ecspec load`'s arguments from command-line words (without the program name).
    ///
    /// # Errors
    /// What clap finds wrong with them.
    pub fn from_words(words: &[&str]) -> Result<Self> {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct P {
            #[command(flatten)]
            a: LoadArgs,
        }
        Ok(<P as clap::Parser>::try_parse_from(words)?.a)
    }
}

/// What a sweep measured, with what describes it.
pub struct Sweep {
    /// Every level's requests.
    pub runs: Vec<LevelRun>,
    /// Per system and level.
    pub reports: Vec<ecspec_load::LevelReport>,
    /// Per system: the highest load within the SLO.
    pub capacities: Vec<ecspec_load::Capacity>,
    /// The family's wire name, the served version.
    pub family: String,
    /// Target version served.
    pub version: String,
    /// The link scenario.
    pub scenario: scenario::Scenario,
    /// `live` or `virtual`.
    pub clock: &'static str,
    /// Where the edge's and the cloud's compute times came from.
    pub edge_compute: String,
    /// See `edge_compute`.
    pub cloud_compute: String,
    /// Where the cloud ran.
    pub cloud_desc: String,
    /// Prompts' source and count.
    pub prompt_source: String,
    /// Prompts used.
    pub prompt_count: usize,
    /// Minutes the sweep took.
    pub minutes: f64,
    /// The level bounds.
    pub bounds: Bounds,
}

/// Runs `ecspec load`: the sweep, then the report on stdout and the files asked for.
///
/// # Errors
/// Bad settings, models that cannot be loaded, a cloud that cannot be reached, unwritable
/// files.
pub async fn run(a: LoadArgs) -> Result<()> {
    let sw = sweep(&a).await?;
    let Sweep {
        runs,
        reports,
        capacities: caps,
        family,
        version,
        scenario: sc,
        clock,
        edge_compute,
        cloud_compute,
        cloud_desc,
        prompt_source,
        prompt_count,
        minutes,
        bounds,
    } = sw;
    println!(
        "## ecspec load · {family} (target {version}) · {} · {clock} clock\n",
        sc.name
    );
    println!(
        "{prompt_count} prompts from {prompt_source}, {} tokens each, temperature {}; cloud {cloud_desc}; \
         latencies in ms (nearest-rank percentiles over completed requests); {minutes:.1} min in all.\n",
        a.max_tokens,
        a.temperature,
    );
    println!("{}", ecspec_load::markdown(&reports, &caps, a.slo_tpot_ms));
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    if let Some(p) = &a.csv {
        write(p, ecspec_load::csv(&reports))?;
    }
    if let Some(p) = &a.json {
        let setup = serde_json::json!({
            "family": family,
            "target_version": version,
            "clock": clock,
            "edge_compute": edge_compute,
            "cloud_compute": cloud_compute,
            "cloud": cloud_desc,
            "scenario": sc.name,
            "scenario_description": sc.description,
            "phase_s": a.phase_s,
            "prompts": prompt_source,
            "prompt_count": prompt_count,
            "max_tokens": a.max_tokens,
            "temperature": a.temperature,
            "seed": a.seed,
            "requests_per_level": bounds.requests(),
            "duration_s_per_level": bounds.duration().map(|d| d.as_secs_f64()),
        });
        let j = ecspec_load::json(setup, &reports, &caps, Some(&runs));
        write(p, format!("{}\n", serde_json::to_string_pretty(&j)?))?;
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "p95 TPOT against load · {family} · {} · {clock} clock",
            sc.name
        );
        ecspec_load::write_tpot_plot(p, &title, &reports, a.slo_tpot_ms)?;
    }
    let files: Vec<String> = [&a.csv, &a.json, &a.plot]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    if !files.is_empty() {
        eprintln!("ecspec load: wrote {}", files.join(", "));
    }
    Ok(())
}

/// Checks the numeric settings of `a` and returns its bounds per level (the default request
/// count when neither bound is given).
fn checked_bounds(a: &LoadArgs) -> Result<Bounds> {
    if !(a.slo_tpot_ms.is_finite() && a.slo_tpot_ms > 0.0) {
        bail!(
            "--slo-tpot-ms must be a positive number of ms, got {}",
            a.slo_tpot_ms
        );
    }
    check_temperature_and_phase(a.temperature, a.phase_s)?;
    let requests = match (a.requests, a.duration_s) {
        (None, None) => Some(DEFAULT_REQUESTS),
        (r, _) => r,
    };
    Bounds::new(requests, a.duration_s).context("--requests / --duration-s")
}

/// The address of `--cloud`, resolved (None: the in-process cloud).
async fn cloud_address(a: &LoadArgs) -> Result<Option<std::net::SocketAddr>> {
    let Some(c) = &a.cloud else {
        return Ok(None);
    };
    Ok(Some(
        tokio::net::lookup_host(c.as_str())
            .await
            .with_context(|| format!("--cloud {c}: expected HOST:PORT"))?
            .next()
            .with_context(|| format!("--cloud {c}: no address"))?,
    ))
}

/// The index of `--version` among the served versions (the first when not given).
fn version_index(a: &LoadArgs, m: &Models) -> Result<usize> {
    let Some(v) = &a.version else {
        return Ok(0);
    };
    m.versions
        .iter()
        .position(|t| &t.name == v)
        .with_context(|| {
            format!(
                "--version {v}: not served (versions: {})",
                m.versions
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The virtual clock's compute times for `a`, said on stderr.
fn announced_clocks(a: &LoadArgs, m: &Models) -> Result<Clocks> {
    let c = clocks(&a.edge_profile, &a.cloud_profile, m)?;
    eprintln!("ecspec load: virtual clock · {}", c.describe());
    Ok(c)
}

/// The systems of `wanted` that can run against version `vindex`, each as the load
/// generator's edge factory; one that needs a conventional draft the run lacks is skipped with
/// a note.
fn runnable_systems(
    a: &LoadArgs,
    wanted: &[System],
    m: &Models,
    vindex: usize,
    clocks: Option<&Clocks>,
) -> Vec<ecspec_load::System> {
    let sampling = sampling_args(a.temperature, a.seed);
    let mut runnable = Vec::new();
    for s in wanted {
        if matches!(s, System::Speculative { draft, .. } if *draft != DraftKind::Static)
            && m.conventional.is_empty()
        {
            eprintln!(
                "ecspec load: note: {} skipped: no conventional draft (see --conventional-dir; static:fixed:K runs the static draft at a fixed K)",
                s.name()
            );
            continue;
        }
        let run = system_setup(s, m, vindex, clocks);
        runnable.push(ecspec_load::System {
            name: s.name().to_string(),
            edge: Arc::new(SystemEdge {
                loaded: system_loaded(s, m, a.family, &run.draft),
                sampling: sampling.clone(),
                policy: run.policy,
                mode: run.mode,
                max_tokens: a.max_tokens as usize,
                virtual_compute: run.edge_compute,
                load_aware: !matches!(
                    s,
                    System::Speculative {
                        load_aware: false,
                        ..
                    }
                ),
            }),
        });
    }
    runnable
}

/// The in-process cloud serving every version with `version` active, with room for the
/// largest closed-loop level's sessions.
fn in_process_server(
    m: &Models,
    version: &str,
    loads: &[Load],
    clocks: Option<&Clocks>,
) -> Result<Arc<CloudServer>> {
    let model = CloudModel::with_versions(
        m.loaded.info.wire_name,
        &m.base,
        m.versions.clone(),
        version,
    )?;
    let most = loads.iter().map(|l| match l {
        Load::Closed { edges } => *edges,
        Load::Open { .. } => 0,
    });
    let config = ServerConfig {
        max_sessions: most
            .max()
            .unwrap_or(0)
            .max(ServerConfig::default().max_sessions),
        virtual_compute: clocks.map(|c| c.cloud),
        ..ServerConfig::default()
    };
    Ok(CloudServer::new(model, config))
}

/// "N requests per level", "D s per level" or both.
fn per_level(bounds: &Bounds) -> String {
    match (bounds.requests(), bounds.duration()) {
        (Some(n), None) => format!("{n} requests per level"),
        (None, Some(d)) => format!("{:.0} s per level", d.as_secs_f64()),
        (Some(n), Some(d)) => format!("{n} requests or {:.0} s per level", d.as_secs_f64()),
        (None, None) => String::new(),
    }
}

/// One finished level on stderr, with its first failure.
fn report_level(r: &LevelRun) {
    let failed = r.requests.iter().filter(|q| q.error.is_some()).count();
    eprintln!(
        "  {} · {}: {} requests{} in {:.1} s",
        r.system,
        r.load.label(),
        r.requests.len(),
        if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        },
        r.duration_s
    );
    if let Some(e) = r.requests.iter().find_map(|q| q.error.as_ref()) {
        eprintln!("    first failure: {e}");
    }
}

/// Runs every system at every load level of `a` and measures them (what `ecspec load` and the
/// demo's shared-cloud scene run); progress goes to stderr.
///
/// # Errors
/// Bad settings, models that cannot be loaded, a cloud that cannot be reached.
pub async fn sweep(a: &LoadArgs) -> Result<Sweep> {
    let bounds = checked_bounds(a)?;
    let loads = loads(a)?;
    let wanted = systems(&a.systems)?;
    let sc = scenario::resolve(&a.scenario, &prompts::data_dir())?;
    if let Some(f) = sc.missing_file() {
        bail!(
            "--scenario {}: {f} is missing (set ECSPEC_DATA_DIR to the shared data)",
            sc.name
        );
    }
    let link = sc.link_base()?;
    let (prompt_source, texts) = questions(a)?;
    let virtual_clock = a.clock == ClockArg::Virtual;
    if virtual_clock && a.cloud.is_some() {
        bail!("--clock virtual needs the in-process cloud (a remote one runs on its own clock): drop --cloud");
    }
    let cloud_addr = cloud_address(a).await?;

    let (family, manifest, conv) = (a.family, a.manifest.clone(), a.conventional_dir.clone());
    let m = tokio::task::block_in_place(|| load_models(family, manifest, conv))?;
    let vindex = version_index(a, &m)?;
    let version = m.versions[vindex].name.clone();
    let clocks: Option<Clocks> = if virtual_clock {
        Some(tokio::task::block_in_place(|| announced_clocks(a, &m))?)
    } else {
        None
    };
    let runnable = runnable_systems(a, &wanted, &m, vindex, clocks.as_ref());
    if runnable.is_empty() {
        bail!("no system left to run");
    }
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| prompt_ids(&m.loaded, t, false).with_context(|| format!("prompt {i}")))
        .collect::<Result<_>>()?;

    let server = match cloud_addr {
        Some(_) => None,
        None => Some(in_process_server(&m, &version, &loads, clocks.as_ref())?),
    };
    // The live clock reaches the cloud over loopback TCP; the virtual one over in-memory pipes
    // (only tokio timers may move a paused clock).
    let local = match (&server, virtual_clock) {
        (Some(s), false) => Some(LocalCloud::start(s.clone()).await?),
        _ => None,
    };
    let cloud = match (&server, &local, cloud_addr) {
        (Some(s), _, _) if virtual_clock => Cloud::InMemory(s.clone()),
        (_, Some(l), _) => l.cloud(),
        (_, _, Some(addr)) => Cloud::Tcp { addr, server: None },
        _ => bail!("no cloud"),
    };
    let cloud_desc = match cloud_addr {
        Some(a) => a.to_string(),
        None if virtual_clock => "in-process, in-memory pipes".to_string(),
        None => "in-process, loopback TCP".to_string(),
    };
    let settings = LevelSettings {
        bounds,
        prompts: Arc::new(prompts),
        link,
        phase_s: a.phase_s,
        seed: a.seed,
    };
    eprintln!(
        "ecspec load: {} (target {version}) · cloud {cloud_desc} · scenario {} · {} prompts · {} tokens each · {} × {} levels · {}",
        m.loaded.info.wire_name,
        sc.name,
        settings.prompts.len(),
        a.max_tokens,
        runnable.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        loads.iter().map(|l| l.label()).collect::<Vec<_>>().join(", "),
        per_level(&bounds)
    );
    let started = std::time::Instant::now();
    let mut progress = report_level;
    let result = if virtual_clock {
        on_virtual_clock(cloud, runnable, loads.clone(), settings.clone(), progress)
    } else {
        ecspec_load::run_sweep(&cloud, &runnable, &loads, &settings, &mut progress).await
    };
    if let Some(l) = local {
        l.stop().await;
    }
    let runs = result?;
    let greedy = a.temperature == 0.0;
    let clock = if virtual_clock { "virtual" } else { "live" };
    let reports = ecspec_load::level_reports(&runs, a.slo_tpot_ms, greedy);
    let capacities = ecspec_load::capacities(&reports, a.slo_tpot_ms);
    let source = |f: fn(&Clocks) -> &String| {
        clocks
            .as_ref()
            .map_or("this machine (live)".to_string(), |c| f(c).clone())
    };
    Ok(Sweep {
        runs,
        reports,
        capacities,
        family: m.loaded.info.wire_name.to_string(),
        version,
        clock,
        edge_compute: source(|c| &c.edge_source),
        cloud_compute: source(|c| &c.cloud_source),
        cloud_desc,
        prompt_source,
        prompt_count: settings.prompts.len(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
        bounds,
        scenario: sc,
    })
}

/// Runs the sweep on a fresh paused single-thread runtime on its own thread: the virtual
/// clock, shared by every edge and the in-memory cloud, moves only through tokio timers
/// (modelled drafting, link delivery, batched iterations), so the results do not depend on
/// this machine's speed.
fn on_virtual_clock(
    cloud: Cloud,
    systems: Vec<ecspec_load::System>,
    loads: Vec<Load>,
    settings: LevelSettings,
    mut progress: impl FnMut(&LevelRun) + Send,
) -> Result<Vec<LevelRun>, ecspec_load::LoadError> {
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .map_err(ecspec_load::LoadError::Cloud)?;
                rt.block_on(ecspec_load::run_sweep(
                    &cloud,
                    &systems,
                    &loads,
                    &settings,
                    &mut progress,
                ))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(ecspec_load::LoadError::Task(
                    "the virtual-clock thread panicked".into(),
                ))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<LoadArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: LoadArgs,
        }
        let mut argv = vec!["load"];
        argv.extend_from_slice(extra);
        <P as clap::Parser>::try_parse_from(argv).map(|p| p.a)
    }

    #[test]
    fn load_levels_and_systems_are_checked() {
        let a = args(&[]).unwrap();
        assert_eq!(
            loads(&a).unwrap(),
            [1, 4, 16].map(|edges| Load::Closed { edges })
        );
        let a = args(&["--rate", "0.5,2"]).unwrap();
        assert_eq!(
            loads(&a).unwrap(),
            [0.5, 2.0].map(|rate_per_s| Load::Open { rate_per_s })
        );
        assert!(args(&["--rate", "1", "--concurrency", "2"]).is_err());
        let e = loads(&args(&["--concurrency", "0"]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("--concurrency 0"), "{e}");
        for bad in ["--rate=-1", "--rate=0", "--rate=inf", "--rate=1,NaN"] {
            let e = loads(&args(&[bad]).unwrap()).unwrap_err();
            assert!(
                e.to_string().contains("a rate must be a positive number"),
                "{e}"
            );
        }
        assert!(args(&["--concurrency", "x"]).is_err());
        let s = systems(&["cloud-only".into(), "sd-fixed:4".into(), "ecspec".into()]).unwrap();
        assert_eq!(s.len(), 3);
        for bad in ["edge-only", "ecspec@0.1", "nope"] {
            assert!(systems(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(systems(&["ecspec".into(), "ecspec".into()]).is_err());
    }
}
