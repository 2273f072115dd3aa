//! One family's benchmark: checks the arguments, loads what the run needs ([`Bench::prepare`]),
//! runs every version × scenario × system × prompt ([`Bench::run_version`]) and writes the
//! records, the summary and the plots ([`Bench::write_reports`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use ecspec_cloud::{CloudModel, CloudServer, ServerConfig, TargetVersion};
use ecspec_edge::Summary;
use ecspec_energy::DeviceProfile;
use ecspec_family::FamilyName;
use ecspec_link::LinkConfig;
use ecspec_run::run::{prompt_ids, run_one, CloudEndpoint, RunSpec};
use ecspec_run::{ModeArg, SamplingArgs};
use indicatif::ProgressBar;

use super::args::{BenchArgs, ClockArg};
use super::scenario::{self, Scenario};
use super::setup::{
    check_temperature_and_phase, clocks, load_models, on_clock, parallel_map, plural, sampling_args, system_loaded,
    system_setup, virtual_edge_only, Clocks, Models, Request, SystemRun,
};
use super::system::{self, DraftKind, System};
use super::{plot, report};
use crate::prompts::{self, Question};
use crate::resync::resync_seconds;

/// What one scenario of one version produced.
struct ScenarioOut {
    link: plot::ScenarioLink,
    /// Requests in order, with their question ids.
    requests: Vec<(Request, serde_json::Value)>,
    resyncs: Vec<report::Resync>,
}

/// Requests of runs already made on the virtual clock, by what determines them.
type Reuse = Mutex<HashMap<String, Vec<Summary>>>;

/// What one family's benchmark runs, checked and loaded.
struct Bench<'a> {
    a: &'a BenchArgs,
    family: FamilyName,
    systems: Vec<System>,
    /// The systems that can run (a conventional draft needs a conventional-draft directory).
    runnable: Vec<System>,
    /// The scenarios' names and descriptions (their links stay out of `Bench`: a link model
    /// is sent to the thread that runs its scenario, never shared).
    scenarios: Vec<(String, String)>,
    prompts_path: PathBuf,
    questions: Vec<Question>,
    m: Models,
    versions: Vec<TargetVersion>,
    clocks: Option<Clocks>,
    energy: DeviceProfile,
    sampling: SamplingArgs,
    reuse: Reuse,
}

/// One family's benchmark, written to `out`.
///
/// # Errors
/// Bad arguments (naming the option), missing models, prompts or traces, unwritable output.
pub(super) fn run_family(a: &BenchArgs, family: FamilyName, out: &Path) -> Result<()> {
    let (b, scenarios) = Bench::prepare(a, family)?;
    b.announce();
    let bar = ecspec_run::progress::count_bar(b.total());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let jsonl_path = out.join("requests.jsonl");
    let mut jsonl = std::io::BufWriter::new(
        std::fs::File::create(&jsonl_path)
            .with_context(|| format!("creating {}", jsonl_path.display()))?,
    );
    let mut results: Vec<Request> = Vec::new();
    let mut links: Vec<plot::ScenarioLink> = Vec::new();
    let mut resyncs: Vec<report::Resync> = Vec::new();
    for (vi, version) in b.versions.iter().enumerate() {
        for o in b.run_version(vi, version, &scenarios, &bar)? {
            if vi == 0 {
                links.push(o.link);
            }
            resyncs.extend(o.resyncs);
            for (r, qid) in o.requests {
                writeln!(jsonl, "{}", report::request_json(&r, &qid))?;
                results.push(r);
            }
        }
    }
    bar.finish_and_clear();
    jsonl.flush()?;
    b.write_reports(out, &jsonl_path, &results, &resyncs, &links)
}

/// The systems of `--systems`, after the checks of the arguments that need no file.
fn checked_systems(a: &BenchArgs) -> Result<Vec<System>> {
    check_temperature_and_phase(a.temperature, a.phase_s)?;
    let systems: Vec<System> = a
        .systems
        .iter()
        .map(|s| system::parse(s))
        .collect::<Result<_>>()?;
    for (i, s) in systems.iter().enumerate() {
        if systems[..i].iter().any(|t| t.name() == s.name()) {
            bail!(
                "--systems names {:?} twice (each system is one column of the report)",
                s.name()
            );
        }
    }
    Ok(systems)
}

/// The scenarios of `--scenarios` whose files are present, each with its parsed link; a
/// scenario missing a file is skipped with a note.
fn present_scenarios(a: &BenchArgs) -> Result<Vec<(Scenario, Option<LinkConfig>)>> {
    let data = prompts::data_dir();
    let mut scenarios = Vec::new();
    for s in &a.scenarios {
        let sc = scenario::resolve(s, &data)?;
        match sc.missing_file() {
            Some(f) => eprintln!(
                "ecspec bench: skipped scenario {}: {f} is missing (set ECSPEC_DATA_DIR to the shared data)",
                sc.name
            ),
            None => {
                let base = sc.link_base()?;
                scenarios.push((sc, base));
            }
        }
    }
    if scenarios.is_empty() {
        bail!("no scenario left to run");
    }
    Ok(scenarios)
}

/// An energy budget needs the radio model of a shaped link: refused before anything runs.
fn check_budgets(systems: &[System], scenarios: &[(Scenario, Option<LinkConfig>)]) -> Result<()> {
    let budgeted = systems.iter().find(|s| s.energy_budget().is_some());
    if let (Some(b), Some((sc, _))) = (budgeted, scenarios.iter().find(|(sc, _)| !sc.shaped())) {
        bail!(
            "system {:?} has an energy budget, which needs a shaped link; scenario {:?} has none (drop one of them)",
            b.name(),
            sc.name
        );
    }
    Ok(())
}

/// The versions of `--versions` (all served ones when empty), in the order given.
fn selected_versions(a: &BenchArgs, m: &Models) -> Result<Vec<TargetVersion>> {
    if a.versions.is_empty() {
        return Ok(m.versions.clone());
    }
    a.versions
        .iter()
        .map(|v| {
            m.versions
                .iter()
                .find(|t| &t.name == v)
                .cloned()
                .with_context(|| {
                    format!(
                        "--versions {v}: not served (versions: {})",
                        m.versions
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// The scenario's link as the plots show it, and its mean downlink rate (bit/s; ∞ unshaped)
/// and RTT (s).
fn scenario_link(
    sc: &Scenario,
    link0: &Option<LinkConfig>,
    phase_s: f64,
) -> (plot::ScenarioLink, f64, f64) {
    let (down_bps, rtt_s) = link0.as_ref().map_or((f64::INFINITY, 0.0), |l| {
        (l.downlink.mean_rate_bps(), l.rtt().as_secs_f64())
    });
    let link = plot::ScenarioLink {
        name: sc.name.clone(),
        uplink_mbps: link0
            .as_ref()
            .map_or(0.0, |l| l.uplink.mean_rate_bps() / 1e6),
        rtt_ms: rtt_s * 1e3,
        // None for an unshaped link (loopback counts bytes at no rate).
        uplink: link0
            .as_ref()
            .filter(|_| sc.shaped())
            .map(|l| l.uplink.clone()),
        phase_s,
    };
    (link, down_bps, rtt_s)
}

/// Where a system's requests are run: one scenario of one version.
struct Cell<'c> {
    version: &'c TargetVersion,
    /// Index of `version` among the served versions (picks the re-synced conventional draft).
    vindex: usize,
    scenario: &'c Scenario,
    link0: &'c Option<LinkConfig>,
    server: &'c Arc<CloudServer>,
}

impl<'a> Bench<'a> {
    /// Checks the arguments and loads the prompts, models, clocks and energy profile; also
    /// returns the scenarios with their links, parsed once (traces can be megabytes) and
    /// shifted per request.
    #[allow(clippy::type_complexity)]
    fn prepare(
        a: &'a BenchArgs,
        family: FamilyName,
    ) -> Result<(Self, Vec<(Scenario, Option<LinkConfig>)>)> {
        let systems = checked_systems(a)?;
        let scenarios = present_scenarios(a)?;
        check_budgets(&systems, &scenarios)?;
        let (prompts_path, questions) = a.workload.questions()?;
        let m = load_models(family, a.manifest.clone(), a.conventional_dir.clone())?;
        let versions = selected_versions(a, &m)?;
        let runnable: Vec<System> = systems
            .iter()
            .filter(|s| match s {
                System::Speculative { draft, .. } if *draft != DraftKind::Static => {
                    !m.conventional.is_empty()
                }
                _ => true,
            })
            .cloned()
            .collect();
        let clocks = match a.clock {
            ClockArg::Virtual => Some(clocks(&a.edge_profile, &a.cloud_profile, &m)?),
            ClockArg::Live => None,
        };
        let energy = ecspec_run::energy::load_profile(&a.energy_profile)?;
        let names = scenarios
            .iter()
            .map(|(s, _)| (s.name.clone(), s.description.clone()))
            .collect();
        let bench = Self {
            a,
            family,
            systems,
            runnable,
            scenarios: names,
            prompts_path,
            questions,
            m,
            versions,
            clocks,
            energy,
            sampling: sampling_args(a.temperature, a.seed),
            reuse: Reuse::default(),
        };
        Ok((bench, scenarios))
    }

    /// Requests in all.
    fn total(&self) -> u64 {
        (self.versions.len() * self.scenarios.len() * self.runnable.len() * self.questions.len())
            as u64
    }

    /// What will run, on stderr.
    fn announce(&self) {
        eprintln!(
            "ecspec bench: {} · {:?} clock · {} × {} × {} × {} = {} requests · {} tokens each",
            self.m.loaded.info.wire_name,
            self.a.clock,
            plural(self.versions.len(), "version"),
            plural(self.scenarios.len(), "scenario"),
            plural(self.runnable.len(), "system"),
            plural(self.questions.len(), "prompt"),
            self.total(),
            self.a.max_tokens
        );
        if let Some(c) = &self.clocks {
            eprintln!("  {}", c.describe());
        }
    }

    /// A cloud serving every version with `version` active. One server (and so one batch
    /// scheduler) per scenario: scenarios run side by side on threads of their own, and a
    /// scheduler serves one runtime's requests at a time.
    fn server(&self, version: &TargetVersion) -> Result<Arc<CloudServer>> {
        let model = CloudModel::with_versions(
            self.m.loaded.info.wire_name,
            &self.m.base,
            self.m.versions.clone(),
            &version.name,
        )?;
        Ok(CloudServer::new(
            model,
            ServerConfig {
                virtual_compute: self.clocks.as_ref().map(|c| c.cloud),
                ..ServerConfig::default()
            },
        ))
    }

    /// Every scenario of version `vi`: side by side on the virtual clock (each request on its
    /// own paused runtime; the results do not depend on it), one after another on the live
    /// clock. Results in the order of the scenarios.
    fn run_version(
        &self,
        vi: usize,
        version: &TargetVersion,
        scenarios: &[(Scenario, Option<LinkConfig>)],
        bar: &ProgressBar,
    ) -> Result<Vec<ScenarioOut>> {
        let vindex = self
            .m
            .versions
            .iter()
            .position(|t| t.name == version.name)
            .unwrap_or(vi);
        let jobs = match self.a.clock {
            ClockArg::Virtual => self.a.jobs as usize,
            ClockArg::Live => 1,
        };
        parallel_map(scenarios.to_vec(), jobs, |(sc, link0)| {
            let server = self.server(version)?;
            let cell = Cell {
                version,
                vindex,
                scenario: &sc,
                link0: &link0,
                server: &server,
            };
            self.run_scenario(&cell, bar)
        })
    }

    /// Every runnable system on one cell, cloud-only first (greedy speculative outputs are
    /// checked against it).
    fn run_scenario(&self, cell: &Cell<'_>, bar: &ProgressBar) -> Result<ScenarioOut> {
        let (link, down_bps, rtt_s) = scenario_link(cell.scenario, cell.link0, self.a.phase_s);
        let mut out = ScenarioOut {
            link,
            requests: Vec::new(),
            resyncs: Vec::new(),
        };
        let mut cloud_tokens: Vec<Option<Vec<u32>>> = vec![None; self.questions.len()];
        for sys in &self.runnable {
            if let System::Speculative {
                draft: DraftKind::ConventionalResync,
                name,
                ..
            } = sys
            {
                out.resyncs.push(self.resync(cell, name, down_bps, rtt_s));
            }
            let summaries = self.run_system(cell, sys, bar)?;
            for ((s, q), cloud) in summaries
                .into_iter()
                .zip(&self.questions)
                .zip(cloud_tokens.iter_mut())
            {
                let same = match (sys, self.a.temperature == 0.0, &cloud) {
                    (System::CloudOnly, _, _) => {
                        *cloud = Some(s.tokens.clone());
                        None
                    }
                    (System::Speculative { .. }, true, Some(c)) => Some(*c == s.tokens),
                    _ => None,
                };
                let r = Request {
                    scenario: cell.scenario.name.clone(),
                    system: sys.name().to_string(),
                    version: cell.version.name.clone(),
                    category: q.category.clone(),
                    summary: s,
                    same_as_cloud: same,
                };
                out.requests.push((r, q.question_id.clone()));
            }
        }
        Ok(out)
    }

    /// The download of version `cell.version`'s conventional draft when it goes live (not for
    /// the first version: the device already has its draft).
    fn resync(&self, cell: &Cell<'_>, system: &str, down_bps: f64, rtt_s: f64) -> report::Resync {
        let bytes = if cell.vindex == 0 {
            0
        } else {
            self.m.conventional.get(cell.vindex).map_or(0, |c| c.1)
        };
        report::Resync {
            scenario: cell.scenario.name.clone(),
            system: system.to_string(),
            version: cell.version.name.clone(),
            bytes,
            seconds: resync_seconds(bytes, down_bps, rtt_s),
        }
    }

    /// The reuse key of `sys` on `cell`: on the virtual clock a run is a function of what it
    /// runs, so a system whose draft, policy and link are those of one already run gives the
    /// same requests (edge-only on every scenario and version: it uses neither; `+resync` on
    /// the first version: its draft is the stale one) and is reused, not rerun. None on the
    /// live clock.
    fn reuse_key(&self, cell: &Cell<'_>, sys: &System, run: &SystemRun) -> Option<String> {
        if self.a.clock != ClockArg::Virtual {
            return None;
        }
        let energy_on = cell.scenario.shaped();
        let budget = sys.energy_budget();
        Some(match sys {
            System::EdgeOnly => format!("edge-only|{energy_on}"),
            _ => format!(
                "{}|{:?}|{}|{:?}|{budget:?}|{}|{energy_on}",
                cell.version.name, run.draft_id, run.policy, run.mode, cell.scenario.name
            ),
        })
    }

    /// `sys`'s requests on `cell`, one per question in order (reused when an identical run
    /// was already made). A device serves one request after another: each starts from what
    /// the previous ones on this link left (acceptance evidence, policy state).
    fn run_system(&self, cell: &Cell<'_>, sys: &System, bar: &ProgressBar) -> Result<Vec<Summary>> {
        let run = system_setup(sys, &self.m, cell.vindex, self.clocks.as_ref());
        let key = self.reuse_key(cell, sys, &run);
        let cached = key.as_ref().and_then(|k| {
            self.reuse
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(k)
                .cloned()
        });
        if let Some(c) = cached {
            bar.inc(c.len() as u64);
            return Ok(c);
        }
        let loaded = system_loaded(sys, &self.m, self.family, &run.draft);
        let energy_on = cell.scenario.shaped();
        let budget = sys.energy_budget();
        let mut produced = Vec::new();
        let policy: ecspec_run::PolicySpec = run.policy.parse().context("invalid --draft-len")?;
        let mut memory = None;
        for (qi, q) in self.questions.iter().enumerate() {
            bar.set_message(format!(
                "{} · {} · {} · {}",
                cell.version.name,
                cell.scenario.name,
                sys.name(),
                q.category
            ));
            let ids = prompt_ids(&loaded, &q.turns[0], false)
                .with_context(|| format!("question {}", q.question_id))?;
            let n_prompt = ids.len();
            let spec = RunSpec {
                outages: ecspec_link::Outages::default(),
                mode: run.mode,
                draft_len: &policy,
                sampling: &self.sampling,
                max_tokens: self.a.max_tokens as usize,
                stop: Vec::new(),
                link: scenario::shifted(cell.link0, qi as f64 * self.a.phase_s),
                cloud: (run.mode != ModeArg::EdgeOnly)
                    .then(|| CloudEndpoint::InMemory(cell.server.clone())),
                energy: energy_on.then_some(&self.energy),
                energy_budget: budget,
                virtual_compute: run.edge_compute,
                memory: memory.clone(),
            };
            let clock = self.a.clock;
            let mut s = on_clock(clock, async {
                run_one(&loaded, ids, spec, &mut |_| {}).await
            })?
            .with_context(|| {
                format!(
                    "{} · {} · {} · question {}",
                    cell.version.name,
                    cell.scenario.name,
                    sys.name(),
                    q.question_id
                )
            })?;
            memory = s.memory.clone();
            if let (ClockArg::Virtual, ModeArg::EdgeOnly, Some(ec)) =
                (clock, run.mode, run.edge_compute)
            {
                virtual_edge_only(&mut s, n_prompt, ec);
            }
            produced.push(s);
            bar.inc(1);
        }
        if let Some(k) = key {
            self.reuse
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k, produced.clone());
        }
        Ok(produced)
    }

    /// Writes `summary.csv`, `report.md` (also printed) and the plots, and says what it wrote.
    fn write_reports(
        &self,
        out: &Path,
        jsonl_path: &Path,
        results: &[Request],
        resyncs: &[report::Resync],
        links: &[plot::ScenarioLink],
    ) -> Result<()> {
        let rows = report::aggregate(results, resyncs);
        let csv_path = out.join("summary.csv");
        std::fs::write(&csv_path, report::csv(&rows))
            .with_context(|| format!("writing {}", csv_path.display()))?;
        let md = report::markdown(&rows, &self.setup(results));
        let md_path = out.join("report.md");
        std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
        println!("{md}");
        let plots = plot::write_all(out, &rows, results, links)?;
        eprintln!(
            "ecspec bench: wrote {}, {}, {} and {} plots ({})",
            jsonl_path.display(),
            csv_path.display(),
            md_path.display(),
            plots.len(),
            plots
                .iter()
                .filter_map(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }

    /// What was run, for the report's header.
    fn setup(&self, results: &[Request]) -> report::Setup {
        let source = |f: fn(&Clocks) -> &String| {
            self.clocks
                .as_ref()
                .map_or("this machine (live)".into(), |c| f(c).clone())
        };
        report::Setup {
            family: self.m.loaded.info.wire_name.to_string(),
            clock: format!("{:?}", self.a.clock).to_lowercase(),
            edge: source(|c| &c.edge_source),
            cloud: source(|c| &c.cloud_source),
            prompts: format!(
                "{} ({})",
                self.prompts_path.display(),
                plural(self.questions.len(), "question")
            ),
            max_tokens: self.a.max_tokens,
            temperature: self.a.temperature,
            shared_backbone: self.m.shared_backbone,
            skipped: self
                .systems
                .iter()
                .filter(|s| !self.runnable.contains(s))
                .map(|s| s.name().to_string())
                .collect(),
            scenarios: self
                .scenarios
                .iter()
                .map(|(name, description)| {
                    let rtt = report::delivered_rtt(results, name);
                    (name.clone(), description.clone(), rtt)
                })
                .collect(),
        }
    }
}
