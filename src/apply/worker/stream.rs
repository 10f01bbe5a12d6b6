//! The stream of one session: receive, hand documents to `documents.rs`,
//! send feedback (what `FlushTracker` allows as flushed and applied), ping
//! and give up a silent connection (`ReceiveTimer`, `wal_receiver_timeout`),
//! and pause before a remote transaction while a table copy is being
//! committed.
//!
//! Synchronous replication: a publisher that lists this subscription in
//! `synchronous_standby_names` holds each commit until we report it flushed
//! (or applied, with `remote_apply`). So feedback goes out as soon as the
//! socket has nothing more to read (as native does after draining it: once
//! per burst during a catch-up, right after each commit when they come one
//! at a time) — its apply position at once, its flush position too when
//! the subscription's `synchronous_commit` made the local commit durable —
//! and, while commits wait for the WAL writer's flush, the socket wait naps
//! at most `FLUSH_WAIT_NAP_MS` before looking again.
//!
//! Local work between two receives (applying a document: a replayed DDL
//! that builds an index for minutes, a slow trigger, a lock wait; sync
//! housekeeping) runs with the connection's feedback keeper armed
//! (`walrcv/keeper.rs`): it repeats, from a helper thread, the positions the
//! flush tracker allows when the work starts, so the publisher's
//! `wal_sender_timeout` does not end the connection under a long replay.
//! The main thread does not touch the connection while it is armed.
//!
//! Settings changes: the SQL functions that change a subscription request a
//! new generation and send its worker a SIGHUP. Between transactions the
//! worker looks at the generation when the socket is empty, and also before
//! the next message whenever a SIGHUP arrived (`settings_changed`): on a busy
//! or descheduled worker, the transaction the publisher sent after the
//! change may already be waiting in the socket, and it must be applied under
//! the new settings (a conflict rule set before it was committed applies to
//! it).
//!
//! Group commit (`grouping.rs`): a remote COMMIT may leave its local
//! transaction open (`Session::deferred`) for the next remote transaction,
//! when that one is already received. The deferred commit is made as soon
//! as the socket would block — before feedback, before anything that must
//! run between committed transactions — so waiting never grows a group.

use super::{Stop, Worker};
use crate::apply::executor::TargetCache;
use crate::apply::flush::FlushTracker;
use crate::apply::keepalive::{Due, ReceiveTimer};
use crate::apply::origin::Applying;
use crate::apply::protocol::{self, Inbound, RemoteRel};
use crate::apply::status::{self, WorkerState};
use crate::apply::walrcv::{Busy, Connection, KeeperHandle, Received};
use crate::ffi::worker::{self as backend, now_ts};
use crate::ffi::{self, ContextSwitch};
use pgrx::pg_sys;
use std::time::{Duration, Instant};

/// Row messages between two updates of the shared-memory receipt figures.
const RECEIPT_REPORT_EVERY: u32 = 256;

/// How often an idle apply worker moves its origin over WAL that carried
/// nothing for it, at most (each move is one small local commit).
const IDLE_ADVANCE_INTERVAL: Duration = Duration::from_secs(1);

/// The longest nap while applied commits wait for the local WAL flush.
const FLUSH_WAIT_NAP_MS: i64 = 50;

/// How often feedback is sent at the latest while streaming.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);

/// Messages between two clock reads of the loop's interval checks (the
/// statistics file, feedback at least every `FEEDBACK_INTERVAL`): reading
/// the clock per message was ~5% of the worker on small messages. Long
/// local work between them is covered by the feedback keeper, which speaks
/// while a message is applied once the last feedback is `FEEDBACK_INTERVAL`
/// old; an empty socket reads the clock at once.
const CLOCK_EVERY: u32 = 16;

/// State of one streaming session.
pub(super) struct Session {
    pub(super) last_received: u64,
    pub(super) last_committed: u64,
    /// What may be reported as flushed.
    pub(super) flush: FlushTracker,
    /// Receive timeout and pings (`wal_receiver_timeout`).
    pub(super) timer: ReceiveTimer,
    pub(super) in_txn: bool,
    /// The origin is armed while a remote transaction is applied; dropping
    /// the session (an error unwinding) disarms it.
    pub(super) applying: Option<Applying>,
    pub(super) last_feedback: Instant,
    /// The (write, flush, apply) positions last reported.
    pub(super) last_reported: (u64, u64, u64),
    pub(super) truncates: Vec<(RemoteRel, bool)>,
    pub(super) truncate_lsn: Option<String>,
    pub(super) scratch: Vec<u8>,
    /// Executor state kept for the remote transaction (`executor.rs`).
    pub(super) targets: TargetCache,
    pub(super) changes: i64,
    /// The remote transaction being applied: commit LSN and time.
    pub(super) commit_lsn: Option<u64>,
    pub(super) commit_ts: i64,
    /// The BEGIN document's timestamp text (`commit_ts` parsed from it).
    pub(super) begin_timestamp: String,
    /// It is the one skip_transaction named: its changes are dropped.
    pub(super) skipping: bool,
    /// A newer worker took over this subscription: stop after this commit.
    pub(super) displaced: bool,
    /// The settings changed: start a new session after this commit.
    pub(super) reload: bool,
    /// Conflicts resolved in the current remote transaction, by type.
    pub(super) conflicts: [i64; 6],
    /// The last XLogData (start, WAL end, send time) and how many arrived
    /// since shared memory was last told.
    pub(super) last_message: (u64, u64, i64),
    pub(super) unreported: u32,
    /// Streamed transactions (`streamed.rs`): their spool files, the open
    /// block, and whether the message being handled is a stream commit.
    pub(super) streamed: super::streamed::Streamed,
    /// Group commit: the local commit of the last applied remote
    /// transaction (its end LSN and commit time) is deferred; its local
    /// transaction is still open (`grouping.rs`).
    pub(super) deferred: Option<(u64, i64)>,
    /// Loop iterations since the interval checks last read the clock.
    since_clock: u32,
    /// When the origin was last moved over idle WAL (`idle_advance`).
    last_idle_advance: Instant,
}

impl Session {
    /// A session streaming from `start` (everything before it is applied).
    /// `durable`: the apply worker's session, whose idle positions are
    /// reported once the origin records them (`flush.rs`); a table's
    /// catch-up reports them at once.
    pub(super) fn new(start: u64, durable: bool) -> Session {
        Session {
            last_received: start,
            last_committed: start,
            flush: if durable { FlushTracker::durable(start) } else { FlushTracker::new(start) },
            last_idle_advance: Instant::now(),
            timer: ReceiveTimer::new(now_ts()),
            in_txn: false,
            applying: None,
            last_feedback: Instant::now(),
            last_reported: (0, 0, 0),
            truncates: Vec::new(),
            truncate_lsn: None,
            scratch: Vec::new(),
            targets: TargetCache::default(),
            changes: 0,
            commit_lsn: None,
            commit_ts: 0,
            begin_timestamp: String::new(),
            skipping: false,
            displaced: false,
            reload: false,
            conflicts: [0; 6],
            last_message: (start, start, 0),
            unreported: 0,
            streamed: Default::default(),
            deferred: None,
            since_clock: CLOCK_EVERY,
        }
    }

    /// Whether this iteration of the stream loop reads the clock for its
    /// interval checks (every `CLOCK_EVERY`-th, and the first after the
    /// socket was found empty).
    fn clock_due(&mut self) -> bool {
        self.since_clock += 1;
        if self.since_clock < CLOCK_EVERY {
            return false;
        }
        self.since_clock = 0;
        true
    }

    /// Applied work is open: a remote transaction, queued TRUNCATEs, or a
    /// deferred commit. A streamed transaction applied while it arrives
    /// (`eager.rs`) is not, until its commit: what was received of it may be
    /// reported, as when it is only spooled (its commit lies beyond).
    fn work_open(&self) -> bool {
        (self.in_txn && !self.streamed.eager_open())
            || !self.truncates.is_empty()
            || self.streamed.replaying
            || self.deferred.is_some()
    }

    /// Arm the feedback keeper for local work. It reports what the flush
    /// tracker allows now — never more than durably applied (without even
    /// the local-flush refresh `feedback` does, so at most what that would
    /// report) — for as long as the work runs.
    pub(super) fn busy<'k>(&self, keeper: Option<&'k KeeperHandle>) -> Option<Busy<'k>> {
        let write = self.last_received;
        let flush = self.flush.report(write, self.work_open());
        keeper.map(|k| k.busy(write, flush, self.last_feedback))
    }

    /// The local work armed with [`Session::busy`] is over. When it was long
    /// enough for the keeper to speak, the connection was not read all that
    /// time: the receive timeout counts from now, not from the last message
    /// read before the work.
    pub(super) fn idle(&mut self, busy: Option<Busy<'_>>) {
        if busy.is_some_and(Busy::finish) {
            self.timer.received(now_ts());
        }
    }
}

impl Worker {
    /// Before a remote transaction starts: whether a table is being handed
    /// over from its copy to the stream (wait with `wait_for_handover`).
    pub(super) fn handover_in_progress(&mut self) -> bool {
        self.sync.as_mut().is_some_and(|s| s.handover_pending())
    }

    /// Wait (answering the publisher) until no hand-over is pending.
    pub(super) fn wait_for_handover(&mut self, conn: &mut Connection, ses: &mut Session) {
        let opts = self.sub.as_ref().map(|s| s.options.clone()).unwrap_or_default();
        status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Syncing));
        loop {
            backend::check_for_interrupts();
            self.stats.tick(self.dboid, self.subid);
            if !status::still_owner(self.dboid, self.subid, status::my_pid()) {
                ses.displaced = true;
                return;
            }
            if status::generation(self.dboid, self.subid) != self.generation {
                ses.reload = true;
                return;
            }
            let Some(sync) = self.sync.as_mut() else { return };
            sync.housekeeping(&opts, None, None);
            if !sync.handover_pending() {
                status::update(self.dboid, self.subid, |s| s.set_state(WorkerState::Streaming));
                return;
            }
            self.feedback(conn, ses, false);
            // The connection is not read meanwhile: keepalives pile up in
            // the socket, and the publisher hears from us above.
            backend::wait(Some(Duration::from_millis(500)));
            ses.timer.received(now_ts());
        }
    }

    /// Between transactions: sync housekeeping (see `SyncManager`).
    pub(super) fn sync_housekeeping(&mut self, applied_through: u64) {
        let Some(sync) = self.sync.as_mut() else { return };
        sync.reload_if_changed();
        if sync.all_ready() {
            return;
        }
        let opts = self.sub.as_ref().map(|s| s.options.clone()).unwrap_or_default();
        sync.housekeeping(&opts, None, Some(applied_through));
    }

    /// Between transactions, after a SIGHUP: whether the subscription's
    /// settings changed (a new generation was requested), after committing
    /// a deferred group. The session then ends before the message in hand,
    /// so a change committed before the publisher sent a transaction
    /// applies to that transaction, however late the worker got to run.
    fn settings_changed(&mut self, ses: &mut Session) -> Result<bool, String> {
        self.end_group(ses)?;
        // No local transaction is open now.
        backend::reload_config_if_due();
        if status::generation(self.dboid, self.subid) != self.generation {
            ses.reload = true;
        }
        Ok(ses.displaced || ses.reload)
    }

    pub(super) fn apply_message(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<(), String> {
        // Several row documents of one transaction (plugin option `batch`):
        // each applied as if it had come alone, with the message's LSN.
        if let Some(batch) = protocol::batched(payload) {
            for doc in batch {
                let doc = doc.map_err(|e| format!("malformed batch at {}: {e}", protocol::format_lsn(lsn)))?;
                self.apply_one(ses, doc, lsn)?;
            }
            return Ok(());
        }
        self.apply_one(ses, payload, lsn)
    }

    fn apply_one(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<(), String> {
        let _cx = ContextSwitch::to(self.msg_cxt);
        let r = self.apply_doc(ses, payload, lsn);
        drop(_cx);
        ffi::reset_memory_context(self.msg_cxt);
        r
    }

    pub(super) fn stream(&mut self, conn: &mut Connection, ses: &mut Session) -> Result<Stop, String> {
        let keeper = match conn.feedback_keeper() {
            Ok(k) => Some(k),
            Err(why) => {
                warn_no_keeper(&why);
                None
            }
        };
        loop {
            backend::check_for_interrupts();
            let timed = ses.clock_due();
            if self.scope.is_none() && timed {
                // A clock read; a small file write every few seconds at most.
                self.stats.tick(self.dboid, self.subid);
            }
            if ses.displaced {
                return Ok(Stop::Exit);
            }
            if ses.reload {
                return Ok(Stop::Reload);
            }
            let mut reply_now = false;
            // Read ahead only batched messages (walrcv/readahead.rs).
            let received = if self.wire == super::Wire::Batched { conn.receive_stream()? } else { conn.receive() };
            match received {
                Received::Data(buf) => {
                    // Stamped when the socket is empty (keepalive.rs).
                    ses.timer.arrived();
                    match protocol::parse_inbound(buf).map_err(|e| e.0)? {
                        Inbound::XLogData { start, wal_end, send_time, payload } => {
                            if !ses.in_txn && backend::settings_signalled() && self.settings_changed(ses)? {
                                // The next session receives this message again.
                                continue;
                            }
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
                            ses.streamed.incoming(payload);
                            if !ses.in_txn && self.handover_in_progress() {
                                let owned = payload.to_vec();
                                // A table's hand-over waits at a committed point.
                                self.end_group(ses)?;
                                self.wait_for_handover(conn, ses);
                                if ses.displaced || ses.reload {
                                    continue;
                                }
                                let busy = ses.busy(keeper.as_ref());
                                self.apply_message(ses, &owned, start)?;
                                ses.idle(busy);
                            } else {
                                let busy = ses.busy(keeper.as_ref());
                                self.apply_message(ses, payload, start)?;
                                ses.idle(busy);
                            }
                            if ses.displaced || ses.reload {
                                // A commit found a newer worker or new settings
                                // (a deferred group's may have left this
                                // message unapplied): no housekeeping and no
                                // feedback past it; the session ends now.
                                continue;
                            }
                            if !ses.in_txn && ses.deferred.is_none() {
                                let busy = ses.busy(keeper.as_ref());
                                self.sync_housekeeping(ses.last_received);
                                ses.idle(busy);
                                if self.two_phase_due() {
                                    // Every table is ready: stream again,
                                    // now with two-phase decoding.
                                    return Ok(Stop::Reload);
                                }
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
                    }
                }
                Received::WouldBlock(fd) => {
                    ses.since_clock = CLOCK_EVERY;
                    if ses.streamed.eager_idle() {
                        // Between two blocks of a streamed transaction applied
                        // while it arrives: roll it back if the checks below
                        // would act (worker/eager.rs); the session then ends.
                        self.eager_checks(ses)?;
                        if ses.reload {
                            continue;
                        }
                    }
                    // Nothing more to read: a deferred commit is made now,
                    // before feedback and before any wait (`grouping.rs`).
                    if ses.deferred.is_some() {
                        let busy = ses.busy(keeper.as_ref());
                        self.end_group(ses)?;
                        ses.idle(busy);
                        if ses.displaced || ses.reload {
                            continue;
                        }
                    }
                    if !ses.in_txn {
                        if !status::still_owner(self.dboid, self.subid, status::my_pid()) {
                            // A newer worker took over.
                            return Ok(Stop::Exit);
                        }
                        if status::generation(self.dboid, self.subid) != self.generation {
                            return Ok(Stop::Reload);
                        }
                        let busy = ses.busy(keeper.as_ref());
                        self.sync_housekeeping(ses.last_received);
                        ses.idle(busy);
                        if self.two_phase_due() {
                            return Ok(Stop::Reload);
                        }
                    }
                    self.idle_advance(ses, false);
                    self.feedback(conn, ses, false);
                    let timeout_ms = backend::wal_receiver_timeout_ms();
                    // Commits waiting for the local WAL flush (asynchronous
                    // commit; the WAL writer flushes within wal_writer_delay)
                    // are reported soon after, not after a whole nap: the
                    // publisher sees the subscriber caught up promptly.
                    let cap = if ses.flush.waiting() { FLUSH_WAIT_NAP_MS } else { 1000 };
                    let nap = ses.timer.next_check_ms(now_ts(), timeout_ms).unwrap_or(1000).min(cap);
                    if backend::wait_socket(fd, Duration::from_millis(nap as u64)) {
                        // Nothing arrived while waiting: time for a ping, or
                        // to give the connection up (as walreceiver does).
                        match ses.timer.check(now_ts(), timeout_ms) {
                            Due::Timeout => {
                                return Err(format!(
                                    "terminating the connection to the publisher: nothing received for \
                                     wal_receiver_timeout ({timeout_ms} ms); reconnecting"
                                ));
                            }
                            Due::Ping => {
                                self.idle_advance(ses, false);
                                self.send_feedback(conn, ses, true)
                            }
                            Due::Nothing => {}
                        }
                    }
                    continue;
                }
                Received::End => {
                    // What was applied in full is kept.
                    self.end_group(ses)?;
                    return Err("the publisher ended the replication stream".into());
                }
            }
            if reply_now || (timed && ses.last_feedback.elapsed() >= FEEDBACK_INTERVAL) {
                self.idle_advance(ses, reply_now);
                self.feedback(conn, ses, reply_now);
            }
        }
    }

    /// While idle, move the origin over what was received since the last
    /// commit, so that it may be reported as flushed (`flush.rs`,
    /// `slot_fence.rs`): at most every `IDLE_ADVANCE_INTERVAL`, or at once
    /// when `now` (the publisher asked for a reply: it may be shutting down
    /// and waiting for exactly that). Only the apply worker's durable
    /// session does this, and never inside a local transaction.
    pub(super) fn idle_advance(&self, ses: &mut Session, now: bool) {
        let Some(to) = ses.flush.idle_advance(ses.last_received, ses.work_open()) else { return };
        if !now && ses.last_idle_advance.elapsed() < IDLE_ADVANCE_INTERVAL {
            return;
        }
        // SAFETY: reads backend-local transaction state.
        if ses.in_txn || unsafe { pg_sys::IsTransactionState() } {
            return;
        }
        let Some(origin) = &self.origin else { return };
        let end = origin.advance(to, || {});
        ses.flush.committed(to, end);
        ses.flush.local_flush(end);
        ses.last_idle_advance = Instant::now();
    }

    /// Report write/flush/apply positions (when they changed, every 10 s,
    /// or when `force`d).
    pub(super) fn feedback(&self, conn: &mut Connection, ses: &mut Session, force: bool) {
        ses.flush.local_flush(backend::local_flush_lsn());
        let write = ses.last_received;
        let flush = ses.flush.report(write, ses.work_open());
        let apply = ses.flush.report_apply(write, ses.work_open());
        if !force && (write, flush, apply) == ses.last_reported && ses.last_feedback.elapsed() < Duration::from_secs(10)
        {
            return;
        }
        self.send_status(conn, ses, false);
    }

    /// Report positions asking the publisher to reply (a ping).
    pub(super) fn send_feedback(&self, conn: &mut Connection, ses: &mut Session, request_reply: bool) {
        ses.flush.local_flush(backend::local_flush_lsn());
        self.send_status(conn, ses, request_reply);
    }

    pub(super) fn send_status(&self, conn: &mut Connection, ses: &mut Session, request_reply: bool) {
        let write = ses.last_received;
        let flush = ses.flush.report(write, ses.work_open());
        let apply = ses.flush.report_apply(write, ses.work_open());
        let msg = protocol::status_update(write, flush, apply, now_ts(), request_reply);
        conn.send(&msg);
        ses.flush.reported(flush, apply);
        ses.last_reported = (write, flush, apply);
        ses.last_feedback = Instant::now();
    }
}

/// Once per process: the feedback keeper cannot run here, so a local work
/// longer than the publisher's `wal_sender_timeout` loses the connection.
fn warn_no_keeper(why: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        pgrx::warning!(
            "logical_ext: no feedback to the publisher during long local work ({why}); a replayed DDL or \
             trigger running longer than the publisher's wal_sender_timeout will lose the connection"
        );
    }
}
