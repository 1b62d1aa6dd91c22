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

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use proto::order::ORDER_LEN;

use super::{Hot, NetConfig, NetPath, PathStats, Status};
use crate::sys::mono_ns;

const BUF_SIZE: usize = 2048;
const BUF_COUNT: u16 = 256;
const BGID: u16 = 7;
const SLOTS: usize = 64;

const UD_RECV: u64 = 1 << 32;
const UD_HUP: u64 = 2 << 32;
const UD_PROVIDE: u64 = 3 << 32;
const UD_SEND: u64 = 4 << 32;
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

struct Ring {
    ring: IoUring,
    bufs: Box<[u8]>,
    slots: Box<[[u8; ORDER_LEN]; SLOTS]>,
    slot_busy: [bool; SLOTS],
    next_slot: usize,
    recv_armed: bool,
    send_zc: bool,
}

/// The path.
pub struct UringPath {
    cfg: NetConfig,
    tcp: Option<socket2::Socket>,
    udp: Option<UdpSocket>,
    ring: Option<Ring>,
    features: UringFeatures,
    stats: PathStats,
    hung_up: bool,
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
            features: UringFeatures::default(),
            stats: PathStats::default(),
            hung_up: false,
        }
    }

    /// The features found at setup.
    pub fn features(&self) -> UringFeatures {
        self.features
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
        self.features = UringFeatures {
            fast_poll: p.is_feature_fast_poll(),
            nodrop: p.is_feature_nodrop(),
            submit_stable: p.is_feature_submit_stable(),
            ext_arg: p.is_feature_ext_arg(),
            recv_multishot: probe.is_supported(opcode::RecvMulti::CODE) && p.is_feature_fast_poll(),
            send_zc: probe.is_supported(opcode::SendZc::CODE),
            sqpoll: self.cfg.sqpoll_idle_ms.is_some(),
        };
        if !self.features.fast_poll {
            return Err(missing(
                "IORING_FEAT_FAST_POLL (needed for multishot receive, Linux 5.7+)",
            ));
        }
        if !self.features.recv_multishot {
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
        let send_zc = self.cfg.send_zc && self.features.send_zc;
        if self.cfg.send_zc && !send_zc {
            tracing::warn!("io_uring: SEND_ZC not supported by this kernel; using SEND");
        }
        ring.submitter().register_files(&[udp_fd, tcp_fd])?;
        tracing::info!(features = ?self.features, "io_uring ready");
        let mut r = Ring {
            ring,
            bufs: vec![0u8; BUF_SIZE * usize::from(BUF_COUNT)].into_boxed_slice(),
            slots: Box::new([[0; ORDER_LEN]; SLOTS]),
            slot_busy: [false; SLOTS],
            next_slot: 0,
            recv_armed: false,
            send_zc,
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
        // SAFETY (pointer arithmetic): `off` is inside `bufs` (bid < BUF_COUNT).
        let ptr = self.bufs[off..].as_mut_ptr();
        let e = opcode::ProvideBuffers::new(ptr, BUF_SIZE as i32, 1, BGID, bid)
            .build()
            .user_data(UD_PROVIDE);
        self.push(&e)
    }
}

impl NetPath for UringPath {
    fn begin_connect(&mut self) -> io::Result<()> {
        self.tcp = Some(super::start_tcp_connect(self.cfg.exchange)?);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        super::tcp_connected(self.tcp.as_ref())
    }

    fn start_md(&mut self) -> io::Result<()> {
        let udp = super::join_group(self.cfg.group, self.cfg.iface_addr, self.cfg.busy_poll_us)?;
        let tcp_fd = self
            .tcp
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        let ring = self.build_ring(udp.as_raw_fd(), tcp_fd)?;
        self.udp = Some(udp);
        self.ring = Some(ring);
        self.stats = PathStats::default();
        self.hung_up = false;
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let Some(r) = &mut self.ring else {
            return Ok(Status::Disconnected);
        };
        let mut cqes = [(0u64, 0i32, 0u32); 32];
        let mut n = 0;
        for c in r.ring.completion().take(cqes.len()) {
            cqes[n] = (c.user_data(), c.result(), c.flags());
            n += 1;
        }
        let mut status = Status::Idle;
        for &(ud, res, flags) in &cqes[..n] {
            match ud & UD_MASK {
                UD_RECV => {
                    if !cqueue::more(flags) {
                        r.recv_armed = false;
                    }
                    if res < 0 {
                        if -res == libc::ENOBUFS {
                            continue; // all buffers in use: re-armed below once some return
                        }
                        return Err(io::Error::from_raw_os_error(-res));
                    }
                    let Some(bid) = cqueue::buffer_select(flags) else {
                        continue;
                    };
                    let t_rx = mono_ns();
                    status = Status::Busy;
                    self.stats.packets += 1;
                    let off = usize::from(bid) * BUF_SIZE;
                    let len = (res as usize).min(BUF_SIZE);
                    let order = hot.engine.on_packet(&r.bufs[off..off + len], t_rx);
                    if let Some(order) = order {
                        let slot = r.next_slot;
                        r.next_slot = (r.next_slot + 1) % SLOTS;
                        if r.slot_busy[slot] {
                            // 64 orders in flight: the kernel is far behind; wait for it.
                            while r.slot_busy[slot] {
                                r.ring.submit_and_wait(1)?;
                                for c in r.ring.completion() {
                                    if c.user_data() & UD_MASK == UD_SEND
                                        && !(r.send_zc && cqueue::more(c.flags()))
                                    {
                                        r.slot_busy[(c.user_data() & 0xFFFF) as usize] = false;
                                    }
                                }
                            }
                        }
                        order.emit(&mut proto::order::Packet::new_unchecked(
                            &mut r.slots[slot][..],
                        ));
                        let ptr = r.slots[slot].as_ptr();
                        let e = if r.send_zc {
                            opcode::SendZc::new(FD_TCP, ptr, ORDER_LEN as u32).build()
                        } else {
                            opcode::Send::new(FD_TCP, ptr, ORDER_LEN as u32)
                                .flags(libc::MSG_NOSIGNAL)
                                .build()
                        };
                        let delay = hot.next_delay();
                        super::spin_for(delay);
                        r.slot_busy[slot] = true;
                        r.push(&e.user_data(UD_SEND | slot as u64))?;
                        r.ring.submit()?;
                        let t_tx = mono_ns();
                        self.stats.orders += 1;
                        hot.latency.record(t_tx - t_rx);
                        hot.log.push(order, delay);
                    }
                    r.give_back(bid)?;
                }
                UD_SEND => {
                    let slot = (ud & 0xFFFF) as usize;
                    // SEND_ZC: the first completion has F_MORE; the slot is free at the
                    // notification (F_NOTIF) that follows.
                    if !(r.send_zc && cqueue::more(flags)) {
                        r.slot_busy[slot % SLOTS] = false;
                    }
                    if res < 0 {
                        if matches!(-res, libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) {
                            self.hung_up = true;
                        } else if !cqueue::notif(flags) {
                            return Err(io::Error::from_raw_os_error(-res));
                        }
                    } else if !cqueue::notif(flags) && (res as usize) < ORDER_LEN {
                        self.stats.partial_sends += 1;
                    }
                }
                UD_HUP => self.hung_up = true,
                UD_PROVIDE if res < 0 => return Err(io::Error::from_raw_os_error(-res)),
                _ => {}
            }
        }
        if self.hung_up {
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

    fn close(&mut self) {
        // Dropping the ring cancels its requests; then the sockets close.
        self.ring = None;
        self.udp = None;
        self.tcp = None;
    }

    fn stats(&self) -> PathStats {
        self.stats
    }
}
