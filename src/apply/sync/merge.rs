//! The initial copy into a table that already has rows (many publishers,
//! one subscriber: a second subscription copies into the table the first
//! one filled).
//!
//! What may be done is a pure decision ([`plan`]): an empty target is copied
//! into directly; a non-empty one is copied into only when it has a key (its
//! replica identity index, else its primary key, all of whose columns are
//! copied) — then a copied row cannot duplicate a local one, it either is
//! new or meets the local row with the same key. Without a key the copy is
//! refused (it would duplicate rows), as before.
//!
//! The merge: the publisher's rows go by COPY into a staging table
//! (`pg_temp`, dropped at commit, with the target's columns), then, in the
//! copy's transaction: every staged row whose key exists locally is an
//! `insert_exists` conflict, recorded in `logical_ext.conflict_log` and
//! resolved by the subscription's rule for this table ([`overlap_action`]:
//! `apply_remote` overwrites the local row, `keep_local`/`skip` keep it,
//! `error` fails the copy, retried by the apply worker, naming the key);
//! the other staged rows are inserted. Rows reach the target through plain
//! INSERT/UPDATE, so its constraints, indexes and triggers behave as for
//! streamed changes.

use crate::apply::conflict::{ConflictType, Resolution};
use crate::apply::resolver::{self, ConflictRecord};
use crate::apply::walrcv::{quote_ident, quote_literal};
use crate::ffi::identity::AsRole;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// What the copy does with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Empty (or just emptied for `resync_table`): COPY straight in.
    Direct,
    /// Has rows and a key: stage, then merge key by key.
    Merge,
    /// Has rows and no key: refuse (the copy would duplicate rows).
    Refuse,
}

pub(super) fn plan(has_rows: bool, has_key: bool) -> Plan {
    match (has_rows, has_key) {
        (false, _) => Plan::Direct,
        (true, true) => Plan::Merge,
        (true, false) => Plan::Refuse,
    }
}

/// What happens to a local row whose key a copied row also has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overlap {
    /// The copied row replaces the local one.
    TakeRemote,
    /// The local row stays.
    KeepLocal,
}

/// The subscription's `insert_exists` resolution, for a copied row. The
/// timestamp-based ones need the remote row's commit time, which a COPY
/// does not carry: refused, never guessed.
pub(super) fn overlap_action(res: Resolution) -> Result<Overlap, String> {
    match res {
        Resolution::ApplyRemote => Ok(Overlap::TakeRemote),
        Resolution::KeepLocal | Resolution::Skip => Ok(Overlap::KeepLocal),
        Resolution::Error => Err("its insert_exists resolution is error".into()),
        Resolution::LastUpdateWins | Resolution::FirstUpdateWins => Err(format!(
            "its insert_exists resolution is {}, which needs the copied row's commit time (a copy does not carry it)",
            res.as_str()
        )),
    }
}

/// The key columns of `relid` usable to merge a copy of `columns` (`None`:
/// not known yet, any): the replica identity index (REPLICA IDENTITY USING
/// INDEX), else the primary key; `None` when there is none or a key column
/// is not copied.
pub(super) fn key_columns(relid: pg_sys::Oid, columns: Option<&[String]>) -> Option<Vec<String>> {
    let key: Vec<String> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT a.attname::text FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class r ON r.oid = i.indrelid
               CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, n)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = $1
                AND i.indexrelid = coalesce(
                      (SELECT x.indexrelid FROM pg_catalog.pg_index x
                        WHERE x.indrelid = $1 AND x.indisreplident AND r.relreplident = 'i'),
                      (SELECT x.indexrelid FROM pg_catalog.pg_index x WHERE x.indrelid = $1 AND x.indisprimary))
              ORDER BY k.n",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(r.get::<String>(1)?);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read the key of table {}: {e}", relid.to_u32()));
    (!key.is_empty() && key.iter().all(|k| columns.is_none_or(|c| c.contains(k)))).then_some(key)
}

/// Create the staging table for a copy into `qualified` (dropped when the
/// transaction ends), readable by the table's `owner` (the merge runs as
/// the owner); returns its OID.
pub(super) fn create_stage(qualified: &str, owner: pg_sys::Oid) -> pg_sys::Oid {
    Spi::run(&format!("CREATE TEMPORARY TABLE logical_ext_copy_stage (LIKE {qualified}) ON COMMIT DROP"))
        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not create the staging table of a copy: {e}"));
    // SAFETY: a syscache lookup inside a transaction; an unknown role raises an ERROR.
    let role = unsafe { crate::ffi::cstr_to_string(pg_sys::GetUserNameFromId(owner, false)) };
    Spi::run(&format!("GRANT SELECT ON pg_temp.logical_ext_copy_stage TO {}", quote_ident(&role)))
        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not create the staging table of a copy: {e}"));
    Spi::get_one::<pg_sys::Oid>("SELECT 'pg_temp.logical_ext_copy_stage'::pg_catalog.regclass::pg_catalog.oid")
        .ok()
        .flatten()
        .unwrap_or_else(|| pgrx::error!("logical_ext: the staging table of a copy is missing"))
}

/// Where a merge comes from, for the conflict log.
pub(super) struct Source<'a> {
    pub(super) subscription: &'a str,
    pub(super) origin: &'a str,
    /// The copy's snapshot position on the publisher.
    pub(super) lsn: String,
    pub(super) resolution: Resolution,
}

/// Where the merge writes: `qualified` (read and written with `scope`:
/// `ONLY ` for a table, nothing for a partitioned one, whose rows live in
/// its partitions), as its `owner`.
pub(super) struct Target<'a> {
    pub(super) qualified: &'a str,
    pub(super) display: &'a str,
    pub(super) scope: &'a str,
    pub(super) owner: pg_sys::Oid,
}

/// Merge the staged rows into the target (see the module notes). The rows
/// are read and written as the table's owner, as the copy and the stream
/// are (its triggers run as the owner); the conflict records are written as
/// the worker. Returns (rows inserted, conflicts).
pub(super) fn merge(target: &Target<'_>, columns: &[String], key: &[String], src: &Source<'_>) -> (i64, i64) {
    let Target { qualified, display, scope, owner } = *target;
    let q = |c: &String| quote_ident(c);
    let on = key.iter().map(|k| format!("t.{0} = s.{0}", q(k))).collect::<Vec<_>>().join(" AND ");
    let remote_json =
        columns.iter().map(|c| format!("{}, s.{}", quote_literal(c), q(c))).collect::<Vec<_>>().join(", ");
    let as_owner = AsRole::become_role(owner);
    let overlaps: Vec<(serde_json::Value, serde_json::Value)> = Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT pg_catalog.to_jsonb(t.*), pg_catalog.jsonb_build_object({remote_json})
                 FROM pg_temp.logical_ext_copy_stage s JOIN {scope}{qualified} t ON {on}"
            ),
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let local = r.get::<pgrx::JsonB>(1)?.map(|j| j.0).unwrap_or_default();
            let remote = r.get::<pgrx::JsonB>(2)?.map(|j| j.0).unwrap_or_default();
            out.push((local, remote));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not compare the copy of \"{display}\" with its rows: {e}"));
    drop(as_owner);
    if let Some((_, remote)) = overlaps.first() {
        let action = overlap_action(src.resolution).unwrap_or_else(|why| {
            let keys: Vec<String> = key
                .iter()
                .map(|k| format!("{k} = {}", remote.get(k).map(|v| v.to_string()).unwrap_or_default()))
                .collect();
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!(
                    "logical_ext: conflict insert_exists copying \"{display}\": {} copied row(s) have the key of a \
                     local row (first: {}); the subscription's rule does not resolve it: {why}",
                    overlaps.len(),
                    keys.join(", ")
                ),
                function_name!(),
            )
            .set_hint(
                "Set logical_ext.set_conflict_resolution(subscription, 'insert_exists', 'apply_remote' or \
                 'keep_local', table); the copy is retried.",
            )
            .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        });
        for (local, remote) in &overlaps {
            resolver::log(&ConflictRecord {
                subscription: src.subscription.to_string(),
                relation: display.to_string(),
                conflict: ConflictType::InsertExists,
                resolution: src.resolution,
                local_tuple: Some(local.clone()),
                remote_tuple: remote.clone(),
                remote_origin: src.origin.to_string(),
                remote_commit_lsn: Some(src.lsn.clone()),
                remote_commit_ts: None,
                local_commit_ts: None,
                local_origin: None,
            });
        }
        if action == Overlap::TakeRemote {
            let set = columns.iter().map(|c| format!("{0} = s.{0}", q(c))).collect::<Vec<_>>().join(", ");
            let _as_owner = AsRole::become_role(owner);
            Spi::run(&format!(
                "UPDATE {scope}{qualified} t SET {set} FROM pg_temp.logical_ext_copy_stage s WHERE {on}"
            ))
            .unwrap_or_else(|e| pgrx::error!("logical_ext: could not apply the copy of \"{display}\": {e}"));
        }
    }
    let cols = columns.iter().map(q).collect::<Vec<_>>().join(", ");
    let scols = columns.iter().map(|c| format!("s.{}", q(c))).collect::<Vec<_>>().join(", ");
    let _as_owner = AsRole::become_role(owner);
    let inserted = Spi::connect_mut(|c| {
        c.update(
            &format!(
                "INSERT INTO {qualified} ({cols}) SELECT {scols} FROM pg_temp.logical_ext_copy_stage s
                 WHERE NOT EXISTS (SELECT FROM {scope}{qualified} t WHERE {on})"
            ),
            None,
            &[],
        )
        .map(|t| t.len() as i64)
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not insert the copy of \"{display}\": {e}"));
    (inserted, overlaps.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        assert_eq!(plan(false, false), Plan::Direct);
        assert_eq!(plan(false, true), Plan::Direct);
        assert_eq!(plan(true, true), Plan::Merge);
        assert_eq!(plan(true, false), Plan::Refuse);
    }

    #[test]
    fn overlaps_follow_the_rule() {
        assert_eq!(overlap_action(Resolution::ApplyRemote), Ok(Overlap::TakeRemote));
        assert_eq!(overlap_action(Resolution::KeepLocal), Ok(Overlap::KeepLocal));
        assert_eq!(overlap_action(Resolution::Skip), Ok(Overlap::KeepLocal));
        for r in [Resolution::Error, Resolution::LastUpdateWins, Resolution::FirstUpdateWins] {
            assert!(overlap_action(r).is_err(), "{r:?}");
        }
    }
}
