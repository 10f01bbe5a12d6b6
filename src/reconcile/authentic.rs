//! Which `logical_ext.reconcile` messages are reconcile documents: the same
//! voucher as DDL events (`ddl/authentic.rs`, docs/SECURITY.md).
//! `pg_logical_emit_message` is PUBLIC, so the prefix proves nothing; a row
//! of the superuser-owned user catalog table `logical_ext.reconcile_log`,
//! written by the same top-level transaction with the SHA-256 of the
//! content, does. Only `publisher.rs` writes such rows, and only for content
//! it computed itself from the table as the calling role may read it, so a
//! document never carries rows its caller could not read or made up.

use super::document::ReconcileDoc;
use crate::ffi::catalog::{self, Value};
use sha2::{Digest as _, Sha256};

/// The document a transactional message of top-level transaction `xid`
/// carries, if authentic. Never raises an ERROR for what a message holds.
pub(crate) fn authenticate(content: &[u8], xid: u32) -> Option<ReconcileDoc> {
    let doc = ReconcileDoc::from_json(content)?;
    let row = catalog::trusted_row(c"logical_ext", c"reconcile_log", c"id", doc.log_id?, &[c"capture_xid", c"digest"])?;
    let [Some(Value::Int8(capture_xid)), Some(Value::Bytea(vouched))] = row.as_slice() else {
        return None;
    };
    let same_txn = *capture_xid as u32 == xid;
    (same_txn && *vouched == Sha256::digest(content).as_slice()).then_some(doc)
}
