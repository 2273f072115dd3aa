//! What every benchmark run is built from: the family's models and drafts ([`Models`]), the
//! virtual clock's compute times ([`Clocks`]), what each compared system runs
//! ([`system_setup`] → [`SystemRun`]), one request's result ([`Request`]), and running work
//! side by side ([`parallel_map`]) on the live or virtual clock ([`on_clock`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use ecspec_cloud::TargetVersion;
use ecspec_edge::Summary;
use ecspec_family::FamilyName;
use ecspec_model::Draft;
use ecspec_run::{Loaded, ModeArg, ModelArgs, SamplingArgs};
use ecspec_spec::compute::{CloudCompute, EdgeCompute};

use super::args::ClockArg;
use super::compute;
use super::system::{DraftKind, System};

/// The models of the run: the edge's model file, the drafts, and the target versions.
pub(super) struct Models {
    pub(super) loaded: Loaded,
    pub(super) versions: Vec<TargetVersion>,
    pub(super) base: Arc<ecspec_model::LoadedModel>,
    pub(super) static_draft: Arc<Draft>,
    /// Per version: the conventional draft and its file size (bytes) to re-download.
    pub(super) conventional: Vec<(Arc<Draft>, u64)>,
    /// Whether `static_draft` is a shared-backbone draft (else the family's own small model).
    pub(super) shared_backbone: bool,
}

/// Loads the family's models: from its manifest (the shipped one by default) when it has a
/// shared-backbone draft, else its target and draft pair as the single version `v0`.
pub(super) fn load_models(
    family: FamilyName,
    manifest: Option<PathBuf>,
    conventional_dir: Option<PathBuf>,
) -> Result<Models> {
    let info = ecspec_family::info(family);
    let manifest = manifest.or_else(|| {
        let p = ecspec_family::families_dir()
            .join(info.wire_name)
            .join("family.toml");
        (info.shared_backbone && p.exists()).then_some(p)
    });
    if let Some(m) = manifest {
        let fam = ecspec_run::open_family(&m, None, family)?;
        let static_draft = Arc::new(fam.draft()?);
        let versions = ecspec_run::target_versions(&fam);
        let dir = conventional_dir.or_else(|| {
            let d = ecspec_weights::Cache::from_env()
                .ok()?
                .root()
                .join("train")
                .join(info.wire_name)
                .join("conventional");
            d.exists().then_some(d)
        });
        let mut conventional = Vec::new();
        if let Some(dir) = dir {
            for v in &versions {
                let f = dir.join(&v.name).join("draft.safetensors");
                if !f.exists() {
                    conventional.clear();
                    eprintln!("ecspec bench: note: no conventional draft {}; the sd-fixed systems are skipped", f.display());
                    break;
                }
                let d = Draft::standalone(&fam.base, &f)
                    .with_context(|| format!("loading the conventional draft {}", f.display()))?;
                conventional.push((Arc::new(d), std::fs::metadata(&f)?.len()));
            }
        }
        let loaded = Loaded {
            info,
            edge_model: fam.base.clone(),
            draft: (*static_draft).clone(),
            draft_desc: "static shared-backbone draft".into(),
            target: None,
            acceptance_prior: fam.manifest.draft.acceptance,
        };
        return Ok(Models {
            loaded,
            versions,
            base: fam.base.clone(),
            static_draft,
            conventional,
            shared_backbone: true,
        });
    }
    let args = ModelArgs {
        family,
        model: None,
        draft_model: None,
        shared_layers: 4,
        anchor: None,
        draft_file: None,
    };
    let loaded = ecspec_run::load_family(&args, true)?;
    let target = loaded.target.clone().context("the target model")?;
    let draft = Arc::new(loaded.draft.clone());
    let shared = info.shared_backbone;
    Ok(Models {
        versions: vec![TargetVersion {
            name: "v0".into(),
            transformer: target.transformer.clone(),
        }],
        base: target,
        // Without a family build, the family's own draft serves every system.
        conventional: vec![(draft.clone(), 0)],
        static_draft: draft,
        loaded,
        shared_backbone: shared,
    })
}

/// The device-profile entries of this machine for `family` (`ecspec profile --toml`): its
/// static and conventional drafts and its target, measured now (medians of `repeats`).
///
/// # Errors
/// Loading or running the models.
pub fn profile_toml(family: FamilyName, repeats: usize) -> Result<String> {
    let m = load_models(family, None, None)?;
    let name = m.loaded.info.wire_name;
    let mut out = String::new();
    let mut draft = |key: &str, t: &Arc<ecspec_model::Transformer>| -> Result<()> {
        let e = compute::measure_draft(t, repeats)?;
        out.push_str(&format!(
            "[draft.\"{name}/{key}\"]\nseconds_per_token = {:.6}   # {:.1} tok/s\nprefill_seconds_per_token = {:.6}\n\n",
            e.draft_s_per_token,
            1.0 / e.draft_s_per_token,
            e.prefill_s_per_token
        ));
        Ok(())
    };
    draft("static", &m.static_draft.transformer.clone())?;
    if let Some((d, _)) = m.conventional.first() {
        draft("conventional", &d.transformer.clone())?;
    }
    let c = compute::measure_target(&m.versions[0].transformer, repeats)?;
    out.push_str(&format!(
        "[target.\"{name}\"]\nprefill_seconds_per_token = {:.6}\nverify_base_s = {:.6}   # {:.1} tok/s decode\nverify_per_token_s = {:.6}\n",
        c.prefill_s_per_token,
        c.verify_base_s,
        1.0 / c.verify_base_s.max(1e-12),
        c.verify_per_token_s
    ));
    Ok(out)
}

/// Compute times of the virtual clock.
pub(super) struct Clocks {
    pub(super) edge_static: EdgeCompute,
    pub(super) edge_conventional: EdgeCompute,
    pub(super) cloud: CloudCompute,
    pub(super) edge_source: String,
    pub(super) cloud_source: String,
}

impl Clocks {
    /// Where the compute times come from and what they are, for people: the edge's static
    /// draft per token, the cloud's verification line t_v(K) and its prefill per token.
    pub(super) fn describe(&self) -> String {
        format!(
            "edge: {} (static draft {:.2} ms/token) · cloud: {} (t_v(K) = {:.2} + {:.3}·K ms, prefill {:.3} ms/token)",
            self.edge_source,
            self.edge_static.draft_s_per_token * 1e3,
            self.cloud_source,
            self.cloud.verify_base_s * 1e3,
            self.cloud.verify_per_token_s * 1e3,
            self.cloud.prefill_s_per_token * 1e3
        )
    }
}

/// The virtual clock's compute times: the edge's from `edge_profile`, the cloud's from
/// `cloud_profile` (`measured`: this machine, now; else a profile name or file).
pub(super) fn clocks(edge_profile: &str, cloud_profile: &str, m: &Models) -> Result<Clocks> {
    let family = m.loaded.info.wire_name;
    let (edge_static, edge_conventional, edge_source) = if edge_profile == compute::MEASURED {
        let s = compute::measure_draft(&m.static_draft.transformer, 5)?;
        let c = match m.conventional.first() {
            Some((d, _)) => compute::measure_draft(&d.transformer, 5)?,
            None => s,
        };
        (s, c, "measured on this machine".to_string())
    } else {
        let p = ecspec_run::energy::load_profile(edge_profile)?;
        let s = compute::edge_from_profile(&p, family, "static")?;
        let c = compute::edge_from_profile(&p, family, "conventional").unwrap_or(s);
        (s, c, format!("device profile {}", p.name))
    };
    let (cloud, cloud_source) = if cloud_profile == compute::MEASURED {
        (
            compute::measure_target(&m.versions[0].transformer, 5)?,
            "measured on this machine".to_string(),
        )
    } else {
        let p = ecspec_run::energy::load_profile(cloud_profile)?;
        (
            compute::cloud_from_profile(&p, family)?,
            format!("device profile {}", p.name),
        )
    };
    Ok(Clocks {
        edge_static,
        edge_conventional,
        cloud,
        edge_source,
        cloud_source,
    })
}

/// The sampling settings every benchmarked system runs with: `temperature` (greedy at 0,
/// else match or rejection chosen per round), `seed`, and drafts from the draft model only.
pub(super) fn sampling_args(temperature: f32, seed: u64) -> SamplingArgs {
    // The benchmark compares draft-length policies of the draft model itself.
    SamplingArgs::evaluation(temperature, seed, ecspec_edge::DraftSource::Model)
}

/// Checks `--temperature` (finite, ≥ 0) and `--phase-s` (0 to 86 400 s: a day of offset per
/// request is far beyond any trace, they loop, and keeps every offset a valid Duration).
///
/// # Errors
/// The flag and the value given.
pub(super) fn check_temperature_and_phase(temperature: f32, phase_s: f64) -> Result<()> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        anyhow::bail!("--temperature must be finite and ≥ 0, got {temperature}");
    }
    if !(phase_s.is_finite() && (0.0..=86_400.0).contains(&phase_s)) {
        anyhow::bail!("--phase-s must be between 0 and 86400 seconds, got {phase_s}");
    }
    Ok(())
}

/// Which of the run's drafts a system drafts with: what makes two runs of the same policy,
/// link and version the same run (the reuse key of the virtual clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DraftId {
    /// The static shared-backbone draft (or the family's own draft without a family build).
    Static,
    /// The conventional draft distilled for version i.
    Conventional(usize),
}

/// How a system runs against one target version: its draft, `--draft-len` policy, modelled
/// edge compute (the virtual clock's; None on the live clock) and mode.
pub(super) struct SystemRun {
    pub(super) draft: Arc<Draft>,
    pub(super) draft_id: DraftId,
    pub(super) policy: String,
    pub(super) edge_compute: Option<EdgeCompute>,
    pub(super) mode: ModeArg,
}

/// What `sys` runs against target version `vindex` of `m` ([`SystemRun`]).
pub(super) fn system_setup(
    sys: &System,
    m: &Models,
    vindex: usize,
    clocks: Option<&Clocks>,
) -> SystemRun {
    let static_run = |edge_compute, policy: &str, mode| SystemRun {
        draft: m.static_draft.clone(),
        draft_id: DraftId::Static,
        policy: policy.to_string(),
        edge_compute,
        mode,
    };
    match sys {
        System::CloudOnly => static_run(None, "fixed:0", ModeArg::CloudOnly),
        System::EdgeOnly => static_run(clocks.map(|c| c.edge_static), "fixed:0", ModeArg::EdgeOnly),
        System::Speculative { draft, policy, .. } => {
            let conventional = |i: usize| SystemRun {
                draft: m.conventional[i].0.clone(),
                draft_id: DraftId::Conventional(i),
                policy: policy.clone(),
                edge_compute: clocks.map(|c| c.edge_conventional),
                mode: ModeArg::Speculative,
            };
            match draft {
                DraftKind::Static => {
                    static_run(clocks.map(|c| c.edge_static), policy, ModeArg::Speculative)
                }
                DraftKind::ConventionalStale => conventional(0),
                DraftKind::ConventionalResync if vindex < m.conventional.len() => {
                    conventional(vindex)
                }
                DraftKind::ConventionalResync => conventional(0),
            }
        }
    }
}

/// The edge's models for `sys` running `draft` (from [`system_setup`]): the family's file and
/// tokenizer, the draft, and the family's measured acceptance when the draft is its static one.
pub(super) fn system_loaded(sys: &System, m: &Models, family: FamilyName, draft: &Draft) -> Loaded {
    let static_draft = matches!(
        sys,
        System::Speculative {
            draft: DraftKind::Static,
            ..
        }
    );
    Loaded {
        info: ecspec_family::info(family),
        edge_model: m.loaded.edge_model.clone(),
        draft: draft.clone(),
        draft_desc: sys.name().to_string(),
        target: None,
        // What the family measured for its static draft; a conventional draft is another model.
        acceptance_prior: m.loaded.acceptance_prior.filter(|_| static_draft),
    }
}

/// One request's result.
#[derive(Debug, Clone)]
pub struct Request {
    pub(super) scenario: String,
    pub(super) system: String,
    pub(super) version: String,
    pub(super) category: String,
    pub(super) summary: Summary,
    /// Greedy runs: whether the output equals cloud-only's for the same version and prompt.
    pub(super) same_as_cloud: Option<bool>,
}

/// "1 version", "2 versions".
pub(super) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `f` over `items` on `jobs` threads (each item moved to the thread that takes it), results
/// in the order of `items`. With one job, on this thread.
pub(super) fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    jobs: usize,
    f: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    if jobs <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let slots: Vec<std::sync::Mutex<Option<Result<R>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(n) {
            s.spawn(|| loop {
                // Items are taken from the front, so the first ones start first.
                let next = {
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    (!q.is_empty()).then(|| q.remove(0))
                };
                let Some((i, item)) = next else { break };
                let r = f(item);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(anyhow::anyhow!("a worker thread stopped early")))
        })
        .collect()
}

/// Runs a future on the chosen clock: live on this runtime, virtual on a fresh paused
/// single-thread runtime (its own thread), where time moves only through tokio timers.
pub(super) fn on_clock<F>(clock: ClockArg, fut: F) -> Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    match clock {
        ClockArg::Live => Ok(tokio::runtime::Handle::current().block_on(fut)),
        ClockArg::Virtual => std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .context("starting the virtual clock")?;
                Ok(rt.block_on(fut))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the virtual-clock thread panicked"))?
        }),
    }
}

/// Edge-only timings on the virtual clock: the draft's prefill, then one step per token.
pub(super) fn virtual_edge_only(s: &mut Summary, prompt_tokens: usize, ec: EdgeCompute) {
    let n = s.generated_tokens;
    let prefill = ec.prefill(prompt_tokens);
    let ttft = prefill + ec.draft(1);
    let total = prefill + ec.draft(n);
    s.ttft_s = ttft.as_secs_f64();
    s.total_s = total.as_secs_f64();
    s.draft_s = total.as_secs_f64();
    s.goodput_tok_s = n as f64 / total.as_secs_f64().max(1e-12);
    s.tpot_s = if n > 1 {
        (total - ttft).as_secs_f64() / (n - 1) as f64
    } else {
        0.0
    };
}

#[cfg(test)]
mod tests {
    use super::parallel_map;

    #[test]
    fn parallel_map_keeps_order_and_reports_errors() {
        let items: Vec<u64> = (0..9).collect();
        for jobs in [1, 2, 4, 16] {
            let out = parallel_map(items.clone(), jobs, |x| {
                // Uneven work, so the threads finish out of order.
                std::thread::sleep(std::time::Duration::from_millis((9 - x) * 2));
                Ok(x * x)
            })
            .unwrap();
            assert_eq!(out, vec![0, 1, 4, 9, 16, 25, 36, 49, 64], "jobs {jobs}");
        }
        let err = parallel_map(items, 3, |x| {
            if x == 5 {
                anyhow::bail!("item {x} failed")
            }
            Ok(x)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 5 failed");
    }
}
