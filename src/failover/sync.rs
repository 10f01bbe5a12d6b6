//! The standby's slot synchronization worker (`logical_ext slot sync`).
//!
//! Design notes
//! - Registered at server start when logical_ext is preloaded; it works
//!   only while the server is in recovery and `logical_ext.synchronize_slots`
//!   is on, and exits (for good) once the server is promoted.
//! - Each round (every second) it reads, over one connection to the primary
//!   (`primary_conninfo` with `dbname = logical_ext.slot_sync_database`),
//!   the primary's failover-marked `logical_ext` slots, then handles each
//!   slot on its own: an error or a wait on one never holds the others
//!   (no head-of-line blocking: nothing here waits for a slot).
//! - A new copy is created TEMPORARY, with its own reservation: the WAL
//!   from the standby's last restartpoint and the oldest catalog_xmin that
//!   is still safe here. hot_standby_feedback carries that catalog_xmin to
//!   the primary's physical slot. The copy becomes PERSISTENT only when the
//!   primary's slot is at or past that reservation and the decoding
//!   snapshot serialized on the primary at its restart_lsn has been copied
//!   here (`pg_logical/snapshots/`, read with `pg_read_binary_file`): a
//!   restart on this node after promotion then finds the snapshot the
//!   primary would have used. Until then `failover_readiness()` says why it
//!   is not safe (pg_failover_slots instead waits inside the round and
//!   loses a slot still in its first sync on failover, silently).
//! - A persistent copy moves forward only (positions the primary has and
//!   this standby has received; confirmed_flush capped at the standby's
//!   received WAL). After promotion the copies are ordinary slots.
//! - A copy whose slot was dropped or unmarked on the primary is dropped.
//!   Logical slots cannot be created on a PostgreSQL 15 standby otherwise,
//!   so every inactive logical slot here that the primary does not list is
//!   taken for a copy of ours.

use super::rules::{self, Local, NotSafe, Remote, Step};
use super::settings;
use super::slots::{self, SlotView};
use super::state::{self, Seen};
use crate::apply::PublisherConnection;
use crate::ffi::worker::{self as backend, in_transaction};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::Duration;

const NAP: Duration = Duration::from_secs(1);

/// Register the worker (from `_PG_init` while preloading).
pub(crate) fn register() {
    BackgroundWorkerBuilder::new("logical_ext slot sync")
        .set_type("logical_ext slot sync")
        .set_function("logical_ext_slot_sync_main")
        .set_library("logical_ext")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn in_recovery() -> bool {
    // SAFETY: reads shared state.
    unsafe { pg_sys::RecoveryInProgress() }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_slot_sync_main(_arg: pg_sys::Datum) {
    backend::attach_signal_handlers();
    if !in_recovery() {
        // A primary: nothing to copy; exit 0 unregisters the worker.
        return;
    }
    let db = settings::slot_sync_database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    backend::pin_session_search_path();
    // SAFETY: backend global.
    state::set_worker(unsafe { pg_sys::MyProcPid });
    let mut conn: Option<PublisherConnection> = None;
    loop {
        backend::reload_config_if_due();
        if !in_recovery() {
            log!("logical_ext slot sync: the server was promoted; the synchronized slots are ordinary slots now");
            state::set_worker(0);
            return;
        }
        if !settings::SYNCHRONIZE_SLOTS.get() {
            conn = None;
            backend::wait(Some(NAP));
            continue;
        }
        if conn.is_none() {
            match connect(&db) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warning!("logical_ext slot sync: could not connect to the primary: {e}");
                    backend::sleep(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if let Err(e) = round(conn.as_mut().expect("connected")) {
            warning!("logical_ext slot sync: {e}");
            conn = None;
            backend::sleep(Duration::from_secs(5));
            continue;
        }
        backend::wait(Some(NAP));
    }
}

fn connect(db: &str) -> Result<PublisherConnection, String> {
    // SAFETY: a GUC string of the startup configuration (NULL or valid).
    let primary = unsafe { crate::ffi::cstr_to_string(pg_sys::PrimaryConnInfo) };
    if primary.trim().is_empty() {
        return Err("primary_conninfo is empty".into());
    }
    // SAFETY: plain bool GUC.
    if !unsafe { pg_sys::hot_standby_feedback } {
        warning!(
            "logical_ext slot sync: hot_standby_feedback is off; the primary may remove catalog rows the copies need, so no copy becomes persistent"
        );
    }
    let conninfo = format!("{primary} dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"));
    PublisherConnection::connect(&conninfo, "logical_ext slot sync").map_err(|e| e.0)
}

/// A failover slot as the primary lists it.
struct Listed {
    name: String,
    database: String,
    two_phase: bool,
    remote: Remote,
}

fn lsn(s: &Option<String>) -> u64 {
    s.as_deref().and_then(rules::parse_lsn).unwrap_or(0)
}

/// On the primary: whether `logical_ext.failover_slot` is a superuser-owned
/// table (the extension's). Asked first, in its own statement: in a database
/// without the extension, a role that may create the schema could put a view
/// of that name there, whose code would run as the standby's connection role.
const OWN_TABLE_QUERY: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_roles a ON a.oid = c.relowner \
     WHERE n.nspname = 'logical_ext' AND c.relname = 'failover_slot' AND c.relkind = 'r' AND a.rolsuper)::text";

fn round(conn: &mut PublisherConnection) -> Result<(), String> {
    let own = in_transaction(|| conn.exec(OWN_TABLE_QUERY, 1))
        .map_err(|e| format!("could not read the primary's catalog: {}", e.0))?;
    if own.first().and_then(|r| r[0].as_deref()) != Some("true") {
        return Err("the primary's database has no logical_ext.failover_slot of the extension's \
                    (is logical_ext installed in logical_ext.slot_sync_database there?)"
            .into());
    }
    let rows = in_transaction(|| {
        conn.exec(
            "SELECT s.slot_name::text, s.database::text, s.two_phase::text, s.restart_lsn::text, \
             s.confirmed_flush_lsn::text, s.catalog_xmin::text \
             FROM logical_ext.failover_slot f JOIN pg_catalog.pg_replication_slots s ON s.slot_name = f.slot_name \
             WHERE s.slot_type = 'logical' AND s.plugin = 'logical_ext' AND s.restart_lsn IS NOT NULL \
             ORDER BY 1",
            6,
        )
    })
    .map_err(|e| format!("could not read the primary's failover slots: {}", e.0))?;
    let listed: Vec<Listed> = rows
        .into_iter()
        .map(|r| Listed {
            name: r[0].clone().unwrap_or_default(),
            database: r[1].clone().unwrap_or_default(),
            two_phase: r[2].as_deref() == Some("true"),
            remote: Remote {
                restart_lsn: lsn(&r[3]),
                confirmed_flush: lsn(&r[4]),
                catalog_xmin: r[5].as_deref().and_then(|x| x.parse().ok()).unwrap_or(0),
            },
        })
        .collect();
    in_transaction(|| drop_unlisted(&listed));
    let received = received_lsn();
    let mut seen = Vec::new();
    for l in listed.iter().take(state::MAX_ENTRIES) {
        // One slot's failure is its own: logged, the others go on.
        // Its own transaction (catalog lookups, the primary's answers) and
        // subtransaction (an ERROR is caught and logged).
        let hold = in_transaction(|| {
            match crate::ffi::in_subtransaction(std::panic::AssertUnwindSafe(|| sync_one(conn, l, received))) {
                Ok(h) => h,
                Err(e) => {
                    release_if_acquired();
                    warning!("logical_ext slot sync: slot \"{}\": {}", l.name, e.message());
                    Some(NotSafe::NoCopy)
                }
            }
        });
        seen.push(Seen { name: l.name.clone(), remote: l.remote, hold });
    }
    // SAFETY: backend globals.
    state::record_round(unsafe { pg_sys::MyProcPid }, backend::now_ts(), &seen);
    Ok(())
}

/// How far this standby has WAL: received and flushed by the walreceiver,
/// or replayed (from the archive), whichever is further.
pub(crate) fn received_lsn() -> u64 {
    // SAFETY: reads shared positions.
    unsafe {
        let flushed = pg_sys::GetWalRcvFlushRecPtr(std::ptr::null_mut(), std::ptr::null_mut());
        let replayed = pg_sys::GetXLogReplayRecPtr(std::ptr::null_mut());
        flushed.max(replayed)
    }
}

fn release_if_acquired() {
    // SAFETY: releases the slot this process acquired, if any.
    unsafe {
        if !pg_sys::MyReplicationSlot.is_null() {
            pg_sys::ReplicationSlotRelease();
        }
    }
}

fn local_of(v: &SlotView) -> Local {
    Local {
        restart_lsn: v.restart_lsn,
        confirmed_flush: v.confirmed_flush,
        catalog_xmin: v.catalog_xmin,
        persistent: v.persistent,
    }
}

/// One slot's round; `Some(reason)` when its copy is held.
fn sync_one(conn: &mut PublisherConnection, l: &Listed, received: u64) -> Option<NotSafe> {
    let name = CString::new(l.name.as_str()).ok()?;
    let existing = slots::read().into_iter().find(|s| s.name == l.name);
    // SAFETY: backend global.
    let me = unsafe { pg_sys::MyProcPid };
    let local = match existing {
        Some(s) if s.active_pid != 0 && s.active_pid != me => return None,
        Some(s) if !s.logical() || s.plugin != "logical_ext" => {
            warning!("logical_ext slot sync: another slot \"{}\" exists here; the failover slot is not copied", l.name);
            return Some(NotSafe::NoCopy);
        }
        Some(s) => local_of(&s),
        None => match create_copy(&name, l) {
            Some(local) => local,
            None => return Some(NotSafe::NoCopy),
        },
    };
    let snapshot_copied = l.remote.restart_lsn == local.restart_lsn || copy_snapshot(conn, l.remote.restart_lsn);
    match rules::sync_step(l.remote, local, received, snapshot_copied) {
        Step::Hold(why) => Some(why),
        Step::Advance { restart_lsn, confirmed_flush, catalog_xmin } => {
            if local.persistent
                && local.restart_lsn == restart_lsn
                && local.confirmed_flush == confirmed_flush
                && local.catalog_xmin == catalog_xmin
            {
                return None;
            }
            advance(&name, local.persistent, restart_lsn, confirmed_flush, catalog_xmin);
            None
        }
    }
}

/// Create a temporary copy reserving WAL and catalog rows from now on
/// (pg_failover_slots' way: the slot API, then its fields under the mutex).
fn create_copy(name: &CString, l: &Listed) -> Option<Local> {
    let db = CString::new(l.database.as_str()).ok()?;
    // SAFETY: a catalog lookup inside the round's transaction.
    let dboid = unsafe { pg_sys::get_database_oid(db.as_ptr(), true) };
    if dboid == pg_sys::InvalidOid {
        return None;
    }
    // SAFETY: the slot API as walsender's CREATE_REPLICATION_SLOT uses it;
    // the new slot is ours (MyReplicationSlot) until released; its fields
    // are set under its spinlock, the xmin under the locks
    // CreateInitDecodingContext takes for the same purpose.
    unsafe {
        pg_sys::ReplicationSlotCreate(
            name.as_ptr(),
            true,
            pg_sys::ReplicationSlotPersistency::RS_TEMPORARY,
            l.two_phase,
        );
        let slot = pg_sys::MyReplicationSlot;
        pg_sys::SpinLockAcquire(&raw mut (*slot).mutex);
        (*slot).data.database = dboid;
        let plugin = b"logical_ext\0";
        (*slot).data.plugin.data = [0; 64];
        for (d, s) in (*slot).data.plugin.data.iter_mut().zip(plugin) {
            *d = *s as std::ffi::c_char;
        }
        pg_sys::SpinLockRelease(&raw mut (*slot).mutex);
        pg_sys::ReplicationSlotReserveWal();
        use crate::ffi::slots::{PROC_ARRAY_LOCK, REPLICATION_SLOT_CONTROL_LOCK};
        let ctl_lock = &raw mut (*pg_sys::MainLWLockArray.add(REPLICATION_SLOT_CONTROL_LOCK)).lock;
        let proc_lock = &raw mut (*pg_sys::MainLWLockArray.add(PROC_ARRAY_LOCK)).lock;
        pg_sys::LWLockAcquire(ctl_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        pg_sys::LWLockAcquire(proc_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let xmin = pg_sys::GetOldestSafeDecodingTransactionId(true);
        (*slot).effective_catalog_xmin = xmin;
        (*slot).data.catalog_xmin = xmin;
        pg_sys::ReplicationSlotsComputeRequiredXmin(true);
        pg_sys::LWLockRelease(proc_lock);
        pg_sys::LWLockRelease(ctl_lock);
        let local = Local {
            restart_lsn: (*slot).data.restart_lsn,
            confirmed_flush: 0,
            catalog_xmin: xmin.into_inner(),
            persistent: false,
        };
        // A temporary slot stays ours after the release (dropped when
        // this process exits).
        pg_sys::ReplicationSlotRelease();
        log!(
            "logical_ext slot sync: created a temporary copy of slot \"{}\" (first sync: reserved from {:X}/{:X}, catalog_xmin {})",
            l.name,
            local.restart_lsn >> 32,
            local.restart_lsn as u32,
            local.catalog_xmin
        );
        Some(local)
    }
}

fn advance(name: &CString, persistent: bool, restart_lsn: u64, confirmed_flush: u64, catalog_xmin: u32) {
    // SAFETY: acquire (our temporary copy or an inactive persistent one),
    // set its positions under its spinlock, save, release; then the global
    // horizons are recomputed as after any slot move.
    unsafe {
        pg_sys::ReplicationSlotAcquire(name.as_ptr(), true);
        let slot = pg_sys::MyReplicationSlot;
        pg_sys::SpinLockAcquire(&raw mut (*slot).mutex);
        (*slot).data.restart_lsn = restart_lsn;
        (*slot).data.confirmed_flush = confirmed_flush;
        (*slot).data.catalog_xmin = catalog_xmin.into();
        (*slot).effective_catalog_xmin = catalog_xmin.into();
        pg_sys::SpinLockRelease(&raw mut (*slot).mutex);
        pg_sys::ReplicationSlotMarkDirty();
        if persistent {
            pg_sys::ReplicationSlotSave();
        } else {
            pg_sys::ReplicationSlotPersist();
            log!("logical_ext slot sync: slot \"{}\" is synchronized and persistent", name.to_string_lossy());
        }
        pg_sys::ReplicationSlotRelease();
        pg_sys::ReplicationSlotsComputeRequiredXmin(false);
        pg_sys::ReplicationSlotsComputeRequiredLSN();
    }
}

/// Copy the primary's serialized decoding snapshot at `lsn` into this
/// standby's `pg_logical/snapshots` (durably); false when the primary has
/// none there or it cannot be read.
fn copy_snapshot(conn: &mut PublisherConnection, lsn: u64) -> bool {
    let file = format!("pg_logical/snapshots/{:X}-{:X}.snap", lsn >> 32, lsn as u32);
    if std::path::Path::new(&file).exists() {
        return true;
    }
    let sql = format!("SELECT pg_catalog.encode(pg_catalog.pg_read_binary_file('{file}', 0, 100000000, true), 'hex')");
    // Inside the slot's transaction (sync_one).
    let rows = match conn.exec(&sql, 1) {
        Ok(r) => r,
        Err(e) => {
            warning!("logical_ext slot sync: could not read {file} on the primary: {}", e.0);
            return false;
        }
    };
    let Some(hex) = rows.into_iter().next().and_then(|r| r.into_iter().next().flatten()) else { return false };
    let Some(bytes) = decode_hex(&hex) else { return false };
    write_durably(&file, &bytes).map_err(|e| warning!("logical_ext slot sync: could not write {file}: {e}")).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn write_durably(path: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = format!("{path}.{}.tmp", std::process::id());
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open("pg_logical/snapshots")?.sync_all()
}

/// Drop the copies whose slot the primary no longer lists (dropped, or
/// unmarked with `set_slot_failover(..., false)`).
fn drop_unlisted(listed: &[Listed]) {
    // SAFETY: backend global.
    let me = unsafe { pg_sys::MyProcPid };
    for s in slots::read() {
        if !s.logical()
            || s.plugin != "logical_ext"
            || (s.active_pid != 0 && s.active_pid != me)
            || listed.iter().any(|l| l.name == s.name)
        {
            continue;
        }
        let Ok(name) = CString::new(s.name.as_str()) else { continue };
        let r = crate::ffi::in_subtransaction(std::panic::AssertUnwindSafe(|| {
            // SAFETY: drops an inactive slot (or our own temporary copy).
            unsafe { pg_sys::ReplicationSlotDrop(name.as_ptr(), true) }
        }));
        match r {
            Ok(()) => {
                log!("logical_ext slot sync: dropped slot \"{}\": no longer a failover slot on the primary", s.name)
            }
            Err(e) => {
                release_if_acquired();
                warning!("logical_ext slot sync: could not drop slot \"{}\": {}", s.name, e.message());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_decodes() {
        assert_eq!(super::decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(super::decode_hex("0"), None);
        assert_eq!(super::decode_hex("zz"), None);
    }
}
