//! The sampler's bounded history, as plain data: one [`SlotHistory`] per
//! replication slot (a ring of the last [`HISTORY_LEN`] samples and the
//! slot's activity state). These types live in shared memory (`shmem.rs`
//! places an array of them there), so they are `repr(C)`, `Copy` and hold no
//! pointers; everything here is pure and unit-tested.

use super::health::TrackedActivity;

/// Samples kept per slot: 20 minutes at the default 10 s interval.
pub(crate) const HISTORY_LEN: usize = 120;
/// `NAMEDATALEN`: slot names are at most 63 bytes.
pub(crate) const NAME_LEN: usize = 64;

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
    pub(crate) active: bool,
}

impl Sample {
    /// Bytes of WAL the slot held back, when it held any.
    pub(crate) fn retained(&self) -> Option<i64> {
        (self.restart_lsn != 0).then(|| self.wal_lsn.saturating_sub(self.restart_lsn) as i64)
    }
}

/// What the sampler learns about a slot in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) name: String,
    pub(crate) active: bool,
    pub(crate) restart_lsn: u64,
}

/// The history of one slot (or a free entry when `!in_use`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotHistory {
    pub(crate) in_use: bool,
    name_len: u8,
    name: [u8; NAME_LEN],
    /// Seen active, or appeared after the sampler's first round.
    saw_start: bool,
    active_in_last_sample: bool,
    has_inactive_since: bool,
    inactive_since: i64,
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
        next: 0,
        len: 0,
        samples: [Sample { at: 0, wal_lsn: 0, restart_lsn: 0, active: false }; HISTORY_LEN],
    };

    /// A new entry; `appeared` when the slot was created after the
    /// sampler's first round (so its inactivity started under observation).
    fn start(name: &str, appeared: bool) -> SlotHistory {
        let mut h = SlotHistory::EMPTY;
        h.saw_start = appeared;
        let bytes = &name.as_bytes()[..name.len().min(NAME_LEN - 1)];
        h.name[..bytes.len()].copy_from_slice(bytes);
        h.name_len = bytes.len() as u8;
        h.in_use = true;
        h
    }

    pub(crate) fn name(&self) -> &str {
        std::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("")
    }

    /// Appends a sample (dropping the oldest when full) and updates the
    /// activity state.
    pub(crate) fn record(&mut self, s: Sample) {
        self.samples[self.next as usize] = s;
        self.next = (self.next + 1) % HISTORY_LEN as u32;
        self.len = (self.len + 1).min(HISTORY_LEN as u32);
        if s.active {
            self.saw_start = true;
            self.has_inactive_since = false;
        } else if !self.has_inactive_since {
            self.has_inactive_since = true;
            self.inactive_since = s.at;
        }
        self.active_in_last_sample = s.active;
    }

    /// The samples held, oldest first.
    pub(crate) fn samples(&self) -> impl Iterator<Item = &Sample> {
        let len = self.len as usize;
        let start = (self.next as usize + HISTORY_LEN - len) % HISTORY_LEN;
        (0..len).map(move |i| &self.samples[(start + i) % HISTORY_LEN])
    }

    pub(crate) fn activity(&self) -> TrackedActivity {
        TrackedActivity {
            active_in_last_sample: self.active_in_last_sample,
            inactive_since: self.has_inactive_since.then_some(self.inactive_since),
            saw_start: self.saw_start,
        }
    }
}

/// One sampling round over the whole table: entries of slots that no longer
/// exist are freed, new slots get a free entry, and every observed slot gets
/// a sample. `first_round` is true for the sampler's very first round (its
/// slots may have been inactive for long already). Returns how many observed slots found no free entry (cannot
/// happen when the table has `max_replication_slots` entries).
pub(crate) fn record_round(
    table: &mut [SlotHistory],
    observed: &[Observed],
    first_round: bool,
    at: i64,
    wal_lsn: u64,
) -> usize {
    for entry in table.iter_mut().filter(|e| e.in_use) {
        if !observed.iter().any(|o| o.name == entry.name()) {
            *entry = SlotHistory::EMPTY;
        }
    }
    let mut untracked = 0;
    for o in observed {
        let idx = match table.iter().position(|e| e.in_use && e.name() == o.name) {
            Some(i) => i,
            None => match table.iter().position(|e| !e.in_use) {
                Some(i) => {
                    table[i] = SlotHistory::start(&o.name, !first_round);
                    i
                }
                None => {
                    untracked += 1;
                    continue;
                }
            },
        };
        table[idx].record(Sample { at, wal_lsn, restart_lsn: o.restart_lsn, active: o.active });
    }
    untracked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(name: &str, active: bool, restart_lsn: u64) -> Observed {
        Observed { name: name.to_string(), active, restart_lsn }
    }

    #[test]
    fn ring_keeps_the_last_samples_in_order() {
        let mut h = SlotHistory::start("s", false);
        assert_eq!(h.samples().count(), 0);
        for i in 0..5 {
            h.record(Sample { at: i, wal_lsn: 100 + i as u64, restart_lsn: 1, active: false });
        }
        assert_eq!(h.samples().map(|s| s.at).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        for i in 5..(HISTORY_LEN as i64 + 7) {
            h.record(Sample { at: i, wal_lsn: 100 + i as u64, restart_lsn: 1, active: false });
        }
        let ats: Vec<i64> = h.samples().map(|s| s.at).collect();
        assert_eq!(ats.len(), HISTORY_LEN);
        assert_eq!(ats[0], 7);
        assert_eq!(*ats.last().unwrap(), HISTORY_LEN as i64 + 6);
        assert!(ats.windows(2).all(|w| w[0] + 1 == w[1]));
    }

    #[test]
    fn activity_state_tracks_transitions() {
        let mut h = SlotHistory::start("s", false);
        let at = |t, active| Sample { at: t, wal_lsn: 0, restart_lsn: 0, active };
        h.record(at(10, false));
        h.record(at(20, false));
        assert_eq!(
            h.activity(),
            TrackedActivity { active_in_last_sample: false, inactive_since: Some(10), saw_start: false }
        );
        h.record(at(30, true));
        assert_eq!(
            h.activity(),
            TrackedActivity { active_in_last_sample: true, inactive_since: None, saw_start: true }
        );
        h.record(at(40, false));
        h.record(at(50, false));
        assert_eq!(
            h.activity(),
            TrackedActivity { active_in_last_sample: false, inactive_since: Some(40), saw_start: true }
        );
    }

    #[test]
    fn retained_bytes_need_a_restart_lsn() {
        assert_eq!(Sample { at: 0, wal_lsn: 500, restart_lsn: 200, active: false }.retained(), Some(300));
        assert_eq!(Sample { at: 0, wal_lsn: 500, restart_lsn: 0, active: false }.retained(), None);
        assert_eq!(Sample { at: 0, wal_lsn: 100, restart_lsn: 200, active: false }.retained(), Some(0));
    }

    #[test]
    fn rounds_add_and_free_entries() {
        let mut table = [SlotHistory::EMPTY; 3];
        assert_eq!(record_round(&mut table, &[obs("a", true, 5), obs("b", false, 6)], true, 1, 10), 0);
        assert_eq!(record_round(&mut table, &[obs("a", true, 7), obs("b", false, 6)], false, 2, 20), 0);
        let names: Vec<&str> = table.iter().filter(|e| e.in_use).map(|e| e.name()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(table[0].samples().count(), 2);
        // "a" dropped, "c" and "d" created: "c" reuses a free entry.
        assert_eq!(
            record_round(&mut table, &[obs("b", false, 6), obs("c", false, 9), obs("d", false, 9)], false, 3, 30),
            0
        );
        let mut names: Vec<&str> = table.iter().filter(|e| e.in_use).map(|e| e.name()).collect();
        names.sort();
        assert_eq!(names, vec!["b", "c", "d"]);
        let b = table.iter().find(|e| e.name() == "b").unwrap();
        assert_eq!(b.samples().count(), 3, "b keeps its history");
        let c = table.iter().find(|e| e.name() == "c").unwrap();
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
                false,
                4,
                40
            ),
            1
        );
        assert!(!table.iter().any(|e| e.name() == "e"));
    }

    #[test]
    fn long_names_fit() {
        let name = "x".repeat(63);
        let h = SlotHistory::start(&name, false);
        assert_eq!(h.name(), name);
    }
}
