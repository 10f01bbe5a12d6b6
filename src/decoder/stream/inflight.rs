//! Streaming of in-progress transactions (the `streaming` option;
//! docs/FORMAT.md, "Streamed transactions").
//!
//! Design notes
//! - PostgreSQL decides what is streamed: when the changes it holds exceed
//!   `logical_decoding_work_mem`, reorderbuffer.c sends the largest
//!   top-level transaction in a block (`stream_start` … changes …
//!   `stream_stop`) instead of spilling it to disk, again for every later
//!   overflow, and the remainder in a last block right before
//!   `stream_commit`. A (sub)transaction that aborts after any block was
//!   sent gets `stream_abort`. Blocks of different transactions never
//!   interleave, but a small transaction can commit (as an ordinary B … C)
//!   between two blocks of a large one.
//! - A block is written like a transaction: its start document (`S`) is
//!   deferred until the block's first document, so a block whose changes
//!   are all filtered out writes nothing; `E` closes only a block that was
//!   opened. `SC`/`SA` are written only for a transaction some block of
//!   this session wrote documents for (`streamed_xids`): a consumer never
//!   hears of a transaction it has nothing of. A commit without any
//!   document is reported as a skipped transaction, as an empty ordinary
//!   one is.
//! - `first` on `S` is true for the first block of a transaction in this
//!   decoding session: after a reconnect PostgreSQL decodes the
//!   transaction again from its start, so a consumer holding earlier blocks
//!   of it must drop them when it sees `first` again.
//! - Start, stop, commit and abort documents are written whatever
//!   `include-transaction` says: without them the changes cannot be told
//!   apart from committed ones.

use super::{Decoder, Sink, Txn, TxnInfo, json, push_txn_fields};

impl Decoder {
    /// `stream_start`: a block of the in-progress transaction `xid` begins.
    pub(crate) fn stream_start(&mut self, xid: u32, origin: u16) {
        self.begin(TxnInfo { xid, origin, commit_lsn: 0, end_lsn: 0, commit_time: 0 });
        if let Some(t) = self.txn.as_mut() {
            t.streamed = true;
        }
    }

    /// The (sub)transaction that made the next change of the block.
    pub(crate) fn stream_subxid(&mut self, subxid: u32) {
        if let Some(t) = self.txn.as_mut() {
            t.subxid = subxid;
        }
    }

    /// Write `S` (called by `ensure_begun` at the block's first document).
    pub(super) fn stream_block_start(&mut self, txn: &Txn, sink: &mut dyn Sink) {
        let first = self.streamed_xids.insert(txn.info.xid);
        if first {
            self.stream_rel_epoch += 1;
        }
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"S\",\"xid\":");
        json::push_int(b, txn.info.xid as i64);
        b.extend_from_slice(if first { b",\"first\":true}" } else { b",\"first\":false}" });
        self.flush(sink);
    }

    /// `stream_stop`: the block ends.
    pub(crate) fn stream_stop(&mut self, sink: &mut dyn Sink) {
        let Some(txn) = self.txn.take() else { return };
        if !txn.begun {
            return;
        }
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"E\",\"xid\":");
        json::push_int(b, txn.info.xid as i64);
        b.push(b'}');
        self.flush(sink);
    }

    /// `stream_commit`: the streamed transaction committed (its last block
    /// was just sent).
    pub(crate) fn stream_commit(&mut self, sink: &mut dyn Sink, info: TxnInfo) {
        self.txn = None;
        if !self.streamed_xids.remove(&info.xid) {
            sink.skipped_transaction();
            return;
        }
        let timestamp = if self.opts.include_timestamp {
            // SAFETY: timestamptz_to_str returns a static buffer we copy at once.
            unsafe { crate::ffi::cstr_to_string(pgrx::pg_sys::timestamptz_to_str(info.commit_time)) }
        } else {
            String::new()
        };
        let (commit_lsn, end_lsn) = (info.commit_lsn, info.end_lsn);
        let txn = Txn { info, timestamp, begun: true, skip: false, entries: 0, streamed: false, subxid: 0 };
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"SC\"");
        // `xid` always; the other fields as on `C`.
        if !self.opts.include_xids {
            b.extend_from_slice(b",\"xid\":");
            json::push_int(b, txn.info.xid as i64);
        }
        push_txn_fields(b, &self.opts, Some(&txn));
        if self.opts.include_lsn {
            b.extend_from_slice(b",\"lsn\":");
            json::push_lsn(b, commit_lsn);
            b.extend_from_slice(b",\"nextlsn\":");
            json::push_lsn(b, end_lsn);
        }
        b.push(b'}');
        self.flush(sink);
    }

    /// `stream_abort`: the transaction `xid` aborted, or only its
    /// subtransaction `subxid` (whose changes, and those of its own
    /// subtransactions, the consumer drops).
    pub(crate) fn stream_abort(&mut self, sink: &mut dyn Sink, xid: u32, subxid: Option<u32>, lsn: u64) {
        self.txn = None;
        // Relation documents of its blocks may be cut off with it (compact).
        self.stream_rel_epoch += 1;
        let known = match subxid {
            None => self.streamed_xids.remove(&xid),
            Some(_) => self.streamed_xids.contains(&xid),
        };
        if !known {
            return;
        }
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"SA\",\"xid\":");
        json::push_int(b, xid as i64);
        if let Some(s) = subxid {
            b.extend_from_slice(b",\"subxid\":");
            json::push_int(b, s as i64);
        }
        if self.opts.include_lsn {
            b.extend_from_slice(b",\"lsn\":");
            json::push_lsn(b, lsn);
        }
        b.push(b'}');
        self.flush(sink);
    }
}
