//! `origin = none` with `copy_data` (issue 15, item 6): as PostgreSQL 16
//! does, `create_subscription` (and `refresh_subscription`) WARN when a
//! publication covers a table that some subscription on the publisher
//! writes into — a copy cannot tell its rows' origin. Node A feeds the
//! publisher B through a native subscription (table `n`) and a logical_ext
//! one (table `l`); B's own table `own` is written by nobody else. The
//! subscriber C subscribes to B.

use logical_ext_pg_test::conflicts::{log_lines, log_lines_after};
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::sync::*;
use logical_ext_pg_test::*;

const WARNING: &str = "requested copy_data with origin = NONE but might copy data that had a different origin";

fn warnings(pair: &Pair, subscription: &str) -> Vec<String> {
    log_lines(&pair.subscriber, &format!("subscription \"{subscription}\" {WARNING}"))
}

#[test]
fn origin_none_copy_warns_when_the_publisher_subscribes() {
    let pair = Pair::start_with("origin_copy", &["shared_preload_libraries = 'logical_ext'"], &[]);
    let a = Cluster::start("origin_copy_a", &[]);
    let tables = "CREATE TABLE public.n (id int PRIMARY KEY); CREATE TABLE public.l (id int PRIMARY KEY);
                  CREATE TABLE public.own (id int PRIMARY KEY)";
    a.exec(tables);
    pair.both_exec(tables);
    a.exec("CREATE PUBLICATION pn FOR TABLE public.n; CREATE PUBLICATION pl FOR TABLE public.l");
    let a_conn = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", a.port());
    // B writes n through a native subscription, l through logical_ext.
    pair.pub_exec(&format!("CREATE SUBSCRIPTION from_a CONNECTION '{a_conn}' PUBLICATION pn"));
    pair.pub_exec("CREATE EXTENSION logical_ext");
    let mut b = pair.pub_client();
    b.execute(
        "SELECT logical_ext.create_subscription(name => 'le_from_a', conninfo => $1::text, publications => ARRAY['pl'])",
        &[&a_conn],
    )
    .expect("logical_ext subscription on B");
    pair.pub_exec(
        "CREATE PUBLICATION p_n FOR TABLE public.n; CREATE PUBLICATION p_l FOR TABLE public.l;
         CREATE PUBLICATION p_own FOR TABLE public.own",
    );

    // Not warned: origin any, no copy, or only tables nobody else writes.
    subscribe_copy(&pair, "any_copy", &["p_n"], ", origin => 'any'");
    pair.subscribe("none_nocopy", &["p_n"], ", origin => 'none'");
    subscribe_copy(&pair, "none_own", &["p_own"], ", origin => 'none'");
    for s in ["any_copy", "none_nocopy", "none_own"] {
        assert!(warnings(&pair, s).is_empty(), "{s} warned: {:?}", warnings(&pair, s));
    }
    // Warned, naming the publications, with PostgreSQL 16's DETAIL and HINT.
    subscribe_copy(&pair, "none_native", &["p_n", "p_own"], ", origin => 'none'");
    assert_eq!(warnings(&pair, "none_native").len(), 1);
    let detail = log_lines_after(&pair.subscriber, "subscription \"none_native\" requested copy_data");
    assert!(detail[0].contains("DETAIL:") && detail[0].contains("a publication (\"p_n\")"), "{detail:?}");
    let hint = log_lines(&pair.subscriber, "Verify that initial data copied from the publisher tables");
    assert!(!hint.is_empty());
    subscribe_copy(&pair, "none_le", &["p_l", "p_n"], ", origin => 'none'");
    let detail = log_lines_after(&pair.subscriber, "subscription \"none_le\" requested copy_data");
    assert!(detail[0].contains("publications (\"p_l\", \"p_n\")"), "{detail:?}");
    // A refresh warns only for tables it will copy.
    pair.pub_exec("ALTER PUBLICATION p_own ADD TABLE public.l");
    exec(&mut pair.sub_client(), "SELECT logical_ext.refresh_subscription('none_own')");
    assert_eq!(warnings(&pair, "none_own").len(), 1, "refresh adding l warns");
    // It still copies: a warning, not a refusal.
    for s in ["none_native", "none_le"] {
        wait_all_ready(&pair, s);
    }
}
