//! What the apply worker does after a session failed: roll back with the
//! origin disarmed (nothing after a failure may move it), turn a unique
//! violation of the change being applied into a conflict record, keep the
//! records that must survive the rollback (conflict log, failed DDL
//! replay), report the error, and either disable the subscription
//! (`disable_on_error`) or wait the backoff before the next session. All of
//! this bookkeeping commits without the replication origin.
//!
//! A failed group commit (two or more remote transactions in the local
//! transaction, `grouping.rs`) is not reported at all: the next session
//! starts at once and applies those transactions one by one, so a failure
//! that recurs is reported for exactly the remote transaction that fails,
//! and one the grouping caused does not recur. Likewise a failure while a
//! streamed transaction was applied as it arrived (`eager.rs`): its commit
//! LSN is not known yet, so the next session applies it at its commit and
//! reports a failure that recurs there, with the LSN.

use super::Worker;
use crate::apply::catalog::{self, Subscription};
use crate::apply::conflict::Resolution;
use crate::apply::executor::Target;
use crate::apply::origin;
use crate::apply::protocol::{self, Doc};
use crate::apply::resolver::{self, ConflictRecord};
use crate::apply::rows;
use crate::apply::status;
use crate::ffi;
use crate::ffi::worker::{self as backend, in_transaction, now_ts};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

impl Worker {
    /// After a failed session: false when the worker must exit (the
    /// subscription was disabled).
    /// `detail`: the error's DETAIL, logged with the retry line (it names
    /// the failing row of a constraint violation).
    pub(super) fn after_error(&mut self, code: PgSqlErrorCode, msg: String, detail: Option<String>) -> bool {
        // The session (and its origin guard) is gone; disarm
        // again anyway before anything aborts or commits, so the
        // failed transaction can never move the origin.
        origin::disarm();
        // SAFETY: abandon whatever transaction the error left open, with
        // the internal subtransactions of a streamed transaction applied
        // while it arrived (`eager.rs`).
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        ffi::reset_memory_context(self.msg_cxt);
        let failure = self.grouping.failed();
        if failure.grouped {
            self.failed_conflict = None;
            self.in_flight = None;
            crate::ddl::forget_failed_replay();
            log!(
                "logical_ext: apply worker for subscription {}: a group of {} remote transactions failed ({msg}); \
                 applying them one per local transaction",
                self.subid,
                failure.members
            );
            return true;
        }
        if std::mem::take(&mut self.eager_open) {
            // An error while a streamed transaction was applied as it
            // arrived: its commit LSN (and time) are not known yet, and a
            // report without them would be of no use to skip_transaction —
            // nor should disable_on_error act on it. The next session
            // receives the transaction again and applies it at its commit
            // (`eager_failed`), where an error that recurs is reported with
            // them, once.
            self.eager_failed = true;
            self.failed_conflict = None;
            self.in_flight = None;
            crate::ddl::forget_failed_replay();
            log!(
                "logical_ext: apply worker for subscription {}: applying a streamed transaction while it arrived \
                 failed ({msg}); applying it at its commit",
                self.subid
            );
            return true;
        }
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
        let apply_worker = self.scope.is_none();
        status::update(self.dboid, self.subid, |s| {
            s.set_error(&msg, now);
            if apply_worker {
                s.apply_errors += 1;
            }
        });
        if apply_worker {
            // Kept before the backoff, which may be long.
            self.stats.flush(self.dboid, self.subid);
        }
        if self.sub.as_ref().is_some_and(|s| s.options.disable_on_error) {
            in_transaction(|| {
                Spi::run_with_args(
                    "UPDATE logical_ext.subscription SET enabled = false WHERE id = $1",
                    &[self.subid.into()],
                )
            })
            .unwrap_or_else(|e| pgrx::error!("logical_ext: could not disable the subscription: {e}"));
            log!("logical_ext: subscription {} disabled after an error (disable_on_error): {msg}", self.subid);
            return false;
        }
        let delay = self.retry_delay();
        self.attempt = self.attempt.saturating_add(1);
        let line = format!("logical_ext: apply worker for subscription {}: {msg}; retrying in {delay:?}", self.subid);
        match detail {
            Some(d) => ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, line, function_name!())
                .set_detail(d)
                .report(PgLogLevel::LOG),
            None => log!("{line}"),
        }
        backend::sleep(delay);
        true
    }

    /// The conflict a unique violation of the in-flight change stands for
    /// (its resolution was `error`, so nothing probed for it beforehand).
    fn unique_violation(&mut self) -> Option<Box<ConflictRecord>> {
        let (kind, payload, commit_lsn, commit_ts) = self.in_flight.as_ref()?;
        let (rel, new, key) = match protocol::parse_doc(payload, &self.compact).ok()? {
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
                let t = Target::open(&local);
                let scratch = &mut Vec::new();
                match &key {
                    None => t.find_unique(t.new_row(&new, scratch), None),
                    // The row being updated, then the other row its new values collide with.
                    Some(identity) => t.find(identity.as_deref().unwrap_or(&new), scratch).and_then(|updated| {
                        let row = t.merged_row(&updated, &new, scratch);
                        t.find_unique(row, Some(&updated))
                    }),
                }
                .map(|l| (l.to_json(&local), l.writer()))
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
}
