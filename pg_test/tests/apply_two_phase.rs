//! Two-phase commit through a logical_ext subscription (option `two_phase`),
//! modelled on PostgreSQL's TAP tests 021_twophase.pl and
//! 022_twophase_cascade.pl: a transaction prepared on the publisher is
//! prepared on the subscriber (its rows invisible there until the
//! publisher decides), then committed or rolled back with it, exactly once
//! across crashes:
//!
//! - the subscriber crashes (`kill -9` of the apply worker: crash restart;
//!   an immediate shutdown; `kill -9` of its postmaster) after applying the
//!   PREPARE, before COMMIT PREPARED arrives;
//! - the publisher restarts (immediate) between PREPARE and COMMIT PREPARED;
//! - a transaction prepared while the subscriber is down;
//! - ROLLBACK PREPARED, and a conflict inside a prepared transaction
//!   (resolved like any; as `error`, skipped with `skip_transaction`);
//! - a big prepared transaction (spilled to disk on the publisher, as in
//!   023_twophase_stream.pl), the subscriber stopped after preparing it;
//! - prepared by the subscription owner while rows are applied as the
//!   tables' owner; `drop_subscription` warns about one left prepared;
//! - the initial copy first (two-phase decoding waits until every table is
//!   ready, then the slot becomes two-phase).
//!
//! After each step the subscriber's rows equal the publisher's (count and
//! md5). A second test checks the refusals (SQLSTATE + HINT): no
//! `max_prepared_transactions`, changing `two_phase` later, copying tables
//! again.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::{wait_all_ready, wait_tables};
use logical_ext_pg_test::*;
use std::process::Command;

const PREPARED_CONF: &[&str] = &["max_prepared_transactions = 10"];

const OPTIONS: &str = r#"{"retry_min_delay_ms": 100, "retry_max_delay_ms": 1000, "two_phase": true}"#;

fn create_subscription(pair: &Pair, copy_data: bool) {
    let sql = format!(
        "SELECT logical_ext.create_subscription('s', $1::text, ARRAY['p'], copy_data => {copy_data}, \
         options => '{OPTIONS}')"
    );
    let mut c = pair.sub_client();
    if let Err(e) = c.execute(&sql, &[&pair.publisher_conninfo()]) {
        panic!("create_subscription failed: {}", describe_error(&e));
    }
}

/// The GIDs prepared on the subscriber (panics when it cannot be reached).
fn sub_prepared(pair: &Pair) -> Vec<String> {
    try_sub_prepared(pair).expect("the subscriber's pg_prepared_xacts")
}

/// The GIDs prepared on the subscriber (`None` when it cannot be reached:
/// restarting, which is not "none prepared").
fn try_sub_prepared(pair: &Pair) -> Option<Vec<String>> {
    try_client(&pair.subscriber)
        .ok()
        .and_then(|mut c| c.query("SELECT gid FROM pg_prepared_xacts ORDER BY gid", &[]).ok())
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
}

fn wait_sub_prepared(pair: &Pair, n: usize) -> Vec<String> {
    let mut seen = None;
    wait_or_explain(
        CATCH_UP,
        &format!("{n} prepared transaction(s) on the subscriber"),
        || {
            seen = try_sub_prepared(pair).filter(|gids| gids.len() == n);
            seen.is_some()
        },
        || format!("prepared: {:?}\n{}", try_sub_prepared(pair), pair.explain("s")),
    );
    seen.expect("checked")
}

/// `BEGIN; <sql>; PREPARE TRANSACTION '<gid>'` on the publisher.
fn pub_prepare(pair: &Pair, sql: &str, gid: &str) {
    pair.pub_exec(&format!("BEGIN; {sql}; PREPARE TRANSACTION '{gid}'"));
}

fn slot_two_phase(pair: &Pair) -> bool {
    pair.pub_client()
        .query_opt("SELECT two_phase FROM pg_replication_slots WHERE slot_name = 's'", &[])
        .unwrap()
        .is_some_and(|r| r.get(0))
}

fn same(pair: &Pair) {
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t", "u"]);
}

#[test]
fn prepared_transactions_survive_crashes_on_both_sides() {
    // A small logical_decoding_work_mem spills the big transaction of step
    // 7 to disk on the publisher (023_twophase_stream.pl's concern).
    let pub_conf = ["max_prepared_transactions = 10", "logical_decoding_work_mem = '64kB'"];
    let mut pair = Pair::start_with("apply_2pc", &pub_conf, PREPARED_CONF);
    pair.both_exec(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)",
    );
    pair.pub_exec("INSERT INTO t SELECT g, 'seed ' || g FROM generate_series(1, 100) g; INSERT INTO u VALUES (1, 1)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t, u");
    // Copied first; two-phase decoding starts once both tables are ready.
    create_subscription(&pair, true);
    pair.wait_streaming("s");
    wait_or_explain(CATCH_UP, "the slot becomes two-phase", || slot_two_phase(&pair), || pair.explain("s"));
    same(&pair);

    // Rows are applied as each table's owner; the transaction is prepared
    // (and later finished) by the worker's own role, the subscription
    // owner: PostgreSQL lets only that role or a superuser finish it.
    pair.sub_exec("CREATE ROLE alice; ALTER TABLE t OWNER TO alice; ALTER TABLE u OWNER TO alice");

    // 1. Prepared: on the subscriber too, rows invisible; then the
    //    subscriber's apply worker is killed (crash restart of the whole
    //    subscriber) and the publisher commits.
    pub_prepare(&pair, "INSERT INTO t VALUES (101, 'p1'); UPDATE t SET v = 'p1' WHERE id <= 10; DELETE FROM u", "p1");
    let gids = wait_sub_prepared(&pair, 1);
    assert!(gids[0].starts_with("logical_ext_"), "{gids:?}");
    let owner: String = pair.sub_client().query_one("SELECT owner::text FROM pg_prepared_xacts", &[]).unwrap().get(0);
    assert_eq!(owner, "postgres", "prepared by the subscription owner");
    assert_eq!(count(&mut pair.sub_client(), "t"), 100, "prepared rows are not visible");
    assert_eq!(count(&mut pair.sub_client(), "u"), 1);
    let pid = pair.worker_pid("s");
    // Waits for the crash restart itself: before the postmaster notices the
    // kill, the checks below would still see the old worker's state.
    pair.subscriber.kill9_and_wait_crash_restart(&[pid]);
    assert_eq!(wait_sub_prepared(&pair, 1), gids, "the prepared transaction survived the crash");
    pair.wait_streaming("s");
    pair.pub_exec("COMMIT PREPARED 'p1'");
    wait_sub_prepared(&pair, 0);
    same(&pair);
    assert_eq!(count(&mut pair.sub_client(), "t"), 101);

    // 2. Immediate shutdown of the subscriber between PREPARE and COMMIT
    //    PREPARED, which arrives while it is down.
    pub_prepare(&pair, "INSERT INTO t VALUES (102, 'p2'); INSERT INTO u VALUES (2, 2)", "p2");
    wait_sub_prepared(&pair, 1);
    pair.subscriber.stop_with("immediate");
    pair.pub_exec("COMMIT PREPARED 'p2'");
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    wait_sub_prepared(&pair, 0);
    same(&pair);

    // 2b. SIGKILL of the subscriber's postmaster between PREPARE and
    //     COMMIT PREPARED (its children exit on the postmaster's death).
    pub_prepare(&pair, "INSERT INTO t VALUES (110, 'p2b'); UPDATE u SET n = n + 1", "p2b");
    wait_sub_prepared(&pair, 1);
    kill_postmaster(&pair.subscriber);
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    wait_sub_prepared(&pair, 1);
    pair.pub_exec("COMMIT PREPARED 'p2b'");
    wait_sub_prepared(&pair, 0);
    same(&pair);

    // 3. ROLLBACK PREPARED.
    pub_prepare(&pair, "INSERT INTO t VALUES (103, 'p3'); UPDATE u SET n = 30", "p3");
    wait_sub_prepared(&pair, 1);
    pair.pub_exec("ROLLBACK PREPARED 'p3'");
    wait_sub_prepared(&pair, 0);
    same(&pair);
    assert_eq!(count(&mut pair.sub_client(), "t"), 103);

    // 4. The publisher restarts (immediate) between PREPARE and COMMIT
    //    PREPARED.
    pub_prepare(&pair, "INSERT INTO t VALUES (104, 'p4')", "p4");
    wait_sub_prepared(&pair, 1);
    pair.publisher.stop_with("immediate");
    pair.publisher.restart();
    pair.pub_exec("COMMIT PREPARED 'p4'");
    wait_sub_prepared(&pair, 0);
    same(&pair);

    // 5. Prepared while the subscriber is down, committed after it is back.
    pair.subscriber.stop_with("fast");
    pub_prepare(&pair, "INSERT INTO t VALUES (105, 'p5'); UPDATE u SET n = n + 5", "p5");
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    wait_sub_prepared(&pair, 1);
    assert_eq!(count(&mut pair.sub_client(), "t"), 104);
    pair.pub_exec("COMMIT PREPARED 'p5'");
    wait_sub_prepared(&pair, 0);
    same(&pair);

    // 6. A conflict inside a prepared transaction is resolved as in any
    //    transaction (insert_exists: error by default, so the rule says
    //    apply_remote), and logged when the transaction commits.
    pair.sub_exec("INSERT INTO t VALUES (106, 'local')");
    pair.sub_exec("SELECT logical_ext.set_conflict_resolution('s', 'apply_remote', 'insert_exists')");
    pub_prepare(&pair, "INSERT INTO t VALUES (106, 'p6')", "p6");
    wait_sub_prepared(&pair, 1);
    pair.pub_exec("COMMIT PREPARED 'p6'");
    wait_sub_prepared(&pair, 0);
    same(&pair);
    let logged: i64 = pair
        .sub_client()
        .query_one("SELECT count(*) FROM logical_ext.conflict_log WHERE conflict_type = 'insert_exists'", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);

    // 6b. The same conflict resolved as `error` stops the prepared
    //     transaction; skip_transaction with its PREPARE's LSN (the
    //     conflict log's remote_commit_lsn) prepares it empty, and the
    //     COMMIT PREPARED then commits nothing.
    pair.sub_exec("INSERT INTO t VALUES (107, 'local')");
    pair.sub_exec("SELECT logical_ext.set_conflict_resolution('s', 'error', 'insert_exists')");
    pub_prepare(&pair, "INSERT INTO t VALUES (107, 'p7'); INSERT INTO t VALUES (108, 'p7')", "p7");
    pair.wait_status("s", "the conflict stops the prepared transaction", |s| s.last_error.is_some());
    let lsn: String = pair
        .sub_client()
        .query_one(
            "SELECT remote_commit_lsn::text FROM logical_ext.conflict_log WHERE conflict_type = 'insert_exists' \
             ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    pair.sub_exec(&format!("SELECT logical_ext.skip_transaction('s', '{lsn}')"));
    wait_sub_prepared(&pair, 1);
    pair.pub_exec("COMMIT PREPARED 'p7'");
    wait_sub_prepared(&pair, 0);
    pair.wait_caught_up("s");
    let skipped: Vec<String> = pair
        .sub_client()
        .query("SELECT v FROM t WHERE id IN (107, 108)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(skipped, ["local"], "the skipped transaction applied nothing");
    let skip_lsn: Option<String> =
        pair.sub_client().query_one("SELECT skip_lsn::text FROM logical_ext.subscription", &[]).unwrap().get(0);
    assert_eq!(skip_lsn, None, "the skip request is cleared");
    pair.sub_exec("UPDATE t SET v = 'p7' WHERE id = 107; INSERT INTO t VALUES (108, 'p7')");
    same(&pair);

    // 7. A big prepared transaction (spilled to disk while decoded), the
    //    subscriber stopped (immediate) after it is prepared there.
    pub_prepare(
        &pair,
        "INSERT INTO t SELECT g, repeat('x', 100) || g FROM generate_series(10000, 60000) g; \
         UPDATE t SET v = 'big' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0",
        "big",
    );
    wait_sub_prepared(&pair, 1);
    assert!(count(&mut pair.sub_client(), "t") < 1000);
    pair.subscriber.stop_with("immediate");
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    wait_sub_prepared(&pair, 1);
    pair.pub_exec("COMMIT PREPARED 'big'");
    wait_sub_prepared(&pair, 0);
    same(&pair);

    // Ordinary transactions keep flowing between and after.
    pair.pub_exec("INSERT INTO t SELECT g, 'after' FROM generate_series(200, 300) g");
    same(&pair);
    let st = pair.status("s");
    assert!(st.last_error.is_none(), "{st:#?}");

    // Dropping the subscription leaves an undecided prepared transaction
    // (as natively) and says so.
    pub_prepare(&pair, "INSERT INTO t VALUES (400, 'left')", "left");
    let left = wait_sub_prepared(&pair, 1);
    let out = run_checked(
        Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-d"])
            .arg(pair.subscriber.conninfo())
            .args(["-c", "SELECT logical_ext.drop_subscription('s')"]),
        "drop_subscription",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING") && stderr.contains(&left[0]) && stderr.contains("ROLLBACK PREPARED"),
        "{stderr}"
    );
    pair.sub_exec(&format!("ROLLBACK PREPARED '{}'", left[0]));
    pair.pub_exec("ROLLBACK PREPARED 'left'");
}

/// `kill -9` of the cluster's postmaster; returns once every process it
/// had (as `pg_stat_activity` lists them) is gone, so it can start again.
fn kill_postmaster(cluster: &Cluster) {
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).expect("postmaster.pid");
    let postmaster: u32 = pid_file.lines().next().and_then(|l| l.trim().parse().ok()).expect("postmaster pid");
    let mut pids: Vec<u32> = cluster
        .client()
        .query("SELECT pid FROM pg_stat_activity", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect();
    pids.push(postmaster);
    run_checked(Command::new("kill").args(["-9", &postmaster.to_string()]), "kill -9 of the postmaster");
    wait_until(CATCH_UP, "every process of the killed postmaster exited", || {
        pids.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    });
}

#[test]
fn two_phase_refusals() {
    let pair = Pair::start_with("apply_2pc_refuse", PREPARED_CONF, &[]);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    let mut c = pair.sub_client();
    let create = format!(
        "SELECT logical_ext.create_subscription('s', '{}', ARRAY['p'], options => '{OPTIONS}')",
        pair.publisher_conninfo()
    );
    let (code, msg, hint) = expect_error(&mut c, &create);
    assert_eq!(code, "55000", "{msg}");
    assert!(msg.contains("max_prepared_transactions"), "{msg}");
    assert!(hint.contains("max_prepared_transactions") && hint.contains("restart"), "{hint}");

    // Without the option: created; two_phase cannot be switched on later.
    pair.subscribe("s", &["p"], "");
    let (code, msg, hint) =
        expect_error(&mut c, r#"SELECT logical_ext.alter_subscription('s', '{"two_phase": true}')"#);
    assert_eq!(code, "0A000", "{msg}");
    assert!(msg.contains("two_phase") && hint.contains("create"), "{msg} / {hint}");
    // Restating the current value is fine.
    exec(&mut c, r#"SELECT logical_ext.alter_subscription('s', '{"two_phase": false}')"#);
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t VALUES (1)");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
}

/// A two-phase subscription refuses to copy tables again (a transaction
/// prepared during the copy could lose the table's rows); without copying,
/// refresh works.
#[test]
fn two_phase_refuses_copies() {
    let pair = Pair::start_with("apply_2pc_copy", PREPARED_CONF, PREPARED_CONF);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE t2 (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    create_subscription(&pair, false);
    pair.wait_streaming("s");
    let mut c = pair.sub_client();
    for sql in ["SELECT logical_ext.resync_table('s', 't')", "SELECT logical_ext.refresh_subscription('s')"] {
        let (code, msg, hint) = expect_error(&mut c, sql);
        assert_eq!(code, "55000", "{sql}: {msg}");
        assert!(msg.contains("two_phase") && hint.contains("copy_data => false"), "{msg} / {hint}");
    }
    pair.pub_exec("ALTER PUBLICATION p ADD TABLE t2");
    let added: i64 =
        c.query_one("SELECT logical_ext.refresh_subscription('s', copy_data => false)", &[]).unwrap().get(0);
    assert_eq!(added, 1);
    pair.wait_streaming("s");
    pair.pub_exec("BEGIN; INSERT INTO t2 VALUES (1); INSERT INTO t VALUES (1); PREPARE TRANSACTION 'x'");
    wait_sub_prepared_in(&pair);
    pair.pub_exec("COMMIT PREPARED 'x'");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t", "t2"]);
}

fn wait_sub_prepared_in(pair: &Pair) {
    wait_or_explain(
        CATCH_UP,
        "a prepared transaction on the subscriber",
        || try_sub_prepared(pair).is_some_and(|gids| gids.len() == 1),
        || pair.explain("s"),
    );
}

/// PostgreSQL's 022_twophase_cascade.pl: A → B → C, both subscriptions
/// two-phase. A prepared transaction on A is prepared on B (by B's apply
/// worker) and, decoded from B, on C; its COMMIT / ROLLBACK PREPARED on A
/// reaches both.
#[test]
fn two_phase_cascade() {
    let pair = Pair::start_with("apply_2pc_cascade", PREPARED_CONF, PREPARED_CONF);
    let mut conf: Vec<&str> = SUBSCRIBER_CONF.to_vec();
    conf.extend_from_slice(PREPARED_CONF);
    let c_node = Cluster::start("apply_2pc_cascade_c", &conf);
    c_node.exec("CREATE EXTENSION logical_ext");
    let ddl = "CREATE TABLE t (id int PRIMARY KEY, v text)";
    pair.both_exec(ddl);
    c_node.exec(ddl);
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.sub_exec("CREATE PUBLICATION p FOR TABLE t");
    create_subscription(&pair, false);
    let b_conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pair.subscriber.port());
    c_node.exec(&format!(
        "SELECT logical_ext.create_subscription('s', '{b_conninfo}', ARRAY['p'], copy_data => false, \
         options => '{OPTIONS}')"
    ));
    pair.wait_streaming("s");
    let c_prepared = || -> i64 {
        try_client(&c_node)
            .ok()
            .and_then(|mut c| c.query_one("SELECT count(*) FROM pg_prepared_xacts", &[]).ok())
            .map_or(-1, |r| r.get(0))
    };
    let c_rows = || -> String { digest(&mut c_node.client(), "SELECT * FROM t", "id") };
    let wait_c = |what: &str, cond: &dyn Fn() -> bool| {
        wait_or_explain(CATCH_UP, what, cond, || {
            format!("C prepared: {}\n--- C log:\n{}\n{}", c_prepared(), c_node.log_tail(20), pair.explain("s"))
        })
    };
    pair.pub_exec("INSERT INTO t VALUES (1, 'plain')");
    wait_c("C has the first row", &|| count(&mut c_node.client(), "t") == 1);

    pub_prepare(&pair, "INSERT INTO t VALUES (2, 'p1'); UPDATE t SET v = 'p1' WHERE id = 1", "c1");
    wait_sub_prepared(&pair, 1);
    wait_c("the transaction is prepared on C", &|| c_prepared() == 1);
    assert_eq!(count(&mut c_node.client(), "t"), 1);
    pair.pub_exec("COMMIT PREPARED 'c1'");
    wait_sub_prepared(&pair, 0);
    wait_c("committed on C", &|| c_prepared() == 0 && count(&mut c_node.client(), "t") == 2);

    pub_prepare(&pair, "INSERT INTO t VALUES (3, 'p2')", "c2");
    wait_c("the second transaction is prepared on C", &|| c_prepared() == 1);
    pair.pub_exec("ROLLBACK PREPARED 'c2'");
    wait_c("rolled back on C", &|| c_prepared() == 0);
    pair.pub_exec("INSERT INTO t VALUES (4, 'last')");
    wait_c("C has the last row", &|| count(&mut c_node.client(), "t") == 3);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    assert_eq!(c_rows(), digest(&mut pair.pub_client(), "SELECT * FROM t", "id"), "C equals A");
}

/// A PREPARE that fails on the subscriber (every prepared-transaction slot
/// taken: `max_prepared_transactions = 1` and one held by hand) is an
/// error like any, retried with backoff; once the slot is free the
/// transaction is prepared, then committed, once.
#[test]
fn a_failed_prepare_is_retried() {
    let pair = Pair::start_with("apply_2pc_full", PREPARED_CONF, &["max_prepared_transactions = 1"]);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE local_only (id int)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    create_subscription(&pair, false);
    pair.wait_streaming("s");
    pair.sub_exec("BEGIN; INSERT INTO local_only VALUES (1); PREPARE TRANSACTION 'held'");
    pub_prepare(&pair, "INSERT INTO t VALUES (1, 'p')", "p1");
    pair.wait_status("s", "the failed PREPARE is reported", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("prepared transactions"))
    });
    assert_eq!(sub_prepared(&pair), ["held"]);
    pair.sub_exec("COMMIT PREPARED 'held'");
    wait_or_explain(
        CATCH_UP,
        "the remote transaction is prepared on the subscriber",
        || try_sub_prepared(&pair).is_some_and(|gids| gids.iter().any(|g| g.starts_with("logical_ext_"))),
        || pair.explain("s"),
    );
    pair.pub_exec("COMMIT PREPARED 'p1'");
    pair.pub_exec("INSERT INTO t VALUES (2, 'after')");
    pair.wait_caught_up("s");
    wait_sub_prepared(&pair, 0);
    pair.assert_same_tables(&["t"]);
    assert_eq!(count(&mut pair.sub_client(), "local_only"), 1);
}

/// PostgreSQL's "pending" state: while a table waits for its copy, the
/// worker streams without two-phase decoding. Here a trigger on the
/// subscriber's `u` fails its copy (retried) while `t` streams; a
/// transaction prepared then is not sent at its PREPARE but whole at its
/// COMMIT PREPARED (its `u` rows left to `u`'s copy, which cannot start
/// before: PostgreSQL's slot creation waits for prepared transactions).
/// Once the trigger lets the copy through and `u` is ready, the worker
/// restarts its stream with two-phase decoding, and the next prepared
/// transaction is prepared on the subscriber.
#[test]
fn prepared_while_a_table_waits_for_its_copy() {
    let pair = Pair::start_with("apply_2pc_pending", PREPARED_CONF, PREPARED_CONF);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY, v text)");
    pair.pub_exec(
        "INSERT INTO t SELECT g, 't' || g FROM generate_series(1, 1000) g; \
         INSERT INTO u SELECT g, 'u' || g FROM generate_series(1, 1000) g",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t, u");
    pair.sub_exec(
        "CREATE TABLE gate (closed bool); INSERT INTO gate VALUES (true); \
         CREATE FUNCTION gate_u() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN IF (SELECT closed FROM public.gate) THEN RAISE EXCEPTION 'gate closed'; END IF; RETURN NEW; END$$; \
         CREATE TRIGGER gate_u BEFORE INSERT ON u FOR EACH ROW EXECUTE FUNCTION gate_u(); \
         ALTER TABLE u ENABLE ALWAYS TRIGGER gate_u",
    );
    create_subscription(&pair, true);
    wait_tables(&pair, "s", "t ready, u failed", |ts| {
        ts.iter().any(|t| t.relation == "t" && t.state == "ready")
            && ts.iter().any(|t| t.relation == "u" && t.state == "error")
    });
    pair.pub_exec("INSERT INTO t VALUES (1001, 'streamed')");
    pair.wait_sub_count("s", "t", 1001);
    assert!(!slot_two_phase(&pair), "two-phase decoding waits for every table");

    pub_prepare(&pair, "INSERT INTO t VALUES (1002, 'early'); UPDATE u SET v = 'early' WHERE id <= 10", "early");
    pair.wait_caught_up("s");
    assert!(sub_prepared(&pair).is_empty(), "not sent at PREPARE while pending");
    assert_eq!(count(&mut pair.sub_client(), "t"), 1001);
    pair.pub_exec("COMMIT PREPARED 'early'");
    pair.wait_sub_count("s", "t", 1002);
    assert!(sub_prepared(&pair).is_empty());
    assert!(!slot_two_phase(&pair));
    pair.sub_exec("UPDATE gate SET closed = false");
    wait_all_ready(&pair, "s");
    wait_or_explain(CATCH_UP, "the slot becomes two-phase", || slot_two_phase(&pair), || pair.explain("s"));
    same(&pair);

    pub_prepare(&pair, "INSERT INTO u VALUES (1001, 'late')", "late");
    wait_sub_prepared(&pair, 1);
    pair.pub_exec("COMMIT PREPARED 'late'");
    wait_sub_prepared(&pair, 0);
    same(&pair);
}
