//! The [`LinkModel`] trait (one direction of a link) and the constant-rate model.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use std::path::PathBuf;

/// Size of one packet, in bytes: a Mahimahi delivery opportunity carries up to this many
/// bytes, and the emulator cuts the byte stream into segments of at most this size.
pub const PACKET_BYTES: usize = 1500;

/// One direction of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Edge → cloud.
    Uplink,
    /// Cloud → edge.
    Downlink,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Uplink => "uplink",
            Direction::Downlink => "downlink",
        })
    }
}

/// What a trace-driven link model ([`crate::MahimahiTrace`], [`crate::ThroughputTrace`],
/// [`crate::Synthetic`]) does after its last delivery opportunity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceEnd {
    /// Repeat the trace forever, as `mm-link` does: with timestamps `ts[0..N]` and period
    /// `P = ts[N-1]` ms, opportunity `i` of repetition `k = 0, 1, …` is at `k·P + ts[i]` ms.
    /// (When `ts[0] = 0`, the last opportunity of one repetition and the first of the next
    /// fall in the same millisecond, exactly as in `mm-link`.)
    #[default]
    Loop,
    /// Play the trace once. A chunk that needs an opportunity after the last one is refused
    /// with [`TraceEnded`] (the emulator then fails the link with an I/O error). `mm-link`
    /// without repeat would hold such packets forever; failing loudly is more useful than a
    /// silent hang when an experiment outlives its trace.
    Stop,
}

/// A chunk could not be delivered: the trace it was shaped by has ended ([`TraceEnd::Stop`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "link trace {} ended at {:?} (looping off): cannot deliver {bytes} bytes handed over at {handed_at:?}",
    trace.display(), end
)]
pub struct TraceEnded {
    /// The trace file (or the name given to an in-memory trace).
    pub trace: PathBuf,
    /// Link time of the trace's last delivery opportunity (its period).
    pub end: Duration,
    /// Link time at which the refused chunk was handed over.
    pub handed_at: Duration,
    /// Size of the refused chunk, bytes.
    pub bytes: usize,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// One direction of a link: a FIFO queue in front of a serializer, followed by a fixed
/// one-way propagation delay.
///
/// A model is stateful: it remembers until when the link is busy with data handed to it
/// earlier. Times are [`Duration`]s since the link's start (time zero of the link).
///
/// **Invariant:** delivery times are FIFO: a chunk handed over later is never delivered
/// before one handed over earlier.
pub trait LinkModel: Send + fmt::Debug {
    /// Hands a chunk of `bytes` bytes to the link at link time `t` and returns the link time
    /// at which its last byte is delivered at the far end (queueing + serialization +
    /// one-way delay included).
    ///
    /// Calls should come with non-decreasing `t`; a `t` earlier than a previous call's is
    /// served as if it had arrived together with that call (after it, FIFO). A zero-byte
    /// chunk is "delivered" once everything before it has left, plus the one-way delay.
    ///
    /// # Errors
    ///
    /// [`TraceEnded`] when the model has no capacity left for the chunk: only a
    /// [`crate::MahimahiTrace`] that does not loop ([`crate::TraceEnd::Stop`]) ever returns
    /// it. The model's state is unchanged then.
    fn transmit(&mut self, t: Duration, bytes: usize) -> Result<Duration, TraceEnded>;

    /// Long-run capacity of the link in bit/s (for a trace: over one period).
    fn mean_rate_bps(&self) -> f64;

    /// One-way propagation delay added to every chunk after serialization.
    fn one_way_delay(&self) -> Duration;

    /// A boxed copy of this model, queue state included (a model never used yet gives a
    /// model never used yet). Backs `Clone for Box<dyn LinkModel>`.
    fn clone_box(&self) -> Box<dyn LinkModel>;
}

impl Clone for Box<dyn LinkModel> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// The rate (bit/s) a fresh copy of `model` delivers a burst of `probe_bytes` at, handed over
/// at `t`: `probe_bytes·8 / (delivered − t − one-way delay)`. A throughput sample of the
/// channel around `t` (the burst spans `probe_bytes·8 / rate` seconds), for plots of the rate
/// under a run; `model` itself is untouched. 0 when the trace has ended (non-looping trace) or
/// `probe_bytes` is 0.
pub fn capacity_bps(model: &dyn LinkModel, t: Duration, probe_bytes: usize) -> f64 {
    let mut m = model.clone_box();
    match m.transmit(t, probe_bytes) {
        Ok(done) => {
            let busy = done.saturating_sub(t).saturating_sub(m.one_way_delay());
            if probe_bytes == 0 || busy.is_zero() {
                0.0
            } else {
                probe_bytes as f64 * 8.0 / busy.as_secs_f64()
            }
        }
        Err(_) => 0.0,
    }
}

/// A link of constant rate `rate_bps` (bit/s) with a constant one-way delay.
///
/// A chunk of `n` bytes handed over at `t` starts serializing at `max(t, link free)`, takes
/// `n·8 / rate_bps` seconds, and its last byte arrives `one_way_delay` later. Time is kept
/// exactly: during one busy period the model counts bits, not rounded per-chunk durations,
/// so no rounding error accumulates (the end of a busy period is rounded up to the next
/// nanosecond once).
///
/// ```
/// use std::num::NonZeroU64;
/// use std::time::Duration;
/// use ecspec_link::{ConstantRate, LinkModel};
///
/// // 10 Mbit/s, 5 ms one way: 1250 bytes = 10,000 bits = 1 ms of serialization.
/// let mut link = ConstantRate::new(NonZeroU64::new(10_000_000).unwrap(), Duration::from_millis(5));
/// assert_eq!(link.transmit(Duration::ZERO, 1250).unwrap(), Duration::from_millis(6));
/// // Handed over at 0.5 ms, it waits for the link to be free at 1 ms: 1 + 2 + 5 = 8 ms.
/// assert_eq!(link.transmit(Duration::from_micros(500), 2500).unwrap(), Duration::from_millis(8));
/// ```
#[derive(Debug, Clone)]
pub struct ConstantRate {
    rate_bps: NonZeroU64,
    one_way_delay: Duration,
    /// Start of the current (or last) busy period, in ns of link time.
    busy_start_ns: u128,
    /// Bits handed over since `busy_start_ns`.
    busy_bits: u128,
}

impl ConstantRate {
    /// A link of `rate_bps` bit/s and `one_way_delay` of propagation, idle at time zero.
    pub fn new(rate_bps: NonZeroU64, one_way_delay: Duration) -> Self {
        ConstantRate {
            rate_bps,
            one_way_delay,
            busy_start_ns: 0,
            busy_bits: 0,
        }
    }

    /// The link rate in bit/s.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps.get()
    }

    /// Time to serialize `bytes` bytes on an idle link (`bytes·8 / rate`), rounded up to
    /// the nanosecond.
    pub fn serialization_time(&self, bytes: usize) -> Duration {
        duration_from_nanos(self.nanos_for_bits(bytes as u128 * 8))
    }

    fn nanos_for_bits(&self, bits: u128) -> u128 {
        (bits * NANOS_PER_SEC).div_ceil(u128::from(self.rate_bps.get()))
    }

    /// Link time at which the link finishes serializing everything handed over so far, ns.
    fn free_at_ns(&self) -> u128 {
        self.busy_start_ns + self.nanos_for_bits(self.busy_bits)
    }
}

impl LinkModel for ConstantRate {
    fn transmit(&mut self, t: Duration, bytes: usize) -> Result<Duration, TraceEnded> {
        let t_ns = t.as_nanos();
        if t_ns >= self.free_at_ns() {
            // The link has gone idle: a new busy period starts now.
            self.busy_start_ns = t_ns;
            self.busy_bits = 0;
        }
        self.busy_bits += bytes as u128 * 8;
        Ok(duration_from_nanos(self.free_at_ns()).saturating_add(self.one_way_delay))
    }

    fn mean_rate_bps(&self) -> f64 {
        self.rate_bps.get() as f64
    }

    fn one_way_delay(&self) -> Duration {
        self.one_way_delay
    }

    fn clone_box(&self) -> Box<dyn LinkModel> {
        Box::new(self.clone())
    }
}

/// `ns` nanoseconds as a [`Duration`], saturating at [`Duration::MAX`].
pub(crate) fn duration_from_nanos(ns: u128) -> Duration {
    match u64::try_from(ns / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, (ns % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    fn link(rate_bps: u64, delay: Duration) -> ConstantRate {
        ConstantRate::new(NonZeroU64::new(rate_bps).unwrap(), delay)
    }

    #[test]
    fn capacity_probe_reads_the_rate_and_leaves_the_model_alone() {
        let l = link(2_000_000, ms(30));
        // 12 000 B at 2 Mbit/s: 48 ms busy, whatever t is.
        assert_eq!(capacity_bps(&l, ms(5), 12_000), 2_000_000.0);
        assert_eq!(capacity_bps(&l, ms(0), 0), 0.0);
        let mut l2 = l.clone();
        assert_eq!(l2.transmit(ms(0), 250).unwrap(), ms(31));
    }

    #[test]
    fn one_chunk_is_serialization_plus_delay() {
        // 1250 B = 10,000 bit at 10 Mbit/s = 1 ms; plus 30 ms one way.
        let mut l = link(10_000_000, ms(30));
        assert_eq!(l.transmit(Duration::ZERO, 1250).unwrap(), ms(31));
        // Handed over later on an idle link: same 31 ms of transit.
        assert_eq!(l.transmit(ms(100), 1250).unwrap(), ms(131));
        assert_eq!(l.serialization_time(1250), ms(1));
        assert_eq!(l.serialization_time(1500), us(1200));
        assert_eq!(l.mean_rate_bps(), 10_000_000.0);
        assert_eq!(l.one_way_delay(), ms(30));
    }

    #[test]
    fn back_to_back_chunks_queue_fifo() {
        let mut l = link(10_000_000, ms(5));
        // 0..1 ms serializing, delivered at 6 ms.
        assert_eq!(l.transmit(Duration::ZERO, 1250).unwrap(), ms(6));
        // Arrives at 0.5 ms, waits until 1 ms, 2 ms to serialize: 3 + 5 = 8 ms.
        assert_eq!(l.transmit(us(500), 2500).unwrap(), ms(8));
        // Arrives at 2 ms, link busy until 3 ms: 3 + 0.1 + 5 = 8.1 ms.
        assert_eq!(l.transmit(ms(2), 125).unwrap(), us(8_100));
        // Arrives after the link went idle (free at 3.1 ms): no queueing.
        assert_eq!(l.transmit(ms(10), 125).unwrap(), us(15_100));
        // A zero-byte chunk while idle: just the delay.
        assert_eq!(l.transmit(ms(20), 0).unwrap(), ms(25));
    }

    #[test]
    fn zero_byte_chunk_waits_for_the_queue() {
        let mut l = link(1_000_000, ms(10));
        // 12,500 B at 1 Mbit/s = 100 ms.
        assert_eq!(l.transmit(Duration::ZERO, 12_500).unwrap(), ms(110));
        assert_eq!(l.transmit(ms(1), 0).unwrap(), ms(110));
    }

    #[test]
    fn no_rounding_drift_across_chunks() {
        // 3 bit/s: one byte takes 8/3 s (not a whole number of ns); three take exactly 8 s.
        let mut l = link(3, Duration::ZERO);
        let first = l.transmit(Duration::ZERO, 1).unwrap();
        assert_eq!(first, Duration::new(2, 666_666_667)); // rounded up once
        l.transmit(Duration::ZERO, 1).unwrap();
        assert_eq!(
            l.transmit(Duration::ZERO, 1).unwrap(),
            Duration::from_secs(8)
        );
        // Many small chunks in one busy period: 1000 × 1250 B at 10 Mbit/s = exactly 1 s.
        let mut l = link(10_000_000, ms(1));
        let mut last = Duration::ZERO;
        for i in 0..1000u64 {
            last = l.transmit(us(i), 1250).unwrap();
        }
        assert_eq!(last, ms(1001));
    }

    #[test]
    fn boxed_clone_keeps_state() {
        let mut l: Box<dyn LinkModel> = Box::new(link(8_000, Duration::ZERO));
        // 1000 B at 8 kbit/s = 1 s.
        assert_eq!(
            l.transmit(Duration::ZERO, 1000).unwrap(),
            Duration::from_secs(1)
        );
        let mut copy = l.clone();
        assert_eq!(
            copy.transmit(Duration::ZERO, 1000).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            l.transmit(Duration::ZERO, 1000).unwrap(),
            Duration::from_secs(2)
        );
    }
}
