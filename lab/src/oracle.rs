//! The oracle check: the orders the exchange received against the offline replay of the
//! same file, in order, field by field; and the latency samples of a run from the same rows.

use std::path::Path;

use anyhow::{Context, Result};
use mdfile::orders::{read_rows, OrderRow};
use proto::order::OrderRepr;

use crate::WARMUP_ORDERS;

/// What the exchange received in one run, against the oracle.
pub struct Received {
    /// Median gap between orders at the exchange, ns (0 with fewer than two orders).
    pub median_gap_ns: u64,
    /// Orders the oracle expects.
    pub expected: usize,
    /// Orders the exchange accepted.
    pub got: usize,
    /// Equal, in order.
    pub matches: bool,
    /// The orders, in the order they came.
    pub orders: Vec<OrderRepr>,
    /// Tick-to-trade samples, user clock, warm-up left out.
    pub t2t_user: Vec<u64>,
    /// Same, kernel stamps.
    pub t2t_kernel: Vec<u64>,
}

/// Reads the exchange's order CSV and compares it with the oracle; leaves the warm-up
/// orders out of the latency samples.
pub fn received_vs_oracle(ex_csv: &Path, oracle: &[OrderRepr]) -> Result<Received> {
    let (received, mut t2t_user, mut t2t_kernel) = read_exchange_orders(ex_csv)?;
    // Warm-up: the first orders of a session pay for cold caches, page faults and the
    // first ARP; they stay in the CSV but not in the percentiles.
    t2t_user.drain(..WARMUP_ORDERS.min(t2t_user.len()));
    t2t_kernel.drain(..WARMUP_ORDERS.min(t2t_kernel.len()));
    let got: Vec<OrderRepr> = received.iter().map(|r| r.order).collect();
    let mut gaps: Vec<u64> = received.iter().filter_map(|r| r.gap.order_ns).collect();
    gaps.sort_unstable();
    Ok(Received {
        median_gap_ns: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        expected: oracle.len(),
        got: got.len(),
        matches: got == oracle,
        orders: got,
        t2t_user,
        t2t_kernel,
    })
}

/// Reads the exchange's order rows and their latency samples (user clock; kernel stamps
/// where both exist). A missing file (the exchange accepted nothing) has no rows.
pub fn read_exchange_orders(csv: &Path) -> Result<(Vec<OrderRow>, Vec<u64>, Vec<u64>)> {
    if !csv.exists() {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let (_, rows) = read_rows(csv).with_context(|| format!("{}", csv.display()))?;
    let user = rows
        .iter()
        .filter_map(|r| r.timing.map(|t| t.t2t_first_ns()))
        .collect();
    let kernel = rows
        .iter()
        .filter_map(|r| r.timing.and_then(|t| t.kernel_t2t_ns()))
        .collect();
    Ok((rows, user, kernel))
}

/// Kernel-stamp tick-to-trade by the position of each order's trigger in a microburst
/// feed, from the file's planted sidecar (empty when it records no positions); warm-up
/// orders left out.
pub fn by_position(
    ex_csv: &Path,
    md_file: &Path,
) -> Result<std::collections::BTreeMap<mdfile::mdgen::Position, Vec<u64>>> {
    let mut out = std::collections::BTreeMap::new();
    let side = mdfile::mdgen::planted_path(md_file);
    if !side.exists() || !ex_csv.exists() {
        return Ok(out);
    }
    let at: std::collections::HashMap<u64, mdfile::mdgen::Position> =
        mdfile::mdgen::read_planted(&side)?
            .into_iter()
            .filter_map(|p| Some((p.trigger_id, p.position?)))
            .collect();
    if at.is_empty() {
        return Ok(out);
    }
    let (_, rows) = read_rows(ex_csv).with_context(|| format!("{}", ex_csv.display()))?;
    for r in rows.iter().skip(WARMUP_ORDERS) {
        if let (Some(pos), Some(k)) = (
            at.get(&r.order.trigger_id),
            r.timing.and_then(|t| t.kernel_t2t_ns()),
        ) {
            out.entry(*pos).or_insert_with(Vec::new).push(k);
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

/// Medians of the stage columns of a strategy order file (zeros when it has none).
pub fn stage_medians(csv: &Path) -> Result<crate::StageMedians> {
    if !csv.exists() {
        return Ok(crate::StageMedians::default());
    }
    let (_, rows) = read_rows(csv).with_context(|| format!("{}", csv.display()))?;
    // The median of a column over the rows that have it, us (None: no row has it).
    let med = |f: fn(&mdfile::orders::Stages) -> Option<u64>| {
        let mut v: Vec<u64> = rows
            .iter()
            .filter_map(|r| r.stages.as_ref().and_then(f))
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).map(|&x| x as f64 / 1e3)
    };
    Ok(crate::StageMedians {
        decide_us: med(|s| Some(s.decide_ns)).unwrap_or(0.0),
        send_us: med(|s| Some(s.send_ns)).unwrap_or(0.0),
        total_us: med(|s| Some(s.total_ns)).unwrap_or(0.0),
        wire_kernel_us: med(|s| s.wire_kernel_ns),
        wire_nic_us: med(|s| s.wire_nic_ns),
    })
}
/// The orders a run of `path` must give: the oracle's, or for a floor run (`+reflect`) the
/// reflect order of each trigger id the oracle fires on, once per id (the exchange marks an
/// id's first packet only).
pub fn expected(path: &crate::PathSpec, oracle: &[OrderRepr]) -> Vec<OrderRepr> {
    if !path.reflects() {
        return oracle.to_vec();
    }
    let mut out: Vec<OrderRepr> = Vec::with_capacity(oracle.len());
    for o in oracle {
        if out.last().is_none_or(|l| l.trigger_id != o.trigger_id) {
            out.push(proto::reflect::reflect_order(o.trigger_id));
        }
    }
    out
}

/// The files one run leaves.
pub struct RunFiles {
    /// The exchange's order rows.
    pub exchange_csv: std::path::PathBuf,
    /// The exchange's session summary.
    pub exchange_summary: std::path::PathBuf,
    /// The strategy's session report.
    pub strategy_report: std::path::PathBuf,
    /// The strategy's order rows (its stages).
    pub strategy_orders: std::path::PathBuf,
}

/// Whether the strategy's own count of the orders it sent equals what the exchange got.
/// Where the exchange ends a session as soon as the expected orders are in
/// (`--expect-orders`: quiet namespace runs), an order sent twice, or one more than the
/// oracle's, could arrive after it closed; anywhere, one sent after the grace. The
/// strategy's count still holds it. Says so when they differ.
pub fn sent_equals_received(tag: &str, sent: Option<u64>, received: usize) -> bool {
    let Some(sent) = sent else {
        return true; // no report: the missing report is said where it is read
    };
    let ok = sent == received as u64;
    if !ok {
        println!("  {tag}: the strategy sent {sent} orders, the exchange got {received}");
    }
    ok
}

/// A run's result from its files: the orders against the oracle, every packet accounted
/// for (a warning when not), tick-to-trade per clock.
pub fn collect(
    key: crate::key::RunKey,
    gap: Option<std::time::Duration>,
    md_file: &std::path::Path,
    oracle: &[proto::order::OrderRepr],
    f: &RunFiles,
) -> anyhow::Result<crate::RunResult> {
    let tag = key.tag();
    let summary = exchange::results::read_summaries(&f.exchange_summary)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no exchange summary"))?;
    let strat = crate::read_session_report(&f.strategy_report)?;
    let rx = received_vs_oracle(&f.exchange_csv, oracle)?;
    let accounting = crate::load::Accounting::of(summary.counters.packets_sent, &strat, rx.got);
    let explained = crate::load::explain(&rx.orders, oracle, accounting.lost());
    if !accounting.balanced {
        println!(
            "  {tag}: WARNING market data not accounted for: sent {} != handled {} + dropped {}",
            accounting.sent,
            accounting.handled,
            accounting
                .dropped
                .map_or("(no count)".to_owned(), |d| d.to_string())
        );
    }
    Ok(crate::RunResult {
        path: key.label(),
        gap_ms: gap.map(|g| g.as_secs_f64() * 1e3),
        measured_gap_ms: rx.median_gap_ns as f64 / 1e6,
        stages: Some(crate::oracle::stage_medians(&f.strategy_orders)?),
        key,
        orders_expected: rx.expected,
        orders_received: rx.got,
        orders_match: rx.matches && sent_equals_received(&tag, Some(strat.path.orders), rx.got),
        explained,
        accounting: Some(accounting),
        packets_sent: summary.counters.packets_sent,
        packets_received: strat.path.packets,
        exchange: summary,
        strategy: Some(strat),
        tune_readback: None,
        trace: None,
        strategy_cpu: None,
        t2t_user: rx.t2t_user,
        t2t_kernel: rx.t2t_kernel,
        by_position: crate::oracle::by_position(&f.exchange_csv, md_file)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_the_exchange_never_got_is_a_mismatch() {
        assert!(sent_equals_received("t", Some(5), 5));
        assert!(
            !sent_equals_received("t", Some(6), 5),
            "one more sent than received: a duplicate after the session's end"
        );
        assert!(!sent_equals_received("t", Some(4), 5));
        assert!(sent_equals_received("t", None, 5), "no report, no claim");
    }
}
