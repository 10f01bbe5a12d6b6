//! The error path of conflicts and of other apply errors (issue 4).
//!
//! `error_resolution_skip_transaction_and_disable_on_error`: with `error` as
//! the subscription's default (`set_conflict_resolution('s', 'error')`),
//! each of the six conflict types fails its remote transaction (nothing of it
//! applied, the transaction after it waits), is recorded in conflict_log
//! although the transaction rolled back (contents checked against the
//! publisher's transaction), is retried, and is then skipped with
//! `skip_transaction(<remote_commit_lsn from the log>)`: exactly that
//! transaction (an LSN next to it skips nothing), after which the next one
//! applies. A second subscription created with `disable_on_error` and no
//! rules (insert_exists defaults to `error`) is disabled by its first
//! conflict instead of retrying.
//!
//! `check_violation_is_an_error_not_a_conflict`: on a subscriber without
//! track_commit_timestamp (a WARNING with a HINT, once; origin differences
//! go undetected), a CHECK violation is an ordinary apply error: no conflict
//! log row, no counter, retried with the configured exponential backoff
//! (the server log's retry lines are spaced at least by the announced delay,
//! doubling from retry_min_delay_ms up to retry_max_delay_ms: no busy loop);
//! `disable_on_error` set later with alter_subscription disables instead.

use logical_ext_pg_test::conflicts::*;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::time::Duration;

/// The rows the conflicting table holds for a case whose remote change was
/// not applied (text of each row, ordered by id).
fn kept_local_rows(conflict_type: &str, k: i32) -> Vec<String> {
    match conflict_type {
        "insert_exists" | "update_origin_differs" | "delete_origin_differs" => vec![format!("({k},,local)")],
        "update_exists" => vec![format!("({k},,base)"), format!("({},ue{k},local)", k + 100)],
        "update_missing" | "delete_missing" => vec![],
        other => panic!("unknown conflict type {other}"),
    }
}

fn case_rows(client: &mut Client, k: i32) -> Vec<String> {
    rows_text(client, &format!("SELECT * FROM e WHERE id IN ({k}, {}) ORDER BY id", k + 100))
}

fn side_rows(client: &mut Client, k: i32) -> Vec<String> {
    rows_text(client, &format!("SELECT * FROM side WHERE id IN ({k}, {}) ORDER BY id", k + 1))
}

#[test]
fn error_resolution_skip_transaction_and_disable_on_error() {
    let pair = Pair::start("conflict_err");
    pair.both_exec(&format!(
        "CREATE TABLE e {SCENARIO_COLUMNS};
         CREATE TABLE side (id int PRIMARY KEY, note text);
         CREATE TABLE d (id int PRIMARY KEY, v text);
         CREATE TABLE tt (id int PRIMARY KEY, big text, v int);"
    ));
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE e, side, tt; CREATE PUBLICATION pd FOR TABLE d;");
    pair.subscribe("s", &["p"], "");
    create_subscription(
        &pair.subscriber,
        "sd",
        &pair.publisher,
        &["pd"],
        "any",
        r#"{"disable_on_error": true, "retry_min_delay_ms": 100, "retry_max_delay_ms": 1000}"#,
    );
    pair.wait_streaming("s");
    pair.wait_streaming("sd");
    let origin = format!("logical_ext_{}", subscription_id(&pair.subscriber, "s"));
    let mut sub = pair.sub_client();
    exec(&mut sub, "SELECT logical_ext.set_conflict_resolution('s', 'error')");
    pair.wait_streaming("s");
    let mut problems = Vec::new();

    for (i, ty) in CONFLICT_TYPES.into_iter().enumerate() {
        let k = (i as i32 + 1) * 1000 + 1;
        let sc = scenario(ty, "e", k);
        if let Some(b) = &sc.base {
            pair.pub_exec(b);
            pair.wait_caught_up("s");
        }
        pair.sub_exec(&sc.local);
        let local_ts = sc.local_id.map(|id| row_commit_ts(&mut sub, "e", id).expect("local row"));
        let before = rows_text(&mut sub, "SELECT * FROM e ORDER BY id");
        assert_eq!(case_rows(&mut sub, k), kept_local_rows(ty, k), "{ty}: set-up");
        // The failing transaction changes `side` after the conflict; the
        // next one only `side`.
        let bad = commit_traced(&pair.publisher, &format!("{}; INSERT INTO side VALUES ({k}, 'bad')", sc.remote));
        let next = commit_traced(&pair.publisher, &format!("INSERT INTO side VALUES ({}, 'next')", k + 1));
        let of_bad = format!("remote_commit_lsn = '{}'", bad.commit_lsn);

        // Logged although its transaction rolled back.
        let mut log = Vec::new();
        wait_or_explain(
            CATCH_UP,
            &format!("{ty}: a conflict_log row for the transaction committed at {}", bad.commit_lsn),
            || {
                log = conflict_log(&mut pair.sub_client(), &of_bad);
                !log.is_empty()
            },
            || pair.explain("s"),
        );
        let row = log[0].clone();
        let want = LogRow {
            id: row.id,
            subscription: "s".into(),
            relation: "public.e".into(),
            conflict_type: ty.into(),
            resolution: "error".into(),
            local_tuple: sc.local_tuple.clone(),
            remote_tuple: Some(sc.remote_tuple.clone()),
            remote_origin: Some(origin.clone()),
            remote_commit_lsn: Some(bad.commit_lsn.clone()),
            remote_commit_ts: Some(bad.commit_ts.clone()),
            local_commit_ts: local_ts.clone(),
            local_origin: sc.local_id.map(|_| "local".to_string()),
            xmin: row.xmin.clone(),
        };
        // Content checks are collected so that one type's failure does not
        // hide the others'.
        if row != want {
            problems.push(format!("{ty}: log row differs:\n  got  {row:?}\n  want {want:?}"));
        }
        let st = pair.wait_status("s", "state 'error'", |s| s.state == "error");
        assert!(st.last_error.is_some(), "{ty}: {st:#?}");
        assert!(st.worker_pid.is_some(), "{ty}: the worker retries: {st:#?}");

        // Retried with backoff: the same conflict fails and is logged again.
        wait_or_explain(
            CATCH_UP,
            &format!("{ty}: the failing transaction is retried"),
            || {
                log = conflict_log(&mut pair.sub_client(), &of_bad);
                log.len() >= 2
            },
            || pair.explain("s"),
        );
        for again in &log[1..] {
            let same = LogRow { id: again.id, xmin: again.xmin.clone(), ..row.clone() };
            assert_eq!(again, &same, "{ty}: a retry logged something else than the first attempt");
        }
        // Nothing of it applied; the next transaction waits behind it.
        assert_eq!(
            rows_text(&mut sub, "SELECT * FROM e ORDER BY id"),
            before,
            "{ty}: the failing transaction changed e"
        );
        assert_eq!(side_rows(&mut sub, k), Vec::<String>::new(), "{ty}: side changed while failing");

        if i == 0 {
            // An LSN that is not that transaction's commit skips nothing: the
            // transaction fails again after the worker restarts.
            let last_id = log.last().expect("rows").id;
            let wrong = lsn_plus(&bad.commit_lsn, 1);
            exec(&mut sub, &format!("SELECT logical_ext.skip_transaction('s', '{wrong}')"));
            wait_or_explain(
                CATCH_UP,
                "the transaction fails again despite the skip of another LSN",
                || !conflict_log(&mut pair.sub_client(), &format!("{of_bad} AND id > {last_id}")).is_empty(),
                || pair.explain("s"),
            );
            assert_eq!(side_rows(&mut sub, k), Vec::<String>::new(), "a skip of {wrong} skipped {}", bad.commit_lsn);
            let (code, msg, _) = expect_error(&mut sub, "SELECT logical_ext.skip_transaction('s', '0/0')");
            assert_eq!(code, "22023", "{msg}");
            let (code, msg, _) = expect_error(&mut sub, "SELECT logical_ext.skip_transaction('nosuch', '0/1')");
            assert_eq!(code, "42704", "{msg}");
        }

        // Skip it by the LSN from the log: the next transaction applies.
        let lsn = log[0].remote_commit_lsn.clone().expect("lsn");
        exec(&mut sub, &format!("SELECT logical_ext.skip_transaction('s', '{lsn}')"));
        pair.wait_caught_up("s");
        assert_eq!(side_rows(&mut sub, k), vec![format!("({},next)", k + 1)], "{ty}: after skipping {lsn}");
        assert_eq!(case_rows(&mut sub, k), kept_local_rows(ty, k), "{ty}: the skipped change was applied");
        assert_eq!(rows_text(&mut sub, "SELECT * FROM e ORDER BY id"), before, "{ty}: e changed by the skip");
        let skip_lsn: Option<String> =
            sub.query_one("SELECT skip_lsn::text FROM logical_ext.subscription WHERE name = 's'", &[]).unwrap().get(0);
        assert_eq!(skip_lsn, None, "{ty}: skip_lsn is cleared once used");
        let st = pair.wait_status("s", "streaming", |s| s.state == "streaming");
        assert_eq!(st.last_error, None, "{ty}: {st:#?}");
        let applied = st.applied_lsn.as_deref().map(parse_lsn).unwrap_or(0);
        assert!(
            applied > parse_lsn(&next.commit_lsn),
            "{ty}: progress {st:#?} is before the next transaction {next:?}"
        );
    }

    // update_missing with apply_remote cannot insert a row whose unchanged
    // TOASTed column was not sent: the transaction fails instead.
    exec(&mut sub, "SELECT logical_ext.set_conflict_resolution('s', 'apply_remote', 'update_missing', 'tt')");
    pair.pub_exec("INSERT INTO tt SELECT 1, string_agg(md5(g::text), '') , 0 FROM generate_series(1, 4000) g");
    pair.wait_caught_up("s");
    assert_eq!(count(&mut sub, "tt"), 1);
    pair.sub_exec("DELETE FROM tt");
    let bad = commit_traced(&pair.publisher, "UPDATE tt SET v = 1 WHERE id = 1");
    let st = pair.wait_status("s", "state 'error' for the TOASTed row", |s| s.state == "error");
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("TOAST")), "{st:#?}");
    let log = conflict_log(&mut sub, &format!("remote_commit_lsn = '{}'", bad.commit_lsn));
    assert!(!log.is_empty(), "the failed update_missing was not logged");
    assert_eq!(
        (log[0].conflict_type.as_str(), log[0].resolution.as_str(), log[0].remote_tuple.clone()),
        ("update_missing", "apply_remote", Some(serde_json::json!({"id": 1, "v": 1}))),
        "{log:#?}"
    );
    exec(&mut sub, &format!("SELECT logical_ext.skip_transaction('s', '{}')", bad.commit_lsn));
    pair.wait_caught_up("s");
    assert_eq!(count(&mut sub, "tt"), 0);
    // A complete row is inserted.
    pair.pub_exec("UPDATE tt SET v = 2, big = 'small now' WHERE id = 1");
    pair.wait_caught_up("s");
    assert_eq!(rows_text(&mut sub, "SELECT * FROM tt"), ["(1,\"small now\",2)"]);

    // Every type was counted, once per failed attempt, like the log.
    let counters = conflict_counters(&pair.subscriber, "s");
    assert_eq!(counters, log_counts(&pair.subscriber, "s"), "counters vs log rows per type {CONFLICT_TYPES:?}");
    assert!(counters.iter().all(|&n| n >= 2), "every type failed at least twice: {counters:?}");

    // disable_on_error (given to create_subscription): the first conflict
    // disables the subscription; it does not retry.
    pair.sub_exec("INSERT INTO d VALUES (1, 'local')");
    let bad = commit_traced(&pair.publisher, "INSERT INTO d VALUES (1, 'remote')");
    let st = pair
        .wait_status("sd", "state 'disabled' without a worker", |s| s.state == "disabled" && s.worker_pid.is_none());
    assert!(!st.enabled, "{st:#?}");
    assert!(st.last_error.is_some(), "{st:#?}");
    let log = conflict_log(&mut sub, "subscription = 'sd'");
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(
        (log[0].conflict_type.as_str(), log[0].resolution.as_str(), log[0].remote_commit_lsn.as_deref()),
        ("insert_exists", "error", Some(bad.commit_lsn.as_str()))
    );
    assert_eq!(rows_text(&mut sub, "SELECT * FROM d"), ["(1,local)"]);
    assert_eq!(count(&mut sub, "pg_stat_activity WHERE backend_type = 'logical_ext apply'"), 1, "only s has a worker");
    // Enabled again with the conflict still there: disabled again.
    exec(&mut sub, "SELECT logical_ext.enable_subscription('sd')");
    wait_until(CATCH_UP, "a second failure is logged", || {
        count(&mut pair.sub_client(), "logical_ext.conflict_log WHERE subscription = 'sd'") == 2
    });
    pair.wait_status("sd", "disabled again", |s| s.state == "disabled" && s.worker_pid.is_none() && !s.enabled);
    // Resolved by hand, then enabled: the transaction applies.
    pair.sub_exec("DELETE FROM d WHERE id = 1");
    exec(&mut sub, "SELECT logical_ext.enable_subscription('sd')");
    pair.wait_caught_up("sd");
    assert_eq!(rows_text(&mut sub, "SELECT * FROM d"), ["(1,remote)"]);
    assert_eq!(count(&mut sub, "logical_ext.conflict_log WHERE subscription = 'sd'"), 2);
    pair.wait_status("sd", "streaming", |s| s.state == "streaming" && s.enabled);
    assert!(problems.is_empty(), "conflict records of the error resolution:\n{}", problems.join("\n"));
}

const NO_COMMIT_TS: &str = "update_origin_differs and delete_origin_differs cannot be detected";

#[test]
fn check_violation_is_an_error_not_a_conflict() {
    let min = Duration::from_millis(50);
    let max = Duration::from_millis(400);
    let pair = Pair::start_with("conflict_check", &[], &["track_commit_timestamp = off"]);
    pair.both_exec("CREATE TABLE c (id int PRIMARY KEY, v int); CREATE TABLE o (id int PRIMARY KEY, v text);");
    pair.sub_exec("ALTER TABLE c ADD CONSTRAINT c_small CHECK (v < 100)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE c, o");
    create_subscription(
        &pair.subscriber,
        "s",
        &pair.publisher,
        &["p"],
        "any",
        &format!(r#"{{"retry_min_delay_ms": {}, "retry_max_delay_ms": {}}}"#, min.as_millis(), max.as_millis()),
    );
    pair.wait_streaming("s");
    let subid = subscription_id(&pair.subscriber, "s");
    let mut sub = pair.sub_client();

    // Without track_commit_timestamp: one WARNING with a HINT.
    let warnings = log_lines(&pair.subscriber, NO_COMMIT_TS);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("WARNING") && warnings[0].contains("\"s\""), "{warnings:#?}");
    // (Checked at the end, so that the rest still runs when it fails.)
    let hint = log_lines_after(&pair.subscriber, NO_COMMIT_TS).pop().unwrap_or_default();
    let hint_ok = hint.contains("HINT:") && hint.contains("track_commit_timestamp");
    // ... and local changes are overwritten or deleted without a conflict.
    pair.pub_exec("INSERT INTO o VALUES (1, 'base'), (2, 'base')");
    pair.wait_caught_up("s");
    pair.sub_exec("UPDATE o SET v = 'local'");
    pair.pub_exec("UPDATE o SET v = 'remote' WHERE id = 1; DELETE FROM o WHERE id = 2;");
    pair.wait_caught_up("s");
    assert_eq!(rows_text(&mut sub, "SELECT * FROM o ORDER BY id"), ["(1,remote)"]);
    assert_eq!(count(&mut sub, "logical_ext.conflict_log"), 0);

    // A CHECK violation: an error, retried with backoff, not a conflict.
    pair.pub_exec("INSERT INTO c VALUES (1, 500)");
    pair.pub_exec("INSERT INTO c VALUES (2, 5)");
    let st = pair.wait_status("s", "state 'error'", |s| s.state == "error");
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("c_small")), "{st:#?}");
    // min doubles to max in 4 steps; wait for a few more at the cap.
    let wanted = 8;
    let mut r = Vec::new();
    wait_or_explain(
        CATCH_UP,
        &format!("{wanted} retries in the subscriber's log"),
        || {
            r = retries(&pair.subscriber, subid);
            r.len() >= wanted
        },
        || format!("retries so far: {:?}\n{}", retries(&pair.subscriber, subid), pair.explain("s")),
    );
    let delays: Vec<Duration> = r.iter().map(|x| x.delay).collect();
    let expected: Vec<Duration> = (0..r.len()).map(|i| (min * (1 << i.min(20))).min(max)).collect();
    assert_eq!(delays, expected, "announced delays double from {min:?} up to {max:?}");
    for w in r.windows(2) {
        let gap = w[1].at_ms.saturating_sub(w[0].at_ms);
        // Log times have millisecond resolution.
        assert!(gap + 2 >= w[0].delay.as_millis() as u64, "retried after {gap} ms, announced {:?}: {r:?}", w[0].delay);
    }
    let span = r.last().unwrap().at_ms - r[0].at_ms;
    assert!(
        (r.len() as u64 - 1) <= span / (max.as_millis() as u64) + 5,
        "{} retries in {span} ms is more than the backoff allows: {r:?}",
        r.len()
    );
    assert_eq!(count(&mut sub, "logical_ext.conflict_log"), 0, "a CHECK violation is not a conflict");
    assert_eq!(conflict_counters(&pair.subscriber, "s"), [0; 6]);
    assert_eq!(count(&mut sub, "c"), 0, "nothing applied while failing");
    assert_eq!(log_lines(&pair.subscriber, NO_COMMIT_TS).len(), 1, "the WARNING is given once per worker");

    // Once the cause is gone the same transaction applies, then the next.
    pair.sub_exec("ALTER TABLE c DROP CONSTRAINT c_small");
    pair.wait_caught_up("s");
    assert_eq!(rows_text(&mut sub, "SELECT * FROM c ORDER BY id"), ["(1,500)", "(2,5)"]);
    pair.wait_status("s", "streaming without error", |s| s.state == "streaming" && s.last_error.is_none());

    // disable_on_error set with alter_subscription (the other options stay).
    exec(&mut sub, r#"SELECT logical_ext.alter_subscription('s', '{"disable_on_error": true}')"#);
    let opts: String =
        sub.query_one("SELECT options::text FROM logical_ext.subscription WHERE name = 's'", &[]).unwrap().get(0);
    let opts: serde_json::Value = serde_json::from_str(&opts).unwrap();
    assert_eq!(
        opts,
        serde_json::json!({"disable_on_error": true, "retry_min_delay_ms": 50, "retry_max_delay_ms": 400}),
        "options after alter_subscription"
    );
    pair.wait_streaming("s");
    pair.sub_exec("ALTER TABLE c ADD CONSTRAINT c_small CHECK (v < 100) NOT VALID");
    let retries_before = retries(&pair.subscriber, subid).len();
    pair.pub_exec("INSERT INTO c VALUES (3, 1000)");
    let st = pair.wait_status("s", "disabled by the error", |s| s.state == "disabled" && s.worker_pid.is_none());
    assert!(!st.enabled && st.last_error.as_deref().is_some_and(|e| e.contains("c_small")), "{st:#?}");
    assert_eq!(retries(&pair.subscriber, subid).len(), retries_before, "disabled, yet it announced a retry");
    assert_eq!(count(&mut sub, "c"), 2);
    assert_eq!(count(&mut sub, "logical_ext.conflict_log"), 0);
    assert!(hint_ok, "the WARNING must come with a HINT about track_commit_timestamp; next log line: {hint}");
}
