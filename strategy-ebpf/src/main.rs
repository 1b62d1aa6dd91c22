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
//! program counts it, and when user space's armed state in `XTX` is current (it has applied
//! every earlier packet), parses the line ([`strategy_common::xtx::LineParser`], bounded
//! loop over a per-CPU copy), applies the trigger rule ([`strategy_common::xtx::decide`])
//! and, when it fires, hands the line and the order to user space through the `XTX_RING`
//! ring buffer, rewrites the frame into the order's TCP segment and returns XDP_TX. Any
//! doubt (not current, line outside its grammar, ring full, reshaping failed, user space
//! rewrote the state meanwhile) leaves the frame to user space as on the `xdp` path.
//! `pass` is a bare XDP_PASS program: on a veth the peer of an XDP_TX sender must run one
//! for the bounced frames to be delivered (the lab attaches it to the exchange's side).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::generated::{
    bpf_ktime_get_ns, bpf_loop, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, PerCpuArray, RingBuf, XskMap};
use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;
use strategy_common::xtx::{self, FireRecord, LineParser, Shared, Template, FRAME_LEN, MAX_LINE};
use strategy_common::{Class, Counters, SteerConfig, CLASS_COUNT};

#[map]
static XSKS: XskMap = XskMap::with_max_entries(64, 0);

#[map]
static CONFIG: Array<SteerConfig> = Array::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(CLASS_COUNT, 0);

/// BPF_F_MMAPABLE: user space maps the value and writes the armed state without a syscall.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Submit or discard a ring-buffer record without waking a reader: user space busy-polls
/// the ring, and the wake-up is an irq_work (a self-IPI: several microseconds in a VM,
/// measured) on the order's path.
const BPF_RB_NO_WAKEUP: u64 = 1;

#[map]
static XTX: Array<Shared> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
static XTX_RING: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[map]
static XTX_TEMPLATE: PerCpuArray<Template> = PerCpuArray::with_max_entries(1, 0);

#[map]
static XTX_PARSER: PerCpuArray<LineParser> = PerCpuArray::with_max_entries(1, 0);

#[map]
static XTX_SCRATCH: PerCpuArray<[u8; MAX_LINE]> = PerCpuArray::with_max_entries(1, 0);

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
    if class == Class::MarketData && cfg.xdp_tx != 0 && xdp_tx(ctx, l4) {
        return Ok(xdp_action::XDP_TX);
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

/// A compiler barrier: no memory access moves across it (the sequence lock's reads must
/// stay between its two reads of the lock; x86 keeps loads in order itself, and
/// LLVM's BPF back end cannot select `compiler_fence`).
#[inline(always)]
fn barrier() {
    // SAFETY: an empty asm block; without `nomem` the compiler assumes it reads and writes
    // memory, which is the point.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) }
}

/// `v`, with everything LLVM knows about its range forgotten (so that a mask it could
/// prove redundant stays in the program for the verifier): a volatile store and load of a
/// stack slot.
#[inline(always)]
fn opaque(v: usize) -> usize {
    let mut slot = v;
    // SAFETY: a local variable, read and written in place.
    unsafe {
        core::ptr::write_volatile(&mut slot, v);
        core::ptr::read_volatile(&slot)
    }
}

/// The `xdp-tx` decision on one market-data frame (UDP header at `l4`); `true` when the
/// frame has become the order's segment and must go out with XDP_TX.
#[inline(always)]
fn xdp_tx(ctx: &XdpContext, l4: usize) -> bool {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let t_start = unsafe { bpf_ktime_get_ns() };
    let Some(sh) = XTX.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the map's one value, valid for the program's run. The program is the only
    // writer of `prog` (one RX queue: one NAPI context at a time); user space writes only
    // `armed`, under the sequence lock `lock`, read here with volatile loads.
    let shared = unsafe { &mut *sh };
    let index = shared.prog.md_seen;
    shared.prog.md_seen = index + 1;
    // SAFETY: aligned u64s inside the map value.
    let (lock, gen) = unsafe {
        let lock = core::ptr::read_volatile(&shared.armed.lock);
        barrier();
        (lock, core::ptr::read_volatile(&shared.armed.generation))
    };
    if lock & 1 != 0 || gen != index {
        shared.prog.not_current += 1;
        return false;
    }
    barrier();
    let Some((fire, line_len)) = parse_and_decide(ctx, l4, shared) else {
        return false;
    };
    let Some(template) = XTX_TEMPLATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: both are valid Template values (the map value and this CPU's scratch copy),
    // copied word by word with volatile loads (not merged, not moved across the barrier);
    // a torn copy is caught by the second read of the lock below.
    let template = unsafe {
        let src = core::ptr::addr_of!(shared.armed.template) as *const u32;
        let dst = template as *mut u32;
        let mut i = 0;
        while i < core::mem::size_of::<Template>() / 4 {
            *dst.add(i) = core::ptr::read_volatile(src.add(i));
            i += 1;
        }
        &*template
    };
    barrier();
    // SAFETY: as above.
    let lock2 = unsafe { core::ptr::read_volatile(&shared.armed.lock) };
    if lock2 != lock {
        shared.prog.raced += 1;
        return false;
    }
    send_order(ctx, shared, template, &fire, line_len, (index, t_start))
}

/// The parser's state across bpf_loop callbacks.
#[repr(C)]
struct ParseCtx {
    buf: *const [u8; MAX_LINE],
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

/// Copies the line to the per-CPU scratch, parses it and applies the rule; the order and
/// the line's length without its end of line.
#[inline(always)]
fn parse_and_decide(
    ctx: &XdpContext,
    l4: usize,
    shared: &mut Shared,
) -> Option<(xtx::Fire, usize)> {
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
    // SAFETY: `buf` is this CPU's scratch value of MAX_LINE bytes and 0 < len <= MAX_LINE;
    // the helper checks the frame's bounds itself.
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, (l4 + 8) as u32, buf as *mut _, len as u32) };
    if r != 0 {
        shared.prog.unparsed += 1;
        return None;
    }
    let n = len;
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
        buf: buf as *const [u8; MAX_LINE],
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
    xtx::decide(&shared.armed, &line).map(|f| (f, n))
}

/// Hands the line and the order to user space, reshapes the frame into the order segment.
#[inline(always)]
fn send_order(
    ctx: &XdpContext,
    shared: &mut Shared,
    template: &Template,
    fire: &xtx::Fire,
    line_len: usize,
    (index, t_start): (u64, u64),
) -> bool {
    let Some(mut rec) = XTX_RING.reserve::<FireRecord>(0) else {
        shared.prog.ringbuf_full += 1;
        return false;
    };
    let Some(buf) = XTX_SCRATCH.get_ptr_mut(0) else {
        rec.discard(BPF_RB_NO_WAKEUP);
        return false;
    };
    // SAFETY: this CPU's scratch value (the line copied by parse_and_decide).
    let buf = unsafe { &*buf };
    let r = rec.as_mut_ptr();
    // SAFETY: `r` points at the reserved record (size_of::<FireRecord>() bytes, owned by
    // this entry until submit or discard); every field is written before the submit.
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
        let mut i = 0;
        while i < MAX_LINE {
            (*r).line[i] = buf[i];
            i += 1;
        }
    }
    let len = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the context the kernel passed; the helper checks the new size.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, FRAME_LEN as i32 - len) } != 0 {
        shared.prog.reshape_failed += 1;
        rec.discard(BPF_RB_NO_WAKEUP);
        return false;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + FRAME_LEN > end {
        // Cannot happen after a successful reshape; the frame is no longer the line.
        shared.prog.reshape_failed += 1;
        rec.discard(BPF_RB_NO_WAKEUP);
        return false;
    }
    // SAFETY: FRAME_LEN bytes at `start` lie inside the frame (checked just above).
    let frame = unsafe { &mut *(start as *mut [u8; FRAME_LEN]) };
    template.write_frame(fire, frame);
    // SAFETY: no preconditions; `r` as above, before the submit.
    unsafe { (*r).t_tx_ns = bpf_ktime_get_ns() };
    rec.submit(BPF_RB_NO_WAKEUP);
    shared.prog.fired += 1;
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
