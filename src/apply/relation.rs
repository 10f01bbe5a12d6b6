//! Mapping a publisher's relation onto the subscriber's: the local table of
//! the same schema and name, its columns matched **by name** (the subscriber
//! may have extra columns, filled by defaults; a publisher column missing here
//! is an error naming table and column), and each column's input function.
//!
//! Entries are cached per remote relation, each with its own memory context
//! (its FmgrInfos), and dropped when a relcache invalidation names its local
//! relation or one of its leaf partitions (an ALTER TABLE on the subscriber,
//! DDL applied by this worker, ANALYZE); an invalidation of every relation
//! (a cache reset) drops them all. Invalidations of other relations (another
//! session's temporary table, autovacuum elsewhere) leave the map alone. An
//! entry is shared (`Rc`): the executor state kept for a remote transaction
//! (`executor::TargetCache`) holds it, and notices that the map replaced it.
//!
//! A partitioned local table is a target too (`routing.rs`): its leaf
//! partitions get entries of their own (own column order, indexes, replica
//! identity), built on first use and dropped with the partitioned table's.

use super::protocol::RemoteRel;
use crate::ffi;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::rc::Rc;

pub(crate) struct Input {
    finfo: Box<pg_sys::FmgrInfo>,
    ioparam: pg_sys::Oid,
    typmod: i32,
}

impl Input {
    /// What a raw `InputFunctionCall` needs (`row_input.rs`); the
    /// FmgrInfo lives as long as this entry.
    pub(crate) fn call_parts(&self) -> (*mut pg_sys::FmgrInfo, pg_sys::Oid, i32) {
        (&*self.finfo as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo, self.ioparam, self.typmod)
    }

    /// The input function and the column's typmod (`row_input.rs` reads
    /// some types' texts itself).
    pub(crate) fn function(&self) -> (pg_sys::Oid, i32) {
        (self.finfo.fn_oid, self.typmod)
    }
}

pub(crate) struct LocalRel {
    pub(crate) relid: pg_sys::Oid,
    /// `schema.table` for messages.
    pub(crate) display: String,
    pub(crate) natts: usize,
    by_name: HashMap<String, usize>,
    /// Per attribute index; `None` for dropped or generated columns.
    pub(crate) inputs: Vec<Option<Input>>,
    /// Column names by attribute index (empty for dropped columns).
    pub(crate) names: Vec<String>,
    /// The index used to find rows (replica identity index, else primary
    /// key) and its key attribute indexes; `None`: compare whole rows.
    pub(crate) key: Option<(pg_sys::Oid, Vec<usize>)>,
    /// Unique indexes that conflict detection can probe (immediate, on plain
    /// columns, not partial): (index, key attribute indexes).
    pub(crate) uniques: Vec<(pg_sys::Oid, Vec<usize>)>,
    /// Remote column order last seen, with local indexes (see `try_attr_at`).
    order: RefCell<Vec<(Box<str>, usize)>>,
    /// Entries of the leaf partitions rows were routed to.
    leaves: RefCell<Vec<Rc<LocalRel>>>,
    /// The map's memory context (parent of the leaf entries' contexts).
    map_cxt: pg_sys::MemoryContext,
    /// A plain table without triggers: its executor state may be kept for
    /// the whole remote transaction (`executor::TargetCache`).
    pub(crate) cacheable: bool,
    /// This entry's FmgrInfos; declared last, so dropped after them.
    _cxt: ffi::OwnedContext,
}

impl LocalRel {
    /// The entry of leaf partition `relid` of this partitioned table.
    pub(crate) fn leaf(&self, relid: pg_sys::Oid) -> Rc<LocalRel> {
        if let Some(l) = self.leaves.borrow().iter().find(|l| l.relid == relid) {
            return l.clone();
        }
        // SAFETY: catalog lookups inside a transaction; the leaf exists (the
        // router has it open and locked).
        let display = unsafe {
            let schema = ffi::cstr_to_string(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid)));
            format!("{schema}.{}", ffi::cstr_to_string(pg_sys::get_rel_name(relid)))
        };
        let leaf = Rc::new(build_rel(relid, display, self.map_cxt));
        self.leaves.borrow_mut().push(leaf.clone());
        leaf
    }

    /// Whether an invalidation of `relids` concerns this entry.
    fn touched_by(&self, relids: &[pg_sys::Oid]) -> bool {
        relids.contains(&self.relid) || self.leaves.borrow().iter().any(|l| l.touched_by(relids))
    }

    /// The local attribute index of the remote column `name` sent at
    /// position `pos` of a document. Documents of a table list their columns
    /// in the same order, so the last answer for each position is checked
    /// first (a string compare instead of a hash lookup).
    /// `None` when the subscriber has no column `name` (the caller raises
    /// [`attr`](Self::attr)'s ERROR when it is its turn).
    pub(crate) fn try_attr_at(&self, pos: usize, name: &str) -> Option<usize> {
        let mut order = self.order.borrow_mut();
        if let Some((n, i)) = order.get(pos)
            && **n == *name
        {
            return Some(*i);
        }
        let i = *self.by_name.get(name)?;
        if pos < order.len() {
            order[pos] = (name.into(), i);
        } else if pos == order.len() {
            order.push((name.into(), i));
        }
        Some(i)
    }

    /// The local attribute index of remote column `name`.
    pub(crate) fn attr(&self, name: &str) -> usize {
        match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!(
                        "logical_ext: table \"{}\" on the subscriber has no column \"{name}\" sent by the publisher",
                        self.display
                    ),
                    function_name!(),
                )
                .set_hint("Add the column on the subscriber; the worker retries the transaction with backoff.")
                .report(PgLogLevel::ERROR);
                unreachable!()
            }
        }
    }
}

/// Relation cache invalidations not yet applied to the map.
#[derive(Default)]
struct Pending {
    /// Every relation (a cache reset, or too many to list).
    all: bool,
    relids: Vec<pg_sys::Oid>,
}

/// More invalidated relations than this between two changes: drop everything.
const MAX_PENDING: usize = 64;

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    PENDING.with_borrow_mut(|p| {
        if p.all {
            return;
        }
        if relid == pg_sys::InvalidOid || p.relids.len() >= MAX_PENDING {
            p.all = true;
            p.relids.clear();
        } else if !p.relids.contains(&relid) {
            p.relids.push(relid);
        }
    });
}

pub(crate) struct RelationMap {
    /// Few relations per subscription: a vector, searched from the last hit
    /// (consecutive changes usually touch the same table).
    entries: Vec<(RemoteRel, Rc<LocalRel>)>,
    last: usize,
    /// Parent of the entries' memory contexts (never reset: each entry
    /// deletes its own).
    cxt: pg_sys::MemoryContext,
}

impl RelationMap {
    /// Create the map and register its invalidation callback (once per worker).
    pub(crate) fn new() -> RelationMap {
        // SAFETY: registering a plain function; TopMemoryContext is always valid.
        let cxt = unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(relcache_invalidated), pg_sys::Datum::from(0usize));
            ffi::new_memory_context(pg_sys::TopMemoryContext, c"logical_ext relation map")
        };
        RelationMap { entries: Vec::new(), last: 0, cxt }
    }

    /// The local relation for `remote`; call inside a transaction.
    pub(crate) fn get(&mut self, remote: &RemoteRel) -> Rc<LocalRel> {
        let pending = PENDING.take();
        if pending.all {
            self.entries.clear();
        } else if !pending.relids.is_empty() {
            self.entries.retain(|(_, e)| !e.touched_by(&pending.relids));
            self.last = 0;
        }
        let hit = self.entries.get(self.last).is_some_and(|(r, _)| r == remote);
        if !hit {
            self.last = match self.entries.iter().position(|(r, _)| r == remote) {
                Some(i) => i,
                None => {
                    let entry = build(remote, self.cxt);
                    self.entries.push((remote.clone(), Rc::new(entry)));
                    self.entries.len() - 1
                }
            };
        }
        self.entries[self.last].1.clone()
    }
}

fn build(remote: &RemoteRel, cxt: pg_sys::MemoryContext) -> LocalRel {
    let display = format!("{}.{}", remote.schema, remote.table);
    let s = CString::new(remote.schema.as_str()).expect("no NUL in names");
    let t = CString::new(remote.table.as_str()).expect("no NUL in names");
    // SAFETY: catalog lookups inside a transaction.
    let relid = unsafe {
        let nsp = pg_sys::get_namespace_oid(s.as_ptr(), true);
        if nsp == pg_sys::InvalidOid { pg_sys::InvalidOid } else { pg_sys::get_relname_relid(t.as_ptr(), nsp) }
    };
    if relid == pg_sys::InvalidOid {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("logical_ext: table \"{display}\" replicated by the publisher does not exist on the subscriber"),
            function_name!(),
        )
        .set_hint("Create the table on the subscriber; the worker retries the transaction with backoff.")
        .report(PgLogLevel::ERROR);
    }
    build_rel(relid, display, cxt)
}

fn build_rel(relid: pg_sys::Oid, display: String, map_cxt: pg_sys::MemoryContext) -> LocalRel {
    let own = ffi::OwnedContext::new(map_cxt, c"logical_ext relation");
    let cxt = own.get();
    // SAFETY: relid is a valid relation; opened and closed around reading its
    // descriptor (the lock is kept until the end of the transaction).
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as i32);
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let mut by_name = HashMap::new();
        let mut inputs = Vec::with_capacity(natts);
        let mut names = Vec::with_capacity(natts);
        for i in 0..natts {
            let att = &*(*desc).attrs.as_ptr().add(i);
            names.push(if att.attisdropped { String::new() } else { ffi::cstr_to_string(att.attname.data.as_ptr()) });
            if att.attisdropped || att.attgenerated != 0 {
                inputs.push(None);
                continue;
            }
            by_name.insert(names[i].clone(), i);
            let (mut func, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
            pg_sys::getTypeInputInfo(att.atttypid, &mut func, &mut ioparam);
            let mut finfo = Box::new(pg_sys::FmgrInfo::default());
            pg_sys::fmgr_info_cxt(func, &mut *finfo, cxt);
            inputs.push(Some(Input { finfo, ioparam, typmod: att.atttypmod }));
        }
        let key = lookup_key(rel);
        let partitioned = (*(*rel).rd_rel).relkind as u8 == pg_sys::RELKIND_PARTITIONED_TABLE;
        // A partitioned table's indexes hold no rows: conflicts are probed
        // in the leaves.
        let uniques = if partitioned { Vec::new() } else { probeable_unique_indexes(rel) };
        // Triggers (FOREIGN KEY and deferrable UNIQUE constraints are
        // triggers too) keep the per-change executor set-up, as native.
        let cacheable = (*(*rel).rd_rel).relkind as u8 == pg_sys::RELKIND_RELATION && (*rel).trigdesc.is_null();
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
        LocalRel {
            relid,
            display,
            natts,
            by_name,
            inputs,
            names,
            key,
            uniques,
            order: RefCell::new(Vec::new()),
            leaves: RefCell::new(Vec::new()),
            map_cxt,
            cacheable,
            _cxt: own,
        }
    }
}

/// The replica identity index (or primary key) of `rel` and its key columns.
///
/// # Safety
/// `rel` must be open.
unsafe fn lookup_key(rel: pg_sys::Relation) -> Option<(pg_sys::Oid, Vec<usize>)> {
    // SAFETY: rel is open; the bitmaps are palloc'd copies.
    unsafe {
        let (idx, kind) = match pg_sys::RelationGetReplicaIndex(rel) {
            i if i != pg_sys::InvalidOid => (i, pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_IDENTITY_KEY),
            _ => (pg_sys::RelationGetPrimaryKeyIndex(rel), pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_PRIMARY_KEY),
        };
        if idx == pg_sys::InvalidOid {
            return None;
        }
        let set = pg_sys::RelationGetIndexAttrBitmap(rel, kind);
        let cols = ffi::bitmapset_members(set)
            .into_iter()
            .map(|m| (m + pg_sys::FirstLowInvalidHeapAttributeNumber - 1) as usize)
            .collect();
        Some((idx, cols))
    }
}

/// # Safety
/// `rel` must be open.
unsafe fn probeable_unique_indexes(rel: pg_sys::Relation) -> Vec<(pg_sys::Oid, Vec<usize>)> {
    let mut out = Vec::new();
    // SAFETY: rel is open; each index is opened and closed around reading
    // its pg_index row.
    unsafe {
        for oid in ffi::oid_list(pg_sys::RelationGetIndexList(rel)) {
            let idx = pg_sys::index_open(oid, pg_sys::AccessShareLock as i32);
            let form = &*(*idx).rd_index;
            let plain =
                pg_sys::RelationGetIndexExpressions(idx).is_null() && pg_sys::RelationGetIndexPredicate(idx).is_null();
            if form.indisunique && form.indimmediate && plain {
                let n = form.indnkeyatts as usize;
                let keys = form.indkey.values.as_slice(n).iter().map(|&a| a as usize - 1).collect();
                out.push((oid, keys));
            }
            pg_sys::index_close(idx, pg_sys::NoLock as i32);
        }
    }
    out
}
