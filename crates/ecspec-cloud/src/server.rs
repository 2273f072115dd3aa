//! The verifier server: accepts edge sessions over TCP, one task per connection, each with
//! its own target KV cache; one session's failure never touches the others. A connection's task
//! does the protocol; its target work (prefill, rounds, streaming steps) goes to the server's
//! [`Scheduler`], which batches the work of every session into shared forward passes.
//!
//! **Admission.** A session reserves its worst-case KV cache (prompt + token budget + one
//! block of [`MAX_BLOCK_TOKENS`]) from the KV budget when its Hello is accepted, and returns it
//! when it ends, so the caches never outgrow the budget. A Hello that does not fit waits, in
//! arrival order (a fair semaphore), for at most `admission_wait`, in a queue of at most
//! `max_waiting`; beyond either it is refused `Busy` with a retry hint.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ecspec_proto::{ErrorCode, ErrorReply, FrameError, Hello, Message, SetVersion, VersionAck};
use ecspec_spec::compact::CompactDist;
use ecspec_spec::compute::CloudCompute;
use ecspec_transport::tls::{looks_like_tls, TlsServer};
use ecspec_transport::{Connection, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::auth::AuthTokens;
use crate::clients::{ClientId, ClientSessions, ClientSlot, RoundPacer};
use crate::handshake::{check_hello, Limits, SessionPlan};
use crate::metrics::Metrics;
use crate::model::{CloudModel, TargetVersion};
use crate::scheduler::{Scheduler, SchedulerConfig, Work};
use crate::target::{RoundError, RoundOutcome, TargetSession};
use crate::wire::{self, Command, Opening, MAX_BLOCK_TOKENS};

/// The KV budget is counted in KiB so a semaphore's `u32` permits cover terabytes.
const KV_UNIT: u64 = 1024;

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Sessions served at once; a Hello beyond them gets a "busy" error and a close.
    pub max_sessions: usize,
    /// Connections that have not opened a session yet; more get a "busy" error at once.
    pub max_pending: usize,
    /// A connection must send its first whole frame within this time.
    pub handshake_timeout: Duration,
    /// A session with no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Cap on any session's token budget.
    pub max_new_tokens: usize,
    /// How long shutdown waits for running sessions before aborting them.
    pub shutdown_grace: Duration,
    /// Virtual clock: prefill and verification take these modelled times (slept on tokio's
    /// clock, which the caller pauses) and are reported as such. None: the live clock.
    pub virtual_compute: Option<CloudCompute>,
    /// Rows (token positions, all sessions together) one batched forward pass takes at most;
    /// a drafted block larger than this still runs, alone (`--max-batch-tokens`).
    pub max_batch_tokens: usize,
    /// Bytes of target KV cache all sessions may hold together (`--kv-budget`). A session
    /// reserves its worst case (prompt + token budget + one block) when admitted.
    pub kv_budget_bytes: u64,
    /// Hellos that may wait for KV budget at once; more are refused `busy` at once.
    pub max_waiting: usize,
    /// How long a Hello waits for KV budget before it is refused `busy`.
    pub admission_wait: Duration,
    /// Cap on a session's K_max (most drafted tokens per block), 1 ..= [`MAX_BLOCK_TOKENS`];
    /// agreed per session in the handshake (`--max-block-tokens`).
    pub max_block_tokens: usize,
    /// Longest prompt a Hello may carry, in tokens (`--max-prompt-tokens`).
    pub max_prompt_tokens: usize,
    /// Tokens a Hello must carry one of (`--auth-token-file`); None: no authentication.
    pub auth: Option<AuthTokens>,
    /// Sessions one client (auth token, or peer address) may hold at once.
    pub max_sessions_per_client: usize,
    /// Rounds per second one session may send (later rounds wait); None: unpaced.
    pub max_rounds_per_s: Option<f64>,
    /// TLS (`--tls-cert`/`--tls-key`): every connection must open with a TLS handshake; a
    /// plaintext one gets one plaintext error saying so. None: plaintext.
    pub tls: Option<TlsServer>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_sessions: 64,
            max_pending: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_new_tokens: 4096,
            shutdown_grace: Duration::from_secs(5),
            virtual_compute: None,
            max_batch_tokens: 512,
            kv_budget_bytes: 4 << 30,
            max_waiting: 64,
            admission_wait: Duration::from_secs(10),
            max_block_tokens: MAX_BLOCK_TOKENS,
            max_prompt_tokens: usize::MAX,
            auth: None,
            max_sessions_per_client: 64,
            max_rounds_per_s: None,
            tls: None,
        }
    }
}

/// Shared state of a running server.
pub struct CloudServer {
    /// The target versions served (and which one new sessions get).
    model: Arc<CloudModel>,
    /// Limits.
    config: ServerConfig,
    /// Session ids handed out so far.
    next_session: AtomicU64,
    /// One permit per live session, taken once its Hello is accepted (so idle sockets that
    /// never open a session cannot lock real sessions out).
    slots: Arc<Semaphore>,
    /// One permit per connection still before its handshake.
    pending: Arc<Semaphore>,
    /// The KV budget in KiB: a session holds its reservation's permits while it runs.
    kv: Arc<Semaphore>,
    /// Hellos waiting for KV budget now.
    waiting: AtomicUsize,
    /// Batches every session's target work.
    scheduler: Arc<Scheduler>,
    /// What `GET /metrics` exports.
    metrics: Arc<Metrics>,
    /// Each client's open sessions.
    clients: ClientSessions,
}

impl CloudServer {
    /// A server for `model`.
    pub fn new(model: CloudModel, config: ServerConfig) -> Arc<Self> {
        // tokio caps a semaphore's permits; more sessions than that could never be served anyway.
        let cap = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(cap(config.max_sessions)));
        let pending = Arc::new(Semaphore::new(cap(config.max_pending)));
        let kv_units = (config.kv_budget_bytes / KV_UNIT).min(u64::from(u32::MAX)) as usize;
        let kv = Arc::new(Semaphore::new(cap(kv_units)));
        let metrics = Metrics::new(config.kv_budget_bytes);
        let scheduler = Scheduler::new(
            SchedulerConfig {
                max_batch_tokens: config.max_batch_tokens,
                // An eighth of the budget: a prompt always moves, rounds keep most of it.
                min_prefill_chunk: (config.max_batch_tokens / 8).max(1),
                virtual_compute: config.virtual_compute,
            },
            Arc::clone(&metrics),
        );
        let clients = ClientSessions::new(config.max_sessions_per_client);
        Arc::new(Self {
            model: Arc::new(model),
            config,
            next_session: AtomicU64::new(1),
            slots,
            pending,
            kv,
            waiting: AtomicUsize::new(0),
            scheduler,
            metrics,
            clients,
        })
    }

    /// The server's metrics (served by [`crate::metrics::serve_metrics`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// KV-cache bytes a session with `prompt_len` prompt tokens and a budget of
    /// `max_new_tokens` reserves: every position it can hold at once.
    pub fn kv_reservation(&self, prompt_len: usize, max_new_tokens: usize) -> u64 {
        let per = self.model.active().transformer.kv_bytes_per_position();
        (prompt_len + max_new_tokens + MAX_BLOCK_TOKENS) as u64 * per
    }

    /// The served model.
    pub fn model(&self) -> &CloudModel {
        &self.model
    }

    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        let m = &self.metrics;
        ServerStats {
            iterations: m.iterations.get(),
            rows: m.rows.get(),
            prefill_rows: m.prefill_rows.get(),
            busy_s: m.busy_seconds.get(),
            sessions_running: m.sessions_running.get().max(0) as usize,
            sessions_waiting: m.sessions_waiting.get().max(0) as usize,
            refused_hellos: m.refused_hellos.get(),
            kv_bytes_used: m.kv_bytes_used.get().max(0) as u64,
            kv_budget_bytes: self.config.kv_budget_bytes,
        }
    }

    /// Reserves `bytes` of the KV budget for a new session, waiting in arrival order while
    /// the budget is spent (see the module docs). Err: the `Busy` refusal and its retry hint
    /// in milliseconds.
    async fn admit(
        self: &Arc<Self>,
        bytes: u64,
    ) -> Result<(KvReservation, Duration), (String, u32)> {
        let units = bytes.div_ceil(KV_UNIT);
        let budget_units = self.config.kv_budget_bytes / KV_UNIT;
        let retry_ms = 1000;
        if units > budget_units || units > u64::from(u32::MAX) {
            let m = format!(
                "the request needs {bytes} bytes of KV cache, more than this server's whole \
                 budget of {} bytes: ask for fewer tokens",
                self.config.kv_budget_bytes
            );
            return Err((m, 0));
        }
        // The wait is reported only when there was one: a HelloAck's size must not depend on
        // how long an uncontended acquire took.
        let mut waited = Duration::ZERO;
        let permit = match self.kv.clone().try_acquire_many_owned(units as u32) {
            Ok(p) => p,
            Err(_) => {
                let t0 = tokio::time::Instant::now();
                let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _left = Decrement(&self.waiting, &self.metrics.sessions_waiting);
                self.metrics.sessions_waiting.inc();
                if waiting >= self.config.max_waiting {
                    let m = format!(
                        "the server is busy: its KV cache budget is spent and {waiting} requests \
                         are already waiting; retry in {retry_ms} ms"
                    );
                    return Err((m, retry_ms));
                }
                let acquire = self.kv.clone().acquire_many_owned(units as u32);
                match tokio::time::timeout(self.config.admission_wait, acquire).await {
                    Ok(Ok(p)) => {
                        // At least 1 µs: a wait is reported as one.
                        waited = t0.elapsed().max(Duration::from_micros(1));
                        p
                    }
                    _ => {
                        let m = format!(
                            "the server is busy: no KV cache budget came free within {:?}; \
                             retry in {retry_ms} ms",
                            self.config.admission_wait
                        );
                        return Err((m, retry_ms));
                    }
                }
            }
        };
        self.metrics.kv_bytes_used.inc_by(bytes as i64);
        self.metrics.sessions_running.inc();
        let r = KvReservation {
            _permit: permit,
            bytes,
            metrics: Arc::clone(&self.metrics),
        };
        Ok((r, waited))
    }
}

/// A snapshot of the server's counters (what `GET /metrics` exports).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerStats {
    /// Batched target forward passes run.
    pub iterations: u64,
    /// Rows (token positions) over all passes; `rows / iterations` is the mean batch.
    pub rows: u64,
    /// Of `rows`, prompt positions (prefill chunks).
    pub prefill_rows: u64,
    /// Seconds spent in forward passes (wall clock, or modelled on the virtual clock).
    pub busy_s: f64,
    /// Sessions admitted and not yet ended.
    pub sessions_running: usize,
    /// Hellos waiting for KV budget.
    pub sessions_waiting: usize,
    /// Hellos refused `busy`.
    pub refused_hellos: u64,
    /// KV-cache bytes reserved by running sessions.
    pub kv_bytes_used: u64,
    /// The KV budget (`ServerConfig::kv_budget_bytes`).
    pub kv_budget_bytes: u64,
}

/// A session's share of the KV budget, returned when dropped.
struct KvReservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    metrics: Arc<Metrics>,
}

impl Drop for KvReservation {
    fn drop(&mut self) {
        self.metrics.kv_bytes_used.dec_by(self.bytes as i64);
        self.metrics.sessions_running.dec();
    }
}

/// Decrements a waiting count (and its gauge) when a waiting Hello is done waiting.
struct Decrement<'a>(
    &'a AtomicUsize,
    &'a prometheus_client::metrics::gauge::Gauge,
);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.dec();
    }
}

/// Whether a peer may send management requests ([`SetVersion`]): loopback only (IPv4
/// `127.0.0.0/8`, IPv6 `::1`, and IPv4-mapped loopback), so switching versions needs a shell
/// on the cloud machine and nothing else.
pub fn management_allowed(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

/// Serves a management connection opened by `first` (request id `req`): each [`SetVersion`]
/// is answered with a [`VersionAck`] or an [`ErrorReply`], until [`Close`] or end of stream.
/// A non-loopback peer gets `Forbidden` and the connection is closed.
async fn manage(
    conn: &mut Connection<impl AsyncRead + AsyncWrite + Unpin>,
    server: &CloudServer,
    peer: Option<IpAddr>,
    mut req: u32,
    mut request: SetVersion,
) -> Result<(), TransportError> {
    if !peer.is_some_and(management_allowed) {
        let who = peer.map_or("an unknown address".to_string(), |p| p.to_string());
        tracing::warn!("refused a management request from {who}");
        let m = format!(
            "management requests are accepted only from loopback; this one came from {who}"
        );
        conn.reply(&ErrorReply::new(ErrorCode::Forbidden, m).into(), req)
            .await?;
        return Ok(());
    }
    let idle = Some(server.config.idle_timeout);
    loop {
        let model = &server.model;
        let reply = if request.version.is_empty() {
            let active = model.active_name().to_string();
            Message::VersionAck(VersionAck {
                previous: active.clone(),
                active,
                versions: model.version_names(),
            })
        } else {
            match model.set_active(&request.version) {
                Ok(previous) => {
                    tracing::info!("active target version: {previous} → {}", request.version);
                    Message::VersionAck(VersionAck {
                        active: request.version.clone(),
                        previous,
                        versions: model.version_names(),
                    })
                }
                Err(e) => bad_request(e.to_string()),
            }
        };
        conn.reply(&reply, req).await?;
        match conn.read_message(idle).await {
            Ok(Some((r, Message::SetVersion(next)))) => (req, request) = (r, next),
            Ok(Some((_, Message::Close(_)))) | Ok(None) => return Ok(()),
            Ok(Some((r, other))) => {
                let m = format!(
                    "unexpected {:?} on a management connection",
                    other.message_type()
                );
                conn.reply(&bad_request(m), r).await?;
                return Ok(());
            }
            Err(TransportError::Frame(e)) => return reply_frame_error(conn, &e).await,
            Err(e) => return Err(e),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, then waits up to
/// `shutdown_grace` for running sessions.
///
/// # Errors
/// None at run time: accept errors are logged and retried with back-off.
pub async fn serve(
    listener: TcpListener,
    server: Arc<CloudServer>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut sessions = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    match server.pending.clone().try_acquire_owned() {
                        Ok(permit) => {
                            sessions.spawn(async move {
                                let ip = Some(peer.ip());
                                if let Err(e) = handle_tcp(stream, ip, server, permit).await {
                                    tracing::info!(%peer, "session ended with an error: {e}");
                                }
                            });
                        }
                        // A TLS client cannot read a plaintext reply (it would report a corrupt
                        // record): it gets a close, which its edge retries with backoff.
                        Err(_) if server.config.tls.is_some() => {
                            tracing::info!(%peer, "too many pending connections; closed");
                            drop(stream);
                        }
                        Err(_) => {
                            let m = format!(
                                "the server is busy: {} connections are waiting to open a session",
                                server.config.max_pending
                            );
                            sessions.spawn(refuse_busy(stream, m));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    let grace = server.config.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        sessions.shutdown().await;
    }
}

/// A TCP connection: straight to [`handle_connection`], or through the TLS handshake first
/// when the server has TLS (within the handshake deadline). A plaintext connection to a TLS
/// server gets one plaintext `Unauthorized` error saying so, and is closed.
async fn handle_tcp(
    stream: TcpStream,
    peer: Option<IpAddr>,
    server: Arc<CloudServer>,
    pending: OwnedSemaphorePermit,
) -> Result<(), TransportError> {
    let Some(tls) = server.config.tls.clone() else {
        return handle_connection(stream, peer, server, pending).await;
    };
    let deadline = server.config.handshake_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
        Err(_) => return Err(TransportError::Timeout(deadline)),
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) if !looks_like_tls(first[0]) => {
            server.metrics.refused_hellos.inc();
            let mut conn = Connection::new(stream);
            let m = "this cloud requires TLS: connect with --tls-ca (plaintext refused)";
            // Request id 0: the reply answers no frame that was read.
            conn.reply(&ErrorReply::new(ErrorCode::Unauthorized, m).into(), 0)
                .await?;
            let _ = conn.shutdown().await;
            return Ok(());
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
    }
    let stream = tokio::time::timeout(deadline, tls.accept(stream))
        .await
        .map_err(|_| TransportError::Timeout(deadline))??;
    handle_connection(stream, peer, server, pending).await
}

async fn refuse_busy(stream: TcpStream, message: String) {
    let mut conn = Connection::new(stream);
    let msg = ErrorReply::busy(message, 1000).into();
    // Request id 0: this reply answers no frame (the connection's frames are never read).
    let _ = conn.reply(&msg, 0).await;
    let _ = conn.shutdown().await;
}

/// Answers a frame that could not be read ([`FrameError::reply`]); the connection ends after.
async fn reply_frame_error<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    e: &FrameError,
) -> Result<(), TransportError> {
    let (reply, request_id) = e.reply();
    conn.reply(&reply.into(), request_id).await
}

/// A `BadRequest` reply saying what was wrong.
fn bad_request(message: impl Into<String>) -> Message {
    ErrorReply::new(ErrorCode::BadRequest, message).into()
}

/// Runs one target round through the scheduler (batched with the other sessions' work).
async fn run_round(
    server: &CloudServer,
    target: TargetSession,
    draft: Vec<u32>,
    dists: Vec<CompactDist>,
) -> Result<(TargetSession, Result<RoundOutcome, RoundError>), TransportError> {
    let k = draft.len();
    let (target, r) = server
        .scheduler
        .submit(target, Work::Round { draft, dists })
        .await
        .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
    if let Ok(out) = &r {
        server.metrics.record_round(k, out.accepted);
    }
    Ok((target, r))
}

/// Generates up to `n` tokens on the target's own, one verdict each, numbered `first`,
/// `first + 1`, …, stopping when the session finishes. A failed step is reported with an
/// [`ErrorReply`] and ends the stream (nothing of it was committed).
async fn stream_tokens<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    server: &CloudServer,
    mut target: TargetSession,
    first: u32,
    n: u32,
    req: u32,
) -> Result<TargetSession, TransportError> {
    for i in 0..n {
        if target.is_finished() {
            break;
        }
        let (t, r) = run_round(server, target, Vec::new(), Vec::new()).await?;
        target = t;
        match r {
            Ok(out) => {
                conn.reply(&wire::verdict(first.wrapping_add(i), &out), req)
                    .await?
            }
            Err(e) => {
                conn.reply(&bad_request(e.to_string()), req).await?;
                break;
            }
        }
    }
    Ok(target)
}

/// The cloud-only baseline: generates and streams every token without waiting for the edge,
/// verdicts numbered 1, 2, … (each sent with its round as request id). None: a step failed,
/// was reported `Internal`, and the session ends.
async fn autoregress<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    server: &CloudServer,
    mut target: TargetSession,
) -> Result<Option<TargetSession>, TransportError> {
    let mut round = 0u32;
    while !target.is_finished() {
        round += 1;
        let (t, r) = run_round(server, target, Vec::new(), Vec::new()).await?;
        target = t;
        match r {
            Ok(out) => conn.reply(&wire::verdict(round, &out), round).await?,
            Err(e) => {
                let reply = ErrorReply::new(ErrorCode::Internal, e.to_string()).into();
                conn.write_message(&reply).await?;
                return Ok(None);
            }
        }
    }
    Ok(Some(target))
}

/// Prefills `target` through the scheduler while watching the connection: when the edge
/// goes away (end of stream or an error) the prefill is abandoned at its next chunk boundary
/// and `None` is returned. The edge sends nothing before the `HelloAck`; a frame that arrives
/// anyway is a protocol error and ends the session the same way.
async fn prefill<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    server: &CloudServer,
    target: TargetSession,
) -> Result<Option<crate::scheduler::Finished>, TransportError> {
    let work = server.scheduler.submit(target, Work::Prefill);
    tokio::select! {
        done = work => done
            .map(Some)
            .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string()))),
        _ = conn.read_message(None) => Ok(None),
    }
}

/// Serves one session over any byte stream (an in-memory pipe under the virtual clock, say);
/// management requests are refused (no peer address). Waits for a free pre-handshake slot.
///
/// # Errors
/// The stream failed.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    server: Arc<CloudServer>,
) -> Result<(), TransportError> {
    let permit = server
        .pending
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
    handle_connection(stream, None, server, permit).await
}

/// One connection: the [`handshake`], then the [`run_session`] loop (a management connection
/// is served inside the handshake).
async fn handle_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: Option<IpAddr>,
    server: Arc<CloudServer>,
    pending: OwnedSemaphorePermit,
) -> Result<(), TransportError> {
    let mut conn = Connection::new(stream);
    match handshake(&mut conn, &server, peer, pending).await? {
        Some(session) => run_session(&mut conn, &server, session).await,
        None => Ok(()),
    }
}

/// A session past its handshake (its HelloAck sent): what the session loop runs on.
struct OpenSession {
    /// Cloud-chosen id, for logs.
    id: u64,
    /// The target's KV cache, the prompt prefilled.
    target: TargetSession,
    /// The Hello's validated settings.
    plan: SessionPlan,
    /// The Hello's request id (the opening stream's verdicts answer it).
    req: u32,
    /// The session slot, held until the session ends.
    slot: OwnedSemaphorePermit,
    /// The session's share of the KV budget, returned when it ends.
    kv: KvReservation,
    /// The client's count of open sessions, held until the session ends.
    client: ClientSlot,
}

/// What admission gave a session, before its prefill.
struct Admitted {
    target: TargetSession,
    plan: SessionPlan,
    slot: OwnedSemaphorePermit,
    kv: KvReservation,
    client: ClientSlot,
    /// How long the Hello waited for KV budget.
    queued: Duration,
}

/// Reads a connection's first frame, within the handshake deadline. None: nothing opens (the
/// stream ended, or the frame was bad or not an opening and has been answered).
async fn read_opening<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    server: &CloudServer,
) -> Result<Option<(u32, Opening)>, TransportError> {
    match conn
        .read_message(Some(server.config.handshake_timeout))
        .await
    {
        Ok(Some((req, message))) => match Opening::from_frame(message) {
            Ok(opening) => Ok(Some((req, opening))),
            Err(e) => {
                conn.reply(&e.reply(), req).await?;
                Ok(None)
            }
        },
        Ok(None) => Ok(None),
        Err(TransportError::Frame(e)) => reply_frame_error(conn, &e).await.map(|()| None),
        Err(e) => Err(e),
    }
}

/// The handshake: the first frame, the Hello's check and admission, the prefill, the HelloAck.
/// None: the connection ends here (nothing opened, a refusal sent, a management connection
/// served, or the edge left during the prefill).
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    server: &Arc<CloudServer>,
    peer: Option<IpAddr>,
    pending: OwnedSemaphorePermit,
) -> Result<Option<OpenSession>, TransportError> {
    let (req, hello) = match read_opening(conn, server).await? {
        Some((req, Opening::Hello(h))) => (req, h),
        Some((req, Opening::SetVersion(v))) => {
            manage(conn, server, peer, req, v).await?;
            return Ok(None);
        }
        None => return Ok(None),
    };
    // Before any compute: a missing or wrong token is answered and the connection closed.
    let client = match server.authorize(&hello, peer) {
        Ok(c) => c,
        Err(reply) => {
            server.metrics.refused_hellos.inc();
            conn.reply(&reply, req).await?;
            return Ok(None);
        }
    };
    let session_id = server.next_session.fetch_add(1, Ordering::Relaxed);
    // The session's version, fixed from here to its end (see `CloudModel`).
    let version = server.model.active();
    let mut pending = Some(pending);
    let admitted = match server
        .admit_session(session_id, client, &version, &hello, &mut pending)
        .await
    {
        Ok(a) => a,
        Err(refusal) => {
            conn.reply(&refusal, req).await?;
            return Ok(None);
        }
    };
    let Some((target, first)) = prefill(conn, server, admitted.target).await? else {
        tracing::info!(session_id, "the edge left during the prefill");
        return Ok(None);
    };
    let first = match first {
        Ok(f) => f,
        Err(e) => {
            conn.reply(&bad_request(e.to_string()), req).await?;
            return Ok(None);
        }
    };
    let ack = wire::accepted_ack(
        session_id,
        &version.name,
        &server.model,
        &first,
        admitted.queued,
        &admitted.plan,
    );
    conn.reply(&ack, req).await?;
    Ok(Some(OpenSession {
        id: session_id,
        target,
        plan: admitted.plan,
        req,
        slot: admitted.slot,
        kv: admitted.kv,
        client: admitted.client,
    }))
}

impl CloudServer {
    /// Who a Hello comes from: the auth token it carries when the cloud requires one (checked
    /// in constant time, [`AuthTokens::check`]), else its peer.
    /// Err: the `Unauthorized` reply to send before closing.
    fn authorize(&self, hello: &Hello, peer: Option<IpAddr>) -> Result<ClientId, Message> {
        let Some(tokens) = &self.config.auth else {
            return Ok(peer.map_or(ClientId::Local, ClientId::Peer));
        };
        let why = if hello.auth_token.is_empty() {
            "unauthorized: this cloud requires an auth token and the Hello carries none \
             (start the edge with --auth-token-file)"
        } else if let Some(i) = tokens.check(&hello.auth_token) {
            return Ok(ClientId::Token(i));
        } else {
            "unauthorized: the Hello's auth token is not one this cloud accepts"
        };
        tracing::info!(?peer, "{why}");
        Err(ErrorReply::new(ErrorCode::Unauthorized, why).into())
    }

    /// The per-session limits Hellos are checked against.
    fn limits(&self) -> Limits {
        Limits {
            max_new_tokens: self.config.max_new_tokens,
            max_block_tokens: self.config.max_block_tokens.clamp(1, MAX_BLOCK_TOKENS),
            max_prompt_tokens: self.config.max_prompt_tokens,
        }
    }

    /// Admits the session a Hello asks for on `version`: [`check_hello`], a session slot (the
    /// connection's pre-handshake permit, `pending`, is released once it has one), its target
    /// session, and its KV reservation (waiting for budget, see [`CloudServer::admit`]).
    /// Err: the reply refusing it (a `HelloAck` saying why, `Busy`, or `BadRequest`).
    async fn admit_session(
        self: &Arc<Self>,
        session_id: u64,
        client: ClientId,
        version: &TargetVersion,
        hello: &Hello,
        pending: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Admitted, Message> {
        let model = &self.model;
        let plan = check_hello(hello, model, &self.limits()).map_err(|refusal| {
            tracing::info!(session_id, "refused: {}", refusal.message);
            wire::refused_ack(session_id, &version.name, model, refusal.message)
        })?;
        let client = self.clients.take(client).map_err(|m| {
            self.metrics.refused_hellos.inc();
            tracing::info!(session_id, "refused: {m}");
            Message::from(ErrorReply::busy(m, 1000))
        })?;
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.refused_hellos.inc();
            let m = format!(
                "the server is busy: all {} session slots are taken; retry in 1000 ms",
                self.config.max_sessions
            );
            return Err(ErrorReply::busy(m, 1000).into());
        };
        drop(pending.take());
        let target = TargetSession::new(
            version.transformer.clone(),
            &hello.prompt,
            plan.rule,
            plan.params,
            model.stop_tokens.clone(),
            plan.max_new_tokens,
        )
        .map_err(|e| bad_request(e.to_string()))?;
        let bytes = self.kv_reservation(hello.prompt.len(), plan.max_new_tokens);
        let (kv, queued) = self.admit(bytes).await.map_err(|(m, retry)| {
            self.metrics.refused_hellos.inc();
            tracing::info!(session_id, "refused: {m}");
            Message::from(ErrorReply::busy(m, retry))
        })?;
        Ok(Admitted {
            target,
            plan,
            slot,
            kv,
            client,
            queued,
        })
    }
}

/// The session loop: first the stream the Hello asked for (an opening stream, or the whole
/// cloud-only generation), then one [`Command`] per frame until Close, the edge's error, the
/// end of the stream, or a protocol violation (answered, then the connection ends).
async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    server: &CloudServer,
    session: OpenSession,
) -> Result<(), TransportError> {
    // `slot` and `kv` are held until the session ends.
    let OpenSession {
        id: session_id,
        mut target,
        plan,
        req,
        slot: _slot,
        kv: _kv,
        client: _client,
    } = session;
    let mut pacer = RoundPacer::new(server.config.max_rounds_per_s);
    let cap = server.config.max_new_tokens as u32;
    if plan.opening_stream > 1 {
        // The edge asked to start streaming right away (it knows drafting does not pay).
        let n = plan.opening_stream.min(cap);
        target = stream_tokens(conn, server, target, 1, n, req).await?;
    }
    if plan.autoregressive {
        match autoregress(conn, server, target).await? {
            Some(t) => target = t,
            None => return Ok(()),
        }
    }
    let idle = Some(server.config.idle_timeout);
    loop {
        let (req, message) = match conn.read_message(idle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(TransportError::Frame(e)) => return reply_frame_error(conn, &e).await,
            Err(e) => return Err(e),
        };
        match Command::from_frame(message, server.model.vocab_size) {
            Ok(Command::Round { tokens, .. }) if tokens.len() > plan.max_block_tokens => {
                // Refused before any compute; the session goes on.
                let m = format!(
                    "a block of {} drafted tokens is over this session's K_max of {} \
                     (agreed in the handshake)",
                    tokens.len(),
                    plan.max_block_tokens
                );
                conn.reply(&bad_request(m), req).await?;
            }
            Ok(Command::Round {
                round,
                tokens,
                dists,
            }) => {
                pacer.wait().await;
                let (t, r) = run_round(server, target, tokens, dists).await?;
                target = t;
                let reply = match r {
                    Ok(out) => wire::verdict(round, &out),
                    // The round committed nothing; the session stays usable.
                    Err(e) => bad_request(e.to_string()),
                };
                conn.reply(&reply, req).await?;
            }
            Ok(Command::Stream { round, n }) => {
                // The edge falls back to streaming: generate on our own, a verdict each.
                target = stream_tokens(conn, server, target, round, n.min(cap), req).await?;
            }
            Ok(Command::Close) => return Ok(()),
            Ok(Command::PeerError { message }) => {
                tracing::info!(session_id, "edge reported an error: {message}");
                return Ok(());
            }
            Err(e) => {
                conn.reply(&e.reply(), req).await?;
                if e.ends_session() {
                    return Ok(());
                }
            }
        }
    }
}
