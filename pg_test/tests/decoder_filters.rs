//! Table, action, message-prefix and origin filters.
//! Spec: docs/FORMAT.md (Options: add-tables, filter-tables, actions,
//! add-msg-prefixes, filter-msg-prefixes, filter-origins, origin; table
//! patterns; prefix and origin lists).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use std::collections::BTreeMap;

/// Checks every kept transaction is exactly `B <one change> C` (nothing
/// filtered leaves an empty B/C pair) and returns the changes' documents.
fn single_change_transactions(rows: &[Change], what: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let ok = i + 2 < rows.len()
            && rows[i].action() == "B"
            && rows[i + 2].action() == "C"
            && !matches!(rows[i + 1].action(), "B" | "C");
        assert!(ok, "{what}: expected B x C transactions, got {}\n{}", actions(rows), dump(rows));
        out.push(rows[i + 1].doc.clone());
        i += 3;
    }
    out
}

#[test]
fn table_patterns() {
    let (_cluster, mut c) = plugin_cluster("dec_table_filters");
    exec(
        &mut c,
        r#"CREATE SCHEMA other; CREATE SCHEMA "My Schema";
           CREATE TABLE public.t1 (id int); CREATE TABLE public."T1" (id int);
           CREATE TABLE public.audit_a (id int); CREATE TABLE public.audit_b (id int);
           CREATE TABLE public."x.y" (id int); CREATE TABLE public."Quote""d" (id int);
           CREATE TABLE public."star*" (id int); CREATE TABLE public.starfish (id int);
           CREATE TABLE other.t1 (id int); CREATE TABLE "My Schema"."a,b.c" (id int);"#,
    );
    let tables = [
        r#"public.t1"#,
        r#"public."T1""#,
        r#"public.audit_a"#,
        r#"public.audit_b"#,
        r#"public."x.y""#,
        r#"public."Quote""d""#,
        r#"public."star*""#,
        r#"public.starfish"#,
        r#"other.t1"#,
        r#""My Schema"."a,b.c""#,
    ];
    // One transaction per table.
    for t in tables {
        exec(&mut c, &format!("INSERT INTO {t} VALUES (1)"));
    }
    let all: Vec<&str> = vec![
        "My Schema.a,b.c",
        "other.t1",
        "public.Quote\"d",
        "public.T1",
        "public.audit_a",
        "public.audit_b",
        "public.star*",
        "public.starfish",
        "public.t1",
        "public.x.y",
    ];
    let except = |gone: &[&str]| -> Vec<&str> { all.iter().copied().filter(|t| !gone.contains(t)).collect() };
    // (add-tables, filter-tables, tables expected, sorted)
    let cases: Vec<(Option<&str>, Option<&str>, Vec<&str>)> = vec![
        (None, None, all.clone()),
        (Some("public.t1"), None, vec!["public.t1"]),
        (Some("*.t1"), None, vec!["other.t1", "public.t1"]),
        // wal2json's grammar: `*` is "any" only as a whole part; elsewhere
        // it is a literal character, as are double quotes.
        (Some("p*.t1"), None, vec![]),
        (Some("*.t*1"), None, vec![]),
        (Some("*.*"), None, all.clone()),
        (Some("public.audit_*"), None, vec![]),
        (Some("public.audit_a,public.audit_b"), None, vec!["public.audit_a", "public.audit_b"]),
        (Some(r"My\ Schema.a\,b\.c"), None, vec!["My Schema.a,b.c"]),
        (Some(r"My\ Schema.*"), None, vec!["My Schema.a,b.c"]),
        (Some(r"public.x\.y,other.*"), None, vec!["other.t1", "public.x.y"]),
        (Some(r#"public.Quote"d"#), None, vec!["public.Quote\"d"]),
        // No case folding: T1 and t1 are different tables.
        (Some("public.T1"), None, vec!["public.T1"]),
        (Some(r#"public."T1""#), None, vec![]),
        // Backslash escapes.
        (Some(r"public.star\*"), None, vec!["public.star*"]),
        (Some("public.star*"), None, vec!["public.star*"]),
        (Some(r"public.x\.y"), None, vec!["public.x.y"]),
        (Some("nosuch.*"), None, vec![]),
        (None, Some("public.*"), vec!["My Schema.a,b.c", "other.t1"]),
        (None, Some("*.t1"), except(&["other.t1", "public.t1"])),
        (None, Some(r#"My\ Schema.a\,b\.c,public.Quote"d"#), except(&["My Schema.a,b.c", "public.Quote\"d"])),
        // filter-tables wins over add-tables.
        (
            Some("public.*"),
            Some("public.audit_a"),
            vec![
                "public.Quote\"d",
                "public.T1",
                "public.audit_b",
                "public.star*",
                "public.starfish",
                "public.t1",
                "public.x.y",
            ],
        ),
        (Some("public.t1"), Some("public.t1"), vec![]),
    ];
    let mut failures = Vec::new();
    for (add, filter, want) in &cases {
        let mut o = Vec::new();
        if let Some(a) = add {
            o.push(("add-tables", Some(*a)));
        }
        if let Some(f) = filter {
            o.push(("filter-tables", Some(*f)));
        }
        let rows = match try_changes(&mut c, false, "s", None, &o) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{o:?}: {}", describe_error(&e)));
                continue;
            }
        };
        let docs = single_change_transactions(&rows, &format!("{o:?}"));
        let mut got: Vec<String> = docs
            .iter()
            .map(|d| format!("{}.{}", d["schema"].as_str().unwrap_or("?"), d["table"].as_str().unwrap_or("?")))
            .collect();
        got.sort();
        if got != *want {
            failures.push(format!("{o:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} case(s) failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn actions_filter() {
    let (_cluster, mut c) = plugin_cluster("dec_actions");
    exec(&mut c, "CREATE TABLE a (id int PRIMARY KEY, v int)");
    exec(&mut c, "INSERT INTO a VALUES (1, 1)");
    exec(&mut c, "UPDATE a SET v = 2");
    exec(&mut c, "DELETE FROM a");
    exec(&mut c, "TRUNCATE a");
    exec(&mut c, "INSERT INTO a VALUES (2, 1); UPDATE a SET v = 3; DELETE FROM a;");
    let cases = [
        (None, "B I C B U C B D C B T C B I U D C"),
        (Some("insert,update,delete,truncate"), "B I C B U C B D C B T C B I U D C"),
        (Some("insert"), "B I C B I C"),
        (Some("update"), "B U C B U C"),
        (Some("delete"), "B D C B D C"),
        (Some("truncate"), "B T C"),
        (Some("insert,truncate"), "B I C B T C B I C"),
        (Some("delete,update"), "B U C B D C B U D C"),
    ];
    let mut failures = Vec::new();
    for (actions_opt, want) in cases {
        let o: Vec<_> = actions_opt.map(|a| ("actions", Some(a))).into_iter().collect();
        match try_changes(&mut c, false, "s", None, &o) {
            Ok(rows) if actions(&rows) == want => {}
            Ok(rows) => failures.push(format!("actions={actions_opt:?}: got {}, want {want}", actions(&rows))),
            Err(e) => failures.push(format!("actions={actions_opt:?}: {}", describe_error(&e))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn message_prefix_filters() {
    let (_cluster, mut c) = plugin_cluster("dec_prefixes");
    for (transactional, prefix) in
        [(false, "a"), (false, "b"), (false, "a,b"), (true, "c"), (false, "ab"), (false, "\"q\""), (false, "x\\,y")]
    {
        c.execute("SELECT pg_logical_emit_message($1, $2, 'content')", &[&transactional, &prefix]).unwrap();
    }
    flush_wal(&mut c);
    // (add-msg-prefixes, filter-msg-prefixes, prefixes expected in order, actions).
    // Lists are split as wal2json splits them: quotes are characters, a
    // backslash escapes and stays in the item (so `a,b` cannot be named).
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a [&'a str], &'a str);
    let all: &[&str] = &["a", "b", "a,b", "c", "ab", "\"q\"", "x\\,y"];
    let cases: &[Case] = &[
        (None, None, all, "M M M B M C M M M"),
        (Some(""), None, all, "M M M B M C M M M"),
        (Some("a"), None, &["a"], "M"),
        (Some("\"a,b\""), None, &[], ""),
        (Some("\"q\""), None, &["\"q\""], "M"),
        (Some("x\\,y"), None, &["x\\,y"], "M"),
        (Some("a,b"), None, &["a", "b"], "M M"),
        (Some("c"), None, &["c"], "B M C"),
        (None, Some("a,c"), &["b", "a,b", "ab", "\"q\"", "x\\,y"], "M M M M M"),
        (None, Some("\"a,b\""), all, "M M M B M C M M M"),
        (Some("a,\"a,b\",c"), Some("c"), &["a"], "M"),
        (Some("zzz"), None, &[], ""),
    ];
    let mut failures = Vec::new();
    for (add, filter, want, want_actions) in cases {
        let mut o = Vec::new();
        if let Some(a) = add {
            o.push(("add-msg-prefixes", Some(*a)));
        }
        if let Some(f) = filter {
            o.push(("filter-msg-prefixes", Some(*f)));
        }
        match try_changes(&mut c, false, "s", None, &o) {
            Ok(rows) => {
                let got: Vec<&str> = rows
                    .iter()
                    .filter(|r| r.action() == "M")
                    .map(|r| r.doc["prefix"].as_str().unwrap_or("?"))
                    .collect();
                if got != *want || actions(&rows) != *want_actions {
                    failures.push(format!("{o:?}: got {got:?} ({}), want {want:?} ({want_actions})", actions(&rows)));
                }
            }
            Err(e) => failures.push(format!("{o:?}: {}", describe_error(&e))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn origin_filters() {
    let (_cluster, mut c) = plugin_cluster("dec_origins");
    exec(
        &mut c,
        "CREATE TABLE t (id int, src text);
         SELECT pg_replication_origin_create('o1');
         SELECT pg_replication_origin_create('o2');
         SELECT pg_replication_origin_create('o,3');",
    );
    let mut ids = BTreeMap::new();
    for name in ["o1", "o2", "o,3"] {
        let id: u32 = c.query_one("SELECT pg_replication_origin_oid($1)", &[&name]).unwrap().get(0);
        ids.insert(name, id);
    }
    exec(&mut c, "INSERT INTO t VALUES (0, 'local')");
    for (i, name) in ["o1", "o2", "o,3"].iter().enumerate() {
        c.execute("SELECT pg_replication_origin_session_setup($1)", &[name]).unwrap();
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&(i as i32 + 1), name]).unwrap();
        exec(&mut c, "SELECT pg_replication_origin_session_reset()");
    }
    exec(&mut c, "INSERT INTO t VALUES (9, 'local again')");

    // With include-origin, each transaction names the origin it came through.
    let rows = peek_changes(&mut c, "s", &opts(&[("include-origin", "1")]));
    let docs = single_change_transactions(&rows, "include-origin");
    assert_eq!(docs.len(), 5, "\n{}", dump(&rows));
    for (i, r) in rows.iter().enumerate() {
        let src_doc = &docs[i / 3];
        let src = logical_ext_pg_test::json::value(src_doc, "columns", "src").as_str().unwrap().to_string();
        let want = ids.get(src.as_str()).copied().unwrap_or(0);
        assert!(
            logical_ext_pg_test::json::is_integer(&r.doc["origin"], &want.to_string()),
            "origin of {} should be {want} ({src})",
            r.data
        );
    }

    let o1 = ids["o1"].to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![], vec!["local", "o1", "o2", "o,3", "local again"]),
        (vec![("origin", "any")], vec!["local", "o1", "o2", "o,3", "local again"]),
        (vec![("origin", "none")], vec!["local", "local again"]),
        (vec![("filter-origins", "o1")], vec!["local", "o2", "o,3", "local again"]),
        (vec![("filter-origins", &o1)], vec!["local", "o2", "o,3", "local again"]),
        (vec![("filter-origins", "o1,o2")], vec!["local", "o,3", "local again"]),
        // wal2json's list syntax: a backslash escapes the comma (our names
        // drop it); quotes are ordinary characters.
        (vec![("filter-origins", "o\\,3")], vec!["local", "o1", "o2", "local again"]),
        (vec![("filter-origins", "\"o1\"")], vec!["local", "o1", "o2", "o,3", "local again"]),
        (vec![("filter-origins", "o2"), ("origin", "any")], vec!["local", "o1", "o,3", "local again"]),
        (vec![("origin", "none"), ("filter-origins", "o1")], vec!["local", "local again"]),
    ];
    let mut failures = Vec::new();
    for (o, want) in &cases {
        match try_changes(&mut c, false, "s", None, &opts(o)) {
            Ok(rows) => {
                let docs = single_change_transactions(&rows, &format!("{o:?}"));
                let got: Vec<&str> = docs
                    .iter()
                    .map(|d| logical_ext_pg_test::json::value(d, "columns", "src").as_str().unwrap())
                    .collect();
                if got != *want {
                    failures.push(format!("{o:?}: got {got:?}, want {want:?}"));
                }
            }
            Err(e) => failures.push(format!("{o:?}: {}", describe_error(&e))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
