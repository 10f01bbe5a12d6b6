//! `logical_ext.replicate_ddl(command)`: run one command here and replicate
//! it, for what capture does not cover (or covers differently): global
//! objects such as roles, objects outside published schemas, commands under
//! `ddl_capture = off`. The command is replicated as one event addressed to
//! every consumer (no publication), and capture stays quiet while it runs so
//! that it travels once.

use super::capture::{publish, role_name};
use super::event::{DdlEvent, Source};
use super::statement;
use crate::ffi::{self, lsn::Lsn};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Why `replicate_ddl` refuses a statement with this command tag.
pub(crate) fn refusal(tag: &str) -> Option<&'static str> {
    match tag {
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "SELECT INTO" | "CREATE TABLE AS"
        | "EXPLAIN" => Some("it reads or writes rows; row changes already travel in the change stream"),
        "BEGIN"
        | "START TRANSACTION"
        | "COMMIT"
        | "ROLLBACK"
        | "SAVEPOINT"
        | "RELEASE"
        | "PREPARE TRANSACTION"
        | "COMMIT PREPARED"
        | "ROLLBACK PREPARED" => Some("it controls transactions"),
        "DO" | "CALL" | "EXECUTE" => {
            Some("it runs code whose DDL capture already sees statement by statement, and whose DML is in the stream")
        }
        _ => None,
    }
}

/// Run `command` (exactly one statement) locally and replicate it to every
/// subscriber; returns the position of the replicated DDL message.
#[pg_extern(volatile, parallel_unsafe)]
fn replicate_ddl(command: &str) -> Lsn {
    let statements = ffi::parse::parse_statements(command);
    let tag = match statements.as_slice() {
        [one] => one.tag.clone(),
        _ => {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("logical_ext.replicate_ddl() takes exactly one statement, got {}", statements.len()),
                function_name!(),
            )
            .set_hint("Call it once per statement.")
            .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        }
    };
    if let Some(why) = refusal(&tag) {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("logical_ext.replicate_ddl() does not replicate {tag}: {why}"),
            function_name!(),
        )
        .set_hint("Pass a DDL command such as CREATE, ALTER, DROP, GRANT or COMMENT.")
        .report(PgLogLevel::ERROR);
    }
    if statements[0].carries_secret {
        // The message must not repeat the command: it holds a password.
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("logical_ext.replicate_ddl() does not replicate this {tag}: it carries a password"),
            function_name!(),
        )
        .set_hint(
            "Run the command on each node yourself; logical_ext never writes passwords into WAL, ddl_log or logs.",
        )
        .report(PgLogLevel::ERROR);
    }
    if !super::authentic::ddl_log_ready() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "logical_ext.replicate_ddl() needs logical_ext's 0.2.0 SQL objects".to_string(),
            function_name!(),
        )
        .set_hint("Run ALTER EXTENSION logical_ext UPDATE in this database.")
        .report(PgLogLevel::ERROR);
    }
    if !ffi::wal_is_logical() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "logical_ext.replicate_ddl() needs wal_level = logical".to_string(),
            function_name!(),
        )
        .set_hint("Set wal_level = logical and restart the server.")
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: reads the current GUC value and user id.
    let (search_path, role) = unsafe { (ffi::cstr_to_string(pg_sys::namespace_search_path), pg_sys::GetUserId()) };
    {
        let _quiet = statement::suppress();
        Spi::run(command).unwrap_or_else(|e| pgrx::error!("{e}"));
    }
    let event = DdlEvent {
        source: Source::ReplicateDdl,
        command_tag: tag,
        object_type: None,
        object_identity: None,
        schema: None,
        search_path,
        role: role_name(role),
        publications: Vec::new(),
        command: command.trim().to_string(),
        log_id: None,
    };
    Lsn(publish(&event))
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn refusals() {
        assert!(refusal("CREATE TABLE").is_none());
        assert!(refusal("CREATE ROLE").is_none());
        assert!(refusal("GRANT").is_none());
        for tag in ["INSERT", "CREATE TABLE AS", "COMMIT", "DO", "CALL"] {
            assert!(refusal(tag).is_some(), "{tag}");
        }
    }
}
