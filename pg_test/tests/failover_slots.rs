//! Publisher failover on PostgreSQL 15 (issue 16, parts 3 and 4): a
//! primary with a physical standby that keeps copies of its failover slots
//! (`logical_ext.synchronize_slots`), walsenders held back to the standby
//! (`logical_ext.standby_slot_names`), and a logical_ext subscriber whose
//! connection string lists both hosts. After `pg_ctl promote` the
//! subscriber continues from the new primary, nothing lost or duplicated.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use postgres::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PRIMARY_CONF: &[&str] = &["shared_preload_libraries = 'logical_ext'", "wal_sender_timeout = '3s'"];
const STANDBY_CONF: &[&str] =
    &["hot_standby_feedback = on", "logical_ext.synchronize_slots = on", "wal_receiver_status_interval = '1s'"];

fn promote(c: &Cluster) {
    run_checked(
        c.pg_command("pg_ctl").arg("-D").arg(c.data_dir()).args(["-w", "-t", "60", "promote"]),
        &format!("promote {}", c.name()),
    );
}

fn both_hosts(a: &Cluster, b: &Cluster) -> String {
    format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=5",
        a.port(),
        b.port()
    )
}

/// (safe, persistent, reason) of a slot in `failover_readiness()`.
fn readiness(c: &Cluster, slot: &str) -> Option<(bool, bool, Option<String>)> {
    let mut cl = try_client(c).ok()?;
    let row = cl
        .query_opt(
            "SELECT safe, persistent, reason FROM logical_ext.failover_readiness() WHERE slot_name = $1",
            &[&slot],
        )
        .ok()??;
    Some((row.get(0), row.get(1), row.get(2)))
}

fn local_slot_exists(c: &Cluster, slot: &str) -> bool {
    try_client(c)
        .ok()
        .and_then(|mut cl| {
            cl.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).ok().map(|r| r.is_some())
        })
        .unwrap_or(true)
}

fn digest_of(c: &mut Client) -> (i64, String) {
    let n = count(c, "t");
    (n, digest(c, "SELECT id, v FROM t", "id"))
}

/// A primary with a publication, its standby (slot `sby`, synchronizing),
/// and `logical_ext.standby_slot_names = 'sby'` when `rule`.
fn primary_and_standby(name: &str, rule: bool) -> (Cluster, Cluster) {
    let primary = Cluster::start(&format!("{name}_pri"), PRIMARY_CONF);
    primary.exec(
        "CREATE EXTENSION logical_ext;
         CREATE TABLE t (id bigint PRIMARY KEY, v text);
         CREATE TABLE q (id bigserial PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE t, q;",
    );
    let standby = Cluster::standby_of(&primary, &format!("{name}_sby"), "sby", STANDBY_CONF);
    if rule {
        // After the base backup: postgresql.auto.conf is not replicated.
        primary.exec("ALTER SYSTEM SET logical_ext.standby_slot_names = 'sby'");
        primary.exec("SELECT pg_reload_conf()");
    }
    (primary, standby)
}

/// A subscriber of `p` on `primary` (and `standby` in the connection
/// string), its slot `s` marked for failover before it streams: by the
/// subscription's option `failover`, or on the primary.
fn subscriber_of(name: &str, primary: &Cluster, standby: &Cluster, by_option: bool) -> Cluster {
    let sub = Cluster::start(&format!("{name}_sub"), SUBSCRIBER_CONF);
    sub.exec(
        "CREATE EXTENSION logical_ext; CREATE TABLE t (id bigint PRIMARY KEY, v text);
         CREATE TABLE q (id bigserial PRIMARY KEY, v text);",
    );
    let options = if by_option {
        r#"{"retry_min_delay_ms": 100, "retry_max_delay_ms": 1000, "failover": true}"#
    } else {
        FAST_RETRY
    };
    let sql = format!(
        "SELECT logical_ext.create_subscription('s', '{}', '{{p}}', copy_data => false, enabled => {by_option}, \
         options => '{options}')",
        both_hosts(primary, standby)
    );
    sub.exec(&sql);
    if !by_option {
        primary.exec("SELECT logical_ext.set_slot_failover('s')");
        sub.exec("SELECT logical_ext.enable_subscription('s')");
    }
    let mut pc = primary.client();
    wait_until(CATCH_UP, "the slot s is marked for failover", || {
        count(&mut pc, "logical_ext.failover_slot WHERE slot_name = 's'") == 1
    });
    sub
}

/// The subscription's status and the subscriber log's tail, for a failed wait.
fn explain(sub: &Cluster) -> String {
    let status = try_client(sub)
        .ok()
        .and_then(|mut c| c.query_opt(&format!("{STATUS_SQL} WHERE name = 's'"), &[]).ok().flatten())
        .map(|r| format!("state {:?}, last_error {:?}", r.get::<_, String>(3), r.get::<_, Option<String>>(11)))
        .unwrap_or_default();
    format!("{status}\n--- subscriber log:\n{}", sub.log_tail(30))
}

/// Wait until the standby's copy of `slot` is safe, with a CHECKPOINT on
/// the primary every second (its running-xacts record moves the primary's
/// slot, which a first sync waits for; PostgreSQL logs one only every 15 s).
fn wait_safe(primary: &Cluster, standby: &Cluster, slot: &str, what: &str) {
    let mut last = Instant::now();
    let seen = std::cell::RefCell::new(None);
    wait_or_explain(
        CATCH_UP,
        what,
        || {
            if last.elapsed() > Duration::from_secs(1) {
                let _ = try_client(primary).map(|mut c| c.batch_execute("CHECKPOINT"));
                last = Instant::now();
            }
            let r = readiness(standby, slot);
            let done = r.as_ref().is_some_and(|(safe, persistent, _)| *safe && *persistent);
            *seen.borrow_mut() = r;
            done
        },
        || format!("readiness: {:?}\n--- standby log:\n{}", seen.borrow(), standby.log_tail(30)),
    );
}

/// pgbench on `primary` (2 clients, a custom script inserting into `q`,
/// whose ids come from its sequence) until the server goes away.
fn pgbench(primary: &Cluster) -> std::process::Child {
    let script = primary.dir().join("q.sql");
    std::fs::write(&script, "INSERT INTO q (v) VALUES (md5(random()::text));\n").unwrap();
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(&script, Some(uid), Some(gid)).unwrap();
    primary
        .pg_command("pgbench")
        .args(["-n", "-c", "2", "-T", "120", "-f"])
        .arg(&script)
        .arg(primary.conninfo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbench")
}

/// A writer committing one row per transaction until stopped or its
/// server goes away; ids from `start`.
fn writer(conninfo: String, start: i64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let Ok(mut c) = postgres::Client::connect(&conninfo, postgres::NoTls) else { return 0 };
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if c.execute("INSERT INTO t VALUES ($1::bigint, md5($1::bigint::text))", &[&(start + n)]).is_err() {
                break;
            }
            n += 1;
        }
        n
    })
}

#[test]
fn the_subscriber_follows_three_promotions_with_nothing_lost_or_duplicated() {
    let began = Instant::now();
    let (mut primary, mut standby) = primary_and_standby("fo_chain", true);
    let sub = subscriber_of("fo_chain", &primary, &standby, true);
    let mut sc = sub.client();
    let mut next_id = 1_000_000i64;
    for round in 1..=3 {
        // Load on the primary while the standby's copy gets ready.
        let stop = Arc::new(AtomicBool::new(false));
        let w = writer(primary.conninfo(), next_id, stop.clone());
        let mut bench = pgbench(&primary);
        wait_safe(&primary, &standby, "s", &format!("round {round}: the standby's copy of s is safe"));
        let applied = count(&mut sc, "t");
        wait_until(CATCH_UP, "the subscriber applies under load", || count(&mut sc, "t") > applied + 200);
        // Failover mid-load: the old primary dies, the standby is promoted.
        primary.stop_with("immediate");
        stop.store(true, Ordering::Relaxed);
        let written = w.join().expect("writer");
        assert!(written > 0);
        // pgbench ends with the server (its clients' connections are gone).
        let _ = bench.wait();
        promote(&standby);
        let new_primary = standby;
        // More changes on the new primary, then both must be equal.
        new_primary.exec(&format!(
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({0}, {0} + 99) g",
            next_id + 500_000
        ));
        next_id += 1_000_000;
        let mut pc = new_primary.client();
        let expected = digest_of(&mut pc);
        let got = std::cell::RefCell::new((0, String::new()));
        wait_or_explain(
            CATCH_UP,
            &format!("round {round}: the subscriber equals the promoted primary ({} rows)", expected.0),
            || {
                let d = digest_of(&mut sc);
                let done = d == expected;
                *got.borrow_mut() = d;
                done
            },
            || format!("subscriber: {} rows, new primary: {} rows\n{}", got.borrow().0, expected.0, explain(&sub)),
        );
        // pgbench's table too, and its sequence on the subscriber ahead of
        // every id used on the new primary (SEQ documents from the new
        // primary's capture worker).
        let q_expected = (count(&mut pc, "q"), digest(&mut pc, "SELECT id, v FROM q", "id"));
        assert!(q_expected.0 > 0, "pgbench wrote nothing");
        wait_until(CATCH_UP, &format!("round {round}: q equals the promoted primary's"), || {
            (count(&mut sc, "q"), digest(&mut sc, "SELECT id, v FROM q", "id")) == q_expected
        });
        let max_q: i64 = pc.query_one("SELECT max(id) FROM q", &[]).unwrap().get(0);
        wait_until(CATCH_UP, &format!("round {round}: q_id_seq on the subscriber reaches {max_q}"), || {
            sc.query_one("SELECT last_value FROM q_id_seq", &[]).unwrap().get::<_, i64>(0) >= max_q
        });
        let next: i64 = sc.query_one("SELECT nextval('q_id_seq')", &[]).unwrap().get(0);
        assert!(next > max_q, "round {round}: the subscriber's next id {next} is not past {max_q}");
        println!(
            "round {round}: t {} rows and q {} rows (pgbench) identical after promotion ({written} written by the \
             writer during the load); q_id_seq ahead",
            expected.0, q_expected.0
        );
        // The next round's standby, and the subscription's hosts.
        let next_standby = Cluster::standby_of(&new_primary, &format!("fo_chain_sby{round}"), "sby", STANDBY_CONF);
        new_primary.exec("ALTER SYSTEM SET logical_ext.standby_slot_names = 'sby'");
        new_primary.exec("SELECT pg_reload_conf()");
        sub.exec(&format!(
            "SELECT logical_ext.alter_subscription('s', jsonb_build_object('conninfo', '{}'::text))",
            both_hosts(&new_primary, &next_standby)
        ));
        drop(std::mem::replace(&mut primary, new_primary));
        standby = next_standby;
    }
    println!("three promotions in {:?}", began.elapsed());
}

#[test]
fn first_sync_is_not_safe_and_unmarked_or_dropped_slots_leave_the_standby() {
    let (primary, standby) = primary_and_standby("fo_marks", true);
    // A slot nobody consumes: the primary's copy never moves past the
    // standby's fresh reservation, so it stays in its first sync.
    primary.exec(
        "SELECT pg_create_logical_replication_slot('idle', 'logical_ext');
         SELECT logical_ext.set_slot_failover('idle');",
    );
    wait_until(CATCH_UP, "the standby reports idle", || readiness(&standby, "idle").is_some());
    wait_until(CATCH_UP, "the standby has a temporary copy of idle", || local_slot_exists(&standby, "idle"));
    let (safe, persistent, reason) = readiness(&standby, "idle").unwrap();
    assert!(!safe && !persistent, "a slot in its first sync is not safe: {reason:?}");
    let reason = reason.expect("a reason");
    assert!(reason.contains("first sync") || reason.contains("snapshot"), "{reason}");

    // Errors are data with a SQLSTATE.
    let mut pc = primary.client();
    let (state, _, _) = expect_error(&mut pc, "SELECT logical_ext.set_slot_failover('nosuch')");
    assert_eq!(state, "42704");

    // Unmark: the copy goes.
    primary.exec("SELECT logical_ext.set_slot_failover('idle', false)");
    wait_until(CATCH_UP, "the copy of an unmarked slot is dropped", || !local_slot_exists(&standby, "idle"));
    // Mark again, then drop on the primary: the copy goes too.
    primary.exec("SELECT logical_ext.set_slot_failover('idle')");
    wait_until(CATCH_UP, "a copy again", || local_slot_exists(&standby, "idle"));
    primary.exec("SELECT pg_drop_replication_slot('idle')");
    wait_until(CATCH_UP, "the copy of a dropped slot is dropped", || !local_slot_exists(&standby, "idle"));
}

/// The rule holds a walsender back while the standby is away, and the
/// walsender keeps answering its client meanwhile (wal_sender_timeout 3 s:
/// the subscriber is not cut off); without the rule the same failover
/// leaves the subscriber with transactions the promoted standby never had.
#[test]
fn the_rule_holds_changes_back_while_answering_and_its_absence_loses_them() {
    let (primary, mut standby) = primary_and_standby("fo_rule", true);
    let sub = subscriber_of("fo_rule", &primary, &standby, false);
    let mut sc = sub.client();
    primary.exec("INSERT INTO t VALUES (1, 'a')");
    wait_until(CATCH_UP, "row 1 applied", || count(&mut sc, "t") == 1);
    let mut pc = primary.client();
    let walsender = |pc: &mut Client| -> Option<i32> {
        pc.query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's'", &[]).ok()?.get(0)
    };
    let pid = walsender(&mut pc).expect("s is streaming");

    standby.stop_with("fast");
    primary.exec("INSERT INTO t VALUES (2, 'b')");
    // Three wal_sender_timeouts: nothing arrives, the walsender stays.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(9) {
        assert_eq!(count(&mut sc, "t"), 1, "row 2 reached the subscriber before the standby had it");
        assert_eq!(walsender(&mut pc), Some(pid), "the walsender was restarted while waiting");
        std::thread::sleep(Duration::from_millis(300));
    }
    standby.start_stopped();
    wait_until(CATCH_UP, "row 2 arrives once the standby flushed it", || count(&mut sc, "t") == 2);
    assert_eq!(walsender(&mut pc), Some(pid), "the same walsender resumed");
    assert!(
        !std::fs::read_to_string(primary.log_path()).unwrap_or_default().contains("replication timeout"),
        "no walsender was ended by wal_sender_timeout"
    );

    // Without the rule: the subscriber gets row 3, the standby does not.
    primary.exec("ALTER SYSTEM RESET logical_ext.standby_slot_names");
    primary.exec("SELECT pg_reload_conf()");
    standby.stop_with("fast");
    primary.exec("INSERT INTO t VALUES (3, 'c')");
    wait_until(CATCH_UP, "row 3 applied without the rule", || count(&mut sc, "t") == 3);
    let mut primary = primary;
    primary.stop_with("immediate");
    standby.start_stopped();
    promote(&standby);
    let mut nc = standby.client();
    assert_eq!(count(&mut nc, "t"), 2, "the promoted standby never got row 3");
    assert_eq!(count(&mut sc, "t"), 3, "the subscriber has a row the new primary does not: diverged");
    println!("without standby_slot_names: subscriber 3 rows, promoted standby 2 rows");
}
