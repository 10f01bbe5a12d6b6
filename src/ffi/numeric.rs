//! The stored layout of a `numeric` (PostgreSQL 15,
//! `src/backend/utils/adt/numeric.c`: its header words are defined there,
//! not in a header pgrx binds). Read by the decoder's printer
//! (`decoder/numeric.rs`) and written by the apply worker's reader
//! (`apply/numeric_input.rs`): one set of names for both.

/// Decimal digits per stored base-10000 digit (`DEC_DIGITS`, `NBASE`).
pub(crate) const DEC_DIGITS: usize = 4;

// The first 16-bit word (`n_header` / `n_sign_dscale`), numeric.c's names.
pub(crate) const SIGN_MASK: u16 = 0xC000;
pub(crate) const NEG: u16 = 0x4000;
pub(crate) const SHORT: u16 = 0x8000;
pub(crate) const SPECIAL: u16 = 0xC000;
pub(crate) const NAN: u16 = 0xC000;
pub(crate) const PINF: u16 = 0xD000;
pub(crate) const NINF: u16 = 0xF000;
pub(crate) const SHORT_SIGN_MASK: u16 = 0x2000;
pub(crate) const SHORT_DSCALE_MASK: u16 = 0x1F80;
pub(crate) const SHORT_DSCALE_SHIFT: u16 = 7;
pub(crate) const SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
pub(crate) const SHORT_WEIGHT_MASK: u16 = 0x003F;
/// The weights the short form holds (`NUMERIC_SHORT_WEIGHT_MIN/MAX`).
pub(crate) const SHORT_WEIGHT_MIN: i32 = -0x40;
pub(crate) const SHORT_WEIGHT_MAX: i32 = 0x3F;
/// `NUMERIC_DSCALE_MASK`: the largest display scale the format stores.
pub(crate) const DSCALE_MASK: u16 = 0x3FFF;

/// Append a canonical form of the numeric whose bytes (without the varlena
/// header) are `data`: one byte of kind (0 positive, 1 negative, 2 NaN, 3
/// Infinity, 4 -Infinity), then the display scale (u16), the weight of the
/// first digit (i16) and the base-10000 digits (u16 each), big-endian,
/// after dropping what `numeric_out` does not print (digits beyond the
/// display scale) and stripping leading and trailing zero digits (a zero
/// has no digits and weight 0). Two values get the same bytes exactly when
/// `numeric_out` prints the same text, whichever stored form (short, long)
/// they have. `None` (nothing appended) when `data` is not a well-formed
/// numeric. Pure; unit-tested.
pub(crate) fn push_canonical(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    let word = |i: usize| data.get(2 * i..2 * i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let header = word(0)?;
    let (negative, mut weight, dscale, digits_at) = match header & SIGN_MASK {
        SPECIAL => {
            out.push(match header {
                NAN => 2,
                PINF => 3,
                NINF => 4,
                _ => return None,
            });
            return Some(());
        }
        SHORT => {
            let magnitude = (header & SHORT_WEIGHT_MASK) as i32;
            let weight = if header & SHORT_WEIGHT_SIGN_MASK != 0 { magnitude - 64 } else { magnitude };
            (header & SHORT_SIGN_MASK != 0, weight, (header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT, 1)
        }
        sign => (sign == NEG, word(1)? as i16 as i32, header & DSCALE_MASK, 2),
    };
    let body = data.get(2 * digits_at..)?;
    if !body.len().is_multiple_of(2) {
        return None;
    }
    let mut digits: Vec<u16> = body.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect();
    if digits.iter().any(|&d| d >= 10_000) {
        return None;
    }
    // Digits past the display scale are not printed: the digit of weight
    // -k holds decimals 4(k-1)+1 ..= 4k.
    for (i, d) in digits.iter_mut().enumerate() {
        let k = i as i32 - weight;
        if k >= 1 {
            let kept = dscale as i32 - DEC_DIGITS as i32 * (k - 1);
            if kept <= 0 {
                *d = 0;
            } else if kept < DEC_DIGITS as i32 {
                let unit = 10u16.pow((DEC_DIGITS as i32 - kept) as u32);
                *d = *d / unit * unit;
            }
        }
    }
    let first = digits.iter().position(|&d| d != 0);
    let last = digits.iter().rposition(|&d| d != 0);
    let kept = match (first, last) {
        (Some(f), Some(l)) => {
            weight -= f as i32;
            &digits[f..=l]
        }
        _ => {
            weight = 0;
            &digits[..0]
        }
    };
    out.push(u8::from(negative));
    out.extend_from_slice(&dscale.to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    for d in kept {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(negative: bool, weight: i32, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let w = if weight < 0 { (weight + 64) as u16 | SHORT_WEIGHT_SIGN_MASK } else { weight as u16 };
        let header = SHORT | if negative { SHORT_SIGN_MASK } else { 0 } | (dscale << SHORT_DSCALE_SHIFT) | w;
        [header].iter().chain(digits).flat_map(|d| d.to_ne_bytes()).collect()
    }

    fn long(negative: bool, weight: i16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let header = if negative { NEG } else { 0 } | dscale;
        [header, weight as u16].iter().chain(digits).flat_map(|d| d.to_ne_bytes()).collect()
    }

    fn canonical(data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        push_canonical(&mut out, data).map(|_| out)
    }

    #[test]
    fn short_and_long_forms_of_a_value_agree() {
        // 12345.67: digits 1, 2345, 6700 (weight 1), dscale 2.
        let s = canonical(&short(false, 1, 2, &[1, 2345, 6700])).unwrap();
        assert_eq!(s, canonical(&long(false, 1, 2, &[1, 2345, 6700])).unwrap());
        // Leading and trailing zero digits (not stripped by whoever wrote them).
        assert_eq!(s, canonical(&long(false, 2, 2, &[0, 1, 2345, 6700, 0])).unwrap());
        assert_eq!(s, vec![0, 0, 2, 0, 1, 0, 1, 0x09, 0x29, 0x1a, 0x2c]);
        // -0.5 (dscale 1) and 0.5 differ; 0.5 with dscale 1 and 2 differ
        // (numeric_out prints 0.5 and 0.50).
        let half = canonical(&short(false, -1, 1, &[5000])).unwrap();
        assert_ne!(half, canonical(&short(true, -1, 1, &[5000])).unwrap());
        assert_ne!(half, canonical(&short(false, -1, 2, &[5000])).unwrap());
    }

    #[test]
    fn zero_and_unprinted_digits() {
        // Zero: no digits, weight "arbitrary" (numeric.c): always 0 here.
        let zero = canonical(&long(false, 0, 2, &[])).unwrap();
        assert_eq!(zero, canonical(&long(false, 7, 2, &[])).unwrap());
        assert_eq!(zero, canonical(&short(false, 0, 2, &[0, 0])).unwrap());
        // 0.1234 stored but dscale 2: numeric_out prints 0.12.
        assert_eq!(
            canonical(&short(false, -1, 2, &[1234])).unwrap(),
            canonical(&short(false, -1, 2, &[1200])).unwrap()
        );
        assert_ne!(
            canonical(&short(false, -1, 3, &[1234])).unwrap(),
            canonical(&short(false, -1, 3, &[1200])).unwrap()
        );
    }

    #[test]
    fn special_and_malformed_values() {
        assert_eq!(canonical(&NAN.to_ne_bytes()), Some(vec![2]));
        assert_eq!(canonical(&PINF.to_ne_bytes()), Some(vec![3]));
        assert_eq!(canonical(&NINF.to_ne_bytes()), Some(vec![4]));
        assert_eq!(canonical(&[]), None);
        assert_eq!(canonical(&short(false, 0, 0, &[10_000])), None);
        assert_eq!(canonical(&[0x00, 0x80, 0x01]), None);
    }
}
