//! What a copy asks the publisher, as SQL text (pure, unit-tested): the
//! tables of the subscription's publications, one table's published columns
//! and row filters (PostgreSQL 15's `pg_publication_tables` lists both,
//! `attnames` holding every column when a publication has no column list),
//! and the `COPY ... TO STDOUT` that reads exactly the published rows and
//! columns. The replication connection runs with `search_path = ''`, so
//! everything is schema-qualified.

use crate::apply::walrcv::{quote_ident, quote_literal};

fn pub_list(pubs: &[String]) -> String {
    pubs.iter().map(|p| quote_literal(p)).collect::<Vec<_>>().join(", ")
}

/// `schemaname, tablename` of every table the publications cover, except
/// logical_ext's own tables (per-node bookkeeping: never copied or streamed,
/// whatever a FOR ALL TABLES publication says) and tools' tables that no
/// publication names: a member of an extension, or in a schema that is one,
/// is not covered by `FOR ALL TABLES` or `TABLES IN SCHEMA` — the rule of
/// the output plugin (`decoder/publication.rs`, `tool_relation`).
pub(crate) fn tables_query(pubs: &[String]) -> String {
    let list = pub_list(pubs);
    format!(
        "SELECT DISTINCT pt.schemaname::text, pt.tablename::text FROM pg_catalog.pg_publication_tables pt \
         JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         WHERE pt.pubname IN ({list}) AND pt.schemaname <> 'logical_ext' \
         AND (NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.deptype = 'e' \
                 AND ((d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid) \
                   OR (d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objid = n.oid))) \
              OR EXISTS (SELECT FROM pg_catalog.pg_publication_rel pr \
                 JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid \
                 WHERE pr.prrelid = c.oid AND p.pubname IN ({list}))) \
         ORDER BY 1, 2"
    )
}

fn table_filter(pubs: &[String], schema: &str, table: &str) -> String {
    format!(
        "pubname IN ({}) AND schemaname = {} AND tablename = {}",
        pub_list(pubs),
        quote_literal(schema),
        quote_literal(table)
    )
}

/// One row, `true` when logical_ext's catalog exists on the publisher (its
/// subscriptions write tables there too).
pub(crate) const HAS_LOGICAL_EXT_QUERY: &str =
    "SELECT pg_catalog.to_regclass('logical_ext.subscription_tables') IS NOT NULL";

/// PostgreSQL 16's rule for `origin = none` with `copy_data`
/// (`check_publications_origin`): the names of the publications that cover
/// a table some subscription on the publisher writes into (native ones in
/// `pg_subscription_rel`; logical_ext's in its `subscription_tables` when
/// `logical_ext` is installed there) — a copy cannot tell such rows' origin.
/// Tables in `except` (schema, table) are not copied again (a refresh keeps
/// the ones it has) and are left out.
pub(crate) fn foreign_origin_query(pubs: &[String], logical_ext: bool, except: &[(String, String)]) -> String {
    let written = if logical_ext {
        "(EXISTS (SELECT FROM pg_catalog.pg_subscription_rel ps WHERE ps.srrelid = gpt.relid) \
         OR EXISTS (SELECT FROM logical_ext.subscription_tables lt WHERE lt.relid = gpt.relid))"
    } else {
        "EXISTS (SELECT FROM pg_catalog.pg_subscription_rel ps WHERE ps.srrelid = gpt.relid)"
    };
    let mut sql = format!(
        "SELECT DISTINCT p.pubname::text FROM pg_catalog.pg_publication p, \
         LATERAL pg_catalog.pg_get_publication_tables(p.pubname::text) gpt \
         JOIN pg_catalog.pg_class c ON c.oid = gpt.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE p.pubname IN ({}) AND {written}",
        pub_list(pubs)
    );
    for (schema, table) in except {
        sql.push_str(&format!(
            " AND NOT (n.nspname = {} AND c.relname = {})",
            quote_literal(schema),
            quote_literal(table)
        ));
    }
    sql.push_str(" ORDER BY 1");
    sql
}

/// One row: the table's `relkind` on the publisher.
pub(crate) fn relkind_query(schema: &str, table: &str) -> String {
    format!(
        "SELECT c.relkind::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = {} AND c.relname = {}",
        quote_literal(schema),
        quote_literal(table)
    )
}

/// The published columns (union over the publications), in table order;
/// generated columns are never sent (the subscriber computes its own).
pub(crate) fn columns_query(pubs: &[String], schema: &str, table: &str) -> String {
    format!(
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = {}::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
         AND a.attname IN (SELECT pg_catalog.unnest(attnames) FROM pg_catalog.pg_publication_tables WHERE {}) \
         ORDER BY a.attnum",
        quote_literal(&format!("{}.{}", quote_ident(schema), quote_ident(table))),
        table_filter(pubs, schema, table)
    )
}

/// One row per publication: its row filter (NULL: none).
pub(crate) fn filters_query(pubs: &[String], schema: &str, table: &str) -> String {
    format!("SELECT rowfilter FROM pg_catalog.pg_publication_tables WHERE {}", table_filter(pubs, schema, table))
}

/// The row filter of a table published by several publications: a row is
/// sent when any publication's filter passes it, so no filter at all when
/// one publication has none.
pub(crate) fn combine_filters(filters: &[Option<String>]) -> Option<String> {
    if filters.is_empty() || filters.iter().any(Option::is_none) {
        return None;
    }
    let mut parts: Vec<String> = filters.iter().flatten().map(|f| format!("({f})")).collect();
    parts.sort();
    parts.dedup();
    Some(parts.join(" OR "))
}

/// The command that streams the published part of a table. A plain
/// `COPY t (cols)` when nothing is filtered (the fastest path); a query
/// otherwise, and always for partitioned tables (COPY cannot read them
/// directly; the query reads every partition).
pub(crate) fn copy_command(
    schema: &str,
    table: &str,
    columns: &[String],
    filter: Option<&str>,
    partitioned: bool,
) -> String {
    let rel = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let cols = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    match (filter, partitioned) {
        (None, false) => format!("COPY {rel} ({cols}) TO STDOUT"),
        _ => {
            let only = if partitioned { "" } else { "ONLY " };
            let filter = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
            format!("COPY (SELECT {cols} FROM {only}{rel}{filter}) TO STDOUT")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn filters_combine_like_pgoutput() {
        assert_eq!(combine_filters(&[]), None);
        assert_eq!(combine_filters(&[Some("a > 1".into()), None]), None);
        assert_eq!(combine_filters(&[Some("a > 1".into())]).as_deref(), Some("(a > 1)"));
        assert_eq!(
            combine_filters(&[Some("b = 2".into()), Some("a > 1".into()), Some("b = 2".into())]).as_deref(),
            Some("(a > 1) OR (b = 2)")
        );
    }

    #[test]
    fn plain_copy_without_filter() {
        assert_eq!(
            copy_command("public", "t", &s(&["id", "v"]), None, false),
            "COPY \"public\".\"t\" (\"id\", \"v\") TO STDOUT"
        );
    }

    #[test]
    fn query_copy_with_filter_or_partitions() {
        assert_eq!(
            copy_command("s", "t\"x", &s(&["id"]), Some("(id > 5)"), false),
            "COPY (SELECT \"id\" FROM ONLY \"s\".\"t\"\"x\" WHERE (id > 5)) TO STDOUT"
        );
        assert_eq!(copy_command("s", "p", &s(&["id"]), None, true), "COPY (SELECT \"id\" FROM \"s\".\"p\") TO STDOUT");
    }

    #[test]
    fn foreign_origin_query_follows_pg16() {
        let q = foreign_origin_query(&s(&["a'b"]), false, &[]);
        assert!(q.contains("IN ('a''b')") && q.contains("pg_subscription_rel"), "{q}");
        assert!(!q.contains("logical_ext.subscription_tables"), "{q}");
        let q = foreign_origin_query(&s(&["p"]), true, &[("public".into(), "o'k".into())]);
        assert!(q.contains("logical_ext.subscription_tables"), "{q}");
        assert!(q.contains("AND NOT (n.nspname = 'public' AND c.relname = 'o''k')"), "{q}");
    }

    #[test]
    fn queries_quote_names() {
        let q = columns_query(&s(&["p'1"]), "my schema", "T");
        assert!(q.contains("'\"my schema\".\"T\"'::pg_catalog.regclass"), "{q}");
        assert!(q.contains("pubname IN ('p''1')"), "{q}");
        assert!(tables_query(&s(&["a", "b"])).contains("pubname IN ('a', 'b')"));
        assert!(tables_query(&s(&["a"])).contains("schemaname <> 'logical_ext'"));
        // Tools' tables: left out unless a publication names them.
        let q = tables_query(&s(&["a"]));
        assert!(q.contains("d.deptype = 'e'") && q.contains("pg_publication_rel"), "{q}");
    }
}
