//! The catalog side of conflicts: loading a subscription's resolution rules
//! (`logical_ext.conflict_resolution`) and recording conflicts in
//! `logical_ext.conflict_log` — the one place conflicts are reported.

use super::conflict::{ConflictType, Resolution, Rule};
use pgrx::prelude::*;

/// Everything the conflict log records about one conflict.
#[derive(Debug, Clone)]
pub(crate) struct ConflictRecord {
    pub(crate) subscription: String,
    pub(crate) relation: String,
    pub(crate) conflict: ConflictType,
    pub(crate) resolution: Resolution,
    pub(crate) local_tuple: Option<serde_json::Value>,
    pub(crate) remote_tuple: serde_json::Value,
    pub(crate) remote_origin: String,
    pub(crate) remote_commit_lsn: Option<String>,
    /// µs since 2000-01-01.
    pub(crate) remote_commit_ts: Option<i64>,
    pub(crate) local_commit_ts: Option<i64>,
    pub(crate) local_origin: Option<String>,
}

/// Load the rules of subscription `name` (inside a transaction).
pub(crate) fn load_rules(name: &str) -> Vec<Rule> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT relation::oid, conflict_type, resolution FROM logical_ext.conflict_resolution WHERE subscription = $1",
            None,
            &[name.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let relation = r.get::<pg_sys::Oid>(1)?.map(|o| o.to_u32());
            let conflict = r.get::<String>(2)?.and_then(|s| ConflictType::parse(&s).ok());
            let Some(resolution) = r.get::<String>(3)?.and_then(|s| Resolution::parse(&s).ok()) else { continue };
            out.push(Rule { relation, conflict, resolution });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read conflict resolutions: {e}"))
}

/// Write one conflict into `logical_ext.conflict_log` (in the current
/// transaction, with an active snapshot).
pub(crate) fn log(rec: &ConflictRecord) {
    let ts = |v: Option<i64>| v.map(|us| us as f64 / 1e6);
    Spi::run_with_args(
        "INSERT INTO logical_ext.conflict_log (subscription, relation, conflict_type, resolution, local_tuple, \
         remote_tuple, remote_origin, remote_commit_lsn, remote_commit_ts, local_commit_ts, local_origin) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::pg_lsn, \
                 timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => $9), \
                 timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => $10), $11)",
        &[
            rec.subscription.as_str().into(),
            rec.relation.as_str().into(),
            rec.conflict.as_str().into(),
            rec.resolution.as_str().into(),
            rec.local_tuple.clone().map(pgrx::JsonB).into(),
            pgrx::JsonB(rec.remote_tuple.clone()).into(),
            rec.remote_origin.as_str().into(),
            rec.remote_commit_lsn.clone().into(),
            ts(rec.remote_commit_ts).into(),
            ts(rec.local_commit_ts).into(),
            rec.local_origin.clone().into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not write the conflict log: {e}"));
    let level = if rec.resolution == Resolution::Error { PgLogLevel::WARNING } else { PgLogLevel::LOG };
    ereport!(
        level,
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!(
            "logical_ext: conflict {} on \"{}\" (subscription \"{}\"), resolved by {}",
            rec.conflict.as_str(),
            rec.relation,
            rec.subscription,
            rec.resolution.as_str()
        )
    );
}

/// Delete conflict log rows older than `retention_secs` (0 keeps them all).
pub(crate) fn prune(retention_secs: i32) {
    if retention_secs <= 0 {
        return;
    }
    Spi::run_with_args(
        "DELETE FROM logical_ext.conflict_log WHERE detected_at < now() - make_interval(secs => $1)",
        &[f64::from(retention_secs).into()],
    )
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not prune the conflict log: {e}"));
}
