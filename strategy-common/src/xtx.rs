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

/// The order segment's headers, taken from smoltcp's last segment, and the part of the TCP
/// checksum that does not depend on the message.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// Ethernet, IPv4 (total length 61, checksum filled) and TCP (sequence and ACK numbers,
    /// window, PSH|ACK, checksum 0) headers.
    pub header: [u8; HEADER_LEN],
    /// Padding (explicit).
    pub _pad: [u8; 2],
    /// One's-complement sum (unfolded) of the pseudo header and the TCP header.
    pub partial_sum: u32,
}

impl Default for Template {
    fn default() -> Self {
        Self {
            header: [0; HEADER_LEN],
            _pad: [0; 2],
            partial_sum: 0,
        }
    }
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

/// The program's own state and counters (written by the program only).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

const PRICE_DECIMALS: u32 = 8;
const MAX_FIELD: u32 = 64;

/// A byte-at-a-time parser of one line (the program runs it in a bounded loop). Accepts:
/// eight comma-separated fields; exchange and symbol non-empty, at most 64 bytes;
/// timestamps 1 to 19 digits; `true`/`false`; `bid`/`ask`; price and amount as unsigned
/// decimals with at most one dot, at least one digit, no more fractional digits than their
/// scale and at most 18 digits once scaled; price above zero. Everything else: `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineParser {
    field: u32,
    len: u32,
    bad: u32,
    digits: u32,
    frac: u32,
    dot: u32,
    word: u64,
    value: u64,
    lts: u64,
    snapshot: u32,
    bid: u32,
    price: u64,
    price_frac: u32,
    price_digits: u32,
    /// End of line: 0 none, 1 after `\r`, 2 after `\n` or `\r\n` (nothing may follow).
    eol: u32,
}

impl LineParser {
    /// Feeds one byte.
    #[inline(always)]
    pub fn step(&mut self, b: u8) {
        // One trailing `\n`, `\r\n` or `\r` ends the line (as `proto::md::trim_eol`
        // strips it); a byte after it, or either byte anywhere else, is outside the grammar.
        if self.eol != 0 {
            self.bad |= (self.eol == 2 || b != b'\n') as u32;
            self.eol = 2;
            return;
        }
        if b == b'\r' {
            self.eol = 1;
            return;
        }
        if b == b'\n' {
            self.eol = 2;
            return;
        }
        if b == b',' {
            self.close_field();
            return;
        }
        self.len += 1;
        let d = b.wrapping_sub(b'0');
        match self.field {
            0 | 1 => self.bad |= (self.len > MAX_FIELD) as u32,
            2 | 3 => {
                if d > 9 || self.len > 19 {
                    self.bad = 1;
                } else {
                    self.value = self.value * 10 + u64::from(d);
                }
            }
            4 | 5 => {
                if self.len > 5 {
                    self.bad = 1;
                } else {
                    self.word = (self.word << 8) | u64::from(b);
                }
            }
            6 | 7 => {
                if d <= 9 {
                    self.digits += 1;
                    self.frac += self.dot;
                    if self.digits > 18 {
                        self.bad = 1;
                    } else {
                        self.value = self.value * 10 + u64::from(d);
                    }
                } else if b == b'.' && self.dot == 0 {
                    self.dot = 1;
                } else {
                    self.bad = 1;
                }
            }
            _ => self.bad = 1,
        }
    }

    #[inline(always)]
    fn close_field(&mut self) {
        let empty = self.len == 0;
        match self.field {
            0..=2 => self.bad |= empty as u32,
            3 => {
                self.bad |= empty as u32;
                self.lts = self.value;
            }
            // The length counts too: a NUL byte in front would vanish from the word.
            4 => {
                if self.len == 4 && self.word == word(b"true") {
                    self.snapshot = 1;
                } else if self.len == 5 && self.word == word(b"false") {
                    self.snapshot = 0;
                } else {
                    self.bad = 1;
                }
            }
            5 => {
                if self.len == 3 && self.word == word(b"bid") {
                    self.bid = 1;
                } else if self.len == 3 && self.word == word(b"ask") {
                    self.bid = 0;
                } else {
                    self.bad = 1;
                }
            }
            6 => {
                self.price = self.value;
                self.price_frac = self.frac;
                self.price_digits = self.digits;
            }
            _ => self.bad = 1,
        }
        self.field += 1;
        self.len = 0;
        self.value = 0;
        self.word = 0;
        self.digits = 0;
        self.frac = 0;
        self.dot = 0;
    }

    /// The line, if every byte was fed and it is in the accepted grammar.
    #[inline(always)]
    pub fn finish(&self, amount_decimals: u32) -> Option<XLine> {
        if self.bad != 0 || self.field != 7 {
            return None;
        }
        let price = scale(
            self.price,
            self.price_digits,
            self.price_frac,
            PRICE_DECIMALS,
        )?;
        let amount = scale(self.value, self.digits, self.frac, amount_decimals)?;
        if price == 0 {
            return None;
        }
        Some(XLine {
            local_timestamp: self.lts,
            is_snapshot: self.snapshot != 0,
            bid: self.bid != 0,
            price: price as i64,
            amount,
        })
    }
}

/// `value` with `frac` fractional digits (of `digits`) scaled to `decimals`, if it fits the
/// grammar (no more fractional digits than `decimals`, at most 18 digits once scaled).
#[inline(always)]
fn scale(value: u64, digits: u32, frac: u32, decimals: u32) -> Option<u64> {
    if digits == 0 || frac > decimals || digits - frac + decimals > 18 {
        return None;
    }
    let mut v = value;
    let mut i = 0;
    // At most 18 rounds (the verifier sees the bound).
    while i < 18 {
        if i >= decimals - frac {
            break;
        }
        v *= 10;
        i += 1;
    }
    Some(v)
}

#[inline(always)]
const fn word(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
        w = (w << 8) | s[i] as u64;
        i += 1;
    }
    w
}

/// Parses a whole line (one trailing `\n`, `\r\n` or `\r` allowed), as the program does.
pub fn parse(line: &[u8], amount_decimals: u32) -> Option<XLine> {
    if line.len() > MAX_LINE {
        return None;
    }
    let mut p = LineParser::default();
    for &b in line {
        p.step(b);
    }
    p.finish(amount_decimals)
}

/// The trigger rule on the armed top of the book: the order to send, if this line fires.
/// The armed state must be current (the caller checks the generation).
#[inline(always)]
pub fn decide(a: &Armed, l: &XLine) -> Option<Fire> {
    if a.enabled == 0 || l.is_snapshot || l.local_timestamp < a.last_seq {
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
    let limit = if a.threshold_kind == 0 {
        a.threshold
    } else {
        // price x increase > T  <=>  increase > floor(T / price), for positive integers.
        a.threshold / (l.price as u64)
    };
    if increase <= limit {
        return None;
    }
    Some(Fire {
        qty: a.order_qty[idx],
        price: other.levels[0].price,
        side: idx as u8,
        trigger_id: l.local_timestamp,
    })
}

/// Adds big-endian 16-bit words of `b` (odd length: last byte padded) to `sum`.
#[inline(always)]
pub fn sum_words(mut sum: u32, b: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += (u32::from(b[i]) << 8) | u32::from(b[i + 1]);
        i += 2;
    }
    if i < b.len() {
        sum += u32::from(b[i]) << 8;
    }
    sum
}

/// Folds a one's-complement sum and complements it.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

impl Template {
    /// Writes the order frame for `fire` into `out`: the headers, the 21-byte message
    /// (little-endian qty, price, side, trigger id) and the TCP checksum.
    #[inline(always)]
    pub fn write_frame(&self, fire: &Fire, out: &mut [u8; FRAME_LEN]) {
        out[..HEADER_LEN].copy_from_slice(&self.header);
        let mut msg = [0u8; ORDER_LEN];
        msg[0..4].copy_from_slice(&fire.qty.to_le_bytes());
        msg[4..12].copy_from_slice(&fire.price.to_le_bytes());
        msg[12] = fire.side;
        msg[13..21].copy_from_slice(&fire.trigger_id.to_le_bytes());
        out[HEADER_LEN..].copy_from_slice(&msg);
        let csum = fold(sum_words(self.partial_sum, &msg));
        out[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&csum.to_be_bytes());
    }

    /// A template from headers (IPv4 without options, TCP without options; the IPv4 total
    /// length, its checksum and the TCP flags, checksum and urgent pointer are set here).
    pub fn new(mut header: [u8; HEADER_LEN]) -> Self {
        let ip = 14;
        let tcp = 34;
        let total = (20 + 20 + ORDER_LEN) as u16;
        header[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        header[ip + 10] = 0;
        header[ip + 11] = 0;
        let ip_csum = fold(sum_words(0, &header[ip..ip + 20]));
        header[ip + 10..ip + 12].copy_from_slice(&ip_csum.to_be_bytes());
        header[tcp + 12] = 5 << 4;
        header[tcp + 13] = 0x18; // PSH | ACK
        header[tcp + 16] = 0;
        header[tcp + 17] = 0;
        header[tcp + 18] = 0;
        header[tcp + 19] = 0;
        // Pseudo header: source, destination, protocol, TCP length.
        let mut sum = sum_words(0, &header[ip + 12..ip + 20]);
        sum += 6 + (20 + ORDER_LEN) as u32;
        sum = sum_words(sum, &header[tcp..tcp + 20]);
        Self {
            header,
            _pad: [0; 2],
            partial_sum: sum,
        }
    }

    /// The sequence number the template's segment carries.
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes([
            self.header[38],
            self.header[39],
            self.header[40],
            self.header[41],
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_line() {
        let l = parse(
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750\n",
            0,
        )
        .expect("parses");
        assert_eq!(
            l,
            XLine {
                local_timestamp: 1585699200355000,
                is_snapshot: false,
                bid: false,
                price: 659_350_000_000,
                amount: 20750,
            }
        );
    }

    #[test]
    fn one_end_of_line_is_allowed() {
        for eol in [&b""[..], b"\n", b"\r\n", b"\r"] {
            let mut l = b"x,y,1,2,true,bid,1.5,3".to_vec();
            l.extend_from_slice(eol);
            assert_eq!(
                parse(&l, 0).map(|l| (l.price, l.amount)),
                Some((150_000_000, 3))
            );
        }
    }

    #[test]
    fn gives_up_outside_its_grammar() {
        for bad in [
            &b"x,y,1,2,false,ask,0,1"[..],
            b"x,y,1,2,false,ask,-1,1",
            b"x,y,1,2,false,ask,1.000000001,1",
            b"x,y,1,2,false,ask,1,1.5",
            b"x,y,1,2,no,ask,1,1",
            b"x,y,1,2,false,bidd,1,1",
            b"x,y,1,2,false,ask,1,1,9",
            b"x,y,1,2,false,ask,1",
            b",y,1,2,false,ask,1,1",
            b"x,y,1,,false,ask,1,1",
            b"x,y,1,2,false,ask,1.,",
            b"x,y,1,2,false,ask,.,1",
            b"x,y,1,2,false,ask,1,1\n\n",
            b"x,y,1,2,false,ask,1,1\n\r",
            b"x,y,1,2,false,ask,1,1\r\r",
            b"x\r,y,1,2,false,ask,1,1",
            // Found by the fuzzer: a NUL in front of a keyword left its word unchanged.
            b"x,y,1,2,false,\0ask,1,1",
            b"x,y,1,2,\0true,ask,1,1",
            b"x,y,1,2,\0\0true,bid,1,1",
        ] {
            assert_eq!(
                parse(bad, 0),
                None,
                "{}",
                core::str::from_utf8(bad).unwrap_or("?")
            );
        }
    }
}
