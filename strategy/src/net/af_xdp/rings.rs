//! The AF_XDP rings (xsk-rs) as [`RxRing`] and [`TxRing`]: the RX half owns the fill and RX
//! rings, the TX half the TX and completion rings and the free list of TX frames; both
//! hold a handle to the same UMEM.
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the kernel (see the module docs and each SAFETY comment)"
)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{BindFlags, Interface as XskIface, LibxdpFlags, QueueSize, SocketConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::net::ring::report::XskBusyPoll;
use crate::net::ring::session::{io_chain, io_other};
use crate::net::ring::{Kick, RxRing, TxRing, TxStats, BATCH};

/// The four rings of a bound socket.
pub type SocketRings = (TxQueue, RxQueue, FillQueue, CompQueue);

/// Binds an AF_XDP socket on `iface` queue `queue` over `umem` (its only user) with rings of
/// `ring` entries; the XDP program is ours (libxdp is told not to load its own).
pub fn open_socket(
    iface: &str,
    queue: u32,
    ring: u32,
    umem: &Umem,
    bind: BindFlags,
) -> io::Result<SocketRings> {
    let q = |n: u32| QueueSize::new(n).map_err(io_other);
    let sc = SocketConfig::builder()
        .rx_queue_size(q(ring)?)
        .tx_queue_size(q(ring)?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let name = XskIface::new(std::ffi::CString::new(iface).map_err(io_other)?);
    // SAFETY: the UMEM is used by this one socket only (no shared UMEM: `open` creates one
    // UMEM per socket), and the program is loaded by us (INHIBIT_PROG_LOAD), as Socket::new
    // requires.
    let (tx, rx, fqcq) =
        unsafe { Socket::new(sc, umem, &name, queue) }.map_err(|e| io_chain(&e, ""))?;
    let (fq, cq) = fqcq.ok_or_else(|| io_other("no fill/completion queue returned"))?;
    Ok((tx, rx, fq, cq))
}

/// The receive half.
pub struct XskRx {
    umem: Umem,
    fq: FillQueue,
    rx: RxQueue,
    in_kernel: usize,
    total: usize,
    /// Fill-ring wakeups.
    pub fill_kicks: u64,
    /// Busy polling: the socket's fd, `None` when off or when the socket has no NAPI
    /// instance to poll.
    busy: Option<RawFd>,
    /// The settings asked for, the socket's NAPI id and the polls made (for the report).
    busy_report: Option<XskBusyPoll>,
}

/// The transmit half.
pub struct XskTx {
    umem: Umem,
    cq: CompQueue,
    tx: TxQueue,
    free: Vec<FrameDesc>,
    done: [FrameDesc; BATCH],
    in_flight: usize,
    total: usize,
    stats: TxStats,
    kick: Kick,
    /// Kick after every post, whatever the ring's need-wakeup flag says: with busy polling
    /// the driver leaves the transmit to the application's calls (as libxdp's samples do).
    busy: bool,
}

/// Splits a socket's rings and frames into the two halves; `rx_frames` go to the fill ring.
pub fn halves(
    umem: Umem,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    rx_frames: Vec<FrameDesc>,
    tx_frames: Vec<FrameDesc>,
) -> (XskRx, XskTx) {
    let mut r = XskRx {
        umem: umem.clone(),
        fq,
        rx,
        in_kernel: 0,
        total: rx_frames.len(),
        fill_kicks: 0,
        busy: None,
        busy_report: None,
    };
    let mut frames = rx_frames;
    r.give_back(&mut frames);
    let total = tx_frames.len();
    let t = XskTx {
        umem,
        cq,
        tx,
        free: tx_frames,
        done: [FrameDesc::default(); BATCH],
        in_flight: 0,
        total,
        stats: TxStats::default(),
        kick: Kick::default(),
        busy: false,
    };
    (r, t)
}

impl XskRx {
    /// The RX ring's fd (for the XSKMAP).
    pub fn fd(&self) -> &xsk_rs::socket::Fd {
        self.rx.fd()
    }

    /// Busy polling on this socket: SO_BUSY_POLL `us` (needs CAP_NET_ADMIN above
    /// `net.core.busy_read`). Then one `recv` marks the socket's NAPI instance (zero-copy
    /// sockets have one) and SO_INCOMING_NAPI_ID reads it; with none, the loop does not
    /// poll. Returns the NAPI id (0: none).
    pub fn busy_poll(&mut self, us: u32) -> io::Result<u32> {
        let fd = self.rx.fd().as_raw_fd();
        hostsys::socket::setsockopt_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            i32::try_from(us).unwrap_or(i32::MAX),
        )?;
        let _ = hostsys::socket::recv_nb(fd, &mut [], 0);
        let napi_id =
            hostsys::socket::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_INCOMING_NAPI_ID)
                .map_or(0, |v| u32::try_from(v).unwrap_or(0));
        self.busy = (napi_id != 0).then_some(fd);
        self.busy_report = Some(XskBusyPoll {
            us,
            napi_id,
            polls: 0,
        });
        Ok(napi_id)
    }
}

/// A received frame of one of several sockets: the socket's index and its descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct QFrame {
    /// Index of the socket (into [`MultiRx`]'s list, not the queue number).
    pub q: u8,
    /// The frame.
    pub d: FrameDesc,
}

/// The receive halves of one AF_XDP socket per RX queue, as one [`RxRing`]: a NIC with
/// several queues spreads flows over them (RSS, or a multi-queue tap), so the market data
/// and the order flow may arrive on different queues. Each socket has its own UMEM; frames
/// go back to the socket they came from. Frames per queue are counted.
pub struct MultiRx {
    rings: Vec<XskRx>,
    queues: Vec<u32>,
    next: usize,
    scratch: [FrameDesc; BATCH],
    back: Vec<Vec<FrameDesc>>,
    /// Frames received per queue (same order as `queues`).
    pub rx_per_queue: Vec<u64>,
    /// The program tags the market-data frames it leaves to user space (`xdp-tx`): the
    /// tag is split off every frame handed out ([`strategy_common::xtx::split_tag`]).
    tagged: bool,
}

impl MultiRx {
    /// Over these sockets, bound to `queues` (same order); `tagged`: the program in front
    /// of them tags market-data frames (`xdp-tx`).
    pub fn new(rings: Vec<XskRx>, queues: Vec<u32>, tagged: bool) -> Self {
        let back = rings.iter().map(|r| Vec::with_capacity(r.total)).collect();
        let n = rings.len();
        Self {
            rings,
            queues,
            next: 0,
            scratch: [FrameDesc::default(); BATCH],
            back,
            rx_per_queue: vec![0; n],
            tagged,
        }
    }

    /// A frame's bytes as the kernel wrote them (with the program's tag, if any).
    #[inline]
    fn raw(&self, frame: &QFrame) -> &[u8] {
        match self.rings.get(usize::from(frame.q)) {
            Some(r) => r.data(&frame.d),
            None => &[],
        }
    }

    /// The sockets with their queue numbers.
    pub fn sockets(&self) -> impl Iterator<Item = (u32, &XskRx)> {
        self.queues.iter().copied().zip(self.rings.iter())
    }

    /// The queue numbers.
    pub fn queues(&self) -> &[u32] {
        &self.queues
    }
}

impl RxRing for MultiRx {
    type Frame = QFrame;

    #[inline]
    fn recv(&mut self, out: &mut [QFrame]) -> usize {
        let k = self.rings.len();
        let mut got = 0;
        for step in 0..k {
            let i = (self.next + step) % k;
            let room = out.len().min(BATCH) - got;
            if room == 0 {
                break;
            }
            let n = self.rings[i].recv(&mut self.scratch[..room]);
            for (o, d) in out[got..got + n].iter_mut().zip(&self.scratch[..n]) {
                *o = QFrame { q: i as u8, d: *d };
            }
            self.rx_per_queue[i] += n as u64;
            got += n;
        }
        // Start with the next socket next time: no queue starves another.
        self.next = (self.next + 1) % k.max(1);
        got
    }

    #[inline]
    fn data(&self, frame: &QFrame) -> &[u8] {
        let raw = self.raw(frame);
        if self.tagged {
            strategy_common::xtx::split_tag(raw).1
        } else {
            raw
        }
    }

    #[inline]
    fn tag(&self, frame: &QFrame) -> Option<u32> {
        if self.tagged {
            strategy_common::xtx::split_tag(self.raw(frame)).0
        } else {
            None
        }
    }

    #[inline]
    fn give_back(&mut self, frames: &mut Vec<QFrame>) {
        for f in frames.drain(..) {
            if let Some(b) = self.back.get_mut(usize::from(f.q)) {
                b.push(f.d);
            }
        }
        for (r, b) in self.rings.iter_mut().zip(self.back.iter_mut()) {
            if !b.is_empty() {
                // What the fill ring did not take stays here for the next call.
                r.give_back(b);
            }
        }
    }

    fn kernel_drops(&self) -> Option<u64> {
        // XDP_STATISTICS: dropped for want of a fill-ring frame (or too big), and dropped
        // because the RX ring was full.
        let mut sum = 0;
        for r in &self.rings {
            let st = r.fd().xdp_statistics().ok()?;
            sum += st.rx_dropped() + st.rx_ring_full();
        }
        Some(sum)
    }

    fn busy_poll(&self) -> Option<XskBusyPoll> {
        let mut sum: Option<XskBusyPoll> = None;
        for r in self.rings.iter().filter_map(|r| r.busy_report) {
            let s = sum.get_or_insert(XskBusyPoll { polls: 0, ..r });
            s.polls += r.polls;
            if s.napi_id == 0 {
                s.napi_id = r.napi_id;
            }
        }
        sum
    }

    fn queue_counts(&self) -> Vec<(u32, u64)> {
        self.queues
            .iter()
            .copied()
            .zip(self.rx_per_queue.iter().copied())
            .collect()
    }

    fn accounted(&self, held: usize) -> bool {
        let kernel: usize = self.rings.iter().map(|r| r.in_kernel).sum();
        let waiting: usize = self.back.iter().map(Vec::len).sum();
        let total: usize = self.rings.iter().map(|r| r.total).sum();
        kernel + waiting + held == total
    }
}

impl RxRing for XskRx {
    type Frame = FrameDesc;

    #[inline]
    fn recv(&mut self, out: &mut [FrameDesc]) -> usize {
        // SAFETY: `out` is ours; the kernel hands the frames it filled over to us.
        let mut n = unsafe { self.rx.consume(out) };
        if n == 0 {
            if let Some(fd) = self.busy {
                // The busy poll: the kernel runs the queue's NAPI poll inside this call.
                let _ = hostsys::socket::recv_nb(fd, &mut [], 0);
                if let Some(r) = self.busy_report.as_mut() {
                    r.polls += 1;
                }
                // SAFETY: as above.
                n = unsafe { self.rx.consume(out) };
            }
        }
        self.in_kernel -= n.min(self.in_kernel);
        n
    }

    #[inline]
    fn data(&self, frame: &FrameDesc) -> &[u8] {
        // SAFETY: the frame came from our RX ring and is not on the fill ring while the
        // device holds it; the slice borrows `self`.
        unsafe { self.umem.data(frame) }.contents()
    }

    #[inline]
    fn give_back(&mut self, frames: &mut Vec<FrameDesc>) {
        // SAFETY: every frame given back is ours and nothing references its memory any more.
        let n = unsafe { self.fq.produce(frames) };
        self.in_kernel += n;
        frames.drain(..n);
        if n > 0 && self.fq.needs_wakeup() {
            self.fill_kicks += 1;
            let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
        }
    }

    fn accounted(&self, held: usize) -> bool {
        self.in_kernel + held == self.total
    }
}

impl XskTx {
    /// Busy polling on this socket: every post is kicked (the kick is also the TX side's
    /// busy poll).
    pub fn kick_always(&mut self, on: bool) {
        self.busy = on;
    }

    #[inline]
    fn wants_kick(&self) -> bool {
        self.busy || self.tx.needs_wakeup()
    }
}

impl TxRing for XskTx {
    #[inline]
    fn send<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let Some(mut desc) = self.free.pop() else {
            self.stats.tx_no_frame += 1;
            return None;
        };
        // SAFETY: `desc` was on the free list: on no kernel ring, no other reference.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        data.cursor().set_pos(len);
        let r = f(&mut data.contents_mut()[..len]);
        // SAFETY: the frame is fully written; we give up access until it comes back on the
        // completion ring.
        if unsafe { self.tx.produce_one(&desc) } == 1 {
            self.in_flight += 1;
            self.stats.tx_frames += 1;
            if self.wants_kick() && self.kick.now() {
                self.stats.tx_kicks += 1;
                let ok = self.tx.wakeup().is_ok();
                self.kick.kicked(ok, &mut self.stats);
            }
        } else {
            self.stats.tx_no_frame += 1;
            self.free.push(desc);
        }
        Some(r)
    }

    fn touch(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        let Some(mut desc) = self.free.pop() else {
            return false;
        };
        // SAFETY: `desc` was on the free list: on no kernel ring, no other reference; it goes
        // straight back to the free list, never to the TX ring.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let n = len.min(data.contents_mut().len());
        f(&mut data.contents_mut()[..n]);
        self.free.push(desc);
        true
    }

    #[inline]
    fn reap(&mut self) {
        // SAFETY: `done` is ours; the descriptors written are frames the kernel has sent.
        let n = unsafe { self.cq.consume(&mut self.done) };
        self.in_flight -= n.min(self.in_flight);
        self.free.extend_from_slice(&self.done[..n]);
        // A kick the kernel refused (EAGAIN, EBUSY, ENOBUFS): the frames would wait for the
        // next transmit; kick again while they are in flight and the ring asks for it.
        if self.kick.owed() {
            let wants = self.wants_kick();
            if self.kick.retry_now(self.in_flight, wants) {
                self.stats.tx_kicks += 1;
                let ok = self.tx.wakeup().is_ok();
                self.kick.kicked(ok, &mut self.stats);
            } else {
                self.kick.settle(self.in_flight, wants);
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn hold_kicks(&mut self, hold: bool) {
        if self.kick.hold(hold) {
            self.stats.tx_kicks += 1;
            let ok = self.tx.wakeup().is_ok();
            self.kick.kicked(ok, &mut self.stats);
        }
    }

    fn accounted(&self) -> bool {
        self.free.len() + self.in_flight == self.total
    }

    fn stats(&self) -> TxStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error like xsk-rs's: a fixed message, the OS error as its source.
    #[derive(Debug)]
    struct Wrapped(Option<io::Error>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("non-zero error code returned when creating AF_XDP socket")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_ref().map(|e| e as _)
        }
    }

    /// An error whose message includes its source's.
    #[derive(Debug)]
    struct Says(Wrapped);

    impl std::fmt::Display for Says {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "attach: {}", self.0)
        }
    }

    impl std::error::Error for Says {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_os_error_behind_an_xsk_error_is_kept() {
        let os = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let e = io_chain(&Wrapped(Some(os)), " (a hint)");
        assert_eq!(
            e.raw_os_error(),
            None,
            "a new error, with the OS error's kind"
        );
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        let text = e.to_string();
        assert!(
            text.starts_with("non-zero error code")
                && text.contains("(os error 95)")
                && text.ends_with(" (a hint)"),
            "{text}"
        );
        let bare = io_chain(&Wrapped(None), "");
        assert_eq!(bare.kind(), io::ErrorKind::Other);
        // A message that already holds its source's text (thiserror's "{what}: {source}")
        // does not say it twice; the level below still comes.
        let e = io_chain(
            &Says(Wrapped(Some(io::Error::from_raw_os_error(libc::EBUSY)))),
            "",
        );
        assert_eq!(
            e.to_string(),
            "attach: non-zero error code returned when creating AF_XDP socket: Device or resource busy (os error 16)"
        );
    }
}
