//! Subscriber columns of another type than the publisher's, as native
//! replication allows (values go through the subscriber column's input
//! function):
//!
//! - `compatible_types_apply`: int → bigint (also as the primary key that
//!   UPDATE and DELETE find rows by), varchar(10) → text, text → citext,
//!   numeric(10,2) → numeric, int → text: inserts, updates and deletes
//!   arrive, and every value reads the same as on the publisher;
//! - `incompatible_values_are_errors`: 'abc' into an int column and a
//!   20-character string into varchar(10) each stop the subscription with
//!   `last_error` naming table, column and value (the transaction is not
//!   applied, nothing is truncated, later transactions wait behind it); the
//!   error is retried and applies, whole, once the column type is widened.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

#[test]
fn compatible_types_apply() {
    let pair = Pair::start("apply_typediff");
    pair.pub_exec(
        "CREATE TABLE c (id int PRIMARY KEY, a int, b varchar(10), t text, n numeric(10,2), i int);
         CREATE PUBLICATION p FOR TABLE c;",
    );
    pair.sub_exec(
        "CREATE EXTENSION citext;
         CREATE TABLE c (id bigint PRIMARY KEY, a bigint, b text, t citext, n numeric, i text);",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec(
        "INSERT INTO c SELECT g, g * 1000, 'v' || g, 'Text ' || g, g * 1.5, -g FROM generate_series(1, 100) g;
         INSERT INTO c VALUES (2147483647, 2147483647, '0123456789', 'MiXeD', 99999999.99, -2147483648),
                              (-2147483648, NULL, '', '', 0.10, 0)",
    );
    pair.pub_exec("UPDATE c SET a = a + 1, b = b || 'u', t = upper(t), n = n + 0.01, i = i * 2 WHERE id % 3 = 0");
    pair.pub_exec("UPDATE c SET id = id + 1000 WHERE id BETWEEN 10 AND 19");
    pair.pub_exec("DELETE FROM c WHERE id % 7 = 0");
    pair.wait_caught_up("s");
    // The same text on both sides, column by column.
    pair.assert_same("SELECT id::text, a::text, b::text, t::text, n::text, i::text FROM c", "id");
    let mut sub = pair.sub_client();
    assert_eq!(count(&mut sub, "c"), count(&mut pair.pub_client(), "c"));
    // citext compares case-insensitively on the subscriber.
    assert_eq!(count(&mut sub, "c WHERE t = 'mixed'"), 1);
    assert_eq!(query_string(&mut sub, "SELECT n::text FROM c WHERE id = -2147483648"), "0.10");
    assert_eq!(pair.status("s").last_error, None);
}

/// Waits for the subscription's error and returns `last_error`.
fn wait_error(pair: &Pair, what: &str) -> String {
    let st = pair.wait_status("s", what, |s| s.state == "error" && s.last_error.is_some());
    st.last_error.expect("checked")
}

#[test]
fn incompatible_values_are_errors() {
    let pair = Pair::start("apply_typebad");
    pair.pub_exec(
        "CREATE TABLE x (id int PRIMARY KEY, v text, w text);
         CREATE TABLE y (id int PRIMARY KEY);
         CREATE PUBLICATION p FOR TABLE x, y;",
    );
    pair.sub_exec(
        "CREATE TABLE x (id int PRIMARY KEY, v int, w varchar(10));
         CREATE TABLE y (id int PRIMARY KEY);",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO x VALUES (1, '7', 'short')");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v::int, w::text FROM x", "id");

    // Not an integer: the transaction (two rows) stops at the bad value.
    pair.pub_exec("INSERT INTO x VALUES (2, '8', 'ok'), (3, 'abc', 'ok')");
    pair.pub_exec("INSERT INTO y VALUES (1)");
    let err = wait_error(&pair, "an error about x.v");
    for part in ["\"public.x\"", "\"v\"", "abc", "integer"] {
        assert!(err.contains(part), "last_error must name {part}: {err}");
    }
    let mut sub = pair.sub_client();
    assert_eq!(count(&mut sub, "x"), 1, "part of the failing transaction was applied");
    assert_eq!(count(&mut sub, "y"), 0, "a later transaction was applied before the failing one");
    // Retried: once the column takes text, the whole transaction arrives.
    pair.sub_exec("ALTER TABLE x ALTER COLUMN v TYPE text");
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v, w::text FROM x", "id");
    pair.assert_same_tables(&["y"]);
    pair.wait_status("s", "streaming without an error", |s| s.state == "streaming" && s.last_error.is_none());

    // Too long for varchar(10): an error, never a silent truncation.
    let long = "twenty-characters-xy";
    assert_eq!(long.len(), 20);
    pair.pub_exec(&format!("INSERT INTO x VALUES (4, 'four', '{long}')"));
    let err = wait_error(&pair, "an error about x.w");
    for part in ["\"public.x\"", "\"w\"", long, "character varying(10)"] {
        assert!(err.contains(part), "last_error must name {part}: {err}");
    }
    assert_eq!(count(&mut sub, "x WHERE id = 4"), 0, "the row was applied despite the error");
    pair.sub_exec("ALTER TABLE x ALTER COLUMN w TYPE varchar(30)");
    pair.wait_caught_up("s");
    assert_eq!(query_string(&mut sub, "SELECT w::text FROM x WHERE id = 4"), long);
    pair.assert_same("SELECT id, v, w::text FROM x", "id");
}
