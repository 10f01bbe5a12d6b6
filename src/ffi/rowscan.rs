//! Stream a query's rows to a Rust callback as canonical bytes, without an
//! SPI tuple table and without text conversion where it is not needed (the
//! reconciliation digests, `reconcile/`, hash millions of rows a second).
//!
//! How: the query runs through `SPI_execute_plan_extended` with a
//! `DestReceiver` of ours, so the executor hands each row's slot straight to
//! [`receive`]; nothing is copied or accumulated. Each column becomes bytes
//! in one of two ways, chosen by the caller per column:
//! * binary — the value's own bytes in a canonical, machine-independent
//!   form (integers big-endian, NaN folded to one pattern, varlenas
//!   de-TOASTed and without header), only for the built-in types listed in
//!   [`binary_supported`], whose stored form is exactly their value;
//! * text — the type's output function's text (no quoting: the framing
//!   below keeps values apart).
//!
//! A row's bytes: per column `0x00` (NULL) or `0x01`, a 4-byte big-endian
//! length and the value's bytes, so no two rows share an encoding.
//!
//! Memory: every row's allocations (de-TOASTed values, output texts) go to a
//! context reset after the row; the switch into it is undone by a guard,
//! also on ERROR. Errors are PostgreSQL ERRORs (the caller's transaction or
//! subtransaction handles them); the receiver callbacks are `#[pg_guard]`ed.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// Built-in types whose binary form is compared as is (pg_type OIDs; stable
/// since they are fixed at initdb). Everything else is compared as text.
pub(crate) fn binary_supported(type_oid: u32) -> bool {
    matches!(
        type_oid,
        16      // bool
        | 17    // bytea
        | 18    // "char"
        | 19    // name
        | 20    // int8
        | 21    // int2
        | 23    // int4
        | 25    // text
        | 26    // oid
        | 114   // json (its text)
        | 700   // float4
        | 701   // float8
        | 790   // money
        | 1042  // bpchar (padded as stored)
        | 1043  // varchar
        | 1082  // date
        | 1083  // time
        | 1114  // timestamp
        | 1184  // timestamptz (no TimeZone in it, unlike its text)
        | 1186  // interval
        | 1266  // timetz
        | 1700  // numeric (canonical form: ffi::numeric::push_canonical)
        | 2950 // uuid
    )
}

/// Which rows' key columns to return as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyTexts {
    None,
    /// Every row's.
    Every,
    /// Only the n-th row's (1-based): the last row of a `LIMIT n` read.
    AtRow(u64),
}

/// One query to stream.
pub(crate) struct RowScan<'a> {
    /// A SELECT whose parameters `$1..` are texts.
    pub(crate) sql: &'a str,
    pub(crate) args: &'a [String],
    /// Per output column: compare its binary form (else its text).
    pub(crate) binary: &'a [bool],
    /// Output columns (0-based) forming the key, for [`KeyTexts`].
    pub(crate) key_columns: &'a [usize],
    pub(crate) key_texts: KeyTexts,
}

/// What receives each row: its canonical bytes, and its key texts when
/// [`KeyTexts`] asks for them.
pub(crate) type OnRow<'f> = dyn FnMut(&[u8], Option<Vec<String>>) + 'f;

/// How one column is turned into bytes.
#[derive(Clone, Copy)]
enum Form {
    /// Pass-by-value of this width: its integer bits, big-endian.
    ByVal(usize),
    /// float4/float8 (by value): bits big-endian, every NaN the same.
    Float(usize),
    /// Fixed-length by reference (uuid, name, interval, timetz, ...).
    Fixed(Fixed),
    /// A varlena: its de-TOASTed data.
    Varlena,
    /// A numeric, in the canonical form of `ffi::numeric::push_canonical`
    /// (equal exactly when `numeric_out` prints the same text).
    Numeric,
    /// The output function's text.
    Text,
}

#[derive(Clone, Copy)]
enum Fixed {
    /// A uuid: its 16 bytes, in network order already.
    Uuid,
    /// An 8-byte integer passed by reference (builds without
    /// FLOAT8PASSBYVAL): big-endian, as its by-value form.
    Int8,
    /// A float8 passed by reference: as [`Form::Float`].
    Float8,
    /// A NUL-terminated name.
    Name,
    /// interval: time (i64), day (i32), month (i32), native-endian in store.
    Interval,
    /// timetz: time (i64), zone (i32).
    TimeTz,
}

struct Column {
    form: Form,
    output: pg_sys::FmgrInfo,
}

/// Our DestReceiver: PostgreSQL's struct first, then our state.
#[repr(C)]
struct Receiver<'a, 'f> {
    base: pg_sys::DestReceiver,
    state: *mut State<'a, 'f>,
}

struct State<'a, 'f> {
    scan: &'a RowScan<'a>,
    columns: Vec<Column>,
    row_cx: pg_sys::MemoryContext,
    buf: Vec<u8>,
    rows: u64,
    /// Set by [`startup`]: the executor ran the query into this receiver.
    started: bool,
    on_row: &'f mut OnRow<'f>,
}

/// Stream the rows of `scan` to `on_row(row bytes, key texts)`; the number
/// of rows.
pub(crate) fn scan(scan: &RowScan<'_>, on_row: &mut OnRow<'_>) -> u64 {
    let sql = CString::new(scan.sql).expect("no NUL in generated SQL");
    let args: Vec<CString> = scan.args.iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
    Spi::connect(|_| {
        // SAFETY: inside an SPI connection; the row context is a child of
        // the current one (freed with it on ERROR); the receiver and state
        // outlive the execution, which is synchronous.
        unsafe {
            let row_cx = super::new_memory_context(pg_sys::CurrentMemoryContext, c"logical_ext row scan");
            let mut state = State {
                scan,
                columns: Vec::new(),
                row_cx,
                buf: Vec::with_capacity(256),
                rows: 0,
                started: false,
                on_row,
            };
            let mut receiver = Receiver {
                base: pg_sys::DestReceiver {
                    receiveSlot: Some(receive),
                    rStartup: Some(startup),
                    rShutdown: Some(noop),
                    rDestroy: Some(noop),
                    mydest: pg_sys::CommandDest::DestNone,
                },
                state: &mut state,
            };
            let mut types = vec![pg_sys::TEXTOID; args.len()];
            let plan = pg_sys::SPI_prepare(sql.as_ptr(), args.len() as i32, types.as_mut_ptr());
            if plan.is_null() {
                let code = pg_sys::SPI_result;
                pgrx::error!("logical_ext: could not prepare a row scan (SPI code {code})");
            }
            let params = pg_sys::makeParamList(args.len() as i32);
            let slots = (*params).params.as_mut_slice(args.len());
            for (p, a) in slots.iter_mut().zip(&args) {
                *p = pg_sys::ParamExternData {
                    value: pg_sys::Datum::from(pg_sys::cstring_to_text(a.as_ptr())),
                    isnull: false,
                    pflags: pg_sys::PARAM_FLAG_CONST as u16,
                    ptype: pg_sys::TEXTOID,
                };
            }
            let options = pg_sys::SPIExecuteOptions {
                params,
                // A fresh snapshot for the statement (READ COMMITTED): the
                // publisher's read must see what committed before its lock.
                read_only: false,
                allow_nonatomic: false,
                must_return_tuples: false,
                tcount: 0,
                dest: (&mut receiver as *mut Receiver).cast(),
                owner: std::ptr::null_mut(),
            };
            let rc = pg_sys::SPI_execute_plan_extended(plan, &options);
            // SPI says "utility" for a SELECT whose receiver is not its own
            // (DestNone): the rows went to us.
            if !state.started || (rc != pg_sys::SPI_OK_SELECT as i32 && rc != pg_sys::SPI_OK_UTILITY as i32) {
                pgrx::error!("logical_ext: a row scan failed (SPI code {rc})");
            }
            pg_sys::MemoryContextDelete(state.row_cx);
            Ok::<_, pgrx::spi::SpiError>(state.rows)
        }
    })
    .expect("row scans report errors as ERRORs")
}

/// The state behind a receiver pointer.
///
/// # Safety
/// `dest` must be a `Receiver` built by [`scan`], still executing.
unsafe fn state_of<'r>(dest: *mut pg_sys::DestReceiver) -> &'r mut State<'r, 'r> {
    // SAFETY: per the contract, `dest` is the first field of a live Receiver.
    unsafe { &mut *(*dest.cast::<Receiver>()).state.cast() }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(dest: *mut pg_sys::DestReceiver, _op: i32, desc: pg_sys::TupleDesc) {
    // SAFETY: the executor passes our receiver and the result's descriptor.
    let (state, attrs) = unsafe { (state_of(dest), (*desc).attrs.as_slice((*desc).natts as usize)) };
    if attrs.len() != state.scan.binary.len() {
        pgrx::error!("logical_ext: a row scan returned {} columns, {} expected", attrs.len(), state.scan.binary.len());
    }
    state.started = true;
    state.columns = attrs
        .iter()
        .zip(state.scan.binary)
        .map(|(a, &binary)| {
            let form = if binary { binary_form(a) } else { Form::Text };
            let mut output = pg_sys::FmgrInfo::default();
            let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
            // SAFETY: a valid type OID of the result; fills local out-params.
            unsafe {
                pg_sys::getTypeOutputInfo(a.atttypid, &mut func, &mut varlena);
                pg_sys::fmgr_info(func, &mut output);
            }
            Column { form, output }
        })
        .collect();
}

/// The binary form of a supported type, decided by its storage.
fn binary_form(a: &pg_sys::FormData_pg_attribute) -> Form {
    let oid = a.atttypid.to_u32();
    if !binary_supported(oid) {
        pgrx::error!("logical_ext: type {oid} has no binary comparison form");
    }
    match (oid, a.attbyval, a.attlen) {
        (700 | 701, true, n @ (4 | 8)) => Form::Float(n as usize),
        (16 | 18 | 20 | 21 | 23 | 26 | 790 | 1082 | 1083 | 1114 | 1184, true, n @ (1 | 2 | 4 | 8)) => {
            Form::ByVal(n as usize)
        }
        (701, false, 8) => Form::Fixed(Fixed::Float8),
        (20 | 790 | 1083 | 1114 | 1184, false, 8) => Form::Fixed(Fixed::Int8),
        (19, false, _) => Form::Fixed(Fixed::Name),
        (1186, false, 16) => Form::Fixed(Fixed::Interval),
        (1266, false, 12) => Form::Fixed(Fixed::TimeTz),
        (2950, false, 16) => Form::Fixed(Fixed::Uuid),
        (1700, false, -1) => Form::Numeric,
        (17 | 25 | 114 | 1042 | 1043, false, -1) => Form::Varlena,
        _ => pgrx::error!("logical_ext: type {oid} is stored in an unexpected way"),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn receive(slot: *mut pg_sys::TupleTableSlot, dest: *mut pg_sys::DestReceiver) -> bool {
    // SAFETY: the executor passes our receiver and a valid slot.
    let state = unsafe { state_of(dest) };
    // SAFETY: the slot is valid; after slot_getallattrs, values and nulls
    // hold one entry per column.
    let (values, nulls) = unsafe {
        pg_sys::slot_getallattrs(slot);
        let n = state.columns.len();
        (std::slice::from_raw_parts((*slot).tts_values, n), std::slice::from_raw_parts((*slot).tts_isnull, n))
    };
    state.rows += 1;
    let _cx = SwitchedTo::new(state.row_cx);
    state.buf.clear();
    for (i, col) in state.columns.iter_mut().enumerate() {
        if nulls[i] {
            state.buf.push(0);
            continue;
        }
        state.buf.push(1);
        let at = state.buf.len();
        state.buf.extend_from_slice(&[0; 4]);
        // SAFETY: a non-NULL value of the column's type, as the form says.
        unsafe { append_value(&mut state.buf, col, values[i]) };
        let len = (state.buf.len() - at - 4) as u32;
        state.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    let keys = match state.scan.key_texts {
        KeyTexts::Every => true,
        KeyTexts::AtRow(n) => n == state.rows,
        KeyTexts::None => false,
    }
    .then(|| {
        state
            .scan
            .key_columns
            .iter()
            // SAFETY: key values are non-NULL (key columns are NOT NULL);
            // a NULL one reads as the empty text.
            .map(|&k| if nulls[k] { String::new() } else { unsafe { output_text(&mut state.columns[k], values[k]) } })
            .collect()
    });
    (state.on_row)(&state.buf, keys);
    drop(_cx);
    // SAFETY: our own context; nothing of this row is used after.
    unsafe { pg_sys::MemoryContextReset(state.row_cx) };
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn noop(_dest: *mut pg_sys::DestReceiver) {}

/// The value's output text.
///
/// # Safety
/// `v` is a non-NULL value of the column's type.
unsafe fn output_text(col: &mut Column, v: pg_sys::Datum) -> String {
    // SAFETY: per the contract; the text is palloc'd in the row context.
    let text = unsafe { CStr::from_ptr(pg_sys::OutputFunctionCall(&mut col.output, v)) };
    // Key texts become bounds of the next chunk: a lossy conversion would
    // make a bound that is not the key, and rows between the two would be
    // in no chunk at all.
    match text.to_str() {
        Ok(t) => t.to_owned(),
        Err(_) => super::fail(
            pgrx::PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "a key value is not valid UTF-8",
            "Reconciliation names keys by their text, which must be UTF-8: verify tables whose keys are ASCII, or use a UTF8 database.",
        ),
    }
}

/// Append the value's output text (no UTF-8 check: its bytes are hashed).
///
/// # Safety
/// `v` is a non-NULL value of the column's type.
unsafe fn append_output(buf: &mut Vec<u8>, col: &mut Column, v: pg_sys::Datum) {
    // SAFETY: per the contract; the text is palloc'd in the row context.
    buf.extend_from_slice(unsafe { CStr::from_ptr(pg_sys::OutputFunctionCall(&mut col.output, v)) }.to_bytes());
}

/// Append the canonical bytes of `v`.
///
/// # Safety
/// `v` is a non-NULL value of the column's type, whose form was chosen by
/// [`binary_form`] from the same attribute.
unsafe fn append_value(buf: &mut Vec<u8>, col: &mut Column, v: pg_sys::Datum) {
    match col.form {
        Form::ByVal(n) => {
            let bits = v.value() as u64;
            buf.extend_from_slice(&bits.to_be_bytes()[8 - n.min(8)..]);
        }
        Form::Float(4) => {
            let f = f32::from_bits(v.value() as u32);
            let bits = if f.is_nan() { u32::MAX } else { f.to_bits() };
            buf.extend_from_slice(&bits.to_be_bytes());
        }
        Form::Float(_) => {
            let f = f64::from_bits(v.value() as u64);
            let bits = if f.is_nan() { u64::MAX } else { f.to_bits() };
            buf.extend_from_slice(&bits.to_be_bytes());
        }
        Form::Fixed(fixed) => {
            let p = v.cast_mut_ptr::<u8>();
            // SAFETY: a by-reference value of the type's fixed length.
            unsafe {
                match fixed {
                    Fixed::Uuid => buf.extend_from_slice(std::slice::from_raw_parts(p, 16)),
                    Fixed::Int8 => buf.extend_from_slice(&p.cast::<i64>().read_unaligned().to_be_bytes()),
                    Fixed::Float8 => {
                        let f = p.cast::<f64>().read_unaligned();
                        let bits = if f.is_nan() { u64::MAX } else { f.to_bits() };
                        buf.extend_from_slice(&bits.to_be_bytes());
                    }
                    Fixed::Name => buf.extend_from_slice(CStr::from_ptr(p.cast()).to_bytes()),
                    Fixed::Interval => {
                        let i = p.cast::<pg_sys::Interval>().read_unaligned();
                        buf.extend_from_slice(&i.time.to_be_bytes());
                        buf.extend_from_slice(&i.day.to_be_bytes());
                        buf.extend_from_slice(&i.month.to_be_bytes());
                    }
                    Fixed::TimeTz => {
                        // 12 bytes stored (time, zone): not a whole
                        // 16-byte TimeTzADT, so read the fields.
                        buf.extend_from_slice(&p.cast::<i64>().read_unaligned().to_be_bytes());
                        buf.extend_from_slice(&p.add(8).cast::<i32>().read_unaligned().to_be_bytes());
                    }
                }
            }
        }
        Form::Varlena => {
            // SAFETY: a varlena value; de-TOASTed into the row context.
            unsafe {
                let p = pg_sys::pg_detoast_datum_packed(v.cast_mut_ptr());
                let len = pgrx::varlena::varsize_any_exhdr(p);
                buf.extend_from_slice(std::slice::from_raw_parts(pgrx::varlena::vardata_any(p).cast::<u8>(), len));
            }
        }
        Form::Numeric => {
            // SAFETY: a numeric (varlena) value; de-TOASTed into the row context.
            let data = unsafe {
                let p = pg_sys::pg_detoast_datum_packed(v.cast_mut_ptr());
                std::slice::from_raw_parts(
                    pgrx::varlena::vardata_any(p).cast::<u8>(),
                    pgrx::varlena::varsize_any_exhdr(p),
                )
            };
            if super::numeric::push_canonical(buf, data).is_none() {
                // Not the layout we know: numeric_out decides (after a kind
                // byte no canonical form starts with).
                buf.push(0xFF);
                // SAFETY: per the contract.
                unsafe { append_output(buf, col, v) };
            }
        }
        // SAFETY: per the contract.
        Form::Text => unsafe { append_output(buf, col, v) },
    }
}

/// `CurrentMemoryContext` switched to a context until dropped (also when
/// an ERROR unwinds through the holder).
struct SwitchedTo(pg_sys::MemoryContext);

impl SwitchedTo {
    fn new(cx: pg_sys::MemoryContext) -> SwitchedTo {
        // SAFETY: `cx` is a live context of ours.
        SwitchedTo(unsafe { pg_sys::MemoryContextSwitchTo(cx) })
    }
}

impl Drop for SwitchedTo {
    fn drop(&mut self) {
        // SAFETY: the context that was current before, still live.
        unsafe { pg_sys::MemoryContextSwitchTo(self.0) };
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    fn rows(sql: &str, binary: &[bool]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let s = RowScan { sql, args: &[], binary, key_columns: &[0], key_texts: KeyTexts::None };
        scan(&s, &mut |b, _| out.push(b.to_vec()));
        out
    }

    #[pg_test]
    fn binary_forms_are_canonical() {
        // int4 5: flag, length 4, big-endian value; NULL: one zero byte.
        assert_eq!(rows("SELECT 5::int4, NULL::text", &[true, true]), vec![vec![1, 0, 0, 0, 4, 0, 0, 0, 5, 0]]);
        // Every NaN is the same; -0 and 0 differ (as their texts do).
        let nan = rows("SELECT 'NaN'::float8", &[true]);
        assert_eq!(nan, rows("SELECT ('Infinity'::float8 - 'Infinity'::float8)", &[true]));
        assert_ne!(rows("SELECT '-0'::float8", &[true]), rows("SELECT '0'::float8", &[true]));
        // A TOASTed (compressed) text and a plain one of the same value.
        Spi::run("CREATE TEMP TABLE long_text (t text)").unwrap();
        Spi::run("INSERT INTO long_text SELECT repeat('ab', 100000)").unwrap();
        assert_eq!(rows("SELECT t FROM long_text", &[true]), rows("SELECT repeat('ab', 100000)", &[true]));
        // timestamptz binary does not depend on TimeZone; its text does.
        Spi::run("SET LOCAL TimeZone = 'UTC'").unwrap();
        let utc = rows("SELECT '2026-01-01 00:00+00'::timestamptz", &[true]);
        let utc_text = rows("SELECT '2026-01-01 00:00+00'::timestamptz", &[false]);
        Spi::run("SET LOCAL TimeZone = 'Asia/Tokyo'").unwrap();
        assert_eq!(utc, rows("SELECT '2026-01-01 00:00+00'::timestamptz", &[true]));
        assert_ne!(utc_text, rows("SELECT '2026-01-01 00:00+00'::timestamptz", &[false]));
        // Text form: the output function.
        assert_eq!(rows("SELECT 1.50::numeric", &[false]), vec![[vec![1, 0, 0, 0, 4], b"1.50".to_vec()].concat()]);
        // numeric: equal texts, equal bytes, whatever produced the value.
        assert_eq!(rows("SELECT 1.50::numeric", &[true]), rows("SELECT (3.00 / 2)::numeric(10, 2)", &[true]));
        assert_ne!(rows("SELECT 1.50::numeric", &[true]), rows("SELECT 1.5::numeric", &[true]));
        assert_eq!(rows("SELECT 0::numeric", &[true]), rows("SELECT (1.0 - 1.0)::numeric(5, 0)", &[true]));
        assert_eq!(rows("SELECT 'NaN'::numeric", &[true]), vec![vec![1, 0, 0, 0, 1, 2]]);
    }

    /// For every type read in binary: two values get the same bytes exactly
    /// when their output texts are the same.
    #[pg_test]
    fn binary_bytes_agree_with_texts() {
        let pairs = [
            ("true", "false", "bool"),
            ("'a'", "'a'", "\"char\""),
            ("'ab'", "'ab '", "name"),
            ("-1", "32767", "int2"),
            ("-1", "-1", "int4"),
            ("9007199254740993", "9007199254740992", "int8"),
            ("'1.5'", "'1.50'", "float4"),
            ("'NaN'", "'NaN'", "float8"),
            ("'$1.00'", "'$1.00'", "money"),
            ("'x'", "'x'", "text"),
            ("'x'", "'x '", "varchar(4)"),
            ("'x'", "'x '", "char(4)"),
            ("'\\x00ff'", "'\\x00ff'", "bytea"),
            ("'{\"a\": 1}'", "'{\"a\":1}'", "json"),
            ("'2026-01-01'", "'2026-01-02'", "date"),
            ("'12:00'", "'12:00:00'", "time"),
            ("'12:00+02'", "'12:00+03'", "timetz"),
            ("'2026-01-01 00:00'", "'2026-01-01 00:00:00'", "timestamp"),
            ("'2026-01-01 00:00+00'", "'2026-01-01 02:00+02'", "timestamptz"),
            ("'1 day'", "'24 hours'", "interval"),
            ("'1 mon'", "'1 mon'", "interval"),
            ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "uuid"),
            ("'1.10'", "'1.1'", "numeric"),
            ("'-0.001'", "'-0.00'", "numeric(5, 2)"),
            ("'1e3'", "'1000'", "numeric"),
        ];
        for (a, b, ty) in pairs {
            let sql = format!("SELECT {a}::{ty}, {b}::{ty}");
            let bin = rows(&sql, &[true, true]).remove(0);
            let text = rows(&sql, &[false, false]).remove(0);
            // Each row is two framed values: split them back.
            let split = |r: &[u8]| {
                let n = u32::from_be_bytes(r[1..5].try_into().unwrap()) as usize;
                (r[..5 + n].to_vec(), r[5 + n..].to_vec())
            };
            let (ba, bb) = split(&bin);
            let (ta, tb) = split(&text);
            assert_eq!(ba == bb, ta == tb, "{sql}: binary and text disagree");
        }
    }

    #[pg_test]
    fn key_texts_of_every_row_or_one() {
        let mut keys = Vec::new();
        let s = RowScan {
            sql: "SELECT g, 'x' FROM generate_series(1, $1::int) g",
            args: &["3".to_string()],
            binary: &[true, true],
            key_columns: &[0],
            key_texts: KeyTexts::AtRow(3),
        };
        assert_eq!(scan(&s, &mut |_, k| keys.push(k)), 3);
        assert_eq!(keys, vec![None, None, Some(vec!["3".to_string()])]);
    }

    #[pg_test]
    #[should_panic(expected = "no binary comparison form")]
    fn unsupported_binary_is_refused() {
        rows("SELECT '{}'::jsonb", &[true]);
    }
}
