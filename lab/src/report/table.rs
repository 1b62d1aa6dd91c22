//! One gap's table: the runs of each path pooled into a [`PathRow`], printed with their
//! ratios against the first path and over the floor, and written as `summary.csv` rows.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{notes, Floor};
use crate::stats::pct;
use crate::summary::{Clock, GapSource, SummaryRow};
use crate::{RunResult, WARMUP_ORDERS};

/// One path's runs at one gap, pooled.
pub(super) struct PathRow<'a> {
    pub(super) path: &'a str,
    pub(super) load: Option<u32>,
    pub(super) accounted: bool,
    pub(super) gap_ms: f64,
    pub(super) gap_requested: bool,
    pub(super) floor: Option<Floor>,
    pub(super) runs: Vec<&'a RunResult>,
    pub(super) user: Vec<u64>,
    pub(super) kernel: Vec<u64>,
    pub(super) expected: usize,
    pub(super) received: usize,
    pub(super) all_match: bool,
    pub(super) lost: u64,
    pub(super) strategy_p50_us: Option<f64>,
    pub(super) strategy_p99_us: Option<f64>,
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
        let mean_us = |f: fn(&strategy::latency::Percentiles) -> u64| {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.strategy.as_ref().map(|s| f(&s.latency_ns) as f64))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64 / 1e3)
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
                .map(|r| {
                    r.accounting.map_or_else(
                        || r.packets_sent.saturating_sub(r.packets_received),
                        |a| a.lost(),
                    )
                })
                .sum(),
            load: runs.first().and_then(|r| r.key.load),
            accounted: runs.iter().all(|r| r.accounting.is_none_or(|a| a.balanced)),
            strategy_p50_us: mean_us(|p| p.p50),
            strategy_p99_us: mean_us(|p| p.p99),
            user,
            kernel,
            runs,
        }
    }

    /// Prints the two clock rows and returns them for `summary.csv`.
    fn write(&self, out: &mut Vec<SummaryRow>, w: usize) {
        // `drops`: orders differ after packets were lost (counted below the table).
        let ok = if self.all_match {
            "yes"
        } else if self
            .runs
            .iter()
            .all(|r| r.explained != crate::load::Explained::No)
        {
            "drops"
        } else {
            "NO"
        };
        let opt = |v: f64| v.is_finite().then_some(v);
        let dash = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
        let stage = |f: fn(&crate::StageMedians) -> f64| {
            let v: Vec<f64> = self
                .runs
                .iter()
                .filter_map(|r| r.stages.as_ref().map(f))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let floor = |f: fn(&Floor) -> f64| self.floor.as_ref().map(f).and_then(opt);
        for (clock, s) in [(Clock::User, &self.user), (Clock::Kernel, &self.kernel)] {
            let v = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0].map(|q| opt(pct(s, q)));
            // p99.99 only where at least 10,000 samples back it (else it is the maximum).
            let p9999 = (s.len() >= 10_000).then(|| pct(s, 0.9999));
            println!(
                "{:<w$}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>9}  {:>10}{:>10}",
                self.path, self.runs.len(), self.expected, self.received, ok, self.lost,
                if clock == Clock::User { "user" } else { "kernel" },
                s.len(), dash(v[0]), dash(v[1]), dash(v[2]), dash(v[3]), dash(v[4]),
                dash(p9999), dash(v[5]), dash(self.strategy_p50_us), dash(self.strategy_p99_us)
            );
            out.push(SummaryRow {
                gap_ms: self.gap_ms,
                gap_source: if self.gap_requested {
                    GapSource::Requested
                } else {
                    GapSource::MeasuredMedian
                },
                path: self.path.to_owned(),
                load_pps: self.load,
                accounted: self.accounted,
                runs: self.runs.len(),
                orders_expected: self.expected,
                orders_received: self.received,
                matches: self.all_match,
                packets_lost: self.lost,
                clock,
                min_us: v[0],
                p50_us: v[1],
                p90_us: v[2],
                p99_us: v[3],
                p999_us: v[4],
                max_us: v[5],
                strategy_p50_us: self.strategy_p50_us,
                strategy_p99_us: self.strategy_p99_us,
                decide_p50_us: stage(|s| s.decide_us),
                send_p50_us: stage(|s| s.send_us),
                floor_udp_p50_us: floor(|f| f.udp_us[0]),
                floor_tcp_p50_us: floor(|f| f.tcp_us[0]),
                p9999_us: p9999,
                n: s.len(),
            });
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

fn print_header(w: usize) {
    println!();
    println!("tick-to-trade at the exchange (us): user = CLOCK_MONOTONIC in the exchange, kernel = SO_TIMESTAMPING software stamps;");
    println!("strat = the strategy's own packet-read -> order-handed-to-kernel time (us)");
    println!("warm-up: the first {WARMUP_ORDERS} orders of every run are left out of the exchange-side percentiles (kept in the CSVs)");
    println!("n = samples behind the percentiles; p99.99 only where n >= 10,000 (else it would be the maximum)");
    println!(
        "{:<w$}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>9}  {:>10}{:>10}",
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

/// Each path against its own floor (the same path with `+reflect`, in the same run and gap:
/// the same exchange, feed, pace and I/O with the strategy's work taken out): the
/// strategy's cost as the difference of the kernel-stamp medians, with its interval.
fn floor_lines(rows: &[PathRow<'_>]) {
    let spec = |r: &PathRow<'_>| r.runs.first().map(|x| x.key.path.clone());
    let pairs: Vec<(&PathRow<'_>, &PathRow<'_>)> = rows
        .iter()
        .filter_map(|a| {
            let floor = spec(a)?.floor()?;
            let b = rows.iter().find(|b| spec(b).as_ref() == Some(&floor))?;
            Some((a, b))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!(
        "over each path's own floor (the same path +reflect: marked triggers answered at once, no parse, no book; kernel stamps; the strategy's cost = p50 difference with its 95 % interval):"
    );
    for (a, b) in pairs {
        println!(
            "  {} over {}: x{:.2}{}",
            a.path,
            b.path,
            pct(&a.kernel, 0.5) / pct(&b.kernel, 0.5),
            p50_difference(&b.kernel, &a.kernel)
        );
    }
}

/// Prints one gap's table and ratios; returns its rows.
pub(super) fn gap_table<'a>(
    csv: &mut Vec<SummaryRow>,
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
            "{}order gap {:.1} ms ({}){}",
            first.load.map_or(String::new(), |l| format!(
                "load {} packets/s, ",
                crate::load::rate_label(l)
            )),
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
    let w = rows
        .iter()
        .map(|r| r.path.len() + 1)
        .max()
        .unwrap_or(0)
        .max(22);
    print_header(w);
    for row in &rows {
        row.write(csv, w);
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
                "  {}: user p50 x{:.2}, p99 x{:.2}; kernel p50 x{:.2}{}, p99 x{:.2}",
                row.path,
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
    floor_lines(&rows);
    println!("where the strategy's time went (p50 over runs' medians, us): decide = parse+book+trigger, send = encode+hand-off");
    let w = rows.iter().map(|r| r.path.len()).max().unwrap_or(0).max(14);
    for row in &rows {
        let staged: Vec<&crate::StageMedians> =
            row.runs.iter().filter_map(|r| r.stages.as_ref()).collect();
        if staged.is_empty() {
            println!(
                "  {:<w$} stages not measured (the strategy's order rows did not come back)",
                row.path
            );
            continue;
        }
        let n = staged.len() as f64;
        let mean =
            |f: fn(&crate::StageMedians) -> f64| staged.iter().map(|s| f(s)).sum::<f64>() / n;
        println!(
            "  {:<w$} decide {:>6.2}  send {:>7.2}  strategy total {:>7.2}  exchange kernel-stamp t2t {:>7.2}",
            row.path,
            mean(|s| s.decide_us),
            mean(|s| s.send_us),
            mean(|s| s.total_us),
            pct(&row.kernel, 0.5)
        );
        wire_line(row.path, w, &row.runs);
    }
    notes::drop_lines(runs);
    notes::position_lines(runs);
    notes::xdp_tx_lines(runs);
    notes::xsk_mode_lines(runs);
    notes::hw_lines(runs);
    Ok(rows)
}

/// `--wire-stamps` runs: the strategy's own wire-to-wire time on the kernel's clock and the
/// NIC's (mean of the runs' medians), or why the NIC's is absent.
fn wire_line(path: &str, w: usize, runs: &[&crate::RunResult]) {
    let mean = |f: fn(&crate::StageMedians) -> Option<f64>| {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.stages.as_ref().and_then(f))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let Some(kernel) = mean(|s| s.wire_kernel_us) else {
        return;
    };
    let nic = match mean(|s| s.wire_nic_us) {
        Some(us) => format!("{us:.2} us"),
        None => {
            let why = runs
                .iter()
                .find_map(|r| r.strategy.as_ref()?.wire.as_ref()?.nic_off.clone())
                .unwrap_or_else(|| "no NIC stamps came back".into());
            format!("- ({why})")
        }
    };
    println!("  {path:<w$} its own wire to wire (--wire-stamps, p50): kernel clock {kernel:.2} us, NIC clock {nic}");
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
