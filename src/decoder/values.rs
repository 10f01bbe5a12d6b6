//! Rendering one datum as JSON, per [`ValueKind`]. This is the per-column hot
//! path: fixed-width types are formatted from the datum itself, text-like
//! types are escaped straight from the (detoasted) varlena, `numeric` and
//! `jsonb` are printed from their stored bytes (`numeric.rs`, `jsonb.rs`)
//! and timestamps from PostgreSQL's broken-down time (`timestamp.rs`), each
//! with its output function as the fallback, and only the remaining types
//! pay for an output-function call.

use super::json;
use super::jsonb;
use super::limit;
use super::numeric;
use super::shape::ValueKind;
use super::timestamp;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CStr;

/// Whether a varlena datum is a TOAST pointer to data on disk, i.e. a value
/// that an UPDATE left unchanged and that is therefore not in the WAL.
///
/// # Safety
/// `datum` must be a non-null varlena datum.
pub(crate) unsafe fn is_unchanged_toast(datum: pg_sys::Datum) -> bool {
    let ptr = datum.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: the caller guarantees a varlena pointer.
    unsafe {
        pgrx::varlena::varatt_is_1b_e(ptr)
            && pgrx::varlena::vartag_1b_e(ptr) as u32 == pg_sys::vartag_external::VARTAG_ONDISK
    }
}

/// The bytes of a varlena datum, detoasted (decompressed, or fetched from an
/// indirect pointer built by the reorder buffer) into the current context.
///
/// # Safety
/// `datum` must be a non-null varlena datum that is not an on-disk pointer.
unsafe fn varlena_bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    let ptr = datum.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: a varlena datum. Values stored inline and uncompressed (the
    // common case in decoded tuples) are read in place; only compressed or
    // indirect ones go through pg_detoast_datum_packed, whose palloc'd copy
    // lives until the per-change context is reset.
    unsafe {
        use pgrx::varlena::{varatt_is_1b, varatt_is_1b_e, varatt_is_4b_u};
        let inline_plain = (varatt_is_1b(ptr) && !varatt_is_1b_e(ptr)) || varatt_is_4b_u(ptr);
        let v = if inline_plain { ptr } else { pg_sys::pg_detoast_datum_packed(ptr) };
        std::slice::from_raw_parts(pgrx::varlena::vardata_any(v) as *const u8, pgrx::varlena::varsize_any_exhdr(v))
    }
}

/// Append the JSON for a non-null `datum` of a column of kind `kind`.
/// Values of unbounded size reserve their room first (`limit.rs`): a
/// document that cannot be built is an ERROR, never an abort.
///
/// # Safety
/// `datum` must be a valid, non-null datum of the column's type.
pub(crate) unsafe fn push_value(out: &mut Vec<u8>, kind: &ValueKind, datum: pg_sys::Datum) {
    let raw = datum.value();
    match kind {
        ValueKind::Bool => out.extend_from_slice(if raw != 0 { b"true" } else { b"false" }),
        ValueKind::Int2 => json::push_int(out, raw as i16 as i64),
        ValueKind::Int4 => json::push_int(out, raw as i32 as i64),
        ValueKind::Int8 => json::push_int(out, raw as i64),
        ValueKind::Oid => json::push_int(out, raw as u32 as i64),
        ValueKind::Float4 => json::push_f32(out, f32::from_bits(raw as u32)),
        ValueKind::Float8 => json::push_f64(out, f64::from_bits(raw as u64)),
        ValueKind::Text => {
            // SAFETY: text-like columns hold varlena datums.
            let bytes = unsafe { varlena_bytes(datum) };
            limit::reserve(out, json::str_len_bound(bytes));
            json::push_str(out, bytes);
        }
        ValueKind::Bytea => {
            // SAFETY: bytea columns hold varlena datums.
            let bytes = unsafe { varlena_bytes(datum) };
            limit::reserve(out, json::hex_len(bytes.len()));
            json::push_hex(out, bytes, true);
        }
        ValueKind::ByteaDigits => {
            // SAFETY: bytea columns hold varlena datums.
            let bytes = unsafe { varlena_bytes(datum) };
            limit::reserve(out, json::hex_len(bytes.len()));
            json::push_hex(out, bytes, false);
        }
        ValueKind::Name => {
            // SAFETY: a name datum points to a NUL-terminated NameData.
            let s = unsafe { CStr::from_ptr(datum.cast_mut_ptr()) };
            limit::reserve(out, json::str_len_bound(s.to_bytes()));
            json::push_str(out, s.to_bytes());
        }
        ValueKind::Numeric(f) => {
            // SAFETY: numeric columns hold varlena datums.
            let bytes = unsafe { varlena_bytes(datum) };
            // (The text is at most ~150 kB whatever the value: weight and
            // display scale are 16-bit.)
            let start = out.len();
            out.push(b'"');
            if numeric::push_text(out, bytes).is_some() {
                out.push(b'"');
            } else {
                out.truncate(start);
                // SAFETY: as required by this function.
                unsafe { f.push(out, datum) };
            }
        }
        ValueKind::Jsonb(f) => {
            // SAFETY: jsonb columns hold varlena datums.
            let bytes = unsafe { varlena_bytes(datum) };
            if bytes.len() <= JSONB_DIRECT_MAX {
                limit::reserve(out, bytes.len() * 2 + 64);
                let start = out.len();
                out.push(b'"');
                let t = jsonb::Target { out: &mut *out, in_string: true, max_len: JSONB_DIRECT_MAX_TEXT };
                if jsonb::push_text(t, bytes).is_some() {
                    out.push(b'"');
                    return;
                }
                out.truncate(start);
            }
            // SAFETY: as required by this function.
            unsafe { f.push(out, datum) };
        }
        // SAFETY (both): as required by this function; the closure only
        // reads the datum's value.
        ValueKind::Timestamptz(f) => unsafe { f.push_with(out, datum, |b| push_timestamp(b, raw as i64, true)) },
        ValueKind::Timestamp(f) => unsafe { f.push_with(out, datum, |b| push_timestamp(b, raw as i64, false)) },
        // SAFETY: as required by this function.
        ValueKind::Output(f) => unsafe { f.push(out, datum) },
    }
}

/// A `timestamptz` (`with_tz`) or `timestamp` as its output function prints
/// it under `DateStyle` ISO, quoted (`timestamp.rs`); false, with nothing
/// written, under any other `DateStyle` or for a value `timestamp2tm`
/// refuses (the output function then raises its own error).
fn push_timestamp(out: &mut Vec<u8>, ts: i64, with_tz: bool) -> bool {
    // SAFETY: reads a GUC variable of this (single-threaded) backend.
    if unsafe { pg_sys::DateStyle } as u32 != pg_sys::USE_ISO_DATES {
        return false;
    }
    if let Some(text) = timestamp::special(ts) {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
        return true;
    }
    let mut tm = pg_sys::pg_tm::default();
    let (mut fsec, mut tz) = (0, 0);
    let tzp: *mut i32 = if with_tz { &mut tz } else { std::ptr::null_mut() };
    // SAFETY: plain out-parameters; no abbreviation wanted; the session's
    // time zone (NULL), as the output function uses.
    let rc = unsafe { pg_sys::timestamp2tm(ts, tzp, &mut tm, &mut fsec, std::ptr::null_mut(), std::ptr::null_mut()) };
    if rc != 0 {
        return false;
    }
    let fields = timestamp::Fields {
        year: tm.tm_year,
        mon: tm.tm_mon,
        mday: tm.tm_mday,
        hour: tm.tm_hour,
        min: tm.tm_min,
        sec: tm.tm_sec,
        fsec,
        // EncodeDateTime prints no offset without a time-zone translation.
        tz: (with_tz && tm.tm_isdst >= 0).then_some(tz),
    };
    let start = out.len();
    out.push(b'"');
    if timestamp::push_iso(out, &fields) {
        out.push(b'"');
        true
    } else {
        out.truncate(start);
        false
    }
}

/// `jsonb` values up to this stored size are printed from their bytes, into
/// at most `JSONB_DIRECT_MAX_TEXT` bytes of (infallibly grown) document;
/// larger ones go through `jsonb_out`, whose text is reserved for through
/// `limit.rs` like every other value of unbounded size.
const JSONB_DIRECT_MAX: usize = 1 << 20;
const JSONB_DIRECT_MAX_TEXT: usize = 16 << 20;

/// A type's output function. For pass-by-value types the last datum and its
/// JSON are remembered, so a value repeated row after row (the `now()` of a
/// bulk load, an enum-like code) is rendered once; the memo is dropped at
/// every transaction start, so a settings change (TimeZone) is seen.
pub(crate) struct OutputFn {
    finfo: Box<pg_sys::FmgrInfo>,
    /// `None` for by-reference types; else the last (datum, JSON), if any.
    memo: Option<RefCell<Option<Rendered>>>,
}

/// A datum and the JSON it rendered to.
type Rendered = (usize, Vec<u8>);

impl OutputFn {
    /// # Safety
    /// `typid` must be a valid type; `cxt` must outlive the function.
    pub(crate) unsafe fn new(typid: pg_sys::Oid, cxt: pg_sys::MemoryContext) -> OutputFn {
        let mut func = pg_sys::Oid::INVALID;
        let mut is_varlena = false;
        let mut finfo = Box::new(pg_sys::FmgrInfo::default());
        // SAFETY: valid type OID; finfo is writable and cxt outlives it.
        let byval = unsafe {
            pg_sys::getTypeOutputInfo(typid, &mut func, &mut is_varlena);
            pg_sys::fmgr_info_cxt(func, &mut *finfo, cxt);
            pg_sys::get_typbyval(typid)
        };
        OutputFn { finfo, memo: byval.then(|| RefCell::new(None)) }
    }

    pub(crate) fn forget(&self) {
        if let Some(m) = &self.memo {
            m.take();
        }
    }

    /// # Safety
    /// `datum` must be a valid non-null datum of the type.
    unsafe fn push(&self, out: &mut Vec<u8>, datum: pg_sys::Datum) {
        // SAFETY: as required by this function.
        unsafe { self.push_with(out, datum, |_| false) }
    }

    /// `push`, where `fast` writes the JSON when it can (returning true) and
    /// writes nothing otherwise; the output function is called only then.
    ///
    /// # Safety
    /// As for `push`.
    unsafe fn push_with(&self, out: &mut Vec<u8>, datum: pg_sys::Datum, fast: impl FnOnce(&mut Vec<u8>) -> bool) {
        let Some(memo) = &self.memo else {
            if !fast(out) {
                // SAFETY: as required by this function.
                unsafe { self.render(out, datum) };
            }
            return;
        };
        let mut m = memo.borrow_mut();
        if let Some((d, json)) = m.as_ref()
            && *d == datum.value()
        {
            limit::reserve(out, json.len());
            out.extend_from_slice(json);
            return;
        }
        let mut json = m.take().map(|(_, v)| v).unwrap_or_default();
        json.clear();
        if !fast(&mut json) {
            // SAFETY: as required by this function.
            unsafe { self.render(&mut json, datum) };
        }
        limit::reserve(out, json.len());
        out.extend_from_slice(&json);
        *m = Some((datum.value(), json));
    }

    /// # Safety
    /// As for `push`.
    unsafe fn render(&self, out: &mut Vec<u8>, datum: pg_sys::Datum) {
        let finfo = &*self.finfo as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo;
        // SAFETY: finfo was set up by fmgr_info_cxt for this type's output
        // function; the result is a palloc'd C string.
        let s = unsafe { CStr::from_ptr(pg_sys::OutputFunctionCall(finfo, datum)) };
        limit::reserve(out, json::str_len_bound(s.to_bytes()));
        json::push_str(out, s.to_bytes());
    }
}
