//! Who may call what (issue 11): every function, table and view of the
//! extension × {superuser, logical_ext_operator member, pg_monitor member,
//! table owner, plain login}, with the expected allow/deny as data in one
//! place. A new function or relation without an entry fails the test.
//!
//! "Allowed" means the call got past the permission checks: it succeeded or
//! failed with anything but SQLSTATE 42501 (insufficient_privilege). Entries
//! probed with `Acl` ask `has_function_privilege` instead of calling (event
//! trigger functions and the capture internals cannot be called directly).

use logical_ext_pg_test::*;
use std::collections::BTreeSet;

const ROLES: [&str; 5] = ["postgres", "operator", "monitor", "owner", "plain"];

enum Probe {
    /// Run this SQL as the role.
    Call(&'static str),
    /// EXECUTE privilege on this function (regprocedure text).
    Acl,
}
use Probe::*;

const S: [bool; 5] = [true, false, false, false, false];
/// Superuser, operator and pg_monitor.
const MON: [bool; 5] = [true, true, true, false, false];
/// Superuser and operator (row data).
const OPS: [bool; 5] = [true, true, false, false, false];
const ALL: [bool; 5] = [true; 5];
/// Superuser, operator and the table's owner (reconciliation, issue 17).
const OWN: [bool; 5] = [true, true, false, true, false];

/// (object as pg_describe_object/regprocedure names it, probe, allowed per ROLES)
const MATRIX: &[(&str, Probe, [bool; 5])] = &[
    // Subscriptions: managed by superusers, as CREATE SUBSCRIPTION is on 15.
    (
        "logical_ext.create_subscription(text,text,text[],text,boolean,boolean,boolean,text,jsonb)",
        Call(
            "SELECT logical_ext.create_subscription('m', 'host=127.0.0.1 port=1 dbname=x connect_timeout=2', '{p}', \
             create_slot => false, enabled => false, copy_data => false)",
        ),
        S,
    ),
    ("logical_ext.alter_subscription(text,jsonb)", Call("SELECT logical_ext.alter_subscription('nosuch', '{}')"), S),
    ("logical_ext.drop_subscription(text,boolean)", Call("SELECT logical_ext.drop_subscription('nosuch')"), S),
    ("logical_ext.enable_subscription(text)", Call("SELECT logical_ext.enable_subscription('nosuch')"), S),
    ("logical_ext.disable_subscription(text)", Call("SELECT logical_ext.disable_subscription('nosuch')"), S),
    ("logical_ext.refresh_subscription(text,boolean)", Call("SELECT logical_ext.refresh_subscription('nosuch')"), S),
    ("logical_ext.resync_table(text,regclass)", Call("SELECT logical_ext.resync_table('nosuch', 'public.owned')"), S),
    (
        "logical_ext.set_conflict_resolution(text,text,text,regclass)",
        Call("SELECT logical_ext.set_conflict_resolution('nosuch', 'insert_exists', 'skip')"),
        S,
    ),
    ("logical_ext.skip_transaction(text,pg_lsn)", Call("SELECT logical_ext.skip_transaction('nosuch', '0/1')"), S),
    // Issue 16: accepting a gap loses data; sync_sequences reads the conninfo.
    ("logical_ext.accept_slot_gap(text)", Call("SELECT logical_ext.accept_slot_gap('nosuch')"), S),
    // Slot ownership: taking a slot from another subscriber, adopting after a failover.
    ("logical_ext.takeover_slot(text)", Call("SELECT logical_ext.takeover_slot('nosuch')"), S),
    ("logical_ext.adopt_subscription(text)", Call("SELECT logical_ext.adopt_subscription('nosuch')"), S),
    ("logical_ext.sync_sequences(text)", Call("SELECT * FROM logical_ext.sync_sequences('nosuch')"), S),
    ("logical_ext.start_sequence_capture()", Acl, S),
    // Publisher failover: marking a slot is an operator's task; readiness
    // is a figure.
    ("logical_ext.set_slot_failover(name,boolean)", Call("SELECT logical_ext.set_slot_failover('nosuch')"), OPS),
    ("logical_ext.failover_readiness()", Call("SELECT count(*) FROM logical_ext.failover_readiness()"), MON),
    // Any login may call it; it checks ownership of the sequence itself
    // (tests/sequences.rs, privileges_of_the_sequence_functions).
    ("logical_ext.replicate_sequence(regclass)", Acl, ALL),
    // Values only of sequences the caller may read (SELECT inside).
    ("logical_ext.sequence_state(regclass)", Acl, MON),
    ("logical_ext.replicated_sequences(text[])", Acl, MON),
    ("logical_ext.replicated_sequence", Call("SELECT count(*) FROM logical_ext.replicated_sequence"), MON),
    ("logical_ext.worker_status()", Call("SELECT count(*) FROM logical_ext.worker_status()"), S),
    // Persisted counters: read through subscription_status; reset by
    // operators too (native pg_stat_reset_subscription_stats: superuser).
    (
        "logical_ext.subscription_counters(integer,timestamp with time zone)",
        Call("SELECT count(*) FROM logical_ext.subscription_counters(1, now())"),
        S,
    ),
    ("logical_ext.reset_subscription_stats(text)", Call("SELECT logical_ext.reset_subscription_stats('nosuch')"), OPS),
    (
        "logical_ext.subscription_status_rows()",
        Call("SELECT count(*) FROM logical_ext.subscription_status_rows()"),
        MON,
    ),
    (
        "logical_ext.effective_conflict_resolutions()",
        Call("SELECT count(*) FROM logical_ext.effective_conflict_resolutions()"),
        MON,
    ),
    // Monitoring: figures for pg_monitor.
    ("logical_ext.slot_health()", Call("SELECT count(*) FROM logical_ext.slot_health()"), MON),
    ("logical_ext.replication_status()", Call("SELECT count(*) FROM logical_ext.replication_status()"), MON),
    ("logical_ext.metrics()", Call("SELECT length(logical_ext.metrics())"), MON),
    ("logical_ext.sampler_status()", Call("SELECT count(*) FROM logical_ext.sampler_status()"), MON),
    (
        "logical_ext.drop_stale_slots(interval,boolean,text[],text[],text[],bigint,boolean)",
        Call("SELECT count(*) FROM logical_ext.drop_stale_slots('100 years', true)"),
        MON,
    ),
    // DDL: replicate_ddl for superusers (grant it to deployers); the capture
    // internals for nobody else.
    ("logical_ext.replicate_ddl(text)", Acl, S),
    ("logical_ext._ddl_capture(text)", Acl, S),
    ("logical_ext._ddl_note_dropped()", Acl, S),
    ("logical_ext.on_sql_drop()", Acl, S),
    ("logical_ext.on_ddl_command_end()", Acl, S),
    ("logical_ext.ddl_schema_publications(name)", Acl, S),
    ("logical_ext.ddl_relation_publications(oid)", Acl, S),
    ("logical_ext.ddl_object_publications(oid,oid,text)", Acl, S),
    ("logical_ext.ddl_object_in_extension(oid,oid)", Acl, S),
    ("logical_ext.ddl_published_objects()", Acl, S),
    ("logical_ext.ddl_published_schemas()", Acl, S),
    // Reconciliation (issue 17): table owners on their own tables,
    // operators on any; the publisher side is granted to the subscription's
    // role by the operator. verify_subscription checks each table's owner
    // after finding the subscription (reconcile.rs tests that per table).
    (
        "logical_ext.verify_table(text,regclass,integer,integer,integer,integer,integer)",
        Call("SELECT count(*) FROM logical_ext.verify_table('nosuch', 'public.owned')"),
        OWN,
    ),
    (
        "logical_ext.repair_table(text,regclass,bigint,integer,integer)",
        Call("SELECT count(*) FROM logical_ext.repair_table('nosuch', 'public.owned')"),
        OWN,
    ),
    (
        "logical_ext.verify_subscription(text,integer,integer,integer)",
        Call("SELECT count(*) FROM logical_ext.verify_subscription('nosuch')"),
        ALL,
    ),
    (
        "logical_ext.reconcile_verify(text,text,text,bigint,integer,text,text,bigint,text[],text[],text[],text[],text[],text[],integer,boolean,integer)",
        Acl,
        S,
    ),
    (
        "logical_ext.reconcile_repair(text,text,text,bigint,integer,text,text,bigint,text[],text[],text[],text,integer)",
        Acl,
        S,
    ),
    ("logical_ext.reconcile_log", Call("SELECT count(*) FROM logical_ext.reconcile_log"), MON),
    // Figures for pg_monitor; key bounds and error texts (row data) not.
    ("logical_ext.verify_chunks", Call("SELECT count(*), max(pub_rows) FROM logical_ext.verify_chunks"), MON),
    ("logical_ext.verify_chunks", Call("SELECT lower_key, upper_key, error FROM logical_ext.verify_chunks"), OPS),
    ("logical_ext.reconcile_rejected", Call("SELECT * FROM logical_ext.reconcile_rejected"), MON),
    ("logical_ext.verify_differences", Call("SELECT key FROM logical_ext.verify_differences"), OPS),
    ("logical_ext.repair_log", Call("SELECT local_row FROM logical_ext.repair_log"), OPS),
    // Harmless for everyone.
    ("logical_ext.format_version()", Call("SELECT logical_ext.format_version()"), ALL),
    ("logical_ext.version()", Call("SELECT logical_ext.version()"), ALL),
    ("logical_ext.redact_conninfo(text)", Call("SELECT logical_ext.redact_conninfo('password=x')"), ALL),
    ("logical_ext.row_data_for_caller(text)", Call("SELECT logical_ext.row_data_for_caller('x')"), S),
    // Tables and views.
    ("logical_ext.subscription", Call("SELECT conninfo FROM logical_ext.subscription"), S),
    ("logical_ext.subscription", Call("SELECT name FROM logical_ext.subscription"), MON),
    ("logical_ext.subscription_status", Call("SELECT count(*) FROM logical_ext.subscription_status"), MON),
    // The persisted counters (0.4.0) are figures: pg_monitor reads them.
    (
        "logical_ext.subscription_status",
        Call("SELECT apply_error_count, sync_error_count, stats_reset FROM logical_ext.subscription_status"),
        MON,
    ),
    ("logical_ext.subscription_tables", Call("SELECT count(*) FROM logical_ext.subscription_tables"), MON),
    // Error texts may quote row values (see `error_texts_are_row_data`).
    ("logical_ext.subscription_tables", Call("SELECT last_error FROM logical_ext.subscription_tables"), OPS),
    ("logical_ext.conflict_resolution", Call("SELECT count(*) FROM logical_ext.conflict_resolution"), MON),
    ("logical_ext.conflict_resolutions", Call("SELECT count(*) FROM logical_ext.conflict_resolutions"), MON),
    ("logical_ext.conflict_log", Call("SELECT conflict_type, detected_at FROM logical_ext.conflict_log"), MON),
    ("logical_ext.conflict_log", Call("SELECT local_tuple, remote_tuple FROM logical_ext.conflict_log"), OPS),
    ("logical_ext.ddl_log", Call("SELECT count(*) FROM logical_ext.ddl_log"), MON),
    ("logical_ext.slot_drop_audit", Call("SELECT count(*) FROM logical_ext.slot_drop_audit"), MON),
    ("logical_ext.failover_slot", Call("SELECT count(*) FROM logical_ext.failover_slot"), MON),
];

#[test]
fn privilege_matrix() {
    let c = Cluster::start("privileges", &["shared_preload_libraries = 'logical_ext'"]);
    c.exec(
        "CREATE EXTENSION logical_ext;
         CREATE ROLE operator LOGIN IN ROLE logical_ext_operator;
         CREATE ROLE monitor LOGIN IN ROLE pg_monitor;
         CREATE ROLE owner LOGIN;
         CREATE ROLE plain LOGIN;
         CREATE TABLE public.owned (id int PRIMARY KEY);
         ALTER TABLE public.owned OWNER TO owner;
         CREATE PUBLICATION p FOR TABLE public.owned",
    );
    let mut client = c.client();

    // Every function and relation of the extension has an entry.
    let covered: BTreeSet<String> = MATRIX.iter().map(|(o, _, _)| o.replace(", ", ",").to_string()).collect();
    let objects: Vec<String> = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'logical_ext'::regnamespace
             UNION ALL
             SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'logical_ext'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0).replace(", ", ","))
        .collect();
    let missing: Vec<&String> = objects.iter().filter(|o| !covered.contains(*o)).collect();
    assert!(missing.is_empty(), "objects without an entry in the privilege matrix: {missing:?}");
    let stale: Vec<&String> = covered.iter().filter(|o| !objects.contains(o)).collect();
    assert!(stale.is_empty(), "entries for objects that do not exist: {stale:?}");

    // Every SECURITY DEFINER function pins search_path, pg_temp explicitly last.
    let unpinned: Vec<String> = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'logical_ext'::regnamespace AND p.prosecdef
                AND NOT coalesce(p.proconfig @> '{\"search_path=pg_catalog, pg_temp\"}', false)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unpinned.is_empty(), "SECURITY DEFINER without search_path = pg_catalog, pg_temp: {unpinned:?}");

    let mut wrong = Vec::new();
    for (object, probe, expected) in MATRIX {
        for (role, want) in ROLES.iter().zip(expected) {
            let (allowed, detail) = match probe {
                Acl => {
                    let ok: bool = client
                        .query_one(
                            "SELECT pg_catalog.has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
                            &[role, object],
                        )
                        .unwrap()
                        .get(0);
                    (ok, String::new())
                }
                Call(sql) => {
                    let r = client.batch_execute(&format!("SET ROLE {role}; {sql}"));
                    let _ = client.batch_execute("RESET ROLE");
                    match r {
                        Ok(()) => (true, "ok".to_string()),
                        Err(e) => {
                            let denied = e.as_db_error().is_some_and(|d| d.code().code() == "42501");
                            (!denied, describe_error(&e))
                        }
                    }
                }
            };
            if allowed != *want {
                wrong.push(format!("{role} on {object}: expected {}, got {} ({detail})", allow(*want), allow(allowed)));
            }
        }
    }
    assert!(wrong.is_empty(), "privilege matrix mismatches:\n{}", wrong.join("\n"));
}

fn allow(b: bool) -> &'static str {
    if b { "allow" } else { "deny" }
}

/// Error messages may quote row values (PostgreSQL's own do), so the text
/// of `last_error` is for superusers and members of logical_ext_operator,
/// as conflict_log's row images are; pg_monitor sees that there is an error.
/// Each role logs in itself (the status view decides on the session user).
#[test]
fn error_texts_are_row_data() {
    let c = Cluster::start("privileges_errors", &["shared_preload_libraries = 'logical_ext'"]);
    c.exec(
        "CREATE EXTENSION logical_ext;
         CREATE ROLE operator LOGIN IN ROLE logical_ext_operator;
         CREATE ROLE monitor LOGIN IN ROLE pg_monitor;
         CREATE TABLE public.t (id int PRIMARY KEY);
         INSERT INTO logical_ext.subscription (name, owner, conninfo, publications, enabled)
             VALUES ('s', 10, 'dbname=x', ARRAY['p'], false);
         INSERT INTO logical_ext.subscription_tables (subid, relid, state, last_error)
             SELECT id, 'public.t', 'error', 'Key (id)=(42) already exists' FROM logical_ext.subscription;
         SELECT pg_catalog.pg_replication_origin_create('logical_ext_' || id) FROM logical_ext.subscription",
    );
    let login = |role: &str| {
        postgres::Client::connect(&format!("{} user={role}", c.conninfo()), postgres::NoTls)
            .unwrap_or_else(|e| panic!("login as {role}: {}", describe_error(&e)))
    };
    let status_error = |client: &mut Client| -> String {
        client.query_one("SELECT last_error FROM logical_ext.subscription_status", &[]).unwrap().get(0)
    };
    let mut monitor = login("monitor");
    let hidden = status_error(&mut monitor);
    assert!(!hidden.contains("42") && hidden.contains("hidden"), "pg_monitor sees the error text: {hidden}");
    let denied = monitor.query("SELECT last_error FROM logical_ext.subscription_tables", &[]).unwrap_err();
    assert_eq!(denied.as_db_error().map(|d| d.code().code()), Some("42501"), "{}", describe_error(&denied));
    let states: i64 = monitor
        .query_one("SELECT count(*) FROM logical_ext.subscription_tables WHERE state = 'error'", &[])
        .unwrap()
        .get(0);
    assert_eq!(states, 1, "pg_monitor still sees the table's state");
    for role in ["operator", "postgres"] {
        let mut client = login(role);
        let text = status_error(&mut client);
        assert!(text.contains("Key (id)=(42) already exists"), "{role} sees the error text: {text}");
        let row: String =
            client.query_one("SELECT last_error FROM logical_ext.subscription_tables", &[]).unwrap().get(0);
        assert!(row.contains("(42)"), "{role}: {row}");
    }
}
