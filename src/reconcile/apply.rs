//! Subscriber side, in the apply worker: a reconcile document reached in
//! commit order. Every remote transaction committed before the publisher's
//! read has been applied here (in this local transaction or an earlier one),
//! and none committed after it, so both sides describe the same point of the
//! stream: a difference found here is a real one, not a write in flight.
//!
//! * verify: digest of the same key range and columns here (no row filter:
//!   a row here that the publisher would not send is an extra row), recorded
//!   in `logical_ext.verify_chunks`; with per-key hashes, each differing key
//!   in `logical_ext.verify_differences` (missing / extra / different).
//! * repair: each key is brought to the publisher's version (upsert of the
//!   compared columns, or delete), as the table's owner, and recorded in
//!   `logical_ext.repair_log` — only keys that a verify run of this
//!   subscriber recorded in `verify_differences` and that are not repaired.
//!
//! Trust: a document is acted on only when it answers an open request of
//! this subscription (`requests.rs`: run, kind, nonce, relation, chunk), and
//! then only on the request's table, which must be one of the
//! subscription's `ready` tables (never a catalog, never logical_ext's own)
//! of the same schema, name and key as the document says. Anything else is
//! ignored with a WARNING (once per reason and process) and counted in
//! `logical_ext.reconcile_rejected`. Reads and writes of the table run as
//! its owner under `SECURITY_RESTRICTED_OPERATION` with `search_path =
//! pg_catalog, pg_temp`, operators schema-qualified.
//!
//! Nothing a document holds may stop the stream: the work runs in a
//! subtransaction, and an ERROR (a dropped table, a local constraint that
//! refuses a repaired row) is recorded as the chunk's or key's `error`
//! instead of failing the remote transaction.

use super::digest::{Coding, Digest, compare_keys, row_hash};
use super::document::{Op, ReconcileDoc, RepairRow};
use super::publisher::{
    FIRST_NORMAL_OBJECT_ID, bound_args, key_bounds, key_positions, row_text_expr, select_list, unsupported_key_type,
};
use super::requests::{self, Rejection};
use crate::apply::walrcv::quote_ident;
use crate::ffi;
use crate::ffi::identity::AsRole;
use crate::ffi::lsn::Lsn;
use crate::ffi::rowscan::{self, KeyTexts, RowScan};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

/// The request's table here, with the types of its compared columns.
struct Local {
    relid: pg_sys::Oid,
    qualified: String,
    owner: pg_sys::Oid,
    columns: Vec<(String, String)>,
    keys: Vec<(String, String)>,
}

fn spi_err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// Why an authorized document cannot be acted on.
enum Fault {
    /// Counted as a rejection (and recorded as the chunk's error).
    Rejected(Rejection, String),
    /// Recorded as the chunk's (or the keys') error.
    Error(String),
}

impl From<String> for Fault {
    fn from(e: String) -> Fault {
        Fault::Error(e)
    }
}

/// The request's table `relid`, checked against what `doc` says it read.
fn resolve(doc: &ReconcileDoc, relid: pg_sys::Oid, subid: i32) -> Result<Local, Fault> {
    // Catalog reads of our own, path pinned (format_type qualifies every
    // type outside pg_catalog).
    let _su = AsRole::bootstrap_superuser();
    type Found = (String, String, String, pg_sys::Oid, Option<String>);
    let found: Option<Found> = Spi::connect(|c| {
        let r = c.select(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), n.nspname::text, c.relname::text, c.relowner, \
                    st.state \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN logical_ext.subscription_tables st ON st.subid = $2 AND st.relid = c.oid \
             WHERE c.oid = $1 AND c.relkind = 'r' AND c.oid >= $3::pg_catalog.oid \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'logical_ext')",
            None,
            &[relid.into(), subid.into(), pg_sys::Oid::from(FIRST_NORMAL_OBJECT_ID).into()],
        )?;
        r.map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(4)?.unwrap_or_default(),
                r.get::<String>(5)?,
            ))
        })
        .next()
        .transpose()
    })
    .map_err(spi_err)?;
    let not_replicated = |why: String| Fault::Rejected(Rejection::NotReplicatedTable, why);
    let Some((qualified, schema, name, owner, state)) = found else {
        return Err(not_replicated(format!("relation {} is not a table this subscription replicates", relid.to_u32())));
    };
    if state.as_deref() != Some("ready") {
        return Err(not_replicated(format!("table {qualified} is not a ready table of this subscription")));
    }
    let shape = |why: String| Fault::Rejected(Rejection::WrongShape, why);
    if schema != doc.schema || name != doc.table {
        return Err(shape(format!(
            "the document read table {}.{}, the request is for {qualified}",
            doc.schema, doc.table
        )));
    }
    // (name, type, type oid, typtype, generated or dropped)
    let attrs: Vec<(String, String, u32, String)> = Spi::connect(|c| {
        let r = c.select(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid, t.typtype::text \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''",
            None,
            &[relid.into()],
        )?;
        r.map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<pg_sys::Oid>(3)?.map_or(0, |o| o.to_u32()),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .map_err(spi_err)?;
    // The key the worker finds rows by, as verify_table chose it.
    let local_keys: Vec<String> = Spi::connect(|c| {
        let r = c.select(
            "SELECT a.attname::text FROM (SELECT i.indkey FROM pg_catalog.pg_index i WHERE i.indrelid = $1 \
               AND (i.indisreplident OR i.indisprimary) AND i.indisvalid AND i.indexprs IS NULL AND i.indpred IS NULL \
               ORDER BY i.indisreplident DESC LIMIT 1) i, \
             LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, pos) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum ORDER BY k.pos",
            None,
            &[relid.into()],
        )?;
        r.map(|r| Ok(r.get::<String>(1)?.unwrap_or_default())).collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .map_err(spi_err)?;
    if local_keys != doc.keys {
        return Err(shape(format!("the document's key ({}) is not {qualified}'s", doc.keys.join(", "))));
    }
    let typed = |names: &[String]| -> Result<Vec<(String, String)>, Fault> {
        names
            .iter()
            .map(|n| {
                attrs
                    .iter()
                    .find(|(a, ..)| a == n)
                    .map(|(a, t, ..)| (a.clone(), t.clone()))
                    .ok_or_else(|| shape(format!("column \"{n}\" is not a column of {qualified}")))
            })
            .collect()
    };
    let columns = typed(&doc.columns)?;
    let keys = typed(&doc.keys)?;
    if columns.is_empty() || keys.iter().any(|k| !columns.contains(k)) {
        return Err(shape("the compared columns must include the key".into()));
    }
    for (k, ty) in &keys {
        let (_, _, oid, typtype) = attrs.iter().find(|(a, ..)| a == k).expect("typed above");
        if let Some(why) = unsupported_key_type(*oid, typtype) {
            return Err(Fault::Error(format!("key column \"{k}\" has type {ty}, {why}")));
        }
    }
    Ok(Local { relid, qualified, owner, columns, keys })
}

fn args(values: &[String]) -> Vec<DatumWithOid<'static>> {
    values.iter().map(|v| v.clone().into()).collect()
}

thread_local! {
    /// Rejection reasons this process already warned about.
    static WARNED: RefCell<HashSet<Rejection>> = RefCell::new(HashSet::new());
}

/// A document not acted on: a WARNING once per reason and process, and a
/// count per (subscription, reason) in `logical_ext.reconcile_rejected`.
fn reject(subscription: &str, why: Rejection, detail: &str, lsn: u64) {
    if WARNED.with(|w| w.borrow_mut().insert(why)) {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "logical_ext: subscription \"{subscription}\": reconcile document at {} ignored ({}): {detail}",
                Lsn(lsn),
                why.as_str()
            ),
            function_name!(),
        )
        .set_hint(
            "No open verify_table or repair_table call of this subscriber asked for it: it was sent by hand on the \
             publisher (reconcile_verify/reconcile_repair), replayed, names what the request did not, or arrived after \
             its call ended (timeout, cancel). Later ones are counted in logical_ext.reconcile_rejected without a \
             WARNING.",
        )
        .report(PgLogLevel::WARNING);
    }
    let counted = ffi::in_subtransaction(AssertUnwindSafe(|| {
        Spi::run_with_args(
            "INSERT INTO logical_ext.reconcile_rejected AS r (subscription, reason, count, last_lsn) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (subscription, reason) \
             DO UPDATE SET count = r.count + 1, last_lsn = EXCLUDED.last_lsn, last_at = pg_catalog.now()",
            &[subscription.into(), why.as_str().into(), Lsn(lsn).into()],
        )
    }));
    if !matches!(counted, Ok(Ok(()))) {
        pgrx::warning!("logical_ext: could not count a rejected reconcile document");
    }
}

/// Act on `doc` (addressed to `subscription`, id `subid`; a document for
/// another subscriber is ignored) at stream position `lsn`, inside the
/// remote transaction's local one.
pub(crate) fn apply(doc: &ReconcileDoc, subscription: &str, subid: i32, lsn: u64) {
    if doc.subscription != subscription || doc.node != super::this_node() {
        return;
    }
    let request = match requests::authorize(doc, &requests::open_requests(subid, doc.run)) {
        Ok(e) => e,
        Err(why) => {
            let detail = format!("run {}, chunk {}, relation {}", doc.run, doc.chunk, doc.relation);
            return reject(subscription, why, &detail, lsn);
        }
    };
    let relid = pg_sys::Oid::from(request.relid);
    let work = AssertUnwindSafe(|| -> Result<(), Fault> {
        let local = resolve(doc, relid, subid)?;
        match doc.op {
            Op::Verify => verify(doc, &local, lsn).map_err(Fault::Error),
            Op::Repair => repair(doc, &local, subscription, lsn).map_err(Fault::Error),
        }
    });
    let error = match ffi::in_subtransaction(work) {
        Ok(Ok(())) => return,
        Ok(Err(Fault::Error(e))) => e,
        Ok(Err(Fault::Rejected(why, e))) => {
            reject(subscription, why, &e, lsn);
            e
        }
        Err(report) => report.message().to_string(),
    };
    // Recorded where the caller waits for it (in a subtransaction too: not
    // even this may stop the stream; a document met again after a restart
    // finds its row there and adds nothing). The request's relation, never
    // the document's.
    let recorded = ffi::in_subtransaction(AssertUnwindSafe(|| match doc.op {
        Op::Verify => record_chunk(doc, subscription, relid, lsn, Outcome::Failed(&error)).map(|_| ()),
        Op::Repair => Spi::run_with_args(
            "UPDATE logical_ext.verify_differences SET repair_error = $4, repair_lsn = $5 \
             WHERE run_id = $1 AND relid = $2 AND subscription = $3 AND repaired_at IS NULL",
            &[doc.run.into(), relid.into(), subscription.into(), error.as_str().into(), Lsn(lsn).into()],
        ),
    }));
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => pgrx::warning!("logical_ext: could not record a reconcile error ({error}): {e}"),
        Err(e) => pgrx::warning!("logical_ext: could not record a reconcile error ({error}): {}", e.message()),
    }
}

/// What became of a verify document's chunk.
enum Outcome<'a> {
    Compared { sub_rows: u64, matches: bool, sub_ms: f64 },
    Failed(&'a str),
}

/// Record `doc`'s chunk in `verify_chunks`; whether it was recorded now
/// (`false`: a document for that chunk was recorded before).
fn record_chunk(
    doc: &ReconcileDoc,
    subscription: &str,
    relid: pg_sys::Oid,
    lsn: u64,
    outcome: Outcome<'_>,
) -> Result<bool, pgrx::spi::SpiError> {
    let (sub_rows, matches, sub_ms, error) = match outcome {
        Outcome::Compared { sub_rows, matches, sub_ms } => (Some(sub_rows as i64), Some(matches), Some(sub_ms), None),
        Outcome::Failed(e) => (None, None, None, Some(e)),
    };
    Spi::get_one_with_args::<bool>(
        "WITH inserted AS (INSERT INTO logical_ext.verify_chunks (run_id, subscription, relid, chunk, per_key, \
         lower_key, upper_key, pub_rows, sub_rows, matches, lsn, pub_ms, sub_ms, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING RETURNING 1) \
         SELECT EXISTS (SELECT FROM inserted)",
        &[
            doc.run.into(),
            subscription.into(),
            relid.into(),
            doc.chunk.into(),
            doc.per_key.into(),
            doc.range.lower.clone().into(),
            doc.range.upper.clone().into(),
            (doc.rows as i64).into(),
            sub_rows.into(),
            matches.into(),
            Lsn(lsn).into(),
            (doc.elapsed_us as f64 / 1000.0).into(),
            sub_ms.into(),
            error.into(),
        ],
    )
    .map(|r| r.unwrap_or(false))
}

fn verify(doc: &ReconcileDoc, local: &Local, lsn: u64) -> Result<(), String> {
    if doc.codings.len() != local.columns.len() || doc.types.len() != local.columns.len() {
        return Err("the document gives no coding or type for some column".into());
    }
    // A binary column must have the same type here (its bytes are compared).
    for (((name, here), there), coding) in local.columns.iter().zip(&doc.types).zip(&doc.codings) {
        if *coding == Coding::Binary && here != there {
            return Err(format!("column \"{name}\" has type {here} here and {there} on the publisher"));
        }
    }
    let started = Instant::now();
    let bounds = key_bounds(&local.keys, &doc.range, 1);
    let filter = if bounds.is_empty() { String::new() } else { format!(" WHERE {}", bounds.join(" AND ")) };
    let sql = format!("SELECT {} FROM ONLY {} AS r{filter}", select_list(&local.columns), local.qualified);
    let binary: Vec<bool> = doc.codings.iter().map(|c| *c == Coding::Binary).collect();
    let key_columns = key_positions(&local.columns, &local.keys);
    let key_texts = if doc.per_key { KeyTexts::Every } else { KeyTexts::None };
    let mut digest = Digest::default();
    let mut mine: HashMap<Vec<String>, u128> = HashMap::new();
    let bound_values = bound_args(&doc.range);
    // The types' code (comparisons, output functions) runs as the owner.
    let owner = AsRole::become_role_restricted(local.owner);
    let scan = RowScan { sql: &sql, args: &bound_values, binary: &binary, key_columns: &key_columns, key_texts };
    rowscan::scan(&scan, &mut |row, key| {
        let h = row_hash(row);
        digest.add(h);
        if let Some(key) = key {
            mine.insert(key, h);
        }
    });
    drop(owner);
    let sub_ms = started.elapsed().as_secs_f64() * 1000.0;
    let theirs = Digest { rows: doc.rows, sum: Digest::parse_hex(&doc.digest).ok_or("malformed digest")? };
    let matches = theirs == digest;
    let relid = local.relid;
    // The chunk first: a second document for a chunk already recorded adds
    // nothing, not even differences (the driver checks the recorded range
    // against the one it asked for, and drops a wrong chunk's differences).
    let recorded =
        record_chunk(doc, &doc.subscription, relid, lsn, Outcome::Compared { sub_rows: digest.rows, matches, sub_ms })
            .map_err(spi_err)?;
    if recorded && doc.per_key && !matches {
        let published: HashMap<Vec<String>, u128> = doc
            .hashes
            .iter()
            .map(|(k, h)| Ok((k.clone(), Digest::parse_hex(h).ok_or("malformed key hash")?)))
            .collect::<Result<_, String>>()?;
        for (key, kind) in compare_keys(&published, &mine) {
            Spi::run_with_args(
                "INSERT INTO logical_ext.verify_differences (run_id, subscription, relid, key_columns, key, kind, lsn, \
                 chunk) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    doc.run.into(),
                    doc.subscription.as_str().into(),
                    relid.into(),
                    doc.keys.clone().into(),
                    key.into(),
                    kind.as_str().into(),
                    Lsn(lsn).into(),
                    doc.chunk.into(),
                ],
            )
            .map_err(spi_err)?;
        }
    }
    Ok(())
}

fn repair(doc: &ReconcileDoc, local: &Local, subscription: &str, lsn: u64) -> Result<(), String> {
    if local.keys.is_empty() {
        return Err("a table without a key cannot be repaired".into());
    }
    let relid = local.relid;
    // Only keys a verify run of this subscription found, not repaired yet.
    let recorded: HashSet<Vec<String>> = Spi::connect(|c| {
        let r = c.select(
            "SELECT key FROM logical_ext.verify_differences \
             WHERE run_id = $1 AND relid = $2 AND subscription = $3 AND repaired_at IS NULL",
            None,
            &[doc.run.into(), relid.into(), subscription.into()],
        )?;
        r.map(|r| Ok(r.get::<Vec<String>>(1)?.unwrap_or_default())).collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .map_err(spi_err)?;
    let unrequested = doc.repairs.iter().filter(|r| !recorded.contains(&r.key)).count();
    if unrequested > 0 {
        reject(
            subscription,
            Rejection::UnrequestedKey,
            &format!("{unrequested} key(s) of run {} that no verify run recorded as different", doc.run),
            lsn,
        );
    }
    let keycols = local.keys.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let key_params =
        local.keys.iter().enumerate().map(|(i, (_, t))| format!("${}::{t}", i + 1)).collect::<Vec<_>>().join(", ");
    let where_key = format!("WHERE ROW({keycols}) OPERATOR(pg_catalog.=) ROW({key_params})");
    let old_sql = format!("SELECT {} FROM ONLY {} {where_key}", row_text_expr(&local.columns), local.qualified);
    let delete_sql = format!("DELETE FROM ONLY {} {where_key}", local.qualified);
    let cols = local.columns.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let values =
        local.columns.iter().enumerate().map(|(i, (_, t))| format!("${}::{t}", i + 1)).collect::<Vec<_>>().join(", ");
    let sets = local
        .columns
        .iter()
        .filter(|(n, _)| !local.keys.iter().any(|(k, _)| k == n))
        .map(|(n, _)| format!("{0} = EXCLUDED.{0}", quote_ident(n)))
        .collect::<Vec<_>>();
    let on_conflict =
        if sets.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", sets.join(", ")) };
    let upsert_sql =
        format!("INSERT INTO {} ({cols}) VALUES ({values}) ON CONFLICT ({keycols}) {on_conflict}", local.qualified);
    for RepairRow { key, row } in doc.repairs.iter().filter(|r| recorded.contains(&r.key)) {
        // One subtransaction per key: a key the table refuses (a local
        // constraint) is recorded as failed; the others are repaired.
        let one = AssertUnwindSafe(|| -> Result<(), String> {
            if key.len() != local.keys.len() || row.as_ref().is_some_and(|v| v.len() != local.columns.len()) {
                return Err("the document's key or row does not match the table's columns".into());
            }
            // Read and written as the table's owner, restricted, as every
            // applied change is (docs/SECURITY.md, "Apply identity").
            let owner = AsRole::become_role_restricted(local.owner);
            let old: Option<String> = Spi::get_one_with_args(&old_sql, &args(key)).ok().flatten();
            let action = {
                match row {
                    Some(values) => {
                        let a: Vec<DatumWithOid<'static>> = values.iter().map(|v| v.clone().into()).collect();
                        Spi::run_with_args(&upsert_sql, &a).map_err(spi_err)?;
                        if old.is_some() { "update" } else { "insert" }
                    }
                    None if old.is_some() => {
                        Spi::run_with_args(&delete_sql, &args(key)).map_err(spi_err)?;
                        "delete"
                    }
                    None => "none",
                }
            };
            // SAFETY: inside the transaction; the repaired row is visible to the read below.
            unsafe { pg_sys::CommandCounterIncrement() };
            let new: Option<String> = Spi::get_one_with_args(&old_sql, &args(key)).ok().flatten();
            drop(owner);
            Spi::run_with_args(
                "INSERT INTO logical_ext.repair_log (run_id, subscription, relid, key_columns, key, action, local_row, \
                 repaired_row, lsn) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    doc.run.into(),
                    subscription.into(),
                    relid.into(),
                    doc.keys.clone().into(),
                    key.clone().into(),
                    action.into(),
                    old.into(),
                    new.into(),
                    Lsn(lsn).into(),
                ],
            )
            .map_err(spi_err)?;
            Spi::run_with_args(
                "UPDATE logical_ext.verify_differences SET repaired_at = pg_catalog.now(), repair_lsn = $4, repair_error = NULL \
                 WHERE run_id = $1 AND relid = $2 AND key = $3 AND subscription = $5 AND repaired_at IS NULL",
                &[doc.run.into(), relid.into(), key.clone().into(), Lsn(lsn).into(), subscription.into()],
            )
            .map_err(spi_err)?;
            Ok(())
        });
        let error = match ffi::in_subtransaction(one) {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(report) => report.message().to_string(),
        };
        Spi::run_with_args(
            "UPDATE logical_ext.verify_differences SET repair_error = $4, repair_lsn = $5 \
             WHERE run_id = $1 AND relid = $2 AND key = $3 AND subscription = $6 AND repaired_at IS NULL",
            &[
                doc.run.into(),
                relid.into(),
                key.clone().into(),
                error.as_str().into(),
                Lsn(lsn).into(),
                subscription.into(),
            ],
        )
        .map_err(spi_err)?;
    }
    Ok(())
}
