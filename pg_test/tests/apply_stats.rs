//! Statistics that survive (issue 15, item 4): the counters of
//! `subscription_status` (applied transactions and changes, conflicts by
//! type, apply and sync errors) across a clean restart of the subscriber
//! (exactly kept), across an immediate stop (kept up to the last flush,
//! never more than what was counted: the documented guarantee), and
//! `reset_subscription_stats()` with its `stats_reset` time. Native
//! PostgreSQL 15 keeps `pg_stat_subscription_stats` across clean restarts
//! and discards it after a crash; logical_ext before this kept nothing.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::time::Duration;

/// The persisted counters of subscription `s`, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counters {
    applied_transactions: i64,
    applied_changes: i64,
    /// insert_exists, update_exists, update_missing, delete_missing,
    /// update_origin_differs, delete_origin_differs.
    conflicts: [i64; 6],
    apply_errors: i64,
    sync_errors: i64,
    stats_reset: Option<String>,
}

fn counters(pair: &Pair) -> Counters {
    let row = pair
        .sub_client()
        .query_one(
            "SELECT applied_transactions, applied_changes, conflicts_insert_exists, conflicts_update_exists,
                    conflicts_update_missing, conflicts_delete_missing, conflicts_update_origin_differs,
                    conflicts_delete_origin_differs, apply_error_count, sync_error_count, stats_reset::text
               FROM logical_ext.subscription_status WHERE name = 's'",
            &[],
        )
        .unwrap_or_else(|e| panic!("read subscription_status: {}", describe_error(&e)));
    Counters {
        applied_transactions: row.get(0),
        applied_changes: row.get(1),
        conflicts: [row.get(2), row.get(3), row.get(4), row.get(5), row.get(6), row.get(7)],
        apply_errors: row.get(8),
        sync_errors: row.get(9),
        stats_reset: row.get(10),
    }
}

/// `n` publisher transactions of `rows` inserts each, from id `first`.
fn insert_txns(pair: &Pair, first: i64, n: i64, rows: i64) {
    let mut c = pair.pub_client();
    for i in 0..n {
        let from = first + i * rows;
        c.execute(
            "INSERT INTO public.t SELECT g, 'v' FROM generate_series($1::bigint, $2::bigint) g",
            &[&from, &(from + rows - 1)],
        )
        .expect("insert");
    }
}

/// The statistics file of subscription `s` (src/apply/stats.rs).
fn stats_file(pair: &Pair) -> std::path::PathBuf {
    let mut c = pair.sub_client();
    let db: u32 =
        c.query_one("SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()", &[]).unwrap().get(0);
    let id: i32 = c.query_one("SELECT id FROM logical_ext.subscription WHERE name = 's'", &[]).unwrap().get(0);
    pair.subscriber.data_dir().join(format!("pg_stat/logical_ext_subscription_{db}_{id}.stat"))
}

/// `applied_transactions` as written in the statistics file.
fn flushed_transactions(path: &std::path::Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix("applied_transactions ")).and_then(|v| v.parse().ok())
}

fn start_again(cluster: &mut Cluster) {
    // After an immediate stop `restart` only starts (the server is down).
    cluster.restart();
}

#[test]
fn counters_survive_restarts_and_reset() {
    let mut pair = Pair::start("stats");
    pair.both_exec("CREATE TABLE public.t (id bigint PRIMARY KEY, v text); CREATE TABLE public.nokey (v text)");
    // The subscriber refuses 'bad' until the constraint is dropped: apply errors.
    pair.sub_exec("ALTER TABLE public.t ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE public.t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let zero = counters(&pair);
    assert_eq!((zero.applied_transactions, zero.apply_errors, zero.stats_reset.clone()), (0, 0, None), "{zero:?}");

    // Work of every kind: transactions and changes, update_missing and
    // delete_missing conflicts, apply errors, a sync error.
    insert_txns(&pair, 1, 10, 5);
    pair.wait_caught_up("s");
    pair.sub_exec("DELETE FROM public.t WHERE id IN (1, 2)");
    pair.pub_exec("UPDATE public.t SET v = 'u' WHERE id = 1; DELETE FROM public.t WHERE id = 2");
    pair.pub_exec("DELETE FROM public.t WHERE id = 1");
    pair.pub_exec("INSERT INTO public.t VALUES (1000, 'bad')");
    pair.wait_status("s", "an apply error", |_| counters(&pair).apply_errors >= 1);
    pair.sub_exec("ALTER TABLE public.t DROP CONSTRAINT no_bad");
    pair.wait_caught_up("s");
    // A table whose copy is refused (rows on the subscriber, no key).
    pair.sub_exec("INSERT INTO public.nokey VALUES ('local')");
    pair.pub_exec("INSERT INTO public.nokey VALUES ('remote'); ALTER PUBLICATION p ADD TABLE public.nokey");
    pair.sub_exec("SELECT logical_ext.refresh_subscription('s')");
    pair.wait_status("s", "a sync error", |_| counters(&pair).sync_errors >= 1);
    pair.sub_exec("TRUNCATE public.nokey");
    wait_until(Duration::from_secs(60), "nokey copied", || count(&mut pair.sub_client(), "public.nokey") == 1);
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["public.t"]);
    pair.assert_same("SELECT * FROM public.nokey", "v");
    let before = counters(&pair);
    assert!(before.applied_transactions >= 13, "{before:?}");
    assert!(before.applied_changes >= 53, "{before:?}");
    assert_eq!((before.conflicts[2], before.conflicts[3]), (1, 2), "update_missing, delete_missing: {before:?}");
    assert!(before.apply_errors >= 1 && before.sync_errors >= 1, "{before:?}");

    // Clean restart: exactly kept, shown already before the worker runs.
    pair.subscriber.restart();
    assert_eq!(counters(&pair), before, "after a clean restart");
    pair.wait_streaming("s");
    assert_eq!(counters(&pair), before, "after a clean restart, streaming again");
    insert_txns(&pair, 2000, 3, 2);
    pair.wait_caught_up("s");
    let more = counters(&pair);
    assert_eq!(more.applied_transactions, before.applied_transactions + 3, "{more:?}");
    assert_eq!(more.applied_changes, before.applied_changes + 6, "{more:?}");

    // Immediate stop (no exit callback runs): what the last flush wrote
    // survives, at most the last flush interval is lost, nothing is counted
    // twice.
    let file = stats_file(&pair);
    wait_until(Duration::from_secs(30), "the counters flushed", || {
        flushed_transactions(&file) == Some(more.applied_transactions)
    });
    insert_txns(&pair, 3000, 5, 1);
    pair.wait_caught_up("s");
    let counted = counters(&pair);
    assert_eq!(counted.applied_transactions, more.applied_transactions + 5);
    pair.subscriber.stop_with("immediate");
    start_again(&mut pair.subscriber);
    pair.wait_streaming("s");
    insert_txns(&pair, 4000, 1, 1);
    pair.wait_caught_up("s");
    let after_crash = counters(&pair);
    println!(
        "applied_transactions: {} counted before the immediate stop, {} flushed, {} after it (+1 applied since)",
        counted.applied_transactions, more.applied_transactions, after_crash.applied_transactions
    );
    assert!(
        after_crash.applied_transactions > more.applied_transactions
            && after_crash.applied_transactions <= counted.applied_transactions + 1,
        "after an immediate stop: {after_crash:?}, flushed {more:?}, counted {counted:?}"
    );
    assert_eq!(
        (after_crash.conflicts, after_crash.apply_errors, after_crash.sync_errors),
        (more.conflicts, more.apply_errors, more.sync_errors),
        "after an immediate stop"
    );
    pair.assert_same_tables(&["public.t"]);
    pair.assert_same("SELECT * FROM public.nokey", "v");

    // Reset: zero, with its time, and it stays so across a restart.
    pair.sub_exec("SELECT logical_ext.reset_subscription_stats('s')");
    let reset = counters(&pair);
    assert_eq!(
        (reset.applied_transactions, reset.applied_changes, reset.conflicts, reset.apply_errors, reset.sync_errors),
        (0, 0, [0; 6], 0, 0),
        "{reset:?}"
    );
    assert!(reset.stats_reset.is_some(), "{reset:?}");
    pair.subscriber.restart();
    assert_eq!(counters(&pair), reset, "a reset survives a restart");
    let (code, _, hint) = expect_error(&mut pair.sub_client(), "SELECT logical_ext.reset_subscription_stats('nosuch')");
    assert_eq!(code, "42704", "unknown subscription");
    assert!(!hint.is_empty());
    pair.wait_streaming("s");
    insert_txns(&pair, 5000, 1, 1);
    pair.wait_caught_up("s");
    assert_eq!(counters(&pair).applied_transactions, 1);
    // NULL resets every subscription of the database.
    pair.sub_exec("SELECT logical_ext.reset_subscription_stats()");
    assert_eq!(counters(&pair).applied_transactions, 0);

    // Dropping the subscription removes its file.
    assert!(file.exists(), "{}", file.display());
    pair.sub_exec("SELECT logical_ext.drop_subscription('s')");
    wait_until(Duration::from_secs(10), "the statistics file removed", || !file.exists());
}
