//! The feedback keeper: standby status updates keep flowing to the publisher
//! while the apply worker's main thread is busy with local work (a replayed
//! `CREATE INDEX` on a big table, a slow trigger, a long lock wait) and so
//! neither reads nor writes the replication connection.
//!
//! Design notes
//! - Why: the publisher's walsender ends a connection it has not heard from
//!   for `wal_sender_timeout` (60 s by default). A DDL replay that runs
//!   longer than that lost its connection; when the rest of the remote
//!   transaction (its COMMIT) was not yet received, the transaction rolled
//!   back and was retried — and timed out again, for ever.
//! - Why a thread: PostgreSQL 15 offers the main thread no hook while a
//!   statement runs (`ProcessInterrupts` has none; a timeout handler runs
//!   in a signal handler, where libpq must not be used). So a helper OS
//!   thread, owned by the [`Keeper`] inside `walrcv::Connection`, sends the
//!   updates. It calls nothing of PostgreSQL (no palloc, no elog, no pgrx):
//!   only libpq (`PQputCopyData`, `PQflush`, resolved in `ffi/libpq.rs`),
//!   `poll`, the clock and Rust's std. It runs with every signal blocked
//!   (the mask is filled around the spawn), so PostgreSQL's signal handlers
//!   keep running on the main thread only.
//! - Exclusion: the connection is used by one thread at a time, enforced by
//!   one mutex. The main thread *arms* the keeper ([`KeeperHandle::busy`])
//!   before local work and *disarms* it when the work ends — the [`Busy`]
//!   guard's drop, which also runs when an ERROR unwinds the Rust frames.
//!   The thread sends only while armed and only while holding the mutex, so
//!   disarming (taking the mutex) waits for a send in progress, and after it
//!   the thread does not touch the connection. Every `Connection` method
//!   disarms first as well, so not even a forgotten guard can make the two
//!   threads meet on the connection; `Connection`'s drop stops and joins the
//!   thread before disconnecting. A process exit that unwinds nothing (a
//!   FATAL: SIGTERM, postmaster death) stops it in a `before_shmem_exit`
//!   callback.
//! - What is reported: fixed positions taken when the keeper is armed —
//!   exactly what the worker's `FlushTracker` allows then (flush is never
//!   past what is durably applied; during a remote transaction it is the
//!   last durably committed one). Repeating them later never claims more:
//!   exactly-once rests on the origin (`origin.rs`) and the publisher's
//!   `confirmed_flush_lsn` never passes what is safe here.
//! - When: only after the connection has been silent (no update from
//!   either thread) for [`INTERVAL`] — the stream loop's own feedback
//!   cadence — checked every [`TICK`]. Ordinary messages take microseconds,
//!   so in steady streaming the thread sleeps and sends nothing; arming and
//!   disarming are an uncontended mutex each. The update never asks for a
//!   reply: the replies the walsender sends meanwhile wait in the socket.
//! - A send happens only when `poll` says the socket can take it (the
//!   connection is in blocking mode, and a `PQflush` on a full socket would
//!   block). A failed send stops the keeper's sends; the main thread meets
//!   the broken connection on its next receive, as it would without us.
//! - Version note: `PQputCopyData` first handles NOTICE messages already
//!   buffered; PostgreSQL 15's libpqwalreceiver installs no notice receiver
//!   or processor (its `.so` imports neither setter; libpq's default prints
//!   to stderr), so no PostgreSQL code runs here. A later major version that
//!   installs one (to `ereport` remote notices) needs this revisited.
//! - Where the keeper cannot run (libpq not found under its soname, built
//!   without thread safety, no thread), the worker says so once (WARNING)
//!   and works as before.

use crate::apply::protocol;
use crate::ffi::libpq::{Libpq, PgConn, Put};
use pgrx::pg_sys;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Silence after which the keeper sends an update (the stream loop's
/// feedback interval: far below any sane `wal_sender_timeout`).
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// How often the thread looks whether an update is due.
const TICK: Duration = Duration::from_millis(200);

/// Keepers alive in this process, for the exit callback.
static LIVE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
static EXIT_CALLBACK: AtomicBool = AtomicBool::new(false);

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Silence after which an update is due, and the thread's tick
    /// ([`INTERVAL`], [`TICK`]; shorter in unit tests).
    interval: Duration,
    tick: Duration,
}

#[derive(Default)]
struct State {
    stop: bool,
    armed: Option<Armed>,
    /// A send failed: the connection is broken, send nothing more.
    broken: bool,
    /// Updates sent by the keeper so far.
    sent: u64,
}

struct Armed {
    write: u64,
    flush: u64,
    /// When the last update went out (from either thread).
    last_sent: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The thread never panics while holding the lock; a poisoned lock
        // still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn disarm(&self) -> u64 {
        let mut st = self.lock();
        st.armed = None;
        st.sent
    }

    fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        st.armed = None;
        drop(st);
        self.wake.notify_all();
    }
}

/// The keeper thread of one connection (owned by `walrcv::Connection`).
pub(crate) struct Keeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the worker holds to arm the keeper; cheap to clone.
#[derive(Clone)]
pub(crate) struct KeeperHandle(Arc<Shared>);

/// The keeper is armed while this lives: the main thread must not use the
/// connection meanwhile (and cannot harm it: every `Connection` method
/// disarms first).
pub(crate) struct Busy<'a> {
    shared: &'a Shared,
    sent_before: u64,
    done: bool,
}

impl Keeper {
    /// Start the keeper of `conn` (a connection in COPY BOTH mode whose
    /// socket is `fd`). `None` when the thread cannot be created. Main
    /// thread only.
    pub(crate) fn start(conn: PgConn, fd: c_int, lib: Libpq) -> Option<Keeper> {
        let send = move |msg: &[u8]| {
            // SAFETY: `run` calls this only while holding the lock with the
            // keeper armed: the main thread is not using the connection, and
            // does not before it takes the lock; the connection lives until
            // `Keeper` is dropped, which stops this thread first.
            unsafe { lib.put_copy_data(conn, fd, msg) }
        };
        let keeper = Keeper::spawn(send, INTERVAL, TICK)?;
        register_for_exit(&keeper.shared);
        Some(keeper)
    }

    /// The thread alone, sending with `send` (pure: unit-tested).
    fn spawn(send: impl FnMut(&[u8]) -> Put + Send + 'static, interval: Duration, tick: Duration) -> Option<Keeper> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new(), interval, tick });
        let theirs = Arc::clone(&shared);
        let thread = spawn_with_signals_blocked(move || run(&theirs, send))?;
        Some(Keeper { shared, thread: Some(thread) })
    }

    pub(crate) fn handle(&self) -> KeeperHandle {
        KeeperHandle(Arc::clone(&self.shared))
    }

    /// Make sure the thread is not using the connection and will not until
    /// armed again.
    pub(crate) fn quiesce(&self) {
        self.shared.disarm();
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(t) = self.thread.take() {
            // The thread cannot panic; its result carries nothing.
            let _ = t.join();
        }
    }
}

impl KeeperHandle {
    /// Arm the keeper for local work: while the returned guard lives, it
    /// reports `write`/`flush` (as flushed and applied) whenever the
    /// connection has been silent for [`INTERVAL`] since `last_sent`.
    pub(crate) fn busy(&self, write: u64, flush: u64, last_sent: Instant) -> Busy<'_> {
        let mut st = self.0.lock();
        let sent_before = st.sent;
        if !st.stop {
            st.armed = Some(Armed { write, flush, last_sent });
        }
        Busy { shared: &self.0, sent_before, done: false }
    }
}

impl Busy<'_> {
    /// Disarm; whether the keeper sent anything meanwhile (the local work
    /// was long: the connection has not been read for that long).
    pub(crate) fn finish(mut self) -> bool {
        self.done = true;
        self.shared.disarm() != self.sent_before
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.disarm();
        }
    }
}

/// The thread's loop. Calls `send` (which touches the connection) only
/// while holding the lock and armed (see the module notes); calls nothing
/// of PostgreSQL.
fn run(shared: &Shared, mut send: impl FnMut(&[u8]) -> Put) {
    let mut st = shared.lock();
    loop {
        if st.stop {
            return;
        }
        let State { armed, broken, sent, .. } = &mut *st;
        if let Some(a) = armed
            && !*broken
            && a.last_sent.elapsed() >= shared.interval
        {
            let msg = protocol::status_update(a.write, a.flush, a.flush, pg_now(), false);
            match send(&msg) {
                Put::Sent => {
                    a.last_sent = Instant::now();
                    *sent += 1;
                }
                Put::NotWritable => {}
                Put::Failed => *broken = true,
            }
        }
        st = shared.wake.wait_timeout(st, shared.tick).unwrap_or_else(PoisonError::into_inner).0;
    }
}

/// Now as a PostgreSQL timestamp (microseconds since 2000-01-01), from the
/// system clock, without calling PostgreSQL.
fn pg_now() -> i64 {
    const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;
    let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    unix_us - PG_EPOCH_UNIX_US
}

/// Spawn `f` on a thread that starts (and stays) with every signal blocked,
/// so PostgreSQL's handlers only ever run on the main thread.
fn spawn_with_signals_blocked(f: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    // SAFETY: plain sigset_t values filled by sigfillset; pthread_sigmask
    // changes only this (the main) thread's mask, restored right below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) != 0 {
            return None;
        }
        old
    };
    let spawned = std::thread::Builder::new().name("logical_ext feedback".into()).stack_size(256 * 1024).spawn(f);
    // SAFETY: restores the main thread's mask saved above; signals that came
    // meanwhile are delivered now.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    spawned.ok()
}

/// Remember `shared` for [`stop_at_exit`], registering the callback once.
fn register_for_exit(shared: &Arc<Shared>) {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(shared));
    drop(live);
    if !EXIT_CALLBACK.swap(true, Ordering::Relaxed) {
        // SAFETY: registers a callback that only takes locks and sets flags.
        unsafe { pg_sys::before_shmem_exit(Some(stop_at_exit), pg_sys::Datum::from(0usize)) };
    }
}

/// Process exit without unwinding (FATAL, `proc_exit`): stop every keeper
/// so no thread touches a connection while the process tears down. Taking
/// the lock waits for a send in progress; after `stop` none starts.
unsafe extern "C-unwind" fn stop_at_exit(_code: c_int, _arg: pg_sys::Datum) {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(PoisonError::into_inner));
    for shared in live.iter().filter_map(Weak::upgrade) {
        shared.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::{Keeper, Put, pg_now};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pg_epoch() {
        // 2020-01-01 is 631152000 s after 2000-01-01; now is later.
        assert!(pg_now() > 631_152_000_000_000);
    }

    /// The main thread's last update, long before.
    fn long_ago() -> Instant {
        Instant::now().checked_sub(Duration::from_secs(10)).unwrap_or_else(Instant::now)
    }

    fn be_u64(m: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(m[at..at + 8].try_into().unwrap())
    }

    /// A keeper whose sends land in a channel.
    fn keeper(result: Put) -> (Keeper, mpsc::Receiver<Vec<u8>>) {
        keeper_every(result, 50 * MS)
    }

    fn keeper_every(result: Put, interval: Duration) -> (Keeper, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let send = move |m: &[u8]| {
            let _ = tx.send(m.to_vec());
            result
        };
        (Keeper::spawn(send, interval, 5 * MS).expect("thread"), rx)
    }

    #[test]
    fn silent_until_armed_then_repeats_the_armed_positions() {
        let (k, rx) = keeper(Put::Sent);
        let h = k.handle();
        assert!(rx.recv_timeout(150 * MS).is_err(), "nothing while disarmed");
        let busy = h.busy(0x200, 0x100, Instant::now());
        let m = rx.recv_timeout(Duration::from_secs(5)).expect("an update once silent for the interval");
        assert_eq!(m[0], b'r');
        assert_eq!((be_u64(&m, 1), be_u64(&m, 9), be_u64(&m, 17)), (0x200, 0x100, 0x100));
        assert_eq!(m[33], 0, "no reply requested");
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok(), "and again after the next interval");
        assert!(busy.finish(), "the keeper spoke");
        while rx.try_recv().is_ok() {}
        assert!(rx.recv_timeout(150 * MS).is_err(), "nothing once disarmed");
    }

    #[test]
    fn short_work_sends_nothing() {
        let (k, rx) = keeper_every(Put::Sent, Duration::from_secs(3));
        let h = k.handle();
        let busy = h.busy(1, 1, Instant::now());
        assert!(!busy.finish(), "disarmed before the interval passed");
        // A guard dropped on an error path disarms as well.
        drop(h.busy(1, 1, Instant::now()));
        assert!(rx.recv_timeout(150 * MS).is_err());
        // The main thread's last update long ago: due at the next tick.
        let busy = h.busy(1, 1, long_ago());
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        drop(busy);
    }

    #[test]
    fn quiesce_and_stop() {
        let (k, rx) = keeper(Put::Sent);
        let h = k.handle();
        let busy = h.busy(1, 1, long_ago());
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        // A connection method disarms even while a guard lives.
        k.quiesce();
        while rx.try_recv().is_ok() {}
        assert!(rx.recv_timeout(150 * MS).is_err(), "quiesced");
        drop(busy);
        drop(k);
        // Stopped and joined: arming does nothing, the sender is gone.
        let late = h.busy(1, 1, long_ago());
        assert!(matches!(rx.recv_timeout(150 * MS), Err(mpsc::RecvTimeoutError::Disconnected)));
        assert!(!late.finish());
    }

    #[test]
    fn a_failed_send_is_the_last() {
        let (k, rx) = keeper(Put::Failed);
        let h = k.handle();
        let busy = h.busy(1, 1, long_ago());
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(rx.recv_timeout(150 * MS).is_err(), "broken: no retry");
        assert!(!busy.finish(), "nothing was sent");
    }

    #[test]
    fn not_writable_is_retried() {
        let (k, rx) = keeper(Put::NotWritable);
        let h = k.handle();
        let busy = h.busy(1, 1, long_ago());
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok(), "tried again at the next tick");
        drop(busy);
    }
}
