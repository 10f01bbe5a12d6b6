//! `ALTER EXTENSION logical_ext UPDATE` from every released version (0.1.0,
//! 0.2.0, 0.3.0) gives exactly a fresh installation: the same member objects, columns, constraints, indexes,
//! reloptions, grants (table, column and function ACLs), function attributes
//! (SECURITY DEFINER, search_path, volatility, strictness, bodies), views,
//! event triggers and comments.
//!
//! The released install scripts are `fixtures/logical_ext--<version>.sql`
//! (what `cargo pgrx schema` generated for each release: 0.1.0 at commit
//! 11a06af, 0.2.0 at commit ec80564, 0.3.0 at commit 160e732); the test installs them next to the
//! installed extension's files.

use logical_ext_pg_test::*;
use std::path::PathBuf;

/// The catalog, described as text: one query per aspect.
const ASPECTS: &[(&str, &str)] = &[
    (
        "members",
        "SELECT pg_catalog.pg_describe_object(classid, objid, 0) FROM pg_catalog.pg_depend
          WHERE refclassid = 'pg_catalog.pg_extension'::regclass AND deptype = 'e'
            AND refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'logical_ext') ORDER BY 1",
    ),
    (
        "functions",
        "SELECT p.oid::regprocedure::text || ' -> ' || p.prorettype::regtype::text
                || ' secdef=' || p.prosecdef || ' config=' || coalesce(p.proconfig::text, '')
                || ' acl=' || coalesce(p.proacl::text, '') || ' vol=' || p.provolatile::text || ' par=' || p.proparallel::text
                || ' strict=' || p.proisstrict || ' rows=' || p.prorows || ' cost=' || p.procost
                || ' lang=' || l.lanname || ' src=' || p.prosrc
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
          WHERE p.pronamespace = 'logical_ext'::regnamespace ORDER BY 1",
    ),
    (
        "relations",
        "SELECT c.relname || ' kind=' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, '')
                || ' opts=' || coalesce(c.reloptions::text, '') || ' cols=' || coalesce((
                   SELECT string_agg(a.attname || ':' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                                     || ':' || a.attnotnull || ':' || coalesce(a.attacl::text, '')
                                     || ':' || a.attidentity::text || ':' || coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''),
                                     ', ' ORDER BY a.attnum)
                     FROM pg_catalog.pg_attribute a
                     LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
           FROM pg_catalog.pg_class c WHERE c.relnamespace = 'logical_ext'::regnamespace ORDER BY 1",
    ),
    (
        "constraints",
        "SELECT conrelid::regclass::text || ' ' || pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
          WHERE connamespace = 'logical_ext'::regnamespace ORDER BY 1",
    ),
    ("indexes", "SELECT indexdef FROM pg_catalog.pg_indexes WHERE schemaname = 'logical_ext' ORDER BY 1"),
    (
        "views",
        "SELECT c.relname || ': ' || pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c
          WHERE c.relnamespace = 'logical_ext'::regnamespace AND c.relkind = 'v' ORDER BY 1",
    ),
    (
        "event triggers",
        "SELECT evtname || ' ' || evtevent || ' ' || evtfoid::regproc::text || ' ' || evtenabled::text
           FROM pg_catalog.pg_event_trigger ORDER BY 1",
    ),
    (
        "comments",
        "SELECT pg_catalog.pg_describe_object(classoid, objoid, objsubid) || ': ' || description
           FROM pg_catalog.pg_description d
          WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid
                          AND e.deptype = 'e' AND e.refobjid = (SELECT oid FROM pg_catalog.pg_extension
                                                                WHERE extname = 'logical_ext'))
          ORDER BY 1",
    ),
    (
        "extension",
        "SELECT extversion || ' ' || extrelocatable || ' ' || extnamespace::regnamespace::text || ' '
                || coalesce((SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
                               FROM unnest(extconfig) c), '')
           FROM pg_catalog.pg_extension WHERE extname = 'logical_ext'",
    ),
    ("schema", "SELECT coalesce(nspacl::text, '') FROM pg_catalog.pg_namespace WHERE nspname = 'logical_ext'"),
];

fn sharedir() -> PathBuf {
    let out = run_checked(std::process::Command::new(pg_bin("pg_config")).arg("--sharedir"), "pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn describe(c: &Cluster, db: &str) -> Vec<(String, Vec<String>)> {
    let mut client = c.client_db(db);
    ASPECTS
        .iter()
        .map(|(name, sql)| {
            let rows = client.query(*sql, &[]).unwrap_or_else(|e| panic!("{name}: {}", describe_error(&e)));
            (name.to_string(), rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
        .collect()
}

/// The released versions an installation may be upgraded from.
const RELEASED: &[&str] = &["0.1.0", "0.2.0", "0.3.0"];

#[test]
fn upgraded_equals_fresh() {
    // Always the released scripts (a development build may have left other
    // files under these names there).
    for version in RELEASED {
        let script = sharedir().join(format!("extension/logical_ext--{version}.sql"));
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/logical_ext--{version}.sql"));
        std::fs::copy(&fixture, &script)
            .unwrap_or_else(|e| panic!("install {} as {}: {e}", fixture.display(), script.display()));
    }
    let c = Cluster::start("upgrade", &["shared_preload_libraries = 'logical_ext'"]);
    c.exec("CREATE DATABASE fresh");
    c.client_db("fresh").batch_execute("CREATE EXTENSION logical_ext").unwrap();
    let fresh = describe(&c, "fresh");
    assert!(fresh[0].1.len() > 30, "the extension has its objects: {:?}", fresh[0].1);
    for (i, version) in RELEASED.iter().enumerate() {
        let db = format!("upgraded{i}");
        c.exec(&format!("CREATE DATABASE {db}"));
        let mut up = c.client_db(&db);
        up.batch_execute(&format!("CREATE EXTENSION logical_ext VERSION '{version}'"))
            .unwrap_or_else(|e| panic!("installing {version}: {}", describe_error(&e)));
        // The new library with the old SQL objects: users' DDL keeps working
        // (capture refuses with a WARNING instead of failing it).
        up.batch_execute(
            "CREATE TABLE public.t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE public.t;
             ALTER TABLE public.t ADD COLUMN v int",
        )
        .unwrap_or_else(|e| {
            panic!("{version}: DDL between the library upgrade and ALTER EXTENSION: {}", describe_error(&e))
        });
        up.batch_execute("ALTER EXTENSION logical_ext UPDATE")
            .unwrap_or_else(|e| panic!("ALTER EXTENSION UPDATE from {version}: {}", describe_error(&e)));
        up.batch_execute("ALTER TABLE public.t ADD COLUMN w int").unwrap();
        let replicated: i64 = up
            .query_one(
                "SELECT count(*) FROM logical_ext.ddl_log WHERE replicated AND digest IS NOT NULL AND command ~ 'ADD COLUMN w'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(replicated, 1, "capture works once upgraded from {version}");
        let upgraded = describe(&c, &db);
        let mut diffs = Vec::new();
        for ((name, f), (_, u)) in fresh.iter().zip(&upgraded) {
            for line in f.iter().filter(|l| !u.contains(l)) {
                diffs.push(format!("{name}: only fresh:    {line}"));
            }
            for line in u.iter().filter(|l| !f.contains(l)) {
                diffs.push(format!("{name}: only upgraded: {line}"));
            }
        }
        assert!(diffs.is_empty(), "an upgraded {version} differs from a fresh install:\n{}", diffs.join("\n"));
    }
}
