//! The sampler's bounded history, as plain data: one [`SlotHistory`] per
//! replication slot (a ring of the last [`HISTORY_LEN`] samples and the
//! slot's activity state). These types live in shared memory (`shmem.rs`
//! places an array of them there), so they are `repr(C)`, `Copy` and hold no
//! pointers; everything here is pure and unit-tested.
//!
//! Activity (what `drop_stale_slots()` relies on, so every rule errs towards
//! "in use"):
//! - A slot is *used* in a round when it is active then, or when its
//!   `restart_lsn` or `confirmed_flush_lsn` moved since the previous round: a
//!   consumer that reads between two samples (SQL polling with
//!   `pg_logical_slot_get_changes()`, a cron'd `pg_recvlogical`, a reconnect
//!   loop) moves them. A position that becomes invalid (0) is the server
//!   invalidating the slot, not a consumer, and does not count.
//! - A slot re-created under the same name is a new slot: its identity (type,
//!   database, output plugin, a hash kept in the entry) changed, or a position
//!   went backwards (positions of one slot only move forward; a new slot
//!   starts at the current WAL position, so in practice the re-created slot
//!   also shows as moved). Its history starts afresh.
//! - A gap in sampling resets what is known: the sampler's first round after
//!   it (re)started, a round later than twice the interval (plus a second of
//!   slack) after the slot's previous sample, or a changed interval. The
//!   slot then counts as inactive only since that round (`saw_start` false:
//!   "at least").

use super::health::{Positions, TrackedActivity};

/// Samples kept per slot: 20 minutes at the default 10 s interval.
pub(crate) const HISTORY_LEN: usize = 120;
/// `NAMEDATALEN`: slot names are at most 63 bytes.
pub(crate) const NAME_LEN: usize = 64;
/// Slack on top of two intervals before a late round counts as a gap.
pub(crate) const GAP_SLACK_US: i64 = 1_000_000;

/// One observation of one slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// `TimestampTz` of the observation.
    pub(crate) at: i64,
    /// The server's WAL write position then.
    pub(crate) wal_lsn: u64,
    /// The slot's `restart_lsn` (0 = invalid: never reserved, or lost).
    pub(crate) restart_lsn: u64,
    /// The slot's `confirmed_flush_lsn` (0 for physical slots).
    pub(crate) confirmed_flush: u64,
    pub(crate) active: bool,
}

impl Sample {
    /// Bytes of WAL the slot held back, when it held any.
    pub(crate) fn retained(&self) -> Option<i64> {
        (self.restart_lsn != 0).then(|| self.wal_lsn.saturating_sub(self.restart_lsn) as i64)
    }

    fn positions(&self) -> Positions {
        Positions { restart_lsn: self.restart_lsn, confirmed_flush: self.confirmed_flush }
    }
}

/// What the sampler learns about a slot in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) name: String,
    /// Hash of what a slot keeps for life: type, database, output plugin.
    pub(crate) identity: u64,
    pub(crate) active: bool,
    pub(crate) restart_lsn: u64,
    pub(crate) confirmed_flush: u64,
}

/// FNV-1a over the parts of a slot that never change while it exists.
pub(crate) fn identity(logical: bool, database: u32, plugin: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(u8::from(logical));
    database.to_le_bytes().into_iter().for_each(&mut eat);
    plugin.bytes().for_each(&mut eat);
    h
}

/// The facts of one sampling round that are the same for every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) at: i64,
    pub(crate) wal_lsn: u64,
    /// The interval in force, in microseconds.
    pub(crate) interval_us: i64,
    /// The first round of this sampler process (a restart is a gap).
    pub(crate) fresh_start: bool,
    /// The sampler's very first round since the server started: its slots
    /// may have been inactive for long already.
    pub(crate) first_round: bool,
}

/// The history of one slot (or a free entry when `!in_use`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotHistory {
    pub(crate) in_use: bool,
    name_len: u8,
    name: [u8; NAME_LEN],
    /// Saw the slot used, or saw it appear, since the last gap.
    saw_start: bool,
    active_in_last_sample: bool,
    has_inactive_since: bool,
    inactive_since: i64,
    identity: u64,
    /// The interval the activity state was built under (µs).
    interval_us: i64,
    /// Index the next sample goes to.
    next: u32,
    /// Samples held (at most HISTORY_LEN).
    len: u32,
    samples: [Sample; HISTORY_LEN],
}

impl SlotHistory {
    pub(crate) const EMPTY: SlotHistory = SlotHistory {
        in_use: false,
        name_len: 0,
        name: [0; NAME_LEN],
        saw_start: false,
        active_in_last_sample: false,
        has_inactive_since: false,
        inactive_since: 0,
        identity: 0,
        interval_us: 0,
        next: 0,
        len: 0,
        samples: [Sample { at: 0, wal_lsn: 0, restart_lsn: 0, confirmed_flush: 0, active: false }; HISTORY_LEN],
    };

    /// A new entry; `appeared` when the slot was created after the
    /// sampler's first round (so its inactivity started under observation).
    fn start(name: &str, identity: u64, appeared: bool) -> SlotHistory {
        let mut h = SlotHistory::EMPTY;
        h.saw_start = appeared;
        let bytes = &name.as_bytes()[..name.len().min(NAME_LEN - 1)];
        h.name[..bytes.len()].copy_from_slice(bytes);
        h.name_len = bytes.len() as u8;
        h.identity = identity;
        h.in_use = true;
        h
    }

    pub(crate) fn name(&self) -> &str {
        std::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("")
    }

    fn last(&self) -> Option<&Sample> {
        self.samples().last()
    }

    /// Whether `o` is another slot than the one this entry followed.
    fn is_other_slot(&self, o: &Observed) -> bool {
        if o.identity != self.identity {
            return true;
        }
        self.last().is_some_and(|p| {
            let back = |old: u64, new: u64| new != 0 && old != 0 && new < old;
            back(p.restart_lsn, o.restart_lsn) || back(p.confirmed_flush, o.confirmed_flush)
        })
    }

    /// Appends a sample (dropping the oldest when full) and updates the
    /// activity state. `gap`: what happened before this round is unknown.
    fn record(&mut self, s: Sample, gap: bool, interval_us: i64) {
        let moved = self.last().is_some_and(|p| {
            let moved = |old: u64, new: u64| new != 0 && new != old;
            moved(p.restart_lsn, s.restart_lsn) || moved(p.confirmed_flush, s.confirmed_flush)
        });
        self.samples[self.next as usize] = s;
        self.next = (self.next + 1) % HISTORY_LEN as u32;
        self.len = (self.len + 1).min(HISTORY_LEN as u32);
        self.interval_us = interval_us;
        if s.active || moved {
            self.saw_start = true;
        } else if gap {
            self.saw_start = false;
        }
        if s.active {
            self.has_inactive_since = false;
        } else if moved || gap || !self.has_inactive_since {
            // Used between the two rounds (or unknown): inactive since now
            // at the earliest we can vouch for.
            self.has_inactive_since = true;
            self.inactive_since = s.at;
        }
        self.active_in_last_sample = s.active;
    }

    /// The samples held, oldest first.
    pub(crate) fn samples(&self) -> impl DoubleEndedIterator<Item = &Sample> {
        let len = self.len as usize;
        let start = (self.next as usize + HISTORY_LEN - len) % HISTORY_LEN;
        (0..len).map(move |i| &self.samples[(start + i) % HISTORY_LEN])
    }

    pub(crate) fn activity(&self) -> TrackedActivity {
        TrackedActivity {
            active_in_last_sample: self.active_in_last_sample,
            inactive_since: self.has_inactive_since.then_some(self.inactive_since),
            saw_start: self.saw_start,
            last_positions: self.last().map(Sample::positions).unwrap_or_default(),
        }
    }
}

/// One sampling round over the whole table: entries of slots that no longer
/// exist (or were re-created as another slot) are freed, new slots get a free
/// entry, and every observed slot gets a sample. Returns how many observed
/// slots found no free entry (cannot happen when the table has
/// `max_replication_slots` entries).
pub(crate) fn record_round(table: &mut [SlotHistory], observed: &[Observed], round: Round) -> usize {
    for entry in table.iter_mut().filter(|e| e.in_use) {
        match observed.iter().find(|o| o.name == entry.name()) {
            Some(o) if !entry.is_other_slot(o) => {}
            _ => *entry = SlotHistory::EMPTY,
        }
    }
    let mut untracked = 0;
    for o in observed {
        let idx = match table.iter().position(|e| e.in_use && e.name() == o.name) {
            Some(i) => i,
            None => match table.iter().position(|e| !e.in_use) {
                Some(i) => {
                    table[i] = SlotHistory::start(&o.name, o.identity, !round.first_round);
                    i
                }
                None => {
                    untracked += 1;
                    continue;
                }
            },
        };
        let entry = &mut table[idx];
        let late = entry.last().is_some_and(|p| round.at - p.at > 2 * round.interval_us + GAP_SLACK_US);
        let gap = entry.len > 0 && (round.fresh_start || late || entry.interval_us != round.interval_us);
        entry.record(
            Sample {
                at: round.at,
                wal_lsn: round.wal_lsn,
                restart_lsn: o.restart_lsn,
                confirmed_flush: o.confirmed_flush,
                active: o.active,
            },
            gap,
            round.interval_us,
        );
    }
    untracked
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const IV: i64 = 10 * S;

    fn obs(name: &str, active: bool, restart_lsn: u64) -> Observed {
        Observed { name: name.to_string(), identity: identity(true, 5, "p"), active, restart_lsn, confirmed_flush: 0 }
    }

    fn obs2(name: &str, active: bool, restart_lsn: u64, confirmed_flush: u64) -> Observed {
        Observed { confirmed_flush, ..obs(name, active, restart_lsn) }
    }

    fn round(at: i64) -> Round {
        Round { at, wal_lsn: 1000, interval_us: IV, fresh_start: false, first_round: false }
    }

    fn entry<'a>(table: &'a [SlotHistory], name: &str) -> &'a SlotHistory {
        table.iter().find(|e| e.in_use && e.name() == name).unwrap()
    }

    #[test]
    fn ring_keeps_the_last_samples_in_order() {
        let mut h = SlotHistory::start("s", 0, false);
        assert_eq!(h.samples().count(), 0);
        let sample =
            |i: i64| Sample { at: i, wal_lsn: 100 + i as u64, restart_lsn: 1, confirmed_flush: 0, active: false };
        for i in 0..5 {
            h.record(sample(i), false, IV);
        }
        assert_eq!(h.samples().map(|s| s.at).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        for i in 5..(HISTORY_LEN as i64 + 7) {
            h.record(sample(i), false, IV);
        }
        let ats: Vec<i64> = h.samples().map(|s| s.at).collect();
        assert_eq!(ats.len(), HISTORY_LEN);
        assert_eq!(ats[0], 7);
        assert_eq!(*ats.last().unwrap(), HISTORY_LEN as i64 + 6);
        assert!(ats.windows(2).all(|w| w[0] + 1 == w[1]));
    }

    #[test]
    fn activity_state_tracks_transitions() {
        let mut t = [SlotHistory::EMPTY; 2];
        let first = Round { first_round: true, ..round(10 * S) };
        record_round(&mut t, &[obs("s", false, 7)], first);
        record_round(&mut t, &[obs("s", false, 7)], round(20 * S));
        let a = entry(&t, "s").activity();
        assert_eq!((a.active_in_last_sample, a.inactive_since, a.saw_start), (false, Some(10 * S), false));
        assert_eq!(a.last_positions, Positions { restart_lsn: 7, confirmed_flush: 0 });
        record_round(&mut t, &[obs("s", true, 7)], round(30 * S));
        let a = entry(&t, "s").activity();
        assert_eq!((a.active_in_last_sample, a.inactive_since, a.saw_start), (true, None, true));
        record_round(&mut t, &[obs("s", false, 7)], round(40 * S));
        record_round(&mut t, &[obs("s", false, 7)], round(50 * S));
        let a = entry(&t, "s").activity();
        assert_eq!((a.active_in_last_sample, a.inactive_since, a.saw_start), (false, Some(40 * S), true));
    }

    #[test]
    fn a_consumer_polling_between_samples_is_activity() {
        // Never seen active, but confirmed_flush_lsn (or restart_lsn) moves:
        // SQL polling with pg_logical_slot_get_changes() between samples.
        let mut t = [SlotHistory::EMPTY; 1];
        record_round(&mut t, &[obs2("poll", false, 100, 200)], Round { first_round: true, ..round(0) });
        record_round(&mut t, &[obs2("poll", false, 100, 200)], round(10 * S));
        assert_eq!(entry(&t, "poll").activity().inactive_since, Some(0));
        record_round(&mut t, &[obs2("poll", false, 100, 300)], round(20 * S));
        let a = entry(&t, "poll").activity();
        assert_eq!((a.inactive_since, a.saw_start), (Some(20 * S), true), "confirmed_flush_lsn moved");
        record_round(&mut t, &[obs2("poll", false, 150, 300)], round(30 * S));
        assert_eq!(entry(&t, "poll").activity().inactive_since, Some(30 * S), "restart_lsn moved");
        record_round(&mut t, &[obs2("poll", false, 150, 300)], round(40 * S));
        assert_eq!(entry(&t, "poll").activity().inactive_since, Some(30 * S), "no movement: still since 30 s");
        // Invalidation (restart_lsn becomes invalid) is not a consumer's doing.
        record_round(&mut t, &[obs2("poll", false, 0, 300)], round(50 * S));
        assert_eq!(entry(&t, "poll").activity().inactive_since, Some(30 * S));
    }

    #[test]
    fn a_gap_in_sampling_resets_what_is_known() {
        let mut t = [SlotHistory::EMPTY; 1];
        record_round(&mut t, &[obs("s", false, 5)], Round { first_round: true, ..round(0) });
        record_round(&mut t, &[obs("s", false, 5)], round(IV));
        assert_eq!(entry(&t, "s").activity().inactive_since, Some(0));
        // Within two intervals plus the slack: no gap.
        record_round(&mut t, &[obs("s", false, 5)], round(3 * IV + GAP_SLACK_US));
        assert_eq!(entry(&t, "s").activity().inactive_since, Some(0));
        // Later: a gap.
        let late = 6 * IV + 2 * GAP_SLACK_US;
        record_round(&mut t, &[obs("s", false, 5)], round(late));
        let a = entry(&t, "s").activity();
        assert_eq!((a.inactive_since, a.saw_start), (Some(late), false));
        // A restarted sampler.
        record_round(&mut t, &[obs("s", false, 5)], Round { fresh_start: true, ..round(late + IV) });
        assert_eq!(entry(&t, "s").activity().inactive_since, Some(late + IV));
        // A changed interval.
        let at = late + 2 * IV;
        record_round(&mut t, &[obs("s", false, 5)], Round { interval_us: IV / 2, ..round(at) });
        assert_eq!(entry(&t, "s").activity().inactive_since, Some(at));
        record_round(&mut t, &[obs("s", false, 5)], Round { interval_us: IV / 2, ..round(at + IV / 2) });
        assert_eq!(entry(&t, "s").activity().inactive_since, Some(at), "steady again");
    }

    #[test]
    fn a_slot_recreated_under_the_same_name_is_a_new_slot() {
        let mut t = [SlotHistory::EMPTY; 1];
        record_round(&mut t, &[obs2("s", false, 500, 600)], Round { first_round: true, ..round(0) });
        record_round(&mut t, &[obs2("s", false, 500, 600)], round(IV));
        // Another plugin or database: another slot.
        let other = Observed { identity: identity(true, 6, "p"), ..obs2("s", false, 500, 600) };
        record_round(&mut t, std::slice::from_ref(&other), round(2 * IV));
        let e = entry(&t, "s");
        assert_eq!(e.samples().count(), 1, "history starts afresh");
        let a = e.activity();
        assert_eq!((a.inactive_since, a.saw_start), (Some(2 * IV), true));
        record_round(&mut t, &[other], round(3 * IV));
        // Positions going backwards: another slot too.
        let back = Observed { identity: identity(true, 6, "p"), ..obs2("s", false, 400, 450) };
        record_round(&mut t, &[back], round(4 * IV));
        assert_eq!(entry(&t, "s").samples().count(), 1);
        assert_eq!(entry(&t, "s").activity().inactive_since, Some(4 * IV));
        assert_ne!(identity(true, 5, "p"), identity(false, 5, "p"));
        assert_ne!(identity(true, 5, "p"), identity(true, 5, "q"));
    }

    #[test]
    fn retained_bytes_need_a_restart_lsn() {
        let s = |wal_lsn, restart_lsn| Sample { at: 0, wal_lsn, restart_lsn, confirmed_flush: 0, active: false };
        assert_eq!(s(500, 200).retained(), Some(300));
        assert_eq!(s(500, 0).retained(), None);
        assert_eq!(s(100, 200).retained(), Some(0));
    }

    #[test]
    fn rounds_add_and_free_entries() {
        let mut table = [SlotHistory::EMPTY; 3];
        let first = Round { first_round: true, ..round(1) };
        assert_eq!(record_round(&mut table, &[obs("a", true, 5), obs("b", false, 6)], first), 0);
        assert_eq!(record_round(&mut table, &[obs("a", true, 7), obs("b", false, 6)], round(2)), 0);
        let names: Vec<&str> = table.iter().filter(|e| e.in_use).map(|e| e.name()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(table[0].samples().count(), 2);
        // "a" dropped, "c" and "d" created: "c" reuses a free entry.
        assert_eq!(
            record_round(&mut table, &[obs("b", false, 6), obs("c", false, 9), obs("d", false, 9)], round(3)),
            0
        );
        let mut names: Vec<&str> = table.iter().filter(|e| e.in_use).map(|e| e.name()).collect();
        names.sort();
        assert_eq!(names, vec!["b", "c", "d"]);
        let b = entry(&table, "b");
        assert_eq!(b.samples().count(), 3, "b keeps its history");
        let c = entry(&table, "c");
        assert_eq!(c.samples().map(|s| s.at).collect::<Vec<_>>(), vec![3], "c starts afresh");
        // Slots of the first round may have been inactive for long before;
        // slots appearing later were inactive only since they appeared.
        assert!(!b.activity().saw_start, "b was there in the first round");
        assert!(c.activity().saw_start, "c appeared under observation");
        // No room: reported, nothing else disturbed.
        assert_eq!(
            record_round(
                &mut table,
                &[obs("b", false, 6), obs("c", false, 9), obs("d", false, 9), obs("e", true, 1)],
                round(4)
            ),
            1
        );
        assert!(!table.iter().any(|e| e.name() == "e"));
    }

    #[test]
    fn long_names_fit() {
        let name = "x".repeat(63);
        let h = SlotHistory::start(&name, 0, false);
        assert_eq!(h.name(), name);
    }
}
