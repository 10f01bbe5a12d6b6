//! Routing a relation's changes: whether they are published, with which
//! actions, under which relation (`publish_via_partition_root`), which columns
//! and which row filters — the decisions pgoutput makes in
//! `get_rel_sync_entry`, `pgoutput_row_filter_init` and
//! `pgoutput_column_list_init`, taken here from the same catalogs so that
//! `publication_names` means exactly what it means to native subscribers.
//!
//! Without `publication_names` every decoded table is routed to itself with
//! the `actions` option. A [`Route`] is cached per relation by `stream.rs` and
//! dropped on relcache or publication invalidations.

use super::options::Actions;
use crate::ffi::{self, ContextSwitch};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::ffi::CString;

/// `pg_publication_rel` attribute numbers (not bound by pgrx).
const ANUM_PRQUAL: i16 = 4;
const ANUM_PRATTRS: i16 = 5;

/// A publication named in `publication_names`, as loaded from the catalog.
pub(crate) struct PubDef {
    oid: pg_sys::Oid,
    alltables: bool,
    viaroot: bool,
    actions: Actions,
}

/// Load the named publications; a missing one is an error, as in pgoutput.
pub(crate) fn load_publications(names: &[String]) -> Vec<PubDef> {
    names
        .iter()
        .map(|name| {
            let cname = CString::new(name.as_str()).expect("identifier has no NUL");
            // SAFETY: called inside a transaction (a decoding callback);
            // missing_ok=false raises the ERROR for a missing publication.
            let p = unsafe { &*pg_sys::GetPublicationByName(cname.as_ptr(), false) };
            PubDef {
                oid: p.oid,
                alltables: p.alltables,
                viaroot: p.pubviaroot,
                actions: Actions {
                    insert: p.pubactions.pubinsert,
                    update: p.pubactions.pubupdate,
                    delete: p.pubactions.pubdelete,
                    truncate: p.pubactions.pubtruncate,
                },
            }
        })
        .collect()
}

/// Which row filter applies: pgoutput keeps one per DML kind.
#[derive(Clone, Copy)]
pub(crate) enum FilterAction {
    Insert = 0,
    Update = 1,
    Delete = 2,
}

/// Compiled row filters of one route, evaluated against the published
/// relation's row type.
pub(crate) struct RowFilter {
    estate: *mut pg_sys::EState,
    exprs: [*mut pg_sys::ExprState; 3],
    slot: *mut pg_sys::TupleTableSlot,
}

impl RowFilter {
    /// Whether `tuple` passes the filter for `action` (true when that action
    /// has no filter).
    ///
    /// # Safety
    /// `tuple` must be a tuple of the published relation's row type.
    pub(crate) unsafe fn passes(&self, action: FilterAction, tuple: pg_sys::HeapTuple) -> bool {
        let state = self.exprs[action as usize];
        if state.is_null() {
            return true;
        }
        // SAFETY: estate, slot and state were built together in `compile` and
        // live in the session's cache context; evaluation allocates in the
        // per-tuple context, which is reset right after.
        unsafe {
            let econtext = pg_sys::MakePerTupleExprContext(self.estate);
            pg_sys::ExecStoreHeapTuple(tuple, self.slot, false);
            (*econtext).ecxt_scantuple = self.slot;
            let mut isnull = false;
            let result = {
                let _cx = ContextSwitch::to((*econtext).ecxt_per_tuple_memory);
                ((*state).evalfunc.expect("compiled expression"))(state, econtext, &mut isnull)
            };
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            pg_sys::ExecClearTuple(self.slot);
            !isnull && result.value() != 0
        }
    }
}

impl Drop for RowFilter {
    fn drop(&mut self) {
        // SAFETY: both were created by `compile` and are referenced nowhere else.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::FreeExecutorState(self.estate);
        }
    }
}

/// Where and how a relation's changes go.
pub(crate) struct Route {
    /// The relation whose name and columns the stream shows (the relation
    /// itself, or its published ancestor with `publish_via_partition_root`).
    pub(crate) emit_as: pg_sys::Oid,
    pub(crate) actions: Actions,
    /// Published columns by attribute index of `emit_as`; `None` = all.
    pub(crate) columns: Option<Vec<bool>>,
    pub(crate) filter: Option<RowFilter>,
    /// Conversion of this relation's rows to `emit_as`'s row type.
    pub(crate) convert: *mut pg_sys::TupleConversionMap,
}

impl Drop for Route {
    fn drop(&mut self) {
        if !self.convert.is_null() {
            // SAFETY: created by convert_tuples_by_name for this route only.
            unsafe { pg_sys::free_conversion_map(self.convert) }
        }
    }
}

impl Route {
    /// The route when no publication is named: every table, `actions` option.
    pub(crate) fn direct(relid: pg_sys::Oid, actions: Actions) -> Route {
        Route { emit_as: relid, actions, columns: None, filter: None, convert: std::ptr::null_mut() }
    }

    /// The route through `pubs`, as pgoutput computes it.
    ///
    /// # Safety
    /// `rel` must be an open relation; call inside a transaction. Long-lived
    /// state is allocated in `cache_cxt`.
    pub(crate) unsafe fn published(rel: pg_sys::Relation, pubs: &[PubDef], cache_cxt: pg_sys::MemoryContext) -> Route {
        // SAFETY: rel is open.
        let relid = unsafe { (*rel).rd_id };
        // SAFETY: rel is open.
        if !unsafe { pg_sys::is_publishable_relation(rel) } {
            return Route::direct(relid, Actions::NONE);
        }
        // SAFETY: plain catalog lookups on a valid relation OID.
        let (rel_pubs, schema_pubs, am_partition, relkind) = unsafe {
            (
                ffi::oid_list(pg_sys::GetRelationPublications(relid)),
                ffi::oid_list(pg_sys::GetSchemaPublications(pg_sys::get_rel_namespace(relid))),
                pg_sys::get_rel_relispartition(relid),
                pg_sys::get_rel_relkind(relid) as u8,
            )
        };
        let ancestors_list =
            // SAFETY: relid is a partition.
            if am_partition { unsafe { ffi::get_partition_ancestors(relid) } } else { std::ptr::null_mut() };
        // SAFETY: get_partition_ancestors returns an OID list.
        let ancestors = unsafe { ffi::oid_list(ancestors_list) };

        let mut actions = Actions::NONE;
        let mut publish_as = relid;
        let mut level = 0;
        let mut chosen: Vec<&PubDef> = Vec::new();
        for p in pubs {
            let publish;
            let mut pub_relid = relid;
            let mut anc_level = 0;
            if p.alltables {
                publish = true;
                if p.viaroot && am_partition {
                    pub_relid = *ancestors.last().expect("a partition has ancestors");
                    anc_level = ancestors.len() as i32;
                }
            } else {
                let mut ancestor_published = false;
                if am_partition {
                    let mut lvl = 0;
                    // SAFETY: valid publication OID and ancestor list.
                    let anc = unsafe { pg_sys::GetTopMostAncestorInPublication(p.oid, ancestors_list, &mut lvl) };
                    if anc != pg_sys::InvalidOid {
                        ancestor_published = true;
                        if p.viaroot {
                            pub_relid = anc;
                            anc_level = lvl;
                        }
                    }
                }
                publish = rel_pubs.contains(&p.oid) || schema_pubs.contains(&p.oid) || ancestor_published;
            }
            if publish && (relkind != pg_sys::RELKIND_PARTITIONED_TABLE || p.viaroot) {
                actions = actions.union(p.actions);
                if level > anc_level {
                    continue;
                }
                if level < anc_level {
                    publish_as = pub_relid;
                    level = anc_level;
                    chosen.clear();
                }
                chosen.push(p);
            }
        }
        if chosen.is_empty() {
            return Route::direct(relid, Actions::NONE);
        }

        let _cx = ContextSwitch::to(cache_cxt);
        let mut convert = std::ptr::null_mut();
        // SAFETY: rel is open; the ancestor is a valid relation we open and
        // close around copying its descriptor.
        let target_desc = unsafe {
            if publish_as == relid {
                pg_sys::CreateTupleDescCopy((*rel).rd_att)
            } else {
                let anc = pg_sys::RelationIdGetRelation(publish_as);
                let desc = pg_sys::CreateTupleDescCopy((*anc).rd_att);
                pg_sys::RelationClose(anc);
                convert = pg_sys::convert_tuples_by_name(pg_sys::CreateTupleDescCopy((*rel).rd_att), desc);
                desc
            }
        };
        // SAFETY: publish_as and the chosen publications are valid; the
        // descriptor was just copied into the cache context.
        let (filter, columns) = unsafe { compile(publish_as, &chosen, target_desc) };
        Route { emit_as: publish_as, actions, columns, filter, convert }
    }
}

/// Build the row filters and the column list of the publications `chosen`
/// for relation `relid` (whose row type is `desc`).
///
/// # Safety
/// Inside a transaction, with `CurrentMemoryContext` the cache context.
unsafe fn compile(
    relid: pg_sys::Oid,
    chosen: &[&PubDef],
    desc: pg_sys::TupleDesc,
) -> (Option<RowFilter>, Option<Vec<bool>>) {
    let mut no_filter = [false; 3];
    let mut quals: [*mut pg_sys::List; 3] = [std::ptr::null_mut(); 3];
    let mut column_list: Option<Option<Vec<i16>>> = None;
    for p in chosen {
        let (qual, cols) = if p.alltables {
            (None, None)
        } else {
            // SAFETY: relid and p.oid are valid OIDs; the tuple is released below.
            unsafe { publication_rel_entry(relid, p.oid) }
        };
        let published = [p.actions.insert, p.actions.update, p.actions.delete];
        for i in 0..3 {
            if !published[i] {
                continue;
            }
            match qual {
                None => no_filter[i] = true,
                // SAFETY: appending a node pointer to a list in the cache context.
                Some(node) => quals[i] = unsafe { pg_sys::lappend(quals[i], node.cast()) },
            }
        }
        match &column_list {
            None => column_list = Some(cols),
            Some(first) if *first != cols => {
                // SAFETY: valid relation OID.
                let name = unsafe { ffi::cstr_to_string(pg_sys::get_rel_name(relid)) };
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("cannot use different column lists for table \"{name}\" in different publications"),
                    function_name!(),
                )
                .report(PgLogLevel::ERROR);
            }
            Some(_) => {}
        }
    }

    // SAFETY: desc is a valid descriptor copy.
    let natts = unsafe { (*desc).natts } as usize;
    let columns = column_list.flatten().map(|attnums| {
        let mut mask = vec![false; natts];
        for a in attnums {
            mask[(a - 1) as usize] = true;
        }
        mask
    });
    // Generated columns are not replicated by pgoutput (PostgreSQL 15).
    let columns = columns.or_else(|| {
        // SAFETY: index < natts.
        let generated: Vec<bool> =
            (0..natts).map(|i| unsafe { (*(*desc).attrs.as_ptr().add(i)).attgenerated != 0 }).collect();
        generated.iter().any(|g| *g).then(|| generated.iter().map(|g| !g).collect())
    });

    if (0..3).all(|i| no_filter[i] || quals[i].is_null()) {
        return (None, columns);
    }
    // SAFETY: standard executor setup, as pgoutput does, in the cache context.
    let filter = unsafe {
        let estate = pg_sys::CreateExecutorState();
        let mut exprs = [std::ptr::null_mut(); 3];
        for i in 0..3 {
            if no_filter[i] || quals[i].is_null() {
                continue;
            }
            let expr = if (*quals[i]).length == 1 {
                (*(*quals[i]).elements).ptr_value.cast::<pg_sys::Expr>()
            } else {
                pg_sys::make_orclause(quals[i])
            };
            exprs[i] = pg_sys::ExecPrepareExpr(expr, estate);
        }
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple);
        RowFilter { estate, exprs, slot }
    };
    (Some(filter), columns)
}

/// The row filter (as a node) and column list of `pg_publication_rel` for
/// (relid, pubid); `(None, None)` when the table is published through its
/// schema (no entry).
///
/// # Safety
/// Inside a transaction.
unsafe fn publication_rel_entry(
    relid: pg_sys::Oid,
    pubid: pg_sys::Oid,
) -> (Option<*mut pg_sys::Node>, Option<Vec<i16>>) {
    let cache = pg_sys::SysCacheIdentifier::PUBLICATIONRELMAP as i32;
    // SAFETY: syscache lookup by OIDs; the tuple is released before returning.
    unsafe {
        let tup = pg_sys::SearchSysCache2(cache, relid.into(), pubid.into());
        if tup.is_null() {
            return (None, None);
        }
        let mut isnull = false;
        let qual = pg_sys::SysCacheGetAttr(cache, tup, ANUM_PRQUAL, &mut isnull);
        let qual = (!isnull).then(|| pg_sys::stringToNode(pg_sys::text_to_cstring(qual.cast_mut_ptr())).cast());
        let attrs = pg_sys::SysCacheGetAttr(cache, tup, ANUM_PRATTRS, &mut isnull);
        let cols = (!isnull).then(|| {
            let set = pg_sys::pub_collist_to_bitmapset(std::ptr::null_mut(), attrs, pg_sys::CurrentMemoryContext);
            ffi::bitmapset_members(set).into_iter().map(|m| m as i16).collect()
        });
        pg_sys::ReleaseSysCache(tup);
        (qual, cols)
    }
}
