//! Per-second throughput traces (CSV, one row per second) as a [`LinkModel`].
//!
//! Each data row gives the link's capacity for one second, read from one column (downlink or
//! uplink), plus optional signal metrics of that second ([`SignalMetrics`]: RSRP, RSRQ, SNR,
//! CQI, ping RTT) that the edge may read with [`ThroughputTrace::metrics_at`]. Row `i`
//! (0-based, header excluded) covers link time `[i s, i+1 s)`; the rate is piecewise constant.
//!
//! # Column mappings ([`CsvColumns`])
//!
//! | Preset | Rate column (unit) | Metric columns | Rows used |
//! |---|---|---|---|
//! | [`CsvColumns::irish_5g`] (Raca et al., MMSys 2020, G-NetTrack Pro) | `DL_bitrate` / `UL_bitrate` (kbit/s) | `RSRP` dBm, `RSRQ` dB, `SNR` dB, `CQI`, `PINGAVG` ms | all |
//! | [`CsvColumns::gophers_throughput`] (5Gophers `01-Throughput/data.csv`) | `throughput_mbps` (Mbit/s) | none | `carrier`, `num_tcp_conn`, `server_location`, `run_num` equal to the given values |
//! | [`CsvColumns::gophers_driving`] (5Gophers `car-driving-trace-*.csv`) | `{Sprint,TMobile,Verizon}_throughput_mbps` (Mbit/s) | none | all |
//! | [`CsvColumns::gophers_walking`] (5Gophers `walking-trace.csv`) | `throughput_mbps` (Mbit/s) | none | all |
//!
//! Caveats of the data, not of the model: both datasets record the *observed application
//! throughput* of a saturating transfer, which this model takes as the capacity. The Irish
//! "Download" traces saturate the downlink only: their `UL_bitrate` is mostly TCP ACK
//! traffic (≈ 0.2 Mbit/s), not uplink capacity. 5Gophers throughput is downlink.
//! The Irish `Timestamp` column is not used: the files have about one row per second, a few
//! seconds repeat, and every row is taken as one second.
//!
//! # Parsing
//!
//! The first non-blank line is the header; column names are matched exactly (after trimming
//! spaces and a UTF-8 byte-order mark). Fields are split on commas; a field in double quotes
//! may contain commas and `""` for a quote (a quoted field cannot span lines). Blank lines
//! are skipped. Every data row must have as many fields as the header. A rate must be a
//! finite number ≥ 0; it is converted to bit/s and rounded to the nearest integer. A metric
//! that is empty or `-` (the Irish files' "not measured") is `None`; any other non-number is
//! an error. Every error names the file and the 1-based line ([`CsvTraceError`]).
//!
//! # Delivery ([`LinkModel::transmit`])
//!
//! A FIFO queue in front of a serializer whose rate is `r_i` bit/s during second `i`: a chunk
//! of `n` bytes handed over at `t` starts at `max(t, queue free)` and ends when the capacity
//! integrated since then reaches `8n` bits; a zero-rate second is an outage that the data
//! waits through. It is delivered `one_way_delay` later. Arithmetic is exact (integers in
//! bit·ns/s); only the delivery instant is rounded up to the nanosecond, and that rounding
//! does not accumulate. At the end of the trace it loops or stops as [`TraceEnd`] says.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{duration_from_nanos, Direction, LinkModel, TraceEnd, TraceEnded};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Unit of a rate column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    /// bit/s.
    Bps,
    /// kbit/s (1000 bit/s), as the Irish 5G dataset.
    Kbps,
    /// Mbit/s (10⁶ bit/s), as 5Gophers.
    Mbps,
}

impl RateUnit {
    fn bits_per_second(self) -> f64 {
        match self {
            RateUnit::Bps => 1.0,
            RateUnit::Kbps => 1e3,
            RateUnit::Mbps => 1e6,
        }
    }
}

/// Which CSV columns hold the rate and the signal metrics, and which rows to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumns {
    /// Header name of the rate column.
    pub rate: String,
    /// Unit of the rate column.
    pub rate_unit: RateUnit,
    /// Column of RSRP, dBm.
    pub rsrp_dbm: Option<String>,
    /// Column of RSRQ, dB.
    pub rsrq_db: Option<String>,
    /// Column of SNR, dB.
    pub snr_db: Option<String>,
    /// Column of CQI (index 0–15).
    pub cqi: Option<String>,
    /// Column of the round-trip time, ms.
    pub rtt_ms: Option<String>,
    /// Only rows whose column `.0` equals `.1` exactly (after trimming) are used; the others
    /// are skipped (still checked for their field count). Empty: all rows.
    pub select: Vec<(String, String)>,
}

impl CsvColumns {
    /// A rate column alone: no metrics, every row.
    pub fn rate_only(rate: impl Into<String>, rate_unit: RateUnit) -> Self {
        CsvColumns {
            rate: rate.into(),
            rate_unit,
            rsrp_dbm: None,
            rsrq_db: None,
            snr_db: None,
            cqi: None,
            rtt_ms: None,
            select: Vec::new(),
        }
    }

    /// The Irish 5G dataset (uccmisl/5Gdataset): `DL_bitrate` (downlink) or `UL_bitrate`
    /// (uplink) in kbit/s; `RSRP`, `RSRQ`, `SNR`, `CQI`, and `PINGAVG` as the RTT.
    pub fn irish_5g(direction: Direction) -> Self {
        let rate = match direction {
            Direction::Downlink => "DL_bitrate",
            Direction::Uplink => "UL_bitrate",
        };
        CsvColumns {
            rsrp_dbm: Some("RSRP".into()),
            rsrq_db: Some("RSRQ".into()),
            snr_db: Some("SNR".into()),
            cqi: Some("CQI".into()),
            rtt_ms: Some("PINGAVG".into()),
            ..Self::rate_only(rate, RateUnit::Kbps)
        }
    }

    /// One run of 5Gophers' all-carriers throughput file (`throughput_mbps`, Mbit/s): the rows
    /// with the given `carrier` (`SPRINT`, `TMOBILE`, `VERIZON`), `num_tcp_conn` (1 or 8),
    /// `server_location` (`US-East`, `US-West`) and `run_num`.
    pub fn gophers_throughput(
        carrier: &str,
        num_tcp_conn: u32,
        server_location: &str,
        run_num: u32,
    ) -> Self {
        CsvColumns {
            select: vec![
                ("carrier".into(), carrier.into()),
                ("num_tcp_conn".into(), num_tcp_conn.to_string()),
                ("server_location".into(), server_location.into()),
                ("run_num".into(), run_num.to_string()),
            ],
            ..Self::rate_only("throughput_mbps", RateUnit::Mbps)
        }
    }

    /// 5Gophers' car-driving traces: column `{carrier}_throughput_mbps` (Mbit/s), with
    /// `carrier` one of `Sprint`, `TMobile`, `Verizon`.
    pub fn gophers_driving(carrier: &str) -> Self {
        Self::rate_only(format!("{carrier}_throughput_mbps"), RateUnit::Mbps)
    }

    /// 5Gophers' walking trace: `throughput_mbps` (Mbit/s).
    pub fn gophers_walking() -> Self {
        Self::rate_only("throughput_mbps", RateUnit::Mbps)
    }
}

/// Signal metrics of one second of a trace; `None` where the trace has no such column or the
/// value was not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SignalMetrics {
    /// Reference signal received power, dBm.
    pub rsrp_dbm: Option<f64>,
    /// Reference signal received quality, dB.
    pub rsrq_db: Option<f64>,
    /// Signal-to-noise ratio, dB.
    pub snr_db: Option<f64>,
    /// Channel quality indicator (0–15).
    pub cqi: Option<f64>,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
}

/// A malformed or unreadable throughput trace. Lines are numbered from 1 (the header
/// included).
#[derive(Debug, thiserror::Error)]
pub enum CsvTraceError {
    /// The file could not be read.
    #[error("{}: cannot read trace: {source}", path.display())]
    Io {
        /// The trace file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file has no header line.
    #[error("{}: no header line", path.display())]
    NoHeader {
        /// The trace file.
        path: PathBuf,
    },
    /// A column the mapping needs is not in the header.
    #[error("{}:{line}: no column {column:?} in the header", path.display())]
    MissingColumn {
        /// The trace file.
        path: PathBuf,
        /// Line of the header.
        line: usize,
        /// The column sought.
        column: String,
    },
    /// A row has a different number of fields than the header.
    #[error("{}:{line}: {found} fields, the header has {expected}", path.display())]
    FieldCount {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A quoted field has no closing quote on its line.
    #[error("{}:{line}: unterminated quoted field", path.display())]
    UnterminatedQuote {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A rate or metric field is not a finite number (a rate may not be empty or `-`).
    #[error("{}:{line}: column {column:?}: not a number: {text:?}", path.display())]
    NotANumber {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column.
        column: String,
        /// The field's text.
        text: String,
    },
    /// A rate is negative.
    #[error("{}:{line}: column {column:?}: negative rate {value}", path.display())]
    NegativeRate {
        /// The trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column.
        column: String,
        /// The value read.
        value: f64,
    },
    /// No data row (or none selected).
    #[error("{}: no data rows", path.display())]
    Empty {
        /// The trace file.
        path: PathBuf,
    },
    /// Every second has rate zero: nothing could ever be delivered.
    #[error("{}: every second has rate 0", path.display())]
    ZeroCapacity {
        /// The trace file.
        path: PathBuf,
    },
}

/// A link shaped by a per-second throughput trace, plus a constant one-way delay.
///
/// See the [module docs](self) for the file formats and the delivery rule. With
/// [`TraceEnd::Loop`] the trace repeats with period = number of rows seconds; with
/// [`TraceEnd::Stop`] a chunk that would finish after the last second is refused with
/// [`TraceEnded`] (state unchanged).
///
/// ```
/// use std::time::Duration;
/// use ecspec_link::{LinkModel, ThroughputTrace, TraceEnd};
///
/// // 8 kbit/s, then an outage second, then 16 kbit/s.
/// let mut link = ThroughputTrace::from_rates("mem", vec![8_000, 0, 16_000], Duration::from_millis(10), TraceEnd::Loop)?;
/// // 1500 B = 12,000 bit: 8,000 in second 0, (outage), 4,000 in 0.25 s of second 2.
/// assert_eq!(link.transmit(Duration::ZERO, 1500).unwrap(), Duration::from_millis(2_260));
/// # Ok::<(), ecspec_link::CsvTraceError>(())
/// ```
#[derive(Clone)]
pub struct ThroughputTrace {
    source: PathBuf,
    /// Rate of each slot, bit/s.
    rates_bps: Arc<[u64]>,
    /// Slot length, ns (10⁹ for per-second traces).
    slot_ns: u128,
    /// `cum_units[i]` = capacity of slots `0..i` in bit·ns/s units (bits × 10⁹);
    /// `len = rates + 1`.
    cum_units: Arc<[u128]>,
    metrics: Arc<[SignalMetrics]>,
    end: TraceEnd,
    one_way_delay: Duration,
    /// Capacity consumed so far, in bit·ns/s units (bits × 10⁹), since link time zero.
    consumed: u128,
    /// Link time at which the last byte handed over so far leaves the serializer.
    last_departure: Duration,
}

impl fmt::Debug for ThroughputTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThroughputTrace")
            .field("source", &self.source)
            .field("seconds", &self.rates_bps.len())
            .field("mean_rate_bps", &self.mean_rate_bps())
            .field("end", &self.end)
            .field("one_way_delay", &self.one_way_delay)
            .field("last_departure", &self.last_departure)
            .finish()
    }
}

/// Splits one CSV line into fields (quotes handled); `None` on an unterminated quote.
fn split_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Skip leading spaces of the field.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return None,
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            // Anything after the closing quote up to the comma is kept (lenient).
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field.trim().to_string());
        match chars.next() {
            Some(',') => continue,
            _ => return Some(fields),
        }
    }
}

impl ThroughputTrace {
    /// Reads and parses the CSV file at `path` with the given column mapping.
    ///
    /// # Errors
    ///
    /// [`CsvTraceError::Io`] if the file can't be read, otherwise as [`ThroughputTrace::parse`].
    pub fn from_file(
        path: impl AsRef<Path>,
        columns: &CsvColumns,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, CsvTraceError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CsvTraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, columns, one_way_delay, end)
    }

    /// Parses CSV text; `source` names it in errors (usually the file's path).
    ///
    /// # Errors
    ///
    /// Any [`CsvTraceError`] but `Io`, naming `source` and the 1-based line.
    pub fn parse(
        source: impl AsRef<Path>,
        text: &str,
        columns: &CsvColumns,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, CsvTraceError> {
        let path = source.as_ref().to_path_buf();
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty());
        let (header_line, header_text) = lines
            .next()
            .ok_or_else(|| CsvTraceError::NoHeader { path: path.clone() })?;
        let header = split_fields(header_text.trim_start_matches('\u{feff}')).ok_or_else(|| {
            CsvTraceError::UnterminatedQuote {
                path: path.clone(),
                line: header_line,
            }
        })?;
        let find = |name: &str| -> Result<usize, CsvTraceError> {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| CsvTraceError::MissingColumn {
                    path: path.clone(),
                    line: header_line,
                    column: name.to_string(),
                })
        };
        let find_opt = |name: &Option<String>| name.as_deref().map(find).transpose();
        let rate_col = find(&columns.rate)?;
        let metric_cols = [
            find_opt(&columns.rsrp_dbm)?,
            find_opt(&columns.rsrq_db)?,
            find_opt(&columns.snr_db)?,
            find_opt(&columns.cqi)?,
            find_opt(&columns.rtt_ms)?,
        ];
        let select = columns
            .select
            .iter()
            .map(|(c, v)| Ok((find(c)?, v.as_str())))
            .collect::<Result<Vec<_>, CsvTraceError>>()?;

        let mut rates = Vec::new();
        let mut metrics = Vec::new();
        for (line, raw) in lines {
            let fields = split_fields(raw).ok_or_else(|| CsvTraceError::UnterminatedQuote {
                path: path.clone(),
                line,
            })?;
            if fields.len() != header.len() {
                return Err(CsvTraceError::FieldCount {
                    path,
                    line,
                    expected: header.len(),
                    found: fields.len(),
                });
            }
            if !select.iter().all(|&(c, v)| fields[c] == v) {
                continue;
            }
            let number = |col: usize| -> Result<Option<f64>, CsvTraceError> {
                let s = fields[col].as_str();
                if s.is_empty() || s == "-" {
                    return Ok(None);
                }
                match s.parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Some(v)),
                    _ => Err(CsvTraceError::NotANumber {
                        path: path.clone(),
                        line,
                        column: header[col].clone(),
                        text: s.to_string(),
                    }),
                }
            };
            let value = number(rate_col)?.ok_or_else(|| CsvTraceError::NotANumber {
                path: path.clone(),
                line,
                column: header[rate_col].clone(),
                text: fields[rate_col].clone(),
            })?;
            if value < 0.0 {
                return Err(CsvTraceError::NegativeRate {
                    path,
                    line,
                    column: header[rate_col].clone(),
                    value,
                });
            }
            // `as` saturates; rates beyond u64 bit/s are not physical anyway.
            rates.push((value * columns.rate_unit.bits_per_second()).round() as u64);
            let m = |i: usize| -> Result<Option<f64>, CsvTraceError> {
                metric_cols[i].map(number).transpose().map(Option::flatten)
            };
            metrics.push(SignalMetrics {
                rsrp_dbm: m(0)?,
                rsrq_db: m(1)?,
                snr_db: m(2)?,
                cqi: m(3)?,
                rtt_ms: m(4)?,
            });
        }
        Self::build(path, rates, metrics, one_way_delay, end)
    }

    /// A trace from per-second rates in bit/s already in memory, without metrics.
    ///
    /// # Errors
    ///
    /// [`CsvTraceError::Empty`], [`CsvTraceError::ZeroCapacity`].
    pub fn from_rates(
        source: impl AsRef<Path>,
        rates_bps: Vec<u64>,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, CsvTraceError> {
        let metrics = vec![SignalMetrics::default(); rates_bps.len()];
        Self::build(
            source.as_ref().to_path_buf(),
            rates_bps,
            metrics,
            one_way_delay,
            end,
        )
    }

    /// A piecewise-constant rate process with slots of `slot` (≥ 1 µs): `rates_bps[i]` holds
    /// during `[i·slot, (i+1)·slot)`, with optional per-slot signal `metrics` (empty: none).
    /// What synthetic channel models ([`crate::synthetic`]) are turned into.
    ///
    /// # Errors
    ///
    /// [`CsvTraceError::Empty`], [`CsvTraceError::ZeroCapacity`]; a slot under 1 µs or a
    /// metrics list of another length is reported as [`CsvTraceError::Empty`] naming `source`.
    pub fn from_slot_rates(
        source: impl AsRef<Path>,
        rates_bps: Vec<u64>,
        slot: Duration,
        metrics: Vec<SignalMetrics>,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, CsvTraceError> {
        let path = source.as_ref().to_path_buf();
        if slot < Duration::from_micros(1)
            || !(metrics.is_empty() || metrics.len() == rates_bps.len())
        {
            return Err(CsvTraceError::Empty { path });
        }
        let metrics = if metrics.is_empty() {
            vec![SignalMetrics::default(); rates_bps.len()]
        } else {
            metrics
        };
        let mut t = Self::build(path, rates_bps, metrics, one_way_delay, end)?;
        t.set_slot(slot.as_nanos());
        Ok(t)
    }

    fn set_slot(&mut self, slot_ns: u128) {
        self.slot_ns = slot_ns;
        let mut cum = Vec::with_capacity(self.rates_bps.len() + 1);
        let mut acc = 0u128;
        cum.push(0);
        for &r in self.rates_bps.iter() {
            acc += u128::from(r) * slot_ns;
            cum.push(acc);
        }
        self.cum_units = cum.into();
    }

    fn build(
        path: PathBuf,
        rates: Vec<u64>,
        metrics: Vec<SignalMetrics>,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<Self, CsvTraceError> {
        if rates.is_empty() {
            return Err(CsvTraceError::Empty { path });
        }
        if rates.iter().all(|&r| r == 0) {
            return Err(CsvTraceError::ZeroCapacity { path });
        }
        let mut t = ThroughputTrace {
            source: path,
            rates_bps: rates.into(),
            slot_ns: NANOS_PER_SEC,
            cum_units: Arc::from(Vec::new()),
            metrics: metrics.into(),
            end,
            one_way_delay,
            consumed: 0,
            last_departure: Duration::ZERO,
        };
        t.set_slot(NANOS_PER_SEC);
        Ok(t)
    }

    /// The file (or name) the trace came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Slots in one period (the number of data rows used; seconds for a CSV trace).
    pub fn seconds(&self) -> usize {
        self.rates_bps.len()
    }

    /// The slot length (1 s for a CSV trace).
    pub fn slot(&self) -> Duration {
        duration_from_nanos(self.slot_ns)
    }

    /// The rate of each slot, bit/s.
    pub fn rates_bps(&self) -> &[u64] {
        &self.rates_bps
    }

    /// Whether the trace loops or stops at its end.
    pub fn end(&self) -> TraceEnd {
        self.end
    }

    /// The period: [`seconds`](Self::seconds) slots.
    pub fn period(&self) -> Duration {
        duration_from_nanos(self.rates_bps.len() as u128 * self.slot_ns)
    }

    /// Row index of link time `t` (looping or not, per [`TraceEnd`]); `None` past the end of
    /// a stopping trace.
    fn row_at(&self, t: Duration) -> Option<usize> {
        let n = self.rates_bps.len() as u128;
        let s = t.as_nanos() / self.slot_ns;
        match self.end {
            TraceEnd::Loop => Some((s % n) as usize),
            TraceEnd::Stop => (s < n).then_some(s as usize),
        }
    }

    /// Capacity in bit/s at link time `t` (0 past the end of a stopping trace).
    pub fn rate_at(&self, t: Duration) -> u64 {
        self.row_at(t).map_or(0, |i| self.rates_bps[i])
    }

    /// The RTT column per slot, ms (`None` where not measured).
    pub fn rtt_ms_series(&self) -> Vec<Option<f64>> {
        self.metrics.iter().map(|m| m.rtt_ms).collect()
    }

    /// Signal metrics of the second containing link time `t`; `None` past the end of a
    /// stopping trace.
    pub fn metrics_at(&self, t: Duration) -> Option<&SignalMetrics> {
        self.row_at(t).map(|i| &self.metrics[i])
    }

    fn n(&self) -> u128 {
        self.rates_bps.len() as u128
    }

    /// Capacity units (bits × 10⁹) of one period.
    fn period_units(&self) -> u128 {
        self.cum_units[self.rates_bps.len()]
    }

    /// Cumulative capacity units from link time 0 to `t_ns`, as if the trace looped.
    fn capacity_until(&self, t_ns: u128) -> u128 {
        let slots = t_ns / self.slot_ns;
        let off = t_ns % self.slot_ns;
        let (k, s) = (slots / self.n(), (slots % self.n()) as usize);
        k.saturating_mul(self.period_units())
            .saturating_add(self.cum_units[s])
            .saturating_add(u128::from(self.rates_bps[s]) * off)
    }

    /// Earliest link time (ns) at which the cumulative capacity reaches `units`, as if the
    /// trace looped.
    fn time_reaching(&self, units: u128) -> u128 {
        if units == 0 {
            return 0;
        }
        let per = self.period_units(); // > 0: checked in `build`.
        let k = (units - 1) / per;
        let r = units - k * per; // in (0, per]
                                 // The first second s whose end reaches r; then cum[s]·10⁹ < r, so rate[s] > 0.
        let s = self.cum_units[1..].partition_point(|&c| c < r);
        let rate = u128::from(self.rates_bps[s]).max(1);
        let off = (r - self.cum_units[s]).div_ceil(rate);
        k.saturating_mul(self.n() * self.slot_ns)
            .saturating_add(s as u128 * self.slot_ns)
            .saturating_add(off)
    }
}

impl LinkModel for ThroughputTrace {
    fn transmit(&mut self, t: Duration, bytes: usize) -> Result<Duration, TraceEnded> {
        if bytes == 0 {
            return Ok(t
                .max(self.last_departure)
                .saturating_add(self.one_way_delay));
        }
        let start = self.consumed.max(self.capacity_until(t.as_nanos()));
        let finish_units = start.saturating_add(bytes as u128 * 8 * NANOS_PER_SEC);
        if self.end == TraceEnd::Stop && finish_units > self.period_units() {
            return Err(TraceEnded {
                trace: self.source.clone(),
                end: self.period(),
                handed_at: t,
                bytes,
            });
        }
        self.consumed = finish_units;
        self.last_departure = duration_from_nanos(self.time_reaching(finish_units));
        Ok(self.last_departure.saturating_add(self.one_way_delay))
    }

    /// Capacity over one period: the mean of the per-slot rates.
    fn mean_rate_bps(&self) -> f64 {
        self.period_units() as f64 / (self.rates_bps.len() as u128 * self.slot_ns) as f64
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

    /// Seconds 0..3: 8 kbit/s (1000 B/s), outage, 16 kbit/s (2000 B/s).
    const THREE_ROWS: &str = "second,rate_kbps,rsrp,rtt\n0,8,-90,-\n1,0,-120,80.5\n2,16,-95,40\n";

    fn three_rows(end: TraceEnd) -> ThroughputTrace {
        let cols = CsvColumns {
            rsrp_dbm: Some("rsrp".into()),
            rtt_ms: Some("rtt".into()),
            ..CsvColumns::rate_only("rate_kbps", RateUnit::Kbps)
        };
        ThroughputTrace::parse("three.csv", THREE_ROWS, &cols, ms(10), end).unwrap()
    }

    #[test]
    fn three_row_trace_delivery_times_are_exact() {
        let mut t = three_rows(TraceEnd::Loop);
        assert_eq!(t.rates_bps(), &[8_000, 0, 16_000]);
        assert_eq!(t.mean_rate_bps(), 8_000.0);
        // 500 B at 1000 B/s: 0.5 s, + 10 ms.
        assert_eq!(t.transmit(Duration::ZERO, 500).unwrap(), ms(510));
        // Queued behind it: 250 B more → 0.75 s.
        assert_eq!(t.transmit(ms(100), 250).unwrap(), ms(760));
        // 750 B from 0.75 s: 250 B in second 0, outage in second 1, 500 B in 0.25 s of
        // second 2 (spans the outage and the rate change): 2.25 s.
        assert_eq!(t.transmit(ms(700), 750).unwrap(), ms(2_260));
        // Handed over during the outage on an idle link... the link is busy until 2.25 s
        // here; 1500 B at 2000 B/s from 2.25 s: 0.75 s → 3.0 s exactly (end of period).
        assert_eq!(t.transmit(ms(1_500), 1500).unwrap(), ms(3_010));
        // A zero-byte chunk follows the queue.
        assert_eq!(t.transmit(ms(2_000), 0).unwrap(), ms(3_010));
    }

    #[test]
    fn a_chunk_arriving_in_an_outage_waits_for_it_to_end() {
        let mut t = three_rows(TraceEnd::Loop);
        // Idle link, handed over at 1.3 s: nothing until 2 s, then 200 B at 2000 B/s.
        assert_eq!(t.transmit(ms(1_300), 200).unwrap(), ms(2_110));
        // A chunk that fills second 0 exactly finishes at 1 s, not after the outage.
        let mut t = three_rows(TraceEnd::Loop);
        assert_eq!(t.transmit(Duration::ZERO, 1000).unwrap(), ms(1_010));
        // Non-integer ns: 1 B at 8 kbit/s = 1 ms; 3 B at 16 kbit/s from 2 s = 1.5 ms.
        let mut t = three_rows(TraceEnd::Loop);
        assert_eq!(
            t.transmit(ms(2_000), 3).unwrap(),
            Duration::from_micros(2_011_500)
        );
    }

    #[test]
    fn the_trace_loops_with_period_equal_to_its_rows() {
        let mut t = three_rows(TraceEnd::Loop);
        assert_eq!(t.period(), Duration::from_secs(3));
        // One period carries 1000 + 0 + 2000 = 3000 B; 3500 B end 0.5 s into repetition 1.
        assert_eq!(t.transmit(Duration::ZERO, 3500).unwrap(), ms(3_510));
        // Far later: 100 s = 33·3 + 1 → in an outage; waits until 101 s, then 1000 B = 0.5 s.
        assert_eq!(
            t.transmit(Duration::from_secs(100), 1000).unwrap(),
            ms(101_510)
        );
        // Exactly two periods of data from zero end at the last byte of second 5 (= 6 s).
        let mut t = three_rows(TraceEnd::Loop);
        assert_eq!(t.transmit(Duration::ZERO, 6000).unwrap(), ms(6_010));
        // Trailing outage: the period's last byte is at 1 s, not at 2 s.
        let mut t =
            ThroughputTrace::from_rates("m", vec![8_000, 0], Duration::ZERO, TraceEnd::Loop)
                .unwrap();
        assert_eq!(t.transmit(Duration::ZERO, 2000).unwrap(), ms(3_000));
        // Metrics loop too.
        let t = three_rows(TraceEnd::Loop);
        assert_eq!(t.metrics_at(ms(4_200)).unwrap().rtt_ms, Some(80.5));
        assert_eq!(t.rate_at(ms(5_999)), 16_000);
    }

    #[test]
    fn a_stopping_trace_refuses_chunks_past_its_end() {
        let mut t = three_rows(TraceEnd::Stop);
        assert_eq!(t.transmit(Duration::ZERO, 3000).unwrap(), ms(3_010));
        let err = t.transmit(ms(5), 1).unwrap_err();
        assert_eq!(
            err,
            TraceEnded {
                trace: PathBuf::from("three.csv"),
                end: Duration::from_secs(3),
                handed_at: ms(5),
                bytes: 1
            }
        );
        // Refusal leaves the state alone.
        let mut t = three_rows(TraceEnd::Stop);
        assert!(t.transmit(Duration::ZERO, 3001).is_err());
        assert_eq!(t.transmit(Duration::ZERO, 1000).unwrap(), ms(1_010));
        // Arriving after the end.
        let mut t = three_rows(TraceEnd::Stop);
        assert!(t.transmit(ms(3_000), 1).is_err());
        assert_eq!(t.metrics_at(ms(3_000)), None);
        assert_eq!(t.rate_at(ms(3_000)), 0);
    }

    #[test]
    fn metrics_are_read_per_second_with_missing_values_as_none() {
        let t = three_rows(TraceEnd::Loop);
        let m0 = t.metrics_at(ms(999)).unwrap();
        assert_eq!(
            (m0.rsrp_dbm, m0.rtt_ms, m0.snr_db),
            (Some(-90.0), None, None)
        );
        let m2 = t.metrics_at(ms(2_000)).unwrap();
        assert_eq!((m2.rsrp_dbm, m2.rtt_ms), (Some(-95.0), Some(40.0)));
    }

    #[test]
    fn csv_quotes_bom_crlf_and_blank_lines_are_handled() {
        let text = "\u{feff}\"name\",\"rate, kbps\"\r\n\"a \"\"x\"\"\",\" 8\"\r\n\r\nb,16\r\n\n";
        let t = ThroughputTrace::parse(
            "q.csv",
            text,
            &CsvColumns::rate_only("rate, kbps", RateUnit::Kbps),
            Duration::ZERO,
            TraceEnd::Loop,
        )
        .unwrap();
        assert_eq!(t.rates_bps(), &[8_000, 16_000]);
        assert_eq!(
            split_fields("a,\"b\"\"c\",,d"),
            Some(vec!["a".into(), "b\"c".into(), String::new(), "d".into()])
        );
        assert_eq!(split_fields("a,\"b"), None);
    }

    #[test]
    fn selected_rows_only() {
        let text = "carrier,run,mbps\nX,1,1.5\nY,1,-3\nX,2,2\nX,1,0.25\n";
        let cols = CsvColumns {
            select: vec![("carrier".into(), "X".into()), ("run".into(), "1".into())],
            ..CsvColumns::rate_only("mbps", RateUnit::Mbps)
        };
        let t =
            ThroughputTrace::parse("s.csv", text, &cols, Duration::ZERO, TraceEnd::Loop).unwrap();
        assert_eq!(t.rates_bps(), &[1_500_000, 250_000]);
    }

    #[test]
    fn parse_errors_carry_file_and_line_numbers() {
        let cols = CsvColumns {
            rtt_ms: Some("rtt".into()),
            ..CsvColumns::rate_only("kbps", RateUnit::Kbps)
        };
        let parse = |text: &str| {
            ThroughputTrace::parse("f.csv", text, &cols, Duration::ZERO, TraceEnd::Loop)
        };
        match parse("kbps,rtt\n1,2\nabc,3\n") {
            Err(CsvTraceError::NotANumber {
                path,
                line: 3,
                column,
                text,
            }) => {
                assert_eq!(
                    (path, column, text),
                    (PathBuf::from("f.csv"), "kbps".into(), "abc".into())
                );
            }
            other => panic!("{other:?}"),
        }
        for bad in ["-", "", "nan", "inf", "1e999"] {
            assert!(
                matches!(
                    parse(&format!("kbps,rtt\n1,2\n{bad},3\n")),
                    Err(CsvTraceError::NotANumber { line: 3, .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("kbps,rtt\n1,x\n"),
            Err(CsvTraceError::NotANumber { line: 2, .. })
        ));
        assert!(matches!(
            parse("kbps,rtt\n1,2\n\n-5,1\n"),
            Err(CsvTraceError::NegativeRate { line: 4, value, .. }) if value == -5.0
        ));
        assert!(matches!(
            parse("kbps,rtt\n1,2\n3\n"),
            Err(CsvTraceError::FieldCount {
                line: 3,
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            parse("kbps,rtt\n1,2,3\n"),
            Err(CsvTraceError::FieldCount {
                line: 2,
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            parse("kbps,rtt\n\"1,2\n"),
            Err(CsvTraceError::UnterminatedQuote { line: 2, .. })
        ));
        assert!(matches!(
            parse("rate,rtt\n1,2\n"),
            Err(CsvTraceError::MissingColumn { line: 1, ref column, .. }) if column == "kbps"
        ));
        assert!(matches!(parse(""), Err(CsvTraceError::NoHeader { .. })));
        assert!(matches!(
            parse("kbps,rtt\n"),
            Err(CsvTraceError::Empty { .. })
        ));
        assert!(matches!(
            parse("kbps,rtt\n0,1\n0,1\n"),
            Err(CsvTraceError::ZeroCapacity { .. })
        ));
        assert_eq!(
            parse("kbps,rtt\n1,2\n-5,1\n").unwrap_err().to_string(),
            "f.csv:3: column \"kbps\": negative rate -5"
        );
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("ecspec-link-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.csv");
        std::fs::write(&path, "DL_bitrate\n5\n7\nx\n").unwrap();
        let cols = CsvColumns::rate_only("DL_bitrate", RateUnit::Kbps);
        let msg = ThroughputTrace::from_file(&path, &cols, Duration::ZERO, TraceEnd::Loop)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with(&format!("{}:4: ", path.display())), "{msg}");
        let missing = dir.join("missing.csv");
        assert!(matches!(
            ThroughputTrace::from_file(&missing, &cols, Duration::ZERO, TraceEnd::Loop),
            Err(CsvTraceError::Io { path, .. }) if path == missing
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `$ECSPEC_DATA_DIR`, or `shared/data` beside the repository.
    fn data_dir() -> PathBuf {
        std::env::var_os("ECSPEC_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
            })
    }

    /// Mean of column `col` (0-based) over data rows selected by `keep`, by plain splitting
    /// (independent of the parser under test), and the row count.
    fn column_mean(
        path: &Path,
        col: usize,
        scale: f64,
        keep: impl Fn(&[&str]) -> bool,
    ) -> (usize, f64) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut n = 0;
        let mut sum = 0.0;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if keep(&f) {
                n += 1;
                sum += f[col].parse::<f64>().unwrap() * scale;
            }
        }
        (n, sum / n as f64)
    }

    #[test]
    fn parses_a_real_irish_5g_trace() {
        let path = data_dir().join("channel/irish_5g_raca2020/static/B_2020.02.14_13.21.26.csv");
        if !path.exists() {
            println!(
                "skipped: {} not found (set ECSPEC_DATA_DIR)",
                path.display()
            );
            return;
        }
        let t = ThroughputTrace::from_file(
            &path,
            &CsvColumns::irish_5g(Direction::Downlink),
            ms(20),
            TraceEnd::Loop,
        )
        .unwrap();
        assert_eq!(t.seconds(), 1013); // SOURCES.md: 1,013 rows
        let (n, mean) = column_mean(&path, 12, 1000.0, |_| true); // DL_bitrate
        assert_eq!(n, 1013);
        assert_eq!(t.mean_rate_bps(), mean);
        // Row 1 (line 2): RSRP −103, RSRQ −15, SNR 5.0, CQI 12, no ping.
        let m = t.metrics_at(Duration::ZERO).unwrap();
        assert_eq!(
            *m,
            SignalMetrics {
                rsrp_dbm: Some(-103.0),
                rsrq_db: Some(-15.0),
                snr_db: Some(5.0),
                cqi: Some(12.0),
                rtt_ms: None
            }
        );
        assert!(t.metrics.iter().any(|m| m.rtt_ms.is_some()));
        let up = ThroughputTrace::from_file(
            &path,
            &CsvColumns::irish_5g(Direction::Uplink),
            ms(20),
            TraceEnd::Loop,
        )
        .unwrap();
        let (_, up_mean) = column_mean(&path, 13, 1000.0, |_| true); // UL_bitrate
        assert_eq!(up.mean_rate_bps(), up_mean);
    }

    #[test]
    fn parses_real_5gophers_traces() {
        let dir = data_dir().join("channel/umn_5gophers_2020");
        let driving = dir.join("mobility/car-driving-trace-1.csv");
        let tput = dir.join("throughput/all_carriers_tcp_throughput.csv");
        if !driving.exists() || !tput.exists() {
            println!(
                "skipped: 5Gophers traces not found under {} (set ECSPEC_DATA_DIR)",
                dir.display()
            );
            return;
        }
        let t = ThroughputTrace::from_file(
            &driving,
            &CsvColumns::gophers_driving("Verizon"),
            ms(20),
            TraceEnd::Loop,
        )
        .unwrap();
        assert_eq!(t.seconds(), 120);
        let (n, mean) = column_mean(&driving, 5, 1e6, |_| true);
        assert_eq!(n, 120);
        // Each second rounded to whole bit/s: the mean is within 0.5 bit/s.
        assert!(
            (t.mean_rate_bps() - mean).abs() <= 0.5,
            "{} vs {mean}",
            t.mean_rate_bps()
        );

        let cols = CsvColumns::gophers_throughput("SPRINT", 1, "US-East", 1);
        let t = ThroughputTrace::from_file(&tput, &cols, ms(20), TraceEnd::Loop).unwrap();
        let (n, mean) = column_mean(&tput, 6, 1e6, |f| {
            f[1] == "SPRINT" && f[2] == "1" && f[3] == "US-East" && f[4] == "1"
        });
        assert_eq!((t.seconds(), n), (60, 60));
        assert!(
            (t.mean_rate_bps() - mean).abs() <= 0.5,
            "{} vs {mean}",
            t.mean_rate_bps()
        );
    }
}
