//! Apply errors show in `logical_ext.subscription_status` and are retried:
//! a table missing on the subscriber (state 'error', last_error names it;
//! once created, the rows arrive), a missing column (last_error names table
//! and column). Dropping a subscription whose publisher is unreachable fails
//! with a hint; `drop_slot => false` then works.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

#[test]
fn apply_errors_are_reported_and_retried() {
    let mut pair = Pair::start("apply_errors");
    pair.pub_exec(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text, w int);
         CREATE PUBLICATION p FOR ALL TABLES;",
    );
    // The subscriber has no table a, and b lacks column w.
    pair.sub_exec("CREATE TABLE b (id int PRIMARY KEY, v text)");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");

    // Missing table.
    pair.pub_exec("INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 100) g");
    let st = pair.wait_status("s", "state 'error' about table a", |s| s.state == "error");
    let err = st.last_error.clone().unwrap_or_default();
    assert!(err.contains("\"public.a\""), "last_error does not name the table: {st:#?}");
    assert!(st.last_error_time.is_some(), "{st:#?}");
    assert!(st.worker_pid.is_some(), "the worker keeps retrying: {st:#?}");
    // The transaction is retried, not skipped: once the table exists the
    // rows arrive (once), and the error is cleared.
    pair.sub_exec("CREATE TABLE a (id int PRIMARY KEY, v text)");
    pair.wait_sub_count("s", "a", 100);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["a"]);
    let st = pair.wait_status("s", "streaming without an error", |s| s.state == "streaming" && s.last_error.is_none());
    assert!(st.applied_changes >= 100, "{st:#?}");

    // Missing column; a later transaction on another table waits behind it.
    pair.pub_exec("INSERT INTO b SELECT g, 'b' || g, g * 10 FROM generate_series(1, 50) g");
    pair.pub_exec("INSERT INTO a VALUES (101, 'after b')");
    let st = pair.wait_status("s", "state 'error' about column w", |s| s.state == "error");
    let err = st.last_error.clone().unwrap_or_default();
    assert!(err.contains("\"public.b\"") && err.contains("\"w\""), "last_error must name table and column: {st:#?}");
    assert_eq!(count(&mut pair.sub_client(), "a"), 100, "a transaction after the failing one was applied");
    assert_eq!(count(&mut pair.sub_client(), "b"), 0);
    pair.sub_exec("ALTER TABLE b ADD COLUMN w int");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["a", "b"]);
    pair.wait_status("s", "streaming without an error", |s| s.state == "streaming" && s.last_error.is_none());

    // Drop while the publisher is down: a clear error with a hint, nothing
    // dropped; then drop_slot => false drops the local side.
    pair.publisher.stop_with("fast");
    let mut sub = pair.sub_client();
    let (code, msg, hint) = expect_error(&mut sub, "SELECT logical_ext.drop_subscription('s')");
    assert_eq!(code, "08006", "{msg}");
    assert!(msg.contains("could not connect to the publisher") && msg.contains("\"s\""), "{msg}");
    assert!(hint.contains("drop_slot => false"), "hint: {hint:?}");
    assert_eq!(count(&mut sub, "logical_ext.subscription"), 1, "the failed drop removed the subscription");
    assert_eq!(count(&mut sub, "pg_replication_origin"), 1, "the failed drop removed the origin");
    // The failed drop stopped the worker only for its own transaction.
    pair.wait_status("s", "a worker again after the failed drop", |s| s.worker_pid.is_some());
    exec(&mut sub, "SELECT logical_ext.drop_subscription('s', drop_slot => false)");
    assert_eq!(count(&mut sub, "logical_ext.subscription"), 0);
    assert_eq!(count(&mut sub, "pg_replication_origin"), 0);
    assert_eq!(count(&mut sub, "pg_stat_activity WHERE backend_type = 'logical_ext apply'"), 0);
    // The slot was left on the publisher, as asked.
    pair.publisher.restart();
    assert_eq!(count(&mut pair.pub_client(), "pg_replication_slots WHERE slot_name = 's'"), 1);
}
