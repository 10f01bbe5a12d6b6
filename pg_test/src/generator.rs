//! The seeded generator of the differential test against pgoutput
//! (`differential.rs`): from a seed, a schema (primary keys, REPLICA IDENTITY
//! FULL, identity indexes, tables without key, partitioned tables with a
//! reordered partition carrying a dropped column and a sub-partitioned one,
//! generated columns, TOASTed columns, rows older than ADD COLUMN ...
//! DEFAULT), publications (FOR TABLE with row filters and column lists, FOR
//! ALL TABLES, TABLES IN SCHEMA, `publish`, `publish_via_partition_root`) and
//! a workload (inserts, updates including key changes and partition moves,
//! deletes, TRUNCATE, savepoints, ALTER PUBLICATION / ALTER TABLE between
//! transactions).
//!
//! Statements are generated without checking that PostgreSQL accepts them:
//! a refused one is noted in the script and skipped (`Case::run`). The
//! generator only steers away from what would refuse most of a case.

use crate::differential::Case;
use std::fmt::Write as _;

/// SplitMix64: a small, seedable generator (no dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// true with probability pct/100
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Primary key on id (REPLICA IDENTITY DEFAULT).
    Pk,
    /// REPLICA IDENTITY FULL (with or without a primary key).
    Full,
    /// REPLICA IDENTITY USING INDEX on a unique index of id.
    Index,
    /// No key (DEFAULT without primary key): no UPDATE/DELETE when published.
    NoKey,
}

/// A generated table and what the workload may do with it.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    /// Leaves and intermediate partitions (for publications naming them).
    partitions: Vec<String>,
    identity: Identity,
    /// Ids go from 0 to this (exclusive); partitions split the range.
    ids: u64,
    has_f: bool,
    generated: bool,
    /// Columns of more types (numeric, jsonb, int[], timestamptz, bytea,
    /// varchar(8)): value formats.
    typed: bool,
    big: bool,
    /// Column `c int DEFAULT 7` added mid-stream.
    has_c: bool,
    /// The column list publications give this table (mostly the same one:
    /// different lists only make both plugins refuse the read).
    column_list: Option<String>,
}

fn filter_for(rng: &mut Rng, t: &Table) -> String {
    let mut choices = vec![format!("id > {}", rng.below(t.ids)), format!("id < {}", rng.below(t.ids))];
    if matches!(t.identity, Identity::Full) {
        choices.push(format!("a > {}", rng.below(50)));
        choices.push("b IS NOT NULL".into());
        if t.has_f {
            choices.push("f".into());
        }
        if t.big {
            choices.push("length(big) > 1000".into());
        }
        if t.has_c {
            choices.push("c = 7".into());
        }
        if t.generated {
            choices.push(format!("g > {}", rng.below(100)));
        }
    }
    rng.pick(&choices).clone()
}

fn column_list_for(rng: &mut Rng, t: &Table) -> String {
    // Under FULL the list must cover every column for UPDATE and DELETE to be
    // allowed: mostly all of them (still a list when the table also has a
    // generated or dropped column: PostgreSQL 15 counts those).
    let all = t.identity == Identity::Full && rng.chance(80);
    let mut keep = |pct| all || rng.chance(pct);
    let mut cols = vec!["id"];
    for c in ["a", "b"] {
        if keep(60) {
            cols.push(c);
        }
    }
    if t.has_f && keep(50) {
        cols.push("f");
    }
    if t.big && keep(60) {
        cols.push("big");
    }
    if t.has_c && keep(50) {
        cols.push("c");
    }
    if rng.chance(20) {
        cols.reverse();
    }
    format!("({})", cols.join(", "))
}

/// Build the case of `seed`.
pub fn generate(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let mut setup = vec!["CREATE SCHEMA s1".to_string()];
    let mut tables: Vec<Table> = Vec::new();
    let ntables = 2 + rng.below(3);
    for i in 0..ntables {
        let schema = if rng.chance(40) { "s1" } else { "public" };
        let partitioned = rng.chance(35);
        let identity = *rng.pick(&[
            Identity::Pk,
            Identity::Pk,
            Identity::Full,
            Identity::Full,
            Identity::Full,
            Identity::Index,
            Identity::NoKey,
        ]);
        let big = rng.chance(40);
        let has_f = rng.chance(70);
        let name = format!("{schema}.t{i}");
        let mut cols = vec!["id int NOT NULL", "a int", "b text"];
        if has_f {
            cols.push("f boolean");
        }
        if big {
            cols.push("big text");
        }
        let mut t = Table {
            name: name.clone(),
            partitions: Vec::new(),
            identity,
            ids: if partitioned { 40 } else { 12 },
            has_f,
            generated: false,
            typed: false,
            big,
            has_c: false,
            column_list: None,
        };
        if rng.chance(30) {
            t.column_list = Some(column_list_for(&mut rng, &t));
        }
        let pk = matches!(identity, Identity::Pk) || (identity == Identity::Full && rng.chance(50));
        if partitioned {
            let pk_clause = if pk { ", PRIMARY KEY (id)" } else { "" };
            setup.push(format!("CREATE TABLE {name} ({}{pk_clause}) PARTITION BY RANGE (id)", cols.join(", ")));
            setup.push(format!("CREATE TABLE {name}_1 PARTITION OF {name} FOR VALUES FROM (0) TO (10)"));
            // A partition with its own column order and a dropped column.
            let mut own: Vec<&str> = cols.clone();
            own.reverse();
            setup.push(format!("CREATE TABLE {name}_2 (x int, {})", own.join(", ")));
            setup.push(format!("ALTER TABLE {name}_2 DROP COLUMN x"));
            setup.push(format!("ALTER TABLE {name} ATTACH PARTITION {name}_2 FOR VALUES FROM (10) TO (20)"));
            // A sub-partitioned partition.
            setup.push(format!(
                "CREATE TABLE {name}_3 PARTITION OF {name} FOR VALUES FROM (20) TO (40) PARTITION BY RANGE (id)"
            ));
            setup.push(format!("CREATE TABLE {name}_3a PARTITION OF {name}_3 FOR VALUES FROM (20) TO (30)"));
            setup.push(format!("CREATE TABLE {name}_3b PARTITION OF {name}_3 FOR VALUES FROM (30) TO (40)"));
            t.partitions = ["_1", "_2", "_3", "_3a", "_3b"].iter().map(|s| format!("{name}{s}")).collect();
        } else {
            if rng.chance(40) {
                cols.push("g int GENERATED ALWAYS AS (a * 2) STORED");
                t.generated = true;
            }
            if rng.chance(35) {
                cols.extend(["n numeric", "j jsonb", "arr int[]", "ts timestamptz", "by bytea", "vc varchar(8)"]);
                t.typed = true;
            }
            let pk_clause = if pk { ", PRIMARY KEY (id)" } else { "" };
            setup.push(format!("CREATE TABLE {name} ({}{pk_clause})", cols.join(", ")));
        }
        let leaves: Vec<String> = if partitioned {
            ["_1", "_2", "_3a", "_3b"].iter().map(|s| format!("{name}{s}")).collect()
        } else {
            vec![name.clone()]
        };
        let all_rels: Vec<String> = std::iter::once(name.clone()).chain(t.partitions.iter().cloned()).collect();
        match identity {
            Identity::Full => {
                for r in &all_rels {
                    setup.push(format!("ALTER TABLE {r} REPLICA IDENTITY FULL"));
                }
            }
            Identity::Index => {
                for (n, r) in leaves.iter().enumerate() {
                    let idx = format!("t{i}_{n}_id");
                    setup.push(format!("CREATE UNIQUE INDEX {idx} ON {r} (id)"));
                    setup.push(format!("ALTER TABLE {r} REPLICA IDENTITY USING INDEX {idx}"));
                }
            }
            _ => {}
        }
        if big {
            for r in &all_rels {
                setup.push(format!("ALTER TABLE {r} ALTER COLUMN big SET STORAGE EXTERNAL"));
            }
        }
        // Rows written before the slots, some older than a later ADD COLUMN.
        if rng.chance(50) {
            let bigv = if big { ", repeat('p', 3000)" } else { "" };
            let fcol = if has_f { ", f" } else { "" };
            let fval = if has_f { ", true" } else { "" };
            let bcol = if big { ", big" } else { "" };
            setup.push(format!(
                "INSERT INTO {name} (id, a, b{fcol}{bcol}) SELECT g, g, 'pre'{fval}{bigv} FROM generate_series(0, {}, 3) g",
                t.ids - 1
            ));
            if rng.chance(50) {
                setup.push(format!("ALTER TABLE {name} ADD COLUMN c int DEFAULT 7"));
                t.has_c = true;
            }
        }
        tables.push(t);
    }

    // Publications.
    let npubs = 1 + rng.below(3);
    let mut pubs = Vec::new();
    for p in 0..npubs {
        let pname = format!("p{p}");
        let what = rng.below(10);
        // PostgreSQL 15 allows a row filter or column list on a partitioned
        // table only with publish_via_partition_root.
        let mut needs_viaroot = false;
        let target = if what == 0 {
            "FOR ALL TABLES".to_string()
        } else {
            let mut items = Vec::new();
            if what <= 2 {
                items.push("TABLES IN SCHEMA s1".to_string());
            }
            let n = if what <= 2 { rng.below(2) } else { 1 + rng.below(3) };
            for _ in 0..n {
                let ti = rng.below(tables.len() as u64) as usize;
                if rng.chance(8) {
                    // Now and then a list that differs from another's.
                    let list = column_list_for(&mut rng, &tables[ti]);
                    tables[ti].column_list = Some(list);
                }
                let t = tables[ti].clone();
                let rel = if !t.partitions.is_empty() && rng.chance(30) {
                    rng.pick(&t.partitions).clone()
                } else {
                    t.name.clone()
                };
                if items.iter().any(|i| i.starts_with(&format!("TABLE {rel} ")) || *i == format!("TABLE {rel}")) {
                    continue;
                }
                let mut item = format!("TABLE {rel}");
                if let Some(list) = t.column_list.as_deref().filter(|_| what > 2) {
                    item.push(' ');
                    item.push_str(list);
                }
                if rng.chance(40) {
                    let _ = write!(item, " WHERE ({})", filter_for(&mut rng, &t));
                }
                let partitioned_rel = !t.partitions.is_empty() && (rel == t.name || rel.ends_with("_3"));
                let list_or_filter = item.len() > "TABLE ".len() + rel.len();
                needs_viaroot |= partitioned_rel && list_or_filter;
                items.push(item);
            }
            if items.is_empty() {
                items.push(format!("TABLE {}", tables[0].name));
            }
            format!("FOR {}", items.join(", "))
        };
        let mut with = Vec::new();
        if rng.chance(30) {
            let acts: Vec<&str> =
                ["insert", "update", "delete", "truncate"].into_iter().filter(|_| rng.chance(60)).collect();
            with.push(format!("publish = '{}'", acts.join(", ")));
        }
        if needs_viaroot || rng.chance(50) {
            with.push("publish_via_partition_root = true".into());
        }
        let with = if with.is_empty() { String::new() } else { format!(" WITH ({})", with.join(", ")) };
        setup.push(format!("CREATE PUBLICATION {pname} {target}{with}"));
        pubs.push(pname);
    }

    // Workload.
    let mut workload = Vec::new();
    let ntx = 10 + rng.below(10);
    for _ in 0..ntx {
        if rng.chance(12) {
            workload.push(ddl_step(&mut rng, &mut tables, &pubs));
            continue;
        }
        let nops = 1 + rng.below(5);
        let mut ops = String::new();
        for _ in 0..nops {
            let ti = rng.below(tables.len() as u64) as usize;
            // Now and then a catalog change inside the transaction, between
            // its changes (decoded at its exact position).
            let op =
                if rng.chance(5) { ddl_step(&mut rng, &mut tables, &pubs) } else { dml_step(&mut rng, &tables, ti) };
            if rng.chance(12) {
                let end = if rng.chance(50) { "ROLLBACK TO SAVEPOINT sp" } else { "RELEASE SAVEPOINT sp" };
                let _ = write!(ops, "SAVEPOINT sp; {op}; {end}; ");
            } else {
                let _ = write!(ops, "{op}; ");
            }
        }
        workload.push(ops);
    }
    Case { setup, workload, publications: pubs.join(",") }
}

fn dml_step(rng: &mut Rng, tables: &[Table], ti: usize) -> String {
    let t = &tables[ti];
    let name = &t.name;
    let id = rng.below(t.ids);
    let v = rng.below(60);
    match rng.below(20) {
        0..=6 => {
            let mut cols = vec!["id", "a", "b"];
            let mut vals = vec![id.to_string(), v.to_string(), format!("'v{v}'")];
            if t.has_f {
                cols.push("f");
                vals.push(if rng.chance(50) { "true".into() } else { "NULL".into() });
            }
            if t.big && rng.chance(60) {
                cols.push("big");
                vals.push(format!("repeat('{}', {})", (b'a' + (v % 26) as u8) as char, 2100 + v * 10));
            }
            if t.has_c && rng.chance(50) {
                cols.push("c");
                vals.push(rng.below(9).to_string());
            }
            if t.typed {
                cols.extend(["n", "j", "arr", "ts", "by", "vc"]);
                let n = *rng.pick(&["12.50", "-0.000100", "'NaN'", "1e20", "NULL", "'Infinity'"]);
                let j = *rng.pick(&[r#"'{"k": [1, "x", null], "a": true}'"#, "'[]'", "'\"s\"'", "NULL"]);
                let arr = *rng.pick(&["'{1,2,NULL}'", "'{}'", "ARRAY[3]", "NULL"]);
                let ts = *rng.pick(&["'2026-01-02 03:04:05.123456+00'", "'infinity'", "NULL"]);
                let by = *rng.pick(&["'\\x00ff10'", "''", "NULL"]);
                let vc = *rng.pick(&["'ab\"c'", "'é ü'", "NULL", "'x\\y'"]);
                vals.extend([n, j, arr, ts, by, vc].map(String::from));
            }
            format!("INSERT INTO {name} ({}) VALUES ({}) ON CONFLICT DO NOTHING", cols.join(", "), vals.join(", "))
        }
        7..=10 => format!("UPDATE {name} SET a = {v} WHERE id = {id}"),
        11 => format!("UPDATE {name} SET b = NULL WHERE a < {v}"),
        12 => {
            // A key change; on a partitioned table it may move the row.
            let to = rng.below(t.ids);
            format!("UPDATE {name} SET id = {to} WHERE id = {id}")
        }
        13 if t.big => format!("UPDATE {name} SET big = repeat('u', {}) WHERE id = {id}", 2500 + v),
        14 if t.has_f => format!("UPDATE {name} SET f = NOT coalesce(f, false) WHERE id >= {id}"),
        15..=17 => format!("DELETE FROM {name} WHERE id = {id}"),
        18 => format!("DELETE FROM {name} WHERE a > {v}"),
        19 => {
            let mut names = vec![name.clone()];
            if rng.chance(30) {
                names.push(rng.pick(tables).name.clone());
                names.dedup();
            }
            let opt = *rng.pick(&["", " CASCADE", " RESTART IDENTITY"]);
            format!("TRUNCATE {}{opt}", names.join(", "))
        }
        _ => format!("UPDATE {name} SET a = a + 1, b = 'w{v}' WHERE id <= {id}"),
    }
}

fn ddl_step(rng: &mut Rng, tables: &mut [Table], pubs: &[String]) -> String {
    let p = rng.pick(pubs).clone();
    let ti = rng.below(tables.len() as u64) as usize;
    let t = tables[ti].clone();
    match rng.below(12) {
        0 => format!("ALTER PUBLICATION {p} ADD TABLE {}", t.name),
        8 => format!("ALTER PUBLICATION {p} ADD TABLES IN SCHEMA s1"),
        9 => {
            let list = column_list_for(rng, &t);
            tables[ti].column_list = Some(list.clone());
            format!("ALTER PUBLICATION {p} SET TABLE {} {list}", t.name)
        }
        10 if t.partitions.is_empty() => {
            // A change of replica identity between transactions (FULL
            // from now on, so FULL-only filters become possible).
            tables[ti].identity = Identity::Full;
            format!("ALTER TABLE {} REPLICA IDENTITY FULL", t.name)
        }
        11 => format!("ALTER PUBLICATION {p} SET TABLE {}, TABLES IN SCHEMA s1", t.name),
        1 => format!("ALTER PUBLICATION {p} DROP TABLE {}", t.name),
        2 => {
            let acts = *rng.pick(&["insert", "insert, update", "update, delete", "insert, update, delete, truncate"]);
            format!("ALTER PUBLICATION {p} SET (publish = '{acts}')")
        }
        3 => format!("ALTER PUBLICATION {p} SET TABLE {} WHERE ({})", t.name, filter_for(rng, &t)),
        4 if !t.has_c => {
            tables[ti].has_c = true;
            format!("ALTER TABLE {} ADD COLUMN c int DEFAULT 7", t.name)
        }
        5 => format!("ALTER PUBLICATION {p} SET (publish_via_partition_root = {})", rng.chance(50)),
        6 if t.has_f => {
            tables[ti].has_f = false;
            format!("ALTER TABLE {} DROP COLUMN f", t.name)
        }
        _ => format!("ALTER TABLE {} ALTER COLUMN b SET DEFAULT 'd'", t.name),
    }
}
