//! Prometheus's own programs beside the clusters (issue 18): `promtool` for
//! the shipped rules, a real `prometheus` server scraping logical_ext's
//! metrics endpoint, and the small readers the tests of `monitoring/` share
//! (alert blocks of the rules file, metric names of a PromQL expression or
//! of a scrape).
//!
//! Both programs come from Debian's `prometheus` package, which
//! scripts/setup.sh installs, so a missing program fails the test; set
//! `LOGICAL_EXT_SKIP_PROMETHEUS=1` to skip these tests on a machine without
//! it (they then print that they were skipped).
//!
//! There is no HTTP client crate here: [`http_get`] speaks HTTP/1.0 over a
//! `TcpStream` (so the server answers without chunked encoding and closes),
//! which is all Prometheus's API and the metrics endpoint need.

use crate::{BASE_DIR, poll_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The environment variable that lets these tests skip when Prometheus's
/// programs are not installed.
pub const SKIP_ENV: &str = "LOGICAL_EXT_SKIP_PROMETHEUS";

/// The repository's root (pg_test's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("pg_test has a parent").to_path_buf()
}

/// The shipped rules file.
pub fn rules_path() -> PathBuf {
    repo_root().join("monitoring/logical_ext.rules.yml")
}

/// The path of `program` (`promtool`, `prometheus`) found in `PATH`, or
/// `None` when [`SKIP_ENV`] is `1` and it is missing (the caller returns:
/// skipped). Panics when it is missing otherwise: scripts/setup.sh installs it.
pub fn require_program(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|c| c.is_file()))
        .unwrap_or(None);
    match found {
        Some(p) => Some(p),
        None if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
            eprintln!("skipped: {program} is not installed and {SKIP_ENV}=1");
            None
        }
        None => panic!(
            "{program} is not installed: run scripts/setup.sh (Debian package `prometheus`), \
             or set {SKIP_ENV}=1 to skip the Prometheus tests"
        ),
    }
}

/// One `- alert:` entry of a rules file, as text (the shipped file keeps
/// one rule per block, each starting with `- alert: Name`).
#[derive(Debug, Clone)]
pub struct AlertBlock {
    pub name: String,
    pub text: String,
}

impl AlertBlock {
    /// The value of a `key: value` line of the block (quotes removed).
    pub fn field(&self, key: &str) -> Option<String> {
        self.text.lines().find_map(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            let rest = t.strip_prefix(key)?.strip_prefix(':')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
    }
}

impl AlertBlock {
    /// The rule's `expr`, also when written as a block scalar (`expr: |`
    /// followed by more indented lines).
    pub fn expr(&self) -> String {
        let mut lines = self.text.lines();
        let mut out = String::new();
        while let Some(l) = lines.next() {
            let Some(rest) = l.trim_start().strip_prefix("expr:") else { continue };
            let rest = rest.trim();
            if rest != "|" && rest != ">" {
                return rest.trim_matches('"').to_string();
            }
            let indent = l.len() - l.trim_start().len();
            for cont in lines.by_ref() {
                if cont.len() - cont.trim_start().len() <= indent && !cont.trim().is_empty() {
                    break;
                }
                out.push_str(cont.trim());
                out.push('\n');
            }
            break;
        }
        out
    }
}

/// The alert blocks of a rules file, in order. Comment lines between
/// blocks belong to the next one's preceding text and are left out.
pub fn alert_blocks(rules: &str) -> Vec<AlertBlock> {
    let mut blocks: Vec<AlertBlock> = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            blocks.push(AlertBlock { name: name.trim().to_string(), text: String::new() });
        } else if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(b) = blocks.last_mut() {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    blocks
}

/// `rules` with, inside every block of alert `alert`, each `(from, to)`
/// replaced; panics when a `from` is not found in that alert's blocks, so a
/// change of the shipped file cannot silently leave a test on the defaults.
pub fn with_alert_changed(rules: &str, alert: &str, changes: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut in_alert = false;
    let mut block = String::new();
    let mut seen = vec![false; changes.len()];
    let flush = |block: &mut String, in_alert: bool, out: &mut String, seen: &mut Vec<bool>| {
        if in_alert {
            for (i, (from, to)) in changes.iter().enumerate() {
                if block.contains(from) {
                    seen[i] = true;
                    *block = block.replace(from, to);
                }
            }
        }
        out.push_str(block);
        block.clear();
    };
    for line in rules.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            flush(&mut block, in_alert, &mut out, &mut seen);
            in_alert = name.trim() == alert;
        }
        block.push_str(line);
        block.push('\n');
    }
    flush(&mut block, in_alert, &mut out, &mut seen);
    for (i, (from, _)) in changes.iter().enumerate() {
        assert!(seen[i], "alert {alert} of the rules file has no {from:?}");
    }
    out
}

/// The metric names a PromQL expression selects: identifiers starting with
/// `logical_ext_`, plus `up` and `ALERTS` (quoted strings are skipped, so a
/// label value never counts).
pub fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            // Label names inside {...} never start with logical_ext_ here.
            if word.starts_with("logical_ext_") || word == "up" || word == "ALERTS" {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric families a scrape declares (its `# TYPE name kind` lines).
pub fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// An HTTP response: status code, header block, body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` (an HTTP/1.0 request) to `addr` (`127.0.0.1:port`).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("no end of headers in {text:?}")))?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    Ok(Response { status, headers: headers.to_string(), body: body.to_string() })
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A `prometheus` server on a free loopback port with its own directory
/// (configuration, rules, TSDB, log) under [`BASE_DIR`]; killed on drop, and
/// its directory removed (kept, with the log's tail printed, when the test
/// panics). It runs as whoever runs the tests: Prometheus is no PostgreSQL
/// and does not mind root.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, job `logical_ext`)
    /// every second and evaluating `rules` (a rules file's text) every
    /// second; waits until it is ready. `None` when skipped (see
    /// [`require_program`]).
    pub fn start(targets: &[String], rules: &str) -> Option<Prometheus> {
        let program = require_program("prometheus")?;
        fs::create_dir_all(BASE_DIR).unwrap_or_else(|e| panic!("create {BASE_DIR}: {e}"));
        let dir = Path::new(BASE_DIR).join(format!(
            "prometheus-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        fs::write(dir.join("rules.yml"), rules).expect("write rules.yml");
        let target_list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: logical_ext\n    static_configs:\n      - targets: [{}]\n",
            dir.join("rules.yml").display(),
            target_list.join(", ")
        );
        fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
            let addr = format!("127.0.0.1:{port}");
            let log = fs::File::create(dir.join("prometheus.log")).expect("create prometheus.log");
            let child = Command::new(&program)
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
            let mut p = Prometheus { child, dir: dir.clone(), addr };
            let ready = poll_until(Duration::from_secs(30), || {
                if p.exited() {
                    return true;
                }
                http_get(&p.addr, "/-/ready").is_ok_and(|r| r.status == 200)
            });
            if ready && !p.exited() {
                return Some(p);
            }
            last_log = p.log();
            if !last_log.contains("address already in use") {
                panic!("prometheus did not become ready (ready={ready}); its log:\n{last_log}");
            }
            // Another process took the port: stop this one (keeping the
            // directory, which the next attempt reuses) and try another.
            p.abandon();
        }
        panic!("prometheus found no free port in 5 tries; its log:\n{last_log}");
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills the process; dropping it then leaves the directory alone.
    fn abandon(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir = PathBuf::new();
    }

    /// `host:port` of its HTTP API.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its log (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`: the `data` member of a `success` answer.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let r = http_get(&self.addr, &format!("/api/v1/{path}")).map_err(|e| format!("GET {path}: {e}"))?;
        let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("GET {path}: {e}: {}", r.body))?;
        if r.status != 200 || v["status"] != "success" {
            return Err(format!("GET {path}: HTTP {}: {}", r.status, r.body));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: its result vector (`[{metric: {...}, value: [t, "v"]}]`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", url_encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The active alerts (pending and firing) of `/api/v1/alerts`.
    pub fn alerts(&self) -> Result<Vec<Value>, String> {
        Ok(self.api("alerts")?["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// The scrape targets and their health (`/api/v1/targets`).
    pub fn targets(&self) -> Result<Vec<Value>, String> {
        Ok(self.api("targets")?["activeTargets"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "prometheus kept in {}; last lines of its log:\n{}",
                self.dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
