//! Conflict resolutions (issue 4) on a real publisher/subscriber pair.
//!
//! `every_resolution_for_every_conflict_type`: one table per resolution
//! (apply_remote, keep_local, skip, last_update_wins, first_update_wins, set
//! per table with `set_conflict_resolution(..., relation => ...)`, and `skip`
//! as the subscription default), and in each table every conflict type the
//! spec names. For the timestamp resolutions each conflict exists twice:
//! once with the local row written before the publisher's transaction and
//! once after it (the subscription is disabled meanwhile, so the order is
//! certain). The expected outcome of each case is computed from a table of
//! rules, not copied per case; the test checks the tables' rows, one
//! conflict_log row per case with its exact contents (types, effective
//! resolution, local/remote tuples, the publisher transaction's commit LSN
//! and timestamp, the local row's commit timestamp and origin), that log rows
//! commit in the transaction applying the change, the counters, and that the
//! `conflict_resolutions` view shows the policy that was applied.
//!
//! `rules_precedence_rejections_and_retention`: the built-in defaults with no
//! rules (view and behaviour), the effective-policy view (table+type >
//! table > type > subscription default > built-in default, a table rule
//! that makes no sense for a type falling through), overwriting a rule,
//! SQLSTATE 22023 for every nonsense (type, resolution) pair and for unknown
//! names, acceptance of every sensible pair, rules dropped with their
//! subscription, and `logical_ext.conflict_log_retention`.
//!
//! `rule_changes_in_quick_succession_take_effect`: many
//! `set_conflict_resolution` calls in a row on an enabled subscription all
//! succeed, leave one worker, and that worker applies the last rule.

use logical_ext_pg_test::conflicts::*;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::collections::{BTreeMap, BTreeSet};

/// One table per resolution, set as that table's rule.
const TABLES: [(&str, &str); 5] = [
    ("t_apply_remote", "apply_remote"),
    ("t_keep_local", "keep_local"),
    ("t_skip", "skip"),
    ("t_lww", "last_update_wins"),
    ("t_fww", "first_update_wins"),
];

/// The subscription default: what applies when a table's resolution makes
/// no sense for a type (e.g. last_update_wins for update_missing).
const DEFAULT_RESOLUTION: &str = "skip";

/// A row that every remote transaction updates without any conflict, last:
/// the rest of a transaction is applied whatever happened to its conflicts.
const CONTROL_ID: i32 = 61;

#[derive(Debug, Clone, Copy)]
struct Case {
    conflict_type: &'static str,
    key: i32,
    /// The local row is written after the publisher's transaction commits.
    local_newer: bool,
}

const CASES: [Case; 10] = [
    Case { conflict_type: "insert_exists", key: 1, local_newer: false },
    Case { conflict_type: "insert_exists", key: 2, local_newer: true },
    Case { conflict_type: "update_exists", key: 11, local_newer: false },
    Case { conflict_type: "update_exists", key: 12, local_newer: true },
    Case { conflict_type: "update_missing", key: 21, local_newer: false },
    Case { conflict_type: "delete_missing", key: 31, local_newer: false },
    Case { conflict_type: "update_origin_differs", key: 41, local_newer: false },
    Case { conflict_type: "update_origin_differs", key: 42, local_newer: true },
    Case { conflict_type: "delete_origin_differs", key: 51, local_newer: false },
    Case { conflict_type: "delete_origin_differs", key: 52, local_newer: true },
];

/// The resolution the subscription must use for `conflict_type` on a table
/// whose own rule is `table_rule`.
fn effective(table_rule: &str, conflict_type: &str) -> &'static str {
    let r = if allowed(conflict_type, table_rule) { table_rule } else { DEFAULT_RESOLUTION };
    RESOLUTIONS.into_iter().find(|x| *x == r).expect("a known resolution")
}

/// Whether the remote change wins under `resolution` (the spec's meaning of
/// each resolution; local_newer: the local row's commit is the later one).
fn remote_wins(resolution: &str, local_newer: bool) -> bool {
    match resolution {
        "apply_remote" => true,
        "keep_local" | "skip" => false,
        "last_update_wins" => !local_newer,
        "first_update_wins" => local_newer,
        other => panic!("no outcome for {other}"),
    }
}

/// Rows of a table as id → (u, v).
type Rows = BTreeMap<i32, (Option<String>, String)>;

fn table_rows(client: &mut Client, table: &str) -> Rows {
    client
        .query(&format!("SELECT id, u, v FROM {table} ORDER BY id"), &[])
        .unwrap_or_else(|e| panic!("reading {table}: {}", describe_error(&e)))
        .iter()
        .map(|r| (r.get::<_, i32>(0), (r.get::<_, Option<String>>(1), r.get::<_, String>(2))))
        .collect()
}

/// What the table must hold at the end.
fn expected_rows(table_rule: &str) -> Rows {
    let mut rows = Rows::new();
    let put = |rows: &mut Rows, id: i32, u: Option<String>, v: &str| {
        rows.insert(id, (u, v.to_string()));
    };
    put(&mut rows, CONTROL_ID, None, "remote");
    for c in CASES {
        let k = c.key;
        let remote = remote_wins(effective(table_rule, c.conflict_type), c.local_newer);
        match c.conflict_type {
            "insert_exists" => put(&mut rows, k, None, if remote { "remote" } else { "local" }),
            "update_exists" if remote => put(&mut rows, k, Some(format!("ue{k}")), "remote"),
            "update_exists" => {
                put(&mut rows, k, None, "base");
                put(&mut rows, k + 100, Some(format!("ue{k}")), "local");
            }
            "update_missing" if remote => put(&mut rows, k, None, "remote"),
            "update_missing" | "delete_missing" => {}
            "update_origin_differs" => put(&mut rows, k, None, if remote { "remote" } else { "local" }),
            "delete_origin_differs" if remote => {}
            "delete_origin_differs" => put(&mut rows, k, None, "local"),
            other => panic!("unknown conflict type {other}"),
        }
    }
    rows
}

#[test]
fn every_resolution_for_every_conflict_type() {
    let pair = Pair::start("conflict_matrix");
    for (t, _) in TABLES {
        pair.both_exec(&format!("CREATE TABLE {t} {SCENARIO_COLUMNS}"));
    }
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    // Rules are set while the subscription is disabled: the worker starts
    // with all of them (quick successive changes of a running worker's rules
    // are the subject of `rule_changes_in_quick_succession_take_effect`).
    pair.subscribe("s", &["p"], ", enabled => false");
    let mut sub = pair.sub_client();
    exec(&mut sub, &format!("SELECT logical_ext.set_conflict_resolution('s', '{DEFAULT_RESOLUTION}')"));
    for (t, r) in TABLES {
        exec(&mut sub, &format!("SELECT logical_ext.set_conflict_resolution('s', '{r}', relation => '{t}'::regclass)"));
    }
    exec(&mut sub, "SELECT logical_ext.enable_subscription('s')");
    pair.wait_streaming("s");
    let origin = format!("logical_ext_{}", subscription_id(&pair.subscriber, "s"));
    let origin_id: String = sub
        .query_one("SELECT roident::text FROM pg_replication_origin WHERE roname = $1", &[&origin])
        .expect("the subscription's origin")
        .get(0);

    // The view shows the policy the worker is about to apply.
    let view: BTreeSet<(Option<String>, String, String)> = sub
        .query(
            "SELECT relation::regclass::text, conflict_type, resolution FROM logical_ext.conflict_resolutions \
             WHERE subscription = 's'",
            &[],
        )
        .expect("conflict_resolutions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut want = BTreeSet::new();
    for ty in CONFLICT_TYPES {
        want.insert((None, ty.to_string(), DEFAULT_RESOLUTION.to_string()));
        for (t, r) in TABLES {
            want.insert((Some(t.to_string()), ty.to_string(), effective(r, ty).to_string()));
        }
    }
    assert_eq!(view, want, "logical_ext.conflict_resolutions (left) differs from the rules (right)");

    // Phase 1: the rows the conflicts need, replicated (written by this
    // subscription's origin, so later remote changes to them are clean).
    for (t, _) in TABLES {
        let mut sql = format!("INSERT INTO {t} VALUES ({CONTROL_ID}, NULL, 'base');");
        for c in CASES {
            if let Some(b) = scenario(c.conflict_type, t, c.key).base {
                sql.push_str(&b);
                sql.push(';');
            }
        }
        pair.pub_exec(&sql);
    }
    pair.wait_caught_up("s");
    assert_eq!(count(&mut sub, "logical_ext.conflict_log"), 0, "replicating fresh rows raised conflicts");

    // Phase 2: local writes older than the publisher's transactions.
    let local_writes = |newer: bool| {
        let mut sql = String::new();
        for (t, _) in TABLES {
            for c in CASES.iter().filter(|c| c.local_newer == newer) {
                sql.push_str(&scenario(c.conflict_type, t, c.key).local);
                sql.push(';');
            }
        }
        pair.sub_exec(&sql);
    };
    local_writes(false);

    // Phase 3: with the subscription disabled, one publisher transaction per
    // table with every conflicting change, then the control row.
    exec(&mut sub, "SELECT logical_ext.disable_subscription('s')");
    let mut txns = BTreeMap::new();
    for (t, _) in TABLES {
        let mut sql = String::new();
        for c in CASES {
            sql.push_str(&scenario(c.conflict_type, t, c.key).remote);
            sql.push(';');
        }
        sql.push_str(&format!("UPDATE {t} SET v = 'remote' WHERE id = {CONTROL_ID}"));
        txns.insert(t, commit_traced(&pair.publisher, &sql));
    }

    // Phase 4: local writes newer than the publisher's transactions.
    local_writes(true);

    // The local rows' commit timestamps, before the worker touches them; the
    // premise of each case (local older or newer) is checked, not assumed.
    let mut local_ts = BTreeMap::new();
    for (t, _) in TABLES {
        for c in CASES {
            let Some(id) = scenario(c.conflict_type, t, c.key).local_id else { continue };
            let ts = row_commit_ts(&mut sub, t, id).unwrap_or_else(|| panic!("{t}: local row {id} is missing"));
            let newer = !ts_before(&mut sub, &ts, &txns[t].commit_ts);
            assert_eq!(newer, c.local_newer, "{t} row {id}: local commit {ts} vs remote {}", txns[t].commit_ts);
            local_ts.insert((t, id), ts);
        }
    }

    exec(&mut sub, "SELECT logical_ext.enable_subscription('s')");
    pair.wait_caught_up("s");

    // The tables hold what each resolution means.
    let mut failures = Vec::new();
    for (t, r) in TABLES {
        let got = table_rows(&mut sub, t);
        let want = expected_rows(r);
        if got != want {
            failures.push(format!("{t} ({r}):\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "tables differ from their resolution's outcome:\n{}", failures.join("\n"));

    // One log row per case, with its exact contents.
    let log = conflict_log(&mut sub, "true");
    let mut by_case = BTreeMap::new();
    for row in &log {
        let id = row
            .remote_tuple
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(|v| v.as_i64())
            .unwrap_or_else(|| panic!("remote_tuple without a numeric id: {row:#?}"));
        let prev = by_case.insert((row.relation.clone(), id), row.clone());
        assert!(prev.is_none(), "two log rows for {} id {id}:\n{prev:#?}\n{row:#?}", row.relation);
    }
    assert_eq!(log.len(), TABLES.len() * CASES.len(), "conflict log rows:\n{log:#?}");
    for (t, r) in TABLES {
        let txn = &txns[t];
        for c in CASES {
            let sc = scenario(c.conflict_type, t, c.key);
            let rel = format!("public.{t}");
            let row = by_case
                .get(&(rel.clone(), i64::from(c.key)))
                .unwrap_or_else(|| panic!("no log row for {t} {c:?}; log:\n{log:#?}"));
            let want = LogRow {
                id: row.id,
                subscription: "s".into(),
                relation: rel,
                conflict_type: c.conflict_type.into(),
                resolution: effective(r, c.conflict_type).into(),
                local_tuple: sc.local_tuple.clone(),
                remote_tuple: Some(sc.remote_tuple.clone()),
                remote_origin: Some(origin.clone()),
                remote_commit_lsn: Some(txn.commit_lsn.clone()),
                remote_commit_ts: Some(txn.commit_ts.clone()),
                local_commit_ts: sc.local_id.map(|id| local_ts[&(t, id)].clone()),
                local_origin: sc.local_id.map(|_| "local".to_string()),
                xmin: row.xmin.clone(),
            };
            assert_eq!(row, &want, "log row of {t} {c:?} (left) differs from the expected (right)");
        }
        // Logged in the local transaction that applied the remote one: the
        // same xid as the control row's update, committed with this
        // subscription's origin and the remote commit time.
        let xmins: BTreeSet<&str> =
            log.iter().filter(|l| l.relation == format!("public.{t}")).map(|l| l.xmin.as_str()).collect();
        let control_xmin: String =
            sub.query_one(&format!("SELECT xmin::text FROM {t} WHERE id = {CONTROL_ID}"), &[]).unwrap().get(0);
        assert_eq!(
            xmins,
            BTreeSet::from([control_xmin.as_str()]),
            "{t}: log rows not written by the applying transaction"
        );
        let (ts, roident): (String, String) = sub
            .query_one(
                "SELECT (c).timestamp::text, (c).roident::text FROM (SELECT pg_xact_commit_timestamp_origin($1::text::xid) c) x",
                &[&control_xmin],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((ts, roident), (txn.commit_ts.clone(), origin_id.clone()), "{t}: the applying transaction's commit");
    }

    // Counters per type agree with the log.
    let counters = conflict_counters(&pair.subscriber, "s");
    let per_type: [i64; 6] = std::array::from_fn(|i| {
        (CASES.iter().filter(|c| c.conflict_type == CONFLICT_TYPES[i]).count() * TABLES.len()) as i64
    });
    assert_eq!(counters, per_type, "conflicts_* counters of subscription_status ({CONFLICT_TYPES:?})");
    assert_eq!(log_counts(&pair.subscriber, "s"), per_type);
    let st = pair.status("s");
    assert_eq!((st.state.as_str(), st.last_error.as_deref()), ("streaming", None), "{st:#?}");
}

/// `(relation, conflict_type) → resolution` of the view for `subscription`
/// (relation NULL: the policy for tables without rules of their own).
fn policy(client: &mut Client, subscription: &str) -> BTreeMap<(Option<String>, String), String> {
    client
        .query(
            "SELECT relation::regclass::text, conflict_type, resolution FROM logical_ext.conflict_resolutions \
             WHERE subscription = $1",
            &[&subscription],
        )
        .expect("conflict_resolutions")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

/// A policy written as rows of (relation, [resolution per CONFLICT_TYPES]).
fn policy_of(rows: &[(Option<&str>, [&str; 6])]) -> BTreeMap<(Option<String>, String), String> {
    let mut m = BTreeMap::new();
    for (rel, res) in rows {
        for (ty, r) in CONFLICT_TYPES.iter().zip(res) {
            m.insert((rel.map(str::to_string), ty.to_string()), r.to_string());
        }
    }
    m
}

/// Restarts the subscription's worker and waits until a new one streams
/// (it has then pruned the conflict log).
fn restart_worker(pair: &Pair, name: &str) {
    let old = pair.worker_pid(name);
    pair.sub_exec(&format!(
        "SELECT logical_ext.disable_subscription('{name}'); SELECT logical_ext.enable_subscription('{name}');"
    ));
    pair.wait_status(name, "a new worker streams", |s| {
        s.state == "streaming" && s.worker_pid.is_some_and(|p| p != old)
    });
}

/// Sets the retention (`value` written as SHOW displays it) and reloads.
fn set_retention(pair: &Pair, value: &str) {
    pair.sub_exec(&format!("ALTER SYSTEM SET logical_ext.conflict_log_retention = '{value}'"));
    pair.sub_exec("SELECT pg_reload_conf()");
    // New processes (the next worker) see it once the postmaster reloaded.
    let want = value;
    wait_until(CATCH_UP, &format!("conflict_log_retention = {want} in new sessions"), || {
        pair.subscriber.psql("SHOW logical_ext.conflict_log_retention") == want
    });
}

fn logged_marks(client: &mut Client) -> Vec<String> {
    client
        .query("SELECT relation FROM logical_ext.conflict_log WHERE subscription = 'marks' ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The resolution of each type (in CONFLICT_TYPES order) when no rule
/// applies: insert/update_exists stop the apply, missing rows are skipped,
/// rows last written elsewhere are overwritten (as native replication does).
const BUILTIN: [&str; 6] = ["error", "error", "skip", "skip", "apply_remote", "apply_remote"];

/// With no rules, subscription `name` (publishing table `b`) resolves each
/// conflict type by its built-in default, and logs it.
fn builtin_defaults_apply(pair: &Pair, name: &str) {
    let mut sub = pair.sub_client();
    let cases: Vec<(usize, i32)> = vec![(2, 21), (3, 31), (4, 41), (5, 51)];
    let mut base = String::new();
    let mut local = String::new();
    let mut remote = String::new();
    for &(i, k) in &cases {
        let sc = scenario(CONFLICT_TYPES[i], "b", k);
        base.push_str(&format!("{};", sc.base.expect("a base row")));
        local.push_str(&format!("{};", sc.local));
        remote.push_str(&format!("{};", sc.remote));
    }
    pair.pub_exec(&base);
    pair.wait_caught_up(name);
    pair.sub_exec(&local);
    let txn = commit_traced(&pair.publisher, &remote);
    pair.wait_caught_up(name);
    // update_missing and delete_missing skipped, the origin differences
    // applied (41 updated, 51 deleted).
    assert_eq!(rows_text(&mut sub, "SELECT * FROM b ORDER BY id"), ["(41,,remote)"]);
    let log = conflict_log(&mut sub, &format!("subscription = '{name}'"));
    let got: Vec<(String, String, Option<String>)> =
        log.iter().map(|l| (l.conflict_type.clone(), l.resolution.clone(), l.remote_commit_lsn.clone())).collect();
    let want: Vec<(String, String, Option<String>)> = cases
        .iter()
        .map(|&(i, _)| (CONFLICT_TYPES[i].to_string(), BUILTIN[i].to_string(), Some(txn.commit_lsn.clone())))
        .collect();
    assert_eq!(got, want, "built-in resolutions in the log");

    // insert_exists stops the apply until the transaction is skipped.
    let before = conflict_log(&mut sub, "true").len();
    pair.sub_exec("INSERT INTO b VALUES (1, NULL, 'local')");
    let bad = commit_traced(&pair.publisher, "INSERT INTO b VALUES (1, NULL, 'remote')");
    pair.wait_status(name, "state 'error'", |s| s.state == "error");
    let log = conflict_log(&mut sub, "true");
    assert!(log.len() > before, "insert_exists was not logged");
    let last = log.last().expect("a row");
    assert_eq!(
        (last.conflict_type.as_str(), last.resolution.as_str(), last.remote_commit_lsn.as_deref()),
        ("insert_exists", "error", Some(bad.commit_lsn.as_str()))
    );
    exec(&mut sub, &format!("SELECT logical_ext.skip_transaction('{name}', '{}')", bad.commit_lsn));
    pair.wait_caught_up(name);
    assert_eq!(rows_text(&mut sub, "SELECT * FROM b ORDER BY id"), ["(1,,local)", "(41,,remote)"]);
}

#[test]
fn rules_precedence_rejections_and_retention() {
    let pair = Pair::start("conflict_rules");
    pair.both_exec(&format!(
        "CREATE TABLE r1 (id int PRIMARY KEY); CREATE TABLE r2 (id int PRIMARY KEY); CREATE TABLE b {SCENARIO_COLUMNS};"
    ));
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE r1, r2; CREATE PUBLICATION pb FOR TABLE b;");
    pair.subscribe("s", &["p"], "");
    pair.subscribe("s_off", &["p"], ", enabled => false");
    pair.subscribe("sb", &["pb"], "");
    pair.wait_streaming("s");
    pair.wait_streaming("sb");
    let mut sub = pair.sub_client();
    let set = |c: &mut Client, args: &str| exec(c, &format!("SELECT logical_ext.set_conflict_resolution({args})"));

    // No rules: the built-in defaults (what native replication does).
    let builtin = policy_of(&[(None, BUILTIN)]);
    assert_eq!(policy(&mut sub, "s"), builtin);
    assert_eq!(policy(&mut sub, "s_off"), builtin);
    builtin_defaults_apply(&pair, "sb");
    exec(&mut sub, "SELECT logical_ext.drop_subscription('sb')");

    // (Rules are changed with the worker stopped; see
    // rule_changes_in_quick_succession_take_effect for a running one.)
    exec(&mut sub, "SELECT logical_ext.disable_subscription('s')");

    // Most specific wins: table+type > table > type > default; a table rule
    // that makes no sense for a type falls through to the next one.
    set(&mut sub, "'s', 'skip'");
    set(&mut sub, "'s', 'apply_remote', 'update_missing'");
    set(&mut sub, "'s', 'keep_local', 'insert_exists'");
    set(&mut sub, "'s', 'last_update_wins', relation => 'r1'");
    set(&mut sub, "'s', 'apply_remote', 'insert_exists', 'r1'");
    set(&mut sub, "'s', 'keep_local', conflict_type => 'delete_missing', relation => 'r2'::regclass");
    // insert_exists, update_exists, update_missing, delete_missing, update_origin_differs, delete_origin_differs
    let lww = "last_update_wins";
    let want = policy_of(&[
        (None, ["keep_local", "skip", "apply_remote", "skip", "skip", "skip"]),
        (Some("r1"), ["apply_remote", lww, "apply_remote", "skip", lww, lww]),
        (Some("r2"), ["keep_local", "skip", "apply_remote", "keep_local", "skip", "skip"]),
    ]);
    assert_eq!(policy(&mut sub, "s"), want, "effective policy (left) vs expected (right)");
    assert_eq!(policy(&mut sub, "s_off"), builtin, "rules leaked to another subscription");

    // Setting a rule again replaces it.
    set(&mut sub, "'s', 'first_update_wins', relation => 'r1'");
    let fww = "first_update_wins";
    let want = policy_of(&[
        (None, ["keep_local", "skip", "apply_remote", "skip", "skip", "skip"]),
        (Some("r1"), ["apply_remote", fww, "apply_remote", "skip", fww, fww]),
        (Some("r2"), ["keep_local", "skip", "apply_remote", "keep_local", "skip", "skip"]),
    ]);
    assert_eq!(policy(&mut sub, "s"), want, "after replacing r1's rule");
    assert_eq!(count(&mut sub, "logical_ext.conflict_resolution WHERE subscription = 's'"), 6);

    // Nonsense pairs are refused with 22023, with or without a relation,
    // and leave the rules as they were.
    let rules_before = digest(&mut sub, "SELECT * FROM logical_ext.conflict_resolution", "t::text");
    let mut refused = 0;
    for ty in CONFLICT_TYPES {
        for res in RESOLUTIONS.into_iter().filter(|r| !allowed(ty, r)) {
            for rel in ["NULL", "'r1'"] {
                let sql = format!("SELECT logical_ext.set_conflict_resolution('s', '{res}', '{ty}', {rel})");
                let (code, msg, hint) = expect_error(&mut sub, &sql);
                assert_eq!(code, "22023", "{sql}: {msg}");
                assert!(msg.contains(res) && msg.contains(ty), "{sql}: message must name both: {msg}");
                assert!(hint.contains("skip") && !hint.contains(res), "{sql}: hint should list the valid ones: {hint}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2 * 5, "the spec has 5 nonsense pairs");
    for (sql, code) in [
        ("SELECT logical_ext.set_conflict_resolution('s', 'newest')", "22023"),
        ("SELECT logical_ext.set_conflict_resolution('s', 'skip', 'insert_conflict')", "22023"),
        ("SELECT logical_ext.set_conflict_resolution('nosuch', 'skip')", "42704"),
    ] {
        let (got, msg, _) = expect_error(&mut sub, sql);
        assert_eq!(got, code, "{sql}: {msg}");
    }
    assert_eq!(digest(&mut sub, "SELECT * FROM logical_ext.conflict_resolution", "t::text"), rules_before);

    // Every sensible pair is accepted (on the disabled subscription: no
    // worker restarts); each type keeps the last one set.
    for ty in CONFLICT_TYPES {
        for res in RESOLUTIONS.into_iter().filter(|r| allowed(ty, r)) {
            set(&mut sub, &format!("'s_off', '{res}', '{ty}'"));
        }
    }
    let last = |ty: &str| *RESOLUTIONS.iter().rev().find(|r| allowed(ty, r)).unwrap();
    let want: [&str; 6] = std::array::from_fn(|i| last(CONFLICT_TYPES[i]));
    assert_eq!(policy(&mut sub, "s_off"), policy_of(&[(None, want)]));
    assert_eq!(count(&mut sub, "logical_ext.conflict_resolution WHERE subscription = 's_off'"), 6);

    // Only superusers.
    exec(&mut sub, "CREATE ROLE plain LOGIN");
    let (code, msg, _) =
        expect_error(&mut sub, "SET ROLE plain; SELECT logical_ext.set_conflict_resolution('s', 'skip')");
    assert_eq!(code, "42501", "{msg}");
    exec(&mut sub, "RESET ROLE");

    // Rules go with their subscription.
    exec(&mut sub, "SELECT logical_ext.drop_subscription('s_off')");
    assert_eq!(count(&mut sub, "logical_ext.conflict_resolution WHERE subscription = 's_off'"), 0);
    assert_eq!(count(&mut sub, "logical_ext.conflict_resolution WHERE subscription = 's'"), 6);

    exec(&mut sub, "SELECT logical_ext.enable_subscription('s')");
    pair.wait_streaming("s");

    // Retention: a session start prunes rows older than
    // logical_ext.conflict_log_retention (default 7 days; 0 keeps all).
    exec(
        &mut sub,
        "INSERT INTO logical_ext.conflict_log (detected_at, subscription, relation, conflict_type, resolution)
         VALUES (now() - interval '10 days', 'marks', 'ten days', 'insert_exists', 'error'),
                (now() - interval '1 hour', 'marks', 'one hour', 'insert_exists', 'error'),
                (now(), 'marks', 'fresh', 'insert_exists', 'error')",
    );
    restart_worker(&pair, "s");
    assert_eq!(logged_marks(&mut sub), ["one hour", "fresh"], "default retention (7 days)");
    set_retention(&pair, "30min");
    restart_worker(&pair, "s");
    assert_eq!(logged_marks(&mut sub), ["fresh"], "retention 30min");
    set_retention(&pair, "0");
    exec(
        &mut sub,
        "INSERT INTO logical_ext.conflict_log (detected_at, subscription, relation, conflict_type, resolution)
         VALUES (now() - interval '1000 days', 'marks', 'ancient', 'insert_exists', 'error')",
    );
    restart_worker(&pair, "s");
    assert_eq!(logged_marks(&mut sub), ["fresh", "ancient"], "retention 0 keeps everything");
}

/// `set_conflict_resolution` on an enabled subscription restarts its worker
/// so that it reads the new rules. Changed many times in quick succession,
/// every call must succeed and the one worker left must use the last rule.
#[test]
fn rule_changes_in_quick_succession_take_effect() {
    let pair = Pair::start("conflict_quick");
    pair.both_exec(&format!("CREATE TABLE q {SCENARIO_COLUMNS}"));
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE q");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let mut sub = pair.sub_client();
    let sequence: Vec<&str> =
        (0..20).map(|i| if i % 2 == 0 { "keep_local" } else { "skip" }).chain(["apply_remote"]).collect();
    for res in &sequence {
        let sql = format!("SELECT logical_ext.set_conflict_resolution('s', '{res}', 'insert_exists', 'q')");
        if let Err(e) = sub.batch_execute(&sql) {
            panic!("{sql} failed: {}\n{}", describe_error(&e), pair.explain("s"));
        }
    }
    pair.wait_streaming("s");
    wait_until(CATCH_UP, "one apply worker is left", || {
        count(&mut pair.sub_client(), "pg_stat_activity WHERE backend_type = 'logical_ext apply'") == 1
    });
    // The worker resolves by the last rule.
    pair.sub_exec("INSERT INTO q VALUES (1, NULL, 'local')");
    pair.pub_exec("INSERT INTO q VALUES (1, NULL, 'remote')");
    pair.wait_caught_up("s");
    let log = conflict_log(&mut sub, "true");
    let got: Vec<(&str, &str)> = log.iter().map(|l| (l.conflict_type.as_str(), l.resolution.as_str())).collect();
    assert_eq!(got, [("insert_exists", "apply_remote")], "{log:#?}");
    assert_eq!(rows_text(&mut sub, "SELECT * FROM q"), ["(1,,remote)"]);
}

/// A rule set while the worker cannot run (busy, or descheduled on a loaded
/// machine) applies to a transaction the publisher sent after the change,
/// even when that transaction already waits in the worker's socket when the
/// worker runs again: a SIGHUP makes it look at its settings before the
/// next transaction, not only once its socket is empty. The worker is held
/// with SIGSTOP to make the late run certain; before this was checked, the
/// conflict was resolved by the old rule (error), then retried.
#[test]
fn a_rule_set_before_a_transaction_was_sent_applies_to_it() {
    let pair = Pair::start("conflict_signalled");
    pair.both_exec(&format!("CREATE TABLE q {SCENARIO_COLUMNS}"));
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE q");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.sub_exec("INSERT INTO q VALUES (1, NULL, 'local')");
    let pid = pair.worker_pid("s");
    let mut sub = pair.sub_client();
    // Stopped while it waits on its socket, holding no lock the calls below
    // need.
    stop_while_waiting(&pair.subscriber, pid, &["Extension"]);
    sub.batch_execute("SELECT logical_ext.set_conflict_resolution('s', 'apply_remote', 'insert_exists', 'q')").unwrap();
    pair.pub_exec("INSERT INTO q VALUES (1, NULL, 'remote')");
    let mut publisher = pair.pub_client();
    let end: String = publisher.query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get(0);
    wait_until(CATCH_UP, "the walsender sent the transaction", || {
        publisher
            .query_one(
                "SELECT coalesce(bool_or(sent_lsn >= $1::text::pg_lsn), false) FROM pg_stat_replication \
                 WHERE application_name = 's'",
                &[&end],
            )
            .unwrap()
            .get(0)
    });
    send_signal(pid, "CONT");
    pair.wait_caught_up("s");
    let log = conflict_log(&mut sub, "true");
    let got: Vec<(&str, &str)> = log.iter().map(|l| (l.conflict_type.as_str(), l.resolution.as_str())).collect();
    assert_eq!(got, [("insert_exists", "apply_remote")], "{log:#?}\n{}", pair.explain("s"));
    assert_eq!(rows_text(&mut sub, "SELECT * FROM q"), ["(1,,remote)"]);
}
