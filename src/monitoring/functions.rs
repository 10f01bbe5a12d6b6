//! The SQL functions of slot monitoring (schema `logical_ext`). Thin: they
//! call `report.rs` to gather and assess, and turn the result into rows or
//! text. Grants are in `sql/monitoring.sql`.

use super::errors::{MonitorError, OrReport};
use super::health::{self, DropVerdict, HistoryGap};
use super::report::{self, SlotReport};
use super::{prometheus, settings};
use crate::ffi::lsn::Lsn;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

fn timestamptz(t: Option<i64>) -> Option<TimestampWithTimeZone> {
    t.and_then(|t| TimestampWithTimeZone::try_from(t).ok())
}

/// A row of `slot_health()` (the signature spells it out for pgrx).
type SlotHealthRow = (
    name!(slot_name, String),
    name!(plugin, Option<String>),
    name!(slot_type, String),
    name!(database, Option<String>),
    name!(active, bool),
    name!(active_pid, Option<i32>),
    name!(restart_lsn, Option<Lsn>),
    name!(confirmed_flush_lsn, Option<Lsn>),
    name!(lag_bytes, Option<i64>),
    name!(retained_wal_bytes, Option<i64>),
    name!(wal_status, Option<String>),
    name!(safe_wal_size, Option<i64>),
    name!(inactive_since, Option<TimestampWithTimeZone>),
    name!(wal_growth_bytes_per_sec, Option<f64>),
    name!(seconds_until_exhausted, Option<f64>),
    name!(forecast_basis, String),
    name!(status, String),
    name!(reason, String),
);

/// One row per replication slot (logical of any plugin, and physical): its
/// positions, lag, retained WAL, inactive time, WAL growth rate, exhaustion
/// forecast, and a status (`ok`, `warning`, `critical`) with the reason.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelt out here
fn slot_health() -> TableIterator<
    'static,
    (
        name!(slot_name, String),
        name!(plugin, Option<String>),
        name!(slot_type, String),
        name!(database, Option<String>),
        name!(active, bool),
        name!(active_pid, Option<i32>),
        name!(restart_lsn, Option<Lsn>),
        name!(confirmed_flush_lsn, Option<Lsn>),
        name!(lag_bytes, Option<i64>),
        name!(retained_wal_bytes, Option<i64>),
        name!(wal_status, Option<String>),
        name!(safe_wal_size, Option<i64>),
        name!(inactive_since, Option<TimestampWithTimeZone>),
        name!(wal_growth_bytes_per_sec, Option<f64>),
        name!(seconds_until_exhausted, Option<f64>),
        name!(forecast_basis, String),
        name!(status, String),
        name!(reason, String),
    ),
> {
    let rows: Vec<SlotHealthRow> = report::slots(&settings::thresholds())
        .into_iter()
        .map(|s| {
            (
                s.slot_name,
                s.plugin,
                s.slot_type,
                s.database,
                s.active,
                s.active_pid,
                s.restart_lsn,
                s.confirmed_flush_lsn,
                s.lag_bytes,
                s.retained_wal_bytes,
                s.wal_status.map(|w| w.as_str().to_string()),
                s.safe_wal_size,
                timestamptz(s.inactivity.since()),
                s.growth,
                s.forecast.seconds_until_exhausted,
                s.forecast.basis.as_str().to_string(),
                s.assessment.status.as_str().to_string(),
                s.assessment.reason,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The figures of slot_health(), replication_status(), the logical_ext
/// subscriptions of this database and the sampler in the Prometheus text
/// exposition format.
#[pg_extern(volatile, parallel_restricted)]
fn metrics() -> String {
    let slots = report::slots(&settings::thresholds());
    let walsenders = report::walsenders();
    let subscriptions = report::subscriptions();
    let sampler = report::sampler();
    prometheus::render(&prometheus::families(&prometheus::Inputs {
        slots: &slots,
        walsenders: &walsenders,
        subscriptions: &subscriptions,
        sampler: &sampler,
    }))
}

/// The state of the background sampler that records slot history.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelt out here
fn sampler_status() -> TableIterator<
    'static,
    (
        name!(preloaded, bool),
        name!(running, bool),
        name!(pid, Option<i32>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(monitor_interval_ms, Option<i32>),
        name!(last_sample_at, Option<TimestampWithTimeZone>),
        name!(samples_taken, i64),
        name!(tracked_slots, i32),
        name!(capacity, i32),
        name!(history_length, i32),
        name!(note, String),
    ),
> {
    let r = report::sampler();
    TableIterator::once((
        r.preloaded,
        r.running,
        r.pid,
        timestamptz(r.started_at),
        r.interval_ms,
        timestamptz(r.last_sample_at),
        r.samples_taken,
        r.tracked_slots,
        r.capacity,
        super::history::HISTORY_LEN as i32,
        if r.untracked_slots > 0 {
            format!("{}; {} slots not tracked (history table full)", r.note, r.untracked_slots)
        } else {
            r.note
        },
    ))
}

/// A row of `drop_stale_slots()` (the signature spells it out for pgrx).
type DropRow = (
    name!(slot_name, String),
    name!(slot_type, String),
    name!(plugin, Option<String>),
    name!(database, Option<String>),
    name!(inactive_since, Option<TimestampWithTimeZone>),
    name!(restart_lsn, Option<Lsn>),
    name!(confirmed_flush_lsn, Option<Lsn>),
    name!(lag_bytes, Option<i64>),
    name!(retained_wal_bytes, Option<i64>),
    name!(wal_status, Option<String>),
    name!(dropped, bool),
    name!(action, String),
);

/// The role that called us, outside this SECURITY DEFINER function.
fn caller() -> (pg_sys::Oid, String) {
    // SAFETY: GetOuterUserId is the session's current role outside any
    // SECURITY DEFINER function; GetUserNameFromId(noerr = false) returns a
    // palloc'd name or raises an ERROR.
    unsafe {
        let role = pg_sys::GetOuterUserId();
        (role, crate::ffi::cstr_to_string(pg_sys::GetUserNameFromId(role, false)))
    }
}

fn check_drop_privileges(role: pg_sys::Oid, role_name: &str, dry_run: bool) {
    // SAFETY: catalog lookups by role OID, valid in a transaction.
    let (may_drop, may_read) = unsafe {
        let may_drop = pg_sys::superuser_arg(role) || pg_sys::has_rolreplication(role);
        (may_drop, may_drop || pg_sys::has_privs_of_role(role, pg_sys::Oid::from(pg_sys::ROLE_PG_MONITOR)))
    };
    if !(may_drop || (dry_run && may_read)) {
        MonitorError::DropNotPermitted { role: role_name.to_string(), dry_run }.report();
    }
}

fn drop_row(s: &SlotReport, dropped: bool, action: String) -> DropRow {
    (
        s.slot_name.clone(),
        s.slot_type.clone(),
        s.plugin.clone(),
        s.database.clone(),
        timestamptz(s.inactivity.since()),
        s.restart_lsn,
        s.confirmed_flush_lsn,
        s.lag_bytes,
        s.retained_wal_bytes,
        s.wal_status.map(|w| w.as_str().to_string()),
        dropped,
        action,
    )
}

fn record_drop(s: &SlotReport, role_name: &str, inactive_for: &Interval) {
    let args: [DatumWithOid; 13] = [
        role_name.to_string().into(),
        s.slot_name.clone().into(),
        s.slot_type.clone().into(),
        s.plugin.clone().into(),
        s.database.clone().into(),
        timestamptz(s.inactivity.since()).into(),
        (*inactive_for).into(),
        s.restart_lsn.into(),
        s.confirmed_flush_lsn.into(),
        s.wal_lsn.into(),
        s.lag_bytes.into(),
        s.retained_wal_bytes.into(),
        s.wal_status.map(|w| w.as_str().to_string()).into(),
    ];
    Spi::run_with_args(
        "INSERT INTO logical_ext.slot_drop_audit
            (dropped_by, slot_name, slot_type, plugin, database, inactive_since, inactive_for,
             restart_lsn, confirmed_flush_lsn, wal_lsn, lag_bytes, retained_wal_bytes, wal_status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &args,
    )
    .or_report();
}

/// Drops (or, with `dry_run`, lists) the slots that have been inactive for
/// at least `inactive_for`. Never touches an active slot or one inactive for
/// less. Every drop is logged and recorded in `logical_ext.slot_drop_audit`.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelt out here
fn drop_stale_slots(
    inactive_for: Interval,
    dry_run: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(slot_name, String),
        name!(slot_type, String),
        name!(plugin, Option<String>),
        name!(database, Option<String>),
        name!(inactive_since, Option<TimestampWithTimeZone>),
        name!(restart_lsn, Option<Lsn>),
        name!(confirmed_flush_lsn, Option<Lsn>),
        name!(lag_bytes, Option<i64>),
        name!(retained_wal_bytes, Option<i64>),
        name!(wal_status, Option<String>),
        name!(dropped, bool),
        name!(action, String),
    ),
> {
    let (role, role_name) = caller();
    check_drop_privileges(role, &role_name, dry_run);
    let bound_us = i64::try_from(inactive_for.as_micros()).unwrap_or(i64::MAX);
    if bound_us < 0 {
        MonitorError::NegativeBound.report();
    }
    if !dry_run {
        // Dropping a slot cannot be rolled back, its audit row could: run
        // only where the statement's own commit follows.
        // SAFETY: a static C string; raises an ERROR inside a transaction block.
        unsafe { pg_sys::PreventInTransactionBlock(true, c"logical_ext.drop_stale_slots(dry_run => false)".as_ptr()) };
    }

    let slots = report::slots(&settings::thresholds());
    let mut rows = Vec::new();
    let mut unknown: Option<HistoryGap> = None;
    for s in &slots {
        match health::drop_verdict(&s.inactivity, s.now, bound_us) {
            DropVerdict::KeepActive | DropVerdict::KeepTooRecent => {}
            DropVerdict::KeepUnknown(gap) => unknown = Some(gap),
            DropVerdict::Drop if dry_run => rows.push(drop_row(s, false, "would drop".to_string())),
            DropVerdict::Drop => {
                let name = std::ffi::CString::new(s.slot_name.as_str()).or_report();
                // SAFETY: ReplicationSlotDrop(nowait = true) acquires the slot
                // (an ERROR if a process uses it) and drops it; the
                // subtransaction turns that ERROR into a row.
                match crate::ffi::in_subtransaction(|| unsafe { pg_sys::ReplicationSlotDrop(name.as_ptr(), true) }) {
                    Ok(()) => {
                        pgrx::log!(
                            "logical_ext: dropped replication slot \"{}\" ({} slot, inactive since {}, restart_lsn {}, \
                             confirmed_flush_lsn {}, lag {} bytes) for role \"{role_name}\"",
                            s.slot_name,
                            s.slot_type,
                            timestamptz(s.inactivity.since()).map_or("unknown".to_string(), |t| t.to_string()),
                            s.restart_lsn.map_or("NULL".to_string(), |l| l.to_string()),
                            s.confirmed_flush_lsn.map_or("NULL".to_string(), |l| l.to_string()),
                            s.lag_bytes.map_or("NULL".to_string(), |l| l.to_string()),
                        );
                        record_drop(s, &role_name, &inactive_for);
                        rows.push(drop_row(s, true, "dropped".to_string()));
                    }
                    Err(e) => rows.push(drop_row(s, false, format!("not dropped: {}", e.message()))),
                }
            }
        }
    }
    if let Some(gap) = unknown {
        // Only reachable when nothing was dropped: every slot shares the
        // same (missing) history, so no slot got a Drop verdict.
        MonitorError::NoHistory(gap).report();
    }
    TableIterator::new(rows)
}
