//! `resync_table` replaces only the table's own rows, as the publisher
//! copies `ONLY` that table: an inheritance child on the subscriber keeps
//! its rows, and the rows are replaced with DELETE (readers keep seeing the
//! old rows during the copy; no ACCESS EXCLUSIVE lock) — issue 12.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;

#[test]
fn resync_keeps_inheritance_children_and_readers() {
    let pair = Pair::start("sync_resync_only");
    pair.both_exec("CREATE TABLE r (id int PRIMARY KEY, v text)");
    pair.pub_exec("INSERT INTO r SELECT g, 'v' || g FROM generate_series(1, 2000) g");
    pair.sub_exec(
        "CREATE TABLE r_local (note text) INHERITS (r); INSERT INTO r_local VALUES (-1, 'kept', 'local only')",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE r");
    subscribe_copy(&pair, "s", &["p"], "");
    wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair.sub_exec("UPDATE ONLY r SET v = 'drift'");
    let filenode = |pair: &Pair| -> i64 {
        pair.sub_client().query_one("SELECT pg_catalog.pg_relation_filenode('r')::bigint", &[]).unwrap().get(0)
    };
    let before = filenode(&pair);
    pair.sub_exec("SELECT logical_ext.resync_table('s', 'r')");
    wait_tables(&pair, "s", "r recopied and ready", |t| {
        t.len() == 1 && t[0].state == "ready" && t[0].rows_copied == 2000
    });
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM ONLY r", "id");
    let kept: i64 = pair.sub_client().query_one("SELECT count(*) FROM r_local", &[]).unwrap().get(0);
    assert_eq!(kept, 1, "the inheritance child's rows survive a resync of its parent");
    // The rows were replaced with DELETE: a TRUNCATE (ACCESS EXCLUSIVE for
    // the whole copy, readers blocked) would have given the table a new
    // relfilenode.
    assert_eq!(filenode(&pair), before, "resync emptied the table with TRUNCATE");
}
