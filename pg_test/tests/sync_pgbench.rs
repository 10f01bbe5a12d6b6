//! A million-row initial copy while pgbench writes on the publisher: the
//! copy (exported snapshot) and the stream that follows it meet exactly, so
//! the tables end identical; the stream's updates of copied rows are not
//! conflicts.

use logical_ext_pg_test::background::{Background, wait_with_load};
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;
use std::process::Command;

#[test]
fn million_rows_copied_while_pgbench_writes() {
    let pair = Pair::start("sync_pgbench");
    let pgbench = pg_bin("pgbench");
    run_checked(
        Command::new(&pgbench).args(["-i", "-s", "10", "-q", "-d"]).arg(pair.publisher.conninfo()),
        "pgbench -i on the publisher",
    );
    // The same tables, empty, with their keys.
    run_checked(
        Command::new(&pgbench).args(["-i", "-I", "dtp", "-s", "10", "-d"]).arg(pair.subscriber.conninfo()),
        "pgbench -i -I dtp on the subscriber",
    );
    assert_eq!(count(&mut pair.pub_client(), "pgbench_accounts"), 1_000_000);
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    let mut bench = Background::pgbench(&pair.publisher, &["-c", "2", "-j", "2", "-T", "900"]);
    wait_with_load(
        &mut bench,
        CATCH_UP,
        "pgbench has committed transactions",
        || count(&mut pair.pub_client(), "pgbench_history") > 0,
        String::new,
    );
    let before = count(&mut pair.pub_client(), "pgbench_history");
    subscribe_copy(&pair, "s", &["p"], "");
    let states = wait_all_ready(&pair, "s");
    bench.assert_running("the copy did");
    assert!(count(&mut pair.pub_client(), "pgbench_history") > before, "no writes during the copy");
    let accounts = table(&states, "pgbench_accounts");
    assert_eq!(accounts.rows_copied, 1_000_000, "{accounts:#?}");
    wait_with_load(
        &mut bench,
        CATCH_UP,
        "50 streamed transactions applied",
        || pair.try_status("s").is_ok_and(|s| s.is_some_and(|s| s.applied_transactions >= 50)),
        || pair.explain("s"),
    );
    bench.stop();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM pgbench_accounts", "aid");
    pair.assert_same("SELECT * FROM pgbench_tellers", "tid");
    pair.assert_same("SELECT * FROM pgbench_branches", "bid");
    pair.assert_same("SELECT * FROM pgbench_history", "tid, bid, aid, delta, mtime");
    // Copied rows count as written by the subscription: updating them is
    // no update_origin_differs conflict.
    assert_eq!(count(&mut pair.sub_client(), "logical_ext.conflict_log"), 0);
}
