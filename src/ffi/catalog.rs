//! Reading one row of a table the extension owns, by its `bigint` key, under
//! the current catalog snapshot — the historic one while a logical decoding
//! callback runs. Only tables PostgreSQL lets a decoder read qualify: a
//! `user_catalog_table` owned by a superuser (so no ordinary role can have
//! created or filled it). Nothing here raises an ERROR for what a row
//! contains.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;

/// The OID of `schema.table`, if both exist.
fn relation(schema: &CStr, table: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups by name; missing objects give InvalidOid.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(schema.as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(table.as_ptr(), nsp);
        (relid != pg_sys::InvalidOid).then_some(relid)
    }
}

/// Whether `schema.table` exists and has every column of `columns`.
pub(crate) fn has_columns(schema: &CStr, table: &CStr, columns: &[&CStr]) -> bool {
    relation(schema, table).is_some_and(|relid| {
        // SAFETY: a syscache lookup; a missing column gives InvalidAttrNumber.
        columns.iter().all(|c| unsafe { pg_sys::get_attnum(relid, c.as_ptr()) } > 0)
    })
}

/// Whether `schema.table` is an ordinary table owned by a superuser: what
/// CREATE EXTENSION made, and nothing an ordinary role can have put under
/// that name (a view, a function behind it, a table of its own). Check this
/// before reading a table of the extension's by name with elevated rights
/// in a database where the extension may not be installed.
pub(crate) fn superuser_table(schema: &CStr, table: &CStr) -> bool {
    let Some(relid) = relation(schema, table) else { return false };
    // SAFETY: try_relation_open gives NULL for a relation dropped since the
    // lookup; an open relation's rd_rel is valid until it is closed here.
    unsafe {
        let rel = pg_sys::try_relation_open(relid, pg_sys::AccessShareLock as i32);
        if rel.is_null() {
            return false;
        }
        let form = &*(*rel).rd_rel;
        let ok = form.relkind as u8 == pg_sys::RELKIND_RELATION && pg_sys::superuser_arg(form.relowner);
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as i32);
        ok
    }
}

/// A value of a column read by [`trusted_row`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// `bigint` or `xid8`.
    Int8(i64),
    Bytea(Vec<u8>),
    Bool(bool),
}

/// The `columns` of the row of `schema.table` whose `key_column` (`bigint`,
/// the primary key) equals `key`; `None` when the table is missing, is not a
/// superuser-owned user catalog table, lacks a column, or has no such row.
/// A NULL, or a column of another type, is `None` in the result.
pub(crate) fn trusted_row(
    schema: &CStr,
    table: &CStr,
    key_column: &CStr,
    key: i64,
    columns: &[&CStr],
) -> Option<Vec<Option<Value>>> {
    let relid = relation(schema, table)?;
    // SAFETY: the relation is opened and closed here, kept locked in
    // AccessShareLock meanwhile; `scan` reads only what PostgreSQL hands out
    // for it.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as i32);
        let row = scan(rel, key_column, key, columns);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        row
    }
}

/// # Safety
/// `rel` must be open.
unsafe fn scan(rel: pg_sys::Relation, key_column: &CStr, key: i64, columns: &[&CStr]) -> Option<Vec<Option<Value>>> {
    // SAFETY: per the contract; the scan runs under the catalog snapshot
    // (systable_beginscan with a NULL snapshot) and is ended on every path
    // after it began; the tuple is deformed with its own descriptor.
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
        let key_att = pg_sys::get_attnum(relid, key_column.as_ptr());
        let atts: Vec<i16> = columns.iter().map(|c| pg_sys::get_attnum(relid, c.as_ptr())).collect();
        if key_att <= 0 || atts.iter().any(|&a| a <= 0) {
            return None;
        }
        pg_sys::RelationGetIndexList(rel);
        let index = (*rel).rd_pkindex;
        let mut scankey: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut scankey,
            key_att,
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::RegProcedure::from(pg_sys::F_INT8EQ),
            pg_sys::Datum::from(key),
        );
        let use_index = index != pg_sys::InvalidOid;
        let scan = pg_sys::systable_beginscan(rel, index, use_index, std::ptr::null_mut(), 1, &mut scankey);
        let tuple = pg_sys::systable_getnext(scan);
        let row = (!tuple.is_null()).then(|| {
            let desc = (*rel).rd_att;
            let natts = (*desc).natts as usize;
            let mut values = vec![pg_sys::Datum::from(0usize); natts];
            let mut nulls = vec![true; natts];
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            atts.iter()
                .map(|&a| {
                    let i = a as usize - 1;
                    if nulls[i] {
                        return None;
                    }
                    match (*(*desc).attrs.as_ptr().add(i)).atttypid {
                        pg_sys::INT8OID | pg_sys::XID8OID => Some(Value::Int8(values[i].value() as i64)),
                        pg_sys::BYTEAOID => Vec::<u8>::from_datum(values[i], false).map(Value::Bytea),
                        pg_sys::BOOLOID => Some(Value::Bool(values[i].value() != 0)),
                        _ => None,
                    }
                })
                .collect()
        });
        pg_sys::systable_endscan(scan);
        row
    }
}
