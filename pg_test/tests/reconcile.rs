//! Online reconciliation (issue 17, docs/RECONCILE.md): verify_table finds
//! every injected divergence to the key and nothing else while the
//! publisher keeps writing; repair_table brings the rows back; a table
//! without a key is compared whole; column lists, row filters and
//! subscriber-only columns are respected.

use logical_ext_pg_test::describe_error;
use logical_ext_pg_test::replication::*;
use postgres::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

/// (run_id, chunks, rows, mismatched_chunks, missing, extra, different, errors)
type Verify = (i64, i32, i64, i64, i64, i64, i64, i64);

fn verify(c: &mut Client, table: &str, chunk_rows: i32) -> Verify {
    let sql = format!(
        "SELECT * FROM logical_ext.verify_table('s', '{table}', chunk_rows => {chunk_rows}, timeout_ms => 60000)"
    );
    let r = c.query_one(&sql, &[]).unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7))
}

fn differences(c: &mut Client, run: i64) -> Vec<(String, String)> {
    c.query(
        "SELECT kind, array_to_string(key, ',') FROM logical_ext.verify_differences WHERE run_id = $1 ORDER BY 1, 2",
        &[&run],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn repair(c: &mut Client, table: &str) -> (i64, i64, i64) {
    let sql = format!("SELECT * FROM logical_ext.repair_table('s', '{table}', timeout_ms => 60000)");
    let r = c.query_one(&sql, &[]).unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
    (r.get(0), r.get(1), r.get(2))
}

/// A writer on the publisher: inserts, updates and deletes rows of its own
/// key range (ids above 1,000,000) of `t`, and updates rows in the middle of
/// it (ids 4000-4999 and 14000-14999, none of which the tests diverge), in
/// every chunk's way, until stopped; counts its commits.
fn writer(conninfo: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).expect("writer connects");
        let mut i: i64 = 1_000_000;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            c.batch_execute(&format!(
                "BEGIN; INSERT INTO t VALUES ({i}, 'w{i}', {i}); UPDATE t SET v = v || 'u', n = n + 1 WHERE id = {}; \
                 DELETE FROM t WHERE id = {}; UPDATE t SET n = n + 1 WHERE id IN ({}, {}); COMMIT",
                i - 3,
                i - 7,
                14_000 + i % 1000,
                4_000 + i % 1000
            ))
            .expect("writer transaction");
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn start() -> Pair {
    let pair = Pair::start_with("reconcile", &["shared_preload_libraries = 'logical_ext'"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.pub_exec(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int); \
         CREATE TABLE nokey (a int, b text); \
         CREATE TABLE f (id int PRIMARY KEY, v text, secret text, flag boolean); \
         CREATE PUBLICATION p FOR TABLE t, nokey, f (id, v, flag) WHERE (flag)",
    );
    // Subscriber-only columns (`note`, `extra`) are not compared.
    pair.sub_exec(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int, note text DEFAULT 'local'); \
         CREATE TABLE nokey (a int, b text); \
         CREATE TABLE f (id int PRIMARY KEY, v text, flag boolean, extra int DEFAULT 7)",
    );
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec(
        "INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 20000) g; \
         INSERT INTO nokey SELECT g % 50, 'b' || g FROM generate_series(1, 300) g; \
         INSERT INTO f SELECT g, 'f' || g, 's' || g, g % 3 = 0 FROM generate_series(1, 600) g",
    );
    pair.wait_caught_up("s");
    pair
}

#[test]
fn divergences_found_to_the_key_and_repaired_under_writes() {
    let pair = start();
    let mut sub = pair.sub_client();

    // Identical tables verify clean while the publisher writes.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let w = writer(pair.publisher_conninfo(), stop.clone(), done.clone());
    wait_or_explain(CATCH_UP, "the writer commits", || done.load(Ordering::Relaxed) > 20, || pair.explain("s"));
    let clean = verify(&mut sub, "t", 2000);
    assert!(clean.1 >= 10, "several chunks: {clean:?}");
    assert_eq!((clean.3, clean.4, clean.5, clean.6, clean.7), (0, 0, 0, 0, 0), "no false positive: {clean:?}");
    let during = done.load(Ordering::Relaxed);

    // Divergences made on the subscriber only (it publishes nothing).
    sub.batch_execute(
        "DELETE FROM t WHERE id IN (5, 6000, 19999); \
         INSERT INTO t VALUES (-1, 'extra', 0), (115000, 'extra2', 0); \
         UPDATE t SET v = 'changed' WHERE id IN (7, 8000); UPDATE t SET n = NULL WHERE id = 12000; \
         UPDATE t SET v = '' WHERE id = 12001; \
         UPDATE t SET note = 'not compared' WHERE id = 300",
    )
    .unwrap();
    let found = verify(&mut sub, "t", 2000);
    assert_eq!((found.4, found.5, found.6, found.7), (3, 2, 4, 0), "{found:?}");
    assert!(found.3 >= 1);
    let run = found.0;
    assert_eq!(
        differences(&mut sub, run),
        vec![
            ("different".into(), "12000".into()),
            ("different".into(), "12001".into()),
            ("different".into(), "7".into()),
            ("different".into(), "8000".into()),
            ("extra".into(), "-1".into()),
            ("extra".into(), "115000".into()),
            ("missing".into(), "19999".into()),
            ("missing".into(), "5".into()),
            ("missing".into(), "6000".into()),
        ]
    );
    assert!(done.load(Ordering::Relaxed) > during, "the publisher kept writing during the verify");

    // Repair, still under writes; each row is logged.
    let (rrun, repaired, failed) = repair(&mut sub, "t");
    assert_eq!((rrun, repaired, failed), (run, 9, 0));
    let actions: Vec<(String, i64)> = sub
        .query("SELECT action, count(*) FROM logical_ext.repair_log WHERE run_id = $1 GROUP BY 1 ORDER BY 1", &[&run])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(actions, vec![("delete".into(), 2), ("insert".into(), 3), ("update".into(), 4)]);

    let after = verify(&mut sub, "t", 2000);
    assert_eq!((after.3, after.4, after.5, after.6, after.7), (0, 0, 0, 0, 0), "{after:?}");
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT id, v, n FROM t", "id");
    let note: String = sub.query_one("SELECT note FROM t WHERE id = 300", &[]).unwrap().get(0);
    assert_eq!(note, "not compared", "subscriber-only columns are left alone");
    assert_eq!(pair.status("s").state, "streaming", "{}", pair.explain("s"));
}

#[test]
fn whole_table_digest_without_a_key_and_filtered_tables() {
    let pair = start();
    let mut sub = pair.sub_client();

    // No key: one chunk, the whole table.
    let clean = verify(&mut sub, "nokey", 2000);
    assert_eq!((clean.1, clean.2, clean.3), (1, 300, 0), "{clean:?}");
    // A duplicate of an existing row is a difference (a sum does not cancel).
    sub.batch_execute("INSERT INTO nokey SELECT * FROM nokey LIMIT 1").unwrap();
    let diff = verify(&mut sub, "nokey", 2000);
    assert_eq!((diff.1, diff.3, diff.4 + diff.5 + diff.6), (1, 1, 0), "whole-table only: {diff:?}");
    let (code, _, hint) = expect_error(&mut sub, "SELECT * FROM logical_ext.repair_table('s', 'nokey')");
    assert_eq!(code, "0A000");
    assert!(hint.contains("primary key"), "{hint}");

    // Column list and row filter: only published rows and columns count.
    let clean = verify(&mut sub, "f", 50);
    assert_eq!((clean.2, clean.3), (200, 0), "the 200 rows with flag: {clean:?}");
    // A row the filter would not send is extra here; `extra` is ours only.
    sub.batch_execute("UPDATE f SET extra = 0; INSERT INTO f VALUES (601, 'x', false)").unwrap();
    let found = verify(&mut sub, "f", 50);
    assert_eq!((found.4, found.5, found.6), (0, 1, 0), "{found:?}");
    assert_eq!(differences(&mut sub, found.0), vec![("extra".into(), "601".into())]);
    assert_eq!(repair(&mut sub, "f").1, 1);
    assert_eq!(count(&mut sub, "f WHERE id = 601"), 0);
    // A repair the subscriber's own constraint refuses is recorded as failed;
    // the other key is repaired and the stream goes on. Once the constraint
    // is gone, repairing again finishes the job.
    sub.batch_execute(
        "DELETE FROM f WHERE id IN (3, 6); ALTER TABLE f ADD CONSTRAINT no_f3 CHECK (v <> 'f3') NOT VALID",
    )
    .unwrap();
    let found = verify(&mut sub, "f", 50);
    assert_eq!((found.4, found.5, found.6), (2, 0, 0), "{found:?}");
    assert_eq!(repair(&mut sub, "f"), (found.0, 1, 1));
    let error: String = sub
        .query_one(
            "SELECT repair_error FROM logical_ext.verify_differences WHERE run_id = $1 AND key = '{3}'",
            &[&found.0],
        )
        .unwrap()
        .get(0);
    assert!(error.contains("no_f3"), "{error}");
    assert_eq!(pair.status("s").state, "streaming", "{}", pair.explain("s"));
    sub.batch_execute("ALTER TABLE f DROP CONSTRAINT no_f3").unwrap();
    assert_eq!(repair(&mut sub, "f"), (found.0, 2, 0));
    // The publisher's secret column never reached a document.
    let clean = verify(&mut sub, "f", 50);
    assert_eq!((clean.3, clean.4, clean.5, clean.6), (0, 0, 0, 0));

    // Every table of the subscription (copy_data => false: none has a
    // subscription_tables row), one row each.
    let all: Vec<(String, i64, i64)> = sub
        .query(
            "SELECT relation, mismatched_chunks, missing + extra + different \
             FROM logical_ext.verify_subscription('s', timeout_ms => 60000)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        all,
        vec![
            ("\"public\".\"f\"".into(), 0, 0),
            ("\"public\".\"nokey\"".into(), 1, 0),
            ("\"public\".\"t\"".into(), 0, 0)
        ]
    );
}

#[test]
fn privileges() {
    let pair = start();
    pair.sub_exec(
        "CREATE ROLE owner_r LOGIN; CREATE ROLE plain_r LOGIN; CREATE ROLE op_r LOGIN; \
         GRANT logical_ext_operator TO op_r; ALTER TABLE f OWNER TO owner_r",
    );
    let mut sub = pair.sub_client();
    for (role, table, allowed) in [
        ("plain_r", "f", false),
        ("owner_r", "f", true),
        ("owner_r", "t", false),
        ("op_r", "t", true),
        ("postgres", "t", true),
    ] {
        for f in ["verify_table", "repair_table"] {
            let sql = format!("SET ROLE {role}; SELECT * FROM logical_ext.{f}('s', '{table}'); RESET ROLE");
            let r = sub.batch_execute(&sql);
            sub.batch_execute("RESET ROLE").unwrap();
            match (allowed, r) {
                (true, Ok(())) => {}
                // repair_table with nothing to repair: allowed, no run yet.
                (true, Err(e)) if f == "repair_table" && e.as_db_error().map(|d| d.code().code()) == Some("02000") => {}
                (false, Err(e)) if e.as_db_error().map(|d| d.code().code()) == Some("42501") => {}
                (a, r) => panic!("{role} {f}({table}): expected allowed={a}, got {r:?}"),
            }
        }
    }
    // The result tables: rows for operators, not for PUBLIC.
    let (code, _, _) = expect_error(&mut sub, "SET ROLE plain_r; SELECT * FROM logical_ext.verify_differences");
    sub.batch_execute("RESET ROLE").unwrap();
    assert_eq!(code, "42501");

    // Publisher side: not executable by PUBLIC; a subscription whose role
    // lacks EXECUTE gets an error naming what to grant.
    pair.pub_exec("CREATE ROLE repl LOGIN REPLICATION; GRANT SELECT ON t, f, nokey TO repl");
    let mut publ = pair.pub_client();
    let (code, _, _) = expect_error(
        &mut publ,
        "SET ROLE repl; SELECT logical_ext.reconcile_verify('s', '0/0', '', 1, 1, 'public', 't', 0, '{p}', '{id}', \
         '{id}', '{binary}', NULL, NULL, 10, false, 100)",
    );
    publ.batch_execute("RESET ROLE").unwrap();
    assert_eq!(code, "42501");
    let conninfo = format!("host=127.0.0.1 port={} user=repl dbname=postgres", pair.publisher.port());
    sub.execute("UPDATE logical_ext.subscription SET conninfo = $1 WHERE name = 's'", &[&conninfo]).unwrap();
    let (code, msg, hint) = expect_error(&mut sub, "SELECT * FROM logical_ext.verify_table('s', 't')");
    assert_eq!(code, "08000", "{msg}");
    assert!(hint.contains("EXECUTE"), "{hint}");
    pair.pub_exec(
        "GRANT EXECUTE ON FUNCTION logical_ext.reconcile_verify(text, text, text, bigint, integer, text, text, bigint, \
         text[], text[], text[], text[], text[], text[], integer, boolean, integer) TO repl",
    );
    let ok = verify(&mut sub, "t", 5000);
    assert_eq!((ok.3, ok.4, ok.5, ok.6), (0, 0, 0, 0), "{ok:?}");
}

#[test]
fn a_verify_survives_a_worker_restart() {
    let pair = start();
    let mut sub = pair.sub_client();
    let first = pair.worker_pid("s");
    let conninfo = pair.subscriber.conninfo();
    let run = thread::spawn(move || {
        let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
        let r = c
            .query_one(
                "SELECT * FROM logical_ext.verify_table('s', 't', chunk_rows => 500, throttle_ms => 50, timeout_ms => 60000)",
                &[],
            )
            .map_err(|e| describe_error(&e))?;
        Ok::<Verify, String>((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7)))
    });
    wait_or_explain(
        CATCH_UP,
        "the worker records a few chunks",
        || count(&mut pair.sub_client(), "logical_ext.verify_chunks") >= 3,
        || pair.explain("s"),
    );
    sub.execute("SELECT pg_terminate_backend($1)", &[&first]).unwrap();
    let r = run.join().unwrap().expect("the verify completes across the restart");
    assert_ne!(pair.worker_pid("s"), first, "the worker was restarted");
    // 40 full chunks, and the last one (after key 20000, empty) that
    // proves nothing follows.
    assert_eq!((r.1, r.2), (41, 20000), "{r:?}");
    assert_eq!((r.3, r.4, r.5, r.6, r.7), (0, 0, 0, 0, 0), "{r:?}");
    let recorded = count(&mut sub, &format!("logical_ext.verify_chunks WHERE run_id = {}", r.0));
    assert_eq!(recorded, 41, "each chunk recorded once");
}

/// `pg_logical_emit_message` is PUBLIC: a message under the reconcile prefix
/// that no `reconcile_log` row vouches for (here with a stolen `log_id`)
/// stays a plain message; the subscriber writes nothing.
#[test]
fn forged_reconcile_messages_are_ignored() {
    let pair = start();
    let mut sub = pair.sub_client();
    let clean = verify(&mut sub, "t", 5000);
    assert_eq!(clean.3, 0);
    let relid: i64 = sub.query_one("SELECT 't'::regclass::oid::bigint", &[]).unwrap().get(0);
    // Addressed to this subscriber exactly as a genuine document would be.
    let node: String = sub
        .query_one(
            "SELECT s.system_identifier || '/' || d.oid FROM pg_control_system() s, pg_database d \
             WHERE d.datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    pair.pub_exec("CREATE ROLE mallory LOGIN");
    let forged = format!(
        r#"{{"op":"repair","subscription":"s","node":"{node}","run":{},"chunk":0,"per_key":true,"relation":{relid},"columns":["id","v","n"],"keys":["id"],"repairs":[{{"key":["1"],"row":["1","forged","0"]}}],"log_id":1}}"#,
        clean.0
    );
    let mut publ = pair.pub_client();
    publ.batch_execute("SET ROLE mallory").unwrap();
    publ.execute("SELECT pg_logical_emit_message(true, 'logical_ext.reconcile', $1::text)", &[&forged]).unwrap();
    publ.batch_execute("RESET ROLE; INSERT INTO t VALUES (30001, 'after', 0)").unwrap();
    pair.wait_sub_count("s", "t WHERE id = 30001", 1);
    let v: String = sub.query_one("SELECT v FROM t WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(v, "v1", "the forged repair was not applied");
    assert_eq!(count(&mut sub, "logical_ext.repair_log"), 0);
    assert_eq!(pair.status("s").state, "streaming", "{}", pair.explain("s"));
}

/// The subscriber's node name, as documents address it.
fn node_of(sub: &mut Client) -> String {
    sub.query_one(
        "SELECT s.system_identifier || '/' || d.oid FROM pg_control_system() s, pg_database d \
         WHERE d.datname = current_database()",
        &[],
    )
    .unwrap()
    .get(0)
}

fn oid_of(c: &mut Client, rel: &str) -> i64 {
    c.query_one(&format!("SELECT '{rel}'::regclass::oid::bigint"), &[]).unwrap().get(0)
}

/// The calls a publisher role can make once an operator granted it
/// `reconcile_verify` / `reconcile_repair` (as for a subscription's role).
const VERIFY_SIG: &str = "text, text, text, bigint, integer, text, text, bigint, text[], text[], text[], text[], text[], text[], integer, boolean, integer";
const REPAIR_SIG: &str = "text, text, text, bigint, integer, text, text, bigint, text[], text[], text[], text, integer";

#[allow(clippy::too_many_arguments)] // one argument per forged field
fn repair_call(
    node: &str,
    run: i64,
    table: &str,
    relid: i64,
    pubs: &str,
    cols: &str,
    keys: &str,
    key_list: &str,
) -> String {
    format!(
        "SELECT logical_ext.reconcile_repair('s', '{node}', '{}', {run}, 1, 'public', '{table}', {relid}, '{pubs}', \
         '{cols}', '{keys}', '{key_list}', 1000)",
        "00".repeat(16)
    )
}

/// Step 2 of the security review (issue 17): a role allowed to call the
/// publisher functions chooses their arguments, so a document must be bound
/// to a request the subscriber recorded itself. Forged documents for
/// pg_authid, for a subscriber table the subscription does not replicate,
/// and for keys no verify run found (under a finished run's number) change
/// nothing; each is counted. On 49b09df the first deleted plain_r's
/// pg_authid row, the second overwrote victim, the third repaired key 2 and
/// the fourth wrote a verify_chunks row for victim.
#[test]
fn forged_requests_from_a_publisher_role_change_nothing() {
    let pair = start();
    let mut sub = pair.sub_client();
    let clean = verify(&mut sub, "t", 5000);
    assert_eq!(clean.3, 0);
    pair.sub_exec(
        "CREATE ROLE plain_r LOGIN; CREATE TABLE victim (id bigint PRIMARY KEY, v text, n int); \
         INSERT INTO victim VALUES (1, 'mine', 0); UPDATE t SET v = 'local edit' WHERE id = 2",
    );
    let plain_r: i64 = sub.query_one("SELECT oid::bigint FROM pg_roles WHERE rolname = 'plain_r'", &[]).unwrap().get(0);
    let (victim, t) = (oid_of(&mut sub, "victim"), oid_of(&mut sub, "t"));
    let node = node_of(&mut sub);
    // mallory's own table with pg_authid's column names, in its own
    // publication (set up before it is published: nothing is captured).
    pair.pub_exec(&format!(
        "CREATE ROLE mallory LOGIN; CREATE TABLE mal (oid oid PRIMARY KEY, rolname name, rolsuper boolean); \
         ALTER TABLE mal OWNER TO mallory; CREATE PUBLICATION pm FOR TABLE mal; GRANT SELECT ON t TO mallory; \
         GRANT EXECUTE ON FUNCTION logical_ext.reconcile_verify({VERIFY_SIG}) TO mallory; \
         GRANT EXECUTE ON FUNCTION logical_ext.reconcile_repair({REPAIR_SIG}) TO mallory"
    ));
    let mut publ = pair.pub_client();
    publ.batch_execute("SET ROLE mallory").unwrap();
    for sql in [
        // pg_authid (1260): mal has no such row, so "repair" = delete.
        repair_call(&node, 1, "mal", 1260, "{pm}", "{oid,rolname,rolsuper}", "{oid}", &format!("[[\"{plain_r}\"]]")),
        // A subscriber table that is not the subscription's.
        repair_call(&node, 1, "t", victim, "{p}", "{id,v,n}", "{id}", "[[\"1\"]]"),
        // The right table, a key no verify run recorded, a finished run.
        repair_call(&node, clean.0, "t", t, "{p}", "{id,v,n}", "{id}", "[[\"2\"]]"),
        // A verify document for the other table.
        format!(
            "SELECT logical_ext.reconcile_verify('s', '{node}', '{}', 999, 1, 'public', 't', {victim}, '{{p}}', \
             '{{id,v,n}}', '{{id}}', '{{binary,text,binary}}', NULL, NULL, 10, true, 1000)",
            "00".repeat(16)
        ),
    ] {
        publ.batch_execute(&sql).unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
    }
    publ.batch_execute("RESET ROLE; INSERT INTO t VALUES (30001, 'after', 0)").unwrap();
    pair.wait_sub_count("s", "t WHERE id = 30001", 1);
    assert_eq!(count(&mut sub, "pg_roles WHERE rolname = 'plain_r'"), 1, "pg_authid untouched");
    let v: String = sub.query_one("SELECT v FROM victim WHERE id = 1", &[]).unwrap().get(0);
    assert_eq!(v, "mine", "a table outside the subscription untouched");
    let v: String = sub.query_one("SELECT v FROM t WHERE id = 2", &[]).unwrap().get(0);
    assert_eq!(v, "local edit", "a key no verify run recorded is not repaired");
    assert_eq!(count(&mut sub, &format!("logical_ext.verify_chunks WHERE relid = {victim}::oid::regclass")), 0);
    assert_eq!(count(&mut sub, "logical_ext.repair_log"), 0);
    assert_eq!(pair.status("s").state, "streaming", "{}", pair.explain("s"));
    let rejected: i64 = sub
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM logical_ext.reconcile_rejected WHERE subscription = 's'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rejected, 4, "each forged document counted");
}

/// Step 2 (2, 3): a key whose type runs some role's code (a domain's CHECK
/// here, evaluated by every `$n::keydom` bound) is refused on both nodes
/// before anything is read (on 49b09df the subscriber's worker ran the
/// CHECK as the bootstrap superuser and the publisher as the subscription's
/// role); the publisher's functions refuse transaction blocks and oversized
/// chunks.
#[test]
fn key_type_code_never_runs_and_the_publisher_keeps_its_lock_short() {
    let pair = start();
    let setup = "CREATE ROLE owner_r LOGIN; CREATE TABLE spylog (who text); GRANT INSERT ON spylog TO PUBLIC; \
        CREATE FUNCTION spy(int) RETURNS boolean LANGUAGE plpgsql AS \
          $$BEGIN INSERT INTO public.spylog VALUES (current_user); RETURN true; END$$; \
        CREATE DOMAIN keydom AS int CHECK (public.spy(VALUE)); \
        CREATE TABLE dk (id keydom PRIMARY KEY, v text); ALTER TABLE dk OWNER TO owner_r";
    pair.pub_exec(setup);
    pair.sub_exec(setup);
    pair.pub_exec("ALTER PUBLICATION p ADD TABLE dk");
    pair.sub_exec("SELECT logical_ext.refresh_subscription('s', copy_data => false)");
    pair.pub_exec("INSERT INTO dk SELECT g, 'd' || g FROM generate_series(1, 50) g");
    pair.wait_sub_count("s", "dk", 50);
    pair.sub_exec("DELETE FROM spylog");
    pair.pub_exec("DELETE FROM spylog");
    let mut sub = pair.sub_client();
    let r = sub.batch_execute(
        "SET ROLE owner_r; SELECT * FROM logical_ext.verify_table('s', 'dk', chunk_rows => 10, timeout_ms => 20000)",
    );
    sub.batch_execute("RESET ROLE").unwrap();
    let code = r.err().and_then(|e| e.as_db_error().map(|d| d.code().code().to_string()));
    assert_eq!(code.as_deref(), Some("0A000"), "a domain key is refused");
    assert_eq!(count(&mut sub, "spylog"), 0, "the domain's code never ran for the subscriber's verify");
    let mut publ = pair.pub_client();
    assert_eq!(count(&mut publ, "spylog"), 0, "nor on the publisher");
    // Called directly on the publisher: refused before reading.
    let call = |table: &str, max_rows: i32| {
        format!(
            "SELECT logical_ext.reconcile_verify('s', 'n', '', 1, 1, 'public', '{table}', 0, '{{p}}', '{{id,v}}', \
             '{{id}}', '{{binary,text}}', NULL, NULL, {max_rows}, false, 1000)"
        )
    };
    let (code, _, hint) = expect_error(&mut publ, &call("dk", 10));
    assert_eq!(code, "0A000");
    assert!(hint.contains("built-in"), "{hint}");
    assert_eq!(count(&mut publ, "spylog"), 0);
    let (code, _, _) = expect_error(&mut publ, &format!("BEGIN; {}", call("t", 10)));
    publ.batch_execute("ROLLBACK").unwrap();
    assert_eq!(code, "25001", "the SHARE lock is never held by an open transaction block");
    let (code, _, _) = expect_error(&mut publ, &call("t", 1_000_000));
    assert_eq!(code, "22023");
    let (code, _, _) =
        expect_error(&mut sub, "SELECT * FROM logical_ext.verify_table('s', 't', chunk_rows => 1000000)");
    assert_eq!(code, "22023");
}

/// The arguments of a verify_table's publisher call seen in
/// pg_stat_activity (as the subscription's role could see its own):
/// node, nonce (both quoted), run, chunk, relation.
fn seen_call(watcher: &mut Client) -> Option<[String; 5]> {
    let call: String = watcher
        .query_opt(
            "SELECT query FROM pg_stat_activity WHERE query LIKE '%logical_ext.reconcile_verify(%' \
             AND pid <> pg_backend_pid() LIMIT 1",
            &[],
        )
        .unwrap()?
        .get(0);
    // 's', '<node>', '<nonce>', run, chunk, 'public', '<table>', relid, ...
    let args: Vec<&str> = call.split("reconcile_verify(").nth(1)?.split(", ").take(8).collect();
    let [_, node, nonce, run, chunk, _, _, relid] = args[..] else { panic!("{call}") };
    Some([node, nonce, run, chunk, relid].map(str::to_string))
}

/// Review finding L1 (issue 17): the nonce is in the publisher call's SQL,
/// so the role answering there can read it (`pg_stat_activity`) and answer a
/// requested chunk itself — with a publication without the row filter, or
/// another column list, to have filtered rows reported `missing` (and then
/// written by repair_table) or differences hidden. The request binds its
/// publications, columns and codings: such answers are ignored
/// (`wrong_shape`), and the verify stays exact. Before, they were acted on.
#[test]
fn an_answer_with_another_publication_or_columns_is_ignored() {
    let pair = start();
    pair.pub_exec("CREATE PUBLICATION pall FOR TABLE f");
    let mut watcher = pair.pub_client();
    // 200 published rows of f in chunks of 20, 200 ms apart: long enough to
    // be answered by hand.
    let mut caller = pair.sub_client();
    let run = thread::spawn(move || {
        let sql = "SELECT * FROM logical_ext.verify_table('s', 'f', chunk_rows => 20, throttle_ms => 200, \
                   timeout_ms => 60000)";
        let r = caller.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
        (r.get::<_, i64>(3), r.get::<_, i64>(4), r.get::<_, i64>(5), r.get::<_, i64>(6), r.get::<_, i64>(7))
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut forged = 0;
    while forged < 2 {
        assert!(std::time::Instant::now() < deadline, "never saw the verify's publisher call");
        let Some([node, nonce, run_id, chunk, relid]) = seen_call(&mut watcher) else { continue };
        let (publications, columns, codings) = if forged == 0 {
            // Every row of f, not only those with flag.
            ("{pall}", "{id,v,flag}", "{binary,binary,binary}")
        } else {
            // Another column list (the flag left out).
            ("{p}", "{id,v}", "{binary,binary}")
        };
        watcher
            .batch_execute(&format!(
                "SELECT logical_ext.reconcile_verify('s', {node}, {nonce}, {run_id}, {chunk}, 'public', 'f', {relid}, \
                 '{publications}', '{columns}', '{{id}}', '{codings}', NULL, NULL, 0, true, 1000)"
            ))
            .unwrap_or_else(|e| panic!("forged answer: {}", describe_error(&e)));
        forged += 1;
    }
    let (mismatched, missing, extra, different, errors) = run.join().unwrap();
    assert_eq!((mismatched, missing, extra, different, errors), (0, 0, 0, 0, 0), "the verify stays exact");
    let mut sub = pair.sub_client();
    let rejected: i64 = sub
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM logical_ext.reconcile_rejected \
             WHERE subscription = 's' AND reason = 'wrong_shape'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rejected, 2, "both forged answers ignored");
    assert_eq!(count(&mut sub, "logical_ext.verify_differences"), 0);
}

/// The issue's first test: identical tables verify clean while pgbench
/// writes to them (every pgbench transaction updates an account, a teller
/// and a branch: the hottest rows a table can have, in every chunk).
#[test]
fn identical_tables_verify_clean_under_pgbench() {
    use logical_ext_pg_test::background::{Background, wait_with_load};
    use logical_ext_pg_test::sync::{subscribe_copy, wait_all_ready};
    use logical_ext_pg_test::{pg_bin, run_checked};
    use std::process::Command;

    let pair = Pair::start_with("reconcile_pgbench", &["shared_preload_libraries = 'logical_ext'"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    run_checked(
        Command::new(pg_bin("pgbench")).args(["-i", "-s", "2", "-q", "-d"]).arg(pair.publisher.conninfo()),
        "pgbench -i on the publisher",
    );
    run_checked(
        Command::new(pg_bin("pgbench")).args(["-i", "-I", "dtp", "-s", "2", "-d"]).arg(pair.subscriber.conninfo()),
        "pgbench -i -I dtp on the subscriber",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE pgbench_accounts, pgbench_tellers, pgbench_branches");
    subscribe_copy(&pair, "s", &["p"], "");
    wait_all_ready(&pair, "s");
    let mut bench = Background::pgbench(&pair.publisher, &["-c", "2", "-j", "2", "-T", "900"]);
    wait_with_load(
        &mut bench,
        CATCH_UP,
        "20 streamed transactions applied",
        || pair.try_status("s").is_ok_and(|s| s.is_some_and(|s| s.applied_transactions >= 20)),
        || pair.explain("s"),
    );
    let mut publ = pair.pub_client();
    let mut sub = pair.sub_client();
    for (table, chunk_rows) in [("pgbench_accounts", 5000), ("pgbench_tellers", 5), ("pgbench_branches", 1)] {
        let before = count(&mut publ, "pgbench_history");
        let r = verify(&mut sub, table, chunk_rows);
        bench.assert_running(&format!("the verify of {table} ended"));
        assert!(count(&mut publ, "pgbench_history") > before, "pgbench wrote while {table} was verified");
        assert!(r.1 > 1, "{table} in several chunks: {r:?}");
        assert_eq!((r.3, r.4, r.5, r.6, r.7), (0, 0, 0, 0, 0), "{table}: no difference under load: {r:?}");
    }
    bench.stop();
    pair.wait_caught_up("s");
    pair.assert_same("SELECT * FROM pgbench_accounts", "aid");
    assert_eq!(pair.status("s").state, "streaming", "{}", pair.explain("s"));
}

/// Review of the L1 fix: a second answer of the right shape for a chunk
/// already recorded — here per key and over the whole table — adds nothing:
/// no differences from outside the range asked for. On the code before,
/// its per-key differences were recorded (a key of a chunk compared clean
/// before it was edited showed up as `different`).
#[test]
fn a_second_answer_for_a_recorded_chunk_adds_nothing() {
    let pair = start();
    let mut watcher = pair.pub_client();
    let mut sub = pair.sub_client();
    let mut caller = pair.sub_client();
    let run = thread::spawn(move || {
        let sql = "SELECT * FROM logical_ext.verify_table('s', 'f', chunk_rows => 20, throttle_ms => 300, \
                   timeout_ms => 60000)";
        let r = caller.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {}", describe_error(&e)));
        (r.get::<_, i64>(0), r.get::<_, i64>(4), r.get::<_, i64>(5), r.get::<_, i64>(6), r.get::<_, i64>(7))
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let [node, nonce, run_id, _, relid] = loop {
        assert!(std::time::Instant::now() < deadline, "never saw chunk 2 recorded");
        if let Some(seen) = seen_call(&mut watcher) {
            let recorded =
                count(&mut sub, &format!("logical_ext.verify_chunks WHERE run_id = {} AND chunk = 2", seen[2]));
            if recorded == 1 {
                break seen;
            }
        }
    };
    // Chunk 1 (ids up to 60) compared clean; now id 3 differs here.
    sub.batch_execute(
        "BEGIN; SET LOCAL session_replication_role = replica; UPDATE f SET v = 'edited' WHERE id = 3; COMMIT",
    )
    .unwrap();
    watcher
        .batch_execute(&format!(
            "SELECT logical_ext.reconcile_verify('s', {node}, {nonce}, {run_id}, 2, 'public', 'f', {relid}, \
             '{{p}}', '{{id,v,flag}}', '{{id}}', '{{binary,binary,binary}}', NULL, NULL, 0, true, 1000)"
        ))
        .unwrap_or_else(|e| panic!("second answer: {}", describe_error(&e)));
    let (run, missing, extra, different, errors) = run.join().unwrap();
    assert_eq!((missing, extra, different, errors), (0, 0, 0, 0), "the run's chunks were clean when compared");
    assert_eq!(count(&mut sub, &format!("logical_ext.verify_differences WHERE run_id = {run}")), 0);
}
