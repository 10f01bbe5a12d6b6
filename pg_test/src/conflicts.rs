//! Helpers for the conflict tests (`tests/conflict_*.rs`): publisher
//! transactions whose commit LSN and timestamp are known exactly (to compare
//! with `logical_ext.conflict_log`), the conflict log and the per-type
//! counters of `subscription_status`, subscriptions between any two clusters
//! (bidirectional setups), and the server log's retry lines.
//!
//! The commit LSN of a publisher transaction is found with `pg_walinspect`
//! (contrib, PostgreSQL 15): the start of the COMMIT record of its xid, which
//! is what the `logical_ext` plugin sends as the `lsn` of `B`/`C` documents
//! (`ReorderBufferTXN.final_lsn`) and what `skip_transaction` takes.

use crate::replication::{CATCH_UP, format_lsn, try_client, wait_or_explain};
use crate::{Client, Cluster, describe_error, parse_lsn};
use serde_json::Value;
use std::time::Duration;

/// The conflict types, in the order of the `conflicts_*` columns of
/// `logical_ext.subscription_status`.
pub const CONFLICT_TYPES: [&str; 6] = [
    "insert_exists",
    "update_exists",
    "update_missing",
    "delete_missing",
    "update_origin_differs",
    "delete_origin_differs",
];

/// Every resolution.
pub const RESOLUTIONS: [&str; 6] =
    ["error", "apply_remote", "keep_local", "skip", "last_update_wins", "first_update_wins"];

/// Whether the spec allows `resolution` for `conflict_type`: with no local
/// row (`*_missing`) there is no timestamp to compare, and a missing row
/// cannot be deleted (this is the test's own statement of the rule).
pub fn allowed(conflict_type: &str, resolution: &str) -> bool {
    match conflict_type {
        "update_missing" => matches!(resolution, "error" | "apply_remote" | "keep_local" | "skip"),
        "delete_missing" => matches!(resolution, "error" | "keep_local" | "skip"),
        _ => true,
    }
}

/// A committed publisher transaction, as the subscriber should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTxn {
    pub xid: String,
    /// Start of its COMMIT record (`X/Y`).
    pub commit_lsn: String,
    /// `pg_xact_commit_timestamp(xid)::text` (the clusters run in UTC).
    pub commit_ts: String,
}

/// Runs `sql` in one transaction on `cluster` and returns its xid, commit
/// LSN and commit timestamp. Installs `pg_walinspect` there if needed.
pub fn commit_traced(cluster: &Cluster, sql: &str) -> RemoteTxn {
    let mut c = cluster.client();
    crate::exec(&mut c, "CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    let before: String = c.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).expect("insert lsn").get(0);
    let mut tx = c.transaction().expect("BEGIN");
    if let Err(e) = tx.batch_execute(sql) {
        panic!("SQL failed: {}\n--- SQL:\n{sql}", describe_error(&e));
    }
    let xid: String = tx.query_one("SELECT pg_current_xact_id()::xid::text", &[]).expect("xid").get(0);
    tx.commit().expect("COMMIT");
    let row = c
        .query_one(
            "SELECT r.start_lsn::text, pg_xact_commit_timestamp($1::text::xid)::text \
             FROM pg_get_wal_records_info($2::text::pg_lsn, pg_current_wal_flush_lsn()) r \
             WHERE r.resource_manager = 'Transaction' AND r.record_type = 'COMMIT' AND r.xid = $1::text::xid",
            &[&xid, &before],
        )
        .unwrap_or_else(|e| panic!("finding the COMMIT record of xid {xid}: {}", describe_error(&e)));
    RemoteTxn { xid, commit_lsn: row.get(0), commit_ts: row.get(1) }
}

/// `lsn` + `delta` bytes, as `X/Y` text.
pub fn lsn_plus(lsn: &str, delta: u64) -> String {
    format_lsn(parse_lsn(lsn) + delta)
}

/// One row of `logical_ext.conflict_log` (timestamps and LSN as text).
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub id: i64,
    pub subscription: String,
    pub relation: String,
    pub conflict_type: String,
    pub resolution: String,
    pub local_tuple: Option<Value>,
    pub remote_tuple: Option<Value>,
    pub remote_origin: Option<String>,
    pub remote_commit_lsn: Option<String>,
    pub remote_commit_ts: Option<String>,
    pub local_commit_ts: Option<String>,
    pub local_origin: Option<String>,
    /// The xid that wrote the log row.
    pub xmin: String,
}

fn parse_json(s: Option<String>) -> Option<Value> {
    s.map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad jsonb text {t:?}: {e}")))
}

/// The conflict log rows matching `filter` (an SQL condition, `true` for
/// all), in id order.
pub fn conflict_log(client: &mut Client, filter: &str) -> Vec<LogRow> {
    let sql = format!(
        "SELECT id, subscription, relation, conflict_type, resolution, local_tuple::text, remote_tuple::text, \
         remote_origin, remote_commit_lsn::text, remote_commit_ts::text, local_commit_ts::text, local_origin, \
         xmin::text FROM logical_ext.conflict_log WHERE {filter} ORDER BY id"
    );
    let rows = client.query(&sql, &[]).unwrap_or_else(|e| panic!("reading the conflict log: {}", describe_error(&e)));
    rows.iter()
        .map(|r| LogRow {
            id: r.get(0),
            subscription: r.get(1),
            relation: r.get(2),
            conflict_type: r.get(3),
            resolution: r.get(4),
            local_tuple: parse_json(r.get(5)),
            remote_tuple: parse_json(r.get(6)),
            remote_origin: r.get(7),
            remote_commit_lsn: r.get(8),
            remote_commit_ts: r.get(9),
            local_commit_ts: r.get(10),
            local_origin: r.get(11),
            xmin: r.get(12),
        })
        .collect()
}

/// The subscription's `conflicts_*` counters, in [`CONFLICT_TYPES`] order.
pub fn conflict_counters(cluster: &Cluster, subscription: &str) -> [i64; 6] {
    let mut c = cluster.client();
    let r = c
        .query_one(
            "SELECT conflicts_insert_exists, conflicts_update_exists, conflicts_update_missing, \
             conflicts_delete_missing, conflicts_update_origin_differs, conflicts_delete_origin_differs \
             FROM logical_ext.subscription_status WHERE name = $1",
            &[&subscription],
        )
        .unwrap_or_else(|e| panic!("counters of {subscription}: {}", describe_error(&e)));
    std::array::from_fn(|i| r.get(i))
}

/// Number of conflict log rows per type for `subscription`, in
/// [`CONFLICT_TYPES`] order.
pub fn log_counts(cluster: &Cluster, subscription: &str) -> [i64; 6] {
    let mut c = cluster.client();
    std::array::from_fn(|i| {
        c.query_one(
            "SELECT count(*) FROM logical_ext.conflict_log WHERE subscription = $1 AND conflict_type = $2",
            &[&subscription, &CONFLICT_TYPES[i]],
        )
        .expect("count conflict log")
        .get(0)
    })
}

/// Replication connection string to `cluster` (no application_name).
pub fn replication_conninfo(cluster: &Cluster) -> String {
    format!("host=127.0.0.1 port={} user=postgres dbname=postgres", cluster.port())
}

/// `logical_ext.create_subscription` on `on`, streaming from `from`, with
/// `copy_data => false`, the given `origin` and `options` (JSON text).
pub fn create_subscription(
    on: &Cluster,
    name: &str,
    from: &Cluster,
    publications: &[&str],
    origin: &str,
    options: &str,
) {
    let pubs: Vec<String> = publications.iter().map(|s| s.to_string()).collect();
    let sql = "SELECT logical_ext.create_subscription(name => $1::text, conninfo => $2::text, \
               publications => $3::text[], copy_data => false, origin => $4::text, options => $5::text::jsonb)";
    let mut c = on.client();
    if let Err(e) = c.execute(sql, &[&name, &replication_conninfo(from), &pubs, &origin, &options]) {
        panic!("create_subscription({name}) on {} failed: {}", on.name(), describe_error(&e));
    }
}

/// `state` and `worker_pid` of a subscription on `cluster`.
pub fn state_of(cluster: &Cluster, name: &str) -> Option<(String, Option<i32>, i64)> {
    let mut c = try_client(cluster).ok()?;
    let r = c
        .query_opt(
            "SELECT state, worker_pid, applied_transactions FROM logical_ext.subscription_status WHERE name = $1",
            &[&name],
        )
        .ok()??;
    Some((r.get(0), r.get(1), r.get(2)))
}

/// Waits until the subscription `name` on `subscriber` streams.
pub fn wait_streaming_on(subscriber: &Cluster, name: &str) {
    wait_or_explain(
        CATCH_UP,
        &format!("subscription {name} on {} streams", subscriber.name()),
        || matches!(state_of(subscriber, name), Some((s, Some(_), _)) if s == "streaming"),
        || format!("status: {:?}\n--- log:\n{}", state_of(subscriber, name), subscriber.log_tail(30)),
    );
}

/// Waits until the slot `slot` on `publisher` confirms `publisher`'s WAL
/// flush position as of this call (the subscriber applied and flushed
/// everything committed there before).
pub fn wait_caught_up_between(publisher: &Cluster, subscriber: &Cluster, slot: &str) {
    let target: String =
        publisher.client().query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).expect("flush lsn").get(0);
    let target = parse_lsn(&target);
    let confirmed = || -> Option<u64> {
        let mut c = try_client(publisher).ok()?;
        let r = c
            .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .ok()??;
        r.get::<_, Option<String>>(0).map(|s| parse_lsn(&s))
    };
    wait_or_explain(
        CATCH_UP,
        &format!("slot {slot} on {} confirms {}", publisher.name(), format_lsn(target)),
        || confirmed().is_some_and(|c| c >= target),
        || {
            format!(
                "confirmed: {:?}\n--- subscriber {} log:\n{}\n--- publisher {} log:\n{}",
                confirmed().map(format_lsn),
                subscriber.name(),
                subscriber.log_tail(30),
                publisher.name(),
                publisher.log_tail(15)
            )
        },
    );
}

/// The rows of `select` as text (`t::text` of each row), in its order.
pub fn rows_text(client: &mut Client, select: &str) -> Vec<String> {
    let sql = format!("SELECT t::text FROM ({select}) t");
    client
        .query(&sql, &[])
        .unwrap_or_else(|e| panic!("SQL failed: {}\n--- SQL:\n{sql}", describe_error(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The id of the subscription `name` on `cluster`.
pub fn subscription_id(cluster: &Cluster, name: &str) -> i32 {
    cluster
        .client()
        .query_one("SELECT id FROM logical_ext.subscription WHERE name = $1", &[&name])
        .unwrap_or_else(|e| panic!("id of {name}: {}", describe_error(&e)))
        .get(0)
}

/// One "retrying in" line of an apply worker in the server log: the log
/// timestamp (ms since midnight, from `%m`) and the announced delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub at_ms: u64,
    pub delay: Duration,
}

/// Parses a `Duration`'s `Debug` text as the worker logs it (`50ms`,
/// `1.6s`, `30s`, `500µs`).
pub fn parse_debug_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.find(|c: char| c.is_ascii_alphabetic() || c == 'µ').map(|i| s.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// The "retrying in" lines (LOG) of the apply worker of subscription
/// `subid`. The harness's `log_min_messages = warning` keeps them: for the
/// server log LOG ranks above WARNING (and `log_min_messages = log` would
/// drop WARNINGs).
pub fn retries(cluster: &Cluster, subid: i32) -> Vec<Retry> {
    let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    let needle = format!("apply worker for subscription {subid}: ");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let delay = parse_debug_duration(l.rsplit_once("retrying in ")?.1.trim())?;
            // "2026-11-22 10:00:00.123 UTC [pid] ..."
            let time = l.split_whitespace().nth(1)?;
            let (hms, ms) = time.split_once('.')?;
            let mut p = hms.split(':').map(|x| x.parse::<u64>().ok());
            let (h, m, s) = (p.next()??, p.next()??, p.next()??);
            Some(Retry { at_ms: ((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?, delay })
        })
        .collect()
}

/// Lines of the server log containing `needle`.
pub fn log_lines(cluster: &Cluster, needle: &str) -> Vec<String> {
    let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    log.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// The line after each line containing `needle` (e.g. a message's HINT).
pub fn log_lines_after(cluster: &Cluster, needle: &str) -> Vec<String> {
    let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines.windows(2).filter(|w| w[0].contains(needle)).map(|w| w[1].to_string()).collect()
}

/// Columns of the tables the [`scenario`]s use: a key, a nullable unique
/// column (for update_exists) and a value.
pub const SCENARIO_COLUMNS: &str = "(id int PRIMARY KEY, u text UNIQUE, v text)";

/// How to provoke one conflict type on row `key` of a table with
/// [`SCENARIO_COLUMNS`], and what the conflict log must then say.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Publisher SQL creating the replicated starting row (None: no row).
    pub base: Option<String>,
    /// Subscriber SQL: the local write that sets the conflict up.
    pub local: String,
    /// Publisher SQL: the remote change that meets it.
    pub remote: String,
    /// The id of the local row the conflict is about (None: missing row).
    pub local_id: Option<i32>,
    /// `local_tuple` in the log: every column as text.
    pub local_tuple: Option<Value>,
    /// `remote_tuple` in the log: the sent columns as JSON values (the new
    /// row of INSERT/UPDATE, the key of DELETE).
    pub remote_tuple: Value,
}

/// The [`Scenario`] for `conflict_type` on row `key` of `table`. For
/// update_exists the local row in the way is `key + 100` holding
/// `u = 'ue<key>'`.
pub fn scenario(conflict_type: &str, table: &str, key: i32) -> Scenario {
    use serde_json::json;
    let k = key;
    let base = Some(format!("INSERT INTO {table} VALUES ({k}, NULL, 'base')"));
    let local_row = Some(json!({"id": k.to_string(), "u": null, "v": "local"}));
    let remote_row = json!({"id": k, "u": null, "v": "remote"});
    match conflict_type {
        "insert_exists" => Scenario {
            base: None,
            local: format!("INSERT INTO {table} VALUES ({k}, NULL, 'local')"),
            remote: format!("INSERT INTO {table} VALUES ({k}, NULL, 'remote')"),
            local_id: Some(k),
            local_tuple: local_row,
            remote_tuple: remote_row,
        },
        "update_exists" => Scenario {
            base,
            local: format!("INSERT INTO {table} VALUES ({}, 'ue{k}', 'local')", k + 100),
            remote: format!("UPDATE {table} SET u = 'ue{k}', v = 'remote' WHERE id = {k}"),
            local_id: Some(k + 100),
            local_tuple: Some(json!({"id": (k + 100).to_string(), "u": format!("ue{k}"), "v": "local"})),
            remote_tuple: json!({"id": k, "u": format!("ue{k}"), "v": "remote"}),
        },
        "update_missing" => Scenario {
            base,
            local: format!("DELETE FROM {table} WHERE id = {k}"),
            remote: format!("UPDATE {table} SET v = 'remote' WHERE id = {k}"),
            local_id: None,
            local_tuple: None,
            remote_tuple: remote_row,
        },
        "delete_missing" => Scenario {
            base,
            local: format!("DELETE FROM {table} WHERE id = {k}"),
            remote: format!("DELETE FROM {table} WHERE id = {k}"),
            local_id: None,
            local_tuple: None,
            remote_tuple: json!({"id": k}),
        },
        "update_origin_differs" => Scenario {
            base,
            local: format!("UPDATE {table} SET v = 'local' WHERE id = {k}"),
            remote: format!("UPDATE {table} SET v = 'remote' WHERE id = {k}"),
            local_id: Some(k),
            local_tuple: local_row,
            remote_tuple: remote_row,
        },
        "delete_origin_differs" => Scenario {
            base,
            local: format!("UPDATE {table} SET v = 'local' WHERE id = {k}"),
            remote: format!("DELETE FROM {table} WHERE id = {k}"),
            local_id: Some(k),
            local_tuple: local_row,
            remote_tuple: json!({"id": k}),
        },
        other => panic!("unknown conflict type {other}"),
    }
}

/// `pg_xact_commit_timestamp(xmin)::text` of row `id` of `table` (None:
/// no such row).
pub fn row_commit_ts(client: &mut Client, table: &str, id: i32) -> Option<String> {
    let sql = format!("SELECT pg_xact_commit_timestamp(xmin)::text FROM {table} WHERE id = $1");
    client
        .query_opt(&sql, &[&id])
        .unwrap_or_else(|e| panic!("commit ts of {table}.{id}: {}", describe_error(&e)))
        .map(|r| r.get(0))
}

/// `a < b` for two timestamptz texts (compared by the server).
pub fn ts_before(client: &mut Client, a: &str, b: &str) -> bool {
    client
        .query_one("SELECT $1::text::timestamptz < $2::text::timestamptz", &[&a, &b])
        .expect("compare timestamps")
        .get(0)
}
