//! Starting apply workers. At server start a launcher (a static background
//! worker, registered while `shared_preload_libraries` is processed) lists
//! the databases (reading the shared catalog `pg_database` without
//! connecting to any database, so no particular database must exist) and
//! starts a short-lived starter in each; a starter finds
//! the enabled subscriptions of its database (if logical_ext is installed
//! there) and starts their apply workers. The SQL functions start and stop
//! workers directly when subscriptions change.
//!
//! Apply workers are dynamic workers with a restart time, so PostgreSQL
//! restarts one that crashed; a duplicate started by a racing launcher finds
//! its subscription claimed (`status.rs`) and exits.

use crate::ffi::worker::{self as backend, in_transaction};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use std::time::Duration;

pub(crate) fn register_launcher() {
    BackgroundWorkerBuilder::new("logical_ext launcher")
        .set_type("logical_ext launcher")
        .set_function("logical_ext_launcher_main")
        .set_library("logical_ext")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// `bgw_extra` of an apply worker: its database, the subscription owner and
/// the generation it was started for (`status::request`).
fn extra(dboid: pg_sys::Oid, owner: pg_sys::Oid, generation: u64) -> String {
    format!("{} {} {generation}", dboid.to_u32(), owner.to_u32())
}

pub(crate) fn parse_extra(s: &str) -> (pg_sys::Oid, pg_sys::Oid, u64) {
    let mut it = s.split_whitespace().map(|p| p.parse::<u64>().unwrap_or(0));
    let mut next = || it.next().unwrap_or(0);
    (pg_sys::Oid::from(next() as u32), pg_sys::Oid::from(next() as u32), next())
}

/// Start the apply worker of a subscription. Returns false (after a
/// WARNING) when no background worker slot is free.
pub(crate) fn start_apply_worker(dboid: pg_sys::Oid, subid: i32, owner: pg_sys::Oid) -> bool {
    let generation = super::status::request(dboid.to_u32(), subid);
    register_apply_worker(dboid, subid, owner, generation)
}

/// Make the subscription's worker run with its current settings: a running
/// worker is asked (new generation + SIGHUP) to start a new session, which
/// re-reads the catalog; otherwise a worker is started.
pub(crate) fn ensure_apply_worker(dboid: pg_sys::Oid, subid: i32, owner: pg_sys::Oid) -> bool {
    let generation = super::status::request(dboid.to_u32(), subid);
    match super::status::live_pid(dboid.to_u32(), subid) {
        Some(pid) => {
            // SAFETY: signalling the worker process that owns the slot.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            true
        }
        None => register_apply_worker(dboid, subid, owner, generation),
    }
}

fn register_apply_worker(dboid: pg_sys::Oid, subid: i32, owner: pg_sys::Oid, generation: u64) -> bool {
    let r = BackgroundWorkerBuilder::new(&format!("logical_ext apply {subid}"))
        .set_type("logical_ext apply")
        .set_function("logical_ext_apply_main")
        .set_library("logical_ext")
        .set_argument(Some(pg_sys::Datum::from(subid)))
        .set_extra(&extra(dboid, owner, generation))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load_dynamic();
    if r.is_err() {
        warning!(
            "logical_ext: could not start the apply worker of subscription {subid}: no free background worker slot"
        );
        return false;
    }
    true
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_launcher_main(_arg: pg_sys::Datum) {
    backend::attach_signal_handlers();
    // No database: only shared catalogs are readable, which is all we need.
    BackgroundWorker::connect_worker_to_spi_by_oid(None, None);
    let dbs = in_transaction(backend::connectable_databases);
    for db in dbs {
        backend::check_for_interrupts();
        let r = BackgroundWorkerBuilder::new(&format!("logical_ext starter {}", db.to_u32()))
            .set_type("logical_ext starter")
            .set_function("logical_ext_starter_main")
            .set_library("logical_ext")
            .set_argument(Some(pg_sys::Datum::from(db)))
            .enable_spi_access()
            .load_dynamic();
        if r.is_err() {
            warning!("logical_ext launcher: no free background worker slot to scan database {}", db.to_u32());
        }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_starter_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    backend::attach_signal_handlers();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    // Runs SQL as the bootstrap superuser: never with the database's search_path.
    backend::pin_session_search_path();
    let (installed, subs) = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>("SELECT true FROM pg_catalog.pg_extension WHERE extname = 'logical_ext'")
            .ok()
            .flatten()
            .unwrap_or(false);
        (installed, if installed { super::catalog::enabled() } else { Vec::new() })
    });
    for (subid, owner) in subs {
        start_apply_worker(dboid, subid, owner);
    }
    if installed {
        // The publisher's side of sequences (src/sequences/capture.rs).
        crate::sequences::start_for_database(dboid);
    }
}
