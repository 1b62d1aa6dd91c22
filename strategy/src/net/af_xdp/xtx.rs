//! The `xdp-tx` path's user-space half: arming the program and completing its sends.
//!
//! The program decides inside the driver's receive path (see `strategy-ebpf` and
//! [`strategy_common::xtx`]); user space keeps everything else:
//!
//! * **Arming.** After each poll that applied market data or changed smoltcp's segments,
//!   [`Delegation::publish`] writes the top `--levels` of each side, the rule's settings, the
//!   quantity and risk room per side, the last sequence, the order template (smoltcp's last
//!   segment, [`crate::net::ring::TxTap`]) and the generation (market-data packets applied)
//!   into the mapped `XTX` value and hands the program a ticket. It arms only when the
//!   session is established, every byte queued in smoltcp has been sent once (so the
//!   template's sequence number is the next one), the exchange's window has room for the
//!   order, no completion is pending, and the rule can be checked in the program (levels
//!   <= 8, a notional limit that fits 64 bits, no calibration delay to inject).
//! * **Sending anything else.** Before user space queues bytes the program did not send (a
//!   heartbeat) it takes the ticket back ([`Delegation::disarm`]); if the program claimed it
//!   first, the heartbeat waits for the next idle turn (`heartbeats_deferred`). At the
//!   session's end the ticket is taken back and every fire the program made is completed
//!   and recorded ([`crate::net::NetPath::settle`]).
//! * **Where the program's count stands.** Every market-data frame the program leaves to
//!   user space carries its index in a tag in front of it (the ring strips it: [`super::rings::MultiRx`]); a fire carries it in its record. User space
//!   arms at the index after the last frame it applied, so a frame lost on the way (an RX
//!   ring drop, a failed redirect) costs the decision on that frame, not the session
//!   (`skipped_frames`, `resyncs`).
//! * **Completing.** A fire arrives as a [`FireRecord`]: user space applies its line (the
//!   engine decides the same order: a difference is counted as `mismatched`), queues the
//!   same 21 bytes in smoltcp at the sequence number the program used and lets the tap keep
//!   smoltcp's copy off the wire, records the order with the program's stamps and the
//!   user-space time it took, then re-arms with the next generation.
//!
//! The program fires when the generation equals its own count of market-data frames, or
//! when user space is a few frames behind and none of them can change the decision
//! ([`strategy_common::xtx::pending_kinds`]). Such a fire's record is held
//! ([`Delegation::take_ready`]) until user space has applied the frames before it, so the
//! engine applies the lines in the program's order and decides on the program's book;
//! otherwise frames go to user space as on the `xdp` path.

use strategy_common::xtx::{
    widen_index, Armed, FireRecord, Level, ProgState, Shape, SideTop, MAX_LEVELS,
};

use super::xtx_map::{Claimed, XtxMap};
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
    /// Frames (or fires) whose index was below one user space had already seen.
    pub out_of_order: u64,
    /// Market-data frames the program counted that never reached user space (dropped on
    /// the way): the count moved past them.
    pub skipped_frames: u64,
    /// Times user space found frames missing and moved its count to the program's.
    pub resyncs: u64,
    /// Fires completed after the first resynchronisation (a lost frame cost decisions,
    /// not the session).
    pub fired_after_resync: u64,
    /// Fires the program claimed but could not send (the frame could not be reshaped):
    /// user space handled their lines itself.
    pub claimed_unsent: u64,
    /// Fires completed at the session's end (after the last poll).
    pub settled: u64,
    /// Heartbeats put off to the next idle turn because the program had just fired.
    pub heartbeats_deferred: u64,
    /// Mailbox records that did not hold together (see `XtxMap::next_fire`).
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
    /// Fires whose record came before user space had applied every frame before it (the
    /// program fired while user space was behind): held until it had.
    #[serde(default)]
    pub held: u64,
    /// Held fires completed before every frame before them was applied: those frames were
    /// lost on the way (a later frame came, or none for [`HOLD_NS`]), or the session ended.
    #[serde(default)]
    pub held_incomplete: u64,
    /// Orders the engine decided on a frame while a fire was held (the program's window
    /// rule says this cannot happen: the fire was completed first, so the stream carries
    /// the program's bytes first).
    #[serde(default)]
    pub held_conflicts: u64,
}

/// How long a held fire waits, with the RX ring empty, for the frames before it before
/// user space takes them as lost. The program's frames reach the ring at the end of the
/// driver's poll that ran the fire, microseconds later; a drop is the only way not to.
pub const HOLD_NS: u64 = 1_000_000;

/// Which held fire [`Delegation::take_ready`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// One whose earlier frames user space has applied; with `ring_empty`, also one that
    /// has waited [`HOLD_NS`] for them.
    Ready {
        /// The last receive found the RX ring empty.
        ring_empty: bool,
    },
    /// Any (the frames before it are lost, user space must send, or the session ends).
    Now,
}

/// The user-space half of the `xdp-tx` path (module docs).
pub struct Delegation {
    map: XtxMap,
    /// The program's index of the next market-data packet user space expects (the number
    /// of packets the program had counted before it).
    applied: u64,
    published: Option<(u64, bool)>,
    /// The state last written (the book part is reused to re-arm after a send of user
    /// space's own, which changes only the template).
    last: Option<Armed>,
    /// The feed's layout for the program's fast path, learned from the first line that
    /// has one.
    shape: Shape,
    static_check: Option<Result<(), NeverArmed>>,
    /// A fire waiting for user space to apply the frames before it, and when it was read.
    held: Option<(FireRecord, u64)>,
    report: XtxReport,
}

impl Delegation {
    /// Over the program's maps.
    pub fn new(map: XtxMap) -> Self {
        Self {
            map,
            applied: 0,
            published: None,
            last: None,
            shape: Shape::default(),
            static_check: None,
            held: None,
            report: XtxReport::default(),
        }
    }

    /// The next fire, if any (a record that does not decode is counted and skipped).
    #[inline]
    pub fn next_fire(&mut self) -> Option<FireRecord> {
        loop {
            match self.map.next_fire()? {
                Ok(rec) => return Some(rec),
                Err(bad) => {
                    self.report.bad_records += 1;
                    tracing::warn!(?bad, "inconsistent XTX mailbox record");
                }
            }
        }
    }

    /// The next fire to complete, if any and if `take` lets it through: a fire is held
    /// while frames before it are still to be applied (module docs). The clock is read
    /// only for a held fire (no fire, or one not behind: one load of a mapped word).
    #[inline]
    pub fn take_ready(&mut self, take: Take) -> Option<FireRecord> {
        if self.held.is_none() {
            let rec = self.next_fire()?;
            let behind = rec.md_index > self.applied;
            self.report.held += u64::from(behind);
            self.held = Some((rec, if behind { hostsys::mono_ns() } else { 0 }));
        }
        let (rec, since) = self.held?;
        let behind = rec.md_index > self.applied;
        let waited = match take {
            Take::Ready { ring_empty: true } if behind => hostsys::mono_ns().saturating_sub(since),
            _ => 0,
        };
        if !may_complete(behind, take, waited) {
            return None;
        }
        self.report.held_incomplete += u64::from(behind);
        self.held = None;
        Some(rec)
    }

    /// A fire is held.
    #[inline]
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// The held fire's earlier frames are all applied: complete it now.
    #[inline]
    pub fn held_ready(&self) -> bool {
        matches!(self.held, Some((rec, _)) if rec.md_index <= self.applied)
    }

    /// Must the held fire be completed before a frame with this tag? Yes for a market-data
    /// frame at or after the fire's index: the frames before the fire were lost on the
    /// way.
    #[inline]
    pub fn completes_before(&self, tag: Option<u32>) -> bool {
        match (self.held, tag) {
            (Some((rec, _)), Some(low)) => widen_index(low, self.applied) >= rec.md_index,
            _ => false,
        }
    }

    /// The engine decided an order while a fire was held (counted; module docs).
    pub fn held_conflict(&mut self) {
        self.report.held_conflicts += 1;
    }

    /// Learns the feed's layout from a market-data payload, until it has one (a branch per
    /// packet after that).
    #[inline]
    pub fn learn(&mut self, payload: &[u8]) {
        if self.shape.len == 0 {
            if let Some(s) = Shape::learn(payload) {
                self.shape = s;
                self.published = None;
            }
        }
    }

    /// User space has applied the packet the program counted as `index`.
    #[inline]
    fn saw(&mut self, index: u64) {
        if index < self.applied {
            self.report.out_of_order += 1;
            return;
        }
        if index > self.applied {
            self.report.skipped_frames += index - self.applied;
            self.report.resyncs += 1;
        }
        self.applied = index + 1;
    }

    /// User space has applied a market-data frame the program left to it, with the tag
    /// the program put on it (`None`: it could not).
    #[inline]
    pub fn md_frame(&mut self, tag: Option<u32>) {
        match tag {
            Some(low) => self.saw(widen_index(low, self.applied)),
            None => self.applied += 1,
        }
    }

    /// The program fired: its ticket is gone (the next publication needs no take-back).
    #[inline]
    pub fn fired(&mut self) {
        self.map.fired();
    }

    /// Accounts a fire the program claimed and could not send; its line was handled as a
    /// received packet.
    pub fn claimed_unsent(&mut self, rec: &FireRecord) {
        self.map.fired();
        self.saw(rec.md_index);
        self.report.claimed_unsent += 1;
        self.published = None;
    }

    /// Takes the ticket back before user space sends something the program did not (a
    /// heartbeat, the session's end). `Err(Claimed)`: the program fired first; its record
    /// is in the mailbox or about to be.
    pub fn disarm(&mut self) -> Result<(), Claimed> {
        self.published = None;
        self.map.disarm()
    }

    /// A heartbeat waited for the program's fire to be completed.
    pub fn heartbeat_deferred(&mut self) {
        self.report.heartbeats_deferred += 1;
    }

    /// A fire completed after the last poll, at the session's end.
    pub fn settled(&mut self) {
        self.report.settled += 1;
    }

    /// Accounts a completed fire (called by the session after it applied the line).
    pub fn completed(&mut self, rec: &FireRecord, mismatched: bool, user_ns: u64) {
        self.map.fired();
        self.saw(rec.md_index);
        self.published = None;
        self.report.completed += 1;
        self.report.fired_after_resync += u64::from(self.report.resyncs > 0);
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

    /// May the program fire on the next arming? The rule can be checked there, the session
    /// is `ready` (established, nothing pending), smoltcp has sent every byte queued (the
    /// template's sequence number is the next one), no completion is pending and the
    /// exchange's window has room for the order.
    fn may_arm(check: Result<(), NeverArmed>, tap: &TxTap, ready: bool) -> bool {
        check.is_ok()
            && ready
            && tap.has_template()
            && tap.all_sent()
            && !tap.suppressing()
            && tap.window_has_room(strategy_common::xtx::ORDER_LEN)
    }

    /// Re-arms at once after user space sent something of its own (a heartbeat): the same
    /// book and generation, the template smoltcp's segment left. Without it the program
    /// would stay disarmed until the next poll.
    pub fn rearm(&mut self, tap: &mut TxTap, ready: bool) {
        let (Some(mut a), Some(check)) = (self.last, self.static_check) else {
            return;
        };
        let enabled = Self::may_arm(check, tap, ready);
        let _ = tap.take_changed();
        a.template = tap.template().unwrap_or_default();
        if self.map.publish(&a, enabled).is_ok() {
            self.published = Some((self.applied, enabled));
            self.report.publications += 1;
            self.last = Some(a);
        }
    }

    /// Publishes the armed state if the generation or the template changed, or whether it
    /// may fire did. `ready`: established, nothing pending on the session's side.
    #[inline]
    pub fn publish(&mut self, engine: &Engine, tap: &mut TxTap, ready: bool, delays: bool) {
        let check = *self
            .static_check
            .get_or_insert_with(|| Self::static_check(engine, delays));
        let enabled = Self::may_arm(check, tap, ready);
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
        let a = Armed {
            shape: self.shape,
            ..armed(engine, self.applied, template.unwrap_or_default())
        };
        match self.map.publish(&a, enabled) {
            Ok(()) => {
                self.published = Some((self.applied, enabled));
                self.report.publications += 1;
                self.last = Some(a);
            }
            // The program fired on the last arming: its record comes next; publish after.
            Err(Claimed) => self.published = None,
        }
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

/// May a fire read `waited` ns ago be completed now? Yes once user space is no longer
/// `behind` it (every frame before it applied), or when `take` says the frames before it
/// will not come: [`Take::Now`], or the RX ring empty after [`HOLD_NS`].
fn may_complete(behind: bool, take: Take, waited: u64) -> bool {
    !behind
        || match take {
            Take::Now => true,
            Take::Ready { ring_empty } => ring_empty && waited >= HOLD_NS,
        }
}

/// The armed state for `engine`'s book and rule at generation `applied`.
pub fn armed(engine: &Engine, applied: u64, template: strategy_common::xtx::Template) -> Armed {
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
        ticket: 0,
        generation: applied,
        levels: levels as u32,
        amount_decimals: u32::from(cfg.amount_decimals),
        threshold_kind,
        qty_by_best: u32::from(cfg.cap_by_size),
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
        shape: Shape::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fire_behind_waits_for_its_frames_or_their_loss() {
        let ready = |ring_empty| Take::Ready { ring_empty };
        assert!(
            may_complete(false, ready(false), 0),
            "nothing before it pending"
        );
        assert!(
            !may_complete(true, ready(false), 10 * HOLD_NS),
            "frames still coming"
        );
        assert!(
            !may_complete(true, ready(true), HOLD_NS - 1),
            "not waited long enough"
        );
        assert!(may_complete(true, ready(true), HOLD_NS), "lost on the way");
        assert!(
            may_complete(true, Take::Now, 0),
            "a later frame came, or the end"
        );
    }
}
