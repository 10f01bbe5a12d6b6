//! One decoding session: the options, the relation caches, the transaction
//! being replayed, and the writing of every document of docs/FORMAT.md.
//!
//! The plugin layer (`plugin.rs`) turns PostgreSQL's callback arguments into
//! the small structs below and calls a [`Decoder`] method inside a per-change
//! memory context, which it resets afterwards; documents are written through a
//! [`Sink`] one at a time, so memory stays bounded whatever the size of a
//! transaction.
//!
//! BEGIN is deferred until the first document of a transaction is written, so
//! a transaction whose changes are all filtered out produces nothing (and the
//! sink is told it was skipped, so that the walsender can still confirm
//! progress).

use super::compact;
use super::json;
use super::limit;
use super::options::{FormatVersion, OptionError, Options, OriginMode, OriginRef};
use super::publication::{FilterAction, PubDef, Route, check_publications_exist, load_publications};
use super::shape::Shape;
use super::twophase;
use super::v1;
use super::values;
use crate::ffi;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

mod inflight;

/// Relation caches are keyed by OID: hashing a u32 needs no SipHash.
#[derive(Default)]
struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v);
    }
}

type OidMap<V> = HashMap<pg_sys::Oid, V, BuildHasherDefault<OidHasher>>;

/// Where documents go (the walsender or the SQL function's tuplestore).
pub(crate) trait Sink {
    fn write(&mut self, doc: &[u8]);
    /// Report progress for a transaction that produced no output.
    fn skipped_transaction(&mut self);
}

/// The transaction fields the stream prints.
pub(crate) struct TxnInfo {
    pub(crate) xid: u32,
    pub(crate) origin: u16,
    pub(crate) commit_lsn: u64,
    pub(crate) end_lsn: u64,
    pub(crate) commit_time: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dml {
    Insert,
    Update,
    Delete,
}

/// A row change, with its tuples (NULL when absent).
pub(crate) struct RowChange {
    pub(crate) dml: Dml,
    pub(crate) lsn: u64,
    pub(crate) old: pg_sys::HeapTuple,
    pub(crate) new: pg_sys::HeapTuple,
}

pub(crate) struct Truncate {
    pub(crate) lsn: u64,
    pub(crate) cascade: bool,
    pub(crate) restart_identity: bool,
}

pub(crate) struct Message<'a> {
    pub(crate) lsn: u64,
    pub(crate) transactional: bool,
    pub(crate) prefix: &'a str,
    pub(crate) content: &'a [u8],
}

// Invalidations arrive through process-wide callbacks (registered once per
// backend in plugin.rs); they are only noted here and applied at the next
// cache lookup, never in the middle of building an entry. DIRTY, read once
// per change, is a plain static: a thread-local costs a call to
// __tls_get_addr in a shared library, and a backend has one thread.
static DIRTY: AtomicBool = AtomicBool::new(false);
thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

#[derive(Default)]
struct Pending {
    all: bool,
    publications: bool,
    rels: Vec<pg_sys::Oid>,
}

/// Note a relcache invalidation (`None`: every relation).
pub(crate) fn invalidate_relation(relid: Option<pg_sys::Oid>) {
    PENDING.with_borrow_mut(|p| match relid {
        Some(r) if p.rels.len() < 1024 => p.rels.push(r),
        _ => p.all = true,
    });
    DIRTY.store(true, Ordering::Relaxed);
}

/// Note a publication catalog change: every route must be recomputed.
pub(crate) fn invalidate_publications() {
    PENDING.with_borrow_mut(|p| {
        p.publications = true;
        p.all = true;
    });
    DIRTY.store(true, Ordering::Relaxed);
}

/// The document buffer's initial capacity, and the most it keeps between
/// documents.
const BUF_INITIAL: usize = 8192;
const BUF_KEEP: usize = 16 << 20;

struct Txn {
    info: TxnInfo,
    timestamp: String,
    begun: bool,
    skip: bool,
    /// format-version 1: entries written so far (wal2json's separator rule).
    entries: u64,
    /// A block of an in-progress transaction (`inflight.rs`): its documents
    /// always carry `xid`, and `subxid` when a subtransaction made the change.
    streamed: bool,
    /// The (sub)transaction that made the change being written (streamed).
    subxid: u32,
}

pub(crate) struct Decoder {
    opts: Options,
    /// Parent of the memory contexts of the cached shapes and routes, which
    /// own (and delete on drop) everything PostgreSQL allocated for them:
    /// dropping an entry on an invalidation frees it, so a walsender that
    /// lives for months stays flat. The decoder must be dropped before this
    /// context is deleted (plugin.rs drops it in the shutdown callback).
    cache_cxt: pg_sys::MemoryContext,
    shapes: OidMap<Shape>,
    routes: OidMap<Route>,
    publications: Option<Vec<PubDef>>,
    origin_ids: Vec<u16>,
    origin_names: Vec<String>,
    txn: Option<Txn>,
    buf: Vec<u8>,
    new_vals: (Vec<pg_sys::Datum>, Vec<bool>),
    old_vals: (Vec<pg_sys::Datum>, Vec<bool>),
    /// A partition's row before it is mapped to its published ancestor's.
    src_vals: (Vec<pg_sys::Datum>, Vec<bool>),
    unchanged: Vec<usize>,
    /// format-version 1: whitespace, the columns chosen for an array, and
    /// the transaction's document (without `write-in-chunks`).
    ws: v1::Ws,
    v1_items: Vec<v1::Item>,
    txn_doc: Vec<u8>,
    /// Row documents waiting to leave as one message (option `batch`).
    batch: Vec<u8>,
    /// Top-level xids of in-progress transactions a streamed block of this
    /// session wrote documents for (`inflight.rs`).
    streamed_xids: std::collections::HashSet<u32>,
    /// Option `compact`: bumped whenever relation documents written in
    /// streamed blocks may have been dropped by the consumer (a
    /// subtransaction's or transaction's abort cuts them off with it; a
    /// transaction's first block starts over): every relation is then
    /// described again before its next row in a block.
    stream_rel_epoch: u64,
}

impl Decoder {
    pub(crate) fn new(
        pairs: &[(String, Option<String>)],
        cache_cxt: pg_sys::MemoryContext,
    ) -> Result<Decoder, OptionError> {
        let opts = super::options::parse(pairs)?;
        if let Some(names) = &opts.publication_names {
            check_publications_exist(names);
        }
        let mut origin_ids = Vec::new();
        let mut origin_names = Vec::new();
        for o in &opts.filter_origins {
            match o {
                OriginRef::Id(id) => origin_ids.push(*id),
                OriginRef::Name(n) => origin_names.push(n.clone()),
            }
        }
        let opts_pretty = opts.pretty_print;
        Ok(Decoder {
            opts,
            cache_cxt,
            shapes: OidMap::default(),
            routes: OidMap::default(),
            publications: None,
            origin_ids,
            origin_names,
            txn: None,
            buf: Vec::with_capacity(BUF_INITIAL),
            new_vals: (Vec::new(), Vec::new()),
            old_vals: (Vec::new(), Vec::new()),
            src_vals: (Vec::new(), Vec::new()),
            unchanged: Vec::new(),
            ws: v1::Ws::new(opts_pretty),
            v1_items: Vec::new(),
            txn_doc: Vec::new(),
            batch: Vec::new(),
            streamed_xids: Default::default(),
            stream_rel_epoch: 0,
        })
    }

    /// Whether the client asked for in-progress transactions (`streaming`).
    pub(crate) fn streaming(&self) -> bool {
        self.opts.streaming
    }

    /// `filter_by_origin_cb`: drop a transaction before it is even queued.
    /// Origin names are resolved lazily (inside a transaction) by `begin`.
    pub(crate) fn filtered_origin(&self, origin: u16) -> bool {
        origin != 0 && (self.opts.origin == OriginMode::None || self.origin_ids.contains(&origin))
    }

    fn resolve_origin_names(&mut self) {
        // SAFETY: IsTransactionState only reads the transaction state.
        if self.origin_names.is_empty() || !unsafe { pg_sys::IsTransactionState() } {
            return;
        }
        let ids = &mut self.origin_ids;
        self.origin_names.retain(|name| {
            let c = std::ffi::CString::new(name.as_str()).expect("option text has no NUL");
            // SAFETY: catalog lookup inside a transaction; missing_ok.
            let id = unsafe { pg_sys::replorigin_by_name(c.as_ptr(), true) };
            if id != 0 {
                ids.push(id);
            }
            id == 0
        });
    }

    pub(crate) fn begin(&mut self, info: TxnInfo) {
        self.resolve_origin_names();
        self.shapes.values().for_each(Shape::forget_memos);
        let skip = self.filtered_origin(info.origin);
        let timestamp = if self.opts.include_timestamp {
            // SAFETY: timestamptz_to_str returns a static buffer we copy at once.
            unsafe { ffi::cstr_to_string(pg_sys::timestamptz_to_str(info.commit_time)) }
        } else {
            String::new()
        };
        // (A document left by a transaction whose decoding raised an ERROR
        // is never continued.)
        self.txn_doc.clear();
        self.txn = Some(Txn { info, timestamp, begun: false, skip, entries: 0, streamed: false, subxid: 0 });
    }

    pub(crate) fn commit(&mut self, sink: &mut dyn Sink) {
        let Some(txn) = self.txn.take() else { return };
        if !txn.begun {
            sink.skipped_transaction();
            return;
        }
        self.emit_batch(sink);
        if self.v1() {
            let chunked = self.opts.write_in_chunks;
            if chunked {
                self.buf.clear();
                v1::footer(&mut self.buf, self.ws, true);
                sink.write(&self.buf);
            } else {
                limit::reserve(&mut self.txn_doc, 8);
                v1::footer(&mut self.txn_doc, self.ws, false);
                limit::check(&self.txn_doc);
                sink.write(&self.txn_doc);
                self.txn_doc.clear();
                if self.txn_doc.capacity() > BUF_KEEP {
                    self.txn_doc = Vec::new();
                }
            }
            return;
        }
        if self.opts.include_transaction {
            self.buf.clear();
            self.txn_head(&txn, b'C');
            self.buf.push(b'}');
            self.flush(sink);
        }
    }

    /// Write `{"action":"B"|"C"…}`'s fields without the closing brace.
    fn txn_head(&mut self, txn: &Txn, action: u8) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"action\":\"");
        b.push(action);
        b.push(b'"');
        push_txn_fields(b, &self.opts, Some(txn));
        if self.opts.include_lsn {
            b.extend_from_slice(b",\"lsn\":");
            json::push_lsn(b, txn.info.commit_lsn);
            b.extend_from_slice(b",\"nextlsn\":");
            json::push_lsn(b, txn.info.end_lsn);
        }
    }

    /// Write the BEGIN document if this is the transaction's first output.
    fn ensure_begun(&mut self, sink: &mut dyn Sink) {
        if self.txn.as_ref().is_none_or(|t| t.begun) {
            return;
        }
        let Some(mut txn) = self.txn.take() else { return };
        if !txn.begun {
            txn.begun = true;
            if txn.streamed {
                self.stream_block_start(&txn, sink);
            } else if self.v1() {
                let head = v1::Head {
                    xid: txn.info.xid,
                    end_lsn: txn.info.end_lsn,
                    timestamp: &txn.timestamp,
                    origin: txn.info.origin,
                };
                self.buf.clear();
                v1::header(&mut self.buf, self.ws, &self.opts, &head);
                self.emit_v1(sink);
            } else if self.opts.include_transaction {
                self.buf.clear();
                self.txn_head(&txn, b'B');
                self.buf.push(b'}');
                self.flush(sink);
            }
        }
        self.txn = Some(txn);
    }

    fn v1(&self) -> bool {
        self.opts.format_version == FormatVersion::V1
    }

    /// format-version 1: the next transaction entry (`txn.entries`, counted
    /// here).
    fn next_entry(&mut self) -> u64 {
        self.txn.as_mut().map_or(1, |t| {
            t.entries += 1;
            t.entries
        })
    }

    /// format-version 1: send the piece in `buf` as its own row
    /// (`write-in-chunks`) or append it to the transaction's document,
    /// which must stay within PostgreSQL's 1 GB limit.
    fn emit_v1(&mut self, sink: &mut dyn Sink) {
        if self.opts.write_in_chunks {
            limit::check(&self.buf);
            sink.write(&self.buf);
        } else {
            limit::reserve(&mut self.txn_doc, self.buf.len());
            self.txn_doc.extend_from_slice(&self.buf);
            limit::check(&self.txn_doc);
        }
        if self.buf.capacity() > BUF_KEEP {
            self.buf = Vec::with_capacity(BUF_INITIAL);
        }
    }

    fn flush(&mut self, sink: &mut dyn Sink) {
        // Every other document leaves after the rows batched before it.
        self.emit_batch(sink);
        // wal2json ignores pretty-print in format-version 2: one document
        // per line stays one line.
        limit::check(&self.buf);
        sink.write(&self.buf);
        // A huge document's buffer is not kept for the rest of the session.
        if self.buf.capacity() > BUF_KEEP {
            self.buf = Vec::with_capacity(BUF_INITIAL);
        }
    }

    /// Write the batched row documents as one message.
    fn emit_batch(&mut self, sink: &mut dyn Sink) {
        if self.batch.is_empty() {
            return;
        }
        sink.write(&self.batch);
        self.batch.clear();
        if self.batch.capacity() > BUF_KEEP {
            self.batch = Vec::new();
        }
    }

    fn skipping(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.skip)
    }

    fn apply_invalidations(&mut self) {
        if !DIRTY.load(Ordering::Relaxed) {
            return;
        }
        DIRTY.store(false, Ordering::Relaxed);
        let p = PENDING.take();
        if p.publications {
            self.publications = None;
        }
        if p.all {
            self.shapes.clear();
            self.routes.clear();
        } else {
            for r in &p.rels {
                self.shapes.remove(r);
            }
            self.routes.retain(|relid, route| !p.rels.contains(relid) && !p.rels.contains(&route.emit_as));
        }
    }

    /// The cached route of `rel`, computed on first use.
    ///
    /// # Safety
    /// `rel` must be open; inside a decoding callback.
    unsafe fn route(&mut self, rel: pg_sys::Relation) -> &Route {
        // SAFETY: rel is open.
        let relid = unsafe { (*rel).rd_id };
        if !self.routes.contains_key(&relid) {
            // SAFETY: rel is open.
            let own = ffi::namespace_name(unsafe { (*(*rel).rd_rel).relnamespace }) == "logical_ext";
            let route = match &self.opts.publication_names {
                // logical_ext's own tables (subscriptions, logs) are this
                // node's bookkeeping: never streamed.
                _ if own => Route::direct(relid, super::options::Actions::NONE),
                None => Route::direct(relid, self.opts.actions),
                Some(names) => {
                    let pubs = self.publications.get_or_insert_with(|| load_publications(names));
                    // SAFETY: as required by this function.
                    let mut r = unsafe { Route::published(rel, pubs, self.cache_cxt) };
                    r.actions = r.actions.intersect(self.opts.actions);
                    r
                }
            };
            self.routes.insert(relid, route);
        }
        &self.routes[&relid]
    }

    /// The cached shape of `relid` (`rel` when it is that relation).
    ///
    /// # Safety
    /// `rel` must be open; inside a decoding callback.
    unsafe fn ensure_shape(&mut self, relid: pg_sys::Oid, rel: pg_sys::Relation) {
        if self.shapes.contains_key(&relid) {
            return;
        }
        // SAFETY: rel is open; another relid is a valid published ancestor,
        // opened and closed around the build.
        let shape = unsafe {
            if (*rel).rd_id == relid {
                Shape::build(rel, &self.opts, self.cache_cxt)
            } else {
                let other = pg_sys::RelationIdGetRelation(relid);
                let s = Shape::build(other, &self.opts, self.cache_cxt);
                pg_sys::RelationClose(other);
                s
            }
        };
        self.shapes.insert(relid, shape);
    }

    /// INSERT, UPDATE or DELETE.
    ///
    /// # Safety
    /// `rel` must be open and the tuples (if not NULL) rows of it.
    pub(crate) unsafe fn change(&mut self, sink: &mut dyn Sink, rel: pg_sys::Relation, ch: RowChange) {
        if self.skipping() {
            return;
        }
        self.apply_invalidations();
        // SAFETY: as required by this function.
        let route = unsafe { self.route(rel) };
        let wanted = match ch.dml {
            Dml::Insert => route.actions.insert,
            Dml::Update => route.actions.update,
            Dml::Delete => route.actions.delete,
        };
        if !wanted {
            return;
        }
        // pgoutput sends no DELETE without an old row (a table without
        // replica identity; PostgreSQL only lets one through when a
        // partition-moving UPDATE, not published, deletes the row).
        let emit_as = route.emit_as;
        if ch.dml == Dml::Delete && ch.old.is_null() && self.opts.publication_names.is_some() {
            return;
        }
        // SAFETY: as required by this function.
        unsafe { self.ensure_shape(emit_as, rel) };
        let shape = &self.shapes[&emit_as];
        if !self.opts.table_selected(&shape.schema, &shape.table) {
            return;
        }
        // As wal2json (both versions): an UPDATE or DELETE of a table
        // without a usable replica identity says nothing about which row
        // changed; it is dropped with a WARNING (once per relation and
        // session) rather than sent without `identity`. With
        // `publication_names` the stream is pgoutput's, which sends it.
        if ch.dml != Dml::Insert
            && !shape.has_identity_key
            && !shape.identity_full
            && self.opts.publication_names.is_none()
        {
            if !shape.warned_no_identity.replace(true) {
                pgrx::warning!(
                    "logical_ext: {} on table \"{}\".\"{}\" without replica identity is not sent",
                    if ch.dml == Dml::Update { "UPDATE" } else { "DELETE" },
                    shape.schema,
                    shape.table
                );
            }
            return;
        }
        let route = &self.routes[&rel_id(rel)];
        // SAFETY: the tuples are rows of `rel`; the route maps them to rows of
        // emit_as, the shape's relation.
        let (has_old, has_new) = unsafe {
            (
                deform(ch.old, route, shape, &mut self.old_vals, &mut self.src_vals),
                deform(ch.new, route, shape, &mut self.new_vals, &mut self.src_vals),
            )
        };
        // Row filters, with pgoutput's transformation of UPDATEs that move a
        // row into or out of the filtered set.
        let mut dml = ch.dml;
        if let Some(f) = &route.filter {
            let old = has_old.then_some((&self.old_vals.0[..], &self.old_vals.1[..]));
            let new = has_new.then_some((&self.new_vals.0[..], &self.new_vals.1[..]));
            // SAFETY: both rows are in emit_as's layout (deformed above).
            let keep = unsafe {
                match (dml, old, new) {
                    (Dml::Insert, _, Some(n)) => f.passes(FilterAction::Insert, n, None),
                    (Dml::Delete, Some(o), _) => f.passes(FilterAction::Delete, o, None),
                    (Dml::Update, None, Some(n)) => f.passes(FilterAction::Update, n, None),
                    (Dml::Update, Some(o), Some(n)) => {
                        match (f.passes(FilterAction::Update, o, None), f.passes(FilterAction::Update, n, Some(o))) {
                            (false, false) => false,
                            (false, true) => {
                                dml = Dml::Insert;
                                true
                            }
                            (true, false) => {
                                dml = Dml::Delete;
                                true
                            }
                            (true, true) => true,
                        }
                    }
                    // No row to test (a DELETE without old row under
                    // REPLICA IDENTITY NOTHING): nothing to filter on.
                    _ => true,
                }
            };
            if !keep {
                return;
            }
        }
        self.ensure_begun(sink);
        if self.v1() {
            let n = self.next_entry();
            let Decoder { opts, shapes, routes, buf, new_vals, old_vals, unchanged, ws, v1_items, .. } = self;
            let mask = routes[&rel_id(rel)].columns.as_deref();
            let shown = |i: usize| mask.is_none_or(|m| m.get(i).copied().unwrap_or(false));
            let c = v1::Change {
                shape: &shapes[&emit_as],
                shown: &shown,
                dml,
                new: has_new.then(|| v1::Row { vals: &new_vals.0[..], nulls: &new_vals.1[..] }),
                old: has_old.then(|| v1::Row { vals: &old_vals.0[..], nulls: &old_vals.1[..] }),
                n,
            };
            buf.clear();
            // SAFETY: both rows are deformed in emit_as's layout.
            unsafe { v1::change(buf, *ws, opts, opts.write_in_chunks, &c, v1_items, unchanged) };
            self.emit_v1(sink);
            return;
        }
        if self.opts.compact {
            self.write_compact(sink, emit_as, rel_id(rel), dml, has_old, has_new);
            return;
        }
        self.write_row(emit_as, rel_id(rel), dml, ch.lsn, has_old, has_new);
        self.flush(sink);
    }

    /// Option `compact`: the relation document when this session has not
    /// sent it (or sent it with other columns shown), then the row by
    /// position (`compact.rs`), from the rows deformed as for `write_row`.
    ///
    /// In a streamed block, "sent" is tracked per streamed transaction and
    /// apart from the session's: the subscriber spools the block and may
    /// replay it at the stream commit, after ordinary transactions that
    /// were described with other relation documents, so each streamed
    /// transaction's documents describe themselves (docs/FORMAT.md); and a
    /// block's relation document must not stand for the session's, which
    /// the subscriber keeps apart.
    fn write_compact(
        &mut self,
        sink: &mut dyn Sink,
        emit_as: pg_sys::Oid,
        relid: pg_sys::Oid,
        dml: Dml,
        has_old: bool,
        has_new: bool,
    ) {
        let mask = self.routes[&relid].columns.clone();
        let shown = |i: usize| mask.as_deref().is_none_or(|m| m.get(i).copied().unwrap_or(false));
        let shape = &self.shapes[&emit_as];
        let id = u32::from(emit_as);
        let block = self.txn.as_ref().filter(|t| t.streamed).map(|t| (t.info.xid, t.subxid));
        let epoch = self.stream_rel_epoch;
        let sent = match block {
            None => shape.compact_sent.borrow().as_ref() == Some(&mask),
            Some((xid, _)) => {
                matches!(&*shape.compact_stream_sent.borrow(), Some((x, e, m)) if *x == xid && *e == epoch && *m == mask)
            }
        };
        if !sent {
            let cols: Vec<&super::shape::Column> = shape.columns.iter().filter(|c| shown(c.index)).collect();
            let key: Vec<usize> = cols.iter().enumerate().filter(|(_, c)| c.in_identity_key).map(|(i, _)| i).collect();
            self.buf.clear();
            compact::push_relation(
                &mut self.buf,
                block.map(|(xid, _)| (xid, 0)),
                id,
                &shape.schema,
                &shape.table,
                cols.iter().map(|c| (c.name.as_str(), &c.type_json[..])),
                &key,
            );
            match block {
                None => *shape.compact_sent.borrow_mut() = Some(mask.clone()),
                Some((xid, _)) => *shape.compact_stream_sent.borrow_mut() = Some((xid, epoch, mask.clone())),
            }
            self.flush(sink);
        }
        let Decoder { shapes, buf, new_vals, old_vals, .. } = self;
        let shape = &shapes[&emit_as];
        let cols = || shape.columns.iter().filter(|c| shown(c.index));
        // SAFETY (both closures): a valid non-null datum of this column.
        let push = |b: &mut Vec<u8>, (col, d): (&super::shape::Column, pg_sys::Datum)| unsafe {
            values::push_value(b, &col.kind, d)
        };
        buf.clear();
        compact::push_row_head(
            buf,
            block,
            match dml {
                Dml::Insert => b'I',
                Dml::Update => b'U',
                Dml::Delete => b'D',
            },
            id,
        );
        if dml != Dml::Delete && has_new {
            let cells = cols().map(|col| {
                let (d, null) = (new_vals.0[col.index], new_vals.1[col.index]);
                // SAFETY: a non-null varlena datum of this column.
                if !null && col.varlena && unsafe { values::is_unchanged_toast(d) } {
                    // The old row (REPLICA IDENTITY FULL) still has the value.
                    return if has_old && !old_vals.1[col.index] {
                        compact::Cell::Value((col, old_vals.0[col.index]))
                    } else {
                        compact::Cell::Absent
                    };
                }
                if null { compact::Cell::Null } else { compact::Cell::Value((col, d)) }
            });
            compact::push_cells(buf, "new", cells, push);
        }
        // The identity, chosen exactly as `write_row` chooses it.
        let (id_vals, from_old) = if has_old { (&*old_vals, true) } else { (&*new_vals, false) };
        let identity_source = match dml {
            Dml::Insert => false,
            _ if from_old => true,
            _ => dml == Dml::Update && shape.has_identity_key && has_new,
        };
        if identity_source {
            let full = from_old && shape.identity_full;
            let cell = |col| identity_cell(col, full, id_vals);
            let just_the_key = cols().all(|c| !matches!(cell(c), compact::Cell::Absent) == c.in_identity_key);
            if just_the_key {
                compact::push_cells(buf, "key", cols().filter(|c| c.in_identity_key).map(cell), push);
            } else {
                compact::push_cells(buf, "old", cols().map(cell), push);
            }
        }
        buf.push(b'}');
        if self.opts.batch && block.is_none() {
            limit::check(&self.buf);
            compact::batch_push(&mut self.batch, &self.buf);
            if self.batch.len() >= compact::BATCH_BYTES {
                self.emit_batch(sink);
            }
        } else {
            self.flush(sink);
        }
    }

    /// Render one I/U/D document into `buf` from the rows deformed into
    /// `old_vals` / `new_vals` (when `has_old` / `has_new`).
    fn write_row(
        &mut self,
        emit_as: pg_sys::Oid,
        relid: pg_sys::Oid,
        dml: Dml,
        lsn: u64,
        has_old: bool,
        has_new: bool,
    ) {
        let Decoder { opts, shapes, routes, txn, buf, new_vals, old_vals, unchanged, .. } = self;
        let shape = &shapes[&emit_as];
        let mask = routes[&relid].columns.as_deref();
        // (A mask shorter than the shape, never expected: caches of one
        // relation are rebuilt together, hides what it does not know.)
        let shown = |i: usize| mask.is_none_or(|m| m.get(i).copied().unwrap_or(false));

        buf.clear();
        buf.extend_from_slice(match dml {
            Dml::Insert => b"{\"action\":\"I\"",
            Dml::Update => b"{\"action\":\"U\"",
            Dml::Delete => b"{\"action\":\"D\"",
        });
        push_txn_fields(buf, opts, txn.as_ref());
        if opts.include_lsn {
            buf.extend_from_slice(b",\"lsn\":");
            json::push_lsn(buf, lsn);
        }
        buf.extend_from_slice(&shape.names);

        unchanged.clear();
        if dml != Dml::Delete && has_new {
            buf.extend_from_slice(b",\"columns\":[");
            let mut first = true;
            for (ci, col) in shape.columns.iter().enumerate() {
                if !shown(col.index) {
                    continue;
                }
                let (mut d, mut null) = (new_vals.0[col.index], new_vals.1[col.index]);
                // SAFETY: a non-null varlena datum of this column.
                if !null && col.varlena && unsafe { values::is_unchanged_toast(d) } {
                    // The old row (REPLICA IDENTITY FULL) still has the value.
                    if has_old && !old_vals.1[col.index] {
                        (d, null) = (old_vals.0[col.index], false);
                    } else {
                        unchanged.push(ci);
                        continue;
                    }
                }
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.extend_from_slice(&col.head);
                if null {
                    buf.extend_from_slice(b"null");
                } else {
                    // SAFETY: a valid non-null datum of this column's type.
                    unsafe { values::push_value(buf, &col.kind, d) };
                }
                buf.extend_from_slice(&col.tail);
            }
            buf.push(b']');
        }

        // Identity: the old key (or whole old row with FULL); when an UPDATE
        // did not change the key, PostgreSQL logs no old tuple and the key is
        // taken from the new row.
        let (id_vals, from_old) = if has_old { (&*old_vals, true) } else { (&*new_vals, false) };
        let identity_source = if dml == Dml::Insert {
            false
        } else if from_old {
            true
        } else {
            dml == Dml::Update && shape.has_identity_key && has_new
        };
        if identity_source {
            buf.extend_from_slice(b",\"identity\":[");
            let mut first = true;
            for col in &shape.columns {
                let member = if from_old && shape.identity_full { true } else { col.in_identity_key };
                if !member || !shown(col.index) {
                    continue;
                }
                let (d, null) = (id_vals.0[col.index], id_vals.1[col.index]);
                // An on-disk TOAST pointer is never read while decoding (it
                // points to today's data, which may be gone). None reaches
                // here in a valid stream: PostgreSQL flattens old rows and
                // logs the old key whenever a key column is stored
                // externally, so a key taken from the new row is inline.
                // SAFETY: a non-null varlena datum of this column.
                if !null && col.varlena && unsafe { values::is_unchanged_toast(d) } {
                    continue;
                }
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.extend_from_slice(&col.head);
                if null {
                    buf.extend_from_slice(b"null");
                } else {
                    // SAFETY: a valid non-null datum, not an on-disk pointer.
                    unsafe { values::push_value(buf, &col.kind, d) };
                }
                buf.push(b'}');
            }
            buf.push(b']');
        }

        if !unchanged.is_empty() {
            buf.extend_from_slice(b",\"unchanged_toast\":[");
            for (n, ci) in unchanged.iter().enumerate() {
                if n > 0 {
                    buf.push(b',');
                }
                json::push_str(buf, shape.columns[*ci].name.as_bytes());
            }
            buf.push(b']');
        }

        if opts.include_pk {
            buf.extend_from_slice(b",\"pk\":[");
            let mut first = true;
            for col in shape.columns.iter().filter(|c| c.in_pk) {
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.extend_from_slice(&col.pk_item);
            }
            buf.push(b']');
        }
        buf.push(b'}');
    }

    /// TRUNCATE of `rels` (one document per emitted relation).
    ///
    /// # Safety
    /// Every relation must be open.
    pub(crate) unsafe fn truncate(&mut self, sink: &mut dyn Sink, rels: &[pg_sys::Relation], t: Truncate) {
        // wal2json's format-version 1 has no TRUNCATE.
        if self.skipping() || self.v1() {
            return;
        }
        self.apply_invalidations();
        for &rel in rels {
            // SAFETY: rel is open.
            let route = unsafe { self.route(rel) };
            // A partition published as its root is truncated through the root.
            if !route.actions.truncate || route.emit_as != rel_id(rel) {
                continue;
            }
            // SAFETY: rel is open.
            unsafe { self.ensure_shape(rel_id(rel), rel) };
            let shape = &self.shapes[&rel_id(rel)];
            if !self.opts.table_selected(&shape.schema, &shape.table) {
                continue;
            }
            self.ensure_begun(sink);
            let shape = &self.shapes[&rel_id(rel)];
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b"{\"action\":\"T\"");
            push_txn_fields(b, &self.opts, self.txn.as_ref());
            if self.opts.include_lsn {
                b.extend_from_slice(b",\"lsn\":");
                json::push_lsn(b, t.lsn);
            }
            b.extend_from_slice(&shape.names);
            b.extend_from_slice(if t.cascade { b",\"cascade\":true" } else { b",\"cascade\":false" });
            b.extend_from_slice(if t.restart_identity {
                b",\"restart_identity\":true"
            } else {
                b",\"restart_identity\":false"
            });
            b.extend_from_slice(b",\"relations\":");
            json::push_int(b, rels.len() as i64);
            b.push(b'}');
            self.flush(sink);
        }
    }

    /// A logical message (`pg_logical_emit_message`).
    pub(crate) fn message(&mut self, sink: &mut dyn Sink, m: Message<'_>) {
        if !self.opts.prefix_selected(m.prefix) || (m.transactional && self.skipping()) {
            return;
        }
        // In format-version 1 a DDL event stays the message it is, as
        // wal2json prints it (DDL documents are a format-version 2 addition).
        if m.transactional && !self.v1() && m.prefix == crate::sequences::PREFIX {
            // The sequence capture's states, one SEQ document each; a
            // message that is not authentic stays a plain message.
            let xid = self.txn.as_ref().map_or(0, |t| t.info.xid);
            if let Some(entries) = super::sequence::authenticate(m.content, xid) {
                self.sequences(sink, m.lsn, &entries);
                return;
            }
        }
        if m.transactional && self.opts.include_ddl && !self.v1() && m.prefix == crate::ddl::PREFIX {
            // A DDL event is printed as its own document; anything else
            // under the prefix — a forged one included — stays a plain
            // message (ddl/authentic.rs says which is which).
            let xid = self.txn.as_ref().map_or(0, |t| t.info.xid);
            if let Some(event) = crate::ddl::authenticate(m.content, xid) {
                self.ddl(sink, m.lsn, &event);
                return;
            }
        }
        if m.transactional && self.opts.include_reconcile && !self.v1() && m.prefix == crate::reconcile::PREFIX {
            // Likewise for reconcile documents (reconcile/authentic.rs).
            let xid = self.txn.as_ref().map_or(0, |t| t.info.xid);
            if let Some(doc) = crate::reconcile::authenticate(m.content, xid) {
                self.reconcile(sink, m.lsn, &doc);
                return;
            }
        }
        if m.transactional {
            self.ensure_begun(sink);
        }
        if self.v1() {
            let n = if m.transactional { Some(self.next_entry()) } else { None };
            let mut content = Vec::new();
            push_content(&mut content, m.content);
            self.buf.clear();
            limit::reserve(&mut self.buf, content.len() + json::str_len_bound(m.prefix.as_bytes()) + 128);
            v1::message(&mut self.buf, self.ws, self.opts.write_in_chunks, n, m.prefix, &content);
            if m.transactional {
                self.emit_v1(sink);
            } else {
                self.flush(sink);
            }
            return;
        }
        let txn = if m.transactional { self.txn.as_ref() } else { None };
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"M\"");
        push_txn_fields(b, &self.opts, txn);
        if self.opts.include_lsn {
            b.extend_from_slice(b",\"lsn\":");
            json::push_lsn(b, m.lsn);
        }
        b.extend_from_slice(if m.transactional { b",\"transactional\":true" } else { b",\"transactional\":false" });
        b.extend_from_slice(b",\"prefix\":");
        json::push_str(b, m.prefix.as_bytes());
        b.extend_from_slice(b",\"content\":");
        push_content(b, m.content);
        b.push(b'}');
        self.flush(sink);
    }
}

impl Decoder {
    /// The `SEQ` documents of a sequence capture (docs/FORMAT.md, "SEQ
    /// documents"), for the sequences delivered to this consumer.
    fn sequences(&mut self, sink: &mut dyn Sink, lsn: u64, entries: &[crate::sequences::message::Entry]) {
        for e in entries {
            if !e.delivered_to(self.opts.publication_names.as_deref()) {
                continue;
            }
            self.ensure_begun(sink);
            let b = &mut self.buf;
            b.clear();
            b.extend_from_slice(b"{\"action\":\"SEQ\"");
            push_txn_fields(b, &self.opts, self.txn.as_ref());
            if self.opts.include_lsn {
                b.extend_from_slice(b",\"lsn\":");
                json::push_lsn(b, lsn);
            }
            super::sequence::push_fields(b, e);
            b.push(b'}');
            self.flush(sink);
        }
    }

    /// A DDL event (docs/FORMAT.md, "DDL"), for consumers following its
    /// publications (or everything).
    fn ddl(&mut self, sink: &mut dyn Sink, lsn: u64, event: &crate::ddl::DdlEvent) {
        if !event.delivered_to(self.opts.publication_names.as_deref()) {
            return;
        }
        self.ensure_begun(sink);
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"DDL\"");
        push_txn_fields(b, &self.opts, self.txn.as_ref());
        if self.opts.include_lsn {
            b.extend_from_slice(b",\"lsn\":");
            json::push_lsn(b, lsn);
        }
        // The event's own fields follow: its JSON object without the brace.
        let body = event.to_json();
        limit::reserve(b, body.len());
        b.push(b',');
        b.extend_from_slice(&body.as_bytes()[1..]);
        self.flush(sink);
    }
}

impl Decoder {
    /// A reconcile document (docs/FORMAT.md, "V"), for the subscriber whose
    /// apply worker asked for it (`include-reconcile`).
    fn reconcile(&mut self, sink: &mut dyn Sink, lsn: u64, doc: &crate::reconcile::ReconcileDoc) {
        self.ensure_begun(sink);
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(b"{\"action\":\"V\"");
        push_txn_fields(b, &self.opts, self.txn.as_ref());
        if self.opts.include_lsn {
            b.extend_from_slice(b",\"lsn\":");
            json::push_lsn(b, lsn);
        }
        // Nested: the document's field names stay its own.
        let body = doc.to_json();
        limit::reserve(b, body.len() + 16);
        b.extend_from_slice(b",\"reconcile\":");
        b.extend_from_slice(body.as_bytes());
        b.push(b'}');
        self.flush(sink);
    }
}

/// Two-phase decoding (option `two-phase`; documents in `twophase.rs`): a
/// prepared transaction begins and carries its changes as any other, and
/// ends with `P` instead of `C`; its `CP` or `RP` comes when it is decided.
impl Decoder {
    /// Whether the client asked for prepared transactions to be decoded
    /// when they are prepared.
    pub(crate) fn two_phase(&self) -> bool {
        self.opts.two_phase
    }

    /// The client's `owner` and `takeover` options (`owner.rs`).
    pub(crate) fn owner(&self) -> Option<(super::owner::SlotOwner, bool)> {
        self.opts.owner.map(|o| (o, self.opts.takeover))
    }

    pub(crate) fn is_v1(&self) -> bool {
        self.v1()
    }

    /// `prepare_cb`: the transaction begun by `begin` (begin_prepare_cb)
    /// was prepared as `gid`. Like `commit`, nothing is written for a
    /// transaction that wrote nothing.
    pub(crate) fn prepare(&mut self, sink: &mut dyn Sink, gid: &[u8]) {
        let Some(txn) = self.txn.take() else { return };
        if !txn.begun {
            sink.skipped_transaction();
            return;
        }
        let doc = twophase::Doc {
            kind: twophase::Kind::Prepare,
            xid: txn.info.xid,
            gid,
            timestamp: self.opts.include_timestamp.then_some(txn.timestamp.as_str()),
            origin: self.opts.include_origin.then_some(txn.info.origin),
            lsns: self.opts.include_lsn.then_some((txn.info.commit_lsn, txn.info.end_lsn)),
        };
        twophase::write(&mut self.buf, &doc);
        self.flush(sink);
    }

    /// `commit_prepared_cb` / `rollback_prepared_cb`: the prepared
    /// transaction `gid` was committed (`commit`) or rolled back; `info`
    /// holds that record's position, end and time.
    pub(crate) fn finish_prepared(&mut self, sink: &mut dyn Sink, info: TxnInfo, gid: &[u8], commit: bool) {
        let timestamp = self.opts.include_timestamp.then(|| {
            // SAFETY: timestamptz_to_str returns a static buffer we copy at once.
            unsafe { ffi::cstr_to_string(pg_sys::timestamptz_to_str(info.commit_time)) }
        });
        let doc = twophase::Doc {
            kind: if commit { twophase::Kind::CommitPrepared } else { twophase::Kind::RollbackPrepared },
            xid: info.xid,
            gid,
            timestamp: timestamp.as_deref(),
            origin: self.opts.include_origin.then_some(info.origin),
            lsns: self.opts.include_lsn.then_some((info.commit_lsn, info.end_lsn)),
        };
        twophase::write(&mut self.buf, &doc);
        self.flush(sink);
    }
}

/// Option `compact`: one position of the old row's identity (see
/// `write_row` for which columns are part of it).
fn identity_cell<'c>(
    col: &'c super::shape::Column,
    full: bool,
    vals: &(Vec<pg_sys::Datum>, Vec<bool>),
) -> compact::Cell<(&'c super::shape::Column, pg_sys::Datum)> {
    let member = full || col.in_identity_key;
    let (d, null) = (vals.0[col.index], vals.1[col.index]);
    // SAFETY: a non-null varlena datum of this column (an on-disk TOAST
    // pointer is never read, as in write_row).
    if !member || (!null && col.varlena && unsafe { values::is_unchanged_toast(d) }) {
        compact::Cell::Absent
    } else if null {
        compact::Cell::Null
    } else {
        compact::Cell::Value((col, d))
    }
}

/// A message's content: a JSON string when it is UTF-8, else its hex text
/// followed by `"content_encoding":"hex"`.
fn push_content(b: &mut Vec<u8>, content: &[u8]) {
    if std::str::from_utf8(content).is_ok() {
        limit::reserve(b, json::str_len_bound(content));
        json::push_str(b, content);
    } else {
        limit::reserve(b, json::hex_len(content.len()));
        json::push_hex(b, content, true);
        b.extend_from_slice(b",\"content_encoding\":\"hex\"");
    }
}

fn rel_id(rel: pg_sys::Relation) -> pg_sys::Oid {
    // SAFETY: callers pass open relations.
    unsafe { (*rel).rd_id }
}

/// `xid`, `timestamp`, `origin` as the options ask; `null`s outside a
/// transaction (non-transactional messages), as wal2json does.
/// In a streamed block `xid` is always written (the consumer files the
/// change under it), `subxid` follows when a subtransaction made the change,
/// and `timestamp` is `null`: the commit time is not known yet.
fn push_txn_fields(b: &mut Vec<u8>, opts: &Options, txn: Option<&Txn>) {
    let streamed = txn.is_some_and(|t| t.streamed);
    if opts.include_xids || streamed {
        b.extend_from_slice(b",\"xid\":");
        match txn {
            Some(t) => json::push_int(b, t.info.xid as i64),
            None => b.extend_from_slice(b"null"),
        }
    }
    if let Some(t) = txn.filter(|t| t.streamed && t.subxid != 0 && t.subxid != t.info.xid) {
        b.extend_from_slice(b",\"subxid\":");
        json::push_int(b, t.subxid as i64);
    }
    if opts.include_timestamp {
        b.extend_from_slice(b",\"timestamp\":");
        match txn {
            Some(t) if !t.streamed => json::push_str(b, t.timestamp.as_bytes()),
            _ => b.extend_from_slice(b"null"),
        }
    }
    if opts.include_origin {
        b.extend_from_slice(b",\"origin\":");
        match txn {
            Some(t) => json::push_int(b, t.info.origin as i64),
            None => b.extend_from_slice(b"null"),
        }
    }
}

/// Deform `tuple`, a row of the route's relation, into `vals` in the layout
/// of the shape's relation (the route's `emit_as`); false when `tuple` is
/// NULL. A row written before an `ADD COLUMN ... DEFAULT` reads the stored
/// missing value for the added column: the descriptors used are
/// `CreateTupleDescCopyConstr` copies, and PostgreSQL 15's
/// `heap_deform_tuple` fills trailing attributes with `getmissingattr`.
/// A partition's row is deformed with the partition's own descriptor (its
/// missing values are its own; a partitioned root has none) and then mapped
/// by column name.
///
/// # Safety
/// `tuple` must be NULL or a row of the route's relation; the shape must be
/// `route.emit_as`'s.
unsafe fn deform(
    tuple: pg_sys::HeapTuple,
    route: &Route,
    shape: &Shape,
    vals: &mut (Vec<pg_sys::Datum>, Vec<bool>),
    scratch: &mut (Vec<pg_sys::Datum>, Vec<bool>),
) -> bool {
    if tuple.is_null() {
        return false;
    }
    vals.0.clear();
    vals.0.resize(shape.natts, pg_sys::Datum::from(0usize));
    vals.1.clear();
    vals.1.resize(shape.natts, true);
    if route.source_desc.is_null() {
        // SAFETY: the shape's descriptor is the tuple's relation's; the
        // arrays have natts slots.
        unsafe { pg_sys::heap_deform_tuple(tuple, shape.desc, vals.0.as_mut_ptr(), vals.1.as_mut_ptr()) };
        return true;
    }
    // SAFETY: source_desc is the tuple's relation's descriptor.
    let src_natts = unsafe { (*route.source_desc).natts } as usize;
    scratch.0.clear();
    scratch.0.resize(src_natts, pg_sys::Datum::from(0usize));
    scratch.1.clear();
    scratch.1.resize(src_natts, true);
    // SAFETY: as above; the scratch arrays have src_natts slots.
    unsafe { pg_sys::heap_deform_tuple(tuple, route.source_desc, scratch.0.as_mut_ptr(), scratch.1.as_mut_ptr()) };
    for (i, &src) in route.attmap.iter().enumerate().take(shape.natts) {
        if let Some(s) = (src as usize).checked_sub(1).filter(|&s| s < src_natts) {
            vals.0[i] = scratch.0[s];
            vals.1[i] = scratch.1[s];
        }
    }
    true
}
