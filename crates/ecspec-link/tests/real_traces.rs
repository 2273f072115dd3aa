//! Parses the real Mahimahi traces under `$ECSPEC_DATA_DIR/channel/mahimahi/` (default: the
//! shared data folder beside the workspace) and checks them against `data/SOURCES.md` and
//! against an independent count. Skipped, with a message, where the data is absent.

use std::path::PathBuf;
use std::time::Duration;

use ecspec_link::{LinkModel, MahimahiTrace, TraceEnd};

/// (file under `channel/mahimahi/`, lines, mean capacity in Mbit/s) as `SOURCES.md` lists.
const TRACES: [(&str, usize, f64); 13] = [
    ("us_cellular_2013_2016/Verizon-LTE-short.down", 58_655, 5.03),
    ("us_cellular_2013_2016/Verizon-LTE-short.up", 69_367, 5.95),
    (
        "us_cellular_2013_2016/TMobile-LTE-short.down",
        194_846,
        16.70,
    ),
    ("us_cellular_2013_2016/TMobile-LTE-short.up", 155_381, 13.32),
    (
        "us_cellular_2013_2016/TMobile-LTE-driving.down",
        505_078,
        12.77,
    ),
    (
        "us_cellular_2013_2016/ATT-LTE-driving-2016.down",
        45_604,
        4.56,
    ),
    (
        "us_cellular_2013_2016/ATT-LTE-driving-2016.up",
        19_101,
        1.91,
    ),
    ("us_cellular_2013_2016/ATT-LTE-driving.down", 338_895, 5.17),
    ("us_cellular_2013_2016/ATT-LTE-driving.up", 70_336, 0.83),
    (
        "us_cellular_2013_2016/TMobile-UMTS-driving.down",
        156_262,
        2.02,
    ),
    (
        "us_cellular_2013_2016/TMobile-UMTS-driving.up",
        73_197,
        0.94,
    ),
    ("orange_4g_2022/orange-4G-traces-A-up.pps", 122_734, 2.44),
    (
        "orange_4g_2022/orange-4G-traces-highway-up.pps",
        461_092,
        6.81,
    ),
];

fn mahimahi_dir() -> PathBuf {
    let data = std::env::var_os("ECSPEC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    data.join("channel").join("mahimahi")
}

#[test]
fn real_traces_parse_with_the_documented_line_counts_and_capacities() {
    let dir = mahimahi_dir();
    if !dir.is_dir() {
        eprintln!(
            "skipped: Mahimahi traces not found at {} (set ECSPEC_DATA_DIR)",
            dir.display()
        );
        return;
    }
    for (name, lines, mbps) in TRACES {
        let path = dir.join(name);
        if !path.is_file() {
            eprintln!("skipped: {} not found", path.display());
            continue;
        }
        let trace = MahimahiTrace::from_file(&path, Duration::ZERO, TraceEnd::Loop)
            .unwrap_or_else(|e| panic!("{e}"));

        // An independent count: non-empty lines, and the last one as the period.
        let text = std::fs::read_to_string(&path).unwrap();
        let counted = text.split('\n').filter(|l| !l.trim().is_empty()).count();
        let last_ms: u64 = text
            .trim_end()
            .rsplit('\n')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let expected_bps = counted as f64 * 1500.0 * 8.0 / (last_ms as f64 / 1000.0);

        assert_eq!(trace.opportunities(), lines, "{name}");
        assert_eq!(counted, lines, "{name}");
        assert_eq!(trace.period(), Duration::from_millis(last_ms), "{name}");
        let rate = trace.mean_rate_bps();
        assert!(
            (rate - expected_bps).abs() <= 1e-9 * expected_bps,
            "{name}: {rate} vs {expected_bps}"
        );
        // SOURCES.md rounds to 0.01 Mbit/s.
        assert!(
            (rate / 1e6 - mbps).abs() <= 0.005 + 1e-9,
            "{name}: {} Mbit/s vs {mbps}",
            rate / 1e6
        );
    }
}

#[test]
fn a_real_trace_delivers_one_period_of_data_exactly_at_its_end() {
    let path = mahimahi_dir().join("us_cellular_2013_2016/Verizon-LTE-short.up");
    if !path.is_file() {
        eprintln!(
            "skipped: {} not found (set ECSPEC_DATA_DIR)",
            path.display()
        );
        return;
    }
    let delay = Duration::from_millis(30);
    let mut trace = MahimahiTrace::from_file(&path, delay, TraceEnd::Loop).unwrap();
    let ts = trace.timestamps_ms().to_vec();
    let (n, period) = (ts.len(), *ts.last().unwrap());
    // Exactly N·1500 bytes at t = 0 use every opportunity of the first period: the last
    // byte leaves at the last timestamp.
    assert_eq!(
        trace.transmit(Duration::ZERO, n * 1500).unwrap(),
        Duration::from_millis(period) + delay
    );
    // One more byte needs the first opportunity of the second period: P + ts[0].
    assert_eq!(
        trace.transmit(Duration::ZERO, 1).unwrap(),
        Duration::from_millis(period + ts[0]) + delay
    );
    // Played once, the same trace refuses that byte.
    let mut once = MahimahiTrace::from_file(&path, delay, TraceEnd::Stop).unwrap();
    assert!(once.transmit(Duration::ZERO, n * 1500).is_ok());
    assert!(once.transmit(Duration::ZERO, 1).is_err());
    // A chunk handed over at 1000.5 ms: the first opportunity at or after 1001 ms.
    let mut fresh = MahimahiTrace::from_file(&path, Duration::ZERO, TraceEnd::Loop).unwrap();
    let first = *ts.iter().find(|&&t| t >= 1001).unwrap();
    assert_eq!(
        fresh.transmit(Duration::from_micros(1_000_500), 1).unwrap(),
        Duration::from_millis(first)
    );
}
