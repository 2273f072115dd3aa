//! `ecspec soak`: many edges against one cloud on loopback for a bounded time, with random
//! link outages that reset their connections, checking that nothing committed is lost or
//! repeated and that the process's memory and descriptors stay flat.
//!
//! Every edge loops greedy requests over a few prompts until the deadline; a request gets an
//! outage with probability `--outage-prob` (at a uniform time in 0.2–1.5 s, lasting 0.1–1 s,
//! seeded). Each request's tokens must equal its prompt's cloud-only reference (computed first,
//! without outages): greedy speculative output is the target's own, so any lost or repeated
//! token shows as a difference. RSS and open descriptors are read from `/proc/self` every
//! `--sample-s` seconds.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::time::Instant;

use ecspec_link::{Outage, Outages};
use ecspec_run::run::{link_config, prompt_ids, run_one, CloudEndpoint, LocalCloud, RunSpec};
use ecspec_run::{load_family, LinkArgs, ModeArg, ModelArgs, PolicySpec, SamplingArgs};

use crate::demo::PROMPTS;

/// Most edges one soak runs.
pub const MAX_EDGES: usize = 1000;
/// Longest soak, seconds (a day).
pub const MAX_DURATION_S: f64 = 86_400.0;

/// `ecspec soak`
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Edges running at once, each looping requests.
    #[arg(long, default_value_t = 100)]
    pub edges: usize,
    /// How long edges start new requests, seconds (running ones finish).
    #[arg(long, default_value_t = 600.0, allow_negative_numbers = true)]
    pub duration_s: f64,
    /// Tokens per request.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_tokens: u32,
    /// Probability that a request's link has an outage (its connection reset).
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    pub outage_prob: f64,
    /// Seconds between memory and descriptor samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample_s: f64,
    /// Seed of the outages.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub link: LinkArgs,
}

/// One resource sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the soak began.
    pub t_s: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// Open file descriptors.
    pub fds: usize,
    /// Requests finished so far.
    pub requests: usize,
}

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Edges and duration asked for.
    pub edges: usize,
    /// Seconds edges started requests for.
    pub duration_s: f64,
    /// Wall-clock seconds until the last request finished.
    pub wall_s: f64,
    /// Requests finished.
    pub requests: usize,
    /// Requests that failed (error), with their first few messages.
    pub failed: usize,
    /// Up to five failure messages.
    pub failures: Vec<String>,
    /// Requests whose tokens differ from their prompt's reference: lost or repeated tokens.
    pub mismatched: usize,
    /// Tokens committed in all.
    pub tokens: usize,
    /// Requests given an outage, and reconnects counted by the edges.
    pub outages: usize,
    /// Reconnects all edges made.
    pub reconnects: u64,
    /// Round latency (send → verdict), seconds: p50 and p95 over every round.
    pub round_p50_s: f64,
    /// See [`Self::round_p50_s`].
    pub round_p95_s: f64,
    /// Resource samples over time.
    pub samples: Vec<Sample>,
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// What one request left.
struct Done {
    ok: bool,
    error: Option<String>,
    matches: bool,
    tokens: usize,
    outage: bool,
    reconnects: u64,
    waits: Vec<f64>,
}

/// Runs the soak.
///
/// # Errors
/// Bad arguments, models that cannot be loaded, the references failing.
pub async fn run(a: SoakArgs) -> Result<()> {
    if !(1..=MAX_EDGES).contains(&a.edges) {
        bail!("--edges must be from 1 to {MAX_EDGES}, got {}", a.edges);
    }
    if !(a.duration_s > 0.0 && a.duration_s <= MAX_DURATION_S) {
        bail!(
            "--duration-s must be above 0 and at most {MAX_DURATION_S}, got {}",
            a.duration_s
        );
    }
    if !(0.0..=1.0).contains(&a.outage_prob) {
        bail!("--outage-prob must be from 0 to 1, got {}", a.outage_prob);
    }
    if !(a.sample_s >= 0.1 && a.sample_s.is_finite()) {
        bail!("--sample-s must be at least 0.1, got {}", a.sample_s);
    }
    let loaded = Rc::new(load_family(&a.models, true)?);
    let link = link_config(&a.link)?;
    let cloud = LocalCloud::start_with(
        &loaded,
        ecspec_cloud::ServerConfig {
            max_sessions: a.edges.max(1),
            max_sessions_per_client: a.edges.max(1),
            ..Default::default()
        },
    )
    .await?;
    let policy = PolicySpec::parse("ecspec")?;
    let sampling = SamplingArgs::evaluation(0.0, 0, ecspec_edge::DraftSource::Model);
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| prompt_ids(&loaded, p, false))
        .collect::<Result<_>>()?;
    let spec = |mode, outages| RunSpec {
        outages,
        mode,
        draft_len: &policy,
        sampling: &sampling,
        max_tokens: a.max_tokens as usize,
        stop: Vec::new(),
        link: link.clone(),
        cloud: Some(CloudEndpoint::Tcp(cloud.addr.into())),
        virtual_compute: None,
        memory: None,
        energy: None,
        energy_budget: None,
    };
    eprintln!(
        "ecspec soak: references (cloud-only, {} prompts)…",
        prompts.len()
    );
    let mut references = Vec::new();
    for p in &prompts {
        let s = run_one(
            &loaded,
            p.clone(),
            spec(ModeArg::CloudOnly, Outages::default()),
            &mut |_| {},
        )
        .await
        .map_err(|e| e.error)
        .context("a reference run")?;
        references.push(s.tokens);
    }
    eprintln!(
        "ecspec soak: {} edges for {} s, outage probability {}…",
        a.edges, a.duration_s, a.outage_prob
    );
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.duration_s);
    let done = Rc::new(std::cell::RefCell::new(Vec::<Done>::new()));
    let samples = Rc::new(std::cell::RefCell::new(vec![Sample {
        t_s: 0.0,
        rss_mib: rss_mib(),
        fds: open_fds(),
        requests: 0,
    }]));
    // The edges run on this thread (run_one borrows the loaded models); their compute runs on
    // blocking threads, the cloud on the runtime's workers.
    let local = tokio::task::LocalSet::new();
    let (refs, prompts) = (Rc::new(references), Rc::new(prompts));
    for edge in 0..a.edges {
        let (loaded, done, refs, prompts) =
            (loaded.clone(), done.clone(), refs.clone(), prompts.clone());
        let (policy, sampling, link) = (policy.clone(), sampling.clone(), link.clone());
        let (addr, max_tokens, prob) = (cloud.addr, a.max_tokens as usize, a.outage_prob);
        let mut rng =
            ChaCha8Rng::seed_from_u64(a.seed.wrapping_mul(1_000_003).wrapping_add(edge as u64));
        local.spawn_local(async move {
            let mut k = 0usize;
            while Instant::now() < deadline {
                let i = (edge + k) % prompts.len();
                k += 1;
                let outage = rng.random_bool(prob);
                let outages = if outage {
                    let o = Outage {
                        at: Duration::from_secs_f64(rng.random_range(0.2..1.5)),
                        duration: Duration::from_secs_f64(rng.random_range(0.1..1.0)),
                    };
                    Outages::new(vec![o]).unwrap_or_default()
                } else {
                    Outages::default()
                };
                let spec = RunSpec {
                    outages,
                    mode: ModeArg::Speculative,
                    draft_len: &policy,
                    sampling: &sampling,
                    max_tokens,
                    stop: Vec::new(),
                    link: link.clone(),
                    cloud: Some(CloudEndpoint::Tcp(addr.into())),
                    virtual_compute: None,
                    memory: None,
                    energy: None,
                    energy_budget: None,
                };
                let r = run_one(&loaded, prompts[i].clone(), spec, &mut |_| {}).await;
                let d = match r {
                    Ok(s) => Done {
                        ok: true,
                        error: None,
                        matches: s.tokens == refs[i],
                        tokens: s.tokens.len(),
                        outage,
                        reconnects: s.reconnects,
                        waits: s.round_records.iter().map(|r| r.wait_s).collect(),
                    },
                    Err(e) => Done {
                        ok: false,
                        error: Some(format!("{:#}", e.error)),
                        // What was committed before the failure must be the reference's start.
                        matches: refs[i].starts_with(&e.partial_tokens),
                        tokens: e.partial_tokens.len(),
                        outage,
                        reconnects: 0,
                        waits: Vec::new(),
                    },
                };
                done.borrow_mut().push(d);
            }
        });
    }
    {
        let (samples, done) = (samples.clone(), done.clone());
        let every = Duration::from_secs_f64(a.sample_s);
        local.spawn_local(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(every).await;
                samples.borrow_mut().push(Sample {
                    t_s: t0.elapsed().as_secs_f64(),
                    rss_mib: rss_mib(),
                    fds: open_fds(),
                    requests: done.borrow().len(),
                });
            }
        });
    }
    local.await;
    let wall_s = t0.elapsed().as_secs_f64();
    samples.borrow_mut().push(Sample {
        t_s: wall_s,
        rss_mib: rss_mib(),
        fds: open_fds(),
        requests: done.borrow().len(),
    });
    cloud.stop().await;
    let done = done.borrow();
    let mut waits: Vec<f64> = done.iter().flat_map(|d| d.waits.iter().copied()).collect();
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| ecspec_load::percentile(&waits, p).unwrap_or(0.0);
    let report = SoakReport {
        edges: a.edges,
        duration_s: a.duration_s,
        wall_s,
        requests: done.len(),
        failed: done.iter().filter(|d| !d.ok).count(),
        failures: done
            .iter()
            .filter_map(|d| d.error.clone())
            .take(5)
            .collect(),
        mismatched: done.iter().filter(|d| !d.matches).count(),
        tokens: done.iter().map(|d| d.tokens).sum(),
        outages: done.iter().filter(|d| d.outage).count(),
        reconnects: done.iter().map(|d| d.reconnects).sum(),
        round_p50_s: pct(50.0),
        round_p95_s: pct(95.0),
        samples: samples.borrow().clone(),
    };
    print_report(&report);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.mismatched > 0 {
        bail!(
            "{} requests committed other tokens than their reference",
            report.mismatched
        );
    }
    Ok(())
}

fn print_report(r: &SoakReport) {
    let first = r.samples.first();
    let last = r.samples.last();
    let max_rss = r.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let max_fds = r.samples.iter().map(|s| s.fds).max().unwrap_or(0);
    println!(
        "soak: {} edges · {:.0} s ({:.0} s wall) · {} requests ({} failed) · {} tokens · {} mismatched (lost or repeated)",
        r.edges, r.duration_s, r.wall_s, r.requests, r.failed, r.tokens, r.mismatched
    );
    println!(
        "outages: {} requests · reconnects {} · round latency p50 {:.3} s, p95 {:.3} s",
        r.outages, r.reconnects, r.round_p50_s, r.round_p95_s
    );
    if let (Some(f), Some(l)) = (first, last) {
        println!(
            "RSS {:.0} → {:.0} MiB (max {:.0}) · open descriptors {} → {} (max {})",
            f.rss_mib, l.rss_mib, max_rss, f.fds, l.fds, max_fds
        );
    }
    for e in &r.failures {
        println!("failure: {e}");
    }
}
