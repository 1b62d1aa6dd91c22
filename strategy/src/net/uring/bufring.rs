//! A provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19+): the receive buffers are
//! handed to the kernel through a ring in shared memory. Giving one back is two stores (the
//! entry, then the tail with release ordering), where PROVIDE_BUFFERS needs a submission
//! and, sooner or later, an `io_uring_enter`.
//!
//! The memory is one page-aligned allocation of `count` 16-byte entries (the kernel reads the
//! ring's tail from the first entry's `resv` field); it must outlive the registration:
//! [`super::Ring`] declares the io_uring before it, so the ring is torn down first.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The ring's memory and our tail.
pub(super) struct BufRing {
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    mask: u16,
    tail: u16,
}

impl BufRing {
    /// A zeroed ring of `count` entries (a power of two, at most 32768).
    pub(super) fn new(count: u16) -> Option<Self> {
        if !count.is_power_of_two() || count > 1 << 15 {
            return None;
        }
        let size = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(size, 4096).ok()?;
        // SAFETY: `layout` has a non-zero size (count >= 1).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        Some(Self {
            entries: NonNull::new(p.cast())?,
            layout,
            mask: count - 1,
            tail: 0,
        })
    }

    /// The allocation's size in bytes.
    pub(super) fn size(&self) -> usize {
        self.layout.size()
    }

    /// The ring's address, for IORING_REGISTER_PBUF_RING.
    pub(super) fn addr(&self) -> u64 {
        self.entries.as_ptr() as u64
    }

    /// Writes buffer `bid` (`len` bytes at `addr`) into the next entry; the kernel sees it
    /// at the next [`BufRing::publish`].
    #[inline]
    pub(super) fn add(&mut self, bid: u16, addr: u64, len: u32) {
        let i = usize::from(self.tail & self.mask);
        // SAFETY: `i` < count, inside the allocation; the entry is past the tail the
        // kernel knows, so the kernel does not read it until we publish. The setters write
        // addr, len and bid, never the first entry's `resv` (the kernel's tail).
        let e = unsafe { &mut *self.entries.as_ptr().add(i) };
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the added entries visible to the kernel (a store-release of the tail).
    #[inline]
    pub(super) fn publish(&mut self) {
        // SAFETY: the tail is the first entry's `resv` field, a u16 inside the allocation,
        // aligned for u16; the kernel only reads it, and only atomically.
        let tail =
            unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries.as_ptr()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the io_uring that read it is gone
        // and its requests completed (a ring that ended with requests left keeps this
        // allocation for the process instead: `teardown`).
        unsafe { std::alloc::dealloc(self.entries.as_ptr().cast(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_wrap_and_the_tail_is_published() {
        assert!(BufRing::new(3).is_none());
        let mut r = BufRing::new(4).expect("ring");
        assert_eq!(r.addr() % 4096, 0);
        for bid in 0..6u16 {
            r.add(bid, 0x1000 * u64::from(bid), 2048);
        }
        r.publish();
        // SAFETY: reading our own allocation, no kernel involved.
        let (e0, e1, tail) = unsafe {
            let base = r.entries.as_ptr();
            (
                (*base).bid(),
                (*base.add(1)).bid(),
                *BufRingEntry::tail(base),
            )
        };
        assert_eq!(
            (e0, e1, tail),
            (4, 5, 6),
            "entries 4 and 5 wrapped onto 0 and 1"
        );
    }
}
