//! Which logical messages are DDL events. `pg_logical_emit_message` is
//! executable by PUBLIC, so the prefix `logical_ext.ddl` proves nothing: any
//! role could write a message that looks like captured DDL. What no ordinary
//! role can write is a row of `logical_ext.ddl_log` (owned by a superuser,
//! no INSERT for anyone else): capture (`capture::publish`) writes one before
//! the message, in the same transaction, holding the transaction's id and
//! the SHA-256 of the message's content.
//!
//! `ddl_log` is a `user_catalog_table`, so the output plugin may read it
//! under the decoding (historic) snapshot: it sees the row exactly as of the
//! message's place in the transaction — including a row written by the
//! transaction being decoded — and the slot's `catalog_xmin` keeps vacuum
//! from removing rows the slot still needs. A message is a DDL event only
//! when its `log_id` row exists in the superuser-owned `logical_ext.ddl_log`,
//! was written by the same top-level transaction, and its digest matches the
//! content byte for byte; anything else stays an ordinary `M` message.
//! Nothing here raises an ERROR for what a message contains: a wedged slot
//! would be the attacker's win.

use super::event::DdlEvent;
use crate::ffi::catalog::{self, Value};
use sha2::{Digest, Sha256};

/// SHA-256 of a message's content, as `ddl_log.digest` stores it.
pub(crate) fn digest(content: &[u8]) -> Vec<u8> {
    Sha256::digest(content).to_vec()
}

/// The DDL event a transactional message of transaction `xid` (top-level)
/// carries, if the message is authentic (see the module notes).
pub(crate) fn authenticate(content: &[u8], xid: u32) -> Option<DdlEvent> {
    let event = DdlEvent::from_json(content)?;
    // Under the decoding snapshot: `None` when the extension is not
    // installed in this database, its table is not what the extension made
    // (a superuser-owned user catalog table), or there is no such row.
    let row = catalog::trusted_row(c"logical_ext", c"ddl_log", c"id", event.log_id?, &[c"capture_xid", c"digest"])?;
    let [Some(Value::Int8(capture_xid)), Some(Value::Bytea(vouched))] = row.as_slice() else {
        return None;
    };
    // xid8 → the 32-bit xid the reorder buffer reports.
    let same_txn = *capture_xid as u32 == xid;
    (same_txn && *vouched == digest(content)).then_some(event)
}

/// Whether this database's `logical_ext.ddl_log` can vouch for DDL messages
/// (0.2.0's columns are there). With a 0.2.0 library and 0.1.0 SQL objects
/// (`ALTER EXTENSION logical_ext UPDATE` not run yet) it cannot, and capture
/// refuses to replicate rather than fail the user's DDL.
pub(crate) fn ddl_log_ready() -> bool {
    catalog::has_columns(c"logical_ext", c"ddl_log", &[c"digest", c"capture_xid"])
}

#[cfg(test)]
mod tests {
    use super::digest;

    #[test]
    fn digest_is_sha256() {
        let d = digest(b"abc");
        assert_eq!(d.len(), 32);
        assert_eq!(d[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
