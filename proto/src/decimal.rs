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
#[inline(always)]
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

/// Exactly 16 ASCII digits (a microsecond timestamp) to their value, without a loop. (On
/// x86-64 the SSE2 version in `simd` is used; this one is its reference in the tests.)
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2"),
    allow(dead_code, reason = "the portable version, tested against SSE2")
)]
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

/// Sixteen copies of a byte.
const fn splat16(b: u8) -> u128 {
    u128::from_le_bytes([b; 16])
}

/// A mask with `0x80` in every byte of `w` equal to `b` and 0 elsewhere. Exact: no false
/// positives (each byte's sum stays below `0x100`, so no carry crosses into the next byte).
#[inline(always)]
pub(crate) fn eq_mask16(w: u128, b: u8) -> u128 {
    const LOW7: u128 = splat16(0x7F);
    let x = w ^ splat16(b);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// [`eq_mask16`] for one 64-bit word.
#[inline(always)]
pub(crate) fn eq_mask8(w: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let x = w ^ u64::from_le_bytes([b; 8]);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Sixteen bytes as a little-endian `u128` (the first byte lowest), or `None` if the slice
/// is not exactly 16 bytes long.
#[inline(always)]
pub(crate) fn load16(bytes: &[u8]) -> Option<u128> {
    let a: [u8; 16] = bytes.try_into().ok()?;
    Some(u128::from_le_bytes(a))
}

/// The branch-light fast path of [`parse_fixed`] for an unsigned decimal of 1 to 16 bytes
/// that ends a 16-byte window: `window` holds the 16 bytes ending where the number ends
/// (as loaded by [`load16`]), `len` is the number's length. No loop and no branch on the
/// digits: the bytes before the number become `'0'`, the dot is found with a SWAR compare
/// and squeezed out with shifts (a number without a dot takes the same instructions), then
/// one or two 8-digit SWAR conversions. Numbers of at most 8 bytes (nearly every price and
/// size) use one 64-bit word. `None` means "not the simple case" (sign, two dots, too long,
/// too many decimals, possible overflow, a non-digit); the caller then takes
/// [`parse_fixed`], so both give the same result wherever this one answers
/// (property-tested).
#[inline(always)]
pub(crate) fn fixed_in_window(window: u128, len: usize, decimals: u8) -> Option<i64> {
    if len <= 8 {
        fixed_in_word(window, len, decimals)
    } else {
        fixed_in_two_words(window, len, decimals)
    }
}

/// [`fixed_in_window`] for `len <= 8`, in the window's last 8 bytes.
#[inline(always)]
fn fixed_in_word(window: u128, len: usize, decimals: u8) -> Option<i64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let word = (window >> 64) as u64;
    // Bytes 0..8-len belong to the previous field: they become leading zeros.
    let keep = u64::MAX.checked_shl(8 * (8 - len) as u32).unwrap_or(0);
    let w = (word & keep) | (ZEROS & !keep);
    let dots = eq_mask8(w, b'.');
    let has_dot = dots != 0;
    // Squeeze the dot out: everything before it moves up one byte into its place and a '0'
    // enters at byte 0. Computed whether or not there is a dot, then selected by a mask
    // (no branch on the data: prices alternate between `6593.5` and `6594`).
    let d = (dots.trailing_zeros() / 8) & 7;
    let below = (1u64 << (8 * d)) - 1;
    let above = u64::MAX.checked_shl(8 * (d + 1)).unwrap_or(0);
    let squeezed = ((w & below) << 8) | (w & above) | u64::from(b'0');
    let pick = 0u64.wrapping_sub(u64::from(has_dot));
    let w = (squeezed & pick) | (w & !pick);
    let frac = if has_dot { 7 - d as usize } else { 0 };
    let decimals = usize::from(decimals);
    // One branch for every reason to give up (`|`, not `||`): two dots, a lone dot, more
    // decimals than the scale holds, a result that could reach 10^18.
    let digits = len - usize::from(has_dot);
    if (dots & dots.wrapping_sub(1) != 0)
        | (digits == 0)
        | (frac > decimals)
        | (digits + decimals > 18 + frac)
    {
        return None;
    }
    // < 10^(digits - frac + decimals) <= 10^18: no overflow.
    Some(eight_digits(w)? as i64 * POW10[decimals - frac])
}

/// [`fixed_in_window`] for `len` 9 to 16.
#[inline]
fn fixed_in_two_words(window: u128, len: usize, decimals: u8) -> Option<i64> {
    if len > 16 {
        return None;
    }
    let keep = u128::MAX << (8 * (16 - len));
    let w = (window & keep) | (splat16(b'0') & !keep);
    let dots = eq_mask16(w, b'.');
    let has_dot = dots != 0;
    // Without a dot, d = 0 drops byte 0, a leading zero (at most 15 digits, checked below).
    let d = (dots.trailing_zeros() / 8) & 15;
    let below = (1u128 << (8 * d)) - 1;
    let above = u128::MAX.checked_shl(8 * (d + 1)).unwrap_or(0);
    let w = ((w & below) << 8) | (w & above) | u128::from(b'0');
    let frac = if has_dot { 15 - d as usize } else { 0 };
    let digits = len - usize::from(has_dot);
    let decimals = usize::from(decimals);
    if dots & dots.wrapping_sub(1) != 0
        || digits > 15
        || frac > decimals
        || digits - frac + decimals > 18
    {
        return None;
    }
    let high = eight_digits(w as u64)?;
    let low = eight_digits((w >> 64) as u64)?;
    // < 10^(digits - frac + decimals) <= 10^18: no overflow.
    Some((high * 100_000_000 + low) as i64 * POW10[decimals - frac])
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
    fn window_path_cases() {
        let w = |s: &[u8], d: u8| {
            let mut b = [b','; 32];
            b[32 - s.len()..].copy_from_slice(s);
            fixed_in_window(load16(&b[16..]).expect("16"), s.len(), d)
        };
        assert_eq!(w(b"6593.5", 8), Some(659_350_000_000));
        assert_eq!(w(b"6594", 8), Some(659_400_000_000));
        assert_eq!(w(b"20750", 0), Some(20750));
        assert_eq!(w(b".5", 1), Some(5));
        assert_eq!(w(b"1.", 2), Some(100));
        assert_eq!(w(b"123456789012345", 0), Some(123_456_789_012_345));
        assert_eq!(
            w(b"1234567890123456", 0),
            None,
            "16 digits: the general path"
        );
        assert_eq!(w(b"12345678", 0), Some(12_345_678));
        assert_eq!(w(b"1234567.", 0), Some(1_234_567));
        assert_eq!(w(b".1234567", 7), Some(1_234_567));
        assert_eq!(w(b"123456789.123456", 6), Some(123_456_789_123_456));
        assert_eq!(w(b"0.00000001", 8), Some(1));
        assert_eq!(w(b"1.2.3", 8), None);
        assert_eq!(w(b"-1", 8), None);
        assert_eq!(w(b".", 8), None);
        assert_eq!(w(b"", 8), None);
        assert_eq!(w(b"20750.5", 0), None);
        assert_eq!(w(b"100000000000", 8), None);
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
        fn window_path_agrees_with_parse_fixed(text in "-?[0-9]{0,17}(\\.[0-9]{0,10})?(\\.[0-9]{0,2})?", prefix in "[0-9a-z,.]{16}", d in 0u8..=18) {
            let bytes = std::format!("{prefix}{text}").into_bytes();
            let window = load16(&bytes[bytes.len() - 16..]).expect("16 bytes");
            if let Some(v) = fixed_in_window(window, text.len(), d) {
                proptest::prop_assert_eq!(Ok(v), parse_fixed(text.as_bytes(), d), "{}", text);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32), d in 0u8..=18) {
            let _ = parse_fixed(&bytes, d);
            let _ = parse_u64(&bytes);
        }
    }
}
