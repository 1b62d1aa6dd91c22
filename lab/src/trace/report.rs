//! The waterfall in the report: per gap (and load), one column per path with each point's
//! median time after the origin (runs pooled: the median of the runs' medians), the traced
//! span against the kernel-stamp tick-to-trade, and `waterfall.svg` (one bar per path and
//! gap, a segment per stage).

use std::path::Path;

use anyhow::Result;

use super::waterfall::{Waterfall, ADD_UP_NS, POINTS};
use crate::RunResult;

/// A colour per point (the stage ending there): one for each of [`POINTS`].
const COLORS: [plotters::style::RGBColor; POINTS.len()] = [
    plotters::style::RGBColor(0x99, 0x99, 0x99),
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xae, 0xc7, 0xe8),
    plotters::style::RGBColor(0xff, 0x7f, 0x0e),
    plotters::style::RGBColor(0xff, 0xbb, 0x78),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0x98, 0xdf, 0x8a),
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x94, 0x67, 0xbd),
    plotters::style::RGBColor(0xc5, 0xb0, 0xd5),
    plotters::style::RGBColor(0x8c, 0x56, 0x4b),
    plotters::style::RGBColor(0xe3, 0x77, 0xc2),
    plotters::style::RGBColor(0xbc, 0xbd, 0x22),
    plotters::style::RGBColor(0x17, 0xbe, 0xcf),
];

/// One column: a path at a gap and its runs' waterfalls.
struct Column<'a> {
    name: String,
    /// The path alone, and its gap and load (the group it is compared within).
    path: String,
    group: String,
    runs: Vec<&'a Waterfall>,
}

impl Column<'_> {
    /// The median over runs of a point's run median (None: no run passed it).
    fn point(&self, name: &str) -> Option<f64> {
        let mut v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|w| w.points.iter().find(|p| p.point == name).map(|p| p.us))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

fn columns(results: &[RunResult]) -> Vec<Column<'_>> {
    let mut cols: Vec<Column<'_>> = Vec::new();
    for r in results {
        let Some(w) = &r.trace else { continue };
        let mut group = String::new();
        if let Some(g) = r.gap_ms {
            group.push_str(&format!("@{g}ms"));
        }
        if let Some(l) = r.key.load {
            group.push_str(&format!("@{}", crate::load::rate_label(l)));
        }
        let name = format!("{}{group}", r.path);
        match cols.iter_mut().find(|c| c.name == name) {
            Some(c) => c.runs.push(w),
            None => cols.push(Column {
                name,
                path: r.path.clone(),
                group,
                runs: vec![w],
            }),
        }
    }
    cols
}

/// Prints the waterfall tables and draws `waterfall.svg` (nothing without `--trace`).
pub fn report(dir: &Path, results: &[RunResult]) -> Result<()> {
    let cols = columns(results);
    if cols.is_empty() {
        return Ok(());
    }
    let origin = cols
        .first()
        .and_then(|c| c.runs.first())
        .map_or("md veth xmit", |w| w.origin.as_str());
    println!(
        "waterfall (--trace): median us after the {origin}, per path and gap (runs pooled); '-' = the path does not pass the point (traced in the kernel: veth xmit/rx, TCP rx; user stamps: exchange send/read, strategy read/decided/send)"
    );
    let w = cols.iter().map(|c| c.name.len().max(9)).collect::<Vec<_>>();
    print!("  {:<21}", "point");
    for (c, w) in cols.iter().zip(&w) {
        print!(" {:>w$}", c.name, w = *w);
    }
    println!();
    for p in POINTS {
        if cols.iter().all(|c| c.point(p).is_none()) {
            continue;
        }
        print!("  {p:<21}");
        for (c, w) in cols.iter().zip(&w) {
            match c.point(p) {
                Some(v) => print!(" {v:>w$.2}", w = *w),
                None => print!(" {:>w$}", "-", w = *w),
            }
        }
        println!();
    }
    println!(
        "  adds up? each order's kernel-stamp tick-to-trade against the traced bounds: from the md veth xmit .. the next point (the kernel takes its TX stamp inside the veth's transmit, after cloning the packet) to the stage where it takes the RX stamp (veth rx .. netif recv for the bypass paths' frames, netif recv .. tcp rx for the kernel's own TCP: stamped at IP delivery, no tracepoint there), give or take {:.1} us; and where each kernel stamp lands on the traced clock:",
        ADD_UP_NS as f64 / 1e3
    );
    let us = |v: Option<i64>| v.map_or("-".to_owned(), |v| format!("{:+.2}", v as f64 / 1e3));
    for c in &cols {
        let (mut n, mut within, mut lost) = (0, 0, 0);
        let med = |f: &dyn Fn(&super::waterfall::AddUp) -> Option<i64>| {
            let mut v: Vec<i64> = c
                .runs
                .iter()
                .filter_map(|w| w.add_up.as_ref().and_then(f))
                .collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        };
        let tx = med(&|a| a.tx_stamp_ns);
        let rx = med(&|a| a.rx_stamp_ns);
        let stage = med(&|a| Some(a.median_stage_ns));
        let diff = med(&|a| Some(a.median_diff_ns));
        let mut kernel_tcp = false;
        for w in &c.runs {
            lost += w.counters[2];
            if let Some(a) = &w.add_up {
                n += a.compared;
                within += a.within;
                kernel_tcp |= a.kernel_tcp;
            }
        }
        if n == 0 {
            println!("    {:<24} no order with the points and the stamps", c.name);
            continue;
        }
        println!(
            "    {:<24} {within} of {n} orders inside; TX stamp {} us after md veth xmit; RX stamp {} us into its {} us stage ({}); kernel t2t minus md xmit..stage start {} us{}",
            c.name,
            us(tx),
            us(rx),
            us(stage).trim_start_matches('+'),
            if kernel_tcp { "netif recv .. tcp rx" } else { "veth rx .. netif recv" },
            us(diff),
            if lost > 0 {
                format!("; {lost} stamps lost to a full map")
            } else {
                String::new()
            }
        );
    }
    same_point(&cols);
    cost(&cols);
    plot(&dir.join("waterfall.svg"), &cols)
}

/// One horizontal bar per column; each stage (between points, in time order) a segment.
fn plot(out: &Path, cols: &[Column<'_>]) -> Result<()> {
    use plotters::prelude::*;
    let bars: Vec<(String, Vec<(&str, f64)>)> = cols
        .iter()
        .map(|c| {
            let mut pts: Vec<(&str, f64)> = POINTS
                .iter()
                .filter_map(|p| c.point(p).map(|v| (*p, v)))
                .collect();
            pts.sort_by(|a, b| a.1.total_cmp(&b.1));
            (c.name.clone(), pts)
        })
        .collect();
    let lo = bars
        .iter()
        .flat_map(|b| b.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::min);
    let hi = bars
        .iter()
        .flat_map(|b| b.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let e = |x: plotters::drawing::DrawingAreaErrorKind<_>| anyhow::anyhow!("{x}");
    // Room for a bar per column and for the legend's row per point.
    let height = (120 + 40 * bars.len() as u32).max(140 + 20 * POINTS.len() as u32);
    let root = SVGBackend::new(out, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Where each order's time goes (median us after the md veth transmit)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(300)
        // A third more on the right: the legend's place, clear of the bars.
        .build_cartesian_2d(lo..hi * 1.35, 0.0..bars.len() as f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (*y - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                bars.get(i as usize)
                    .map(|b| b.0.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("us")
        .draw()
        .map_err(e)?;
    for (i, p) in POINTS.iter().enumerate() {
        let color = COLORS[i];
        let mut segs = Vec::new();
        for (row, (_, pts)) in bars.iter().enumerate() {
            if let Some(k) = pts.iter().position(|q| q.0 == *p) {
                let from = if k == 0 { pts[k].1 } else { pts[k - 1].1 };
                let y = row as f64;
                segs.push(Rectangle::new(
                    [(from, y + 0.2), (pts[k].1, y + 0.8)],
                    color.filled(),
                ));
            }
        }
        if segs.is_empty() {
            continue;
        }
        chart
            .draw_series(segs)
            .map_err(e)?
            .label(format!("to {p}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// The tracing's own cost: each program's mean time per run (the kernel's BPF run-time
/// statistics), pooled over every traced run; a packet of the measured path meets three to
/// six of them.
fn cost(cols: &[Column<'_>]) {
    let mut by: Vec<(String, u64, u64)> = Vec::new();
    for w in cols.iter().flat_map(|c| c.runs.iter()) {
        for p in &w.cost {
            match by.iter_mut().find(|b| b.0 == p.program) {
                Some(b) => {
                    b.1 += p.runs;
                    b.2 += p.ns;
                }
                None => by.push((p.program.clone(), p.runs, p.ns)),
            }
        }
    }
    if by.is_empty() {
        println!(
            "  the tracing's own cost: not measured (the kernel refused BPF run-time statistics)"
        );
        return;
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(name, runs, ns)| {
            let mean = if *runs > 0 {
                *ns as f64 / *runs as f64
            } else {
                0.0
            };
            format!("{name} {mean:.0} ns x {runs}")
        })
        .collect();
    println!(
        "  the tracing's own cost (BPF run-time statistics, mean per run x runs, all traced runs): {}",
        parts.join(", ")
    );
}

/// The paths side by side at the one point every path passes, the order's arrival at the
/// exchange's veth (the kernel clock's RX stamp sits at a different point for the kernel's
/// own TCP than for the bypass paths: docs/measurement.md): per gap, each path's median
/// and its ratio to the first path's.
fn same_point(cols: &[Column<'_>]) {
    let mut groups: Vec<&str> = Vec::new();
    for c in cols {
        if !groups.contains(&c.group.as_str()) {
            groups.push(&c.group);
        }
    }
    println!(
        "  the same point for every path (md veth xmit -> order veth rx, median us, ratio to the first path of the gap):"
    );
    for g in groups {
        let row: Vec<(&str, f64)> = cols
            .iter()
            .filter(|c| c.group == g)
            .filter_map(|c| Some((c.path.as_str(), c.point("order veth rx")?)))
            .collect();
        let Some(&(_, base)) = row.first() else {
            continue;
        };
        let parts: Vec<String> = row
            .iter()
            .map(|(p, v)| format!("{p} {v:.2} (x{:.2})", v / base))
            .collect();
        println!("    {}: {}", g.trim_start_matches('@'), parts.join(", "));
    }
}
