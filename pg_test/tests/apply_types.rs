//! Every built-in scalar type (plus arrays, a range, a multirange, an enum,
//! domains and a composite) arrives exactly: after the apply worker has
//! caught up, publisher and subscriber give the same md5 of
//! `string_agg(t::text, '|' ORDER BY id)`, for inserted rows and again after
//! every value has been replaced by an UPDATE.

use logical_ext_pg_test::replication::*;
use logical_ext_pg_test::*;

/// (column, SQL type, values as SQL expressions). Row i uses value i of
/// every column (NULL when the column has fewer values); one extra row is
/// all NULL.
const COLUMNS: &[(&str, &str, &[&str])] = &[
    ("c_int2", "int2", &["-32768", "32767", "0"]),
    ("c_int4", "int4", &["-2147483648", "2147483647", "0"]),
    ("c_int8", "int8", &["-9223372036854775808", "9223372036854775807", "0"]),
    ("c_oid", "oid", &["4294967295", "0", "12345"]),
    ("c_domain", "posint", &["1", "2147483647"]),
    ("c_domain_text", "shorttext", &["'dom'"]),
    (
        "c_float4",
        "float4",
        &["1.5", "'-0'", "'NaN'", "'Infinity'", "'-Infinity'", "3.4028235e38", "1e-45", "0.1", "-123456.79"],
    ),
    (
        "c_float8",
        "float8",
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
            "-1.5e-7",
            "1e-310",
            "2.2250738585072014e-308",
        ],
    ),
    (
        "c_numeric",
        "numeric",
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
    ("c_numeric_typmod", "numeric(10,2)", &["3.1", "-99999999.99"]),
    ("c_bool", "bool", &["true", "false"]),
    (
        "c_text",
        "text",
        &[
            r#"E'quote " apostrophe '' backslash \\ slash / tab \t newline \n cr \r'"#,
            r"E'controls \x01\x02\x08\x0c\x1b\x1f del \x7f end'",
            "'unicode é ß 漢字 ☃ 𝄞 😀 \u{200b} \u{2028}'",
            "''",
            "repeat('long ', 5000)",
            "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) i)",
            "'{\"looks\": \"like json\"}'",
            "'NULL'",
            "'null'",
        ],
    ),
    ("c_varchar", "varchar(20)", &["'abc'", "'trailing  '", "''"]),
    ("c_char", "char(5)", &["'ab'", "'abcde'", "''"]),
    ("c_qchar", "\"char\"", &["'x'"]),
    ("c_name", "name", &["'pg_name'", "'With Space'"]),
    ("c_bytea", "bytea", &[r"'\x00ff10'::bytea", "''::bytea", "decode(repeat('ab', 3000), 'hex')", r"'\x5c22'::bytea"]),
    ("c_date", "date", &["'2026-11-22'", "'infinity'", "'-infinity'", "'4713-01-01 BC'"]),
    ("c_time", "time", &["'12:34:56.789'", "'24:00:00'", "'00:00'"]),
    ("c_timetz", "timetz", &["'12:34:56+05:30'", "'23:59:59.999999-12'"]),
    (
        "c_timestamp",
        "timestamp",
        &["'2026-11-22 10:00:00.123456'", "'infinity'", "'-infinity'", "'0099-01-01 00:00 BC'"],
    ),
    (
        "c_timestamptz",
        "timestamptz",
        &[
            "'2026-11-22 10:00:00.5+02'",
            "'-infinity'",
            "'1970-01-01 00:00:00+00'",
            "'2000-02-29 23:59:59.999999-09:30'",
            "'0099-01-01 00:00:00+00 BC'",
            "'9999-12-31 23:59:59.999999+14'",
        ],
    ),
    ("c_timestamptz_typmod", "timestamptz(2)", &["'2026-11-22 10:00:00.555+02'", "'1999-12-31 23:59:59.999'"]),
    ("c_interval", "interval", &["'1 year 2 mons 3 days 04:05:06.789'", "'-1 day'", "'0'"]),
    ("c_interval_typmod", "interval day to second(2)", &["'3 days 01:02:03.456'"]),
    ("c_uuid", "uuid", &["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
    ("c_json", "json", &[r#"'{"a": [1, 2.50, "x\"y"],  "b" : null}'"#, "'[]'", "'\"just a string\"'", "'null'"]),
    ("c_jsonb", "jsonb", &[r#"'{"b": 1, "a": "é\n", "c": [1.50, true, null]}'"#, "'[]'", "'3'", "'null'"]),
    ("c_xml", "xml", &[r#"'<a b="c">text &amp; more</a>'"#, "'plain text node'"]),
    ("c_inet", "inet", &["'192.168.0.1/24'", "'::1'", "'10.1.2.3'"]),
    ("c_cidr", "cidr", &["'10.0.0.0/8'", "'2001:db8::/32'"]),
    ("c_macaddr", "macaddr", &["'08:00:2b:01:02:03'"]),
    ("c_macaddr8", "macaddr8", &["'08:00:2b:01:02:03:04:05'"]),
    ("c_money", "money", &["12.34", "-1000000.5"]),
    ("c_bit", "bit(4)", &["B'1010'", "B'0000'"]),
    ("c_varbit", "varbit(8)", &["B'101'", "B''"]),
    ("c_point", "point", &["'(1.5,-2)'"]),
    ("c_line", "line", &["'{1,2,3}'"]),
    ("c_lseg", "lseg", &["'[(0,0),(1,1)]'"]),
    ("c_box", "box", &["'(1,1),(0,0)'"]),
    ("c_path", "path", &["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1),(2,0))'"]),
    ("c_polygon", "polygon", &["'((0,0),(1,1),(2,0))'"]),
    ("c_circle", "circle", &["'<(1,2),3>'"]),
    ("c_tsvector", "tsvector", &["'a fat cat:1 sat:2B on''s mat'", "''"]),
    ("c_tsquery", "tsquery", &["'fat & (rat | cat) & !dog'"]),
    ("c_int4range", "int4range", &["'[1,10)'", "'empty'", "'(,5]'"]),
    ("c_tstzrange", "tstzrange", &["'[2026-01-01,2026-02-01)'", "'(,)'"]),
    ("c_numrange", "numrange", &["'(1.5,2.5]'"]),
    ("c_int4multirange", "int4multirange", &["'{[1,3),[5,7)}'", "'{}'"]),
    ("c_int_array", "int[]", &["'{1,2,NULL,3}'", "'{{1,2},{3,4}}'", "'{}'", "'[0:1]={7,8}'"]),
    ("c_text_array", "text[]", &[r#"'{"a,b","c\"d",NULL,"NULL","x y","é\\z"}'"#, "'{}'"]),
    ("c_float8_array", "float8[]", &["'{0.1,-0,NaN,Infinity,1e300}'"]),
    ("c_varchar_array", "varchar(3)[]", &["'{ab,cd}'"]),
    ("c_enum", "mood", &["'happy'", "'so-so'"]),
    ("c_composite", "comp", &["ROW(1, 'x \"y\" z')::comp", "ROW(NULL, NULL)::comp", "ROW(-1, '')::comp"]),
    ("c_pg_lsn", "pg_lsn", &["'16/B374D848'", "'0/0'"]),
    ("c_regclass", "regclass", &["'pg_class'"]),
    ("c_txid", "pg_snapshot", &["'10:20:10,14,15'"]),
];

const SETUP: &str = "
    CREATE DOMAIN posint AS int CHECK (VALUE > 0);
    CREATE DOMAIN shorttext AS varchar(10);
    CREATE TYPE mood AS ENUM ('sad', 'so-so', 'happy');
    CREATE TYPE comp AS (a int, b text);
";

fn create_table_sql() -> String {
    let cols: Vec<String> = COLUMNS.iter().map(|(n, t, _)| format!("{n} {t}")).collect();
    format!("CREATE TABLE types (id int PRIMARY KEY, {})", cols.join(", "))
}

fn row_count() -> usize {
    COLUMNS.iter().map(|c| c.2.len()).max().unwrap() + 1
}

fn insert_sql(row: usize) -> String {
    let vals: Vec<String> = COLUMNS
        .iter()
        .map(|(_, t, v)| match v.get(row) {
            Some(expr) => format!("({expr})::{t}"),
            None => "NULL".to_string(),
        })
        .collect();
    format!("INSERT INTO types VALUES ({row}, {})", vals.join(", "))
}

/// Per column, which rows differ between the two sides (for a readable
/// failure message).
fn differing_columns(pair: &Pair) -> Vec<String> {
    let mut out = Vec::new();
    for (n, _, _) in COLUMNS {
        let sql = format!("SELECT id, {n} AS v FROM types");
        let p = digest(&mut pair.pub_client(), &sql, "id");
        let s = digest(&mut pair.sub_client(), &sql, "id");
        if p != s {
            let show = format!(
                "SELECT string_agg(id || '=' || coalesce(left({n}::text, 80), 'NULL'), ' ; ' ORDER BY id) FROM types"
            );
            out.push(format!(
                "{n}:\n  publisher:  {}\n  subscriber: {}",
                query_string(&mut pair.pub_client(), &show),
                query_string(&mut pair.sub_client(), &show)
            ));
        }
    }
    out
}

fn assert_types_same(pair: &Pair, when: &str) {
    let p = digest(&mut pair.pub_client(), "SELECT * FROM types", "id");
    let s = digest(&mut pair.sub_client(), "SELECT * FROM types", "id");
    if p != s {
        panic!("{when}: subscriber {s} != publisher {p}; differing columns:\n{}", differing_columns(pair).join("\n"));
    }
}

#[test]
fn every_builtin_type_arrives_exactly() {
    let pair = Pair::start("apply_types");
    pair.both_exec(SETUP);
    pair.both_exec(&create_table_sql());
    pair.pub_exec("CREATE PUBLICATION p FOR TABLE types");
    pair.subscribe("s", &["p"], "");
    pair.wait_streaming("s");

    for row in 0..row_count() {
        pair.pub_exec(&insert_sql(row));
    }
    pair.wait_caught_up("s");
    assert_eq!(count(&mut pair.sub_client(), "types"), row_count() as i64);
    assert_types_same(&pair, "after INSERT");

    // Every value moves to the next row: each UPDATE sends a whole new row.
    let cols: Vec<String> = COLUMNS.iter().map(|(n, _, _)| format!("{n} = o.{n}")).collect();
    let n = row_count();
    pair.pub_exec(&format!("UPDATE types t SET {} FROM types o WHERE o.id = (t.id + 1) % {n}", cols.join(", ")));
    pair.wait_caught_up("s");
    assert_types_same(&pair, "after UPDATE");

    let st = pair.status("s");
    assert!(st.last_error.is_none(), "{st:#?}");
    assert_eq!(st.applied_changes, 2 * n as i64, "{st:#?}");
}
