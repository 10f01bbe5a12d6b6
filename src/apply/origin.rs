//! The subscription's replication origin in the apply worker's session.
//!
//! Design notes
//! - Exactly once rests on one rule: the origin's remote LSN moves only in
//!   the commit record of the local transaction that applied the remote one.
//!   PostgreSQL advances the session origin in *every* commit (and abort)
//!   record written while `replorigin_session_origin` is set, with whatever
//!   `replorigin_session_origin_lsn` holds at that moment. So the three
//!   session variables are set only while a remote transaction is applied:
//!   [`OriginSession::begin`] returns an [`Applying`] guard that sets the
//!   origin id (the changes and the commit carry it), [`Applying::commit`]
//!   sets the LSN and timestamp for the commit alone, and the guard's `Drop`
//!   clears all three, on success and on every error path (a Rust unwind
//!   from a PostgreSQL ERROR drops it too). Bookkeeping transactions (the
//!   `disable_on_error` update, conflict/ddl log rows, `subscription_tables`)
//!   therefore commit with no origin at all.
//! - A FATAL (SIGTERM while committing) exits without unwinding: a
//!   `before_shmem_exit` callback clears the variables before PostgreSQL
//!   aborts the open transaction, as `replorigin_reset` does in
//!   PostgreSQL's own apply worker.
//! - Before this design the LSN stayed set when the commit failed (a
//!   deferred trigger raising), and the next bookkeeping commit moved the
//!   origin past a transaction that was never applied: it was lost for good.

use pgrx::pg_sys;

/// This process is attached to the subscription's origin (for the life of
/// the process: PostgreSQL 15 lets one process at a time use an origin).
pub(crate) struct OriginSession {
    id: pg_sys::RepOriginId,
}

impl OriginSession {
    /// Attach to origin `name` (it exists for every subscription); returns
    /// the session and the remote LSN to resume from. Call inside a
    /// transaction.
    pub(crate) fn attach(name: &str) -> (OriginSession, u64) {
        let name = std::ffi::CString::new(name).expect("no NUL in origin names");
        // SAFETY: inside a transaction; replorigin_by_name raises an ERROR for
        // a missing origin.
        let (id, progress) = unsafe {
            let id = pg_sys::replorigin_by_name(name.as_ptr(), false);
            pg_sys::replorigin_session_setup(id);
            (id, pg_sys::replorigin_session_get_progress(false))
        };
        crate::ffi::worker::on_exit(disarm_at_exit, pg_sys::Datum::from(0));
        disarm();
        (OriginSession { id }, progress)
    }

    /// The remote LSN this session has committed through (flushed or not).
    pub(crate) fn progress(&self) -> u64 {
        // SAFETY: the session is set up (attach).
        unsafe { pg_sys::replorigin_session_get_progress(false) }
    }

    /// Move the origin to `remote_lsn` outside any remote transaction, in a
    /// small local transaction of its own (with `also` run in it first,
    /// without the origin), flushed before this returns; returns the local
    /// commit's end. Never backwards (PostgreSQL keeps the larger LSN). The
    /// apply worker does this so that what it reports as flushed while idle
    /// is durably recorded here first (`slot_fence.rs`). Call with no
    /// transaction open.
    pub(crate) fn advance(&self, remote_lsn: u64, also: impl FnOnce()) -> u64 {
        // SAFETY: no transaction is open (the caller's contract); an xid
        // makes the commit write a record, which carries the origin's move.
        unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::GetTopTransactionId();
        }
        also();
        // SAFETY: pairs with the push above.
        unsafe { pg_sys::PopActiveSnapshot() };
        // SAFETY: reads the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let end = self.begin().commit(remote_lsn, now);
        // SAFETY: flushes WAL we wrote; the subscription may commit
        // asynchronously, this record must not wait for the WAL writer.
        unsafe { pg_sys::XLogFlush(end) };
        end
    }

    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    /// A remote transaction starts being applied (its local transaction is
    /// open): its changes carry this origin until the guard is dropped.
    pub(crate) fn begin(&self) -> Applying {
        // SAFETY: sets a backend-local global; Applying's Drop clears it.
        unsafe { pg_sys::replorigin_session_origin = self.id };
        Applying { _private: () }
    }
}

/// Held while a remote transaction is applied; see the module notes.
#[must_use]
pub(crate) struct Applying {
    _private: (),
}

impl Applying {
    /// Commit the current transaction as the remote one ending at `end_lsn`
    /// (committed at `ts`): the origin's progress moves in this commit
    /// record, and only in it. Returns the local commit record's end.
    pub(crate) fn commit(self, end_lsn: u64, ts: i64) -> u64 {
        // SAFETY: the LSN/timestamp are read by RecordTransactionCommit; if
        // the commit raises an ERROR, `self` is dropped by the unwind and
        // clears them before anything else commits or aborts.
        unsafe {
            // A transaction id makes the commit write a record even when
            // the remote transaction changed nothing here (its changes
            // skipped, a logical message alone): the origin moves only in
            // commit records, and what the worker reports as flushed must
            // be recorded there (`slot_fence.rs`).
            pg_sys::GetTopTransactionId();
            pg_sys::replorigin_session_origin_lsn = end_lsn;
            pg_sys::replorigin_session_origin_timestamp = ts;
            pg_sys::CommitTransactionCommand();
            pg_sys::XactLastCommitEnd
        }
    }
}

impl Applying {
    /// Prepare the current transaction as `gid`, as the remote one whose
    /// PREPARE record ends at `end_lsn` (prepared at `ts`): the origin's
    /// progress moves in the prepare record (PostgreSQL keeps it through a
    /// crash, twophase.c), and only in it.
    pub(crate) fn prepare(self, gid: &str, end_lsn: u64, ts: i64) {
        // SAFETY: as in `commit`; the drop of `self` disarms on error.
        unsafe {
            pg_sys::replorigin_session_origin_lsn = end_lsn;
            pg_sys::replorigin_session_origin_timestamp = ts;
        }
        super::prepared::mark_for_prepare(gid);
        // SAFETY: runs PrepareTransaction for the marked block.
        unsafe { pg_sys::CommitTransactionCommand() };
    }

    /// COMMIT PREPARED (`commit`) or ROLLBACK PREPARED `gid` in the current
    /// transaction, as the remote record ending at `end_lsn` (at `ts`), and
    /// commit: the origin's progress moves in that record, and only in it.
    /// Returns the local record's end.
    pub(crate) fn finish_prepared(self, gid: &str, commit: bool, end_lsn: u64, ts: i64) -> u64 {
        // SAFETY: as in `commit`.
        unsafe {
            pg_sys::replorigin_session_origin_lsn = end_lsn;
            pg_sys::replorigin_session_origin_timestamp = ts;
        }
        super::prepared::finish(gid, commit);
        // SAFETY: the transaction FinishPreparedTransaction ran in; its
        // COMMIT/ROLLBACK PREPARED record (flushed there) is the last it
        // wrote, and the commit of this xid-less transaction resets it.
        unsafe {
            let end = pg_sys::XactLastRecEnd;
            pg_sys::CommitTransactionCommand();
            end
        }
    }
}

impl Drop for Applying {
    fn drop(&mut self) {
        disarm();
    }
}

/// Clear the session origin, its LSN and timestamp: nothing written from
/// now on advances the origin.
pub(crate) fn disarm() {
    // SAFETY: plain backend-local globals.
    unsafe {
        pg_sys::replorigin_session_origin = 0;
        pg_sys::replorigin_session_origin_lsn = 0;
        pg_sys::replorigin_session_origin_timestamp = 0;
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn disarm_at_exit(_code: i32, _arg: pg_sys::Datum) {
    disarm();
}
