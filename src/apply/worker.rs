//! The apply worker: one background worker per enabled subscription. It
//! streams the publisher's `logical_ext` slot and applies each remote
//! transaction as one local transaction, in commit order. This file is the
//! story of a session; its parts live beside it:
//!
//! - `worker/stream.rs`: the stream loop, feedback, pings and the receive
//!   timeout (with the pure `flush.rs` and `keepalive.rs`);
//! - `worker/documents.rs`: applying one document (BEGIN, rows, TRUNCATE,
//!   DDL, COMMIT) in the remote transaction's local transaction;
//! - `origin.rs`: the replication-origin session and its commit guard.
//!
//! Exactly once: the subscription's replication origin records the remote
//! commit's end LSN in the same local commit as the data, and only there
//! (`origin.rs`); each session starts streaming from that origin's
//! progress. Feedback reports as flushed only what is durably committed here
//! (or, when nothing is pending, all that was received, so the publisher can
//! release WAL and shut down promptly).
//!
//! Errors of any kind (connection, malformed message, apply, a silent
//! connection past `wal_receiver_timeout`) abort the local transaction, are
//! recorded in shared memory (`subscription_status`), and the session is
//! retried after an exponential backoff; bookkeeping after an error commits
//! without the origin. SIGTERM is PostgreSQL's `die` (`ffi/worker.rs`): it
//! ends the process at the next interrupt check, also inside a lock wait.

mod documents;
mod stream;

use super::catalog::{self, Subscription};
use super::conflict::{ConflictType, Resolution, Rule};
use super::executor::Target;
use super::origin::{self, OriginSession};
use super::protocol::{self, Doc};
use super::relation::RelationMap;
use super::resolver::{self, ConflictRecord};
use super::rows;
use super::status::{self, WorkerState};
use super::sync::manager::SyncManager;
use super::walrcv::{self, Connection, quote_ident, quote_literal};
use crate::ffi;
use crate::ffi::worker::{self as backend, in_transaction, now_ts};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use stream::Session;

/// Entry point of an apply worker (registered by `launcher.rs`).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_apply_main(arg: pg_sys::Datum) {
    let subid = arg.value() as i32;
    let (dboid, owner, generation) = super::launcher::parse_extra(BackgroundWorker::get_extra());
    backend::attach_signal_handlers();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), Some(owner));
    let me = status::my_pid();
    if !status::claim(dboid.to_u32(), subid, me, generation) {
        debug1!("logical_ext: subscription {subid} has a newer apply worker");
        return;
    }
    // Released however the process ends (a SIGTERM ends it with a FATAL).
    status::release_at_exit(dboid.to_u32(), subid);
    let mut w = Worker::new(dboid.to_u32(), subid, generation);
    w.run();
}

/// Why a session ended without error.
enum Stop {
    /// SIGTERM, or the subscription was disabled or dropped.
    Exit,
    /// The settings changed (a new generation was requested): start a new
    /// session with them.
    Reload,
}

struct Worker {
    dboid: u32,
    subid: i32,
    relmap: Option<RelationMap>,
    attempt: u32,
    /// This subscription's replication origin, once set up.
    origin: Option<OriginSession>,
    msg_cxt: pg_sys::MemoryContext,
    /// The subscription as of the current session.
    sub: Option<Subscription>,
    rules: Vec<Rule>,
    remote_node: u64,
    /// A conflict resolved as `error`: logged once its transaction is rolled back.
    failed_conflict: Option<Box<ConflictRecord>>,
    /// The INSERT/UPDATE being applied (its document and commit LSN/time),
    /// to record a unique violation it raises as a conflict.
    in_flight: Option<(ConflictType, Vec<u8>, Option<u64>, i64)>,
    warned_no_commit_ts: bool,
    /// The settings generation this worker runs with (`status::request`).
    generation: u64,
    /// Name of the subscription's replication origin.
    origin_name: String,
    /// Tables of the subscription that are not `ready` (`sync/`).
    sync: Option<SyncManager>,
}

impl Worker {
    fn new(dboid: u32, subid: i32, generation: u64) -> Worker {
        // SAFETY: TopMemoryContext is valid for the life of the process.
        let msg_cxt = ffi::new_memory_context(unsafe { pg_sys::TopMemoryContext }, c"logical_ext apply message");
        Worker {
            dboid,
            subid,
            relmap: None,
            attempt: 0,
            origin: None,
            msg_cxt,
            sub: None,
            rules: Vec::new(),
            remote_node: 0,
            failed_conflict: None,
            in_flight: None,
            warned_no_commit_ts: false,
            generation,
            origin_name: Subscription::origin_name(subid),
            sync: None,
        }
    }

    fn run(&mut self) {
        backend::set_replica_session();
        loop {
            backend::check_for_interrupts();
            // Errors the worker detects itself carry no SQLSTATE of interest.
            let session = AssertUnwindSafe(|| self.session().map_err(|m| (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, m)));
            let outcome = PgTryBuilder::new(session).catch_others(|e| Err(error_text(e))).execute();
            match outcome {
                Ok(Stop::Exit) => return,
                Ok(Stop::Reload) => {
                    let latest = status::generation(self.dboid, self.subid);
                    if !status::claim(self.dboid, self.subid, status::my_pid(), latest) {
                        return;
                    }
                    self.generation = latest;
                }
                Err((code, msg)) => {
                    // The session (and its origin guard) is gone; disarm
                    // again anyway before anything aborts or commits, so the
                    // failed transaction can never move the origin.
                    origin::disarm();
                    // SAFETY: abandon whatever transaction the error left open.
                    unsafe { pg_sys::AbortCurrentTransaction() };
                    ffi::reset_memory_context(self.msg_cxt);
                    let mut msg = msg;
                    if code == PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION && self.failed_conflict.is_none() {
                        self.failed_conflict = self.unique_violation();
                        if let Some(rec) = &self.failed_conflict {
                            msg = format!("{}: {msg}", rows::failure_message(rec));
                        }
                    }
                    self.in_flight = None;
                    if let Some(rec) = self.failed_conflict.take() {
                        // The conflict record survives the rollback.
                        in_transaction(|| resolver::log(&rec));
                        self.count_conflict(&rec);
                    }
                    // So does the record of a DDL replay that failed.
                    in_transaction(crate::ddl::log_failed_replay);
                    let now = now_ts();
                    status::update(self.dboid, self.subid, |s| s.set_error(&msg, now));
                    if self.sub.as_ref().is_some_and(|s| s.options.disable_on_error) {
                        in_transaction(|| {
                            Spi::run_with_args(
                                "UPDATE logical_ext.subscription SET enabled = false WHERE id = $1",
                                &[self.subid.into()],
                            )
                        })
                        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not disable the subscription: {e}"));
                        log!(
                            "logical_ext: subscription {} disabled after an error (disable_on_error): {msg}",
                            self.subid
                        );
                        return;
                    }
                    let delay = self.retry_delay();
                    self.attempt = self.attempt.saturating_add(1);
                    log!("logical_ext: apply worker for subscription {}: {msg}; retrying in {delay:?}", self.subid);
                    backend::sleep(delay);
                }
            }
        }
    }

    /// The conflict a unique violation of the in-flight change stands for
    /// (its resolution was `error`, so nothing probed for it beforehand).
    fn unique_violation(&mut self) -> Option<Box<ConflictRecord>> {
        let (kind, payload, commit_lsn, commit_ts) = self.in_flight.as_ref()?;
        let (rel, new, key) = match protocol::parse_doc(payload).ok()? {
            Doc::Insert { rel, new } => (rel, new, None),
            Doc::Update { rel, new, identity, .. } => (rel, new, Some(identity)),
            _ => return None,
        };
        let sub = self.sub.as_ref()?;
        let mut rec = Box::new(ConflictRecord {
            subscription: sub.name.clone(),
            relation: format!("{}.{}", rel.schema, rel.table),
            conflict: *kind,
            resolution: Resolution::Error,
            local_tuple: None,
            remote_tuple: protocol::columns_json(&new),
            remote_origin: Subscription::origin_name(sub.id),
            remote_commit_lsn: commit_lsn.map(protocol::format_lsn),
            remote_commit_ts: Some(*commit_ts).filter(|&t| t != 0),
            local_commit_ts: None,
            local_origin: None,
        });
        // The transaction is rolled back: look the colliding local row up in
        // a fresh one (best effort; the record stands without it).
        let relmap = self.relmap.as_mut()?;
        let found = PgTryBuilder::new(AssertUnwindSafe(|| {
            in_transaction(|| {
                let local = relmap.get(&rel);
                let t = Target::open(local);
                let scratch = &mut Vec::new();
                match &key {
                    None => t.find_unique(t.new_row(&new, scratch), None),
                    // The row being updated, then the other row its new values collide with.
                    Some(identity) => t.find(identity.as_deref().unwrap_or(&new), scratch).and_then(|updated| {
                        let row = t.merged_row(&updated, &new, scratch);
                        t.find_unique(row, Some(&updated))
                    }),
                }
                .map(|l| (l.to_json(local), l.writer()))
            })
        }))
        .catch_others(|_| {
            // SAFETY: abandon the failed look-up transaction.
            unsafe { pg_sys::AbortCurrentTransaction() };
            None
        })
        .execute();
        if let Some((json, writer)) = found {
            rec.local_tuple = Some(json);
            rec.local_commit_ts = writer.as_ref().map(|w| w.commit_ts);
            rec.local_origin = writer.map(|w| w.origin_label());
        }
        Some(rec)
    }

    fn count_conflict(&self, rec: &ConflictRecord) {
        let i = rec.conflict.index();
        status::update(self.dboid, self.subid, |s| s.conflicts[i] += 1);
    }

    fn retry_delay(&self) -> Duration {
        let sub = in_transaction(|| catalog::by_id(self.subid));
        sub.map(|s| s.options).unwrap_or_default().backoff(self.attempt)
    }

    /// Connect, stream and apply until stopped or an error is raised.
    fn session(&mut self) -> Result<Stop, String> {
        let Some(sub) = in_transaction(|| catalog::by_id(self.subid)).filter(|s| s.enabled) else {
            return Ok(Stop::Exit);
        };
        let Some(slot) = sub.slot_name.clone() else {
            return Err("subscription has no slot (slot_name is NULL): set one with alter_subscription".into());
        };
        let start = self.setup_origin(&sub);
        super::executor::set_run_as_owner(sub.options.run_as_owner);
        self.rules = in_transaction(|| {
            resolver::prune(super::settings::CONFLICT_LOG_RETENTION.get());
            resolver::load_rules(&sub.name)
        });
        // SAFETY: reads a GUC variable.
        if !unsafe { pg_sys::track_commit_timestamp } && !self.warned_no_commit_ts {
            self.warned_no_commit_ts = true;
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "logical_ext: subscription \"{}\": update_origin_differs and delete_origin_differs cannot be detected",
                    sub.name
                ),
                function_name!(),
            )
            .set_hint("Set track_commit_timestamp = on on the subscriber (and restart) to detect them and to use last_update_wins / first_update_wins.")
            .report(PgLogLevel::WARNING);
        }
        status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Starting));
        let mut conn = Connection::connect(&sub.conninfo, &sub.name)
            .map_err(|e| format!("could not connect to the publisher: {}", crate::apply::conninfo::redact(&e.0)))?;
        // In a transaction: building the result's tuple descriptor needs the
        // catalog caches and a resource owner.
        let ident = in_transaction(|| conn.exec("IDENTIFY_SYSTEM", 4))
            .map_err(|e| format!("IDENTIFY_SYSTEM failed: {}", e.0))?;
        self.remote_node = ident.first().and_then(|r| r[0].as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0);
        let snapshot = if sub.slot_pending { self.create_slot_for_copy(&mut conn, &slot)? } else { None };
        let mut sync = in_transaction(|| SyncManager::load(self.dboid, self.subid, sub.owner));
        if let Some(snap) = &snapshot {
            status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Syncing));
            if let Some(stop) = self.initial_copy(&mut sync, &sub, snap) {
                return Ok(stop);
            }
        }
        self.sync = Some(sync);
        let pubs: Vec<String> = sub.publications.iter().map(|p| quote_ident(p)).collect();
        let cmd = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (\"include-lsn\" 'on', \"include-timestamp\" 'on', \
             \"include-types\" 'off', \"include-schemas\" 'on', \"publication_names\" {}, \"origin\" '{}')",
            quote_ident(&slot),
            protocol::format_lsn(start),
            quote_literal(&pubs.join(",")),
            sub.origin.as_str()
        );
        conn.exec(&cmd, 0).map_err(|e| format!("could not start replication: {}", e.0))?;
        status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Streaming));
        if self.relmap.is_none() {
            self.relmap = Some(RelationMap::new());
        }
        let mut ses = Session::new(start);
        self.sub = Some(sub);
        self.stream(&mut conn, &mut ses)
    }

    /// Create the slot of a new subscription whose tables are to be copied,
    /// exporting its snapshot (valid while `conn` stays idle). `None` when
    /// an earlier attempt created the slot but could not record it: the
    /// tables are then copied with snapshots of their own.
    fn create_slot_for_copy(&self, conn: &mut Connection, slot: &str) -> Result<Option<(String, u64)>, String> {
        // Whether an earlier attempt created it is asked, not guessed from
        // the error's (translated) text.
        let exists = walrcv::slot_exists(conn, slot)
            .map_err(|e| format!("could not look for replication slot \"{slot}\" on the publisher: {}", e.0))?;
        let cmd = format!("CREATE_REPLICATION_SLOT {} LOGICAL logical_ext (SNAPSHOT 'export')", quote_ident(slot));
        let snapshot = if exists {
            None
        } else {
            let rows = in_transaction(|| conn.exec(&cmd, 4))
                .map_err(|e| format!("could not create replication slot \"{slot}\" on the publisher: {}", e.0))?;
            let row = rows.first();
            let lsn = row.and_then(|r| r[1].as_deref()).and_then(protocol::parse_lsn);
            match (row.and_then(|r| r[2].clone()), lsn) {
                (Some(name), Some(lsn)) => Some((name, lsn)),
                _ => return Err(format!("{cmd} returned no snapshot")),
            }
        };
        in_transaction(|| {
            Spi::run_with_args(
                "UPDATE logical_ext.subscription SET slot_pending = false WHERE id = $1",
                &[self.subid.into()],
            )
        })
        .map_err(|e| format!("could not record the new slot: {e}"))?;
        Ok(snapshot)
    }

    /// The initial copy: sync workers copy every table with the exported
    /// snapshot while this worker keeps it alive (its connection idle).
    /// Returns why to stop, or `None` once no table waits for its copy.
    fn initial_copy(&self, sync: &mut SyncManager, sub: &Subscription, snap: &(String, u64)) -> Option<Stop> {
        loop {
            backend::check_for_interrupts();
            if !status::still_owner(self.dboid, self.subid, status::my_pid()) {
                return Some(Stop::Exit);
            }
            if status::generation(self.dboid, self.subid) != self.generation {
                return Some(Stop::Reload);
            }
            sync.housekeeping(&sub.options, Some(snap), None);
            if !sync.copies_pending() {
                return None;
            }
            backend::wait(Some(Duration::from_millis(500)));
        }
    }

    /// Attach this process to the subscription's replication origin (once)
    /// and return the LSN to resume from.
    fn setup_origin(&mut self, sub: &Subscription) -> u64 {
        in_transaction(|| match &self.origin {
            Some(o) => o.progress(),
            None => {
                let (o, start) = OriginSession::attach(&Subscription::origin_name(sub.id));
                self.origin = Some(o);
                start
            }
        })
    }
}

fn error_text(e: CaughtError) -> (PgSqlErrorCode, String) {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
            (r.sql_error_code(), r.message().to_string())
        }
    }
}
