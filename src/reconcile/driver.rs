//! The subscriber-side SQL functions `verify_table`, `verify_subscription`
//! and `repair_table`: they run in the caller's session, connect to the
//! publisher with the subscription's connection string (as its initial
//! copy does), ask the publisher (`publisher.rs`) to send each chunk down
//! the stream, and wait (with a timeout) for the apply worker to record what
//! it found there (`apply.rs`). docs/RECONCILE.md.
//!
//! The walk: pass 1 covers the table in chunks of `chunk_rows` rows in key
//! order (the publisher picks each chunk's upper key, so chunk sizes follow
//! the data, not the key space); pass 2 re-reads each mismatching chunk in
//! sub-chunks of at most `key_rows` rows with per-key hashes, which name the
//! differing keys. A table without a key is one chunk (whole-table digest).
//!
//! Results go to tables written by the worker, so progress is visible to
//! other sessions while a run goes on; the function returns the totals.

use super::digest::{Coding, ColumnType, choose_coding};
use super::document::{Op, Range, shape};
use super::fail;
use super::publisher::{FIRST_NORMAL_OBJECT_ID, MAX_ROWS, unsupported_key_type};
use super::requests::Request;
use crate::apply::catalog::{self, Subscription};
use crate::apply::conninfo::redact;
use crate::apply::sync::remote;
use crate::apply::walrcv::{Connection, quote_literal};
use crate::ffi::identity::{self, AsRole};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Most keys sent in one repair message.
const REPAIR_BATCH: usize = super::publisher::MAX_KEYS;
/// Tries of a publisher call that timed out waiting for its lock.
const LOCK_TRIES: u32 = 20;

/// What the caller may do: superusers and `logical_ext_operator` members
/// on any table, a table's owner on its own (docs/SECURITY.md).
fn require_privilege(relid: pg_sys::Oid, what: &str) {
    // SAFETY: privilege checks of the current user.
    let allowed = unsafe {
        let me = pg_sys::GetUserId();
        pg_sys::superuser()
            || identity::role_oid("logical_ext_operator").is_some_and(|op| pg_sys::has_privs_of_role(me, op))
            || pg_sys::pg_class_ownercheck(relid, me)
    };
    if !allowed {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to {what} this table"),
            "Only the table's owner, members of logical_ext_operator and superusers may.",
        );
    }
}

fn require_read_committed() {
    // SAFETY: reads the isolation level of the current transaction.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        fail(
            PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
            "verify_table and repair_table wait for results the apply worker commits meanwhile",
            "Call them in a READ COMMITTED transaction.",
        );
    }
}

/// A table as both sides compare it.
struct Table {
    relid: pg_sys::Oid,
    schema: String,
    name: String,
    columns: Vec<String>,
    keys: Vec<String>,
    /// Per compared column: binary where both nodes store the same type.
    codings: Vec<Coding>,
}

impl Table {
    /// What a request of this table binds (`document::shape`); repairs hash
    /// nothing, so their shape has no codings.
    fn shape(&self, sub: &Subscription, op: Op) -> [u8; 16] {
        let codings: &[Coding] = if op == Op::Verify { &self.codings } else { &[] };
        shape(&sub.publications, &self.columns, &self.keys, codings)
    }
}

/// SQL (run here and on the publisher) listing a relation's key columns'
/// type and effective collation, so that key ranges mean the same rows on
/// both nodes.
fn key_facts_sql(rel: &str, keys: &[String]) -> String {
    let names = keys.iter().map(|k| quote_literal(k)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
         CASE WHEN co.collname IS NULL THEN '' WHEN co.collname = 'default' THEN \
           'default:' || (SELECT d.datcollate::text FROM pg_catalog.pg_database d \
                           WHERE d.datname = pg_catalog.current_database()) \
         ELSE co.collname::text END \
         FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
         WHERE a.attrelid = {}::pg_catalog.regclass AND a.attname IN ({names}) ORDER BY 1",
        quote_literal(rel)
    )
}

fn spi_rows(sql: &str, ncols: usize) -> Vec<Vec<Option<String>>> {
    Spi::connect(|c| {
        let rows = c.select(sql, None, &[])?;
        rows.map(|r| (1..=ncols).map(|i| r.get::<String>(i)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e: pgrx::spi::SpiError| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""))
}

fn connect(sub: &Subscription) -> Connection {
    Connection::connect(&sub.conninfo, &format!("logical_ext verify {}", sub.name)).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("could not connect to the publisher: {}", redact(&e.0)),
            "Check the subscription's connection string and the publisher's pg_hba.conf.",
        )
    })
}

fn load(subscription: &str) -> Subscription {
    let _as = AsRole::bootstrap_superuser();
    catalog::by_name(subscription).unwrap_or_else(|| {
        fail(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("subscription \"{subscription}\" does not exist"), "")
    })
}

/// The table must be one of the subscription's tables, `ready` (a table
/// being copied is not applied by the apply worker yet: comparing it would
/// report the copy's progress), and neither a catalog nor logical_ext's own.
fn require_synced(sub: &Subscription, relid: pg_sys::Oid) {
    let _as = AsRole::bootstrap_superuser();
    let state = Spi::get_one_with_args::<String>(
        "SELECT st.state FROM logical_ext.subscription_tables st JOIN pg_catalog.pg_class c ON c.oid = st.relid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE st.subid = $1 AND st.relid = $2::pg_catalog.regclass AND c.oid >= $3::pg_catalog.oid \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'logical_ext')",
        &[sub.id.into(), relid.into(), pg_sys::Oid::from(FIRST_NORMAL_OBJECT_ID).into()],
    )
    .ok()
    .flatten();
    match state.as_deref() {
        Some("ready") => {}
        Some(state) => fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the table is being synchronized (state {state})"),
            "Verify it once logical_ext.subscription_tables shows it ready.",
        ),
        None => fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the table is not one of subscription \"{}\"'s tables", sub.name),
            "Verify a table listed in logical_ext.subscription_tables for this subscription (logical_ext.refresh_subscription() adds newly published ones).",
        ),
    }
}

/// Chunk sizes: at least 1 row, at most the publisher's cap.
fn require_rows(what: &str, n: i32) {
    if !(1..=MAX_ROWS).contains(&n) {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} must be between 1 and {MAX_ROWS}"),
            "Smaller chunks keep the publisher's SHARE lock short.",
        );
    }
}

/// The compared columns and the key, checked against the publisher.
fn describe(conn: &mut Connection, sub: &Subscription, relid: pg_sys::Oid) -> Table {
    let (schema, name) = Spi::connect(|c| {
        let r = c.select(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1 AND c.relkind = 'r'",
            None,
            &[relid.into()],
        )?;
        r.map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
            .next()
            .transpose()
    })
    .unwrap_or_else(|e: pgrx::spi::SpiError| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""))
    .unwrap_or_else(|| {
        fail(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            "only plain tables can be verified",
            "Verify each partition (leaf table) instead.",
        )
    });
    let local: Vec<String> = spi_rows(
        &format!(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = {} AND a.attnum > 0 \
             AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
            relid.to_u32()
        ),
        1,
    )
    .into_iter()
    .filter_map(|mut r| r.remove(0))
    .collect();
    // The key the worker finds rows by: the replica identity index, else
    // the primary key.
    let keys: Vec<String> = spi_rows(
        &format!(
            "SELECT a.attname::text FROM (SELECT i.indkey FROM pg_catalog.pg_index i WHERE i.indrelid = {} \
               AND (i.indisreplident OR i.indisprimary) AND i.indisvalid AND i.indexprs IS NULL AND i.indpred IS NULL \
               ORDER BY i.indisreplident DESC LIMIT 1) i, \
             LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = {} AND a.attnum = k.attnum ORDER BY k.pos",
            relid.to_u32(),
            relid.to_u32()
        ),
        1,
    )
    .into_iter()
    .filter_map(|mut r| r.remove(0))
    .collect();
    let mut local_types: Vec<(String, ColumnType)> = Vec::new();
    for r in spi_rows(
        &format!(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid::pg_catalog.int8::text, \
             t.typtype::text FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped",
            relid.to_u32()
        ),
        4,
    ) {
        let [Some(col), Some(ty), Some(oid), Some(typtype)] = r.as_slice() else { continue };
        local_types.push((col.clone(), ColumnType { oid: oid.parse().unwrap_or(0), name: ty.clone() }));
        if !keys.contains(col) {
            continue;
        }
        if let Some(why) = unsupported_key_type(oid.parse().unwrap_or(u32::MAX), typtype) {
            fail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("key column \"{col}\" of {schema}.{name} has type {ty}, {why}"),
                "Reconciliation compares key ranges with PostgreSQL's own operators only: the key's columns must have built-in base types. Resynchronize such a table instead (logical_ext.resync_table).",
            );
        }
    }
    let published: Vec<String> = conn
        .exec(&remote::columns_query(&sub.publications, &schema, &name), 1)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, e.0, ""))
        .into_iter()
        .filter_map(|mut r| r.remove(0))
        .collect();
    if published.is_empty() {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("table {schema}.{name} is not published by subscription \"{}\"'s publications", sub.name),
            "Verify a table the subscription replicates (same schema and name on the publisher).",
        );
    }
    // Subscriber-only columns are not compared; neither are published
    // columns this table lacks (their values have nowhere to go).
    let columns: Vec<String> = local.into_iter().filter(|c| published.contains(c)).collect();
    if let Some(k) = keys.iter().find(|k| !columns.contains(k)) {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("key column \"{k}\" of {schema}.{name} is not replicated"),
            "The publication's column list must include the key.",
        );
    }
    if !keys.is_empty() {
        let rel =
            format!("{}.{}", crate::apply::walrcv::quote_ident(&schema), crate::apply::walrcv::quote_ident(&name));
        let sql = key_facts_sql(&rel, &keys);
        let here = spi_rows(&sql, 3);
        let there = conn.exec(&sql, 3).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, e.0, ""));
        if here != there {
            fail(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("the key of {schema}.{name} has different types or collations on the two nodes"),
                "Key ranges must order the same way on both nodes: same key types and collations.",
            );
        }
    }
    let codings = codings(conn, &schema, &name, &columns, &local_types);
    Table { relid, schema, name, columns, keys, codings }
}

/// Each compared column's coding: binary where both nodes have the same
/// type and modifier and `ffi::rowscan` reads it in binary. Both databases
/// must have the same encoding (texts are compared byte for byte).
fn codings(
    conn: &mut Connection,
    schema: &str,
    name: &str,
    columns: &[String],
    local: &[(String, ColumnType)],
) -> Vec<Coding> {
    let remote_fail = |e: crate::apply::walrcv::WalRcvError| fail(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, e.0, "");
    let encoding_sql = "SELECT pg_catalog.getdatabaseencoding()::text";
    let there = conn.exec(encoding_sql, 1).unwrap_or_else(remote_fail);
    let here = spi_rows(encoding_sql, 1);
    if here != there {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "the publisher's and the subscriber's databases have different encodings",
            "Reconciliation compares texts byte for byte: both databases need the same encoding.",
        );
    }
    let rel = format!("{}.{}", crate::apply::walrcv::quote_ident(schema), crate::apply::walrcv::quote_ident(name));
    let remote: Vec<(String, ColumnType)> = conn
        .exec(
            &format!(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid::pg_catalog.int8::text \
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = {}::pg_catalog.regclass AND a.attnum > 0 \
                 AND NOT a.attisdropped",
                quote_literal(&rel)
            ),
            3,
        )
        .unwrap_or_else(remote_fail)
        .into_iter()
        .filter_map(|r| match r.as_slice() {
            [Some(n), Some(t), Some(o)] => Some((n.clone(), ColumnType { oid: o.parse().unwrap_or(0), name: t.clone() })),
            _ => None,
        })
        .collect();
    let find = |list: &[(String, ColumnType)], c: &str| list.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
    columns
        .iter()
        .map(|c| match (find(local, c), find(&remote, c)) {
            (Some(h), Some(t)) => choose_coding(&h, &t, crate::ffi::rowscan::binary_supported),
            _ => Coding::Text,
        })
        .collect()
}

fn array_literal(v: &[String]) -> String {
    format!("ARRAY[{}]::pg_catalog.text[]", v.iter().map(|s| quote_literal(s)).collect::<Vec<_>>().join(", "))
}

fn opt_array(v: &Option<Vec<String>>) -> String {
    v.as_ref().map_or("NULL".to_string(), |v| array_literal(v))
}

/// Run a publisher call, again while it times out waiting for its lock.
fn call(conn: &mut Connection, sql: &str, throttle: Duration) -> serde_json::Value {
    let lock_not_available = PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE as i32;
    for attempt in 1..=LOCK_TRIES {
        match conn.exec_with_state(sql, 1) {
            Ok(rows) => {
                let text = rows.into_iter().next().and_then(|mut r| r.remove(0)).unwrap_or_default();
                return serde_json::from_str(&text).unwrap_or_else(|e| {
                    fail(PgSqlErrorCode::ERRCODE_PROTOCOL_VIOLATION, format!("bad reply from the publisher: {e}"), "")
                });
            }
            Err((_, state)) if state == lock_not_available && attempt < LOCK_TRIES => {
                nap(Duration::from_millis(50 * attempt as u64).max(throttle));
            }
            Err((e, _)) => fail(
                PgSqlErrorCode::ERRCODE_CONNECTION_EXCEPTION,
                format!("the publisher refused the reconcile call: {}", e.0),
                "The subscription's role needs EXECUTE on logical_ext.reconcile_verify/reconcile_repair and SELECT on the table there; see docs/RECONCILE.md.",
            ),
        }
    }
    unreachable!("the last attempt returns or fails")
}

/// Sleep, answering interrupts (a cancel stops the run).
fn nap(d: Duration) {
    if d.is_zero() {
        return;
    }
    // SAFETY: waits on our own latch with a timeout; interrupts are processed after.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            d.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// A count read under a fresh snapshot (what the worker committed so far).
fn fresh_count(sql: &str, run: i64) -> i64 {
    fresh(|| Spi::get_one_with_args::<i64>(sql, &[run.into()]).ok().flatten().unwrap_or(0))
}

/// `read` under a fresh READ COMMITTED snapshot (what the worker committed
/// so far, though this function's own statement began earlier).
fn fresh<T>(read: impl FnOnce() -> T) -> T {
    // SAFETY: a fresh snapshot for this one read, popped after (an ERROR
    // in between aborts the transaction, which pops it).
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let out = read();
    // SAFETY: pairs with the push above.
    unsafe { pg_sys::PopActiveSnapshot() };
    out
}

/// Wait until `sql` (a count for run `$1`) reaches `want`.
fn wait_for(sql: &str, run: i64, want: i64, deadline: Instant, sub: &str) {
    while fresh_count(sql, run) < want {
        if Instant::now() >= deadline {
            fail(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("timed out waiting for subscription \"{sub}\"'s apply worker to reach run {run}'s documents"),
                "Is the subscription enabled and streaming (logical_ext.subscription_status)? Results that arrive later are still recorded in logical_ext.verify_chunks.",
            );
        }
        nap(Duration::from_millis(20));
    }
}

/// Next part of `requested` to cover after a call covered it up to
/// `covered_upper` (`complete`: the whole of it). Pure; unit-tested.
pub(crate) fn remaining(requested: &Range, covered_upper: Option<Vec<String>>, complete: bool) -> Option<Range> {
    if complete {
        return None;
    }
    Some(Range { lower: covered_upper, upper: requested.upper.clone() })
}

/// Chunks whose recorded answer covers another range (or kind) than the
/// one asked for: `asked` against `recorded` (chunk, per-key, lower, upper).
/// Pure; unit-tested.
pub(crate) fn unanswered(asked: &[(i32, bool, Range)], recorded: &[(i32, bool, Range)]) -> Vec<i32> {
    asked
        .iter()
        .filter(|a| !recorded.iter().any(|r| r == *a))
        .map(|(chunk, ..)| *chunk)
        .filter(|chunk| recorded.iter().any(|(c, ..)| c == chunk))
        .collect()
}

/// The worker records what a document covered; a chunk answered with
/// another range than this call asked for (a document sent by hand with
/// this request's nonce, review finding L1) is marked as an error rather
/// than trusted: its comparison says nothing about the range asked for.
fn check_answers(run: i64, asked: &[(i32, bool, Range)]) {
    let _as = AsRole::bootstrap_superuser();
    let recorded: Vec<(i32, bool, Range)> = fresh(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT chunk, per_key, lower_key, upper_key FROM logical_ext.verify_chunks WHERE run_id = $1",
                None,
                &[run.into()],
            )?;
            rows.map(|r| {
                Ok((
                    r.get::<i32>(1)?.unwrap_or_default(),
                    r.get::<bool>(2)?.unwrap_or_default(),
                    Range { lower: r.get::<Vec<String>>(3)?, upper: r.get::<Vec<String>>(4)? },
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    let wrong = unanswered(asked, &recorded);
    if !wrong.is_empty() {
        Spi::run_with_args(
            "UPDATE logical_ext.verify_chunks SET matches = NULL, \
             error = 'answered with another range than verify_table asked for' \
             WHERE run_id = $1 AND chunk = ANY ($2)",
            &[run.into(), wrong.clone().into()],
        )
        .and_then(|()| {
            Spi::run_with_args(
                "DELETE FROM logical_ext.verify_differences WHERE run_id = $1 AND chunk = ANY ($2)",
                &[run.into(), wrong.into()],
            )
        })
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    }
}

struct Walk<'a> {
    conn: &'a mut Connection,
    sub: &'a Subscription,
    request: &'a Request,
    table: &'a Table,
    run: i64,
    chunks: i32,
    rows: i64,
    lock_timeout_ms: i32,
    throttle: Duration,
    /// Each chunk asked for: number, per-key, the range it covers (the
    /// publisher's reply gives its upper end when it ended early).
    asked: Vec<(i32, bool, Range)>,
}

impl Walk<'_> {
    /// Send `range` as chunks of at most `max_rows` rows; the ranges sent.
    fn send(&mut self, range: Range, max_rows: i32, per_key: bool) -> Vec<Range> {
        let mut sent = Vec::new();
        let mut next = Some(range);
        while let Some(r) = next.take() {
            if self.chunks > 0 {
                nap(self.throttle);
            }
            self.chunks += 1;
            // Allowed before it is asked for: the document may be applied
            // before the reply comes back.
            self.request.allow_chunks(self.chunks);
            let sql = format!(
                "SELECT logical_ext.reconcile_verify({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                quote_literal(&self.sub.name),
                quote_literal(&super::this_node()),
                quote_literal(&self.request.nonce_hex()),
                self.run,
                self.chunks,
                quote_literal(&self.table.schema),
                quote_literal(&self.table.name),
                self.table.relid.to_u32(),
                array_literal(&self.sub.publications),
                array_literal(&self.table.columns),
                array_literal(&self.table.keys),
                array_literal(&self.table.codings.iter().map(|c| c.as_str().to_string()).collect::<Vec<_>>()),
                opt_array(&r.lower),
                opt_array(&r.upper),
                if self.table.keys.is_empty() { 0 } else { max_rows.max(1) },
                per_key,
                self.lock_timeout_ms
            );
            let reply = call(self.conn, &sql, self.throttle);
            if !per_key {
                self.rows += reply["rows"].as_i64().unwrap_or(0);
            }
            let upper: Option<Vec<String>> = serde_json::from_value(reply["upper"].clone()).unwrap_or(None);
            let complete = reply["complete"].as_bool().unwrap_or(true);
            let covered =
                Range { lower: r.lower.clone(), upper: if complete { r.upper.clone() } else { upper.clone() } };
            self.asked.push((self.chunks, per_key, covered.clone()));
            sent.push(covered);
            next = remaining(&r, upper, complete);
        }
        sent
    }
}

type VerifyRow = (i64, i32, i64, i64, i64, i64, i64, i64);

fn run_verify(sub: &Subscription, relid: pg_sys::Oid, opts: &Options) -> VerifyRow {
    require_rows("chunk_rows", opts.chunk_rows);
    require_rows("key_rows", opts.key_rows);
    require_synced(sub, relid);
    let mut conn = connect(sub);
    let table = describe(&mut conn, sub, relid);
    let run = {
        let _as = AsRole::bootstrap_superuser();
        Spi::get_one::<i64>("SELECT pg_catalog.nextval('logical_ext.verify_run_seq')")
            .ok()
            .flatten()
            .unwrap_or_else(|| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "could not number a verify run", ""))
    };
    let deadline = Instant::now() + Duration::from_millis(opts.timeout_ms.max(0) as u64);
    // Open until this function returns (or fails): the worker acts only on
    // documents answering it.
    let request = Request::open(sub.id, relid, run, Op::Verify, table.shape(sub, Op::Verify));
    let mut walk = Walk {
        conn: &mut conn,
        sub,
        request: &request,
        table: &table,
        run,
        chunks: 0,
        rows: 0,
        lock_timeout_ms: opts.lock_timeout_ms,
        throttle: Duration::from_millis(opts.throttle_ms.max(0) as u64),
        asked: Vec::new(),
    };
    let pass1 = walk.send(Range::default(), opts.chunk_rows, false);
    let _as = AsRole::bootstrap_superuser();
    wait_for(
        "SELECT count(*) FROM logical_ext.verify_chunks WHERE run_id = $1 AND NOT per_key",
        run,
        pass1.len() as i64,
        deadline,
        &sub.name,
    );
    check_answers(run, &walk.asked);
    let mismatched: Vec<Range> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT lower_key, upper_key FROM logical_ext.verify_chunks \
             WHERE run_id = $1 AND NOT per_key AND NOT coalesce(matches, false) AND error IS NULL ORDER BY chunk",
            None,
            &[run.into()],
        )?;
        rows.map(|r| Ok(Range { lower: r.get::<Vec<String>>(1)?, upper: r.get::<Vec<String>>(2)? }))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    drop(_as);
    let mismatched_chunks = mismatched.len() as i64;
    if !table.keys.is_empty() && !mismatched.is_empty() {
        let before = walk.chunks;
        for r in mismatched {
            walk.send(r, opts.key_rows, true);
        }
        let sent = (walk.chunks - before) as i64;
        let _as = AsRole::bootstrap_superuser();
        wait_for(
            "SELECT count(*) FROM logical_ext.verify_chunks WHERE run_id = $1 AND per_key",
            run,
            sent,
            deadline,
            &sub.name,
        );
        check_answers(run, &walk.asked);
    }
    let (chunks, rows) = (walk.chunks, walk.rows);
    let _as = AsRole::bootstrap_superuser();
    let count = |sql: &str| fresh_count(sql, run);
    let missing = count("SELECT count(*) FROM logical_ext.verify_differences WHERE run_id = $1 AND kind = 'missing'");
    let extra = count("SELECT count(*) FROM logical_ext.verify_differences WHERE run_id = $1 AND kind = 'extra'");
    let different =
        count("SELECT count(*) FROM logical_ext.verify_differences WHERE run_id = $1 AND kind = 'different'");
    let errors = count("SELECT count(*) FROM logical_ext.verify_chunks WHERE run_id = $1 AND error IS NOT NULL");
    (run, chunks, rows, mismatched_chunks, missing, extra, different, errors)
}

struct Options {
    chunk_rows: i32,
    key_rows: i32,
    throttle_ms: i32,
    timeout_ms: i32,
    lock_timeout_ms: i32,
}

/// Compare `relation` with the publisher's version of it, chunk by chunk
/// at the same points of the change stream; see docs/RECONCILE.md.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn verify_table(
    subscription: &str,
    relation: pgrx::PgRelation,
    chunk_rows: default!(i32, 10000),
    key_rows: default!(i32, 1000),
    throttle_ms: default!(i32, 0),
    timeout_ms: default!(i32, 300000),
    lock_timeout_ms: default!(i32, 1000),
) -> TableIterator<
    'static,
    (
        name!(run_id, i64),
        name!(chunks, i32),
        name!(rows, i64),
        name!(mismatched_chunks, i64),
        name!(missing, i64),
        name!(extra, i64),
        name!(different, i64),
        name!(errors, i64),
    ),
> {
    let relid = relation.oid();
    drop(relation);
    require_privilege(relid, "verify");
    require_read_committed();
    let sub = load(subscription);
    let opts = Options { chunk_rows, key_rows, throttle_ms, timeout_ms, lock_timeout_ms };
    TableIterator::once(run_verify(&sub, relid, &opts))
}

/// `verify_table` for every table of the subscription's publications that
/// exists here under the same name and is streaming (not being copied).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn verify_subscription(
    subscription: &str,
    chunk_rows: default!(i32, 10000),
    throttle_ms: default!(i32, 0),
    timeout_ms: default!(i32, 300000),
) -> TableIterator<
    'static,
    (
        name!(relation, String),
        name!(run_id, i64),
        name!(chunks, i32),
        name!(rows, i64),
        name!(mismatched_chunks, i64),
        name!(missing, i64),
        name!(extra, i64),
        name!(different, i64),
        name!(errors, i64),
    ),
> {
    require_read_committed();
    let sub = load(subscription);
    // The publications' tables, as the initial copy lists them.
    let published = connect(&sub)
        .exec(&remote::tables_query(&sub.publications), 2)
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, e.0, ""));
    let mut tables: Vec<(pg_sys::Oid, String)> = Vec::new();
    for row in published {
        let (Some(schema), Some(name)) = (&row[0], &row[1]) else { continue };
        let qualified =
            format!("{}.{}", crate::apply::walrcv::quote_ident(schema), crate::apply::walrcv::quote_ident(name));
        let relid = Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind = 'r'",
            &[qualified.as_str().into()],
        )
        .ok()
        .flatten();
        // Only the subscription's own tables, once `ready` (require_synced).
        let ready = relid.is_some_and(|relid| {
            let _as = AsRole::bootstrap_superuser();
            Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT FROM logical_ext.subscription_tables \
                 WHERE subid = $1 AND relid = $2::pg_catalog.regclass AND state = 'ready')",
                &[sub.id.into(), relid.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false)
        });
        if let (Some(relid), true) = (relid, ready) {
            tables.push((relid, qualified));
        }
    }
    for (relid, _) in &tables {
        require_privilege(*relid, "verify");
    }
    let opts = Options { chunk_rows, key_rows: 1000, throttle_ms, timeout_ms, lock_timeout_ms: 1000 };
    let out: Vec<_> = tables
        .into_iter()
        .map(|(relid, name)| {
            let (a, b, c, d, e, f, g, h) = run_verify(&sub, relid, &opts);
            (name, a, b, c, d, e, f, g, h)
        })
        .collect();
    TableIterator::new(out)
}

/// Bring the differing keys found by a verify run (the table's last one by
/// default) to the publisher's current versions, in stream order; see
/// docs/RECONCILE.md. Returns how many keys were repaired and failed.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn repair_table(
    subscription: &str,
    relation: pgrx::PgRelation,
    run_id: default!(Option<i64>, "NULL"),
    timeout_ms: default!(i32, 300000),
    lock_timeout_ms: default!(i32, 1000),
) -> TableIterator<'static, (name!(run_id, i64), name!(repaired, i64), name!(failed, i64))> {
    let relid = relation.oid();
    drop(relation);
    require_privilege(relid, "repair");
    require_read_committed();
    let sub = load(subscription);
    require_synced(&sub, relid);
    let mut conn = connect(&sub);
    let table = describe(&mut conn, &sub, relid);
    if table.keys.is_empty() {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("table {}.{} has no primary key or replica identity index", table.schema, table.name),
            "repair_table finds rows by key. Add a primary key (or REPLICA IDENTITY USING INDEX), or resynchronize the table with logical_ext.resync_table().",
        );
    }
    let as_su = AsRole::bootstrap_superuser();
    let run = run_id
        .or_else(|| {
            Spi::get_one_with_args::<i64>(
                "SELECT max(run_id) FROM logical_ext.verify_differences WHERE relid = $1 AND subscription = $2",
                &[relid.into(), sub.name.as_str().into()],
            )
            .ok()
            .flatten()
        })
        .unwrap_or_else(|| {
            fail(
                PgSqlErrorCode::ERRCODE_NO_DATA,
                "no verify run found differences in this table",
                "Run logical_ext.verify_table() first.",
            )
        });
    let keys: Vec<Vec<String>> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT key FROM logical_ext.verify_differences \
             WHERE run_id = $1 AND relid = $2 AND subscription = $3 AND repaired_at IS NULL ORDER BY key",
            None,
            &[run.into(), relid.into(), sub.name.as_str().into()],
        )?;
        rows.map(|r| Ok(r.get::<Vec<String>>(1)?.unwrap_or_default())).collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), ""));
    drop(as_su);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
    // Every repair message of this call starts after this position; an
    // earlier attempt's (a failed key's) before it.
    let since = conn
        .exec("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", 1)
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .and_then(|mut r| r.remove(0))
        .unwrap_or_else(|| {
            fail(PgSqlErrorCode::ERRCODE_CONNECTION_EXCEPTION, "could not read the publisher's position", "")
        });
    let request = Request::open(sub.id, relid, run, Op::Repair, table.shape(&sub, Op::Repair));
    for (i, batch) in keys.chunks(REPAIR_BATCH).enumerate() {
        let number = i as i32 + 1;
        request.allow_chunks(number);
        let sql = format!(
            "SELECT logical_ext.reconcile_repair({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            quote_literal(&sub.name),
            quote_literal(&super::this_node()),
            quote_literal(&request.nonce_hex()),
            run,
            number,
            quote_literal(&table.schema),
            quote_literal(&table.name),
            relid.to_u32(),
            array_literal(&sub.publications),
            array_literal(&table.columns),
            array_literal(&table.keys),
            quote_literal(&serde_json::to_string(batch).expect("keys serialize")),
            lock_timeout_ms
        );
        call(&mut conn, &sql, Duration::ZERO);
    }
    let _as = AsRole::bootstrap_superuser();
    // Done when each key sent was tried (repaired or refused) by this call's messages.
    let done = format!(
        "SELECT count(*) FROM logical_ext.verify_differences WHERE run_id = $1 AND repair_lsn >= {}::pg_catalog.pg_lsn",
        quote_literal(&since)
    );
    wait_for(&done, run, keys.len() as i64, deadline, &sub.name);
    drop(request);
    let repaired = fresh_count(
        "SELECT count(*) FROM logical_ext.verify_differences WHERE run_id = $1 AND repaired_at IS NOT NULL",
        run,
    );
    let failed = fresh_count(
        "SELECT count(*) FROM logical_ext.verify_differences WHERE run_id = $1 AND repaired_at IS NULL AND repair_error IS NOT NULL",
        run,
    );
    TableIterator::once((run, repaired, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> Option<Vec<String>> {
        Some(vec![v.to_string()])
    }

    #[test]
    fn a_walk_resumes_after_the_covered_part() {
        let whole = Range::default();
        // A full chunk ended at key 100: the rest starts after it.
        assert_eq!(remaining(&whole, k("100"), false), Some(Range { lower: k("100"), upper: None }));
        // The last chunk covered everything up to the (open) end.
        assert_eq!(remaining(&whole, None, true), None);
        // A split of a mismatching chunk (10, 50] in sub-chunks keeps the
        // chunk's upper bound until the last sub-chunk covers it.
        let chunk = Range { lower: k("10"), upper: k("50") };
        assert_eq!(remaining(&chunk, k("20"), false), Some(Range { lower: k("20"), upper: k("50") }));
        assert_eq!(remaining(&chunk, k("50"), true), None);
    }

    #[test]
    fn an_answer_for_another_range_is_found() {
        let asked = vec![
            (1, false, Range { lower: None, upper: k("100") }),
            (2, false, Range { lower: k("100"), upper: None }),
        ];
        assert!(unanswered(&asked, &asked).is_empty());
        // Chunk 2 answered with a range that starts later (rows 100..500
        // left out of the comparison), chunk 1 as a per-key re-check.
        let recorded =
            vec![(1, true, Range { lower: None, upper: k("100") }), (2, false, Range { lower: k("500"), upper: None })];
        assert_eq!(unanswered(&asked, &recorded), vec![1, 2]);
        // Not recorded yet: not judged (the wait decides about those).
        assert!(unanswered(&asked, &asked[..1]).is_empty());
    }

    #[test]
    fn key_facts_compare_types_and_collations() {
        let sql = key_facts_sql("\"public\".\"t\"", &["id".to_string()]);
        assert!(sql.contains("'\"public\".\"t\"'::pg_catalog.regclass"));
        assert!(sql.contains("IN ('id')"));
    }
}
