//! The program's fast path: a line of the feed's usual layout read at fixed places, a word
//! at a time, as the strategy's own parser reads it; anything else goes to the
//! byte-at-a-time [`super::LineParser`].
//!
//! User space learns the layout from a line the general parser accepted ([`Shape::learn`]):
//! the bytes up to the first timestamp (exchange, symbol, their commas) and that both
//! timestamps have 16 digits (Tardis' microseconds). A line that starts with exactly those
//! bytes is read thus: the two timestamps as four 8-byte words (each checked to be eight
//! digits, then converted with three multiplies), `true,`/`false,` and `bid,`/`ask,` as one
//! masked word each, the price up to the comma found in two words (at most 15 bytes), the
//! amount up to the end of line (at most 16); each decimal at most 16 integer digits (two
//! words) and 8 fractional ones. Every check of the
//! general grammar holds on what it accepts, with the same fixed point (the equivalence test
//! and the fuzz target check [`parse`] against [`super::parse`]); where a check fails it
//! gives up, never guesses.
//!
//! The line is read from a buffer of [`SCRATCH`] bytes (the line, then anything): every load
//! is 8 bytes at an offset masked below [`super::MAX_LINE`], so none leaves the buffer, and
//! bytes past the line's end are masked off before they count.

use super::{XLine, MAX_LINE};

/// The buffer the fast path reads: a line of at most [`MAX_LINE`] bytes, then room for an
/// 8-byte load at any offset below it.
pub const SCRATCH: usize = MAX_LINE + 16;
/// Longest prefix (exchange, symbol, two commas) the fast path compares.
pub const PREFIX_MAX: usize = 32;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const ZEROS: u64 = 0x3030_3030_3030_3030;

/// The layout user space learned from the feed (part of the armed state).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// The prefix as four little-endian words, zero past its length.
    pub words: [u64; 4],
    /// Per word, the bytes that belong to the prefix.
    pub masks: [u64; 4],
    /// The prefix's length; 0: no layout learned (the fast path is off).
    pub len: u32,
    /// Padding.
    pub _pad: u32,
}

impl Shape {
    /// The layout of `line`, if it is one the fast path can read: its prefix (up to the
    /// second comma) at most [`PREFIX_MAX`] bytes, two non-empty fields of at most 64 bytes
    /// without end-of-line bytes, and 16-digit timestamps. Only call it with a line the
    /// general parser accepted.
    pub fn learn(line: &[u8]) -> Option<Self> {
        let mut commas = line
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b',')
            .map(|(i, _)| i);
        let (c1, c2, c3, c4) = (
            commas.next()?,
            commas.next()?,
            commas.next()?,
            commas.next()?,
        );
        let len = c2 + 1;
        let plain =
            |f: &[u8]| !f.is_empty() && f.len() <= 64 && !f.contains(&b'\r') && !f.contains(&b'\n');
        if len > PREFIX_MAX || !plain(&line[..c1]) || !plain(&line[c1 + 1..c2]) {
            return None;
        }
        if c3 - c2 - 1 != 16 || c4 - c3 - 1 != 16 {
            return None;
        }
        let mut s = Self {
            len: len as u32,
            ..Self::default()
        };
        for (i, &b) in line[..len].iter().enumerate() {
            s.words[i / 8] |= u64::from(b) << (8 * (i % 8));
            s.masks[i / 8] |= 0xff << (8 * (i % 8));
        }
        Some(s)
    }
}

/// The 8 bytes at `off` (masked below [`MAX_LINE`]), little endian.
#[inline(always)]
fn ld(buf: &[u8; SCRATCH], off: usize) -> u64 {
    let o = off & (MAX_LINE - 1);
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[o..o + 8]);
    u64::from_le_bytes(w)
}

/// The low `n` bytes of a word (n <= 8).
#[inline(always)]
fn low(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Are the bytes of `w` under `mask` all ASCII digits?
#[inline(always)]
fn digits(w: u64, mask: u64) -> bool {
    let z = ZEROS & mask;
    let hi = 0xf0f0_f0f0_f0f0_f0f0 & mask;
    // High nibble 3, and no carry out of the low nibble when 6 is added (0x30..=0x39).
    (w & hi) == z && ((w & mask).wrapping_add(0x0606_0606_0606_0606 & mask) & hi) == z
}

/// Eight ASCII digits (the first in the lowest byte) as a number.
#[inline(always)]
fn eight(w: u64) -> u64 {
    let w = w.wrapping_sub(ZEROS);
    let w = w.wrapping_mul(10).wrapping_add(w >> 8);
    let w = (w & 0x0000_00ff_0000_00ff)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((w >> 16) & 0x0000_00ff_0000_00ff).wrapping_mul(1 + (10_000 << 32)));
    w >> 32
}

/// The first `n` (1..=8) digits of `w` as a number (`w` holds them in its low bytes).
#[inline(always)]
fn up_to_eight(w: u64, n: usize) -> u64 {
    // Shift them to the top, fill the low bytes with '0': eight digits, leading zeros.
    let shift = 8 * (8 - n);
    let top = if shift >= 64 { 0 } else { w << shift };
    eight(top | (ZEROS & low(8 - n)))
}

/// Index (0..8) of the first byte of `w` equal to `c`, if any.
#[inline(always)]
fn find(w: u64, c: u8) -> Option<usize> {
    let x = w ^ (ONES.wrapping_mul(u64::from(c)));
    let m = x.wrapping_sub(ONES) & !x & HIGHS;
    if m == 0 {
        return None;
    }
    // The lowest set bit is exact (later ones may be borrow artefacts): 1 << (8k + 7).
    let bit = (m & m.wrapping_neg()) >> 7;
    Some((bit.wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize)
}

/// Index (0..16) of the first `c` in the 16 bytes at `off`, if any. (Two words: a third
/// took the verifier past its million instructions, measured.)
#[inline(always)]
fn find16(buf: &[u8; SCRATCH], off: usize, c: u8) -> Option<usize> {
    find(ld(buf, off), c).or_else(|| find(ld(buf, off + 8), c).map(|k| k + 8))
}

/// 10^k for k <= 18.
#[inline(always)]
fn pow10(k: u32) -> u64 {
    let mut v = 1u64;
    let mut i = 0;
    while i < 18 {
        if i >= k {
            break;
        }
        v *= 10;
        i += 1;
    }
    v
}

/// The decimal of `n` bytes at `off` (digits, at most one dot, at least one digit; at most
/// 16 integer digits, read as two words, and 8 fractional ones), scaled to `decimals`, by the
/// general grammar's rules.
#[inline(always)]
fn decimal(buf: &[u8; SCRATCH], off: usize, n: usize, decimals: u32) -> Option<u64> {
    if n == 0 || n > 16 {
        return None;
    }
    let (int_n, frac_n) = match find16(buf, off, b'.') {
        Some(d) if d < n => (d, n - d - 1),
        _ => (n, 0),
    };
    if int_n > 16 || frac_n > 8 || int_n + frac_n == 0 {
        return None;
    }
    if frac_n as u32 > decimals || int_n as u32 + decimals > 18 {
        return None;
    }
    let int = if int_n == 0 {
        0
    } else if int_n <= 8 {
        let w = ld(buf, off);
        if !digits(w, low(int_n)) {
            return None;
        }
        up_to_eight(w, int_n)
    } else {
        // The leading `int_n - 8` digits, then the last eight: the sizes that fire the
        // strategy (a large increase) are often 9 or 10 digits.
        let head = int_n - 8;
        let (w1, w2) = (ld(buf, off), ld(buf, off + head));
        if !digits(w1, low(head)) || !digits(w2, u64::MAX) {
            return None;
        }
        up_to_eight(w1, head) * 100_000_000 + eight(w2)
    };
    let frac = if frac_n == 0 {
        0
    } else {
        let w = ld(buf, off + int_n + 1);
        if !digits(w, low(frac_n)) {
            return None;
        }
        up_to_eight(w, frac_n)
    };
    Some(int * pow10(decimals) + frac * pow10(decimals - frac_n as u32))
}

/// The fast path's state between its phases (the program keeps it in a map value, so the
/// verifier sees each phase once: inlined as one piece, its branches multiplied the states
/// of everything after it, 866,028 instructions verified, measured).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastState {
    /// 1 while every check so far held.
    pub ok: u32,
    /// The line's length.
    pub len: u32,
    /// Decimal places of the amount.
    pub amount_decimals: u32,
    /// Where the price starts.
    pub price_at: u32,
    /// Where the price's comma is.
    pub comma_at: u32,
    /// Where the amount ends (its end of line stripped).
    pub amount_end: u32,
    /// The line as read so far.
    pub is_snapshot: u32,
    /// Bid side.
    pub bid: u32,
    /// `local_timestamp`.
    pub local_timestamp: u64,
    /// Price, 8 decimals.
    pub price: u64,
    /// Amount, `amount_decimals` decimals.
    pub amount: u64,
}

/// Phases of [`parse`], run in this order while `ok` holds.
pub const PHASES: u32 = 4;

/// One phase of the fast path on the line in `buf` (`st.len` bytes): 0 the prefix, the
/// timestamps, the snapshot flag and the side; 1 the price's comma and the end of line; 2
/// the price; 3 the amount. Clears `st.ok` when a check fails.
#[inline(always)]
pub fn phase(k: u32, buf: &[u8; SCRATCH], shape: &Shape, st: &mut FastState) {
    if st.ok == 0 {
        return;
    }
    let ok = match k {
        0 => head(buf, shape, st),
        1 => tail(buf, st),
        2 => match decimal(
            buf,
            st.price_at as usize,
            (st.comma_at - st.price_at) as usize,
            8,
        ) {
            Some(v) if v != 0 && v <= i64::MAX as u64 => {
                st.price = v;
                true
            }
            _ => false,
        },
        _ => {
            let (from, to) = (st.comma_at as usize + 1, st.amount_end as usize);
            match decimal(buf, from, to - from, st.amount_decimals) {
                Some(v) => {
                    st.amount = v;
                    true
                }
                None => false,
            }
        }
    };
    st.ok = u32::from(ok);
}

/// Phase 0: the prefix, two 16-digit timestamps and their commas, `true,`/`false,`,
/// `bid,`/`ask,`.
#[inline(always)]
fn head(buf: &[u8; SCRATCH], shape: &Shape, st: &mut FastState) -> bool {
    let p = shape.len as usize;
    let len = st.len as usize;
    if p == 0 || p > PREFIX_MAX || len > MAX_LINE || len < p + 44 {
        return false;
    }
    let mut i = 0;
    while i < 4 {
        if (ld(buf, 8 * i) ^ shape.words[i]) & shape.masks[i] != 0 {
            return false;
        }
        i += 1;
    }
    let (t0, t1) = (ld(buf, p), ld(buf, p + 8));
    let (l0, l1) = (ld(buf, p + 17), ld(buf, p + 25));
    let comma = |w: u64| w & 0xff == u64::from(b',');
    if !(digits(t0, u64::MAX) && digits(t1, u64::MAX) && comma(ld(buf, p + 16))) {
        return false;
    }
    if !(digits(l0, u64::MAX) && digits(l1, u64::MAX) && comma(ld(buf, p + 33))) {
        return false;
    }
    st.local_timestamp = eight(l0) * 100_000_000 + eight(l1);
    let q = p + 34;
    let w = ld(buf, q);
    let s = if w & low(5) == u64::from_le_bytes(*b"true,\0\0\0") {
        st.is_snapshot = 1;
        q + 5
    } else if w & low(6) == u64::from_le_bytes(*b"false,\0\0") {
        st.is_snapshot = 0;
        q + 6
    } else {
        return false;
    };
    let w = ld(buf, s) & low(4);
    if w == u64::from(u32::from_le_bytes(*b"bid,")) {
        st.bid = 1;
    } else if w == u64::from(u32::from_le_bytes(*b"ask,")) {
        st.bid = 0;
    } else {
        return false;
    }
    st.price_at = (s + 4) as u32;
    true
}

/// Phase 1: the comma after the price; the amount's end (one `\n`, `\r\n` or `\r`
/// stripped; any other byte there fails the digit checks).
#[inline(always)]
fn tail(buf: &[u8; SCRATCH], st: &mut FastState) -> bool {
    let t = st.price_at as usize;
    let len = st.len as usize;
    let Some(k) = find16(buf, t, b',') else {
        return false;
    };
    let c = t + k;
    let last = |e: usize| (ld(buf, e - 1) & 0xff) as u8;
    let mut end = len;
    if end > c + 1 && last(end) == b'\n' {
        end -= 1;
        if end > c + 1 && last(end) == b'\r' {
            end -= 1;
        }
    } else if end > c + 1 && last(end) == b'\r' {
        end -= 1;
    }
    if end <= c + 1 || end > len || len > MAX_LINE {
        return false;
    }
    st.comma_at = c as u32;
    st.amount_end = end as u32;
    true
}

/// The line of `len` bytes in `buf`, if it has the learned layout and the general grammar
/// accepts it (the same fields and fixed point as [`super::parse`]); `None`: not read here
/// (the caller runs the general parser). The phases in order, as the program runs them.
pub fn parse(
    buf: &[u8; SCRATCH],
    len: usize,
    shape: &Shape,
    amount_decimals: u32,
) -> Option<XLine> {
    let mut st = FastState {
        ok: 1,
        len: u32::try_from(len).ok()?,
        amount_decimals,
        ..FastState::default()
    };
    for k in 0..PHASES {
        phase(k, buf, shape, &mut st);
    }
    st.line()
}

impl FastState {
    /// The line, if every phase held.
    pub fn line(&self) -> Option<XLine> {
        (self.ok != 0).then_some(XLine {
            local_timestamp: self.local_timestamp,
            is_snapshot: self.is_snapshot != 0,
            bid: self.bid != 0,
            price: self.price as i64,
            amount: self.amount,
        })
    }
}

/// [`parse`] on a slice (user space, tests): copied into a scratch buffer first.
pub fn parse_slice(line: &[u8], shape: &Shape, amount_decimals: u32) -> Option<XLine> {
    if line.len() > MAX_LINE {
        return None;
    }
    let mut buf = [0u8; SCRATCH];
    buf[..line.len()].copy_from_slice(line);
    parse(&buf, line.len(), shape, amount_decimals)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] =
        b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750\n";

    #[test]
    fn reads_the_common_line_as_the_general_parser_does() {
        let shape = Shape::learn(LINE).expect("a layout");
        assert_eq!(shape.len, 22);
        for dec in 0..4 {
            assert_eq!(
                parse_slice(LINE, &shape, dec),
                super::super::parse(LINE, dec)
            );
        }
        let l = parse_slice(LINE, &shape, 0).expect("read");
        assert_eq!(
            (l.local_timestamp, l.price, l.amount),
            (1585699200355000, 659_350_000_000, 20750)
        );
        let other =
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355123,true,bid,0.00012345,1.5\r\n";
        assert_eq!(parse_slice(other, &shape, 2), super::super::parse(other, 2));
        assert!(parse_slice(other, &shape, 2).is_some());
        // The sizes that fire: 9 to 16 integer digits, two words.
        for (amount, dec, want) in [
            (&b"123456789"[..], 0, 123_456_789u64),
            (b"1234567890", 0, 1_234_567_890),
            (b"9999999999999999", 0, 9_999_999_999_999_999),
            (b"100000000.5", 1, 1_000_000_005),
            (b"12345678901234.5", 2, 1_234_567_890_123_450),
        ] {
            let mut l = LINE[..73].to_vec();
            l.extend_from_slice(amount);
            l.push(b'\n');
            let fast = parse_slice(&l, &shape, dec);
            assert_eq!(fast, super::super::parse(&l, dec));
            assert_eq!(fast.map(|x| x.amount), Some(want));
        }
        // 16 integer digits and 3 decimals: past the fast path's 18, left to the general one.
        let mut l = LINE[..73].to_vec();
        l.extend_from_slice(b"1234567890123456\n");
        assert_eq!(parse_slice(&l, &shape, 3), None);
    }

    #[test]
    fn gives_up_off_the_layout() {
        let shape = Shape::learn(LINE).expect("a layout");
        for bad in [
            &b"deribit,ETH-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750\n"[..],
            b"deribit,BTC-PERPETUAL,158569920024500,1585699200355000,false,ask,6593.5,20750\n",
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,no,ask,6593.5,20750\n",
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750\n\n",
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,0,20750\n",
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,2.5\n",
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,,1\n",
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,12345678901.5,1\n",
        ] {
            assert_eq!(
                parse_slice(bad, &shape, 0),
                None,
                "{}",
                core::str::from_utf8(bad).unwrap_or("?")
            );
        }
    }

    #[test]
    fn word_helpers() {
        assert_eq!(eight(u64::from_le_bytes(*b"12345678")), 12_345_678);
        assert_eq!(up_to_eight(u64::from_le_bytes(*b"123,xxxx"), 3), 123);
        assert_eq!(find(u64::from_le_bytes(*b"ab,cd,ef"), b','), Some(2));
        assert_eq!(find(u64::from_le_bytes(*b"abcdefgh"), b','), None);
        assert!(digits(u64::from_le_bytes(*b"0123456x"), low(7)));
        assert!(!digits(u64::from_le_bytes(*b"0123456x"), low(8)));
        assert!(!digits(u64::from_le_bytes(*b":/012345"), low(2)));
    }
}
