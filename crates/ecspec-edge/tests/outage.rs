//! Outages and restarts: the edge reconnects with backoff and re-opens its session with the
//! committed tokens as the prompt; nothing committed is lost or repeated and the text is the
//! uninterrupted run's. On tokio's paused clock over in-memory pipes (the link emulator and
//! the cloud's modelled compute sleep on it), so when each outage falls does not depend on
//! this machine's speed; tiny random-weight models (fixtures in `common`).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ecspec_cloud::{serve_stream, CloudServer, ServerConfig};
use ecspec_edge::{generate_resilient, Connect, EdgeError, LinkSet, Resilience, Summary};
use ecspec_link::{emulate, EmulatedStream, LinkConfig, Outage, Outages};
use ecspec_spec::compute::EdgeCompute;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const MAX_NEW: usize = 40;
/// 100 ms RTT: every round takes at least that, so 40 tokens take well over a second.
const RTT_MS: f64 = 100.0;

fn server() -> Arc<CloudServer> {
    virtual_server(ServerConfig::default())
}

/// Connections to the cloud `current` points at (a restart swaps it), each through a fresh
/// emulated link cut by `outages` (link time from `origin`); refused while the link is down.
#[derive(Clone)]
struct Dialer {
    current: Arc<Mutex<Arc<CloudServer>>>,
    outages: Outages,
    origin: Instant,
    links: Arc<LinkSet>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Connections made.
    made: Arc<Mutex<u32>>,
}

impl Dialer {
    fn new(server: Arc<CloudServer>, outages: Outages) -> Self {
        Self {
            current: Arc::new(Mutex::new(server)),
            outages,
            origin: Instant::now(),
            links: Arc::default(),
            tasks: Arc::default(),
            made: Arc::default(),
        }
    }

    async fn connect(&self) -> std::io::Result<EmulatedStream> {
        let now = self.origin.elapsed();
        if self.outages.down_until(now).is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the link is down",
            ));
        }
        let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
        let server = self.current.lock().unwrap().clone();
        self.tasks.lock().unwrap().push(tokio::spawn(async move {
            let _ = serve_stream(cloud_end, server).await;
        }));
        let link = LinkConfig::constant(10.0, 20.0, RTT_MS).unwrap();
        let (s, counters) = emulate(edge_end, link).await;
        self.outages.cut(counters.clone(), self.origin);
        self.links.add(counters);
        *self.made.lock().unwrap() += 1;
        Ok(s)
    }

    fn resilience(&self) -> Resilience<EmulatedStream> {
        let me = self.clone();
        let connect: Connect<EmulatedStream> = Box::new(move || {
            let me = me.clone();
            Box::pin(async move { me.connect().await })
                as Pin<Box<dyn Future<Output = std::io::Result<EmulatedStream>> + Send>>
        });
        Resilience {
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..Resilience::new(connect)
        }
    }
}

/// One resilient generation of `run` through `dialer`; the tokens the callback saw too.
async fn generate_through(dialer: &Dialer, run: &Run) -> (Result<Summary, EdgeError>, Vec<u32>) {
    let mut cfg = run.config();
    cfg.virtual_compute = Some(EdgeCompute {
        draft_s_per_token: 0.002,
        prefill_s_per_token: 0.000_2,
    });
    let mut seen = Vec::new();
    let mut on_commit = |t: &[u32]| seen.extend_from_slice(t);
    let first = dialer.connect().await.expect("the link is up at the start");
    let r = generate_resilient(
        first,
        Some(dialer.links.as_ref()),
        cfg,
        run.drafter(),
        run.prompt.clone(),
        &mut on_commit,
        dialer.resilience(),
    )
    .await;
    (r, seen)
}

fn outages(spec: &[&str]) -> Outages {
    Outages::new(spec.iter().map(|s| s.parse::<Outage>().unwrap()).collect()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn three_outages_cost_three_reconnects_and_no_token() {
    let prompt = prompts()[0].clone();
    let expected = expected_output(&reference(&prompt, MAX_NEW), MAX_NEW);
    // Each 200 ms down: the first attempts after a loss find the link down and back off.
    let dialer = Dialer::new(server(), outages(&["0.25:0.2", "1.0:0.2", "1.75:0.2"]));
    let run = Run::greedy(&prompt, DraftChoice::Partial, "fixed:2", MAX_NEW);
    let (r, seen) = generate_through(&dialer, &run).await;
    let s = r.expect("the generation survives its outages");
    assert_eq!(s.tokens, expected, "the uninterrupted run's tokens");
    assert_eq!(seen, expected, "each committed once, in order");
    assert_eq!(s.reconnects, 3);
    // Each loss costs at least the rest of its outage (the link is down) and at most that
    // plus one backoff step and a re-prefill round trip.
    assert!(
        s.reconnect_s >= 0.6 && s.reconnect_s < 1.8,
        "{}",
        s.reconnect_s
    );
    assert!(
        *dialer.made.lock().unwrap() == 4,
        "one connection per (re)open"
    );
    assert_eq!(
        s.target_forward_passes,
        s.rounds + 4,
        "one prefill per (re)open"
    );
    // The bytes of all four links are counted.
    let up: u64 = s.round_records.iter().map(|r| r.uplink_bytes).sum();
    assert!(s.uplink_bytes > up, "the re-sent prompts count too");
}

#[tokio::test(start_paused = true)]
async fn a_cloud_restart_mid_generation_loses_nothing_sampled_or_greedy() {
    let prompt = prompts()[1].clone();
    for run in [
        Run::greedy(&prompt, DraftChoice::Partial, "fixed:3", MAX_NEW),
        // Seeded match sampling: the restarted cloud's draws are keyed by position too.
        Run::sampled(
            &prompt,
            DraftChoice::Partial,
            ecspec_spec::verify::VerifyRule::Match,
            7,
            MAX_NEW,
        ),
    ] {
        let alone = {
            let dialer = Dialer::new(server(), Outages::default());
            generate_through(&dialer, &run).await.0.unwrap().tokens
        };
        assert!(alone.len() > 10, "{alone:?}");
        let dialer = Dialer::new(server(), Outages::default());
        // At 0.5 s the cloud dies (its connection tasks end, the pipes close) and a new one,
        // with no sessions, takes its place.
        let (d, restarted) = (dialer.clone(), server());
        let restart = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for t in d.tasks.lock().unwrap().drain(..) {
                t.abort();
            }
            *d.current.lock().unwrap() = restarted;
        });
        let (r, seen) = generate_through(&dialer, &run).await;
        restart.await.unwrap();
        let s = r.expect("the generation survives the restart");
        assert_eq!(s.reconnects, 1);
        assert_eq!(s.tokens, alone);
        assert_eq!(seen, alone);
    }
}

#[tokio::test(start_paused = true)]
async fn a_cloud_that_never_comes_back_ends_the_generation_keeping_what_was_committed() {
    let prompt = prompts()[0].clone();
    let expected = expected_output(&reference(&prompt, MAX_NEW), MAX_NEW);
    // Down from 0.3 s for the rest of the hour.
    let dialer = Dialer::new(server(), outages(&["0.3:3600"]));
    let run = Run::greedy(&prompt, DraftChoice::Partial, "fixed:2", MAX_NEW);
    let (r, seen) = generate_through(&dialer, &run).await;
    match r {
        Err(EdgeError::Reconnect { attempts, last, .. }) => {
            assert_eq!(attempts, 20);
            assert!(last.to_string().contains("the link is down"), "{last}");
        }
        other => panic!("expected the reconnection to give up, got {other:?}"),
    }
    assert!(!seen.is_empty() && seen.len() < expected.len());
    assert_eq!(
        seen,
        expected[..seen.len()],
        "what was committed stays committed"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_during_the_handshake_sends_the_hello_again() {
    let prompt = prompts()[0].clone();
    let expected = expected_output(&reference(&prompt, MAX_NEW), MAX_NEW);
    // Cut 1 ms after the first connection, while the Hello is on its way (100 ms RTT).
    let dialer = Dialer::new(server(), outages(&["0.001:0.3"]));
    let run = Run::greedy(&prompt, DraftChoice::Partial, "fixed:2", MAX_NEW);
    let (r, seen) = generate_through(&dialer, &run).await;
    let s = r.expect("the handshake survives the outage");
    assert_eq!(s.tokens, expected);
    assert_eq!(seen, expected);
    assert_eq!(s.reconnects, 1);
    assert!(s.reconnect_s >= 0.299, "{}", s.reconnect_s);
    // The time to first token includes the outage.
    assert!(s.ttft_s > 0.3, "{}", s.ttft_s);
}

#[tokio::test(start_paused = true)]
async fn a_cloud_only_stream_resumes_after_an_outage() {
    let prompt = prompts()[0].clone();
    let expected = expected_output(&reference(&prompt, MAX_NEW), MAX_NEW);
    // The first token arrives at ~0.11 s (50 ms each way, the prefill), then a verdict every
    // modelled pass (~4.5 ms): the cut at 0.15 s falls mid-stream.
    let dialer = Dialer::new(server(), outages(&["0.15:0.1"]));
    let run = Run::cloud_only(&prompt, MAX_NEW);
    let (r, seen) = generate_through(&dialer, &run).await;
    let s = r.expect("the stream resumes");
    assert_eq!(s.tokens, expected);
    assert_eq!(seen, expected);
    assert_eq!(s.reconnects, 1);
}
