//! Background-worker plumbing shared by every logical_ext worker (apply,
//! sync, launcher, starter, sampler): signals, waiting, transactions, the
//! clock and session settings. Nothing here knows about replication.
//!
//! Design notes
//! - SIGTERM uses PostgreSQL's own `die` handler: it sets `ProcDiePending`
//!   and the latch, and the next `CHECK_FOR_INTERRUPTS` — ours in every wait
//!   loop, or PostgreSQL's inside a lock wait, the executor or a long DDL —
//!   ends the process with a FATAL. So `pg_terminate_backend`, server
//!   shutdown and the SQL functions that stop a worker interrupt whatever
//!   it is doing. State that must be undone on such an exit is undone by
//!   `before_shmem_exit` callbacks, not by code after the loop.
//! - Every wait ([`wait`], [`wait_socket`]) exits on postmaster death and
//!   processes interrupts after waking, which also absorbs procsignal
//!   barriers (`DROP DATABASE`, `DROP TABLESPACE` wait for every process to
//!   absorb theirs) and reloads the configuration after SIGHUP.

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

unsafe extern "C-unwind" {
    /// `tcop/tcopprot.h`: the SIGTERM handler of regular backends (pgrx's
    /// binding is a guarded Rust function, not a handler address).
    #[link_name = "die"]
    fn die_handler(signo: std::ffi::c_int);
}

/// Install the signal handlers of a logical_ext worker (SIGHUP reloads the
/// configuration in [`wait`]; SIGTERM is `die`) and unblock signals.
pub(crate) fn attach_signal_handlers() {
    // SAFETY: `die` is PostgreSQL's async-signal-safe SIGTERM handler of
    // regular backends (it sets flags and the latch, and preserves errno).
    // Installed while signals are still blocked.
    unsafe { pg_sys::pqsignal(libc::SIGTERM, Some(die_handler)) };
    // Installs the SIGHUP handler and unblocks signals.
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
}

/// `CHECK_FOR_INTERRUPTS()`: a SIGTERM ends the process (FATAL), a pending
/// procsignal barrier is absorbed, a cancel or timeout raises an ERROR.
pub(crate) fn check_for_interrupts() {
    pgrx::check_for_interrupts!();
}

/// A SIGHUP arrived since [`settings_signalled`] last said so. The SQL
/// functions that change a subscription's settings signal its apply worker
/// with SIGHUP after requesting a new generation (`apply/launcher.rs`).
static SETTINGS_SIGNAL: AtomicBool = AtomicBool::new(false);

/// A SIGHUP arrived and the configuration file was not reloaded since.
static RELOAD_DUE: AtomicBool = AtomicBool::new(false);

/// Take a SIGHUP from pgrx's handler flag into ours.
fn note_sighup() {
    if BackgroundWorker::sighup_received() {
        SETTINGS_SIGNAL.store(true, Ordering::Relaxed);
        RELOAD_DUE.store(true, Ordering::Relaxed);
    }
}

/// Whether a SIGHUP arrived since the last call. Two atomic operations:
/// cheap enough to ask before every remote transaction. A signal sent before
/// data reached our socket has run its handler by the time that data is
/// read, so a settings change committed before the publisher sent a
/// transaction is seen before it. Does not reload the configuration (the
/// caller may be inside a transaction, where a reload would be undone by an
/// abort): see [`reload_config_if_due`].
pub(crate) fn settings_signalled() -> bool {
    note_sighup();
    SETTINGS_SIGNAL.swap(false, Ordering::Relaxed)
}

/// Reload the configuration file if a SIGHUP asked for it. Outside a
/// transaction.
pub(crate) fn reload_config_if_due() {
    note_sighup();
    if RELOAD_DUE.swap(false, Ordering::Relaxed) {
        // SAFETY: the documented way for a background process to reload.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

/// After a wake-up: reload the configuration on SIGHUP, then process
/// interrupts.
fn after_wake() {
    reload_config_if_due();
    check_for_interrupts();
}

/// Wait until the latch is set or `timeout` passes (`None`: no timeout).
pub(crate) fn wait(timeout: Option<Duration>) {
    let (events, ms) = match timeout {
        Some(t) => (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH, t.as_millis() as i64),
        None => (pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH, -1),
    };
    // SAFETY: waiting on our own latch; WL_EXIT_ON_PM_DEATH exits on
    // postmaster death.
    unsafe {
        pg_sys::WaitLatch(pg_sys::MyLatch, events as i32, ms, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    after_wake();
}

/// Wait until the socket is readable, the latch is set, or `timeout`
/// passes; true when the wait timed out (neither socket nor latch).
pub(crate) fn wait_socket(fd: pg_sys::pgsocket, timeout: Duration) -> bool {
    // SAFETY: waiting on our own latch and a live connection's socket.
    let rc = unsafe {
        let rc = pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_SOCKET_READABLE | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH)
                as i32,
            fd,
            timeout.as_millis() as i64,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        rc
    };
    after_wake();
    rc & pg_sys::WL_TIMEOUT as i32 != 0 && rc & (pg_sys::WL_SOCKET_READABLE | pg_sys::WL_LATCH_SET) as i32 == 0
}

/// This node's system identifier (the control file's; fixed while the
/// server runs), read once per process rather than per use.
pub(crate) fn system_identifier() -> u64 {
    static NODE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: reads the control file's system identifier, kept in shared memory.
    *NODE.get_or_init(|| unsafe { pg_sys::GetSystemIdentifier() })
}

/// The timeline this node writes WAL on (it changes at a promotion or at
/// the end of a PITR restore). Only meaningful outside recovery.
pub(crate) fn timeline() -> u32 {
    // SAFETY: reads the insert timeline from shared memory (no lock needed
    // once recovery has ended, which the apply worker's start time implies).
    unsafe { pg_sys::GetWALInsertionTimeLine() }
}

/// Whether this node is still in recovery (a standby).
pub(crate) fn in_recovery() -> bool {
    // SAFETY: reads the shared recovery state.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// How far the local WAL is flushed.
pub(crate) fn local_flush_lsn() -> u64 {
    // SAFETY: reads the local WAL flush position.
    unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) }
}

/// Sleep for `d`, processing interrupts (a SIGTERM ends the process).
pub(crate) fn sleep(d: Duration) {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        wait(Some(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Run `f` in its own transaction with a snapshot.
pub(crate) fn in_transaction<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the standard transaction wrapper of a background worker.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let r = f();
    // SAFETY: pairs with the above.
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    r
}

/// Settings of a session that applies replicated changes: fire only
/// REPLICA/ALWAYS triggers, as native replication does, and commit
/// asynchronously (the apply worker reports only what is flushed; an apply
/// worker then sets the subscription's own [`set_synchronous_commit`]).
pub(crate) fn set_replica_session() {
    for (name, value) in [(c"session_replication_role", c"replica"), (c"synchronous_commit", c"off")] {
        set_override(name, value);
    }
}

/// `search_path = pg_catalog, pg_temp` for the whole life of a background
/// worker that runs SQL as a superuser: a setting of the database
/// (`ALTER DATABASE ... SET search_path`, which its owner may set) would
/// otherwise let that owner's functions and operators run in it.
pub(crate) fn pin_session_search_path() {
    set_override(c"search_path", c"pg_catalog, pg_temp");
}

/// `synchronous_commit` of this session's local commits (a value the
/// setting accepts, such as `config::SynchronousCommit::as_str` gives).
pub(crate) fn set_synchronous_commit(value: &str) {
    let value = std::ffi::CString::new(value).expect("no NUL in a synchronous_commit value");
    set_override(c"synchronous_commit", &value);
}

fn set_override(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    // SAFETY: setting a built-in GUC with a valid name; an invalid value
    // raises a PostgreSQL ERROR (callers pass the setting's own values).
    unsafe {
        pg_sys::SetConfigOption(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };
}

/// The current time as a PostgreSQL timestamp (microseconds since 2000).
pub(crate) fn now_ts() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// `wal_receiver_timeout` in milliseconds (0: disabled).
pub(crate) fn wal_receiver_timeout_ms() -> i32 {
    // SAFETY: reads a GUC variable.
    unsafe { pg_sys::wal_receiver_timeout }
}

/// Register `f` to run when this process exits (also after a FATAL, which
/// does not unwind Rust frames), before its transaction is aborted.
pub(crate) fn on_exit(f: unsafe extern "C-unwind" fn(i32, pg_sys::Datum), arg: pg_sys::Datum) {
    // SAFETY: registering a callback with a plain Datum argument.
    unsafe { pg_sys::before_shmem_exit(Some(f), arg) };
}

/// Register `f` to run when this process exits, after its transaction was
/// aborted and its locks and replication origin were released (but while
/// it can still take LWLocks): the place to announce "this worker is gone".
pub(crate) fn on_exit_after_cleanup(f: unsafe extern "C-unwind" fn(i32, pg_sys::Datum), arg: pg_sys::Datum) {
    // SAFETY: registering a callback with a plain Datum argument; it runs
    // before ProcKill (registered earlier, run later) releases our PGPROC.
    unsafe { pg_sys::on_shmem_exit(Some(f), arg) };
}

/// Whether `pid` is a live PostgreSQL backend or background worker with a
/// slot in the process array (an exited process's pid, even when the
/// kernel gave it to another program, is not).
pub(crate) fn backend_alive(pid: i32) -> bool {
    // SAFETY: BackendPidGetProc takes ProcArrayLock and returns NULL or a
    // PGPROC in shared memory; only the pointer is tested.
    pid > 0 && !unsafe { pg_sys::BackendPidGetProc(pid) }.is_null()
}

/// The databases that accept connections and are not templates, read
/// straight from the shared catalog `pg_database` (works in a process
/// connected to no database). Call inside a transaction.
pub(crate) fn connectable_databases() -> Vec<pg_sys::Oid> {
    let mut out = Vec::new();
    // SAFETY: a catalog heap scan inside a transaction, as PostgreSQL's
    // own launcher does for pg_subscription; each tuple's data starts with
    // the fixed-size FormData_pg_database.
    unsafe {
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tup.is_null() {
                break;
            }
            let data = (*tup).t_data;
            let form = &*(data.cast::<u8>().add((*data).t_hoff as usize) as *const pg_sys::FormData_pg_database);
            if form.datallowconn && !form.datistemplate {
                out.push(form.oid);
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
    }
    out
}
