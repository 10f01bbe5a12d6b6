//! The sync worker's life: copy one table (`sync/worker.rs`), then, when
//! the copy came from a snapshot of its own, hand the table over to the
//! apply worker's stream as PostgreSQL's tablesync does, so that the other
//! tables keep streaming while it copies.
//!
//! Design notes
//! - A copy from a snapshot taken at `S` holds every remote transaction
//!   committed before `S`. Meanwhile the apply worker streams on and skips
//!   the table's changes (it is `copying`), so when the copy is committed
//!   the changes committed in `[S, T)` are missing, `T` being wherever the
//!   stream is then. The temporary slot the snapshot came from starts at
//!   `S`: the sync worker streams it and applies exactly those changes.
//! - `T` must be a point where the stream stands still. The sync worker
//!   records `S` in the shared registry (`sync/registry.rs`); the apply
//!   worker, between two remote transactions, answers with the position it
//!   has applied through and does not start another remote transaction
//!   until the sync worker is done or gone. So the stream is paused only
//!   for the catch-up (the WAL written during the copy), never for the copy.
//! - The sync worker applies the table's changes of every transaction
//!   committed before `T` with the apply worker's own document application
//!   (`worker/catchup.rs`: same conflict detection, as table owner, with the
//!   copy's replication origin), then records the table as `catchup` at
//!   `max(S, T)`: the stream applies its changes from there on (`state.rs`).
//! - A sync worker that dies after its copy committed leaves the table
//!   `copying` and marked `resync`: the next copy replaces its rows, and the
//!   apply worker, which skipped them, loses nothing. Exactly once needs no
//!   replication-origin progress of its own here.
//! - Every wait processes interrupts (SIGTERM ends the worker, barriers are
//!   absorbed) and exits on postmaster death; a subscription disabled or
//!   dropped while the worker waits for `T` ends it.

use super::catalog as subs;
use super::status;
use super::sync::catalog;
use super::sync::registry;
use super::sync::worker::{self as sync_worker, Copied, Job};
use super::worker::{CatchUp, catch_up};
use crate::ffi::worker::{self as backend, in_transaction};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How often a sync worker waiting for its target checks that the
/// subscription is still enabled.
const RECHECK: Duration = Duration::from_secs(1);

/// Entry point of a sync worker; the argument is the table's OID.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_sync_main(arg: pg_sys::Datum) {
    let relid = pg_sys::Oid::from(arg.value() as u32);
    let Some(job) = Job::parse(BackgroundWorker::get_extra()) else {
        log!("logical_ext: sync worker started without a valid job");
        return;
    };
    backend::attach_signal_handlers();
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(job.dboid)),
        Some(pg_sys::Oid::from(job.owner)),
    );
    let me = status::my_pid();
    let Some(number) = registry::claim(job.dboid, job.subid, relid.to_u32(), me) else {
        debug1!("logical_ext: table {} of subscription {} is already being copied", relid.to_u32(), job.subid);
        return;
    };
    // Released however the process ends (a SIGTERM ends it with a FATAL),
    // once its transaction, locks and replication origin are released.
    registry::release_at_exit(job.dboid, job.subid, relid.to_u32());
    // As the apply worker: replica triggers only, asynchronous commit.
    backend::set_replica_session();
    let run = AssertUnwindSafe(|| sync_table(&job, relid, number));
    let outcome = PgTryBuilder::new(run).catch_others(|e| Err(sync_worker::describe(e))).execute();
    if let Err(msg) = outcome {
        crate::apply::origin::disarm();
        // SAFETY: abandon whatever transaction the error left open.
        unsafe { pg_sys::AbortCurrentTransaction() };
        log!("logical_ext: copy of table {} for subscription {} failed: {msg}", relid.to_u32(), job.subid);
        in_transaction(|| catalog::fail_copy(job.subid, relid, &msg));
        // Native's sync_error_count; the apply worker persists it.
        status::update(job.dboid, job.subid, |s| s.sync_errors += 1);
    }
    // The exit callback releases the registry entry and tells the apply worker.
}

fn sync_table(job: &Job, relid: pg_sys::Oid, number: u32) -> Result<(), String> {
    let Some(copied) = sync_worker::copy_table(job, relid, number)? else {
        return Ok(());
    };
    let me = status::my_pid();
    let rel = relid.to_u32();
    registry::copied(job.dboid, job.subid, rel, me, copied.sync_lsn);
    sync_worker::tell_apply_worker(job.dboid, job.subid);
    let Some(target) = wait_for_target(job, relid) else {
        return Ok(());
    };
    let Copied { sub, mut conn, slot, schema, table, sync_lsn, number } = copied;
    let name = sub.name.clone();
    if target > sync_lsn {
        let work = CatchUp {
            dboid: job.dboid,
            sub,
            schema,
            table,
            slot,
            copy_origin: catalog::copy_origin_name(job.subid, number),
            from: sync_lsn,
            until: target,
        };
        catch_up(work, &mut conn)?;
    }
    let from = sync_lsn.max(target);
    let handed = in_transaction(|| catalog::catchup_done(job.subid, relid, from));
    // The new state first, then the registry: the apply worker stops
    // waiting only after it can see the state (it reloads on the bump).
    status::bump_sync_generation(job.dboid, job.subid);
    registry::handed_over(job.dboid, job.subid, rel, me);
    sync_worker::tell_apply_worker(job.dboid, job.subid);
    if handed {
        log!(
            "logical_ext: subscription \"{name}\": table {rel} caught up with the stream at {}",
            crate::apply::protocol::format_lsn(from)
        );
    }
    Ok(())
}

/// Wait for the apply worker's position (`None`: the subscription was
/// disabled or dropped, or the table no longer waits for this copy).
fn wait_for_target(job: &Job, relid: pg_sys::Oid) -> Option<u64> {
    let me = status::my_pid();
    let mut checked = Instant::now();
    loop {
        if let Some(t) = registry::target(job.dboid, job.subid, relid.to_u32(), me) {
            return Some(t);
        }
        if checked.elapsed() >= RECHECK {
            checked = Instant::now();
            let wanted = in_transaction(|| {
                subs::by_id(job.subid).is_some_and(|s| s.enabled) && catalog::copying(job.subid, relid)
            });
            if !wanted {
                return None;
            }
        }
        // Processes interrupts; the apply worker sets our latch.
        backend::wait(Some(Duration::from_millis(200)));
    }
}
