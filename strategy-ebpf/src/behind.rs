//! Deciding while user space is behind: each market-data frame's footprint, and the check
//! that the frames user space has not applied yet can neither change a fire nor fire
//! themselves ([`strategy_common::xtx::pending_kinds`]).

use aya_ebpf::helpers::generated::bpf_loop;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray};
use strategy_common::xtx::{self, Footprint, Shared, BEHIND_MAX};

/// Each market-data frame's footprint, by its index modulo BEHIND_MAX (deciding while user
/// space is behind: `strategy_common::xtx::pending_kinds`).
#[map]
static XTX_FEET: Array<Footprint> = Array::with_max_entries(BEHIND_MAX as u32, 0);

/// Keeps frame `index`'s footprint (its line as parsed, or "not parsed").
#[inline(always)]
pub(crate) fn remember(index: u64, line: Option<&xtx::XLine>) {
    let slot = (index as u32) & (BEHIND_MAX as u32 - 1);
    if let Some(f) = XTX_FEET.get_ptr_mut(slot) {
        // SAFETY: a slot of the footprint array, valid for the run; only the program
        // writes it, one run at a time (market data keeps to one queue; on a second one
        // the program stops deciding: `md_spread`).
        unsafe { *f = Footprint::of(index, line) };
    }
}

/// The pending-frame check's state, in a map value: the verifier tracks no value there,
/// so the rounds of its loop look alike to it (kept in the caller's stack, every
/// combination of kinds and level was a state of its own: 379,472 instructions verified).
#[repr(C)]
struct PendingScratch {
    /// The sizes the pending frames so far leave at the armed levels.
    sizes: xtx::PendingSizes,
    /// The armed level of the frame being checked (between its search and its use).
    level: u64,
    /// The kinds every pending frame so far shares (0: the check failed).
    kinds: u64,
}

#[map]
static XTX_PENDING: PerCpuArray<PendingScratch> = PerCpuArray::with_max_entries(1, 0);

/// The pending-frame check's arguments across its bpf_loop rounds.
#[repr(C)]
struct PendingCtx {
    armed: *const xtx::Armed,
    line: *const xtx::XLine,
    first: u64,
    end: u64,
    scratch: *mut PendingScratch,
}

/// One pending frame per bpf_loop round: 1 stops the loop (past the last, or no kind left
/// that all the frames share).
#[inline(never)]
extern "C" fn pending_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `PendingCtx` given to it; `armed` points into the
    // shared map value, `scratch` at this CPU's value and `line` at the caller's stack,
    // all live for the call.
    unsafe {
        let c = &*(ctx as *const PendingCtx);
        let sc = c.scratch;
        let index = c.first + u64::from(i);
        if index >= c.end {
            return 1;
        }
        let slot = (index as u32) & (BEHIND_MAX as u32 - 1);
        let Some(f) = XTX_FEET.get(slot) else {
            core::ptr::write_volatile(&mut (*sc).kinds, 0);
            return 1;
        };
        // The level's index through memory: one path on from here for the verifier, not
        // one per level the search could have stopped at.
        core::ptr::write_volatile(&mut (*sc).level, xtx::level_of(&*c.armed, f) as u64);
        let level = core::ptr::read_volatile(&(*sc).level) as usize;
        let k = xtx::pending_kinds_at(&*c.armed, &mut (*sc).sizes, f, index, &*c.line, level);
        let kinds = core::ptr::read_volatile(&(*sc).kinds) & u64::from(k);
        core::ptr::write_volatile(&mut (*sc).kinds, kinds);
        i64::from(kinds == 0)
    }
}

/// Can the frames user space has not applied yet (`gen..index`) neither change the
/// decision on `line` over the armed state nor fire themselves?
/// (`strategy_common::xtx::pending_kinds`.)
#[inline(always)]
pub(crate) fn pending_leave_decision(
    shared: &Shared,
    gen: u64,
    index: u64,
    line: &xtx::XLine,
) -> bool {
    let Some(scratch) = XTX_PENDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's value, valid for the run.
    unsafe {
        (*scratch).sizes = xtx::PendingSizes::of(&shared.armed);
        core::ptr::write_volatile(
            &mut (*scratch).kinds,
            u64::from(xtx::BELOW_TOP | xtx::BESIDE),
        );
    }
    let mut pc = PendingCtx {
        armed: core::ptr::addr_of!(shared.armed),
        line,
        first: gen,
        end: index,
        scratch,
    };
    // SAFETY: `pending_step` has the callback signature bpf_loop expects and `pc` outlives
    // the call (the helper runs the callback synchronously, at most BEHIND_MAX times).
    unsafe {
        bpf_loop(
            BEHIND_MAX as u32,
            pending_step as *mut core::ffi::c_void,
            &mut pc as *mut PendingCtx as *mut core::ffi::c_void,
            0,
        )
    };
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&(*scratch).kinds) != 0 }
}
