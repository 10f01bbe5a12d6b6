//! The sampler's shared memory: a [`Header`] followed by one
//! [`SlotHistory`] per possible replication slot (`max_replication_slots`,
//! fixed at server start), protected by one LWLock of our own tranche.
//!
//! Exists only when the library is preloaded: `request()` installs the
//! `shmem_request_hook`/`shmem_startup_hook` pair from `_PG_init`, the
//! postmaster creates the area, and every backend inherits its address
//! through fork. Without preload [`attached`] is false and readers get `None`.

use super::history::SlotHistory;
use pgrx::pg_sys;
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

const AREA_NAME: &std::ffi::CStr = c"logical_ext monitor history";
const TRANCHE_NAME: &std::ffi::CStr = c"logical_ext_monitor";
/// `AddinShmemInitLock` in PostgreSQL 15's `storage/lwlocknames.h`.
const ADDIN_SHMEM_INIT_LOCK: usize = 21;

/// Sampler bookkeeping, readable by every backend.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    lock: *mut pg_sys::LWLock,
    /// Entries in the slot table (= `max_replication_slots`).
    pub(crate) capacity: u32,
    /// PID of the running sampler, 0 when none runs.
    pub(crate) sampler_pid: i32,
    pub(crate) sampler_started_at: i64,
    /// `TimestampTz` of the latest sample, 0 before the first.
    pub(crate) last_sample_at: i64,
    pub(crate) samples_taken: u64,
    /// Interval in force in the sampler, in ms (0 = sampling off).
    pub(crate) interval_ms: i32,
    /// Slots of the latest round that found no free entry (always 0 unless
    /// the table is smaller than the number of slots).
    pub(crate) untracked_slots: u32,
}

/// Set in the postmaster by the startup hook; children inherit it.
static AREA: AtomicPtr<Header> = AtomicPtr::new(ptr::null_mut());

static mut PREV_SHMEM_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Offset of the slot table: the header rounded up to the table's alignment.
fn table_offset() -> usize {
    size_of::<Header>().next_multiple_of(align_of::<SlotHistory>())
}

fn capacity() -> usize {
    // SAFETY: a plain int GUC, fixed since the postmaster read its config.
    usize::try_from(unsafe { pg_sys::max_replication_slots }).unwrap_or(0)
}

fn area_size(capacity: usize) -> usize {
    table_offset() + capacity * size_of::<SlotHistory>()
}

/// Installs the shared-memory hooks. Call only from `_PG_init` while
/// `process_shared_preload_libraries_in_progress`.
pub(crate) fn request() {
    // SAFETY: _PG_init runs single-threaded in the postmaster; we chain the
    // previous hooks as PostgreSQL requires.
    unsafe {
        PREV_SHMEM_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: called by PostgreSQL in the shmem_request phase, the one place
    // RequestAddinShmemSpace/RequestNamedLWLockTranche are allowed (PG 15).
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST_HOOK {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(area_size(capacity()));
        pg_sys::RequestNamedLWLockTranche(TRANCHE_NAME.as_ptr(), 1);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: called by PostgreSQL after shared memory exists. We hold
    // AddinShmemInitLock while creating the area, as PostgreSQL's own
    // modules do; ShmemInitStruct returns `area_size` bytes (MAXALIGNed),
    // which we initialise before publishing the pointer.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let cap = capacity();
        let mut found = false;
        let header = pg_sys::ShmemInitStruct(AREA_NAME.as_ptr(), area_size(cap), &mut found).cast::<Header>();
        if !found {
            header.write(Header {
                lock: &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE_NAME.as_ptr())).lock,
                capacity: cap as u32,
                sampler_pid: 0,
                sampler_started_at: 0,
                last_sample_at: 0,
                samples_taken: 0,
                interval_ms: 0,
                untracked_slots: 0,
            });
            let table = header.cast::<u8>().add(table_offset()).cast::<SlotHistory>();
            for i in 0..cap {
                table.add(i).write(SlotHistory::EMPTY);
            }
        }
        AREA.store(header, Ordering::Release);
        pg_sys::LWLockRelease(init_lock);
    }
}

/// Whether the shared area exists (the library was preloaded).
pub(crate) fn attached() -> bool {
    !AREA.load(Ordering::Acquire).is_null()
}

/// Releases the LWLock when dropped (also when a panic unwinds through it).
struct Held(*mut pg_sys::LWLock);

impl Held {
    fn acquire(lock: *mut pg_sys::LWLock, mode: pg_sys::LWLockMode::Type) -> Held {
        // SAFETY: `lock` is the tranche lock initialised in shmem_startup.
        unsafe { pg_sys::LWLockAcquire(lock, mode) };
        Held(lock)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: acquired in `acquire`; released once.
        unsafe { pg_sys::LWLockRelease(self.0) }
    }
}

/// Runs `f` on the header and slot table under the shared lock; `None`
/// without preload.
pub(crate) fn read<R>(f: impl FnOnce(&Header, &[SlotHistory]) -> R) -> Option<R> {
    let header = AREA.load(Ordering::Acquire);
    if header.is_null() {
        return None;
    }
    // SAFETY: the area was initialised before its pointer was published and
    // lives as long as the server; the shared lock keeps writers out while
    // the references exist (they do not outlive `_held`).
    unsafe {
        let _held = Held::acquire((*header).lock, pg_sys::LWLockMode::LW_SHARED);
        let cap = (*header).capacity as usize;
        let table = std::slice::from_raw_parts(header.cast::<u8>().add(table_offset()).cast::<SlotHistory>(), cap);
        Some(f(&*header, table))
    }
}

/// Runs `f` on the header and slot table under the exclusive lock; `None`
/// without preload.
pub(crate) fn write<R>(f: impl FnOnce(&mut Header, &mut [SlotHistory]) -> R) -> Option<R> {
    let header = AREA.load(Ordering::Acquire);
    if header.is_null() {
        return None;
    }
    // SAFETY: as in `read`, with the exclusive lock making the mutable
    // references unique across processes.
    unsafe {
        let _held = Held::acquire((*header).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let cap = (*header).capacity as usize;
        let table = std::slice::from_raw_parts_mut(header.cast::<u8>().add(table_offset()).cast::<SlotHistory>(), cap);
        Some(f(&mut *header, table))
    }
}
