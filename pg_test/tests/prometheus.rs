//! A real Prometheus scraping logical_ext (issue 18): a cluster serves its
//! figures on `logical_ext.metrics_listen` (loopback, a free port);
//! `prometheus` (Debian's 2.42) runs beside it on loopback with its own
//! directory, scraping and evaluating every second, with the shipped rules
//! file — only `LogicalExtSlotInactive`'s threshold and `for` lowered to
//! seconds in the test's copy, so the real expressions are what fire.
//!
//! Checked through Prometheus's own HTTP API: the figures arrive
//! (`/api/v1/query`, with the slot labels and job/instance), `promtool check
//! metrics` accepts the scrape, a logical slot left inactive makes
//! `LogicalExtSlotInactive` go `firing` in `/api/v1/alerts` while a slot in use
//! does not, and once the slot is dropped the alert resolves.
//!
//! Needs logical_ext installed and Debian's `prometheus` package
//! (scripts/setup.sh); without it the test fails unless
//! LOGICAL_EXT_SKIP_PROMETHEUS=1.

use logical_ext_pg_test::background::Background;
use logical_ext_pg_test::prometheus::{Prometheus, http_get, require_program, rules_path, with_alert_changed};
use logical_ext_pg_test::serde_json::Value;
use logical_ext_pg_test::*;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback port free right now (for the metrics endpoint).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// The shipped rules with the inactive-slot alert firing after 3 seconds
/// of inactivity (instead of an hour) and at once (instead of after 1m).
fn test_rules() -> String {
    let shipped = fs::read_to_string(rules_path()).expect("read the shipped rules");
    with_alert_changed(
        &shipped,
        "LogicalExtSlotInactive",
        &[
            ("logical_ext_slot_inactive_seconds > 3600", "logical_ext_slot_inactive_seconds > 3"),
            ("for: 1m", "for: 1s"),
        ],
    )
}

/// The alerts named `name` whose `slot_name` label is `slot`.
fn alerts_for(p: &Prometheus, name: &str, slot: &str) -> Vec<Value> {
    p.alerts()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name && a["labels"]["slot_name"] == slot)
        .collect()
}

fn wait_for(p: &Prometheus, what: &str, mut cond: impl FnMut() -> bool) {
    if !poll_until(TIMEOUT, &mut cond) {
        let targets = p.targets().map(|t| format!("{t:#?}")).unwrap_or_else(|e| e);
        let alerts = p.alerts().map(|a| format!("{a:#?}")).unwrap_or_else(|e| e);
        panic!("timed out after {TIMEOUT:?} waiting until {what}\n--- targets: {targets}\n--- alerts: {alerts}");
    }
}

#[test]
fn prometheus_scrapes_the_figures_and_fires_then_resolves_the_inactive_slot_alert() {
    let (Some(_), Some(promtool)) = (require_program("prometheus"), require_program("promtool")) else { return };
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cluster = Cluster::start(
        "prometheus_e2e",
        &[
            "shared_preload_libraries = 'logical_ext'",
            "logical_ext.monitor_interval = '200ms'",
            &format!("logical_ext.metrics_listen = '{addr}'"),
        ],
    );
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext");

    // The endpoint answers, and promtool's linter accepts what it serves.
    let mut scrape = String::new();
    let up = poll_until(TIMEOUT, || match http_get(&addr, "/metrics") {
        Ok(r) if r.status == 200 && r.body.contains("logical_ext_sampler_running 1") => {
            scrape = r.body;
            true
        }
        _ => false,
    });
    assert!(up, "the metrics endpoint {addr} does not serve the figures\n--- log:\n{}", cluster.log_tail(20));
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    lint.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("feed promtool");
    let lint = lint.wait_with_output().expect("promtool check metrics");
    assert!(
        lint.status.success(),
        "promtool check metrics rejects the scrape: {}{}\n--- scrape:\n{scrape}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let Some(prom) = Prometheus::start(std::slice::from_ref(&addr), &test_rules()) else { return };

    // A slot in use all along: pg_recvlogical creates it and streams from it.
    let mut busy_cmd = Command::new(pg_bin("pg_recvlogical"));
    busy_cmd.args(["-d", &cluster.conninfo(), "-S", "e2e_busy", "-P", "test_decoding", "--create-slot", "--start"]);
    busy_cmd.args(["-f", "/dev/null", "-s", "1"]);
    let mut busy = Background::spawn(busy_cmd, "pg_recvlogical on e2e_busy", cluster.dir());
    wait_until(TIMEOUT, "slot e2e_busy is active", || {
        assert!(busy.running(), "{}", busy.describe());
        query_string(&mut c, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'e2e_busy' AND active")
            == "1"
    });
    // A slot nobody uses.
    exec(&mut c, "SELECT pg_create_logical_replication_slot('e2e_idle', 'test_decoding')");

    // The figures arrive in Prometheus, with the slot's labels and the job's.
    let mut found = Vec::new();
    wait_for(&prom, "Prometheus has scraped e2e_idle's lag", || {
        found = prom.query(r#"logical_ext_slot_lag_bytes{slot_name="e2e_idle"}"#).unwrap_or_default();
        !found.is_empty()
    });
    let m = &found[0]["metric"];
    assert_eq!(m["job"], "logical_ext", "{m}");
    assert_eq!(m["instance"], addr.as_str(), "{m}");
    assert_eq!(m["slot_type"], "logical", "{m}");
    assert_eq!(m["database"], "postgres", "{m}");
    assert_eq!(m["plugin"], "test_decoding", "{m}");
    let lag: f64 = found[0]["value"][1].as_str().expect("value").parse().expect("number");
    assert!(lag >= 0.0, "lag {lag}");
    for expr in [
        r#"up{job="logical_ext"} == 1"#,
        "logical_ext_sampler_running == 1",
        r#"logical_ext_slot_active{slot_name="e2e_busy"} == 1"#,
        r#"logical_ext_slot_active{slot_name="e2e_idle"} == 0"#,
        r#"logical_ext_slot_catalog_xmin_age{slot_name="e2e_idle"} >= 0"#,
        "logical_ext_wal_lsn_bytes > 0",
        "logical_ext_wal_filesystem_free_bytes > 0",
    ] {
        wait_for(&prom, &format!("{expr} holds in Prometheus"), || prom.query(expr).is_ok_and(|r| !r.is_empty()));
    }
    // Each slot once per server: no duplicate series.
    let per_slot = prom.query("count by (slot_name) (logical_ext_slot_active) > 1").expect("query");
    assert!(per_slot.is_empty(), "duplicate slot series: {per_slot:#?}");

    // The idle slot's alert fires; the busy slot's does not.
    wait_for(&prom, "LogicalExtSlotInactive fires for e2e_idle", || {
        alerts_for(&prom, "LogicalExtSlotInactive", "e2e_idle").iter().any(|a| a["state"] == "firing")
    });
    let alert = alerts_for(&prom, "LogicalExtSlotInactive", "e2e_idle").remove(0);
    assert_eq!(alert["labels"]["severity"], "warning", "{alert:#}");
    assert_eq!(alert["annotations"]["runbook_url"], "docs/MONITORING.md#logicalextslotinactive", "{alert:#}");
    assert!(
        alert["annotations"]["summary"].as_str().is_some_and(|s| s.contains("e2e_idle")),
        "summary names the slot: {alert:#}"
    );
    assert!(busy.running(), "{}", busy.describe());
    assert!(alerts_for(&prom, "LogicalExtSlotInactive", "e2e_busy").is_empty(), "the slot in use alerts");

    // Dropped, the slot's series end and the alert resolves.
    exec(&mut c, "SELECT pg_drop_replication_slot('e2e_idle')");
    wait_for(&prom, "LogicalExtSlotInactive for e2e_idle resolves", || {
        alerts_for(&prom, "LogicalExtSlotInactive", "e2e_idle").is_empty()
    });
    assert!(
        prom.query(r#"logical_ext_slot_lag_bytes{slot_name="e2e_idle"}"#).expect("query").is_empty(),
        "the dropped slot's series are still current"
    );
    drop(busy);
}
