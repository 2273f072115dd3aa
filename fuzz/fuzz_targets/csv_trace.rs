//! `ThroughputTrace::parse` on arbitrary text under every column preset the binary offers
//! (`--link-csv-format`): the first byte picks the preset, the rest is the CSV text. A trace
//! that parses is then driven a little: a few chunks through `transmit`, whose delivery times
//! must not go backwards, and `metrics_at`.
#![no_main]

use std::time::Duration;

use ecspec_link::{CsvColumns, Direction, LinkModel, RateUnit, ThroughputTrace, TraceEnd};
use libfuzzer_sys::fuzz_target;

fn columns(pick: u8) -> CsvColumns {
    match pick % 6 {
        0 => CsvColumns::irish_5g(Direction::Downlink),
        1 => CsvColumns::irish_5g(Direction::Uplink),
        2 => CsvColumns::gophers_walking(),
        3 => CsvColumns::gophers_driving("Verizon"),
        4 => CsvColumns::gophers_throughput("VERIZON", 8, "US-East", 1),
        _ => CsvColumns::rate_only("rate", RateUnit::Kbps),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let cols = columns(pick);
    let end = if pick & 0x80 == 0 {
        TraceEnd::Loop
    } else {
        TraceEnd::Stop
    };
    let mut trace =
        match ThroughputTrace::parse("fuzz.csv", &text, &cols, Duration::from_millis(5), end) {
            Ok(trace) => trace,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
    assert!(trace.seconds() > 0 && trace.rates_bps().iter().any(|&r| r > 0));
    assert!(trace.mean_rate_bps() > 0.0);
    let mut last = Duration::ZERO;
    let mut t = Duration::ZERO;
    for w in rest.chunks(4).take(8) {
        let step_ms = u64::from(w[0]) * u64::from(w.get(1).copied().unwrap_or(1));
        let bytes =
            usize::from(w.get(2).copied().unwrap_or(0)) << (w.get(3).copied().unwrap_or(0) % 9);
        t += Duration::from_millis(step_ms);
        let _ = trace.metrics_at(t);
        let _ = trace.rate_at(t);
        match trace.transmit(t, bytes) {
            Ok(at) => {
                assert!(at >= t, "delivered before it was handed over");
                assert!(at >= last, "deliveries out of order");
                last = at;
            }
            Err(ended) => {
                assert_eq!(end, TraceEnd::Stop);
                let _ = ended.to_string();
                break;
            }
        }
    }
});
