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
//!
//! A partitioned target routes each row to its leaf (`routing.rs`): the
//! `Target` of the partitioned table keeps its rows in the root's layout
//! (what the worker builds from the remote columns) and opens a nested
//! `Target` per leaf it routes to; located rows remember their leaf.
//!
//! A leaf of another owner than the root's is applied to as the owner
//! `routing::leaf_identity` picks (docs/TARGETS.md). When that is the
//! leaf's owner, each operation on the leaf becomes it (restricted when it
//! could not become the root's owner) for just that operation, in an
//! AFTER-trigger query level of its own that is ended before switching back,
//! so the leaf's BEFORE and AFTER ROW triggers, check constraints and index
//! expressions never run as the root's owner. (A guard held for the leaf
//! target's lifetime would not do: the addressed target keeps routing after
//! a leaf is opened, and the AFTER events of a shared query level would fire
//! only after every leaf's guard is gone.) Otherwise the leaf's operations
//! run as the root's owner and its AFTER ROW events fire at the addressed
//! target's level.
//!
//! Per-transaction executor state ([`TargetCache`]): setting a target up
//! (opening the table and every index, an executor state, a query level)
//! cost as much as a row's own insert on a bulk catch-up. For a plain table
//! without triggers (`LocalRel::cacheable`) the target is opened once per
//! remote transaction, in the transaction's memory, and each change only
//! brackets its work (`begin_change`/`end_change`: command id, query level,
//! role switch, then its slots cleared and per-tuple memory reset). Without
//! triggers no user code can run between the changes that would observe the
//! difference, and the locks are the ones a per-change target takes and
//! keeps until commit anyway. The cache is closed before the commit, before
//! a DDL replay or a TRUNCATE (they refuse tables in use), and abandoned —
//! no PostgreSQL call — when an error ends the transaction, whose abort
//! releases all of it.
//!
//! A cached target may also buffer INSERTs (`batch.rs`): `rows::insert`
//! hands a row to [`Target::buffer`] when [`Target::batchable`] allows it,
//! and the worker writes the buffer ([`TargetCache::flush_batch`]) before
//! anything that could observe it; `close_all` writes what is left.

use super::batch::Batch;
use super::protocol::Column;
use super::relation::LocalRel;
use super::routing::{self, Router};
use crate::ffi;
use crate::ffi::ContextSwitch;
use crate::ffi::identity::AsRole;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

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
pub(super) fn as_table_owner(owner: pg_sys::Oid) -> Option<AsRole> {
    (!AS_SUBSCRIPTION_OWNER.with(|c| c.get())).then(|| AsRole::become_role(owner))
}
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// A located local row (locked until the end of the transaction).
pub(crate) struct LocalRow {
    /// The row as stored (in its leaf, for a partitioned target).
    slot: *mut pg_sys::TupleTableSlot,
    /// The row in the layout of the target that found it (the root's, for
    /// a partitioned target; else `slot`).
    view: *mut pg_sys::TupleTableSlot,
    /// The leaf it lives in (index into the target's open leaves).
    leaf: Option<usize>,
}

impl LocalRow {
    fn plain(slot: *mut pg_sys::TupleTableSlot) -> LocalRow {
        LocalRow { slot, view: slot, leaf: None }
    }
}

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
            let tup = pg_sys::ExecFetchSlotHeapTuple(self.slot, false, &mut should_free);
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
            pg_sys::slot_getallattrs(self.view);
            let desc = (*self.view).tts_tupleDescriptor;
            for (i, name) in rel.names.iter().enumerate() {
                if rel.inputs[i].is_none() {
                    continue;
                }
                let v = if *(*self.view).tts_isnull.add(i) {
                    serde_json::Value::Null
                } else {
                    let att = &*(*desc).attrs.as_ptr().add(i);
                    let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
                    pg_sys::getTypeOutputInfo(att.atttypid, &mut func, &mut varlena);
                    let text = pg_sys::OidOutputFunctionCall(func, *(*self.view).tts_values.add(i));
                    serde_json::Value::String(ffi::cstr_to_string(text))
                };
                m.insert(name.clone(), v);
            }
        }
        serde_json::Value::Object(m)
    }

    fn same_row(&self, other: &LocalRow) -> bool {
        // SAFETY: both slots hold located tuples with valid TIDs (TIDs of
        // different leaves are different rows).
        self.leaf == other.leaf
            && unsafe { pg_sys::ItemPointerEquals(&mut (*self.slot).tts_tid, &mut (*other.slot).tts_tid) }
    }
}

/// The relation entry a target applies to: the addressed one (borrowed from
/// the relation map) or one shared with the map (a leaf partition's, or a
/// cached target's).
pub(crate) enum RelRef<'r> {
    Addressed(&'r LocalRel),
    Shared(Rc<LocalRel>),
}

impl std::ops::Deref for RelRef<'_> {
    type Target = LocalRel;
    fn deref(&self) -> &LocalRel {
        match self {
            RelRef::Addressed(r) => r,
            RelRef::Shared(r) => r,
        }
    }
}

/// A leaf partition a partitioned target routed rows to.
struct Leaf<'r> {
    target: Target<'r>,
    /// Leaf attribute ← root attribute, and root ← leaf (by name).
    from_root: Vec<Option<usize>>,
    to_root: Vec<Option<usize>>,
}

/// Routing state of a partitioned target.
struct Parts<'r> {
    router: Option<Router>,
    leaves: RefCell<Vec<Leaf<'r>>>,
}

/// Executor state for one change on one relation.
pub(crate) struct Target<'r> {
    pub(crate) rel: RelRef<'r>,
    relation: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    /// A leaf opened by a partitioned target: AFTER triggers belong to the
    /// partitioned target's query level.
    nested: bool,
    /// Set for a partitioned table.
    parts: Option<Parts<'r>>,
    /// A leaf's owner, become for each operation on it ([`LeafOp`]).
    leaf_owner: Option<pg_sys::Oid>,
    /// Slots reused by the changes of a cached target (`None`: per-change).
    pool: Option<RefCell<SlotPool>>,
    /// Prepared default expressions by attribute (filled on first use).
    defaults: RefCell<Vec<Option<Option<*mut pg_sys::ExprState>>>>,
    /// Buffered INSERTs of a cached target (`batch.rs`).
    batch: RefCell<Batch>,
    /// Whether INSERTs may be buffered (`batchable`, decided on first use).
    batchable: Cell<Option<bool>>,
    /// Consecutive INSERTs into this target so far, with no other change
    /// in between (`TargetCache::end_runs`).
    run: Cell<u32>,
    /// Set when an error ended the transaction: its abort released the
    /// PostgreSQL side; dropping must not touch it.
    abandoned: Cell<bool>,
    /// Dropped last: the executor is torn down (AFTER triggers fire) while
    /// still running as the table owner. `None` for a leaf.
    _as_owner: Option<AsRole>,
}

/// The slots of a cached target, handed out in order during one change and
/// cleared at its end (a per-change target allocates fresh ones instead).
#[derive(Default)]
struct SlotPool {
    virtual_slots: Vec<*mut pg_sys::TupleTableSlot>,
    table_slots: Vec<*mut pg_sys::TupleTableSlot>,
    virtual_used: usize,
    table_used: usize,
}

/// One operation on a leaf partition: while alive, the backend runs as the
/// leaf's owner in an AFTER-trigger query level of its own; dropping it
/// fires the leaf's AFTER ROW triggers (still as that owner), then switches
/// back to the addressed target's identity.
struct LeafOp {
    /// Set for a write (its AFTER-trigger level); lookups fire nothing.
    estate: Option<*mut pg_sys::EState>,
    as_owner: Option<AsRole>,
}

impl LeafOp {
    fn begin(estate: Option<*mut pg_sys::EState>, owner: pg_sys::Oid) -> LeafOp {
        let as_owner = as_table_owner(owner);
        if estate.is_some() {
            // SAFETY: paired with AfterTriggerEndQuery in Drop (an ERROR's
            // abort unwinds the trigger stack instead).
            unsafe { pg_sys::AfterTriggerBeginQuery() };
        }
        LeafOp { estate, as_owner }
    }
}

impl Drop for LeafOp {
    fn drop(&mut self) {
        if let Some(estate) = self.estate
            && !std::thread::panicking()
        {
            // SAFETY: ends the level `begin` opened, with the leaf's executor
            // state (where the events find the leaf), as the leaf's owner.
            unsafe { pg_sys::AfterTriggerEndQuery(estate) };
        }
        drop(self.as_owner.take());
    }
}

impl<'r> Target<'r> {
    /// Open `rel` for a change (inside a transaction with an active snapshot).
    pub(crate) fn open(rel: &'r LocalRel) -> Target<'r> {
        Target::open_ref(RelRef::Addressed(rel), false, false)
    }

    /// `cached`: kept for the remote transaction (see the module notes):
    /// no role switch and no query level here, `begin_change` does them.
    fn open_ref(rel: RelRef<'r>, nested: bool, cached: bool) -> Target<'r> {
        // SAFETY: the standard executor set-up of worker.c's
        // create_edata_for_relation, in the executor state's memory (a child
        // of the current memory context).
        unsafe {
            let relation = pg_sys::table_open(rel.relid, pg_sys::RowExclusiveLock as i32);
            let kind = (*(*relation).rd_rel).relkind as u8;
            if kind != pg_sys::RELKIND_RELATION && kind != pg_sys::RELKIND_PARTITIONED_TABLE {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!(
                        "logical_ext: cannot apply changes to \"{}\": only tables and partitioned tables are supported as targets",
                        rel.display
                    ),
                    function_name!(),
                )
                .set_hint("Foreign tables, views and other relations (also as partitions) cannot receive replicated rows; use a table.")
                .report(PgLogLevel::ERROR);
            }
            // The addressed target switches for its whole life (a cached one
            // per change, in `begin_change`); a leaf of another owner per
            // operation (LeafOp), when routing.rs's rule says so (or refuses).
            let owner = (*(*relation).rd_rel).relowner;
            let (as_owner, leaf_owner) = if cached {
                (None, None)
            } else if !nested {
                (as_table_owner(owner), None)
            } else if AS_SUBSCRIPTION_OWNER.with(|c| c.get()) {
                (None, None)
            } else {
                (None, routing::leaf_identity(owner, pg_sys::GetUserId(), &rel.display))
            };
            let estate = pg_sys::CreateExecutorState();
            // Everything of this target lives in its executor state's memory.
            let _cx = ContextSwitch::to((*estate).es_query_cxt);
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
            // As worker.c does: where ExecGetTriggerResultRel finds it when
            // AFTER ROW events fire (else it opens the relation again, and
            // that reference is never closed: "relcache reference leak").
            (*estate).es_opened_result_relations = pg_sys::lappend((*estate).es_opened_result_relations, rri.cast());
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            if !nested && !cached {
                pg_sys::AfterTriggerBeginQuery();
            }
            let parts = if kind == pg_sys::RELKIND_PARTITIONED_TABLE {
                Some(Parts { router: Some(Router::open(estate, rri, relation)), leaves: RefCell::new(Vec::new()) })
            } else {
                pg_sys::ExecOpenIndices(rri, false);
                None
            };
            let pool = cached.then(|| RefCell::new(SlotPool::default()));
            Target {
                rel,
                relation,
                estate,
                rri,
                nested,
                parts,
                leaf_owner,
                pool,
                defaults: RefCell::new(Vec::new()),
                batch: RefCell::new(Batch::default()),
                batchable: Cell::new(None),
                run: Cell::new(0),
                abandoned: Cell::new(false),
                _as_owner: as_owner,
            }
        }
    }

    /// Open a cached target on `rel` (a `cacheable` entry) for the rest of
    /// the current transaction; its memory is the transaction's.
    fn open_cached(rel: Rc<LocalRel>) -> Target<'static> {
        // SAFETY: inside a transaction: TopTransactionContext is valid.
        let _cx = ContextSwitch::to(unsafe { pg_sys::TopTransactionContext });
        Target::open_ref(RelRef::Shared(rel), false, true)
    }

    /// A cached target starts a change: the current command id, an
    /// AFTER-trigger query level (as a per-change target has), and the
    /// table owner's identity for as long as the returned guard lives.
    pub(crate) fn begin_change(&self) -> Option<AsRole> {
        // SAFETY: inside the transaction the target was opened in.
        unsafe {
            (*self.estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::AfterTriggerBeginQuery();
            as_table_owner((*(*self.relation).rd_rel).relowner)
        }
    }

    /// A cached target starts buffering an INSERT (`batch.rs`): only the
    /// table owner's identity, for the row's input functions, defaults and
    /// generated columns. No command id and no query level: the row is not
    /// written until its batch is, in a change of its own (see
    /// `Worker::change`). Ended with `end_change(false)`.
    pub(crate) fn begin_buffering(&self) -> Option<AsRole> {
        // SAFETY: the relation is open in the transaction the target was opened in.
        as_table_owner(unsafe { (*(*self.relation).rd_rel).relowner })
    }

    /// A cached target ends a change (before the role guard is dropped):
    /// its query level ends (`query_level`: begun by `begin_change`, not by
    /// `begin_buffering`), its slots are cleared (buffer pins released) and
    /// its per-tuple memory reset, as freeing a per-change target does.
    pub(crate) fn end_change(&self, query_level: bool) {
        let Some(pool) = &self.pool else { return };
        let mut pool = pool.borrow_mut();
        // SAFETY: the slots belong to this target's executor state.
        unsafe {
            if query_level {
                pg_sys::AfterTriggerEndQuery(self.estate);
            }
            let econtext = (*self.estate).es_per_tuple_exprcontext;
            let per_tuple = if econtext.is_null() { std::ptr::null_mut() } else { (*econtext).ecxt_per_tuple_memory };
            // One guarded call for all of it (`ffi/unguarded.rs`).
            ffi::unguarded::clear_slots_and_reset(&pool.virtual_slots[..pool.virtual_used], std::ptr::null_mut());
            ffi::unguarded::clear_slots_and_reset(&pool.table_slots[..pool.table_used], per_tuple);
        }
        pool.virtual_used = 0;
        pool.table_used = 0;
    }

    /// A slot for a row of the relation as stored (a located row).
    fn table_slot(&self) -> *mut pg_sys::TupleTableSlot {
        let make = || {
            // SAFETY: allocated in the executor state's memory and list.
            unsafe {
                let _cx = ContextSwitch::to((*self.estate).es_query_cxt);
                pg_sys::table_slot_create(self.relation, &mut (*self.estate).es_tupleTable)
            }
        };
        let Some(pool) = &self.pool else { return make() };
        let mut pool = pool.borrow_mut();
        let i = pool.table_used;
        if i == pool.table_slots.len() {
            let slot = make();
            pool.table_slots.push(slot);
        }
        pool.table_used += 1;
        pool.table_slots[i]
    }

    /// For a leaf: become its owner for one operation (see [`LeafOp`]);
    /// `writes`: the operation may queue AFTER ROW events.
    fn leaf_op(&self, writes: bool) -> Option<LeafOp> {
        self.leaf_owner.map(|owner| LeafOp::begin(writes.then_some(self.estate), owner))
    }

    /// Partitioned target: the index of the open leaf `row` (root layout,
    /// complete) belongs to, opening it on first use.
    fn route(&self, parts: &Parts<'r>, row: *mut pg_sys::TupleTableSlot) -> usize {
        let relid = parts.router.as_ref().expect("open until drop").leaf_for(row);
        if let Some(i) = parts.leaves.borrow().iter().position(|l| l.target.rel.relid == relid) {
            return i;
        }
        let entry = self.rel.leaf(relid);
        let from_root = routing::name_map(&entry.names, &self.rel.names);
        let to_root = routing::name_map(&self.rel.names, &entry.names);
        let target = Target::open_ref(RelRef::Shared(entry), true, false);
        let mut leaves = parts.leaves.borrow_mut();
        leaves.push(Leaf { target, from_root, to_root });
        leaves.len() - 1
    }

    /// `src` (a row of another layout) copied into a new virtual slot of
    /// this target's layout through `map` (this attribute ← src attribute).
    fn convert(&self, src: *mut pg_sys::TupleTableSlot, map: &[Option<usize>]) -> *mut pg_sys::TupleTableSlot {
        let slot = self.virtual_slot();
        // SAFETY: datums are copied by value/reference; both slots live in
        // executor states that outlive this change's use of them.
        unsafe {
            pg_sys::slot_getallattrs(src);
            for (i, from) in map.iter().enumerate() {
                if let Some(j) = *from {
                    *(*slot).tts_values.add(i) = *(*src).tts_values.add(j);
                    *(*slot).tts_isnull.add(i) = *(*src).tts_isnull.add(j);
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
        slot
    }

    /// Route `row` (root layout) to its leaf: (leaf index, the row in the
    /// leaf's layout).
    fn to_leaf(&self, parts: &Parts<'r>, row: *mut pg_sys::TupleTableSlot) -> (usize, *mut pg_sys::TupleTableSlot) {
        let i = self.route(parts, row);
        let leaves = parts.leaves.borrow();
        let converted = leaves[i].target.convert(row, &leaves[i].from_root);
        (i, converted)
    }

    /// A row found in leaf `i`, with its view in the root's layout.
    fn found_in(&self, parts: &Parts<'r>, i: usize, found: Option<LocalRow>) -> Option<LocalRow> {
        let found = found?;
        let view = self.convert(found.slot, &parts.leaves.borrow()[i].to_root);
        Some(LocalRow { slot: found.slot, view, leaf: Some(i) })
    }

    /// A virtual slot of the relation's row type, all NULL.
    fn virtual_slot(&self) -> *mut pg_sys::TupleTableSlot {
        // SAFETY: estate and descriptor are valid; freed with the estate.
        unsafe {
            let desc = (*self.relation).rd_att;
            let make = || {
                let _cx = ContextSwitch::to((*self.estate).es_query_cxt);
                pg_sys::ExecInitExtraTupleSlot(self.estate, desc, &pg_sys::TTSOpsVirtual)
            };
            let slot = match &self.pool {
                None => make(),
                Some(pool) => {
                    let mut pool = pool.borrow_mut();
                    let i = pool.virtual_used;
                    if i == pool.virtual_slots.len() {
                        let slot = make();
                        pool.virtual_slots.push(slot);
                    }
                    pool.virtual_used += 1;
                    pool.virtual_slots[i]
                }
            };
            pg_sys::ExecClearTuple(slot);
            std::slice::from_raw_parts_mut((*slot).tts_isnull, (*desc).natts as usize).fill(true);
            slot
        }
    }

    /// The new row of an INSERT: the sent columns, defaults for the others.
    pub(crate) fn new_row(&self, cols: &[Column<'_>], scratch: &mut Vec<u8>) -> *mut pg_sys::TupleTableSlot {
        let slot = self.virtual_slot();
        let present = store(&self.rel, slot, cols, scratch);
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
            pg_sys::slot_getallattrs(local.view);
            std::ptr::copy_nonoverlapping((*local.view).tts_values, (*slot).tts_values, n);
            std::ptr::copy_nonoverlapping((*local.view).tts_isnull, (*slot).tts_isnull, n);
        }
        store(&self.rel, slot, cols, scratch);
        // SAFETY: a complete virtual tuple.
        unsafe { pg_sys::ExecStoreVirtualTuple(slot) };
        slot
    }

    fn fill_defaults(&self, slot: *mut pg_sys::TupleTableSlot, present: &[bool]) {
        for (i, (&sent, input)) in present.iter().zip(&self.rel.inputs).enumerate() {
            if sent || input.is_none() {
                continue;
            }
            let Some(state) = self.default_expr(i) else { continue };
            // SAFETY: attribute numbers are in range; the default is evaluated
            // with the executor's per-tuple context.
            unsafe {
                let econtext = pg_sys::MakePerTupleExprContext(self.estate);
                let mut isnull = false;
                *(*slot).tts_values.add(i) = pg_sys::ExecEvalExpr(state, econtext, &mut isnull);
                *(*slot).tts_isnull.add(i) = isnull;
            }
        }
    }

    /// The prepared default expression of attribute `i` (`None`: it has
    /// none), planned once per target — once per remote transaction for a
    /// cached one — as COPY prepares its defaults once per statement.
    fn default_expr(&self, i: usize) -> Option<*mut pg_sys::ExprState> {
        let mut defaults = self.defaults.borrow_mut();
        if defaults.is_empty() {
            defaults.resize(self.rel.natts, None);
        }
        *defaults[i].get_or_insert_with(|| {
            // SAFETY: attribute numbers are in range; planned into the
            // executor state's memory, which outlives every use.
            unsafe {
                let _cx = ContextSwitch::to((*self.estate).es_query_cxt);
                let def = pg_sys::build_column_default(self.relation, i as i32 + 1);
                (!def.is_null())
                    .then(|| pg_sys::ExecInitExpr(pg_sys::expression_planner(def.cast()), std::ptr::null_mut()))
            }
        })
    }

    /// Find the row identified by `key` (the replica identity values).
    pub(crate) fn find(&self, key: &[Column<'_>], scratch: &mut Vec<u8>) -> Option<LocalRow> {
        let search = self.virtual_slot();
        let present = store(&self.rel, search, key, scratch);
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
        if let Some(parts) = &self.parts {
            // The key includes the partition key (unique indexes of a
            // partitioned table must): it routes to the row's leaf.
            let i = self.route(parts, search);
            let found = parts.leaves.borrow()[i].target.find(key, scratch);
            return self.found_in(parts, i, found);
        }
        let _op = self.leaf_op(false);
        match &self.rel.key {
            Some((idx, _)) => self.find_by_index(*idx, search),
            None => {
                let local = self.table_slot();
                // SAFETY: valid relation and slots; the found row is locked.
                unsafe {
                    pg_sys::RelationFindReplTupleSeq(
                        self.relation,
                        pg_sys::LockTupleMode::LockTupleExclusive,
                        search,
                        local,
                    )
                    .then_some(LocalRow::plain(local))
                }
            }
        }
    }

    fn find_by_index(&self, idx: pg_sys::Oid, search: *mut pg_sys::TupleTableSlot) -> Option<LocalRow> {
        let local = self.table_slot();
        // SAFETY: valid relation, index and slots; the found row is locked.
        unsafe {
            pg_sys::RelationFindReplTupleByIndex(
                self.relation,
                idx,
                pg_sys::LockTupleMode::LockTupleExclusive,
                search,
                local,
            )
            .then_some(LocalRow::plain(local))
        }
    }

    /// A local row (other than `except`) that `row` would collide with on a
    /// unique index, if any.
    pub(crate) fn find_unique(&self, row: *mut pg_sys::TupleTableSlot, except: Option<&LocalRow>) -> Option<LocalRow> {
        if let Some(parts) = &self.parts {
            let (i, leaf_row) = self.to_leaf(parts, row);
            let found = parts.leaves.borrow()[i].target.find_unique(leaf_row, None);
            return self.found_in(parts, i, found).filter(|f| !except.is_some_and(|e| e.same_row(f)));
        }
        let _op = self.leaf_op(false);
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
        if let Some(parts) = &self.parts {
            let (i, leaf_row) = self.to_leaf(parts, row);
            parts.leaves.borrow()[i].target.insert(leaf_row);
            return;
        }
        let _op = self.leaf_op(true);
        // SAFETY: a complete row of the relation.
        unsafe { pg_sys::ExecSimpleRelationInsert(self.rri, self.estate, row) }
    }

    /// Whether INSERTs into this target may be buffered and written
    /// together (`batch.rs`): a cached target (no triggers) of a table that
    /// is not partitioned and has no volatile defaults (which might look for
    /// the rows still buffered), as COPY decides.
    pub(crate) fn batchable(&self) -> bool {
        if let Some(b) = self.batchable.get() {
            return b;
        }
        // SAFETY: the relation is open; defaults are built in the executor
        // state's memory, only to be inspected.
        let b = self.pool.is_some()
            && self.parts.is_none()
            && !self.nested
            && unsafe {
                let desc = (*self.relation).rd_att;
                let constr = (*desc).constr;
                constr.is_null()
                    || ({
                        let _cx = ContextSwitch::to((*self.estate).es_query_cxt);
                        (0..(*desc).natts as usize).all(|i| {
                            let att = &*(*desc).attrs.as_ptr().add(i);
                            if !att.atthasdef || att.attisdropped {
                                return true;
                            }
                            let def = pg_sys::build_column_default(self.relation, i as i32 + 1);
                            def.is_null() || !pg_sys::contain_volatile_functions_not_nextval(def.cast())
                        })
                    })
            };
        self.batchable.set(Some(b));
        b
    }

    /// Count an INSERT into this target; true when it continues a run of
    /// INSERTs, i.e. is worth buffering: the first of a run is applied at
    /// once (a transaction with one INSERT per table, as pgbench's, then
    /// pays nothing for batching).
    pub(crate) fn continues_run(&self) -> bool {
        let n = self.run.get();
        self.run.set(n.saturating_add(1));
        n > 0
    }

    /// Buffer `row` (a complete new row, see `new_row`) for the next
    /// `TargetCache::flush_batch` (a `batchable` target only).
    pub(crate) fn buffer(&self, row: *mut pg_sys::TupleTableSlot) {
        debug_assert!(self.batchable.get() == Some(true));
        // SAFETY: this cached target's relation and executor state, inside
        // its transaction; stored generated columns are computed before the
        // row is copied, as COPY does before buffering it.
        unsafe {
            let constr = (*(*self.relation).rd_att).constr;
            if !constr.is_null() && (*constr).has_generated_stored {
                ffi::compute_stored_generated(self.rri, self.estate, row);
            }
            self.batch.borrow_mut().add(self.relation, self.estate, row)
        }
    }

    /// Whether `row` (this relation's layout) satisfies its partition
    /// constraint (always, for a table that is not a partition).
    fn fits(&self, row: *mut pg_sys::TupleTableSlot) -> bool {
        let _op = self.leaf_op(false);
        // SAFETY: a complete row of the relation; the constraint is
        // prepared in the executor state on first use.
        unsafe {
            !(*(*self.relation).rd_rel).relispartition || pg_sys::ExecPartitionCheck(self.rri, row, self.estate, false)
        }
    }

    pub(crate) fn update(&self, local: &LocalRow, row: *mut pg_sys::TupleTableSlot) {
        if let Some(parts) = &self.parts {
            let i = local.leaf.expect("rows of a partitioned target are found in a leaf");
            {
                let leaves = parts.leaves.borrow();
                let leaf = &leaves[i];
                let leaf_row = leaf.target.convert(row, &leaf.from_root);
                if leaf.target.fits(leaf_row) {
                    leaf.target.update(local, leaf_row);
                    return;
                }
                // The new row belongs to another leaf: move it, as an UPDATE
                // of the partition key does (delete here, insert where it
                // routes; the borrow ends before routing may open a leaf).
                leaf.target.delete(local);
            }
            self.insert(row);
            return;
        }
        let _op = self.leaf_op(true);
        // SAFETY: standard EPQ set-up around ExecSimpleRelationUpdate.
        unsafe {
            let mut epq = pg_sys::EPQState::default();
            pg_sys::EvalPlanQualInit(&mut epq, self.estate, std::ptr::null_mut(), std::ptr::null_mut(), -1);
            epq.origslot = row;
            pg_sys::ExecSimpleRelationUpdate(self.rri, self.estate, &mut epq, local.slot, row);
            pg_sys::EvalPlanQualEnd(&mut epq);
        }
    }

    pub(crate) fn delete(&self, local: &LocalRow) {
        if let Some(parts) = &self.parts {
            let i = local.leaf.expect("rows of a partitioned target are found in a leaf");
            parts.leaves.borrow()[i].target.delete(local);
            return;
        }
        let _op = self.leaf_op(true);
        // SAFETY: standard EPQ set-up around ExecSimpleRelationDelete.
        unsafe {
            let mut epq = pg_sys::EPQState::default();
            pg_sys::EvalPlanQualInit(&mut epq, self.estate, std::ptr::null_mut(), std::ptr::null_mut(), -1);
            epq.origslot = local.slot;
            pg_sys::ExecSimpleRelationDelete(self.rri, self.estate, &mut epq, local.slot);
            pg_sys::EvalPlanQualEnd(&mut epq);
        }
    }
}

impl Drop for Target<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() || self.abandoned.get() {
            // An ERROR is unwinding or ended the transaction: its abort
            // releases all of it.
            return;
        }
        let parts = self.parts.take();
        if let Some(mut parts) = parts {
            // Leaves first, latest first, then the routing state (it lives
            // in this target's executor state).
            let leaves = parts.leaves.get_mut();
            while let Some(leaf) = leaves.pop() {
                drop(leaf);
            }
            // SAFETY: ends this target's level, firing the AFTER ROW events
            // of the leaves applied as this target's owner (those applied as
            // their own owner fired in their own levels, see LeafOp) while
            // routing's result relations are still open.
            unsafe { pg_sys::AfterTriggerEndQuery(self.estate) };
            if let Some(router) = parts.router.take() {
                router.close();
            }
        } else {
            // SAFETY: tears down what `open` set up, once.
            unsafe {
                pg_sys::ExecCloseIndices(self.rri);
                if !self.nested && self.pool.is_none() {
                    pg_sys::AfterTriggerEndQuery(self.estate);
                }
            }
        }
        // SAFETY: tears down what `open` set up, once.
        unsafe {
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.relation, pg_sys::NoLock as i32);
        }
    }
}

/// The cached targets of the remote transaction being applied (see the
/// module notes), at most one per relation.
#[derive(Default)]
pub(crate) struct TargetCache {
    open: Vec<Target<'static>>,
}

impl TargetCache {
    /// The cached target of `rel` (a `cacheable` entry), opened on first
    /// use in this transaction; one opened on an entry the relation map has
    /// since replaced (an invalidation) is closed and opened again.
    pub(crate) fn get(&mut self, rel: &Rc<LocalRel>) -> &Target<'static> {
        let found = self.open.iter().position(|t| t.rel.relid == rel.relid);
        let i = match found {
            Some(i) if matches!(&self.open[i].rel, RelRef::Shared(r) if Rc::ptr_eq(r, rel)) => i,
            stale => {
                if let Some(i) = stale {
                    // The worker wrote its buffered rows (`batch_blocks`).
                    debug_assert!(self.open[i].batch.borrow().is_empty());
                    drop(self.open.remove(i));
                }
                self.open.push(Target::open_cached(rel.clone()));
                self.open.len() - 1
            }
        };
        &self.open[i]
    }

    /// Whether INSERTs are buffered (`batch.rs`).
    pub(crate) fn batch_pending(&self) -> bool {
        self.open.iter().any(|t| !t.batch.borrow().is_empty())
    }

    /// Whether the buffered INSERTs must be written before an INSERT into
    /// `rel` is applied: they belong to another relation (or to an entry
    /// the relation map has since replaced), or the buffer is full.
    pub(crate) fn batch_blocks(&self, rel: &Rc<LocalRel>) -> bool {
        self.open.iter().any(|t| {
            let b = t.batch.borrow();
            !b.is_empty() && (b.full() || !matches!(&t.rel, RelRef::Shared(r) if Rc::ptr_eq(r, rel)))
        })
    }

    /// A change other than an INSERT into `rel` (`None`: any other
    /// document) ends the runs of INSERTs into the other targets.
    pub(crate) fn end_runs(&self, rel: Option<&Rc<LocalRel>>) {
        for t in &self.open {
            if !rel.is_some_and(|r| matches!(&t.rel, RelRef::Shared(own) if Rc::ptr_eq(own, r))) {
                t.run.set(0);
            }
        }
    }

    /// Hand the document of the INSERT just buffered to the batch (`payload`
    /// comes back empty, its buffer to reuse).
    pub(crate) fn keep_payload(&mut self, payload: &mut Vec<u8>) {
        if let Some(t) = self.open.iter().find(|t| !t.batch.borrow().is_empty()) {
            t.batch.borrow_mut().keep_payload(payload);
        }
        payload.clear();
    }

    /// Write the buffered INSERTs (`batch.rs`), as one change of their
    /// target: its command id, query level and owner's identity; `on_row`
    /// gets each row's document before the row's checks and index entries.
    /// The caller brackets it with a snapshot and a command counter
    /// increment, as any change.
    pub(crate) fn flush_batch(&mut self, on_row: impl FnMut(&mut Vec<u8>)) {
        let Some(t) = self.open.iter().find(|t| !t.batch.borrow().is_empty()) else { return };
        let as_owner = t.begin_change();
        // SAFETY: this cached target's state, during the change begun above,
        // with the caller's snapshot.
        unsafe { t.batch.borrow_mut().flush(t.relation, t.rri, t.estate, on_row) };
        t.end_change(true);
        drop(as_owner);
    }

    /// Close every cached target (inside their transaction, latest first).
    /// The worker flushes buffered INSERTs first (naming each row while it
    /// is checked); whatever is still buffered is written here, never lost.
    pub(crate) fn close_all(&mut self) {
        if self.batch_pending() {
            // SAFETY: inside the transaction; a snapshot for the flush.
            unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
            self.flush_batch(|_| {});
            // SAFETY: pairs with the push above.
            unsafe {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommandCounterIncrement();
            }
        }
        while let Some(t) = self.open.pop() {
            drop(t);
        }
    }
}

impl Drop for TargetCache {
    /// Dropped while targets are open only when an error ended their
    /// transaction (normal paths `close_all` first): abandon them.
    fn drop(&mut self) {
        for t in &self.open {
            t.abandoned.set(true);
        }
    }
}

/// Store `cols` into `slot` (by name), returning which attributes were set
/// (`row_input.rs`: one guarded call per row).
fn store(rel: &LocalRel, slot: *mut pg_sys::TupleTableSlot, cols: &[Column<'_>], scratch: &mut Vec<u8>) -> Vec<bool> {
    super::row_input::store(rel, slot, cols, scratch)
}

/// TRUNCATE of the local relations `relids` in one statement, as the
/// publisher did (its CASCADE already listed every relation); a partitioned
/// one with all its partitions.
pub(crate) fn truncate(relids: &[pg_sys::Oid], restart_identity: bool) {
    // SAFETY: relations are opened with AccessExclusiveLock as TRUNCATE needs,
    // truncated by the same code path as the TRUNCATE command, and closed
    // keeping their locks until commit.
    unsafe {
        // A partitioned table's rows are in its partitions (routing.rs).
        let relids = routing::truncate_closure(
            relids,
            |r| pg_sys::get_rel_relkind(r) as u8 == pg_sys::RELKIND_PARTITIONED_TABLE,
            |r| ffi::partition::all_inheritors(r, pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE),
        );
        let mut rels = std::ptr::null_mut();
        let mut ids = std::ptr::null_mut();
        let mut opened = Vec::new();
        for &relid in &relids {
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
