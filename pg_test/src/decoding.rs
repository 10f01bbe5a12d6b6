//! Logical decoding helpers: slots, reading changes through the SQL
//! interface, and clusters prepared for the `logical_ext` output plugin.

use crate::{Client, Cluster, describe_error, exec};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use serde_json::Value;

/// The plugin under test.
pub const PLUGIN: &str = "logical_ext";
/// Where `cargo pgrx install` puts the plugin.
pub const PLUGIN_LIBRARY: &str = "/usr/lib/postgresql/15/lib/logical_ext.so";

/// One row of `pg_logical_slot_{get,peek}_changes`, with `data` parsed.
#[derive(Debug, Clone)]
pub struct Change {
    /// The row's `lsn` column.
    pub lsn: String,
    /// The row's `xid` column.
    pub xid: String,
    /// The document text exactly as the plugin wrote it.
    pub data: String,
    /// `data` parsed as JSON.
    pub doc: Value,
}

impl Change {
    /// The document's `action` (`B`, `C`, `I`, `U`, `D`, `T`, `M`).
    pub fn action(&self) -> &str {
        self.doc["action"].as_str().unwrap_or("?")
    }
}

/// Option list for the SQL interface: name and value. (`None` is SQL NULL,
/// which `pg_logical_slot_*_changes` itself rejects with "array must not
/// contain nulls": a boolean option without a value can only be sent over the
/// replication protocol, e.g. `pg_recvlogical -o include-xids`.)
pub type Opts<'a> = &'a [(&'a str, Option<&'a str>)];

/// Turns `&[("include-xids", "1")]` into the `Opts` shape.
pub fn opts<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, Option<&'a str>)> {
    pairs.iter().map(|(k, v)| (*k, Some(*v))).collect()
}

/// A cluster with `CREATE EXTENSION logical_ext` done, a client, and a
/// `logical_ext` slot named `s` created before anything else happens.
pub fn plugin_cluster(name: &str) -> (Cluster, Client) {
    plugin_cluster_with(name, &[])
}

/// Like [`plugin_cluster`] with extra server settings.
pub fn plugin_cluster_with(name: &str, extra_conf: &[&str]) -> (Cluster, Client) {
    assert!(
        std::path::Path::new(PLUGIN_LIBRARY).exists(),
        "{PLUGIN_LIBRARY} is missing: run `cargo pgrx install --release --pg-config \
         /usr/lib/postgresql/15/bin/pg_config` in the repository root first"
    );
    let cluster = Cluster::start(name, extra_conf);
    let mut client = cluster.client();
    exec(&mut client, "CREATE EXTENSION logical_ext");
    create_slot(&mut client, "s", PLUGIN);
    (cluster, client)
}

/// `pg_create_logical_replication_slot(slot, plugin)`; returns the slot's LSN.
pub fn create_slot(client: &mut Client, slot: &str, plugin: &str) -> String {
    match client.query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2)", &[&slot, &plugin]) {
        Ok(row) => row.get(0),
        Err(e) => panic!("creating slot {slot} with plugin {plugin}: {}", describe_error(&e)),
    }
}

fn changes_sql(func: &str) -> String {
    format!(
        "SELECT lsn::text, xid::text, data FROM pg_logical_slot_{func}_changes(\
         $1, $2::text::pg_lsn, NULL, VARIADIC $3::text[])"
    )
}

/// The option list as SQL text. The tests read format-version 2 (one
/// document per change), so it is added when the list does not name
/// `format-version` (the plugin's default is wal2json's 1); the `*_as_given`
/// readers pass the list unchanged.
fn flatten(o: Opts, as_given: bool) -> Vec<Option<String>> {
    let implied: &[(&str, Option<&str>)] =
        if as_given || o.iter().any(|(k, _)| *k == "format-version") { &[] } else { &[("format-version", Some("2"))] };
    implied.iter().chain(o).flat_map(|(k, v)| [Some(k.to_string()), v.map(str::to_string)]).collect()
}

fn parse(lsn: String, xid: Option<String>, data: String) -> Change {
    let doc =
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("output row at {lsn} is not valid JSON ({e}): {data:?}"));
    Change { lsn, xid: xid.unwrap_or_default(), data, doc }
}

/// Reads changes; `consume` selects `get` (true) or `peek` (false).
/// Returns the server's error instead of panicking.
pub fn try_changes(
    client: &mut Client,
    consume: bool,
    slot: &str,
    upto_lsn: Option<&str>,
    options: Opts,
) -> Result<Vec<Change>, postgres::Error> {
    try_changes_with(client, consume, slot, upto_lsn, flatten(options, false))
}

/// Like [`try_changes`], but `options` are sent exactly as given (no
/// implied `format-version 2`): for tests of the plugin's defaults.
pub fn try_changes_as_given(
    client: &mut Client,
    consume: bool,
    slot: &str,
    options: Opts,
) -> Result<Vec<Change>, postgres::Error> {
    try_changes_with(client, consume, slot, None, flatten(options, true))
}

fn try_changes_with(
    client: &mut Client,
    consume: bool,
    slot: &str,
    upto_lsn: Option<&str>,
    flat: Vec<Option<String>>,
) -> Result<Vec<Change>, postgres::Error> {
    let sql = changes_sql(if consume { "get" } else { "peek" });
    let rows = client.query(&sql, &[&slot, &upto_lsn, &flat])?;
    Ok(rows.into_iter().map(|r| parse(r.get(0), r.get(1), r.get(2))).collect())
}

/// `pg_logical_slot_get_changes` (consumes); panics on error.
pub fn get_changes(client: &mut Client, slot: &str, options: Opts) -> Vec<Change> {
    try_changes(client, true, slot, None, options)
        .unwrap_or_else(|e| panic!("get_changes({slot}, {options:?}): {}", describe_error(&e)))
}

/// `pg_logical_slot_peek_changes` (does not consume); panics on error.
pub fn peek_changes(client: &mut Client, slot: &str, options: Opts) -> Vec<Change> {
    try_changes(client, false, slot, None, options)
        .unwrap_or_else(|e| panic!("peek_changes({slot}, {options:?}): {}", describe_error(&e)))
}

/// `pg_logical_slot_peek_changes` with `options` exactly as given; panics
/// on error.
pub fn peek_changes_as_given(client: &mut Client, slot: &str, options: Opts) -> Vec<Change> {
    try_changes_as_given(client, false, slot, options)
        .unwrap_or_else(|e| panic!("peek_changes({slot}, {options:?}): {}", describe_error(&e)))
}

/// Streams `get`/`peek` changes row by row (nothing is collected), calling
/// `f(lsn, data)` for each. Returns the number of rows.
pub fn stream_changes(client: &mut Client, consume: bool, slot: &str, options: Opts, f: impl FnMut(&str, &str)) -> u64 {
    stream_changes_with(client, consume, slot, flatten(options, false), f)
}

/// Like [`stream_changes`] with `options` sent exactly as given (no implied
/// `format-version 2`).
pub fn stream_changes_as_given(
    client: &mut Client,
    consume: bool,
    slot: &str,
    options: Opts,
    f: impl FnMut(&str, &str),
) -> u64 {
    stream_changes_with(client, consume, slot, flatten(options, true), f)
}

fn stream_changes_with(
    client: &mut Client,
    consume: bool,
    slot: &str,
    flat: Vec<Option<String>>,
    mut f: impl FnMut(&str, &str),
) -> u64 {
    let sql = changes_sql(if consume { "get" } else { "peek" });
    let upto: Option<&str> = None;
    let params: [&(dyn ToSql + Sync); 3] = [&slot, &upto, &flat];
    let mut it = client.query_raw(&sql, params).unwrap_or_else(|e| panic!("stream changes: {}", describe_error(&e)));
    let mut n = 0;
    while let Some(row) = it.next().unwrap_or_else(|e| panic!("stream changes: {}", describe_error(&e))) {
        let lsn: &str = row.get(0);
        let data: &str = row.get(2);
        f(lsn, data);
        n += 1;
    }
    n
}

/// Makes sure everything written so far is flushed WAL, which is all that
/// logical decoding reads. Needed after a non-transactional logical message
/// (or anything else without a commit record) at the end of a test's
/// workload: on PostgreSQL 15 nothing flushes it, and the walwriter only
/// flushes completed pages, so without this it may never become visible.
pub fn flush_wal(client: &mut Client) {
    exec(client, "CHECKPOINT");
}

/// Documents only (for assertions on whole streams).
pub fn docs(changes: &[Change]) -> Vec<Value> {
    changes.iter().map(|c| c.doc.clone()).collect()
}

/// The actions of a stream, e.g. `"B I U C"`: a compact thing to assert on.
pub fn actions(changes: &[Change]) -> String {
    changes.iter().map(|c| c.action().to_string()).collect::<Vec<_>>().join(" ")
}

/// All documents, one per line, for assertion messages.
pub fn dump(changes: &[Change]) -> String {
    changes.iter().map(|c| format!("  {} {}", c.lsn, c.data)).collect::<Vec<_>>().join("\n")
}

/// Runs `f` in one transaction and returns its xid (as text), e.g. to compare
/// with the `xid` the plugin reports.
pub fn in_transaction(client: &mut Client, f: impl FnOnce(&mut postgres::Transaction)) -> String {
    let mut tx = client.transaction().expect("BEGIN");
    let xid: String = tx.query_one("SELECT pg_current_xact_id()::text", &[]).expect("pg_current_xact_id()").get(0);
    f(&mut tx);
    tx.commit().expect("COMMIT");
    xid
}
