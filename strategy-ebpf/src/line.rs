//! The line's bytes from the frame to this CPU's scratch value.

use aya_ebpf::programs::XdpContext;
use strategy_common::xtx::{self, MAX_LINE};

use crate::opaque::opaque;

/// Copies the `len` bytes at `off` in the frame (the line) to `buf` with direct packet
/// loads, 8 bytes at a time (one load each: the program is built with misaligned access
/// allowed), the last word ending at the line's end (it overlaps the one before; nothing
/// past the frame is read). False, with nothing promised in `buf`, for a line shorter than
/// a word or not whole in the frame: the caller then uses the helper, whose call cost
/// 100-160 ns of a 260 ns fire in BPF_PROG_TEST_RUN (docs/xdp-tx.md).
#[inline(always)]
pub(crate) fn copy_line(
    ctx: &XdpContext,
    off: usize,
    len: usize,
    buf: *mut [u8; xtx::fast::SCRATCH],
) -> bool {
    // Bounded for the verifier: the offset below 128 (Ethernet, IPv4 with options and UDP
    // end before it), the length in [8, MAX_LINE].
    if len < 8 || len > MAX_LINE || off >= 128 {
        return false;
    }
    let off = opaque(off) & 127;
    let len = opaque(len) & (2 * MAX_LINE - 1);
    if len < 8 || len > MAX_LINE {
        return false;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let dst = buf as *mut u64;
    let words = len / 8;
    let mut i = 0;
    while i < MAX_LINE / 8 && i < words {
        let p = start + off + i * 8;
        if p + 8 > end {
            return false;
        }
        // SAFETY: the 8 bytes at `p` lie inside the frame (checked just above); `dst` is
        // this CPU's scratch value of SCRATCH >= MAX_LINE bytes, 8-byte aligned, and
        // i < MAX_LINE / 8.
        unsafe { *dst.add(i) = core::ptr::read_unaligned(p as *const u64) };
        i += 1;
    }
    // The last word's start as one offset, hidden from LLVM and bounded: the verifier
    // takes a packet pointer's range from a check of the constant part, which must not
    // be negative (`start + off + len - 8` folded into `+ (off + len) - 8` is refused).
    let last = start + (opaque(off + len - 8) & 255);
    if last + 8 > end {
        return false;
    }
    // Where it goes in the scratch value, as one masked offset (Linux 6.1's verifier lost
    // the lower bound of `len - 8` folded into the pointer: "min value is outside").
    let at = opaque(len - 8) & (MAX_LINE - 1);
    // SAFETY: as above; bytes at .. at + 8 of the scratch value, at <= MAX_LINE - 1 and
    // SCRATCH >= MAX_LINE + 8 (at is len - 8: the line's last 8 bytes).
    unsafe {
        let v = core::ptr::read_unaligned(last as *const u64);
        core::ptr::write_unaligned((buf as *mut u8).add(at) as *mut u64, v);
    }
    true
}
