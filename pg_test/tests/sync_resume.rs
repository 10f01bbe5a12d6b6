//! A copy that dies is done again from scratch, per table, with no
//! duplicate: a sync worker terminated in the middle of the initial copy
//! (it restarts with the still-exported snapshot), and a subscriber
//! restarted in the middle of a copy while the publisher keeps writing (the
//! table gets a snapshot of its own and catches up with the stream).
//! Progress (rows, bytes) shows in `subscription_tables` while copying.
//! Dropping the subscription mid-copy stops the copy and leaves nothing.

use logical_ext_pg_test::background::{Background, wait_with_load};
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;

const ROWS: i64 = 600_000;

fn start(name: &str) -> Pair {
    let pair = Pair::start(name);
    pair.both_exec(
        "CREATE TABLE big (id bigint PRIMARY KEY, k int, t text, f float8); \
         CREATE TABLE events (id bigserial PRIMARY KEY, big_id bigint, at timestamptz DEFAULT now())",
    );
    pair.pub_exec(&format!(
        "INSERT INTO big SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text), g / 3.0 FROM generate_series(1, {ROWS}) g"
    ));
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair
}

/// Waits until `big` is being copied and its progress shows; returns it.
fn wait_copying_with_progress(pair: &Pair) -> TableState {
    let states = wait_tables(pair, "s", "big is copying with rows_copied > 0", |t| {
        t.iter().any(|t| t.relation == "big" && t.state == "copying" && t.rows_copied > 0 && t.bytes_copied > 0)
    });
    let big = table(&states, "big").clone();
    assert!(big.rows_copied < ROWS, "{big:#?}");
    big
}

/// pgbench updating `big` and inserting `events` on the publisher until
/// stopped (its stderr kept, for when it dies early).
fn writer(pair: &Pair) -> Background {
    let script = pair.publisher.dir().join("writer.sql");
    std::fs::write(
        &script,
        format!(
            "\\set id random(1, {ROWS})\nBEGIN;\nUPDATE big SET k = k + 1, t = 'w' WHERE id = :id;\n\
             INSERT INTO events (big_id) VALUES (:id);\nCOMMIT;\n"
        ),
    )
    .unwrap();
    let script = script.display().to_string();
    Background::pgbench(&pair.publisher, &["-c", "2", "-j", "2", "-T", "900", "-f", &script])
}

#[test]
fn sync_worker_terminated_mid_copy_starts_over() {
    let pair = start("sync_kill");
    subscribe_copy(&pair, "s", &["p"], "");
    let first = wait_copying_with_progress(&pair);
    let pids = sync_worker_pids(&pair);
    assert!(!pids.is_empty(), "{first:#?}");
    let mut c = pair.sub_client();
    for pid in &pids {
        exec(&mut c, &format!("SELECT pg_terminate_backend({pid})"));
    }
    let states = wait_all_ready(&pair, "s");
    assert_eq!(table(&states, "big").rows_copied, ROWS, "the new copy moved every row once: {states:#?}");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big", "events"]);
    let log = std::fs::read_to_string(pair.subscriber.log_path()).unwrap();
    assert!(log.contains("copy of table") && log.contains("stopped"), "no sign of the terminated copy in the log");
    pair.pub_exec("UPDATE big SET k = 0 WHERE id <= 1000; INSERT INTO events (big_id) VALUES (1)");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big", "events"]);
}

#[test]
fn subscriber_restart_mid_copy_resumes_while_publisher_writes() {
    let mut pair = start("sync_restart");
    let mut bench = writer(&pair);
    subscribe_copy(&pair, "s", &["p"], "");
    wait_copying_with_progress(&pair);
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    let states = wait_all_ready(&pair, "s");
    assert_eq!(table(&states, "big").rows_copied, ROWS, "{states:#?}");
    // Let the stream run past the copy with writes still going on.
    wait_with_load(
        &mut bench,
        CATCH_UP,
        "20 streamed transactions applied",
        || pair.try_status("s").is_ok_and(|s| s.is_some_and(|s| s.applied_transactions >= 20)),
        || pair.explain("s"),
    );
    bench.stop();
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big", "events"]);
    assert!(count(&mut pair.pub_client(), "events") > 0);
    assert_eq!(count(&mut pair.sub_client(), "logical_ext.conflict_log"), 0, "copied rows count as the subscription's");
}

#[test]
fn drop_subscription_mid_copy_stops_and_cleans_up() {
    let pair = start("sync_drop");
    subscribe_copy(&pair, "s", &["p"], "");
    wait_copying_with_progress(&pair);
    let mut c = pair.sub_client();
    exec(&mut c, "SELECT logical_ext.drop_subscription('s')");
    // drop_subscription returns once the workers are gone.
    assert_eq!(sync_worker_pids(&pair), Vec::<i32>::new());
    assert_eq!(count(&mut c, "logical_ext.subscription_tables"), 0);
    assert_eq!(count(&mut c, "pg_replication_origin WHERE roname LIKE 'logical_ext%'"), 0);
    assert_eq!(count(&mut c, "big"), 0, "the interrupted copy left rows behind");
    wait_until(CATCH_UP, "the publisher has no slot left", || {
        count(&mut pair.pub_client(), "pg_replication_slots") == 0
    });
}
