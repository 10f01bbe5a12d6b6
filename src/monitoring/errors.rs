//! Every error the monitoring functions raise, in one place: SQLSTATE,
//! message and hint.

use super::health::HistoryGap;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MonitorError {
    /// `drop_stale_slots()` called by a role that may not drop (or, for a
    /// dry run, read) slots.
    DropNotPermitted { role: String, dry_run: bool },
    /// `inactive_for` is negative.
    NegativeBound,
    /// Inactive slots exist but how long they have been inactive is unknown.
    NoHistory(HistoryGap),
    /// A catalog query failed (should not happen).
    Query(String),
}

impl MonitorError {
    pub(crate) fn report(self) -> ! {
        let (code, message, hint) = match self {
            MonitorError::DropNotPermitted { role, dry_run } => (
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                if dry_run {
                    format!("permission denied to list stale replication slots for role \"{role}\"")
                } else {
                    format!("permission denied to drop replication slots for role \"{role}\"")
                },
                "Only superusers and roles with the REPLICATION attribute may drop slots; members of pg_monitor \
                 may call logical_ext.drop_stale_slots() with dry_run => true."
                    .to_string(),
            ),
            MonitorError::NegativeBound => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "inactive_for must not be negative".to_string(),
                "Pass how long a slot must have been inactive to count as stale, e.g. '1 day'.".to_string(),
            ),
            MonitorError::NoHistory(gap) => (
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("cannot tell how long replication slots have been inactive ({})", gap.explain()),
                match gap {
                    HistoryGap::NotPreloaded => {
                        "Add logical_ext to shared_preload_libraries and restart the server; the sampler then \
                         records when slots become inactive."
                    }
                    HistoryGap::SamplingOff => "Set logical_ext.monitor_interval above 0 and reload the configuration.",
                    HistoryGap::SamplerNotRunning | HistoryGap::TooFewSamples => {
                        "Retry when logical_ext.sampler_status() shows the sampler running."
                    }
                }
                .to_string(),
            ),
            MonitorError::Query(e) => (
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("logical_ext monitoring query failed: {e}"),
                "This is a bug in logical_ext; please report it with the server log.".to_string(),
            ),
        };
        ErrorReport::new(code, message, "logical_ext monitoring").set_hint(hint).report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// `Result::unwrap` for catalog queries: reports [`MonitorError::Query`].
pub(crate) trait OrReport<T> {
    fn or_report(self) -> T;
}

impl<T, E: std::fmt::Display> OrReport<T> for Result<T, E> {
    fn or_report(self) -> T {
        self.unwrap_or_else(|e| MonitorError::Query(e.to_string()).report())
    }
}
