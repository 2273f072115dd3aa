//! Aggregation and output: per system and load level the latency percentiles, goodput,
//! throughput and cloud cost of its requests (field names after vLLM's `benchmark_serving`:
//! `ttft`, `tpot`, `goodput`, `throughput`), each system's capacity at a TPOT SLO, and the
//! Markdown table, CSV and JSON they are written as.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::driver::{LevelRun, Load};
use crate::percentile::Percentiles;

/// One system at one load level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelReport {
    /// The system.
    pub system: String,
    /// `closed` or `open`.
    pub load: &'static str,
    /// Concurrent edges (closed loop) or requests per second (open loop).
    pub load_value: f64,
    /// Requests that ended normally.
    pub completed: usize,
    /// Requests that failed (refused, broken off, …); left out of every latency figure.
    pub failed: usize,
    /// From the level's start until its last request ended, s.
    pub duration_s: f64,
    /// Tokens committed by completed requests.
    pub total_output_tokens: usize,
    /// Time to first token over completed requests, ms (nearest rank).
    pub ttft_ms: Option<Percentiles>,
    /// Time per output token after the first over completed requests of ≥ 2 tokens, ms:
    /// per request (end − first token) / (tokens − 1).
    pub tpot_ms: Option<Percentiles>,
    /// Per-user goodput: the mean over completed requests of each one's committed tokens per
    /// second (start to end), tok/s.
    pub mean_goodput_tok_s: Option<f64>,
    /// Cloud throughput: committed tokens of completed requests per second of the level,
    /// tok/s (vLLM's `output_throughput`).
    pub output_throughput_tok_s: f64,
    /// Completed requests per second of the level.
    pub request_throughput_req_s: f64,
    /// Target forward passes the sessions asked for (prefill + rounds, as the edges count
    /// them) per committed token; batching may serve several in one iteration.
    pub target_passes_per_token: Option<f64>,
    /// The cloud's batched iterations per committed token (None: no counters, or none moved).
    pub iterations_per_token: Option<f64>,
    /// Rows (token positions) the cloud computed per committed token.
    pub rows_per_token: Option<f64>,
    /// Mean rows per iteration (batch size in tokens).
    pub mean_rows_per_iteration: Option<f64>,
    /// Drafted tokens accepted / drafted (None: nothing drafted).
    pub acceptance_rate: Option<f64>,
    /// Whether the level's p95 TPOT is within the SLO with no failed request.
    pub within_slo: bool,
    /// Greedy runs: whether every completed request committed the same tokens as the
    /// reference request for its prompt (None: not checked).
    pub lossless: Option<bool>,
}

/// A system's capacity: the highest load level whose p95 TPOT is within the SLO.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// The system.
    pub system: String,
    /// `closed` (edges) or `open` (requests per second).
    pub load: &'static str,
    /// The highest load within the SLO (None: no level was).
    pub capacity: Option<f64>,
    /// The SLO, p95 TPOT in ms.
    pub slo_tpot_ms: f64,
}

/// The capacity among `(load, within SLO)` levels: the highest load whose level is within
/// the SLO, taken literally (a level above a failing one still counts, since live runs are
/// noisy and a sweep may be sparse). None when no level is within.
pub fn capacity(levels: impl IntoIterator<Item = (f64, bool)>) -> Option<f64> {
    levels
        .into_iter()
        .filter(|&(_, ok)| ok)
        .map(|(l, _)| l)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))))
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && num.is_finite()).then(|| num / den)
}

/// The reference tokens per prompt for the lossless check: from requests served alone (a
/// closed loop of one edge) when there are such, else from the first completed request for
/// that prompt in run order.
fn references(runs: &[LevelRun]) -> HashMap<usize, &[u32]> {
    let mut refs: HashMap<usize, &[u32]> = HashMap::new();
    let alone = |r: &LevelRun| r.load == Load::Closed { edges: 1 };
    for pass in [true, false] {
        for run in runs.iter().filter(|r| !pass || alone(r)) {
            for q in run.requests.iter().filter(|q| q.error.is_none()) {
                refs.entry(q.prompt).or_insert(&q.tokens);
            }
        }
    }
    refs
}

/// One report per run, in order. `slo_tpot_ms` decides [`LevelReport::within_slo`]; with
/// `greedy`, outputs are checked against the reference request of their prompt (greedy
/// output does not depend on the system, the load or what shares a batch).
pub fn level_reports(runs: &[LevelRun], slo_tpot_ms: f64, greedy: bool) -> Vec<LevelReport> {
    let refs = greedy.then(|| references(runs));
    runs.iter()
        .map(|run| {
            let done: Vec<_> = run.requests.iter().filter(|q| q.error.is_none()).collect();
            let ttft: Vec<f64> = done.iter().filter_map(|q| q.ttft_s).collect();
            let tpot: Vec<f64> = done.iter().filter_map(|q| q.tpot_s()).collect();
            let goodput: Vec<f64> = done.iter().filter_map(|q| q.goodput_tok_s()).collect();
            let tokens: usize = done.iter().map(|q| q.generated_tokens).sum();
            let passes: u64 = done.iter().map(|q| q.target_forward_passes).sum();
            let drafted: u64 = done.iter().map(|q| q.drafted_tokens).sum();
            let accepted: u64 = done.iter().map(|q| q.accepted_tokens).sum();
            let failed = run.requests.len() - done.len();
            let tpot_ms = Percentiles::of(&tpot).map(|p| p.scaled(1e3));
            let server = run.server.filter(|s| s.iterations > 0);
            LevelReport {
                system: run.system.clone(),
                load: run.load.kind(),
                load_value: run.load.value(),
                completed: done.len(),
                failed,
                duration_s: run.duration_s,
                total_output_tokens: tokens,
                ttft_ms: Percentiles::of(&ttft).map(|p| p.scaled(1e3)),
                tpot_ms,
                mean_goodput_tok_s: ratio(goodput.iter().sum(), goodput.len() as f64),
                output_throughput_tok_s: ratio(tokens as f64, run.duration_s).unwrap_or(0.0),
                request_throughput_req_s: ratio(done.len() as f64, run.duration_s).unwrap_or(0.0),
                target_passes_per_token: ratio(passes as f64, tokens as f64),
                iterations_per_token: server
                    .and_then(|s| ratio(s.iterations as f64, tokens as f64)),
                rows_per_token: server.and_then(|s| ratio(s.rows as f64, tokens as f64)),
                mean_rows_per_iteration: server
                    .and_then(|s| ratio(s.rows as f64, s.iterations as f64)),
                acceptance_rate: ratio(accepted as f64, drafted as f64),
                within_slo: failed == 0 && tpot_ms.is_some_and(|p| p.p95 <= slo_tpot_ms),
                lossless: refs.as_ref().map(|refs| {
                    done.iter().all(|q| {
                        refs.get(&q.prompt)
                            .is_none_or(|r| *r == q.tokens.as_slice())
                    })
                }),
            }
        })
        .collect()
}

/// Each system's capacity (systems in first-seen order), one per load kind it ran.
pub fn capacities(reports: &[LevelReport], slo_tpot_ms: f64) -> Vec<Capacity> {
    let mut keys: Vec<(&str, &'static str)> = Vec::new();
    for r in reports {
        if !keys.contains(&(r.system.as_str(), r.load)) {
            keys.push((r.system.as_str(), r.load));
        }
    }
    keys.into_iter()
        .map(|(system, load)| Capacity {
            system: system.to_string(),
            load,
            capacity: capacity(
                reports
                    .iter()
                    .filter(|r| r.system == system && r.load == load)
                    .map(|r| (r.load_value, r.within_slo)),
            ),
            slo_tpot_ms,
        })
        .collect()
}

/// A load value for people: `16` edges, `2.5` req/s.
fn load_text(load: &str, v: f64) -> String {
    match load {
        "closed" if v == 1.0 => "1 edge".into(),
        "closed" => format!("{v} edges"),
        _ => format!("{v} req/s"),
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

fn pct(p: Option<Percentiles>) -> String {
    p.map_or("n/a".into(), |p| {
        format!("{:.1} / {:.1} / {:.1}", p.p50, p.p95, p.p99)
    })
}

/// The Markdown report: one table row per system and level, then each system's capacity.
pub fn markdown(reports: &[LevelReport], caps: &[Capacity], slo_tpot_ms: f64) -> String {
    let mut o = String::new();
    o.push_str(
        "| system | load | done | failed | TTFT p50 / p95 / p99 (ms) | TPOT p50 / p95 / p99 (ms) \
         | goodput per user (tok/s) | throughput (tok/s) | passes / token | rows / token \
         | rows / iteration | accept | p95 TPOT ≤ SLO | lossless |\n",
    );
    o.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|\n");
    for r in reports {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            r.system,
            load_text(r.load, r.load_value),
            r.completed,
            r.failed,
            pct(r.ttft_ms),
            pct(r.tpot_ms),
            opt(r.mean_goodput_tok_s, 1),
            r.output_throughput_tok_s,
            opt(r.target_passes_per_token, 3),
            opt(r.rows_per_token, 3),
            opt(r.mean_rows_per_iteration, 2),
            opt(r.acceptance_rate, 3),
            if r.within_slo { "yes" } else { "no" },
            match r.lossless {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    let _ = write!(o, "\nCapacity at p95 TPOT ≤ {slo_tpot_ms} ms:");
    for (i, c) in caps.iter().enumerate() {
        let sep = if i == 0 { " " } else { " · " };
        let v = c
            .capacity
            .map_or("none of the levels".into(), |v| load_text(c.load, v));
        let _ = write!(o, "{sep}{} {v}", c.system);
    }
    o.push('\n');
    if reports.iter().all(|r| r.rows_per_token.is_none()) {
        o.push_str(
            "\nRows and iterations: n/a (the cloud's counters are not available or did not move).\n",
        );
    }
    o
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "system,load,load_value,completed,failed,duration_s,\
total_output_tokens,p50_ttft_ms,p95_ttft_ms,p99_ttft_ms,p50_tpot_ms,p95_tpot_ms,p99_tpot_ms,\
mean_goodput_tok_s,output_throughput_tok_s,request_throughput_req_s,target_passes_per_token,\
iterations_per_token,rows_per_token,mean_rows_per_iteration,acceptance_rate,within_slo,lossless";

/// One CSV line per report under [`CSV_HEADER`]; a missing value is an empty field.
pub fn csv(reports: &[LevelReport]) -> String {
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let mut o = String::from(CSV_HEADER);
    o.push('\n');
    for r in reports {
        let cells = [
            csv_field(&r.system),
            r.load.to_string(),
            r.load_value.to_string(),
            r.completed.to_string(),
            r.failed.to_string(),
            format!("{}", r.duration_s),
            r.total_output_tokens.to_string(),
            f(r.ttft_ms.map(|p| p.p50)),
            f(r.ttft_ms.map(|p| p.p95)),
            f(r.ttft_ms.map(|p| p.p99)),
            f(r.tpot_ms.map(|p| p.p50)),
            f(r.tpot_ms.map(|p| p.p95)),
            f(r.tpot_ms.map(|p| p.p99)),
            f(r.mean_goodput_tok_s),
            format!("{}", r.output_throughput_tok_s),
            format!("{}", r.request_throughput_req_s),
            f(r.target_passes_per_token),
            f(r.iterations_per_token),
            f(r.rows_per_token),
            f(r.mean_rows_per_iteration),
            f(r.acceptance_rate),
            r.within_slo.to_string(),
            r.lossless.map_or(String::new(), |b| b.to_string()),
        ];
        o.push_str(&cells.join(","));
        o.push('\n');
    }
    o
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The JSON report: `setup` (whatever the caller describes the run with), the SLO, one object
/// per level (percentiles as `{p50, p95, p99}` in ms) and the capacities; with `requests`,
/// every request's record under its level.
pub fn json(
    setup: serde_json::Value,
    reports: &[LevelReport],
    caps: &[Capacity],
    runs: Option<&[LevelRun]>,
) -> serde_json::Value {
    let mut levels = serde_json::to_value(reports).unwrap_or_default();
    if let (Some(runs), serde_json::Value::Array(ls)) = (runs, &mut levels) {
        for (l, run) in ls.iter_mut().zip(runs) {
            if let serde_json::Value::Object(m) = l {
                m.insert(
                    "requests".into(),
                    serde_json::to_value(&run.requests).unwrap_or_default(),
                );
            }
        }
    }
    serde_json::json!({
        "setup": setup,
        "slo_tpot_ms": caps.first().map(|c| c.slo_tpot_ms),
        "levels": levels,
        "capacity": caps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{RequestRecord, ServerDelta};

    fn req(seq: usize, prompt: usize, tokens: Vec<u32>, ttft: f64, latency: f64) -> RequestRecord {
        RequestRecord {
            seq,
            edge: seq,
            prompt,
            start_s: 0.0,
            ttft_s: Some(ttft),
            latency_s: latency,
            generated_tokens: tokens.len(),
            prompt_tokens: 5,
            target_forward_passes: 3,
            drafted_tokens: 8,
            accepted_tokens: 4,
            uplink_bytes: 0,
            downlink_bytes: 0,
            tokens,
            error: None,
        }
    }

    fn run(system: &str, edges: usize, requests: Vec<RequestRecord>) -> LevelRun {
        LevelRun {
            system: system.into(),
            load: Load::Closed { edges },
            requests,
            duration_s: 2.0,
            server: Some(ServerDelta {
                iterations: 4,
                rows: 20,
                prefill_rows: 10,
                busy_s: 0.5,
                refused_hellos: 0,
            }),
        }
    }

    #[test]
    fn capacity_is_the_highest_level_within_the_slo() {
        assert_eq!(
            capacity([(1.0, true), (4.0, true), (16.0, false)]),
            Some(4.0)
        );
        assert_eq!(
            capacity([(16.0, true), (1.0, true), (4.0, false)]),
            Some(16.0)
        );
        assert_eq!(capacity([(1.0, false), (4.0, false)]), None);
        assert_eq!(capacity(std::iter::empty()), None);
    }

    #[test]
    fn levels_aggregate_their_requests() {
        // 5 tokens in 0.1 + 4 × 0.05 s; 3 tokens in 0.2 + 2 × 0.1 s.
        let runs = vec![
            run(
                "a",
                1,
                vec![
                    req(0, 0, vec![1, 2, 3, 4, 5], 0.1, 0.3),
                    req(1, 1, vec![7, 8, 9], 0.2, 0.4),
                ],
            ),
            run(
                "a",
                4,
                vec![
                    req(0, 0, vec![1, 2, 3, 4, 5], 0.1, 0.5),
                    req(1, 1, vec![7, 8, 0], 0.3, 0.5),
                ],
            ),
        ];
        let r = level_reports(&runs, 60.0, true);
        let a = &r[0];
        assert_eq!((a.completed, a.failed, a.total_output_tokens), (2, 0, 8));
        let tpot = a.tpot_ms.unwrap();
        assert!(
            (tpot.p50 - 50.0).abs() < 1e-9 && (tpot.p99 - 100.0).abs() < 1e-9,
            "{tpot:?}"
        );
        assert!((a.output_throughput_tok_s - 4.0).abs() < 1e-12);
        assert!((a.request_throughput_req_s - 1.0).abs() < 1e-12);
        // (5/0.3 + 3/0.4) / 2
        assert!((a.mean_goodput_tok_s.unwrap() - (5.0 / 0.3 + 7.5) / 2.0).abs() < 1e-9);
        assert_eq!(a.target_passes_per_token, Some(6.0 / 8.0));
        assert_eq!(a.rows_per_token, Some(20.0 / 8.0));
        assert_eq!(a.iterations_per_token, Some(0.5));
        assert_eq!(a.mean_rows_per_iteration, Some(5.0));
        assert_eq!(a.acceptance_rate, Some(0.5));
        // p95 TPOT 100 ms > 60 ms.
        assert!(!a.within_slo);
        assert_eq!(a.lossless, Some(true));
        // The second level's prompt-1 output differs from the one served alone.
        assert_eq!(r[1].lossless, Some(false));
        assert_eq!(level_reports(&runs, 60.0, false)[0].lossless, None);
        let caps = capacities(&r, 60.0);
        assert_eq!(caps.len(), 1);
        assert_eq!(caps[0].capacity, None);
        let caps = capacities(&level_reports(&runs, 150.0, true), 150.0);
        assert_eq!(caps[0].capacity, Some(4.0));
    }

    #[test]
    fn failures_are_counted_and_left_out_and_counters_may_be_missing() {
        let mut bad = req(1, 0, vec![1], 0.1, 9.0);
        bad.error = Some("busy".into());
        let mut lr = run("b", 2, vec![req(0, 0, vec![1, 2], 0.1, 0.2), bad]);
        lr.server = Some(ServerDelta::default());
        let r = &level_reports(&[lr], 1000.0, true)[0];
        assert_eq!((r.completed, r.failed, r.total_output_tokens), (1, 1, 2));
        assert!(
            !r.within_slo,
            "a level with a failed request is not within the SLO"
        );
        // Counters that did not move (a server without them) give n/a, not 0 or ∞.
        assert_eq!((r.rows_per_token, r.mean_rows_per_iteration), (None, None));
    }

    #[test]
    fn outputs_are_formatted() {
        let runs = vec![run("ecspec", 4, vec![req(0, 0, vec![1, 2, 3], 0.1, 0.3)])];
        let r = level_reports(&runs, 100.0, true);
        let caps = capacities(&r, 100.0);
        let md = markdown(&r, &caps, 100.0);
        let row = md.lines().nth(2).unwrap();
        assert_eq!(
            row,
            "| ecspec | 4 edges | 1 | 0 | 100.0 / 100.0 / 100.0 | 100.0 / 100.0 / 100.0 | 10.0 | 1.5 | 1.000 | 6.667 | 5.00 | 0.500 | yes | yes |"
        );
        assert!(
            md.contains("Capacity at p95 TPOT ≤ 100 ms: ecspec 4 edges"),
            "{md}"
        );
        let csv = csv(&r);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        let cells: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(cells.len(), CSV_HEADER.split(',').count());
        assert_eq!(&cells[..4], ["ecspec", "closed", "4", "1"]);
        assert!(
            (cells[11].parse::<f64>().unwrap() - 100.0).abs() < 1e-9,
            "{}",
            cells[11]
        );
        assert_eq!(cells[21], "true");
        assert_eq!(csv_field("sd-fixed:4,x"), "\"sd-fixed:4,x\"");
        let j = json(serde_json::json!({"family": "t"}), &r, &caps, Some(&runs));
        assert!((j["levels"][0]["tpot_ms"]["p95"].as_f64().unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(j["levels"][0]["requests"][0]["generated_tokens"], 3);
        assert_eq!(j["capacity"][0]["capacity"], 4.0);
        assert_eq!(j["slo_tpot_ms"], 100.0);
        assert_eq!(j["setup"]["family"], "t");
    }
}
