//! The L2 order book: one sorted, contiguous array of levels per side.
//!
//! Each side stores `(key, qty)` pairs sorted by `key` ascending with the best level last,
//! where `key` is the price for bids and the negated price for asks. The best level is
//! therefore always at the end, the top of the book is the hot end of the array, an update
//! near the top shifts only the few levels above it, and the position found (by branch-free
//! counting near the top, binary search deeper) gives the level's rank (0 = best) with no
//! second search. Capacity is fixed at construction; the arrays never reallocate. When a
//! side is full, a new level worse than every held level is dropped, otherwise the worst
//! level is evicted; both are counted.
//!
//! A run of snapshot lines rebuilds the book: the first snapshot line after any update line
//! (or the very first line) clears both sides.

use proto::md::BookSide;

/// One price level, in the side's key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    key: i64,
    qty: u64,
}

/// What an update did to its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Rank of the level after the update (0 = best); `None` when it was removed or dropped.
    pub rank: Option<usize>,
    /// Size before (0 for a new level).
    pub old_qty: u64,
    /// Size after.
    pub new_qty: u64,
}

/// Book counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookStats {
    /// New levels dropped because the side was full and they were the worst.
    pub dropped_levels: u64,
    /// Held levels evicted to make room for a better one.
    pub evicted_levels: u64,
    /// Cancels (amount 0) of a level the book does not hold.
    pub unknown_cancels: u64,
    /// Snapshot rebuilds.
    pub rebuilds: u64,
}

/// One side.
#[derive(Debug, Clone)]
pub struct Side {
    levels: Vec<Level>,
    bid: bool,
}

impl Side {
    fn new(bid: bool, capacity: usize) -> Self {
        Self {
            levels: Vec::with_capacity(capacity.max(1)),
            bid,
        }
    }

    #[inline]
    fn key(&self, price: i64) -> i64 {
        if self.bid {
            price
        } else {
            -price
        }
    }

    #[inline]
    fn price(&self, key: i64) -> i64 {
        if self.bid {
            key
        } else {
            -key
        }
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// No levels.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Best `(price, qty)`.
    #[inline]
    pub fn best(&self) -> Option<(i64, u64)> {
        self.levels.last().map(|l| (self.price(l.key), l.qty))
    }

    /// `(price, qty)` at `rank` (0 = best).
    pub fn level(&self, rank: usize) -> Option<(i64, u64)> {
        let i = self.levels.len().checked_sub(rank + 1)?;
        self.levels.get(i).map(|l| (self.price(l.key), l.qty))
    }

    /// What [`Book::update`] would return for `(price, qty)`, without changing anything
    /// (the same search; used to warm the decision path).
    #[inline]
    pub fn would_apply(&self, price: i64, qty: u64) -> Applied {
        let key = self.key(price);
        let idx = self.position(key);
        let len = self.levels.len();
        match self.levels.get(idx).filter(|l| l.key == key) {
            Some(level) => Applied {
                rank: (qty > 0).then_some(len - 1 - idx),
                old_qty: level.qty,
                new_qty: qty,
            },
            None => Applied {
                rank: (qty > 0).then_some(len - idx),
                old_qty: 0,
                new_qty: qty,
            },
        }
    }

    /// Levels from best to worst.
    pub fn iter(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.levels.iter().rev().map(|l| (self.price(l.key), l.qty))
    }

    /// Index of the first level whose key is not below `key` (where it is or would go).
    /// Most updates touch the top few levels, at the end of the array: count the top
    /// [`Self::SCAN`] levels at or above `key` without a branch (a loop exit at a
    /// data-dependent level would mispredict on nearly every update), then the next
    /// [`Self::SCAN_DEEP`] the same way, and binary search the rest only when `key` is below
    /// all of them (a few percent of updates on the generated data).
    #[inline]
    fn position(&self, key: i64) -> usize {
        let count = |levels: &[Level]| {
            levels
                .iter()
                .map(|l| usize::from(l.key >= key))
                .sum::<usize>()
        };
        let len = self.levels.len();
        let stop = len.saturating_sub(Self::SCAN);
        let top = count(&self.levels[stop..]);
        if top < len - stop || stop == 0 {
            return len - top;
        }
        let deep_stop = stop.saturating_sub(Self::SCAN_DEEP);
        let deep = count(&self.levels[deep_stop..stop]);
        if deep < stop - deep_stop || deep_stop == 0 {
            return stop - deep;
        }
        self.levels[..deep_stop].partition_point(|l| l.key < key)
    }

    /// Levels counted branch-free from the top first.
    const SCAN: usize = 16;
    /// Levels counted branch-free next, before a binary search.
    const SCAN_DEEP: usize = 48;

    /// Removes the level at `idx`, moving the better levels above it down by one. Levels
    /// near the top (the common case) move in a short inline loop; `Vec::remove` would call
    /// `memmove` for a handful of 16-byte elements.
    #[inline]
    fn remove_at(&mut self, idx: usize) {
        let above = self.levels.len() - idx - 1;
        if above > Self::INLINE_SHIFT {
            self.levels.remove(idx);
            return;
        }
        for i in idx..self.levels.len() - 1 {
            self.levels[i] = self.levels[i + 1];
        }
        self.levels.pop();
    }

    /// Inserts `level` at `idx` (capacity is reserved), moving the better levels up by one,
    /// inline when they are few (see [`Self::remove_at`]).
    #[inline]
    fn insert_at(&mut self, idx: usize, level: Level) {
        let above = self.levels.len() - idx;
        if above > Self::INLINE_SHIFT {
            self.levels.insert(idx, level);
            return;
        }
        self.levels.push(level);
        for i in (idx + 1..self.levels.len()).rev() {
            self.levels[i] = self.levels[i - 1];
        }
        self.levels[idx] = level;
    }

    /// Levels moved by a plain loop rather than `memmove`.
    const INLINE_SHIFT: usize = 16;

    #[inline]
    fn apply(&mut self, price: i64, qty: u64, stats: &mut BookStats) -> Applied {
        let key = self.key(price);
        let len = self.levels.len();
        let idx = self.position(key);
        if let Some(level) = self.levels.get_mut(idx).filter(|l| l.key == key) {
            let old_qty = level.qty;
            if qty == 0 {
                self.remove_at(idx);
                return Applied {
                    rank: None,
                    old_qty,
                    new_qty: 0,
                };
            }
            level.qty = qty;
            return Applied {
                rank: Some(len - 1 - idx),
                old_qty,
                new_qty: qty,
            };
        }
        if qty == 0 {
            stats.unknown_cancels += 1;
            return Applied {
                rank: None,
                old_qty: 0,
                new_qty: 0,
            };
        }
        let mut idx = idx;
        if len == self.levels.capacity() {
            if idx == 0 {
                stats.dropped_levels += 1;
                return Applied {
                    rank: None,
                    old_qty: 0,
                    new_qty: qty,
                };
            }
            self.levels.remove(0);
            stats.evicted_levels += 1;
            idx -= 1;
        }
        self.insert_at(idx, Level { key, qty });
        Applied {
            rank: Some(self.levels.len() - 1 - idx),
            old_qty: 0,
            new_qty: qty,
        }
    }
}

/// The book.
#[derive(Debug, Clone)]
pub struct Book {
    bids: Side,
    asks: Side,
    in_snapshot: bool,
    stats: BookStats,
}

impl Book {
    /// A book holding at most `capacity` levels per side (allocated now, never grown).
    pub fn new(capacity: usize) -> Self {
        Self {
            bids: Side::new(true, capacity),
            asks: Side::new(false, capacity),
            in_snapshot: false,
            stats: BookStats::default(),
        }
    }

    /// Applies one line. `qty` 0 removes the level.
    #[inline]
    pub fn update(&mut self, side: BookSide, price: i64, qty: u64, is_snapshot: bool) -> Applied {
        if is_snapshot && !self.in_snapshot {
            self.bids.levels.clear();
            self.asks.levels.clear();
            self.stats.rebuilds += 1;
        }
        self.in_snapshot = is_snapshot;
        match side {
            BookSide::Bid => self.bids.apply(price, qty, &mut self.stats),
            BookSide::Ask => self.asks.apply(price, qty, &mut self.stats),
        }
    }

    /// A side.
    pub fn side(&self, side: BookSide) -> &Side {
        match side {
            BookSide::Bid => &self.bids,
            BookSide::Ask => &self.asks,
        }
    }

    /// Bids.
    pub fn bids(&self) -> &Side {
        &self.bids
    }

    /// Asks.
    pub fn asks(&self) -> &Side {
        &self.asks
    }

    /// Counters.
    pub fn stats(&self) -> BookStats {
        self.stats
    }

    /// Is the last line applied part of a snapshot?
    pub fn in_snapshot(&self) -> bool {
        self.in_snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const B: BookSide = BookSide::Bid;
    const A: BookSide = BookSide::Ask;

    #[test]
    fn snapshot_then_updates_and_ranks() {
        let mut b = Book::new(16);
        for (p, q) in [(100, 1), (99, 2), (98, 3)] {
            b.update(B, p, q, true);
        }
        for (p, q) in [(101, 4), (102, 5)] {
            b.update(A, p, q, true);
        }
        assert_eq!(b.bids().best(), Some((100, 1)));
        assert_eq!(b.asks().best(), Some((101, 4)));
        assert_eq!(
            b.update(B, 99, 10, false),
            Applied {
                rank: Some(1),
                old_qty: 2,
                new_qty: 10
            }
        );
        assert_eq!(
            b.update(A, 102, 7, false),
            Applied {
                rank: Some(1),
                old_qty: 5,
                new_qty: 7
            }
        );
        assert_eq!(
            b.update(B, 100, 0, false),
            Applied {
                rank: None,
                old_qty: 1,
                new_qty: 0
            }
        );
        assert_eq!(
            b.bids().best(),
            Some((99, 10)),
            "cancel of the top exposes the next level"
        );
        assert_eq!(b.update(B, 99, 0, false).rank, None);
        assert_eq!(b.bids().best(), Some((98, 3)));
        assert_eq!(
            b.update(B, 100, 9, false).rank,
            Some(0),
            "a new best level has rank 0"
        );
        assert_eq!(b.update(B, 50, 0, false).rank, None);
        assert_eq!(b.stats().unknown_cancels, 1);
    }

    #[test]
    fn resnapshot_rebuilds() {
        let mut b = Book::new(16);
        b.update(B, 100, 1, true);
        b.update(A, 101, 1, true);
        b.update(B, 99, 1, false);
        b.update(B, 90, 5, true);
        b.update(A, 95, 5, true);
        assert_eq!(b.bids().iter().collect::<Vec<_>>(), vec![(90, 5)]);
        assert_eq!(b.asks().iter().collect::<Vec<_>>(), vec![(95, 5)]);
        assert_eq!(b.stats().rebuilds, 2);
    }

    #[test]
    fn full_side_drops_or_evicts() {
        let mut b = Book::new(2);
        b.update(A, 10, 1, false);
        b.update(A, 11, 1, false);
        assert_eq!(
            b.update(A, 12, 1, false).rank,
            None,
            "worse than every held ask: dropped"
        );
        assert_eq!(
            b.update(A, 9, 1, false).rank,
            Some(0),
            "better: worst evicted"
        );
        assert_eq!(b.asks().iter().collect::<Vec<_>>(), vec![(9, 1), (10, 1)]);
        assert_eq!(b.stats().dropped_levels, 1);
        assert_eq!(b.stats().evicted_levels, 1);
    }

    /// A reference model: BTreeMaps, no capacity limit.
    #[derive(Default)]
    struct Model {
        bids: BTreeMap<i64, u64>,
        asks: BTreeMap<i64, u64>,
        in_snapshot: bool,
    }

    impl Model {
        fn update(&mut self, side: BookSide, price: i64, qty: u64, snap: bool) -> Option<usize> {
            if snap && !self.in_snapshot {
                self.bids.clear();
                self.asks.clear();
            }
            self.in_snapshot = snap;
            let m = if side == B {
                &mut self.bids
            } else {
                &mut self.asks
            };
            if qty == 0 {
                m.remove(&price);
                return None;
            }
            m.insert(price, qty);
            Some(if side == B {
                m.range(price + 1..).count()
            } else {
                m.range(..price).count()
            })
        }
    }

    proptest! {
        #[test]
        fn matches_the_reference_model(ops in proptest::collection::vec((any::<bool>(), proptest::prop_oneof![90i64..110, 40i64..160], 0u64..4, proptest::bool::weighted(0.02)), 1..600)) {
            // Room for every price drawn (the model has no capacity; eviction is tested
            // on its own).
            let mut book = Book::new(128);
            let mut model = Model::default();
            for (bid, price, qty, snap) in ops {
                let side = if bid { B } else { A };
                let got = book.update(side, price, qty, snap);
                let want = model.update(side, price, qty, snap);
                prop_assert_eq!(got.rank, want);
                let bids: Vec<_> = model.bids.iter().rev().map(|(&p, &q)| (p, q)).collect();
                let asks: Vec<_> = model.asks.iter().map(|(&p, &q)| (p, q)).collect();
                prop_assert_eq!(book.bids().iter().collect::<Vec<_>>(), bids);
                prop_assert_eq!(book.asks().iter().collect::<Vec<_>>(), asks);
            }
        }
    }
}
