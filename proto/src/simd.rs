//! SSE2 steps of the market-data fast path, 16 bytes per instruction.
//!
//! SSE2 is part of the x86-64 baseline, so this module is compiled exactly when
//! `target_feature = "sse2"` is enabled at build time; other targets use the SWAR (64-bit
//! word) versions in [`crate::md`] and [`crate::decimal`], which the tests compare these
//! against on every input they generate.
//!
//! Unsafe discipline: the intrinsics are `unsafe` to call only because they need SSE2, and
//! this module exists only when SSE2 is enabled at compile time, so every CPU that runs it
//! has SSE2. Every `unsafe` block here holds nothing but intrinsic calls on values already
//! loaded through safe slice accesses (no pointer is dereferenced). Plain functions with
//! such blocks, rather than `#[target_feature]` functions, so that they inline into the
//! parser (a `#[target_feature]` function is not inlined into a caller without it).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, _mm_add_epi16, _mm_and_si128, _mm_cmpeq_epi8, _mm_cvtsi128_si64, _mm_madd_epi16,
    _mm_movemask_epi8, _mm_mullo_epi16, _mm_or_si128, _mm_packs_epi32, _mm_set1_epi16,
    _mm_set1_epi32, _mm_set1_epi8, _mm_set_epi64x, _mm_setzero_si128, _mm_srli_epi16,
    _mm_srli_si128, _mm_sub_epi8, _mm_subs_epu8,
};

/// Sixteen bytes into a vector register (byte 0 in lane 0).
#[inline(always)]
fn load(bytes: &[u8; 16]) -> __m128i {
    let v = u128::from_le_bytes(*bytes);
    // SAFETY: SSE2 is enabled at compile time (module docs); a value computation only.
    unsafe { _mm_set_epi64x((v >> 64) as i64, v as i64) }
}

/// A bit per byte of `bytes` that is a comma (bit `i` for byte `i`).
#[inline(always)]
pub(crate) fn comma_mask16(bytes: &[u8; 16]) -> u32 {
    let v = load(bytes);
    // SAFETY: SSE2 is enabled at compile time (module docs); value computations only.
    unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8))) as u32 }
}

/// The positions of the first two commas if both are within the first 32 bytes.
#[inline(always)]
pub(crate) fn first_two_commas(line: &[u8]) -> Option<(usize, usize)> {
    let lo: &[u8; 16] = line.get(..16)?.try_into().ok()?;
    let hi: &[u8; 16] = line.get(16..32)?.try_into().ok()?;
    let mask = comma_mask16(lo) | (comma_mask16(hi) << 16);
    let rest = mask & mask.wrapping_sub(1);
    if rest == 0 {
        return None;
    }
    Some((
        mask.trailing_zeros() as usize,
        rest.trailing_zeros() as usize,
    ))
}

/// Two fields of exactly 16 ASCII digits (the timestamps) to their values, or `None` if any
/// byte is not a digit. Both at once: digit check, then digit pairs (x10 + next), groups of
/// four (x100 + next, `pmaddwd`), groups of eight (x10000 + next, `pmaddwd` again).
#[inline(always)]
pub(crate) fn two_timestamps(a: &[u8; 16], b: &[u8; 16]) -> Option<(u64, u64)> {
    let (va, vb) = (load(a), load(b));
    // SAFETY: SSE2 is enabled at compile time (module docs); value computations only.
    let (ok, low, high) = unsafe {
        let zero = _mm_set1_epi8(b'0' as i8);
        let nine = _mm_set1_epi8(9);
        let da = _mm_sub_epi8(va, zero);
        let db = _mm_sub_epi8(vb, zero);
        // A byte is a digit iff (byte - '0') saturating-minus 9 is 0 (bytes below '0' wrap
        // high).
        let excess = _mm_or_si128(_mm_subs_epu8(da, nine), _mm_subs_epu8(db, nine));
        let ok = _mm_movemask_epi8(_mm_cmpeq_epi8(excess, _mm_setzero_si128())) == 0xFFFF;
        let quads = _mm_packs_epi32(groups_of_four(da), groups_of_four(db));
        let eights = _mm_madd_epi16(quads, _mm_set1_epi32(0x0001_2710)); // (10000, 1)
        let low = _mm_cvtsi128_si64(eights) as u64;
        let high = _mm_cvtsi128_si64(_mm_srli_si128::<8>(eights)) as u64;
        (ok, low, high)
    };
    if !ok {
        return None;
    }
    // 32-bit lanes [a_high8, a_low8, b_high8, b_low8], each < 10^8.
    let a = (low & 0xFFFF_FFFF) * 100_000_000 + (low >> 32);
    let b = (high & 0xFFFF_FFFF) * 100_000_000 + (high >> 32);
    Some((a, b))
}

/// Sixteen digit values (0..=9, the first most significant) to four 32-bit lanes of four
/// digits each.
#[inline(always)]
fn groups_of_four(d: __m128i) -> __m128i {
    // SAFETY: SSE2 is enabled at compile time (module docs); value computations only.
    unsafe {
        // 16-bit lane i holds digit 2i (low byte, more significant) and digit 2i+1.
        let first = _mm_and_si128(d, _mm_set1_epi16(0x00FF));
        let second = _mm_srli_epi16::<8>(d);
        let pairs = _mm_add_epi16(_mm_mullo_epi16(first, _mm_set1_epi16(10)), second);
        _mm_madd_epi16(pairs, _mm_set1_epi32(0x0001_0064)) // (100, 1) per pair
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decimal::digits16;

    extern crate std;

    #[test]
    fn timestamps() {
        assert_eq!(
            two_timestamps(b"1585699200245000", b"0000000000000001"),
            Some((1_585_699_200_245_000, 1))
        );
        assert_eq!(
            two_timestamps(b"9999999999999999", b"0000000000000000"),
            Some((9_999_999_999_999_999, 0))
        );
        assert_eq!(
            two_timestamps(b"158569920024500/", b"0000000000000001"),
            None
        );
        assert_eq!(
            two_timestamps(b"1585699200245000", b":000000000000001"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn timestamps_agree_with_swar(a in proptest::array::uniform16(b'.'..=b';'), b in proptest::array::uniform16(b'0'..=b'9'), swap in proptest::bool::ANY) {
            let (a, b) = if swap { (b, a) } else { (a, b) };
            let swar = digits16(&a).zip(digits16(&b));
            proptest::prop_assert_eq!(two_timestamps(&a, &b), swar);
        }

        #[test]
        fn comma_mask_agrees_with_portable(bytes in proptest::array::uniform16(proptest::prop_oneof![b'+'..=b'-', proptest::num::u8::ANY])) {
            proptest::prop_assert_eq!(comma_mask16(&bytes), crate::md::comma_mask16_portable(&bytes));
        }

        #[test]
        fn commas_agree_with_swar(line in proptest::collection::vec(proptest::prop_oneof![4 => b'a'..=b'z', 1 => proptest::strategy::Just(b',')], 0..64)) {
            if let Some(c) = first_two_commas(&line) {
                proptest::prop_assert_eq!(Some(c), crate::md::first_two_commas_swar(&line));
            }
        }
    }
}
