//! Publisher failover driven by pg_auto_failover (issue 16): "the same
//! failover driven by pg_auto_failover, the HA manager users actually run:
//! its promotion, our slots and subscriptions following it with no manual
//! step".
//!
//! The publisher is a pg_auto_failover formation (monitor, primary,
//! secondary; `autofailover::Formation`) whose data nodes preload
//! logical_ext, sync failover slots on the standby
//! (`logical_ext.synchronize_slots = on`) and hold the primary's logical
//! walsenders behind the other node's physical slot
//! (`logical_ext.standby_slot_names = 'pgautofailover_standby_<id>'`, per
//! node). A logical_ext subscriber (a separate cluster) subscribes with a
//! connection string listing both nodes (`target_session_attrs=read-write`)
//! and the option `failover` (its worker marks its slot for failover). A writer inserts numbered rows, one
//! transaction each, through the same kind of connection string, across:
//!
//! 1. `pg_autoctl perform failover` (a switchover: the primary is demoted and
//!    rejoins as a standby);
//! 2. a real failover: the new primary's keeper and Postgres are killed
//!    (SIGKILL), the monitor promotes the other node, and the killed node's
//!    `pg_autoctl run` is started again (what its service manager does): it
//!    rejoins as a standby.
//!
//! After each, the subscriber applies rows written on the promoted node with
//! nobody touching the subscription or the slots. At the end the
//! subscriber's table equals the primary's (count and md5), with every id
//! once.
//!
//! Needs pg_auto_failover (scripts/setup.sh installs it); without it the test
//! fails unless LOGICAL_EXT_SKIP_AUTOFAILOVER=1. Needs logical_ext's failover
//! slots (`logical_ext.set_slot_failover`, `logical_ext.failover_readiness`):
//! with a build that has none the test says so and stops after the formation
//! is up — not a pass of the failover part.

use logical_ext_pg_test::autofailover::{Formation, require_pg_auto_failover, standby_slot_name};
use logical_ext_pg_test::replication::{CATCH_UP, FAST_RETRY, SUBSCRIBER_CONF, digest, wait_or_explain};
use logical_ext_pg_test::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The data nodes' settings (after the harness's; see autofailover.rs for
/// how they reach both nodes).
const NODE_CONF: &[&str] = &[
    "shared_preload_libraries = 'pg_stat_statements, logical_ext'",
    "output_plugin_libraries = 'pgoutput, test_decoding, logical_ext'",
    "logical_ext.synchronize_slots = on",
    "logical_ext.slot_sync_database = 'postgres'",
];

/// A thread inserting ids 1, 2, 3, … one transaction each through a
/// connection string listing both nodes; on an error it reconnects (libpq's
/// `target_session_attrs=read-write` finds the primary) and inserts the same
/// id again (`ON CONFLICT DO NOTHING`: the first attempt may have committed).
struct Writer {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicI64>,
    handle: Option<JoinHandle<u64>>,
}

impl Writer {
    fn start(conninfo: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicI64::new(0));
        let (s, l) = (stop.clone(), last.clone());
        let handle = std::thread::spawn(move || {
            let mut client: Option<Client> = None;
            let mut next: i64 = 1;
            let mut failures = 0u64;
            while !s.load(Ordering::Relaxed) {
                let c = match &mut client {
                    Some(c) => c,
                    None => match Client::connect(&conninfo, NoTls) {
                        Ok(c) => client.insert(c),
                        Err(_) => {
                            failures += 1;
                            // A retry pause while no node accepts writes.
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    },
                };
                match c.execute("INSERT INTO t (id) VALUES ($1) ON CONFLICT DO NOTHING", &[&next]) {
                    Ok(_) => {
                        l.store(next, Ordering::Relaxed);
                        next += 1;
                    }
                    Err(_) => {
                        failures += 1;
                        client = None;
                    }
                }
            }
            failures
        });
        Writer { stop, last, handle: Some(handle) }
    }

    /// The last id whose insert was acknowledged.
    fn last(&self) -> i64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Stops the writer; returns the last id written and how many attempts failed.
    fn finish(mut self) -> (i64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.handle.take().expect("joined once").join().expect("the writer thread panicked");
        (self.last(), failures)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn query_bool(c: &mut Client, sql: &str) -> bool {
    match c.query_one(sql, &[]) {
        Ok(r) => r.get::<_, Option<bool>>(0).unwrap_or(false),
        Err(e) => panic!("SQL failed: {}\n--- SQL:\n{sql}", describe_error(&e)),
    }
}

/// Whether `sql` (one boolean) is true on data node `idx`; unreachable = false.
fn node_says(f: &Formation, idx: usize, sql: &str) -> bool {
    f.nodes[idx]
        .try_client()
        .ok()
        .and_then(|mut c| c.query_one(sql, &[]).ok())
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false)
}

fn sub_says(sub: &Cluster, sql: &str) -> bool {
    Client::connect(&sub.conninfo(), NoTls)
        .ok()
        .and_then(|mut c| c.query_one(sql, &[]).ok())
        .and_then(|r| r.get::<_, Option<bool>>(0))
        .unwrap_or(false)
}

fn explain(f: &Formation, sub: &Cluster) -> String {
    let status = Client::connect(&sub.conninfo(), NoTls)
        .ok()
        .and_then(|mut c| {
            c.query_one(
                "SELECT format('state=%s worker=%s applied=%s error=%s', state, worker_pid, applied_lsn, last_error) \
                 FROM logical_ext.subscription_status WHERE name = 's'",
                &[],
            )
            .ok()
        })
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .unwrap_or_default();
    let mut readiness = String::new();
    for (i, n) in f.nodes.iter().enumerate() {
        let rows = n
            .try_client()
            .ok()
            .and_then(|mut c| c.query("SELECT format('%s', r) FROM logical_ext.failover_readiness() r", &[]).ok());
        let rows: Vec<String> = rows.unwrap_or_default().iter().map(|r| r.get(0)).collect();
        readiness.push_str(&format!("--- node {i} ({}) failover_readiness: {rows:?}\n", n.name()));
    }
    format!("--- subscription s: {status}\n{readiness}--- subscriber log:\n{}\n{}", sub.log_tail(25), f.explain())
}

/// Waits until the copy of slot `s` on standby node `idx` is safe to fail
/// over to (`failover_readiness()` there).
fn wait_copy_safe(f: &Formation, sub: &Cluster, idx: usize) {
    wait_or_explain(
        CATCH_UP,
        &format!("the copy of slot s on {} is safe", f.nodes[idx].name()),
        || {
            node_says(
                f,
                idx,
                "SELECT coalesce(bool_and(safe), false) FROM logical_ext.failover_readiness() WHERE slot_name = 's'",
            )
        },
        || explain(f, sub),
    );
}

/// Waits until the subscriber holds a row with an id above `after`
/// written on node `idx` (its port is the row's `node`); returns how long.
fn wait_row_from(f: &Formation, sub: &Cluster, idx: usize, after: i64, what: &str) -> Duration {
    let start = Instant::now();
    let port = f.nodes[idx].port();
    wait_or_explain(
        CATCH_UP,
        &format!("the subscriber applies a row written on {} after id {after} ({what})", f.nodes[idx].name()),
        || sub_says(sub, &format!("SELECT EXISTS (SELECT FROM t WHERE id > {after} AND node = {port})")),
        || explain(f, sub),
    );
    start.elapsed()
}

#[test]
fn the_subscription_follows_pg_auto_failover_promotions() {
    const TEST: &str = "the_subscription_follows_pg_auto_failover_promotions";
    if !require_pg_auto_failover(TEST) {
        return;
    }
    let started = Instant::now();
    let mut f = Formation::start("af", NODE_CONF);
    let (id0, id1) = (f.node_id(0), f.node_id(1));
    // Each node's logical walsenders wait for the other node's physical slot.
    f.set_node_local_conf(0, &[format!("logical_ext.standby_slot_names = '{}'", standby_slot_name(id1))]);
    f.set_node_local_conf(1, &[format!("logical_ext.standby_slot_names = '{}'", standby_slot_name(id0))]);
    eprintln!("formation up in {:?} (nodes {id0} and {id1})", started.elapsed());

    let mut primary = f.nodes[0].client();
    exec(&mut primary, "CREATE EXTENSION logical_ext");
    let has_api = query_bool(
        &mut primary,
        "SELECT to_regprocedure('logical_ext.set_slot_failover(name, boolean)') IS NOT NULL \
         AND to_regprocedure('logical_ext.failover_readiness()') IS NOT NULL",
    );
    if !has_api {
        eprintln!(
            "NOT YET POSSIBLE {TEST}: this build of logical_ext has no failover slots \
             (logical_ext.set_slot_failover / failover_readiness, issue 16 item 3); the pg_auto_failover \
             formation came up, the failover of the subscription was NOT tested"
        );
        return;
    }
    exec(
        &mut primary,
        "CREATE TABLE t (id bigint PRIMARY KEY, node int NOT NULL DEFAULT current_setting('port')::int, \
                         at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE PUBLICATION p FOR TABLE t",
    );

    let sub = Cluster::start("af_sub", SUBSCRIBER_CONF);
    // No primary key: a row applied twice shows as two rows.
    sub.exec("CREATE EXTENSION logical_ext; CREATE TABLE t (id bigint, node int, at timestamptz)");
    let conninfo = f.multi_host_conninfo();
    let mut sc = sub.client();
    // The option `failover`: the worker marks its slot on the publisher
    // (set_slot_failover) before each START_REPLICATION.
    let options = FAST_RETRY.replace('{', r#"{"failover": true, "#);
    if let Err(e) = sc.execute(
        "SELECT logical_ext.create_subscription('s', $1::text, ARRAY['p'], copy_data => false, options => $2::text::jsonb)",
        &[&conninfo, &options],
    ) {
        panic!("create_subscription: {}", describe_error(&e));
    }
    wait_or_explain(
        CATCH_UP,
        "subscription s streams from the primary",
        || {
            sub_says(
                &sub,
                "SELECT EXISTS (SELECT FROM logical_ext.subscription_status WHERE name = 's' AND state = 'streaming')",
            ) && node_says(&f, 0, "SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 's')")
        },
        || explain(&f, &sub),
    );
    assert!(
        query_bool(&mut primary, "SELECT EXISTS (SELECT FROM logical_ext.failover_slot WHERE slot_name = 's')"),
        "the worker marked its slot for failover"
    );
    drop(primary);

    let writer = Writer::start(conninfo.clone());
    wait_row_from(&f, &sub, 0, 100, "load on the first primary");
    wait_copy_safe(&f, &sub, 1);

    // 1. Switchover by pg_auto_failover.
    let before = writer.last();
    let t = Instant::now();
    f.perform_failover(0, 1);
    let switched = t.elapsed();
    let resumed = wait_row_from(&f, &sub, 1, before, "after pg_autoctl perform failover");
    eprintln!(
        "switchover: pg_autoctl perform failover took {switched:?}; the subscriber applied the new primary's rows {resumed:?} later"
    );

    // 2. A real failover: the new primary dies whole.
    wait_copy_safe(&f, &sub, 0);
    wait_row_from(&f, &sub, 1, writer.last(), "load on the second primary");
    let before = writer.last();
    let t = Instant::now();
    f.kill_node(1);
    f.wait_state("the monitor promotes the surviving node", |st| {
        st.iter().any(|n| n.node_id == id0 && (n.current == "wait_primary" || n.current == "primary"))
    });
    let promoted = t.elapsed();
    f.restart_node(1);
    f.wait_roles(0, 1);
    let rejoined = t.elapsed();
    let resumed = wait_row_from(&f, &sub, 0, before, "after the failover");
    eprintln!(
        "failover: promoted {promoted:?} after the kill, the killed node rejoined at {rejoined:?}, \
         the subscriber applied the promoted node's rows {resumed:?} later"
    );

    let (last, failures) = writer.finish();
    let mut primary = f.nodes[0].client();
    let lsn = query_string(&mut primary, "SELECT pg_current_wal_lsn()::text");
    wait_or_explain(
        CATCH_UP,
        &format!("slot s on the primary confirms {lsn}"),
        || {
            node_says(
                &f,
                0,
                &format!(
                    "SELECT coalesce((SELECT confirmed_flush_lsn >= '{lsn}' FROM pg_replication_slots WHERE slot_name = 's'), false)"
                ),
            )
        },
        || explain(&f, &sub),
    );
    let (n, max): (i64, i64) = {
        let r = primary.query_one("SELECT count(*), coalesce(max(id), 0) FROM t", &[]).expect("count on the primary");
        (r.get(0), r.get(1))
    };
    assert!(
        n >= last && n == max,
        "the primary holds ids 1..{max} without a hole ({n} rows, last acknowledged {last})"
    );
    let mut sc = sub.client();
    let dups: i64 = sc.query_one("SELECT count(*) - count(DISTINCT id) FROM t", &[]).expect("dups").get(0);
    assert_eq!(dups, 0, "rows applied twice on the subscriber");
    let want = digest(&mut primary, "SELECT id, node, at FROM t", "id");
    let got = digest(&mut sc, "SELECT id, node, at FROM t", "id");
    assert_eq!(got, want, "the subscriber's rows equal the primary's (count md5)\n{}", explain(&f, &sub));
    eprintln!(
        "{n} rows, {failures} failed write attempts across two promotions, nothing lost or duplicated; {:?} in all",
        started.elapsed()
    );
}
