//! Large transactions and the streaming replication protocol.
//! Spec: docs/FORMAT.md (one document per row / CopyData message / line of
//! `pg_recvlogical -f -`).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use std::time::{Duration, Instant};

const ROWS: u64 = 1_000_000;
const MAX_PEAK_RSS_MIB: u64 = 300;

/// One transaction inserting a million rows, read through
/// pg_logical_slot_get_changes row by row: exact count, every id once, and the
/// decoding backend's peak RSS stays bounded.
#[test]
fn million_row_transaction_bounded_memory() {
    let (cluster, mut c) = plugin_cluster("dec_million");
    exec(&mut c, "CREATE TABLE big (id int, t text, n numeric, ts timestamptz, f float8)");
    let started = Instant::now();
    exec(
        &mut c,
        &format!(
            "INSERT INTO big SELECT g, md5(g::text), g * 1.5, '2026-01-01'::timestamptz + g * interval '1 s', g / 7.0
               FROM generate_series(1, {ROWS}) g"
        ),
    );
    let insert_time = started.elapsed();

    // A fresh backend does the decoding, so its high-water mark is its own.
    let mut d = cluster.client();
    let pid = backend_pid(&mut d);
    let baseline = peak_rss_kib(pid);
    let mut seen = vec![false; ROWS as usize + 1];
    let (mut begins, mut commits, mut inserts, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    let started = Instant::now();
    let n = stream_changes(&mut d, true, "s", &[], |lsn, data| {
        let doc: serde_json::Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                if bad.len() < 5 {
                    bad.push(format!("{lsn}: {e}: {data}"));
                }
                return;
            }
        };
        match doc["action"].as_str() {
            Some("B") => begins += 1,
            Some("C") => commits += 1,
            Some("I") => {
                inserts += 1;
                let id = json::value(&doc, "columns", "id").to_string().parse::<usize>().unwrap_or(0);
                if id == 0 || id > ROWS as usize || seen[id] {
                    if bad.len() < 5 {
                        bad.push(format!("bad or repeated id: {data}"));
                    }
                } else {
                    seen[id] = true;
                }
            }
            _ => other += 1,
        }
    });
    let decode_time = started.elapsed();
    let peak = peak_rss_kib(pid);
    eprintln!(
        "million rows: insert {insert_time:?}, decode+read {decode_time:?} ({:.0} rows/s), \
         backend VmHWM {} MiB (baseline {} MiB)",
        n as f64 / decode_time.as_secs_f64(),
        peak / 1024,
        baseline / 1024
    );
    assert!(bad.is_empty(), "bad documents:\n{}", bad.join("\n"));
    assert_eq!((begins, inserts, commits, other), (1, ROWS, 1, 0), "B/I/C/other counts");
    assert_eq!(n, ROWS + 2);
    assert!(seen[1..].iter().all(|&s| s), "some ids missing");
    assert!(peak < MAX_PEAK_RSS_MIB * 1024, "decoding backend peak RSS {} MiB >= {MAX_PEAK_RSS_MIB} MiB", peak / 1024);
}

/// Runs pg_recvlogical as postgres until `endpos`; returns its stdout.
fn recvlogical(cluster: &Cluster, slot: &str, endpos: &str, options: &[&str]) -> String {
    let mut cmd = cluster.recvlogical("", slot);
    cmd.arg(format!("--endpos={endpos}")).args(["-o", "format-version=2"]);
    for o in options {
        cmd.arg("-o").arg(o);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60), "pg_recvlogical reaches --endpos");
    let stdout = String::from_utf8(out.stdout).expect("pg_recvlogical stdout is UTF-8");
    assert!(
        out.status.success(),
        "pg_recvlogical failed ({}): {}\n--- stdout:\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// pg_recvlogical --start over the replication protocol writes
/// the same documents, one per line, as pg_logical_slot_peek_changes.
#[test]
fn pg_recvlogical_matches_sql_interface() {
    let (cluster, mut c) = plugin_cluster("dec_recvlogical");
    create_slot(&mut c, "s2", PLUGIN);
    exec(
        &mut c,
        "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, j jsonb);
         CREATE TABLE u (id int);",
    );
    exec(
        &mut c,
        "INSERT INTO t VALUES (1, E'multi\\nline \"quoted\"', 1.50, '{\"a\": [1, 2]}'), (2, NULL, 'NaN', NULL);",
    );
    exec(&mut c, "UPDATE t SET v = 'x' WHERE id = 1; DELETE FROM t WHERE id = 2;");
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'p', E'line\\nbreak')");
    exec(&mut c, "SELECT pg_logical_emit_message(true, 'p', 'tx')");
    exec(&mut c, "INSERT INTO u VALUES (1); TRUNCATE u;");

    let sql = peek_changes(&mut c, "s", &opts(&[("include-xids", "1")]));
    assert_eq!(actions(&sql), "B I I C B U D C M B M C B I T C", "\n{}", dump(&sql));
    let endpos = sql.last().unwrap().lsn.clone();
    let out = recvlogical(&cluster, "s", &endpos, &["include-xids=1"]);
    let lines: Vec<&str> = out.lines().collect();
    let want: Vec<&str> = sql.iter().map(|c| c.data.as_str()).collect();
    assert_eq!(lines, want, "pg_recvlogical output differs from get_changes");
    // The slot has been consumed up to endpos.
    assert!(peek_changes(&mut c, "s", &[]).is_empty());

    // A boolean option without a value (only possible over replication) is true.
    let sql2 = peek_changes(&mut c, "s2", &opts(&[("include-xids", "1"), ("include-lsn", "1")]));
    let out2 = recvlogical(&cluster, "s2", &endpos, &["include-xids", "include-lsn=on"]);
    let lines2: Vec<&str> = out2.lines().collect();
    let want2: Vec<&str> = sql2.iter().map(|c| c.data.as_str()).collect();
    assert_eq!(lines2, want2, "options without values over replication");
}

/// A bad option over the replication protocol makes pg_recvlogical fail with
/// the plugin's message.
#[test]
fn pg_recvlogical_reports_option_errors() {
    let (cluster, mut c) = plugin_cluster("dec_recvlogical_err");
    exec(&mut c, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    let endpos = query_string(&mut c, "SELECT pg_current_wal_lsn()::text");
    let out = run_with_timeout(
        cluster.recvlogical("", "s").arg(format!("--endpos={endpos}")).args(["-o", "format-version=7"]),
        Duration::from_secs(60),
        "pg_recvlogical with a bad option",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pg_recvlogical accepted format-version=7");
    assert!(err.contains("format-version"), "stderr: {err}");
}
