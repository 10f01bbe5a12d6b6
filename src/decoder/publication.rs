//! Routing a relation's changes: whether they are published, with which
//! actions, under which relation (`publish_via_partition_root`), which columns
//! and which row filters — the decisions pgoutput makes in
//! `get_rel_sync_entry`, `pgoutput_row_filter_init` and
//! `pgoutput_column_list_init`, taken here from the same catalogs so that
//! `publication_names` means exactly what it means to native subscribers.
//!
//! One deliberate difference from pgoutput: a tool's table (a member of an
//! extension, or in a schema that is one: pg_repack's work tables, pg_cron's
//! and pg_partman's catalogs) is not published through `FOR ALL TABLES` or
//! `FOR TABLES IN SCHEMA`, only when a publication names it
//! ([`tool_relation`]); asked once per relation, as part of its cached route.
//!
//! Without `publication_names` every decoded table is routed to itself with
//! the `actions` option. A [`Route`] is cached per relation by `stream.rs` and
//! dropped on relcache or publication invalidations.
//!
//! Descriptors are copied with `CreateTupleDescCopyConstr`, as pgoutput's
//! slots are: a plain copy clears `attgenerated` (generated columns would be
//! published) and drops the missing values of `ADD COLUMN ... DEFAULT` (old
//! rows would show NULL). Nothing here may raise an ERROR because of what the
//! WAL contains — an ERROR stops the slot at that change for ever — except
//! where pgoutput itself does (different column lists; a row filter whose
//! expression fails), see docs/FORMAT.md.

use super::options::Actions;
use super::values::is_unchanged_toast;
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

/// Load the named publications as they are at this point of the stream
/// (the historic catalog snapshot). A name without a publication here is
/// skipped with a WARNING, as pgoutput does since PostgreSQL 18: a
/// publication created after, or dropped before, the changes being decoded
/// is a normal event of a WAL stream, and an ERROR would stop the slot at
/// that change for ever (PostgreSQL 15's pgoutput does raise one). A name
/// that does not exist at all is refused when decoding starts (see
/// [`check_publications_exist`]).
pub(crate) fn load_publications(names: &[String]) -> Vec<PubDef> {
    names
        .iter()
        .filter_map(|name| {
            let cname = CString::new(name.as_str()).ok()?;
            // SAFETY: called inside a transaction (a decoding callback);
            // missing_ok=true returns NULL for a missing publication.
            let p = unsafe { pg_sys::GetPublicationByName(cname.as_ptr(), true) };
            if p.is_null() {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("logical_ext: skipped loading publication \"{name}\""),
                    function_name!(),
                )
                .set_detail("The publication does not exist at this point in the WAL stream.")
                .set_hint("Create the publication if it does not exist.")
                .report(PgLogLevel::WARNING);
                return None;
            }
            // SAFETY: a valid publication struct.
            let p = unsafe { &*p };
            Some(PubDef {
                oid: p.oid,
                alltables: p.alltables,
                viaroot: p.pubviaroot,
                actions: Actions {
                    insert: p.pubactions.pubinsert,
                    update: p.pubactions.pubupdate,
                    delete: p.pubactions.pubdelete,
                    truncate: p.pubactions.pubtruncate,
                },
            })
        })
        .collect()
}

/// Refuse, when decoding starts, a name that is no publication in the
/// current catalog (a typo must not read as an empty stream). Only possible
/// where decoding starts inside a transaction (the SQL functions); a
/// walsender session gets the WARNINGs of [`load_publications`].
pub(crate) fn check_publications_exist(names: &[String]) {
    // SAFETY: only reads the transaction state.
    if !unsafe { pg_sys::IsTransactionState() } {
        return;
    }
    for name in names {
        let Ok(cname) = CString::new(name.as_str()) else { continue };
        // SAFETY: inside a transaction; missing_ok=true.
        if unsafe { pg_sys::GetPublicationByName(cname.as_ptr(), true) }.is_null() {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("publication \"{name}\" does not exist"),
                function_name!(),
            )
            .set_hint("Name existing publications in publication_names (identifier syntax: unquoted names are folded to lower case).")
            .report(PgLogLevel::ERROR);
        }
    }
}

/// Which row filter applies: pgoutput keeps one per DML kind.
#[derive(Clone, Copy)]
pub(crate) enum FilterAction {
    Insert = 0,
    Update = 1,
    Delete = 2,
}

/// Compiled row filters of one route, evaluated against the published
/// relation's row type (a virtual slot filled from deformed values).
pub(crate) struct RowFilter {
    estate: *mut pg_sys::EState,
    exprs: [*mut pg_sys::ExprState; 3],
    slot: *mut pg_sys::TupleTableSlot,
    /// The slot's descriptor (a `CreateTupleDescCopyConstr`, freed on drop).
    desc: pg_sys::TupleDesc,
}

/// A deformed row in the published relation's layout.
pub(crate) type Row<'a> = (&'a [pg_sys::Datum], &'a [bool]);

impl RowFilter {
    /// Whether the row passes the filter for `action` (true when that action
    /// has no filter). `row` is the row evaluated; `old`, for an UPDATE that
    /// logged an old row, supplies what pgoutput's `pgoutput_row_filter`
    /// copies into the new row: the value of every column whose new value is
    /// an unchanged TOAST pointer. An on-disk TOAST pointer is never read
    /// during decoding (it points to today's data, which may be gone and
    /// would fail the read for ever): one that remains is NULL to the filter.
    /// (For a valid stream none remains in a column a filter reads: an UPDATE
    /// filter may only use replica-identity columns, whose external values
    /// PostgreSQL always logs in the old row.)
    ///
    /// # Safety
    /// The rows have the published relation's attribute count and valid
    /// datums for its types.
    pub(crate) unsafe fn passes(&self, action: FilterAction, row: Row<'_>, old: Option<Row<'_>>) -> bool {
        let state = self.exprs[action as usize];
        if state.is_null() {
            return true;
        }
        // SAFETY: estate, slot and state were built together in `compile` and
        // live in the route's context; the slot's arrays have natts
        // entries; evaluation allocates in the per-tuple context, which is
        // reset right after.
        unsafe {
            let natts = (*self.desc).natts as usize;
            pg_sys::ExecClearTuple(self.slot);
            let values = std::slice::from_raw_parts_mut((*self.slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*self.slot).tts_isnull, natts);
            for i in 0..natts {
                let (mut d, mut null) = (row.0[i], row.1[i]);
                let varlena = (*(*self.desc).attrs.as_ptr().add(i)).attlen == -1;
                if !null && varlena && is_unchanged_toast(d) {
                    match old {
                        Some((ov, on)) if !on[i] && !is_unchanged_toast(ov[i]) => d = ov[i],
                        _ => null = true,
                    }
                }
                values[i] = d;
                nulls[i] = null;
            }
            pg_sys::ExecStoreVirtualTuple(self.slot);
            let econtext = pg_sys::MakePerTupleExprContext(self.estate);
            (*econtext).ecxt_scantuple = self.slot;
            let mut isnull = false;
            let result = {
                let _cx = ContextSwitch::to((*econtext).ecxt_per_tuple_memory);
                match (*state).evalfunc {
                    Some(eval) => eval(state, econtext, &mut isnull),
                    None => pg_sys::Datum::from(0usize),
                }
            };
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            pg_sys::ExecClearTuple(self.slot);
            !isnull && result.value() != 0
        }
    }
}

impl Drop for RowFilter {
    fn drop(&mut self) {
        // SAFETY: all three were created by `compile` and are referenced
        // nowhere else; the slot is dropped before its descriptor.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::FreeTupleDesc(self.desc);
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
    /// When `emit_as` is an ancestor: this relation's own descriptor, copied
    /// with its constraints so that rows older than an `ADD COLUMN ...
    /// DEFAULT` read the stored missing value (as pgoutput's slots built from
    /// `CreateTupleDescCopyConstr` do); NULL otherwise (the shape's
    /// descriptor is the relation's).
    pub(crate) source_desc: pg_sys::TupleDesc,
    /// When `emit_as` is an ancestor: for each of its attributes, the 1-based
    /// attribute of this relation that holds it (0: none, a dropped column).
    pub(crate) attmap: Vec<i16>,
    /// Everything PostgreSQL allocated for a published route (descriptor
    /// copies, row-filter expressions and executor state, catalog lookups
    /// made while compiling): deleted with the route, so a route rebuilt
    /// after an invalidation leaves nothing behind. `None` for a direct
    /// route (it allocates nothing). Declared last: dropped after `filter`
    /// (whose Drop shuts its executor state down) and `source_desc`.
    _cxt: Option<ffi::OwnedContext>,
}

impl Route {
    /// The route when no publication is named: every table, `actions` option.
    pub(crate) fn direct(relid: pg_sys::Oid, actions: Actions) -> Route {
        Route {
            emit_as: relid,
            actions,
            columns: None,
            filter: None,
            source_desc: std::ptr::null_mut(),
            attmap: Vec::new(),
            _cxt: None,
        }
    }

    /// The route through `pubs`, as pgoutput computes it.
    ///
    /// # Safety
    /// `rel` must be an open relation; call inside a transaction. Long-lived
    /// state is allocated in a context of the route's own under `parent`,
    /// which must outlive the route.
    pub(crate) unsafe fn published(rel: pg_sys::Relation, pubs: &[PubDef], parent: pg_sys::MemoryContext) -> Route {
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

        // Asked at most once per route (routes are cached per relation),
        // and only when a publication covers the relation wholesale.
        let mut tool = None;
        let mut is_tool = || *tool.get_or_insert_with(|| tool_relation(relid));
        let mut actions = Actions::NONE;
        let mut publish_as = relid;
        let mut level = 0;
        let mut chosen: Vec<&PubDef> = Vec::new();
        for p in pubs {
            let publish;
            let mut pub_relid = relid;
            let mut anc_level = 0;
            if p.alltables {
                // A tool's table is not "all tables" (see [`tool_relation`]).
                publish = !is_tool();
                if p.viaroot
                    && let Some(&root) = ancestors.last()
                {
                    pub_relid = root;
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
                publish =
                    rel_pubs.contains(&p.oid) || (schema_pubs.contains(&p.oid) && !is_tool()) || ancestor_published;
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

        let cxt = ffi::OwnedContext::new(parent, c"logical_ext route");
        let _cx = ContextSwitch::to(cxt.get());
        let mut source_desc = std::ptr::null_mut();
        let mut attmap = Vec::new();
        // SAFETY: rel is open; the ancestor is a valid relation we open and
        // close around copying its descriptor. Copies keep constraints,
        // missing values and `attgenerated` (CreateTupleDescCopy clears them).
        let target_desc = unsafe {
            if publish_as == relid {
                pg_sys::CreateTupleDescCopyConstr((*rel).rd_att)
            } else {
                let anc = pg_sys::RelationIdGetRelation(publish_as);
                if anc.is_null() {
                    // The ancestor is not visible in this snapshot (never
                    // expected): publish the partition as itself.
                    return Route::direct(relid, actions);
                }
                let desc = pg_sys::CreateTupleDescCopyConstr((*anc).rd_att);
                pg_sys::RelationClose(anc);
                source_desc = pg_sys::CreateTupleDescCopyConstr((*rel).rd_att);
                let map = pg_sys::build_attrmap_by_name(source_desc, desc);
                attmap = std::slice::from_raw_parts((*map).attnums, (*map).maplen as usize).to_vec();
                pg_sys::free_attrmap(map);
                desc
            }
        };
        // SAFETY: publish_as and the chosen publications are valid; the
        // descriptor was just copied into the route's context.
        let (filter, columns) = unsafe { compile(publish_as, &chosen, target_desc) };
        Route { emit_as: publish_as, actions, columns, filter, source_desc, attmap, _cxt: Some(cxt) }
    }
}

/// Whether `relid` is a tool's table: a member of an extension
/// (`pg_depend` deptype `e`: pg_cron's `cron.job` and `cron.job_run_details`,
/// pg_partman's `part_config`) or in a schema that is one (pg_repack's
/// `repack.log_N` and `repack.table_N`). Such tables exist only where the
/// tool's extension is installed (or only while the tool runs), and hold
/// that node's own state: `FOR ALL TABLES` and `FOR TABLES IN SCHEMA` do not
/// publish them (a subscriber without them would stop on their rows); a
/// publication that names one (`FOR TABLE`) does. The same rule keeps their
/// DDL out of capture (docs/DDL.md, "Tools"). pgoutput publishes them: a
/// deliberate difference (docs/FORMAT.md).
fn tool_relation(relid: pg_sys::Oid) -> bool {
    // SAFETY: pg_depend lookups by OID inside a decoding callback (a
    // transaction with the historic catalog snapshot, so membership is read
    // as of this point of the stream); missing objects give InvalidOid.
    unsafe {
        pg_sys::getExtensionOfObject(pg_sys::RelationRelationId, relid) != pg_sys::InvalidOid
            || pg_sys::getExtensionOfObject(pg_sys::NamespaceRelationId, pg_sys::get_rel_namespace(relid))
                != pg_sys::InvalidOid
    }
}

/// Build the row filters and the column list of the publications `chosen`
/// for relation `relid` (whose row type is `desc`, a copy that the returned
/// filter takes over, or that is freed here), by pgoutput's rules:
/// - row filters (`pgoutput_row_filter_init`): a publication FOR ALL TABLES,
///   or one that publishes `relid`'s schema (TABLES IN SCHEMA), has no filter
///   for the table even if it also lists it with a WHERE; per DML kind, one
///   publication without a filter means no filter, else the filters are ORed;
/// - column lists (`pgoutput_column_list_init`): a list naming as many
///   columns as the relation has attributes (dropped and generated ones
///   included, as PostgreSQL 15 counts) is no list; two publications with
///   different lists are an error (as in pgoutput);
/// - generated columns are never published (PostgreSQL 15).
///
/// # Safety
/// Inside a transaction, with `CurrentMemoryContext` the route's context.
unsafe fn compile(
    relid: pg_sys::Oid,
    chosen: &[&PubDef],
    desc: pg_sys::TupleDesc,
) -> (Option<RowFilter>, Option<Vec<bool>>) {
    // SAFETY: desc is a valid descriptor copy; index < natts.
    let natts = unsafe { (*desc).natts } as usize;
    // SAFETY: as above.
    let att = |i: usize| unsafe { &*(*desc).attrs.as_ptr().add(i) };
    // SAFETY: valid relation OID.
    let schema = unsafe { pg_sys::get_rel_namespace(relid) };
    let mut no_filter = [false; 3];
    let mut quals: [*mut pg_sys::List; 3] = [std::ptr::null_mut(); 3];
    let mut column_list: Option<Option<Vec<i16>>> = None;
    for p in chosen {
        let (qual, cols) = if p.alltables {
            (None, None)
        } else {
            // SAFETY: relid and p.oid are valid OIDs; the tuple is released inside.
            let (qual, cols) = unsafe { publication_rel_entry(relid, p.oid) };
            // SAFETY: a syscache existence probe by OIDs.
            let by_schema = unsafe {
                pg_sys::SearchSysCacheExists(
                    pg_sys::SysCacheIdentifier::PUBLICATIONNAMESPACEMAP as i32,
                    schema.into(),
                    p.oid.into(),
                    pg_sys::Datum::from(0usize),
                    pg_sys::Datum::from(0usize),
                )
            };
            // pgoutput 15 compares with RelationGetNumberOfAttributes:
            // dropped and generated columns count, so a table that has any
            // never has a "complete" list.
            let cols = cols.filter(|c| c.len() != natts);
            (if by_schema { None } else { qual }, cols)
        };
        let published = [p.actions.insert, p.actions.update, p.actions.delete];
        for i in 0..3 {
            if !published[i] {
                continue;
            }
            match qual {
                None => no_filter[i] = true,
                // SAFETY: appending a node pointer to a list in the route's context.
                Some(node) => quals[i] = unsafe { pg_sys::lappend(quals[i], node.cast()) },
            }
        }
        match &column_list {
            None => column_list = Some(cols),
            Some(first) if *first != cols => {
                // SAFETY: valid relation OID.
                let name = unsafe { ffi::cstr_to_string(pg_sys::get_rel_name(relid)) };
                let schema_name = ffi::namespace_name(schema);
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!(
                        "cannot use different column lists for table \"{schema_name}.{name}\" in different publications"
                    ),
                    function_name!(),
                )
                .set_hint(
                    "Give the table the same column list in every publication of publication_names, \
                     or name fewer publications.",
                )
                .report(PgLogLevel::ERROR);
            }
            Some(_) => {}
        }
    }

    let columns = column_list.flatten().map(|attnums| {
        let mut mask = vec![false; natts];
        for a in attnums {
            if let Some(m) = mask.get_mut((a as usize).wrapping_sub(1)) {
                *m = true;
            }
        }
        mask
    });
    // Generated columns are not replicated by pgoutput (PostgreSQL 15); the
    // copy kept `attgenerated`.
    let columns = columns.or_else(|| {
        let generated: Vec<bool> = (0..natts).map(|i| att(i).attgenerated != 0).collect();
        generated.iter().any(|g| *g).then(|| generated.iter().map(|g| !g).collect())
    });

    if (0..3).all(|i| no_filter[i] || quals[i].is_null()) {
        // SAFETY: the copy is ours and referenced nowhere else.
        unsafe { pg_sys::FreeTupleDesc(desc) };
        return (None, columns);
    }
    // SAFETY: standard executor setup, as pgoutput does, in the route's context.
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
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual);
        RowFilter { estate, exprs, slot, desc }
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
