//! The apply worker's side of two-phase commit (subscription option
//! `two_phase`; the PostgreSQL calls are in `apply/prepared.rs`):
//!
//! - `P` ends a remote transaction like `C`, but the local transaction is
//!   prepared (GID `logical_ext_<subid>_<remote xid>`) instead of committed;
//!   the origin's LSN moves in the prepare record, so after a crash the
//!   stream resumes after the PREPARE and the prepared transaction waits,
//!   durable, for its decision.
//! - `CP`/`RP` finish that prepared transaction in a transaction of its own,
//!   the origin's LSN moving in the COMMIT/ROLLBACK PREPARED record. A GID
//!   not prepared here means there is nothing to finish: the transaction
//!   carried nothing for this subscription (the plugin writes no `B`/`P` for
//!   it), or was prepared before two-phase decoding began (a `CP` then comes
//!   right after the replayed transaction and its `P`; an `RP` has nothing
//!   to undo), as PostgreSQL's worker does for ROLLBACK PREPARED.
//! - When to stream with two-phase decoding: only once every table of the
//!   subscription is `ready` (PostgreSQL's "pending" state; why in
//!   `apply/prepared.rs`). A session started before that restarts itself as
//!   soon as the last table is ready, between two transactions.

use super::Worker;
use super::stream::Session;
use crate::apply::origin::OriginSession;
use crate::apply::prepared;
use crate::apply::protocol;
use crate::ffi::worker::in_transaction;
use pgrx::pg_sys;
use pgrx::prelude::*;

impl Worker {
    /// Whether the session about to start asks the publisher to decode
    /// prepared transactions when they are prepared.
    pub(super) fn stream_two_phase(&self, two_phase: bool) -> Result<bool, String> {
        if !two_phase {
            return Ok(false);
        }
        prepared::check_enabled().map_err(|e| format!("{} ({})", e.message, e.hint))?;
        Ok(self.sync.as_ref().is_none_or(|s| s.all_ready()))
    }

    /// Between transactions: the session streams without two-phase
    /// decoding, waiting for its tables' copies, and they are all ready now.
    pub(super) fn two_phase_due(&self) -> bool {
        !self.two_phase_streaming
            && self.sub.as_ref().is_some_and(|s| s.options.two_phase)
            && self.sync.as_ref().is_none_or(|s| s.all_ready())
    }

    /// `P`: prepare the remote transaction's local transaction.
    pub(super) fn apply_prepare(
        &mut self,
        ses: &mut Session,
        lsn: u64,
        xid: u32,
        end_lsn: u64,
        ts: Option<i64>,
    ) -> Result<(), String> {
        if !ses.in_txn {
            return Err(format!("PREPARE outside a transaction at {}", protocol::format_lsn(lsn)));
        }
        if self.scope.is_some() {
            return Err(format!("a PREPARE in a table's catch-up stream at {}", protocol::format_lsn(lsn)));
        }
        let Some(applying) = ses.applying.take() else {
            return Err("the subscription's replication origin is not set up".into());
        };
        let ts = ts.unwrap_or(ses.commit_ts);
        // Like a commit, the prepare record carries the origin's progress;
        // it is flushed before PrepareTransaction returns.
        applying.prepare(&prepared::gid(self.subid, xid), end_lsn, ts);
        ses.flush.committed(end_lsn, 0);
        ses.in_txn = false;
        self.in_flight = None;
        ses.last_committed = end_lsn;
        // skip_transaction's request is cleared in a transaction of its
        // own (a row locked by a prepared transaction would block
        // alter_subscription until the publisher decides), as natively.
        let skipped = std::mem::take(&mut ses.skipping);
        if skipped || self.sub.as_ref().is_some_and(|s| s.skip_lsn.is_some()) {
            in_transaction(|| {
                if skipped {
                    self.finish_skip(ses);
                } else {
                    self.clear_stale_skip(ses);
                }
            });
        }
        let changes = ses.changes;
        self.finished_remote(ses, ts, Some(changes));
        Ok(())
    }

    /// `CP` / `RP`: finish the prepared transaction, if it is prepared here.
    pub(super) fn apply_finish_prepared(
        &mut self,
        ses: &mut Session,
        lsn: u64,
        commit: bool,
        xid: u32,
        end_lsn: u64,
        ts: i64,
    ) -> Result<(), String> {
        let what = if commit { "COMMIT PREPARED" } else { "ROLLBACK PREPARED" };
        if ses.in_txn {
            return Err(format!("{what} inside a transaction at {}", protocol::format_lsn(lsn)));
        }
        if self.scope.is_some() {
            return Err(format!("a {what} in a table's catch-up stream at {}", protocol::format_lsn(lsn)));
        }
        let gid = prepared::gid(self.subid, xid);
        // SAFETY: a transaction of its own, as worker.c's
        // apply_handle_commit_prepared.
        unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
        }
        let Some(applying) = self.origin.as_ref().map(OriginSession::begin) else {
            return Err("the subscription's replication origin is not set up".into());
        };
        let local_end = if prepared::exists(&gid) {
            applying.finish_prepared(&gid, commit, end_lsn, ts)
        } else {
            debug1!(
                "logical_ext: subscription {}: {what} of remote transaction {xid} at {}: nothing prepared here",
                self.subid,
                protocol::format_lsn(lsn)
            );
            // Nothing to finish, but the origin still moves past it: what
            // is reported as flushed is recorded there (`slot_fence.rs`).
            applying.commit(end_lsn, ts)
        };
        ses.flush.committed(end_lsn, local_end);
        ses.last_committed = end_lsn;
        self.finished_remote(ses, ts, None);
        Ok(())
    }
}
