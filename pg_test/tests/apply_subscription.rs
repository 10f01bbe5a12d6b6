//! The life of a subscription: refusals before anything is created
//! (no preload, a published table missing for copy_data), create, status and privileges (the
//! password is never readable by a monitoring role), feedback (the
//! publisher's slot advances while idle, even past WAL that carries nothing
//! for the subscription), disable/enable, drop (remote slot and local origin
//! removed).

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

const PASSWORD: &str = "s3cr3t-Pa55";

fn slot_row(pair: &Pair, slot: &str) -> Option<(bool, Option<i32>)> {
    let mut c = pair.pub_client();
    c.query_opt("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

fn origins(pair: &Pair) -> Vec<String> {
    let mut c = pair.sub_client();
    c.query("SELECT roname FROM pg_replication_origin ORDER BY roname", &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

fn apply_workers(pair: &Pair) -> i64 {
    count(&mut pair.sub_client(), "pg_stat_activity WHERE backend_type = 'logical_ext apply'")
}

#[test]
fn subscription_lifecycle() {
    let pair = Pair::start("apply_life");
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.pub_exec(
        "CREATE TABLE unpublished (id int, v text);
         CREATE PUBLICATION p FOR TABLE t;",
    );
    let conninfo = format!("{} password={PASSWORD}", pair.publisher_conninfo());

    // Refused without shared_preload_libraries (the publisher has none),
    // with a hint, before any slot is created.
    let mut pubc = pair.pub_client();
    exec(&mut pubc, "CREATE EXTENSION logical_ext");
    let (code, msg, hint) = expect_error(
        &mut pubc,
        &format!(
            "SELECT logical_ext.create_subscription('nopreload', '{}', ARRAY['p'], copy_data => false)",
            pair.publisher_conninfo()
        ),
    );
    assert_eq!(code, "55000", "{msg}");
    assert!(msg.contains("shared_preload_libraries"), "{msg}");
    assert!(hint.contains("shared_preload_libraries"), "hint: {hint:?}");
    assert_eq!(count(&mut pubc, "pg_replication_slots"), 0);
    assert_eq!(count(&mut pubc, "logical_ext.subscription"), 0);

    // copy_data => true (the default) with a published table missing on the
    // subscriber: 42P01 and a hint, before anything is created.
    exec(&mut pubc, "CREATE PUBLICATION p_missing FOR TABLE unpublished");
    let mut sub = pair.sub_client();
    let (code, msg, hint) = expect_error(
        &mut sub,
        &format!("SELECT logical_ext.create_subscription('copying', '{conninfo}', ARRAY['p_missing'])"),
    );
    assert_eq!(code, "42P01", "{msg}");
    assert!(msg.contains("unpublished"), "{msg}");
    assert!(hint.contains("copy_data => false"), "hint: {hint:?}");
    assert_eq!(count(&mut pubc, "pg_replication_slots"), 0, "the refused subscription left a slot behind");
    assert_eq!(count(&mut sub, "logical_ext.subscription"), 0);

    // Create: a slot on the publisher, an origin here, a streaming worker.
    pair.subscribe_with_conninfo("s", &conninfo, &["p"], "");
    let st = pair.wait_streaming("s");
    assert!(st.enabled);
    assert_eq!(st.slot_name.as_deref(), Some("s"));
    assert_eq!(st.publications, vec!["p".to_string()]);
    assert_eq!(st.origin, "any");
    assert_eq!(apply_workers(&pair), 1);
    pair.wait_status("s", "its slot is active on the publisher", |_| slot_row(&pair, "s").is_some_and(|r| r.0));
    let subid: i32 = sub.query_one("SELECT id FROM logical_ext.subscription WHERE name = 's'", &[]).unwrap().get(0);
    let origin = format!("logical_ext_{subid}");
    assert_eq!(origins(&pair), vec![origin.clone()]);

    pair.pub_exec("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g");
    pair.pub_exec("UPDATE t SET v = 'u' WHERE id % 3 = 0; DELETE FROM t WHERE id % 7 = 0;");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    let st = pair.status("s");
    assert_eq!(st.state, "streaming", "{st:#?}");
    assert!(st.last_error.is_none(), "{st:#?}");
    assert!(st.received_lsn.is_some() && st.latest_end_lsn.is_some(), "{st:#?}");
    assert!(st.last_msg_send_time.is_some() && st.last_msg_receipt_time.is_some(), "{st:#?}");
    assert!(st.applied_transactions >= 2, "{st:#?}");
    assert_eq!(st.applied_changes, 1000 + 333 + 142, "{st:#?}");
    let applied = parse_lsn(st.applied_lsn.as_deref().expect("applied_lsn after applying"));

    // Feedback: WAL that carries nothing for this subscription (a table
    // outside the publication) still moves the slot's confirmed_flush_lsn
    // to the publisher's current position while idle, and nothing is
    // applied for it.
    pair.pub_exec("INSERT INTO unpublished SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g");
    let target = pair.publisher_flush_lsn();
    assert!(target > applied);
    pair.wait_caught_up("s");
    let confirmed = pair.confirmed_flush("s").unwrap();
    assert!(confirmed >= target, "confirmed_flush_lsn {} < {}", format_lsn(confirmed), format_lsn(target));
    pair.assert_same_tables(&["t"]);
    assert_eq!(pair.status("s").applied_changes, 1000 + 333 + 142);

    // Privileges: a pg_monitor member reads the status with the password
    // redacted; neither it nor a plain role reads the catalog table or
    // manages subscriptions.
    let stored: String =
        sub.query_one("SELECT conninfo FROM logical_ext.subscription WHERE name = 's'", &[]).unwrap().get(0);
    assert!(stored.contains(PASSWORD), "the superuser sees the stored conninfo: {stored}");
    exec(
        &mut sub,
        "CREATE ROLE mon LOGIN; GRANT pg_monitor TO mon;
         CREATE ROLE plain LOGIN;",
    );
    let connect_as = |role: &str| {
        let ci =
            format!("host=127.0.0.1 port={} user={role} dbname=postgres connect_timeout=30", pair.subscriber.port());
        Client::connect(&ci, NoTls).unwrap_or_else(|e| panic!("connect as {role}: {}", describe_error(&e)))
    };
    let mut mon = connect_as("mon");
    let rows = mon.query("SELECT conninfo, state, worker_pid FROM logical_ext.subscription_status", &[]).unwrap();
    assert_eq!(rows.len(), 1);
    let shown: String = rows[0].get(0);
    assert!(!shown.contains(PASSWORD), "pg_monitor sees the password: {shown}");
    assert!(shown.contains("********") && shown.contains("user=postgres"), "redacted conninfo: {shown}");
    assert_eq!(rows[0].get::<_, String>(1), "streaming");
    assert!(rows[0].get::<_, Option<i32>>(2).is_some());
    let everything: String =
        mon.query_one("SELECT string_agg(s::text, ' ') FROM logical_ext.subscription_status s", &[]).unwrap().get(0);
    assert!(!everything.contains(PASSWORD), "{everything}");
    for sql in [
        "SELECT conninfo FROM logical_ext.subscription".to_string(),
        "SELECT * FROM logical_ext.worker_status()".to_string(),
        format!("SELECT logical_ext.create_subscription('evil', '{conninfo}', ARRAY['p'], copy_data => false)"),
        "SELECT logical_ext.drop_subscription('s')".to_string(),
        "SELECT logical_ext.disable_subscription('s')".to_string(),
        "SELECT logical_ext.alter_subscription('s', '{\"conninfo\": \"host=evil\"}')".to_string(),
    ] {
        let (code, msg, _) = expect_error(&mut mon, &sql);
        assert_eq!(code, "42501", "pg_monitor member: {sql}: {msg}");
    }
    let mut plain = connect_as("plain");
    for sql in ["SELECT * FROM logical_ext.subscription_status", "SELECT conninfo FROM logical_ext.subscription"] {
        let (code, msg, _) = expect_error(&mut plain, sql);
        assert_eq!(code, "42501", "plain role: {sql}: {msg}");
    }
    drop(plain);

    // Disable: the worker stops and the slot is released; rows written
    // meanwhile arrive after enable.
    exec(&mut sub, "SELECT logical_ext.disable_subscription('s')");
    let st = pair.status("s");
    assert!(!st.enabled && st.state == "disabled" && st.worker_pid.is_none(), "{st:#?}");
    assert_eq!(apply_workers(&pair), 0);
    pair.wait_status("s", "its slot is released on the publisher", |_| slot_row(&pair, "s").is_some_and(|r| !r.0));
    pair.pub_exec("INSERT INTO t SELECT g, 'while disabled' FROM generate_series(2001, 2500) g");
    pair.pub_exec("DELETE FROM t WHERE id <= 100");
    let before = count(&mut sub, "t");
    assert_eq!(count(&mut sub, "t WHERE v = 'while disabled'"), 0);
    assert_eq!(pair.status("s").worker_pid, None);
    exec(&mut sub, "SELECT logical_ext.enable_subscription('s')");
    let st = pair.wait_streaming("s");
    assert!(st.enabled, "{st:#?}");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    assert_eq!(count(&mut sub, "t"), before + 500 - 86, "500 inserted, 86 of ids 1..100 deleted (14 were already)");

    // Alter the connection string (a new password): the worker starts a new
    // session with it (in the same process), and the new password is as
    // hidden as the old one.
    let new_conninfo = format!("{} password=other-{PASSWORD}", pair.publisher_conninfo());
    sub.execute(
        "SELECT logical_ext.alter_subscription('s', jsonb_build_object('conninfo', $1::text))",
        &[&new_conninfo],
    )
    .unwrap_or_else(|e| panic!("alter_subscription: {}", describe_error(&e)));
    let st = pair.wait_status("s", "the worker streaming with the new conninfo", |s| {
        s.state == "streaming" && s.worker_pid.is_some() && s.conninfo.contains("password=********")
    });
    assert!(!st.conninfo.contains(PASSWORD), "{st:#?}");
    let shown: String = mon.query_one("SELECT conninfo FROM logical_ext.subscription_status", &[]).unwrap().get(0);
    assert!(!shown.contains(PASSWORD), "pg_monitor sees the new password: {shown}");
    pair.pub_exec("UPDATE t SET v = 'after alter' WHERE id % 2 = 0");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["t"]);
    drop(mon);

    // Drop: worker, remote slot, local origin and record are gone.
    exec(&mut sub, "SELECT logical_ext.drop_subscription('s')");
    assert!(slot_row(&pair, "s").is_none(), "the slot is still on the publisher");
    assert!(origins(&pair).is_empty(), "origin {origin} is still there: {:?}", origins(&pair));
    assert_eq!(count(&mut sub, "logical_ext.subscription_status"), 0);
    assert_eq!(count(&mut sub, "logical_ext.subscription"), 0);
    assert_eq!(apply_workers(&pair), 0);
    // Nothing is applied any more.
    pair.pub_exec("INSERT INTO t VALUES (99999, 'after drop')");
    let (code, msg, _) = expect_error(&mut sub, "SELECT logical_ext.drop_subscription('s')");
    assert_eq!(code, "42704", "{msg}");
    assert_eq!(count(&mut sub, "t WHERE id = 99999"), 0);
}
