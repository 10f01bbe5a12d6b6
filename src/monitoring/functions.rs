//! The SQL functions of slot monitoring (schema `logical_ext`). Thin: they
//! call `report.rs` to gather and assess, and turn the result into rows or
//! text. Grants are in `sql/monitoring.sql`.

use super::candidates::{self, Filter, SlotFacts, SlotTypeFilter};
use super::errors::{MonitorError, OrReport};
use super::health::{self, DropVerdict, HistoryGap, Positions};
use super::prometheus::{self, Section, SectionError};
use super::report::{self, SlotReport};
use super::settings;
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
    name!(temporary, bool),
    name!(xmin_age, Option<i64>),
    name!(catalog_xmin_age, Option<i64>),
);

/// One row per replication slot (logical of any plugin, and physical): its
/// positions, lag, retained WAL, inactive time, WAL growth rate, exhaustion
/// forecast, xmin ages, and a status (`ok`, `warning`, `critical`, `lost`)
/// with the reason.
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
        name!(temporary, bool),
        name!(xmin_age, Option<i64>),
        name!(catalog_xmin_age, Option<i64>),
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
                s.temporary,
                s.xmin_age,
                s.catalog_xmin_age,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The figures of slot_health(), replication_status(), the logical_ext
/// subscriptions of this database and the sampler in the Prometheus text
/// exposition format.
/// Each section is gathered in its own subtransaction: one that raises an
/// ERROR is left out and named (`logical_ext_scrape_errors` and a comment
/// line) instead of failing the scrape. Errors of SQLSTATE class 57
/// (operator intervention: cancel, `statement_timeout`, shutdown) and 53
/// (insufficient resources) end the scrape as usual.
#[pg_extern(volatile, parallel_restricted)]
fn metrics() -> String {
    metrics_text()
}

/// The text of `metrics()`, also served by the metrics endpoint
/// (`endpoint.rs`). Inside a transaction.
pub(crate) fn metrics_text() -> String {
    let mut failed = Vec::new();
    let server = section(Section::Server, &mut failed, report::server);
    let slots = section(Section::Slots, &mut failed, || report::slots(&settings::thresholds()));
    let walsenders = section(Section::Walsenders, &mut failed, report::walsenders);
    let subscriptions = section(Section::Subscriptions, &mut failed, report::subscriptions);
    let sampler = section(Section::Sampler, &mut failed, report::sampler);
    let body = prometheus::render(&prometheus::families(&prometheus::Inputs {
        server: &server,
        slots: &slots,
        walsenders: &walsenders,
        subscriptions: &subscriptions,
        sampler: &sampler,
        failed: &failed,
    }));
    // Failover slots (src/failover/readiness.rs): their own families, left
    // out when reading them fails (the rest of the scrape stands).
    let failover = crate::ffi::in_subtransaction(crate::failover::metrics_text).unwrap_or_default();
    format!("{}{body}{failover}", prometheus::error_comments(&failed))
}

/// Whether an ERROR of this SQLSTATE must end the scrape rather than only
/// its section.
fn ends_the_scrape(sqlstate: &str) -> bool {
    sqlstate.starts_with("57") || sqlstate.starts_with("53")
}

fn section<T: Default>(which: Section, failed: &mut Vec<SectionError>, f: impl FnOnce() -> T) -> T {
    match crate::ffi::in_subtransaction(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let code = e.sql_error_code();
            // SAFETY: unpack_sql_state returns a static buffer with the
            // five-character SQLSTATE of a valid error code.
            let sqlstate = unsafe { crate::ffi::cstr_to_string(pg_sys::unpack_sql_state(code as i32)) };
            if ends_the_scrape(&sqlstate) {
                let mut r = pgrx::pg_sys::panic::ErrorReport::new(code, e.message().to_string(), "logical_ext.metrics");
                if let Some(h) = e.hint() {
                    r = r.set_hint(h.to_string());
                }
                r.report(PgLogLevel::ERROR);
                unreachable!("ERROR does not return");
            }
            failed.push(SectionError { section: which, sqlstate, message: e.message().to_string() });
            T::default()
        }
    }
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

/// Refuses a real drop wherever its audit row could be missing afterwards:
/// where it cannot be written (hot standby, read-only transaction), inside a
/// transaction block, and when called from another function — PL/pgSQL, a
/// SQL function, a DO block, anything through SPI — which could roll the
/// audit row back after the slot is gone (`PreventInTransactionBlock` only
/// sees the top-level statement, so a wrapper function fools it). Such
/// callers leave an error-context callback on `error_context_stack`; at the
/// top level there is none, or only the extended protocol's parameter
/// callback (`ParamsErrorCallback`).
fn check_real_drop_is_final() {
    // SAFETY: plain reads of backend globals.
    let (standby, read_only) = unsafe { (pg_sys::RecoveryInProgress(), pg_sys::XactReadOnly) };
    if standby || read_only {
        MonitorError::AuditNotWritable { standby }.report();
    }
    // SAFETY: a static C string; raises an ERROR inside a transaction block.
    unsafe { pg_sys::PreventInTransactionBlock(true, c"logical_ext.drop_stale_slots(dry_run => false)".as_ptr()) };
    if crate::ffi::called_from_another_function() {
        MonitorError::NestedCall.report();
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

/// A slot this backend acquired; released when dropped unless it was
/// dropped meanwhile (then `MyReplicationSlot` is NULL).
struct AcquiredSlot;

impl AcquiredSlot {
    /// `ReplicationSlotAcquire(nowait)`: an ERROR when a process uses it.
    fn acquire(name: &std::ffi::CStr) -> AcquiredSlot {
        // SAFETY: a valid C string; raises an ERROR (slot missing or in use)
        // without acquiring anything.
        unsafe { pg_sys::ReplicationSlotAcquire(name.as_ptr(), true) };
        AcquiredSlot
    }

    /// The acquired slot's positions and plugin, copied under its spinlock.
    fn positions(&self) -> (Positions, String) {
        // SAFETY: MyReplicationSlot is the slot acquired above (non-NULL
        // until dropped or released); the checkpointer may still invalidate
        // it, hence the spinlock around the copy.
        unsafe {
            let slot = pg_sys::MyReplicationSlot;
            pg_sys::SpinLockAcquire(&raw mut (*slot).mutex);
            let p = Positions {
                restart_lsn: (*slot).data.restart_lsn,
                confirmed_flush: if (*slot).data.database != pg_sys::InvalidOid {
                    (*slot).data.confirmed_flush
                } else {
                    0
                },
            };
            let plugin = (*slot).data.plugin;
            pg_sys::SpinLockRelease(&raw mut (*slot).mutex);
            let plugin = crate::ffi::cstr_to_string(plugin.data.as_ptr());
            (p, plugin)
        }
    }

    /// Drops the acquired slot. PostgreSQL 15 exports no
    /// `ReplicationSlotDropAcquired`; releasing an ephemeral slot drops it
    /// (`ReplicationSlotRelease`), so the slot is marked ephemeral (in memory
    /// only: a crash before the release leaves it persistent on disk) right
    /// before the release, with nothing that can fail in between.
    fn drop_it(self) {
        // SAFETY: MyReplicationSlot is the slot this backend acquired; its
        // spinlock guards the persistency change.
        unsafe {
            let slot = pg_sys::MyReplicationSlot;
            pg_sys::SpinLockAcquire(&raw mut (*slot).mutex);
            (*slot).data.persistency = pg_sys::ReplicationSlotPersistency::RS_EPHEMERAL;
            pg_sys::SpinLockRelease(&raw mut (*slot).mutex);
            pg_sys::ReplicationSlotRelease();
        }
    }
}

impl Drop for AcquiredSlot {
    fn drop(&mut self) {
        // SAFETY: releases the slot this backend still holds, if any.
        unsafe {
            if !pg_sys::MyReplicationSlot.is_null() {
                pg_sys::ReplicationSlotRelease();
            }
        }
    }
}

/// Why a slot that looked stale was not dropped after all.
enum Kept {
    /// Used (or re-created) between the report and the drop.
    MovedMeanwhile,
    /// An ERROR: in use, gone, or the audit row could not be written.
    Error(String),
}

/// Acquires the slot, checks that it is still the slot the report saw, at
/// the same positions (so no consumer used it in between: while we hold it
/// none can), writes the audit row and drops it — all in one subtransaction,
/// so the audit row exists exactly when the slot was dropped.
fn drop_one(s: &SlotReport, role_name: &str, inactive_for: &Interval) -> Result<(), Kept> {
    let name = std::ffi::CString::new(s.slot_name.as_str()).or_report();
    let seen = Positions {
        restart_lsn: s.restart_lsn.map_or(0, |l| l.0),
        confirmed_flush: s.confirmed_flush_lsn.map_or(0, |l| l.0),
    };
    let r = crate::ffi::in_subtransaction(std::panic::AssertUnwindSafe(|| {
        let slot = AcquiredSlot::acquire(&name);
        let (now, plugin) = slot.positions();
        let same_slot = s.plugin.as_deref().unwrap_or("") == plugin;
        if !same_slot || health::moved_since(seen, now) {
            return false;
        }
        record_drop(s, role_name, inactive_for);
        slot.drop_it();
        true
    }));
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(Kept::MovedMeanwhile),
        Err(e) => Err(Kept::Error(e.message().to_string())),
    }
}

/// The old two-argument entry point (`drop_stale_slots_wrapper` of 0.1.0's
/// SQL): the same as the new function with its defaults. Not in the SQL of
/// this version, which replaces it with [`drop_stale_slots_filtered`].
#[pg_extern(sql = false)]
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
    TableIterator::new(drop_stale(inactive_for, dry_run, Filter::default()))
}

/// Drops (or, with `dry_run`, lists) the candidate slots (see
/// `candidates.rs`) that have been inactive — neither active nor moved — for
/// at least `inactive_for`. Every drop is logged and recorded in
/// `logical_ext.slot_drop_audit` in the same subtransaction.
#[pg_extern(name = "drop_stale_slots", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity, clippy::too_many_arguments)] // pgrx needs the row type spelt out here
fn drop_stale_slots_filtered(
    inactive_for: Interval,
    dry_run: default!(bool, true),
    slot_types: default!(Vec<String>, "ARRAY['logical']"),
    include_names: default!(Vec<String>, "ARRAY['%']"),
    exclude_names: default!(Vec<String>, "ARRAY[]::text[]"),
    min_retained_bytes: default!(i64, 0),
    include_subscription_slots: default!(bool, false),
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
    let slot_type = SlotTypeFilter::parse(slot_types.iter().map(String::as_str))
        .unwrap_or_else(|t| MonitorError::BadSlotType(t).report());
    if min_retained_bytes < 0 {
        MonitorError::NegativeRetained.report();
    }
    let filter = Filter { slot_type, include_names, exclude_names, min_retained_bytes, include_subscription_slots };
    TableIterator::new(drop_stale(inactive_for, dry_run, filter))
}

fn drop_stale(inactive_for: Interval, dry_run: bool, filter: Filter) -> Vec<DropRow> {
    let (role, role_name) = caller();
    check_drop_privileges(role, &role_name, dry_run);
    let bound_us = i64::try_from(inactive_for.as_micros()).unwrap_or(i64::MAX);
    if bound_us < 0 {
        MonitorError::NegativeBound.report();
    }
    let interval_us = settings::monitor_interval().map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let min_us = candidates::min_inactive_for_us(interval_us);
    if bound_us < min_us {
        MonitorError::BoundTooSmall { min_us }.report();
    }
    if !dry_run {
        check_real_drop_is_final();
    }

    let slots = report::slots(&settings::thresholds());
    let mut rows = Vec::new();
    let mut unknown: Option<HistoryGap> = None;
    for s in &slots {
        let facts = SlotFacts {
            name: &s.slot_name,
            slot_type: &s.slot_type,
            plugin: s.plugin.as_deref(),
            retained_bytes: s.retained_wal_bytes,
        };
        if candidates::excluded(&filter, facts).is_some() {
            continue;
        }
        match health::drop_verdict(&s.inactivity, s.now, bound_us) {
            DropVerdict::KeepActive | DropVerdict::KeepTooRecent => {}
            DropVerdict::KeepUnknown(gap) => unknown = Some(gap),
            DropVerdict::Drop if dry_run => rows.push(drop_row(s, false, "would drop".to_string())),
            DropVerdict::Drop => match drop_one(s, &role_name, &inactive_for) {
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
                    rows.push(drop_row(s, true, "dropped".to_string()));
                }
                Err(Kept::MovedMeanwhile) => {
                    rows.push(drop_row(s, false, "not dropped: used since it was assessed".to_string()))
                }
                Err(Kept::Error(e)) => rows.push(drop_row(s, false, format!("not dropped: {e}"))),
            },
        }
    }
    if let Some(gap) = unknown {
        // Only reachable when nothing was dropped: every slot shares the
        // same (missing) history, so no slot got a Drop verdict.
        MonitorError::NoHistory(gap).report();
    }
    rows
}
