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
use pgrx::pg_sys;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};

/// SHA-256 of a message's content, as `ddl_log.digest` stores it.
pub(crate) fn digest(content: &[u8]) -> Vec<u8> {
    Sha256::digest(content).to_vec()
}

/// What `ddl_log` says about one row: the capturing transaction and digest.
struct Voucher {
    capture_xid: u64,
    digest: Vec<u8>,
}

/// The DDL event a transactional message of transaction `xid` (top-level)
/// carries, if the message is authentic (see the module notes).
pub(crate) fn authenticate(content: &[u8], xid: u32) -> Option<DdlEvent> {
    let event = DdlEvent::from_json(content)?;
    let voucher = find_voucher(event.log_id?)?;
    // xid8 → the 32-bit xid the reorder buffer reports.
    let same_txn = voucher.capture_xid as u32 == xid;
    (same_txn && voucher.digest == digest(content)).then_some(event)
}

/// Whether this database's `logical_ext.ddl_log` can vouch for DDL messages
/// (0.2.0's columns are there). With a 0.2.0 library and 0.1.0 SQL objects
/// (`ALTER EXTENSION logical_ext UPDATE` not run yet) it cannot, and capture
/// refuses to replicate rather than fail the user's DDL.
pub(crate) fn ddl_log_ready() -> bool {
    // SAFETY: catalog lookups by name; missing objects give InvalidOid.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"logical_ext".as_ptr(), true);
        let relid = if nsp == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(c"ddl_log".as_ptr(), nsp)
        };
        relid != pg_sys::InvalidOid
            && pg_sys::get_attnum(relid, c"digest".as_ptr()) > 0
            && pg_sys::get_attnum(relid, c"capture_xid".as_ptr()) > 0
    }
}

/// Look up `ddl_log` row `id` under the current catalog snapshot (the
/// historic one while decoding). `None` when the extension is not installed
/// in this database, its table is not what the extension made (owned by a
/// superuser, a user catalog table), or there is no such row.
fn find_voucher(id: i64) -> Option<Voucher> {
    // SAFETY: catalog lookups and an index scan of a table we keep locked in
    // AccessShareLock for the duration; every pointer read comes from
    // PostgreSQL for the open relation; the relation is closed on every path.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"logical_ext".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(c"ddl_log".as_ptr(), nsp);
        if relid == pg_sys::InvalidOid {
            return None;
        }
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as i32);
        let found = scan(rel, id);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        found
    }
}

/// # Safety
/// `rel` must be open.
unsafe fn scan(rel: pg_sys::Relation, id: i64) -> Option<Voucher> {
    // SAFETY: per the contract; see `find_voucher`.
    unsafe {
        let form = &*(*rel).rd_rel;
        if form.relkind as u8 != pg_sys::RELKIND_RELATION || !pg_sys::superuser_arg(form.relowner) {
            return None;
        }
        let options = (*rel).rd_options as *const pg_sys::StdRdOptions;
        if options.is_null() || !(*options).user_catalog_table {
            return None;
        }
        let relid = (*rel).rd_id;
        let attnum = |name: &std::ffi::CStr| pg_sys::get_attnum(relid, name.as_ptr());
        let (id_att, xid_att, digest_att) = (attnum(c"id"), attnum(c"capture_xid"), attnum(c"digest"));
        if id_att <= 0 || xid_att <= 0 || digest_att <= 0 {
            return None;
        }
        pg_sys::RelationGetIndexList(rel);
        let index = (*rel).rd_pkindex;
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut key,
            id_att,
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::RegProcedure::from(pg_sys::F_INT8EQ),
            pg_sys::Datum::from(id),
        );
        let use_index = index != pg_sys::InvalidOid;
        let scan = pg_sys::systable_beginscan(rel, index, use_index, std::ptr::null_mut(), 1, &mut key);
        let tuple = pg_sys::systable_getnext(scan);
        let found = if tuple.is_null() {
            None
        } else {
            let desc = (*rel).rd_att;
            let natts = (*desc).natts as usize;
            let mut values = vec![pg_sys::Datum::from(0usize); natts];
            let mut nulls = vec![true; natts];
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let (x, d) = (xid_att as usize - 1, digest_att as usize - 1);
            if nulls[x] || nulls[d] {
                None
            } else {
                // xid8 is a pass-by-value 64-bit integer; the digest a short bytea.
                let capture_xid = values[x].value() as u64;
                Vec::<u8>::from_datum(values[d], false).map(|digest| Voucher { capture_xid, digest })
            }
        };
        pg_sys::systable_endscan(scan);
        found
    }
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
