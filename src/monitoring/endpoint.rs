//! The metrics endpoint: a background worker that serves `GET /metrics`
//! (the text of `logical_ext.metrics()`) on `logical_ext.metrics_listen`,
//! so Prometheus scrapes the server directly: no cron job, no password in a
//! scraper's configuration, one series per slot per server.
//!
//! Design notes
//! - Its own worker, not the sampler's: the figures come from SQL views
//!   (`pg_replication_slots`, `pg_stat_replication_slots`,
//!   `subscription_status`), which need a database connection; the sampler
//!   deliberately has none. This worker connects to
//!   `logical_ext.metrics_database` (default `postgres`; a change at reload
//!   makes it exit and be started again, connected to the new one) as the bootstrap
//!   superuser and gathers each scrape in one short transaction, through the
//!   very function `metrics()` uses (`functions::metrics_text`). Slots,
//!   walsenders and the server's WAL are server-wide, so each slot appears
//!   exactly once; subscriptions are those of that database (documented).
//! - Registered only when the setting is non-empty at server start (off
//!   costs nothing: no process, no worker slot, no port). A reload re-binds
//!   to a changed address, or closes the port when the setting is emptied.
//! - One connection at a time, never blocking for long: the worker waits on
//!   its latch and the listening socket together (`WaitLatchOrSocket`, so
//!   SIGHUP, SIGTERM, postmaster death and procsignal barriers are handled
//!   as in every other wait), reads a request head for at most
//!   [`READ_TIMEOUT`] and at most `http::MAX_REQUEST_BYTES`, answers and
//!   closes, with `lock_timeout` set so a scrape never waits long behind a
//!   lock. Read-only: the transaction writes nothing, and no row data is in
//!   the figures.
//! - An ERROR while gathering (the gathering's own subtransactions already
//!   leave failed sections out) is caught, logged with its SQLSTATE and
//!   answered with 500; the worker goes on. If the worker dies anyway, the
//!   postmaster restarts it after [`RESTART_SECS`].

use super::http::{self, Answer};
use super::{functions, settings};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

/// `bgw_type`, as shown in `pg_stat_activity.backend_type`.
pub(crate) const WORKER_TYPE: &str = "logical_ext metrics";
/// Seconds before the postmaster restarts an exited worker.
pub(crate) const RESTART_SECS: u64 = 10;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to receive the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served per wake-up before interrupts are checked again.
const ACCEPTS_PER_WAKE: usize = 8;
/// `lock_timeout` of the worker's session.
const LOCK_TIMEOUT: &std::ffi::CStr = c"5s";
/// How often a failed bind is retried.
const RETRY: Duration = Duration::from_secs(10);

/// Registers the endpoint's worker when `logical_ext.metrics_listen` is set.
/// Call only from `_PG_init` while `process_shared_preload_libraries_in_progress`.
pub(crate) fn register_if_configured() {
    if settings::metrics_listen().is_none() {
        return;
    }
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("logical_ext")
        .set_function("logical_ext_metrics_main")
        .enable_spi_access()
        // Standbys too: their figures (receive/replay) matter most there.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(RESTART_SECS)))
        .load();
}

/// Logs at `level` with a SQLSTATE (never a panic).
fn log(level: PgLogLevel, code: PgSqlErrorCode, message: String, hint: Option<&str>) {
    let mut r = ErrorReport::new(code, message, "logical_ext metrics endpoint");
    if let Some(h) = hint {
        r = r.set_hint(h.to_string());
    }
    r.report(level);
}

/// The bound socket and the setting it was bound for.
struct Bound {
    setting: String,
    listener: TcpListener,
}

/// The worker's entry point (`bgw_function_name`).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn logical_ext_metrics_main(_arg: pg_sys::Datum) {
    crate::ffi::worker::attach_signal_handlers();
    let database = settings::metrics_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // Runs SQL as the bootstrap superuser: never with the database's search_path.
    crate::ffi::worker::pin_session_search_path();
    // A scrape must not wait behind a long lock (say, DDL on logical_ext's
    // tables): after LOCK_TIMEOUT its section fails (SQLSTATE 55P03) and is
    // named in logical_ext_scrape_errors, the rest is served.
    // SAFETY: setting a built-in GUC of this process to a valid value.
    unsafe {
        pg_sys::SetConfigOption(
            c"lock_timeout".as_ptr(),
            LOCK_TIMEOUT.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };

    let mut bound: Option<Bound> = None;
    // The setting a bind last failed for, and when.
    let mut failed: Option<(String, Instant)> = None;
    loop {
        if settings::metrics_database() != database {
            // A worker is connected to one database for life: exit, and the
            // postmaster starts a new one (connected to the new database)
            // after RESTART_SECS.
            log(
                PgLogLevel::LOG,
                PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                format!(
                    "logical_ext: metrics endpoint restarting to connect to database \"{}\"",
                    settings::metrics_database()
                ),
                None,
            );
            // SAFETY: ends this process the normal way (exit callbacks run).
            unsafe { pg_sys::proc_exit(1) };
        }
        let want = settings::metrics_listen();
        if bound.as_ref().map(|b| &b.setting) != want.as_ref() {
            if let Some(b) = bound.take() {
                log(
                    PgLogLevel::LOG,
                    PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                    format!("logical_ext: no longer serving metrics on \"{}\"", b.setting),
                    None,
                );
            }
            if let Some(w) = want.as_ref() {
                let retry_due = failed.as_ref().is_none_or(|(s, at)| s != w || at.elapsed() >= RETRY);
                if retry_due {
                    // Said once per value: a retry that fails again is quiet.
                    let first_try = failed.as_ref().is_none_or(|(s, _)| s != w);
                    match bind(w, if first_try { PgLogLevel::WARNING } else { PgLogLevel::DEBUG1 }) {
                        Some(listener) => {
                            failed = None;
                            bound = Some(Bound { setting: w.clone(), listener });
                        }
                        None => failed = Some((w.clone(), Instant::now())),
                    }
                }
            }
        }
        match &bound {
            // Off, or the bind failed: wait for a reload (or the retry).
            None => crate::ffi::worker::wait(failed.as_ref().map(|_| RETRY)),
            Some(b) => {
                let fd = b.listener.as_raw_fd();
                if !crate::ffi::worker::wait_socket(fd, Duration::from_secs(60)) {
                    serve_pending(&b.listener, &database);
                }
            }
        }
    }
}

/// Binds the (non-blocking) listening socket of `setting`; logs why not at
/// `failure_level`.
fn bind(setting: &str, failure_level: PgLogLevel) -> Option<TcpListener> {
    let Some(target) = http::listen_target(setting) else {
        log(
            failure_level,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid value for logical_ext.metrics_listen: \"{setting}\""),
            Some("Use host:port, e.g. 127.0.0.1:9188, or a port alone for the loopback address."),
        );
        return None;
    };
    let addrs: Vec<std::net::SocketAddr> = match target.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            log(
                failure_level,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("could not resolve logical_ext.metrics_listen \"{setting}\": {e}"),
                None,
            );
            return None;
        }
    };
    let mut last_err = None;
    for addr in &addrs {
        match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => {
                let loopback = addr.ip().is_loopback();
                log(
                    PgLogLevel::LOG,
                    PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                    format!(
                        "logical_ext: serving metrics on http://{addr}{}{}",
                        http::METRICS_PATH,
                        if loopback { "" } else { " (not a loopback address: whoever reaches it reads the figures)" }
                    ),
                    None,
                );
                return Some(l);
            }
            Err(e) => last_err = Some(format!("{addr}: {e}")),
        }
    }
    log(
        failure_level,
        PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        format!(
            "could not listen on logical_ext.metrics_listen \"{setting}\": {}",
            last_err.unwrap_or_else(|| "no address".to_string())
        ),
        Some("Choose a free port (or another address) and reload; the worker retries every 10 seconds (quietly)."),
    );
    None
}

/// Serves the connections waiting on `listener` (a few, then back to the
/// latch).
fn serve_pending(listener: &TcpListener, database: &str) {
    for _ in 0..ACCEPTS_PER_WAKE {
        match listener.accept() {
            Ok((stream, _)) => serve(stream, database),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // EMFILE and friends: say so, try again at the next wake-up.
                log(
                    PgLogLevel::WARNING,
                    PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                    format!("logical_ext metrics endpoint could not accept a connection: {e}"),
                    None,
                );
                return;
            }
        }
        crate::ffi::worker::check_for_interrupts();
    }
}

/// One request, one response, close. Client errors (slow, gone) are the
/// client's: nothing is logged for them.
fn serve(mut stream: TcpStream, database: &str) {
    if stream.set_nonblocking(false).is_err() || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut received = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let request = loop {
        let r = http::classify(&received);
        if r != Answer::Incomplete {
            break r;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    };
    let response = match request {
        Answer::Metrics => match gather() {
            Ok(text) => http::response(200, http::CONTENT_TYPE, &[], &text),
            Err(()) => http::response(
                500,
                "text/plain; charset=utf-8",
                &[],
                &format!("the figures could not be gathered in database \"{database}\"; see the server log\n"),
            ),
        },
        other => http::refusal(other),
    };
    let _ = stream.write_all(&response);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The text of `metrics()`, gathered in a transaction of its own; an ERROR
/// is logged (with its SQLSTATE) and becomes `Err`.
fn gather() -> Result<String, ()> {
    crate::ffi::worker::in_transaction(|| {
        crate::ffi::in_subtransaction(functions::metrics_text).map_err(|e| {
            log(
                PgLogLevel::WARNING,
                e.sql_error_code(),
                format!("logical_ext metrics endpoint could not gather the figures: {}", e.message()),
                e.hint(),
            );
        })
    })
}
