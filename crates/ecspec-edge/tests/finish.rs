//! Why a generation ended: the caller's stop signal (raised from the commit callback, as a stop
//! string does) ends it after the round in flight with `stop`; the budget gives `length`; a
//! cloud grant cut by the target's context window gives `context` and is reported. End to end
//! against the real server on the tiny models of `common`; the expected tokens come from the
//! target run alone on the same machine.

mod common;

use common::*;
use ecspec_edge::{generate, FinishReason, StopSignal, Summary};
use tokio::net::TcpStream;

async fn run_with(
    addr: std::net::SocketAddr,
    run: &Run,
    stop: StopSignal,
    stop_after: usize,
) -> (Summary, Vec<u32>) {
    let mut cfg = run.config();
    cfg.stop = stop.clone();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    let mut on_commit = |t: &[u32]| {
        seen.extend_from_slice(t);
        if seen.len() >= stop_after {
            stop.raise();
        }
    };
    let s = generate(
        tcp,
        None,
        cfg,
        run.drafter(),
        run.prompt.clone(),
        &mut on_commit,
    )
    .await
    .unwrap();
    (s, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_stop_ends_the_generation_after_the_round_in_flight() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let max_new = 40;
    let expected = expected_output(&reference(&prompt, max_new), max_new);
    assert_eq!(
        expected.len(),
        max_new,
        "no end-of-sequence in the first 40"
    );
    for (policy, k) in [("fixed:4", 4), ("cloud-only", 0)] {
        let run = match policy {
            "cloud-only" => Run::cloud_only(&prompt, max_new),
            p => Run::greedy(&prompt, DraftChoice::Partial, p, max_new),
        };
        let (s, seen) = run_with(cloud.addr, &run, StopSignal::default(), 10).await;
        assert_eq!(s.finish_reason, FinishReason::Stop, "{policy}");
        assert_eq!(s.tokens, seen);
        assert_eq!(seen[..], expected[..seen.len()], "{policy}");
        // The round that crossed 10 tokens commits at most K + 1; nothing after it.
        assert!(
            (10..=10 + k).contains(&seen.len()),
            "{policy}: {} tokens",
            seen.len()
        );
        // Without the stop: the budget.
        let (s, seen) = run_with(cloud.addr, &run, StopSignal::default(), usize::MAX).await;
        assert_eq!(
            (s.finish_reason, seen.len()),
            (FinishReason::Length, max_new)
        );
        assert_eq!(s.max_tokens_granted, None);
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_cut_by_the_targets_window_ends_with_context() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    // The tiny target's window is 512 positions; 64 stay free for one block of drafts.
    let room = 512 - 64 - prompt.len();
    let target = &models().target.transformer;
    let expected = expected_output(&greedy_reference(target, &prompt, room), room);
    let run = Run::greedy(&prompt, DraftChoice::Partial, "fixed:4", 1000);
    let (s, seen) = run_with(cloud.addr, &run, StopSignal::default(), usize::MAX).await;
    assert_eq!(seen, expected);
    assert_eq!(s.max_tokens_granted, Some(room));
    let reason = match expected.len() == room {
        true => FinishReason::Context,
        false => FinishReason::Stop,
    };
    assert_eq!(s.finish_reason, reason, "{} tokens", seen.len());
    cloud.stop().await;
}
