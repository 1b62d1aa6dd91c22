//! The comparison of paths: per gap between orders (and feed rate), a table on stdout
//! (`table`: orders expected and received, packets lost, exchange-side tick-to-trade per
//! clock, the strategy's own latency and its stages, ratios against the first path and
//! over the floor measured at the same gap), what each run's counters add (`notes`:
//! drops, trigger positions, `xdp-tx`'s program), then across gaps and loads
//! (`across`: tick-to-trade against the gap, a short reading). Files: `summary.csv` (one
//! row per gap, path and clock), `runs.json`, `floor.json`, `t2t_cdf.svg` and, with several
//! gaps or loads, `t2t_vs_gap.svg` and `t2t_vs_load.svg`.

mod across;
mod notes;
mod table;

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::stats::pct;
use crate::summary::Clock;
use crate::RunResult;
use table::PathRow;

/// The ping-pong floor measured at one gap, us.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    /// The gap, ms (None: back to back, for a file with its own gaps).
    pub gap_ms: Option<f64>,
    /// UDP round trip p50 / p90 / p99.
    pub udp_us: [f64; 3],
    /// TCP_NODELAY round trip p50 / p90 / p99.
    pub tcp_us: [f64; 3],
    /// Round trips per protocol.
    pub round_trips: usize,
}

impl Floor {
    /// From sorted round-trip samples (ns).
    pub fn new(gap: Option<std::time::Duration>, (udp, tcp): &(Vec<u64>, Vec<u64>)) -> Self {
        let q = |v: &[u64]| [pct(v, 0.5), pct(v, 0.9), pct(v, 0.99)];
        Self {
            gap_ms: gap.map(|g| g.as_secs_f64() * 1e3),
            udp_us: q(udp),
            tcp_us: q(tcp),
            round_trips: udp.len(),
        }
    }
}

/// The runs of one gap, in the order the paths ran.
type Group<'a> = ((Option<u32>, Option<f64>), Vec<&'a RunResult>);

/// The runs of one load and gap, in the order the paths ran.
fn group_by_gap(results: &[RunResult]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for r in results {
        let k = (r.key.load, r.gap_ms);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(r),
            None => groups.push((k, vec![r])),
        }
    }
    groups
}

/// Prints the comparison and writes `summary.csv`, `runs.json`, `floor.json` and the plots
/// to `dir`. `floors` holds the floor measured at each gap (none in the VM lab).
pub fn report(dir: &Path, results: &[RunResult], floors: &[Floor]) -> Result<()> {
    let mut csv = Vec::new();
    let mut all = Vec::new();
    for ((_, gap), runs) in group_by_gap(results) {
        let floor = floors.iter().copied().find(|f| f.gap_ms == gap);
        all.push(table::gap_table(&mut csv, &runs, floor)?);
    }
    crate::summary::write(&dir.join("summary.csv"), &csv)?;
    across::gap_matrix(&all);
    across::reading(&all);
    fs::write(
        dir.join("runs.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    if !floors.is_empty() {
        fs::write(
            dir.join("floor.json"),
            serde_json::to_string_pretty(floors)?,
        )?;
    }
    let cdf: Vec<(String, Vec<u64>, bool)> = all
        .iter()
        .flatten()
        .flat_map(|r| {
            let name = format!("{} @ {:.1} ms", r.path, r.gap_ms);
            [
                (format!("{name}, user"), r.user.clone(), true),
                (format!("{name}, kernel"), r.kernel.clone(), false),
            ]
        })
        .collect();
    crate::plot::cdf(&dir.join("t2t_cdf.svg"), &cdf)?;
    if all.len() > 1 {
        let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in all.iter().flatten() {
            let point = (r.gap_ms, pct(&r.kernel, 0.5));
            match lines.iter_mut().find(|(n, _)| n == r.path) {
                Some((_, v)) => v.push(point),
                None => lines.push((r.path.to_owned(), vec![point])),
            }
        }
        let floor_line: Vec<(f64, f64)> = all
            .iter()
            .filter_map(|rows| rows.first())
            .filter_map(|r| r.floor.map(|f| (r.gap_ms, f.tcp_us[0])))
            .collect();
        if !floor_line.is_empty() {
            lines.push(("floor (TCP ping-pong)".to_owned(), floor_line));
        }
        crate::plot::against_gap(&dir.join("t2t_vs_gap.svg"), &lines)?;
    }
    load_plot(dir, &all)?;
    crate::trace::report::report(dir, results)?;
    let html = crate::html::write_run(dir)?;
    println!("results: {} (report: {})", dir.display(), html.display());
    Ok(())
}

/// With several loads: `t2t_vs_load.svg`, kernel-stamp p50 against the feed's rate, one
/// line per path and gap.
fn load_plot(dir: &Path, all: &[Vec<PathRow<'_>>]) -> Result<()> {
    let mut loads: Vec<u32> = all.iter().flatten().filter_map(|r| r.load).collect();
    loads.sort_unstable();
    loads.dedup();
    if loads.len() < 2 {
        return Ok(());
    }
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in all.iter().flatten() {
        let Some(load) = r.load else { continue };
        let name = format!("{} @ {} ms", r.path, r.gap_ms);
        let point = (f64::from(load), pct(&r.kernel, 0.5));
        match lines.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(point),
            None => lines.push((name, vec![point])),
        }
    }
    crate::plot::against_load(&dir.join("t2t_vs_load.svg"), &lines)
}

/// Redraws `t2t_vs_gap.svg` of a results folder from its `summary.csv` (kernel-stamp p50 per
/// path and gap, and the floor), e.g. after a change to the plot.
pub fn replot_gap(dir: &Path) -> Result<()> {
    let rows = crate::summary::read(&dir.join("summary.csv"))?;
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut floor_line: Vec<(f64, f64)> = Vec::new();
    for r in rows.iter().filter(|r| r.clock == Clock::Kernel) {
        let g = r.gap_ms;
        if let Some(v) = r.p50_us {
            match out.iter_mut().find(|(n, _)| *n == r.path) {
                Some((_, pts)) => pts.push((g, v)),
                None => out.push((r.path.clone(), vec![(g, v)])),
            }
        }
        if let Some(fl) = r.floor_tcp_p50_us {
            if !floor_line.iter().any(|&(x, _)| x == g) {
                floor_line.push((g, fl));
            }
        }
    }
    if !floor_line.is_empty() {
        out.push(("floor (TCP ping-pong)".to_owned(), floor_line));
    }
    crate::plot::against_gap(&dir.join("t2t_vs_gap.svg"), &out)?;
    println!("wrote {}", dir.join("t2t_vs_gap.svg").display());
    Ok(())
}
