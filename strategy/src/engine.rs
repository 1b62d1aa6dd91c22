//! The strategy's per-packet pipeline: parse -> sequence check -> book -> trigger.
//!
//! [`Engine::on_packet`] is the hot path shared by every network path and by the offline
//! replay: no allocation, no syscall, no formatting, no lock. It returns the order to send,
//! and the caller encodes it straight into its transmit buffer.

use proto::md::{BookSide, MdLine, ParseError};
use proto::order::OrderRepr;

use crate::book::{Book, BookStats};
use crate::trigger::{Trigger, TriggerConfig, TriggerStats};

/// The replaceable parse step: packet bytes -> line fields. The default is [`TextParser`]
/// ([`proto::md::parse_line`], matching the exchange's default formatter); a binary format
/// replaces this one step (see `strategy::parse`). Any
/// `fn(&[u8], u8) -> Result<MdLine, ParseError>` (such as a [`ParseFn`]) is a `Parse`. The
/// engine is generic over it, so the parser inlines into [`Engine::on_packet`] (no indirect
/// call, no `MdLine` written to memory and read back).
pub trait Parse {
    /// Parses one packet; `amount_decimals` scales the amount.
    fn parse<'a>(&self, pkt: &'a [u8], amount_decimals: u8) -> Result<MdLine<'a>, ParseError>;
}

/// A parse function pointer.
pub type ParseFn = for<'a> fn(&'a [u8], u8) -> Result<MdLine<'a>, ParseError>;

impl<F> Parse for F
where
    F: for<'a> Fn(&'a [u8], u8) -> Result<MdLine<'a>, ParseError>,
{
    #[inline]
    fn parse<'a>(&self, pkt: &'a [u8], amount_decimals: u8) -> Result<MdLine<'a>, ParseError> {
        self(pkt, amount_decimals)
    }
}

/// The default parser: [`crate::parse::parse_packet`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TextParser;

impl Parse for TextParser {
    #[inline(always)]
    fn parse<'a>(&self, pkt: &'a [u8], amount_decimals: u8) -> Result<MdLine<'a>, ParseError> {
        crate::parse::parse_packet(pkt, amount_decimals)
    }
}

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Levels per side the book holds.
    pub book_capacity: usize,
    /// Trigger and risk settings.
    pub trigger: TriggerConfig,
    /// The floor's mode: answer marked packets at once, no parse, no book
    /// ([`proto::reflect`]); every other packet is dropped.
    pub reflect: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            book_capacity: 4096,
            trigger: TriggerConfig::default(),
            reflect: false,
        }
    }
}

/// Engine counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Packets seen.
    pub packets: u64,
    /// Packets that did not parse.
    pub malformed: u64,
    /// Packets older than the last one seen (by `local_timestamp`), dropped.
    pub stale: u64,
}

/// Book + trigger + counters.
#[derive(Debug, Clone)]
pub struct Engine<P = TextParser> {
    parse: P,
    book: Book,
    trigger: Trigger,
    last_seq: u64,
    stats: EngineStats,
    cfg: EngineConfig,
}

impl Engine {
    /// An engine with the default parser.
    pub fn new(cfg: EngineConfig) -> Self {
        Self::with_parser(cfg, TextParser)
    }
}

impl<P: Parse> Engine<P> {
    /// An engine with a custom parser.
    pub fn with_parser(cfg: EngineConfig, parse: P) -> Self {
        Self {
            parse,
            book: Book::new(cfg.book_capacity),
            trigger: Trigger::new(cfg.trigger),
            last_seq: 0,
            stats: EngineStats::default(),
            cfg,
        }
    }

    /// Handles one market-data packet received at `now_ns`; returns the order to send.
    #[inline]
    pub fn on_packet(&mut self, pkt: &[u8], now_ns: u64) -> Option<OrderRepr> {
        self.stats.packets += 1;
        if self.cfg.reflect {
            return proto::reflect::marked_id(pkt).map(proto::reflect::reflect_order);
        }
        let line = match self.parse.parse(pkt, self.cfg.trigger.amount_decimals) {
            Ok(l) => l,
            Err(_) => {
                self.stats.malformed += 1;
                return None;
            }
        };
        if line.local_timestamp < self.last_seq {
            self.stats.stale += 1;
            return None;
        }
        self.last_seq = line.local_timestamp;
        let applied = self
            .book
            .update(line.side, line.price, line.amount, line.is_snapshot);
        self.trigger.check(&self.book, &line, applied, now_ns)
    }

    /// Runs the decision path on a synthetic trigger, changing nothing: the book search for
    /// the best level of `side`, the trigger rule with that level's size raised far above the
    /// threshold, the order build and its encoding into `scratch`. Keeps the code and data
    /// of the order path in the caches while no order has gone out for a while (the warming
    /// experiments; the parser needs none: every packet runs it). Returns a value derived
    /// from the work, so it is not optimised away; 0 when that side is empty.
    #[inline(never)]
    pub fn warm(&self, side: BookSide, scratch: &mut [u8; proto::order::ORDER_LEN]) -> u64 {
        let levels = self.book.side(side);
        let Some((price, old)) = levels.best() else {
            return 0;
        };
        let line = MdLine {
            exchange: b"",
            symbol: b"",
            timestamp: 0,
            local_timestamp: self.last_seq,
            is_snapshot: false,
            side,
            price,
            amount: old.saturating_add(u64::MAX / 4),
        };
        let applied = levels.would_apply(line.price, line.amount);
        let Some(order) = self.trigger.would_fire(&self.book, &line, applied) else {
            return applied.new_qty ^ applied.rank.unwrap_or(0) as u64;
        };
        order.emit(&mut proto::order::Packet::new_unchecked(&mut scratch[..]));
        u64::from(scratch[0]) ^ order.trigger_id.wrapping_add(1)
    }

    /// Starts a new session: empty book, sequence and per-session limits reset.
    pub fn reset(&mut self) {
        self.book = Book::new(self.cfg.book_capacity);
        self.trigger.new_session();
        self.last_seq = 0;
        self.stats = EngineStats::default();
    }

    /// The trigger.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// The last sequence (`local_timestamp`) applied: an older line is stale.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The book.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Book counters.
    pub fn book_stats(&self) -> BookStats {
        self.book.stats()
    }

    /// Trigger counters.
    pub fn trigger_stats(&self) -> TriggerStats {
        self.trigger.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_answers_marked_packets_only_and_parses_nothing() {
        let mut e = Engine::new(EngineConfig {
            reflect: true,
            ..EngineConfig::default()
        });
        // A line that would fire in a normal engine does not here: it is not marked.
        assert!(e.on_packet(b"d,s,1,10,true,ask,101,5", 0).is_none());
        assert!(e
            .on_packet(b"d,s,1,10,false,bid,100,500000000", 0)
            .is_none());
        let mut pkt = b"d,s,1,11,false,bid,100,5".to_vec();
        let mut mark = [0u8; proto::reflect::MARK_LEN];
        proto::reflect::write_mark(&mut mark, 11);
        pkt.extend_from_slice(&mark);
        assert_eq!(
            e.on_packet(&pkt, 0),
            Some(proto::reflect::reflect_order(11))
        );
        assert_eq!(
            (e.stats.packets, e.stats.malformed, e.stats.stale),
            (3, 0, 0),
            "counted, never parsed"
        );
    }

    #[test]
    fn stale_and_malformed_are_counted() {
        let mut e = Engine::new(EngineConfig::default());
        assert!(e.on_packet(b"d,s,1,10,true,bid,100,5", 0).is_none());
        assert!(e.on_packet(b"d,s,1,10,true,ask,101,5", 0).is_none());
        assert!(
            e.on_packet(b"d,s,1,9,false,bid,100,500000000", 0).is_none(),
            "stale"
        );
        assert!(e.on_packet(b"garbage", 0).is_none());
        let o = e
            .on_packet(b"d,s,1,10,false,bid,100,500000000", 0)
            .expect("same id is not stale");
        assert_eq!(o.trigger_id, 10);
        assert_eq!(o.price, 101 * proto::PRICE_SCALE);
        assert_eq!(
            e.stats(),
            EngineStats {
                packets: 5,
                malformed: 1,
                stale: 1
            }
        );
    }

    #[test]
    fn a_custom_parser_replaces_the_text_one() {
        // A format for the test: one header byte, then the text line.
        fn skip_one(pkt: &[u8], d: u8) -> Result<MdLine<'_>, ParseError> {
            proto::md::parse_line(pkt.get(1..).unwrap_or_default(), d)
        }
        let mut e = Engine::with_parser(EngineConfig::default(), skip_one as ParseFn);
        assert!(e.on_packet(b"xd,s,1,10,true,bid,100,5", 0).is_none());
        assert!(e.on_packet(b"xd,s,1,10,true,ask,101,5", 0).is_none());
        let o = e
            .on_packet(b"xd,s,1,11,false,bid,100,500000000", 0)
            .expect("fires through the custom parser");
        assert_eq!(o.trigger_id, 11);
        assert!(e.on_packet(b"d,s,1,12,false,bid,100,5", 0).is_none());
        assert_eq!(e.stats().malformed, 1, "the text line is not this format");
    }

    #[test]
    fn warming_decides_on_a_synthetic_trigger_and_changes_nothing() {
        let lines: [&[u8]; 4] = [
            b"d,s,1,10,true,bid,100,5",
            b"d,s,1,10,true,ask,101,5",
            b"d,s,1,11,false,ask,102,7",
            b"d,s,1,12,false,bid,99.5,3",
        ];
        let (mut warmed, mut cold) = (
            Engine::new(EngineConfig::default()),
            Engine::new(EngineConfig::default()),
        );
        for l in lines {
            assert_eq!(warmed.on_packet(l, 0), cold.on_packet(l, 0));
        }
        let mut scratch = [0u8; proto::order::ORDER_LEN];
        let before = (warmed.stats(), warmed.trigger_stats(), warmed.book_stats());
        let levels: Vec<(i64, u64)> = warmed.book().bids().iter().collect();
        assert_ne!(warmed.warm(BookSide::Bid, &mut scratch), 0);
        // A bid-side jump buys at the best ask: 101.
        let o = OrderRepr::decode(&scratch).expect("an order was encoded");
        assert_eq!(
            (o.side, o.price, o.trigger_id),
            (proto::order::Side::Buy, 101 * proto::PRICE_SCALE, 12)
        );
        assert_ne!(warmed.warm(BookSide::Ask, &mut scratch), 0);
        let o = OrderRepr::decode(&scratch).expect("an order was encoded");
        assert_eq!(
            (o.side, o.price),
            (proto::order::Side::Sell, 100 * proto::PRICE_SCALE)
        );
        assert_eq!(
            before,
            (warmed.stats(), warmed.trigger_stats(), warmed.book_stats())
        );
        assert_eq!(levels, warmed.book().bids().iter().collect::<Vec<_>>());
        // And the next real trigger is the same with or without the warming.
        let next: &[u8] = b"d,s,1,13,false,ask,101,900000000";
        assert_eq!(warmed.on_packet(next, 0), cold.on_packet(next, 0));
        assert_eq!(warmed.trigger_stats(), cold.trigger_stats());
        let empty = Engine::new(EngineConfig::default());
        assert_eq!(
            empty.warm(BookSide::Bid, &mut scratch),
            0,
            "an empty book does nothing"
        );
    }
}
