//! Exact decimal text <-> fixed-point integers.
//!
//! `parse_fixed(b"6593.5", 8)` is `659_350_000_000`. No floating point is involved anywhere,
//! so a price read from the file and a price sent in an order compare exactly.

use core::fmt;

/// Why a decimal field could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Empty field, or only a sign / a dot.
    Empty,
    /// A byte that is not a digit, a leading `-` or a single `.`.
    InvalidDigit,
    /// More significant fractional digits than the target scale can hold.
    Precision,
    /// The value does not fit the target integer.
    Overflow,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty number",
            Self::InvalidDigit => "invalid digit in number",
            Self::Precision => "too many significant decimal places",
            Self::Overflow => "number out of range",
        })
    }
}

const POW10: [i64; 19] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
];

/// Eight ASCII digits (first digit in the lowest byte, as loaded little-endian) to their
/// value, or `None` if any byte is not a digit. SWAR: three multiply-shift steps combine
/// digit pairs, then pairs of pairs, then halves.
#[inline]
fn eight_digits(chunk: u64) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // A byte is a digit iff its high nibble is 3 and adding 6 keeps it 3 (0x30..=0x39). A
    // carry out of a byte only happens for bytes >= 0xFA, which fail the first test anyway.
    if chunk & HIGH != ZEROS || chunk.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    let v = chunk - ZEROS;
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v.wrapping_mul(10_000) + (v >> 32)) & 0xFFFF_FFFF)
}

/// Exactly 16 ASCII digits (a microsecond timestamp) to their value, without a loop.
#[inline]
pub(crate) fn digits16(text: &[u8]) -> Option<u64> {
    let (hi, lo) = text.split_at_checked(8)?;
    if lo.len() != 8 {
        return None;
    }
    let mut h = [0u8; 8];
    let mut l = [0u8; 8];
    h.copy_from_slice(hi);
    l.copy_from_slice(lo);
    Some(eight_digits(u64::from_le_bytes(h))? * 100_000_000 + eight_digits(u64::from_le_bytes(l))?)
}

/// Digits only, at most 18 of them (cannot overflow): the fast path.
#[inline]
fn short_digits(text: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut rest = text;
    while rest.len() >= 8 {
        let (head, tail) = rest.split_at(8);
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        v = v * 100_000_000 + eight_digits(u64::from_le_bytes(b))?;
        rest = tail;
    }
    for &b in rest {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

/// Parses an optionally negative decimal (`-12.345`) into an integer scaled by
/// `10^decimals`. Trailing fractional zeros beyond `decimals` are accepted; any other digit
/// beyond it is a [`DecimalError::Precision`] error (nothing is rounded silently).
#[inline]
pub fn parse_fixed(text: &[u8], decimals: u8) -> Result<i64, DecimalError> {
    // Fast path, one pass: unsigned, at most 18 bytes, at most `decimals` fractional
    // digits, so nothing can overflow. Anything else takes the checked path.
    if text.len() <= 18 && decimals <= 18 {
        let mut v: i64 = 0;
        let mut dot = usize::MAX;
        let mut ok = true;
        for (i, &b) in text.iter().enumerate() {
            let d = b.wrapping_sub(b'0');
            if d <= 9 {
                v = v * 10 + i64::from(d);
            } else if b == b'.' && dot == usize::MAX {
                dot = i;
            } else {
                ok = false;
                break;
            }
        }
        let frac_len = if dot == usize::MAX {
            0
        } else {
            text.len() - dot - 1
        };
        let digits = text.len() - usize::from(dot != usize::MAX);
        if ok
            && digits > 0
            && frac_len <= usize::from(decimals)
            && digits - frac_len + usize::from(decimals) <= 18
        {
            return Ok(v * POW10[usize::from(decimals) - frac_len]);
        }
    }
    parse_fixed_checked(text, decimals)
}

/// The general path of [`parse_fixed`]: signs, long numbers, trailing zeros, errors.
fn parse_fixed_checked(text: &[u8], decimals: u8) -> Result<i64, DecimalError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    let mut seen_digit = false;
    let mut frac_digits: Option<u8> = None;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                let d = i64::from(b - b'0');
                match frac_digits {
                    Some(n) if n >= decimals => {
                        if d != 0 {
                            return Err(DecimalError::Precision);
                        }
                        continue;
                    }
                    Some(n) => frac_digits = Some(n + 1),
                    None => {}
                }
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(d))
                    .ok_or(DecimalError::Overflow)?;
            }
            b'.' if frac_digits.is_none() => frac_digits = Some(0),
            _ => return Err(DecimalError::InvalidDigit),
        }
    }
    if !seen_digit {
        return Err(DecimalError::Empty);
    }
    let missing = decimals - frac_digits.unwrap_or(0).min(decimals);
    for _ in 0..missing {
        value = value.checked_mul(10).ok_or(DecimalError::Overflow)?;
    }
    Ok(if negative { -value } else { value })
}

/// Parses an unsigned integer field (timestamps).
#[inline]
pub fn parse_u64(text: &[u8]) -> Result<u64, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    if text.len() <= 18 {
        return short_digits(text).ok_or(DecimalError::InvalidDigit);
    }
    let mut value: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return Err(DecimalError::InvalidDigit);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    Ok(value)
}

/// Displays a fixed-point integer as a minimal decimal (`659_350_000_000`, 8 -> `6593.5`).
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub i64, pub u8);

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fixed(value, decimals) = *self;
        let Some(scale) = 10u64.checked_pow(u32::from(decimals)) else {
            return write!(f, "{value}e-{decimals}");
        };
        let abs = value.unsigned_abs();
        let (int, mut frac) = (abs / scale, abs % scale);
        if value < 0 {
            f.write_str("-")?;
        }
        write!(f, "{int}")?;
        if frac != 0 {
            let mut width = usize::from(decimals);
            while frac % 10 == 0 {
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::string::ToString;

    #[test]
    fn parses_prices() {
        assert_eq!(parse_fixed(b"6593.5", 8), Ok(659_350_000_000));
        assert_eq!(parse_fixed(b"6593", 8), Ok(659_300_000_000));
        assert_eq!(parse_fixed(b"0.00000001", 8), Ok(1));
        assert_eq!(parse_fixed(b"-1.5", 8), Ok(-150_000_000));
        assert_eq!(parse_fixed(b"20750", 0), Ok(20750));
        assert_eq!(parse_fixed(b"20750.000", 0), Ok(20750));
        assert_eq!(parse_fixed(b"1.", 2), Ok(100));
        assert_eq!(parse_fixed(b".5", 1), Ok(5));
    }

    #[test]
    fn rejects_bad_numbers() {
        assert_eq!(parse_fixed(b"", 8), Err(DecimalError::Empty));
        assert_eq!(parse_fixed(b"-", 8), Err(DecimalError::Empty));
        assert_eq!(parse_fixed(b".", 8), Err(DecimalError::Empty));
        assert_eq!(parse_fixed(b"1.2.3", 8), Err(DecimalError::InvalidDigit));
        assert_eq!(parse_fixed(b"1e5", 8), Err(DecimalError::InvalidDigit));
        assert_eq!(parse_fixed(b"0.000000001", 8), Err(DecimalError::Precision));
        assert_eq!(parse_fixed(b"20750.5", 0), Err(DecimalError::Precision));
        assert_eq!(
            parse_fixed(b"99999999999999999999", 0),
            Err(DecimalError::Overflow)
        );
        assert_eq!(parse_fixed(b"100000000000", 8), Err(DecimalError::Overflow));
        assert_eq!(
            parse_u64(b"18446744073709551616"),
            Err(DecimalError::Overflow)
        );
        assert_eq!(parse_u64(b"12a"), Err(DecimalError::InvalidDigit));
    }

    #[test]
    fn displays_minimal_decimals() {
        assert_eq!(Fixed(659_350_000_000, 8).to_string(), "6593.5");
        assert_eq!(Fixed(659_300_000_000, 8).to_string(), "6593");
        assert_eq!(Fixed(-1, 8).to_string(), "-0.00000001");
        assert_eq!(Fixed(20750, 0).to_string(), "20750");
    }

    proptest::proptest! {
        #[test]
        fn display_then_parse_round_trips(v in proptest::num::i64::ANY, d in 0u8..=8) {
            let text = Fixed(v, d).to_string();
            proptest::prop_assert_eq!(parse_fixed(text.as_bytes(), d), Ok(v));
        }

        #[test]
        fn fast_path_agrees_with_checked(int in 0u64..10_000_000_000, frac in 0u64..100_000_000, fl in 0usize..9, d in 0u8..=10) {
            let text = std::format!("{int}.{:0fl$}", frac % 10u64.pow(fl as u32), fl = fl);
            proptest::prop_assert_eq!(parse_fixed(text.as_bytes(), d), parse_fixed_checked(text.as_bytes(), d));
            let ts = std::format!("{int}{frac}");
            proptest::prop_assert_eq!(parse_u64(ts.as_bytes()).ok(), ts.parse::<u64>().ok());
        }

        #[test]
        fn digits_with_junk_are_rejected(mut digits in proptest::collection::vec(b'0'..=b'9', 1..18), at in 0usize..18, junk in proptest::num::u8::ANY) {
            let at = at % digits.len();
            if !junk.is_ascii_digit() {
                digits[at] = junk;
                proptest::prop_assert!(parse_u64(&digits).is_err());
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32), d in 0u8..=18) {
            let _ = parse_fixed(&bytes, d);
            let _ = parse_u64(&bytes);
        }
    }
}
