//! The size limit of one document, and fallible growth of the buffer it is
//! built in.
//!
//! Design notes
//! - A document is built in a Rust `Vec` and then copied into the output
//!   `StringInfo` (walsender message or SQL `text` row), which PostgreSQL
//!   caps at `MaxAllocSize` (1 GB - 1). A value can escape to up to six
//!   times its size (`\u0001`), so a value well below 1 GB can make a
//!   document above it.
//! - Rust's infallible growth aborts the process when memory runs out, and
//!   an abort makes the postmaster restart the whole server. So every growth
//!   by a piece of unbounded size (text, bytea, output-function text, a
//!   message's content, DDL text) is reserved here first, with `try_reserve`
//!   and against the limit: beyond it, or when the memory cannot be had, a
//!   PostgreSQL ERROR is raised (what `palloc` would do), the walsender or
//!   SQL function fails cleanly and nothing else is disturbed.
//! - Each reservation leaves headroom (an eighth of the size, at least
//!   64 KiB, also past the limit) for the small fixed pieces (names,
//!   brackets) written between values, so they do not reallocate a huge
//!   buffer infallibly; [`check`] refuses a finished document over the limit.
//! - [`DocumentError`] is the closed set of reasons; the check itself is
//!   pure and unit-tested, only [`reserve`] and [`check`] talk to PostgreSQL.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The largest document written: `MaxAllocSize` less room for the
/// walsender's message header and the `text` header of a SQL row.
pub(crate) const MAX_DOCUMENT: usize = 0x3fff_ffff - 1024;

const MIN_HEADROOM: usize = 64 * 1024;

/// Why a document cannot be built.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DocumentError {
    /// The document would exceed [`MAX_DOCUMENT`] (at least `size` bytes).
    TooLarge { size: usize },
    /// The memory for a document of `size` bytes could not be allocated.
    OutOfMemory { size: usize },
}

impl DocumentError {
    pub(crate) fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            DocumentError::TooLarge { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            DocumentError::OutOfMemory { .. } => PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            DocumentError::TooLarge { size } => format!(
                "logical_ext: change document too large: at least {size} bytes, the limit is {MAX_DOCUMENT} bytes"
            ),
            DocumentError::OutOfMemory { size } => {
                format!("logical_ext: out of memory building a change document of {size} bytes")
            }
        }
    }

    pub(crate) fn detail(&self) -> &'static str {
        match self {
            DocumentError::TooLarge { .. } => {
                "One change is one JSON document, which must fit in 1 GB with every value escaped \
                 (a control character takes 6 bytes, a bytea byte 2)."
            }
            DocumentError::OutOfMemory { .. } => "The decoding process could not allocate the document buffer.",
        }
    }

    pub(crate) fn hint(&self) -> &'static str {
        match self {
            DocumentError::TooLarge { .. } => {
                "Decoding stops at this change each time it is read. To go on, advance the slot past this \
                 transaction with pg_replication_slot_advance() (the transaction is then lost to this consumer) \
                 and resynchronize the table; keep such values out of published tables or columns. With \
                 format-version 1, the option write-in-chunks writes a transaction in pieces (then only one \
                 change must fit)."
            }
            DocumentError::OutOfMemory { .. } => {
                "Free memory on the server (or lower work_mem / logical_decoding_work_mem) and read the slot again."
            }
        }
    }
}

/// Make room in `buf` for `additional` more bytes (plus headroom), or say
/// why not. Never aborts.
pub(crate) fn try_reserve(buf: &mut Vec<u8>, additional: usize) -> Result<(), DocumentError> {
    let needed = buf.len().saturating_add(additional);
    if needed > MAX_DOCUMENT {
        return Err(DocumentError::TooLarge { size: needed });
    }
    if needed <= buf.capacity() {
        return Ok(());
    }
    // Near the limit the headroom may pass it: the small pieces after the
    // last value still fit without a reallocation, and `check` refuses the
    // finished document.
    let target = needed.saturating_add((needed / 8).max(MIN_HEADROOM)).min(MAX_DOCUMENT + MIN_HEADROOM);
    if buf.try_reserve_exact(target - buf.len()).is_ok() || buf.try_reserve_exact(additional).is_ok() {
        Ok(())
    } else {
        Err(DocumentError::OutOfMemory { size: needed })
    }
}

/// [`try_reserve`], raising the PostgreSQL ERROR on failure.
pub(crate) fn reserve(buf: &mut Vec<u8>, additional: usize) {
    if let Err(e) = try_reserve(buf, additional) {
        raise(e);
    }
}

/// Raise the ERROR when a finished document exceeds the limit (the small
/// pieces after the last reservation may have crossed it).
pub(crate) fn check(doc: &[u8]) {
    if doc.len() > MAX_DOCUMENT {
        raise(DocumentError::TooLarge { size: doc.len() });
    }
}

fn raise(e: DocumentError) -> ! {
    ErrorReport::new(e.sqlstate(), e.message(), function_name!())
        .set_detail(e.detail())
        .set_hint(e.hint())
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_with_headroom_below_the_limit() {
        let mut b = Vec::new();
        assert_eq!(try_reserve(&mut b, 10), Ok(()));
        assert!(b.capacity() >= 10 + MIN_HEADROOM);
        b.extend_from_slice(&[1; 100]);
        let cap = b.capacity();
        assert_eq!(try_reserve(&mut b, 1000), Ok(()));
        assert_eq!(b.capacity(), cap, "enough room: no reallocation");
    }

    #[test]
    fn refuses_beyond_the_limit_without_allocating() {
        let mut b = vec![0u8; 16];
        assert_eq!(try_reserve(&mut b, MAX_DOCUMENT), Err(DocumentError::TooLarge { size: MAX_DOCUMENT + 16 }));
        assert_eq!(try_reserve(&mut b, usize::MAX), Err(DocumentError::TooLarge { size: usize::MAX }));
        assert!(b.capacity() < 1 << 20);
    }

    #[test]
    fn errors_have_sqlstates_and_hints() {
        for e in [DocumentError::TooLarge { size: 1 }, DocumentError::OutOfMemory { size: 1 }] {
            assert!(!e.hint().is_empty() && !e.detail().is_empty());
            assert!(e.message().starts_with("logical_ext: "));
        }
        assert_eq!(DocumentError::TooLarge { size: 1 }.sqlstate(), PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED);
    }
}
