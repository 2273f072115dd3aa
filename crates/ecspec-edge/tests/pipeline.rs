//! Pipelined drafting (`--pipeline-draft`): the edge drafts on while a round is in flight and
//! reuses a confirmed pre-draft.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_drafting_reuses_confirmed_pre_drafts_and_stays_lossless() {
    // A 20 ms RTT leaves the edge time to pre-draft while each round is in flight.
    let cloud = Cloud::default().await;
    let max_new = 40;
    let link = Some((50.0, 50.0, 20.0));
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for (draft, policy) in [
            (DraftChoice::Same, "fixed:4"),
            (DraftChoice::Partial, "fixed:3"),
            (DraftChoice::Independent, "ecspec:4"),
            (DraftChoice::Partial, "fixed:4+p-min:0.3"),
            (DraftChoice::Same, "test:alternate-stream"),
        ] {
            let run = Run {
                pipeline: true,
                link,
                ..Run::greedy(&prompt, draft, policy, max_new)
            };
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            let what = format!("{draft:?} {policy} prompt {prompt:?}");
            assert_eq!(s.tokens, expected, "{what}: output differs");
            check_counters(s);
            let r = &s.round_records;
            assert!(r.iter().all(|x| x.reused <= x.k), "{what}");
            assert!(r[0].reused == 0, "{what}: nothing to reuse in round 1");
            if (draft, policy) == (DraftChoice::Same, "fixed:4") {
                // The Same draft is always right, so its guess of the bonus token is too:
                // every round after the first starts from its pre-draft (the budget may cut
                // the last round short).
                let (_, middle) = r.split_last().unwrap();
                assert!(
                    middle
                        .iter()
                        .skip(1)
                        .all(|x| x.reused == 4 && x.pre_draft_s > 0.0),
                    "{what}: {:?}",
                    r.iter().map(|x| (x.k, x.reused)).collect::<Vec<_>>()
                );
            }
        }
    }
    cloud.stop().await;
}
