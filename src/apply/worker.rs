//! The apply worker: one background worker per enabled subscription. It
//! streams the publisher's `logical_ext` slot and applies each remote
//! transaction as one local transaction, in commit order. This file is the
//! story of a session; its parts live beside it:
//!
//! - `worker/stream.rs`: the stream loop, feedback, pings and the receive
//!   timeout (with the pure `flush.rs` and `keepalive.rs`); while a document
//!   is applied (a DDL replay can take minutes) the connection's feedback
//!   keeper (`walrcv/keeper.rs`) keeps the publisher's `wal_sender_timeout`
//!   from ending the connection;
//! - `worker/documents.rs`: applying one document (BEGIN, rows, TRUNCATE,
//!   DDL, COMMIT) in the remote transaction's local transaction;
//! - `worker/failure.rs`: after a failed session (rollback with the origin
//!   disarmed, conflict and DDL records, disable or back off);
//! - `worker/catchup.rs`: the same document application in a sync worker
//!   that catches one freshly copied table up with the stream
//!   (`tablesync.rs`);
//! - `worker/grouping.rs`: group commit, when consecutive small remote
//!   transactions are applied in one local transaction;
//! - `worker/streamed.rs`, `worker/eager.rs`: streamed transactions,
//!   spooled and applied at their commit, or applied while they arrive;
//! - `worker/prepared.rs`: two-phase commit (`P`, `CP`, `RP` documents;
//!   when a session streams with two-phase decoding);
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

mod catchup;
mod documents;
mod eager;
mod failure;
mod grouping;
mod prepared;
mod stream;
mod streamed;

pub(crate) use catchup::{CatchUp, catch_up};

use super::catalog::{self, Subscription};
use super::conflict::{ConflictType, Resolution, Rule};
use super::origin::OriginSession;
use super::protocol;
use super::relation::RelationMap;
use super::resolver::{self, ConflictRecord};
use super::status::{self, WorkerState};
use super::sync::manager::SyncManager;
use super::walrcv::{self, Connection, quote_ident, quote_literal};
use crate::ffi;
use crate::ffi::worker::{self as backend, in_transaction};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
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
    // Released however the process ends (a SIGTERM ends it with a FATAL),
    // once its transaction, locks and replication origin are released.
    status::release_at_exit(dboid.to_u32(), subid);
    // The counters of earlier server lives, and theirs kept for the next
    // (written at exit before the slot is released: callbacks run LIFO).
    if let Some(created_at) = in_transaction(|| super::stats::created_at(subid)) {
        super::stats::load(dboid.to_u32(), subid, created_at);
        super::stats::persist_at_exit(dboid.to_u32(), subid);
    }
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
    /// In a sync worker catching one table up: that table (`catchup.rs`).
    scope: Option<catchup::TableScope>,
    /// When the counters go to their file (`stats.rs`).
    stats: super::stats::Flusher,
    /// The session streams with two-phase decoding (`prepared.rs`).
    two_phase_streaming: bool,
    /// The compact relation documents of this session (`protocol.rs`).
    compact: protocol::CompactRels,
    /// The documents this worker asks for: lowered for the process when
    /// the publisher refuses an option (an older logical_ext).
    wire: Wire,
    /// When the last session ended (its connection closed): its walsender
    /// may still hold the slot for a moment.
    session_ended: Option<Instant>,
    /// This session may apply several remote transactions in one local
    /// transaction (`grouping::allowed`).
    group_commit: bool,
    /// Group commit's state; it outlives a failed session (`grouping.rs`).
    grouping: grouping::Grouping,
    /// A streamed transaction is being applied while it arrives
    /// (`eager.rs`): an error now is not reported (see `failure.rs`).
    eager_open: bool,
    /// The last session failed while applying a streamed transaction
    /// eagerly: the next ones are applied at their commit until a remote
    /// transaction commits here.
    eager_failed: bool,
    /// Streamed transactions received again after their eager apply fell
    /// back: spooled and applied at their commit (`eager.rs`).
    eager_refused: Vec<u32>,
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
            scope: None,
            stats: super::stats::Flusher::new(),
            two_phase_streaming: false,
            compact: Default::default(),
            wire: Wire::Batched,
            session_ended: None,
            group_commit: false,
            grouping: Default::default(),
            eager_open: false,
            eager_failed: false,
            eager_refused: Vec::new(),
        }
    }

    fn run(&mut self) {
        backend::set_replica_session();
        loop {
            backend::check_for_interrupts();
            // Errors the worker detects itself carry no SQLSTATE of interest.
            let session =
                AssertUnwindSafe(|| self.session().map_err(|m| (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, m, None)));
            let outcome = PgTryBuilder::new(session).catch_others(|e| Err(error_text(e))).execute();
            self.session_ended = Some(Instant::now());
            match outcome {
                Ok(Stop::Exit) => return,
                Ok(Stop::Reload) => {
                    let latest = status::generation(self.dboid, self.subid);
                    if !status::claim(self.dboid, self.subid, status::my_pid(), latest) {
                        return;
                    }
                    self.generation = latest;
                }
                Err((code, msg, detail)) => {
                    if !self.after_error(code, msg, detail) {
                        return;
                    }
                }
            }
        }
    }

    /// Connect, stream and apply until stopped or an error is raised.
    fn session(&mut self) -> Result<Stop, String> {
        self.eager_open = false;
        let Some(sub) = in_transaction(|| catalog::by_id(self.subid)).filter(|s| s.enabled) else {
            return Ok(Stop::Exit);
        };
        let Some(slot) = sub.slot_name.clone() else {
            return Err("subscription has no slot (slot_name is NULL): set one with alter_subscription".into());
        };
        let start = self.setup_origin(&sub);
        super::executor::set_run_as_owner(sub.options.run_as_owner);
        // The subscription's own, as a native subscription's worker does.
        backend::set_synchronous_commit(sub.options.synchronous_commit.as_str());
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
        if let (Some((_, created_at)), Some(origin)) = (&snapshot, &self.origin) {
            // The copy holds everything before the slot's creation point,
            // and the stream starts there: recorded at once, so that a copy
            // of this node taken during the initial copy is fenced too.
            origin.advance(*created_at, || {});
        }
        let mut sync = in_transaction(|| SyncManager::load(self.dboid, self.subid, sub.owner));
        if let Some(snap) = &snapshot {
            status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Syncing));
            if let Some(stop) = self.initial_copy(&mut sync, &sub, snap) {
                return Ok(stop);
            }
        }
        self.sync = Some(sync);
        self.two_phase_streaming = self.stream_two_phase(sub.options.two_phase)?;
        self.group_commit = grouping::allowed(
            sub.options.group_commit,
            sub.options.two_phase,
            self.scope.is_some(),
            self.rules.iter().any(|r| matches!(r.resolution, Resolution::LastUpdateWins | Resolution::FirstUpdateWins)),
        );
        // An invalidated slot can never stream again: say so, with what was
        // lost and how to recover, instead of the server's bare refusal.
        // Decided on the slot's catalog state, not on the error's text.
        // Publisher failover (option `failover`): the slot is marked before
        // the walsender starts decoding, so the standby_slot_names rule
        // holds from the first change and standbys copy it.
        if sub.options.failover {
            walrcv::mark_failover(&mut conn, &slot).map_err(|e| {
                format!(
                    "could not mark replication slot \"{slot}\" for failover on the publisher: {} (logical_ext must be \
                     installed in the publisher's database, and the connection's role be a superuser or a member of \
                     logical_ext_operator there)",
                    e.0
                )
            })?;
        }
        let slot_state = walrcv::slot_state(&mut conn, &slot)
            .map_err(|e| format!("could not read replication slot \"{slot}\" on the publisher: {}", e.0))?;
        if let Some((wal_status, confirmed)) = &slot_state
            && wal_status == "lost"
        {
            return Err(lost_slot_message(&slot, &sub.name, confirmed.as_deref()));
        }
        // No silent gap (slot_fence.rs): never stream from a slot that
        // confirmed what this node never applied.
        let confirmed = slot_state.as_ref().and_then(|(_, c)| c.as_deref()).and_then(protocol::parse_lsn);
        let start = self.fence(&sub, &slot, start, confirmed);
        let mut cmd = start_replication(&sub, &slot, start, self.wire);
        if self.two_phase_streaming {
            cmd.insert_str(cmd.len() - 1, ", \"two-phase\" 'on'");
        }
        if sub.options.streaming && !sub.options.two_phase {
            // Only the apply worker asks for in-progress transactions (a
            // table's catch-up stays on whole ones); see worker/streamed.rs.
            // A two-phase slot decodes without streaming (docs/SYNC.md).
            cmd = streaming_requested(cmd);
        }
        self.compact.clear();
        loop {
            match conn.exec_with_state(&cmd, 0) {
                Ok(_) => break,
                Err((e, sqlstate)) if self.wire != Wire::Full && protocol::option_refused(sqlstate) => {
                    // An older logical_ext on the publisher: ask for less. If
                    // the error was about something else it comes back below.
                    let lower = self.wire.lower();
                    log!(
                        "logical_ext: subscription \"{}\": the publisher's logical_ext does not offer {} ({}); \
                         streaming {} instead",
                        sub.name,
                        self.wire.describe(),
                        e.0,
                        lower.describe()
                    );
                    cmd = cmd.replacen(self.wire.option(), lower.option(), 1);
                    self.wire = lower;
                }
                Err((_, sqlstate))
                    if protocol::slot_in_use(sqlstate)
                        && self.session_ended.is_some_and(|t| t.elapsed() < SLOT_RELEASE_WAIT) =>
                {
                    // Most likely the walsender of our own previous session
                    // (a reload, a retry, an eager apply's fallback): it
                    // exits once it notices the closed connection. Anyone
                    // else's hold is reported once the wait is over.
                    backend::sleep(SLOT_RELEASE_NAP);
                }
                Err((e, _)) => return Err(format!("could not start replication: {}", e.0)),
            }
        }
        status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Streaming));
        if self.relmap.is_none() {
            self.relmap = Some(RelationMap::new());
        }
        let mut ses = Session::new(start, true);
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
    fn initial_copy(&mut self, sync: &mut SyncManager, sub: &Subscription, snap: &(String, u64)) -> Option<Stop> {
        loop {
            backend::check_for_interrupts();
            self.stats.tick(self.dboid, self.subid);
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

    /// The no-silent-gap fence before START_REPLICATION (`slot_fence.rs`):
    /// the position to stream from, or the refusal raised as an ERROR
    /// (SQLSTATE 55000, caught by the session like any other error and
    /// shown in `subscription_status.last_error`).
    fn fence(&mut self, sub: &Subscription, slot: &str, start: u64, confirmed: Option<u64>) -> u64 {
        use super::slot_fence::{self as fence, Admission};
        let origin = self.origin.as_ref().expect("set up before streaming");
        match fence::admit(start, confirmed, sub.slot_gap) {
            Admission::Stream => start,
            Admission::Adopt { confirmed } => {
                origin.advance(confirmed, || {});
                confirmed
            }
            Admission::Accept { origin: from, confirmed } => {
                let (from, to) = (protocol::format_lsn(from), protocol::format_lsn(confirmed));
                origin.advance(confirmed, || {
                    // SAFETY: reads the transaction's start time.
                    let at = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
                    let at: pgrx::datum::TimestampWithTimeZone = at.try_into().expect("a valid timestamp");
                    let record = fence::acceptance_record(&from, &to, &at.to_string());
                    Spi::run_with_args(
                        "UPDATE logical_ext.subscription SET slot_gap = 'refuse', slot_gap_accepted = $2 \
                         WHERE id = $1",
                        &[self.subid.into(), record.into()],
                    )
                    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not record the accepted gap: {e}"));
                });
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_WARNING,
                    format!(
                        "logical_ext: subscription \"{}\": accepted the gap {from}..{to} of replication slot \
                         \"{slot}\": the remote transactions committed in it are not on this node",
                        sub.name
                    ),
                    function_name!(),
                )
                .report(PgLogLevel::WARNING);
                confirmed
            }
            Admission::Refuse { origin: from, confirmed } => {
                let (from, to) = (protocol::format_lsn(from), protocol::format_lsn(confirmed));
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    fence::refusal_message(&sub.name, slot, &from, &to),
                    function_name!(),
                )
                .set_detail(fence::refusal_detail(&to))
                .report(PgLogLevel::ERROR);
                unreachable!("an ERROR does not return")
            }
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

/// The command that streams `slot` for `sub` from `start`. `format-version`
/// is explicit (the plugin's default is wal2json's 1; it implies 2 for
/// `publication_names` only so that released subscribers keep working).
///
/// `wire`: the documents to ask for (docs/FORMAT.md), which an older
/// publisher refuses (see `protocol::option_refused`).
fn start_replication(sub: &Subscription, slot: &str, start: u64, wire: Wire) -> String {
    let pubs: Vec<String> = sub.publications.iter().map(|p| quote_ident(p)).collect();
    format!(
        "START_REPLICATION SLOT {} LOGICAL {} (\"format-version\" '2', \"include-lsn\" 'on', \
         \"include-timestamp\" 'on', \"include-types\" 'off', \"include-schemas\" 'on', \
         \"publication_names\" {}, \"origin\" '{}'{})",
        quote_ident(slot),
        protocol::format_lsn(start),
        quote_literal(&pubs.join(",")),
        sub.origin.as_str(),
        wire.option()
    )
}

/// The documents a worker asks its publisher for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wire {
    /// Compact documents, the rows of a transaction several to a message.
    Batched,
    /// Compact documents, one per message.
    Compact,
    /// The full JSON documents (format-version 2).
    Full,
}

impl Wire {
    /// The plugin options asking for it (appended to the option list).
    fn option(self) -> &'static str {
        match self {
            Wire::Batched => ", \"compact\" 'on', \"batch\" 'on'",
            Wire::Compact => ", \"compact\" 'on'",
            Wire::Full => "",
        }
    }

    /// What to ask for when the publisher refuses this.
    fn lower(self) -> Wire {
        match self {
            Wire::Batched => Wire::Compact,
            Wire::Compact | Wire::Full => Wire::Full,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Wire::Batched => "batched compact documents",
            Wire::Compact => "the compact format",
            Wire::Full => "the full JSON documents",
        }
    }
}

/// How long after its previous session ended the worker waits for the slot
/// to be released when START_REPLICATION finds it active, and how often it
/// asks again meanwhile.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(5);
const SLOT_RELEASE_NAP: Duration = Duration::from_millis(20);

/// `cmd` (a START_REPLICATION command) asking for the plugin's `streaming`.
fn streaming_requested(mut cmd: String) -> String {
    if cmd.ends_with(')') {
        cmd.pop();
        cmd.push_str(", \"streaming\" 'on')");
    }
    cmd
}

/// The error's SQLSTATE, message and DETAIL (a constraint violation's
/// "Failing row contains ..." names the row, for the server log).
fn error_text(e: CaughtError) -> (PgSqlErrorCode, String, Option<String>) {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            (r.sql_error_code(), r.message().to_string(), r.detail().map(str::to_string))
        }
        CaughtError::RustPanic { ereport: r, .. } => (r.sql_error_code(), r.message().to_string(), None),
    }
}

/// `last_error` for a subscription whose slot the publisher invalidated
/// (`max_slot_wal_keep_size`): what happened, what was lost, what to do.
fn lost_slot_message(slot: &str, subscription: &str, confirmed: Option<&str>) -> String {
    let after = confirmed.map_or_else(|| "its last confirmed position".to_string(), |c| c.to_string());
    format!(
        "replication slot \"{slot}\" was invalidated on the publisher (wal_status = lost: it fell further behind \
         than max_slot_wal_keep_size allows, and the server removed the WAL it still needed); the changes committed \
         after {after} can never be streamed, so this subscriber is missing them. To recover, resynchronize: \
         SELECT logical_ext.drop_subscription('{subscription}') (drops the slot), then create the subscription \
         again with copy_data => true; consider a larger max_slot_wal_keep_size on the publisher"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn fallback_lowers_only_the_wire_options() {
        use super::Wire;
        let cmd = |w: Wire| {
            format!("START_REPLICATION SLOT \"s\" LOGICAL 0/0 (\"origin\" 'any'{}, \"two-phase\" 'on')", w.option())
        };
        let mut w = Wire::Batched;
        let mut c = cmd(w);
        assert!(c.contains("\"batch\" 'on'"));
        for expected in [Wire::Compact, Wire::Full, Wire::Full] {
            let lower = w.lower();
            c = c.replacen(w.option(), lower.option(), 1);
            w = lower;
            assert_eq!(w, expected);
            assert_eq!(c, cmd(w));
        }
        assert_eq!(c, "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (\"origin\" 'any', \"two-phase\" 'on')");
    }
}
