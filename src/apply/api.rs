//! The SQL interface of subscriptions (schema `logical_ext`). Each function
//! validates its input into the typed config of `config.rs` first, then
//! changes the catalog table, then starts or stops workers — starting only
//! once the transaction commits (and restarting on abort what it stopped), so
//! a worker never runs against uncommitted settings.

use super::catalog::{self, Subscription};
use super::config::{self, Origin, WorkerOptions};
use super::conflict::{self, ConflictType, Resolution};
use super::conninfo::redact;
use super::launcher::{ensure_apply_worker, start_apply_worker};
use super::stats;
use super::status;
use super::sync::{catalog as sync_catalog, registry as sync_registry, remote as sync_remote};
use super::walrcv::{Connection, quote_ident, quote_literal};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgXactCallbackEvent, register_xact_callback};
use std::time::{Duration, Instant};

/// SQL-facing errors: SQLSTATE, message, hint (`ffi::fail`).
pub(super) use crate::ffi::fail;

pub(super) fn require_superuser(what: &str) {
    // SAFETY: reads the current user's role attributes.
    if !unsafe { pg_sys::superuser() } {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be superuser to {what}"),
            "Subscriptions apply changes as their owner, who must be a superuser.",
        );
    }
}

fn require_preload() {
    if !super::preloaded() {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "logical_ext is not loaded through shared_preload_libraries",
            "Add logical_ext to shared_preload_libraries in postgresql.conf and restart the server; apply workers need it.",
        );
    }
}

fn my_database() -> pg_sys::Oid {
    // SAFETY: set at backend start.
    unsafe { pg_sys::MyDatabaseId }
}

pub(super) fn load(name: &str) -> Subscription {
    catalog::by_name(name).unwrap_or_else(|| {
        fail(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("subscription \"{name}\" does not exist"), "")
    })
}

pub(super) fn connect(conninfo: &str, name: &str) -> Connection {
    Connection::connect(conninfo, name).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("could not connect to the publisher: {}", redact(&e.0)),
            "Check the connection string and that the publisher accepts replication connections (pg_hba.conf).",
        )
    })
}

/// Once the current transaction commits, make the worker run with the
/// committed settings (start it, or have the running one start a new session).
fn start_at_commit(subid: i32, owner: pg_sys::Oid) {
    let db = my_database();
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        ensure_apply_worker(db, subid, owner);
    });
}

/// Stop the worker now; start it again if the transaction aborts.
fn stop_worker(sub: &Subscription) {
    let db = my_database();
    if !super::preloaded() {
        return;
    }
    // A new generation: workers started earlier but not running yet will
    // not take over (status::claim).
    status::request(db.to_u32(), sub.id);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The apply worker first (it starts sync workers), then the copies.
    let pids = || {
        status::live_pid(db.to_u32(), sub.id)
            .or_else(|| sync_registry::running(db.to_u32(), sub.id).first().map(|e| e.pid))
    };
    while let Some(pid) = pids() {
        // SAFETY: signalling the apply or sync worker that owns the entry now
        // (it may have changed since the last round).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if Instant::now() > deadline {
            fail(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                format!("a worker of subscription \"{}\" (pid {pid}) did not stop", sub.name),
                "Try again; see the server log for what the worker is doing.",
            );
        }
        // SAFETY: a short sleep that still honours query cancellation.
        unsafe {
            pg_sys::pg_usleep(10_000);
            pgrx::check_for_interrupts!();
        }
    }
    if sub.enabled {
        let (id, owner) = (sub.id, sub.owner);
        register_xact_callback(PgXactCallbackEvent::Abort, move || {
            start_apply_worker(db, id, owner);
        });
    }
}

/// The change stream is UTF-8 JSON and its values reach this database's
/// input functions unconverted: both databases must be UTF-8, or the
/// subscription is refused here rather than corrupting text later.
fn check_encodings(conn: &mut Connection) {
    // SAFETY: reads the database encoding of this backend.
    let local = unsafe { pg_sys::GetDatabaseEncoding() };
    if local != pg_sys::pg_enc::PG_UTF8 as i32 {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "logical_ext subscriptions need a UTF8 database on the subscriber",
            "Create the subscription in a database created with ENCODING 'UTF8'.",
        );
    }
    let remote = conn
        .exec("SELECT pg_catalog.current_setting('server_encoding')", 1)
        .unwrap_or_else(|e| {
            fail(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("could not read the publisher's encoding: {}", e.0),
                "",
            )
        })
        .first()
        .and_then(|r| r[0].clone())
        .unwrap_or_default();
    if remote != "UTF8" {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("the publisher's database encoding is {remote}; logical_ext subscriptions need UTF8 on both sides"),
            "Publish from a database created with ENCODING 'UTF8'.",
        );
    }
}

fn check_publications(conn: &mut Connection, pubs: &[String]) {
    let list: Vec<String> = pubs.iter().map(|p| quote_literal(p)).collect();
    let q = format!(
        "SELECT p FROM unnest(ARRAY[{}]::text[]) AS p WHERE p NOT IN (SELECT pubname FROM pg_catalog.pg_publication)",
        list.join(",")
    );
    let missing = conn.exec(&q, 1).unwrap_or_else(|e| {
        fail(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, format!("could not check publications: {}", e.0), "")
    });
    if let Some(row) = missing.first() {
        fail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("publication \"{}\" does not exist on the publisher", row[0].clone().unwrap_or_default()),
            "Create it on the publisher first (CREATE PUBLICATION).",
        );
    }
}

/// `origin = none` with `copy_data`: WARNING, as PostgreSQL 16 does, when
/// the copied tables may hold rows another subscription wrote on the
/// publisher (a copy cannot tell their origin). `except`: tables not copied
/// again.
fn warn_foreign_origins(conn: &mut Connection, name: &str, publications: &[String], except: &[(String, String)]) {
    let failed = |e: crate::apply::walrcv::WalRcvError| -> ! {
        fail(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("could not receive the list of replicated tables from the publisher: {}", e.0),
            "",
        )
    };
    let has_ext = conn.exec(sync_remote::HAS_LOGICAL_EXT_QUERY, 1).unwrap_or_else(|e| failed(e));
    let has_ext = has_ext.first().and_then(|r| r[0].as_deref()) == Some("t");
    let rows =
        conn.exec(&sync_remote::foreign_origin_query(publications, has_ext, except), 1).unwrap_or_else(|e| failed(e));
    let pubs: Vec<String> = rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
    if pubs.is_empty() {
        return;
    }
    let list = pubs.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    let detail = if pubs.len() == 1 {
        format!(
            "The subscription being created subscribes to a publication ({list}) that contains tables that are \
             written to by other subscriptions."
        )
    } else {
        format!(
            "The subscription being created subscribes to publications ({list}) that contain tables that are written \
             to by other subscriptions."
        )
    };
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "subscription \"{name}\" requested copy_data with origin = NONE but might copy data that had a \
             different origin"
        ),
        function_name!(),
    )
    .set_detail(detail)
    .set_hint("Verify that initial data copied from the publisher tables did not come from other origins.")
    .report(PgLogLevel::WARNING);
}

/// (schema, table) of the tables subscription `id` already has.
fn subscribed_table_names(id: i32) -> Vec<(String, String)> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT n.nspname::text, r.relname::text FROM logical_ext.subscription_tables t \
             JOIN pg_catalog.pg_class r ON r.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
             WHERE t.subid = $1",
            None,
            &[id.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            if let (Some(s), Some(t)) = (r.get::<String>(1)?, r.get::<String>(2)?) {
                out.push((s, t));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| {
        fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("could not read the subscription's tables: {e}"), "")
    })
}

/// The local tables of the tables the publications cover (same schema and
/// name). A missing one is an error when it is to be copied, else skipped
/// (the apply worker reports it if changes arrive for it).
fn published_tables(conn: &mut Connection, publications: &[String], copy: bool) -> Vec<pg_sys::Oid> {
    let rows = conn.exec(&sync_remote::tables_query(publications), 2).unwrap_or_else(|e| {
        fail(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, format!("could not list the published tables: {}", e.0), "")
    });
    let mut out = Vec::new();
    for row in rows {
        let (schema, table) = (row[0].clone().unwrap_or_default(), row[1].clone().unwrap_or_default());
        let (s, t) = (std::ffi::CString::new(schema.as_str()), std::ffi::CString::new(table.as_str()));
        let (Ok(s), Ok(t)) = (s, t) else { continue };
        // SAFETY: catalog lookups with valid C strings.
        let relid = unsafe {
            let nsp = pg_sys::get_namespace_oid(s.as_ptr(), true);
            if nsp == pg_sys::InvalidOid { nsp } else { pg_sys::get_relname_relid(t.as_ptr(), nsp) }
        };
        if relid != pg_sys::InvalidOid {
            out.push(relid);
        } else if copy {
            fail(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("table \"{schema}.{table}\" is published but does not exist on the subscriber"),
                "Create it on the subscriber first (same schema, name and columns), or pass copy_data => false.",
            );
        }
    }
    out
}

/// Create a subscription: the slot on the publisher (unless `create_slot`
/// is false), a local replication origin, and the apply worker. With
/// `copy_data` the worker creates the slot itself and first copies every
/// published table (see `sync/`).
#[allow(clippy::too_many_arguments)]
#[pg_extern]
fn create_subscription(
    name: &str,
    conninfo: &str,
    publications: Vec<String>,
    slot_name: default!(Option<&str>, "NULL"),
    create_slot: default!(bool, true),
    enabled: default!(bool, true),
    copy_data: default!(bool, true),
    origin: default!(&str, "'any'"),
    options: default!(JsonB, "'{}'"),
) {
    require_superuser("create subscriptions");
    require_preload();
    if name.is_empty() {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "subscription name must not be empty", "");
    }
    if publications.is_empty() {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "at least one publication is required", "");
    }
    let origin = Origin::parse(origin).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, ""));
    let worker_opts = WorkerOptions::parse(&options.0)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.message, e.hint));
    if worker_opts.two_phase
        && let Err(e) = super::prepared::check_enabled()
    {
        fail(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, e.message, e.hint);
    }
    let slot = slot_name.unwrap_or(name).to_string();
    if !config::valid_slot_name(&slot) {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("\"{slot}\" is not a valid replication slot name"),
            "Slot names use lower-case letters, digits and underscores (at most 63); pass slot_name => '...'.",
        );
    }
    if catalog::by_name(name).is_some() {
        fail(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("subscription \"{name}\" already exists"), "");
    }

    if create_slot {
        // SAFETY: refuses to run inside an explicit transaction block, since
        // creating the remote slot cannot be rolled back.
        unsafe { pg_sys::PreventInTransactionBlock(true, c"logical_ext.create_subscription".as_ptr()) };
    }
    let mut conn = connect(conninfo, name);
    check_encodings(&mut conn);
    check_publications(&mut conn, &publications);
    let tables = published_tables(&mut conn, &publications, copy_data);
    if copy_data && origin == Origin::None {
        warn_foreign_origins(&mut conn, name, &publications, &[]);
    }
    // With copy_data the worker creates the slot: it must hold the slot's
    // exported snapshot while the tables are copied.
    let slot_pending = create_slot && copy_data;
    if create_slot && !slot_pending {
        let cmd = format!("CREATE_REPLICATION_SLOT {} LOGICAL logical_ext (SNAPSHOT 'nothing')", quote_ident(&slot));
        // Returns slot_name, consistent_point, snapshot_name, output_plugin.
        conn.exec(&cmd, 4).unwrap_or_else(|e| {
            fail(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("could not create replication slot \"{slot}\" on the publisher: {}", e.0),
                "The publisher needs wal_level = logical, a free max_replication_slots entry and logical_ext in output_plugin_libraries.",
            )
        });
    }
    drop(conn);

    // SAFETY: reads the current user.
    let owner = unsafe { pg_sys::GetUserId() };
    let id = Spi::get_one_with_args::<i32>(
        "INSERT INTO logical_ext.subscription (name, owner, conninfo, publications, slot_name, origin, enabled, options, slot_pending) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        &[
            name.into(),
            owner.into(),
            conninfo.into(),
            publications.into(),
            slot.as_str().into(),
            origin.as_str().into(),
            enabled.into(),
            options.into(),
            slot_pending.into(),
        ],
    )
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("could not record subscription: {e}"), ""))
    .expect("RETURNING id");
    sync_catalog::add_tables(id, &tables, copy_data);
    let origin_name = std::ffi::CString::new(Subscription::origin_name(id)).expect("no NUL");
    // SAFETY: creates the origin in this transaction (rolled back with it).
    unsafe { pg_sys::replorigin_create(origin_name.as_ptr()) };
    if enabled {
        start_at_commit(id, owner);
    }
}

/// Drop a subscription: stop its worker, drop the remote slot (when
/// `drop_slot` and the publisher is reachable), the origin and the record.
#[pg_extern]
fn drop_subscription(name: &str, drop_slot: default!(bool, true)) {
    require_superuser("drop subscriptions");
    if drop_slot {
        // Dropping the remote slot cannot be rolled back: like DROP
        // SUBSCRIPTION, refuse to run inside a transaction block (or a
        // subtransaction).
        // SAFETY: raises an ERROR when in a transaction block.
        unsafe { pg_sys::PreventInTransactionBlock(true, c"logical_ext.drop_subscription".as_ptr()) };
    }
    let sub = load(name);
    stop_worker(&sub);
    if let (true, Some(slot), false) = (drop_slot, &sub.slot_name, sub.slot_pending) {
        let mut conn = Connection::connect(&sub.conninfo, &sub.name).unwrap_or_else(|e| {
            fail(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("could not connect to the publisher to drop slot \"{slot}\": {}", redact(&e.0)),
                format!(
                    "To drop the subscription without dropping the slot, call logical_ext.drop_subscription('{name}', drop_slot => false), \
                     then drop the slot on the publisher with SELECT pg_drop_replication_slot('{slot}')."
                ),
            )
        });
        // Whether the slot exists is asked, not guessed from an error's text.
        let exists = conn.exec(
            &format!("SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = {}", quote_literal(slot)),
            1,
        );
        if exists.as_ref().is_ok_and(|rows| rows.is_empty()) {
            warning!("logical_ext: replication slot \"{slot}\" did not exist on the publisher");
        } else if let Err(e) =
            exists.and_then(|_| conn.exec(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(slot)), 0))
        {
            fail(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("could not drop replication slot \"{slot}\" on the publisher: {}", e.0),
                format!(
                    "Pass drop_slot => false and drop the slot on the publisher with pg_drop_replication_slot('{slot}')."
                ),
            );
        }
    }
    let origin = std::ffi::CString::new(Subscription::origin_name(sub.id)).expect("no NUL");
    // SAFETY: the worker using the origin has stopped; missing_ok.
    unsafe { pg_sys::replorigin_drop_by_name(origin.as_ptr(), true, false) };
    sync_catalog::drop_copy_origins(sub.id);
    Spi::run_with_args("DELETE FROM logical_ext.subscription WHERE id = $1", &[sub.id.into()]).unwrap_or_else(|e| {
        fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("could not delete subscription: {e}"), "")
    });
    super::prepared::warn_left_prepared(sub.id, &sub.name);
    let (db, id) = (my_database().to_u32(), sub.id);
    if super::preloaded() {
        register_xact_callback(PgXactCallbackEvent::Commit, move || status::forget(db, id));
    }
    // Its persisted statistics go with it (`stats.rs`).
    register_xact_callback(PgXactCallbackEvent::Commit, move || stats::remove(db, id));
}

/// Enable a subscription: its worker starts at commit.
#[pg_extern]
fn enable_subscription(name: &str) {
    require_superuser("enable subscriptions");
    require_preload();
    let sub = load(name);
    Spi::run_with_args("UPDATE logical_ext.subscription SET enabled = true WHERE id = $1", &[sub.id.into()])
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    start_at_commit(sub.id, sub.owner);
}

/// Disable a subscription: its worker stops now (and restarts if this
/// transaction rolls back).
#[pg_extern]
fn disable_subscription(name: &str) {
    require_superuser("disable subscriptions");
    let sub = load(name);
    stop_worker(&sub);
    Spi::run_with_args("UPDATE logical_ext.subscription SET enabled = false WHERE id = $1", &[sub.id.into()])
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
}

/// Change a subscription's settings: `conninfo`, `publications`, `origin`,
/// `slot_name`, and the worker options (`config::WORKER_OPTION_KEYS`;
/// `null` resets one to its default).
#[pg_extern]
fn alter_subscription(name: &str, options: JsonB) {
    require_superuser("alter subscriptions");
    let sub = load(name);
    let Some(changes) = options.0.as_object() else {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "options must be a JSON object", "")
    };
    let bad = |key: &str, want: &str| -> ! {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("\"{key}\" must be {want}"), "")
    };
    let mut sets: Vec<(&str, pgrx::datum::DatumWithOid<'static>)> = Vec::new();
    let mut worker_opts = serde_json::Map::new();
    let current: JsonB =
        Spi::get_one_with_args("SELECT options FROM logical_ext.subscription WHERE id = $1", &[sub.id.into()])
            .ok()
            .flatten()
            .unwrap_or(JsonB(serde_json::json!({})));
    if let Some(o) = current.0.as_object() {
        worker_opts = o.clone();
    }
    for (k, v) in changes {
        match k.as_str() {
            "conninfo" => {
                sets.push(("conninfo", v.as_str().map(str::to_string).unwrap_or_else(|| bad(k, "a string")).into()))
            }
            "publications" => {
                let pubs: Vec<String> = v
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        a.iter()
                            .map(|p| p.as_str().map(str::to_string).unwrap_or_else(|| bad(k, "an array of names")))
                            .collect()
                    })
                    .unwrap_or_else(|| bad(k, "a non-empty array of publication names"));
                sets.push(("publications", pubs.into()));
            }
            "origin" => {
                let o =
                    v.as_str().map(Origin::parse).and_then(Result::ok).unwrap_or_else(|| bad(k, "\"any\" or \"none\""));
                sets.push(("origin", o.as_str().into()));
            }
            "slot_name" => {
                let s =
                    v.as_str().filter(|s| config::valid_slot_name(s)).unwrap_or_else(|| bad(k, "a valid slot name"));
                sets.push(("slot_name", s.to_string().into()));
            }
            // As natively, two_phase is chosen at creation for good: the
            // slot decodes prepares once it was asked to (worker/prepared.rs).
            "two_phase" if v.as_bool() != Some(sub.options.two_phase) => fail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "two_phase cannot be changed after create_subscription",
                "Drop the subscription and create it again with the two_phase option you want.",
            ),
            key if config::WORKER_OPTION_KEYS.contains(&key) => {
                if v.is_null() {
                    worker_opts.remove(key);
                } else {
                    worker_opts.insert(key.to_string(), v.clone());
                }
            }
            other => fail(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown subscription setting \"{other}\""),
                format!(
                    "Valid settings: conninfo, publications, origin, slot_name, {}.",
                    config::WORKER_OPTION_KEYS.join(", ")
                ),
            ),
        }
    }
    let opts = serde_json::Value::Object(worker_opts);
    WorkerOptions::parse(&opts)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.message, e.hint));
    sets.push(("options", JsonB(opts).into()));
    for (col, val) in sets {
        Spi::run_with_args(
            &format!("UPDATE logical_ext.subscription SET {col} = $1 WHERE id = $2"),
            &[val, sub.id.into()],
        )
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    }
    if sub.enabled {
        start_at_commit(sub.id, sub.owner);
    }
}

/// `conninfo` with the password hidden.
#[pg_extern(immutable, parallel_safe)]
fn redact_conninfo(conninfo: &str) -> String {
    redact(conninfo)
}

/// Shared-memory state of this database's apply workers (times in µs since
/// 2000-01-01; the `subscription_status` view presents them).
#[pg_extern]
#[allow(clippy::type_complexity)]
fn worker_status() -> TableIterator<
    'static,
    (
        name!(subid, i32),
        name!(pid, Option<i32>),
        name!(state, Option<String>),
        name!(received_lsn, i64),
        name!(latest_end_lsn, i64),
        name!(last_msg_send_time, i64),
        name!(last_msg_receipt_time, i64),
        name!(last_commit_time, i64),
        name!(applied_transactions, i64),
        name!(applied_changes, i64),
        name!(last_error, Option<String>),
        name!(last_error_time, i64),
        name!(conflicts, Vec<i64>),
    ),
> {
    if !super::preloaded() {
        return TableIterator::new(Vec::new());
    }
    let db = my_database().to_u32();
    let rows: Vec<_> = status::all()
        .into_iter()
        .filter(|s| s.dboid == db && s.subid != 0)
        .map(|s| {
            let live = status::live_pid(db, s.subid);
            (
                s.subid,
                live,
                live.and(s.state().map(|st| st.as_str().to_string())),
                s.received_lsn as i64,
                s.latest_end_lsn as i64,
                s.last_send_time,
                s.last_receipt_time,
                s.last_commit_time,
                s.applied_txns,
                s.applied_changes,
                s.error().map(str::to_string),
                s.error_time,
                s.conflicts.to_vec(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Have the worker pick up changed settings once they are committed.
fn restart_worker(sub: &Subscription) {
    if super::preloaded() && sub.enabled {
        start_at_commit(sub.id, sub.owner);
    }
}

/// Set how a subscription resolves conflicts: its default (no type, no
/// relation), or for one conflict type and/or one relation. The most
/// specific rule wins. A resolution that makes no sense for the type is
/// refused.
#[pg_extern]
fn set_conflict_resolution(
    subscription: &str,
    resolution: &str,
    conflict_type: default!(Option<&str>, "NULL"),
    relation: default!(Option<pgrx::PgRelation>, "NULL"),
) {
    let relation = relation.map(|r| r.oid());
    require_superuser("set conflict resolutions");
    let sub = load(subscription);
    let res =
        Resolution::parse(resolution).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, ""));
    let ct = conflict_type.map(|c| {
        ConflictType::parse(c).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, ""))
    });
    let types: Vec<ConflictType> = ct.map_or(ConflictType::ALL.to_vec(), |c| vec![c]);
    if ct.is_some() && types.iter().any(|t| !conflict::allowed(*t, res)) {
        let t = types[0];
        let valid: Vec<&str> =
            Resolution::ALL.iter().filter(|r| conflict::allowed(t, **r)).map(|r| r.as_str()).collect();
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("resolution \"{}\" makes no sense for conflict type \"{}\"", res.as_str(), t.as_str()),
            format!("Valid resolutions for {}: {}.", t.as_str(), valid.join(", ")),
        );
    }
    Spi::run_with_args(
        "INSERT INTO logical_ext.conflict_resolution (subscription, relation, conflict_type, resolution) \
         VALUES ($1, $2::oid::regclass, $3, $4) \
         ON CONFLICT (subscription, relation, conflict_type) DO UPDATE SET resolution = EXCLUDED.resolution",
        &[sub.name.as_str().into(), relation.into(), ct.map(|c| c.as_str()).into(), res.as_str().into()],
    )
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    restart_worker(&sub);
}

/// Copy one table of a subscription again: its rows are replaced by a new
/// copy of the publisher's (in one transaction, when the copy is done);
/// until then the table keeps its rows and its changes wait for the copy.
#[pg_extern]
fn resync_table(subscription: &str, relation: pgrx::PgRelation) {
    require_superuser("resynchronize tables");
    let sub = load(subscription);
    let relid = relation.oid();
    let name = relation.name().to_string();
    drop(relation);
    if sub.options.two_phase {
        let e = super::prepared::copy_refused(&sub.name);
        fail(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, e.message, e.hint);
    }
    if !sync_catalog::request_resync(sub.id, relid) {
        fail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("table \"{name}\" is not part of subscription \"{}\"", sub.name),
            format!(
                "Tables added to its publications join with logical_ext.refresh_subscription('{}'); see logical_ext.subscription_tables.",
                sub.name
            ),
        );
    }
    restart_worker(&sub);
}

/// Pick up tables added to (and forget tables removed from) the
/// subscription's publications, like ALTER SUBSCRIPTION ... REFRESH
/// PUBLICATION: new tables are copied (`copy_data`) or applied from now on.
/// Returns how many tables were added.
#[pg_extern]
fn refresh_subscription(name: &str, copy_data: default!(bool, true)) -> i64 {
    require_superuser("refresh subscriptions");
    let sub = load(name);
    if copy_data && sub.options.two_phase {
        let e = super::prepared::copy_refused(&sub.name);
        fail(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, e.message, e.hint);
    }
    let mut conn = connect(&sub.conninfo, &sub.name);
    let tables = published_tables(&mut conn, &sub.publications, copy_data);
    if copy_data && sub.origin == Origin::None {
        warn_foreign_origins(&mut conn, &sub.name, &sub.publications, &subscribed_table_names(sub.id));
    }
    drop(conn);
    sync_catalog::remove_other_tables(sub.id, &tables);
    let added = sync_catalog::add_tables(sub.id, &tables, copy_data);
    restart_worker(&sub);
    added
}

/// Skip exactly the remote transaction that commits at `lsn` (its
/// `remote_commit_lsn` in the conflict log), like ALTER SUBSCRIPTION SKIP.
#[pg_extern]
fn skip_transaction(subscription: &str, lsn: crate::ffi::lsn::Lsn) {
    require_superuser("skip transactions");
    let sub = load(subscription);
    if lsn.0 == 0 {
        fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "invalid LSN 0/0", "");
    }
    Spi::run_with_args("UPDATE logical_ext.subscription SET skip_lsn = $1 WHERE id = $2", &[lsn.into(), sub.id.into()])
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    restart_worker(&sub);
}

/// Accept, once, that the subscription's slot is past this node's progress
/// (the no-silent-gap fence, `slot_fence.rs`, docs/FAILOVER.md): the next
/// start adopts the slot's position — the remote transactions in between
/// are not on this node — records it in `slot_gap_accepted` and refuses
/// again afterwards.
#[pg_extern]
fn accept_slot_gap(subscription: &str) {
    require_superuser("accept a gap in a subscription's stream");
    let sub = load(subscription);
    Spi::run_with_args("UPDATE logical_ext.subscription SET slot_gap = 'accept_once' WHERE id = $1", &[sub.id.into()])
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    restart_worker(&sub);
}

/// Make this subscriber the owner of the subscription's publisher slot:
/// the next start sends `takeover` (docs/FAILOVER.md "Slot ownership";
/// the plugin refuses a slot claimed by another subscriber otherwise).
#[pg_extern]
fn takeover_slot(subscription: &str) {
    require_superuser("take a replication slot over");
    let sub = load(subscription);
    Spi::run_with_args("UPDATE logical_ext.subscription SET slot_takeover = true WHERE id = $1", &[sub.id.into()])
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    restart_worker(&sub);
}

/// Adopt a subscription on this node after a failover (a promoted standby
/// or a restored copy of the subscriber, `slot_owner.rs`): record this
/// node's identity so that the worker starts, and take the slot over.
#[pg_extern]
fn adopt_subscription(subscription: &str) {
    require_superuser("adopt a subscription");
    let sub = load(subscription);
    if crate::ffi::worker::in_recovery() {
        fail(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot adopt a subscription during recovery",
            "Promote this standby first.",
        );
    }
    let here = super::slot_owner::NodeIdentity {
        system_identifier: crate::ffi::worker::system_identifier(),
        timeline: crate::ffi::worker::timeline(),
    };
    Spi::run_with_args(
        "UPDATE logical_ext.subscription SET node_identity = $2, slot_takeover = true WHERE id = $1",
        &[sub.id.into(), here.to_string().into()],
    )
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    restart_worker(&sub);
}

/// The resolution each subscription uses per conflict type: for all tables
/// (`relation` NULL) and for every table that has rules of its own.
#[pg_extern]
fn effective_conflict_resolutions() -> TableIterator<
    'static,
    (
        name!(subscription, String),
        name!(relation, Option<pg_sys::Oid>),
        name!(conflict_type, String),
        name!(resolution, String),
    ),
> {
    let rows = Spi::connect(|c| {
        let subs: Vec<String> = c
            .select("SELECT name FROM logical_ext.subscription ORDER BY name", None, &[])?
            .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for name in subs {
            let rules = super::resolver::load_rules(&name);
            let mut rels: Vec<u32> = rules.iter().filter_map(|r| r.relation).collect();
            rels.sort_unstable();
            rels.dedup();
            for rel in std::iter::once(None).chain(rels.into_iter().map(Some)) {
                for t in ConflictType::ALL {
                    let res = conflict::effective(&rules, rel.unwrap_or(0), t);
                    out.push((
                        name.clone(),
                        rel.map(pg_sys::Oid::from),
                        t.as_str().to_string(),
                        res.as_str().to_string(),
                    ));
                }
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    TableIterator::new(rows)
}

/// The counters of subscription `subid` (created at `created_at`), which
/// survive restarts (`stats.rs`): `subscription_status` shows them.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn subscription_counters(
    subid: i32,
    created_at: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(applied_transactions, i64),
        name!(applied_changes, i64),
        name!(conflicts, Vec<i64>),
        name!(apply_error_count, i64),
        name!(sync_error_count, i64),
        name!(stats_reset, Option<TimestampWithTimeZone>),
    ),
> {
    let c = stats::read(my_database().to_u32(), subid, pg_sys::TimestampTz::from(created_at));
    let reset = Some(c.stats_reset).filter(|&t| t != 0).and_then(|t| TimestampWithTimeZone::try_from(t).ok());
    TableIterator::once((
        c.applied_transactions,
        c.applied_changes,
        c.conflicts.to_vec(),
        c.apply_errors,
        c.sync_errors,
        reset,
    ))
}

/// Zero the counters of subscription `name` (every subscription of this
/// database when NULL) and set their `stats_reset`, as
/// `pg_stat_reset_subscription_stats` does. For superusers and
/// `logical_ext_operator` (SECURITY DEFINER: it reads the subscription
/// records, which the operator cannot).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reset_subscription_stats(name: default!(Option<&str>, "NULL")) {
    let subs = Spi::connect(|c| {
        let rows = c.select(
            "SELECT id, created_at FROM logical_ext.subscription WHERE $1 IS NULL OR name = $1 ORDER BY id",
            None,
            &[name.into()],
        )?;
        rows.map(|r| Ok((r.get::<i32>(1)?.unwrap_or(0), r.get::<TimestampWithTimeZone>(2)?)))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    if let (Some(name), true) = (name, subs.is_empty()) {
        fail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("subscription \"{name}\" does not exist"),
            "See SELECT name FROM logical_ext.subscription_status; NULL resets every subscription of this database.",
        );
    }
    let now = crate::ffi::worker::now_ts();
    for (id, created_at) in subs {
        if let Some(created_at) = created_at {
            stats::reset(my_database().to_u32(), id, pg_sys::TimestampTz::from(created_at), now);
        }
    }
}
