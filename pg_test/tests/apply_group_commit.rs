//! Group commit (issue 14, src/apply/worker/grouping.rs): consecutive small
//! remote transactions already received are applied in one local
//! transaction, and nothing else changes.
//!
//! `a_backlog_is_applied_in_groups_exactly`: 2,000 small transactions (an
//! UPDATE of one of ten counters, an INSERT into a history table without
//! key, so a duplicate would show) queued while the subscription is
//! disabled, then caught up: the tables equal the publisher's, every remote
//! transaction is counted, no conflict is seen (members update rows an
//! earlier member of the same local transaction wrote: that is this
//! origin's own write), and the history rows carry far fewer distinct
//! `xmin`s than remote transactions — the local commits were grouped.
//! With `{"group_commit": false}`, and with grouping on again but a
//! `last_update_wins` rule, a backlog is applied with one local
//! transaction per remote one (as many `xmin`s as transactions). A TRUNCATE
//! in the middle of a grouped backlog ends its group and leaves exactly the
//! rows after it.
//!
//! `a_failing_member_is_named_exactly`: 20 transactions, all received
//! before the worker applies the first (a local lock holds it until the
//! walsender has sent them), the 5th colliding with a local row
//! (`insert_exists`, resolution `error`, `disable_on_error`): the group
//! fails once, silently, is replayed one by one, and the one failure
//! reported — conflict record, last_error, the disabling — is exactly the
//! 5th transaction's, with the four before it applied (and applied once);
//! skip_transaction of it then applies the 15 after it. (Reporting the
//! group's failure instead leaves the four unapplied: the test fails.)
//!
//! `a_crash_during_a_grouped_catch_up_loses_and_duplicates_nothing`: the
//! subscriber is killed (`kill -9` of the apply worker: a crash restart)
//! in the middle of a grouped catch-up; afterwards the tables are exactly
//! the publisher's.

use logical_ext_pg_test::conflicts::*;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::{exec, query_string};

const TABLES: &str = "CREATE TABLE acc (id int PRIMARY KEY, n int NOT NULL);
     CREATE TABLE hist (txn int NOT NULL, note text);";

/// Small transactions `from..=to` on the publisher, one per loop turn.
fn small_transactions(pair: &Pair, from: i32, to: i32) {
    pair.pub_exec(&format!(
        "DO $$ BEGIN FOR i IN {from}..{to} LOOP
             UPDATE acc SET n = n + 1 WHERE id = i % 10;
             INSERT INTO hist VALUES (i, 'r' || i);
             COMMIT;
         END LOOP; END $$"
    ));
}

/// Distinct local transactions that wrote the history rows `from..=to`.
fn local_xids(pair: &Pair, from: i32, to: i32) -> i64 {
    pair.sub_client()
        .query_one("SELECT count(DISTINCT xmin::text) FROM hist WHERE txn BETWEEN $1 AND $2", &[&from, &to])
        .expect("counting xmins")
        .get(0)
}

fn disable(pair: &Pair) {
    pair.sub_exec("SELECT logical_ext.disable_subscription('s')");
    pair.wait_status("s", "disabled", |s| s.worker_pid.is_none() && !s.enabled);
}

fn enable(pair: &Pair) {
    pair.sub_exec("SELECT logical_ext.enable_subscription('s')");
}

/// Tables and a streaming subscription `s`; the counters come through it
/// (rows this origin wrote, so their updates are no conflict).
fn start(name: &str, options: &str) -> Pair {
    let pair = Pair::start(name);
    pair.both_exec(TABLES);
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE acc, hist");
    create_subscription(&pair.subscriber, "s", &pair.publisher, &["p"], "any", options);
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO acc SELECT g, 0 FROM generate_series(0, 9) g");
    pair.wait_caught_up("s");
    pair
}

/// Queue `from..=to` while `s` is disabled, then catch up; returns how
/// many local transactions applied them.
fn backlog(pair: &Pair, from: i32, to: i32) -> i64 {
    disable(pair);
    small_transactions(pair, from, to);
    let before = pair.status("s").applied_transactions;
    enable(pair);
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM acc", "id");
    pair.assert_same("SELECT * FROM hist", "txn, note");
    let st = pair.status("s");
    assert_eq!(
        st.applied_transactions - before,
        i64::from(to - from + 1),
        "every remote transaction is counted once: {st:#?}"
    );
    local_xids(pair, from, to)
}

#[test]
fn a_backlog_is_applied_in_groups_exactly() {
    let pair = start("group_commit", FAST_RETRY);
    let mut sub = pair.sub_client();

    let grouped = backlog(&pair, 1, 2000);
    assert!(grouped <= 1500, "2000 remote transactions in {grouped} local ones: not grouped");
    assert!(grouped >= 20, "at most 100 remote transactions per local one, got {grouped} local ones");
    assert_eq!(conflict_counters(&pair.subscriber, "s"), [0; 6], "rows written earlier in the group are our own");
    assert_eq!(count(&mut sub, "logical_ext.conflict_log"), 0);
    let st = pair.status("s");
    assert!(st.last_error.is_none(), "{st:#?}");

    // Off: one local transaction per remote one.
    pair.sub_exec(r#"SELECT logical_ext.alter_subscription('s', '{"group_commit": false}')"#);
    assert_eq!(backlog(&pair, 2001, 2300), 300, "group_commit off: one local commit per remote transaction");

    // On again, but a resolution that compares commit times: no grouping.
    pair.sub_exec(r#"SELECT logical_ext.alter_subscription('s', '{"group_commit": null}')"#);
    pair.sub_exec("SELECT logical_ext.set_conflict_resolution('s', 'last_update_wins', 'update_origin_differs')");
    assert_eq!(backlog(&pair, 2301, 2600), 300, "last_update_wins: one local commit per remote transaction");

    // Without the rule it groups again.
    pair.sub_exec("DELETE FROM logical_ext.conflict_resolution WHERE subscription = 's'");
    let again = backlog(&pair, 2601, 3600);
    assert!(again <= 750, "1000 remote transactions in {again} local ones: not grouped again");
    assert_eq!(conflict_counters(&pair.subscriber, "s"), [0; 6]);

    // A TRUNCATE in the middle of a grouped backlog ends its group; the rows
    // before and after it land as on the publisher.
    disable(&pair);
    small_transactions(&pair, 3601, 3800);
    pair.pub_exec("TRUNCATE hist");
    small_transactions(&pair, 3801, 4000);
    enable(&pair);
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM acc", "id");
    pair.assert_same("SELECT * FROM hist", "txn, note");
    assert_eq!(count(&mut sub, "hist"), 200);
    assert!(local_xids(&pair, 3801, 4000) < 150, "grouped after the TRUNCATE");
}

#[test]
fn a_failing_member_is_named_exactly() {
    let pair = start("group_commit_fail", r#"{"disable_on_error": true, "retry_min_delay_ms": 100}"#);
    let mut sub = pair.sub_client();
    disable(&pair);
    let txns: Vec<RemoteTxn> = (1..=20)
        .map(|i| {
            commit_traced(
                &pair.publisher,
                &format!("INSERT INTO acc VALUES ({}, {i}); INSERT INTO hist VALUES ({i}, 'r{i}')", 100 + i),
            )
        })
        .collect();
    let bad = &txns[4];
    pair.sub_exec("INSERT INTO acc VALUES (105, -1)");
    // All 20 are received before the worker applies the first (it waits
    // for a lock meanwhile), so they come in one group, whatever the load.
    let sent_through = query_string(&mut pair.pub_client(), "SELECT pg_current_wal_flush_lsn()::text");
    let mut locker = pair.sub_client();
    exec(&mut locker, "BEGIN; LOCK TABLE acc IN SHARE MODE");
    enable(&pair);
    wait_or_explain(
        CATCH_UP,
        "the worker waits for the lock with the whole backlog sent",
        || {
            let mut p = pair.pub_client();
            let sent: bool = p
                .query_one(
                    "SELECT coalesce(bool_or(sent_lsn >= $1::text::pg_lsn), false) FROM pg_stat_replication \
                     WHERE application_name = 's'",
                    &[&sent_through],
                )
                .expect("pg_stat_replication")
                .get(0);
            sent && count(
                &mut pair.sub_client(),
                "pg_stat_activity WHERE backend_type = 'logical_ext apply' AND wait_event_type = 'Lock'",
            ) == 1
        },
        || pair.explain("s"),
    );
    exec(&mut locker, "COMMIT");
    let st = pair.wait_status("s", "disabled by the conflict", |s| !s.enabled && s.worker_pid.is_none());
    assert!(
        st.last_error.as_deref().is_some_and(|e| e.contains("insert_exists") && e.contains(&bad.commit_lsn)),
        "last_error must name the 5th transaction ({}): {st:#?}",
        bad.commit_lsn
    );
    let log = conflict_log(&mut sub, "subscription = 's'");
    assert_eq!(log.len(), 1, "one failure is reported, the 5th transaction's: {log:#?}");
    assert_eq!(
        (log[0].conflict_type.as_str(), log[0].resolution.as_str(), log[0].remote_commit_lsn.as_deref()),
        ("insert_exists", "error", Some(bad.commit_lsn.as_str())),
        "{log:#?}"
    );
    assert_eq!(
        rows_text(&mut sub, "SELECT txn FROM hist WHERE txn > 0 ORDER BY txn"),
        ["(1)", "(2)", "(3)", "(4)"],
        "the transactions before the failing one are applied, once"
    );
    // The failure happened in a group (the path under test), and after it
    // the transactions were applied one by one through the failing one
    // (`solo_through`): the group failed once, silently.
    assert_eq!(
        log_lines(&pair.subscriber, "remote transactions failed").len(),
        1,
        "one failed group, then one by one:\n{}",
        pair.subscriber.log_tail(30)
    );

    pair.sub_exec(&format!("SELECT logical_ext.skip_transaction('s', '{}')", bad.commit_lsn));
    enable(&pair);
    pair.wait_caught_up("s");
    let expected: Vec<String> = (1..=20).filter(|&i| i != 5).map(|i| format!("({i})")).collect();
    assert_eq!(rows_text(&mut sub, "SELECT txn FROM hist WHERE txn > 0 ORDER BY txn"), expected);
    assert_eq!(rows_text(&mut sub, "SELECT n FROM acc WHERE id = 105"), ["(-1)"], "the skipped row is not applied");
    assert_eq!(count(&mut sub, "acc WHERE id > 100"), 20);
    assert_eq!(count(&mut sub, "logical_ext.conflict_log"), 1);
    let st = pair.wait_status("s", "streaming", |s| s.state == "streaming");
    assert!(st.last_error.is_none(), "{st:#?}");
}

#[test]
fn a_crash_during_a_grouped_catch_up_loses_and_duplicates_nothing() {
    let pair = start("group_commit_crash", FAST_RETRY);
    disable(&pair);
    small_transactions(&pair, 1, 30_000);
    enable(&pair);
    let pid = pair.wait_status("s", "a worker", |s| s.worker_pid.is_some()).worker_pid.unwrap();
    wait_or_explain(
        CATCH_UP,
        "the catch-up is under way",
        || count(&mut pair.sub_client(), "hist") >= 2000,
        || pair.explain("s"),
    );
    assert!(count(&mut pair.sub_client(), "hist") < 30_000, "the catch-up ended before the crash");
    pair.subscriber.kill9_and_wait_crash_restart(&[pid]);
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM acc", "id");
    pair.assert_same("SELECT * FROM hist", "txn, note");
    let dups = count(&mut pair.sub_client(), "(SELECT txn FROM hist GROUP BY txn HAVING count(*) > 1) d");
    assert_eq!(dups, 0, "a remote transaction applied twice");
    assert!(local_xids(&pair, 1, 30_000) < 22_500, "the catch-up was grouped");
}
