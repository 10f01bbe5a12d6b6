//! Per-table synchronization states and the rule the apply worker follows
//! for a change of a table that is not `ready` yet. Pure logic, unit-tested.
//!
//! A table copied from a snapshot taken at LSN `L` (its `sync_lsn`) already
//! holds the effect of every remote transaction whose commit record lies
//! before `L`, and none of those committing at or after `L`. So while the
//! table is `catchup`, the main stream skips its changes of transactions
//! committed before `L` and applies the others; it marks the table `ready`
//! once its stream has passed `L`. Tables still waiting for their copy
//! (`init`, or `error` until retried) are skipped entirely: the copy they get
//! later is taken from a newer snapshot that includes those changes. So are
//! `copying` tables: their sync worker applies what their copy lacks up to
//! the point the stream hands them over at, which becomes `L`.

/// The `state` column of `logical_ext.subscription_tables`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting for a sync worker.
    Init,
    /// A sync worker is copying it (one local transaction), then, for a
    /// copy from a snapshot of its own, catching it up with the stream.
    Copying,
    /// Copied and caught up to `sync_lsn`; the main stream has not passed
    /// it yet.
    Catchup,
    /// Copied and caught up: every change is applied.
    Ready,
    /// The copy failed (`last_error`); retried with backoff.
    Error,
}

impl State {
    pub(crate) const ALL: [State; 5] = [State::Init, State::Copying, State::Catchup, State::Ready, State::Error];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Copying => "copying",
            State::Catchup => "catchup",
            State::Ready => "ready",
            State::Error => "error",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What the apply worker does with a change of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Apply,
    Skip,
}

/// The rule for a change of a table in `state` (copied at `sync_lsn`) that
/// belongs to a remote transaction whose commit record is at `commit_lsn`.
/// A `copying` table's changes are skipped: its copy holds those committed
/// before its snapshot, and its sync worker applies the others up to the
/// position the stream hands it over at (`apply/tablesync.rs`).
pub(crate) fn action(state: State, sync_lsn: Option<u64>, commit_lsn: Option<u64>) -> Action {
    match state {
        State::Ready => Action::Apply,
        State::Init | State::Error | State::Copying => Action::Skip,
        State::Catchup => match (sync_lsn, commit_lsn) {
            (Some(l), Some(c)) if c < l => Action::Skip,
            _ => Action::Apply,
        },
    }
}

/// Whether a `catchup` table copied at `sync_lsn` can be marked `ready`,
/// given the position the main stream has received and fully applied.
pub(crate) fn caught_up(sync_lsn: Option<u64>, applied_through: u64) -> bool {
    sync_lsn.is_none_or(|l| applied_through >= l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("syncdone"), None);
    }

    #[test]
    fn ready_applies_everything() {
        assert_eq!(action(State::Ready, Some(100), Some(1)), Action::Apply);
        assert_eq!(action(State::Ready, None, None), Action::Apply);
    }

    #[test]
    fn tables_waiting_for_a_copy_skip_changes() {
        for s in [State::Init, State::Error, State::Copying] {
            assert_eq!(action(s, None, Some(500)), Action::Skip, "{s:?}");
        }
    }

    #[test]
    fn catchup_skips_exactly_what_the_copy_holds() {
        // Committed before the snapshot: in the copy.
        assert_eq!(action(State::Catchup, Some(1000), Some(999)), Action::Skip);
        // At or after it: not in the copy.
        assert_eq!(action(State::Catchup, Some(1000), Some(1000)), Action::Apply);
        assert_eq!(action(State::Catchup, Some(1000), Some(5000)), Action::Apply);
    }

    #[test]
    fn ready_once_the_stream_passed_the_copy() {
        assert!(!caught_up(Some(1000), 999));
        assert!(caught_up(Some(1000), 1000));
        assert!(caught_up(None, 0));
    }
}
