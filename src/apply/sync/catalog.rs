//! `logical_ext.subscription_tables` (sql/subscription.sql) as the workers
//! read and write it. Every function runs inside the caller's transaction.

use super::state::State;
use crate::apply::protocol::{format_lsn, parse_lsn};
use pgrx::prelude::*;

/// One table of a subscription that is not `ready`.
#[derive(Clone, Debug)]
pub(crate) struct TableSync {
    pub(crate) relid: pg_sys::Oid,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) state: State,
    pub(crate) sync_lsn: Option<u64>,
}

fn spi_fail(what: &str, e: pgrx::spi::SpiError) -> ! {
    pgrx::error!("logical_ext: could not {what} logical_ext.subscription_tables: {e}")
}

/// An UPDATE ... RETURNING one boolean: `None` when no row matched.
fn update_returning(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Option<bool> {
    Spi::connect_mut(|c| {
        let mut rows = c.update(sql, Some(1), args)?;
        rows.next().map(|r| r.get::<bool>(1)).transpose().map(Option::flatten)
    })
    .unwrap_or_else(|e| spi_fail("update", e))
}

/// The name of the replication origin a subscription's copy number
/// `number` commits with (`worker.rs`).
pub(crate) fn copy_origin_name(subid: i32, number: u32) -> String {
    format!("logical_ext_{subid}_copy_{number}")
}

const COPY_ORIGINS: &str = "SELECT roident::int4 FROM pg_catalog.pg_replication_origin \
     WHERE roname LIKE 'logical\\_ext\\_' || $1 || '\\_copy\\_%'";

/// The ids of the replication origins of `subid`'s copies.
pub(crate) fn copy_origins(subid: i32) -> Vec<u16> {
    Spi::connect(|c| {
        c.select(COPY_ORIGINS, None, &[subid.to_string().into()])?
            .map(|r| r.get::<i32>(1).map(|v| v.unwrap_or(0) as u16))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read replication origins: {e}"))
}

/// Drop the replication origins of `subid`'s copies (with the subscription).
pub(crate) fn drop_copy_origins(subid: i32) {
    Spi::run_with_args(
        &format!("SELECT pg_catalog.pg_replication_origin_drop(roname) FROM pg_catalog.pg_replication_origin WHERE roident IN ({COPY_ORIGINS})"),
        &[subid.to_string().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not drop replication origins: {e}"))
}

/// The tables of `subid` that are not `ready` (and still exist).
pub(crate) fn pending(subid: i32) -> Vec<TableSync> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT t.relid::oid, n.nspname::text, c.relname::text, t.state, t.sync_lsn::text \
             FROM logical_ext.subscription_tables t \
             JOIN pg_catalog.pg_class c ON c.oid = t.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE t.subid = $1 AND t.state <> 'ready' ORDER BY t.relid::oid",
            None,
            &[subid.into()],
        )?;
        rows.map(|r| {
            Ok(TableSync {
                relid: r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                schema: r.get::<String>(2)?.unwrap_or_default(),
                table: r.get::<String>(3)?.unwrap_or_default(),
                state: r.get::<String>(4)?.as_deref().and_then(State::parse).unwrap_or(State::Init),
                sync_lsn: r.get::<String>(5)?.as_deref().and_then(parse_lsn),
            })
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| spi_fail("read", e))
}

/// A sync worker takes the table: `copying` from now on. Returns whether
/// the copy replaces earlier contents (`resync`), or `None` when the table
/// is no longer waiting for a copy (ready, dropped from the subscription).
pub(crate) fn start_copy(subid: i32, relid: pg_sys::Oid) -> Option<bool> {
    update_returning(
        "UPDATE logical_ext.subscription_tables SET state = 'copying', started_at = clock_timestamp(), \
         finished_at = NULL, rows_copied = 0, bytes_copied = 0, last_error = NULL \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state IN ('init', 'copying', 'error') RETURNING resync",
        &[subid.into(), relid.into()],
    )
}

/// The copy committed (in this transaction): `state` from now on (unless
/// `resync_table` asked for a new copy meanwhile).
pub(crate) fn finish_copy(subid: i32, relid: pg_sys::Oid, state: State, sync_lsn: u64, rows: i64, bytes: i64) {
    Spi::run_with_args(
        "UPDATE logical_ext.subscription_tables SET state = $3, sync_lsn = $4::pg_lsn, rows_copied = $5, \
         bytes_copied = $6, finished_at = clock_timestamp(), last_error = NULL, resync = false \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state = 'copying'",
        &[subid.into(), relid.into(), state.as_str().into(), format_lsn(sync_lsn).into(), rows.into(), bytes.into()],
    )
    .unwrap_or_else(|e| spi_fail("update", e))
}

/// A copy from a snapshot of its own committed (in this transaction): it
/// stays `copying` until it has caught up with the stream (`catchup_done`),
/// and a copy started again meanwhile replaces its rows (`resync`).
pub(crate) fn copy_committed(subid: i32, relid: pg_sys::Oid, sync_lsn: u64, rows: i64, bytes: i64) {
    Spi::run_with_args(
        "UPDATE logical_ext.subscription_tables SET sync_lsn = $3::pg_lsn, rows_copied = $4, bytes_copied = $5, \
         last_error = NULL, resync = true WHERE subid = $1 AND relid = $2::oid::regclass AND state = 'copying'",
        &[subid.into(), relid.into(), format_lsn(sync_lsn).into(), rows.into(), bytes.into()],
    )
    .unwrap_or_else(|e| spi_fail("update", e))
}

/// The sync worker caught the table up: the stream applies its changes
/// committed at or after `lsn` (`catchup`, then `ready`). `false` when the
/// table no longer waits for this copy (`resync_table` asked for another).
pub(crate) fn catchup_done(subid: i32, relid: pg_sys::Oid, lsn: u64) -> bool {
    update_returning(
        "UPDATE logical_ext.subscription_tables SET state = 'catchup', sync_lsn = $3::pg_lsn, \
         finished_at = clock_timestamp(), resync = false \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state = 'copying' RETURNING true",
        &[subid.into(), relid.into(), format_lsn(lsn).into()],
    )
    .is_some()
}

/// Whether the table is (still) `copying`.
pub(crate) fn copying(subid: i32, relid: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT count(*) > 0 FROM logical_ext.subscription_tables \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state = 'copying'",
        &[subid.into(), relid.into()],
    )
    .unwrap_or_else(|e| spi_fail("read", e))
    .unwrap_or(false)
}

/// The copy failed with `message`.
pub(crate) fn fail_copy(subid: i32, relid: pg_sys::Oid, message: &str) {
    Spi::run_with_args(
        "UPDATE logical_ext.subscription_tables SET state = 'error', last_error = $3, finished_at = clock_timestamp() \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state IN ('init', 'copying')",
        &[subid.into(), relid.into(), message.into()],
    )
    .unwrap_or_else(|e| spi_fail("update", e))
}

/// Live progress of a running copy (only while it is `copying`: the copy's
/// own final figures win).
pub(crate) fn report_progress(subid: i32, relid: pg_sys::Oid, rows: i64, bytes: i64) {
    Spi::run_with_args(
        "UPDATE logical_ext.subscription_tables SET rows_copied = $3, bytes_copied = $4 \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state = 'copying' \
         AND (rows_copied, bytes_copied) IS DISTINCT FROM ($3, $4)",
        &[subid.into(), relid.into(), rows.into(), bytes.into()],
    )
    .unwrap_or_else(|e| spi_fail("update", e))
}

/// The main stream has passed the copy's snapshot: `ready`.
pub(crate) fn mark_ready(subid: i32, relid: pg_sys::Oid) {
    Spi::run_with_args(
        "UPDATE logical_ext.subscription_tables SET state = 'ready' \
         WHERE subid = $1 AND relid = $2::oid::regclass AND state = 'catchup'",
        &[subid.into(), relid.into()],
    )
    .unwrap_or_else(|e| spi_fail("update", e))
}

/// Record the tables of a subscription (new ones only): `init` when they
/// are to be copied, `ready` otherwise. Returns how many were added.
pub(crate) fn add_tables(subid: i32, relids: &[pg_sys::Oid], copy: bool) -> i64 {
    let state = if copy { State::Init } else { State::Ready };
    let oids: Vec<pg_sys::Oid> = relids.to_vec();
    Spi::get_one_with_args::<i64>(
        "WITH added AS (INSERT INTO logical_ext.subscription_tables (subid, relid, state) \
         SELECT $1, r::regclass, $3 FROM unnest($2::oid[]) AS r ON CONFLICT (subid, relid) DO NOTHING RETURNING 1) \
         SELECT count(*) FROM added",
        &[subid.into(), oids.into(), state.as_str().into()],
    )
    .unwrap_or_else(|e| spi_fail("insert into", e))
    .unwrap_or(0)
}

/// Forget the tables of a subscription that are no longer published.
pub(crate) fn remove_other_tables(subid: i32, keep: &[pg_sys::Oid]) -> i64 {
    let oids: Vec<pg_sys::Oid> = keep.to_vec();
    Spi::get_one_with_args::<i64>(
        "WITH gone AS (DELETE FROM logical_ext.subscription_tables WHERE subid = $1 AND relid::oid <> ALL ($2::oid[]) \
         RETURNING 1) SELECT count(*) FROM gone",
        &[subid.into(), oids.into()],
    )
    .unwrap_or_else(|e| spi_fail("delete from", e))
    .unwrap_or(0)
}

/// `resync_table`: copy the table again, replacing what it holds. `false`
/// when the table is not part of the subscription.
pub(crate) fn request_resync(subid: i32, relid: pg_sys::Oid) -> bool {
    update_returning(
        "UPDATE logical_ext.subscription_tables SET state = 'init', resync = true, sync_lsn = NULL, rows_copied = 0, \
         bytes_copied = 0, started_at = NULL, finished_at = NULL, last_error = NULL \
         WHERE subid = $1 AND relid = $2::oid::regclass RETURNING true",
        &[subid.into(), relid.into()],
    )
    .is_some()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn subscription() -> i32 {
        Spi::get_one::<i32>(
            "INSERT INTO logical_ext.subscription (name, owner, conninfo, publications, enabled) \
             VALUES ('t', 10, 'dbname=x', ARRAY['p'], false) RETURNING id",
        )
        .unwrap()
        .unwrap()
    }

    /// The shape other parts (DDL replication) rely on: a row needs only
    /// subid, relid and state.
    #[pg_test]
    fn a_table_row_needs_only_subid_relid_and_state() {
        let id = subscription();
        Spi::run(&format!(
            "CREATE TABLE sync_shape (id int); \
             INSERT INTO logical_ext.subscription_tables (subid, relid, state) VALUES ({id}, 'sync_shape', 'ready')"
        ))
        .unwrap();
        let row = Spi::get_one::<String>(
            "SELECT format('%s %s %s %s %s', relid, state, rows_copied, bytes_copied, resync) \
             FROM logical_ext.subscription_tables",
        )
        .unwrap();
        assert_eq!(row.as_deref(), Some("sync_shape ready 0 0 f"));
        assert_eq!(super::pending(id).len(), 0, "ready tables are not pending");
        Spi::run("UPDATE logical_ext.subscription_tables SET state = 'init'").unwrap();
        let pending = super::pending(id);
        assert_eq!((pending.len(), pending[0].table.as_str()), (1, "sync_shape"));
        assert!(super::request_resync(id, pending[0].relid));
        assert!(!super::request_resync(id + 1, pending[0].relid));
    }

    #[pg_test(
        error = "new row for relation \"subscription_tables\" violates check constraint \"subscription_tables_state_check\""
    )]
    fn states_are_checked() {
        let id = subscription();
        Spi::run(&format!(
            "INSERT INTO logical_ext.subscription_tables (subid, relid, state) VALUES ({id}, 'pg_class', 'syncdone')"
        ))
        .unwrap();
    }

    #[pg_test]
    fn sync_workers_setting_defaults_to_two() {
        let v = Spi::get_one::<String>("SHOW logical_ext.max_sync_workers_per_subscription").unwrap();
        assert_eq!(v.as_deref(), Some("2"));
    }
}
