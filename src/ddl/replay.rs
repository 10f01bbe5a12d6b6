//! Replay on the subscriber: the apply worker meets a DDL event at its place
//! in the stream and runs it here, inside the local transaction of the remote
//! one, before the changes that follow it. The command runs exactly as
//! captured (one statement, checked with the parser; never rebuilt from
//! pieces) with the publisher's search_path. Least privilege: it runs as the
//! role that ran it on the publisher (the role of that name here), or as the
//! subscription's `ddl_replay_role` when the operator opted in — never
//! silently as the subscription owner — and only when it is DDL of a kind
//! replay accepts (`policy::replay_refusal`) and came from a decoder that
//! proved it authentic (`log_id`, see `authentic.rs`). It runs in a
//! subtransaction, so an ERROR is rolled back before anything else runs. A
//! failure aborts the transaction and follows
//! the subscription's error policy like any apply error; the worker then
//! records it in `ddl_log` ([`log_failed_replay`]).
//!
//! The replayed command is not captured again: the worker runs with
//! `session_replication_role = replica`, where the (origin-enabled) event
//! triggers do not fire.

use super::capture::log_row;
use super::event::DdlEvent;
use super::policy;
use crate::ffi;
use crate::ffi::identity::AsRole;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;

/// Run `event` in the current transaction; the error says what failed.
pub(crate) fn replay(event: &DdlEvent, subscription: &str, lsn: u64, lsn_text: &str) -> Result<(), String> {
    let what = format!("DDL {} at {lsn_text} ({})", event.command_tag, event.command);
    let run = AssertUnwindSafe(|| {
        if event.log_id.is_none() {
            return Err(format!(
                "{what} was refused: it does not say which logical_ext.ddl_log row vouches for it, so the \
                 publisher's logical_ext (older than 0.2.0) could not prove it authentic"
            ));
        }
        if let Some(why) = policy::replay_refusal(&ffi::parse::parse_statements(&event.command)) {
            return Err(format!("{what} was refused: {why}"));
        }
        if let Some(by) = replayed_by_another(event, subscription, lsn)? {
            // Overlapping publications (or a replicate_ddl event, addressed
            // to every subscription) bring the same event to several
            // subscriptions of this database: the first replays it.
            log_row(
                event,
                "apply",
                Some(subscription),
                Some(lsn),
                Some(&format!("already replayed in this database by subscription \"{by}\"")),
            );
            return Ok(());
        }
        let role = replay_role(event, subscription).map_err(|why| format!("{what} was refused: {why}"))?;
        let previous = Spi::get_one::<String>("SELECT pg_catalog.current_setting('search_path')")
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        {
            let _as = AsRole::become_role(role);
            set_search_path(&event.search_path)?;
            Spi::run(&event.command).map_err(|e| format!("{what} failed: {e}"))?;
        }
        set_search_path(&previous)?;
        track_tables(event, subscription)?;
        log_row(event, "apply", Some(subscription), Some(lsn), None);
        Ok(())
    });
    // In a subtransaction: an ERROR is rolled back before anything else
    // runs in this backend (the caller then aborts the whole transaction).
    let result = match ffi::in_subtransaction(run) {
        Ok(r) => r,
        Err(report) => Err(format!("{what} failed: {}", report.message())),
    };
    if let Err(msg) = &result {
        FAILED.with(|f| *f.borrow_mut() = Some((event.clone(), subscription.to_string(), lsn, msg.clone())));
    }
    result
}

thread_local! {
    /// A replay that failed, to be logged once its transaction is rolled back.
    static FAILED: RefCell<Option<(DdlEvent, String, u64, String)>> = const { RefCell::new(None) };
}

/// After the apply worker rolled a failed transaction back (in a new
/// transaction): log the replay that failed in it, if one did, as a
/// `ddl_log` row with `replicated = false` and the error as the reason.
pub(crate) fn log_failed_replay() {
    if let Some((event, subscription, lsn, msg)) = FAILED.with(|f| f.borrow_mut().take()) {
        log_row(&event, "apply", Some(&subscription), Some(lsn), Some(&msg));
    }
}

/// Forget the replay that failed in a rolled-back transaction without
/// logging it: the apply worker replays that transaction again (alone,
/// after a failed group commit), and logs the failure then if it recurs.
pub(crate) fn forget_failed_replay() {
    FAILED.with(|f| f.borrow_mut().take());
}

/// Keep `logical_ext.subscription_tables` (initial synchronization) in step:
/// a table created by a replayed CREATE TABLE is empty on both sides at this
/// point of the stream, so it is `ready` at once (and `refresh_subscription`
/// will not take it for a new table to copy); rows of tables a replayed DROP
/// removed are forgotten.
fn track_tables(event: &DdlEvent, subscription: &str) -> Result<(), String> {
    let err = |e: pgrx::spi::SpiError| format!("could not update logical_ext.subscription_tables: {e}");
    match (event.command_tag.as_str(), event.object_identity.as_deref()) {
        ("CREATE TABLE", Some(identity)) if !event.publications.is_empty() => Spi::run_with_args(
            "INSERT INTO logical_ext.subscription_tables (subid, relid, state) \
             SELECT s.id, pg_catalog.to_regclass($2), 'ready' FROM logical_ext.subscription s \
             WHERE s.name = $1 AND pg_catalog.to_regclass($2) IS NOT NULL ON CONFLICT DO NOTHING",
            &[subscription.into(), identity.into()],
        )
        .map_err(err),
        (tag, _) if tag.starts_with("DROP ") => Spi::run_with_args(
            "DELETE FROM logical_ext.subscription_tables t USING logical_ext.subscription s \
             WHERE s.name = $1 AND t.subid = s.id \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.relid)",
            &[subscription.into()],
        )
        .map_err(err),
        _ => Ok(()),
    }
}

/// The subscription of this database that already replayed this event (the
/// same DDL message: same position on the publisher, same command).
fn replayed_by_another(event: &DdlEvent, subscription: &str, lsn: u64) -> Result<Option<String>, String> {
    Spi::get_one_with_args::<String>(
        // An aggregate: one row (NULL when none), which get_one needs.
        "SELECT min(l.subscription) FROM logical_ext.ddl_log l \
         WHERE l.source = 'apply' AND l.replicated AND l.lsn = $1 AND l.command = $2 AND l.subscription <> $3",
        &[crate::ffi::lsn::Lsn(lsn).into(), event.command.as_str().into(), subscription.into()],
    )
    .map_err(|e| e.to_string())
}

/// Who replays `event`: the subscription's `ddl_replay_role` if set, else
/// the role of the captured name, which must exist here.
fn replay_role(event: &DdlEvent, subscription: &str) -> Result<pgrx::pg_sys::Oid, String> {
    let configured = Spi::get_one_with_args::<String>(
        "SELECT s.options ->> 'ddl_replay_role' FROM logical_ext.subscription s WHERE s.name = $1",
        &[subscription.into()],
    )
    .map_err(|e| e.to_string())?;
    let (name, why_missing) = match configured {
        Some(name) => (name, "the subscription's ddl_replay_role"),
        None => (event.role.clone(), "the role that ran it on the publisher"),
    };
    ffi::identity::role_oid(&name).ok_or_else(|| {
        format!(
            "role \"{name}\" ({why_missing}) does not exist on this node; create it with the privileges it should \
             have here, or set the subscription option ddl_replay_role"
        )
    })
}

fn set_search_path(path: &str) -> Result<(), String> {
    Spi::run_with_args("SELECT pg_catalog.set_config('search_path', $1, true)", &[path.into()])
        .map_err(|e| format!("could not set search_path to {path:?}: {e}"))
}
