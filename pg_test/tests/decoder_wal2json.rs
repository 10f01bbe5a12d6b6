//! wal2json format-version 2 compatibility: for changes both plugins can
//! express the same way, logical_ext's documents minus its documented
//! additions equal wal2json's. Spec: docs/FORMAT.md (introduction, Additions).
//! wal2json (postgresql-15-wal2json) runs side by side as the reference.

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use serde_json::Value;

/// Keys logical_ext adds to wal2json v2 documents.
const ADDITIONS: &[&str] = &["unchanged_toast", "cascade", "restart_identity", "relations", "content_encoding"];

fn without_additions(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ADDITIONS {
            o.shift_remove(*k);
        }
    }
    v
}

/// wal2json writes B/C for transactions whose changes were all filtered out;
/// logical_ext (FORMAT.md) does not: drop such empty pairs from wal2json's.
fn drop_empty_transactions(rows: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for r in rows {
        if r.action() == "C" && out.last().is_some_and(|l| l.action() == "B") {
            out.pop();
            continue;
        }
        out.push(r);
    }
    out
}

/// A cluster with two slots, `le` (logical_ext) and `w2j` (wal2json), that
/// have both seen the same workload.
fn workload(name: &str) -> (Cluster, Client) {
    let cluster = Cluster::start(name, &[]);
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext");
    // Tables exist before the slots: wal2json emits B/C even for DDL-only
    // transactions, logical_ext (by design) does not.
    exec(
        &mut c,
        "CREATE TABLE w (id int PRIMARY KEY, name varchar(20), flag bool, big bigint,
                         f float8, t text, s smallint);
         CREATE TABLE wf (id int, v text);
         ALTER TABLE wf REPLICA IDENTITY FULL;
         CREATE SCHEMA \"Odd Schema\";
         CREATE TABLE \"Odd Schema\".\"Odd \"\"Table\" (\"Col 1\" int PRIMARY KEY);",
    );
    create_slot(&mut c, "le", PLUGIN);
    create_slot(&mut c, "w2j", "wal2json");
    exec(
        &mut c,
        "INSERT INTO w VALUES (1, 'one', true, 9007199254740993, 1.5, E'tab\\there \"q\" \\\\', -1),
                              (2, NULL, false, -1, -0.25, '', NULL);",
    );
    exec(&mut c, "UPDATE w SET name = 'uno' WHERE id = 1;");
    exec(&mut c, "UPDATE w SET id = 3 WHERE id = 2;");
    exec(&mut c, "DELETE FROM w WHERE id = 1;");
    exec(&mut c, "INSERT INTO wf VALUES (1, 'a'); UPDATE wf SET v = 'b'; DELETE FROM wf;");
    exec(&mut c, "INSERT INTO \"Odd Schema\".\"Odd \"\"Table\" VALUES (7);");
    exec(&mut c, "SELECT pg_logical_emit_message(true, 'pfx', 'transactional');");
    exec(&mut c, "SELECT pg_logical_emit_message(false, 'pfx', 'not transactional');");
    exec(&mut c, "TRUNCATE w, wf;");
    (cluster, c)
}

/// Decodes with both plugins per option set; returns the differences.
fn differences(c: &mut Client, option_sets: &[&[(&str, &str)]]) -> Vec<String> {
    let mut failures = Vec::new();
    for o in option_sets {
        let ours = peek_changes(c, "le", &opts(o));
        let theirs = drop_empty_transactions(peek_changes(c, "w2j", &opts(o)));
        if ours.len() != theirs.len() {
            failures.push(format!(
                "{o:?}: {} documents vs wal2json's {}\n ours:   {}\n theirs: {}",
                ours.len(),
                theirs.len(),
                actions(&ours),
                actions(&theirs)
            ));
            continue;
        }
        for (a, b) in ours.iter().zip(&theirs) {
            let mine = without_additions(a.doc.clone());
            if mine != b.doc {
                failures.push(format!("{o:?}:\n ours:     {}\n wal2json: {}", a.data, b.data));
            } else if serde_json::to_string(&mine).unwrap() != serde_json::to_string(&b.doc).unwrap() {
                // Same values, different key order.
                failures.push(format!("{o:?}: key order differs:\n ours:     {}\n wal2json: {}", a.data, b.data));
            }
        }
    }
    failures
}

// Not compared: include-typmod=0 (wal2json v2 ignores it and always prints the
// modifier; decoder_types checks logical_ext's behaviour against the catalog),
// numeric values (FORMAT.md makes them strings, wal2json numbers).
#[test]
fn same_documents_as_wal2json_v2() {
    let (_cluster, mut c) = workload("dec_wal2json_compat");
    let option_sets: &[&[(&str, &str)]] = &[
        &[("format-version", "2")],
        &[
            ("format-version", "2"),
            ("include-xids", "1"),
            ("include-timestamp", "1"),
            ("include-lsn", "1"),
            ("include-origin", "1"),
            ("include-type-oids", "1"),
        ],
        &[("format-version", "2"), ("include-schemas", "0"), ("include-types", "0"), ("include-transaction", "0")],
        &[("format-version", "2"), ("actions", "insert,delete"), ("filter-tables", "public.wf")],
    ];
    let failures = differences(&mut c, option_sets);
    assert!(failures.is_empty(), "{} difference(s) from wal2json v2:\n{}", failures.len(), failures.join("\n"));
}

/// include-pk as wal2json v2 writes it: `pk` on every I/U/D, and with
/// include-type-oids each pk entry carries `typeoid` too.
#[test]
fn include_pk_like_wal2json_v2() {
    let (_cluster, mut c) = workload("dec_wal2json_pk");
    let failures = differences(
        &mut c,
        &[
            &[("format-version", "2"), ("include-pk", "1")],
            &[("format-version", "2"), ("include-pk", "1"), ("include-type-oids", "1")],
        ],
    );
    assert!(failures.is_empty(), "{} difference(s) from wal2json v2:\n{}", failures.len(), failures.join("\n"));
}
