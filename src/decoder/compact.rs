//! The compact documents of option `compact` (docs/FORMAT.md, "Compact
//! documents"): logical_ext's internal format between its own nodes.
//!
//! Design notes
//! - Still JSON text, one document per output row, so everything around it
//!   (the 1 GB limit, the walsender's writes, the worker's reader) is
//!   unchanged; what goes is what every row repeated: column names, the
//!   relation's names, per-row `lsn`/`timestamp`.
//! - A relation document (`R`) describes a relation once per decoding
//!   session, under its OID as id: its names, the columns shown (in order,
//!   after column lists) and which of them form the replica-identity key.
//!   `stream.rs` writes it before the first compact row of that relation,
//!   again after the relation's shape was rebuilt (its relcache
//!   invalidation, per relation), and again when the shown columns change.
//! - A row is then an array of values by position. A position without a
//!   value (an unchanged TOASTed column of the new row, a column outside the
//!   old row's identity) is `{}`: values are never objects (every
//!   non-scalar type is a string), so `{}` never collides with a value, and
//!   `null` stays SQL NULL.
//! - The old row's identity is `key` (the key columns' values, in order)
//!   when it is exactly the key, else `old` (every position, `{}` where not
//!   part of it: REPLICA IDENTITY FULL).
//! - In a block of a streamed transaction (`S` … `E`) every compact
//!   document also carries the block's tag, `xid` (and `subxid` on rows
//!   made by a subtransaction), right after `action`, as the full documents
//!   do: the subscriber spools them under it. Relation documents are then
//!   tracked per streamed transaction instead of per session
//!   (`stream.rs`), so that its spooled documents describe themselves.
//! - The functions here are pure (values are pushed by a callback), so the
//!   encoder is unit-tested against the worker's reader
//!   (`apply/protocol.rs`).

use super::json;

/// First byte of a message that carries several documents (option
/// `batch`; ASCII's record separator): then each document follows as its
/// length (8 lowercase hexadecimal digits) and its bytes. The message stays
/// text (the SQL functions return it as such), and a document itself
/// always starts with `{`.
pub(crate) const BATCH_MARK: u8 = 0x1E;

/// A batch's bytes before the walsender writes it (64 kB: as few messages
/// as COPY's buffers, small enough that the subscriber starts at once).
pub(crate) const BATCH_BYTES: usize = 64 << 10;

/// Append `doc` to the batch in `batch` (empty: a new batch).
pub(crate) fn batch_push(batch: &mut Vec<u8>, doc: &[u8]) {
    if batch.is_empty() {
        batch.push(BATCH_MARK);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = u32::try_from(doc.len()).expect("a document is under 1 GB (limit.rs)");
    batch.extend((0..8).rev().map(|i| HEX[(len >> (4 * i)) as usize & 0xf]));
    batch.extend_from_slice(doc);
}

/// One position of a row array.
pub(crate) enum Cell<V> {
    /// No value sent (unchanged TOAST, or not part of the identity): `{}`.
    Absent,
    Null,
    Value(V),
}

/// `{"action":"R",["xid":…,]"relid":…,"schema":…,"table":…,"names":[…],"types":[…],
/// "identity_key":[…]}`: `columns` are the shown columns in order, as
/// (name, type as a JSON string); `key` the positions (into `columns`) of the
/// replica-identity key; `block` the streamed block's (xid, subxid).
pub(crate) fn push_relation<'c>(
    buf: &mut Vec<u8>,
    block: Option<(u32, u32)>,
    relid: u32,
    schema: &str,
    table: &str,
    columns: impl Iterator<Item = (&'c str, &'c [u8])> + Clone,
    key: &[usize],
) {
    buf.extend_from_slice(b"{\"action\":\"R\"");
    push_block_tag(buf, block);
    buf.extend_from_slice(b",\"relid\":");
    json::push_int(buf, i64::from(relid));
    buf.extend_from_slice(b",\"schema\":");
    json::push_str(buf, schema.as_bytes());
    buf.extend_from_slice(b",\"table\":");
    json::push_str(buf, table.as_bytes());
    buf.extend_from_slice(b",\"names\":[");
    for (i, (name, _)) in columns.clone().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        json::push_str(buf, name.as_bytes());
    }
    buf.extend_from_slice(b"],\"types\":[");
    for (i, (_, type_json)) in columns.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(type_json);
    }
    buf.extend_from_slice(b"],\"identity_key\":[");
    for (i, k) in key.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        json::push_int(buf, *k as i64);
    }
    buf.extend_from_slice(b"]}");
}

/// `{"action":"I"|"U"|"D",["xid":…,["subxid":…,]]"relid":…` (the caller
/// adds the arrays and `}`).
pub(crate) fn push_row_head(buf: &mut Vec<u8>, block: Option<(u32, u32)>, action: u8, relid: u32) {
    buf.extend_from_slice(b"{\"action\":\"");
    buf.push(action);
    buf.push(b'"');
    push_block_tag(buf, block);
    buf.extend_from_slice(b",\"relid\":");
    json::push_int(buf, i64::from(relid));
}

/// A streamed block's tag, (xid, subxid): `,"xid":…` then `,"subxid":…`
/// when a subtransaction (not 0, not the xid itself) made the change.
fn push_block_tag(buf: &mut Vec<u8>, block: Option<(u32, u32)>) {
    let Some((xid, subxid)) = block else { return };
    buf.extend_from_slice(b",\"xid\":");
    json::push_int(buf, i64::from(xid));
    if subxid != 0 && subxid != xid {
        buf.extend_from_slice(b",\"subxid\":");
        json::push_int(buf, i64::from(subxid));
    }
}

/// `,"<field>":[cell,…]`, each value written by `push`.
pub(crate) fn push_cells<V>(
    buf: &mut Vec<u8>,
    field: &str,
    cells: impl Iterator<Item = Cell<V>>,
    mut push: impl FnMut(&mut Vec<u8>, V),
) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(field.as_bytes());
    buf.extend_from_slice(b"\":[");
    for (i, c) in cells.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        match c {
            Cell::Absent => buf.extend_from_slice(b"{}"),
            Cell::Null => buf.extend_from_slice(b"null"),
            Cell::Value(v) => push(buf, v),
        }
    }
    buf.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_document() {
        let mut b = Vec::new();
        let cols = [("id", &b"\"integer\""[..]), ("n\"ame", &b"\"text\""[..])];
        push_relation(&mut b, None, 16385, "public", "t", cols.iter().copied(), &[0]);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"action":"R","relid":16385,"schema":"public","table":"t","names":["id","n\"ame"],"types":["integer","text"],"identity_key":[0]}"#
        );
    }

    #[test]
    fn row_document() {
        let mut b = Vec::new();
        push_row_head(&mut b, None, b'U', 7);
        let cells = vec![Cell::Value(1), Cell::Null, Cell::Absent];
        push_cells(&mut b, "new", cells.into_iter(), |b, v: i64| json::push_int(b, v));
        push_cells(&mut b, "key", std::iter::once(Cell::Value(1)), |b, v: i64| json::push_int(b, v));
        b.push(b'}');
        assert_eq!(String::from_utf8(b).unwrap(), r#"{"action":"U","relid":7,"new":[1,null,{}],"key":[1]}"#);
    }

    #[test]
    fn block_tags() {
        let mut b = Vec::new();
        push_row_head(&mut b, Some((742, 743)), b'I', 7);
        assert_eq!(String::from_utf8(b).unwrap(), r#"{"action":"I","xid":742,"subxid":743,"relid":7"#);
        let mut b = Vec::new();
        push_row_head(&mut b, Some((742, 742)), b'D', 7);
        assert_eq!(String::from_utf8(b).unwrap(), r#"{"action":"D","xid":742,"relid":7"#);
        let mut b = Vec::new();
        push_relation(&mut b, Some((742, 0)), 7, "s", "t", std::iter::empty(), &[]);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"action":"R","xid":742,"relid":7,"schema":"s","table":"t","names":[],"types":[],"identity_key":[]}"#
        );
    }
}
