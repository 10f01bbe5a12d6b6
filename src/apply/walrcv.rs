//! The connection to the publisher, through PostgreSQL's own
//! `libpqwalreceiver` (the library its apply worker uses): connect in
//! replication mode, run replication commands and SQL, stream CopyData, send
//! feedback. This is the FFI boundary of the apply part; callers get a safe
//! [`Connection`] that disconnects on drop.
//!
//! While streaming, a connection can keep its publisher informed when the
//! worker is busy elsewhere: [`Connection::feedback_keeper`] starts the
//! feedback keeper (`walrcv/keeper.rs`, design notes there), which the
//! worker arms around local work. Every method here disarms it before it
//! touches the connection, and dropping the connection stops it first.
//!
//! A stream of batched messages (plugin option `batch`) is read ahead into
//! a bounded queue ([`Connection::receive_stream`], `walrcv/readahead.rs`,
//! design notes there) through libpq itself; other streams, and any stream
//! where that libpq cannot be reached, are read one message at a time
//! through `walrcv_receive`.

mod keeper;
mod readahead;

use crate::ffi;
use crate::ffi::libpq::{self, CopyData, PgConn, Reader, Taken};
pub(crate) use keeper::{Busy, KeeperHandle};
use pgrx::pg_sys;
use std::ffi::{CString, c_char, c_void};

/// Why talking to the publisher failed.
#[derive(Debug)]
pub(crate) struct WalRcvError(pub(crate) String);

pub(crate) struct Connection {
    conn: *mut pg_sys::WalReceiverConn,
    /// Started once streaming ([`Connection::feedback_keeper`]).
    keeper: Option<keeper::Keeper>,
    /// The read-ahead of [`Connection::receive_stream`] (`None`: libpq not
    /// reachable, read through walrcv_receive).
    ahead: Option<(LibpqSource, readahead::ReadAhead)>,
}

/// The read-ahead's source: libpq on this connection (main thread only).
struct LibpqSource {
    reader: Reader,
    conn: PgConn,
}

impl readahead::Source for LibpqSource {
    type Chunk = CopyData;

    fn take(&mut self) -> readahead::Pull<CopyData> {
        // SAFETY: the connection is live and in COPY BOTH mode while
        // `receive` is called; the keeper was quiesced before.
        match unsafe { self.reader.take(self.conn) } {
            Taken::Data(d) => readahead::Pull::Data(d),
            Taken::Nothing => readahead::Pull::Nothing,
            Taken::End => readahead::Pull::End,
            Taken::Failed(m) => readahead::Pull::Failed(m),
        }
    }

    fn read_socket(&mut self) -> Result<(), String> {
        // SAFETY: as in `take`.
        unsafe { self.reader.consume(self.conn) }
    }
}

/// Call into libpqwalreceiver. Its functions are reached through a function
/// table, not pgrx's guarded bindings, so an ERROR they raise (a lost
/// connection) must be caught here and turned into a Rust panic that
/// unwinds normally — never a longjmp across Rust frames.
fn guarded<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: backends are single-threaded; this is the main thread.
    unsafe { pg_sys::submodules::ffi::pg_guard_ffi_boundary(f) }
}

fn functions() -> &'static pg_sys::WalReceiverFunctionsType {
    // SAFETY: load_file runs libpqwalreceiver's _PG_init, which sets the
    // global function table; loading twice is a no-op.
    unsafe {
        if pg_sys::WalReceiverFunctions.is_null() {
            pg_sys::load_file(c"libpqwalreceiver".as_ptr(), false);
        }
        &*pg_sys::WalReceiverFunctions
    }
}

/// Result of [`Connection::receive`].
pub(crate) enum Received<'a> {
    Data(&'a [u8]),
    /// Nothing buffered: wait for the socket.
    WouldBlock(pg_sys::pgsocket),
    /// The server ended the COPY stream.
    End,
}

impl Connection {
    /// Connect to `conninfo` in logical replication mode (`replication=database`).
    pub(crate) fn connect(conninfo: &str, appname: &str) -> Result<Connection, WalRcvError> {
        let ci = CString::new(conninfo).map_err(|_| WalRcvError("conninfo contains a NUL byte".into()))?;
        let app = CString::new(appname).expect("no NUL in application name");
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C strings; walrcv_connect returns NULL and sets err on failure.
        let conn = guarded(|| unsafe {
            (functions().walrcv_connect.expect("bound"))(ci.as_ptr(), true, app.as_ptr(), &mut err)
        });
        if conn.is_null() {
            // SAFETY: err is NULL or a palloc'd message.
            return Err(WalRcvError(unsafe { ffi::cstr_to_string(err) }.trim().to_string()));
        }
        let mut c = Connection { conn, keeper: None, ahead: None };
        let source = libpq::reader().ok().zip(c.pg_conn()).map(|(reader, conn)| LibpqSource { reader, conn });
        c.ahead = source.map(|s| (s, readahead::ReadAhead::new(readahead::READ_AHEAD_BYTES)));
        Ok(c)
    }

    /// The feedback keeper of this connection, started at the first call
    /// (call once streaming: it sends CopyData). An error says why it
    /// cannot run (libpq not usable, no thread); the worker then works as
    /// before, with no feedback during local work.
    pub(crate) fn feedback_keeper(&mut self) -> Result<KeeperHandle, String> {
        let k = match self.keeper.take() {
            Some(k) => k,
            None => self.start_keeper()?,
        };
        let handle = k.handle();
        self.keeper = Some(k);
        Ok(handle)
    }

    /// The libpq connection inside libpqwalreceiver's.
    fn pg_conn(&self) -> Option<PgConn> {
        // SAFETY: libpqwalreceiver's `struct WalReceiverConn` starts with
        // its `PGconn *streamConn` (PostgreSQL 15, libpqwalreceiver.c); the
        // struct is live until walrcv_disconnect in our drop, which stops
        // the keeper first (the read-ahead uses it only inside
        // `receive_stream`). That PGconn was made by
        // the libpq `ffi::libpq` finds (the one libpqwalreceiver links).
        unsafe { PgConn::from_raw(*self.conn.cast::<*mut c_void>()) }
    }

    fn start_keeper(&mut self) -> Result<keeper::Keeper, String> {
        let lib = libpq::libpq()?;
        let conn = self.pg_conn().ok_or("no libpq connection")?;
        // SAFETY: main thread, no keeper running yet.
        let fd = unsafe { lib.socket(conn) };
        if fd < 0 {
            return Err("the connection has no socket".into());
        }
        keeper::Keeper::start(conn, fd, lib).ok_or_else(|| "could not start a thread".into())
    }

    /// Before the main thread touches the connection: the keeper must not.
    fn quiesce(&self) {
        if let Some(k) = &self.keeper {
            k.quiesce();
        }
    }

    /// Run a command; rows (all as text) when it returns tuples.
    pub(crate) fn exec(&mut self, query: &str, ncols: usize) -> Result<Vec<Vec<Option<String>>>, WalRcvError> {
        self.exec_with_state(query, ncols).map_err(|(e, _)| e)
    }

    /// [`Connection::exec`], with the error's SQLSTATE (PostgreSQL's packed
    /// MAKE_SQLSTATE value; 0 when the server sent none) for callers that
    /// decide on it.
    pub(crate) fn exec_with_state(
        &mut self,
        query: &str,
        ncols: usize,
    ) -> Result<Vec<Vec<Option<String>>>, (WalRcvError, i32)> {
        self.quiesce();
        let q = CString::new(query).map_err(|_| (WalRcvError("query contains a NUL byte".into()), 0))?;
        let types = vec![pg_sys::TEXTOID; ncols.max(1)];
        // SAFETY: a live connection; the result is freed below.
        let res = guarded(|| unsafe {
            (functions().walrcv_exec.expect("bound"))(self.conn, q.as_ptr(), ncols as i32, types.as_ptr())
        });
        // SAFETY: walrcv_exec always returns a result.
        let r = unsafe { &*res };
        let out = match r.status {
            pg_sys::WalRcvExecStatus::WALRCV_OK_COMMAND
            | pg_sys::WalRcvExecStatus::WALRCV_OK_COPY_BOTH
            | pg_sys::WalRcvExecStatus::WALRCV_OK_COPY_OUT => Ok(Vec::new()),
            pg_sys::WalRcvExecStatus::WALRCV_OK_TUPLES => {
                // SAFETY: a tuple result carries a tuplestore of `ncols` text columns.
                Ok(unsafe { read_tuples(r, ncols) })
            }
            // SAFETY: err is set on error statuses.
            _ => Err((WalRcvError(unsafe { ffi::cstr_to_string(r.err) }.trim().to_string()), r.sqlstate)),
        };
        // SAFETY: frees the result once.
        unsafe { pg_sys::walrcv_clear_result(res) };
        out
    }

    /// The next CopyData message of a replication stream (COPY BOTH), read
    /// ahead; `Err` when reading failed (libpq's message, where
    /// `walrcv_receive` raises an ERROR). A connection is read either
    /// through this or through [`Connection::receive`], never both (the
    /// queue would be skipped).
    pub(crate) fn receive_stream(&mut self) -> Result<Received<'_>, String> {
        self.quiesce();
        let Some((source, ahead)) = &mut self.ahead else { return Ok(receive_one(&mut self.conn)) };
        let conn = source.conn;
        match ahead.next(source) {
            readahead::Next::Data(d) => Ok(Received::Data(d)),
            // SAFETY: main thread, keeper quiesced, live connection.
            readahead::Next::Nothing => Ok(Received::WouldBlock(unsafe { source.reader.socket(conn) })),
            readahead::Next::End => Ok(Received::End),
            readahead::Next::Failed(m) => Err(format!("could not receive data from WAL stream: {m}")),
        }
    }

    /// The next CopyData message, if one is buffered (one at a time; the
    /// end of a COPY OUT is collected as libpqrcv_receive does).
    pub(crate) fn receive(&mut self) -> Received<'_> {
        self.quiesce();
        receive_one(&mut self.conn)
    }

    pub(crate) fn send(&mut self, msg: &[u8]) {
        self.quiesce();
        // SAFETY: a live connection; msg has msg.len() bytes.
        guarded(|| unsafe {
            (functions().walrcv_send.expect("bound"))(self.conn, msg.as_ptr().cast(), msg.len() as i32)
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Stops and joins the keeper's thread: it never sees a closed connection.
        drop(self.keeper.take());
        // SAFETY: disconnects once; the pointer is not used afterwards.
        guarded(|| unsafe { (functions().walrcv_disconnect.expect("bound"))(self.conn) })
    }
}

/// One message through `walrcv_receive` on `conn` (a live connection whose
/// keeper is quiesced); the buffer stays valid until the next receive call,
/// which the borrow of `conn` enforces.
fn receive_one(conn: &mut *mut pg_sys::WalReceiverConn) -> Received<'_> {
    let mut buf: *mut c_char = std::ptr::null_mut();
    let mut fd: pg_sys::pgsocket = -1;
    // SAFETY: a live connection in COPY mode (the callers').
    let len = guarded(|| unsafe { (functions().walrcv_receive.expect("bound"))(*conn, &mut buf, &mut fd) });
    match len {
        0 => Received::WouldBlock(fd),
        // SAFETY: len bytes at buf.
        n if n > 0 => Received::Data(unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) }),
        _ => Received::End,
    }
}

/// # Safety
/// `r` must be a WALRCV_OK_TUPLES result with `ncols` text columns.
unsafe fn read_tuples(r: &pg_sys::WalRcvExecResult, ncols: usize) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    // SAFETY: standard tuplestore reading into a slot of the result's descriptor.
    unsafe {
        let slot = pg_sys::MakeSingleTupleTableSlot(r.tupledesc, &pg_sys::TTSOpsMinimalTuple);
        while pg_sys::tuplestore_gettupleslot(r.tuplestore, true, false, slot) {
            let mut row = Vec::with_capacity(ncols);
            for i in 1..=ncols as i32 {
                let mut isnull = false;
                let d = pg_sys::slot_getattr(slot, i, &mut isnull);
                row.push((!isnull).then(|| ffi::cstr_to_string(pg_sys::text_to_cstring(d.cast_mut_ptr()))));
            }
            rows.push(row);
            pg_sys::ExecClearTuple(slot);
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }
    rows
}

/// Quote an identifier for a replication command (`"..."`, quotes doubled).
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a string literal (`'...'`, quotes doubled; standard_conforming_strings).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Whether the publisher has a replication slot named `slot` (a SQL query
/// over the replication connection). Call outside a transaction: the
/// result's tuple descriptor needs one, which this opens and commits.
/// `(wal_status, confirmed_flush_lsn)` of a slot on the publisher, `None`
/// when there is no such slot.
pub(crate) fn slot_state(conn: &mut Connection, slot: &str) -> Result<Option<(String, Option<String>)>, WalRcvError> {
    let sql = format!(
        "SELECT coalesce(wal_status, ''), confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots \
         WHERE slot_name = {}",
        quote_literal(slot)
    );
    let rows = crate::ffi::worker::in_transaction(|| conn.exec(&sql, 2))?;
    Ok(rows.into_iter().next().map(|r| (r[0].clone().unwrap_or_default(), r[1].clone())))
}

/// Mark `slot` for failover on the publisher (`logical_ext.set_slot_failover`,
/// a SQL call over the replication connection). Outside a transaction.
pub(crate) fn mark_failover(conn: &mut Connection, slot: &str) -> Result<(), WalRcvError> {
    let sql = format!("SELECT logical_ext.set_slot_failover({}::pg_catalog.name)::text", quote_literal(slot));
    crate::ffi::worker::in_transaction(|| conn.exec(&sql, 1)).map(|_| ())
}

pub(crate) fn slot_exists(conn: &mut Connection, slot: &str) -> Result<bool, WalRcvError> {
    let sql = format!("SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = {}", quote_literal(slot));
    let rows = crate::ffi::worker::in_transaction(|| conn.exec(&sql, 1))?;
    Ok(!rows.is_empty())
}
