//! The local replication slots, read from shared memory as
//! `pg_get_replication_slots()` does (control lock shared, each slot's
//! spinlock around the copy).

use pgrx::pg_sys;

/// `ReplicationSlotControlLock` in PostgreSQL 15's `storage/lwlocknames.h`.
const REPLICATION_SLOT_CONTROL_LOCK: usize = 37;

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

pub(crate) fn name_to_string(n: &pg_sys::NameData) -> String {
    let bytes: Vec<u8> = n.data.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every slot in use.
pub(crate) fn read() -> Vec<SlotView> {
    // SAFETY: plain int GUC.
    let max = usize::try_from(unsafe { pg_sys::max_replication_slots }).unwrap_or(0);
    let mut raw: Vec<(pg_sys::ReplicationSlotPersistentData, i32)> = Vec::with_capacity(max);
    // SAFETY: the protocol of pg_get_replication_slots(): the control lock
    // (shared) keeps slots from being created or dropped, each slot's
    // spinlock makes the copy consistent. Nothing in the spinlocked section
    // can fail or allocate (`raw` has room for every slot).
    unsafe {
        let ctl = pg_sys::ReplicationSlotCtl;
        if ctl.is_null() || max == 0 {
            return Vec::new();
        }
        let lock = &raw mut (*pg_sys::MainLWLockArray.add(REPLICATION_SLOT_CONTROL_LOCK)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED);
        let slots = (&raw mut (*ctl).replication_slots).cast::<pg_sys::ReplicationSlot>();
        for i in 0..max {
            let slot = slots.add(i);
            if !(*slot).in_use {
                continue;
            }
            pg_sys::SpinLockAcquire(&raw mut (*slot).mutex);
            let r = ((*slot).data, (*slot).active_pid);
            pg_sys::SpinLockRelease(&raw mut (*slot).mutex);
            raw.push(r);
        }
        pg_sys::LWLockRelease(lock);
    }
    raw.into_iter()
        .map(|(d, pid)| SlotView {
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
