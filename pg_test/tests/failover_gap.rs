//! No silent gap (issue 16, item 2): a copy of a subscriber (a base backup,
//! a PITR restore, a promoted standby) whose replication origin is behind
//! the publisher slot's `confirmed_flush_lsn` must not stream from that
//! slot — PostgreSQL would start it at the confirmed position whatever the
//! worker asks, and the rows in between (applied by the other copy) would
//! never reach this node. The worker refuses with both LSNs, the rows' fate
//! and the way out; `logical_ext.accept_slot_gap()` accepts the gap once,
//! recorded.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

#[test]
fn a_restored_subscriber_refuses_the_gap_until_accepted() {
    let mut pair = Pair::start("gap_fence");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t SELECT g FROM generate_series(1, 10) g");
    pair.wait_sub_count("s", "t", 10);
    pair.wait_caught_up("s");

    // The backup holds 10 rows and the origin's progress through them.
    let origin = origin_progress(&pair, "s");
    let mut clone = pair.subscriber.base_backup("gap_fence_clone", false);

    // The original applies 10 more; the slot confirms them.
    pair.pub_exec("INSERT INTO t SELECT g FROM generate_series(11, 20) g");
    pair.wait_sub_count("s", "t", 20);
    pair.wait_caught_up("s");
    let confirmed = pair.confirmed_flush("s").expect("the slot exists");
    pair.subscriber.stop_with("fast");

    // Later changes, then the backup takes the original's place.
    pair.pub_exec("INSERT INTO t SELECT g FROM generate_series(21, 25) g");
    clone.start_stopped();
    let original = std::mem::replace(&mut pair.subscriber, clone);

    // Before the fence, the copy streamed from the slot's position: rows
    // 21..25 arrived, 11..20 never did.
    let mut c = pair.sub_client();
    let mut err = None;
    wait_until(CATCH_UP, "the gap is refused, or rows stream past it", || {
        err = pair.status("s").last_error.filter(|e| e.contains("confirmed_flush_lsn"));
        err.is_some() || count(&mut c, "t") > 10
    });
    assert_eq!(count(&mut c, "t"), 10, "the copy streamed past the gap: rows 11..20 are silently missing");
    let err = err.unwrap();
    assert!(err.contains(&format_lsn(confirmed)), "names the slot's position {}: {err}", format_lsn(confirmed));
    assert!(err.contains(&format_lsn(origin)), "names this node's progress {}: {err}", format_lsn(origin));
    assert!(err.contains("another copy of this subscriber"), "says what happened to the rows: {err}");
    assert!(err.contains("accept_slot_gap"), "names the way out: {err}");
    assert!(err.contains("resync_table"), "names the other way out: {err}");
    assert_eq!(count(&mut c, "t"), 10, "nothing streamed past the gap");
    // It stays refused (retried with backoff, never streaming).
    let refused = pair.status("s");
    assert_ne!(refused.state, "streaming");

    // The explicit override: the gap is accepted once, and recorded.
    exec(&mut c, "SELECT logical_ext.accept_slot_gap('s')");
    pair.wait_sub_count("s", "t", 15);
    let ids: String = query_string(&mut c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id > 10");
    assert_eq!(ids, "21,22,23,24,25", "the later changes, the gap's rows are not here");
    let record: String =
        query_string(&mut c, "SELECT coalesce(slot_gap_accepted, '') FROM logical_ext.subscription WHERE name = 's'");
    assert!(record.contains(&format_lsn(confirmed)), "the acceptance is recorded: {record}");
    let armed: String = query_string(&mut c, "SELECT slot_gap FROM logical_ext.subscription WHERE name = 's'");
    assert_eq!(armed, "refuse", "accepted once: the fence is armed again");
    drop(original);
}

/// A subscriber that merely restarts (or idles while the publisher writes
/// WAL it does not subscribe to) never trips the fence: what it reports as
/// flushed is never past its own origin's durable progress.
#[test]
fn an_idle_subscriber_restarts_without_a_false_gap() {
    let mut pair = Pair::start("gap_idle");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t VALUES (1)");
    pair.wait_sub_count("s", "t", 1);
    // WAL the subscription does not carry: the slot moves past the last
    // applied commit on the idle worker's reports. And a remote transaction
    // that changes nothing here (a logical message alone): its local commit
    // must move the origin too.
    for _ in 0..5 {
        pair.pub_exec("INSERT INTO other SELECT g FROM generate_series(1, 100) g");
    }
    pair.pub_exec("SELECT pg_logical_emit_message(true, 'app', 'hello')");
    let target = pair.publisher_flush_lsn();
    wait_until(CATCH_UP, "the slot confirms the unrelated WAL", || {
        pair.confirmed_flush("s").is_some_and(|c| c >= target)
    });
    pair.subscriber.stop_with("immediate");
    pair.subscriber.start_stopped();
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t VALUES (2)");
    pair.wait_sub_count("s", "t", 2);
    let st = pair.status("s");
    assert!(st.last_error.is_none(), "no false gap: {:?}", st.last_error);
}

/// The remote LSN the subscriber's replication origin of subscription
/// `name` has committed through.
fn origin_progress(pair: &Pair, name: &str) -> u64 {
    let mut c = pair.sub_client();
    let sql = format!(
        "SELECT remote_lsn::text FROM pg_replication_origin_status o \
         JOIN logical_ext.subscription s ON o.external_id = 'logical_ext_' || s.id WHERE s.name = '{name}'"
    );
    parse_lsn(&query_string(&mut c, &sql))
}
