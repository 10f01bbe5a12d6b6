//! The real wal2json (Debian's postgresql-15-wal2json) as the conformance
//! oracle: a corpus of SQL scenarios covering the areas of wal2json's own
//! regression suite is decoded by a `wal2json` slot and a `logical_ext` slot,
//! in both format versions and with each option, and the outputs are
//! compared as parsed JSON (key order included) after the ONE normalisation
//! table below, which lists exactly the documented differences
//! (docs/FORMAT.md, "Differences from wal2json"). Any other difference fails.

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// The documented differences, each normalised here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// wal2json writes a document (v1 `{"change":[]}`, v2 a `B`/`C` pair)
    /// for a transaction with nothing to show; logical_ext writes none.
    EmptyTransaction,
    /// Keys logical_ext adds: `unchanged_toast`, TRUNCATE's `cascade`,
    /// `restart_identity`, `relations`, a message's `content_encoding`.
    AdditiveKey,
    /// v2: a captured DDL event is a `DDL` document in logical_ext, the
    /// plain `M` message (prefix `logical_ext.ddl`) in wal2json.
    DdlDocument,
    /// `numeric` is a string with the exact text (wal2json: a JSON number).
    NumericAsString,
    /// NaN / ±Infinity are the strings "NaN", "Infinity", "-Infinity"
    /// (wal2json: null).
    NonFiniteAsString,
    /// A float's shortest round-trip spelling (`1e300`) where PostgreSQL
    /// writes `1e+300`: the same number.
    FloatSpelling,
    /// wal2json 2.5 bug, v1: a non-transactional message after a
    /// transaction of several changes starts with a comma (`"change":[,{`),
    /// which is not JSON; the comma is removed from its text.
    Wal2jsonStrayComma,
}

const ADDITIVE_KEYS: &[&str] = &["unchanged_toast", "cascade", "restart_identity", "relations", "content_encoding"];
const DDL_PREFIX: &str = "logical_ext.ddl";

type Applied = BTreeMap<Rule, usize>;

/// Whether `ours` and `theirs` (values of the same position) are the same
/// after the value rules; records the rule used.
fn same_value(ours: &Value, theirs: &Value, applied: &mut Applied) -> bool {
    if ours == theirs {
        return true;
    }
    let rule = match (ours, theirs) {
        (Value::String(s), Value::Null) if ["NaN", "Infinity", "-Infinity"].contains(&s.as_str()) => {
            Some(Rule::NonFiniteAsString)
        }
        (Value::String(s), Value::Number(n)) if *s == n.to_string() => Some(Rule::NumericAsString),
        (Value::Number(a), Value::Number(b))
            if a.to_string()
                .parse::<f64>()
                .ok()
                .zip(b.to_string().parse::<f64>().ok())
                .is_some_and(|(x, y)| x == y) =>
        {
            Some(Rule::FloatSpelling)
        }
        _ => None,
    };
    if let Some(r) = rule {
        *applied.entry(r).or_default() += 1;
        return true;
    }
    false
}

/// Compares two documents: same keys in the same order (after removing
/// our additive keys), same values under the value rules.
fn same_doc(ours: &Value, theirs: &Value, applied: &mut Applied) -> bool {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: Vec<&String> = a
                .keys()
                .filter(|k| {
                    let additive = ADDITIVE_KEYS.contains(&k.as_str()) && !b.contains_key(*k);
                    if additive {
                        *applied.entry(Rule::AdditiveKey).or_default() += 1;
                    }
                    !additive
                })
                .collect();
            keys.len() == b.len()
                && keys.iter().zip(b.keys()).all(|(k, l)| *k == l)
                && keys.iter().all(|k| same_doc(&a[*k], &b[*k], applied))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_doc(x, y, applied))
        }
        _ => same_value(ours, theirs, applied),
    }
}

/// All documents of a slot's output: the rows concatenated (with
/// `write-in-chunks` a v1 document spans several rows) and parsed as a
/// stream of JSON values. Without chunks, each row must be one document.
/// An option set a plugin refuses is an `Err` with the server's message.
fn decode(c: &mut Client, slot: &str, o: &[(&str, &str)], applied: &mut Applied) -> Result<Vec<Value>, String> {
    // Raw rows (not `try_changes`, which parses each row: wal2json 2.5's
    // stray comma is not JSON until the rule below removes it).
    let flat: Vec<String> = o.iter().flat_map(|(k, v)| [k.to_string(), v.to_string()]).collect();
    let data = c
        .query("SELECT data FROM pg_logical_slot_peek_changes($1, NULL, NULL, VARIADIC $2::text[])", &[&slot, &flat])
        .map_err(|e| describe_error(&e))?;
    let rows = data.len();
    let mut text: String = data.iter().map(|r| r.get::<_, String>(0)).collect();
    if slot == "w2j" {
        for (bad, good) in [("\"change\":[,{", "\"change\":[{"), ("\"change\": [\n\t\t,{", "\"change\": [\n\t\t{")] {
            let n = text.matches(bad).count();
            if n > 0 {
                text = text.replace(bad, good);
                *applied.entry(Rule::Wal2jsonStrayComma).or_default() += n;
            }
        }
    }
    let docs: Vec<Value> =
        serde_json::Deserializer::from_str(&text).into_iter::<Value>().collect::<Result<_, _>>().unwrap_or_else(|e| {
            let mut at =
                text.char_indices().map(|(i, _)| i).filter(|&i| i + 300 >= e.column() && i <= e.column() + 100);
            let (a, b) = (at.clone().next().unwrap_or(0), at.next_back().unwrap_or(0));
            panic!("{slot} {o:?}: output is not a JSON stream ({e}), near: {}", &text[a..b])
        });
    let chunked = o.iter().any(|(k, v)| *k == "write-in-chunks" && *v == "1");
    if !chunked {
        assert_eq!(docs.len(), rows, "{slot} {o:?}: a row is not exactly one document:\n{text}");
    }
    Ok(docs)
}

/// wal2json's output without what the rules say logical_ext does not write.
fn normalise_theirs(docs: Vec<Value>, applied: &mut Applied) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for d in docs {
        let empty_v1 = d.get("change").and_then(Value::as_array).is_some_and(Vec::is_empty);
        let empty_v2 = d["action"] == "C" && out.last().is_some_and(|l| l["action"] == "B");
        if empty_v1 || empty_v2 {
            if empty_v2 {
                out.pop();
            }
            *applied.entry(Rule::EmptyTransaction).or_default() += 1;
            continue;
        }
        if d["action"] == "M" && d["prefix"] == DDL_PREFIX {
            *applied.entry(Rule::DdlDocument).or_default() += 1;
            continue;
        }
        out.push(d);
    }
    out
}

fn normalise_ours(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter().filter(|d| d["action"] != "DDL").collect()
}

/// The numeric types wal2json 2.6's `numeric-data-types-as-string` quotes,
/// by the names wal2json prints (with and without typmod, v1's raw names).
fn is_number_type(t: &str) -> bool {
    const NAMES: &[&str] = &[
        "smallint",
        "integer",
        "bigint",
        "oid",
        "real",
        "double precision",
        "numeric",
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
    ];
    NAMES.contains(&t) || t.starts_with("numeric(")
}

/// wal2json 2.6's `numeric-data-types-as-string` (Debian's oracle is 2.5,
/// which refuses the option), derived from 2.5's output by 2.6's documented
/// and coded rule (wal2json.c, 2.6: a value of smallint, integer, bigint,
/// oid, real, double precision or numeric is its output text, quoted, NaN and
/// ±Infinity included): every number in a column of such a type becomes the
/// string of its text. 2.5 writes that text verbatim as the JSON number
/// (serde_json keeps it: `arbitrary_precision`). 2.5's `null` for NaN and
/// ±Infinity cannot be told from SQL NULL; `NonFiniteAsString` covers it.
/// Needs the types in the output (`include-types`, the default).
fn numbers_as_strings_2_6(doc: &mut Value) {
    let quote = |types: &Value, values: &mut Value| {
        if let (Some(t), Some(v)) = (types.as_array(), values.as_array_mut()) {
            for (t, v) in t.iter().zip(v.iter_mut()) {
                if t.as_str().is_some_and(is_number_type)
                    && let Value::Number(n) = v
                {
                    *v = Value::String(n.to_string());
                }
            }
        }
    };
    // format-version 2: `columns` / `identity` entries.
    for key in ["columns", "identity"] {
        if let Some(entries) = doc.get_mut(key).and_then(Value::as_array_mut) {
            for e in entries {
                let text = match e.get("value") {
                    Some(Value::Number(n)) if e["type"].as_str().is_some_and(is_number_type) => Some(n.to_string()),
                    _ => None,
                };
                if let Some(t) = text {
                    e["value"] = Value::String(t);
                }
            }
        }
    }
    // format-version 1: parallel arrays of each change and its `oldkeys`.
    if let Some(changes) = doc.get_mut("change").and_then(Value::as_array_mut) {
        for ch in changes {
            let t = ch["columntypes"].clone();
            if let Some(v) = ch.get_mut("columnvalues") {
                quote(&t, v);
            }
            if let Some(old) = ch.get_mut("oldkeys") {
                let t = old["keytypes"].clone();
                if let Some(v) = old.get_mut("keyvalues") {
                    quote(&t, v);
                }
            }
        }
    }
}

/// Decodes with both plugins per option set; returns the differences and
/// the rules that were needed.
fn differences(c: &mut Client, option_sets: &[Vec<(&str, &str)>]) -> (Vec<String>, Applied) {
    let mut failures = Vec::new();
    let mut applied = Applied::new();
    for o in option_sets {
        // numeric-data-types-as-string: 2.5's output, turned into 2.6's.
        let as_2_6 = o.contains(&("numeric-data-types-as-string", "1"));
        let their_o: Vec<(&str, &str)> =
            o.iter().filter(|(k, _)| *k != "numeric-data-types-as-string").copied().collect();
        let (ours, mut theirs) = match (decode(c, "le", o, &mut applied), decode(c, "w2j", &their_o, &mut applied)) {
            (Ok(a), Ok(b)) => (normalise_ours(a), b),
            (a, b) => {
                failures.push(format!("{o:?}: logical_ext: {:?}\n wal2json: {:?}", a.err(), b.err()));
                continue;
            }
        };
        if as_2_6 {
            theirs.iter_mut().for_each(numbers_as_strings_2_6);
        }
        let theirs = normalise_theirs(theirs, &mut applied);
        if ours.len() != theirs.len() {
            failures.push(format!(
                "{o:?}: {} documents vs wal2json's {}\n ours:\n{}\n theirs:\n{}",
                ours.len(),
                theirs.len(),
                ours.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"),
                theirs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
            ));
            continue;
        }
        for (a, b) in ours.iter().zip(&theirs) {
            if !same_doc(a, b, &mut applied) {
                failures.push(format!("{o:?}:\n ours:     {a}\n wal2json: {b}"));
            }
        }
    }
    (failures, applied)
}

/// The corpus: the areas of wal2json's regression suite, as our own SQL.
const SCHEMA: &str = r#"
    CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
    CREATE DOMAIN shortname AS varchar(8);
    CREATE TABLE t (id int PRIMARY KEY, i2 smallint, i8 bigint, b bool, tx text, vc varchar(20), ch char(3),
                    c1 "char", r real, d8 float8, n numeric(10,2), nn numeric, by bytea, dt date,
                    ts timestamp(3), js json, jb jsonb, arr int[], u uuid, bi bit(4));
    CREATE TABLE nopk (a int, b text);
    CREATE TABLE full_t (a int, b text, big text);
    ALTER TABLE full_t REPLICA IDENTITY FULL;
    CREATE TABLE idx_t (a int NOT NULL, b int NOT NULL, c text);
    CREATE UNIQUE INDEX idx_t_ab ON idx_t (a, b);
    ALTER TABLE idx_t REPLICA IDENTITY USING INDEX idx_t_ab;
    CREATE TABLE nothing_t (a int PRIMARY KEY, b text);
    ALTER TABLE nothing_t REPLICA IDENTITY NOTHING;
    CREATE TABLE defs (id serial PRIMARY KEY, a int DEFAULT 7, b text DEFAULT 'x' || 'y' NOT NULL,
                       c timestamptz DEFAULT '2020-01-01 00:00:00+00', g int GENERATED ALWAYS AS (a * 2) STORED,
                       d posint, e shortname);
    CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
    ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE compound (a int, b text, c int, PRIMARY KEY (b, a));
    CREATE SCHEMA "Odd Schema";
    CREATE TABLE "Odd Schema"."Odd ""Table" ("Col 1" int PRIMARY KEY);
    CREATE TABLE "a,b.c" (id int PRIMARY KEY);
    CREATE TABLE ren (id int PRIMARY KEY, before_name text);
    SELECT pg_replication_origin_create('o_one'), pg_replication_origin_create('o_two');
"#;

const WORKLOAD: &[&str] = &[
    // inserts: every value kind, NULLs
    r#"INSERT INTO t VALUES (1, -2, 9007199254740993, true, E'tab\there "q" \\ é', 'vc', 'ab', 'x', 1.5, -0.25,
        12345.67, 1e20, '\x00ff10', '2026-01-02', '2026-01-02 03:04:05.678', '{"k": [1, 2]}', '{"k": [1, 2]}',
        '{1,2,NULL}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', B'1010'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#,
    // special values
    "INSERT INTO t (id, r, d8, nn) VALUES (3, 'NaN', 'Infinity', 'NaN'), (4, '-Infinity', 1e300, '-Infinity'),
        (5, 3.4e38, 5e-324, 'Infinity')",
    // updates: key unchanged, key changed; delete
    "UPDATE t SET tx = 'changed' WHERE id = 1",
    "UPDATE t SET id = 10 WHERE id = 2",
    "DELETE FROM t WHERE id = 3",
    // tables without (usable) replica identity: UPDATE/DELETE not sent
    "INSERT INTO nopk VALUES (1, 'a'); UPDATE nopk SET b = 'b'; DELETE FROM nopk",
    "INSERT INTO nothing_t VALUES (1, 'a'); UPDATE nothing_t SET b = 'b'; DELETE FROM nothing_t",
    // REPLICA IDENTITY FULL and USING INDEX
    "INSERT INTO full_t VALUES (1, 'a', NULL), (2, NULL, 'z'); UPDATE full_t SET b = 'b' WHERE a = 1; DELETE FROM full_t WHERE a = 2",
    "INSERT INTO idx_t VALUES (1, 2, 'c'); UPDATE idx_t SET c = 'd'; UPDATE idx_t SET a = 5; DELETE FROM idx_t",
    // defaults, generated column, domains
    "INSERT INTO defs (d, e) VALUES (3, 'short'); INSERT INTO defs (a, b, d) VALUES (NULL, 'q', NULL)",
    "UPDATE defs SET a = 8 WHERE id = 1",
    // compound primary key
    "INSERT INTO compound VALUES (1, 'k', 2); UPDATE compound SET c = 3; DELETE FROM compound",
    // TOAST: a value stored out of line, then left unchanged by an UPDATE
    "INSERT INTO toasty SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 300) i",
    "UPDATE toasty SET small = 1 WHERE id = 1",
    "DELETE FROM toasty",
    // savepoints
    "BEGIN; INSERT INTO compound VALUES (10, 'a', 0); SAVEPOINT s1; INSERT INTO compound VALUES (11, 'b', 0);
     ROLLBACK TO s1; INSERT INTO compound VALUES (12, 'c', 0); SAVEPOINT s2; INSERT INTO compound VALUES (13, 'd', 0);
     RELEASE s2; COMMIT",
    // quoted and special names
    r#"INSERT INTO "Odd Schema"."Odd ""Table" VALUES (7); INSERT INTO "a,b.c" VALUES (1)"#,
    // messages
    "SELECT pg_logical_emit_message(true, 'pfx', 'transactional \"m\"')",
    "BEGIN; INSERT INTO compound VALUES (20, 'm', 0); SELECT pg_logical_emit_message(true, 'other', 'in txn'); COMMIT",
    "SELECT pg_logical_emit_message(false, 'pfx', 'not transactional')",
    // prefixes that only wal2json's list syntax can name: a backslash and a
    // comma (the list item `a\,b` keeps its backslash), double quotes, blanks
    r#"SELECT pg_logical_emit_message(true, 'a\,b', 'escaped comma'), pg_logical_emit_message(true, '"q"', 'quoted'),
        pg_logical_emit_message(true, 'a', 'plain a'), pg_logical_emit_message(true, 'b', 'plain b'),
        pg_logical_emit_message(true, 'p x', 'blank')"#,
    // transactions that arrived through replication origins 1 and 2
    "SELECT pg_replication_origin_session_setup('o_one'); INSERT INTO compound VALUES (30, 'o1', 0);
     SELECT pg_replication_origin_session_reset()",
    "SELECT pg_replication_origin_session_setup('o_two'); INSERT INTO compound VALUES (31, 'o2', 0);
     SELECT pg_logical_emit_message(true, 'pfx', 'from o_two'); SELECT pg_replication_origin_session_reset()",
    // TRUNCATE (wal2json v1 never prints it)
    "TRUNCATE nopk, compound",
    // a column renamed in the middle of the stream
    "INSERT INTO ren VALUES (1, 'old')",
    "ALTER TABLE ren RENAME COLUMN before_name TO after_name",
    "INSERT INTO ren VALUES (2, 'new'); UPDATE ren SET after_name = 'newer' WHERE id = 1",
];

fn corpus(name: &str) -> (Cluster, Client) {
    let cluster = Cluster::start(name, &[]);
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext");
    exec(&mut c, SCHEMA);
    create_slot(&mut c, "le", PLUGIN);
    create_slot(&mut c, "w2j", "wal2json");
    for sql in WORKLOAD {
        exec(&mut c, sql);
    }
    flush_wal(&mut c);
    (cluster, c)
}

/// Every option of wal2json 2.x (one at a time and in the combinations
/// consumers use), for the given format version.
fn option_sets(version: &'static str) -> Vec<Vec<(&'static str, &'static str)>> {
    let singles: &[&[(&str, &str)]] = &[
        &[],
        &[("include-xids", "1")],
        &[("include-timestamp", "1")],
        &[("include-lsn", "1")],
        &[("include-origin", "1")],
        &[("include-schemas", "0")],
        &[("include-types", "0")],
        &[("include-typmod", "0")],
        &[("include-type-oids", "1")],
        &[("include-pk", "1")],
        &[("include-column-positions", "1")],
        &[("include-not-null", "1")],
        &[("include-default", "1")],
        &[("include-domain-data-type", "1")],
        &[("include-domain-data-type", "1"), ("include-typmod", "0"), ("include-type-oids", "1")],
        // wal2json 2.6's option: compared with 2.5's output turned into
        // 2.6's (numbers_as_strings_2_6).
        &[("numeric-data-types-as-string", "1")],
        &[("numeric-data-types-as-string", "1"), ("include-typmod", "0"), ("include-domain-data-type", "1")],
        &[("pretty-print", "1")],
        &[("write-in-chunks", "1")],
        &[("write-in-chunks", "1"), ("pretty-print", "1")],
        &[("include-transaction", "0")],
        &[("actions", "insert,update")],
        &[("actions", "delete")],
        &[("filter-tables", "public.t,public.full_t")],
        &[("add-tables", "public.t, Odd\\ Schema.*")],
        &[("filter-tables", "*.a\\,b\\.c,Odd\\ Schema.Odd\\ \"Table")],
        &[("add-tables", "public.comp*,public.filter\"table_9")],
        &[("add-tables", "*.compound")],
        &[("add-msg-prefixes", "pfx")],
        &[("filter-msg-prefixes", "pfx")],
        // wal2json's list syntax (split_string_to_list): the backslash stays
        // in the item, quotes are characters, blanks around items go.
        &[("add-msg-prefixes", "a\\,b")],
        &[("add-msg-prefixes", "\"q\", a ,b")],
        &[("add-msg-prefixes", "a,b")],
        &[("add-msg-prefixes", "p\\ x")],
        &[("add-msg-prefixes", "")],
        &[("filter-msg-prefixes", "a\\,b,\"q\",pfx")],
        &[("filter-msg-prefixes", "  ")],
        // origins (split_string_to_oid_list + atoi): empty items, signs,
        // trailing garbage; local transactions are never filtered.
        &[("filter-origins", "1"), ("include-origin", "1")],
        &[("filter-origins", " 2 , 1 ")],
        &[("filter-origins", "1,")],
        &[("filter-origins", ",2")],
        &[("filter-origins", "+2")],
        &[("filter-origins", "-1,0")],
        &[("filter-origins", "2x")],
        &[("filter-origins", "")],
        &[("actions", "")],
        // option sets used by common consumers
        &[("include-xids", "1"), ("include-lsn", "1"), ("include-transaction", "1")],
        &[("include-timestamp", "1"), ("write-in-chunks", "1"), ("include-lsn", "1"), ("include-transaction", "0")],
        &[
            ("include-pk", "1"),
            ("include-type-oids", "1"),
            ("actions", "insert,update,delete"),
            ("add-tables", "public.*"),
        ],
        &[
            ("include-types", "0"),
            ("include-not-null", "1"),
            ("include-column-positions", "1"),
            ("include-default", "1"),
            ("include-pk", "1"),
        ],
    ];
    let mut sets: Vec<Vec<(&str, &str)>> = singles
        .iter()
        .map(|s| {
            let mut v = vec![("format-version", version)];
            v.extend_from_slice(s);
            v
        })
        .collect();
    if version == "2" {
        // wal2json reads the version with parse_int (blanks, strtol base 0).
        sets.push(vec![("format-version", " 0x2 ")]);
    }
    if version == "1" {
        // No format-version at all: wal2json's default is 1, and so is ours.
        sets.push(vec![]);
        sets.push(vec![("include-xids", "1"), ("include-pk", "1")]);
        sets.push(vec![
            ("include-timestamp", "1"),
            ("write-in-chunks", "1"),
            ("include-lsn", "1"),
            ("include-transaction", "0"),
        ]);
    }
    sets
}

/// Option values both plugins must refuse (wal2json: "could not parse
/// value"; logical_ext: 22023), and odd ones both must accept.
fn refusals_agree(c: &mut Client) -> Vec<String> {
    let refused: &[(&str, &str)] = &[
        ("add-msg-prefixes", "a,,b"),
        ("add-msg-prefixes", "a b"),
        ("filter-msg-prefixes", "a,"),
        ("filter-msg-prefixes", ",a"),
        ("filter-origins", "1 2"),
        ("actions", "insert update"),
        ("actions", "\"insert\""),
        ("add-tables", "public.t x"),
        ("filter-tables", "no_dot"),
        ("format-version", "3"),
    ];
    let mut failures = Vec::new();
    for (name, value) in refused {
        for slot in ["le", "w2j"] {
            let o = [(*name, Some(*value))];
            if let Ok(rows) = try_changes_as_given(c, false, slot, &o) {
                failures.push(format!("{slot} accepted {name} = {value:?} ({} rows)", rows.len()));
            }
        }
    }
    failures
}

fn check(version: &'static str, cluster_name: &str) {
    let (_cluster, mut c) = corpus(cluster_name);
    let (mut failures, applied) = differences(&mut c, &option_sets(version));
    if version == "2" {
        failures.extend(refusals_agree(&mut c));
    }
    // The list-syntax scenarios must bite: each changes the output (else the
    // two plugins could agree by both ignoring the option).
    let mut scratch = Applied::new();
    let plain = decode(&mut c, "le", &[("format-version", version)], &mut scratch).unwrap_or_default();
    for o in [
        ("filter-origins", "1"),
        ("filter-origins", "2x"),
        ("add-msg-prefixes", "a\\,b"),
        ("add-msg-prefixes", "\"q\""),
    ] {
        let with = decode(&mut c, "le", &[("format-version", version), o], &mut scratch).unwrap_or_default();
        if with.len() >= plain.len() {
            failures.push(format!("{o:?} removed nothing ({} documents, {} without it)", with.len(), plain.len()));
        }
    }
    eprintln!("format-version {version}: normalisation rules applied: {applied:?}");
    // Rules that belong to the other version must not have been needed.
    let other_version = if version == "1" { [Rule::DdlDocument] } else { [Rule::Wal2jsonStrayComma] };
    for r in other_version {
        if applied.contains_key(&r) {
            failures.push(format!("rule {r:?} was needed in format-version {version}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} difference(s) from wal2json format-version {version}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn wal2json_format_version_1_is_the_oracle() {
    check("1", "dec_w2j_oracle_v1");
}

#[test]
fn wal2json_format_version_2_is_the_oracle() {
    check("2", "dec_w2j_oracle_v2");
}
