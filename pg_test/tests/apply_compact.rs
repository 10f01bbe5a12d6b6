//! The compact wire format between logical_ext nodes (issue 14, plugin
//! option `compact`, docs/FORMAT.md "Compact documents"):
//! - on the wire (SQL interface): a relation document once per relation and
//!   session, before its first row, and again after that relation's
//!   ALTER TABLE only (another table's change does not re-send it); rows by
//!   position; nulls and unchanged TOAST distinguishable; the bytes per row
//!   against the full documents (printed);
//! - the option is refused (22023) outside a logical_ext subscriber's stream;
//! - through the apply worker: ADD and DROP COLUMN on the publisher between
//!   rows, in one walsender session (the DDL replicated in the stream), and
//!   the subscriber stays exact; the worker asked for the compact documents.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

const PRELOAD: &str = "shared_preload_libraries = 'logical_ext'";

fn docs(client: &mut postgres::Client, slot: &str, compact: bool) -> Vec<String> {
    let sql = format!(
        "SELECT data FROM pg_logical_slot_peek_changes('{slot}', NULL, NULL, 'publication_names', 'p', \
         'include-lsn', 'on', 'include-timestamp', 'on', 'include-types', 'off', 'compact', '{}')",
        if compact { "on" } else { "off" }
    );
    client.query(&sql, &[]).expect("peek").iter().map(|r| r.get::<_, String>(0)).collect()
}

fn action(doc: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(doc).expect("JSON document");
    v["action"].as_str().unwrap_or_default().to_string()
}

#[test]
fn compact_documents_on_the_wire() {
    let c = Cluster::start("compact_wire", &["logical_decoding_work_mem = 64kB"]);
    let mut client = c.client();
    exec(
        &mut client,
        "CREATE TABLE t (id int PRIMARY KEY, a text, b int, big text);
         ALTER TABLE t ALTER big SET STORAGE EXTERNAL;
         CREATE TABLE other (id int PRIMARY KEY);
         CREATE TABLE f (id int, v text);
         ALTER TABLE f REPLICA IDENTITY FULL;
         CREATE PUBLICATION p FOR ALL TABLES;",
    );
    exec(&mut client, "SELECT pg_create_logical_replication_slot('s', 'logical_ext')");
    // The option belongs to logical_ext subscribers' stream only.
    let (code, _, _) = expect_error(
        &mut client,
        "SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'format-version', '2', 'compact', 'on')",
    );
    assert_eq!(code, "22023");

    exec(
        &mut client,
        "INSERT INTO t VALUES (1, 'quote \" backslash \\ newline\n', NULL, repeat('x', 10000));
         INSERT INTO t SELECT g, 'a' || g, g, NULL FROM generate_series(2, 100) g;
         UPDATE t SET b = 7 WHERE id = 1;
         ALTER TABLE other ADD COLUMN c int;
         INSERT INTO other VALUES (1, 1);
         INSERT INTO t VALUES (101, 'after other''s change', 1, NULL);
         ALTER TABLE t DROP COLUMN b;
         INSERT INTO t VALUES (102, 'after drop', NULL);
         ALTER TABLE t ADD COLUMN n numeric DEFAULT 1.5;
         INSERT INTO t VALUES (103, 'after add', NULL, 2.25);
         DELETE FROM t WHERE id = 2;
         INSERT INTO f VALUES (1, 'one'), (NULL, NULL);
         UPDATE f SET v = 'uno' WHERE id = 1;
         DELETE FROM f WHERE id IS NULL;",
    );
    let compact = docs(&mut client, "s", true);
    let full = docs(&mut client, "s", false);
    let rels: Vec<serde_json::Value> =
        compact.iter().filter(|d| action(d) == "R").map(|d| serde_json::from_str(d).unwrap()).collect();
    let of = |t: &str| rels.iter().filter(|r| r["table"] == t).collect::<Vec<_>>();
    // t: once at first, then after its DROP COLUMN and its ADD COLUMN; not
    // after other's ALTER TABLE (per relation, not flush-all).
    let t_rels = of("t");
    assert_eq!(t_rels.len(), 3, "{t_rels:?}");
    assert_eq!(t_rels[0]["names"], serde_json::json!(["id", "a", "b", "big"]));
    assert_eq!(t_rels[0]["identity_key"], serde_json::json!([0]));
    assert_eq!(t_rels[1]["names"], serde_json::json!(["id", "a", "big"]), "dropped column left out");
    assert_eq!(t_rels[2]["names"], serde_json::json!(["id", "a", "big", "n"]));
    assert_eq!(of("other").len(), 1);
    assert_eq!(of("f").len(), 1);
    // The relation document comes before the first row of its relation.
    let first_t_row = compact.iter().position(|d| d.contains("\"relid\"") && action(d) == "I").unwrap();
    let first_r = compact.iter().position(|d| action(d) == "R").unwrap();
    assert!(first_r < first_t_row);

    let rows: Vec<serde_json::Value> = compact
        .iter()
        .filter(|d| matches!(action(d).as_str(), "I" | "U" | "D"))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let full_rows: Vec<&String> = full.iter().filter(|d| matches!(action(d).as_str(), "I" | "U" | "D")).collect();
    assert_eq!(rows.len(), full_rows.len(), "one compact row per full row");
    // Values exactly as the full documents carry them; NULL is null.
    assert_eq!(rows[0]["new"], serde_json::json!([1, "quote \" backslash \\ newline\n", null, "x".repeat(10000)]));
    // The UPDATE left the TOASTed value alone: {} there, the key by itself.
    let upd = rows.iter().find(|r| r["action"] == "U" && r["new"][0] == 1).unwrap();
    assert_eq!(upd["new"], serde_json::json!([1, "quote \" backslash \\ newline\n", 7, {}]));
    assert_eq!(upd["key"], serde_json::json!([1]));
    let after_add = rows.iter().find(|r| r["new"][0] == 103).unwrap();
    assert_eq!(after_add["new"], serde_json::json!([103, "after add", null, "2.25"]));
    // REPLICA IDENTITY FULL: the old row by position.
    let f_del = rows.iter().find(|r| r["action"] == "D" && r.get("old").is_some()).unwrap();
    assert_eq!(f_del["old"], serde_json::json!([null, null]));
    for r in &rows {
        for k in ["lsn", "timestamp", "schema", "table", "columns"] {
            assert!(r.get(k).is_none(), "{k} in {r}");
        }
    }

    // Bytes per row (documents of rows, plus the relation documents).
    let row_bytes = |docs: &[String], with_r: bool| -> usize {
        docs.iter()
            .filter(|d| matches!(action(d).as_str(), "I" | "U" | "D") || (with_r && action(d) == "R"))
            .map(|d| d.len())
            .sum()
    };
    let n = rows.len();
    println!(
        "bytes per row: full {:.0}, compact {:.0} ({:.0} with its relation documents), {} rows",
        row_bytes(&full, false) as f64 / n as f64,
        row_bytes(&compact, false) as f64 / n as f64,
        row_bytes(&compact, true) as f64 / n as f64,
        n
    );
    // The other documents are the full format's, unchanged.
    let others = |d: &[String]| -> Vec<String> {
        d.iter().filter(|x| !matches!(action(x).as_str(), "I" | "U" | "D" | "R")).cloned().collect()
    };
    assert_eq!(others(&compact), others(&full));
    exec(&mut client, "SELECT pg_replication_slot_advance('s', pg_current_wal_lsn())");

    // A streamed transaction's blocks are compact too, and describe their
    // own relations (tagged with the xid, as the spool needs): a relation
    // document of a block does not stand for the session's, so the later
    // ordinary transaction describes t again.
    exec(&mut client, "INSERT INTO t SELECT g, repeat('s', 100), NULL, 2 FROM generate_series(1000, 3000) g");
    exec(&mut client, "INSERT INTO t VALUES (5000, 'after the stream', NULL, 1)");
    let sql = "SELECT data FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'publication_names', 'p', \
               'include-lsn', 'on', 'include-timestamp', 'on', 'include-types', 'off', 'compact', 'on', \
               'streaming', 'on')";
    let streamed: Vec<String> = client.query(sql, &[]).expect("peek").iter().map(|r| r.get(0)).collect();
    let actions: Vec<String> = streamed.iter().map(|d| action(d)).collect();
    let (start, stop) = (
        actions.iter().position(|a| a == "S").expect("the big transaction is streamed"),
        actions.iter().rposition(|a| a == "E").unwrap(),
    );
    for d in &streamed[start..=stop] {
        assert!(matches!(action(d).as_str(), "S" | "E" | "I" | "R"), "{d}");
        if matches!(action(d).as_str(), "I" | "R") {
            assert!(d.contains("\"xid\"") && d.contains("\"relid\"") && !d.contains("\"columns\""), "{d}");
        }
    }
    let block_rels = streamed[start..=stop].iter().filter(|d| action(d) == "R").count();
    assert_eq!(block_rels, 1, "described once in the streamed transaction");
    assert_self_describing(&streamed);
    let last = streamed.iter().rev().find(|d| action(d) == "I").unwrap();
    assert!(last.contains("\"relid\"") && last.contains("after the stream"), "{last}");
    assert!(streamed[stop..].iter().any(|d| action(d) == "R"), "described before its first compact row");
}

/// Every compact row of a streamed block refers to a relation document of
/// the same transaction written after its first block or its last abort
/// (`SA`, which may cut relation documents off with a subtransaction).
fn assert_self_describing(docs: &[String]) {
    let mut described: std::collections::HashMap<u64, std::collections::HashSet<u64>> = Default::default();
    let mut in_block = false;
    for d in docs {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        let xid = v["xid"].as_u64();
        match v["action"].as_str().unwrap_or_default() {
            "S" => {
                in_block = true;
                if v["first"] == true {
                    described.remove(&xid.unwrap());
                }
            }
            "E" => in_block = false,
            "SA" => {
                described.remove(&xid.unwrap());
            }
            "R" if in_block => {
                described.entry(xid.expect("xid on a block's R")).or_default().insert(v["relid"].as_u64().unwrap());
            }
            "I" | "U" | "D" if in_block => {
                assert!(v.get("columns").is_none(), "compact rows in blocks: {d}");
                let (x, rel) = (xid.expect("xid in a block"), v["relid"].as_u64().unwrap());
                assert!(described.get(&x).is_some_and(|s| s.contains(&rel)), "described in its own transaction: {d}");
            }
            _ => {}
        }
    }
}

/// A streamed transaction over three tables in the compact format, through
/// the worker: a small transaction and an ALTER TABLE ADD COLUMN (DDL
/// replication) commit between its blocks (the eager apply falls back and
/// the spool is replayed at the commit, after the session's relation
/// documents changed), subtransaction aborts cut relation documents off
/// (the publisher describes the relation again), and a second streamed
/// transaction is applied while it arrives over a subtransaction abort.
/// Exact, and the blocks are compact and self-describing (a second slot).
#[test]
fn streamed_transactions_compact_and_exact() {
    let pair = Pair::start_with("compact_streamed", &[PRELOAD, "logical_decoding_work_mem = 64kB"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec(
        "CREATE SCHEMA app;
         CREATE TABLE app.t (id int PRIMARY KEY, v text);
         CREATE TABLE app.log (id int, v text);
         CREATE TABLE app.small (id int PRIMARY KEY, v text);",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA app");
    pair.pub_exec("SELECT pg_create_logical_replication_slot('peek', 'logical_ext')");
    pair.subscribe_streaming("");
    // The session describes every table in ordinary transactions first.
    pair.pub_exec(
        "INSERT INTO app.t VALUES (0, 'zero'); INSERT INTO app.small VALUES (0, 'zero');
         INSERT INTO app.log VALUES (0, 'zero');",
    );
    pair.wait_caught_up("s");

    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "INSERT INTO app.log SELECT g, 'l' || g FROM generate_series(1, 5000) g;
         SAVEPOINT a;
         INSERT INTO app.small SELECT g, 'cut' || g FROM generate_series(1000, 2999) g;
         ROLLBACK TO SAVEPOINT a;",
    )
    .unwrap();
    pair.pub_exec(
        "ALTER TABLE app.t ADD COLUMN extra int DEFAULT 7;
         INSERT INTO app.t VALUES (100000, 'interleaved', 8);
         INSERT INTO app.small VALUES (1, 'interleaved');",
    );
    tx.batch_execute(
        "INSERT INTO app.small SELECT g, 'kept' || g FROM generate_series(2000, 3999) g;
         INSERT INTO app.t SELECT g, 't' || g FROM generate_series(1, 3000) g;
         SAVEPOINT b;
         UPDATE app.t SET v = 'gone' WHERE id <= 1000;
         ROLLBACK TO SAVEPOINT b;
         UPDATE app.t SET extra = 9 WHERE id % 2 = 0;
         DELETE FROM app.small WHERE id % 3 = 0;
         INSERT INTO app.log SELECT g, 'l' || g FROM generate_series(5001, 8000) g;",
    )
    .unwrap();
    tx.commit().unwrap();
    pair.pub_exec("INSERT INTO app.t VALUES (200000, 'after', 9)");

    // Applied while it arrives: nothing interleaves.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "SAVEPOINT c;
         INSERT INTO app.t SELECT g, 'cut' || g FROM generate_series(300000, 302999) g;
         ROLLBACK TO SAVEPOINT c;
         INSERT INTO app.t SELECT g, 'second' || g, g FROM generate_series(303000, 305999) g;
         UPDATE app.small SET v = 'second' WHERE id < 2500;
         INSERT INTO app.log SELECT g, 'l' || g FROM generate_series(8001, 12000) g;",
    )
    .unwrap();
    tx.commit().unwrap();
    pair.pub_exec("INSERT INTO app.small VALUES (5, 'last')");

    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM app.t", "id");
    pair.assert_same("SELECT * FROM app.small", "id");
    pair.assert_same("SELECT * FROM app.log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "app.log"), 12_001);

    let mut client = pair.pub_client();
    let sql = "SELECT data FROM pg_logical_slot_peek_changes('peek', NULL, NULL, 'publication_names', 'p', \
               'compact', 'on', 'streaming', 'on')";
    let docs: Vec<String> = client.query(sql, &[]).expect("peek").iter().map(|r| r.get(0)).collect();
    let actions: Vec<String> = docs.iter().map(|d| action(d)).collect();
    assert!(actions.iter().filter(|a| *a == "SC").count() >= 2, "both large transactions are streamed");
    assert!(actions.iter().any(|a| a == "SA"), "a subtransaction abort in a streamed block");
    assert_self_describing(&docs);
}

/// One walsender session: the schema changes while rows flow, through DDL
/// replication, and the subscriber stays exact.
#[test]
fn alter_table_between_rows_in_one_session() {
    let pair = Pair::start_with("compact_alter", &[PRELOAD, "log_replication_commands = on"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec(
        "CREATE SCHEMA app;
         CREATE TABLE app.t (id int PRIMARY KEY, a text, b int, big text);
         ALTER TABLE app.t ALTER big SET STORAGE EXTERNAL;
         CREATE TABLE app.f (id int, v text);
         ALTER TABLE app.f REPLICA IDENTITY FULL;",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA app");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let walsender = || -> i32 {
        pair.pub_client()
            .query_one("SELECT pid FROM pg_stat_replication WHERE application_name = 's'", &[])
            .map(|r| r.get(0))
            .unwrap_or(0)
    };
    let before = walsender();
    assert!(before != 0);

    pair.pub_exec(
        "INSERT INTO app.t SELECT g, 'a' || g, g, CASE WHEN g % 10 = 0 THEN repeat('x', 5000) END
           FROM generate_series(1, 100) g;
         INSERT INTO app.f VALUES (1, 'one'), (2, NULL), (NULL, NULL);",
    );
    // Between rows of one transaction, and between transactions.
    pair.pub_exec(
        "BEGIN;
         UPDATE app.t SET a = 'before drop' WHERE id = 10;
         ALTER TABLE app.t DROP COLUMN b;
         INSERT INTO app.t VALUES (101, 'after drop', NULL);
         UPDATE app.t SET a = 'toast kept' WHERE id = 20;
         COMMIT;",
    );
    pair.pub_exec("ALTER TABLE app.t ADD COLUMN n numeric DEFAULT 1.5");
    pair.pub_exec(
        "INSERT INTO app.t VALUES (102, 'after add', NULL, 2.25);
         UPDATE app.t SET n = n * 2 WHERE id % 3 = 0;
         DELETE FROM app.t WHERE id % 7 = 0;
         UPDATE app.f SET v = 'uno' WHERE id = 1;
         DELETE FROM app.f WHERE id IS NULL;",
    );
    pair.pub_exec(
        "BEGIN;
         ALTER TABLE app.t ADD COLUMN late text;
         INSERT INTO app.t VALUES (103, 'late', NULL, 3, 'late value');
         ALTER TABLE app.t DROP COLUMN n;
         INSERT INTO app.t VALUES (104, 'last', NULL, 'last value');
         COMMIT;",
    );
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM app.t", "id");
    pair.assert_same("SELECT * FROM app.f", "t::text");
    assert_eq!(walsender(), before, "one walsender session throughout");
    let log = std::fs::read_to_string(pair.publisher.log_path()).unwrap_or_default();
    assert!(log.contains("\"compact\" 'on'"), "the worker asked for the compact documents");
    let sub_log = std::fs::read_to_string(pair.subscriber.log_path()).unwrap_or_default();
    assert!(!sub_log.contains("does not offer the compact format"), "no fallback");
}

/// The fallback, for real: a publisher slot whose plugin refuses the worker's
/// options with SQLSTATE 22023, as an older logical_ext refuses `compact`
/// (here test_decoding, which refuses every option of ours with 22023;
/// pgoutput's XX000 would not count). The worker retries at once without
/// the newest option, `owner` (slot ownership, 0.4.0), then without `batch`,
/// then without `compact`, on the same connection, says so once each,
/// remembers it, and reports the error that remains as before.
#[test]
fn refused_compact_falls_back_once() {
    let pair = Pair::start_with("compact_fallback", &["log_replication_commands = on"], &[]);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.pub_exec("SELECT pg_create_logical_replication_slot('other_plugin', 'test_decoding')");
    pair.subscribe("s", &["p"], ", slot_name => 'other_plugin', create_slot => false");
    let st = pair.wait_status("s", "an error from the publisher", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("could not start replication"))
    });
    let error = st.last_error.unwrap_or_default();
    assert!(error.contains("is unknown"), "the error that remains is reported: {error}");
    // Retried (FAST_RETRY) a few times: each fallback was logged once.
    let publog = || std::fs::read_to_string(pair.publisher.log_path()).unwrap_or_default();
    wait_until(CATCH_UP, "five attempts", || {
        publog().lines().filter(|l| l.contains("received replication command: START_REPLICATION")).count() >= 5
    });
    let starts: Vec<String> = publog()
        .lines()
        .filter(|l| l.contains("received replication command: START_REPLICATION"))
        .map(str::to_string)
        .collect();
    assert!(
        starts[0].contains("\"compact\" 'on', \"batch\" 'on'") && starts[0].contains("\"owner\""),
        "asked first: {starts:?}"
    );
    assert!(
        starts[1].contains("\"compact\" 'on', \"batch\" 'on'") && !starts[1].contains("owner"),
        "then without owner: {starts:?}"
    );
    assert!(starts[2].contains("\"compact\" 'on'") && !starts[2].contains("batch"), "then without batch: {starts:?}");
    assert!(!starts[3].contains("compact"), "then without compact: {starts:?}");
    assert!(starts[4..].iter().all(|s| !s.contains("compact") && !s.contains("owner")), "remembered: {starts:?}");
    let sub_log = std::fs::read_to_string(pair.subscriber.log_path()).unwrap_or_default();
    assert_eq!(sub_log.matches("does not take the owner option").count(), 1, "logged once");
    assert_eq!(sub_log.matches("does not offer batched compact documents").count(), 1, "logged once");
    assert_eq!(sub_log.matches("does not offer the compact format").count(), 1, "logged once");
}

/// Option `batch` (with `compact`): the row documents of a transaction
/// leave several to a message (ASCII record separator, then each document
/// as 8 hexadecimal digits of length and its bytes, at most ~64 kB a
/// message), every other document alone and in its place; unpacked, the
/// stream is exactly the compact one. Without `compact` it is refused.
#[test]
fn batched_rows_unpack_to_the_compact_stream() {
    let c = Cluster::start("compact_batch", &[]);
    let mut client = c.client();
    exec(
        &mut client,
        "CREATE TABLE t (id int PRIMARY KEY, a text); CREATE TABLE u (id int PRIMARY KEY);
         CREATE PUBLICATION p FOR ALL TABLES;",
    );
    exec(&mut client, "SELECT pg_create_logical_replication_slot('s', 'logical_ext')");
    let (code, _, _) = expect_error(
        &mut client,
        "SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'publication_names', 'p', 'batch', 'on')",
    );
    assert_eq!(code, "22023", "batch needs compact");
    exec(
        &mut client,
        "BEGIN; INSERT INTO t SELECT g, repeat('a', g % 50) FROM generate_series(1, 3000) g;
         INSERT INTO u VALUES (1); UPDATE t SET a = 'x' WHERE id <= 10; DELETE FROM t WHERE id = 3000; COMMIT;
         INSERT INTO u VALUES (2);",
    );
    let compact = docs(&mut client, "s", true);
    let batched: Vec<String> = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'publication_names', 'p', \
             'include-lsn', 'on', 'include-timestamp', 'on', 'include-types', 'off', 'compact', 'on', 'batch', 'on')",
            &[],
        )
        .expect("peek")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let mut unpacked = Vec::new();
    let mut batches = 0;
    for m in &batched {
        let Some(mut rest) = m.strip_prefix('\u{1e}') else {
            assert!(m.starts_with('{'), "a single document: {m}");
            unpacked.push(m.clone());
            continue;
        };
        batches += 1;
        assert!(m.len() <= (64 << 10) + 4096, "a batch is about 64 kB at most: {}", m.len());
        while !rest.is_empty() {
            let len = usize::from_str_radix(&rest[..8], 16).expect("hexadecimal length");
            let doc = &rest[8..8 + len];
            assert!(matches!(action(doc).as_str(), "I" | "U" | "D"), "only rows are batched: {doc}");
            unpacked.push(doc.to_string());
            rest = &rest[8 + len..];
        }
    }
    assert!(batches >= 2, "3,000 rows take more than one 64 kB batch: {batches}");
    assert!(batched.len() < compact.len() / 50, "{} messages for {} documents", batched.len(), compact.len());
    assert_eq!(unpacked, compact, "unpacked, the batched stream is the compact one");
}
