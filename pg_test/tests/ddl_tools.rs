//! Coexistence with the tools PostgreSQL users run (issue 15, item 7), on
//! two real clusters with DDL capture on (`published`): pg_repack rebuilding
//! a published table under writes (extension on the publisher only),
//! pg_partman creating and dropping partitions in its maintenance, pg_cron
//! running DDL from its scheduler. The tools' working objects (pg_repack's
//! types, log and work tables in its `repack` schema and its trigger on the
//! table) never reach the subscriber; the user-visible DDL does (partman's
//! partitions, cron's DDL, the user's ALTER after a repack); the data is
//! exact and the subscription never stops (no error, no retry). The first
//! three tests publish the user's tables or schema; `tools_under_for_all_tables`
//! runs all three tools under one FOR ALL TABLES publication, which does not
//! publish the tools' own tables (extension members, or in a schema that is
//! one; docs/DDL.md, "Tools"). The tools
//! come from Debian's `postgresql-15-repack`, `-partman` and `-cron`
//! (installed by scripts/setup.sh next to the server `pg_bin()` names).

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

const PRELOAD: &str = "shared_preload_libraries = 'logical_ext'";

/// Asserts the subscription never met an error: still streaming, no
/// `last_error`, no error in the subscriber's log.
fn assert_never_stopped(pair: &Pair, name: &str) {
    let s = pair.status(name);
    assert_eq!(s.state, "streaming", "{}", pair.explain(name));
    assert_eq!(s.last_error, None, "{}", pair.explain(name));
    let errors = conflicts::log_lines(&pair.subscriber, "ERROR:");
    assert!(errors.is_empty(), "the subscriber logged errors:\n{}", errors.join("\n"));
}

/// DDL captured on the publisher that replay on the subscriber applied.
fn replayed(pair: &Pair) -> Vec<String> {
    let sql = "SELECT command FROM logical_ext.ddl_log WHERE source = 'apply' AND replicated ORDER BY id";
    pair.sub_client().query(sql, &[]).expect("read ddl_log").iter().map(|r| r.get(0)).collect()
}

#[test]
fn pg_repack_under_writes() {
    let pair = Pair::start_with("tools_repack", &[PRELOAD], &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext; CREATE EXTENSION pg_repack");
    pair.both_exec("CREATE TABLE public.t (id bigint PRIMARY KEY, v text, pad text)");
    // FOR TABLE here; FOR ALL TABLES: `tools_under_for_all_tables`.
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE public.t");
    // The subscriber has no pg_repack (the worse case: no `repack` schema).
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    let during = repack_under_writes(&pair, 100_000);
    // The user's own DDL on the rebuilt table still replicates.
    pair.pub_exec("ALTER TABLE public.t ADD COLUMN extra int");
    pair.pub_exec("INSERT INTO public.t VALUES (-1, 'after', 'z', 7)");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["public.t"]);
    assert!(during > 0, "no write while pg_repack ran");
    println!("rows inserted while pg_repack ran: {during}");
    assert_never_stopped(&pair, "s");
    let replayed = replayed(&pair);
    assert_eq!(replayed, vec!["ALTER TABLE public.t ADD COLUMN extra int".to_string()], "replayed DDL");
}

/// The leaf partitions of `public.ev`, by name.
fn partitions(client: &mut postgres::Client) -> Vec<String> {
    let sql = "SELECT c.relname::text FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
               WHERE i.inhparent = 'public.ev'::pg_catalog.regclass ORDER BY 1";
    client.query(sql, &[]).expect("list partitions").iter().map(|r| r.get(0)).collect()
}

#[test]
fn pg_partman_creates_and_drops_partitions() {
    let pair = Pair::start_with("tools_partman", &[PRELOAD], &[]);
    // pg_partman only on the publisher, in a schema of the user's (as its
    // documentation says); the subscriber gets the partitions through DDL.
    pair.pub_exec("CREATE EXTENSION logical_ext; CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman");
    pair.both_exec(
        "CREATE TABLE public.ev (id bigint NOT NULL, ts timestamptz NOT NULL, v text, PRIMARY KEY (id, ts))
         PARTITION BY RANGE (ts)",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA public");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    // create_parent makes today's partition, 5 days back and 2 ahead.
    partman_daily(&pair, 10_000);
    pair.wait_caught_up("s");
    let mut created = partitions(&mut pair.pub_client());
    assert!(created.len() >= 8, "partman made {created:?}");
    assert_eq!(partitions(&mut pair.sub_client()), created);
    pair.assert_same("SELECT * FROM public.ev", "id");
    // Maintenance: more partitions ahead, and retention drops the old ones.
    pair.pub_exec(
        "UPDATE partman.part_config SET premake = 5, retention = '3 days', retention_keep_table = false
         WHERE parent_table = 'public.ev'",
    );
    pair.pub_exec("SELECT partman.run_maintenance('public.ev')");
    pair.pub_exec(
        "INSERT INTO public.ev SELECT 20000 + g, now() + g * interval '1 hour', 'late' FROM generate_series(1, 100) g",
    );
    pair.wait_caught_up("s");
    let after = partitions(&mut pair.pub_client());
    assert_ne!(after, created, "run_maintenance changed nothing");
    assert!(after.iter().any(|p| !created.contains(p)), "no partition was created: {after:?}");
    assert!(created.iter().any(|p| !after.contains(p)), "no partition was dropped: {after:?}");
    created = after;
    assert_eq!(partitions(&mut pair.sub_client()), created);
    pair.assert_same("SELECT * FROM public.ev", "id");
    assert_never_stopped(&pair, "s");
}

#[test]
fn pg_cron_runs_ddl() {
    let cron = ["shared_preload_libraries = 'logical_ext, pg_cron'", "cron.database_name = 'postgres'"];
    let pair = Pair::start_with("tools_cron", &cron, &[]);
    pair.pub_exec("CREATE EXTENSION logical_ext; CREATE EXTENSION pg_cron");
    pair.both_exec("CREATE TABLE public.c (id int PRIMARY KEY, v text)");
    pair.pub_exec("CREATE PUBLICATION p FOR TABLES IN SCHEMA public");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");
    pair.pub_exec("INSERT INTO public.c SELECT g, 'v' FROM generate_series(1, 100) g");
    cron_ddl_once(&pair);
    pair.pub_exec("INSERT INTO public.c (id, v) VALUES (101, 'after'); INSERT INTO public.made_by_cron VALUES (2)");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["public.c", "public.made_by_cron"]);
    assert_never_stopped(&pair, "s");
}

/// A pg_cron job on the publisher that runs DDL (ALTER TABLE public.c,
/// CREATE TABLE public.made_by_cron) and a row: waits until it succeeded once
/// (pg_cron 1.4 schedules by the minute: the next one), then unschedules it.
fn cron_ddl_once(pair: &Pair) {
    pair.pub_exec(
        "SELECT cron.schedule('ddl', '* * * * *',
             $$ALTER TABLE public.c ADD COLUMN IF NOT EXISTS n int DEFAULT 5;
               CREATE TABLE IF NOT EXISTS public.made_by_cron (id int PRIMARY KEY);
               INSERT INTO public.made_by_cron VALUES (1) ON CONFLICT DO NOTHING$$)",
    );
    let mut c = pair.pub_client();
    wait_until(Duration::from_secs(150), "the cron job succeeded once", || {
        c.query_one("SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'", &[])
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    });
    pair.pub_exec("SELECT cron.unschedule('ddl')");
}

/// The tools' tables that exist on the publisher only.
const TOOL_TABLES: &str = "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('cron', 'partman', 'repack')
      AND EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.deptype = 'e'
                   AND ((d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid)
                     OR (d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objid = n.oid)))
    ORDER BY 1";

/// All three tools under a `FOR ALL TABLES` publication, the subscriber
/// without their extensions: their own tables (pg_repack's `repack.log_N`
/// and `repack.table_N`, pg_cron's `cron.job` and `cron.job_run_details`,
/// pg_partman's `part_config`) are extension members, or in a schema that
/// is one, and are not published through FOR ALL TABLES (pgoutput would
/// publish them and the subscriber would stop on "target relation does not
/// exist"). The user's tables, partman's partitions and cron's DDL arrive;
/// a refresh with copy_data copies none of the tools' tables.
#[test]
fn tools_under_for_all_tables() {
    let conf = ["shared_preload_libraries = 'logical_ext, pg_cron'", "cron.database_name = 'postgres'"];
    let pair = Pair::start_with("tools_all", &conf, &[]);
    pair.pub_exec(
        "CREATE EXTENSION logical_ext; CREATE EXTENSION pg_repack; CREATE EXTENSION pg_cron;
         CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman",
    );
    // The user's schema `partman` exists on both sides (FOR ALL TABLES
    // replicates what partman creates in it: its template table); the
    // extensions only on the publisher.
    pair.sub_exec("CREATE SCHEMA partman");
    pair.both_exec(
        "CREATE TABLE public.t (id bigint PRIMARY KEY, v text, pad text);
         CREATE TABLE public.c (id int PRIMARY KEY, v text);
         CREATE TABLE public.ev (id bigint NOT NULL, ts timestamptz NOT NULL, v text, PRIMARY KEY (id, ts))
             PARTITION BY RANGE (ts)",
    );
    pair.pub_exec("CREATE PUBLICATION p FOR ALL TABLES");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");

    // pg_partman: create_parent writes part_config and makes partitions.
    partman_daily(&pair, 5_000);
    // pg_repack under writes: its log table fills while it runs.
    repack_under_writes(&pair, 50_000);
    // pg_cron: cron.job gets the job, cron.job_run_details its runs.
    pair.pub_exec("INSERT INTO public.c SELECT g, 'v' FROM generate_series(1, 100) g");
    cron_ddl_once(&pair);
    // pg_partman's maintenance: part_config updated, partitions made and dropped.
    pair.pub_exec(
        "UPDATE partman.part_config SET premake = 5, retention = '3 days', retention_keep_table = false
         WHERE parent_table = 'public.ev'",
    );
    pair.pub_exec("SELECT partman.run_maintenance('public.ev')");
    pair.pub_exec(
        "INSERT INTO public.ev SELECT 20000 + g, now() + g * interval '1 hour', 'late' FROM generate_series(1, 100) g;
         INSERT INTO public.c (id, v) VALUES (101, 'after'); INSERT INTO public.made_by_cron VALUES (2)",
    );
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["public.t", "public.c", "public.made_by_cron"]);
    pair.assert_same("SELECT * FROM public.ev", "id");
    assert_eq!(partitions(&mut pair.sub_client()), partitions(&mut pair.pub_client()));
    assert_never_stopped(&pair, "s");

    // A refresh with copy_data lists the publication's tables the same way:
    // none of the tools' tables is added (none exists here to copy into).
    // partman's template table is no tool's table: partman made it in the
    // user's schema, and DDL replication made it on the subscriber.
    pair.sub_exec("SELECT logical_ext.refresh_subscription('s')");
    let mut sub = pair.sub_client();
    let tools: Vec<String> = sub
        .query(
            "SELECT relid::text FROM logical_ext.subscription_tables
              WHERE relid::text LIKE 'cron.%' OR relid::text LIKE 'partman.part_config%' OR relid::text LIKE 'repack.%'",
            &[],
        )
        .expect("subscription_tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tools.is_empty(), "tools' tables in the subscription: {tools:?}");
    let on_publisher: Vec<String> =
        pair.pub_client().query(TOOL_TABLES, &[]).expect("tool tables").iter().map(|r| r.get(0)).collect();
    println!("tools' tables on the publisher, not published: {on_publisher:?}");
    pair.pub_exec("INSERT INTO public.c (id, v) VALUES (102, 'after refresh')");
    pair.wait_caught_up("s");
    pair.assert_same_tables(&["public.c"]);
    assert_never_stopped(&pair, "s");
}

/// Fills `public.t` with `rows` rows (a third deleted), then runs
/// `pg_repack -t public.t` on the publisher while a writer keeps inserting;
/// returns how many rows the writer inserted while pg_repack ran.
fn repack_under_writes(pair: &Pair, rows: i64) -> i64 {
    pair.pub_exec(&format!(
        "INSERT INTO public.t SELECT g, 'v' || g, repeat('x', 200) FROM generate_series(1, {rows}) g;
         DELETE FROM public.t WHERE id % 3 = 0"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(1_000_000));
    let writer = {
        let (stop, next) = (stop.clone(), next.clone());
        let mut c = pair.pub_client();
        std::thread::spawn(move || {
            // Inserts only: pg_repack itself cannot apply UPDATE/DELETE to
            // its work table under a FOR ALL TABLES publication (that table
            // has no replica identity; reorg/pg_repack#235).
            while !stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed);
                c.execute("INSERT INTO public.t VALUES ($1, 'w', 'y')", &[&id]).expect("insert during repack");
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    wait_until(CATCH_UP, "the writer runs", || next.load(Ordering::Relaxed) > 1_000_010 || writer.is_finished());
    assert!(!writer.is_finished(), "the writer thread ended early (its panic message is above)");
    let before = next.load(Ordering::Relaxed);
    let out = run_with_timeout(
        std::process::Command::new(pg_bin("pg_repack")).args([
            "-h",
            &pair.publisher.socket_dir().display().to_string(),
            "-p",
            &pair.publisher.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "--no-superuser-check",
            "-t",
            "public.t",
        ]),
        Duration::from_secs(120),
        "pg_repack -t public.t",
    );
    let during = next.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(
        out.status.success(),
        "pg_repack failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    during
}

/// pg_partman's `create_parent` on `public.ev` (daily partitions from 5 days
/// back, 2 ahead), then `rows` rows, one a minute from 5 days back.
fn partman_daily(pair: &Pair, rows: i64) {
    pair.pub_exec(
        "SELECT partman.create_parent('public.ev', 'ts', 'native', 'daily', p_premake := 2,
                                      p_start_partition := (now() - interval '5 days')::date::text)",
    );
    pair.pub_exec(&format!(
        "INSERT INTO public.ev SELECT g, now() - interval '5 days' + g * interval '1 minute', 'r' || g
         FROM generate_series(1, {rows}) g"
    ));
}
