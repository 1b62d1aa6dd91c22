//! The `xdp-tx` path's shared state and pure logic, compiled into both the XDP program and
//! the strategy, so that what the program decides is tested in user space against the
//! strategy's own parser and trigger on the same inputs.
//!
//! * [`Shared`]: one value of an mmap-able array map. User space writes [`Armed`] (the top
//!   of the book, the rule's settings, the order template and the generation: the number
//!   of market-data packets user space has applied) under a sequence lock (`lock` odd while
//!   it writes; the program checks it is even and unchanged around its reads). The program
//!   writes [`ProgState`] (its own count of market-data packets and its counters); each
//!   side writes only its own cache lines.
//! * [`LineParser`]: a byte-at-a-time parser of one CSV line that accepts a strict subset
//!   of what `proto::md::parse_line` accepts and, where it accepts, returns the same fields
//!   and the same fixed point. Anything else gives up: the frame goes to user space.
//! * [`decide`]: the trigger rule on the armed top of the book.
//! * [`Template::write_frame`]: the 75-byte order segment (Ethernet, IPv4, TCP, 21 bytes)
//!   with its TCP checksum, from the template user space took from smoltcp's last segment.
//! * [`FireRecord`]: what the program hands to user space through a BPF ring buffer when it
//!   fires: the market-data line (user space must still apply it) and the order it sent.

mod frame;
mod parse;
mod rule;

pub use frame::{fold, sum_words, Template};
pub use parse::{parse, LineParser};
pub use rule::decide;

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
    /// Sequence lock: odd while user space writes.
    pub lock: u64,
    /// Market-data packets user space has applied. The program fires only when this equals
    /// its own count: the book below is then exact.
    pub generation: u64,
    /// 0: never fire (user space decides every order).
    pub enabled: u32,
    /// Levels from the top that count (rank < levels), at most [`MAX_LEVELS`].
    pub levels: u32,
    /// Decimal places of `amount`.
    pub amount_decimals: u32,
    /// 0: size threshold; 1: notional (price x increase > `threshold`, in price x amount
    /// units).
    pub threshold_kind: u32,
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
    /// Frames seen while the armed state was not current (user space behind, rewriting or
    /// disarmed): left to user space.
    pub not_current: u64,
    /// Lines the program's parser gave up on (left to user space).
    pub unparsed: u64,
    /// Fires given up because the ring buffer was full (left to user space).
    pub ringbuf_full: u64,
    /// Fires given up because the frame could not be reshaped.
    pub reshape_failed: u64,
    /// Fires given up because user space rewrote the state during the decision.
    pub raced: u64,
    /// Padding to a cache line.
    #[cfg_attr(feature = "user", serde(skip))]
    pub _pad: u64,
}

/// One value of the shared map: the program's line first, then user space's.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    /// Written by the program.
    pub prog: ProgState,
    /// Written by user space.
    pub armed: Armed,
}

/// A fire, as the program hands it to user space.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FireRecord {
    /// The market-data packet's index (the program's count before it).
    pub md_index: u64,
    /// `bpf_ktime_get_ns` when the program started on the frame.
    pub t_start_ns: u64,
    /// `bpf_ktime_get_ns` just before it returned XDP_TX.
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

/// Offsets of [`FireRecord`] fields (for the safe decoder).
const REC_LEN: usize = 56 + MAX_LINE;

impl FireRecord {
    /// Decodes a record from the ring buffer's bytes; `None` if too short or inconsistent.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < REC_LEN {
            return None;
        }
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(w)
        };
        let u32_at = |o: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[o..o + 4]);
            u32::from_ne_bytes(w)
        };
        let mut line = [0u8; MAX_LINE];
        line.copy_from_slice(&b[56..56 + MAX_LINE]);
        let rec = Self {
            md_index: u64_at(0),
            t_start_ns: u64_at(8),
            t_tx_ns: u64_at(16),
            price: u64_at(24) as i64,
            trigger_id: u64_at(32),
            seq: u32_at(40),
            qty: u32_at(44),
            side: u32_at(48),
            line_len: u32_at(52),
            line,
        };
        (rec.line_len as usize <= MAX_LINE && rec.side <= 1).then_some(rec)
    }

    /// The line.
    pub fn line(&self) -> &[u8] {
        &self.line[..(self.line_len as usize).min(MAX_LINE)]
    }
}

const _: () = assert!(core::mem::size_of::<FireRecord>() == REC_LEN);
const _: () = assert!(core::mem::size_of::<ProgState>() == 64);
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
