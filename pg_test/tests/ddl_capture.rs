//! DDL capture (issue 6) on one cluster, read through the output plugin: what
//! is captured under each `logical_ext.ddl_capture` mode, the exact text of
//! each statement of a multi-statement query string, the `"DDL"` documents
//! and their delivery per publication, refusals (logged, never blocking),
//! rolled-back DDL, and `replicate_ddl`.

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use serde_json::Value;

/// A cluster that preloads logical_ext (capture sees every statement), with
/// the extension, a slot `s`, schema `app` published by `p_app`, table
/// `public.pt` published by `p_pt`, and `public.other` published nowhere.
fn capture_cluster(name: &str) -> (Cluster, Client) {
    let (cluster, mut c) = plugin_cluster_with(name, &["shared_preload_libraries = 'logical_ext'"]);
    exec(
        &mut c,
        "CREATE SCHEMA app;
         CREATE TABLE app.t (id int PRIMARY KEY, v text);
         CREATE TABLE public.pt (id int PRIMARY KEY);
         CREATE TABLE public.other (id int PRIMARY KEY);
         CREATE PUBLICATION p_app FOR TABLES IN SCHEMA app;
         CREATE PUBLICATION p_pt FOR TABLE public.pt;",
    );
    // Consume the set-up (created before the publications: not captured).
    get_changes(&mut c, "s", &[]);
    (cluster, c)
}

fn ddl_docs(changes: &[Change]) -> Vec<Value> {
    changes.iter().filter(|c| c.action() == "DDL").map(|c| c.doc.clone()).collect()
}

fn commands(changes: &[Change]) -> Vec<String> {
    ddl_docs(changes).iter().map(|d| d["command"].as_str().unwrap_or("?").to_string()).collect()
}

fn log_rows(c: &mut Client) -> Vec<(String, String, bool, Option<String>)> {
    c.query("SELECT source, command, replicated, reason FROM logical_ext.ddl_log ORDER BY id", &[])
        .expect("read ddl_log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[test]
fn published_mode_captures_exact_statements_in_order() {
    let (_cluster, mut c) = capture_cluster("ddl_capture_published");
    // One query string: DDL and DML mixed, a quoted name holding a
    // semicolon, and DDL on an unpublished table in between.
    exec(
        &mut c,
        "ALTER TABLE app.t ADD COLUMN n int DEFAULT 7; INSERT INTO app.t VALUES (1, 'a');
         CREATE TABLE app.\"we;ird\" (id int PRIMARY KEY, \"x;y\" text);
         ALTER TABLE public.other ADD COLUMN z int;
         CREATE INDEX pt_idx ON public.pt ((id * 2)); SET search_path = app, public; ALTER TABLE t RENAME COLUMN v TO w",
    );
    let changes = get_changes(&mut c, "s", &opts(&[("include-lsn", "1")]));
    assert_eq!(
        commands(&changes),
        [
            "ALTER TABLE app.t ADD COLUMN n int DEFAULT 7",
            "CREATE TABLE app.\"we;ird\" (id int PRIMARY KEY, \"x;y\" text)",
            "CREATE INDEX pt_idx ON public.pt ((id * 2))",
            "ALTER TABLE t RENAME COLUMN v TO w",
        ],
        "{}",
        dump(&changes)
    );
    // The whole string is one transaction: DDL and the INSERT in order.
    assert_eq!(actions(&changes), "B DDL I DDL DDL DDL C", "{}", dump(&changes));
    let d = ddl_docs(&changes);
    assert_eq!(d[0]["command_tag"], "ALTER TABLE");
    assert_eq!(d[0]["object_type"], "table");
    assert_eq!(d[0]["object_identity"], "app.t");
    assert_eq!(d[0]["schema"], "app");
    assert_eq!(d[0]["role"], "postgres");
    assert_eq!(d[0]["source"], "event_trigger");
    assert_eq!(d[0]["publications"], serde_json::json!(["p_app"]));
    assert!(d[0]["lsn"].is_string(), "{}", d[0]);
    assert_eq!(d[2]["publications"], serde_json::json!(["p_pt"]));
    assert_eq!(d[2]["object_type"], "index");
    // The search_path each statement ran with.
    assert_eq!(d[1]["search_path"], "\"$user\", public");
    assert_eq!(d[3]["search_path"], "app, public");
    // The log holds the same four, replicated.
    let log = log_rows(&mut c);
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log.iter().all(|(src, _, replicated, _)| src == "event_trigger" && *replicated), "{log:?}");
}

#[test]
fn rollback_temp_and_off_capture_nothing() {
    let (_cluster, mut c) = capture_cluster("ddl_capture_nothing");
    exec(&mut c, "BEGIN; ALTER TABLE app.t ADD COLUMN ghost int; ROLLBACK");
    exec(&mut c, "CREATE TEMP TABLE tmp (id int); ALTER TABLE tmp ADD COLUMN x int");
    exec(
        &mut c,
        "SET logical_ext.ddl_capture = off; ALTER TABLE app.t ADD COLUMN quiet int; RESET logical_ext.ddl_capture",
    );
    // Publications are each node's own set-up, even when they name published tables.
    exec(&mut c, "ALTER PUBLICATION p_app ADD TABLE public.pt; CREATE PUBLICATION p_more FOR TABLES IN SCHEMA app");
    // A DO block's DDL is captured statement by statement (the DO is not).
    exec(
        &mut c,
        "DO $$ BEGIN EXECUTE 'ALTER TABLE app.t ADD COLUMN dyn int'; ALTER TABLE app.t DROP COLUMN dyn; END $$",
    );
    let changes = get_changes(&mut c, "s", &[]);
    assert_eq!(
        commands(&changes),
        ["ALTER TABLE app.t ADD COLUMN dyn int", "ALTER TABLE app.t DROP COLUMN dyn"],
        "{}",
        dump(&changes)
    );
    assert_eq!(log_rows(&mut c).len(), 2);
}

#[test]
fn all_mode_and_drops() {
    let (_cluster, mut c) = capture_cluster("ddl_capture_all");
    // A table of a FOR TABLE publication: its publication rows are gone by
    // the time sql_drop fires, the snapshot taken before the DROP knows.
    exec(&mut c, "DROP TABLE public.pt");
    exec(&mut c, "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'");
    exec(
        &mut c,
        "SET logical_ext.ddl_capture = 'all'; CREATE FUNCTION public.g() RETURNS int LANGUAGE sql AS 'SELECT 2'",
    );
    exec(&mut c, "DROP SCHEMA app CASCADE");
    let changes = get_changes(&mut c, "s", &[]);
    let d = ddl_docs(&changes);
    assert_eq!(
        commands(&changes),
        [
            "DROP TABLE public.pt",
            "CREATE FUNCTION public.g() RETURNS int LANGUAGE sql AS 'SELECT 2'",
            "DROP SCHEMA app CASCADE"
        ],
        "{}",
        dump(&changes)
    );
    assert_eq!(d[0]["publications"], serde_json::json!(["p_pt"]), "{}", d[0]);
    assert_eq!(d[0]["object_type"], "table");
    assert_eq!(d[1]["publications"], serde_json::json!([]));
    assert_eq!(d[2]["publications"], serde_json::json!(["p_app"]), "{}", d[2]);
}

#[test]
fn unsafe_commands_are_refused_and_logged() {
    let (_cluster, mut c) = capture_cluster("ddl_capture_refused");
    // CREATE TABLE AS carries data: WARNING, logged as not replicated, and
    // the table is created all the same.
    exec(&mut c, "CREATE TABLE app.copy AS SELECT g AS id FROM generate_series(1, 3) g");
    exec(&mut c, "CREATE INDEX CONCURRENTLY t_v ON app.t (v)");
    let n: i64 = c.query_one("SELECT count(*) FROM app.copy", &[]).unwrap().get(0);
    assert_eq!(n, 3);
    let log = log_rows(&mut c);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(!log[0].2 && log[0].3.as_deref().unwrap_or("").contains("CREATE TABLE AS"), "{log:?}");
    assert!(!log[1].2 && log[1].3.as_deref().unwrap_or("").contains("CONCURRENTLY"), "{log:?}");
    let changes = get_changes(&mut c, "s", &[]);
    assert!(ddl_docs(&changes).is_empty(), "{}", dump(&changes));
}

#[test]
fn delivery_per_publication_and_include_ddl_off() {
    let (_cluster, mut c) = capture_cluster("ddl_capture_delivery");
    exec(&mut c, "ALTER TABLE app.t ADD COLUMN a int; ALTER TABLE public.pt ADD COLUMN b int");
    let peek = |c: &mut Client, o: &[(&str, &str)]| commands(&peek_changes(c, "s", &opts(o)));
    assert_eq!(peek(&mut c, &[("publication_names", "p_app")]), ["ALTER TABLE app.t ADD COLUMN a int"]);
    assert_eq!(peek(&mut c, &[("publication_names", "p_pt")]), ["ALTER TABLE public.pt ADD COLUMN b int"]);
    assert_eq!(peek(&mut c, &[]).len(), 2);
    // include-ddl off: the plain messages wal2json would print.
    let plain = peek_changes(&mut c, "s", &opts(&[("include-ddl", "0")]));
    assert_eq!(actions(&plain), "B M M C", "{}", dump(&plain));
    assert_eq!(plain[1].doc["prefix"], "logical_ext.ddl");
    let content: Value = serde_json::from_str(plain[1].doc["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["command"], "ALTER TABLE app.t ADD COLUMN a int");
    // filter-msg-prefixes drops DDL events too.
    assert!(peek(&mut c, &[("filter-msg-prefixes", "logical_ext.ddl")]).is_empty());
}

#[test]
fn replicate_ddl_runs_and_replicates_one_statement() {
    let (_cluster, mut c) = capture_cluster("ddl_capture_replicate");
    let lsn: String = c
        .query_one("SELECT logical_ext.replicate_ddl('ALTER TABLE app.t ADD COLUMN r int')::text", &[])
        .unwrap()
        .get(0);
    // Ran here, and travelled once (capture stayed quiet).
    let cols: i64 = c
        .query_one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'app.t'::regclass AND attname = 'r'", &[])
        .unwrap()
        .get(0);
    assert_eq!(cols, 1);
    let changes = get_changes(&mut c, "s", &opts(&[("include-lsn", "1")]));
    let d = ddl_docs(&changes);
    assert_eq!(d.len(), 1, "{}", dump(&changes));
    assert_eq!(d[0]["source"], "replicate_ddl");
    assert_eq!(d[0]["lsn"], lsn.as_str());
    assert_eq!(d[0]["publications"], serde_json::json!([]));
    let log = log_rows(&mut c);
    assert_eq!(log, [("replicate_ddl".to_string(), "ALTER TABLE app.t ADD COLUMN r int".to_string(), true, None)]);

    let (code, msg, hint) =
        replication::expect_error(&mut c, "SELECT logical_ext.replicate_ddl('CREATE TABLE a (); CREATE TABLE b ()')");
    assert_eq!(code, "22023", "{msg}");
    assert!(hint.contains("once per statement"), "{hint}");
    let (code, msg, _) =
        replication::expect_error(&mut c, "SELECT logical_ext.replicate_ddl('INSERT INTO app.t VALUES (9)')");
    assert_eq!(code, "0A000", "{msg}");
    // Not for PUBLIC.
    exec(&mut c, "CREATE ROLE nobody LOGIN");
    let (code, _, _) =
        replication::expect_error(&mut c, "SET ROLE nobody; SELECT logical_ext.replicate_ddl('CREATE TABLE x ()')");
    assert_eq!(code, "42501");
}

#[test]
fn without_preload_the_first_ddl_of_a_session_is_refused_not_guessed() {
    // No shared_preload_libraries: a new session loads logical_ext only when
    // its first DDL fires the event trigger, too late to see that statement.
    let (cluster, mut c) = plugin_cluster("ddl_capture_no_preload");
    exec(&mut c, "CREATE TABLE pt (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE pt");
    get_changes(&mut c, "s", &[]);
    let mut fresh = cluster.client();
    exec(&mut fresh, "ALTER TABLE pt ADD COLUMN a int; ALTER TABLE pt ADD COLUMN b int");
    exec(&mut fresh, "ALTER TABLE pt ADD COLUMN c int");
    let log = log_rows(&mut c);
    assert_eq!(log.len(), 3, "{log:?}");
    // The refusal keeps the whole query string for the record.
    assert_eq!(log[0].1, "ALTER TABLE pt ADD COLUMN a int; ALTER TABLE pt ADD COLUMN b int");
    assert!(!log[0].2 && log[0].3.as_deref().unwrap_or("").contains("could not be told apart"), "{log:?}");
    // Once loaded (from the next statement of the same string on), the
    // session's statements are captured exactly.
    assert_eq!(log[1], ("event_trigger".to_string(), "ALTER TABLE pt ADD COLUMN b int".to_string(), true, None));
    assert_eq!(log[2], ("event_trigger".to_string(), "ALTER TABLE pt ADD COLUMN c int".to_string(), true, None));
    assert_eq!(
        commands(&get_changes(&mut c, "s", &[])),
        ["ALTER TABLE pt ADD COLUMN b int", "ALTER TABLE pt ADD COLUMN c int"]
    );
}
