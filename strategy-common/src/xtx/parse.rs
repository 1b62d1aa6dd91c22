//! The program's line parser: one byte per step (the program runs it under `bpf_loop`),
//! a strict subset of `proto::md::parse_line`'s grammar with the same fixed point.

use super::{XLine, MAX_LINE};

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
