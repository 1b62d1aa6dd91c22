//! The UMEM as a smoltcp `phy::Device`, and the frame accounting around it.
//!
//! Frames live in exactly one place at a time: the kernel (fill ring, RX ring, TX ring,
//! completion ring), `rx_pending` (received, not market data, waiting for smoltcp),
//! `recycle` (consumed, waiting to go back to the fill ring) or `free_tx` (ready for a
//! transmit). The RX token lends the UMEM frame to smoltcp without a copy and puts it on
//! `recycle` when consumed *or dropped unconsumed*; the TX token lets smoltcp write the frame
//! straight into a UMEM frame, posts it on the TX ring and kicks the kernel only when
//! `need_wakeup` says so. [`XskDevice::accounted`] checks that no frame was lost.

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

/// Frames handled per ring operation.
pub const BATCH: usize = 64;

/// Device counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct DeviceStats {
    /// Frames handed to smoltcp.
    pub rx_to_stack: u64,
    /// Frames smoltcp transmitted.
    pub tx_frames: u64,
    /// TX kicks (sendto) because need_wakeup was set.
    pub tx_kicks: u64,
    /// Fill-ring wakeups.
    pub fill_kicks: u64,
    /// Transmits dropped because no TX frame was free.
    pub tx_no_frame: u64,
    /// Frames smoltcp dropped without consuming (returned to the fill ring anyway).
    pub rx_unconsumed: u64,
}

/// The four rings of one AF_XDP socket.
pub struct Rings {
    /// Fill ring (frames we give the kernel to receive into).
    pub fq: FillQueue,
    /// Completion ring (frames the kernel has sent).
    pub cq: CompQueue,
    /// RX ring.
    pub rx: RxQueue,
    /// TX ring.
    pub tx: TxQueue,
}

/// The device.
pub struct XskDevice {
    pub(crate) umem: Umem,
    pub(crate) fq: FillQueue,
    pub(crate) cq: CompQueue,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxQueue,
    pub(crate) free_tx: Vec<FrameDesc>,
    pub(crate) recycle: Vec<FrameDesc>,
    rx_pending: Vec<FrameDesc>,
    rx_pending_head: usize,
    pub(crate) batch: [FrameDesc; BATCH],
    frame_count: usize,
    in_fill: usize,
    in_tx: usize,
    mtu: usize,
    pub(crate) stats: DeviceStats,
    rx_unconsumed: u64,
}

impl XskDevice {
    /// Builds the device from the socket's rings: `rx_frames` go to the fill ring now,
    /// `tx_frames` are kept for transmits.
    pub fn new(
        umem: Umem,
        rings: Rings,
        rx_frames: Vec<FrameDesc>,
        tx_frames: Vec<FrameDesc>,
        mtu: usize,
    ) -> Self {
        let Rings { fq, cq, rx, tx } = rings;
        let frame_count = rx_frames.len() + tx_frames.len();
        let mut d = Self {
            umem,
            fq,
            cq,
            rx,
            tx,
            free_tx: Vec::with_capacity(frame_count),
            recycle: Vec::with_capacity(frame_count),
            rx_pending: Vec::with_capacity(frame_count),
            rx_pending_head: 0,
            batch: [FrameDesc::default(); BATCH],
            frame_count,
            in_fill: 0,
            in_tx: 0,
            mtu,
            stats: DeviceStats::default(),
            rx_unconsumed: 0,
        };
        d.free_tx.extend(tx_frames);
        d.recycle.extend(rx_frames);
        d.refill();
        d
    }

    /// Gives recycled frames back to the kernel's fill ring.
    #[inline]
    pub fn refill(&mut self) {
        if self.recycle.is_empty() {
            return;
        }
        // SAFETY: every frame on `recycle` is ours (consumed from the RX ring or never
        // given out) and nothing references its memory any more.
        let n = unsafe { self.fq.produce(&self.recycle) };
        self.in_fill += n;
        self.recycle.drain(..n);
        if n > 0 && self.fq.needs_wakeup() {
            self.stats.fill_kicks += 1;
            let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Takes sent frames back from the completion ring.
    #[inline]
    pub fn reap_completions(&mut self) {
        // SAFETY: `batch` is ours; the descriptors written are frames the kernel is done with.
        let n = unsafe { self.cq.consume(&mut self.batch) };
        self.in_tx -= n.min(self.in_tx);
        self.free_tx.extend_from_slice(&self.batch[..n]);
    }

    /// Reads up to [`BATCH`] received frames into `self.batch`; returns the count.
    #[inline]
    pub fn consume_rx(&mut self) -> usize {
        // SAFETY: `batch` is ours; the kernel hands the frames it fills over to us.
        let n = unsafe { self.rx.consume(&mut self.batch) };
        self.in_fill -= n.min(self.in_fill);
        n
    }

    /// The bytes of a received frame.
    #[inline]
    pub fn frame_data(&self, desc: &FrameDesc) -> &[u8] {
        // SAFETY: `desc` came from our RX ring and is not on any ring or list that lends it
        // out mutably; the returned slice borrows `self`, so it cannot outlive that.
        unsafe { self.umem.data(desc) }.contents()
    }

    /// Queues a received frame for smoltcp.
    #[inline]
    pub fn to_stack(&mut self, desc: FrameDesc) {
        if self.rx_pending_head == self.rx_pending.len() {
            self.rx_pending.clear();
            self.rx_pending_head = 0;
        }
        self.rx_pending.push(desc);
    }

    /// Reads a batch from the RX ring and queues every frame for smoltcp; returns the count.
    pub fn rx_all_to_stack(&mut self) -> usize {
        let n = self.consume_rx();
        for i in 0..n {
            let d = self.batch[i];
            self.to_stack(d);
        }
        n
    }

    /// Frames posted to the TX ring and not completed yet.
    pub fn tx_in_flight(&self) -> usize {
        self.in_tx
    }

    /// Frames smoltcp has not taken yet.
    pub fn stack_pending(&self) -> usize {
        self.rx_pending.len() - self.rx_pending_head
    }

    /// Every frame is in exactly one place: kernel rings, pending, recycle or free.
    pub fn accounted(&self) -> bool {
        self.in_fill + self.in_tx + self.stack_pending() + self.recycle.len() + self.free_tx.len()
            == self.frame_count
    }

    /// Counters.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            rx_unconsumed: self.rx_unconsumed,
            ..self.stats
        }
    }
}

/// Lends one received UMEM frame to smoltcp.
pub struct XskRxToken<'a> {
    umem: &'a Umem,
    desc: Option<FrameDesc>,
    recycle: &'a mut Vec<FrameDesc>,
    unconsumed: &'a mut u64,
}

impl phy::RxToken for XskRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let desc = self.desc.take().unwrap_or_default();
        // SAFETY: the frame came from our RX ring and is held only by this token.
        let r = f(unsafe { self.umem.data(&desc) }.contents());
        self.recycle.push(desc);
        r
    }
}

impl Drop for XskRxToken<'_> {
    fn drop(&mut self) {
        if let Some(desc) = self.desc.take() {
            *self.unconsumed += 1;
            self.recycle.push(desc);
        }
    }
}

/// Lets smoltcp write one frame straight into UMEM.
pub struct XskTxToken<'a> {
    umem: &'a Umem,
    free: &'a mut Vec<FrameDesc>,
    tx: &'a mut TxQueue,
    in_tx: &'a mut usize,
    stats: &'a mut DeviceStats,
}

impl phy::TxToken for XskTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let Some(mut desc) = self.free.pop() else {
            // No frame free (the kernel has not completed earlier sends): smoltcp still
            // needs a buffer; the frame is dropped and counted, TCP retransmits it.
            self.stats.tx_no_frame += 1;
            let mut scratch = [0u8; 2048];
            return f(&mut scratch[..len.min(2048)]);
        };
        // SAFETY: `desc` was on the free list: not on any kernel ring, no other reference.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        cursor.set_pos(len);
        let r = f(&mut data.contents_mut()[..len]);
        // SAFETY: the frame is fully written and we give up all access until it comes back
        // on the completion ring.
        let posted = unsafe { self.tx.produce_one(&desc) };
        if posted == 1 {
            *self.in_tx += 1;
            self.stats.tx_frames += 1;
            if self.tx.needs_wakeup() {
                self.stats.tx_kicks += 1;
                let _ = self.tx.wakeup();
            }
        } else {
            self.stats.tx_no_frame += 1;
            self.free.push(desc);
        }
        r
    }
}

impl phy::Device for XskDevice {
    type RxToken<'a> = XskRxToken<'a>;
    type TxToken<'a> = XskTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.rx_pending_head == self.rx_pending.len() {
            return None;
        }
        let desc = self.rx_pending[self.rx_pending_head];
        self.rx_pending_head += 1;
        self.stats.rx_to_stack += 1;
        // Split borrows: the RX token touches `recycle` and its counter, the TX token the
        // free list, the TX ring and the other counters.
        let Self {
            umem,
            recycle,
            free_tx,
            tx,
            in_tx,
            stats,
            rx_unconsumed,
            ..
        } = self;
        Some((
            XskRxToken {
                umem,
                desc: Some(desc),
                recycle,
                unconsumed: rx_unconsumed,
            },
            XskTxToken {
                umem,
                free: free_tx,
                tx,
                in_tx,
                stats,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.free_tx.is_empty() {
            self.reap_completions();
        }
        let Self {
            umem,
            free_tx,
            tx,
            in_tx,
            stats,
            ..
        } = self;
        Some(XskTxToken {
            umem,
            free: free_tx,
            tx,
            in_tx,
            stats,
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
