//! A fresh subscriber (origin 0/0, `create_slot => false`) on a slot another
//! subscriber used starts at the slot's `confirmed_flush_lsn` (docs/FAILOVER.md,
//! "No silent gap": the position is adopted) and gets every row committed
//! after it. What the first subscriber applied but had not yet confirmed
//! when it stopped is delivered again: the slot never learnt of it. A test
//! that expects the second subscriber to get only the rows committed after
//! the first one stopped must first wait for the slot to confirm them
//! (`Pair::wait_caught_up`), as the first test here does.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

fn ids(client: &mut postgres::Client) -> String {
    query_string(client, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t")
}

/// A publisher with `t` in publication `p`; subscription `s` (its own slot
/// `s`) applied row 1 and was disabled; its slot is free. `confirmed`: wait
/// for the slot to confirm row 1 before disabling.
fn used_slot(tag: &str, confirmed: bool) -> Pair {
    let pair = Pair::start(tag);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO t VALUES (1)");
    pair.wait_sub_count("s", "t", 1);
    if confirmed {
        pair.wait_caught_up("s");
    }
    pair.sub_exec("SELECT logical_ext.disable_subscription('s')");
    let mut publisher = pair.pub_client();
    wait_until(CATCH_UP, "the slot is released", || {
        query_string(&mut publisher, "SELECT active::text FROM pg_replication_slots WHERE slot_name = 's'") == "false"
    });
    pair
}

/// A second node subscribing on slot `s` of `pair`'s publisher, taking it
/// over from the first.
fn second_on_slot(pair: &Pair, tag: &str, copy: bool) -> Cluster {
    let second = Cluster::start(&format!("{tag}_b"), SUBSCRIBER_CONF);
    second.exec("CREATE EXTENSION logical_ext; CREATE TABLE t (id int PRIMARY KEY)");
    second.exec(&format!(
        "SELECT logical_ext.create_subscription('s', '{}', ARRAY['p'], slot_name => 's', create_slot => false, \
         copy_data => {copy}, options => '{FAST_RETRY}')",
        pair.publisher_conninfo()
    ));
    // The slot belongs to the first subscriber (docs/FAILOVER.md "Slot
    // ownership"): the second takes it over explicitly.
    second.exec("SELECT logical_ext.takeover_slot('s')");
    second
}

fn wait_ids(second: &Cluster, want: &str) {
    let mut last = String::new();
    let ok = poll_until(CATCH_UP, || {
        last = try_client(second).map(|mut c| ids(&mut c)).unwrap_or_default();
        last == want
    });
    assert!(ok, "the second subscriber has [{last}], not [{want}]\n--- log:\n{}", second.log_tail(30));
}

/// Without a copy: exactly the rows committed after the slot's confirmed
/// position arrive, those committed while no one streamed included.
#[test]
fn a_fresh_subscriber_on_a_used_slot_gets_the_rows_after_its_position() {
    let tag = "reuse_stream";
    let pair = used_slot(tag, true);
    pair.pub_exec("INSERT INTO t VALUES (2)");
    let second = second_on_slot(&pair, tag, false);
    pair.pub_exec("INSERT INTO t VALUES (3)");
    wait_ids(&second, "2,3");
    let applied: i64 = second
        .client()
        .query_one("SELECT applied_changes FROM logical_ext.subscription_status WHERE name = 's'", &[])
        .expect("status")
        .get(0);
    assert_eq!(applied, 2, "what is counted as applied is in the table");
}

/// With a copy, whatever the first subscriber had confirmed: the table ends
/// up as the publisher's, each row once (copied, or streamed after the copy).
#[test]
fn a_fresh_subscriber_on_a_used_slot_with_a_copy_gets_every_row() {
    let tag = "reuse_copy";
    let pair = used_slot(tag, false);
    pair.pub_exec("INSERT INTO t VALUES (2)");
    let second = second_on_slot(&pair, tag, true);
    pair.pub_exec("INSERT INTO t VALUES (3)");
    wait_ids(&second, "1,2,3");
    pair.pub_exec("INSERT INTO t VALUES (4)");
    wait_ids(&second, "1,2,3,4");
}
