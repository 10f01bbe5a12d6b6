//! Applying row changes to a local table through the executor, as
//! PostgreSQL's own apply worker does (`worker.c`): constraints, every index,
//! generated columns and ENABLE REPLICA/ALWAYS triggers behave natively.
//! Values arrive as text and go through each column's input function;
//! subscriber-only columns get their defaults.
//!
//! A [`Target`] is one change's executor state on one relation; the worker
//! finds rows with it (by replica identity, or by unique index for conflict
//! detection), asks who last wrote them, and inserts, updates or deletes.
//!
//! Least privilege, as PostgreSQL 16 does: while a `Target` lives the
//! backend runs as the table's owner (restricted, with a safe search_path,
//! when that owner is less trusted than the subscription owner), so the
//! table's triggers, defaults, index expressions and input functions never
//! run with more privileges than the role that defined them. The
//! subscription option `run_as_owner` opts out (changes are then applied as
//! the subscription owner, as PostgreSQL 15 does).

use super::protocol::Column;
use super::relation::LocalRel;
use crate::ffi;
use crate::ffi::identity::AsRole;
use pgrx::pg_sys;
use std::cell::Cell;

thread_local! {
    /// `run_as_owner` of the subscription this process applies.
    static AS_SUBSCRIPTION_OWNER: Cell<bool> = const { Cell::new(false) };
}

/// Apply as the subscription owner (`true`: the `run_as_owner` option) or as
/// each table's owner (`false`, the default). Set at the start of a session.
pub(crate) fn set_run_as_owner(on: bool) {
    AS_SUBSCRIPTION_OWNER.with(|c| c.set(on));
}

/// The identity a change to a table owned by `owner` is applied with.
fn as_table_owner(owner: pg_sys::Oid) -> Option<AsRole> {
    (!AS_SUBSCRIPTION_OWNER.with(|c| c.get())).then(|| AsRole::become_role(owner))
}
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// A located local row (locked until the end of the transaction).
pub(crate) struct LocalRow(*mut pg_sys::TupleTableSlot);

/// Who committed a local row: (replication origin, commit timestamp).
pub(crate) struct RowWriter {
    pub(crate) origin: u16,
    pub(crate) commit_ts: i64,
}

impl RowWriter {
    /// How the conflict log names the writer's origin.
    pub(crate) fn origin_label(&self) -> String {
        if self.origin == 0 { "local".to_string() } else { self.origin.to_string() }
    }
}

impl LocalRow {
    /// The origin and commit timestamp of the row's inserting/updating
    /// transaction, when `track_commit_timestamp` recorded them.
    pub(crate) fn writer(&self) -> Option<RowWriter> {
        // SAFETY: the slot holds a heap tuple; commit-timestamp lookup is
        // only attempted when the module is on (it raises an ERROR otherwise).
        unsafe {
            if !pg_sys::track_commit_timestamp {
                return None;
            }
            let mut should_free = false;
            let tup = pg_sys::ExecFetchSlotHeapTuple(self.0, false, &mut should_free);
            let header = &*(*tup).t_data;
            if u32::from(header.t_infomask) & pg_sys::HEAP_XMIN_FROZEN == pg_sys::HEAP_XMIN_FROZEN {
                return None;
            }
            let xmin = header.t_choice.t_heap.t_xmin;
            let (mut ts, mut origin) = (0i64, 0u16);
            pg_sys::TransactionIdGetCommitTsData(xmin, &mut ts, &mut origin)
                .then_some(RowWriter { origin, commit_ts: ts })
        }
    }

    /// The row as a JSON object of column name → text (for the conflict log).
    pub(crate) fn to_json(&self, rel: &LocalRel) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        // SAFETY: the slot holds a row of `rel`; output functions of the
        // columns' types render non-null values.
        unsafe {
            pg_sys::slot_getallattrs(self.0);
            let desc = (*self.0).tts_tupleDescriptor;
            for (i, name) in rel.names.iter().enumerate() {
                if rel.inputs[i].is_none() {
                    continue;
                }
                let v = if *(*self.0).tts_isnull.add(i) {
                    serde_json::Value::Null
                } else {
                    let att = &*(*desc).attrs.as_ptr().add(i);
                    let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
                    pg_sys::getTypeOutputInfo(att.atttypid, &mut func, &mut varlena);
                    let text = pg_sys::OidOutputFunctionCall(func, *(*self.0).tts_values.add(i));
                    serde_json::Value::String(ffi::cstr_to_string(text))
                };
                m.insert(name.clone(), v);
            }
        }
        serde_json::Value::Object(m)
    }

    fn same_row(&self, other: &LocalRow) -> bool {
        // SAFETY: both slots hold located tuples with valid TIDs.
        unsafe { pg_sys::ItemPointerEquals(&mut (*self.0).tts_tid, &mut (*other.0).tts_tid) }
    }
}

/// Executor state for one change on one relation.
pub(crate) struct Target<'r> {
    pub(crate) rel: &'r LocalRel,
    relation: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    /// Dropped last: the executor is torn down (AFTER triggers fire) while
    /// still running as the table owner.
    _as_owner: Option<AsRole>,
}

impl<'r> Target<'r> {
    /// Open `rel` for a change (inside a transaction with an active snapshot).
    pub(crate) fn open(rel: &'r LocalRel) -> Target<'r> {
        // SAFETY: the standard executor set-up of worker.c's
        // create_edata_for_relation, all in the current memory context.
        unsafe {
            let relation = pg_sys::table_open(rel.relid, pg_sys::RowExclusiveLock as i32);
            if (*(*relation).rd_rel).relkind as u8 != pg_sys::RELKIND_RELATION {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("logical_ext: cannot apply changes to \"{}\": only plain tables are supported as targets", rel.display),
                    function_name!(),
                )
                .set_hint("Publish the partitions (publish_via_partition_root = false) and create them as plain tables on the subscriber.")
                .report(PgLogLevel::ERROR);
            }
            let as_owner = as_table_owner((*(*relation).rd_rel).relowner);
            let estate = pg_sys::CreateExecutorState();
            let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>()) as *mut pg_sys::RangeTblEntry;
            (*rte).type_ = pg_sys::NodeTag::T_RangeTblEntry;
            (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
            (*rte).relid = rel.relid;
            (*rte).relkind = (*(*relation).rd_rel).relkind;
            (*rte).rellockmode = pg_sys::AccessShareLock as i32;
            pg_sys::ExecInitRangeTable(estate, pg_sys::lappend(std::ptr::null_mut(), rte.cast()));
            let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
            (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
            pg_sys::InitResultRelInfo(rri, relation, 1, std::ptr::null_mut(), 0);
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::AfterTriggerBeginQuery();
            pg_sys::ExecOpenIndices(rri, false);
            Target { rel, relation, estate, rri, _as_owner: as_owner }
        }
    }

    /// A virtual slot of the relation's row type, all NULL.
    fn virtual_slot(&self) -> *mut pg_sys::TupleTableSlot {
        // SAFETY: estate and descriptor are valid; freed with the estate.
        unsafe {
            let desc = (*self.relation).rd_att;
            let slot = pg_sys::ExecInitExtraTupleSlot(self.estate, desc, &pg_sys::TTSOpsVirtual);
            pg_sys::ExecClearTuple(slot);
            std::slice::from_raw_parts_mut((*slot).tts_isnull, (*desc).natts as usize).fill(true);
            slot
        }
    }

    /// The new row of an INSERT: the sent columns, defaults for the others.
    pub(crate) fn new_row(&self, cols: &[Column<'_>], scratch: &mut Vec<u8>) -> *mut pg_sys::TupleTableSlot {
        let slot = self.virtual_slot();
        let present = store(self.rel, slot, cols, scratch);
        self.fill_defaults(slot, &present);
        // SAFETY: a complete virtual tuple of the relation.
        unsafe { pg_sys::ExecStoreVirtualTuple(slot) };
        slot
    }

    /// The updated row: `local` with the sent columns replaced (columns not
    /// sent, such as unchanged TOAST, keep their local value).
    pub(crate) fn merged_row(
        &self,
        local: &LocalRow,
        cols: &[Column<'_>],
        scratch: &mut Vec<u8>,
    ) -> *mut pg_sys::TupleTableSlot {
        let slot = self.virtual_slot();
        let n = self.rel.natts;
        // SAFETY: copies the located row's datums (valid while it stays in
        // its slot) into the new slot.
        unsafe {
            pg_sys::slot_getallattrs(local.0);
            std::ptr::copy_nonoverlapping((*local.0).tts_values, (*slot).tts_values, n);
            std::ptr::copy_nonoverlapping((*local.0).tts_isnull, (*slot).tts_isnull, n);
        }
        store(self.rel, slot, cols, scratch);
        // SAFETY: a complete virtual tuple.
        unsafe { pg_sys::ExecStoreVirtualTuple(slot) };
        slot
    }

    fn fill_defaults(&self, slot: *mut pg_sys::TupleTableSlot, present: &[bool]) {
        for (i, (&sent, input)) in present.iter().zip(&self.rel.inputs).enumerate() {
            if sent || input.is_none() {
                continue;
            }
            // SAFETY: attribute numbers are in range; the default is evaluated
            // in the executor's per-tuple context.
            unsafe {
                let def = pg_sys::build_column_default(self.relation, i as i32 + 1);
                if def.is_null() {
                    continue;
                }
                let state = pg_sys::ExecInitExpr(pg_sys::expression_planner(def.cast()), std::ptr::null_mut());
                let econtext = pg_sys::MakePerTupleExprContext(self.estate);
                let mut isnull = false;
                *(*slot).tts_values.add(i) = pg_sys::ExecEvalExpr(state, econtext, &mut isnull);
                *(*slot).tts_isnull.add(i) = isnull;
            }
        }
    }

    /// Find the row identified by `key` (the replica identity values).
    pub(crate) fn find(&self, key: &[Column<'_>], scratch: &mut Vec<u8>) -> Option<LocalRow> {
        let search = self.virtual_slot();
        let present = store(self.rel, search, key, scratch);
        let missing = match &self.rel.key {
            Some((_, cols)) => cols.iter().any(|&c| !present[c]),
            None => (0..self.rel.natts).any(|i| self.rel.inputs[i].is_some() && !present[i]),
        };
        if missing {
            let hint = if self.rel.key.is_some() {
                "Give the subscriber table the same primary key or replica identity index as the publisher, \
                 or use REPLICA IDENTITY FULL on the publisher."
            } else {
                "Without a primary key or replica identity index on the subscriber, rows are matched on every \
                 column, so the publisher must send them all (REPLICA IDENTITY FULL) and the subscriber table \
                 must not have extra columns; add a primary key on the subscriber instead."
            };
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "logical_ext: the publisher's replica identity does not cover how table \"{}\" identifies rows on the subscriber",
                    self.rel.display
                ),
                function_name!(),
            )
            .set_hint(hint)
            .report(PgLogLevel::ERROR);
        }
        // SAFETY: a virtual slot whose values were just set.
        unsafe { pg_sys::ExecStoreVirtualTuple(search) };
        match &self.rel.key {
            Some((idx, _)) => self.find_by_index(*idx, search),
            None => {
                // SAFETY: valid relation and slots; the found row is locked.
                unsafe {
                    let local = pg_sys::table_slot_create(self.relation, &mut (*self.estate).es_tupleTable);
                    pg_sys::RelationFindReplTupleSeq(
                        self.relation,
                        pg_sys::LockTupleMode::LockTupleExclusive,
                        search,
                        local,
                    )
                    .then_some(LocalRow(local))
                }
            }
        }
    }

    fn find_by_index(&self, idx: pg_sys::Oid, search: *mut pg_sys::TupleTableSlot) -> Option<LocalRow> {
        // SAFETY: valid relation, index and slots; the found row is locked.
        unsafe {
            let local = pg_sys::table_slot_create(self.relation, &mut (*self.estate).es_tupleTable);
            pg_sys::RelationFindReplTupleByIndex(
                self.relation,
                idx,
                pg_sys::LockTupleMode::LockTupleExclusive,
                search,
                local,
            )
            .then_some(LocalRow(local))
        }
    }

    /// A local row (other than `except`) that `row` would collide with on a
    /// unique index, if any.
    pub(crate) fn find_unique(&self, row: *mut pg_sys::TupleTableSlot, except: Option<&LocalRow>) -> Option<LocalRow> {
        for (idx, keys) in &self.rel.uniques {
            // SAFETY: the slot has natts entries; NULL keys never collide.
            if keys.iter().any(|&k| unsafe { *(*row).tts_isnull.add(k) }) {
                continue;
            }
            if let Some(found) = self.find_by_index(*idx, row) {
                if except.is_some_and(|e| e.same_row(&found)) {
                    continue;
                }
                return Some(found);
            }
        }
        None
    }

    pub(crate) fn insert(&self, row: *mut pg_sys::TupleTableSlot) {
        // SAFETY: a complete row of the relation.
        unsafe { pg_sys::ExecSimpleRelationInsert(self.rri, self.estate, row) }
    }

    pub(crate) fn update(&self, local: &LocalRow, row: *mut pg_sys::TupleTableSlot) {
        // SAFETY: standard EPQ set-up around ExecSimpleRelationUpdate.
        unsafe {
            let mut epq = pg_sys::EPQState::default();
            pg_sys::EvalPlanQualInit(&mut epq, self.estate, std::ptr::null_mut(), std::ptr::null_mut(), -1);
            epq.origslot = row;
            pg_sys::ExecSimpleRelationUpdate(self.rri, self.estate, &mut epq, local.0, row);
            pg_sys::EvalPlanQualEnd(&mut epq);
        }
    }

    pub(crate) fn delete(&self, local: &LocalRow) {
        // SAFETY: standard EPQ set-up around ExecSimpleRelationDelete.
        unsafe {
            let mut epq = pg_sys::EPQState::default();
            pg_sys::EvalPlanQualInit(&mut epq, self.estate, std::ptr::null_mut(), std::ptr::null_mut(), -1);
            epq.origslot = local.0;
            pg_sys::ExecSimpleRelationDelete(self.rri, self.estate, &mut epq, local.0);
            pg_sys::EvalPlanQualEnd(&mut epq);
        }
    }
}

impl Drop for Target<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // An ERROR is unwinding: the transaction abort releases all of it.
            return;
        }
        // SAFETY: tears down what `open` set up, once.
        unsafe {
            pg_sys::ExecCloseIndices(self.rri);
            pg_sys::AfterTriggerEndQuery(self.estate);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.relation, pg_sys::NoLock as i32);
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
    for (pos, c) in cols.iter().enumerate() {
        let i = rel.attr_at(pos, &c.name);
        let input = rel.inputs[i].as_ref().expect("mapped columns have an input function");
        match c.text() {
            Ok(Some(text)) => {
                values[i] = super::values::input(input, &text, scratch, &c.name, &rel.display);
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
        // TRUNCATE triggers run as the owner; one statement cannot run as
        // two owners, so tables of different owners need run_as_owner.
        let owners: Vec<pg_sys::Oid> = opened.iter().map(|&r| (*(*r).rd_rel).relowner).collect();
        if owners.windows(2).any(|w| w[0] != w[1]) && !AS_SUBSCRIPTION_OWNER.with(|c| c.get()) {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "logical_ext: cannot apply a TRUNCATE of tables with different owners as their owner".to_string(),
                function_name!(),
            )
            .set_hint("Give the tables one owner on the subscriber, or set the subscription option run_as_owner.")
            .report(PgLogLevel::ERROR);
        }
        let _as_owner = owners.first().and_then(|&o| as_table_owner(o));
        pg_sys::ExecuteTruncateGuts(rels, ids, ids, pg_sys::DropBehavior::DROP_RESTRICT, restart_identity);
        for r in opened {
            pg_sys::table_close(r, pg_sys::NoLock as i32);
        }
    }
}
