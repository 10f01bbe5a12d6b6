//! `publication_names`: the stream must contain what pgoutput would publish.
//! Spec: docs/FORMAT.md (`publication_names`).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use serde_json::Value;

const SETUP: &str = r#"
    CREATE SCHEMA s2;
    CREATE TABLE a (id int PRIMARY KEY, v text);
    CREATE TABLE b (id int PRIMARY KEY, v text);
    CREATE TABLE s2.c (id int PRIMARY KEY, v text);
    CREATE TABLE r (id int PRIMARY KEY, v int);
    ALTER TABLE r REPLICA IDENTITY FULL;
    CREATE TABLE cl (id int PRIMARY KEY, x text, y text, z text);
    CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region))
        PARTITION BY LIST (region);
    -- A partition whose column order differs from its parent's.
    CREATE TABLE m_eu (v text, region text NOT NULL, id int NOT NULL);
    ALTER TABLE m ATTACH PARTITION m_eu FOR VALUES IN ('eu');
    CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');

    CREATE PUBLICATION p_a FOR TABLE a;
    CREATE PUBLICATION p_all FOR ALL TABLES;
    CREATE PUBLICATION p_schema FOR TABLES IN SCHEMA s2;
    CREATE PUBLICATION p_ins FOR TABLE b WITH (publish = 'insert');
    CREATE PUBLICATION p_rowfilter FOR TABLE r WHERE (v > 10);
    CREATE PUBLICATION p_cols FOR TABLE cl (id, x);
    CREATE PUBLICATION p_root FOR TABLE m WITH (publish_via_partition_root = true);
    CREATE PUBLICATION p_leaf FOR TABLE m;
    CREATE PUBLICATION "Mixed Case" FOR TABLE b;
"#;

/// Each statement group is its own transaction.
const WORKLOAD: &[&str] = &[
    "INSERT INTO a VALUES (1, 'a'); UPDATE a SET v = 'a2'; DELETE FROM a;",
    "INSERT INTO b VALUES (1, 'b'); UPDATE b SET v = 'b2'; DELETE FROM b;",
    "INSERT INTO s2.c VALUES (1, 'c');",
    // Row filter v > 10: in/out moves become I/D.
    "INSERT INTO r VALUES (1, 5), (2, 20);
     UPDATE r SET v = 30 WHERE id = 2;
     UPDATE r SET v = 5 WHERE id = 2;
     UPDATE r SET v = 15 WHERE id = 1;
     DELETE FROM r WHERE id = 1;
     DELETE FROM r WHERE id = 2;",
    "INSERT INTO cl VALUES (1, 'x', 'y', 'z');
     UPDATE cl SET y = 'y2';
     UPDATE cl SET x = 'x2';
     DELETE FROM cl;",
    "INSERT INTO m VALUES (1, 'eu', 'v1'), (2, 'us', 'v2');
     UPDATE m SET v = 'v3' WHERE id = 1;",
    "TRUNCATE a;",
];

fn pairs(d: &Value, field: &str, sort: bool) -> Option<String> {
    let arr = d.get(field)?.as_array()?;
    let mut items: Vec<String> =
        arr.iter().map(|e| format!("{}={}", e["name"].as_str().unwrap_or("?"), e["value"])).collect();
    if sort {
        items.sort();
    }
    Some(items.join(","))
}

/// `I public.a [id=1,v="a"]`, `U public.r [..] old[..]`, `D public.a old[id=1]`,
/// `T public.a` (identity entries sorted by name: their order is unspecified).
fn summary(d: &Value) -> String {
    let mut s = format!(
        "{} {}.{}",
        d["action"].as_str().unwrap_or("?"),
        d["schema"].as_str().unwrap_or("?"),
        d["table"].as_str().unwrap_or("?")
    );
    if let Some(c) = pairs(d, "columns", false) {
        s += &format!(" [{c}]");
    }
    if let Some(c) = pairs(d, "identity", true) {
        s += &format!(" old[{c}]");
    }
    s
}

fn summaries(rows: &[Change]) -> Vec<String> {
    rows.iter().filter(|r| !matches!(r.action(), "B" | "C")).map(|r| summary(&r.doc)).collect()
}

/// No B/C pair without a change between them.
fn no_empty_transactions(rows: &[Change]) -> bool {
    !actions(rows).contains("B C")
}

#[test]
fn publications_like_pgoutput() {
    let (_cluster, mut c) = plugin_cluster("dec_publications");
    exec(&mut c, SETUP);
    for stmt in WORKLOAD {
        exec(&mut c, stmt);
    }
    let a = [r#"I public.a [id=1,v="a"]"#, r#"U public.a [id=1,v="a2"] old[id=1]"#, r#"D public.a old[id=1]"#];
    let b = [r#"I public.b [id=1,v="b"]"#, r#"U public.b [id=1,v="b2"] old[id=1]"#, r#"D public.b old[id=1]"#];
    let t_a = "T public.a";
    let c_ins = r#"I s2.c [id=1,v="c"]"#;
    let rowfilter = [
        r#"I public.r [id=2,v=20]"#,
        r#"U public.r [id=2,v=30] old[id=2,v=20]"#,
        r#"D public.r old[id=2,v=30]"#, // moved out of the filter
        r#"I public.r [id=1,v=15]"#,    // moved into the filter
        r#"D public.r old[id=1,v=15]"#,
    ];
    let cols = [
        r#"I public.cl [id=1,x="x"]"#,
        r#"U public.cl [id=1,x="x"] old[id=1]"#,
        r#"U public.cl [id=1,x="x2"] old[id=1]"#,
        r#"D public.cl old[id=1]"#,
    ];
    let root = [
        r#"I public.m [id=1,region="eu",v="v1"]"#,
        r#"I public.m [id=2,region="us",v="v2"]"#,
        r#"U public.m [id=1,region="eu",v="v3"] old[id=1,region="eu"]"#,
    ];
    let leaf = [
        r#"I public.m_eu [v="v1",region="eu",id=1]"#,
        r#"I public.m_us [id=2,region="us",v="v2"]"#,
        r#"U public.m_eu [v="v3",region="eu",id=1] old[id=1,region="eu"]"#,
    ];
    let cat =
        |parts: &[&[&str]]| -> Vec<String> { parts.iter().flat_map(|p| p.iter().map(|s| s.to_string())).collect() };
    let everything = summaries(&peek_changes(&mut c, "s", &[]));
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("p_a", cat(&[&a, &[t_a]])),
        ("p_all", everything.clone()),
        ("p_schema", cat(&[&[c_ins]])),
        ("p_ins", cat(&[&b[..1]])),
        ("p_ins,p_a", cat(&[&a, &b[..1], &[t_a]])),
        ("\"Mixed Case\"", cat(&[&b])),
        ("p_rowfilter", cat(&[&rowfilter])),
        ("p_cols", cat(&[&cols])),
        ("p_root", cat(&[&root])),
        ("p_leaf", cat(&[&leaf])),
        // Identifier syntax: unquoted names are case-folded, as in pgoutput.
        ("P_A", cat(&[&a, &[t_a]])),
    ];
    // Without a publication, every change is there (partitions as themselves).
    let mut want_all = cat(&[&a, &b, &[c_ins]]);
    want_all.extend(
        [
            r#"I public.r [id=1,v=5]"#,
            r#"I public.r [id=2,v=20]"#,
            r#"U public.r [id=2,v=30] old[id=2,v=20]"#,
            r#"U public.r [id=2,v=5] old[id=2,v=30]"#,
            r#"U public.r [id=1,v=15] old[id=1,v=5]"#,
            r#"D public.r old[id=1,v=15]"#,
            r#"D public.r old[id=2,v=5]"#,
            r#"I public.cl [id=1,x="x",y="y",z="z"]"#,
            r#"U public.cl [id=1,x="x",y="y2",z="z"] old[id=1]"#,
            r#"U public.cl [id=1,x="x2",y="y2",z="z"] old[id=1]"#,
            r#"D public.cl old[id=1]"#,
        ]
        .map(String::from),
    );
    want_all.extend(leaf.map(String::from));
    want_all.push(t_a.to_string());
    assert_eq!(everything, want_all, "stream without publication_names");

    let mut failures = Vec::new();
    for (pubs, want) in &cases {
        match try_changes(&mut c, false, "s", None, &opts(&[("publication_names", pubs)])) {
            Ok(rows) => {
                let got = summaries(&rows);
                if got != *want {
                    failures.push(format!("publication_names={pubs}:\n  got  {got:#?}\n  want {want:#?}"));
                }
                if !no_empty_transactions(&rows) {
                    failures.push(format!("publication_names={pubs}: empty B/C in {}", actions(&rows)));
                }
            }
            Err(e) => failures.push(format!("publication_names={pubs}: {}", describe_error(&e))),
        }
    }
    assert!(failures.is_empty(), "{} of {} case(s) failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn missing_publication_is_an_error() {
    let (_cluster, mut c) = plugin_cluster("dec_publication_missing");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t;");
    exec(&mut c, "INSERT INTO t VALUES (1)");
    for pubs in ["nope", "p,nope"] {
        let e = try_changes(&mut c, false, "s", None, &opts(&[("publication_names", pubs)]))
            .expect_err(&format!("publication_names={pubs} must fail"));
        let msg = describe_error(&e);
        assert!(
            msg.contains("nope") && msg.contains("publication"),
            "message should name the missing publication: {msg}"
        );
    }
    // The existing one works.
    let rows = peek_changes(&mut c, "s", &opts(&[("publication_names", "p")]));
    assert_eq!(actions(&rows), "B I C");
}

/// Publication changes between transactions of one read take effect from the
/// next transaction on, as with pgoutput (ADD/DROP TABLE, SET publish, row
/// filter changes).
#[test]
fn publication_changes_mid_stream() {
    let (_cluster, mut c) = plugin_cluster("dec_publication_alter");
    exec(
        &mut c,
        "CREATE TABLE a (id int PRIMARY KEY, v int);
         CREATE TABLE b (id int PRIMARY KEY, v int);
         CREATE PUBLICATION p FOR TABLE a;",
    );
    for stmt in [
        "INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1);",
        "ALTER PUBLICATION p ADD TABLE b",
        "INSERT INTO b VALUES (2, 2);",
        "ALTER PUBLICATION p DROP TABLE a",
        "INSERT INTO a VALUES (2, 2); UPDATE b SET v = 20 WHERE id = 2;",
        "ALTER PUBLICATION p SET (publish = 'insert')",
        "INSERT INTO b VALUES (3, 3); DELETE FROM b WHERE id = 1;",
        "ALTER PUBLICATION p SET TABLE b WHERE (v > 10)",
        "INSERT INTO b VALUES (4, 4), (5, 50);",
    ] {
        exec(&mut c, stmt);
    }
    let rows = peek_changes(&mut c, "s", &opts(&[("publication_names", "p")]));
    assert_eq!(
        summaries(&rows),
        [
            "I public.a [id=1,v=1]",
            "I public.b [id=2,v=2]",
            "U public.b [id=2,v=20] old[id=2]",
            "I public.b [id=3,v=3]",
            "I public.b [id=5,v=50]",
        ],
        "\n{}",
        dump(&rows)
    );
    assert!(no_empty_transactions(&rows), "{}", actions(&rows));
}

/// A publication that does not exist at a point of the stream (created after
/// the slot, or dropped and created again) is skipped there with a WARNING:
/// PostgreSQL 15's pgoutput raises an error at that change, which no later
/// read can get past (the slot is wedged; PostgreSQL 18's pgoutput skips).
#[test]
fn publication_missing_at_a_point_of_the_stream_is_skipped() {
    let (_cluster, mut c) = plugin_cluster("dec_publication_gap");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION q FOR TABLE t WITH (publish = 'delete')");
    for stmt in [
        "INSERT INTO t VALUES (1)", // p does not exist yet
        "CREATE PUBLICATION p FOR TABLE t",
        "INSERT INTO t VALUES (2)",
        "DROP PUBLICATION p",
        "INSERT INTO t VALUES (3); DELETE FROM t WHERE id = 1;", // only q's DELETE
        "CREATE PUBLICATION p FOR TABLE t WITH (publish = 'truncate')",
        "INSERT INTO t VALUES (4)",
    ] {
        exec(&mut c, stmt);
    }
    let rows = peek_changes(&mut c, "s", &opts(&[("publication_names", "p,q")]));
    assert_eq!(summaries(&rows), ["I public.t [id=2]", "D public.t old[id=1]"], "\n{}", dump(&rows));
    assert!(no_empty_transactions(&rows), "{}", actions(&rows));
}
