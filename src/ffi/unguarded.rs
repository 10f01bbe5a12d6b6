//! PostgreSQL functions called without pgrx's per-call guard, for the
//! apply worker's per-row loops: each pgrx-bound call checks the thread and
//! sets up a `sigsetjmp` (so that an ERROR becomes a Rust panic), ~5% of a
//! bulk apply when a row makes a dozen calls. The functions here run a
//! row's calls inside **one** `pg_sys::ffi::pg_guard_ffi_boundary`: an
//! ERROR longjmps to it and becomes the same panic as before.
//!
//! What makes that sound (pgrx's documented rule for the boundary's
//! closure): the closures below own nothing with a destructor, allocate
//! nothing, index nothing and call no Rust code that could panic; every
//! pointer and function pointer is resolved before the boundary.
//!
//! Two functions need no boundary at all: `GetUserIdAndSecContext` and
//! `SetUserIdAndSecContext` only read or assign backend globals and cannot
//! raise an ERROR (miscinit.c); the role switch of every applied change
//! (`ffi/identity.rs`) calls them directly.

use pgrx::pg_sys;
use std::ffi::c_char;

unsafe extern "C-unwind" {
    #[link_name = "InputFunctionCall"]
    fn raw_input_function_call(
        flinfo: *mut pg_sys::FmgrInfo,
        str_: *mut c_char,
        typioparam: pg_sys::Oid,
        typmod: i32,
    ) -> pg_sys::Datum;
    #[link_name = "ExecPartitionCheck"]
    fn raw_exec_partition_check(
        rri: *mut pg_sys::ResultRelInfo,
        slot: *mut pg_sys::TupleTableSlot,
        estate: *mut pg_sys::EState,
        emit_error: bool,
    ) -> bool;
    #[link_name = "ExecConstraints"]
    fn raw_exec_constraints(
        rri: *mut pg_sys::ResultRelInfo,
        slot: *mut pg_sys::TupleTableSlot,
        estate: *mut pg_sys::EState,
    );
    #[link_name = "ExecInsertIndexTuples"]
    fn raw_exec_insert_index_tuples(
        rri: *mut pg_sys::ResultRelInfo,
        slot: *mut pg_sys::TupleTableSlot,
        estate: *mut pg_sys::EState,
        update: bool,
        no_dup_err: bool,
        spec_conflict: *mut bool,
        arbiter_indexes: *mut pg_sys::List,
    ) -> *mut pg_sys::List;
    #[link_name = "list_free"]
    fn raw_list_free(list: *mut pg_sys::List);
    #[link_name = "MemoryContextReset"]
    fn raw_memory_context_reset(context: pg_sys::MemoryContext);
    #[link_name = "ExecFetchSlotHeapTuple"]
    fn raw_exec_fetch_slot_heap_tuple(
        slot: *mut pg_sys::TupleTableSlot,
        materialize: bool,
        should_free: *mut bool,
    ) -> pg_sys::HeapTuple;
    // Two plain assignments/reads of backend globals (miscinit.c): they
    // raise nothing, so they need no boundary at all.
    #[link_name = "GetUserIdAndSecContext"]
    fn raw_get_user_id_and_sec_context(userid: *mut pg_sys::Oid, sec_context: *mut i32);
    #[link_name = "SetUserIdAndSecContext"]
    fn raw_set_user_id_and_sec_context(userid: pg_sys::Oid, sec_context: i32);
}

/// The current user id and security context (`GetUserIdAndSecContext`,
/// which only reads two globals and cannot raise: no guard needed).
pub(crate) fn user_id_and_sec_context() -> (pg_sys::Oid, i32) {
    let (mut user, mut sec_context) = (pg_sys::InvalidOid, 0i32);
    // SAFETY: writes through two valid pointers; raises nothing.
    unsafe { raw_get_user_id_and_sec_context(&mut user, &mut sec_context) };
    (user, sec_context)
}

/// Set the current user id and security context (`SetUserIdAndSecContext`,
/// two assignments of globals that cannot raise: no guard needed).
///
/// # Safety
/// What PostgreSQL's function requires: the caller restores what it saved
/// (`ffi/identity.rs`).
pub(crate) unsafe fn set_user_id_and_sec_context(user: pg_sys::Oid, sec_context: i32) {
    // SAFETY: per the caller's promise; raises nothing.
    unsafe { raw_set_user_id_and_sec_context(user, sec_context) }
}

/// `ExecCopySlot(dst, src)` and the length of the heap tuple `dst` then
/// holds, in one guarded call (a buffered row, `apply/batch.rs`).
///
/// # Safety
/// `dst` is a table slot of the relation `src`'s row belongs to, `src` is
/// not empty; both valid, inside their transaction.
pub(crate) unsafe fn copy_slot_tuple_len(dst: *mut pg_sys::TupleTableSlot, src: *mut pg_sys::TupleTableSlot) -> u32 {
    // SAFETY: a slot always has its ops (`ExecCopySlot` is
    // `dst->tts_ops->copyslot(dst, src)`, an inline function pgrx wraps).
    let copy = unsafe { (*(*dst).tts_ops).copyslot };
    let Some(copy) = copy else {
        // SAFETY: per the caller's promise (no ops: let PostgreSQL's own
        // wrapper and its guard deal with it).
        unsafe {
            pg_sys::ExecCopySlot(dst, src);
            return (*pg_sys::ExecFetchSlotHeapTuple(dst, false, std::ptr::null_mut())).t_len;
        }
    };
    // SAFETY: per the caller's promise; the closure holds only copies of
    // pointers (see the module notes).
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            copy(dst, src);
            (*raw_exec_fetch_slot_heap_tuple(dst, false, std::ptr::null_mut())).t_len
        })
    }
}

/// Clear `slots` and reset `per_tuple` (null: none), in one guarded call:
/// the end of a cached target's change (`apply/executor.rs`).
///
/// # Safety
/// Valid slots of one executor state and its per-tuple memory, inside
/// their transaction.
pub(crate) unsafe fn clear_slots_and_reset(slots: &[*mut pg_sys::TupleTableSlot], per_tuple: pg_sys::MemoryContext) {
    // SAFETY: per the caller's promise; the closure iterates a borrowed
    // slice (no allocation, no indexing) and calls C functions only.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            for &slot in slots {
                if let Some(clear) = (*(*slot).tts_ops).clear {
                    clear(slot);
                }
            }
            if !per_tuple.is_null() {
                raw_memory_context_reset(per_tuple);
            }
        })
    }
}

/// `InputFunctionCall` without a guard of its own, for a loop of calls
/// inside one `pg_sys::ffi::pg_guard_ffi_boundary` (`apply/row_input.rs`).
///
/// # Safety
/// Only inside such a boundary (an ERROR longjmps to it); `flinfo` is set
/// up for an input function, `text` NUL-terminated, both valid for the call.
pub(crate) unsafe fn input_function_call(
    flinfo: *mut pg_sys::FmgrInfo,
    text: *mut c_char,
    typioparam: pg_sys::Oid,
    typmod: i32,
) -> pg_sys::Datum {
    // SAFETY: per the caller's promise.
    unsafe { raw_input_function_call(flinfo, text, typioparam, typmod) }
}

/// What a buffered row needs after the heap insertion (`apply/batch.rs`),
/// in `ExecSimpleRelationInsert`'s order: its partition constraint, its
/// NOT NULL/CHECK constraints, its index entries; then the slot is cleared
/// and the per-tuple memory reset. One guarded call per row.
pub(crate) struct RowChecks {
    pub(crate) rri: *mut pg_sys::ResultRelInfo,
    pub(crate) estate: *mut pg_sys::EState,
    pub(crate) per_tuple: pg_sys::MemoryContext,
    pub(crate) partition: bool,
    pub(crate) constrained: bool,
    pub(crate) indexed: bool,
}

impl RowChecks {
    /// Check and index the row in `slot`, then clear it; an ERROR (a
    /// unique violation, a failed constraint) unwinds as a pgrx error.
    ///
    /// # Safety
    /// The fields are the cached target's, inside its transaction, during
    /// a change with an active snapshot; `slot` holds a row of the relation
    /// already in the heap (`table_multi_insert`).
    pub(crate) unsafe fn run(&self, slot: *mut pg_sys::TupleTableSlot) {
        let (rri, estate, per_tuple) = (self.rri, self.estate, self.per_tuple);
        let (partition, constrained, indexed) = (self.partition, self.constrained, self.indexed);
        // SAFETY: a table slot always has its ops (`ExecClearTuple` is
        // `slot->tts_ops->clear(slot)`, an inline function pgrx wraps).
        let clear = unsafe { (*(*slot).tts_ops).clear };
        // SAFETY: per the caller's promise; the closure holds only copies
        // of pointers and flags (see the module notes).
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                if partition {
                    raw_exec_partition_check(rri, slot, estate, true);
                }
                if constrained {
                    raw_exec_constraints(rri, slot, estate);
                }
                if indexed {
                    // No deferrable unique constraint here: those are
                    // triggers, and a table with triggers is not cached.
                    let recheck = raw_exec_insert_index_tuples(
                        rri,
                        slot,
                        estate,
                        false,
                        false,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    );
                    raw_list_free(recheck);
                }
                if let Some(clear) = clear {
                    clear(slot);
                }
                raw_memory_context_reset(per_tuple);
            })
        }
    }
}
