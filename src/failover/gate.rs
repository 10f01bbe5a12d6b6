//! The `standby_slot_names` rule in a walsender (PostgreSQL 17's
//! `synchronized_standby_slots`, on 15).
//!
//! Design notes
//! - Where to wait. PostgreSQL 17 waits in `WalSndWaitForWal`, the loop
//!   that also answers the client. On 15 that loop is static; what a plugin
//!   can reach is the decoding context's WAL reader. The plugin's startup
//!   (walsender, failover-marked slot) replaces the reader's `page_read`
//!   callback by [`gated_page_read`]: it lets the reader see WAL only up to
//!   the oldest `restart_lsn` (= flushed position) of the named physical
//!   slots, so no record past it — no commit, no change — is decoded, let
//!   alone sent.
//! - How to wait while answering the client. When the standbys are behind
//!   what the reader asks for, the callback sleeps briefly (20 ms, on the
//!   latch, interrupts processed) and reports "no WAL yet" (-1, as the
//!   walsender's own callback does at shutdown). The reader keeps its
//!   position; `XLogSendLogical` returns without a record and the
//!   walsender's main loop runs as usual: it reads the client's replies,
//!   sends keepalives and applies `wal_sender_timeout` to the *client*, then
//!   asks again. pg_failover_slots instead loops inside the socket layer
//!   and ends the walsender after `wal_sender_timeout` while the standby is
//!   away; here the client stays connected and streaming resumes as soon as
//!   the standby has flushed.
//! - Exactness. The callback also shortens the bytes it returns to the
//!   allowed position, so records later on the same page are not decoded
//!   from the buffer either.
//! - A named slot that is missing, logical or invalidated holds everything
//!   back (PostgreSQL 17 does the same: a failover to that standby would
//!   lose what was sent), with a WARNING and HINT every 10 s.
//! - The mark is read once, when decoding starts (START_REPLICATION): a
//!   slot marked later is gated from its walsender's next start
//!   (`set_slot_failover()` says so when the slot is in use).

use super::rules::{self, Gate, StandbySlot};
use super::settings;
use crate::ffi::identity::AsRole;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static ORIGINAL: Cell<pg_sys::XLogPageReadCB> = const { Cell::new(None) };
    static LAST_WARNING: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// From the plugin's startup callback: gate this walsender's reader when
/// its slot is marked for failover. Not for slot creation (`is_init`) or
/// the SQL functions.
pub(crate) fn install(ctx: *mut pg_sys::LogicalDecodingContext, is_init: bool) {
    // SAFETY: a backend global.
    if is_init || !unsafe { pg_sys::am_walsender } {
        return;
    }
    // SAFETY: a decoding context has its acquired slot and its reader.
    let (name, reader) = unsafe {
        let ctx = &*ctx;
        if ctx.slot.is_null() || ctx.reader.is_null() {
            return;
        }
        (super::slots::name_to_string(&(*ctx.slot).data.name), ctx.reader)
    };
    if !marked(&name) {
        return;
    }
    // SAFETY: the reader is live for the decoding context's life; one
    // decoding context per walsender, so one saved original.
    unsafe {
        ORIGINAL.with(|o| o.set((*reader).routine.page_read));
        (*reader).routine.page_read = Some(gated_page_read);
    }
}

/// Whether `logical_ext.failover_slot` of this database lists the slot.
/// Read, when it is the extension's own table, as the bootstrap superuser (a replication login need not read the
/// table), in a transaction of its own when none is open (a walsender's
/// START_REPLICATION runs outside one).
fn marked(slot: &str) -> bool {
    // SAFETY: transaction state queries and the standard start/commit of a
    // backend; the memory context is restored after the commit.
    let own = unsafe { !pg_sys::IsTransactionState() };
    // SAFETY: reads a backend global.
    let cxt = unsafe { pg_sys::CurrentMemoryContext };
    if own {
        // SAFETY: as above.
        unsafe {
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
    }
    let found = {
        // Only the extension's own table: in a database without it, a role
        // that may create the schema could put a view of that name here,
        // and its code would run as the superuser below.
        let installed = crate::ffi::catalog::superuser_table(c"logical_ext", c"failover_slot");
        let _su = AsRole::bootstrap_superuser();
        installed
            && Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM logical_ext.failover_slot WHERE slot_name = $1::pg_catalog.name)",
                &[slot.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false)
    };
    if own {
        // SAFETY: pairs with the start above.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
            pg_sys::MemoryContextSwitchTo(cxt);
        }
    }
    found
}

#[pg_guard]
unsafe extern "C-unwind" fn gated_page_read(
    state: *mut pg_sys::XLogReaderState,
    target_page: pg_sys::XLogRecPtr,
    req_len: i32,
    target_rec: pg_sys::XLogRecPtr,
    buf: *mut std::ffi::c_char,
) -> i32 {
    let original = ORIGINAL.with(|o| o.get()).expect("installed with the original callback");
    let names = settings::standby_slot_names();
    let want = target_page + req_len.max(0) as u64;
    let slots: Vec<StandbySlot> = super::slots::standby_slots(&names).into_iter().map(|(s, _)| s).collect();
    match rules::gate(&slots, want) {
        // SAFETY: the reader's own callback with the reader's arguments.
        Gate::Open => unsafe { original(state, target_page, req_len, target_rec, buf) },
        Gate::Upto(upto) => {
            // SAFETY: as above.
            let n = unsafe { original(state, target_page, req_len, target_rec, buf) };
            if n < 0 {
                return n;
            }
            // Records past `upto` on this page stay unread.
            let allowed = i32::try_from(upto.saturating_sub(target_page)).unwrap_or(i32::MAX);
            n.min(allowed.max(req_len))
        }
        Gate::Wait { culprit, .. } => {
            if !matches!(slots[culprit], StandbySlot::Flushed(_)) {
                warn_unusable(&names[culprit], slots[culprit]);
            }
            // SAFETY: waiting on our own latch (the walsender's, also set
            // when WAL is flushed); interrupts processed after.
            unsafe {
                pg_sys::WaitLatch(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                    20,
                    pg_sys::PG_WAIT_EXTENSION,
                );
                pg_sys::ResetLatch(pg_sys::MyLatch);
            }
            pgrx::check_for_interrupts!();
            -1
        }
    }
}

fn warn_unusable(name: &str, s: StandbySlot) {
    let due = LAST_WARNING.with(|w| {
        let due = w.get().is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            w.set(Some(Instant::now()));
        }
        due
    });
    if !due {
        return;
    }
    let what = match s {
        StandbySlot::Missing => "does not exist",
        _ => "is not a valid physical slot",
    };
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "replication slot \"{name}\" named in logical_ext.standby_slot_names {what}; changes of failover slots are held back"
        ),
        function_name!(),
    )
    .set_hint("Create the standby's physical slot, or remove its name from logical_ext.standby_slot_names and reload.")
    .report(PgLogLevel::WARNING);
}
