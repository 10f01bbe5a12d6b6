//! Streamed transactions applied while they arrive (subscription options
//! `streaming` and `streaming_eager`, issue 14; src/apply/worker/eager.rs):
//! the apply worker writes a large transaction's rows while the publisher's
//! transaction is still open (seen in `pg_locks`: the worker holds the
//! target table's row-exclusive lock, and the xid locks of its internal
//! subtransactions), and the result is exact after subtransaction aborts,
//! when another transaction interleaves (fallback to the replay at the
//! commit), when the whole transaction aborts, and after a kill -9.
//! Spec: docs/SYNC.md "Large transactions".

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::time::Duration;

const PUB_CONF: &[&str] = &["logical_decoding_work_mem = 64kB"];

/// How long the worker may take to start applying a block it received.
const EAGER_WAIT: Duration = Duration::from_secs(60);

fn pair(name: &str) -> Pair {
    pair_with(name, "")
}

/// [`pair`] with more subscription options (`, "key": value`).
fn pair_with(name: &str, options: &str) -> Pair {
    let pair = Pair::start_with(name, PUB_CONF, &[]);
    // `log` has no key: a row applied twice would show twice.
    pair.both_exec(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE log (id int, v text); \
         CREATE TABLE small (id int PRIMARY KEY, v text)",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe_streaming(options);
    pair
}

fn insert(tx: &mut impl postgres::GenericClient, table: &str, from: i32, to: i32) {
    tx.batch_execute(&format!("INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series({from}, {to}) g"))
        .unwrap();
}

/// Locks the subscription's worker holds: (row-exclusive on `table`,
/// transaction ids). `None` when the worker is not running.
fn worker_locks(pair: &Pair, table: &str) -> Option<(bool, i64)> {
    let mut c = try_client(&pair.subscriber).ok()?;
    let row = c
        .query_one(
            "SELECT s.worker_pid, \
                    coalesce(bool_or(l.locktype = 'relation' AND l.relation = $1::text::regclass \
                                     AND l.mode = 'RowExclusiveLock'), false), \
                    count(*) FILTER (WHERE l.locktype = 'transactionid') \
             FROM logical_ext.subscription_status s LEFT JOIN pg_locks l ON l.pid = s.worker_pid AND l.granted \
             WHERE s.name = 's' GROUP BY s.worker_pid",
            &[&table],
        )
        .ok()?;
    row.get::<_, Option<i32>>(0)?;
    Some((row.get(1), row.get(2)))
}

/// Waits until the worker writes `table` in a transaction of its own while
/// the publisher's transaction is still open: it applies it eagerly.
/// Rows `from..=to` into `log` in the open publisher transaction `tx`,
/// flushed so the publisher streams them; waits until the worker applies
/// the transaction while it arrives (returns the worker's pid).
fn stream_eagerly(pair: &Pair, tx: &mut impl postgres::GenericClient, from: i32, to: i32) -> i32 {
    insert(tx, "log", from, to);
    pair.pub_exec("CHECKPOINT");
    wait_eager(pair, "log")
}

/// Asserts that `conflict_log` holds exactly one record for `public.t`, of
/// `kind` resolved by `resolution`, naming a commit LSN at or after
/// `commit_lsn` (an LSN read inside the transaction); returns that LSN.
fn the_one_conflict_of_t(pair: &Pair, kind: &str, resolution: &str, commit_lsn: &str) -> String {
    let rows = pair
        .sub_client()
        .query(
            "SELECT conflict_type, resolution, remote_commit_lsn::text FROM logical_ext.conflict_log \
             WHERE relation = 'public.t'",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "the conflict is recorded once");
    assert_eq!(rows[0].get::<_, String>(0), kind);
    assert_eq!(rows[0].get::<_, String>(1), resolution);
    let lsn: Option<String> = rows[0].get(2);
    let lsn = lsn.expect("the record names the transaction's commit LSN");
    assert!(parse_lsn(&lsn) >= parse_lsn(commit_lsn), "commit LSN {lsn} is the commit's (after {commit_lsn})");
    lsn
}

fn wait_eager(pair: &Pair, table: &str) -> i32 {
    wait_or_explain(
        EAGER_WAIT,
        &format!("the worker applies the open streamed transaction (holds a lock on {table})"),
        || worker_locks(pair, table).is_some_and(|(writing, _)| writing),
        || pair.explain("s"),
    );
    pair.worker_pid("s")
}

/// Waits until the worker holds no lock on `table`: no local transaction
/// of the streamed one is open (it fell back to the replay at the commit).
fn wait_not_writing(pair: &Pair, table: &str) {
    wait_or_explain(
        EAGER_WAIT,
        &format!("the worker rolled its eager transaction back (no lock on {table})"),
        || worker_locks(pair, table).is_some_and(|(writing, _)| !writing),
        || pair.explain("s"),
    );
}

/// The large transaction's rows are written on the subscriber while the
/// publisher's transaction is still open (and invisible until its commit),
/// a TRUNCATE inside it is applied in its local transaction, nothing of it
/// is spooled, and after the commit the tables are exact and the worker's
/// local transaction had been open since before the publisher's commit.
#[test]
fn applied_while_it_arrives() {
    let pair = pair("apply_eager_large");
    pair.pub_exec("INSERT INTO t SELECT g, 'old' FROM generate_series(-100, -1) g");
    pair.wait_caught_up("s");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "t", 1, 30_000);
    insert(&mut tx, "log", 1, 30_000);
    // Decoding reads flushed WAL only; the open transaction flushes none.
    pair.pub_exec("CHECKPOINT");
    let worker = wait_eager(&pair, "t");
    assert_eq!(count(&mut pair.sub_client(), "t"), 100, "nothing visible before the commit");
    assert!(pair.spool_files().is_empty(), "applied while it arrives, not spooled: {:?}", pair.spool_files());
    let xact_start: String = pair
        .sub_client()
        .query_one("SELECT xact_start::text FROM pg_stat_activity WHERE pid = $1", &[&worker])
        .unwrap()
        .get(0);
    tx.batch_execute("UPDATE t SET v = 'updated' WHERE id % 10 = 0; DELETE FROM t WHERE id % 7 = 0").unwrap();
    insert(&mut tx, "log", 30_001, 40_000);
    // Last: the publisher's walsender waits for the TRUNCATE's lock on `t`
    // until the commit (it does with the spool-only worker too).
    tx.batch_execute("TRUNCATE t; INSERT INTO t SELECT g, 'new' FROM generate_series(100001, 100500) g").unwrap();
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    assert_eq!(count(&mut pair.sub_client(), "t"), 500);
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 40_000);
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
    // The rows were committed by the local transaction seen open above.
    let committed_in_it: bool = pair
        .sub_client()
        .query_one(
            "SELECT pg_catalog.pg_xact_commit_timestamp(xmin) >= $1::text::timestamptz FROM log LIMIT 1",
            &[&xact_start],
        )
        .map(|r| r.get::<_, Option<bool>>(0).unwrap_or(true))
        .unwrap_or(true);
    assert!(committed_in_it);
}

/// Subtransactions inside the eagerly applied transaction: ROLLBACK TO
/// SAVEPOINT (nested savepoints, a released one inside a rolled-back one),
/// PL/pgSQL exception blocks that fail and that succeed, an UPDATE and a
/// DELETE rolled back: the worker keeps applying (internal subtransactions,
/// seen as xid locks; no fallback) and the result is exact.
#[test]
fn subtransaction_aborts_are_exact() {
    let pair = pair("apply_eager_subxacts");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 1, 5_000);
    insert(&mut tx, "t", 1, 5_000);
    tx.batch_execute("SAVEPOINT a").unwrap();
    insert(&mut tx, "log", 5_001, 10_000);
    tx.batch_execute("SAVEPOINT b").unwrap();
    insert(&mut tx, "log", 10_001, 15_000);
    tx.batch_execute("UPDATE t SET v = 'gone' WHERE id <= 2000; DELETE FROM t WHERE id > 4000").unwrap();
    tx.batch_execute("RELEASE b").unwrap();
    pair.pub_exec("CHECKPOINT");
    wait_eager(&pair, "log");
    wait_or_explain(
        EAGER_WAIT,
        "the worker applies the subtransactions in nested internal subtransactions of its own",
        || worker_locks(&pair, "log").is_some_and(|(_, xids)| xids >= 3),
        || pair.explain("s"),
    );
    tx.batch_execute("ROLLBACK TO SAVEPOINT a").unwrap();
    insert(&mut tx, "log", 15_001, 20_000);
    pair.pub_exec("CHECKPOINT");
    // The subtransaction aborts arrived: the worker rolled both savepoints
    // back and is still in the same transaction, where the rows after
    // ROLLBACK TO (a new subtransaction of savepoint a) have a new one.
    wait_or_explain(
        EAGER_WAIT,
        "the worker rolls back to the savepoint of the aborted subtransaction",
        || worker_locks(&pair, "log") == Some((true, 2)),
        || format!("worker locks: {:?}\n{}", worker_locks(&pair, "log"), pair.explain("s")),
    );
    tx.batch_execute(
        "DO $$BEGIN \
           BEGIN INSERT INTO public.log SELECT g, 'exc ' || g FROM generate_series(20001, 25000) g; \
                 RAISE EXCEPTION 'undo'; \
           EXCEPTION WHEN raise_exception THEN NULL; END; \
           BEGIN INSERT INTO public.log SELECT g, 'kept ' || g FROM generate_series(25001, 26000) g; \
           EXCEPTION WHEN others THEN NULL; END; \
         END$$",
    )
    .unwrap();
    tx.batch_execute("SAVEPOINT c").unwrap();
    insert(&mut tx, "log", 30_001, 35_000);
    tx.batch_execute("ROLLBACK TO SAVEPOINT c").unwrap();
    insert(&mut tx, "log", 40_001, 45_000);
    pair.pub_exec("CHECKPOINT");
    // Still the same eager transaction (subtransaction aborts do not fall
    // back): the top level, savepoint a's second subtransaction, the
    // exception block that succeeded and savepoint c's second one.
    wait_or_explain(
        EAGER_WAIT,
        "the worker holds the savepoints of the subtransactions that were kept, and no other",
        || worker_locks(&pair, "log") == Some((true, 4)),
        || format!("worker locks: {:?}\n{}", worker_locks(&pair, "log"), pair.explain("s")),
    );
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    pair.assert_same_tables(&["t"]);
    assert_eq!(count(&mut pair.sub_client(), "log"), 5_000 + 5_000 + 1_000 + 5_000);
    assert_eq!(count(&mut pair.sub_client(), "t"), 5_000);
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
}

/// A small transaction committing between two blocks of the eagerly
/// applied one (not spooled): the worker rolls the eager transaction back
/// and ends its session; the next one receives the large transaction again
/// from its first block and spools it, applies the small one at once (it
/// committed first), and the large one at its commit from the spool; both
/// exact.
#[test]
fn interleaved_transaction_falls_back() {
    let pair = pair("apply_eager_interleaved");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    stream_eagerly(&pair, &mut tx, 1, 20_000);
    assert!(pair.spool_files().is_empty(), "applied while it arrives, not spooled: {:?}", pair.spool_files());
    pair.pub_exec("INSERT INTO small VALUES (1, 'small')");
    wait_or_explain(
        EAGER_WAIT,
        "the small transaction is applied while the large one is open",
        || count(&mut pair.sub_client(), "small") == 1,
        || pair.explain("s"),
    );
    wait_not_writing(&pair, "log");
    assert_eq!(count(&mut pair.sub_client(), "log"), 0, "nothing of the large transaction is visible yet");
    // The publisher decodes the large transaction again from the slot's
    // restart point, but streams an open transaction only once it decodes a
    // change past the point the session started from (the slot's confirmed
    // position, which may already lie past every row written so far and
    // past the small transaction's INSERT): until then it keeps it in memory
    // or spills it. More rows are that change.
    insert(&mut tx, "log", 20_001, 30_000);
    pair.pub_exec("CHECKPOINT");
    // Received again: its 30,000 rows are spooled (~1.2 MB), and the worker
    // does not write the table while they arrive.
    wait_or_explain(
        EAGER_WAIT,
        "the large transaction is received again and spooled",
        || pair.spooled_bytes() > 900_000,
        || pair.explain("s"),
    );
    assert!(worker_locks(&pair, "log").is_some_and(|(writing, _)| !writing), "spooled only, not applied eagerly");
    assert_eq!(count(&mut pair.sub_client(), "log"), 0);
    tx.commit().unwrap();
    pair.pub_exec("INSERT INTO small VALUES (2, 'after')");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    pair.assert_same_tables(&["small"]);
    assert_eq!(count(&mut pair.sub_client(), "log"), 30_000);
    // Commit order: the small transaction's local transaction came before
    // the large one's (the worker applies one local transaction at a time,
    // so local xid order is its commit order; commit timestamps would not
    // tell, they are the publisher's).
    let ordered: bool = pair
        .sub_client()
        .query_one(
            "SELECT (SELECT xmin::text::bigint FROM small WHERE id = 1) \
                    < (SELECT min(xmin::text::bigint) FROM log)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ordered, "the small transaction committed first on the subscriber too");
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
}

/// The eagerly applied transaction aborts as a whole on the publisher:
/// the worker's local transaction is rolled back, nothing is applied.
#[test]
fn whole_abort_applies_nothing() {
    let pair = pair("apply_eager_abort");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    stream_eagerly(&pair, &mut tx, 1, 30_000);
    tx.rollback().unwrap();
    pair.pub_exec("CHECKPOINT");
    wait_not_writing(&pair, "log");
    pair.pub_exec("INSERT INTO log VALUES (0, 'after')");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 1);
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
}

/// kill -9 of the apply worker in the middle of an eager apply (a crash
/// restart of the subscriber): the transaction arrives again from its first
/// block after the restart and is applied exactly once.
#[test]
fn killed_during_eager_apply() {
    let pair = pair("apply_eager_kill");
    pair.pub_exec("INSERT INTO log VALUES (0, 'before')");
    pair.wait_caught_up("s");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 1, 30_000);
    pair.pub_exec("CHECKPOINT");
    let worker = wait_eager(&pair, "log");
    pair.subscriber.kill9_and_wait_crash_restart(&[worker]);
    insert(&mut tx, "log", 30_001, 40_000);
    pair.pub_exec("CHECKPOINT");
    // The new worker applies it eagerly again, from its first block.
    wait_eager(&pair, "log");
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 40_001);
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
}

/// `streaming_eager: false` keeps the spool-then-apply behaviour: nothing is
/// written on the subscriber before the publisher's commit.
#[test]
fn eager_apply_can_be_disabled() {
    let pair = pair_with("apply_eager_off", r#", "streaming_eager": false"#);
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    insert(&mut tx, "log", 1, 30_000);
    pair.pub_exec("CHECKPOINT");
    wait_or_explain(
        EAGER_WAIT,
        "the open transaction is spooled",
        || pair.spooled_bytes() > 1 << 20,
        || pair.explain("s"),
    );
    assert!(
        worker_locks(&pair, "log").is_some_and(|(writing, _)| !writing),
        "with streaming_eager false the worker does not write before the commit"
    );
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
}

/// A conflict inside the eagerly applied transaction (an UPDATE of a row
/// the subscriber deleted: `update_missing`, resolved `skip`): the worker
/// falls back before the publisher commits, and the replay at the commit
/// records the conflict once, with the transaction's commit LSN.
#[test]
fn conflict_falls_back_and_is_recorded_with_the_commit_lsn() {
    let pair = pair("apply_eager_conflict");
    pair.pub_exec("INSERT INTO t VALUES (7, 'a')");
    pair.wait_caught_up("s");
    pair.sub_exec("DELETE FROM t WHERE id = 7");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    stream_eagerly(&pair, &mut tx, 1, 20_000);
    tx.batch_execute("UPDATE t SET v = 'b' WHERE id = 7").unwrap();
    insert(&mut tx, "log", 20_001, 30_000);
    pair.pub_exec("CHECKPOINT");
    wait_not_writing(&pair, "log");
    let commit_lsn: String = tx.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).unwrap().get(0);
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "t"), 0, "the update of the missing row was skipped");
    the_one_conflict_of_t(&pair, "update_missing", "skip", &commit_lsn);
}

/// The subscription's settings change while the worker applies a streamed
/// transaction eagerly (a new conflict rule): it rolls the transaction back
/// before starting its new session, which receives the transaction again;
/// exact, and no error on the way.
#[test]
fn settings_change_during_eager_apply() {
    let pair = pair("apply_eager_reload");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    let first = stream_eagerly(&pair, &mut tx, 1, 20_000);
    pair.sub_exec("SELECT logical_ext.set_conflict_resolution('s', 'skip', 'update_missing')");
    insert(&mut tx, "log", 20_001, 30_000);
    pair.pub_exec("CHECKPOINT");
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 30_000);
    let status = pair.status("s");
    assert_eq!(status.last_error, None, "no error on the way (worker {first} before)");
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
}

/// A unique violation raised while the streamed transaction is applied
/// eagerly (`insert_exists` resolved as `error`, the default), with
/// `disable_on_error`: the error is not reported then (its commit LSN is
/// not known yet); the transaction is applied again at its commit, where
/// the error recurs and is reported once, naming the commit LSN that
/// `skip_transaction` needs; only then is the subscription disabled.
#[test]
fn unique_violation_while_eager_is_reported_once_with_the_commit_lsn() {
    let pair = pair_with("apply_eager_unique", r#", "disable_on_error": true"#);
    pair.sub_exec("INSERT INTO t VALUES (5, 'local')");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    stream_eagerly(&pair, &mut tx, 1, 20_000);
    tx.batch_execute("INSERT INTO t VALUES (5, 'remote')").unwrap();
    insert(&mut tx, "log", 20_001, 30_000);
    pair.pub_exec("CHECKPOINT");
    let commit_lsn: String = tx.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).unwrap().get(0);
    tx.commit().unwrap();
    let status = pair.wait_status("s", "disabled by disable_on_error", |s| !s.enabled);
    assert!(status.last_error.is_some(), "the error is reported: {status:?}");
    let lsn = the_one_conflict_of_t(&pair, "insert_exists", "error", &commit_lsn);
    assert_eq!(count(&mut pair.sub_client(), "log"), 0, "nothing of the failed transaction is applied");
    // The way out the record points to: skip it, enable, and go on.
    exec(&mut pair.sub_client(), &format!("SELECT logical_ext.skip_transaction('s', '{lsn}')"));
    exec(&mut pair.sub_client(), "SELECT logical_ext.enable_subscription('s')");
    pair.pub_exec("INSERT INTO log VALUES (0, 'after')");
    pair.wait_caught_up("s");
    assert_eq!(count(&mut pair.sub_client(), "log"), 1);
}

/// Buffered INSERTs of the eagerly applied transaction that collide with a
/// local row when the fallback writes them — here the publisher's
/// transaction aborts as a whole: nothing is reported (no record, no error,
/// `disable_on_error` does not act) for a transaction that never committed.
#[test]
fn buffered_rows_failing_at_the_fallback_are_not_reported() {
    let pair = pair_with("apply_eager_fallback_error", r#", "disable_on_error": true"#);
    pair.sub_exec("INSERT INTO t VALUES (2, 'local')");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    stream_eagerly(&pair, &mut tx, 1, 20_000);
    // 600 short rows take the publisher past its 64kB again: it streams a
    // block that ends with rows of `t`. The worker applies the first INSERT
    // of the run at once (and takes its lock on `t`) and buffers the next
    // ones (fewer than a batch's 1000 rows), row 2 among them; nothing
    // writes them before the abort.
    insert(&mut tx, "t", 1, 600);
    pair.pub_exec("CHECKPOINT");
    wait_eager(&pair, "t");
    tx.rollback().unwrap();
    pair.pub_exec("INSERT INTO log VALUES (0, 'after')");
    pair.wait_caught_up("s");
    let status = pair.status("s");
    assert!(status.enabled, "the subscription stays enabled: {status:?}");
    assert_eq!(status.last_error, None, "no error is reported: {status:?}");
    let records = count(&mut pair.sub_client(), "logical_ext.conflict_log");
    assert_eq!(records, 0, "no conflict is recorded for an aborted transaction");
    assert_eq!(count(&mut pair.sub_client(), "log"), 1);
}

/// More than 64 subtransactions that write, after blocks were applied
/// without spooling: the worker rolls its internal subtransactions and its
/// transaction back and ends the session; the next one receives the
/// transaction again from its first block and spools it (it is not applied
/// eagerly a second time); exact after the commit.
#[test]
fn too_many_subtransactions_fall_back() {
    let pair = pair("apply_eager_many_subxacts");
    let mut c = pair.pub_client();
    let mut tx = c.transaction().unwrap();
    stream_eagerly(&pair, &mut tx, 1, 20_000);
    assert!(pair.spool_files().is_empty(), "applied while it arrives, not spooled: {:?}", pair.spool_files());
    for i in 0..70 {
        tx.batch_execute(&format!("SAVEPOINT s{i}; INSERT INTO log VALUES ({}, 'sub')", 100_000 + i)).unwrap();
    }
    insert(&mut tx, "log", 20_001, 30_000);
    pair.pub_exec("CHECKPOINT");
    wait_or_explain(
        EAGER_WAIT,
        "the transaction is received again and spooled",
        || pair.spooled_bytes() > 500_000,
        || pair.explain("s"),
    );
    wait_not_writing(&pair, "log");
    tx.commit().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v FROM log", "id, v");
    assert_eq!(count(&mut pair.sub_client(), "log"), 30_070);
    assert_eq!(pair.status("s").last_error, None, "a fallback is no error");
    assert!(pair.spool_files().is_empty(), "{:?}", pair.spool_files());
}
