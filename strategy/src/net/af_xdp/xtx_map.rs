//! The `xdp-tx` path's two channels with the XDP program: the `XTX` array value mapped into
//! this process (the armed state published with a ticket, the program's counters read),
//! and the `XTX_RING` ring buffer the program hands its fires through.
//!
//! The ticket protocol (see `strategy_common::xtx`): user space takes its last ticket back
//! with a compare-exchange to 0 before it writes the state, writes, then stores a fresh
//! ticket last (release); the program claims the ticket the same way before it sends. So a
//! rewrite and a fire never overlap, and when the compare-exchange here fails, the program
//! has fired on the last arming: its record is in (or on its way to) the ring.
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the XDP program (see each SAFETY comment)"
)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{MapData, RingBuf};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use strategy_common::xtx::{Armed, FireRecord, ProgState, Shared};

/// The mapped `XTX` value and the `XTX_RING` reader.
pub struct XtxMap {
    shared: NonNull<Shared>,
    len: NonZeroUsize,
    /// The ticket last published (0: none out).
    ticket: u64,
    /// The last ticket number used (tickets are never reused).
    issued: u64,
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
            ticket: 0,
            issued: 0,
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

    fn ticket_word(&self) -> &AtomicU64 {
        // SAFETY: `ticket` is an aligned u64 inside the live mapping (which outlives the
        // reference: it borrows `self`); user space and the program touch it only
        // atomically.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.shared.as_ptr()).armed.ticket)) }
    }

    /// Takes the ticket out back (compare-exchange to 0): afterwards the program cannot
    /// fire until the next [`XtxMap::publish`] with `arm`. `Err(Claimed)` when the program
    /// claimed it first: it has sent an order on that arming, whose record is in the ring
    /// or about to be.
    pub fn disarm(&mut self) -> Result<(), Claimed> {
        let t = std::mem::take(&mut self.ticket);
        if t == 0 {
            return Ok(());
        }
        self.ticket_word()
            .compare_exchange(t, 0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| Claimed)
    }

    /// Writes the armed state and, with `arm`, publishes it with a fresh ticket (stored
    /// last). `Err(Claimed)` (nothing written) when the program claimed the last ticket.
    pub fn publish(&mut self, armed: &Armed, arm: bool) -> Result<(), Claimed> {
        self.disarm()?;
        let mut body = *armed;
        body.ticket = 0;
        let p = self.shared.as_ptr();
        // SAFETY: the mapping holds a `Shared`; `armed` is written only by this thread,
        // and the program reads it only while holding a ticket this thread has taken back
        // (its claim would fail on anything it read meanwhile).
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).armed), body) };
        if arm {
            self.issued += 1;
            self.ticket = self.issued;
            self.ticket_word().store(self.ticket, Ordering::Release);
        }
        Ok(())
    }

    /// The program claimed the ticket out (its fire record arrived): none is out now.
    pub fn fired(&mut self) {
        self.ticket = 0;
    }

    /// The next fire the program handed over, if any (no syscall: the ring is mapped).
    /// A record that does not decode comes back as `Err` with its length (the caller
    /// counts it and goes on).
    pub fn next_fire(&mut self) -> Option<Result<FireRecord, usize>> {
        let item = self.ring.next()?;
        Some(FireRecord::from_bytes(&item).ok_or(item.len()))
    }
}

/// The program claimed the ticket: it fired on the last arming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed;

impl Drop for XtxMap {
    fn drop(&mut self) {
        // SAFETY: the mapping created in `new`, with its length; no reference into it
        // outlives `self`.
        if let Err(e) = unsafe { munmap(self.shared.cast(), self.len.get()) } {
            tracing::warn!("munmap of the XTX map: {e}");
        }
    }
}
