//! logical_ext: a logical-replication toolkit for PostgreSQL 15.
//!
//! Parts of the mission, one module each:
//! - [`decoder`]: the `logical_ext` output plugin (JSON change stream).
//! - [`apply`]: subscriptions applied by background workers.
//! - [`monitoring`]: slot health, replication status, stale-slot clean-up,
//!   Prometheus metrics, and the background sampler behind them.
//! - [`ddl`]: DDL capture by event triggers and its replay in stream order.
//! - [`sequences`]: sequence states captured into the stream (publisher side).
//! - [`failover`]: failover slots (publisher walsenders held back to their
//!   standbys, copies kept on standbys, `failover_readiness()`).
//!
//! `ffi` is the thin layer of PostgreSQL calls shared by the parts.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod apply;
mod ddl;
mod decoder;
mod failover;
mod ffi;
mod monitoring;
mod sequences;
mod settings;

// The roles of docs/SECURITY.md, before any grant mentions them.
pgrx::extension_sql_file!("../sql/roles.sql", name = "roles", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Errors are PostgreSQL errors: pgrx attaches a Rust backtrace to an
    // ERROR's DETAIL whenever the environment enables backtraces
    // (RUST_BACKTRACE=1 in a service file is enough). RUST_LIB_BACKTRACE
    // takes precedence for `Backtrace::capture`, the only kind pgrx takes,
    // and is read at the first capture, which cannot have happened yet: no
    // panic crossed this library before its _PG_init.
    // SAFETY: PostgreSQL processes are single-threaded; nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    settings::register();
    apply::init();
    monitoring::init();
    ddl::init();
    failover::init();
}

/// The version of the JSON stream format documented in docs/FORMAT.md.
#[pg_extern(immutable, parallel_safe)]
fn format_version() -> i32 {
    decoder::FORMAT_VERSION
}

/// The installed extension library's version.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn format_version_is_documented() {
        let v = Spi::get_one::<i32>("SELECT logical_ext.format_version()").unwrap();
        assert_eq!(v, Some(1));
        let doc = include_str!("../docs/FORMAT.md");
        assert!(doc.contains("**Format version: 1**"));
    }

    #[pg_test]
    fn settings_prefix_is_reserved() {
        let err = std::panic::catch_unwind(|| {
            Spi::run("SET logical_ext.no_such_setting = 1").unwrap();
        });
        assert!(err.is_err(), "an unknown logical_ext.* setting must be refused");
    }
}

/// Used by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "wal_level = logical",
            "max_replication_slots = 10",
            "max_wal_senders = 10",
            "track_commit_timestamp = on",
            "output_plugin_libraries = 'pgoutput, test_decoding, logical_ext'",
        ]
    }
}
