//! Two-phase commit on the subscriber (subscription option `two_phase`):
//! the PostgreSQL calls behind preparing a remote transaction locally and
//! finishing it later, and the rules the SQL functions enforce. The worker's
//! side (which document does what) is `worker/prepared.rs`; the origin's
//! LSN moves with each of these records (`origin.rs`).
//!
//! Design notes
//! - The local GID is built from the subscription id and the publisher's
//!   xid, as PostgreSQL's own worker does (`logical_ext_<subid>_<xid>`, its
//!   own prefix so it never meets a native subscription's `pg_gid_…`): the
//!   publisher's GID could be prepared twice here by two subscriptions of
//!   the same publisher, and a GID in use makes PREPARE fail.
//! - PREPARE TRANSACTION and COMMIT/ROLLBACK PREPARED always flush their
//!   WAL record before returning (twophase.c), whatever
//!   `synchronous_commit` says: they are durable once done.
//! - The worker's rows are applied as each table's owner, but the role is
//!   switched back after every change (`executor.rs`), so the transaction
//!   is prepared, and later finished, by the worker's own role (the
//!   subscription owner, a superuser when it was created): PostgreSQL lets
//!   only the preparing role or a superuser finish a prepared transaction.
//! - Why copies are refused under `two_phase` (as PostgreSQL refuses
//!   `REFRESH PUBLICATION` with `copy_data`): a transaction prepared while a
//!   table waits for its copy is prepared here without that table's rows
//!   (they are the copy's business), but if it commits after the copy's
//!   snapshot neither the copy nor its catch-up (which streams without
//!   two-phase, so sees the transaction at its commit, after the hand-over)
//!   brings them. So a subscription's tables are copied only before two-phase
//!   decoding is switched on (the worker streams without it until every
//!   table is `ready`), and no table is copied after.

use super::config::OptionError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CString, c_char, c_int};

unsafe extern "C-unwind" {
    /// `access/twophase.h` (not bound by pgrx).
    static max_prepared_xacts: c_int;
    /// `access/twophase.h`: COMMIT PREPARED (`is_commit`) or ROLLBACK
    /// PREPARED of `gid`, inside a transaction.
    fn FinishPreparedTransaction(gid: *const c_char, is_commit: bool);
}

/// The local GID of the publisher's prepared transaction `remote_xid`.
pub(crate) fn gid(subid: i32, remote_xid: u32) -> String {
    format!("{}{remote_xid}", gid_prefix(subid))
}

/// What every local GID of subscription `subid` starts with.
fn gid_prefix(subid: i32) -> String {
    format!("logical_ext_{subid}_")
}

/// `two_phase` needs prepared transactions on this server.
pub(crate) fn check_enabled() -> Result<(), OptionError> {
    // SAFETY: reads a GUC variable (PGC_POSTMASTER, fixed for the process).
    let max = unsafe { max_prepared_xacts };
    if max > 0 {
        return Ok(());
    }
    Err(OptionError {
        message: "two_phase needs max_prepared_transactions > 0 on the subscriber (it is 0)".into(),
        hint: "Set max_prepared_transactions (e.g. to max_worker_processes) in postgresql.conf and restart the server."
            .into(),
    })
}

/// Why `resync_table` / `refresh_subscription(copy_data => true)` are
/// refused for a two-phase subscription (see the module notes).
pub(crate) fn copy_refused(subscription: &str) -> OptionError {
    OptionError {
        message: format!("subscription \"{subscription}\" has two_phase on: its tables cannot be copied again"),
        hint: "A transaction prepared during a copy could lose the copied table's rows. Use \
               refresh_subscription(..., copy_data => false), or drop and create the subscription again."
            .into(),
    }
}

/// Turn the open transaction (the remote one's local transaction) into a
/// transaction block and mark it to be prepared as `gid`; the caller's
/// `CommitTransactionCommand` then prepares it, as `PREPARE TRANSACTION`
/// does. Mirrors worker.c's apply_handle_prepare_internal.
pub(crate) fn mark_for_prepare(gid: &str) {
    let gid = CString::new(gid).expect("GIDs have no NUL");
    // SAFETY: inside a started transaction (TBLOCK_STARTED): BEGIN makes it
    // a block (its CommitTransactionCommand only moves the block to
    // INPROGRESS), then PREPARE marks the block for PrepareTransaction.
    unsafe {
        if !pg_sys::IsTransactionBlock() {
            pg_sys::BeginTransactionBlock();
            pg_sys::CommitTransactionCommand();
        }
        pg_sys::PrepareTransactionBlock(gid.as_ptr());
    }
}

/// COMMIT PREPARED / ROLLBACK PREPARED `gid` inside the current
/// transaction (its record is written and flushed here).
pub(crate) fn finish(gid: &str, commit: bool) {
    let gid = CString::new(gid).expect("GIDs have no NUL");
    // SAFETY: inside a transaction, not a block; the boundary turns an ERROR
    // into a Rust panic that unwinds to the worker's error handling.
    unsafe {
        pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| FinishPreparedTransaction(gid.as_ptr(), commit));
    }
}

/// Whether `gid` is prepared in this database (inside a transaction).
pub(crate) fn exists(gid: &str) -> bool {
    // SAFETY: inside a transaction; popped below.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let found = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts \
         WHERE gid = $1 AND database = pg_catalog.current_database())",
        &[gid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    // SAFETY: pairs with the push above.
    unsafe { pg_sys::PopActiveSnapshot() };
    found
}

/// `drop_subscription`: transactions the subscription prepared here and
/// the publisher never decided stay prepared (holding their locks), as
/// natively; say so, and how to end them.
pub(crate) fn warn_left_prepared(subid: i32, subscription: &str) {
    let prefix = gid_prefix(subid);
    let left: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT gid FROM pg_catalog.pg_prepared_xacts \
             WHERE pg_catalog.starts_with(gid, $1) AND database = pg_catalog.current_database() ORDER BY gid",
            None,
            &[prefix.as_str().into()],
        )
        .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
        .unwrap_or_default()
    });
    if left.is_empty() {
        return;
    }
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_WARNING,
        format!(
            "logical_ext: subscription \"{subscription}\" leaves {} prepared transaction(s) on this server: {}",
            left.len(),
            left.join(", ")
        ),
        "logical_ext",
    )
    .set_hint("End each with COMMIT PREPARED or ROLLBACK PREPARED '<gid>', as the publisher decided.")
    .report(PgLogLevel::WARNING);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_unique_per_subscription_and_remote_xid() {
        assert_eq!(gid(3, 742), "logical_ext_3_742");
        assert_ne!(gid(3, 742), gid(4, 742));
        assert!(gid(i32::MAX, u32::MAX).len() < 200, "GIDSIZE");
        assert!(gid(12, 5).starts_with(&gid_prefix(12)) && !gid(12, 5).starts_with(&gid_prefix(1)));
    }
}
