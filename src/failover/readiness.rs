//! `failover_readiness()` and its metrics: per failover slot, whether a
//! failover now would lose nothing, and why not.

use super::rules::{self, Local, Remote, StandbySlot};
use super::{settings, slots, state, sync};
use crate::ffi::lsn::Lsn;
use pgrx::prelude::*;

/// One row of `failover_readiness()`.
pub(crate) struct Row {
    pub(crate) slot_name: String,
    pub(crate) role: &'static str,
    pub(crate) synchronized: bool,
    pub(crate) persistent: bool,
    pub(crate) restart_lsn: Option<u64>,
    pub(crate) confirmed_flush: Option<u64>,
    pub(crate) lag_bytes: Option<i64>,
    pub(crate) safe: bool,
    pub(crate) reason: Option<String>,
}

/// A copy is "fresh" when the worker's last round is this recent.
const FRESH_US: i64 = 10_000_000;

fn marked_here() -> Vec<String> {
    // Only the extension's own table (the metrics endpoint calls this as the
    // bootstrap superuser, in a database that may lack the extension).
    if !crate::ffi::catalog::superuser_table(c"logical_ext", c"failover_slot") {
        return Vec::new();
    }
    Spi::connect(|c| {
        c.select("SELECT slot_name::text FROM logical_ext.failover_slot ORDER BY 1", None, &[])
            .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
            .unwrap_or_default()
    })
}

pub(crate) fn rows() -> Vec<Row> {
    // SAFETY: reads shared state.
    if unsafe { pgrx::pg_sys::RecoveryInProgress() } { standby_rows() } else { primary_rows() }
}

fn primary_rows() -> Vec<Row> {
    let names = settings::standby_slot_names();
    let standby = slots::standby_slots(&names);
    let oldest_flush = standby
        .iter()
        .map(|(s, _)| match s {
            StandbySlot::Flushed(l) => *l,
            _ => 0,
        })
        .min();
    let current = crate::ffi::worker::local_flush_lsn();
    let all = slots::read();
    marked_here()
        .into_iter()
        .map(|name| {
            let Some(s) = all.iter().find(|s| s.name == name && s.logical()) else {
                return Row {
                    slot_name: name,
                    role: "primary",
                    synchronized: false,
                    persistent: false,
                    restart_lsn: None,
                    confirmed_flush: None,
                    lag_bytes: None,
                    safe: false,
                    reason: Some("the slot does not exist (unmark it with set_slot_failover(name, false))".into()),
                };
            };
            let verdict = rules::primary_safety(&standby, s.catalog_xmin);
            Row {
                synchronized: verdict.is_ok() && oldest_flush.is_some_and(|f| f >= s.confirmed_flush),
                role: "primary",
                persistent: s.persistent,
                restart_lsn: Some(s.restart_lsn),
                confirmed_flush: Some(s.confirmed_flush),
                lag_bytes: oldest_flush.map(|f| current.saturating_sub(f) as i64),
                safe: verdict.is_ok(),
                reason: verdict.err().map(|e| e.text().to_string()),
                slot_name: name,
            }
        })
        .collect()
}

fn standby_rows() -> Vec<Row> {
    let (pid, last_round, entries) = state::snapshot().unwrap_or((0, 0, Vec::new()));
    let fresh = pid != 0
        && crate::ffi::worker::backend_alive(pid)
        && crate::ffi::worker::now_ts() - last_round < FRESH_US
        && settings::SYNCHRONIZE_SLOTS.get();
    let received = sync::received_lsn();
    let all = slots::read();
    let mut names = marked_here();
    for e in &entries {
        if !names.contains(&e.name()) {
            names.push(e.name());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let entry = entries.iter().find(|e| e.name() == name);
            let local = all.iter().find(|s| s.name == name && s.logical());
            let l = local.map(|s| Local {
                restart_lsn: s.restart_lsn,
                confirmed_flush: s.confirmed_flush,
                catalog_xmin: s.catalog_xmin,
                persistent: s.persistent,
            });
            let remote: Option<Remote> = entry.map(|e| e.remote);
            let hold = entry.and_then(|e| e.hold());
            let verdict = rules::standby_safety(l, remote, hold, received, fresh);
            Row {
                role: "standby",
                synchronized: l.is_some() && entry.is_some() && hold.is_none() && fresh,
                persistent: l.is_some_and(|l| l.persistent),
                restart_lsn: l.map(|l| l.restart_lsn),
                confirmed_flush: l.map(|l| l.confirmed_flush),
                lag_bytes: remote.zip(l).map(|(r, l)| r.confirmed_flush.saturating_sub(l.confirmed_flush) as i64),
                safe: verdict.is_ok(),
                reason: verdict.err().map(|e| e.text().to_string()),
                slot_name: name,
            }
        })
        .collect()
}

/// One row per failover slot (those listed in `logical_ext.failover_slot`
/// of this database, and on a standby those the synchronization worker
/// copies): whether failing over now would lose nothing for it, and why
/// not.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn failover_readiness() -> TableIterator<
    'static,
    (
        name!(slot_name, String),
        name!(role, String),
        name!(synchronized, bool),
        name!(persistent, bool),
        name!(restart_lsn, Option<Lsn>),
        name!(confirmed_flush_lsn, Option<Lsn>),
        name!(lag_bytes, Option<i64>),
        name!(safe, bool),
        name!(reason, Option<String>),
    ),
> {
    let rows: Vec<_> = rows()
        .into_iter()
        .map(|r| {
            (
                r.slot_name,
                r.role.to_string(),
                r.synchronized,
                r.persistent,
                r.restart_lsn.map(Lsn),
                r.confirmed_flush.map(Lsn),
                r.lag_bytes,
                r.safe,
                r.reason,
            )
        })
        .collect();
    TableIterator::new(rows)
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The failover families of `metrics()` (empty when there is no failover
/// slot). Inside a transaction.
pub(crate) fn metrics_text() -> String {
    render(&rows())
}

pub(crate) fn render(rows: &[Row]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    out.push_str("# HELP logical_ext_failover_slot_safe Whether failing over now would lose nothing for this failover slot (1) or not (0).\n");
    out.push_str("# TYPE logical_ext_failover_slot_safe gauge\n");
    for r in rows {
        out.push_str(&format!(
            "logical_ext_failover_slot_safe{{slot_name=\"{}\",role=\"{}\"}} {}\n",
            label(&r.slot_name),
            r.role,
            u8::from(r.safe)
        ));
    }
    out.push_str("# HELP logical_ext_failover_slot_synchronized Whether the failover slot's copy is synchronized (standby) or its consumer's position flushed by the standbys (primary).\n");
    out.push_str("# TYPE logical_ext_failover_slot_synchronized gauge\n");
    for r in rows {
        out.push_str(&format!(
            "logical_ext_failover_slot_synchronized{{slot_name=\"{}\",role=\"{}\"}} {}\n",
            label(&r.slot_name),
            r.role,
            u8::from(r.synchronized)
        ));
    }
    out.push_str("# HELP logical_ext_failover_slot_lag_bytes Standby: how far the copy's confirmed position is behind the primary's; primary: how far the slowest standby in standby_slot_names is behind the WAL.\n");
    out.push_str("# TYPE logical_ext_failover_slot_lag_bytes gauge\n");
    for r in rows {
        if let Some(l) = r.lag_bytes {
            out.push_str(&format!(
                "logical_ext_failover_slot_lag_bytes{{slot_name=\"{}\",role=\"{}\"}} {}\n",
                label(&r.slot_name),
                r.role,
                l
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_escape_labels_and_skip_unknown_lag() {
        let r = Row {
            slot_name: "a\"b".into(),
            role: "standby",
            synchronized: false,
            persistent: false,
            restart_lsn: None,
            confirmed_flush: None,
            lag_bytes: None,
            safe: false,
            reason: None,
        };
        let text = render(&[r]);
        assert!(text.contains("logical_ext_failover_slot_safe{slot_name=\"a\\\"b\",role=\"standby\"} 0"));
        assert!(!text.contains("logical_ext_failover_slot_lag_bytes{"));
        assert!(render(&[]).is_empty());
    }
}
