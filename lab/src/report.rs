//! The comparison of paths: per gap between orders, a table on stdout (orders expected and
//! received, packets lost, exchange-side tick-to-trade per clock, the strategy's own
//! latency and its stages), ratios against the first path and over the floor measured at
//! the same gap; then, with several gaps, tick-to-trade against the gap per path. Files:
//! `summary.csv` (one row per gap, path and clock; `gap_ms` first), `runs.json`,
//! `floor.json`, `t2t_cdf.svg` and, with several gaps, `t2t_vs_gap.svg`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::stats::pct;
use crate::summary::{Clock, GapSource, SummaryRow};
use crate::{RunResult, WARMUP_ORDERS};
use strategy::net::af_xdp::loader::AttachMode;

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
    load: Option<u32>,
    accounted: bool,
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
    strategy_p50_us: Option<f64>,
    strategy_p99_us: Option<f64>,
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

/// Prints one gap's table and ratios; returns its rows.
fn gap_table<'a>(
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
    }
    drop_lines(runs);
    position_lines(runs);
    xdp_tx_lines(runs);
    Ok(rows)
}

/// Runs that lost market data: the path's own drop count, the identity sent = handled +
/// dropped, and how the orders then stand against the oracle.
fn drop_lines(runs: &[&RunResult]) {
    // Under --load: the rate the publisher reached (the offered rate is the file's pace;
    // on veth the strategy side's receive runs in the sender's softirq, so it differs by path).
    for r in runs {
        let Some(load) = r.key.load else { continue };
        let e = &r.exchange;
        println!(
            "  {}: feed offered {}/s, reached {:.0}/s; {} of {} packets sent more than the late threshold after their time",
            r.key,
            crate::load::rate_label(load),
            e.counters.packets_sent as f64 / e.publish_s.max(1e-9),
            e.counters.late,
            e.counters.packets_sent
        );
    }
    for r in runs {
        let Some(a) = r.accounting else { continue };
        if a.lost() == 0 && a.balanced {
            continue;
        }
        let orders = match r.explained {
            crate::load::Explained::Equal => "orders equal to the oracle's".to_owned(),
            crate::load::Explained::AfterDrops {
                prefix,
                extra,
                missing,
            } => format!(
                "orders: the first {prefix} equal to the oracle's, then {extra} on triggers the oracle lacks (a book that missed lines), {missing} oracle triggers without an order"
            ),
            crate::load::Explained::No => "orders differ from the oracle's".to_owned(),
        };
        println!(
            "  {}: sent {}, handled {}, dropped {} by the path's count ({}); {orders}",
            r.key,
            a.sent,
            a.handled,
            a.dropped.map_or("-".to_owned(), |d| d.to_string()),
            if a.balanced {
                "sent = handled + dropped"
            } else {
                "NOT ACCOUNTED"
            }
        );
    }
}

/// In a microburst feed: kernel-stamp tick-to-trade by where the trigger sat (a burst's
/// start, its peak, right after it, the quiet feed), per path, runs pooled.
fn position_lines(runs: &[&RunResult]) {
    use mdfile::mdgen::Position;
    if runs.iter().all(|r| r.by_position.is_empty()) {
        return;
    }
    println!("by trigger position (kernel stamps, us, p50 / p99 (n)):");
    print!("  {:<34}", "path");
    for p in Position::ALL {
        print!("{:>22}", p.as_str());
    }
    println!();
    let mut order: Vec<&str> = Vec::new();
    for r in runs {
        if !order.contains(&r.path.as_str()) {
            order.push(&r.path);
        }
    }
    for path in order {
        print!("  {path:<34}");
        for p in Position::ALL {
            let mut v: Vec<u64> = runs
                .iter()
                .filter(|r| r.path == path)
                .flat_map(|r| r.by_position.get(&p).into_iter().flatten().copied())
                .collect();
            v.sort_unstable();
            if v.is_empty() {
                print!("{:>22}", "-");
            } else {
                print!(
                    "{:>22}",
                    format!("{:.1} / {:.1} ({})", pct(&v, 0.5), pct(&v, 0.99), v.len())
                );
            }
        }
        println!();
    }
}

/// For `xdp-tx` runs: how many orders the program sent itself, why it left the others to
/// user space, and the user-space time each fire cost (from the strategy's report).
fn xdp_tx_lines(runs: &[&RunResult]) {
    let mut header = false;
    for r in runs {
        let Some(x) = r.xdp_tx() else {
            continue;
        };
        if !header {
            println!("xdp-tx: decide and strategy total above are the XDP program's own time (entry -> XDP_TX); send is user space completing the delegated send, off the order's path");
            header = true;
        }
        let completed = x.completed.max(1) as f64;
        let mode = match r.xdp_backend().map(|b| b.xdp_mode) {
            Some(AttachMode::Skb) => {
                "skb (generic XDP: this NIC's driver has no native XDP; slower)".to_owned()
            }
            Some(m) => m.to_string(),
            None => "-".to_owned(),
        };
        println!(
            "  {} run {} (XDP mode {mode}): program sent {} of {} orders; left to user space: {} frames not current, {} unparsed, {} raced; mismatched {}; user time per fired order mean {:.2} us, max {:.2} us",
            r.path,
            r.key.run,
            x.prog.fired,
            r.orders_received,
            x.prog.not_current,
            x.prog.unparsed,
            x.prog.raced,
            x.mismatched,
            x.user_ns_total as f64 / completed / 1e3,
            x.user_ns_max as f64 / 1e3,
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
    println!("tick-to-trade against the gap between orders (and the feed's rate, with --load; kernel stamps, us, p50 / p99):");
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
            let load = r.load.map_or(String::new(), |l| {
                format!("{}/s ", crate::load::rate_label(l))
            });
            print!("{:>18}", format!("{load}{:.0} ms", r.gap_ms));
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

/// A short reading of the run, from its own figures (kernel-stamp p50): per gap, the
/// fastest path against the first, and what warming did to each path that ran both ways.
fn reading(all: &[Vec<PathRow<'_>>]) {
    let p50 = |r: &PathRow<'_>| pct(&r.kernel, 0.5);
    fn spec<'a>(r: &PathRow<'a>) -> Option<(&'a crate::PathSpec, &'a Option<String>)> {
        r.runs.first().map(|x| (&x.key.path, &x.key.tune))
    }
    println!("reading (kernel-stamp tick-to-trade p50, paths of the same run):");
    for rows in all {
        let Some(base) = rows.first() else {
            continue;
        };
        let Some(fast) = rows
            .iter()
            .filter(|r| p50(r).is_finite())
            .min_by(|a, b| p50(a).total_cmp(&p50(b)))
        else {
            println!("  at {:.1} ms: no kernel stamps", base.gap_ms);
            continue;
        };
        let mut line = format!(
            "  {}at {:.1} ms between orders: fastest {} {:.1} us (x{:.2} of {} {:.1} us)",
            base.load.map_or(String::new(), |l| format!(
                "feed {}/s, ",
                crate::load::rate_label(l)
            )),
            base.gap_ms,
            fast.path,
            p50(fast),
            p50(fast) / p50(base),
            base.path,
            p50(base)
        );
        let warmed: Vec<String> = rows
            .iter()
            .filter_map(|w| {
                let (ws, wt) = spec(w)?;
                ws.warm()?;
                let cold = rows.iter().find(|c| {
                    spec(c).is_some_and(|(cs, ct)| *cs == ws.without_warm() && ct == wt)
                })?;
                Some(format!("{} {:.1} -> {:.1}", cold.path, p50(cold), p50(w)))
            })
            .collect();
        if !warmed.is_empty() {
            line.push_str(&format!("; warmed: {}", warmed.join(", ")));
        }
        println!("{line}");
    }
}

/// Prints the comparison and writes `summary.csv`, `runs.json`, `floor.json` and the plots
/// to `dir`. `floors` holds the floor measured at each gap (none in the VM lab).
pub fn report(dir: &Path, results: &[RunResult], floors: &[Floor]) -> Result<()> {
    let mut csv = Vec::new();
    let mut all = Vec::new();
    for ((_, gap), runs) in group_by_gap(results) {
        let floor = floors.iter().copied().find(|f| f.gap_ms == gap);
        all.push(gap_table(&mut csv, &runs, floor)?);
    }
    crate::summary::write(&dir.join("summary.csv"), &csv)?;
    gap_matrix(&all);
    reading(&all);
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
