//! Large data end to end (issue 12, fault test 9): a 200 MB value and a
//! 2M-row transaction reach the subscriber exactly, and the peak memory
//! (`VmHWM`) of the publisher's walsender and of the apply worker is
//! recorded for each (printed; bounds on it belong to the apply-speed
//! work, issue 14).

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::time::Instant;

fn walsender_pid(pair: &Pair) -> u32 {
    let mut pid = 0;
    wait_until(CATCH_UP, "the subscription's walsender is active", || {
        pid = pair
            .pub_client()
            .query_one(
                "SELECT coalesce(max(active_pid), 0) FROM pg_replication_slots WHERE plugin = 'logical_ext' AND active",
                &[],
            )
            .map(|r| r.get::<_, i32>(0))
            .unwrap_or(0);
        pid > 0
    });
    pid as u32
}

fn mib(kib: u64) -> u64 {
    kib >> 10
}

#[test]
fn huge_value_and_two_million_row_transaction_exact() {
    let pair = Pair::start("apply_large");
    pair.both_exec("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE many (id int PRIMARY KEY, k int)");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let worker = pair.worker_pid("s") as u32;
    let walsender = walsender_pid(&pair);
    let (w0, s0) = (peak_rss_kib(walsender), peak_rss_kib(worker));

    let started = Instant::now();
    pair.pub_exec("INSERT INTO many SELECT g, g % 97 FROM generate_series(1, 2000000) g");
    pair.wait_caught_up("s");
    let rows_time = started.elapsed();
    pair.assert_same("SELECT * FROM many", "id");
    let (w1, s1) = (peak_rss_kib(walsender), peak_rss_kib(worker));

    // 5.8M chunks of 35 bytes (a quote, a backslash and a newline each): 203 MB.
    let started = Instant::now();
    pair.pub_exec(
        "INSERT INTO big SELECT 1, string_agg(md5(i::text) || E'\"\\\\\\n', '') FROM generate_series(1, 5800000) i",
    );
    pair.wait_caught_up("s");
    let value_time = started.elapsed();
    let same: bool = pair
        .sub_client()
        .query_one("SELECT length(v) = 5800000 * 35 FROM big WHERE id = 1", &[])
        .expect("read the value on the subscriber")
        .get(0);
    assert!(same, "the 200 MB value arrived with another length");
    pair.assert_same("SELECT id, md5(v) FROM big", "id");
    let (w2, s2) = (peak_rss_kib(walsender), peak_rss_kib(worker));
    assert_eq!(pair.worker_pid("s") as u32, worker, "the apply worker did not restart");

    eprintln!(
        "2M-row transaction: applied in {rows_time:?}; walsender VmHWM {} -> {} MiB, apply worker VmHWM {} -> {} MiB\n\
         then a 200 MB value: applied in {value_time:?}; walsender VmHWM {} MiB, apply worker VmHWM {} MiB",
        mib(w0),
        mib(w1),
        mib(s0),
        mib(s1),
        mib(w2),
        mib(s2)
    );
}
