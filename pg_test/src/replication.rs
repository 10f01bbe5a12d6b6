//! Publisher/subscriber pairs for the apply worker's tests (`tests/apply_*.rs`).
//!
//! A [`Pair`] is two clusters: a **publisher** with the harness settings
//! (`output_plugin_libraries` lists `logical_ext`, so the worker's slot can
//! use the plugin; the extension itself is not installed there) and a
//! **subscriber** started with `shared_preload_libraries = 'logical_ext'` and
//! `CREATE EXTENSION logical_ext` done in its `postgres` database.
//!
//! Catching up is judged from the publisher's side, as PostgreSQL's own TAP
//! tests do with `wait_for_catchup`: take the publisher's WAL flush position
//! after the workload and wait until the subscription's slot reports it as
//! confirmed (the worker confirms only what it has committed and flushed
//! locally, or everything received when nothing is pending). The data is
//! then compared with [`Pair::assert_same`] (row count and md5 of
//! `string_agg(t::text, '|' ORDER BY key)` on both sides), so a worker that
//! confirmed too early fails the comparison rather than hiding.
//!
//! Every query here opens its own connection, so waits survive a crash
//! restart of either server (connection errors just mean "not yet").

use crate::{Client, Cluster, NoTls, describe_error, exec, parse_lsn, query_string, run_checked, wait_until};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The subscriber's extra settings.
pub const SUBSCRIBER_CONF: &[&str] = &["shared_preload_libraries = 'logical_ext'"];

/// Worker options for tests: retry quickly after an error (the defaults
/// are 500 ms doubling up to 30 s).
pub const FAST_RETRY: &str = r#"{"retry_min_delay_ms": 100, "retry_max_delay_ms": 1000}"#;

/// A subscriber setting for native subscriptions beside logical_ext's: the
/// native launcher restarts a failed or terminated worker no sooner than
/// `wal_retrieve_retry_interval` (5 s by default) after its last start; at
/// 100 ms, the first delay of [`FAST_RETRY`], neither side waits longer by
/// configuration.
pub const NATIVE_FAST_RETRY: &str = "wal_retrieve_retry_interval = '100ms'";

/// Default time limit for a subscriber to catch up or a state to show.
pub const CATCH_UP: Duration = Duration::from_secs(90);

/// One row of `logical_ext.subscription_status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub enabled: bool,
    pub worker_pid: Option<i32>,
    pub state: String,
    pub received_lsn: Option<String>,
    pub applied_lsn: Option<String>,
    pub latest_end_lsn: Option<String>,
    pub last_msg_send_time: Option<String>,
    pub last_msg_receipt_time: Option<String>,
    pub lag_bytes: Option<String>,
    pub lag_time: Option<String>,
    pub last_error: Option<String>,
    pub last_error_time: Option<String>,
    pub applied_transactions: i64,
    pub applied_changes: i64,
    pub conninfo: String,
    pub publications: Vec<String>,
    pub slot_name: Option<String>,
    pub origin: String,
}

/// The columns of [`Status`], as text where the Rust side only compares.
pub const STATUS_SQL: &str = "SELECT name, enabled, worker_pid, state, received_lsn::text, applied_lsn::text, \
     latest_end_lsn::text, last_msg_send_time::text, last_msg_receipt_time::text, lag_bytes::text, \
     lag_time::text, last_error, last_error_time::text, applied_transactions, applied_changes, conninfo, \
     publications, slot_name, origin FROM logical_ext.subscription_status";

fn status_from_row(r: &postgres::Row) -> Status {
    Status {
        name: r.get(0),
        enabled: r.get(1),
        worker_pid: r.get(2),
        state: r.get(3),
        received_lsn: r.get(4),
        applied_lsn: r.get(5),
        latest_end_lsn: r.get(6),
        last_msg_send_time: r.get(7),
        last_msg_receipt_time: r.get(8),
        lag_bytes: r.get(9),
        lag_time: r.get(10),
        last_error: r.get(11),
        last_error_time: r.get(12),
        applied_transactions: r.get(13),
        applied_changes: r.get(14),
        conninfo: r.get(15),
        publications: r.get(16),
        slot_name: r.get(17),
        origin: r.get(18),
    }
}

/// Polls `cond` like [`crate::wait_until`], but on timeout panics with
/// `explain()` (e.g. the subscription's status and the server log's tail),
/// which is what one needs to see why a replication wait failed.
pub fn wait_or_explain(
    timeout: Duration,
    description: &str,
    cond: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    if !crate::poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting until {description}\n{}", explain());
    }
}

/// Connects to a cluster, returning the error text instead of panicking
/// (the server may be restarting).
pub fn try_client(cluster: &Cluster) -> Result<Client, String> {
    try_client_db(cluster, "postgres")
}

/// [`try_client`] to database `db`.
pub fn try_client_db(cluster: &Cluster, db: &str) -> Result<Client, String> {
    Client::connect(&cluster.conninfo_db(db), NoTls).map_err(|e| describe_error(&e))
}

/// `count(*)` and md5 of `string_agg(t::text, '|' ORDER BY order_by)` over
/// the rows of `select` (any query, e.g. `SELECT * FROM t` or a column
/// subset), as one string `"<count> <md5>"` for easy comparison.
pub fn digest(client: &mut Client, select: &str, order_by: &str) -> String {
    let sql = format!(
        "SELECT count(*)::text || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY {order_by}), '')) \
         FROM ({select}) t"
    );
    match client.query_one(&sql, &[]) {
        Ok(row) => row.get(0),
        Err(e) => panic!("digest failed: {}\n--- SQL:\n{sql}", describe_error(&e)),
    }
}

/// `count(*)` of a table (or any `FROM` item).
pub fn count(client: &mut Client, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    match client.query_one(&sql, &[]) {
        Ok(row) => row.get(0),
        Err(e) => panic!("count failed: {}\n--- SQL:\n{sql}", describe_error(&e)),
    }
}

/// A publisher and a subscriber.
pub struct Pair {
    pub publisher: Cluster,
    pub subscriber: Cluster,
}

impl Pair {
    /// Starts `<name>_pub` and `<name>_sub` (in parallel) and installs the
    /// extension on the subscriber.
    pub fn start(name: &str) -> Pair {
        Pair::start_with(name, &[], &[])
    }

    /// Like [`Pair::start`] with extra settings for each side (appended
    /// after [`SUBSCRIBER_CONF`] on the subscriber).
    pub fn start_with(name: &str, publisher_conf: &[&str], subscriber_conf: &[&str]) -> Pair {
        let pub_name = format!("{name}_pub");
        let pub_conf: Vec<String> = publisher_conf.iter().map(|s| s.to_string()).collect();
        let publisher = std::thread::spawn(move || {
            let conf: Vec<&str> = pub_conf.iter().map(String::as_str).collect();
            Cluster::start(&pub_name, &conf)
        });
        let mut conf: Vec<&str> = SUBSCRIBER_CONF.to_vec();
        conf.extend_from_slice(subscriber_conf);
        let subscriber = Cluster::start(&format!("{name}_sub"), &conf);
        let publisher = publisher.join().unwrap_or_else(|_| panic!("starting the publisher of {name} failed"));
        assert!(
            std::path::Path::new(crate::decoding::PLUGIN_LIBRARY).exists(),
            "{} is missing: run `cargo pgrx install --release --pg-config \
             /usr/lib/postgresql/15/bin/pg_config` in the repository root first",
            crate::decoding::PLUGIN_LIBRARY
        );
        subscriber.exec("CREATE EXTENSION logical_ext");
        Pair { publisher, subscriber }
    }

    /// A connection string for the publisher as the worker should use it
    /// (no `application_name`, so the walsender shows the subscription's).
    pub fn publisher_conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.publisher.port())
    }

    pub fn pub_client(&self) -> Client {
        self.publisher.client()
    }
    pub fn sub_client(&self) -> Client {
        self.subscriber.client()
    }

    /// Runs SQL on the publisher (one transaction for several statements).
    pub fn pub_exec(&self, sql: &str) {
        self.publisher.exec(sql);
    }
    /// Runs SQL on the subscriber.
    pub fn sub_exec(&self, sql: &str) {
        self.subscriber.exec(sql);
    }
    /// Runs the same SQL (e.g. the tables' DDL) on both.
    pub fn both_exec(&self, sql: &str) {
        self.pub_exec(sql);
        self.sub_exec(sql);
    }

    /// `logical_ext.create_subscription(name, <publisher>, publications,
    /// copy_data => false, options => FAST_RETRY <extra>)`; `extra` is more
    /// named arguments, e.g. `", enabled => false"`, or `""`.
    pub fn subscribe(&self, name: &str, publications: &[&str], extra: &str) {
        self.subscribe_with_conninfo(name, &self.publisher_conninfo(), publications, extra);
    }

    /// [`Pair::subscribe`] with an explicit connection string.
    pub fn subscribe_with_conninfo(&self, name: &str, conninfo: &str, publications: &[&str], extra: &str) {
        let pubs: Vec<String> = publications.iter().map(|s| s.to_string()).collect();
        let sql = format!(
            "SELECT logical_ext.create_subscription(name => $1::text, conninfo => $2::text, publications => $3::text[], \
             copy_data => false, options => '{FAST_RETRY}'{extra})"
        );
        let mut c = self.sub_client();
        if let Err(e) = c.execute(&sql, &[&name, &conninfo, &pubs]) {
            panic!("create_subscription({name}) failed: {}\n--- SQL:\n{sql}", describe_error(&e));
        }
    }

    /// The subscription's status row, `Err` when the subscriber cannot be
    /// reached (restarting), `Ok(None)` when there is no such subscription.
    pub fn try_status(&self, name: &str) -> Result<Option<Status>, String> {
        let mut c = try_client(&self.subscriber)?;
        let rows = c.query(&format!("{STATUS_SQL} WHERE name = $1"), &[&name]).map_err(|e| describe_error(&e))?;
        Ok(rows.first().map(status_from_row))
    }

    /// The subscription's status row; panics when there is none.
    pub fn status(&self, name: &str) -> Status {
        match self.try_status(name) {
            Ok(Some(s)) => s,
            Ok(None) => panic!("no subscription {name} in logical_ext.subscription_status"),
            Err(e) => panic!("reading the status of {name}: {e}"),
        }
    }

    /// What to show when a wait on the subscription fails: its status, the
    /// publisher's slots and both servers' log tails.
    pub fn explain(&self, name: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "--- subscription_status of {name}: {:#?}", self.try_status(name));
        let slots = try_client(&self.publisher).and_then(|mut c| {
            c.query(
                "SELECT slot_name::text, active, active_pid, restart_lsn::text, confirmed_flush_lsn::text, \
                 pg_current_wal_flush_lsn()::text FROM pg_replication_slots",
                &[],
            )
            .map_err(|e| describe_error(&e))
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{:?} active={:?} pid={:?} restart={:?} confirmed_flush={:?} (publisher flush {:?})",
                            r.get::<_, Option<String>>(0),
                            r.get::<_, Option<bool>>(1),
                            r.get::<_, Option<i32>>(2),
                            r.get::<_, Option<String>>(3),
                            r.get::<_, Option<String>>(4),
                            r.get::<_, Option<String>>(5)
                        )
                    })
                    .collect::<Vec<_>>()
            })
        });
        let _ = writeln!(s, "--- publisher slots: {slots:#?}");
        let _ = writeln!(
            s,
            "--- subscriber log ({}):\n{}",
            self.subscriber.log_path().display(),
            self.subscriber.log_tail(25)
        );
        let _ = writeln!(
            s,
            "--- publisher log ({}):\n{}",
            self.publisher.log_path().display(),
            self.publisher.log_tail(15)
        );
        s
    }

    /// Waits until `cond(status)` holds for the subscription's status row
    /// (a missing row or an unreachable subscriber counts as "not yet");
    /// returns that row.
    pub fn wait_status(&self, name: &str, what: &str, mut cond: impl FnMut(&Status) -> bool) -> Status {
        let mut last = None;
        wait_or_explain(
            CATCH_UP,
            &format!("subscription {name}: {what}"),
            || match self.try_status(name) {
                Ok(Some(s)) if cond(&s) => {
                    last = Some(s);
                    true
                }
                _ => false,
            },
            || self.explain(name),
        );
        last.expect("set when the wait succeeds")
    }

    /// Waits until the subscription has a live worker that is streaming.
    pub fn wait_streaming(&self, name: &str) -> Status {
        self.wait_status(name, "state = 'streaming' with a worker_pid", |s| {
            s.state == "streaming" && s.worker_pid.is_some()
        })
    }

    /// Subscription `s` to publication `p` with the option `streaming`, no
    /// copy, short retry delays, and more `options` (`, "key": value`);
    /// waits until it streams.
    pub fn subscribe_streaming(&self, options: &str) {
        let sql = format!(
            "SELECT logical_ext.create_subscription(name => 's', conninfo => $1::text, publications => ARRAY['p'], \
             copy_data => false, options => '{{\"retry_min_delay_ms\": 100, \"retry_max_delay_ms\": 1000, \
             \"streaming\": true{options}}}')"
        );
        if let Err(e) = self.sub_client().execute(&sql, &[&self.publisher_conninfo()]) {
            panic!("create_subscription: {}", describe_error(&e));
        }
        self.wait_streaming("s");
    }

    /// The subscriber's spool files of streamed transactions
    /// (base/pgsql_tmp/pgsql_tmp_logical_ext.*).
    pub fn spool_files(&self) -> Vec<std::path::PathBuf> {
        let dir = self.subscriber.data_dir().join("base/pgsql_tmp");
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pgsql_tmp_logical_ext."))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bytes of the subscriber's spool files.
    pub fn spooled_bytes(&self) -> u64 {
        self.spool_files().iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// The publisher's WAL flush position (what a walsender can send).
    pub fn publisher_flush_lsn(&self) -> u64 {
        let mut c = self.pub_client();
        let s: String = c.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).expect("flush lsn").get(0);
        parse_lsn(&s)
    }

    /// The `confirmed_flush_lsn` of a slot on the publisher (`None`: no
    /// such slot, no position yet, or the publisher is unreachable).
    pub fn confirmed_flush(&self, slot: &str) -> Option<u64> {
        let mut c = try_client(&self.publisher).ok()?;
        let row = c
            .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .ok()??;
        row.get::<_, Option<String>>(0).map(|s| parse_lsn(&s))
    }

    /// Waits until the subscription (whose slot is named like it unless it
    /// says otherwise) has confirmed everything the publisher had flushed
    /// when this was called: every transaction committed on the publisher
    /// before the call has been applied and flushed on the subscriber.
    pub fn wait_caught_up(&self, name: &str) {
        let slot = match self.try_status(name) {
            Ok(Some(Status { slot_name: Some(s), .. })) => s,
            _ => name.to_string(),
        };
        self.wait_slots_caught_up(&[&slot], name, Instant::now());
    }

    /// Waits, as [`Pair::wait_caught_up`] does, until every slot in `slots`
    /// has confirmed the publisher's flush position as of this call (panics
    /// with `explain(name)` after [`CATCH_UP`]). Returns, per slot, how long
    /// after `since` it was first seen caught up: to compare how fast
    /// subscriptions recover, polled together so that a slow one does not
    /// delay the other's figure.
    pub fn wait_slots_caught_up(&self, slots: &[&str], name: &str, since: Instant) -> Vec<Duration> {
        let target = self.publisher_flush_lsn();
        let seen: RefCell<Vec<Option<Duration>>> = RefCell::new(vec![None; slots.len()]);
        wait_or_explain(
            CATCH_UP,
            &format!("slots {slots:?} (of {name}) confirm the publisher's flush position {}", format_lsn(target)),
            || {
                let mut seen = seen.borrow_mut();
                for (slot, seen) in slots.iter().zip(seen.iter_mut()) {
                    if seen.is_none() && self.confirmed_flush(slot).is_some_and(|c| c >= target) {
                        *seen = Some(since.elapsed());
                    }
                }
                seen.iter().all(Option::is_some)
            },
            || format!("caught up after: {:?}\n{}", seen.borrow(), self.explain(name)),
        );
        seen.into_inner().into_iter().map(|d| d.expect("checked")).collect()
    }

    /// Waits until `SELECT count(*) FROM <table>` on the subscriber is `n`.
    pub fn wait_sub_count(&self, name: &str, table: &str, n: i64) {
        let sql = format!("SELECT count(*) FROM {table}");
        let last = RefCell::new(None);
        wait_or_explain(
            CATCH_UP,
            &format!("{table} has {n} rows on the subscriber"),
            || {
                let got = try_client(&self.subscriber)
                    .and_then(|mut c| c.query_one(&sql, &[]).map_err(|e| describe_error(&e)))
                    .map(|r| r.get::<_, i64>(0));
                let done = got == Ok(n);
                *last.borrow_mut() = Some(got);
                done
            },
            || format!("last count: {:?}\n{}", last.borrow(), self.explain(name)),
        );
    }

    /// Asserts that `select` (ordered by `order_by`) gives the same rows on
    /// both sides: same count and same md5 of the rows' text.
    pub fn assert_same(&self, select: &str, order_by: &str) {
        self.assert_same_in("postgres", select, order_by);
    }

    /// [`Pair::assert_same`] with the subscriber's database `db` (the
    /// publisher's `postgres` as always), e.g. where a native subscription
    /// applies the same stream beside logical_ext's.
    pub fn assert_same_in(&self, db: &str, select: &str, order_by: &str) {
        let p = digest(&mut self.pub_client(), select, order_by);
        let s = digest(&mut self.subscriber.client_db(db), select, order_by);
        assert_eq!(
            s, p,
            "subscriber database {db} (left) and publisher (right) differ for `{select}` ordered by {order_by}"
        );
    }

    /// [`Pair::assert_same`] for whole tables ordered by `id`.
    pub fn assert_same_tables(&self, tables: &[&str]) {
        for t in tables {
            self.assert_same(&format!("SELECT * FROM {t}"), "id");
        }
    }

    /// The pid of the subscription's apply worker (waits until it runs).
    pub fn worker_pid(&self, name: &str) -> i32 {
        self.wait_status(name, "a worker_pid", |s| s.worker_pid.is_some()).worker_pid.expect("checked")
    }

    /// Waits until the subscription's worker is inside a remote transaction
    /// that writes `table`: it holds a lock on the table (taken by the first
    /// change, kept until its local commit). Returns the worker's pid.
    pub fn wait_applying(&self, name: &str, table: &str) -> i32 {
        self.wait_writing(
            "postgres",
            "SELECT worker_pid FROM logical_ext.subscription_status WHERE name = $1",
            name,
            table,
        )
    }

    /// [`Pair::wait_applying`] for the native subscription `name` of the
    /// subscriber's database `db`.
    pub fn wait_native_applying(&self, db: &str, name: &str, table: &str) -> i32 {
        self.wait_writing(db, NATIVE_WORKER_SQL, name, table)
    }

    /// Waits until the process that `worker_sql` (one row, `$1` = `name`)
    /// names holds a row-exclusive lock on `table` in database `db`.
    fn wait_writing(&self, db: &str, worker_sql: &str, name: &str, table: &str) -> i32 {
        let sql = format!(
            "SELECT l.pid FROM pg_locks l WHERE l.pid = ({worker_sql}) AND l.locktype = 'relation' \
             AND l.relation = $2::text::regclass AND l.mode = 'RowExclusiveLock' AND l.granted"
        );
        let mut pid = None;
        wait_or_explain(
            CATCH_UP,
            &format!("the worker of {name} is inside a transaction writing {table}"),
            || {
                pid = try_client_db(&self.subscriber, db)
                    .ok()
                    .and_then(|mut c| c.query_opt(&sql, &[&name, &table]).ok().flatten())
                    .and_then(|r| r.get::<_, Option<i32>>(0));
                pid.is_some()
            },
            || self.explain(name),
        );
        pid.expect("checked")
    }

    /// Waits until the subscriber accepts connections again (after a
    /// restart) and has left recovery. Right after a `kill -9` this can be
    /// true before the postmaster has even noticed the kill: use
    /// [`Cluster::kill9_and_wait_crash_restart`] there.
    pub fn wait_subscriber_up(&self) {
        let last = RefCell::new(String::new());
        wait_or_explain(
            CATCH_UP,
            "the subscriber accepts connections",
            || match try_client(&self.subscriber)
                .and_then(|mut c| c.query_one("SELECT pg_is_in_recovery()", &[]).map_err(|e| describe_error(&e)))
            {
                Ok(r) => !r.get::<_, bool>(0),
                Err(e) => {
                    *last.borrow_mut() = e;
                    false
                }
            },
            || format!("last error: {}\n{}", last.borrow(), self.subscriber.log_tail(30)),
        );
    }
}

/// The pid of a native subscription's apply worker (`$1`: its name).
const NATIVE_WORKER_SQL: &str = "SELECT pid FROM pg_catalog.pg_stat_subscription WHERE subname = $1 AND relid IS NULL";

/// Native subscriptions (`CREATE SUBSCRIPTION`) beside logical_ext's, to
/// compare both under the same fault. Their slots are named like them; in a
/// database of their own on the subscriber they can apply the very stream
/// logical_ext applies in `postgres`.
impl Pair {
    /// `CREATE SUBSCRIPTION name CONNECTION <publisher> PUBLICATION ...
    /// WITH (copy_data = false<with>)` in the subscriber's database `db`;
    /// `with` is more options, e.g. `", disable_on_error = true"`, or `""`.
    pub fn subscribe_native(&self, db: &str, name: &str, publications: &[&str], with: &str) {
        exec(
            &mut self.subscriber.client_db(db),
            &format!(
                "CREATE SUBSCRIPTION {name} CONNECTION '{}' PUBLICATION {} WITH (copy_data = false{with})",
                self.publisher_conninfo(),
                publications.join(", ")
            ),
        );
    }

    /// The pid of the native subscription's apply worker; `None` while none
    /// runs or the subscriber cannot be reached.
    pub fn try_native_worker_pid(&self, db: &str, name: &str) -> Option<i32> {
        let mut c = try_client_db(&self.subscriber, db).ok()?;
        c.query_opt(NATIVE_WORKER_SQL, &[&name]).ok()??.get(0)
    }

    /// Waits until the native subscription has an apply worker other than
    /// `not` (any, with `None`); returns its pid.
    pub fn native_worker_pid(&self, db: &str, name: &str, not: Option<i32>) -> i32 {
        let mut pid = None;
        wait_or_explain(
            CATCH_UP,
            &format!("native subscription {name} has an apply worker other than {not:?}"),
            || {
                pid = self.try_native_worker_pid(db, name).filter(|&p| Some(p) != not);
                pid.is_some()
            },
            || self.explain(name),
        );
        pid.expect("checked")
    }

    /// Where the native subscription's replication origin says the stream
    /// is to be resumed (`0/0` before the first transaction).
    pub fn native_origin_lsn(&self, db: &str, name: &str) -> u64 {
        let lsn = query_string(
            &mut self.subscriber.client_db(db),
            &format!(
                "SELECT coalesce(o.remote_lsn, '0/0')::text FROM pg_catalog.pg_subscription s \
                 LEFT JOIN pg_catalog.pg_replication_origin_status o ON o.external_id = 'pg_' || s.oid \
                 WHERE s.subname = '{name}'"
            ),
        );
        parse_lsn(&lsn)
    }
}

/// `X/Y` text of an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// Runs `sql` on `client` and returns the error it must raise (panics when
/// it succeeds), as `(sqlstate, message, hint)`.
pub fn expect_error(client: &mut Client, sql: &str) -> (String, String, String) {
    match client.batch_execute(sql) {
        Ok(()) => panic!("expected an error from:\n{sql}"),
        Err(e) => match e.as_db_error() {
            Some(db) => (
                db.code().code().to_string(),
                db.message().to_string(),
                db.hint().map(str::to_string).unwrap_or_default(),
            ),
            None => panic!("expected a server error from:\n{sql}\ngot {e:?}"),
        },
    }
}

/// `pg_dump --schema-only --schema <schema>` of a cluster, with what differs
/// between nodes for reasons other than the schema left out: comments,
/// session settings, psql's per-dump restrict key, and publication
/// membership (publisher only).
pub fn schema_dump(cluster: &Cluster, schema: &str) -> String {
    let out = run_checked(
        cluster
            .pg_command("pg_dump")
            .args(["--schema-only", "--no-publications", "--no-subscriptions", "--schema", schema, "-d"])
            .arg(cluster.conninfo()),
        &format!("pg_dump of schema {schema} on {}", cluster.name()),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            // `\restrict <random key>` (pg_dump >= 15.14) differs per run.
            const NOISE: &[&str] = &["--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict"];
            !l.is_empty() && !NOISE.iter().any(|p| l.starts_with(p)) && !l.contains("PUBLICATION")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Pair {
    /// Asserts that the schema's DDL is the same on both sides ([`schema_dump`]).
    pub fn assert_same_schema(&self, schema: &str) {
        let p = schema_dump(&self.publisher, schema);
        let s = schema_dump(&self.subscriber, schema);
        assert_eq!(s, p, "schema {schema}: subscriber (left) and publisher (right) differ");
    }
}

/// Sends `signal` (`STOP`, `CONT`, ...) to a server process.
pub fn send_signal(pid: i32, signal: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} {pid} failed");
}

/// Holds process `pid` of `cluster` with SIGSTOP while pg_stat_activity
/// shows it waiting with one of `wait_types` (idle: it holds no lock that
/// others need); caught anywhere else it is let go and tried again. Undo
/// with `send_signal(pid, "CONT")`.
pub fn stop_while_waiting(cluster: &Cluster, pid: i32, wait_types: &[&str]) {
    let mut c = cluster.client();
    let mut waiting = || -> bool {
        let t: Option<String> = c
            .query_one("SELECT wait_event_type::text FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .map(|r| r.get(0))
            .unwrap_or(None);
        t.is_some_and(|t| wait_types.contains(&t.as_str()))
    };
    wait_until(CATCH_UP, &format!("process {pid} is stopped while it waits ({wait_types:?})"), || {
        if !waiting() {
            return false;
        }
        send_signal(pid, "STOP");
        if waiting() {
            return true;
        }
        send_signal(pid, "CONT");
        false
    });
}
