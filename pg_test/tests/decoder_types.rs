//! Every built-in scalar type (and arrays, enum, domain, composite): each
//! decoded value must equal the type's own text output, with the JSON kind
//! FORMAT.md's Values table prescribes; `type`/`typeoid` must match the
//! catalog. Spec: docs/FORMAT.md (Values; include-types, include-typmod,
//! include-type-oids).

use logical_ext_pg_test::decoding::*;
use logical_ext_pg_test::json::*;
use logical_ext_pg_test::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// How the format encodes a type's values.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// JSON number equal to the integer text.
    Int,
    /// JSON number with the same float4 value, or "NaN"/"Infinity"/"-Infinity".
    Float4,
    /// Same for float8.
    Float8,
    /// JSON true/false.
    Bool,
    /// JSON string equal to the output function's text (numeric, text
    /// types and every other type).
    Text,
    /// JSON string of the hex digits: the hex output text without its `\x`,
    /// as wal2json prints bytea.
    Bytea,
}
use Kind::*;

/// (column, SQL type, kind, values as SQL expressions). Row i uses value i of
/// every column (NULL when the column has fewer values); one extra row is
/// all NULL.
const COLUMNS: &[(&str, &str, Kind, &[&str])] = &[
    ("c_int2", "int2", Int, &["-32768", "32767", "0"]),
    ("c_int4", "int4", Int, &["-2147483648", "2147483647", "0"]),
    ("c_int8", "int8", Int, &["-9223372036854775808", "9223372036854775807", "0"]),
    ("c_oid", "oid", Int, &["4294967295", "0", "12345"]),
    // A domain is printed as the string of its text, as wal2json does.
    ("c_domain", "posint", Text, &["1", "2147483647"]),
    ("c_domain2", "posint2", Text, &["7"]),
    ("c_domain_text", "shorttext", Text, &["'dom'"]),
    (
        "c_float4",
        "float4",
        Float4,
        &["1.5", "'-0'", "'NaN'", "'Infinity'", "'-Infinity'", "3.4028235e38", "1e-45", "0.1", "-123456.79"],
    ),
    (
        "c_float8",
        "float8",
        Float8,
        &[
            "0.1",
            "'-0'",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "1.7976931348623157e308",
            "5e-324",
            "123456789.123",
            "1e100",
            "0.1::float8 + 0.2::float8",
        ],
    ),
    (
        "c_numeric",
        "numeric",
        Text,
        &[
            "3.14",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0.000000000000000000000000000001",
            "-123456789012345678901234567890123456789.123456789012345678901234567890",
            "repeat('9', 1000)::numeric",
            "1e-200",
            "0",
        ],
    ),
    ("c_numeric_typmod", "numeric(10,2)", Text, &["3.1", "-99999999.99"]),
    ("c_bool", "bool", Bool, &["true", "false"]),
    (
        "c_text",
        "text",
        Text,
        &[
            r#"E'quote " apostrophe '' backslash \\ slash / tab \t newline \n cr \r'"#,
            r"E'controls \x01\x02\x08\x0c\x1b\x1f del \x7f end'",
            "'unicode é ß 漢字 ☃ 𝄞 😀 \u{200b} \u{2028}'",
            "''",
            "repeat('long ', 5000)",
            "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) i)",
            "'{\"looks\": \"like json\"}'",
            "'NULL'",
        ],
    ),
    ("c_varchar", "varchar(20)", Text, &["'abc'", "'trailing  '", "''"]),
    ("c_char", "char(5)", Text, &["'ab'", "'abcde'", "''"]),
    ("c_qchar", "\"char\"", Text, &["'x'"]),
    ("c_name", "name", Text, &["'pg_name'", "'With Space'"]),
    (
        "c_bytea",
        "bytea",
        Bytea,
        &[r"'\x00ff10'::bytea", "''::bytea", "decode(repeat('ab', 3000), 'hex')", r"'\x5c22'::bytea"],
    ),
    ("c_date", "date", Text, &["'2026-11-22'", "'infinity'", "'-infinity'", "'4713-01-01 BC'"]),
    ("c_time", "time", Text, &["'12:34:56.789'", "'24:00:00'", "'00:00'"]),
    ("c_timetz", "timetz", Text, &["'12:34:56+05:30'", "'23:59:59.999999-12'"]),
    (
        "c_timestamp",
        "timestamp",
        Text,
        &["'2026-11-22 10:00:00.123456'", "'infinity'", "'-infinity'", "'0099-01-01 00:00 BC'"],
    ),
    ("c_timestamptz", "timestamptz", Text, &["'2026-11-22 10:00:00.5+02'", "'-infinity'", "'1970-01-01 00:00:00+00'"]),
    ("c_interval", "interval", Text, &["'1 year 2 mons 3 days 04:05:06.789'", "'-1 day'", "'0'"]),
    ("c_interval_typmod", "interval day to second(2)", Text, &["'3 days 01:02:03.456'"]),
    ("c_uuid", "uuid", Text, &["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
    ("c_json", "json", Text, &[r#"'{"a": [1, 2.50, "x\"y"],  "b" : null}'"#, "'[]'", "'\"just a string\"'"]),
    ("c_jsonb", "jsonb", Text, &[r#"'{"b": 1, "a": "é\n", "c": [1.50, true, null]}'"#, "'[]'", "'3'"]),
    ("c_xml", "xml", Text, &[r#"'<a b="c">text &amp; more</a>'"#, "'plain text node'"]),
    ("c_inet", "inet", Text, &["'192.168.0.1/24'", "'::1'", "'10.1.2.3'"]),
    ("c_cidr", "cidr", Text, &["'10.0.0.0/8'", "'2001:db8::/32'"]),
    ("c_macaddr", "macaddr", Text, &["'08:00:2b:01:02:03'"]),
    ("c_macaddr8", "macaddr8", Text, &["'08:00:2b:01:02:03:04:05'"]),
    ("c_money", "money", Text, &["12.34", "-1000000.5"]),
    ("c_bit", "bit(4)", Text, &["B'1010'", "B'0000'"]),
    ("c_varbit", "varbit(8)", Text, &["B'101'", "B''"]),
    ("c_point", "point", Text, &["'(1.5,-2)'"]),
    ("c_line", "line", Text, &["'{1,2,3}'"]),
    ("c_lseg", "lseg", Text, &["'[(0,0),(1,1)]'"]),
    ("c_box", "box", Text, &["'(1,1),(0,0)'"]),
    ("c_path", "path", Text, &["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1),(2,0))'"]),
    ("c_polygon", "polygon", Text, &["'((0,0),(1,1),(2,0))'"]),
    ("c_circle", "circle", Text, &["'<(1,2),3>'"]),
    ("c_tsvector", "tsvector", Text, &["'a fat cat:1 sat:2B on''s mat'", "''"]),
    ("c_tsquery", "tsquery", Text, &["'fat & (rat | cat) & !dog'"]),
    ("c_int4range", "int4range", Text, &["'[1,10)'", "'empty'", "'(,5]'"]),
    ("c_tstzrange", "tstzrange", Text, &["'[2026-01-01,2026-02-01)'", "'(,)'"]),
    ("c_numrange", "numrange", Text, &["'(1.5,2.5]'"]),
    ("c_int4multirange", "int4multirange", Text, &["'{[1,3),[5,7)}'", "'{}'"]),
    ("c_int_array", "int[]", Text, &["'{1,2,NULL,3}'", "'{{1,2},{3,4}}'", "'{}'", "'[0:1]={7,8}'"]),
    ("c_text_array", "text[]", Text, &[r#"'{"a,b","c\"d",NULL,"NULL","x y","é\\z"}'"#, "'{}'"]),
    ("c_varchar_array", "varchar(3)[]", Text, &["'{ab,cd}'"]),
    ("c_enum", "mood", Text, &["'happy'", "'so-so'"]),
    ("c_composite", "comp", Text, &["ROW(1, 'x \"y\" z')::comp", "ROW(NULL, NULL)::comp", "ROW(-1, '')::comp"]),
    ("c_pg_lsn", "pg_lsn", Text, &["'16/B374D848'", "'0/0'"]),
];

const SETUP: &str = "
    CREATE DOMAIN posint AS int CHECK (VALUE > 0);
    CREATE DOMAIN posint2 AS posint;
    CREATE DOMAIN shorttext AS varchar(10);
    CREATE TYPE mood AS ENUM ('sad', 'so-so', 'happy');
    CREATE TYPE comp AS (a int, b text);
";

fn create_table_sql() -> String {
    let cols: Vec<String> = COLUMNS.iter().map(|(n, t, _, _)| format!("{n} {t}")).collect();
    format!("CREATE TABLE types (id int PRIMARY KEY, {})", cols.join(", "))
}

fn row_count() -> usize {
    COLUMNS.iter().map(|c| c.3.len()).max().unwrap() + 1
}

fn insert_sql(row: usize) -> String {
    let vals: Vec<String> = COLUMNS
        .iter()
        .map(|(_, t, _, v)| match v.get(row) {
            Some(expr) => format!("({expr})::{t}"),
            None => "NULL".to_string(),
        })
        .collect();
    format!("INSERT INTO types VALUES ({row}, {})", vals.join(", "))
}

/// Expected text per (row id, column): the output function's text, via
/// concat() (which calls the output function; a ::text cast would trim char(n)).
fn expected_texts(c: &mut Client) -> BTreeMap<(i32, String), Option<String>> {
    let exprs: Vec<String> = COLUMNS
        .iter()
        .map(|(n, _, _, _)| format!("CASE WHEN num_nulls({n}) = 1 THEN NULL ELSE concat({n}) END"))
        .collect();
    let sql = format!("SELECT id, {} FROM types ORDER BY id", exprs.join(", "));
    let mut out = BTreeMap::new();
    for row in c.query(&sql, &[]).expect("expected values query") {
        let id: i32 = row.get(0);
        for (i, (n, _, _, _)) in COLUMNS.iter().enumerate() {
            out.insert((id, n.to_string()), row.get::<_, Option<String>>(i + 1));
        }
    }
    out
}

/// Catalog type names (with and without typmod) and oids per column.
fn catalog_types(c: &mut Client) -> BTreeMap<String, (String, String, u32)> {
    c.query(
        "SELECT attname::text, format_type(atttypid, atttypmod), format_type(atttypid, NULL),
                atttypid
           FROM pg_attribute WHERE attrelid = 'types'::regclass AND attnum > 0
                AND NOT attisdropped",
        &[],
    )
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), (unquoted(r.get(1)), unquoted(r.get(2)), r.get::<_, u32>(3))))
    .collect()
}

/// wal2json prints a quoted type name (`"char"`) without its quotes.
fn unquoted(t: String) -> String {
    match t.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => t,
    }
}

fn check_value(kind: Kind, got: &Value, want: &Option<String>) -> bool {
    let Some(want) = want else {
        return got.is_null();
    };
    match kind {
        Int => is_integer(got, want),
        Float4 => is_float4(got, want),
        Float8 => is_float8(got, want),
        Bool => got.as_bool() == Some(want == "t"),
        Text => got.as_str() == Some(want.as_str()),
        Bytea => want.strip_prefix("\\x").is_some_and(|digits| got.as_str() == Some(digits)),
    }
}

#[test]
fn every_builtin_type_round_trips() {
    let (_cluster, mut c) = plugin_cluster("dec_types");
    exec(&mut c, SETUP);
    exec(&mut c, &create_table_sql());
    exec(&mut c, "CREATE PUBLICATION types_pub FOR TABLE types");
    for row in 0..row_count() {
        exec(&mut c, &insert_sql(row));
    }
    let expected = expected_texts(&mut c);
    let catalog = catalog_types(&mut c);

    let rows = peek_changes(&mut c, "s", &opts(&[("include-type-oids", "1"), ("include-transaction", "0")]));
    let inserts: Vec<&Change> = rows.iter().filter(|r| r.action() == "I").collect();
    assert_eq!(inserts.len(), row_count(), "one I per row:\n{}", dump(&rows));

    let mut failures = Vec::new();
    for ins in &inserts {
        let doc = &ins.doc;
        let id: i32 = number_text(value(doc, "columns", "id")).and_then(|t| t.parse().ok()).expect("id is a number");
        let got_names = names(doc, "columns");
        let want_names: Vec<String> =
            std::iter::once("id".to_string()).chain(COLUMNS.iter().map(|c| c.0.to_string())).collect();
        if got_names != want_names {
            failures.push(format!("row {id}: column names {got_names:?}"));
            continue;
        }
        for e in entries(doc, "columns") {
            let name = e["name"].as_str().unwrap();
            let (typ, _, oid) = &catalog[name];
            if keys(e) != ["name", "type", "typeoid", "value"] {
                failures.push(format!("{name}: entry keys {:?}", keys(e)));
            }
            if e["type"].as_str() != Some(typ.as_str()) {
                failures.push(format!("{name}: type {} != catalog {typ:?}", e["type"]));
            }
            if !is_integer(&e["typeoid"], &oid.to_string()) {
                failures.push(format!("{name}: typeoid {} != {oid}", e["typeoid"]));
            }
            if name == "id" {
                continue;
            }
            let kind = COLUMNS.iter().find(|c| c.0 == name).unwrap().2;
            let want = &expected[&(id, name.to_string())];
            if !check_value(kind, &e["value"], want) {
                let shown: String = e["value"].to_string().chars().take(300).collect();
                failures.push(format!(
                    "row {id} {name} ({kind:?}): got {shown}, want {:?}",
                    want.as_ref().map(|w| w.chars().take(300).collect::<String>())
                ));
            }
        }
    }

    // include-typmod=0 is ignored in format-version 2, as by wal2json 2.x
    // (its format-version 1 effect: decoder_wal2json_oracle); include-types=0:
    // no type.
    let rows = peek_changes(&mut c, "s", &opts(&[("include-typmod", "0"), ("include-transaction", "0")]));
    for e in entries(&rows[0].doc, "columns") {
        let name = e["name"].as_str().unwrap();
        let (typ, _, _) = &catalog[name];
        if e["type"].as_str() != Some(typ.as_str()) {
            failures.push(format!("include-typmod=0 {name}: type {} != {typ:?}", e["type"]));
        }
    }
    let rows = peek_changes(&mut c, "s", &opts(&[("include-types", "0"), ("include-transaction", "0")]));
    for e in entries(&rows[0].doc, "columns") {
        if keys(e) != ["name", "value"] {
            failures.push(format!("include-types=0: entry keys {:?}", keys(e)));
            break;
        }
    }

    // Session settings that change PostgreSQL's own text output must not
    // change the stream: bytea is always hex, floats always round-trip.
    exec(&mut c, "SET bytea_output = 'escape'; SET extra_float_digits = 0;");
    let rows = peek_changes(&mut c, "s", &opts(&[("include-transaction", "0")]));
    for ins in rows.iter().filter(|r| r.action() == "I") {
        let id: i32 = number_text(value(&ins.doc, "columns", "id")).and_then(|t| t.parse().ok()).unwrap();
        for name in ["c_bytea", "c_float4", "c_float8"] {
            let kind = COLUMNS.iter().find(|c| c.0 == name).unwrap().2;
            let got = value(&ins.doc, "columns", name);
            let want = &expected[&(id, name.to_string())];
            if !check_value(kind, got, want) {
                failures.push(format!(
                    "with bytea_output=escape, extra_float_digits=0: row {id} {name}: got {}, want {want:?}",
                    got.to_string().chars().take(100).collect::<String>()
                ));
            }
        }
    }
    exec(&mut c, "RESET bytea_output; RESET extra_float_digits;");

    // The stream of logical_ext subscribers (publication_names, no
    // format-version: what every released subscriber sends) is version 2 and
    // keeps bytea's `\x`, which their apply feeds to bytea's input function.
    let rows = peek_changes_as_given(&mut c, "s", &opts(&[("publication_names", "types_pub")]));
    let inserts: Vec<&Change> = rows.iter().filter(|r| r.action() == "I").collect();
    assert_eq!(inserts.len(), row_count(), "publication_names implies format-version 2:\n{}", dump(&rows));
    for ins in inserts {
        let id: i32 = number_text(value(&ins.doc, "columns", "id")).and_then(|t| t.parse().ok()).unwrap();
        let got = value(&ins.doc, "columns", "c_bytea");
        let want = &expected[&(id, "c_bytea".to_string())];
        if !check_value(Text, got, want) {
            failures.push(format!("publication_names: row {id} c_bytea: got {got}, want {want:?} (with \\x)"));
        }
    }

    assert!(failures.is_empty(), "{} mismatch(es):\n{}", failures.len(), failures.join("\n"));
}

/// The same values through UPDATE (new row and, with REPLICA IDENTITY FULL,
/// the old row in `identity`) and DELETE: identity values are encoded like
/// column values.
#[test]
fn types_in_identity_of_full_table() {
    let (_cluster, mut c) = plugin_cluster("dec_types_identity");
    exec(&mut c, SETUP);
    exec(&mut c, &create_table_sql());
    for row in 0..row_count() {
        exec(&mut c, &insert_sql(row));
    }
    exec(&mut c, "ALTER TABLE types REPLICA IDENTITY FULL; UPDATE types SET id = id + 1000;");
    let expected = expected_texts(&mut c);
    exec(&mut c, "DELETE FROM types");
    let rows = get_changes(&mut c, "s", &opts(&[("include-transaction", "0")]));
    let n = row_count();
    assert_eq!(rows.len(), 3 * n, "\n{}", actions(&rows));
    let mut failures = Vec::new();
    for r in &rows[n..] {
        let fields: &[&str] = if r.action() == "U" { &["columns", "identity"] } else { &["identity"] };
        for field in fields {
            for e in entries(&r.doc, field) {
                let name = e["name"].as_str().unwrap();
                if name == "id" {
                    continue;
                }
                let id: i32 = number_text(value(&r.doc, field, "id")).and_then(|t| t.parse().ok()).unwrap();
                let key = (if id >= 1000 { id } else { id + 1000 }, name.to_string());
                let kind = COLUMNS.iter().find(|c| c.0 == name).unwrap().2;
                if !check_value(kind, &e["value"], &expected[&key]) {
                    failures.push(format!(
                        "{} {field}.{name}: got {}",
                        r.action(),
                        e["value"].to_string().chars().take(200).collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Decodes the slot's pending changes (peeked) and compares each row's
/// `columns` with their text in this session: `select` returns the row id,
/// then one text per column of `columns`. Returns the mismatches as (id,
/// column, decoded value, expected text).
fn decoded_unlike_text(c: &mut Client, select: &str, columns: &[&str]) -> Vec<(i32, String, Value, Option<String>)> {
    let expected: BTreeMap<i32, Vec<Option<String>>> = c
        .query(select, &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (1..=columns.len()).map(|i| r.get(i)).collect()))
        .collect();
    let rows = peek_changes(c, "s", &opts(&[("include-transaction", "0")]));
    assert_eq!(rows.len(), expected.len(), "one I per row");
    let mut mismatches = Vec::new();
    for r in &rows {
        let id: i32 = number_text(value(&r.doc, "columns", "id")).and_then(|t| t.parse().ok()).unwrap();
        for (col, want) in columns.iter().zip(&expected[&id]) {
            let got = value(&r.doc, "columns", col);
            if got.as_str() != want.as_deref() {
                mismatches.push((id, col.to_string(), got.clone(), want.clone()));
            }
        }
    }
    mismatches
}

/// `numeric` and `jsonb` are printed from their stored bytes (src/decoder/
/// numeric.rs, jsonb.rs), not by their output functions: many generated
/// values of every shape (short and long numeric formats, special values,
/// nested and wide jsonb crossing the stored offset stride, escapes, numbers
/// inside jsonb) must still print exactly as the output functions do, and
/// values left to the output functions (too deep, too large, compressed or
/// toasted) as well.
#[test]
fn numeric_and_jsonb_print_as_their_output_functions() {
    let (_cluster, mut c) = plugin_cluster("dec_types_nj");
    exec(&mut c, "CREATE TABLE nj (id int PRIMARY KEY, n numeric, j jsonb)");
    let numerics = [
        // every weight and scale from 1e-40 to 1e+40, both signs
        "((g * 7919) % 1000003 - 500000) * 10::numeric ^ ((g % 81) - 40)",
        "round(((g * 104729) % 99991)::numeric / 7, g % 30)",
        "(g % 3 - 1) * 10::numeric ^ (g % 300) + g",
        "('0.' || repeat('0', g % 50) || g)::numeric",
        "round(-(g::numeric / 3), 0)",
    ];
    let specials = [
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
        "0",
        "'-0.000'",
        "'1e-1000'",
        "'1e1000'",
        "'-1e-16000'",
        "repeat('12345', 200)::numeric",
        "'99999999999999999999.99999999999999999999'",
        "0.1",
        "'10000'",
    ];
    let jsonbs = [
        "jsonb_build_object('id', g, 'tag', 'item-' || g % 10, 'ok', g % 3 = 0, 'f', g / 7.0, 'n', NULL)",
        "jsonb_build_array(g, -g * 1.5, 'x' || chr(1 + g % 127) || 'y', jsonb_build_object('k', repeat('é', g % 5)))",
        "(SELECT jsonb_object_agg('key' || i, i * g) FROM generate_series(1, g % 60) i)",
        "(SELECT jsonb_agg(CASE i % 4 WHEN 0 THEN to_jsonb(i) WHEN 1 THEN to_jsonb('s' || i) \
           WHEN 2 THEN 'null'::jsonb ELSE jsonb_build_array(i, true) END) FROM generate_series(1, g % 120) i)",
        "to_jsonb(((g * 7919) % 1000003 - 500000) * 10::numeric ^ ((g % 41) - 20))",
    ];
    let json_specials = [
        "'{}'",
        "'[]'",
        "'\"\"'",
        "'null'",
        "'true'",
        "'-0.0'",
        "'1e-30'",
        "'[1e400]'",
        r#"'{"q\"uote": "back\\slash \"quoted\" \n\t\r\b\f \u0001\u001f \u00e9 ☃ 😀", "": {"": []}}'"#,
        "(repeat('[', 150) || '1' || repeat(']', 150))::jsonb",
        "(repeat('[', 250) || '1' || repeat(']', 250))::jsonb",
        "(SELECT jsonb_agg(md5(i::text)) FROM generate_series(1, 40000) i)",
        "jsonb_build_object('long', repeat('compressible ', 20000))",
    ];
    let mut id = 0;
    let mut insert = |c: &mut Client, n: &str, j: &str, rows: i32| {
        let j = format!("coalesce(({j})::jsonb, '\"no rows\"')");
        exec(c, &format!("INSERT INTO nj SELECT {id} + g, ({n})::numeric, {j} FROM generate_series(1, {rows}) g"));
        id += rows;
    };
    for (i, n) in numerics.iter().enumerate() {
        insert(&mut c, n, jsonbs[i % jsonbs.len()], 200);
    }
    for (i, j) in jsonbs.iter().enumerate() {
        insert(&mut c, numerics[i % numerics.len()], j, 200);
    }
    for (n, j) in specials.iter().zip(json_specials.iter().cycle()) {
        insert(&mut c, n, j, 1);
    }
    for (j, n) in json_specials.iter().zip(specials.iter().cycle()) {
        insert(&mut c, n, j, 1);
    }
    let cut = |s: &str| s.chars().take(300).collect::<String>();
    let failures: Vec<String> = decoded_unlike_text(&mut c, "SELECT id, concat(n), concat(j) FROM nj", &["n", "j"])
        .into_iter()
        .map(|(id, col, got, want)| {
            format!("id {id} {col}: got {}, want {:?}", cut(&got.to_string()), cut(&want.unwrap_or_default()))
        })
        .collect();
    assert!(failures.is_empty(), "{} mismatch(es):\n{}", failures.len(), failures.join("\n"));
}

/// `timestamptz` and `timestamp` are printed from PostgreSQL's broken-down
/// time under `DateStyle` ISO (src/decoder/timestamp.rs), and by their
/// output functions otherwise: in time zones with DST, odd offsets
/// (+05:30, -03:30, +12:45, LMT offsets in seconds), BC and far-future
/// dates, fractions of every length, and
/// under other date styles, every value must print as the output function
/// prints it in the decoding session.
#[test]
fn timestamps_print_as_their_output_functions() {
    let (_cluster, mut c) = plugin_cluster("dec_types_ts");
    exec(&mut c, "CREATE TABLE ts (id int PRIMARY KEY, tz timestamptz, t timestamp)");
    exec(
        &mut c,
        "INSERT INTO ts SELECT g, v, v AT TIME ZONE 'UTC' FROM (
           SELECT g, timestamptz '1850-01-01 00:00:00+00'
                     + g * interval '17 days 5 hours 7 minutes 11 seconds' + (g * 7919 % 1000000) * interval '1 microsecond' AS v
           FROM generate_series(1, 4000) g) s;
         INSERT INTO ts SELECT 10000 + g, v, v AT TIME ZONE 'UTC' FROM (
           SELECT g, timestamptz '2016-12-31 23:59:58+00' + g * interval '250 milliseconds' AS v
           FROM generate_series(1, 20) g) s;
         INSERT INTO ts VALUES
           (20001, 'infinity', 'infinity'), (20002, '-infinity', '-infinity'),
           (20003, '4713-01-01 00:00:00+00 BC', '4713-01-01 00:00:00 BC'),
           (20004, '0001-12-31 23:59:59.9+00 BC', '0001-12-31 23:59:59.9 BC'),
           (20005, '294276-12-31 23:59:59.999999+00', '294276-12-31 23:59:59.999999'),
           (20006, '1900-01-01 00:00:00.000001+00', '1900-01-01 00:00:00.000001'),
           (20007, '2000-01-01 00:00:00+00', '2000-01-01 00:00:00'),
           (20008, NULL, NULL)",
    );
    let mut failures = Vec::new();
    let zones = [
        "UTC",
        "Europe/Berlin",
        "Asia/Kolkata",
        "America/St_Johns",
        "Africa/Monrovia",
        "Pacific/Chatham",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
        "Europe/Dublin",
        "<+0330>-03:30",
    ];
    let styles = ["ISO, MDY", "ISO, DMY", "SQL, DMY", "Postgres, MDY", "German"];
    for zone in zones {
        for style in styles.iter().filter(|s| s.starts_with("ISO") || zone == "Europe/Berlin") {
            exec(&mut c, &format!("SET TimeZone = '{zone}'; SET DateStyle = '{style}'"));
            for (id, col, got, want) in
                decoded_unlike_text(&mut c, "SELECT id, tz::text, t::text FROM ts", &["tz", "t"])
            {
                failures.push(format!("{zone} / {style}: id {id} {col}: got {got}, want {want:?}"));
            }
        }
    }
    failures.truncate(40);
    assert!(failures.is_empty(), "mismatches (first 40):\n{}", failures.join("\n"));
}
