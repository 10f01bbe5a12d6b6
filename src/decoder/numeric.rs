//! The text of a `numeric` value, written straight from its stored bytes.
//!
//! Design notes
//! - This is `numeric_out`'s text, byte for byte (PostgreSQL 15,
//!   `src/backend/utils/adt/numeric.c`: `init_var_from_num` and
//!   `get_str_from_var`): `NaN`, `Infinity`, `-Infinity`, else the digits
//!   with exactly the display scale's digits after the point. Calling the
//!   output function instead costs a detoasted copy of the value, a
//!   `NumericVar`, a palloc'd string and `strlen` per value; `numeric` is a
//!   common column type and every number inside a `jsonb` value is one
//!   (`jsonb.rs`), so this is on the per-row path.
//! - The input is the value's bytes after the varlena header (any header:
//!   the caller reads short and long varlenas alike). Anything that does not
//!   have the layout of a numeric gives `None`, and the caller falls back to
//!   the output function: PostgreSQL stays the authority on odd data.
//! - Pure and unit-tested; the cluster tests (`decoder_types.rs`) compare it
//!   with `numeric_out` on real values.

use crate::ffi::numeric::{
    DEC_DIGITS, DSCALE_MASK, NAN, NEG, NINF, PINF, SHORT, SHORT_DSCALE_MASK, SHORT_DSCALE_SHIFT, SHORT_SIGN_MASK,
    SHORT_WEIGHT_MASK, SHORT_WEIGHT_SIGN_MASK, SIGN_MASK, SPECIAL,
};

/// Append `numeric_out`'s text for the numeric whose bytes (without the
/// varlena header) are `data`; `None` (nothing appended) when `data` is not
/// a well-formed numeric.
pub(crate) fn push_text(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    let word = |i: usize| data.get(2 * i..2 * i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let header = word(0)?;
    let (negative, weight, dscale, digits_at) = match header & SIGN_MASK {
        SPECIAL => {
            out.extend_from_slice(match header {
                NAN => b"NaN".as_slice(),
                PINF => b"Infinity",
                NINF => b"-Infinity",
                _ => return None,
            });
            return Some(());
        }
        SHORT => {
            let magnitude = (header & SHORT_WEIGHT_MASK) as i32;
            let weight = if header & SHORT_WEIGHT_SIGN_MASK != 0 { magnitude - 64 } else { magnitude };
            let dscale = ((header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT) as usize;
            (header & SHORT_SIGN_MASK != 0, weight, dscale, 1)
        }
        sign => {
            let weight = word(1)? as i16 as i32;
            (sign == NEG, weight, (header & DSCALE_MASK) as usize, 2)
        }
    };
    let body = &data[2 * digits_at..];
    if !body.len().is_multiple_of(2) {
        return None;
    }
    let ndigits = body.len() / 2;
    let digit = |d: i64| -> u16 {
        if d < 0 || d as usize >= ndigits {
            0
        } else {
            let i = d as usize * 2;
            u16::from_ne_bytes([body[i], body[i + 1]])
        }
    };
    if (0..ndigits as i64).any(|d| digit(d) >= 10_000) {
        return None;
    }

    // get_str_from_var: the integer part (at least "0"), then a point and
    // `dscale` digits, taken from whole base-10000 digits and truncated.
    out.reserve((weight.max(0) as usize + 1) * DEC_DIGITS + dscale + DEC_DIGITS + 2);
    if negative {
        out.push(b'-');
    }
    let mut d: i64;
    if weight < 0 {
        d = weight as i64 + 1;
        out.push(b'0');
    } else {
        d = 0;
        while d <= weight as i64 {
            let dig = digit(d);
            let chars = [dig / 1000, dig / 100 % 10, dig / 10 % 10, dig % 10].map(|c| b'0' + c as u8);
            // The first digit's leading zeroes are suppressed.
            let skip = if d == 0 { chars[..3].iter().take_while(|&&c| c == b'0').count() } else { 0 };
            out.extend_from_slice(&chars[skip..]);
            d += 1;
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let end = out.len() + dscale;
        let mut written = 0;
        while written < dscale {
            let dig = digit(d);
            out.extend_from_slice(&[dig / 1000, dig / 100 % 10, dig / 10 % 10, dig % 10].map(|c| b'0' + c as u8));
            written += DEC_DIGITS;
            d += 1;
        }
        out.truncate(end);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored bytes of a numeric in the short format.
    fn short(negative: bool, weight: i32, dscale: u16, digits: &[u16]) -> Vec<u8> {
        assert!((-64..64).contains(&weight) && dscale < 64);
        let w = if weight < 0 { SHORT_WEIGHT_SIGN_MASK | (weight + 64) as u16 } else { weight as u16 };
        let h = SHORT | if negative { SHORT_SIGN_MASK } else { 0 } | (dscale << SHORT_DSCALE_SHIFT) | w;
        let mut v = h.to_ne_bytes().to_vec();
        digits.iter().for_each(|d| v.extend_from_slice(&d.to_ne_bytes()));
        v
    }

    /// The stored bytes of a numeric in the long format.
    fn long(negative: bool, weight: i16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = ((if negative { NEG } else { 0 }) | dscale).to_ne_bytes().to_vec();
        v.extend_from_slice(&weight.to_ne_bytes());
        digits.iter().for_each(|d| v.extend_from_slice(&d.to_ne_bytes()));
        v
    }

    fn text(data: &[u8]) -> Option<String> {
        let mut out = b"x".to_vec();
        push_text(&mut out, data).map(|()| String::from_utf8(out[1..].to_vec()).unwrap())
    }

    #[test]
    fn the_texts_numeric_out_prints() {
        // 3.14: weight 0, digits 3 | 1400, dscale 2
        assert_eq!(text(&short(false, 0, 2, &[3, 1400])).unwrap(), "3.14");
        assert_eq!(text(&short(true, 0, 2, &[3, 1400])).unwrap(), "-3.14");
        // 0 and 0.00: no digits at all
        assert_eq!(text(&short(false, 0, 0, &[])).unwrap(), "0");
        assert_eq!(text(&short(false, 0, 2, &[])).unwrap(), "0.00");
        // 12345678: weight 1, digits 1234 | 5678
        assert_eq!(text(&short(false, 1, 0, &[1234, 5678])).unwrap(), "12345678");
        // 10000: trailing zero digits are not stored
        assert_eq!(text(&short(false, 1, 0, &[1])).unwrap(), "10000");
        // 0.0001234 (dscale 7): weight -1, digits 1 | 2340
        assert_eq!(text(&short(false, -1, 7, &[1, 2340])).unwrap(), "0.0001234");
        // 1e-200 as the long format (dscale 200, weight -50)
        let tiny = text(&long(false, -50, 200, &[1])).unwrap();
        assert_eq!(tiny, format!("0.{}1", "0".repeat(199)));
        // 101.01 with a typmod of (10,5): dscale 5 pads with zeroes
        assert_eq!(text(&short(false, 0, 5, &[101, 100])).unwrap(), "101.01000");
        assert_eq!(text(&long(true, 2, 0, &[9, 9999, 9999])).unwrap(), "-999999999");
    }

    #[test]
    fn special_values() {
        assert_eq!(text(&NAN.to_ne_bytes()).unwrap(), "NaN");
        assert_eq!(text(&PINF.to_ne_bytes()).unwrap(), "Infinity");
        assert_eq!(text(&NINF.to_ne_bytes()).unwrap(), "-Infinity");
    }

    #[test]
    fn malformed_values_are_refused_and_write_nothing() {
        for bad in [vec![], vec![0x80], short(false, 0, 0, &[10_000]), [short(false, 0, 0, &[1]), vec![7]].concat()] {
            let mut out = Vec::new();
            assert_eq!(push_text(&mut out, &bad), None, "{bad:?}");
            assert!(out.is_empty());
        }
        assert_eq!(text(&0xE000u16.to_ne_bytes()), None);
    }
}
