//! Transactions, logical messages, DDL inside a read, pretty-print.
//! Spec: docs/FORMAT.md (Documents, B/C, M, options include-*).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::json::*;
use logical_ext_pg_test::*;
use serde_json::{Value, json};

const ALL_META: &[(&str, &str)] =
    &[("include-xids", "1"), ("include-timestamp", "1"), ("include-lsn", "1"), ("include-origin", "1")];

fn commit_ts(c: &mut Client, xid: &str) -> String {
    query_string(c, &format!("SELECT pg_xact_commit_timestamp('{xid}'::xid)::text"))
}

/// B/C documents with every include-* option, xid/timestamp/origin/lsn values
/// checked against the server, and no B/C pair for transactions that emit
/// nothing (empty, DDL only, temp table only, aborted, all filtered out).
#[test]
fn begin_commit_metadata_and_empty_transactions() {
    let (_cluster, mut c) = plugin_cluster("dec_begin_commit");
    // DDL only: no B/C.
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE skipme (id int);");
    let xid1 = in_transaction(&mut c, |tx| {
        tx.batch_execute("INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b');").unwrap();
    });
    // An xid but no change.
    exec(&mut c, "SELECT pg_current_xact_id()");
    // Only changes of a table the options filter out.
    let xid_skip = in_transaction(&mut c, |tx| {
        tx.batch_execute("INSERT INTO skipme VALUES (1)").unwrap();
    });
    // Rolled-back subtransaction in the middle.
    let xid2 = in_transaction(&mut c, |tx| {
        tx.batch_execute(
            "INSERT INTO t VALUES (3, 'c'); SAVEPOINT sp; INSERT INTO t VALUES (4, 'd');
             ROLLBACK TO SAVEPOINT sp; INSERT INTO t VALUES (5, 'e');",
        )
        .unwrap();
    });
    // Aborted transaction.
    exec(&mut c, "BEGIN; INSERT INTO t VALUES (6, 'f'); ROLLBACK;");
    // Temporary table only (not decoded).
    exec(&mut c, "BEGIN; CREATE TEMP TABLE tmp (x int); INSERT INTO tmp VALUES (1); COMMIT;");

    // Defaults: no metadata keys at all.
    let plain = peek_changes(&mut c, "s", &[]);
    assert_eq!(actions(&plain), "B I I C B I C B I I C", "\n{}", dump(&plain));
    for ch in &plain {
        match ch.action() {
            "B" | "C" => assert_keys(&ch.doc, &["action"]),
            "I" => assert_keys(&ch.doc, &["action", "schema", "table", "columns"]),
            a => panic!("unexpected {a}"),
        }
    }
    assert_eq!(name_values(&plain[1].doc, "columns"), [("id".into(), "1".into()), ("v".into(), "\"a\"".into())]);
    let skipped: Vec<_> = plain.iter().filter(|c| c.doc["table"] == "skipme").collect();
    assert_eq!(skipped.len(), 1);

    // Every metadata option, with the filtered transaction gone entirely.
    let mut o = opts(ALL_META);
    o.push(("filter-tables", Some("public.skipme")));
    let rows = peek_changes(&mut c, "s", &o);
    assert_eq!(actions(&rows), "B I I C B I I C", "\n{}", dump(&rows));
    let inserted: Vec<String> =
        rows.iter().filter(|r| r.action() == "I").map(|r| value(&r.doc, "columns", "id").to_string()).collect();
    assert_eq!(inserted, ["1", "2", "3", "5"]);

    for (txn, xid) in [(&rows[0..4], &xid1), (&rows[4..8], &xid2)] {
        let (b, c_) = (&txn[0], &txn[3]);
        let ts = commit_ts(&mut c, xid);
        assert_keys(&b.doc, &["action", "xid", "timestamp", "origin", "lsn", "nextlsn"]);
        assert_keys(&c_.doc, &["action", "xid", "timestamp", "origin", "lsn", "nextlsn"]);
        for d in [&b.doc, &c_.doc] {
            assert!(is_integer(&d["xid"], xid), "xid {} != {xid}: {d}", d["xid"]);
            assert_eq!(d["timestamp"], json!(ts), "commit timestamp: {d}");
            assert!(is_integer(&d["origin"], "0"), "local origin is 0: {d}");
        }
        // B and C both carry the commit record's LSN and the one past it.
        assert_eq!(b.doc["lsn"], c_.doc["lsn"]);
        assert_eq!(b.doc["nextlsn"], c_.doc["nextlsn"]);
        let commit = parse_lsn(c_.doc["lsn"].as_str().unwrap());
        let next = parse_lsn(c_.doc["nextlsn"].as_str().unwrap());
        assert!(commit < next, "lsn {commit:X} must precede nextlsn {next:X}");
        assert_eq!(next, parse_lsn(&c_.lsn), "nextlsn is the end of the commit record (the C row's lsn)");
        for ch in &txn[1..3] {
            assert_keys(&ch.doc, &["action", "xid", "timestamp", "origin", "lsn", "schema", "table", "columns"]);
            assert!(is_integer(&ch.doc["xid"], xid));
            assert_eq!(ch.doc["timestamp"], json!(ts));
            assert!(is_integer(&ch.doc["origin"], "0"));
            let lsn = parse_lsn(ch.doc["lsn"].as_str().unwrap());
            assert_eq!(lsn, parse_lsn(&ch.lsn), "change lsn: {}", ch.data);
            assert!(lsn < commit, "change {lsn:X} after its commit {commit:X}");
            assert!(lsn >= parse_lsn(&b.lsn));
        }
    }
    let _ = xid_skip;

    // include-transaction=0: no B/C at all.
    let mut o = opts(&[("include-transaction", "0")]);
    o.push(("filter-tables", Some("public.skipme")));
    let rows = peek_changes(&mut c, "s", &o);
    assert_eq!(actions(&rows), "I I I I");

    // get consumes, peek afterwards sees nothing.
    let got = get_changes(&mut c, "s", &[]);
    assert_eq!(got.len(), plain.len());
    assert!(peek_changes(&mut c, "s", &[]).is_empty());
}

/// Transactional and non-transactional messages, in committed and aborted
/// transactions, text and binary content.
#[test]
fn logical_messages() {
    let (_cluster, mut c) = plugin_cluster("dec_messages");
    exec(&mut c, "CREATE TABLE t (id int)");
    let xid1 = in_transaction(&mut c, |tx| {
        tx.batch_execute(
            "SELECT pg_logical_emit_message(true, 'tx', 'in tx');
             INSERT INTO t VALUES (1);",
        )
        .unwrap();
    });
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'nontx', 'outside a transaction')");
    exec(
        &mut c,
        "BEGIN;
         SELECT pg_logical_emit_message(false, 'nontx-aborted', 'survives the abort');
         SELECT pg_logical_emit_message(true, 'tx-aborted', 'vanishes with the abort');
         INSERT INTO t VALUES (2);
         ROLLBACK;",
    );
    let xid_bin = in_transaction(&mut c, |tx| {
        tx.batch_execute("SELECT pg_logical_emit_message(true, 'bin', '\\xff00fe'::bytea)").unwrap();
    });
    exec(
        &mut c,
        "SELECT pg_logical_emit_message(false, 'esc', E'quote \" backslash \\\\ newline \\n tab \\t bell \\x07 snow \u{2603}')",
    );
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'empty', '')");
    // U+0000 is valid UTF-8: a string with \u0000, not cut at the NUL.
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'nul', '\\x610062'::bytea)");
    flush_wal(&mut c);

    let rows = peek_changes(&mut c, "s", &opts(ALL_META));
    assert_eq!(actions(&rows), "B M I C M M B M C M M M", "\n{}", dump(&rows));
    let m_keys = ["action", "xid", "timestamp", "origin", "lsn", "transactional", "prefix", "content"];
    // Transactional message inside its transaction.
    let m = &rows[1].doc;
    assert_keys(m, &m_keys);
    assert_eq!(m["transactional"], json!(true));
    assert_eq!(m["prefix"], "tx");
    assert_eq!(m["content"], "in tx");
    assert!(is_integer(&m["xid"], &xid1));
    assert_eq!(m["timestamp"], json!(commit_ts(&mut c, &xid1)));
    assert!(is_integer(&m["origin"], "0"));
    assert_eq!(parse_lsn(m["lsn"].as_str().unwrap()), parse_lsn(&rows[1].lsn));

    // Non-transactional: xid, timestamp and origin are null.
    for (i, prefix, content) in [
        (4, "nontx", "outside a transaction"),
        (5, "nontx-aborted", "survives the abort"),
        (9, "esc", "quote \" backslash \\ newline \n tab \t bell \u{7} snow \u{2603}"),
        (10, "empty", ""),
        (11, "nul", "a\u{0}b"),
    ] {
        let m = &rows[i].doc;
        assert_keys(m, &m_keys);
        assert_eq!(m["transactional"], json!(false), "{m}");
        assert_eq!(m["prefix"], prefix);
        assert_eq!(m["content"], content);
        assert_eq!(m["xid"], Value::Null, "{m}");
        assert_eq!(m["timestamp"], Value::Null, "{m}");
        assert_eq!(m["origin"], Value::Null, "{m}");
        assert_eq!(parse_lsn(m["lsn"].as_str().unwrap()), parse_lsn(&rows[i].lsn));
    }
    assert!(
        !rows.iter().any(|r| r.doc["prefix"] == "tx-aborted"),
        "transactional message of an aborted transaction was emitted"
    );

    // Content that is not UTF-8 is hex with content_encoding.
    let m = &rows[7].doc;
    let mut keys_bin = m_keys.to_vec();
    keys_bin.push("content_encoding");
    assert_keys(m, &keys_bin);
    assert_eq!(m["prefix"], "bin");
    assert_eq!(m["content"], "\\xff00fe");
    assert_eq!(m["content_encoding"], "hex");
    assert!(is_integer(&m["xid"], &xid_bin));
    // Text content has no content_encoding.
    assert!(rows[1].doc.get("content_encoding").is_none());

    // Default options: action, transactional, prefix, content only.
    let rows = peek_changes(&mut c, "s", &[]);
    let m = rows.iter().find(|r| r.action() == "M").unwrap();
    assert_keys(&m.doc, &["action", "transactional", "prefix", "content"]);
}

/// ALTER TABLE between inserts that one slot read decodes: each insert is
/// shown with the columns and types it had.
#[test]
fn ddl_between_inserts_in_one_read() {
    let (_cluster, mut c) = plugin_cluster("dec_ddl");
    exec(
        &mut c,
        "CREATE TABLE t (id int PRIMARY KEY, a int);
         INSERT INTO t VALUES (1, 10);",
    );
    exec(&mut c, "ALTER TABLE t ADD COLUMN c text DEFAULT 'dflt'; INSERT INTO t VALUES (2, 20, 'x');");
    exec(&mut c, "INSERT INTO t (id, a) VALUES (3, 30)");
    exec(&mut c, "ALTER TABLE t ALTER COLUMN a TYPE numeric(10,2); INSERT INTO t VALUES (4, 40.5, 'y');");
    exec(&mut c, "ALTER TABLE t DROP COLUMN c; INSERT INTO t VALUES (5, 50);");
    exec(
        &mut c,
        "ALTER TABLE t RENAME COLUMN a TO a2; INSERT INTO t VALUES (6, 60);
         ALTER TABLE t RENAME TO t_renamed; INSERT INTO t_renamed VALUES (7, 70);",
    );
    let rows = get_changes(&mut c, "s", &opts(&[("include-transaction", "0")]));
    // The ALTER ... TYPE rewrite must not leak out as inserts.
    assert_eq!(actions(&rows), "I I I I I I I", "\n{}", dump(&rows));
    let typed = |i: usize| -> Vec<(String, String, String)> {
        entries(&rows[i].doc, "columns")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["type"].as_str().unwrap_or("<none>").to_string(),
                    e["value"].to_string(),
                )
            })
            .collect()
    };
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(typed(0), [s("id", "integer", "1"), s("a", "integer", "10")]);
    assert_eq!(typed(1), [s("id", "integer", "2"), s("a", "integer", "20"), s("c", "text", "\"x\"")]);
    assert_eq!(typed(2), [s("id", "integer", "3"), s("a", "integer", "30"), s("c", "text", "\"dflt\"")]);
    assert_eq!(typed(3), [s("id", "integer", "4"), s("a", "numeric(10,2)", "\"40.50\""), s("c", "text", "\"y\"")]);
    assert_eq!(typed(4), [s("id", "integer", "5"), s("a", "numeric(10,2)", "\"50.00\"")]);
    assert_eq!(typed(5), [s("id", "integer", "6"), s("a2", "numeric(10,2)", "\"60.00\"")]);
    let tables: Vec<&str> = rows.iter().map(|r| r.doc["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["t", "t", "t", "t", "t", "t", "t_renamed"]);
}

/// pretty-print, as wal2json: ignored in format-version 2 (one document per
/// line stays one line); in format-version 1 each transaction's document is
/// indented over many lines and parses to the same value as the compact one.
#[test]
fn pretty_print() {
    let (_cluster, mut c) = plugin_cluster("dec_pretty");
    exec(
        &mut c,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, E'two\\nlines'), (2, 'x');
         UPDATE t SET v = 'y' WHERE id = 2; DELETE FROM t WHERE id = 1;
         SELECT pg_logical_emit_message(true, 'p', 'msg');",
    );
    let mut o = opts(ALL_META);
    o.push(("include-pk", Some("1")));
    let compact = peek_changes(&mut c, "s", &o);
    o.push(("pretty-print", Some("1")));
    let pretty = peek_changes(&mut c, "s", &o);
    assert_eq!(actions(&compact), "B I I U D M C");
    let texts = |v: &[Change]| v.iter().map(|c| c.data.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&pretty), texts(&compact), "format-version 2 ignores pretty-print");

    let raw = |c: &mut Client, pretty: &str| {
        let mut rows = Vec::new();
        let o = opts(&[("format-version", "1"), ("include-xids", "1"), ("include-pk", "1"), ("pretty-print", pretty)]);
        stream_changes(c, false, "s", &o, |_, d| rows.push(d.to_string()));
        rows
    };
    let (flat, indented) = (raw(&mut c, "0"), raw(&mut c, "1"));
    assert_eq!(flat.len(), indented.len());
    for (k, p) in flat.iter().zip(&indented) {
        assert!(!k.contains('\n'), "compact row has a newline: {k}");
        assert!(p.lines().count() > 5, "pretty row is not multi-line: {p}");
        assert!(p.lines().any(|l| l.starts_with("\t\t\t\"")), "pretty row is not indented: {p}");
        let (kv, pv): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(k).unwrap(), serde_json::from_str(p).unwrap());
        assert_eq!(kv, pv, "pretty and compact documents differ");
    }
}

/// format-version 1: one document per transaction, one row without
/// `write-in-chunks`; with it, wal2json's pieces — a header row, one row per
/// change (the second on prefixed by a comma), a footer row — whose
/// concatenation is the same document.
#[test]
fn format_version_1_write_in_chunks() {
    let (_cluster, mut c) = plugin_cluster("dec_v1_chunks");
    exec(
        &mut c,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         BEGIN; INSERT INTO t VALUES (1, 'a'), (2, 'b'); UPDATE t SET v = 'c' WHERE id = 1; COMMIT;",
    );
    let rows = |c: &mut Client, chunks: &str| {
        let mut out = Vec::new();
        let o = opts(&[("format-version", "1"), ("include-xids", "1"), ("write-in-chunks", chunks)]);
        stream_changes(c, false, "s", &o, |_, d| out.push(d.to_string()));
        out
    };
    let whole = rows(&mut c, "0");
    assert_eq!(whole.len(), 1, "{whole:?}");
    let doc: serde_json::Value = serde_json::from_str(&whole[0]).unwrap();
    let kinds: Vec<&str> = doc["change"].as_array().unwrap().iter().map(|ch| ch["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["insert", "insert", "update"]);
    assert!(doc["xid"].is_u64(), "{doc}");

    let chunks = rows(&mut c, "1");
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    assert!(chunks[0].starts_with("{\"xid\":") && chunks[0].ends_with("\"change\":["), "{}", chunks[0]);
    assert!(chunks[1].starts_with("{\"kind\":\"insert\""), "{}", chunks[1]);
    assert!(chunks[2].starts_with(",{\"kind\":\"insert\"") && chunks[3].starts_with(",{\"kind\":\"update\""));
    assert_eq!(chunks[4], "]}");
    let joined: serde_json::Value = serde_json::from_str(&chunks.concat()).unwrap();
    assert_eq!(joined, doc);
}
