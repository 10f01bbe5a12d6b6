//! Which slots `drop_stale_slots()` may consider at all, before it asks how
//! long they have been inactive (`health::drop_verdict`). Pure and
//! unit-tested.
//!
//! Design notes
//! - Conservative by default: only logical slots; never the slots of
//!   subscriptions, which their own machinery creates and drops and which
//!   are idle on purpose at times (the walsender releases a slot right after
//!   creating it, a table copy can take hours): every slot of the
//!   `logical_ext` output plugin (a logical_ext subscription's slot carries
//!   the subscription's own name, so the plugin is what the publisher can
//!   recognise), logical_ext's table-copy slots (`le_<subid>_<relid>_sync_<sysid>`)
//!   and PostgreSQL's tablesync slots (`pg_<subid>_sync_<relid>_<sysid>`).
//!   `include_subscription_slots => true` lifts that exclusion; physical slots
//!   (standbys, which are idle on purpose while the standby is down) need
//!   `slot_types => ARRAY['physical']` (or both types).
//! - Name patterns are SQL `LIKE` patterns (`%`, `_`, `\` escapes): a slot
//!   is a candidate when it matches one of `include_names` (default `%`:
//!   every name) and none of `exclude_names` (e.g. Patroni's permanent
//!   slots). The function is STRICT: a NULL argument returns no rows.
//! - `min_retained_bytes`: only slots that keep at least that much WAL.
//! - The bound itself has a floor ([`min_inactive_for_us`]): ten seconds,
//!   and at least five sampling intervals, so that a slot is never judged
//!   on fewer than five rounds.

/// The floor of `inactive_for`.
pub(crate) const MIN_INACTIVE_FOR_US: i64 = 10 * 1_000_000;
/// `inactive_for` spans at least this many sampling intervals.
pub(crate) const MIN_INACTIVE_ROUNDS: i64 = 5;

/// The `slot_types` argument: which slot types are candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotTypeFilter {
    pub(crate) logical: bool,
    pub(crate) physical: bool,
}

impl SlotTypeFilter {
    pub(crate) const LOGICAL: SlotTypeFilter = SlotTypeFilter { logical: true, physical: false };

    /// From `'logical'`/`'physical'` names; `Err` names the first unknown one.
    pub(crate) fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<SlotTypeFilter, String> {
        let mut f = SlotTypeFilter { logical: false, physical: false };
        for n in names {
            match n {
                "logical" => f.logical = true,
                "physical" => f.physical = true,
                other => return Err(other.to_string()),
            }
        }
        Ok(f)
    }

    fn admits(self, slot_type: &str) -> bool {
        match slot_type {
            "logical" => self.logical,
            "physical" => self.physical,
            _ => false,
        }
    }
}

/// The conditions of one `drop_stale_slots()` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) slot_type: SlotTypeFilter,
    pub(crate) include_names: Vec<String>,
    pub(crate) exclude_names: Vec<String>,
    pub(crate) min_retained_bytes: i64,
    pub(crate) include_subscription_slots: bool,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            slot_type: SlotTypeFilter::LOGICAL,
            include_names: vec!["%".to_string()],
            exclude_names: Vec::new(),
            min_retained_bytes: 0,
            include_subscription_slots: false,
        }
    }
}

/// Why a slot is not a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Excluded {
    SlotType,
    SubscriptionSlot,
    NotIncluded,
    MatchesExclude,
    RetainsLess,
}

/// The facts about a slot the filter looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotFacts<'a> {
    pub(crate) name: &'a str,
    pub(crate) slot_type: &'a str,
    pub(crate) plugin: Option<&'a str>,
    pub(crate) retained_bytes: Option<i64>,
}

/// Whether a slot belongs to a subscription (logical_ext's or native).
pub(crate) fn is_subscription_slot(name: &str, plugin: Option<&str>) -> bool {
    plugin == Some("logical_ext") || like(r"le\_%\_sync\_%", name) || like(r"pg\_%\_sync\_%", name)
}

/// `None` when the slot is a candidate.
pub(crate) fn excluded(f: &Filter, s: SlotFacts<'_>) -> Option<Excluded> {
    if !f.slot_type.admits(s.slot_type) {
        return Some(Excluded::SlotType);
    }
    if !f.include_subscription_slots && s.slot_type == "logical" && is_subscription_slot(s.name, s.plugin) {
        return Some(Excluded::SubscriptionSlot);
    }
    if !f.include_names.iter().any(|p| like(p, s.name)) {
        return Some(Excluded::NotIncluded);
    }
    if f.exclude_names.iter().any(|p| like(p, s.name)) {
        return Some(Excluded::MatchesExclude);
    }
    if s.retained_bytes.unwrap_or(0) < f.min_retained_bytes {
        return Some(Excluded::RetainsLess);
    }
    None
}

/// The smallest `inactive_for` accepted, given the sampling interval.
pub(crate) fn min_inactive_for_us(interval_us: Option<i64>) -> i64 {
    MIN_INACTIVE_FOR_US.max(interval_us.unwrap_or(0).saturating_mul(MIN_INACTIVE_ROUNDS))
}

/// SQL `LIKE` with the default escape `\`: `%` any run, `_` one character.
pub(crate) fn like(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Lit(it.next().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // reach[j]: the tokens so far can match text[..j].
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for t in toks {
        let mut next = vec![false; text.len() + 1];
        match t {
            Tok::Any => {
                let mut on = false;
                for j in 0..=text.len() {
                    on |= reach[j];
                    next[j] = on;
                }
            }
            Tok::One => next[1..].copy_from_slice(&reach[..text.len()]),
            Tok::Lit(c) => {
                for j in 0..text.len() {
                    next[j + 1] = reach[j] && text[j] == c;
                }
            }
        }
        reach = next;
    }
    reach[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot<'a>(name: &'a str, slot_type: &'a str, plugin: Option<&'a str>, retained: i64) -> SlotFacts<'a> {
        SlotFacts { name, slot_type, plugin, retained_bytes: Some(retained) }
    }

    #[test]
    fn like_patterns() {
        assert!(like("abc", "abc"));
        assert!(!like("abc", "abcd"));
        assert!(like("a%", "a"));
        assert!(like("a%", "abcd"));
        assert!(like("%b%", "abc"));
        assert!(!like("%x%", "abc"));
        assert!(like("a_c", "abc"));
        assert!(!like("a_c", "ac"));
        assert!(like(r"a\_c", "a_c"));
        assert!(!like(r"a\_c", "abc"));
        assert!(like(r"100\%", "100%"));
        assert!(like("%", ""));
        assert!(!like("_", ""));
        assert!(like("pat%ni%", "patroni_permanent"));
    }

    #[test]
    fn defaults_keep_physical_and_subscription_slots() {
        let f = Filter::default();
        assert_eq!(excluded(&f, slot("consumer", "logical", Some("test_decoding"), 0)), None);
        assert_eq!(excluded(&f, slot("standby", "physical", None, 0)), Some(Excluded::SlotType));
        assert_eq!(excluded(&f, slot("mysub", "logical", Some("logical_ext"), 0)), Some(Excluded::SubscriptionSlot));
        assert_eq!(
            excluded(&f, slot("le_3_16384_sync_7312", "logical", Some("x"), 0)),
            Some(Excluded::SubscriptionSlot)
        );
        assert_eq!(
            excluded(&f, slot("pg_16390_sync_16385_7312", "logical", Some("pgoutput"), 0)),
            Some(Excluded::SubscriptionSlot)
        );
        // A native subscription's own slot is named by the user: a candidate.
        assert_eq!(excluded(&f, slot("sub", "logical", Some("pgoutput"), 0)), None);
        assert_eq!(excluded(&f, slot("pgsync", "logical", Some("pgoutput"), 0)), None);

        let all = Filter {
            slot_type: SlotTypeFilter { logical: true, physical: true },
            include_subscription_slots: true,
            ..Filter::default()
        };
        assert_eq!(excluded(&all, slot("standby", "physical", None, 0)), None);
        assert_eq!(excluded(&all, slot("mysub", "logical", Some("logical_ext"), 0)), None);
        let phys = Filter { slot_type: SlotTypeFilter { logical: false, physical: true }, ..Filter::default() };
        assert_eq!(excluded(&phys, slot("standby", "physical", None, 0)), None);
        assert_eq!(excluded(&phys, slot("c", "logical", Some("test_decoding"), 0)), Some(Excluded::SlotType));
    }

    #[test]
    fn names_and_retained_wal() {
        let f = Filter {
            include_names: vec!["etl\\_%".to_string(), "tmp%".to_string()],
            exclude_names: vec!["%keep%".to_string()],
            min_retained_bytes: 1000,
            ..Filter::default()
        };
        let td = Some("test_decoding");
        assert_eq!(excluded(&f, slot("etl_a", "logical", td, 5000)), None);
        assert_eq!(excluded(&f, slot("tmp1", "logical", td, 1000)), None);
        assert_eq!(excluded(&f, slot("other", "logical", td, 5000)), Some(Excluded::NotIncluded));
        assert_eq!(excluded(&f, slot("etl_keep", "logical", td, 5000)), Some(Excluded::MatchesExclude));
        assert_eq!(excluded(&f, slot("etl_b", "logical", td, 999)), Some(Excluded::RetainsLess));
        let lost = SlotFacts { retained_bytes: None, ..slot("tmp2", "logical", td, 0) };
        assert_eq!(excluded(&f, lost), Some(Excluded::RetainsLess));
    }

    #[test]
    fn the_bound_has_a_floor_of_ten_seconds_and_five_rounds() {
        assert_eq!(min_inactive_for_us(None), 10_000_000);
        assert_eq!(min_inactive_for_us(Some(200_000)), 10_000_000);
        assert_eq!(min_inactive_for_us(Some(10_000_000)), 50_000_000);
        assert_eq!(SlotTypeFilter::parse(["logical"]), Ok(SlotTypeFilter::LOGICAL));
        assert_eq!(
            SlotTypeFilter::parse(["physical", "logical"]),
            Ok(SlotTypeFilter { logical: true, physical: true })
        );
        assert_eq!(SlotTypeFilter::parse(["logical", "Logical"]), Err("Logical".to_string()));
    }
}
