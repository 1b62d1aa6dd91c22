//! The comparison of paths: per gap between orders, a table on stdout (orders expected and
//! received, packets lost, exchange-side tick-to-trade per clock, the strategy's own
//! latency and its stages), ratios against the first path and over the floor measured at
//! the same gap; then, with several gaps, tick-to-trade against the gap per path. Files:
//! `summary.csv` (one row per gap, path and clock; `gap_ms` first), `runs.json`,
//! `floor.json`, `t2t_cdf.svg` and, with several gaps, `t2t_vs_gap.svg`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::stats::pct;
use crate::{RunResult, WARMUP_ORDERS};

/// The columns of `summary.csv`. `gap_ms` is the gap the file was made for
/// (`--order-gap`), or else the median gap between orders the exchange measured;
/// `gap_source` says which.
pub const SUMMARY_HEADER: &str = "gap_ms,gap_source,path,runs,orders_expected,orders_received,match,packets_lost,clock,min_us,p50_us,p90_us,p99_us,p999_us,max_us,strategy_p50_us,strategy_p99_us,decide_p50_us,send_p50_us,floor_udp_p50_us,floor_tcp_p50_us,p9999_us,n";

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

/// One path's runs at one gap, pooled.
struct PathRow<'a> {
    path: &'a str,
    gap_ms: f64,
    gap_requested: bool,
    floor: Option<Floor>,
    runs: Vec<&'a RunResult>,
    user: Vec<u64>,
    kernel: Vec<u64>,
    expected: usize,
    received: usize,
    all_match: bool,
    lost: u64,
    strategy_p50_us: f64,
    strategy_p99_us: f64,
}

impl<'a> PathRow<'a> {
    fn new(path: &'a str, runs: Vec<&'a RunResult>, floor: Option<Floor>) -> Self {
        let mut user: Vec<u64> = runs
            .iter()
            .flat_map(|r| r.t2t_user.iter().copied())
            .collect();
        let mut kernel: Vec<u64> = runs
            .iter()
            .flat_map(|r| r.t2t_kernel.iter().copied())
            .collect();
        user.sort_unstable();
        kernel.sort_unstable();
        let mean_us = |key: &str| {
            runs.iter()
                .filter_map(|r| r.strategy["latency_ns"][key].as_f64())
                .sum::<f64>()
                / runs.len() as f64
                / 1e3
        };
        let mut measured: Vec<f64> = runs.iter().map(|r| r.measured_gap_ms).collect();
        measured.sort_by(f64::total_cmp);
        let requested = runs.first().and_then(|r| r.gap_ms);
        Self {
            path,
            gap_ms: requested
                .unwrap_or_else(|| measured.get(measured.len() / 2).copied().unwrap_or(0.0)),
            gap_requested: requested.is_some(),
            floor,
            expected: runs.iter().map(|r| r.orders_expected).sum(),
            received: runs.iter().map(|r| r.orders_received).sum(),
            all_match: runs.iter().all(|r| r.orders_match),
            lost: runs
                .iter()
                .map(|r| r.packets_sent.saturating_sub(r.packets_received))
                .sum(),
            strategy_p50_us: mean_us("p50"),
            strategy_p99_us: mean_us("p99"),
            user,
            kernel,
            runs,
        }
    }

    /// Prints and writes the two clock rows.
    fn write(&self, csv: &mut impl Write) -> Result<()> {
        let ok = if self.all_match { "yes" } else { "NO" };
        for (clock, s) in [("user", &self.user), ("kernel", &self.kernel)] {
            let v = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0].map(|q| pct(s, q));
            // p99.99 only where at least 10,000 samples back it (else it is the maximum).
            let p9999 = (s.len() >= 10_000).then(|| pct(s, 0.9999));
            println!(
                "{:<22}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>7}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>8}{:>9.1}  {:>10.1}{:>10.1}",
                self.path, self.runs.len(), self.expected, self.received, ok, self.lost, clock,
                s.len(), v[0], v[1], v[2], v[3], v[4],
                p9999.map_or("-".to_owned(), |p| format!("{p:.1}")),
                v[5], self.strategy_p50_us, self.strategy_p99_us
            );
            let stage = |f: fn(&RunResult) -> f64| {
                self.runs.iter().map(|r| f(r)).sum::<f64>() / self.runs.len() as f64
            };
            let floor = |f: fn(&Floor) -> f64| self.floor.as_ref().map_or(f64::NAN, f);
            writeln!(
                csv,
                "{:.3},{},{},{},{},{},{},{},{clock},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{},{}",
                self.gap_ms,
                if self.gap_requested { "requested" } else { "measured_median" },
                self.path,
                self.runs.len(),
                self.expected,
                self.received,
                self.all_match,
                self.lost,
                v[0],
                v[1],
                v[2],
                v[3],
                v[4],
                v[5],
                self.strategy_p50_us,
                self.strategy_p99_us,
                stage(|r| r.stages.decide_us),
                stage(|r| r.stages.send_us),
                floor(|f| f.udp_us[0]),
                floor(|f| f.tcp_us[0]),
                p9999.map_or(String::new(), |p| format!("{p:.2}")),
                s.len(),
            )?;
        }
        if self.runs.len() > 1 {
            let spread = |f: fn(&RunResult) -> u64| {
                self.runs
                    .iter()
                    .map(|r| format!("{:.1}", f(r) as f64 / 1e3))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "         spread across runs: p50 [{}] us, p99 [{}] us",
                spread(|r| r.exchange.t2t_user_ns.p50),
                spread(|r| r.exchange.t2t_user_ns.p99)
            );
        }
        Ok(())
    }

    /// (user p50, user p99, kernel p50, kernel p99), us.
    fn key_figures(&self) -> [f64; 4] {
        [
            pct(&self.user, 0.5),
            pct(&self.user, 0.99),
            pct(&self.kernel, 0.5),
            pct(&self.kernel, 0.99),
        ]
    }
}

fn print_header() {
    println!();
    println!("tick-to-trade at the exchange (us): user = CLOCK_MONOTONIC in the exchange, kernel = SO_TIMESTAMPING software stamps;");
    println!("strat = the strategy's own packet-read -> order-handed-to-kernel time (us)");
    println!("warm-up: the first {WARMUP_ORDERS} orders of every run are left out of the exchange-side percentiles (kept in the CSVs)");
    println!("n = samples behind the percentiles; p99.99 only where n >= 10,000 (else it would be the maximum)");
    println!(
        "{:<22}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>9}  {:>10}{:>10}",
        "path",
        "runs",
        "orders",
        "recv",
        "match",
        "lost",
        "clock",
        "n",
        "min",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "strat p50",
        "strat p99"
    );
}

/// ` (+0.3 us [+0.3, +0.4])`: median(b) - median(a) with its 95 % percentile-bootstrap
/// interval (the one `lab compare` gives); empty when either side has too few samples.
fn p50_difference(a: &[u64], b: &[u64]) -> String {
    if a.len() < 2 || b.len() < 2 {
        return String::new();
    }
    let (lo, hi) = crate::compare::bootstrap_ci(a, b, 2000, 0x5eed);
    format!(
        " ({:+.1} us [{lo:+.1}, {hi:+.1}])",
        pct(b, 0.5) - pct(a, 0.5)
    )
}

/// The runs of one gap, in the order the paths ran.
fn group_by_gap(results: &[RunResult]) -> Vec<(Option<f64>, Vec<&RunResult>)> {
    let mut groups: Vec<(Option<f64>, Vec<&RunResult>)> = Vec::new();
    for r in results {
        match groups.iter_mut().find(|(g, _)| *g == r.gap_ms) {
            Some((_, v)) => v.push(r),
            None => groups.push((r.gap_ms, vec![r])),
        }
    }
    groups
}

/// Prints one gap's table and ratios; returns its rows.
fn gap_table<'a>(
    csv: &mut impl Write,
    runs: &[&'a RunResult],
    floor: Option<Floor>,
) -> Result<Vec<PathRow<'a>>> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_path: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        if !order.contains(&r.path.as_str()) {
            order.push(&r.path);
        }
        by_path.entry(&r.path).or_default().push(r);
    }
    let rows: Vec<PathRow<'a>> = order
        .iter()
        .map(|p| PathRow::new(p, by_path.remove(p).unwrap_or_default(), floor))
        .collect();
    if let Some(first) = rows.first() {
        println!();
        println!(
            "order gap {:.1} ms ({}){}",
            first.gap_ms,
            if first.gap_requested {
                "file made for this gap; measured medians per run are in runs.json"
            } else {
                "median measured at the exchange: every figure below is at this gap"
            },
            floor.map_or(String::new(), |f| {
                let at = if f.gap_ms.is_some() {
                    "at this gap"
                } else {
                    "back to back, NOT at this gap (use --order-gap to compare like with like)"
                };
                format!(
                    "; floor {at}: UDP p50 {:.1} us, TCP p50 {:.1} us",
                    f.udp_us[0], f.tcp_us[0]
                )
            })
        );
    }
    print_header();
    for row in &rows {
        row.write(csv)?;
    }
    if let Some((base, rest)) = rows.split_first().filter(|(_, rest)| !rest.is_empty()) {
        println!(
            "ratios against {} (same run, same gap; kernel p50 also as the difference of medians with its 95 % bootstrap interval, as `lab compare --paths`):",
            base.path
        );
        let b = base.key_figures();
        for row in rest {
            let c = row.key_figures();
            println!(
                "  {}/{}: user p50 x{:.2}, p99 x{:.2}; kernel p50 x{:.2}{}, p99 x{:.2}",
                row.path,
                base.path,
                c[0] / b[0],
                c[1] / b[1],
                c[2] / b[2],
                p50_difference(&base.kernel, &row.kernel),
                c[3] / b[3]
            );
        }
    }
    if let Some(f) = floor {
        println!(
            "over the floor{} (user-clock tick-to-trade p50 / UDP round trip p50):",
            if f.gap_ms.is_some() {
                " at this gap"
            } else {
                " measured back to back"
            }
        );
        for row in &rows {
            println!("  {}: x{:.2}", row.path, pct(&row.user, 0.5) / f.udp_us[0]);
        }
    }
    println!("where the strategy's time went (p50 over runs' medians, us): decide = parse+book+trigger, send = encode+hand-off");
    let w = rows.iter().map(|r| r.path.len()).max().unwrap_or(0).max(14);
    for row in &rows {
        let n = row.runs.len() as f64;
        let (d, s, t) = row.runs.iter().fold((0.0, 0.0, 0.0), |acc, r| {
            (
                acc.0 + r.stages.decide_us,
                acc.1 + r.stages.send_us,
                acc.2 + r.stages.total_us,
            )
        });
        println!(
            "  {:<w$} decide {:>6.2}  send {:>7.2}  strategy total {:>7.2}  exchange kernel-stamp t2t {:>7.2}",
            row.path,
            d / n,
            s / n,
            t / n,
            pct(&row.kernel, 0.5)
        );
    }
    xdp_tx_lines(runs);
    Ok(rows)
}

/// For `xdp-tx` runs: how many orders the program sent itself, why it left the others to
/// user space, and the user-space time each fire cost (from the strategy's report).
fn xdp_tx_lines(runs: &[&RunResult]) {
    let mut header = false;
    for r in runs {
        let x = &r.strategy["path_extra"]["xdp_tx"];
        if x.is_null() {
            continue;
        }
        if !header {
            println!("xdp-tx: decide and strategy total above are the XDP program's own time (entry -> XDP_TX); send is user space completing the delegated send, off the order's path");
            header = true;
        }
        let n = |k: &str| x[k].as_u64().unwrap_or(0);
        let completed = n("completed").max(1) as f64;
        let mode = r.strategy["path_extra"]["backend"]["xdp_mode"]
            .as_str()
            .unwrap_or("?");
        let mode = if mode == "skb" {
            "skb (generic XDP: this NIC's driver has no native XDP; slower)"
        } else {
            mode
        };
        println!(
            "  {} run {} (XDP mode {mode}): program sent {} of {} orders; left to user space: {} frames not current, {} unparsed, {} raced; mismatched {}; user time per fired order mean {:.2} us, max {:.2} us",
            r.path,
            r.key.run,
            n("fired"),
            r.orders_received,
            n("not_current"),
            n("unparsed"),
            n("raced"),
            n("mismatched"),
            n("user_ns_total") as f64 / completed / 1e3,
            n("user_ns_max") as f64 / 1e3,
        );
    }
}

/// With several gaps: p50 / p99 of the kernel-stamp tick-to-trade per path (rows) and gap
/// (columns), and the floor's TCP round trip at each gap.
fn gap_matrix(all: &[Vec<PathRow<'_>>]) {
    if all.len() < 2 {
        return;
    }
    println!();
    println!("tick-to-trade against the gap between orders (kernel stamps, us, p50 / p99):");
    let w = all
        .iter()
        .flatten()
        .map(|r| r.path.len() + 2)
        .max()
        .unwrap_or(0)
        .max(14);
    print!("{:<w$}", "path");
    for rows in all {
        if let Some(r) = rows.first() {
            print!("{:>18}", format!("{:.0} ms", r.gap_ms));
        }
    }
    println!();
    let mut paths: Vec<&str> = Vec::new();
    for r in all.iter().flatten() {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    for p in paths {
        print!("{p:<w$}");
        for rows in all {
            match rows.iter().find(|r| r.path == p) {
                Some(r) => print!(
                    "{:>18}",
                    format!("{:.1} / {:.1}", pct(&r.kernel, 0.5), pct(&r.kernel, 0.99))
                ),
                None => print!("{:>18}", "-"),
            }
        }
        println!();
    }
    print!("{:<w$}", "floor (TCP)");
    for rows in all {
        let f = rows.first().and_then(|r| r.floor);
        print!(
            "{:>18}",
            f.map_or("-".to_owned(), |f| format!(
                "{:.1} / {:.1}",
                f.tcp_us[0], f.tcp_us[2]
            ))
        );
    }
    println!();
}

/// Prints the comparison and writes `summary.csv`, `runs.json`, `floor.json` and the plots
/// to `dir`. `floors` holds the floor measured at each gap (none in the VM lab).
pub fn report(dir: &Path, results: &[RunResult], floors: &[Floor]) -> Result<()> {
    let mut csv = fs::File::create(dir.join("summary.csv"))?;
    writeln!(csv, "{SUMMARY_HEADER}")?;
    let mut all = Vec::new();
    for (gap, runs) in group_by_gap(results) {
        let floor = floors.iter().copied().find(|f| f.gap_ms == gap);
        all.push(gap_table(&mut csv, &runs, floor)?);
    }
    gap_matrix(&all);
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
    let html = crate::html::write_run(dir)?;
    println!("results: {} (report: {})", dir.display(), html.display());
    Ok(())
}

/// Redraws `t2t_vs_gap.svg` of a results folder from its `summary.csv` (kernel-stamp p50 per
/// path and gap, and the floor), e.g. after a change to the plot.
pub fn replot_gap(dir: &Path) -> Result<()> {
    let path = dir.join("summary.csv");
    let text = fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow::anyhow!("{}: no column {name}", path.display()))
    };
    let (gap, p, clock, p50, floor) = (
        col("gap_ms")?,
        col("path")?,
        col("clock")?,
        col("p50_us")?,
        col("floor_tcp_p50_us")?,
    );
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut floor_line: Vec<(f64, f64)> = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize| -> Result<f64> {
            f.get(c)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{} line {}: bad number", path.display(), i + 2))
        };
        if f.get(clock) != Some(&"kernel") {
            continue;
        }
        let (g, v) = (num(gap)?, num(p50)?);
        let name = f.get(p).copied().unwrap_or_default().to_owned();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, pts)) => pts.push((g, v)),
            None => out.push((name, vec![(g, v)])),
        }
        if let Ok(fl) = num(floor) {
            if fl.is_finite() && !floor_line.iter().any(|&(x, _)| x == g) {
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

#[cfg(test)]
mod tests {
    use super::p50_difference;

    fn spread(base_ns: u64, n: u64) -> Vec<u64> {
        // A deterministic spread of 0..2 us around the base, sorted.
        let mut v: Vec<u64> = (0..n).map(|i| base_ns + (i * 7919) % 2_000).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn the_p50_difference_states_its_interval() {
        let a = spread(4_000, 500);
        let same = p50_difference(&a, &a);
        assert!(same.starts_with(" (+0.0 us ["), "{same}");
        let later = p50_difference(&a, &spread(14_000, 500));
        assert!(later.starts_with(" (+10.0 us [+"), "{later}");
        let earlier = p50_difference(&spread(14_000, 500), &a);
        assert!(earlier.starts_with(" (-10.0 us [-"), "{earlier}");
        assert_eq!(
            p50_difference(&a[..1], &a),
            "",
            "too few samples: nothing claimed"
        );
    }
}
