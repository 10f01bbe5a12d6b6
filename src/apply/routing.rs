//! Partitioned tables as apply targets, as PostgreSQL's worker.c does
//! (`apply_handle_tuple_routing`): a change addressed to a partitioned table
//! goes to the leaf partition its row belongs to.
//!
//! Design notes
//! - The target the publisher names (by schema and table, `relation.rs`) is
//!   the *addressed* relation. When it is partitioned on the subscriber, a
//!   [`Router`] (PostgreSQL's own `ExecFindPartition`, so multi-level trees,
//!   default partitions and the "no partition ... found for row" error
//!   (23514) behave natively) picks the leaf for each row, and the row is
//!   applied to that leaf through an ordinary [`executor::Target`] of its own,
//!   with the leaf's own columns, indexes and replica identity. Publisher and
//!   subscriber layouts are independent: the publisher may send the root
//!   (`publish_via_partition_root = true`), its partitions, or a plain table;
//!   only names must match the addressed relation.
//! - Rows move between the root's and a leaf's column layout **by column
//!   name** ([`name_map`]): a partition may have its columns in another order
//!   or dropped columns of its own.
//! - INSERT routes the new row. UPDATE and DELETE route the old key (the
//!   replica identity, which on a partitioned table includes the partition
//!   key, since its unique indexes must) to find the local row in its leaf.
//!   An UPDATE whose new row no longer satisfies its leaf's partition
//!   constraint moves: deleted from the old leaf, inserted through the root
//!   (worker.c does the same, and so does an UPDATE on the publisher).
//! - Conflicts are detected in the leaf (where the row and its unique
//!   indexes live); the conflict record, the rules that decide it and
//!   the error messages name the addressed relation, the one the subscription
//!   replicates (and what `subscription_tables` and per-table rules name);
//!   the local tuple shows the row.
//! - TRUNCATE of a partitioned table reaches all its partitions (a
//!   partitioned table has no rows of its own, and `TRUNCATE ONLY` of one is
//!   an error in PostgreSQL); a plain table's inheritance children are never
//!   added: the publisher lists every table it truncated, so its `ONLY` is
//!   kept ([`truncate_closure`]).
//! - Identity (docs/SECURITY.md): a leaf runs code of two authors, its
//!   owner's (its own triggers and constraints) and the root owner's (the
//!   root's row triggers, constraints and indexes, which PostgreSQL clones
//!   onto every partition). Neither may gain the other's rights, so a
//!   streamed change to a leaf of another owner ([`leaf_identity`]) runs as
//!   the root's owner when the leaf's owner could become it anyway, else as
//!   the leaf's owner when the root's owner could become that, else is
//!   refused (42501). The initial copy is one
//!   `COPY` (or one `INSERT ... SELECT`) through the root and cannot switch
//!   per row: it is refused ([`refuse_untrusted_leaf_owners`]) when some
//!   partition's owner could not itself become the root's owner (for such
//!   an owner, running as the root's owner would be a gain).
//! - Resources: the routing state lives in the addressed target's executor
//!   state; [`Router::close`] runs in that target's Drop before the state is
//!   freed; on an ERROR the transaction abort releases it all.

use crate::ffi::partition::{self, PartitionTupleRouting};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Routing rows of one partitioned table to its leaves.
pub(crate) struct Router {
    mtstate: *mut pg_sys::ModifyTableState,
    proute: *mut PartitionTupleRouting,
    root: *mut pg_sys::ResultRelInfo,
    estate: *mut pg_sys::EState,
}

impl Router {
    /// Set up routing for the open partitioned table `rel` whose result
    /// relation is `root`, in `estate`.
    ///
    /// # Safety
    /// `estate`, `root` and `rel` are live and stay so until [`Router::close`].
    pub(crate) unsafe fn open(
        estate: *mut pg_sys::EState,
        root: *mut pg_sys::ResultRelInfo,
        rel: pg_sys::Relation,
    ) -> Router {
        // SAFETY: a dummy ModifyTableState as worker.c builds one (no plan):
        // ExecFindPartition only reads the operation and result relations.
        unsafe {
            let mtstate =
                pg_sys::palloc0(std::mem::size_of::<pg_sys::ModifyTableState>()).cast::<pg_sys::ModifyTableState>();
            (*mtstate).ps.type_ = pg_sys::NodeTag::T_ModifyTableState;
            (*mtstate).ps.state = estate;
            (*mtstate).operation = pg_sys::CmdType::CMD_INSERT;
            (*mtstate).resultRelInfo = root;
            (*mtstate).rootResultRelInfo = root;
            let proute = partition::setup_routing(estate, rel);
            Router { mtstate, proute, root, estate }
        }
    }

    /// The leaf partition `slot` (a complete row of the root's type) goes to.
    pub(crate) fn leaf_for(&self, slot: *mut pg_sys::TupleTableSlot) -> pg_sys::Oid {
        // SAFETY: set up by `open`; ExecFindPartition opens and locks the
        // leaf (RowExclusiveLock) in the routing state.
        unsafe {
            let rri = partition::find_partition(self.mtstate, self.root, self.proute, slot, self.estate);
            (*(*rri).ri_RelationDesc).rd_id
        }
    }

    /// Close what routing opened (locks stay until the end of the transaction).
    pub(crate) fn close(self) {
        // SAFETY: once, before the executor state is freed (see `open`).
        unsafe { partition::cleanup_routing(self.mtstate, self.proute) }
    }
}

/// Who applies a change to a leaf owned by `leaf_owner` under a root owned
/// by `root_owner` (see the module notes): `Stay` as the root's owner,
/// `Leaf` (become the leaf's owner), or `Refuse`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeafIdentity {
    Stay,
    Leaf,
    Refuse,
}

pub(crate) fn leaf_rule(
    leaf_owner: pg_sys::Oid,
    root_owner: pg_sys::Oid,
    can_become: impl Fn(pg_sys::Oid, pg_sys::Oid) -> bool,
) -> LeafIdentity {
    if leaf_owner == root_owner || can_become(leaf_owner, root_owner) {
        LeafIdentity::Stay
    } else if can_become(root_owner, leaf_owner) {
        LeafIdentity::Leaf
    } else {
        LeafIdentity::Refuse
    }
}

/// The owner a leaf owned by `leaf_owner` is applied as, while the backend
/// runs as the root's owner: `None` to stay so, `Some(leaf_owner)` to
/// switch per operation. Raises 42501 with a HINT (naming the leaf,
/// `display`) when neither owner could become the other.
pub(crate) fn leaf_identity(leaf_owner: pg_sys::Oid, root_owner: pg_sys::Oid, display: &str) -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups of roles.
    match leaf_rule(leaf_owner, root_owner, |m, r| unsafe { pg_sys::is_member_of_role(m, r) }) {
        LeafIdentity::Stay => None,
        LeafIdentity::Leaf => Some(leaf_owner),
        LeafIdentity::Refuse => {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "logical_ext: cannot apply a change to partition \"{display}\": its owner and its partitioned \
                     table's owner cannot become each other"
                ),
                function_name!(),
            )
            .set_hint(
                "The partition runs code of both owners (its own triggers, and those PostgreSQL clones from the \
                 partitioned table), so one of them would run with the other's rights. Give the partition the \
                 partitioned table's owner, or make one owner a member of the other (GRANT partition_owner TO \
                 table_owner applies as the partition's owner); the change is retried.",
            )
            .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        }
    }
}

/// The first relation of `tree` (relation, owner) whose owner is neither
/// `root_owner` nor able to become it (`can_become(owner, root_owner)`):
/// code of that owner must not run as `root_owner`.
pub(crate) fn untrusted_leaf_owner(
    root_owner: pg_sys::Oid,
    tree: &[(pg_sys::Oid, pg_sys::Oid)],
    can_become: impl Fn(pg_sys::Oid, pg_sys::Oid) -> bool,
) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    tree.iter().copied().find(|&(_, owner)| owner != root_owner && !can_become(owner, root_owner))
}

/// Refuse to copy into the partitioned table `relid` (owned by
/// `root_owner`) as its owner when a partition's owner could gain the
/// root owner's rights through its triggers during the copy (see the module
/// notes). ERROR 42501 with a HINT.
pub(crate) fn refuse_untrusted_leaf_owners(relid: pg_sys::Oid, root_owner: pg_sys::Oid, display: &str) {
    // SAFETY: inside the copy's transaction; the lock is the one COPY takes.
    let tree = unsafe { partition::tree_owners(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
    // SAFETY: a catalog lookup of roles.
    let found = untrusted_leaf_owner(root_owner, &tree, |m, r| unsafe { pg_sys::is_member_of_role(m, r) });
    if let Some((leaf, _)) = found {
        // SAFETY: get_rel_name returns a palloc'd name (locked above).
        let leaf_name = unsafe { crate::ffi::cstr_to_string(pg_sys::get_rel_name(leaf)) };
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "logical_ext: cannot copy into \"{display}\" as its owner: partition \"{leaf_name}\" has an owner \
                 that cannot become the owner of \"{display}\""
            ),
            function_name!(),
        )
        .set_hint(
            "The copy runs the partitions' triggers as the partitioned table's owner. Give the partition the \
             partitioned table's owner, or subscribe without copy_data (streamed changes are applied to each \
             partition as its own owner).",
        )
        .report(PgLogLevel::ERROR);
    }
}

/// For each attribute of `dst` (by index), the attribute of `src` with the
/// same name; `None` for dropped columns (empty names) and names `src` lacks.
pub(crate) fn name_map(dst: &[String], src: &[String]) -> Vec<Option<usize>> {
    dst.iter().map(|n| if n.is_empty() { None } else { src.iter().position(|s| s == n) }).collect()
}

/// The relations one replicated TRUNCATE empties: the listed ones, plus every
/// relation below a listed *partitioned* one (`below(relid)`, including
/// itself), each once, in order.
pub(crate) fn truncate_closure(
    listed: &[pg_sys::Oid],
    partitioned: impl Fn(pg_sys::Oid) -> bool,
    mut below: impl FnMut(pg_sys::Oid) -> Vec<pg_sys::Oid>,
) -> Vec<pg_sys::Oid> {
    let mut out: Vec<pg_sys::Oid> = Vec::with_capacity(listed.len());
    for &relid in listed {
        let family = if partitioned(relid) { below(relid) } else { vec![relid] };
        for r in std::iter::once(relid).chain(family) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn columns_map_by_name_across_layouts() {
        // The leaf has a dropped column and another order.
        let root = s(&["id", "k", "v"]);
        let leaf = s(&["", "v", "id", "k"]);
        assert_eq!(name_map(&leaf, &root), vec![None, Some(2), Some(0), Some(1)]);
        assert_eq!(name_map(&root, &leaf), vec![Some(2), Some(3), Some(1)]);
        assert_eq!(name_map(&s(&["id", "extra"]), &root), vec![Some(0), None]);
    }

    #[test]
    fn a_leaf_is_applied_as_the_owner_that_gains_nothing() {
        let oid = pg_sys::Oid::from_u32;
        // 20 can become 10; 10 can become 30; 40 and 10 cannot become each other.
        let can = |m: pg_sys::Oid, r: pg_sys::Oid| matches!((m.to_u32(), r.to_u32()), (20, 10) | (10, 30));
        assert_eq!(leaf_rule(oid(10), oid(10), can), LeafIdentity::Stay);
        assert_eq!(leaf_rule(oid(20), oid(10), can), LeafIdentity::Stay);
        assert_eq!(leaf_rule(oid(30), oid(10), can), LeafIdentity::Leaf);
        assert_eq!(leaf_rule(oid(40), oid(10), can), LeafIdentity::Refuse);
    }

    #[test]
    fn copy_refused_only_for_owners_that_cannot_become_the_root_owner() {
        let oid = pg_sys::Oid::from_u32;
        // Root 1 owned by 10; role 20 can become 10, role 30 cannot.
        let can = |m: pg_sys::Oid, r: pg_sys::Oid| m.to_u32() == 20 && r.to_u32() == 10;
        let tree = [(oid(1), oid(10)), (oid(2), oid(10)), (oid(3), oid(20))];
        assert_eq!(untrusted_leaf_owner(oid(10), &tree, can), None);
        let tree = [(oid(1), oid(10)), (oid(2), oid(20)), (oid(3), oid(30)), (oid(4), oid(30))];
        assert_eq!(untrusted_leaf_owner(oid(10), &tree, can), Some((oid(3), oid(30))));
    }

    #[test]
    fn truncate_reaches_partitions_but_not_inheritance_children() {
        let oid = pg_sys::Oid::from_u32;
        // 10 is partitioned (leaves 11, 12); 20 is a plain parent of 21.
        let below = |r: pg_sys::Oid| match r.to_u32() {
            10 => vec![oid(10), oid(11), oid(12)],
            20 => vec![oid(20), oid(21)],
            _ => vec![r],
        };
        let partitioned = |r: pg_sys::Oid| r.to_u32() == 10;
        let got = truncate_closure(&[oid(20), oid(10), oid(11)], partitioned, below);
        assert_eq!(got, vec![oid(20), oid(10), oid(11), oid(12)]);
        assert_eq!(truncate_closure(&[oid(20)], partitioned, below), vec![oid(20)]);
    }
}
