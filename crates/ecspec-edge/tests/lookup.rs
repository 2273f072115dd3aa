//! Context lookup (`--drafter lookup|hybrid`): lookup rounds, their weighing against the draft
//! model and cloud streams, and the draft's cache after them.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use common::*;
use ecspec_cloud::{serve_stream, ServerConfig};
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;

/// Context lookup, alone or before the draft model, commits the target's own tokens; its rounds
/// are counted apart, leave the draft model's cache consistent for the rounds after them (with
/// and without pipelining), and go up as ids only, so a sampled rejection session verifies them
/// by match and follows the target's own sample path exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_lookup_rounds_stay_lossless_and_are_counted_apart() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let mut lookup_rounds = 0;
    let mut model_after_lookup = 0;
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for (drafter, draft, policy, pipeline) in [
            (DraftSource::Lookup, DraftChoice::Same, "fixed:3", false),
            (DraftSource::Hybrid, DraftChoice::Partial, "fixed:3", false),
            (
                DraftSource::Hybrid,
                DraftChoice::Independent,
                "ecspec:4",
                false,
            ),
            (DraftSource::Hybrid, DraftChoice::Partial, "fixed:2", true),
        ] {
            let run = Run {
                drafter,
                pipeline,
                ..Run::greedy(&prompt, draft, policy, max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let what = format!("{drafter} {draft:?} {policy} prompt {prompt:?}");
            assert_eq!(s.tokens, expected, "{what}: output differs");
            check_counters(s);
            let r = &s.round_records;
            let looked: Vec<_> = r.iter().filter(|x| x.source == "lookup").collect();
            assert_eq!(s.lookup_rounds, looked.len() as u64, "{what}");
            assert_eq!(
                s.lookup_drafted_tokens,
                looked.iter().map(|x| x.k as u64).sum::<u64>(),
                "{what}"
            );
            assert_eq!(
                s.lookup_accepted_tokens,
                looked.iter().map(|x| x.accepted as u64).sum::<u64>(),
                "{what}"
            );
            let len = ecspec_edge::Lookup::default().draft_len;
            assert!(
                looked
                    .iter()
                    .all(|x| x.k >= 1 && x.k <= len && x.draft_s == 0.0),
                "{what}"
            );
            assert!(
                r.iter().all(|x| (x.k == 0) == (x.source == "none")),
                "{what}"
            );
            if drafter == DraftSource::Lookup {
                assert!(r.iter().all(|x| x.source != "model"), "{what}");
            }
            lookup_rounds += looked.len();
            model_after_lookup += r
                .windows(2)
                .filter(|w| w[0].source == "lookup" && w[1].source == "model")
                .count();
        }
    }
    // The tiny target's greedy output loops, so lookups happen (75 rounds here), and the model
    // drafts again after them (28 times).
    assert!(lookup_rounds >= 10, "{lookup_rounds} lookup rounds");
    assert!(model_after_lookup >= 3, "{model_after_lookup}");
    // Sampled, rejection session, lookup only: every round is a match round or a plain step,
    // each committing the target's next sample in order, so the output is cloud-only's.
    // T = 0.15: near enough greedy for the output to repeat itself (10 lookup rounds, 15
    // copied tokens accepted).
    let params = SamplingParams {
        temperature: 0.15,
        ..sampled_params(42)
    };
    let prompt = prompts()[0].clone();
    let run = Run {
        drafter: DraftSource::Lookup,
        params,
        ..Run::sampled(
            &prompt,
            DraftChoice::Same,
            VerifyRule::Rejection,
            42,
            max_new,
        )
    };
    let o = run_edge(cloud.addr, &run).await;
    let s = o.summary();
    check_counters(s);
    assert!(
        s.lookup_rounds >= 3 && s.lookup_accepted_tokens >= 3,
        "{} lookup rounds, {} accepted",
        s.lookup_rounds,
        s.lookup_accepted_tokens
    );
    let cloud_only = Run {
        params,
        rule: VerifyRule::Match,
        ..Run::cloud_only(&prompt, max_new)
    };
    let c = run_edge(cloud.addr, &cloud_only).await;
    assert_eq!(s.tokens, c.summary().tokens);
    assert!(
        s.round_records
            .iter()
            .all(|x| x.verify == if x.k > 0 { "match" } else { "none" }),
        "{:?}",
        s.round_records
            .iter()
            .map(|x| (x.k, x.verify))
            .collect::<Vec<_>>()
    );
    cloud.stop().await;
}

/// Lookup rounds leave the draft model's cache at the committed context: with the draft equal
/// to the target, every model round after a lookup — also right after a confirmed pipelined
/// pre-draft — is accepted in full (a wrong cache would show as a rejected perfect draft, which
/// greedy output alone cannot reveal); and the α evidence carried to the next request counts
/// the model's rounds only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_rounds_after_lookup_rounds_draft_from_the_committed_context() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let (mut transitions, mut after_confirmed) = (0, 0);
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for (pipeline, link) in [(true, Some((50.0, 50.0, 20.0))), (false, None)] {
            // α = 0 known for the model: every lookup that matches is taken.
            let run = Run {
                drafter: DraftSource::Hybrid,
                pipeline,
                link,
                acceptance_prior: Some(0.0),
                ..Run::greedy(&prompt, DraftChoice::Same, "fixed:3", max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let r = &s.round_records;
            let what = format!(
                "pipeline {pipeline} prompt {prompt:?}: {:?}",
                r.iter()
                    .map(|x| (x.source, x.k, x.accepted, x.reused))
                    .collect::<Vec<_>>()
            );
            assert_eq!(s.tokens, expected, "{what}");
            check_counters(s);
            // The budget may cut the last round.
            let (_, full) = r.split_last().unwrap();
            for x in full.iter().filter(|x| x.source == "model") {
                assert_eq!(x.accepted, x.k, "round {}: {what}", x.round);
            }
            let mut e = ecspec_spec::AcceptanceEstimator::from_known(0.0).unwrap();
            for x in r.iter().filter(|x| x.source != "lookup") {
                e.record(x.k, x.accepted).unwrap();
            }
            assert_eq!(
                s.memory.as_ref().unwrap().alpha_evidence,
                e.evidence(),
                "{what}"
            );
            for w in r.windows(3) {
                if w[1].source == "lookup" && w[2].source == "model" {
                    transitions += 1;
                    let confirmed =
                        w[0].source == "model" && w[0].accepted == w[0].k && w[0].pre_draft_s > 0.0;
                    after_confirmed += usize::from(confirmed);
                }
            }
        }
    }
    // 14 and 4 when written.
    assert!(transitions >= 5, "{transitions} lookup → model transitions");
    assert!(
        after_confirmed >= 1,
        "{after_confirmed} after a confirmed pre-draft"
    );
    cloud.stop().await;
}

/// Lookups between cloud streams (lookup-only and hybrid under the `ecspec` policy on a 2 ms
/// link): a verdict inside a stream drafts and sends nothing, the output is the target's, and
/// lookups still happen — declined ones are probed again, so the prior cannot lock them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_interleave_with_cloud_streams_and_are_probed_when_declined() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let (mut streamed, mut looked) = (0, 0);
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for drafter in [DraftSource::Lookup, DraftSource::Hybrid] {
            let run = Run {
                drafter,
                link: FAST_LINK,
                ..Run::greedy(&prompt, DraftChoice::Partial, "ecspec:4:2", max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let r = &s.round_records;
            let what = format!(
                "{drafter} {prompt:?}: {:?}",
                r.iter()
                    .map(|x| (x.source, x.k, x.accepted, x.uplink_bytes))
                    .collect::<Vec<_>>()
            );
            assert_eq!(s.tokens, expected, "{what}");
            check_counters(s);
            assert!(r.iter().all(|x| x.k == 0 || x.uplink_bytes > 0), "{what}");
            streamed += r.iter().filter(|x| x.uplink_bytes == 0).count();
            looked += s.lookup_rounds;
        }
    }
    // 103 and 13 when written (1 lookup with the declined ones never probed).
    assert!(
        streamed > 0 && looked >= 5,
        "{streamed} streamed, {looked} lookups"
    );
    cloud.stop().await;
}

/// Behind 60 ms of RTT the `ecspec` policy's 16-token cloud stream beats a round trip for two
/// copied tokens, so a lookup-only edge takes a lookup only as a probe: at most one of every
/// four rounds that sent a block (here, with streams of 16, none). A sampled hybrid rejection session mixes model rounds (with
/// distributions) and lookup rounds (ids, verified by match) and reproduces itself per seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_declined_behind_a_long_rtt_and_mix_with_rejection_rounds() {
    use ecspec_edge::DraftSource;
    let cloud = Cloud::default().await;
    let max_new = 48;
    let mut sent_total = 0;
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        let run = Run {
            drafter: DraftSource::Lookup,
            link: Some((10.0, 20.0, 60.0)),
            ..Run::greedy(&prompt, DraftChoice::Partial, "ecspec", max_new)
        };
        let o = run_edge(cloud.addr, &run).await;
        let s = o.summary();
        check_counters(s);
        assert_eq!(s.tokens, expected);
        let sent = s
            .round_records
            .iter()
            .filter(|x| x.uplink_bytes > 0)
            .count() as u64;
        assert!(
            s.lookup_rounds * 4 <= sent + 3,
            "{} lookups in {sent} rounds that sent a block",
            s.lookup_rounds
        );
        sent_total += sent;
    }
    // Lookups forced on fail this: 4 lookups in 7 such rounds on the first prompt.
    assert!(sent_total >= 6, "{sent_total} rounds sent a block");
    cloud.stop().await;
}

/// A sampled hybrid session mixes rejection-verified model rounds and match-verified lookup
/// rounds, and repeats per seed. The hybrid weighs every round on measured timings, and a
/// rejection session's draws depend on its rounds, so the two runs must see the same timings:
/// the virtual clock (modelled compute on a paused clock, the edge and the cloud in this
/// runtime over an in-memory pipe) gives them that on any machine under any load.
#[tokio::test(start_paused = true)]
async fn a_sampled_hybrid_session_mixes_rules_and_repeats_per_seed_on_the_virtual_clock() {
    use ecspec_edge::DraftSource;
    use ecspec_spec::compute::EdgeCompute;
    let server = virtual_server(ServerConfig::default());
    let max_new = 48;
    let prompt = prompts()[0].clone();
    let run = Run {
        drafter: DraftSource::Hybrid,
        params: SamplingParams {
            temperature: 0.15,
            ..sampled_params(42)
        },
        ..Run::sampled(
            &prompt,
            DraftChoice::Partial,
            VerifyRule::Rejection,
            42,
            max_new,
        )
    };
    let once = || async {
        let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
        let cloud = tokio::spawn(serve_stream(cloud_end, server.clone()));
        let o = run_edge_over(edge_end, &run, |c| {
            c.virtual_compute = Some(EdgeCompute {
                draft_s_per_token: 0.002,
                prefill_s_per_token: 0.000_2,
            })
        })
        .await;
        cloud.await.unwrap().unwrap();
        o
    };
    let (a, b) = (once().await, once().await);
    let (sa, sb) = (a.summary(), b.summary());
    check_counters(sa);
    assert_eq!(sa.tokens, sb.tokens, "same seed, same tokens");
    assert_eq!(
        sa.round_records.len(),
        sb.round_records.len(),
        "same rounds"
    );
    let verify: Vec<_> = sa
        .round_records
        .iter()
        .map(|x| (x.source.as_str(), x.verify.as_str()))
        .collect();
    assert!(verify.contains(&("model", "rejection")), "{verify:?}");
    assert!(verify.contains(&("lookup", "match")), "{verify:?}");
    assert!(
        verify.iter().all(|v| matches!(
            v,
            ("model", "rejection") | ("lookup", "match") | ("none", "none")
        )),
        "{verify:?}"
    );
}
