//! Edge memory between requests (`SessionMemory`, a known acceptance rate): what a request
//! starts from.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_remembering_that_streaming_pays_opens_with_a_stream_and_stays_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    let prompt = prompts()[1].clone();
    let expected = expected_output(&reference(&prompt, max_new), max_new);
    // A cold request of the ecspec policy, then one that starts from its memory.
    let cold = Run {
        link: FAST_LINK,
        ..Run::greedy(&prompt, DraftChoice::Independent, "ecspec:4:8", max_new)
    };
    let o = run_edge(cloud.addr, &cold).await;
    let s = o.summary();
    assert_eq!(s.tokens, expected);
    let m = s
        .memory
        .clone()
        .expect("speculative requests leave a memory");
    assert_eq!(m.target_version, "v0");
    assert_eq!(m.alpha_evidence, {
        let mut e = ecspec_spec::AcceptanceEstimator::default();
        for r in &s.round_records {
            e.record(r.k, r.accepted).unwrap();
        }
        e.evidence()
    });
    let p = m.policy.expect("ecspec remembers");
    assert_eq!(p.drafted_tokens, s.drafted_tokens);
    // Memory of a request that ended streaming with 16-token streams: this one opens with the
    // back-off's next step, 32.
    let memory = ecspec_edge::SessionMemory {
        policy: Some(ecspec_spec::policy::PolicyMemory {
            drafted_tokens: 100,
            streaming: true,
            stream_len: 16,
        }),
        ..m
    };
    let warm = Run {
        memory: Some(memory),
        ..cold
    };
    let o = run_edge(cloud.addr, &warm).await;
    let s = o.summary();
    assert_eq!(s.tokens, expected, "opening with a stream is lossless");
    check_counters(s);
    let n = 32.min(s.generated_tokens - 1);
    let (opening, rest) = s.round_records.split_at(n);
    // The stream was asked for in the Hello: no DraftBlock, no uplink bytes in its rounds.
    assert!(
        opening.iter().all(|r| r.k == 0 && r.uplink_bytes == 0),
        "{:?}",
        opening
            .iter()
            .map(|r| (r.k, r.uplink_bytes))
            .collect::<Vec<_>>()
    );
    assert!(
        rest.first().is_none_or(|r| r.k >= 1),
        "a probe round follows the opening stream"
    );
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_acceptance_rate_skips_the_warm_up_and_stays_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 30;
    let prompt = prompts()[0].clone();
    let expected = expected_output(&reference(&prompt, max_new), max_new);
    let cold = Run {
        link: FAST_LINK,
        ..Run::greedy(&prompt, DraftChoice::Independent, "ecspec:4:8", max_new)
    };
    // Uninformed (prior α 0.5): the policy drafts its 8 warm-up tokens first.
    let s = run_edge(cloud.addr, &cold).await.summary().clone();
    assert_eq!(s.tokens, expected);
    assert!(s.round_records[0].k >= 1, "{:?}", s.round_records[0]);
    assert!(s.drafted_tokens >= 8, "{}", s.drafted_tokens);
    // Known α = 0 (a draft that is never accepted): streaming pays from the first round, and
    // the estimate starts at the known rate.
    let known = Run {
        acceptance_prior: Some(0.0),
        ..cold
    };
    let s = run_edge(cloud.addr, &known).await.summary().clone();
    assert_eq!(
        s.tokens, expected,
        "a known α changes the schedule, not the text"
    );
    check_counters(&s);
    let r = &s.round_records;
    assert_eq!((r[0].k, r[0].uplink_bytes > 0), (0, true), "{:?}", r[0]);
    assert!(r[0].alpha_estimate < 0.01, "{}", r[0].alpha_estimate);
    // A stream of 8, then one probe round.
    assert!(r[1..8.min(r.len())].iter().all(|x| x.k == 0), "{r:?}");
    cloud.stop().await;
}
