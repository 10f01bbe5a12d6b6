//! The local replication slots, copied out of shared memory as
//! `pg_get_replication_slots()` does: the control lock held shared keeps
//! slots from being created or dropped, each slot's spinlock makes the copy
//! of its fields consistent. The slot monitor (monitoring/sampler.rs) and
//! the failover code (failover/slots.rs) read them through here.

use pgrx::pg_sys;

/// `ReplicationSlotControlLock` in PostgreSQL 15's `storage/lwlocknames.h`.
pub(crate) const REPLICATION_SLOT_CONTROL_LOCK: usize = 37;
/// `ProcArrayLock` in PostgreSQL 15's `storage/lwlocknames.h`.
pub(crate) const PROC_ARRAY_LOCK: usize = 4;

/// One slot in use: its persistent data and the pid using it (0: none).
pub(crate) struct Copied {
    pub(crate) data: pg_sys::ReplicationSlotPersistentData,
    pub(crate) active_pid: i32,
}

/// Every slot in use, in slot-array order.
pub(crate) fn copy_all() -> Vec<Copied> {
    // SAFETY: plain int GUC.
    let max = usize::try_from(unsafe { pg_sys::max_replication_slots }).unwrap_or(0);
    let mut raw: Vec<Copied> = Vec::with_capacity(max);
    // SAFETY: the protocol of pg_get_replication_slots() (module notes).
    // ReplicationSlotCtl holds max_replication_slots slots (NULL when that is
    // 0). Nothing in the spinlocked section can fail or allocate (`raw` has
    // room for every slot).
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
            let r = Copied { data: (*slot).data, active_pid: (*slot).active_pid };
            pg_sys::SpinLockRelease(&raw mut (*slot).mutex);
            raw.push(r);
        }
        pg_sys::LWLockRelease(lock);
    }
    raw
}

/// A `NameData` as text (up to its NUL).
pub(crate) fn name_to_string(n: &pg_sys::NameData) -> String {
    let bytes: Vec<u8> = n.data.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
