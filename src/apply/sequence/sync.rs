//! `logical_ext.sync_sequences(subscription)`: the switchover fence. It reads
//! every sequence the subscription replicates on the publisher (through the
//! subscription's own connection, `replicated_sequences()` there) and moves
//! each local one forward to exactly that state, without waiting for the
//! stream; run it once the publisher stopped writing and the result is
//! exact (a sequence the subscriber already used further is reported
//! `ahead` and left alone: forward only).

use super::{Outcome, SeqState, move_forward};
use crate::apply::api;
use crate::apply::walrcv::quote_literal;
use pgrx::prelude::*;

#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelt out here
fn sync_sequences(
    subscription: &str,
) -> TableIterator<
    'static,
    (
        name!(sequence, String),
        name!(action, String),
        name!(publisher_last_value, i64),
        name!(publisher_is_called, bool),
        name!(local_before, Option<i64>),
        name!(local_after, Option<i64>),
    ),
> {
    api::require_superuser("synchronize sequences");
    let sub = api::load(subscription);
    let mut conn = api::connect(&sub.conninfo, &sub.name);
    let pubs: Vec<String> = sub.publications.iter().map(|p| quote_literal(p)).collect();
    let sql = format!(
        "SELECT schema, name, last_value::text, is_called::text FROM logical_ext.replicated_sequences(ARRAY[{}]::text[])",
        pubs.join(",")
    );
    let rows = conn.exec(&sql, 4).unwrap_or_else(|e| {
        api::fail(
            PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
            format!("could not read the replicated sequences on the publisher: {}", e.0),
            "The publisher needs logical_ext 0.4.0 or later, and the role the subscription connects as needs \
             EXECUTE on logical_ext.replicated_sequences (pg_monitor has it) and SELECT on the sequences.",
        )
    });
    drop(conn);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (schema, name) = (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default());
        let remote = SeqState {
            last_value: r[2].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
            is_called: r[3].as_deref() == Some("true"),
        };
        let outcome = move_forward(&schema, &name, remote, sub.id);
        let (before, after) = match outcome {
            Outcome::Missing | Outcome::NotReplicatedHere => (None, None),
            Outcome::Moved(b, a) => (Some(b.last_value), Some(a.last_value)),
            Outcome::Same(s) | Outcome::Ahead(s) => (Some(s.last_value), Some(s.last_value)),
        };
        out.push((
            format!("{}.{}", quote_ident_sql(&schema), quote_ident_sql(&name)),
            outcome.as_str().to_string(),
            remote.last_value,
            remote.is_called,
            before,
            after,
        ));
    }
    TableIterator::new(out)
}

/// An identifier as SQL prints it (quoted only when it needs to be).
fn quote_ident_sql(s: &str) -> String {
    let c = std::ffi::CString::new(s).unwrap_or_default();
    // SAFETY: quote_identifier returns its argument or a palloc'd copy.
    unsafe { crate::ffi::cstr_to_string(pg_sys::quote_identifier(c.as_ptr())) }
}
