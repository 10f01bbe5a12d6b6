//! Shared memory of the running sync workers: which process copies which
//! table of which subscription, and how far it got (rows and bytes, read by
//! the apply worker, which writes them into `subscription_tables` while the
//! copy's own transaction is still open). One entry per running copy; an
//! entry whose process is gone is free. Each entry also has a small number,
//! unique among the subscription's running copies, that names the
//! replication origin the copy commits with (`worker.rs`).
//!
//! The entry is also where a copy taken from a snapshot of its own hands
//! the table over to the stream (`tablesync.rs`): the sync worker records
//! the snapshot's LSN once its copy is committed (`copied_at`), the apply
//! worker answers, between two remote transactions, with the position its
//! stream has applied through (`target`) and waits until the sync worker
//! has applied the table's changes up to there (or is gone).

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

const MAX_ENTRIES: usize = 64;

#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Entry {
    pub(crate) dboid: u32,
    pub(crate) subid: i32,
    pub(crate) relid: u32,
    pub(crate) pid: i32,
    /// Unique among the live copies of the subscription.
    pub(crate) number: u32,
    pub(crate) rows: i64,
    pub(crate) bytes: i64,
    /// The copy is committed; its snapshot's LSN (0: still copying).
    pub(crate) copied_at: u64,
    /// The apply worker's position the sync worker catches up to (0: not
    /// set yet).
    pub(crate) target: u64,
}

#[derive(Clone, Copy)]
pub(crate) struct Registry {
    entries: [Entry; MAX_ENTRIES],
}

impl Default for Registry {
    fn default() -> Self {
        Registry { entries: [Entry::default(); MAX_ENTRIES] }
    }
}

// SAFETY: plain old data with no pointers, shared between processes.
unsafe impl PGRXSharedMemory for Registry {}

// SAFETY: new() only names the lock; pg_shmem_init! in _PG_init sets it up
// in shared memory before any backend uses it.
static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"logical_ext_sync_workers") };

/// Set up the shared memory (from `_PG_init` while preloading).
pub(crate) fn init_shmem() {
    pgrx::pg_shmem_init!(REGISTRY);
}

/// Whether the copier of an entry is alive: a sync worker clears its entry
/// when it exits (`release_at_exit`, also after a FATAL) and a crash resets
/// shared memory; the pid must also be a live PostgreSQL process (the
/// apply worker claims an entry for a worker that may die before it runs).
fn alive(pid: i32) -> bool {
    pid > 0 && crate::ffi::worker::backend_alive(pid)
}

thread_local! {
    /// The entry this process copies, released by [`release_mine`] at exit.
    static MINE: std::cell::Cell<Option<(u32, i32, u32)>> = const { std::cell::Cell::new(None) };
}

/// When this process exits, however it exits: release its entry of
/// (dboid, subid, relid) and tell the apply worker.
pub(crate) fn release_at_exit(dboid: u32, subid: i32, relid: u32) {
    MINE.with(|m| m.set(Some((dboid, subid, relid))));
    crate::ffi::worker::on_exit_after_cleanup(release_mine, pg_sys::Datum::from(0));
}

#[pg_guard]
unsafe extern "C-unwind" fn release_mine(code: i32, _arg: pg_sys::Datum) {
    // SAFETY: an error may have ended the process while it held an LWLock
    // (ours included); LWLocks are usable until ProcKill, which runs after
    // this callback.
    let pid = unsafe {
        pg_sys::LWLockReleaseAll();
        pg_sys::MyProcPid
    };
    if let Some((dboid, subid, relid)) = MINE.with(|m| m.take()) {
        if code != 0 {
            // A SIGTERM (or a FATAL) ended the copy; its transaction rolls back.
            log!("logical_ext: copy of table {relid} for subscription {subid} stopped: the sync worker is exiting");
        }
        release(dboid, subid, relid, pid);
        super::worker::tell_apply_worker(dboid, subid);
    }
}

impl Entry {
    fn is(&self, dboid: u32, subid: i32, relid: u32) -> bool {
        self.dboid == dboid && self.subid == subid && self.relid == relid
    }
}

/// Record `pid` as the copier of (dboid, subid, relid); returns the copy's
/// number. `None` when another live process already copies that table (or
/// no entry is free).
pub(crate) fn claim(dboid: u32, subid: i32, relid: u32, pid: i32) -> Option<u32> {
    let mut r = REGISTRY.exclusive();
    if let Some(e) = r.entries.iter().find(|e| e.is(dboid, subid, relid) && alive(e.pid)) {
        return (e.pid == pid).then_some(e.number);
    }
    let taken: Vec<u32> =
        r.entries.iter().filter(|e| e.dboid == dboid && e.subid == subid && alive(e.pid)).map(|e| e.number).collect();
    let number = (0..).find(|n| !taken.contains(n)).unwrap_or(0);
    let e = r.entries.iter_mut().find(|e| !alive(e.pid))?;
    *e = Entry { dboid, subid, relid, pid, number, rows: 0, bytes: 0, copied_at: 0, target: 0 };
    Some(number)
}

/// The copy of (dboid, subid, relid) by `pid` has ended.
pub(crate) fn release(dboid: u32, subid: i32, relid: u32, pid: i32) {
    let mut r = REGISTRY.exclusive();
    if let Some(e) = r.entries.iter_mut().find(|e| e.is(dboid, subid, relid) && e.pid == pid) {
        *e = Entry::default();
    }
}

/// Progress of the copy run by `pid`.
pub(crate) fn progress(dboid: u32, subid: i32, relid: u32, pid: i32, rows: i64, bytes: i64) {
    let mut r = REGISTRY.exclusive();
    if let Some(e) = r.entries.iter_mut().find(|e| e.is(dboid, subid, relid) && e.pid == pid) {
        e.rows = rows;
        e.bytes = bytes;
    }
}

/// The copy run by `pid` is committed at snapshot `lsn`: it waits for a
/// target (`set_target`).
pub(crate) fn copied(dboid: u32, subid: i32, relid: u32, pid: i32, lsn: u64) {
    let mut r = REGISTRY.exclusive();
    if let Some(e) = r.entries.iter_mut().find(|e| e.is(dboid, subid, relid) && e.pid == pid) {
        e.copied_at = lsn.max(1);
    }
}

/// The apply worker's answer to `copied`: catch up to `lsn`.
pub(crate) fn set_target(dboid: u32, subid: i32, relid: u32, pid: i32, lsn: u64) {
    let mut r = REGISTRY.exclusive();
    if let Some(e) = r.entries.iter_mut().find(|e| e.is(dboid, subid, relid) && e.pid == pid && e.target == 0) {
        e.target = lsn.max(1);
    }
}

/// The target set for the copy run by `pid`, once set.
pub(crate) fn target(dboid: u32, subid: i32, relid: u32, pid: i32) -> Option<u64> {
    let r = REGISTRY.share();
    r.entries.iter().find(|e| e.is(dboid, subid, relid) && e.pid == pid).map(|e| e.target).filter(|&t| t != 0)
}

/// The hand-over of the copy run by `pid` is done (the table's new state is
/// committed): the apply worker stops waiting for it.
pub(crate) fn handed_over(dboid: u32, subid: i32, relid: u32, pid: i32) {
    let mut r = REGISTRY.exclusive();
    if let Some(e) = r.entries.iter_mut().find(|e| e.is(dboid, subid, relid) && e.pid == pid) {
        e.copied_at = 0;
        e.target = 0;
    }
}

/// The live sync workers of a subscription.
pub(crate) fn running(dboid: u32, subid: i32) -> Vec<Entry> {
    let r = REGISTRY.share();
    r.entries.iter().filter(|e| e.dboid == dboid && e.subid == subid && alive(e.pid)).copied().collect()
}
