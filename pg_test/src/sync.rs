//! Initial table synchronization helpers (`tests/sync_*.rs`): subscribing
//! with `copy_data => true`, reading `logical_ext.subscription_tables`, and
//! waiting for table states.

use crate::replication::{FAST_RETRY, Pair, try_client, wait_or_explain};
use crate::{Client, describe_error};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::Duration;

/// Time limit for copies (a million rows on a slow, shared machine).
pub const COPY_TIMEOUT: Duration = Duration::from_secs(300);

/// One row of `logical_ext.subscription_tables`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableState {
    pub relation: String,
    pub state: String,
    pub sync_lsn: Option<String>,
    pub rows_copied: i64,
    pub bytes_copied: i64,
    pub started: bool,
    pub finished: bool,
    pub last_error: Option<String>,
}

/// `create_subscription(..., copy_data => true, options => FAST_RETRY)`
/// plus `extra` named arguments.
pub fn subscribe_copy(pair: &Pair, name: &str, publications: &[&str], extra: &str) {
    let pubs: Vec<String> = publications.iter().map(|s| s.to_string()).collect();
    let sql = format!(
        "SELECT logical_ext.create_subscription(name => $1::text, conninfo => $2::text, publications => $3::text[], \
         copy_data => true, options => '{FAST_RETRY}'{extra})"
    );
    let mut c = pair.sub_client();
    if let Err(e) = c.execute(&sql, &[&name, &pair.publisher_conninfo(), &pubs]) {
        panic!("create_subscription({name}) failed: {}\n--- SQL:\n{sql}", describe_error(&e));
    }
}

const TABLES_SQL: &str = "SELECT t.relid::text, t.state, t.sync_lsn::text, t.rows_copied, t.bytes_copied, \
     t.started_at IS NOT NULL, t.finished_at IS NOT NULL, t.last_error \
     FROM logical_ext.subscription_tables t JOIN logical_ext.subscription s ON s.id = t.subid \
     WHERE s.name = $1 ORDER BY t.relid::text";

/// The subscription's tables (`Err`: the subscriber cannot be reached).
pub fn try_tables(pair: &Pair, subscription: &str) -> Result<Vec<TableState>, String> {
    let mut c = try_client(&pair.subscriber)?;
    tables_with(&mut c, subscription)
}

fn tables_with(c: &mut Client, subscription: &str) -> Result<Vec<TableState>, String> {
    let rows = c.query(TABLES_SQL, &[&subscription]).map_err(|e| describe_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| TableState {
            relation: r.get(0),
            state: r.get(1),
            sync_lsn: r.get(2),
            rows_copied: r.get(3),
            bytes_copied: r.get(4),
            started: r.get(5),
            finished: r.get(6),
            last_error: r.get(7),
        })
        .collect())
}

pub fn tables(pair: &Pair, subscription: &str) -> Vec<TableState> {
    try_tables(pair, subscription).unwrap_or_else(|e| panic!("reading subscription_tables: {e}"))
}

/// Waits until `cond` holds for the subscription's table rows; returns them.
pub fn wait_tables(
    pair: &Pair,
    subscription: &str,
    what: &str,
    mut cond: impl FnMut(&[TableState]) -> bool,
) -> Vec<TableState> {
    let last = RefCell::new(Vec::new());
    wait_or_explain(
        COPY_TIMEOUT,
        &format!("tables of {subscription}: {what}"),
        || match try_tables(pair, subscription) {
            Ok(t) => {
                let done = cond(&t);
                *last.borrow_mut() = t;
                done
            }
            Err(_) => false,
        },
        || {
            let mut s = String::new();
            let _ = writeln!(s, "--- subscription_tables: {:#?}", last.borrow());
            s + &pair.explain(subscription)
        },
    );
    last.into_inner()
}

/// Waits until every table of the subscription is `ready`.
pub fn wait_all_ready(pair: &Pair, subscription: &str) -> Vec<TableState> {
    wait_tables(pair, subscription, "every table is ready", |t| !t.is_empty() && t.iter().all(|t| t.state == "ready"))
}

/// The state row of one table (by its regclass text).
pub fn table<'a>(states: &'a [TableState], relation: &str) -> &'a TableState {
    states.iter().find(|t| t.relation == relation).unwrap_or_else(|| panic!("no row for {relation} in {states:#?}"))
}

/// Pids of the subscriber's running sync workers.
pub fn sync_worker_pids(pair: &Pair) -> Vec<i32> {
    try_client(&pair.subscriber)
        .ok()
        .and_then(|mut c| c.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical_ext sync'", &[]).ok())
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}
