//! The tracing programs of `lab --trace`: stamps each trigger's market-data packet and each
//! order's TCP segment at the kernel's network tracepoints, in both namespaces.
//!
//! Raw tracepoints (no BTF needed to attach; the arguments are the tracepoint's own
//! pointers): `net_dev_start_xmit` (a driver transmit), `netif_rx`,
//! `napi_gro_receive_entry`, `netif_receive_skb` (the receives: the first one to see a packet
//! wins), `tcp_probe` (TCP's receive of an established connection's segment). Each program
//! keeps to the two interfaces of the run ([`TraceConfig`]: namespace inode and interface
//! index), reads the headers from the linear part of the packet and
//! - for UDP to the market-data port: reads the trigger id (the line's fourth field) and,
//!   if the loader listed it in `WANTED`, stamps its slot in `MD_TIMES` (first stamp wins);
//! - for TCP to the order port with a payload: stamps `SEGS[(point, len, seq)]` (first wins)
//!   within 10 ms of a listed trigger's packet, and
//!   keeps the stream's first sequence number in `ISN` (the ack number of the exchange's
//!   last SYN-ACK).
//!
//! Kernel fields are read with `bpf_probe_read_kernel` at offsets the loader took from BTF;
//! any read that fails leaves the packet unstamped. No program changes a packet or a
//! decision: they only observe. Nothing here is loaded unless `--trace` is asked for.
#![no_std]
#![no_main]

mod opaque;
use opaque::opaque;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use aya_ebpf::macros::{map, raw_tracepoint};
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use aya_ebpf::programs::RawTracePointContext;
use strategy_common::trace::{
    counter, md_point, seg_key, seg_point, TraceConfig, MAX_SEGMENTS, MAX_TRIGGERS, WINDOW,
};

#[map]
static TRACE_CONFIG: Array<TraceConfig> = Array::with_max_entries(1, 0);

/// Trigger id -> slot (filled by the loader with the oracle's ids).
#[map]
static WANTED: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TRIGGERS, 0);

/// `slot * md_point::COUNT + point` -> stamp (0: none yet).
#[map]
static MD_TIMES: Array<u64> = Array::with_max_entries(MAX_TRIGGERS * md_point::COUNT, 0);

/// `seg_key(point, len, seq)` -> stamp.
#[map]
static SEGS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_SEGMENTS, 0);

/// `[0]`: bit 32 set and the stream's first sequence number (0: no handshake seen).
#[map]
static ISN: Array<u64> = Array::with_max_entries(1, 0);

/// A receive on the exchange's side whose headers are not yet in the packet's linear part
/// (AF_PACKET's TX ring hands the kernel everything past the Ethernet header as page
/// fragments): the skb's address -> [first receive, netif_receive_skb] stamps, resolved
/// to its sequence number at `tcp_probe`, by which time IP and TCP have pulled the headers.
#[map]
static PENDING: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(1024, 0);

/// `[0]`: when a listed trigger's packet was last stamped (segments are stamped only within
/// `TraceConfig::window_us` of it).
#[map]
static LAST_TRIGGER: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU scratch: the window of an `sk_buff` ([0]) and of a `net_device` ([1]), each read
/// at once.
#[map]
static SCRATCH: PerCpuArray<[u8; WINDOW as usize]> = PerCpuArray::with_max_entries(2, 0);

/// Per-CPU copy of a packet's first `BUF` bytes. A map value, not the stack: the eBPF build
/// allows misaligned access (for the XDP program's word loads), and the verifier refuses a
/// misaligned or variable-offset read of the stack where it takes one of a map value.
/// [0] for the device points, [1] for `tcp_probe` (which may run with softirqs enabled, in
/// the backlog of a socket's owner, and be interrupted by a device point).
#[map]
static PACKET: PerCpuArray<[u8; BUF]> = PerCpuArray::with_max_entries(2, 0);

#[map]
static TRACE_COUNTERS: Array<u64> = Array::with_max_entries(counter::COUNT, 0);

const BUF: usize = 128;
const ETH_HLEN: usize = 14;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `BPF_NOEXIST`: insert only (the first stamp of a segment wins).
const NOEXIST: u64 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Exchange,
    Strategy,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Egress,
    Ingress,
    /// `netif_receive_skb`: an ingress that also stamps its own segment point.
    Receive,
}

#[raw_tracepoint(tracepoint = "net_dev_start_xmit")]
pub fn trace_xmit(ctx: RawTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let _ = on_skb(skb, Dir::Egress);
    0
}

#[raw_tracepoint(tracepoint = "netif_rx")]
pub fn trace_netif_rx(ctx: RawTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let _ = on_skb(skb, Dir::Ingress);
    0
}

#[raw_tracepoint(tracepoint = "napi_gro_receive_entry")]
pub fn trace_gro(ctx: RawTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let _ = on_skb(skb, Dir::Ingress);
    0
}

#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn trace_receive(ctx: RawTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let _ = on_skb(skb, Dir::Receive);
    0
}

#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn trace_tcp(ctx: RawTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let _ = on_tcp(sk, skb);
    0
}

/// A kernel value at `base + off` (None when the read fails).
#[inline(always)]
fn kread<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-handling path: a bad
    // address fails the call (None here), it never faults the program.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

/// Byte `i` of the packet's copy. The index is made opaque and masked: LLVM can neither
/// drop the mask (the verifier then bounds every read by it, whatever form LLVM gives the
/// loops' checks) nor merge neighbouring bytes into one wider load.
#[inline(always)]
fn byte(buf: &[u8; BUF], i: usize) -> Option<u8> {
    if i >= BUF {
        return None;
    }
    Some(buf[opaque(i) & (BUF - 1)])
}

#[inline(always)]
fn be16(buf: &[u8; BUF], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([byte(buf, i)?, byte(buf, i + 1)?]))
}

#[inline(always)]
fn be32(buf: &[u8; BUF], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        byte(buf, i)?,
        byte(buf, i + 1)?,
        byte(buf, i + 2)?,
        byte(buf, i + 3)?,
    ]))
}

#[inline(always)]
fn bump(i: u32) {
    if let Some(c) = TRACE_COUNTERS.get_ptr_mut(i) {
        // SAFETY: a slot of an array map, valid while the program runs; a lost increment
        // between CPUs only makes a diagnostic counter low.
        unsafe { *c += 1 };
    }
}

/// The two namespaces' `net` pointers once seen ([0] the exchange's, [1] the strategy's; 0:
/// not yet): after the first packet a namespace is recognised by its pointer, without
/// reading its inode again (a read of a cold line costs about 100 ns here).
#[map]
static NETS: Array<u64> = Array::with_max_entries(2, 0);

/// Which of the run's namespaces `net` is (0 the exchange's, 1 the strategy's).
#[inline(always)]
fn which_ns(cfg: &TraceConfig, net: *const u8) -> Option<u32> {
    for i in 0..2u32 {
        if let Some(&known) = NETS.get(i) {
            if known == net as u64 {
                return Some(i);
            }
        }
    }
    let inum = kread::<u32>(net, cfg.net_inum)?;
    let i = if inum == cfg.exchange_ns {
        0
    } else if inum == cfg.strategy_ns {
        1
    } else {
        return None;
    };
    if let Some(slot) = NETS.get_ptr_mut(i) {
        // SAFETY: a slot of an array map; every writer writes the same pointer (one
        // namespace has one `struct net` while it lives, and the run's outlive the run).
        unsafe { *slot = net as u64 };
    }
    Some(i)
}

/// A `u32` or `u64` field at absolute offset `off` of a structure whose window starting at
/// `base` was read into `win`.
#[inline(always)]
fn field32(win: &[u8; WINDOW as usize], base: u32, off: u32) -> Option<u32> {
    let i = off.checked_sub(base)? as usize;
    let b = win.get(i..i + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[inline(always)]
fn field64(win: &[u8; WINDOW as usize], base: u32, off: u32) -> Option<u64> {
    let i = off.checked_sub(base)? as usize;
    let b = win.get(i..i + 8)?;
    Some(u64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

/// Reads `WINDOW` bytes at `base + off` into scratch slot `slot`.
#[inline(always)]
fn window(slot: u32, base: *const u8, off: u32) -> Option<&'static [u8; WINDOW as usize]> {
    let w = SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: this CPU's scratch slot (the program is not re-entered on a CPU while it
    // runs); bpf_probe_read_kernel_buf fails cleanly on a bad address.
    unsafe {
        bpf_probe_read_kernel_buf(base.wrapping_add(off as usize), &mut *w).ok()?;
        Some(&*w)
    }
}

/// Reads the first `n` (at most `BUF`) bytes at `data` into this CPU's `PACKET` copy `slot`.
#[inline(always)]
fn packet(slot: u32, data: *const u8, n: usize) -> Option<&'static [u8; BUF]> {
    let p = PACKET.get_ptr_mut(slot)?;
    // SAFETY: this CPU's copy (as `window`); bpf_probe_read_kernel_buf fails cleanly on a bad
    // address (None here), it never faults the program.
    unsafe {
        bpf_probe_read_kernel_buf(data, (*p).get_mut(..n)?).ok()?;
        Some(&*p)
    }
}

fn on_skb(skb: *const u8, dir: Dir) -> Option<()> {
    // SAFETY: a helper without arguments or side effects. Taken first: the stamp is the
    // tracepoint's moment, not the end of the reads below.
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = TRACE_CONFIG.get(0)?;
    let sw = window(0, skb, cfg.skb_base)?;
    let dev = field64(sw, cfg.skb_base, cfg.skb_dev)? as *const u8;
    let data = field64(sw, cfg.skb_base, cfg.skb_data)? as *const u8;
    let len = field32(sw, cfg.skb_base, cfg.skb_len)?;
    let data_len = field32(sw, cfg.skb_base, cfg.skb_data_len)?;
    let dw = window(1, dev, cfg.dev_base)?;
    let ifindex = field32(dw, cfg.dev_base, cfg.dev_ifindex)?;
    if ifindex != cfg.exchange_ifindex && ifindex != cfg.strategy_ifindex {
        return None;
    }
    let net = field64(dw, cfg.dev_base, cfg.dev_net)? as *const u8;
    let ns = which_ns(cfg, net)?;
    let late = dir == Dir::Receive;
    let dir = if late { Dir::Ingress } else { dir };
    let side = if ns == 0 && ifindex == cfg.exchange_ifindex {
        Side::Exchange
    } else if ns == 1 && ifindex == cfg.strategy_ifindex {
        Side::Strategy
    } else {
        return None;
    };
    let linear = len.checked_sub(data_len)? as usize;
    if side == Side::Exchange && dir == Dir::Ingress && linear < 40 {
        pend(skb as u64, late, now);
        return None;
    }
    // Bytes past the linear part may be read but are never parsed (every parse below is
    // bounded by `linear`).
    let buf = packet(0, data, BUF)?;
    // At a driver transmit the data starts at the Ethernet header; at a receive, after
    // eth_type_trans, at the IP header.
    let ip = if dir == Dir::Egress {
        if be16(buf, 12)? != 0x0800 {
            return None;
        }
        ETH_HLEN
    } else {
        0
    };
    let vihl = byte(buf, ip)?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = be16(buf, ip + 2)? as usize;
    let proto = byte(buf, ip + 9)?;
    let l4 = ip + ihl;
    if l4 + 20 > linear.min(BUF) {
        return None;
    }
    match (proto, side, dir) {
        (IPPROTO_UDP, Side::Exchange, Dir::Egress)
        | (IPPROTO_UDP, Side::Strategy, Dir::Ingress) => {
            // A packet's first receive point stamps it; netif_receive_skb after netif_rx
            // or GRO adds nothing for market data (and the parse is the costly part).
            if late || be16(buf, l4 + 2)? != cfg.md_port {
                return None;
            }
            let id = trigger_id(buf, l4 + 8, linear.min(BUF))?;
            // SAFETY: the value is copied out at once; the loader never removes entries
            // while the programs run.
            let slot = unsafe { *WANTED.get(&id)? };
            let point = if dir == Dir::Egress {
                md_point::XMIT
            } else {
                md_point::RX
            };
            stamp_md(slot, point, now);
            Some(())
        }
        (IPPROTO_TCP, Side::Exchange, Dir::Egress) => {
            // The exchange's SYN-ACK acknowledges the strategy's SYN: its ack number is
            // the stream's offset 0. (The strategy's SYN itself may not be readable here:
            // see PENDING.) The last one wins: an earlier attempt is not the session.
            if be16(buf, l4)? != cfg.order_port || byte(buf, l4 + 13)? & 0x12 != 0x12 {
                return None;
            }
            let ack = be32(buf, l4 + 8)?;
            if let Some(isn) = ISN.get_ptr_mut(0) {
                // SAFETY: the array's one slot; handshakes of one run are never concurrent.
                unsafe { *isn = (1 << 32) | ack as u64 };
            }
            None
        }
        (IPPROTO_TCP, Side::Strategy, Dir::Egress)
        | (IPPROTO_TCP, Side::Exchange, Dir::Ingress) => {
            if be16(buf, l4 + 2)? != cfg.order_port {
                return None;
            }
            let seq = be32(buf, l4 + 4)?;
            let doff = ((byte(buf, l4 + 12)? >> 4) as usize) * 4;
            if byte(buf, l4 + 13)? & 0x02 != 0 {
                return None;
            }
            let payload = total.checked_sub(ihl + doff)?;
            if payload == 0 {
                return None;
            }
            let point = if dir == Dir::Egress {
                seg_point::XMIT
            } else {
                seg_point::RX
            };
            let len = u16::try_from(payload).unwrap_or(u16::MAX);
            if !in_window(cfg, now) {
                return None;
            }
            stamp_seg(point, len, seq, now);
            if late {
                stamp_seg(seg_point::RECEIVE, len, seq, now);
            }
            Some(())
        }
        _ => None,
    }
}

/// `tcp_probe(sk, skb)`: the exchange's TCP receives a segment on its session (the data
/// starts at the TCP header here).
fn on_tcp(sk: *const u8, skb: *const u8) -> Option<()> {
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = TRACE_CONFIG.get(0)?;
    let net: *const u8 = kread(sk, cfg.sk_net)?;
    if which_ns(cfg, net)? != 0 {
        return None;
    }
    let sw = window(0, skb, cfg.skb_base)?;
    let data = field64(sw, cfg.skb_base, cfg.skb_data)? as *const u8;
    let len = field32(sw, cfg.skb_base, cfg.skb_len)?;
    let buf = packet(1, data, 20)?;
    if be16(buf, 2)? != cfg.order_port {
        return None;
    }
    let doff = ((byte(buf, 12)? >> 4) as u32) * 4;
    if len <= doff {
        return None;
    }
    let seq = be32(buf, 4)?;
    // SAFETY: the value is copied out at once.
    let pending = unsafe { PENDING.get(&(skb as u64)) }.copied();
    if pending.is_some() {
        let _ = PENDING.remove(&(skb as u64));
    }
    if !in_window(cfg, now) {
        return None;
    }
    let plen = u16::try_from(len - doff).unwrap_or(u16::MAX);
    stamp_seg(seg_point::TCP, plen, seq, now);
    if let Some(p) = pending {
        if p[0] != 0 {
            stamp_seg(seg_point::RX, plen, seq, p[0]);
        }
        if p[1] != 0 {
            stamp_seg(seg_point::RECEIVE, plen, seq, p[1]);
        }
    }
    Some(())
}

/// Records a receive of an skb whose headers cannot be read yet: the first receive point
/// starts its entry (an address reused by a new packet starts over), `netif_receive_skb`
/// completes it.
#[inline(always)]
fn pend(skb: u64, late: bool, now: u64) {
    let entry = if late {
        // SAFETY: the value is copied out at once.
        match unsafe { PENDING.get(&skb) }.copied() {
            Some([rx, 0]) => [rx, now],
            Some(_) | None => [now, now],
        }
    } else {
        [now, 0]
    };
    let _ = PENDING.insert(&skb, &entry, 0);
}

/// Within the window after the last listed trigger's packet?
#[inline(always)]
fn in_window(cfg: &TraceConfig, now: u64) -> bool {
    match LAST_TRIGGER.get(0) {
        Some(&last) => last != 0 && now.wrapping_sub(last) < cfg.window_us as u64 * 1_000,
        None => false,
    }
}

#[inline(always)]
fn stamp_md(slot: u32, point: u32, now: u64) {
    match MD_TIMES.get_ptr_mut(slot * md_point::COUNT + point) {
        Some(t) => {
            // SAFETY: a slot of an array map; a packet is stamped once per point (first
            // wins), and a trigger's packet passes each point once.
            unsafe {
                if *t == 0 {
                    *t = now;
                    bump(counter::MD);
                }
                if let Some(last) = LAST_TRIGGER.get_ptr_mut(0) {
                    *last = now;
                }
            }
        }
        None => bump(counter::LOST),
    }
}

#[inline(always)]
fn stamp_seg(point: u64, len: u16, seq: u32, now: u64) {
    match SEGS.insert(&seg_key(point, len, seq), &now, NOEXIST) {
        Ok(()) => bump(counter::SEG),
        // -EEXIST (a retransmission, or the same segment at a second receive point) is
        // expected; anything else is a full map.
        Err(e) if e == -17 => {}
        Err(_) => bump(counter::LOST),
    }
}

/// Digits of a field from `i` up to the comma after it (at most 20), as a number, with the
/// comma's index.
#[inline(always)]
fn digits_at(buf: &[u8; BUF], mut i: usize, end: usize) -> Option<(u64, usize)> {
    let mut id = 0u64;
    let mut digits = 0;
    while digits < 20 {
        if i >= end {
            return None;
        }
        let c = byte(buf, i)?;
        if c == b',' {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        id = id.wrapping_mul(10).wrapping_add((c - b'0') as u64);
        i += 1;
        digits += 1;
    }
    (digits > 0).then_some((id, i))
}

/// The trigger id of a market-data line starting at `start`: its fourth field
/// (`local_timestamp`), digits only. None for anything else.
#[inline(always)]
fn trigger_id(buf: &[u8; BUF], start: usize, end: usize) -> Option<u64> {
    let mut commas = 0u32;
    let mut i = start;
    let mut n = 0;
    while n < 80 && commas < 3 {
        if i >= end {
            return None;
        }
        if byte(buf, i)? == b',' {
            commas += 1;
        }
        i += 1;
        n += 1;
    }
    if commas < 3 {
        return None;
    }
    let (id, _) = digits_at(buf, i, end)?;
    Some(id)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
