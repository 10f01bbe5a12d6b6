//! `logical_ext.metrics()`: the figures of `slot_health()`,
//! `replication_status()` and the sampler in the Prometheus text exposition
//! format (version 0.0.4). Pure: built from the reports, rendered to text.
//!
//! The scrape is gathered in [`Section`]s; one that fails (see
//! `functions::metrics`) is left out, `logical_ext_scrape_errors` says which,
//! and a comment line says why, so the rest of the scrape still arrives.

use super::health::{Status, WalStatus};
use super::report::{SamplerReport, ServerReport, SlotReport, SubscriptionReport, WalsenderReport};
use crate::apply::ConflictType;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_SECS: f64 = 946_684_800.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    pub(crate) samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family { name, help, kind, samples: Vec::new() }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }
}

/// Label value escaping: backslash, double quote and newline.
pub(crate) fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escaping: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it (`NaN`, `+Inf`, `-Inf`, or a
/// decimal number without exponent).
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

pub(crate) fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (labels, value) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(*value));
        }
    }
    out
}

fn slot_labels(s: &SlotReport) -> Vec<(&'static str, String)> {
    vec![
        ("slot_name", s.slot_name.clone()),
        ("slot_type", s.slot_type.clone()),
        ("database", s.database.clone().unwrap_or_default()),
        ("plugin", s.plugin.clone().unwrap_or_default()),
    ]
}

fn with(mut labels: Vec<(&'static str, String)>, k: &'static str, v: &str) -> Vec<(&'static str, String)> {
    labels.push((k, v.to_string()));
    labels
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The parts of a scrape, gathered (and failing) independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Server,
    Slots,
    Walsenders,
    Subscriptions,
    Sampler,
}

impl Section {
    pub(crate) const ALL: [Section; 5] =
        [Section::Server, Section::Slots, Section::Walsenders, Section::Subscriptions, Section::Sampler];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Section::Server => "server",
            Section::Slots => "slots",
            Section::Walsenders => "walsenders",
            Section::Subscriptions => "subscriptions",
            Section::Sampler => "sampler",
        }
    }
}

/// A section that could not be gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SectionError {
    pub(crate) section: Section,
    pub(crate) sqlstate: String,
    pub(crate) message: String,
}

/// The comment lines naming the failed sections (one line each).
pub(crate) fn error_comments(failed: &[SectionError]) -> String {
    let mut out = String::new();
    for e in failed {
        let msg: String = e.message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let _ = writeln!(out, "# logical_ext: section {} left out: SQLSTATE {}: {msg}", e.section.as_str(), e.sqlstate);
    }
    out
}

/// The figures `metrics()` exposes.
pub(crate) struct Inputs<'a> {
    pub(crate) server: &'a ServerReport,
    pub(crate) slots: &'a [SlotReport],
    pub(crate) walsenders: &'a [WalsenderReport],
    pub(crate) subscriptions: &'a [SubscriptionReport],
    pub(crate) sampler: &'a SamplerReport,
    pub(crate) failed: &'a [SectionError],
}

/// All metric families, in a fixed order. Series whose value is NULL in
/// SQL are left out.
pub(crate) fn families(inputs: &Inputs<'_>) -> Vec<Family> {
    let Inputs { server, slots, walsenders, subscriptions, sampler, failed } = *inputs;
    let mut server_families = server_families(server, failed.iter().any(|e| e.section == Section::Server));
    let mut active = Family::new(
        "logical_ext_slot_active",
        Kind::Gauge,
        "Whether the replication slot is in use by a connection (1) or not (0).",
    );
    let mut lag = Family::new(
        "logical_ext_slot_lag_bytes",
        Kind::Gauge,
        "WAL written since the slot's confirmed_flush_lsn (restart_lsn for physical slots), in bytes.",
    );
    let mut retained = Family::new(
        "logical_ext_slot_retained_wal_bytes",
        Kind::Gauge,
        "WAL the slot holds back from removal (current position minus restart_lsn), in bytes.",
    );
    let mut safe = Family::new(
        "logical_ext_slot_safe_wal_size_bytes",
        Kind::Gauge,
        "WAL that can still be written before the slot is lost (pg_replication_slots.safe_wal_size).",
    );
    let mut inactive = Family::new(
        "logical_ext_slot_inactive_seconds",
        Kind::Gauge,
        "Seconds since the sampler saw the slot become inactive.",
    );
    let mut growth = Family::new(
        "logical_ext_slot_wal_growth_bytes_per_second",
        Kind::Gauge,
        "Growth rate of the slot's retained WAL over the last 5 minutes of samples.",
    );
    let mut until = Family::new(
        "logical_ext_slot_seconds_until_exhausted",
        Kind::Gauge,
        "Forecast seconds until the slot's retained WAL reaches the nearer of safe_wal_size and the free space of \
         pg_wal's file system (the basis label says which).",
    );
    let mut status = Family::new(
        "logical_ext_slot_status",
        Kind::Gauge,
        "The slot's status from logical_ext.slot_health(): 1 for the current status, 0 for the others.",
    );
    let mut wal_status = Family::new(
        "logical_ext_slot_wal_status",
        Kind::Gauge,
        "pg_replication_slots.wal_status: 1 for the current value, 0 for the others.",
    );
    let mut temporary = Family::new(
        "logical_ext_slot_temporary",
        Kind::Gauge,
        "Whether the slot is temporary (dropped at the end of its session or on error).",
    );
    let mut xmin_age = Family::new(
        "logical_ext_slot_xmin_age",
        Kind::Gauge,
        "age(xmin) of the slot in transactions: rows VACUUM may not remove (absent when xmin is NULL).",
    );
    let mut catalog_xmin_age = Family::new(
        "logical_ext_slot_catalog_xmin_age",
        Kind::Gauge,
        "age(catalog_xmin) of the slot in transactions: catalog rows VACUUM may not remove (absent when NULL).",
    );
    let mut restart_lsn = Family::new(
        "logical_ext_slot_restart_lsn_bytes",
        Kind::Gauge,
        "The slot's restart_lsn as a byte position in the WAL (pg_lsn - '0/0').",
    );
    let mut confirmed_lsn = Family::new(
        "logical_ext_slot_confirmed_flush_lsn_bytes",
        Kind::Gauge,
        "The logical slot's confirmed_flush_lsn as a byte position in the WAL (pg_lsn - '0/0').",
    );
    let mut spill_bytes = Family::new(
        "logical_ext_slot_spill_bytes_total",
        Kind::Counter,
        "Decoded data spilled to disk for exceeding logical_decoding_work_mem (pg_stat_replication_slots.spill_bytes).",
    );
    let mut spill_txns = Family::new(
        "logical_ext_slot_spilled_transactions_total",
        Kind::Counter,
        "Transactions spilled to disk (pg_stat_replication_slots.spill_txns).",
    );
    let mut stream_bytes = Family::new(
        "logical_ext_slot_stream_bytes_total",
        Kind::Counter,
        "Decoded data of in-progress transactions streamed to the consumer (pg_stat_replication_slots.stream_bytes).",
    );
    let mut stream_txns = Family::new(
        "logical_ext_slot_streamed_transactions_total",
        Kind::Counter,
        "In-progress transactions streamed to the consumer (pg_stat_replication_slots.stream_txns).",
    );
    let mut decoded_bytes = Family::new(
        "logical_ext_slot_decoded_bytes_total",
        Kind::Counter,
        "Decoded data sent to the output plugin (pg_stat_replication_slots.total_bytes).",
    );
    for s in slots {
        let l = slot_labels(s);
        active.add(l.clone(), bool_value(s.active));
        temporary.add(l.clone(), bool_value(s.temporary));
        if let Some(v) = s.xmin_age {
            xmin_age.add(l.clone(), v as f64);
        }
        if let Some(v) = s.catalog_xmin_age {
            catalog_xmin_age.add(l.clone(), v as f64);
        }
        if let Some(v) = s.restart_lsn {
            restart_lsn.add(l.clone(), v.0 as f64);
        }
        if let Some(v) = s.confirmed_flush_lsn {
            confirmed_lsn.add(l.clone(), v.0 as f64);
        }
        if let Some(d) = s.decoding {
            spill_bytes.add(l.clone(), d.spill_bytes as f64);
            spill_txns.add(l.clone(), d.spill_txns as f64);
            stream_bytes.add(l.clone(), d.stream_bytes as f64);
            stream_txns.add(l.clone(), d.stream_txns as f64);
            decoded_bytes.add(l.clone(), d.total_bytes as f64);
        }
        if let Some(v) = s.lag_bytes {
            lag.add(l.clone(), v as f64);
        }
        if let Some(v) = s.retained_wal_bytes {
            retained.add(l.clone(), v as f64);
        }
        if let Some(v) = s.safe_wal_size {
            safe.add(l.clone(), v as f64);
        }
        if let Some(v) = s.inactive_seconds() {
            inactive.add(l.clone(), v);
        }
        if let Some(v) = s.growth {
            growth.add(l.clone(), v);
        }
        if let Some(v) = s.forecast.seconds_until_exhausted {
            until.add(with(l.clone(), "basis", s.forecast.basis.as_str()), v);
        }
        for st in Status::ALL {
            status.add(with(l.clone(), "status", st.as_str()), bool_value(s.status() == st));
        }
        if let Some(ws) = s.wal_status {
            for w in WalStatus::ALL {
                wal_status.add(with(l.clone(), "wal_status", w.as_str()), bool_value(ws == w));
            }
        }
    }

    let mut ws_lag = Family::new(
        "logical_ext_walsender_lag_bytes",
        Kind::Gauge,
        "Bytes between the current WAL position and what the walsender sent or its client wrote, flushed, replayed.",
    );
    let mut ws_lag_s = Family::new(
        "logical_ext_walsender_lag_seconds",
        Kind::Gauge,
        "pg_stat_replication write_lag, flush_lag and replay_lag, in seconds.",
    );
    // Labelled by (application_name, slot_name), not by pid: a pid changes
    // with every reconnection and would churn series. Walsenders sharing
    // both (several slot-less clients of one name) report the largest lag.
    let mut bytes_by: BTreeMap<(String, String, &str), f64> = BTreeMap::new();
    let mut secs_by: BTreeMap<(String, String, &str), f64> = BTreeMap::new();
    for w in walsenders {
        let key = |stage| (w.application_name.clone(), w.slot_name.clone().unwrap_or_default(), stage);
        for (stage, v) in ["sent", "write", "flush", "replay"].into_iter().zip(w.lag_bytes) {
            if let Some(v) = v {
                let e = bytes_by.entry(key(stage)).or_insert(f64::MIN);
                *e = e.max(v as f64);
            }
        }
        for (stage, v) in ["write", "flush", "replay"].into_iter().zip(w.lag_seconds) {
            if let Some(v) = v {
                let e = secs_by.entry(key(stage)).or_insert(f64::MIN);
                *e = e.max(v);
            }
        }
    }
    for (family, by) in [(&mut ws_lag, bytes_by), (&mut ws_lag_s, secs_by)] {
        for ((app, slot, stage), v) in by {
            family.add(vec![("application_name", app), ("slot_name", slot), ("stage", stage.to_string())], v);
        }
    }

    let mut sub_enabled = Family::new(
        "logical_ext_subscription_enabled",
        Kind::Gauge,
        "Whether the logical_ext subscription is enabled.",
    );
    let mut sub_streaming = Family::new(
        "logical_ext_subscription_streaming",
        Kind::Gauge,
        "Whether the subscription's apply worker is streaming (state = streaming).",
    );
    let mut sub_error = Family::new(
        "logical_ext_subscription_error",
        Kind::Gauge,
        "Whether the subscription is failing (state = error; see subscription_status.last_error).",
    );
    let mut sub_lag = Family::new(
        "logical_ext_subscription_lag_bytes",
        Kind::Gauge,
        "WAL the publisher has sent beyond what the subscription applied, in bytes.",
    );
    let mut sub_lag_s =
        Family::new("logical_ext_subscription_lag_seconds", Kind::Gauge, "Apply lag of the subscription, in seconds.");
    let mut sub_txns = Family::new(
        "logical_ext_subscription_applied_transactions_total",
        Kind::Counter,
        "Transactions applied by the subscription's worker since it started.",
    );
    let mut sub_changes = Family::new(
        "logical_ext_subscription_applied_changes_total",
        Kind::Counter,
        "Row changes applied by the subscription's worker since it started.",
    );
    let mut sub_last = Family::new(
        "logical_ext_subscription_last_message_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last message the subscription received from its publisher.",
    );
    let mut sub_conflicts = Family::new(
        "logical_ext_subscription_conflicts_total",
        Kind::Counter,
        "Conflicts the subscription's apply worker detected, by type (subscription_status.conflicts_*).",
    );
    let mut sub_apply_errors = Family::new(
        "logical_ext_subscription_apply_errors_total",
        Kind::Counter,
        "Apply sessions of the subscription that ended in an error (subscription_status.apply_error_count).",
    );
    let mut sub_sync_errors = Family::new(
        "logical_ext_subscription_sync_errors_total",
        Kind::Counter,
        "Table copies of the subscription that failed (subscription_status.sync_error_count).",
    );
    for s in subscriptions {
        let l = vec![("subscription", s.name.clone())];
        for (ty, n) in ConflictType::ALL.into_iter().zip(s.conflicts) {
            sub_conflicts.add(with(l.clone(), "conflict_type", ty.as_str()), n as f64);
        }
        sub_apply_errors.add(l.clone(), s.apply_errors as f64);
        sub_sync_errors.add(l.clone(), s.sync_errors as f64);
        sub_enabled.add(l.clone(), bool_value(s.enabled));
        sub_streaming.add(l.clone(), bool_value(s.state == "streaming"));
        sub_error.add(l.clone(), bool_value(s.state == "error"));
        if let Some(v) = s.lag_bytes {
            sub_lag.add(l.clone(), v);
        }
        if let Some(v) = s.lag_seconds {
            sub_lag_s.add(l.clone(), v);
        }
        sub_txns.add(l.clone(), s.applied_transactions as f64);
        sub_changes.add(l.clone(), s.applied_changes as f64);
        if let Some(v) = s.last_message_unix {
            sub_last.add(l.clone(), v);
        }
    }

    let mut running = Family::new(
        "logical_ext_sampler_running",
        Kind::Gauge,
        "Whether the logical_ext sampler background worker runs (needs shared_preload_libraries).",
    );
    running.add(vec![], bool_value(sampler.running));
    let mut samples =
        Family::new("logical_ext_sampler_samples_total", Kind::Counter, "Sampling rounds since the server started.");
    samples.add(vec![], sampler.samples_taken as f64);
    let mut last = Family::new(
        "logical_ext_sampler_last_sample_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the sampler's latest round.",
    );
    if let Some(at) = sampler.last_sample_at {
        last.add(vec![], at as f64 / 1e6 + PG_EPOCH_UNIX_SECS);
    }
    let mut scrape_errors = Family::new(
        "logical_ext_scrape_errors",
        Kind::Gauge,
        "1 when this section of the scrape failed and was left out (the comment line above says why).",
    );
    for sec in Section::ALL {
        scrape_errors
            .add(vec![("section", sec.as_str().to_string())], bool_value(failed.iter().any(|e| e.section == sec)));
    }

    let mut out = Vec::new();
    out.append(&mut server_families);
    out.extend([
        active,
        temporary,
        lag,
        retained,
        safe,
        restart_lsn,
        confirmed_lsn,
        xmin_age,
        catalog_xmin_age,
        inactive,
        growth,
        until,
        status,
        wal_status,
        spill_bytes,
        spill_txns,
        stream_bytes,
        stream_txns,
        decoded_bytes,
        ws_lag,
        ws_lag_s,
        sub_enabled,
        sub_streaming,
        sub_error,
        sub_lag,
        sub_lag_s,
        sub_txns,
        sub_changes,
        sub_last,
        sub_conflicts,
        sub_apply_errors,
        sub_sync_errors,
        running,
        samples,
        last,
        scrape_errors,
    ]);
    out
}

/// The server-wide families; empty of samples when the section failed.
fn server_families(s: &ServerReport, failed: bool) -> Vec<Family> {
    let mut wal_lsn = Family::new(
        "logical_ext_wal_lsn_bytes",
        Kind::Gauge,
        "Current WAL position as a byte position (pg_current_wal_lsn() - '0/0'; on a standby the last replayed).",
    );
    let mut in_recovery =
        Family::new("logical_ext_in_recovery", Kind::Gauge, "1 when the server is a standby (in recovery), else 0.");
    let mut receive = Family::new(
        "logical_ext_standby_receive_lsn_bytes",
        Kind::Gauge,
        "On a standby: WAL received and flushed by its walreceiver (pg_last_wal_receive_lsn() - '0/0').",
    );
    let mut replay = Family::new(
        "logical_ext_standby_replay_lsn_bytes",
        Kind::Gauge,
        "On a standby: WAL replayed (pg_last_wal_replay_lsn() - '0/0').",
    );
    let mut dir = Family::new(
        "logical_ext_wal_directory_bytes",
        Kind::Gauge,
        "Size of the files in pg_wal (as pg_ls_waldir() sums them).",
    );
    let mut free = Family::new(
        "logical_ext_wal_filesystem_free_bytes",
        Kind::Gauge,
        "Free space of the file system holding pg_wal, for unprivileged users (statvfs f_bavail).",
    );
    let mut size =
        Family::new("logical_ext_wal_filesystem_size_bytes", Kind::Gauge, "Size of the file system holding pg_wal.");
    if !failed {
        wal_lsn.add(vec![], s.wal_lsn as f64);
        in_recovery.add(vec![], bool_value(s.in_recovery));
        if s.in_recovery {
            if let Some(v) = s.receive_lsn {
                receive.add(vec![], v as f64);
            }
            if let Some(v) = s.replay_lsn {
                replay.add(vec![], v as f64);
            }
        }
        for (f, v) in [
            (&mut dir, s.wal_directory_bytes),
            (&mut free, s.wal_filesystem_free_bytes),
            (&mut size, s.wal_filesystem_size_bytes),
        ] {
            if let Some(v) = v {
                f.add(vec![], v as f64);
            }
        }
    }
    vec![wal_lsn, in_recovery, receive, replay, dir, free, size]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values_and_help() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
    }

    #[test]
    fn values_use_the_format_spelling() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn renders_help_type_and_samples() {
        let mut f = Family::new("m_bytes", Kind::Gauge, "Some\nhelp.");
        f.add(vec![("a", "x\"y".to_string()), ("b", String::new())], 3.5);
        f.add(vec![], 2.0);
        let mut c = Family::new("m_total", Kind::Counter, "Count.");
        c.add(vec![], 7.0);
        assert_eq!(
            render(&[f, c]),
            "# HELP m_bytes Some\\nhelp.\n# TYPE m_bytes gauge\nm_bytes{a=\"x\\\"y\",b=\"\"} 3.5\nm_bytes 2\n\
             # HELP m_total Count.\n# TYPE m_total counter\nm_total 7\n"
        );
    }

    #[test]
    fn sampler_families_without_preload() {
        let fams = families(&Inputs {
            server: &ServerReport::default(),
            slots: &[],
            walsenders: &[],
            subscriptions: &[],
            sampler: &SamplerReport::default(),
            failed: &[],
        });
        let text = render(&fams);
        assert!(text.contains("\nlogical_ext_sampler_running 0\n"), "{text}");
        assert!(text.contains("\nlogical_ext_sampler_samples_total 0\n"), "{text}");
        assert!(!text.contains("\nlogical_ext_sampler_last_sample_timestamp_seconds "), "{text}");
        // Every family is announced once, with a valid name.
        for f in &fams {
            assert_eq!(text.matches(&format!("# TYPE {} ", f.name)).count(), 1);
            assert!(f.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
            assert!(!f.help.is_empty() && !f.help.contains('\n'), "{}", f.name);
        }
    }

    #[test]
    fn every_family_is_exposed_and_documented() {
        let fams = families(&Inputs {
            server: &ServerReport::default(),
            slots: &[],
            walsenders: &[],
            subscriptions: &[],
            sampler: &SamplerReport::default(),
            failed: &[],
        });
        let names: Vec<&str> = fams.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "logical_ext_wal_lsn_bytes",
                "logical_ext_in_recovery",
                "logical_ext_standby_receive_lsn_bytes",
                "logical_ext_standby_replay_lsn_bytes",
                "logical_ext_wal_directory_bytes",
                "logical_ext_wal_filesystem_free_bytes",
                "logical_ext_wal_filesystem_size_bytes",
                "logical_ext_slot_active",
                "logical_ext_slot_temporary",
                "logical_ext_slot_lag_bytes",
                "logical_ext_slot_retained_wal_bytes",
                "logical_ext_slot_safe_wal_size_bytes",
                "logical_ext_slot_restart_lsn_bytes",
                "logical_ext_slot_confirmed_flush_lsn_bytes",
                "logical_ext_slot_xmin_age",
                "logical_ext_slot_catalog_xmin_age",
                "logical_ext_slot_inactive_seconds",
                "logical_ext_slot_wal_growth_bytes_per_second",
                "logical_ext_slot_seconds_until_exhausted",
                "logical_ext_slot_status",
                "logical_ext_slot_wal_status",
                "logical_ext_slot_spill_bytes_total",
                "logical_ext_slot_spilled_transactions_total",
                "logical_ext_slot_stream_bytes_total",
                "logical_ext_slot_streamed_transactions_total",
                "logical_ext_slot_decoded_bytes_total",
                "logical_ext_walsender_lag_bytes",
                "logical_ext_walsender_lag_seconds",
                "logical_ext_subscription_enabled",
                "logical_ext_subscription_streaming",
                "logical_ext_subscription_error",
                "logical_ext_subscription_lag_bytes",
                "logical_ext_subscription_lag_seconds",
                "logical_ext_subscription_applied_transactions_total",
                "logical_ext_subscription_applied_changes_total",
                "logical_ext_subscription_last_message_timestamp_seconds",
                "logical_ext_subscription_conflicts_total",
                "logical_ext_subscription_apply_errors_total",
                "logical_ext_subscription_sync_errors_total",
                "logical_ext_sampler_running",
                "logical_ext_sampler_samples_total",
                "logical_ext_sampler_last_sample_timestamp_seconds",
                "logical_ext_scrape_errors",
            ]
        );
        let doc = include_str!("../../docs/MONITORING.md");
        for n in names {
            assert!(doc.contains(&format!("`{n}`")), "{n} is not documented in docs/MONITORING.md");
        }
    }

    #[test]
    fn server_series_on_a_primary_a_standby_and_a_failed_section() {
        let primary = ServerReport {
            wal_lsn: 0x1_0000_0000,
            in_recovery: false,
            receive_lsn: None,
            replay_lsn: Some(5),
            wal_directory_bytes: Some(16 << 20),
            wal_filesystem_free_bytes: Some(1000),
            wal_filesystem_size_bytes: None,
        };
        let render_server = |s: &ServerReport, failed: bool| render(&server_families(s, failed));
        let text = render_server(&primary, false);
        for line in [
            "\nlogical_ext_wal_lsn_bytes 4294967296\n",
            "\nlogical_ext_in_recovery 0\n",
            "\nlogical_ext_wal_directory_bytes 16777216\n",
            "\nlogical_ext_wal_filesystem_free_bytes 1000\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Standby figures only on a standby; unknown sizes left out.
        assert!(!text.contains("\nlogical_ext_standby_replay_lsn_bytes "), "{text}");
        assert!(!text.contains("\nlogical_ext_wal_filesystem_size_bytes "), "{text}");
        let standby = ServerReport { in_recovery: true, receive_lsn: Some(9), ..primary.clone() };
        let text = render_server(&standby, false);
        assert!(text.contains("\nlogical_ext_in_recovery 1\n"), "{text}");
        assert!(text.contains("\nlogical_ext_standby_receive_lsn_bytes 9\n"), "{text}");
        assert!(text.contains("\nlogical_ext_standby_replay_lsn_bytes 5\n"), "{text}");
        // A failed section: the families are announced, without samples
        // (not zeros that would read as "in_recovery 0").
        let text = render_server(&standby, true);
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
    }

    fn slot(name: &str) -> SlotReport {
        use super::super::health::{Assessment, Forecast, ForecastBasis, Inactivity};
        use crate::ffi::lsn::Lsn;
        SlotReport {
            slot_name: name.to_string(),
            plugin: Some("test_decoding".to_string()),
            slot_type: "logical".to_string(),
            database: Some("postgres".to_string()),
            active: false,
            active_pid: None,
            restart_lsn: Some(Lsn(100)),
            confirmed_flush_lsn: Some(Lsn(200)),
            lag_bytes: Some(50),
            retained_wal_bytes: Some(150),
            wal_status: Some(WalStatus::Reserved),
            safe_wal_size: None,
            temporary: true,
            xmin_age: None,
            catalog_xmin_age: Some(1234),
            decoding: None,
            inactivity: Inactivity::Active,
            growth: Some(10.0),
            forecast: Forecast {
                basis: ForecastBasis::Disk,
                remaining_bytes: Some(1000),
                seconds_until_exhausted: Some(100.0),
            },
            assessment: Assessment { status: Status::Warning, reason: String::new() },
            wal_lsn: Lsn(250),
            now: 0,
        }
    }

    #[test]
    fn slot_series_with_the_new_figures() {
        let mut with_stats = slot("b");
        with_stats.decoding = Some(super::super::report::DecodingStats {
            spill_txns: 2,
            spill_bytes: 4096,
            stream_txns: 0,
            stream_bytes: 0,
            total_bytes: 9999,
        });
        with_stats.xmin_age = Some(7);
        let text = render(&families(&Inputs {
            server: &ServerReport::default(),
            slots: &[slot("a"), with_stats],
            walsenders: &[],
            subscriptions: &[],
            sampler: &SamplerReport::default(),
            failed: &[],
        }));
        let l = |name: &str| {
            format!("{{slot_name=\"{name}\",slot_type=\"logical\",database=\"postgres\",plugin=\"test_decoding\"")
        };
        for line in [
            format!("logical_ext_slot_temporary{}}} 1\n", l("a")),
            format!("logical_ext_slot_restart_lsn_bytes{}}} 100\n", l("a")),
            format!("logical_ext_slot_confirmed_flush_lsn_bytes{}}} 200\n", l("a")),
            format!("logical_ext_slot_catalog_xmin_age{}}} 1234\n", l("a")),
            format!("logical_ext_slot_xmin_age{}}} 7\n", l("b")),
            format!("logical_ext_slot_seconds_until_exhausted{},basis=\"disk\"}} 100\n", l("a")),
            format!("logical_ext_slot_spill_bytes_total{}}} 4096\n", l("b")),
            format!("logical_ext_slot_spilled_transactions_total{}}} 2\n", l("b")),
            format!("logical_ext_slot_stream_bytes_total{}}} 0\n", l("b")),
            format!("logical_ext_slot_decoded_bytes_total{}}} 9999\n", l("b")),
        ] {
            assert!(text.contains(&line), "{line}in\n{text}");
        }
        // NULL xmin and no decoding statistics: no series.
        assert!(!text.contains(&format!("logical_ext_slot_xmin_age{}", l("a"))), "{text}");
        assert!(!text.contains(&format!("logical_ext_slot_spill_bytes_total{}", l("a"))), "{text}");
        // Every series of a family is unique.
        let mut series: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).map(|l| l.rsplit_once(' ').unwrap().0).collect();
        let n = series.len();
        series.sort();
        series.dedup();
        assert_eq!(series.len(), n, "duplicate series in\n{text}");
    }

    #[test]
    fn a_failed_section_is_named() {
        let failed = [SectionError {
            section: Section::Subscriptions,
            sqlstate: "22003".to_string(),
            message: "pg_lsn out of range\nsecond line".to_string(),
        }];
        let fams = families(&Inputs {
            server: &ServerReport::default(),
            slots: &[],
            walsenders: &[],
            subscriptions: &[],
            sampler: &SamplerReport::default(),
            failed: &failed,
        });
        let text = format!("{}{}", error_comments(&failed), render(&fams));
        assert!(text.starts_with(
            "# logical_ext: section subscriptions left out: SQLSTATE 22003: pg_lsn out of range second line\n"
        ));
        assert!(text.contains("\nlogical_ext_scrape_errors{section=\"subscriptions\"} 1\n"), "{text}");
        assert!(text.contains("\nlogical_ext_scrape_errors{section=\"slots\"} 0\n"), "{text}");
    }

    #[test]
    fn subscription_series() {
        let s = SubscriptionReport {
            name: "sub1".to_string(),
            enabled: true,
            state: "streaming".to_string(),
            lag_bytes: Some(128.0),
            lag_seconds: None,
            applied_transactions: 3,
            applied_changes: 30,
            last_message_unix: Some(1.5e9),
            conflicts: [0, 0, 4, 0, 0, 0],
            apply_errors: 2,
            sync_errors: 1,
        };
        let text = render(&families(&Inputs {
            server: &ServerReport::default(),
            slots: &[],
            walsenders: &[],
            subscriptions: &[s],
            sampler: &SamplerReport::default(),
            failed: &[],
        }));
        for line in [
            "logical_ext_subscription_enabled{subscription=\"sub1\"} 1\n",
            "logical_ext_subscription_streaming{subscription=\"sub1\"} 1\n",
            "logical_ext_subscription_error{subscription=\"sub1\"} 0\n",
            "logical_ext_subscription_lag_bytes{subscription=\"sub1\"} 128\n",
            "logical_ext_subscription_applied_changes_total{subscription=\"sub1\"} 30\n",
            "logical_ext_subscription_last_message_timestamp_seconds{subscription=\"sub1\"} 1500000000\n",
            "logical_ext_subscription_conflicts_total{subscription=\"sub1\",conflict_type=\"update_missing\"} 4\n",
            "logical_ext_subscription_conflicts_total{subscription=\"sub1\",conflict_type=\"insert_exists\"} 0\n",
            "logical_ext_subscription_apply_errors_total{subscription=\"sub1\"} 2\n",
            "logical_ext_subscription_sync_errors_total{subscription=\"sub1\"} 1\n",
        ] {
            assert!(text.contains(line), "{line}in\n{text}");
        }
        assert!(!text.contains("logical_ext_subscription_lag_seconds{"), "NULL is left out");
    }

    #[test]
    fn walsender_series_per_stage() {
        let w = WalsenderReport {
            application_name: "sub\"1".to_string(),
            slot_name: Some("s".to_string()),
            lag_bytes: [Some(0), Some(10), None, Some(30)],
            lag_seconds: [Some(0.5), None, None],
        };
        // A second walsender of the same name and slot: one series, the larger lag.
        let w2 = WalsenderReport { lag_bytes: [None, Some(20), None, None], lag_seconds: [None; 3], ..w.clone() };
        let text = render(&families(&Inputs {
            server: &ServerReport::default(),
            slots: &[],
            walsenders: &[w, w2],
            subscriptions: &[],
            sampler: &SamplerReport::default(),
            failed: &[],
        }));
        assert!(text.contains(
            "logical_ext_walsender_lag_bytes{application_name=\"sub\\\"1\",slot_name=\"s\",stage=\"write\"} 20\n"
        ));
        assert_eq!(text.matches("stage=\"write\"} ").count(), 2, "one series per family and stage:\n{text}");
        assert!(!text.contains("pid="), "no churning pid label:\n{text}");
        assert!(!text.contains("stage=\"flush\"} "), "NULL lag is left out:\n{text}");
        assert!(text.contains(
            "logical_ext_walsender_lag_seconds{application_name=\"sub\\\"1\",slot_name=\"s\",stage=\"write\"} 0.5\n"
        ));
    }
}
