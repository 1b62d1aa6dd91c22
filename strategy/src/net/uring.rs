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

use io_uring::types::Napi;
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

/// Ring set-up and polling features asked for (`strategy run` flags). Each is probed at
/// set-up; one the kernel refuses falls back with its reason in the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringOptions {
    /// IORING_SETUP_SINGLE_ISSUER + DEFER_TASKRUN: completions are produced only when the
    /// loop enters the kernel with GETEVENTS (it does, once per idle turn), so no task-work
    /// interrupt (an IPI: a VM exit in a guest) reaches the spinning thread.
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN + TASKRUN_FLAG: no interrupt either; the kernel raises a flag
    /// in the ring when task work waits and the loop enters the kernel only then.
    pub coop_taskrun: bool,
    /// Pin the SQPOLL thread to this CPU (with `sqpoll_idle_ms`).
    pub sqpoll_cpu: Option<u32>,
    /// IORING_REGISTER_NAPI: busy-poll the device queue for this long (us) when the loop
    /// waits for completions (Linux 6.9+).
    pub napi_busy_poll_us: Option<u32>,
}

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
    /// The SQPOLL thread's CPU, when pinned.
    pub sqpoll_cpu: Option<u32>,
    /// SINGLE_ISSUER + DEFER_TASKRUN in use.
    pub defer_taskrun: bool,
    /// COOP_TASKRUN + TASKRUN_FLAG in use.
    pub coop_taskrun: bool,
    /// NAPI busy polling registered (us).
    pub napi_busy_poll_us: Option<u32>,
}

/// The io_uring path's report: features and the provided-buffer accounting.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UringReport {
    /// Features in use (what ran, not what was asked for).
    pub features: UringFeatures,
    /// Features asked for that fell back, with the kernel's reason.
    pub fallbacks: Vec<String>,
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
        self.ring
            .as_ref()
            .map_or(self.last_report.features, |r| r.report.features)
    }

    /// Features and buffer accounting of the current (or last) session.
    pub fn uring_report(&self) -> UringReport {
        self.ring
            .as_ref()
            .map_or_else(|| self.last_report.clone(), |r| r.report.clone())
    }

    /// Builds the ring with the asked features, dropping those the kernel refuses (each
    /// with its reason, in `fallbacks`).
    fn setup_ring(&self, fallbacks: &mut Vec<String>) -> io::Result<(IoUring, UringOptions)> {
        let mut want = self.cfg.uring;
        loop {
            let mut b = IoUring::builder();
            if let Some(idle) = self.cfg.sqpoll_idle_ms {
                b.setup_sqpoll(idle);
                if let Some(cpu) = want.sqpoll_cpu {
                    b.setup_sqpoll_cpu(cpu);
                }
            }
            if want.defer_taskrun {
                // TASKRUN_FLAG: the kernel raises IORING_SQ_TASKRUN in the ring when deferred
                // work waits, so the loop enters the kernel only then.
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            if want.coop_taskrun {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            match b.build(512) {
                Ok(ring) => return Ok((ring, want)),
                Err(e) if want.defer_taskrun => {
                    fallbacks.push(format!(
                        "SINGLE_ISSUER+DEFER_TASKRUN refused ({e}): without"
                    ));
                    want.defer_taskrun = false;
                }
                Err(e) if want.coop_taskrun => {
                    fallbacks.push(format!("COOP_TASKRUN refused ({e}): without"));
                    want.coop_taskrun = false;
                }
                Err(e) if want.sqpoll_cpu.is_some() && self.cfg.sqpoll_idle_ms.is_some() => {
                    fallbacks.push(format!("SQPOLL thread on a CPU refused ({e}): unpinned"));
                    want.sqpoll_cpu = None;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn build_ring(&mut self, udp_fd: i32, tcp_fd: i32) -> io::Result<Ring> {
        let mut fallbacks = Vec::new();
        let (ring, got) = self.setup_ring(&mut fallbacks)?;
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
            sqpoll_cpu: got.sqpoll_cpu.filter(|_| self.cfg.sqpoll_idle_ms.is_some()),
            defer_taskrun: got.defer_taskrun,
            coop_taskrun: got.coop_taskrun,
            napi_busy_poll_us: None,
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
            fallbacks.push("SEND_ZC not supported by this kernel: SEND".to_owned());
        }
        ring.submitter().register_files(&[udp_fd, tcp_fd])?;
        let mut features = features;
        if let Some(us) = self.cfg.uring.napi_busy_poll_us {
            let mut napi = Napi::new()
                .set_busy_poll_timeout(us)
                .set_prefer_busy_poll(true);
            match ring.submitter().register_napi(&mut napi) {
                Ok(()) => features.napi_busy_poll_us = Some(us),
                Err(e) => fallbacks.push(format!(
                    "IORING_REGISTER_NAPI refused ({e}; needs Linux 6.9+): without"
                )),
            }
        }
        for f in &fallbacks {
            tracing::warn!("io_uring: {f}");
        }
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
                fallbacks,
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

    /// Without the default task-work interrupts, the loop runs the kernel's pending work
    /// itself, when the ring's IORING_SQ_TASKRUN flag says work waits (a load from shared
    /// memory per turn, a syscall only then): with DEFER_TASKRUN an enter with GETEVENTS (not
    /// waiting), with COOP_TASKRUN a submit (which adds GETEVENTS for the flag). Either also
    /// submits what is queued.
    #[inline]
    fn run_task_work(&mut self) -> io::Result<()> {
        const IORING_ENTER_GETEVENTS: u32 = 1;
        if self.report.features.defer_taskrun {
            if self.ring.completion().is_empty() && self.ring.submission().taskrun() {
                let queued = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
                // SAFETY: a plain io_uring_enter on our ring: `queued` entries (all prepared
                // by `push`, whose buffers this Ring owns), GETEVENTS with min_complete 0
                // (no wait), no argument.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        queued,
                        0,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                }?;
            }
        } else if self.report.features.coop_taskrun && self.ring.submission().taskrun() {
            self.ring.submit()?;
        }
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
        // Member of the group with the receive armed before the connect completes: an
        // exchange may publish the moment it accepts; completions wait in the ring (and data
        // in the socket buffer if the provided buffers run out) until the session runs.
        let udp =
            super::sockets::join_group(self.cfg.group, self.cfg.iface_addr, self.cfg.busy_poll_us)?;
        let tcp = super::sockets::start_tcp_connect(self.cfg.exchange)?;
        let ring = self.build_ring(udp.as_raw_fd(), tcp.as_raw_fd())?;
        self.udp = Some(udp);
        self.tcp = Some(tcp);
        self.ring = Some(ring);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        super::sockets::tcp_connected(self.tcp.as_ref())
    }

    fn start_md(&mut self) -> io::Result<()> {
        // The ring was built and the receive armed in `begin_connect`.
        if self.ring.is_none() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"));
        }
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let Some(r) = &mut self.ring else {
            return Ok(Status::Disconnected);
        };
        r.run_task_work()?;
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

/// What this kernel's io_uring offers, for `strategy probe`: each set-up flag tried on a
/// small ring, the features from the params, the opcodes the paths use.
pub fn probe() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let verdict = |r: io::Result<IoUring>| match r {
        Ok(_) => "yes".to_owned(),
        Err(e) => format!("no ({e})"),
    };
    out.push(("plain ring".into(), verdict(IoUring::new(8))));
    out.push((
        "SQPOLL".into(),
        verdict(IoUring::builder().setup_sqpoll(100).build(8)),
    ));
    out.push((
        "SINGLE_ISSUER + DEFER_TASKRUN".into(),
        verdict(
            IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .build(8),
        ),
    ));
    out.push((
        "COOP_TASKRUN + TASKRUN_FLAG".into(),
        verdict(
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(8),
        ),
    ));
    let Ok(ring) = IoUring::new(8) else {
        return out;
    };
    let p = ring.params();
    for (name, ok) in [
        ("FEAT_FAST_POLL", p.is_feature_fast_poll()),
        ("FEAT_NODROP", p.is_feature_nodrop()),
        ("FEAT_SUBMIT_STABLE", p.is_feature_submit_stable()),
        ("FEAT_EXT_ARG", p.is_feature_ext_arg()),
    ] {
        out.push((name.into(), if ok { "yes" } else { "no" }.into()));
    }
    let mut pr = Probe::new();
    if ring.submitter().register_probe(&mut pr).is_ok() {
        for (name, code) in [
            ("op RECV (multishot)", opcode::RecvMulti::CODE),
            ("op RECV bundle", opcode::RecvMultiBundle::CODE),
            ("op SEND", opcode::Send::CODE),
            ("op SEND_ZC", opcode::SendZc::CODE),
            ("op PROVIDE_BUFFERS", opcode::ProvideBuffers::CODE),
            ("op POLL_ADD", opcode::PollAdd::CODE),
        ] {
            out.push((
                name.into(),
                if pr.is_supported(code) { "yes" } else { "no" }.into(),
            ));
        }
    }
    let mut napi = Napi::new().set_busy_poll_timeout(50);
    out.push((
        "REGISTER_NAPI (6.9+)".into(),
        match ring.submitter().register_napi(&mut napi) {
            Ok(()) => "yes".into(),
            Err(e) => format!("no ({e})"),
        },
    ));
    out
}
