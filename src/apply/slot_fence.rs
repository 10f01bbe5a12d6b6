//! No silent gap: whether the apply worker may stream from its slot (pure).
//!
//! Design notes
//! - PostgreSQL starts a logical slot at its `confirmed_flush_lsn`, whatever
//!   position START_REPLICATION asks for. When the slot confirmed more than
//!   this node's replication origin records as applied, the transactions in
//!   between were confirmed by someone else — another copy of this
//!   subscriber (the original of a base backup, the old primary of a
//!   promoted standby, the source of a PITR restore) — and streaming now
//!   would silently never bring them here. So the worker compares the two
//!   before START_REPLICATION and refuses (SQLSTATE 55000) with both LSNs,
//!   the rows' fate and the way out.
//! - The comparison is only sound if one node never reports more as
//!   flushed than its origin durably records. The apply worker therefore no
//!   longer reports received-but-empty WAL (keepalives, transactions that
//!   carry nothing for it) as flushed on its word alone: it first moves the
//!   origin there in a small local commit, flushed (`flush.rs`, at most
//!   once a second while idle, at once when the publisher asks for a
//!   reply). After a crash the origin is never behind what was reported.
//! - An origin without progress (0/0) has never streamed (or its slot was
//!   created outside, `create_slot => false`): the slot's position is
//!   adopted. The worker records the slot's creation point in the origin
//!   right after creating it for an initial copy, so a copy of the node
//!   taken during the copy is fenced too.
//! - The way out is explicit and once: `accept_slot_gap()` sets the
//!   subscription's `slot_gap` to `accept_once`; the next start adopts the
//!   slot's position, records what it accepted (`slot_gap_accepted`) and
//!   arms the fence again, in one local transaction with the origin's move.
//!   Subscriptions of 0.3.0 are upgraded with `accept_once`: their workers
//!   reported idle positions without that bookkeeping.

/// The subscription's policy for a slot ahead of its origin
/// (`logical_ext.subscription.slot_gap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GapPolicy {
    /// Refuse to stream (the default).
    Refuse,
    /// Adopt the slot's position at the next start, then refuse again.
    AcceptOnce,
}

impl GapPolicy {
    pub(crate) fn parse(s: &str) -> GapPolicy {
        match s {
            "accept_once" => GapPolicy::AcceptOnce,
            _ => GapPolicy::Refuse,
        }
    }
}

/// What the worker does before START_REPLICATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Stream: the slot is not ahead of the origin (or does not exist, which
    /// START_REPLICATION reports).
    Stream,
    /// The origin has no progress: move it to the slot's position, stream.
    Adopt { confirmed: u64 },
    /// The gap was accepted: move the origin to the slot's position, record
    /// it, arm the fence again, stream.
    Accept { origin: u64, confirmed: u64 },
    /// Refuse: the slot confirmed transactions this node never applied.
    Refuse { origin: u64, confirmed: u64 },
}

/// Decide on the origin's progress (`replorigin_session_get_progress`) and
/// the slot's `confirmed_flush_lsn` (`None`: no slot, or not known).
pub(crate) fn admit(origin: u64, confirmed: Option<u64>, policy: GapPolicy) -> Admission {
    let Some(confirmed) = confirmed.filter(|&c| c != 0) else { return Admission::Stream };
    if origin == 0 {
        return Admission::Adopt { confirmed };
    }
    if confirmed <= origin {
        return Admission::Stream;
    }
    match policy {
        GapPolicy::AcceptOnce => Admission::Accept { origin, confirmed },
        GapPolicy::Refuse => Admission::Refuse { origin, confirmed },
    }
}

/// `last_error` of a refusal (it must fit `subscription_status`'s 480
/// bytes): both LSNs, the rows' fate, the way out.
pub(crate) fn refusal_message(subscription: &str, slot: &str, origin: &str, confirmed: &str) -> String {
    format!(
        "replication slot \"{slot}\" has confirmed_flush_lsn {confirmed}, past this node's progress {origin}: the \
         changes in between were applied by another copy of this subscriber and are not here; streaming is \
         refused. To go on: SELECT logical_ext.accept_slot_gap('{subscription}'), then resync_table() the tables \
         to get them back"
    )
}

/// The DETAIL of a refusal (server log): why, and the choices.
pub(crate) fn refusal_detail(confirmed: &str) -> String {
    format!(
        "PostgreSQL starts a logical slot at its confirmed position whatever the client asks: streaming would \
         start at {confirmed} and the remote transactions committed between the two positions would never reach \
         this node. This happens to a base backup, a PITR restore or a promoted physical standby of a subscriber \
         whose original went on applying. If the other copy is still in service, stop this one. Otherwise accept \
         the gap once with logical_ext.accept_slot_gap(subscription) (recorded in \
         logical_ext.subscription.slot_gap_accepted) and resynchronize the subscribed tables with \
         logical_ext.resync_table(subscription, table), or accept it alone if those rows are not needed here."
    )
}

/// What `slot_gap_accepted` records of an accepted gap.
pub(crate) fn acceptance_record(origin: &str, confirmed: &str, at: &str) -> String {
    format!("{origin}..{confirmed} accepted at {at}")
}

#[cfg(test)]
mod tests {
    use super::{Admission, GapPolicy, admit, refusal_message};

    #[test]
    fn the_refusal_fits_last_error() {
        let name = "a".repeat(63);
        let m = refusal_message(&name, &name, "FFFFFFFF/FFFFFFFF", "FFFFFFFF/FFFFFFFF");
        assert!(m.len() <= 480, "{} bytes", m.len());
    }

    #[test]
    fn a_slot_at_or_behind_the_origin_streams() {
        assert_eq!(admit(500, Some(500), GapPolicy::Refuse), Admission::Stream);
        assert_eq!(admit(500, Some(400), GapPolicy::Refuse), Admission::Stream);
        assert_eq!(admit(500, Some(400), GapPolicy::AcceptOnce), Admission::Stream, "nothing to accept");
    }

    #[test]
    fn a_slot_ahead_of_the_origin_is_refused() {
        assert_eq!(admit(500, Some(501), GapPolicy::Refuse), Admission::Refuse { origin: 500, confirmed: 501 });
    }

    #[test]
    fn an_accepted_gap_is_adopted() {
        assert_eq!(admit(500, Some(900), GapPolicy::AcceptOnce), Admission::Accept { origin: 500, confirmed: 900 });
    }

    #[test]
    fn an_origin_without_progress_adopts_the_slot() {
        assert_eq!(admit(0, Some(900), GapPolicy::Refuse), Admission::Adopt { confirmed: 900 });
    }

    #[test]
    fn no_slot_is_left_to_start_replication() {
        assert_eq!(admit(500, None, GapPolicy::Refuse), Admission::Stream);
        assert_eq!(admit(0, Some(0), GapPolicy::Refuse), Admission::Stream);
    }

    #[test]
    fn the_policy_is_a_closed_set() {
        assert_eq!(GapPolicy::parse("accept_once"), GapPolicy::AcceptOnce);
        assert_eq!(GapPolicy::parse("refuse"), GapPolicy::Refuse);
        assert_eq!(GapPolicy::parse(""), GapPolicy::Refuse, "anything else refuses");
    }
}
