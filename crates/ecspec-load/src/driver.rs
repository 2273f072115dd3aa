//! The load driver: simulated edges, each running [`ecspec_edge::generate`] over its own
//! emulated link against one cloud, in a closed or an open loop, until a request count or a
//! duration is reached.
//!
//! Times come from `tokio::time::Instant`, so the same code runs on a paused tokio clock (the
//! virtual clock) as on the live one; nothing here reads the wall clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ecspec_cloud::{serve, CloudServer, ServerStats};
use ecspec_edge::{generate, Drafter, EdgeConfig, SessionMemory, Summary};
use ecspec_link::{emulate, LinkConfig};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::arrivals::poisson_arrivals;
use crate::LoadError;

/// One load level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Load {
    /// Closed loop: `edges` edges, each sending its next request as soon as its previous one
    /// ended (vLLM's `--max-concurrency`).
    Closed {
        /// Concurrent edges (≥ 1).
        edges: usize,
    },
    /// Open loop: requests arrive as a Poisson process, whatever is still running.
    Open {
        /// Mean arrival rate, requests per second (> 0).
        rate_per_s: f64,
    },
}

impl Load {
    /// The load as a number: edges (closed loop) or requests per second (open loop).
    pub fn value(&self) -> f64 {
        match *self {
            Load::Closed { edges } => edges as f64,
            Load::Open { rate_per_s } => rate_per_s,
        }
    }

    /// `closed` or `open`.
    pub fn kind(&self) -> &'static str {
        match self {
            Load::Closed { .. } => "closed",
            Load::Open { .. } => "open",
        }
    }

    /// For people: `4 edges`, `2.5 req/s`.
    pub fn label(&self) -> String {
        match *self {
            Load::Closed { edges: 1 } => "1 edge".into(),
            Load::Closed { edges } => format!("{edges} edges"),
            Load::Open { rate_per_s } => format!("{rate_per_s} req/s"),
        }
    }

    fn check(&self) -> Result<(), LoadError> {
        match *self {
            Load::Closed { edges: 0 } => Err(LoadError::BadSetting(
                "a closed loop needs at least one edge".into(),
            )),
            Load::Open { rate_per_s } if !(rate_per_s.is_finite() && rate_per_s > 0.0) => {
                Err(LoadError::BadSetting(format!(
                    "the request rate must be a positive number of requests per second, got {rate_per_s}"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// When a load level stops: after `requests` requests were started, or once `duration` has
/// passed since it began (no request starts later; those running finish, each bounded by its
/// token budget), whichever comes first. At least one of them is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    requests: Option<usize>,
    duration: Option<Duration>,
}

impl Bounds {
    /// At most `requests` requests (≥ 1) and/or `duration_s` seconds (> 0) per level.
    ///
    /// # Errors
    /// Neither bound, zero requests, or a duration that is not a positive finite number.
    pub fn new(requests: Option<usize>, duration_s: Option<f64>) -> Result<Self, LoadError> {
        if requests == Some(0) {
            return Err(LoadError::BadSetting(
                "the request count per level must be at least 1".into(),
            ));
        }
        let duration = match duration_s {
            None => None,
            Some(d) if d.is_finite() && d > 0.0 => Duration::try_from_secs_f64(d).ok(),
            Some(d) => {
                return Err(LoadError::BadSetting(format!(
                    "the duration per level must be a positive number of seconds, got {d}"
                )))
            }
        };
        if requests.is_none() && duration.is_none() {
            return Err(LoadError::BadSetting(
                "a load level needs a request count or a duration, or it would never stop".into(),
            ));
        }
        Ok(Self { requests, duration })
    }

    /// Requests per level, when bounded by a count.
    pub fn requests(&self) -> Option<usize> {
        self.requests
    }

    /// Time per level, when bounded by a duration.
    pub fn duration(&self) -> Option<Duration> {
        self.duration
    }
}

/// Builds what one edge runs for one request: the generation's settings and, for a
/// speculative system, the drafter (a fresh draft KV cache over shared weights). Called once
/// per request, on the request's task.
pub trait EdgeFactory: Send + Sync {
    /// The edge's settings and drafter for a request starting from `memory` (what the edge's
    /// previous request left; `None` for its first or in an open loop). The error is shown
    /// as the request's failure.
    fn edge(&self, memory: Option<SessionMemory>) -> Result<(EdgeConfig, Option<Drafter>), String>;
}

impl<F> EdgeFactory for F
where
    F: Fn(Option<SessionMemory>) -> Result<(EdgeConfig, Option<Drafter>), String> + Send + Sync,
{
    fn edge(&self, memory: Option<SessionMemory>) -> Result<(EdgeConfig, Option<Drafter>), String> {
        self(memory)
    }
}

/// A compared system: its name in the results and what its edges run.
#[derive(Clone)]
pub struct System {
    /// Name in the results (`cloud-only`, `sd-fixed:4`, `ecspec`, …).
    pub name: String,
    /// Builds each request's edge.
    pub edge: Arc<dyn EdgeFactory>,
}

/// Where the cloud is.
#[derive(Clone)]
pub enum Cloud {
    /// A server reached over TCP. With `server` (it runs in this process) its counters are
    /// read before and after each level.
    Tcp {
        /// Its address.
        addr: SocketAddr,
        /// The server itself, when in this process.
        server: Option<Arc<CloudServer>>,
    },
    /// A server in this process reached over in-memory pipes, one per request (no sockets:
    /// what a paused tokio clock needs, since only tokio timers may advance it).
    InMemory(Arc<CloudServer>),
}

impl Cloud {
    /// The server's counters now, when it runs in this process.
    pub fn stats(&self) -> Option<ServerStats> {
        match self {
            Cloud::Tcp { server, .. } => server.as_ref().map(|s| s.stats()),
            Cloud::InMemory(s) => Some(s.stats()),
        }
    }

    async fn generate(
        &self,
        link: Option<LinkConfig>,
        cfg: EdgeConfig,
        drafter: Option<Drafter>,
        prompt: Vec<u32>,
        on_commit: ecspec_edge::session::OnCommit<'_>,
    ) -> Result<Summary, String> {
        match self {
            Cloud::Tcp { addr, .. } => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connecting to the cloud at {addr}: {e}"))?;
                // Rounds are small messages: Nagle's algorithm would hold them back.
                let _ = tcp.set_nodelay(true);
                over(tcp, link, cfg, drafter, prompt, on_commit).await
            }
            Cloud::InMemory(server) => {
                let (edge_end, cloud_end) = tokio::io::duplex(1 << 20);
                let cloud = tokio::spawn(ecspec_cloud::serve_stream(cloud_end, server.clone()));
                let r = over(edge_end, link, cfg, drafter, prompt, on_commit).await;
                if r.is_err() {
                    // The cloud would otherwise wait out its idle timeout.
                    cloud.abort();
                }
                let _ = cloud.await;
                r
            }
        }
    }
}

/// One generation over `stream`, through the emulated `link` when given.
async fn over<S>(
    stream: S,
    link: Option<LinkConfig>,
    cfg: EdgeConfig,
    drafter: Option<Drafter>,
    prompt: Vec<u32>,
    on_commit: ecspec_edge::session::OnCommit<'_>,
) -> Result<Summary, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let r = match link {
        Some(link) => {
            let (s, counters) = emulate(stream, link).await;
            generate(s, Some(counters), cfg, drafter, prompt, on_commit).await
        }
        None => generate(stream, None, cfg, drafter, prompt, on_commit).await,
    };
    r.map_err(|e| e.to_string())
}

/// A cloud server running in this process on 127.0.0.1 (a real TCP listener on a free port).
pub struct LocalCloud {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server (its counters feed the report).
    pub server: Arc<CloudServer>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalCloud {
    /// Starts serving `server` on 127.0.0.1:0.
    ///
    /// # Errors
    /// [`LoadError::Cloud`] when no loopback port can be bound.
    pub async fn start(server: Arc<CloudServer>) -> Result<Self, LoadError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LoadError::Cloud)?;
        let addr = listener.local_addr().map_err(LoadError::Cloud)?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, server.clone(), async {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            server,
            stop: Some(tx),
            task,
        })
    }

    /// The cloud as the driver reaches it (TCP, counters read).
    pub fn cloud(&self) -> Cloud {
        Cloud::Tcp {
            addr: self.addr,
            server: Some(self.server.clone()),
        }
    }

    /// Stops the server and waits for it (at most its shutdown grace).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

/// What every level of a run shares.
#[derive(Clone)]
pub struct LevelSettings {
    /// When each level stops.
    pub bounds: Bounds,
    /// The prompts as token ids (chat template applied); request `seq` sends prompt
    /// `seq mod len` (at least one).
    pub prompts: Arc<Vec<Vec<u32>>>,
    /// Each request's emulated link, as it is at time 0 of its traces (None: no emulation,
    /// the bytes go straight to the cloud and are not counted).
    pub link: Option<LinkConfig>,
    /// Trace phase, seconds: edge `e` (closed loop) or arrival `seq` (open loop) meets the
    /// link `e × phase_s` seconds into its traces, plus the time since the level began when
    /// its request starts, so an edge moves along its own part of the trace.
    pub phase_s: f64,
    /// Seed of the open loop's Poisson arrivals.
    pub seed: u64,
}

/// One request as the load generator measured it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Order in which the request was started within its level (0-based).
    pub seq: usize,
    /// The edge that sent it (closed loop), or its arrival number (open loop).
    pub edge: usize,
    /// Index of its prompt in [`LevelSettings::prompts`].
    pub prompt: usize,
    /// When it started, seconds since the level began (open loop: its scheduled arrival).
    pub start_s: f64,
    /// Time to first token, seconds: from the start (connection included) to the first
    /// committed token reaching the edge. None when nothing was committed.
    pub ttft_s: Option<f64>,
    /// From the start to the end of the generation, seconds.
    pub latency_s: f64,
    /// Tokens committed (on failure: those committed before it).
    pub generated_tokens: usize,
    /// Prompt tokens sent.
    pub prompt_tokens: usize,
    /// The session's target forward passes (prefill + rounds, as the edge counts them).
    pub target_forward_passes: u64,
    /// Tokens drafted.
    pub drafted_tokens: u64,
    /// Drafted tokens accepted.
    pub accepted_tokens: u64,
    /// Bytes the edge sent, framing included (0 without a link).
    pub uplink_bytes: u64,
    /// Bytes the edge received.
    pub downlink_bytes: u64,
    /// The committed token ids.
    #[serde(skip)]
    pub tokens: Vec<u32>,
    /// Why the request failed, when it did.
    pub error: Option<String>,
}

impl RequestRecord {
    /// Time per output token after the first, seconds:
    /// (end − first token) / (generated − 1). None for a failed request or fewer than two
    /// tokens.
    pub fn tpot_s(&self) -> Option<f64> {
        match (self.error.is_none(), self.ttft_s) {
            (true, Some(ttft)) if self.generated_tokens >= 2 => {
                Some((self.latency_s - ttft).max(0.0) / (self.generated_tokens - 1) as f64)
            }
            _ => None,
        }
    }

    /// Per-user goodput, committed tokens per second of this request (start to end). None
    /// for a failed request.
    pub fn goodput_tok_s(&self) -> Option<f64> {
        (self.error.is_none() && self.latency_s > 0.0)
            .then(|| self.generated_tokens as f64 / self.latency_s)
    }
}

/// What the cloud's counters moved by during one level ([`ServerStats`] after − before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerDelta {
    /// Batched target forward passes (iterations).
    pub iterations: u64,
    /// Rows (token positions) over those passes.
    pub rows: u64,
    /// Of `rows`, prompt positions.
    pub prefill_rows: u64,
    /// Seconds the target spent in forward passes.
    pub busy_s: f64,
    /// Hellos refused `busy`.
    pub refused_hellos: u64,
}

impl ServerDelta {
    /// `after − before` (saturating: counters never go back, but a restarted server would).
    pub fn between(before: &ServerStats, after: &ServerStats) -> Self {
        Self {
            iterations: after.iterations.saturating_sub(before.iterations),
            rows: after.rows.saturating_sub(before.rows),
            prefill_rows: after.prefill_rows.saturating_sub(before.prefill_rows),
            busy_s: (after.busy_s - before.busy_s).max(0.0),
            refused_hellos: after.refused_hellos.saturating_sub(before.refused_hellos),
        }
    }
}

/// One system at one load level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelRun {
    /// The system.
    pub system: String,
    /// The load.
    pub load: Load,
    /// Its requests in start order.
    pub requests: Vec<RequestRecord>,
    /// From the level's start until its last request ended, seconds.
    pub duration_s: f64,
    /// The cloud's counters over the level (None: a remote cloud).
    pub server: Option<ServerDelta>,
}

/// What a request task needs, shared by all of a level's tasks.
struct Ctx {
    cloud: Cloud,
    edge: Arc<dyn EdgeFactory>,
    prompts: Arc<Vec<Vec<u32>>>,
    phase_s: f64,
    start: Instant,
}

impl Ctx {
    /// Runs request `seq` for `edge`, started at `started`, over `base` (the level's link,
    /// shifted here to the edge's phase); returns its record and the memory it leaves.
    async fn request(
        &self,
        base: Option<LinkConfig>,
        edge: usize,
        seq: usize,
        started: Instant,
        memory: Option<SessionMemory>,
    ) -> (RequestRecord, Option<SessionMemory>) {
        let prompt_ix = seq % self.prompts.len();
        let prompt = self.prompts[prompt_ix].clone();
        let prompt_tokens = prompt.len();
        let since_start = started.saturating_duration_since(self.start).as_secs_f64();
        let offset = edge as f64 * self.phase_s + since_start;
        let link =
            base.map(|l| l.shifted(Duration::try_from_secs_f64(offset).unwrap_or(Duration::MAX)));
        let mut first: Option<Instant> = None;
        let mut committed: Vec<u32> = Vec::new();
        let outcome = {
            let mut on_commit = |ids: &[u32]| {
                if first.is_none() && !ids.is_empty() {
                    first = Some(Instant::now());
                }
                committed.extend_from_slice(ids);
            };
            match self.edge.edge(memory) {
                Ok((cfg, drafter)) => {
                    self.cloud
                        .generate(link, cfg, drafter, prompt, &mut on_commit)
                        .await
                }
                Err(e) => Err(format!("setting up the edge: {e}")),
            }
        };
        let end = Instant::now();
        let mut rec = RequestRecord {
            seq,
            edge,
            prompt: prompt_ix,
            start_s: since_start,
            ttft_s: first.map(|f| f.saturating_duration_since(started).as_secs_f64()),
            latency_s: end.saturating_duration_since(started).as_secs_f64(),
            generated_tokens: committed.len(),
            prompt_tokens,
            target_forward_passes: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
            uplink_bytes: 0,
            downlink_bytes: 0,
            tokens: Vec::new(),
            error: None,
        };
        match outcome {
            Ok(s) => {
                rec.generated_tokens = s.generated_tokens;
                rec.target_forward_passes = s.target_forward_passes;
                rec.drafted_tokens = s.drafted_tokens;
                rec.accepted_tokens = s.accepted_tokens;
                rec.uplink_bytes = s.uplink_bytes;
                rec.downlink_bytes = s.downlink_bytes;
                rec.tokens = s.tokens;
                (rec, s.memory)
            }
            Err(e) => {
                rec.tokens = committed;
                rec.error = Some(e);
                (rec, None)
            }
        }
    }
}

/// Runs `system` at `load` against `cloud` until `settings.bounds` stop it, and returns every
/// request's record with the cloud's counters over the level.
///
/// Closed loop: `edges` tasks, each an edge that carries its [`SessionMemory`] from one
/// request to the next (as one device would), take request numbers from a shared counter.
/// Open loop: one task per arrival, started at its time of [`poisson_arrivals`] (seeded with
/// `settings.seed`), each a fresh edge.
///
/// # Errors
/// [`LoadError::BadSetting`] for an empty prompt list, a bad load or phase;
/// [`LoadError::Task`] when a request task panicked. Failed requests are not errors: they
/// are recorded.
pub async fn run_level(
    cloud: &Cloud,
    system: &System,
    load: Load,
    settings: &LevelSettings,
) -> Result<LevelRun, LoadError> {
    load.check()?;
    if settings.prompts.is_empty() {
        return Err(LoadError::BadSetting("the workload has no prompts".into()));
    }
    if !(settings.phase_s.is_finite() && settings.phase_s >= 0.0) {
        return Err(LoadError::BadSetting(format!(
            "the trace phase must be a non-negative number of seconds, got {}",
            settings.phase_s
        )));
    }
    let bounds = settings.bounds;
    let before = cloud.stats();
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        cloud: cloud.clone(),
        edge: system.edge.clone(),
        prompts: settings.prompts.clone(),
        phase_s: settings.phase_s,
        start,
    });
    let mut tasks: JoinSet<Vec<RequestRecord>> = JoinSet::new();
    match load {
        Load::Closed { edges } => {
            let tickets = Arc::new(AtomicUsize::new(0));
            let deadline = bounds.duration.map(|d| start + d);
            for e in 0..edges {
                let (ctx, tickets) = (ctx.clone(), tickets.clone());
                // Link models are Send but not Sync: each task holds its own copy.
                let link = settings.link.clone();
                tasks.spawn(async move {
                    let mut out = Vec::new();
                    let mut memory = None;
                    loop {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        let seq = tickets.fetch_add(1, Ordering::SeqCst);
                        if bounds.requests.is_some_and(|m| seq >= m) {
                            break;
                        }
                        let (rec, mem) = ctx
                            .request(link.clone(), e, seq, Instant::now(), memory.take())
                            .await;
                        memory = mem;
                        out.push(rec);
                    }
                    out
                });
            }
        }
        Load::Open { rate_per_s } => {
            let arrivals =
                poisson_arrivals(rate_per_s, settings.seed, bounds.requests, bounds.duration)?;
            for (seq, at) in arrivals.into_iter().enumerate() {
                let ctx = ctx.clone();
                let link = settings.link.clone();
                let t = start + at;
                tasks.spawn(async move {
                    tokio::time::sleep_until(t).await;
                    vec![ctx.request(link, seq, seq, t, None).await.0]
                });
            }
        }
    }
    let mut requests = Vec::new();
    while let Some(r) = tasks.join_next().await {
        requests.extend(r.map_err(|e| LoadError::Task(e.to_string()))?);
    }
    let duration_s = start.elapsed().as_secs_f64();
    requests.sort_by_key(|r| r.seq);
    let server = match (before, cloud.stats()) {
        (Some(b), Some(a)) => Some(ServerDelta::between(&b, &a)),
        _ => None,
    };
    Ok(LevelRun {
        system: system.name.clone(),
        load,
        requests,
        duration_s,
        server,
    })
}

/// Runs every system at every load level, systems one after another, each through `loads`
/// in the order given; `on_level` sees each level as it ends (progress).
///
/// # Errors
/// As [`run_level`].
pub async fn run_sweep(
    cloud: &Cloud,
    systems: &[System],
    loads: &[Load],
    settings: &LevelSettings,
    on_level: &mut (dyn FnMut(&LevelRun) + Send),
) -> Result<Vec<LevelRun>, LoadError> {
    let mut out = Vec::new();
    for system in systems {
        for &load in loads {
            let run = run_level(cloud, system, load, settings).await?;
            on_level(&run);
            out.push(run);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ttft: Option<f64>, latency: f64, n: usize, error: bool) -> RequestRecord {
        RequestRecord {
            seq: 0,
            edge: 0,
            prompt: 0,
            start_s: 0.0,
            ttft_s: ttft,
            latency_s: latency,
            generated_tokens: n,
            prompt_tokens: 3,
            target_forward_passes: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
            uplink_bytes: 0,
            downlink_bytes: 0,
            tokens: Vec::new(),
            error: error.then(|| "x".to_string()),
        }
    }

    #[test]
    fn tpot_and_goodput_follow_their_definitions() {
        let r = record(Some(0.5), 2.5, 11, false);
        // (2.5 − 0.5) / (11 − 1)
        assert!((r.tpot_s().unwrap() - 0.2).abs() < 1e-12);
        assert!((r.goodput_tok_s().unwrap() - 4.4).abs() < 1e-12);
        assert_eq!(record(Some(0.5), 0.5, 1, false).tpot_s(), None);
        assert_eq!(record(Some(0.5), 2.0, 5, true).tpot_s(), None);
        assert_eq!(record(Some(0.5), 2.0, 5, true).goodput_tok_s(), None);
        assert_eq!(record(None, 2.0, 0, false).tpot_s(), None);
    }

    #[test]
    fn bounds_and_loads_are_checked() {
        assert!(Bounds::new(None, None).is_err());
        assert!(Bounds::new(Some(0), None).is_err());
        assert!(Bounds::new(None, Some(0.0)).is_err());
        assert!(Bounds::new(None, Some(f64::NAN)).is_err());
        let b = Bounds::new(Some(8), Some(1.5)).unwrap();
        assert_eq!(
            (b.requests(), b.duration()),
            (Some(8), Some(Duration::from_millis(1500)))
        );
        assert!(Load::Closed { edges: 0 }.check().is_err());
        assert!(Load::Open { rate_per_s: 0.0 }.check().is_err());
        assert!(Load::Open { rate_per_s: 2.5 }.check().is_ok());
        assert_eq!(Load::Closed { edges: 4 }.label(), "4 edges");
        assert_eq!(Load::Open { rate_per_s: 2.5 }.label(), "2.5 req/s");
        assert_eq!(
            serde_json::to_value(Load::Closed { edges: 4 }).unwrap(),
            serde_json::json!({"kind": "closed", "edges": 4})
        );
    }
}
