//! Batched INSERTs: consecutive INSERTs into one cached target (a plain
//! table without triggers, `executor::TargetCache`) are buffered and written
//! with one `table_multi_insert` call, as COPY's `CopyMultiInsertBuffer`
//! does (copyfrom.c), instead of one `ExecSimpleRelationInsert` per row.
//!
//! Which rows: from the second INSERT of a run of INSERTs into one table
//! (the first is applied at once: a transaction with one INSERT per table
//! gains nothing from a batch of one), those `rows::insert` would insert
//! without a probe (the
//! `insert_exists` resolution is `error`) into a cached target that is not
//! partitioned and has no volatile defaults (`Target::batchable`; stored
//! generated columns are computed as a row is buffered, as COPY does);
//! everything else keeps the per-row path. No user code runs between two
//! buffered rows that could
//! look for the earlier one (no triggers; defaults are not volatile), so
//! writing them later, together, is not observable.
//!
//! When: the worker flushes the buffer before anything that could observe
//! it (`worker/documents.rs`): any document that is not an INSERT (COMMIT,
//! PREPARE, DDL, TRUNCATE, messages, UPDATE/DELETE), an INSERT into another
//! relation, and when the buffer is full (rows or bytes, COPY's bounds).
//! The cache flushes what is left before it closes (a safety net; the
//! worker's flush has already run). An error discards the buffer with the
//! transaction; nothing is written outside the one local transaction of the
//! remote one, so crash safety and exactly-once are those of a per-row
//! apply.
//!
//! Exact attribution of errors. Per-row apply checks a row's constraints,
//! then inserts it into the heap and its indexes, before the next row is
//! even converted; so the first row that fails is the one its error names.
//! Here the heap insertion of every buffered row comes first (it raises
//! nothing a row's own check would not), then — per row, in order — the
//! row's payload is handed to the worker (`in_flight`: what a unique
//! violation's conflict record, the log line and `last_error` name), then
//! its partition constraint, NOT NULL/CHECK constraints and index entries
//! are checked and made, exactly as `ExecSimpleRelationInsert` orders them.
//! The first failing row is therefore the one per-row apply would fail on,
//! and the error names it. (Conversion errors of a row's text values, and
//! errors of its generated columns' expressions, are raised while it is buffered, before the earlier rows' index entries
//! exist: such a row is named correctly, but an earlier buffered row's
//! unique violation then shows only once the bad value is fixed.)

use pgrx::pg_sys;

/// COPY's bounds (copyfrom.c `MAX_BUFFERED_TUPLES`/`MAX_BUFFERED_BYTES`).
const MAX_ROWS: usize = 1000;
const MAX_BYTES: usize = 65535;

/// The buffered rows of one cached target.
#[derive(Default)]
pub(crate) struct Batch {
    /// Table slots (made on first use in the target's executor state and
    /// reused); the first `used` hold buffered rows.
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    used: usize,
    bytes: usize,
    /// The worker's document of each buffered row (for attribution).
    payloads: Vec<Vec<u8>>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether the next row must wait for a flush.
    pub(crate) fn full(&self) -> bool {
        self.used >= MAX_ROWS || self.bytes >= MAX_BYTES
    }

    /// Buffer a copy of `row` (a complete row of `relation`, in per-change
    /// memory) in a slot that lives as long as the target.
    ///
    /// # Safety
    /// `relation` and `estate` are the cached target's; inside its transaction.
    pub(crate) unsafe fn add(
        &mut self,
        relation: pg_sys::Relation,
        estate: *mut pg_sys::EState,
        row: *mut pg_sys::TupleTableSlot,
    ) {
        // SAFETY: the slot is made in the executor state's memory and list
        // (freed with it); ExecCopySlot materializes the row in the slot's
        // own memory, so it outlives the change's per-tuple memory.
        unsafe {
            if self.used == self.slots.len() {
                let _cx = crate::ffi::ContextSwitch::to((*estate).es_query_cxt);
                self.slots.push(pg_sys::table_slot_create(relation, &mut (*estate).es_tupleTable));
            }
            let slot = self.slots[self.used];
            // The copy and its length in one guarded call.
            self.bytes += crate::ffi::unguarded::copy_slot_tuple_len(slot, row) as usize;
        }
        self.used += 1;
        if self.payloads.len() < self.used {
            self.payloads.push(Vec::new());
        }
    }

    /// Keep the document of the row `add` buffered last (swapped in: the
    /// caller gets an empty buffer back to reuse).
    pub(crate) fn keep_payload(&mut self, payload: &mut Vec<u8>) {
        if let Some(last) = self.used.checked_sub(1) {
            std::mem::swap(&mut self.payloads[last], payload);
        }
    }

    /// Write the buffered rows: one multi-insert into the heap, then per row
    /// (in order) `on_row` with its document, its constraints and its index
    /// entries (see the module notes).
    ///
    /// # Safety
    /// The cached target's relation, result relation and executor state,
    /// inside its transaction, during a change (`begin_change`), with an
    /// active snapshot.
    pub(crate) unsafe fn flush(
        &mut self,
        relation: pg_sys::Relation,
        rri: *mut pg_sys::ResultRelInfo,
        estate: *mut pg_sys::EState,
        mut on_row: impl FnMut(&mut Vec<u8>),
    ) {
        if self.used == 0 {
            return;
        }
        let n = self.used;
        // Reset first: an error below ends the transaction, and with it
        // this batch (the slots are cleared by the abort's resource owner).
        self.used = 0;
        self.bytes = 0;
        // SAFETY: as COPY's CopyMultiInsertBufferFlush: the multi-insert and
        // each row's work in per-tuple memory (reset per row; the rows live
        // in their slots' memory), with the change's command id.
        unsafe {
            let econtext = pg_sys::MakePerTupleExprContext(estate);
            let per_tuple = (*econtext).ecxt_per_tuple_memory;
            let _cx = crate::ffi::ContextSwitch::to(per_tuple);
            pg_sys::table_multi_insert(
                relation,
                self.slots.as_mut_ptr(),
                n as i32,
                (*estate).es_output_cid,
                0,
                std::ptr::null_mut(),
            );
            pg_sys::MemoryContextReset(per_tuple);
            let checks = crate::ffi::unguarded::RowChecks {
                rri,
                estate,
                per_tuple,
                partition: (*(*relation).rd_rel).relispartition,
                constrained: !(*(*relation).rd_att).constr.is_null(),
                indexed: (*rri).ri_NumIndices > 0,
            };
            for i in 0..n {
                on_row(&mut self.payloads[i]);
                // One guarded call for the row's checks, index entries and
                // clean-up (`ffi/unguarded.rs`).
                checks.run(self.slots[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_copys() {
        let mut b = Batch { used: MAX_ROWS - 1, ..Default::default() };
        assert!(!b.full());
        b.used = MAX_ROWS;
        assert!(b.full());
        let b = Batch { used: 1, bytes: MAX_BYTES, ..Default::default() };
        assert!(b.full());
        assert!(Batch::default().is_empty());
    }

    #[test]
    fn payload_goes_to_the_last_row() {
        let mut b = Batch { used: 2, payloads: vec![b"a".to_vec(), Vec::new()], ..Default::default() };
        let mut p = b"row2".to_vec();
        b.keep_payload(&mut p);
        assert!(p.is_empty());
        assert_eq!(b.payloads[1], b"row2");
        let mut empty = Batch::default();
        let mut q = b"x".to_vec();
        empty.keep_payload(&mut q);
        assert_eq!(q, b"x");
    }
}
