//! Feeding a publisher's `COPY ... TO STDOUT` into a local `COPY FROM`, as
//! PostgreSQL's tablesync does: `BeginCopyFrom` gets a data-source callback
//! that reads the CopyData messages from the replication connection, so the
//! rows go through COPY's own parsing, multi-inserts, indexes and
//! constraints. The callback has no argument, so the source lives in a
//! thread-local for the duration of [`copy_from`] (backends are single
//! threaded); the C callback only converts its pointer and calls
//! [`read_into`]. The publisher sends one CopyData message per row, which
//! gives the row count; progress goes to shared memory every
//! [`REPORT_EVERY`] rows.

use crate::apply::walrcv::{Connection, Received};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CString;

const REPORT_EVERY: i64 = 4096;

struct Source {
    conn: Connection,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    rows: i64,
    bytes: i64,
    report: Box<dyn FnMut(i64, i64)>,
}

thread_local! {
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
}

/// Clears the thread-local source however `copy_from` ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        SOURCE.with_borrow_mut(|s| *s = None);
    }
}

/// What a finished copy moved.
pub(crate) struct Copied {
    pub(crate) rows: i64,
    pub(crate) bytes: i64,
}

/// Copy the rows of the COPY OUT already started on `conn` into `relid`'s
/// `columns`. Runs inside a transaction with an active snapshot; `report`
/// gets (rows, bytes) now and then. Returns the connection (idle again).
pub(crate) fn copy_from(
    conn: Connection,
    relid: pg_sys::Oid,
    columns: &[String],
    report: Box<dyn FnMut(i64, i64)>,
) -> (Connection, Copied) {
    SOURCE.with_borrow_mut(|s| {
        *s = Some(Source { conn, buf: Vec::new(), pos: 0, done: false, rows: 0, bytes: 0, report })
    });
    let installed = Installed;
    let names: Vec<CString> = columns.iter().map(|c| CString::new(c.as_str()).expect("no NUL in names")).collect();
    // SAFETY: inside a transaction; the relation is opened with the lock COPY
    // FROM takes and closed (lock kept) after the copy; the column names are
    // copied into the current memory context; the callback reads SOURCE,
    // which stays set until `installed` is dropped.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as i32);
        // As for streamed changes (executor.rs): the table's triggers,
        // defaults and input functions run as its owner.
        let _as_owner = crate::ffi::identity::AsRole::become_role((*(*rel).rd_rel).relowner);
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        pg_sys::addRangeTableEntryForRelation(
            pstate,
            rel,
            pg_sys::RowExclusiveLock as i32,
            std::ptr::null_mut(),
            false,
            false,
        );
        let mut attnames: *mut pg_sys::List = std::ptr::null_mut();
        for n in &names {
            attnames = pg_sys::lappend(attnames, pg_sys::makeString(pg_sys::pstrdup(n.as_ptr())).cast());
        }
        let cstate = pg_sys::BeginCopyFrom(
            pstate,
            rel,
            std::ptr::null_mut(),
            std::ptr::null(),
            false,
            Some(copy_read_data),
            attnames,
            std::ptr::null_mut(),
        );
        pg_sys::CopyFrom(cstate);
        pg_sys::EndCopyFrom(cstate);
        pg_sys::free_parsestate(pstate);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
    }
    let mut src = SOURCE.with_borrow_mut(|s| s.take()).expect("the source stays installed during the copy");
    drop(installed);
    (src.report)(src.rows, src.bytes);
    let copied = Copied { rows: src.rows, bytes: src.bytes };
    (src.conn, copied)
}

#[pg_guard]
unsafe extern "C-unwind" fn copy_read_data(outbuf: *mut std::ffi::c_void, minread: i32, maxread: i32) -> i32 {
    // SAFETY: COPY hands us a buffer of `maxread` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(outbuf.cast::<u8>(), maxread.max(0) as usize) };
    read_into(out, minread.max(0) as usize) as i32
}

/// Fill `out` with at least `minread` bytes unless the COPY has ended (then
/// possibly fewer; 0 means end of data).
fn read_into(out: &mut [u8], minread: usize) -> usize {
    SOURCE.with_borrow_mut(|s| s.as_mut().expect("copy source installed").read(out, minread))
}

impl Source {
    fn read(&mut self, out: &mut [u8], minread: usize) -> usize {
        let mut n = 0;
        loop {
            let k = (self.buf.len() - self.pos).min(out.len() - n);
            out[n..n + k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n += k;
            if n == out.len() || self.done {
                return n;
            }
            match self.conn.receive() {
                Received::Data(row) => {
                    self.rows += 1;
                    self.bytes += row.len() as i64;
                    self.buf.clear();
                    self.buf.extend_from_slice(row);
                    self.pos = 0;
                    if self.rows % REPORT_EVERY == 0 {
                        (self.report)(self.rows, self.bytes);
                        // A SIGTERM ends the process here (its transaction
                        // rolls back); barriers are absorbed.
                        crate::ffi::worker::check_for_interrupts();
                    }
                }
                Received::WouldBlock(fd) => {
                    if n >= minread.max(1) {
                        return n;
                    }
                    wait_socket(fd);
                }
                Received::End => self.done = true,
            }
        }
    }
}

fn wait_socket(fd: pg_sys::pgsocket) {
    // Processes interrupts (SIGTERM ends the copy and the process) and exits
    // on postmaster death.
    crate::ffi::worker::wait_socket(fd, std::time::Duration::from_secs(1));
}
