//! AF_PACKET receive with a TPACKET_V3 block ring ([`BlockRx`]), the `packet+v3` variant.
//!
//! TPACKET_V3 fills variable-sized frames back to back into blocks and hands a whole block
//! to user space when it is full or when its retire timer (`tp_retire_blk_tov`, whole
//! milliseconds) fires; a frame is not readable before its block is (the kernel counts a
//! frame into `num_pkts` before it copies it). That is the variant's point in this lab: it
//! batches by construction, so it trades latency for fewer hand-overs per packet, and the
//! load axis shows where (docs/paths.md). Transmit stays on a TPACKET_V2 ring of a second,
//! transmit-only socket (`rings::open_tx`): a socket has one TPACKET version for
//! both rings.
//!
//! Ring discipline: a block belongs to user space from the moment its `block_status` has
//! TP_STATUS_USER (read with Acquire) until this half stores TP_STATUS_KERNEL (Release),
//! which it does once every frame of the block was read and given back. A frame handed
//! out is a bit in a bitmap (by 8-byte unit of the ring): a frame given back twice is
//! refused and counted, and a block still held from the last revolution is never read
//! again. Offsets read from the kernel's headers are checked against the block before
//! use; a block whose chain leaves it is counted (`bad_blocks`) and handed back.
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the kernel (see the module docs and each SAFETY comment)"
)]

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hostsys::socket::setsockopt;

use super::filter::{attach_filter, filter, Flows};
use super::rings::{
    bind, join, map, socket, Mapping, ETH_P_ALL, PACKET_OUTGOING, TPACKET_ALIGNMENT,
    TP_STATUS_KERNEL, TP_STATUS_USER,
};
use crate::net::ring::RxRing;

/// Frames start 8-byte aligned (V3_ALIGNMENT in the kernel): a frame's handle is its offset
/// in the ring in these units.
const UNIT: usize = 8;
/// The block descriptor's fields (`struct tpacket_block_desc`, `hdr.bh1`).
const BLOCK_STATUS: usize = offset_of!(libc::tpacket_block_desc, hdr);
const NUM_PKTS: usize = offset_of!(libc::tpacket_block_desc, hdr) + 4;
const FIRST_PKT: usize = offset_of!(libc::tpacket_block_desc, hdr) + 8;
/// The frame header (`struct tpacket3_hdr`) and the `sockaddr_ll` after it (at
/// TPACKET_ALIGNMENT).
const HDR3: usize = size_of::<libc::tpacket3_hdr>();
const HDR3_ALIGNED: usize = HDR3.div_ceil(TPACKET_ALIGNMENT) * TPACKET_ALIGNMENT;
const PKTTYPE: usize = HDR3_ALIGNED + offset_of!(libc::sockaddr_ll, sll_pkttype);

/// Block ring geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGeometry {
    /// Bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// Blocks in the ring.
    pub blocks: u32,
    /// The retire timer, whole milliseconds (>= 1): a block with frames is handed over at
    /// the latest this long after it opened.
    pub timeout_ms: u32,
}

/// The receive half over a TPACKET_V3 block ring.
pub struct BlockRx {
    map: Arc<Mapping>,
    block_size: usize,
    blocks: usize,
    /// The block being read, or next to be.
    cur: usize,
    /// `cur` is open: its frames are being handed out.
    open: bool,
    /// Frames of `cur` not read yet, and where the next one starts in it.
    left: u32,
    off: usize,
    /// Frames handed out and not given back, per block.
    outstanding: Vec<u32>,
    /// Blocks opened and not handed back yet (a USER status there is ours, not new).
    pending: Vec<bool>,
    /// Frames out, one bit per 8-byte unit of the ring.
    out: Vec<u64>,
    held: usize,
    /// Frames given back that were not out (refused and counted).
    pub double_give_backs: u64,
    /// Our own outgoing frames seen on the ring.
    pub skipped: u64,
    /// Blocks whose frame chain did not fit the block (handed back unread past the fault).
    pub bad_blocks: u64,
    drops: std::cell::Cell<u64>,
}

/// Opens a TPACKET_V3 receive socket on `ifindex` behind the flows' filter.
pub fn open_rx(
    ifindex: u32,
    flows: &Flows,
    group_mac: [u8; 6],
    g: BlockGeometry,
) -> io::Result<BlockRx> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if g.block_size < page
        || !g.block_size.is_multiple_of(page)
        || g.block_size > 1 << 22
        || g.blocks < 2
        || g.timeout_ms == 0
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TPACKET_V3 blocks of {} bytes, {} of them, {} ms: want a multiple of the \
                 page ({page} bytes) up to 4 MiB, at least 2 blocks, a timeout of 1 ms or more",
                g.block_size, g.blocks, g.timeout_ms
            ),
        ));
    }
    let fd = socket(libc::tpacket_versions::TPACKET_V3)?;
    let s = fd.as_raw_fd();
    attach_filter(s, &filter(flows))?;
    // Frames we send go out on the other socket; this one need not see them (Linux >=
    // 4.20; without it they are skipped by their packet type).
    let _ = setsockopt(s, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32);
    // The frame size V3 asks for only to check the ring's geometry (frames are packed): a
    // block is at least a page, so it divides it.
    let frame = 2048u32;
    let req = libc::tpacket_req3 {
        tp_block_size: g.block_size,
        tp_block_nr: g.blocks,
        tp_frame_size: frame,
        tp_frame_nr: g.block_size / frame * g.blocks,
        tp_retire_blk_tov: g.timeout_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
    let len = g.block_size as usize * g.blocks as usize;
    let map = map(fd, len)?;
    bind(s, ifindex, ETH_P_ALL)?;
    join(s, ifindex, group_mac)?;
    Ok(BlockRx::over(map, g.block_size as usize, g.blocks as usize))
}

impl BlockRx {
    /// The receive half over `blocks` blocks of `block_size` bytes at the start of `map`.
    fn over(map: Arc<Mapping>, block_size: usize, blocks: usize) -> Self {
        assert!(block_size * blocks <= map.len && block_size.is_multiple_of(UNIT));
        let units = block_size * blocks / UNIT;
        Self {
            map,
            block_size,
            blocks,
            cur: 0,
            open: false,
            left: 0,
            off: 0,
            outstanding: vec![0; blocks],
            pending: vec![false; blocks],
            out: vec![0; units.div_ceil(64)],
            held: 0,
            double_give_backs: 0,
            skipped: 0,
            bad_blocks: 0,
            drops: std::cell::Cell::new(0),
        }
    }

    /// The socket (for statistics).
    pub fn fd(&self) -> i32 {
        self.map.fd.as_raw_fd()
    }

    /// The u32 at `off` of block `b` (`off + 4 <= block_size`, 4-aligned).
    #[inline]
    fn word(&self, b: usize, off: usize) -> &AtomicU32 {
        assert!(b < self.blocks && off + 4 <= self.block_size && off.is_multiple_of(4));
        // SAFETY: inside block `b` of the mapping (checked above), 4-aligned (blocks are
        // page-aligned); the reference borrows `self`, which keeps the mapping alive. The
        // kernel writes these words only while the block is its own; an atomic view reads
        // them without tearing either way.
        unsafe {
            &*self
                .map
                .base
                .add(b * self.block_size + off)
                .cast::<AtomicU32>()
        }
    }

    #[inline]
    fn byte(&self, b: usize, off: usize) -> u8 {
        assert!(b < self.blocks && off < self.block_size);
        // SAFETY: inside block `b` (checked above), which is user-owned while it is read.
        unsafe { self.map.base.add(b * self.block_size + off).read() }
    }

    #[inline]
    fn u16_at(&self, b: usize, off: usize) -> u16 {
        u16::from_ne_bytes([self.byte(b, off), self.byte(b, off + 1)])
    }

    /// Hands block `b` back to the kernel.
    #[inline]
    fn release(&mut self, b: usize) {
        self.pending[b] = false;
        self.word(b, BLOCK_STATUS)
            .store(TP_STATUS_KERNEL, Ordering::Release);
    }

    /// Done reading `cur`: handed back now if none of its frames is out, and on to the next.
    #[inline]
    fn close(&mut self) {
        self.open = false;
        if self.outstanding[self.cur] == 0 {
            self.release(self.cur);
        }
        self.cur = (self.cur + 1) % self.blocks;
    }

    /// Opens `cur` if the kernel handed it over; false if not (nothing new).
    #[inline]
    fn try_open(&mut self) -> bool {
        let b = self.cur;
        // Still ours from the last revolution: the kernel stopped there too.
        if self.pending[b]
            || self.word(b, BLOCK_STATUS).load(Ordering::Acquire) & TP_STATUS_USER == 0
        {
            return false;
        }
        self.pending[b] = true;
        self.open = true;
        self.left = self.word(b, NUM_PKTS).load(Ordering::Relaxed);
        self.off = self.word(b, FIRST_PKT).load(Ordering::Relaxed) as usize;
        true
    }
}

impl RxRing for BlockRx {
    type Frame = u32;

    fn kernel_drops(&self) -> Option<u64> {
        let (_, drops) = hostsys::socket::packet_statistics(self.fd()).ok()?;
        self.drops.set(self.drops.get() + u64::from(drops));
        Some(self.drops.get())
    }

    #[inline]
    fn recv(&mut self, out: &mut [u32]) -> usize {
        let mut n = 0;
        while n < out.len() {
            if !self.open && !self.try_open() {
                break;
            }
            if self.left == 0 {
                self.close();
                continue;
            }
            let (b, off) = (self.cur, self.off);
            if off < size_of::<libc::tpacket_block_desc>()
                || off + HDR3_ALIGNED + 16 > self.block_size
                || !off.is_multiple_of(UNIT)
            {
                self.bad_blocks += 1;
                self.left = 0;
                continue;
            }
            let next = self
                .word(b, off + offset_of!(libc::tpacket3_hdr, tp_next_offset))
                .load(Ordering::Relaxed);
            self.left -= 1;
            self.off = off + next as usize;
            if next == 0 && self.left > 0 {
                self.bad_blocks += 1;
                self.left = 0;
            }
            if self.byte(b, off + PKTTYPE) == PACKET_OUTGOING {
                self.skipped += 1;
                continue;
            }
            let unit = (b * self.block_size + off) / UNIT;
            self.out[unit / 64] |= 1 << (unit % 64);
            self.outstanding[b] += 1;
            self.held += 1;
            out[n] = unit as u32;
            n += 1;
        }
        n
    }

    #[inline]
    fn data(&self, frame: &u32) -> &[u8] {
        let pos = (*frame as usize * UNIT) % (self.block_size * self.blocks);
        let (b, off) = (pos / self.block_size, pos % self.block_size);
        if off + HDR3 > self.block_size {
            return &[];
        }
        let mac = off + usize::from(self.u16_at(b, off + offset_of!(libc::tpacket3_hdr, tp_mac)));
        let snap = self
            .word(b, off + offset_of!(libc::tpacket3_hdr, tp_snaplen))
            .load(Ordering::Relaxed);
        let start = mac.min(self.block_size);
        let len = (snap as usize).min(self.block_size - start);
        // SAFETY: [start, start + len) lies inside block `b` of the mapping (clamped above);
        // the block is user-owned until the frame is given back; it borrows `self`.
        unsafe { std::slice::from_raw_parts(self.map.base.add(b * self.block_size + start), len) }
    }

    #[inline]
    fn give_back(&mut self, frames: &mut Vec<u32>) {
        let units = self.block_size * self.blocks / UNIT;
        for &f in frames.iter() {
            let unit = f as usize;
            if unit >= units || self.out[unit / 64] & (1 << (unit % 64)) == 0 {
                self.double_give_backs += 1;
                continue;
            }
            self.out[unit / 64] &= !(1 << (unit % 64));
            let b = unit * UNIT / self.block_size;
            self.outstanding[b] -= 1;
            self.held -= 1;
            if self.outstanding[b] == 0 && !(self.open && b == self.cur) {
                self.release(b);
            }
        }
        frames.clear();
    }

    fn accounted(&self, held: usize) -> bool {
        self.held == held
    }

    fn double_give_backs(&self) -> u64 {
        self.double_give_backs
    }
}

#[cfg(test)]
mod tests {
    use super::super::rings::anon_mapping;
    use super::*;

    #[test]
    fn layout_constants_match_the_kernel_abi() {
        // tpacket3_hdr is 48 bytes; the block descriptor's bh1 starts at 8.
        assert_eq!(HDR3, 48);
        assert_eq!((BLOCK_STATUS, NUM_PKTS, FIRST_PKT), (8, 12, 16));
        assert_eq!(PKTTYPE, 48 + 10);
    }

    const BLOCK: usize = 4096;

    /// The kernel's side, for the tests: block `b` filled with `frames` (payload, outgoing)
    /// and handed to user space; a frame's chain offset 0 at `break_at`.
    fn fill(rx: &BlockRx, b: usize, frames: &[(&[u8], bool)], break_at: Option<usize>) {
        let base = rx.map.base;
        // SAFETY: test-only: we own the anonymous mapping; every write lies inside block b.
        unsafe {
            let blk = base.add(b * BLOCK);
            let first = 48usize;
            let mut off = first;
            for (i, (payload, outgoing)) in frames.iter().enumerate() {
                let f = blk.add(off);
                let mac = 80usize;
                let total = (mac + payload.len()).div_ceil(UNIT) * UNIT;
                let last = i + 1 == frames.len();
                let next = if last || break_at == Some(i) {
                    0
                } else {
                    total
                };
                f.cast::<u32>().write(next as u32);
                f.add(12).cast::<u32>().write(payload.len() as u32);
                f.add(24).cast::<u16>().write(mac as u16);
                f.add(PKTTYPE)
                    .write(if *outgoing { PACKET_OUTGOING } else { 0 });
                std::ptr::copy_nonoverlapping(payload.as_ptr(), f.add(mac), payload.len());
                off += total;
            }
            blk.add(NUM_PKTS).cast::<u32>().write(frames.len() as u32);
            blk.add(FIRST_PKT).cast::<u32>().write(first as u32);
        }
        rx.word(b, BLOCK_STATUS)
            .store(TP_STATUS_USER, Ordering::Release);
    }

    fn status(rx: &BlockRx, b: usize) -> u32 {
        rx.word(b, BLOCK_STATUS).load(Ordering::Acquire)
    }

    #[test]
    fn a_block_goes_back_once_every_frame_of_it_is_given_back() {
        let mut rx = BlockRx::over(anon_mapping(2 * BLOCK), BLOCK, 2);
        let mut got = [0u32; 8];
        assert_eq!(rx.recv(&mut got), 0, "nothing handed over yet");
        fill(
            &rx,
            0,
            &[(b"first", false), (b"ours", true), (b"third!", false)],
            None,
        );
        // Two at a time: the block stays open between the calls.
        assert_eq!(rx.recv(&mut got[..1]), 1);
        assert_eq!(rx.recv(&mut got[1..]), 1, "our own frame skipped");
        assert_eq!(
            (rx.data(&got[0]), rx.data(&got[1])),
            (&b"first"[..], &b"third!"[..])
        );
        assert_eq!(rx.skipped, 1);
        assert_eq!(
            status(&rx, 0),
            TP_STATUS_USER,
            "frames out: the block stays ours"
        );
        rx.give_back(&mut vec![got[1]]);
        assert_eq!(status(&rx, 0), TP_STATUS_USER);
        rx.give_back(&mut vec![got[0]]);
        assert_eq!(
            status(&rx, 0),
            TP_STATUS_KERNEL,
            "every frame back: the block too"
        );
        rx.give_back(&mut vec![got[0]]);
        assert_eq!(rx.double_give_backs, 1, "a second hand-back is refused");
        assert!(rx.accounted(0));
    }

    #[test]
    fn a_block_held_over_a_revolution_is_not_read_twice() {
        let mut rx = BlockRx::over(anon_mapping(2 * BLOCK), BLOCK, 2);
        let mut got = [0u32; 8];
        fill(&rx, 0, &[(b"held", false)], None);
        assert_eq!(rx.recv(&mut got), 1);
        let held = got[0];
        fill(&rx, 1, &[(b"a", false), (b"b", false)], None);
        assert_eq!(rx.recv(&mut got), 2);
        rx.give_back(&mut vec![got[0], got[1]]);
        assert_eq!(status(&rx, 1), TP_STATUS_KERNEL);
        // Back at block 0: still ours (its frame is held), still USER, not new.
        assert_eq!(rx.recv(&mut got), 0, "block 0 is not read a second time");
        assert!(rx.accounted(1));
        rx.give_back(&mut vec![held]);
        assert_eq!(status(&rx, 0), TP_STATUS_KERNEL);
        // The kernel fills it again: read as new.
        fill(&rx, 0, &[(b"again", false)], None);
        assert_eq!(rx.recv(&mut got), 1);
        assert_eq!(rx.data(&got[0]), b"again");
    }

    #[test]
    fn a_broken_chain_costs_the_rest_of_its_block_only() {
        let mut rx = BlockRx::over(anon_mapping(2 * BLOCK), BLOCK, 2);
        let mut got = [0u32; 8];
        fill(
            &rx,
            0,
            &[(b"one", false), (b"two", false), (b"three", false)],
            Some(0),
        );
        assert_eq!(rx.recv(&mut got), 1, "the frame before the break");
        assert_eq!(rx.bad_blocks, 1);
        rx.give_back(&mut vec![got[0]]);
        assert_eq!(status(&rx, 0), TP_STATUS_KERNEL, "the block goes back");
        fill(&rx, 1, &[(b"next", false)], None);
        assert_eq!(rx.recv(&mut got), 1);
        assert_eq!(rx.data(&got[0]), b"next");
    }

    proptest::proptest! {
        /// Whatever the kernel's side of a block holds (descriptor and frames as random
        /// bytes), reading it never panics, never hands out a frame reaching past its
        /// block, and every frame handed out goes back with the block.
        #[test]
        fn any_block_contents_are_read_safely(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), BLOCK),
            num in 0u32..300,
            first in 0u32..(BLOCK as u32 + 64),
        ) {
            let mut rx = BlockRx::over(anon_mapping(2 * BLOCK), BLOCK, 2);
            // SAFETY: test-only: we own the anonymous mapping; block 0 is BLOCK bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), rx.map.base, BLOCK);
                rx.map.base.add(NUM_PKTS).cast::<u32>().write(num);
                rx.map.base.add(FIRST_PKT).cast::<u32>().write(first);
            }
            rx.word(0, BLOCK_STATUS).store(TP_STATUS_USER, Ordering::Release);
            let mut got = [0u32; 512];
            let n = rx.recv(&mut got);
            for f in &got[..n] {
                let pos = *f as usize * UNIT;
                proptest::prop_assert!(pos < BLOCK);
                let d = rx.data(f);
                let start = d.as_ptr() as usize - rx.map.base as usize;
                proptest::prop_assert!(start + d.len() <= BLOCK);
            }
            rx.give_back(&mut got[..n].to_vec());
            proptest::prop_assert!(rx.accounted(0));
            // Past the block: nothing more, and block 0 is the kernel's again.
            proptest::prop_assert_eq!(rx.recv(&mut got), 0);
            proptest::prop_assert_eq!(status(&rx, 0), TP_STATUS_KERNEL);
        }
    }

    #[test]
    fn a_frame_header_past_its_block_is_not_read() {
        let mut rx = BlockRx::over(anon_mapping(2 * BLOCK), BLOCK, 2);
        let mut got = [0u32; 8];
        fill(&rx, 0, &[(b"x", false)], None);
        // SAFETY: test-only: the first-packet offset of block 0, pointed past the block.
        unsafe {
            rx.map
                .base
                .add(FIRST_PKT)
                .cast::<u32>()
                .write(BLOCK as u32 - 16);
        }
        assert_eq!(rx.recv(&mut got), 0);
        assert_eq!(rx.bad_blocks, 1);
        assert_eq!(status(&rx, 0), TP_STATUS_KERNEL);
        // A handle from nowhere reads as empty, never past the ring.
        assert_eq!(rx.data(&u32::MAX), b"");
    }
}
