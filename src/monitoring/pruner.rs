//! Pruning the logs on a schedule: `logical_ext.conflict_log` rows older
//! than `logical_ext.conflict_log_retention` and `logical_ext.ddl_log` rows
//! older than `logical_ext.ddl_log_retention`, in every database where
//! logical_ext is installed.
//!
//! Design notes
//! - The sampler (`sampler.rs`) has no database connection, so every
//!   `logical_ext.log_prune_interval` it starts a short-lived *lister*
//!   (a dynamic background worker connected to no particular database: it
//!   needs no database named `postgres`, and reads the shared catalog
//!   `pg_database` with a plain heap scan, as autovacuum's launcher does).
//!   The lister starts one *pruner* per database that accepts connections,
//!   one after the other (it waits for each, so pruning takes at most two
//!   worker slots), and exits.
//! - A pruner connects to its database; where logical_ext is installed it
//!   deletes the old rows of both tables in one transaction and logs how
//!   many. Nothing happens on a hot standby (it cannot write; the primary's
//!   deletions are replicated) or while the previous lister still runs.
//! - The rows of both logs are history for people, not state anything
//!   depends on: the apply worker's position is its replication origin.

use super::errors::OrReport;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

/// `bgw_type` of the lister and the pruners.
pub(crate) const WORKER_TYPE: &str = "logical_ext log pruner";

/// Starts a lister unless the previous one (`running`) is still at work.
/// Returns the handle to pass next time.
pub(crate) fn start(running: Option<DynamicBackgroundWorker>) -> Option<DynamicBackgroundWorker> {
    if let Some(w) = running {
        // Registered but not started yet, or still running: leave it be.
        match w.pid() {
            Ok(_) | Err(pgrx::bgworkers::BackgroundWorkerStatus::NotYetStarted) => return Some(w),
            Err(_) => {}
        }
    }
    // SAFETY: a plain read of shared XLog state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return None;
    }
    register(pg_sys::InvalidOid, 0)
        .inspect_err(|()| pgrx::log!("logical_ext: no free background worker slot to prune the logs; next try later"))
        .ok()
}

/// Registers a lister (`db` invalid) or the pruner of `db`.
fn register(db: pg_sys::Oid, notify_pid: i32) -> Result<DynamicBackgroundWorker, ()> {
    let name = if db == pg_sys::InvalidOid {
        "logical_ext log pruner (databases)".to_string()
    } else {
        format!("logical_ext log pruner {}", db.to_u32())
    };
    BackgroundWorkerBuilder::new(&name)
        .set_type(WORKER_TYPE)
        .set_library("logical_ext")
        .set_function("logical_ext_pruner_main")
        .set_argument(Some(pg_sys::Datum::from(db)))
        .enable_spi_access()
        .set_notify_pid(notify_pid)
        .load_dynamic()
        .map_err(|_| ())
}

/// Entry point of the lister (argument 0) and of a database's pruner.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_pruner_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = pg_sys::Oid::from(arg.value() as u32);
    if db == pg_sys::InvalidOid {
        list_and_prune();
    } else {
        prune(db);
    }
}

fn list_and_prune() {
    BackgroundWorker::connect_worker_to_spi(None, None);
    let dbs = BackgroundWorker::transaction(databases);
    // SAFETY: always valid in a backend.
    let me = unsafe { pg_sys::MyProcPid };
    for db in dbs {
        if BackgroundWorker::sigterm_received() {
            return;
        }
        match register(db, me) {
            // Whatever became of it (done, or failed to connect because the
            // database was dropped meanwhile), go on with the next.
            Ok(w) => {
                let _ = w.wait_for_shutdown();
            }
            Err(()) => {
                pgrx::log!("logical_ext: no free background worker slot to prune the logs of database {}", db.to_u32())
            }
        }
    }
}

/// The databases that accept connections (templates excluded).
fn databases() -> Vec<pg_sys::Oid> {
    let mut out = Vec::new();
    // SAFETY: the heap scan autovacuum's launcher uses on the shared catalog
    // pg_database, inside the transaction `BackgroundWorker::transaction`
    // started; each tuple's data is a FormData_pg_database (its fixed part),
    // read before the next heap_getnext.
    unsafe {
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tup.is_null() {
                break;
            }
            let data = (*tup).t_data;
            let form = data.cast::<u8>().add((*data).t_hoff as usize).cast::<pg_sys::FormData_pg_database>();
            if (*form).datallowconn && !(*form).datistemplate {
                out.push((*form).oid);
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    out
}

fn prune(db: pg_sys::Oid) {
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    // Runs SQL as the bootstrap superuser: never with the database's search_path.
    crate::ffi::worker::pin_session_search_path();
    let conflict_secs = crate::apply::settings::CONFLICT_LOG_RETENTION.get();
    let ddl_secs = super::settings::ddl_log_retention_secs();
    BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>("SELECT true FROM pg_catalog.pg_extension WHERE extname = 'logical_ext'")
            .ok()
            .flatten()
            .unwrap_or(false);
        if !installed {
            return;
        }
        for (table, column, secs) in
            [("conflict_log", "detected_at", conflict_secs), ("ddl_log", "logged_at", ddl_secs)]
        {
            if secs <= 0 {
                continue;
            }
            let sql = format!(
                "WITH gone AS (DELETE FROM logical_ext.{table} WHERE {column} < now() - make_interval(secs => $1) \
                 RETURNING 1) SELECT count(*) FROM gone"
            );
            let n = Spi::get_one_with_args::<i64>(&sql, &[f64::from(secs).into()]).or_report().unwrap_or(0);
            if n > 0 {
                pgrx::log!("logical_ext: pruned {n} rows of logical_ext.{table} older than {secs} s");
            }
        }
    });
}
