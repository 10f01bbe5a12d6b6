//! The key columns of a relation's primary key and replica identity index,
//! read from the relcache without taking any lock.
//!
//! An output plugin decodes changes of transactions that may still be open
//! (streaming) or that are followed by transactions now holding an ACCESS
//! EXCLUSIVE lock on the table (`TRUNCATE`, `LOCK TABLE`, `ALTER TABLE`).
//! `RelationGetIndexAttrBitmap` opens every index of the relation with
//! `AccessShareLock`, so a walsender calling it there waits on that lock
//! — forever, when the holder is the very transaction being streamed — and
//! stops sending anything, keepalives included. PostgreSQL's pgoutput reads
//! the identity through `RelationGetIdentityKeyBitmap`, which opens the one
//! index with `RelationIdGetRelation` (no lock: decoding reads the catalogs
//! under its historic snapshot, which needs none). We do the same for the
//! primary key too, and keep `RelationGetIndexAttrBitmap`'s definition of
//! the members: the index's key columns (`indnkeyatts`, not its INCLUDE
//! columns), expression columns (attnum 0) left out.

use pgrx::pg_sys;

/// Which index of a relation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyIndex {
    /// The primary key.
    Primary,
    /// The replica identity index (the primary key under REPLICA IDENTITY
    /// DEFAULT; none under FULL or NOTHING).
    ReplicaIdentity,
}

/// The key columns of `which` index of `rel` as a bitmapset of attribute
/// numbers offset by `FirstLowInvalidHeapAttributeNumber` (the form of
/// `RelationGetIndexAttrBitmap`), palloc'd in the current memory context;
/// NULL (empty) when the relation has no such index.
///
/// # Safety
/// `rel` must be an open relation, and a (historic) snapshot able to read
/// the catalogs must be active, as in an output plugin callback.
pub(crate) unsafe fn key_columns(rel: pg_sys::Relation, which: KeyIndex) -> *mut pg_sys::Bitmapset {
    // SAFETY: per the contract: both functions read the relcache entry's
    // index list (a pg_index scan, no lock on the relation or its indexes).
    let index_oid = unsafe {
        match which {
            KeyIndex::Primary => pg_sys::RelationGetPrimaryKeyIndex(rel),
            KeyIndex::ReplicaIdentity => pg_sys::RelationGetReplicaIndex(rel),
        }
    };
    if index_oid == pg_sys::InvalidOid {
        return std::ptr::null_mut();
    }
    // SAFETY: RelationIdGetRelation takes no lock and returns NULL for a
    // missing relation; an index entry has rd_index with indnkeyatts key
    // columns in indkey. The reference is released with RelationClose (on an
    // ERROR from bms_add_member's palloc, by the resource owner).
    unsafe {
        let index = pg_sys::RelationIdGetRelation(index_oid);
        if index.is_null() || (*index).rd_index.is_null() {
            if !index.is_null() {
                pg_sys::RelationClose(index);
            }
            return std::ptr::null_mut();
        }
        let form = &*(*index).rd_index;
        let keys = std::slice::from_raw_parts(form.indkey.values.as_ptr(), form.indnkeyatts as usize);
        let mut set: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        for &attnum in keys {
            if attnum != 0 {
                set = pg_sys::bms_add_member(set, attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber);
            }
        }
        pg_sys::RelationClose(index);
        set
    }
}
