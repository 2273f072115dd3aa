//! Channel-aware verification: the edge picks match or rejection per round from the uplink it
//! measures.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use common::*;
use ecspec_edge::Summary;
use ecspec_spec::verify::VerifyRule;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_aware_verification_picks_rejection_on_fast_uplinks_and_match_on_slow_ones() {
    // The Same draft with its whole distribution at 16 bits: rejection accepts every draft,
    // match only Σ p·q of them (small for this near-flat model at T = 0.8). Each rejection
    // token costs 256 × 4 bytes on the uplink.
    let cloud = Cloud::default().await;
    let prompt = prompts()[0].clone();
    let run = |link| Run {
        dist: (VOCAB, 16),
        link,
        verify_switch: Some(ecspec_spec::verify_mode::VerifySelector::new(8, 16)),
        ..Run::sampled(&prompt, DraftChoice::Same, VerifyRule::Rejection, 5, 24)
    };
    let rules = |s: &Summary| {
        s.round_records
            .iter()
            .filter(|r| r.k > 0)
            .map(|r| r.verify)
            .collect::<Vec<_>>()
    };
    let fast = run_edge(cloud.addr, &run(FAST_LINK)).await;
    let f = fast.summary();
    check_counters(f);
    let fr = rules(f);
    let n_rej = fr.iter().filter(|&&r| r == "rejection").count();
    assert!(n_rej * 2 > fr.len(), "fast uplink: {fr:?}");
    assert_eq!(f.verify, "auto");
    // 50 kbit/s uplink: a 1 kB distribution per token costs 160 ms; match wins after the
    // first (exploratory) rejection round teaches the edge the bytes and the rate.
    let slow = run_edge(cloud.addr, &run(Some((0.05, 50.0, 2.0)))).await;
    let s = slow.summary();
    check_counters(s);
    let sr = rules(s);
    let n_rej = sr.iter().filter(|&&r| r == "rejection").count();
    assert!(n_rej * 4 < sr.len(), "slow uplink: {sr:?}");
    // Every round's bytes say which rule it used: ids only in match rounds.
    for r in s.round_records.iter().filter(|r| r.k > 0) {
        let per_token = r.uplink_bytes / r.k as u64;
        match r.verify.as_str() {
            "match" => assert!(per_token < 10, "{r:?}"),
            "rejection" => assert!(per_token > 500, "{r:?}"),
            other => panic!("unexpected rule {other}"),
        }
    }
    cloud.stop().await;
}
