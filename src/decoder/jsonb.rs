//! The text of a `jsonb` value, written straight from its stored bytes.
//!
//! Design notes
//! - This is `jsonb_out`'s text, byte for byte (PostgreSQL 15,
//!   `src/backend/utils/adt/jsonb.c`, `JsonbToCStringWorker` without
//!   indentation): objects as `{"k": v, "k2": v2}`, arrays as `[a, b]`, a
//!   top-level scalar bare, keys and members in their stored order, strings
//!   escaped by `escape_json`'s rules (the same as `json::push_str`'s) and
//!   numbers as `numeric_out` prints them (`numeric.rs`). The output
//!   function would build a tree iterator, a `StringInfo`, a palloc'd copy of
//!   every string and a `numeric_out` call per number: for the JSON
//!   documents the plugin exists to write, `jsonb` columns were the most
//!   expensive values (a sixth of the decoding time of the benchmark table).
//! - The stored layout (`src/include/utils/jsonb.h`): a container is a
//!   32-bit header (count and kind flags), one 32-bit `JEntry` per child
//!   (object: every key, then every value), then the children's data. A
//!   `JEntry` holds the child's type and either its length or, every
//!   `JB_OFFSET_STRIDE`th child, its end offset; numbers and nested
//!   containers start at the next 4-byte boundary of the data area.
//! - The column value is that text as a JSON string: it is written escaped
//!   for one (`Target::in_string`), in one pass.
//! - Every read is bounds-checked. Anything that does not have this layout,
//!   nests deeper than [`MAX_DEPTH`] or prints longer than the caller allows
//!   gives `None` with nothing written, and the caller falls back to the
//!   output function: the result is then PostgreSQL's own, whatever the
//!   bytes hold.
//! - Pure and unit-tested (with a small encoder of the layout); the cluster
//!   tests (`decoder_types.rs`) compare it with `jsonb_out` on real values.

use super::json;
use super::numeric;

// The stored layout's names, from `utils/jsonb.h`.
use pgrx::pg_sys::{
    JB_CMASK, JB_FARRAY, JB_FOBJECT, JB_FSCALAR, JENTRY_HAS_OFF, JENTRY_ISBOOL_FALSE, JENTRY_ISBOOL_TRUE,
    JENTRY_ISCONTAINER, JENTRY_ISNULL, JENTRY_ISNUMERIC, JENTRY_ISSTRING, JENTRY_OFFLENMASK, JENTRY_TYPEMASK,
};

/// Deeper values are left to the output function (which iterates without
/// recursion); real documents stay far below this.
const MAX_DEPTH: usize = 200;

/// Where the text goes: as it is (`jsonb_out`'s text), or already escaped
/// for the inside of a JSON string (what `json::push_str` would make of
/// that text, without the quotes around it), which is how a `jsonb` column
/// appears in the change stream: one pass instead of two.
pub(crate) struct Target<'o> {
    pub(crate) out: &'o mut Vec<u8>,
    pub(crate) in_string: bool,
    /// The most bytes the text may take; a longer one gives `None` (large
    /// values are the output function's, whose memory is palloc'd).
    pub(crate) max_len: usize,
}

/// Append `jsonb_out`'s text (escaped as `t` says) for the jsonb whose
/// bytes (without the varlena header) are `data`; `None` (nothing appended)
/// when `data` does not have the layout of a jsonb value or the text would
/// exceed `t.max_len`.
pub(crate) fn push_text(t: Target<'_>, data: &[u8]) -> Option<()> {
    let start = t.out.len();
    let mut w = Writer { out: t.out, in_string: t.in_string, max_end: start.saturating_add(t.max_len) };
    let written = container(&mut w, data, 0);
    if written.is_none() {
        w.out.truncate(start);
    }
    written
}

struct Writer<'o> {
    out: &'o mut Vec<u8>,
    in_string: bool,
    max_end: usize,
}

impl Writer<'_> {
    fn push(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    fn within_limit(&self) -> Option<()> {
        (self.out.len() <= self.max_end).then_some(())
    }

    /// `escape_json` of the string as `jsonb_put_escaped_value` passes it:
    /// a C string (a NUL, which jsonb input refuses, would end it).
    fn string(&mut self, s: &[u8]) -> Option<()> {
        let s = s.iter().position(|&b| b == 0).map_or(s, |n| &s[..n]);
        if !self.in_string {
            json::push_str(self.out, s);
            return self.within_limit();
        }
        // escape_json's escapes, escaped once more for the enclosing string.
        self.out.extend_from_slice(b"\\\"");
        let mut start = 0;
        let mut i = 0;
        while i < s.len() {
            if let Some(chunk) = s.get(i..i + 8)
                && !json::chunk_needs_escape(u64::from_le_bytes(chunk.try_into().expect("eight bytes")))
            {
                i += 8;
                continue;
            }
            let b = s[i];
            if b >= 0x20 && b != b'"' && b != b'\\' {
                i += 1;
                continue;
            }
            self.out.extend_from_slice(&s[start..i]);
            match b {
                b'"' => self.out.extend_from_slice(b"\\\\\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\\\\\"),
                b'\n' => self.out.extend_from_slice(b"\\\\n"),
                b'\r' => self.out.extend_from_slice(b"\\\\r"),
                b'\t' => self.out.extend_from_slice(b"\\\\t"),
                0x08 => self.out.extend_from_slice(b"\\\\b"),
                0x0c => self.out.extend_from_slice(b"\\\\f"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.out.extend_from_slice(b"\\\\u00");
                    self.out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                }
            }
            i += 1;
            start = i;
        }
        self.out.extend_from_slice(&s[start..]);
        self.out.extend_from_slice(b"\\\"");
        self.within_limit()
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
}

fn int_align(off: usize) -> usize {
    (off + 3) & !3
}

/// The children of one container, in stored order.
struct Children<'a> {
    container: &'a [u8],
    /// The data area, which every offset is relative to.
    data: &'a [u8],
    next: usize,
    offset: usize,
}

/// One child: its `JEntry`, and where its data starts (`offset`, relative
/// to the data area, before alignment) and ends.
struct Child {
    entry: u32,
    offset: usize,
    end: usize,
}

impl<'a> Children<'a> {
    fn entry(&self, i: usize) -> Option<u32> {
        u32_at(self.container, 4 + 4 * i)
    }

    /// Start at child `index` (`getJsonbOffset`: back to the nearest child
    /// that stores its end offset, adding the lengths in between).
    fn seek(&mut self, index: usize) -> Option<()> {
        let mut offset = 0usize;
        for i in (0..index).rev() {
            let e = self.entry(i)?;
            offset = offset.checked_add((e & JENTRY_OFFLENMASK) as usize)?;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        self.next = index;
        self.offset = offset;
        Some(())
    }

    fn next_child(&mut self) -> Option<Child> {
        let entry = self.entry(self.next)?;
        let field = (entry & JENTRY_OFFLENMASK) as usize;
        let end = if entry & JENTRY_HAS_OFF != 0 { field } else { self.offset.checked_add(field)? };
        if end < self.offset || end > self.data.len() {
            return None;
        }
        let child = Child { entry, offset: self.offset, end };
        self.next += 1;
        self.offset = end;
        Some(child)
    }

    /// The bytes of a child, from its start aligned to 4 bytes for numbers
    /// and containers.
    fn bytes(&self, c: &Child, aligned: bool) -> Option<&'a [u8]> {
        let start = if aligned { int_align(c.offset) } else { c.offset };
        self.data.get(start..c.end)
    }
}

fn container(w: &mut Writer<'_>, c: &[u8], depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let header = u32_at(c, 0)?;
    let count = (header & JB_CMASK) as usize;
    let (object, array, scalar) = (header & JB_FOBJECT != 0, header & JB_FARRAY != 0, header & JB_FSCALAR != 0);
    if object == array || (scalar && (object || count != 1 || depth > 0)) {
        return None;
    }
    let nchildren = if object { count.checked_mul(2)? } else { count };
    let data_at = nchildren.checked_mul(4)?.checked_add(4)?;
    let mut children = Children { container: c, data: c.get(data_at..)?, next: 0, offset: 0 };
    if scalar {
        // A top-level scalar: a one-element array printed without brackets.
        let only = children.next_child()?;
        return value(w, &children, &only, depth);
    }
    if array {
        w.push(b"[");
        for i in 0..count {
            if i > 0 {
                w.push(b", ");
            }
            let elem = children.next_child()?;
            value(w, &children, &elem, depth)?;
        }
        w.push(b"]");
        return Some(());
    }
    let mut values = Children { container: c, data: children.data, next: 0, offset: 0 };
    values.seek(count)?;
    w.push(b"{");
    for i in 0..count {
        if i > 0 {
            w.push(b", ");
        }
        let key = children.next_child()?;
        if key.entry & JENTRY_TYPEMASK != JENTRY_ISSTRING {
            return None;
        }
        w.string(children.bytes(&key, false)?)?;
        w.push(b": ");
        let v = values.next_child()?;
        value(w, &values, &v, depth)?;
    }
    w.push(b"}");
    Some(())
}

fn value(w: &mut Writer<'_>, children: &Children<'_>, c: &Child, depth: usize) -> Option<()> {
    match c.entry & JENTRY_TYPEMASK {
        JENTRY_ISSTRING => w.string(children.bytes(c, false)?)?,
        JENTRY_ISNUMERIC => {
            // A numeric varlena with a 4-byte header (jsonb copies
            // VARSIZE bytes of it).
            let n = children.bytes(c, true)?;
            let header = u32_at(n, 0)?;
            #[cfg(target_endian = "little")]
            let (plain, size) = (header & 3 == 0, (header >> 2) as usize);
            #[cfg(target_endian = "big")]
            let (plain, size) = (header & 0xC000_0000 == 0, (header & 0x3FFF_FFFF) as usize);
            if !plain || size < 4 {
                return None;
            }
            numeric::push_text(w.out, n.get(4..size)?)?;
            w.within_limit()?;
        }
        JENTRY_ISBOOL_FALSE => w.push(b"false"),
        JENTRY_ISBOOL_TRUE => w.push(b"true"),
        JENTRY_ISNULL => w.push(b"null"),
        JENTRY_ISCONTAINER => container(w, children.bytes(c, true)?, depth + 1)?,
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test value, encoded by [`encode`] as jsonb stores it.
    enum J {
        Null,
        Bool(bool),
        /// A numeric's stored bytes (without the varlena header).
        Num(Vec<u8>),
        Str(&'static str),
        Arr(Vec<J>),
        Obj(Vec<(&'static str, J)>),
        Scalar(Box<J>),
    }

    fn num(v: u16) -> J {
        // short format, weight 0, dscale 0, one digit
        let mut b = 0x8000u16.to_ne_bytes().to_vec();
        if v != 0 {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        J::Num(b)
    }

    /// Encode as convertJsonbValue does: children's JEntries (an end offset
    /// every 32nd), data padded to 4 bytes before numbers and containers.
    fn encode(v: &J) -> Vec<u8> {
        let (header, kids): (u32, Vec<&J>) = match v {
            J::Arr(items) => (JB_FARRAY | items.len() as u32, items.iter().collect()),
            J::Scalar(item) => (JB_FARRAY | JB_FSCALAR | 1, vec![&**item]),
            J::Obj(pairs) => {
                let keys: Vec<J> = pairs.iter().map(|(k, _)| J::Str(k)).collect();
                let keys: &'static [J] = Box::leak(keys.into_boxed_slice());
                (JB_FOBJECT | pairs.len() as u32, keys.iter().chain(pairs.iter().map(|(_, v)| v)).collect())
            }
            _ => panic!("not a container"),
        };
        let mut entries = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (i, k) in kids.iter().enumerate() {
            let start = data.len();
            let ty = match k {
                J::Null => JENTRY_ISNULL,
                J::Bool(false) => JENTRY_ISBOOL_FALSE,
                J::Bool(true) => JENTRY_ISBOOL_TRUE,
                J::Str(s) => {
                    data.extend_from_slice(s.as_bytes());
                    JENTRY_ISSTRING
                }
                J::Num(n) => {
                    data.resize(int_align(data.len()), 0);
                    let size = (n.len() + 4) as u32;
                    let hdr = if cfg!(target_endian = "little") { size << 2 } else { size };
                    data.extend_from_slice(&hdr.to_ne_bytes());
                    data.extend_from_slice(n);
                    JENTRY_ISNUMERIC
                }
                J::Arr(_) | J::Obj(_) => {
                    data.resize(int_align(data.len()), 0);
                    data.extend_from_slice(&encode(k));
                    JENTRY_ISCONTAINER
                }
                J::Scalar(_) => panic!("a scalar container is only the root"),
            };
            let field = if i % 32 == 0 { data.len() as u32 | JENTRY_HAS_OFF } else { (data.len() - start) as u32 };
            entries.push(ty | field);
        }
        let mut b = header.to_ne_bytes().to_vec();
        entries.iter().for_each(|e| b.extend_from_slice(&e.to_ne_bytes()));
        b.extend_from_slice(&data);
        b
    }

    fn render(data: &[u8], in_string: bool, out: &mut Vec<u8>) -> Option<()> {
        push_text(Target { out, in_string, max_len: 1 << 20 }, data)
    }

    /// The text, after checking that the escaped form is `json::push_str`'s
    /// escaping of it.
    fn text(v: &J) -> String {
        let (mut plain, mut escaped) = (Vec::new(), Vec::new());
        render(&encode(v), false, &mut plain).expect("well-formed");
        render(&encode(v), true, &mut escaped).expect("well-formed");
        let mut want = Vec::new();
        json::push_str(&mut want, &plain);
        assert_eq!(escaped, want[1..want.len() - 1]);
        String::from_utf8(plain).unwrap()
    }

    #[test]
    fn the_texts_jsonb_out_prints() {
        use J::*;
        assert_eq!(text(&Obj(vec![])), "{}");
        assert_eq!(text(&Arr(vec![])), "[]");
        assert_eq!(text(&Scalar(Box::new(num(3)))), "3");
        assert_eq!(text(&Scalar(Box::new(Str("a\"b\n")))), r#""a\"b\n""#);
        assert_eq!(text(&Scalar(Box::new(Null))), "null");
        assert_eq!(
            text(&Obj(vec![("id", num(7)), ("ok", Bool(false)), ("tag", Str("item-7"))])),
            r#"{"id": 7, "ok": false, "tag": "item-7"}"#
        );
        assert_eq!(
            text(&Obj(vec![
                ("a", Obj(vec![("b", Arr(vec![num(1), Null, Bool(true), Obj(vec![])]))])),
                ("c", Arr(vec![]))
            ])),
            r#"{"a": {"b": [1, null, true, {}]}, "c": []}"#
        );
        assert_eq!(text(&Arr(vec![Str(""), num(0), Str("\u{1}é")])), "[\"\", 0, \"\\u0001é\"]");
        let every_escape = "q\" b\\ n\n r\r t\t \u{8}\u{c}\u{1f}\u{7f} end";
        assert_eq!(
            text(&Obj(vec![(every_escape, Str(every_escape))])),
            format!("{{{0}: {0}}}", serde_json::to_string(every_escape).unwrap())
        );
    }

    #[test]
    fn escapes_at_every_position_of_a_long_string() {
        const RAW: [&str; 6] = ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é"];
        for special in RAW {
            for at in 0..20 {
                let s: String = "abcdefghijklmnopqrst"
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i == at { special.to_string() } else { c.to_string() })
                    .collect();
                let s: &'static str = Box::leak(s.into_boxed_str());
                assert_eq!(text(&J::Scalar(Box::new(J::Str(s)))), serde_json::to_string(s).unwrap());
            }
        }
    }

    #[test]
    fn offsets_every_stride_and_alignment() {
        // 100 elements cross several JB_OFFSET_STRIDE boundaries; strings of
        // odd lengths put the numbers after them on padded offsets.
        let items: Vec<J> =
            (0..100u16).map(|i| if i % 2 == 0 { J::Str(["x", "yy", "zzz"][i as usize % 3]) } else { num(i) }).collect();
        let want: Vec<String> = (0..100u16)
            .map(|i| if i % 2 == 0 { format!("\"{}\"", ["x", "yy", "zzz"][i as usize % 3]) } else { i.to_string() })
            .collect();
        assert_eq!(text(&J::Arr(items)), format!("[{}]", want.join(", ")));
        let keys: Vec<&'static str> = (0..40).map(|i| &*Box::leak(format!("k{i:02}").into_boxed_str())).collect();
        let pairs = keys.iter().enumerate().map(|(i, k)| (*k, num(i as u16))).collect();
        let want: Vec<String> = keys.iter().enumerate().map(|(i, k)| format!("\"{k}\": {i}")).collect();
        assert_eq!(text(&J::Obj(pairs)), format!("{{{}}}", want.join(", ")));
    }

    #[test]
    fn malformed_values_are_refused_and_write_nothing() {
        let good = encode(&J::Obj(vec![("a", J::Arr(vec![num(1), J::Str("s")]))]));
        // every truncation, and a few corrupted words
        let mut bad: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for (at, word) in [(0, JB_FOBJECT | JB_FARRAY | 1), (0, 5), (4, JENTRY_ISCONTAINER | 1000), (8, 0x6000_0000)] {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&word.to_ne_bytes());
            bad.push(b);
        }
        for b in bad {
            let mut out = b"keep".to_vec();
            assert_eq!(render(&b, true, &mut out), None, "{b:?}");
            assert_eq!(out, b"keep");
        }
        // a text longer than allowed
        let long = encode(&J::Arr((0..100).map(|_| J::Str("0123456789")).collect()));
        assert_eq!(push_text(Target { out: &mut Vec::new(), in_string: false, max_len: 1000 }, &long), None);
        assert!(push_text(Target { out: &mut Vec::new(), in_string: false, max_len: 1400 }, &long).is_some());
    }

    #[test]
    fn deep_nesting_is_left_to_the_output_function() {
        let mut v = J::Arr(vec![]);
        for _ in 0..MAX_DEPTH + 1 {
            v = J::Arr(vec![v]);
        }
        assert_eq!(render(&encode(&v), false, &mut Vec::new()), None);
    }
}
