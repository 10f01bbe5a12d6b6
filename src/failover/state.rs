//! Shared memory of the standby's slot synchronization: what the worker
//! last saw of each primary slot and why a copy is held, read by
//! `failover_readiness()` in any backend.

use super::rules::{NotSafe, Remote};
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

pub(crate) const MAX_ENTRIES: usize = 64;
const NAME_LEN: usize = 64;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) used: bool,
    name: [u8; NAME_LEN],
    pub(crate) remote: Remote,
    /// 0: advanced in the last round; else `hold_code`.
    hold: u8,
    /// `TimestampTz` of the round that saw it on the primary.
    pub(crate) seen_at: i64,
}

impl Default for Entry {
    fn default() -> Self {
        Entry { used: false, name: [0; NAME_LEN], remote: Remote::default(), hold: 0, seen_at: 0 }
    }
}

impl Entry {
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    pub(crate) fn hold(&self) -> Option<NotSafe> {
        decode_hold(self.hold)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SyncState {
    pub(crate) worker_pid: i32,
    /// `TimestampTz` of the last completed round (0: none).
    pub(crate) last_round_at: i64,
    entries: [Entry; MAX_ENTRIES],
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState { worker_pid: 0, last_round_at: 0, entries: [Entry::default(); MAX_ENTRIES] }
    }
}

// SAFETY: plain old data with no pointers, shared between processes.
unsafe impl PGRXSharedMemory for SyncState {}

// SAFETY: new() only names the lock; pg_shmem_init! in _PG_init sets it up
// in shared memory before any backend uses it.
static STATE: PgLwLock<SyncState> = unsafe { PgLwLock::new(c"logical_ext_failover_sync") };

static ATTACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn init_shmem() {
    pgrx::pg_shmem_init!(STATE);
    ATTACHED.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn hold_code(h: Option<NotSafe>) -> u8 {
    match h {
        None => 0,
        Some(NotSafe::FirstSyncRestartAhead) => 1,
        Some(NotSafe::FirstSyncCatalogXminAhead) => 2,
        Some(NotSafe::SnapshotNotCopied) => 3,
        Some(NotSafe::NoCopy) => 4,
        Some(NotSafe::NotReceived) => 5,
        Some(NotSafe::Stale) => 6,
    }
}

fn decode_hold(c: u8) -> Option<NotSafe> {
    match c {
        1 => Some(NotSafe::FirstSyncRestartAhead),
        2 => Some(NotSafe::FirstSyncCatalogXminAhead),
        3 => Some(NotSafe::SnapshotNotCopied),
        4 => Some(NotSafe::NoCopy),
        5 => Some(NotSafe::NotReceived),
        6 => Some(NotSafe::Stale),
        _ => None,
    }
}

/// One slot's outcome in a round.
pub(crate) struct Seen {
    pub(crate) name: String,
    pub(crate) remote: Remote,
    pub(crate) hold: Option<NotSafe>,
}

/// Record a completed round: the slots seen replace the previous ones.
pub(crate) fn record_round(pid: i32, now: i64, seen: &[Seen]) {
    if !ATTACHED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut st = STATE.exclusive();
    st.worker_pid = pid;
    st.last_round_at = now;
    st.entries = [Entry::default(); MAX_ENTRIES];
    for (e, s) in st.entries.iter_mut().zip(seen) {
        let bytes = s.name.as_bytes();
        let n = bytes.len().min(NAME_LEN - 1);
        e.used = true;
        e.name[..n].copy_from_slice(&bytes[..n]);
        e.remote = s.remote;
        e.hold = hold_code(s.hold);
        e.seen_at = now;
    }
}

pub(crate) fn set_worker(pid: i32) {
    if ATTACHED.load(std::sync::atomic::Ordering::Relaxed) {
        STATE.exclusive().worker_pid = pid;
    }
}

/// (worker pid, last round, entries); `None` without shared memory.
pub(crate) fn snapshot() -> Option<(i32, i64, Vec<Entry>)> {
    if !ATTACHED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let st = STATE.share();
    Some((st.worker_pid, st.last_round_at, st.entries.iter().filter(|e| e.used).copied().collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hold_codes_round_trip() {
        use super::NotSafe::*;
        for h in [
            None,
            Some(FirstSyncRestartAhead),
            Some(FirstSyncCatalogXminAhead),
            Some(SnapshotNotCopied),
            Some(NoCopy),
            Some(NotReceived),
            Some(Stale),
        ] {
            assert_eq!(super::decode_hold(super::hold_code(h)), h);
        }
    }
}
