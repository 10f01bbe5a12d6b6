//! A hand-written reader for the JSON documents of the `logical_ext` output
//! plugin as the apply worker receives them (docs/FORMAT.md): one flat
//! object per change, with `columns`/`identity` arrays of
//! `{"name":…,"value":…}` objects, or with arrays of values by position in
//! the compact documents (option `compact`, `protocol.rs`).
//!
//! Design notes
//! - Why: serde_json's derived deserializer was the apply worker's largest
//!   cost of its own (about a fifth of its CPU on a bulk catch-up; see
//!   docs/BENCHMARKS.md): generic field matching, a `RawValue` per value that
//!   is scanned again later for escapes. This reader borrows every name and
//!   value from the document, decides once per value whether it is NULL, a
//!   string without escapes, or a literal, and allocates only the column
//!   vectors.
//! - Exactness: it accepts a strict subset of what `serde_json` accepts and
//!   decodes it to the same values. Anything else — a string with escapes
//!   in a field that must borrow, a duplicate or missing field, a value of
//!   an unexpected JSON type, trailing text, malformed JSON — returns `None`,
//!   and the caller parses the document with serde_json, which then either
//!   yields the same result or the error message it always gave. Strings
//!   with escapes are decoded by serde_json itself (only the slice).
//! - Pure Rust, no PostgreSQL calls: tested with `#[test]`, including a
//!   comparison with the serde path on the same documents.

use super::protocol::{Column, Fields, Value};
use std::borrow::Cow;

/// Nesting allowed in values of fields the worker ignores.
const MAX_DEPTH: u32 = 64;

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

/// Read `text` (one whole document), or `None` to let serde_json do it.
pub(crate) fn document(text: &str) -> Option<Fields<'_>> {
    let mut r = Reader { text, at: 0 };
    let mut f = Fields::default();
    let mut seen = 0u32;
    r.ws();
    r.eat(b'{')?;
    r.ws();
    if r.eat(b'}').is_none() {
        loop {
            r.ws();
            let key = r.plain_string()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            let bit = match key {
                "action" => {
                    f.action = Some(r.plain_string()?);
                    1
                }
                "timestamp" => {
                    f.timestamp = r.opt_string()?;
                    2
                }
                "lsn" => {
                    f.lsn = r.opt_string()?;
                    4
                }
                "nextlsn" => {
                    f.nextlsn = r.opt_string()?;
                    8
                }
                "schema" => {
                    f.schema = r.opt_string()?;
                    16
                }
                "table" => {
                    f.table = r.opt_string()?;
                    32
                }
                "columns" => {
                    f.columns = r.opt_columns()?;
                    64
                }
                "identity" => {
                    f.identity = r.opt_columns()?;
                    128
                }
                "unchanged_toast" => {
                    f.unchanged_toast = r.opt_strings()?;
                    256
                }
                "restart_identity" => {
                    f.restart_identity = r.opt_bool()?;
                    512
                }
                "xid" => {
                    f.xid = r.opt_u32()?;
                    1024
                }
                // Compact documents (option `compact`, protocol.rs).
                "relid" => {
                    f.relid = r.opt_u32()?;
                    2048
                }
                "names" => {
                    f.names = r.opt_strings()?;
                    4096
                }
                "identity_key" => {
                    f.identity_key = r.opt_u32s()?;
                    8192
                }
                "new" => {
                    f.new = r.opt_values()?;
                    16384
                }
                "key" => {
                    f.key = r.opt_values()?;
                    32768
                }
                "old" => {
                    f.old = r.opt_values()?;
                    65536
                }
                _ => {
                    r.skip_value(0)?;
                    0
                }
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            r.ws();
            match r.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    r.ws();
    (r.at == text.len() && f.action.is_some()).then_some(f)
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.text[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// A string token starting here: its contents (between the quotes) and
    /// whether it has escapes. Control characters make it invalid JSON.
    /// Eight bytes at a time while none of them is special (`"`, `\\`, or
    /// below 0x20): most of a document is inside strings.
    fn string_token(&mut self) -> Option<(&'a str, bool)> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut escaped = false;
        loop {
            while let Some(chunk) = bytes.get(self.at..self.at + 8) {
                let m = special_mask(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                if m != 0 {
                    // Straight to the first special byte (the mask's lowest
                    // flag is exact), not byte by byte through the word.
                    self.at += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                self.at += 8;
            }
            match *bytes.get(self.at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                c if c < 0x20 => return None,
                _ => self.at += 1,
            }
        }
        // `at` is on the closing quote, an ASCII byte: a char boundary.
        let s = self.text.get(start..self.at)?;
        self.at += 1;
        Some((s, escaped))
    }

    /// A string that must be borrowed as is (serde's `&str`): no escapes.
    fn plain_string(&mut self) -> Option<&'a str> {
        match self.string_token()? {
            (s, false) => Some(s),
            (_, true) => None,
        }
    }

    /// A string, unescaped.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        match self.string_token()? {
            (s, false) => Some(Cow::Borrowed(s)),
            (s, true) => unescape(s).map(Cow::Owned),
        }
    }

    fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        self.string().map(Some)
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        match self.peek()? {
            b'n' => self.literal("null").map(|_| None),
            b't' => self.literal("true").map(|_| Some(true)),
            b'f' => self.literal("false").map(|_| Some(false)),
            _ => None,
        }
    }

    /// `null` or an unsigned integer that fits 32 bits (what serde reads
    /// into `Option<u32>`; a sign, fraction or exponent is left to it).
    fn opt_u32(&mut self) -> Option<Option<u32>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        digits.parse::<u32>().ok().map(Some)
    }

    fn opt_strings(&mut self) -> Option<Option<Vec<Cow<'a, str>>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        let mut out = Vec::new();
        self.array(|r| {
            out.push(r.string()?);
            Some(())
        })?;
        Some(Some(out))
    }

    fn opt_u32s(&mut self) -> Option<Option<Vec<u32>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        let mut out = Vec::new();
        self.array(|r| {
            out.push(r.opt_u32()??);
            Some(())
        })?;
        Some(Some(out))
    }

    /// An array of column values (a compact row, by position).
    fn opt_values(&mut self) -> Option<Option<Vec<Value<'a>>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        let mut out = Vec::with_capacity(16);
        self.array(|r| {
            out.push(r.value()?);
            Some(())
        })?;
        Some(Some(out))
    }

    fn opt_columns(&mut self) -> Option<Option<Vec<Column<'a>>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        let mut out = Vec::with_capacity(16);
        self.array(|r| {
            out.push(r.column()?);
            Some(())
        })?;
        Some(Some(out))
    }

    /// `[` item (`,` item)* `]` or `[]`, whitespace allowed between tokens.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            item(self)?;
            self.ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// `{"name":…,"value":…}` (other keys ignored, as serde does).
    fn column(&mut self) -> Option<Column<'a>> {
        self.eat(b'{')?;
        let (mut name, mut value) = (None, None);
        self.ws();
        if self.eat(b'}').is_some() {
            return None;
        }
        loop {
            self.ws();
            let key = self.plain_string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            match key {
                "name" if name.is_none() => name = Some(self.string()?),
                "value" if value.is_none() => value = Some(self.value()?),
                "name" | "value" => return None,
                _ => self.skip_value(0)?,
            }
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        Some(Column { name: name?.into(), value: value? })
    }

    /// A column value: NULL, a string, or a number/boolean literal kept as
    /// its JSON text (no float round trip). Objects and arrays are kept raw
    /// (the caller rejects them with the value in the message).
    fn value(&mut self) -> Option<Value<'a>> {
        let start = self.at;
        match self.peek()? {
            b'"' => self.string().map(Value::Text),
            b'n' => self.literal("null").map(|_| Value::Null),
            b't' => self.literal("true").map(|_| Value::Literal(&self.text[start..self.at])),
            b'f' => self.literal("false").map(|_| Value::Literal(&self.text[start..self.at])),
            b'{' | b'[' => {
                self.skip_value(0)?;
                Some(Value::Structured(&self.text[start..self.at]))
            }
            _ => {
                self.number()?;
                Some(Value::Literal(&self.text[start..self.at]))
            }
        }
    }

    /// A JSON number, strictly: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |r: &mut Self| -> Option<()> {
            let s = r.at;
            while matches!(r.peek(), Some(b'0'..=b'9')) {
                r.at += 1;
            }
            (r.at > s).then_some(())
        };
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => digits(self)?,
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            digits(self)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    /// Skip any JSON value (a field the worker does not use).
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'[' => self.array(|r| r.skip_value(depth + 1)),
            b'{' => {
                self.at += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => self.number(),
        }
    }
}

/// Flags (the high bit of a byte) for the bytes of `w` (little-endian)
/// that are `"`, `\\` or below 0x20: the classic "has zero byte" and "has
/// byte less than n" word tests. Nonzero exactly when one is special, and
/// exact from the lowest byte up to the first special one (a subtraction's
/// borrow can only flag bytes above a special byte), so `trailing_zeros() /
/// 8` is the position of the first special byte.
fn special_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    zero(w ^ (ONES * b'"' as u64)) | zero(w ^ (ONES * b'\\' as u64)) | below_space
}

/// The contents of a JSON string with escapes, decoded as serde_json
/// decodes them (`\uXXXX` surrogate pairs combined); `None` for what
/// serde_json rejects (an unknown escape, a lone surrogate).
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // A byte search: `str::find(char)` goes through the generic char
    // searcher (memchr plus a compare per hit), visibly slower on the
    // short spans between the escapes of a jsonb value's quotes.
    while let Some(i) = rest.bytes().position(|b| b == b'\\') {
        out.push_str(&rest[..i]);
        let b = rest.as_bytes();
        let (c, used) = match *b.get(i + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let hex = |at: usize| -> Option<u32> {
                    let h = rest.get(at..at + 4)?;
                    h.bytes().all(|c| c.is_ascii_hexdigit()).then(|| u32::from_str_radix(h, 16).ok())?
                };
                let first = hex(i + 2)?;
                match first {
                    0xD800..=0xDBFF => {
                        if rest.get(i + 6..i + 8)? != "\\u" {
                            return None;
                        }
                        let second = hex(i + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return None;
                        }
                        (char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?, 12)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(first)?, 6),
                }
            }
            _ => return None,
        };
        out.push(c);
        rest = &rest[i + used..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::protocol::serde_fields;

    /// The fast reader and serde agree: same fields, or the reader declines.
    fn same(doc: &str) -> bool {
        let fast = document(doc);
        let slow = serde_fields(doc);
        match (fast, slow) {
            (Some(a), Ok(b)) => {
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{doc}");
                true
            }
            (Some(a), Err(e)) => panic!("fast reader accepted what serde rejects ({e}): {doc} -> {a:?}"),
            (None, _) => false,
        }
    }

    #[test]
    fn reads_the_plugins_documents() {
        assert!(same(r#"{"action":"B","lsn":"0/16B3748","timestamp":"2026-11-30 08:00:00.123456+00"}"#));
        assert!(same(r#"{"action":"C","lsn":"0/16B3748","nextlsn":"0/16B3778","timestamp":"2026-11-30 08:00:00+00"}"#));
        assert!(same(
            r#"{"action":"I","lsn":"0/1","schema":"public","table":"t","columns":[{"name":"id","value":1},{"name":"f","value":-1.5e-300},{"name":"t","value":"a b"},{"name":"b","value":true},{"name":"n","value":null},{"name":"x","value":false}]}"#
        ));
        assert!(same(
            r#"{"action":"U","schema":"s","table":"t","columns":[{"name":"a","value":"x\"y\\z\u00e9\ud83d\ude00"}],"identity":[{"name":"a","value":0}],"unchanged_toast":["big","b\"ig"]}"#
        ));
        assert!(same(r#"{"action":"D","schema":"s","table":"t","identity":[{"name":"a","value":"1"}]}"#));
        assert!(same(r#"{"action":"T","schema":"s","table":"t","restart_identity":true,"lsn":"0/5"}"#));
        assert!(same(r#"{"action":"M","transactional":true,"prefix":"p","content":"c"}"#));
        assert!(same(r#"{"action":"P","xid":742,"gid":"g","lsn":"0/10","nextlsn":"0/28"}"#));
        assert!(same(r#"{"action":"CP","xid":4294967295,"gid":"g","timestamp":"t","nextlsn":"0/40"}"#));
        assert!(same(r#"{"action":"B","xid":null}"#));
        assert!(same(r#"{"action":"I","schema":"s","table":"t","columns":[],"extra":{"a":[1,{"b":null}],"c":"d"}}"#));
        assert!(same(" { \"action\" : \"I\" , \"columns\" : [ { \"name\" : \"a\" , \"value\" : 1 } ] } \n"));
        assert!(same(r#"{"action":"I","columns":[{"name":"j","value":{"a":1}},{"name":"k","value":[1,2]}]}"#));
        assert!(same(r#"{"action":"I","columns":[{"type":"int","name":"a","value":1,"typeoid":23}]}"#));
        assert!(same(r#"{"action":"C","timestamp":null,"lsn":null}"#));
        assert!(same(r#"{"action":"I","schema":"sch\u00e9ma","table":"t"}"#));
        assert!(same(r#"{"action":"I","columns":[{"name":"n\u0061me","value":"é ü 漢字"}]}"#));
        // Compact documents (option `compact`).
        assert!(same(
            r#"{"action":"R","relid":16385,"schema":"s","table":"t","names":["a","b\"c"],"types":["integer","text"],"identity_key":[0,1]}"#
        ));
        assert!(same(r#"{"action":"U","relid":5,"new":[1,"x\"y",null,{},true,-1.5e3],"key":[1]}"#));
        assert!(same(r#"{"action":"D","relid":5,"old":[1,{},null]}"#));
        assert!(same(r#"{"action":"I","relid":5,"new":[]}"#));
    }

    #[test]
    fn declines_what_it_does_not_read_exactly() {
        for doc in [
            r#"{"action":"I","action":"U"}"#,
            r#"{"action":"I","columns":[{"name":"a","name":"b","value":1}]}"#,
            r#"{"action":"I","columns":[{"name":"a"}]}"#,
            r#"{"action":"I","columns":[{"value":1}]}"#,
            r#"{"action":"I","columns":[{}]}"#,
            r#"{"action":"I","columns":[{"name":"a","value":01}]}"#,
            r#"{"action":"I","columns":[{"name":"a","value":1.}]}"#,
            r#"{"action":"I","columns":[{"name":"a","value":-}]}"#,
            r#"{"action":"I","columns":[{"name":"a","value":.5}]}"#,
            r#"{"action":"I","columns":[{"name":"a","value":nul}]}"#,
            r#"{"action":"I","columns":[{"name":"a","value":1},]}"#,
            r#"{"action":"I","columns":{"name":"a"}}"#,
            r#"{"action":"I","lsn":5}"#,
            r#"{"action":"I","restart_identity":"yes"}"#,
            r#"{"action":"P","xid":4294967296}"#,
            r#"{"action":"P","xid":-1}"#,
            r#"{"action":"P","xid":1.0}"#,
            r#"{"action":"P","xid":01}"#,
            r#"{"action":"P","xid":"1"}"#,
            r#"{"action":"R","identity_key":[null]}"#,
            r#"{"action":"R","identity_key":[-1]}"#,
            r#"{"action":"I","relid":1,"relid":1}"#,
            r#"{"action":"I","relid":1,"new":[1,]}"#,
            r#"{"action":"I"} x"#,
            r#"{"action":"I""#,
            r#"{"action":"I",}"#,
            r#"{"act\u0069on":"I"}"#,
            r#"{"action":"\u0049"}"#,
            "{\"action\":\"I\",\"table\":\"a\u{1}b\"}",
            r#"{"schema":"s"}"#,
            r#"[]"#,
            "",
        ] {
            assert!(document(doc).is_none(), "{doc}");
        }
    }

    #[test]
    fn escapes_as_serde_decodes_them() {
        for raw in [
            r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
            r#""\u0000\u001f\u00e9\u6f22\uD83D\uDE00\ud83d\ude00x""#,
            r#""{\"id\": 1, \"tag\": \"item-1\", \"ok\": false}""#,
            r#""\\\\\"""#,
        ] {
            let want: String = serde_json::from_str(raw).unwrap();
            assert_eq!(unescape(&raw[1..raw.len() - 1]).as_deref(), Some(want.as_str()), "{raw}");
        }
        for bad in [r"\q", r"\u12", r"\u12G4", r"\uD800", r"\uD800\u0041", r"\uDC00", "\\"] {
            assert!(serde_json::from_str::<String>(&format!("\"{bad}\"")).is_err(), "{bad}");
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn special_bytes_in_a_word() {
        let first = |s: &[u8; 8]| match special_mask(u64::from_le_bytes(*s)) {
            0 => None,
            m => Some(m.trailing_zeros() / 8),
        };
        assert_eq!(first(b"abcdefgh"), None);
        assert_eq!(first(b"\x7f\x80\xff !#[]"), None);
        assert_eq!(first(b"        "), None);
        let specials = [b'"', b'\\', 0u8, 0x01, 0x1f, b'\n'];
        for i in 0..8 {
            for c in specials {
                let mut b = *b"abcdefgh";
                b[i] = c;
                assert_eq!(first(&b), Some(i as u32), "{b:?}");
                // Any special bytes above it (borrows) do not move it;
                // bytes just above a special one (0x20, 0x21, 0x5d, 0x23)
                // are not taken for special.
                for d in specials.into_iter().chain([0x20, 0x21, 0x23, 0x5d, 0x80, 0xff]) {
                    for j in i + 1..8 {
                        let mut e = b;
                        e[j] = d;
                        assert_eq!(first(&e), Some(i as u32), "{e:?}");
                    }
                }
            }
        }
        // Only non-special bytes below the special one, any of them.
        for c in 0x20u8..=0xff {
            if c == b'"' || c == b'\\' {
                continue;
            }
            for i in 1..8 {
                let mut b = [c; 8];
                b[i] = b'"';
                assert_eq!(first(&b), Some(i as u32), "{b:?}");
            }
        }
        // Long strings with the special byte at every position agree with serde.
        for n in 0..40 {
            let doc = format!(
                "{{\"action\":\"I\",\"columns\":[{{\"name\":\"a\",\"value\":\"{}\\\"{}\"}}]}}",
                "x".repeat(n),
                "é".repeat(n % 7)
            );
            assert!(same(&doc), "{doc}");
        }
    }

    #[test]
    fn values_as_the_input_functions_get_them() {
        let f = document(
            r#"{"action":"I","columns":[{"name":"a","value":1.5e300},{"name":"b","value":"x\ny"},{"name":"c","value":null},{"name":"d","value":"plain"},{"name":"e","value":true},{"name":"f","value":{"k":1}}]}"#,
        )
        .unwrap();
        let cols = f.columns.unwrap();
        assert_eq!(cols[0].text().unwrap().as_deref(), Some("1.5e300"));
        assert_eq!(cols[1].text().unwrap().as_deref(), Some("x\ny"));
        assert_eq!(cols[2].text().unwrap(), None);
        assert!(matches!(cols[3].text().unwrap(), Some(Cow::Borrowed("plain"))));
        assert_eq!(cols[4].text().unwrap().as_deref(), Some("true"));
        assert!(cols[5].text().is_err());
    }
}
