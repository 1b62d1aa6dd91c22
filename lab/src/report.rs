//! The comparison of paths: a table on stdout (orders expected and received, packets lost,
//! exchange-side tick-to-trade per clock, the strategy's own latency), `summary.csv`,
//! `runs.json`, ratios against the first path of the same run, and the CDF plot.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::stats::pct;
use crate::{RunResult, WARMUP_ORDERS};

/// The columns of `summary.csv`.
pub const SUMMARY_HEADER: &str = "path,runs,orders_expected,orders_received,match,packets_lost,clock,min_us,p50_us,p90_us,p99_us,p999_us,max_us,strategy_p50_us,strategy_p99_us";

/// One path's runs, pooled.
struct PathRow<'a> {
    path: &'a str,
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
    fn new(path: &'a str, runs: Vec<&'a RunResult>) -> Self {
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
        Self {
            path,
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
            println!(
                "{:<14}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>9.1}  {:>10.1}{:>10.1}",
                self.path, self.runs.len(), self.expected, self.received, ok, self.lost, clock,
                v[0], v[1], v[2], v[3], v[4], v[5], self.strategy_p50_us, self.strategy_p99_us
            );
            writeln!(
                csv,
                "{},{},{},{},{},{},{clock},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2}",
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
                self.strategy_p99_us
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
    println!(
        "{:<14}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>9}  {:>10}{:>10}",
        "path",
        "runs",
        "orders",
        "recv",
        "match",
        "lost",
        "clock",
        "min",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "strat p50",
        "strat p99"
    );
}

/// Prints the comparison and writes `summary.csv`, `runs.json` and `t2t_cdf.svg` to `dir`.
pub fn report(dir: &Path, results: &[RunResult]) -> Result<()> {
    let mut by_path: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in results {
        if !order.contains(&r.path.as_str()) {
            order.push(&r.path);
        }
        by_path.entry(&r.path).or_default().push(r);
    }
    let mut csv = fs::File::create(dir.join("summary.csv"))?;
    writeln!(csv, "{SUMMARY_HEADER}")?;
    print_header();
    let mut rows = Vec::new();
    for path in &order {
        let row = PathRow::new(path, by_path.remove(path).unwrap_or_default());
        row.write(&mut csv)?;
        rows.push(row);
    }
    if let Some((base, rest)) = rows.split_first().filter(|(_, rest)| !rest.is_empty()) {
        println!("ratios against {} (same run):", base.path);
        let b = base.key_figures();
        for row in rest {
            let c = row.key_figures();
            println!(
                "  {}/{}: user p50 x{:.2}, p99 x{:.2}; kernel p50 x{:.2}, p99 x{:.2}",
                row.path,
                base.path,
                c[0] / b[0],
                c[1] / b[1],
                c[2] / b[2],
                c[3] / b[3]
            );
        }
    }
    fs::write(
        dir.join("runs.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    let curves: Vec<(String, Vec<u64>)> = rows
        .into_iter()
        .map(|r| (r.path.to_owned(), r.user))
        .collect();
    crate::plot::cdf(&dir.join("t2t_cdf.svg"), &curves)?;
    println!("results: {}", dir.display());
    Ok(())
}
