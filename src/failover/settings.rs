//! Publisher failover settings, defined from `crate::settings::register`
//! before the prefix is reserved.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Physical slots whose standbys must have flushed a transaction before a
/// walsender of a failover slot sends it (comma-separated).
pub(crate) static STANDBY_SLOT_NAMES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// On a physical standby: keep copies of the primary's failover slots.
pub(crate) static SYNCHRONIZE_SLOTS: GucSetting<bool> = GucSetting::<bool>::new(false);
/// The database the standby's worker connects to (locally and on the primary).
pub(crate) static SLOT_SYNC_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

pub(crate) fn define() {
    GucRegistry::define_string_guc(
        c"logical_ext.standby_slot_names",
        c"Physical replication slots whose standbys must have flushed a transaction before a walsender of a failover slot sends it.",
        c"Comma-separated physical slot names (PostgreSQL 17's synchronized_standby_slots). Empty: no waiting.",
        &STANDBY_SLOT_NAMES,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"logical_ext.synchronize_slots",
        c"On a physical standby: keep copies of the primary's failover slots (logical_ext.set_slot_failover).",
        c"Needs logical_ext in shared_preload_libraries, hot_standby_feedback = on and primary_slot_name.",
        &SYNCHRONIZE_SLOTS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"logical_ext.slot_sync_database",
        c"The database the slot synchronization worker connects to, locally and on the primary.",
        c"logical_ext must be installed there on the primary: its logical_ext.failover_slot lists the slots to copy.",
        &SLOT_SYNC_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// The names of `logical_ext.standby_slot_names`.
pub(crate) fn standby_slot_names() -> Vec<String> {
    parse_names(STANDBY_SLOT_NAMES.get().as_deref().map(|c| c.to_string_lossy()).as_deref().unwrap_or(""))
}

pub(crate) fn slot_sync_database() -> String {
    SLOT_SYNC_DATABASE.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_else(|| "postgres".into())
}

/// Split a comma-separated list, trimming blanks and double quotes.
pub(crate) fn parse_names(s: &str) -> Vec<String> {
    s.split(',').map(|n| n.trim().trim_matches('"').to_string()).filter(|n| !n.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_split_and_trimmed() {
        assert_eq!(super::parse_names(" a, \"b\" ,,c"), vec!["a", "b", "c"]);
        assert!(super::parse_names("").is_empty());
    }
}
