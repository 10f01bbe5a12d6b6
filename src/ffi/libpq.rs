//! libpq itself, for the one thing that must happen off the backend's main
//! thread: writing a CopyData message on a replication connection (the
//! apply worker's feedback keeper, `apply/walrcv/keeper.rs`).
//!
//! The backend does not link libpq; `libpqwalreceiver` does. The functions
//! are therefore resolved in the copy of libpq that `libpqwalreceiver`
//! already loaded (`dlopen` with `RTLD_NOLOAD`: nothing new is ever loaded,
//! and the connection is only ever handled by the library that created it).
//! Nothing here calls PostgreSQL, allocates with `palloc` or can raise an
//! ERROR: [`Libpq::put_copy_data`] is safe to call from a thread that is not
//! the backend's main thread.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

type PutCopyDataFn = unsafe extern "C" fn(conn: *mut c_void, buffer: *const c_char, nbytes: c_int) -> c_int;
type FlushFn = unsafe extern "C" fn(conn: *mut c_void) -> c_int;
type SocketFn = unsafe extern "C" fn(conn: *const c_void) -> c_int;
type IsThreadSafeFn = unsafe extern "C" fn() -> c_int;

/// The libpq functions the keeper uses.
#[derive(Clone, Copy)]
pub(crate) struct Libpq {
    put_copy_data: PutCopyDataFn,
    flush: FlushFn,
    socket: SocketFn,
}

/// A `PGconn *` handed to another thread. It carries no ownership: the
/// owner (`walrcv::Connection`) keeps the connection alive and guarantees
/// that only one thread uses it at a time.
#[derive(Clone, Copy)]
pub(crate) struct PgConn(*mut c_void);

// SAFETY: libpq connections may be used from any thread, one thread at a
// time (libpq is built thread-safe); the keeper's mutex provides the "one at
// a time" and the happens-before between the threads.
unsafe impl Send for PgConn {}

impl PgConn {
    /// # Safety
    /// `conn` is a live `PGconn *` created by the libpq [`libpq()`] resolves.
    pub(crate) unsafe fn from_raw(conn: *mut c_void) -> Option<PgConn> {
        (!conn.is_null()).then_some(PgConn(conn))
    }
}

/// What became of one [`Libpq::put_copy_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Sent,
    /// The socket's send buffer is full: nothing was written (try later).
    NotWritable,
    /// The connection is broken (the owner finds out on its next call).
    Failed,
}

/// libpq as loaded by `libpqwalreceiver`, or why it cannot be used from a
/// second thread (not loaded, a function missing, built without thread
/// safety). Call on the main thread (it is resolved once, at first use).
pub(crate) fn libpq() -> Result<Libpq, &'static str> {
    static LIBPQ: OnceLock<Result<Libpq, &'static str>> = OnceLock::new();
    *LIBPQ.get_or_init(|| {
        // SAFETY: dlopen with RTLD_NOLOAD only returns a handle to a library
        // already in the process (libpqwalreceiver's dependency); the handle
        // is never closed, so the symbols stay valid for the process's life.
        // The symbols have the C signatures of libpq-fe.h declared above.
        unsafe {
            let handle = libc::dlopen(c"libpq.so.5".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if handle.is_null() {
                return Err("libpq.so.5 is not loaded");
            }
            let put = libc::dlsym(handle, c"PQputCopyData".as_ptr());
            let flush = libc::dlsym(handle, c"PQflush".as_ptr());
            let socket = libc::dlsym(handle, c"PQsocket".as_ptr());
            let thread_safe = libc::dlsym(handle, c"PQisthreadsafe".as_ptr());
            if put.is_null() || flush.is_null() || socket.is_null() || thread_safe.is_null() {
                return Err("libpq lacks PQputCopyData, PQflush, PQsocket or PQisthreadsafe");
            }
            if std::mem::transmute::<*mut c_void, IsThreadSafeFn>(thread_safe)() == 0 {
                return Err("libpq is built without thread safety");
            }
            Ok(Libpq {
                put_copy_data: std::mem::transmute::<*mut c_void, PutCopyDataFn>(put),
                flush: std::mem::transmute::<*mut c_void, FlushFn>(flush),
                socket: std::mem::transmute::<*mut c_void, SocketFn>(socket),
            })
        }
    })
}

impl Libpq {
    /// The connection's socket (`PQsocket`), -1 when it has none.
    ///
    /// # Safety
    /// No other thread uses `conn` during the call.
    pub(crate) unsafe fn socket(&self, conn: PgConn) -> c_int {
        // SAFETY: PQsocket reads one field of a live connection.
        unsafe { (self.socket)(conn.0) }
    }

    /// Send `msg` as one CopyData message and flush it, but only when the
    /// socket `fd` can take it now: a short status update then never blocks
    /// (a blocking-mode `PQflush` on a full socket could wait for ever).
    ///
    /// # Safety
    /// `conn` is live and in COPY BOTH mode, `fd` is its socket, and no other
    /// thread uses `conn` during the call.
    pub(crate) unsafe fn put_copy_data(&self, conn: PgConn, fd: c_int, msg: &[u8]) -> Put {
        let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd; a zero timeout never waits.
        let ready = unsafe { libc::poll(&mut p, 1, 0) };
        if ready < 0 || p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Put::Failed;
        }
        if ready == 0 || p.revents & libc::POLLOUT == 0 {
            return Put::NotWritable;
        }
        let Ok(len) = c_int::try_from(msg.len()) else { return Put::Failed };
        // SAFETY: the caller guarantees exclusive use of a live COPY BOTH
        // connection; msg has len bytes. Both calls only touch libpq's own
        // (malloc'd) state and the socket.
        unsafe {
            if (self.put_copy_data)(conn.0, msg.as_ptr().cast(), len) != 1 {
                return Put::Failed;
            }
            if (self.flush)(conn.0) != 0 {
                return Put::Failed;
            }
        }
        Put::Sent
    }
}
