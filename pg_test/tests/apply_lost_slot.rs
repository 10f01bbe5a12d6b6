//! A subscription whose slot the publisher invalidated (it fell further
//! behind than `max_slot_wal_keep_size`): the subscriber says what happened,
//! what was lost and what to do — never the server's bare refusal, and never
//! a silent skip (issue 12, fault test 7; `slot_health()`'s side is in
//! monitoring.rs).

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

#[test]
fn invalidated_slot_is_an_actionable_error() {
    let pair = Pair::start_with(
        "lost_slot",
        &["max_slot_wal_keep_size = '1MB'", "wal_keep_size = 0", "min_wal_size = '32MB'", "max_wal_size = '64MB'"],
        &[],
    );
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, pad text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.sub_exec("SELECT logical_ext.disable_subscription('s')");
    let mut p = pair.pub_client();
    wait_until(CATCH_UP, "the slot is invalidated", || {
        exec(
            &mut p,
            "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 3000) g ON CONFLICT (id) DO UPDATE SET pad = excluded.pad || '.'",
        );
        exec(&mut p, "SELECT pg_switch_wal(); CHECKPOINT");
        query_string(&mut p, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 's'")
            == "lost"
    });
    pair.sub_exec("SELECT logical_ext.enable_subscription('s')");
    let st = pair.wait_status("s", "the lost slot is reported", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("was invalidated on the publisher"))
    });
    let err = st.last_error.unwrap();
    assert!(err.contains("max_slot_wal_keep_size"), "what happened: {err}");
    assert!(err.contains("can never be streamed"), "what was lost: {err}");
    assert!(err.contains("copy_data => true"), "what to do: {err}");
    assert_eq!(count(&mut pair.sub_client(), "t"), 0, "nothing was applied past the gap");
}
