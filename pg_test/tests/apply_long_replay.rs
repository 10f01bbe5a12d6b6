//! A replayed DDL that runs longer than the publisher's `wal_sender_timeout`
//! (issue 12): while the apply worker is busy with local work it does not
//! read or write the replication connection, so without feedback flowing
//! the walsender gives the connection up, the worker cannot receive the
//! COMMIT, rolls back and replays the same DDL again — for ever. With the
//! feedback keeper (`src/apply/walrcv/keeper.rs`) the connection survives:
//! the DDL is replayed exactly once, the rows behind it arrive, and the
//! walsender serving the subscription is the same process throughout.
//!
//! The publisher runs with `wal_sender_timeout = 3s`; an expression index
//! whose IMMUTABLE function sleeps per row takes several seconds to build on
//! the subscriber (the function is instant on the publisher, where it is
//! defined without the sleep; it lives outside the published schema, so its
//! creation is not replicated). A slow trigger on a replicated row is the
//! second case: the same keeper covers every document's local work.
//! A third test watches the updates arrive while the worker sleeps in a
//! trigger, then terminates the worker there: it exits cleanly.

use logical_ext_pg_test::replication::*;
use std::time::Duration;

const PRELOAD: &str = "shared_preload_libraries = 'logical_ext'";

/// Rows in `app.big` and the subscriber's per-row sleep: 400 × 15 ms = 6 s
/// of replay, twice the publisher's `wal_sender_timeout`.
const ROWS: i64 = 400;
const SLEEP: &str = "0.015";
/// Rows in the DDL's own transaction, behind it: about 15 MB of documents,
/// far more than the loopback socket buffers hold.
const PAD_ROWS: i64 = 60_000;

fn pair(name: &str) -> Pair {
    // 3 s: the keeper speaks after 1 s of silence (checked every 200 ms),
    // which leaves a loaded machine more than a second to schedule it; a
    // worker without it still loses the connection in every 6 s replay.
    let pair = Pair::start_with(name, &[PRELOAD, "wal_sender_timeout = '3s'", "log_min_messages = log"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec(
        "CREATE SCHEMA app;
         CREATE TABLE app.big (id int PRIMARY KEY, v int);
         CREATE TABLE app.pad (id int PRIMARY KEY, pad text);",
    );
    // Same name and signature on both sides, slow only on the subscriber.
    pair.pub_exec("CREATE FUNCTION public.slow_id(i int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT i'");
    pair.sub_exec(&format!(
        "CREATE FUNCTION public.slow_id(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
         $$ BEGIN PERFORM pg_catalog.pg_sleep({SLEEP}); RETURN i; END $$"
    ));
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA app");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair
}

/// The walsender serving slot `s` on the publisher.
fn walsender_pid(pair: &Pair) -> Option<i32> {
    pair.pub_client()
        .query_one("SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = 's'", &[])
        .ok()
        .and_then(|r| r.get(0))
}

fn no_replication_timeout(pair: &Pair) {
    let log = std::fs::read_to_string(pair.publisher.log_path()).unwrap_or_default();
    assert!(
        !log.contains("due to replication timeout"),
        "the publisher timed the worker's connection out:\n{}",
        pair.publisher.log_tail(30)
    );
}

fn sub_count(pair: &Pair, sql: &str) -> i64 {
    pair.sub_client().query_one(sql, &[]).expect(sql).get(0)
}

#[test]
fn ddl_replay_longer_than_wal_sender_timeout_keeps_the_connection() {
    let pair = pair("long_ddl");
    pair.pub_exec(&format!("INSERT INTO app.big SELECT g, g FROM generate_series(1, {ROWS}) g"));
    pair.wait_sub_count("s", "app.big", ROWS);
    pair.wait_caught_up("s");
    let walsender = walsender_pid(&pair);
    assert!(walsender.is_some(), "slot s is active");
    let started = std::time::Instant::now();
    // The DDL and, behind it in the same transaction, more rows than the
    // socket buffers hold: the COMMIT cannot already be waiting on the
    // subscriber's side when the replay ends, so a connection lost during
    // the replay means the whole transaction is rolled back and retried.
    pair.pub_exec(&format!(
        "CREATE INDEX big_slow ON app.big (public.slow_id(v));
         INSERT INTO app.pad SELECT g, repeat('x', 200) FROM generate_series(1, {PAD_ROWS}) g"
    ));
    pair.pub_exec(&format!("INSERT INTO app.big SELECT g, g FROM generate_series({}, {}) g", ROWS + 1, ROWS + 10));
    // Without feedback during the replay this never completes: every
    // attempt loses its connection after 3 s and is rolled back.
    wait_or_explain(
        Duration::from_secs(60),
        "the rows behind the slow DDL arrive",
        || count(&mut pair.sub_client(), "app.big") == ROWS + 10,
        || format!("{}\n--- publisher:\n{}", pair.explain("s"), pair.publisher.log_tail(20)),
    );
    assert!(started.elapsed() >= Duration::from_secs(4), "the replay was slow, as intended: {:?}", started.elapsed());
    pair.wait_caught_up("s");
    let st = pair.status("s");
    assert_eq!(st.state, "streaming", "{}", pair.explain("s"));
    assert_eq!(st.last_error, None, "no error, no retry: {}", pair.explain("s"));
    // Replayed exactly once, and no failed attempt before it.
    let attempts = sub_count(
        &pair,
        "SELECT count(*) FROM logical_ext.ddl_log WHERE source = 'apply' AND command_tag = 'CREATE INDEX'",
    );
    let replayed = sub_count(
        &pair,
        "SELECT count(*) FROM logical_ext.ddl_log WHERE source = 'apply' AND command_tag = 'CREATE INDEX' \
         AND replicated",
    );
    assert_eq!((attempts, replayed), (1, 1), "one attempt, replayed");
    assert_eq!(sub_count(&pair, "SELECT count(*) FROM pg_catalog.pg_indexes WHERE indexname = 'big_slow'"), 1);
    // The same walsender throughout: the connection was never dropped.
    assert_eq!(walsender_pid(&pair), walsender, "the worker did not reconnect");
    no_replication_timeout(&pair);
    pair.assert_same_tables(&["app.big", "app.pad"]);
}

#[test]
fn slow_trigger_longer_than_wal_sender_timeout_keeps_the_connection() {
    let pair = pair("long_trigger");
    // A replica trigger on the subscriber that takes 6 s for one row.
    pair.sub_exec(&format!(
        "CREATE FUNCTION public.slow_trg() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN PERFORM pg_catalog.pg_sleep({ROWS} * {SLEEP}); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON app.big FOR EACH ROW EXECUTE FUNCTION public.slow_trg();
         ALTER TABLE app.big ENABLE ALWAYS TRIGGER slow;"
    ));
    let walsender = walsender_pid(&pair);
    assert!(walsender.is_some(), "slot s is active");
    pair.pub_exec("INSERT INTO app.big VALUES (1, 1)");
    pair.pub_exec("INSERT INTO app.big VALUES (2, 2)");
    wait_or_explain(
        Duration::from_secs(60),
        "both rows arrive",
        || count(&mut pair.sub_client(), "app.big") == 2,
        || format!("{}\n--- publisher:\n{}", pair.explain("s"), pair.publisher.log_tail(20)),
    );
    pair.wait_caught_up("s");
    let st = pair.status("s");
    assert_eq!(st.last_error, None, "no error, no retry: {}", pair.explain("s"));
    assert_eq!(walsender_pid(&pair), walsender, "the worker did not reconnect");
    no_replication_timeout(&pair);
}

#[test]
fn feedback_flows_during_long_work_and_sigterm_stops_it_cleanly() {
    let pair = pair("long_term");
    // The trigger sleeps while `knob.slow` says so (then 60 s per row).
    pair.sub_exec(
        "CREATE TABLE public.knob (slow bool NOT NULL); INSERT INTO public.knob VALUES (true);
         CREATE FUNCTION public.slow_trg() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN IF (SELECT slow FROM public.knob) THEN PERFORM pg_catalog.pg_sleep(60); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON app.big FOR EACH ROW EXECUTE FUNCTION public.slow_trg();
         ALTER TABLE app.big ENABLE ALWAYS TRIGGER slow;",
    );
    let worker = pair.worker_pid("s");
    pair.pub_exec("INSERT INTO app.big VALUES (1, 1)");
    let sleeping = || {
        pair.sub_client()
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'",
                &[&worker],
            )
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    };
    wait_or_explain(Duration::from_secs(30), "the worker sleeps in the trigger", sleeping, || pair.explain("s"));
    // While the main thread sleeps, status updates keep arriving.
    let since: String = pair.pub_client().query_one("SELECT now()::text", &[]).unwrap().get(0);
    // (The trigger sleeps for 60 s: there is time to wait on a loaded machine.)
    wait_or_explain(
        Duration::from_secs(30),
        "the publisher hears from the busy worker",
        || {
            pair.pub_client()
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_stat_replication
                      WHERE application_name = 's' AND reply_time > $1::text::timestamptz + interval '2 s'",
                    &[&since],
                )
                .map(|r| r.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        },
        || pair.explain("s"),
    );
    assert!(sleeping(), "still in the trigger: the updates came from the keeper");
    // SIGTERM while the keeper is armed: a clean exit (no crash, so no
    // restart of the whole subscriber), then a new worker applies the row.
    pair.sub_exec("UPDATE public.knob SET slow = false");
    pair.sub_exec(&format!("SELECT pg_catalog.pg_terminate_backend({worker})"));
    pair.wait_sub_count("s", "app.big", 1);
    let log = std::fs::read_to_string(pair.subscriber.log_path()).unwrap_or_default();
    assert!(
        !log.contains("terminated by signal") && !log.contains("reinitializing"),
        "the worker exited cleanly:\n{}",
        pair.subscriber.log_tail(30)
    );
    no_replication_timeout(&pair);
}
