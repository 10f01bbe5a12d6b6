//! The requests this subscriber made: what binds a reconcile document to a
//! question the subscriber asked (docs/RECONCILE.md, "Trust").
//!
//! A document is vouched for by the publisher (`authentic.rs`), but a
//! publisher-side role allowed to call `reconcile_verify`/`reconcile_repair`
//! chooses their arguments. So the subscriber, before it asks, records an
//! open request: (database, subscription, run, kind, relation, a random
//! 128-bit nonce, the highest chunk asked for so far), held by the asking
//! backend. The apply worker acts on a document only when its run, kind and
//! nonce match an open request of its own subscription, and then only on the
//! request's relation (never one the document names) — see `authorize`.
//!
//! The record lives in shared memory, not in a table: the asking session's
//! transaction is still open while the worker meets the documents (the
//! caller waits for the results), and a row it wrote would be invisible to
//! the worker until then. An entry is released by its guard's drop (success
//! and ERROR alike); an entry whose backend is gone (FATAL, crash) is free.

use super::document::{Op, ReconcileDoc};
use super::fail;
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

/// Open requests at a time, cluster-wide.
const MAX_REQUESTS: usize = 64;

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) dboid: u32,
    pub(crate) subid: i32,
    pub(crate) pid: i32,
    pub(crate) run: i64,
    /// 1: verify, 2: repair.
    pub(crate) kind: u8,
    pub(crate) relid: u32,
    pub(crate) nonce: [u8; 16],
    /// Chunks (verify) or batches (repair) asked for so far: 1..=chunks.
    pub(crate) chunks: i32,
    /// The publications, columns, key and codings asked for
    /// (`document::shape`).
    pub(crate) shape: [u8; 16],
}

#[derive(Clone, Copy)]
pub(crate) struct Registry {
    entries: [Entry; MAX_REQUESTS],
}

impl Default for Registry {
    fn default() -> Self {
        Registry { entries: [Entry::default(); MAX_REQUESTS] }
    }
}

// SAFETY: plain old data with no pointers, shared between processes.
unsafe impl PGRXSharedMemory for Registry {}

// SAFETY: new() only names the lock; pg_shmem_init! in _PG_init sets it up
// in shared memory before any backend uses it.
static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"logical_ext_reconcile_requests") };

/// Set up the shared memory (from `_PG_init` while preloading).
pub(crate) fn init_shmem() {
    pgrx::pg_shmem_init!(REGISTRY);
}

pub(crate) fn kind_code(op: Op) -> u8 {
    match op {
        Op::Verify => 1,
        Op::Repair => 2,
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && crate::ffi::worker::backend_alive(pid)
}

/// Hex of a nonce, as documents carry it.
pub(crate) fn hex(nonce: &[u8; 16]) -> String {
    nonce.iter().map(|b| format!("{b:02x}")).collect()
}

/// An open request of this backend; dropped: closed.
#[must_use = "the request is open as long as the guard lives"]
pub(crate) struct Request {
    dboid: u32,
    subid: i32,
    pid: i32,
    run: i64,
    kind: u8,
    pub(crate) nonce: [u8; 16],
}

impl Request {
    /// Open a request for `run` of `kind` on `relid` for subscription
    /// `subid`, of the given `shape`.
    pub(crate) fn open(subid: i32, relid: pgrx::pg_sys::Oid, run: i64, op: Op, shape: [u8; 16]) -> Request {
        if !crate::apply::preloaded() {
            fail(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "logical_ext is not in shared_preload_libraries",
                "Reconciliation needs the apply workers, which need logical_ext preloaded.",
            );
        }
        let mut nonce = [0u8; 16];
        // SAFETY: fills exactly `nonce.len()` bytes of a local buffer.
        if !unsafe { pgrx::pg_sys::pg_strong_random(nonce.as_mut_ptr().cast(), nonce.len()) } {
            fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "could not generate a random nonce", "");
        }
        // SAFETY: reads backend globals.
        let (dboid, pid) = unsafe { (pgrx::pg_sys::MyDatabaseId.to_u32(), pgrx::pg_sys::MyProcPid) };
        let kind = kind_code(op);
        let entry = Entry { dboid, subid, pid, run, kind, relid: relid.to_u32(), nonce, chunks: 0, shape };
        {
            let mut r = REGISTRY.exclusive();
            let Some(e) = r.entries.iter_mut().find(|e| !alive(e.pid)) else {
                drop(r);
                fail(
                    PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                    format!("too many reconcile runs in progress (at most {MAX_REQUESTS} on this server)"),
                    "Wait for other verify_table/repair_table calls to finish.",
                );
            };
            *e = entry;
        }
        Request { dboid, subid, pid, run, kind, nonce }
    }

    /// Allow documents of chunk (or batch) numbers up to `n`.
    pub(crate) fn allow_chunks(&self, n: i32) {
        let mut r = REGISTRY.exclusive();
        if let Some(e) = r.entries.iter_mut().find(|e| self.is(e)) {
            e.chunks = e.chunks.max(n);
        }
    }

    pub(crate) fn nonce_hex(&self) -> String {
        hex(&self.nonce)
    }

    fn is(&self, e: &Entry) -> bool {
        e.pid == self.pid && e.dboid == self.dboid && e.subid == self.subid && e.run == self.run && e.kind == self.kind
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let mut r = REGISTRY.exclusive();
        if let Some(e) = r.entries.iter_mut().find(|e| self.is(e)) {
            *e = Entry::default();
        }
    }
}

/// The open requests of run `run` of subscription `subid` in this database
/// (the apply worker's side).
pub(crate) fn open_requests(subid: i32, run: i64) -> Vec<Entry> {
    if !crate::apply::preloaded() {
        return Vec::new();
    }
    // SAFETY: reads a backend global.
    let dboid = unsafe { pgrx::pg_sys::MyDatabaseId.to_u32() };
    let r = REGISTRY.share();
    r.entries.iter().filter(|e| e.dboid == dboid && e.subid == subid && e.run == run && alive(e.pid)).copied().collect()
}

/// Why a document is not acted on: a closed list, counted per reason in
/// `logical_ext.reconcile_rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Rejection {
    /// No open request of this subscription has the document's run, kind
    /// and nonce (forged, replayed after its run ended, or another node's).
    NoRequest,
    /// The document names another relation than the request's.
    WrongRelation,
    /// A chunk (or batch) number the subscriber has not asked for.
    UnaskedChunk,
    /// The request's table is not one of the subscription's ready tables,
    /// or is a catalog or logical_ext's own.
    NotReplicatedTable,
    /// Table, columns or key differ from what the subscriber compares.
    WrongShape,
    /// A repair of a key that no verify run of the request's recorded as
    /// differing (or that is repaired already).
    UnrequestedKey,
}

impl Rejection {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::NoRequest => "no_open_request",
            Rejection::WrongRelation => "wrong_relation",
            Rejection::UnaskedChunk => "unasked_chunk",
            Rejection::NotReplicatedTable => "not_replicated_table",
            Rejection::WrongShape => "wrong_shape",
            Rejection::UnrequestedKey => "unrequested_key",
        }
    }
}

/// Constant-time equality of a nonce and its hex text.
fn nonce_matches(nonce: &[u8; 16], text: &str) -> bool {
    let want = hex(nonce);
    want.len() == text.len() && want.bytes().zip(text.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The request `doc` answers, among `open` (the open requests of its run
/// of this subscription). Pure; unit-tested.
pub(crate) fn authorize(doc: &ReconcileDoc, open: &[Entry]) -> Result<Entry, Rejection> {
    let kind = kind_code(doc.op);
    let e = open
        .iter()
        .find(|e| e.kind == kind && e.run == doc.run && nonce_matches(&e.nonce, &doc.nonce))
        .ok_or(Rejection::NoRequest)?;
    if e.relid != doc.relation {
        return Err(Rejection::WrongRelation);
    }
    if doc.chunk < 1 || doc.chunk > e.chunks {
        return Err(Rejection::UnaskedChunk);
    }
    if doc.shape() != e.shape {
        return Err(Rejection::WrongShape);
    }
    Ok(*e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::digest::Coding;
    use crate::reconcile::document::Range;

    fn doc(op: Op, run: i64, chunk: i32, relation: u32, nonce: &str) -> ReconcileDoc {
        ReconcileDoc {
            op,
            subscription: "s".into(),
            node: "1/5".into(),
            nonce: nonce.into(),
            run,
            chunk,
            per_key: false,
            relation,
            schema: "public".into(),
            table: "t".into(),
            publications: vec!["p".into()],
            columns: vec!["id".into()],
            keys: vec!["id".into()],
            codings: vec![Coding::Binary],
            types: vec!["integer".into()],
            range: Range::default(),
            rows: 0,
            digest: String::new(),
            hashes: vec![],
            repairs: vec![],
            elapsed_us: 0,
            log_id: Some(1),
        }
    }

    #[test]
    fn only_documents_answering_an_open_request_are_authorized() {
        let nonce = [7u8; 16];
        let shape = doc(Op::Verify, 9, 2, 16400, "").shape();
        let e = Entry { dboid: 5, subid: 1, pid: 42, run: 9, kind: 1, relid: 16400, nonce, chunks: 3, shape };
        let good = hex(&nonce);
        assert_eq!(authorize(&doc(Op::Verify, 9, 2, 16400, &good), &[e]), Ok(e));
        // No request at all (a forged document with a made-up run/nonce).
        assert_eq!(authorize(&doc(Op::Verify, 9, 2, 16400, &good), &[]), Err(Rejection::NoRequest));
        // A guessed nonce, and the right nonce for another kind.
        assert_eq!(authorize(&doc(Op::Verify, 9, 2, 16400, &"00".repeat(16)), &[e]), Err(Rejection::NoRequest));
        assert_eq!(authorize(&doc(Op::Repair, 9, 1, 16400, &good), &[e]), Err(Rejection::NoRequest));
        assert_eq!(authorize(&doc(Op::Verify, 9, 2, 16400, ""), &[e]), Err(Rejection::NoRequest));
        // The right request naming another table (pg_authid: 1260).
        assert_eq!(authorize(&doc(Op::Verify, 9, 2, 1260, &good), &[e]), Err(Rejection::WrongRelation));
        // A chunk not asked for yet.
        assert_eq!(authorize(&doc(Op::Verify, 9, 4, 16400, &good), &[e]), Err(Rejection::UnaskedChunk));
        assert_eq!(authorize(&doc(Op::Verify, 9, 0, 16400, &good), &[e]), Err(Rejection::UnaskedChunk));
        // The right request answered with another publication, column set
        // or coding (review finding L1: the nonce is no secret from the
        // role answering on the publisher).
        let mut other = doc(Op::Verify, 9, 2, 16400, &good);
        other.publications = vec!["p_without_filter".into()];
        assert_eq!(authorize(&other, &[e]), Err(Rejection::WrongShape));
        let mut other = doc(Op::Verify, 9, 2, 16400, &good);
        other.columns = vec!["id".into(), "secret".into()];
        other.codings = vec![Coding::Binary, Coding::Text];
        assert_eq!(authorize(&other, &[e]), Err(Rejection::WrongShape));
        let mut other = doc(Op::Verify, 9, 2, 16400, &good);
        other.codings = vec![Coding::Text];
        assert_eq!(authorize(&other, &[e]), Err(Rejection::WrongShape));
    }
}
