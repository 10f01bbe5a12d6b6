//! Two-phase decoding (option `two-phase`, docs/FORMAT.md "Two-phase"):
//! without it a prepared transaction is decoded whole at COMMIT PREPARED, as
//! always; with it, `B`, changes and `P` at PREPARE, then `CP` or `RP`. A
//! transaction prepared before the slot became two-phase comes whole (`B`,
//! changes, `P`) right before its `CP`. Once two-phase, a slot stays so
//! (PostgreSQL's rule); format-version 1 is refused with it.

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;

const META: &[(&str, &str)] = &[("include-xids", "1"), ("include-timestamp", "1"), ("include-lsn", "1")];

fn with_two_phase(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, Option<&'static str>)> {
    let mut o = opts(META);
    o.push(("two-phase", Some("1")));
    o.extend(opts(extra));
    o
}

/// `BEGIN; <sql>; PREPARE TRANSACTION '<gid>'`; returns the xid.
fn prepare(c: &mut Client, sql: &str, gid: &str) -> String {
    exec(c, &format!("BEGIN; {sql}"));
    let xid = query_string(c, "SELECT pg_current_xact_id()::text");
    exec(c, &format!("PREPARE TRANSACTION '{gid}'"));
    xid
}

fn slot_two_phase(c: &mut Client, slot: &str) -> bool {
    c.query_one("SELECT two_phase FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).unwrap().get(0)
}

#[test]
fn prepared_transactions_with_and_without_two_phase() {
    let (_cluster, mut c) = plugin_cluster_with("dec_two_phase", &["max_prepared_transactions = 10"]);
    exec(&mut c, "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY)");
    create_slot(&mut c, "late", PLUGIN);

    // Without the option: nothing at PREPARE, the whole transaction at
    // COMMIT PREPARED, nothing at all for a rolled back one.
    prepare(&mut c, "INSERT INTO t VALUES (1, 'a')", "g1");
    assert_eq!(actions(&get_changes(&mut c, "s", &opts(META))), "");
    exec(&mut c, "COMMIT PREPARED 'g1'");
    prepare(&mut c, "INSERT INTO t VALUES (99, 'x')", "g1r");
    exec(&mut c, "ROLLBACK PREPARED 'g1r'");
    let plain = get_changes(&mut c, "s", &opts(META));
    assert_eq!(actions(&plain), "B I C", "\n{}", dump(&plain));
    assert!(!slot_two_phase(&mut c, "s"));

    // With it: B, changes, P at PREPARE; CP at COMMIT PREPARED.
    let xid2 = prepare(&mut c, "INSERT INTO t VALUES (2, 'b'); UPDATE t SET v = 'a2' WHERE id = 1", "g2");
    let at_prepare = get_changes(&mut c, "s", &with_two_phase(&[]));
    assert_eq!(actions(&at_prepare), "B I U P", "\n{}", dump(&at_prepare));
    assert!(slot_two_phase(&mut c, "s"), "the option marks the slot two-phase");
    let p = &at_prepare[3].doc;
    assert_eq!(p["gid"], "g2");
    assert_eq!(p["xid"].to_string(), xid2);
    assert_eq!(p["lsn"], at_prepare[0].doc["lsn"], "P and B carry the PREPARE record's position");
    assert!(p["nextlsn"].is_string() && p["timestamp"].is_string(), "{p}");
    exec(&mut c, "COMMIT PREPARED 'g2'");
    let at_commit = get_changes(&mut c, "s", &with_two_phase(&[]));
    assert_eq!(actions(&at_commit), "CP", "\n{}", dump(&at_commit));
    let cp = &at_commit[0].doc;
    assert_eq!((cp["gid"].as_str(), cp["xid"].to_string()), (Some("g2"), xid2.clone()));
    let commit_ts = query_string(&mut c, &format!("SELECT pg_xact_commit_timestamp('{xid2}'::xid)::text"));
    assert_eq!(cp["timestamp"].as_str().map(str::to_string), Some(commit_ts), "CP's time is the commit's");
    assert_ne!(cp["lsn"], p["lsn"]);

    // ROLLBACK PREPARED: B I P, then RP.
    let xid3 = prepare(&mut c, "INSERT INTO t VALUES (3, 'c')", "g3");
    let prepared = get_changes(&mut c, "s", &with_two_phase(&[]));
    assert_eq!(actions(&prepared), "B I P", "\n{}", dump(&prepared));
    exec(&mut c, "ROLLBACK PREPARED 'g3'");
    let rolled = get_changes(&mut c, "s", &with_two_phase(&[]));
    assert_eq!(actions(&rolled), "RP", "\n{}", dump(&rolled));
    assert_eq!((rolled[0].doc["gid"].as_str(), rolled[0].doc["xid"].to_string()), (Some("g3"), xid3));
    // Rolled back before it was decoded: PostgreSQL stops replaying it at
    // its first change (a concurrent abort), so only its RP comes.
    prepare(&mut c, "INSERT INTO t VALUES (33, 'c')", "g3b");
    exec(&mut c, "ROLLBACK PREPARED 'g3b'");
    let aborted = get_changes(&mut c, "s", &with_two_phase(&[]));
    assert_eq!(actions(&aborted), "RP", "\n{}", dump(&aborted));

    // A slot once two-phase stays so, option or not (PostgreSQL's rule);
    // without include-* options P/CP still carry xid and gid.
    prepare(&mut c, "INSERT INTO t VALUES (4, 'd')", "g4");
    exec(&mut c, "COMMIT PREPARED 'g4'");
    let bare = get_changes(&mut c, "s", &[]);
    assert_eq!(actions(&bare), "B I P CP", "\n{}", dump(&bare));
    for d in [&bare[2].doc, &bare[3].doc] {
        assert_eq!(d["gid"], "g4");
        assert!(d["xid"].is_u64() && d.get("lsn").is_none() && d.get("timestamp").is_none(), "{d}");
    }

    // A prepared transaction with nothing selected: no B/P, but its CP.
    prepare(&mut c, "INSERT INTO other VALUES (1)", "g5");
    exec(&mut c, "COMMIT PREPARED 'g5'");
    let filtered = get_changes(&mut c, "s", &with_two_phase(&[("add-tables", "public.t")]));
    assert_eq!(actions(&filtered), "CP", "\n{}", dump(&filtered));

    // Prepared before the slot became two-phase: the whole transaction
    // comes right before its CP.
    prepare(&mut c, "INSERT INTO t VALUES (6, 'f'); DELETE FROM t WHERE id = 4", "g6");
    let before = get_changes(&mut c, "late", &opts(META));
    assert_eq!(actions(&before), "B I C B I U C B I C B I C", "the slot moves past g6:\n{}", dump(&before));
    assert!(actions(&get_changes(&mut c, "late", &with_two_phase(&[]))).is_empty());
    assert!(slot_two_phase(&mut c, "late"));
    exec(&mut c, "COMMIT PREPARED 'g6'");
    let late = get_changes(&mut c, "late", &with_two_phase(&[]));
    assert_eq!(actions(&late), "B I D P CP", "\n{}", dump(&late));
    assert_eq!((late[3].doc["gid"].as_str(), late[4].doc["gid"].as_str()), (Some("g6"), Some("g6")));

    // format-version 1 has no place for a prepared transaction.
    let refused = |c: &mut Client, slot: &str, o: Vec<(&str, Option<&str>)>| {
        let e = try_changes(c, false, slot, None, &o).expect_err("format-version 1 with two-phase");
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "22023", "{db:?}");
        db.message().to_string()
    };
    let m = refused(&mut c, "s", vec![("format-version", Some("1"))]);
    assert!(m.contains("two-phase slot"), "{m}");
    create_slot(&mut c, "v1", PLUGIN);
    let m = refused(&mut c, "v1", vec![("format-version", Some("1")), ("two-phase", Some("1"))]);
    assert!(m.contains("two-phase"), "{m}");
    assert!(!slot_two_phase(&mut c, "v1"), "a refused session leaves the slot as it was");
}
