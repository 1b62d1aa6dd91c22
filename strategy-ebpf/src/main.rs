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
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;
use strategy_common::{Class, Counters, SteerConfig, CLASS_COUNT};

#[map]
static XSKS: XskMap = XskMap::with_max_entries(64, 0);

#[map]
static CONFIG: Array<SteerConfig> = Array::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(CLASS_COUNT, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[xdp]
pub fn steer(ctx: XdpContext) -> u32 {
    try_steer(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
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

fn classify(ctx: &XdpContext, cfg: &SteerConfig) -> Result<Class, ()> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    if ethertype == ETH_P_ARP {
        // ARP: op at 6, target protocol address at 24 (Ethernet/IPv4 ARP).
        let op = u16::from_be(read::<u16>(ctx, ETH_HLEN + 6)?);
        let target: u32 = read(ctx, ETH_HLEN + 24)?;
        if cfg.steer_arp != 0 && op == 2 && target == cfg.local_addr {
            return Ok(Class::Arp);
        }
        return Ok(Class::Other);
    }
    if ethertype != ETH_P_IP {
        return Ok(Class::Other);
    }
    let vihl: u8 = read(ctx, ETH_HLEN)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Ok(Class::Other);
    }
    let proto: u8 = read(ctx, ETH_HLEN + 9)?;
    let saddr: u32 = read(ctx, ETH_HLEN + 12)?;
    let daddr: u32 = read(ctx, ETH_HLEN + 16)?;
    let l4 = ETH_HLEN + ihl;
    if proto == IPPROTO_UDP && daddr == cfg.md_group {
        let dport: u16 = read(ctx, l4 + 2)?;
        if dport == cfg.md_port {
            return Ok(Class::MarketData);
        }
    } else if proto == IPPROTO_TCP && saddr == cfg.exchange_addr && daddr == cfg.local_addr {
        let sport: u16 = read(ctx, l4)?;
        if sport == cfg.exchange_port {
            return Ok(Class::OrderEntry);
        }
    }
    Ok(Class::Other)
}

fn try_steer(ctx: &XdpContext) -> Result<u32, ()> {
    let Some(cfg) = CONFIG.get(0) else { return Ok(xdp_action::XDP_PASS) };
    let class = match classify(ctx, cfg) {
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
    if class == Class::Other {
        count(class, false, false);
        return Ok(xdp_action::XDP_PASS);
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
                warn!(ctx, "no AF_XDP socket on queue {} (class {})", queue, class as u32);
            }
            Ok(xdp_action::XDP_PASS)
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
