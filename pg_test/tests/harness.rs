//! Checks of the harness itself, with plugins that ship with PostgreSQL
//! (test_decoding) or Debian (wal2json), so they pass without logical_ext.

use logical_ext_pg_test::decoding::{create_slot, get_changes, opts};
use logical_ext_pg_test::*;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[test]
fn cluster_decodes_with_test_decoding() {
    let cluster = Cluster::start("harness_test_decoding", &[]);
    let mut c = cluster.client();
    create_slot(&mut c, "td", "test_decoding");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a''b');");
    let rows = c
        .query("SELECT data FROM pg_logical_slot_get_changes('td', NULL, NULL, 'skip-empty-xacts', '1')", &[])
        .unwrap();
    let data: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(data.len(), 3, "{data:?}");
    assert!(data[0].starts_with("BEGIN"), "{data:?}");
    assert_eq!(data[1], "table public.t: INSERT: id[integer]:1 v[text]:'a''b'");
    assert!(data[2].starts_with("COMMIT"), "{data:?}");

    // The settings the harness promises are in force.
    for (name, want) in [
        ("wal_level", "logical"),
        ("max_replication_slots", "20"),
        ("track_commit_timestamp", "on"),
        ("fsync", "off"),
        ("server_encoding", "UTF8"),
        ("TimeZone", "UTC"),
        ("listen_addresses", "127.0.0.1"),
        ("port", &cluster.port().to_string()),
        ("unix_socket_directories", &cluster.socket_dir().display().to_string()),
    ] {
        assert_eq!(query_string(&mut c, &format!("SHOW {name}")), want, "{name}");
    }
    assert_eq!(query_string(&mut c, "SHOW output_plugin_libraries"), "pgoutput, test_decoding, wal2json, logical_ext");
}

#[test]
fn extra_conf_is_applied_and_server_runs_as_postgres() {
    let cluster = Cluster::start("harness_extra_conf", &["work_mem = '7MB'"]);
    assert_eq!(cluster.psql("SHOW work_mem"), "7MB");
    assert_eq!(cluster.psql("SELECT 1 + 1"), "2");
    let mut c = cluster.client();
    let pid = backend_pid(&mut c);
    let uid = std::fs::metadata(format!("/proc/{pid}")).expect("backend /proc entry").uid();
    if running_as_root() {
        assert_eq!(uid, postgres_ids().0, "backend does not run as postgres");
    }
    let dir_uid = std::fs::metadata(cluster.data_dir()).unwrap().uid();
    assert_eq!(dir_uid, uid);
}

#[test]
fn wal2json_is_allowed_and_parses() {
    let cluster = Cluster::start("harness_wal2json", &[]);
    let mut c = cluster.client();
    create_slot(&mut c, "w", "wal2json");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (42);");
    let rows =
        c.query("SELECT data FROM pg_logical_slot_get_changes('w', NULL, NULL, 'format-version', '2')", &[]).unwrap();
    let docs: Vec<serde_json::Value> =
        rows.iter().map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap()).collect();
    let inserts: Vec<_> = docs.iter().filter(|d| d["action"] == "I").collect();
    assert_eq!(inserts.len(), 1, "{docs:?}");
    assert!(json::is_integer(json::value(inserts[0], "columns", "id"), "42"));
}

#[test]
fn plugin_outside_allow_list_is_refused() {
    // Proves the allow-list setting is real: a list without test_decoding refuses it.
    let cluster = Cluster::start("harness_allow_list", &["output_plugin_libraries = 'pgoutput'"]);
    let mut c = cluster.client();
    let err = c
        .query_one("SELECT pg_create_logical_replication_slot('x', 'test_decoding')", &[])
        .expect_err("test_decoding should be refused");
    assert!(describe_error(&err).contains("may not be used as an output plugin"), "{}", describe_error(&err));
}

#[test]
fn parallel_clusters_are_isolated_and_dropped() {
    let a = Cluster::start("harness_par_a", &[]);
    let b = Cluster::start("harness_par_b", &[]);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.exec("CREATE TABLE only_in_a (x int)");
    assert_eq!(b.psql("SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"), "0");
    let dir = a.dir().to_path_buf();
    let port = a.port();
    drop(a);
    if std::env::var("KEEP_CLUSTERS").as_deref() != Ok("1") {
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
    // The server is gone: connecting fails.
    assert!(
        postgres::Client::connect(&format!("host=127.0.0.1 port={port} user=postgres connect_timeout=5"), NoTls)
            .is_err()
    );
}

#[test]
fn restart_keeps_port_and_data() {
    let mut cluster = Cluster::start("harness_restart", &[]);
    cluster.exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)");
    let port = cluster.port();
    cluster.restart();
    assert_eq!(cluster.port(), port);
    assert_eq!(cluster.psql("SELECT x FROM kept"), "7");
}

#[test]
fn wait_until_returns_when_condition_holds() {
    let start = std::time::Instant::now();
    let mut n = 0;
    wait_until(Duration::from_secs(5), "counter reaches 5", || {
        n += 1;
        n >= 5
    });
    assert_eq!(n, 5);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
#[should_panic(expected = "waiting until the impossible happens")]
fn wait_until_panics_with_description() {
    wait_until(Duration::from_millis(50), "the impossible happens", || false);
}

#[test]
fn peak_rss_reads_proc() {
    let me = std::process::id();
    let before = peak_rss_kib(me);
    assert!(before > 0);
    // Touch 64 MiB: the high-water mark must grow by about that much.
    let v = vec![1u8; 64 << 20];
    let sum: u64 = v.iter().step_by(4096).map(|&b| b as u64).sum();
    assert!(sum > 0);
    let now = rss_kib(me);
    let after = peak_rss_kib(me);
    assert!(after >= before + 60 * 1024, "VmHWM {before} -> {after} KiB");
    // The kernel updates VmHWM lazily and other test threads allocate
    // concurrently, so VmRSS may briefly exceed it by a little; it must
    // still hold the 64 MiB just touched.
    assert!(now >= 60 * 1024, "VmRSS {now} KiB after touching 64 MiB");
}

#[test]
fn lsn_parsing() {
    assert_eq!(parse_lsn("0/0"), 0);
    assert_eq!(parse_lsn("16/B374D848"), (0x16 << 32) | 0xB374D848);
}

#[test]
fn option_helper_flattens() {
    let o = opts(&[("a", "1"), ("b", "x")]);
    assert_eq!(o, vec![("a", Some("1")), ("b", Some("x"))]);
    let cluster = Cluster::start("harness_options", &[]);
    let mut c = cluster.client();
    create_slot(&mut c, "td", "test_decoding");
    exec(&mut c, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    // Options reach the plugin (the SQL interface refuses NULL values, so a
    // boolean option without a value can only be tested over replication).
    // (as given: try_changes would add logical_ext's format-version 2 first.)
    let err = decoding::try_changes_as_given(
        &mut c,
        false,
        "td",
        &[("include-xids", Some("0")), ("no-such-option", Some("1"))],
    )
    .expect_err("unknown option");
    assert!(describe_error(&err).contains("no-such-option"), "{}", describe_error(&err));
    assert_eq!(err.code(), Some(&postgres::error::SqlState::INVALID_PARAMETER_VALUE));
    // Non-JSON plugins can't go through get_changes (it parses JSON), so use SQL.
    let n: i64 =
        c.query_one("SELECT count(*) FROM pg_logical_slot_peek_changes('td', NULL, NULL)", &[]).unwrap().get(0);
    assert!(n >= 3);
    let _ = get_changes; // used by decoder tests
}
