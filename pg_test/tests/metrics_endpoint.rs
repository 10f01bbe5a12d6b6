//! Issue 18 (in-server half): the figures operators rely on, gathered on real
//! clusters, and the HTTP endpoint `logical_ext.metrics_listen` that serves
//! them — fetched with a plain `TcpStream`, checked with `promtool check
//! metrics` when promtool is installed (scripts/setup.sh installs it).

use logical_ext_pg_test::decoding::create_slot;
use logical_ext_pg_test::*;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Sends `request` to 127.0.0.1:`port` and returns (status, headers, body).
fn http(port: u16, request: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    Ok((status, head.to_string(), body.to_string()))
}

fn get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
    http(port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/plain\r\n\r\n"))
}

/// Waits until the endpoint on `port` answers `GET /metrics` with 200.
fn scrape(port: u16) -> String {
    let mut last = String::new();
    let ok = poll_until(TIMEOUT, || match get(port, "/metrics") {
        Ok((200, _, body)) => {
            last = body;
            true
        }
        Ok((status, head, body)) => {
            last = format!("{status}: {head}\n{body}");
            false
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    assert!(ok, "no 200 from http://127.0.0.1:{port}/metrics: {last}");
    last
}

/// `(labels, value)` of every sample of `family` (one plain-text parse:
/// enough for the names and labels we produce).
fn samples(text: &str, family: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        if name != family {
            continue;
        }
        let mut map = BTreeMap::new();
        for kv in labels.split("\",").filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once("=\"").unwrap();
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.push((map, value.parse::<f64>().unwrap()));
    }
    out
}

fn value_of(text: &str, family: &str, slot: Option<&str>) -> Option<f64> {
    samples(text, family)
        .into_iter()
        .find(|(l, _)| slot.is_none_or(|s| l.get("slot_name").map(String::as_str) == Some(s)))
        .map(|(_, v)| v)
}

/// `promtool check metrics` on `text`, when promtool is installed.
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: `promtool check metrics` skipped (scripts/setup.sh installs it)");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- text\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics_worker_pid(c: &mut Client) -> Option<i32> {
    c.query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical_ext metrics'", &[])
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn endpoint_is_off_by_default() {
    let port = free_port();
    let cluster = Cluster::start("metrics_off", &["shared_preload_libraries = 'logical_ext'"]);
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext");
    assert_eq!(query_string(&mut c, "SHOW logical_ext.metrics_listen"), "");
    // Give a worker that should not exist time to show up: the sampler does.
    wait_until(TIMEOUT, "the sampler runs", || {
        c.query_one("SELECT running FROM logical_ext.sampler_status()", &[]).unwrap().get::<_, bool>(0)
    });
    assert_eq!(metrics_worker_pid(&mut c), None, "no metrics worker when metrics_listen is empty");
    // Setting it at reload does not start one (documented: needs a restart).
    exec(&mut c, &format!("ALTER SYSTEM SET logical_ext.metrics_listen = '127.0.0.1:{port}'"));
    exec(&mut c, "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens on {port}");
    assert_eq!(metrics_worker_pid(&mut c), None);
}

#[test]
fn endpoint_serves_get_metrics_only_and_survives_reload_restart_and_worker_exit() {
    let port = free_port();
    let mut cluster = Cluster::start(
        "metrics_http",
        &[
            "shared_preload_libraries = 'logical_ext'",
            "logical_ext.monitor_interval = '200ms'",
            &format!("logical_ext.metrics_listen = '127.0.0.1:{port}'"),
        ],
    );
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext");
    create_slot(&mut c, "s1", "test_decoding");
    exec(&mut c, "SELECT pg_create_physical_replication_slot('phys', true)");

    let (status, head, body) = {
        scrape(port);
        get(port, "/metrics").unwrap()
    };
    assert_eq!(status, 200);
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    for family in [
        "logical_ext_slot_active",
        "logical_ext_slot_catalog_xmin_age",
        "logical_ext_slot_temporary",
        "logical_ext_wal_lsn_bytes",
        "logical_ext_wal_filesystem_free_bytes",
        "logical_ext_sampler_running",
    ] {
        assert!(body.contains(&format!("\n# TYPE {family} ")), "{family} missing:\n{body}");
    }
    // Each slot exactly once per family, whatever database it belongs to.
    let mut slots: Vec<String> =
        samples(&body, "logical_ext_slot_active").into_iter().map(|(l, _)| l["slot_name"].clone()).collect();
    slots.sort();
    assert_eq!(slots, ["phys", "s1"]);
    assert_eq!(value_of(&body, "logical_ext_scrape_errors", None), Some(0.0), "{body}");
    assert!(samples(&body, "logical_ext_scrape_errors").iter().all(|(_, v)| *v == 0.0), "{body}");
    promtool_check(&body);

    // Anything else: 404, 405, 400.
    assert_eq!(get(port, "/").unwrap().0, 404);
    assert_eq!(get(port, "/metricsx").unwrap().0, 404);
    let (status, head, _) = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET"), "{head}");
    assert_eq!(http(port, "nonsense\r\n\r\n").unwrap().0, 400);
    // A client that sends nothing does not stop the endpoint.
    let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(get(port, "/metrics").unwrap().0, 200);
    drop(idle);

    // A lock held on logical_ext's catalog does not hold the scrape up for
    // long: that section is left out after lock_timeout, the rest served.
    let mut locker = cluster.client();
    exec(&mut locker, "BEGIN; LOCK TABLE logical_ext.subscription IN ACCESS EXCLUSIVE MODE");
    let started = std::time::Instant::now();
    let (status, _, body) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(body.contains("\nlogical_ext_scrape_errors{section=\"subscriptions\"} 1\n"), "{body}");
    assert!(body.contains("SQLSTATE 55P03"), "{body}");
    assert_eq!(samples(&body, "logical_ext_slot_active").len(), 2, "{body}");
    exec(&mut locker, "ROLLBACK");

    // A reload moves it to a new port; that port is taken at first: a
    // WARNING with its SQLSTATE, then a retry once it is free.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port2 = blocker.local_addr().unwrap().port();
    exec(&mut c, &format!("ALTER SYSTEM SET logical_ext.metrics_listen = '127.0.0.1:{port2}'"));
    exec(&mut c, "SELECT pg_reload_conf()");
    let warning = format!("WARNING:  could not listen on logical_ext.metrics_listen \"127.0.0.1:{port2}\"");
    wait_until(TIMEOUT, "the bind failure is logged", || {
        std::fs::read_to_string(cluster.log_path()).unwrap_or_default().contains(&warning)
    });
    wait_until(TIMEOUT, "the old port is closed", || TcpStream::connect(("127.0.0.1", port)).is_err());
    drop(blocker);
    scrape(port2);

    // The worker exits (terminated): the postmaster starts it again.
    let pid = metrics_worker_pid(&mut c).expect("the metrics worker runs");
    exec(&mut c, &format!("SELECT pg_terminate_backend({pid})"));
    wait_until(TIMEOUT, "a new metrics worker", || metrics_worker_pid(&mut c).is_some_and(|p| p != pid));
    scrape(port2);

    // A restart serves again.
    cluster.restart();
    scrape(port2);

    // Another database, at reload: the worker reconnects there. Without
    // logical_ext installed in it, the sections that need its schema are
    // left out and named; the server-wide slot figures are complete.
    let mut c = cluster.client();
    exec(&mut c, "CREATE DATABASE other");
    let pid = metrics_worker_pid(&mut c).expect("the metrics worker runs");
    exec(&mut c, "ALTER SYSTEM SET logical_ext.metrics_database = 'other'");
    exec(&mut c, "SELECT pg_reload_conf()");
    wait_until(TIMEOUT, "the metrics worker reconnects to database other", || {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical_ext metrics' AND datname = 'other'",
            &[],
        )
        .unwrap()
        .is_some_and(|r| r.get::<_, i32>(0) != pid)
    });
    let body = scrape(port2);
    let errors: BTreeMap<String, f64> =
        samples(&body, "logical_ext_scrape_errors").into_iter().map(|(l, v)| (l["section"].clone(), v)).collect();
    assert_eq!(
        errors,
        [("sampler", 0.0), ("server", 0.0), ("slots", 0.0), ("subscriptions", 1.0), ("walsenders", 1.0)]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
        "{body}"
    );
    assert_eq!(samples(&body, "logical_ext_slot_active").len(), 2, "{body}");
    promtool_check(&body);

    // Emptied at reload: the port closes.
    exec(&mut c, "ALTER SYSTEM SET logical_ext.metrics_listen = ''");
    exec(&mut c, "SELECT pg_reload_conf()");
    wait_until(TIMEOUT, "the port is closed", || TcpStream::connect(("127.0.0.1", port2)).is_err());
}

#[test]
fn figures_of_a_primary_and_its_standby() {
    let port = free_port();
    let primary = Cluster::start(
        "metrics_primary",
        &[
            "shared_preload_libraries = 'logical_ext'",
            "logical_ext.monitor_interval = '200ms'",
            &format!("logical_ext.metrics_listen = '127.0.0.1:{port}'"),
            "logical_decoding_work_mem = '64kB'",
        ],
    );
    let mut c = primary.client();
    exec(&mut c, "CREATE EXTENSION logical_ext; CREATE TABLE t (id int, pad text)");
    create_slot(&mut c, "holder", "test_decoding");
    // A temporary slot lives as long as its session.
    let mut tmp_session = primary.client();
    exec(&mut tmp_session, "SELECT pg_create_logical_replication_slot('tmp', 'test_decoding', true)");
    // Transactions that age the slots' catalog_xmin.
    for _ in 0..5 {
        exec(&mut c, "SELECT txid_current()");
    }
    // A transaction larger than logical_decoding_work_mem spills when decoded.
    exec(&mut c, "INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(1, 5000) i");
    exec(&mut c, "SELECT count(*) FROM pg_logical_slot_get_changes('holder', NULL, NULL)");

    // slot_health(): the new columns, and the xmin status levels.
    let row = c
        .query_one("SELECT temporary, xmin_age, catalog_xmin_age, status FROM logical_ext.slot_health() WHERE slot_name = 'holder'", &[])
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<i64>>(1), None, "a logical slot holds no xmin");
    let age = row.get::<_, Option<i64>>(2).expect("a logical slot holds a catalog_xmin");
    assert!(age >= 5, "catalog_xmin age {age}");
    assert_eq!(row.get::<_, String>(3), "ok");
    exec(&mut c, "SET logical_ext.slot_xmin_age_warning = 3");
    let (status, reason): (String, String) = {
        let r = c
            .query_one("SELECT status, reason FROM logical_ext.slot_health() WHERE slot_name = 'holder'", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "warning", "{reason}");
    assert!(
        reason.contains("catalog_xmin age") && reason.contains("logical_ext.slot_xmin_age_warning (3)"),
        "{reason}"
    );
    exec(&mut c, "SET logical_ext.slot_xmin_age_critical = 4");
    assert_eq!(
        query_string(&mut c, "SELECT status FROM logical_ext.slot_health() WHERE slot_name = 'holder'"),
        "critical"
    );
    exec(&mut c, "RESET logical_ext.slot_xmin_age_warning; RESET logical_ext.slot_xmin_age_critical");
    assert!(
        query_string(&mut c, "SELECT temporary::text FROM logical_ext.slot_health() WHERE slot_name = 'tmp'") == "true"
    );

    // The endpoint's figures.
    let mut text = String::new();
    wait_until(TIMEOUT, "the spill counters reach the endpoint", || {
        text = scrape(port);
        value_of(&text, "logical_ext_slot_spill_bytes_total", Some("holder")).is_some_and(|v| v > 0.0)
    });
    assert!(value_of(&text, "logical_ext_slot_catalog_xmin_age", Some("holder")).unwrap() >= 5.0, "{text}");
    assert_eq!(value_of(&text, "logical_ext_slot_xmin_age", Some("holder")), None, "{text}");
    assert_eq!(value_of(&text, "logical_ext_slot_temporary", Some("tmp")), Some(1.0), "{text}");
    assert_eq!(value_of(&text, "logical_ext_slot_temporary", Some("holder")), Some(0.0), "{text}");
    assert!(value_of(&text, "logical_ext_slot_spilled_transactions_total", Some("holder")).unwrap() >= 1.0);
    assert!(value_of(&text, "logical_ext_slot_decoded_bytes_total", Some("holder")).unwrap() > 0.0);
    let confirmed = value_of(&text, "logical_ext_slot_confirmed_flush_lsn_bytes", Some("holder")).unwrap();
    let restart = value_of(&text, "logical_ext_slot_restart_lsn_bytes", Some("holder")).unwrap();
    let wal = value_of(&text, "logical_ext_wal_lsn_bytes", None).unwrap();
    assert!(restart <= confirmed && confirmed <= wal, "{restart} {confirmed} {wal}");
    let sql_confirmed = parse_lsn(&query_string(
        &mut c,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'holder'",
    ));
    assert_eq!(confirmed, sql_confirmed as f64);
    assert_eq!(value_of(&text, "logical_ext_in_recovery", None), Some(0.0));
    assert_eq!(value_of(&text, "logical_ext_standby_receive_lsn_bytes", None), None, "a primary has no receiver");
    assert!(value_of(&text, "logical_ext_wal_directory_bytes", None).unwrap() >= 16.0 * 1024.0 * 1024.0, "{text}");
    let free = value_of(&text, "logical_ext_wal_filesystem_free_bytes", None).unwrap();
    let size = value_of(&text, "logical_ext_wal_filesystem_size_bytes", None).unwrap();
    assert!(free > 0.0 && free <= size, "{free} {size}");
    promtool_check(&text);
    drop(tmp_session);

    // A standby: in recovery, with received and replayed positions.
    let sport = free_port();
    let standby = Cluster::standby_of(
        &primary,
        "metrics_standby",
        "standby1",
        &[&format!("logical_ext.metrics_listen = '127.0.0.1:{sport}'")],
    );
    exec(&mut c, "INSERT INTO t VALUES (1, 'after the backup')");
    let primary_lsn = parse_lsn(&query_string(&mut c, "SELECT pg_current_wal_lsn()::text")) as f64;
    let mut stext = String::new();
    let replayed = poll_until(TIMEOUT, || {
        stext = scrape(sport);
        value_of(&stext, "logical_ext_standby_replay_lsn_bytes", None).is_some_and(|v| v >= primary_lsn)
    });
    assert!(replayed, "the standby did not replay up to {primary_lsn}:\n{stext}");
    assert_eq!(value_of(&stext, "logical_ext_in_recovery", None), Some(1.0), "{stext}");
    let received = value_of(&stext, "logical_ext_standby_receive_lsn_bytes", None).expect("receive lsn");
    assert!(received >= primary_lsn, "{received} {primary_lsn}");
    promtool_check(&stext);
    // The primary sees the standby's physical slot once.
    let ptext = scrape(port);
    assert_eq!(
        samples(&ptext, "logical_ext_slot_active").iter().filter(|(l, _)| l["slot_name"] == "standby1").count(),
        1
    );
    drop(standby);
}
