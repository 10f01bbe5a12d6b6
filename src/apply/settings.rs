//! The apply part's settings (`logical_ext.conflict_log_retention`,
//! `logical_ext.max_sync_workers_per_subscription`), defined
//! by [`define`] from `crate::settings::register` before the prefix is
//! reserved.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Seconds; `0` keeps conflict log rows forever.
pub(crate) static CONFLICT_LOG_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 3600);

/// Table copies one subscription runs at the same time.
pub(crate) static MAX_SYNC_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);

pub(crate) fn define() {
    GucRegistry::define_int_guc(
        c"logical_ext.max_sync_workers_per_subscription",
        c"Table copies (sync workers) one subscription runs in parallel.",
        c"Each is a background worker: size max_worker_processes for them.",
        &MAX_SYNC_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"logical_ext.conflict_log_retention",
        c"How long rows of logical_ext.conflict_log are kept.",
        c"Apply workers delete older rows when a session starts. 0 keeps them forever.",
        &CONFLICT_LOG_RETENTION,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}
