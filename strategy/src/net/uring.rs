//! The io_uring path.
//!
//! * Features are read from the setup params (`IORING_FEAT_*`) and opcodes from a probe;
//!   a missing one is a clear error naming it (SEND_ZC falls back to SEND with a note).
//! * Market data: one multishot RECV on the UDP socket with provided buffers (a group of
//!   fixed-size buffers handed to the kernel with PROVIDE_BUFFERS); each completion names
//!   the buffer it filled, which goes back to the group after the engine has read it.
//! * Orders: SEND (or SEND_ZC with `--send-zc`) of the 21 bytes from a slot of a small
//!   array of order buffers that live until their completion.
//! * Both sockets are registered files. A POLL_ADD for POLLRDHUP|POLLHUP on the order
//!   socket reports the hang-up.
//! * Optional SQPOLL (`--sqpoll IDLE_MS`): a kernel thread takes submissions, so handing an
//!   order to the kernel is a store to the ring with no syscall while that thread is awake.
//!
//! Without SQPOLL each order costs one `io_uring_enter`; the completion side never needs a
//! syscall (the loop reads the completion ring in shared memory).
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the kernel (see the module docs and each SAFETY comment)"
)]

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use proto::order::{OrderRepr, ORDER_LEN};

use super::{Hot, NetConfig, NetPath, PathReport, Sent, Status, WarmRequest};

const BUF_SIZE: usize = 2048;
const BUF_COUNT: u16 = 256;
const BGID: u16 = 7;
const SLOTS: usize = 64;
/// Completions taken from the ring and not handled yet. Bounded by what can be
/// outstanding: one per provided buffer (receives), two per send slot (SEND_ZC's result and
/// notification), one per buffer being given back, the hang-up poll, and the warming sends
/// (at most one per warming interval, drained every turn).
const CQE_BACKLOG: usize = 2 * BUF_COUNT as usize + 2 * SLOTS + 64;

const UD_RECV: u64 = 1 << 32;
const UD_HUP: u64 = 2 << 32;
const UD_PROVIDE: u64 = 3 << 32;
const UD_SEND: u64 = 4 << 32;
const UD_WARM: u64 = 5 << 32;
const UD_MASK: u64 = 0xFFFF_FFFF << 32;

const FD_UDP: types::Fixed = types::Fixed(0);
const FD_TCP: types::Fixed = types::Fixed(1);

/// What the kernel offers, printed at start.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UringFeatures {
    /// IORING_FEAT_FAST_POLL.
    pub fast_poll: bool,
    /// IORING_FEAT_NODROP.
    pub nodrop: bool,
    /// IORING_FEAT_SUBMIT_STABLE.
    pub submit_stable: bool,
    /// IORING_FEAT_EXT_ARG.
    pub ext_arg: bool,
    /// Multishot RECV (IORING_OP_RECV with IORING_RECV_MULTISHOT).
    pub recv_multishot: bool,
    /// IORING_OP_SEND_ZC.
    pub send_zc: bool,
    /// SQPOLL in use.
    pub sqpoll: bool,
}

/// The io_uring path's report: features and the provided-buffer accounting.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UringReport {
    /// Features found at setup.
    pub features: UringFeatures,
    /// Provided buffers the kernel holds now (all of them, [`UringReport::buffers`], when
    /// every received packet was handled and its buffer returned).
    pub buffers_in_kernel: u16,
    /// Provided buffers in the group.
    pub buffers: u16,
    /// Receive completions that found no buffer (ENOBUFS; the receive is re-armed).
    pub enobufs: u64,
    /// Times an order found every send slot in flight (the kernel had not completed 64
    /// sends: the exchange's window was closed).
    pub slots_exhausted: u64,
}

/// One completion, copied out of the ring.
#[derive(Debug, Clone, Copy)]
struct Cqe {
    user_data: u64,
    result: i32,
    flags: u32,
}

struct Ring {
    ring: IoUring,
    bufs: Box<[u8]>,
    slots: Box<[[u8; ORDER_LEN]; SLOTS]>,
    slot_busy: [bool; SLOTS],
    next_slot: usize,
    /// Completions taken from the ring, in order, not handled yet (preallocated).
    cqes: VecDeque<Cqe>,
    recv_armed: bool,
    send_zc: bool,
    hung_up: bool,
    report: UringReport,
}

/// The path.
pub struct UringPath {
    cfg: NetConfig,
    tcp: Option<socket2::Socket>,
    udp: Option<UdpSocket>,
    ring: Option<Ring>,
    last_report: UringReport,
}

fn missing(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("io_uring: this kernel lacks {what} (try --net kernel)"),
    )
}

impl UringPath {
    /// A path with these settings (ring created at `start_md`).
    pub fn new(cfg: NetConfig) -> Self {
        Self {
            cfg,
            tcp: None,
            udp: None,
            ring: None,
            last_report: UringReport::default(),
        }
    }

    /// The features found at setup.
    pub fn features(&self) -> UringFeatures {
        self.uring_report().features
    }

    /// Features and buffer accounting of the current (or last) session.
    pub fn uring_report(&self) -> UringReport {
        self.ring.as_ref().map_or(self.last_report, |r| r.report)
    }

    fn build_ring(&mut self, udp_fd: i32, tcp_fd: i32) -> io::Result<Ring> {
        let mut b = IoUring::builder();
        if let Some(idle) = self.cfg.sqpoll_idle_ms {
            b.setup_sqpoll(idle);
        }
        let ring = b.build(512)?;
        let p = ring.params();
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let features = UringFeatures {
            fast_poll: p.is_feature_fast_poll(),
            nodrop: p.is_feature_nodrop(),
            submit_stable: p.is_feature_submit_stable(),
            ext_arg: p.is_feature_ext_arg(),
            recv_multishot: probe.is_supported(opcode::RecvMulti::CODE) && p.is_feature_fast_poll(),
            send_zc: probe.is_supported(opcode::SendZc::CODE),
            sqpoll: self.cfg.sqpoll_idle_ms.is_some(),
        };
        if !features.fast_poll {
            return Err(missing(
                "IORING_FEAT_FAST_POLL (needed for multishot receive, Linux 5.7+)",
            ));
        }
        if !features.recv_multishot {
            return Err(missing("multishot RECV (Linux 6.0+)"));
        }
        for (code, name) in [
            (opcode::ProvideBuffers::CODE, "PROVIDE_BUFFERS"),
            (opcode::Send::CODE, "SEND"),
            (opcode::PollAdd::CODE, "POLL_ADD"),
        ] {
            if !probe.is_supported(code) {
                return Err(missing(name));
            }
        }
        let send_zc = self.cfg.send_zc && features.send_zc;
        if self.cfg.send_zc && !send_zc {
            tracing::warn!("io_uring: SEND_ZC not supported by this kernel; using SEND");
        }
        ring.submitter().register_files(&[udp_fd, tcp_fd])?;
        tracing::info!(?features, "io_uring ready");
        let mut r = Ring {
            ring,
            bufs: vec![0u8; BUF_SIZE * usize::from(BUF_COUNT)].into_boxed_slice(),
            slots: Box::new([[0; ORDER_LEN]; SLOTS]),
            slot_busy: [false; SLOTS],
            next_slot: 0,
            cqes: VecDeque::with_capacity(CQE_BACKLOG),
            recv_armed: false,
            send_zc,
            hung_up: false,
            report: UringReport {
                features,
                buffers_in_kernel: BUF_COUNT,
                buffers: BUF_COUNT,
                ..UringReport::default()
            },
        };
        let provide =
            opcode::ProvideBuffers::new(r.bufs.as_mut_ptr(), BUF_SIZE as i32, BUF_COUNT, BGID, 0)
                .build()
                .user_data(UD_PROVIDE);
        r.push(&provide)?;
        let hup = opcode::PollAdd::new(
            FD_TCP,
            (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32,
        )
        .build()
        .user_data(UD_HUP);
        r.push(&hup)?;
        r.arm_recv()?;
        r.ring.submit()?;
        Ok(r)
    }
}

impl Ring {
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an entry points at (the provided-buffer area, the order
        // slots) is owned by this Ring, lives until the ring is dropped, and is not
        // touched by us while the kernel owns it (slot_busy, provided buffers returned
        // only after their completion).
        if unsafe { self.ring.submission().push(e) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(e) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        Ok(())
    }

    fn arm_recv(&mut self) -> io::Result<()> {
        let e = opcode::RecvMulti::new(FD_UDP, BGID)
            .build()
            .user_data(UD_RECV);
        self.push(&e)?;
        self.recv_armed = true;
        Ok(())
    }

    fn give_back(&mut self, bid: u16) -> io::Result<()> {
        let off = usize::from(bid) * BUF_SIZE;
        let ptr = self.bufs[off..off + BUF_SIZE].as_mut_ptr();
        let e = opcode::ProvideBuffers::new(ptr, BUF_SIZE as i32, 1, BGID, bid)
            .build()
            .user_data(UD_PROVIDE);
        self.push(&e)?;
        self.report.buffers_in_kernel += 1;
        Ok(())
    }

    /// Moves every completion out of the ring into `cqes`, in order. Send completions free
    /// their slot at once (so a waiting order can take it); everything else is handled by
    /// `poll` in the order it came. Nothing is dropped: a full backlog is an error.
    fn take_completions(&mut self) -> io::Result<()> {
        let Self {
            ring,
            cqes,
            slot_busy,
            send_zc,
            ..
        } = self;
        for c in ring.completion() {
            let c = Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            };
            // SEND_ZC: the first completion has F_MORE; the slot is free at the
            // notification (F_NOTIF) that follows.
            if c.user_data & UD_MASK == UD_SEND && !(*send_zc && cqueue::more(c.flags)) {
                slot_busy[(c.user_data & 0xFFFF) as usize % SLOTS] = false;
            }
            if cqes.len() == cqes.capacity() {
                return Err(io::Error::other(
                    "io_uring: completion backlog full (more completions outstanding than the path accounts for)",
                ));
            }
            cqes.push_back(c);
        }
        Ok(())
    }

    /// Encodes `order` into a free send slot and submits it; holds it back when all
    /// [`SLOTS`] sends are still in flight (the exchange is not reading: waiting here
    /// would stop market data and block the loop).
    #[inline]
    fn send_order(&mut self, order: &OrderRepr) -> io::Result<Sent> {
        self.send_msg(|buf| order.emit(&mut proto::order::Packet::new_unchecked(&mut buf[..])))
    }

    /// Writes one 21-byte message into a free send slot with `fill` and submits it (held
    /// back when every slot is in flight, see [`Ring::send_order`]).
    #[inline]
    fn send_msg(&mut self, fill: impl FnOnce(&mut [u8; ORDER_LEN])) -> io::Result<Sent> {
        let slot = self.next_slot;
        if self.slot_busy[slot] {
            // Completions may be waiting in the ring: take them (in order, none lost).
            self.ring.submit()?;
            self.take_completions()?;
        }
        if self.slot_busy[slot] {
            self.report.slots_exhausted += 1;
            return Ok(Sent::HeldBack);
        }
        fill(&mut self.slots[slot]);
        let ptr = self.slots[slot].as_ptr();
        // MSG_WAITALL: a short send is retried by the kernel until the whole order is out.
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let e = if self.send_zc {
            opcode::SendZc::new(FD_TCP, ptr, ORDER_LEN as u32)
                .flags(flags)
                .build()
        } else {
            opcode::Send::new(FD_TCP, ptr, ORDER_LEN as u32)
                .flags(flags)
                .build()
        };
        self.slot_busy[slot] = true;
        self.next_slot = (slot + 1) % SLOTS;
        self.push(&e.user_data(UD_SEND | slot as u64))?;
        self.ring.submit()?;
        Ok(Sent::Now)
    }

    /// The send path without sending: a zero-length SEND on the order socket through the
    /// ring (`io_uring_enter`, the SEND opcode, `sock_sendmsg` with nothing to copy). Its
    /// completion is ignored.
    fn warm_tx(&mut self) -> io::Result<()> {
        let e = opcode::Send::new(FD_TCP, self.slots[0].as_ptr(), 0)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(UD_WARM);
        self.push(&e)?;
        self.ring.submit()?;
        Ok(())
    }

    /// Handles one send completion (its slot is already free).
    fn on_send(&mut self, c: Cqe) -> io::Result<()> {
        if c.result < 0 {
            if matches!(-c.result, libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) {
                self.hung_up = true;
            } else if !cqueue::notif(c.flags) {
                return Err(io::Error::from_raw_os_error(-c.result));
            }
        } else if !cqueue::notif(c.flags) && (c.result as usize) < ORDER_LEN {
            // With MSG_WAITALL only a broken connection ends a send short: the stream's
            // framing is lost, so the session ends rather than send a torn order.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "io_uring: an order send ended short; closing the session",
            ));
        }
        Ok(())
    }
}

impl NetPath for UringPath {
    fn begin_connect(&mut self) -> io::Result<()> {
        self.tcp = Some(super::sockets::start_tcp_connect(self.cfg.exchange)?);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        super::sockets::tcp_connected(self.tcp.as_ref())
    }

    fn start_md(&mut self) -> io::Result<()> {
        let udp =
            super::sockets::join_group(self.cfg.group, self.cfg.iface_addr, self.cfg.busy_poll_us)?;
        let tcp_fd = self
            .tcp
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        let ring = self.build_ring(udp.as_raw_fd(), tcp_fd)?;
        self.udp = Some(udp);
        self.ring = Some(ring);
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let Some(r) = &mut self.ring else {
            return Ok(Status::Disconnected);
        };
        r.take_completions()?;
        let mut status = Status::Idle;
        // A bounded batch per turn; what is left stays queued, in order, for the next turn.
        for _ in 0..64 {
            let Some(c) = r.cqes.pop_front() else {
                break;
            };
            match c.user_data & UD_MASK {
                UD_RECV => {
                    if !cqueue::more(c.flags) {
                        r.recv_armed = false;
                    }
                    if c.result < 0 {
                        if -c.result == libc::ENOBUFS {
                            r.report.enobufs += 1;
                            continue; // all buffers in use: re-armed below once some return
                        }
                        return Err(io::Error::from_raw_os_error(-c.result));
                    }
                    let Some(bid) = cqueue::buffer_select(c.flags) else {
                        continue;
                    };
                    r.report.buffers_in_kernel -= 1;
                    status = Status::Busy;
                    let off = usize::from(bid % BUF_COUNT) * BUF_SIZE;
                    let len = (c.result as usize).min(BUF_SIZE);
                    let pending = hot.on_packet(&r.bufs[off..off + len]);
                    if let Some(p) = pending {
                        hot.send(p, |o| r.send_order(o))?;
                    }
                    r.give_back(bid % BUF_COUNT)?;
                }
                UD_SEND => r.on_send(c)?,
                UD_HUP => r.hung_up = true,
                UD_PROVIDE if c.result < 0 => return Err(io::Error::from_raw_os_error(-c.result)),
                _ => {}
            }
        }
        if r.hung_up {
            self.last_report = r.report;
            return Ok(Status::Disconnected);
        }
        if !r.recv_armed {
            r.arm_recv()?;
        }
        // Returned buffers are batched: submitted when the loop is idle (or many are
        // queued), so a busy stream costs no extra io_uring_enter per packet.
        let queued = r.ring.submission().len();
        if queued > 0 && (status == Status::Idle || queued >= 64) {
            r.ring.submit()?;
        }
        Ok(status)
    }

    fn warm(&mut self, req: WarmRequest) -> io::Result<Option<Sent>> {
        let Some(r) = &mut self.ring else {
            return Ok(None);
        };
        if req.tx {
            r.warm_tx()?;
        }
        if req.heartbeat {
            return r.send_msg(|buf| *buf = proto::order::HEARTBEAT).map(Some);
        }
        Ok(None)
    }

    fn report(&self) -> PathReport {
        PathReport::Uring(self.uring_report())
    }

    fn close(&mut self) {
        // Dropping the ring cancels its requests; then the sockets close.
        if let Some(r) = self.ring.take() {
            self.last_report = r.report;
        }
        self.udp = None;
        self.tcp = None;
    }
}
