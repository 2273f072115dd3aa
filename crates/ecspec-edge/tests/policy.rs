//! Draft-length policies' effect on the edge: cloud streams (K = 0) between drafted rounds, and
//! load-aware edges pricing the rows they ask of a busy cloud.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use common::*;
use ecspec_cloud::{serve_stream, CloudModel, CloudServer, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_cloud_steps_between_drafted_rounds_stay_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        for draft in [DraftChoice::Partial, DraftChoice::Independent] {
            let run = Run::greedy(&prompt, draft, "test:alternate-stream", max_new);
            let o = run_edge(cloud.addr, &run).await;
            let s = o.summary();
            assert_eq!(
                s.tokens, expected,
                "{draft:?} prompt {prompt:?}: output differs"
            );
            check_counters(s);
            // Every streamed verdict is its own round of K = 0; a stream of 5 is followed by
            // one drafted round of 3 (the budget may cut either).
            let ks: Vec<usize> = s.round_records.iter().map(|r| r.k).collect();
            let mut i = 0;
            while i < ks.len() {
                let zeros = ks[i..].iter().take_while(|&&k| k == 0).count();
                assert!(zeros == 5 || i + zeros == ks.len(), "{ks:?}");
                i += zeros;
                if i < ks.len() {
                    assert_eq!(ks[i], 3, "{ks:?}");
                    i += 1;
                }
            }
            assert!(ks.iter().filter(|&&k| k == 0).count() >= 5, "{ks:?}");
            assert_eq!(s.rounds as usize, ks.len());
        }
    }
}

/// Load-aware speculation: when each row of a pass delays the pass's other sessions (the cloud
/// reports the delay in every verdict), load-aware edges ask for fewer rows per committed
/// token than edges blind to it, and both stay lossless. Virtual clock: the rows each pass
/// holds, and so every price, are the same on every machine.
#[tokio::test(start_paused = true)]
async fn load_aware_edges_ask_a_busy_cloud_for_fewer_rows() {
    // A compute-bound cloud: 20 ms a pass plus 10 ms per further row.
    let server = CloudServer::new(
        CloudModel::new(FAMILY, VERSION, &models().target),
        ServerConfig {
            virtual_compute: Some(ecspec_spec::compute::CloudCompute {
                prefill_s_per_token: 0.000_5,
                verify_base_s: 0.020,
                verify_per_token_s: 0.010,
            }),
            ..Default::default()
        },
    );
    let max_new = 32;
    let runs: Vec<Run> = (0..12)
        .map(|i| {
            let p = &prompts()[i % 3];
            Run {
                link: Some((50.0, 50.0, 10.0)),
                acceptance_prior: Some(0.6),
                ..Run::greedy(p, DraftChoice::Partial, "ecspec", max_new)
            }
        })
        .collect();
    let mut rows = Vec::new();
    for aware in [true, false] {
        let tasks: Vec<_> = runs
            .iter()
            .map(|run| {
                let (server, run) = (server.clone(), run.clone());
                tokio::spawn(async move {
                    let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
                    let cloud = tokio::spawn(serve_stream(cloud_end, server));
                    let o = run_edge_over(edge_end, &run, |c| {
                        c.load_aware = aware;
                        c.virtual_compute = Some(ecspec_spec::compute::EdgeCompute {
                            draft_s_per_token: 0.001,
                            prefill_s_per_token: 0.000_1,
                        });
                    })
                    .await;
                    cloud.await.unwrap().unwrap();
                    o
                })
            })
            .collect();
        let mut asked = 0u64;
        for (t, run) in tasks.into_iter().zip(&runs) {
            let o = t.await.unwrap();
            let s = o.summary();
            assert_eq!(
                s.tokens,
                expected_output(&reference(&run.prompt, max_new), max_new)
            );
            // Rows asked of the cloud: K + 1 a drafted round, 1 a streamed token.
            asked += s.round_records.iter().map(|r| r.k as u64 + 1).sum::<u64>();
        }
        rows.push(asked);
    }
    assert!(
        rows[0] < rows[1],
        "load-aware edges asked for {} rows, blind ones for {}",
        rows[0],
        rows[1]
    );
}
