//! The `xdp-tx` path's shared state and pure logic, compiled into both the XDP program and
//! the strategy, so that what the program decides is tested in user space against the
//! strategy's own parser and trigger on the same inputs.
//!
//! * [`Shared`]: one value of an mmap-able array map. User space writes [`Armed`] (the top
//!   of the book, the rule's settings, the order template and the generation: the number
//!   of market-data packets user space has applied) and publishes it with a **ticket**: a
//!   number never used before, stored last. The program reads the ticket, then the state,
//!   and fires only if it wins `compare_exchange(ticket, t, CLAIMED)`: it then owns the
//!   template's sequence number (and the state stays as it is until user space, having
//!   completed the fire, turns [`CLAIMED`] back to 0). User space takes the ticket back
//!   (to 0) before it
//!   rewrites the state or sends anything itself (a heartbeat, the session's end), so the
//!   two can never both send at one sequence number, and two runs of the program (two RX
//!   queues, two CPUs) can never both fire on one arming. The program writes [`ProgState`]
//!   (its own count of market-data packets and its counters); each side writes only its
//!   own cache lines.
//! * The program's count rides on every market-data frame it leaves to user space, as a
//!   [`TAG_LEN`]-byte tag in front of the frame ([`split_tag`]): a frame the
//!   program counted and user space never saw (an AF_XDP RX drop, a failed redirect) costs
//!   one missed decision, not the session: user space's next frame says where it is.
//! * [`Footprint`], [`pending_kinds`]: the program may decide on an armed state a few
//!   frames old when every frame user space has not applied yet lies below the armed top
//!   (module `behind`).
//! * [`LineParser`]: a byte-at-a-time parser of one CSV line that accepts a strict subset
//!   of what `proto::md::parse_line` accepts and, where it accepts, returns the same fields
//!   and the same fixed point. Anything else gives up: the frame goes to user space.
//!   [`fast::parse`] reads a line of the feed's usual layout ([`Shape`], learned by user
//!   space) a word at a time first, and leaves any other line to it.
//! * [`decide`]: the trigger rule on the armed top of the book.
//! * [`Template::write_frame`]: the 75-byte order segment (Ethernet, IPv4, TCP, 21 bytes)
//!   with its TCP checksum, from the template user space took from smoltcp's last segment.
//! * [`FireRecord`]: what the program hands to user space when it fires: the market-data
//!   line (user space must still apply it) and the order it sent. It goes through a
//!   one-record mailbox in [`Shared`] ([`Mailbox`]), not a ring: a fire needs a claimed
//!   ticket, so at most one record per arming is ever outstanding, and the program writes
//!   it after its claim and publishes it with the claimed ticket, stored last.

mod behind;
pub mod fast;
mod frame;
mod parse;
mod rule;

pub use behind::{
    level_of, pending_kinds, pending_kinds_at, Footprint, PendingSizes, BEHIND_MAX, BELOW_TOP,
    BESIDE, FOOT_BID, FOOT_PARSED, FOOT_SNAPSHOT,
};
pub use fast::Shape;
pub use frame::{fold, sum_words, Template};
pub use parse::{parse, LineParser};
pub use rule::{decide, limit};

/// The ticket word after the program's claim: not a ticket (user space issues them from 1
/// up), and not 0, so the program can tell "claimed, the state stays" from "user space is
/// writing".
pub const CLAIMED: u64 = u64::MAX;

/// Book levels per side the program can check (`--levels` may not exceed it on this path).
pub const MAX_LEVELS: usize = 8;
/// Longest market-data line the program parses (longer ones go to user space).
pub const MAX_LINE: usize = 128;
/// The order message.
pub const ORDER_LEN: usize = 21;
/// Ethernet + IPv4 + TCP headers of the order segment (no options).
pub const HEADER_LEN: usize = 14 + 20 + 20;
/// The whole order frame.
pub const FRAME_LEN: usize = HEADER_LEN + ORDER_LEN;
/// The tag the program puts in front of a market-data frame it leaves to user space (in
/// the frame's headroom, which every XDP driver reserves): a magic word and the low 32 bits
/// of the frame's index (its count before it), both little endian.
pub const TAG_LEN: usize = 8;
/// The tag's first word: `ff fe 'X' 'T'` on the wire, which as a destination MAC would be
/// a multicast address nobody uses.
pub const TAG_MAGIC: u32 = u32::from_le_bytes([0xff, 0xfe, b'X', b'T']);

/// Splits the program's tag off `frame`: the low 32 bits of its index (if tagged) and the
/// Ethernet frame behind it. Only for frames of an `xdp-tx` socket, whose program tags
/// every market-data frame it leaves to user space.
#[inline]
pub fn split_tag(frame: &[u8]) -> (Option<u32>, &[u8]) {
    let word = |o: usize| {
        frame
            .get(o..o + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    };
    match (word(0), word(4), frame.get(TAG_LEN..)) {
        (Some(TAG_MAGIC), Some(index), Some(rest)) => (Some(index), rest),
        _ => (None, frame),
    }
}

/// The 64-bit index a tag's low 32 bits stand for, near `expected` (the index user
/// space expects next): within 2^31 of it either way.
#[inline]
pub fn widen_index(low: u32, expected: u64) -> u64 {
    let delta = low.wrapping_sub(expected as u32) as i32;
    expected.wrapping_add(delta as i64 as u64)
}

/// One level: price (8 decimals) and size (amount units).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    /// Price, fixed point with 8 decimals.
    pub price: i64,
    /// Size.
    pub qty: u64,
}

/// The top of one side, best first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideTop {
    /// Best levels, best first; `count` of them valid.
    pub levels: [Level; MAX_LEVELS],
    /// Valid levels (at most the rule's `levels`).
    pub count: u32,
    /// 1 when the side holds no level beyond these.
    pub complete: u32,
}

/// What user space arms the program with.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Armed {
    /// The ticket: nonzero, never reused, while the program may claim this state;
    /// [`CLAIMED`] once the program has claimed it (the state then stays as it is until
    /// user space has completed the fire); 0 while user space writes it, or when disarmed.
    pub ticket: u64,
    /// Market-data packets user space has applied. The program fires when this equals its
    /// own count (the book below is then exact), or is a few frames short of it and no
    /// frame between can change the fire or fire itself ([`pending_kinds`]).
    pub generation: u64,
    /// Levels from the top that count (rank < levels), at most [`MAX_LEVELS`].
    pub levels: u32,
    /// Decimal places of `amount`.
    pub amount_decimals: u32,
    /// 0: size threshold; 1: notional (price x increase > `threshold`, in price x amount
    /// units).
    pub threshold_kind: u32,
    /// 1 when the order's quantity depends on the size at the other side's best level
    /// (`--cap-by-size`): a new size there then changes the order.
    pub qty_by_best: u32,
    /// The threshold (see `threshold_kind`).
    pub threshold: u64,
    /// The last sequence (`local_timestamp`) user space applied: an older line is stale.
    pub last_seq: u64,
    /// Order quantity for a bid-side trigger (buy) and an ask-side trigger (sell).
    pub order_qty: [u32; 2],
    /// 1 when the risk limits allow one more order of that side.
    pub allowed: [u32; 2],
    /// Top of the bids.
    pub bids: SideTop,
    /// Top of the asks.
    pub asks: SideTop,
    /// The order segment.
    pub template: Template,
    /// The feed's layout, for the program's fast path ([`fast`]; zero: off).
    pub shape: Shape,
}

/// The program's own state and counters (written by the program only). User space
/// reports them as they are (`user` feature: serialisable, the padding left out).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct ProgState {
    /// Market-data frames seen.
    pub md_seen: u64,
    /// Orders sent with XDP_TX.
    pub fired: u64,
    /// Frames seen while the program could not decide on the armed state: disarmed (user
    /// space rewriting it, or a fire of the program not yet completed), user space
    /// [`BEHIND_MAX`] or more frames behind, or market data on a second queue; left to user
    /// space. (Fewer frames behind: see `behind_unsafe`.)
    pub not_current: u64,
    /// Lines the program's parser gave up on (left to user space).
    pub unparsed: u64,
    /// Fires given up because the frame could not be reshaped.
    pub reshape_failed: u64,
    /// Fires given up because the ticket was gone when the program tried to claim it (user
    /// space took it back, or another run of the program claimed it first).
    pub raced: u64,
    /// Market-data frames left to user space without the tag (the frame could not grow):
    /// user space counts them itself.
    pub untagged: u64,
    /// Lines read by the fast path (the feed's learned layout, a word at a time); the rest
    /// of the lines the program parsed went through the byte-at-a-time parser.
    #[cfg_attr(feature = "user", serde(default))]
    pub fast_parsed: u64,
    /// The RX queue market data first came on, plus one (0: none yet).
    #[cfg_attr(feature = "user", serde(default))]
    pub md_queue: u64,
    /// 1 once market data came on a second RX queue: frames may then reach user space out
    /// of the program's order, so the program no longer fires (the session's orders are
    /// user space's).
    #[cfg_attr(feature = "user", serde(default))]
    pub md_spread: u64,
    /// Orders sent while user space was behind (frames before the trigger still pending,
    /// none of which could change the decision: [`pending_kinds`]); included in `fired`.
    #[cfg_attr(feature = "user", serde(default))]
    pub fired_behind: u64,
    /// Fires left to user space because a frame user space had not applied yet could
    /// change them or fire itself ([`pending_kinds`]).
    #[cfg_attr(feature = "user", serde(default))]
    pub behind_unsafe: u64,
    /// Padding to two cache lines.
    #[cfg_attr(feature = "user", serde(skip))]
    pub _pad: [u64; 4],
}

/// One value of the shared map: the program's lines first, then user space's, then the
/// program's mailbox.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    /// Written by the program.
    pub prog: ProgState,
    /// Written by user space.
    pub armed: Armed,
    /// Written by the program when it fires.
    pub fire: Mailbox,
}

/// The program's last fire (written by the program only, read by user space).
///
/// The program writes `rec` only after it won the claim of a ticket and stores that
/// ticket in `ticket` last: user space reads `ticket` (acquire), and a value it has not
/// seen means `rec` is complete. Nothing overwrites `rec` until user space has read it:
/// the next write needs the next ticket, which user space publishes after it handled this
/// record. Three cache lines of its own, the ticket in the first.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// The ticket the record was fired on (0: none yet).
    pub ticket: u64,
    /// The record.
    pub rec: FireRecord,
}

/// A fire, as the program hands it to user space.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FireRecord {
    /// The market-data packet's index (the program's count before it).
    pub md_index: u64,
    /// `bpf_ktime_get_ns` when the program started on the frame.
    pub t_start_ns: u64,
    /// `bpf_ktime_get_ns` just before it returned XDP_TX; 0 when the program claimed the
    /// arming but could not send (the frame could not be reshaped): the frame was dropped
    /// and user space handles the line as if it had received it.
    pub t_tx_ns: u64,
    /// The order's price.
    pub price: i64,
    /// The order's trigger id.
    pub trigger_id: u64,
    /// The TCP sequence number the segment carried.
    pub seq: u32,
    /// The order's quantity.
    pub qty: u32,
    /// 0 buy, 1 sell.
    pub side: u32,
    /// Bytes of `line` used.
    pub line_len: u32,
    /// The market-data line (the UDP payload).
    pub line: [u8; MAX_LINE],
}

impl Default for FireRecord {
    fn default() -> Self {
        Self {
            md_index: 0,
            t_start_ns: 0,
            t_tx_ns: 0,
            price: 0,
            trigger_id: 0,
            seq: 0,
            qty: 0,
            side: 0,
            line_len: 0,
            line: [0; MAX_LINE],
        }
    }
}

impl FireRecord {
    /// Is the record consistent (a line that fits, a side that exists)? User space reads
    /// it from memory the program writes: it checks before it trusts.
    pub fn is_consistent(&self) -> bool {
        self.line_len as usize <= MAX_LINE && self.side <= 1
    }

    /// The line.
    pub fn line(&self) -> &[u8] {
        &self.line[..(self.line_len as usize).min(MAX_LINE)]
    }
}

const _: () = assert!(core::mem::size_of::<FireRecord>() == 56 + MAX_LINE);
const _: () = assert!(core::mem::size_of::<Mailbox>() == 3 * 64);
const _: () = assert!(core::mem::size_of::<ProgState>() == 128);
const _: () = assert!(core::mem::size_of::<Template>() == 60);

/// A line as the program parsed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XLine {
    /// `local_timestamp`.
    pub local_timestamp: u64,
    /// Snapshot line.
    pub is_snapshot: bool,
    /// true: bid.
    pub bid: bool,
    /// Price, 8 decimals.
    pub price: i64,
    /// Amount, `amount_decimals` decimals.
    pub amount: u64,
}

/// The order the program sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fire {
    /// Quantity.
    pub qty: u32,
    /// Price (the other side's best).
    pub price: i64,
    /// 0 buy, 1 sell.
    pub side: u8,
    /// The line's `local_timestamp`.
    pub trigger_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_split_off_and_only_a_tag() {
        let frame = [0x01, 0x00, 0x5e, 0x7f, 0, 1, 2, 0, 0, 0, 0, 1, 8, 0];
        let mut tagged = TAG_MAGIC.to_le_bytes().to_vec();
        tagged.extend_from_slice(&7u32.to_le_bytes());
        tagged.extend_from_slice(&frame);
        assert_eq!(split_tag(&tagged), (Some(7), &frame[..]));
        assert_eq!(split_tag(&frame), (None, &frame[..]), "untagged: unchanged");
        assert_eq!(split_tag(&tagged[..6]), (None, &tagged[..6]), "too short");
    }

    #[test]
    fn a_low_index_widens_near_the_expected_one() {
        assert_eq!(widen_index(5, 3), 5);
        assert_eq!(widen_index(2, 3), 2, "behind");
        assert_eq!(widen_index(1, 0xffff_fffe), 0x1_0000_0001, "across 2^32");
        assert_eq!(
            widen_index(0xffff_ffff, 0x1_0000_0001),
            0xffff_ffff,
            "back across"
        );
    }
}
