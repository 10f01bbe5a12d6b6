//! A DDL event reaches every subscription of a database that follows it —
//! two subscriptions with overlapping publications, or a `replicate_ddl`
//! event (addressed to every subscription). It is replayed once per database:
//! the second subscription records it as already replayed and goes on,
//! instead of failing on "already exists" for ever (issue 12).

use logical_ext_pg_test::replication::*;

#[test]
fn ddl_is_replayed_once_per_database() {
    let pair = Pair::start_with("ddl_once", &["shared_preload_libraries = 'logical_ext'"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
    pair.pub_exec("CREATE PUBLICATION pa FOR TABLE a; CREATE PUBLICATION pb FOR TABLE b");
    pair.subscribe("sa", &["pa"], "");
    let conninfo = pair.publisher_conninfo();
    pair.subscribe_with_conninfo("sb", &conninfo, &["pb"], "");
    pair.wait_streaming("sa");
    pair.wait_streaming("sb");
    pair.pub_exec("SELECT logical_ext.replicate_ddl('CREATE TABLE public.c (id int PRIMARY KEY, v text)')");
    pair.pub_exec("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)");
    pair.wait_sub_count("sa", "a", 1);
    pair.wait_sub_count("sb", "b", 1);
    for sub in ["sa", "sb"] {
        pair.wait_caught_up(sub);
        let st = pair.status(sub);
        assert_eq!(st.state, "streaming", "{sub}: {}", pair.explain(sub));
    }
    let rows: Vec<(String, bool)> = pair
        .sub_client()
        .query(
            "SELECT subscription, replicated FROM logical_ext.ddl_log
              WHERE source = 'apply' AND command_tag = 'CREATE TABLE' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let replayed = rows.iter().filter(|(_, ok)| *ok).count();
    assert_eq!(replayed, 1, "replayed exactly once: {rows:?}");
    let c: i64 = pair
        .sub_client()
        .query_one("SELECT count(*) FROM pg_catalog.pg_class WHERE oid = 'public.c'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(c, 1);
}
