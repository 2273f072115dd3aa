//! The plots of `ecspec bench` (SVG, plotters): goodput against each scenario's mean uplink rate
//! and RTT per system, acceptance per target version per speculative system, and the draft
//! length K the `ecspec` system chose over time on a driving trace.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::Row;
use super::Request;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One scenario's link, for the x axes.
#[derive(Debug, Clone)]
pub struct ScenarioLink {
    /// Scenario name.
    pub name: String,
    /// Mean uplink rate (Mbit/s).
    pub uplink_mbps: f64,
    /// RTT (ms) the link is configured with.
    pub rtt_ms: f64,
}

/// A line chart of named series of (x, y) points.
fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return Ok(());
    }
    let pad = ((x1 - x0) * 0.05).max(0.5);
    let err = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..(y1 * 1.1).max(1e-9))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(p.clone(), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(p.iter().map(|&q| Circle::new(q, 3, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes the plots into `dir`; returns the files written.
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
    let mut systems: Vec<&str> = Vec::new();
    for r in rows {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    // Goodput against the scenario's uplink rate and RTT, first version.
    for (file, desc, pick) in [
        (
            "goodput_vs_uplink.svg",
            "mean uplink rate of the scenario (Mbit/s)",
            (|l: &ScenarioLink| l.uplink_mbps) as fn(&ScenarioLink) -> f64,
        ),
        (
            "goodput_vs_rtt.svg",
            "RTT of the scenario (ms)",
            |l: &ScenarioLink| l.rtt_ms,
        ),
    ] {
        let series: Vec<(String, Vec<(f64, f64)>)> = systems
            .iter()
            .map(|s| {
                let mut p: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.version == first_version && r.system == *s)
                    .filter_map(|r| {
                        let l = links.iter().find(|l| l.name == r.scenario)?;
                        Some((pick(l), r.goodput_with_resync_tok_s))
                    })
                    .collect();
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                (s.to_string(), p)
            })
            .collect();
        let path = dir.join(file);
        line_chart(
            &path,
            &format!("Goodput per system (version {first_version})"),
            desc,
            "goodput (tokens/s, re-sync included)",
            &series,
        )?;
        out.push(path);
    }
    // Acceptance per version, averaged over scenarios, speculative systems only.
    let mut versions: Vec<&str> = Vec::new();
    for r in rows {
        if !versions.contains(&r.version.as_str()) {
            versions.push(&r.version);
        }
    }
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
    let path = dir.join("acceptance_vs_version.svg");
    line_chart(
        &path,
        &format!("Acceptance per target version ({})", versions.join(", ")),
        "target version (index, in the order above)",
        "acceptance rate",
        &series,
    )?;
    out.push(path);
    // K over time on a driving trace, ecspec, first version: requests back to back.
    if let Some(sc) = links
        .iter()
        .find(|l| l.name.contains("driving"))
        .or(links.first())
    {
        let mut t0 = 0.0;
        let (mut ks, mut rtt) = (Vec::new(), Vec::new());
        for r in requests
            .iter()
            .filter(|r| r.system == "ecspec" && r.version == first_version && r.scenario == sc.name)
        {
            for rec in &r.summary.round_records {
                ks.push((t0 + rec.t_s, rec.k as f64));
                if rec.rtt_s_estimate.is_finite() {
                    rtt.push((t0 + rec.t_s, rec.rtt_s_estimate * 100.0));
                }
            }
            t0 += r.summary.total_s;
        }
        let path = dir.join("k_over_time.svg");
        line_chart(
            &path,
            &format!(
                "ecspec on {}: draft length K per round (0 = cloud stream)",
                sc.name
            ),
            "time, requests back to back (s)",
            "K; RTT estimate (×100 s)",
            &[
                ("K".to_string(), ks),
                ("RTT estimate ×100 (s)".to_string(), rtt),
            ],
        )?;
        out.push(path);
    }
    Ok(out)
}
