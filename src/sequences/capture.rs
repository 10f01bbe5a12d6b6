//! The publisher's sequence capture: one background worker per database
//! with logical_ext installed (design notes in `mod.rs`).
//!
//! - It runs only while its database has a `logical_ext` slot (a database
//!   with a logical slot cannot be dropped anyway; one without must not be
//!   kept busy by a connected worker). Started by a `logical_ext` walsender
//!   of the database (the plugin's startup, `decoder/plugin.rs`), by the
//!   database's starter at server start (`apply/launcher.rs`), by `CREATE
//!   EXTENSION` / `ALTER EXTENSION ... UPDATE` (`start_sequence_capture()`
//!   in the scripts) and by `replicate_sequence()`, these two at commit (a
//!   worker started earlier could miss the uncommitted extension and exit); a second one in the same
//!   database finds the session advisory lock taken and exits. It exits when
//!   the extension is dropped or no slot is left, and PostgreSQL restarts it
//!   after a crash.
//! - Each round is one transaction: read `replicated_sequences()`, keep
//!   those whose state differs from what `replicated_sequence` says was last
//!   sent, record the new states there (with this transaction's id) and
//!   write one transactional message listing them. Nothing moved: nothing
//!   written, no transaction id. An error (a sequence dropped meanwhile) is
//!   logged and the next round tries again; it never ends the worker.

use crate::ffi::identity::AsRole;
use crate::ffi::worker::{self as backend, in_transaction};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgXactCallbackEvent, register_xact_callback};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// Session advisory lock key: one capture worker per database.
const LOCK_KEY: i64 = 0x6C65_5F73_6571;

/// Start the capture worker of database `dboid` (it exits at once if one
/// runs already, or if the extension is not installed there).
pub(crate) fn start_for_database(dboid: pg_sys::Oid) -> bool {
    BackgroundWorkerBuilder::new(&format!("logical_ext sequence capture {}", dboid.to_u32()))
        .set_type("logical_ext sequence capture")
        .set_function("logical_ext_sequence_capture_main")
        .set_library("logical_ext")
        .set_argument(Some(pg_sys::Datum::from(dboid)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load_dynamic()
        .is_ok()
}

/// Start this database's capture worker once the current transaction
/// commits; false when logical_ext is not in `shared_preload_libraries` (no
/// background workers). Called by the extension's install and upgrade
/// scripts.
#[pg_extern]
fn start_sequence_capture() -> bool {
    crate::apply::preloaded() && {
        start_at_commit();
        true
    }
}

/// Start this database's capture worker when the current transaction
/// commits: started at once, the worker could look before `CREATE
/// EXTENSION` (or a registration) is visible, find nothing, and exit.
fn start_at_commit() {
    // SAFETY: set at backend start.
    let db = unsafe { pg_sys::MyDatabaseId };
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        start_for_database(db);
    });
}

/// Replicate `seq` whether or not it feeds a published table: its state is
/// sent to every consumer of the stream. For the sequence's owner or a
/// superuser.
#[pg_extern]
fn replicate_sequence(seq: pgrx::PgRelation) {
    let seq = {
        let oid = seq.oid();
        drop(seq);
        oid
    };
    // SAFETY: catalog lookups by OID.
    let (kind, owner) = unsafe { (pg_sys::get_rel_relkind(seq) as u8, rel_owner(seq)) };
    if kind != pg_sys::RELKIND_SEQUENCE {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            "replicate_sequence() takes a sequence",
            function_name!(),
        )
        .set_hint("Serial and identity columns of published tables are replicated without it.")
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: catalog lookup by OID.
    if unsafe { pg_sys::get_rel_persistence(seq) } as u8 == pg_sys::RELPERSISTENCE_TEMP {
        // The capture worker cannot read another session's temporary
        // sequence: registering one would stop every capture round.
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "a temporary sequence cannot be replicated",
            function_name!(),
        )
        .set_hint("Replicate a permanent sequence.")
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: reads the current user; membership check in the catalog.
    let allowed = unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) };
    if !allowed {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "only the owner of a sequence (or a superuser) may replicate it",
            function_name!(),
        )
        .report(PgLogLevel::ERROR);
    }
    {
        // The registry is the superuser's table (it vouches for messages):
        // written as the bootstrap superuser once the caller was checked.
        let _su = AsRole::bootstrap_superuser();
        // (ON CONFLICT is not available on a user catalog table.)
        Spi::run_with_args(
            "WITH up AS (UPDATE logical_ext.replicated_sequence SET explicit = true WHERE id = $1 RETURNING 1) \
             INSERT INTO logical_ext.replicated_sequence (id, explicit) \
             SELECT $1, true WHERE NOT EXISTS (SELECT 1 FROM up)",
            &[(seq.to_u32() as i64).into()],
        )
        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not record the sequence: {e}"));
    }
    if crate::apply::preloaded() {
        start_at_commit();
    }
}

/// # Safety
/// A catalog lookup; `relid` may be anything.
unsafe fn rel_owner(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: syscache lookup, released before returning.
    unsafe {
        let tup = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(relid));
        if tup.is_null() {
            return pg_sys::InvalidOid;
        }
        let form = pg_sys::GETSTRUCT(tup) as *const pg_sys::FormData_pg_class;
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tup);
        owner
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_sequence_capture_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    backend::attach_signal_handlers();
    // The bootstrap superuser: it reads every sequence and writes the
    // registry.
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    // Runs SQL as the bootstrap superuser: never with the database's search_path.
    backend::pin_session_search_path();
    let first = in_transaction(|| {
        let installed = Spi::get_one::<bool>("SELECT true FROM pg_catalog.pg_extension WHERE extname = 'logical_ext'")
            .ok()
            .flatten()
            .unwrap_or(false);
        installed
            && Spi::get_one_with_args::<bool>("SELECT pg_catalog.pg_try_advisory_lock($1)", &[LOCK_KEY.into()])
                .ok()
                .flatten()
                .unwrap_or(false)
    });
    if !first {
        return;
    }
    let mut first_round = true;
    loop {
        let ms = super::settings::CAPTURE_INTERVAL.get();
        if !std::mem::take(&mut first_round) {
            backend::wait(Some(Duration::from_millis(if ms == 0 { 1000 } else { ms as u64 })));
        }
        if ms == 0 {
            continue;
        }
        let round = PgTryBuilder::new(AssertUnwindSafe(|| in_transaction(round)))
            .catch_others(|e| {
                // SAFETY: abandons the failed round's transaction.
                unsafe { pg_sys::AbortCurrentTransaction() };
                let msg = match e {
                    pg_sys::panic::CaughtError::PostgresError(r) | pg_sys::panic::CaughtError::ErrorReport(r) => {
                        r.message().to_string()
                    }
                    pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
                };
                log!("logical_ext: sequence capture round failed ({msg}); trying again");
                Round::Captured(0)
            })
            .execute();
        if matches!(round, Round::Uninstalled | Round::NoConsumer) {
            // Exit code 0: not restarted; a logical_ext walsender of this
            // database starts it again.
            return;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Round {
    Captured(usize),
    Uninstalled,
    /// No logical_ext slot in this database: nobody would read the states.
    NoConsumer,
}

/// One capture round (inside a transaction).
fn round() -> Round {
    let installed = Spi::get_one::<bool>(
        "SELECT true FROM pg_catalog.pg_extension WHERE extname = 'logical_ext' \
         AND pg_catalog.current_setting('wal_level') = 'logical'",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !installed {
        let still = Spi::get_one::<bool>("SELECT true FROM pg_catalog.pg_extension WHERE extname = 'logical_ext'")
            .ok()
            .flatten()
            .unwrap_or(false);
        return if still { Round::Captured(0) } else { Round::Uninstalled };
    }
    // Only while this database has a logical_ext slot: a database with a
    // logical slot cannot be dropped anyway, one without must not be kept
    // busy by this worker (DROP DATABASE refuses connected databases).
    let consumed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                         WHERE database = pg_catalog.current_database() AND plugin = 'logical_ext')",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !consumed {
        return Round::NoConsumer;
    }
    // Forget what is neither fed nor explicit any more, or dropped.
    Spi::run(
        "DELETE FROM logical_ext.replicated_sequence r \
          WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = r.id::oid AND c.relkind = 'S') \
             OR (NOT r.explicit AND NOT EXISTS \
                 (SELECT 1 FROM logical_ext.replicated_sequences() s WHERE s.seqid = r.id::oid))",
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"));
    // Always one row (an aggregate without GROUP BY), NULL when nothing
    // moved: get_one reports a query without rows as an error, which made
    // every quiet round fail and log it.
    let content = Spi::get_one::<String>(
        "SELECT CASE WHEN pg_catalog.count(*) > 0 THEN \
                pg_catalog.json_build_object('sequences', pg_catalog.json_agg(pg_catalog.json_build_object( \
                'id', s.seqid::bigint, 'schema', s.schema, 'name', s.name, 'last_value', s.last_value, \
                'is_called', s.is_called, 'increment', s.increment, 'publications', s.publications, \
                'explicit', s.explicit) ORDER BY s.schema, s.name))::text END \
           FROM logical_ext.replicated_sequences() s \
           LEFT JOIN logical_ext.replicated_sequence r ON r.id = s.seqid::bigint \
          WHERE r.sent_value IS DISTINCT FROM s.last_value OR r.sent_is_called IS DISTINCT FROM s.is_called",
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"));
    let Some(content) = content else { return Round::Captured(0) };
    // What vouches for the message: these states, by this transaction.
    // (ON CONFLICT is not available on a user catalog table.)
    let n = Spi::get_one_with_args::<i64>(
        "WITH e AS (SELECT * FROM pg_catalog.json_to_recordset($1::json -> 'sequences') \
                      AS e(id bigint, last_value bigint, is_called boolean)), \
              up AS (UPDATE logical_ext.replicated_sequence r \
                        SET sent_xid = pg_catalog.pg_current_xact_id(), sent_value = e.last_value, \
                            sent_is_called = e.is_called, sent_at = pg_catalog.now() \
                       FROM e WHERE r.id = e.id RETURNING r.id), \
              ins AS (INSERT INTO logical_ext.replicated_sequence (id, sent_xid, sent_value, sent_is_called, sent_at) \
                      SELECT e.id, pg_catalog.pg_current_xact_id(), e.last_value, e.is_called, pg_catalog.now() \
                        FROM e WHERE e.id NOT IN (SELECT up.id FROM up) RETURNING 1) \
         SELECT (SELECT pg_catalog.count(*) FROM up) + (SELECT pg_catalog.count(*) FROM ins)",
        &[content.as_str().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"))
    .unwrap_or(0);
    Spi::run_with_args(
        "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)",
        &[super::PREFIX.into(), content.as_str().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"));
    Round::Captured(n as usize)
}
