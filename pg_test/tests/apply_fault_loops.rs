//! Repeated faults under a pgbench load (issue 12, fault tests 1–3): the
//! apply worker SIGKILLed again and again (each kill crash-restarts the
//! subscriber), the publisher's walsender terminated again and again (and
//! SIGKILLed: publisher crash recovery), and both postmasters stopped with
//! `-m immediate` and restarted. After each loop the subscriber equals the
//! publisher row for row (md5 of every table; `pgbench_history` has a key,
//! so a duplicated transaction would show), with no manual step.
//!
//! Each loop is bounded in count and time. The kill moments follow the
//! stream (after the worker applied at least one more transaction), not a
//! clock.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::process::{Child, Command, Stdio};

/// pgbench tables on both sides (identical initial data), `pgbench_history`
/// with a key, `p` FOR ALL TABLES, subscription `s` streaming.
fn bench_pair(name: &str) -> Pair {
    let pair = Pair::start(name);
    for c in [&pair.publisher, &pair.subscriber] {
        run_checked(
            Command::new(pg_bin("pgbench")).args(["-i", "-s", "1", "-q", "-d"]).arg(c.conninfo()),
            "pgbench -i",
        );
        c.exec("ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY");
    }
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair
}

/// tpcb-like, 4 clients, for at most `secs` seconds (killed earlier when
/// the loop is done).
fn pgbench(pair: &Pair, secs: u32) -> Child {
    Command::new(pg_bin("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-T", &secs.to_string(), "-d"])
        .arg(pair.publisher.conninfo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgbench")
}

fn stop(mut bench: Child) {
    let _ = bench.kill();
    let _ = bench.wait();
}

fn assert_exact(pair: &Pair) {
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM pgbench_accounts", "aid");
    pair.assert_same("SELECT * FROM pgbench_tellers", "tid");
    pair.assert_same("SELECT * FROM pgbench_branches", "bid");
    pair.assert_same("SELECT * FROM pgbench_history", "hid");
    assert!(count(&mut pair.pub_client(), "pgbench_history") > 0, "the load ran");
}

/// Waits until the subscription has applied more transactions than now
/// (through restarts: the counters are per worker, so "more" is measured on
/// the subscriber's own copy of pgbench_history).
fn wait_progress(pair: &Pair) {
    let mut s = pair.sub_client();
    let before = count(&mut s, "pgbench_history");
    wait_until(CATCH_UP, "the subscriber applied more transactions", || {
        try_client(&pair.subscriber).is_ok_and(|mut c| count(&mut c, "pgbench_history") > before)
    });
}

fn kill9(pid: i32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

#[test]
fn apply_worker_sigkilled_20_times_under_pgbench() {
    let pair = bench_pair("loop_kill_worker");
    let bench = pgbench(&pair, 600);
    for _ in 0..20 {
        wait_progress(&pair);
        let pid = pair.worker_pid("s");
        kill9(pid);
        pair.wait_subscriber_up();
        pair.wait_status("s", "a new worker streams", |st| st.state == "streaming" && st.worker_pid != Some(pid));
    }
    stop(bench);
    assert_exact(&pair);
}

#[test]
fn walsender_terminated_20_times_and_killed_3_times_under_pgbench() {
    let pair = bench_pair("loop_walsender");
    let bench = pgbench(&pair, 600);
    let walsender = |pair: &Pair| -> Option<i32> {
        let mut p = try_client(&pair.publisher).ok()?;
        p.query_opt("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = 's' AND active", &[])
            .ok()
            .flatten()
            .and_then(|r| r.get(0))
    };
    for _ in 0..20 {
        wait_progress(&pair);
        let mut pid = None;
        wait_until(CATCH_UP, "the walsender of s is active", || {
            pid = walsender(&pair);
            pid.is_some()
        });
        let old = pid.unwrap();
        pair.pub_exec(&format!("SELECT pg_catalog.pg_terminate_backend({old})"));
        wait_until(CATCH_UP, "a new walsender streams to s", || walsender(&pair).is_some_and(|p| p != old));
    }
    stop(bench);
    // SIGKILL of the walsender: the publisher goes through crash recovery
    // (and pgbench would lose its connections, so it runs between kills).
    for _ in 0..3 {
        let bench = pgbench(&pair, 600);
        wait_progress(&pair);
        let mut pid = None;
        wait_until(CATCH_UP, "the walsender of s is active", || {
            pid = walsender(&pair);
            pid.is_some()
        });
        kill9(pid.unwrap());
        stop(bench);
        wait_until(CATCH_UP, "the publisher is back", || try_client(&pair.publisher).is_ok());
    }
    assert_exact(&pair);
}

#[test]
fn postmasters_stopped_immediately_under_pgbench() {
    let mut pair = bench_pair("loop_immediate");
    let bench = pgbench(&pair, 600);
    for _ in 0..5 {
        wait_progress(&pair);
        pair.subscriber.stop_with("immediate");
        pair.subscriber.restart();
        pair.wait_streaming("s");
    }
    stop(bench);
    for _ in 0..3 {
        let bench = pgbench(&pair, 600);
        wait_progress(&pair);
        pair.publisher.stop_with("immediate");
        stop(bench);
        pair.publisher.restart();
        pair.wait_streaming("s");
    }
    let bench = pgbench(&pair, 600);
    wait_progress(&pair);
    stop(bench);
    assert_exact(&pair);
}
