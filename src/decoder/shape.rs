//! What the stream needs to know about a relation to print its rows: names,
//! columns, how each value is rendered, replica identity and primary key.
//!
//! A [`Shape`] is built once per relation (per decoding session) and kept in
//! the cache of `stream.rs` until a relcache invalidation for that relation is
//! replayed — that is how an `ALTER TABLE` in the middle of the stream shows up
//! exactly at its position. Everything constant for a column (its
//! `{"name":…,"type":…,"value":` prefix) is rendered here, once.

use super::json;
use super::options::Options;
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
    Bytea,
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
    pub(crate) kind: ValueKind,
    /// varlena: may be an unchanged TOAST pointer in an UPDATE.
    pub(crate) varlena: bool,
    pub(crate) in_identity_key: bool,
    pub(crate) in_pk: bool,
}

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

        // SAFETY: the bitmaps are palloc'd copies in the current context.
        let (identity, pk) = unsafe {
            (
                pg_sys::RelationGetIndexAttrBitmap(rel, pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_IDENTITY_KEY),
                pg_sys::RelationGetIndexAttrBitmap(rel, pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_PRIMARY_KEY),
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
            let mut item = Vec::with_capacity(64);
            item.extend_from_slice(b"{\"name\":");
            json::push_str(&mut item, name.as_bytes());
            if opts.include_types {
                item.extend_from_slice(b",\"type\":");
                json::push_str(&mut item, type_name(att.atttypid, att.atttypmod, opts.include_typmod).as_bytes());
            }
            if opts.include_type_oids {
                item.extend_from_slice(b",\"typeoid\":");
                json::push_int(&mut item, u32::from(att.atttypid) as i64);
            }
            let mut pk_item = item.clone();
            pk_item.push(b'}');
            item.extend_from_slice(b",\"value\":");
            columns.push(Column {
                index,
                name,
                head: item,
                pk_item,
                // SAFETY: atttypid is a valid type of a live column.
                kind: unsafe { value_kind(att.atttypid, fn_cxt) },
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
            _cxt: cxt,
        }
    }
}

fn type_name(typid: pg_sys::Oid, typmod: i32, with_typmod: bool) -> String {
    // SAFETY: both return a palloc'd C string for any valid type OID.
    unsafe {
        ffi::cstr_to_string(if with_typmod {
            pg_sys::format_type_with_typemod(typid, typmod)
        } else {
            pg_sys::format_type_be(typid)
        })
    }
}

/// # Safety
/// `typid` must be a valid type OID; `fn_cxt` a live memory context.
unsafe fn value_kind(typid: pg_sys::Oid, fn_cxt: pg_sys::MemoryContext) -> ValueKind {
    // SAFETY: getBaseType accepts any type OID (domains resolve to their base).
    let base = unsafe { pg_sys::getBaseType(typid) };
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
        pg_sys::BYTEAOID => ValueKind::Bytea,
        // SAFETY: as required by this function.
        _ => ValueKind::Output(unsafe { OutputFn::new(typid, fn_cxt) }),
    }
}

impl Shape {
    /// Drop the remembered renderings of output functions (see [`OutputFn`]).
    pub(crate) fn forget_memos(&self) {
        for c in &self.columns {
            if let ValueKind::Output(f) = &c.kind {
                f.forget();
            }
        }
    }
}
