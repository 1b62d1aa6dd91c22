//! The `xdp-tx` path's user-space half: arming the program and completing its sends.
//!
//! The program decides inside the driver's receive path (see `strategy-ebpf` and
//! [`strategy_common::xtx`]); user space keeps everything else:
//!
//! * **Arming.** After each poll that applied market data or changed smoltcp's segments,
//!   [`Delegation::publish`] writes the top `--levels` of each side, the rule's settings, the
//!   quantity and risk room per side, the last sequence, the order template (smoltcp's last
//!   segment, [`crate::net::ring::TxTap`]) and the generation (market-data packets applied)
//!   into the mapped `XTX` value under its sequence lock. It arms (`enabled`) only when the
//!   session is established, every byte queued in smoltcp has been sent once (so the
//!   template's sequence number is the next one), no completion is pending, and the rule
//!   can be checked in the program (levels <= 8, a notional limit that fits 64 bits, no
//!   calibration delay to inject).
//! * **Completing.** A fire arrives as a [`FireRecord`]: user space applies its line (the
//!   engine decides the same order: a difference is counted as `mismatched`), queues the
//!   same 21 bytes in smoltcp at the sequence number the program used and lets the tap keep
//!   smoltcp's copy off the wire, records the order with the program's stamps and the
//!   user-space time it took, then re-arms with the next generation.
//!
//! The program only fires when the generation equals its own count of market-data frames,
//! so it never decides on a book that misses a packet; with user space behind, frames go
//! to user space as on the `xdp` path.

use strategy_common::xtx::{Armed, FireRecord, Level, ProgState, SideTop, MAX_LEVELS};

use super::xtx_map::XtxMap;
use crate::engine::Engine;
use crate::net::ring::TxTap;
use crate::trigger::Threshold;

/// Why the program cannot decide for this engine (checked once per session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeverArmed {
    /// Calibration delays are injected in user space.
    CalibrationDelays,
    /// `--levels` above the program's 8.
    TooManyLevels,
    /// The notional limit does not fit 64 bits.
    NotionalTooLarge,
}

impl std::fmt::Display for NeverArmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CalibrationDelays => "calibration delays are injected in user space",
            Self::TooManyLevels => "--levels above 8",
            Self::NotionalTooLarge => "notional limit does not fit 64 bits",
        })
    }
}

/// The path's counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct XtxReport {
    /// Fires completed by user space.
    pub completed: u64,
    /// Fires whose order the engine, applying the same line, did not produce identically.
    pub mismatched: u64,
    /// Fires whose packet index was not the next one user space expected.
    pub out_of_order: u64,
    /// Ring-buffer records that did not decode.
    pub bad_records: u64,
    /// Publications of the armed state.
    pub publications: u64,
    /// User-space time to complete fires: total and worst, ns.
    pub user_ns_total: u64,
    /// Worst completion, ns.
    pub user_ns_max: u64,
    /// Why the program is never armed, if it is not (printed once).
    pub never_armed: Option<NeverArmed>,
    /// The program's side, as it counts it: frames seen, orders it sent, frames left to
    /// user space and why (flattened: the same keys in the report's JSON).
    #[serde(flatten)]
    pub prog: ProgState,
    /// Delegated segments smoltcp built and the tap kept off the wire.
    pub suppressed: u64,
}

/// The user-space half of the `xdp-tx` path (module docs).
pub struct Delegation {
    map: XtxMap,
    /// Market-data packets applied this session.
    pub applied: u64,
    published: Option<(u64, bool)>,
    static_check: Option<Result<(), NeverArmed>>,
    report: XtxReport,
}

impl Delegation {
    /// Over the program's maps.
    pub fn new(map: XtxMap) -> Self {
        Self {
            map,
            applied: 0,
            published: None,
            static_check: None,
            report: XtxReport::default(),
        }
    }

    /// The next fire, if any (a record that does not decode is counted and skipped).
    #[inline]
    pub fn next_fire(&mut self) -> Option<FireRecord> {
        loop {
            match self.map.next_fire()? {
                Ok(rec) => return Some(rec),
                Err(len) => {
                    self.report.bad_records += 1;
                    tracing::warn!(len, "undecodable XTX ring record");
                }
            }
        }
    }

    /// Accounts a completed fire (called by the session after it applied the line).
    pub fn completed(&mut self, rec: &FireRecord, mismatched: bool, user_ns: u64) {
        if rec.md_index != self.applied {
            self.report.out_of_order += 1;
        }
        self.applied += 1;
        self.report.completed += 1;
        self.report.mismatched += u64::from(mismatched);
        self.report.user_ns_total += user_ns;
        self.report.user_ns_max = self.report.user_ns_max.max(user_ns);
    }

    /// Can the program check this engine's rule at all (checked once)?
    fn static_check(engine: &Engine, delays: bool) -> Result<(), NeverArmed> {
        let t = engine.trigger().config();
        if delays {
            return Err(NeverArmed::CalibrationDelays);
        }
        if t.levels > MAX_LEVELS {
            return Err(NeverArmed::TooManyLevels);
        }
        if let Threshold::Notional { .. } = t.threshold {
            if u64::try_from(engine.trigger().notional_limit()).is_err() {
                return Err(NeverArmed::NotionalTooLarge);
            }
        }
        Ok(())
    }

    /// Publishes the armed state if the generation or the template changed, or whether it
    /// may fire did. `ready`: established, nothing pending on the session's side.
    #[inline]
    pub fn publish(&mut self, engine: &Engine, tap: &mut TxTap, ready: bool, delays: bool) {
        let check = *self
            .static_check
            .get_or_insert_with(|| Self::static_check(engine, delays));
        let enabled =
            check.is_ok() && ready && tap.has_template() && tap.all_sent() && !tap.suppressing();
        let changed = tap.take_changed();
        if !changed && self.published == Some((self.applied, enabled)) {
            return;
        }
        // Built only when published (headers copied, checksums summed): not on every poll.
        let template = tap.template();
        if let Err(why) = check {
            if self.report.never_armed.is_none() {
                tracing::warn!("xdp-tx: the program will not decide ({why}); user space decides");
                self.report.never_armed = Some(why);
            }
        }
        let a = armed(engine, self.applied, enabled, template.unwrap_or_default());
        self.map.publish(&a);
        self.published = Some((self.applied, enabled));
        self.report.publications += 1;
    }

    /// The counters, with the program's.
    pub fn report(&self, tap: &TxTap) -> XtxReport {
        XtxReport {
            prog: self.map.prog(),
            suppressed: tap.stats().suppressed,
            ..self.report
        }
    }
}

/// The armed state for `engine`'s book and rule at generation `applied`.
pub fn armed(
    engine: &Engine,
    applied: u64,
    enabled: bool,
    template: strategy_common::xtx::Template,
) -> Armed {
    let trigger = engine.trigger();
    let cfg = trigger.config();
    let levels = cfg.levels.min(MAX_LEVELS);
    let book = engine.book();
    let top = |side: &crate::book::Side| {
        let mut t = SideTop::default();
        for (i, slot) in t.levels.iter_mut().enumerate().take(levels) {
            match side.level(i) {
                Some((price, qty)) => {
                    *slot = Level { price, qty };
                    t.count += 1;
                }
                None => break,
            }
        }
        t.complete = u32::from(side.len() <= levels);
        t
    };
    let (bids, asks) = (top(book.bids()), top(book.asks()));
    let qty_against = |other: &SideTop| {
        if other.count == 0 {
            0
        } else {
            trigger.order_qty(other.levels[0].qty)
        }
    };
    // A bid-side trigger buys at the best ask; an ask-side trigger sells at the best bid.
    let order_qty = [qty_against(&asks), qty_against(&bids)];
    let (threshold_kind, threshold) = match cfg.threshold {
        Threshold::Size(t) => (0, t),
        Threshold::Notional { .. } => (1, u64::try_from(trigger.notional_limit()).unwrap_or(0)),
    };
    Armed {
        lock: 0,
        generation: applied,
        enabled: u32::from(enabled),
        levels: levels as u32,
        amount_decimals: u32::from(cfg.amount_decimals),
        threshold_kind,
        threshold,
        last_seq: engine.last_seq(),
        order_qty,
        allowed: [
            u32::from(trigger.allows(order_qty[0])),
            u32::from(trigger.allows(order_qty[1])),
        ],
        bids,
        asks,
        template,
    }
}
