//! A subscription's settings as data: the `origin` mode, the `options` jsonb
//! (closed set of keys, unknown ones refused), and the retry backoff they
//! imply. Pure and unit-tested; SQL functions report the errors (with the
//! SQLSTATE and HINT an [`OptionError`] carries).

use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Apply every change.
    Any,
    /// Ask the publisher to drop changes that arrived there through a
    /// replication origin (bidirectional setups: no loops).
    None,
}

impl Origin {
    pub(crate) fn parse(s: &str) -> Result<Origin, String> {
        match s.to_ascii_lowercase().as_str() {
            "any" => Ok(Origin::Any),
            "none" => Ok(Origin::None),
            _ => Err(format!("invalid origin \"{s}\": expected \"any\" or \"none\"")),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Any => "any",
            Origin::None => "none",
        }
    }
}

/// The apply worker's `synchronous_commit` (native subscriptions' option of
/// the same name and values). `Off`, the default as natively, commits
/// asynchronously: the worker reports a remote transaction as flushed only
/// once the WAL writer flushed its local commit, so a publisher waiting for
/// this subscription as a synchronous standby (`synchronous_commit = on`
/// there) waits up to `wal_writer_delay` more per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SynchronousCommit {
    #[default]
    Off,
    Local,
    RemoteWrite,
    RemoteApply,
    On,
}

impl SynchronousCommit {
    pub(crate) const VALUES: &'static [&'static str] = &["off", "local", "remote_write", "remote_apply", "on"];

    pub(crate) fn parse(s: &str) -> Option<SynchronousCommit> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Some(SynchronousCommit::Off),
            "local" => Some(SynchronousCommit::Local),
            "remote_write" => Some(SynchronousCommit::RemoteWrite),
            "remote_apply" => Some(SynchronousCommit::RemoteApply),
            "on" => Some(SynchronousCommit::On),
            _ => None,
        }
    }

    /// The value of the `synchronous_commit` setting.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::RemoteApply => "remote_apply",
            SynchronousCommit::On => "on",
        }
    }
}

/// Why an `options` object was refused: the message and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OptionError {
    pub(crate) message: String,
    pub(crate) hint: String,
}

impl From<String> for OptionError {
    fn from(message: String) -> OptionError {
        OptionError { message, hint: String::new() }
    }
}

impl From<&str> for OptionError {
    fn from(message: &str) -> OptionError {
        OptionError::from(message.to_string())
    }
}

/// Worker options stored in `logical_ext.subscription.options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerOptions {
    /// First delay before retrying after an error.
    pub(crate) retry_min_delay: Duration,
    /// Cap of the exponential backoff.
    pub(crate) retry_max_delay: Duration,
    /// Disable the subscription at the first error instead of retrying.
    pub(crate) disable_on_error: bool,
    /// Apply row changes as the subscription owner rather than as each
    /// table's owner (PostgreSQL 16's `run_as_owner`; off by default: a
    /// table owner's triggers and defaults never run with more privileges
    /// than the table owner has).
    pub(crate) run_as_owner: bool,
    /// Replay every DDL event as this role instead of the role that ran it on
    /// the publisher (opt-in; validated when replay needs it).
    pub(crate) ddl_replay_role: Option<String>,
    /// `synchronous_commit` of the apply worker's local commits.
    pub(crate) synchronous_commit: SynchronousCommit,
    /// Ask the publisher to stream large transactions while they are in
    /// progress (native `streaming = on`); the worker spools them to a
    /// temporary file and applies them at their commit (`spool.rs`).
    pub(crate) streaming: bool,
    /// With `streaming`: apply a streamed transaction while it arrives when
    /// nothing else interleaves with it (`apply/worker/eager.rs`); false
    /// spools it and applies it at its commit only. On by default.
    pub(crate) streaming_eager: bool,
    /// Native `two_phase`: a transaction prepared on the publisher is
    /// prepared here too, and committed or rolled back when the publisher
    /// does (`apply/worker/prepared.rs`). Set at `create_subscription` only.
    pub(crate) two_phase: bool,
    /// Apply consecutive small remote transactions that are already
    /// received in one local transaction (`apply/worker/grouping.rs`); on
    /// by default.
    pub(crate) group_commit: bool,
    /// Mark the slot for failover on the publisher
    /// (`logical_ext.set_slot_failover`) before each START_REPLICATION.
    pub(crate) failover: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            retry_min_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            disable_on_error: false,
            run_as_owner: false,
            ddl_replay_role: None,
            synchronous_commit: SynchronousCommit::Off,
            streaming: false,
            streaming_eager: true,
            two_phase: false,
            group_commit: true,
            failover: false,
        }
    }
}

pub(crate) const WORKER_OPTION_KEYS: &[&str] = &[
    "retry_min_delay_ms",
    "retry_max_delay_ms",
    "disable_on_error",
    "run_as_owner",
    "ddl_replay_role",
    "synchronous_commit",
    "streaming",
    "streaming_eager",
    "two_phase",
    "group_commit",
    "failover",
];

fn millis(v: &Value, key: &str) -> Result<Duration, String> {
    v.as_u64()
        .filter(|ms| (1..=86_400_000).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("option \"{key}\" must be an integer number of milliseconds between 1 and 86400000"))
}

impl WorkerOptions {
    /// Parse the `options` object; unknown keys are refused.
    pub(crate) fn parse(v: &Value) -> Result<WorkerOptions, OptionError> {
        let obj = v.as_object().ok_or("options must be a JSON object")?;
        let mut o = WorkerOptions::default();
        for (k, val) in obj {
            match k.as_str() {
                "retry_min_delay_ms" => o.retry_min_delay = millis(val, k)?,
                "retry_max_delay_ms" => o.retry_max_delay = millis(val, k)?,
                "disable_on_error" => {
                    o.disable_on_error = val.as_bool().ok_or("option \"disable_on_error\" must be true or false")?
                }
                "run_as_owner" => {
                    o.run_as_owner = val.as_bool().ok_or("option \"run_as_owner\" must be true or false")?
                }
                "ddl_replay_role" => {
                    let name = val.as_str().filter(|s| !s.is_empty() && s.len() < 64 && !s.contains('\0'));
                    o.ddl_replay_role = Some(name.ok_or("option \"ddl_replay_role\" must be a role name")?.to_string())
                }
                "synchronous_commit" => {
                    o.synchronous_commit =
                        val.as_str().and_then(SynchronousCommit::parse).ok_or_else(|| OptionError {
                            message: format!("invalid value for option \"synchronous_commit\": {val}"),
                            hint: format!(
                                "Use one of {} (as a JSON string), as for a native subscription.",
                                SynchronousCommit::VALUES.join(", ")
                            ),
                        })?
                }
                "streaming" => o.streaming = val.as_bool().ok_or("option \"streaming\" must be true or false")?,
                "streaming_eager" => {
                    o.streaming_eager = val.as_bool().ok_or("option \"streaming_eager\" must be true or false")?
                }
                "two_phase" => o.two_phase = val.as_bool().ok_or("option \"two_phase\" must be true or false")?,
                "group_commit" => {
                    o.group_commit = val.as_bool().ok_or("option \"group_commit\" must be true or false")?
                }
                "failover" => o.failover = val.as_bool().ok_or("option \"failover\" must be true or false")?,
                other => {
                    return Err(format!(
                        "unknown subscription option \"{other}\" (valid: {})",
                        WORKER_OPTION_KEYS.join(", ")
                    )
                    .into());
                }
            }
        }
        if o.retry_min_delay > o.retry_max_delay {
            return Err("retry_min_delay_ms must not exceed retry_max_delay_ms".into());
        }
        Ok(o)
    }

    /// Delay before retry number `attempt` (0-based): doubling, capped.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.retry_min_delay.saturating_mul(factor).min(self.retry_max_delay)
    }
}

/// Slot names are what PostgreSQL accepts: lower-case letters, digits and
/// underscores, at most 63 bytes.
pub(crate) fn valid_slot_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_and_backoff() {
        let o = WorkerOptions::parse(&json!({"retry_min_delay_ms": 100, "retry_max_delay_ms": 1000})).unwrap();
        assert_eq!(o.backoff(0), Duration::from_millis(100));
        assert_eq!(o.backoff(3), Duration::from_millis(800));
        assert_eq!(o.backoff(4), Duration::from_millis(1000));
        assert_eq!(o.backoff(1000), Duration::from_millis(1000));
        assert_eq!(WorkerOptions::parse(&json!({})).unwrap(), WorkerOptions::default());
        assert!(WorkerOptions::parse(&json!({"nope": 1})).unwrap_err().message.contains("nope"));
        assert!(WorkerOptions::parse(&json!({"retry_min_delay_ms": -1})).is_err());
        assert!(WorkerOptions::parse(&json!({"retry_min_delay_ms": 5000, "retry_max_delay_ms": 10})).is_err());
        assert!(WorkerOptions::parse(&json!([1])).is_err());
        assert!(WorkerOptions::parse(&json!({"disable_on_error": true})).unwrap().disable_on_error);
        assert!(WorkerOptions::parse(&json!({"disable_on_error": 1})).is_err());
        assert!(WorkerOptions::parse(&json!({"run_as_owner": true})).unwrap().run_as_owner);
        assert!(!WorkerOptions::default().run_as_owner);
        assert!(WorkerOptions::parse(&json!({"run_as_owner": "yes"})).is_err());
        let o = WorkerOptions::parse(&json!({"ddl_replay_role": "deployer"})).unwrap();
        assert_eq!(o.ddl_replay_role.as_deref(), Some("deployer"));
        assert!(WorkerOptions::parse(&json!({"ddl_replay_role": ""})).is_err());
        assert!(WorkerOptions::parse(&json!({"ddl_replay_role": 3})).is_err());
    }

    #[test]
    fn synchronous_commit_option() {
        assert_eq!(WorkerOptions::default().synchronous_commit, SynchronousCommit::Off);
        for v in SynchronousCommit::VALUES {
            let o = WorkerOptions::parse(&json!({ "synchronous_commit": v })).unwrap();
            assert_eq!(o.synchronous_commit.as_str(), *v);
        }
        let o = WorkerOptions::parse(&json!({"synchronous_commit": "Remote_Apply"})).unwrap();
        assert_eq!(o.synchronous_commit, SynchronousCommit::RemoteApply);
        for bad in [json!("remote"), json!(true), json!(1), json!(null)] {
            let e = WorkerOptions::parse(&json!({ "synchronous_commit": bad })).unwrap_err();
            assert!(e.message.contains("synchronous_commit"), "{e:?}");
            assert!(e.hint.contains("remote_apply"), "{e:?}");
        }
    }

    #[test]
    fn streaming_option() {
        assert!(!WorkerOptions::default().streaming);
        assert!(WorkerOptions::parse(&json!({"streaming": true})).unwrap().streaming);
        assert!(!WorkerOptions::parse(&json!({"streaming": false})).unwrap().streaming);
        assert!(WorkerOptions::parse(&json!({"streaming": "on"})).unwrap_err().message.contains("streaming"));
        assert!(WorkerOptions::default().streaming_eager);
        assert!(!WorkerOptions::parse(&json!({"streaming_eager": false})).unwrap().streaming_eager);
        assert!(WorkerOptions::parse(&json!({"streaming_eager": 1})).unwrap_err().message.contains("streaming_eager"));
    }

    #[test]
    fn two_phase_option() {
        assert!(!WorkerOptions::default().two_phase);
        assert!(WorkerOptions::parse(&json!({"two_phase": true})).unwrap().two_phase);
        assert!(!WorkerOptions::parse(&json!({"two_phase": false})).unwrap().two_phase);
        assert!(WorkerOptions::parse(&json!({"two_phase": "on"})).unwrap_err().message.contains("two_phase"));
    }

    #[test]
    fn group_commit_option() {
        assert!(WorkerOptions::default().group_commit);
        assert!(!WorkerOptions::parse(&json!({"group_commit": false})).unwrap().group_commit);
        assert!(WorkerOptions::parse(&json!({"group_commit": true})).unwrap().group_commit);
        assert!(WorkerOptions::parse(&json!({"group_commit": 0})).unwrap_err().message.contains("group_commit"));
    }

    #[test]
    fn origins_and_slot_names() {
        assert_eq!(Origin::parse("NONE").unwrap(), Origin::None);
        assert!(Origin::parse("local").is_err());
        assert!(valid_slot_name("sub_1"));
        assert!(!valid_slot_name("Sub"));
        assert!(!valid_slot_name(""));
        assert!(!valid_slot_name(&"a".repeat(64)));
    }
}
