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
//!   `logical_ext.repair_log`.
//!
//! Nothing a document holds may stop the stream: the work runs in a
//! subtransaction, and an ERROR (a dropped table, a local constraint that
//! refuses a repaired row) is recorded as the chunk's or key's `error`
//! instead of failing the remote transaction.

use super::digest::{Digest, compare_keys, row_hash};
use super::document::{Op, ReconcileDoc, RepairRow};
use super::publisher::{bound_args, key_bounds, row_text_expr};
use crate::apply::walrcv::quote_ident;
use crate::ffi;
use crate::ffi::lsn::Lsn;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

/// The local table a document names, with the types of its columns here.
struct Local {
    qualified: String,
    owner: pg_sys::Oid,
    columns: Vec<(String, String)>,
    keys: Vec<(String, String)>,
}

fn spi_err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

fn resolve(doc: &ReconcileDoc) -> Result<Local, String> {
    let relid = pg_sys::Oid::from(doc.relation);
    let (qualified, owner) = Spi::connect(|c| {
        let r = c.select(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relowner FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1 AND c.relkind = 'r'",
            None,
            &[relid.into()],
        )?;
        r.map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<pg_sys::Oid>(2)?.unwrap_or_default())))
            .next()
            .transpose()
    })
    .map_err(spi_err)?
    .ok_or_else(|| format!("relation {} no longer exists", doc.relation))?;
    let types: HashMap<String, String> = Spi::connect(|c| {
        let r = c.select(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[relid.into()],
        )?;
        r.map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
            .collect::<Result<HashMap<_, _>, pgrx::spi::SpiError>>()
    })
    .map_err(spi_err)?;
    let typed = |names: &[String]| -> Result<Vec<(String, String)>, String> {
        names
            .iter()
            .map(|n| types.get(n).map(|t| (n.clone(), t.clone())).ok_or_else(|| format!("column \"{n}\" is gone")))
            .collect()
    };
    Ok(Local { qualified, owner, columns: typed(&doc.columns)?, keys: typed(&doc.keys)? })
}

fn args(values: &[String]) -> Vec<DatumWithOid<'static>> {
    values.iter().map(|v| v.clone().into()).collect()
}

/// Act on `doc` (addressed to `subscription`; anything else is ignored),
/// at stream position `lsn`, inside the remote transaction's local one.
pub(crate) fn apply(doc: &ReconcileDoc, subscription: &str, lsn: u64) {
    if doc.subscription != subscription || doc.node != super::this_node() {
        return;
    }
    let work = AssertUnwindSafe(|| -> Result<(), String> {
        let local = resolve(doc)?;
        match doc.op {
            Op::Verify => verify(doc, &local, lsn),
            Op::Repair => repair(doc, &local, lsn),
        }
    });
    let error = match ffi::in_subtransaction(work) {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(report) => report.message().to_string(),
    };
    // Recorded where the caller waits for it (in a subtransaction too: not
    // even this may stop the stream; a document met again after a restart
    // finds its row there and adds nothing).
    let recorded = ffi::in_subtransaction(AssertUnwindSafe(|| match doc.op {
        Op::Verify => Spi::run_with_args(
            "INSERT INTO logical_ext.verify_chunks (run_id, subscription, relid, chunk, per_key, lower_key, upper_key, \
             pub_rows, lsn, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT DO NOTHING",
            &[
                doc.run.into(),
                subscription.into(),
                pg_sys::Oid::from(doc.relation).into(),
                doc.chunk.into(),
                doc.per_key.into(),
                doc.range.lower.clone().into(),
                doc.range.upper.clone().into(),
                (doc.rows as i64).into(),
                Lsn(lsn).into(),
                error.as_str().into(),
            ],
        ),
        Op::Repair => Spi::run_with_args(
            "UPDATE logical_ext.verify_differences SET repair_error = $3, repair_lsn = $4 \
             WHERE run_id = $1 AND relid = $2 AND repaired_at IS NULL",
            &[doc.run.into(), pg_sys::Oid::from(doc.relation).into(), error.as_str().into(), Lsn(lsn).into()],
        ),
    }));
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => pgrx::warning!("logical_ext: could not record a reconcile error ({error}): {e}"),
        Err(e) => pgrx::warning!("logical_ext: could not record a reconcile error ({error}): {}", e.message()),
    }
}

fn verify(doc: &ReconcileDoc, local: &Local, lsn: u64) -> Result<(), String> {
    // Key texts only when keys are named (per-key): the digest needs none.
    let nkeys = if doc.per_key { local.keys.len() } else { 0 };
    let key_list = local.keys[..nkeys].iter().map(|(n, _)| format!("{}::text", quote_ident(n)));
    let select = key_list.chain([row_text_expr(&local.columns)]).collect::<Vec<_>>().join(", ");
    let bounds = key_bounds(&local.keys, &doc.range, 1);
    let filter = if bounds.is_empty() { String::new() } else { format!(" WHERE {}", bounds.join(" AND ")) };
    let sql = format!("SELECT {select} FROM ONLY {}{filter}", local.qualified);
    let mut digest = Digest::default();
    let mut mine: HashMap<Vec<String>, u128> = HashMap::new();
    Spi::connect(|c| {
        let mut cur = c.open_cursor(sql.as_str(), &args(&bound_args(&doc.range)));
        loop {
            let t = cur.fetch(10_000)?;
            if t.is_empty() {
                break;
            }
            for r in t {
                let h = row_hash(r.get::<&str>(nkeys + 1)?.unwrap_or_default().as_bytes());
                digest.add(h);
                if doc.per_key {
                    let key =
                        (1..=nkeys)
                            .map(|i| Ok(r.get::<String>(i)?.unwrap_or_default()))
                            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()?;
                    mine.insert(key, h);
                }
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .map_err(spi_err)?;
    let theirs = Digest { rows: doc.rows, sum: Digest::parse_hex(&doc.digest).ok_or("malformed digest")? };
    let matches = theirs == digest;
    let relid = pg_sys::Oid::from(doc.relation);
    if doc.per_key && !matches {
        let published: HashMap<Vec<String>, u128> = doc
            .hashes
            .iter()
            .map(|(k, h)| Ok((k.clone(), Digest::parse_hex(h).ok_or("malformed key hash")?)))
            .collect::<Result<_, String>>()?;
        for (key, kind) in compare_keys(&published, &mine) {
            Spi::run_with_args(
                "INSERT INTO logical_ext.verify_differences (run_id, subscription, relid, key_columns, key, kind, lsn) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    doc.run.into(),
                    doc.subscription.as_str().into(),
                    relid.into(),
                    doc.keys.clone().into(),
                    key.into(),
                    kind.as_str().into(),
                    Lsn(lsn).into(),
                ],
            )
            .map_err(spi_err)?;
        }
    }
    Spi::run_with_args(
        "INSERT INTO logical_ext.verify_chunks (run_id, subscription, relid, chunk, per_key, lower_key, upper_key, \
         pub_rows, sub_rows, matches, lsn) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT DO NOTHING",
        &[
            doc.run.into(),
            doc.subscription.as_str().into(),
            relid.into(),
            doc.chunk.into(),
            doc.per_key.into(),
            doc.range.lower.clone().into(),
            doc.range.upper.clone().into(),
            (doc.rows as i64).into(),
            (digest.rows as i64).into(),
            matches.into(),
            Lsn(lsn).into(),
        ],
    )
    .map_err(spi_err)
}

fn repair(doc: &ReconcileDoc, local: &Local, lsn: u64) -> Result<(), String> {
    if local.keys.is_empty() {
        return Err("a table without a key cannot be repaired".into());
    }
    let relid = pg_sys::Oid::from(doc.relation);
    let keycols = local.keys.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let key_params =
        local.keys.iter().enumerate().map(|(i, (_, t))| format!("${}::{t}", i + 1)).collect::<Vec<_>>().join(", ");
    let where_key = format!("WHERE ROW({keycols}) = ROW({key_params})");
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
    for RepairRow { key, row } in &doc.repairs {
        // One subtransaction per key: a key the table refuses (a local
        // constraint) is recorded as failed; the others are repaired.
        let one = AssertUnwindSafe(|| -> Result<(), String> {
            let old: Option<String> = Spi::get_one_with_args(&old_sql, &args(key)).ok().flatten();
            let action = {
                // Written as the table's owner, as every applied change is
                // (docs/SECURITY.md, "Apply identity").
                let _owner = ffi::identity::AsRole::become_role(local.owner);
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
            Spi::run_with_args(
                "INSERT INTO logical_ext.repair_log (run_id, subscription, relid, key_columns, key, action, local_row, \
                 repaired_row, lsn) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    doc.run.into(),
                    doc.subscription.as_str().into(),
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
                 WHERE run_id = $1 AND relid = $2 AND key = $3 AND repaired_at IS NULL",
                &[doc.run.into(), relid.into(), key.clone().into(), Lsn(lsn).into()],
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
             WHERE run_id = $1 AND relid = $2 AND key = $3 AND repaired_at IS NULL",
            &[doc.run.into(), relid.into(), key.clone().into(), error.as_str().into(), Lsn(lsn).into()],
        )
        .map_err(spi_err)?;
    }
    Ok(())
}
