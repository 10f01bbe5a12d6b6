//! The output plugin's C entry points. Each callback only converts
//! PostgreSQL's pointers into the small structs of `stream.rs`, switches to
//! the per-change memory context and calls safe code; errors become
//! PostgreSQL ERRORs through `#[pg_guard]`.

use super::stream::{Decoder, Dml, Message, RowChange, Sink, Truncate, TxnInfo};
use crate::ffi::{self, ContextSwitch};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Per-slot state hung on `ctx->output_plugin_private`.
pub(super) struct PluginState {
    pub(super) decoder: Decoder,
    change_cxt: pg_sys::MemoryContext,
}

/// PostgreSQL looks this symbol up when a slot uses the `logical_ext` plugin.
///
/// # Safety
/// Called by PostgreSQL with a callbacks struct to fill.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_output_plugin_init(cb: *mut pg_sys::OutputPluginCallbacks) {
    // SAFETY: PostgreSQL passes a valid, zeroed struct.
    let cb = unsafe { &mut *cb };
    cb.startup_cb = Some(startup);
    cb.begin_cb = Some(begin);
    cb.change_cb = Some(change);
    cb.truncate_cb = Some(truncate);
    cb.commit_cb = Some(commit);
    cb.message_cb = Some(message);
    cb.filter_by_origin_cb = Some(filter_by_origin);
    // Two-phase decoding: PostgreSQL uses these only on a slot marked
    // two-phase (option `two-phase`, or created with two_phase => true).
    cb.begin_prepare_cb = Some(begin_prepare);
    cb.prepare_cb = Some(prepare);
    cb.commit_prepared_cb = Some(commit_prepared);
    cb.rollback_prepared_cb = Some(rollback_prepared);
    cb.shutdown_cb = Some(shutdown);
    super::streaming::register(cb);
}

pub(super) struct CtxSink(*mut pg_sys::LogicalDecodingContext);

impl Sink for CtxSink {
    fn write(&mut self, doc: &[u8]) {
        // SAFETY: the context is the one PostgreSQL passed to the running
        // callback; prepare/append/write is the documented write protocol.
        unsafe {
            pg_sys::OutputPluginPrepareWrite(self.0, true);
            let out = &mut *(*self.0).out;
            // A document that fits the buffer is copied in place, as
            // appendBinaryStringInfo would (data, length, terminating NUL):
            // one call into PostgreSQL less per change. Others go through
            // it, which grows the buffer (or raises PostgreSQL's error).
            let (len, max) = (out.len as usize, out.maxlen as usize);
            if max > len && doc.len() < max - len {
                // SAFETY: the StringInfo has maxlen bytes at data, of which
                // len are used; doc.len() + 1 more fit.
                std::ptr::copy_nonoverlapping(doc.as_ptr(), out.data.add(len).cast(), doc.len());
                out.len = (len + doc.len()) as i32;
                *out.data.add(len + doc.len()) = 0;
            } else {
                pg_sys::appendBinaryStringInfo(out, doc.as_ptr().cast(), doc.len() as i32);
            }
            pg_sys::OutputPluginWrite(self.0, true);
        }
    }

    fn skipped_transaction(&mut self) {
        // SAFETY: as above.
        unsafe { pg_sys::OutputPluginUpdateProgress(self.0, true) }
    }
}

/// Run `f` on the session's state inside the per-change memory context,
/// which is reset afterwards so nothing a change allocates outlives it.
///
/// # Safety
/// `ctx` must be a decoding context whose startup callback ran.
pub(super) unsafe fn with_state(ctx: *mut pg_sys::LogicalDecodingContext, f: impl FnOnce(&mut Decoder, &mut CtxSink)) {
    // SAFETY: startup stored a Box<PluginState> here.
    let state = unsafe { &mut *((*ctx).output_plugin_private as *mut PluginState) };
    {
        let _cx = ContextSwitch::to(state.change_cxt);
        f(&mut state.decoder, &mut CtxSink(ctx));
    }
    // Most changes allocate nothing there (values are printed from the
    // datums): the reset, a call into PostgreSQL, is skipped when it would
    // do nothing (MemoryContextReset's own test, plus child contexts, which
    // it deletes in any case).
    // SAFETY: change_cxt is the live context created at startup.
    let untouched = unsafe { (*state.change_cxt).isReset && (*state.change_cxt).firstchild.is_null() };
    if !untouched {
        ffi::reset_memory_context(state.change_cxt);
    }
}

fn options_of(list: *mut pg_sys::List) -> Vec<(String, Option<String>)> {
    // SAFETY: output_plugin_options is a List of DefElem with String args.
    unsafe {
        ffi::ptr_list::<pg_sys::DefElem>(list)
            .into_iter()
            .map(|d| {
                let arg = (*d).arg;
                let value = (!arg.is_null()).then(|| ffi::cstr_to_string((*(arg as *mut pg_sys::String)).sval));
                (ffi::cstr_to_string((*d).defname), value)
            })
            .collect()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    ctx: *mut pg_sys::LogicalDecodingContext,
    opt: *mut pg_sys::OutputPluginOptions,
    is_init: bool,
) {
    register_invalidation_callbacks();
    // A consumer streams from this database: the sequence capture should
    // run (it exits at once if it runs already; src/sequences/capture.rs).
    // SAFETY: backend globals set at start.
    let (walsender, db) = unsafe { (pg_sys::am_walsender, pg_sys::MyDatabaseId) };
    if walsender && crate::apply::preloaded() {
        crate::sequences::start_for_database(db);
    }
    // SAFETY: PostgreSQL passes valid pointers.
    let (ctx, opt) = unsafe { (&mut *ctx, &mut *opt) };
    opt.output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
    opt.receive_rewrites = false;
    let cache_cxt = ffi::new_memory_context(ctx.context, c"logical_ext cache");
    let change_cxt = ffi::new_memory_context(ctx.context, c"logical_ext change");
    let decoder = match Decoder::new(&options_of(ctx.output_plugin_options), cache_cxt) {
        Ok(d) => d,
        Err(e) => {
            ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.message(), function_name!())
                .set_hint(e.hint())
                .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        }
    };
    // PostgreSQL decodes prepares at PREPARE time when the slot is already
    // two-phase or the plugin says the option was given; it then marks the
    // slot two-phase for good (logical.c, CreateDecodingContext).
    ctx.twophase_opt_given = decoder.two_phase();
    // SAFETY: a decoding context has its (acquired) slot.
    let slot_two_phase = !ctx.slot.is_null() && unsafe { (*ctx.slot).data.two_phase };
    if slot_two_phase && decoder.is_v1() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "logical_ext: format-version 1 cannot be used with a two-phase slot",
            function_name!(),
        )
        .set_detail("The slot decodes prepared transactions when they are prepared; a format-version 1 document holds a whole committed transaction.")
        .set_hint("Use format-version 2 (docs/FORMAT.md, \"Two-phase\"), or a slot created without two_phase.")
        .report(PgLogLevel::ERROR);
    }
    // PostgreSQL turned streaming on because the stream callbacks exist;
    // it stays on only when the client asked for it, and not in a two-phase
    // session: a streamed transaction that is then prepared would need a
    // stream_prepare callback, which logical_ext does not have (such a
    // session decodes large transactions whole, spilled, as without the
    // option; docs/FORMAT.md "Streamed transactions").
    ctx.streaming &= decoder.streaming() && !decoder.two_phase() && !slot_two_phase;
    ctx.output_plugin_private = Box::into_raw(Box::new(PluginState { decoder, change_cxt })).cast();
    // A walsender of a failover slot reads only WAL its standbys flushed
    // (logical_ext.standby_slot_names; src/failover/gate.rs).
    crate::failover::gate_walsender(ctx as *mut pg_sys::LogicalDecodingContext, is_init);
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown(ctx: *mut pg_sys::LogicalDecodingContext) {
    // PostgreSQL calls this before deleting `ctx->context`, so the cached
    // shapes and routes delete their child contexts of the cache context
    // while it is alive. (When decoding ends by an ERROR instead, shutdown
    // is not called and the state is never dropped: its contexts go with
    // `ctx->context`, never twice.)
    // SAFETY: startup stored a Box<PluginState>; we take it back once.
    unsafe {
        let p = (*ctx).output_plugin_private as *mut PluginState;
        if !p.is_null() {
            drop(Box::from_raw(p));
            (*ctx).output_plugin_private = std::ptr::null_mut();
        }
    }
}

pub(super) fn txn_info(txn: *mut pg_sys::ReorderBufferTXN) -> TxnInfo {
    // SAFETY: PostgreSQL passes the transaction being replayed.
    let t = unsafe { &*txn };
    TxnInfo {
        xid: t.xid.into_inner(),
        origin: t.origin_id,
        commit_lsn: t.final_lsn,
        end_lsn: t.end_lsn,
        // SAFETY: for a committed transaction the union holds commit_time.
        commit_time: unsafe { t.xact_time.commit_time },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(ctx: *mut pg_sys::LogicalDecodingContext, txn: *mut pg_sys::ReorderBufferTXN) {
    let info = txn_info(txn);
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, _| d.begin(info)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.commit(sink)) }
}

/// The GID of a prepared transaction.
fn gid_of(txn: *mut pg_sys::ReorderBufferTXN) -> Vec<u8> {
    // SAFETY: PostgreSQL sets `gid` (NUL-terminated) on a prepared
    // transaction before calling the prepare callbacks.
    unsafe {
        let gid = (*txn).gid;
        if gid.is_null() { Vec::new() } else { std::ffi::CStr::from_ptr(gid).to_bytes().to_vec() }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn begin_prepare(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    // The union's prepare_time is read as commit_time (same type and place).
    let info = txn_info(txn);
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, _| d.begin(info)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn prepare(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _prepare_lsn: pg_sys::XLogRecPtr,
) {
    let gid = gid_of(txn);
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.prepare(sink, &gid)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn commit_prepared(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    // reorderbuffer.c set final_lsn/end_lsn/commit_time to the COMMIT
    // PREPARED record's.
    let (info, gid) = (txn_info(txn), gid_of(txn));
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.finish_prepared(sink, info, &gid, true)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn rollback_prepared(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _prepare_end_lsn: pg_sys::XLogRecPtr,
    _prepare_time: pg_sys::TimestampTz,
) {
    // As for commit_prepared: the ROLLBACK PREPARED record's position,
    // end and time.
    let (info, gid) = (txn_info(txn), gid_of(txn));
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.finish_prepared(sink, info, &gid, false)) }
}

pub(super) fn tuple_of(buf: *mut pg_sys::ReorderBufferTupleBuf) -> pg_sys::HeapTuple {
    if buf.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a non-null tuple buffer embeds its HeapTupleData.
        unsafe { &mut (*buf).tuple }
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn change(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    rel: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: PostgreSQL passes a valid change; for DML the union holds `tp`.
    let ch = unsafe {
        let c = &*change;
        let dml = match c.action {
            pg_sys::ReorderBufferChangeType::REORDER_BUFFER_CHANGE_INSERT => Dml::Insert,
            pg_sys::ReorderBufferChangeType::REORDER_BUFFER_CHANGE_UPDATE => Dml::Update,
            pg_sys::ReorderBufferChangeType::REORDER_BUFFER_CHANGE_DELETE => Dml::Delete,
            _ => return,
        };
        RowChange { dml, lsn: c.lsn, old: tuple_of(c.data.tp.oldtuple), new: tuple_of(c.data.tp.newtuple) }
    };
    // SAFETY: rel is open for the duration of the callback.
    unsafe { with_state(ctx, |d, sink| d.change(sink, rel, ch)) }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn truncate(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: PostgreSQL passes `nrelations` open relations and a TRUNCATE
    // change whose union holds `truncate`.
    let (rels, t) = unsafe {
        let c = &*change;
        (
            std::slice::from_raw_parts(relations, nrelations as usize),
            Truncate { lsn: c.lsn, cascade: c.data.truncate.cascade, restart_identity: c.data.truncate.restart_seqs },
        )
    };
    // SAFETY: the relations stay open for the callback.
    unsafe { with_state(ctx, |d, sink| d.truncate(sink, rels, t)) }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn message(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    lsn: pg_sys::XLogRecPtr,
    transactional: bool,
    prefix: *const std::ffi::c_char,
    size: pg_sys::Size,
    content: *const std::ffi::c_char,
) {
    // SAFETY: prefix is NUL-terminated; content has `size` bytes.
    let (prefix, content) =
        unsafe { (ffi::cstr_to_string(prefix), std::slice::from_raw_parts(content as *const u8, size)) };
    let m = Message { lsn, transactional, prefix: &prefix, content };
    // SAFETY: a started decoding context.
    unsafe { with_state(ctx, |d, sink| d.message(sink, m)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn filter_by_origin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    origin: pg_sys::RepOriginId,
) -> bool {
    // SAFETY: startup stored a PluginState here; this only reads it.
    let state = unsafe { &*((*ctx).output_plugin_private as *const PluginState) };
    state.decoder.filtered_origin(origin)
}

static CALLBACKS_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Register (once per process; PostgreSQL cannot unregister) the catalog
/// invalidation callbacks that keep the relation caches exact.
fn register_invalidation_callbacks() {
    if CALLBACKS_REGISTERED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: registering plain functions with a dummy argument.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_invalidated), pg_sys::Datum::from(0usize));
        for cache in [
            pg_sys::SysCacheIdentifier::PUBLICATIONOID,
            pg_sys::SysCacheIdentifier::PUBLICATIONRELMAP,
            pg_sys::SysCacheIdentifier::PUBLICATIONNAMESPACEMAP,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(publication_invalidated),
                pg_sys::Datum::from(0usize),
            );
        }
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::TYPEOID as i32,
            Some(type_invalidated),
            pg_sys::Datum::from(0usize),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    super::stream::invalidate_relation((relid != pg_sys::InvalidOid).then_some(relid));
}

#[pg_guard]
unsafe extern "C-unwind" fn publication_invalidated(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    super::stream::invalidate_publications();
}

#[pg_guard]
unsafe extern "C-unwind" fn type_invalidated(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    super::stream::invalidate_relation(None);
}
