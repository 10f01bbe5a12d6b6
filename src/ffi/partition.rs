//! Partition routing and partition trees: the executor and catalog calls
//! PostgreSQL 15 exports but pgrx 0.18 does not bind
//! (`executor/execPartition.h`, `catalog/pg_inherits.h`), each wrapped so
//! that an ERROR they raise becomes a Rust unwind (`pg_guard_ffi_boundary`)
//! instead of a longjmp across Rust frames.

use pgrx::pg_sys;

/// `executor/execPartition.h`: the routing state; opaque to us.
#[repr(C)]
pub(crate) struct PartitionTupleRouting {
    _opaque: [u8; 0],
}

unsafe extern "C-unwind" {
    fn ExecSetupPartitionTupleRouting(estate: *mut pg_sys::EState, rel: pg_sys::Relation)
    -> *mut PartitionTupleRouting;
    fn ExecFindPartition(
        mtstate: *mut pg_sys::ModifyTableState,
        root: *mut pg_sys::ResultRelInfo,
        proute: *mut PartitionTupleRouting,
        slot: *mut pg_sys::TupleTableSlot,
        estate: *mut pg_sys::EState,
    ) -> *mut pg_sys::ResultRelInfo;
    fn ExecCleanupTupleRouting(mtstate: *mut pg_sys::ModifyTableState, proute: *mut PartitionTupleRouting);
    fn find_all_inheritors(
        parent: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        numparents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// Set up routing of rows into the partitions of `rel`.
///
/// # Safety
/// `estate` is a live executor state, `rel` an open partitioned table.
pub(crate) unsafe fn setup_routing(estate: *mut pg_sys::EState, rel: pg_sys::Relation) -> *mut PartitionTupleRouting {
    // SAFETY: per the caller's promise; an ERROR unwinds.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| ExecSetupPartitionTupleRouting(estate, rel)) }
}

/// The leaf partition `slot` (a row of the root's type) belongs to; raises
/// `no partition of relation ... found for row` (23514) when none does.
///
/// # Safety
/// Arguments as set up by [`setup_routing`], a valid slot of the root.
pub(crate) unsafe fn find_partition(
    mtstate: *mut pg_sys::ModifyTableState,
    root: *mut pg_sys::ResultRelInfo,
    proute: *mut PartitionTupleRouting,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
) -> *mut pg_sys::ResultRelInfo {
    // SAFETY: per the caller's promise; an ERROR unwinds.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| ExecFindPartition(mtstate, root, proute, slot, estate)) }
}

/// Close the partitions and indexes routing opened (locks are kept).
///
/// # Safety
/// Once per [`setup_routing`], before the executor state is freed.
pub(crate) unsafe fn cleanup_routing(mtstate: *mut pg_sys::ModifyTableState, proute: *mut PartitionTupleRouting) {
    // SAFETY: per the caller's promise.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| ExecCleanupTupleRouting(mtstate, proute)) }
}

/// `relid` and every relation below it in its inheritance or partition
/// tree, each locked with `lockmode`.
///
/// # Safety
/// Inside a transaction.
pub(crate) unsafe fn all_inheritors(relid: pg_sys::Oid, lockmode: pg_sys::LOCKMODE) -> Vec<pg_sys::Oid> {
    // SAFETY: per the caller's promise; an ERROR unwinds.
    unsafe {
        let list = pg_sys::ffi::pg_guard_ffi_boundary(|| find_all_inheritors(relid, lockmode, std::ptr::null_mut()));
        super::oid_list(list)
    }
}

/// The owner of `relid` and of every relation below it in its partition
/// tree, as (relation, owner) pairs; each relation locked with `lockmode`.
///
/// # Safety
/// Inside a transaction.
pub(crate) unsafe fn tree_owners(relid: pg_sys::Oid, lockmode: pg_sys::LOCKMODE) -> Vec<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: every relation is locked by `all_inheritors` before it is
    // opened without a further lock; an ERROR unwinds.
    unsafe {
        all_inheritors(relid, lockmode)
            .into_iter()
            .map(|r| {
                let rel = pg_sys::table_open(r, pg_sys::NoLock as i32);
                let owner = (*(*rel).rd_rel).relowner;
                pg_sys::table_close(rel, pg_sys::NoLock as i32);
                (r, owner)
            })
            .collect()
    }
}
