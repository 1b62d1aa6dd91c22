//! One row per order from the traced stamps, the exchange's row and the strategy's row,
//! all on `CLOCK_MONOTONIC`; per run the median of each point, and the check that the
//! traced span adds up to the kernel-stamp tick-to-trade.
//!
//! The points, in the order a packet meets them ([`POINTS`]): the exchange's send (user),
//! its veth transmit, the strategy's veth receive, the strategy's read of the trigger packet
//! (on `xdp-tx`, the program's entry), its decision, its send call and return (on `xdp-tx`
//! the XDP_TX), the order's veth transmit (the kernel's TCP only), the exchange's veth
//! receive, `netif_receive_skb` (after GRO where the veth runs NAPI) and TCP receive of the
//! segment, the exchange's read (user). A point a path does
//! not pass is absent, never 0.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use mdfile::orders::OrderRow;
use serde::{Deserialize, Serialize};
use strategy_common::trace::seg_point;

use super::Stamps;

/// The points, in the order a packet meets them.
pub const POINTS: [&str; 14] = [
    "exchange send",
    "md veth xmit",
    "md kernel tx stamp",
    "md veth rx",
    "strategy read",
    "decided",
    "send call",
    "send returned",
    "order veth xmit",
    "order veth rx",
    "order netif recv",
    "order kernel rx stamp",
    "exchange tcp rx",
    "exchange read",
];
const MD_XMIT: usize = 1;
const MD_RX: usize = 3;
const STRATEGY_READ: usize = 4;
const ORDER_XMIT: usize = 8;
const ORDER_RX: usize = 9;
const ORDER_RECEIVE: usize = 10;
const MD_KTX: usize = 2;
const ORDER_KRX: usize = 11;
const EXCHANGE_TCP: usize = 12;

/// Tolerance of the add-up check: the traced span against the kernel-stamp tick-to-trade.
pub const ADD_UP_NS: u64 = 500;

/// One order's points (ns, `CLOCK_MONOTONIC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTrace {
    /// The order's trigger id.
    pub trigger_id: u64,
    /// Each of [`POINTS`].
    pub at: [Option<u64>; POINTS.len()],
    /// The exchange's kernel-stamp tick-to-trade.
    pub kernel_t2t_ns: Option<u64>,
}

impl OrderTrace {
    /// The traced span the kernel stamps measure: the market data's veth transmit to the
    /// order's veth receive on the exchange's side.
    pub fn traced_t2t_ns(&self) -> Option<u64> {
        let (a, b) = (self.at[MD_XMIT]?, self.at[ORDER_RX]?);
        b.checked_sub(a)
    }

    /// The traced stage in which the exchange's kernel takes the market data's TX stamp:
    /// inside the veth's transmit, after the time `skb_tx_timestamp` takes to clone the
    /// packet for the error queue, so between our md veth xmit and the first point after it
    /// (the strategy's veth rx, which the same transmit call runs, or, where an XDP program
    /// takes the packet, the strategy's read). After the md veth xmit.
    pub fn tx_stamp_stage(&self) -> Option<(i64, i64)> {
        let t0 = self.at[MD_XMIT]? as i64;
        let hi = self.at[MD_RX].or(self.at[STRATEGY_READ])? as i64;
        Some((0, hi - t0))
    }

    /// The traced stage in which the exchange's kernel takes the order's RX stamp, as
    /// (from, to) after the md veth transmit. The kernel stamps a segment once, at the first
    /// of: `netif_rx` (the backlog path: our veth rx), `netif_receive_skb_internal` after GRO
    /// (a veth running NAPI: between our veth rx and netif recv), or, for a segment of the
    /// kernel's own TCP (it carries TCP's departure time, which the receive keeps until IP
    /// delivery), `ip_local_deliver`: between netif recv and the TCP receive. A segment of
    /// the kernel's TCP is one that passed the strategy's veth transmit tracepoint (the
    /// bypass paths hand frames to the driver directly).
    pub fn rx_stamp_stage(&self) -> Option<(i64, i64)> {
        let t0 = self.at[MD_XMIT]? as i64;
        let (lo, hi) = if self.at[ORDER_XMIT].is_some() {
            (self.at[ORDER_RECEIVE]?, self.at[EXCHANGE_TCP]?)
        } else {
            (
                self.at[ORDER_RX]?,
                self.at[ORDER_RECEIVE].unwrap_or(self.at[ORDER_RX]?),
            )
        };
        Some((lo as i64 - t0, hi as i64 - t0))
    }
}

/// Joins one run's rows: one [`OrderTrace`] per exchange row. `delegated`: the path's
/// orders are sent by the XDP program (`xdp-tx`), whose stages are the program's.
pub fn join(
    exchange: &[OrderRow],
    strategy: &[OrderRow],
    stamps: &Stamps,
    delegated: bool,
) -> Vec<OrderTrace> {
    let by_id: HashMap<u64, &OrderRow> = strategy.iter().map(|r| (r.order.trigger_id, r)).collect();
    exchange
        .iter()
        .filter_map(|r| {
            let t = r.timing?;
            let id = r.order.trigger_id;
            let md = stamps.md.get(&id).copied().unwrap_or_default();
            let st = by_id.get(&id).and_then(|s| s.stages);
            let read = st.and_then(|s| s.read_ns);
            let at_read = |d: u64| read.map(|r| r + d);
            let seg = |p: u64| t.stream_off.and_then(|o| stamps.seg_at(p, o));
            let (call, ret) = match st {
                Some(s) if !delegated => (
                    at_read(s.total_ns.saturating_sub(s.send_ns)),
                    at_read(s.total_ns),
                ),
                Some(s) => (None, at_read(s.total_ns)),
                None => (None, None),
            };
            Some(OrderTrace {
                trigger_id: id,
                at: [
                    Some(t.send_first_ns),
                    md[0],
                    t.ktx_first_ns.map(|k| stamps.real_to_mono(k)),
                    md[1],
                    read,
                    st.and_then(|s| at_read(s.decide_ns)),
                    call,
                    ret,
                    seg(seg_point::XMIT),
                    seg(seg_point::RX),
                    seg(seg_point::RECEIVE),
                    t.krx_ns.map(|k| stamps.real_to_mono(k)),
                    seg(seg_point::TCP),
                    Some(t.recv_ns),
                ],
                kernel_t2t_ns: t.kernel_t2t_ns(),
            })
        })
        .collect()
}

/// A point's median over a run's orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointMedian {
    /// One of [`POINTS`].
    pub point: String,
    /// Median time after the run's origin ([`Waterfall::origin`]), us (negative: before).
    pub us: f64,
    /// Orders that passed the point.
    pub orders: usize,
}

/// The add-up check of a run: does each order's kernel-stamp tick-to-trade lie between the
/// traced bounds, from the stage where the kernel takes the TX stamp
/// ([`OrderTrace::tx_stamp_stage`]) to the one where it takes the RX stamp
/// ([`OrderTrace::rx_stamp_stage`]), give or take [`ADD_UP_NS`]?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddUp {
    /// Orders with the traced points and the kernel stamps.
    pub compared: usize,
    /// Of them, inside the bounds, give or take [`ADD_UP_NS`].
    pub within: usize,
    /// Median of the kernel tick-to-trade minus the traced span from the md veth xmit to
    /// the RX stamp's stage, ns.
    pub median_diff_ns: i64,
    /// Median length of the RX stamp's stage, ns.
    pub median_stage_ns: i64,
    /// Median of the kernel's TX stamp placed on the traced clock, after the md veth
    /// xmit, ns.
    pub tx_stamp_ns: Option<i64>,
    /// Median of the kernel's RX stamp placed on the traced clock, after the start of its
    /// stage, ns.
    pub rx_stamp_ns: Option<i64>,
    /// The run's orders went through the kernel's TCP (stamped at IP delivery).
    pub kernel_tcp: bool,
}

/// One tracing program's runs in a run and the time they took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramCost {
    /// The program.
    pub program: String,
    /// Times it ran (every packet through its tracepoint, the run's or not).
    pub runs: u64,
    /// Their total time, ns.
    pub ns: u64,
}

/// One run's waterfall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waterfall {
    /// Orders the exchange received.
    pub orders: usize,
    /// The point every other is measured from: the market data's veth transmit (where the
    /// exchange's kernel TX stamp is taken), or the exchange's send when no order passed it
    /// (`--md-tx packet` bypasses the transmit tracepoint).
    pub origin: String,
    /// The points this run's orders passed, with their medians (points no order passed
    /// are left out).
    pub points: Vec<PointMedian>,
    /// The add-up check (None: no order had both spans).
    pub add_up: Option<AddUp>,
    /// Stamps taken (market data, segments) and lost to a full map.
    pub counters: [u64; 3],
    /// The tracing's own cost, per program.
    #[serde(default)]
    pub cost: Vec<ProgramCost>,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Summarises a run's traces.
pub fn summarise(traces: &[OrderTrace], counters: [u64; 3]) -> Waterfall {
    let origin = if traces.iter().any(|t| t.at[MD_XMIT].is_some()) {
        MD_XMIT
    } else {
        0
    };
    let mut points = Vec::new();
    for (i, name) in POINTS.iter().enumerate() {
        let offs: Vec<i64> = traces
            .iter()
            .filter_map(|t| Some(t.at[i]? as i64 - t.at[origin]? as i64))
            .collect();
        let n = offs.len();
        if let Some(m) = median(offs) {
            points.push(PointMedian {
                point: (*name).to_owned(),
                us: m as f64 / 1e3,
                orders: n,
            });
        }
    }
    let tol = ADD_UP_NS as i64;
    let checked: Vec<(i64, i64, bool)> = traces
        .iter()
        .filter_map(|t| {
            let (lo, hi) = t.rx_stamp_stage()?;
            let (tx_lo, tx_hi) = t.tx_stamp_stage()?;
            let k = t.kernel_t2t_ns? as i64;
            let inside = k >= lo - tx_hi - tol && k <= hi - tx_lo + tol;
            Some((k - lo, hi - lo, inside))
        })
        .collect();
    let placed = |point: usize, from: &dyn Fn(&OrderTrace) -> Option<i64>| {
        median(
            traces
                .iter()
                .filter_map(|t| Some(t.at[point]? as i64 - from(t)?))
                .collect(),
        )
    };
    let tx_stamp_ns = placed(MD_KTX, &|t| t.at[MD_XMIT].map(|v| v as i64));
    let rx_stamp_ns = placed(ORDER_KRX, &|t| {
        Some(t.rx_stamp_stage()?.0 + t.at[MD_XMIT]? as i64)
    });
    let within = checked.iter().filter(|c| c.2).count();
    let compared = checked.len();
    let kernel_tcp = traces.iter().any(|t| t.at[ORDER_XMIT].is_some());
    let add_up = median(checked.iter().map(|c| c.0).collect()).map(|median_diff_ns| AddUp {
        compared,
        within,
        median_diff_ns,
        median_stage_ns: median(checked.iter().map(|c| c.1).collect()).unwrap_or(0),
        tx_stamp_ns,
        rx_stamp_ns,
        kernel_tcp,
    });
    Waterfall {
        orders: traces.len(),
        origin: POINTS[origin].to_owned(),
        points,
        add_up,
        counters,
        cost: Vec::new(),
    }
}

/// The waterfall of a finished run: its exchange and strategy rows joined with the stamps,
/// one row per order written to `csv`, the summary returned.
pub fn run_files(
    files: &crate::oracle::RunFiles,
    stamps: &Stamps,
    delegated: bool,
    csv: &Path,
) -> Result<Waterfall> {
    let (_, exchange) = mdfile::orders::read_rows(&files.exchange_csv)?;
    let strategy = mdfile::orders::read_rows(&files.strategy_orders)
        .map(|(_, r)| r)
        .unwrap_or_default();
    let traces = join(&exchange, &strategy, stamps, delegated);
    write_csv(csv, &traces)?;
    let mut w = summarise(&traces, stamps.counters);
    w.cost = stamps.cost.clone();
    Ok(w)
}

/// Writes one row per order: the trigger id, each point's time after the exchange's send
/// (ns, empty where absent), the traced span and the kernel tick-to-trade.
pub fn write_csv(path: &Path, traces: &[OrderTrace]) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let names: Vec<String> = POINTS.iter().map(|p| p.replace(' ', "_") + "_ns").collect();
    writeln!(out, "trigger_id,{},traced_t2t_ns,kt2t_ns", names.join(","))?;
    let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
    for t in traces {
        let base = t.at[0];
        let cols: Vec<String> =
            t.at.iter()
                .map(|a| opt(a.zip(base).map(|(a, b)| a as i64 - b as i64)))
                .collect();
        writeln!(
            out,
            "{},{},{},{}",
            t.trigger_id,
            cols.join(","),
            opt(t.traced_t2t_ns().map(|v| v as i64)),
            opt(t.kernel_t2t_ns.map(|v| v as i64))
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdfile::orders::{Gap, Stages, Timing};
    use proto::order::{OrderRepr, Side};

    fn order(id: u64) -> OrderRepr {
        OrderRepr {
            qty: 1,
            price: 1,
            side: Side::Buy,
            trigger_id: id,
        }
    }

    fn rows() -> (Vec<OrderRow>, Vec<OrderRow>, Stamps) {
        let ex = |id, off, send, recv| OrderRow {
            session: 1,
            order: order(id),
            gap: Gap::default(),
            timing: Some(Timing {
                send_first_ns: send,
                send_last_ns: send,
                recv_ns: recv,
                ktx_first_ns: Some(send + 1_000),
                krx_ns: Some(send + 1_000 + 9_100),
                stream_off: Some(off),
                ..Timing::default()
            }),
            delay_ns: None,
            stages: None,
        };
        let st = |id, read| OrderRow {
            session: 1,
            order: order(id),
            gap: Gap::default(),
            timing: None,
            delay_ns: Some(0),
            stages: Some(Stages {
                decide_ns: 100,
                send_ns: 2_000,
                total_ns: 2_500,
                read_ns: Some(read),
                ..Stages::default()
            }),
        };
        let mut s = Stamps::default();
        s.md.insert(7, [Some(11_000), Some(12_000)]);
        s.md.insert(8, [Some(1_011_000), None]);
        // A heartbeat segment at offset 0, the first order at 21, the second at 42.
        s.segs[seg_point::RX as usize] =
            [(0, (21, 500)), (21, (21, 20_000)), (42, (21, 1_020_500))]
                .into_iter()
                .collect();
        (
            vec![ex(7, 21, 10_000, 25_000), ex(8, 42, 1_010_000, 1_030_000)],
            vec![st(7, 14_000), st(8, 1_014_000)],
            s,
        )
    }

    #[test]
    fn orders_join_their_stamps_by_id_and_stream_offset() {
        let (ex, st, stamps) = rows();
        let t = join(&ex, &st, &stamps, false);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].at[MD_XMIT], Some(11_000));
        assert_eq!(t[0].at[STRATEGY_READ], Some(14_000), "strategy read");
        assert_eq!(t[0].at[5], Some(14_100), "decided");
        assert_eq!(t[0].at[6], Some(14_500), "send call");
        assert_eq!(t[0].at[7], Some(16_500), "send returned");
        assert_eq!(t[0].at[ORDER_RX], Some(20_000));
        assert_eq!(t[1].at[ORDER_RX], Some(1_020_500));
        assert_eq!(t[1].at[MD_RX], None, "absent, never 0");
        assert_eq!(t[0].traced_t2t_ns(), Some(9_000));
        let delegated = join(&ex, &st, &stamps, true);
        assert_eq!(
            (delegated[0].at[6], delegated[0].at[7]),
            (None, Some(16_500))
        );
    }

    #[test]
    fn a_kernel_tcp_segment_is_checked_between_netif_recv_and_the_tcp_receive() {
        let mut t = OrderTrace {
            trigger_id: 1,
            at: [None; POINTS.len()],
            kernel_t2t_ns: Some(7_000),
        };
        t.at[MD_XMIT] = Some(1_000);
        t.at[MD_RX] = Some(1_300);
        t.at[ORDER_XMIT] = Some(4_000);
        t.at[ORDER_RX] = Some(6_000);
        t.at[ORDER_RECEIVE] = Some(7_000);
        t.at[EXCHANGE_TCP] = Some(9_000);
        assert_eq!(t.rx_stamp_stage(), Some((6_000, 8_000)));
        let w = summarise(std::slice::from_ref(&t), [0; 3]);
        let a = w.add_up.expect("checked");
        assert_eq!((a.within, a.kernel_tcp, a.median_diff_ns), (1, true, 1_000));
        assert_eq!(t.tx_stamp_stage(), Some((0, 300)));
        // A stamp outside the bounds (by more than the tolerance) does not add up.
        t.kernel_t2t_ns = Some(3_000);
        let a = summarise(&[t], [0; 3]).add_up.expect("checked");
        assert_eq!(a.within, 0);
    }

    #[test]
    fn the_summary_takes_medians_from_the_send_and_checks_the_sum() {
        let (ex, st, stamps) = rows();
        let w = summarise(&join(&ex, &st, &stamps, false), [2, 3, 0]);
        assert_eq!(w.orders, 2);
        assert_eq!(w.origin, "md veth xmit");
        let rx = w
            .points
            .iter()
            .find(|p| p.point == "order veth rx")
            .expect("order rx");
        assert_eq!(rx.orders, 2);
        // 9.0 and 9.5 us after the md transmit: the upper median.
        assert_eq!(rx.us, 9.5);
        let send = &w.points[0];
        assert_eq!((send.point.as_str(), send.us), ("exchange send", -1.0));
        assert!(w.points.iter().all(|p| p.point != "order veth xmit"));
        let a = w.add_up.expect("add-up");
        // Veth rx 9.0 and 9.5 us after the transmit (no netif recv: the stage is that
        // instant) against 9.1 us from the kernel stamps: +100 and -400 ns.
        assert_eq!((a.compared, a.within, a.kernel_tcp), (2, 2, false));
        assert_eq!((a.median_diff_ns, a.median_stage_ns), (100, 0));
    }
}
