//! A replicated value (text) into a subscriber column, through the column
//! type's input function as native replication does: a subscriber column of
//! another but compatible type (int → bigint, varchar(10) → text, text →
//! citext, int → text) takes the value; one it does not fit is an ERROR.
//!
//! Design notes
//! - An input function's complaint ("invalid input syntax for type integer:
//!   "abc"", "value too long for type character varying(10)") names neither
//!   table nor column, and sometimes not the value; `last_error` shows only
//!   the message. So a data exception (SQLSTATE class 22) raised while
//!   converting is raised again, SQLSTATE kept, with table, column and
//!   value (shortened) in the message. Other errors (a cancel, out of
//!   memory) pass through unchanged. Decided on the SQLSTATE, never on text.
//! - Input functions never truncate (only casts do), so a value that does
//!   not fit is always this error, the transaction rolls back and is
//!   retried with backoff like any apply error.

use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use std::cell::Cell;
use std::panic::AssertUnwindSafe;

/// How many characters of an offending value the message shows.
const SHOWN_CHARS: usize = 80;

/// No column is being converted (see [`converting`]).
pub(crate) const NO_COLUMN: usize = usize::MAX;

/// Run `store`, the conversion of one row's values into columns of `table`
/// (`schema.table`), with one error catcher for the whole row — not one per
/// value: this is the apply worker's hot path. `store` sets `current` to
/// the position of the column whose input function it calls, and back to
/// [`NO_COLUMN`] after; a data exception raised meanwhile is raised again
/// naming table, column and value (`column(pos)`: its name and text).
pub(crate) fn converting<R>(
    table: &str,
    current: &Cell<usize>,
    store: impl FnOnce() -> R,
    column: impl Fn(usize) -> (String, String),
) -> R {
    // The handler only reads them after the unwind: nothing is left half-done.
    let (current, column) = (AssertUnwindSafe(current), AssertUnwindSafe(column));
    PgTryBuilder::new(AssertUnwindSafe(store))
        .catch_others(move |e| {
            let report = match &e {
                CaughtError::PostgresError(r)
                | CaughtError::ErrorReport(r)
                | CaughtError::RustPanic { ereport: r, .. } => r,
            };
            let code = report.sql_error_code();
            let pos = current.get();
            if pos == NO_COLUMN || !is_data_exception(code) {
                e.rethrow();
            }
            let (name, text) = column(pos);
            ErrorReport::new(code, message(table, &name, &text, report.message()), function_name!())
                .set_hint(
                    "Make the subscriber column's type accept the publisher's values (ALTER TABLE ... ALTER COLUMN \
                     ... TYPE); the transaction is retried.",
                )
                .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        })
        .execute()
}

/// SQLSTATE class 22 (data exception): what input functions raise for a
/// value they do not accept.
fn is_data_exception(code: PgSqlErrorCode) -> bool {
    const CLASS_MASK: isize = 0xFFF; // the first two characters, 6 bits each
    (code as isize) & CLASS_MASK == (PgSqlErrorCode::ERRCODE_DATA_EXCEPTION as isize) & CLASS_MASK
}

fn message(table: &str, column: &str, value: &str, cause: &str) -> String {
    let shown: String = value.chars().take(SHOWN_CHARS).collect();
    let more = if shown.len() < value.len() { format!("… ({} bytes)", value.len()) } else { String::new() };
    format!(
        "logical_ext: column \"{column}\" of \"{table}\" cannot take the replicated value \"{shown}\"{more}: {cause}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_exceptions_by_class() {
        assert!(is_data_exception(PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION));
        assert!(is_data_exception(PgSqlErrorCode::ERRCODE_STRING_DATA_RIGHT_TRUNCATION));
        assert!(is_data_exception(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE));
        assert!(!is_data_exception(PgSqlErrorCode::ERRCODE_QUERY_CANCELED));
        assert!(!is_data_exception(PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY));
        assert!(!is_data_exception(PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION));
    }

    #[test]
    fn messages_name_table_column_and_value() {
        let m = message("public.x", "v", "abc", "invalid input syntax for type integer: \"abc\"");
        assert_eq!(
            m,
            "logical_ext: column \"v\" of \"public.x\" cannot take the replicated value \"abc\": invalid input \
             syntax for type integer: \"abc\""
        );
        let long = "é".repeat(100);
        let m = message("public.x", "w", &long, "value too long");
        assert!(m.contains(&"é".repeat(SHOWN_CHARS)) && !m.contains(&"é".repeat(SHOWN_CHARS + 1)), "{m}");
        assert!(m.contains("… (200 bytes)"), "{m}");
    }
}
