//! Programs a test runs in the background (a pgbench load, a writer) while
//! it waits for something else.
//!
//! A wait that depends on such a load (e.g. "the subscriber applied more
//! transactions") can only time out when the load has died, and then the
//! timeout message alone does not say why. So a [`Background`] keeps its
//! program's stderr in a file (next to the cluster's log, kept with it when
//! a test fails) and can tell whether the program still runs and how it
//! ended: waits check [`Background::running`] and put
//! [`Background::describe`] into their failure message.
//!
//! Stopping a database client ([`Background::stop`]) also waits until its
//! sessions have left the server, so that no transaction of it commits
//! after the caller moved on. Dropping a `Background` kills the program
//! (also when the test panics).

use crate::{Client, Cluster, NoTls, pg_bin};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How long the sessions of a killed client may take to end.
const SESSIONS_GONE: Duration = Duration::from_secs(60);

/// A program running in the background; killed on drop.
pub struct Background {
    what: String,
    child: Child,
    stderr_path: PathBuf,
    exited: Option<ExitStatus>,
    /// For a database client: a connection string to its server and the
    /// `application_name` its sessions carry, so that [`Background::stop`]
    /// can wait until they are gone.
    sessions: Option<(String, String)>,
}

impl Background {
    /// Starts `cmd` (stdout discarded, stderr kept in a file in `dir`);
    /// `what` names it in messages, e.g. `"pgbench on the publisher"`.
    pub fn spawn(cmd: Command, what: &str, dir: &std::path::Path) -> Background {
        Background::start(cmd, what, dir, Stdio::null())
    }

    /// [`Background::spawn`] with stdout piped: returns the pipe too (for
    /// a reader thread, e.g. of pg_recvlogical's documents).
    pub fn spawn_reading(cmd: Command, what: &str, dir: &std::path::Path) -> (Background, ChildStdout) {
        let mut b = Background::start(cmd, what, dir, Stdio::piped());
        let out = b.child.stdout.take().expect("stdout pipe");
        (b, out)
    }

    fn start(mut cmd: Command, what: &str, dir: &std::path::Path, stdout: Stdio) -> Background {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let short: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(24).collect();
        let stderr_path = dir.join(format!("background-{short}-{n}.stderr"));
        let stderr = File::create(&stderr_path).unwrap_or_else(|e| panic!("create {}: {e}", stderr_path.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
        Background { what: what.to_string(), child, stderr_path, exited: None, sessions: None }
    }

    /// `pgbench -n <args> <cluster's conninfo>` in the background (its
    /// stderr kept in the cluster's directory). The conninfo is pgbench's
    /// DBNAME argument: its `-d` is `--debug`, which would fill the stderr
    /// file with a line per command.
    pub fn pgbench(cluster: &Cluster, args: &[&str]) -> Background {
        let app = format!("pg_test_load_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut cmd = Command::new(pg_bin("pgbench"));
        // (A keyword given twice in a connection string: the last wins.)
        cmd.arg("-n").args(args).arg(format!("{} application_name={app}", cluster.conninfo()));
        let mut b = Background::spawn(cmd, &format!("pgbench on {}", cluster.name()), cluster.dir());
        b.sessions = Some((cluster.conninfo(), app));
        b
    }

    /// Whether the program still runs (`false` once it has exited, for
    /// whatever reason).
    pub fn running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap_or_else(|e| panic!("{}: try_wait: {e}", self.what));
        }
        self.exited.is_none()
    }

    /// How the program is doing, for failure messages: running, or its exit
    /// status, and the last lines of its stderr.
    pub fn describe(&mut self) -> String {
        let state = if self.running() {
            "still running".to_string()
        } else {
            format!("EXITED ({})", self.exited.expect("set when not running"))
        };
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        format!(
            "--- {} ({}): {state}; last lines of its stderr:\n{}",
            self.what,
            self.stderr_path.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// Panics with [`Background::describe`] unless the program still runs;
    /// `when` says at which point of the test it had to.
    pub fn assert_running(&mut self, when: &str) {
        if !self.running() {
            let how = self.describe();
            panic!("{} ended before {when}\n{how}", self.what);
        }
    }

    /// Kills the program (if it still runs) and reaps it; for a database
    /// client, also waits until its sessions are gone from the server.
    /// Returns when it stopped.
    ///
    /// A killed client's backend may be in the middle of a COMMIT, which
    /// it finishes: a caller that reads the server's WAL position right
    /// after the kill (to wait for a subscriber to catch up) could miss
    /// that transaction and then compare tables while it still travels.
    /// When the server cannot be reached, its sessions count as gone (it is
    /// down, or restarting and has terminated every backend).
    pub fn stop(mut self) -> Instant {
        self.kill();
        if let Some((conninfo, app)) = self.sessions.take() {
            let mut left = -1;
            let gone = crate::poll_until(SESSIONS_GONE, || {
                left = match Client::connect(&conninfo, NoTls).and_then(|mut c| {
                    c.query_one("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = $1", &[&app])
                }) {
                    Ok(r) => r.get::<_, i64>(0),
                    Err(_) => 0,
                };
                left == 0
            });
            assert!(gone, "{left} sessions of the killed {} still run after {SESSIONS_GONE:?}", self.what);
        }
        Instant::now()
    }

    fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        if let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
    }
}

/// Polls `cond` like [`crate::replication::wait_or_explain`] while `load`
/// is what makes it come true: stops waiting as soon as `load` has exited.
/// On that or on a timeout, panics with `explain()` and how `load` is doing
/// (its exit status and stderr), so a dead load is named as the cause.
pub fn wait_with_load(
    load: &mut Background,
    timeout: Duration,
    description: &str,
    mut cond: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let mut load_died = false;
    let done = crate::poll_until(timeout, || {
        if cond() {
            return true;
        }
        load_died = !load.running();
        load_died
    });
    if !done || load_died {
        let why = if load_died { format!("{} exited", load.what) } else { format!("timed out after {timeout:?}") };
        let how = load.describe();
        panic!("{why} while waiting until {description}\n{how}\n{}", explain());
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
