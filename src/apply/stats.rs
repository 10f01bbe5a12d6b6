//! Subscription statistics that survive a restart: the counters of
//! `subscription_status` (applied transactions and changes, conflicts by
//! type, apply and sync errors) and the time they were last reset.
//!
//! Design
//! - Shared memory (`status.rs`) stays the only place the apply path counts
//!   in; persistence never touches that path. Each subscription's counters
//!   are copied to a small text file, `pg_stat/logical_ext_subscription_<db>_<id>.stat`
//!   under the data directory (next to PostgreSQL's own `pgstat.stat` and
//!   pg_stat_statements' file): by its apply worker at most every
//!   [`FLUSH_INTERVAL`] while they change, right after an error, and when the
//!   worker exits however it exits (an exit callback: SIGTERM at a clean
//!   shutdown ends the worker with a FATAL, which runs it). The next worker
//!   of the subscription loads the file before it counts anything.
//! - A file, not a table: writing it costs no transaction, xid, WAL or
//!   vacuum, it can be written at any point of the stream (also in the middle
//!   of a long remote transaction, and from an exit callback, where a
//!   transaction could not run), it is not replicated (physical standbys and
//!   `FOR ALL TABLES` publications of this node see nothing of it — as with
//!   native `pg_stat_subscription_stats`), and dropping the subscription
//!   removes it.
//! - Guarantee: after a clean stop the counters continue exactly. After a
//!   crash or an immediate stop (no exit callback runs) they continue from
//!   the last flush: at most the last [`FLUSH_INTERVAL`] of counting is lost,
//!   nothing is counted twice (the counts are of committed work, and
//!   exactly-once apply does not redo it). Native PostgreSQL 15 discards all
//!   subscription statistics after crash recovery. The file is not fsynced
//!   (as pgstat's is not): an operating-system crash may lose more.
//! - A file belongs to one subscription: it carries the subscription's
//!   `created_at` and is ignored when that differs (ids restart after DROP
//!   EXTENSION; a stale file of an old subscription must not be inherited).
//! - `reset_subscription_stats()` zeroes the counters in shared memory and
//!   in the file and sets `stats_reset`, as `pg_stat_reset_subscription_stats`
//!   does. File writes and resets of all subscriptions are serialised by one
//!   LWLock, and each write copies the counters inside it, so the newest
//!   counters always win the file.

use super::status::{self, Slot};
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often, at most, a worker writes changed counters to their file; the
/// most a crash can lose.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

const HEADER: &str = "logical_ext subscription statistics 1";

/// The persisted counters of one subscription.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Counters {
    pub(crate) applied_transactions: i64,
    pub(crate) applied_changes: i64,
    /// By `ConflictType::index`.
    pub(crate) conflicts: [i64; 6],
    pub(crate) apply_errors: i64,
    pub(crate) sync_errors: i64,
    /// When they were last reset (µs since 2000-01-01; 0: never).
    pub(crate) stats_reset: i64,
}

const CONFLICT_KEYS: [&str; 6] = [
    "conflicts_insert_exists",
    "conflicts_update_exists",
    "conflicts_update_missing",
    "conflicts_delete_missing",
    "conflicts_update_origin_differs",
    "conflicts_delete_origin_differs",
];

impl Counters {
    fn of(s: &Slot) -> Counters {
        Counters {
            applied_transactions: s.applied_txns,
            applied_changes: s.applied_changes,
            conflicts: s.conflicts,
            apply_errors: s.apply_errors,
            sync_errors: s.sync_errors,
            stats_reset: s.stats_reset,
        }
    }

    fn put(&self, s: &mut Slot) {
        s.applied_txns = self.applied_transactions;
        s.applied_changes = self.applied_changes;
        s.conflicts = self.conflicts;
        s.apply_errors = self.apply_errors;
        s.sync_errors = self.sync_errors;
        s.stats_reset = self.stats_reset;
    }

    /// These counters plus what was counted in `s` before they were loaded.
    fn plus(&self, s: &Slot) -> Counters {
        let mut c = *self;
        c.applied_transactions += s.applied_txns;
        c.applied_changes += s.applied_changes;
        for (total, n) in c.conflicts.iter_mut().zip(s.conflicts) {
            *total += n;
        }
        c.apply_errors += s.apply_errors;
        c.sync_errors += s.sync_errors;
        c
    }

    /// The file's text: a header, then `key value` lines.
    pub(crate) fn encode(&self, created_at: i64) -> String {
        let mut lines = vec![
            HEADER.to_string(),
            format!("created_at {created_at}"),
            format!("applied_transactions {}", self.applied_transactions),
            format!("applied_changes {}", self.applied_changes),
        ];
        lines.extend(CONFLICT_KEYS.iter().zip(self.conflicts).map(|(k, v)| format!("{k} {v}")));
        lines.push(format!("apply_error_count {}", self.apply_errors));
        lines.push(format!("sync_error_count {}", self.sync_errors));
        lines.push(format!("stats_reset {}", self.stats_reset));
        lines.join("\n") + "\n"
    }

    /// The counters of a file written for the subscription created at
    /// `created_at`; `None` for another subscription's file or a file that
    /// is not ours (unknown keys are skipped, missing ones are 0).
    pub(crate) fn decode(text: &str, created_at: i64) -> Option<Counters> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut c = Counters::default();
        let mut owner = None;
        for line in lines {
            let Some((key, value)) = line.split_once(' ') else { continue };
            let Ok(v) = value.trim().parse::<i64>() else { continue };
            match key {
                "created_at" => owner = Some(v),
                "applied_transactions" => c.applied_transactions = v,
                "applied_changes" => c.applied_changes = v,
                "apply_error_count" => c.apply_errors = v,
                "sync_error_count" => c.sync_errors = v,
                "stats_reset" => c.stats_reset = v,
                _ => {
                    if let Some(i) = CONFLICT_KEYS.iter().position(|k| *k == key) {
                        c.conflicts[i] = v;
                    }
                }
            }
        }
        (owner == Some(created_at)).then_some(c)
    }
}

#[derive(Clone, Copy, Default)]
pub(crate) struct FileWrites {
    writes: u64,
}

// SAFETY: plain old data with no pointers, shared between processes.
unsafe impl PGRXSharedMemory for FileWrites {}

/// Held while a statistics file is written or counters are reset.
static FILES: PgLwLock<FileWrites> = unsafe { PgLwLock::new(c"logical_ext_stats_files") };

/// Set up the shared memory (from `_PG_init` while preloading).
pub(crate) fn init_shmem() {
    pgrx::pg_shmem_init!(FILES);
}

/// The file of (dboid, subid), relative to the data directory (every
/// backend's working directory).
fn path(dboid: u32, subid: i32) -> PathBuf {
    PathBuf::from(format!("pg_stat/logical_ext_subscription_{dboid}_{subid}.stat"))
}

fn read_file(dboid: u32, subid: i32, created_at: i64) -> Option<Counters> {
    let text = std::fs::read_to_string(path(dboid, subid)).ok()?;
    Counters::decode(&text, created_at)
}

/// Write the file whole or not at all (a reader never sees half of it).
fn write_file(dboid: u32, subid: i32, created_at: i64, c: &Counters) {
    let target = path(dboid, subid);
    let tmp = target.with_extension(format!("tmp{}", status::my_pid()));
    let r = std::fs::write(&tmp, c.encode(created_at)).and_then(|_| std::fs::rename(&tmp, &target));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        // Statistics are not worth an ERROR in the apply path (nor possible
        // in an exit callback): say so and go on.
        log!("logical_ext: could not write subscription statistics file \"{}\": {e}", target.display());
    }
}

/// Load the persisted counters of (dboid, subid) into its shared-memory
/// slot, once per server life (the apply worker, at start). Counting done
/// before (nothing, normally) is added to them.
pub(crate) fn load(dboid: u32, subid: i32, created_at: i64) {
    let mut lock = FILES.exclusive();
    let from_file = read_file(dboid, subid, created_at);
    status::update(dboid, subid, |s| {
        if s.stats_loaded && s.stats_token == created_at {
            return;
        }
        let base = from_file.unwrap_or_default();
        // A slot loaded for another subscription of the same id starts over.
        let c = if s.stats_loaded { base } else { base.plus(s) };
        c.put(s);
        s.stats_loaded = true;
        s.stats_token = created_at;
    });
    lock.writes += 1;
}

/// Write the counters of (dboid, subid) to its file, when its slot has
/// them loaded; returns what was written.
pub(crate) fn persist(dboid: u32, subid: i32) -> Option<Counters> {
    let mut lock = FILES.exclusive();
    let slot = status::get(dboid, subid).filter(|s| s.stats_loaded)?;
    let c = Counters::of(&slot);
    write_file(dboid, subid, slot.stats_token, &c);
    lock.writes += 1;
    Some(c)
}

/// The counters of the subscription (dboid, subid) created at `created_at`,
/// as shown: its slot's while loaded, else its file's (a subscription whose
/// worker has not run since the server started), else zero.
pub(crate) fn read(dboid: u32, subid: i32, created_at: i64) -> Counters {
    if super::preloaded()
        && let Some(s) = status::get(dboid, subid).filter(|s| s.stats_loaded && s.stats_token == created_at)
    {
        return Counters::of(&s);
    }
    read_file(dboid, subid, created_at).unwrap_or_default()
}

/// Zero the counters of (dboid, subid) and record `now` as their reset time.
pub(crate) fn reset(dboid: u32, subid: i32, created_at: i64, now: i64) {
    let c = Counters { stats_reset: now, ..Counters::default() };
    if !super::preloaded() {
        // No shared memory and no workers: only the file.
        write_file(dboid, subid, created_at, &c);
        return;
    }
    let mut lock = FILES.exclusive();
    status::update(dboid, subid, |s| {
        c.put(s);
        s.stats_loaded = true;
        s.stats_token = created_at;
    });
    write_file(dboid, subid, created_at, &c);
    lock.writes += 1;
}

/// Remove the file of a dropped subscription (after its commit).
pub(crate) fn remove(dboid: u32, subid: i32) {
    let _lock = super::preloaded().then(|| FILES.exclusive());
    let _ = std::fs::remove_file(path(dboid, subid));
}

/// The subscription's `created_at` (µs since 2000), which its file carries
/// (inside a transaction).
pub(crate) fn created_at(subid: i32) -> Option<i64> {
    Spi::get_one_with_args::<TimestampWithTimeZone>(
        "SELECT created_at FROM logical_ext.subscription WHERE id = $1",
        &[subid.into()],
    )
    .ok()
    .flatten()
    .map(pg_sys::TimestampTz::from)
}

/// The apply worker's flush schedule: changed counters go to the file at
/// most every [`FLUSH_INTERVAL`] (one clock read per call otherwise).
pub(crate) struct Flusher {
    last: Instant,
    written: Option<Counters>,
}

impl Flusher {
    pub(crate) fn new() -> Flusher {
        Flusher { last: Instant::now(), written: None }
    }

    /// Called from the worker's loops.
    pub(crate) fn tick(&mut self, dboid: u32, subid: i32) {
        if self.last.elapsed() < FLUSH_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let now = status::get(dboid, subid).filter(|s| s.stats_loaded).map(|s| Counters::of(&s));
        if now.is_some() && now != self.written {
            self.written = persist(dboid, subid);
        }
    }

    /// Write now (after an error: the backoff that follows may be long).
    pub(crate) fn flush(&mut self, dboid: u32, subid: i32) {
        self.last = Instant::now();
        self.written = persist(dboid, subid);
    }
}

thread_local! {
    static MINE: std::cell::Cell<Option<(u32, i32)>> = const { std::cell::Cell::new(None) };
}

/// Write the counters of (dboid, subid) when this process exits, however
/// it exits but a crash. Register after `status::release_at_exit` (exit
/// callbacks run in reverse order, so the slot is still this process's).
pub(crate) fn persist_at_exit(dboid: u32, subid: i32) {
    MINE.with(|m| m.set(Some((dboid, subid))));
    crate::ffi::worker::on_exit_after_cleanup(persist_mine, pg_sys::Datum::from(0));
}

#[pg_guard]
unsafe extern "C-unwind" fn persist_mine(_code: i32, _arg: pg_sys::Datum) {
    // SAFETY: an error may have ended the process while it held an LWLock;
    // LWLocks are usable until ProcKill, which runs after this callback.
    unsafe { pg_sys::LWLockReleaseAll() };
    if let Some((dboid, subid)) = MINE.with(|m| m.take()) {
        persist(dboid, subid);
    }
}

#[cfg(test)]
mod tests {
    use super::Counters;

    #[test]
    fn counters_round_trip_through_their_file() {
        let c = Counters {
            applied_transactions: 12,
            applied_changes: 3400,
            conflicts: [1, 2, 3, 4, 5, 6],
            apply_errors: 7,
            sync_errors: 8,
            stats_reset: 817_000_000_000_000,
        };
        let text = c.encode(42);
        assert_eq!(Counters::decode(&text, 42), Some(c));
        assert!(text.contains("\napply_error_count 7\n"), "{text}");
    }

    #[test]
    fn another_subscriptions_file_is_ignored() {
        let text = Counters { applied_transactions: 5, ..Counters::default() }.encode(1);
        assert_eq!(Counters::decode(&text, 2), None);
        assert_eq!(Counters::decode("garbage\ncreated_at 1\n", 1), None);
        assert_eq!(Counters::decode("", 1), None);
    }

    #[test]
    fn unknown_and_missing_keys() {
        let text = "logical_ext subscription statistics 1\ncreated_at 9\nfuture_key 3\napplied_changes x\napplied_transactions 4\n";
        let c = Counters::decode(text, 9).expect("ours");
        assert_eq!(c.applied_transactions, 4);
        assert_eq!(c.applied_changes, 0);
    }
}
