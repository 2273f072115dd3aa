//! The load plot: p95 TPOT against load, one line per system, with the SLO drawn across.
//! PNG (text laid out with the embedded DejaVu Sans, so no system font is needed) or SVG by
//! the file's extension.

use std::path::Path;

use plotters::prelude::*;

use crate::report::LevelReport;
use crate::LoadError;

/// The series colours of every ECSpec plot (matplotlib's tab10, first eight).
pub const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The series of the plot: per system (first-seen order), its (load, p95 TPOT ms) points in
/// load order; levels without a TPOT are left out.
pub fn tpot_series(reports: &[LevelReport]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in reports {
        let Some(p) = r.tpot_ms else { continue };
        match out.iter_mut().find(|(s, _)| *s == r.system) {
            Some((_, pts)) => pts.push((r.load_value, p.p95)),
            None => out.push((r.system.clone(), vec![(r.load_value, p.p95)])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Writes the plot of p95 TPOT (ms) against load per system to `path` (`.svg`: SVG, else PNG),
/// with the SLO as a dashed line; `title` heads it.
///
/// # Errors
/// [`LoadError::Output`] when nothing has a TPOT to plot, the font does not load, or the file
/// cannot be written.
pub fn write_tpot_plot(
    path: &Path,
    title: &str,
    reports: &[LevelReport],
    slo_tpot_ms: f64,
) -> Result<(), LoadError> {
    let err = |message: String| LoadError::Output {
        path: path.to_path_buf(),
        message,
    };
    let series = tpot_series(reports);
    if series.is_empty() {
        return Err(err("no level has a TPOT to plot".into()));
    }
    let x_desc = match reports.first().map(|r| r.load) {
        Some("open") => "request rate (req/s, open loop)",
        _ => "concurrent edges (closed loop)",
    };
    fonts().map_err(err)?;
    let size = (900, 560);
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let r = if svg {
        draw(
            SVGBackend::new(path, size).into_drawing_area(),
            title,
            x_desc,
            &series,
            slo_tpot_ms,
        )
    } else {
        draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            x_desc,
            &series,
            slo_tpot_ms,
        )
    };
    r.map_err(err)
}

/// Registers the embedded DejaVu Sans as "sans-serif", once (no system fonts needed): what
/// every ECSpec PNG's text is drawn with.
///
/// # Errors
/// The font did not load.
pub fn fonts() -> Result<(), String> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| "the embedded DejaVu Sans font did not load".to_string())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    slo: f64,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let pts = || series.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let pad = if x1 > x0 { (x1 - x0) * 0.05 } else { 0.5 };
    let y1 = pts().map(|p| p.1).fold(slo.max(0.0), f64::max);
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("p95 TPOT (ms)")
        .draw()
        .map_err(e)?;
    if slo.is_finite() && slo > 0.0 {
        let slo_style = RGBColor(90, 90, 90).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(x0 - pad, slo), (x1 + pad, slo)],
                8,
                6,
                slo_style,
            ))
            .map_err(e)?
            .label(format!("SLO: p95 TPOT {slo} ms"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], slo_style));
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(p.clone(), c.stroke_width(2)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(p.iter().map(|&q| Circle::new(q, 4, c.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::percentile::Percentiles;

    fn level(system: &str, load: f64, p95: Option<f64>) -> LevelReport {
        LevelReport {
            system: system.into(),
            load: "closed",
            load_value: load,
            completed: 1,
            failed: 0,
            duration_s: 1.0,
            total_output_tokens: 1,
            ttft_ms: None,
            tpot_ms: p95.map(|p| Percentiles {
                p50: p,
                p95: p,
                p99: p,
            }),
            mean_goodput_tok_s: None,
            output_throughput_tok_s: 0.0,
            request_throughput_req_s: 0.0,
            target_passes_per_token: None,
            iterations_per_token: None,
            rows_per_token: None,
            mean_rows_per_iteration: None,
            acceptance_rate: None,
            within_slo: true,
            lossless: None,
        }
    }

    #[test]
    fn series_per_system_in_load_order_and_files_are_written() {
        let r = vec![
            level("cloud-only", 4.0, Some(30.0)),
            level("ecspec", 1.0, Some(20.0)),
            level("cloud-only", 1.0, Some(10.0)),
            level("ecspec", 4.0, None),
        ];
        let s = tpot_series(&r);
        assert_eq!(
            s,
            vec![
                ("cloud-only".to_string(), vec![(1.0, 10.0), (4.0, 30.0)]),
                ("ecspec".to_string(), vec![(1.0, 20.0)]),
            ]
        );
        let dir = std::env::temp_dir().join(format!("ecspec-load-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["t.png", "t.svg"] {
            let p = dir.join(name);
            write_tpot_plot(&p, "TPOT", &r, 25.0).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            if name.ends_with("png") {
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            } else {
                assert!(String::from_utf8(bytes).unwrap().contains("<svg"));
            }
        }
        let e =
            write_tpot_plot(&dir.join("none.png"), "x", &[level("a", 1.0, None)], 1.0).unwrap_err();
        assert!(e.to_string().contains("no level has a TPOT"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
