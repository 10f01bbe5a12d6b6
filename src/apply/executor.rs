//! Applying one row change to a local table through the executor, as
//! PostgreSQL's own apply worker does (`worker.c`): constraints, every index,
//! generated columns and ENABLE REPLICA/ALWAYS triggers behave natively.
//! Values arrive as text and go through each column's input function;
//! subscriber-only columns get their defaults.

use super::protocol::Column;
use super::relation::LocalRel;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Executor state for one change on one relation.
struct Edata {
    rel: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
}

impl Edata {
    /// # Safety
    /// Inside a transaction with an active snapshot.
    unsafe fn begin(relid: pg_sys::Oid) -> Edata {
        // SAFETY: the standard executor set-up of worker.c's
        // create_edata_for_relation, all in the current memory context.
        unsafe {
            let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as i32);
            if (*(*rel).rd_rel).relkind as u8 != pg_sys::RELKIND_RELATION {
                let name = crate::ffi::cstr_to_string((*(*rel).rd_rel).relname.data.as_ptr());
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("logical_ext: cannot apply changes to \"{name}\": only plain tables are supported as targets"),
                    function_name!(),
                )
                .set_hint("Publish the partitions (publish_via_partition_root = false) and create them as plain tables on the subscriber.")
                .report(PgLogLevel::ERROR);
            }
            let estate = pg_sys::CreateExecutorState();
            let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>()) as *mut pg_sys::RangeTblEntry;
            (*rte).type_ = pg_sys::NodeTag::T_RangeTblEntry;
            (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
            (*rte).relid = relid;
            (*rte).relkind = (*(*rel).rd_rel).relkind;
            (*rte).rellockmode = pg_sys::AccessShareLock as i32;
            pg_sys::ExecInitRangeTable(estate, pg_sys::lappend(std::ptr::null_mut(), rte.cast()));
            let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
            (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
            pg_sys::InitResultRelInfo(rri, rel, 1, std::ptr::null_mut(), 0);
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::AfterTriggerBeginQuery();
            pg_sys::ExecOpenIndices(rri, false);
            Edata { rel, estate, rri }
        }
    }

    fn desc(&self) -> pg_sys::TupleDesc {
        // SAFETY: rel is open.
        unsafe { (*self.rel).rd_att }
    }

    /// A virtual slot of the relation's row type, all NULL.
    fn virtual_slot(&self) -> *mut pg_sys::TupleTableSlot {
        // SAFETY: estate and desc are valid; the slot is freed with the estate.
        unsafe {
            let slot = pg_sys::ExecInitExtraTupleSlot(self.estate, self.desc(), &pg_sys::TTSOpsVirtual);
            pg_sys::ExecClearTuple(slot);
            let n = (*self.desc()).natts as usize;
            std::slice::from_raw_parts_mut((*slot).tts_isnull, n).fill(true);
            slot
        }
    }

    /// Find the local row matching the key values in `search`.
    fn find(&self, rel: &LocalRel, search: *mut pg_sys::TupleTableSlot) -> Option<*mut pg_sys::TupleTableSlot> {
        // SAFETY: valid relation, estate and slots; the found row is locked.
        unsafe {
            let local = pg_sys::table_slot_create(self.rel, &mut (*self.estate).es_tupleTable);
            let found = match &rel.key {
                Some((idx, _)) => pg_sys::RelationFindReplTupleByIndex(
                    self.rel,
                    *idx,
                    pg_sys::LockTupleMode::LockTupleExclusive,
                    search,
                    local,
                ),
                None => {
                    pg_sys::RelationFindReplTupleSeq(self.rel, pg_sys::LockTupleMode::LockTupleExclusive, search, local)
                }
            };
            found.then_some(local)
        }
    }

    fn finish(self) {
        // SAFETY: tears down what `begin` set up, once.
        unsafe {
            pg_sys::ExecCloseIndices(self.rri);
            pg_sys::AfterTriggerEndQuery(self.estate);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.rel, pg_sys::NoLock as i32);
        }
    }
}

/// Store `cols` into `slot` (by name), returning which attributes were set.
fn store(rel: &LocalRel, slot: *mut pg_sys::TupleTableSlot, cols: &[Column<'_>], scratch: &mut Vec<u8>) -> Vec<bool> {
    let mut present = vec![false; rel.natts];
    // SAFETY: the slot has natts values/isnull entries.
    let (values, nulls) = unsafe {
        (
            std::slice::from_raw_parts_mut((*slot).tts_values, rel.natts),
            std::slice::from_raw_parts_mut((*slot).tts_isnull, rel.natts),
        )
    };
    for c in cols {
        let i = rel.attr(&c.name);
        let input = rel.inputs[i].as_ref().expect("mapped columns have an input function");
        match c.text() {
            Ok(Some(text)) => {
                values[i] = input.datum(&text, scratch);
                nulls[i] = false;
            }
            Ok(None) => nulls[i] = true,
            Err(e) => {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                    format!("logical_ext: malformed value for column \"{}\" of \"{}\": {e}", c.name, rel.display),
                    function_name!(),
                )
                .report(PgLogLevel::ERROR);
            }
        }
        present[i] = true;
    }
    present
}

/// Fill columns the publisher did not send with their defaults.
fn fill_defaults(e: &Edata, rel: &LocalRel, slot: *mut pg_sys::TupleTableSlot, present: &[bool]) {
    for (i, (&sent, input)) in present.iter().zip(&rel.inputs).enumerate() {
        if sent || input.is_none() {
            continue;
        }
        // SAFETY: attribute numbers are in range; the expression is evaluated
        // in the executor's per-tuple context.
        unsafe {
            let def = pg_sys::build_column_default(e.rel, i as i32 + 1);
            if def.is_null() {
                continue;
            }
            let state = pg_sys::ExecInitExpr(pg_sys::expression_planner(def.cast()), std::ptr::null_mut());
            let econtext = pg_sys::MakePerTupleExprContext(e.estate);
            let mut isnull = false;
            let d = pg_sys::ExecEvalExpr(state, econtext, &mut isnull);
            *(*slot).tts_values.add(i) = d;
            *(*slot).tts_isnull.add(i) = isnull;
        }
    }
}

/// The search slot for UPDATE/DELETE: the key values.
fn search_slot(e: &Edata, rel: &LocalRel, key: &[Column<'_>], scratch: &mut Vec<u8>) -> *mut pg_sys::TupleTableSlot {
    let slot = e.virtual_slot();
    let present = store(rel, slot, key, scratch);
    let missing = match &rel.key {
        Some((_, cols)) => cols.iter().any(|&c| !present[c]),
        None => (0..rel.natts).any(|i| rel.inputs[i].is_some() && !present[i]),
    };
    if missing {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("logical_ext: the publisher's replica identity does not cover how table \"{}\" identifies rows on the subscriber", rel.display),
            function_name!(),
        )
        .set_hint("Give the subscriber table the same primary key or replica identity index as the publisher, or use REPLICA IDENTITY FULL on the publisher.")
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: a virtual slot whose values were just set.
    unsafe { pg_sys::ExecStoreVirtualTuple(slot) };
    slot
}

pub(crate) fn insert(rel: &LocalRel, new: &[Column<'_>], scratch: &mut Vec<u8>) {
    // SAFETY: called inside a transaction with an active snapshot.
    let e = unsafe { Edata::begin(rel.relid) };
    let slot = e.virtual_slot();
    let present = store(rel, slot, new, scratch);
    fill_defaults(&e, rel, slot, &present);
    // SAFETY: a complete virtual tuple of the relation.
    unsafe {
        pg_sys::ExecStoreVirtualTuple(slot);
        pg_sys::ExecSimpleRelationInsert(e.rri, e.estate, slot);
    }
    e.finish();
}

/// UPDATE; `false` when no local row matched.
pub(crate) fn update(rel: &LocalRel, key: &[Column<'_>], new: &[Column<'_>], scratch: &mut Vec<u8>) -> bool {
    // SAFETY: called inside a transaction with an active snapshot.
    let e = unsafe { Edata::begin(rel.relid) };
    let search = search_slot(&e, rel, key, scratch);
    let found = e.find(rel, search);
    if let Some(local) = found {
        let slot = e.virtual_slot();
        // SAFETY: copies the local row's datums (valid while `local` holds
        // the locked tuple), then overwrites the columns the publisher sent;
        // columns it did not send (unchanged TOAST) keep their local value.
        unsafe {
            pg_sys::slot_getallattrs(local);
            std::ptr::copy_nonoverlapping((*local).tts_values, (*slot).tts_values, rel.natts);
            std::ptr::copy_nonoverlapping((*local).tts_isnull, (*slot).tts_isnull, rel.natts);
        }
        store(rel, slot, new, scratch);
        // SAFETY: standard EPQ set-up around ExecSimpleRelationUpdate.
        unsafe {
            pg_sys::ExecStoreVirtualTuple(slot);
            let mut epq = pg_sys::EPQState::default();
            pg_sys::EvalPlanQualInit(&mut epq, e.estate, std::ptr::null_mut(), std::ptr::null_mut(), -1);
            epq.origslot = slot;
            pg_sys::ExecSimpleRelationUpdate(e.rri, e.estate, &mut epq, local, slot);
            pg_sys::EvalPlanQualEnd(&mut epq);
        }
    }
    e.finish();
    found.is_some()
}

/// DELETE; `false` when no local row matched.
pub(crate) fn delete(rel: &LocalRel, key: &[Column<'_>], scratch: &mut Vec<u8>) -> bool {
    // SAFETY: called inside a transaction with an active snapshot.
    let e = unsafe { Edata::begin(rel.relid) };
    let search = search_slot(&e, rel, key, scratch);
    let found = e.find(rel, search);
    if let Some(local) = found {
        // SAFETY: standard EPQ set-up around ExecSimpleRelationDelete.
        unsafe {
            let mut epq = pg_sys::EPQState::default();
            pg_sys::EvalPlanQualInit(&mut epq, e.estate, std::ptr::null_mut(), std::ptr::null_mut(), -1);
            epq.origslot = local;
            pg_sys::ExecSimpleRelationDelete(e.rri, e.estate, &mut epq, local);
            pg_sys::EvalPlanQualEnd(&mut epq);
        }
    }
    e.finish();
    found.is_some()
}

/// TRUNCATE of the local relations `relids` in one statement, as the
/// publisher did (its CASCADE already listed every relation).
pub(crate) fn truncate(relids: &[pg_sys::Oid], restart_identity: bool) {
    // SAFETY: relations are opened with AccessExclusiveLock as TRUNCATE needs,
    // truncated by the same code path as the TRUNCATE command, and closed
    // keeping their locks until commit.
    unsafe {
        let mut rels = std::ptr::null_mut();
        let mut ids = std::ptr::null_mut();
        let mut opened = Vec::new();
        for &relid in relids {
            let r = pg_sys::table_open(relid, pg_sys::AccessExclusiveLock as i32);
            rels = pg_sys::lappend(rels, r.cast());
            ids = pg_sys::lappend_oid(ids, relid);
            opened.push(r);
        }
        pg_sys::ExecuteTruncateGuts(rels, ids, ids, pg_sys::DropBehavior::DROP_RESTRICT, restart_identity);
        for r in opened {
            pg_sys::table_close(r, pg_sys::NoLock as i32);
        }
    }
}
