//! The io_uring path.
//!
//! * Features are read from the setup params (`IORING_FEAT_*`) and opcodes from a probe;
//!   a missing one is a clear error naming it (SEND_ZC falls back to SEND with a note).
//! * Market data: one multishot RECV on the UDP socket with provided buffers (a group of
//!   fixed-size buffers in a provided-buffer ring, `bufring`, Linux 5.19+; else, or with
//!   `--uring-provide-ops`, handed over with PROVIDE_BUFFERS); each completion names the
//!   buffer it filled, which goes back to the group after the engine has read it.
//!   Or, with `--uring-inline-recv`, inline: each turn submits one RECV with MSG_DONTWAIT
//!   into a buffer of the ring's and enters once; a queued datagram is copied during that
//!   enter, an empty socket completes with EAGAIN at once (no wake-up, no task work).
//! * Orders: SEND (or SEND_ZC with `--send-zc`) of the 21 bytes from a slot of a small
//!   array of order buffers that live until their completion; one send in flight at a
//!   time, the next ones queued in their slots in order (several in flight could reach
//!   the exchange out of order when the socket is full).
//!   Or, with `--uring-send-syscall` (an attribution variant: it prices the ring's SEND),
//!   with `send(2)` through the kernel path's sender ([`TcpOrderTx`]) and its backlog.
//! * Both sockets are registered files. A POLL_ADD for POLLRDHUP|POLLHUP on the order
//!   socket reports the hang-up.
//! * Optional SQPOLL (`--sqpoll IDLE_MS`): a kernel thread takes submissions, so handing an
//!   order to the kernel is a store to the ring with no syscall while that thread is awake.
//!
//! * Set-up variants ([`UringOptions`], built in `setup`): SINGLE_ISSUER + DEFER_TASKRUN
//!   or COOP_TASKRUN (no task-work interrupt on the spinning thread; the loop runs the
//!   pending work itself when the ring's flag says some waits), a pinned SQPOLL thread, NAPI
//!   busy polling; each falls back with its reason in the report.
//!
//! Without SQPOLL each order costs one `io_uring_enter`. With the default set-up the
//! completion side needs no syscall (the kernel interrupts the thread to run the receive's
//! task work); with DEFER_TASKRUN it needs one enter when work waits, and no interrupt;
//! with the inline receive every turn is one enter, as every turn of the kernel path is
//! one `recv`.
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the kernel (see the module docs and each SAFETY comment)"
)]

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use proto::order::{OrderRepr, ORDER_LEN};

use super::kernel::TcpOrderTx;
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

/// io_uring_enter: also run the ring's pending work and reap completions.
const IORING_ENTER_GETEVENTS: u32 = 1;

mod bufring;
pub mod plan;
mod setup;
mod teardown;

pub use setup::{probe, Teardown, UringFeatures, UringOptions, UringReport};

const FD_UDP: types::Fixed = types::Fixed(0);
const FD_TCP: types::Fixed = types::Fixed(1);

/// One completion, copied out of the ring.
#[derive(Debug, Clone, Copy)]
struct Cqe {
    user_data: u64,
    result: i32,
    flags: u32,
}

struct Ring {
    // Field order is drop order: the io_uring (and its registrations) before the memory it
    // reads (the buffer ring, the buffers, the order slots).
    ring: IoUring,
    /// The provided-buffer ring (`None`: buffers go back with PROVIDE_BUFFERS).
    bufring: Option<bufring::BufRing>,
    /// The ring fd's index among this thread's registered rings (`--uring-reg-ring`):
    /// enters pass it with IORING_ENTER_REGISTERED_RING, sparing the fd lookup.
    reg_ring: Option<u32>,
    bufs: Box<[u8]>,
    slots: Box<[[u8; ORDER_LEN]; SLOTS]>,
    slot_busy: [bool; SLOTS],
    next_slot: usize,
    /// A send of an order is in flight (submitted, its result not yet seen).
    send_in_flight: bool,
    /// Orders written into slots behind the one in flight, not submitted yet: the slots
    /// just before `next_slot`, oldest first.
    unsubmitted: usize,
    /// Completions taken from the ring, in order, not handled yet (preallocated).
    cqes: VecDeque<Cqe>,
    /// The multishot RECV is armed; with the inline receive (`plan.receive`), this turn's
    /// RECV has not completed yet.
    recv_armed: bool,
    hung_up: bool,
    /// The set-up in use: the loop matches on it; the report is derived from it.
    plan: plan::UringPlan,
    /// Requests submitted whose last completion has not come (a multishot receive until
    /// its completion without F_MORE, a SEND_ZC until its notification): the kernel may
    /// still use their memory ([`teardown`]).
    outstanding: usize,
    report: UringReport,
}

/// `io_uring_enter` on the ring registered at index `idx` of this thread: submits
/// `to_submit` prepared entries, waits for none.
#[inline]
fn enter_registered(idx: u32, to_submit: u32, flags: u32) -> io::Result<()> {
    const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
    // SAFETY: io_uring_enter with a registered ring index (the flag says so), entries all
    // prepared by `Ring::push` (their buffers owned by the Ring), min_complete 0 and no
    // argument: the kernel reads nothing of ours but the rings it mapped.
    hostsys::syscall!(unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            libc::c_long::from(idx),
            libc::c_long::from(to_submit),
            0 as libc::c_long,
            libc::c_long::from(flags | IORING_ENTER_REGISTERED_RING),
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_long,
        )
    })
    .map(drop)
}

/// IORING_REGISTER_RING_FDS / IORING_UNREGISTER_RING_FDS's argument.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// Registers `ring`'s fd for this thread (Linux 5.18+); returns its index.
fn register_ring_fd(ring: &IoUring) -> io::Result<u32> {
    const IORING_REGISTER_RING_FDS: libc::c_long = 20;
    let fd = ring.as_raw_fd();
    let mut up = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: fd as u64,
    };
    // SAFETY: io_uring_register with one RsrcUpdate that lives across the call; the kernel
    // writes the index it chose into `offset`.
    hostsys::syscall!(unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            libc::c_long::from(fd),
            IORING_REGISTER_RING_FDS,
            &mut up as *mut RsrcUpdate,
            1 as libc::c_long,
        )
    })?;
    Ok(up.offset)
}

/// Undoes [`register_ring_fd`] (the registration holds a reference to the ring file and
/// would keep it alive until the thread exits).
fn unregister_ring_fd(ring: &IoUring, idx: u32) {
    const IORING_UNREGISTER_RING_FDS: libc::c_long = 21;
    let mut up = RsrcUpdate {
        offset: idx,
        resv: 0,
        data: 0,
    };
    // Best effort at drop: an error leaves the registration to the thread's exit.
    // SAFETY: as in `register_ring_fd`.
    let _ = hostsys::syscall!(unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            libc::c_long::from(ring.as_raw_fd()),
            IORING_UNREGISTER_RING_FDS,
            &mut up as *mut RsrcUpdate,
            1 as libc::c_long,
        )
    });
}

/// The path.
pub struct UringPath {
    cfg: NetConfig,
    /// The order connection; its sender (and backlog) is used only with
    /// [`UringOptions::send_syscall`], else orders go through the ring.
    tx: Option<TcpOrderTx>,
    udp: Option<UdpSocket>,
    ring: Option<Ring>,
    last_report: UringReport,
}

impl Ring {
    fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an entry points at (the provided-buffer area, the order
        // slots) is owned by this Ring, lives until the ring is dropped, and is not
        // touched by us while the kernel owns it (slot_busy, provided buffers returned
        // only after their completion).
        if unsafe { self.ring.submission().push(e) }.is_err() {
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(e) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Submits what is queued: through the registered ring index when there is one, else
    /// the crate's submit. With the registered index, GETEVENTS (not waiting: the kernel
    /// also runs pending work) is passed unless DEFER_TASKRUN's flags say nothing waits: a
    /// request that completes while it is submitted (an order's SEND) posts its completion
    /// without it (GETEVENTS costs 7-15 ns an enter in the `recv_turn` bench).
    #[inline]
    fn submit(&mut self) -> io::Result<()> {
        let Some(idx) = self.reg_ring else {
            self.ring.submit()?;
            return Ok(());
        };
        let n = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
        let sq = self.ring.submission();
        let idle =
            (self.plan.taskrun == plan::TaskRun::Defer) && !sq.taskrun() && !sq.cq_overflow();
        enter_registered(idx, n, if idle { 0 } else { IORING_ENTER_GETEVENTS })
    }

    /// Submits what is queued and runs the kernel's pending work (GETEVENTS, not waiting):
    /// one `io_uring_enter`.
    #[inline]
    fn enter_getevents(&mut self) -> io::Result<()> {
        self.enter(IORING_ENTER_GETEVENTS)
    }

    /// One `io_uring_enter` submitting what is queued, with `flags`, waiting for nothing.
    #[inline]
    fn enter(&mut self, flags: u32) -> io::Result<()> {
        let queued = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
        if let Some(idx) = self.reg_ring {
            return enter_registered(idx, queued, flags);
        }
        // SAFETY: a plain io_uring_enter on our ring: `queued` entries (all prepared by
        // `push`, whose buffers this Ring owns), min_complete 0 (no wait), no argument.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, flags, None)
        }?;
        Ok(())
    }

    /// The inline receive's turn: one RECV with MSG_DONTWAIT into the first buffer of the
    /// area (never provided to the kernel in this mode) and one enter, which copies a
    /// queued datagram or completes with EAGAIN (the completion is posted by the submission
    /// itself); the same enter submits anything queued and, only when the ring's flag says
    /// task work waits (send results, the hang-up poll), runs it (GETEVENTS).
    #[inline]
    fn recv_inline(&mut self) -> io::Result<()> {
        if !self.recv_armed {
            let e = opcode::Recv::new(FD_UDP, self.bufs.as_mut_ptr(), BUF_SIZE as u32)
                .flags(libc::MSG_DONTWAIT)
                .build()
                .user_data(UD_RECV);
            self.push(&e)?;
            self.recv_armed = true;
        }
        if self.ring.submission().taskrun() {
            return self.enter_getevents();
        }
        self.enter(0)
    }

    fn arm_recv(&mut self) -> io::Result<()> {
        let e = opcode::RecvMulti::new(FD_UDP, BGID)
            .build()
            .user_data(UD_RECV);
        self.push(&e)?;
        self.recv_armed = true;
        Ok(())
    }

    #[inline]
    fn give_back(&mut self, bid: u16) -> io::Result<()> {
        let off = usize::from(bid) * BUF_SIZE;
        let ptr = self.bufs[off..off + BUF_SIZE].as_mut_ptr();
        if let Some(br) = &mut self.bufring {
            // Two stores into shared memory: no submission, no syscall.
            br.add(bid, ptr as u64, BUF_SIZE as u32);
            br.publish();
        } else {
            let e = opcode::ProvideBuffers::new(ptr, BUF_SIZE as i32, 1, BGID, bid)
                .build()
                .user_data(UD_PROVIDE);
            self.push(&e)?;
        }
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
        if self.plan.taskrun == plan::TaskRun::Defer {
            if self.ring.completion().is_empty() && self.ring.submission().taskrun() {
                return self.enter_getevents();
            }
        } else if (self.plan.taskrun == plan::TaskRun::Coop) && self.ring.submission().taskrun() {
            self.submit()?;
        }
        Ok(())
    }

    /// Moves every completion out of the ring into `cqes`, in order. Send completions free
    /// their slot at once (so a waiting order can take it); everything else is handled by
    /// `poll` in the order it came. Nothing is dropped: a full backlog is an error.
    fn take_completions(&mut self) -> io::Result<()> {
        let send_zc = self.plan.send_zc();
        let Self {
            ring,
            cqes,
            slot_busy,
            send_in_flight,
            outstanding,
            ..
        } = self;
        for c in ring.completion() {
            let c = Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
            };
            if !cqueue::more(c.flags) {
                *outstanding = outstanding.saturating_sub(1);
            }
            // SEND_ZC: the first completion has F_MORE; the slot is free at the
            // notification (F_NOTIF) that follows.
            if c.user_data & UD_MASK == UD_SEND {
                if !cqueue::notif(c.flags) {
                    // The send's result (SEND_ZC: the first of its two completions).
                    *send_in_flight = false;
                }
                if !(send_zc && cqueue::more(c.flags)) {
                    slot_busy[(c.user_data & 0xFFFF) as usize % SLOTS] = false;
                }
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

    /// Encodes `order` into a free send slot and submits it, or queues it behind the send
    /// in flight; holds it back when all [`SLOTS`] are taken (the exchange is not reading:
    /// waiting here would stop market data and block the loop).
    #[inline]
    fn send_order(&mut self, order: &OrderRepr) -> io::Result<Sent> {
        self.send_msg(|buf| order.emit(&mut proto::order::Packet::new_unchecked(&mut buf[..])))
    }

    /// Writes one 21-byte message into a free send slot with `fill` and submits it, or
    /// queues it (see [`Ring::send_order`]).
    ///
    /// One send at a time on the stream: sends in flight together that meet a full socket
    /// are retried when it drains in no set order, so orders would reach the exchange out
    /// of order (found by the zero-window test). A send that finds room completes while it
    /// is submitted, so without backpressure each order is submitted at once.
    #[inline]
    fn send_msg(&mut self, fill: impl FnOnce(&mut [u8; ORDER_LEN])) -> io::Result<Sent> {
        let slot = self.next_slot;
        if self.send_in_flight || self.slot_busy[slot] {
            // Completions may be waiting in the ring: take them (in order, none lost).
            if self.send_in_flight && self.unsubmitted == 0 {
                self.take_completions()?;
            }
            if self.slot_busy[slot] {
                self.submit()?;
                self.take_completions()?;
            }
        }
        if self.slot_busy[slot] {
            self.report.slots_exhausted += 1;
            return Ok(Sent::HeldBack);
        }
        fill(&mut self.slots[slot]);
        self.slot_busy[slot] = true;
        self.next_slot = (slot + 1) % SLOTS;
        if self.send_in_flight || self.unsubmitted > 0 {
            self.unsubmitted += 1;
            self.pump()?;
            return Ok(Sent::Queued);
        }
        self.submit_send(slot)?;
        Ok(Sent::Now)
    }

    /// Submits the oldest queued order when no send is in flight.
    fn pump(&mut self) -> io::Result<()> {
        if self.send_in_flight || self.unsubmitted == 0 {
            return Ok(());
        }
        let slot = (self.next_slot + SLOTS - self.unsubmitted) % SLOTS;
        self.unsubmitted -= 1;
        self.submit_send(slot)
    }

    /// Submits the SEND (or SEND_ZC) of `slot`.
    #[inline]
    fn submit_send(&mut self, slot: usize) -> io::Result<()> {
        let ptr = self.slots[slot].as_ptr();
        // MSG_WAITALL: a short send is retried by the kernel until the whole order is out.
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let e = if self.plan.send_zc() {
            // Fixed buffer 0 is the whole slot array (when registered).
            let fixed =
                (self.plan.send == plan::Send::Ring(plan::ZeroCopy::FixedSlots)).then_some(0);
            opcode::SendZc::new(FD_TCP, ptr, ORDER_LEN as u32)
                .flags(flags)
                .buf_index(fixed)
                .build()
        } else {
            opcode::Send::new(FD_TCP, ptr, ORDER_LEN as u32)
                .flags(flags)
                .build()
        };
        self.send_in_flight = true;
        self.push(&e.user_data(UD_SEND | slot as u64))?;
        self.submit()?;
        Ok(())
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
        self.submit()?;
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

/// Sends `order` through the ring, or with `send(2)` under
/// [`UringOptions::send_syscall`].
#[inline]
fn send_order(r: &mut Ring, tx: &mut TcpOrderTx, order: &OrderRepr) -> io::Result<Sent> {
    if r.plan.send_syscall() {
        tx.send(order)
    } else {
        r.send_order(order)
    }
}

impl NetPath for UringPath {
    fn begin_connect(&mut self) -> io::Result<()> {
        // Member of the group with the receive armed before the connect completes: an
        // exchange may publish the moment it accepts; completions wait in the ring (and data
        // in the socket buffer if the provided buffers run out) until the session runs.
        let udp =
            super::sockets::join_group(self.cfg.group, self.cfg.iface_addr, self.cfg.md_join())?;
        let tcp = super::sockets::start_tcp_connect(self.cfg.exchange, self.cfg.marks)?;
        let tx = TcpOrderTx::new(tcp, false)?;
        let ring = self.build_ring(udp.as_raw_fd(), tx.socket().as_raw_fd())?;
        self.udp = Some(udp);
        self.tx = Some(tx);
        self.ring = Some(ring);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        super::sockets::tcp_connected(self.tx.as_ref().map(TcpOrderTx::socket))
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
        let (Some(r), Some(tx)) = (&mut self.ring, &mut self.tx) else {
            return Ok(Status::Disconnected);
        };
        if r.plan.inline() {
            r.recv_inline()?;
        } else {
            r.run_task_work()?;
        }
        r.take_completions()?;
        r.pump()?;
        let mut status = Status::Idle;
        // A bounded batch per turn; what is left stays queued, in order, for the next turn.
        for _ in 0..64 {
            let Some(c) = r.cqes.pop_front() else {
                break;
            };
            match c.user_data & UD_MASK {
                UD_RECV if r.plan.inline() => {
                    r.recv_armed = false;
                    if c.result == -libc::EAGAIN {
                        continue; // nothing queued this turn
                    }
                    if c.result < 0 {
                        return Err(io::Error::from_raw_os_error(-c.result));
                    }
                    status = Status::Busy;
                    let len = (c.result as usize).min(BUF_SIZE);
                    if let Some(p) = hot.on_packet(&r.bufs[..len]) {
                        hot.send(p, |o| send_order(r, tx, o))?;
                    }
                }
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
                        hot.send(p, |o| send_order(r, tx, o))?;
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
        if !r.recv_armed && !r.plan.inline() {
            r.arm_recv()?;
        }
        if status == Status::Idle && r.plan.send_syscall() {
            tx.idle()?; // the sender's backlog, when the socket was full
        }
        // Returned buffers are batched: submitted when the loop is idle (or many are
        // queued), so a busy stream costs no extra io_uring_enter per packet.
        let queued = r.ring.submission().len();
        if queued > 0 && (status == Status::Idle || queued >= 64) {
            r.submit()?;
        }
        Ok(status)
    }

    fn warm(&mut self, req: WarmRequest) -> io::Result<Option<Sent>> {
        let (Some(r), Some(tx)) = (&mut self.ring, &mut self.tx) else {
            return Ok(None);
        };
        if r.plan.send_syscall() {
            if req.tx {
                tx.warm_tx();
            }
            if req.heartbeat {
                return tx.send_msg(&proto::order::HEARTBEAT).map(Some);
            }
            return Ok(None);
        }
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
        // Every request cancelled and its last completion waited for (bounded) before the
        // ring and its memory go; then the sockets close.
        if let Some(mut r) = self.ring.take() {
            r.quiesce(teardown::WAIT);
            if r.outstanding > 0 {
                r.report.teardown.kept_bytes = r.keep_memory();
            }
            self.last_report = std::mem::take(&mut r.report);
        }
        self.udp = None;
        self.tx = None;
    }
}
