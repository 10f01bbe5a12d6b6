//! What the stream needs to know about a relation to print its rows: names,
//! columns, how each value is rendered, replica identity and primary key.
//!
//! A [`Shape`] is built once per relation (per decoding session) and kept in
//! the cache of `stream.rs` until a relcache invalidation for that relation is
//! replayed — that is how an `ALTER TABLE` in the middle of the stream shows up
//! exactly at its position. Everything constant for a column (its
//! `{"name":…,"type":…,"value":` prefix) is rendered here, once.

use super::json;
use super::options::{FormatVersion, Options};
use super::values::OutputFn;
use crate::ffi;
use pgrx::pg_sys;

/// How a column's values are turned into JSON. Common types are rendered
/// directly from the datum; every other type goes through its output function.
pub(crate) enum ValueKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// text, varchar, bpchar, json: the stored bytes are the text output.
    Text,
    Name,
    /// `"\\x0a0b"`: PostgreSQL's hex text (the stream of logical_ext
    /// subscribers: format-version 2 with `publication_names`).
    Bytea,
    /// `"0a0b"`: the hex digits alone, as wal2json prints bytea.
    ByteaDigits,
    /// `numeric` and `jsonb`: their output function's text, quoted,
    /// written from the stored bytes; the function is the fallback.
    Numeric(OutputFn),
    Jsonb(OutputFn),
    /// `timestamptz` and `timestamp`: their output function's text,
    /// quoted, written from `timestamp2tm`'s fields under `DateStyle` ISO;
    /// the function otherwise.
    Timestamptz(OutputFn),
    Timestamp(OutputFn),
    Output(OutputFn),
}

pub(crate) struct Column {
    /// 0-based index in the tuple descriptor.
    pub(crate) index: usize,
    pub(crate) name: String,
    /// `{"name":…[,"type":…][,"typeoid":…],"value":`
    pub(crate) head: Vec<u8>,
    /// `{"name":…[,"type":…][,"typeoid":…]}` for the `pk` array.
    pub(crate) pk_item: Vec<u8>,
    /// What follows the value in `columns` (v2): `[,"optional":…]
    /// [,"position":…][,"default":…]}`.
    pub(crate) tail: Vec<u8>,
    /// The column's name as a JSON string.
    pub(crate) name_json: Vec<u8>,
    /// The type name as a JSON string, by wal2json's rules for the format
    /// version (typmod, domain base type, quoted names unquoted).
    pub(crate) type_json: Vec<u8>,
    /// The type OID printed with `include-type-oids`.
    pub(crate) typeoid: u32,
    pub(crate) attnum: i16,
    pub(crate) not_null: bool,
    /// The default expression as a JSON string, or `null`.
    pub(crate) default_json: Vec<u8>,
    pub(crate) kind: ValueKind,
    /// varlena: may be an unchanged TOAST pointer in an UPDATE.
    pub(crate) varlena: bool,
    pub(crate) in_identity_key: bool,
    pub(crate) in_pk: bool,
}

/// (xid, relation-document epoch, column mask) of the streamed
/// transaction a shape's relation document was last written in a block of.
pub(crate) type StreamSent = (u32, u64, Option<Vec<bool>>);

pub(crate) struct Shape {
    pub(crate) schema: String,
    pub(crate) table: String,
    /// `[,"schema":…],"table":…`
    pub(crate) names: Vec<u8>,
    /// Live columns in attribute order (dropped ones are left out).
    pub(crate) columns: Vec<Column>,
    /// Attributes in the tuple descriptor, dropped ones included.
    pub(crate) natts: usize,
    /// A copy of the descriptor (with missing-value defaults), in `cxt`.
    pub(crate) desc: pg_sys::TupleDesc,
    /// REPLICA IDENTITY FULL: the old row holds every column.
    pub(crate) identity_full: bool,
    /// A primary key or identity index exists.
    pub(crate) has_identity_key: bool,
    /// A primary key exists.
    pub(crate) has_pk: bool,
    /// REPLICA IDENTITY DEFAULT (wal2json 2.5's v1 prints `pk` only then).
    pub(crate) identity_default: bool,
    /// The WARNING for an UPDATE/DELETE without replica identity was given.
    pub(crate) warned_no_identity: std::cell::Cell<bool>,
    /// Option `compact`: the column mask this shape's relation document was
    /// sent with in this session (`None`: not sent yet). A rebuilt shape
    /// (the relation's invalidation) starts unsent, so it is sent again.
    pub(crate) compact_sent: std::cell::RefCell<Option<Option<Vec<bool>>>>,
    /// The same for the blocks of a streamed transaction, which track it
    /// apart from the session (`stream.rs` `write_compact`): the (xid,
    /// relation-document epoch, column mask) it was last sent for.
    pub(crate) compact_stream_sent: std::cell::RefCell<Option<StreamSent>>,
    /// Everything PostgreSQL allocated for this shape (the descriptor copy,
    /// output-function state): deleted with the shape, so a rebuilt shape
    /// leaves nothing behind. Declared last: dropped after the fields that
    /// point into it.
    _cxt: ffi::OwnedContext,
}

impl Shape {
    /// Build the shape of `rel` for the options of this session.
    /// Long-lived state is allocated in a context of its own under
    /// `parent`, which must outlive the shape; scratch allocations go to the
    /// current memory context.
    ///
    /// # Safety
    /// `rel` must be an open relation.
    pub(crate) unsafe fn build(rel: pg_sys::Relation, opts: &Options, parent: pg_sys::MemoryContext) -> Shape {
        let cxt = ffi::OwnedContext::new(parent, c"logical_ext shape");
        let fn_cxt = cxt.get();
        // SAFETY: an open relation has valid rd_rel and rd_att.
        let (form, desc) = unsafe { (&*(*rel).rd_rel, (*rel).rd_att) };
        let schema = ffi::namespace_name(form.relnamespace);
        // SAFETY: relname is a NUL-terminated NameData.
        let table = unsafe { ffi::cstr_to_string(form.relname.data.as_ptr()) };
        let mut names = Vec::new();
        if opts.include_schemas {
            names.extend_from_slice(b",\"schema\":");
            json::push_str(&mut names, schema.as_bytes());
        }
        names.extend_from_slice(b",\"table\":");
        json::push_str(&mut names, table.as_bytes());

        // Without locking the indexes (not RelationGetIndexAttrBitmap): the
        // table may be locked by the transaction being decoded (see
        // ffi/index_keys.rs).
        // SAFETY: rel is open and we run inside a decoding callback; the
        // bitmaps are palloc'd in the current context.
        let (identity, pk) = unsafe {
            (
                ffi::index_keys::key_columns(rel, ffi::index_keys::KeyIndex::ReplicaIdentity),
                ffi::index_keys::key_columns(rel, ffi::index_keys::KeyIndex::Primary),
            )
        };
        // SAFETY: desc is the relation's valid tuple descriptor.
        let natts = unsafe { (*desc).natts } as usize;
        let mut columns = Vec::with_capacity(natts);
        for index in 0..natts {
            // SAFETY: index < natts.
            let att = unsafe { &*(*desc).attrs.as_ptr().add(index) };
            if att.attisdropped {
                continue;
            }
            let member = |set: *mut pg_sys::Bitmapset| {
                // SAFETY: bms_is_member accepts NULL (empty) sets.
                unsafe { pg_sys::bms_is_member(att.attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber, set) }
            };
            // SAFETY: attname is a NUL-terminated NameData.
            let name = unsafe { ffi::cstr_to_string(att.attname.data.as_ptr()) };
            let mut name_json = Vec::new();
            json::push_str(&mut name_json, name.as_bytes());
            // SAFETY: a live column's valid type.
            let (type_text, typeoid) = unsafe { wal2json_type(att.atttypid, att.atttypmod, opts) };
            let mut type_json = Vec::new();
            json::push_str(&mut type_json, unquote_type_name(&type_text).as_bytes());
            let not_null = att.attnotnull;
            let default_json = if opts.include_default {
                // SAFETY: rel is open; index is a live column of it.
                match unsafe { default_expr(rel, att) } {
                    Some(expr) => {
                        let mut v = Vec::new();
                        json::push_str(&mut v, expr.as_bytes());
                        v
                    }
                    None => b"null".to_vec(),
                }
            } else {
                Vec::new()
            };
            let mut item = Vec::with_capacity(64);
            item.extend_from_slice(b"{\"name\":");
            item.extend_from_slice(&name_json);
            if opts.include_types {
                item.extend_from_slice(b",\"type\":");
                item.extend_from_slice(&type_json);
            }
            if opts.include_type_oids {
                item.extend_from_slice(b",\"typeoid\":");
                json::push_int(&mut item, u32::from(att.atttypid) as i64);
            }
            let mut pk_item = item.clone();
            pk_item.push(b'}');
            item.extend_from_slice(b",\"value\":");
            let mut tail = Vec::new();
            if opts.include_not_null {
                tail.extend_from_slice(if not_null { b",\"optional\":false" } else { b",\"optional\":true" });
            }
            if opts.include_column_positions {
                tail.extend_from_slice(b",\"position\":");
                json::push_int(&mut tail, att.attnum as i64);
            }
            if opts.include_default {
                tail.extend_from_slice(b",\"default\":");
                tail.extend_from_slice(&default_json);
            }
            tail.push(b'}');
            columns.push(Column {
                index,
                name,
                head: item,
                pk_item,
                tail,
                name_json,
                type_json,
                typeoid,
                attnum: att.attnum,
                not_null,
                default_json,
                // SAFETY: atttypid is a valid type of a live column.
                kind: unsafe { value_kind(att.atttypid, opts, fn_cxt) },
                varlena: att.attlen == -1,
                in_identity_key: member(identity),
                in_pk: member(pk),
            });
        }
        let desc = {
            let _cx = ffi::ContextSwitch::to(fn_cxt);
            // SAFETY: desc is valid; the copy lives in the shape's context.
            unsafe { pg_sys::CreateTupleDescCopyConstr(desc) }
        };
        Shape {
            desc,
            schema,
            table,
            names,
            columns,
            natts,
            identity_full: form.relreplident as u8 == pg_sys::REPLICA_IDENTITY_FULL,
            // SAFETY: bms_is_empty accepts NULL.
            has_identity_key: !unsafe { pg_sys::bms_is_empty(identity) },
            // SAFETY: bms_is_empty accepts NULL.
            has_pk: !unsafe { pg_sys::bms_is_empty(pk) },
            warned_no_identity: std::cell::Cell::new(false),
            compact_sent: std::cell::RefCell::new(None),
            compact_stream_sent: std::cell::RefCell::new(None),
            identity_default: form.relreplident as u8 == pg_sys::REPLICA_IDENTITY_DEFAULT,
            _cxt: cxt,
        }
    }
}

/// The type name and OID wal2json prints for a column of type `typid`
/// (modifier `typmod`):
/// - format-version 2 always prints `format_type` with the modifier
///   (wal2json 2.x ignores `include-typmod` there); v1 prints the bare
///   `pg_type.typname` (`int4`, `varchar`) when `include-typmod` is off;
/// - with `include-domain-data-type` a domain is printed as its base type
///   with the domain's own modifier, and v1 then also prints the base type's
///   OID.
///
/// # Safety
/// `typid` must be a valid type OID.
unsafe fn wal2json_type(typid: pg_sys::Oid, typmod: i32, opts: &Options) -> (String, u32) {
    // SAFETY: valid type OIDs; the results are palloc'd C strings.
    unsafe {
        let (mut shown, mut shown_mod) = (typid, typmod);
        let domain = pg_sys::get_typtype(typid) as u8 == pg_sys::TYPTYPE_DOMAIN;
        if domain && opts.include_domain_data_type {
            let mut base_mod = -1;
            // The domain's direct base (getBaseTypeAndTypmod resolves a
            // chain, as wal2json's typbasetype does for a single level).
            shown = pg_sys::getBaseTypeAndTypmod(typid, &mut base_mod);
            shown_mod = base_mod;
        }
        let v1 = opts.format_version == FormatVersion::V1;
        let text = if v1 && !opts.include_typmod {
            raw_type_name(shown)
        } else {
            ffi::cstr_to_string(pg_sys::format_type_with_typemod(shown, shown_mod))
        };
        let oid = if v1 && opts.include_types { shown } else { typid };
        (text, u32::from(oid))
    }
}

/// `pg_type.typname` of a valid type (empty if it vanished).
///
/// # Safety
/// Inside a transaction (catalog access).
unsafe fn raw_type_name(typid: pg_sys::Oid) -> String {
    // SAFETY: a syscache lookup whose tuple is released after copying the
    // name out of its fixed-size NameData.
    unsafe {
        let tup = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::TYPEOID as i32, pg_sys::Datum::from(typid));
        if tup.is_null() {
            return String::new();
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_type>(tup);
        let name = ffi::cstr_to_string((*form).typname.data.as_ptr());
        pg_sys::ReleaseSysCache(tup);
        name
    }
}

/// wal2json prints a type name that `format_type` double-quoted (`"char"`,
/// a type named `"My Type"`) without the quotes, unless it is an array of one.
fn unquote_type_name(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        std::borrow::Cow::Owned(s[1..s.len() - 1].replace("\"\"", "\""))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The column's default expression as `pg_get_expr` prints it, or `None`
/// (no default, or a generated column), for `include-default`.
///
/// # Safety
/// `rel` must be open and `att` one of its attributes.
unsafe fn default_expr(rel: pg_sys::Relation, att: &pg_sys::FormData_pg_attribute) -> Option<String> {
    if !att.atthasdef || att.attgenerated != 0 {
        return None;
    }
    // SAFETY: rd_att->constr lists the relation's defaults (adbin is the
    // node string pg_get_expr reads); pg_get_expr returns a text datum.
    unsafe {
        let constr = (*(*rel).rd_att).constr;
        if constr.is_null() {
            return None;
        }
        let defs = std::slice::from_raw_parts((*constr).defval, (*constr).num_defval as usize);
        let def = defs.iter().find(|d| d.adnum == att.attnum)?;
        // Relation 0, not the table's OID: with an OID pg_get_expr opens the
        // table with AccessShareLock (to name its columns), which waits
        // behind a transaction holding the table in ACCESS EXCLUSIVE mode —
        // possibly the one being decoded. A column default cannot refer to
        // columns (generated columns were left out above), so there is
        // nothing to name and the text is the same.
        let expr = pg_sys::OidFunctionCall2Coll(
            pg_sys::F_PG_GET_EXPR_PG_NODE_TREE_OID,
            pg_sys::InvalidOid,
            pg_sys::Datum::from(pg_sys::cstring_to_text(def.adbin)),
            pg_sys::Datum::from(pg_sys::InvalidOid),
        );
        Some(ffi::cstr_to_string(pg_sys::text_to_cstring(expr.cast_mut_ptr())))
    }
}

/// # Safety
/// `typid` must be a valid type OID; `fn_cxt` a live memory context.
unsafe fn value_kind(typid: pg_sys::Oid, opts: &Options, fn_cxt: pg_sys::MemoryContext) -> ValueKind {
    // SAFETY: getBaseType accepts any type OID (domains resolve to their base).
    let base = unsafe { pg_sys::getBaseType(typid) };
    // wal2json renders a domain's value as a string of its text (a domain
    // over integer gives "3"), except in format-version 1 with
    // include-domain-data-type (and types), where it treats it as the base
    // type: same text, so we follow it.
    let as_base = opts.format_version == FormatVersion::V1 && opts.include_domain_data_type && opts.include_types;
    let numeric =
        [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID, pg_sys::OIDOID, pg_sys::FLOAT4OID, pg_sys::FLOAT8OID];
    if (base != typid && !as_base) || (opts.numeric_data_types_as_string && numeric.contains(&base)) {
        // `numeric-data-types-as-string`: PostgreSQL's text, quoted.
        // SAFETY: as required by this function.
        return ValueKind::Output(unsafe { OutputFn::new(typid, fn_cxt) });
    }
    match base {
        pg_sys::BOOLOID => ValueKind::Bool,
        pg_sys::INT2OID => ValueKind::Int2,
        pg_sys::INT4OID => ValueKind::Int4,
        pg_sys::INT8OID => ValueKind::Int8,
        pg_sys::OIDOID => ValueKind::Oid,
        pg_sys::FLOAT4OID => ValueKind::Float4,
        pg_sys::FLOAT8OID => ValueKind::Float8,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID | pg_sys::JSONOID => ValueKind::Text,
        pg_sys::NAMEOID => ValueKind::Name,
        // wal2json's bare hex digits, except for logical_ext subscribers
        // (Options::bytea_prefix).
        pg_sys::BYTEAOID if opts.bytea_prefix() => ValueKind::Bytea,
        pg_sys::BYTEAOID => ValueKind::ByteaDigits,
        // SAFETY (both): as required by this function.
        pg_sys::NUMERICOID => ValueKind::Numeric(unsafe { OutputFn::new(typid, fn_cxt) }),
        pg_sys::JSONBOID => ValueKind::Jsonb(unsafe { OutputFn::new(typid, fn_cxt) }),
        // SAFETY (both): as required by this function.
        pg_sys::TIMESTAMPTZOID => ValueKind::Timestamptz(unsafe { OutputFn::new(typid, fn_cxt) }),
        pg_sys::TIMESTAMPOID => ValueKind::Timestamp(unsafe { OutputFn::new(typid, fn_cxt) }),
        // SAFETY: as required by this function.
        _ => ValueKind::Output(unsafe { OutputFn::new(typid, fn_cxt) }),
    }
}

impl Shape {
    /// Drop the remembered renderings of output functions (see [`OutputFn`]).
    pub(crate) fn forget_memos(&self) {
        for c in &self.columns {
            if let ValueKind::Output(f)
            | ValueKind::Numeric(f)
            | ValueKind::Jsonb(f)
            | ValueKind::Timestamptz(f)
            | ValueKind::Timestamp(f) = &c.kind
            {
                f.forget();
            }
        }
    }
}
