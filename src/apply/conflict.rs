//! Conflicts as data (names as PostgreSQL 18 uses them), the resolutions a
//! user can choose, which resolution applies to a change, and what it
//! decides. Pure and unit-tested; `worker.rs` detects conflicts and carries
//! out the [`Action`], `resolver.rs` loads the rules and writes the log.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConflictType {
    InsertExists,
    UpdateExists,
    UpdateMissing,
    DeleteMissing,
    UpdateOriginDiffers,
    DeleteOriginDiffers,
}

impl ConflictType {
    pub(crate) const ALL: [ConflictType; 6] = [
        ConflictType::InsertExists,
        ConflictType::UpdateExists,
        ConflictType::UpdateMissing,
        ConflictType::DeleteMissing,
        ConflictType::UpdateOriginDiffers,
        ConflictType::DeleteOriginDiffers,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConflictType::InsertExists => "insert_exists",
            ConflictType::UpdateExists => "update_exists",
            ConflictType::UpdateMissing => "update_missing",
            ConflictType::DeleteMissing => "delete_missing",
            ConflictType::UpdateOriginDiffers => "update_origin_differs",
            ConflictType::DeleteOriginDiffers => "delete_origin_differs",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<ConflictType, String> {
        ConflictType::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ConflictType::ALL.iter().map(|c| c.as_str()).collect();
            format!("unknown conflict type \"{s}\" (valid: {})", names.join(", "))
        })
    }

    /// Position in the per-type counters.
    pub(crate) fn index(self) -> usize {
        ConflictType::ALL.iter().position(|c| *c == self).expect("listed")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    Error,
    ApplyRemote,
    KeepLocal,
    Skip,
    LastUpdateWins,
    FirstUpdateWins,
}

impl Resolution {
    pub(crate) const ALL: [Resolution; 6] = [
        Resolution::Error,
        Resolution::ApplyRemote,
        Resolution::KeepLocal,
        Resolution::Skip,
        Resolution::LastUpdateWins,
        Resolution::FirstUpdateWins,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Resolution::Error => "error",
            Resolution::ApplyRemote => "apply_remote",
            Resolution::KeepLocal => "keep_local",
            Resolution::Skip => "skip",
            Resolution::LastUpdateWins => "last_update_wins",
            Resolution::FirstUpdateWins => "first_update_wins",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Resolution, String> {
        Resolution::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Resolution::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown resolution \"{s}\" (valid: {})", names.join(", "))
        })
    }
}

/// Whether `r` makes sense for `c`: with no local row (missing) there is
/// nothing to compare timestamps with, and a missing row cannot be deleted.
pub(crate) fn allowed(c: ConflictType, r: Resolution) -> bool {
    use ConflictType::*;
    use Resolution::*;
    match c {
        UpdateMissing => matches!(r, Error | ApplyRemote | KeepLocal | Skip),
        DeleteMissing => matches!(r, Error | KeepLocal | Skip),
        InsertExists | UpdateExists | UpdateOriginDiffers | DeleteOriginDiffers => true,
    }
}

/// One configured rule; `None` matches every relation / conflict type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) relation: Option<u32>,
    pub(crate) conflict: Option<ConflictType>,
    pub(crate) resolution: Resolution,
}

/// The resolution when no rule applies: what native logical replication
/// does (and PostgreSQL 18 logs) — a constraint violation stops the apply
/// (`error`), a missing row is skipped, and a row last written by someone
/// else is overwritten. Every detected conflict is logged either way.
pub(crate) fn builtin_default(c: ConflictType) -> Resolution {
    match c {
        ConflictType::InsertExists | ConflictType::UpdateExists => Resolution::Error,
        ConflictType::UpdateMissing | ConflictType::DeleteMissing => Resolution::Skip,
        ConflictType::UpdateOriginDiffers | ConflictType::DeleteOriginDiffers => Resolution::ApplyRemote,
    }
}

/// The resolution for `c` on relation `relid`: the most specific rule wins
/// (table and type, then table, then type, then the subscription default);
/// with no rule, [`builtin_default`].
pub(crate) fn effective(rules: &[Rule], relid: u32, c: ConflictType) -> Resolution {
    let rank = |r: &Rule| match (r.relation, r.conflict) {
        (Some(rel), Some(t)) if rel == relid && t == c => Some(4),
        (Some(rel), None) if rel == relid => Some(3),
        (None, Some(t)) if t == c => Some(2),
        (None, None) => Some(1),
        _ => None,
    };
    rules
        .iter()
        .filter_map(|r| rank(r).map(|k| (k, r.resolution)))
        .filter(|(_, res)| allowed(c, *res))
        .max_by_key(|(k, _)| *k)
        .map_or(builtin_default(c), |(_, res)| res)
}

/// Who last wrote a row, for timestamp-based resolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Writer {
    /// Commit timestamp (µs since 2000-01-01).
    pub(crate) commit_ts: i64,
    /// A node identity that orders equally on every node (the system
    /// identifier of the node where the write was made).
    pub(crate) node: u64,
}

/// What to do with the remote change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Apply it (for insert_exists: update the existing row; for
    /// update_missing: insert the new row).
    ApplyRemote,
    /// Leave the local state, drop this change, go on with the transaction.
    Skip,
    /// Fail the transaction (retried with backoff).
    Fail,
}

/// Decide a conflict. `local` is the local row's writer (None when unknown:
/// no commit timestamp recorded); timestamp resolutions without it fall back
/// to keeping the local row, the safe choice.
pub(crate) fn decide(res: Resolution, remote: Writer, local: Option<Writer>) -> Action {
    let remote_newer = |l: Writer| match remote.commit_ts.cmp(&l.commit_ts) {
        Ordering::Greater => true,
        Ordering::Less => false,
        // Same microsecond: the larger node identity wins, everywhere alike.
        Ordering::Equal => remote.node > l.node,
    };
    match res {
        Resolution::Error => Action::Fail,
        Resolution::ApplyRemote => Action::ApplyRemote,
        Resolution::KeepLocal | Resolution::Skip => Action::Skip,
        Resolution::LastUpdateWins => match local {
            Some(l) if remote_newer(l) => Action::ApplyRemote,
            _ => Action::Skip,
        },
        Resolution::FirstUpdateWins => match local {
            Some(l) if !remote_newer(l) => Action::ApplyRemote,
            _ => Action::Skip,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ConflictType::ALL {
            assert_eq!(ConflictType::parse(c.as_str()).unwrap(), c);
        }
        for r in Resolution::ALL {
            assert_eq!(Resolution::parse(r.as_str()).unwrap(), r);
        }
        assert!(ConflictType::parse("insert_conflict").unwrap_err().contains("insert_exists"));
        assert!(Resolution::parse("newest").is_err());
    }

    #[test]
    fn nonsense_resolutions_are_refused() {
        assert!(!allowed(ConflictType::DeleteMissing, Resolution::ApplyRemote));
        assert!(!allowed(ConflictType::UpdateMissing, Resolution::LastUpdateWins));
        assert!(!allowed(ConflictType::DeleteMissing, Resolution::FirstUpdateWins));
        assert!(allowed(ConflictType::UpdateMissing, Resolution::ApplyRemote));
        assert!(allowed(ConflictType::InsertExists, Resolution::LastUpdateWins));
    }

    #[test]
    fn most_specific_rule_wins() {
        let rules = vec![
            Rule { relation: None, conflict: None, resolution: Resolution::Skip },
            Rule { relation: None, conflict: Some(ConflictType::InsertExists), resolution: Resolution::ApplyRemote },
            Rule { relation: Some(7), conflict: None, resolution: Resolution::KeepLocal },
            Rule {
                relation: Some(7),
                conflict: Some(ConflictType::InsertExists),
                resolution: Resolution::LastUpdateWins,
            },
        ];
        assert_eq!(effective(&rules, 7, ConflictType::InsertExists), Resolution::LastUpdateWins);
        assert_eq!(effective(&rules, 7, ConflictType::UpdateMissing), Resolution::KeepLocal);
        assert_eq!(effective(&rules, 8, ConflictType::InsertExists), Resolution::ApplyRemote);
        assert_eq!(effective(&rules, 8, ConflictType::DeleteMissing), Resolution::Skip);
        assert_eq!(effective(&[], 8, ConflictType::InsertExists), Resolution::Error);
        assert_eq!(effective(&[], 8, ConflictType::DeleteMissing), Resolution::Skip);
        assert_eq!(effective(&[], 8, ConflictType::UpdateOriginDiffers), Resolution::ApplyRemote);
        // A subscription-wide last_update_wins does not apply to missing rows.
        let lww = vec![Rule { relation: None, conflict: None, resolution: Resolution::LastUpdateWins }];
        assert_eq!(effective(&lww, 1, ConflictType::UpdateMissing), Resolution::Skip);
        // A subscription-wide `error` does.
        let err = vec![Rule { relation: None, conflict: None, resolution: Resolution::Error }];
        assert_eq!(effective(&err, 1, ConflictType::DeleteMissing), Resolution::Error);
    }

    #[test]
    fn timestamp_resolutions_are_deterministic() {
        let w = |ts, node| Writer { commit_ts: ts, node };
        assert_eq!(decide(Resolution::LastUpdateWins, w(10, 1), Some(w(5, 2))), Action::ApplyRemote);
        assert_eq!(decide(Resolution::LastUpdateWins, w(5, 1), Some(w(10, 2))), Action::Skip);
        assert_eq!(decide(Resolution::FirstUpdateWins, w(5, 1), Some(w(10, 2))), Action::ApplyRemote);
        // A tie goes to the larger node on both nodes: A applies B's write,
        // B keeps its own.
        assert_eq!(decide(Resolution::LastUpdateWins, w(5, 2), Some(w(5, 1))), Action::ApplyRemote);
        assert_eq!(decide(Resolution::LastUpdateWins, w(5, 1), Some(w(5, 2))), Action::Skip);
        assert_eq!(decide(Resolution::LastUpdateWins, w(5, 1), None), Action::Skip);
        assert_eq!(decide(Resolution::Error, w(5, 1), None), Action::Fail);
        assert_eq!(decide(Resolution::ApplyRemote, w(5, 1), None), Action::ApplyRemote);
    }
}
