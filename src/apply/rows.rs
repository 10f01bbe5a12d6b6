//! Applying one row change with conflict detection: find the local row (or
//! the row a new one collides with), classify the conflict, decide with the
//! subscription's rules (`conflict.rs`) and carry the decision out on the
//! [`Target`]. The caller logs what comes back.
//!
//! On a partitioned target the [`Target`] routes: rows are found and probed
//! in their leaf partition, and an UPDATE that changes the partition of a
//! row moves it (`routing.rs`). Records and rules name the relation the
//! publisher's change is addressed to, never the leaf.

use super::conflict::{self, Action, ConflictType, Resolution, Rule, Writer};
use super::executor::{LocalRow, Target};
use super::protocol::{Column, columns_json, format_lsn};
use super::resolver::ConflictRecord;

/// What the worker knows about the remote transaction and this node.
pub(crate) struct RowContext<'a> {
    pub(crate) rules: &'a [Rule],
    pub(crate) subscription: &'a str,
    /// This subscription's replication origin (id and name).
    pub(crate) my_origin: u16,
    /// The origins of the subscription's table copies: rows they wrote
    /// count as written by the subscription.
    pub(crate) copy_origins: &'a [u16],
    pub(crate) origin_name: &'a str,
    /// The remote transaction's writer (commit time, publisher's node id).
    pub(crate) remote: Writer,
    /// This node's identity, for local writes.
    pub(crate) local_node: u64,
    pub(crate) commit_lsn: Option<u64>,
    /// `track_commit_timestamp` is on: origins can be compared.
    pub(crate) detect_origin: bool,
}

/// The result of applying one change.
pub(crate) enum Outcome {
    Applied,
    /// An INSERT was buffered (`batch.rs`): the worker keeps its document
    /// with it, and writes the batch before anything could observe it.
    Buffered,
    /// A conflict was resolved without failing: log it, go on.
    Resolved(Box<ConflictRecord>),
    /// The resolution is `error` (or the resolution could not be carried
    /// out): fail the transaction, then log it.
    Failed(Box<ConflictRecord>, String),
}

impl RowContext<'_> {
    fn writer_of(&self, row: &LocalRow) -> Option<(Writer, u16)> {
        if !self.detect_origin {
            return None;
        }
        row.writer().map(|w| {
            let origin = if self.copy_origins.contains(&w.origin) { self.my_origin } else { w.origin };
            // Rows written by this subscription carry the publisher's node;
            // local writes this node's; other origins their origin id.
            let node = if origin == 0 {
                self.local_node
            } else if origin == self.my_origin {
                self.remote.node
            } else {
                u64::from(origin)
            };
            (Writer { commit_ts: w.commit_ts, node }, origin)
        })
    }

    fn record(
        &self,
        target: &Target<'_>,
        c: ConflictType,
        r: Resolution,
        local: Option<&LocalRow>,
        remote: &[Column<'_>],
    ) -> Box<ConflictRecord> {
        let writer = local.and_then(|l| l.writer());
        Box::new(ConflictRecord {
            subscription: self.subscription.to_string(),
            relation: target.rel.display.clone(),
            conflict: c,
            resolution: r,
            local_tuple: local.map(|l| l.to_json(&target.rel)),
            remote_tuple: columns_json(remote),
            remote_origin: self.origin_name.to_string(),
            remote_commit_lsn: self.commit_lsn.map(format_lsn),
            remote_commit_ts: Some(self.remote.commit_ts).filter(|&t| t != 0),
            local_commit_ts: writer.as_ref().map(|w| w.commit_ts),
            local_origin: writer.map(|w| w.origin_label()),
        })
    }

    /// Decide a conflict on an existing local row; `Ok(true)`: apply remote.
    fn decide(
        &self,
        target: &Target<'_>,
        c: ConflictType,
        local: &LocalRow,
        remote: &[Column<'_>],
    ) -> Result<(bool, Box<ConflictRecord>), Outcome> {
        let res = conflict::effective(self.rules, target.rel.relid.to_u32(), c);
        let rec = self.record(target, c, res, Some(local), remote);
        match conflict::decide(res, self.remote, self.writer_of(local).map(|w| w.0)) {
            Action::ApplyRemote => Ok((true, rec)),
            Action::Skip => Ok((false, rec)),
            Action::Fail => Err(fail(rec)),
        }
    }
}

fn fail(rec: Box<ConflictRecord>) -> Outcome {
    let msg = failure_message(&rec);
    Outcome::Failed(rec, msg)
}

/// The error message of a conflict resolved as `error`.
pub(crate) fn failure_message(rec: &ConflictRecord) -> String {
    format!(
        "conflict {} on \"{}\"{} (resolution error)",
        rec.conflict.as_str(),
        rec.relation,
        rec.remote_commit_lsn
            .as_deref()
            .map(|l| format!(" in the remote transaction committed at {l}"))
            .unwrap_or_default()
    )
}

/// Whether the next INSERT into `t` is buffered (`batch.rs`) instead of
/// written at once: with resolution `error` for `insert_exists` (no probe),
/// when it continues a run of INSERTs into a `batchable` target. Decided
/// once per INSERT, before it is applied (it counts the run): the worker
/// brackets a buffered row more lightly than a written one
/// (`Worker::change`), and [`insert`] is told the decision.
pub(crate) fn insert_buffers(ctx: &RowContext<'_>, t: &Target<'_>) -> bool {
    !probes_insert(ctx, t) && t.continues_run() && t.batchable()
}

fn probes_insert(ctx: &RowContext<'_>, t: &Target<'_>) -> bool {
    conflict::effective(ctx.rules, t.rel.relid.to_u32(), ConflictType::InsertExists) != Resolution::Error
}

/// INSERT, detecting `insert_exists` on every probeable unique index.
///
/// With resolution `error` no probe is made (the common, fast path): the
/// unique violation itself fails the transaction, and the worker records it
/// as `insert_exists` (see `Worker::unique_violation`). On a `batchable`
/// target such a row is buffered (`buffer`: [`insert_buffers`] said so) and
/// written with its neighbours.
pub(crate) fn insert(
    ctx: &RowContext<'_>,
    t: &Target<'_>,
    new: &[Column<'_>],
    scratch: &mut Vec<u8>,
    buffer: bool,
) -> Outcome {
    let row = t.new_row(new, scratch);
    if buffer {
        // Its unique violation, if any, is raised when the batch is written,
        // with this row named (`batch.rs`).
        t.buffer(row);
        return Outcome::Buffered;
    }
    let probe = probes_insert(ctx, t);
    let Some(existing) = probe.then(|| t.find_unique(row, None)).flatten() else {
        t.insert(row);
        return Outcome::Applied;
    };
    match ctx.decide(t, ConflictType::InsertExists, &existing, new) {
        Ok((true, rec)) => {
            let merged = t.merged_row(&existing, new, scratch);
            t.update(&existing, merged);
            Outcome::Resolved(rec)
        }
        Ok((false, rec)) => Outcome::Resolved(rec),
        Err(o) => o,
    }
}

/// UPDATE, detecting `update_missing`, `update_origin_differs` and
/// `update_exists`.
pub(crate) fn update(
    ctx: &RowContext<'_>,
    t: &Target<'_>,
    key: &[Column<'_>],
    new: &[Column<'_>],
    complete: bool,
    scratch: &mut Vec<u8>,
) -> Outcome {
    let Some(local) = t.find(key, scratch) else {
        let res = conflict::effective(ctx.rules, t.rel.relid.to_u32(), ConflictType::UpdateMissing);
        let rec = ctx.record(t, ConflictType::UpdateMissing, res, None, new);
        return match res {
            Resolution::ApplyRemote if complete => {
                t.insert(t.new_row(new, scratch));
                Outcome::Resolved(rec)
            }
            Resolution::ApplyRemote => {
                let msg = format!(
                    "conflict update_missing on \"{}\": cannot insert the row, its unchanged TOASTed columns were not sent",
                    rec.relation
                );
                Outcome::Failed(rec, msg)
            }
            Resolution::Error => fail(rec),
            _ => Outcome::Resolved(rec),
        };
    };
    let mut resolved = None;
    if let Some((_, origin)) = ctx.writer_of(&local)
        && origin != ctx.my_origin
    {
        match ctx.decide(t, ConflictType::UpdateOriginDiffers, &local, new) {
            Ok((true, rec)) => resolved = Some(rec),
            Ok((false, rec)) => return Outcome::Resolved(rec),
            Err(o) => return o,
        }
    }
    let row = t.merged_row(&local, new, scratch);
    // As for INSERT: with resolution `error` the unique violation reports itself.
    let probe = conflict::effective(ctx.rules, t.rel.relid.to_u32(), ConflictType::UpdateExists) != Resolution::Error;
    if let Some(other) = probe.then(|| t.find_unique(row, Some(&local))).flatten() {
        match ctx.decide(t, ConflictType::UpdateExists, &other, new) {
            Ok((true, rec)) => {
                t.delete(&other);
                t.update(&local, row);
                return Outcome::Resolved(rec);
            }
            Ok((false, rec)) => return Outcome::Resolved(rec),
            Err(o) => return o,
        }
    }
    t.update(&local, row);
    resolved.map_or(Outcome::Applied, Outcome::Resolved)
}

/// DELETE, detecting `delete_missing` and `delete_origin_differs`.
pub(crate) fn delete(ctx: &RowContext<'_>, t: &Target<'_>, key: &[Column<'_>], scratch: &mut Vec<u8>) -> Outcome {
    let Some(local) = t.find(key, scratch) else {
        let res = conflict::effective(ctx.rules, t.rel.relid.to_u32(), ConflictType::DeleteMissing);
        let rec = ctx.record(t, ConflictType::DeleteMissing, res, None, key);
        return if res == Resolution::Error { fail(rec) } else { Outcome::Resolved(rec) };
    };
    if let Some((_, origin)) = ctx.writer_of(&local)
        && origin != ctx.my_origin
    {
        match ctx.decide(t, ConflictType::DeleteOriginDiffers, &local, key) {
            Ok((true, rec)) => {
                t.delete(&local);
                return Outcome::Resolved(rec);
            }
            Ok((false, rec)) => return Outcome::Resolved(rec),
            Err(o) => return o,
        }
    }
    t.delete(&local);
    Outcome::Applied
}
