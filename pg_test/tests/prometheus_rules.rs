//! The shipped Prometheus alert rules (issue 18), without a cluster:
//! `promtool check rules` accepts monitoring/logical_ext.rules.yml,
//! `promtool test rules` passes the unit tests of monitoring/tests/, each
//! alert's unit tests notice when the alert stops firing, and every alert
//! carries a severity, a summary, a description and a runbook link to an
//! existing section of docs/MONITORING.md.
//!
//! promtool comes from Debian's `prometheus` package (scripts/setup.sh):
//! missing, the promtool tests fail, unless LOGICAL_EXT_SKIP_PROMETHEUS=1.

use logical_ext_pg_test::prometheus::{AlertBlock, alert_blocks, repo_root, require_program, rules_path};
use logical_ext_pg_test::run_with_timeout;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The alerts the contract between the in-server figures and the operator
/// assets names (the two optional ones included: both are shipped).
const CONTRACT_ALERTS: &[&str] = &[
    "LogicalExtSlotInactive",
    "LogicalExtSlotLagHigh",
    "LogicalExtWalExhaustionForecast",
    "LogicalExtSlotLostOrUnreserved",
    "LogicalExtSlotXminAgeHigh",
    "LogicalExtSubscriptionError",
    "LogicalExtConflictsRising",
    "LogicalExtApplyLagHigh",
    "LogicalExtScrapeSectionFailed",
    "LogicalExtMetricsDown",
];

fn rules_text() -> String {
    fs::read_to_string(rules_path()).unwrap_or_else(|e| panic!("read {}: {e}", rules_path().display()))
}

fn tests_dir() -> PathBuf {
    repo_root().join("monitoring/tests")
}

/// The unit-test files (monitoring/tests/*.yml), sorted.
fn unit_test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no unit tests in {}", dir.display());
    files
}

fn promtool(promtool: &Path, args: &[&str], files: &[PathBuf], cwd: &Path) -> Output {
    let mut cmd = Command::new(promtool);
    cmd.args(args).args(files).current_dir(cwd);
    run_with_timeout(&mut cmd, Duration::from_secs(60), "promtool")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn promtool_accepts_the_shipped_rules() {
    let Some(pt) = require_program("promtool") else { return };
    let out = promtool(&pt, &["check", "rules"], &[rules_path()], &repo_root());
    assert!(out.status.success(), "promtool check rules failed: {}", describe(&out));
    // promtool counts the rules; the text reader of the other tests must see as many.
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let count: usize = text
        .split("SUCCESS:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in promtool's output: {text}"));
    assert_eq!(count, alert_blocks(&rules_text()).len(), "promtool's rule count vs the alert blocks read");
}

#[test]
fn promtool_unit_tests_of_every_alert_pass() {
    let Some(pt) = require_program("promtool") else { return };
    let dir = tests_dir();
    let out = promtool(&pt, &["test", "rules"], &unit_test_files(&dir), &dir);
    assert!(out.status.success(), "promtool test rules failed: {}", describe(&out));
}

/// Each rule silenced in turn (its expression replaced by one that never
/// holds) makes the unit tests fail: every rule (also each severity of an
/// alert with two) has a firing case that is really checked.
#[test]
fn unit_tests_fail_when_any_alert_stops_firing() {
    let Some(pt) = require_program("promtool") else { return };
    let rules = rules_text();
    let blocks = alert_blocks(&rules);
    let work = std::env::temp_dir().join(format!("logical_ext_rules_mutants_{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("tests")).expect("create mutant dir");
    let mut files = Vec::new();
    for f in unit_test_files(&tests_dir()) {
        let copy = work.join("tests").join(f.file_name().expect("file name"));
        fs::copy(&f, &copy).expect("copy unit test");
        files.push(copy);
    }
    for (k, block) in blocks.iter().enumerate() {
        let name = &block.name;
        let mut silenced = String::new();
        let mut in_alert = false;
        let mut seen_blocks = 0;
        // Inside a replaced `expr: |`: the indentation of its `expr:` line.
        let mut skipping: Option<usize> = None;
        for line in rules.lines() {
            let indent = line.len() - line.trim_start().len();
            if let Some(i) = skipping {
                if indent > i || line.trim().is_empty() {
                    continue;
                }
                skipping = None;
            }
            if line.trim_start().starts_with("- alert:") {
                in_alert = seen_blocks == k;
                seen_blocks += 1;
            }
            if in_alert && line.trim_start().starts_with("expr:") {
                silenced.push_str(&format!("{}expr: vector(1) == 0\n", &line[..indent]));
                let value = line.trim_start()["expr:".len()..].trim();
                if value == "|" || value == ">" {
                    skipping = Some(indent);
                }
            } else {
                silenced.push_str(line);
                silenced.push('\n');
            }
        }
        assert_ne!(silenced, rules, "rule {k} ({name}): no expr line replaced");
        fs::write(work.join("logical_ext.rules.yml"), &silenced).expect("write mutant rules");
        let out = promtool(&pt, &["test", "rules"], &files, &work.join("tests"));
        assert!(!out.status.success(), "unit tests still pass with rule {k} ({name}) silenced: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(&format!("alertname: {name},")), "promtool does not name {name}: {}", describe(&out));
    }
    let _ = fs::remove_dir_all(&work);
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped
/// (but `-` and `_`), spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn monitoring_md_anchors() -> BTreeSet<String> {
    let path = repo_root().join("docs/MONITORING.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// The unit-test cases of one alert name: the text of each `alertname:`
/// entry up to the next one.
fn cases_of(tests: &str, alert: &str) -> Vec<String> {
    let mut cases = Vec::new();
    let mut current: Option<String> = None;
    for line in tests.lines() {
        let t = line.trim_start().trim_start_matches("- ");
        if let Some(name) = t.strip_prefix("alertname:") {
            if let Some(c) = current.take() {
                cases.push(c);
            }
            current = (name.trim() == alert).then(String::new);
            continue;
        }
        if t.starts_with("eval_time:") || t.starts_with("interval:") || t.starts_with("input_series:") {
            if let Some(c) = current.take() {
                cases.push(c);
            }
            continue;
        }
        if let Some(c) = current.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    cases.extend(current);
    cases
}

#[test]
fn every_alert_has_severity_summary_description_runbook_and_unit_tests() {
    let rules = rules_text();
    let blocks: Vec<AlertBlock> = alert_blocks(&rules);
    let names: BTreeSet<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    for a in CONTRACT_ALERTS {
        assert!(names.contains(a), "the rules file has no alert {a}");
    }
    let anchors = monitoring_md_anchors();
    let mut tests = String::new();
    for f in unit_test_files(&tests_dir()) {
        tests.push_str(&fs::read_to_string(&f).expect("read unit test"));
    }
    for b in &blocks {
        let severity = b.field("severity").unwrap_or_else(|| panic!("{} has no severity label", b.name));
        assert!(["warning", "critical"].contains(&severity.as_str()), "{}: severity {severity:?}", b.name);
        for key in ["summary", "description"] {
            let v = b.field(key).unwrap_or_default();
            assert!(v.len() > 20, "{}: {key} missing or too short: {v:?}", b.name);
        }
        let runbook = b.field("runbook_url").unwrap_or_else(|| panic!("{} has no runbook_url", b.name));
        let anchor = runbook
            .strip_prefix("docs/MONITORING.md#")
            .unwrap_or_else(|| panic!("{}: runbook_url {runbook:?} is not docs/MONITORING.md#...", b.name));
        assert!(anchors.contains(anchor), "{}: docs/MONITORING.md has no section #{anchor}", b.name);
        assert_eq!(anchor, b.name.to_lowercase(), "{}: the runbook section is named after the alert", b.name);
        let cases = cases_of(&tests, &b.name);
        assert!(cases.iter().any(|c| c.contains("exp_alerts: []")), "{}: no unit test where it does not fire", b.name);
        assert!(
            cases.iter().any(|c| c.contains("- exp_labels:") && c.contains(&format!("severity: {severity}"))),
            "{}: no unit test where it fires with severity {severity}",
            b.name
        );
    }
}
