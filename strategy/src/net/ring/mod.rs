//! Raw-frame rings (AF_XDP's UMEM rings, AF_PACKET's mmap'd rings) behind two small traits,
//! and the one smoltcp `phy::Device` that serves both.
//!
//! A ring is split in two halves so that smoltcp can hold an RX token (which lends a
//! received frame in place) and a TX token (which writes a frame straight into the ring)
//! at the same time: [`RxRing`] hands out received frames by handle and takes them back;
//! [`TxRing`] fills one transmit slot in place, posts it and kicks the kernel only when it
//! must. [`RingDevice`] adds the queue of frames waiting for smoltcp and the list of frames
//! to give back, and checks that every frame is accounted for. [`session`] runs smoltcp's
//! TCP session and the hot path over any such device; the backends ([`super::af_xdp`],
//! [`super::af_packet`]) only open their rings.

pub use crate::net::wire::tap as delegate;
pub mod report;
pub mod session;

pub use crate::net::wire::md_frame;

pub use delegate::TxTap;
pub use session::{BackendReport, Opened, RingPath, RingReport, SessionGuard};

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Frames handled per ring operation.
pub const BATCH: usize = 64;

/// The receive half of a ring.
pub trait RxRing {
    /// Handle of a received frame.
    type Frame: Copy + Default;
    /// Takes up to `out.len()` received frames from the kernel; returns the count.
    fn recv(&mut self, out: &mut [Self::Frame]) -> usize;
    /// The bytes of a received frame (valid until it is given back).
    fn data(&self, frame: &Self::Frame) -> &[u8];
    /// The `xdp-tx` program's tag on a frame (the low 32 bits of its count of market-data
    /// frames before it), split off by [`RxRing::data`]; `None` elsewhere.
    fn tag(&self, frame: &Self::Frame) -> Option<u32> {
        let _ = frame;
        None
    }
    /// Gives frames back to the kernel; drains what it took from `frames`.
    fn give_back(&mut self, frames: &mut Vec<Self::Frame>);
    /// Frames the kernel holds (to receive into) plus `held` frames held by the device equal
    /// the ring's size.
    fn accounted(&self, held: usize) -> bool;
    /// Frames received per RX queue `(queue, frames)`, for rings over several queues (read
    /// at report time, off the hot path).
    fn queue_counts(&self) -> Vec<(u32, u64)> {
        Vec::new()
    }
    /// Busy polling of the ring's sockets, if asked for (AF_XDP), read at report time.
    fn busy_poll(&self) -> Option<report::XskBusyPoll> {
        None
    }
    /// Frames the kernel dropped for this ring since it opened (no free frame, ring full),
    /// read at report time; `None` where the ring cannot say.
    fn kernel_drops(&self) -> Option<u64> {
        None
    }
    /// Frames given back that were not out (refused and counted: the kernel may already be
    /// writing them), since the ring opened.
    fn double_give_backs(&self) -> u64 {
        0
    }
}

/// The transmit half of a ring.
pub trait TxRing {
    /// Writes one frame of `len` bytes in place with `f`, posts it and kicks the kernel if
    /// needed; `None` when no slot is free.
    fn send<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R>;
    /// Writes `len` bytes with `f` into a free slot and gives the slot back without posting
    /// it: the transmit side's memory and code warmed, nothing sent. `false` when no slot is
    /// free.
    fn touch(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool;
    /// Takes back the slots the kernel has sent.
    fn reap(&mut self);
    /// With `hold`, frames posted from now on wait for the kick until `hold_kicks(false)`,
    /// which kicks if one is owed (`xdp-tx` re-arms the program between a heartbeat's post
    /// and its kick, which on a veth runs the whole transmit). Rings that never kick
    /// ignore it.
    fn hold_kicks(&mut self, hold: bool) {
        let _ = hold;
    }
    /// Slots posted and not yet sent.
    fn in_flight(&self) -> usize;
    /// Every slot is free, posted or in flight.
    fn accounted(&self) -> bool;
    /// Counters.
    fn stats(&self) -> TxStats;
}

/// Transmit counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct TxStats {
    /// Frames posted.
    pub tx_frames: u64,
    /// Kicks (syscalls) to make the kernel send.
    pub tx_kicks: u64,
    /// Transmits dropped because no slot was free.
    pub tx_no_frame: u64,
    /// Kicks the kernel refused (EAGAIN, EBUSY, ENOBUFS...), retried on the next turn while
    /// frames are in flight and the ring asks for a wake-up.
    #[serde(default)]
    pub tx_kick_failed: u64,
}

/// The transmit kick's retry rule: a kick that failed is owed until one succeeds, the
/// ring no longer asks for a wake-up (the kernel is sending), or nothing is in flight. A
/// held ring owes its kicks until released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kick {
    owed: bool,
    held: bool,
}

impl Kick {
    /// Kick now after a post (the ring asked for a wake-up)? Held: owed instead.
    #[inline]
    pub fn now(&mut self) -> bool {
        if self.held {
            self.owed = true;
        }
        !self.held
    }

    /// Holds kicks, or releases them: `true` when a kick is owed now.
    pub fn hold(&mut self, hold: bool) -> bool {
        self.held = hold;
        !hold && self.owed
    }

    /// After a kick: `ok` whether the syscall succeeded.
    #[inline]
    pub fn kicked(&mut self, ok: bool, stats: &mut TxStats) {
        self.owed = !ok;
        stats.tx_kick_failed += u64::from(!ok);
    }

    /// Should the ring kick again now?
    #[inline]
    pub fn retry_now(&self, in_flight: usize, needs_wakeup: bool) -> bool {
        self.owed && in_flight > 0 && needs_wakeup
    }

    /// Nothing owed any more (nothing in flight, or the kernel needs no wake-up).
    #[inline]
    pub fn settle(&mut self, in_flight: usize, needs_wakeup: bool) {
        if in_flight == 0 || !needs_wakeup {
            self.owed = false;
        }
    }

    /// A kick is owed.
    pub fn owed(&self) -> bool {
        self.owed
    }
}

/// Device counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceStats {
    /// Frames handed to smoltcp.
    pub rx_to_stack: u64,
    /// Frames smoltcp dropped without consuming (given back anyway).
    pub rx_unconsumed: u64,
    /// Transmit side.
    #[serde(flatten)]
    pub tx: TxStats,
}

/// A smoltcp device over a ring's two halves.
pub struct RingDevice<R: RxRing, T: TxRing> {
    /// Receive half.
    pub rx: R,
    /// Transmit half.
    pub tx: T,
    /// Frames consumed, waiting to go back to the kernel.
    pub recycle: Vec<R::Frame>,
    pending: Vec<R::Frame>,
    pending_head: usize,
    /// Market-data frames that arrived before the session ran, in order.
    held: Vec<R::Frame>,
    held_head: usize,
    /// The last batch read by [`RingDevice::recv_batch`].
    pub batch: [R::Frame; BATCH],
    mtu: usize,
    rx_to_stack: u64,
    rx_unconsumed: u64,
    /// Watches smoltcp's segments for delegated sends (`xdp-tx`; off otherwise).
    pub tap: TxTap,
}

impl<R: RxRing, T: TxRing> RingDevice<R, T> {
    /// A device over these halves; `capacity` bounds the frames it can hold (no allocation
    /// after this).
    pub fn new(rx: R, tx: T, capacity: usize, mtu: usize) -> Self {
        Self {
            rx,
            tx,
            recycle: Vec::with_capacity(capacity),
            pending: Vec::with_capacity(capacity),
            pending_head: 0,
            held: Vec::with_capacity(capacity),
            held_head: 0,
            batch: [R::Frame::default(); BATCH],
            mtu,
            rx_to_stack: 0,
            rx_unconsumed: 0,
            tap: TxTap::default(),
        }
    }

    /// Reads a batch of received frames into `self.batch`; returns the count. Frames held
    /// by [`RingDevice::rx_to_stack_holding`] come first, in their order.
    #[inline]
    pub fn recv_batch(&mut self) -> usize {
        if self.held_head < self.held.len() {
            let n = (self.held.len() - self.held_head).min(BATCH);
            self.batch[..n].copy_from_slice(&self.held[self.held_head..self.held_head + n]);
            self.held_head += n;
            return n;
        }
        self.rx.recv(&mut self.batch)
    }

    /// Before the session runs: reads a batch, keeps the frames `hold` picks (market data,
    /// to be handled first once the session runs) and queues the rest for smoltcp.
    pub fn rx_to_stack_holding(&mut self, hold: impl Fn(&[u8]) -> bool) -> usize {
        let n = self.rx.recv(&mut self.batch);
        for i in 0..n {
            let f = self.batch[i];
            if hold(self.rx.data(&f)) {
                if self.held_head == self.held.len() {
                    self.held.clear();
                    self.held_head = 0;
                }
                self.held.push(f);
            } else {
                if self.tap.enabled {
                    self.tap.observe_rx(self.rx.data(&f));
                }
                self.to_stack(f);
            }
        }
        n
    }

    /// Frames held for the session.
    pub fn held(&self) -> usize {
        self.held.len() - self.held_head
    }

    /// The bytes of a received frame.
    #[inline]
    pub fn frame_data(&self, frame: &R::Frame) -> &[u8] {
        self.rx.data(frame)
    }

    /// Queues a received frame for smoltcp.
    #[inline]
    pub fn to_stack(&mut self, frame: R::Frame) {
        if self.pending_head == self.pending.len() {
            self.pending.clear();
            self.pending_head = 0;
        }
        self.pending.push(frame);
    }

    /// Reads a batch and queues every frame for smoltcp; returns the count.
    pub fn rx_all_to_stack(&mut self) -> usize {
        let n = self.recv_batch();
        for i in 0..n {
            let f = self.batch[i];
            self.to_stack(f);
        }
        n
    }

    /// Gives consumed frames back to the kernel.
    #[inline]
    pub fn refill(&mut self) {
        if !self.recycle.is_empty() {
            self.rx.give_back(&mut self.recycle);
        }
    }

    /// Takes back sent slots.
    #[inline]
    pub fn reap_completions(&mut self) {
        self.tx.reap();
    }

    /// Before a session on a kept plane: every frame the device holds (queued for the old
    /// smoltcp, held for the old session) and every frame waiting in the ring goes back to
    /// the kernel unread; the tap starts over. Returns the frames dropped.
    pub fn drain(&mut self) -> u64 {
        let mut dropped = 0u64;
        for i in self.pending_head..self.pending.len() {
            self.recycle.push(self.pending[i]);
            dropped += 1;
        }
        self.pending.clear();
        self.pending_head = 0;
        for i in self.held_head..self.held.len() {
            self.recycle.push(self.held[i]);
            dropped += 1;
        }
        self.held.clear();
        self.held_head = 0;
        loop {
            let n = self.rx.recv(&mut self.batch);
            if n == 0 {
                break;
            }
            self.recycle.extend_from_slice(&self.batch[..n]);
            dropped += n as u64;
            self.refill();
        }
        self.refill();
        self.tx.reap();
        self.tap = TxTap::default();
        dropped
    }

    /// Frames smoltcp has not taken yet.
    pub fn stack_pending(&self) -> usize {
        self.pending.len() - self.pending_head
    }

    /// Frames posted for transmit and not sent yet.
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Every frame is in exactly one place (kernel, pending, recycle, free, in flight).
    pub fn accounted(&self) -> bool {
        self.rx
            .accounted(self.stack_pending() + self.recycle.len() + self.held())
            && self.tx.accounted()
    }

    /// Counters.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            rx_to_stack: self.rx_to_stack,
            rx_unconsumed: self.rx_unconsumed,
            tx: self.tx.stats(),
        }
    }
}

/// Lends one received frame to smoltcp, in place.
pub struct RingRxToken<'a, R: RxRing> {
    rx: &'a R,
    frame: Option<R::Frame>,
    recycle: &'a mut Vec<R::Frame>,
    unconsumed: &'a mut u64,
}

impl<R: RxRing> phy::RxToken for RingRxToken<'_, R> {
    fn consume<U, F: FnOnce(&[u8]) -> U>(mut self, f: F) -> U {
        let frame = self.frame.take().unwrap_or_default();
        let r = f(self.rx.data(&frame));
        self.recycle.push(frame);
        r
    }
}

impl<R: RxRing> Drop for RingRxToken<'_, R> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            *self.unconsumed += 1;
            self.recycle.push(frame);
        }
    }
}

/// Lets smoltcp write one frame straight into a transmit slot.
pub struct RingTxToken<'a, T: TxRing> {
    tx: &'a mut T,
    tap: &'a mut TxTap,
}

impl<T: TxRing> phy::TxToken for RingTxToken<'_, T> {
    fn consume<U, F: FnOnce(&mut [u8]) -> U>(self, len: usize, f: F) -> U {
        if self.tap.enabled {
            return tapped(self.tx, self.tap, len, f);
        }
        let mut f = Some(f);
        if let Some(r) = self
            .tx
            .send(len, |buf| (f.take().expect("called once"))(buf))
        {
            return r;
        }
        // No slot free: smoltcp still needs a buffer; the frame is dropped (counted by the
        // ring) and TCP retransmits it.
        let mut scratch = [0u8; 2048];
        (f.take().expect("not called yet"))(&mut scratch[..len.min(2048)])
    }
}

/// A transmit through the tap (`xdp-tx`): observed in place; while a delegated send is being
/// completed, built in a scratch buffer first so that the delegated segment never reaches
/// the ring.
#[inline(never)]
fn tapped<T: TxRing, U, F: FnOnce(&mut [u8]) -> U>(
    tx: &mut T,
    tap: &mut TxTap,
    len: usize,
    f: F,
) -> U {
    let mut scratch = [0u8; 2048];
    let n = len.min(scratch.len());
    if tap.suppressing() {
        let r = f(&mut scratch[..n]);
        if !tap.observe(&scratch[..n]) {
            // No slot free: dropped and counted by the ring; TCP retransmits.
            let _ = tx.send(n, |buf| buf.copy_from_slice(&scratch[..n]));
        }
        return r;
    }
    let mut f = Some(f);
    if let Some(r) = tx.send(len, |buf| {
        let r = (f.take().expect("called once"))(buf);
        tap.observe(buf);
        r
    }) {
        return r;
    }
    let r = (f.take().expect("not called yet"))(&mut scratch[..n]);
    tap.observe(&scratch[..n]);
    r
}

impl<R: RxRing, T: TxRing> phy::Device for RingDevice<R, T> {
    type RxToken<'a>
        = RingRxToken<'a, R>
    where
        Self: 'a;
    type TxToken<'a>
        = RingTxToken<'a, T>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.pending_head == self.pending.len() {
            return None;
        }
        let frame = self.pending[self.pending_head];
        self.pending_head += 1;
        self.rx_to_stack += 1;
        let Self {
            rx,
            tx,
            recycle,
            rx_unconsumed,
            tap,
            ..
        } = self;
        Some((
            RingRxToken {
                rx,
                frame: Some(frame),
                recycle,
                unconsumed: rx_unconsumed,
            },
            RingTxToken { tx, tap },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.tx.reap();
        Some(RingTxToken {
            tx: &mut self.tx,
            tap: &mut self.tap,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps.max_burst_size = Some(BATCH);
        // A veth peer with TX checksum offload sends TCP segments whose checksum is not
        // filled in (CHECKSUM_PARTIAL crosses the pair as is): verifying would drop every
        // segment. Checksums are computed on transmit and not verified on receive; on a
        // real NIC the hardware has verified them (docs/decisions.md).
        let mut c = ChecksumCapabilities::default();
        c.ipv4 = phy::Checksum::Tx;
        c.tcp = phy::Checksum::Tx;
        c.udp = phy::Checksum::Tx;
        c.icmpv4 = phy::Checksum::Tx;
        caps.checksum = c;
        caps
    }
}

#[cfg(test)]
mod kick_tests {
    use super::*;

    #[test]
    fn a_failed_kick_is_retried_until_one_succeeds_or_nothing_waits() {
        let mut stats = TxStats::default();
        let mut k = Kick::default();
        k.kicked(true, &mut stats);
        assert!(!k.retry_now(1, true), "a kick that worked is not repeated");
        k.kicked(false, &mut stats);
        assert!(
            k.retry_now(1, true),
            "a refused kick is owed while a frame waits"
        );
        assert!(
            !k.retry_now(0, true),
            "nothing in flight: nothing to kick for"
        );
        assert!(
            !k.retry_now(1, false),
            "the kernel is sending: no wake-up needed"
        );
        k.kicked(false, &mut stats);
        assert!(k.retry_now(2, true), "still owed after a second refusal");
        k.kicked(true, &mut stats);
        assert!(!k.owed());
        k.kicked(false, &mut stats);
        k.settle(0, true);
        assert!(!k.owed(), "everything was sent meanwhile");
        assert_eq!(stats.tx_kick_failed, 3);
    }

    #[test]
    fn held_kicks_are_owed_until_released() {
        let mut k = Kick::default();
        assert!(k.now(), "not held: kick at once");
        assert!(!k.hold(true), "holding owes nothing yet");
        assert!(!k.now(), "held: no kick");
        assert!(k.owed());
        assert!(k.hold(false), "released: the owed kick goes now");
        k.kicked(true, &mut TxStats::default());
        assert!(!k.owed());
        assert!(!k.hold(true), "held again");
        assert!(!k.hold(false), "released with nothing posted: no kick");
    }
}
