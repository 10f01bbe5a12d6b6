//! The C entry points of the stream callbacks (in-progress transactions,
//! docs/FORMAT.md "Streamed transactions"). Registering them makes
//! PostgreSQL turn `ctx->streaming` on; the startup callback (`plugin.rs`)
//! turns it off again unless the client passed the `streaming` option, so
//! without it nothing changes. The documents are written by
//! `stream/inflight.rs`; changes, truncates and messages of a block go
//! through the ordinary callbacks of `plugin.rs` once the (sub)transaction
//! that made them is noted.

use super::plugin::{self, with_state};
use super::stream::TxnInfo;
use pgrx::pg_sys;
use pgrx::prelude::*;

pub(super) fn register(cb: &mut pg_sys::OutputPluginCallbacks) {
    cb.stream_start_cb = Some(stream_start);
    cb.stream_stop_cb = Some(stream_stop);
    cb.stream_abort_cb = Some(stream_abort);
    cb.stream_commit_cb = Some(stream_commit);
    cb.stream_change_cb = Some(stream_change);
    cb.stream_truncate_cb = Some(stream_truncate);
    cb.stream_message_cb = Some(stream_message);
}

/// The top-level xid of `txn` and, for a subtransaction, its own.
fn xids(txn: *mut pg_sys::ReorderBufferTXN) -> (u32, Option<u32>) {
    // SAFETY: PostgreSQL passes a live transaction; `toptxn` is NULL or its
    // top-level transaction.
    unsafe {
        let t = &*txn;
        if t.toptxn.is_null() {
            (t.xid.into_inner(), None)
        } else {
            ((*t.toptxn).xid.into_inner(), Some(t.xid.into_inner()))
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_start(ctx: *mut pg_sys::LogicalDecodingContext, txn: *mut pg_sys::ReorderBufferTXN) {
    let (xid, _) = xids(txn);
    // SAFETY: PostgreSQL passes the transaction being streamed.
    let origin = unsafe { (*txn).origin_id };
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, _| d.stream_start(xid, origin)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_stop(ctx: *mut pg_sys::LogicalDecodingContext, _txn: *mut pg_sys::ReorderBufferTXN) {
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.stream_stop(sink)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_abort(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    abort_lsn: pg_sys::XLogRecPtr,
) {
    let (xid, subxid) = xids(txn);
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.stream_abort(sink, xid, subxid, abort_lsn)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    let info: TxnInfo = plugin::txn_info(txn);
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.stream_commit(sink, info)) }
}

/// Note which (sub)transaction made the change about to be written.
///
/// # Safety
/// `ctx` must be a started decoding context; `change` a live change.
unsafe fn note_subxid(ctx: *mut pg_sys::LogicalDecodingContext, change: *mut pg_sys::ReorderBufferChange) {
    // SAFETY: a queued change points to the (sub)transaction that made it.
    let subxid = unsafe {
        let t = (*change).txn;
        if t.is_null() { 0 } else { (*t).xid.into_inner() }
    };
    // SAFETY: as required by this function.
    unsafe { with_state(ctx, |d, _| d.stream_subxid(subxid)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_change(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    rel: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: PostgreSQL passes a started context and a live change; the
    // ordinary callback does the rest with the same arguments.
    unsafe {
        note_subxid(ctx, change);
        plugin::change(ctx, txn, rel, change)
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_truncate(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: as in stream_change.
    unsafe {
        note_subxid(ctx, change);
        plugin::truncate(ctx, txn, nrelations, relations, change)
    }
}

/// PostgreSQL passes no change here, so a message of a block carries the
/// top-level xid only (as pgoutput's streamed messages do).
#[pg_guard]
unsafe extern "C-unwind" fn stream_message(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    lsn: pg_sys::XLogRecPtr,
    transactional: bool,
    prefix: *const std::ffi::c_char,
    size: pg_sys::Size,
    content: *const std::ffi::c_char,
) {
    // SAFETY: as in stream_change.
    unsafe {
        with_state(ctx, |d, _| d.stream_subxid(0));
        plugin::message(ctx, txn, lsn, transactional, prefix, size, content)
    }
}
