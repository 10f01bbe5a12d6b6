//! The apply worker's side of table synchronization: which tables are not
//! `ready` (reloaded whenever a sync worker or a SQL function changes one,
//! `status::sync_generation`), what to do with their changes
//! (`state::action`), and housekeeping between transactions: start sync
//! workers (up to `logical_ext.max_sync_workers_per_subscription`), copy
//! their progress from shared memory into `subscription_tables`, retry
//! failed copies with the subscription's backoff, and mark `catchup` tables
//! `ready` once the stream has passed their snapshot.
//!
//! A copy taken from a snapshot of its own is handed over here
//! (`registry.rs`, `tablesync.rs`): once the sync worker has committed
//! it, the next housekeeping gives it the position the stream has applied
//! through as its target, and the stream does not start another remote
//! transaction until the sync worker has caught the table up to there
//! ([`SyncManager::handover_pending`]). The stream runs on while tables copy.
//!
//! With every table `ready` (the usual case) the list is empty and the hot
//! path pays one emptiness check per change.

use super::catalog::{self, TableSync};
use super::registry;
use super::state::{self, Action, State};
use super::worker::Job;
use crate::apply::config::WorkerOptions;
use crate::apply::protocol::RemoteRel;
use crate::apply::status;
use crate::ffi::worker::in_transaction;
use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often sync workers are started and progress is written at most.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) struct SyncManager {
    dboid: u32,
    subid: i32,
    owner: u32,
    generation: u64,
    /// The subscription's tables that are not `ready`.
    tables: Vec<TableSync>,
    /// The replication origins table copies commit with: their rows count
    /// as written by the subscription (conflict detection).
    copy_origins: Vec<u16>,
    /// Failed copies: attempts so far and when to try again.
    retries: HashMap<u32, (u32, Instant)>,
    last_housekeeping: Option<Instant>,
}

impl SyncManager {
    /// The current states (call inside a transaction).
    pub(crate) fn load(dboid: u32, subid: i32, owner: pg_sys::Oid) -> SyncManager {
        let mut m = SyncManager {
            dboid,
            subid,
            owner: owner.to_u32(),
            generation: 0,
            tables: Vec::new(),
            copy_origins: Vec::new(),
            retries: HashMap::new(),
            last_housekeeping: None,
        };
        m.reload();
        m
    }

    fn reload(&mut self) {
        // The generation first: a change committed after it is read here or
        // triggers the next reload.
        self.generation = status::sync_generation(self.dboid, self.subid);
        self.tables = catalog::pending(self.subid);
        self.copy_origins = catalog::copy_origins(self.subid);
    }

    pub(crate) fn copy_origins(&self) -> &[u16] {
        &self.copy_origins
    }

    /// Reload when something changed since (outside a remote transaction);
    /// whether it did.
    pub(crate) fn reload_if_changed(&mut self) -> bool {
        let changed = status::sync_generation(self.dboid, self.subid) != self.generation;
        if changed {
            in_transaction(|| self.reload());
        }
        changed
    }

    /// What to do with a change of `rel` in the remote transaction
    /// committed at `commit_lsn`.
    pub(crate) fn action(&self, rel: &RemoteRel, commit_lsn: Option<u64>) -> Action {
        if self.tables.is_empty() {
            return Action::Apply;
        }
        match self.tables.iter().find(|t| t.table == rel.table && t.schema == rel.schema) {
            None => Action::Apply,
            Some(t) => state::action(t.state, t.sync_lsn, commit_lsn),
        }
    }

    /// Table states changed since they were loaded (a cheap look at shared
    /// memory; `reload_if_changed` reloads).
    pub(crate) fn stale(&self) -> bool {
        status::sync_generation(self.dboid, self.subid) != self.generation
    }

    pub(crate) fn all_ready(&self) -> bool {
        self.tables.is_empty()
    }

    /// A sync worker is catching a table up to this stream's position: the
    /// stream must not start a remote transaction before it is done (or
    /// gone). When none is, the table states are reloaded if they changed,
    /// so a finished hand-over's new state is what the next change sees.
    pub(crate) fn handover_pending(&mut self) -> bool {
        if self.tables.is_empty() {
            return false;
        }
        let pending = registry::running(self.dboid, self.subid).iter().any(|e| e.target != 0);
        if !pending {
            self.reload_if_changed();
        }
        pending
    }

    /// Some table still waits for its copy (`init` or `copying`).
    pub(crate) fn copies_pending(&self) -> bool {
        self.tables.iter().any(|t| matches!(t.state, State::Init | State::Copying))
    }

    /// Between remote transactions. `applied_through`: everything the
    /// stream delivered before this position is applied and committed
    /// (`None` when that is not known). `snapshot`: the exported snapshot
    /// of the initial copy, while it is still valid.
    pub(crate) fn housekeeping(
        &mut self,
        opts: &WorkerOptions,
        snapshot: Option<&(String, u64)>,
        applied_through: Option<u64>,
    ) {
        let changed = self.reload_if_changed();
        if self.tables.is_empty() {
            return;
        }
        if let Some(pos) = applied_through {
            // Copies committed from snapshots of their own: catch up to
            // here (everything committed before `pos` is applied, nothing
            // after it is).
            for e in registry::running(self.dboid, self.subid) {
                if e.copied_at != 0 && e.target == 0 {
                    registry::set_target(self.dboid, self.subid, e.relid, e.pid, pos);
                    // SAFETY: SIGUSR1 only sets the sync worker's latch.
                    unsafe { libc::kill(e.pid, libc::SIGUSR1) };
                }
            }
            let done: Vec<pg_sys::Oid> = self
                .tables
                .iter()
                .filter(|t| t.state == State::Catchup && state::caught_up(t.sync_lsn, pos))
                .map(|t| t.relid)
                .collect();
            if !done.is_empty() {
                in_transaction(|| done.iter().for_each(|r| catalog::mark_ready(self.subid, *r)));
                self.tables.retain(|t| !done.contains(&t.relid));
            }
        }
        // A finished copy frees its place at once; otherwise start copies
        // and write progress every HOUSEKEEPING_INTERVAL.
        if !changed && self.last_housekeeping.is_some_and(|t| t.elapsed() < HOUSEKEEPING_INTERVAL) {
            return;
        }
        self.last_housekeeping = Some(Instant::now());
        let running = registry::running(self.dboid, self.subid);
        if !running.is_empty() {
            in_transaction(|| {
                for e in &running {
                    catalog::report_progress(self.subid, pg_sys::Oid::from(e.relid), e.rows, e.bytes);
                }
            });
        }
        self.start_workers(opts, snapshot, &running);
    }

    fn start_workers(&mut self, opts: &WorkerOptions, snapshot: Option<&(String, u64)>, running: &[registry::Entry]) {
        let limit = crate::apply::settings::MAX_SYNC_WORKERS.get().max(1) as usize;
        let mut free = limit.saturating_sub(running.len());
        let now = Instant::now();
        self.retries
            .retain(|relid, _| self.tables.iter().any(|t| t.relid.to_u32() == *relid && t.state == State::Error));
        let mut start = Vec::new();
        for t in &self.tables {
            let relid = t.relid.to_u32();
            if free == 0 || running.iter().any(|e| e.relid == relid) {
                continue;
            }
            let due = match t.state {
                State::Init | State::Copying => true,
                // Retried only from the stream: the exported snapshot's
                // phase ends when no copy is pending.
                State::Error if snapshot.is_none() => {
                    let (attempt, at) = *self.retries.entry(relid).or_insert((0, now + opts.backoff(0)));
                    if now >= at {
                        self.retries.insert(relid, (attempt + 1, now + opts.backoff(attempt + 1)));
                    }
                    now >= at
                }
                _ => false,
            };
            if due {
                start.push(t.relid);
                free -= 1;
            }
        }
        for relid in start {
            self.start_worker(relid, snapshot);
        }
    }

    fn start_worker(&self, relid: pg_sys::Oid, snapshot: Option<&(String, u64)>) {
        let job = Job { dboid: self.dboid, owner: self.owner, subid: self.subid, snapshot: snapshot.cloned() };
        let started = BackgroundWorkerBuilder::new(&format!("logical_ext sync {} {}", self.subid, relid.to_u32()))
            .set_type("logical_ext sync")
            .set_function("logical_ext_sync_main")
            .set_library("logical_ext")
            .set_argument(Some(pg_sys::Datum::from(relid)))
            .set_extra(&job.to_extra())
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            .set_notify_pid(status::my_pid())
            .load_dynamic();
        match started.map(|h| h.wait_for_startup()) {
            Ok(Ok(pid)) => {
                registry::claim(self.dboid, self.subid, relid.to_u32(), pid);
            }
            // Waiting for the start processed interrupts: a SIGTERM
            // already ended this process there.
            _ => log!(
                "logical_ext: subscription {}: no free background worker to copy table {} (max_worker_processes); retrying",
                self.subid,
                relid.to_u32()
            ),
        }
    }
}
