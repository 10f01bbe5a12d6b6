//! A `numeric` text into the exact varlena `numeric_in` returns, without
//! calling it.
//!
//! Design notes
//! - `numeric_in` was 2–5% of a bulk apply (issue 14): per value it skips
//!   blanks, tries four special spellings, pallocs a decimal-digit buffer,
//!   a `NumericVar` and the result, and frees two of them. The decoder
//!   writes `numeric_out`'s text, whose shape is narrow: `-?digits[.digits]`
//!   or `NaN` / `Infinity` / `-Infinity`. For that shape this module builds
//!   the same bytes directly (PostgreSQL 15, `src/backend/utils/adt/numeric.c`:
//!   `numeric_in`, `set_var_from_str`, `make_result_opt_error`, the
//!   `NumericShort` / `NumericLong` layout).
//! - The result is what `make_result` pallocs, byte for byte: the 4-byte
//!   varlena header, then either the short form (one 16-bit word: short
//!   flag, sign, display scale, weight, when `NUMERIC_CAN_BE_SHORT`: dscale
//!   ≤ 63 and −64 ≤ weight ≤ 63) or the long form (sign + dscale word, weight
//!   word), then the base-10000 digits without leading or trailing zero
//!   digits. A zero has no digits, weight 0 and a positive sign (`-0.00` is
//!   `0.00`); the display scale is the count of digits after the point.
//!   Special values are the 2-byte header alone (`NaN` 0xC000, `Infinity`
//!   0xD000, `-Infinity` 0xF000).
//! - Anything else is `None` and the caller calls `numeric_in`: other
//!   spellings it accepts (blanks, `+`, exponents, `.5`, `1.`, `nan`, `inf`),
//!   syntax errors, and values `make_result` refuses with its own ERROR
//!   ("value overflows numeric format": dscale > 16383 or a weight outside
//!   int16). So PostgreSQL stays the authority: same value, same ERROR.
//!   (`NUMERIC_MAX_PRECISION` bounds only typmods and exponents, neither of
//!   which reaches this reader.)
//! - Only for a column without typmod: a typmod means `apply_typmod`'s
//!   rounding and precision check, left to `numeric_in`.
//! - Pure (no PostgreSQL call) except `datum`, the apply worker's hook, which
//!   pallocs the bytes in the current memory context, where
//!   `InputFunctionCall` would have put `numeric_in`'s result: same lifetime.
//!   A `Plan` measures the text first, so the varlena is allocated once at
//!   its exact size and written in place (no intermediate buffer).
//!   The bytes are appended to a buffer by `push_numeric` for readers that
//!   embed numerics (`jsonb_input.rs`: jsonb numbers, which are never the
//!   special spellings: JSON has none); `numeric_bytes` is its tests' form.
//! - Unit tests check the layout; the `#[pg_test]` compares the bytes with
//!   `numeric_in`'s on edge cases and thousands of generated texts.

use pgrx::pg_sys;

use crate::ffi::numeric::{
    DEC_DIGITS, DSCALE_MASK, NAN, NEG, NINF, PINF, SHORT, SHORT_DSCALE_MASK, SHORT_DSCALE_SHIFT, SHORT_SIGN_MASK,
    SHORT_WEIGHT_MASK, SHORT_WEIGHT_MAX, SHORT_WEIGHT_MIN, SHORT_WEIGHT_SIGN_MASK,
};

/// `VARHDRSZ`.
const VARHDRSZ: usize = 4;
/// The largest display scale of the short form.
const SHORT_DSCALE_MAX: usize = (SHORT_DSCALE_MASK >> SHORT_DSCALE_SHIFT) as usize;
/// The largest display scale the format stores.
const DSCALE_MAX: usize = DSCALE_MASK as usize;

/// The varlena `numeric_in(text, typmod -1)` returns, header included;
/// `None` when `text` is not of `numeric_out`'s shape or would raise an
/// ERROR (see the module notes).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn numeric_bytes(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    push_numeric(&mut out, text).then_some(out)
}

/// Append `numeric_bytes(text)` to `out`; `false` (nothing appended) when
/// it is `None`.
pub(crate) fn push_numeric(out: &mut Vec<u8>, text: &str) -> bool {
    let Some(plan) = Plan::read(text) else { return false };
    let start = out.len();
    out.resize(start + plan.len(), 0);
    plan.write(&mut out[start..]);
    true
}

/// The numeric datum of `text` for a column without typmod, palloc'd in
/// the current memory context (where `InputFunctionCall` would put
/// `numeric_in`'s result); `None`: call `numeric_in`.
pub(crate) fn datum(text: &str) -> Option<pg_sys::Datum> {
    let plan = Plan::read(text)?;
    Some(crate::ffi::palloc_datum(plan.len(), |out| plan.write(out)))
}

/// What a text becomes, measured before anything is written (so that the
/// hook allocates the result once, at its exact size).
enum Plan<'a> {
    /// `NaN`, `Infinity`, `-Infinity`: the header word alone.
    Special(u16),
    Finite {
        negative: bool,
        /// The text's digits: before the point, after it.
        int: &'a [u8],
        frac: &'a [u8],
        /// Zeros put before the integer digits so that base-10000 digits
        /// line up with the point (set_var_from_str's `offset`).
        pad: usize,
        /// Stored base-10000 digits: the first one's index among the
        /// aligned groups, and their count (leading and trailing zero
        /// digits stripped; 0 for a zero).
        first: usize,
        count: usize,
        weight: i16,
        dscale: u16,
    },
}

impl<'a> Plan<'a> {
    fn read(text: &'a str) -> Option<Self> {
        match text {
            "NaN" => return Some(Plan::Special(NAN)),
            "Infinity" => return Some(Plan::Special(PINF)),
            "-Infinity" => return Some(Plan::Special(NINF)),
            _ => {}
        }
        let Shape { negative, int, frac } = Shape::read(text.as_bytes())?;
        let pad = (DEC_DIGITS - int.len() % DEC_DIGITS) % DEC_DIGITS;
        let digits = || int.iter().chain(frac);
        let dscale = frac.len() as u16;
        let Some(nonzero) = digits().position(|&c| c != b'0') else {
            // A zero: no digits, weight 0, positive (make_result).
            return Some(Plan::Finite { negative: false, int, frac, pad, first: 0, count: 0, weight: 0, dscale });
        };
        let last = int.len() + frac.len() - 1 - digits().rev().position(|&c| c != b'0')?;
        let first = (nonzero + pad) / DEC_DIGITS;
        let count = (last + pad) / DEC_DIGITS - first + 1;
        let int_groups = (int.len() + pad) / DEC_DIGITS;
        // Outside int16: make_result's "value overflows numeric format".
        let weight = i16::try_from(int_groups as i64 - 1 - first as i64).ok()?;
        Some(Plan::Finite { negative, int, frac, pad, first, count, weight, dscale })
    }

    fn is_short(&self) -> bool {
        match *self {
            Plan::Special(_) => true,
            Plan::Finite { weight, dscale, .. } => {
                usize::from(dscale) <= SHORT_DSCALE_MAX
                    && (SHORT_WEIGHT_MIN..=SHORT_WEIGHT_MAX).contains(&i32::from(weight))
            }
        }
    }

    /// The varlena's length (make_result's `len`).
    fn len(&self) -> usize {
        let words = if self.is_short() { 1 } else { 2 };
        let count = match self {
            Plan::Special(_) => 0,
            Plan::Finite { count, .. } => *count,
        };
        VARHDRSZ + 2 * (words + count)
    }

    /// Write the varlena into `out`, of exactly `self.len()` bytes.
    fn write(&self, out: &mut [u8]) {
        let len = out.len();
        out[..VARHDRSZ].copy_from_slice(&varlena_header(len));
        let mut at = VARHDRSZ;
        let mut put = |w: u16| {
            out[at..at + 2].copy_from_slice(&w.to_ne_bytes());
            at += 2;
        };
        let &Plan::Finite { negative, int, frac, pad, first, count, weight, dscale } = self else {
            let &Plan::Special(word) = self else { unreachable!() };
            put(word);
            return;
        };
        if self.is_short() {
            let sign = if negative { SHORT_SIGN_MASK } else { 0 };
            let weight_sign = if weight < 0 { SHORT_WEIGHT_SIGN_MASK } else { 0 };
            put(SHORT | sign | dscale << SHORT_DSCALE_SHIFT | weight_sign | (weight as u16 & SHORT_WEIGHT_MASK));
        } else {
            put(if negative { NEG } else { 0 } | dscale);
            put(weight as u16);
        }
        // Decimal digit at aligned position p (zero in the padding and past the end).
        let digit = |p: usize| {
            let i = p.wrapping_sub(pad);
            let c = if i < int.len() { int[i] } else { frac.get(i - int.len()).copied().unwrap_or(b'0') };
            u16::from(c - b'0')
        };
        for g in first..first + count {
            let p = g * DEC_DIGITS;
            put(((digit(p) * 10 + digit(p + 1)) * 10 + digit(p + 2)) * 10 + digit(p + 3));
        }
    }
}

/// A finite text of the accepted shape, split at the point.
struct Shape<'a> {
    negative: bool,
    /// At least one ASCII digit.
    int: &'a [u8],
    /// ASCII digits after the point (none without a point); at most
    /// `DSCALE_MAX` of them.
    frac: &'a [u8],
}

impl<'a> Shape<'a> {
    fn read(b: &'a [u8]) -> Option<Self> {
        let (negative, rest) = match b.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, b),
        };
        let (int, frac) = match rest.iter().position(|&c| c == b'.') {
            Some(p) => {
                let frac = &rest[p + 1..];
                if frac.is_empty() {
                    return None; // `1.`: numeric_in's
                }
                (&rest[..p], frac)
            }
            None => (rest, &rest[rest.len()..]),
        };
        let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
        if !digits(int) || !(frac.is_empty() || digits(frac)) || frac.len() > DSCALE_MAX {
            return None;
        }
        Some(Shape { negative, int, frac })
    }
}

/// `SET_VARSIZE(ptr, len)`'s four bytes (4-byte header, not compressed).
fn varlena_header(len: usize) -> [u8; 4] {
    let len = len as u32;
    if cfg!(target_endian = "big") { (len & 0x3FFF_FFFF).to_ne_bytes() } else { (len << 2).to_ne_bytes() }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use crate::apply::test_rng::Rng;
    use pgrx::prelude::*;
    use std::ffi::{CStr, CString};

    /// A varlena: its header, then `payload`.
    #[cfg(test)]
    fn varlena(payload: Vec<u8>) -> Vec<u8> {
        [varlena_header(VARHDRSZ + payload.len()).to_vec(), payload].concat()
    }

    /// A numeric in the short format, built independently of the code under test.
    #[cfg(test)]
    fn short(negative: bool, weight: i32, dscale: u16, digits: &[u16]) -> Vec<u8> {
        assert!((-64..64).contains(&weight) && dscale < 64);
        let w = if weight < 0 { 0x40 | (weight + 64) as u16 } else { weight as u16 };
        let h = 0x8000 | if negative { 0x2000 } else { 0 } | (dscale << 7) | w;
        let mut v = h.to_ne_bytes().to_vec();
        digits.iter().for_each(|d| v.extend_from_slice(&d.to_ne_bytes()));
        varlena(v)
    }

    /// A numeric in the long format.
    #[cfg(test)]
    fn long(negative: bool, weight: i16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = ((if negative { 0x4000u16 } else { 0 }) | dscale).to_ne_bytes().to_vec();
        v.extend_from_slice(&weight.to_ne_bytes());
        digits.iter().for_each(|d| v.extend_from_slice(&d.to_ne_bytes()));
        varlena(v)
    }

    #[cfg(test)]
    fn bytes(t: &str) -> Vec<u8> {
        numeric_bytes(t).unwrap_or_else(|| panic!("{t:?} refused"))
    }

    #[test]
    fn varlena_header_is_set_varsize() {
        if cfg!(target_endian = "little") {
            assert_eq!(varlena_header(6), [24, 0, 0, 0]);
        }
        assert_eq!(bytes("0").len(), 6);
    }

    #[test]
    fn zeros_have_no_digits_weight_zero_and_a_positive_sign() {
        assert_eq!(bytes("0"), short(false, 0, 0, &[]));
        assert_eq!(bytes("-0"), short(false, 0, 0, &[]));
        assert_eq!(bytes("0.000"), short(false, 0, 3, &[]));
        assert_eq!(bytes("-0.00"), short(false, 0, 2, &[]));
        assert_eq!(bytes("0000.0"), short(false, 0, 1, &[]));
        assert_eq!(bytes(&format!("0.{}", "0".repeat(100))), long(false, 0, 100, &[]));
    }

    #[test]
    fn digits_are_base_10000_aligned_on_the_point() {
        assert_eq!(bytes("3.14"), short(false, 0, 2, &[3, 1400]));
        assert_eq!(bytes("-3.14"), short(true, 0, 2, &[3, 1400]));
        assert_eq!(bytes("12345678"), short(false, 1, 0, &[1234, 5678]));
        assert_eq!(bytes("123456789"), short(false, 2, 0, &[1, 2345, 6789]));
        assert_eq!(bytes("1.01"), short(false, 0, 2, &[1, 100]));
        assert_eq!(bytes("99999.99"), short(false, 1, 2, &[9, 9999, 9900]));
        assert_eq!(bytes("-999999999"), short(true, 2, 0, &[9, 9999, 9999]));
    }

    #[test]
    fn leading_and_trailing_zero_digits_are_stripped() {
        // Trailing zero digits are not stored; the display scale keeps the
        // fractional zeros.
        assert_eq!(bytes("10000"), short(false, 1, 0, &[1]));
        assert_eq!(bytes("1.50000000"), short(false, 0, 8, &[1, 5000]));
        assert_eq!(bytes("100000000.00010000"), short(false, 2, 8, &[1, 0, 0, 1]));
        // Leading zeros, in the text or as whole digits.
        assert_eq!(bytes("007.50"), short(false, 0, 2, &[7, 5000]));
        assert_eq!(bytes("00000000012"), short(false, 0, 0, &[12]));
        assert_eq!(bytes("0.0001234"), short(false, -1, 7, &[1, 2340]));
        assert_eq!(bytes("0.00000001"), short(false, -2, 8, &[1]));
        assert_eq!(bytes("-0.00000001"), short(true, -2, 8, &[1]));
        let zeros = "0".repeat(10_000);
        assert_eq!(bytes(&format!("{zeros}5")), short(false, 0, 0, &[5]));
    }

    #[test]
    fn short_and_long_headers_as_numeric_can_be_short() {
        // Display scale 63 is the short form's largest, 64 needs the long one.
        assert_eq!(bytes(&format!("0.{}1", "0".repeat(62))), short(false, -16, 63, &[10]));
        assert_eq!(bytes(&format!("0.{}1", "0".repeat(63))), long(false, -16, 64, &[1]));
        assert_eq!(bytes(&format!("-0.{}1", "0".repeat(63))), long(true, -16, 64, &[1]));
        // Weight 63 is the short form's largest, 64 needs the long one.
        assert_eq!(bytes(&format!("1{}", "0".repeat(255))), short(false, 63, 0, &[1000]));
        assert_eq!(bytes(&format!("1{}", "0".repeat(256))), long(false, 64, 0, &[1]));
        let mut digits = vec![0u16; 66];
        (digits[0], digits[65]) = (1, 5000);
        assert_eq!(bytes(&format!("-1{}.5", "0".repeat(256))), long(true, 64, 1, &digits));
    }

    #[test]
    fn the_format_limits_are_left_to_numeric_in() {
        // dscale 16383 is the largest stored; more is make_result's ERROR.
        let max = format!("0.{}1", "0".repeat(DSCALE_MAX - 1));
        assert_eq!(bytes(&max), long(false, -4096, DSCALE_MAX as u16, &[10]));
        assert_eq!(numeric_bytes(&format!("0.{}1", "0".repeat(DSCALE_MAX))), None);
        assert_eq!(numeric_bytes(&format!("0.{}", "0".repeat(DSCALE_MAX + 1))), None);
        // Weight 32767 (131072 integer digits) is the largest; one more digit overflows.
        let mut digits = vec![0u16; 32768];
        digits[0] = 1000;
        let widest = format!("1{}", "0".repeat(4 * 32768 - 1));
        assert_eq!(bytes(&widest), long(false, 32767, 0, &digits[..1]));
        assert_eq!(numeric_bytes(&format!("{widest}0")), None);
        // Leading zeros do not count.
        assert_eq!(bytes(&format!("0{widest}")), long(false, 32767, 0, &digits[..1]));
        // Many significant digits.
        let many = "123456789".repeat(100);
        let b = bytes(&format!("{many}.{many}"));
        assert_eq!(b.len(), VARHDRSZ + 4 + 2 * (225 + 225));
    }

    #[test]
    fn special_values_are_the_header_word_alone() {
        assert_eq!(bytes("NaN"), varlena(0xC000u16.to_ne_bytes().to_vec()));
        assert_eq!(bytes("Infinity"), varlena(0xD000u16.to_ne_bytes().to_vec()));
        assert_eq!(bytes("-Infinity"), varlena(0xF000u16.to_ne_bytes().to_vec()));
    }

    #[test]
    fn other_spellings_are_left_to_numeric_in() {
        for t in [
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "\t1",
            "1.",
            ".5",
            "-.5",
            "1e5",
            "1E5",
            "1.5e-3",
            "1..2",
            "1.2.3",
            "--1",
            "-+1",
            "nan",
            "NAN",
            "inf",
            "-inf",
            "infinity",
            "+Infinity",
            "-NaN",
            "0x10",
            "1_000",
            "١",
            "1٢",
            "1,5",
            "1.5-",
        ] {
            assert_eq!(numeric_bytes(t), None, "{t:?}");
        }
    }

    #[test]
    fn push_numeric_appends_or_leaves_the_buffer_alone() {
        let mut out = b"ab".to_vec();
        assert!(push_numeric(&mut out, "1.5"));
        assert_eq!(out, [b"ab".to_vec(), bytes("1.5")].concat());
        assert!(!push_numeric(&mut out, "1e5"));
        assert!(!push_numeric(&mut out, &format!("1{}", "0".repeat(4 * 32768))));
        assert_eq!(out, [b"ab".to_vec(), bytes("1.5")].concat());
    }

    // In-server: the bytes against numeric_in's own.

    /// The bytes of a numeric datum (its whole varlena).
    fn varlena_bytes(d: pg_sys::Datum) -> Vec<u8> {
        let p = d.cast_mut_ptr::<pg_sys::varlena>();
        // SAFETY: a datum numeric_in just returned: a palloc'd 4-byte-header varlena.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), pgrx::varlena::varsize_any(p)).to_vec() }
    }

    fn numeric_in(text: &str) -> pg_sys::Datum {
        let c = CString::new(text).unwrap();
        // SAFETY: a NUL-terminated string; numeric_in raises an ERROR on bad input.
        unsafe {
            pg_sys::OidInputFunctionCall(
                pg_sys::Oid::from(pg_sys::F_NUMERIC_IN),
                c.as_ptr().cast_mut(),
                pg_sys::NUMERICOID,
                -1,
            )
        }
    }

    fn numeric_out(d: pg_sys::Datum) -> String {
        // SAFETY: a numeric datum; the result is a palloc'd C string.
        unsafe {
            let s = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_NUMERIC_OUT), d);
            CStr::from_ptr(s).to_str().unwrap().to_owned()
        }
    }

    /// Our bytes equal numeric_in's whenever we give any, and the datum the
    /// apply hook pallocs holds the same; returns whether we did.
    fn same_as_numeric_in(text: &str) -> bool {
        let Some(ours) = numeric_bytes(text) else { return false };
        let theirs = varlena_bytes(numeric_in(text));
        assert_eq!(ours, theirs, "{text:?}");
        assert_eq!(varlena_bytes(datum(text).unwrap()), theirs, "{text:?}");
        true
    }

    /// Numeric texts from a deterministic generator.
    struct Gen(Rng);
    impl Gen {
        fn below(&mut self, n: u64) -> u64 {
            self.0.below(n as usize) as u64
        }
        /// `n` digits, zeros frequent (runs of zero base-10000 digits).
        fn digits(&mut self, n: u64) -> String {
            let zeros = self.below(3);
            (0..n).map(|_| if self.below(3) < zeros { '0' } else { char::from(b'0' + self.below(10) as u8) }).collect()
        }
        fn text(&mut self) -> String {
            let sign = if self.below(4) == 0 { "-" } else { "" };
            let int = match self.below(5) {
                0 => "0".to_string(),
                1 => {
                    let n = 1 + self.below(10);
                    format!("000{}", self.digits(n))
                }
                _ => {
                    let n = 1 + self.below(60);
                    self.digits(n)
                }
            };
            match self.below(4) {
                0 => format!("{sign}{int}"),
                _ => {
                    let n = 1 + self.below(60);
                    format!("{sign}{int}.{}", self.digits(n))
                }
            }
        }
    }

    #[pg_test]
    fn numeric_bytes_equal_numeric_in_on_edge_cases() {
        let z = |n: usize| "0".repeat(n);
        let corpus = [
            "0".to_string(),
            "-0".into(),
            "0.000".into(),
            "-0.00".into(),
            "1".into(),
            "-1".into(),
            "3.14".into(),
            "007.50".into(),
            "10000".into(),
            "9999".into(),
            "99999999.99999999".into(),
            "0.0001".into(),
            "0.00001".into(),
            "100000000.00010000".into(),
            "NaN".into(),
            "Infinity".into(),
            "-Infinity".into(),
            format!("0.{}1", z(62)),
            format!("0.{}1", z(63)),
            format!("-0.{}1", z(63)),
            format!("1{}", z(251)),
            format!("1{}", z(252)),
            format!("1{}", z(255)),
            format!("1{}", z(256)),
            format!("-1{}.5", z(256)),
            format!("0.{}1", z(16381)),
            format!("0.{}", z(16383)),
            format!("1{}", z(4 * 32768 - 1)),
            format!("{}1", z(20_000)),
            "123456789".repeat(120),
            format!("{}.{}", "987654321".repeat(50), "123456789".repeat(50)),
        ];
        for t in &corpus {
            assert!(same_as_numeric_in(t), "{t:?} should take the fast path");
        }
    }

    #[pg_test]
    fn numeric_bytes_equal_numeric_in_on_generated_texts() {
        let mut g = Gen(Rng(0x9E37_79B9_7F4A_7C15));
        for _ in 0..4000 {
            let t = g.text();
            assert!(same_as_numeric_in(&t), "{t:?} should take the fast path");
            // What numeric_out prints for it is accepted too, and is the same value.
            let out = numeric_out(numeric_in(&t));
            assert!(same_as_numeric_in(&out), "{out:?} (numeric_out) should take the fast path");
            assert_eq!(varlena_bytes(numeric_in(&out)), varlena_bytes(numeric_in(&t)), "{t:?}");
        }
    }

    #[pg_test]
    fn numeric_out_texts_take_the_fast_path() {
        let texts = Spi::connect(|c| {
            c.select(
                "SELECT v::text FROM ( \
                   SELECT (g % 100000) * 1.01 AS v FROM generate_series(1, 2000, 7) g \
                   UNION ALL SELECT -(g::numeric / 7) FROM generate_series(1, 300) g \
                   UNION ALL SELECT ln(g::numeric) FROM generate_series(2, 300) g \
                   UNION ALL SELECT power(10::numeric, g) FROM generate_series(-300, 300, 11) g \
                   UNION ALL SELECT power(2::numeric, g) * 1.5 FROM generate_series(-80, 400, 13) g \
                   UNION ALL SELECT ('1.5e' || g)::numeric FROM generate_series(-900, 900, 37) g \
                   UNION ALL SELECT round(random()::numeric * 1e9, (g % 30)) FROM generate_series(1, 300) g \
                   UNION ALL SELECT x::numeric FROM unnest(ARRAY['NaN', 'Infinity', '-Infinity', '-0.000']) x \
                 ) s",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect::<Vec<_>>()
        });
        assert!(texts.len() > 1000);
        for t in &texts {
            assert!(same_as_numeric_in(t), "{t:?} (numeric_out) should take the fast path");
        }
    }
}
