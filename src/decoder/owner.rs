//! Slot ownership fencing on the publisher: which subscriber node a
//! `logical_ext` slot belongs to (issue 16; docs/FAILOVER.md "Slot
//! ownership").
//!
//! Design notes
//! - The apply worker names itself in START_REPLICATION's plugin options:
//!   `"owner" '<system identifier>/<timeline>/<database oid>/<subscription
//!   id>'` of the subscriber, plus `"takeover" 'on'` once after an explicit
//!   `takeover_slot()`/`adopt_subscription()` there. A promoted physical
//!   standby, a PITR restore or a different subscriber differs in at least
//!   one part (a promotion or a restore moves the timeline).
//! - The claim is checked and recorded by the plugin's startup callback
//!   itself, so a client that skips any separate "claim" step is refused
//!   just the same. It is kept in a file beside the slot's own state,
//!   `pg_replslot/<slot>/logical_ext_owner`: the slot is acquired while the
//!   callback runs (no two sessions read-modify-write it at once), the file
//!   is dropped with the slot's directory, and it needs no table, so no
//!   catalog read under the decoding snapshot and no extension in the
//!   slot's database. Written to a temporary file, fsynced, renamed.
//!   (pg_basebackup does not copy pg_replslot/, and a physical standby has
//!   no logical slots on PostgreSQL 15.)
//! - A client without `owner` (pg_recvlogical, other consumers, SQL
//!   decoding functions) is not checked and changes nothing. Slot creation
//!   (`is_init`) and fast-forwarding pass no options.
//! - Who may claim or take over: whoever may decode the slot at all — a
//!   superuser or a role with REPLICATION (PostgreSQL's own check before any
//!   plugin code runs). Such a role can already consume and advance any
//!   slot, so the claim gives it nothing new; an unprivileged login cannot
//!   reach this code. The fence protects against accidents (a clone
//!   competing for the original's slot), not against a hostile replication
//!   role (docs/SECURITY.md).

use std::io::Write;

/// A subscriber's identity as sent in the `owner` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotOwner {
    pub(crate) system_identifier: u64,
    pub(crate) timeline: u32,
    pub(crate) database: u32,
    pub(crate) subscription: i64,
}

impl SlotOwner {
    /// `<sysid>/<tli>/<dboid>/<subid>`, all decimal.
    pub(crate) fn parse(s: &str) -> Result<SlotOwner, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let num = |i: usize| -> Option<u64> {
            let p = parts.get(i)?;
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
        };
        match (parts.len(), num(0), num(1), num(2), num(3)) {
            (4, Some(sysid), Some(tli), Some(db), Some(sub)) => Ok(SlotOwner {
                system_identifier: sysid,
                timeline: u32::try_from(tli).map_err(|_| "timeline out of range".to_string())?,
                database: u32::try_from(db).map_err(|_| "database oid out of range".to_string())?,
                subscription: i64::try_from(sub).map_err(|_| "subscription id out of range".to_string())?,
            }),
            _ => Err("expected <system identifier>/<timeline>/<database oid>/<subscription id>".into()),
        }
    }
}

impl std::fmt::Display for SlotOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.system_identifier, self.timeline, self.database, self.subscription)
    }
}

/// What the startup callback does with a client's `owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The slot had no owner: record this one.
    First,
    /// The slot is this client's already.
    Same,
    /// Explicit takeover from `from`: record the client.
    TakeOver { from: SlotOwner },
    /// The slot belongs to `holder`: refuse.
    Refuse { holder: SlotOwner },
}

/// Decide on the recorded owner (`None`: none, or unreadable), the client's
/// identity and whether it asked to take the slot over.
pub(crate) fn decide(recorded: Option<SlotOwner>, asked: SlotOwner, takeover: bool) -> Claim {
    match recorded {
        None => Claim::First,
        Some(r) if r == asked => Claim::Same,
        Some(from) if takeover => Claim::TakeOver { from },
        Some(holder) => Claim::Refuse { holder },
    }
}

/// The refusal's message and HINT (SQLSTATE 55000).
pub(crate) fn refusal(slot: &str, holder: SlotOwner, asked: SlotOwner) -> (String, String) {
    let what = if holder.system_identifier == asked.system_identifier
        && holder.database == asked.database
        && holder.subscription == asked.subscription
    {
        "another copy of this subscriber (same system, another timeline: a promoted standby or a restore of it)"
    } else {
        "another subscriber"
    };
    (
        format!(
            "logical_ext: replication slot \"{slot}\" belongs to subscriber {holder}, not to {asked}: it is used by \
             {what}"
        ),
        "Two subscribers must not share a slot. If the owner is gone for good (a failover), run \
         SELECT logical_ext.takeover_slot('<subscription>') on the subscriber that is to own it \
         (adopt_subscription() on a promoted one); otherwise give this subscription a slot of its own."
            .into(),
    )
}

/// The claim file of `slot` (relative to the data directory).
fn path(slot: &str) -> String {
    format!("pg_replslot/{slot}/logical_ext_owner")
}

/// The recorded owner of `slot`, if any (an unreadable or malformed file
/// counts as none: the next claim rewrites it).
pub(crate) fn recorded(slot: &str) -> Option<SlotOwner> {
    let text = std::fs::read_to_string(path(slot)).ok()?;
    SlotOwner::parse(text.lines().next()?).ok()
}

/// Record `owner` for `slot`, durably (temporary file, fsync, rename, fsync
/// of the directory).
pub(crate) fn record(slot: &str, owner: SlotOwner) -> std::io::Result<()> {
    let dir = format!("pg_replslot/{slot}");
    let tmp = format!("{dir}/logical_ext_owner.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{owner}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(slot))?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Check `owner` against `slot`'s recorded owner and record a first claim
/// or a takeover; a refusal is an ERROR (SQLSTATE 55000) with a HINT.
pub(crate) fn enforce(slot: &str, owner: SlotOwner, takeover: bool) {
    use pgrx::pg_sys::panic::ErrorReport;
    use pgrx::prelude::*;
    let claim = decide(recorded(slot), owner, takeover);
    match claim {
        Claim::Same => return,
        Claim::Refuse { holder } => {
            let (message, hint) = refusal(slot, holder, owner);
            ErrorReport::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, function_name!())
                .set_hint(hint)
                .report(PgLogLevel::ERROR);
            return;
        }
        Claim::First | Claim::TakeOver { .. } => {}
    }
    if let Err(e) = record(slot, owner) {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("logical_ext: could not record the owner of replication slot \"{slot}\": {e}"),
            function_name!(),
        )
        .report(PgLogLevel::ERROR);
    }
    if let Claim::TakeOver { from } = claim {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("logical_ext: replication slot \"{slot}\" taken over by subscriber {owner} from {from}"),
            function_name!(),
        )
        .report(PgLogLevel::LOG);
    }
}

#[cfg(test)]
mod tests {
    use super::{Claim, SlotOwner, decide, refusal};

    fn o(tli: u32, sub: i64) -> SlotOwner {
        SlotOwner { system_identifier: 7300000000000000001, timeline: tli, database: 5, subscription: sub }
    }

    #[test]
    fn the_identity_round_trips_and_is_strict() {
        let s = "7300000000000000001/2/5/1";
        assert_eq!(SlotOwner::parse(s).unwrap(), o(2, 1));
        assert_eq!(o(2, 1).to_string(), s);
        for bad in ["", "1/2/3", "1/2/3/4/5", "a/2/3/4", "1/-2/3/4", "1//3/4", "1/4294967296/3/4", "1/2/3/ 4"] {
            assert!(SlotOwner::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn the_first_owner_claims_and_keeps_the_slot() {
        assert_eq!(decide(None, o(1, 1), false), Claim::First);
        assert_eq!(decide(Some(o(1, 1)), o(1, 1), false), Claim::Same);
        assert_eq!(decide(Some(o(1, 1)), o(1, 1), true), Claim::Same, "a repeated takeover is harmless");
    }

    #[test]
    fn another_owner_is_refused_until_it_takes_over() {
        assert_eq!(decide(Some(o(1, 1)), o(2, 1), false), Claim::Refuse { holder: o(1, 1) }, "a promoted copy");
        assert_eq!(decide(Some(o(1, 1)), o(1, 2), false), Claim::Refuse { holder: o(1, 1) }, "another subscriber");
        assert_eq!(decide(Some(o(1, 1)), o(2, 1), true), Claim::TakeOver { from: o(1, 1) });
    }

    #[test]
    fn the_refusal_says_who_and_the_way_out() {
        let (m, hint) = refusal("s", o(1, 1), o(2, 1));
        assert!(m.contains("another copy of this subscriber") && m.contains(&o(1, 1).to_string()), "{m}");
        assert!(refusal("s", o(1, 1), o(1, 2)).0.contains("another subscriber"));
        assert!(hint.contains("takeover_slot") && hint.contains("adopt_subscription"), "{hint}");
    }
}
