//! The load generator end to end on tiny random-weight models: the real cloud server on
//! 127.0.0.1:0 in this process, real edges over emulated links. Asserts facts that do not
//! depend on timing or on the CPU: which requests ran, what each committed (greedy output is
//! the target's, whatever shares the cloud), and the token counts the report adds up.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ecspec_cloud::{CloudModel, CloudServer, ServerConfig};
use ecspec_edge::{DraftSampling, DraftSource, Drafter, EdgeConfig, Lookup, Mode, SessionMemory};
use ecspec_link::LinkConfig;
use ecspec_load::{
    capacities, level_reports, markdown, run_level, run_sweep, Bounds, EdgeFactory, LevelRun,
    LevelSettings, Load, LocalCloud, System,
};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{Draft, DraftSpec, LoadedModel, Session};
use ecspec_spec::parse_policy;
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;

const FAMILY: &str = "tiny-llama";
const MAX_NEW: usize = 12;

struct Models {
    target: LoadedModel,
    /// Shared-backbone draft on 2 of the target's 4 layers: right some of the time.
    draft: Draft,
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        // One compute thread per pool: tiny models on a busy 2-core machine otherwise wait on
        // descheduled pool threads (see ecspec-cloud's tests); results do not depend on it.
        for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, "1");
            }
        }
        let dir = std::env::temp_dir().join(format!("ecspec-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("target.gguf");
        write_tiny_model(
            &path,
            TinySpec {
                seed: 11,
                layers: 4,
                ..Default::default()
            },
        )
        .unwrap();
        let target = LoadedModel::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let draft = Draft::build(&DraftSpec::SharedBackbone { shared_layers: 2 }, &target).unwrap();
        Models { target, draft }
    })
}

/// Plain byte prompts (a byte's token id is its value in the tiny vocabulary).
fn prompts() -> Vec<Vec<u32>> {
    ["Hello, world! ", "The sky is ", "fn main() {"]
        .iter()
        .map(|t| t.bytes().map(u32::from).collect())
        .collect()
}

/// The edge of a system: greedy, cloud-only or speculative with `policy`.
fn edge(mode: Mode, policy: &'static str) -> Arc<dyn EdgeFactory> {
    Arc::new(
        move |memory: Option<SessionMemory>| -> Result<(EdgeConfig, Option<Drafter>), String> {
            let d = &models().draft;
            let params = SamplingParams::greedy(0);
            let cfg = EdgeConfig {
                family: FAMILY.into(),
                draft_kind: d.kind,
                compat_hash: d.compat_hash.clone(),
                rule: VerifyRule::Greedy,
                params,
                max_new_tokens: MAX_NEW,
                mode,
                policy: parse_policy(policy).map_err(|e| e.to_string())?,
                timeout: Duration::from_secs(60),
                vocab_size: d.transformer.config().vocab_size,
                energy: None,
                verify_switch: None,
                pipeline: false,
                memory,
                acceptance_prior: None,
                virtual_compute: None,
                drafter: DraftSource::Model,
                lookup: Lookup::default(),
                load_aware: true,
                auth_token: None,
                max_block_tokens: 0,
                stop: Default::default(),
            };
            let drafter = (mode == Mode::Speculative).then(|| {
                Drafter::new(
                    Session::new(d.transformer.clone()),
                    DraftSampling {
                        rule: VerifyRule::Greedy,
                        params,
                        dist_top_k: 8,
                        dist_bits: 8,
                    },
                )
            });
            Ok((cfg, drafter))
        },
    )
}

fn systems() -> Vec<System> {
    vec![
        System {
            name: "cloud-only".into(),
            edge: edge(Mode::CloudOnly, "fixed:0"),
        },
        System {
            name: "sd-fixed:3".into(),
            edge: edge(Mode::Speculative, "fixed:3"),
        },
    ]
}

async fn local_cloud() -> LocalCloud {
    let server = CloudServer::new(
        CloudModel::new(FAMILY, "v0", &models().target),
        ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        },
    );
    LocalCloud::start(server).await.unwrap()
}

fn settings(requests: usize) -> LevelSettings {
    LevelSettings {
        bounds: Bounds::new(Some(requests), None).unwrap(),
        prompts: Arc::new(prompts()),
        link: Some(LinkConfig::constant(50.0, 50.0, 4.0).unwrap()),
        phase_s: 30.0,
        seed: 3,
    }
}

/// Every request completed, with 1..=MAX_NEW tokens that the record counts.
fn all_completed(run: &LevelRun) {
    for q in &run.requests {
        assert_eq!(q.error, None, "{} request {}", run.system, q.seq);
        assert_eq!(q.generated_tokens, q.tokens.len());
        assert!(
            (1..=MAX_NEW).contains(&q.tokens.len()),
            "{}",
            q.tokens.len()
        );
        assert!(q.ttft_s.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_commit_what_each_request_commits_alone() {
    let local = local_cloud().await;
    let cloud = local.cloud();
    let p = prompts();
    // Each prompt served alone: one edge, one request after another.
    let alone = run_level(
        &cloud,
        &systems()[0],
        Load::Closed { edges: 1 },
        &settings(p.len()),
    )
    .await
    .unwrap();
    all_completed(&alone);
    let reference: Vec<Vec<u32>> = alone.requests.iter().map(|q| q.tokens.clone()).collect();
    assert_eq!(
        alone.requests.iter().map(|q| q.prompt).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // Two edges, four requests in all (two each on average), for both systems.
    let runs = run_sweep(
        &cloud,
        &systems(),
        &[Load::Closed { edges: 2 }],
        &settings(4),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        all_completed(run);
        assert_eq!(
            run.requests.iter().map(|q| q.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "{}: requests in start order",
            run.system
        );
        let edges: BTreeSet<usize> = run.requests.iter().map(|q| q.edge).collect();
        assert!(edges.is_subset(&BTreeSet::from([0, 1])), "{edges:?}");
        for q in &run.requests {
            assert_eq!(q.prompt, q.seq % p.len());
            assert_eq!(q.prompt_tokens, p[q.prompt].len());
            assert_eq!(
                q.tokens, reference[q.prompt],
                "{} request {}: greedy output differs from the request served alone",
                run.system, q.seq
            );
        }
    }
    let spec = &runs[1];
    assert!(spec.requests.iter().all(|q| q.drafted_tokens > 0));
    assert!(runs[0].requests.iter().all(|q| q.drafted_tokens == 0));

    // The report adds up what ran, and finds every output lossless.
    let reports = level_reports(&runs, 1e9, true);
    for (r, run) in reports.iter().zip(&runs) {
        assert_eq!((r.completed, r.failed), (4, 0));
        assert_eq!(
            r.total_output_tokens,
            run.requests.iter().map(|q| q.tokens.len()).sum::<usize>()
        );
        assert_eq!(r.lossless, Some(true));
        assert!(r.within_slo, "an SLO of 10⁶ s holds");
    }
    let caps = capacities(&reports, 1e9);
    assert_eq!(
        caps.iter().map(|c| c.capacity).collect::<Vec<_>>(),
        [Some(2.0), Some(2.0)]
    );
    let md = markdown(&reports, &caps, 1e9);
    assert!(md.contains("| sd-fixed:3 | 2 edges | 4 | 0 |"), "{md}");
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_runs_its_seeded_arrivals() {
    let local = local_cloud().await;
    let run = run_level(
        &local.cloud(),
        &systems()[1],
        Load::Open { rate_per_s: 50.0 },
        &settings(3),
    )
    .await
    .unwrap();
    all_completed(&run);
    assert_eq!(run.requests.len(), 3);
    let arrivals = ecspec_load::poisson_arrivals(50.0, 3, Some(3), None).unwrap();
    for (q, at) in run.requests.iter().zip(&arrivals) {
        // Each request starts at its scheduled arrival (its own edge).
        assert_eq!(q.start_s, at.as_secs_f64());
        assert_eq!(q.edge, q.seq);
    }
    local.stop().await;
}
