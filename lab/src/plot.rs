//! Plots (SVG, plotters): the tick-to-trade CDF per path on a log axis, and tick-to-trade
//! against the gap between orders (both axes log), one line per path.

use std::path::Path;

use anyhow::Result;
use plotters::style::RGBColor;

/// Ten colours that stay apart (Tableau 10), so a comparison of up to ten lines never
/// repeats one.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws one CDF line per `(name, sorted ns samples)` into `out`; nothing when there are no
/// samples.
pub fn cdf(out: &Path, curves: &[(String, Vec<u64>)]) -> Result<()> {
    use plotters::prelude::*;
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, v)| v.iter().map(|&x| x as f64 / 1e3))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.1) * 0.8;
    let hi = all.iter().copied().fold(0.0, f64::max) * 1.2;
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "exchange-side tick-to-trade CDF (user clock)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("tick-to-trade (us, log)")
        .y_desc("fraction of orders")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, v)) in curves.iter().enumerate() {
        let n = v.len() as f64;
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .map(|(k, &x)| (x as f64 / 1e3, (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Draws one line per `(name, [(gap ms, p50 us)])` into `out`, both axes log.
pub fn against_gap(out: &Path, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    use plotters::prelude::*;
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && y.is_finite())
        .collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (x_lo, x_hi) = pts.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let (y_lo, y_hi) = pts.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    let e = |x: plotters::drawing::DrawingAreaErrorKind<_>| anyhow::anyhow!("{x}");
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "tick-to-trade p50 (kernel stamps) against the gap between orders",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (x_lo * 0.7..x_hi * 1.4).log_scale(),
            (y_lo * 0.7..y_hi * 1.4).log_scale(),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("gap between orders (ms, log)")
        .y_desc("p50 (us, log)")
        .draw()
        .map_err(e)?;
    for (i, (name, v)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut v: Vec<(f64, f64)> = v.iter().copied().filter(|p| p.1.is_finite()).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(v.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(v.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
