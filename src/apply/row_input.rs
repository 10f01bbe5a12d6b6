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
//! - Three types skip their input function when the text has the shape the
//!   decoder writes: `timestamptz` without a typmod (the publisher's ISO
//!   text with its UTC offset, read by `commit_time::parse_iso`, a pure
//!   reader checked against `timestamptz_in` field by field), `float8`
//!   (a JSON number; Rust's parser and `strtod` both round correctly),
//!   `numeric` without a typmod (`numeric_out`'s text, turned into
//!   `numeric_in`'s exact bytes by `numeric_input`) and `jsonb`
//!   (`jsonb_out`'s text: `jsonb_input.rs` writes the bytes `jsonb_in` would
//!   return, its numbers through `numeric_input`; compared with `jsonb_in`
//!   byte for byte by its `#[pg_test]`s), each palloc'd in the current
//!   memory context as the input function's result would be. Any other
//!   text still goes to the input function: same value, same ERROR.
//!   (`timestamptz_in`, `float8in` were ~9% of a bulk apply, `numeric_in`
//!   2–5%, `jsonb_in` 17%.)

use super::commit_time;
use super::jsonb_input;
use super::numeric_input;
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
                        *c.dest = ffi::unguarded::input_function_call(
                            c.finfo,
                            base.add(c.offset).cast(),
                            c.ioparam,
                            c.typmod,
                        );
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
    const TIMESTAMPTZ_IN: u32 = pg_sys::F_TIMESTAMPTZ_IN;
    const FLOAT8IN: u32 = pg_sys::F_FLOAT8IN;
    const NUMERIC_IN: u32 = pg_sys::F_NUMERIC_IN;
    const JSONB_IN: u32 = pg_sys::F_JSONB_IN;
    let (func, typmod) = input.function();
    match func.to_u32() {
        TIMESTAMPTZ_IN if typmod == -1 => commit_time::parse_iso(text).map(pg_sys::Datum::from),
        FLOAT8IN => float8(text).map(|v| pg_sys::Datum::from(v.to_bits())),
        NUMERIC_IN if typmod == -1 => numeric_input::datum(text),
        JSONB_IN => jsonb_input::datum(text),
        _ => None,
    }
}

/// A `float8` written as a JSON number (`-?digits[.digits][e[+-]digits]`,
/// the decoder's shortest round-trip text), read as `float8in` reads it:
/// both round correctly to the nearest double. A result out of range
/// (infinite, or zero from non-zero digits) is `float8in`'s ERROR: `None`,
/// so that it raises it; so are other spellings (`NaN`, `Infinity`, blanks).
fn float8(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if !digits(&mut i) {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    let mantissa = i;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    let underflow = v == 0.0 && b[..mantissa].iter().any(|c| (b'1'..=b'9').contains(c));
    (v.is_finite() && !underflow).then_some(v)
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

#[cfg(test)]
mod tests {
    use super::float8;

    #[test]
    fn float8_reads_json_numbers_as_strtod() {
        for t in [
            "0",
            "-0",
            "1",
            "1.5",
            "-2.25",
            "0.1",
            "1e-7",
            "1.2345e30",
            "5e-324",
            "1.7976931348623157e308",
            "123456789012345678901234567890",
            "2.2250738585072014e-308",
            "1E5",
            "1e+5",
        ] {
            let v = float8(t).unwrap_or_else(|| panic!("{t}"));
            assert_eq!(v.to_bits(), t.parse::<f64>().unwrap().to_bits(), "{t}");
        }
        assert!(float8("-0").unwrap().is_sign_negative());
    }

    #[test]
    fn float8_leaves_other_texts_and_range_errors_to_float8in() {
        for t in [
            "",
            "-",
            "NaN",
            "Infinity",
            "-Infinity",
            " 1",
            "1 ",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "0x10",
            "1_0",
            "1e400",
            "-1e400",
            "1e-400",
            "0.5e-330",
        ] {
            assert_eq!(float8(t), None, "{t}");
        }
        assert_eq!(float8("0e-400").map(f64::to_bits), Some(0));
        assert_eq!(float8("0.000"), Some(0.0));
    }
}
