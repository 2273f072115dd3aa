//! A draft whose context window is shorter than the target's: once the committed text fills
//! it, the edge streams from the cloud instead of failing with a context overflow, and the
//! output is still the target's own. End to end against the real server on tiny models
//! (fixtures in `common`): a 2-layer independent draft with a 48-position window, the target's
//! 512.

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use ecspec_edge::{generate, DraftSampling, Drafter, Summary};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{Draft, DraftSpec, LoadedModel, Session};
use tokio::net::TcpStream;

const WINDOW: usize = 48;

fn short_draft() -> &'static Draft {
    static DRAFT: OnceLock<Draft> = OnceLock::new();
    DRAFT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ecspec-window-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("short.gguf");
        let spec = TinySpec {
            seed: 12,
            layers: 2,
            context: WINDOW,
            ..Default::default()
        };
        write_tiny_model(&path, spec).unwrap();
        let m = LoadedModel::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(m.transformer.config().context_length, WINDOW);
        Draft::build(&DraftSpec::Independent, &m).unwrap()
    })
}

/// `run` with the short-window draft in place of its own.
async fn run_short(addr: std::net::SocketAddr, run: &Run) -> (Summary, Vec<u32>) {
    let d = short_draft();
    let mut cfg = run.config();
    cfg.compat_hash = d.compat_hash.clone();
    let drafter = Drafter::new(
        Session::new(Arc::clone(&d.transformer)),
        DraftSampling {
            rule: run.rule,
            params: run.params,
            dist_top_k: run.dist.0,
            dist_bits: run.dist.1,
        },
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    let mut on_commit = |t: &[u32]| seen.extend_from_slice(t);
    let s = generate(
        tcp,
        None,
        cfg,
        Some(drafter),
        run.prompt.clone(),
        &mut on_commit,
    )
    .await
    .expect("no context overflow: the edge streams past the draft's window");
    (s, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drafts_window_the_edge_streams_and_the_output_is_the_targets() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    assert!(prompt.len() < WINDOW);
    let max_new = 80;
    let expected = expected_output(&reference(&prompt, max_new), max_new);
    assert!(
        prompt.len() + expected.len() > WINDOW + 8,
        "the run outgrows the draft's window"
    );
    for pipeline in [false, true] {
        let run = Run {
            pipeline,
            ..Run::greedy(&prompt, DraftChoice::Independent, "fixed:4", max_new)
        };
        let (s, seen) = run_short(cloud.addr, &run).await;
        assert_eq!(s.tokens, expected, "pipeline {pipeline}");
        assert_eq!(seen, expected);
        // Rounds drafted while the window had room, streamed after.
        let drafted: Vec<_> = s.round_records.iter().map(|r| r.k > 0).collect();
        assert!(drafted.first() == Some(&true), "{drafted:?}");
        let last_drafted = drafted.iter().rposition(|&d| d).unwrap();
        assert!(drafted[last_drafted + 1..].iter().all(|&d| !d));
        assert!(last_drafted + 1 < drafted.len(), "it streamed at the end");
    }
    // A prompt longer than the draft's whole window: never drafted, all streamed.
    let long: Vec<u32> = (0..WINDOW as u32 + 10).map(|i| 32 + i % 60).collect();
    let expected = expected_output(&reference(&long, 24), 24);
    let run = Run::greedy(&long, DraftChoice::Independent, "fixed:4", 24);
    let (s, _) = run_short(cloud.addr, &run).await;
    assert_eq!(s.tokens, expected);
    assert!(s.round_records.iter().all(|r| r.k == 0));
    assert_eq!(s.drafted_tokens, 0);
    cloud.stop().await;
}
