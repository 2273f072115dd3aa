//! [`LinkConfig`]: the models of both directions, built from CLI-like [`LinkOptions`].

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::csv_trace::{CsvColumns, CsvTraceError, ThroughputTrace};
use crate::delay::{DelayProcess, TimeShift, VariableDelay};
use crate::mahimahi::{MahimahiTrace, TraceError};
use crate::model::{ConstantRate, Direction, LinkModel, TraceEnd};
use crate::synthetic::{Synthetic, SyntheticError};

/// Default uplink (edge → cloud) rate, Mbit/s.
pub const DEFAULT_UPLINK_MBPS: f64 = 10.0;
/// Default downlink (cloud → edge) rate, Mbit/s.
pub const DEFAULT_DOWNLINK_MBPS: f64 = 20.0;
/// Default round-trip propagation delay, ms (split evenly between the two directions).
pub const DEFAULT_RTT_MS: f64 = 60.0;

// The defaults above in bit/s (checked against them by a test).
const DEFAULT_UPLINK_BPS: NonZeroU64 = NonZeroU64::new(10_000_000).unwrap();
const DEFAULT_DOWNLINK_BPS: NonZeroU64 = NonZeroU64::new(20_000_000).unwrap();

/// An invalid link configuration.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A rate is not finite, or is below 1 bit/s once converted.
    #[error("{direction} rate must be a finite number of Mbit/s of at least 1 bit/s, got {mbps}")]
    InvalidRate {
        /// Which direction.
        direction: Direction,
        /// The rate given, Mbit/s.
        mbps: f64,
    },
    /// The RTT is negative, not finite, or above [`MAX_RTT_MS`].
    #[error("RTT must be a number of ms from 0 to {MAX_RTT_MS} (a minute), got {rtt_ms}")]
    InvalidRtt {
        /// The RTT given, ms.
        rtt_ms: f64,
    },
    /// More than one source was given for one direction's capacity.
    #[error("{direction}: {given} were given; give one of a rate, a Mahimahi trace, a CSV trace or a model")]
    Conflicting {
        /// Which direction.
        direction: Direction,
        /// What was given, e.g. "a rate (5 Mbit/s) and a trace (up.trace)".
        given: String,
    },
    /// A trace file could not be read or parsed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A throughput CSV trace could not be read or parsed.
    #[error(transparent)]
    Csv(#[from] CsvTraceError),
    /// A synthetic model spec is invalid.
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    /// The RTT was to come from a trace that has none.
    #[error("{0}")]
    RttTrace(String),
    /// A start offset that is negative or not finite.
    #[error("link start must be a finite number of seconds ≥ 0, got {0}")]
    InvalidStart(f64),
    /// A delay jitter that is negative or not finite.
    #[error("delay jitter must be a finite number of ms ≥ 0, got {0}")]
    InvalidJitter(f64),
}

/// A per-second throughput CSV trace and which of its columns to read.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSource {
    /// The file.
    pub path: PathBuf,
    /// Its columns.
    pub columns: CsvColumns,
}

/// Link options as a command line gives them; every field is optional.
///
/// For each direction at most one of: a Mahimahi trace, a throughput CSV trace, a synthetic
/// model, a constant rate; with none, the default rate ([`DEFAULT_UPLINK_MBPS`] up,
/// [`DEFAULT_DOWNLINK_MBPS`] down). The RTT (default [`DEFAULT_RTT_MS`]) is split evenly: each
/// direction's one-way delay is RTT / 2.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkOptions {
    /// Uplink rate, Mbit/s.
    pub up_mbps: Option<f64>,
    /// Downlink rate, Mbit/s.
    pub down_mbps: Option<f64>,
    /// Round-trip propagation delay, ms.
    pub rtt_ms: Option<f64>,
    /// Mahimahi trace shaping the uplink.
    pub up_trace: Option<PathBuf>,
    /// Mahimahi trace shaping the downlink.
    pub down_trace: Option<PathBuf>,
    /// Throughput CSV trace shaping the uplink.
    pub up_csv: Option<CsvSource>,
    /// Throughput CSV trace shaping the downlink.
    pub down_csv: Option<CsvSource>,
    /// Synthetic model of the uplink.
    pub up_model: Option<Synthetic>,
    /// Synthetic model of the downlink.
    pub down_model: Option<Synthetic>,
    /// What traces and models do at their end (default: loop, as `mm-link` does).
    pub trace_end: TraceEnd,
    /// Standard deviation of each chunk's one-way delay, ms (Gaussian around RTT / 2).
    pub delay_jitter_ms: Option<f64>,
    /// Seed of the jitter (uplink uses it, downlink seed + 1).
    pub jitter_seed: u64,
    /// Take the RTT from the CSV trace's RTT column (per second; one-way = RTT / 2).
    pub rtt_from_trace: bool,
    /// Start both directions this many seconds into their time lines (traces, models).
    pub start_s: Option<f64>,
}

/// The models of both directions of a link: what [`crate::emulate`] runs.
///
/// Cloning copies each model with its queue state (a config never used yet clones into
/// a config never used yet; traces share their timestamps).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Edge → cloud.
    pub uplink: Box<dyn LinkModel>,
    /// Cloud → edge.
    pub downlink: Box<dyn LinkModel>,
}

impl Default for LinkConfig {
    /// 10 Mbit/s up, 20 Mbit/s down, 60 ms RTT (30 ms each way).
    fn default() -> Self {
        let one_way = Duration::from_millis(30);
        LinkConfig {
            uplink: Box::new(ConstantRate::new(DEFAULT_UPLINK_BPS, one_way)),
            downlink: Box::new(ConstantRate::new(DEFAULT_DOWNLINK_BPS, one_way)),
        }
    }
}

impl LinkConfig {
    /// A link from two models.
    pub fn new(uplink: Box<dyn LinkModel>, downlink: Box<dyn LinkModel>) -> Self {
        LinkConfig { uplink, downlink }
    }

    /// Constant rates `up_mbps` / `down_mbps` (Mbit/s, 1 Mbit = 10⁶ bit, rounded to whole
    /// bit/s) and a round trip of `rtt_ms` ms (one way = RTT / 2, rounded to the ns).
    ///
    /// # Errors
    ///
    /// [`LinkError::InvalidRate`], [`LinkError::InvalidRtt`].
    pub fn constant(up_mbps: f64, down_mbps: f64, rtt_ms: f64) -> Result<Self, LinkError> {
        let one_way = one_way_delay(rtt_ms)?;
        Ok(LinkConfig {
            uplink: Box::new(constant_rate(Direction::Uplink, up_mbps, one_way)?),
            downlink: Box::new(constant_rate(Direction::Downlink, down_mbps, one_way)?),
        })
    }

    /// Mahimahi traces for each direction and a round trip of `rtt_ms` ms (one way =
    /// RTT / 2).
    ///
    /// # Errors
    ///
    /// [`LinkError::InvalidRtt`], [`LinkError::Trace`].
    pub fn mahimahi(
        up_trace: impl AsRef<Path>,
        down_trace: impl AsRef<Path>,
        rtt_ms: f64,
        end: TraceEnd,
    ) -> Result<Self, LinkError> {
        let one_way = one_way_delay(rtt_ms)?;
        Ok(LinkConfig {
            uplink: Box::new(MahimahiTrace::from_file(up_trace, one_way, end)?),
            downlink: Box::new(MahimahiTrace::from_file(down_trace, one_way, end)?),
        })
    }

    /// A link from command-line options; see [`LinkOptions`] for the rules and defaults.
    ///
    /// # Errors
    ///
    /// [`LinkError::Conflicting`] if one direction has more than one source, otherwise as
    /// [`LinkConfig::constant`] and [`LinkConfig::mahimahi`], [`LinkError::Csv`],
    /// [`LinkError::Synthetic`].
    pub fn from_options(opts: &LinkOptions) -> Result<Self, LinkError> {
        let one_way = one_way_delay(opts.rtt_ms.unwrap_or(DEFAULT_RTT_MS))?;
        let end = opts.trace_end;
        let model = |direction: Direction,
                     mbps: Option<f64>,
                     trace: &Option<PathBuf>,
                     csv: &Option<CsvSource>,
                     synthetic: &Option<Synthetic>,
                     default_mbps: f64|
         -> Result<Box<dyn LinkModel>, LinkError> {
            let mut given = Vec::new();
            if let Some(m) = mbps {
                given.push(format!("a rate ({m} Mbit/s)"));
            }
            if let Some(t) = trace {
                given.push(format!("a Mahimahi trace ({})", t.display()));
            }
            if let Some(c) = csv {
                given.push(format!("a CSV trace ({})", c.path.display()));
            }
            if let Some(m) = synthetic {
                given.push(format!("a model ({m})"));
            }
            if given.len() > 1 {
                return Err(LinkError::Conflicting {
                    direction,
                    given: given.join(" and "),
                });
            }
            Ok(match (trace, csv, synthetic) {
                (Some(t), _, _) => Box::new(MahimahiTrace::from_file(t, one_way, end)?),
                (_, Some(c), _) => Box::new(ThroughputTrace::from_file(
                    &c.path, &c.columns, one_way, end,
                )?),
                (_, _, Some(m)) => Box::new(m.link(one_way, end)?),
                _ => Box::new(constant_rate(
                    direction,
                    mbps.unwrap_or(default_mbps),
                    one_way,
                )?),
            })
        };
        let mut uplink = model(
            Direction::Uplink,
            opts.up_mbps,
            &opts.up_trace,
            &opts.up_csv,
            &opts.up_model,
            DEFAULT_UPLINK_MBPS,
        )?;
        let mut downlink = model(
            Direction::Downlink,
            opts.down_mbps,
            &opts.down_trace,
            &opts.down_csv,
            &opts.down_model,
            DEFAULT_DOWNLINK_MBPS,
        )?;
        if opts.rtt_from_trace && opts.delay_jitter_ms.is_some() {
            return Err(LinkError::RttTrace(
                "give either an RTT trace or a delay jitter, not both".into(),
            ));
        }
        if opts.rtt_from_trace {
            let src = opts
                .down_csv
                .as_ref()
                .or(opts.up_csv.as_ref())
                .ok_or_else(|| {
                    LinkError::RttTrace(
                        "the RTT can come from a CSV trace only: give --link-csv".into(),
                    )
                })?;
            let trace = ThroughputTrace::from_file(&src.path, &src.columns, one_way, end)?;
            let series = trace.rtt_ms_series();
            if series.iter().all(Option::is_none) {
                return Err(LinkError::RttTrace(format!(
                    "{}: the trace has no RTT values (column {:?})",
                    src.path.display(),
                    src.columns.rtt_ms
                )));
            }
            let process = DelayProcess::RttTrace {
                rtt_ms: series.into(),
                slot: trace.slot(),
            };
            uplink = Box::new(VariableDelay::new(uplink, process.clone()));
            downlink = Box::new(VariableDelay::new(downlink, process));
        }
        if let Some(j) = opts.delay_jitter_ms {
            if !(j.is_finite() && (0.0..=1e9).contains(&j)) {
                return Err(LinkError::InvalidJitter(j));
            }
            let sd = Duration::from_secs_f64(j / 1e3);
            let seed = opts.jitter_seed;
            uplink = Box::new(VariableDelay::new(
                uplink,
                DelayProcess::Jitter { sd, seed },
            ));
            downlink = Box::new(VariableDelay::new(
                downlink,
                DelayProcess::Jitter {
                    sd,
                    seed: seed.wrapping_add(1),
                },
            ));
        }
        if let Some(t) = opts.start_s {
            if !(t.is_finite() && (0.0..=1e9).contains(&t)) {
                return Err(LinkError::InvalidStart(t));
            }
            let off = Duration::from_secs_f64(t);
            uplink = Box::new(TimeShift::new(uplink, off));
            downlink = Box::new(TimeShift::new(downlink, off));
        }
        Ok(LinkConfig { uplink, downlink })
    }

    /// The round-trip propagation delay: the sum of both one-way delays (no queueing or
    /// serialization).
    pub fn rtt(&self) -> Duration {
        self.uplink
            .one_way_delay()
            .saturating_add(self.downlink.one_way_delay())
    }

    /// A fresh copy of this link seen `offset` into its time line, both directions (the same
    /// as building it with [`LinkOptions::start_s`], without parsing its traces again): what
    /// gives each request or each edge its own phase of a trace.
    pub fn shifted(&self, offset: Duration) -> LinkConfig {
        let c = self.clone();
        if offset.is_zero() {
            return c;
        }
        LinkConfig::new(
            Box::new(TimeShift::new(c.uplink, offset)),
            Box::new(TimeShift::new(c.downlink, offset)),
        )
    }
}

fn constant_rate(
    direction: Direction,
    mbps: f64,
    one_way_delay: Duration,
) -> Result<ConstantRate, LinkError> {
    let bps = mbps * 1e6;
    if !bps.is_finite() || bps.round() < 1.0 || bps.round() > u64::MAX as f64 {
        return Err(LinkError::InvalidRate { direction, mbps });
    }
    let rate =
        NonZeroU64::new(bps.round() as u64).ok_or(LinkError::InvalidRate { direction, mbps })?;
    Ok(ConstantRate::new(rate, one_way_delay))
}

/// The largest RTT a link accepts, ms: a minute is far beyond any cellular or satellite
/// path (GEO satellite: about 600 ms; a stalled LTE link: seconds), while a value beyond it
/// is a slip (`--rtt-ms 1e12`) that would only surface as a handshake timeout later.
pub const MAX_RTT_MS: f64 = 60_000.0;

/// Half of `rtt_ms`, as a [`Duration`] rounded to the nanosecond.
///
/// # Errors
/// [`LinkError::InvalidRtt`] unless `0 ≤ rtt_ms ≤` [`MAX_RTT_MS`] (NaN fails too).
fn one_way_delay(rtt_ms: f64) -> Result<Duration, LinkError> {
    if !(0.0..=MAX_RTT_MS).contains(&rtt_ms) {
        return Err(LinkError::InvalidRtt { rtt_ms });
    }
    Ok(Duration::from_nanos((rtt_ms * 1e6 / 2.0).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_vary_with_jitter_or_follow_the_trace_rtt() {
        let dir = std::env::temp_dir().join(format!("ecspec-link-rtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("rtt.csv");
        std::fs::write(&csv, "mbps,rtt\n8,100\n8,-\n8,40\n").unwrap();
        let src = CsvSource {
            path: csv.clone(),
            columns: CsvColumns {
                rtt_ms: Some("rtt".into()),
                ..CsvColumns::rate_only("mbps", crate::RateUnit::Mbps)
            },
        };
        let opts = LinkOptions {
            down_csv: Some(src.clone()),
            rtt_from_trace: true,
            ..Default::default()
        };
        let mut cfg = LinkConfig::from_options(&opts).unwrap();
        // 1000 B at 8 Mbit/s = 1 ms, then RTT/2 of the second it leaves in.
        assert_eq!(
            cfg.downlink.transmit(Duration::ZERO, 1000).unwrap(),
            Duration::from_millis(51)
        );
        assert_eq!(
            cfg.downlink
                .transmit(Duration::from_millis(2000), 1000)
                .unwrap(),
            Duration::from_millis(2021)
        );
        // The uplink (default 10 Mbit/s) follows the same RTT series: second 1 keeps 100 ms.
        assert_eq!(
            cfg.uplink
                .transmit(Duration::from_millis(1000), 1250)
                .unwrap(),
            Duration::from_millis(1051)
        );
        let no_rtt = LinkOptions {
            down_csv: Some(CsvSource {
                columns: CsvColumns::rate_only("mbps", crate::RateUnit::Mbps),
                ..src
            }),
            rtt_from_trace: true,
            ..Default::default()
        };
        assert!(LinkConfig::from_options(&no_rtt)
            .unwrap_err()
            .to_string()
            .contains("has no RTT values"));
        let both = LinkOptions {
            delay_jitter_ms: Some(5.0),
            ..opts
        };
        assert!(LinkConfig::from_options(&both).is_err());
        let jitter = LinkOptions {
            delay_jitter_ms: Some(5.0),
            ..Default::default()
        };
        let mut a = LinkConfig::from_options(&jitter).unwrap();
        let mut b = LinkConfig::from_options(&jitter).unwrap();
        let (x, y) = (
            a.uplink.transmit(Duration::ZERO, 100).unwrap(),
            a.downlink.transmit(Duration::ZERO, 100).unwrap(),
        );
        assert_eq!(x, b.uplink.transmit(Duration::ZERO, 100).unwrap(), "seeded");
        assert_ne!(x.as_nanos() % 1000, 0, "jittered, not whole µs");
        assert_ne!(x, y, "each direction has its own stream");
        let bad = LinkOptions {
            delay_jitter_ms: Some(-1.0),
            ..Default::default()
        };
        assert!(LinkConfig::from_options(&bad).is_err());
    }

    #[test]
    fn models_and_csv_traces_shape_either_direction() {
        let dir = std::env::temp_dir().join(format!("ecspec-link-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("rates.csv");
        std::fs::write(&csv, "mbps\n8\n16\n").unwrap();
        let opts = LinkOptions {
            up_model: Some(
                Synthetic::parse(
                    "ge:good_mbps=4,bad_mbps=0,p_gb=1,p_bg=1,slot_ms=500,duration_s=1",
                )
                .unwrap(),
            ),
            down_csv: Some(CsvSource {
                path: csv.clone(),
                columns: CsvColumns::rate_only("mbps", crate::RateUnit::Mbps),
            }),
            rtt_ms: Some(20.0),
            ..Default::default()
        };
        let cfg = LinkConfig::from_options(&opts).unwrap();
        assert_eq!(cfg.uplink.mean_rate_bps(), 2e6);
        assert_eq!(cfg.downlink.mean_rate_bps(), 12e6);
        assert_eq!(cfg.rtt(), Duration::from_millis(20));
        let both = LinkOptions {
            down_mbps: Some(3.0),
            ..opts
        };
        let e = LinkConfig::from_options(&both).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "downlink: a rate (3 Mbit/s) and a CSV trace ({}) were given; give one of a rate, a Mahimahi trace, a CSV trace or a model",
                csv.display()
            )
        );
    }

    #[test]
    fn default_is_10_up_20_down_60_rtt() {
        let cfg = LinkConfig::default();
        assert_eq!(cfg.uplink.mean_rate_bps(), 10e6);
        assert_eq!(cfg.downlink.mean_rate_bps(), 20e6);
        assert_eq!(cfg.uplink.one_way_delay(), Duration::from_millis(30));
        assert_eq!(cfg.downlink.one_way_delay(), Duration::from_millis(30));
        assert_eq!(cfg.rtt(), Duration::from_millis(60));
        let from_opts = LinkConfig::from_options(&LinkOptions::default()).unwrap();
        assert_eq!(format!("{cfg:?}"), format!("{from_opts:?}"));
    }

    #[test]
    fn constant_splits_the_rtt() {
        let mut cfg = LinkConfig::constant(1.5, 0.25, 25.0).unwrap();
        assert_eq!(cfg.uplink.mean_rate_bps(), 1_500_000.0);
        assert_eq!(cfg.downlink.mean_rate_bps(), 250_000.0);
        assert_eq!(cfg.uplink.one_way_delay(), Duration::from_micros(12_500));
        // 1500 B at 1.5 Mbit/s = 8 ms, + 12.5 ms.
        assert_eq!(
            cfg.uplink.transmit(Duration::ZERO, 1500).unwrap(),
            Duration::from_micros(20_500)
        );
        // 0.03 ms of RTT: 15 µs each way, not a float-rounded neighbour.
        let cfg = LinkConfig::constant(1.0, 1.0, 0.03).unwrap();
        assert_eq!(cfg.uplink.one_way_delay(), Duration::from_micros(15));
    }

    #[test]
    fn invalid_numbers_are_rejected() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-7] {
            assert!(
                matches!(
                    LinkConfig::constant(bad, 1.0, 10.0),
                    Err(LinkError::InvalidRate {
                        direction: Direction::Uplink,
                        ..
                    })
                ),
                "{bad}"
            );
            assert!(matches!(
                LinkConfig::constant(1.0, bad, 10.0),
                Err(LinkError::InvalidRate {
                    direction: Direction::Downlink,
                    ..
                })
            ));
        }
        for bad in [-1.0, f64::NAN, f64::INFINITY, 60_000.001, 1e12] {
            assert!(matches!(
                LinkConfig::constant(1.0, 1.0, bad),
                Err(LinkError::InvalidRtt { .. })
            ));
        }
        assert_eq!(
            LinkConfig::constant(1.0, 1.0, 1e12)
                .unwrap_err()
                .to_string(),
            "RTT must be a number of ms from 0 to 60000 (a minute), got 1000000000000"
        );
        assert!(LinkConfig::constant(1.0, 1.0, 0.0).is_ok());
        assert!(LinkConfig::constant(1.0, 1.0, MAX_RTT_MS).is_ok());
    }

    #[test]
    fn options_pick_a_trace_or_a_rate_per_direction() {
        let dir = std::env::temp_dir().join(format!("ecspec-link-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let up = dir.join("t.up");
        std::fs::write(&up, "0\n0\n1\n2\n").unwrap();

        let opts = LinkOptions {
            up_trace: Some(up.clone()),
            down_mbps: Some(5.0),
            rtt_ms: Some(40.0),
            ..LinkOptions::default()
        };
        let cfg = LinkConfig::from_options(&opts).unwrap();
        assert_eq!(cfg.uplink.mean_rate_bps(), 24e6);
        assert_eq!(cfg.downlink.mean_rate_bps(), 5e6);
        assert_eq!(cfg.rtt(), Duration::from_millis(40));

        let both = LinkOptions {
            up_mbps: Some(1.0),
            ..opts.clone()
        };
        let e = LinkConfig::from_options(&both).unwrap_err();
        assert!(
            matches!(
                e,
                LinkError::Conflicting {
                    direction: Direction::Uplink,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("uplink: a rate (1 Mbit/s) and a Mahimahi trace ("),
            "{e}"
        );

        let missing = LinkOptions {
            down_trace: Some(dir.join("nope.down")),
            down_mbps: None,
            ..opts
        };
        let e = LinkConfig::from_options(&missing).unwrap_err();
        assert!(matches!(e, LinkError::Trace(TraceError::Io { .. })), "{e}");
        assert!(e.to_string().contains("nope.down"), "{e}");

        let cfg = LinkConfig::mahimahi(&up, &up, 20.0, TraceEnd::Stop).unwrap();
        assert_eq!(cfg.rtt(), Duration::from_millis(20));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
