//! A `jsonb` column's value built from the publisher's text without
//! `jsonb_in`: the exact bytes `jsonb_in` would return, or `None`.
//!
//! Design notes
//! - What arrives is `jsonb_out`'s text (`decoder/jsonb.rs` prints it byte
//!   for byte): `{"k": v, "k2": v2}` and `[a, b]` with `": "` and `", "`
//!   separators and no other blanks, object keys in jsonb's storage order
//!   (shorter first, then by bytes; never twice), strings escaped as
//!   `escape_json` does (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and
//!   `\u00XX` for the other control characters), numbers as `numeric_out`
//!   prints them (`-?(0|[1-9][0-9]*)(.[0-9]+)?`, never negative zero), a
//!   top-level scalar bare. `jsonb_in` lexes it (`pg_parse_json`), builds a
//!   tree of `JsonbValue`s (a palloc per node, a `numeric_in` per number),
//!   sorts every object's keys and serialises the tree (`convertToJsonb`):
//!   17% of a bulk apply worker. For text of that shape the sort is the
//!   identity, so the bytes can be written straight from the text.
//! - The stored layout (PostgreSQL 15, `src/include/utils/jsonb.h`,
//!   `convertJsonbValue/Array/Object/Scalar` in `jsonb_util.c`): a 4-byte
//!   varlena header, then the root container: a 32-bit header (count |
//!   `JB_FARRAY` or `JB_FOBJECT`, plus `JB_FSCALAR` for a top-level scalar
//!   stored as a one-element array), one 32-bit `JEntry` per child (an
//!   object: every key, then every value), then the children's data. A
//!   `JEntry` is the child's type and its data length, except every
//!   `JB_OFFSET_STRIDE`th child (counting an object's values after its
//!   keys), whose `JEntry` holds the end offset of its data with
//!   `JENTRY_HAS_OFF`. Numbers (a `numeric` varlena as `numeric_in` returns
//!   it) and nested containers start 4-byte aligned, the zero padding
//!   counted in their length. Strings are their de-escaped bytes.
//! - Two steps over reused buffers: a strict reader turns the text into a
//!   flat list of nodes (containers with their child count and the end of
//!   their subtree, strings and numbers as ranges), checking the shape; then
//!   the writer lays the list out as `convertJsonbValue` does (an object's
//!   keys are written before its values, so its pairs are walked twice).
//! - Anything else is `None` and `jsonb_in` runs (same value, same ERROR):
//!   other blanks or separators, keys out of order or repeated, `\u`
//!   escapes other than `\u0001`–`\u001f` (`\u0000` is `jsonb_in`'s ERROR;
//!   a non-ASCII one is converted by the server encoding), raw control
//!   characters (its ERROR), exponents and other spellings of numbers,
//!   nesting deeper than [`MAX_DEPTH`], texts longer than [`MAX_TEXT`].
//!   That bound keeps every jsonb limit out of reach (a text byte becomes at
//!   most ~5 stored bytes: 16 MiB of text stays far below the 256 MiB of
//!   `JENTRY_OFFLENMASK` and the element counts `jsonb_in` refuses); the
//!   limit is checked anyway where `convertJsonb*` checks it. The text is a
//!   `&str`, so valid UTF-8; raw non-ASCII bytes are copied as `jsonb_in`
//!   copies them.
//! - Numbers are encoded by one function ([`numeric_varlena`]: the pure
//!   encoder of `numeric_input.rs`, which gives `numeric_in`'s exact bytes);
//!   the builder takes it as a parameter, so the rest is pure and
//!   unit-tested without a server. The `#[pg_test]`s compare the bytes with
//!   `jsonb_in`'s for edge cases and thousands of generated
//!   values. Every read is bounds-checked; nothing here panics on any text.

use pgrx::pg_sys;
use std::cell::RefCell;

// The stored layout's names, from `utils/jsonb.h`.
use pg_sys::{
    JB_FARRAY, JB_FOBJECT, JB_FSCALAR, JENTRY_HAS_OFF, JENTRY_ISBOOL_FALSE, JENTRY_ISBOOL_TRUE, JENTRY_ISCONTAINER,
    JENTRY_ISNULL, JENTRY_ISNUMERIC, JENTRY_ISSTRING,
};
const JENTRY_OFFLENMASK: usize = pg_sys::JENTRY_OFFLENMASK as usize;
const JB_OFFSET_STRIDE: usize = pg_sys::JB_OFFSET_STRIDE as usize;

/// Deeper nesting is left to `jsonb_in` (both steps here recurse once per
/// level; real documents stay far below).
const MAX_DEPTH: usize = 100;
/// Longer texts are left to `jsonb_in` (see the notes: this keeps jsonb's
/// size and count limits out of reach, and the reused buffers small).
const MAX_TEXT: usize = 16 << 20;
/// Longer numbers are left to `jsonb_in` (a bound on the work per number;
/// `numeric_in`'s own limits, 131072 digits before the point and 16383
/// after, stay far away).
const MAX_NUMBER: usize = 1000;
/// Buffers grown beyond this by a large value are given back after it.
const KEEP_CAPACITY: usize = 1 << 20;

/// One value of the text, in document order (a container is followed by
/// its children; an object's by key, value, key, value...).
#[derive(Clone, Copy)]
enum Node {
    Null,
    False,
    True,
    /// The string's bytes: `at..at + len` of the text, or of the
    /// de-escaped bytes when the text had escapes in it.
    Str {
        at: usize,
        len: usize,
        unescaped: bool,
    },
    /// The number's text, `at..at + len` of the text.
    Num {
        at: usize,
        len: usize,
    },
    /// `end`: the index of the node after the whole subtree.
    Arr {
        count: usize,
        end: usize,
    },
    Obj {
        count: usize,
        end: usize,
    },
}

/// Reused buffers of the two steps.
#[derive(Default)]
pub(crate) struct Builder {
    nodes: Vec<Node>,
    unescaped: Vec<u8>,
    out: Vec<u8>,
}

impl Builder {
    /// The jsonb varlena (4-byte header included) `jsonb_in` returns for
    /// `text`, or `None` when `text` is not `jsonb_out`'s shape (see the
    /// notes). `number` appends the `numeric` varlena `numeric_in` returns
    /// for a canonical number text (`None`: leave the value to `jsonb_in`).
    pub(crate) fn build<F>(&mut self, text: &str, number: F) -> Option<&[u8]>
    where
        F: FnMut(&str, &mut Vec<u8>) -> Option<()>,
    {
        self.nodes.clear();
        self.unescaped.clear();
        self.out.clear();
        if text.len() > MAX_TEXT {
            return None;
        }
        let mut r = Reader { s: text.as_bytes(), pos: 0, nodes: &mut self.nodes, unescaped: &mut self.unescaped };
        r.value(0)?;
        if r.pos != text.len() {
            return None;
        }
        let mut w = Writer { text, unescaped: &self.unescaped, nodes: &self.nodes, out: &mut self.out, number };
        w.out.extend_from_slice(&[0; 4]);
        match *w.nodes.first()? {
            Node::Arr { .. } | Node::Obj { .. } => {
                w.container(0)?;
            }
            _ => w.raw_scalar()?,
        }
        let size = u32::try_from(self.out.len()).ok().filter(|&s| s <= 0x3FFF_FFFF)?;
        // SET_VARSIZE_4B: the size in the upper 30 bits (little-endian) or
        // the lower 30 bits (big-endian), uncompressed.
        #[cfg(target_endian = "little")]
        let header = size << 2;
        #[cfg(target_endian = "big")]
        let header = size;
        self.out.get_mut(..4)?.copy_from_slice(&header.to_ne_bytes());
        Some(&self.out)
    }

    /// Give back what a large value made the buffers grow to.
    fn trim(&mut self) {
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        if self.unescaped.capacity() > KEEP_CAPACITY {
            self.unescaped = Vec::new();
        }
        if self.nodes.capacity() * std::mem::size_of::<Node>() > KEEP_CAPACITY {
            self.nodes = Vec::new();
        }
    }
}

/// Step one: the text into nodes, accepting only `jsonb_out`'s shape.
struct Reader<'t, 'b> {
    s: &'t [u8],
    pos: usize,
    nodes: &'b mut Vec<Node>,
    unescaped: &'b mut Vec<u8>,
}

impl Reader<'_, '_> {
    /// Consume `lit` if the text continues with it.
    fn eat(&mut self, lit: &[u8]) -> bool {
        let hit = self.s.get(self.pos..).is_some_and(|rest| rest.starts_with(lit));
        if hit {
            self.pos += lit.len();
        }
        hit
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        let node = match *self.s.get(self.pos)? {
            b'{' => return self.object(depth),
            b'[' => return self.array(depth),
            b'"' => self.string()?,
            b't' if self.eat(b"true") => Node::True,
            b'f' if self.eat(b"false") => Node::False,
            b'n' if self.eat(b"null") => Node::Null,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        };
        self.nodes.push(node);
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let at = self.nodes.len();
        self.nodes.push(Node::Arr { count: 0, end: 0 });
        let mut count = 0;
        if !self.eat(b"]") {
            loop {
                self.value(depth + 1)?;
                count += 1;
                if self.eat(b", ") {
                    continue;
                }
                if self.eat(b"]") {
                    break;
                }
                return None;
            }
        }
        *self.nodes.get_mut(at)? = Node::Arr { count, end: self.nodes.len() };
        Some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let at = self.nodes.len();
        self.nodes.push(Node::Obj { count: 0, end: 0 });
        let mut count = 0;
        let mut previous: Option<Node> = None;
        if !self.eat(b"}") {
            loop {
                if self.s.get(self.pos) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                // jsonb_in would sort the keys (shorter first, then by
                // bytes) and keep the first of equal ones: only text
                // already in that order, without repeats, is ours.
                if let Some(p) = previous
                    && !key_order(self.bytes(p)?, self.bytes(key)?)
                {
                    return None;
                }
                previous = Some(key);
                self.nodes.push(key);
                if !self.eat(b": ") {
                    return None;
                }
                self.value(depth + 1)?;
                count += 1;
                if self.eat(b", ") {
                    continue;
                }
                if self.eat(b"}") {
                    break;
                }
                return None;
            }
        }
        *self.nodes.get_mut(at)? = Node::Obj { count, end: self.nodes.len() };
        Some(())
    }

    fn bytes(&self, n: Node) -> Option<&[u8]> {
        match n {
            Node::Str { at, len, unescaped: false } => self.s.get(at..at.checked_add(len)?),
            Node::Str { at, len, unescaped: true } => self.unescaped.get(at..at.checked_add(len)?),
            _ => None,
        }
    }

    /// A string at `pos` (its opening quote): a range of the text when it
    /// has no escapes (the usual case), else its bytes de-escaped.
    fn string(&mut self) -> Option<Node> {
        let start = self.pos + 1;
        let rest = self.s.get(start..)?;
        let mut i = start + rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        match *self.s.get(i)? {
            b'"' => {
                self.pos = i + 1;
                return Some(Node::Str { at: start, len: i - start, unescaped: false });
            }
            // jsonb_in's ERROR ("must be escaped").
            0..0x20 => return None,
            _ => {}
        }
        let at = self.unescaped.len();
        self.unescaped.extend_from_slice(self.s.get(start..i)?);
        loop {
            match *self.s.get(i)? {
                b'"' => {
                    self.pos = i + 1;
                    return Some(Node::Str { at, len: self.unescaped.len() - at, unescaped: true });
                }
                b'\\' => {
                    let (byte, used) = escape(self.s.get(i + 1..)?)?;
                    self.unescaped.push(byte);
                    i += 1 + used;
                }
                0..0x20 => return None,
                b => {
                    self.unescaped.push(b);
                    i += 1;
                }
            }
        }
    }

    /// A number in `numeric_out`'s shape, at most [`MAX_NUMBER`] bytes; what
    /// follows it is checked by the caller (a separator, or the end).
    fn number(&mut self) -> Option<Node> {
        let start = self.pos;
        let s = self.s;
        let digits = |mut i: usize| {
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let negative = s.get(start) == Some(&b'-');
        let mut i = start + usize::from(negative);
        i = match s.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i + 1),
            _ => return None,
        };
        if s.get(i) == Some(&b'.') {
            let from = i + 1;
            i = digits(from);
            if i == from {
                return None;
            }
        }
        let len = i - start;
        if len > MAX_NUMBER {
            return None;
        }
        // numeric_out never prints a negative zero (a zero is positive).
        if negative && s.get(start..i)?.iter().all(|&b| matches!(b, b'-' | b'0' | b'.')) {
            return None;
        }
        self.pos = i;
        Some(Node::Num { at: start, len })
    }
}

/// The byte an escape stands for and how many bytes after the backslash it
/// takes: the escapes `escape_json` writes (and `\/`). A `\u` escape is
/// taken only for the control characters `\u0001`–`\u001f` (one byte in
/// every server encoding; `\u0000` is `jsonb_in`'s ERROR).
fn escape(after: &[u8]) -> Option<(u8, usize)> {
    let byte = match *after.first()? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let &[b'0', b'0', high @ (b'0' | b'1'), low] = after.get(1..5)? else {
                return None;
            };
            let low = (low as char).to_digit(16)? as u8;
            let c = ((high - b'0') << 4) | low;
            return (c != 0).then_some((c, 5));
        }
        _ => return None,
    };
    Some((byte, 1))
}

/// Whether key `b` may follow key `a` in a stored object: shorter first,
/// then by bytes (`lengthCompareJsonbString`), strictly (no repeats).
fn key_order(a: &[u8], b: &[u8]) -> bool {
    (a.len(), a) < (b.len(), b)
}

/// Step two: the nodes laid out as `convertJsonbValue` does.
struct Writer<'a, F> {
    text: &'a str,
    unescaped: &'a [u8],
    nodes: &'a [Node],
    out: &'a mut Vec<u8>,
    number: F,
}

impl<F: FnMut(&str, &mut Vec<u8>) -> Option<()>> Writer<'_, F> {
    /// Zero bytes up to the next 4-byte boundary of the varlena (which
    /// starts 4-byte aligned): `padBufferToInt`. Returns their count.
    fn pad(&mut self) -> usize {
        let padded = (self.out.len() + 3) & !3;
        let n = padded - self.out.len();
        self.out.resize(padded, 0);
        n
    }

    fn put_entry(&mut self, at: usize, entry: u32) -> Option<()> {
        self.out.get_mut(at..at.checked_add(4)?)?.copy_from_slice(&entry.to_ne_bytes());
        Some(())
    }

    /// The index of the node after node `i`'s subtree.
    fn after(&self, i: usize) -> Option<usize> {
        match *self.nodes.get(i)? {
            Node::Arr { end, .. } | Node::Obj { end, .. } => Some(end),
            _ => Some(i + 1),
        }
    }

    /// A top-level scalar: a one-element array flagged `JB_FSCALAR`.
    fn raw_scalar(&mut self) -> Option<()> {
        self.out.extend_from_slice(&(1 | JB_FARRAY | JB_FSCALAR).to_ne_bytes());
        let entry = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        let (kind, len) = self.child(0)?;
        self.put_entry(entry, kind | len | JENTRY_HAS_OFF)
    }

    /// Container node `i`; returns its `JEntry` length (from before its
    /// alignment padding to its end).
    fn container(&mut self, i: usize) -> Option<u32> {
        let base = self.out.len();
        self.pad();
        let (count, object) = match *self.nodes.get(i)? {
            Node::Arr { count, .. } => (count, false),
            Node::Obj { count, .. } => (count, true),
            _ => return None,
        };
        let flag = if object { JB_FOBJECT } else { JB_FARRAY };
        let header = u32::try_from(count).ok().filter(|&c| c <= JENTRY_OFFLENMASK as u32)? | flag;
        self.out.extend_from_slice(&header.to_ne_bytes());
        let entries = self.out.len();
        let nentries = if object { count.checked_mul(2)? } else { count };
        self.out.resize(entries.checked_add(nentries.checked_mul(4)?)?, 0);
        let mut total = 0usize;
        // An array's elements; an object's keys (every pair's first node),
        // then its values (every pair's second node).
        let passes: &[usize] = if object { &[0, 1] } else { &[0] };
        let mut slot = 0;
        for &second in passes {
            let mut node = i + 1;
            for _ in 0..count {
                let this = node + second;
                node = if object { self.after(node + 1)? } else { self.after(node)? };
                let (kind, len) = self.child(this)?;
                total = total.checked_add(len as usize).filter(|&t| t <= JENTRY_OFFLENMASK)?;
                let field = if slot % JB_OFFSET_STRIDE == 0 { total as u32 | JENTRY_HAS_OFF } else { len };
                self.put_entry(entries + 4 * slot, kind | field)?;
                slot += 1;
            }
        }
        u32::try_from(self.out.len() - base).ok().filter(|&t| t as usize <= JENTRY_OFFLENMASK)
    }

    /// Node `i` as a child: its data appended, its `JEntry` type and length.
    fn child(&mut self, i: usize) -> Option<(u32, u32)> {
        Some(match *self.nodes.get(i)? {
            Node::Null => (JENTRY_ISNULL, 0),
            Node::False => (JENTRY_ISBOOL_FALSE, 0),
            Node::True => (JENTRY_ISBOOL_TRUE, 0),
            Node::Str { at, len, unescaped } => {
                let end = at.checked_add(len)?;
                let bytes = if unescaped { self.unescaped.get(at..end)? } else { self.text.as_bytes().get(at..end)? };
                if len > JENTRY_OFFLENMASK {
                    return None;
                }
                self.out.extend_from_slice(bytes);
                (JENTRY_ISSTRING, len as u32)
            }
            Node::Num { at, len } => {
                let pad = self.pad();
                let start = self.out.len();
                let text = self.text.get(at..at.checked_add(len)?)?;
                (self.number)(text, self.out)?;
                let size = self.out.len() - start;
                if !plain_varlena(self.out.get(start..)?, size) {
                    return None;
                }
                (JENTRY_ISNUMERIC, u32::try_from(pad + size).ok()?)
            }
            Node::Arr { .. } | Node::Obj { .. } => (JENTRY_ISCONTAINER, self.container(i)?),
        })
    }
}

/// Whether `b` is one uncompressed varlena with a 4-byte header saying
/// `size` bytes (what `numeric_in` returns, and what jsonb copies).
fn plain_varlena(b: &[u8], size: usize) -> bool {
    let Some(&[a, b1, c, d]) = b.get(..4) else {
        return false;
    };
    let header = u32::from_ne_bytes([a, b1, c, d]);
    #[cfg(target_endian = "little")]
    let (plain, said) = (header & 3 == 0, (header >> 2) as usize);
    #[cfg(target_endian = "big")]
    let (plain, said) = (header & 0xC000_0000 == 0, (header & 0x3FFF_FFFF) as usize);
    plain && said == size && size == b.len() && size > 4
}

/// The `numeric` varlena of a canonical number text, as `numeric_in`
/// returns it (4-byte header included), appended to `out`: the pure
/// encoder of `numeric_input.rs` (checked against `numeric_in` by its own
/// tests; `None` leaves the whole value to `jsonb_in`).
fn numeric_varlena(text: &str, out: &mut Vec<u8>) -> Option<()> {
    super::numeric_input::push_numeric(out, text).then_some(())
}

thread_local! {
    static BUILDER: RefCell<Builder> = RefCell::new(Builder::default());
}

/// The `jsonb` datum of `text`, palloc'd in the current memory context
/// (where `jsonb_in` would allocate it), or `None` to call `jsonb_in`.
pub(crate) fn datum(text: &str) -> Option<pg_sys::Datum> {
    BUILDER.with(|b| {
        let mut b = b.try_borrow_mut().ok()?;
        let made = b
            .build(text, numeric_varlena)
            .map(|bytes| crate::ffi::palloc_datum(bytes.len(), |out| out.copy_from_slice(bytes)));
        b.trim();
        made
    })
}

#[cfg(test)]
mod pure_tests {
    use super::*;

    /// A number encoder for tests: integers 0–9999 as `numeric_in` stores
    /// them (short format, one base-10000 digit), anything else as a fake
    /// varlena of the text's bytes (odd sizes, to move later offsets).
    fn number(text: &str, out: &mut Vec<u8>) -> Option<()> {
        let body: Vec<u8> = match text.parse::<u16>() {
            Ok(0) => 0x8000u16.to_ne_bytes().to_vec(),
            Ok(v) if v < 10000 && !text.starts_with('0') => [0x8000u16.to_ne_bytes(), v.to_ne_bytes()].concat(),
            _ => text.as_bytes().to_vec(),
        };
        out.extend_from_slice(&varlena_header(4 + body.len()));
        out.extend_from_slice(&body);
        Some(())
    }

    fn varlena_header(size: usize) -> [u8; 4] {
        let size = size as u32;
        if cfg!(target_endian = "little") { (size << 2).to_ne_bytes() } else { size.to_ne_bytes() }
    }

    fn build(text: &str) -> Option<Vec<u8>> {
        Builder::default().build(text, number).map(<[u8]>::to_vec)
    }

    /// A test value; keys are given in storage order.
    enum J {
        Null,
        Bool(bool),
        Num(&'static str),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    fn s(v: &str) -> J {
        J::Str(v.to_string())
    }

    /// `jsonb_out`'s text of a value (serde_json escapes strings as
    /// `escape_json` does).
    fn text(v: &J) -> String {
        fn push(out: &mut Vec<u8>, v: &J) {
            match v {
                J::Null => out.extend_from_slice(b"null"),
                J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                J::Num(n) => out.extend_from_slice(n.as_bytes()),
                J::Str(t) => out.extend_from_slice(serde_json::to_string(t).unwrap().as_bytes()),
                J::Arr(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b", ");
                        }
                        push(out, item);
                    }
                    out.push(b']');
                }
                J::Obj(pairs) => {
                    out.push(b'{');
                    for (i, (k, item)) in pairs.iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b", ");
                        }
                        out.extend_from_slice(serde_json::to_string(k).unwrap().as_bytes());
                        out.extend_from_slice(b": ");
                        push(out, item);
                    }
                    out.push(b'}');
                }
            }
        }
        let mut out = Vec::new();
        push(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    /// The stored bytes of a value, built bottom-up (each container on its
    /// own, then placed 4-byte aligned in its parent): a second model of
    /// the layout, written differently from `Writer`.
    fn encode(v: &J) -> Vec<u8> {
        fn scalar_or_container(v: &J, data: &mut Vec<u8>) -> u32 {
            let start = data.len();
            let kind = match v {
                J::Null => JENTRY_ISNULL,
                J::Bool(false) => JENTRY_ISBOOL_FALSE,
                J::Bool(true) => JENTRY_ISBOOL_TRUE,
                J::Str(t) => {
                    data.extend_from_slice(t.as_bytes());
                    JENTRY_ISSTRING
                }
                J::Num(n) => {
                    // The container's data area starts 4-byte aligned.
                    while !data.len().is_multiple_of(4) {
                        data.push(0);
                    }
                    number(n, data).unwrap();
                    JENTRY_ISNUMERIC
                }
                J::Arr(_) | J::Obj(_) => {
                    while !data.len().is_multiple_of(4) {
                        data.push(0);
                    }
                    data.extend_from_slice(&container(v, 0));
                    JENTRY_ISCONTAINER
                }
            };
            kind | (data.len() - start) as u32
        }
        fn container(v: &J, extra: u32) -> Vec<u8> {
            let (header, kids): (u32, Vec<&J>) = match v {
                J::Arr(items) => (JB_FARRAY | items.len() as u32, items.iter().collect()),
                J::Obj(pairs) => {
                    let keys = pairs.iter().map(|(k, _)| k);
                    let keys: Vec<&J> = keys.map(|k| &*Box::leak(Box::new(J::Str(k.clone())))).collect();
                    (JB_FOBJECT | pairs.len() as u32, keys.into_iter().chain(pairs.iter().map(|(_, v)| v)).collect())
                }
                _ => unreachable!(),
            };
            let mut data = Vec::new();
            let mut entries = Vec::new();
            for (i, k) in kids.iter().enumerate() {
                let e = scalar_or_container(k, &mut data);
                entries.push(if i % 32 == 0 { (e & 0x7000_0000) | JENTRY_HAS_OFF | data.len() as u32 } else { e });
            }
            let mut b = (header | extra).to_ne_bytes().to_vec();
            entries.iter().for_each(|e| b.extend_from_slice(&e.to_ne_bytes()));
            b.extend_from_slice(&data);
            b
        }
        let body = match v {
            J::Arr(_) | J::Obj(_) => container(v, 0),
            scalar => {
                // A top-level scalar: a one-element array flagged scalar.
                let one = J::Arr(vec![]);
                let mut b = container(&one, 0);
                b[..4].copy_from_slice(&(JB_FARRAY | JB_FSCALAR | 1).to_ne_bytes());
                let mut data = Vec::new();
                let e = scalar_or_container(scalar, &mut data);
                b.extend_from_slice(&((e & 0x7000_0000) | JENTRY_HAS_OFF | data.len() as u32).to_ne_bytes());
                b.extend_from_slice(&data);
                b
            }
        };
        [varlena_header(4 + body.len()).to_vec(), body].concat()
    }

    /// `build(text(v))` is `encode(v)`.
    fn check(v: &J) -> Vec<u8> {
        let t = text(v);
        let got = build(&t).unwrap_or_else(|| panic!("refused: {t}"));
        assert_eq!(got, encode(v), "{t}");
        got
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn the_bytes_of_small_values() {
        let w = |words: &[u32], tail: &[u8]| -> Vec<u8> {
            let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            b.extend_from_slice(tail);
            b
        };
        assert_eq!(build("{}").unwrap(), w(&[8 << 2, 0x2000_0000], b""));
        assert_eq!(build("[]").unwrap(), w(&[8 << 2, 0x4000_0000], b""));
        assert_eq!(build("\"a\"").unwrap(), w(&[13 << 2, 0x5000_0001, 0x8000_0001], b"a"));
        assert_eq!(build("\"\"").unwrap(), w(&[12 << 2, 0x5000_0001, 0x8000_0000], b""));
        assert_eq!(build("true").unwrap(), w(&[12 << 2, 0x5000_0001, 0xB000_0000], b""));
        assert_eq!(build("false").unwrap(), w(&[12 << 2, 0x5000_0001, 0xA000_0000], b""));
        assert_eq!(build("null").unwrap(), w(&[12 << 2, 0x5000_0001, 0xC000_0000], b""));
        // 7: numeric varlena of 8 bytes (short header 0x8000, digit 7)
        assert_eq!(build("7").unwrap(), w(&[20 << 2, 0x5000_0001, 0x9000_0008, 8 << 2], &[0, 0x80, 7, 0]));
        // {"a": 1}: keys' and values' JEntries, the number after a 3-byte pad
        assert_eq!(
            build("{\"a\": 1}").unwrap(),
            w(&[28 << 2, 0x2000_0001, 0x8000_0001, 0x1000_000B], &[b'a', 0, 0, 0, 32, 0, 0, 0, 0, 0x80, 1, 0])
        );
        // [[]]: the inner container's JEntry is its length
        assert_eq!(build("[[]]").unwrap(), w(&[16 << 2, 0x4000_0001, 0xD000_0004, 0x4000_0000], b""));
    }

    #[test]
    fn objects_arrays_nesting_and_scalars() {
        use J::*;
        check(&Obj(vec![]));
        check(&Arr(vec![]));
        check(&Num("0"));
        check(&Num("-12.5"));
        check(&s("x"));
        check(&s(""));
        check(&Null);
        check(&Bool(true));
        check(&Bool(false));
        check(&Obj(vec![("id".into(), Num("7")), ("ok".into(), Bool(false)), ("tag".into(), s("item-7"))]));
        check(&Obj(vec![
            ("".into(), Null),
            ("a".into(), Obj(vec![("b".into(), Arr(vec![Num("1"), Null, Bool(true), Obj(vec![]), Arr(vec![])]))])),
            ("c".into(), Arr(vec![s("é"), Num("123.45"), s("xy"), Num("3")])),
            ("aa".into(), Num("9999")),
        ]));
        check(&Arr(vec![s("a"), Num("1"), s("bb"), Num("12"), s("ccc"), Arr(vec![Num("5")]), s("d"), Obj(vec![])]));
        // nested all the way down to the limit
        let mut v = Arr(vec![]);
        for _ in 1..MAX_DEPTH {
            v = Arr(vec![v]);
        }
        check(&v);
        let mut v = Obj(vec![]);
        for _ in 1..MAX_DEPTH {
            v = Obj(vec![("k".into(), v)]);
        }
        check(&v);
    }

    #[test]
    fn keys_sort_by_length_then_bytes() {
        use J::*;
        let keys = ["", "b", "z", "aa", "ab", "ba", "é", "zzz", "\u{1}\u{1}\u{1}\u{1}", "aaaa", "~~~~"];
        check(&Obj(keys.iter().map(|k| (k.to_string(), Num("1"))).collect()));
        // "é" is two bytes: after every one-byte key, before "ab"? no: equal
        // length sorts by bytes, 0xC3 after 'b'.
        assert!(key_order(b"z", "é".as_bytes()) && key_order(b"ba", "é".as_bytes()));
        assert!(build("{\"é\": 1, \"ba\": 2}").is_none());
    }

    #[test]
    fn offsets_every_32nd_child_at_the_stride_boundaries() {
        use J::*;
        for n in [1usize, 31, 32, 33, 63, 64, 65, 100] {
            // Mixed children: strings of odd lengths move the numbers and
            // containers after them onto padded offsets.
            let items: Vec<J> = (0..n)
                .map(|i| match i % 5 {
                    0 => s(&"x".repeat(i % 7)),
                    1 => Num(["1", "22", "333", "4444", "5.5"][i % 5]),
                    2 => Arr(vec![Num("1"), s("abc")]),
                    3 => Bool(i % 2 == 0),
                    _ => Null,
                })
                .collect();
            let got = check(&Arr(items));
            // Which JEntries hold an end offset: exactly every 32nd.
            for i in 0..n {
                let e = u32::from_ne_bytes(got[8 + 4 * i..12 + 4 * i].try_into().unwrap());
                assert_eq!(e & JENTRY_HAS_OFF != 0, i % 32 == 0, "array of {n}, child {i}");
            }
            let pairs: Vec<(String, J)> =
                (0..n).map(|i| (format!("k{i:03}"), if i % 2 == 0 { Num("42") } else { s("v") })).collect();
            let got = check(&Obj(pairs));
            for slot in 0..2 * n {
                let e = u32::from_ne_bytes(got[8 + 4 * slot..12 + 4 * slot].try_into().unwrap());
                assert_eq!(e & JENTRY_HAS_OFF != 0, slot % 32 == 0, "object of {n}, slot {slot}");
            }
        }
    }

    #[test]
    fn escapes_are_de_escaped() {
        let every = "q\" b\\ s/ \u{8}\u{c}\n\r\t \u{1}\u{1f}\u{7f} é€😀 end";
        check(&J::Obj(vec![(every.to_string(), s(every))]));
        // \/ and upper-case hex in a control escape also give jsonb_in's bytes.
        assert_eq!(build("\"a\\/b\\u001F\""), build("\"a/b\\u001f\""));
        assert_eq!(build("\"\\u001F\"").unwrap()[12..], [0x1f]);
    }

    #[test]
    fn other_shapes_are_left_to_jsonb_in() {
        let long_number = format!("[{}]", "9".repeat(MAX_NUMBER + 1));
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let too_long = format!("\"{}\"", "x".repeat(MAX_TEXT));
        let refused = [
            "",
            " ",
            "{ }",
            "[ ]",
            " 1",
            "1 ",
            "1\n",
            "\t1",
            "{\"a\":1}",
            "{\"a\" : 1}",
            "{\"a\":  1}",
            "{\"a\": 1,\"b\": 2}",
            "[1,2]",
            "[1 , 2]",
            "[1,  2]",
            "[1, 2,]",
            "[, 1]",
            "{\"a\": 1,}",
            "{, \"a\": 1}",
            "[1]]",
            "[[1]",
            "{}{}",
            "{\"a\": 1",
            "{\"a\"}",
            "{\"a\": }",
            "{1: 2}",
            "{null: 2}",
            // keys out of order, repeated
            "{\"b\": 1, \"a\": 2}",
            "{\"aa\": 1, \"b\": 2}",
            "{\"a\": 1, \"a\": 2}",
            "{\"a\": 1, \"b\": 2, \"b\": 3}",
            // numbers
            "01",
            "-01",
            "00",
            "-",
            "-0",
            "-0.0",
            "-0.000",
            "1.",
            ".5",
            "-.5",
            "+1",
            "1e5",
            "1E5",
            "1.5e-3",
            "1.5E+3",
            "0x10",
            "1_0",
            "NaN",
            "Infinity",
            "-Infinity",
            "[1.0.0]",
            "[-]",
            // literals
            "tru",
            "truex",
            "True",
            "nul",
            "nulll",
            "fals",
            "[true false]",
            // strings
            "\"abc",
            "\"\\",
            "\"\\\"",
            "\"\\u",
            "\"\\u00",
            "\"\\u001\"",
            "\"\\u0000\"",
            "\"\\u0020\"",
            "\"\\u0041\"",
            "\"\\u00e9\"",
            "\"\\u007f\"",
            "\"\\u0100\"",
            "\"\\ud83d\\ude00\"",
            "\"\\x\"",
            "\"\\a\"",
            "\"\\'\"",
            "\"\\U0001\"",
            "\"\\u00g1\"",
            "\"a\nb\"",
            "\"a\tb\"",
            "\"\u{0}\"",
            "\"a\u{1f}\"",
            "\u{0}",
            "[1]\u{0}",
            "'a'",
            "{'a': 1}",
            &long_number,
            &too_deep,
            &too_long,
        ];
        for t in refused {
            assert_eq!(build(t), None, "{:?}", t.get(..60).unwrap_or(t));
        }
        // What the limits let through.
        assert!(build(&format!("[{}]", "9".repeat(MAX_NUMBER))).is_some());
        assert!(build(&format!("\"{}\"", "x".repeat(MAX_TEXT - 2))).is_some());
        // A number encoder that declines, or returns something that is not
        // one plain varlena, leaves the value to jsonb_in.
        let mut b = Builder::default();
        assert!(b.build("[1]", |_: &str, _: &mut Vec<u8>| None).is_none());
        assert!(
            b.build("[1]", |_: &str, o: &mut Vec<u8>| {
                o.extend_from_slice(&[1, 2, 3]);
                Some(())
            })
            .is_none()
        );
        let short_header = |_: &str, o: &mut Vec<u8>| {
            o.extend_from_slice(&[0x0B, 0x80, 1, 0]);
            Some(())
        };
        assert!(b.build("[1]", short_header).is_none());
        assert!(b.build("[\"a\"]", |_: &str, _: &mut Vec<u8>| None).is_some(), "no number, no call");
    }

    #[test]
    fn a_builder_is_reused_and_trimmed() {
        let mut b = Builder::default();
        let small = b.build("{\"a\": [1, \"x\\ny\"]}", number).unwrap().to_vec();
        let big = format!("[\"{}\"]", "y\\n".repeat(KEEP_CAPACITY));
        assert!(b.build(&big, number).is_some());
        b.trim();
        assert!(b.out.capacity() <= KEEP_CAPACITY && b.unescaped.capacity() <= KEEP_CAPACITY);
        assert_eq!(b.build("{\"a\": [1, \"x\\ny\"]}", number).unwrap(), small);
        assert!(b.build("[1, 2", number).is_none());
        assert_eq!(b.build("{\"a\": [1, \"x\\ny\"]}", number).unwrap(), small);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::{Builder, MAX_DEPTH, MAX_NUMBER, numeric_varlena};
    use crate::apply::test_rng::Rng;
    use pgrx::pg_sys;
    use pgrx::prelude::*;
    use std::ffi::{CStr, CString};

    /// `jsonb_in`'s varlena for `text`, as bytes.
    fn jsonb_in(text: &str) -> Vec<u8> {
        let c = CString::new(text).unwrap();
        // SAFETY: jsonb_in(cstring) returns a palloc'd jsonb with a 4-byte
        // header; its bytes are copied.
        unsafe {
            let d = pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(c.as_ptr()))])
                .unwrap();
            let p = d.cast_mut_ptr::<pg_sys::varlena>();
            std::slice::from_raw_parts(p.cast::<u8>(), pgrx::varsize_any(p)).to_vec()
        }
    }

    /// `jsonb_out`'s text of `jsonb_in(text)`: what the decoder sends.
    fn canonical(text: &str) -> String {
        let stored = jsonb_in(text);
        // SAFETY: jsonb_out takes a jsonb datum (a copy in palloc'd memory,
        // aligned) and returns a palloc'd C string.
        unsafe {
            let p = pg_sys::palloc(stored.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(stored.as_ptr(), p, stored.len());
            let out = pgrx::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(pg_sys::Datum::from(p))]).unwrap();
            CStr::from_ptr(out.cast_mut_ptr::<std::ffi::c_char>()).to_str().unwrap().to_string()
        }
    }

    fn ours(b: &mut Builder, text: &str) -> Option<Vec<u8>> {
        b.build(text, numeric_varlena).map(<[u8]>::to_vec)
    }

    /// jsonb_out's text of `raw` is ours, byte for byte as `jsonb_in`'s;
    /// `raw` itself is refused or gives `jsonb_in`'s bytes too. Returns
    /// whether `raw` itself was taken.
    fn compare(b: &mut Builder, raw: &str) -> bool {
        let text = canonical(raw);
        let want = jsonb_in(&text);
        let got = ours(b, &text);
        assert!(got.is_some(), "refused jsonb_out's text {text:?} (of {raw:?})");
        assert!(got.as_deref() == Some(&want[..]), "bytes differ for {text:?}:\n ours {got:?}\n jsonb_in {want:?}");
        match ours(b, raw) {
            Some(g) => {
                assert_eq!(g, jsonb_in(raw), "accepted non-canonical {raw:?} with other bytes");
                true
            }
            None => false,
        }
    }

    /// Edge cases, written as a user would; compared after jsonb_out.
    #[pg_test]
    fn edge_cases_are_byte_identical_to_jsonb_in() {
        let mut b = Builder::default();
        let mut corpus: Vec<String> = [
            "{}",
            "[]",
            "0",
            "-1",
            "1.50",
            "0.000001",
            "-0.5",
            "9999",
            "10000",
            "123456789012345678901234567890.123456789012345678901234567890",
            "1e400",
            "1e-400",
            "-1.5E+300",
            "0.0000",
            "-0",
            "-0.000",
            "100",
            "1000000",
            "0.1",
            "12.340",
            "true",
            "false",
            "null",
            "\"\"",
            "\"x\"",
            r#""\u0001\u001f\u001F\b\f\n\r\t\"\\\/ é € 😀 \u007f""#,
            r#""\u00e9\ud83d\ude00\u0041""#,
            r#"{"": 1, "a": "", "b": [], "aa": {}, "é": null, "zz": true, "aaa": false}"#,
            r#"{"b": 1, "a": 2, "a": 3, "ccc": 4, "dd": 5}"#,
            r#"{"id": 1, "tag": "item-1", "ok": false}"#,
            r#"[1, "a", [2, "bb", [3, "ccc", {"k": [4.5, null]}]], {}, [], true]"#,
            r#"  { "a" : [ 1 , 2 ] ,"b":{"c":"d"}}  "#,
            r#"{"a": {"a": {"a": {"a": 1}}}, "b": [[[[]]]]}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // The stride boundaries, for arrays and objects, with numbers and
        // strings of odd lengths between them.
        for n in [31usize, 32, 33, 63, 64, 65, 100] {
            let items: Vec<String> = (0..n)
                .map(|i| if i % 3 == 0 { format!("\"{}\"", "s".repeat(i % 5)) } else { format!("{i}.{i}") })
                .collect();
            corpus.push(format!("[{}]", items.join(", ")));
            let pairs: Vec<String> =
                (0..n).map(|i| format!("\"{}\": {}", "k".repeat(1 + i % 4) + &i.to_string(), items[i])).collect();
            corpus.push(format!("{{{}}}", pairs.join(", ")));
        }
        // Nesting up to the limit, and a number of the longest length.
        corpus.push(format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)));
        corpus.push(format!("{}1{}", "{\"k\": ".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH)));
        corpus.push(format!("-{}.5", "7".repeat(MAX_NUMBER - 3)));
        for raw in &corpus {
            compare(&mut b, raw);
        }
        // jsonb_in takes these; we leave them to it.
        for raw in [
            format!("{}1{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)),
            format!("[{}]", "7".repeat(MAX_NUMBER + 1)),
            r#""\u00e9""#.to_string(),
            r#"{"b": 1, "a": 2}"#.to_string(),
            "[1,2]".to_string(),
            "1e3".to_string(),
        ] {
            assert!(ours(&mut b, &raw).is_none(), "{raw:.80}");
            let _ = jsonb_in(&raw);
        }
        // The datum the hook stores: the same bytes, palloc'd.
        let text = canonical(r#"{"id": 7, "ok": false, "tag": "item-7", "n": [1.5, "x\"y"]}"#);
        let d = super::datum(&text).expect("taken");
        // SAFETY: a palloc'd jsonb varlena made by `datum`.
        let got = unsafe {
            let p = d.cast_mut_ptr::<pg_sys::varlena>();
            std::slice::from_raw_parts(p.cast::<u8>(), pgrx::varsize_any(p)).to_vec()
        };
        assert_eq!(got, jsonb_in(&text));
    }

    /// A deterministic generator of JSON texts `jsonb_in` accepts, spelled
    /// in many ways (blanks, key order, repeated keys, escapes, exponents).
    struct Gen(Rng);

    impl Gen {
        fn below(&mut self, n: usize) -> usize {
            self.0.below(n)
        }

        fn blank(&mut self, out: &mut String) {
            if self.below(8) == 0 {
                out.push_str([" ", "\n", "\t", "  ", "\r\n"][self.below(5)]);
            }
        }

        fn string(&mut self, out: &mut String) {
            const CHARS: &[&str] = &[
                "a", "b", "z", "A", "0", " ", "-", "_", "\"", "\\", "/", "é", "€", "😀", "ß", "\u{7f}", "\u{1}",
                "\u{8}", "\u{9}", "\u{a}", "\u{c}", "\u{d}", "\u{1f}", "\u{1b}", "日本",
            ];
            out.push('"');
            let len = [0, 1, 2, 3, 5, 8, 13, 40][self.below(8)];
            for _ in 0..len {
                let c = CHARS[self.below(CHARS.len())];
                let ch = c.chars().next().unwrap();
                let odd = self.below(6) == 0;
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '/' if odd => out.push_str("\\/"),
                    '\u{8}' if !odd => out.push_str("\\b"),
                    '\u{9}' if !odd => out.push_str("\\t"),
                    '\u{a}' if !odd => out.push_str("\\n"),
                    '\u{c}' if !odd => out.push_str("\\f"),
                    '\u{d}' if !odd => out.push_str("\\r"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    'A' if odd => out.push_str("\\u0041"),
                    'é' if odd => out.push_str("\\u00E9"),
                    '😀' if odd => out.push_str("\\ud83d\\ude00"),
                    _ => out.push_str(c),
                }
            }
            out.push('"');
        }

        fn number(&mut self, out: &mut String) {
            let digits =
                |g: &mut Gen, n: usize| (0..n).map(|_| char::from(b'0' + g.below(10) as u8)).collect::<String>();
            if self.below(3) == 0 {
                out.push('-');
            }
            let int = match self.below(4) {
                0 => "0".to_string(),
                1 => (1 + self.below(9)).to_string(),
                _ => {
                    let (first, n) = (1 + self.below(9), [1, 3, 4, 5, 8, 20, 40][self.below(7)]);
                    format!("{first}{}", digits(self, n))
                }
            };
            out.push_str(&int);
            if self.below(2) == 0 {
                out.push('.');
                let n = [1, 2, 3, 4, 5, 9, 17, 30][self.below(8)];
                out.push_str(&digits(self, n));
            }
            if self.below(6) == 0 {
                out.push_str(["e", "E", "e+", "e-", "E-"][self.below(5)]);
                out.push_str(&(self.below(40)).to_string());
            }
        }

        fn key(&mut self, out: &mut String) {
            const KEYS: &[&str] = &[
                "", "a", "b", "z", "aa", "ab", "ba", "id", "ok", "tag", "é", "ée", "zzz", "aaaa", "k\\\"q", "\\u0001",
            ];
            if self.below(2) == 0 {
                out.push('"');
                out.push_str(KEYS[self.below(KEYS.len())]);
                out.push('"');
            } else {
                self.string(out);
            }
        }

        fn value(&mut self, out: &mut String, depth: usize) {
            let kind = if depth >= 6 { 2 + self.below(6) } else { self.below(8) };
            match kind {
                0 | 1 => {
                    let (open, close) = if kind == 0 { ('[', ']') } else { ('{', '}') };
                    let n = if self.below(20) == 0 { 30 + self.below(40) } else { self.below(6) };
                    out.push(open);
                    for i in 0..n {
                        self.blank(out);
                        if i > 0 {
                            out.push(',');
                            if self.below(8) != 0 {
                                out.push(' ');
                            }
                        }
                        if kind == 1 {
                            self.key(out);
                            self.blank(out);
                            out.push(':');
                            if self.below(8) != 0 {
                                out.push(' ');
                            }
                        }
                        self.value(out, depth + 1);
                    }
                    self.blank(out);
                    out.push(close);
                }
                2 | 3 => self.string(out),
                4 | 5 => self.number(out),
                6 => out.push_str(["true", "false"][self.below(2)]),
                _ => out.push_str("null"),
            }
        }
    }

    /// Thousands of generated values: jsonb_out's text of each is ours and
    /// byte-identical to jsonb_in's; the generated spellings themselves are
    /// refused or identical too.
    #[pg_test]
    fn generated_values_are_byte_identical_to_jsonb_in() {
        let mut b = Builder::default();
        let mut g = Gen(Rng(0x9E37_79B9_7F4A_7C15));
        let (mut raw_taken, n) = (0, 4000);
        for _ in 0..n {
            let mut raw = String::new();
            g.blank(&mut raw);
            g.value(&mut raw, 0);
            g.blank(&mut raw);
            if compare(&mut b, &raw) {
                raw_taken += 1;
            }
        }
        // Some spellings were canonical already, most were not.
        assert!(raw_taken > n / 20 && raw_taken < n * 9 / 10, "{raw_taken} of {n} raw texts taken");
    }
}
