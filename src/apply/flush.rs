//! What the apply worker may report to the publisher as flushed and as
//! applied (pure).
//!
//! Design notes
//! - The publisher frees WAL and advances the slot's `confirmed_flush_lsn`
//!   up to what we report as flushed; reporting a remote transaction before
//!   its local commit is durable loses it in a subscriber crash. Local
//!   commits may be asynchronous (the subscription's `synchronous_commit`,
//!   `off` by default), so each applied remote transaction waits here as
//!   (remote end LSN, local commit end) until the local WAL is flushed past
//!   its commit; with a synchronous local commit it is flushed at once.
//! - Applied is reported apart from flushed, as native replication does: a
//!   remote transaction counts as applied as soon as it committed here
//!   (visible to local readers), durable or not. A publisher waiting with
//!   `synchronous_commit = remote_apply` waits for that position.
//! - When nothing applied is waiting (no pending commit, no open remote
//!   transaction), everything received is as good as flushed (and applied):
//!   reporting it lets the publisher release WAL of transactions that
//!   carried nothing for us and shut down promptly (pitfall in platform.md).
//!   The apply worker ([`FlushTracker::durable`]) reports it only once its
//!   replication origin durably records it ([`FlushTracker::idle_advance`]
//!   says where to move it; the move is a commit like any other), so a
//!   slot's `confirmed_flush_lsn` is never past the origin of the node that
//!   confirmed it: the no-silent-gap fence (`slot_fence.rs`) rests on that.
//!   A table's catch-up (its own temporary slot) reports it at once.
//! - Reports never go backwards (PostgreSQL 15 lets a slot's
//!   `confirmed_flush_lsn` move backwards).

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct FlushTracker {
    /// Remote end LSN of the last transaction known flushed locally.
    flushed: u64,
    /// (remote end LSN, local commit end LSN) not yet known flushed locally.
    pending: VecDeque<(u64, u64)>,
    /// Remote end LSN of the last transaction committed here (or the last
    /// applied position reported).
    applied: u64,
    /// Idle positions are reported only once the origin records them.
    durable: bool,
}

impl FlushTracker {
    /// Start from `start`: everything before it is applied and durable.
    pub(crate) fn new(start: u64) -> FlushTracker {
        FlushTracker { flushed: start, pending: VecDeque::new(), applied: start, durable: false }
    }

    /// [`FlushTracker::new`] for the apply worker: what it receives while
    /// idle is reported once the origin was moved there (`idle_advance`).
    pub(crate) fn durable(start: u64) -> FlushTracker {
        FlushTracker { durable: true, ..FlushTracker::new(start) }
    }

    /// Where to move the origin so that all that was received can be
    /// reported: `Some` only for a durable tracker with nothing applied
    /// waiting or open and more received than flushed.
    pub(crate) fn idle_advance(&self, received: u64, work_open: bool) -> Option<u64> {
        (self.durable && self.pending.is_empty() && !work_open && received > self.flushed).then_some(received)
    }

    /// A remote transaction ending at `remote_end` committed locally; its
    /// commit record ends at `local_end`.
    pub(crate) fn committed(&mut self, remote_end: u64, local_end: u64) {
        self.pending.push_back((remote_end, local_end));
        self.applied = self.applied.max(remote_end);
    }

    /// The local WAL is flushed up to `local_flushed`.
    pub(crate) fn local_flush(&mut self, local_flushed: u64) {
        while let Some(&(remote, local)) = self.pending.front() {
            if local > local_flushed {
                break;
            }
            self.flushed = self.flushed.max(remote);
            self.pending.pop_front();
        }
    }

    /// Applied transactions wait for the local WAL flush: the next report
    /// will say more, so it should come soon.
    pub(crate) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// `flush` and `apply` were reported. When they were more than the last
    /// flushed or applied commit (nothing was pending: all received counted
    /// as flushed), later reports start from them: PostgreSQL 15 lets a
    /// slot's `confirmed_flush_lsn` move backwards, so reports must not.
    pub(crate) fn reported(&mut self, flush: u64, apply: u64) {
        self.flushed = self.flushed.max(flush);
        self.applied = self.applied.max(apply).max(flush);
    }

    /// The flush position to report, given what was received and whether
    /// applied work is still open (a remote transaction or queued TRUNCATEs).
    pub(crate) fn report(&self, received: u64, work_open: bool) -> u64 {
        if self.pending.is_empty() && !work_open && !self.durable { received.max(self.flushed) } else { self.flushed }
    }

    /// The apply position to report: the last commit here, flushed or not
    /// (never behind the flush position).
    pub(crate) fn report_apply(&self, received: u64, work_open: bool) -> u64 {
        self.report(received, work_open).max(self.applied)
    }
}

#[cfg(test)]
mod tests {
    use super::FlushTracker;

    #[test]
    fn idle_reports_everything_received() {
        let t = FlushTracker::new(100);
        assert_eq!(t.report(500, false), 500);
        assert_eq!(t.report(500, true), 100, "an open transaction holds the report back");
    }

    #[test]
    fn a_durable_tracker_reports_idle_positions_once_the_origin_moved() {
        let mut t = FlushTracker::durable(100);
        assert_eq!(t.report(500, false), 100, "received, not yet recorded by the origin");
        assert_eq!(t.report_apply(500, false), 100);
        assert_eq!(t.idle_advance(500, false), Some(500));
        assert_eq!(t.idle_advance(500, true), None, "an open transaction: no move");
        // The origin's move is a commit, flushed at once.
        t.committed(500, 2_000);
        assert_eq!(t.idle_advance(600, false), None, "a commit is pending");
        t.local_flush(2_000);
        assert_eq!(t.report(600, false), 500, "what the origin records, not what arrived since");
        assert_eq!(t.idle_advance(600, false), Some(600));
        assert_eq!(t.idle_advance(500, false), None, "nothing new");
        assert_eq!(FlushTracker::new(100).idle_advance(500, false), None, "a catch-up reports at once");
    }

    #[test]
    fn commits_are_reported_once_locally_flushed() {
        let mut t = FlushTracker::new(100);
        t.committed(200, 1_000);
        t.committed(300, 2_000);
        assert_eq!(t.report(400, false), 100, "nothing flushed locally yet");
        assert!(t.waiting());
        t.local_flush(1_500);
        assert_eq!(t.report(400, false), 200);
        t.local_flush(1_999);
        assert_eq!(t.report(400, false), 200, "the second commit ends at 2000");
        t.local_flush(2_000);
        assert_eq!(t.report(400, false), 400, "nothing pending: all received");
        assert!(!t.waiting());
        assert_eq!(t.report(400, true), 300);
    }

    #[test]
    fn an_idle_report_is_not_taken_back() {
        let mut t = FlushTracker::new(100);
        let idle = t.report(500, false);
        t.reported(idle, idle);
        t.committed(600, 1_000);
        assert_eq!(t.report(700, false), 500, "a pending commit holds the report at what was already reported");
        assert_eq!(t.report(700, true), 500);
        assert_eq!(t.report_apply(700, true), 600, "applied, not yet flushed");
    }

    #[test]
    fn applied_is_reported_before_flushed() {
        let mut t = FlushTracker::new(100);
        assert_eq!(t.report_apply(100, false), 100);
        t.committed(200, 1_000);
        assert_eq!(t.report(300, false), 100);
        assert_eq!(t.report_apply(300, false), 200, "committed here: applied at once");
        assert_eq!(t.report_apply(300, true), 200);
        t.local_flush(1_000);
        assert_eq!(t.report(300, false), 300);
        assert_eq!(t.report_apply(300, false), 300, "never behind the flush position");
        t.reported(300, 300);
        t.committed(250, 1_100);
        assert_eq!(t.report_apply(400, true), 300, "never backwards");
    }

    #[test]
    fn never_goes_backwards() {
        let mut t = FlushTracker::new(500);
        t.committed(400, 10);
        t.local_flush(10);
        assert_eq!(t.report(0, true), 500);
        assert_eq!(t.report(0, false), 500);
    }
}
