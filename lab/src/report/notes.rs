//! What a gap's table adds per run from its counters: drops, the feed reached and the
//! packets per wake-up (under `--load`), tick-to-trade by trigger position (microbursts),
//! how many orders `xdp-tx`'s program sent itself, and the NIC's clock (hardware stamps)
//! or why there is none.

use crate::stats::pct;
use crate::RunResult;
use strategy::net::af_xdp::loader::AttachMode;

/// Runs that lost market data: the path's own drop count, the identity sent = handled +
/// dropped, and how the orders then stand against the oracle.
pub(super) fn drop_lines(runs: &[&RunResult]) {
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
        if let Some(b) = r.strategy.as_ref().map(|s| s.path.rx_batches) {
            if let (Some(mean), Some(share)) = (b.mean(), b.batched_share()) {
                println!(
                    "  {}: packets per wake-up mean {mean:.2}, max {}; {:.0} % of packets came in batches of 2 or more (1 | 2-3 | 4-7 | 8-15 | 16-31 | 32-63 | 64+: {:?})",
                    r.key,
                    b.max,
                    share * 100.0,
                    [
                        b.buckets[0],
                        b.buckets[1],
                        b.buckets[2],
                        b.buckets[3],
                        b.buckets[4],
                        b.buckets[5],
                        b.buckets[6] + b.buckets[7]
                    ]
                );
            }
        }
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
        let link = a.link_dropped.map_or(String::new(), |l| {
            format!(", {l} on the link (the tap's count)")
        });
        println!(
            "  {}: sent {}, handled {}, dropped {} by the path's count{link} ({}); {orders}",
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
pub(super) fn position_lines(runs: &[&RunResult]) {
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
pub(super) fn xdp_tx_lines(runs: &[&RunResult]) {
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
        println!(
            "    lines read by the fast path {} of {} frames; frames lost before user space {} ({} resyncs, {} fires after them); heartbeats put off for a fire {}; fires settled at the end {}",
            x.prog.fast_parsed,
            x.prog.md_seen,
            x.skipped_frames,
            x.resyncs,
            x.fired_after_resync,
            x.heartbeats_deferred,
            x.settled,
        );
        println!(
            "    sent while user space was behind {} (held for the frames before them {}, completed without them {}); fires left to user space for a pending frame {}",
            x.prog.fired_behind, x.held, x.held_incomplete, x.prog.behind_unsafe,
        );
        if let Some(c) = r.strategy_cpu {
            println!("    during the run {c} (a stall in user space's loop leaves the frames behind it not current)");
        }
    }
}

/// How each AF_XDP run's program attached and its socket bound (zero copy where the
/// driver allows it, copy otherwise), once per path.
pub(super) fn xsk_mode_lines(runs: &[&RunResult]) {
    let mut seen = Vec::new();
    for r in runs {
        let Some(b) = r.xdp_backend() else { continue };
        if seen.contains(&r.path) {
            continue;
        }
        seen.push(r.path.clone());
        println!(
            "  {}: XDP attached {:?}, AF_XDP socket bound {:?}",
            r.path, b.xdp_mode, b.xsk_bind
        );
    }
}

/// The NIC's clock: tick-to-trade on hardware stamps per run when the exchange had them
/// (the exchange's own percentiles), else once why not.
pub(super) fn hw_lines(runs: &[&RunResult]) {
    let with: Vec<_> = runs
        .iter()
        .filter_map(|r| r.exchange.t2t_hw_ns.as_ref().map(|p| (r, p)))
        .collect();
    if with.is_empty() {
        if let Some(r) = runs.first() {
            let why = &r.exchange.hw_timestamps;
            println!(
                "NIC clock: hardware stamps {}",
                if why.is_empty() { "not reported" } else { why }
            );
        }
        return;
    }
    println!("NIC clock (hardware stamps, the exchange's percentiles over every order, us):");
    for (r, p) in with {
        println!(
            "  {}: p50 {:.2} p99 {:.2} ({} orders; {})",
            r.key,
            p.p50 as f64 / 1e3,
            p.p99 as f64 / 1e3,
            p.count,
            r.exchange.hw_timestamps
        );
    }
}
