//! INSERT/UPDATE/DELETE under each REPLICA IDENTITY, unchanged TOAST, TRUNCATE.
//! Spec: docs/FORMAT.md (`identity`, `pk`, `unchanged_toast`, `T` documents).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::json::*;
use logical_ext_pg_test::*;
use serde_json::{Value, json};

fn col(name: &str, ty: &str, value: Value) -> Value {
    json!({"name": name, "type": ty, "value": value})
}

/// Identity arrays for: UPDATE of a non-key column, UPDATE of the key, DELETE.
struct IdentityCase {
    table: &'static str,
    setup: &'static str,
    /// Expected `identity` of the three changes (`None`: no identity key).
    identities: [Option<Value>; 3],
    pk: Value,
}

#[test]
fn replica_identity_modes() {
    let (_cluster, mut c) = plugin_cluster("dec_identity");
    let id = |v: i64| col("id", "integer", json!(v));
    let code = |v: &str| col("code", "text", json!(v));
    let v = |s: &str| col("v", "text", json!(s));
    let pk_id = json!([{"name": "id", "type": "integer"}]);
    let cases = [
        IdentityCase {
            table: "rid_default",
            setup: "CREATE TABLE rid_default (id int PRIMARY KEY, code text NOT NULL, v text)",
            identities: [
                Some(json!([id(1)])), // key unchanged: taken from the new row
                Some(json!([id(1)])), // old key
                Some(json!([id(2)])),
            ],
            pk: pk_id.clone(),
        },
        IdentityCase {
            table: "rid_index",
            setup: "CREATE TABLE rid_index (id int PRIMARY KEY, code text NOT NULL, v text);
                    CREATE UNIQUE INDEX rid_index_code ON rid_index (code);
                    ALTER TABLE rid_index REPLICA IDENTITY USING INDEX rid_index_code",
            identities: [Some(json!([code("a")])), Some(json!([code("a")])), Some(json!([code("b")]))],
            pk: pk_id.clone(),
        },
        IdentityCase {
            table: "rid_full",
            setup: "CREATE TABLE rid_full (id int PRIMARY KEY, code text NOT NULL, v text);
                    ALTER TABLE rid_full REPLICA IDENTITY FULL",
            identities: [
                Some(json!([id(1), code("a"), v("x")])),
                Some(json!([id(1), code("a"), v("y")])),
                Some(json!([id(2), code("b"), v("y")])),
            ],
            pk: pk_id.clone(),
        },
        IdentityCase {
            table: "rid_full_nopk",
            setup: "CREATE TABLE rid_full_nopk (id int, code text, v text);
                    ALTER TABLE rid_full_nopk REPLICA IDENTITY FULL",
            identities: [
                Some(json!([id(1), code("a"), v("x")])),
                Some(json!([id(1), code("a"), v("y")])),
                Some(json!([id(2), code("b"), v("y")])),
            ],
            pk: json!([]),
        },
        IdentityCase {
            table: "rid_nothing",
            setup: "CREATE TABLE rid_nothing (id int PRIMARY KEY, code text NOT NULL, v text);
                    ALTER TABLE rid_nothing REPLICA IDENTITY NOTHING",
            identities: [None, None, None],
            pk: pk_id.clone(),
        },
        IdentityCase {
            table: "rid_nopk",
            setup: "CREATE TABLE rid_nopk (id int, code text, v text)",
            identities: [None, None, None],
            pk: json!([]),
        },
    ];
    for case in &cases {
        exec(&mut c, case.setup);
    }
    for case in &cases {
        let t = case.table;
        exec(
            &mut c,
            &format!(
                "INSERT INTO {t} VALUES (1, 'a', 'x');
                 UPDATE {t} SET v = 'y' WHERE id = 1;
                 UPDATE {t} SET id = 2, code = 'b' WHERE id = 1;
                 DELETE FROM {t} WHERE id = 2;"
            ),
        );
    }
    let rows = get_changes(&mut c, "s", &opts(&[("include-pk", "1"), ("include-transaction", "0")]));
    let mut failures = Vec::new();
    for case in &cases {
        let mine: Vec<&Change> = rows.iter().filter(|r| r.doc["table"] == case.table).collect();
        let acts: Vec<&str> = mine.iter().map(|r| r.action()).collect();
        // Without a usable replica identity, UPDATE and DELETE are not sent
        // (with a WARNING), as wal2json does.
        if case.identities.iter().all(Option::is_none) {
            if acts != ["I"] {
                failures.push(format!("{}: actions {acts:?}", case.table));
            }
            continue;
        }
        if acts != ["I", "U", "U", "D"] {
            failures.push(format!("{}: actions {acts:?}", case.table));
            continue;
        }
        // New rows.
        let expect_cols =
            [json!([id(1), code("a"), v("x")]), json!([id(1), code("a"), v("y")]), json!([id(2), code("b"), v("y")])];
        for (r, want) in mine[..3].iter().zip(&expect_cols) {
            if r.doc["columns"] != *want {
                failures.push(format!("{} {}: columns {} != {want}", case.table, r.action(), r.doc["columns"]));
            }
        }
        if mine[3].doc.get("columns").is_some() {
            failures.push(format!("{}: DELETE has columns: {}", case.table, mine[3].data));
        }
        if mine[0].doc.get("identity").is_some() {
            failures.push(format!("{}: INSERT has identity: {}", case.table, mine[0].data));
        }
        for (r, want) in mine[1..].iter().zip(&case.identities) {
            let got = r.doc.get("identity");
            if got != want.as_ref() {
                failures.push(format!(
                    "{} {}: identity {} != expected {}",
                    case.table,
                    r.action(),
                    got.map_or("<absent>".into(), Value::to_string),
                    want.as_ref().map_or("<absent>".into(), Value::to_string)
                ));
            }
        }
        for r in &mine[1..] {
            if r.doc.get("pk") != Some(&case.pk) {
                failures.push(format!(
                    "{} {}: pk {:?} != {}",
                    case.table,
                    r.action(),
                    r.doc.get("pk").map(Value::to_string),
                    case.pk
                ));
            }
            // Key order: ... table, columns, identity, [unchanged_toast], pk.
            let k = keys(&r.doc);
            let want: Vec<&str> = match (r.action(), r.doc.get("identity").is_some()) {
                ("U", true) => vec!["action", "schema", "table", "columns", "identity", "pk"],
                ("U", false) => vec!["action", "schema", "table", "columns", "pk"],
                ("D", true) => vec!["action", "schema", "table", "identity", "pk"],
                _ => vec!["action", "schema", "table", "pk"],
            };
            let k_no_toast: Vec<&str> = k.into_iter().filter(|k| *k != "unchanged_toast").collect();
            if k_no_toast != want {
                failures.push(format!("{}: key order {:?}", case.table, keys(&r.doc)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}\n--- stream:\n{}",
        failures.len(),
        failures.join("\n"),
        dump(&rows)
    );
}

/// An UPDATE that leaves a TOASTed column alone lists it in `unchanged_toast`
/// (never as null); with REPLICA IDENTITY FULL the old value is shown instead.
#[test]
fn unchanged_toast() {
    let (_cluster, mut c) = plugin_cluster("dec_toast");
    exec(
        &mut c,
        "CREATE TABLE tt (id int PRIMARY KEY, big text, small int, big2 text);
         ALTER TABLE tt ALTER COLUMN big SET STORAGE EXTERNAL;
         ALTER TABLE tt ALTER COLUMN big2 SET STORAGE EXTERNAL;
         CREATE TABLE tf (id int PRIMARY KEY, big text, small int);
         ALTER TABLE tf ALTER COLUMN big SET STORAGE EXTERNAL;
         ALTER TABLE tf REPLICA IDENTITY FULL;",
    );
    exec(
        &mut c,
        "INSERT INTO tt SELECT 1, string_agg(md5(i::text), ''), 1, repeat('z', 5000)
           FROM generate_series(1, 400) i;
         INSERT INTO tf SELECT 1, string_agg(md5(i::text), ''), 1 FROM generate_series(1, 400) i;",
    );
    let big: String = query_string(&mut c, "SELECT big FROM tt WHERE id = 1");
    assert_eq!(big.len(), 12800);
    let big2 = "z".repeat(5000);
    // Make sure the values really are out of line.
    let toasted: i32 = c.query_one("SELECT pg_column_size(big) FROM tt WHERE id = 1", &[]).unwrap().get(0);
    assert!(toasted >= 12800, "value not stored uncompressed/external");
    exec(
        &mut c,
        "UPDATE tt SET small = 2 WHERE id = 1;
         UPDATE tt SET big2 = 'short' WHERE id = 1;
         UPDATE tt SET big = 'new' WHERE id = 1;
         UPDATE tf SET small = 2 WHERE id = 1;
         DELETE FROM tf WHERE id = 1;",
    );
    let rows = get_changes(&mut c, "s", &opts(&[("include-transaction", "0")]));
    assert_eq!(actions(&rows), "I I U U U U D", "\n{}", dump(&rows));
    // Inserts carry the full values.
    assert_eq!(value(&rows[0].doc, "columns", "big"), &json!(big));
    assert_eq!(value(&rows[0].doc, "columns", "big2"), &json!(big2));
    assert_eq!(value(&rows[1].doc, "columns", "big"), &json!(big));

    let no_null_for = |doc: &Value, name: &str| {
        if let Some(e) = entry(doc, "columns", name) {
            panic!("unchanged TOAST column {name} appears in columns as {e}: {doc}");
        }
    };
    // UPDATE small: both big columns unchanged.
    let u1 = &rows[2].doc;
    no_null_for(u1, "big");
    no_null_for(u1, "big2");
    assert_eq!(names(u1, "columns"), ["id", "small"]);
    assert_eq!(u1["unchanged_toast"], json!(["big", "big2"]), "{u1}");
    assert_keys(u1, &["action", "schema", "table", "columns", "identity", "unchanged_toast"]);
    // UPDATE big2 to a short value: big unchanged, big2 new.
    let u2 = &rows[3].doc;
    no_null_for(u2, "big");
    assert_eq!(value(u2, "columns", "big2"), &json!("short"));
    assert_eq!(u2["unchanged_toast"], json!(["big"]), "{u2}");
    // UPDATE big: nothing unchanged-TOASTed any more (big2 is inline now).
    let u3 = &rows[4].doc;
    assert_eq!(value(u3, "columns", "big"), &json!("new"));
    assert_eq!(value(u3, "columns", "big2"), &json!("short"));
    let ut = u3.get("unchanged_toast");
    assert!(ut.is_none() || ut == Some(&json!([])), "unexpected unchanged_toast {ut:?}");
    // REPLICA IDENTITY FULL: the old value is known and shown.
    let uf = &rows[5].doc;
    assert_eq!(value(uf, "columns", "big"), &json!(big), "FULL update: {uf}");
    assert_eq!(value(uf, "identity", "big"), &json!(big));
    assert_eq!(value(uf, "columns", "small"), &json!(2));
    let ut = uf.get("unchanged_toast");
    assert!(ut.is_none() || ut == Some(&json!([])), "FULL identity shows the value instead of listing it: {ut:?}");
    let df = &rows[6].doc;
    assert_eq!(value(df, "identity", "big"), &json!(big));
    // Nothing anywhere is shown as null.
    for r in &rows {
        for field in ["columns", "identity"] {
            if let Some(arr) = r.doc.get(field).and_then(Value::as_array) {
                for e in arr {
                    assert_ne!(e["value"], Value::Null, "null value in {}", r.data);
                }
            }
        }
    }
}

/// TRUNCATE of several tables in one statement, with CASCADE and RESTART
/// IDENTITY: one T per relation, flags and relation count on each.
#[test]
fn truncate_flags() {
    let (_cluster, mut c) = plugin_cluster("dec_truncate");
    exec(
        &mut c,
        "CREATE TABLE tr_a (id int PRIMARY KEY);
         CREATE TABLE tr_b (id int PRIMARY KEY, a int REFERENCES tr_a);
         CREATE TABLE tr_c (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
         CREATE TABLE tr_d (id int);
         INSERT INTO tr_a VALUES (1); INSERT INTO tr_b VALUES (1, 1);
         INSERT INTO tr_c (v) VALUES ('x'); INSERT INTO tr_d VALUES (1);",
    );
    let _ = get_changes(&mut c, "s", &[]);
    let xid = in_transaction(&mut c, |tx| {
        tx.batch_execute("TRUNCATE tr_a, tr_c RESTART IDENTITY CASCADE").unwrap();
    });
    exec(&mut c, "TRUNCATE tr_d");
    exec(&mut c, "TRUNCATE tr_d CONTINUE IDENTITY RESTRICT");
    let rows = get_changes(&mut c, "s", &opts(&[("include-xids", "1"), ("include-lsn", "1")]));
    assert_eq!(actions(&rows), "B T T T C B T C B T C", "\n{}", dump(&rows));
    let mut tables: Vec<String> = rows[1..4].iter().map(|r| r.doc["table"].as_str().unwrap().to_string()).collect();
    tables.sort();
    assert_eq!(tables, ["tr_a", "tr_b", "tr_c"]);
    for r in &rows[1..4] {
        assert_keys(&r.doc, &["action", "xid", "lsn", "schema", "table", "cascade", "restart_identity", "relations"]);
        assert!(is_integer(&r.doc["xid"], &xid));
        assert_eq!(r.doc["schema"], "public");
        assert_eq!(r.doc["cascade"], json!(true), "{}", r.data);
        assert_eq!(r.doc["restart_identity"], json!(true), "{}", r.data);
        assert!(is_integer(&r.doc["relations"], "3"), "{}", r.data);
    }
    for r in [&rows[6], &rows[9]] {
        assert_eq!(r.doc["table"], "tr_d");
        assert_eq!(r.doc["cascade"], json!(false), "{}", r.data);
        assert_eq!(r.doc["restart_identity"], json!(false), "{}", r.data);
        assert!(is_integer(&r.doc["relations"], "1"), "{}", r.data);
    }
}

/// Table filters and `actions` apply to each truncated relation.
#[test]
fn truncate_filtered() {
    let (_cluster, mut c) = plugin_cluster("dec_truncate_filtered");
    exec(
        &mut c,
        "CREATE TABLE tr_a (id int PRIMARY KEY);
         CREATE TABLE tr_b (id int PRIMARY KEY, a int REFERENCES tr_a);
         CREATE TABLE tr_c (id int);",
    );
    exec(&mut c, "TRUNCATE tr_a, tr_c CASCADE");
    exec(&mut c, "TRUNCATE tr_c");
    let cases = [
        (vec![("add-tables", "public.tr_b")], "B T C", vec!["tr_b"]),
        (vec![("filter-tables", "public.tr_c")], "B T T C", vec!["tr_a", "tr_b"]),
        (vec![("actions", "insert,update,delete")], "", vec![]),
        (vec![("actions", "truncate")], "B T T T C B T C", vec!["tr_a", "tr_b", "tr_c", "tr_c"]),
    ];
    for (o, want_actions, want_tables) in cases {
        let rows = peek_changes(&mut c, "s", &opts(&o));
        assert_eq!(actions(&rows), want_actions, "{o:?}\n{}", dump(&rows));
        let mut tables: Vec<&str> =
            rows.iter().filter(|r| r.action() == "T").map(|r| r.doc["table"].as_str().unwrap()).collect();
        tables.sort();
        assert_eq!(tables, want_tables, "{o:?}");
    }
}
