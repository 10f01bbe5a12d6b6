//! Streamed transactions in the apply worker (subscription option
//! `streaming`; docs/FORMAT.md "Streamed transactions", docs/SYNC.md).
//!
//! The documents of a block (`S` … `E`) are spooled to the transaction's
//! file (`apply/spool.rs`), a subtransaction abort (`SA` with `subxid`)
//! cuts the file back, a whole abort removes it, and the stream commit
//! (`SC`) replays the file through the ordinary path, `apply_doc`, between
//! a BEGIN and a COMMIT made of the `SC`'s commit LSN, end LSN and time: the
//! same conflict handling, roles, skip_transaction, origin progress and
//! flush tracking as a transaction sent whole. This is PostgreSQL 15's
//! design (worker.c spools to a BufFile and applies at stream commit), so
//! the subscriber still applies everything after the publisher's commit.
//! Unless it is applied while it arrives (`eager.rs`): then each document of
//! its blocks is applied at once and not spooled, the stream commit only
//! commits, and anything else arriving between its blocks rolls it back and
//! ends the session; the next one receives it again from its first block
//! and takes this spool-and-replay path for it.
//!
//! Compact documents (docs/FORMAT.md "Compact documents"): a block's rows
//! refer to relation documents (`R`) of the same streamed transaction,
//! which the publisher writes into its blocks; they are read into a map of
//! that transaction's own, never into the session's (`Worker::compact`),
//! which the ordinary transactions committed between its blocks use: one
//! map while it is applied as it arrives (`eager_rels`), a fresh one for
//! each replay of its spool. An older publisher's full documents need none.
//!
//! Exactly once:
//! - Progress (the origin's position) moves only in the local commit of
//!   the replay. A crash or error before it loses the spool (files are
//!   removed by Drop, or by PostgreSQL at the next start), and the
//!   publisher sends the whole transaction again: its commit lies past
//!   anything confirmed.
//! - Between blocks the flush tracker reports what was received as flushed
//!   (as native PG15 does): that can pass the open transaction's start but
//!   never its commit, and PostgreSQL decodes it again from its start after
//!   a reconnect (the slot's restart_lsn stays before it). Holding the
//!   report back instead would keep a publisher's shutdown waiting forever
//!   for a transaction its shutdown aborted.
//! - While an `SC` is replayed the report is held at the last durable
//!   commit (`replaying` counts as open work, set before the message is
//!   handled, since the `SC` arrives at the transaction's end LSN).

use super::Worker;
use super::eager::{Eager, FallBack};
use super::stream::Session;
use crate::apply::protocol;
use crate::apply::spool::{self, Control, Spool};
use std::path::PathBuf;

/// The session's streamed transactions.
#[derive(Default)]
pub(in crate::apply::worker) struct Streamed {
    spool: Option<Spool>,
    /// The transaction whose block is open.
    block: Option<u32>,
    /// The message being handled is a stream commit.
    pub(super) replaying: bool,
    /// The streamed transaction applied while it arrives (`eager.rs`).
    pub(super) eager: Option<Eager>,
    /// The compact relation documents of the eager transaction's blocks.
    eager_rels: protocol::CompactRels,
}

impl Streamed {
    /// A streamed transaction is being applied while it arrives: its local
    /// transaction is open (`in_txn`), between its blocks too.
    pub(super) fn eager_open(&self) -> bool {
        self.eager.is_some()
    }

    /// ... and none of its blocks is open.
    pub(super) fn eager_idle(&self) -> bool {
        self.eager.is_some() && self.block.is_none()
    }

    /// A conflict was met in the eager transaction (`documents.rs`).
    pub(super) fn conflict_met(&mut self) {
        if let Some(e) = self.eager.as_mut() {
            e.conflicted = true;
        }
    }

    /// Called for every message before it is handled.
    pub(super) fn incoming(&mut self, payload: &[u8]) {
        self.replaying = spool::is_stream_commit(payload);
    }

    fn spool(&mut self) -> &mut Spool {
        self.spool.get_or_insert_with(|| {
            // The backend's working directory is the data directory.
            Spool::new(PathBuf::from("base/pgsql_tmp"), format!("logical_ext.{}", std::process::id()))
        })
    }
}

impl Worker {
    /// Handle `payload` when it belongs to a streamed transaction (a
    /// control document, or a document inside a block); false otherwise.
    pub(super) fn streamed_doc(&mut self, ses: &mut Session, payload: &[u8], lsn: u64) -> Result<bool, String> {
        let at = || protocol::format_lsn(lsn);
        let eager_xid = ses.streamed.eager.as_ref().map(|e| e.xid);
        let Some(control) = spool::control(payload) else {
            let Some(xid) = ses.streamed.block else {
                // Another transaction between the eager one's blocks: when
                // that ends the session, the next one receives this again.
                self.eager_fall_back(ses, FallBack::Interleaved)?;
                return Ok(ses.reload);
            };
            let (doc_xid, subxid) = spool::block_tag(payload)
                .ok_or_else(|| format!("a document without xid inside a block at {}", at()))?;
            if doc_xid != xid {
                return Err(format!("a document of transaction {doc_xid} inside a block of {xid} at {}", at()));
            }
            if eager_xid == Some(xid) {
                let mut rels = std::mem::take(&mut ses.streamed.eager_rels);
                self.with_block_rels(&mut rels, |w| w.eager_doc(ses, subxid, payload, lsn))?;
                ses.streamed.eager_rels = rels;
            } else {
                ses.streamed.spool().append(xid, subxid, lsn, payload)?;
            }
            return Ok(true);
        };
        let control = control.map_err(|e| format!("{e} at {}", at()))?;
        if ses.in_txn && eager_xid.is_none() {
            return Err(format!("a stream document inside a transaction at {}", at()));
        }
        match control {
            Control::Start { xid, first } => {
                if ses.streamed.block.is_some() {
                    return Err(format!("a block starts inside another at {}", at()));
                }
                if eager_xid.is_some() && (eager_xid != Some(xid) || first) {
                    self.eager_fall_back(ses, FallBack::Interleaved)?;
                } else {
                    self.eager_checks(ses)?;
                }
                if ses.reload {
                    // The eager transaction fell back: the session ends.
                    return Ok(true);
                }
                ses.streamed.block = Some(xid);
                if first && self.eager_allowed(ses, xid) {
                    // Applied while it arrives, not spooled (`eager.rs`).
                    ses.streamed.spool().abort(xid);
                    ses.streamed.eager_rels = Default::default();
                    self.eager_begin(ses, xid, lsn)?;
                } else if eager_xid != Some(xid) {
                    ses.streamed.spool().start(xid, first)?;
                }
            }
            Control::Stop { xid } => {
                if ses.streamed.block != Some(xid) {
                    return Err(format!("end of a block that is not open at {}", at()));
                }
                if eager_xid != Some(xid) {
                    ses.streamed.spool().stop(xid)?;
                }
                ses.streamed.block = None;
            }
            Control::Abort { xid, subxid } => match subxid {
                Some(sub) => {
                    if eager_xid == Some(xid) {
                        self.eager_abort_subxact(ses, sub);
                    } else {
                        ses.streamed.spool().abort_subxact(xid, sub)?;
                    }
                }
                None => {
                    if eager_xid == Some(xid) {
                        self.eager_fall_back(ses, FallBack::Aborted)?;
                    }
                    self.eager_forget(xid);
                    ses.streamed.spool().abort(xid)
                }
            },
            Control::Commit { xid, commit_lsn, end_lsn, timestamp } => {
                let end = end_lsn
                    .as_deref()
                    .and_then(protocol::parse_lsn)
                    .ok_or_else(|| format!("stream commit without a valid \"nextlsn\" at {}", at()))?;
                if eager_xid == Some(xid) {
                    self.eager_checks(ses)?;
                } else {
                    self.eager_fall_back(ses, FallBack::Interleaved)?;
                }
                if ses.reload {
                    // The eager transaction fell back: the session ends.
                    return Ok(true);
                }
                self.eager_forget(xid);
                if ses.streamed.eager.is_some() {
                    // Applied while it arrived: only the commit is left.
                    let commit = commit_lsn.as_deref().and_then(protocol::parse_lsn);
                    self.eager_commit(ses, commit, end, timestamp.as_deref(), lsn)?;
                    ses.streamed.replaying = false;
                    return Ok(true);
                }
                let Some(mut reader) = ses.streamed.spool().commit(xid)? else {
                    return Err(format!("stream commit of transaction {xid}, of which nothing arrived, at {}", at()));
                };
                let ts = timestamp.map_or_else(|| "null".to_string(), |t| format!("\"{t}\""));
                let lsn_field = commit_lsn.map_or_else(String::new, |l| format!(",\"lsn\":\"{l}\""));
                let begin = format!("{{\"action\":\"B\",\"timestamp\":{ts}{lsn_field}}}");
                self.apply_message(ses, begin.as_bytes(), lsn)?;
                // The spool describes its own relations (see the notes).
                self.with_block_rels(&mut protocol::CompactRels::default(), |w| {
                    let mut buf = Vec::new();
                    while let Some(doc_lsn) = reader.next(&mut buf)? {
                        w.apply_message(ses, &buf, doc_lsn)?;
                    }
                    Ok(())
                })?;
                drop(reader);
                let commit =
                    format!("{{\"action\":\"C\",\"timestamp\":{ts},\"nextlsn\":\"{}\"}}", protocol::format_lsn(end));
                self.apply_message(ses, commit.as_bytes(), lsn)?;
                ses.streamed.replaying = false;
            }
        }
        Ok(true)
    }
}

impl Worker {
    /// Run `f` (documents of a streamed transaction's blocks) with `rels`
    /// as the compact relation documents in place of the session's.
    ///
    /// On an error the block's map deliberately stays in place: the error
    /// ends the session (the next one starts with an empty map,
    /// `worker.rs`), and the failure report parses the in-flight document
    /// again (`failure.rs`), which must find the relation it names.
    fn with_block_rels(
        &mut self,
        rels: &mut protocol::CompactRels,
        f: impl FnOnce(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        std::mem::swap(&mut self.compact, rels);
        f(self)?;
        std::mem::swap(&mut self.compact, rels);
        Ok(())
    }
}
