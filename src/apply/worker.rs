//! The apply worker: one background worker per enabled subscription. It
//! streams the publisher's `logical_ext` slot and applies each remote
//! transaction as one local transaction, in commit order.
//!
//! Exactly once: the subscription's replication origin records the remote
//! commit's end LSN in the same local commit as the data, and each session
//! starts streaming from that origin's progress. Feedback reports as flushed
//! only what is durably committed here (or, when nothing is pending, all that
//! was received, so the publisher can release WAL and shut down promptly).
//!
//! Errors of any kind (connection, malformed message, apply) abort the local
//! transaction, are recorded in shared memory (`subscription_status`), and the
//! session is retried after an exponential backoff.

use super::catalog::{self, Subscription};
use super::conflict::{ConflictType, Resolution, Rule, Writer};
use super::executor::{self, Target};
use super::protocol::{self, Doc, Inbound, RemoteRel};
use super::relation::RelationMap;
use super::resolver::{self, ConflictRecord};
use super::rows::{self, Outcome, RowContext};
use super::status::{self, WorkerState};
use super::sync::manager::SyncManager;
use super::sync::state::Action;
use super::walrcv::{self, Connection, Received, quote_ident, quote_literal};
use crate::ffi::{self, ContextSwitch};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// Row messages between two updates of the shared-memory receipt figures.
const RECEIPT_REPORT_EVERY: u32 = 256;

/// How often feedback is sent at the latest while streaming.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);

/// Entry point of an apply worker (registered by `launcher.rs`).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_apply_main(arg: pg_sys::Datum) {
    let subid = arg.value() as i32;
    let (dboid, owner, generation) = super::launcher::parse_extra(BackgroundWorker::get_extra());
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), Some(owner));
    let me = status::my_pid();
    if !status::claim(dboid.to_u32(), subid, me, generation) {
        debug1!("logical_ext: subscription {subid} has a newer apply worker");
        return;
    }
    let mut w = Worker::new(dboid.to_u32(), subid, generation);
    w.run();
    status::release(dboid.to_u32(), subid, me);
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
    origin: Option<u16>,
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

/// State of one streaming session.
struct Session {
    last_received: u64,
    last_committed: u64,
    /// Remote end LSN of the last transaction known flushed locally.
    flushed: u64,
    /// (remote end LSN, local commit end LSN) not yet known flushed locally.
    pending: VecDeque<(u64, u64)>,
    in_txn: bool,
    last_feedback: Instant,
    last_reported: (u64, u64),
    truncates: Vec<(RemoteRel, bool)>,
    truncate_lsn: Option<String>,
    scratch: Vec<u8>,
    changes: i64,
    /// The remote transaction being applied: commit LSN and time.
    commit_lsn: Option<u64>,
    commit_ts: i64,
    /// It is the one skip_transaction named: its changes are dropped.
    skipping: bool,
    /// A newer worker took over this subscription: stop after this commit.
    displaced: bool,
    /// The settings changed: start a new session after this commit.
    reload: bool,
    /// Conflicts resolved in the current remote transaction, by type.
    conflicts: [i64; 6],
    /// The last XLogData (start, WAL end, send time) and how many arrived
    /// since shared memory was last told.
    last_message: (u64, u64, i64),
    unreported: u32,
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
        set_session_settings();
        loop {
            if BackgroundWorker::sigterm_received() {
                return;
            }
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
                    if !sleep(delay) {
                        return;
                    }
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
        let mut ses = Session {
            last_received: start,
            last_committed: start,
            flushed: start,
            pending: VecDeque::new(),
            in_txn: false,
            last_feedback: Instant::now(),
            last_reported: (0, 0),
            truncates: Vec::new(),
            truncate_lsn: None,
            scratch: Vec::new(),
            changes: 0,
            commit_lsn: None,
            commit_ts: 0,
            skipping: false,
            displaced: false,
            reload: false,
            conflicts: [0; 6],
            last_message: (start, start, 0),
            unreported: 0,
        };
        self.sub = Some(sub);
        self.stream(&mut conn, &mut ses)
    }

    /// Create the slot of a new subscription whose tables are to be copied,
    /// exporting its snapshot (valid while `conn` stays idle). `None` when
    /// an earlier attempt created the slot but could not record it: the
    /// tables are then copied with snapshots of their own.
    fn create_slot_for_copy(&self, conn: &mut Connection, slot: &str) -> Result<Option<(String, u64)>, String> {
        let cmd = format!("CREATE_REPLICATION_SLOT {} LOGICAL logical_ext (SNAPSHOT 'export')", quote_ident(slot));
        let snapshot = match in_transaction(|| conn.exec(&cmd, 4)) {
            Ok(rows) => {
                let row = rows.first();
                let lsn = row.and_then(|r| r[1].as_deref()).and_then(protocol::parse_lsn);
                match (row.and_then(|r| r[2].clone()), lsn) {
                    (Some(name), Some(lsn)) => Some((name, lsn)),
                    _ => return Err(format!("{cmd} returned no snapshot")),
                }
            }
            Err(e) if e.0.contains("already exists") => None,
            Err(e) => return Err(format!("could not create replication slot \"{slot}\" on the publisher: {}", e.0)),
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
            if ffi::shutdown_requested() || !status::still_owner(self.dboid, self.subid, status::my_pid()) {
                return Some(Stop::Exit);
            }
            if status::generation(self.dboid, self.subid) != self.generation {
                return Some(Stop::Reload);
            }
            sync.housekeeping(&sub.options, Some(snap), None);
            if !sync.copies_pending() {
                return None;
            }
            BackgroundWorker::wait_latch(Some(Duration::from_millis(500)));
        }
    }

    /// Before a remote transaction starts: while a table is being copied,
    /// wait (answering the publisher) until the copy is committed.
    fn copy_in_progress(&mut self) -> bool {
        self.sync.as_mut().is_some_and(|s| {
            s.reload_if_changed();
            s.copying()
        })
    }

    fn wait_for_copies(&mut self, conn: &mut Connection, ses: &mut Session) {
        let opts = self.sub.as_ref().map(|s| s.options.clone()).unwrap_or_default();
        status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Syncing));
        loop {
            if ffi::shutdown_requested() || !status::still_owner(self.dboid, self.subid, status::my_pid()) {
                ses.displaced = true;
                return;
            }
            if status::generation(self.dboid, self.subid) != self.generation {
                ses.reload = true;
                return;
            }
            let Some(sync) = self.sync.as_mut() else { return };
            sync.housekeeping(&opts, None, None);
            if !sync.copying() {
                status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Streaming));
                return;
            }
            self.feedback(conn, ses, false);
            BackgroundWorker::wait_latch(Some(Duration::from_millis(500)));
        }
    }

    /// Between transactions: sync housekeeping (see `SyncManager`).
    fn sync_housekeeping(&mut self, applied_through: u64) {
        let Some(sync) = self.sync.as_mut() else { return };
        sync.reload_if_changed();
        if sync.all_ready() {
            return;
        }
        let opts = self.sub.as_ref().map(|s| s.options.clone()).unwrap_or_default();
        sync.housekeeping(&opts, None, Some(applied_through));
    }

    fn apply_message(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<(), String> {
        let _cx = ContextSwitch::to(self.msg_cxt);
        let r = self.apply_doc(ses, payload, lsn);
        drop(_cx);
        ffi::reset_memory_context(self.msg_cxt);
        r
    }

    /// Attach this process to the subscription's replication origin (once)
    /// and return the LSN to resume from.
    fn setup_origin(&mut self, sub: &Subscription) -> u64 {
        in_transaction(|| {
            let name = std::ffi::CString::new(Subscription::origin_name(sub.id)).expect("no NUL");
            // SAFETY: inside a transaction; the origin exists for every subscription.
            unsafe {
                if self.origin.is_none() {
                    let id = pg_sys::replorigin_by_name(name.as_ptr(), false);
                    pg_sys::replorigin_session_setup(id);
                    pg_sys::replorigin_session_origin = id;
                    self.origin = Some(id);
                }
                pg_sys::replorigin_session_get_progress(false)
            }
        })
    }

    fn stream(&mut self, conn: &mut Connection, ses: &mut Session) -> Result<Stop, String> {
        loop {
            if BackgroundWorker::sigterm_received() || ses.displaced {
                return Ok(Stop::Exit);
            }
            if ses.reload {
                return Ok(Stop::Reload);
            }
            let mut reply_now = false;
            match conn.receive() {
                Received::Data(buf) => match protocol::parse_inbound(buf).map_err(|e| e.0)? {
                    Inbound::XLogData { start, wal_end, send_time, payload } => {
                        ses.last_received = ses.last_received.max(start).max(wal_end);
                        // Shared memory is updated every RECEIPT_REPORT_EVERY
                        // messages (and on keepalives), not per row.
                        ses.unreported += 1;
                        if ses.unreported >= RECEIPT_REPORT_EVERY {
                            ses.unreported = 0;
                            let now = now_ts();
                            status::update(self.dboid, self.subid, |s| {
                                s.received_lsn = start;
                                s.latest_end_lsn = s.latest_end_lsn.max(wal_end);
                                s.last_send_time = send_time;
                                s.last_receipt_time = now;
                            });
                        }
                        ses.last_message = (start, wal_end, send_time);
                        if !ses.in_txn && self.copy_in_progress() {
                            let owned = payload.to_vec();
                            self.wait_for_copies(conn, ses);
                            if ses.displaced || ses.reload {
                                continue;
                            }
                            self.apply_message(ses, &owned, start)?;
                        } else {
                            self.apply_message(ses, payload, start)?;
                        }
                        if !ses.in_txn {
                            self.sync_housekeeping(ses.last_received);
                        }
                    }
                    Inbound::Keepalive { wal_end, send_time, reply_requested } => {
                        ses.last_received = ses.last_received.max(wal_end);
                        let now = now_ts();
                        let (received, _, _) = ses.last_message;
                        status::update(self.dboid, self.subid, |s| {
                            s.received_lsn = s.received_lsn.max(received);
                            s.latest_end_lsn = s.latest_end_lsn.max(wal_end);
                            s.last_send_time = send_time;
                            s.last_receipt_time = now;
                        });
                        reply_now = reply_requested;
                    }
                },
                Received::WouldBlock(fd) => {
                    if !ses.in_txn {
                        if !status::still_owner(self.dboid, self.subid, status::my_pid()) {
                            // A newer worker took over.
                            return Ok(Stop::Exit);
                        }
                        if status::generation(self.dboid, self.subid) != self.generation {
                            return Ok(Stop::Reload);
                        }
                        self.sync_housekeeping(ses.last_received);
                    }
                    self.feedback(conn, ses, false);
                    walrcv::wait_socket(fd, Duration::from_secs(1));
                    if BackgroundWorker::sighup_received() {
                        // SAFETY: re-reading the configuration file, as any
                        // worker does on SIGHUP. (Subscription changes arrive
                        // as a SIGTERM and a restart, never through this path.)
                        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                    }
                    continue;
                }
                Received::End => return Err("the publisher ended the replication stream".into()),
            }
            if reply_now || ses.last_feedback.elapsed() >= FEEDBACK_INTERVAL {
                self.feedback(conn, ses, reply_now);
            }
        }
    }

    /// Report write/flush/apply positions.
    fn feedback(&self, conn: &mut Connection, ses: &mut Session, force: bool) {
        // SAFETY: reads the local WAL flush position.
        let flushed_local = unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) };
        while let Some(&(remote, local)) = ses.pending.front() {
            if local > flushed_local {
                break;
            }
            ses.flushed = ses.flushed.max(remote);
            ses.pending.pop_front();
        }
        let flush = if ses.pending.is_empty() && !ses.in_txn && ses.truncates.is_empty() {
            // Nothing applied is waiting for a local flush: everything
            // received is as good as flushed (pitfall in platform.md).
            ses.last_received
        } else {
            ses.flushed
        };
        let write = ses.last_received;
        if !force && (write, flush) == ses.last_reported && ses.last_feedback.elapsed() < Duration::from_secs(10) {
            return;
        }
        let msg = protocol::status_update(write, flush, flush, now_ts(), false);
        conn.send(&msg);
        ses.last_reported = (write, flush);
        ses.last_feedback = Instant::now();
    }

    /// Apply one document of the stream.
    fn apply_doc(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<(), String> {
        let doc = protocol::parse_doc(payload)
            .map_err(|e| format!("malformed message at {}: {e}", protocol::format_lsn(lsn)))?;
        if !matches!(doc, Doc::Truncate { .. }) {
            self.flush_truncates(ses);
        }
        match doc {
            Doc::Begin { commit_lsn, timestamp } => {
                if ses.in_txn {
                    return Err(format!("BEGIN inside a transaction at {}", protocol::format_lsn(lsn)));
                }
                // SAFETY: starting the local transaction of a remote one.
                unsafe {
                    pg_sys::SetCurrentStatementStartTimestamp();
                    pg_sys::StartTransactionCommand();
                }
                ses.in_txn = true;
                ses.changes = 0;
                ses.conflicts = [0; 6];
                ses.commit_lsn = commit_lsn;
                ses.commit_ts = timestamp.as_deref().map(parse_timestamptz).unwrap_or(0);
                let skip = self.sub.as_ref().and_then(|s| s.skip_lsn);
                ses.skipping = skip.is_some() && skip == commit_lsn;
            }
            Doc::Commit { end_lsn, timestamp } => {
                if !ses.in_txn {
                    return Err(format!("COMMIT outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                if ses.skipping {
                    self.finish_skip(ses);
                }
                let ts = timestamp.as_deref().map(parse_timestamptz).unwrap_or(ses.commit_ts);
                // SAFETY: the origin position and timestamp are written into
                // this commit record: progress commits atomically with the data.
                unsafe {
                    pg_sys::replorigin_session_origin_lsn = end_lsn;
                    pg_sys::replorigin_session_origin_timestamp = ts;
                    pg_sys::CommitTransactionCommand();
                    ses.pending.push_back((end_lsn, pg_sys::XactLastCommitEnd));
                    pg_sys::replorigin_session_origin_lsn = 0;
                    pg_sys::replorigin_session_origin_timestamp = 0;
                }
                ses.in_txn = false;
                ses.skipping = false;
                ses.last_committed = end_lsn;
                let changes = ses.changes;
                let conflicts = std::mem::take(&mut ses.conflicts);
                let (received, wal_end, send_time) = ses.last_message;
                let now = now_ts();
                ses.unreported = 0;
                status::update(self.dboid, self.subid, |s| {
                    s.received_lsn = received;
                    s.latest_end_lsn = s.latest_end_lsn.max(wal_end);
                    s.last_send_time = send_time;
                    s.last_receipt_time = now;
                    s.applied_txns += 1;
                    s.applied_changes += changes;
                    for (total, n) in s.conflicts.iter_mut().zip(conflicts) {
                        *total += n;
                    }
                    s.last_commit_time = ts;
                    s.clear_error();
                    s.set_state(WorkerState::Streaming);
                });
                self.attempt = 0;
                ses.displaced = !status::still_owner(self.dboid, self.subid, status::my_pid());
                ses.reload = status::generation(self.dboid, self.subid) != self.generation;
            }
            Doc::Insert { rel, new } => {
                self.remember(ConflictType::InsertExists, payload, ses);
                self.change(ses, lsn, &rel, |ctx, t, scratch| rows::insert(ctx, t, &new, scratch))?
            }
            Doc::Update { rel, new, identity, complete } => {
                self.remember(ConflictType::UpdateExists, payload, ses);
                self.change(ses, lsn, &rel, |ctx, t, scratch| {
                    let key = identity.as_deref().unwrap_or(&new);
                    rows::update(ctx, t, key, &new, complete, scratch)
                })?
            }
            Doc::Delete { rel, identity } => {
                let Some(identity) = identity else {
                    return Err(format!(
                        "DELETE on {}.{} at {} carries no replica identity",
                        rel.schema,
                        rel.table,
                        protocol::format_lsn(lsn)
                    ));
                };
                self.change(ses, lsn, &rel, |ctx, t, scratch| rows::delete(ctx, t, &identity, scratch))?
            }
            Doc::Truncate { rel, restart_identity, lsn: tlsn, .. } => {
                if !ses.in_txn {
                    return Err(format!("TRUNCATE outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                if ses.skipping || self.sync.as_ref().is_some_and(|s| s.action(&rel, ses.commit_lsn) == Action::Skip) {
                    return Ok(());
                }
                let tlsn = tlsn.map(|s| s.into_owned());
                if ses.truncate_lsn != tlsn {
                    self.flush_truncates(ses);
                    ses.truncate_lsn = tlsn;
                }
                ses.truncates.push((rel, restart_identity));
            }
            // Plain logical messages are for other consumers.
            Doc::Message => {}
            Doc::Ddl(event) => {
                if !ses.in_txn {
                    return Err(format!("DDL outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                if ses.skipping {
                    return Ok(());
                }
                let sub = &self.sub.as_ref().expect("set at session start").name;
                // SAFETY: inside the remote transaction; see `change`.
                unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
                let result = crate::ddl::replay(&event, sub, lsn, &protocol::format_lsn(lsn));
                // SAFETY: pairs with the push above; later changes see the new schema.
                unsafe {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommandCounterIncrement();
                }
                ses.changes += 1;
                result?
            }
        }
        Ok(())
    }

    /// Run one row change inside the current remote transaction, and act on
    /// its conflict outcome.
    fn change(
        &mut self,
        ses: &mut Session,
        lsn: u64,
        rel: &RemoteRel,
        f: impl FnOnce(&RowContext<'_>, &Target<'_>, &mut Vec<u8>) -> Outcome,
    ) -> Result<(), String> {
        if !ses.in_txn {
            return Err(format!("change outside a transaction at {}", protocol::format_lsn(lsn)));
        }
        if ses.skipping {
            return Ok(());
        }
        if self.sync.as_ref().is_some_and(|s| s.action(rel, ses.commit_lsn) == Action::Skip) {
            return Ok(());
        }
        let sub = self.sub.as_ref().expect("set at session start");
        let origin_name = &self.origin_name;
        let ctx = RowContext {
            rules: &self.rules,
            subscription: &sub.name,
            my_origin: self.origin.unwrap_or(0),
            copy_origins: self.sync.as_ref().map_or(&[], |s| s.copy_origins()),
            origin_name,
            remote: Writer { commit_ts: ses.commit_ts, node: self.remote_node },
            // SAFETY: reads the control file's system identifier.
            local_node: unsafe { pg_sys::GetSystemIdentifier() },
            commit_lsn: ses.commit_lsn,
            // SAFETY: reads a GUC variable.
            detect_origin: unsafe { pg_sys::track_commit_timestamp },
        };
        let relmap = self.relmap.as_mut().expect("set up at session start");
        // SAFETY: each change runs with a fresh snapshot and is made visible
        // to the next one, as in worker.c's begin/end_replication_step.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        let outcome = {
            let target = Target::open(relmap.get(rel));
            f(&ctx, &target, &mut ses.scratch)
        };
        let result = match outcome {
            Outcome::Applied => Ok(()),
            Outcome::Resolved(rec) => {
                // Logged in this transaction; counted when it commits, so a
                // retried transaction does not count its conflicts twice.
                resolver::log(&rec);
                ses.conflicts[rec.conflict.index()] += 1;
                Ok(())
            }
            Outcome::Failed(rec, msg) => {
                self.failed_conflict = Some(rec);
                Err(msg)
            }
        };
        // SAFETY: pairs with the push above.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommandCounterIncrement();
        }
        ses.changes += 1;
        result
    }

    /// Keep a copy of the INSERT/UPDATE about to be applied (see `in_flight`).
    fn remember(&mut self, kind: ConflictType, payload: &[u8], ses: &Session) {
        let mut buf = self.in_flight.take().map(|f| f.1).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.in_flight = Some((kind, buf, ses.commit_lsn, ses.commit_ts));
    }

    /// The transaction named by skip_transaction ends: clear the request in
    /// the same commit that records its position as applied.
    fn finish_skip(&mut self, ses: &Session) {
        // SAFETY: inside the remote transaction, as in `change`.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        Spi::run_with_args("UPDATE logical_ext.subscription SET skip_lsn = NULL WHERE id = $1", &[self.subid.into()])
            .unwrap_or_else(|e| pgrx::error!("logical_ext: could not clear skip_lsn: {e}"));
        // SAFETY: pairs with the push above.
        unsafe { pg_sys::PopActiveSnapshot() };
        if let Some(sub) = self.sub.as_mut() {
            sub.skip_lsn = None;
        }
        log!(
            "logical_ext: subscription {}: skipped the remote transaction committed at {} ({} changes not applied)",
            self.subid,
            ses.commit_lsn.map(protocol::format_lsn).unwrap_or_default(),
            ses.changes
        );
    }

    /// Apply the TRUNCATE documents of one statement together.
    fn flush_truncates(&mut self, ses: &mut Session) {
        if ses.truncates.is_empty() {
            return;
        }
        let relmap = self.relmap.as_mut().expect("set up at session start");
        let restart = ses.truncates.iter().any(|t| t.1);
        let relids: Vec<pg_sys::Oid> = ses.truncates.iter().map(|(r, _)| relmap.get(r).relid).collect();
        // SAFETY: inside the remote transaction; see `change`.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        executor::truncate(&relids, restart);
        // SAFETY: pairs with the push above.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommandCounterIncrement();
        }
        ses.changes += relids.len() as i64;
        ses.truncates.clear();
        ses.truncate_lsn = None;
    }
}

/// Settings of the apply session: fire only REPLICA/ALWAYS triggers, as
/// native replication does, and commit asynchronously (feedback only reports
/// what is flushed).
pub(super) fn set_session_settings() {
    for (name, value) in [(c"session_replication_role", c"replica"), (c"synchronous_commit", c"off")] {
        // SAFETY: setting built-in GUCs with valid names and values.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            )
        };
    }
}

/// Run `f` in its own transaction with a snapshot.
pub(crate) fn in_transaction<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the standard transaction wrapper of a background worker.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = f();
    // SAFETY: pairs with the above.
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    r
}

fn error_text(e: CaughtError) -> (PgSqlErrorCode, String) {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
            (r.sql_error_code(), r.message().to_string())
        }
    }
}

pub(crate) fn now_ts() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn parse_timestamptz(text: &str) -> i64 {
    let c = std::ffi::CString::new(text).unwrap_or_default();
    // SAFETY: timestamptz_in with a valid C string; it raises an ERROR on bad input.
    unsafe {
        pgrx::direct_function_call::<i64>(
            pg_sys::timestamptz_in,
            &[Some(pg_sys::Datum::from(c.as_ptr())), Some(pg_sys::Datum::from(0u32)), Some(pg_sys::Datum::from(-1i32))],
        )
        .unwrap_or(0)
    }
}

/// Sleep on the latch; false when SIGTERM arrived.
fn sleep(d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if !BackgroundWorker::wait_latch(Some(deadline.saturating_duration_since(Instant::now()))) {
            return false;
        }
    }
    !BackgroundWorker::sigterm_received()
}
