//! Aggregation and output of `ecspec bench`: per (version, scenario, system) the metrics of
//! its requests, as CSV and as a Markdown report that says, per scenario, where ECSpec wins and
//! where it loses against each baseline, with the numbers that explain it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ecspec_edge::Summary;

use super::setup::Request;

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
    /// Name, description, and the RTT its rounds met ([`delivered_rtt`]).
    pub scenarios: Vec<(String, String, Option<DeliveredRtt>)>,
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
    /// Target forward passes per committed token: the prefill's and one per round or
    /// streamed step (the edge's count, `Summary::target_forward_passes`).
    pub target_passes_per_token: f64,
    /// Target rows per committed token, prefill apart: see [`target_rows`].
    pub target_rows_per_token: f64,
    /// The prompts' prefill rows per committed token.
    pub prefill_rows_per_token: f64,
    pub resync_bytes: u64,
    pub resync_s: f64,
    /// Goodput with the re-sync download counted: tokens / (seconds + resync_s).
    pub goodput_with_resync_tok_s: f64,
    /// Greedy runs: all outputs equal cloud-only's (None: not checked).
    pub lossless: Option<bool>,
    pub mean_rtt_estimate_s: Option<f64>,
}

/// The rows (token positions) the cloud's target computed for a request, as (rounds, prefill):
/// per round its block of K + 1 positions (the last committed token and K drafts; a streamed
/// step is 1), and apart from them the prompt's prefill rows — none for a request the cloud
/// never saw (edge-only). Counted from the edge's round records: the wire carries no row count.
pub fn target_rows(s: &Summary) -> (u64, u64) {
    let rounds = s.round_records.iter().map(|r| r.k as u64 + 1).sum();
    let prefill = if s.target_forward_passes > 0 {
        s.prompt_tokens as u64
    } else {
        0
    };
    (rounds, prefill)
}

/// The round-trip time a scenario delivered, measured by the edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveredRtt {
    /// Mean over the round trips (s).
    pub mean_s: f64,
    /// Round trips measured.
    pub rounds: usize,
}

/// The mean round-trip time the rounds of `scenario` met, over every request of it: per round
/// that sent a block (uplink bytes > 0) and waited for its verdict, the send-to-verdict time
/// less the cloud's compute time — the network time the edge fits its RTT estimate from,
/// serialization and link stalls included. A streamed step after a stream's first sends nothing
/// and is no round trip. None when no round sent a block (only cloud-only and edge-only ran).
pub fn delivered_rtt(requests: &[Request], scenario: &str) -> Option<DeliveredRtt> {
    let trips: Vec<f64> = requests
        .iter()
        .filter(|r| r.scenario == scenario)
        .flat_map(|r| &r.summary.round_records)
        .filter(|rec| rec.uplink_bytes > 0)
        .map(|rec| rec.wait_s - rec.cloud_compute_s)
        .collect();
    (!trips.is_empty()).then(|| DeliveredRtt {
        mean_s: trips.iter().sum::<f64>() / trips.len() as f64,
        rounds: trips.len(),
    })
}

/// The JSON line of one request (its summary, per-round records included, text left out, and
/// the target rows it cost the cloud).
pub fn request_json(r: &Request, question_id: &serde_json::Value) -> String {
    let mut s = serde_json::to_value(&r.summary).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut s {
        m.remove("text");
    }
    let (rows, prefill_rows) = target_rows(&r.summary);
    serde_json::json!({
        "scenario": r.scenario, "system": r.system, "version": r.version,
        "question_id": question_id, "category": r.category,
        "same_as_cloud_only": r.same_as_cloud,
        "target_rows": rows, "prefill_rows": prefill_rows, "summary": s,
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
            let (rows, prefill_rows) = rs
                .iter()
                .map(|r| target_rows(&r.summary))
                .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
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
                target_passes_per_token: sum(&|r| r.summary.target_forward_passes as f64) / tok,
                target_rows_per_token: rows as f64 / tok,
                prefill_rows_per_token: prefill_rows as f64 / tok,
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
    let mut out = String::from("version,scenario,system,requests,tokens,seconds,goodput_tok_s,ttft_mean_s,tpot_p50_s,tpot_p95_s,rounds,mean_accepted_tokens,acceptance_rate,acceptance_by_position,uplink_bytes_per_token,downlink_bytes_per_token,energy_per_token_j,target_passes_per_token,target_rows_per_token,prefill_rows_per_token,resync_bytes,resync_s,goodput_with_resync_tok_s,lossless\n");
    for r in rows {
        let pos: Vec<String> = r
            .acceptance_by_position
            .iter()
            .map(|p| opt(*p, 3))
            .collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.4},{:.3},{:.4},{:.5},{:.5},{},{:.3},{},{},{:.2},{:.2},{},{:.4},{:.4},{:.4},{},{:.3},{:.3},{}",
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
            r.target_passes_per_token,
            r.target_rows_per_token,
            r.prefill_rows_per_token,
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
    for (name, desc, rtt) in &s.scenarios {
        let _ = match rtt {
            Some(d) => writeln!(
                out,
                "- `{name}`: {desc}; RTT delivered: {:.1} ms (mean over {} round trips)",
                d.mean_s * 1e3,
                d.rounds
            ),
            None => writeln!(out, "- `{name}`: {desc}"),
        };
    }
    let _ = writeln!(
        out,
        "\nRTT delivered: per round that sent a block, send-to-verdict time less the cloud's compute, as the edge measured it. Cloud cost per committed token: target passes (the prefill's and one per round or streamed step) and target rows (positions computed: K + 1 per drafted round, 1 per streamed step; the prompts' prefill rows are left out here and given apart as `prefill_rows_per_token` in summary.csv)."
    );
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
            let _ = writeln!(out, "| system | goodput (tok/s) | with re-sync | TTFT (s) | TPOT p50 / p95 (ms) | accepted / round | acceptance (drafted tokens) | α by position 1–4 | uplink B/token | downlink B/token | energy (J/token) | target passes / token | target rows / token | re-sync | lossless |");
            let _ = writeln!(
                out,
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
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
                    "| {} | {:.2} | {:.2} | {:.3} | {:.1} / {:.1} | {:.2} | {} | {} | {:.1} | {:.1} | {} | {:.3} | {:.3} | {} | {} |",
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
                    r.target_passes_per_token,
                    r.target_rows_per_token,
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

#[cfg(test)]
pub(super) mod tests {
    use ecspec_edge::{RoundRecord, Summary};

    use super::*;

    /// A round: K drafted, `accepted` of them kept; `up` bytes sent (0: a streamed step after
    /// the stream's first), `wait_s` from send to verdict, `compute_s` of it the cloud's.
    pub(in crate::bench) fn round(
        k: usize,
        accepted: usize,
        up: u64,
        wait_s: f64,
        compute_s: f64,
    ) -> RoundRecord {
        RoundRecord {
            round: 1,
            t_s: 0.0,
            k,
            verify: if k == 0 {
                ecspec_edge::RoundVerify::None
            } else {
                ecspec_edge::RoundVerify::Greedy
            },
            accepted,
            source: if k == 0 {
                ecspec_edge::RoundSource::None
            } else {
                ecspec_edge::RoundSource::Model
            },
            draft_s: 0.0,
            reused: 0,
            pre_draft_s: 0.0,
            wait_s,
            cloud_compute_s: compute_s,
            uplink_bytes: up,
            downlink_bytes: 20,
            alpha_estimate: f64::NAN,
            uplink_bps_estimate: f64::NAN,
            rtt_s_estimate: f64::NAN,
            energy_j: None,
        }
    }

    /// A request of `system` on `scenario`: `generated` tokens after a 10-token prompt, its
    /// rounds, and passes as the edge counts them (prefill + rounds; 0 without a cloud).
    pub(in crate::bench) fn request(
        scenario: &str,
        system: &str,
        generated: usize,
        rounds: Vec<RoundRecord>,
        cloud: bool,
    ) -> Request {
        Request {
            scenario: scenario.into(),
            system: system.into(),
            version: "v0".into(),
            category: "writing".into(),
            summary: Summary {
                generated_tokens: generated,
                prompt_tokens: 10,
                rounds: rounds.len() as u64,
                target_forward_passes: if cloud { rounds.len() as u64 + 1 } else { 0 },
                round_records: rounds,
                total_s: 1.0,
                ..Summary::default()
            },
            same_as_cloud: None,
        }
    }

    /// One scenario's requests: cloud-only streaming from its Hello (no round trip), a
    /// drafted system (K = 4 keeping 3, then K = 2 keeping none: 1 + 4 + 1 tokens), `ecspec`
    /// opening a stream with a K = 0 round and getting one more streamed step, and edge-only.
    pub(in crate::bench) fn scenario_requests(scenario: &str) -> Vec<Request> {
        vec![
            request(
                scenario,
                "cloud-only",
                4,
                vec![round(0, 0, 0, 0.25, 0.25); 3],
                true,
            ),
            request(
                scenario,
                "sd-fixed:4",
                6,
                vec![round(4, 3, 30, 0.375, 0.25), round(2, 0, 22, 0.5, 0.25)],
                true,
            ),
            request(
                scenario,
                "ecspec",
                3,
                vec![round(0, 0, 14, 0.3125, 0.25), round(0, 0, 0, 0.25, 0.25)],
                true,
            ),
            request(scenario, "edge-only", 5, Vec::new(), false),
        ]
    }

    #[test]
    fn target_rows_count_each_round_block_and_the_prefill_apart() {
        let rs = scenario_requests("s");
        let rows: Vec<(u64, u64)> = rs.iter().map(|r| target_rows(&r.summary)).collect();
        // Streamed steps 1 row each; drafted rounds K + 1; edge-only costs the cloud nothing.
        assert_eq!(rows, vec![(3, 10), (5 + 3, 10), (2, 10), (0, 0)]);
        let agg = aggregate(&rs, &[]);
        let by = |sys: &str| agg.iter().find(|r| r.system == sys).unwrap();
        let cells: Vec<(f64, f64, f64)> = ["cloud-only", "sd-fixed:4", "ecspec", "edge-only"]
            .iter()
            .map(|s| {
                let r = by(s);
                (
                    r.target_passes_per_token,
                    r.target_rows_per_token,
                    r.prefill_rows_per_token,
                )
            })
            .collect();
        assert_eq!(
            cells,
            vec![
                (4.0 / 4.0, 3.0 / 4.0, 10.0 / 4.0),
                (3.0 / 6.0, 8.0 / 6.0, 10.0 / 6.0),
                (3.0 / 3.0, 2.0 / 3.0, 10.0 / 3.0),
                (0.0, 0.0, 0.0),
            ]
        );
        // Requests of one cell add up before dividing: (8 + 3) rows over (6 + 4) tokens.
        let mut two = scenario_requests("s");
        two[0].system = "sd-fixed:4".into();
        let r = aggregate(&two, &[]);
        let sd = r.iter().find(|r| r.system == "sd-fixed:4").unwrap();
        assert_eq!(
            (sd.target_passes_per_token, sd.target_rows_per_token),
            (7.0 / 10.0, 11.0 / 10.0)
        );
    }

    #[test]
    fn the_rtt_delivered_is_the_mean_network_time_of_the_rounds_that_sent_a_block() {
        let mut rs = scenario_requests("5g");
        rs.extend(scenario_requests("lte"));
        // Another scenario's rounds do not count.
        rs.push(request(
            "lte",
            "sd-fixed:4",
            2,
            vec![round(1, 0, 30, 2.0, 0.25)],
            true,
        ));
        rs.push(request(
            "co",
            "cloud-only",
            4,
            vec![round(0, 0, 0, 0.25, 0.25); 3],
            true,
        ));
        // 0.125 and 0.25 (drafted rounds), 0.0625 (ecspec's stream request); the streamed
        // steps sent nothing and are no round trips.
        assert_eq!(
            delivered_rtt(&rs, "5g"),
            Some(DeliveredRtt {
                mean_s: (0.125 + 0.25 + 0.0625) / 3.0,
                rounds: 3
            })
        );
        assert_eq!(delivered_rtt(&rs, "lte").map(|d| d.rounds), Some(4));
        assert_eq!(delivered_rtt(&rs, "co"), None);
        assert_eq!(delivered_rtt(&rs, "none"), None);
    }

    #[test]
    fn csv_markdown_and_json_name_the_cloud_cost() {
        let rs = scenario_requests("s");
        let rows = aggregate(&rs, &[]);
        let csv = csv(&rows);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let sd: Vec<&str> = lines.nth(1).unwrap().split(',').collect();
        assert_eq!(header.len(), sd.len());
        let field = |name: &str| sd[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(field("system"), "sd-fixed:4");
        assert_eq!(field("target_passes_per_token"), "0.5000");
        assert_eq!(field("target_rows_per_token"), "1.3333");
        assert_eq!(field("prefill_rows_per_token"), "1.6667");
        let setup = Setup {
            family: "f".into(),
            clock: "virtual".into(),
            edge: "e".into(),
            cloud: "c".into(),
            prompts: "p".into(),
            max_tokens: 6,
            temperature: 0.0,
            shared_backbone: true,
            skipped: Vec::new(),
            scenarios: vec![("s".into(), "a link".into(), delivered_rtt(&rs, "s"))],
        };
        let md = markdown(&rows, &setup);
        assert!(
            md.contains("- `s`: a link; RTT delivered: 145.8 ms (mean over 3 round trips)"),
            "{md}"
        );
        assert!(
            md.contains("| energy (J/token) | target passes / token | target rows / token | re-sync | lossless |"),
            "{md}"
        );
        // sd-fixed:4: 0.500 passes and 1.333 rows per token, then re-sync and lossless.
        assert!(md.contains("| 0.500 | 1.333 | 0 | – |"), "{md}");
        let j: serde_json::Value =
            serde_json::from_str(&request_json(&rs[1], &serde_json::json!(7))).unwrap();
        assert_eq!(
            (j["target_rows"].as_u64(), j["prefill_rows"].as_u64()),
            (Some(8), Some(10))
        );
    }
}
