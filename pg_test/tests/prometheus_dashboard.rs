//! The shipped Grafana dashboard (monitoring/grafana/logical_ext.json, issue
//! 18), without Grafana: its structure (valid JSON, unique panel ids, panels
//! inside the 24-column grid and not overlapping, every query on the
//! `datasource` variable, only defined variables used, the figures operators
//! need all shown), and — on a real cluster — that every metric name its
//! queries and the alert rules use is one logical_ext serves.

use logical_ext_pg_test::prometheus::{alert_blocks, exposition_names, metric_names_in, repo_root, rules_path};
use logical_ext_pg_test::serde_json::{self, Value};
use logical_ext_pg_test::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

fn dashboard() -> Value {
    let path = repo_root().join("monitoring/grafana/logical_ext.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels array") {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// Every PromQL expression: panel targets and query variables.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((format!("panel {}", p["title"]), t["expr"].as_str().unwrap_or_default().to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// The figures issue 18 asks the dashboard to show.
const REQUIRED: &[&str] = &[
    "logical_ext_slot_lag_bytes",
    "logical_ext_slot_retained_wal_bytes",
    "logical_ext_slot_seconds_until_exhausted",
    "logical_ext_slot_inactive_seconds",
    "logical_ext_slot_xmin_age",
    "logical_ext_slot_catalog_xmin_age",
    "logical_ext_subscription_lag_seconds",
    "logical_ext_subscription_error",
    "logical_ext_subscription_conflicts_total",
    "logical_ext_subscription_applied_transactions_total",
    "logical_ext_subscription_applied_changes_total",
];

#[test]
fn dashboard_structure_is_sound() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "no title");
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()), "no uid");
    assert!(d["schemaVersion"].as_u64().is_some(), "no schemaVersion");

    // The data source is a variable of type datasource (Prometheus).
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var_names: BTreeSet<String> =
        vars.iter().map(|v| v["name"].as_str().expect("variable name").to_string()).collect();
    assert_eq!(var_names.len(), vars.len(), "duplicate variable names");
    let ds = vars.iter().find(|v| v["type"] == "datasource").expect("a datasource variable");
    assert_eq!(ds["name"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = |v: &Value, what: &str| {
        assert_eq!(v["uid"], "${datasource}", "{what}: datasource {v} is not the variable");
        assert_eq!(v["type"], "prometheus", "{what}: datasource {v}");
    };

    let panels = all_panels(&d);
    assert!(panels.len() >= 10, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut rects: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(!title.is_empty(), "panel without title: {p}");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("panel {title} has no id"));
        assert!(ids.insert(id), "panel id {id} is used twice ({title})");
        let g = &p["gridPos"];
        let (x, y, w, h) = (g["x"].as_i64(), g["y"].as_i64(), g["w"].as_i64(), g["h"].as_i64());
        let (Some(x), Some(y), Some(w), Some(h)) = (x, y, w, h) else { panic!("panel {title}: bad gridPos {g}") };
        assert!(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24, "panel {title}: gridPos {g} outside the grid");
        for (other, ox, oy, ow, oh) in &rects {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "panels {title} and {other} overlap");
        }
        rects.push((title.clone(), x, y, w, h));
        if p["type"] == "row" {
            continue;
        }
        ds_ref(&p["datasource"], &title);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            ds_ref(&t["datasource"], &title);
            assert!(refs.insert(t["refId"].as_str().expect("refId").to_string()), "panel {title}: refId twice");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!metric_names_in(expr).is_empty(), "panel {title}: query {expr:?} selects no metric");
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        ds_ref(&v["datasource"], &format!("variable {}", v["name"]));
    }

    // Only defined variables (and Grafana's own) are used.
    let builtin = ["__rate_interval", "__interval", "__range"];
    let mut used = BTreeSet::new();
    for (what, expr) in expressions(&d) {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find('$') {
            let name: String = rest[i + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(var_names.contains(&name) || builtin.contains(&name.as_str()), "{what}: unknown variable ${name}");
            used.insert(name);
            rest = &rest[i + 1..];
        }
    }
    for v in ["instance", "slot", "subscription"] {
        assert!(used.contains(v), "variable ${v} is never used");
    }

    // The figures operators rely on are all shown.
    let names: BTreeSet<String> = expressions(&d).iter().flat_map(|(_, e)| metric_names_in(e)).collect();
    for r in REQUIRED {
        assert!(names.contains(*r), "the dashboard does not show {r}");
    }
}

/// The metric families `SELECT logical_ext.metrics()` declares on a cluster
/// with the sampler, a slot and a subscription (every family is declared
/// even without a series).
fn served_names() -> BTreeSet<String> {
    let cluster = Cluster::start(
        "prom_dashboard",
        &["shared_preload_libraries = 'logical_ext'", "logical_ext.monitor_interval = '200ms'"],
    );
    let mut c = cluster.client();
    exec(&mut c, "CREATE EXTENSION logical_ext");
    exec(&mut c, "SELECT pg_create_logical_replication_slot('dash_slot', 'test_decoding')");
    let text = query_string(&mut c, "SELECT logical_ext.metrics()");
    exposition_names(&text)
}

#[test]
fn dashboard_and_rules_use_only_metric_names_logical_ext_serves() {
    let mut served = served_names();
    // Prometheus's own series.
    served.insert("up".to_string());
    served.insert("ALERTS".to_string());
    let mut unknown: BTreeMap<String, String> = BTreeMap::new();
    for (what, expr) in expressions(&dashboard()) {
        for n in metric_names_in(&expr) {
            if !served.contains(&n) {
                unknown.insert(n, what.clone());
            }
        }
    }
    let rules = fs::read_to_string(rules_path()).expect("read rules");
    for b in alert_blocks(&rules) {
        let expr = b.expr();
        assert!(!expr.is_empty(), "alert {} has no expr", b.name);
        for n in metric_names_in(&expr) {
            if !served.contains(&n) {
                unknown.insert(n, format!("alert {}", b.name));
            }
        }
    }
    assert!(unknown.is_empty(), "metric names not served by logical_ext: {unknown:#?}\nserved: {served:#?}");
}
