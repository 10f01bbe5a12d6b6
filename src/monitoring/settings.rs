//! The monitoring settings (`logical_ext.slot_lag_warning`,
//! `logical_ext.slot_lag_critical`, `logical_ext.slot_inactive_warning`,
//! `logical_ext.slot_xmin_age_warning`, `logical_ext.slot_xmin_age_critical`,
//! `logical_ext.monitor_interval`, the metrics endpoint's
//! `logical_ext.metrics_listen` and `logical_ext.metrics_database`, and for pruning the logs
//! `logical_ext.log_prune_interval`, `logical_ext.ddl_log_retention`; the
//! conflict log's retention is the apply part's
//! `logical_ext.conflict_log_retention`). Defined by [`define`], which
//! `crate::settings::register` calls before it reserves the prefix (so a value
//! set in postgresql.conf before the library was loaded is kept).

use super::health::Thresholds;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::time::Duration;

/// kB; `-1` disables the check.
static SLOT_LAG_WARNING_KB: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
/// kB; `-1` disables the check.
static SLOT_LAG_CRITICAL_KB: GucSetting<i32> = GucSetting::<i32>::new(10 * 1024 * 1024);
/// Seconds; `-1` disables the check.
static SLOT_INACTIVE_WARNING_S: GucSetting<i32> = GucSetting::<i32>::new(300);
/// Transactions; `-1` disables the check. Half of the default
/// `autovacuum_freeze_max_age` (200 million).
static SLOT_XMIN_AGE_WARNING: GucSetting<i32> = GucSetting::<i32>::new(100_000_000);
/// Transactions; `-1` disables the check. About half way to wraparound.
static SLOT_XMIN_AGE_CRITICAL: GucSetting<i32> = GucSetting::<i32>::new(1_000_000_000);
/// `host:port` of the metrics endpoint; empty = off.
static METRICS_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// The database the endpoint's worker connects to.
static METRICS_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Milliseconds; `0` stops sampling.
static MONITOR_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// Seconds; `0` stops pruning.
static LOG_PRUNE_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(3600);
/// Seconds; `0` keeps `ddl_log` rows forever.
static DDL_LOG_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 24 * 3600);

/// Smallest sampling interval accepted.
pub(crate) const MIN_MONITOR_INTERVAL_MS: i32 = 100;

pub(crate) fn define() {
    GucRegistry::define_int_guc(
        c"logical_ext.slot_lag_warning",
        c"Replication lag (current WAL position minus confirmed_flush_lsn) at which logical_ext.slot_health() reports a slot as warning.",
        c"-1 disables the check. The default, 1GB, follows the usual advice to alert above 1 GB of slot lag.",
        &SLOT_LAG_WARNING_KB,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"logical_ext.slot_lag_critical",
        c"Replication lag at which logical_ext.slot_health() reports a slot as critical.",
        c"-1 disables the check.",
        &SLOT_LAG_CRITICAL_KB,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"logical_ext.slot_inactive_warning",
        c"How long a slot may stay inactive before logical_ext.slot_health() reports it as warning.",
        c"0 warns about any inactive slot, -1 disables the check. Without the sampler (logical_ext not in \
shared_preload_libraries) the inactive time is unknown and any inactive slot is reported.",
        &SLOT_INACTIVE_WARNING_S,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"logical_ext.slot_xmin_age_warning",
        c"Age in transactions of a slot's xmin or catalog_xmin at which logical_ext.slot_health() reports it as warning.",
        c"-1 disables the check. Such a slot keeps VACUUM from removing dead rows and moves the server towards \
transaction ID wraparound.",
        &SLOT_XMIN_AGE_WARNING,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"logical_ext.slot_xmin_age_critical",
        c"Age in transactions of a slot's xmin or catalog_xmin at which logical_ext.slot_health() reports it as critical.",
        c"-1 disables the check.",
        &SLOT_XMIN_AGE_CRITICAL,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"logical_ext.metrics_listen",
        c"Address (host:port) where a logical_ext background worker serves GET /metrics in the Prometheus text format.",
        c"Empty (the default) serves nothing. Needs logical_ext in shared_preload_libraries; switching it on from \
empty needs a restart, a changed address is bound again at reload. Use a loopback address unless the port is \
firewalled: the figures need no password.",
        &METRICS_LISTEN,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"logical_ext.metrics_database",
        c"The database the metrics endpoint's worker connects to; its logical_ext subscriptions are the ones served.",
        c"logical_ext must be installed in it for the walsender and subscription figures. A change at reload \
makes the worker reconnect.",
        &METRICS_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"logical_ext.monitor_interval",
        c"How often the logical_ext sampler records the position and state of every replication slot.",
        c"Needs logical_ext in shared_preload_libraries. 0 stops sampling (the history is kept but ages).",
        &MONITOR_INTERVAL_MS,
        0,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"logical_ext.log_prune_interval",
        c"How often the logical_ext sampler deletes old rows of logical_ext.conflict_log and logical_ext.ddl_log in every database.",
        c"Needs logical_ext in shared_preload_libraries. 0 stops pruning. Retention: logical_ext.conflict_log_retention \
and logical_ext.ddl_log_retention.",
        &LOG_PRUNE_INTERVAL_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"logical_ext.ddl_log_retention",
        c"How long rows of logical_ext.ddl_log are kept.",
        c"Deleted every logical_ext.log_prune_interval. 0 keeps them forever.",
        &DDL_LOG_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// How often the logs are pruned, or `None` when pruning is off.
pub(crate) fn log_prune_interval() -> Option<Duration> {
    match LOG_PRUNE_INTERVAL_S.get() {
        s if s <= 0 => None,
        s => Some(Duration::from_secs(s as u64)),
    }
}

/// `ddl_log` retention in seconds (0 = forever).
pub(crate) fn ddl_log_retention_secs() -> i32 {
    DDL_LOG_RETENTION_S.get()
}

/// The thresholds in force in this session.
pub(crate) fn thresholds() -> Thresholds {
    Thresholds::from_settings(SLOT_LAG_WARNING_KB.get(), SLOT_LAG_CRITICAL_KB.get(), SLOT_INACTIVE_WARNING_S.get())
        .with_xmin_age(SLOT_XMIN_AGE_WARNING.get(), SLOT_XMIN_AGE_CRITICAL.get())
}

/// `logical_ext.metrics_listen`, `None` when empty (off).
pub(crate) fn metrics_listen() -> Option<String> {
    let v = METRICS_LISTEN.get()?;
    let v = v.to_string_lossy().trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// `logical_ext.metrics_database`.
pub(crate) fn metrics_database() -> String {
    METRICS_DATABASE.get().map_or_else(|| "postgres".to_string(), |v| v.to_string_lossy().into_owned())
}

/// The sampling interval, or `None` when sampling is switched off. Values
/// below [`MIN_MONITOR_INTERVAL_MS`] are raised to it.
pub(crate) fn monitor_interval() -> Option<Duration> {
    match MONITOR_INTERVAL_MS.get() {
        0 => None,
        ms => Some(Duration::from_millis(ms.max(MIN_MONITOR_INTERVAL_MS) as u64)),
    }
}
