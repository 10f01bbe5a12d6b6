//! The subscriber's side of replicated sequences (design notes in
//! `src/sequences/mod.rs`): a `SEQ` document applied in its remote
//! transaction, forward only (`decision.rs`), and `sync_sequences()`
//! (`sync.rs`).
//!
//! - The local sequence is locked (`ExclusiveLock`, which `nextval`'s
//!   `RowExclusiveLock` waits for) before its state is read, so no local
//!   `nextval` slips between the read and the `setval`: the move can never
//!   take back a value handed out here.
//! - `setval` runs as the sequence's owner (restricted when that owner is
//!   less trusted), as row changes run as the table's owner
//!   (`executor.rs`); the subscription option `run_as_owner` applies it as
//!   the subscription owner instead.
//! - A sequence missing here is skipped with a WARNING and a HINT, once per
//!   sequence and worker process: replication of the rows goes on.
//! - Scope: the publisher decides which sequences it sends (any owner of a
//!   sequence there may register it), so the subscriber decides which ones
//!   it lets move: only a local sequence that feeds a table of this
//!   subscription (serial/identity column, or a column default calling it)
//!   or that was registered here with `replicate_sequence()`. Anything else
//!   is skipped like a missing one (WARNING + HINT): a publisher login must
//!   not be able to push an unrelated sequence of this node to its maximum.

mod decision;
mod sync;

pub(crate) use decision::SeqState;
use decision::{Move, forward};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;

/// What moving one local sequence did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No such sequence here.
    Missing,
    /// Moved forward from the first state to the second.
    Moved(SeqState, SeqState),
    /// Already there.
    Same(SeqState),
    /// Ahead of the remote state: left alone.
    Ahead(SeqState),
    /// It exists here but is not replicated here (see the scope note):
    /// left alone.
    NotReplicatedHere,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Missing => "missing",
            Outcome::Moved(..) => "set",
            Outcome::Same(_) => "unchanged",
            Outcome::Ahead(_) => "ahead",
            Outcome::NotReplicatedHere => "not_replicated_here",
        }
    }
}

/// The local sequence `schema.name`, if there is one.
fn lookup(schema: &str, name: &str) -> Option<pg_sys::Oid> {
    let (s, n) = (std::ffi::CString::new(schema).ok()?, std::ffi::CString::new(name).ok()?);
    // SAFETY: catalog lookups by name; missing objects give InvalidOid.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(s.as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(n.as_ptr(), nsp);
        (relid != pg_sys::InvalidOid && pg_sys::get_rel_relkind(relid) as u8 == pg_sys::RELKIND_SEQUENCE)
            .then_some(relid)
    }
}

/// Whether the local sequence `relid` is replicated here for subscription
/// `subid`: it feeds one of the subscription's tables (owned by a column of
/// it, serial or identity, or called by a column default of a table with the
/// same owner: replayed DDL of another role must not be able to point a
/// default at somebody else's sequence to adopt it) or was registered here
/// with `replicate_sequence()`.
fn replicated_here(relid: pg_sys::Oid, subid: i32) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
                SELECT 1 FROM pg_catalog.pg_depend d
                  JOIN logical_ext.subscription_tables st ON st.subid = $2 AND st.relid = d.refobjid
                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = $1
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i'))
             OR EXISTS (
                SELECT 1 FROM pg_catalog.pg_depend d
                  JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
                  JOIN logical_ext.subscription_tables st ON st.subid = $2 AND st.relid = ad.adrelid
                  JOIN pg_catalog.pg_class t ON t.oid = ad.adrelid
                  JOIN pg_catalog.pg_class q ON q.oid = $1
                 WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = $1
                   AND t.relowner OPERATOR(pg_catalog.=) q.relowner)
             OR EXISTS (
                SELECT 1 FROM logical_ext.replicated_sequence r WHERE r.id = $1::pg_catalog.int8 AND r.explicit)",
        &[relid.into(), subid.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read the scope of a replicated sequence: {e}"))
    .unwrap_or(false)
}

/// Move the local `schema.name` forward to `remote` if it is behind and
/// replicated here for subscription `subid` (inside a transaction with an
/// active snapshot).
pub(crate) fn move_forward(schema: &str, name: &str, remote: SeqState, subid: i32) -> Outcome {
    let Some(relid) = lookup(schema, name) else { return Outcome::Missing };
    if !replicated_here(relid, subid) {
        return Outcome::NotReplicatedHere;
    }
    // SAFETY: a heavyweight lock held until the transaction ends.
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::ExclusiveLock as i32) };
    let found = Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT st.last_value, st.is_called, sq.seqincrement, c.relowner \
               FROM pg_catalog.pg_sequence sq JOIN pg_catalog.pg_class c ON c.oid = sq.seqrelid, \
                    logical_ext.sequence_state(sq.seqrelid::pg_catalog.regclass) st \
              WHERE sq.seqrelid = $1",
            Some(1),
            &[relid.into()],
        )?;
        // Dropped between the lookup and the lock: missing after all.
        let Some(row) = rows.next() else { return Ok(None) };
        Ok::<_, pgrx::spi::SpiError>(Some((
            SeqState { last_value: row.get(1)?.unwrap_or(0), is_called: row.get(2)?.unwrap_or(false) },
            row.get::<i64>(3)?.unwrap_or(1),
            row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
        )))
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read sequence \"{schema}\".\"{name}\": {e}"));
    let Some((local, increment, owner)) = found else { return Outcome::Missing };
    match forward(local, remote, increment) {
        Move::Same => Outcome::Same(local),
        Move::Ahead => Outcome::Ahead(local),
        Move::Set(to) => {
            let _as_owner = super::executor::as_table_owner(owner);
            Spi::run_with_args(
                "SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, $3)",
                &[relid.into(), to.last_value.into(), to.is_called.into()],
            )
            .unwrap_or_else(|e| pgrx::error!("logical_ext: could not move sequence \"{schema}\".\"{name}\": {e}"));
            Outcome::Moved(local, to)
        }
    }
}

thread_local! {
    /// Sequences this process already warned about as missing.
    static WARNED: RefCell<HashSet<(String, String)>> = RefCell::new(HashSet::new());
}

/// Apply a `SEQ` document of subscription `subscription` (id `subid`;
/// inside its remote transaction, with an active snapshot).
pub(crate) fn apply(doc: &crate::sequences::message::SeqDoc, subscription: &str, subid: i32) {
    let remote = SeqState { last_value: doc.last_value, is_called: doc.is_called };
    let (message, hint) = match move_forward(&doc.schema, &doc.name, remote, subid) {
        Outcome::Missing => (
            "does not exist on the subscriber",
            format!(
                "Create the sequence here, then run SELECT logical_ext.sync_sequences('{subscription}') to bring it to \
                 the publisher's value; later states are applied as they come."
            ),
        ),
        Outcome::NotReplicatedHere => (
            "does not feed a table of this subscription here",
            format!(
                "To let the publisher move it, run SELECT logical_ext.replicate_sequence('{}.{}') on this node as the \
                 sequence's owner, then SELECT logical_ext.sync_sequences('{subscription}').",
                doc.schema, doc.name
            ),
        ),
        Outcome::Moved(..) | Outcome::Same(_) | Outcome::Ahead(_) => return,
    };
    let first = WARNED.with(|w| w.borrow_mut().insert((doc.schema.clone(), doc.name.clone())));
    if first {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!(
                "logical_ext: subscription \"{subscription}\": sequence \"{}\".\"{}\" {message}; its replicated states \
                 are skipped",
                doc.schema, doc.name
            ),
            function_name!(),
        )
        .set_hint(hint)
        .report(PgLogLevel::WARNING);
    }
}
