//! The plots of `ecspec bench` (plotters; SVG, and PNG with an embedded DejaVu Sans so no
//! system font is needed): goodput against each scenario's mean uplink rate and against the
//! mean RTT its rounds delivered, per system,
//! acceptance per target version per speculative system, edge energy per token against the
//! budget of budgeted systems (`NAME@B`), and the draft length K the `ecspec` system chose over
//! time on a driving trace with the uplink rate and RTT estimate under it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::{self, Row};
use super::setup::Request;

use ecspec_load::COLORS;

/// One scenario's link, for the x axes and the channel under the K plot.
pub struct ScenarioLink {
    /// Scenario name.
    pub name: String,
    /// Mean uplink rate (Mbit/s).
    pub uplink_mbps: f64,
    /// RTT (ms) the link is configured with. The goodput-vs-RTT plot places the scenario at
    /// the RTT its rounds delivered (a trace's RTT, stalls), at this only where none was measured.
    pub rtt_ms: f64,
    /// The uplink model as request 0 meets it (None: an unshaped link, e.g. loopback).
    pub uplink: Option<Box<dyn ecspec_link::LinkModel>>,
    /// Request i meets the link this many seconds × i into its traces.
    pub phase_s: f64,
}

/// One panel of a chart: a y axis and its series of (x, y) points.
struct Panel<'a> {
    y_desc: &'a str,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

/// A line chart, written as SVG at `svg` and as PNG beside it (same name, `.png`): one or
/// more panels stacked over a shared x axis. Returns the files written (none without points).
fn line_chart(svg: &Path, title: &str, x_desc: &str, panels: &[Panel]) -> Result<Vec<PathBuf>> {
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _) in panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|(_, s)| s.iter()))
    {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    if !x0.is_finite() {
        return Ok(Vec::new());
    }
    let pad = if x1 > x0 { (x1 - x0) * 0.05 } else { 0.5 };
    let x = (x0 - pad)..(x1 + pad);
    let size = (900, 300 + 240 * panels.len() as u32);
    let png = svg.with_extension("png");
    // Text is laid out with the embedded font in both backends.
    fonts()?;
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        title,
        x_desc,
        x.clone(),
        panels,
    )
    .map_err(|e| anyhow!("{}: {e}", svg.display()))?;
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        title,
        x_desc,
        x,
        panels,
    )
    .map_err(|e| anyhow!("{}: {e}", png.display()))?;
    Ok(vec![svg.to_path_buf(), png])
}

/// The shared embedded font ([`ecspec_load::fonts`]).
fn fonts() -> Result<()> {
    ecspec_load::fonts().map_err(|e| anyhow!(e))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    x: std::ops::Range<f64>,
    panels: &[Panel],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (area, panel) in areas.iter().zip(panels) {
        let y1 = panel
            .series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            // An all-zero series (e.g. K = 0 throughout) still gets a readable 0..1 axis.
            .build_cartesian_2d(x.clone(), 0.0..if y1 > 0.0 { y1 * 1.1 } else { 1.0 })?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(panel.y_desc)
            .draw()?;
        for (i, (name, p)) in panel.series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(p.clone(), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            if p.len() <= 200 {
                chart.draw_series(p.iter().map(|&q| Circle::new(q, 3, c.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()
}

/// Writes the plots into `dir`, each as SVG and PNG; returns the files written.
///
/// # Errors
/// A file cannot be written.
pub fn write_all(
    dir: &Path,
    rows: &[Row],
    requests: &[Request],
    links: &[ScenarioLink],
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Some(first_version) = rows.first().map(|r| r.version.clone()) else {
        return Ok(out);
    };
    out.extend(goodput_charts(dir, rows, requests, links, &first_version)?);
    out.extend(acceptance_chart(dir, rows)?);
    out.extend(energy_chart(dir, rows, &first_version)?);
    out.extend(k_over_time_chart(dir, requests, links, &first_version)?);
    Ok(out)
}

/// Goodput against the scenario's uplink rate and delivered RTT, first version. An unshaped
/// link (loopback) has no rate or RTT to place it at.
fn goodput_charts(
    dir: &Path,
    rows: &[Row],
    requests: &[Request],
    links: &[ScenarioLink],
    first_version: &str,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let systems = first_seen(rows.iter().map(|r| r.system.as_str()));
    let uplink: Vec<(String, f64)> = links
        .iter()
        .filter(|l| l.uplink.is_some())
        .map(|l| (l.name.clone(), l.uplink_mbps))
        .collect();
    let (rtt, rtt_desc) = rtt_axis(links, requests);
    for (file, desc, xs) in [
        (
            "goodput_vs_uplink.svg",
            "mean uplink rate of the scenario (Mbit/s)".to_string(),
            uplink,
        ),
        ("goodput_vs_rtt.svg", rtt_desc, rtt),
    ] {
        let series: Vec<(String, Vec<(f64, f64)>)> = systems
            .iter()
            .map(|s| {
                let mut p: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.version == first_version && r.system == *s)
                    .filter_map(|r| {
                        let (_, x) = xs.iter().find(|(n, _)| *n == r.scenario)?;
                        Some((*x, r.goodput_with_resync_tok_s))
                    })
                    .collect();
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                (s.to_string(), p)
            })
            .collect();
        out.extend(line_chart(
            &dir.join(file),
            &format!("Goodput per system (version {first_version})"),
            &desc,
            &[Panel {
                y_desc: "goodput (tokens/s, re-sync included)",
                series,
            }],
        )?);
    }
    Ok(out)
}

/// Acceptance per version, averaged over scenarios, speculative systems only.
fn acceptance_chart(dir: &Path, rows: &[Row]) -> Result<Vec<PathBuf>> {
    let systems = first_seen(rows.iter().map(|r| r.system.as_str()));
    let versions = first_seen(rows.iter().map(|r| r.version.as_str()));
    let series: Vec<(String, Vec<(f64, f64)>)> = systems
        .iter()
        .filter_map(|s| {
            let p: Vec<(f64, f64)> = versions
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let a: Vec<f64> = rows
                        .iter()
                        .filter(|r| r.version == *v && r.system == *s)
                        .filter_map(|r| r.acceptance_rate)
                        .collect();
                    (!a.is_empty()).then(|| (i as f64, a.iter().sum::<f64>() / a.len() as f64))
                })
                .collect();
            (!p.is_empty()).then(|| (s.to_string(), p))
        })
        .collect();
    line_chart(
        &dir.join("acceptance_vs_version.svg"),
        &format!("Acceptance per target version ({})", versions.join(", ")),
        "target version (index, in the order above)",
        &[Panel {
            y_desc: "acceptance rate",
            series,
        }],
    )
}

/// Energy per token against the budget of each budgeted system (`NAME@B`), per scenario;
/// nothing without a budgeted system.
fn energy_chart(dir: &Path, rows: &[Row], first_version: &str) -> Result<Vec<PathBuf>> {
    let budgeted: Vec<(&Row, &str, f64)> = rows
        .iter()
        .filter(|r| r.version == first_version)
        .filter_map(|r| {
            let (base, b) = super::system::split_budget(&r.system)?;
            Some((r, base, b))
        })
        .collect();
    if budgeted.is_empty() {
        return Ok(Vec::new());
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (r, base, b) in &budgeted {
        let Some(e) = r.energy_per_token_j else {
            continue;
        };
        let name = format!("{base} on {}", r.scenario);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, p)) => p.push((*b, e)),
            None => series.push((name, vec![(*b, e)])),
        }
    }
    for (_, p) in &mut series {
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut diag: Vec<(f64, f64)> = budgeted.iter().map(|(_, _, b)| (*b, *b)).collect();
    diag.sort_by(|a, b| a.0.total_cmp(&b.0));
    diag.dedup();
    series.push(("budget (spent = budget)".into(), diag));
    line_chart(
        &dir.join("energy_vs_budget.svg"),
        &format!("Edge energy per token against its budget (version {first_version})"),
        "energy budget (J per committed token)",
        &[Panel {
            y_desc: "edge energy spent (J per committed token)",
            series,
        }],
    )
}

/// K over time on a driving trace (else the first shaped one), ecspec, first version,
/// requests back to back; under it the uplink rate each round met and the RTT estimate.
fn k_over_time_chart(
    dir: &Path,
    requests: &[Request],
    links: &[ScenarioLink],
    first_version: &str,
) -> Result<Vec<PathBuf>> {
    let Some(sc) = links
        .iter()
        .find(|l| l.name.contains("driving"))
        .or_else(|| links.iter().find(|l| l.uplink.is_some()))
    else {
        return Ok(Vec::new());
    };
    let mut t0 = 0.0;
    let (mut ks, mut rtt, mut rate) = (Vec::new(), Vec::new(), Vec::new());
    for (qi, r) in requests
        .iter()
        .filter(|r| r.system == "ecspec" && r.version == first_version && r.scenario == sc.name)
        .enumerate()
    {
        for rec in &r.summary.round_records {
            ks.push((t0 + rec.t_s, rec.k as f64));
            if rec.rtt_s_estimate.is_finite() {
                rtt.push((t0 + rec.t_s, rec.rtt_s_estimate * 1e3));
            }
        }
        if let Some(up) = &sc.uplink {
            // The channel as this request met it, sampled every 0.1 s.
            let steps = (r.summary.total_s / 0.1).floor() as usize;
            for i in 0..=steps {
                let t = i as f64 * 0.1;
                let at = std::time::Duration::from_secs_f64(qi as f64 * sc.phase_s + t);
                let bps = ecspec_link::capacity_bps(up.as_ref(), at, 12_000);
                rate.push((t0 + t, bps / 1e6));
            }
        }
        t0 += r.summary.total_s;
    }
    let mut panels = vec![Panel {
        y_desc: "draft length K (0 = cloud stream)",
        series: vec![("K".to_string(), ks)],
    }];
    if !rate.is_empty() {
        panels.push(Panel {
            y_desc: "uplink rate (Mbit/s, 12 kB probe)",
            series: vec![("uplink capacity".to_string(), rate)],
        });
    }
    panels.push(Panel {
        y_desc: "RTT estimate at the edge (ms)",
        series: vec![("RTT estimate".to_string(), rtt)],
    });
    line_chart(
        &dir.join("k_over_time.svg"),
        &format!(
            "ecspec on {}: draft length K per round, and the channel",
            sc.name
        ),
        "time, requests back to back (s)",
        &panels,
    )
}

/// Each shaped scenario's place on the goodput-vs-RTT plot — the mean RTT its rounds delivered
/// ([`report::delivered_rtt`], every system and version), or the link's configured RTT where no
/// round sent a block — and the axis text naming each scenario's value.
fn rtt_axis(links: &[ScenarioLink], requests: &[Request]) -> (Vec<(String, f64)>, String) {
    let mut named = Vec::new();
    let xs = links
        .iter()
        .filter(|l| l.uplink.is_some())
        .map(|l| {
            let (ms, how) = match report::delivered_rtt(requests, &l.name) {
                Some(d) => (d.mean_s * 1e3, ""),
                None => (l.rtt_ms, " configured"),
            };
            named.push(format!("{} {ms:.0}{how}", l.name));
            (l.name.clone(), ms)
        })
        .collect();
    let desc = format!(
        "RTT delivered (ms, mean over the rounds): {}",
        named.join(" · ")
    );
    (xs, desc)
}

/// Distinct names in first-seen order.
fn first_seen<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for n in names {
        if !v.contains(&n) {
            v.push(n);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::{request, round, scenario_requests};

    fn link(name: &str, rtt_ms: f64, shaped: bool) -> ScenarioLink {
        ScenarioLink {
            name: name.into(),
            uplink_mbps: 10.0,
            rtt_ms,
            uplink: shaped.then(|| {
                ecspec_link::LinkConfig::constant(10.0, 10.0, rtt_ms)
                    .unwrap()
                    .uplink
            }),
            phase_s: 30.0,
        }
    }

    #[test]
    fn scenarios_sit_at_the_rtt_their_rounds_delivered() {
        // Both configured at 60 ms: a trace's RTT (5g) and a slower, stalling link (lte) now
        // sit apart; a scenario without round trips keeps its configured RTT, and says so.
        let mut rs = scenario_requests("5g");
        rs.push(request(
            "lte",
            "sd-fixed:4",
            2,
            vec![round(1, 0, 30, 0.5, 0.25), round(1, 0, 30, 0.375, 0.25)],
            true,
        ));
        let links = [
            link("5g", 60.0, true),
            link("lte", 60.0, true),
            link("co", 100.0, true),
            link("loopback", 0.0, false),
        ];
        let (xs, desc) = rtt_axis(&links, &rs);
        assert_eq!(
            xs,
            vec![
                ("5g".to_string(), (0.125 + 0.25 + 0.0625) / 3.0 * 1e3),
                ("lte".to_string(), (0.25 + 0.125) / 2.0 * 1e3),
                ("co".to_string(), 100.0),
            ]
        );
        assert_eq!(
            desc,
            "RTT delivered (ms, mean over the rounds): 5g 146 · lte 188 · co 100 configured"
        );
    }
}
