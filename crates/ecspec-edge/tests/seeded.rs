//! Seeded sampling: what a seed promises (README, "Sampling and reproducibility").
//!
//! - `match`: the target's draw for each position is keyed by (seed, position), so a seeded
//!   match generation commits exactly the cloud-only sampled text of that seed, whatever the
//!   draft, the draft lengths and whichever rounds streamed.
//! - `rejection`: its draws depend on the drafted tokens, so it repeats its text only with the
//!   same rounds (same draft, same draft lengths), and in general differs from cloud-only.
//!
//! End to end against the real server on tiny random-weight models (fixtures in `common`).
//! Every run here uses a fixed draft length over plain TCP: the rounds do not depend on time.

mod common;

use common::*;
use ecspec_spec::verify::VerifyRule;

const MAX_NEW: usize = 40;

fn cloud_only_sampled(prompt: &[u32], seed: u64) -> Run {
    Run {
        params: sampled_params(seed),
        rule: VerifyRule::Match,
        ..Run::cloud_only(prompt, MAX_NEW)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_match_commits_the_cloud_only_text_whatever_the_rounds() {
    let cloud = Cloud::default().await;
    for (p, prompt) in prompts().iter().enumerate() {
        for seed in [1u64, 42] {
            let reference = run_edge(cloud.addr, &cloud_only_sampled(prompt, seed)).await;
            let reference = reference.summary().tokens.clone();
            assert!(!reference.is_empty());
            for (draft, policy) in [
                (DraftChoice::Partial, "fixed:1"),
                (DraftChoice::Partial, "fixed:4"),
                (DraftChoice::Same, "fixed:7"),
                (DraftChoice::Independent, "fixed:3"),
            ] {
                let run = Run {
                    policy,
                    ..Run::sampled(prompt, draft, VerifyRule::Match, seed, MAX_NEW)
                };
                let out = run_edge(cloud.addr, &run).await;
                let s = out.summary();
                check_counters(s);
                assert_eq!(
                    s.tokens, reference,
                    "prompt {p}, seed {seed}, {draft:?} {policy}: match differs from cloud-only"
                );
            }
        }
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reopened_with_its_committed_tokens_continues_the_same_sampled_text() {
    // What resuming after a cloud restart does: a new session whose prompt is the prompt plus
    // every token committed so far. The draws are keyed by position, not by how many draws
    // the session made, so the continuation is the uninterrupted run's (a per-session
    // sequential stream would restart its draws at the new session's first token).
    let cloud = Cloud::default().await;
    let prompt = prompts()[1].clone();
    for seed in [3u64, 9, 11] {
        let whole = run_edge(cloud.addr, &cloud_only_sampled(&prompt, seed)).await;
        let whole = whole.summary().tokens.clone();
        // A run may end on a stop token; the reopened one then ends on the same token.
        for cut in [1usize, whole.len() / 2, whole.len() - 1] {
            let mut reopened = prompt.clone();
            reopened.extend_from_slice(&whole[..cut]);
            let run = Run {
                policy: "fixed:4",
                ..Run::sampled(
                    &reopened,
                    DraftChoice::Partial,
                    VerifyRule::Match,
                    seed,
                    MAX_NEW - cut,
                )
            };
            let rest = run_edge(cloud.addr, &run).await.summary().tokens.clone();
            assert_eq!(
                rest,
                whole[cut..],
                "seed {seed}, reopened after {cut} of {} tokens",
                whole.len()
            );
        }
    }
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_rejection_repeats_with_the_same_rounds_only() {
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let mut differs_from_cloud_only = 0;
    for seed in [1u64, 2, 3, 4, 5] {
        let run = Run::sampled(
            &prompt,
            DraftChoice::Partial,
            VerifyRule::Rejection,
            seed,
            MAX_NEW,
        );
        let first = run_edge(cloud.addr, &run).await.summary().tokens.clone();
        let again = run_edge(cloud.addr, &run).await.summary().tokens.clone();
        assert_eq!(first, again, "seed {seed}: same rounds, same text");
        let reference = run_edge(cloud.addr, &cloud_only_sampled(&prompt, seed)).await;
        if reference.summary().tokens != first {
            differs_from_cloud_only += 1;
        }
    }
    // Rejection draws its tokens through the drafts, so it is not the cloud-only text (each
    // of its texts is still distributed as the target's: tests/exactness.rs in ecspec-spec).
    assert!(
        differs_from_cloud_only >= 3,
        "rejection matched cloud-only for {} of 5 seeds",
        5 - differs_from_cloud_only
    );
    cloud.stop().await;
}
