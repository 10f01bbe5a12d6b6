//! Slot monitoring on real clusters (issue 5): slot_health() for active,
//! inactive and physical slots, lag thresholds, `wal_status = lost`, the
//! growth forecast, drop_stale_slots() dry and real, metrics() through a
//! Prometheus text-format parser, permissions, and the sampler's signal
//! handling. Needs logical_ext installed (`cargo pgrx install`) and, for the
//! metrics test, Debian's python3-prometheus-client (scripts/setup.sh).

use logical_ext_pg_test::background::{Background, wait_with_load};
use logical_ext_pg_test::decoding::{PLUGIN, create_slot};
use logical_ext_pg_test::*;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a cluster whose sampler runs every 200 ms.
const PRELOADED: &[&str] = &["shared_preload_libraries = 'logical_ext'", "logical_ext.monitor_interval = '200ms'"];

fn monitored_cluster(name: &str, extra_conf: &[&str]) -> (Cluster, Client) {
    let cluster = Cluster::start(name, extra_conf);
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext; CREATE TABLE filler (id bigserial, pad text)");
    (cluster, c)
}

/// Writes roughly `kb` kilobytes of WAL.
fn write_wal(c: &mut Client, kb: usize) {
    exec(c, &format!("INSERT INTO filler (pad) SELECT repeat('x', 1000) FROM generate_series(1, {kb})"));
}

#[derive(Debug, Clone)]
struct Health {
    slot_name: String,
    plugin: Option<String>,
    slot_type: String,
    database: Option<String>,
    active: bool,
    active_pid: Option<i32>,
    restart_lsn: Option<String>,
    confirmed_flush_lsn: Option<String>,
    lag_bytes: Option<i64>,
    retained_wal_bytes: Option<i64>,
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    inactive_since: Option<String>,
    wal_growth_bytes_per_sec: Option<f64>,
    seconds_until_exhausted: Option<f64>,
    forecast_basis: String,
    status: String,
    reason: String,
}

fn try_health(c: &mut Client) -> Result<Vec<Health>, postgres::Error> {
    let rows = c.query(
        "SELECT slot_name, plugin, slot_type, database, active, active_pid, restart_lsn::text,
                confirmed_flush_lsn::text, lag_bytes, retained_wal_bytes, wal_status, safe_wal_size,
                inactive_since::text, wal_growth_bytes_per_sec, seconds_until_exhausted, forecast_basis,
                status, reason
           FROM logical_ext.slot_health()",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| Health {
            slot_name: r.get(0),
            plugin: r.get(1),
            slot_type: r.get(2),
            database: r.get(3),
            active: r.get(4),
            active_pid: r.get(5),
            restart_lsn: r.get(6),
            confirmed_flush_lsn: r.get(7),
            lag_bytes: r.get(8),
            retained_wal_bytes: r.get(9),
            wal_status: r.get(10),
            safe_wal_size: r.get(11),
            inactive_since: r.get(12),
            wal_growth_bytes_per_sec: r.get(13),
            seconds_until_exhausted: r.get(14),
            forecast_basis: r.get(15),
            status: r.get(16),
            reason: r.get(17),
        })
        .collect())
}

fn health(c: &mut Client) -> Vec<Health> {
    try_health(c).unwrap_or_else(|e| panic!("slot_health(): {}", describe_error(&e)))
}

fn health_of(c: &mut Client, slot: &str) -> Health {
    health(c).into_iter().find(|h| h.slot_name == slot).unwrap_or_else(|| panic!("no slot_health() row for {slot}"))
}

/// Waits until `cond` holds for the slot's row; returns that row.
fn wait_for_health(c: &mut Client, slot: &str, what: &str, mut cond: impl FnMut(&Health) -> bool) -> Health {
    let mut last = None;
    let mut seen = None;
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        let h = health_of(c, slot);
        if cond(&h) {
            seen = Some(h);
            break;
        }
        last = Some(h);
        std::thread::sleep(Duration::from_millis(50));
    }
    seen.unwrap_or_else(|| panic!("timed out after {TIMEOUT:?} waiting until {slot} {what}; last row: {last:#?}"))
}

/// The SQLSTATE of a failed statement.
fn sqlstate(r: Result<impl Sized, postgres::Error>) -> String {
    match r {
        Ok(_) => "success".to_string(),
        Err(e) => e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_else(|| format!("{e:?}")),
    }
}

/// A pg_recvlogical process streaming a slot (so it is active); killed on
/// drop. Its stderr is kept: a receiver that died says why.
struct Receiver(Background);

impl Receiver {
    fn start(cluster: &Cluster, slot: &str, application_name: &str) -> Receiver {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres application_name='{}'",
            cluster.port(),
            application_name.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let mut cmd = Command::new(pg_bin("pg_recvlogical"));
        cmd.args(["-d", &conninfo, "-S", slot, "--start", "-f", "/dev/null", "-F", "1", "-s", "1"]);
        Receiver(Background::spawn(cmd, &format!("pg_recvlogical on slot {slot}"), cluster.dir()))
    }

    /// Waits until the receiver's slot is active (fails at once, saying
    /// why, if the receiver died).
    fn wait_active(&mut self, c: &mut Client, slot: &str) {
        wait_with_load(
            &mut self.0,
            TIMEOUT,
            &format!("slot {slot} is active"),
            || slot_is_active(c, slot),
            String::new,
        );
    }

    /// Panics, saying why, unless the receiver still runs.
    fn assert_running(&mut self, when: &str) {
        self.0.assert_running(when);
    }
}

fn slot_is_active(c: &mut Client, slot: &str) -> bool {
    c.query_one("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
}

/// The sampler's PID (a worker without a database connection is not in
/// pg_stat_activity).
fn sampler_pid(c: &mut Client) -> Option<i32> {
    c.query_one("SELECT pid FROM logical_ext.sampler_status()", &[]).expect("sampler_status()").get(0)
}

/// Sets a server setting with ALTER SYSTEM and reloads.
fn alter_system(c: &mut Client, setting: &str, value: &str) {
    exec(c, &format!("ALTER SYSTEM SET {setting} = {value}"));
    exec(c, "SELECT pg_reload_conf()");
}

fn samples_taken(c: &mut Client) -> i64 {
    c.query_one("SELECT samples_taken FROM logical_ext.sampler_status()", &[]).expect("sampler_status()").get(0)
}

#[test]
fn health_of_active_inactive_and_physical_slots() {
    let (cluster, mut c) = monitored_cluster("mon_health", PRELOADED);
    let out_args: Vec<String> = c
        .query_one("SELECT proargnames::text[] FROM pg_proc WHERE oid = 'logical_ext.slot_health()'::regprocedure", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        out_args.join(","),
        "slot_name,plugin,slot_type,database,active,active_pid,restart_lsn,confirmed_flush_lsn,lag_bytes,\
         retained_wal_bytes,wal_status,safe_wal_size,inactive_since,wal_growth_bytes_per_sec,\
         seconds_until_exhausted,forecast_basis,status,reason,temporary,xmin_age,catalog_xmin_age"
    );

    create_slot(&mut c, "busy", PLUGIN);
    create_slot(&mut c, "idle", "test_decoding");
    exec(&mut c, "SELECT pg_create_physical_replication_slot('standby', true)");
    let mut receiver = Receiver::start(&cluster, "busy", "busy_consumer");
    receiver.wait_active(&mut c, "busy");
    exec(&mut c, "SET logical_ext.slot_inactive_warning = '1s'");
    write_wal(&mut c, 100);

    let idle = wait_for_health(&mut c, "idle", "is a warning for being inactive", |h| h.status == "warning");
    assert!(!idle.active && idle.active_pid.is_none());
    assert!(idle.inactive_since.is_some(), "{idle:#?}");
    assert!(
        idle.reason.contains("inactive for") && idle.reason.contains("logical_ext.slot_inactive_warning (1 s)"),
        "{idle:#?}"
    );
    assert_eq!(idle.plugin.as_deref(), Some("test_decoding"));
    assert_eq!(idle.database.as_deref(), Some("postgres"));
    assert_eq!(idle.slot_type, "logical");
    assert!(idle.confirmed_flush_lsn.is_some() && idle.restart_lsn.is_some());
    assert!(idle.lag_bytes.unwrap() >= 100 * 1000, "{idle:#?}");
    assert!(idle.retained_wal_bytes.unwrap() >= idle.lag_bytes.unwrap());
    assert_eq!(idle.wal_status.as_deref(), Some("reserved"));
    assert_eq!(idle.forecast_basis, "disk", "max_slot_wal_keep_size is unlimited");
    assert!(idle.safe_wal_size.is_none());

    // The active slot stays ok whatever its age: its consumer confirms.
    receiver.assert_running("busy's health was read");
    let busy = wait_for_health(&mut c, "busy", "is ok with its consumer caught up", |h| {
        h.status == "ok" && h.lag_bytes.is_some_and(|l| l < 64 * 1024)
    });
    assert!(busy.active && busy.active_pid.is_some() && busy.inactive_since.is_none(), "{busy:#?}");
    assert_eq!(busy.plugin.as_deref(), Some(PLUGIN));
    assert!(busy.reason.starts_with("lag "), "{busy:#?}");

    let standby = wait_for_health(&mut c, "standby", "is a warning for being inactive", |h| h.status == "warning");
    assert_eq!(standby.slot_type, "physical");
    assert!(standby.plugin.is_none() && standby.database.is_none() && standby.confirmed_flush_lsn.is_none());
    assert_eq!(standby.lag_bytes, standby.retained_wal_bytes, "physical lag is measured from restart_lsn");
    assert!(standby.reason.contains("inactive for"), "{standby:#?}");

    // replication_status(): the walsender of `busy`, joined with its slot.
    let row = c
        .query_one(
            "SELECT application_name, client_addr::text, state, slot_name::text, slot_type, plugin::text,
                    sent_lsn IS NOT NULL, sent_lag_bytes, flush_lag_bytes
               FROM logical_ext.replication_status()",
            &[],
        )
        .expect("one walsender");
    assert_eq!(row.get::<_, String>(0), "busy_consumer");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("127.0.0.1/32"));
    assert_eq!(row.get::<_, String>(3), "busy");
    assert_eq!(row.get::<_, String>(4), "logical");
    assert_eq!(row.get::<_, String>(5), PLUGIN);
    assert!(row.get::<_, bool>(6));
    assert!(row.get::<_, i64>(7) >= 0);
    let state: String = row.get(2);
    assert!(state == "streaming" || state == "catchup", "{state}");

    // The sampler runs as its own background worker.
    let pid = sampler_pid(&mut c).expect("a sampler");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(comm.contains("logical_ext monitor"), "{comm:?}");
    let (running, capacity): (bool, i32) = c
        .query_one("SELECT running, capacity FROM logical_ext.sampler_status()", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(running);
    assert_eq!(capacity, 20, "one history entry per max_replication_slots");
    wait_until(TIMEOUT, "the sampler tracks the 3 slots", || {
        c.query_one("SELECT tracked_slots FROM logical_ext.sampler_status()", &[]).unwrap().get::<_, i32>(0) == 3
    });
}

#[test]
fn lag_crosses_the_warning_then_the_critical_threshold() {
    let (_cluster, mut c) = monitored_cluster("mon_lag", &[]);
    exec(
        &mut c,
        "SET logical_ext.slot_lag_warning = '256kB';
         SET logical_ext.slot_lag_critical = '2MB';
         SET logical_ext.slot_inactive_warning = -1",
    );
    create_slot(&mut c, "lagging", "test_decoding");
    let h = health_of(&mut c, "lagging");
    assert_eq!(h.status, "ok", "{h:#?}");
    assert!(h.reason.starts_with("lag ") && h.reason.contains("(warning at 256 kB)"), "{h:#?}");

    write_wal(&mut c, 400);
    let h = health_of(&mut c, "lagging");
    let lag = h.lag_bytes.unwrap();
    assert!((256 * 1024..2 * 1024 * 1024).contains(&lag), "{h:#?}");
    assert_eq!(h.status, "warning", "{h:#?}");
    assert!(h.reason.starts_with("lag ") && h.reason.contains("at or above logical_ext.slot_lag_warning (256 kB)"));

    write_wal(&mut c, 2500);
    let h = health_of(&mut c, "lagging");
    assert!(h.lag_bytes.unwrap() >= 2 * 1024 * 1024, "{h:#?}");
    assert_eq!(h.status, "critical", "{h:#?}");
    assert!(h.reason.contains("at or above logical_ext.slot_lag_critical (2 MB)"), "{h:#?}");

    // Consuming the changes brings it back to ok.
    exec(&mut c, "SELECT count(*) FROM pg_logical_slot_get_changes('lagging', NULL, NULL)");
    let h = health_of(&mut c, "lagging");
    assert_eq!(h.status, "ok", "{h:#?}");
}

#[test]
fn wal_status_lost_through_a_small_max_slot_wal_keep_size() {
    let (_cluster, mut c) = monitored_cluster(
        "mon_lost",
        &["max_slot_wal_keep_size = '1MB'", "wal_keep_size = 0", "min_wal_size = '32MB'", "max_wal_size = '64MB'"],
    );
    create_slot(&mut c, "doomed", "test_decoding");
    let h = health_of(&mut c, "doomed");
    assert_eq!(h.forecast_basis, "safe_wal_size");
    assert!(h.safe_wal_size.is_some(), "{h:#?}");

    wait_until(TIMEOUT, "the slot is lost", || {
        write_wal(&mut c, 300);
        exec(&mut c, "SELECT pg_switch_wal(); CHECKPOINT");
        query_string(&mut c, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'doomed'")
            == "lost"
    });
    let h = health_of(&mut c, "doomed");
    assert_eq!(h.wal_status.as_deref(), Some("lost"));
    // What happened, what was lost, what to do.
    assert_eq!(h.status, "lost", "{h:#?}");
    assert!(
        h.reason.starts_with(
            "lost: the server removed WAL this slot still needed (it fell more than max_slot_wal_keep_size (1 MB) \
             behind) and invalidated it; the changes after "
        ),
        "{h:#?}"
    );
    let confirmed = h.confirmed_flush_lsn.clone().expect("a lost logical slot keeps its confirmed_flush_lsn");
    assert!(h.reason.contains(&format!("after {confirmed} can no longer be decoded")), "{h:#?}");
    assert!(h.reason.contains("to recover: drop the slot and resynchronise the consumer"), "{h:#?}");
    assert_eq!(h.seconds_until_exhausted, Some(0.0), "{h:#?}");
    assert_eq!(h.forecast_basis, "safe_wal_size");
    assert!(h.safe_wal_size.is_none());

    let metrics = query_string(&mut c, "SELECT logical_ext.metrics()");
    assert!(
        metrics.contains(
            "logical_ext_slot_wal_status{slot_name=\"doomed\",slot_type=\"logical\",database=\"postgres\",\
             plugin=\"test_decoding\",wal_status=\"lost\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("plugin=\"test_decoding\",status=\"lost\"} 1\n"), "{metrics}");
    assert!(metrics.contains("plugin=\"test_decoding\",status=\"critical\"} 0\n"), "{metrics}");

    // One failing section does not break the scrape: the subscription
    // figures fail (their view is gone), the slot figures still come, and
    // the failure is named by SQLSTATE.
    exec(&mut c, "ALTER VIEW logical_ext.subscription_status RENAME TO subscription_status_moved");
    let text = query_string(&mut c, "SELECT logical_ext.metrics()");
    assert!(text.starts_with("# logical_ext: section subscriptions left out: SQLSTATE 42P01: "), "{text}");
    let families = parse_prometheus(&text);
    let (_, errors) = &families["logical_ext_scrape_errors"];
    let failed: Vec<&str> = errors.iter().filter(|s| s.2 == 1.0).map(|s| s.1["section"].as_str()).collect();
    assert_eq!(failed, ["subscriptions"], "{text}");
    assert!(families["logical_ext_slot_status"].1.iter().any(|s| s.1["slot_name"] == "doomed"), "{text}");
    exec(&mut c, "ALTER VIEW logical_ext.subscription_status_moved RENAME TO subscription_status");
    let text = query_string(&mut c, "SELECT logical_ext.metrics()");
    assert!(!text.starts_with('#') || text.starts_with("# HELP"), "{text}");
    assert!(text.contains("logical_ext_scrape_errors{section=\"subscriptions\"} 0\n"), "{text}");
}

#[test]
fn forecast_is_positive_while_wal_grows() {
    let conf: Vec<&str> = PRELOADED.iter().copied().chain(["max_slot_wal_keep_size = '4GB'"]).collect();
    let (_cluster, mut c) = monitored_cluster("mon_forecast", &conf);
    create_slot(&mut c, "stale", "test_decoding");

    let mut last = None;
    wait_until(TIMEOUT, "growth and forecast are measured while WAL is written", || {
        write_wal(&mut c, 200);
        let h = health_of(&mut c, "stale");
        let ok = h.wal_growth_bytes_per_sec.is_some_and(|g| g > 10_000.0)
            && h.seconds_until_exhausted.is_some_and(|s| s > 0.0)
            && h.forecast_basis == "safe_wal_size";
        last = Some(h);
        ok
    });
    let h = last.unwrap();
    let expected = h.safe_wal_size.unwrap() as f64 / h.wal_growth_bytes_per_sec.unwrap();
    let got = h.seconds_until_exhausted.unwrap();
    assert!((got - expected).abs() <= expected * 1e-9 + 1e-6, "forecast = safe_wal_size / growth: {h:#?}");
    assert!(
        h.reason.contains("retained WAL grows") && h.reason.contains("reaches max_slot_wal_keep_size in"),
        "{h:#?}"
    );

    // Unlimited: the forecast is against pg_wal's free space instead.
    alter_system(&mut c, "max_slot_wal_keep_size", "-1");
    let mut last = None;
    wait_until(TIMEOUT, "the forecast is against pg_wal's free space", || {
        write_wal(&mut c, 200);
        let h = health_of(&mut c, "stale");
        let ok = h.forecast_basis == "disk" && h.seconds_until_exhausted.is_some_and(|s| s > 0.0);
        last = Some(h);
        ok
    });
    let h = last.unwrap();
    assert!(h.safe_wal_size.is_none());
    assert!(h.reason.contains("fills the free space of pg_wal's file system in"), "{h:#?}");
}

#[test]
fn without_preload_history_columns_are_null_and_say_why() {
    let (cluster, mut c) = monitored_cluster("mon_no_preload", &[]);
    create_slot(&mut c, "idle", "test_decoding");
    create_slot(&mut c, "busy", "test_decoding");
    let mut receiver = Receiver::start(&cluster, "busy", "busy_consumer");
    receiver.wait_active(&mut c, "busy");

    let idle = health_of(&mut c, "idle");
    assert!(idle.inactive_since.is_none() && idle.wal_growth_bytes_per_sec.is_none(), "{idle:#?}");
    assert!(idle.seconds_until_exhausted.is_none());
    assert_eq!(idle.status, "warning", "an inactive slot of unknown age is a warning: {idle:#?}");
    assert!(idle.reason.contains("inactive for an unknown time"), "{idle:#?}");
    assert!(idle.reason.contains("logical_ext is not in shared_preload_libraries"), "{idle:#?}");

    let busy = health_of(&mut c, "busy");
    assert!(busy.inactive_since.is_none() && busy.wal_growth_bytes_per_sec.is_none());
    assert_eq!(busy.status, "ok", "{busy:#?}");
    assert!(busy.reason.contains("logical_ext is not in shared_preload_libraries"), "{busy:#?}");

    let (preloaded, running, note): (bool, bool, String) = c
        .query_one("SELECT preloaded, running, note FROM logical_ext.sampler_status()", &[])
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert!(!preloaded && !running);
    assert!(note.contains("shared_preload_libraries"), "{note}");
    assert!(sampler_pid(&mut c).is_none());

    // Without history drop_stale_slots() cannot tell stale from fresh: an
    // honest error, and nothing dropped.
    let err = c.query("SELECT * FROM logical_ext.drop_stale_slots('1 day')", &[]).unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000", "{}", describe_error(&err));
    assert!(db.hint().unwrap_or_default().contains("shared_preload_libraries"), "{}", describe_error(&err));
    assert_eq!(health(&mut c).len(), 2);

    let metrics = query_string(&mut c, "SELECT logical_ext.metrics()");
    assert!(metrics.contains("\nlogical_ext_sampler_running 0\n"), "{metrics}");
    assert!(!metrics.contains("logical_ext_slot_inactive_seconds{"), "{metrics}");
}

/// `(slot_name, dropped, action)` rows of a drop_stale_slots() call.
fn drop_stale(c: &mut Client, bound: &str, dry_run: bool) -> Vec<(String, bool, String)> {
    drop_stale_with(c, bound, dry_run, "")
}

/// The same with more (named) arguments, e.g. `", slot_types => ARRAY['physical']"`.
fn drop_stale_with(c: &mut Client, bound: &str, dry_run: bool, more: &str) -> Vec<(String, bool, String)> {
    let rows = c
        .query(
            &format!(
                "SELECT slot_name, dropped, action FROM logical_ext.drop_stale_slots($1::text::interval, $2{more})
                  ORDER BY slot_name"
            ),
            &[&bound, &dry_run],
        )
        .unwrap_or_else(|e| panic!("drop_stale_slots({bound}, {dry_run}{more}): {}", describe_error(&e)));
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

fn would_drop(c: &mut Client, bound: &str, more: &str) -> Vec<String> {
    drop_stale_with(c, bound, true, more).into_iter().map(|r| r.0).collect()
}

fn slot_names(c: &mut Client) -> Vec<String> {
    c.query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn drop_stale_slots_dry_run_then_real_never_an_active_or_recent_slot() {
    let (cluster, mut c) = monitored_cluster("mon_drop", PRELOADED);
    // `busy` is the oldest slot but active; stale1/stale2 are inactive.
    create_slot(&mut c, "busy", PLUGIN);
    create_slot(&mut c, "stale1", "test_decoding");
    exec(&mut c, "SELECT pg_create_physical_replication_slot('stale2', true)");
    let mut receiver = Receiver::start(&cluster, "busy", "busy_consumer");
    receiver.wait_active(&mut c, "busy");

    assert_eq!(drop_stale(&mut c, "1 hour", true), vec![], "nothing is inactive for an hour");
    assert_eq!(drop_stale(&mut c, "1 hour", false), vec![]);
    assert_eq!(slot_names(&mut c), ["busy", "stale1", "stale2"]);

    // Wait until both stale slots have been inactive for 10 s.
    let bound = "10 seconds";
    wait_until(TIMEOUT, "stale1 and stale2 are inactive for 10 s", || {
        c.query_one(
            "SELECT count(*) FROM logical_ext.slot_health()
              WHERE slot_name IN ('stale1', 'stale2') AND inactive_since <= now() - interval '10 seconds'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 2
    });
    // A slot inactive for less than the bound.
    create_slot(&mut c, "young", "test_decoding");

    // Physical slots only when asked for.
    let any = ", slot_types => ARRAY['logical', 'physical']";
    assert_eq!(drop_stale(&mut c, bound, true), vec![("stale1".to_string(), false, "would drop".to_string())]);
    let dry = drop_stale_with(&mut c, bound, true, any);
    assert_eq!(
        dry,
        vec![
            ("stale1".to_string(), false, "would drop".to_string()),
            ("stale2".to_string(), false, "would drop".to_string())
        ]
    );
    assert_eq!(slot_names(&mut c), ["busy", "stale1", "stale2", "young"], "a dry run drops nothing");
    // The default is a dry run.
    let default_rows: i64 = c
        .query_one(
            "SELECT count(*) FROM logical_ext.drop_stale_slots('10 seconds', slot_types => '{logical,physical}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(default_rows, 2);

    // Not inside a transaction block: a drop cannot be rolled back, its audit row could.
    let mut tx = c.transaction().unwrap();
    let r = tx.query("SELECT * FROM logical_ext.drop_stale_slots('10 seconds', false)", &[]);
    assert_eq!(sqlstate(r), "25001");
    drop(tx);

    let real = drop_stale_with(&mut c, bound, false, any);
    assert_eq!(
        real,
        vec![("stale1".to_string(), true, "dropped".to_string()), ("stale2".to_string(), true, "dropped".to_string())]
    );
    assert_eq!(slot_names(&mut c), ["busy", "young"]);
    receiver.assert_running("the stale slots were dropped");
    assert!(slot_is_active(&mut c, "busy"), "the active slot is untouched and still streaming");

    let audit = c
        .query(
            "SELECT slot_name::text, slot_type, plugin::text, database::text, dropped_by::text, inactive_since IS NOT NULL,
                    inactive_for = interval '10 seconds', restart_lsn IS NOT NULL, confirmed_flush_lsn IS NOT NULL,
                    wal_lsn >= restart_lsn, lag_bytes, retained_wal_bytes, wal_status
               FROM logical_ext.slot_drop_audit ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(audit.len(), 2);
    let a = &audit[0];
    assert_eq!(a.get::<_, String>(0), "stale1");
    assert_eq!(a.get::<_, String>(1), "logical");
    assert_eq!(a.get::<_, Option<String>>(2).as_deref(), Some("test_decoding"));
    assert_eq!(a.get::<_, Option<String>>(3).as_deref(), Some("postgres"));
    assert_eq!(a.get::<_, String>(4), "postgres");
    for i in 5..=9 {
        assert!(a.get::<_, bool>(i), "audit column {i} of stale1");
    }
    assert!(a.get::<_, Option<i64>>(10).is_some() && a.get::<_, Option<i64>>(11).is_some());
    assert_eq!(a.get::<_, Option<String>>(12).as_deref(), Some("reserved"));
    let p = &audit[1];
    assert_eq!(p.get::<_, String>(0), "stale2");
    assert_eq!(p.get::<_, String>(1), "physical");
    assert!(!p.get::<_, bool>(8), "a physical slot has no confirmed_flush_lsn");

    // The server log has the drops too.
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(log.contains("logical_ext: dropped replication slot \"stale1\""), "{}", cluster.log_tail(20));

    assert_eq!(drop_stale_with(&mut c, bound, true, any), vec![], "nothing stale is left");
}

/// One sample: (sample name, labels, value).
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text with the reference Python client's parser and
/// returns `family name → (type, samples)`.
fn parse_prometheus(text: &str) -> BTreeMap<String, (String, Vec<Sample>)> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (install python3-prometheus-client: scripts/setup.sh does)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected metrics() output: {}\n--- output\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut families = BTreeMap::new();
    for f in v.as_array().unwrap() {
        let samples = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (s[0].as_str().unwrap().to_string(), labels, s[2].as_f64().unwrap())
            })
            .collect();
        families.insert(f["name"].as_str().unwrap().to_string(), (f["type"].as_str().unwrap().to_string(), samples));
    }
    families
}

#[test]
fn metrics_are_prometheus_text_a_parser_accepts() {
    let (publisher, mut c) = monitored_cluster("mon_metrics_pub", PRELOADED);
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t");
    create_slot(&mut c, "idle", "test_decoding");
    create_slot(&mut c, "busy", PLUGIN);
    exec(&mut c, "SELECT pg_create_physical_replication_slot('standby', true)");
    // An application_name that needs escaping in a label value.
    let weird = r#"we"ird\name"#;
    let mut receiver = Receiver::start(&publisher, "busy", weird);
    // A native subscription, for a walsender with write/flush/replay
    // figures, and a logical_ext one (the apply part) for the subscription
    // figures; each with its own table.
    exec(&mut c, "CREATE TABLE t2 (id int PRIMARY KEY)");
    exec(&mut c, "CREATE PUBLICATION pub2 FOR TABLE t2");
    let subscriber = Cluster::start("mon_metrics_sub", &["shared_preload_libraries = 'logical_ext'"]);
    let mut s = subscriber.client();
    exec(&mut s, "CREATE EXTENSION logical_ext");
    exec(&mut s, "CREATE TABLE t (id int PRIMARY KEY)");
    exec(&mut s, "CREATE TABLE t2 (id int PRIMARY KEY)");
    exec(
        &mut s,
        &format!(
            "CREATE SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port={} user=postgres dbname=postgres password=s3cr3t' \
             PUBLICATION pub",
            publisher.port()
        ),
    );
    exec(
        &mut s,
        &format!(
            "SELECT logical_ext.create_subscription('lx', 'host=127.0.0.1 port={} user=postgres dbname=postgres \
             password=s3cr3t', ARRAY['pub2'], copy_data => false)",
            publisher.port()
        ),
    );
    wait_until(TIMEOUT, "the subscription's tables are synchronised", || {
        s.query_one("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'", &[]).unwrap().get::<_, i64>(0)
            == 0
    });
    receiver.wait_active(&mut c, "busy");
    wait_until(TIMEOUT, "the three walsenders stream and the sync slots are gone", || {
        c.query_one("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", &[]).unwrap().get::<_, i64>(0)
            == 3
            && slot_names(&mut c) == ["busy", "idle", "lx", "standby", "sub"]
    });
    exec(&mut c, "INSERT INTO t2 SELECT generate_series(1, 10)");
    wait_until(TIMEOUT, "the logical_ext subscriber has the rows", || {
        s.query_one("SELECT count(*) FROM t2", &[]).unwrap().get::<_, i64>(0) == 10
    });
    exec(&mut c, "INSERT INTO t SELECT generate_series(1, 100)");
    wait_until(TIMEOUT, "the subscriber has the rows", || {
        s.query_one("SELECT count(*) FROM t", &[]).unwrap().get::<_, i64>(0) == 100
    });
    wait_until(TIMEOUT, "the sampler saw 2 rounds", || samples_taken(&mut c) >= 2);

    let text = query_string(&mut c, "SELECT logical_ext.metrics()");
    assert!(!text.contains("s3cr3t") && !text.contains("host="), "no connection strings: {text}");
    let families = parse_prometheus(&text);

    let slot_series = |fam: &str| -> Vec<String> {
        let (_, samples) = families.get(fam).unwrap_or_else(|| panic!("no family {fam} in\n{text}"));
        let mut v: Vec<String> = samples.iter().map(|(_, l, _)| l["slot_name"].clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(slot_series("logical_ext_slot_active"), ["busy", "idle", "lx", "standby", "sub"]);
    assert_eq!(slot_series("logical_ext_slot_lag_bytes"), ["busy", "idle", "lx", "standby", "sub"]);
    assert_eq!(slot_series("logical_ext_slot_status"), ["busy", "idle", "lx", "standby", "sub"]);
    for (fam, (kind, _)) in &families {
        let counters = [
            "logical_ext_sampler_samples",
            "logical_ext_subscription_applied_transactions",
            "logical_ext_subscription_applied_changes",
            "logical_ext_subscription_conflicts",
            "logical_ext_subscription_apply_errors",
            "logical_ext_subscription_sync_errors",
            "logical_ext_slot_spill_bytes",
            "logical_ext_slot_spilled_transactions",
            "logical_ext_slot_stream_bytes",
            "logical_ext_slot_streamed_transactions",
            "logical_ext_slot_decoded_bytes",
        ];
        let want = if counters.contains(&fam.as_str()) { "counter" } else { "gauge" };
        assert_eq!(kind, want, "{fam}");
    }
    // One-hot status per slot, matching slot_health().
    let (_, status) = &families["logical_ext_slot_status"];
    for h in health(&mut c) {
        let ones: Vec<&String> = status
            .iter()
            .filter(|(_, l, v)| l["slot_name"] == h.slot_name && *v == 1.0)
            .map(|(_, l, _)| &l["status"])
            .collect();
        assert_eq!(ones, vec![&h.status], "{}", h.slot_name);
    }
    let (_, active) = &families["logical_ext_slot_active"];
    let active_of = |slot: &str| active.iter().find(|(_, l, _)| l["slot_name"] == slot).unwrap().2;
    assert_eq!((active_of("busy"), active_of("idle"), active_of("sub")), (1.0, 0.0, 1.0));
    let (_, ws) = &families["logical_ext_walsender_lag_bytes"];
    let apps: std::collections::BTreeSet<&str> = ws.iter().map(|(_, l, _)| l["application_name"].as_str()).collect();
    assert_eq!(apps, [weird, "sub", "lx"].into_iter().collect(), "the label value survives escaping");
    assert!(ws.iter().any(|(_, l, _)| l["application_name"] == "sub" && l["stage"] == "replay"));
    assert!(families.contains_key("logical_ext_walsender_lag_seconds"));
    assert_eq!(families["logical_ext_sampler_running"].1[0].2, 1.0);
    let (_, last) = &families["logical_ext_sampler_last_sample_timestamp_seconds"];
    let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((last[0].2 - unix_now).abs() < 120.0, "{last:?} vs {unix_now}");
    assert!(families["logical_ext_sampler_samples"].1[0].2 >= 2.0);

    // replication_status(): both walsenders, no connection string anywhere.
    let rs = query_string(
        &mut c,
        "SELECT string_agg(r::text, E'\\n' ORDER BY application_name) FROM logical_ext.replication_status() r",
    );
    assert!(rs.contains("sub") && rs.contains("streaming") && !rs.contains("s3cr3t"), "{rs}");
    assert_eq!(
        families.get("logical_ext_subscription_enabled").map_or(0, |f| f.1.len()),
        0,
        "the publisher has no logical_ext subscriptions"
    );

    // The subscriber's metrics have the logical_ext subscription's figures.
    let mut last = String::new();
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        last = query_string(&mut s, "SELECT logical_ext.metrics()");
        let f = parse_prometheus(&last);
        if f.get("logical_ext_subscription_applied_changes").is_some_and(|(_, v)| v.iter().any(|x| x.2 >= 10.0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start.elapsed() < TIMEOUT, "the subscriber never reported 10 applied changes:\n{last}");
    let sub_text = query_string(&mut s, "SELECT logical_ext.metrics()");
    assert!(!sub_text.contains("s3cr3t"), "{sub_text}");
    let f = parse_prometheus(&sub_text);
    let value = |fam: &str| -> f64 {
        let (_, v) = f.get(fam).unwrap_or_else(|| panic!("no {fam} in\n{sub_text}"));
        assert_eq!(v.len(), 1, "{fam}: {v:?}");
        assert_eq!(v[0].1["subscription"], "lx");
        v[0].2
    };
    assert_eq!(value("logical_ext_subscription_enabled"), 1.0);
    assert_eq!(value("logical_ext_subscription_apply_errors"), 0.0);
    assert_eq!(value("logical_ext_subscription_sync_errors"), 0.0);
    let (_, conflicts) = &f["logical_ext_subscription_conflicts"];
    let types: Vec<&str> = conflicts.iter().map(|(_, l, _)| l["conflict_type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "insert_exists",
            "update_exists",
            "update_missing",
            "delete_missing",
            "update_origin_differs",
            "delete_origin_differs"
        ]
    );
    assert_eq!(value("logical_ext_subscription_streaming"), 1.0);
    assert_eq!(value("logical_ext_subscription_error"), 0.0);
    assert!(value("logical_ext_subscription_applied_transactions") >= 1.0);
    assert!(value("logical_ext_subscription_lag_bytes") >= 0.0);
    exec(&mut s, "DROP SUBSCRIPTION sub");
}

/// Connects as `role` (trust authentication).
fn connect_as(cluster: &Cluster, role: &str) -> Client {
    Client::connect(&format!("host=127.0.0.1 port={} user={role} dbname=postgres", cluster.port()), NoTls)
        .unwrap_or_else(|e| panic!("connect as {role}: {}", describe_error(&e)))
}

#[test]
fn permissions_for_pg_monitor_replication_and_ordinary_roles() {
    let (cluster, mut c) = monitored_cluster("mon_perms", PRELOADED);
    exec(
        &mut c,
        "CREATE ROLE mon LOGIN IN ROLE pg_monitor;
         CREATE ROLE repl LOGIN REPLICATION;
         CREATE ROLE plain LOGIN;",
    );
    create_slot(&mut c, "old", "test_decoding");
    wait_until(TIMEOUT, "slot old is inactive for 10 s", || {
        c.query_one(
            "SELECT coalesce(inactive_since <= now() - interval '10 seconds', false)
               FROM logical_ext.slot_health() WHERE slot_name = 'old'",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)
    });

    let reads = [
        "SELECT * FROM logical_ext.slot_health()",
        "SELECT * FROM logical_ext.replication_status()",
        "SELECT logical_ext.metrics()",
        "SELECT * FROM logical_ext.sampler_status()",
        "SELECT * FROM logical_ext.slot_drop_audit",
    ];
    let dry = "SELECT * FROM logical_ext.drop_stale_slots('10 seconds')";
    let real = "SELECT * FROM logical_ext.drop_stale_slots('10 seconds', false)";

    // An ordinary role: nothing.
    let mut plain = connect_as(&cluster, "plain");
    for sql in reads.iter().chain([&dry, &real]) {
        assert_eq!(sqlstate(plain.query(*sql, &[])), "42501", "plain: {sql}");
    }
    let err = plain.query(real, &[]).unwrap_err();
    assert!(describe_error(&err).contains("REPLICATION attribute"), "{}", describe_error(&err));
    assert_eq!(sqlstate(plain.execute("DELETE FROM logical_ext.slot_drop_audit", &[])), "42501");

    // A pg_monitor member: reads everything, may dry-run, may not drop.
    let mut mon = connect_as(&cluster, "mon");
    for sql in reads {
        assert_eq!(sqlstate(mon.query(sql, &[])), "success", "mon: {sql}");
    }
    let rows = mon.query(dry, &[]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(sqlstate(mon.query(real, &[])), "42501");
    assert_eq!(sqlstate(mon.execute("DELETE FROM logical_ext.slot_drop_audit", &[])), "42501", "audit is read-only");
    assert_eq!(slot_names(&mut c), ["old"]);
    // The health data is complete for pg_monitor.
    let h = try_health(&mut mon).unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].inactive_since.is_some());

    // A REPLICATION role may drop (and the audit row names it).
    let mut repl = connect_as(&cluster, "repl");
    assert_eq!(sqlstate(repl.query("SELECT * FROM logical_ext.slot_health()", &[])), "42501", "repl cannot read");
    let rows = repl.query(real, &[]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>("slot_name"), "old");
    assert!(rows[0].get::<_, bool>("dropped"));
    assert_eq!(slot_names(&mut c), Vec::<String>::new());
    assert_eq!(query_string(&mut c, "SELECT dropped_by::text FROM logical_ext.slot_drop_audit"), "repl");

    // SET ROLE counts: a superuser session acting as `plain` is refused.
    exec(&mut c, "SET ROLE plain");
    assert_eq!(sqlstate(c.query(real, &[])), "42501");
    exec(&mut c, "RESET ROLE");

    // No monitoring function exposes a connection string.
    let args = query_string(
        &mut c,
        "SELECT coalesce(string_agg(a, ','), '') FROM pg_proc p, unnest(p.proargnames) a
          WHERE p.pronamespace = 'logical_ext'::regnamespace
            AND p.proname IN ('slot_health', 'replication_status', 'metrics', 'sampler_status', 'drop_stale_slots')
            AND (a ILIKE '%conn%' OR a ILIKE '%password%')",
    );
    assert_eq!(args, "");
}

#[test]
fn sampler_reacts_to_sighup_and_sigterm_promptly() {
    let (mut cluster, mut c) = monitored_cluster(
        "mon_signals",
        &["shared_preload_libraries = 'logical_ext'", "logical_ext.monitor_interval = '1h'"],
    );
    wait_until(TIMEOUT, "the sampler took its first sample", || samples_taken(&mut c) >= 1);
    let first = samples_taken(&mut c);

    // SIGHUP: a shorter interval applies at once, not after the hour.
    alter_system(&mut c, "logical_ext.monitor_interval", "'100ms'");
    wait_until(Duration::from_secs(10), "the sampler samples every 100 ms after a reload", || {
        samples_taken(&mut c) >= first + 5
    });

    // SIGTERM while sleeping for an hour: the sampler exits at once and the
    // postmaster starts a new one.
    alter_system(&mut c, "logical_ext.monitor_interval", "'1h'");
    wait_until(Duration::from_secs(10), "the sampler runs with the 1 h interval", || {
        c.query_one("SELECT monitor_interval_ms FROM logical_ext.sampler_status()", &[])
            .unwrap()
            .get::<_, Option<i32>>(0)
            == Some(3_600_000)
    });
    let pid = sampler_pid(&mut c).expect("a sampler");
    // Not in the ProcArray (no database), so pg_terminate_backend() cannot
    // reach it: send SIGTERM as the postmaster does at shutdown.
    run_checked(Command::new("kill").args(["-TERM", &pid.to_string()]), "kill -TERM the sampler");
    wait_until(Duration::from_secs(5), "the sampler exits on SIGTERM", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| s.contains("State:\tZ"))
    });
    wait_until(TIMEOUT, "the postmaster restarts the sampler", || {
        sampler_pid(&mut c).is_some_and(|p| p != pid)
            && c.query_one("SELECT running FROM logical_ext.sampler_status()", &[]).unwrap().get::<_, bool>(0)
    });

    // A fast shutdown does not wait for the hour either.
    drop(c);
    let start = Instant::now();
    cluster.stop_with("fast");
    assert!(start.elapsed() < Duration::from_secs(10), "shutdown took {:?}", start.elapsed());
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(!log.contains("PANIC"), "{}", cluster.log_tail(30));
}

/// Settings of a cluster whose sampler runs every second: a consumer that
/// polls every few hundred milliseconds is almost never caught active.
const SAMPLED_EACH_SECOND: &[&str] =
    &["shared_preload_libraries = 'logical_ext'", "logical_ext.monitor_interval = '1s'"];

/// Whether every one of `slots` has been inactive for at least `secs`
/// according to slot_health().
fn inactive_for_at_least(c: &mut Client, slots: &[&str], secs: u32) -> bool {
    let names: Vec<String> = slots.iter().map(|s| s.to_string()).collect();
    c.query_one(
        "SELECT count(*) FROM logical_ext.slot_health()
          WHERE slot_name = ANY($1) AND inactive_since <= now() - make_interval(secs => $2::int)",
        &[&names, &(secs as i32)],
    )
    .unwrap()
    .get::<_, i64>(0)
        == slots.len() as i64
}

/// A consumer polling with pg_logical_slot_get_changes() holds its slot for
/// milliseconds at a time, so the sampler hardly ever sees it active; its
/// positions move with every poll, and that is activity. (Reproduced: the
/// slot looked inactive since the first sample and was dropped.)
#[test]
fn drop_stale_slots_never_drops_a_slot_polled_between_samples() {
    let (_cluster, mut c) = monitored_cluster("mon_poll", SAMPLED_EACH_SECOND);
    create_slot(&mut c, "poller", "test_decoding");
    create_slot(&mut c, "stale", "test_decoding");
    let poll = |c: &mut Client| {
        exec(c, "INSERT INTO filler (pad) VALUES ('x')");
        exec(c, "SELECT count(*) FROM pg_logical_slot_get_changes('poller', NULL, NULL)");
    };
    // Poll (every 300 ms) until the untouched slot is stale.
    wait_until(TIMEOUT, "slot stale is inactive for 11 s", || {
        poll(&mut c);
        std::thread::sleep(Duration::from_millis(300));
        inactive_for_at_least(&mut c, &["stale"], 11)
    });
    poll(&mut c);
    let poller = health_of(&mut c, "poller");
    assert!(!poller.active, "the poller holds its slot only during each call: {poller:#?}");
    assert!(
        !inactive_for_at_least(&mut c, &["poller"], 3),
        "a slot whose positions move is not inactive for long: {poller:#?}"
    );
    assert_eq!(drop_stale(&mut c, "10 seconds", true), vec![("stale".to_string(), false, "would drop".to_string())]);
    assert_eq!(drop_stale(&mut c, "10 seconds", false), vec![("stale".to_string(), true, "dropped".to_string())]);
    assert_eq!(slot_names(&mut c), ["poller"], "the polled slot is kept");
}

/// A real drop happens only where its audit row cannot be lost afterwards,
/// and is written in the same subtransaction as the drop.
#[test]
fn a_real_drop_refuses_where_its_audit_row_could_be_lost() {
    let (_cluster, mut c) = monitored_cluster("mon_audit", PRELOADED);
    for s in ["a", "b"] {
        create_slot(&mut c, s, "test_decoding");
    }
    wait_until(TIMEOUT, "both slots are inactive for 10 s", || inactive_for_at_least(&mut c, &["a", "b"], 10));
    let audit_rows = |c: &mut Client| query_string(c, "SELECT count(*)::text FROM logical_ext.slot_drop_audit");
    let real = "SELECT * FROM logical_ext.drop_stale_slots('10 seconds', false)";

    // Absurdly small bounds are refused, dry run or not.
    for sql in [
        "SELECT * FROM logical_ext.drop_stale_slots('1 second')",
        "SELECT * FROM logical_ext.drop_stale_slots('0', false)",
    ] {
        let err = c.query(sql, &[]).unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "22023", "{}", describe_error(&err));
        assert!(db.message().contains("at least 10 seconds"), "{}", describe_error(&err));
        assert!(db.hint().is_some(), "{}", describe_error(&err));
    }

    // A read-only transaction could not write the audit row: refused before
    // anything is dropped.
    exec(&mut c, "SET default_transaction_read_only = on");
    let err = c.query(real, &[]).unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "25006", "{}", describe_error(&err));
    assert!(db.hint().unwrap_or_default().contains("slot_drop_audit"), "{}", describe_error(&err));
    exec(&mut c, "SET default_transaction_read_only = off");
    assert_eq!(slot_names(&mut c), ["a", "b"]);

    // Called from a function that then fails: PreventInTransactionBlock sees
    // a top-level DO and lets it pass; the slot would be gone and its audit
    // row rolled back. Refused.
    let r = c.batch_execute(
        "DO $$ BEGIN
             PERFORM * FROM logical_ext.drop_stale_slots('10 seconds', false);
             RAISE EXCEPTION 'the caller fails afterwards';
         END $$",
    );
    assert_eq!(sqlstate(r), "25001");
    exec(
        &mut c,
        "CREATE FUNCTION wrapper() RETURNS bigint LANGUAGE sql
             AS $$ SELECT count(*) FROM logical_ext.drop_stale_slots('10 seconds', false) $$",
    );
    assert_eq!(sqlstate(c.query("SELECT wrapper()", &[])), "25001");
    assert_eq!(slot_names(&mut c), ["a", "b"], "nothing was dropped");
    assert_eq!(audit_rows(&mut c), "0");

    // At the top level, through the simple and the extended protocol: each
    // drop has its audit row.
    let rows = c
        .simple_query(
            "SELECT slot_name FROM logical_ext.drop_stale_slots('10 seconds', false, include_names => ARRAY['a'])",
        )
        .unwrap();
    let dropped: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, ["a"]);
    assert_eq!(drop_stale(&mut c, "10 seconds", false), vec![("b".to_string(), true, "dropped".to_string())]);
    assert_eq!(slot_names(&mut c), Vec::<String>::new());
    assert_eq!(
        query_string(&mut c, "SELECT string_agg(slot_name, ',' ORDER BY id) FROM logical_ext.slot_drop_audit"),
        "a,b"
    );
}

/// Slots that are idle on purpose are not candidates unless asked for:
/// physical slots, logical_ext's own slots, native tablesync slots; name
/// patterns and retained WAL narrow the choice further.
#[test]
fn drop_stale_slots_keeps_standby_and_subscription_slots_by_default() {
    let (_cluster, mut c) = monitored_cluster("mon_exclude", PRELOADED);
    exec(&mut c, "SELECT pg_create_physical_replication_slot('standby', true)");
    create_slot(&mut c, "lx_sub", PLUGIN);
    create_slot(&mut c, "pg_16390_sync_16385_7312345678901234567", "test_decoding");
    create_slot(&mut c, "le_3_16385_sync_7312345678901234567", "test_decoding");
    create_slot(&mut c, "plain", "test_decoding");
    create_slot(&mut c, "patroni_keep", "test_decoding");
    write_wal(&mut c, 100);
    let all = [
        "le_3_16385_sync_7312345678901234567",
        "lx_sub",
        "patroni_keep",
        "pg_16390_sync_16385_7312345678901234567",
        "plain",
        "standby",
    ];
    wait_until(TIMEOUT, "every slot is inactive for 10 s", || inactive_for_at_least(&mut c, &all, 10));
    let b = "10 seconds";

    assert_eq!(would_drop(&mut c, b, ""), ["patroni_keep", "plain"]);
    assert_eq!(would_drop(&mut c, b, ", exclude_names => ARRAY['patroni%']"), ["plain"]);
    assert_eq!(would_drop(&mut c, b, ", include_names => ARRAY['pat%', 'nomatch']"), ["patroni_keep"]);
    assert_eq!(would_drop(&mut c, b, ", slot_types => ARRAY['physical']"), ["standby"]);
    assert_eq!(
        would_drop(&mut c, b, ", slot_types => ARRAY['logical', 'physical'], include_subscription_slots => true"),
        all
    );
    assert_eq!(would_drop(&mut c, b, ", min_retained_bytes => 1073741824"), Vec::<String>::new());
    assert_eq!(would_drop(&mut c, b, ", min_retained_bytes => 65536"), ["patroni_keep", "plain"]);
    assert_eq!(
        sqlstate(c.query("SELECT * FROM logical_ext.drop_stale_slots('1 day', slot_types => ARRAY['both'])", &[])),
        "22023"
    );

    assert_eq!(
        drop_stale_with(&mut c, b, false, ", exclude_names => ARRAY['patroni%']"),
        vec![("plain".to_string(), true, "dropped".to_string())]
    );
    let mut left = slot_names(&mut c);
    left.sort();
    let mut want: Vec<&str> = all.iter().copied().filter(|s| *s != "plain").collect();
    want.sort();
    assert_eq!(left, want);
}

/// The sampler prunes conflict_log and ddl_log in every database where
/// logical_ext is installed (before, conflict_log was pruned only when an
/// apply session started, ddl_log never).
#[test]
fn the_sampler_prunes_the_logs_of_every_database() {
    let conf: Vec<&str> = PRELOADED
        .iter()
        .copied()
        .chain([
            "logical_ext.log_prune_interval = '1s'",
            "logical_ext.conflict_log_retention = '1h'",
            "logical_ext.ddl_log_retention = '1d'",
        ])
        .collect();
    let (cluster, mut c) = monitored_cluster("mon_prune", &conf);
    exec(&mut c, "CREATE DATABASE other");
    let mut o = cluster.client_db("other");
    exec(&mut o, "CREATE EXTENSION logical_ext");
    exec(&mut c, "CREATE DATABASE without_extension");
    let seed = "INSERT INTO logical_ext.conflict_log (detected_at, subscription, relation, conflict_type, resolution)
                VALUES (now() - interval '2 hours', 's', 't', 'insert_exists', 'error'),
                       (now() - interval '10 minutes', 's', 't', 'insert_exists', 'error');
                INSERT INTO logical_ext.ddl_log (logged_at, source, command_tag, search_path, role_name, command,
                                                 replicated)
                VALUES (now() - interval '2 days', 'replicate_ddl', 'CREATE TABLE', 'public', 'postgres', 'x', true),
                       (now() - interval '2 hours', 'replicate_ddl', 'CREATE TABLE', 'public', 'postgres', 'y', true)";
    exec(&mut c, seed);
    exec(&mut o, seed);
    let counts = |c: &mut Client| {
        query_string(
            c,
            "SELECT (SELECT count(*) FROM logical_ext.conflict_log) || ',' || (SELECT count(*) FROM logical_ext.ddl_log)",
        )
    };
    wait_until(TIMEOUT, "the old rows are pruned in both databases", || {
        counts(&mut c) == "1,1" && counts(&mut o) == "1,1"
    });
    assert_eq!(query_string(&mut o, "SELECT command FROM logical_ext.ddl_log"), "y", "the recent row is kept");
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(log.contains("logical_ext: pruned 1 rows of logical_ext.ddl_log"), "{}", cluster.log_tail(30));
    assert!(!log.contains("PANIC"), "{}", cluster.log_tail(30));
}
