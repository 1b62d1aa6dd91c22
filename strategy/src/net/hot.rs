//! The hot path's one sequence, shared by every network path.
//!
//! A path owns only its I/O. For each market-data payload it calls [`Hot::on_packet`]
//! (stamp the receive, count the packet, run the engine); when an order comes out it calls
//! [`Hot::send`] with a closure that encodes and hands the order to its transport. Everything
//! around the send happens here, once: the calibration delay, the second stamp, the
//! latency record, the order log and the counters. A change to what happens around an order
//! (warming, new stamps) is one edit in this file.
//!
//! Counters ([`PathStats`]), one meaning each:
//! * `packets`: market-data payloads given to the engine.
//! * `orders`: orders that go out whole: handed to the kernel or the user-space stack at
//!   once ([`Sent::Now`]) or queued whole in the path's own backlog ([`Sent::Queued`]).
//! * `orders_queued`: of `orders`, those that waited in the path's backlog because the
//!   transport had no room (they go out, later, in order).
//! * `orders_held_back`: orders the path could not queue whole (backlog or stack buffer full,
//!   every send slot in flight): not sent at all, never half-sent.
//! * `rx_batches`: market-data payloads handled per turn of the loop that found any (a
//!   wake-up's batch: a drain of the socket, a `recvmmsg`, the completions of one enter, a
//!   ring's filled frames), as power-of-two buckets ([`RxBatches`]).

use std::io;

use mdfile::orders::{Gap, Stages};
use proto::order::OrderRepr;

use crate::engine::Engine;
use crate::latency::Latency;
use hostsys::errqueue::Stamps;
use hostsys::mono_ns;

use super::stamps::Wire;

/// What a path's transport did with one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// All 21 bytes were handed to the kernel or the stack now.
    Now,
    /// Queued whole in the path's own backlog; they go out when the transport has room.
    Queued,
    /// Not sent: no room to queue the whole order.
    HeldBack,
}

/// Per-session counters of the order path (see the module docs for their meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathStats {
    /// Market-data payloads given to the engine.
    pub packets: u64,
    /// Orders that go out whole (now or from the backlog).
    pub orders: u64,
    /// Of `orders`, those queued in the path's backlog first.
    pub orders_queued: u64,
    /// Orders not sent because they could not be queued whole.
    pub orders_held_back: u64,
    /// Payloads per wake-up.
    #[serde(default)]
    pub rx_batches: RxBatches,
}

/// Payloads handled per wake-up (turns that found none are not counted): bucket `i` counts
/// batches of `2^i ..= 2^(i+1) - 1` payloads, the last one everything from 128 up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RxBatches {
    /// Turns that handled at least one payload.
    pub wakeups: u64,
    /// Payloads in them.
    pub payloads: u64,
    /// The largest batch.
    pub max: u64,
    /// 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64-127, 128+.
    pub buckets: [u64; 8],
}

impl RxBatches {
    /// Counts one turn that handled `n` payloads (none: not a wake-up).
    #[inline]
    pub fn record(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.wakeups += 1;
        self.payloads += n;
        self.max = self.max.max(n);
        let b = (63 - n.leading_zeros()).min(7) as usize;
        self.buckets[b] += 1;
    }

    /// Mean payloads per wake-up (None: no wake-up).
    pub fn mean(&self) -> Option<f64> {
        (self.wakeups > 0).then(|| self.payloads as f64 / self.wakeups as f64)
    }

    /// The share of payloads that came in batches of 2 or more.
    pub fn batched_share(&self) -> Option<f64> {
        (self.payloads > 0).then(|| 1.0 - self.buckets[0] as f64 / self.payloads as f64)
    }
}

/// One order as the strategy sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedOrder {
    /// The order.
    pub order: OrderRepr,
    /// The calibration delay injected before its send, ns.
    pub delay_ns: u64,
    /// How long the order path and the market-data path sat idle before it.
    pub gap: Gap,
    /// Where its time went.
    pub stages: Stages,
    /// Its kernel and NIC stamps (`--wire-stamps`; empty otherwise).
    pub wire: Wire,
}

/// Where the orders of a session are recorded (preallocated; the hot path only pushes),
/// with the session's timeline: when the last packet was read and the last order sent.
#[derive(Debug)]
pub struct OrderLog {
    orders: Vec<LoggedOrder>,
    total: u64,
    /// Orders that did not fit the preallocated log (still sent).
    pub overflow: u64,
    last_packet_rx_ns: Option<u64>,
    last_order_tx_ns: Option<u64>,
    last_pushed: Option<usize>,
}

impl OrderLog {
    /// A log holding up to `capacity` orders without allocating.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            orders: Vec::with_capacity(capacity),
            total: 0,
            overflow: 0,
            last_packet_rx_ns: None,
            last_order_tx_ns: None,
            last_pushed: None,
        }
    }

    /// Records an order.
    #[inline]
    pub fn push(&mut self, o: LoggedOrder) {
        self.total += 1;
        if self.orders.len() < self.orders.capacity() {
            self.last_pushed = Some(self.orders.len());
            self.orders.push(o);
        } else {
            self.last_pushed = None;
            self.overflow += 1;
        }
    }

    /// Where the last order pushed is (`None`: it did not fit).
    #[inline]
    pub fn last_pushed(&self) -> Option<usize> {
        self.last_pushed
    }

    /// Adds transmit stamps to the order at `index` (one that is not there: ignored).
    #[inline]
    pub fn stamp_tx(&mut self, index: usize, st: Stamps) {
        if let Some(o) = self.orders.get_mut(index) {
            o.wire.tx.sw = st.sw.or(o.wire.tx.sw);
            o.wire.tx.hw = st.hw.or(o.wire.tx.hw);
        }
    }

    /// Orders sent this session.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The orders.
    pub fn orders(&self) -> &[LoggedOrder] {
        &self.orders
    }

    /// Empties the log and the timeline (keeps the capacity).
    pub fn clear(&mut self) {
        self.orders.clear();
        self.total = 0;
        self.overflow = 0;
        self.last_packet_rx_ns = None;
        self.last_order_tx_ns = None;
        self.last_pushed = None;
    }
}

/// An order the engine produced, with the receive stamp of its packet; hand it to
/// [`Hot::send`].
#[derive(Debug, Clone, Copy)]
#[must_use = "an order from the engine must be sent or counted as held back"]
pub struct Pending {
    /// The order.
    pub order: OrderRepr,
    /// `CLOCK_MONOTONIC` ns when its packet was read.
    pub t_rx: u64,
    /// When the engine had decided.
    pub t_decided: u64,
    /// Idle time before it.
    pub gap: Gap,
    /// Its packet's receive stamps (`--wire-stamps`; empty otherwise).
    pub wire_rx: Stamps,
}

/// The hot-path context a path's `poll` works with.
pub struct Hot<'a> {
    /// Book and trigger.
    pub engine: &'a mut Engine,
    /// Packet-to-order latency.
    pub latency: &'a mut Latency,
    /// Orders sent.
    pub log: &'a mut OrderLog,
    /// Counters of the order path.
    pub stats: &'a mut PathStats,
    /// Calibration: order k busy-waits `delays[k % len]` ns between trigger and send
    /// (empty = no delay).
    pub delays: &'a [u64],
    /// Busy work after each market-data packet, ns (`--md-work`: a heavier strategy, or
    /// one that falls behind the feed; 0 = none).
    pub md_work_ns: u64,
}

impl Hot<'_> {
    /// Stamps the receive, counts the packet and runs the engine on `payload`.
    #[inline]
    pub fn on_packet(&mut self, payload: &[u8]) -> Option<Pending> {
        self.on_packet_at(payload, mono_ns())
    }

    /// [`Hot::on_packet`] for a packet that came with the kernel's (and the NIC's) receive
    /// stamps (`--wire-stamps`): an order from it carries them.
    #[inline]
    pub fn on_packet_stamped(&mut self, payload: &[u8], rx: Stamps) -> Option<Pending> {
        let mut p = self.on_packet_at(payload, mono_ns())?;
        p.wire_rx = rx;
        Some(p)
    }

    /// [`Hot::on_packet`] for a packet received at `t_rx` (`CLOCK_MONOTONIC` ns, e.g. the
    /// XDP program's stamp on the `xdp-tx` path).
    #[inline]
    pub fn on_packet_at(&mut self, payload: &[u8], t_rx: u64) -> Option<Pending> {
        self.stats.packets += 1;
        let prev_rx = self.log.last_packet_rx_ns.replace(t_rx);
        let order = self.engine.on_packet(payload, t_rx);
        spin_for(self.md_work_ns);
        let order = order?;
        let t_decided = mono_ns();
        Some(Pending {
            order,
            t_rx,
            t_decided,
            gap: Gap {
                order_ns: self.log.last_order_tx_ns.map(|t| t_rx.saturating_sub(t)),
                md_ns: prev_rx.map(|t| t_rx.saturating_sub(t)),
            },
            wire_rx: Stamps::default(),
        })
    }

    /// The tail of every path: calibration delay, `send` (the path's encode and hand-off),
    /// stamp, record, log, count. An error from `send` is the transport's (the session ends).
    #[inline]
    pub fn send(
        &mut self,
        p: Pending,
        send: impl FnOnce(&OrderRepr) -> io::Result<Sent>,
    ) -> io::Result<Sent> {
        let delay = self.next_delay();
        spin_for(delay);
        let t_enter = mono_ns();
        let sent = send(&p.order)?;
        let t_tx = mono_ns();
        let logged = LoggedOrder {
            order: p.order,
            delay_ns: delay,
            gap: p.gap,
            stages: Stages {
                decide_ns: p.t_decided.saturating_sub(p.t_rx),
                send_ns: t_tx.saturating_sub(t_enter),
                total_ns: t_tx.saturating_sub(p.t_rx),
                read_ns: Some(p.t_rx),
                wire_kernel_ns: None,
                wire_nic_ns: None,
            },
            wire: Wire {
                rx: p.wire_rx,
                tx: Stamps::default(),
            },
        };
        match sent {
            Sent::Now => {
                self.stats.orders += 1;
                self.latency.record(t_tx.saturating_sub(p.t_rx));
                self.log.push(logged);
                self.log.last_order_tx_ns = Some(t_tx);
            }
            Sent::Queued => {
                // It goes out later: its packet-to-order time is not known here, so it is
                // not recorded (the exchange's clock still measures it).
                self.stats.orders += 1;
                self.stats.orders_queued += 1;
                self.log.push(logged);
                self.log.last_order_tx_ns = Some(t_tx);
            }
            Sent::HeldBack => self.stats.orders_held_back += 1,
        }
        Ok(sent)
    }

    /// Records an order another sender already put on the wire (the XDP program on the
    /// `xdp-tx` path): received at `t_rx`, sent at `t_tx` (both `CLOCK_MONOTONIC`), with
    /// `user_ns` of user-space work to complete it. Counted and logged as [`Sent::Now`]; its
    /// stages are the program's decision (`decide_ns`, `total_ns`) and the completion
    /// (`send_ns`).
    #[inline]
    pub fn delegated(
        &mut self,
        order: OrderRepr,
        (t_rx, t_tx): (u64, u64),
        user_ns: u64,
        gap: Gap,
    ) {
        let in_program = t_tx.saturating_sub(t_rx);
        self.stats.orders += 1;
        self.latency.record(in_program);
        self.log.push(LoggedOrder {
            order,
            delay_ns: 0,
            gap,
            stages: Stages {
                decide_ns: in_program,
                send_ns: user_ns,
                total_ns: in_program,
                read_ns: Some(t_rx),
                wire_kernel_ns: None,
                wire_nic_ns: None,
            },
            wire: Wire::default(),
        });
        self.log.last_order_tx_ns = Some(t_tx);
    }

    /// The delay the next order gets.
    #[inline]
    fn next_delay(&self) -> u64 {
        if self.delays.is_empty() {
            0
        } else {
            self.delays[(self.log.total() % self.delays.len() as u64) as usize]
        }
    }
}

/// Spins for `ns` (calibration delay).
#[inline]
pub fn spin_for(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = mono_ns() + ns;
    while mono_ns() < end {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_batches_fall_in_power_of_two_buckets() {
        let mut b = RxBatches::default();
        for n in [0, 1, 1, 2, 3, 4, 64, 127, 128, 5000] {
            b.record(n);
        }
        assert_eq!(b.wakeups, 9, "a turn with no payload is no wake-up");
        assert_eq!(b.payloads, 1 + 1 + 2 + 3 + 4 + 64 + 127 + 128 + 5000);
        assert_eq!(b.max, 5000);
        assert_eq!(b.buckets, [2, 2, 1, 0, 0, 0, 2, 2]);
        assert_eq!(RxBatches::default().mean(), None);
        assert!((b.mean().expect("wake-ups") - b.payloads as f64 / 9.0).abs() < 1e-9);
        let one = {
            let mut o = RxBatches::default();
            o.record(1);
            o
        };
        assert_eq!(one.batched_share(), Some(0.0));
    }
    use crate::engine::EngineConfig;
    use proto::order::Side;

    fn order() -> Pending {
        let t_rx = mono_ns();
        Pending {
            order: OrderRepr {
                qty: 1,
                price: 659_350_000_000,
                side: Side::Buy,
                trigger_id: 7,
            },
            t_rx,
            t_decided: t_rx,
            gap: Gap::default(),
            wire_rx: Stamps::default(),
        }
    }

    /// The state a `Hot` lends from, owned by the test.
    struct Parts {
        engine: Engine,
        latency: Latency,
        log: OrderLog,
        stats: PathStats,
    }

    impl Parts {
        fn new() -> Self {
            Self {
                engine: Engine::new(EngineConfig::default()),
                latency: Latency::new(),
                log: OrderLog::with_capacity(8),
                stats: PathStats::default(),
            }
        }

        fn hot<'a>(&'a mut self, delays: &'a [u64]) -> Hot<'a> {
            Hot {
                engine: &mut self.engine,
                latency: &mut self.latency,
                log: &mut self.log,
                stats: &mut self.stats,
                delays,
                md_work_ns: 0,
            }
        }
    }

    #[test]
    fn each_outcome_counts_once_and_only_sent_orders_are_logged() {
        let mut parts = Parts::new();
        let mut hot = parts.hot(&[]);
        for outcome in [Sent::Now, Sent::Queued, Sent::HeldBack, Sent::Now] {
            assert_eq!(hot.send(order(), |_| Ok(outcome)).expect("send"), outcome);
        }
        assert!(hot
            .send(order(), |_| Err(io::Error::other("gone")))
            .is_err());
        assert_eq!(
            parts.stats,
            PathStats {
                packets: 0,
                orders: 3,
                orders_queued: 1,
                orders_held_back: 1,
                rx_batches: RxBatches::default(),
            }
        );
        assert_eq!(parts.log.total(), 3);
        assert_eq!(
            parts.latency.percentiles().count,
            2,
            "queued orders have no send time"
        );
    }

    #[test]
    fn delays_cycle_order_by_order() {
        let mut parts = Parts::new();
        let mut hot = parts.hot(&[0, 1000]);
        for _ in 0..4 {
            hot.send(order(), |_| Ok(Sent::Now)).expect("send");
        }
        let delays: Vec<u64> = parts.log.orders().iter().map(|o| o.delay_ns).collect();
        assert_eq!(delays, [0, 1000, 0, 1000]);
    }
}
