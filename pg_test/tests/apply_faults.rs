//! Faults an operator meets, and what must survive them (issue 12), each
//! compared with a native subscription (`CREATE SUBSCRIPTION`, beside ours
//! on the same pair) where the comparison applies:
//!
//! - `commit_failure_loses_nothing`: a deferred constraint trigger
//!   (`ENABLE ALWAYS`) on the subscriber raises for one row, so the local
//!   commit of that remote transaction fails — once with `disable_on_error`
//!   (the subscription is disabled), once without (the worker retries). The
//!   subscription's replication origin must not move past the failed
//!   transaction; once the trigger is fixed (and the subscription enabled),
//!   the row arrives. Native subscriptions get the same trigger: without
//!   `disable_on_error` they must keep the row as well; with it, PostgreSQL
//!   15 itself loses the row (the commit that disables the subscription
//!   carries the failed transaction's position into the origin), so that
//!   outcome is printed, not asserted.
//! - `network_freeze_reconnects`: the connection goes through a TCP proxy
//!   (loopback only) that silently stops forwarding while keeping the
//!   connection open; after `wal_receiver_timeout` the worker gives the
//!   connection up and reconnects, and the subscriber is exact — as a native
//!   subscription through the same proxy is. Then the proxy resets every
//!   connection: both reconnect.
//! - `stop_interrupts_lock_waits`: while the worker waits on a row lock held
//!   by another session, `pg_terminate_backend` ends it, and
//!   `disable_subscription` (called by the lock holder itself) and
//!   `drop_subscription` return, within seconds; a native subscription's
//!   worker waiting beside it is terminated, and its `ALTER SUBSCRIPTION ...
//!   DISABLE` and `DROP SUBSCRIPTION` return, within the same bound (native
//!   DISABLE leaves its worker waiting until the lock is released: printed);
//!   both lose nothing.
//! - `skip_of_a_transaction_that_never_comes_is_cleared`: as PostgreSQL's
//!   `ALTER SUBSCRIPTION ... SKIP`, with a WARNING once the stream passes it.
//! - `launcher_needs_no_postgres_database`: workers start after a restart
//!   though the `postgres` database is gone.
//! - `drop_database_with_workers_running`: `DROP DATABASE` of another
//!   database and `DROP TABLESPACE` (they wait for every process to absorb a
//!   procsignal barrier)
//!   completes within seconds while an apply worker streams and another waits
//!   for its table copy (whose sync worker waits for a lock).
//! - `postmaster_death_ends_the_workers`: after `kill -9` of the subscriber's
//!   postmaster, the apply and sync workers exit.
//! - `reconnect_waits_for_the_old_walsender`: a session that ends (here a
//!   settings change) reconnects at once; its old walsender, still holding
//!   the slot (held with SIGSTOP here; a busy publisher is enough), makes
//!   START_REPLICATION fail with "replication slot ... is active for PID".
//!   The worker waits for it quietly instead of reporting an error.
//!
//! No native comparison for the last five: the skip test encodes native
//! behaviour as its specification (PostgreSQL clears an unmatched skip LSN
//! with the same WARNING); the launcher, barrier and postmaster-death faults
//! are in logical_ext's own launcher and wait loops, where native workers use
//! PostgreSQL's (no `postgres` database needed, `CHECK_FOR_INTERRUPTS`,
//! `WL_EXIT_ON_PM_DEATH`), so a native run beside them cannot fail.

use logical_ext_pg_test::conflicts::log_lines;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a stop or a barrier may take at most.
const PROMPT: Duration = Duration::from_secs(10);

fn origin_lsn(pair: &Pair, subscription: &str) -> u64 {
    let mut c = pair.sub_client();
    let row = c
        .query_one(
            "SELECT coalesce(o.remote_lsn, '0/0')::text FROM logical_ext.subscription s \
             LEFT JOIN pg_replication_origin_status o ON o.external_id = 'logical_ext_' || s.id \
             WHERE s.name = $1",
            &[&subscription],
        )
        .expect("origin status");
    parse_lsn(&row.get::<_, String>(0))
}

/// Whether the native subscription `name` (database `postgres`) is enabled.
fn native_enabled(pair: &Pair, name: &str) -> bool {
    let row =
        pair.sub_client().query_one("SELECT subenabled FROM pg_catalog.pg_subscription WHERE subname = $1", &[&name]);
    row.expect("pg_subscription").get(0)
}

/// `apply_error_count` of the native subscription `name`.
fn native_apply_errors(pair: &Pair, name: &str) -> i64 {
    let row = pair
        .sub_client()
        .query_one("SELECT apply_error_count FROM pg_catalog.pg_stat_subscription_stats WHERE subname = $1", &[&name]);
    row.expect("pg_stat_subscription_stats").get(0)
}

#[test]
fn commit_failure_loses_nothing() {
    let pair = Pair::start_with("apply_faults_commit", &[], &[NATIVE_FAST_RETRY]);
    // a and b: logical_ext's sa (disable_on_error) and sb; na and nb: the
    // native subscriptions na (disable_on_error) and nb, for comparison.
    const TABLES: [&str; 4] = ["a", "b", "na", "nb"];
    for t in TABLES {
        pair.both_exec(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"));
        pair.pub_exec(&format!("CREATE PUBLICATION p{t} FOR TABLE {t}"));
    }
    // Raises at commit time for id 2, on every table.
    pair.sub_exec(
        "CREATE FUNCTION refuse_two() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.id = 2 THEN RAISE EXCEPTION 'row 2 refused at commit'; END IF;
           RETURN NULL;
         END $$;",
    );
    for t in TABLES {
        pair.sub_exec(&format!(
            "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON {t} DEFERRABLE INITIALLY DEFERRED
               FOR EACH ROW EXECUTE FUNCTION refuse_two();
             ALTER TABLE {t} ENABLE ALWAYS TRIGGER refuse;"
        ));
    }
    pair.subscribe("sa", &["pa"], "");
    pair.subscribe("sb", &["pb"], "");
    exec(&mut pair.sub_client(), r#"SELECT logical_ext.alter_subscription('sa', '{"disable_on_error": true}')"#);
    pair.subscribe_native("postgres", "na", &["pna"], ", disable_on_error = true");
    pair.subscribe_native("postgres", "nb", &["pnb"], "");
    pair.wait_streaming("sa");
    pair.wait_streaming("sb");
    let insert = |id: i32, v: &str| {
        for t in TABLES {
            pair.pub_exec(&format!("INSERT INTO {t} VALUES ({id}, '{v}')"));
        }
    };
    let caught_up = || {
        for s in ["sa", "sb", "na", "nb"] {
            pair.wait_caught_up(s);
        }
    };
    insert(1, "one");
    caught_up();

    // The transactions the subscriber refuses (one per table), each
    // followed by another.
    let before = pair.publisher_flush_lsn();
    insert(2, "two");
    insert(3, "three");

    // With disable_on_error: disabled, and the origin still before row 2.
    let st = pair.wait_status("sa", "disabled after the failed commit", |s| !s.enabled && s.worker_pid.is_none());
    assert!(
        st.last_error.as_deref().unwrap_or("").contains("row 2 refused at commit"),
        "last_error names the failure: {st:#?}"
    );
    assert!(origin_lsn(&pair, "sa") <= before, "sa's origin moved past the failed transaction");
    wait_or_explain(
        CATCH_UP,
        "native na is disabled after the failed commit",
        || !native_enabled(&pair, "na") && pair.try_native_worker_pid("postgres", "na").is_none(),
        || pair.explain("na"),
    );
    // Native PostgreSQL 15 moves na's origin past the failed transaction
    // (its session origin stays armed for the commit that disables the
    // subscription), so na loses row 2: observed and printed, not asserted.
    let na_origin_moved = pair.native_origin_lsn("postgres", "na") > before;
    // Without: retried, failing each time (a worker whose origin moved past
    // the transaction stops failing: it lost it).
    let st = pair.wait_status("sb", "in error after the failed commit", |s| s.state == "error");
    assert!(st.last_error.as_deref().unwrap_or("").contains("row 2 refused at commit"), "{st:#?}");
    wait_or_explain(
        CATCH_UP,
        "three failed attempts of sb and of native nb",
        || {
            log_lines(&pair.subscriber, "refused at commit; retrying in").len() >= 3
                && native_apply_errors(&pair, "nb") >= 3
        },
        || {
            format!(
                "sb's origin is at {:X}, nb's at {:X} (the failed transactions are after {before:X})",
                origin_lsn(&pair, "sb"),
                pair.native_origin_lsn("postgres", "nb")
            )
        },
    );
    assert!(origin_lsn(&pair, "sb") <= before, "sb's origin moved past the failed transaction");
    assert!(pair.native_origin_lsn("postgres", "nb") <= before, "native nb's origin moved past the failed transaction");
    for t in TABLES {
        assert_eq!(count(&mut pair.sub_client(), t), 1, "{t}");
    }

    // Fix the trigger: sb's and nb's retries succeed; sa and na, enabled
    // again, apply.
    pair.sub_exec(
        "CREATE OR REPLACE FUNCTION refuse_two() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RETURN NULL; END $$;",
    );
    exec(&mut pair.sub_client(), "SELECT logical_ext.enable_subscription('sa')");
    pair.sub_exec("ALTER SUBSCRIPTION na ENABLE");
    insert(4, "four");
    caught_up();
    pair.assert_same_tables(&["a", "b", "nb"]);
    for t in ["a", "b", "nb"] {
        assert_eq!(count(&mut pair.sub_client(), &format!("{t} WHERE id = 2")), 1, "row 2 of {t} was lost");
    }
    let na_kept = count(&mut pair.sub_client(), "na WHERE id = 2") == 1;
    println!(
        "commit failure with disable_on_error, re-enabled after the fix: logical_ext kept the row; native {}",
        match (na_origin_moved, na_kept) {
            (false, true) => "kept the row too".to_string(),
            (moved, kept) => format!("origin moved past the failed transaction: {moved}, row kept: {kept}"),
        }
    );
}

/// A TCP proxy on 127.0.0.1 to `target`. `freeze()` silently stops
/// forwarding on the connections open at that moment (they stay open);
/// connections accepted later are forwarded normally.
struct Proxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    /// Connections with a number below this are frozen.
    frozen_below: Arc<AtomicUsize>,
    /// Both sockets of every connection, for [`Proxy::reset_all`].
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let frozen_below = Arc::new(AtomicUsize::new(0));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (acc, frz, socks) = (accepted.clone(), frozen_below.clone(), sockets.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let number = acc.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        socks.lock().expect("sockets").push(s);
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().expect("clone"), to.try_clone().expect("clone"));
                    let frz = frz.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            if number < frz.load(Ordering::SeqCst) {
                                // Frozen: neither read nor close; the peer sees silence.
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                            let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if number < frz.load(Ordering::SeqCst) {
                                        // Frozen while reading: drop the bytes, as a dead network does.
                                        continue;
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        if number >= frz.load(Ordering::SeqCst) {
                            let _ = to.shutdown(Shutdown::Both);
                        }
                    });
                }
            }
        });
        Proxy { port, accepted, frozen_below, sockets }
    }

    /// Reset every connection (both ends see it closed at once).
    fn reset_all(&self) {
        for s in self.sockets.lock().expect("sockets").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn freeze_open_connections(&self) {
        self.frozen_below.store(self.accepted.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    }
}

#[test]
fn network_freeze_reconnects() {
    // The publisher drops the frozen connections' walsenders (freeing the
    // slots) soon; the subscriber must notice the silence on its side.
    let pair =
        Pair::start_with("apply_faults_freeze", &["wal_sender_timeout = '3s'"], &["wal_receiver_timeout = '2s'"]);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE n (id int PRIMARY KEY, v text);");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t; CREATE PUBLICATION pn FOR TABLE n;");
    let proxy = Proxy::start(pair.publisher.port());
    let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.port);
    pair.subscribe_with_conninfo("s", &conninfo, &["p"], "");
    // A native subscription through the same proxy, for comparison.
    pair.sub_exec(&format!("CREATE SUBSCRIPTION native CONNECTION '{conninfo}' PUBLICATION pn"));
    pair.wait_streaming("s");
    let load = |what: &str, lo: i32| {
        pair.pub_exec(&format!(
            "INSERT INTO t SELECT g, '{what}' FROM generate_series({lo}, {lo} + 99) g;
             INSERT INTO n SELECT g, '{what}' FROM generate_series({lo}, {lo} + 99) g;"
        ))
    };
    let caught_up = || {
        pair.wait_caught_up("s");
        pair.wait_caught_up("native");
        pair.assert_same_tables(&["t", "n"]);
    };
    load("before", 1);
    caught_up();

    // A freeze: nothing passes, nothing is closed.
    proxy.freeze_open_connections();
    load("during the freeze", 101);
    caught_up();
    assert!(
        !log_lines(&pair.subscriber, "nothing received for wal_receiver_timeout").is_empty(),
        "the subscriber's log says why the connection was given up"
    );

    // Connections reset: both reconnect at once.
    proxy.reset_all();
    load("after the reset", 201);
    caught_up();
}

/// Runs `sql` on a new connection with a statement_timeout; returns how
/// long it took, or the error.
fn timed(cluster: &Cluster, sql: &str) -> Result<Duration, String> {
    let mut c = cluster.client();
    exec(&mut c, "SET statement_timeout = '30s'");
    let t = Instant::now();
    c.batch_execute(sql).map(|_| t.elapsed()).map_err(|e| describe_error(&e))
}

/// Waits until process `pid` is gone from the subscriber's `pg_stat_activity`.
fn wait_gone(pair: &Pair, pid: i32, what: &str) {
    wait_until(PROMPT, what, || count(&mut pair.sub_client(), &format!("pg_stat_activity WHERE pid = {pid}")) == 0);
}

#[test]
fn stop_interrupts_lock_waits() {
    // t: logical_ext's s; n: the native subscription `native`, for comparison.
    let pair = Pair::start_with("apply_faults_lock", &[], &[NATIVE_FAST_RETRY]);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE n (id int PRIMARY KEY, v text);");
    pair.pub_exec(
        "CREATE PUBLICATION p FOR TABLE t; CREATE PUBLICATION pn FOR TABLE n;
         INSERT INTO t VALUES (1, 'one'); INSERT INTO n VALUES (1, 'one');",
    );
    pair.sub_exec("INSERT INTO t VALUES (1, 'one'); INSERT INTO n VALUES (1, 'one');");
    pair.subscribe("s", &["p"], "");
    pair.subscribe_native("postgres", "native", &["pn"], "");
    pair.wait_streaming("s");

    // Another session holds the rows; the workers' UPDATEs wait for it.
    let mut holder = pair.sub_client();
    let hold_and_update = |holder: &mut Client, v: &str| {
        exec(holder, "BEGIN; SELECT * FROM t WHERE id = 1 FOR UPDATE; SELECT * FROM n WHERE id = 1 FOR UPDATE;");
        pair.pub_exec(&format!("UPDATE t SET v = '{v}' WHERE id = 1; UPDATE n SET v = '{v}' WHERE id = 1;"));
    };
    hold_and_update(&mut holder, "changed");
    let pid = pair.wait_applying("s", "t");
    let native = pair.wait_native_applying("postgres", "native", "n");

    // pg_terminate_backend ends both workers while they wait.
    let mut c = pair.sub_client();
    exec(&mut c, &format!("SELECT pg_terminate_backend({pid}), pg_terminate_backend({native})"));
    wait_gone(&pair, pid, "the terminated worker exits during its lock wait");
    wait_gone(&pair, native, "the terminated native worker exits during its lock wait");

    // Restarted, they wait again; disable_subscription stops ours promptly,
    // even called by the session whose lock the worker waits for (which
    // waited for the worker to stop: a deadlock before). Native `ALTER
    // SUBSCRIPTION ... DISABLE` returns at once too, but does not stop its
    // worker: it sees the change only after the transaction it applies.
    let pid2 = pair.wait_applying("s", "t");
    assert_ne!(pid, pid2);
    let native2 = pair.wait_native_applying("postgres", "native", "n");
    assert_ne!(native, native2);
    exec(&mut holder, "SET LOCAL statement_timeout = '30s'");
    let t = Instant::now();
    if let Err(e) = holder.batch_execute("SELECT logical_ext.disable_subscription('s')") {
        panic!("disable_subscription failed: {}\n{}", describe_error(&e), pair.explain("s"));
    }
    let took = t.elapsed();
    assert!(took < PROMPT, "disable_subscription took {took:?}");
    assert_eq!(count(&mut pair.sub_client(), &format!("pg_stat_activity WHERE pid = {pid2}")), 0);
    let t = Instant::now();
    if let Err(e) = holder.batch_execute("ALTER SUBSCRIPTION native DISABLE") {
        panic!("ALTER SUBSCRIPTION native DISABLE failed: {}\n{}", describe_error(&e), pair.explain("native"));
    }
    let native_took = t.elapsed();
    assert!(native_took < PROMPT, "ALTER SUBSCRIPTION native DISABLE took {native_took:?}");
    let native_waits = pair.try_native_worker_pid("postgres", "native") == Some(native2);
    println!(
        "disable during a lock wait: logical_ext returned in {took:?}, worker stopped; native returned in \
         {native_took:?}, worker {}",
        if native_waits { "still waiting for the lock" } else { "stopped" }
    );

    // Nothing lost: once the lock is gone and the subscriptions enabled,
    // the changes arrive.
    exec(&mut holder, "COMMIT");
    exec(&mut c, "SELECT logical_ext.enable_subscription('s'); ALTER SUBSCRIPTION native ENABLE;");
    pair.wait_caught_up("s");
    pair.wait_caught_up("native");
    pair.assert_same_tables(&["t", "n"]);

    // drop_subscription and DROP SUBSCRIPTION, likewise (the native one
    // cannot run in the lock holder's transaction block).
    hold_and_update(&mut holder, "again");
    let pid3 = pair.wait_applying("s", "t");
    let native3 = pair.wait_native_applying("postgres", "native", "n");
    let took = timed(&pair.subscriber, "SELECT logical_ext.drop_subscription('s')")
        .unwrap_or_else(|e| panic!("drop_subscription failed: {e}\n{}", pair.explain("s")));
    assert!(took < PROMPT, "drop_subscription took {took:?}");
    assert_eq!(count(&mut pair.sub_client(), &format!("pg_stat_activity WHERE pid = {pid3}")), 0);
    let native_took = timed(&pair.subscriber, "DROP SUBSCRIPTION native")
        .unwrap_or_else(|e| panic!("DROP SUBSCRIPTION native failed: {e}\n{}", pair.explain("native")));
    assert!(native_took < PROMPT, "DROP SUBSCRIPTION native took {native_took:?}");
    assert_eq!(count(&mut pair.sub_client(), &format!("pg_stat_activity WHERE pid = {native3}")), 0);
    println!("drop during a lock wait: logical_ext returned in {took:?}, native in {native_took:?}");
    exec(&mut holder, "COMMIT");
}

#[test]
fn skip_of_a_transaction_that_never_comes_is_cleared() {
    let pair = Pair::start("apply_faults_skip");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    // No transaction commits at this LSN (it is not even a record's start).
    let lsn = format_lsn(pair.publisher_flush_lsn() + 1);
    exec(&mut pair.sub_client(), &format!("SELECT logical_ext.skip_transaction('s', '{lsn}')"));
    pair.pub_exec("INSERT INTO t VALUES (1, 'kept')");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    let skip: Option<String> = pair
        .sub_client()
        .query_one("SELECT skip_lsn::text FROM logical_ext.subscription WHERE name = 's'", &[])
        .expect("skip_lsn")
        .get(0);
    assert_eq!(skip, None, "skip_lsn {lsn} is cleared once the stream passed it");
    assert!(!log_lines(&pair.subscriber, "skip_lsn of subscription \"s\" cleared").is_empty(), "a WARNING says so");
}

#[test]
fn drop_database_with_workers_running() {
    let pair = Pair::start("apply_faults_dropdb");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE c (id int PRIMARY KEY, v text);");
    pair.pub_exec(
        "CREATE PUBLICATION p FOR TABLE t; CREATE PUBLICATION pc FOR TABLE c;
         INSERT INTO c SELECT g, 'c' FROM generate_series(1, 100) g;",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    // A second subscription whose table copy cannot finish: the
    // subscriber's table is locked, so its sync worker waits for the lock
    // and its apply worker waits for the copy.
    let mut locker = subscribe_copy_blocked(&pair);
    wait_until(CATCH_UP, "a sync worker copies c", || {
        count(&mut pair.sub_client(), "pg_stat_activity WHERE backend_type = 'logical_ext sync'") >= 1
    });

    for round in 0..2 {
        pair.sub_exec(&format!("CREATE DATABASE scratch{round}"));
        let took = timed(&pair.subscriber, &format!("DROP DATABASE scratch{round}"))
            .unwrap_or_else(|e| panic!("DROP DATABASE failed: {e}\n{}", pair.explain("s")));
        assert!(took < PROMPT, "DROP DATABASE took {took:?}");
    }
    // DROP TABLESPACE waits for a barrier too.
    let dir = pair.subscriber.dir().join("scratch_tablespace");
    std::fs::create_dir_all(&dir).expect("tablespace directory");
    if running_as_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the tablespace directory");
    }
    pair.sub_exec(&format!("CREATE TABLESPACE scratch LOCATION '{}'", dir.display()));
    let took = timed(&pair.subscriber, "DROP TABLESPACE scratch")
        .unwrap_or_else(|e| panic!("DROP TABLESPACE failed: {e}\n{}", pair.explain("s")));
    assert!(took < PROMPT, "DROP TABLESPACE took {took:?}");

    // Both subscriptions go on.
    exec(&mut locker, "COMMIT");
    pair.pub_exec("INSERT INTO t VALUES (1, 'one'); INSERT INTO c VALUES (101, 'c');");
    pair.wait_caught_up("s");
    pair.wait_caught_up("sc");
    pair.assert_same_tables(&["t", "c"]);
}

#[test]
fn launcher_needs_no_postgres_database() {
    let mut pair = Pair::start("apply_faults_nopostgres");
    pair.pub_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t;");
    pair.sub_exec("CREATE DATABASE app");
    let mut app = pair.subscriber.client_db("app");
    exec(&mut app, "CREATE EXTENSION logical_ext; CREATE TABLE t (id int PRIMARY KEY, v text);");
    exec(
        &mut app,
        &format!(
            "SELECT logical_ext.create_subscription('s', '{}', ARRAY['p'], copy_data => false, \
             options => '{FAST_RETRY}')",
            pair.publisher_conninfo()
        ),
    );
    drop(app);
    let mut app = pair.subscriber.client_db("app");
    exec(&mut app, "SET statement_timeout = '30s'");
    exec(&mut app, "DROP DATABASE postgres");
    drop(app);
    pair.subscriber.restart();

    // After the restart the worker starts (the launcher lists the databases
    // without connecting to `postgres`) and applies.
    pair.pub_exec("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g");
    let target = pair.publisher_flush_lsn();
    wait_or_explain(
        CATCH_UP,
        "the subscription in database app confirms the publisher's position after a restart",
        || pair.confirmed_flush("s").is_some_and(|c| c >= target),
        || pair.subscriber.log_tail(20),
    );
    assert_eq!(count(&mut pair.subscriber.client_db("app"), "t"), 10);
}

/// Whether process `pid` still exists (and is not a zombie).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// Subscription `sc` (publication `pc`, table `c`) whose copy cannot
/// finish: the returned session holds an ACCESS EXCLUSIVE lock on the
/// subscriber's `c` until it is dropped.
fn subscribe_copy_blocked(pair: &Pair) -> Client {
    let mut locker = pair.sub_client();
    exec(&mut locker, "BEGIN; LOCK TABLE c IN ACCESS EXCLUSIVE MODE;");
    exec(
        &mut pair.sub_client(),
        &format!(
            "SELECT logical_ext.create_subscription('sc', '{}', ARRAY['pc'], options => '{FAST_RETRY}')",
            pair.publisher_conninfo()
        ),
    );
    locker
}

#[test]
fn postmaster_death_ends_the_workers() {
    let pair = Pair::start("apply_faults_pmdeath");
    pair.both_exec("CREATE TABLE c (id int PRIMARY KEY, v text)");
    pair.pub_exec("CREATE PUBLICATION pc FOR TABLE c; INSERT INTO c SELECT g, 'c' FROM generate_series(1, 100) g;");
    // The apply worker waits for a table copy (its sync worker waits for a
    // lock held by another session).
    let locker = subscribe_copy_blocked(&pair);
    let mut pids: Vec<i32> = Vec::new();
    wait_until(CATCH_UP, "an apply worker and a sync worker run", || {
        pids = pair
            .sub_client()
            .query(
                "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('logical_ext apply', 'logical_ext sync')",
                &[],
            )
            .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0)).collect())
            .unwrap_or_default();
        pids.len() >= 2
    });
    let postmaster: i32 = std::fs::read_to_string(pair.subscriber.data_dir().join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    let killed = std::process::Command::new("kill").args(["-9", &postmaster.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -9 the subscriber's postmaster");
    drop(locker);
    let gone = poll_until(PROMPT, || pids.iter().all(|&p| !process_alive(p)));
    let left: Vec<i32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    // Leave no orphan behind, whatever the outcome.
    for p in &left {
        let _ = std::process::Command::new("kill").args(["-9", &p.to_string()]).status();
    }
    assert!(gone, "workers {left:?} kept running after the postmaster died");
}

#[test]
fn reconnect_waits_for_the_old_walsender() {
    let pair = Pair::start("apply_faults_slot_busy");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let mut publisher = pair.pub_client();
    let walsender: i32 =
        publisher.query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's'", &[]).unwrap().get(0);
    stop_while_waiting(&pair.publisher, walsender, &["Activity", "Client"]);
    // A settings change: the worker ends its session and connects again.
    exec(&mut pair.sub_client(), "SELECT logical_ext.set_conflict_resolution('s', 'skip', 'delete_missing')");
    let busy = format!("is active for PID {walsender}");
    wait_until(CATCH_UP, "START_REPLICATION finds the slot held by the old walsender", || {
        !log_lines(&pair.publisher, &busy).is_empty()
    });
    send_signal(walsender, "CONT");
    pair.pub_exec("INSERT INTO t VALUES (1, 'after')");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    let reported = log_lines(&pair.subscriber, "could not start replication");
    assert!(reported.is_empty(), "the wait for our own old walsender is not an error: {reported:#?}");
    assert_eq!(pair.status("s").last_error, None);
}
