//! The background sampler: every `logical_ext.monitor_interval` it copies
//! the name, identity (type, database, plugin), `active_pid`, `restart_lsn`
//! and `confirmed_flush` of every replication slot out of
//! PostgreSQL's slot array (as `pg_get_replication_slots()` does: the control
//! lock shared, each slot's spinlock around the copy) together with the WAL
//! write position, and records them in the shared history (`shmem.rs`,
//! `history.rs`). It needs no database connection. Every
//! `logical_ext.log_prune_interval` it also starts the log pruner
//! (`pruner.rs`).
//!
//! Signals: SIGHUP reloads the configuration (a new interval applies at
//! once); SIGTERM is PostgreSQL's `die`, which ends the process at the wait's
//! interrupt check (the signal sets the latch). It exits with code 1, so the postmaster
//! restarts it after [`RESTART_SECS`] unless the server is shutting down
//! (`logical_ext.monitor_interval = 0` is the way to stop sampling).

use super::history::{self, Observed, Round, record_round};
use super::{pruner, settings, shmem};
use crate::ffi::slots::name_to_string;
use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use std::time::{Duration, Instant};

/// `bgw_type`, as shown in `pg_stat_activity.backend_type`.
pub(crate) const WORKER_TYPE: &str = "logical_ext monitor";
/// Seconds before the postmaster restarts an exited sampler.
pub(crate) const RESTART_SECS: u64 = 5;

/// Registers the sampler. Call only from `_PG_init` while
/// `process_shared_preload_libraries_in_progress`.
pub(crate) fn register() {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("logical_ext")
        .set_function("logical_ext_monitor_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(RESTART_SECS)))
        .load();
}

/// The sampler's entry point (`bgw_function_name`).
#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_monitor_main(_arg: pg_sys::Datum) {
    // SIGTERM is `die`: the wait below processes interrupts (and barriers),
    // and a SIGTERM ends the process there (exit code 1: restarted after
    // RESTART_SECS unless the server is shutting down).
    crate::ffi::worker::attach_signal_handlers();
    // SAFETY: registering a plain callback for this process's exit.
    unsafe { pg_sys::before_shmem_exit(Some(forget_sampler), pg_sys::Datum::from(0)) };
    // SAFETY: MyProcPid and GetCurrentTimestamp are always valid in a backend.
    let (pid, started) = unsafe { (pg_sys::MyProcPid, pg_sys::GetCurrentTimestamp()) };
    shmem::write(|h, _| {
        h.sampler_pid = pid;
        h.sampler_started_at = started;
    });

    let mut last_sample: Option<Instant> = None;
    let mut fresh_start = true;
    // The first pruning runs one interval after the start.
    let mut last_prune = Instant::now();
    let mut pruner_worker = None;
    loop {
        let interval = settings::monitor_interval();
        let interval_ms = interval.map_or(0, |d| d.as_millis() as i32);
        shmem::write(|h, _| h.interval_ms = interval_ms);

        let prune_in = settings::log_prune_interval().map(|iv| {
            if last_prune.elapsed() >= iv {
                pruner_worker = pruner::start(pruner_worker.take());
                last_prune = Instant::now();
            }
            iv.saturating_sub(last_prune.elapsed()).max(Duration::from_millis(1))
        });
        let sample_in = match interval {
            None => None, // sampling off: sleep until a signal
            Some(iv) => {
                let due = last_sample.is_none_or(|t| t.elapsed() >= iv);
                if due {
                    sample_once(iv, fresh_start);
                    fresh_start = false;
                    last_sample = Some(Instant::now());
                }
                let elapsed = last_sample.map_or(Duration::ZERO, |t| t.elapsed());
                Some(iv.saturating_sub(elapsed).max(Duration::from_millis(1)))
            }
        };
        let timeout = match (sample_in, prune_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Reloads the configuration after SIGHUP; exits on SIGTERM and
        // postmaster death.
        crate::ffi::worker::wait(timeout);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn forget_sampler(_code: i32, _arg: pg_sys::Datum) {
    // SAFETY: MyProcPid is valid. If an error ended the process while it
    // held an LWLock (ours included), release it before taking ours again;
    // LWLocks are still usable in before_shmem_exit callbacks.
    let pid = unsafe {
        pg_sys::LWLockReleaseAll();
        pg_sys::MyProcPid
    };
    shmem::write(|h, _| {
        if h.sampler_pid == pid {
            h.sampler_pid = 0;
        }
    });
}

/// The WAL position `slot_health()` measures against: `pg_current_wal_lsn()`
/// on a primary, the replay position on a standby.
pub(crate) fn current_wal_lsn() -> u64 {
    // SAFETY: plain reads of shared XLog state, valid in any process
    // attached to shared memory.
    unsafe {
        if pg_sys::RecoveryInProgress() {
            pg_sys::GetXLogReplayRecPtr(std::ptr::null_mut())
        } else {
            pg_sys::GetXLogWriteRecPtr()
        }
    }
}

fn sample_once(interval: Duration, fresh_start: bool) {
    // SAFETY: always valid in a backend.
    let at = unsafe { pg_sys::GetCurrentTimestamp() };
    let wal_lsn = current_wal_lsn();
    let observed = read_slots();
    let interval_us = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    shmem::write(|h, table| {
        let round = Round { at, wal_lsn, interval_us, fresh_start, first_round: h.samples_taken == 0 };
        h.untracked_slots = record_round(table, &observed, round) as u32;
        h.last_sample_at = at;
        h.samples_taken += 1;
    });
}

/// Name, identity, active flag and positions of every slot in use.
fn read_slots() -> Vec<Observed> {
    crate::ffi::slots::copy_all()
        .into_iter()
        .map(|r| {
            let d = &r.data;
            // A logical slot belongs to a database (SlotIsLogical).
            let logical = d.database != pg_sys::InvalidOid;
            Observed {
                name: name_to_string(&d.name),
                identity: history::identity(logical, d.database.to_u32(), &name_to_string(&d.plugin)),
                active: r.active_pid != 0,
                restart_lsn: d.restart_lsn,
                confirmed_flush: if logical { d.confirmed_flush } else { 0 },
            }
        })
        .collect()
}
