//! Forward-only: whether a replicated sequence state moves the local
//! sequence (pure).
//!
//! A sequence's position is the value its next `nextval` returns:
//! `last_value + increment` once called, `last_value` before. The local
//! sequence moves to the remote state only when the remote position is
//! ahead in the direction of the increment (greater for an ascending
//! sequence, smaller for a descending one), so `setval` never takes back a
//! value already handed out here — whatever order states arrive in, and
//! however far the subscriber itself went (after a switchover, or with
//! `sync_sequences` run before the stream caught up).

/// One sequence's state, as `SELECT last_value, is_called FROM seq` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeqState {
    pub(crate) last_value: i64,
    pub(crate) is_called: bool,
}

impl SeqState {
    /// The value the next `nextval` returns (wide: no overflow at the ends).
    fn next(self, increment: i64) -> i128 {
        self.last_value as i128 + if self.is_called { increment as i128 } else { 0 }
    }
}

/// What to do with the local sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Move {
    /// `setval(seq, last_value, is_called)` with the remote state.
    Set(SeqState),
    /// The local sequence is where the remote one is.
    Same,
    /// The local sequence is ahead: left alone.
    Ahead,
}

/// Decide for `local` given `remote`, with the local sequence's
/// `increment` (a sequence with a different increment on each side is
/// compared with the local one: it is what the next local `nextval` uses).
pub(crate) fn forward(local: SeqState, remote: SeqState, increment: i64) -> Move {
    let (l, r) = (local.next(increment), remote.next(increment));
    let ahead = if increment >= 0 { r > l } else { r < l };
    if ahead {
        Move::Set(remote)
    } else if r == l {
        Move::Same
    } else {
        Move::Ahead
    }
}

#[cfg(test)]
mod tests {
    use super::{Move, SeqState, forward};

    fn s(last_value: i64, is_called: bool) -> SeqState {
        SeqState { last_value, is_called }
    }

    #[test]
    fn ascending_moves_forward_only() {
        assert_eq!(forward(s(10, true), s(20, true), 1), Move::Set(s(20, true)));
        assert_eq!(forward(s(20, true), s(10, true), 1), Move::Ahead, "never backwards");
        assert_eq!(forward(s(20, true), s(20, true), 1), Move::Same);
    }

    #[test]
    fn is_called_counts() {
        // A fresh sequence (1, not called) hands out 1 next; (1, called) 2.
        assert_eq!(forward(s(1, false), s(1, true), 1), Move::Set(s(1, true)));
        assert_eq!(forward(s(1, true), s(1, false), 1), Move::Ahead);
        // setval(s, 5, false) hands out 5 next, as (4, called) does.
        assert_eq!(forward(s(4, true), s(5, false), 1), Move::Same);
        assert_eq!(forward(s(4, true), s(6, false), 1), Move::Set(s(6, false)));
    }

    #[test]
    fn descending_moves_down_only() {
        assert_eq!(forward(s(-1, true), s(-10, true), -1), Move::Set(s(-10, true)));
        assert_eq!(forward(s(-10, true), s(-1, true), -1), Move::Ahead, "never back up");
        assert_eq!(forward(s(100, false), s(100, true), -5), Move::Set(s(100, true)));
    }

    #[test]
    fn larger_increments() {
        assert_eq!(forward(s(10, true), s(15, false), 10), Move::Ahead, "local next is 20");
        assert_eq!(forward(s(10, true), s(20, false), 10), Move::Same);
        assert_eq!(forward(s(10, true), s(20, true), 10), Move::Set(s(20, true)));
    }

    #[test]
    fn no_overflow_at_the_ends() {
        assert_eq!(forward(s(i64::MAX, true), s(i64::MAX - 1, true), 1), Move::Ahead);
        assert_eq!(forward(s(i64::MIN, true), s(i64::MIN + 1, true), -1), Move::Ahead);
        assert_eq!(forward(s(i64::MAX - 1, true), s(i64::MAX, true), i64::MAX), Move::Set(s(i64::MAX, true)));
    }
}
