//! `SEQ` documents: the sequence capture's messages (`sequences/`), when
//! authentic, printed one document per sequence (docs/FORMAT.md, "SEQ
//! documents").
//!
//! Authentic as DDL events are (`ddl/authentic.rs`): anyone may write a
//! message under the prefix, but only the capture worker writes
//! `logical_ext.replicated_sequence`, a superuser-owned user catalog table
//! the plugin reads under the decoding snapshot. A message is a sequence
//! capture only when, for every sequence it lists, that table's row was
//! written by the same top-level transaction with exactly the values the
//! message carries; anything else stays an `M` message. Nothing here raises
//! an ERROR for what a message contains.

use crate::ffi::catalog::{self, Value};
use crate::sequences::message::{Captured, Entry};

/// The sequences a transactional message of transaction `xid` carries, if
/// it is an authentic capture.
pub(super) fn authenticate(content: &[u8], xid: u32) -> Option<Vec<Entry>> {
    let captured = Captured::from_json(content)?;
    for e in &captured.sequences {
        let row = catalog::trusted_row(
            c"logical_ext",
            c"replicated_sequence",
            c"id",
            e.id,
            &[c"sent_xid", c"sent_value", c"sent_is_called"],
        )?;
        let [Some(Value::Int8(sent_xid)), Some(Value::Int8(value)), Some(Value::Bool(is_called))] = row.as_slice()
        else {
            return None;
        };
        // xid8 → the 32-bit xid the reorder buffer reports.
        if *sent_xid as u32 != xid || *value != e.last_value || *is_called != e.is_called {
            return None;
        }
    }
    Some(captured.sequences)
}

/// One `SEQ` document's own fields (after the transaction fields and
/// `lsn`), appended to `b`.
pub(super) fn push_fields(b: &mut Vec<u8>, e: &Entry) {
    b.extend_from_slice(b",\"schema\":");
    super::json::push_str(b, e.schema.as_bytes());
    b.extend_from_slice(b",\"name\":");
    super::json::push_str(b, e.name.as_bytes());
    b.extend_from_slice(b",\"last_value\":");
    super::json::push_int(b, e.last_value);
    b.extend_from_slice(if e.is_called { b",\"is_called\":true" } else { b",\"is_called\":false" });
    b.extend_from_slice(b",\"increment\":");
    super::json::push_int(b, e.increment);
}

#[cfg(test)]
mod tests {
    use super::push_fields;
    use crate::sequences::message::{Entry, SeqDoc};

    #[test]
    fn the_document_reads_back() {
        let e = Entry {
            id: 1,
            schema: "s\"q".into(),
            name: "t_id_seq".into(),
            last_value: i64::MIN,
            is_called: true,
            increment: -3,
            publications: vec![],
            explicit: true,
        };
        let mut b = b"{\"action\":\"SEQ\"".to_vec();
        push_fields(&mut b, &e);
        b.push(b'}');
        let d = SeqDoc::from_json(&b).unwrap();
        assert_eq!((d.schema.as_str(), d.last_value, d.is_called, d.increment), ("s\"q", i64::MIN, true, -3));
    }
}
