//! pg_auto_failover formations: the HA manager users actually run (Debian's
//! `postgresql-15-auto-failover` + `pg-auto-failover-cli`), driving real
//! promotions of a logical_ext publisher in `tests/failover_autoctl.rs`.
//!
//! A [`Formation`] is a monitor and two data nodes on loopback, each in its
//! own directory under `/tmp/logical_ext_pg_test/`, run as the `postgres` OS
//! user with `pg_autoctl` (its configuration and state under the formation's
//! directory: `XDG_CONFIG_HOME`, `XDG_DATA_HOME`, `XDG_RUNTIME_DIR`). Every
//! node's `pg_autoctl run` is a child in its own process group, so a node can
//! be killed whole (keeper and Postgres) to force a real failover, and
//! everything is stopped on drop.
//!
//! How our settings reach the data nodes (the runbook in docs/FAILOVER.md
//! says the same):
//! * the first node's data directory is made here (`initdb`) with the
//!   harness settings and the test's appended to `postgresql.conf`, then
//!   handed to `pg_autoctl create postgres`. pg_autoctl puts
//!   `include 'postgresql-auto-failover.conf'` at the **top** of
//!   `postgresql.conf`, so what we append wins over its defaults
//!   (`wal_level = replica`, `shared_preload_libraries = pg_stat_statements`,
//!   `shared_buffers` tuned to the machine's memory). The second node is a
//!   `pg_basebackup` of the first made by pg_autoctl: it gets the same
//!   `postgresql.conf`.
//! * what must differ per node — `logical_ext.standby_slot_names`, the
//!   physical slot of the *other* node, which pg_auto_failover names
//!   `pgautofailover_standby_<node id>` — lives in `node_local.conf` in the
//!   node's directory, **outside** the data directory, read through
//!   `include_if_exists = '../node_local.conf'`: `pg_basebackup` and
//!   `pg_rewind` (pg_autoctl rebuilds and rejoins nodes with them) copy the
//!   data directory, `postgresql.auto.conf` included, but not that file.
//!
//! Waits poll `pg_autoctl show state --json` on the monitor with timeouts.

use crate::{BASE_CONF, Client, NoTls, command_as_postgres, describe_error, pg_bin, poll_until, running_as_root};
use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Set to `1` to let the pg_auto_failover tests pass (with a printed
/// notice) on a machine without `pg_autoctl` and the `pgautofailover`
/// extension; without it they fail there.
pub const SKIP_ENV: &str = "LOGICAL_EXT_SKIP_AUTOFAILOVER";

/// How long a formation may take to reach a state (a switchover is about 5 s
/// here; a failover after a kill is the monitor's timeouts, set short by
/// [`MONITOR_CONF`], plus the promotion).
pub const STATE_TIMEOUT: Duration = Duration::from_secs(90);

/// The monitor's health checks, shortened so that a killed primary is
/// declared failed and its standby promoted within seconds (defaults: 20 s
/// to call a node unhealthy, 30 s before a primary that cannot be reached
/// is considered demoted).
pub const MONITOR_CONF: &[&str] = &[
    "listen_addresses = '127.0.0.1'",
    "shared_buffers = '32MB'",
    "fsync = off",
    "pgautofailover.health_check_period = 1000",
    "pgautofailover.health_check_retry_delay = 500",
    "pgautofailover.health_check_timeout = 1000",
    "pgautofailover.node_considered_unhealthy_timeout = 3000",
    "pgautofailover.primary_demote_timeout = 5000",
];

/// Settings every data node gets after the harness's [`BASE_CONF`] and
/// before the test's: pg_autoctl's tuning sizes `shared_buffers` to the
/// machine; `pg_stat_statements` stays preloaded as pg_autoctl configures
/// it (the test adds logical_ext to the list).
pub const NODE_CONF: &[&str] = &[
    "shared_buffers = '128MB'",
    "hot_standby_feedback = on",
    "wal_receiver_status_interval = '1s'",
    "include_if_exists = '../node_local.conf'",
];

/// The `pg_autoctl` program, when installed.
pub fn pg_autoctl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|d| d.join("pg_autoctl")).find(|p| p.is_file())
}

/// Whether the `pgautofailover` extension is installed for our PostgreSQL.
fn pgautofailover_installed() -> bool {
    let out = Command::new(pg_bin("pg_config")).arg("--sharedir").stdin(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => {
            let share = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&share).join("extension/pgautofailover.control").is_file()
        }
        _ => false,
    }
}

/// `true` when pg_auto_failover is installed. When it is not: panics, or,
/// with [`SKIP_ENV`]`=1`, prints why the test does nothing and returns
/// `false`.
pub fn require_pg_auto_failover(test: &str) -> bool {
    let missing = match (pg_autoctl(), pgautofailover_installed()) {
        (Some(_), true) => return true,
        (None, _) => "pg_autoctl is not installed (Debian package pg-auto-failover-cli)",
        (Some(_), false) => {
            "the pgautofailover extension is not installed for this PostgreSQL \
                             (Debian package postgresql-15-auto-failover)"
        }
    };
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {missing} ({SKIP_ENV}=1)");
        return false;
    }
    panic!("{test}: {missing}; run scripts/setup.sh, or set {SKIP_ENV}=1 to skip");
}

/// One line of `pg_autoctl show state --json`.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub node_id: i64,
    pub name: String,
    pub port: u16,
    pub health: i64,
    pub current: String,
    pub assigned: String,
    pub reported_lsn: String,
    pub reported_tli: i64,
}

impl NodeState {
    /// The node reports and is assigned `state`.
    pub fn is(&self, state: &str) -> bool {
        self.current == state && self.assigned == state
    }
}

/// The name of the physical slot pg_auto_failover keeps for the node with
/// id `node_id` (on the primary, and on the other standbys).
pub fn standby_slot_name(node_id: i64) -> String {
    format!("pgautofailover_standby_{node_id}")
}

/// A monitor or data node: a directory, a port, its `pg_autoctl run`.
pub struct Node {
    name: String,
    dir: PathBuf,
    port: u16,
    run: Option<Child>,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The node's directory (holds `data/`, `node_local.conf`, `pg_autoctl.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// `pg_autoctl run`'s output.
    pub fn autoctl_log(&self) -> PathBuf {
        self.dir.join("pg_autoctl.log")
    }
    /// libpq connection string for user `postgres`, database `postgres`, over TCP.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10 application_name=pg_test",
            self.port
        )
    }
    /// A new connection, or the error's text (the node may be restarting).
    pub fn try_client(&self) -> Result<Client, String> {
        Client::connect(&self.conninfo(), NoTls).map_err(|e| describe_error(&e))
    }
    /// A new connection; panics when the node does not answer.
    pub fn client(&self) -> Client {
        self.try_client().unwrap_or_else(|e| panic!("connect to node {} ({}): {e}", self.name, self.conninfo()))
    }
    /// Whether `pg_autoctl run` of this node is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.run {
            Some(child) => child.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }
    /// The last `lines` lines of `pg_autoctl run`'s output and of the newest
    /// Postgres log file (pg_autoctl sets `logging_collector = on`).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        let _ =
            writeln!(s, "--- {} ({}):\n{}", self.name, self.autoctl_log().display(), tail(&self.autoctl_log(), lines));
        let newest = fs::read_dir(self.data_dir().join("log")).ok().and_then(|d| {
            d.filter_map(Result::ok).max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok()).map(|e| e.path())
        });
        if let Some(log) = newest {
            let _ = writeln!(s, "--- {} postgres log ({}):\n{}", self.name, log.display(), tail(&log, lines));
        }
        s
    }
    /// The postmaster's pid, from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

fn chown_to_postgres(path: &Path) {
    if running_as_root() {
        let (uid, gid) = crate::postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
    }
}

/// Sends `signal` (e.g. `KILL`) to a process group, or to a process
/// (`group = false`). Errors (already gone) are ignored: callers wait.
fn signal(pid: i32, signal: &str, group: bool) {
    let target = if group { format!("-{pid}") } else { pid.to_string() };
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A pg_auto_failover monitor and two data nodes (`<name>_1`, `<name>_2`).
pub struct Formation {
    base: PathBuf,
    pub monitor: Node,
    pub nodes: Vec<Node>,
}

impl Formation {
    /// Creates and runs the monitor, then the first data node (our `initdb`
    /// with [`BASE_CONF`], [`NODE_CONF`] and `node_conf` appended), then
    /// the second (pg_autoctl's base backup of the first); returns once the
    /// first is `primary` and the second `secondary`.
    pub fn start(name: &str, node_conf: &[&str]) -> Formation {
        let base = make_dir(name);
        for sub in ["xdg", "xdg/config", "xdg/data", "xdg/run"] {
            let d = base.join(sub);
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
            chown_to_postgres(&d);
        }
        let mut f = Formation { monitor: Node::new(&base, "monitor"), nodes: Vec::new(), base };
        // The monitor.
        let mut create = f.autoctl(&f.monitor.dir);
        create
            .args(["create", "monitor", "--pgdata"])
            .arg(f.monitor.data_dir())
            .args(["--pgport", &f.monitor.port.to_string(), "--pgctl"])
            .arg(pg_bin("pg_ctl"))
            .args(["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl"]);
        f.run_autoctl(&mut create, "pg_autoctl create monitor");
        append_conf(&f.monitor.data_dir(), "monitor settings of the logical_ext pg_test harness", MONITOR_CONF);
        f.spawn_run(0, true);
        crate::wait_until(STATE_TIMEOUT, "the pg_auto_failover monitor answers", || f.try_state().is_ok());

        // The first data node: our data directory, handed to pg_autoctl.
        let first = Node::new(&f.base, &format!("{name}_1"));
        crate::run_checked(
            command_as_postgres(pg_bin("initdb")).current_dir(&first.dir).arg("-D").arg(first.data_dir()).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            &format!("initdb for node {}", first.name),
        );
        let mut conf: Vec<&str> = BASE_CONF.to_vec();
        conf.extend_from_slice(NODE_CONF);
        conf.extend_from_slice(node_conf);
        append_conf(&first.data_dir(), "logical_ext pg_test harness (after pg_auto_failover's include)", &conf);
        f.nodes.push(first);
        f.create_node(0);
        f.spawn_run(1, false);
        f.wait_state(&format!("{name}_1 is single"), |s| s.len() == 1 && s[0].is("single"));

        // The second: pg_autoctl makes it a standby of the first.
        f.nodes.push(Node::new(&f.base, &format!("{name}_2")));
        f.create_node(1);
        f.spawn_run(2, false);
        f.wait_roles(0, 1);
        f
    }

    fn autoctl(&self, cwd: &Path) -> Command {
        let mut c = command_as_postgres("env");
        c.current_dir(cwd)
            .arg(format!("XDG_CONFIG_HOME={}", self.base.join("xdg/config").display()))
            .arg(format!("XDG_DATA_HOME={}", self.base.join("xdg/data").display()))
            .arg(format!("XDG_RUNTIME_DIR={}", self.base.join("xdg/run").display()))
            .arg(pg_autoctl().expect("pg_autoctl is installed (require_pg_auto_failover)"));
        c
    }

    fn run_autoctl(&self, cmd: &mut Command, what: &str) -> String {
        let out = crate::run_with_timeout(cmd, STATE_TIMEOUT, what);
        if !out.status.success() {
            panic!(
                "{what} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.explain()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The monitor's connection string for the data nodes.
    pub fn monitor_uri(&self) -> String {
        format!("postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable", self.monitor.port)
    }

    fn create_node(&self, idx: usize) {
        let node = &self.nodes[idx];
        let mut create = self.autoctl(&node.dir);
        create
            .args(["create", "postgres", "--pgdata"])
            .arg(node.data_dir())
            .args(["--pgport", &node.port.to_string(), "--pgctl"])
            .arg(pg_bin("pg_ctl"))
            .args(["--hostname", "127.0.0.1", "--listen", "127.0.0.1", "--auth", "trust", "--no-ssl"])
            .args(["--name", &node.name, "--monitor", &self.monitor_uri()]);
        self.run_autoctl(&mut create, &format!("pg_autoctl create postgres ({})", node.name));
    }

    /// Starts `pg_autoctl run` for the monitor (`monitor`) or data node
    /// `idx - 1`, in its own process group, output to its `pg_autoctl.log`.
    fn spawn_run(&mut self, idx: usize, monitor: bool) {
        let node = if monitor { &self.monitor } else { &self.nodes[idx - 1] };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.autoctl_log())
            .unwrap_or_else(|e| panic!("open {}: {e}", node.autoctl_log().display()));
        let mut run = self.autoctl(&node.dir);
        run.args(["run", "--pgdata"]).arg(node.data_dir());
        run.stdin(Stdio::null()).stdout(log.try_clone().expect("clone the log's handle")).stderr(log).process_group(0);
        let child = run.spawn().unwrap_or_else(|e| panic!("spawn {run:?}: {e}"));
        let node = if monitor { &mut self.monitor } else { &mut self.nodes[idx - 1] };
        node.run = Some(child);
    }

    /// `pg_autoctl show state --json`, or why not.
    pub fn try_state(&self) -> Result<Vec<NodeState>, String> {
        let mut cmd = self.autoctl(&self.monitor.dir);
        cmd.args(["show", "state", "--json", "--pgdata"]).arg(self.monitor.data_dir());
        let out = crate::run_with_timeout(&mut cmd, Duration::from_secs(30), "pg_autoctl show state");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        let rows = v.as_array().ok_or_else(|| format!("not a JSON array: {v}"))?;
        Ok(rows
            .iter()
            .map(|n| {
                let s = |k: &str| n.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
                let i = |k: &str| n.get(k).and_then(|x| x.as_i64()).unwrap_or(-1);
                NodeState {
                    node_id: i("node_id"),
                    name: s("nodename"),
                    port: i("nodeport") as u16,
                    health: i("health"),
                    current: s("current_group_state"),
                    assigned: s("assigned_group_state"),
                    reported_lsn: s("reported_lsn"),
                    reported_tli: i("reported_tli"),
                }
            })
            .collect())
    }

    /// The formation's state; panics when the monitor does not answer.
    pub fn state(&self) -> Vec<NodeState> {
        self.try_state().unwrap_or_else(|e| panic!("pg_autoctl show state: {e}\n{}", self.explain()))
    }

    /// Waits until `cond` holds for the formation's state.
    pub fn wait_state(&self, what: &str, mut cond: impl FnMut(&[NodeState]) -> bool) -> Vec<NodeState> {
        let mut last = Vec::new();
        let ok = poll_until(STATE_TIMEOUT, || match self.try_state() {
            Ok(s) => {
                let done = cond(&s);
                last = s;
                done
            }
            Err(_) => false,
        });
        if !ok {
            panic!("timed out after {STATE_TIMEOUT:?} waiting until {what}; last state: {last:#?}\n{}", self.explain());
        }
        last
    }

    /// Waits until node `primary` is `primary` and node `secondary` is
    /// `secondary` (reported and assigned).
    pub fn wait_roles(&self, primary: usize, secondary: usize) -> Vec<NodeState> {
        let (p, s) = (self.nodes[primary].name.clone(), self.nodes[secondary].name.clone());
        self.wait_state(&format!("{p} is primary and {s} secondary"), |st| {
            st.iter().any(|n| n.name == p && n.is("primary")) && st.iter().any(|n| n.name == s && n.is("secondary"))
        })
    }

    /// The monitor's id of data node `idx`.
    pub fn node_id(&self, idx: usize) -> i64 {
        let name = &self.nodes[idx].name;
        self.state().iter().find(|n| &n.name == name).map(|n| n.node_id).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Index of the node the monitor reports as `primary` (or
    /// `wait_primary`: promoted, its standby not back yet).
    pub fn primary_index(&self) -> Option<usize> {
        let st = self.state();
        let name = st.iter().find(|n| n.current == "primary" || n.current == "wait_primary")?.name.clone();
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `host=127.0.0.1,127.0.0.1 port=P1,P2 ... target_session_attrs=read-write`:
    /// libpq tries the nodes in turn and keeps the one that accepts writes.
    pub fn multi_host_conninfo(&self) -> String {
        let ports: Vec<String> = self.nodes.iter().map(|n| n.port.to_string()).collect();
        let hosts: Vec<&str> = self.nodes.iter().map(|_| "127.0.0.1").collect();
        format!(
            "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=5",
            hosts.join(","),
            ports.join(",")
        )
    }

    /// Writes data node `idx`'s `node_local.conf` (outside its data
    /// directory: see the module's notes) and reloads it when it runs.
    pub fn set_node_local_conf(&self, idx: usize, lines: &[String]) {
        let node = &self.nodes[idx];
        let path = node.dir.join("node_local.conf");
        let mut text = String::from("# per-node settings (logical_ext pg_test harness)\n");
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        chown_to_postgres(&path);
        if let Ok(mut c) = node.try_client() {
            let _ = c.batch_execute("SELECT pg_reload_conf()");
        }
    }

    /// `pg_autoctl perform failover` (a switchover: the primary is demoted
    /// and rejoins as a standby); returns once node `to` is `primary` and
    /// the old primary `secondary`.
    pub fn perform_failover(&self, from: usize, to: usize) -> Vec<NodeState> {
        let mut cmd = self.autoctl(&self.monitor.dir);
        cmd.args(["perform", "failover", "--wait", "60", "--pgdata"]).arg(self.monitor.data_dir());
        self.run_autoctl(&mut cmd, "pg_autoctl perform failover");
        self.wait_roles(to, from)
    }

    /// Kills data node `idx` whole — its `pg_autoctl run` process group and
    /// its postmaster — with SIGKILL, as a crashed machine would stop.
    pub fn kill_node(&mut self, idx: usize) {
        let node = &mut self.nodes[idx];
        let postmaster = node.postmaster_pid();
        if let Some(child) = &mut node.run {
            signal(child.id() as i32, "KILL", true);
            let _ = child.wait();
        }
        node.run = None;
        if let Some(pid) = postmaster {
            signal(pid, "KILL", false);
            let gone = poll_until(Duration::from_secs(30), || !Path::new(&format!("/proc/{pid}")).exists());
            assert!(gone, "the postmaster {pid} of {} survived SIGKILL", node.name);
        }
    }

    /// Starts `pg_autoctl run` of data node `idx` again (after
    /// [`Formation::kill_node`]): pg_autoctl starts its Postgres and, the
    /// monitor having promoted the other node, rejoins it as a standby.
    pub fn restart_node(&mut self, idx: usize) {
        assert!(!self.nodes[idx].is_running(), "node {} runs", self.nodes[idx].name);
        self.spawn_run(idx + 1, false);
    }

    /// The state and every node's log tails, for a failed wait.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for n in self.nodes.iter().chain(std::iter::once(&self.monitor)) {
            s.push_str(&n.log_tails(15));
        }
        s
    }

    fn stop_node(node: &mut Node) {
        if let Some(mut child) = node.run.take() {
            let pgid = child.id() as i32;
            // SIGQUIT: pg_autoctl stops at once, and Postgres, in the same
            // process group, shuts down immediately (a test's end, not a
            // node's: nothing here needs a clean shutdown).
            signal(pgid, "QUIT", true);
            if !poll_until(Duration::from_secs(30), || child.try_wait().map(|s| s.is_some()).unwrap_or(true)) {
                signal(pgid, "KILL", true);
                let _ = child.wait();
            }
        }
        if node.data_dir().join("postmaster.pid").exists() {
            let _ = command_as_postgres(pg_bin("pg_ctl"))
                .arg("-D")
                .arg(node.data_dir())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Node {
    fn new(base: &Path, name: &str) -> Node {
        let dir = base.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        chown_to_postgres(&dir);
        Node { name: name.to_string(), dir, port: free_port(), run: None }
    }
}

fn make_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(crate::BASE_DIR);
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
    let short: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(24).collect();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let candidate = base.join(format!("af_{short}-{}-{n}", std::process::id()));
        match fs::create_dir(&candidate) {
            Ok(()) => {
                chown_to_postgres(&candidate);
                return candidate;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_dir_all(&candidate);
            }
            Err(e) => panic!("create {}: {e}", candidate.display()),
        }
    }
}

fn append_conf(data_dir: &Path, comment: &str, lines: &[&str]) {
    let path = data_dir.join("postgresql.conf");
    let mut text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let _ = writeln!(text, "\n# {comment}");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Drop for Formation {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            Formation::stop_node(node);
        }
        Formation::stop_node(&mut self.monitor);
        let keep = std::env::var("KEEP_CLUSTERS").is_ok_and(|v| v == "1");
        if keep || std::thread::panicking() {
            eprintln!("pg_auto_failover formation kept in {}", self.base.display());
            if std::thread::panicking() {
                eprintln!("{}", self.explain());
            }
        } else {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}
