//! The strategy's XDP program.
//!
//! Every frame arriving on the interface is classified; only three kinds go to the AF_XDP
//! socket bound to the frame's RX queue (XSKMAP, key = queue index):
//! (a) UDP to the market-data group and port, (b) TCP from the exchange's address and port
//! to our address, (c) ARP replies addressed to our address (smoltcp resolves the exchange's
//! MAC itself). Everything else is `XDP_PASS`: the kernel keeps ping, ssh and ARP requests.
//! The loader writes a [`SteerConfig`] into `CONFIG[0]`; per-CPU counters per class record
//! redirected, passed and aborted frames. With `diag` set at load time (`--xdp-diag`), the
//! odd frames (too short to classify, no socket on the frame's queue) are also logged with
//! aya-log; the frames the program exists for never log.
//!
//! With `xdp_tx` set (the `xdp-tx` path), a market-data frame is also a decision point: the
//! program counts it (an atomic add: one count across queues and CPUs), parses the line
//! ([`strategy_common::xtx::fast`], or [`strategy_common::xtx::LineParser`] in a bounded
//! loop over a per-CPU copy) and keeps its footprint. When user space's armed state in
//! `XTX` holds a ticket and is current (user space has applied every earlier packet, or
//! no packet it has not applied can change the decision or fire:
//! [`strategy_common::xtx::pending_kinds`]), it applies the trigger rule
//! ([`strategy_common::xtx::decide`]) and, when it fires and wins the ticket
//! (`compare_exchange` to `CLAIMED`: only one sender per arming), hands
//! the line and the order to user space in the mailbox of `XTX` (published with the
//! claimed ticket), rewrites the frame into the order's TCP segment and returns XDP_TX.
//! Any doubt before the claim (not armed or not current, line outside its grammar, the
//! ticket gone) leaves the frame to user space as on the `xdp` path, with the frame's index
//! in a tag in front of it ([`strategy_common::xtx::split_tag`]) so that user space knows
//! where the program's count stands even after a frame was lost on the way.
//! `pass` is a bare XDP_PASS program: on a veth the peer of an XDP_TX sender must run one
//! for the bounced frames to be delivered (the lab attaches it to the exchange's side).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "the atomics the BPF target lacks in core::sync"
)]

use aya_ebpf::bindings::xdp_action;
use core::intrinsics::{atomic_cxchg, atomic_xadd, atomic_xchg, AtomicOrdering};

use aya_ebpf::helpers::generated::{
    bpf_ktime_get_ns, bpf_loop, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;
use strategy_common::xtx::{
    self, LineParser, Shared, BEHIND_MAX, FRAME_LEN, MAX_LINE, TAG_LEN, TAG_MAGIC,
};
use strategy_common::{Class, Counters, SteerConfig, CLASS_COUNT};

mod behind;
mod line;
mod opaque;
use behind::{pending_leave_decision, remember};
use line::copy_line;
use opaque::opaque;

#[map]
static XSKS: XskMap = XskMap::with_max_entries(64, 0);

#[map]
static CONFIG: Array<SteerConfig> = Array::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(CLASS_COUNT, 0);

/// BPF_F_MMAPABLE: user space maps the value and writes the armed state without a syscall.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
static XTX: Array<Shared> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
static XTX_PARSER: PerCpuArray<LineParser> = PerCpuArray::with_max_entries(1, 0);

/// The fast path's state between its phases (a map value: unknown to the verifier).
#[map]
static XTX_FAST: PerCpuArray<xtx::fast::FastState> = PerCpuArray::with_max_entries(1, 0);

#[map]
static XTX_SCRATCH: PerCpuArray<[u8; xtx::fast::SCRATCH]> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[xdp]
pub fn steer(ctx: XdpContext) -> u32 {
    try_steer(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The one bounds-checked read: a `T` at `offset` from the start of the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p lie inside the frame; the
    // unaligned read copes with packet alignment.
    Ok(unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn count(class: Class, redirected: bool, aborted: bool) {
    if let Some(c) = COUNTERS.get_ptr_mut(class as u32) {
        // SAFETY: per-CPU slot of this CPU, valid for the program's run; no other writer.
        unsafe {
            if aborted {
                (*c).aborted += 1;
            } else if redirected {
                (*c).redirected += 1;
            } else {
                (*c).passed += 1;
            }
        }
    }
}

/// Classifies the frame; for market data also returns the UDP header's offset.
fn classify(ctx: &XdpContext, cfg: &SteerConfig) -> Result<(Class, usize), ()> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    if ethertype == ETH_P_ARP {
        // ARP: op at 6, target protocol address at 24 (Ethernet/IPv4 ARP).
        let op = u16::from_be(read::<u16>(ctx, ETH_HLEN + 6)?);
        let target: u32 = read(ctx, ETH_HLEN + 24)?;
        if cfg.steer_arp != 0 && op == 2 && target == cfg.local_addr {
            return Ok((Class::Arp, 0));
        }
        return Ok((Class::Other, 0));
    }
    if ethertype != ETH_P_IP {
        return Ok((Class::Other, 0));
    }
    let vihl: u8 = read(ctx, ETH_HLEN)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Ok((Class::Other, 0));
    }
    let proto: u8 = read(ctx, ETH_HLEN + 9)?;
    let saddr: u32 = read(ctx, ETH_HLEN + 12)?;
    let daddr: u32 = read(ctx, ETH_HLEN + 16)?;
    let l4 = ETH_HLEN + ihl;
    if proto == IPPROTO_UDP && daddr == cfg.md_group {
        let dport: u16 = read(ctx, l4 + 2)?;
        if dport == cfg.md_port {
            if cfg.md_source != 0 && saddr != cfg.md_source {
                return Ok((Class::ForeignMd, 0));
            }
            return Ok((Class::MarketData, l4));
        }
    } else if proto == IPPROTO_TCP && saddr == cfg.exchange_addr && daddr == cfg.local_addr {
        let sport: u16 = read(ctx, l4)?;
        if sport == cfg.exchange_port {
            return Ok((Class::OrderEntry, 0));
        }
    }
    Ok((Class::Other, 0))
}

fn try_steer(ctx: &XdpContext) -> Result<u32, ()> {
    let Some(cfg) = CONFIG.get(0) else {
        return Ok(xdp_action::XDP_PASS);
    };
    let (class, l4) = match classify(ctx, cfg) {
        Ok(c) => c,
        Err(()) => {
            // Too short to classify: not ours; let the kernel judge it.
            count(Class::Other, false, false);
            if cfg.diag != 0 {
                let len = ctx.data_end() - ctx.data();
                warn!(ctx, "frame too short to classify: {} bytes", len);
            }
            return Ok(xdp_action::XDP_PASS);
        }
    };
    if class == Class::Other || class == Class::ForeignMd {
        count(class, false, false);
        return Ok(xdp_action::XDP_PASS);
    }
    if class == Class::MarketData && cfg.xdp_tx != 0 {
        match xdp_tx(ctx, l4) {
            Decision::Sent => return Ok(xdp_action::XDP_TX),
            Decision::Dropped => return Ok(xdp_action::XDP_DROP),
            Decision::ToUser(index) => tag(ctx, index),
            Decision::Untagged => {}
        }
    }
    // SAFETY: rx_queue_index is a plain field of the xdp_md context the kernel passed in.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    match XSKS.redirect(queue, 0) {
        Ok(action) => {
            count(class, true, false);
            Ok(action)
        }
        Err(_) => {
            // No socket on this queue: count and leave the frame to the kernel.
            count(class, false, true);
            if cfg.diag != 0 {
                warn!(
                    ctx,
                    "no AF_XDP socket on queue {} (class {})", queue, class as u32
                );
            }
            Ok(xdp_action::XDP_PASS)
        }
    }
}

/// A compiler barrier: no memory access moves across it (no read moves before the
/// ticket's load; LLVM's BPF back end cannot select `compiler_fence`).
#[inline(always)]
fn barrier() {
    // SAFETY: an empty asm block; without `nomem` the compiler assumes it reads and writes
    // memory, which is the point.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// What the program did with a market-data frame on the `xdp-tx` path.
enum Decision {
    /// The frame is the order's segment: XDP_TX.
    Sent,
    /// Claimed but not sent (the frame could not be reshaped): the line went to user space
    /// in the fire record; the frame is dropped.
    Dropped,
    /// Left to user space, with the frame's index.
    ToUser(u64),
    /// Left to user space without an index (counted `untagged`; user space counts it).
    Untagged,
}

// The BPF target has no `core::sync::atomic` read-modify-write (its spec claims no CAS);
// with `-C target-cpu=v3` LLVM emits BPF_ATOMIC (fetch add, cmpxchg) for the intrinsics.
// Each `p` below points at an aligned u64 inside the `XTX` map value, which lives as long
// as the program; user space touches these words only with atomics.

/// Takes the next index from the count at `p` (atomically: unique across queues and
/// CPUs). A compare-exchange loop: LLVM's BPF back end emits the fetching add as the plain
/// one (no old value) here, so it is not used for this. `None` after a few lost races (the
/// count is then bumped without an index: the frame is left to user space untagged).
#[inline(always)]
fn next_index(p: *mut u64) -> Option<u64> {
    let mut tries = 0;
    while tries < 8 {
        // SAFETY: see above.
        let old = unsafe { core::ptr::read_volatile(p) };
        if claim(p, old, old + 1) {
            return Some(old);
        }
        tries += 1;
    }
    // SAFETY: see above (the plain atomic add, whose old value is not used).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    None
}

/// A load of the ticket that no later read moves before (LLVM's BPF back end selects no
/// acquire load before cpu v4: a volatile load and a compiler barrier; x86 keeps loads in
/// order itself).
#[inline(always)]
fn load_acquire(p: *const u64) -> u64 {
    // SAFETY: see above.
    let v = unsafe { core::ptr::read_volatile(p) };
    barrier();
    v
}

/// Publishes the mailbox's record: stores `ticket` after every store to the record
/// (release: an atomic exchange, the one store BPF orders on every architecture).
#[inline(always)]
fn publish(p: *mut u64, ticket: u64) {
    // SAFETY: `p` is the mailbox's ticket word in the map's one value (aligned, live for
    // the run); user space only reads it.
    unsafe { atomic_xchg::<u64, { AtomicOrdering::Release }>(p, ticket) };
}

/// Compare-exchange; `true` when `p` held `old` and now holds `new`.
#[inline(always)]
fn claim(p: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: see above.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::AcqRel }, { AtomicOrdering::Relaxed }>(p, old, new).1
    }
}

/// Puts the tag (magic, the low 32 bits of `index`) in front of a frame left to user
/// space, in its headroom; counts the frames it could not tag.
#[inline(always)]
fn tag(ctx: &XdpContext, index: u64) {
    // SAFETY: the context the kernel passed; the helper checks the headroom.
    let grown = unsafe { bpf_xdp_adjust_head(ctx.ctx, -(TAG_LEN as i32)) } == 0;
    let (start, end) = (ctx.data(), ctx.data_end());
    if grown && start + TAG_LEN <= end {
        // SAFETY: TAG_LEN bytes at `start` lie inside the frame (checked just above).
        unsafe {
            let p = start as *mut u32;
            core::ptr::write_unaligned(p, TAG_MAGIC.to_le());
            core::ptr::write_unaligned(p.add(1), (index as u32).to_le());
        }
        return;
    }
    if let Some(sh) = XTX.get_ptr_mut(0) {
        // SAFETY: the map's one value; a counter only the program writes.
        unsafe { (*sh).prog.untagged += 1 };
    }
}

/// The `xdp-tx` decision on one market-data frame (UDP header at `l4`).
#[inline(always)]
fn xdp_tx(ctx: &XdpContext, l4: usize) -> Decision {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let t_start = unsafe { bpf_ktime_get_ns() };
    let Some(sh) = XTX.get_ptr_mut(0) else {
        return Decision::ToUser(0);
    };
    // SAFETY: the map's one value, valid for the program's run. The program writes only
    // `prog` (its count atomically; the counters are per-session diagnostics); user space
    // writes `armed` and publishes it with the ticket, read here atomically.
    let shared = unsafe { &mut *sh };
    // Market data on a second RX queue ends the program's decisions for the session: its
    // frames may reach user space out of the program's order (a generation would then not
    // mean "every earlier frame applied"). Set before this frame takes its index, so every
    // later index sees it.
    // SAFETY: rx_queue_index is a plain field of the xdp_md context the kernel passed in.
    let q = u64::from(unsafe { (*ctx.ctx).rx_queue_index }) + 1;
    let first = core::ptr::addr_of_mut!(shared.prog.md_queue);
    // SAFETY: an aligned u64 of the map value; see the atomics above.
    let seen = unsafe { core::ptr::read_volatile(first) };
    if seen != q && !(seen == 0 && claim(first, 0, q)) {
        // SAFETY: as above (re-read: another queue may have won the claim).
        if unsafe { core::ptr::read_volatile(first) } != q {
            // SAFETY: as above; a flag only ever set.
            unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(shared.prog.md_spread), 1) };
        }
    }
    let Some(index) = next_index(core::ptr::addr_of_mut!(shared.prog.md_seen)) else {
        shared.prog.untagged += 1;
        return Decision::Untagged;
    };
    let ticket_word = core::ptr::addr_of!(shared.armed.ticket);
    let ticket = load_acquire(ticket_word);
    // SAFETY: an aligned u64 inside the map value; read after the ticket (acquire).
    let gen = unsafe { core::ptr::read_volatile(&shared.armed.generation) };
    // SAFETY: as above.
    let spread = unsafe { core::ptr::read_volatile(&shared.prog.md_spread) } != 0;
    // Every frame is parsed while user space is not writing the state (the parse reads
    // its layout and decimals): its footprint may let a later frame decide while user
    // space is still behind this one. The ticket read again after the parse says whether
    // the state stayed as it was (user space takes it to 0 before any write and never
    // reuses a ticket; CLAIMED holds until user space has completed the fire).
    let parsed = if ticket != 0 {
        let p = parse_line(ctx, l4, shared);
        barrier();
        if load_acquire(ticket_word) == ticket {
            p
        } else {
            None
        }
    } else {
        None
    };
    remember(index, parsed.as_ref().map(|(l, _)| l));
    let behind = index.wrapping_sub(gen);
    if ticket == 0 || ticket == xtx::CLAIMED || spread || behind >= BEHIND_MAX as u64 {
        shared.prog.not_current += 1;
        return Decision::ToUser(index);
    }
    let Some((line, line_len)) = parsed else {
        return Decision::ToUser(index);
    };
    // The side as a value the verifier knows is 0 or 1: the rule indexes the armed state
    // by it, and the line went through the stack, from which a bool comes back as any
    // byte.
    let line = xtx::XLine {
        bid: opaque(usize::from(line.bid)) & 1 != 0,
        ..line
    };
    let Some(fire) = xtx::decide(&shared.armed, &line) else {
        return Decision::ToUser(index);
    };
    // A fire on a state user space has not brought up to this frame: sent only if the
    // frames in between can neither change it nor fire themselves.
    if behind > 0 && !pending_leave_decision(shared, gen, index, &line) {
        shared.prog.behind_unsafe += 1;
        return Decision::ToUser(index);
    }
    let d = send_order(ctx, shared, ticket, &fire, line_len, (index, t_start));
    if behind > 0 && matches!(d, Decision::Sent) {
        shared.prog.fired_behind += 1;
    }
    d
}

/// The parser's state across bpf_loop callbacks.
#[repr(C)]
struct ParseCtx {
    buf: *const [u8; xtx::fast::SCRATCH],
    p: *mut LineParser,
    n: u32,
}

/// Bytes per bpf_loop round (the call per round costs more than a byte's step).
const STEP_BYTES: usize = 8;

/// One bpf_loop round: feeds bytes `index * STEP_BYTES ..` to the parser; 1 stops the loop.
#[inline(never)]
extern "C" fn parse_step(index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `ParseCtx` given to it; `buf` and `p` point at this
    // CPU's scratch and parser values; every index is masked below MAX_LINE.
    unsafe {
        let c = &mut *(ctx as *mut ParseCtx);
        let base = index as usize * STEP_BYTES;
        let mut j = 0;
        while j < STEP_BYTES {
            let i = base + j;
            if i >= c.n as usize {
                return 1;
            }
            (*c.p).step((*c.buf)[i & (MAX_LINE - 1)]);
            j += 1;
        }
    }
    0
}

/// The fast path's arguments across its bpf_loop rounds.
#[repr(C)]
struct FastCtx {
    buf: *const [u8; xtx::fast::SCRATCH],
    shape: *const xtx::Shape,
    st: *mut xtx::fast::FastState,
}

/// One phase of the fast path per bpf_loop round, its state in a map value: the verifier
/// sees each phase once and the result as unknown (inlined as one piece, its branches
/// multiplied the states of everything after it: 866,028 instructions verified, measured,
/// against the million). 1 stops the loop (a check failed).
#[inline(never)]
extern "C" fn fast_step(index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `FastCtx` given to it; its pointers are this CPU's
    // scratch and state values and the shared map value, all live for the call.
    unsafe {
        let c = &*(ctx as *const FastCtx);
        let st = &mut *c.st;
        xtx::fast::phase(index, &*c.buf, &*c.shape, st);
        i64::from(st.ok == 0)
    }
}

/// The line in `buf` read by the fast path, if it has the learned layout.
#[inline(always)]
fn fast_parse(buf: *mut [u8; xtx::fast::SCRATCH], n: usize, shared: &Shared) -> Option<xtx::XLine> {
    let st = XTX_FAST.get_ptr_mut(0)?;
    // SAFETY: this CPU's state value, valid for the run.
    unsafe {
        *st = xtx::fast::FastState {
            ok: 1,
            len: n as u32,
            amount_decimals: shared.armed.amount_decimals,
            ..xtx::fast::FastState::default()
        };
    }
    let mut fc = FastCtx {
        buf: buf as *const _,
        shape: core::ptr::addr_of!(shared.armed.shape),
        st,
    };
    // SAFETY: `fast_step` has the callback signature bpf_loop expects and `fc` outlives the
    // call (the helper runs the callback synchronously, at most PHASES times).
    unsafe {
        bpf_loop(
            xtx::fast::PHASES,
            fast_step as *mut core::ffi::c_void,
            &mut fc as *mut FastCtx as *mut core::ffi::c_void,
            0,
        )
    };
    // SAFETY: as above.
    unsafe { (*st).line() }
}

/// Copies the line to the per-CPU scratch (where a fire's record takes it from) and parses
/// it; the line and its length without its end of line.
#[inline(always)]
fn parse_line(ctx: &XdpContext, l4: usize, shared: &mut Shared) -> Option<(xtx::XLine, usize)> {
    let udp_len = usize::from(u16::from_be(read::<u16>(ctx, l4 + 4).ok()?));
    let len = udp_len.wrapping_sub(8);
    let Some(buf) = XTX_SCRATCH.get_ptr_mut(0) else {
        return None;
    };
    if len == 0 || len > MAX_LINE {
        shared.prog.unparsed += 1;
        return None;
    }
    // The size in a form older verifiers can bound (Linux 6.1 tracks no relation between
    // `len` and the `len - 1 < 128` that LLVM makes of the check above): hidden from LLVM,
    // masked, plus one: [1, MAX_LINE].
    let len = (opaque(len - 1) & (MAX_LINE - 1)) + 1;
    if !copy_line(ctx, l4 + 8, len, buf) {
        // SAFETY: `buf` is this CPU's scratch value of MAX_LINE bytes and 0 < len <=
        // MAX_LINE; the helper checks the frame's bounds itself.
        let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, (l4 + 8) as u32, buf as *mut _, len as u32) };
        if r != 0 {
            shared.prog.unparsed += 1;
            return None;
        }
    }
    let n = len;
    // The feed's usual layout, a word at a time; any other line byte by byte below.
    if let Some(line) = fast_parse(buf, n, shared) {
        shared.prog.fast_parsed += 1;
        return Some((line, n));
    }
    let Some(parser) = XTX_PARSER.get_ptr_mut(0) else {
        return None;
    };
    // SAFETY: this CPU's parser value, valid for the run.
    unsafe { *parser = LineParser::default() };
    // One byte per callback of bpf_loop, with the parser's state in a map value: the
    // verifier does not know the values in map memory, so every round looks alike to it
    // and it converges at once. (A plain loop, or state on the stack, makes it enumerate
    // the parser's states byte by byte: over its 1M-instruction budget.)
    let mut pc = ParseCtx {
        buf: buf as *const [u8; xtx::fast::SCRATCH],
        p: parser,
        n: n as u32,
    };
    // SAFETY: `parse_step` has the callback signature bpf_loop expects and `pc` outlives
    // the call (the helper runs the callback synchronously, at most MAX_LINE times).
    unsafe {
        bpf_loop(
            (MAX_LINE / STEP_BYTES) as u32,
            parse_step as *mut core::ffi::c_void,
            &mut pc as *mut ParseCtx as *mut core::ffi::c_void,
            0,
        )
    };
    // SAFETY: as above.
    let p = unsafe { *parser };
    let Some(line) = p.finish(shared.armed.amount_decimals) else {
        shared.prog.unparsed += 1;
        return None;
    };
    Some((line, n))
}

/// Hands the line and the order to user space, reshapes the frame into the order segment.
#[inline(always)]
fn send_order(
    ctx: &XdpContext,
    shared: &mut Shared,
    ticket: u64,
    fire: &xtx::Fire,
    line_len: usize,
    (index, t_start): (u64, u64),
) -> Decision {
    // The claim first: from here on this run owns the template's sequence number and the
    // mailbox, and whatever happens the record goes to user space (the line in it must be
    // applied). Nothing is written to the mailbox before: a run that loses the claim (a
    // second RX queue, user space taking the ticket back) leaves it alone.
    if !claim(
        core::ptr::addr_of_mut!(shared.armed.ticket),
        ticket,
        xtx::CLAIMED,
    ) {
        shared.prog.raced += 1;
        return Decision::ToUser(index);
    }
    // Read in place, not copied before the claim: user space rewrites the armed state only
    // after taking its ticket back (a compare-exchange that fails once this run claimed
    // it) or, after a fire, once it has read this run's record, published below. From the
    // claim to the publication the template cannot change.
    let template = &shared.armed.template;
    let r = core::ptr::addr_of_mut!(shared.fire.rec);
    // SAFETY: `r` is the mailbox's record in the map's one value, which this run owns
    // until it publishes the ticket below (user space reads the record only then, and no
    // other run can claim before user space publishes a new ticket, which it does after
    // it has read the record).
    unsafe {
        (*r).md_index = index;
        (*r).t_start_ns = t_start;
        (*r).t_tx_ns = 0;
        (*r).price = fire.price;
        (*r).trigger_id = fire.trigger_id;
        (*r).seq = template.seq();
        (*r).qty = fire.qty;
        (*r).side = u32::from(fire.side);
        (*r).line_len = line_len as u32;
    }
    if let Some(buf) = XTX_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch value (the line copied by parse_line) and the
        // record as above. A word at a time: the record's line starts 8-byte aligned (at
        // 8 + 56 in the 64-aligned mailbox), and so does the scratch value.
        unsafe {
            let src = buf as *const u64;
            let dst = core::ptr::addr_of_mut!((*r).line) as *mut u64;
            let mut i = 0;
            while i < MAX_LINE / 8 {
                *dst.add(i) = *src.add(i);
                i += 1;
            }
        }
    } else {
        // Cannot happen (a per-CPU array of one entry); the record then says no line.
        // SAFETY: as above.
        unsafe { (*r).line_len = 0 };
    }
    let len = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the context the kernel passed; the helper checks the new size.
    let reshaped = unsafe { bpf_xdp_adjust_tail(ctx.ctx, FRAME_LEN as i32 - len) } == 0;
    let (start, end) = (ctx.data(), ctx.data_end());
    if !reshaped || start + FRAME_LEN > end {
        // Not sent: user space applies the line from the record and decides itself.
        shared.prog.reshape_failed += 1;
        publish(core::ptr::addr_of_mut!(shared.fire.ticket), ticket);
        return Decision::Dropped;
    }
    // SAFETY: FRAME_LEN bytes at `start` lie inside the frame (checked just above).
    let frame = unsafe { &mut *(start as *mut [u8; FRAME_LEN]) };
    template.write_frame(fire, frame);
    // SAFETY: no preconditions; `r` as above, before the publication.
    unsafe { (*r).t_tx_ns = bpf_ktime_get_ns() };
    publish(core::ptr::addr_of_mut!(shared.fire.ticket), ticket);
    shared.prog.fired += 1;
    Decision::Sent
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
