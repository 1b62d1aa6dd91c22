//! The `xdp-tx` path's two channels with the XDP program: the `XTX` array value mapped into
//! this process (the armed state written under a sequence lock, the program's counters
//! read), and the `XTX_RING` ring buffer the program hands its fires through.
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the XDP program (see each SAFETY comment)"
)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use aya::maps::{MapData, RingBuf};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use strategy_common::xtx::{Armed, FireRecord, ProgState, Shared};

/// The mapped `XTX` value and the `XTX_RING` reader.
pub struct XtxMap {
    shared: NonNull<Shared>,
    len: NonZeroUsize,
    lock: u64,
    ring: RingBuf<MapData>,
    // The map's fd, kept for the mapping's life (the mapping holds its own reference too).
    _array: MapData,
}

impl XtxMap {
    /// Maps the value of `array` (an `Array<Shared>` of one entry, created with
    /// BPF_F_MMAPABLE) and takes `ring`.
    pub fn new(array: MapData, ring: RingBuf<MapData>) -> io::Result<Self> {
        let page = 4096;
        let len = std::mem::size_of::<Shared>().div_ceil(page) * page;
        let len = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty map"))?;
        // SAFETY: a fresh shared mapping of the map's value area (offset 0, the length
        // rounded up to a page as the kernel requires); nothing else is mapped there.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                array.fd(),
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Self {
            shared: ptr.cast(),
            len,
            lock: 0,
            ring,
            _array: array,
        })
    }

    /// The program's counters (a racy snapshot: each field is read once).
    pub fn prog(&self) -> ProgState {
        // SAFETY: `shared` points at a live mapping of a `Shared` (aligned: the mapping is
        // page-aligned); any bit pattern is a valid ProgState; a volatile read because the
        // program writes it concurrently.
        unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*self.shared.as_ptr()).prog)) }
    }

    /// Writes the armed state under the sequence lock: lock odd, body, lock even. The
    /// program reads the lock before and after its reads and gives up if it moved or was
    /// odd.
    pub fn publish(&mut self, armed: &Armed) {
        let p = self.shared.as_ptr();
        // SAFETY: `lock` is an aligned u64 inside the live mapping; it is only accessed
        // atomically here and with volatile loads by the program.
        let lock = unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*p).armed.lock)) };
        self.lock = self.lock.wrapping_add(1) | 1;
        lock.store(self.lock, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut body = *armed;
        body.lock = self.lock;
        // SAFETY: the mapping holds a `Shared`; `armed` is only written by this thread.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).armed), body) };
        self.lock = self.lock.wrapping_add(1);
        lock.store(self.lock, Ordering::Release);
    }

    /// The next fire the program handed over, if any (no syscall: the ring is mapped).
    /// A record that does not decode comes back as `Err` with its length (the caller
    /// counts it and goes on).
    pub fn next_fire(&mut self) -> Option<Result<FireRecord, usize>> {
        let item = self.ring.next()?;
        Some(FireRecord::from_bytes(&item).ok_or(item.len()))
    }
}

impl Drop for XtxMap {
    fn drop(&mut self) {
        // SAFETY: the mapping created in `new`, with its length; no reference into it
        // outlives `self`.
        if let Err(e) = unsafe { munmap(self.shared.cast(), self.len.get()) } {
            tracing::warn!("munmap of the XTX map: {e}");
        }
    }
}
