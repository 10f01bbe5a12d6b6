//! JSON text building blocks for the change stream.
//!
//! The decoder writes documents straight into a byte buffer instead of
//! building a `serde_json::Value` per row: the hot path is one append per
//! piece, and the pieces that never change for a relation (column names, type
//! names) are rendered once and cached (see `shape.rs`). Everything here is
//! pure and tested without a server.

use std::io::Write;

/// Append `s` as a JSON string literal (RFC 8259 escaping). Bytes >= 0x80 are
/// copied as they are: the database encoding is expected to be UTF-8.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        // Eight bytes at a time while none needs escaping (most text).
        if let Some(chunk) = s.get(i..i + 8)
            && !chunk_needs_escape(u64::from_le_bytes(chunk.try_into().expect("eight bytes")))
        {
            i += 8;
            continue;
        }
        let b = s[i];
        if !NEEDS_ESCAPE[b as usize] {
            i += 1;
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes in `w` is below 0x20, `"` or `\\`
/// (the classic "has a byte less than / equal to" word tricks; exact: no
/// false negatives, and a false positive only sends the bytes through the
/// table one by one).
pub(crate) fn chunk_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space || has_zero(w ^ (ONES * b'"' as u64)) || has_zero(w ^ (ONES * b'\\' as u64))
}

/// How many bytes [`push_str`] appends for `s`: exact for long strings (one
/// counting pass, so that a 200 MB value reserves 200 MB, not 1.2 GB), the
/// 6-bytes-per-byte bound for short ones (no pass on the hot path).
pub(crate) fn str_len_bound(s: &[u8]) -> usize {
    if s.len() <= 4096 {
        return s.len() * 6 + 2;
    }
    s.iter().fold(2usize, |n, &b| {
        n + match b {
            _ if !NEEDS_ESCAPE[b as usize] => 1,
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            _ => 6,
        }
    })
}

/// How many bytes [`push_hex`] appends for `len` bytes.
pub(crate) fn hex_len(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(5)
}

/// Bytes that cannot appear raw inside a JSON string.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Append an integer as a JSON number.
pub(crate) fn push_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Append a float: a JSON number with the shortest text that reads back to the
/// same binary value, or the strings `"NaN"`, `"Infinity"`, `"-Infinity"`
/// (JSON has no literal for them; PostgreSQL spells them this way).
pub(crate) fn push_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        push_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

/// `real` counterpart of [`push_f64`]: shortest text for the 32-bit value, so
/// `1.1::real` is `1.1`, as PostgreSQL prints it.
pub(crate) fn push_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        push_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

fn push_non_finite(out: &mut Vec<u8>, nan: bool, negative: bool) {
    out.extend_from_slice(match (nan, negative) {
        (true, _) => b"\"NaN\"",
        (false, false) => b"\"Infinity\"",
        (false, true) => b"\"-Infinity\"",
    });
}

/// Append bytes as the JSON string `"\\x0a0b"`: PostgreSQL's hex `bytea`
/// text, independent of the session's `bytea_output`; without the `\x`
/// (`"0a0b"`, wal2json's spelling) when `prefix` is false.
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8], prefix: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 5);
    out.extend_from_slice(if prefix { b"\"\\\\x" } else { b"\"" });
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out.push(b'"');
}

/// Append an LSN as a JSON string in PostgreSQL's `X/X` form.
pub(crate) fn push_lsn(out: &mut Vec<u8>, lsn: u64) {
    let _ = write!(out, "\"{:X}/{:X}\"", lsn >> 32, lsn as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn strings_escape_exactly_what_json_requires() {
        let raw = "a\"b\\c\nd\te\u{1}f\u{7f}é€😀";
        let out = s(|o| push_str(o, raw.as_bytes()));
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\te\\u0001f\u{7f}é€😀\"");
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn length_bounds_match_what_is_written() {
        let long: Vec<u8> = (0..20_000u32).map(|i| (i % 128) as u8).collect();
        assert_eq!(str_len_bound(&long), s(|o| push_str(o, &long)).len());
        let short = b"a\"\x01";
        assert!(str_len_bound(short) >= s(|o| push_str(o, short)).len());
        assert_eq!(hex_len(3), s(|o| push_hex(o, &[1, 2, 3], true)).len());
    }

    #[test]
    fn escapes_at_every_position_of_a_long_string() {
        // Every escaped byte (and a few that are not: 0x20, 0x7f, 0x80,
        // 0xff) at every offset of 8-byte chunks, among plain text.
        let specials: Vec<u8> = (0u8..0x20).chain([b'"', b'\\', b' ', 0x7f, 0x80, 0xff]).collect();
        for &c in &specials {
            for at in 0..24 {
                let mut raw = b"abcdefghijklmnopqrstuvwxyz0123".to_vec();
                raw[at] = c;
                let mut want = vec![b'"'];
                for &b in &raw {
                    match b {
                        b'"' => want.extend_from_slice(b"\\\""),
                        b'\\' => want.extend_from_slice(b"\\\\"),
                        b'\n' => want.extend_from_slice(b"\\n"),
                        b'\r' => want.extend_from_slice(b"\\r"),
                        b'\t' => want.extend_from_slice(b"\\t"),
                        0x08 => want.extend_from_slice(b"\\b"),
                        0x0c => want.extend_from_slice(b"\\f"),
                        b if b < 0x20 => want.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                        b => want.push(b),
                    }
                }
                want.push(b'"');
                let mut got = Vec::new();
                push_str(&mut got, &raw);
                assert_eq!(got, want, "byte {c:#x} at {at}");
            }
        }
    }

    #[test]
    fn every_control_character_round_trips() {
        let raw: String = (0u8..0x20).map(char::from).collect();
        let back: String = serde_json::from_str(&s(|o| push_str(o, raw.as_bytes()))).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn floats_are_shortest_and_exact() {
        for v in [0.1, 1.0, -0.0, 1e300, 5e-324, 123456789.125, f64::MAX, f64::MIN_POSITIVE] {
            let text = s(|o| push_f64(o, v));
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{text}");
        }
        assert_eq!(s(|o| push_f32(o, 1.1)), "1.1");
        assert_eq!(s(|o| push_f64(o, f64::NAN)), "\"NaN\"");
        assert_eq!(s(|o| push_f64(o, f64::INFINITY)), "\"Infinity\"");
        assert_eq!(s(|o| push_f32(o, f32::NEG_INFINITY)), "\"-Infinity\"");
    }

    #[test]
    fn integers_and_lsns() {
        assert_eq!(s(|o| push_int(o, i64::MIN)), "-9223372036854775808");
        assert_eq!(s(|o| push_lsn(o, 0x1_0000_00AB)), "\"1/AB\"");
        assert_eq!(s(|o| push_lsn(o, 0)), "\"0/0\"");
    }

    #[test]
    fn bytea_is_postgres_hex_text() {
        let out = s(|o| push_hex(o, &[0, 0xab, 0x10], true));
        assert_eq!(out, "\"\\\\x00ab10\"");
        assert_eq!(s(|o| push_hex(o, &[0, 0xab], false)), "\"00ab\"");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "\\x00ab10");
    }
}
