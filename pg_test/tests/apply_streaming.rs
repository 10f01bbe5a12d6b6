//! Streamed transactions end to end (subscription option `streaming`,
//! issue 14): a transaction larger than the publisher's
//! `logical_decoding_work_mem` reaches the subscriber while it is still in
//! progress (spooled under base/pgsql_tmp), is applied exactly at its
//! commit, a rolled-back subtransaction and a whole abort leave nothing,
//! and an immediate stop of the subscriber in the middle of a streamed
//! transaction or of its replay loses and duplicates nothing. These tests
//! spool (`streaming_eager` off); apply_streaming_eager.rs has the
//! transactions applied while they arrive, the default.
//! Spec: docs/SYNC.md "Large transactions", docs/FORMAT.md "Streamed transactions".

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

const PUB_CONF: &[&str] = &["logical_decoding_work_mem = 64kB"];

fn pair(name: &str) -> Pair {
    let pair = Pair::start_with(name, PUB_CONF, &[]);
    // `log` has no key: a transaction applied twice would show twice.
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE log (id int, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe_streaming(r#", "streaming_eager": false"#);
    pair
}

/// Waits until the subscriber has spooled more than `bytes` of an open
/// streamed transaction.
fn wait_spooled(pair: &Pair, bytes: u64) {
    wait_or_explain(
        CATCH_UP,
        &format!("more than {bytes} bytes of the open transaction spooled on the subscriber"),
        || pair.spooled_bytes() > bytes,
        || pair.explain("s"),
    );
}

fn insert(tx: &mut impl postgres::GenericClient, table: &str, from: i32, to: i32) {
    tx.batch_execute(&format!("INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series({from}, {to}) g"))
        .unwrap();
}

/// The publisher's streaming statistics of the subscription's slot:
/// (stream_txns, spill_txns).
fn slot_stats(pair: &Pair) -> (i64, i64) {
    let row = pair
        .pub_client()
        .query_one(
            "SELECT coalesce(sum(stream_txns), 0)::bigint, coalesce(sum(spill_txns), 0)::bigint \
             FROM pg_stat_replication_slots",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// The large transaction is received (spooled) before its commit, nothing
/// of it is visible until then (a small transaction committed meanwhile is),
/// and after the commit the table is exact and
/// the spool is empty. The publisher streamed it rather than spilling it.
#[test]
fn large_transaction_streamed_and_applied_exactly() {
    let pair = pair("apply_stream_large");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "t", 1, 30_000);
    insert(&mut tx, "log", 1, 30_000);
    tx.batch_execute("UPDATE t SET v = 'updated' WHERE id % 10 = 0; DELETE FROM t WHERE id % 7 = 0").unwrap();
    // Decoding reads flushed WAL only; the open transaction flushes none.
    pair.pub_exec("CHECKPOINT");
    wait_spooled(&pair, 1 << 20);
    assert_eq!(count(&mut pair.sub_client(), "t"), 0, "nothing visible before the commit");
    // A small transaction committing between two blocks is applied at once.
    pair.pub_exec("INSERT INTO t VALUES (-1, 'small')");
    wait_or_explain(
        CATCH_UP,
        "the small transaction is applied while the large one is open",
        || count(&mut pair.sub_client(), "t") == 1,
        || pair.explain("s"),
    );
    insert(&mut tx, "t", 30_001, 40_000);
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 30_000);
    assert!(pair.spool_files().is_empty(), "the spool file is removed after the commit: {:?}", pair.spool_files());
    let (streamed, spilled) = slot_stats(&pair);
    assert!(streamed >= 1, "the publisher streamed the transaction (stream_txns {streamed})");
    assert_eq!(spilled, 0, "and spilled nothing to disk");
}

/// A rolled-back subtransaction inside a streamed transaction, and a
/// streamed transaction that aborts after the subscriber spooled part of it:
/// only the committed rows arrive, and the aborted transaction's file goes.
#[test]
fn subtransaction_and_whole_aborts() {
    let pair = pair("apply_stream_aborts");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 1, 10_000);
    tx.batch_execute("SAVEPOINT a").unwrap();
    insert(&mut tx, "log", 10_001, 20_000);
    pair.pub_exec("CHECKPOINT");
    wait_spooled(&pair, 1 << 20);
    tx.batch_execute("ROLLBACK TO SAVEPOINT a").unwrap();
    insert(&mut tx, "log", 20_001, 25_000);
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 15_000);
    let rolled_back: i64 =
        pair.sub_client().query_one("SELECT count(*) FROM log WHERE id BETWEEN 10001 AND 20000", &[]).unwrap().get(0);
    assert_eq!(rolled_back, 0, "rows of the rolled-back subtransaction were applied");

    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 100_001, 130_000);
    pair.pub_exec("CHECKPOINT");
    wait_spooled(&pair, 1 << 20);
    tx.rollback().unwrap();
    pair.pub_exec("INSERT INTO log VALUES (0, 'after')");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 15_001);
    assert!(pair.spool_files().is_empty(), "the aborted transaction's file is removed: {:?}", pair.spool_files());
}

/// Immediate stop of the subscriber while a streamed transaction is open
/// (part of it spooled), then while its replay is being applied, then right
/// after its local commit: every time the table ends exactly as on the
/// publisher (a keyless table: nothing applied twice), and no spool file is
/// left behind.
#[test]
fn subscriber_killed_during_streamed_transaction() {
    let mut pair = pair("apply_stream_kill");
    let mut c = pair.pub_client();

    // 1. In the middle of the streamed transaction.
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 1, 30_000);
    pair.pub_exec("CHECKPOINT");
    wait_spooled(&pair, 1 << 20);
    pair.subscriber.stop_with("immediate");
    insert(&mut tx, "log", 30_001, 40_000);
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    insert(&mut tx, "log", 40_001, 50_000);
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 50_000);
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());

    // 2. While the committed transaction is being applied: for more than
    // two feedback intervals (the worker's feedback keeper speaks every
    // second during long local work), the publisher must not have been told
    // the transaction is flushed, or the stop below would lose it.
    let slot = pair.status("s").slot_name.expect("the subscription's slot");
    // The replay lasts at least 8 s however fast this machine applies: one
    // row of it waits in a trigger (fired by the apply worker: ALWAYS).
    // The checks below run once it has lasted 2.5 s and must see it still
    // uncommitted: 8 s leaves a loaded machine seconds for them.
    pair.sub_exec(
        "CREATE FUNCTION public.slow_row() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN IF NEW.id = 150000 THEN PERFORM pg_catalog.pg_sleep(8); END IF; RETURN NEW; END$$; \
         CREATE TRIGGER slow_row BEFORE INSERT ON public.log FOR EACH ROW EXECUTE FUNCTION public.slow_row(); \
         ALTER TABLE public.log ENABLE ALWAYS TRIGGER slow_row",
    );
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 100_001, 200_000);
    tx.commit().unwrap();
    let commit_end = pair.publisher_flush_lsn();
    let worker = pair.wait_applying("s", "log");
    wait_or_explain(
        CATCH_UP,
        "the worker has been applying the streamed transaction for 2.5 s",
        || {
            pair.sub_client()
                .query_one(
                    "SELECT coalesce(bool_or(now() - xact_start > interval '2.5 s'), false) FROM pg_stat_activity \
                     WHERE pid = $1",
                    &[&worker],
                )
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        },
        || pair.explain("s"),
    );
    let confirmed = pair.confirmed_flush(&slot).unwrap_or(0);
    assert!(count(&mut pair.sub_client(), "log") == 50_000, "the replay had not committed yet");
    assert!(
        confirmed < commit_end,
        "the publisher was told the streamed transaction is flushed ({}) while it was still being applied \
         (its commit ends before {})",
        format_lsn(confirmed),
        format_lsn(commit_end)
    );
    pair.subscriber.stop_with("immediate");
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 150_000);

    // 3. Right after the local commit of a streamed transaction.
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 300_001, 330_000);
    tx.commit().unwrap();
    wait_or_explain(
        CATCH_UP,
        "the streamed transaction is applied",
        || count(&mut pair.sub_client(), "log") == 180_000,
        || pair.explain("s"),
    );
    pair.subscriber.stop_with("immediate");
    pair.subscriber.restart();
    pair.wait_subscriber_up();
    pair.pub_exec("INSERT INTO log VALUES (0, 'after')");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 180_001);
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
    let (streamed, _) = slot_stats(&pair);
    assert!(streamed >= 3, "the publisher streamed the transactions (stream_txns {streamed})");
}

/// DDL inside a streamed transaction (the publisher captures DDL): a
/// statement rolled back to a savepoint is never replayed, even when it is
/// the first change of its subtransaction (its `ddl_log` row and message
/// carry that subtransaction's `subxid`); a statement of the committed part
/// is replayed once, and the rows are exact.
#[test]
fn ddl_rolled_back_to_a_savepoint_is_not_replayed() {
    let pair = Pair::start_with(
        "apply_stream_ddl",
        &["shared_preload_libraries = 'logical_ext'", "logical_decoding_work_mem = 64kB"],
        &[],
    );
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec("CREATE SCHEMA app; CREATE TABLE app.log (id int, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA app");
    pair.subscribe_streaming("");

    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "app.log", 1, 100);
    tx.batch_execute("ALTER TABLE app.log ADD COLUMN kept int").unwrap();
    // The DDL is the first change of savepoint a; the rows after it make
    // the publisher stream the block holding it before the rollback (the
    // worker applies it in an internal subtransaction of its own, which
    // takes an xid: applied while it arrives, the default).
    tx.batch_execute("SAVEPOINT a; ALTER TABLE app.log ADD COLUMN gone int").unwrap();
    insert(&mut tx, "app.log", 10_001, 30_000);
    pair.pub_exec("CHECKPOINT");
    wait_or_explain(
        CATCH_UP,
        "the worker applies the savepoint's DDL in a subtransaction of its own",
        || {
            pair.sub_client()
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN logical_ext.subscription_status s \
                     ON l.pid = s.worker_pid AND s.name = 's' WHERE l.locktype = 'transactionid' AND l.granted",
                    &[],
                )
                .map(|r| r.get::<_, i64>(0) >= 2)
                .unwrap_or(false)
        },
        || pair.explain("s"),
    );
    tx.batch_execute("ROLLBACK TO SAVEPOINT a").unwrap();
    insert(&mut tx, "app.log", 20_001, 25_000);
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    let (streamed, _) = slot_stats(&pair);
    assert!(streamed > 0, "the transaction was streamed");

    let columns = |client: &mut postgres::Client| -> Vec<String> {
        client
            .query(
                "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = 'app.log'::regclass \
                 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(columns(&mut pair.pub_client()), ["id", "v", "kept"]);
    assert_eq!(
        columns(&mut pair.sub_client()),
        ["id", "v", "kept"],
        "the subscriber replayed exactly the publisher's committed DDL"
    );
    pair.assert_same("SELECT id, v, kept FROM app.log", "id, v, kept");
    assert_eq!(count(&mut pair.sub_client(), "app.log"), 5_100);
}
