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
    /// `inactive_for` is below the sane minimum (`min_us`: the floor, or a
    /// few sampling intervals).
    BoundTooSmall { min_us: i64 },
    /// A `slot_types` element is not `logical` or `physical`.
    BadSlotType(String),
    /// `min_retained_bytes` is negative.
    NegativeRetained,
    /// A real drop where the audit row cannot be written: a read-only
    /// transaction, or a hot standby.
    AuditNotWritable { standby: bool },
    /// A real drop called from another function (PL/pgSQL, SQL function,
    /// DO block, SPI): the caller could roll the audit row back after the
    /// drop, which cannot be.
    NestedCall,
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
                    HistoryGap::SamplerNotRunning | HistoryGap::TooFewSamples | HistoryGap::SamplerStale => {
                        "Retry when logical_ext.sampler_status() shows the sampler running."
                    }
                }
                .to_string(),
            ),
            MonitorError::BoundTooSmall { min_us } => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("inactive_for must be at least {} seconds", (min_us + 999_999) / 1_000_000),
                "A slot counts as stale only after several sampling rounds without any use; pass a longer \
                 inactive_for (days, for slots whose consumers run rarely)."
                    .to_string(),
            ),
            MonitorError::BadSlotType(t) => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid slot_type \"{t}\""),
                "slot_types takes 'logical' and 'physical', e.g. ARRAY['logical', 'physical'].".to_string(),
            ),
            MonitorError::NegativeRetained => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "min_retained_bytes must not be negative".to_string(),
                "Pass 0 to consider slots whatever WAL they retain.".to_string(),
            ),
            MonitorError::AuditNotWritable { standby } => (
                PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
                if standby {
                    "logical_ext.drop_stale_slots(dry_run => false) cannot run on a hot standby".to_string()
                } else {
                    "logical_ext.drop_stale_slots(dry_run => false) cannot run in a read-only transaction".to_string()
                },
                if standby {
                    "Every drop is recorded in logical_ext.slot_drop_audit, which a standby cannot write; drop \
                     slots of a standby with pg_drop_replication_slot(), or run the dry run here."
                } else {
                    "Every drop is recorded in logical_ext.slot_drop_audit: run it in a read-write transaction \
                     (SET default_transaction_read_only = off)."
                }
                .to_string(),
            ),
            MonitorError::NestedCall => (
                PgSqlErrorCode::ERRCODE_ACTIVE_SQL_TRANSACTION,
                "logical_ext.drop_stale_slots(dry_run => false) cannot be called from a function".to_string(),
                "A dropped slot cannot be restored but the caller could roll back its audit row: run it as a \
                 statement of its own, SELECT * FROM logical_ext.drop_stale_slots(..., dry_run => false)."
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
