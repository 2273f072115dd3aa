//! The real-time emulator: [`emulate`] puts a [`LinkConfig`] between the edge and a real
//! stream, and [`LinkCounters`] counts what crosses it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep_until, Instant};

use crate::config::LinkConfig;
use crate::model::{Direction, LinkModel, PACKET_BYTES};

/// Capacity of the in-memory pipe between the edge and the emulator, bytes per direction
/// (the emulator drains it as fast as the edge writes; it fills only if the edge stops
/// reading what the downlink delivers).
pub const EDGE_BUFFER_BYTES: usize = 64 * 1024;

/// Segments (of up to [`PACKET_BYTES`] bytes) each direction holds between being handed to
/// the link and being delivered, about 24 MiB. When it is full the sender is held back
/// (backpressure, as a full socket buffer would) rather than data being dropped: the link
/// has no loss.
pub const MAX_QUEUED_SEGMENTS: usize = 16 * 1024;

/// Bytes read from a sender at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How far the link has been told to stop. Only ever rises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// The edge dropped its stream: nobody is left to deliver the downlink to. The uplink
    /// still delivers what it holds, then half-closes, like a kernel after `close()`.
    EdgeGone,
    /// An I/O error, or a trace ran out: both directions stop at once.
    Failed,
}

impl Stop {
    fn stops(self, dir: Direction) -> bool {
        match dir {
            Direction::Uplink => self == Stop::Failed,
            Direction::Downlink => self != Stop::Running,
        }
    }
}

/// A piece of the byte stream on its way through one direction.
struct Segment {
    deliver_at: Instant,
    data: Vec<u8>,
    /// Set on the last segment of a chunk.
    chunk_end: Option<ChunkStats>,
}

/// The last chunk one direction delivered.
///
/// A *chunk* is what one read from the sending side returned: usually one `write` of the
/// sender, but writes made while the emulator was busy may be merged, and a write bigger
/// than 64 KiB is split. Times are link times (since [`emulate`] was called) from the link
/// model; the real write happens at that time or within a timer tick (≈ 1 ms) after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkStats {
    /// Size of the chunk, bytes.
    pub bytes: usize,
    /// When the chunk was handed to the link.
    pub handed_at: Duration,
    /// When its last byte was delivered at the far end (model time).
    pub delivered_at: Duration,
    /// Bytes already in the link (handed over, not yet delivered) when it was handed over:
    /// the queue it waited behind.
    pub backlog_bytes: u64,
}

impl ChunkStats {
    /// Time from hand-over to delivery of the last byte: queueing + serialization +
    /// one-way delay.
    pub fn transit(&self) -> Duration {
        self.delivered_at.saturating_sub(self.handed_at)
    }
}

/// What one direction has carried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Bytes delivered to the far end.
    pub bytes: u64,
    /// Chunks delivered (see [`ChunkStats`] for what a chunk is).
    pub chunks: u64,
    /// Bytes handed to the link and not yet delivered, now.
    pub in_flight_bytes: u64,
    /// The most recently delivered chunk.
    pub last_chunk: Option<ChunkStats>,
}

struct DirectionState {
    /// Same as `stats.bytes`; an atomic so the hot counter reads without a lock.
    bytes: AtomicU64,
    stats: Mutex<DirectionStats>,
}

impl DirectionState {
    fn new() -> Self {
        DirectionState {
            bytes: AtomicU64::new(0),
            stats: Mutex::new(DirectionStats::default()),
        }
    }

    /// Records `n` bytes handed to the link; returns the bytes in flight before them.
    fn hand_over(&self, n: usize) -> u64 {
        let mut s = lock(&self.stats);
        let before = s.in_flight_bytes;
        s.in_flight_bytes += n as u64;
        before
    }

    fn deliver(&self, n: usize, chunks: u64, last_chunk: Option<ChunkStats>) {
        let mut s = lock(&self.stats);
        s.bytes += n as u64;
        s.chunks += chunks;
        s.in_flight_bytes = s.in_flight_bytes.saturating_sub(n as u64);
        if last_chunk.is_some() {
            s.last_chunk = last_chunk;
        }
        self.bytes.fetch_add(n as u64, Ordering::Release);
    }
}

/// State shared by the four tasks, the edge's stream and the counters.
struct Shared {
    /// Link time zero.
    start: Instant,
    uplink: DirectionState,
    downlink: DirectionState,
    stop: watch::Sender<Stop>,
    /// The first error that failed the link: given to the edge in place of EOF.
    failure: Mutex<Option<(io::ErrorKind, String)>>,
    live_tasks: AtomicUsize,
    all_done: Notify,
}

impl Shared {
    fn direction(&self, dir: Direction) -> &DirectionState {
        match dir {
            Direction::Uplink => &self.uplink,
            Direction::Downlink => &self.downlink,
        }
    }

    fn stop_state(&self) -> Stop {
        *self.stop.borrow()
    }

    /// Fails the link: records the first error and stops every task.
    fn fail(&self, kind: io::ErrorKind, message: String) {
        tracing::warn!(%message, "emulated link failed");
        lock(&self.failure).get_or_insert((kind, message));
        self.stop.send_modify(|s| *s = Stop::Failed);
    }

    fn failure(&self) -> Option<io::Error> {
        lock(&self.failure)
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts one live task; the last one to end wakes [`LinkCounters::closed`].
struct LiveTask(Arc<Shared>);

impl Drop for LiveTask {
    fn drop(&mut self) {
        if self.0.live_tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_done.notify_waiters();
        }
    }
}

/// Resolves once `dir` must stop.
async fn stopped(stop: &mut watch::Receiver<Stop>, dir: Direction) {
    // An error means the sender is gone, i.e. everything is being torn down: stop too.
    let _ = stop.wait_for(|s| s.stops(dir)).await;
}

/// Bytes that crossed the link, per direction; cheap to clone and to read from any thread.
///
/// **Invariant:** this is the one place bytes on the wire are counted. A byte is counted
/// when the link delivers it, just before it is written to the far end (so whoever has
/// received a byte sees it counted); if that write fails the link fails with it.
#[derive(Clone)]
pub struct LinkCounters {
    shared: Arc<Shared>,
}

impl fmt::Debug for LinkCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkCounters")
            .field("uplink", &self.uplink())
            .field("downlink", &self.downlink())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl LinkCounters {
    /// Bytes delivered edge → cloud so far.
    pub fn uplink_bytes(&self) -> u64 {
        self.shared.uplink.bytes.load(Ordering::Acquire)
    }

    /// Bytes delivered cloud → edge so far.
    pub fn downlink_bytes(&self) -> u64 {
        self.shared.downlink.bytes.load(Ordering::Acquire)
    }

    /// A consistent snapshot of the uplink's counts.
    pub fn uplink(&self) -> DirectionStats {
        *lock(&self.shared.uplink.stats)
    }

    /// A consistent snapshot of the downlink's counts.
    pub fn downlink(&self) -> DirectionStats {
        *lock(&self.shared.downlink.stats)
    }

    /// Link time now: time since [`emulate`] was called (the clock of [`ChunkStats`]).
    pub fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// Fails the link now, both ways, as a connection reset: what is in flight is lost, the
    /// real stream is dropped (the peer sees the connection close), and the edge's reads and
    /// writes return `ConnectionReset` with `message`. For outages ([`crate::Outages`]).
    pub fn cut(&self, message: String) {
        // Scheduled, not a fault: logged as news, not as a warning.
        tracing::info!(%message, "emulated link cut");
        lock(&self.shared.failure).get_or_insert((io::ErrorKind::ConnectionReset, message));
        self.shared.stop.send_modify(|s| *s = Stop::Failed);
    }

    /// Whether all the emulator's tasks have ended (both directions closed or failed).
    pub fn is_closed(&self) -> bool {
        self.shared.live_tasks.load(Ordering::Acquire) == 0
    }

    /// Waits until all the emulator's tasks have ended.
    pub async fn closed(&self) {
        loop {
            // Registered before the check, so a wake-up between the two is not lost.
            let done = self.shared.all_done.notified();
            if self.is_closed() {
                return;
            }
            done.await;
        }
    }
}

/// The edge's end of an emulated link: use it in place of the TCP stream.
///
/// Reads return what the downlink has delivered; writes go into the uplink. `shutdown`
/// half-closes the uplink: queued bytes are still delivered, then the real stream's write
/// side is shut down. The peer's close arrives as EOF after everything before it. If the
/// link failed (an I/O error on the real stream, or a [`crate::TraceEnd::Stop`] trace ran
/// out), reads return that error in place of EOF and writes return it in place of a broken
/// pipe. Dropping the stream stops the downlink at once; the uplink finishes delivering.
pub struct EmulatedStream {
    inner: DuplexStream,
    shared: Arc<Shared>,
}

impl fmt::Debug for EmulatedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedStream")
            .field("state", &self.shared.stop_state())
            .finish()
    }
}

impl Drop for EmulatedStream {
    fn drop(&mut self) {
        self.shared.stop.send_if_modified(|s| {
            let running = *s == Stop::Running;
            if running {
                *s = Stop::EdgeGone;
            }
            running
        });
    }
}

impl AsyncRead for EmulatedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                Poll::Ready(this.shared.failure().map_or(Ok(()), Err))
            }
            other => other,
        }
    }
}

impl AsyncWrite for EmulatedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.shared.failure().unwrap_or(e))),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Puts the link `cfg` between the edge and `stream` (typically a connected `TcpStream` to
/// the cloud), in real time. Returns the stream the edge uses instead, and the counters.
///
/// Link time zero is the moment of the call. Four tasks run on the current tokio runtime,
/// two per direction: *ingress* reads what the sender wrote, cuts it into segments of at
/// most [`PACKET_BYTES`] bytes, asks the direction's [`LinkModel`] when each is delivered,
/// and queues `(deliver_at, bytes)`; *egress* sleeps until each `deliver_at` (an absolute
/// instant from link time zero, so no drift accumulates) and writes the bytes to the
/// receiver, batching segments already due into one write (a segment due within half of
/// tokio's 1 ms timer tick goes out without sleeping, so delivery is within ±0.5 ms of the
/// model's time and an unshaped link adds no tick per message). Since delivery times are
/// computed on arrival, a chunk's one-way delay overlaps the serialization of the chunks
/// behind it, and segments of a large write reach the receiver one after the other, as on a
/// real link.
///
/// Closing: EOF from either sender is passed on (half-close) after everything before it
/// has been delivered; the tasks end once both directions are closed, or at once on an I/O
/// error, which is then reported to the edge (see [`EmulatedStream`]); nothing panics on
/// I/O errors. [`LinkCounters::closed`] waits for the end.
///
/// What is not modelled: loss, and TCP's reaction to the shaped link (the real connection
/// runs at host speed; the shaping happens on the byte stream in this process). Set
/// `TCP_NODELAY` on the real stream: segments are written as they are delivered, and
/// Nagle's algorithm with delayed ACKs could hold one back for tens of ms.
pub async fn emulate<S>(stream: S, cfg: LinkConfig) -> (EmulatedStream, LinkCounters)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(uplink = ?cfg.uplink, downlink = ?cfg.downlink, "emulated link starting");
    let (edge_end, link_end) = tokio::io::duplex(EDGE_BUFFER_BYTES);
    let (from_edge, to_edge) = tokio::io::split(link_end);
    let (from_peer, to_peer) = tokio::io::split(stream);
    let (stop, _) = watch::channel(Stop::Running);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        uplink: DirectionState::new(),
        downlink: DirectionState::new(),
        stop,
        failure: Mutex::new(None),
        live_tasks: AtomicUsize::new(4),
        all_done: Notify::new(),
    });
    let (up_tx, up_rx) = mpsc::channel(MAX_QUEUED_SEGMENTS);
    let (down_tx, down_rx) = mpsc::channel(MAX_QUEUED_SEGMENTS);
    tokio::spawn(ingress(
        Direction::Uplink,
        from_edge,
        cfg.uplink,
        up_tx,
        shared.clone(),
    ));
    tokio::spawn(egress(Direction::Uplink, up_rx, to_peer, shared.clone()));
    tokio::spawn(ingress(
        Direction::Downlink,
        from_peer,
        cfg.downlink,
        down_tx,
        shared.clone(),
    ));
    tokio::spawn(egress(
        Direction::Downlink,
        down_rx,
        to_edge,
        shared.clone(),
    ));
    (
        EmulatedStream {
            inner: edge_end,
            shared: shared.clone(),
        },
        LinkCounters { shared },
    )
}

/// Reads from the sender of `dir`, stamps each segment with its delivery time, queues it.
async fn ingress<R>(
    dir: Direction,
    mut src: R,
    mut model: Box<dyn LinkModel>,
    queue: mpsc::Sender<Segment>,
    shared: Arc<Shared>,
) where
    R: AsyncRead + Unpin,
{
    let _live = LiveTask(shared.clone());
    let mut stop = shared.stop.subscribe();
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    loop {
        let read = tokio::select! {
            biased;
            () = stopped(&mut stop, dir) => return,
            read = src.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) => {
                tracing::debug!(%dir, "sender closed; closing once the queue is delivered");
                return;
            }
            Ok(n) => n,
            Err(e) => {
                shared.fail(
                    e.kind(),
                    format!("{dir}: reading from the sender failed: {e}"),
                );
                return;
            }
        };
        let handed_at = shared.start.elapsed();
        let backlog_bytes = shared.direction(dir).hand_over(n);
        let segments = n.div_ceil(PACKET_BYTES);
        for (i, data) in buf[..n].chunks(PACKET_BYTES).enumerate() {
            let delivered_at = match model.transmit(handed_at, data.len()) {
                Ok(at) => at,
                Err(e) => {
                    shared.fail(io::ErrorKind::ConnectionAborted, format!("{dir}: {e}"));
                    return;
                }
            };
            let Some(deliver_at) = shared.start.checked_add(delivered_at) else {
                shared.fail(
                    io::ErrorKind::ConnectionAborted,
                    format!("{dir}: delivery time {delivered_at:?} is out of range"),
                );
                return;
            };
            let chunk_end = (i + 1 == segments).then_some(ChunkStats {
                bytes: n,
                handed_at,
                delivered_at,
                backlog_bytes,
            });
            let segment = Segment {
                deliver_at,
                data: data.to_vec(),
                chunk_end,
            };
            if queue.send(segment).await.is_err() {
                return; // egress has ended: it stopped or failed
            }
        }
    }
}

/// Half the timer's resolution (1 ms): a segment due sooner is delivered without sleeping.
const DUE_WITHIN: std::time::Duration = std::time::Duration::from_micros(500);

/// Delivers the queued segments of `dir` at their times; passes EOF on at the end.
async fn egress<W>(
    dir: Direction,
    mut queue: mpsc::Receiver<Segment>,
    mut dst: W,
    shared: Arc<Shared>,
) where
    W: AsyncWrite + Unpin,
{
    let _live = LiveTask(shared.clone());
    let mut stop = shared.stop.subscribe();
    let mut pending: Option<Segment> = None;
    let mut out = Vec::new();
    loop {
        let first = match pending.take() {
            Some(segment) => segment,
            None => tokio::select! {
                biased;
                () = stopped(&mut stop, dir) => return,
                segment = queue.recv() => match segment {
                    Some(segment) => segment,
                    None => break,
                },
            },
        };
        // A segment due within half a timer tick goes out now: the timer rounds every deadline
        // up to its next millisecond tick, which would add up to a millisecond per direction
        // that an unshaped or fast link does not have (delivery is thus within ±0.5 ms of the
        // model's time, instead of 0–1 ms late).
        if first.deliver_at > Instant::now() + DUE_WITHIN {
            tokio::select! {
                biased;
                () = stopped(&mut stop, dir) => return,
                () = sleep_until(first.deliver_at) => {}
            }
        }
        // Everything else already due goes out in the same write.
        let now = Instant::now() + DUE_WITHIN;
        out.clear();
        let (mut chunks, mut last_chunk) = (0, None);
        let mut segment = first;
        loop {
            out.extend_from_slice(&segment.data);
            if segment.chunk_end.is_some() {
                chunks += 1;
                last_chunk = segment.chunk_end;
            }
            match queue.try_recv() {
                Ok(next) if next.deliver_at <= now => segment = next,
                Ok(next) => {
                    pending = Some(next);
                    break;
                }
                // Empty, or closed: the `recv` above will tell.
                Err(_) => break,
            }
        }
        shared.direction(dir).deliver(out.len(), chunks, last_chunk);
        let written = tokio::select! {
            biased;
            () = stopped(&mut stop, dir) => return,
            written = write_and_flush(&mut dst, &out) => written,
        };
        if let Err(e) = written {
            // A downlink write fails when the edge has dropped its stream: not an error.
            if !shared.stop_state().stops(dir) {
                shared.fail(
                    e.kind(),
                    format!("{dir}: writing to the receiver failed: {e}"),
                );
            }
            return;
        }
    }
    if shared.stop_state().stops(dir) {
        return;
    }
    // The sender closed and all it sent has been delivered: pass the close on.
    match dst.shutdown().await {
        Ok(()) => tracing::debug!(%dir, "closed"),
        // The receiver may be gone already; there is nothing left to deliver to it.
        Err(e) => tracing::debug!(%dir, error = %e, "half-close failed"),
    }
}

async fn write_and_flush<W: AsyncWrite + Unpin>(dst: &mut W, bytes: &[u8]) -> io::Result<()> {
    dst.write_all(bytes).await?;
    dst.flush().await
}
