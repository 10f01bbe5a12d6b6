//! Shared-memory status of apply workers: one slot per running (or last
//! run) worker, read by `logical_ext.subscription_status` and written only by
//! the worker that owns it. A worker claims its subscription's slot at start;
//! a second worker for the same subscription (a launcher racing a
//! crash-restart) finds it owned by a live process and exits, so a
//! subscription never has two appliers. The counters outlive a restart
//! through `stats.rs`.

use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

pub(crate) const MAX_WORKERS: usize = 64;
const ERROR_LEN: usize = 480;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum WorkerState {
    Starting = 1,
    Streaming = 2,
    Error = 3,
    /// Copying the tables before streaming (`sync/`).
    Syncing = 4,
    /// Not started: this node is not the one the subscription last ran on
    /// (`slot_owner.rs`); waits for `adopt_subscription()`.
    Blocked = 5,
}

impl WorkerState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Streaming => "streaming",
            WorkerState::Error => "error",
            WorkerState::Syncing => "syncing",
            WorkerState::Blocked => "blocked",
        }
    }

    fn from_u8(v: u8) -> Option<WorkerState> {
        match v {
            1 => Some(WorkerState::Starting),
            2 => Some(WorkerState::Streaming),
            3 => Some(WorkerState::Error),
            4 => Some(WorkerState::Syncing),
            5 => Some(WorkerState::Blocked),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) dboid: u32,
    pub(crate) subid: i32,
    pub(crate) pid: i32,
    state: u8,
    /// Latest requested worker generation, and the owner's.
    generation: u64,
    owner_generation: u64,
    /// Bumped whenever a table of the subscription changes sync state
    /// (`sync/`): the apply worker then reloads them.
    sync_generation: u64,
    pub(crate) received_lsn: u64,
    pub(crate) latest_end_lsn: u64,
    pub(crate) last_send_time: i64,
    pub(crate) last_receipt_time: i64,
    pub(crate) last_commit_time: i64,
    pub(crate) applied_txns: i64,
    pub(crate) applied_changes: i64,
    pub(crate) error_time: i64,
    /// Conflicts by type (ConflictType::index).
    pub(crate) conflicts: [i64; 6],
    /// Failed apply sessions and failed table copies (native's
    /// apply_error_count and sync_error_count).
    pub(crate) apply_errors: i64,
    pub(crate) sync_errors: i64,
    /// When the counters were last reset (µs since 2000; 0: never).
    pub(crate) stats_reset: i64,
    /// The counters persisted for the subscription created at
    /// `stats_token` were loaded into this slot (`stats.rs`).
    pub(crate) stats_loaded: bool,
    pub(crate) stats_token: i64,
    error_len: u16,
    error: [u8; ERROR_LEN],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            dboid: 0,
            subid: 0,
            pid: 0,
            state: 0,
            generation: 0,
            owner_generation: 0,
            sync_generation: 0,
            received_lsn: 0,
            latest_end_lsn: 0,
            last_send_time: 0,
            last_receipt_time: 0,
            last_commit_time: 0,
            applied_txns: 0,
            applied_changes: 0,
            error_time: 0,
            conflicts: [0; 6],
            apply_errors: 0,
            sync_errors: 0,
            stats_reset: 0,
            stats_loaded: false,
            stats_token: 0,
            error_len: 0,
            error: [0; ERROR_LEN],
        }
    }
}

impl Slot {
    /// [`claim`]'s decision; `other_alive`: another live process owns the
    /// slot. The slot's latest requested generation becomes at least the
    /// claimer's: after a crash restart shared memory starts over from 0
    /// while the postmaster restarts the worker with the generation it was
    /// first started for, and left at 0 the worker would take the
    /// difference for a settings change and end its first session at once
    /// (losing, for one, the eager apply of a streamed transaction).
    fn claim(&mut self, pid: i32, generation: u64, other_alive: bool) -> bool {
        if generation < self.generation || (other_alive && self.owner_generation >= generation) {
            return false;
        }
        self.generation = generation;
        self.pid = pid;
        self.owner_generation = generation;
        self.state = WorkerState::Starting as u8;
        true
    }

    pub(crate) fn state(&self) -> Option<WorkerState> {
        WorkerState::from_u8(self.state)
    }

    pub(crate) fn error(&self) -> Option<&str> {
        (self.error_len > 0).then(|| std::str::from_utf8(&self.error[..self.error_len as usize]).unwrap_or("?"))
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Table {
    slots: [Slot; MAX_WORKERS],
}

impl Default for Table {
    fn default() -> Self {
        Table { slots: [Slot::default(); MAX_WORKERS] }
    }
}

// SAFETY: plain old data with no pointers, shared between processes.
unsafe impl PGRXSharedMemory for Table {}

pub(crate) static STATUS: PgLwLock<Table> = unsafe { PgLwLock::new(c"logical_ext_apply_status") };

/// Set up the shared memory (from `_PG_init` while preloading).
pub(crate) fn init_shmem() {
    pgrx::pg_shmem_init!(STATUS);
}

/// Whether the process owning a slot is alive. An owner clears its pid
/// when it exits (`release_at_exit`, also after a FATAL) and a crash resets
/// shared memory, so a non-zero pid is a live worker; it must also be a
/// live PostgreSQL process (never a recycled pid of something else).
fn alive(pid: i32) -> bool {
    pid > 0 && crate::ffi::worker::backend_alive(pid)
}

/// The slot of (dboid, subid), allocating one (never used, else one whose
/// worker is gone) when there is none.
fn slot_for(t: &mut Table, dboid: u32, subid: i32) -> Option<&mut Slot> {
    let i = match t.slots.iter().position(|s| s.dboid == dboid && s.subid == subid && s.subid != 0) {
        Some(i) => i,
        None => {
            let i = t.slots.iter().position(|s| s.subid == 0).or_else(|| t.slots.iter().position(|s| !alive(s.pid)))?;
            t.slots[i] = Slot { dboid, subid, ..Slot::default() };
            i
        }
    };
    Some(&mut t.slots[i])
}

/// Ask for a (re)start of the worker of (dboid, subid): returns the new
/// generation to start the worker with. Workers started for an older
/// generation that have not claimed the slot yet will not (see [`claim`]),
/// and a running older one gives way to the newer one.
pub(crate) fn request(dboid: u32, subid: i32) -> u64 {
    let mut t = STATUS.exclusive();
    match slot_for(&mut t, dboid, subid) {
        Some(s) => {
            s.generation += 1;
            s.generation
        }
        None => 0,
    }
}

/// Claim the slot of (dboid, subid) for this process, started for
/// `generation`. `false` when a newer worker was requested since, or a live
/// worker of the same or a newer generation owns it.
pub(crate) fn claim(dboid: u32, subid: i32, pid: i32, generation: u64) -> bool {
    let mut t = STATUS.exclusive();
    let Some(s) = slot_for(&mut t, dboid, subid) else { return false };
    let other_alive = s.pid != 0 && s.pid != pid && alive(s.pid);
    s.claim(pid, generation, other_alive)
}

/// The latest requested generation of (dboid, subid)'s worker.
pub(crate) fn generation(dboid: u32, subid: i32) -> u64 {
    let t = STATUS.share();
    t.slots.iter().find(|s| s.dboid == dboid && s.subid == subid).map_or(0, |s| s.generation)
}

/// Tell the apply worker of (dboid, subid) that table sync states changed.
pub(crate) fn bump_sync_generation(dboid: u32, subid: i32) {
    let mut t = STATUS.exclusive();
    if let Some(s) = t.slots.iter_mut().find(|s| s.dboid == dboid && s.subid == subid) {
        s.sync_generation += 1;
    }
}

/// The current table-sync generation of (dboid, subid).
pub(crate) fn sync_generation(dboid: u32, subid: i32) -> u64 {
    let t = STATUS.share();
    t.slots.iter().find(|s| s.dboid == dboid && s.subid == subid).map_or(0, |s| s.sync_generation)
}

/// Whether this process still owns the slot (a newer worker may take over).
pub(crate) fn still_owner(dboid: u32, subid: i32, pid: i32) -> bool {
    let t = STATUS.share();
    t.slots.iter().any(|s| s.dboid == dboid && s.subid == subid && s.pid == pid)
}

/// Give the slot up (the worker is exiting); counters stay for the view
/// until the subscription is dropped.
pub(crate) fn release(dboid: u32, subid: i32, pid: i32) {
    let mut t = STATUS.exclusive();
    if let Some(s) = t.slots.iter_mut().find(|s| s.dboid == dboid && s.subid == subid && s.pid == pid) {
        s.pid = 0;
        s.state = 0;
    }
}

thread_local! {
    /// The slot this process owns, released by [`release_mine`] at exit.
    static MINE: std::cell::Cell<Option<(u32, i32)>> = const { std::cell::Cell::new(None) };
}

/// Release this process's slot of (dboid, subid) when the process exits,
/// however it exits (a SIGTERM ends a worker with a FATAL, which runs exit
/// callbacks but no Rust code after the interrupted call).
pub(crate) fn release_at_exit(dboid: u32, subid: i32) {
    MINE.with(|m| m.set(Some((dboid, subid))));
    crate::ffi::worker::on_exit_after_cleanup(release_mine, pg_sys::Datum::from(0));
}

#[pg_guard]
unsafe extern "C-unwind" fn release_mine(_code: i32, _arg: pg_sys::Datum) {
    // SAFETY: an error may have ended the process while it held an LWLock
    // (ours included); LWLocks are usable until ProcKill, which runs after
    // this callback.
    unsafe { pg_sys::LWLockReleaseAll() };
    if let Some((dboid, subid)) = MINE.with(|m| m.take()) {
        release(dboid, subid, my_pid());
    }
}

/// Forget a dropped subscription.
pub(crate) fn forget(dboid: u32, subid: i32) {
    let mut t = STATUS.exclusive();
    for s in t.slots.iter_mut().filter(|s| s.dboid == dboid && s.subid == subid) {
        *s = Slot::default();
    }
}

/// Update this worker's slot.
pub(crate) fn update(dboid: u32, subid: i32, f: impl FnOnce(&mut Slot)) {
    let mut t = STATUS.exclusive();
    if let Some(s) = t.slots.iter_mut().find(|s| s.dboid == dboid && s.subid == subid) {
        f(s);
        s.received_lsn = clamp_lsn(s.received_lsn);
        s.latest_end_lsn = clamp_lsn(s.latest_end_lsn);
    }
}

/// Update this worker's slot at the commit of a remote transaction and, under
/// the same lock acquisition, read whether `pid` still owns it and the
/// latest requested generation (`None`: the slot is gone). One exclusive
/// acquisition per applied transaction instead of three.
pub(crate) fn update_at_commit(dboid: u32, subid: i32, pid: i32, f: impl FnOnce(&mut Slot)) -> Option<(bool, u64)> {
    let mut t = STATUS.exclusive();
    let s = t.slots.iter_mut().find(|s| s.dboid == dboid && s.subid == subid)?;
    f(s);
    s.received_lsn = clamp_lsn(s.received_lsn);
    s.latest_end_lsn = clamp_lsn(s.latest_end_lsn);
    Some((s.pid == pid, s.generation))
}

/// LSNs are shown through `bigint` (`worker_status()`): a publisher's
/// `walEnd` of 2^63 or more (a broken or hostile server) would turn
/// negative there and break `subscription_status` and `metrics()`, so stored
/// positions are clamped to `i64::MAX` (no real LSN comes near it).
pub(crate) fn clamp_lsn(lsn: u64) -> u64 {
    lsn.min(i64::MAX as u64)
}

impl Slot {
    pub(crate) fn set_state(&mut self, st: WorkerState) {
        self.state = st as u8;
    }

    pub(crate) fn set_error(&mut self, msg: &str, at: i64) {
        let mut n = msg.len().min(ERROR_LEN);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        self.error[..n].copy_from_slice(&msg.as_bytes()[..n]);
        self.error_len = n as u16;
        self.error_time = at;
        self.state = WorkerState::Error as u8;
    }

    pub(crate) fn clear_error(&mut self) {
        self.error_len = 0;
    }
}

/// A copy of (dboid, subid)'s slot, if any.
pub(crate) fn get(dboid: u32, subid: i32) -> Option<Slot> {
    let t = STATUS.share();
    t.slots.iter().find(|s| s.dboid == dboid && s.subid == subid).copied()
}

/// The pid of the live worker of (dboid, subid), if any.
pub(crate) fn live_pid(dboid: u32, subid: i32) -> Option<i32> {
    get(dboid, subid).map(|s| s.pid).filter(|&p| alive(p))
}

pub(crate) fn my_pid() -> i32 {
    // SAFETY: MyProcPid is set at process start.
    unsafe { pg_sys::MyProcPid }
}

/// Copies of every used slot.
pub(crate) fn all() -> Vec<Slot> {
    let t = STATUS.share();
    t.slots.iter().filter(|s| s.subid != 0).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::Slot;

    #[test]
    fn a_claim_after_a_crash_restart_keeps_its_generation() {
        // Shared memory starts over (generation 0); the restarted worker
        // was started for generation 3.
        let mut s = Slot { dboid: 5, subid: 1, ..Slot::default() };
        assert!(s.claim(100, 3, false));
        assert_eq!((s.generation, s.owner_generation, s.pid), (3, 3, 100));
        // A newer request still wins: the old worker's generation is behind.
        s.generation += 1;
        assert!(!s.claim(100, 3, false), "a worker of an older generation gives way");
        assert!(s.claim(200, 4, true), "the newer worker takes over");
        assert_eq!((s.pid, s.owner_generation), (200, 4));
    }

    #[test]
    fn a_live_owner_of_the_same_generation_keeps_the_slot() {
        let mut s = Slot { dboid: 5, subid: 1, ..Slot::default() };
        assert!(s.claim(100, 2, false));
        assert!(!s.claim(200, 2, true), "two workers of one generation: the first keeps it");
        assert!(s.claim(200, 3, true), "a newer generation takes over from a live owner");
        assert_eq!((s.pid, s.generation), (200, 3));
    }

    #[test]
    fn stored_lsns_fit_in_a_bigint() {
        assert_eq!(super::clamp_lsn(0), 0);
        assert_eq!(super::clamp_lsn(0x16_B374_D848), 0x16_B374_D848);
        assert_eq!(super::clamp_lsn(1 << 63), i64::MAX as u64);
        assert_eq!(super::clamp_lsn(u64::MAX) as i64, i64::MAX);
    }
}
