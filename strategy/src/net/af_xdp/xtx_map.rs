//! The `xdp-tx` path's channel with the XDP program: the `XTX` array value mapped into
//! this process (the armed state published with a ticket, the program's counters, and the
//! one-record mailbox the program hands its fires through).
//!
//! The ticket protocol (see `strategy_common::xtx`): user space takes its last ticket back
//! with a compare-exchange to 0 before it writes the state, writes, then stores a fresh
//! ticket last (release); the program claims the ticket the same way before it sends. So a
//! rewrite and a fire never overlap, and when the compare-exchange here fails, the program
//! has fired on the last arming: its record is in (or on its way to) the mailbox.
//!
//! The mailbox holds one record because one is all a ticket allows: the program writes
//! the record after it won the claim and stores the claimed ticket in the mailbox last;
//! user space reads a ticket it has not seen (acquire), then the record, and publishes the
//! next ticket only after it handled the record. (A BPF ring buffer did this job before:
//! its reserve and submit were the costliest step of the program's fire at 1 ms gaps,
//! docs/xdp-tx.md.)
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the XDP program (see each SAFETY comment)"
)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use strategy_common::xtx::{Armed, FireRecord, ProgState, Shared};

/// The mapped `XTX` value.
pub struct XtxMap {
    shared: NonNull<Shared>,
    len: NonZeroUsize,
    /// The ticket last published (0: none out).
    ticket: u64,
    /// The last ticket number used (tickets are never reused).
    issued: u64,
    /// The mailbox ticket last read (its record handed out).
    seen: u64,
    // The map's fd, kept for the mapping's life (the mapping holds its own reference too).
    _array: MapData,
}

impl XtxMap {
    /// Maps the value of `array` (an `Array<Shared>` of one entry, created with
    /// BPF_F_MMAPABLE).
    pub fn new(array: MapData) -> io::Result<Self> {
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
        let mut map = Self {
            shared: ptr.cast(),
            len,
            ticket: 0,
            issued: 0,
            seen: 0,
            _array: array,
        };
        // A map that held an earlier session's tickets: start past them, and take its
        // last record as read.
        let last = map.mailbox_word().load(Ordering::Acquire);
        let armed = map.ticket_word().load(Ordering::Acquire);
        map.seen = last;
        map.issued = last.max(armed);
        Ok(map)
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

    fn mailbox_word(&self) -> &AtomicU64 {
        // SAFETY: as for `ticket_word`; the program stores this word atomically, user space
        // only loads it.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.shared.as_ptr()).fire.ticket)) }
    }

    /// Takes the ticket out back (compare-exchange to 0): afterwards the program cannot
    /// fire until the next [`XtxMap::publish`] with `arm`. `Err(Claimed)` when the program
    /// claimed it first: it has sent an order on that arming, whose record is in the
    /// mailbox or about to be.
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

    /// The next fire the program handed over, if any (no syscall: one load of a mapped
    /// word while there is none). A record that is not consistent comes back as `Err`
    /// (the caller counts it and goes on).
    pub fn next_fire(&mut self) -> Option<Result<FireRecord, BadRecord>> {
        let t = self.mailbox_word().load(Ordering::Acquire);
        if t == self.seen {
            return None;
        }
        self.seen = t;
        // SAFETY: `fire.rec` lies inside the live mapping; the program wrote it before it
        // stored `t` (release; acquired above) and writes it again only after claiming a
        // ticket this thread has not published yet. A volatile read: memory another agent
        // writes. Any bit pattern is a FireRecord (integers and bytes).
        let rec = unsafe {
            std::ptr::read_volatile(std::ptr::addr_of!((*self.shared.as_ptr()).fire.rec))
        };
        Some(if rec.is_consistent() {
            Ok(rec)
        } else {
            Err(BadRecord {
                line_len: rec.line_len,
                side: rec.side,
            })
        })
    }
}

/// A mailbox record that does not hold together (a line longer than the program can copy,
/// a side that does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord {
    /// The record's line length.
    pub line_len: u32,
    /// The record's side.
    pub side: u32,
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
