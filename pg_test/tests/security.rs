//! Security (issue 11): every attack of the issue, tried as an ordinary
//! login would on a publisher and subscriber set up as the README says. Each
//! of these tests failed on 0.1.0; the privilege matrix and the upgrade test
//! live in `privileges.rs` and `upgrade.rs`.

use logical_ext_pg_test::decoding;
use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

const PRELOAD: &str = "shared_preload_libraries = 'logical_ext'";

/// Role `app` (LOGIN, not a superuser) on both sides, owning schema `app`
/// with table `app.t`; the publisher captures DDL; `p` is FOR TABLES IN
/// SCHEMA app (or FOR ALL TABLES), subscription `s` streams.
fn app_pair(name: &str, all_tables: bool) -> Pair {
    let pair = Pair::start_with(name, &[PRELOAD], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    pair.both_exec(
        "CREATE ROLE app LOGIN;
         CREATE SCHEMA app AUTHORIZATION app;
         CREATE TABLE app.t (id int PRIMARY KEY, v text);
         ALTER TABLE app.t OWNER TO app;",
    );
    pair.pub_exec(if all_tables {
        "CREATE PUBLICATION p FOR ALL TABLES"
    } else {
        "CREATE PUBLICATION p FOR TABLES IN SCHEMA app"
    });
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair
}

fn role_exists(c: &Cluster, role: &str) -> bool {
    let mut client = c.client();
    client.query_one("SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role]).unwrap().get::<_, i64>(0)
        > 0
}

/// A message under the DDL prefix written by an ordinary role is an
/// ordinary message: nothing runs on the subscriber, the stream goes on.
/// Also a replay of a genuine event's JSON (with its log_id) in another
/// transaction, and a doctored copy in the same transaction as a real DDL.
#[test]
fn forged_ddl_messages_are_plain_messages() {
    let pair = app_pair("sec_forged", false);
    let mut p = pair.pub_client();
    decoding::create_slot(&mut p, "watch", "logical_ext");
    // A genuine captured DDL, to steal its log_id.
    exec(&mut p, "SET ROLE app; ALTER TABLE app.t ADD COLUMN extra int; RESET ROLE");
    let genuine: i64 = p
        .query_one("SELECT max(id) FROM logical_ext.ddl_log WHERE source = 'event_trigger' AND replicated", &[])
        .unwrap()
        .get(0);
    let forged = |log_id: Option<i64>, role: &str| {
        let id = log_id.map(|i| format!(",\"log_id\":{i}")).unwrap_or_default();
        format!(
            "{{\"source\":\"replicate_ddl\",\"command_tag\":\"CREATE ROLE\",\"search_path\":\"public\",\"role\":\"postgres\",\
             \"publications\":[],\"command\":\"CREATE ROLE {role} SUPERUSER LOGIN\"{id}}}"
        )
    };
    exec(
        &mut p,
        &format!(
            "SET ROLE app; SELECT pg_catalog.pg_logical_emit_message(true, 'logical_ext.ddl', '{}'); RESET ROLE",
            forged(None, "pwned1")
        ),
    );
    exec(
        &mut p,
        &format!(
            "SET ROLE app; SELECT pg_catalog.pg_logical_emit_message(true, 'logical_ext.ddl', '{}'); RESET ROLE",
            forged(Some(genuine), "pwned2")
        ),
    );
    // Same transaction as a genuine capture, pointing at its row (the next
    // id of the ddl_log sequence).
    let doctored = forged(Some(genuine + 1), "pwned3").replace("replicate_ddl", "event_trigger");
    exec(
        &mut p,
        &format!(
            "SET ROLE app; BEGIN; ALTER TABLE app.t ADD COLUMN extra2 int;
             SELECT pg_catalog.pg_logical_emit_message(true, 'logical_ext.ddl', '{doctored}');
             COMMIT; RESET ROLE"
        ),
    );
    pair.pub_exec("INSERT INTO app.t (id, v) VALUES (1, 'after the forgeries')");
    pair.wait_sub_count("s", "app.t", 1);
    for role in ["pwned1", "pwned2", "pwned3"] {
        assert!(!role_exists(&pair.subscriber, role), "a forged DDL message created role {role} on the subscriber");
    }
    let st = pair.status("s");
    assert_eq!(st.state, "streaming", "the stream must go on: {}", pair.explain("s"));
    // The genuine DDL did replicate (as app), the forgeries are M documents.
    let cols: i64 = pair
        .sub_client()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = 'app.t'::regclass AND attname IN ('extra', 'extra2')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cols, 2);
    let changes = decoding::get_changes(&mut p, "watch", &[]);
    let docs = decoding::docs(&changes);
    let ddl: Vec<_> = docs.iter().filter(|d| d["action"] == "DDL").collect();
    assert_eq!(ddl.len(), 2, "only the two genuine DDL commands are DDL documents: {}", decoding::dump(&changes));
    assert!(ddl.iter().all(|d| d["command_tag"] == "ALTER TABLE" && d["log_id"].is_i64()));
    let plain = docs.iter().filter(|d| d["action"] == "M" && d["prefix"] == "logical_ext.ddl").count();
    assert_eq!(plain, 3, "{}", decoding::dump(&changes));
}

/// Code a publisher role can define (an index expression, a generated
/// column's expression, a trigger) never
/// runs on the subscriber with more privileges than that role has there:
/// replayed DDL runs as the captured role, applied rows as the table owner.
#[test]
fn publisher_code_runs_as_its_owner_on_subscribers() {
    let pair = app_pair("sec_escalate", true);
    // Index expressions must be immutable (no DDL inside): this one fails
    // loudly whenever it runs as a superuser.
    let f = "CREATE FUNCTION app.f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
             BEGIN
                 IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                     RAISE EXCEPTION 'escalated: app.f ran as superuser %', current_user;
                 END IF;
                 RETURN i;
             END $$";
    pair.pub_exec("INSERT INTO app.t VALUES (7, 'x')");
    pair.wait_sub_count("s", "app.t", 1);
    {
        let mut p = pair.pub_client();
        exec(&mut p, &format!("SET ROLE app; {f}"));
        exec(&mut p, "SET ROLE app; CREATE INDEX t_f ON app.t (app.f(id))");
        // A generated column is computed on the subscriber, by the same code.
        exec(&mut p, "SET ROLE app; ALTER TABLE app.t ADD COLUMN g int GENERATED ALWAYS AS (app.f(id)) STORED");
        // A trigger that creates a role when it can.
        exec(
            &mut p,
            "SET ROLE app;
             CREATE FUNCTION app.trg() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                     CREATE ROLE pwned_by_trigger SUPERUSER;
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER t_trg BEFORE INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.trg();
             ALTER TABLE app.t ENABLE ALWAYS TRIGGER t_trg",
        );
        exec(&mut p, "SET ROLE app; INSERT INTO app.t VALUES (8, 'y')");
    }
    pair.wait_sub_count("s", "app.t", 2);
    let index: i64 = pair
        .sub_client()
        .query_one("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 't_f'", &[])
        .unwrap()
        .get(0);
    assert_eq!(index, 1, "the index was replayed: {}", pair.explain("s"));
    let mut s = pair.sub_client();
    let pwned: Vec<String> = s
        .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname LIKE 'pwned%'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(pwned.is_empty(), "publisher code ran as a superuser on the subscriber: {pwned:?}");
    let owner: String = s
        .query_one(
            "SELECT r.role_name FROM logical_ext.ddl_log r WHERE r.source = 'apply' AND r.command_tag = 'CREATE INDEX'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "app");
}

/// A captured role that does not exist on the subscriber: refused (the
/// error policy applies), never run as the subscription owner; with
/// `ddl_replay_role` set the operator's choice is used.
#[test]
fn replay_needs_the_role_or_an_explicit_replay_role() {
    let pair = app_pair("sec_replay_role", false);
    pair.pub_exec("CREATE ROLE only_on_pub LOGIN; GRANT CREATE, USAGE ON SCHEMA app TO only_on_pub");
    pair.pub_exec("SET ROLE only_on_pub; CREATE TABLE app.u (id int PRIMARY KEY)");
    let st = pair
        .wait_status("s", "the replay refused", |s| s.last_error.as_deref().is_some_and(|e| e.contains("only_on_pub")));
    let err = st.last_error.unwrap_or_default();
    assert!(err.contains("does not exist on this node"), "{err}");
    pair.sub_exec("SELECT logical_ext.alter_subscription('s', '{\"ddl_replay_role\": \"app\", \"retry_min_delay_ms\": 100, \"retry_max_delay_ms\": 1000}')");
    pair.pub_exec("INSERT INTO app.u VALUES (1)");
    pair.wait_sub_count("s", "app.u", 1);
    let owner: String = pair
        .sub_client()
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(relowner)::text FROM pg_catalog.pg_class WHERE oid = 'app.u'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "app", "replayed as ddl_replay_role");
}

/// Ordinary roles do not notice the extension: DDL, temp tables, DROP,
/// DROP SCHEMA CASCADE and DROP OWNED work on a node with the library
/// preloaded, the extension installed and a FOR ALL TABLES publication.
/// Errors that cross the extension carry no Rust backtrace, even with
/// RUST_BACKTRACE set in the server's environment.
#[test]
fn ordinary_roles_work_normally() {
    // SAFETY: test set-up; the server started below inherits it.
    unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
    let c = Cluster::start("sec_ordinary", &[PRELOAD]);
    c.exec(
        "CREATE EXTENSION logical_ext;
         CREATE PUBLICATION p FOR ALL TABLES;
         CREATE ROLE plain LOGIN;
         GRANT CREATE ON DATABASE postgres TO plain;
         GRANT CREATE ON SCHEMA public TO plain",
    );
    let mut client = c.client();
    for sql in [
        "CREATE TABLE x (id int)",
        "ALTER TABLE x ADD COLUMN v text",
        "CREATE INDEX ON x (v)",
        "DROP TABLE x",
        "CREATE TEMP TABLE tt (id int)",
        "DROP TABLE tt",
        "CREATE SCHEMA mine",
        "CREATE TABLE mine.a (id int PRIMARY KEY)",
        "CREATE VIEW mine.v AS SELECT * FROM mine.a",
        "DROP SCHEMA mine CASCADE",
        "CREATE TABLE y (id int)",
        "DROP OWNED BY plain",
    ] {
        if let Err(e) = client.batch_execute(&format!("SET ROLE plain; {sql}; RESET ROLE")) {
            panic!("{sql} failed for an ordinary role: {}", describe_error(&e));
        }
    }
    let err = client
        .batch_execute("SELECT logical_ext.replicate_ddl('DROP TABLE no_such_table')")
        .expect_err("the command fails");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42P01", "{}", describe_error(&err));
    let detail = db.detail().unwrap_or("");
    assert!(
        !detail.contains("backtrace") && !detail.contains(".rs:") && !detail.contains("rust"),
        "a Rust backtrace reached the client: {detail}"
    );
}

/// SECURITY DEFINER code reads catalogs with search_path = pg_catalog,
/// pg_temp: a temporary view shadowing each catalog it reads never runs.
#[test]
fn temp_objects_cannot_shadow_catalogs() {
    let c = Cluster::start("sec_shadow", &[PRELOAD]);
    c.exec(
        "CREATE EXTENSION logical_ext;
         CREATE ROLE plain LOGIN;
         CREATE SCHEMA pubd AUTHORIZATION plain;
         CREATE PUBLICATION p FOR TABLES IN SCHEMA pubd;
         CREATE TABLE pubd.listed (id int PRIMARY KEY);
         ALTER TABLE pubd.listed OWNER TO plain;
         CREATE PUBLICATION q FOR TABLE pubd.listed",
    );
    let mut client = c.client();
    let catalogs = [
        "pg_depend",
        "pg_publication",
        "pg_publication_rel",
        "pg_publication_namespace",
        "pg_namespace",
        "pg_class",
        "pg_index",
        "pg_trigger",
        "pg_constraint",
        "pg_rewrite",
        "pg_policy",
        "pg_statistic_ext",
        "pg_attrdef",
        "pg_roles",
    ];
    let mut setup = String::from(
        "SET ROLE plain;
         CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_catalog.set_config('evil.ran_as', current_user, false); RETURN true; END $$;",
    );
    for cat in catalogs {
        setup.push_str(&format!("CREATE TEMP VIEW {cat} AS SELECT * FROM pg_catalog.{cat} WHERE pg_temp.evil();"));
    }
    exec(&mut client, &setup);
    for sql in [
        "CREATE TABLE pubd.t2 (id int PRIMARY KEY)",
        "ALTER TABLE pubd.listed ADD COLUMN v text",
        "CREATE INDEX ON pubd.listed (v)",
        "DROP TABLE pubd.t2",
        "ALTER TABLE pubd.listed DROP COLUMN v",
    ] {
        if let Err(e) = client.batch_execute(sql) {
            panic!("{sql}: {}", describe_error(&e));
        }
    }
    let ran: Option<String> =
        client.query_one("SELECT pg_catalog.current_setting('evil.ran_as', true)", &[]).unwrap().get(0);
    assert!(ran.as_deref().unwrap_or("").is_empty(), "a temporary view shadowed a catalog and ran as {ran:?}");
    let captured: i64 =
        c.client().query_one("SELECT count(*) FROM logical_ext.ddl_log WHERE replicated", &[]).unwrap().get(0);
    assert!(captured >= 4, "capture still worked ({captured} commands)");
}

/// Statements carrying passwords never reach WAL, ddl_log or messages.
#[test]
fn passwords_never_travel() {
    let (c, mut client) = decoding::plugin_cluster_with("sec_passwords", &[PRELOAD]);
    exec(
        &mut client,
        "CREATE EXTENSION IF NOT EXISTS logical_ext; CREATE EXTENSION postgres_fdw;
         CREATE ROLE victim LOGIN",
    );
    let err = client
        .batch_execute("SELECT logical_ext.replicate_ddl($$ALTER ROLE victim PASSWORD 'Secret-One'$$)")
        .expect_err("refused");
    assert!(!describe_error(&err).contains("Secret-One"), "{}", describe_error(&err));
    assert_eq!(err.as_db_error().unwrap().code().code(), "0A000");
    exec(
        &mut client,
        "SET logical_ext.ddl_capture = 'all';
         ALTER ROLE victim PASSWORD 'Secret-Two';
         CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'h');
         CREATE USER MAPPING FOR victim SERVER remote OPTIONS (user 'u', password 'Secret-Three');
         ALTER USER MAPPING FOR victim SERVER remote OPTIONS (SET password 'Secret-Four')",
    );
    let log: Vec<String> = client
        .query("SELECT command || coalesce(reason, '') FROM logical_ext.ddl_log", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!log.is_empty());
    assert!(log.iter().all(|l| !l.contains("Secret")), "{log:?}");
    // Event triggers do not fire for roles; user mappings are captured,
    // refused for replication, and recorded by tag only.
    assert!(log.iter().any(|l| l.contains("CREATE USER MAPPING") && l.contains("not recorded")), "{log:?}");
    let stream = decoding::dump(&decoding::get_changes(&mut client, "s", &[]));
    assert!(!stream.contains("Secret"), "{stream}");
    drop(c);
}

/// `sslpassword` is redacted like `password`; drop_subscription refuses to
/// run in a transaction block (it drops the remote slot); the extension's
/// own tables are never part of a subscription.
#[test]
fn subscriptions_keep_secrets_and_bookkeeping_local() {
    let pair = app_pair("sec_subs", true);
    let conninfo = format!("{} sslmode=disable sslpassword=Secret-Ssl", pair.publisher_conninfo());
    pair.subscribe_with_conninfo("s2", &conninfo, &["p"], "");
    let shown: String = pair
        .sub_client()
        .query_one("SELECT conninfo FROM logical_ext.subscription_status WHERE name = 's2'", &[])
        .unwrap()
        .get(0);
    assert!(!shown.contains("Secret-Ssl") && shown.contains("sslpassword=********"), "{shown}");
    let mut s = pair.sub_client();
    let err = s
        .batch_execute("BEGIN; SELECT logical_ext.drop_subscription('s2'); ROLLBACK")
        .expect_err("refused in a transaction block");
    assert_eq!(err.as_db_error().unwrap().code().code(), "25001", "{}", describe_error(&err));
    let _ = s.batch_execute("ROLLBACK");
    pair.wait_streaming("s2");
    exec(&mut s, "SELECT logical_ext.drop_subscription('s2')");
    // FOR ALL TABLES on a publisher that has the extension: a copying
    // subscription lists only the user's tables.
    pair.pub_exec("INSERT INTO app.t VALUES (42, 'copied')");
    let sql = "SELECT logical_ext.create_subscription(name => 's3', conninfo => $1::text, publications => '{p}', \
               copy_data => true, slot_name => 's3_slot')";
    pair.sub_exec("SELECT logical_ext.drop_subscription('s')");
    pair.sub_exec("TRUNCATE app.t");
    s.execute(sql, &[&pair.publisher_conninfo()]).unwrap_or_else(|e| panic!("{}", describe_error(&e)));
    pair.wait_sub_count("s3", "app.t", 1);
    let tables: Vec<String> = s
        .query(
            "SELECT relid::regclass::text FROM logical_ext.subscription_tables t \
             JOIN logical_ext.subscription s ON s.id = t.subid WHERE s.name = 's3'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec!["app.t".to_string()]);
    let st = pair.wait_streaming("s3");
    assert!(st.last_error.is_none(), "{:?}", st.last_error);
}

/// Triggers of applied rows run as the table owner by default, and as the
/// subscription owner with the `run_as_owner` opt-out.
#[test]
fn run_as_owner_opts_out_of_table_owner_apply() {
    let pair = app_pair("sec_run_as", false);
    pair.sub_exec(
        "CREATE TABLE public.seen (id int, who text);
         GRANT INSERT ON public.seen TO app;
         CREATE FUNCTION app.note() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.seen VALUES (NEW.id, current_user); RETURN NEW; END $$;
         ALTER FUNCTION app.note() OWNER TO app;
         CREATE TRIGGER note BEFORE INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.note();
         ALTER TABLE app.t ENABLE ALWAYS TRIGGER note",
    );
    pair.pub_exec("INSERT INTO app.t VALUES (1, 'as owner')");
    pair.wait_sub_count("s", "app.t", 1);
    pair.sub_exec(
        "SELECT logical_ext.alter_subscription('s', '{\"run_as_owner\": true, \"retry_min_delay_ms\": 100, \"retry_max_delay_ms\": 1000}')",
    );
    // The option applies from the worker's next session.
    pair.sub_exec("SELECT logical_ext.disable_subscription('s')");
    pair.sub_exec("SELECT logical_ext.enable_subscription('s')");
    pair.pub_exec("INSERT INTO app.t VALUES (2, 'as subscription owner')");
    pair.wait_sub_count("s", "app.t", 2);
    let seen: Vec<(i32, String)> = pair
        .sub_client()
        .query("SELECT id, who FROM public.seen ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(seen, vec![(1, "app".to_string()), (2, "postgres".to_string())]);
}

/// `resync_table` empties the table before its new copy: as the table's
/// owner, as the copy itself, so the owner's ENABLE ALWAYS DELETE trigger
/// never runs as the subscription owner (a superuser).
#[test]
fn resync_empties_the_table_as_its_owner() {
    let pair = app_pair("sec_resync", false);
    pair.sub_exec(
        "CREATE TABLE public.seen (who text);
         GRANT INSERT ON public.seen TO app;
         CREATE FUNCTION app.note() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO public.seen VALUES (current_user);
             IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pwned_by_resync') THEN
                 CREATE ROLE pwned_by_resync SUPERUSER;
             END IF;
             RETURN OLD;
         END $$;
         ALTER FUNCTION app.note() OWNER TO app;
         CREATE TRIGGER note BEFORE DELETE ON app.t FOR EACH ROW EXECUTE FUNCTION app.note();
         ALTER TABLE app.t ENABLE ALWAYS TRIGGER note",
    );
    pair.pub_exec("INSERT INTO app.t VALUES (1, 'a'), (2, 'b')");
    pair.wait_sub_count("s", "app.t", 2);
    pair.sub_exec("SELECT logical_ext.resync_table('s', 'app.t')");
    logical_ext_pg_test::sync::wait_all_ready(&pair, "s");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["app.t"]);
    assert!(!role_exists(&pair.subscriber, "pwned_by_resync"), "the resync ran the owner's trigger as a superuser");
    assert_eq!(pair.subscriber.psql("SELECT string_agg(who, ',' ORDER BY who) FROM public.seen"), "app,app");
}

/// A local role makes the name of a published table a view of its own
/// whose function takes a superuser's rights when it can. The initial
/// copy's probe of the target (does it have rows?) reads it as its owner,
/// never as the subscription owner; the copy itself refuses a view.
#[test]
fn the_copy_never_reads_a_target_as_the_subscription_owner() {
    let pair = Pair::start_with("sec_view_target", &[PRELOAD], &[]);
    pair.pub_exec(
        "CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text);
         INSERT INTO app.t VALUES (1, 'a');
         CREATE PUBLICATION p FOR TABLE app.t",
    );
    pair.sub_exec(
        "CREATE ROLE app LOGIN;
         CREATE SCHEMA app AUTHORIZATION app;
         SET ROLE app;
         CREATE FUNCTION app.grab() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pwned_by_view') THEN
                 CREATE ROLE pwned_by_view SUPERUSER;
             END IF;
             RETURN 1;
         END $$;
         CREATE VIEW app.t AS SELECT 1 AS id, 'v'::text AS v WHERE app.grab() = 0;",
    );
    logical_ext_pg_test::sync::subscribe_copy(&pair, "s", &["p"], "");
    logical_ext_pg_test::sync::wait_tables(&pair, "s", "the copy into the view failed", |ts| {
        ts.iter().any(|t| t.last_error.is_some())
    });
    assert!(!role_exists(&pair.subscriber, "pwned_by_view"), "the copy read the view as a superuser");
}

/// A publisher table owner names a table so that, quoted as a plain `'...'`
/// literal, its name ends the literal early when the publisher runs with
/// `standard_conforming_strings = off` (a backslash then escapes the quote)
/// and the rest runs as SQL under the subscription's replication role. The
/// initial copy puts published table names into the SQL it sends to the
/// publisher; the `E'...'` form is correct under both settings. Seen failing
/// before the fix: the copy ran `CREATE ROLE pwned SUPERUSER` on the
/// publisher (refused there only because the copy's transaction is read-only;
/// a function call would have run) and never finished.
#[test]
fn published_names_are_data_under_any_string_setting() {
    let pair = Pair::start_with("sec_scs", &[PRELOAD, "standard_conforming_strings = off"], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext");
    let table = r#"app."q\';CREATE ROLE pwned SUPERUSER;--""#;
    pair.both_exec(&format!(
        "CREATE ROLE app LOGIN;
         CREATE SCHEMA app AUTHORIZATION app;
         CREATE TABLE {table} (id int PRIMARY KEY, v text);
         ALTER TABLE {table} OWNER TO app;"
    ));
    pair.pub_exec(&format!("INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, 10) g"));
    // A backslash in the publication's name too: SQL literals and the
    // replication command's options quote it differently.
    pair.pub_exec(r#"CREATE PUBLICATION "p\" FOR TABLES IN SCHEMA app"#);
    logical_ext_pg_test::sync::subscribe_copy(&pair, "s", &[r"p\"], "");
    pair.wait_sub_count("s", table, 10);
    pair.wait_streaming("s");
    pair.pub_exec(&format!("INSERT INTO {table} VALUES (11, 'streamed')"));
    pair.wait_sub_count("s", table, 11);
    assert!(!role_exists(&pair.publisher, "pwned"), "the table's name ran as SQL on the publisher");
    pair.assert_same_tables(&[table]);
}

/// The failover gate reads `logical_ext.failover_slot` of the database a
/// walsender decodes as the bootstrap superuser. In a database without the
/// extension, a REPLICATION role that owns the database put a view of that
/// name there whose function ran as the superuser when it streamed its own
/// slot. Seen failing before the fix (reported by the security review and
/// reproduced here): `rep` became a superuser. Now only a superuser-owned
/// table of that name is read.
#[test]
fn a_lookalike_failover_table_runs_nothing_as_superuser() {
    let cluster = Cluster::start("sec_gate", &[PRELOAD]);
    cluster.exec("CREATE ROLE rep LOGIN REPLICATION CREATEDB");
    cluster.exec("CREATE DATABASE evil OWNER rep");
    let mut evil = cluster.client_db("evil");
    exec(
        &mut evil,
        "SET ROLE rep;
         CREATE SCHEMA logical_ext;
         CREATE FUNCTION public.pwn() RETURNS SETOF name LANGUAGE plpgsql AS $$
         BEGIN
             IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                 EXECUTE 'ALTER ROLE rep SUPERUSER';
             END IF;
             RETURN NEXT 'x'::name;
         END $$;
         CREATE VIEW logical_ext.failover_slot AS SELECT s AS slot_name FROM public.pwn() s;
         RESET ROLE",
    );
    exec(&mut evil, "SET ROLE rep; SELECT pg_catalog.pg_create_logical_replication_slot('x', 'logical_ext')");
    let endpos = query_string(&mut evil, "SELECT pg_catalog.pg_current_wal_lsn()::text");
    let out = run_with_timeout(
        cluster.recvlogical("user=rep dbname=evil", "x").arg(format!("--endpos={endpos}")),
        std::time::Duration::from_secs(30),
        "pg_recvlogical as rep",
    );
    let mut c = cluster.client();
    let rolsuper: bool =
        c.query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'rep'", &[]).unwrap().get(0);
    assert!(!rolsuper, "the lookalike table's code ran as a superuser; pg_recvlogical: {out:?}");
    // The slot streams as any slot does (not marked, so not gated).
    assert!(out.status.success(), "pg_recvlogical failed: {}", String::from_utf8_lossy(&out.stderr));
}
