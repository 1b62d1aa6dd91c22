//! Deciding while user space is behind.
//!
//! The armed state is user space's book after the frames it has applied (the generation
//! `G`). A frame `I > G` arrives while frames `G..I` are still on their way to user space
//! (in its RX ring, or being applied): before this module the program then left `I` to user
//! space, so in a burst, exactly when orders matter, `xdp-tx` fell back to the `xdp` path
//! (58 of 100 orders from the program at an offered 500 k/s, docs/results/load.md).
//!
//! The program parses every market-data frame and keeps each one's **footprint** (side,
//! price, amount, `local_timestamp`, or "not parsed") in a ring of [`BEHIND_MAX`] entries
//! indexed by the frame's count. When frame `I`'s line fires on the armed state of
//! generation `G < I`, the program sends the order only if the pending frames `G..I`,
//! applied by user space first, can neither change that fire nor fire themselves (a line
//! that does not fire on the armed state is left to user space in any case: only a fire
//! has to be right). Each pending frame must be parsed by the program (its parser accepts a
//! strict subset of user space's, with the same values), not a snapshot, no later than
//! `I`'s line (user space's stale check on `I` then sees the same last sequence) and not
//! stale itself (user space would drop it, not apply it); and then
//! **all** of them of one of two kinds ([`pending_kinds`]):
//! - [`BELOW_TOP`]: on a side whose armed top is full (`levels` levels held), at a price
//!   strictly worse than its last armed level. Such frames leave every armed level as it
//!   is, so each one ranks below the top and cannot fire, and `I` meets the armed top.
//! - [`BESIDE`]: on the fire's side, strictly below its price, or a new size or a removal
//!   of an armed level above it (its rank can only fall, the size at its price stays); on
//!   the other side, strictly behind the best, or a new size of the best when the order's
//!   size does not depend on it (the order's price and size stay); and its own increase
//!   (over the size user space will hold at its price then: [`PendingSizes`]) within the
//!   rule's limit, so it cannot fire whatever its rank.
//!
//! The kinds do not mix: a frame beside the fire may remove a level of the top, after
//! which a frame that was below it ranks inside. Anything else (a pending frame of neither
//! kind, more than [`BEHIND_MAX`] - 1 pending) leaves `I` to user space as before, counted
//! (`behind_unsafe`, `not_current`). User space completes such a fire only after it has
//! applied every frame before it, in the program's order (the fire's line is the book's
//! next update), so the engine decides on the book the program decided on.

use super::rule::limit;
use super::{Armed, XLine, MAX_LEVELS};

/// Footprints kept: the program decides with at most `BEHIND_MAX - 1` frames pending.
pub const BEHIND_MAX: usize = 32;

/// The line was parsed (the other fields hold).
pub const FOOT_PARSED: u32 = 1;
/// A bid.
pub const FOOT_BID: u32 = 2;
/// A snapshot line.
pub const FOOT_SNAPSHOT: u32 = 4;

/// A pending frame strictly below a full armed top (module docs).
pub const BELOW_TOP: u32 = 1;
/// A pending frame beside the trigger's inputs that cannot fire (module docs).
pub const BESIDE: u32 = 2;

/// What the program read of one market-data frame (a slot of the footprint ring).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The frame's index plus one (0: never written).
    pub index1: u64,
    /// Its line's `local_timestamp`.
    pub local_timestamp: u64,
    /// Its price, 8 decimals.
    pub price: i64,
    /// Its amount, `amount_decimals` decimals.
    pub amount: u64,
    /// [`FOOT_PARSED`], [`FOOT_BID`], [`FOOT_SNAPSHOT`].
    pub flags: u32,
    /// Padding (explicit).
    pub _pad: u32,
}

impl Footprint {
    /// The footprint of frame `index`, whose line the program read as `line` (`None`: it
    /// did not parse it).
    #[inline(always)]
    pub fn of(index: u64, line: Option<&XLine>) -> Self {
        match line {
            Some(l) => Self {
                index1: index + 1,
                local_timestamp: l.local_timestamp,
                price: l.price,
                amount: l.amount,
                flags: FOOT_PARSED
                    | if l.bid { FOOT_BID } else { 0 }
                    | if l.is_snapshot { FOOT_SNAPSHOT } else { 0 },
                _pad: 0,
            },
            None => Self {
                index1: index + 1,
                ..Self::default()
            },
        }
    }
}

/// The sizes user space will hold at each armed level once it has applied the pending
/// frames checked so far (the armed sizes to begin with): what a later pending frame's
/// increase is measured against.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingSizes {
    /// Per armed bid level.
    pub bids: [u64; MAX_LEVELS],
    /// Per armed ask level.
    pub asks: [u64; MAX_LEVELS],
    /// The last sequence user space will have applied (a pending line older than it is
    /// stale there: dropped, not applied).
    pub last_seq: u64,
}

impl PendingSizes {
    /// The armed sizes of `a`.
    #[inline(always)]
    pub fn of(a: &Armed) -> Self {
        let mut s = Self::default();
        let mut j = 0;
        while j < MAX_LEVELS {
            s.bids[j] = a.bids.levels[j].qty;
            s.asks[j] = a.asks.levels[j].qty;
            j += 1;
        }
        s.last_seq = a.last_seq;
        s
    }
}

/// The kinds ([`BELOW_TOP`], [`BESIDE`]) of the pending frame `index` (footprint `f`) with
/// respect to the armed state `a` and the line `l`, **which fires on `a`** ([`decide`]);
/// 0 whenever in doubt (the slot holds another frame; the line was not parsed, is a
/// snapshot, is later than `l`, or is stale: older than the last sequence user space will
/// have applied). Call it on the pending frames in their order with the
/// same `sizes` (from [`PendingSizes::of`]); the program sends the fire only if the kinds
/// of all of them share a bit (module docs).
///
/// [`decide`]: super::decide
#[inline(always)]
pub fn pending_kinds(
    a: &Armed,
    sizes: &mut PendingSizes,
    f: &Footprint,
    index: u64,
    l: &XLine,
) -> u32 {
    pending_kinds_at(a, sizes, f, index, l, level_of(a, f))
}

/// The armed level of `f`'s side at `f`'s price: its index, or [`MAX_LEVELS`] if none.
#[inline(always)]
pub fn level_of(a: &Armed, f: &Footprint) -> usize {
    let side = if f.flags & FOOT_BID != 0 {
        &a.bids
    } else {
        &a.asks
    };
    let mut j = 0;
    while j < MAX_LEVELS {
        if j as u32 >= side.count {
            return MAX_LEVELS;
        }
        if side.levels[j].price == f.price {
            return j;
        }
        j += 1;
    }
    MAX_LEVELS
}

/// [`pending_kinds`] with the frame's armed level given ([`level_of`]; the program passes it
/// through memory, so that the verifier follows one path after the search, not one per
/// level).
#[inline(always)]
pub fn pending_kinds_at(
    a: &Armed,
    sizes: &mut PendingSizes,
    f: &Footprint,
    index: u64,
    l: &XLine,
    level: usize,
) -> u32 {
    if f.index1 != index.wrapping_add(1)
        || f.flags & FOOT_PARSED == 0
        || f.flags & FOOT_SNAPSHOT != 0
        || f.local_timestamp > l.local_timestamp
        || f.local_timestamp < sizes.last_seq
    {
        // (A stale line: user space drops it, so the sizes below would no longer be its.)
        return 0;
    }
    sizes.last_seq = f.local_timestamp;
    let bid = f.flags & FOOT_BID != 0;
    // Strictly worse than `than` on the frame's side.
    let worse = |than: i64| if bid { f.price < than } else { f.price > than };
    let (side, held) = if bid {
        (&a.bids, &mut sizes.bids)
    } else {
        (&a.asks, &mut sizes.asks)
    };
    let n = a.levels.min(MAX_LEVELS as u32) as usize;
    let at_level = if level < MAX_LEVELS && (level as u32) < side.count {
        // The size user space holds there before this frame; this frame's after it.
        let k = level & (MAX_LEVELS - 1);
        let before = held[k];
        held[k] = f.amount;
        Some(before)
    } else {
        None
    };
    let mut kinds = 0;
    if n > 0 && side.count as usize >= n && worse(side.levels[(n - 1) & (MAX_LEVELS - 1)].price) {
        kinds |= BELOW_TOP;
    }
    let leaves = if bid == l.bid {
        // Below the fire's price (the levels above it and the size at it stay), or a new
        // size or a removal of a level above it (removals only lower its rank: a fire
        // stays the same fire). Never at its price, never a new level above it.
        worse(l.price) || (f.price != l.price && at_level.is_some())
    } else {
        // Behind the other side's best (the order's price and size stay), or a new size of
        // the best itself where the order's size does not depend on it.
        side.count > 0
            && (worse(side.levels[0].price) || (a.qty_by_best == 0 && level == 0 && f.amount > 0))
    };
    // Its increase is at most its amount over what user space holds at its price (0 for a
    // price off the armed levels: the increase is then at most the amount).
    let cannot_fire = f.amount <= at_level.unwrap_or(0).saturating_add(limit(a, f.price));
    if leaves && cannot_fire {
        kinds |= BESIDE;
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xtx::{Level, SideTop};

    const P: i64 = 100_000_000;

    fn side(prices: &[i64]) -> SideTop {
        let mut s = SideTop::default();
        for (slot, &p) in s.levels.iter_mut().zip(prices) {
            *slot = Level {
                price: p * P,
                qty: 10,
            };
            s.count += 1;
        }
        s
    }

    /// Bids 100, 99, 98; asks 101, 102, 103; three levels; a size threshold of 1,000.
    fn armed() -> Armed {
        Armed {
            levels: 3,
            threshold: 1_000,
            bids: side(&[100, 99, 98]),
            asks: side(&[101, 102, 103]),
            ..Armed::default()
        }
    }

    fn xline(bid: bool, price: i64, amount: u64, lts: u64) -> XLine {
        XLine {
            local_timestamp: lts,
            is_snapshot: false,
            bid,
            price: price * P,
            amount,
        }
    }

    fn foot(index: u64, bid: bool, price: i64, amount: u64, lts: u64) -> Footprint {
        Footprint::of(index, Some(&xline(bid, price, amount, lts)))
    }

    /// The trigger: a bid at 99 (rank 1), line 10.
    fn trigger() -> XLine {
        xline(true, 99, 5_000, 10)
    }

    fn kinds(a: &Armed, f: &Footprint) -> u32 {
        pending_kinds(a, &mut PendingSizes::of(a), f, 7, &trigger())
    }

    #[test]
    fn below_a_full_top() {
        let a = armed();
        let both = BELOW_TOP | BESIDE;
        assert_eq!(
            kinds(&a, &foot(7, true, 97, 5, 10)),
            both,
            "a deeper bid, small"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 97, 5_000, 10)),
            BELOW_TOP,
            "deeper, large"
        );
        assert_eq!(
            kinds(&a, &foot(7, false, 104, 5_000, 10)),
            BELOW_TOP,
            "a deeper ask"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 98, 5_000, 10)),
            0,
            "the last bid level, large"
        );
        assert_eq!(
            kinds(&a, &foot(7, false, 103, 5_000, 10)),
            0,
            "the last ask level"
        );
        let short = Armed {
            bids: side(&[100, 99]),
            ..armed()
        };
        assert_eq!(
            kinds(&short, &foot(7, true, 50, 5_000, 10)),
            0,
            "a short side"
        );
        let none = Armed {
            levels: 0,
            ..armed()
        };
        assert_eq!(
            kinds(&none, &foot(7, false, 150, 5_000, 10)),
            0,
            "no levels"
        );
    }

    #[test]
    fn beside_the_trigger_and_unable_to_fire() {
        let a = armed();
        assert_eq!(
            kinds(&a, &foot(7, true, 98, 1_000, 10)),
            BESIDE,
            "below the trigger's price"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 98, 0, 10)),
            BESIDE,
            "a level removed below it"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 98, 1_010, 10)),
            BESIDE,
            "98: 10 -> 1,010"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 98, 1_011, 10)),
            0,
            "could fire itself"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 97, 1_001, 10)),
            BELOW_TOP,
            "off the levels"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 100, 500, 10)),
            BESIDE,
            "a new size above it"
        );
        assert_eq!(
            kinds(&a, &foot(7, true, 100, 0, 10)),
            BESIDE,
            "a level above it removed"
        );
        let added = Footprint {
            price: 99 * P + P / 2,
            ..foot(7, true, 0, 5, 10)
        };
        assert_eq!(kinds(&a, &added), 0, "a level above it added");
        assert_eq!(
            kinds(&a, &foot(7, true, 99, 5, 10)),
            0,
            "at the trigger's price"
        );
        assert_eq!(kinds(&a, &foot(7, true, 120, 5, 10)), 0, "a new best bid");
        assert_eq!(
            kinds(&a, &foot(7, false, 102, 5, 10)),
            BESIDE,
            "behind the best ask"
        );
        assert_eq!(
            kinds(&a, &foot(7, false, 101, 5, 10)),
            BESIDE,
            "a new size of the best ask"
        );
        assert_eq!(
            kinds(&a, &foot(7, false, 101, 0, 10)),
            0,
            "the best ask removed"
        );
        let capped = Armed {
            qty_by_best: 1,
            ..armed()
        };
        assert_eq!(
            kinds(&capped, &foot(7, false, 101, 5, 10)),
            0,
            "the order's size would change"
        );
        assert_eq!(
            kinds(&a, &foot(7, false, 100, 5, 10)),
            0,
            "an ask through the best"
        );
        let notional = Armed {
            threshold_kind: 1,
            threshold: 1_000 * 98 * P as u64,
            ..armed()
        };
        let at_98 = |amount| kinds(&notional, &foot(7, true, 98, amount, 10));
        assert_eq!(at_98(1_010), BESIDE, "98 x (1,010 - 10)");
        assert_eq!(at_98(1_011), 0, "98 x (1,011 - 10)");
        let empty = Armed {
            asks: side(&[]),
            ..armed()
        };
        assert_eq!(
            kinds(&empty, &foot(7, false, 150, 5, 10)),
            0,
            "the other side empty"
        );
    }

    /// The increase of a later frame is measured against what the earlier ones left.
    #[test]
    fn sizes_carry_from_one_pending_frame_to_the_next() {
        let a = armed();
        let mut sizes = PendingSizes::of(&a);
        let mut k = |price: i64, amount: u64| {
            pending_kinds(
                &a,
                &mut sizes,
                &foot(7, true, price, amount, 10),
                7,
                &trigger(),
            )
        };
        assert_eq!(k(98, 1_010), BESIDE, "10 -> 1,010");
        assert_eq!(k(98, 2_000), BESIDE, "1,010 -> 2,000");
        assert_eq!(k(98, 0), BESIDE, "removed");
        assert_eq!(k(98, 1_001), 0, "0 -> 1,001: it would fire");
    }

    #[test]
    fn in_doubt_neither() {
        let a = armed();
        assert_eq!(
            kinds(&a, &foot(7, true, 97, 5, 11)),
            0,
            "later than the trigger"
        );
        let mut sizes = PendingSizes::of(&a);
        let f = foot(7, true, 97, 5, 10);
        assert_eq!(pending_kinds(&a, &mut sizes, &f, 8, &trigger()), 0, "slot");
        let never = Footprint::default();
        assert_eq!(
            pending_kinds(&a, &mut sizes, &never, 0, &trigger()),
            0,
            "never written"
        );
        assert_eq!(kinds(&a, &Footprint::of(7, None)), 0, "not parsed");
        let mut snap = foot(7, true, 97, 5, 10);
        snap.flags |= FOOT_SNAPSHOT;
        assert_eq!(kinds(&a, &snap), 0, "a snapshot");
    }
}
