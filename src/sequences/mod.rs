//! Sequences in the stream (issue 16): PostgreSQL 15 does not decode them,
//! so after a switchover the new primary hands out IDs that already exist.
//!
//! Design notes
//! - Capture (`capture.rs`) is a background worker per database on the
//!   publisher, not a hook on `nextval`: every
//!   `logical_ext.sequence_capture_interval` it reads the state of the
//!   sequences that feed published tables (serial and identity columns, any
//!   `nextval('s')` default, so a sequence shared by two tables too) and of
//!   those added with `replicate_sequence()`, and for those that moved since
//!   the last message it writes one transactional logical message (prefix
//!   [`PREFIX`]). `nextval` costs nothing more; the lag is bounded by the
//!   interval. The walsender cannot do it: a decoding session must not write
//!   WAL or assign transaction ids.
//! - Authenticity: `pg_logical_emit_message` is executable by PUBLIC, so the
//!   prefix proves nothing. The worker writes the values it sends into the
//!   superuser-owned user catalog table `logical_ext.replicated_sequence`
//!   in the message's transaction; the output plugin reads that row under
//!   the decoding snapshot and prints a `SEQ` document only when the row
//!   vouches for exactly this transaction and these values
//!   (`decoder/sequence.rs`); anything else stays an `M` message.
//! - Apply (`apply/sequence/`) is forward-only (`decision.rs`, pure): a sequence is
//!   moved only when the remote position (the value the next `nextval`
//!   would return, in the direction of its increment) is ahead of the local
//!   one; it runs in the remote transaction, in commit order, as the
//!   sequence's owner, holding a lock that `nextval` waits for.
//! - A sequence missing on the subscriber does not stop replication: the
//!   change is skipped with a WARNING (once per sequence and session) whose
//!   HINT says to create it; `sync_sequences()` reports it as `missing`.
//!   Rows matter more than a sequence that is not there yet.
//! - `sync_sequences(subscription)` is the switchover fence: it
//!   reads every replicated sequence on the publisher through the
//!   subscription's connection and moves the local ones forward to exactly
//!   those values (`apply/sequence/sync.rs`).
//!
//! This part holds the publisher's side and the message both sides share;
//! the subscriber's side is `apply/sequence/`.

mod capture;
pub(crate) mod message;
pub(crate) mod settings;

pub(crate) use capture::start_for_database;
pub(crate) use message::PREFIX;

pgrx::extension_sql_file!(
    "../../sql/sequences.sql",
    name = "sequences",
    requires = [
        "subscription",
        capture::start_sequence_capture,
        capture::replicate_sequence,
        apply::sequence::sync::sync_sequences
    ]
);
