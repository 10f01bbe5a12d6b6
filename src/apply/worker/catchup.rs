//! A sync worker catching its freshly copied table up with the stream
//! (`apply/tablesync.rs` tells the whole hand-over): it streams the
//! temporary slot its copy's snapshot came from, from that snapshot `S` up
//! to the apply worker's position `T`, and applies the table's changes of
//! every transaction committed before `T` — with the apply worker's own
//! document application (`documents.rs`), restricted to that table
//! ([`TableScope`]): same conflict detection, as the table's owner, each
//! remote transaction one local transaction carrying the copy's
//! replication origin. DDL, `skip_transaction` and the subscription's
//! status belong to the apply worker and are left alone.
//!
//! It stops at the first transaction committed at or after `T`, or once
//! the stream's position (a keepalive) has passed `T` with no transaction
//! open. It asks the publisher for its position now and then, so an idle
//! publisher does not keep it waiting, and gives a silent connection up
//! after `wal_receiver_timeout`, as the apply worker does.

use super::Worker;
use super::stream::Session;
use crate::apply::catalog::Subscription;
use crate::apply::keepalive::Due;
use crate::apply::origin::{self, OriginSession};
use crate::apply::protocol::{self, Doc, Inbound, RemoteRel};
use crate::apply::relation::RelationMap;
use crate::apply::resolver;
use crate::apply::sync::{catalog, worker::describe};
use crate::apply::walrcv::{Connection, Received};
use crate::ffi::worker::{self as backend, in_transaction, now_ts};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How often the catch-up asks the publisher for its position while
/// nothing arrives.
const PING_INTERVAL: Duration = Duration::from_millis(200);

/// The one table a catching-up sync worker applies.
pub(super) struct TableScope {
    schema: String,
    table: String,
    /// The replication origins of the subscription's copies (conflict
    /// detection counts their rows as the subscription's).
    pub(super) copy_origins: Vec<u16>,
}

impl TableScope {
    pub(super) fn is(&self, rel: &RemoteRel) -> bool {
        rel.table == self.table && rel.schema == self.schema
    }
}

/// What to catch up: `sub`'s table `schema.table`, from the snapshot at
/// `from` (where `slot` starts) to the apply worker's position `until`.
pub(crate) struct CatchUp {
    pub(crate) dboid: u32,
    pub(crate) sub: Subscription,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) slot: String,
    /// The replication origin the copy committed with.
    pub(crate) copy_origin: String,
    pub(crate) from: u64,
    pub(crate) until: u64,
}

/// Apply the table's changes committed in `[from, until)` from `conn`
/// (idle, holding the temporary slot). Errors come with their SQLSTATE, as
/// `last_error` keeps them; a conflict resolved as `error` is logged.
pub(crate) fn catch_up(work: CatchUp, conn: &mut Connection) -> Result<(), String> {
    let mut w = Worker::new(work.dboid, work.sub.id, 0);
    let ident =
        in_transaction(|| conn.exec("IDENTIFY_SYSTEM", 4)).map_err(|e| format!("IDENTIFY_SYSTEM failed: {}", e.0))?;
    w.remote_node = ident.first().and_then(|r| r[0].as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let (rules, copy_origins) = in_transaction(|| {
        let (o, _) = OriginSession::attach(&work.copy_origin);
        w.origin = Some(o);
        (resolver::load_rules(&work.sub.name), catalog::copy_origins(work.sub.id))
    });
    w.rules = rules;
    w.scope = Some(TableScope { schema: work.schema, table: work.table, copy_origins });
    w.relmap = Some(RelationMap::new());
    crate::apply::executor::set_run_as_owner(work.sub.options.run_as_owner);
    // Full documents: a catch-up is short, and needs no fallback.
    let cmd = super::start_replication(&work.sub, &work.slot, work.from, super::Wire::Full);
    let mut sub = work.sub;
    // The apply worker's request, not this table's business.
    sub.skip_lsn = None;
    w.sub = Some(sub);
    conn.exec(&cmd, 0).map_err(|e| format!("could not start replication: {}", e.0))?;

    let mut ses = Session::new(work.from, false);
    let until = work.until;
    let follow = AssertUnwindSafe(|| w.follow(conn, &mut ses, until));
    let outcome = PgTryBuilder::new(follow).catch_others(|e| Err(describe(e))).execute();
    drop(ses);
    if outcome.is_err() {
        // Nothing after a failure may carry the origin; the failed
        // transaction is rolled back before the conflict record is written.
        origin::disarm();
        // SAFETY: abandon whatever transaction the error left open.
        unsafe { pg_sys::AbortCurrentTransaction() };
        if let Some(rec) = w.failed_conflict.take() {
            in_transaction(|| resolver::log(&rec));
        }
    }
    outcome
}

impl Worker {
    /// Stream and apply until the position `until` is reached (see the
    /// module notes).
    fn follow(&mut self, conn: &mut Connection, ses: &mut Session, until: u64) -> Result<(), String> {
        let mut last_ping = Instant::now();
        // As in the apply worker's stream: feedback keeps flowing while a
        // change waits (a lock, a slow trigger); without a keeper the
        // catch-up still works, a very long wait just costs a new copy.
        let keeper = conn.feedback_keeper().ok();
        loop {
            backend::check_for_interrupts();
            if !ses.in_txn && ses.last_received >= until {
                return Ok(());
            }
            let mut reply_now = false;
            match conn.receive() {
                Received::Data(buf) => {
                    ses.timer.received(now_ts());
                    match protocol::parse_inbound(buf).map_err(|e| e.0)? {
                        Inbound::XLogData { start, wal_end, payload, .. } => {
                            if !ses.in_txn && commits_at_or_after(payload, until, &self.compact) {
                                return Ok(());
                            }
                            ses.last_received = ses.last_received.max(start).max(wal_end);
                            let busy = ses.busy(keeper.as_ref());
                            self.apply_message(ses, payload, start)?;
                            ses.idle(busy);
                        }
                        Inbound::Keepalive { wal_end, reply_requested, .. } => {
                            ses.last_received = ses.last_received.max(wal_end);
                            reply_now = reply_requested;
                        }
                    }
                }
                Received::WouldBlock(fd) => {
                    if last_ping.elapsed() >= PING_INTERVAL {
                        last_ping = Instant::now();
                        self.send_feedback(conn, ses, true);
                    }
                    let timeout_ms = backend::wal_receiver_timeout_ms();
                    if backend::wait_socket(fd, PING_INTERVAL) && ses.timer.check(now_ts(), timeout_ms) == Due::Timeout
                    {
                        return Err(format!(
                            "catching the table up: nothing received from the publisher for wal_receiver_timeout \
                             ({timeout_ms} ms)"
                        ));
                    }
                }
                Received::End => return Err("the publisher ended the replication stream".into()),
            }
            if reply_now {
                self.send_feedback(conn, ses, false);
            }
        }
    }
}

/// Whether `payload` begins a transaction committed at or after `lsn`.
fn commits_at_or_after(payload: &[u8], lsn: u64, rels: &protocol::CompactRels) -> bool {
    matches!(protocol::parse_doc(payload, rels), Ok(Doc::Begin { commit_lsn: Some(c), .. }) if c >= lsn)
}
