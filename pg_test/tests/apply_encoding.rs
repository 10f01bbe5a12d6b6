//! The change stream is UTF-8 and values reach the subscriber's input
//! functions unconverted: a subscription between databases that are not both
//! UTF8 is refused when it is created, with SQLSTATE 0A000 and a HINT,
//! instead of corrupting text later (issue 12).

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

const LATIN1: &str = "CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0";

#[test]
fn non_utf8_databases_are_refused_at_subscription_time() {
    let pair = Pair::start("encoding");
    pair.pub_exec(LATIN1);
    pair.publisher.client_db("latin").batch_execute("CREATE PUBLICATION p FOR ALL TABLES").unwrap();
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    let latin_pub = format!("host=127.0.0.1 port={} user=postgres dbname=latin", pair.publisher.port());
    let create = "SELECT logical_ext.create_subscription('s', $1::text, '{p}', copy_data => false)";

    let err = pair.sub_client().execute(create, &[&latin_pub]).expect_err("a LATIN1 publisher is refused");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "0A000", "{}", describe_error(&err));
    assert!(db.message().contains("LATIN1") && db.hint().is_some(), "{}", describe_error(&err));

    pair.sub_exec(LATIN1);
    let mut latin_sub = pair.subscriber.client_db("latin");
    latin_sub.batch_execute("CREATE EXTENSION logical_ext").unwrap();
    let err = latin_sub.execute(create, &[&pair.publisher_conninfo()]).expect_err("a LATIN1 subscriber is refused");
    assert_eq!(err.as_db_error().unwrap().code().code(), "0A000", "{}", describe_error(&err));

    // UTF8 on both sides still works.
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
}
