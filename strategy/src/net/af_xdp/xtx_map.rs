//! The `xdp-tx` path's channel with the XDP program: the `XTX` array value mapped into
//! this process (the armed state published with a ticket, the program's counters, and the
//! one-record mailbox the program hands its fires through).
//!
//! The ticket protocol (see `strategy_common::xtx`): user space takes its last ticket back
//! with a compare-exchange to 0 before it writes the state, writes, then stores a fresh
//! ticket last (release); the program claims the ticket before it sends, with a
//! compare-exchange to `CLAIMED`, which stays until user space has completed the fire and
//! turns it back to 0 ([`XtxMap::fired`]). So a rewrite and a fire never overlap, when the
//! compare-exchange here fails the program has fired on the last arming (its record is in,
//! or on its way to, the mailbox), and while the word holds a ticket or `CLAIMED` the
//! state does not change under the program.
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
use std::ptr::{addr_of_mut, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use strategy_common::xtx::{Armed, FireRecord, ProgState, Shared, SideTop, CLAIMED};

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
    /// The program claimed the last ticket and user space has not completed that fire yet
    /// ([`XtxMap::fired`]): nothing may be written or armed until it has.
    claimed: bool,
    /// What the armed state's fields hold (user space is their only writer): `publish`
    /// stores only what differs.
    written: Armed,
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
            claimed: false,
            written: Armed::default(),
            _array: array,
        };
        // What the armed state holds now (nothing writes it but this process, which has not
        // started to).
        map.written = map.armed();
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
    /// mailbox or about to be; and again on every call until [`XtxMap::fired`] says that
    /// fire is completed (the state must not change under it, nor a new ticket let the
    /// program send a second order at its sequence number).
    pub fn disarm(&mut self) -> Result<(), Claimed> {
        if self.claimed {
            return Err(Claimed);
        }
        let t = std::mem::take(&mut self.ticket);
        if t == 0 {
            return Ok(());
        }
        let r = self
            .ticket_word()
            .compare_exchange(t, 0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| Claimed);
        self.claimed = r.is_err();
        r
    }

    /// Writes the armed state and, with `arm`, publishes it with a fresh ticket (stored
    /// last). `Err(Claimed)` (nothing written) when the program claimed the last ticket.
    ///
    /// Only the fields that differ from the last write are stored: a store invalidates the
    /// cache line on the program's CPU whatever the value, and the program reads the whole
    /// state on every market-data frame. Between two frames the generation, the last
    /// sequence and one side's top change; the other side, the template and the feed's
    /// layout stay where the program last read them.
    pub fn publish(&mut self, armed: &Armed, arm: bool) -> Result<(), Claimed> {
        self.disarm()?;
        let p = self.shared.as_ptr();
        // Every field named (no `..`): a field added to `Armed` does not compile until it
        // is stored here too. The ticket is stored last, below.
        let Armed {
            ticket: _,
            generation,
            levels,
            amount_decimals,
            threshold_kind,
            qty_by_best,
            threshold,
            last_seq,
            order_qty,
            allowed,
            bids,
            asks,
            template,
            shape,
        } = *armed;
        // SAFETY: the mapping holds a `Shared`; `armed` is written only by this thread,
        // and the program reads it only while holding a ticket this thread has taken back
        // (its claim would fail on anything it read meanwhile). `self.written` is what the
        // fields hold (this thread is their only writer).
        unsafe {
            let a = std::ptr::addr_of_mut!((*p).armed);
            let w = &mut self.written;
            store(addr_of_mut!((*a).generation), &mut w.generation, generation);
            store(addr_of_mut!((*a).levels), &mut w.levels, levels);
            store(
                addr_of_mut!((*a).amount_decimals),
                &mut w.amount_decimals,
                amount_decimals,
            );
            store(
                addr_of_mut!((*a).threshold_kind),
                &mut w.threshold_kind,
                threshold_kind,
            );
            store(
                addr_of_mut!((*a).qty_by_best),
                &mut w.qty_by_best,
                qty_by_best,
            );
            store(addr_of_mut!((*a).threshold), &mut w.threshold, threshold);
            store(addr_of_mut!((*a).last_seq), &mut w.last_seq, last_seq);
            store(addr_of_mut!((*a).order_qty), &mut w.order_qty, order_qty);
            store(addr_of_mut!((*a).allowed), &mut w.allowed, allowed);
            for (dst, old, new) in [
                (addr_of_mut!((*a).bids), &mut w.bids, bids),
                (addr_of_mut!((*a).asks), &mut w.asks, asks),
            ] {
                let SideTop {
                    levels: top,
                    count,
                    complete,
                } = new;
                for (i, level) in top.into_iter().enumerate() {
                    store(addr_of_mut!((*dst).levels[i]), &mut old.levels[i], level);
                }
                store(addr_of_mut!((*dst).count), &mut old.count, count);
                store(addr_of_mut!((*dst).complete), &mut old.complete, complete);
            }
            store(addr_of_mut!((*a).template), &mut w.template, template);
            store(addr_of_mut!((*a).shape), &mut w.shape, shape);
        }
        if arm {
            self.issued += 1;
            self.ticket = self.issued;
            self.ticket_word().store(self.ticket, Ordering::Release);
        }
        Ok(())
    }

    /// The armed state as the mapping holds it (a volatile read: for checks, not the hot
    /// path).
    pub fn armed(&self) -> Armed {
        // SAFETY: the mapping holds a `Shared`; any bit pattern is an `Armed`.
        unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*self.shared.as_ptr()).armed)) }
    }

    /// The program claimed the ticket out and user space has completed the fire: none is
    /// out now, and the word goes from `CLAIMED` back to 0 (the state may change again).
    pub fn fired(&mut self) {
        self.ticket = 0;
        self.claimed = false;
        // Fails only when the word is not CLAIMED (0 already: nothing to do).
        let _ =
            self.ticket_word()
                .compare_exchange(CLAIMED, 0, Ordering::AcqRel, Ordering::Relaxed);
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

/// Stores `new` at `dst` when it differs from `*old` (what `dst` holds), and notes it.
///
/// # Safety
/// `dst` is valid for a volatile write of a `T`, and `*old` is what it holds.
#[inline]
unsafe fn store<T: Copy + PartialEq>(dst: *mut T, old: &mut T, new: T) {
    if *old != new {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::write_volatile(dst, new) };
        *old = new;
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
