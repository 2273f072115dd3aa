//! Wireless link models and a real-time link emulator for ECSpec.
//!
//! The edge talks to the cloud over a real TCP connection; this crate makes the bytes of that
//! connection behave as if they crossed a wireless link, and counts every one of them.
//!
//! # Models
//!
//! A [`LinkModel`] is one direction of a link: a FIFO queue in front of a serializer, then a
//! one-way propagation delay. Given a chunk of `n` bytes handed over at link time `t` (a
//! [`Duration`](std::time::Duration) since the link's start),
//! [`transmit`](LinkModel::transmit) returns when its last byte reaches the far end.
//!
//! - [`ConstantRate`]: a fixed rate in bit/s; serialization takes `n·8 / rate`, exactly.
//! - [`MahimahiTrace`]: a Mahimahi delivery trace (one line = one 1500-byte delivery
//!   opportunity at that millisecond), repeating with period = its last timestamp
//!   ([`TraceEnd::Loop`], as `mm-link` does) or refusing data past its end
//!   ([`TraceEnd::Stop`]). [`LinkModel::mean_rate_bps`] gives its capacity over one period.
//!
//! [`LinkConfig`] holds both directions; [`LinkConfig::from_options`] builds one from
//! CLI-like [`LinkOptions`] (default: 10 Mbit/s up, 20 Mbit/s down, 60 ms RTT, each
//! direction's one-way delay being RTT / 2).
//!
//! # Emulator
//!
//! [`emulate`] wraps a stream (the edge's `TcpStream` to the cloud) and returns an
//! [`EmulatedStream`] the edge uses instead, plus [`LinkCounters`]. Background tasks stamp
//! each segment (≤ [`PACKET_BYTES`] bytes) with the delivery time the model gives and
//! deliver it at that instant, pipelined, in both directions; EOF and errors are passed on.
//!
//! **Invariant:** [`LinkCounters`] is the one place bytes on the wire are counted.
//!
//! **Invariant:** the models are pure (no I/O, no clock); only [`emulate`] touches time
//! and sockets.
//!
//! # Example
//!
//! ```no_run
//! use ecspec_link::{emulate, LinkConfig, LinkModel};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::TcpStream;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // 1 Mbit/s up, 20 Mbit/s down, 40 ms round trip.
//! let cfg = LinkConfig::constant(1.0, 20.0, 40.0)?;
//! let tcp = TcpStream::connect("127.0.0.1:7000").await?;
//! tcp.set_nodelay(true)?;
//! let (mut link, counters) = emulate(tcp, cfg).await;
//!
//! link.write_all(&[0u8; 12_500]).await?; // 100 ms of serialization, then 20 ms one way
//! let mut reply = [0u8; 16];
//! link.read_exact(&mut reply).await?;
//! println!(
//!     "{} B up, {} B down, last uplink chunk took {:?}",
//!     counters.uplink_bytes(),
//!     counters.downlink_bytes(),
//!     counters.uplink().last_chunk.map(|c| c.transit()),
//! );
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod config;
mod csv_format;
mod csv_trace;
pub mod delay;
mod emulator;
mod mahimahi;
mod model;
mod outage;
pub mod synthetic;

pub use config::{
    CsvSource, LinkConfig, LinkError, LinkOptions, DEFAULT_DOWNLINK_MBPS, DEFAULT_RTT_MS,
    DEFAULT_UPLINK_MBPS, MAX_RTT_MS,
};
pub use csv_format::{CsvFormat, GophersCarrier, UnknownCsvFormat};
pub use csv_trace::{CsvColumns, CsvTraceError, RateUnit, SignalMetrics, ThroughputTrace};
pub use delay::{DelayProcess, TimeShift, VariableDelay};
pub use emulator::{
    emulate, ChunkStats, DirectionStats, EmulatedStream, LinkCounters, EDGE_BUFFER_BYTES,
    MAX_QUEUED_SEGMENTS,
};
pub use outage::{Outage, OutageError, Outages, MAX_OUTAGE_S};
pub use mahimahi::{MahimahiTrace, TraceError, MAX_TRACE_MS};
pub use model::{
    capacity_bps, ConstantRate, Direction, LinkModel, TraceEnd, TraceEnded, PACKET_BYTES,
};
pub use synthetic::{SnrProcess, Synthetic, SyntheticError};
