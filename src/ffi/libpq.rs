//! libpq itself, for two things `libpqwalreceiver`'s function table does
//! not offer: writing a CopyData message off the backend's main thread (the
//! apply worker's feedback keeper, `apply/walrcv/keeper.rs`), and reading
//! the replication stream ahead on the main thread (`apply/walrcv/
//! readahead.rs`: every complete CopyData message libpq holds, and what the
//! socket has, without waiting).
//!
//! The backend does not link libpq; `libpqwalreceiver` does. The functions
//! are therefore resolved in the copy of libpq that `libpqwalreceiver`
//! already loaded (`dlopen` with `RTLD_NOLOAD`: nothing new is ever loaded,
//! and the connection is only ever handled by the library that created it).
//! Nothing here calls PostgreSQL, allocates with `palloc` or can raise an
//! ERROR: [`Libpq::put_copy_data`] is safe to call from a thread that is not
//! the backend's main thread; the [`Reader`]'s functions are called on the
//! main thread only.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

type PutCopyDataFn = unsafe extern "C" fn(conn: *mut c_void, buffer: *const c_char, nbytes: c_int) -> c_int;
type FlushFn = unsafe extern "C" fn(conn: *mut c_void) -> c_int;
type SocketFn = unsafe extern "C" fn(conn: *const c_void) -> c_int;
type IsThreadSafeFn = unsafe extern "C" fn() -> c_int;
type GetCopyDataFn = unsafe extern "C" fn(conn: *mut c_void, buffer: *mut *mut c_char, is_async: c_int) -> c_int;
type ConnFn = unsafe extern "C" fn(conn: *mut c_void) -> c_int;
type FreememFn = unsafe extern "C" fn(ptr: *mut c_void);
type GetResultFn = unsafe extern "C" fn(conn: *mut c_void) -> *mut c_void;
type ResultStatusFn = unsafe extern "C" fn(res: *const c_void) -> c_int;
type ClearFn = unsafe extern "C" fn(res: *mut c_void);
type ErrorMessageFn = unsafe extern "C" fn(conn: *const c_void) -> *const c_char;

/// `PGRES_COMMAND_OK` and `PGRES_COPY_IN` of libpq-fe.h's `ExecStatusType`.
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_COPY_IN: c_int = 4;

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
        let handle = loaded()?;
        // SAFETY: the handle of `loaded`, never closed, so the symbols stay
        // valid for the process's life. The symbols have the C signatures
        // of libpq-fe.h declared above.
        unsafe {
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

/// The handle of the libpq `libpqwalreceiver` loaded.
fn loaded() -> Result<*mut c_void, &'static str> {
    // SAFETY: dlopen with RTLD_NOLOAD only returns a handle to a library
    // already in the process (libpqwalreceiver's dependency); it is never
    // closed.
    let handle = unsafe { libc::dlopen(c"libpq.so.5".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() { Err("libpq.so.5 is not loaded") } else { Ok(handle) }
}

/// The libpq functions the read-ahead uses (main thread only).
#[derive(Clone, Copy)]
pub(crate) struct Reader {
    get_copy_data: GetCopyDataFn,
    consume_input: ConnFn,
    is_busy: ConnFn,
    freemem: FreememFn,
    get_result: GetResultFn,
    result_status: ResultStatusFn,
    clear: ClearFn,
    error_message: ErrorMessageFn,
    socket: SocketFn,
}

/// One CopyData message's bytes, malloc'd by libpq (freed on drop).
pub(crate) struct CopyData {
    ptr: *mut c_char,
    len: usize,
    freemem: FreememFn,
}

impl AsRef<[u8]> for CopyData {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` bytes at `ptr`, PQgetCopyData's buffer, owned here.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for CopyData {
    fn drop(&mut self) {
        // SAFETY: PQgetCopyData's buffer, freed once.
        unsafe { (self.freemem)(self.ptr.cast()) }
    }
}

/// What [`Reader::take`] found.
pub(crate) enum Taken {
    Data(CopyData),
    /// No complete message is buffered.
    Nothing,
    /// The server ended the COPY stream.
    End,
    /// The connection failed or the server sent an error: libpq's message.
    Failed(String),
}

/// The libpq reader, or why it cannot be used. Main thread only.
pub(crate) fn reader() -> Result<Reader, &'static str> {
    static READER: OnceLock<Result<Reader, &'static str>> = OnceLock::new();
    *READER.get_or_init(|| {
        let handle = loaded()?;
        let sym = |name: &std::ffi::CStr| {
            // SAFETY: a symbol lookup in a handle that is never closed.
            let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
            if p.is_null() { Err("libpq lacks a function of the read-ahead") } else { Ok(p) }
        };
        // SAFETY: the symbols have the C signatures of libpq-fe.h declared
        // above and stay valid for the process's life.
        unsafe {
            Ok(Reader {
                get_copy_data: std::mem::transmute::<*mut c_void, GetCopyDataFn>(sym(c"PQgetCopyData")?),
                consume_input: std::mem::transmute::<*mut c_void, ConnFn>(sym(c"PQconsumeInput")?),
                is_busy: std::mem::transmute::<*mut c_void, ConnFn>(sym(c"PQisBusy")?),
                freemem: std::mem::transmute::<*mut c_void, FreememFn>(sym(c"PQfreemem")?),
                get_result: std::mem::transmute::<*mut c_void, GetResultFn>(sym(c"PQgetResult")?),
                result_status: std::mem::transmute::<*mut c_void, ResultStatusFn>(sym(c"PQresultStatus")?),
                clear: std::mem::transmute::<*mut c_void, ClearFn>(sym(c"PQclear")?),
                error_message: std::mem::transmute::<*mut c_void, ErrorMessageFn>(sym(c"PQerrorMessage")?),
                socket: std::mem::transmute::<*mut c_void, SocketFn>(sym(c"PQsocket")?),
            })
        }
    })
}

impl Reader {
    /// The next complete CopyData message libpq holds, without reading the
    /// socket. At the end of the COPY BOTH the server's result is collected
    /// as `libpqrcv_receive` does: CopyDone is the end; anything else (an
    /// ErrorResponse) is a failure with libpq's message.
    ///
    /// # Safety
    /// `conn` is live and in COPY BOTH mode (not COPY OUT: its end would
    /// need a wait for CommandComplete), or left it through this function,
    /// and no other thread uses it during the call.
    pub(crate) unsafe fn take(&self, conn: PgConn) -> Taken {
        let mut buf: *mut c_char = std::ptr::null_mut();
        // SAFETY: the caller's guarantees; async: never waits.
        let n = unsafe { (self.get_copy_data)(conn.0, &mut buf, 1) };
        if n > 0 {
            return Taken::Data(CopyData { ptr: buf, len: n as usize, freemem: self.freemem });
        }
        if n == 0 {
            return Taken::Nothing;
        }
        if n < -1 {
            // SAFETY: as above.
            return Taken::Failed(unsafe { self.error(conn) });
        }
        // The COPY ended: the message that ended it is complete in libpq's
        // buffer (CopyDone leaves COPY BOTH for COPY_IN; an ErrorResponse is
        // parsed by PQisBusy), so the result is there without waiting.
        // SAFETY: as above; the result is cleared once.
        unsafe {
            if (self.is_busy)(conn.0) != 0 {
                return Taken::Failed(format!("unexpected message at the end of the stream ({})", self.error(conn)));
            }
            let res = (self.get_result)(conn.0);
            let status = (self.result_status)(res);
            (self.clear)(res);
            if status == PGRES_COPY_IN || status == PGRES_COMMAND_OK {
                Taken::End
            } else {
                Taken::Failed(self.error(conn))
            }
        }
    }

    /// Read what the socket has into libpq's buffer, without waiting.
    /// `Err`: the connection failed (libpq's message).
    ///
    /// # Safety
    /// As [`Reader::take`].
    pub(crate) unsafe fn consume(&self, conn: PgConn) -> Result<(), String> {
        // SAFETY: the caller's guarantees.
        if unsafe { (self.consume_input)(conn.0) } == 0 { Err(unsafe { self.error(conn) }) } else { Ok(()) }
    }

    /// The connection's socket (`PQsocket`).
    ///
    /// # Safety
    /// As [`Reader::take`].
    pub(crate) unsafe fn socket(&self, conn: PgConn) -> c_int {
        // SAFETY: PQsocket reads one field of a live connection.
        unsafe { (self.socket)(conn.0) }
    }

    /// # Safety
    /// As [`Reader::take`].
    unsafe fn error(&self, conn: PgConn) -> String {
        // SAFETY: PQerrorMessage returns a NUL-terminated string owned by
        // the connection (never NULL for a connection).
        let m = unsafe { std::ffi::CStr::from_ptr((self.error_message)(conn.0)) };
        m.to_string_lossy().trim_end().to_string()
    }
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
