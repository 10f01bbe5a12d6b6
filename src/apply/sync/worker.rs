//! The copy a sync worker makes: one table of one subscription, from the
//! publisher's `COPY TO STDOUT` into the local table. The sync worker (a
//! dynamic background worker started by the subscription's apply worker,
//! `manager.rs`, at most `logical_ext.max_sync_workers_per_subscription` at
//! a time per subscription) runs this, then, for a copy from a snapshot of
//! its own, catches the table up with the stream (`apply/tablesync.rs`).
//!
//! 1. Takes the table (`copying`, committed, and the apply worker told)
//!    before any snapshot is taken on the publisher.
//! 2. Opens a REPEATABLE READ transaction on the publisher with either the
//!    snapshot the apply worker exported when it created the slot (initial
//!    copy: the table is `ready` afterwards, consistent with the slot's start)
//!    or, when that snapshot is gone (resume, resync, refresh), a snapshot of
//!    its own: a TEMPORARY slot created with `(SNAPSHOT 'use')`, whose
//!    consistent point becomes the table's `sync_lsn` (the table stays
//!    `copying` until the sync worker has caught it up with the stream:
//!    `apply/tablesync.rs`; `state.rs` says how the apply worker treats it).
//! 3. In one local transaction: empties the target for `resync_table`;
//!    refuses a non-empty target without a key (the copy would duplicate
//!    rows); copies the published rows and columns with COPY — into a
//!    non-empty target with a key through a staging table merged key by key,
//!    an overlapping key being an `insert_exists` conflict (`merge.rs`) —
//!    and records the new state. A copy that dies leaves nothing behind and
//!    is started again by the apply worker; once committed from a snapshot
//!    of its own, the table is marked `resync`, so a copy started again
//!    after a failed catch-up replaces what the first one wrote. The transaction commits with a
//!    replication origin of the subscription's (`logical_ext_<subid>_copy_<n>`,
//!    `n` unique among its running copies: PostgreSQL 15 lets one process
//!    at a time use an origin), so the copied rows count as replicated: the
//!    apply worker's conflict detection attributes them to the subscription,
//!    and `origin => 'none'` subscriptions of other nodes do not receive them.
//!
//! Errors are recorded in `subscription_tables.last_error` with their
//! SQLSTATE and HINT (`error`; retried with backoff by the apply worker).

use super::catalog;
use super::copy;
use super::merge::{self, Plan};
use super::registry;
use super::remote;
use super::state::State;
use crate::apply::catalog::{self as subs, Subscription};
use crate::apply::protocol::parse_lsn;
use crate::apply::status;
use crate::apply::walrcv::{Connection, quote_ident};
use crate::ffi;
use crate::ffi::identity::AsRole;
use crate::ffi::worker::in_transaction;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;

/// What the apply worker asks a sync worker to do (`bgw_extra`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) dboid: u32,
    pub(crate) owner: u32,
    pub(crate) subid: i32,
    /// The exported snapshot and the slot's consistent point, when the
    /// initial copy can still use them.
    pub(crate) snapshot: Option<(String, u64)>,
}

impl Job {
    pub(crate) fn to_extra(&self) -> String {
        match &self.snapshot {
            Some((name, lsn)) => format!("{} {} {} {name} {lsn}", self.dboid, self.owner, self.subid),
            None => format!("{} {} {}", self.dboid, self.owner, self.subid),
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Job> {
        let mut it = s.split_whitespace();
        let dboid = it.next()?.parse().ok()?;
        let owner = it.next()?.parse().ok()?;
        let subid = it.next()?.parse().ok()?;
        let snapshot = match (it.next(), it.next()) {
            (Some(name), Some(lsn)) => Some((name.to_string(), lsn.parse().ok()?)),
            _ => None,
        };
        Some(Job { dboid, owner, subid, snapshot })
    }
}

/// The table states changed: have the apply worker reload them now.
pub(crate) fn tell_apply_worker(dboid: u32, subid: i32) {
    status::bump_sync_generation(dboid, subid);
    if let Some(pid) = status::live_pid(dboid, subid) {
        // SAFETY: SIGUSR1 only sets the apply worker's latch.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
    }
}

/// A committed copy that still has to catch up with the stream.
pub(crate) struct Copied {
    pub(crate) sub: Subscription,
    /// The connection whose transaction took the snapshot; its temporary
    /// slot starts where the snapshot was taken.
    pub(crate) conn: Connection,
    pub(crate) slot: String,
    pub(crate) schema: String,
    pub(crate) table: String,
    /// The snapshot's LSN (the table's `sync_lsn` so far).
    pub(crate) sync_lsn: u64,
    pub(crate) number: u32,
}

/// Copy `relid` for `job` (the copy's origin is number `number`). `None`
/// when nothing more is to be done: the table is `ready` (the initial
/// copy's exported snapshot) or no longer waits for a copy.
pub(crate) fn copy_table(job: &Job, relid: pg_sys::Oid, number: u32) -> Result<Option<Copied>, String> {
    let (sub, resync) = in_transaction(|| (subs::by_id(job.subid), catalog::start_copy(job.subid, relid)));
    let (Some(sub), Some(resync)) = (sub.filter(|s| s.enabled), resync) else {
        return Ok(None);
    };
    if !resync {
        // Cheap early refusal (before a snapshot is taken on the publisher);
        // checked again in the copy's transaction.
        in_transaction(|| {
            let (schema, table) = local_name(relid);
            prepare_target(relid, &format!("{schema}.{table}"), false, None)
        });
    }
    // `copying` is committed: the apply worker waits for this copy before
    // it applies anything more (it must not apply this table's changes
    // past the snapshot taken below before the copy commits).
    tell_apply_worker(job.dboid, job.subid);

    let mut conn = Connection::connect(&sub.conninfo, &format!("{}_sync", sub.name))
        .map_err(|e| format!("could not connect to the publisher: {}", crate::apply::conninfo::redact(&e.0)))?;
    let exec = |conn: &mut Connection, sql: &str, ncols: usize| {
        in_transaction(|| conn.exec(sql, ncols)).map_err(|e| format!("publisher: {} (while running: {sql})", e.0))
    };
    exec(&mut conn, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ", 0)?;
    let sysid = crate::ffi::worker::system_identifier();
    let slot = format!("le_{}_{}_sync_{sysid}", job.subid, relid.to_u32());
    let (sync_lsn, own_snapshot) = match &job.snapshot {
        Some((name, lsn)) => {
            exec(&mut conn, &format!("SET TRANSACTION SNAPSHOT '{name}'"), 0)?;
            (*lsn, false)
        }
        None => {
            let cmd = format!(
                "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL logical_ext (SNAPSHOT 'use')",
                quote_ident(&slot)
            );
            let rows = exec(&mut conn, &cmd, 4)?;
            let lsn = rows.first().and_then(|r| r[1].as_deref()).and_then(parse_lsn);
            (lsn.ok_or_else(|| format!("{cmd} returned no consistent point"))?, true)
        }
    };

    // SAFETY: the standard transaction wrapper of a background worker.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    use_copy_origin(&catalog::copy_origin_name(job.subid, number));
    let (schema, table) = local_name(relid);
    let display = format!("{schema}.{table}");
    let kind = conn.exec(&remote::relkind_query(&schema, &table), 1).map_err(|e| e.0)?;
    let Some(kind) = kind.first().and_then(|r| r[0].clone()) else {
        return Err(format!("table \"{display}\" does not exist on the publisher"));
    };
    let columns: Vec<String> = conn
        .exec(&remote::columns_query(&sub.publications, &schema, &table), 1)
        .map_err(|e| e.0)?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    if columns.is_empty() {
        return Err(format!("table \"{display}\" is not published by {}", sub.publications.join(", ")));
    }
    let filters: Vec<Option<String>> = conn
        .exec(&remote::filters_query(&sub.publications, &schema, &table), 1)
        .map_err(|e| e.0)?
        .into_iter()
        .map(|r| r.into_iter().next().flatten())
        .collect();
    let filter = remote::combine_filters(&filters);
    let key = prepare_target(relid, &display, resync, Some(&columns));
    let qualified = qualified_name(relid);
    // SAFETY: a catalog lookup inside a transaction.
    let partitioned = unsafe { pg_sys::get_rel_relkind(relid) as u8 == pg_sys::RELKIND_PARTITIONED_TABLE };
    let owner = table_owner(relid, &display);
    let into = if key.is_some() { merge::create_stage(&qualified, owner) } else { relid };
    let cmd = remote::copy_command(&schema, &table, &columns, filter.as_deref(), kind == "p");
    conn.exec(&cmd, 0).map_err(|e| format!("publisher: {} (while running: {cmd})", e.0))?;
    let (db, subid, rel, me) = (job.dboid, job.subid, relid.to_u32(), status::my_pid());
    let report = Box::new(move |rows, bytes| registry::progress(db, subid, rel, me, rows, bytes));
    let (mut conn, copied) = copy::copy_from(conn, into, &columns, report);
    let mut conflicts = 0;
    if let Some(key) = &key {
        let rules = crate::apply::resolver::load_rules(&sub.name);
        let source = merge::Source {
            subscription: &sub.name,
            origin: &Subscription::origin_name(sub.id),
            lsn: crate::apply::protocol::format_lsn(sync_lsn),
            resolution: crate::apply::conflict::effective(
                &rules,
                relid.to_u32(),
                crate::apply::conflict::ConflictType::InsertExists,
            ),
        };
        let target =
            merge::Target { qualified: &qualified, display: &display, scope: own_rows_scope(partitioned), owner };
        let (inserted, overlapping) = merge::merge(&target, &columns, key, &source);
        conflicts = overlapping;
        log!(
            "logical_ext: subscription \"{}\": merged the copy of \"{display}\" into its rows: {inserted} new, \
             {overlapping} with an existing key (insert_exists, {})",
            sub.name,
            source.resolution.as_str()
        );
    }
    if own_snapshot {
        catalog::copy_committed(job.subid, relid, sync_lsn, copied.rows, copied.bytes);
    } else {
        catalog::finish_copy(job.subid, relid, State::Ready, sync_lsn, copied.rows, copied.bytes);
    }
    // SAFETY: pairs with the start above; the origin is released once the
    // commit record carries it.
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
        pg_sys::replorigin_session_reset();
        pg_sys::replorigin_session_origin = 0;
    }
    if conflicts > 0 {
        let i = crate::apply::conflict::ConflictType::InsertExists.index();
        status::update(job.dboid, job.subid, |s| s.conflicts[i] += conflicts);
    }
    exec(&mut conn, "COMMIT", 0)?;
    log!("logical_ext: subscription \"{}\": copied {} rows of \"{display}\"", sub.name, copied.rows);
    if !own_snapshot {
        return Ok(None);
    }
    // A (flushed, committed) WAL record past the copy's snapshot, so that the
    // apply worker's stream passes `sync_lsn` (and marks the table ready)
    // even when the publisher is otherwise idle. Best effort: it needs a
    // superuser.
    let _ = exec(&mut conn, "SELECT pg_catalog.pg_logical_emit_message(true, 'logical_ext_sync', '')", 1);
    Ok(Some(Copied { sub, conn, slot, schema, table, sync_lsn, number }))
}

/// Commit the current transaction with the replication origin `name`
/// (created on first use; it lives as long as the subscription).
fn use_copy_origin(name: &str) {
    let name = std::ffi::CString::new(name).expect("no NUL in origin names");
    // SAFETY: inside a transaction; this process uses no other origin, and
    // the origin is released after the commit (or when the process exits).
    unsafe {
        let mut id = pg_sys::replorigin_by_name(name.as_ptr(), true);
        if id == 0 {
            id = pg_sys::replorigin_create(name.as_ptr());
        }
        pg_sys::replorigin_session_setup(id);
        pg_sys::replorigin_session_origin = id;
    }
}

/// Empty the target when `resync_table` asked to replace its contents;
/// otherwise, when it has rows, return its key for a merge (`merge.rs`), or
/// refuse when it has none (the copy would duplicate rows). `columns`: the
/// copied columns, once known.
fn prepare_target(relid: pg_sys::Oid, display: &str, resync: bool, columns: Option<&[String]>) -> Option<Vec<String>> {
    let qualified = qualified_name(relid);
    // SAFETY: a catalog lookup inside a transaction.
    let partitioned = unsafe { pg_sys::get_rel_relkind(relid) as u8 == pg_sys::RELKIND_PARTITIONED_TABLE };
    let only = own_rows_scope(partitioned);
    let owner = table_owner(relid, display);
    if partitioned {
        // The copy (and the emptying below) run the partitions' triggers as
        // the partitioned table's owner: refused before anything runs when
        // a partition's owner would gain by it (routing.rs).
        crate::apply::routing::refuse_untrusted_leaf_owners(relid, owner, display);
    }
    if resync {
        // DELETE, not TRUNCATE: TRUNCATE would hold ACCESS EXCLUSIVE for the
        // whole copy and block every reader; DELETE lets readers see the old
        // rows until the copy's transaction commits the new ones. As the
        // table's owner, as the copy: its DELETE triggers (ENABLE ALWAYS
        // fire here) must not run as the subscription owner.
        let _as_owner = AsRole::become_role(owner);
        Spi::run(&format!("DELETE FROM {only}{qualified}"))
            .unwrap_or_else(|e| pgrx::error!("logical_ext: could not empty \"{display}\" for its new copy: {e}"));
        return None;
    }
    // As the owner too: the relation of that name may be a view, whose
    // functions run as the reader, and the reader must not be the
    // subscription owner.
    let as_owner = AsRole::become_role(owner);
    let has_rows = Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM {only}{qualified})"))
        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read \"{display}\": {e}"))
        .unwrap_or(false);
    drop(as_owner);
    let key = if has_rows { merge::key_columns(relid, columns) } else { None };
    if merge::plan(has_rows, key.is_some()) == Plan::Refuse {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "logical_ext: table \"{display}\" on the subscriber is not empty; its initial copy would duplicate rows \
                 (it has no primary key or replica identity index whose columns are copied)"
            ),
            function_name!(),
        )
        .set_hint(
            "TRUNCATE the table on the subscriber (the copy is retried), give it a primary key (rows with a key \
             already there are then conflicts resolved by the subscription's insert_exists rule), or create the \
             subscription with copy_data => false when its rows are already there.",
        )
        .report(PgLogLevel::ERROR);
    }
    key
}

/// The owner of the subscriber table `relid`.
fn table_owner(relid: pg_sys::Oid, display: &str) -> pg_sys::Oid {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1", &[relid.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| pgrx::error!("logical_ext: table \"{display}\" no longer exists on the subscriber"))
}

/// How the copy's target is read and emptied: `ONLY` a table (the publisher
/// copies this table alone, so inheritance children on the subscriber keep
/// their rows and are not refilled), but all of a partitioned table (its
/// rows live in its partitions, which the copy refills through routing).
fn own_rows_scope(partitioned: bool) -> &'static str {
    if partitioned { "" } else { "ONLY " }
}

fn local_name(relid: pg_sys::Oid) -> (String, String) {
    // SAFETY: catalog lookups inside a transaction; NULL (dropped) becomes "".
    unsafe {
        let table = ffi::cstr_to_string(pg_sys::get_rel_name(relid));
        if table.is_empty() {
            pgrx::error!("logical_ext: table {} no longer exists on the subscriber", relid.to_u32());
        }
        let schema = ffi::cstr_to_string(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid)));
        (schema, table)
    }
}

fn qualified_name(relid: pg_sys::Oid) -> String {
    let (schema, table) = local_name(relid);
    format!("{}.{}", quote_ident(&schema), quote_ident(&table))
}

/// Message, SQLSTATE and HINT of an error, as `last_error` keeps them.
pub(crate) fn describe(e: CaughtError) -> String {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
            let mut s = format!("{} (SQLSTATE {})", r.message(), sqlstate(r.sql_error_code()));
            if let Some(h) = r.hint() {
                s.push_str(" HINT: ");
                s.push_str(h);
            }
            s
        }
    }
}

/// The five-character SQLSTATE of a packed error code.
fn sqlstate(code: PgSqlErrorCode) -> String {
    let packed = code as i32;
    (0..5).map(|i| char::from(b'0' + ((packed >> (6 * i)) & 0x3F) as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::{Job, sqlstate};
    use pgrx::PgSqlErrorCode;

    #[test]
    fn sqlstates_unpack() {
        assert_eq!(sqlstate(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), "55000");
        assert_eq!(sqlstate(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION), "23505");
    }

    #[test]
    fn partitioned_targets_are_read_and_emptied_through_their_partitions() {
        assert_eq!(super::own_rows_scope(true), "");
        assert_eq!(super::own_rows_scope(false), "ONLY ");
    }

    #[test]
    fn jobs_round_trip() {
        let a = Job { dboid: 5, owner: 10, subid: 3, snapshot: None };
        assert_eq!(Job::parse(&a.to_extra()), Some(a));
        let b = Job { dboid: 5, owner: 10, subid: 3, snapshot: Some(("00000003-00000002-1".into(), 1 << 33)) };
        assert_eq!(Job::parse(&b.to_extra()), Some(b));
        assert_eq!(Job::parse("5 x"), None);
    }
}
