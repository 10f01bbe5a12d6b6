//! Applying a streamed transaction while it arrives (subscription options
//! `streaming` and `streaming_eager`; docs/SYNC.md "Large transactions").
//!
//! Design notes
//! - When the first block of a streamed transaction X starts and nothing
//!   else is open here (no local transaction, no queued TRUNCATE), the worker
//!   opens X's local transaction at once and applies each document of X's
//!   blocks as it arrives, through the ordinary path (`apply_plain`: the same
//!   document application, executor cache, batches and roles). It does
//!   **not spool** them (`streamed.rs`): writing every document to a file
//!   only to delete it at the commit cost the worker ~5% of its CPU (issue
//!   14, docs/BENCHMARKS.md), for a fallback that is rare.
//! - Falling back therefore means receiving X again: the local transaction
//!   is rolled back (an abort: no undo to write), X's xid is remembered in
//!   `eager_refused`, and the session ends at once (`Session::reload`),
//!   before anything else is applied and without feedback. The next session
//!   starts from the origin's progress; X's commit lies past anything
//!   confirmed (between X's blocks the flush position never passes it, see
//!   `streamed.rs`) and the slot's restart_lsn lies before X's start (X is
//!   still running on the publisher), so the publisher decodes X again and
//!   streams it from its first block — which this time is spooled and
//!   replayed at the stream commit, PostgreSQL 15's way, as is every
//!   transaction in `eager_refused`: one fallback per transaction, never a
//!   loop. This is what a crash during eager apply already relied on. The
//!   cost is the publisher decoding X's WAL a second time, once.
//! - An abort of X as a whole needs nothing of X again: it only rolls back,
//!   and the session goes on.
//! - Subtransactions: a document tagged with a `subxid` not seen yet takes an
//!   internal subtransaction (a savepoint) first, nested in order of first
//!   appearance, exactly as the spool records the subtransaction's first
//!   offset; an `SA` of that subxid rolls back to its savepoint, dropping it
//!   and everything after it — what the spool cuts off. Nothing is paid while
//!   no subxid appears. More than `MAX_SUBXACTS` of them fall back (each
//!   subtransaction that writes takes an xid; beyond PostgreSQL's 64 cached
//!   subxids every snapshot of the server overflows).
//! - Falls back (and receives X again) when: another transaction's document
//!   arrives (an ordinary
//!   `B`…`C`, another streamed transaction's block or commit), X aborts as a
//!   whole, a conflict is met (its resolution and record need X's commit LSN
//!   and time, known only at the stream commit), a newer worker took over,
//!   the settings or the table states changed, or too many subtransactions.
//!   Errors are not a fallback: they end the session as always (the rollback
//!   takes the subtransactions with it, `failure.rs`), but one raised while
//!   X was applied eagerly is not reported (no conflict record, error or
//!   `disable_on_error`: X's commit LSN is not known yet); the retry starts
//!   at once from the origin's progress and receives X again — and applies
//!   it at its commit only, since eager apply waits for a remote transaction
//!   to have committed here since an error (`attempt == 0`, `eager_failed`),
//!   so that a failing change is reported with its commit LSN, which
//!   `skip_transaction` needs.
//! - Not eager: the transaction named by `skip_transaction` may be X (any
//!   pending skip request disables it), tables waiting for their copy (a
//!   change's fate depends on X's commit LSN, `sync/state.rs`), a table's
//!   catch-up (it never streams).
//! - Before any savepoint, rollback or the fallback the executor cache is
//!   closed (`TargetCache::close_all`, writing buffered INSERTs) and queued
//!   TRUNCATEs are applied: no cached target or query level outlives the
//!   subtransaction it was opened in, and nothing is abandoned mid-call.
//! - A replayed DDL rolled back with a savepoint or the fallback leaves no
//!   stale relation entry: the abort processes its invalidations locally and
//!   the relation map drops what they touched (`relation.rs`).
//! - Exactly once and feedback are unchanged: the origin's progress moves
//!   only in X's local commit at the stream commit, and between and within
//!   X's blocks the flush tracker reports what was received, as when X was
//!   only spooled (X's commit lies beyond; `stream.rs` `work_open`). A crash
//!   loses the open local transaction, and the publisher sends X again from
//!   its first block, as after a fallback.

use super::Worker;
use super::stream::Session;
use crate::apply::protocol;
use crate::apply::status;
use crate::apply::sync::manager::SyncManager;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Subtransactions of one eagerly applied transaction before falling back.
const MAX_SUBXACTS: usize = 64;

/// Transactions remembered as received again after a fallback (the oldest
/// is forgotten beyond: one is removed at its commit or abort, and one that
/// never comes back, such as a transaction lost in a publisher crash, only
/// keeps a later transaction reusing its xid from being applied eagerly).
const MAX_REFUSED: usize = 64;

/// The streamed transaction applied while it arrives.
pub(super) struct Eager {
    pub(super) xid: u32,
    /// (subxid, the session's change count when its savepoint was taken),
    /// one nested internal subtransaction each, in order of first appearance.
    subxacts: Vec<(u32, i64)>,
    /// A conflict was met: fall back after the current document.
    pub(super) conflicted: bool,
}

/// Why an eagerly applied transaction is rolled back (logged at DEBUG1).
#[derive(Clone, Copy, Debug)]
pub(super) enum FallBack {
    Interleaved,
    Aborted,
    Conflict,
    Subtransactions,
    Settings,
}

impl FallBack {
    fn describe(self) -> &'static str {
        match self {
            FallBack::Interleaved => "another transaction arrived between its blocks",
            FallBack::Aborted => "it aborted",
            FallBack::Conflict => "a conflict needs its commit LSN and time",
            FallBack::Subtransactions => "too many subtransactions",
            FallBack::Settings => "the subscription's settings, table states or worker changed",
        }
    }
}

/// Keeps `CurrentMemoryContext` across a subtransaction call, which
/// switches to the (sub)transaction's own context.
///
/// # Safety
/// Inside a transaction; `f` calls PostgreSQL's transaction functions.
unsafe fn keeping_context(f: impl FnOnce()) {
    // SAFETY: reads a backend global.
    let saved = unsafe { pg_sys::CurrentMemoryContext };
    f();
    // SAFETY: `saved` is the caller's context (the message context, or the
    // stream loop's), never a (sub)transaction's, which these calls free.
    unsafe { pg_sys::CurrentMemoryContext = saved };
}

impl Worker {
    /// Whether the streamed transaction whose first block starts can be
    /// applied while it arrives (see the module notes).
    pub(super) fn eager_allowed(&self, ses: &Session, xid: u32) -> bool {
        let Some(sub) = self.sub.as_ref() else { return false };
        sub.options.streaming_eager
            && !self.eager_refused.contains(&xid)
            && !ses.in_txn
            && ses.deferred.is_none()
            && ses.truncates.is_empty()
            && self.attempt == 0
            && !self.eager_failed
            && sub.skip_lsn.is_none()
            && self.scope.is_none()
            && self.sync.as_ref().is_none_or(|s| s.all_ready() && !s.stale())
    }

    /// Open the local transaction of streamed transaction `xid`.
    pub(super) fn eager_begin(&mut self, ses: &mut Session, xid: u32, lsn: u64) -> Result<(), String> {
        // Commit LSN and time are not known yet: they come with the `SC`.
        self.apply_plain(ses, br#"{"action":"B","timestamp":null}"#, lsn)?;
        ses.streamed.eager = Some(Eager { xid, subxacts: Vec::new(), conflicted: false });
        self.eager_open = true;
        debug1!("logical_ext: subscription {}: applying streamed transaction {xid} while it arrives", self.subid);
        Ok(())
    }

    /// Apply one document of the eager transaction's block, made by
    /// `subxid` (0: the top-level transaction).
    pub(super) fn eager_doc(&mut self, ses: &mut Session, subxid: u32, payload: &[u8], lsn: u64) -> Result<(), String> {
        let Some(eager) = ses.streamed.eager.as_ref() else { return Ok(()) };
        if subxid != 0 && subxid != eager.xid && !eager.subxacts.iter().any(|s| s.0 == subxid) {
            if eager.subxacts.len() >= MAX_SUBXACTS {
                return self.eager_fall_back(ses, FallBack::Subtransactions);
            }
            self.eager_settle(ses);
            // SAFETY: inside the eager transaction; the subtransaction is
            // rolled back (`eager_abort_subxact`, the fallback, an error's
            // AbortOutOfAnyTransaction) or released at the commit.
            unsafe { keeping_context(|| pg_sys::BeginInternalSubTransaction(std::ptr::null())) };
            let changes = ses.changes;
            ses.streamed.eager.as_mut().expect("checked above").subxacts.push((subxid, changes));
        }
        self.apply_plain(ses, payload, lsn)?;
        if ses.streamed.eager.as_ref().is_some_and(|e| e.conflicted) {
            return self.eager_fall_back(ses, FallBack::Conflict);
        }
        Ok(())
    }

    /// Subtransaction `subxid` of the eager transaction aborted: roll back
    /// to its savepoint (what the spool cuts off with it).
    pub(super) fn eager_abort_subxact(&mut self, ses: &mut Session, subxid: u32) {
        let Some(eager) = ses.streamed.eager.as_ref() else { return };
        let Some(i) = eager.subxacts.iter().position(|s| s.0 == subxid) else { return };
        self.eager_settle(ses);
        let eager = ses.streamed.eager.as_mut().expect("checked above");
        for _ in i..eager.subxacts.len() {
            // SAFETY: one of the internal subtransactions taken in
            // `eager_doc`, innermost first.
            unsafe { keeping_context(|| pg_sys::RollbackAndReleaseCurrentSubTransaction()) };
        }
        ses.changes = eager.subxacts[i].1;
        eager.subxacts.truncate(i);
    }

    /// Roll the eager transaction back. Unless it aborted as a whole, its
    /// documents were not spooled: the session ends (`ses.reload`, checked
    /// by the callers before they handle anything more) and the next one
    /// receives it again and spools it (see the notes).
    pub(super) fn eager_fall_back(&mut self, ses: &mut Session, why: FallBack) -> Result<(), String> {
        let Some(eager) = ses.streamed.eager.take() else { return Ok(()) };
        // Written before the rollback, through the normal calls (see notes);
        // TRUNCATEs still queued are simply dropped. Still eager for
        // `failure.rs` meanwhile: an error writing the buffered rows (a unique
        // violation) has no commit LSN to be reported with.
        ses.truncates.clear();
        ses.truncate_lsn = None;
        self.flush_batch(ses);
        ses.targets.close_all();
        self.eager_open = false;
        // The origin is disarmed before the abort record (it would carry
        // no LSN anyway, see origin.rs).
        drop(ses.applying.take());
        // SAFETY: the eager transaction and its internal subtransactions,
        // innermost first; the memory context goes back to the message's.
        unsafe {
            keeping_context(|| {
                for _ in &eager.subxacts {
                    pg_sys::RollbackAndReleaseCurrentSubTransaction();
                }
                pg_sys::AbortCurrentTransaction();
            })
        };
        ses.in_txn = false;
        self.in_flight = None;
        ses.changes = 0;
        ses.conflicts = [0; 6];
        ses.commit_lsn = None;
        if matches!(why, FallBack::Aborted) {
            debug1!(
                "logical_ext: subscription {}: streamed transaction {} aborted: rolled back",
                self.subid,
                eager.xid
            );
            return Ok(());
        }
        if self.eager_refused.len() >= MAX_REFUSED {
            self.eager_refused.remove(0);
        }
        self.eager_refused.push(eager.xid);
        ses.reload = true;
        debug1!(
            "logical_ext: subscription {}: streamed transaction {} is received again and applied at its commit: {}",
            self.subid,
            eager.xid,
            why.describe()
        );
        Ok(())
    }

    /// Streamed transaction `xid` committed or aborted: it is no longer
    /// one to receive spooled.
    pub(super) fn eager_forget(&mut self, xid: u32) {
        self.eager_refused.retain(|&x| x != xid);
    }

    /// Between and at the start of the eager transaction's blocks: fall back
    /// (ending the session) when the worker would stop or reload between
    /// transactions, or the table states changed.
    pub(super) fn eager_checks(&mut self, ses: &mut Session) -> Result<(), String> {
        if ses.streamed.eager.is_none() {
            return Ok(());
        }
        let changed = !status::still_owner(self.dboid, self.subid, status::my_pid())
            || status::generation(self.dboid, self.subid) != self.generation
            || self.sync.as_ref().is_some_and(SyncManager::stale);
        if changed {
            return self.eager_fall_back(ses, FallBack::Settings);
        }
        Ok(())
    }

    /// The eager transaction committed on the publisher (`SC` at `lsn`):
    /// commit it here as the remote one (commit LSN, end LSN, time).
    pub(super) fn eager_commit(
        &mut self,
        ses: &mut Session,
        commit_lsn: Option<u64>,
        end: u64,
        timestamp: Option<&str>,
        lsn: u64,
    ) -> Result<(), String> {
        let Some(eager) = ses.streamed.eager.take() else { return Ok(()) };
        // Still eager for `failure.rs` while the buffered rows are written
        // (they were applied without the commit LSN); from the commit on,
        // an error is reported with it.
        self.eager_settle(ses);
        self.eager_open = false;
        for _ in &eager.subxacts {
            // SAFETY: the internal subtransactions of `eager_doc`, innermost
            // first; their changes become the top-level transaction's.
            unsafe { keeping_context(|| pg_sys::ReleaseCurrentSubTransaction()) };
        }
        ses.commit_lsn = commit_lsn;
        ses.commit_ts = timestamp.map(crate::apply::commit_time::parse).unwrap_or(0);
        ses.begin_timestamp.clear();
        ses.begin_timestamp.push_str(timestamp.unwrap_or_default());
        let ts = timestamp.map_or_else(|| "null".to_string(), |t| format!("\"{t}\""));
        let commit = format!("{{\"action\":\"C\",\"timestamp\":{ts},\"nextlsn\":\"{}\"}}", protocol::format_lsn(end));
        self.apply_plain(ses, commit.as_bytes(), lsn)
    }

    /// Write what is buffered or queued and close the executor cache, as
    /// before a subtransaction boundary.
    fn eager_settle(&mut self, ses: &mut Session) {
        self.flush_batch(ses);
        self.flush_truncates(ses);
        ses.targets.close_all();
    }
}
