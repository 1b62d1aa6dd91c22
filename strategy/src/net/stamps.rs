//! The strategy's own time on the kernel's and the NIC's clocks (`--wire-stamps`, kernel
//! path): the receive stamp of each trigger packet and the transmit stamp of each order,
//! both from SO_TIMESTAMPING. Their difference is the strategy's wire-to-wire time on its
//! host: on the kernel clock from the stack's receive to the driver's transmit, on the NIC's
//! clock (its PHC, where the interface has one) from the wire to the wire.
//!
//! * Receive: the market-data socket stamps every datagram (software, and the NIC's raw
//!   hardware stamp where switched on); the stamps come as a control message of the one
//!   `recvmsg` that reads the packet, so the order's path makes no extra syscall.
//! * Transmit: each order's send asks a stamp (an `SO_TIMESTAMPING` control message on the
//!   one `sendmsg` that sends it; heartbeats ask none), keyed by the stream offset of its
//!   last byte (`SOF_TIMESTAMPING_OPT_ID`, `OPT_TSONLY`: no payload copied back). The stamps
//!   queue on the socket's error queue; they are read on idle turns, and only while an order
//!   awaits one ([`TxStamps`]). Orders sent in one segment get the stamp of its last
//!   byte only: the others have none (counted as missing, never guessed).
//!
//! The NIC's software-only stamps (a veth) leave the NIC clock empty, with the reason in the
//! session report ([`WireReport::nic_off`]); the kernel clock works everywhere.

use std::io;
use std::os::fd::RawFd;

use hostsys::errqueue::{self, Stamps, TS_BATCH};

use super::hot::OrderLog;

/// Orders whose transmit stamps are awaited at once; the oldest is given up beyond this.
pub const AWAITED: usize = 64;
/// An order's transmit stamp not read within this long is given up (counted missing).
const GIVE_UP_NS: u64 = 100_000_000;

/// What `--wire-stamps` did in a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireReport {
    /// The NIC's clock (its PHC index) when its stamps were on.
    pub nic_phc: Option<i32>,
    /// Why the NIC's stamps were off (e.g. "vs0: the driver offers software timestamps
    /// only").
    pub nic_off: Option<String>,
    /// Orders whose trigger packet came with a kernel receive stamp.
    pub rx_kernel: u64,
    /// With the NIC's receive stamp.
    pub rx_nic: u64,
    /// Orders given a kernel transmit stamp.
    pub tx_kernel: u64,
    /// Given the NIC's transmit stamp.
    pub tx_nic: u64,
    /// Orders whose transmit stamp never came (sent in a segment with a later order, or not
    /// read in time).
    pub tx_missing: u64,
}

/// Stamps of one order's way through this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// The trigger packet's receive stamps.
    pub rx: Stamps,
    /// The order's transmit stamps.
    pub tx: Stamps,
}

impl Wire {
    /// Receive to transmit on the kernel clock, ns.
    pub fn kernel_ns(&self) -> Option<u64> {
        self.tx.sw?.checked_sub(self.rx.sw?)
    }

    /// Receive to transmit on the NIC's clock, ns.
    pub fn nic_ns(&self) -> Option<u64> {
        self.tx.hw?.checked_sub(self.rx.hw?)
    }
}

/// One order awaiting its transmit stamps.
#[derive(Debug, Clone, Copy, Default)]
struct Awaited {
    /// The stream offset of its last byte (the kernel's key, modulo 2^32).
    key: u32,
    /// Its place in the order log.
    index: usize,
    /// When it was sent (`CLOCK_MONOTONIC` ns).
    sent_ns: u64,
    /// Software stamp settled (got, or known never to come).
    sw_done: bool,
    /// Hardware stamp settled (always, when the NIC's stamps are off).
    hw_done: bool,
}

/// The transmit side: orders awaiting stamps, matched by key as the stamps are read.
#[derive(Debug)]
pub struct TxStamps {
    nic: bool,
    awaited: [Awaited; AWAITED],
    head: usize,
    len: usize,
    out: [(u32, Stamps); TS_BATCH],
    /// The session's counts.
    pub report: WireReport,
}

impl TxStamps {
    /// Matching for a session; `nic`: the NIC's stamps are on (two stamps per order).
    pub fn new(nic: Result<i32, String>) -> Self {
        let (nic_phc, nic_off) = match nic {
            Ok(phc) => (Some(phc), None),
            Err(why) => (None, Some(why)),
        };
        Self {
            nic: nic_phc.is_some(),
            awaited: [Awaited::default(); AWAITED],
            head: 0,
            len: 0,
            out: [(0, Stamps::default()); TS_BATCH],
            report: WireReport {
                nic_phc,
                nic_off,
                ..WireReport::default()
            },
        }
    }

    /// Whether the NIC's stamps are on.
    pub fn nic(&self) -> bool {
        self.nic
    }

    /// Whether an order awaits a stamp (the error queue is read only then).
    #[inline]
    pub fn pending(&self) -> bool {
        self.len > 0
    }

    /// Counts an order's receive stamps.
    #[inline]
    pub fn count_rx(&mut self, rx: Stamps) {
        self.report.rx_kernel += u64::from(rx.sw.is_some());
        self.report.rx_nic += u64::from(rx.hw.is_some());
    }

    /// An order logged at `index` whose last byte is at stream offset `last_byte`, sent at
    /// `now_ns`.
    #[inline]
    pub fn await_order(&mut self, last_byte: u64, index: usize, now_ns: u64) {
        if self.len == AWAITED {
            // The oldest never got its stamps: given up.
            self.report.tx_missing += 1;
            self.pop_front();
        }
        let at = (self.head + self.len) % AWAITED;
        self.awaited[at] = Awaited {
            key: last_byte as u32,
            index,
            sent_ns: now_ns,
            sw_done: false,
            hw_done: !self.nic,
        };
        self.len += 1;
    }

    /// Reads what the error queue of `fd` holds (one `recvmmsg` per batch) into the log.
    pub fn read(&mut self, fd: RawFd, log: &mut OrderLog, now_ns: u64) -> io::Result<()> {
        loop {
            let n = errqueue::read_tx_timestamps(fd, &mut self.out)?;
            for i in 0..n {
                let (key, st) = self.out[i];
                if key != u32::MAX {
                    self.apply(key, st, log);
                }
            }
            if n < TS_BATCH {
                break;
            }
        }
        self.expire(now_ns);
        Ok(())
    }

    /// One stamp message: the order it belongs to gets it; an order sent before it that
    /// still lacks that kind of stamp will not get one (the kernel reports in stream order).
    pub fn apply(&mut self, key: u32, st: Stamps, log: &mut OrderLog) {
        for i in 0..self.len {
            let a = &mut self.awaited[(self.head + i) % AWAITED];
            // Wrapping comparison: `a` is before the stamped byte, at it, or after it.
            let ahead = key.wrapping_sub(a.key) as i32;
            if ahead < 0 {
                break;
            }
            // The kinds this message settles for `a`: its own stamps when the key is its
            // own, else proof that they will not come.
            let new = Stamps {
                sw: st.sw.filter(|_| !a.sw_done),
                hw: st.hw.filter(|_| !a.hw_done),
            };
            a.sw_done |= new.sw.is_some();
            a.hw_done |= new.hw.is_some();
            if ahead == 0 {
                log.stamp_tx(a.index, new);
                self.report.tx_kernel += u64::from(new.sw.is_some());
                self.report.tx_nic += u64::from(new.hw.is_some());
            } else {
                self.report.tx_missing += u64::from(new.sw.is_some());
            }
        }
        self.retire();
    }

    /// Drops the oldest awaited order.
    fn pop_front(&mut self) {
        self.head = (self.head + 1) % AWAITED;
        self.len -= 1;
    }

    /// Drops settled orders (every kind of stamp got or known not to come) from the front.
    fn retire(&mut self) {
        while self.len > 0 && self.awaited[self.head].sw_done && self.awaited[self.head].hw_done {
            self.pop_front();
        }
    }

    /// Gives up orders older than [`GIVE_UP_NS`].
    fn expire(&mut self, now_ns: u64) {
        while self.len > 0 && now_ns.saturating_sub(self.awaited[self.head].sent_ns) > GIVE_UP_NS {
            self.report.tx_missing += 1;
            self.pop_front();
        }
    }

    /// At the session's end: whatever still waits is missing; the counts of the next
    /// session start from zero.
    pub fn finish(&mut self) -> WireReport {
        self.report.tx_missing += self.len as u64;
        self.len = 0;
        self.head = 0;
        let r = self.report.clone();
        self.report = WireReport {
            nic_phc: r.nic_phc,
            nic_off: r.nic_off.clone(),
            ..WireReport::default()
        };
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::hot::{LoggedOrder, OrderLog};
    use mdfile::orders::{Gap, Stages};
    use proto::order::{OrderRepr, Side};

    fn log_of(n: usize) -> OrderLog {
        let mut log = OrderLog::with_capacity(n);
        for i in 0..n {
            log.push(LoggedOrder {
                order: OrderRepr {
                    trigger_id: i as u64,
                    side: Side::Buy,
                    price: 1,
                    qty: 1,
                },
                delay_ns: 0,
                gap: Gap::default(),
                stages: Stages::default(),
                wire: Wire::default(),
            });
        }
        log
    }

    fn sw(ns: u64) -> Stamps {
        Stamps {
            sw: Some(ns),
            hw: None,
        }
    }

    fn hw(ns: u64) -> Stamps {
        Stamps {
            sw: None,
            hw: Some(ns),
        }
    }

    #[test]
    fn stamps_find_their_orders_by_the_offset_of_the_last_byte() {
        let mut log = log_of(3);
        let mut t = TxStamps::new(Err("vs0: the driver offers software timestamps only".into()));
        // Orders of 21 bytes after a 21-byte heartbeat: last bytes at 41, 62, 83.
        t.await_order(41, 0, 0);
        t.await_order(62, 1, 0);
        t.await_order(83, 2, 0);
        // The heartbeat's stamp (key 20) matches nothing and settles nothing.
        t.apply(20, sw(5), &mut log);
        assert_eq!(t.len, 3);
        t.apply(41, sw(100), &mut log);
        // Orders 1 and 2 left in one segment: only the last byte's stamp comes.
        t.apply(83, sw(300), &mut log);
        assert!(!t.pending());
        let got: Vec<_> = log.orders().iter().map(|o| o.wire.tx.sw).collect();
        assert_eq!(got, [Some(100), None, Some(300)]);
        let r = t.finish();
        assert_eq!((r.tx_kernel, r.tx_nic, r.tx_missing), (2, 0, 1));
        assert_eq!(
            r.nic_off.as_deref(),
            Some("vs0: the driver offers software timestamps only")
        );
    }

    #[test]
    fn with_the_nics_stamps_an_order_waits_for_both_kinds() {
        let mut log = log_of(2);
        let mut t = TxStamps::new(Ok(0));
        t.await_order(20, 0, 0);
        t.await_order(41, 1, 0);
        // The kernel's software stamp and the NIC's come as two messages with one key.
        t.apply(20, sw(1_000), &mut log);
        assert!(t.pending());
        t.apply(20, hw(7), &mut log);
        t.apply(41, hw(9), &mut log);
        t.apply(41, sw(2_000), &mut log);
        assert!(!t.pending());
        let w: Vec<_> = log.orders().iter().map(|o| o.wire.tx).collect();
        assert_eq!(
            w,
            [
                Stamps {
                    sw: Some(1_000),
                    hw: Some(7)
                },
                Stamps {
                    sw: Some(2_000),
                    hw: Some(9)
                }
            ]
        );
        let r = t.finish();
        assert_eq!(
            (r.tx_kernel, r.tx_nic, r.tx_missing, r.nic_phc),
            (2, 2, 0, Some(0))
        );
    }

    #[test]
    fn orders_whose_stamps_never_come_are_given_up_and_counted() {
        let mut log = log_of(AWAITED + 2);
        let mut t = TxStamps::new(Err("none".into()));
        for i in 0..AWAITED + 1 {
            t.await_order(20 + 21 * i as u64, i, 0);
        }
        // One more than the ring holds: the oldest is given up.
        assert_eq!(t.report.tx_missing, 1);
        // Too old: all given up at the next read's expiry.
        t.expire(GIVE_UP_NS + 1);
        assert!(!t.pending());
        assert_eq!(t.report.tx_missing, AWAITED as u64 + 1);
        // Keys wrap at 2^32 like the kernel's.
        t.await_order(u64::from(u32::MAX) - 1, AWAITED + 1, 0);
        t.apply(u32::MAX - 1, sw(5), &mut log);
        assert_eq!(log.orders()[AWAITED + 1].wire.tx.sw, Some(5));
        t.await_order(u64::from(u32::MAX) + 21, AWAITED, 0);
        t.apply(20, sw(6), &mut log);
        assert_eq!(log.orders()[AWAITED].wire.tx.sw, Some(6));
        // An index the log does not hold (it overflowed) is ignored, not a panic.
        t.await_order(1_000, usize::MAX, 0);
        t.apply(1_000, sw(7), &mut log);
        assert_eq!(t.finish().tx_missing, AWAITED as u64 + 1);
    }

    #[test]
    fn the_strategys_own_time_is_transmit_minus_receive_on_one_clock() {
        let w = Wire {
            rx: Stamps {
                sw: Some(1_000),
                hw: Some(50),
            },
            tx: Stamps {
                sw: Some(4_500),
                hw: Some(2_050),
            },
        };
        assert_eq!((w.kernel_ns(), w.nic_ns()), (Some(3_500), Some(2_000)));
        let sw_only = Wire {
            rx: sw(1_000),
            tx: sw(900),
        };
        // A transmit stamp before the receive (clock stepped): not a figure.
        assert_eq!((sw_only.kernel_ns(), sw_only.nic_ns()), (None, None));
    }
}
