//! Building the path and its ring: the set-up flags asked for, each dropped with its reason when the
//! kernel refuses it; the features read from the params and the opcode probe; NAPI; the
//! provided buffers, the hang-up poll and the first receive. And `probe`, what this kernel's
//! io_uring offers, for `strategy probe`.

use std::collections::VecDeque;
use std::io;

use io_uring::types::Napi;
use io_uring::{opcode, IoUring, Probe};
use proto::order::ORDER_LEN;

use crate::net::NetConfig;

use super::plan::{self, Asked, Buffers, Offers, Receive, Send, TaskRun, ZeroCopy};

use super::{
    Ring, UringPath, BGID, BUF_COUNT, BUF_SIZE, CQE_BACKLOG, FD_TCP, SLOTS, UD_HUP, UD_PROVIDE,
};

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
    /// Give receive buffers back with PROVIDE_BUFFERS submissions instead of the
    /// provided-buffer ring (the comparison).
    pub provide_ops: bool,
    /// SEND_ZC from registered (fixed) buffers: the order slots registered once, so a send
    /// neither looks up nor pins their pages (with `send_zc`).
    pub fixed_bufs: bool,
    /// Register the ring's fd (IORING_REGISTER_RING_FDS, Linux 5.18+): each enter names it
    /// by index, without the fd table lookup.
    pub reg_ring: bool,
    /// Receive inline: each turn submits one RECV with MSG_DONTWAIT into a buffer of the
    /// ring's and enters once; data already queued is copied during that enter, an empty
    /// socket completes at once with EAGAIN (no poll wake-up, no task work, no provided
    /// buffers). The kernel path's non-blocking `recv`, through the ring.
    pub inline_recv: bool,
    /// Send orders with `send(2)` on the order socket (the kernel path's sender, with its
    /// backlog of whole orders) instead of a SEND through the ring: market data still comes
    /// through the ring. An attribution variant: it prices the ring's SEND against the
    /// syscall.
    pub send_syscall: bool,
}

/// What the kernel offers, printed at start.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
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
    /// Receive buffers in a provided-buffer ring (IORING_REGISTER_PBUF_RING); `false`:
    /// PROVIDE_BUFFERS submissions.
    pub buf_ring: bool,
    /// Orders sent with SEND_ZC from the registered order slots.
    pub fixed_bufs: bool,
    /// Enters through the registered ring fd.
    pub reg_ring: bool,
    /// Market data received inline (one MSG_DONTWAIT RECV per turn), not multishot.
    pub inline_recv: bool,
    /// Orders sent with `send(2)`, not through the ring.
    pub send_syscall: bool,
}

/// The io_uring path's report: features and the provided-buffer accounting.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
    /// The ring's end (filled at `close`).
    #[serde(default)]
    pub teardown: Teardown,
}

/// How the ring ended: requests cancelled and waited for before its memory was freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Teardown {
    /// Requests in the kernel when the session ended (the multishot receive, sends, the
    /// hang-up poll...).
    pub outstanding: u64,
    /// Of those, still in the kernel after the cancel and the wait (a SEND_ZC whose
    /// notification waits for the exchange's ACK): the memory they may read or write (the
    /// buffers, the buffer ring, the send slots) is kept for the process, never freed.
    pub left: u64,
    /// Bytes kept for the process for them.
    pub kept_bytes: u64,
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
            tx: None,
            udp: None,
            ring: None,
            last_report: UringReport::default(),
        }
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

    pub(super) fn build_ring(&mut self, udp_fd: i32, tcp_fd: i32) -> io::Result<Ring> {
        let mut fallbacks = Vec::new();
        let (ring, got) = self.setup_ring(&mut fallbacks)?;
        let p = ring.params();
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        // What the kernel offers; what the plan uses is filled in from the plan below.
        let offered = UringFeatures {
            fast_poll: p.is_feature_fast_poll(),
            nodrop: p.is_feature_nodrop(),
            submit_stable: p.is_feature_submit_stable(),
            ext_arg: p.is_feature_ext_arg(),
            recv_multishot: probe.is_supported(opcode::RecvMulti::CODE) && p.is_feature_fast_poll(),
            send_zc: probe.is_supported(opcode::SendZc::CODE),
            sqpoll: self.cfg.sqpoll_idle_ms.is_some(),
            sqpoll_cpu: got.sqpoll_cpu.filter(|_| self.cfg.sqpoll_idle_ms.is_some()),
            ..UringFeatures::default()
        };
        if !offered.fast_poll {
            return Err(missing(
                "IORING_FEAT_FAST_POLL (needed for multishot receive, Linux 5.7+)",
            ));
        }
        if !offered.recv_multishot {
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
        let taskrun = if got.defer_taskrun {
            TaskRun::Defer
        } else if got.coop_taskrun {
            TaskRun::Coop
        } else {
            TaskRun::Interrupt
        };
        let asked = Asked {
            opts: self.cfg.uring,
            sqpoll: self.cfg.sqpoll_idle_ms.is_some(),
            send_zc: self.cfg.send_zc,
        };
        let (mut plan, dropped) = plan::plan(
            &asked,
            taskrun,
            Offers {
                send_zc: offered.send_zc,
            },
        );
        fallbacks.extend(dropped);
        ring.submitter().register_files(&[udp_fd, tcp_fd])?;
        if let Some(us) = plan.napi_us {
            let mut napi = Napi::new()
                .set_busy_poll_timeout(us)
                .set_prefer_busy_poll(true);
            if let Err(e) = ring.submitter().register_napi(&mut napi) {
                plan.napi_refused();
                fallbacks.push(format!(
                    "IORING_REGISTER_NAPI refused ({e}; needs Linux 6.9+): without"
                ));
            }
        }
        let inline = plan.inline();
        // The inline receive needs one buffer, never handed to the kernel; the multishot
        // receive a group of them.
        let provided = if inline { 0 } else { BUF_COUNT };
        let bufs = vec![0u8; BUF_SIZE * usize::from(provided.max(1))].into_boxed_slice();
        let bufring = if plan.receive == Receive::Multishot(Buffers::Ring) {
            match register_buf_ring(&ring, &bufs) {
                Ok(br) => Some(br),
                Err(e) => {
                    plan.buf_ring_refused();
                    fallbacks.push(format!(
                        "provided-buffer ring refused ({e}; Linux 5.19+): PROVIDE_BUFFERS"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let slots = Box::new([[0u8; ORDER_LEN]; SLOTS]);
        if plan.send == Send::Ring(ZeroCopy::FixedSlots) {
            let iov = libc::iovec {
                iov_base: slots.as_ptr().cast_mut().cast(),
                iov_len: SLOTS * ORDER_LEN,
            };
            // SAFETY: the slots live in the Ring, after the io_uring in drop order, at
            // this heap address (the Box is moved, not its contents).
            if let Err(e) = unsafe { ring.submitter().register_buffers(&[iov]) } {
                plan.fixed_slots_refused();
                fallbacks.push(format!(
                    "registering the order slots refused ({e}): SEND_ZC without fixed buffers"
                ));
            }
        }
        let reg_ring = if plan.reg_ring {
            match super::register_ring_fd(&ring) {
                Ok(i) => Some(i),
                Err(e) => {
                    plan.reg_ring_refused();
                    fallbacks.push(format!(
                        "registering the ring fd refused ({e}; Linux 5.18+): without"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let features = plan.features(offered);
        for f in &fallbacks {
            tracing::warn!("io_uring: {f}");
        }
        tracing::info!(?features, ?plan, "io_uring ready");
        let mut r = Ring {
            ring,
            bufring,
            reg_ring,
            bufs,
            slots,
            slot_busy: [false; SLOTS],
            next_slot: 0,
            send_in_flight: false,
            unsubmitted: 0,
            cqes: VecDeque::with_capacity(CQE_BACKLOG),
            recv_armed: false,
            hung_up: false,
            plan,
            outstanding: 0,
            report: UringReport {
                features,
                fallbacks,
                buffers_in_kernel: provided,
                buffers: provided,
                ..UringReport::default()
            },
        };
        if r.bufring.is_none() && !inline {
            let provide = opcode::ProvideBuffers::new(
                r.bufs.as_mut_ptr(),
                BUF_SIZE as i32,
                BUF_COUNT,
                BGID,
                0,
            )
            .build()
            .user_data(UD_PROVIDE);
            r.push(&provide)?;
        }
        let hup = opcode::PollAdd::new(
            FD_TCP,
            (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32,
        )
        .build()
        .user_data(UD_HUP);
        r.push(&hup)?;
        if !inline {
            r.arm_recv()?;
        }
        r.ring.submit()?;
        Ok(r)
    }
}

/// A provided-buffer ring for group [`BGID`] holding every buffer of `bufs`, registered on
/// `ring`.
fn register_buf_ring(ring: &IoUring, bufs: &[u8]) -> io::Result<super::bufring::BufRing> {
    let mut br = super::bufring::BufRing::new(BUF_COUNT)
        .ok_or_else(|| io::Error::other("buffer ring allocation"))?;
    // SAFETY: the ring's memory lives in `br`, which the Ring keeps until after the
    // io_uring is dropped (its field order); registration needs nothing else.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(br.addr(), BUF_COUNT, BGID, 0)?;
    }
    for bid in 0..BUF_COUNT {
        let off = usize::from(bid) * BUF_SIZE;
        br.add(bid, bufs[off..].as_ptr() as u64, BUF_SIZE as u32);
    }
    br.publish();
    Ok(br)
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
    let bufs = vec![0u8; BUF_SIZE * usize::from(BUF_COUNT)];
    out.push((
        "provided-buffer ring (5.19+)".into(),
        match register_buf_ring(&ring, &bufs) {
            // Unregistered before `br` (its memory) is dropped.
            Ok(_br) => match ring.submitter().unregister_buf_ring(BGID) {
                Ok(()) => "yes".into(),
                Err(e) => format!("registered, not unregistered ({e})"),
            },
            Err(e) => format!("no ({e})"),
        },
    ));
    out.push((
        "registered ring fd (5.18+)".into(),
        match super::register_ring_fd(&ring) {
            Ok(idx) => {
                super::unregister_ring_fd(&ring, idx);
                "yes".into()
            }
            Err(e) => format!("no ({e})"),
        },
    ));
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
