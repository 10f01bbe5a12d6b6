//! Part 1 of the mission: the `logical_ext` output plugin, a JSON change
//! stream in wal2json's format-versions 2 (default) and 1 (docs/FORMAT.md).
//!
//! Design notes
//! - `plugin.rs` holds the C entry points (`_PG_output_plugin_init` and the
//!   callbacks); they only convert pointers and call `stream.rs`.
//! - `stream.rs` is one decoding session: options, caches, the transaction
//!   being replayed, and the writing of documents, one per change, into a
//!   reused buffer (never a whole transaction: no 1 GB limit). In
//!   format-version 1 it places the pieces `v1.rs` writes: into one
//!   transaction document (wal2json's default, bounded by 1 GB) or, with
//!   `write-in-chunks`, each as its own output row.
//! - `shape.rs` (how a relation prints) and `publication.rs` (where its
//!   changes go) are cached per relation and dropped on the relcache /
//!   syscache invalidations that reorderbuffer replays at the exact position
//!   of a DDL in the stream.
//! - Routing follows pgoutput with one deliberate difference: a tool's
//!   table (an extension member, or in a schema that is one: pg_repack's
//!   work tables, pg_cron's and pg_partman's catalogs) is not published
//!   through `FOR ALL TABLES` / `TABLES IN SCHEMA`, only when a publication
//!   names it (`publication.rs`, decided once per cached route; a membership
//!   change of an existing table, `ALTER EXTENSION ... ADD TABLE`, counts
//!   from that table's next invalidation).
//! - `streaming.rs` holds the C entry points of the stream callbacks
//!   (in-progress transactions, opt-in by the `streaming` option);
//!   `stream/inflight.rs` writes their documents.
//! - `options.rs`, `selectors.rs` and `json.rs` are pure and unit-tested.
//! - `twophase.rs` writes the documents of prepared transactions (`P`,
//!   `CP`, `RP`; option `two-phase`), pure and unit-tested.
//! - `compact.rs` writes the compact documents (option `compact`, read by
//!   logical_ext subscribers only): relations once, rows by position.
//! - `values.rs` is the per-column hot path; `numeric.rs` and `jsonb.rs`
//!   print those types from their stored bytes, and `timestamp.rs`
//!   timestamps from their broken-down time, as their output functions do
//!   (pure and unit-tested).
//! - `limit.rs` caps one document at PostgreSQL's 1 GB allocation limit and
//!   grows the document buffer fallibly: a value too large to stream is an
//!   ERROR (SQLSTATE 54000), never a process abort.

pub(crate) mod compact;
mod json;
mod jsonb;
mod limit;
mod numeric;
mod options;
mod owner;
mod plugin;
mod publication;
mod selectors;
mod sequence;
mod shape;
mod stream;
mod streaming;
mod timestamp;
mod twophase;
mod v1;
mod values;

/// Version of the documented stream format (docs/FORMAT.md).
pub(crate) const FORMAT_VERSION: i32 = 1;
