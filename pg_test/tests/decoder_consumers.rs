//! Real consumers of wal2json's stream, pointed at logical_ext by changing
//! the plugin name (issue 19): a psycopg2 replication consumer (acknowledge,
//! disconnect, restart: nothing lost, nothing re-sent past the acknowledged
//! LSN) and `pg_recvlogical` piped into a strict JSON parser, in both format
//! versions. The option sets of common consumers are compared with the real
//! wal2json in decoder_wal2json_oracle.
//!
//! Both use Debian's /usr/bin/python3 with python3-psycopg2 (installed by
//! scripts/setup.sh). Nothing is skipped: without them the tests fail.

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

/// A psycopg2 `LogicalReplicationConnection` consumer, written as wal2json's
/// users write one: `start_replication(options=…)`, read messages, and
/// `send_feedback(flush_lsn=…)` after each transaction it has processed.
/// Arguments: conninfo, slot, options (JSON object), format version (how to
/// find a transaction's end), transactions to read, how many of them to
/// acknowledge. Prints one JSON line per transaction: the ids of its rows of
/// table `t`, the message's `data_start`, whether it was acknowledged. Before
/// disconnecting it waits until the slot shows the acknowledgement.
const PSYCOPG2_CONSUMER: &str = r#"
import json, select, sys, time
import psycopg2, psycopg2.extras

conninfo, slot, options, version, want, ack = sys.argv[1:7]
want, ack = int(want), int(ack)
deadline = time.time() + 60
conn = psycopg2.connect(conninfo, connection_factory=psycopg2.extras.LogicalReplicationConnection)
cur = conn.cursor()
cur.start_replication(slot_name=slot, decode=True, options=json.loads(options))
txns, acked, ids = 0, None, []
while txns < want:
    if time.time() > deadline:
        sys.exit("timed out after %d transactions" % txns)
    msg = cur.read_message()
    if msg is None:
        select.select([cur], [], [], 1.0)
        continue
    doc = json.loads(msg.payload)
    if version == "1":
        if "xid" not in doc:
            continue  # a non-transactional message
        ids = [c["columnvalues"][0] for c in doc["change"] if c["kind"] == "insert" and c["table"] == "t"]
        end = True
    else:
        end = doc["action"] == "C"
        if doc["action"] == "I" and doc["table"] == "t":
            ids.append(doc["columns"][0]["value"])
    if not end:
        continue
    txns += 1
    print(json.dumps({"ids": ids, "lsn": msg.data_start, "acked": txns <= ack}), flush=True)
    ids = []
    if txns <= ack:
        cur.send_feedback(flush_lsn=msg.data_start, force=True)
        acked = msg.data_start
if acked is not None:
    check = psycopg2.connect(conninfo)
    check.autocommit = True
    q = check.cursor()
    while True:
        q.execute("SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if int(q.fetchone()[0]) >= acked:
            break
        if time.time() > deadline:
            sys.exit("the slot never showed the acknowledgement")
        cur.send_feedback(flush_lsn=acked, force=True)
        select.select([cur], [], [], 0.05)
conn.close()
"#;

/// One transaction as the consumer reported it.
#[derive(Debug, PartialEq)]
struct Txn {
    ids: Vec<i64>,
    lsn: u64,
    acked: bool,
}

fn run_consumer(cluster: &Cluster, slot: &str, options: &Value, version: &str, want: usize, ack: usize) -> Vec<Txn> {
    let out = run_with_timeout(
        Command::new(PYTHON).args(["-c", PSYCOPG2_CONSUMER]).args([
            cluster.conninfo().as_str(),
            slot,
            &options.to_string(),
            version,
            &want.to_string(),
            &ack.to_string(),
        ]),
        Duration::from_secs(120),
        "the psycopg2 consumer",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psycopg2 consumer failed ({}; needs {PYTHON} with python3-psycopg2: scripts/setup.sh installs it): {}\n--- stdout:\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("consumer line {l:?}: {e}"));
            Txn {
                ids: v["ids"].as_array().unwrap().iter().map(|i| i.as_i64().expect("id is a number")).collect(),
                lsn: v["lsn"].as_u64().unwrap(),
                acked: v["acked"].as_bool().unwrap(),
            }
        })
        .collect()
}

/// Transaction `i` (1-based) inserts ids 2i-1 and 2i.
fn insert_transactions(c: &mut Client, range: std::ops::RangeInclusive<i64>) {
    for i in range {
        exec(c, &format!("INSERT INTO t VALUES ({}, 'row'), ({}, 'row')", 2 * i - 1, 2 * i));
    }
}

fn ids_of(range: std::ops::RangeInclusive<i64>) -> Vec<Vec<i64>> {
    range.map(|i| vec![2 * i - 1, 2 * i]).collect()
}

/// psycopg2 consumer: reads 10 transactions and acknowledges 6, disconnects;
/// 5 more are written; restarted, it gets exactly transactions 7-15 (the
/// unacknowledged ones again, then the new ones), in order, once.
#[test]
fn psycopg2_consumer_acknowledges_and_restarts() {
    let (cluster, mut c) = plugin_cluster("dec_consumer_psycopg2");
    create_slot(&mut c, "s_v1", PLUGIN);
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    insert_transactions(&mut c, 1..=10);
    // A non-transactional message between transactions must not disturb the count.
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'p', 'between')");

    let cases = [
        // wal2json's psycopg2 examples: version 2 with xids, LSNs and B/C.
        (
            "s",
            "2",
            serde_json::json!({"format-version": "2", "include-xids": "1", "include-lsn": "1", "include-transaction": "1"}),
        ),
        // No format-version: wal2json's default, one document per transaction.
        ("s_v1", "1", serde_json::json!({"include-xids": "1", "include-timestamp": "1"})),
    ];
    let mut first_runs = Vec::new();
    for (slot, version, options) in &cases {
        let run = run_consumer(&cluster, slot, options, version, 10, 6);
        let got: Vec<Vec<i64>> = run.iter().map(|t| t.ids.clone()).collect();
        assert_eq!(got, ids_of(1..=10), "{slot}: first run");
        let acked_lsn = run[5].lsn;
        let confirmed = query_string(
            &mut c,
            &format!("SELECT (confirmed_flush_lsn - '0/0')::text FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        );
        assert_eq!(confirmed.parse::<u64>().unwrap(), acked_lsn, "{slot}: confirmed_flush_lsn is the acknowledged LSN");
        first_runs.push(run);
    }
    insert_transactions(&mut c, 11..=15);
    for ((slot, version, options), first) in cases.iter().zip(&first_runs) {
        let run = run_consumer(&cluster, slot, options, version, 9, 9);
        let got: Vec<Vec<i64>> = run.iter().map(|t| t.ids.clone()).collect();
        assert_eq!(
            got,
            ids_of(7..=15),
            "{slot}: after the restart, exactly the unacknowledged and the new transactions"
        );
        // The re-sent transactions are the same transactions (same commit LSNs).
        let again: Vec<u64> = run[..4].iter().map(|t| t.lsn).collect();
        let before: Vec<u64> = first[6..].iter().map(|t| t.lsn).collect();
        assert_eq!(again, before, "{slot}: re-sent transactions keep their LSNs");
        assert!(run.iter().all(|t| t.lsn > first[5].lsn), "{slot}: nothing at or before the acknowledged LSN");
    }
}

/// A strict JSON parser reading pg_recvlogical's output from a pipe: UTF-8
/// only, no NaN/Infinity constants, no control characters in strings, no
/// duplicate keys, every document an object. `lines`: each line is one
/// document; `stream`: the output is a sequence of JSON texts (write-in-chunks
/// rows and pretty-printed documents span lines). Prints the document count.
const STRICT_PARSER: &str = r#"
import json, sys
mode = sys.argv[1]
text = sys.stdin.buffer.read().decode("utf-8", "strict")
def constant(c):
    raise ValueError("not JSON: " + c)
def pairs(kv):
    keys = [k for k, _ in kv]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in %r" % keys)
    return dict(kv)
dec = json.JSONDecoder(parse_constant=constant, object_pairs_hook=pairs, strict=True)
n = 0
if mode == "lines":
    lines = text.split("\n")
    if lines[-1] != "":
        raise ValueError("output does not end with a newline")
    for line in lines[:-1]:
        if not isinstance(dec.decode(line), dict):
            raise ValueError("not an object: " + line[:200])
        n += 1
else:
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i == len(text):
            break
        doc, i = dec.raw_decode(text, i)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        n += 1
print(n)
"#;

/// pg_recvlogical (as postgres) to `endpos` with `options`, its stdout piped
/// straight into the strict parser; returns the parser's document count.
fn recvlogical_into_parser(cluster: &Cluster, slot: &str, endpos: &str, options: &[&str], mode: &str) -> usize {
    let mut recv = cluster.recvlogical("", slot);
    recv.arg(format!("--endpos={endpos}")).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for o in options {
        recv.arg("-o").arg(o);
    }
    let mut recv = recv.spawn().expect("spawn pg_recvlogical");
    let pipe = recv.stdout.take().expect("stdout pipe");
    let mut parser = Command::new(PYTHON);
    parser.args(["-c", STRICT_PARSER, mode]).stdin(Stdio::from(pipe));
    let out = run_with_timeout_keep_stdin(&mut parser, Duration::from_secs(120), "the strict JSON parser");
    let recv_out = recv.wait_with_output().expect("pg_recvlogical exits");
    assert!(
        recv_out.status.success(),
        "pg_recvlogical {options:?} failed: {}",
        String::from_utf8_lossy(&recv_out.stderr)
    );
    assert!(
        out.status.success(),
        "{slot} {options:?}: the strict parser refused the output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the parser prints a count")
}

/// `run_with_timeout` replaces stdin with /dev/null; the parser reads the pipe.
fn run_with_timeout_keep_stdin(cmd: &mut Command, timeout: Duration, what: &str) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {PYTHON}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for the parser"),
        Err(_) => {
            // Our own child, by its pid.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{what} did not finish within {timeout:?}")
        }
    }
}

/// Every option set, both format versions: everything pg_recvlogical writes
/// parses strictly, and there are as many documents as the SQL interface
/// returns rows (or, with write-in-chunks and pretty-print, as version 1
/// without them writes documents).
#[test]
fn pg_recvlogical_output_parses_strictly_in_both_versions() {
    let (cluster, mut c) = plugin_cluster("dec_consumer_recvlogical");
    // (slot, pg_recvlogical options, parser mode, option set whose SQL row count is the document count)
    type Set<'a> = (&'a str, &'a [&'a str], &'a str, &'a [(&'a str, &'a str)]);
    let sets: &[Set] = &[
        (
            "r_v2",
            &[
                "format-version=2",
                "include-xids=1",
                "include-lsn=1",
                "include-timestamp=1",
                "include-pk=1",
                "include-type-oids",
            ],
            "lines",
            &[("format-version", "2")],
        ),
        ("r_v1", &[], "lines", &[]),
        // `-o format-version` without a value: wal2json's highest version, 2.
        ("r_v2_bare", &["format-version"], "lines", &[("format-version", "2")]),
        ("r_v1_opts", &["include-xids=1", "include-lsn=1", "include-timestamp=1", "include-not-null=1"], "lines", &[]),
        ("r_v1_chunks", &["write-in-chunks=1", "include-lsn=1", "include-transaction=0"], "stream", &[]),
        ("r_v1_pretty", &["format-version=1", "pretty-print=1", "include-default=1"], "stream", &[]),
    ];
    for (slot, ..) in sets {
        create_slot(&mut c, slot, PLUGIN);
    }
    // The real wal2json, for what only the replication protocol can send.
    create_slot(&mut c, "w_bare", "wal2json");
    exec(
        &mut c,
        r#"CREATE TABLE t (id int PRIMARY KEY, tx text, n numeric, f float8, r real, b bytea, j jsonb, a text[],
                          ts timestamptz DEFAULT '2026-01-01 00:00:00+00', big text);
           ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
           CREATE TABLE nokey (a int);"#,
    );
    exec(
        &mut c,
        r#"INSERT INTO t VALUES (1, E'quote " backslash \\ newline \n tab \t bell \x07 snow ☃', 'NaN', 'Infinity',
               '-Infinity', '\x00ff', '{"k": [1, 2.50]}', '{"a b", NULL, "c\"d"}', DEFAULT, NULL),
           (2, NULL, 1e-30, 'NaN', 1.5, '', 'null', '{}', NULL, NULL);
           INSERT INTO t (id, big) SELECT 3, string_agg(md5(i::text), '') FROM generate_series(1, 300) i;
           UPDATE t SET n = 2 WHERE id = 3;
           DELETE FROM t WHERE id = 2;
           INSERT INTO nokey VALUES (1); UPDATE nokey SET a = 2;
           TRUNCATE nokey;"#,
    );
    exec(
        &mut c,
        "BEGIN; INSERT INTO t (id) VALUES (4); SELECT pg_logical_emit_message(true, 'p', E'in \"txn\"'); COMMIT",
    );
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'bin', '\\xfeff00'::bytea)");
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'txt', E'line\\nbreak')");
    exec(&mut c, "INSERT INTO t (id) VALUES (5)");
    flush_wal(&mut c);
    let endpos = query_string(&mut c, "SELECT pg_current_wal_lsn()::text");

    let v1_documents = try_changes_as_given(&mut c, false, "r_v1", &[]).expect("peek r_v1").len();
    let mut failures = Vec::new();
    for (slot, options, mode, count_with) in sets {
        let want = if *mode == "stream" {
            v1_documents
        } else {
            let o: Vec<(&str, Option<&str>)> = count_with.iter().map(|(k, v)| (*k, Some(*v))).collect();
            try_changes_as_given(&mut c, false, slot, &o).expect("peek").len()
        };
        let got = recvlogical_into_parser(&cluster, slot, &endpos, options, mode);
        if got != want || want == 0 {
            failures.push(format!("{slot} {options:?}: {got} documents parsed, want {want}"));
        }
    }
    // `-o format-version` without a value is version 2 for wal2json too
    // (its WAL2JSON_FORMAT_VERSION), as it is for r_v2_bare above. (Not
    // through the strict parser: wal2json cuts the binary message's content
    // at its NUL byte, which leaves invalid UTF-8.)
    let count = |c: &mut Client, o: &str| -> usize {
        let sql = format!("SELECT count(*)::text FROM pg_logical_slot_peek_changes('w_bare', NULL, NULL{o})");
        query_string(c, &sql).parse().unwrap()
    };
    let (want, v1) = (count(&mut c, ", 'format-version', '2'"), count(&mut c, ""));
    assert_ne!(want, v1, "the workload tells the versions apart");
    let out = run_with_timeout(
        cluster.recvlogical("", "w_bare").args(["-o", "format-version"]).arg(format!("--endpos={endpos}")),
        Duration::from_secs(60),
        "pg_recvlogical on the wal2json slot",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    if !out.status.success() || lines.len() != want || !lines.iter().all(|l| l.starts_with("{\"action\":")) {
        failures.push(format!(
            "wal2json -o format-version: {} lines (version 2 has {want} documents), status {}: {}",
            lines.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
