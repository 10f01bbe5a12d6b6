//! DDL replication (issue 6) on two real clusters: every scenario of the
//! issue with no manual step on the subscriber — ADD COLUMN followed at once
//! by inserts using it, RENAME COLUMN, ALTER COLUMN TYPE, SET/DROP DEFAULT,
//! CREATE INDEX, CREATE TABLE in a published schema followed by inserts,
//! DROP TABLE, a multi-statement query string mixing DDL and DML (with a
//! table named with quotes and a semicolon), DDL in a DO block, DDL in a
//! rolled-back transaction, DDL under concurrent load — each ending with
//! `pg_dump --schema-only` and the data equal on both sides. Also: a replay
//! that fails follows the error policy and recovers.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

const PRELOAD: &str = "shared_preload_libraries = 'logical_ext'";

/// Both sides with schema `app` (tables `t` and `old`), the publisher
/// capturing DDL, `p` = FOR TABLES IN SCHEMA app, subscription `s` streaming.
fn ddl_pair(name: &str) -> Pair {
    let pair = Pair::start_with(name, &[PRELOAD], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec(
        "CREATE SCHEMA app;
         CREATE TABLE app.t (id int PRIMARY KEY, v text);
         CREATE TABLE app.old (id int PRIMARY KEY);",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA app");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair
}

fn applied_ddl(pair: &Pair) -> i64 {
    pair.sub_client()
        .query_one(
            "SELECT count(*) FROM logical_ext.ddl_log WHERE source = 'apply' AND subscription = 's' AND replicated",
            &[],
        )
        .expect("count ddl_log")
        .get(0)
}

#[test]
fn schema_changes_replicate_in_stream_order() {
    let pair = ddl_pair("ddl_scenarios");
    // The seeds' crash scenario: a new column used at once.
    pair.pub_exec("ALTER TABLE app.t ADD COLUMN c2 text");
    pair.pub_exec("INSERT INTO app.t VALUES (1, 'a', 'x'), (2, 'b', 'y')");
    // The seeds' drop-and-recreate scenario.
    pair.pub_exec("ALTER TABLE app.t RENAME COLUMN v TO v2");
    pair.pub_exec("UPDATE app.t SET v2 = v2 || '!' WHERE id = 1");
    pair.pub_exec("ALTER TABLE app.t ALTER COLUMN id TYPE bigint");
    pair.pub_exec("INSERT INTO app.t VALUES (5000000000, 'big', NULL)");
    pair.pub_exec("ALTER TABLE app.t ALTER COLUMN c2 SET DEFAULT 'dflt'");
    pair.pub_exec("INSERT INTO app.t (id, v2) VALUES (3, 'c')");
    pair.pub_exec("ALTER TABLE app.t ALTER COLUMN c2 DROP DEFAULT");
    pair.pub_exec("CREATE INDEX t_v2 ON app.t (v2)");
    // CREATE TABLE in the published schema, rows right behind it (one
    // query string, one transaction).
    pair.pub_exec(
        "CREATE TABLE app.fresh (id int PRIMARY KEY, note text DEFAULT 'n');
         INSERT INTO app.fresh (id) SELECT g FROM generate_series(1, 100) g",
    );
    pair.pub_exec("INSERT INTO app.fresh VALUES (101, 'later')");
    pair.pub_exec("DROP TABLE app.old");
    // A multi-statement string mixing DDL and DML, with a table whose name
    // holds a quote and a semicolon: replicated as exactly those statements.
    pair.pub_exec(
        r#"CREATE TABLE app."we;ird""" (id int PRIMARY KEY, "x;y" text); INSERT INTO app."we;ird""" VALUES (1, 'semi;colon');
           ALTER TABLE app.t ADD COLUMN m int; UPDATE app.t SET m = id % 7"#,
    );
    // DDL in a DO block, static and dynamic, with DML between.
    pair.pub_exec(
        "DO $$ BEGIN
             ALTER TABLE app.fresh ADD COLUMN d date;
             UPDATE app.fresh SET d = '2026-01-01' WHERE id % 2 = 0;
             EXECUTE 'CREATE TABLE app.dyn (id int PRIMARY KEY, v text)';
             INSERT INTO app.dyn VALUES (1, 'one');
         END $$",
    );
    // Rolled back: nothing of it may reach the subscriber.
    pair.pub_exec("BEGIN; ALTER TABLE app.t ADD COLUMN ghost int; INSERT INTO app.t (id) VALUES (999); ROLLBACK");
    pair.pub_exec("INSERT INTO app.dyn VALUES (2, 'two')");
    pair.wait_caught_up("s");

    pair.assert_same_schema("app");
    pair.assert_same("SELECT * FROM app.t", "id");
    pair.assert_same("SELECT * FROM app.fresh", "id");
    pair.assert_same(r#"SELECT * FROM app."we;ird""""#, "id");
    pair.assert_same("SELECT * FROM app.dyn", "id");
    assert_eq!(count(&mut pair.sub_client(), "app.fresh"), 101);
    let old: Option<String> = pair.sub_client().query_one("SELECT to_regclass('app.old')::text", &[]).unwrap().get(0);
    assert_eq!(old, None, "app.old must be dropped on the subscriber");
    // Every captured command was replayed once, and recorded as such.
    let captured: i64 =
        pair.pub_client().query_one("SELECT count(*) FROM logical_ext.ddl_log WHERE replicated", &[]).unwrap().get(0);
    assert_eq!(captured, 12);
    assert_eq!(applied_ddl(&pair), captured);
    let status = pair.status("s");
    assert_eq!(status.last_error, None);
    // Initial synchronization's table list follows: tables created by
    // replayed DDL are ready (nothing to copy), dropped ones are gone.
    let mut sc = pair.sub_client();
    let tables: Vec<String> = sc
        .query("SELECT relid::text || ':' || state FROM logical_ext.subscription_tables ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["app.\"we;ird\"\"\":ready", "app.dyn:ready", "app.fresh:ready", "app.t:ready"]);
    let added: i64 = sc.query_one("SELECT logical_ext.refresh_subscription('s')", &[]).unwrap().get(0);
    assert_eq!(added, 0, "refresh must find no new table");
}

#[test]
fn ddl_interleaved_with_dml_under_load() {
    let pair = ddl_pair("ddl_load");
    pair.pub_exec("CREATE TABLE app.load (id bigint PRIMARY KEY, v text)");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut c = pair.pub_client();
        std::thread::spawn(move || {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                c.execute("INSERT INTO app.load (id, v) VALUES ($1::bigint, 'v' || $1::bigint)", &[&i])
                    .expect("insert");
                if i % 5 == 0 {
                    c.execute("UPDATE app.load SET v = v || '+' WHERE id = $1", &[&(i - 3)]).expect("update");
                }
                if i % 11 == 0 {
                    c.execute("DELETE FROM app.load WHERE id = $1", &[&(i - 7)]).expect("delete");
                }
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    // Each DDL waits for the writer to make progress after the previous
    // one, so DDL and DML interleave in the stream. A writer that died
    // (its statement failed) ends the wait at once: its panic says why.
    let progress = |seen: i64| {
        wait_until(Duration::from_secs(60), "the writer makes progress", || {
            written.load(Ordering::Relaxed) >= seen + 20 || writer.is_finished()
        });
        assert!(!writer.is_finished(), "the writer thread ended early (its panic message is above)");
    };
    let mut seen = 0;
    for ddl in [
        "ALTER TABLE app.load ADD COLUMN a int DEFAULT 1",
        "ALTER TABLE app.load ADD COLUMN b text",
        "CREATE INDEX load_a ON app.load (a)",
        "ALTER TABLE app.load ALTER COLUMN a TYPE bigint",
        "ALTER TABLE app.load ALTER COLUMN b SET DEFAULT 'x'",
        "ALTER TABLE app.load RENAME COLUMN b TO b2",
        "CREATE TABLE app.side (id int PRIMARY KEY); INSERT INTO app.side VALUES (1)",
        "ALTER TABLE app.load DROP COLUMN a",
        "ALTER TABLE app.load ADD COLUMN c numeric DEFAULT 2.5",
    ] {
        progress(seen);
        seen = written.load(Ordering::Relaxed);
        pair.pub_exec(ddl);
    }
    progress(seen);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    pair.wait_caught_up("s");
    pair.assert_same_schema("app");
    pair.assert_same("SELECT * FROM app.load", "id");
    pair.assert_same("SELECT * FROM app.side", "id");
    assert!(count(&mut pair.sub_client(), "app.load") > 100);
}

#[test]
fn failed_replay_follows_the_error_policy() {
    let pair = ddl_pair("ddl_failure");
    // The subscriber already has the column the publisher adds: the replay
    // fails, the transaction (DDL and its rows) is retried, nothing half-done.
    pair.sub_exec("ALTER TABLE app.t ADD COLUMN extra int");
    pair.pub_exec("ALTER TABLE app.t ADD COLUMN extra int; INSERT INTO app.t VALUES (1, 'a', 10)");
    let st = pair.wait_status("s", "an error naming the DDL", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("DDL ALTER TABLE") && e.contains("already exists"))
    });
    assert!(st.last_error.unwrap().contains("ADD COLUMN extra int"));
    assert_eq!(count(&mut pair.sub_client(), "app.t"), 0);
    // Each failed attempt is recorded, and survives its rollback.
    let failed: String = pair
        .sub_client()
        .query_one(
            "SELECT reason FROM logical_ext.ddl_log WHERE source = 'apply' AND NOT replicated ORDER BY id LIMIT 1",
            &[],
        )
        .expect("a ddl_log row for the failed replay")
        .get(0);
    assert!(failed.contains("already exists"), "{failed}");
    // Fixed by hand: the next attempt replays the DDL and the row.
    pair.sub_exec("ALTER TABLE app.t DROP COLUMN extra");
    pair.wait_sub_count("s", "app.t", 1);
    pair.wait_caught_up("s");
    pair.assert_same_schema("app");
    pair.assert_same("SELECT * FROM app.t", "id");
    assert_eq!(applied_ddl(&pair), 1);
}

#[test]
fn tables_created_under_for_all_tables_arrive_with_their_rows() {
    let pair = Pair::start_with("ddl_all_tables", &[PRELOAD], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("CREATE SCHEMA sales");
    pair.pub_exec("CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric(12, 2) NOT NULL CHECK (total >= 0))");
    pair.pub_exec("INSERT INTO sales.orders SELECT g, g * 1.5 FROM generate_series(1, 500) g");
    pair.pub_exec(
        "CREATE TABLE public.notes (id serial PRIMARY KEY, body text); INSERT INTO public.notes (body) VALUES ('hi')",
    );
    pair.wait_sub_count("s", "sales.orders", 500);
    pair.wait_caught_up("s");
    pair.assert_same_schema("sales");
    pair.assert_same_schema("public");
    pair.assert_same("SELECT * FROM sales.orders", "id");
    pair.assert_same("SELECT * FROM public.notes", "id");
    // logical_ext's own tables are not streamed: the subscriber's ddl_log
    // holds only its replays, not the publisher's capture rows.
    let sources: Vec<String> = pair
        .sub_client()
        .query("SELECT DISTINCT source FROM logical_ext.ddl_log", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sources, ["apply"]);
}
