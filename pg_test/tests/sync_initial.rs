//! Initial table synchronization (`copy_data => true`): tables are copied,
//! then streamed with no gap and no duplicate; row filters and column lists
//! are honoured; several tables are copied in parallel, never more at once
//! than `logical_ext.max_sync_workers_per_subscription`; a non-empty target
//! is refused with a HINT (and copied once emptied); `resync_table` and
//! `refresh_subscription` copy on demand.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;

fn fill(pair: &Pair, table: &str, n: i64) {
    pair.pub_exec(&format!("INSERT INTO {table} SELECT g, g % 97, md5(g::text), now() FROM generate_series(1, {n}) g"));
}

const T: &str = "(id bigint PRIMARY KEY, k int, t text, ts timestamptz)";

#[test]
fn copies_then_streams_without_gap_or_duplicate() {
    let pair = Pair::start("sync_basic");
    pair.both_exec(&format!("CREATE TABLE a {T}; CREATE TABLE b {T}"));
    fill(&pair, "a", 20_000);
    fill(&pair, "b", 5_000);
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE a, b");
    subscribe_copy(&pair, "s", &["p"], "");
    // Changes right after the slot exists belong to the stream, not the copy.
    pair.pub_exec("INSERT INTO a VALUES (100001, 1, 'after', now()); UPDATE b SET t = 'upd' WHERE id <= 10");
    let states = wait_all_ready(&pair, "s");
    for t in &states {
        assert!(t.started && t.finished && t.sync_lsn.is_some() && t.last_error.is_none(), "{t:#?}");
    }
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["a", "b"]);
    // The copy counted what it moved.
    let a = table(&states, "a");
    assert!((20_000..=20_001).contains(&a.rows_copied), "{a:#?}");
    assert!(a.bytes_copied > 20_000 * 40, "{a:#?}");
    pair.pub_exec(
        "DELETE FROM a WHERE id % 3 = 0; INSERT INTO b SELECT g, 0, 'x', now() FROM generate_series(5001, 6000) g",
    );
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["a", "b"]);
    assert_eq!(pair.wait_streaming("s").state, "streaming");
}

#[test]
fn row_filter_and_column_list_are_respected() {
    let pair = Pair::start("sync_filter");
    pair.pub_exec("CREATE TABLE f (id int PRIMARY KEY, k int, secret text, note text)");
    // The subscriber has no `secret` column, and one of its own.
    pair.sub_exec("CREATE TABLE f (id int PRIMARY KEY, k int, note text, local text DEFAULT 'here')");
    pair.pub_exec("INSERT INTO f SELECT g, g % 10, 'pw' || g, 'n' || g FROM generate_series(1, 3000) g");
    pair.pub_exec("CREATE PUBLICATION pf FOR TABLE f (id, k, note) WHERE (k < 3)");
    subscribe_copy(&pair, "s", &["pf"], "");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    let want = digest(&mut pair.pub_client(), "SELECT id, k, note FROM f WHERE k < 3", "id");
    let got = digest(&mut pair.sub_client(), "SELECT id, k, note FROM f", "id");
    assert_eq!(got, want);
    assert!(want.starts_with("900 "), "{want}");
    assert_eq!(count(&mut pair.sub_client(), "f WHERE local = 'here'"), 900);
    // The stream goes on with the same filter.
    pair.pub_exec("INSERT INTO f VALUES (5001, 1, 'x', 'in'), (5002, 7, 'y', 'out')");
    pair.wait_caught_up("s");
    assert_eq!(
        digest(&mut pair.sub_client(), "SELECT id, k, note FROM f", "id"),
        digest(&mut pair.pub_client(), "SELECT id, k, note FROM f WHERE k < 3", "id")
    );
}

#[test]
fn several_tables_copy_in_parallel_within_the_limit() {
    let pair = Pair::start_with("sync_parallel", &[], &["logical_ext.max_sync_workers_per_subscription = 2"]);
    let names = ["t1", "t2", "t3", "t4"];
    for t in names {
        pair.both_exec(&format!("CREATE TABLE {t} {T}"));
        fill(&pair, t, 150_000);
    }
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    subscribe_copy(&pair, "s", &["p"], "");
    let mut most = 0;
    let mut most_copying = 0;
    wait_or_explain(
        COPY_TIMEOUT,
        "every table is ready",
        || {
            most = most.max(sync_worker_pids(&pair).len());
            let t = try_tables(&pair, "s").unwrap_or_default();
            most_copying = most_copying.max(t.iter().filter(|t| t.state == "copying").count());
            t.len() == 4 && t.iter().all(|t| t.state == "ready")
        },
        || pair.explain("s"),
    );
    assert_eq!(most, 2, "sync workers seen at once (limit 2)");
    assert!(most_copying <= 2, "{most_copying} tables copying at once");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&names);
}

#[test]
fn non_empty_target_is_refused_then_copied_once_emptied() {
    let pair = Pair::start("sync_nonempty");
    // No key: a copy into a filled table with a key merges instead
    // (sync_many_publishers.rs).
    pair.both_exec(&format!(
        "CREATE TABLE full_t (id bigint, k int, t text, ts timestamptz); ALTER TABLE full_t REPLICA IDENTITY FULL;
         CREATE TABLE ok_t {T}"
    ));
    fill(&pair, "full_t", 1000);
    fill(&pair, "ok_t", 1000);
    pair.sub_exec("INSERT INTO full_t VALUES (1, 1, 'local', now())");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    subscribe_copy(&pair, "s", &["p"], "");
    let states = wait_tables(&pair, "s", "full_t in error, ok_t ready", |t| {
        t.len() == 2 && table(t, "full_t").state == "error" && table(t, "ok_t").state == "ready"
    });
    let err = table(&states, "full_t").last_error.clone().unwrap_or_default();
    assert!(err.contains("not empty") && err.contains("SQLSTATE 55000"), "{err}");
    assert!(err.contains("HINT") && err.contains("TRUNCATE") && err.contains("copy_data => false"), "{err}");
    // Nothing was duplicated: the local row is still alone.
    assert_eq!(count(&mut pair.sub_client(), "full_t"), 1);
    let st = pair.status("s");
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("full_t") && e.contains("not empty")), "{st:#?}");
    // Changes of the refused table wait for its copy; other tables stream.
    pair.pub_exec("UPDATE full_t SET t = 'changed' WHERE id <= 5; INSERT INTO ok_t VALUES (5000, 0, 'new', now())");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["ok_t"]);
    assert_eq!(count(&mut pair.sub_client(), "full_t"), 1);
    // Emptied, the table is copied at the next retry.
    pair.sub_exec("TRUNCATE full_t");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["full_t", "ok_t"]);
    assert_eq!(pair.status("s").last_error, None);
}

#[test]
fn resync_table_and_refresh_subscription() {
    let pair = Pair::start("sync_resync");
    pair.both_exec(&format!("CREATE TABLE r {T}; CREATE TABLE later {T}"));
    fill(&pair, "r", 10_000);
    fill(&pair, "later", 3_000);
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE r");
    subscribe_copy(&pair, "s", &["p"], "");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    // The subscriber drifts; resync_table puts it right.
    pair.sub_exec("DELETE FROM r WHERE id % 2 = 0; UPDATE r SET t = 'drift'");
    let mut c = pair.sub_client();
    exec(&mut c, "SELECT logical_ext.resync_table('s', 'r')");
    pair.pub_exec("UPDATE r SET k = -k WHERE id <= 100");
    wait_tables(&pair, "s", "r recopied and ready", |t| {
        t.len() == 1 && t[0].state == "ready" && t[0].rows_copied == 10_000
    });
    pair.pub_exec("INSERT INTO r VALUES (20000, 1, 'after', now())");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["r"]);
    let (code, msg, hint) = expect_error(&mut c, "SELECT logical_ext.resync_table('s', 'later')");
    assert_eq!(code, "42704", "{msg}");
    assert!(hint.contains("refresh_subscription"), "{hint}");

    // A table added to the publication joins with refresh_subscription.
    pair.pub_exec("ALTER PUBLICATION p ADD TABLE later");
    let added: i64 = c.query_one("SELECT logical_ext.refresh_subscription('s')", &[]).unwrap().get(0);
    assert_eq!(added, 1);
    pair.pub_exec("UPDATE later SET t = 'x' WHERE id < 50");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["r", "later"]);
}
