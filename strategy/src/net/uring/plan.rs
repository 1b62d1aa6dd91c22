//! The io_uring set-up, resolved once into a plan of enums.
//!
//! What was asked (`strategy run`'s flags, [`Asked`]) and what the kernel offers
//! ([`Offers`], read from the ring's params and the opcode probe) go into [`plan`], a pure
//! function that applies the rules between the options (the inline receive needs the loop
//! to submit, so not under SQPOLL; fixed buffers are for SEND_ZC; SEND_ZC yields to
//! `--uring-send-syscall`...) and returns a [`UringPlan`] with the reason for every option
//! it dropped. The set-up then registers what the plan says; a registration the kernel
//! refuses degrades the plan through one of its `*_refused` methods, again with its reason.
//! The ring's loop matches on the plan; the report's features are derived from it
//! ([`UringPlan::features`]), never used as control state. Unit-tested without a kernel.

use super::setup::{UringFeatures, UringOptions};

/// How the kernel's task work reaches the spinning loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRun {
    /// By interrupt (the default): an IPI, a VM exit in a guest.
    Interrupt,
    /// COOP_TASKRUN + TASKRUN_FLAG: the loop enters when the ring's flag says so.
    Coop,
    /// SINGLE_ISSUER + DEFER_TASKRUN: the loop runs it with GETEVENTS on its own enters.
    Defer,
}

/// Where multishot receives take their buffers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffers {
    /// A provided-buffer ring (IORING_REGISTER_PBUF_RING).
    Ring,
    /// PROVIDE_BUFFERS submissions.
    ProvideOps,
}

/// How market data is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// A multishot RECV woken by the socket.
    Multishot(Buffers),
    /// One MSG_DONTWAIT RECV submitted per turn.
    Inline,
}

/// How a send through the ring copies the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// SEND: the kernel copies.
    Off,
    /// SEND_ZC from the order slots.
    Slots,
    /// SEND_ZC from the order slots registered as a fixed buffer.
    FixedSlots,
}

/// How orders go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// Through the ring.
    Ring(ZeroCopy),
    /// With send(2) on the order socket (the kernel path's sender).
    Syscall,
}

/// What was asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// The ring's options.
    pub opts: UringOptions,
    /// SQPOLL (a kernel thread submits).
    pub sqpoll: bool,
    /// SEND_ZC for orders.
    pub send_zc: bool,
}

/// What the kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offers {
    /// IORING_OP_SEND_ZC.
    pub send_zc: bool,
}

/// The set-up in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringPlan {
    /// Task work.
    pub taskrun: TaskRun,
    /// Market data.
    pub receive: Receive,
    /// Orders.
    pub send: Send,
    /// Enter through the registered ring fd.
    pub reg_ring: bool,
    /// NAPI busy polling registered on the ring, us.
    pub napi_us: Option<u32>,
}

/// The plan for `asked` on a ring set up with `taskrun` on a kernel that offers `offers`,
/// and why each option asked for and not in the plan was dropped.
pub fn plan(asked: &Asked, taskrun: TaskRun, offers: Offers) -> (UringPlan, Vec<String>) {
    let o = &asked.opts;
    let mut why = Vec::new();
    let receive = if o.inline_recv && asked.sqpoll {
        why.push(
            "inline receive: with SQPOLL the kernel thread submits, not the loop's enter: multishot"
                .to_owned(),
        );
        Receive::Multishot(buffers(o))
    } else if o.inline_recv {
        Receive::Inline
    } else {
        Receive::Multishot(buffers(o))
    };
    let send = if o.send_syscall {
        if asked.send_zc {
            why.push("SEND_ZC: orders go out with send(2) (--uring-send-syscall)".to_owned());
        }
        Send::Syscall
    } else if asked.send_zc && !offers.send_zc {
        why.push("SEND_ZC not supported by this kernel: SEND".to_owned());
        Send::Ring(ZeroCopy::Off)
    } else if asked.send_zc {
        Send::Ring(if o.fixed_bufs {
            ZeroCopy::FixedSlots
        } else {
            ZeroCopy::Slots
        })
    } else {
        Send::Ring(ZeroCopy::Off)
    };
    if o.fixed_bufs && send != Send::Ring(ZeroCopy::FixedSlots) {
        why.push("fixed buffers are for SEND_ZC (--send-zc): plain SEND without".to_owned());
    }
    let reg_ring = o.reg_ring && !asked.sqpoll;
    if o.reg_ring && asked.sqpoll {
        why.push("registered ring fd: with SQPOLL the kernel thread submits; without".to_owned());
    }
    (
        UringPlan {
            taskrun,
            receive,
            send,
            reg_ring,
            napi_us: o.napi_busy_poll_us,
        },
        why,
    )
}

fn buffers(o: &UringOptions) -> Buffers {
    if o.provide_ops {
        Buffers::ProvideOps
    } else {
        Buffers::Ring
    }
}

impl UringPlan {
    /// The provided-buffer ring was refused: PROVIDE_BUFFERS instead.
    pub fn buf_ring_refused(&mut self) {
        if self.receive == Receive::Multishot(Buffers::Ring) {
            self.receive = Receive::Multishot(Buffers::ProvideOps);
        }
    }

    /// Registering the order slots was refused: SEND_ZC from plain slots.
    pub fn fixed_slots_refused(&mut self) {
        if self.send == Send::Ring(ZeroCopy::FixedSlots) {
            self.send = Send::Ring(ZeroCopy::Slots);
        }
    }

    /// Registering the ring fd was refused.
    pub fn reg_ring_refused(&mut self) {
        self.reg_ring = false;
    }

    /// NAPI registration was refused.
    pub fn napi_refused(&mut self) {
        self.napi_us = None;
    }

    /// Receive inline.
    pub fn inline(&self) -> bool {
        self.receive == Receive::Inline
    }

    /// Orders go out with send(2).
    pub fn send_syscall(&self) -> bool {
        self.send == Send::Syscall
    }

    /// Orders go out with SEND_ZC.
    pub fn send_zc(&self) -> bool {
        matches!(
            self.send,
            Send::Ring(ZeroCopy::Slots | ZeroCopy::FixedSlots)
        )
    }

    /// The report's features: what the kernel offers (`base`) with what this plan uses.
    pub fn features(&self, base: UringFeatures) -> UringFeatures {
        UringFeatures {
            defer_taskrun: self.taskrun == TaskRun::Defer,
            coop_taskrun: self.taskrun == TaskRun::Coop,
            napi_busy_poll_us: self.napi_us,
            buf_ring: self.receive == Receive::Multishot(Buffers::Ring),
            fixed_bufs: self.send == Send::Ring(ZeroCopy::FixedSlots),
            reg_ring: self.reg_ring,
            inline_recv: self.inline(),
            send_syscall: self.send_syscall(),
            // In use, not the offer (the report's features are what ran).
            send_zc: self.send_zc(),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(f: impl FnOnce(&mut Asked)) -> Asked {
        let mut a = Asked::default();
        f(&mut a);
        a
    }

    const ZC: Offers = Offers { send_zc: true };

    #[test]
    fn the_default_is_multishot_over_a_buffer_ring_and_send() {
        let (p, why) = plan(&Asked::default(), TaskRun::Interrupt, ZC);
        assert_eq!(p.receive, Receive::Multishot(Buffers::Ring));
        assert_eq!(p.send, Send::Ring(ZeroCopy::Off));
        assert!(!p.reg_ring && p.napi_us.is_none() && why.is_empty());
        let f = p.features(UringFeatures::default());
        assert!(f.buf_ring && !f.inline_recv && !f.send_syscall && !f.fixed_bufs);
    }

    #[test]
    fn inline_receive_needs_the_loop_to_submit() {
        let a = asked(|a| a.opts.inline_recv = true);
        assert_eq!(plan(&a, TaskRun::Defer, ZC).0.receive, Receive::Inline);
        let a = asked(|a| {
            a.opts.inline_recv = true;
            a.sqpoll = true;
        });
        let (p, why) = plan(&a, TaskRun::Interrupt, ZC);
        assert_eq!(p.receive, Receive::Multishot(Buffers::Ring));
        assert!(why[0].contains("SQPOLL"), "{why:?}");
    }

    #[test]
    fn zero_copy_follows_what_the_kernel_offers_and_the_send_syscall_wins() {
        let zc = asked(|a| a.send_zc = true);
        assert_eq!(
            plan(&zc, TaskRun::Interrupt, ZC).0.send,
            Send::Ring(ZeroCopy::Slots)
        );
        let (p, why) = plan(&zc, TaskRun::Interrupt, Offers { send_zc: false });
        assert_eq!(p.send, Send::Ring(ZeroCopy::Off));
        assert!(why[0].contains("not supported"));
        let fixed = asked(|a| {
            a.send_zc = true;
            a.opts.fixed_bufs = true;
        });
        let (mut p, why) = plan(&fixed, TaskRun::Interrupt, ZC);
        assert_eq!((p.send, why.len()), (Send::Ring(ZeroCopy::FixedSlots), 0));
        p.fixed_slots_refused();
        assert_eq!(p.send, Send::Ring(ZeroCopy::Slots));
        let (p, why) = plan(&asked(|a| a.opts.fixed_bufs = true), TaskRun::Interrupt, ZC);
        assert_eq!(p.send, Send::Ring(ZeroCopy::Off));
        assert!(why[0].contains("fixed buffers are for SEND_ZC"));
        let sys = asked(|a| {
            a.send_zc = true;
            a.opts.send_syscall = true;
        });
        let (p, why) = plan(&sys, TaskRun::Defer, ZC);
        assert!(p.send_syscall() && !p.send_zc());
        assert!(why[0].contains("send(2)"));
    }

    #[test]
    fn refusals_degrade_the_plan_and_the_report_follows() {
        let a = asked(|a| {
            a.opts.reg_ring = true;
            a.opts.napi_busy_poll_us = Some(50);
        });
        let (mut p, _) = plan(&a, TaskRun::Defer, ZC);
        assert!(p.reg_ring && p.napi_us == Some(50));
        p.buf_ring_refused();
        p.reg_ring_refused();
        p.napi_refused();
        assert_eq!(p.receive, Receive::Multishot(Buffers::ProvideOps));
        let f = p.features(UringFeatures {
            send_zc: true,
            ..UringFeatures::default()
        });
        assert!(f.defer_taskrun && !f.coop_taskrun && !f.buf_ring && !f.reg_ring);
        assert!(
            f.napi_busy_poll_us.is_none() && f.send_zc == p.send_zc(),
            "SEND_ZC reported as used"
        );
        let (p, why) = plan(
            &asked(|a| {
                a.opts.reg_ring = true;
                a.sqpoll = true;
            }),
            TaskRun::Interrupt,
            ZC,
        );
        assert!(!p.reg_ring && why[0].contains("SQPOLL"));
        let (p, _) = plan(&asked(|a| a.opts.provide_ops = true), TaskRun::Coop, ZC);
        assert_eq!(p.receive, Receive::Multishot(Buffers::ProvideOps));
        assert!(p.features(UringFeatures::default()).coop_taskrun);
    }
}
