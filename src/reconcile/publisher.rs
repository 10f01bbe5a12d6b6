//! Publisher side: `logical_ext.reconcile_verify` and
//! `logical_ext.reconcile_repair`, called by a subscriber's `verify_table`
//! / `repair_table` over the subscription's connection (as its role).
//!
//! Each call, in one transaction, reads a key range of the rows the
//! publications replicate (their row filters OR-ed as pgoutput does, their
//! column list, generated columns left out) and writes what it read as a
//! transactional logical message (`document.rs`), vouched for by a
//! `logical_ext.reconcile_log` row (`authentic.rs`). The message is decoded
//! at the transaction's commit, so the subscriber's apply worker meets it
//! after every transaction that committed before it and before every later
//! one: both sides look at the same point of the change stream.
//!
//! For that to hold, the rows read must include every write that commits
//! before this transaction does. A snapshot alone does not give it (a writer
//! committing between the snapshot and our commit is in the stream before the
//! message, yet invisible to the read), so the call first takes a SHARE lock
//! on the table: it waits for the writers in progress (which leave the
//! proc array before they release their locks, so the fresh snapshot taken
//! after the lock sees them), and keeps new writers out until its commit.
//! Readers are never blocked; writers wait at most one chunk's read (the
//! lock is held for one call), and the wait for the lock is bounded by
//! `lock_timeout_ms` (55P03; the subscriber retries). docs/RECONCILE.md.
//!
//! The caller (the subscription's role) must be allowed to SELECT the table;
//! EXECUTE is granted by the operator (REVOKEd from PUBLIC), as taking the
//! lock is part of what they do. The rows are read as the **table's owner**
//! under `SECURITY_RESTRICTED_OPERATION` with `search_path = pg_catalog,
//! pg_temp` (the types' output functions and the row filter are the owner's
//! code, never run as the caller), operators schema-qualified. Key columns
//! must be of built-in, non-domain types (their comparisons are then
//! PostgreSQL's own code). A call refuses to run inside a transaction block
//! (the SHARE lock must be held for one short statement) and to read more
//! than [`MAX_ROWS`] rows or [`MAX_KEYS`] keys.
//!
//! The subscriber's nonce and relation are passed through: the subscriber
//! acts on a document only when they match a request it recorded itself
//! (`requests.rs`), so choosing them here gains nothing.

use super::digest::{Coding, Digest, row_hash};
use super::document::{Op, PREFIX, Range, ReconcileDoc, RepairRow};
use super::fail;
use crate::apply::sync::remote::combine_filters;
use crate::apply::walrcv::quote_ident;
use crate::ffi;
use crate::ffi::rowscan::{self, KeyTexts, RowScan};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use sha2::{Digest as _, Sha256};
use std::ffi::CString;
use std::time::Instant;
/// Most rows one `reconcile_verify` call reads (`max_rows`).
pub(crate) const MAX_ROWS: i32 = 100_000;
/// Most keys one `reconcile_repair` call reads.
pub(crate) const MAX_KEYS: usize = 1_000;
/// The first OID of objects created after `initdb` (`FirstNormalObjectId`).
pub(crate) const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// The published part of a table, as this node replicates it.
struct Published {
    relid: pg_sys::Oid,
    owner: pg_sys::Oid,
    schema: String,
    table: String,
    /// `"schema"."table"`.
    qualified: String,
    /// Requested columns, all published, with their types here.
    columns: Vec<(String, String)>,
    /// Their type OIDs here.
    column_oids: Vec<u32>,
    /// Key columns (a subset of `columns`), with their types here.
    keys: Vec<(String, String)>,
    filter: Option<String>,
}

impl Published {
    fn resolve(schema: &str, table: &str, publications: &[String], columns: &[String], keys: &[String]) -> Published {
        // SAFETY: reads the state of the current transaction.
        if unsafe { pg_sys::IsTransactionBlock() } {
            fail(
                PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
                "reconcile_verify and reconcile_repair cannot run inside a transaction block",
                "They hold a SHARE lock on the table until their transaction ends: call them as single statements, as verify_table and repair_table do.",
            );
        }
        // SAFETY: reads the isolation level of the current transaction.
        if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
            fail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "reconcile reads need READ COMMITTED on the publisher",
                "Unset default_transaction_isolation for the subscription's role on the publisher.",
            );
        }
        let found = Spi::connect(|c| {
            let rows = c.select(
                "SELECT c.oid, c.relkind::text, c.relowner FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                None,
                &[schema.into(), table.into()],
            )?;
            rows.map(|r| Ok((r.get::<pg_sys::Oid>(1)?, r.get::<String>(2)?, r.get::<pg_sys::Oid>(3)?)))
                .next()
                .transpose()
        })
        .unwrap_or_else(|e: pgrx::spi::SpiError| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
        let Some((Some(relid), Some(relkind), Some(owner))) = found else {
            fail(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("table {schema}.{table} does not exist on the publisher"),
                "verify_table compares a table with the table of the same schema and name on the publisher.",
            )
        };
        if relkind != "r" {
            fail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("{schema}.{table} is not a plain table on the publisher"),
                "Verify each partition (leaf table) instead.",
            );
        }
        // SAFETY: a privilege check of the current user on an existing relation.
        let acl =
            unsafe { pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) };
        if acl != pg_sys::AclResult::ACLCHECK_OK {
            fail(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for table {schema}.{table}"),
                "The subscription's role needs SELECT on the table, as for its initial copy.",
            );
        }
        let published: Vec<(String, String, u32, String)> = Spi::connect(|c| {
            let rows = c.select(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid, t.typtype::text \
                 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                 AND a.attname IN (SELECT pg_catalog.unnest(pt.attnames) FROM pg_catalog.pg_publication_tables pt \
                                    WHERE pt.pubname = ANY ($2) AND pt.schemaname = $3 AND pt.tablename = $4) \
                 ORDER BY a.attnum",
                None,
                &[relid.into(), publications.to_vec().into(), schema.into(), table.into()],
            )?;
            rows.map(|r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<pg_sys::Oid>(3)?.map_or(0, |o| o.to_u32()),
                    r.get::<String>(4)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
        if published.is_empty() {
            fail(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("table {schema}.{table} is not published by the subscription's publications"),
                "Verify a table the subscription replicates.",
            );
        }
        let pick = |names: &[String], what: &str| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| {
                    published.iter().find(|(p, ..)| p == n).map(|(p, t, ..)| (p.clone(), t.clone())).unwrap_or_else(
                        || {
                            fail(
                                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                                format!("{what} \"{n}\" of {schema}.{table} is not published"),
                                "Compare only columns the publications replicate.",
                            )
                        },
                    )
                })
                .collect()
        };
        let columns = pick(columns, "column");
        let column_oids = columns
            .iter()
            .map(|(n, _)| published.iter().find(|(p, ..)| p == n).map_or(0, |(_, _, oid, _)| *oid))
            .collect();
        let keys = pick(keys, "key column");
        for (name, ty) in &keys {
            let (_, _, oid, typtype) = published.iter().find(|(p, ..)| p == name).expect("picked from published");
            if let Some(why) = unsupported_key_type(*oid, typtype) {
                fail(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("key column \"{name}\" of {schema}.{table} has type {ty}, {why}"),
                    "Reconciliation compares key ranges with PostgreSQL's own operators only: the key's columns must have built-in base types. Resynchronize such a table instead (logical_ext.resync_table).",
                );
            }
        }
        if columns.is_empty() {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "no column to compare", "");
        }
        let filters: Vec<Option<String>> = Spi::connect(|c| {
            let rows = c.select(
                "SELECT pt.rowfilter FROM pg_catalog.pg_publication_tables pt \
                 WHERE pt.pubname = ANY ($1) AND pt.schemaname = $2 AND pt.tablename = $3",
                None,
                &[publications.to_vec().into(), schema.into(), table.into()],
            )?;
            rows.map(|r| r.get::<String>(1)).collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
        Published {
            relid,
            owner,
            schema: schema.to_string(),
            table: table.to_string(),
            qualified: format!("{}.{}", quote_ident(schema), quote_ident(table)),
            columns,
            column_oids,
            keys,
            filter: combine_filters(&filters),
        }
    }

    /// Keep writers out until this transaction commits (see the notes).
    fn lock(&self, lock_timeout_ms: i32) {
        Spi::run_with_args(
            "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
            &[format!("{}ms", lock_timeout_ms.max(1)).into()],
        )
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
        // SAFETY: an existing relation; the lock is held until the end of
        // the transaction; a lock timeout raises 55P03 to the caller.
        unsafe { pg_sys::LockRelationOid(self.relid, pg_sys::ShareLock as pg_sys::LOCKMODE) };
    }

    /// `WHERE` of the rows of `range` that the publications replicate;
    /// bounds are parameters from `$first` on (texts cast to the key types).
    fn predicate(&self, range: &Range, first: usize) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.filter {
            parts.push(format!("({f})"));
        }
        parts.extend(key_bounds(&self.keys, range, first));
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
    }
}

/// Why a key column's type cannot be compared across nodes (`None`: it
/// can): domains (their CHECK and the base type's operators are found by
/// the domain's definition) and types created after `initdb` (their
/// operators are some role's code). Pure; unit-tested.
pub(crate) fn unsupported_key_type(type_oid: u32, typtype: &str) -> Option<&'static str> {
    if typtype == "d" {
        Some("a domain")
    } else if type_oid >= FIRST_NORMAL_OBJECT_ID {
        Some("not a built-in type")
    } else if typtype != "b" {
        Some("not a base type")
    } else {
        None
    }
}

/// Read as the table's owner, restricted, `search_path` pinned.
fn as_owner(p: &Published) -> ffi::identity::AsRole {
    ffi::identity::AsRole::become_role_restricted(p.owner)
}

/// The key-range conditions of `range` over `keys` (name, type); bound
/// values are parameters `$first..`, lower bound first. Shared with the
/// subscriber's side (`apply.rs`), which reads the same range.
pub(crate) fn key_bounds(keys: &[(String, String)], range: &Range, first: usize) -> Vec<String> {
    let cols = keys.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let mut n = first;
    let mut tuple = || {
        let t = keys
            .iter()
            .map(|(_, ty)| {
                let p = format!("${n}::{ty}");
                n += 1;
                p
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("ROW({t})")
    };
    let mut parts = Vec::new();
    if keys.is_empty() {
        return parts;
    }
    if range.lower.is_some() {
        parts.push(format!("ROW({cols}) OPERATOR(pg_catalog.>) {}", tuple()));
    }
    if range.upper.is_some() {
        parts.push(format!("ROW({cols}) OPERATOR(pg_catalog.<=) {}", tuple()));
    }
    parts
}

/// The bound values of `range`, in `key_bounds`'s parameter order.
pub(crate) fn bound_args(range: &Range) -> Vec<String> {
    range.lower.iter().chain(range.upper.iter()).flatten().cloned().collect()
}

/// `ROW(c1, c2, ...)::text`: a row's canonical text (`digest.rs`).
pub(crate) fn row_text_expr(columns: &[(String, String)]) -> String {
    format!("ROW({})::text", columns.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", "))
}

/// Write `doc` as a vouched-for transactional message; its position.
fn emit(doc: &mut ReconcileDoc) -> u64 {
    let as_owner = ffi::identity::AsRole::bootstrap_superuser();
    let id = Spi::get_one::<i64>(
        "SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('logical_ext.reconcile_log', 'id'))",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "could not number a reconcile_log row", ""));
    doc.log_id = Some(id);
    let content = doc.to_json();
    let digest = Sha256::digest(content.as_bytes()).to_vec();
    Spi::run_with_args(
        "INSERT INTO logical_ext.reconcile_log (id, capture_xid, digest) OVERRIDING SYSTEM VALUE \
         VALUES ($1, pg_catalog.pg_current_xact_id(), $2)",
        &[id.into(), digest.into()],
    )
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    drop(as_owner);
    // The row is visible to the decoding snapshot at the message's place.
    // SAFETY: inside a transaction, as every SQL function call is.
    unsafe { pg_sys::CommandCounterIncrement() };
    let prefix = CString::new(PREFIX).expect("static prefix");
    ffi::log_logical_message(&prefix, content.as_bytes(), true)
}

fn args(values: &[String]) -> Vec<DatumWithOid<'static>> {
    values.iter().map(|v| v.clone().into()).collect()
}

/// Digest (and with `per_key`, each key's hash) of the published rows of
/// `(lower, upper]`, at most `max_rows` of them (0: all) in key order, sent
/// down the stream to `subscription`'s apply worker. Returns
/// `{"rows": n, "upper": [...] | null, "complete": bool, "lsn": "X/Y"}`:
/// the range actually covered ends at `upper`, and `complete` says the
/// requested range was covered in full.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn reconcile_verify(
    subscription: &str,
    node: &str,
    nonce: &str,
    run: i64,
    chunk: i32,
    schema: &str,
    table: &str,
    sub_relation: i64,
    publications: Vec<String>,
    columns: Vec<String>,
    keys: Vec<String>,
    codings: Vec<String>,
    lower: Option<Vec<String>>,
    upper: Option<Vec<String>>,
    max_rows: i32,
    per_key: bool,
    lock_timeout_ms: i32,
) -> String {
    if !(0..=MAX_ROWS).contains(&max_rows) {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("max_rows must be between 0 and {MAX_ROWS}"),
            "Smaller chunks keep the table's SHARE lock short.",
        );
    }
    let p = Published::resolve(schema, table, &publications, &columns, &keys);
    let codings = parse_codings(&codings, &p);
    let range = Range { lower, upper };
    for b in [&range.lower, &range.upper].into_iter().flatten() {
        if b.len() != p.keys.len() {
            fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "a bound must give every key column", "");
        }
    }
    let limited = max_rows > 0 && !p.keys.is_empty();
    p.lock(lock_timeout_ms);
    let started = Instant::now();
    let mut sql =
        format!("SELECT {} FROM ONLY {} AS r{}", select_list(&p.columns), p.qualified, p.predicate(&range, 1));
    if limited {
        let order = p.keys.iter().map(|(n, _)| format!("r.{}", quote_ident(n))).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(" ORDER BY {order} LIMIT {max_rows}"));
    }
    let key_columns = key_positions(&p.columns, &p.keys);
    let binary: Vec<bool> = codings.iter().map(|c| *c == Coding::Binary).collect();
    let key_texts = if per_key {
        KeyTexts::Every
    } else if limited {
        KeyTexts::AtRow(max_rows as u64)
    } else {
        KeyTexts::None
    };
    let mut digest = Digest::default();
    let mut hashes = Vec::new();
    let mut last: Option<Vec<String>> = None;
    let bounds = bound_args(&range);
    let owner = as_owner(&p);
    let scan = RowScan { sql: &sql, args: &bounds, binary: &binary, key_columns: &key_columns, key_texts };
    rowscan::scan(&scan, &mut |row, key| {
        let h = row_hash(row);
        digest.add(h);
        if let Some(key) = key {
            if per_key {
                hashes.push((key.clone(), format!("{h:032x}")));
            }
            last = Some(key);
        }
    });
    drop(owner);
    let elapsed_us = started.elapsed().as_micros() as u64;
    let complete = !limited || digest.rows < max_rows as u64;
    let covered = Range { lower: range.lower.clone(), upper: if complete { range.upper.clone() } else { last } };
    let mut doc = ReconcileDoc {
        op: Op::Verify,
        subscription: subscription.to_string(),
        node: node.to_string(),
        nonce: nonce.to_string(),
        run,
        chunk,
        per_key,
        relation: sub_relation as u32,
        schema: p.schema.clone(),
        table: p.table.clone(),
        publications,
        columns: p.columns.iter().map(|(n, _)| n.clone()).collect(),
        keys: p.keys.iter().map(|(n, _)| n.clone()).collect(),
        codings,
        types: p.columns.iter().map(|(_, t)| t.clone()).collect(),
        range: covered.clone(),
        rows: digest.rows,
        digest: digest.sum_hex(),
        hashes,
        repairs: Vec::new(),
        elapsed_us,
        log_id: None,
    };
    let lsn = emit(&mut doc);
    serde_json::json!({
        "rows": digest.rows,
        "upper": covered.upper,
        "complete": complete,
        "lsn": crate::ffi::lsn::Lsn(lsn).to_string(),
        "elapsed_us": elapsed_us,
    })
    .to_string()
}

/// The requested codings, one per compared column; binary only for the
/// types `ffi::rowscan` reads in binary.
fn parse_codings(codings: &[String], p: &Published) -> Vec<Coding> {
    if codings.len() != p.columns.len() {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "codings must give one coding per column", "");
    }
    codings
        .iter()
        .zip(p.columns.iter().zip(&p.column_oids))
        .map(|(c, ((name, ty), oid))| match Coding::parse(c) {
            Some(Coding::Binary) if !rowscan::binary_supported(*oid) => fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("column \"{name}\" has type {ty} on the publisher, which has no binary comparison form"),
                "Both nodes must have the same column types; verify_table chooses the codings.",
            ),
            Some(c) => c,
            None => fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("unknown coding \"{c}\""), ""),
        })
        .collect()
}

/// `r."c1", r."c2", ...`: the compared columns, read by the row scan.
pub(crate) fn select_list(columns: &[(String, String)]) -> String {
    columns.iter().map(|(n, _)| format!("r.{}", quote_ident(n))).collect::<Vec<_>>().join(", ")
}

/// Where each key column is among the compared columns (0-based).
pub(crate) fn key_positions(columns: &[(String, String)], keys: &[(String, String)]) -> Vec<usize> {
    keys.iter().filter_map(|(k, _)| columns.iter().position(|(c, _)| c == k)).collect()
}

/// The publisher's current version of each key of `key_list` (a JSON array
/// of arrays of key texts), sent down the stream to `subscription`'s apply
/// worker, which applies them in commit order. Returns
/// `{"rows": n, "lsn": "X/Y"}`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn reconcile_repair(
    subscription: &str,
    node: &str,
    nonce: &str,
    run: i64,
    batch: i32,
    schema: &str,
    table: &str,
    sub_relation: i64,
    publications: Vec<String>,
    columns: Vec<String>,
    keys: Vec<String>,
    key_list: &str,
    lock_timeout_ms: i32,
) -> String {
    if keys.is_empty() {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{schema}.{table} has no key to repair by"),
            "Give the table a primary key or a replica identity index.",
        );
    }
    let wanted: Vec<Vec<String>> = serde_json::from_str(key_list).unwrap_or_else(|e| {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("key_list is not a JSON array of keys: {e}"), "")
    });
    let p = Published::resolve(schema, table, &publications, &columns, &keys);
    if wanted.len() > MAX_KEYS {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("at most {MAX_KEYS} keys per call"),
            "repair_table sends the keys in batches of that size.",
        );
    }
    if wanted.iter().any(|k| k.len() != p.keys.len()) {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "a key must give every key column", "");
    }
    p.lock(lock_timeout_ms);
    let cols = p.columns.iter().map(|(n, _)| format!("{}::text", quote_ident(n))).collect::<Vec<_>>().join(", ");
    let keycols = p.keys.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let params =
        p.keys.iter().enumerate().map(|(i, (_, ty))| format!("${}::{ty}", i + 1)).collect::<Vec<_>>().join(", ");
    let mut sql =
        format!("SELECT {cols} FROM ONLY {} WHERE ROW({keycols}) OPERATOR(pg_catalog.=) ROW({params})", p.qualified);
    if let Some(f) = &p.filter {
        sql.push_str(&format!(" AND ({f})"));
    }
    let ncols = p.columns.len();
    let owner = as_owner(&p);
    let repairs = Spi::connect(|c| {
        let mut out = Vec::with_capacity(wanted.len());
        for key in &wanted {
            let rows = c.select(sql.as_str(), None, &args(key))?;
            let row = rows
                .map(|r| (1..=ncols).map(|i| r.get::<String>(i)).collect::<Result<Vec<_>, _>>())
                .next()
                .transpose()?;
            out.push(RepairRow { key: key.clone(), row });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    drop(owner);
    let n = repairs.len();
    let mut doc = ReconcileDoc {
        op: Op::Repair,
        subscription: subscription.to_string(),
        node: node.to_string(),
        nonce: nonce.to_string(),
        run,
        chunk: batch,
        per_key: true,
        relation: sub_relation as u32,
        schema: p.schema.clone(),
        table: p.table.clone(),
        publications,
        columns: p.columns.iter().map(|(n, _)| n.clone()).collect(),
        keys: p.keys.iter().map(|(n, _)| n.clone()).collect(),
        codings: Vec::new(),
        types: p.columns.iter().map(|(_, t)| t.clone()).collect(),
        range: Range::default(),
        rows: 0,
        digest: String::new(),
        hashes: Vec::new(),
        repairs,
        elapsed_us: 0,
        log_id: None,
    };
    let lsn = emit(&mut doc);
    serde_json::json!({ "rows": n, "lsn": crate::ffi::lsn::Lsn(lsn).to_string() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn key_types_must_be_built_in_base_types() {
        assert_eq!(unsupported_key_type(20, "b"), None); // int8
        assert_eq!(unsupported_key_type(25, "b"), None); // text
        assert_eq!(unsupported_key_type(16500, "d"), Some("a domain"));
        assert_eq!(unsupported_key_type(16500, "b"), Some("not a built-in type"));
        assert_eq!(unsupported_key_type(16500, "e"), Some("not a built-in type"));
        assert_eq!(unsupported_key_type(2249, "p"), Some("not a base type")); // record
    }

    #[test]
    fn bounds_are_row_comparisons_with_typed_parameters() {
        let keys = vec![("a".to_string(), "integer".to_string()), ("b".to_string(), "text".to_string())];
        let r = Range { lower: k(&["1", "x"]), upper: k(&["5", "y"]) };
        assert_eq!(
            key_bounds(&keys, &r, 1),
            vec![
                "ROW(\"a\", \"b\") OPERATOR(pg_catalog.>) ROW($1::integer, $2::text)",
                "ROW(\"a\", \"b\") OPERATOR(pg_catalog.<=) ROW($3::integer, $4::text)"
            ]
        );
        assert_eq!(bound_args(&r), vec!["1", "x", "5", "y"]);
        let open = Range { lower: None, upper: k(&["5", "y"]) };
        assert_eq!(
            key_bounds(&keys, &open, 3),
            vec!["ROW(\"a\", \"b\") OPERATOR(pg_catalog.<=) ROW($3::integer, $4::text)"]
        );
        assert!(key_bounds(&[], &r, 1).is_empty());
        assert!(key_bounds(&keys, &Range::default(), 1).is_empty());
    }
}
