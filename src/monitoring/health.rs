//! The pure core of slot monitoring: from the facts about one slot (its live
//! row in `pg_replication_slots` and what the sampler remembers about it) to
//! its inactive time, WAL growth rate, exhaustion forecast, `status` and
//! `reason`. No PostgreSQL calls here; every rule has a plain `#[test]`.
//!
//! Times are PostgreSQL `TimestampTz` values: microseconds since 2000-01-01.

use std::fmt::Write as _;

const USECS_PER_SEC: f64 = 1_000_000.0;

/// The growth rate is fitted over the samples of the last five minutes (or
/// the last two samples, when the interval is longer than that).
pub(crate) const GROWTH_WINDOW_US: i64 = 300 * 1_000_000;

/// A slot's health, worst last (so `max` combines findings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    Ok,
    Warning,
    Critical,
    /// `wal_status = lost`: the slot was invalidated, its consumer cannot
    /// resume from it.
    Lost,
}

impl Status {
    pub(crate) const ALL: [Status; 4] = [Status::Ok, Status::Warning, Status::Critical, Status::Lost];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Lost => "lost",
        }
    }
}

/// `pg_replication_slots.wal_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalStatus {
    Reserved,
    Extended,
    Unreserved,
    Lost,
}

impl WalStatus {
    pub(crate) const ALL: [WalStatus; 4] =
        [WalStatus::Reserved, WalStatus::Extended, WalStatus::Unreserved, WalStatus::Lost];

    pub(crate) fn parse(s: &str) -> Option<WalStatus> {
        WalStatus::ALL.into_iter().find(|w| w.as_str() == s)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WalStatus::Reserved => "reserved",
            WalStatus::Extended => "extended",
            WalStatus::Unreserved => "unreserved",
            WalStatus::Lost => "lost",
        }
    }
}

/// The thresholds of the `logical_ext.slot_*` settings; `None` = check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    pub(crate) lag_warning_bytes: Option<u64>,
    pub(crate) lag_critical_bytes: Option<u64>,
    pub(crate) inactive_warning_secs: Option<u64>,
    /// Age in transactions of the slot's older of `xmin`/`catalog_xmin`.
    pub(crate) xmin_age_warning: Option<u64>,
    pub(crate) xmin_age_critical: Option<u64>,
}

impl Thresholds {
    /// From the raw setting values (kB, kB, seconds; negative = off).
    pub(crate) fn from_settings(lag_warning_kb: i32, lag_critical_kb: i32, inactive_warning_s: i32) -> Thresholds {
        let kb = |v: i32| u64::try_from(v).ok().map(|v| v * 1024);
        Thresholds {
            lag_warning_bytes: kb(lag_warning_kb),
            lag_critical_bytes: kb(lag_critical_kb),
            inactive_warning_secs: u64::try_from(inactive_warning_s).ok(),
            xmin_age_warning: None,
            xmin_age_critical: None,
        }
    }

    /// With the xmin-age thresholds (transactions; negative = off).
    pub(crate) fn with_xmin_age(self, warning: i32, critical: i32) -> Thresholds {
        Thresholds {
            xmin_age_warning: u64::try_from(warning).ok(),
            xmin_age_critical: u64::try_from(critical).ok(),
            ..self
        }
    }
}

/// Why the history-based columns of a slot are NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryGap {
    /// The library was not preloaded: no shared memory, no sampler.
    NotPreloaded,
    /// `logical_ext.monitor_interval = 0`.
    SamplingOff,
    /// Preloaded, but the sampler process is not running (starting, or
    /// restarting after an exit).
    SamplerNotRunning,
    /// Fewer than two usable samples of the slot so far.
    TooFewSamples,
    /// The sampler's latest round is older than two intervals (it is stuck,
    /// or was just switched back on): what happened since is unknown.
    SamplerStale,
}

impl HistoryGap {
    pub(crate) fn explain(self) -> &'static str {
        match self {
            HistoryGap::NotPreloaded => {
                "no history: logical_ext is not in shared_preload_libraries, so no sampler records slot positions"
            }
            HistoryGap::SamplingOff => "no history: sampling is off (logical_ext.monitor_interval = 0)",
            HistoryGap::SamplerNotRunning => "no history: the logical_ext sampler is not running",
            HistoryGap::TooFewSamples => "growth unknown: fewer than 2 samples of this slot so far",
            HistoryGap::SamplerStale => "no history: the sampler's latest round is older than two intervals",
        }
    }
}

/// A slot's positions (0 = invalid/NULL), as sampled or as live now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    pub(crate) restart_lsn: u64,
    pub(crate) confirmed_flush: u64,
}

/// What the sampler remembers about a slot's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrackedActivity {
    /// Whether the slot was active in the latest sample.
    pub(crate) active_in_last_sample: bool,
    /// Time of the first sample that saw it inactive (after an active one,
    /// or since the sampler first saw it); `None` while active.
    pub(crate) inactive_since: Option<i64>,
    /// Whether the sampler saw the current inactivity begin: it saw the slot
    /// active, or saw it appear after its own first round. When false the
    /// slot was already inactive when sampling started.
    pub(crate) saw_start: bool,
    /// The positions of the latest sample.
    pub(crate) last_positions: Positions,
}

/// What is known about how long a slot has been inactive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Inactivity {
    Active,
    /// Inactive since `at` (accurate to one sampling interval, erring later).
    /// `at_least`: it was already inactive when the sampler first saw it, so
    /// it may have been inactive for longer.
    Since {
        at: i64,
        at_least: bool,
    },
    Unknown(HistoryGap),
}

impl Inactivity {
    pub(crate) fn since(&self) -> Option<i64> {
        match self {
            Inactivity::Since { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// The sampler's view of a slot: `Err` when there is no usable history at
/// all; `Ok(None)` when the sampler runs but has not sampled this slot yet.
pub(crate) type Tracked = Result<Option<TrackedActivity>, HistoryGap>;

/// Combines the live `active` flag and positions with the sampler's memory.
/// A slot whose live positions differ from its latest sample was used after
/// that sample (or re-created): inactive since now at the earliest.
pub(crate) fn inactivity(live_active: bool, live: Positions, tracked: Tracked, now: i64) -> Inactivity {
    if live_active {
        return Inactivity::Active;
    }
    match tracked {
        Err(gap) => Inactivity::Unknown(gap),
        // Created (or released) after the latest sample: inactive at most
        // one interval; report the later bound, now.
        Ok(None) => Inactivity::Since { at: now, at_least: false },
        Ok(Some(t)) if moved_since(t.last_positions, live) => Inactivity::Since { at: now, at_least: false },
        Ok(Some(t)) => match t.inactive_since {
            Some(at) if !t.active_in_last_sample => Inactivity::Since { at, at_least: !t.saw_start },
            _ => Inactivity::Since { at: now, at_least: false },
        },
    }
}

/// Whether a slot moved (or became another slot) between `sampled` and
/// `live`; becoming invalid (0) is the server's doing, not a consumer's.
pub(crate) fn moved_since(sampled: Positions, live: Positions) -> bool {
    let moved = |old: u64, new: u64| new != 0 && new != old;
    moved(sampled.restart_lsn, live.restart_lsn) || moved(sampled.confirmed_flush, live.confirmed_flush)
}

/// Retained-WAL growth in bytes per second: the least-squares slope of
/// `(time, retained bytes)` points (sorted by time) over the last
/// [`GROWTH_WINDOW_US`], or over the last two points when fewer fall in it.
/// `None` with fewer than two points or no time between them.
pub(crate) fn growth_rate(points: &[(i64, i64)]) -> Option<f64> {
    let last_t = points.last()?.0;
    let first_in_window = points.iter().position(|p| p.0 >= last_t - GROWTH_WINDOW_US).unwrap_or(0);
    let w = &points[first_in_window.min(points.len().saturating_sub(2))..];
    if w.len() < 2 {
        return None;
    }
    let t0 = w[0].0;
    let xs: Vec<f64> = w.iter().map(|p| (p.0 - t0) as f64 / USECS_PER_SEC).collect();
    let ys: Vec<f64> = w.iter().map(|p| p.1 as f64).collect();
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    Some(sxy / sxx)
}

/// What a slot's retained WAL runs into first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForecastBasis {
    /// `safe_wal_size` (set when `max_slot_wal_keep_size` is): the slot is
    /// invalidated (`lost`) when it retains more.
    SafeWalSize,
    /// The free space of the file system holding `pg_wal`: the server
    /// stops (PANIC on a failed WAL write) when it is full.
    Disk,
}

impl ForecastBasis {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ForecastBasis::SafeWalSize => "safe_wal_size",
            ForecastBasis::Disk => "disk",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Forecast {
    pub(crate) basis: ForecastBasis,
    /// Bytes left before the nearer limit.
    pub(crate) remaining_bytes: Option<i64>,
    pub(crate) seconds_until_exhausted: Option<f64>,
}

/// The forecast for one slot against the nearer of its two limits:
/// `safe_wal_size` (PostgreSQL's figure: bytes the server can still write
/// before this slot is lost; NULL when `max_slot_wal_keep_size = -1` or the
/// slot is lost) and `pg_wal_free_bytes`, the free space of `pg_wal`'s file
/// system (a configured `max_slot_wal_keep_size` larger than the free space
/// would otherwise hide a nearly full disk).
pub(crate) fn forecast(
    growth: Option<f64>,
    wal_status: Option<WalStatus>,
    safe_wal_size: Option<i64>,
    pg_wal_free_bytes: Option<u64>,
) -> Forecast {
    let disk = pg_wal_free_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let (basis, remaining) = match (safe_wal_size, disk) {
        // safe_wal_size is NULL once lost: it was that limit that was hit.
        _ if wal_status == Some(WalStatus::Lost) => (ForecastBasis::SafeWalSize, None),
        (Some(s), Some(d)) if d < s => (ForecastBasis::Disk, Some(d)),
        (Some(s), _) => (ForecastBasis::SafeWalSize, Some(s)),
        (None, d) => (ForecastBasis::Disk, d),
    };
    let seconds = if wal_status == Some(WalStatus::Lost) {
        Some(0.0)
    } else if wal_status.is_none() {
        // No WAL reserved (a physical slot never used): nothing to exhaust.
        None
    } else {
        match (remaining, growth) {
            (Some(r), _) if r <= 0 => Some(0.0),
            (Some(r), Some(g)) if g > 0.0 => Some(r as f64 / g),
            _ => None,
        }
    };
    Forecast { basis, remaining_bytes: remaining, seconds_until_exhausted: seconds }
}

/// Who consumes a slot, as far as the slot itself tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consumer {
    /// Output plugin `logical_ext`: a logical_ext subscription (or another
    /// client of the plugin).
    LogicalExt,
    /// Another logical slot: a native subscription or another client.
    Logical,
    /// A physical slot: a standby or `pg_receivewal`.
    Physical,
}

impl Consumer {
    pub(crate) fn of(slot_type: &str, plugin: Option<&str>) -> Consumer {
        match (slot_type, plugin) {
            ("physical", _) => Consumer::Physical,
            (_, Some("logical_ext")) => Consumer::LogicalExt,
            _ => Consumer::Logical,
        }
    }
}

/// Everything [`assess`] looks at for one slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts {
    pub(crate) consumer: Consumer,
    /// `confirmed_flush_lsn` (logical slots).
    pub(crate) confirmed_flush_lsn: Option<u64>,
    pub(crate) lag_bytes: Option<i64>,
    pub(crate) retained_bytes: Option<i64>,
    /// `age(xmin)` and `age(catalog_xmin)` in transactions (NULL: none held).
    pub(crate) xmin_age: Option<i64>,
    pub(crate) catalog_xmin_age: Option<i64>,
    pub(crate) wal_status: Option<WalStatus>,
    pub(crate) inactivity: Inactivity,
    /// `Err` says why there is no rate.
    pub(crate) growth: Result<f64, HistoryGap>,
    pub(crate) forecast: Forecast,
    /// `max_slot_wal_keep_size` in bytes, `None` when unlimited.
    pub(crate) max_slot_wal_keep_size: Option<u64>,
    pub(crate) now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assessment {
    pub(crate) status: Status,
    pub(crate) reason: String,
}

/// Classifies a slot. `status` is the worst finding; `reason` lists the
/// findings (worst first), then what is known about growth and history.
pub(crate) fn assess(f: &Facts, t: &Thresholds) -> Assessment {
    let mut findings: Vec<(Status, String)> = Vec::new();

    match f.wal_status {
        Some(WalStatus::Lost) => findings.push((Status::Lost, lost_reason(f))),
        Some(WalStatus::Unreserved) => findings.push((
            Status::Critical,
            format!(
                "wal_status is unreserved: the slot retains more than max_slot_wal_keep_size{} and loses its WAL \
                 at the next checkpoint",
                f.max_slot_wal_keep_size.map(|b| format!(" ({})", bytes(b))).unwrap_or_default()
            ),
        )),
        _ => {}
    }

    if let Some(lag) = f.lag_bytes.and_then(|l| u64::try_from(l).ok()) {
        if let Some(c) = t.lag_critical_bytes.filter(|&c| lag >= c) {
            findings.push((
                Status::Critical,
                format!("lag {} is at or above logical_ext.slot_lag_critical ({})", bytes(lag), bytes(c)),
            ));
        } else if let Some(w) = t.lag_warning_bytes.filter(|&w| lag >= w) {
            findings.push((
                Status::Warning,
                format!("lag {} is at or above logical_ext.slot_lag_warning ({})", bytes(lag), bytes(w)),
            ));
        }
    }

    if let Some(finding) = xmin_finding(f, t) {
        findings.push(finding);
    }

    let mut notes: Vec<String> = Vec::new();
    match f.inactivity {
        Inactivity::Active => {}
        Inactivity::Since { at, at_least } => {
            let secs = ((f.now - at).max(0) as f64 / USECS_PER_SEC) as u64;
            let text = format!("inactive for {}{}", if at_least { "at least " } else { "" }, duration(secs));
            match t.inactive_warning_secs {
                Some(limit) if secs >= limit => findings.push((
                    Status::Warning,
                    format!("{text}, at or above logical_ext.slot_inactive_warning ({})", duration(limit)),
                )),
                _ => notes.push(text),
            }
        }
        Inactivity::Unknown(gap) => {
            let text = format!("inactive for an unknown time ({})", gap.explain());
            match t.inactive_warning_secs {
                Some(_) => findings.push((Status::Warning, text)),
                None => notes.push(text),
            }
        }
    }

    findings.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
    let status = findings.first().map(|(s, _)| *s).unwrap_or(Status::Ok);

    let mut reason = String::new();
    for (_, text) in &findings {
        push_part(&mut reason, text);
    }
    if findings.is_empty() {
        match (f.lag_bytes, f.retained_bytes) {
            (Some(lag), _) => {
                let mut s = format!("lag {}", bytes(lag.max(0) as u64));
                if let Some(w) = t.lag_warning_bytes {
                    let _ = write!(s, " (warning at {})", bytes(w));
                }
                push_part(&mut reason, &s);
            }
            (None, None) => push_part(&mut reason, "no WAL reserved (restart_lsn is NULL)"),
            _ => {}
        }
    }
    for n in &notes {
        push_part(&mut reason, n);
    }
    match (&f.growth, f.forecast.seconds_until_exhausted) {
        (_, Some(s)) if s <= 0.0 => {}
        (Ok(g), Some(s)) => push_part(
            &mut reason,
            &format!(
                "retained WAL grows {}/s: {} in {}",
                bytes(g.max(0.0) as u64),
                match f.forecast.basis {
                    ForecastBasis::SafeWalSize => "reaches max_slot_wal_keep_size",
                    ForecastBasis::Disk => "fills the free space of pg_wal's file system",
                },
                duration(s as u64)
            ),
        ),
        (Ok(g), None) if *g <= 0.0 && f.wal_status.is_some() => push_part(&mut reason, "retained WAL is not growing"),
        // Unless the inactivity finding already said the same.
        (Err(gap), _) if f.retained_bytes.is_some() && f.inactivity != Inactivity::Unknown(*gap) => {
            push_part(&mut reason, gap.explain())
        }
        _ => {}
    }
    Assessment { status, reason }
}

/// The older of the slot's `xmin` (a physical standby's
/// `hot_standby_feedback`) and `catalog_xmin` (logical decoding) against the
/// xmin-age thresholds: either holds back VACUUM in every database (the
/// catalog one for catalogs only) and, left long enough, pushes the server
/// towards transaction-ID wraparound.
fn xmin_finding(f: &Facts, t: &Thresholds) -> Option<(Status, String)> {
    let (which, age) = [("xmin", f.xmin_age), ("catalog_xmin", f.catalog_xmin_age)]
        .into_iter()
        .filter_map(|(w, a)| Some((w, u64::try_from(a?).ok()?)))
        .max_by_key(|(_, a)| *a)?;
    let (status, setting, limit) = if let Some(c) = t.xmin_age_critical.filter(|&c| age >= c) {
        (Status::Critical, "logical_ext.slot_xmin_age_critical", c)
    } else if let Some(w) = t.xmin_age_warning.filter(|&w| age >= w) {
        (Status::Warning, "logical_ext.slot_xmin_age_warning", w)
    } else {
        return None;
    };
    Some((
        status,
        format!(
            "{which} age {age} transactions is at or above {setting} ({limit}): the slot keeps VACUUM from removing \
             dead rows{} and moves the server towards transaction ID wraparound",
            if which == "catalog_xmin" { " of the system catalogs" } else { "" }
        ),
    ))
}

/// `X/Y`, as PostgreSQL prints an LSN.
pub(crate) fn lsn_text(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l as u32)
}

/// What happened to an invalidated (`lost`) slot, what was lost and what to do.
fn lost_reason(f: &Facts) -> String {
    let limit = f.max_slot_wal_keep_size.map(|b| format!(" ({})", bytes(b))).unwrap_or_default();
    let what = format!(
        "lost: the server removed WAL this slot still needed (it fell more than max_slot_wal_keep_size{limit} \
         behind) and invalidated it"
    );
    let from = f.confirmed_flush_lsn.map(|l| format!(" after {}", lsn_text(l))).unwrap_or_default();
    let (lost, todo) = match f.consumer {
        Consumer::LogicalExt => (
            format!("the changes{from} can no longer be decoded, so its consumer missed them for good"),
            "drop the slot and resynchronise the consumer from a fresh copy: for a logical_ext subscription \
             run logical_ext.drop_subscription() and logical_ext.create_subscription() again with copy_data => \
             true (or resync_table() every table after re-creating the slot)",
        ),
        Consumer::Logical => (
            format!("the changes{from} can no longer be decoded, so its consumer missed them for good"),
            "drop the slot and resynchronise the consumer from a fresh copy (a native subscription: DROP and \
             CREATE SUBSCRIPTION with copy_data = true; other clients: take a new snapshot)",
        ),
        Consumer::Physical => (
            "its standby cannot stream the removed WAL".to_string(),
            "restore the missing WAL from an archive (restore_command) or rebuild the standby with \
             pg_basebackup, then drop and re-create the slot",
        ),
    };
    format!("{what}; {lost}; to recover: {todo}")
}

fn push_part(out: &mut String, part: &str) {
    if !out.is_empty() {
        out.push_str("; ");
    }
    out.push_str(part);
}

/// Decision of `drop_stale_slots()` for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropVerdict {
    Drop,
    KeepActive,
    /// Inactive for less than the bound.
    KeepTooRecent,
    /// How long it has been inactive is unknown (no history).
    KeepUnknown(HistoryGap),
}

/// A slot is dropped only when it is inactive and has been for at least
/// `bound_us` (measured from its later-bound `inactive_since`).
pub(crate) fn drop_verdict(inactivity: &Inactivity, now: i64, bound_us: i64) -> DropVerdict {
    match *inactivity {
        Inactivity::Active => DropVerdict::KeepActive,
        Inactivity::Unknown(gap) => DropVerdict::KeepUnknown(gap),
        Inactivity::Since { at, .. } if now.saturating_sub(at) >= bound_us => DropVerdict::Drop,
        Inactivity::Since { .. } => DropVerdict::KeepTooRecent,
    }
}

/// `1536` → `1.5 kB`, `1073741824` → `1 GB` (powers of 1024, as PostgreSQL's
/// memory units).
pub(crate) fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    if b < 1024 {
        return format!("{b} bytes");
    }
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let s = format!("{v:.1}");
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s} {}", UNITS[unit])
}

/// `59` → `59 s`, `90` → `1.5 min`, `7200` → `2 h`, `172800` → `2 d`.
pub(crate) fn duration(secs: u64) -> String {
    let (v, unit) = match secs {
        0..60 => return format!("{secs} s"),
        60..3600 => (secs as f64 / 60.0, "min"),
        3600..86_400 => (secs as f64 / 3600.0, "h"),
        _ => (secs as f64 / 86_400.0, "d"),
    };
    let s = format!("{v:.1}");
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const GB: u64 = 1024 * 1024 * 1024;

    fn defaults() -> Thresholds {
        // The settings' defaults: 1GB, 10GB, 5min.
        Thresholds::from_settings(1024 * 1024, 10 * 1024 * 1024, 300)
    }

    fn facts(lag: i64) -> Facts {
        Facts {
            consumer: Consumer::Logical,
            confirmed_flush_lsn: Some(0x1_0000_0100),
            lag_bytes: Some(lag),
            retained_bytes: Some(lag),
            xmin_age: None,
            catalog_xmin_age: Some(10),
            wal_status: Some(WalStatus::Reserved),
            inactivity: Inactivity::Active,
            growth: Ok(0.0),
            forecast: Forecast {
                basis: ForecastBasis::Disk,
                remaining_bytes: Some(100 * GB as i64),
                seconds_until_exhausted: None,
            },
            max_slot_wal_keep_size: None,
            now: 1000 * S,
        }
    }

    #[test]
    fn thresholds_from_settings() {
        let t = defaults();
        assert_eq!(t.lag_warning_bytes, Some(GB));
        assert_eq!(t.lag_critical_bytes, Some(10 * GB));
        assert_eq!(t.inactive_warning_secs, Some(300));
        let off = Thresholds::from_settings(-1, -1, -1);
        assert_eq!(
            off,
            Thresholds {
                lag_warning_bytes: None,
                lag_critical_bytes: None,
                inactive_warning_secs: None,
                xmin_age_warning: None,
                xmin_age_critical: None
            }
        );
        let x = off.with_xmin_age(100, -1);
        assert_eq!((x.xmin_age_warning, x.xmin_age_critical), (Some(100), None));
        // i32::MAX kB does not overflow.
        assert_eq!(Thresholds::from_settings(i32::MAX, 0, 0).lag_warning_bytes, Some(i32::MAX as u64 * 1024));
    }

    #[test]
    fn lag_below_warning_is_ok_and_says_the_lag() {
        let a = assess(&facts(12 * 1024), &defaults());
        assert_eq!(a.status, Status::Ok);
        assert_eq!(a.reason, "lag 12 kB (warning at 1 GB); retained WAL is not growing");
    }

    #[test]
    fn lag_thresholds_are_inclusive_and_critical_wins() {
        let t = defaults();
        assert_eq!(assess(&facts(GB as i64 - 1), &t).status, Status::Ok);
        let w = assess(&facts(GB as i64), &t);
        assert_eq!(w.status, Status::Warning);
        assert!(w.reason.starts_with("lag 1 GB is at or above logical_ext.slot_lag_warning (1 GB)"), "{}", w.reason);
        let c = assess(&facts(10 * GB as i64), &t);
        assert_eq!(c.status, Status::Critical);
        assert!(c.reason.starts_with("lag 10 GB is at or above logical_ext.slot_lag_critical (10 GB)"), "{}", c.reason);
        assert!(!c.reason.contains("slot_lag_warning"), "only the worst lag finding: {}", c.reason);
    }

    #[test]
    fn disabled_lag_checks_never_fire() {
        let t = Thresholds::from_settings(-1, -1, 300);
        assert_eq!(assess(&facts(1 << 50), &t).status, Status::Ok);
        // Warning off, critical on.
        let t = Thresholds::from_settings(-1, 1024, 300);
        assert_eq!(assess(&facts(2 << 20), &t).status, Status::Critical);
        assert_eq!(assess(&facts(1 << 19), &t).status, Status::Ok);
    }

    #[test]
    fn negative_lag_is_not_a_finding() {
        // confirmed_flush just ahead of the write position (a fresh slot).
        let a = assess(&facts(-16), &Thresholds::from_settings(0, 0, 300));
        assert_eq!(a.status, Status::Ok);
        assert!(a.reason.starts_with("lag 0 bytes"), "{}", a.reason);
    }

    #[test]
    fn lost_says_what_happened_what_was_lost_and_what_to_do() {
        let mut f = facts(0);
        f.wal_status = Some(WalStatus::Lost);
        f.max_slot_wal_keep_size = Some(1 << 20);
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Lost);
        assert!(a.reason.starts_with("lost: the server removed WAL this slot still needed"), "{}", a.reason);
        assert!(a.reason.contains("max_slot_wal_keep_size (1 MB)"), "{}", a.reason);
        assert!(a.reason.contains("the changes after 1/100 can no longer be decoded"), "{}", a.reason);
        assert!(a.reason.contains("to recover: drop the slot"), "{}", a.reason);
        assert!(a.reason.contains("CREATE SUBSCRIPTION"), "{}", a.reason);
        f.consumer = Consumer::LogicalExt;
        let a = assess(&f, &defaults());
        assert!(a.reason.contains("logical_ext.create_subscription()"), "{}", a.reason);
        f.consumer = Consumer::Physical;
        f.confirmed_flush_lsn = None;
        let a = assess(&f, &defaults());
        assert!(a.reason.contains("pg_basebackup"), "{}", a.reason);
        assert_eq!(Consumer::of("physical", None), Consumer::Physical);
        assert_eq!(Consumer::of("logical", Some("logical_ext")), Consumer::LogicalExt);
        assert_eq!(Consumer::of("logical", Some("pgoutput")), Consumer::Logical);
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn unreserved_is_critical() {
        let mut f = facts(0);

        f.wal_status = Some(WalStatus::Unreserved);
        f.max_slot_wal_keep_size = Some(64 << 20);
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Critical);
        assert!(a.reason.contains("max_slot_wal_keep_size (64 MB)"), "{}", a.reason);

        f.wal_status = Some(WalStatus::Extended);
        assert_eq!(assess(&f, &defaults()).status, Status::Ok);
    }

    #[test]
    fn inactive_slot_warns_from_the_threshold_on() {
        let mut f = facts(0);
        f.inactivity = Inactivity::Since { at: f.now - 299 * S, at_least: false };
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Ok);
        assert!(a.reason.contains("inactive for 5 min"), "{}", a.reason);

        f.inactivity = Inactivity::Since { at: f.now - 300 * S, at_least: true };
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Warning);
        assert!(
            a.reason.starts_with("inactive for at least 5 min, at or above logical_ext.slot_inactive_warning (5 min)"),
            "{}",
            a.reason
        );
        // 0 = any inactive slot; -1 = never.
        f.inactivity = Inactivity::Since { at: f.now, at_least: false };
        assert_eq!(assess(&f, &Thresholds::from_settings(-1, -1, 0)).status, Status::Warning);
        f.inactivity = Inactivity::Since { at: f.now - 1000 * S, at_least: false };
        assert_eq!(assess(&f, &Thresholds::from_settings(-1, -1, -1)).status, Status::Ok);
    }

    #[test]
    fn unknown_inactivity_warns_and_says_why() {
        let mut f = facts(0);
        f.inactivity = Inactivity::Unknown(HistoryGap::NotPreloaded);
        f.growth = Err(HistoryGap::NotPreloaded);
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Warning);
        assert!(a.reason.contains("inactive for an unknown time"), "{}", a.reason);
        assert!(a.reason.contains("shared_preload_libraries"), "{}", a.reason);
        // Said once, not again for the growth rate.
        assert_eq!(a.reason.matches("shared_preload_libraries").count(), 1, "{}", a.reason);
        let a = assess(&f, &Thresholds::from_settings(-1, -1, -1));
        assert_eq!(a.status, Status::Ok);
        assert!(a.reason.contains("shared_preload_libraries"), "{}", a.reason);
    }

    #[test]
    fn active_slot_without_history_says_why_growth_is_unknown() {
        let mut f = facts(0);
        f.growth = Err(HistoryGap::NotPreloaded);
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Ok);
        assert!(a.reason.contains("shared_preload_libraries"), "{}", a.reason);
    }

    #[test]
    fn findings_are_listed_worst_first() {
        let mut f = facts(2 * GB as i64);
        f.wal_status = Some(WalStatus::Lost);
        f.inactivity = Inactivity::Since { at: f.now - 3600 * S, at_least: false };
        let a = assess(&f, &defaults());
        assert_eq!(a.status, Status::Lost);
        let parts: Vec<&str> = a.reason.split("; ").collect();
        assert!(parts[0].starts_with("lost: "), "{}", a.reason);
        assert!(parts.iter().any(|p| p.starts_with("lag 2 GB")), "{}", a.reason);
        assert!(parts.iter().any(|p| p.starts_with("inactive for 1 h")), "{}", a.reason);
    }

    #[test]
    fn forecast_text_names_the_limit() {
        let mut f = facts(0);
        f.growth = Ok(1024.0 * 1024.0);
        f.forecast = forecast(Some(1024.0 * 1024.0), Some(WalStatus::Reserved), Some(60 << 20), Some(1 << 40));
        let a = assess(&f, &defaults());
        assert!(
            a.reason.contains("retained WAL grows 1 MB/s: reaches max_slot_wal_keep_size in 1 min"),
            "{}",
            a.reason
        );
        f.forecast = forecast(Some(1024.0 * 1024.0), Some(WalStatus::Reserved), None, Some(7200 << 20));
        let a = assess(&f, &defaults());
        assert!(a.reason.contains("fills the free space of pg_wal's file system in 2 h"), "{}", a.reason);
    }

    #[test]
    fn xmin_age_warns_then_turns_critical() {
        let t = defaults().with_xmin_age(1000, 5000);
        let mut f = facts(0);
        f.catalog_xmin_age = Some(999);
        assert_eq!(assess(&f, &t).status, Status::Ok);
        f.catalog_xmin_age = Some(1000);
        let a = assess(&f, &t);
        assert_eq!(a.status, Status::Warning);
        assert!(
            a.reason.starts_with(
                "catalog_xmin age 1000 transactions is at or above logical_ext.slot_xmin_age_warning (1000): the \
                 slot keeps VACUUM from removing dead rows of the system catalogs"
            ),
            "{}",
            a.reason
        );
        // The older of the two counts; critical wins.
        f.xmin_age = Some(6000);
        let a = assess(&f, &t);
        assert_eq!(a.status, Status::Critical);
        assert!(a.reason.starts_with("xmin age 6000 transactions is at or above logical_ext.slot_xmin_age_critical"));
        // Off by default in from_settings, and with -1.
        assert_eq!(assess(&f, &defaults()).status, Status::Ok);
        assert_eq!(assess(&f, &defaults().with_xmin_age(-1, -1)).status, Status::Ok);
        f.xmin_age = None;
        f.catalog_xmin_age = None;
        assert_eq!(assess(&f, &Thresholds::from_settings(-1, -1, -1).with_xmin_age(0, 0)).status, Status::Ok);
    }

    #[test]
    fn inactivity_combines_live_state_and_history() {
        let now = 500 * S;
        let p = Positions { restart_lsn: 10, confirmed_flush: 20 };
        let tracked = |active_in_last_sample, inactive_since, saw_start| {
            Ok(Some(TrackedActivity { active_in_last_sample, inactive_since, saw_start, last_positions: p }))
        };
        assert_eq!(inactivity(true, p, Err(HistoryGap::NotPreloaded), now), Inactivity::Active);
        assert_eq!(inactivity(true, p, tracked(false, Some(1), false), now), Inactivity::Active);
        assert_eq!(
            inactivity(false, p, Err(HistoryGap::SamplerNotRunning), now),
            Inactivity::Unknown(HistoryGap::SamplerNotRunning)
        );
        // Not sampled yet / released after the last sample: the later bound, now.
        assert_eq!(inactivity(false, p, Ok(None), now), Inactivity::Since { at: now, at_least: false });
        assert_eq!(
            inactivity(false, p, tracked(true, None, true), now),
            Inactivity::Since { at: now, at_least: false }
        );
        assert_eq!(
            inactivity(false, p, tracked(false, Some(100 * S), true), now),
            Inactivity::Since { at: 100 * S, at_least: false }
        );
        assert_eq!(
            inactivity(false, p, tracked(false, Some(100 * S), false), now),
            Inactivity::Since { at: 100 * S, at_least: true }
        );
        // Moved after the latest sample (a consumer read just now): since now.
        for live in
            [Positions { restart_lsn: 10, confirmed_flush: 30 }, Positions { restart_lsn: 11, confirmed_flush: 20 }]
        {
            assert_eq!(
                inactivity(false, live, tracked(false, Some(100 * S), true), now),
                Inactivity::Since { at: now, at_least: false }
            );
        }
        // Invalidated since (restart_lsn NULL): not a consumer's doing.
        assert_eq!(
            inactivity(
                false,
                Positions { restart_lsn: 0, confirmed_flush: 20 },
                tracked(false, Some(100 * S), true),
                now
            ),
            Inactivity::Since { at: 100 * S, at_least: false }
        );
    }

    #[test]
    fn growth_rate_is_the_least_squares_slope() {
        assert_eq!(growth_rate(&[]), None);
        assert_eq!(growth_rate(&[(0, 10)]), None);
        assert_eq!(growth_rate(&[(5 * S, 10), (5 * S, 20)]), None, "no time between the points");
        let linear: Vec<(i64, i64)> = (0..10).map(|i| (i * S, 1000 + 500 * i)).collect();
        assert!((growth_rate(&linear).unwrap() - 500.0).abs() < 1e-9);
        // A consumer that catches up: shrinking.
        let shrinking: Vec<(i64, i64)> = (0..10).map(|i| (i * S, 10_000 - 1000 * i)).collect();
        assert!((growth_rate(&shrinking).unwrap() + 1000.0).abs() < 1e-9);
        // A sawtooth (WAL retained then confirmed) averages out near zero.
        let saw: Vec<(i64, i64)> = (0..40).map(|i| (i * S, (i % 4) * 1000)).collect();
        assert!(growth_rate(&saw).unwrap().abs() < 100.0, "{:?}", growth_rate(&saw));
    }

    #[test]
    fn growth_rate_uses_the_recent_window() {
        // Flat for an hour, then growing 2000 bytes/s for the last 5 minutes.
        let mut pts: Vec<(i64, i64)> = (0..360).map(|i| (i * 10 * S, 0)).collect();
        let start = 3600 * S;
        pts.extend((0..=30).map(|i| (start + i * 10 * S, i * 10 * 2000)));
        let g = growth_rate(&pts).unwrap();
        assert!((g - 2000.0).abs() < 1.0, "{g}");
        // Long intervals: the last two points.
        let sparse = [(0, 0), (600 * S, 600), (1200 * S, 6600)];
        assert!((growth_rate(&sparse).unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn forecast_against_the_nearer_of_safe_wal_size_and_free_space() {
        let f = forecast(Some(100.0), Some(WalStatus::Reserved), Some(1000), Some(1 << 40));
        assert_eq!(f.basis, ForecastBasis::SafeWalSize);
        assert_eq!(f.seconds_until_exhausted, Some(10.0));
        // max_slot_wal_keep_size larger than the free space: the disk is nearer.
        let f = forecast(Some(100.0), Some(WalStatus::Reserved), Some(1 << 40), Some(5000));
        assert_eq!(f.basis, ForecastBasis::Disk);
        assert_eq!(f.remaining_bytes, Some(5000));
        assert_eq!(f.seconds_until_exhausted, Some(50.0));
        let f = forecast(Some(100.0), Some(WalStatus::Extended), None, Some(5000));
        assert_eq!(f.basis, ForecastBasis::Disk);
        assert_eq!(f.seconds_until_exhausted, Some(50.0));
        // Lost or already past the limit: exhausted now.
        let f = forecast(None, Some(WalStatus::Lost), None, Some(1 << 40));
        assert_eq!((f.basis, f.seconds_until_exhausted), (ForecastBasis::SafeWalSize, Some(0.0)));
        let f = forecast(Some(5.0), Some(WalStatus::Unreserved), Some(-10), Some(1 << 40));
        assert_eq!((f.basis, f.seconds_until_exhausted), (ForecastBasis::SafeWalSize, Some(0.0)));
        // Not growing, or unknown growth: no forecast.
        assert_eq!(forecast(Some(0.0), Some(WalStatus::Reserved), Some(1000), None).seconds_until_exhausted, None);
        assert_eq!(forecast(Some(-3.0), Some(WalStatus::Reserved), Some(1000), None).seconds_until_exhausted, None);
        assert_eq!(forecast(None, Some(WalStatus::Reserved), Some(1000), None).seconds_until_exhausted, None);
        // No WAL reserved.
        assert_eq!(forecast(Some(5.0), None, None, Some(1)).seconds_until_exhausted, None);
        // Unknown free space, no limit.
        assert_eq!(forecast(Some(5.0), Some(WalStatus::Reserved), None, None).seconds_until_exhausted, None);
    }

    #[test]
    fn drop_verdicts() {
        let now = 1000 * S;
        assert_eq!(drop_verdict(&Inactivity::Active, now, 0), DropVerdict::KeepActive);
        assert_eq!(
            drop_verdict(&Inactivity::Unknown(HistoryGap::NotPreloaded), now, 0),
            DropVerdict::KeepUnknown(HistoryGap::NotPreloaded)
        );
        let since = |secs| Inactivity::Since { at: now - secs * S, at_least: false };
        assert_eq!(drop_verdict(&since(59), now, 60 * S), DropVerdict::KeepTooRecent);
        assert_eq!(drop_verdict(&since(60), now, 60 * S), DropVerdict::Drop);
        assert_eq!(drop_verdict(&since(0), now, 0), DropVerdict::Drop);
    }

    #[test]
    fn pretty_units() {
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(1023), "1023 bytes");
        assert_eq!(bytes(1536), "1.5 kB");
        assert_eq!(bytes(64 * 1024), "64 kB");
        assert_eq!(bytes(GB), "1 GB");
        assert_eq!(bytes(u64::MAX), "16384 PB");
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(90), "1.5 min");
        assert_eq!(duration(7200), "2 h");
        assert_eq!(duration(172_800), "2 d");
    }

    #[test]
    fn names_round_trip() {
        for w in WalStatus::ALL {
            assert_eq!(WalStatus::parse(w.as_str()), Some(w));
        }
        assert_eq!(WalStatus::parse("bogus"), None);
        assert!(Status::Lost > Status::Critical && Status::Critical > Status::Warning && Status::Warning > Status::Ok);
        assert_eq!(Status::ALL.map(Status::as_str), ["ok", "warning", "critical", "lost"]);
    }
}
