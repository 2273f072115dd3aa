//! How well the edge's round estimator predicts the network time of the next round
//! (RTT + S_u·8/R_u) on the real traces of the shared data directory: 2000 replayed rounds per
//! trace in virtual time ([`ecspec_edge::replay`]), after 50 warm-up rounds.
//!
//! ```sh
//! cargo run --release -p ecspec-edge --example estimator_on_traces   # ECSPEC_DATA_DIR or ../shared/data
//! ```

use std::path::PathBuf;

use ecspec_edge::replay::{error_stats, replay, ReplaySettings};
use ecspec_link::{CsvColumns, CsvSource, Direction, LinkConfig, LinkOptions, TraceEnd};

fn main() {
    let data = std::env::var_os("ECSPEC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let ch = data.join("channel");
    if !ch.is_dir() {
        eprintln!(
            "skipped: no traces under {} (set ECSPEC_DATA_DIR)",
            ch.display()
        );
        return;
    }
    let mm = ch.join("mahimahi/us_cellular_2013_2016");
    let mut cases: Vec<(String, LinkOptions)> = Vec::new();
    for (name, stem) in [
        ("ATT LTE driving", "ATT-LTE-driving"),
        ("T-Mobile UMTS driving", "TMobile-UMTS-driving"),
        ("Verizon LTE short", "Verizon-LTE-short"),
    ] {
        cases.push((
            format!("{name} (Mahimahi, RTT 60 ms)"),
            LinkOptions {
                up_trace: Some(mm.join(format!("{stem}.up"))),
                down_trace: Some(mm.join(format!("{stem}.down"))),
                rtt_ms: Some(60.0),
                trace_end: TraceEnd::Loop,
                ..Default::default()
            },
        ));
    }
    for (kind, file) in [
        ("static", "B_2020.01.16_10.43.34.csv"),
        ("driving", "B_2019.12.16_14.23.32.csv"),
    ] {
        let path = ch.join("irish_5g_raca2020").join(kind).join(file);
        let src = |d| CsvSource {
            path: path.clone(),
            columns: CsvColumns::irish_5g(d),
        };
        cases.push((
            format!("Irish 5G {kind} (downlink trace, uplink 10 Mbit/s, RTT from PINGAVG)"),
            LinkOptions {
                down_csv: Some(src(Direction::Downlink)),
                rtt_from_trace: true,
                ..Default::default()
            },
        ));
    }
    cases.push((
        "constant 10/20 Mbit/s, 60 ms ± 10 ms jitter".into(),
        LinkOptions {
            delay_jitter_ms: Some(10.0),
            ..Default::default()
        },
    ));
    println!("| link | mean network time | prediction error: mean | median | p95 |");
    println!("|---|---|---|---|---|");
    for (name, opts) in cases {
        let mut link = match LinkConfig::from_options(&opts) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped {name}: {e}");
                continue;
            }
        };
        match replay(&mut link, &ReplaySettings::default()) {
            Ok(r) => {
                let (mean, med, p95, actual) = error_stats(&r, 50);
                println!(
                    "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                    actual * 1e3,
                    mean * 1e3,
                    med * 1e3,
                    p95 * 1e3
                );
            }
            Err(e) => eprintln!("skipped {name}: {e}"),
        }
    }
}
