//! Initial table synchronization: every table a subscription's publications
//! cover is copied with COPY (honouring row filters and column lists) from a
//! snapshot that fits the stream exactly, then streamed.
//!
//! Design notes
//! - State per table lives in `logical_ext.subscription_tables` (`catalog.rs`):
//!   `init` → `copying` → `catchup` → `ready`, or `error` (retried). Tables
//!   without a row there are applied as before (e.g. created later by DDL
//!   replication).
//! - Initial copy: the apply worker creates the slot itself with
//!   `(SNAPSHOT 'export')` and keeps that replication connection idle while
//!   sync workers (`worker.rs`, dynamic background workers, at most
//!   `logical_ext.max_sync_workers_per_subscription` at a time) import the
//!   snapshot and copy. Every table then matches the slot's start point, is
//!   marked `ready`, and streaming starts there: no gap, no duplicate.
//! - Resume, `resync_table`, `refresh_subscription`: the exported snapshot
//!   is gone, so a sync worker creates a TEMPORARY slot with
//!   `(SNAPSHOT 'use')` and copies from its snapshot (`S`). The copy (with
//!   the emptying of the target) is one local transaction, so a killed copy
//!   leaves nothing behind and is simply started again. The stream goes on
//!   meanwhile and skips the table's changes; once the copy is committed,
//!   the sync worker catches the table up as PostgreSQL's tablesync does
//!   (`apply/tablesync.rs`): it streams its temporary slot from `S` up to
//!   the position `T` the apply worker hands it between two transactions,
//!   and the apply worker pauses only for that catch-up, never for a copy.
//!   The table is then `catchup` at `max(S, T)`.
//! - The apply worker keeps the copies and the stream apart (`manager.rs`,
//!   rules in `state.rs`): it skips changes of tables waiting for a copy or
//!   copying, skips a `catchup` table's changes committed before its
//!   `sync_lsn`, and marks it `ready` once the stream is past it.
//! - Progress: a sync worker publishes rows/bytes in shared memory
//!   (`registry.rs`); the apply worker writes them into
//!   `subscription_tables` while the copy's transaction is still open.
//! - `copy.rs` feeds the publisher's `COPY TO STDOUT` into a local
//!   `COPY FROM`; `remote.rs` builds the publisher-side SQL (pure).

pub(crate) mod catalog;
mod copy;
pub(crate) mod manager;
mod merge;
pub(crate) mod registry;
pub(crate) mod remote;
pub(crate) mod state;
pub(crate) mod worker;
