//! Part 2 of the mission: subscriptions applied by background workers.
//!
//! Design notes
//! - `api.rs`: the SQL functions (create/drop/enable/disable/alter, status).
//! - `catalog.rs`: the `logical_ext.subscription` record; `config.rs`: its
//!   settings as typed data (pure); `conninfo.rs`: password redaction (pure).
//! - `launcher.rs`: starts workers at server start and on demand.
//! - Conflicts: `conflict.rs` (types, resolutions, decisions; pure),
//!   `rows.rs` (detecting them while applying a row), `resolver.rs` (rules
//!   and the conflict log).
//! - `worker.rs`: the apply session (with `worker/stream.rs`: stream,
//!   feedback, receive timeout; `worker/documents.rs`: applying one
//!   document; `commit_time.rs`: the documents' commit time read without
//!   `timestamptz_in`); `origin.rs`: the replication-origin session and the guard
//!   that arms it only around an apply commit; `flush.rs` (what may be
//!   reported as flushed) and `keepalive.rs` (pings, receive timeout): pure.
//! - Two-phase commit (option `two_phase`): `prepared.rs` (local GIDs,
//!   PREPARE / COMMIT PREPARED calls, the rules), `worker/prepared.rs` (the
//!   `P`, `CP`, `RP` documents).
//! - Backend plumbing every worker shares (signals with `die` semantics,
//!   waits that process interrupts, transactions, clock) is in
//!   `crate::ffi::worker`.
//! - `protocol.rs`: wire formats, pure; `walrcv.rs`: the libpqwalreceiver
//!   FFI boundary; `relation.rs` + `executor.rs`: mapping and applying rows
//!   through the executor (`routing.rs`: partitioned targets route rows to
//!   their leaf partitions; `values.rs`: a value through its column's input
//!   function, errors naming table, column and value; `batch.rs`:
//!   consecutive INSERTs into one table written with one multi-insert,
//!   each row still named by its errors); `status.rs`:
//!   shared-memory worker status; `stats.rs`: its counters persisted
//!   across restarts (a file per subscription, flushed every few seconds
//!   and at worker exit) and `reset_subscription_stats`.
//! - `sync/`: initial table synchronization (copy before streaming,
//!   resumable per table, `resync_table`, `refresh_subscription`);
//!   `tablesync.rs`: the sync worker's life (copy, then catch the table up
//!   with the stream while the other tables keep streaming).
//!
//! Workers need `shared_preload_libraries = 'logical_ext'` (shared memory and
//! the launcher are set up only then); without it the SQL functions that
//! would need a worker raise an error with a HINT.

mod api;
mod batch;
mod catalog;
mod commit_time;
mod config;
mod conflict;
mod conninfo;
mod executor;
mod flush;
mod jsonb_input;
mod keepalive;
mod launcher;
mod numeric_input;
mod origin;
mod prepared;
mod protocol;
mod relation;
mod resolver;
mod routing;
mod row_input;
mod rows;
mod scan;
mod sequence;
pub(crate) mod settings;
mod slot_fence;
mod spool;
mod stats;
mod status;
mod sync;
mod tablesync;
#[cfg(any(test, feature = "pg_test"))]
mod test_rng;
mod values;
mod walrcv;
mod worker;

/// The closed list of conflict types, also the monitoring's label values.
pub(crate) use conflict::ConflictType;
/// A SQL connection to a publisher (or primary) over libpqwalreceiver,
/// also used by the standby's slot synchronization (`crate::failover`).
pub(crate) use walrcv::Connection as PublisherConnection;

use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Whether the library was loaded by `shared_preload_libraries` (inherited by
/// every backend forked from the postmaster).
pub(crate) fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Called from `_PG_init`.
pub(crate) fn init() {
    // SAFETY: reads a flag PostgreSQL sets while loading preload libraries.
    if !unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    PRELOADED.store(true, Ordering::Relaxed);
    status::init_shmem();
    stats::init_shmem();
    sync::registry::init_shmem();
    launcher::register_launcher();
}

pgrx::extension_sql_file!(
    "../../sql/subscription.sql",
    name = "subscription",
    requires = [
        api::worker_status,
        api::redact_conninfo,
        api::set_conflict_resolution,
        api::skip_transaction,
        api::accept_slot_gap,
        api::effective_conflict_resolutions,
        api::resync_table,
        api::refresh_subscription,
        api::subscription_counters,
        api::reset_subscription_stats
    ]
);
