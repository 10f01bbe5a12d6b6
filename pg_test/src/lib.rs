//! Harness for tests that need real PostgreSQL 15 clusters.
//!
//! Every [`Cluster`] is a fresh `initdb` in its own directory under
//! `/tmp/logical_ext_pg_test/`, listening on its own free loopback port and on a
//! Unix socket in that directory, so tests can run in parallel. PostgreSQL
//! refuses to run as root: when the tests run as root, the server programs
//! are started with `runuser -u postgres --` and the directories are chown'd to
//! `postgres`.
//!
//! Dropping a cluster stops it (`pg_ctl -m immediate stop`) and removes its
//! directory, unless `KEEP_CLUSTERS=1` is set or the thread is panicking; then the
//! directory is kept and the server log's path (and its tail) is printed.

pub mod autofailover;
pub mod background;
pub mod conflicts;
pub mod decoding;
pub mod differential;
pub mod generator;
pub mod json;
pub mod pgoutput;
pub mod prometheus;
pub mod replication;
pub mod sync;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use postgres;
pub use postgres::{Client, NoTls};
pub use serde_json;

/// Where the PostgreSQL 15 programs are, unless `LOGICAL_EXT_PG_BIN` says otherwise
/// (a second, relocated copy of the server lets two checkouts test side by side).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Parent of every cluster directory.
pub const BASE_DIR: &str = "/tmp/logical_ext_pg_test";

/// Settings every test cluster gets (before the test's own `extra_conf`).
pub const BASE_CONF: &[&str] = &[
    "listen_addresses = '127.0.0.1'",
    "wal_level = logical",
    "max_replication_slots = 20",
    "max_wal_senders = 20",
    "max_worker_processes = 20",
    "track_commit_timestamp = on",
    "output_plugin_libraries = 'pgoutput, test_decoding, wal2json, logical_ext'",
    "fsync = off",
    "full_page_writes = off",
    "timezone = 'UTC'",
    "log_timezone = 'UTC'",
    "lc_messages = 'C'",
    "datestyle = 'ISO, MDY'",
    "log_line_prefix = '%m [%p] %q%a '",
    "log_min_messages = warning",
];

/// Path of a PostgreSQL program, e.g. `pg_bin("pg_recvlogical")`.
pub fn pg_bin(name: &str) -> PathBuf {
    match std::env::var_os("LOGICAL_EXT_PG_BIN") {
        Some(dir) => Path::new(&dir).join(name),
        None => Path::new(PG_BIN).join(name),
    }
}

/// Whether this process runs as root (then servers run as `postgres`).
pub fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective uid.
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// uid and gid of the `postgres` OS user.
pub fn postgres_ids() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            return (f[2].parse().expect("postgres uid"), f[3].parse().expect("postgres gid"));
        }
    }
    panic!("no `postgres` user in /etc/passwd (install postgresql-15)");
}

/// A `Command` that runs `program` as the `postgres` OS user when we are root
/// (`runuser -u postgres -- program`), or as ourselves otherwise.
pub fn command_as_postgres(program: impl AsRef<OsStr>) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command to completion and panics (with its output) unless it succeeds.
pub fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command with piped output, killing it and panicking when it is
/// still running after `timeout`. Returns its output whatever its exit status.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "timed out after {timeout:?} waiting until {what} finishes: {cmd:?}\n--- stderr\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() }
}

/// Polls `cond` with a short backoff until it returns true; panics naming
/// `description` when `timeout` passes first. Use this, never fixed sleeps, to
/// wait for something to happen.
pub fn wait_until(timeout: Duration, description: &str, cond: impl FnMut() -> bool) {
    if !poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting until {description}");
    }
}

/// Polls `cond` with a short backoff (2 ms doubling to 100 ms) until it
/// returns true (`true`) or `timeout` passes (`false`). The one polling loop
/// of the harness; callers decide how to fail.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Peak resident set size (`VmHWM`) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Current resident set size (`VmRSS`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().unwrap_or_else(|e| panic!("bad {line:?}: {e}"))
}

/// A readable rendering of a client error: SQLSTATE, message, detail, hint.
pub fn describe_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(d) = db.detail() {
                let _ = write!(s, " DETAIL: {d}");
            }
            if let Some(h) = db.hint() {
                let _ = write!(s, " HINT: {h}");
            }
            s
        }
        None => format!("{e:?}"),
    }
}

/// Picks a loopback port that is free right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

fn make_base_dir() -> PathBuf {
    let base = PathBuf::from(BASE_DIR);
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create {BASE_DIR}: {e}"));
    base
}

fn chown_to_postgres(path: &Path) {
    if running_as_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
    }
}

/// What the postmaster logs once it has terminated every process after a
/// child's crash, before it reinitialises and recovers.
const CRASH_RESTART_LINE: &str = "all server processes terminated; reinitializing";

/// How long a crash restart may take to be noticed, and then to be over
/// (crash recovery of a busy test cluster on a loaded machine).
const CRASH_RESTART_TIMEOUT: Duration = Duration::from_secs(90);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running PostgreSQL 15 cluster owned by one test.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl Cluster {
    /// initdb + configure + start a new cluster. `extra_conf` lines are appended
    /// to the settings (later settings win), e.g. `&["logical_decoding_work_mem = '1MB'"]`.
    pub fn start(name: &str, extra_conf: &[&str]) -> Cluster {
        let mut cluster = Cluster::empty(name);
        cluster.initdb(extra_conf);
        cluster.start_server();
        cluster
    }

    /// A streaming hot standby of `primary`: `pg_basebackup -R` through the
    /// physical slot `slot` (created by the backup), started with the
    /// primary's settings plus `extra_conf`. Returns once it accepts
    /// connections (in recovery).
    pub fn standby_of(primary: &Cluster, name: &str, slot: &str, extra_conf: &[&str]) -> Cluster {
        let mut cluster = Cluster::empty(name);
        run_checked(
            command_as_postgres(pg_bin("pg_basebackup"))
                .current_dir(&cluster.dir)
                .arg("-D")
                .arg(cluster.data_dir())
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary.port.to_string(),
                    "-U",
                    "postgres",
                    "-R",
                    "-C",
                    "-S",
                    slot,
                    "-X",
                    "stream",
                    "--no-sync",
                ]),
            &format!("pg_basebackup of {} for standby {name}", primary.name),
        );
        let mut text = format!("\n# standby {name}\nunix_socket_directories = '{}'\n", cluster.dir.display());
        for line in extra_conf {
            text.push_str(line);
            text.push('\n');
        }
        fs::OpenOptions::new()
            .append(true)
            .open(cluster.data_dir().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append to the standby's postgresql.conf");
        cluster.start_server();
        cluster
    }

    /// A new, empty cluster directory (no `data/` yet), owned by `postgres`.
    fn empty(name: &str) -> Cluster {
        let base = make_base_dir();
        // Keep the socket path (dir + "/.s.PGSQL.NNNNN") under the 107-byte limit.
        let short: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(32).collect();
        let dir = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let candidate = base.join(format!("{short}-{}-{n}", std::process::id()));
            match fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A leftover from an earlier run with the same pid.
                    let _ = fs::remove_dir_all(&candidate);
                }
                Err(e) => panic!("create {}: {e}", candidate.display()),
            }
        };
        chown_to_postgres(&dir);
        Cluster { name: name.to_string(), dir, port: 0, running: false }
    }

    /// A physical copy of this running cluster (`pg_basebackup`, WAL
    /// streamed, fast checkpoint) as a new cluster that is **not started**:
    /// start it with [`Cluster::start_stopped`] (its own port and socket
    /// directory). Its `postgresql.conf` is this cluster's, so it preloads
    /// the same libraries and starts the same background workers — a clone
    /// of a subscriber, a restored backup, or, with `standby_mode`, a
    /// streaming physical standby (`standby.signal` and `primary_conninfo`).
    pub fn base_backup(&self, name: &str, standby_mode: bool) -> Cluster {
        let clone = Cluster::empty(name);
        let mut cmd = command_as_postgres(pg_bin("pg_basebackup"));
        cmd.current_dir(clone.dir()).arg("-D").arg(clone.data_dir()).args([
            "-h",
            &self.dir.display().to_string(),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ]);
        if standby_mode {
            cmd.arg("-R");
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(300), &format!("pg_basebackup into {name}"));
        assert!(
            out.status.success(),
            "pg_basebackup of {} into {name} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        clone
    }

    /// Starts a stopped cluster (made by [`Cluster::base_backup`], or
    /// stopped with [`Cluster::stop_with`]) on a free port.
    pub fn start_stopped(&mut self) {
        assert!(!self.running, "cluster {} is running", self.name);
        self.start_server();
    }

    fn initdb(&self, extra_conf: &[&str]) {
        run_checked(
            command_as_postgres(pg_bin("initdb")).current_dir(&self.dir).arg("-D").arg(self.data_dir()).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            &format!("initdb for cluster {}", self.name),
        );
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))
            .expect("open postgresql.conf");
        let mut text = String::from("\n# logical_ext pg_test harness\n");
        for line in BASE_CONF {
            text.push_str(line);
            text.push('\n');
        }
        // The port (and the socket directory: a base backup of this cluster
        // has a directory of its own) live in their own file so a retry
        // can pick another port.
        text.push_str("include_if_exists = 'harness_port.conf'\n");
        for line in extra_conf {
            text.push_str(line);
            text.push('\n');
        }
        conf.write_all(text.as_bytes()).expect("write postgresql.conf");
    }

    fn start_server(&mut self) {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            self.port = free_port();
            let port_file = self.data_dir().join("harness_port.conf");
            let conf = format!("port = {}\nunix_socket_directories = '{}'\n", self.port, self.dir.display());
            fs::write(&port_file, conf).expect("write port conf");
            chown_to_postgres(&port_file);
            let out = command_as_postgres(pg_bin("pg_ctl"))
                .current_dir(&self.dir)
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "120", "start"])
                .stdin(Stdio::null())
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                self.running = true;
                return;
            }
            last_log = fs::read_to_string(self.log_path()).unwrap_or_default();
            // Another process took the port between our probe and the bind.
            if !last_log.contains("could not bind") && !last_log.contains("already in use") {
                panic!(
                    "pg_ctl start failed for cluster {} ({}):\n{}\n{}\n--- server log {}\n{}",
                    self.name,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.log_path().display(),
                    last_log
                );
            }
        }
        panic!("cluster {} found no free port in 5 tries; log:\n{last_log}", self.name);
    }

    /// The cluster's directory (holds `data/`, the log and the Unix socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn name(&self) -> &str {
        &self.name
    }

    /// libpq connection string for user `postgres`, database `dbname`, over TCP.
    pub fn conninfo_db(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} connect_timeout=30 application_name=pg_test",
            self.port
        )
    }
    /// libpq connection string for the `postgres` database.
    pub fn conninfo(&self) -> String {
        self.conninfo_db("postgres")
    }

    /// A new connection to the `postgres` database as user `postgres`.
    pub fn client(&self) -> Client {
        self.client_db("postgres")
    }

    /// A new connection to database `dbname` as user `postgres`.
    pub fn client_db(&self, dbname: &str) -> Client {
        Client::connect(&self.conninfo_db(dbname), NoTls).unwrap_or_else(|e| {
            panic!("connect to cluster {} ({}): {}", self.name, self.conninfo_db(dbname), describe_error(&e))
        })
    }

    /// Runs one or more SQL statements on a new connection; panics on error.
    pub fn exec(&self, sql: &str) {
        let mut c = self.client();
        exec(&mut c, sql);
    }

    /// Runs SQL through `psql -X -A -t` and returns its standard output
    /// (trailing newline trimmed); panics on error.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_checked(
            Command::new(pg_bin("psql"))
                .current_dir(&self.dir)
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.conninfo())
                .arg("-c")
                .arg(sql),
            &format!("psql on cluster {}", self.name),
        );
        String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string()
    }

    /// A `Command` for a PostgreSQL program run as the `postgres` OS user, in
    /// the cluster's directory.
    pub fn pg_command(&self, program: &str) -> Command {
        let mut c = command_as_postgres(pg_bin(program));
        c.current_dir(&self.dir);
        c
    }

    /// `pg_recvlogical` streaming `slot` to stdout (`--start --no-loop -f -`)
    /// over this cluster's connection string plus `extra` (e.g. an
    /// `application_name=...`; empty for none). Options and `--endpos` are
    /// the caller's.
    pub fn recvlogical(&self, extra: &str, slot: &str) -> Command {
        let mut c = self.pg_command("pg_recvlogical");
        c.arg("-d").arg(format!("{} {extra}", self.conninfo()).trim_end()).args([
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "-",
        ]);
        c
    }

    /// Stops the server (fast shutdown) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop_with("fast");
        run_checked(
            self.pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "120", "start"]),
            &format!("restart cluster {}", self.name),
        );
        self.running = true;
    }

    /// Stops the server with the given shutdown mode (`smart`, `fast`, `immediate`).
    pub fn stop_with(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let out = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .stdin(Stdio::null())
            .output();
        self.running = false;
        if let Ok(o) = &out
            && !o.status.success()
        {
            eprintln!("pg_ctl stop -m {mode} for cluster {} failed: {}", self.name, String::from_utf8_lossy(&o.stderr));
        }
    }

    /// How many crash restarts (every server process terminated and the
    /// shared memory reinitialised, after a child died abnormally) the
    /// server log shows so far.
    pub fn crash_restarts(&self) -> usize {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        log.lines().filter(|l| l.contains(CRASH_RESTART_LINE)).count()
    }

    /// `kill -9` of some of the server's processes (a worker, a walsender:
    /// children of the postmaster), then waits until the crash restart that
    /// causes is over: the postmaster has logged it, and the server accepts
    /// connections again, out of recovery.
    ///
    /// Waiting for the log line first matters: the postmaster notices the
    /// death a moment after the kill, and until it does the server still
    /// accepts connections and still shows the killed processes, so "the
    /// server is up" or "a worker runs" could be seen true before the crash
    /// restart that then cuts them. Panics (with the log's tail) when no
    /// crash restart follows, e.g. because none of `pids` was alive.
    pub fn kill9_and_wait_crash_restart(&self, pids: &[i32]) {
        let before = self.crash_restarts();
        let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
        if !pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
            panic!("kill -9 on cluster {}: none of {pids:?} is alive", self.name);
        }
        // kill fails when one of them has just gone: the wait decides.
        let _ = Command::new("kill").arg("-9").args(&pids).stdin(Stdio::null()).stderr(Stdio::null()).status();
        if !poll_until(CRASH_RESTART_TIMEOUT, || self.crash_restarts() > before) {
            panic!(
                "kill -9 of {pids:?} on cluster {}: no crash restart within {CRASH_RESTART_TIMEOUT:?} \
                 (were they alive?)\n--- log tail:\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        let mut last = String::new();
        let up = poll_until(CRASH_RESTART_TIMEOUT, || {
            match Client::connect(&self.conninfo(), NoTls)
                .and_then(|mut c| c.query_one("SELECT pg_is_in_recovery()", &[]))
            {
                Ok(r) => !r.get::<_, bool>(0),
                Err(e) => {
                    last = describe_error(&e);
                    false
                }
            }
        });
        if !up {
            panic!(
                "cluster {} is not back after its crash restart within {CRASH_RESTART_TIMEOUT:?}: {last}\n\
                 --- log tail:\n{}",
                self.name,
                self.log_tail(30)
            );
        }
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_with("immediate");
        let keep = std::env::var("KEEP_CLUSTERS").is_ok_and(|v| v == "1");
        if keep || std::thread::panicking() {
            eprintln!(
                "cluster {} kept in {} (server log: {})",
                self.name,
                self.dir.display(),
                self.log_path().display()
            );
            if std::thread::panicking() {
                eprintln!("--- last lines of {}:\n{}", self.log_path().display(), self.log_tail(30));
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs SQL (possibly several statements) on `client`; panics with the error.
pub fn exec(client: &mut Client, sql: &str) {
    if let Err(e) = client.batch_execute(sql) {
        panic!("SQL failed: {}\n--- SQL:\n{sql}", describe_error(&e));
    }
}

/// Runs a query that returns one text column in one row.
pub fn query_string(client: &mut Client, sql: &str) -> String {
    match client.query_one(sql, &[]) {
        Ok(row) => row.get::<_, String>(0),
        Err(e) => panic!("SQL failed: {}\n--- SQL:\n{sql}", describe_error(&e)),
    }
}

/// The backend process id of a connection.
pub fn backend_pid(client: &mut Client) -> u32 {
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).expect("pg_backend_pid()").get(0);
    pid as u32
}

/// Parses a `pg_lsn` text (`16/B374D848`) into its 64-bit value.
pub fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("not an LSN: {s:?}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("not an LSN: {s:?}"));
    (hi << 32) | lo
}
