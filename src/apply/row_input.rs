//! One row's values into a slot: every sent column's text through its
//! column's input function (`relation::Input`), inside **one** guarded FFI
//! boundary per row.
//!
//! Design notes
//! - pgrx guards each PostgreSQL call it binds (a thread check and a
//!   `sigsetjmp`, so that an ERROR becomes a Rust panic). For a bulk load
//!   that was eight guards per row of eight columns, ~4% of the apply
//!   worker (issue 14 profile). Here the row is prepared first (target
//!   attributes, texts copied NUL-terminated into one buffer, pointers
//!   resolved), then a single `pg_guard_ffi_boundary` runs a loop of raw
//!   `InputFunctionCall`s. The loop's frame owns nothing with a destructor
//!   and cannot panic (no indexing, no allocation), so an ERROR's longjmp
//!   over it skips no clean-up: what pgrx's docs require of the closure.
//! - Errors are those of the per-value path: the caller's `values::converting`
//!   catches the ERROR at the row level and names the column from
//!   `current`, set before each call. A text with a NUL byte is refused
//!   (as before, `ERRCODE_UNTRANSLATABLE_CHARACTER`) only after the columns
//!   before it were converted, so which error a bad row raises is unchanged.
//! - `timestamptz` columns without a typmod read the publisher's ISO text
//!   with `commit_time::parse_iso` (a pure reader checked against
//!   `timestamptz_in` field by field) and skip the input function; any
//!   other text still goes to `timestamptz_in`: same value, same ERROR.

use super::commit_time;
use super::protocol::Column;
use super::relation::{Input, LocalRel};
use super::values;
use crate::ffi;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::cell::Cell;

/// One input function call of the row, resolved before the guarded loop.
struct Call {
    /// Position of the column in the remote row (for error attribution).
    pos: usize,
    finfo: *mut pg_sys::FmgrInfo,
    ioparam: pg_sys::Oid,
    typmod: i32,
    /// The text in the row's buffer (NUL-terminated at `offset + len`).
    offset: usize,
    len: usize,
    dest: *mut pg_sys::Datum,
}

/// What stops a row before all its columns are converted: raised after the
/// columns before it were converted, as the per-value path did.
enum Stop {
    /// The subscriber has no column of that name (`LocalRel::attr`'s ERROR).
    UnknownColumn,
    /// A value the document cannot carry for a column.
    Malformed(String),
    /// A text with a NUL byte.
    Nul,
}

/// Store `cols` into `slot` (by name), returning which attributes were set.
/// `scratch` is the worker's reused buffer (it holds the row's texts).
pub(crate) fn store(
    rel: &LocalRel,
    slot: *mut pg_sys::TupleTableSlot,
    cols: &[Column<'_>],
    scratch: &mut Vec<u8>,
) -> Vec<bool> {
    let mut present = vec![false; rel.natts];
    // SAFETY: the slot has natts values/isnull entries.
    let (values, nulls) = unsafe {
        (
            std::slice::from_raw_parts_mut((*slot).tts_values, rel.natts),
            std::slice::from_raw_parts_mut((*slot).tts_isnull, rel.natts),
        )
    };
    let current = Cell::new(values::NO_COLUMN);
    let column = |pos: usize| {
        let c = &cols[pos];
        (c.name.to_string(), c.text().ok().flatten().map(|t| t.into_owned()).unwrap_or_default())
    };
    values::converting(
        &rel.display,
        &current,
        || {
            scratch.clear();
            let mut calls: Vec<Call> = Vec::with_capacity(cols.len());
            let mut stop = None;
            for (pos, c) in cols.iter().enumerate() {
                let Some(i) = rel.try_attr_at(pos, &c.name) else {
                    stop = Some((pos, Stop::UnknownColumn));
                    break;
                };
                let input = rel.inputs[i].as_ref().expect("mapped columns have an input function");
                match c.text() {
                    Ok(Some(text)) => {
                        nulls[i] = false;
                        if let Some(d) = fast_datum(input, &text) {
                            values[i] = d;
                        } else {
                            let (finfo, ioparam, typmod) = input.call_parts();
                            let (offset, len) = (scratch.len(), text.len());
                            // SAFETY: i < natts, the slot's array length.
                            let dest = unsafe { (*slot).tts_values.add(i) };
                            calls.push(Call { pos, finfo, ioparam, typmod, offset, len, dest });
                            scratch.extend_from_slice(text.as_bytes());
                            scratch.push(0);
                        }
                    }
                    Ok(None) => nulls[i] = true,
                    Err(e) => {
                        stop = Some((pos, Stop::Malformed(e)));
                        break;
                    }
                }
                present[i] = true;
            }
            // Each text is followed by one NUL; more NULs: one is inside a
            // text (rare), which stops the row there.
            let mut limit = calls.len();
            if scratch.iter().filter(|&&b| b == 0).count() != calls.len()
                && let Some(k) = calls.iter().position(|c| scratch[c.offset..c.offset + c.len].contains(&0))
            {
                limit = k;
                stop = Some((calls[k].pos, Stop::Nul));
            }
            let base = scratch.as_mut_ptr();
            let todo = &calls[..limit];
            // SAFETY: every pointer was resolved above and stays valid (no
            // allocation until the loop ends): the FmgrInfos live in the
            // relation entry, `dest` in the slot, the texts in `scratch`,
            // NUL-terminated. The loop owns nothing to drop and cannot
            // panic, so an ERROR's longjmp over it is what the boundary expects.
            unsafe {
                pg_sys::ffi::pg_guard_ffi_boundary(|| {
                    for c in todo {
                        current.set(c.pos);
                        *c.dest = ffi::input_function_call(c.finfo, base.add(c.offset).cast(), c.ioparam, c.typmod);
                    }
                })
            };
            current.set(values::NO_COLUMN);
            match stop {
                None => {}
                Some((pos, Stop::UnknownColumn)) => {
                    let _ = rel.attr(&cols[pos].name); // raises its ERROR
                }
                Some((pos, Stop::Malformed(e))) => malformed(rel, &cols[pos], &e),
                Some((pos, Stop::Nul)) => {
                    current.set(pos);
                    ErrorReport::new(
                        PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
                        "logical_ext: a replicated value contains a NUL byte",
                        function_name!(),
                    )
                    .report(PgLogLevel::ERROR);
                }
            }
        },
        column,
    );
    present
}

/// A datum made without the input function, when the column's type has a
/// pure reader for this text (see the module notes).
fn fast_datum(input: &Input, text: &str) -> Option<pg_sys::Datum> {
    if input.is_plain_timestamptz() {
        return commit_time::parse_iso(text).map(pg_sys::Datum::from);
    }
    None
}

fn malformed(rel: &LocalRel, c: &Column<'_>, e: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
        format!("logical_ext: malformed value for column \"{}\" of \"{}\": {e}", c.name, rel.display),
        function_name!(),
    )
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
