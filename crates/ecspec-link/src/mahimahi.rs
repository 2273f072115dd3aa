//! Mahimahi packet-delivery traces as a [`LinkModel`].
//!
//! Format (as read by Mahimahi's `mm-link`, `LinkQueue` in `src/packet/link_queue.cc` of
//! ravinet/mahimahi): one line per delivery opportunity; each line is a timestamp in whole
//! milliseconds from the start of the trace (an integer ≥ 0; lines are non-decreasing).
//! At each opportunity up to [`PACKET_BYTES`] (1500) bytes of queued data leave the link;
//! several opportunities in one millisecond repeat the timestamp. One line per ms = 12 Mbit/s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{LinkModel, TraceEnd, TraceEnded, PACKET_BYTES};

/// Bits carried by one delivery opportunity.
const BITS_PER_OPPORTUNITY: f64 = (PACKET_BYTES * 8) as f64;

/// Longest timestamp a trace file may hold, ms (one day; the longest recorded traces here run
/// about 17 minutes).
pub const MAX_TRACE_MS: u64 = 86_400_000;

/// A malformed or unreadable Mahimahi trace. Lines are numbered from 1.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("{}: cannot read trace: {source}", path.display())]
    Io {
        /// The trace file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is empty (or only whitespace); `mm-link` rejects these too.
    #[error("{}:{line}: empty line (expected a millisecond timestamp)", path.display())]
    EmptyLine {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A line is not a non-negative integer that fits in `u64`.
    #[error("{}:{line}: not a non-negative integer millisecond timestamp: {text:?}", path.display())]
    NotAnInteger {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending line (trimmed).
        text: String,
    },
    /// A timestamp beyond [`MAX_TRACE_MS`]: no recorded cellular trace is that long, and such a
    /// line would stall the emulated link for as long.
    #[error("{}:{line}: timestamp {ms} ms is beyond one day ({max} ms); is this a Mahimahi trace?", path.display())]
    TooLong {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The timestamp on that line, ms.
        ms: u64,
        /// [`MAX_TRACE_MS`].
        max: u64,
    },
    /// A timestamp is smaller than the one on the line before it.
    #[error(
        "{}:{line}: timestamp {ms} ms is less than the previous one ({previous_ms} ms); timestamps must be non-decreasing",
        path.display()
    )]
    Decreasing {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The timestamp on that line, ms.
        ms: u64,
        /// The timestamp on the line before, ms.
        previous_ms: u64,
    },
    /// The trace has no lines.
    #[error("{}: no timestamps (empty trace)", path.display())]
    Empty {
        /// The trace file.
        path: PathBuf,
    },
    /// The last timestamp is 0, so the trace lasts no time (its capacity would be infinite);
    /// `mm-link` rejects these too.
    #[error("{}: the last timestamp is 0 ms; a trace must last a nonzero time", path.display())]
    ZeroDuration {
        /// The trace file.
        path: PathBuf,
    },
}

/// A link shaped by a Mahimahi trace, plus a constant one-way delay.
///
/// **Queue semantics** (those of `mm-link`'s `LinkQueue`, byte for byte): the link is a FIFO
/// byte queue; at each delivery opportunity up to 1500 bytes of *queued* data leave, across
/// chunk boundaries (an opportunity can finish one chunk and start the next). Bytes of a
/// chunk handed over at `t` may use any opportunity at a time `≥ t` (an opportunity in the
/// very millisecond a chunk arrives serves it; `mm-link`, whose clock has 1 ms resolution,
/// burns the opportunities of the current millisecond before enqueueing an arriving packet,
/// a difference of less than 1 ms that only shows for arrivals at whole milliseconds).
/// Capacity left in an opportunity that nothing was queued for is lost. A chunk is delivered
/// at the time of the opportunity that carries its last byte, plus the one-way delay.
///
/// The emulator hands the byte stream over in segments of at most 1500 bytes, so the stream
/// is treated as packets of up to 1500 bytes; since an opportunity carries bytes rather than
/// whole packets, how the stream is cut does not change when any byte is delivered.
///
/// ```
/// use std::time::Duration;
/// use ecspec_link::{LinkModel, MahimahiTrace, TraceEnd};
///
/// // Opportunities at 0, 0, 1 and 2 ms; the trace repeats every 2 ms.
/// let mut trace = MahimahiTrace::parse("tiny", "0\n0\n1\n2\n", Duration::from_millis(10), TraceEnd::Loop)?;
/// assert_eq!(trace.opportunities(), 4);
/// assert_eq!(trace.period(), Duration::from_millis(2));
/// assert_eq!(trace.mean_rate_bps(), 24_000_000.0); // 4 × 12,000 bit / 2 ms
/// // 3000 bytes at t = 0 use both opportunities at 0 ms: delivered at 0 + 10 ms.
/// assert_eq!(trace.transmit(Duration::ZERO, 3000).unwrap(), Duration::from_millis(10));
/// # Ok::<(), ecspec_link::TraceError>(())
/// ```
#[derive(Clone)]
pub struct MahimahiTrace {
    source: PathBuf,
    times_ms: Arc<[u64]>,
    end: TraceEnd,
    one_way_delay: Duration,
    /// Absolute index (repetition · N + line) of the next opportunity with capacity left.
    next_opportunity: u64,
    /// Bytes still free in `next_opportunity` (< 1500 when a chunk's tail used part of it).
    free_in_next: usize,
    /// Link time of the opportunity that carried the last byte handed over so far.
    last_departure: Duration,
}

impl fmt::Debug for MahimahiTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MahimahiTrace")
            .field("source", &self.source)
            .field("opportunities", &self.times_ms.len())
            .field("period", &self.period())
            .field("end", &self.end)
            .field("one_way_delay", &self.one_way_delay)
            .field("next_opportunity", &self.next_opportunity)
            .field("free_in_next", &self.free_in_next)
            .finish()
    }
}

impl MahimahiTrace {
    /// Reads and parses the trace file at `path`.
    ///
    /// # Errors
    ///
    /// [`TraceError::Io`] if the file can't be read, otherwise as [`MahimahiTrace::parse`];
    /// every error names the file (and the 1-based line where there is one).
    pub fn from_file(
        path: impl AsRef<Path>,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, one_way_delay, end)
    }

    /// Parses trace text; `source` names it in errors (usually the file's path).
    ///
    /// Lines are split as [`str::lines`] does (`\n` or `\r\n`; a final newline is optional)
    /// and trimmed of surrounding whitespace.
    ///
    /// # Errors
    ///
    /// [`TraceError::EmptyLine`], [`TraceError::NotAnInteger`] (signs, decimals, anything but
    /// ASCII digits, or more than `u64`), [`TraceError::Decreasing`], [`TraceError::Empty`],
    /// [`TraceError::ZeroDuration`].
    pub fn parse(
        source: impl AsRef<Path>,
        text: &str,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, TraceError> {
        let path = source.as_ref().to_path_buf();
        let mut times = Vec::with_capacity(text.len() / 6);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let s = raw.trim();
            if s.is_empty() {
                return Err(TraceError::EmptyLine { path, line });
            }
            let ms = match s
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<u64>())
            {
                Some(Ok(ms)) => ms,
                _ => {
                    return Err(TraceError::NotAnInteger {
                        path,
                        line,
                        text: s.to_string(),
                    })
                }
            };
            if ms > MAX_TRACE_MS {
                return Err(TraceError::TooLong {
                    path,
                    line,
                    ms,
                    max: MAX_TRACE_MS,
                });
            }
            if let Some(&previous_ms) = times.last() {
                if ms < previous_ms {
                    return Err(TraceError::Decreasing {
                        path,
                        line,
                        ms,
                        previous_ms,
                    });
                }
            }
            times.push(ms);
        }
        Self::build(path, times, one_way_delay, end)
    }

    /// A trace from timestamps in ms already in memory; `source` names it in errors (the
    /// "line" of an error is the 1-based index into `times_ms`).
    ///
    /// # Errors
    ///
    /// [`TraceError::Decreasing`], [`TraceError::Empty`], [`TraceError::ZeroDuration`].
    pub fn from_timestamps(
        source: impl AsRef<Path>,
        times_ms: Vec<u64>,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, TraceError> {
        let path = source.as_ref().to_path_buf();
        if let Some(i) = times_ms.windows(2).position(|w| w[1] < w[0]) {
            return Err(TraceError::Decreasing {
                path,
                line: i + 2,
                ms: times_ms[i + 1],
                previous_ms: times_ms[i],
            });
        }
        Self::build(path, times_ms, one_way_delay, end)
    }

    fn build(
        path: PathBuf,
        times: Vec<u64>,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, TraceError> {
        match times.last() {
            None => return Err(TraceError::Empty { path }),
            Some(0) => return Err(TraceError::ZeroDuration { path }),
            Some(_) => {}
        }
        Ok(MahimahiTrace {
            source: path,
            times_ms: times.into(),
            end,
            one_way_delay,
            next_opportunity: 0,
            free_in_next: PACKET_BYTES,
            last_departure: Duration::ZERO,
        })
    }

    /// The file (or name) the trace came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Delivery opportunities in one period (the number of lines).
    pub fn opportunities(&self) -> usize {
        self.times_ms.len()
    }

    /// The trace's timestamps, ms, one per opportunity.
    pub fn timestamps_ms(&self) -> &[u64] {
        &self.times_ms
    }

    /// The period: the last timestamp (in [`TraceEnd::Loop`] the trace repeats after it).
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms())
    }

    /// Whether the trace loops or stops at its end.
    pub fn end(&self) -> TraceEnd {
        self.end
    }

    fn period_ms(&self) -> u64 {
        // Never empty: checked in `build`.
        self.times_ms.last().copied().unwrap_or(1)
    }

    fn len(&self) -> u64 {
        self.times_ms.len() as u64
    }

    /// Time in ms of the opportunity with absolute index `j` (repetition `j / N`, line
    /// `j % N`), as if the trace looped.
    fn opportunity_ms(&self, j: u64) -> u64 {
        let n = self.len();
        (j / n)
            .saturating_mul(self.period_ms())
            .saturating_add(self.times_ms[(j % n) as usize])
    }

    /// Absolute index of the first opportunity at or after `ms`, as if the trace looped.
    fn first_at_or_after(&self, ms: u64) -> u64 {
        let period = self.period_ms();
        let (k, r) = (ms / period, ms % period);
        // `r < period = times_ms[N-1]`, so some line has a timestamp ≥ r.
        let i = self.times_ms.partition_point(|&x| x < r) as u64;
        k.saturating_mul(self.len()).saturating_add(i)
    }
}

/// `t` rounded up to whole milliseconds.
fn ceil_ms(t: Duration) -> u64 {
    u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl LinkModel for MahimahiTrace {
    fn transmit(&mut self, t: Duration, bytes: usize) -> Result<Duration, TraceEnded> {
        if bytes == 0 {
            return Ok(t
                .max(self.last_departure)
                .saturating_add(self.one_way_delay));
        }
        // The first opportunity this chunk may use: the queue's next one if it is not in
        // the past, else the first one at or after `t` (capacity in between is lost).
        let arrival_ms = ceil_ms(t);
        let (first, free) = if self.opportunity_ms(self.next_opportunity) >= arrival_ms {
            (self.next_opportunity, self.free_in_next)
        } else {
            (self.first_at_or_after(arrival_ms), PACKET_BYTES)
        };
        let (last, next, free_in_next) = if bytes <= free {
            let left = free - bytes;
            if left == 0 {
                (first, first + 1, PACKET_BYTES)
            } else {
                (first, first, left)
            }
        } else {
            let rest = bytes - free;
            let more = rest.div_ceil(PACKET_BYTES);
            let last = first.saturating_add(more as u64);
            let left = more * PACKET_BYTES - rest;
            if left == 0 {
                (last, last.saturating_add(1), PACKET_BYTES)
            } else {
                (last, last, left)
            }
        };
        if self.end == TraceEnd::Stop && last >= self.len() {
            return Err(TraceEnded {
                trace: self.source.clone(),
                end: self.period(),
                handed_at: t,
                bytes,
            });
        }
        self.next_opportunity = next;
        self.free_in_next = free_in_next;
        self.last_departure = Duration::from_millis(self.opportunity_ms(last));
        Ok(self.last_departure.saturating_add(self.one_way_delay))
    }

    /// Capacity over one period: `N · 1500 · 8 bit / P` with `N` lines and period `P`.
    fn mean_rate_bps(&self) -> f64 {
        self.times_ms.len() as f64 * BITS_PER_OPPORTUNITY * 1000.0 / self.period_ms() as f64
    }

    fn one_way_delay(&self) -> Duration {
        self.one_way_delay
    }

    fn clone_box(&self) -> Box<dyn LinkModel> {
        Box::new(self.clone())
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

    fn trace(text: &str, delay: Duration, end: TraceEnd) -> MahimahiTrace {
        MahimahiTrace::parse("test", text, delay, end).unwrap()
    }

    #[test]
    fn capacity_of_a_small_trace_is_exact() {
        let t = trace("0\n0\n1\n2\n", Duration::ZERO, TraceEnd::Loop);
        assert_eq!(t.opportunities(), 4);
        assert_eq!(t.period(), ms(2));
        // 4 opportunities × 1500 B × 8 bit per 2 ms = 24 Mbit/s.
        assert_eq!(t.mean_rate_bps(), 24_000_000.0);
        // One line per ms = 12 Mbit/s.
        let t = trace("1\n2\n3\n4\n5\n", Duration::ZERO, TraceEnd::Loop);
        assert_eq!(t.mean_rate_bps(), 12_000_000.0);
        // 3 opportunities over 1 s = 36 kbit/s.
        let t = trace("0\n500\n1000", Duration::ZERO, TraceEnd::Loop);
        assert_eq!(t.mean_rate_bps(), 36_000.0);
    }

    #[test]
    fn opportunities_are_consumed_in_order_and_shared_across_chunks() {
        let mut t = trace("0\n0\n1\n2\n", ms(10), TraceEnd::Loop);
        // 1500 B: opportunity 0 (0 ms).
        assert_eq!(t.transmit(Duration::ZERO, 1500).unwrap(), ms(10));
        // 1500 B: opportunity 1 (0 ms).
        assert_eq!(t.transmit(Duration::ZERO, 1500).unwrap(), ms(10));
        // 100 B: opportunity 2 (1 ms), 1400 B of it left.
        assert_eq!(t.transmit(Duration::ZERO, 100).unwrap(), ms(11));
        // Queued (0.5 ms) before opportunity 2 happens: its tail shares it.
        assert_eq!(t.transmit(us(500), 1400).unwrap(), ms(11));
        // Next: opportunity 3 (2 ms).
        assert_eq!(t.transmit(us(600), 1).unwrap(), ms(12));
        // 1499 B left at 2 ms; 1499 + 1500 + 1 B needs opportunities 3 (2 ms), 4 and 5
        // (repetition 1: 2 + 0 = 2 ms, 2 + 0 = 2 ms): delivered at 2 ms.
        assert_eq!(t.transmit(us(700), 3000).unwrap(), ms(12));
        // Opportunity 5 has 1499 B left; 1500 B need opportunity 6 too (2 + 1 = 3 ms).
        assert_eq!(t.transmit(us(800), 1500).unwrap(), ms(13));
    }

    #[test]
    fn capacity_with_nothing_queued_is_lost() {
        let mut t = trace("0\n0\n1\n2\n", Duration::ZERO, TraceEnd::Loop);
        // 100 B at 0 ms use opportunity 0; its other 1400 B are wasted because the next
        // chunk arrives after 0 ms: it gets opportunity 2 at 1 ms (opportunity 1, also at
        // 0 ms, is past too).
        assert_eq!(t.transmit(Duration::ZERO, 100).unwrap(), Duration::ZERO);
        assert_eq!(t.transmit(us(500), 100).unwrap(), ms(1));
        // A chunk arriving exactly at 1 ms still shares opportunity 2 (at-or-after rule).
        assert_eq!(t.transmit(ms(1), 1400).unwrap(), ms(1));
        // A long idle gap: at 7.2 ms the next opportunity is at 8 ms (repetition 4: 4·2 + 0).
        assert_eq!(t.transmit(us(7_200), 1).unwrap(), ms(8));
    }

    #[test]
    fn multi_opportunity_chunks() {
        let mut t = trace("0\n0\n1\n2\n", ms(5), TraceEnd::Loop);
        // 4500 B = 3 whole opportunities: 0, 0, 1 ms.
        assert_eq!(t.transmit(Duration::ZERO, 4500).unwrap(), ms(6));
        let mut t = trace("0\n0\n1\n2\n", ms(5), TraceEnd::Loop);
        // 6001 B = 5 opportunities: 0, 0, 1, 2 and the first of repetition 1 (2 + 0 ms).
        assert_eq!(t.transmit(Duration::ZERO, 6001).unwrap(), ms(7));
        // 1499 B left in that one; 1499 B more fit exactly.
        assert_eq!(t.transmit(Duration::ZERO, 1499).unwrap(), ms(7));
        // Then the 2nd opportunity of repetition 1 (2 + 0 ms).
        assert_eq!(t.transmit(Duration::ZERO, 1).unwrap(), ms(7));
    }

    #[test]
    fn the_trace_loops_with_period_equal_to_the_last_timestamp() {
        // Opportunities at 1, 3 | 4, 6 | 7, 9 | … (period 3 ms).
        let mut t = trace("1\n3\n", Duration::ZERO, TraceEnd::Loop);
        assert_eq!(t.period(), ms(3));
        assert_eq!(t.transmit(Duration::ZERO, 1500).unwrap(), ms(1));
        assert_eq!(t.transmit(Duration::ZERO, 1500).unwrap(), ms(3));
        assert_eq!(t.transmit(Duration::ZERO, 1500).unwrap(), ms(4));
        assert_eq!(t.transmit(Duration::ZERO, 3000).unwrap(), ms(7));
        // 3.5 ms → rounded up to 4 ms; the queue already sits at 9 ms.
        assert_eq!(t.transmit(us(3_500), 1).unwrap(), ms(9));
        // Far later: at 100 ms (33·3 + 1) exactly, and 100.2 ms → 102 ms (33·3 + 3).
        assert_eq!(t.transmit(ms(100), 1500).unwrap(), ms(100));
        assert_eq!(t.transmit(us(100_200), 1500).unwrap(), ms(102));
        // A whole number of periods: 10 s of 2 opportunities per 3 ms.
        let mut t = trace("1\n3\n", Duration::ZERO, TraceEnd::Loop);
        // 2000 opportunities = repetition 999, line 1: 999·3 + 3 = 3000 ms.
        assert_eq!(t.transmit(Duration::ZERO, 2000 * 1500).unwrap(), ms(3000));
    }

    #[test]
    fn a_stopping_trace_refuses_chunks_past_its_end() {
        let mut t = trace("1\n3\n", ms(10), TraceEnd::Stop);
        assert_eq!(t.transmit(Duration::ZERO, 3000).unwrap(), ms(13));
        let err = t.transmit(ms(1), 1).unwrap_err();
        assert_eq!(
            err,
            TraceEnded {
                trace: PathBuf::from("test"),
                end: ms(3),
                handed_at: ms(1),
                bytes: 1
            }
        );
        assert!(err.to_string().contains("ended at 3ms"), "{err}");
        // A fresh trace: too big a chunk is refused and leaves the state alone.
        let mut t = trace("1\n3\n", Duration::ZERO, TraceEnd::Stop);
        assert!(t.transmit(Duration::ZERO, 3001).is_err());
        assert_eq!(t.transmit(Duration::ZERO, 1500).unwrap(), ms(1));
        // Arriving after the last opportunity.
        let mut t = trace("1\n3\n", Duration::ZERO, TraceEnd::Stop);
        assert!(t.transmit(us(3_001), 1).is_err());
    }

    #[test]
    fn zero_byte_chunks_follow_the_queue() {
        let mut t = trace("0\n5\n10\n", ms(1), TraceEnd::Loop);
        assert_eq!(t.transmit(Duration::ZERO, 3000).unwrap(), ms(6));
        assert_eq!(t.transmit(ms(1), 0).unwrap(), ms(6));
        assert_eq!(t.transmit(ms(7), 0).unwrap(), ms(8));
    }

    #[test]
    fn parse_accepts_crlf_and_surrounding_spaces_and_no_final_newline() {
        let t = trace(" 0\r\n3 \r\n7", Duration::ZERO, TraceEnd::Loop);
        assert_eq!(t.timestamps_ms(), &[0, 3, 7]);
    }

    #[test]
    fn timestamps_beyond_a_day_are_rejected_with_their_line() {
        let parse = |text: &str| MahimahiTrace::parse("f.up", text, Duration::ZERO, TraceEnd::Loop);
        assert!(parse("0\n86400000\n").is_ok());
        match parse("0\n5\n100000000\n") {
            Err(TraceError::TooLong {
                line: 3,
                ms: 100_000_000,
                max: MAX_TRACE_MS,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_errors_carry_line_numbers() {
        let err = |text: &str| MahimahiTrace::parse("f.up", text, Duration::ZERO, TraceEnd::Loop);
        match err("0\n5\nabc\n") {
            Err(TraceError::NotAnInteger {
                path,
                line: 3,
                text,
            }) => {
                assert_eq!(path, Path::new("f.up"));
                assert_eq!(text, "abc");
            }
            other => panic!("{other:?}"),
        }
        for bad in ["-1", "+1", "1.5", "1e3", "99999999999999999999999"] {
            assert!(
                matches!(
                    err(&format!("0\n{bad}\n")),
                    Err(TraceError::NotAnInteger { line: 2, .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            err("0\n5\n3\n"),
            Err(TraceError::Decreasing {
                line: 3,
                ms: 3,
                previous_ms: 5,
                ..
            })
        ));
        assert!(matches!(
            err("1\n\n2\n"),
            Err(TraceError::EmptyLine { line: 2, .. })
        ));
        assert!(matches!(
            err("1\n2\n\n"),
            Err(TraceError::EmptyLine { line: 3, .. })
        ));
        assert!(matches!(err(""), Err(TraceError::Empty { .. })));
        assert!(matches!(
            err("0\n0\n"),
            Err(TraceError::ZeroDuration { .. })
        ));
        let msg = err("0\n5\n3\n").unwrap_err().to_string();
        assert_eq!(
            msg,
            "f.up:3: timestamp 3 ms is less than the previous one (5 ms); timestamps must be non-decreasing"
        );
        assert!(matches!(
            MahimahiTrace::from_timestamps("mem", vec![1, 2, 1], Duration::ZERO, TraceEnd::Loop),
            Err(TraceError::Decreasing {
                line: 3,
                ms: 1,
                previous_ms: 2,
                ..
            })
        ));
    }

    #[test]
    fn parse_errors_from_files_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("ecspec-link-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: [(&str, &str, &str); 4] = [
            (
                "bad-int.up",
                "0\n1\n2\nx7\n",
                ":4: not a non-negative integer",
            ),
            (
                "decreasing.up",
                "0\n10\n9\n",
                ":3: timestamp 9 ms is less than",
            ),
            ("empty.up", "", ": no timestamps"),
            ("blank.up", "5\n \n", ":2: empty line"),
        ];
        for (name, text, expected) in cases {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let e = MahimahiTrace::from_file(&path, Duration::ZERO, TraceEnd::Loop).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{}{expected}", path.display())),
                "{msg}"
            );
        }
        let missing = dir.join("missing.up");
        let e = MahimahiTrace::from_file(&missing, Duration::ZERO, TraceEnd::Loop).unwrap_err();
        assert!(
            matches!(&e, TraceError::Io { path, .. } if path == &missing),
            "{e}"
        );
        let ok = dir.join("ok.up");
        std::fs::write(&ok, "0\n0\n1\n2\n").unwrap();
        let t = MahimahiTrace::from_file(&ok, ms(1), TraceEnd::Stop).unwrap();
        assert_eq!(
            (t.opportunities(), t.period(), t.end()),
            (4, ms(2), TraceEnd::Stop)
        );
        assert_eq!(t.source(), ok.as_path());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
