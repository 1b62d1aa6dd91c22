//! The market-data line: one Tardis `incremental_book_L2` CSV row.
//!
//! ```text
//! exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount
//! deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750
//! ```
//!
//! By default a market-data packet is exactly the bytes of one line (no newline). The
//! strategy's parse of a packet is [`parse_line`]; a user with a binary format replaces that
//! one function (and the exchange's formatter).

use crate::decimal::{self, DecimalError};
use crate::PRICE_DECIMALS;
use core::fmt;

/// The header line a Tardis `incremental_book_L2` file starts with.
pub const HEADER: &[u8] =
    b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount";

/// Number of comma-separated fields of a line.
pub const FIELD_COUNT: usize = 8;

/// Book side of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookSide {
    /// Bid (buy) side.
    Bid,
    /// Ask (sell) side.
    Ask,
}

impl BookSide {
    /// The CSV spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bid => "bid",
            Self::Ask => "ask",
        }
    }
}

/// Which field of a line was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `exchange`
    Exchange,
    /// `symbol`
    Symbol,
    /// `timestamp`
    Timestamp,
    /// `local_timestamp`
    LocalTimestamp,
    /// `is_snapshot`
    IsSnapshot,
    /// `side`
    Side,
    /// `price`
    Price,
    /// `amount`
    Amount,
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than eight fields.
    MissingFields,
    /// More than eight fields.
    TooManyFields,
    /// A field is empty where a value is required.
    Empty(Field),
    /// `is_snapshot` is not `true`/`false`, or `side` is not `bid`/`ask`.
    InvalidValue(Field),
    /// A number could not be converted.
    Number(Field, DecimalError),
    /// `price` is zero or negative, or `amount` is negative.
    OutOfRange(Field),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingFields => write!(f, "expected {FIELD_COUNT} fields, found fewer"),
            Self::TooManyFields => write!(f, "expected {FIELD_COUNT} fields, found more"),
            Self::Empty(field) => write!(f, "field {field:?} is empty"),
            Self::InvalidValue(field) => write!(f, "field {field:?} has an invalid value"),
            Self::Number(field, e) => write!(f, "field {field:?}: {e}"),
            Self::OutOfRange(field) => write!(f, "field {field:?} is out of range"),
        }
    }
}

/// The fields of one line, borrowed from the packet (zero-copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdLine<'a> {
    /// Exchange name, e.g. `deribit`.
    pub exchange: &'a [u8],
    /// Instrument, e.g. `BTC-PERPETUAL`.
    pub symbol: &'a [u8],
    /// Exchange timestamp, microseconds since the epoch.
    pub timestamp: u64,
    /// Receive timestamp at the recorder, microseconds: the sequence number and trigger id.
    pub local_timestamp: u64,
    /// Part of a snapshot (the book is rebuilt from a run of these).
    pub is_snapshot: bool,
    /// Bid or ask.
    pub side: BookSide,
    /// Price, fixed point with [`PRICE_DECIMALS`] places; always > 0.
    pub price: i64,
    /// New size of the level in units of `10^-amount_decimals`; 0 removes the level.
    pub amount: u64,
}

/// Splits a line on commas into exactly [`FIELD_COUNT`] fields without allocating.
fn split_fields(line: &[u8]) -> Result<[&[u8]; FIELD_COUNT], ParseError> {
    let mut commas = [0usize; FIELD_COUNT - 1];
    let mut n = 0usize;
    // SWAR: eight bytes at a time, a mask with 0x80 in each byte that is a comma (exact,
    // no false positives), then one step per comma found. About 1 instruction per byte.
    let mut base = 0;
    while base < line.len() {
        let word = match line.get(base..base + 8) {
            Some(w) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                u64::from_le_bytes(b)
            }
            // The tail: fewer than 8 bytes, padded with zeros (not commas).
            None => line[base..]
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        };
        let mut mask = decimal::eq_mask8(word, b',');
        while mask != 0 {
            if n == FIELD_COUNT - 1 {
                return Err(ParseError::TooManyFields);
            }
            commas[n] = base + (mask.trailing_zeros() / 8) as usize;
            n += 1;
            mask &= mask - 1;
        }
        base += 8;
    }
    if n < FIELD_COUNT - 1 {
        return Err(ParseError::MissingFields);
    }
    let mut fields: [&[u8]; FIELD_COUNT] = [&[]; FIELD_COUNT];
    let mut start = 0;
    for (slot, &end) in fields.iter_mut().zip(commas.iter()) {
        *slot = line.get(start..end).ok_or(ParseError::MissingFields)?;
        start = end + 1;
    }
    fields[FIELD_COUNT - 1] = line.get(start..).ok_or(ParseError::MissingFields)?;
    Ok(fields)
}

/// Parses one line (a trailing `\r` and/or `\n` is ignored).
///
/// `amount_decimals` is the number of decimal places the `amount` is scaled by into integer
/// units (0 for Deribit's whole USD amounts). Allocation-free; never panics.
#[inline(always)]
pub fn parse_line(line: &[u8], amount_decimals: u8) -> Result<MdLine<'_>, ParseError> {
    let line = trim_eol(line);
    if let Some(l) = parse_common_layout(line, amount_decimals) {
        return Ok(l);
    }
    parse_general(line, amount_decimals)
}

/// The fast path for the layout nearly every line has: 16-digit timestamps, `true`/`false`,
/// `bid`/`ask`, a price of at most 16 bytes and an amount of at most 15. It reads each field
/// at its expected place instead of splitting the whole line, 8 or 16 bytes at a time and
/// with almost no data-dependent branch:
///
/// * the first two commas from one 32-byte compare (SSE2; SWAR words elsewhere);
/// * both timestamps at fixed offsets in one SSE2 conversion (8-digit SWAR elsewhere);
/// * the amount and the last comma from the 16 bytes that end the line, the price from the
///   16 bytes that end at that comma ([`decimal::fixed_in_window`]).
///
/// It gives up (`None`) on anything else, which then takes the general path, so both return
/// the same for every input (property-tested).
#[inline(always)]
fn parse_common_layout(line: &[u8], amount_decimals: u8) -> Option<MdLine<'_>> {
    let (c1, c2) = first_two_commas(line)?;
    if c1 == 0 || c2 == c1 + 1 {
        return None;
    }
    let ts0 = c2 + 1;
    if line.get(ts0 + 16) != Some(&b',') || line.get(ts0 + 33) != Some(&b',') {
        return None;
    }
    let (timestamp, local_timestamp) = two_timestamps(
        line.get(ts0..ts0 + 16)?.try_into().ok()?,
        line.get(ts0 + 17..ts0 + 33)?.try_into().ok()?,
    )?;
    let p = ts0 + 34;
    let rest = line.get(p..)?;
    let (is_snapshot, p) = if rest.starts_with(b"false,") {
        (false, p + 6)
    } else if rest.starts_with(b"true,") {
        (true, p + 5)
    } else {
        return None;
    };
    // Compared as one word each, and the side picked without a branch: bids and asks
    // alternate at random, so a branch on "bid" would mispredict every other line.
    let word = u32::from_le_bytes(line.get(p..p + 4)?.try_into().ok()?);
    let bid = word == u32::from_le_bytes(*b"bid,");
    if !bid & (word != u32::from_le_bytes(*b"ask,")) {
        return None;
    }
    let side = if bid { BookSide::Bid } else { BookSide::Ask };
    let p = p + 4;
    // The amount is what follows the line's last comma, which must be within its last 16
    // bytes; the price lies between `p` and that comma.
    let len = line.len();
    let tail_bytes: &[u8; 16] = line.get(len.checked_sub(16)?..)?.try_into().ok()?;
    let commas = comma_mask16(tail_bytes);
    if commas == 0 {
        return None;
    }
    let last = (31 - commas.leading_zeros()) as usize;
    let amount_len = 15 - last;
    let comma = len - 16 + last;
    let price_len = comma.checked_sub(p)?;
    let price_window = decimal::load16(line.get(comma.checked_sub(16)?..comma)?)?;
    let tail = u128::from_le_bytes(*tail_bytes);
    let price =
        decimal::fixed_in_window(price_window, price_len, PRICE_DECIMALS).filter(|&p| p > 0)?;
    let amount = decimal::fixed_in_window(tail, amount_len, amount_decimals)?;
    Some(MdLine {
        exchange: &line[..c1],
        symbol: &line[c1 + 1..c2],
        timestamp,
        local_timestamp,
        is_snapshot,
        side,
        price,
        // `fixed_in_window` accepts no sign: never negative.
        amount: amount.unsigned_abs(),
    })
}

/// The positions of the first two commas: 32 bytes at once with SSE2 when both are there
/// (exchange and symbol names are short), else the portable search.
#[inline]
fn first_two_commas(line: &[u8]) -> Option<(usize, usize)> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Some(c) = crate::simd::first_two_commas(line) {
        return Some(c);
    }
    first_two_commas_swar(line)
}

/// A bit per comma of 16 bytes (bit `i` for byte `i`): one SSE2 compare on x86-64.
#[inline]
fn comma_mask16(bytes: &[u8; 16]) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return crate::simd::comma_mask16(bytes);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return comma_mask16_portable(bytes);
}

/// [`comma_mask16`] without SIMD (other targets; the tests' reference).
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2"),
    allow(dead_code, reason = "the portable version, tested against SSE2")
)]
pub(crate) fn comma_mask16_portable(bytes: &[u8; 16]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | (u32::from(b == b',') << i))
}

/// Both timestamps: SSE2 on x86-64, 8-digit SWAR steps elsewhere.
#[inline]
fn two_timestamps(a: &[u8; 16], b: &[u8; 16]) -> Option<(u64, u64)> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return crate::simd::two_timestamps(a, b);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return Some((decimal::digits16(a)?, decimal::digits16(b)?));
}

/// The positions of the first two commas, searched eight bytes at a time; `None` if the
/// line has fewer than two commas in whole 8-byte words (the general path then decides).
#[inline]
pub(crate) fn first_two_commas_swar(line: &[u8]) -> Option<(usize, usize)> {
    let mut first = None;
    for (i, chunk) in line.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let mut mask = decimal::eq_mask8(u64::from_le_bytes(b), b',');
        while mask != 0 {
            let at = i * 8 + (mask.trailing_zeros() / 8) as usize;
            match first {
                None => first = Some(at),
                Some(f) => return Some((f, at)),
            }
            mask &= mask - 1;
        }
    }
    None
}

/// The reference parser: splits on commas and checks every field, one at a time, with no
/// fast path. [`parse_line`] returns exactly what this returns for every input (the
/// property tests and the `md_line` fuzz target check it); it is also `parse_line`'s path
/// for lines outside the common layout.
pub fn parse_line_reference(line: &[u8], amount_decimals: u8) -> Result<MdLine<'_>, ParseError> {
    parse_general(trim_eol(line), amount_decimals)
}

/// The general parser: splits on commas and checks every field. Out of line: it is the rare
/// path, and keeping it out keeps the inlined fast path small.
#[inline(never)]
fn parse_general(line: &[u8], amount_decimals: u8) -> Result<MdLine<'_>, ParseError> {
    let [exchange, symbol, ts, lts, snap, side, price, amount] = split_fields(line)?;
    let non_empty = |v: &'_ [u8], f: Field| {
        if v.is_empty() {
            Err(ParseError::Empty(f))
        } else {
            Ok(())
        }
    };
    non_empty(exchange, Field::Exchange)?;
    non_empty(symbol, Field::Symbol)?;
    let num = |f: Field| {
        move |e: DecimalError| match e {
            DecimalError::Empty => ParseError::Empty(f),
            e => ParseError::Number(f, e),
        }
    };
    let timestamp = decimal::parse_u64(ts).map_err(num(Field::Timestamp))?;
    let local_timestamp = decimal::parse_u64(lts).map_err(num(Field::LocalTimestamp))?;
    let is_snapshot = match snap {
        b"true" => true,
        b"false" => false,
        b"" => return Err(ParseError::Empty(Field::IsSnapshot)),
        _ => return Err(ParseError::InvalidValue(Field::IsSnapshot)),
    };
    let side = match side {
        b"bid" => BookSide::Bid,
        b"ask" => BookSide::Ask,
        b"" => return Err(ParseError::Empty(Field::Side)),
        _ => return Err(ParseError::InvalidValue(Field::Side)),
    };
    let price = decimal::parse_fixed(price, PRICE_DECIMALS).map_err(num(Field::Price))?;
    if price <= 0 {
        return Err(ParseError::OutOfRange(Field::Price));
    }
    let amount = decimal::parse_fixed(amount, amount_decimals).map_err(num(Field::Amount))?;
    let amount = u64::try_from(amount).map_err(|_| ParseError::OutOfRange(Field::Amount))?;
    Ok(MdLine {
        exchange,
        symbol,
        timestamp,
        local_timestamp,
        is_snapshot,
        side,
        price,
        amount,
    })
}

/// Strips one trailing `\n`, `\r\n` or `\r`.
#[inline]
pub fn trim_eol(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r', b'\n'] | [rest @ .., b'\n' | b'\r'] => rest,
        _ => line,
    }
}

/// Is this the `incremental_book_L2` header (ignoring the line ending)?
pub fn is_header(line: &[u8]) -> bool {
    trim_eol(line) == HEADER
}

/// The Ethernet address of an IPv4 multicast group: 01:00:5e and the group's low 23 bits
/// (RFC 1112), where a frame for the market-data group is sent and received.
pub fn group_mac(group: core::net::Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;

    static LINE: &[u8] =
        b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750";

    #[test]
    fn deconstruct() {
        let l = parse_line(LINE, 0).expect("valid line");
        assert_eq!(l.exchange, b"deribit");
        assert_eq!(l.symbol, b"BTC-PERPETUAL");
        assert_eq!(l.timestamp, 1_585_699_200_245_000);
        assert_eq!(l.local_timestamp, 1_585_699_200_355_000);
        assert!(!l.is_snapshot);
        assert_eq!(l.side, BookSide::Ask);
        assert_eq!(l.price, 659_350_000_000);
        assert_eq!(l.amount, 20750);
    }

    #[test]
    fn common_lines_take_the_fast_path() {
        for line in [
            LINE,
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,true,bid,6594,0",
            b"d,s,1585699200245000,1585699200355000,false,bid,0.5,123456789012",
            b"binance-futures,BTCUSDT,1585699200245000,1585699200355000,false,ask,65930.25,1.5",
        ] {
            assert_eq!(
                parse_common_layout(line, 1).map(Ok),
                Some(parse_general(line, 1)),
                "{:?}",
                core::str::from_utf8(line)
            );
        }
    }

    #[test]
    fn line_endings_and_scales() {
        let mut crlf = [0u8; 128];
        crlf[..LINE.len()].copy_from_slice(LINE);
        crlf[LINE.len()..LINE.len() + 2].copy_from_slice(b"\r\n");
        let l = parse_line(&crlf[..LINE.len() + 2], 2).expect("valid line");
        assert_eq!(l.amount, 2_075_000);
        let snap = b"deribit,BTC-PERPETUAL,1,2,true,bid,0.5,0";
        let l = parse_line(snap, 0).expect("valid line");
        assert!(l.is_snapshot);
        assert_eq!(l.side, BookSide::Bid);
        assert_eq!(l.amount, 0);
        assert!(is_header(
            b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
        ));
        assert!(!is_header(LINE));
    }

    #[test]
    fn every_field_invalid() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::MissingFields),
            (
                b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5",
                ParseError::MissingFields,
            ),
            (
                b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,1,9",
                ParseError::TooManyFields,
            ),
            (
                b",BTC-PERPETUAL,1,2,false,ask,1,1",
                ParseError::Empty(Field::Exchange),
            ),
            (b"d,,1,2,false,ask,1,1", ParseError::Empty(Field::Symbol)),
            (b"d,s,,2,false,ask,1,1", ParseError::Empty(Field::Timestamp)),
            (
                b"d,s,x,2,false,ask,1,1",
                ParseError::Number(Field::Timestamp, DecimalError::InvalidDigit),
            ),
            (
                b"d,s,1,-2,false,ask,1,1",
                ParseError::Number(Field::LocalTimestamp, DecimalError::InvalidDigit),
            ),
            (
                b"d,s,1,2,yes,ask,1,1",
                ParseError::InvalidValue(Field::IsSnapshot),
            ),
            (b"d,s,1,2,,ask,1,1", ParseError::Empty(Field::IsSnapshot)),
            (
                b"d,s,1,2,true,buy,1,1",
                ParseError::InvalidValue(Field::Side),
            ),
            (b"d,s,1,2,true,,1,1", ParseError::Empty(Field::Side)),
            (
                b"d,s,1,2,true,bid,0,1",
                ParseError::OutOfRange(Field::Price),
            ),
            (
                b"d,s,1,2,true,bid,-1,1",
                ParseError::OutOfRange(Field::Price),
            ),
            (
                b"d,s,1,2,true,bid,1.000000001,1",
                ParseError::Number(Field::Price, DecimalError::Precision),
            ),
            (
                b"d,s,1,2,true,bid,1,-1",
                ParseError::OutOfRange(Field::Amount),
            ),
            (
                b"d,s,1,2,true,bid,1,1.5",
                ParseError::Number(Field::Amount, DecimalError::Precision),
            ),
            (b"d,s,1,2,true,bid,1,", ParseError::Empty(Field::Amount)),
            (
                b"d,s,1,2,true,bid,1,99999999999999999999",
                ParseError::Number(Field::Amount, DecimalError::Overflow),
            ),
        ];
        for (line, err) in cases {
            assert_eq!(
                parse_line(line, 0),
                Err(*err),
                "{:?}",
                core::str::from_utf8(line)
            );
        }
    }

    #[test]
    fn truncated_prefixes_never_panic() {
        for n in 0..LINE.len() {
            let _ = parse_line(&LINE[..n], 0);
        }
        assert!(parse_line(&LINE[..LINE.len() - 1], 0).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..96), d in 0u8..=18) {
            let _ = parse_line(&bytes, d);
        }

        #[test]
        fn well_formed_common_lines_take_the_fast_path(
            ex in "[a-z-]{1,16}", sym in "[A-Z0-9-]{1,24}", ts in 1_000_000_000_000_000u64..10_000_000_000_000_000, lts in 1_000_000_000_000_000u64..10_000_000_000_000_000,
            snap in proptest::bool::ANY, bid in proptest::bool::ANY, price in "[1-9][0-9]{0,6}(\\.[0-9]{1,4})?", amount in "[0-9]{1,11}(\\.[0-9]{1,3})?",
        ) {
            let text = std::format!("{ex},{sym},{ts},{lts},{snap},{},{price},{amount}", if bid { "bid" } else { "ask" });
            let fast = parse_common_layout(text.as_bytes(), 3);
            proptest::prop_assert!(fast.is_some(), "{}", text);
            proptest::prop_assert_eq!(fast.map(Ok), Some(parse_general(text.as_bytes(), 3)));
        }

        #[test]
        fn fast_path_agrees_with_the_general_parser(
            ex in "[a-z]{0,8}", sym in "[A-Z-]{0,14}", ts in proptest::prop_oneof![4 => 1_000_000_000_000_000u64..10_000_000_000_000_000, 1 => 0u64..100_000_000_000_000_000], lts in proptest::prop_oneof![4 => 1_000_000_000_000_000u64..10_000_000_000_000_000, 1 => 0u64..100_000_000_000_000_000],
            snap in "(true|false|true|false|tru|x)", side in "(bid|ask|bid|ask|bi|buy)", price in "-?[0-9]{0,12}(\\.[0-9]{0,9})?(\\.[0-9])?", amount in "-?[0-9]{0,17}(\\.[0-9]{0,3})?",
            extra in proptest::option::of(",[0-9]{1,3}"), d in 0u8..=18, mutate in proptest::option::of((0usize..90, proptest::num::u8::ANY)),
        ) {
            let text = std::format!("{ex},{sym},{ts},{lts},{snap},{side},{price},{amount}{}", extra.unwrap_or_default());
            let mut bytes = text.into_bytes();
            if let Some((at, b)) = mutate {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
            proptest::prop_assert_eq!(parse_line(&bytes, d), parse_general(trim_eol(&bytes), d));
            if let Some(fast) = parse_common_layout(trim_eol(&bytes), d) {
                proptest::prop_assert_eq!(Ok(fast), parse_general(trim_eol(&bytes), d));
            }
        }
    }
}
