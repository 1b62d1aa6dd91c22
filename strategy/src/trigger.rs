//! The trigger: a large size increase near the top of the book fires an aggressive order.
//!
//! An update fires when it is not a snapshot line, its level's rank after the update is
//! below `levels` (default 5), and it increases the level's size by *more than* the
//! threshold (default 50,000,000 units; or, in notional form, price x increase > $X). The
//! order is an aggressive limit at the best price of the other side: a bid-side increase
//! buys at the best ask, an ask-side increase sells at the best bid; nothing fires when that
//! side is empty. Risk limits (orders per session, orders per second, quantity) hold a
//! trigger back and count it. Time is passed in, never read here.

use proto::md::{BookSide, MdLine};
use proto::order::{OrderRepr, Side};

use crate::book::{Applied, Book};

/// The size threshold, in one of its two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    /// Increase of the level's size, in amount units.
    Size(u64),
    /// Price x increase in dollars (`amount` scaled by `10^amount_decimals`).
    Notional {
        /// Dollars.
        dollars: u64,
    },
}

/// Trigger and risk settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerConfig {
    /// Levels from the top that count (rank < levels).
    pub levels: usize,
    /// Threshold the increase must exceed.
    pub threshold: Threshold,
    /// Decimal places of `amount` (notional conversion and size cap).
    pub amount_decimals: u8,
    /// Order quantity.
    pub qty: u32,
    /// Cap the quantity at the size shown at the other side's best price.
    pub cap_by_size: bool,
    /// Max orders per session.
    pub max_orders: u64,
    /// Max orders per second (0 = no limit).
    pub max_per_sec: u32,
    /// Max quantity per order (a larger one is held back).
    pub max_qty: u32,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            levels: 5,
            threshold: Threshold::Size(50_000_000),
            amount_decimals: 0,
            qty: 1,
            cap_by_size: false,
            max_orders: 1_000_000,
            max_per_sec: 0,
            max_qty: u32::MAX,
        }
    }
}

/// Trigger counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerStats {
    /// Orders fired.
    pub fired: u64,
    /// Triggers held back by a risk limit.
    pub held_back: u64,
    /// Triggers with the other side empty.
    pub other_side_empty: u64,
}

/// Trigger state.
#[derive(Debug, Clone)]
pub struct Trigger {
    cfg: TriggerConfig,
    /// For a notional threshold: dollars in price x amount units (computed once).
    notional_limit: i128,
    window_start_ns: u64,
    in_window: u32,
    stats: TriggerStats,
}

impl Trigger {
    /// A trigger with these settings.
    pub fn new(cfg: TriggerConfig) -> Self {
        let notional_limit = match cfg.threshold {
            Threshold::Size(_) => 0,
            Threshold::Notional { dollars } => 10i128
                .checked_pow(u32::from(cfg.amount_decimals))
                .and_then(|s| s.checked_mul(i128::from(proto::PRICE_SCALE)))
                .and_then(|s| s.checked_mul(i128::from(dollars)))
                .unwrap_or(i128::MAX),
        };
        Self {
            cfg,
            notional_limit,
            window_start_ns: 0,
            in_window: 0,
            stats: TriggerStats::default(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &TriggerConfig {
        &self.cfg
    }

    /// For a notional threshold, the limit of price x increase (price and amount units).
    pub fn notional_limit(&self) -> i128 {
        self.notional_limit
    }

    /// Would the risk limits let an order of `qty` out now? Conservative on the per-second
    /// limit (the window may reset by the time the order is checked; it never closes).
    pub fn allows(&self, qty: u32) -> bool {
        self.stats.fired < self.cfg.max_orders
            && qty <= self.cfg.max_qty
            && (self.cfg.max_per_sec == 0 || self.in_window < self.cfg.max_per_sec)
    }

    /// The quantity an order against a side whose best size is `best_qty` gets.
    pub fn order_qty(&self, best_qty: u64) -> u32 {
        let mut qty = self.cfg.qty;
        if self.cfg.cap_by_size {
            let whole = best_qty / 10u64.pow(u32::from(self.cfg.amount_decimals));
            qty = qty.min(u32::try_from(whole).unwrap_or(u32::MAX)).max(1);
        }
        qty
    }

    /// Counters.
    pub fn stats(&self) -> TriggerStats {
        self.stats
    }

    /// Resets the per-session limits (new session).
    pub fn new_session(&mut self) {
        self.stats = TriggerStats::default();
        self.in_window = 0;
    }

    #[inline]
    fn exceeds(&self, price: i64, increase: u64) -> bool {
        match self.cfg.threshold {
            Threshold::Size(t) => increase > t,
            Threshold::Notional { .. } => {
                i128::from(price) * i128::from(increase) > self.notional_limit
            }
        }
    }

    /// Checks one applied update; returns the order to send, if any. The rejection of an
    /// ordinary update (nearly every one) is inlined into the caller; building an order is
    /// out of line.
    #[inline(always)]
    pub fn check(
        &mut self,
        book: &Book,
        line: &MdLine<'_>,
        applied: Applied,
        now_ns: u64,
    ) -> Option<OrderRepr> {
        if !self.fires(line, applied) {
            return None;
        }
        self.fire(book, line.side, line.local_timestamp, now_ns)
    }

    /// The rule: not a snapshot, within the top levels, an increase above the threshold.
    /// Every condition evaluated, combined with `&` into one branch, which is nearly always
    /// "no": separate `||` branches on rank and size change would each be a coin toss for
    /// the branch predictor on ordinary updates.
    #[inline(always)]
    fn fires(&self, line: &MdLine<'_>, applied: Applied) -> bool {
        let rank = applied.rank.unwrap_or(usize::MAX);
        let increase = applied.new_qty.saturating_sub(applied.old_qty);
        !line.is_snapshot
            & (rank < self.cfg.levels)
            & (increase > 0)
            & self.exceeds(line.price, increase)
    }

    /// The order `check` would build for this update, ignoring the risk limits and changing
    /// nothing (used to warm the decision path on a synthetic trigger).
    #[inline]
    pub fn would_fire(
        &self,
        book: &Book,
        line: &MdLine<'_>,
        applied: Applied,
    ) -> Option<OrderRepr> {
        if !self.fires(line, applied) {
            return None;
        }
        let (other, order_side) = match line.side {
            BookSide::Bid => (book.asks(), Side::Buy),
            BookSide::Ask => (book.bids(), Side::Sell),
        };
        let (best, _) = other.best()?;
        Some(OrderRepr {
            qty: self.cfg.qty,
            price: best,
            side: order_side,
            trigger_id: line.local_timestamp,
        })
    }

    /// A trigger: the order at the other side's best price, if the risk limits allow.
    #[inline(never)]
    fn fire(
        &mut self,
        book: &Book,
        side: BookSide,
        trigger_id: u64,
        now_ns: u64,
    ) -> Option<OrderRepr> {
        let (other, order_side) = match side {
            BookSide::Bid => (book.asks(), Side::Buy),
            BookSide::Ask => (book.bids(), Side::Sell),
        };
        let Some((best, best_qty)) = other.best() else {
            self.stats.other_side_empty += 1;
            return None;
        };
        let qty = self.order_qty(best_qty);
        if !self.risk_ok(qty, now_ns) {
            self.stats.held_back += 1;
            return None;
        }
        self.stats.fired += 1;
        Some(OrderRepr {
            qty,
            price: best,
            side: order_side,
            trigger_id,
        })
    }

    fn risk_ok(&mut self, qty: u32, now_ns: u64) -> bool {
        if self.stats.fired >= self.cfg.max_orders || qty > self.cfg.max_qty {
            return false;
        }
        if self.cfg.max_per_sec > 0 {
            if now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
                self.window_start_ns = now_ns;
                self.in_window = 0;
            }
            if self.in_window >= self.cfg.max_per_sec {
                return false;
            }
            self.in_window += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Book {
        let mut b = Book::new(32);
        for i in 0..10 {
            b.update(BookSide::Bid, 100 - i, 10, true);
            b.update(BookSide::Ask, 101 + i, 20, true);
        }
        b
    }

    fn fire(
        t: &mut Trigger,
        b: &mut Book,
        side: BookSide,
        price: i64,
        qty: u64,
        snap: bool,
    ) -> Option<OrderRepr> {
        let a = b.update(side, price, qty, snap);
        t.check(b, &line(side, price, qty, snap, 7), a, 0)
    }

    fn line(
        side: BookSide,
        price: i64,
        amount: u64,
        is_snapshot: bool,
        id: u64,
    ) -> MdLine<'static> {
        MdLine {
            exchange: b"x",
            symbol: b"y",
            timestamp: 0,
            local_timestamp: id,
            is_snapshot,
            side,
            price,
            amount,
        }
    }

    #[test]
    fn threshold_boundaries() {
        let mut b = book();
        let mut t = Trigger::new(TriggerConfig {
            threshold: Threshold::Size(100),
            ..TriggerConfig::default()
        });
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Bid, 100, 110, false),
            None,
            "equal is not more"
        );
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Bid, 100, 211, false),
            Some(OrderRepr {
                qty: 1,
                price: 101,
                side: Side::Buy,
                trigger_id: 7
            }),
            "bid increase buys at the best ask"
        );
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Ask, 105, 200, false),
            Some(OrderRepr {
                qty: 1,
                price: 100,
                side: Side::Sell,
                trigger_id: 7
            }),
            "ask increase at rank 4 sells at the best bid"
        );
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Ask, 106, 500, false),
            None,
            "rank 5 is not in the top 5"
        );
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Bid, 99, 500, true),
            None,
            "never on snapshot lines"
        );
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Bid, 100, 0, false),
            None,
            "a cancel never fires"
        );
    }

    #[test]
    fn other_side_empty_never_fires() {
        let mut b = Book::new(8);
        b.update(BookSide::Bid, 100, 1, true);
        let mut t = Trigger::new(TriggerConfig {
            threshold: Threshold::Size(10),
            ..TriggerConfig::default()
        });
        assert_eq!(fire(&mut t, &mut b, BookSide::Bid, 100, 1000, false), None);
        assert_eq!(t.stats().other_side_empty, 1);
    }

    #[test]
    fn notional_form() {
        // Real prices: 6593.5 USD; 151 x 6593.5 = $995,618.5 < $1M < 152 x 6593.5 = $1,002,212.
        let p = 659_350_000_000;
        let mut b = Book::new(8);
        b.update(BookSide::Bid, p, 1, false);
        b.update(BookSide::Ask, p + 50_000_000, 1, false);
        let mut t = Trigger::new(TriggerConfig {
            threshold: Threshold::Notional { dollars: 1_000_000 },
            ..TriggerConfig::default()
        });
        assert_eq!(
            fire(&mut t, &mut b, BookSide::Bid, p, 1 + 151, false),
            None,
            "$995,618.5"
        );
        assert!(
            fire(&mut t, &mut b, BookSide::Bid, p, 1 + 151 + 152, false).is_some(),
            "$1,002,212"
        );
    }

    #[test]
    fn risk_limits_hold_back_and_count() {
        let mut b = book();
        let cfg = TriggerConfig {
            threshold: Threshold::Size(1),
            max_orders: 2,
            ..TriggerConfig::default()
        };
        let mut t = Trigger::new(cfg);
        let mut q = 10;
        let mut fired = 0;
        for _ in 0..5 {
            q += 10;
            fired += usize::from(fire(&mut t, &mut b, BookSide::Bid, 100, q, false).is_some());
        }
        assert_eq!(fired, 2);
        assert_eq!(t.stats().held_back, 3);

        let mut t = Trigger::new(TriggerConfig {
            threshold: Threshold::Size(1),
            max_per_sec: 2,
            ..TriggerConfig::default()
        });
        let mut fired_at = Vec::new();
        for (i, now) in [0u64, 1, 2, 999_999_999, 1_000_000_001]
            .into_iter()
            .enumerate()
        {
            q += 10;
            let a = b.update(BookSide::Bid, 100, q, false);
            if t.check(&b, &line(BookSide::Bid, 100, q, false, i as u64), a, now)
                .is_some()
            {
                fired_at.push(now);
            }
        }
        assert_eq!(fired_at, vec![0, 1, 1_000_000_001]);

        let mut t = Trigger::new(TriggerConfig {
            threshold: Threshold::Size(1),
            qty: 5,
            max_qty: 4,
            ..TriggerConfig::default()
        });
        q += 10;
        assert_eq!(fire(&mut t, &mut b, BookSide::Bid, 100, q, false), None);
        assert_eq!(t.stats().held_back, 1);
    }

    #[test]
    fn qty_capped_by_size() {
        let mut b = book();
        let mut t = Trigger::new(TriggerConfig {
            threshold: Threshold::Size(1),
            qty: 1000,
            cap_by_size: true,
            ..TriggerConfig::default()
        });
        let o = fire(&mut t, &mut b, BookSide::Bid, 100, 50, false).expect("fires");
        assert_eq!(o.qty, 20, "capped at the best ask's size");
    }
}
