//! pgoutput as the oracle of `publication_names`: one `pgoutput` slot and one
//! `logical_ext` slot read the same workload, both streams are normalised
//! into the same text form and compared transaction by transaction.
//!
//! Normalisation goes through ONE table, [`DIFFERENCES`]: every way in which
//! the two streams legitimately differ is listed there with the rule that
//! removes it. Anything else that differs is a bug in one of them (so far,
//! always in ours).
//!
//! The normal form of a transaction is its xid and its changes, each a line:
//!
//! ```text
//! I s1.t [id="1",a="2",b=NULL]
//! U s1.t [id="1",a="3"] toast[big] key[id="1"]
//! D s1.t key[id="1",a="3",b=NULL]
//! T cascade=false restart=false [public.a,s1.t]
//! ```
//!
//! [`Case::run`] runs a case (setup, slots, workload, both reads) in a fresh
//! database of a shared cluster; `generator.rs` builds random cases.

use crate::pgoutput::{self, OldRow, Relation, Value as PgValue};
use crate::{Client, Cluster, describe_error, exec};
use serde_json::Value;
use std::fmt::Write as _;

/// The documented differences between pgoutput's and logical_ext's streams,
/// and how the normal form removes each. (Referenced by name below.)
pub const DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "values",
        "pgoutput sends every value as its output function's text; logical_ext prints JSON (numbers, true/false, strings)",
        "both sides are compared as text: a JSON number by its digits, true/false as t/f, a string as itself",
    ),
    (
        "key-from-new",
        "an UPDATE that keeps its replica identity key logs no old key: pgoutput sends none, logical_ext prints the key taken from the new row (wal2json's rule)",
        "pgoutput's key of such an UPDATE is read from its new row (the columns flagged as identity in the Relation message)",
    ),
    (
        "toast-from-full-old",
        "an unchanged TOAST value under REPLICA IDENTITY FULL: pgoutput sends `u`, logical_ext prints the value from the old row",
        "pgoutput's `u` is replaced by the old row's value when an `O` old row holds it",
    ),
    (
        "truncate-per-relation",
        "pgoutput sends one TRUNCATE message listing its relations; logical_ext one T document per relation (same lsn)",
        "logical_ext's consecutive T documents of one lsn are merged; relation names are sorted on both sides",
    ),
    (
        "ddl-and-messages",
        "logical_ext prints DDL events and logical messages; pgoutput (without `messages`) does not",
        "DDL and M documents are dropped",
    ),
    (
        "own-tables",
        "logical_ext never streams its own tables (schema logical_ext, e.g. the DDL log); pgoutput publishes them FOR ALL TABLES",
        "pgoutput's changes of relations in schema logical_ext are dropped",
    ),
    (
        "tool-tables",
        "logical_ext does not publish a tool's table (a member of an extension, or in a schema that is one: pg_cron's cron.job, pg_repack's repack.log_N) through FOR ALL TABLES or TABLES IN SCHEMA, only when a named publication lists it; pgoutput publishes it",
        "pgoutput's changes of such relations are dropped unless a named publication lists the relation itself (catalog read after the workload)",
    ),
    (
        "empty-transactions",
        "neither should send a transaction without changes; the rule is applied after the drops above",
        "transactions without changes are dropped on both sides",
    ),
];

/// A normalised transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NTxn {
    pub xid: u32,
    pub changes: Vec<String>,
}

/// A stream as compared: the transactions, or the read's error (whose text
/// is not compared: both failing is agreement).
pub type Normal = Result<Vec<NTxn>, String>;

/// A value's text as compared and printed: quoted; a long one shortened to
/// its start, length and hash (TOASTed values would drown the report).
pub fn quote(s: &str) -> String {
    if s.len() <= 64 {
        return serde_json::to_string(s).expect("a string serialises");
    }
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let head: String = s.chars().take(12).collect();
    format!("{}…[{} bytes, fnv {hash:016x}]", serde_json::to_string(&head).expect("a string serialises"), s.len())
}

/// logical_ext's own schema: its tables are never streamed ("own-tables").
const OWN_SCHEMA: &str = "logical_ext";

fn json_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => quote(if *b { "t" } else { "f" }),
        Value::Number(n) => quote(&n.to_string()),
        Value::String(s) => quote(s),
        other => quote(&other.to_string()),
    }
}

fn pg_text(v: &PgValue) -> String {
    match v {
        PgValue::Null => "NULL".into(),
        PgValue::Unchanged => "<unchanged>".into(),
        PgValue::Text(s) => quote(s),
    }
}

fn row_line(items: &[(String, String)]) -> String {
    let parts: Vec<String> = items.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("[{}]", parts.join(","))
}

fn change_line(
    action: &str,
    table: &str,
    columns: Option<&[(String, String)]>,
    toast: &[String],
    key: Option<&[(String, String)]>,
) -> String {
    let mut s = format!("{action} {table}");
    if let Some(c) = columns {
        s.push(' ');
        s.push_str(&row_line(c));
    }
    if !toast.is_empty() {
        let _ = write!(s, " toast[{}]", toast.join(","));
    }
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        let _ = write!(s, " key{}", row_line(k));
    }
    s
}

fn truncate_line(cascade: bool, restart: bool, mut names: Vec<String>) -> String {
    names.sort();
    format!("T cascade={cascade} restart={restart} [{}]", names.join(","))
}

/// Normalise logical_ext's documents (read with `include-xids` and
/// `include-lsn`).
pub fn normalise_logical_ext(docs: &[Value]) -> Vec<NTxn> {
    let mut out = Vec::new();
    let mut cur: Option<NTxn> = None;
    // "truncate-per-relation": (lsn, cascade, restart, names) being merged.
    let mut pending_t: Option<(String, bool, bool, Vec<String>)> = None;
    for d in docs {
        let action = d["action"].as_str().unwrap_or("?");
        if action != "T"
            && let Some((_, c, r, names)) = pending_t.take()
            && let Some(t) = cur.as_mut()
        {
            t.changes.push(truncate_line(c, r, names));
        }
        let table = format!("{}.{}", d["schema"].as_str().unwrap_or("?"), d["table"].as_str().unwrap_or("?"));
        let items = |field: &str| -> Option<Vec<(String, String)>> {
            d.get(field)?.as_array().map(|a| {
                a.iter().map(|e| (e["name"].as_str().unwrap_or("?").to_string(), json_text(&e["value"]))).collect()
            })
        };
        let toast: Vec<String> = d
            .get("unchanged_toast")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|n| n.as_str().unwrap_or("?").to_string()).collect())
            .unwrap_or_default();
        match action {
            "B" => cur = Some(NTxn { xid: d["xid"].as_u64().unwrap_or(0) as u32, changes: Vec::new() }),
            "C" => out.extend(cur.take()),
            // "ddl-and-messages"
            "M" | "DDL" => {}
            "I" => {
                let line = change_line("I", &table, items("columns").as_deref(), &toast, None);
                if let Some(t) = cur.as_mut() {
                    t.changes.push(line);
                }
            }
            "U" => {
                let line = change_line("U", &table, items("columns").as_deref(), &toast, items("identity").as_deref());
                if let Some(t) = cur.as_mut() {
                    t.changes.push(line);
                }
            }
            "D" => {
                let line = change_line("D", &table, None, &[], items("identity").as_deref());
                if let Some(t) = cur.as_mut() {
                    t.changes.push(line);
                }
            }
            "T" => {
                let lsn = d["lsn"].as_str().unwrap_or("").to_string();
                let c = d["cascade"].as_bool().unwrap_or(false);
                let r = d["restart_identity"].as_bool().unwrap_or(false);
                match pending_t.as_mut() {
                    Some(p) if p.0 == lsn => p.3.push(table),
                    _ => {
                        if let Some((_, c0, r0, names)) = pending_t.take()
                            && let Some(t) = cur.as_mut()
                        {
                            t.changes.push(truncate_line(c0, r0, names));
                        }
                        pending_t = Some((lsn, c, r, vec![table]));
                    }
                }
            }
            other => {
                if let Some(t) = cur.as_mut() {
                    t.changes.push(format!("? unknown document {other}"));
                }
            }
        }
    }
    // "empty-transactions"
    out.retain(|t| !t.changes.is_empty());
    out
}

/// The named values of a pgoutput tuple; `u` values are left out and their
/// names returned separately.
fn pg_row(rel: &Relation, values: &[PgValue]) -> (Vec<(String, String)>, Vec<String>) {
    let mut items = Vec::new();
    let mut toast = Vec::new();
    for ((name, _), v) in rel.columns.iter().zip(values) {
        match v {
            PgValue::Unchanged => toast.push(name.clone()),
            v => items.push((name.clone(), pg_text(v))),
        }
    }
    (items, toast)
}

fn pg_key(rel: &Relation, old: &OldRow) -> Vec<(String, String)> {
    rel.columns
        .iter()
        .zip(&old.values)
        .filter(|((_, key), _)| old.full || *key)
        .map(|((n, _), v)| (n.clone(), pg_text(v)))
        .collect()
}

/// Normalise pgoutput's transactions.
/// Normalise pgoutput's transactions; `tools` are the relations
/// (`schema.name`) logical_ext leaves out by the "tool-tables" rule.
pub fn normalise_pgoutput(txns: &[pgoutput::Txn], tools: &[String]) -> Vec<NTxn> {
    let name = |r: &Relation| format!("{}.{}", r.schema, r.name);
    // "own-tables" and "tool-tables"
    let dropped = |r: &Relation| r.schema == OWN_SCHEMA || tools.contains(&name(r));
    let mut out = Vec::new();
    for t in txns {
        let mut changes = Vec::new();
        for c in &t.changes {
            let c = match c {
                pgoutput::Change::Insert { rel, .. }
                | pgoutput::Change::Update { rel, .. }
                | pgoutput::Change::Delete { rel, .. }
                    if dropped(rel) =>
                {
                    continue;
                }
                pgoutput::Change::Truncate { rels, cascade, restart_identity } => {
                    let rels: Vec<Relation> = rels.iter().filter(|r| !dropped(r)).cloned().collect();
                    if rels.is_empty() {
                        continue;
                    }
                    &pgoutput::Change::Truncate { rels, cascade: *cascade, restart_identity: *restart_identity }
                }
                c => c,
            };
            changes.push(match c {
                pgoutput::Change::Insert { rel, new } => {
                    let (items, toast) = pg_row(rel, new);
                    change_line("I", &name(rel), Some(&items), &toast, None)
                }
                pgoutput::Change::Update { rel, old, new } => {
                    let mut new = new.clone();
                    // "toast-from-full-old"
                    if let Some(o) = old.as_ref().filter(|o| o.full) {
                        for (i, v) in new.iter_mut().enumerate() {
                            if *v == PgValue::Unchanged
                                && let Some(ov @ PgValue::Text(_)) = o.values.get(i)
                            {
                                *v = ov.clone();
                            }
                        }
                    }
                    let (items, toast) = pg_row(rel, &new);
                    let key = match old {
                        Some(o) => pg_key(rel, o),
                        // "key-from-new"
                        None => pg_key(rel, &OldRow { full: false, values: new.clone() }),
                    };
                    change_line("U", &name(rel), Some(&items), &toast, Some(&key))
                }
                pgoutput::Change::Delete { rel, old } => {
                    let key = old.as_ref().map(|o| pg_key(rel, o)).unwrap_or_default();
                    change_line("D", &name(rel), None, &[], Some(&key))
                }
                pgoutput::Change::Truncate { rels, cascade, restart_identity } => {
                    truncate_line(*cascade, *restart_identity, rels.iter().map(name).collect())
                }
            });
        }
        out.push(NTxn { xid: t.xid, changes });
    }
    // "empty-transactions"
    out.retain(|t| !t.changes.is_empty());
    out
}

/// Read and normalise the `logical_ext` slot `slot` with `publication_names`.
pub fn read_logical_ext(client: &mut Client, slot: &str, publications: &str) -> Normal {
    let options = [
        ("publication_names", Some(publications)),
        ("include-xids", Some("1")),
        ("include-lsn", Some("1")),
        ("include-types", Some("0")),
    ];
    crate::decoding::try_changes(client, true, slot, None, &options)
        .map(|rows| normalise_logical_ext(&crate::decoding::docs(&rows)))
        .map_err(|e| describe_error(&e))
}

/// The relations of the "tool-tables" rule as the catalog has them now:
/// members of an extension, or in a schema that is one, that none of
/// `publications` (identifier syntax) lists itself.
pub fn tool_relations(client: &mut Client, publications: &str) -> Vec<String> {
    let names: Vec<String> = publications
        .split(',')
        .map(str::trim)
        .map(|p| match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => p.to_lowercase(),
        })
        .collect();
    let sql = "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.deptype = 'e'
                                AND ((d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid)
                                  OR (d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objid = n.oid)))
                  AND NOT EXISTS (SELECT FROM pg_catalog.pg_publication_rel pr
                                    JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                                   WHERE pr.prrelid = c.oid AND p.pubname::text = ANY($1::text[]))";
    client.query(sql, &[&names]).map(|rows| rows.iter().map(|r| r.get(0)).collect()).unwrap_or_default()
}

/// Read and normalise the `pgoutput` slot `slot`.
pub fn read_pgoutput(client: &mut Client, slot: &str, publications: &str) -> Normal {
    let raw = pgoutput::read_slot(client, slot, publications)?;
    let tools = tool_relations(client, publications);
    pgoutput::decode(&raw)
        .map(|t| normalise_pgoutput(&t, &tools))
        .map_err(|e| format!("undecodable pgoutput stream: {e}"))
}

/// A first difference between two normal forms, described; None if equal
/// (two errors are equal).
pub fn compare(pgoutput: &Normal, logical_ext: &Normal) -> Option<String> {
    match (pgoutput, logical_ext) {
        (Err(_), Err(_)) => None,
        (Ok(_), Err(e)) => Some(format!("logical_ext failed where pgoutput did not: {e}")),
        (Err(e), Ok(_)) => Some(format!("pgoutput failed where logical_ext did not: {e}")),
        (Ok(p), Ok(l)) => {
            if p == l {
                return None;
            }
            let mut s = String::new();
            for i in 0..p.len().max(l.len()) {
                let (a, b) = (p.get(i), l.get(i));
                if a != b {
                    let _ = writeln!(s, "first differing transaction (#{i}):");
                    let _ = writeln!(s, "  pgoutput:    {}", show_txn(a));
                    let _ = writeln!(s, "  logical_ext: {}", show_txn(b));
                    break;
                }
            }
            let _ = writeln!(s, "pgoutput, all:\n{}", show_all(p));
            let _ = writeln!(s, "logical_ext, all:\n{}", show_all(l));
            Some(s)
        }
    }
}

fn show_txn(t: Option<&NTxn>) -> String {
    match t {
        None => "(none)".into(),
        Some(t) => format!("xid {}\n      {}", t.xid, t.changes.join("\n      ")),
    }
}

fn show_all(ts: &[NTxn]) -> String {
    ts.iter().map(|t| format!("  xid {}\n    {}", t.xid, t.changes.join("\n    "))).collect::<Vec<_>>().join("\n")
}

/// A case: statements run before the slots exist, then the workload (each
/// item one transaction; a failing one is rolled back and noted), read with
/// `publications` (identifier syntax).
#[derive(Debug, Clone)]
pub struct Case {
    pub setup: Vec<String>,
    pub workload: Vec<String>,
    pub publications: String,
}

/// What a run produced.
pub struct Outcome {
    /// The statements as run, failures noted: a script to reproduce.
    pub script: String,
    pub pgoutput: Normal,
    pub logical_ext: Normal,
}

impl Outcome {
    pub fn mismatch(&self) -> Option<String> {
        compare(&self.pgoutput, &self.logical_ext)
    }

    /// Changes pgoutput sent (0 when it failed): how much was compared.
    pub fn compared_changes(&self) -> usize {
        self.pgoutput.as_ref().map(|t| t.iter().map(|t| t.changes.len()).sum()).unwrap_or(0)
    }
}

impl Case {
    /// Run in a fresh database `db` of `cluster` (created here, dropped
    /// afterwards unless the streams differ).
    pub fn run(&self, cluster: &Cluster, db: &str) -> Outcome {
        let mut admin = cluster.client();
        exec(&mut admin, &format!("DROP DATABASE IF EXISTS {db}"));
        exec(&mut admin, &format!("CREATE DATABASE {db}"));
        let mut c = cluster.client_db(db);
        exec(&mut c, "CREATE EXTENSION logical_ext");
        let mut script = String::new();
        for s in &self.setup {
            run_noted(&mut c, s, &mut script, false);
        }
        let _ = writeln!(script, "-- slots here; publication_names {}", self.publications);
        crate::decoding::create_slot(&mut c, "diff_po", "pgoutput");
        crate::decoding::create_slot(&mut c, "diff_le", crate::decoding::PLUGIN);
        for w in &self.workload {
            run_noted(&mut c, w, &mut script, true);
        }
        let pgoutput = read_pgoutput(&mut c, "diff_po", &self.publications);
        let logical_ext = read_logical_ext(&mut c, "diff_le", &self.publications);
        let out = Outcome { script, pgoutput, logical_ext };
        exec(&mut c, "SELECT pg_drop_replication_slot('diff_po'); SELECT pg_drop_replication_slot('diff_le')");
        drop(c);
        if out.mismatch().is_none() {
            exec(&mut admin, &format!("DROP DATABASE {db}"));
        }
        out
    }
}

impl Case {
    /// A smaller case that still mismatches: greedily drop workload
    /// transactions, then setup statements, one at a time, keeping every
    /// removal after which the streams still differ. Each try runs in the
    /// database `db` (at most `budget` runs).
    pub fn minimise(&self, cluster: &Cluster, db: &str, budget: usize) -> Case {
        let original = self.run(cluster, db);
        let mut best = self.clone();
        let mut runs = 1;
        for setup_items in [false, true] {
            let mut i = 0;
            loop {
                let len = if setup_items { best.setup.len() } else { best.workload.len() };
                if i >= len || runs >= budget {
                    break;
                }
                let mut trial = best.clone();
                if setup_items {
                    trial.setup.remove(i);
                } else {
                    trial.workload.remove(i);
                }
                runs += 1;
                let out = trial.run(cluster, db);
                // The same kind of mismatch: which side fails must not change
                // (dropping a CREATE PUBLICATION makes a different one).
                let same_kind = out.pgoutput.is_err() == original.pgoutput.is_err()
                    && out.logical_ext.is_err() == original.logical_ext.is_err();
                if same_kind && out.mismatch().is_some() {
                    best = trial;
                } else {
                    i += 1;
                }
            }
        }
        best
    }
}

fn run_noted(c: &mut Client, sql: &str, script: &mut String, transaction: bool) {
    let first_line = |e: &postgres::Error| describe_error(e).lines().next().unwrap_or("").to_string();
    if !transaction {
        match c.batch_execute(sql) {
            Ok(()) => {
                let _ = writeln!(script, "{sql};");
            }
            Err(e) => {
                let _ = writeln!(script, "-- failed ({}): {sql};", first_line(&e));
            }
        }
        return;
    }
    let text = format!("BEGIN; {} COMMIT;", with_semicolon(sql));
    if c.batch_execute(&text).is_ok() {
        let _ = writeln!(script, "{text}");
        return;
    }
    // Something failed: run the statements one by one, each in a savepoint,
    // so that the others still commit (the script notes the failures).
    let _ = c.batch_execute("ROLLBACK");
    exec(c, "BEGIN");
    let _ = writeln!(script, "BEGIN;");
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        exec(c, "SAVEPOINT diff_stmt");
        match c.batch_execute(stmt) {
            Ok(()) => {
                exec(c, "RELEASE SAVEPOINT diff_stmt");
                let _ = writeln!(script, "  {stmt};");
            }
            Err(e) => {
                exec(c, "ROLLBACK TO SAVEPOINT diff_stmt");
                let _ = writeln!(script, "  -- failed ({}): {stmt};", first_line(&e));
            }
        }
    }
    exec(c, "COMMIT");
    let _ = writeln!(script, "COMMIT;");
}

fn with_semicolon(sql: &str) -> String {
    let t = sql.trim_end();
    if t.ends_with(';') { t.to_string() } else { format!("{t};") }
}
