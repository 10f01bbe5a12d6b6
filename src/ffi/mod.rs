//! The thin FFI layer: declarations PostgreSQL exports but pgrx does not
//! bind, and small safe wrappers around the PostgreSQL calls every part of the
//! extension uses (memory contexts, C strings, lists). Nothing here knows
//! about replication; mission code calls these instead of repeating the
//! pointer handling.

use pgrx::pg_sys;

pub(crate) mod catalog;
pub(crate) mod identity;
pub(crate) mod index_keys;
pub(crate) mod libpq;
pub(crate) mod lsn;
pub(crate) mod numeric;
pub(crate) mod parse;
pub(crate) mod partition;
pub(crate) mod rowscan;
pub(crate) mod slots;
pub(crate) mod unguarded;
pub(crate) mod worker;
use std::ffi::{CStr, c_char};

/// Raise an ERROR with its SQLSTATE, a `logical_ext: ` message and a HINT
/// (none when empty): the one way SQL-facing functions report what they
/// refuse.
pub(crate) fn fail(code: pgrx::PgSqlErrorCode, msg: impl Into<String>, hint: impl Into<String>) -> ! {
    let hint: String = hint.into();
    let mut r = pg_sys::panic::ErrorReport::new(code, format!("logical_ext: {}", msg.into()), "logical_ext");
    if !hint.is_empty() {
        r = r.set_hint(hint);
    }
    r.report(pgrx::PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

unsafe extern "C-unwind" {
    /// `catalog/partition.h`: the ancestors of a partition, nearest first.
    pub(crate) fn get_partition_ancestors(relid: pg_sys::Oid) -> *mut pg_sys::List;
    /// `executor/nodeModifyTable.h` (not bound by pgrx): compute a row's
    /// stored generated columns.
    fn ExecComputeStoredGenerated(
        rri: *mut pg_sys::ResultRelInfo,
        estate: *mut pg_sys::EState,
        slot: *mut pg_sys::TupleTableSlot,
        cmdtype: pg_sys::CmdType::Type,
    );
    /// `replication/message.h` (not bound by pgrx): write a logical message.
    fn LogLogicalMessage(
        prefix: *const c_char,
        message: *const c_char,
        size: usize,
        transactional: bool,
    ) -> pg_sys::XLogRecPtr;
}

/// Write a logical message into WAL (`pg_logical_emit_message`); returns its
/// position. A transactional one is decoded with its transaction and
/// vanishes if it aborts.
pub(crate) fn log_logical_message(prefix: &CStr, content: &[u8], transactional: bool) -> u64 {
    // SAFETY: valid prefix and content for the duration of the call; the
    // boundary turns an ERROR into a Rust panic.
    unsafe {
        pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
            LogLogicalMessage(prefix.as_ptr(), content.as_ptr().cast(), content.len(), transactional)
        })
    }
}

/// Whether WAL carries logical messages at all (`wal_level = logical`).
pub(crate) fn wal_is_logical() -> bool {
    // SAFETY: reads a GUC variable.
    unsafe { pg_sys::wal_level >= pg_sys::WalLevel::WAL_LEVEL_LOGICAL as i32 }
}

/// Create an `AllocSet` memory context under `parent`.
pub(crate) fn new_memory_context(parent: pg_sys::MemoryContext, name: &'static CStr) -> pg_sys::MemoryContext {
    // SAFETY: `parent` is a live context handed to us by PostgreSQL and `name`
    // is a static string, as AllocSetContextCreate requires.
    unsafe {
        pg_sys::AllocSetContextCreateInternal(
            parent,
            name.as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        )
    }
}

/// A memory context owned by one Rust value: created as a child of a live
/// context, deleted (with everything allocated in it) when the guard is
/// dropped. The owner must be dropped before the parent context is deleted
/// or reset, and nothing may point into the context after the drop.
pub(crate) struct OwnedContext(pg_sys::MemoryContext);

impl OwnedContext {
    pub(crate) fn new(parent: pg_sys::MemoryContext, name: &'static CStr) -> OwnedContext {
        // Small: one cached relation's state is a few KiB.
        // SAFETY: `parent` is live (the caller's contract) and `name` static.
        OwnedContext(unsafe {
            pg_sys::AllocSetContextCreateInternal(
                parent,
                name.as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            )
        })
    }

    pub(crate) fn get(&self) -> pg_sys::MemoryContext {
        self.0
    }
}

impl Drop for OwnedContext {
    fn drop(&mut self) {
        // SAFETY: created in `new` and deleted only here; the owner's
        // contract keeps the parent alive until then.
        unsafe { pg_sys::MemoryContextDelete(self.0) }
    }
}

/// Switches `CurrentMemoryContext` for its lifetime, and back on drop (also
/// when a Rust panic unwinds through it).
pub(crate) struct ContextSwitch {
    old: pg_sys::MemoryContext,
}

impl ContextSwitch {
    pub(crate) fn to(cxt: pg_sys::MemoryContext) -> Self {
        // SAFETY: backends are single-threaded; CurrentMemoryContext is a plain
        // global we save and restore.
        let old = unsafe {
            let old = pg_sys::CurrentMemoryContext;
            pg_sys::CurrentMemoryContext = cxt;
            old
        };
        ContextSwitch { old }
    }
}

impl Drop for ContextSwitch {
    fn drop(&mut self) {
        // SAFETY: restores the context saved in `to`.
        unsafe { pg_sys::CurrentMemoryContext = self.old };
    }
}

/// A by-reference datum of `len` bytes in the current memory context (where
/// an input function's result would be), zeroed, then filled by `fill`.
pub(crate) fn palloc_datum(len: usize, fill: impl FnOnce(&mut [u8])) -> pg_sys::Datum {
    // SAFETY: palloc0 returns `len` writable, zeroed bytes (or raises an
    // ERROR through pgrx's guard); the slice does not outlive this call.
    unsafe {
        let p = pg_sys::palloc0(len).cast::<u8>();
        fill(std::slice::from_raw_parts_mut(p, len));
        pg_sys::Datum::from(p)
    }
}

/// Reset a memory context (free everything allocated in it).
pub(crate) fn reset_memory_context(cxt: pg_sys::MemoryContext) {
    // SAFETY: callers pass contexts they created and no longer reference.
    unsafe { pg_sys::MemoryContextReset(cxt) }
}

/// Copy a NUL-terminated C string into Rust (lossy for invalid UTF-8).
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub(crate) unsafe fn cstr_to_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The OIDs of a PostgreSQL `List` of OIDs.
///
/// # Safety
/// `list` must be NIL or a valid `T_OidList`.
pub(crate) unsafe fn oid_list(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a valid list has `length` initialised cells.
    let cells = unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) };
    // SAFETY: an OidList stores OIDs in `oid_value`.
    cells.iter().map(|c| unsafe { c.oid_value }).collect()
}

/// The pointers of a PostgreSQL `List` of pointers.
///
/// # Safety
/// `list` must be NIL or a valid `T_List`.
pub(crate) unsafe fn ptr_list<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a valid list has `length` initialised cells.
    let cells = unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) };
    // SAFETY: a pointer list stores pointers in `ptr_value`.
    cells.iter().map(|c| unsafe { c.ptr_value } as *mut T).collect()
}

/// The name of a namespace (schema), or an empty string if it is gone.
pub(crate) fn namespace_name(nsp: pg_sys::Oid) -> String {
    // SAFETY: get_namespace_name returns NULL or a palloc'd C string.
    unsafe { cstr_to_string(pg_sys::get_namespace_name(nsp)) }
}

/// The members of a `Bitmapset` (NULL is the empty set), in ascending order.
///
/// # Safety
/// `set` must be NULL or a valid Bitmapset.
pub(crate) unsafe fn bitmapset_members(set: *const pg_sys::Bitmapset) -> Vec<i32> {
    let mut out = Vec::new();
    let mut m = -1;
    loop {
        // SAFETY: bms_next_member walks a valid (or NULL) set.
        m = unsafe { pg_sys::bms_next_member(set, m) };
        if m < 0 {
            return out;
        }
        out.push(m);
    }
}

/// Runs `f` in an internal subtransaction, as a PL/pgSQL `EXCEPTION` block
/// does: released when `f` returns, rolled back when it raises a PostgreSQL
/// ERROR, which is then returned instead of propagated. Memory context and
/// resource owner are restored either way. A Rust panic rolls back and
/// propagates.
pub(crate) fn in_subtransaction<T>(
    f: impl FnOnce() -> T + std::panic::UnwindSafe,
) -> Result<T, Box<pgrx::pg_sys::panic::ErrorReportWithLevel>> {
    use pgrx::pg_sys::panic::CaughtError;
    use pgrx::pg_sys::pg_try::PgTryBuilder;

    // SAFETY: reads of backend globals; BeginInternalSubTransaction needs a
    // transaction in progress, which every SQL function call has.
    let (cxt, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::CurrentMemoryContext = saved.0;
        saved
    };
    // SAFETY: restores what was saved above; the subtransaction is the
    // current one when `finish` runs (f's own subtransactions are closed).
    let finish = |commit: bool| unsafe {
        if commit {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::CurrentMemoryContext = cxt;
        pg_sys::CurrentResourceOwner = owner;
    };
    // The error is boxed to keep the Result small.
    let result = PgTryBuilder::new(|| Ok(f())).catch_others(|e| Err(Box::new(e))).execute();
    match result {
        Ok(v) => {
            finish(true);
            Ok(v)
        }
        Err(e) => match *e {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                finish(false);
                Err(Box::new(report))
            }
            panic @ CaughtError::RustPanic { .. } => {
                finish(false);
                panic.rethrow()
            }
        },
    }
}

unsafe extern "C-unwind" {
    /// `nodes/params.h`: the error-context callback the extended protocol
    /// pushes while it binds and executes a portal (pgrx binds a wrapper,
    /// not the C symbol whose address is on the stack).
    #[link_name = "ParamsErrorCallback"]
    fn params_error_callback(arg: *mut std::ffi::c_void);
}

/// Whether the running SQL function was called from another function, a DO
/// block or SPI rather than directly by the client's statement: every such
/// caller pushes an entry on `error_context_stack` (PL/pgSQL's, SQL
/// functions', SPI's), while a top-level statement has none, or only the
/// extended protocol's parameter entry.
pub(crate) fn called_from_another_function() -> bool {
    let params: unsafe extern "C-unwind" fn(*mut std::ffi::c_void) = params_error_callback;
    // SAFETY: error_context_stack is a list of entries on the stacks of our
    // callers, which are all running while we walk it.
    unsafe {
        let mut e = pg_sys::error_context_stack;
        while !e.is_null() {
            if (*e).callback.is_none_or(|cb| !std::ptr::fn_addr_eq(cb, params)) {
                return true;
            }
            e = (*e).previous;
        }
    }
    false
}

/// Compute the stored generated columns of `slot`, a new row of `rri`'s
/// relation, as an INSERT does (the slot is materialized in its own memory).
///
/// # Safety
/// `rri` and `estate` are a live result relation and its executor state;
/// `slot` holds a complete row of the relation.
pub(crate) unsafe fn compute_stored_generated(
    rri: *mut pg_sys::ResultRelInfo,
    estate: *mut pg_sys::EState,
    slot: *mut pg_sys::TupleTableSlot,
) {
    // SAFETY: per the caller's promise; an ERROR unwinds.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            ExecComputeStoredGenerated(rri, estate, slot, pg_sys::CmdType::CMD_INSERT)
        })
    }
}
