//! The local replication slots as the failover code looks at them (copied
//! out of shared memory by `ffi::slots`).

use pgrx::pg_sys;

#[derive(Clone, Debug)]
pub(crate) struct SlotView {
    pub(crate) name: String,
    /// Logical slots belong to a database.
    pub(crate) database: pg_sys::Oid,
    pub(crate) plugin: String,
    pub(crate) persistent: bool,
    pub(crate) active_pid: i32,
    pub(crate) restart_lsn: u64,
    pub(crate) confirmed_flush: u64,
    pub(crate) catalog_xmin: u32,
    pub(crate) invalidated: bool,
}

impl SlotView {
    pub(crate) fn logical(&self) -> bool {
        self.database != pg_sys::InvalidOid
    }
}

pub(crate) use crate::ffi::slots::name_to_string;

/// Every slot in use.
pub(crate) fn read() -> Vec<SlotView> {
    crate::ffi::slots::copy_all()
        .into_iter()
        .map(|crate::ffi::slots::Copied { data: d, active_pid: pid }| SlotView {
            name: name_to_string(&d.name),
            database: d.database,
            plugin: name_to_string(&d.plugin),
            persistent: d.persistency == pg_sys::ReplicationSlotPersistency::RS_PERSISTENT,
            active_pid: pid,
            restart_lsn: d.restart_lsn,
            confirmed_flush: d.confirmed_flush,
            catalog_xmin: d.catalog_xmin.into_inner(),
            invalidated: d.restart_lsn == 0 && d.invalidated_at != 0,
        })
        .collect()
}

/// The named physical slots as the gate sees them, with each one's
/// catalog_xmin (the standby's hot_standby_feedback).
pub(crate) fn standby_slots(names: &[String]) -> Vec<(super::rules::StandbySlot, u32)> {
    use super::rules::StandbySlot;
    let all = read();
    names
        .iter()
        .map(|n| match all.iter().find(|s| &s.name == n) {
            None => (StandbySlot::Missing, 0),
            Some(s) if s.logical() || s.invalidated => (StandbySlot::Unusable, 0),
            Some(s) => (StandbySlot::Flushed(s.restart_lsn), s.catalog_xmin),
        })
        .collect()
}
