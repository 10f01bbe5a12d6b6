//! Slot ownership fencing and the subscriber timeline check (issue 16,
//! item 2; docs/FAILOVER.md "Slot ownership"). The apply worker names
//! itself to the publisher's plugin (`owner` option): a slot claimed by one
//! subscriber refuses another until `takeover_slot()`; a promoted standby
//! (or PITR restore) of a subscriber does not start its subscriptions until
//! `adopt_subscription()`.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use postgres::Client;

/// `state` and `last_error` of subscription `name` on `cluster`.
fn status_on(cluster: &Cluster, name: &str) -> Option<(String, Option<String>)> {
    let mut c = try_client(cluster).ok()?;
    let row = c
        .query_opt("SELECT state, last_error FROM logical_ext.subscription_status WHERE name = $1", &[&name])
        .ok()??;
    Some((row.get(0), row.get(1)))
}

fn wait_state(cluster: &Cluster, name: &str, what: &str, cond: impl Fn(&str, &str) -> bool) -> String {
    let mut last = None;
    let ok = poll_until(CATCH_UP, || {
        last = status_on(cluster, name);
        last.as_ref().is_some_and(|(s, e)| cond(s, e.as_deref().unwrap_or("")))
    });
    assert!(ok, "{}: {what}; last status {last:?}\n--- log:\n{}", cluster.name(), cluster.log_tail(30));
    last.and_then(|(_, e)| e).unwrap_or_default()
}

fn count_on(cluster: &Cluster, table: &str) -> i64 {
    count(&mut cluster.client(), table)
}

/// The owner the publisher recorded for slot `slot`.
fn recorded_owner(publisher: &mut Client, slot: &str) -> String {
    query_string(publisher, &format!("SELECT pg_read_file('pg_replslot/{slot}/logical_ext_owner')")).trim().to_string()
}

/// `<sysid>/<tli>/<dboid>/<subid>` of subscription `name` on `cluster`.
fn owner_of(cluster: &Cluster, name: &str) -> String {
    query_string(
        &mut cluster.client(),
        &format!(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || \
             ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int || '/' || \
             (SELECT oid FROM pg_database WHERE datname = current_database()) || '/' || \
             (SELECT id FROM logical_ext.subscription WHERE name = '{name}')"
        ),
    )
}

fn promote(cluster: &Cluster) {
    cluster.exec("SELECT pg_promote()");
}

/// The test: a promoted standby of a subscriber does not take the
/// slot from the running original; after an explicit adopt on a real
/// failover it does, with no row lost and none duplicated.
#[test]
fn a_promoted_standby_takes_the_slot_only_when_adopted() {
    let mut pair = Pair::start("owner_promote");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t SELECT g FROM generate_series(1, 10) g");
    pair.wait_sub_count("s", "t", 10);
    let mut publisher = pair.pub_client();
    let original = owner_of(&pair.subscriber, "s");
    assert_eq!(recorded_owner(&mut publisher, "s"), original, "the first worker claimed the slot");

    // Two physical standbys of the subscriber: one is promoted while the
    // original runs (a clone gone live), the other follows it to the end.
    let clone = Cluster::standby_of(&pair.subscriber, "owner_promote_clone", "clone", &[]);
    let standby = Cluster::standby_of(&pair.subscriber, "owner_promote_standby", "standby", &[]);
    wait_until(CATCH_UP, "the standbys replay the 10 rows", || {
        count_on(&clone, "t") == 10 && count_on(&standby, "t") == 10
    });
    promote(&clone);
    let why = wait_state(&clone, "s", "the promoted clone is blocked", |s, _| s == "blocked");
    assert!(why.contains("timeline changed"), "says why: {why}");
    assert!(why.contains("adopt_subscription('s')"), "names the way out: {why}");

    // The original keeps streaming; the clone stays out of it.
    pair.pub_exec("INSERT INTO t SELECT g FROM generate_series(11, 20) g");
    pair.wait_sub_count("s", "t", 20);
    assert_eq!(pair.status("s").state, "streaming");
    assert_eq!(count_on(&clone, "t"), 10, "the clone applied nothing");
    assert_eq!(recorded_owner(&mut publisher, "s"), original, "the slot still belongs to the original");
    assert_eq!(status_on(&clone, "s").map(|s| s.0).as_deref(), Some("blocked"), "and waits");

    // A real failover: the original stops for good; its standby has all of
    // its WAL, is promoted, and is adopted.
    wait_until(CATCH_UP, "the standby replays the 20 rows", || count_on(&standby, "t") == 20);
    pair.subscriber.stop_with("fast");
    pair.pub_exec("INSERT INTO t SELECT g FROM generate_series(21, 25) g");
    promote(&standby);
    wait_state(&standby, "s", "the promoted standby is blocked", |s, _| s == "blocked");
    assert_eq!(count_on(&standby, "t"), 20);
    standby.exec("SELECT logical_ext.adopt_subscription('s')");
    wait_state(&standby, "s", "the adopted standby streams", |s, _| s == "streaming");
    wait_until(CATCH_UP, "the adopted standby gets the later rows", || count_on(&standby, "t") == 25);
    let mut c = standby.client();
    let ids = query_string(&mut c, "SELECT count(DISTINCT id) || ':' || sum(id) FROM t");
    assert_eq!(ids, query_string(&mut publisher, "SELECT count(DISTINCT id) || ':' || sum(id) FROM t"));
    assert_eq!(recorded_owner(&mut publisher, "s"), owner_of(&standby, "s"), "the slot is the standby's now");
    let taken: String = query_string(
        &mut c,
        "SELECT slot_takeover || ':' || (slot_taken_over_at IS NOT NULL) FROM logical_ext.subscription WHERE name = 's'",
    );
    assert_eq!(taken, "false:true", "the takeover is done and recorded");

    // The clone, adopted too, is still fenced: it misses rows 11..20.
    clone.exec("SELECT logical_ext.adopt_subscription('s')");
    let err = wait_state(&clone, "s", "the adopted clone is refused", |_, e| e.contains("confirmed_flush_lsn"));
    assert!(err.contains("accept_slot_gap"), "{err}");
    assert_eq!(count_on(&clone, "t"), 10);
}

/// A different subscriber pointed at a slot another one owns is refused
/// with a clear error until `takeover_slot()`; consumers without the
/// `owner` option are not affected.
#[test]
fn a_second_subscriber_is_refused_until_it_takes_the_slot_over() {
    let pair = Pair::start("owner_second");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t VALUES (1)");
    pair.wait_sub_count("s", "t", 1);
    // The slot confirms row 1 before the first subscriber stops, so the
    // second starts after it (docs/FAILOVER.md "A fresh subscriber on a used
    // slot": an unconfirmed row would be sent again).
    pair.wait_caught_up("s");
    let mut publisher = pair.pub_client();
    let first = owner_of(&pair.subscriber, "s");
    assert_eq!(recorded_owner(&mut publisher, "s"), first);

    pair.sub_exec("SELECT logical_ext.disable_subscription('s')");
    wait_until(CATCH_UP, "the slot is released", || {
        query_string(&mut publisher, "SELECT active::text FROM pg_replication_slots WHERE slot_name = 's'") == "false"
    });
    // A consumer without the owner option works as before; one naming
    // another owner is refused by the plugin itself, whatever the client.
    let peeked = query_string(
        &mut publisher,
        "SELECT count(*)::text FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'format-version', '2')",
    );
    assert!(peeked.parse::<i64>().is_ok());
    let refused = publisher
        .query("SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'owner', '1/1/1/1')", &[])
        .expect_err("another owner is refused");
    let db = refused.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000", "{db:?}");
    assert!(db.message().contains("belongs to subscriber"), "{}", db.message());
    assert!(db.hint().is_some_and(|h| h.contains("takeover_slot")), "{:?}", db.hint());

    // A second subscriber on the same slot.
    let second = Cluster::start("owner_second_b", SUBSCRIBER_CONF);
    second.exec("CREATE EXTENSION logical_ext; CREATE TABLE t (id int PRIMARY KEY)");
    let sql = format!(
        "SELECT logical_ext.create_subscription('s', '{}', ARRAY['p'], slot_name => 's', create_slot => false, \
         copy_data => false, options => '{FAST_RETRY}')",
        pair.publisher_conninfo()
    );
    second.exec(&sql);
    let err = wait_state(&second, "s", "the second subscriber is refused", |_, e| e.contains("belongs to subscriber"));
    assert!(err.contains(&first), "names the owner: {err}");
    assert_eq!(count_on(&second, "t"), 0);
    assert_eq!(recorded_owner(&mut publisher, "s"), first, "a refused client changes nothing");

    // The explicit takeover: the second subscriber streams from the slot
    // and gets exactly the rows after what the first one confirmed.
    second.exec("SELECT logical_ext.takeover_slot('s')");
    wait_state(&second, "s", "the second subscriber streams", |s, _| s == "streaming");
    pair.pub_exec("INSERT INTO t VALUES (2)");
    wait_until(CATCH_UP, "the second subscriber gets row 2", || count_on(&second, "t") == 1);
    assert_eq!(query_string(&mut second.client(), "SELECT string_agg(id::text, ',') FROM t"), "2");
    let taken: String = query_string(
        &mut second.client(),
        "SELECT slot_takeover || ':' || (slot_taken_over_at IS NOT NULL) FROM logical_ext.subscription WHERE name = 's'",
    );
    assert_eq!(taken, "false:true", "the takeover is done and recorded");
    assert_eq!(recorded_owner(&mut publisher, "s"), owner_of(&second, "s"));

    // The first one, enabled again, no longer gets the slot.
    second.exec("SELECT logical_ext.disable_subscription('s')");
    pair.sub_exec("SELECT logical_ext.enable_subscription('s')");
    let err = wait_state(&pair.subscriber, "s", "the first subscriber is refused", |_, e| {
        e.contains("belongs to subscriber") || e.contains("confirmed_flush_lsn")
    });
    assert!(!err.is_empty());
    assert_eq!(count_on(&pair.subscriber, "t"), 1, "nothing streamed to the old owner");
    pair.pub_exec("INSERT INTO t VALUES (3)");
    assert_eq!(count_on(&pair.subscriber, "t"), 1);
}
