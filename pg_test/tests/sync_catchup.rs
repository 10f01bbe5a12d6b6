//! Per-table catch-up (issue 12): a copy made from a snapshot of its own
//! (`resync_table`, `refresh_subscription`, a resumed copy) no longer pauses
//! the stream of the other tables. The stream skips the copying table's
//! changes; once the copy is committed its sync worker streams its own
//! temporary slot up to the stream's position and applies what the copy
//! lacks, then hands the table over. Checked row for row, with writes to
//! the copying table during the copy and a sync worker terminated in the
//! middle of its catch-up (the table is copied again, nothing lost or
//! duplicated).

use logical_ext_pg_test::conflicts::log_lines;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;

/// `big` and `other` on both sides, `big` with rows, subscribed with
/// copy_data and every table ready.
fn start(name: &str) -> Pair {
    let pair = Pair::start(name);
    pair.both_exec("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY, v text)");
    pair.pub_exec("INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 5000) g");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    subscribe_copy(&pair, "s", &["p"], "");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair
}

fn state_of(pair: &Pair, relation: &str) -> String {
    table(&tables(pair, "s"), relation).state.clone()
}

#[test]
fn resync_copy_does_not_pause_other_tables() {
    let pair = start("sync_catchup_stream");
    // The resync's copy takes its snapshot, then waits: its DELETE needs a
    // lock this session holds (readers are not blocked by it).
    // (Counted from here: only this resync's catch-up counts below.)
    let caught_up_before = log_lines(&pair.subscriber, "caught up with the stream").len();
    let mut locker = pair.sub_client();
    exec(&mut locker, "BEGIN; LOCK TABLE big IN SHARE MODE");
    pair.sub_exec("SELECT logical_ext.resync_table('s', 'big')");
    wait_until(CATCH_UP, "the resync's copy waits for the lock", || {
        count(
            &mut pair.sub_client(),
            "pg_stat_activity WHERE backend_type = 'logical_ext sync' AND wait_event_type = 'Lock'",
        ) == 1
    });
    // Written after the copy's snapshot: the copy does not hold them, the
    // catch-up must apply them once.
    pair.pub_exec("INSERT INTO big SELECT g, 'late' FROM generate_series(5001, 5100) g");
    pair.pub_exec("UPDATE big SET v = 'changed' WHERE id <= 50; DELETE FROM big WHERE id BETWEEN 51 AND 60");
    // Other tables keep streaming while the copy waits.
    pair.pub_exec("INSERT INTO other SELECT g, 'o' FROM generate_series(1, 100) g");
    pair.wait_sub_count("s", "other", 100);
    assert_eq!(state_of(&pair, "big"), "copying", "the copy is still waiting");
    exec(&mut locker, "COMMIT");
    wait_all_ready(&pair, "s");
    pair.pub_exec("INSERT INTO big VALUES (9001, 'after'); UPDATE big SET v = 'after' WHERE id = 5050");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big", "other"]);
    assert!(
        log_lines(&pair.subscriber, "caught up with the stream").len() > caught_up_before,
        "the sync worker caught the table up"
    );
    assert_eq!(count(&mut pair.sub_client(), "logical_ext.conflict_log"), 0, "no conflict: nothing applied twice");
}

#[test]
fn sync_worker_terminated_during_catchup_copies_again() {
    let pair = start("sync_catchup_kill");
    // On the subscriber, a row marked 'block' waits for an advisory lock the
    // test holds: the sync worker stops in the middle of its catch-up.
    pair.sub_exec(
        "CREATE FUNCTION block() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.v = 'block' THEN PERFORM pg_advisory_lock_shared(4242); \
         PERFORM pg_advisory_unlock_shared(4242); END IF; RETURN NEW; END $$; \
         CREATE TRIGGER block BEFORE INSERT ON big FOR EACH ROW EXECUTE FUNCTION block(); \
         ALTER TABLE big ENABLE ALWAYS TRIGGER block",
    );
    let mut holder = pair.sub_client();
    exec(&mut holder, "SELECT pg_advisory_lock(4242)");
    let mut locker = pair.sub_client();
    exec(&mut locker, "BEGIN; LOCK TABLE big IN SHARE MODE");
    pair.sub_exec("SELECT logical_ext.resync_table('s', 'big')");
    wait_until(CATCH_UP, "the resync's copy waits for the table lock", || {
        count(
            &mut pair.sub_client(),
            "pg_stat_activity WHERE backend_type = 'logical_ext sync' AND wait_event_type = 'Lock'",
        ) == 1
    });
    pair.pub_exec("INSERT INTO big VALUES (6000, 'block'); INSERT INTO big VALUES (6001, 'late')");
    pair.pub_exec("INSERT INTO other VALUES (1, 'o')");
    pair.wait_sub_count("s", "other", 1);
    exec(&mut locker, "COMMIT");
    // The copy commits without the 'block' row; the catch-up applies it and
    // waits for the advisory lock.
    wait_until(CATCH_UP, "the catch-up waits for the advisory lock", || {
        count(
            &mut pair.sub_client(),
            "pg_stat_activity WHERE backend_type = 'logical_ext sync' AND wait_event = 'advisory'",
        ) == 1
    });
    assert_eq!(state_of(&pair, "big"), "copying", "a table being caught up is still copying");
    for pid in sync_worker_pids(&pair) {
        pair.sub_exec(&format!("SELECT pg_terminate_backend({pid})"));
    }
    // The table is copied again (its copy now holds the 'block' row, which
    // waits too until the lock is released).
    pair.pub_exec("INSERT INTO other VALUES (2, 'o'); INSERT INTO big VALUES (6002, 'late')");
    pair.wait_sub_count("s", "other", 2);
    exec(&mut holder, "SELECT pg_advisory_unlock(4242)");
    wait_all_ready(&pair, "s");
    pair.pub_exec("INSERT INTO big VALUES (6003, 'after')");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["big", "other"]);
    assert_eq!(count(&mut pair.sub_client(), "logical_ext.conflict_log"), 0, "no conflict: nothing applied twice");
}
