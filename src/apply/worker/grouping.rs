//! Group commit: when to apply several consecutive remote transactions in
//! one local transaction (pure; the worker does the calls, see
//! `documents.rs` and `stream.rs`).
//!
//! Design notes
//! - Why: a small remote transaction (pgbench: 3 UPDATEs and an INSERT)
//!   costs about a third of its apply time in the local BEGIN/COMMIT, the
//!   `kill()` that wakes the WAL writer after every asynchronous commit, the
//!   executor state opened per transaction and the status update
//!   (docs/BENCHMARKS.md, issue 14). One local commit for a run of them
//!   pays that once.
//! - Never waiting: at a remote COMMIT the local commit is only *deferred*
//!   (the worker keeps the local transaction open) — and the deferred commit
//!   happens as soon as the socket has nothing more to read, or the next
//!   document is anything but the BEGIN of a transaction that may join. So a
//!   member is committed no later than the stream loop would have looked at
//!   an empty socket anyway: no latency is added, and a publisher waiting
//!   for this subscription (synchronous replication, `remote_apply`) hears
//!   about its commit as soon as before.
//! - Exactly once: the group's local commit carries the replication origin's
//!   progress of its LAST member (its end LSN), one flush-tracker entry, one
//!   status update counting every member. A crash or error before that
//!   commit loses the whole group locally and the stream resumes before its
//!   first member.
//! - Caps, each ending a group: [`MAX_MEMBERS`] remote transactions (the
//!   per-commit cost of ~20 µs is then below 1% of a member's apply time, and
//!   a failure replays at most that many), [`MAX_CHANGES`] changes (row
//!   locks and the transaction's memory grow with them; larger remote
//!   transactions gain nothing from grouping anyway) and [`MAX_OPEN_US`]
//!   since the local transaction started (local readers and the
//!   `applied`/`last_commit_time` figures lag a catch-up by at most that).
//! - What never groups (`allowed` and the worker's per-transaction checks):
//!   a subscription with the `group_commit` option off; one with a
//!   `last_update_wins`/`first_update_wins` rule (the local commit records
//!   one commit timestamp, the last member's, for every row of the group,
//!   and those resolutions compare commit timestamps); two-phase
//!   subscriptions (a `P` would prepare earlier members with it); a sync
//!   worker's catch-up; a stream commit's replay; a session with a
//!   `skip_transaction` request; while any table is not `ready` (the worker
//!   answers sync workers at committed points only). A member that replayed
//!   DDL or a TRUNCATE ([`Grouping::must_end`]) is committed at once, so
//!   their strong locks are not held across later members.
//! - Errors: a failure rolls the whole group back. Which member failed (or
//!   whether the grouping itself caused it, e.g. an ALTER TABLE refused for
//!   pending trigger events of an earlier member) is decided by applying the
//!   transactions again ONE per local transaction through the last one begun
//!   ([`Grouping::failed`] sets `solo_through`): a failure of a group of two
//!   or more is therefore not reported (no `last_error`, conflict record,
//!   backoff or `disable_on_error`); the immediate retry reports it, if it
//!   fails again, naming the exact remote transaction as without grouping.

/// Remote transactions per local transaction at most.
pub(crate) const MAX_MEMBERS: u32 = 100;
/// A group takes no new member after this many changes.
pub(crate) const MAX_CHANGES: i64 = 10_000;
/// A group takes no new member once its local transaction is this old (µs).
pub(crate) const MAX_OPEN_US: i64 = 50_000;

/// The grouping state of the worker (it outlives a failed session: the
/// retry must know what failed).
#[derive(Debug, Default)]
pub(crate) struct Grouping {
    /// Remote transactions begun in the open local transaction.
    members: u32,
    /// Commit LSN of the last of them (`None`: the BEGIN carried none).
    last_begun: Option<u64>,
    /// When the open local transaction started (PostgreSQL timestamp, µs).
    opened: i64,
    /// The current member replayed DDL or a TRUNCATE: commit after it.
    alone: bool,
    /// After a failure: remote transactions are applied one per local
    /// transaction until one committed at or past this LSN is committed.
    solo_through: Option<u64>,
}

/// What a failed local transaction held (see [`Grouping::failed`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Two or more remote transactions: which one failed is not known; the
    /// retry applies them one by one, and this failure is not reported.
    pub(crate) grouped: bool,
    pub(crate) members: u32,
}

/// Whether a session may group at all: the subscription's `group_commit`
/// option, not two-phase, not a sync worker's catch-up, and no resolution
/// that compares commit timestamps (`timestamp_rules`).
pub(crate) fn allowed(option: bool, two_phase: bool, catch_up: bool, timestamp_rules: bool) -> bool {
    option && !two_phase && !catch_up && !timestamp_rules
}

impl Grouping {
    /// A remote transaction begins: in a new local transaction (`fresh`,
    /// started at `now`) or joining the open one.
    pub(crate) fn begin(&mut self, commit_lsn: Option<u64>, fresh: bool, now: i64) {
        if fresh {
            self.members = 0;
            self.opened = now;
        }
        self.members += 1;
        self.last_begun = commit_lsn;
        self.alone = false;
    }

    /// The current member replayed DDL or a TRUNCATE.
    pub(crate) fn must_end(&mut self) {
        self.alone = true;
    }

    /// Remote transactions are applied one by one after a failure.
    pub(crate) fn solo(&self) -> bool {
        self.solo_through.is_some()
    }

    fn room(&self, changes: i64, now: i64) -> bool {
        self.members < MAX_MEMBERS && changes < MAX_CHANGES && now.saturating_sub(self.opened) < MAX_OPEN_US
    }

    /// At a remote COMMIT: keep the local transaction open for the next
    /// remote one (`allowed`: the session's and the worker's conditions;
    /// `changes`: the group's so far)?
    pub(crate) fn may_defer(&self, allowed: bool, changes: i64, now: i64) -> bool {
        allowed && !self.alone && !self.solo() && self.last_begun.is_some() && self.room(changes, now)
    }

    /// At the BEGIN of the remote transaction committed at `commit_lsn`,
    /// with a commit deferred: may it join the open local transaction?
    pub(crate) fn may_join(&self, allowed: bool, commit_lsn: Option<u64>, changes: i64, now: i64) -> bool {
        allowed && !self.solo() && commit_lsn.is_some() && self.room(changes, now)
    }

    /// The local transaction committed; returns how many remote
    /// transactions it applied. Past the failed one, grouping resumes.
    pub(crate) fn committed(&mut self) -> u32 {
        if let (Some(through), Some(last)) = (self.solo_through, self.last_begun)
            && last >= through
        {
            self.solo_through = None;
        }
        let n = self.members.max(1);
        self.members = 0;
        self.last_begun = None;
        self.alone = false;
        n
    }

    /// The local transaction failed (it is rolled back): apply one by one
    /// through the last remote transaction begun in it.
    pub(crate) fn failed(&mut self) -> Failure {
        let members = std::mem::take(&mut self.members);
        if let Some(last) = self.last_begun.take() {
            self.solo_through = Some(self.solo_through.map_or(last, |s| s.max(last)));
        }
        self.alone = false;
        Failure { grouped: members >= 2, members }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_until_a_cap() {
        let mut g = Grouping::default();
        g.begin(Some(100), true, 0);
        assert!(g.may_defer(true, 4, 10));
        assert!(!g.may_defer(false, 4, 10), "not allowed");
        for i in 1..MAX_MEMBERS {
            assert!(g.may_join(true, Some(100 + u64::from(i)), 4, 10));
            g.begin(Some(100 + u64::from(i)), false, 10);
        }
        assert!(!g.may_defer(true, 4, 10), "member cap");
        assert_eq!(g.committed(), MAX_MEMBERS);
        g.begin(Some(500), true, 1_000);
        assert!(!g.may_defer(true, MAX_CHANGES, 1_000), "change cap");
        assert!(!g.may_join(true, Some(501), MAX_CHANGES, 1_000));
        assert!(!g.may_defer(true, 1, 1_000 + MAX_OPEN_US), "time cap");
        assert!(g.may_defer(true, 1, 1_000 + MAX_OPEN_US - 1));
        assert!(!g.may_join(true, None, 1, 1_000), "a BEGIN without its commit LSN");
    }

    #[test]
    fn ddl_or_truncate_ends_the_group() {
        let mut g = Grouping::default();
        g.begin(Some(1), true, 0);
        g.must_end();
        assert!(!g.may_defer(true, 1, 0));
        assert_eq!(g.committed(), 1);
        g.begin(Some(2), true, 0);
        assert!(g.may_defer(true, 1, 0), "the next member starts afresh");
    }

    #[test]
    fn a_failed_group_is_replayed_one_by_one_past_its_last_member() {
        let mut g = Grouping::default();
        g.begin(Some(10), true, 0);
        g.begin(Some(20), false, 0);
        g.begin(Some(30), false, 0);
        assert_eq!(g.failed(), Failure { grouped: true, members: 3 });
        assert!(g.solo());
        // The retry: each member alone, nothing joins.
        for lsn in [10, 20] {
            g.begin(Some(lsn), true, 0);
            assert!(!g.may_defer(true, 1, 0));
            assert!(!g.may_join(true, Some(lsn + 10), 1, 0));
            assert_eq!(g.committed(), 1);
            assert!(g.solo(), "not yet past {lsn}");
        }
        // The failed one fails again, alone: reported (not grouped).
        g.begin(Some(30), true, 0);
        assert_eq!(g.failed(), Failure { grouped: false, members: 1 });
        assert!(g.solo());
        // Skipped (or fixed): committed, grouping resumes after it.
        g.begin(Some(30), true, 0);
        assert_eq!(g.committed(), 1);
        assert!(!g.solo());
        g.begin(Some(40), true, 0);
        assert!(g.may_defer(true, 1, 0));
    }

    #[test]
    fn a_failure_outside_a_group_is_reported_and_still_replays_alone() {
        let mut g = Grouping::default();
        g.begin(Some(10), true, 0);
        assert_eq!(g.failed(), Failure { grouped: false, members: 1 });
        assert!(g.solo());
        // A failure before any BEGIN (a connection lost between groups).
        let mut idle = Grouping::default();
        assert_eq!(idle.failed(), Failure { grouped: false, members: 0 });
        assert!(!idle.solo());
    }

    #[test]
    fn what_never_groups() {
        assert!(allowed(true, false, false, false));
        assert!(!allowed(false, false, false, false), "option off");
        assert!(!allowed(true, true, false, false), "two-phase");
        assert!(!allowed(true, false, true, false), "a table's catch-up");
        assert!(!allowed(true, false, false, true), "last/first_update_wins");
    }
}
