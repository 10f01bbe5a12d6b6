//! wal2json's format-version 1: one JSON document per transaction,
//! `{"xid":…,"nextlsn":…,"timestamp":…,"origin":…,"change":[…]}`, each
//! change an object of parallel arrays (`columnnames`, `columntypes`,
//! `columnvalues`, `oldkeys`, …), in wal2json 2.x's exact key order and
//! whitespace (`pretty-print` uses its tabs, newlines and spaces).
//!
//! Design notes
//! - The pieces are written in the order wal2json writes them: a header when
//!   the transaction's first change is written, one *entry* per change, a
//!   footer at commit. `stream.rs` decides where they go: appended to one
//!   transaction buffer written at commit (wal2json's default; the whole
//!   transaction must then fit in PostgreSQL's 1 GB limit), or each written as
//!   its own output row with `write-in-chunks` (rows are then fragments that
//!   only concatenated form the document, exactly as wal2json's).
//! - Values are rendered by `values.rs`, as in format-version 2, so the
//!   deliberate value differences (exact numerics, NaN, unchanged TOAST) are
//!   the same in both versions (docs/FORMAT.md, "Differences from wal2json").
//! - A change entry is built in a few passes over the row's visible columns,
//!   one per array, from a list of (column, datum) chosen once: no per-array
//!   scratch buffers.

use super::json;
use super::options::Options;
use super::shape::Shape;
use super::stream::Dml;
use super::values;
use pgrx::pg_sys;

/// wal2json's pretty-print whitespace: tab, newline, space (all empty when
/// off).
#[derive(Clone, Copy)]
pub(crate) struct Ws {
    ht: &'static [u8],
    nl: &'static [u8],
    sp: &'static [u8],
}

impl Ws {
    pub(crate) fn new(pretty: bool) -> Ws {
        if pretty { Ws { ht: b"\t", nl: b"\n", sp: b" " } } else { Ws { ht: b"", nl: b"", sp: b"" } }
    }

    fn tabs(&self, out: &mut Vec<u8>, n: usize) {
        for _ in 0..n {
            out.extend_from_slice(self.ht);
        }
    }

    /// `<tabs>"key":<sp>`
    fn key(&self, out: &mut Vec<u8>, depth: usize, key: &[u8]) {
        self.tabs(out, depth);
        out.push(b'"');
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(self.sp);
    }

    /// The separator between array items: `,<sp>`.
    fn sep(&self, out: &mut Vec<u8>, first: &mut bool) {
        if !*first {
            out.push(b',');
            out.extend_from_slice(self.sp);
        }
        *first = false;
    }
}

/// The transaction fields of the header.
pub(crate) struct Head<'a> {
    pub(crate) xid: u32,
    pub(crate) end_lsn: u64,
    pub(crate) timestamp: &'a str,
    pub(crate) origin: u16,
}

/// `{"xid":…,"nextlsn":…,"timestamp":…,"origin":…,"change":[` (the keys the
/// options ask for). `include-lsn` gives only `nextlsn` in version 1.
pub(crate) fn header(out: &mut Vec<u8>, ws: Ws, opts: &Options, h: &Head<'_>) {
    out.push(b'{');
    out.extend_from_slice(ws.nl);
    if opts.include_xids {
        ws.key(out, 1, b"xid");
        json::push_int(out, h.xid as i64);
        out.push(b',');
        out.extend_from_slice(ws.nl);
    }
    if opts.include_lsn {
        ws.key(out, 1, b"nextlsn");
        json::push_lsn(out, h.end_lsn);
        out.push(b',');
        out.extend_from_slice(ws.nl);
    }
    if opts.include_timestamp {
        ws.key(out, 1, b"timestamp");
        json::push_str(out, h.timestamp.as_bytes());
        out.push(b',');
        out.extend_from_slice(ws.nl);
    }
    if opts.include_origin {
        ws.key(out, 1, b"origin");
        json::push_int(out, h.origin as i64);
        out.push(b',');
        out.extend_from_slice(ws.nl);
    }
    ws.key(out, 1, b"change");
    out.push(b'[');
}

/// `]}` closing the transaction's document.
pub(crate) fn footer(out: &mut Vec<u8>, ws: Ws, chunked: bool) {
    if !chunked {
        out.extend_from_slice(ws.nl);
    }
    ws.tabs(out, 1);
    out.push(b']');
    out.extend_from_slice(ws.nl);
    out.push(b'}');
}

/// The start of the `n`th (1-based) entry of `change`: `[,]{`.
fn entry_start(out: &mut Vec<u8>, ws: Ws, chunked: bool, n: u64) {
    if !chunked {
        out.extend_from_slice(ws.nl);
    }
    ws.tabs(out, 2);
    if n > 1 {
        out.push(b',');
    }
    out.push(b'{');
    out.extend_from_slice(ws.nl);
}

/// A logical message. A transactional one is the `n`th entry of its
/// transaction; a non-transactional one is a document of its own
/// (`{"change":[{…}]}`). `content` is the JSON value (and any additions)
/// to print after `"content":`.
pub(crate) fn message(out: &mut Vec<u8>, ws: Ws, chunked: bool, n: Option<u64>, prefix: &str, content: &[u8]) {
    match n {
        Some(n) => entry_start(out, ws, chunked, n),
        None => {
            out.push(b'{');
            out.extend_from_slice(ws.nl);
            ws.key(out, 1, b"change");
            out.push(b'[');
            out.extend_from_slice(ws.nl);
            ws.tabs(out, 2);
            out.push(b'{');
            out.extend_from_slice(ws.nl);
        }
    }
    ws.key(out, 3, b"kind");
    out.extend_from_slice(b"\"message\",");
    out.extend_from_slice(ws.nl);
    ws.key(out, 3, b"transactional");
    out.extend_from_slice(if n.is_some() { b"true," } else { b"false," });
    out.extend_from_slice(ws.nl);
    ws.key(out, 3, b"prefix");
    json::push_str(out, prefix.as_bytes());
    out.push(b',');
    out.extend_from_slice(ws.nl);
    ws.key(out, 3, b"content");
    out.extend_from_slice(content);
    out.extend_from_slice(ws.nl);
    ws.tabs(out, 2);
    out.push(b'}');
    if n.is_none() {
        out.extend_from_slice(ws.nl);
        ws.tabs(out, 1);
        out.push(b']');
        out.extend_from_slice(ws.nl);
        out.push(b'}');
    }
}

/// A deformed row: datums and null flags in the shape's attribute layout.
#[derive(Clone, Copy)]
pub(crate) struct Row<'a> {
    pub(crate) vals: &'a [pg_sys::Datum],
    pub(crate) nulls: &'a [bool],
}

/// One column chosen for an array: the index into `shape.columns`, the
/// datum and whether it is NULL.
pub(crate) type Item = (usize, pg_sys::Datum, bool);

/// Everything one I/U/D entry needs.
pub(crate) struct Change<'a> {
    pub(crate) shape: &'a Shape,
    /// Whether a column (by descriptor index) is published (column lists).
    pub(crate) shown: &'a dyn Fn(usize) -> bool,
    pub(crate) dml: Dml,
    pub(crate) new: Option<Row<'a>>,
    pub(crate) old: Option<Row<'a>>,
    /// The transaction's change counter, this entry included.
    pub(crate) n: u64,
}

/// Write an INSERT / UPDATE / DELETE entry. `items` and `unchanged` are
/// scratch space.
///
/// # Safety
/// The rows must be valid deformed rows of the shape's relation.
pub(crate) unsafe fn change(
    out: &mut Vec<u8>,
    ws: Ws,
    opts: &Options,
    chunked: bool,
    c: &Change<'_>,
    items: &mut Vec<Item>,
    unchanged: &mut Vec<usize>,
) {
    let shape = c.shape;
    entry_start(out, ws, chunked, c.n);
    ws.key(out, 3, b"kind");
    out.extend_from_slice(match c.dml {
        Dml::Insert => b"\"insert\",",
        Dml::Update => b"\"update\",",
        Dml::Delete => b"\"delete\",",
    });
    out.extend_from_slice(ws.nl);
    if opts.include_schemas {
        ws.key(out, 3, b"schema");
        json::push_str(out, shape.schema.as_bytes());
        out.push(b',');
        out.extend_from_slice(ws.nl);
    }
    ws.key(out, 3, b"table");
    json::push_str(out, shape.table.as_bytes());
    out.push(b',');
    out.extend_from_slice(ws.nl);

    // The new row's columns: an unchanged TOAST value is taken from the old
    // row when it is there (REPLICA IDENTITY FULL), else listed in
    // `unchanged_toast` (our addition; wal2json drops the column silently).
    items.clear();
    unchanged.clear();
    if let (Dml::Insert | Dml::Update, Some(new)) = (c.dml, c.new) {
        for (ci, col) in shape.columns.iter().enumerate() {
            if !(c.shown)(col.index) {
                continue;
            }
            let (mut d, mut null) = (new.vals[col.index], new.nulls[col.index]);
            // SAFETY: a non-null varlena datum of this column.
            if !null && col.varlena && unsafe { values::is_unchanged_toast(d) } {
                match c.old {
                    Some(old) if !old.nulls[col.index] => (d, null) = (old.vals[col.index], false),
                    _ => {
                        unchanged.push(ci);
                        continue;
                    }
                }
            }
            items.push((ci, d, null));
        }
    }
    if !unchanged.is_empty() {
        ws.key(out, 3, b"unchanged_toast");
        out.push(b'[');
        let mut first = true;
        for &ci in unchanged.iter() {
            ws.sep(out, &mut first);
            out.extend_from_slice(&shape.columns[ci].name_json);
        }
        out.extend_from_slice(b"],");
        out.extend_from_slice(ws.nl);
    }

    // wal2json 2.5: only a table whose replica identity is its primary key.
    let pk = opts.include_pk && shape.has_pk && shape.identity_default;
    match c.dml {
        Dml::Insert => {
            // SAFETY: items hold valid datums of their columns.
            unsafe { columns(out, ws, opts, shape, items, pk) };
            if pk {
                pk_object(out, ws, opts, shape, false);
            }
        }
        Dml::Update => {
            // SAFETY: as above.
            unsafe { columns(out, ws, opts, shape, items, true) };
            if pk {
                pk_object(out, ws, opts, shape, true);
            }
            // With an old row: its non-null columns; without (the key did
            // not change): the key columns of the new row.
            let (row, all) = match (c.old, c.new) {
                (Some(old), _) => (Some(old), true),
                (None, new) => (new, false),
            };
            if let Some(row) = row {
                // SAFETY: the row is valid.
                unsafe { oldkeys(out, ws, opts, c, row, all, items) };
            }
        }
        Dml::Delete => {
            if pk {
                pk_object(out, ws, opts, shape, true);
            }
            if let Some(old) = c.old {
                // SAFETY: the row is valid.
                unsafe { oldkeys(out, ws, opts, c, old, shape.identity_full, items) };
            }
        }
    }
    ws.tabs(out, 2);
    out.push(b'}');
}

/// `"columnnames":[…],"columntypes":[…],…,"columnvalues":[…]`, then `,`
/// when more follows.
///
/// # Safety
/// `items` hold valid datums of their columns.
unsafe fn columns(out: &mut Vec<u8>, ws: Ws, opts: &Options, shape: &Shape, items: &[Item], more: bool) {
    let array =
        |out: &mut Vec<u8>, key: &[u8], f: &dyn Fn(&mut Vec<u8>, &Item)| metadata_array(out, ws, 3, key, items, f);
    array(out, b"columnnames", &|o, it| o.extend_from_slice(&shape.columns[it.0].name_json));
    if opts.include_types {
        array(out, b"columntypes", &|o, it| o.extend_from_slice(&shape.columns[it.0].type_json));
    }
    if opts.include_type_oids {
        array(out, b"columntypeoids", &|o, it| json::push_int(o, shape.columns[it.0].typeoid as i64));
    }
    if opts.include_column_positions {
        array(out, b"columnpositions", &|o, it| json::push_int(o, shape.columns[it.0].attnum as i64));
    }
    if opts.include_not_null {
        // wal2json fills this array only when types are printed.
        if opts.include_types {
            array(out, b"columnoptionals", &|o, it| {
                o.extend_from_slice(if shape.columns[it.0].not_null { b"false" } else { b"true" })
            });
        } else {
            ws.key(out, 3, b"columnoptionals");
            out.extend_from_slice(b"[],");
            out.extend_from_slice(ws.nl);
        }
    }
    if opts.include_default {
        array(out, b"columndefaults", &|o, it| o.extend_from_slice(&shape.columns[it.0].default_json));
    }
    ws.key(out, 3, b"columnvalues");
    out.push(b'[');
    let mut first = true;
    for &(ci, d, null) in items {
        ws.sep(out, &mut first);
        if null {
            out.extend_from_slice(b"null");
        } else {
            // SAFETY: as required by this function.
            unsafe { values::push_value(out, &shape.columns[ci].kind, d) };
        }
    }
    out.push(b']');
    if more {
        out.push(b',');
    }
    out.extend_from_slice(ws.nl);
}

/// `"pk":{"pknames":[…],"pktypes":[…]}` (types only with `include-types`).
fn pk_object(out: &mut Vec<u8>, ws: Ws, opts: &Options, shape: &Shape, more: bool) {
    ws.key(out, 3, b"pk");
    out.push(b'{');
    out.extend_from_slice(ws.nl);
    ws.key(out, 4, b"pknames");
    out.push(b'[');
    let mut first = true;
    for col in shape.columns.iter().filter(|c| c.in_pk) {
        ws.sep(out, &mut first);
        out.extend_from_slice(&col.name_json);
    }
    out.extend_from_slice(b"],");
    out.extend_from_slice(ws.nl);
    ws.key(out, 4, b"pktypes");
    out.push(b'[');
    if opts.include_types {
        let mut first = true;
        for col in shape.columns.iter().filter(|c| c.in_pk) {
            ws.sep(out, &mut first);
            out.extend_from_slice(&col.type_json);
        }
    }
    out.push(b']');
    out.extend_from_slice(ws.nl);
    ws.tabs(out, 3);
    out.push(b'}');
    if more {
        out.push(b',');
    }
    out.extend_from_slice(ws.nl);
}

/// `"oldkeys":{"keynames":[…],"keytypes":[…],"keyvalues":[…]}`: the row's
/// non-null columns, all of them (`all`) or those of the replica identity
/// key. Unchanged TOAST pointers are never read (none reaches here in a
/// valid stream; see stream.rs).
///
/// # Safety
/// `row` is a valid deformed row of the shape's relation.
unsafe fn oldkeys(
    out: &mut Vec<u8>,
    ws: Ws,
    opts: &Options,
    c: &Change<'_>,
    row: Row<'_>,
    all: bool,
    items: &mut Vec<Item>,
) {
    let shape = c.shape;
    items.clear();
    for (ci, col) in shape.columns.iter().enumerate() {
        if !(all || col.in_identity_key) || !(c.shown)(col.index) || row.nulls[col.index] {
            continue;
        }
        let d = row.vals[col.index];
        // SAFETY: a non-null varlena datum of this column.
        if col.varlena && unsafe { values::is_unchanged_toast(d) } {
            continue;
        }
        items.push((ci, d, false));
    }
    ws.key(out, 3, b"oldkeys");
    out.push(b'{');
    out.extend_from_slice(ws.nl);
    let array =
        |out: &mut Vec<u8>, key: &[u8], f: &dyn Fn(&mut Vec<u8>, &Item)| metadata_array(out, ws, 4, key, items, f);
    array(out, b"keynames", &|o, it| o.extend_from_slice(&shape.columns[it.0].name_json));
    if opts.include_types {
        array(out, b"keytypes", &|o, it| o.extend_from_slice(&shape.columns[it.0].type_json));
    }
    if opts.include_type_oids {
        array(out, b"keytypeoids", &|o, it| json::push_int(o, shape.columns[it.0].typeoid as i64));
    }
    ws.key(out, 4, b"keyvalues");
    out.push(b'[');
    let mut first = true;
    for &(ci, d, _) in items.iter() {
        ws.sep(out, &mut first);
        // SAFETY: as required by this function; non-null, not on disk.
        unsafe { values::push_value(out, &shape.columns[ci].kind, d) };
    }
    out.push(b']');
    out.extend_from_slice(ws.nl);
    ws.tabs(out, 3);
    out.push(b'}');
    out.extend_from_slice(ws.nl);
}

/// `"key": [f(item), ...],` at indentation `level` (pretty-print): the
/// per-column metadata arrays of a change (`columnnames`, `keytypes`, ...).
fn metadata_array(
    out: &mut Vec<u8>,
    ws: Ws,
    level: usize,
    key: &[u8],
    items: &[Item],
    f: &dyn Fn(&mut Vec<u8>, &Item),
) {
    ws.key(out, level, key);
    out.push(b'[');
    let mut first = true;
    for it in items {
        ws.sep(out, &mut first);
        f(out, it);
    }
    out.extend_from_slice(b"],");
    out.extend_from_slice(ws.nl);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn header_keys_in_wal2json_order() {
        let o = Options { include_xids: true, include_lsn: true, include_timestamp: true, ..Options::default() };
        let h = Head { xid: 7, end_lsn: 0x1_0000_0010, timestamp: "2026-01-01 00:00:00+00", origin: 0 };
        let t = text(|b| header(b, Ws::new(false), &o, &h));
        assert_eq!(t, r#"{"xid":7,"nextlsn":"1/10","timestamp":"2026-01-01 00:00:00+00","change":["#);
        let t = text(|b| header(b, Ws::new(true), &Options::default(), &h));
        assert_eq!(t, "{\n\t\"change\": [");
    }

    #[test]
    fn documents_assemble_to_json() {
        for pretty in [false, true] {
            for chunked in [false, true] {
                let ws = Ws::new(pretty);
                let mut doc = Vec::new();
                header(&mut doc, ws, &Options::default(), &Head { xid: 1, end_lsn: 0, timestamp: "", origin: 0 });
                message(&mut doc, ws, chunked, Some(1), "p", br#""a""#);
                message(&mut doc, ws, chunked, Some(2), "p", br#""b""#);
                footer(&mut doc, ws, chunked);
                let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
                assert_eq!(v["change"][1]["content"], "b");
                assert_eq!(v["change"][0]["kind"], "message");
                assert_eq!(v["change"][0]["transactional"], true);
            }
        }
        let solo = text(|b| message(b, Ws::new(false), false, None, "p", b"\"c\""));
        assert_eq!(solo, r#"{"change":[{"kind":"message","transactional":false,"prefix":"p","content":"c"}]}"#);
        let empty = text(|b| {
            header(b, Ws::new(false), &Options::default(), &Head { xid: 1, end_lsn: 0, timestamp: "", origin: 0 });
            footer(b, Ws::new(false), false)
        });
        assert_eq!(empty, r#"{"change":[]}"#);
    }
}
