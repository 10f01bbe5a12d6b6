//! Option parsing: every boolean option with every accepted spelling, its
//! default, and every kind of option error (SQLSTATE 22023 naming the option).
//! Spec: docs/FORMAT.md (Options).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::json::*;
use logical_ext_pg_test::postgres::error::SqlState;
use logical_ext_pg_test::*;

/// Decoded stream for one set of options, as seen by the effect checks.
struct Stream {
    changes: Vec<Change>,
}

impl Stream {
    fn first(&self, action: &str) -> &serde_json::Value {
        &self
            .changes
            .iter()
            .find(|c| c.action() == action)
            .unwrap_or_else(|| panic!("no {action} in\n{}", dump(&self.changes)))
            .doc
    }
    fn name_column(&self) -> &serde_json::Value {
        entry(self.first("I"), "columns", "name").expect("column name")
    }
}

/// (option, default, "is the option in effect?")
type Effect = (&'static str, bool, fn(&Stream) -> bool);

const EFFECTS: &[Effect] = &[
    ("include-transaction", true, |s| s.changes.iter().any(|c| c.action() == "B")),
    ("include-xids", false, |s| s.first("B").get("xid").is_some()),
    ("include-timestamp", false, |s| s.first("B").get("timestamp").is_some()),
    ("include-lsn", false, |s| s.first("B").get("lsn").is_some() && s.first("B").get("nextlsn").is_some()),
    ("include-origin", false, |s| s.first("B").get("origin").is_some()),
    ("include-schemas", true, |s| s.first("I").get("schema").is_some()),
    ("include-types", true, |s| s.name_column().get("type").is_some()),
    ("include-type-oids", false, |s| s.name_column().get("typeoid").is_some()),
    ("include-pk", false, |s| s.first("U").get("pk").is_some()),
    ("include-not-null", false, |s| s.name_column().get("optional") == Some(&serde_json::Value::Bool(true))),
    ("include-column-positions", false, |s| s.name_column().get("position").is_some()),
    ("include-default", false, |s| s.name_column().get("default").is_some()),
    ("numeric-data-types-as-string", false, |s| entry(s.first("I"), "columns", "id").unwrap()["value"] == "1"),
];
// (Format-version 2 ignores include-typmod, pretty-print and write-in-chunks,
// as wal2json 2.x does: pretty_print_and_typmod_are_ignored_in_v2 below;
// decoder_wal2json_oracle checks their format-version 1 effects.)

// The spellings FORMAT.md lists (PostgreSQL's parse_bool is case-insensitive).
const TRUE_SPELLINGS: &[&str] = &["1", "true", "on", "yes", "TRUE", "On"];
const FALSE_SPELLINGS: &[&str] = &["0", "false", "off", "no", "FALSE", "Off"];

#[test]
fn boolean_options_defaults_and_spellings() {
    let (_cluster, mut c) = plugin_cluster("dec_bool_options");
    exec(
        &mut c,
        "CREATE TABLE opt_t (id int PRIMARY KEY, name varchar(20));
         INSERT INTO opt_t VALUES (1, 'a');
         UPDATE opt_t SET name = 'b' WHERE id = 1;",
    );
    // include-typmod's check needs include-types on, which is the default.
    let mut failures = Vec::new();
    let base = peek_changes(&mut c, "s", &[]);
    for (opt, default, effect) in EFFECTS {
        if effect(&Stream { changes: base.clone() }) != *default {
            failures.push(format!("{opt}: default is not {default}"));
        }
        for (spellings, want) in [(TRUE_SPELLINGS, true), (FALSE_SPELLINGS, false)] {
            for sp in spellings {
                match try_changes(&mut c, false, "s", None, &[(opt, Some(sp))]) {
                    Ok(changes) => {
                        if effect(&Stream { changes }) != want {
                            failures.push(format!("{opt}={sp}: effect is not {want}"));
                        }
                    }
                    Err(e) => failures.push(format!("{opt}={sp}: {}", describe_error(&e))),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn non_boolean_options_accept_valid_values() {
    let (_cluster, mut c) = plugin_cluster("dec_valid_options");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t;");
    exec(&mut c, "SELECT pg_replication_origin_create('o1')");
    exec(&mut c, "INSERT INTO t VALUES (1)");
    let valid: &[&[(&str, &str)]] = &[
        &[("format-version", "2")],
        &[("actions", "insert,update,delete,truncate")],
        &[("actions", "insert")],
        &[("add-tables", "public.t")],
        &[("add-tables", "*.*")],
        &[("filter-tables", "a\\ b.c\\,d")],
        &[("filter-tables", "public.filter\"table_9")],
        &[("include-domain-data-type", "1")],
        &[("add-msg-prefixes", "a,\"b,c\"")],
        &[("add-msg-prefixes", "a\\,b")],
        &[("filter-origins", "1,,2x,-3,\"o")],
        &[("filter-msg-prefixes", "x")],
        &[("filter-origins", "o1")],
        &[("filter-origins", "1")],
        &[("origin", "none")],
        &[("origin", "any")],
        &[("publication_names", "p")],
    ];
    let mut failures = Vec::new();
    for o in valid {
        match try_changes(&mut c, false, "s", None, &opts(o)) {
            Ok(rows) if rows.iter().any(|r| r.action() == "I") => {}
            Ok(rows) => failures.push(format!("{o:?}: no insert:\n{}", dump(&rows))),
            Err(e) => failures.push(format!("{o:?}: {}", describe_error(&e))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn option_errors_are_22023_and_name_the_option() {
    let (_cluster, mut c) = plugin_cluster("dec_option_errors");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    // (options, the option the message must name)
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("no-such-option", "1")], "no-such-option"),
        (&[("include-xids", "1"), ("include-xids", "0")], "include-xids"),
        (&[("actions", "insert"), ("actions", "delete")], "actions"),
        (&[("include-xids", "maybe")], "include-xids"),
        (&[("include-lsn", "2")], "include-lsn"),
        (&[("pretty-print", "")], "pretty-print"),
        (&[("include-transaction", "yes please")], "include-transaction"),
        (&[("actions", "insert,frobnicate")], "actions"),
        (&[("add-tables", "public.a b")], "add-tables"),
        (&[("add-tables", "no_dot")], "add-tables"),
        (&[("filter-tables", "a.b,")], "filter-tables"),
        (&[("add-msg-prefixes", "a,,b")], "add-msg-prefixes"),
        (&[("filter-msg-prefixes", "a b")], "filter-msg-prefixes"),
        (&[("format-version", "3")], "format-version"),
        (&[("format-version", "two")], "format-version"),
        (&[("origin", "sometimes")], "origin"),
        (&[("filter-origins", "1 2")], "filter-origins"),
        (&[("actions", "\"insert\"")], "actions"),
        (&[("publication_names", "\"open")], "publication_names"),
    ];
    let mut failures = Vec::new();
    for (o, name) in cases {
        match try_changes(&mut c, false, "s", None, &opts(o)) {
            Ok(rows) => failures.push(format!("{o:?}: accepted, {} row(s): {}", rows.len(), actions(&rows))),
            Err(e) => {
                let msg = describe_error(&e);
                if e.code() != Some(&SqlState::INVALID_PARAMETER_VALUE) {
                    failures.push(format!("{o:?}: SQLSTATE is not 22023: {msg}"));
                }
                let text = e
                    .as_db_error()
                    .map(|d| format!("{} {}", d.message(), d.detail().unwrap_or("")))
                    .unwrap_or_default();
                if !text.contains(name) {
                    failures.push(format!("{o:?}: message does not name {name}: {msg}"));
                }
            }
        }
    }
    // After all those errors the slot still decodes.
    let rows = peek_changes(&mut c, "s", &[]);
    assert_eq!(actions(&rows), "B I C");
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

/// Options are checked when decoding starts, even when there is nothing to
/// decode (pg_recvlogical users see errors at once).
#[test]
fn option_errors_without_changes() {
    let (_cluster, mut c) = plugin_cluster("dec_option_errors_empty");
    let e = try_changes(&mut c, false, "s", None, &opts(&[("bogus", "1")]))
        .expect_err("unknown option with an empty stream");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{}", describe_error(&e));
}

/// wal2json 2.x ignores `include-typmod` and `pretty-print` in
/// format-version 2 (one document per line stays one line; types keep their
/// modifier): so does logical_ext.
#[test]
fn pretty_print_and_typmod_are_ignored_in_v2() {
    let (_cluster, mut c) = plugin_cluster("dec_v2_ignored");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, name varchar(20)); INSERT INTO t VALUES (1, 'a');");
    let plain = peek_changes(&mut c, "s", &[]);
    let o = opts(&[("pretty-print", "1"), ("include-typmod", "0"), ("write-in-chunks", "1")]);
    let other = peek_changes(&mut c, "s", &o);
    let texts = |v: &[Change]| v.iter().map(|c| c.data.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&plain), texts(&other));
    assert_eq!(
        entry(&other.iter().find(|c| c.action() == "I").unwrap().doc, "columns", "name").unwrap()["type"],
        "character varying(20)"
    );
}

/// Without `format-version` the plugin writes wal2json's default, version 1
/// (one document per transaction); with `publication_names` and no
/// `format-version` — exactly what every released logical_ext subscriber
/// (0.1-0.3) sends in START_REPLICATION — it writes version 2 with bytea's
/// `\x`, which their apply feeds to bytea's input function.
#[test]
fn default_format_version_is_1_and_released_subscribers_get_2() {
    let (_cluster, mut c) = plugin_cluster("dec_default_version");
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, b bytea); CREATE PUBLICATION p FOR TABLE t;");
    exec(&mut c, "INSERT INTO t VALUES (1, '\\x00ff')");
    let rows = peek_changes_as_given(&mut c, "s", &[]);
    assert_eq!(rows.len(), 1, "one document per transaction:\n{}", dump(&rows));
    let change = &rows[0].doc["change"];
    assert_eq!(change[0]["kind"], "insert", "\n{}", dump(&rows));
    assert_eq!(change[0]["columnvalues"][1], "00ff");
    let released_0_3 = opts(&[
        ("include-lsn", "on"),
        ("include-timestamp", "on"),
        ("include-types", "off"),
        ("include-schemas", "on"),
        ("publication_names", "p"),
        ("origin", "any"),
    ]);
    let rows = peek_changes_as_given(&mut c, "s", &released_0_3);
    assert_eq!(actions(&rows), "B I C", "\n{}", dump(&rows));
    assert_eq!(entry(&rows[1].doc, "columns", "b").unwrap()["value"], "\\x00ff");
    // A wal2json consumer asking for version 2 gets wal2json's bare digits.
    let rows = peek_changes_as_given(&mut c, "s", &opts(&[("format-version", "2")]));
    assert_eq!(entry(&rows[1].doc, "columns", "b").unwrap()["value"], "00ff");
}
