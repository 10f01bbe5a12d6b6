//! The apply worker survives interruptions without losing or duplicating
//! anything: a subscriber restart while a big transaction is being applied,
//! `kill -9` of the worker in the middle of a 100k-row transaction (the
//! subscriber crash-restarts), and publisher restarts (idle, and while a big
//! transaction is streamed). The publisher shuts down promptly while
//! subscribed. After each, the subscriber's rows equal the publisher's
//! (count and md5).

use logical_ext_pg_test::poll_until;
use logical_ext_pg_test::replication::*;
use std::time::{Duration, Instant};

const TABLE: &str = "CREATE TABLE big (id bigint PRIMARY KEY, n int, t text, f float8, ts timestamptz)";

/// `INSERT INTO big` of ids `lo..=hi`, one transaction.
fn insert_big(lo: i64, hi: i64) -> String {
    format!(
        "INSERT INTO big SELECT g, g % 1000, md5(g::text), g / 7.0,
                timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
           FROM generate_series({lo}, {hi}) g"
    )
}

fn start(name: &str) -> Pair {
    let pair = Pair::start(name);
    pair.both_exec(TABLE);
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec(&insert_big(1, 1000));
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    pair
}

/// Some more changes of every kind after a recovery, to show the stream
/// goes on from the right place.
fn more_changes(pair: &Pair, lo: i64, hi: i64) {
    pair.pub_exec(&insert_big(lo, hi));
    pair.pub_exec("UPDATE big SET n = -n, t = 'updated' WHERE id % 10 = 0");
    pair.pub_exec("DELETE FROM big WHERE id % 10 = 5");
}

#[test]
fn subscriber_restart_while_applying_a_big_transaction() {
    let mut pair = start("apply_sub_restart");
    pair.pub_exec(&insert_big(1001, 201_000));
    let pid = pair.wait_applying("s", "big");
    assert_eq!(count(&mut pair.sub_client(), "big"), 1000, "the big transaction is not committed yet");
    pair.subscriber.restart();
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    let st = pair.wait_streaming("s");
    assert_ne!(st.worker_pid, Some(pid), "the worker was not restarted: {st:#?}");

    more_changes(&pair, 201_001, 202_000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    assert_eq!(count(&mut pair.sub_client(), "big"), 202_000 - 20_200);
}

#[test]
fn apply_worker_killed_during_a_100k_row_transaction() {
    let pair = start("apply_kill9");
    pair.pub_exec(&insert_big(1001, 101_000));
    let pid = pair.wait_applying("s", "big");
    assert_eq!(count(&mut pair.sub_client(), "big"), 1000, "the big transaction is not committed yet");
    // The postmaster reinitialises after a child's crash; wait until it
    // has and the subscriber is back, then until the restarted worker has
    // caught up.
    pair.subscriber.kill9_and_wait_crash_restart(&[pid]);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    let st = pair.wait_streaming("s");
    assert_ne!(st.worker_pid, Some(pid), "{st:#?}");
    let log = std::fs::read_to_string(pair.subscriber.log_path()).unwrap();
    assert!(
        log.contains("terminated by signal 9"),
        "the subscriber did not see the kill:\n{}",
        pair.subscriber.log_tail(30)
    );

    more_changes(&pair, 101_001, 102_000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    assert_eq!(count(&mut pair.sub_client(), "big"), 102_000 - 10_200);
}

/// The postmaster restarts a crashed worker with the generation it was
/// first started for, while the shared status starts over: the worker must
/// not take that for a settings change and end its first session at once
/// (a second START_REPLICATION, which also cost a streamed transaction its
/// eager apply: `apply_streaming_eager::killed_during_eager_apply` failed
/// in CI this way). One session from the crash on.
#[test]
fn one_session_after_a_crash_restart() {
    let pair = start("apply_kill9_session");
    pair.pub_exec("ALTER SYSTEM SET log_replication_commands = on");
    pair.pub_exec("SELECT pg_reload_conf()");
    // New walsenders log their commands once the postmaster has reloaded.
    let logged = poll_until(Duration::from_secs(30), || {
        let on: String = pair.pub_client().query_one("SHOW log_replication_commands", &[]).unwrap().get(0);
        on == "on"
    });
    assert!(logged, "log_replication_commands did not take effect");
    let starts = || {
        let log = std::fs::read_to_string(pair.publisher.log_path()).unwrap();
        log.lines().filter(|l| l.contains("received replication command: START_REPLICATION")).count()
    };
    let pid = pair.worker_pid("s");
    pair.subscriber.kill9_and_wait_crash_restart(&[pid]);
    more_changes(&pair, 1001, 2000);
    pair.wait_caught_up("s");
    // Idle moments and commits, where the worker looks for new settings.
    more_changes(&pair, 2001, 3000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    assert_eq!(starts(), 1, "the restarted worker started more than one session:\n{}", pair.publisher.log_tail(40));
}

/// The publisher's walsender is terminated while a large transaction is
/// on its way: the worker reports the publisher's own message, applies
/// nothing twice and goes on from where it was.
#[test]
fn walsender_terminated_mid_stream() {
    let pair = start("apply_walsender_kill");
    let walsender = |pair: &Pair| -> Option<i32> {
        pair.pub_client()
            .query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's'", &[])
            .ok()
            .and_then(|r| r.get(0))
    };
    let first = walsender(&pair).expect("the slot is active");
    pair.pub_exec(&insert_big(1001, 51_000));
    pair.pub_exec(&format!("SELECT pg_terminate_backend({first})"));
    let st = pair.wait_status("s", "the lost connection is reported", |s| s.last_error.is_some());
    let err = st.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("could not receive data from WAL stream") && err.contains("terminating connection"),
        "the publisher's message is reported: {st:#?}"
    );
    more_changes(&pair, 51_001, 52_000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    assert_ne!(walsender(&pair), Some(first), "a new walsender serves the worker");
}

#[test]
fn publisher_restarts_and_prompt_shutdown() {
    let mut pair = start("apply_pub_restart");

    // Idle and subscribed: a fast shutdown must not wait for the worker
    // (the walsender exits once the worker has confirmed everything sent).
    let t = Instant::now();
    pair.publisher.stop_with("fast");
    let took = t.elapsed();
    assert!(
        !pair.publisher.data_dir().join("postmaster.pid").exists(),
        "pg_ctl stop -m fast did not stop the publisher:\n{}",
        pair.publisher.log_tail(20)
    );
    assert!(took < Duration::from_secs(10), "pg_ctl stop -m fast took {took:?} while subscribed");
    // The worker reports that it cannot reach the publisher ...
    let st = pair.wait_status("s", "an error about the publisher", |s| s.last_error.is_some());
    assert!(st.worker_pid.is_some(), "the worker should keep retrying: {st:#?}");
    // ... and carries on once it is back.
    pair.publisher.restart();
    more_changes(&pair, 1001, 2000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    pair.wait_status("s", "streaming without an error", |s| s.state == "streaming" && s.last_error.is_none());

    // A restart while a big transaction is being streamed and applied.
    pair.pub_exec(&insert_big(2001, 102_000));
    pair.wait_applying("s", "big");
    let t = Instant::now();
    pair.publisher.restart();
    let took = t.elapsed();
    more_changes(&pair, 102_001, 103_000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
    assert_eq!(count(&mut pair.sub_client(), "big"), 103_000 - 10_300);
    assert!(took < Duration::from_secs(20), "restarting the publisher took {took:?} while a transaction was streamed");

    // A publisher that disappears abruptly (immediate shutdown: the
    // connection just drops, as in a crash or a network failure). The worker
    // records the error and retries with its backoff, in the same process
    // (worker.rs: errors of any kind are recorded and retried).
    let st = pair.wait_streaming("s");
    pair.publisher.stop_with("immediate");
    let after = pair.wait_status("s", "an error about the lost publisher", |s| s.last_error.is_some());
    let log = std::fs::read_to_string(pair.subscriber.log_path()).unwrap();
    let exits: Vec<&str> = log.lines().filter(|l| l.contains("exited with exit code")).collect();
    assert!(
        exits.is_empty() && after.worker_pid == st.worker_pid,
        "the apply worker did not survive the loss of its connection (it should record the error and retry \
         in-process); before: pid {:?}, after: {after:#?}\n--- subscriber log:\n{}",
        st.worker_pid,
        pair.subscriber.log_tail(12)
    );
    pair.publisher.restart();
    more_changes(&pair, 103_001, 104_000);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big"]);
}
