//! Gathering: the live catalog rows (through SPI), the sampler's history
//! (shared memory) and the settings, combined by the pure rules of
//! `health.rs` into one [`SlotReport`] per slot. `slot_health()`,
//! `drop_stale_slots()` and `metrics()` all start here, so they agree.

use super::errors::OrReport;
use super::health::{
    self, Assessment, Consumer, Facts, Forecast, HistoryGap, Inactivity, Positions, Status, Thresholds, Tracked,
    WalStatus,
};
use super::history::{GAP_SLACK_US, SlotHistory};
use super::{sampler, settings, shmem};
use crate::ffi::lsn::Lsn;
use pgrx::prelude::*;
use std::collections::HashMap;

/// One row of `logical_ext.slot_health()`.
#[derive(Debug, Clone)]
pub(crate) struct SlotReport {
    pub(crate) slot_name: String,
    pub(crate) plugin: Option<String>,
    pub(crate) slot_type: String,
    pub(crate) database: Option<String>,
    pub(crate) active: bool,
    pub(crate) active_pid: Option<i32>,
    pub(crate) restart_lsn: Option<Lsn>,
    pub(crate) confirmed_flush_lsn: Option<Lsn>,
    pub(crate) lag_bytes: Option<i64>,
    pub(crate) retained_wal_bytes: Option<i64>,
    pub(crate) wal_status: Option<WalStatus>,
    pub(crate) safe_wal_size: Option<i64>,
    pub(crate) temporary: bool,
    pub(crate) xmin_age: Option<i64>,
    pub(crate) catalog_xmin_age: Option<i64>,
    /// `pg_stat_replication_slots` (logical slots that decoded something).
    pub(crate) decoding: Option<DecodingStats>,
    pub(crate) inactivity: Inactivity,
    pub(crate) growth: Option<f64>,
    pub(crate) forecast: Forecast,
    pub(crate) assessment: Assessment,
    /// The WAL position the figures were measured against.
    pub(crate) wal_lsn: Lsn,
    /// `TimestampTz` of the measurement.
    pub(crate) now: i64,
}

impl SlotReport {
    pub(crate) fn status(&self) -> Status {
        self.assessment.status
    }

    /// Seconds since `inactive_since`, when known.
    pub(crate) fn inactive_seconds(&self) -> Option<f64> {
        self.inactivity.since().map(|at| (self.now - at).max(0) as f64 / 1e6)
    }
}

/// A logical slot's row of `pg_stat_replication_slots`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DecodingStats {
    pub(crate) spill_txns: i64,
    pub(crate) spill_bytes: i64,
    pub(crate) stream_txns: i64,
    pub(crate) stream_bytes: i64,
    pub(crate) total_bytes: i64,
}

/// What the sampler remembers, copied out of shared memory.
struct History {
    by_name: HashMap<String, SlotHistory>,
}

/// The sampler's state as this backend sees it: `Err` says why there is no
/// history at all.
fn history() -> Result<History, HistoryGap> {
    if settings::monitor_interval().is_none() && shmem::attached() {
        return Err(HistoryGap::SamplingOff);
    }
    // SAFETY: always valid in a backend.
    let now = unsafe { pgrx::pg_sys::GetCurrentTimestamp() };
    shmem::read(|h, table| {
        if h.sampler_pid == 0 {
            return Err(HistoryGap::SamplerNotRunning);
        }
        let max_gap = 2 * i64::from(h.interval_ms) * 1000 + GAP_SLACK_US;
        if h.samples_taken > 0 && now - h.last_sample_at > max_gap {
            return Err(HistoryGap::SamplerStale);
        }
        let by_name = table.iter().filter(|e| e.in_use).map(|e| (e.name().to_string(), *e)).collect();
        Ok(History { by_name })
    })
    .unwrap_or(Err(HistoryGap::NotPreloaded))
}

/// `pg_wal` under the data directory.
fn pg_wal_dir() -> std::path::PathBuf {
    // SAFETY: DataDir is the server's data directory, set before any
    // backend runs.
    let dir = unsafe { crate::ffi::cstr_to_string(pgrx::pg_sys::DataDir) };
    std::path::Path::new(&dir).join("pg_wal")
}

/// (free bytes for unprivileged users, size) of the file system holding
/// `pg_wal` (a symbolic link to another file system is followed).
fn pg_wal_filesystem() -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(pg_wal_dir().as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we pass, given a valid path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        let unit = st.f_frsize as u64;
        Some(((st.f_bavail as u64).saturating_mul(unit), (st.f_blocks as u64).saturating_mul(unit)))
    }
}

/// Free bytes of the file system holding `pg_wal`.
fn pg_wal_free_bytes() -> Option<u64> {
    pg_wal_filesystem().map(|(free, _)| free)
}

/// Bytes of the files directly in `pg_wal` (as `pg_ls_waldir()` sums them:
/// segments, history and backup files, not `archive_status/`). A file
/// removed while we list is skipped.
fn pg_wal_directory_bytes() -> Option<u64> {
    let entries = std::fs::read_dir(pg_wal_dir()).ok()?;
    Some(
        entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum(),
    )
}

/// `max_slot_wal_keep_size` in bytes, `None` when unlimited (-1).
fn max_slot_wal_keep_size() -> Option<u64> {
    // SAFETY: plain int GUC.
    let mb = unsafe { pgrx::pg_sys::max_slot_wal_keep_size_mb };
    u64::try_from(mb).ok().map(|mb| mb * 1024 * 1024)
}

/// One row of `pg_replication_slots`.
struct SlotRow {
    slot_name: String,
    plugin: Option<String>,
    slot_type: String,
    database: Option<String>,
    active: bool,
    active_pid: Option<i32>,
    restart_lsn: Option<Lsn>,
    confirmed_flush_lsn: Option<Lsn>,
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    temporary: bool,
    xmin_age: Option<i64>,
    catalog_xmin_age: Option<i64>,
    decoding: Option<DecodingStats>,
}

fn slot_rows() -> Vec<SlotRow> {
    Spi::connect(|client| {
        let table = client.select(
            "SELECT s.slot_name::text, s.plugin::text, s.slot_type, s.database::text, s.active, s.active_pid,
                    s.restart_lsn, s.confirmed_flush_lsn, s.wal_status, s.safe_wal_size,
                    s.temporary, pg_catalog.age(s.xmin)::int8, pg_catalog.age(s.catalog_xmin)::int8,
                    st.spill_txns, st.spill_bytes, st.stream_txns, st.stream_bytes, st.total_bytes
               FROM pg_catalog.pg_replication_slots s
               LEFT JOIN pg_catalog.pg_stat_replication_slots st ON st.slot_name = s.slot_name
              ORDER BY s.slot_name",
            None,
            &[],
        )?;
        let mut rows = Vec::new();
        for r in table {
            rows.push(SlotRow {
                slot_name: r.get::<String>(1)?.unwrap_or_default(),
                plugin: r.get(2)?,
                slot_type: r.get::<String>(3)?.unwrap_or_default(),
                database: r.get(4)?,
                active: r.get::<bool>(5)?.unwrap_or(false),
                active_pid: r.get(6)?,
                restart_lsn: r.get(7)?,
                confirmed_flush_lsn: r.get(8)?,
                wal_status: r.get(9)?,
                safe_wal_size: r.get(10)?,
                temporary: r.get::<bool>(11)?.unwrap_or(false),
                xmin_age: r.get(12)?,
                catalog_xmin_age: r.get(13)?,
                decoding: match r.get::<i64>(14)? {
                    None => None,
                    Some(spill_txns) => Some(DecodingStats {
                        spill_txns,
                        spill_bytes: r.get::<i64>(15)?.unwrap_or(0),
                        stream_txns: r.get::<i64>(16)?.unwrap_or(0),
                        stream_bytes: r.get::<i64>(17)?.unwrap_or(0),
                        total_bytes: r.get::<i64>(18)?.unwrap_or(0),
                    }),
                },
            });
        }
        Ok::<_, pgrx::spi::Error>(rows)
    })
    .or_report()
}

/// Every slot, assessed against `thresholds`.
pub(crate) fn slots(thresholds: &Thresholds) -> Vec<SlotReport> {
    let rows = slot_rows();
    let history = history();
    // SAFETY: always valid in a backend.
    let now = unsafe { pgrx::pg_sys::GetCurrentTimestamp() };
    let wal_lsn = sampler::current_wal_lsn();
    let keep_size = max_slot_wal_keep_size();
    let free = pg_wal_free_bytes();

    rows.into_iter()
        .map(|row| {
            let wal_status = row.wal_status.as_deref().and_then(WalStatus::parse);
            // Logical slots lag behind what their consumer confirmed;
            // physical slots have no confirmed_flush_lsn, their restart_lsn
            // is the standby's flush position.
            let lag_from = row.confirmed_flush_lsn.or(row.restart_lsn);
            let lag_bytes = lag_from.map(|l| wal_lsn.saturating_sub(l.0) as i64);
            let retained = row.restart_lsn.map(|r| wal_lsn.saturating_sub(r.0) as i64);

            let slot_history = history.as_ref().map(|h| h.by_name.get(&row.slot_name));
            let tracked: Tracked = slot_history.map(|h| h.map(SlotHistory::activity)).map_err(|g| *g);
            let live = Positions {
                restart_lsn: row.restart_lsn.map_or(0, |l| l.0),
                confirmed_flush: row.confirmed_flush_lsn.map_or(0, |l| l.0),
            };
            let inactivity = health::inactivity(row.active, live, tracked, now);
            let growth = match slot_history {
                Err(gap) => Err(*gap),
                Ok(h) => {
                    let points: Vec<(i64, i64)> =
                        h.into_iter().flat_map(|h| h.samples()).filter_map(|s| Some((s.at, s.retained()?))).collect();
                    health::growth_rate(&points).ok_or(HistoryGap::TooFewSamples)
                }
            };
            let forecast = health::forecast(growth.ok(), wal_status, row.safe_wal_size, free);
            let facts = Facts {
                consumer: Consumer::of(&row.slot_type, row.plugin.as_deref()),
                confirmed_flush_lsn: row.confirmed_flush_lsn.map(|l| l.0),
                lag_bytes,
                retained_bytes: retained,
                xmin_age: row.xmin_age,
                catalog_xmin_age: row.catalog_xmin_age,
                wal_status,
                inactivity,
                growth,
                forecast,
                max_slot_wal_keep_size: keep_size,
                now,
            };
            let assessment = health::assess(&facts, thresholds);
            SlotReport {
                slot_name: row.slot_name,
                plugin: row.plugin,
                slot_type: row.slot_type,
                database: row.database,
                active: row.active,
                active_pid: row.active_pid,
                restart_lsn: row.restart_lsn,
                confirmed_flush_lsn: row.confirmed_flush_lsn,
                lag_bytes,
                retained_wal_bytes: retained,
                wal_status,
                safe_wal_size: row.safe_wal_size,
                temporary: row.temporary,
                xmin_age: row.xmin_age,
                catalog_xmin_age: row.catalog_xmin_age,
                decoding: row.decoding,
                inactivity,
                growth: facts.growth.ok(),
                forecast,
                assessment,
                wal_lsn: Lsn(wal_lsn),
                now,
            }
        })
        .collect()
}

/// One walsender, from `logical_ext.replication_status()`.
#[derive(Debug, Clone)]
pub(crate) struct WalsenderReport {
    pub(crate) application_name: String,
    pub(crate) slot_name: Option<String>,
    /// sent, write, flush, replay lag in bytes.
    pub(crate) lag_bytes: [Option<i64>; 4],
    /// write, flush, replay lag in seconds.
    pub(crate) lag_seconds: [Option<f64>; 3],
}

pub(crate) fn walsenders() -> Vec<WalsenderReport> {
    Spi::connect(|client| {
        let table = client.select(
            "SELECT application_name, slot_name::text,
                    sent_lag_bytes, write_lag_bytes, flush_lag_bytes, replay_lag_bytes,
                    extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8,
                    extract(epoch FROM replay_lag)::float8
               FROM logical_ext.replication_status()",
            None,
            &[],
        )?;
        let mut rows = Vec::new();
        for r in table {
            rows.push(WalsenderReport {
                application_name: r.get::<String>(1)?.unwrap_or_default(),
                slot_name: r.get(2)?,
                lag_bytes: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                lag_seconds: [r.get(7)?, r.get(8)?, r.get(9)?],
            });
        }
        Ok::<_, pgrx::spi::Error>(rows)
    })
    .or_report()
}

/// One logical_ext subscription (the apply part), from
/// `logical_ext.subscription_status`.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionReport {
    pub(crate) name: String,
    pub(crate) enabled: bool,
    pub(crate) state: String,
    pub(crate) lag_bytes: Option<f64>,
    pub(crate) lag_seconds: Option<f64>,
    pub(crate) applied_transactions: i64,
    pub(crate) applied_changes: i64,
    /// Unix time of the last message from the publisher.
    pub(crate) last_message_unix: Option<f64>,
    /// Conflicts by type, in `ConflictType::ALL` order (that of
    /// `subscription_status`'s `conflicts_*` columns).
    pub(crate) conflicts: [i64; 6],
    pub(crate) apply_errors: i64,
    pub(crate) sync_errors: i64,
}

pub(crate) fn subscriptions() -> Vec<SubscriptionReport> {
    Spi::connect(|client| {
        let table = client.select(
            "SELECT name, enabled, state, lag_bytes::float8, extract(epoch FROM lag_time)::float8,
                    applied_transactions, applied_changes, extract(epoch FROM last_msg_receipt_time)::float8,
                    conflicts_insert_exists, conflicts_update_exists, conflicts_update_missing,
                    conflicts_delete_missing, conflicts_update_origin_differs, conflicts_delete_origin_differs,
                    apply_error_count, sync_error_count
               FROM logical_ext.subscription_status",
            None,
            &[],
        )?;
        let mut rows = Vec::new();
        for r in table {
            rows.push(SubscriptionReport {
                name: r.get::<String>(1)?.unwrap_or_default(),
                enabled: r.get::<bool>(2)?.unwrap_or(false),
                state: r.get::<String>(3)?.unwrap_or_default(),
                lag_bytes: r.get(4)?,
                lag_seconds: r.get(5)?,
                applied_transactions: r.get::<i64>(6)?.unwrap_or(0),
                applied_changes: r.get::<i64>(7)?.unwrap_or(0),
                last_message_unix: r.get(8)?,
                conflicts: [
                    r.get::<i64>(9)?.unwrap_or(0),
                    r.get::<i64>(10)?.unwrap_or(0),
                    r.get::<i64>(11)?.unwrap_or(0),
                    r.get::<i64>(12)?.unwrap_or(0),
                    r.get::<i64>(13)?.unwrap_or(0),
                    r.get::<i64>(14)?.unwrap_or(0),
                ],
                apply_errors: r.get::<i64>(15)?.unwrap_or(0),
                sync_errors: r.get::<i64>(16)?.unwrap_or(0),
            });
        }
        Ok::<_, pgrx::spi::Error>(rows)
    })
    .or_report()
}

/// The sampler as `logical_ext.sampler_status()` shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SamplerReport {
    pub(crate) preloaded: bool,
    pub(crate) running: bool,
    pub(crate) pid: Option<i32>,
    pub(crate) started_at: Option<i64>,
    pub(crate) interval_ms: Option<i32>,
    pub(crate) last_sample_at: Option<i64>,
    pub(crate) samples_taken: i64,
    pub(crate) tracked_slots: i32,
    pub(crate) capacity: i32,
    pub(crate) untracked_slots: i32,
    pub(crate) note: String,
}

pub(crate) fn sampler() -> SamplerReport {
    let gap = history().err();
    let mut r = shmem::read(|h, table| SamplerReport {
        preloaded: true,
        running: h.sampler_pid != 0,
        pid: (h.sampler_pid != 0).then_some(h.sampler_pid),
        started_at: (h.sampler_pid != 0).then_some(h.sampler_started_at),
        interval_ms: (h.sampler_pid != 0).then_some(h.interval_ms),
        last_sample_at: (h.samples_taken > 0).then_some(h.last_sample_at),
        samples_taken: h.samples_taken as i64,
        tracked_slots: table.iter().filter(|e| e.in_use).count() as i32,
        capacity: h.capacity as i32,
        untracked_slots: h.untracked_slots as i32,
        note: String::new(),
    })
    .unwrap_or_default();
    r.note = match gap {
        Some(g) => g.explain().to_string(),
        None => "sampling".to_string(),
    };
    r
}

/// Server-wide WAL figures: positions, `pg_wal` and its file system.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerReport {
    /// Where the figures were measured: the write position on a primary,
    /// the last replayed one on a standby.
    pub(crate) wal_lsn: u64,
    pub(crate) in_recovery: bool,
    /// `pg_last_wal_receive_lsn()` and `pg_last_wal_replay_lsn()` (standby).
    pub(crate) receive_lsn: Option<u64>,
    pub(crate) replay_lsn: Option<u64>,
    pub(crate) wal_directory_bytes: Option<u64>,
    pub(crate) wal_filesystem_free_bytes: Option<u64>,
    pub(crate) wal_filesystem_size_bytes: Option<u64>,
}

pub(crate) fn server() -> ServerReport {
    // A read-only select: Spi::get_* would run it as an update, which
    // assigns a transaction ID, impossible on a standby.
    let (in_recovery, receive, replay) = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_receive_lsn(), \
                 pg_catalog.pg_last_wal_replay_lsn()",
                Some(1),
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((row.get::<bool>(1)?, row.get::<Lsn>(2)?, row.get::<Lsn>(3)?))
    })
    .or_report();
    let fs = pg_wal_filesystem();
    ServerReport {
        wal_lsn: sampler::current_wal_lsn(),
        in_recovery: in_recovery.unwrap_or(false),
        receive_lsn: receive.map(|l| l.0),
        replay_lsn: replay.map(|l| l.0),
        wal_directory_bytes: pg_wal_directory_bytes(),
        wal_filesystem_free_bytes: fs.map(|f| f.0),
        wal_filesystem_size_bytes: fs.map(|f| f.1),
    }
}
