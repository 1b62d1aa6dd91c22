//! The trigger rule on the armed top of the book (the engine's rule, checked against it in
//! `strategy/tests/xtx_equivalence.rs`).

use super::{Armed, Fire, XLine, MAX_LEVELS};

/// The trigger rule on the armed top of the book: the order to send, if this line fires.
/// The armed state must be current (the caller checks the ticket and the generation).
#[inline(always)]
pub fn decide(a: &Armed, l: &XLine) -> Option<Fire> {
    if l.is_snapshot || l.local_timestamp < a.last_seq {
        return None;
    }
    let (own, other, idx) = if l.bid {
        (&a.bids, &a.asks, 0usize)
    } else {
        (&a.asks, &a.bids, 1usize)
    };
    if a.allowed[idx] == 0 || other.count == 0 {
        return None;
    }
    let n = a.levels.min(MAX_LEVELS as u32);
    let count = own.count.min(n);
    let mut old = 0u64;
    let mut rank = 0u32;
    let mut found = false;
    let mut i = 0u32;
    while i < MAX_LEVELS as u32 {
        if i >= count {
            break;
        }
        let lv = own.levels[i as usize];
        if lv.price == l.price {
            found = true;
            old = lv.qty;
            break;
        }
        let better = if l.bid {
            lv.price > l.price
        } else {
            lv.price < l.price
        };
        if !better {
            break;
        }
        rank += 1;
        i += 1;
    }
    // Not held among the top levels: a new level, unless it is below all of them and the
    // side has more levels than are armed (then its size is unknown, and its rank >= n).
    if !found && rank == count && own.complete == 0 {
        return None;
    }
    if rank >= n || l.amount <= old {
        return None;
    }
    let increase = l.amount - old;
    if increase <= limit(a, l.price) {
        return None;
    }
    Some(Fire {
        qty: a.order_qty[idx],
        price: other.levels[0].price,
        side: idx as u8,
        trigger_id: l.local_timestamp,
    })
}

/// The largest size increase at `price` that does not fire.
#[inline(always)]
pub fn limit(a: &Armed, price: i64) -> u64 {
    if a.threshold_kind == 0 {
        a.threshold
    } else {
        // price x increase > T  <=>  increase > floor(T / price), for positive integers.
        // (Both parsers refuse a zero price; no division by zero is left for the verifier
        // either: a zero would never fire.)
        a.threshold.checked_div(price as u64).unwrap_or(u64::MAX)
    }
}
