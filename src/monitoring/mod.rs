//! Part 3 of the mission: slot monitoring. One SQL call tells an operator
//! which replication slot will fill the disk, and when (docs/MONITORING.md).
//!
//! Design notes
//! - `health.rs` is the pure core: thresholds → status and reason, the
//!   retained-WAL growth rate (least squares over the last 5 minutes of
//!   samples) and the exhaustion forecast (against `max_slot_wal_keep_size`
//!   via PostgreSQL's own `safe_wal_size`, or against the free space of
//!   `pg_wal`'s file system when that is unlimited), and the stale-slot
//!   verdict of `drop_stale_slots()`. Closed enums for every state.
//! - PostgreSQL 15 has no `inactive_since` and keeps no history, so a
//!   background sampler (`sampler.rs`) records, every
//!   `logical_ext.monitor_interval`, each slot's `restart_lsn` and active
//!   flag plus the WAL position in a bounded shared-memory history
//!   (`shmem.rs`: one entry per possible slot, `history.rs`: a ring of the
//!   last 120 samples per slot). The sampler reads PostgreSQL's slot array
//!   directly and needs no database connection.
//! - Shared memory and the worker exist only when the library is in
//!   `shared_preload_libraries`. Without it every function still works; the
//!   history columns are NULL and `reason` says why.
//! - `report.rs` gathers the live rows (`pg_replication_slots` through SPI,
//!   so `wal_status`/`safe_wal_size` are PostgreSQL's) and the history, and
//!   applies `health.rs`; the SQL functions in `functions.rs` are thin, and
//!   `metrics()` renders the same reports as Prometheus text
//!   (`prometheus.rs`), so all outputs agree.
//! - The same text is served over HTTP by an opt-in background worker
//!   (`endpoint.rs`, `logical_ext.metrics_listen`; the protocol's pure part
//!   in `http.rs`), the supported path to Prometheus.
//! - `drop_stale_slots()` is SECURITY DEFINER (to write the audit table)
//!   and checks the *calling* role itself (`GetOuterUserId`): superuser or
//!   REPLICATION to drop, also pg_monitor for a dry run. It runs only outside
//!   transaction blocks because a slot drop cannot be rolled back while its
//!   audit row could; each drop runs in a subtransaction so a slot that
//!   became active meanwhile is reported, not fatal.
//! - Errors are raised in one place, `errors.rs`, each with a SQLSTATE and
//!   a hint. SQL-shaped objects (audit table, `replication_status()`,
//!   grants) are in `sql/monitoring.sql`.

mod candidates;
mod endpoint;
mod errors;
mod functions;
mod health;
mod history;
mod http;

mod prometheus;
mod pruner;
mod report;
mod sampler;
pub(crate) mod settings;
mod shmem;

use pgrx::pg_sys;

/// Called once from `_PG_init` (after `crate::settings::register`): when
/// the library is being preloaded, reserves the shared history and
/// registers the sampler, and the metrics endpoint's worker when
/// `logical_ext.metrics_listen` is set; otherwise does nothing.
pub(crate) fn init() {
    // SAFETY: a plain global set by the postmaster around preloading.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::request();
        sampler::register();
        endpoint::register_if_configured();
    }
}

pgrx::extension_sql_file!(
    "../../sql/monitoring.sql",
    name = "monitoring",
    requires =
        [functions::slot_health, functions::metrics, functions::sampler_status, functions::drop_stale_slots_filtered]
);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn settings_have_their_documented_defaults() {
        for (name, want) in [
            ("logical_ext.slot_lag_warning", "1GB"),
            ("logical_ext.slot_lag_critical", "10GB"),
            ("logical_ext.slot_inactive_warning", "5min"),
            ("logical_ext.slot_xmin_age_warning", "100000000"),
            ("logical_ext.slot_xmin_age_critical", "1000000000"),
            ("logical_ext.metrics_listen", ""),
            ("logical_ext.metrics_database", "postgres"),
            ("logical_ext.monitor_interval", "10s"),
            ("logical_ext.log_prune_interval", "1h"),
            ("logical_ext.ddl_log_retention", "30d"),
        ] {
            let got = Spi::get_one::<String>(&format!("SHOW {name}")).unwrap();
            assert_eq!(got.as_deref(), Some(want), "{name}");
        }
        Spi::run("SET logical_ext.slot_lag_warning = '64kB'").unwrap();
        assert_eq!(super::settings::thresholds().lag_warning_bytes, Some(64 * 1024));
        Spi::run("SET logical_ext.slot_inactive_warning = -1").unwrap();
        assert_eq!(super::settings::thresholds().inactive_warning_secs, None);
        Spi::run("SET logical_ext.slot_xmin_age_critical = 5000").unwrap();
        assert_eq!(super::settings::thresholds().xmin_age_critical, Some(5000));
        assert_eq!(super::settings::thresholds().xmin_age_warning, Some(100_000_000));
    }

    #[pg_test]
    fn without_preload_the_sampler_status_says_why() {
        let (preloaded, running, note) =
            Spi::get_three::<bool, bool, String>("SELECT preloaded, running, note FROM logical_ext.sampler_status()")
                .unwrap();
        assert_eq!((preloaded, running), (Some(false), Some(false)));
        assert!(note.unwrap().contains("shared_preload_libraries"));
        let text = Spi::get_one::<String>("SELECT logical_ext.metrics()").unwrap().unwrap();
        assert!(text.contains("\nlogical_ext_sampler_running 0\n"), "{text}");
        assert!(text.contains("# TYPE logical_ext_slot_lag_bytes gauge\n"), "{text}");
    }

    #[pg_test]
    fn no_slots_no_rows() {
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM logical_ext.slot_health()").unwrap(), Some(0));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM logical_ext.drop_stale_slots('1 day')").unwrap(), Some(0));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM logical_ext.slot_drop_audit").unwrap(), Some(0));
    }

    #[pg_test(error = "inactive_for must not be negative")]
    fn negative_bound_is_refused() {
        Spi::run("SELECT * FROM logical_ext.drop_stale_slots('-1 day')").unwrap();
    }

    #[pg_test(error = "logical_ext.drop_stale_slots(dry_run => false) cannot run inside a transaction block")]
    fn real_drop_is_refused_in_a_transaction_block() {
        // #[pg_test] bodies run inside a transaction block.
        Spi::run("SELECT * FROM logical_ext.drop_stale_slots('1 day', false)").unwrap();
    }

    #[pg_test]
    fn read_functions_are_for_pg_monitor_only() {
        let granted = Spi::get_one::<String>(
            "SELECT string_agg(p.proname || ':' || pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')::text,
                               ',' ORDER BY p.proname)
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'logical_ext'::regnamespace
                AND p.proname IN ('slot_health', 'replication_status', 'metrics', 'sampler_status', 'drop_stale_slots')",
        )
        .unwrap();
        assert_eq!(
            granted.as_deref(),
            Some("drop_stale_slots:true,metrics:false,replication_status:false,sampler_status:false,slot_health:false")
        );
        let definer = Spi::get_one::<String>(
            "SELECT p.prosecdef::text || ' ' || array_to_string(p.proconfig, ',')
               FROM pg_catalog.pg_proc p
              WHERE p.oid = 'logical_ext.drop_stale_slots(interval, boolean, text[], text[], text[], bigint, boolean)'::regprocedure",
        )
        .unwrap();
        assert_eq!(definer.as_deref(), Some("true search_path=pg_catalog, pg_temp"));
    }
}
