//! The deciding logic of publisher failover, pure (LSNs are `u64`,
//! transaction ids `u32` compared modulo 2^32 as PostgreSQL does).
//!
//! - [`gate`]: how far a walsender of a failover slot may read WAL (the
//!   `standby_slot_names` rule).
//! - [`sync_step`]: what the standby's worker does with one slot this round.
//! - [`standby_safety`] / [`primary_safety`]: `failover_readiness()`'s
//!   `safe` and `reason`.

/// `TransactionIdPrecedes` for normal xids (0: invalid, treated as "none").
pub(crate) fn xid_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// One physical slot named in `logical_ext.standby_slot_names`, as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StandbySlot {
    /// The slot exists and is physical; its `restart_lsn` (the standby's
    /// flushed position; 0 when it never connected).
    Flushed(u64),
    /// No slot of that name.
    Missing,
    /// A logical slot, or invalidated (`restart_lsn` lost).
    Unusable,
}

/// Whether a walsender may read WAL up to `want` (exclusive end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// No rule (no slot named): read.
    Open,
    /// Read up to `upto` (every named slot flushed at least that far).
    Upto(u64),
    /// Wait: the named standbys have not flushed `want`; `behind` names the
    /// first culprit's index (for the message).
    Wait { upto: u64, culprit: usize },
}

/// The rule of PostgreSQL 17's `synchronized_standby_slots`: nothing past
/// the oldest flushed position of the named physical slots. A named slot
/// that is missing or unusable holds everything back (as PostgreSQL 17
/// does: a failover to that standby would lose what was sent), reported with
/// a WARNING by the caller.
pub(crate) fn gate(slots: &[StandbySlot], want: u64) -> Gate {
    if slots.is_empty() {
        return Gate::Open;
    }
    let mut upto = u64::MAX;
    let mut culprit = None;
    for (i, s) in slots.iter().enumerate() {
        let flushed = match *s {
            StandbySlot::Flushed(l) => l,
            StandbySlot::Missing | StandbySlot::Unusable => 0,
        };
        if flushed < want && culprit.is_none() {
            culprit = Some(i);
        }
        upto = upto.min(flushed);
    }
    match culprit {
        None => Gate::Upto(upto),
        Some(culprit) => Gate::Wait { upto, culprit },
    }
}

/// The primary's copy of a failover slot, as the standby's worker read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Remote {
    pub(crate) restart_lsn: u64,
    pub(crate) confirmed_flush: u64,
    pub(crate) catalog_xmin: u32,
}

/// The standby's local copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Local {
    pub(crate) restart_lsn: u64,
    pub(crate) confirmed_flush: u64,
    pub(crate) catalog_xmin: u32,
    pub(crate) persistent: bool,
}

/// Why a slot is not (yet) safe to fail over to. Closed list; the text is
/// `failover_readiness().reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotSafe {
    /// The local copy's reservation is newer than the primary's slot: the
    /// standby may lack WAL or catalog rows the slot needs (first sync).
    FirstSyncRestartAhead,
    FirstSyncCatalogXminAhead,
    /// The primary's restart point has no decoding snapshot copied here yet.
    SnapshotNotCopied,
    /// No local copy (the worker has not seen it yet, or is not running).
    NoCopy,
    /// The standby has not received the primary's confirmed position.
    NotReceived,
    /// The worker's last look at the primary is too old.
    Stale,
}

impl NotSafe {
    pub(crate) fn text(self) -> &'static str {
        match self {
            NotSafe::FirstSyncRestartAhead => {
                "first sync: the local reservation (restart_lsn) is newer than the primary slot's; waiting for the primary's slot to pass it"
            }
            NotSafe::FirstSyncCatalogXminAhead => {
                "first sync: the local catalog_xmin is newer than the primary slot's; waiting for the primary's slot to pass it"
            }
            NotSafe::SnapshotNotCopied => {
                "the decoding snapshot at the primary's restart_lsn is not copied yet (pg_read_binary_file on the primary)"
            }
            NotSafe::NoCopy => {
                "no local copy of the slot (is logical_ext.synchronize_slots on and the worker running?)"
            }
            NotSafe::NotReceived => "the standby has not received WAL up to the slot's confirmed_flush_lsn",
            NotSafe::Stale => "the slot synchronization worker has not reached the primary recently",
        }
    }
}

/// What the worker does with one slot in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Move the local copy to these positions (and persist it if it is
    /// not yet). `confirmed_flush` is capped at what the standby received.
    Advance { restart_lsn: u64, confirmed_flush: u64, catalog_xmin: u32 },
    /// Keep the copy as it is (temporary while in first sync), for this
    /// reason; the next round looks again.
    Hold(NotSafe),
}

/// Decide one slot's step. `received`: how far the standby has WAL;
/// `snapshot_copied`: the decoding snapshot serialized at
/// `remote.restart_lsn` on the primary is now also here (or
/// `remote.restart_lsn` equals the local one, whose snapshot is here).
///
/// A copy may only move forward, and only to positions its own reservation
/// covers: the primary's restart_lsn/catalog_xmin at or after the local
/// ones (the local reservation keeps that WAL and those catalog rows). In
/// first sync (not persistent) that is also the moment it becomes
/// persistent.
pub(crate) fn sync_step(remote: Remote, local: Local, received: u64, snapshot_copied: bool) -> Step {
    if remote.restart_lsn < local.restart_lsn {
        return Step::Hold(NotSafe::FirstSyncRestartAhead);
    }
    if local.catalog_xmin != 0 && xid_precedes(remote.catalog_xmin, local.catalog_xmin) {
        return Step::Hold(NotSafe::FirstSyncCatalogXminAhead);
    }
    if remote.restart_lsn > received {
        return Step::Hold(NotSafe::NotReceived);
    }
    if remote.restart_lsn != local.restart_lsn && !snapshot_copied {
        return Step::Hold(NotSafe::SnapshotNotCopied);
    }
    let confirmed_flush = remote.confirmed_flush.min(received).max(local.confirmed_flush);
    Step::Advance { restart_lsn: remote.restart_lsn, confirmed_flush, catalog_xmin: remote.catalog_xmin }
}

/// Whether failing over to this standby now loses nothing for the slot:
/// its copy is persistent, covers the primary's reservation, and the
/// standby has received what the slot's consumer confirmed.
pub(crate) fn standby_safety(
    local: Option<Local>,
    remote: Option<Remote>,
    hold: Option<NotSafe>,
    received: u64,
    fresh: bool,
) -> Result<(), NotSafe> {
    let Some(local) = local else { return Err(NotSafe::NoCopy) };
    if !local.persistent {
        return Err(hold.unwrap_or(NotSafe::FirstSyncRestartAhead));
    }
    if !fresh {
        return Err(NotSafe::Stale);
    }
    if let Some(r) = remote {
        if r.confirmed_flush > received {
            return Err(NotSafe::NotReceived);
        }
    }
    Ok(())
}

/// Why a failover slot is not safe as the primary sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrimaryNotSafe {
    /// `logical_ext.standby_slot_names` is empty: changes may reach the
    /// subscriber before any standby.
    NoStandbySlots,
    /// A named slot is missing or unusable.
    StandbySlotUnusable,
    /// The named standbys' feedback does not protect the slot's catalog rows
    /// (hot_standby_feedback off, or the copy is not made yet).
    CatalogXminNotCovered,
}

impl PrimaryNotSafe {
    pub(crate) fn text(self) -> &'static str {
        match self {
            PrimaryNotSafe::NoStandbySlots => {
                "logical_ext.standby_slot_names is empty: changes can reach subscribers before the standby"
            }
            PrimaryNotSafe::StandbySlotUnusable => {
                "a slot named in logical_ext.standby_slot_names is missing, logical or invalidated"
            }
            PrimaryNotSafe::CatalogXminNotCovered => {
                "the standby's physical slot holds no catalog_xmin covering this slot's (hot_standby_feedback off, or its copy not made yet)"
            }
        }
    }
}

/// The primary's side of readiness: the rule is in force and every named
/// standby's feedback covers the slot's catalog_xmin. (Whether the standby
/// finished its copy is known on the standby: `failover_readiness()`
/// there.)
pub(crate) fn primary_safety(standby: &[(StandbySlot, u32)], slot_catalog_xmin: u32) -> Result<(), PrimaryNotSafe> {
    if standby.is_empty() {
        return Err(PrimaryNotSafe::NoStandbySlots);
    }
    for &(s, catalog_xmin) in standby {
        if !matches!(s, StandbySlot::Flushed(_)) {
            return Err(PrimaryNotSafe::StandbySlotUnusable);
        }
        if slot_catalog_xmin != 0 && (catalog_xmin == 0 || xid_precedes(slot_catalog_xmin, catalog_xmin)) {
            return Err(PrimaryNotSafe::CatalogXminNotCovered);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_only_up_to_the_slowest_standby() {
        assert_eq!(gate(&[], 100), Gate::Open);
        assert_eq!(gate(&[StandbySlot::Flushed(200)], 100), Gate::Upto(200));
        assert_eq!(
            gate(&[StandbySlot::Flushed(200), StandbySlot::Flushed(50)], 100),
            Gate::Wait { upto: 50, culprit: 1 }
        );
        assert_eq!(gate(&[StandbySlot::Flushed(200), StandbySlot::Missing], 100), Gate::Wait { upto: 0, culprit: 1 });
        assert_eq!(gate(&[StandbySlot::Unusable], 1), Gate::Wait { upto: 0, culprit: 0 });
        assert_eq!(gate(&[StandbySlot::Flushed(100)], 100), Gate::Upto(100));
    }

    #[test]
    fn xids_compare_modulo_2_32() {
        assert!(xid_precedes(5, 6));
        assert!(!xid_precedes(6, 5));
        assert!(xid_precedes(u32::MAX - 2, 10));
    }

    fn remote(r: u64, c: u64, x: u32) -> Remote {
        Remote { restart_lsn: r, confirmed_flush: c, catalog_xmin: x }
    }

    #[test]
    fn a_first_sync_waits_until_the_primary_passes_the_local_reservation() {
        let local = Local { restart_lsn: 1000, confirmed_flush: 0, catalog_xmin: 700, persistent: false };
        assert_eq!(sync_step(remote(900, 1200, 800), local, 5000, true), Step::Hold(NotSafe::FirstSyncRestartAhead));
        assert_eq!(
            sync_step(remote(1100, 1200, 600), local, 5000, true),
            Step::Hold(NotSafe::FirstSyncCatalogXminAhead)
        );
        assert_eq!(sync_step(remote(1100, 1200, 700), local, 5000, false), Step::Hold(NotSafe::SnapshotNotCopied));
        assert_eq!(
            sync_step(remote(1100, 1200, 700), local, 5000, true),
            Step::Advance { restart_lsn: 1100, confirmed_flush: 1200, catalog_xmin: 700 }
        );
    }

    #[test]
    fn confirmed_is_capped_at_what_the_standby_received_and_never_goes_back() {
        let local = Local { restart_lsn: 1000, confirmed_flush: 1500, catalog_xmin: 700, persistent: true };
        assert_eq!(
            sync_step(remote(1000, 3000, 700), local, 2000, true),
            Step::Advance { restart_lsn: 1000, confirmed_flush: 2000, catalog_xmin: 700 }
        );
        assert_eq!(
            sync_step(remote(1000, 1200, 700), local, 2000, true),
            Step::Advance { restart_lsn: 1000, confirmed_flush: 1500, catalog_xmin: 700 }
        );
        assert_eq!(sync_step(remote(2500, 3000, 700), local, 2000, true), Step::Hold(NotSafe::NotReceived));
    }

    #[test]
    fn a_slot_in_first_sync_is_not_safe() {
        let first = Local { restart_lsn: 1, confirmed_flush: 1, catalog_xmin: 1, persistent: false };
        assert_eq!(
            standby_safety(Some(first), None, Some(NotSafe::FirstSyncCatalogXminAhead), 10, true),
            Err(NotSafe::FirstSyncCatalogXminAhead)
        );
        assert_eq!(standby_safety(None, None, None, 10, true), Err(NotSafe::NoCopy));
        let done = Local { persistent: true, ..first };
        assert_eq!(standby_safety(Some(done), Some(remote(1, 5, 1)), None, 10, true), Ok(()));
        assert_eq!(standby_safety(Some(done), Some(remote(1, 50, 1)), None, 10, true), Err(NotSafe::NotReceived));
        assert_eq!(standby_safety(Some(done), None, None, 10, false), Err(NotSafe::Stale));
    }

    #[test]
    fn the_primary_needs_the_rule_and_covering_feedback() {
        assert_eq!(primary_safety(&[], 5), Err(PrimaryNotSafe::NoStandbySlots));
        assert_eq!(primary_safety(&[(StandbySlot::Missing, 0)], 5), Err(PrimaryNotSafe::StandbySlotUnusable));
        assert_eq!(primary_safety(&[(StandbySlot::Flushed(9), 0)], 5), Err(PrimaryNotSafe::CatalogXminNotCovered));
        assert_eq!(primary_safety(&[(StandbySlot::Flushed(9), 6)], 5), Err(PrimaryNotSafe::CatalogXminNotCovered));
        assert_eq!(primary_safety(&[(StandbySlot::Flushed(9), 5)], 5), Ok(()));
    }
}

/// `X/Y` (pg_lsn's text) as a number.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod lsn_tests {
    #[test]
    fn lsns_parse() {
        assert_eq!(super::parse_lsn("1/2A"), Some((1 << 32) | 0x2a));
        assert_eq!(super::parse_lsn("x"), None);
    }
}
