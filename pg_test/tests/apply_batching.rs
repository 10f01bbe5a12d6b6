//! Batched INSERTs (issue 14, src/apply/batch.rs): consecutive INSERTs into
//! one plain table are written with one multi-insert, and every error of
//! the batch still names exactly the row per-row apply would name.
//!
//! `batch_errors_name_the_failing_row`: one remote transaction of 600
//! INSERTs into a table whose subscriber copy has a local row colliding
//! with row 100, and stricter constraints that row 300 (NOT NULL) and row
//! 400 (CHECK) violate. As per-row apply does, the errors come in row
//! order, one per fix: first `insert_exists` with the conflict_log's
//! remote_tuple (and local_tuple) being row 100 and last_error naming the
//! conflict; after the local row is deleted, the NOT NULL violation, whose
//! DETAIL in the server log is row 300; after NOT NULL is dropped, the
//! CHECK violation with row 400; after that constraint is dropped the
//! transaction applies exactly once (same rows as the publisher, no
//! duplicates), and the subscriber's WAL shows multi-insert records (the
//! batch path was taken, so the attribution checks above tested it).
//! Rows into a second table interleaved with the first (each switch flushes
//! the batch) and an UPDATE of a just-inserted row in the same transaction
//! (flushed before the UPDATE looks for it) apply as on the publisher; a
//! table with a stored generated column (checked by a CHECK constraint on
//! it) and a subscriber-only serial column gets both computed per row, in
//! row order.
//!
//! `buffered_rows_are_converted_as_the_owner_under_a_snapshot`: a buffered
//! INSERT is bracketed only by a snapshot and the table owner's identity
//! (no command id, query level or command counter increment until its batch
//! is written, `Worker::change`). A table owned by a less trusted role,
//! with subscriber-only columns whose defaults are `current_user` and a
//! STABLE SQL function reading another table (which needs the active
//! snapshot), gets the owner's name and the looked-up value in every row of
//! a 500-row transaction written by multi-inserts.

use logical_ext_pg_test::conflicts::*;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use serde_json::Value;

/// A JSON value as text without quotes (numbers may come as strings).
fn plain(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "<missing>".into(),
    }
}

/// Multi-insert WAL records into `table` on `cluster` since `since`.
fn multi_insert_records(cluster: &Cluster, table: &str, since: &str) -> i64 {
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    c.query_one(
        "SELECT count(*) FROM pg_get_wal_records_info($1::text::pg_lsn, pg_current_wal_flush_lsn()) \
         WHERE resource_manager = 'Heap2' AND record_type LIKE 'MULTI_INSERT%' \
           AND block_ref LIKE '%/' || pg_relation_filenode($2::text::regclass) || ' %'",
        &[&since, &table],
    )
    .expect("reading the subscriber's WAL")
    .get(0)
}

#[test]
fn batch_errors_name_the_failing_row() {
    let pair = Pair::start("apply_batching");
    pair.pub_exec(
        "CREATE TABLE b (id int PRIMARY KEY, v text, n int);
         CREATE TABLE side (id int PRIMARY KEY, note text);
         CREATE TABLE gen (id int PRIMARY KEY, n int);
         CREATE PUBLICATION p FOR TABLE b, side, gen;",
    );
    pair.sub_exec(
        "CREATE TABLE b (id int PRIMARY KEY, v text NOT NULL, n int CONSTRAINT b_small CHECK (n < 1000));
         CREATE TABLE side (id int PRIMARY KEY, note text);
         CREATE TABLE gen (id int PRIMARY KEY, n int, twice int GENERATED ALWAYS AS (n * 2) STORED,
                           seq bigserial, CONSTRAINT gen_twice CHECK (twice < 1000));",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let mut sub = pair.sub_client();
    let wal_start = query_string(&mut sub, "SELECT pg_current_wal_insert_lsn()::text");

    // Interleaved tables and an UPDATE of a buffered row: applied as sent.
    pair.pub_exec(
        "BEGIN;
         INSERT INTO b SELECT g, 'w' || g, g % 100 FROM generate_series(1001, 1050) g;
         INSERT INTO side VALUES (1, 'one');
         INSERT INTO b SELECT g, 'w' || g, g % 100 FROM generate_series(1051, 1100) g;
         UPDATE b SET v = 'updated' WHERE id = 1100;
         INSERT INTO b SELECT g, 'w' || g, g % 100 FROM generate_series(1101, 1200) g;
         DELETE FROM b WHERE id = 1001;
         INSERT INTO b VALUES (1001, 'again', 1);
         INSERT INTO side VALUES (2, 'two');
         INSERT INTO gen SELECT g, g FROM generate_series(1, 300) g;
         COMMIT;",
    );
    pair.wait_caught_up("s");
    // Stored generated and subscriber-only (nextval) columns, computed per
    // row, in order.
    assert_eq!(
        count(&mut sub, "gen WHERE twice = n * 2 AND seq = id"),
        300,
        "{:?}",
        rows_text(&mut sub, "SELECT * FROM gen WHERE twice IS DISTINCT FROM n * 2 OR seq <> id LIMIT 5")
    );
    pair.assert_same("SELECT * FROM b", "id");
    pair.assert_same("SELECT * FROM side", "id");

    pair.sub_exec("INSERT INTO b VALUES (100, 'local', 0)");
    let bad = commit_traced(
        &pair.publisher,
        "INSERT INTO b SELECT g, CASE WHEN g = 300 THEN NULL ELSE 'r' || g END, CASE WHEN g = 400 THEN 5000 ELSE g % 1000 END
         FROM generate_series(1, 600) g",
    );
    let of_bad = format!("remote_commit_lsn = '{}'", bad.commit_lsn);

    // 1. insert_exists, naming row 100.
    let mut log = Vec::new();
    wait_or_explain(
        CATCH_UP,
        "an insert_exists record for the batch",
        || {
            log = conflict_log(&mut pair.sub_client(), &of_bad);
            !log.is_empty()
        },
        || pair.explain("s"),
    );
    for row in &log {
        assert_eq!(row.conflict_type, "insert_exists", "{row:#?}");
        assert_eq!(row.resolution, "error", "{row:#?}");
        let remote = row.remote_tuple.as_ref().expect("remote_tuple");
        assert_eq!(
            (plain(remote.get("id")), plain(remote.get("v")), plain(remote.get("n"))),
            ("100".to_string(), "r100".to_string(), "100".to_string()),
            "the record must name the colliding row of the batch: {row:#?}"
        );
        let local = row.local_tuple.as_ref().expect("local_tuple");
        assert_eq!(plain(local.get("v")), "local", "{row:#?}");
    }
    pair.wait_status("s", "last_error naming the conflict", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("insert_exists") && e.contains(&bad.commit_lsn))
    });
    assert_eq!(count(&mut sub, "b WHERE id <= 600"), 1, "nothing of the batch applied");

    // 2. The NOT NULL violation of row 300, named by the log's DETAIL.
    pair.sub_exec("DELETE FROM b WHERE id = 100");
    let not_null = "Failing row contains (300, null, 300)";
    wait_or_explain(
        CATCH_UP,
        "the NOT NULL violation of row 300 in the server log",
        || !log_lines(&pair.subscriber, not_null).is_empty(),
        || pair.explain("s"),
    );
    let st = pair.wait_status("s", "the NOT NULL error", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("not-null") && e.contains("\"v\""))
    });
    assert!(st.last_error.is_some());
    assert!(log_lines(&pair.subscriber, "Failing row contains (").iter().all(|l| l.contains(not_null)), "only row 300");

    // 3. The CHECK violation of row 400.
    pair.sub_exec("ALTER TABLE b ALTER COLUMN v DROP NOT NULL");
    let check = "Failing row contains (400, r400, 5000)";
    wait_or_explain(
        CATCH_UP,
        "the CHECK violation of row 400 in the server log",
        || !log_lines(&pair.subscriber, check).is_empty(),
        || pair.explain("s"),
    );
    pair.wait_status("s", "the CHECK error", |s| s.last_error.as_deref().is_some_and(|e| e.contains("b_small")));

    // 4. Fixed: applied exactly once.
    pair.sub_exec("ALTER TABLE b DROP CONSTRAINT b_small");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM b", "id");
    assert_eq!(count(&mut sub, "b WHERE id <= 600"), 600);
    let records = conflict_log(&mut sub, &of_bad);
    assert!(records.iter().all(|r| plain(r.remote_tuple.as_ref().and_then(|t| t.get("id"))) == "100"), "{records:#?}");
    pair.wait_status("s", "streaming without error", |s| s.state == "streaming" && s.last_error.is_none());
    for table in ["b", "gen"] {
        let multi = multi_insert_records(&pair.subscriber, table, &wal_start);
        assert!(multi > 0, "no multi-insert WAL records into {table} on the subscriber: the batch path was not taken");
    }
}

#[test]
fn buffered_rows_are_converted_as_the_owner_under_a_snapshot() {
    let pair = Pair::start("apply_batching_owner");
    pair.pub_exec(
        "CREATE TABLE o (id int PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE o;",
    );
    // Everything schema-qualified: an untrusted owner's code runs with
    // search_path = pg_catalog, pg_temp.
    pair.sub_exec(
        "CREATE ROLE batch_owner;
         CREATE TABLE public.lookup_src (v int);
         INSERT INTO public.lookup_src VALUES (7);
         CREATE FUNCTION public.looked_up() RETURNS int STABLE LANGUAGE sql
             AS 'SELECT max(v) FROM public.lookup_src';
         CREATE TABLE o (id int PRIMARY KEY, v text, who text DEFAULT current_user,
                         looked int DEFAULT public.looked_up());
         ALTER TABLE public.lookup_src OWNER TO batch_owner;
         ALTER FUNCTION public.looked_up() OWNER TO batch_owner;
         ALTER TABLE o OWNER TO batch_owner;",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let mut sub = pair.sub_client();
    let wal_start = query_string(&mut sub, "SELECT pg_current_wal_insert_lsn()::text");
    pair.pub_exec("INSERT INTO o SELECT g, 'v' || g FROM generate_series(1, 500) g");
    pair.wait_caught_up("s");
    assert_eq!(
        count(&mut sub, "o WHERE who = 'batch_owner' AND looked = 7"),
        500,
        "{:?}",
        rows_text(
            &mut sub,
            "SELECT * FROM o WHERE who IS DISTINCT FROM 'batch_owner' OR looked IS DISTINCT FROM 7 LIMIT 5"
        )
    );
    pair.assert_same("SELECT id, v FROM o", "id");
    assert!(multi_insert_records(&pair.subscriber, "o", &wal_start) > 0, "the batch path was not taken");
    pair.wait_status("s", "streaming without error", |s| s.state == "streaming" && s.last_error.is_none());
}
