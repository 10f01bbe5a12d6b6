//! Repeated faults under a pgbench load (issue 12, fault tests 1–3): the
//! apply worker SIGKILLed again and again (each kill crash-restarts the
//! subscriber), the publisher's walsender terminated again and again (and
//! SIGKILLed: publisher crash recovery), and both postmasters stopped with
//! `-m immediate` and restarted. After each loop the subscriber equals the
//! publisher row for row (md5 of every table; `pgbench_history` has a key,
//! so a duplicated transaction would show), with no manual step.
//!
//! Each is compared with a native subscription under the same fault: the
//! subscriber has a second database, `native`, with the same pgbench tables,
//! where `CREATE SUBSCRIPTION native` (its own slot) applies the same
//! publication. Its apply worker is SIGKILLed at the same moments as ours
//! (one `kill -9` for both), both walsenders are terminated together, and an
//! immediate stop hits both. After each loop both must be row-exact; the time
//! each took to be exact after the load stopped is printed side by side
//! (never asserted for the native one; ours only within a generous bound).
//!
//! Each loop is bounded in count and time. The kill moments follow the
//! stream (after both workers applied at least one more transaction), not a
//! clock.

use logical_ext_pg_test::background::{Background, wait_with_load};
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// The subscriber's database of the native subscription `native`.
const NATIVE_DB: &str = "native";
/// Both subscriptions' slots (named like them): logical_ext's, native.
const SLOTS: [&str; 2] = ["s", "native"];
/// How long logical_ext may take to be exact once the load stopped
/// (generous: it takes a second or two).
const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long the faults of one loop may take.
const LOOP_LIMIT: Duration = Duration::from_secs(300);

/// pgbench tables (identical initial data) on the publisher and in both
/// subscriber databases, `pgbench_history` with a key, `p` FOR ALL TABLES,
/// subscriptions `s` (logical_ext, database `postgres`) and `native`
/// (database `native`) streaming.
fn bench_pair(name: &str) -> Pair {
    let pair = Pair::start_with(name, &[], &[NATIVE_FAST_RETRY]);
    pair.sub_exec(&format!("CREATE DATABASE {NATIVE_DB}"));
    for (c, db) in [(&pair.publisher, "postgres"), (&pair.subscriber, "postgres"), (&pair.subscriber, NATIVE_DB)] {
        run_checked(
            Command::new(pg_bin("pgbench")).args(["-i", "-s", "1", "-q", "-d"]).arg(c.conninfo_db(db)),
            "pgbench -i",
        );
        exec(&mut c.client_db(db), "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY");
    }
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe("s", &["p"], "");
    pair.subscribe_native(NATIVE_DB, "native", &["p"], "");
    pair.wait_streaming("s");
    pair.native_worker_pid(NATIVE_DB, "native", None);
    pair
}

/// tpcb-like, 4 clients, for at most `secs` seconds (stopped earlier when
/// the loop is done); its stderr is kept, for when it dies early.
fn pgbench(pair: &Pair, secs: u32) -> Background {
    Background::pgbench(&pair.publisher, &["-c", "4", "-j", "2", "-T", &secs.to_string()])
}

/// Both subscriptions row-exact (every table, both databases); prints how
/// long each took after the load stopped (`stopped`), and bounds ours.
fn assert_exact(pair: &Pair, what: &str, stopped: Instant) {
    let took = pair.wait_slots_caught_up(&SLOTS, "s", stopped);
    for db in ["postgres", NATIVE_DB] {
        pair.assert_same_in(db, "SELECT * FROM pgbench_accounts", "aid");
        pair.assert_same_in(db, "SELECT * FROM pgbench_tellers", "tid");
        pair.assert_same_in(db, "SELECT * FROM pgbench_branches", "bid");
        pair.assert_same_in(db, "SELECT * FROM pgbench_history", "hid");
    }
    let rows = count(&mut pair.pub_client(), "pgbench_history");
    assert!(rows > 0, "the load ran");
    println!(
        "{what}: exact {:.2} s (logical_ext) and {:.2} s (native) after the load stopped; {rows} pgbench transactions",
        took[0].as_secs_f64(),
        took[1].as_secs_f64()
    );
    assert!(took[0] <= RECOVERY_BOUND, "{what}: logical_ext took {:?} to be exact after the load", took[0]);
}

/// Waits until both subscriptions have applied more transactions than now
/// (through restarts: worker counters start again, so "more" is measured on
/// each database's copy of pgbench_history). `bench` makes them: if it
/// dies, the wait fails at once and says so.
fn wait_progress(pair: &Pair, bench: &mut Background) {
    let history = |db: &str| {
        let mut c = try_client_db(&pair.subscriber, db).ok()?;
        c.query_one("SELECT count(*) FROM pgbench_history", &[]).ok().map(|r| r.get::<_, i64>(0))
    };
    let before = [history("postgres"), history(NATIVE_DB)];
    wait_with_load(
        bench,
        CATCH_UP,
        "both subscriptions applied more transactions",
        || {
            let now = [history("postgres"), history(NATIVE_DB)];
            now.iter().zip(&before).all(|(n, b)| n.is_some() && n > b)
        },
        || pair.explain("s"),
    );
}

/// Fails the loop when its faults take longer than [`LOOP_LIMIT`].
fn within_limit(started: Instant, what: &str) {
    assert!(started.elapsed() < LOOP_LIMIT, "{what} took longer than {LOOP_LIMIT:?}");
}

#[test]
fn apply_worker_sigkilled_20_times_under_pgbench() {
    let pair = bench_pair("loop_kill_worker");
    let mut bench = pgbench(&pair, 600);
    let started = Instant::now();
    for _ in 0..20 {
        within_limit(started, "20 apply worker kills");
        wait_progress(&pair, &mut bench);
        let ours = pair.worker_pid("s");
        let native = pair.native_worker_pid(NATIVE_DB, "native", None);
        // Until the postmaster has noticed the kill, the status still shows
        // the killed workers: wait for the crash restart itself.
        pair.subscriber.kill9_and_wait_crash_restart(&[ours, native]);
        pair.wait_status("s", "a new worker streams", |st| st.state == "streaming" && st.worker_pid != Some(ours));
        pair.native_worker_pid(NATIVE_DB, "native", Some(native));
    }
    bench.assert_running("the 20 kills were done");
    let stopped = bench.stop();
    assert_exact(&pair, "apply workers SIGKILLed 20 times", stopped);
}

/// The pid of the walsender streaming to `slot`, if one is active.
fn walsender(pair: &Pair, slot: &str) -> Option<i32> {
    let mut p = try_client(&pair.publisher).ok()?;
    p.query_opt("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active", &[&slot])
        .ok()
        .flatten()
        .and_then(|r| r.get(0))
}

/// Waits until both slots have an active walsender other than the pids in
/// `not`; returns their pids.
fn walsenders(pair: &Pair, not: &[i32]) -> Vec<i32> {
    let mut pids = Vec::new();
    wait_or_explain(
        CATCH_UP,
        &format!("walsenders other than {not:?} stream to {SLOTS:?}"),
        || {
            pids = SLOTS.iter().filter_map(|slot| walsender(pair, slot)).filter(|p| !not.contains(p)).collect();
            pids.len() == SLOTS.len()
        },
        || pair.explain("s"),
    );
    pids
}

#[test]
fn walsender_terminated_20_times_and_killed_3_times_under_pgbench() {
    let pair = bench_pair("loop_walsender");
    let mut bench = pgbench(&pair, 600);
    let started = Instant::now();
    let mut old = walsenders(&pair, &[]);
    for _ in 0..20 {
        within_limit(started, "20 walsender terminations");
        wait_progress(&pair, &mut bench);
        pair.pub_exec(&format!(
            "SELECT pg_catalog.pg_terminate_backend({}), pg_catalog.pg_terminate_backend({})",
            old[0], old[1]
        ));
        old = walsenders(&pair, &old);
    }
    bench.assert_running("the 20 terminations were done");
    bench.stop();
    // SIGKILL of the walsenders: the publisher goes through crash recovery
    // (and pgbench would lose its connections, so it runs between kills).
    let started = Instant::now();
    let mut stopped = Instant::now();
    for _ in 0..3 {
        within_limit(started, "3 walsender SIGKILLs");
        let mut bench = pgbench(&pair, 600);
        wait_progress(&pair, &mut bench);
        // The postmaster notices the SIGKILL a moment later: a connection
        // made before it did would be cut by the crash restart, and so would
        // the next pgbench (which then stops for good). This waits for the
        // restart itself, then for the publisher to be back. The crash
        // restart ends the load (its connections are cut).
        let walsenders = walsenders(&pair, &[]);
        stopped = Instant::now();
        pair.publisher.kill9_and_wait_crash_restart(&walsenders);
        bench.stop();
    }
    assert_exact(&pair, "walsenders terminated 20 times and SIGKILLed 3 times", stopped);
}

#[test]
fn postmasters_stopped_immediately_under_pgbench() {
    let mut pair = bench_pair("loop_immediate");
    let mut bench = pgbench(&pair, 600);
    let started = Instant::now();
    for _ in 0..5 {
        within_limit(started, "5 immediate stops of the subscriber");
        wait_progress(&pair, &mut bench);
        pair.subscriber.stop_with("immediate");
        pair.subscriber.restart();
        pair.wait_streaming("s");
        pair.native_worker_pid(NATIVE_DB, "native", None);
    }
    bench.assert_running("the 5 subscriber stops were done");
    bench.stop();
    let started = Instant::now();
    for _ in 0..3 {
        within_limit(started, "3 immediate stops of the publisher");
        let mut bench = pgbench(&pair, 600);
        wait_progress(&pair, &mut bench);
        pair.publisher.stop_with("immediate");
        bench.stop();
        pair.publisher.restart();
        pair.wait_streaming("s");
        pair.native_worker_pid(NATIVE_DB, "native", None);
    }
    let mut bench = pgbench(&pair, 600);
    wait_progress(&pair, &mut bench);
    let stopped = bench.stop();
    assert_exact(&pair, "postmasters stopped -m immediate 5 + 3 times", stopped);
}
