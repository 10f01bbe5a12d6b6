//! A logical_ext subscription as a synchronous standby of its publisher
//! (`synchronous_standby_names` naming the subscription, which is the
//! walsender's `application_name`).
//!
//! The subscriber runs with `wal_writer_delay = 10s`: an asynchronous local
//! commit is then flushed seconds later, so a worker that reported a commit
//! only once flushed by the WAL writer (as before the `synchronous_commit`
//! option) holds every publisher commit for seconds, and the check below
//! fails. Each phase makes sequential single-row commits on the publisher;
//! every one must return within [`PROMPT`], and its row must already be
//! visible on the subscriber when it returns:
//!
//! 1. publisher `synchronous_commit = remote_apply`, subscription option
//!    unset (`off`): the worker reports the apply position right after its
//!    local commit, durable or not;
//! 2. publisher `remote_apply`, subscription `synchronous_commit =
//!    remote_apply` (set with alter_subscription: a new session);
//! 3. publisher `on`, subscription `on`: the local commit is flushed at once
//!    and reported right away.
//!
//! Invalid values of the option are refused with SQLSTATE 22023 and a HINT.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::time::{Duration, Instant};

/// How long one synchronous commit may take (the old behaviour: up to
/// `wal_writer_delay`, 10 s here; the fixed one: milliseconds, but a loaded
/// 2-core machine can stall any process for a second or two).
const PROMPT: Duration = Duration::from_secs(5);

/// Commits per phase.
const COMMITS: i32 = 10;

/// Waits until the publisher counts a walsender of subscription `name`,
/// other than `not`, as its synchronous standby; returns its pid.
///
/// After alter_subscription the worker starts a new session, but only once
/// it has seen the change: until then the old walsender is still the
/// synchronous standby, and a commit made then waits for the session to be
/// replaced. So the caller names the old walsender and waits for another.
fn wait_sync_standby(pair: &Pair, name: &str, not: Option<i32>) -> i32 {
    let mut pid = None;
    wait_or_explain(
        CATCH_UP,
        &format!("a walsender of {name} other than {not:?} is the synchronous standby"),
        || {
            pid = try_client(&pair.publisher).ok().and_then(|mut c| {
                c.query_opt(
                    "SELECT pid FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync' \
                     AND state = 'streaming'",
                    &[&name],
                )
                .ok()
                .flatten()
                .map(|r| r.get::<_, i32>(0))
                .filter(|&p| Some(p) != not)
            });
            pid.is_some()
        },
        || pair.explain(name),
    );
    pid.expect("checked")
}

/// `COMMITS` single-row commits on the publisher with `synchronous_commit =
/// publisher_mode`, ids from `first`: each returns within [`PROMPT`] and its
/// row is on the subscriber when it returns. Returns the slowest commit.
fn prompt_commits(pair: &Pair, publisher_mode: &str, first: i32) -> Duration {
    let mut publisher = pair.pub_client();
    exec(&mut publisher, &format!("SET synchronous_commit = {publisher_mode}"));
    let mut subscriber = pair.sub_client();
    let mut slowest = Duration::ZERO;
    for id in first..first + COMMITS {
        let t = Instant::now();
        publisher.execute("INSERT INTO t VALUES ($1, 'row ' || $1::int)", &[&id]).expect("insert on the publisher");
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < PROMPT,
            "publisher synchronous_commit = {publisher_mode}: commit of id {id} took {took:?} (limit {PROMPT:?})\n{}",
            pair.explain("s")
        );
        if publisher_mode == "remote_apply" || publisher_mode == "on" {
            let n: i64 = subscriber.query_one("SELECT count(*) FROM t WHERE id = $1", &[&id]).expect("count").get(0);
            assert_eq!(n, 1, "id {id} is not visible on the subscriber when the publisher's commit returned");
        }
    }
    slowest
}

#[test]
fn synchronous_standby_commits_promptly() {
    let pair = Pair::start_with("apply_sync", &[], &["wal_writer_delay = '10s'"]);
    pair.both_exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE t");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("ALTER SYSTEM SET synchronous_standby_names = 's'");
    pair.pub_exec("SELECT pg_reload_conf()");
    let walsender = wait_sync_standby(&pair, "s", None);

    let slowest = prompt_commits(&pair, "remote_apply", 1);
    eprintln!("publisher remote_apply, subscription synchronous_commit off: slowest commit {slowest:?}");

    exec(
        &mut pair.sub_client(),
        r#"SELECT logical_ext.alter_subscription('s', '{"synchronous_commit": "remote_apply"}')"#,
    );
    let walsender = wait_sync_standby(&pair, "s", Some(walsender));
    let slowest = prompt_commits(&pair, "remote_apply", 100);
    eprintln!("publisher remote_apply, subscription synchronous_commit remote_apply: slowest commit {slowest:?}");

    exec(&mut pair.sub_client(), r#"SELECT logical_ext.alter_subscription('s', '{"synchronous_commit": "on"}')"#);
    wait_sync_standby(&pair, "s", Some(walsender));
    let slowest = prompt_commits(&pair, "on", 200);
    eprintln!("publisher on, subscription synchronous_commit on: slowest commit {slowest:?}");

    // Everything is there exactly, and the slot confirmed it.
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM t", "id");
    assert_eq!(count(&mut pair.sub_client(), "t"), 3 * COMMITS as i64);
    assert_eq!(pair.status("s").last_error, None);
}

#[test]
fn synchronous_commit_option_is_validated() {
    let pair = Pair::start("apply_sync_opt");
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    let mut sub = pair.sub_client();
    let conninfo = pair.publisher_conninfo();
    for bad in [r#""remote""#, "true", "1"] {
        let (state, message, hint) = expect_error(
            &mut sub,
            &format!(
                "SELECT logical_ext.create_subscription('bad', '{conninfo}', ARRAY['p'], copy_data => false, \
                 options => '{{\"synchronous_commit\": {bad}}}')"
            ),
        );
        assert_eq!(state, "22023", "{message}");
        assert!(message.contains("synchronous_commit"), "{message}");
        assert!(hint.contains("remote_apply"), "{hint}");
    }
    pair.subscribe("s", &["p"], r#", enabled => false"#);
    let (state, message, hint) =
        expect_error(&mut sub, r#"SELECT logical_ext.alter_subscription('s', '{"synchronous_commit": "sometimes"}')"#);
    assert_eq!((state.as_str(), hint.contains("local")), ("22023", true), "{message} / {hint}");
    // Accepted values are stored as given; null resets to the default.
    exec(&mut sub, r#"SELECT logical_ext.alter_subscription('s', '{"synchronous_commit": "remote_write"}')"#);
    let stored = query_string(&mut sub, "SELECT options->>'synchronous_commit' FROM logical_ext.subscription");
    assert_eq!(stored, "remote_write");
    exec(&mut sub, r#"SELECT logical_ext.alter_subscription('s', '{"synchronous_commit": null}')"#);
    let stored = query_string(&mut sub, "SELECT (options ? 'synchronous_commit')::text FROM logical_ext.subscription");
    assert_eq!(stored, "false");
}
