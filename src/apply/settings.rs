//! The apply part's settings (`logical_ext.conflict_log_retention`), defined
//! by [`define`] from `crate::settings::register` before the prefix is
//! reserved.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Seconds; `0` keeps conflict log rows forever.
pub(crate) static CONFLICT_LOG_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 3600);

pub(crate) fn define() {
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
