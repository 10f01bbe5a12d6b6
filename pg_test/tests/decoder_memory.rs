//! The decoding backend's memory: flat through cache invalidations (issue 12,
//! fault test 8), exact for huge values, and a clean ERROR (SQLSTATE 54000,
//! no abort, no publisher restart) for a document above 1 GB (fault test 9).
//! Spec: docs/FORMAT.md, "Errors".

use logical_ext_pg_test::background::{Background, wait_with_load};
use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Relcache invalidations replayed by the decoder, each followed by a
/// published change (so the cached shape and route are rebuilt every time).
const ROUNDS: usize = 50;
const PER_ROUND: usize = 200;
/// Rounds decoded before the baseline is taken (allocator warm-up).
const WARMUP: usize = 5;
/// Allowed growth of the decoding backend's anonymous memory after warm-up.
const MAX_GROWTH_KIB: u64 = 4 * 1024;

/// Anonymous resident memory (`RssAnon`) of a process, in KiB: VmRSS minus
/// the shared buffers and WAL pages it touched (which grow with any work).
fn anon_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc status");
    line["RssAnon:".len()..].trim().trim_end_matches("kB").trim().parse().expect("RssAnon value")
}

/// Starts pg_recvlogical on slot `s` with `options`, calling `on_line` (on
/// another thread) for each document; returns it (killed on drop; its
/// stderr kept, so that a receiver that died says why) and its walsender's
/// pid.
fn receive(
    cluster: &Cluster,
    c: &mut Client,
    options: &[&str],
    mut on_line: impl FnMut(String) + Send + 'static,
) -> (Background, u32) {
    let mut cmd = cluster.recvlogical("application_name=mem_receiver", "s");
    for o in options {
        cmd.arg("-o").arg(o);
    }
    let (mut child, stdout) = Background::spawn_reading(cmd, "pg_recvlogical", cluster.dir());
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(line);
        }
    });
    let mut pid = 0u32;
    wait_with_load(
        &mut child,
        Duration::from_secs(30),
        "pg_recvlogical's walsender appears",
        || {
            let rows = c
                .query("SELECT pid FROM pg_stat_replication WHERE application_name = 'mem_receiver'", &[])
                .expect("pg_stat_replication");
            rows.first().map(|r| pid = r.get::<_, i32>(0) as u32).is_some()
        },
        String::new,
    );
    (child, pid)
}

/// One walsender (pg_recvlogical with publication_names) through 10,000
/// relcache invalidations of a published table with a row filter and many
/// output-function columns, each followed by a published row so that the
/// cached shape and route are rebuilt every time: its memory stays flat.
#[test]
fn walsender_memory_flat_through_invalidations() {
    let (cluster, mut c) = plugin_cluster("dec_mem_inval");
    exec(
        &mut c,
        "CREATE TABLE wide (id int PRIMARY KEY, n numeric, ts timestamptz, u uuid, j jsonb, iv interval,
                            d date, ip inet, a int[], m money, p point, t text, b bytea, x xml, tr tsvector,
                            n2 numeric(10,2), c2 char(3), tm time, r int4range, bx box);
         CREATE PUBLICATION p FOR TABLE wide WHERE (id > 0);",
    );
    let inserts = Arc::new(AtomicU64::new(0));
    let counter = inserts.clone();
    let (mut receiver, pid) = receive(&cluster, &mut c, &["publication_names=p"], move |line| {
        if line.starts_with("{\"action\":\"I\"") {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let (mut baseline, mut baseline_rss) = (0, 0);
    for round in 0..ROUNDS {
        let first = round * PER_ROUND + 1;
        exec(
            &mut c,
            &format!(
                "DO $$ BEGIN FOR i IN {first}..{} LOOP
                   ALTER TABLE wide SET (fillfactor = 90);
                   INSERT INTO wide (id, n, ts, u, ip, m, x, r) VALUES (i, i * 1.5, now(), gen_random_uuid(),
                     '10.0.0.1', 1.25, '<a/>', int4range(1, i + 1));
                 END LOOP; END $$",
                first + PER_ROUND - 1
            ),
        );
        let want = ((round + 1) * PER_ROUND) as u64;
        wait_with_load(
            &mut receiver,
            Duration::from_secs(30),
            "the walsender streams the round's rows",
            || inserts.load(Ordering::Relaxed) >= want,
            String::new,
        );
        if round + 1 == WARMUP {
            (baseline, baseline_rss) = (anon_rss_kib(pid), rss_kib(pid));
        }
    }
    let (end, end_rss) = (anon_rss_kib(pid), rss_kib(pid));
    let growth = end.saturating_sub(baseline);
    eprintln!(
        "{} invalidations+rebuilds in {:?}: walsender RssAnon {baseline} -> {end} KiB (+{growth} KiB), \
         VmRSS {baseline_rss} -> {end_rss} KiB, over the last {} rebuilds",
        ROUNDS * PER_ROUND,
        started.elapsed(),
        (ROUNDS - WARMUP) * PER_ROUND
    );
    assert_eq!(inserts.load(Ordering::Relaxed), (ROUNDS * PER_ROUND) as u64, "every insert streamed once");
    assert!(
        growth <= MAX_GROWTH_KIB,
        "walsender grew by {growth} KiB over {} cache rebuilds (bound {MAX_GROWTH_KIB} KiB)",
        (ROUNDS - WARMUP) * PER_ROUND
    );
}

/// The postmaster's identity: its pid (postmaster.pid) and start time.
fn postmaster_identity(cluster: &Cluster, c: &mut Client) -> (String, String) {
    let pidfile = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).expect("postmaster.pid");
    let pid = pidfile.lines().next().unwrap_or_default().to_string();
    (pid, query_string(c, "SELECT pg_postmaster_start_time()::text"))
}

/// A 200 MB text value (with characters that need escaping) streams exactly;
/// a row whose document would exceed 1 GB raises SQLSTATE 54000 with a HINT,
/// and the publisher does not restart.
#[test]
fn huge_values_exact_or_clean_error() {
    let (cluster, mut c) = plugin_cluster("dec_mem_huge");
    exec(&mut c, "CREATE TABLE big (id int PRIMARY KEY, v text)");
    let started = Instant::now();
    // 5.8M chunks of 35 bytes (a quote, a backslash and a newline each): 203 MB.
    exec(
        &mut c,
        "INSERT INTO big SELECT 1, string_agg(md5(i::text) || E'\"\\\\\\n', '') FROM generate_series(1, 5800000) i",
    );
    let expected: String = c.query_one("SELECT v FROM big WHERE id = 1", &[]).expect("read value").get(0);
    assert_eq!(expected.len(), 5_800_000 * 35);
    let insert_time = started.elapsed();

    let (tx, rx) = std::sync::mpsc::channel();
    let (mut receiver, pid) = receive(&cluster, &mut c, &["format-version=2"], move |line| {
        if line.starts_with("{\"action\":\"I\"") {
            let _ = tx.send(line);
        }
    });
    let baseline = peak_rss_kib(pid);
    let started = Instant::now();
    let doc = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("the walsender streams the 200 MB row: {e}\n{}", receiver.describe()));
    let decode_time = started.elapsed();
    let peak = peak_rss_kib(pid);
    drop(receiver);
    let parsed: serde_json::Value = serde_json::from_str(&doc).expect("the document is JSON");
    let got = json::value(&parsed, "columns", "v").as_str().expect("v is a JSON string");
    assert!(got.len() == expected.len() && got == expected, "200 MB value differs (length {})", got.len());
    eprintln!(
        "200 MB value: insert {insert_time:?}, decode+stream {decode_time:?}, document {} MiB, \
         walsender VmHWM {} MiB (at start {} MiB)",
        doc.len() >> 20,
        peak / 1024,
        baseline / 1024
    );
    drop(parsed);
    drop(doc);
    drop(expected);
    // End the walsender (pg_recvlogical --no-loop exits with it); read on
    // through SQL.
    exec(&mut c, &format!("SELECT pg_terminate_backend({pid})"));
    wait_until(Duration::from_secs(30), "the walsender has exited", || {
        query_string(&mut c, "SELECT count(*)::text FROM pg_stat_replication") == "0"
    });

    // 600 M characters that each escape to 6 bytes (\u0001): 3.6 GB of JSON.
    let before = postmaster_identity(&cluster, &mut c);
    exec(&mut c, "INSERT INTO big VALUES (2, repeat(chr(1), 600000000))");
    let mut d = cluster.client();
    let pid = backend_pid(&mut d);
    let started = Instant::now();
    let (code, message, hint) =
        replication::expect_error(&mut d, "SELECT count(*) FROM pg_logical_slot_get_changes('s', NULL, NULL)");
    eprintln!(
        "document > 1 GB: {code} {message:?} (hint {hint:?}) after {:?}, decoding backend VmHWM {} MiB",
        started.elapsed(),
        peak_rss_kib(pid) / 1024
    );
    assert_eq!(code, "54000", "program_limit_exceeded: {message}");
    assert!(!hint.is_empty(), "the error has a HINT");
    assert!(!message.contains("panick"), "no Rust panic text: {message}");
    // The same session and the server go on; the postmaster did not restart.
    assert_eq!(query_string(&mut d, "SELECT 1::text"), "1");
    let mut c = cluster.client();
    assert_eq!(postmaster_identity(&cluster, &mut c), before, "the postmaster restarted");
}
