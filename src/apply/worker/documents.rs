//! Applying one document of the stream inside the local transaction of
//! its remote one: BEGIN arms the origin session (`origin.rs`), COMMIT
//! commits with it, rows go through `rows.rs` (conflict detection), TRUNCATEs
//! of one statement are applied together, DDL is replayed (`ddl/replay.rs`),
//! and skip_transaction's request is honoured or cleared.
//!
//! Group commit (`grouping.rs`): a COMMIT may defer its local commit
//! (`Session::deferred`); the next document either is the BEGIN of a remote
//! transaction that joins the open local transaction, or the group is
//! committed first ([`Worker::end_group`]), with the origin's progress of its
//! last member, one flush-tracker entry and one status update for all.

use super::Worker;
use super::stream::Session;
use crate::apply::commit_time;
use crate::apply::conflict::{ConflictType, Writer};
use crate::apply::executor::{self, Target};
use crate::apply::origin::OriginSession;
use crate::apply::protocol::{self, Doc, RemoteRel};
use crate::apply::resolver;
use crate::apply::rows::{self, Outcome, RowContext};
use crate::apply::status::{self, WorkerState};
use crate::apply::sync::state::Action;
use crate::ffi::worker::now_ts;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

impl Worker {
    /// Apply one document of the stream.
    pub(super) fn apply_doc(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<(), String> {
        if ses.deferred.is_some() && crate::apply::spool::control(payload).is_some() {
            // A streamed transaction's document: the group ends here.
            if !self.end_group_before(ses)? {
                return Ok(());
            }
        }
        if self.streamed_doc(ses, payload, lsn)? {
            return Ok(());
        }
        self.apply_plain(ses, payload, lsn)
    }

    /// Apply one document that is not a stream control document (also a
    /// document of a streamed transaction applied while it arrives, `eager.rs`).
    pub(super) fn apply_plain(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<(), String> {
        let doc = protocol::parse_doc(payload, &self.compact)
            .map_err(|e| format!("malformed message at {}: {e}", protocol::format_lsn(lsn)))?;
        if ses.deferred.is_some() && !self.joins(ses, &doc) && !self.end_group_before(ses)? {
            return Ok(());
        }
        if !matches!(doc, Doc::Insert { .. }) {
            // Anything but an INSERT could observe buffered ones (batch.rs).
            self.flush_batch(ses);
            ses.targets.end_runs(None);
        }
        if !matches!(doc, Doc::Truncate { .. }) {
            self.flush_truncates(ses);
        }
        match doc {
            Doc::Begin { commit_lsn, timestamp } => {
                if ses.in_txn {
                    return Err(format!("BEGIN inside a transaction at {}", protocol::format_lsn(lsn)));
                }
                // Joining a group (`joins` said so above): its local
                // transaction, origin guard, executor state and counts go on.
                let fresh = ses.deferred.take().is_none();
                // SAFETY: starting the local transaction of a remote one.
                unsafe {
                    pg_sys::SetCurrentStatementStartTimestamp();
                    if fresh {
                        pg_sys::StartTransactionCommand();
                    }
                }
                if fresh {
                    ses.applying = self.origin.as_ref().map(OriginSession::begin);
                    ses.changes = 0;
                    ses.conflicts = [0; 6];
                }
                self.grouping.begin(commit_lsn, fresh, now_ts());
                ses.in_txn = true;
                self.in_flight = None;
                ses.commit_lsn = commit_lsn;
                ses.commit_ts = timestamp.as_deref().map(commit_time::parse).unwrap_or(0);
                // COMMIT repeats this text: parsed once (see `Doc::Commit`).
                ses.begin_timestamp.clear();
                ses.begin_timestamp.push_str(timestamp.as_deref().unwrap_or_default());
                let skip = self.sub.as_ref().and_then(|s| s.skip_lsn);
                ses.skipping = skip.is_some() && skip == commit_lsn;
            }
            Doc::Commit { end_lsn, timestamp } => {
                if !ses.in_txn {
                    return Err(format!("COMMIT outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                let ts = match timestamp.as_deref() {
                    Some(t) if t != ses.begin_timestamp => commit_time::parse(t),
                    _ => ses.commit_ts,
                };
                if !ses.skipping && self.grouping.may_defer(self.may_group(ses), ses.changes, now_ts()) {
                    // Group commit: the local transaction stays open for
                    // the next remote one if it is already here (else the
                    // stream loop commits as soon as the socket is empty).
                    ses.deferred = Some((end_lsn, ts));
                    ses.in_txn = false;
                    self.in_flight = None;
                    return Ok(());
                }
                // Cached executor state is released before the commit.
                ses.targets.close_all();
                if ses.skipping {
                    self.finish_skip(ses);
                } else {
                    self.clear_stale_skip(ses);
                }
                ses.in_txn = false;
                self.in_flight = None;
                ses.skipping = false;
                self.commit_local(ses, end_lsn, ts)?;
            }
            Doc::Insert { rel, new } => {
                self.remember(ConflictType::InsertExists, payload, ses);
                self.change(ses, lsn, &rel, true, |ctx, t, scratch, buffer| {
                    rows::insert(ctx, t, &new, scratch, buffer)
                })?
            }
            Doc::Update { rel, new, identity, complete } => {
                self.remember(ConflictType::UpdateExists, payload, ses);
                self.change(ses, lsn, &rel, false, |ctx, t, scratch, _| {
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
                self.change(ses, lsn, &rel, false, |ctx, t, scratch, _| rows::delete(ctx, t, &identity, scratch))?
            }
            Doc::Truncate { rel, restart_identity, lsn: tlsn, .. } => {
                if !ses.in_txn {
                    return Err(format!("TRUNCATE outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                // Its ACCESS EXCLUSIVE locks are not held across later members.
                self.grouping.must_end();
                if ses.skipping || self.skips(&rel, ses.commit_lsn) {
                    return Ok(());
                }
                let tlsn = tlsn.map(|s| s.into_owned());
                if ses.truncate_lsn != tlsn {
                    self.flush_truncates(ses);
                    ses.truncate_lsn = tlsn;
                }
                ses.truncates.push((rel, restart_identity));
            }
            // Two-phase commit: worker/prepared.rs.
            Doc::Prepare { xid, end_lsn, timestamp } => {
                // Cached executor state is released before the PREPARE.
                ses.targets.close_all();
                let ts = timestamp.as_deref().map(commit_time::parse);
                self.apply_prepare(ses, lsn, xid, end_lsn, ts)?
            }
            Doc::FinishPrepared { commit, xid, end_lsn, timestamp } => {
                let ts = timestamp.as_deref().map(commit_time::parse).unwrap_or(0);
                self.apply_finish_prepared(ses, lsn, commit, xid, end_lsn, ts)?
            }
            // Plain logical messages are for other consumers.
            Doc::Message => {}
            // A compact relation document describes the rows that follow:
            // stream state, kept whatever is skipped or applied (it comes
            // right before a row, so queued TRUNCATEs are due anyway).
            Doc::Relation(id, rel) => self.compact.insert(id, rel),
            Doc::Reconcile(doc) => {
                if !ses.in_txn {
                    return Err(format!("reconcile document outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                // Compared in the apply worker only (not while a sync worker
                // catches a table up), after the rows before it.
                if ses.skipping || self.scope.is_some() {
                    return Ok(());
                }
                let sub = self.sub.as_ref().expect("set at session start");
                // A repair writes through SPI: cached executor state is released.
                ses.targets.close_all();
                // SAFETY: inside the remote transaction; see `change`.
                unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
                crate::reconcile::apply(&doc, &sub.name, sub.id, lsn);
                // SAFETY: pairs with the push above; later changes see repaired rows.
                unsafe {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommandCounterIncrement();
                }
                ses.changes += 1;
            }
            Doc::Sequence(seq) => {
                if !ses.in_txn {
                    return Err(format!("SEQ outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                // Sequences are the apply worker's, never a table catch-up's.
                if ses.skipping || self.scope.is_some() {
                    return Ok(());
                }
                let sub = self.sub.as_ref().expect("set at session start");
                // SAFETY: inside the remote transaction; see `change`.
                unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
                crate::apply::sequence::apply(&seq, &sub.name, sub.id);
                // SAFETY: pairs with the push above.
                unsafe {
                    pg_sys::PopActiveSnapshot();
                    pg_sys::CommandCounterIncrement();
                }
                ses.changes += 1;
            }
            Doc::Ddl(event) => {
                if !ses.in_txn {
                    return Err(format!("DDL outside a transaction at {}", protocol::format_lsn(lsn)));
                }
                // Its locks are not held across later members.
                self.grouping.must_end();
                // DDL is replayed by the apply worker, never while a sync
                // worker catches a table up.
                if ses.skipping || self.scope.is_some() {
                    return Ok(());
                }
                let sub = &self.sub.as_ref().expect("set at session start").name;
                // ALTER TABLE refuses a table this session holds open.
                ses.targets.close_all();
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
    /// its conflict outcome. `insert`: the change is an INSERT, which `f` is
    /// told to buffer (its last argument) when `rows::insert_buffers` says so.
    ///
    /// A change that is written runs as `worker.c`'s apply steps do: a fresh
    /// snapshot, the target's change bracket (command id, AFTER-trigger
    /// query level, the owner's identity), a command counter increment
    /// after it. A buffered INSERT writes nothing yet — its row is converted
    /// (as the table's owner, under a fresh snapshot: input functions,
    /// defaults and generated columns may read) and copied into the batch —
    /// so it takes no command id, opens no query level (no events can be
    /// queued: a batchable target has no triggers, and statements run by
    /// user functions open their own) and needs no increment (nothing to
    /// make visible; PostgreSQL's increment does nothing when the command
    /// id was not used). The batch's write (`flush_batch`) is one change
    /// with all of them, before anything that could observe the rows.
    pub(super) fn change(
        &mut self,
        ses: &mut Session,
        lsn: u64,
        rel: &RemoteRel,
        insert: bool,
        f: impl FnOnce(&RowContext<'_>, &Target<'_>, &mut Vec<u8>, bool) -> Outcome,
    ) -> Result<(), String> {
        if !ses.in_txn {
            return Err(format!("change outside a transaction at {}", protocol::format_lsn(lsn)));
        }
        if ses.skipping {
            return Ok(());
        }
        if self.skips(rel, ses.commit_lsn) {
            return Ok(());
        }
        let local = self.relmap.as_mut().expect("set up at session start").get(rel);
        if ses.targets.batch_blocks(&local) {
            self.flush_batch(ses);
        }
        ses.targets.end_runs(Some(&local));
        let sub = self.sub.as_ref().expect("set at session start");
        let origin_name = &self.origin_name;
        let ctx = RowContext {
            rules: &self.rules,
            subscription: &sub.name,
            my_origin: self.origin.as_ref().map_or(0, |o| o.id()),
            copy_origins: match (&self.scope, &self.sync) {
                (Some(scope), _) => &scope.copy_origins,
                (None, Some(s)) => s.copy_origins(),
                (None, None) => &[],
            },
            origin_name,
            remote: Writer { commit_ts: ses.commit_ts, node: self.remote_node },
            local_node: crate::ffi::worker::system_identifier(),
            commit_lsn: ses.commit_lsn,
            // SAFETY: reads a GUC variable.
            detect_origin: unsafe { pg_sys::track_commit_timestamp },
        };
        // SAFETY: each change runs with a fresh snapshot and is made visible
        // to the next one, as in worker.c's begin/end_replication_step.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        let mut buffered = false;
        let outcome = if local.cacheable {
            // Executor state kept for the transaction (executor.rs).
            let target = ses.targets.get(&local);
            buffered = insert && rows::insert_buffers(&ctx, target);
            let as_owner = if buffered { target.begin_buffering() } else { target.begin_change() };
            let outcome = f(&ctx, target, &mut ses.scratch, buffered);
            target.end_change(!buffered);
            drop(as_owner);
            outcome
        } else {
            let target = Target::open(&local);
            let buffer = insert && rows::insert_buffers(&ctx, &target);
            f(&ctx, &target, &mut ses.scratch, buffer)
        };
        let result = match outcome {
            Outcome::Applied => Ok(()),
            Outcome::Buffered => {
                // The batch keeps the row's document (`flush_batch`).
                if let Some(f) = self.in_flight.as_mut() {
                    ses.targets.keep_payload(&mut f.1);
                }
                Ok(())
            }
            // A streamed transaction applied while it arrives does not know
            // its commit LSN and time yet, which conflict resolution and its
            // records need: it falls back to the replay at its commit
            // (`eager.rs`), which meets the conflict again.
            Outcome::Resolved(_) | Outcome::Failed(..) if ses.streamed.eager_open() => {
                ses.streamed.conflict_met();
                Ok(())
            }
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
        // SAFETY: pairs with the push above; a buffered row made nothing
        // to see (see above).
        unsafe {
            pg_sys::PopActiveSnapshot();
            if !buffered {
                pg_sys::CommandCounterIncrement();
            }
        }
        ses.changes += 1;
        result
    }

    /// Write the buffered INSERTs (`batch.rs`) as a change of their own:
    /// before each row's checks and index entries, `in_flight` becomes that
    /// row's document, so a unique violation is recorded as the
    /// `insert_exists` of exactly that row (`failure.rs`), as per-row apply
    /// records it.
    pub(super) fn flush_batch(&mut self, ses: &mut Session) {
        if !ses.targets.batch_pending() {
            return;
        }
        let (commit_lsn, commit_ts) = (ses.commit_lsn, ses.commit_ts);
        let in_flight = &mut self.in_flight;
        // SAFETY: inside the remote transaction, as in `change`.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        ses.targets.flush_batch(|payload| {
            let f = in_flight.get_or_insert_with(|| (ConflictType::InsertExists, Vec::new(), commit_lsn, commit_ts));
            f.0 = ConflictType::InsertExists;
            std::mem::swap(&mut f.1, payload);
        });
        // SAFETY: pairs with the push above; later changes see the rows.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommandCounterIncrement();
        }
    }

    /// Whether a change of `rel` in the remote transaction committed at
    /// `commit_lsn` is left alone: a table waiting for its copy or copied
    /// past it (`sync/state.rs`), or, in a sync worker catching one table
    /// up, every other table.
    fn skips(&self, rel: &RemoteRel, commit_lsn: Option<u64>) -> bool {
        match &self.scope {
            Some(scope) => !scope.is(rel),
            None => self.sync.as_ref().is_some_and(|s| s.action(rel, commit_lsn) == Action::Skip),
        }
    }

    /// Keep a copy of the INSERT/UPDATE about to be applied (see `in_flight`).
    pub(super) fn remember(&mut self, kind: ConflictType, payload: &[u8], ses: &Session) {
        let mut buf = self.in_flight.take().map(|f| f.1).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.in_flight = Some((kind, buf, ses.commit_lsn, ses.commit_ts));
    }

    /// The transaction named by skip_transaction ends: clear the request in
    /// the same commit that records its position as applied.
    pub(super) fn finish_skip(&mut self, ses: &Session) {
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

    /// skip_transaction named a transaction that did not come (the stream
    /// is past its commit LSN): clear the request with a WARNING, as
    /// PostgreSQL does, in the commit of the transaction that passed it.
    pub(super) fn clear_stale_skip(&mut self, ses: &Session) {
        let Some(skip) = self.sub.as_ref().and_then(|s| s.skip_lsn) else { return };
        let Some(commit_lsn) = ses.commit_lsn.filter(|&c| c > skip) else { return };
        // SAFETY: inside the remote transaction, as in `change`.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        Spi::run_with_args(
            "UPDATE logical_ext.subscription SET skip_lsn = NULL WHERE id = $1 AND skip_lsn = $2::pg_lsn",
            &[self.subid.into(), protocol::format_lsn(skip).into()],
        )
        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not clear skip_lsn: {e}"));
        // SAFETY: pairs with the push above.
        unsafe { pg_sys::PopActiveSnapshot() };
        let name = self.sub.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        if let Some(sub) = self.sub.as_mut() {
            sub.skip_lsn = None;
        }
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("logical_ext: skip_lsn of subscription \"{name}\" cleared"),
            function_name!(),
        )
        .set_detail(format!(
            "No remote transaction committed at {}; the stream has reached the one committed at {}.",
            protocol::format_lsn(skip),
            protocol::format_lsn(commit_lsn)
        ))
        .set_hint("Pass the commit LSN of the failing transaction (last_error names it) to skip_transaction.")
        .report(PgLogLevel::WARNING);
    }

    /// Apply the TRUNCATE documents of one statement together.
    pub(super) fn flush_truncates(&mut self, ses: &mut Session) {
        if ses.truncates.is_empty() {
            return;
        }
        // TRUNCATE refuses a table this session holds open.
        ses.targets.close_all();
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

    /// Commit the local transaction of the remote transaction(s) applied in
    /// it, as the remote one ending at `end_lsn` (committed at `ts`; with a
    /// group, its last member): the origin's position and timestamp go into
    /// this commit record, and only into it — progress commits atomically
    /// with the data; a failing commit leaves the origin where it was.
    pub(super) fn commit_local(&mut self, ses: &mut Session, end_lsn: u64, ts: i64) -> Result<(), String> {
        // Cached executor state is released before the commit.
        ses.targets.close_all();
        let Some(applying) = ses.applying.take() else {
            return Err("the subscription's replication origin is not set up".into());
        };
        let local_end = applying.commit(end_lsn, ts);
        // One entry for the whole group: its last member's end.
        ses.flush.committed(end_lsn, local_end);
        ses.last_committed = end_lsn;
        let txns = self.grouping.committed();
        if self.scope.is_some() {
            // A sync worker catching its table up: the subscription's
            // figures and state belong to its apply worker.
            return Ok(());
        }
        let changes = ses.changes;
        self.finished_local(ses, ts, Some((i64::from(txns), changes)));
        Ok(())
    }

    /// Commit a deferred group (`grouping.rs`), if there is one.
    pub(super) fn end_group(&mut self, ses: &mut Session) -> Result<(), String> {
        match ses.deferred.take() {
            Some((end_lsn, ts)) => self.commit_local(ses, end_lsn, ts),
            None => Ok(()),
        }
    }

    /// End the group before a document that does not join it: false when
    /// the commit found a newer worker or new settings — the session ends
    /// before the document, which the next session receives again (it
    /// streams from the origin's progress, the group's end).
    fn end_group_before(&mut self, ses: &mut Session) -> Result<bool, String> {
        self.end_group(ses)?;
        Ok(!(ses.displaced || ses.reload))
    }

    /// Whether `doc`, with a commit deferred, joins the open group: the
    /// BEGIN of a remote transaction the policy lets in.
    fn joins(&mut self, ses: &Session, doc: &Doc<'_>) -> bool {
        let Doc::Begin { commit_lsn, .. } = doc else { return false };
        let allowed = self.may_group(ses)
            // Tables changed state meanwhile: housekeeping first, at a committed point.
            && !self.sync.as_ref().is_some_and(|s| s.stale());
        self.grouping.may_join(allowed, *commit_lsn, ses.changes, now_ts())
    }

    /// The conditions of the moment under which remote transactions may
    /// share a local transaction (`grouping.rs` has the policy): the
    /// session's (`group_commit`), no skip_transaction request, not the
    /// replay of a stream commit, and every table `ready` (sync workers
    /// are answered between committed transactions).
    fn may_group(&self, ses: &Session) -> bool {
        self.group_commit
            && self.scope.is_none()
            && !ses.streamed.replaying
            && self.sub.as_ref().is_some_and(|s| s.skip_lsn.is_none())
            && self.sync.as_ref().is_none_or(|s| s.all_ready())
    }

    /// The subscription's figures after a remote transaction was committed
    /// or prepared here (`applied`: its changes; it counts as applied), or a
    /// prepared one finished (`None`): one status update (one lock), which
    /// also says whether a newer worker took over or the settings changed.
    pub(super) fn finished_remote(&mut self, ses: &mut Session, ts: i64, applied: Option<i64>) {
        self.finished_local(ses, ts, applied.map(|changes| (1, changes)));
    }

    /// [`Worker::finished_remote`] for a local commit that applied
    /// `applied` = (remote transactions, changes).
    fn finished_local(&mut self, ses: &mut Session, ts: i64, applied: Option<(i64, i64)>) {
        let conflicts = std::mem::take(&mut ses.conflicts);
        let (received, wal_end, send_time) = ses.last_message;
        let now = now_ts();
        ses.unreported = 0;
        let checked = status::update_at_commit(self.dboid, self.subid, status::my_pid(), |s| {
            s.received_lsn = received;
            s.latest_end_lsn = s.latest_end_lsn.max(wal_end);
            s.last_send_time = send_time;
            s.last_receipt_time = now;
            if let Some((txns, changes)) = applied {
                s.applied_txns += txns;
                s.applied_changes += changes;
            }
            for (total, n) in s.conflicts.iter_mut().zip(conflicts) {
                *total += n;
            }
            s.last_commit_time = ts;
            s.clear_error();
            s.set_state(WorkerState::Streaming);
        });
        ses.changes = 0;
        self.attempt = 0;
        self.eager_failed = false;
        let (owner, generation) = checked.unwrap_or((false, 0));
        ses.displaced = !owner;
        ses.reload = generation != self.generation;
    }
}
