//! The decoder never waits on a lock of a user table. An output plugin
//! decodes changes of tables that a transaction may hold in ACCESS
//! EXCLUSIVE mode meanwhile: the open transaction being streamed itself
//! (`TRUNCATE` in it), or, for a consumer lagging behind, a later
//! `LOCK TABLE` / `ALTER TABLE`. A walsender waiting there sends nothing,
//! keepalives included, until the lock holder ends — forever when it is the
//! streamed transaction, whose commit the subscriber waits for.
//!
//! Each test reads changes through the SQL interface under `lock_timeout`:
//! a decoder that takes a lock on the table fails with `lock_not_available`
//! (55P03) instead of hanging the test.
//! Spec: docs/FORMAT.md, "Streamed transactions"; src/ffi/index_keys.rs.

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;

const CONF: &[&str] = &["logical_decoding_work_mem = 64kB"];

/// A client that gives up waiting for a lock after a few seconds.
fn impatient(cluster: &Cluster) -> Client {
    let mut c = cluster.client();
    exec(&mut c, "SET lock_timeout = '3s'");
    c
}

fn changes_or_lock_wait(c: &mut Client, options: Opts) -> Vec<Change> {
    try_changes(c, false, "s", None, options)
        .unwrap_or_else(|e| panic!("the decoder waited on a lock of a user table: {}", describe_error(&e)))
}

fn count(changes: &[Change], action: &str) -> usize {
    changes.iter().filter(|c| c.action() == action).count()
}

/// The transaction being streamed holds its table in ACCESS EXCLUSIVE mode
/// (TRUNCATE, then more rows than `logical_decoding_work_mem`): its blocks
/// are decoded and sent while it stays open, keys included.
#[test]
fn streamed_transaction_holding_its_table_exclusively() {
    let (cluster, mut c) = plugin_cluster_with("dec_locks_stream", CONF);
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text DEFAULT 'd')");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("TRUNCATE t; INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 5000) g").unwrap();
    let mut other = impatient(&cluster);
    flush_wal(&mut other);
    for options in [
        &[("streaming", Some("on"))][..],
        &[("streaming", Some("on")), ("include-default", Some("on")), ("include-pk", Some("on"))][..],
    ] {
        let open = changes_or_lock_wait(&mut other, options);
        assert!(count(&open, "S") >= 1 && count(&open, "I") > 1000, "blocks of the open transaction:\n{}", dump(&open));
    }
    let with_keys = changes_or_lock_wait(&mut other, &[("streaming", Some("on")), ("include-pk", Some("on"))]);
    let insert = with_keys.iter().find(|c| c.action() == "I").unwrap();
    assert_eq!(insert.doc["pk"][0]["name"], "id", "the primary key is still known: {}", insert.data);
    tx.rollback().unwrap();
}

/// A consumer behind: committed rows of a table (with a primary key) that
/// another transaction now holds, with its indexes, in ACCESS EXCLUSIVE
/// mode (an open TRUNCATE; `LOCK TABLE` would not lock the index) are
/// decoded.
#[test]
fn lagging_consumer_and_a_locked_table_with_a_key() {
    let (cluster, mut c) = plugin_cluster_with("dec_locks_lag_key", CONF);
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    exec(&mut c, "INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("TRUNCATE t").unwrap();
    let mut other = impatient(&cluster);
    let got = changes_or_lock_wait(&mut other, &[("include-pk", Some("on"))]);
    assert_eq!(count(&got, "I"), 2, "{}", dump(&got));
    assert_eq!(got.iter().find(|c| c.action() == "I").unwrap().doc["pk"][0]["name"], "id");
    tx.rollback().unwrap();
}

/// `include-default` prints the defaults without opening the table (a
/// table without indexes: only the default's deparsing could lock it).
#[test]
fn lagging_consumer_include_default_and_a_locked_table() {
    let (cluster, mut c) = plugin_cluster_with("dec_locks_lag_default", CONF);
    exec(
        &mut c,
        "CREATE TABLE t (id int, v text DEFAULT 'x' || 'y', n numeric DEFAULT 42.5, ts timestamptz DEFAULT now())",
    );
    exec(&mut c, "INSERT INTO t (id) VALUES (1)");
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE").unwrap();
    let mut other = impatient(&cluster);
    let got = changes_or_lock_wait(&mut other, &[("include-default", Some("on"))]);
    let insert = got.iter().find(|c| c.action() == "I").unwrap_or_else(|| panic!("{}", dump(&got)));
    let defaults: Vec<_> = insert.doc["columns"].as_array().unwrap().iter().map(|c| c["default"].clone()).collect();
    assert_eq!(
        defaults,
        [serde_json::Value::Null, "('x'::text || 'y'::text)".into(), "42.5".into(), "now()".into()],
        "{}",
        insert.data
    );
    tx.rollback().unwrap();
}
