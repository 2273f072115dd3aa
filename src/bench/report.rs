//! Aggregation and output of `ecspec bench`: per (version, scenario, system) the metrics of
//! its requests, as CSV and as a Markdown report that says, per scenario, where ECSpec wins and
//! where it loses against each baseline, with the numbers that explain it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Request;

/// A conventional draft's re-download when a version goes live.
#[derive(Debug, Clone)]
pub struct Resync {
    /// Scenario.
    pub scenario: String,
    /// System.
    pub system: String,
    /// Version that went live.
    pub version: String,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Seconds: RTT + bytes·8 / the scenario's mean downlink rate.
    pub seconds: f64,
}

/// What was run, for the report's header.
pub struct Setup {
    pub family: String,
    pub clock: String,
    pub edge: String,
    pub cloud: String,
    pub prompts: String,
    pub max_tokens: u32,
    pub temperature: f32,
    pub shared_backbone: bool,
    pub skipped: Vec<String>,
    pub scenarios: Vec<(String, String)>,
}

/// One (version, scenario, system) cell.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub version: String,
    pub scenario: String,
    pub system: String,
    pub requests: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub goodput_tok_s: f64,
    pub ttft_mean_s: f64,
    pub tpot_p50_s: f64,
    pub tpot_p95_s: f64,
    pub rounds: u64,
    pub mean_accepted_tokens: f64,
    pub acceptance_rate: Option<f64>,
    /// Drafted tokens behind `acceptance_rate`.
    pub drafted_tokens: u64,
    /// Acceptance at draft positions 1..=8: accepted / reached.
    pub acceptance_by_position: Vec<Option<f64>>,
    pub uplink_bytes_per_token: f64,
    pub downlink_bytes_per_token: f64,
    pub energy_per_token_j: Option<f64>,
    pub cloud_passes_per_token: f64,
    pub resync_bytes: u64,
    pub resync_s: f64,
    /// Goodput with the re-sync download counted: tokens / (seconds + resync_s).
    pub goodput_with_resync_tok_s: f64,
    /// Greedy runs: all outputs equal cloud-only's (None: not checked).
    pub lossless: Option<bool>,
    pub mean_rtt_estimate_s: Option<f64>,
}

/// The JSON line of one request (its summary, per-round records included, text left out).
pub fn request_json(r: &Request, question_id: &serde_json::Value) -> String {
    let mut s = serde_json::to_value(&r.summary).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut s {
        m.remove("text");
    }
    serde_json::json!({
        "scenario": r.scenario, "system": r.system, "version": r.version,
        "question_id": question_id, "category": r.category,
        "same_as_cloud_only": r.same_as_cloud, "summary": s,
    })
    .to_string()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// Aggregates requests into rows, in first-seen order.
pub fn aggregate(requests: &[Request], resyncs: &[Resync]) -> Vec<Row> {
    let mut order: Vec<(String, String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String, String), Vec<&Request>> = BTreeMap::new();
    for r in requests {
        let k = (r.version.clone(), r.scenario.clone(), r.system.clone());
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(r);
    }
    order
        .into_iter()
        .map(|k| {
            let rs = &groups[&k];
            let sum = |f: &dyn Fn(&Request) -> f64| rs.iter().map(|r| f(r)).sum::<f64>();
            let tokens = sum(&|r| r.summary.generated_tokens as f64) as usize;
            let seconds = sum(&|r| r.summary.total_s);
            let drafted = sum(&|r| r.summary.drafted_tokens as f64);
            let accepted = sum(&|r| r.summary.accepted_tokens as f64);
            let rounds = sum(&|r| r.summary.rounds as f64) as u64;
            let committed_in_rounds = sum(&|r| (r.summary.generated_tokens.max(1) - 1) as f64);
            let mut reached = [0u64; 8];
            let mut acc = [0u64; 8];
            let mut rtts = Vec::new();
            for r in rs {
                for rec in &r.summary.round_records {
                    for (i, (n, a)) in reached.iter_mut().zip(acc.iter_mut()).enumerate() {
                        if rec.k > i {
                            *n += 1;
                            if rec.accepted > i {
                                *a += 1;
                            }
                        }
                    }
                    if rec.rtt_s_estimate.is_finite() {
                        rtts.push(rec.rtt_s_estimate);
                    }
                }
            }
            let energy: Vec<f64> = rs.iter().filter_map(|r| r.summary.edge_energy_j).collect();
            let resync = resyncs.iter().find(|x| {
                (x.version.as_str(), x.scenario.as_str(), x.system.as_str())
                    == (k.0.as_str(), k.1.as_str(), k.2.as_str())
            });
            let (resync_bytes, resync_s) = resync.map_or((0, 0.0), |x| (x.bytes, x.seconds));
            let checked: Vec<bool> = rs.iter().filter_map(|r| r.same_as_cloud).collect();
            let tok = tokens.max(1) as f64;
            Row {
                version: k.0.clone(),
                scenario: k.1.clone(),
                system: k.2.clone(),
                requests: rs.len(),
                tokens,
                seconds,
                goodput_tok_s: tokens as f64 / seconds.max(1e-12),
                ttft_mean_s: sum(&|r| r.summary.ttft_s) / rs.len() as f64,
                tpot_p50_s: percentile(rs.iter().map(|r| r.summary.tpot_s).collect(), 0.5),
                tpot_p95_s: percentile(rs.iter().map(|r| r.summary.tpot_s).collect(), 0.95),
                rounds,
                mean_accepted_tokens: if rounds > 0 {
                    committed_in_rounds / rounds as f64
                } else {
                    0.0
                },
                acceptance_rate: (drafted > 0.0).then(|| accepted / drafted),
                drafted_tokens: drafted as u64,
                acceptance_by_position: reached
                    .iter()
                    .zip(&acc)
                    .map(|(&n, &a)| (n > 0).then(|| a as f64 / n as f64))
                    .collect(),
                uplink_bytes_per_token: sum(&|r| r.summary.uplink_bytes as f64) / tok,
                downlink_bytes_per_token: sum(&|r| r.summary.downlink_bytes as f64) / tok,
                energy_per_token_j: (energy.len() == rs.len())
                    .then(|| energy.iter().sum::<f64>() / tok),
                cloud_passes_per_token: sum(&|r| r.summary.target_forward_passes as f64) / tok,
                resync_bytes,
                resync_s,
                goodput_with_resync_tok_s: tokens as f64 / (seconds + resync_s).max(1e-12),
                lossless: (!checked.is_empty()).then(|| checked.iter().all(|&b| b)),
                mean_rtt_estimate_s: (!rtts.is_empty())
                    .then(|| rtts.iter().sum::<f64>() / rtts.len() as f64),
            }
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(String::new, |x| format!("{x:.digits$}"))
}

/// A Markdown cell: the value, or "–" when there is none.
fn mopt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
}

/// The rows as CSV.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("version,scenario,system,requests,tokens,seconds,goodput_tok_s,ttft_mean_s,tpot_p50_s,tpot_p95_s,rounds,mean_accepted_tokens,acceptance_rate,acceptance_by_position,uplink_bytes_per_token,downlink_bytes_per_token,energy_per_token_j,cloud_passes_per_token,resync_bytes,resync_s,goodput_with_resync_tok_s,lossless\n");
    for r in rows {
        let pos: Vec<String> = r
            .acceptance_by_position
            .iter()
            .map(|p| opt(*p, 3))
            .collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.4},{:.3},{:.4},{:.5},{:.5},{},{:.3},{},{},{:.2},{:.2},{},{:.4},{},{:.3},{:.3},{}",
            r.version,
            r.scenario,
            r.system,
            r.requests,
            r.tokens,
            r.seconds,
            r.goodput_tok_s,
            r.ttft_mean_s,
            r.tpot_p50_s,
            r.tpot_p95_s,
            r.rounds,
            r.mean_accepted_tokens,
            opt(r.acceptance_rate, 4),
            pos.join(";"),
            r.uplink_bytes_per_token,
            r.downlink_bytes_per_token,
            opt(r.energy_per_token_j, 5),
            r.cloud_passes_per_token,
            r.resync_bytes,
            r.resync_s,
            r.goodput_with_resync_tok_s,
            r.lossless.map_or(String::new(), |b| b.to_string()),
        );
    }
    out
}

/// The Markdown report.
pub fn markdown(rows: &[Row], s: &Setup) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ecspec bench: {}\n", s.family);
    let _ = writeln!(
        out,
        "{} clock · edge compute: {} · cloud compute: {} · prompts: {} · {} tokens per request · temperature {}\n",
        s.clock, s.edge, s.cloud, s.prompts, s.max_tokens, s.temperature
    );
    if !s.shared_backbone {
        let _ = writeln!(out, "This family has no shared-backbone draft: `ecspec` runs the family's own small draft with the `ecspec` policy, and there is nothing to re-synchronise.\n");
    }
    if !s.skipped.is_empty() {
        let _ = writeln!(
            out,
            "Skipped (no conventional drafts found; see `--conventional-dir`): {}\n",
            s.skipped.join(", ")
        );
    }
    for (name, desc) in &s.scenarios {
        let _ = writeln!(out, "- `{name}`: {desc}");
    }
    let versions: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for r in rows {
            if !v.contains(&r.version.as_str()) {
                v.push(&r.version);
            }
        }
        v
    };
    for v in versions {
        let _ = writeln!(out, "\n## Target version `{v}`\n");
        let scenarios: Vec<&str> = {
            let mut x: Vec<&str> = Vec::new();
            for r in rows.iter().filter(|r| r.version == v) {
                if !x.contains(&r.scenario.as_str()) {
                    x.push(&r.scenario);
                }
            }
            x
        };
        for sc in scenarios {
            let cell: Vec<&Row> = rows
                .iter()
                .filter(|r| r.version == v && r.scenario == sc)
                .collect();
            let _ = writeln!(out, "### `{sc}`\n");
            let _ = writeln!(out, "| system | goodput (tok/s) | with re-sync | TTFT (s) | TPOT p50 / p95 (ms) | accepted / round | acceptance (drafted tokens) | α by position 1–4 | uplink B/token | downlink B/token | energy (J/token) | cloud passes / token | re-sync | lossless |");
            let _ = writeln!(
                out,
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for r in &cell {
                let pos: Vec<String> = r
                    .acceptance_by_position
                    .iter()
                    .take(4)
                    .map(|p| mopt(*p, 2))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.2} | {:.3} | {:.1} / {:.1} | {:.2} | {} | {} | {:.1} | {:.1} | {} | {:.3} | {} | {} |",
                    r.system,
                    r.goodput_tok_s,
                    r.goodput_with_resync_tok_s,
                    r.ttft_mean_s,
                    r.tpot_p50_s * 1e3,
                    r.tpot_p95_s * 1e3,
                    r.mean_accepted_tokens,
                    r.acceptance_rate.map_or("–".to_string(), |a| format!(
                        "{a:.3} ({})",
                        r.drafted_tokens
                    )),
                    pos.join(" "),
                    r.uplink_bytes_per_token,
                    r.downlink_bytes_per_token,
                    mopt(r.energy_per_token_j, 4),
                    r.cloud_passes_per_token,
                    if r.resync_bytes > 0 {
                        format!("{:.1} MB, {:.1} s", r.resync_bytes as f64 / 1e6, r.resync_s)
                    } else {
                        "0".into()
                    },
                    r.lossless.map_or("–".into(), |b| if b { "yes".to_string() } else { "**NO**".to_string() }),
                );
            }
            if let Some(e) = cell.iter().find(|r| r.system == "ecspec") {
                let _ = writeln!(out);
                for b in cell.iter().filter(|r| r.system != "ecspec") {
                    let (eg, bg) = (e.goodput_with_resync_tok_s, b.goodput_with_resync_tok_s);
                    // Within 0.5%: a tie, not a win or a loss.
                    let verdict = if (eg - bg).abs() <= 0.005 * bg.abs() {
                        "ties"
                    } else if eg > bg {
                        "wins"
                    } else {
                        "loses"
                    };
                    let why = match b.system.as_str() {
                        "cloud-only" => {
                            let rtt = e
                                .mean_rtt_estimate_s
                                .map_or("–".into(), |r| format!("{:.0} ms", r * 1e3));
                            match e.acceptance_rate {
                                Some(a) => format!(
                                    "streaming costs one RTT per request and a decode step per token; ECSpec drafted with α = {a:.3} and {:.2} tokens per round at an estimated RTT of {rtt}",
                                    e.mean_accepted_tokens
                                ),
                                None => format!(
                                    "ECSpec drafted nothing (no K ≥ 1 paid at its α) and streamed like cloud-only; the difference is the round trip its stream request adds to a request without memory, at an estimated RTT of {rtt}"
                                ),
                            }
                        }
                        "edge-only" => "edge-only pays no RTT but its output is the draft's own, not the target's".to_string(),
                        _ => format!(
                            "α {} vs {}, {:.2} vs {:.2} tokens per round, re-sync {:.1} s",
                            mopt(e.acceptance_rate, 3),
                            mopt(b.acceptance_rate, 3),
                            e.mean_accepted_tokens,
                            b.mean_accepted_tokens,
                            b.resync_s
                        ),
                    };
                    let _ = writeln!(
                        out,
                        "- vs `{}`: ECSpec {verdict} ({eg:.2} vs {bg:.2} tok/s, {:+.1}%): {why}.",
                        b.system,
                        100.0 * (eg / bg.max(1e-12) - 1.0)
                    );
                }
            }
            let _ = writeln!(out);
        }
    }
    out
}
