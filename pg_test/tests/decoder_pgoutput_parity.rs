//! `publication_names` against pgoutput itself: the six differences of
//! issue 13 (F1-F6), each its minimal script, run with one pgoutput slot and
//! one logical_ext slot and compared through `differential` (pgoutput's
//! binary protocol decoded, both normalised by the one table of documented
//! differences). Each test also pins logical_ext's own normal form.

use logical_ext_pg_test::differential::{Case, Outcome};
use logical_ext_pg_test::*;

fn run(name: &str, setup: &str, workload: &[&str], publications: &str) -> (Cluster, Outcome) {
    let cluster = Cluster::start(name, &[]);
    let case = Case {
        setup: setup.split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        workload: workload.iter().map(|s| s.to_string()).collect(),
        publications: publications.into(),
    };
    let out = case.run(&cluster, "parity");
    (cluster, out)
}

/// The changes of every transaction, as one list of normalised lines.
fn lines(out: &Outcome) -> Vec<String> {
    match &out.logical_ext {
        Ok(txns) => txns.iter().flat_map(|t| t.changes.clone()).collect(),
        Err(e) => panic!("logical_ext failed: {e}\n--- script:\n{}", out.script),
    }
}

fn assert_parity(out: &Outcome) {
    if let Some(m) = out.mismatch() {
        panic!("pgoutput and logical_ext differ:\n{m}\n--- script:\n{}", out.script);
    }
}

/// F1: stored generated columns are never streamed (nor in a FULL identity).
#[test]
fn f1_generated_columns_not_published() {
    let (_c, out) = run(
        "parity_f1",
        "CREATE TABLE t (a int PRIMARY KEY, b int, g int GENERATED ALWAYS AS (b * 2) STORED);
         CREATE TABLE u (a int, b int, g int GENERATED ALWAYS AS (b * 2) STORED);
         ALTER TABLE u REPLICA IDENTITY FULL;
         CREATE PUBLICATION p FOR TABLE t, u",
        &[
            "INSERT INTO t VALUES (1, 1); UPDATE t SET b = 2; DELETE FROM t;",
            "INSERT INTO u VALUES (1, 1); UPDATE u SET b = 2;",
        ],
        "p",
    );
    assert_eq!(
        lines(&out),
        [
            r#"I public.t [a="1",b="1"]"#,
            r#"U public.t [a="1",b="2"] key[a="1"]"#,
            r#"D public.t key[a="1"]"#,
            r#"I public.u [a="1",b="1"]"#,
            r#"U public.u [a="1",b="2"] key[a="1",b="1"]"#,
        ],
        "\n{}",
        out.script
    );
    assert_parity(&out);
}

/// F2: a column list naming every column is no list, so it combines with a
/// publication without one (it was an ERROR that wedged the slot).
#[test]
fn f2_complete_column_list_is_no_list() {
    let (_c, out) = run(
        "parity_f2",
        "CREATE TABLE t (a int PRIMARY KEY, b int);
         CREATE PUBLICATION p1 FOR TABLE t (a, b);
         CREATE PUBLICATION p2 FOR TABLE t",
        &["INSERT INTO t VALUES (1, 1);"],
        "p1,p2",
    );
    assert_eq!(lines(&out), [r#"I public.t [a="1",b="1"]"#], "\n{}", out.script);
    assert_parity(&out);
}

/// F2, the count: PostgreSQL 15 compares the list's length with the number of
/// attributes, dropped and generated ones included, so a list naming every
/// live column of such a table is still a list: with a publication without a
/// list, pgoutput fails, and so do we (the same, documented, error).
#[test]
fn f2_column_count_includes_dropped_and_generated() {
    let cluster = Cluster::start("parity_f2_count", &[]);
    for (db, table) in [
        ("dropped", "CREATE TABLE t (a int PRIMARY KEY, x int, b int);\n ALTER TABLE t DROP COLUMN x"),
        ("generated", "CREATE TABLE t (a int PRIMARY KEY, b int, g int GENERATED ALWAYS AS (b * 2) STORED)"),
    ] {
        let mut setup: Vec<String> = table.split(";\n").map(|s| s.trim().to_string()).collect();
        setup.push("CREATE PUBLICATION p1 FOR TABLE t (a, b)".into());
        setup.push("CREATE PUBLICATION p2 FOR TABLE t".into());
        let case = Case { setup, workload: vec!["INSERT INTO t VALUES (1, 1);".into()], publications: "p1,p2".into() };
        let out = case.run(&cluster, db);
        assert!(out.pgoutput.is_err(), "{db}: pgoutput 15 was expected to refuse the lists\n{}", out.script);
        assert_parity(&out);
    }
}

/// F3: a table published through TABLES IN SCHEMA has no row filter, even
/// when the same publication also lists it with a WHERE.
#[test]
fn f3_schema_publication_ignores_row_filter() {
    let (_c, out) = run(
        "parity_f3",
        "CREATE SCHEMA s;
         CREATE TABLE s.t (a int PRIMARY KEY);
         CREATE PUBLICATION p FOR TABLES IN SCHEMA s, TABLE s.t WHERE (a > 5)",
        &["INSERT INTO s.t VALUES (1), (10);"],
        "p",
    );
    assert_eq!(lines(&out), [r#"I s.t [a="1"]"#, r#"I s.t [a="10"]"#], "\n{}", out.script);
    assert_parity(&out);
}

/// F4: via the partition root with REPLICA IDENTITY FULL, an old row written
/// before ADD COLUMN ... DEFAULT shows the default (the partition's missing
/// value), not NULL.
#[test]
fn f4_partition_root_old_row_reads_missing_default() {
    let (_c, out) = run(
        "parity_f4",
        "CREATE TABLE r (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE r1 PARTITION OF r FOR VALUES FROM (0) TO (100);
         ALTER TABLE r REPLICA IDENTITY FULL;
         ALTER TABLE r1 REPLICA IDENTITY FULL;
         CREATE PUBLICATION p FOR TABLE r WITH (publish_via_partition_root = true);
         INSERT INTO r VALUES (1, 'a'), (2, 'b');
         ALTER TABLE r ADD COLUMN c int DEFAULT 7",
        &["UPDATE r SET v = 'x' WHERE id = 1; DELETE FROM r WHERE id = 2;"],
        "p",
    );
    assert_eq!(
        lines(&out),
        [r#"U public.r [id="1",v="x",c="7"] key[id="1",v="a",c="7"]"#, r#"D public.r key[id="2",v="b",c="7"]"#,],
        "\n{}",
        out.script
    );
    assert_parity(&out);
}

/// F5: a row filter on such an added column sees the default in the old row:
/// the UPDATE stays an UPDATE.
#[test]
fn f5_row_filter_reads_missing_default() {
    let (_c, out) = run(
        "parity_f5",
        "CREATE TABLE t (id int, v text);
         ALTER TABLE t REPLICA IDENTITY FULL;
         INSERT INTO t VALUES (1, 'a');
         ALTER TABLE t ADD COLUMN c int DEFAULT 7;
         CREATE PUBLICATION p FOR TABLE t WHERE (c = 7)",
        &["UPDATE t SET v = 'b';"],
        "p",
    );
    assert_eq!(lines(&out), [r#"U public.t [id="1",v="b",c="7"] key[id="1",v="a",c="7"]"#], "\n{}", out.script);
    assert_parity(&out);
}

/// F6: a row filter on an unchanged TOASTed column (FULL identity) reads the
/// logged old value, never the on-disk TOAST pointer: after TRUNCATE removed
/// the TOAST data the slot still reads (it failed for ever before).
#[test]
fn f6_row_filter_never_detoasts_unchanged_toast() {
    let (_c, out) = run(
        "parity_f6",
        "CREATE TABLE t (id int, big text);
         ALTER TABLE t REPLICA IDENTITY FULL;
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE PUBLICATION p FOR TABLE t WHERE (length(big) > 1000)",
        &["INSERT INTO t VALUES (1, repeat('x', 5000));", "UPDATE t SET id = 2;", "TRUNCATE t;"],
        "p",
    );
    let big = logical_ext_pg_test::differential::quote(&"x".repeat(5000));
    assert_eq!(
        lines(&out),
        [
            format!(r#"I public.t [id="1",big={big}]"#),
            format!(r#"U public.t [id="2",big={big}] key[id="1",big={big}]"#),
            "T cascade=false restart=false [public.t]".to_string(),
        ],
        "\n{}",
        out.script
    );
    assert_parity(&out);
}

/// Found by the differential test: a DELETE without an old row is not sent
/// (pgoutput's rule). PostgreSQL refuses a DELETE on a table without replica
/// identity that publishes deletes, but a partition-moving UPDATE, when
/// updates are not published, deletes the row from its old partition
/// unchecked.
#[test]
fn delete_without_old_row_is_not_sent() {
    let (_c, out) = run(
        "parity_delete_no_old",
        "CREATE TABLE r (id int, v text) PARTITION BY RANGE (id);
         CREATE TABLE r1 PARTITION OF r FOR VALUES FROM (0) TO (10);
         CREATE TABLE r2 PARTITION OF r FOR VALUES FROM (10) TO (20);
         CREATE PUBLICATION p FOR TABLE r WITH (publish = 'insert, delete');
         INSERT INTO r VALUES (1, 'a')",
        &["UPDATE r SET id = 15 WHERE id = 1;"],
        "p",
    );
    assert_eq!(lines(&out), [r#"I public.r2 [id="15",v="a"]"#], "\n{}", out.script);
    assert_parity(&out);
}

/// Tools' tables (issue 15, item 7): a member of an extension, or a table in
/// a schema that is one, is not published through FOR ALL TABLES or TABLES
/// IN SCHEMA ("tool-tables" in the table of differences; pgoutput publishes
/// it), but is when a named publication lists it. `ALTER EXTENSION ... ADD`
/// makes the members here, as pg_cron's and pg_repack's scripts do.
#[test]
fn tool_tables_left_out_of_all_tables_and_schemas() {
    let setup = "CREATE TABLE t (a int PRIMARY KEY);
         CREATE TABLE member (a int PRIMARY KEY);
         ALTER EXTENSION logical_ext ADD TABLE member;
         CREATE TABLE named_member (a int PRIMARY KEY);
         ALTER EXTENSION logical_ext ADD TABLE named_member;
         CREATE SCHEMA tool;
         ALTER EXTENSION logical_ext ADD SCHEMA tool;
         CREATE TABLE tool.work (a int PRIMARY KEY);
         CREATE SCHEMA s1;
         CREATE TABLE s1.u (a int PRIMARY KEY);
         CREATE TABLE s1.m (a int PRIMARY KEY);
         ALTER EXTENSION logical_ext ADD TABLE s1.m;
         CREATE PUBLICATION p FOR ALL TABLES;
         CREATE PUBLICATION q FOR TABLE named_member;
         CREATE PUBLICATION r FOR TABLES IN SCHEMA s1";
    let workload = [
        "INSERT INTO t VALUES (1); INSERT INTO member VALUES (1); INSERT INTO named_member VALUES (1);
         INSERT INTO tool.work VALUES (1); INSERT INTO s1.u VALUES (1); INSERT INTO s1.m VALUES (1);",
        "UPDATE member SET a = 2; DELETE FROM tool.work; UPDATE t SET a = 2;",
        "TRUNCATE t, member, tool.work;",
    ];
    let (_c, all) = run("parity_tools_all", setup, &workload, "p,q");
    assert_eq!(
        lines(&all),
        [
            r#"I public.t [a="1"]"#,
            r#"I public.named_member [a="1"]"#,
            r#"I s1.u [a="1"]"#,
            r#"U public.t [a="2"] key[a="1"]"#,
            "T cascade=false restart=false [public.t]",
        ],
        "\n{}",
        all.script
    );
    assert_parity(&all);
    let (_c, schema) = run("parity_tools_schema", setup, &workload, "r");
    assert_eq!(lines(&schema), [r#"I s1.u [a="1"]"#], "\n{}", schema.script);
    assert_parity(&schema);
}
