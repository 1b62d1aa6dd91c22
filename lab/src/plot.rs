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

/// A log axis drawn as a linear axis over log10 of the values, so its tick labels are
/// always there (plotters' own log coordinate drops them over some ranges), each labelled
/// with the value itself.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// Covering `[min, max]` (values > 0) with some room.
    fn new(min: f64, max: f64) -> Self {
        let lo = (min.max(1e-3) * 0.8).log10();
        let hi = (max.max(min.max(1e-3) * 1.5) * 1.25).log10();
        Self { lo, hi }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }

    /// How many labels to ask for: about three per decade.
    fn label_count(&self) -> usize {
        (((self.hi - self.lo) * 3.0).ceil() as usize).clamp(4, 16)
    }
}

/// The label of a log10 position: the value, to three significant digits.
fn log_label(v: f64) -> String {
    let x = 10f64.powf(v);
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}").trim_end_matches(".0").to_owned()
    } else if x >= 1.0 {
        format!("{x:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        format!("{x:.3}")
    }
}

/// Draws one CDF line per `(name, sorted ns samples, thick)` into `out`, the x axis log
/// (us) with labelled ticks; thick lines for the user clock, thin for kernel stamps.
pub fn cdf(out: &Path, curves: &[(String, Vec<u64>, bool)]) -> Result<()> {
    use plotters::prelude::*;
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, v, _)| v.iter().map(|&x| x as f64 / 1e3))
        .filter(|x| *x > 0.0)
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let max = all.iter().copied().fold(0.0, f64::max);
    let axis = LogAxis::new(min, max);
    let e = |x: plotters::drawing::DrawingAreaErrorKind<_>| anyhow::anyhow!("{x}");
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "exchange-side tick-to-trade CDF (thick: user clock, thin: kernel stamps)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(axis.range(), 0.0..1.0)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("tick-to-trade (us, log)")
        .y_desc("fraction of orders")
        .x_labels(axis.label_count())
        .x_label_formatter(&|v| log_label(*v))
        .draw()
        .map_err(e)?;
    for (i, (name, v, thick)) in curves.iter().enumerate() {
        let n = v.len() as f64;
        let color = PALETTE[(i / 2) % PALETTE.len()];
        let width = if *thick { 2 } else { 1 };
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .filter(|(_, &x)| x > 0)
                    .map(|(k, &x)| ((x as f64 / 1e3).log10(), (k + 1) as f64 / n)),
                color.stroke_width(width),
            ))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Draws one line per `(name, [(gap ms, p50 us)])` into `out`, both axes log with labelled
/// ticks.
pub fn against_gap(out: &Path, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    against(
        out,
        "tick-to-trade p50 (kernel stamps) against the gap between orders",
        "gap between orders (ms, log)",
        lines,
    )
}

/// Tick-to-trade p50 (kernel stamps) against the feed's rate, one line per path and gap,
/// log axes.
pub fn against_load(out: &Path, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    against(
        out,
        "tick-to-trade p50 (kernel stamps) against the feed's rate",
        "market-data packets/s (log)",
        lines,
    )
}

/// One line per series of `(x, y)` points on log axes.
fn against(
    out: &Path,
    caption: &str,
    x_desc: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
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
    let (xa, ya) = (LogAxis::new(x_lo, x_hi), LogAxis::new(y_lo, y_hi));
    let e = |x: plotters::drawing::DrawingAreaErrorKind<_>| anyhow::anyhow!("{x}");
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(xa.range(), ya.range())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("p50 (us, log)")
        .x_labels(xa.label_count())
        .y_labels(ya.label_count())
        .x_label_formatter(&|v| log_label(*v))
        .y_label_formatter(&|v| log_label(*v))
        .draw()
        .map_err(e)?;
    for (i, (name, v)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut v: Vec<(f64, f64)> = v
            .iter()
            .copied()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.1.is_finite())
            .map(|(x, y)| (x.log10(), y.log10()))
            .collect();
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
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Draws one line per `(name, [(x, us)])` into `out`: a linear x axis described by
/// `x_desc` (with `ticks`, the x values are positions 0, 1, ... labelled with these), a
/// linear y axis in us from 0. Used by sweeps.
pub fn against_value(
    out: &Path,
    caption: &str,
    x_desc: &str,
    ticks: Option<&[String]>,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    use plotters::prelude::*;
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (x_lo, x_hi) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let y_hi = pts.iter().fold(0.0f64, |a, p| a.max(p.1)) * 1.1;
    let pad = ((x_hi - x_lo) * 0.05).max(0.5);
    let e = |x: plotters::drawing::DrawingAreaErrorKind<_>| anyhow::anyhow!("{x}");
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((x_lo - pad)..(x_hi + pad), 0.0..y_hi.max(1.0))
        .map_err(e)?;
    let label = |v: &f64| match ticks {
        Some(t) => {
            let i = v.round();
            if (v - i).abs() < 1e-9 && i >= 0.0 {
                t.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None => format!("{v}"),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("tick-to-trade (us)")
        .x_labels(ticks.map_or(10, |t| t.len() * 4 + 1))
        .x_label_formatter(&label)
        .draw()
        .map_err(e)?;
    for (i, (name, v)) in lines.iter().enumerate() {
        let color = PALETTE[(i / 2) % PALETTE.len()];
        let mut v: Vec<(f64, f64)> = v
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let width = if i % 2 == 0 { 2 } else { 1 };
        chart
            .draw_series(LineSeries::new(
                v.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(v.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_carry_value_labels() {
        assert_eq!(log_label(1.0), "10");
        assert_eq!(log_label(2.0), "100");
        assert_eq!(log_label(0.5), "3.16");
        assert_eq!(log_label(3.0), "1000");
        assert!(LogAxis::new(3.0, 4000.0).label_count() >= 8);
        let dir = tempfile::tempdir().expect("tempdir");
        let svg = dir.path().join("cdf.svg");
        let samples: Vec<u64> = (1..=100).map(|i| i * 40_000).collect();
        cdf(
            &svg,
            &[
                ("kernel user".into(), samples.clone(), true),
                ("kernel kernel".into(), samples, false),
            ],
        )
        .expect("plot");
        let text = std::fs::read_to_string(&svg).expect("svg");
        // Tick labels of the log axis (values, not log10 positions), the axis title, both
        // clocks' legends.
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| l.chars().all(|c| c.is_ascii_digit() || c == '.') && !l.is_empty())
            .collect();
        let x_values: Vec<f64> = labels
            .iter()
            .filter_map(|l| l.parse().ok())
            .filter(|&v: &f64| v > 1.0)
            .collect();
        assert!(
            x_values.iter().any(|&v| v >= 1000.0),
            "a label past 1000 us: {labels:?}"
        );
        assert!(
            x_values.iter().any(|&v| (40.0..=100.0).contains(&v)),
            "a label near the low end: {labels:?}"
        );
        for want in ["tick-to-trade (us, log)", "kernel user", "kernel kernel"] {
            assert!(text.contains(want), "{want} in the SVG");
        }
    }
}
