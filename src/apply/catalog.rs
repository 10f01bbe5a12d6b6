//! The subscription record (`logical_ext.subscription`, created by
//! sql/subscription.sql) as the worker and the SQL functions read it.

use super::config::{Origin, WorkerOptions};
use pgrx::prelude::*;

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) owner: pg_sys::Oid,
    pub(crate) conninfo: String,
    pub(crate) publications: Vec<String>,
    pub(crate) slot_name: Option<String>,
    pub(crate) origin: Origin,
    pub(crate) enabled: bool,
    pub(crate) options: WorkerOptions,
    /// The commit LSN of a remote transaction to skip (skip_transaction).
    pub(crate) skip_lsn: Option<u64>,
    /// The worker is to create the slot, exporting a snapshot for the
    /// initial copy (`sync/`).
    pub(crate) slot_pending: bool,
    /// What to do with a slot ahead of the origin (`slot_fence.rs`).
    pub(crate) slot_gap: super::slot_fence::GapPolicy,
    /// `<system identifier>/<timeline>` of the node it last ran on
    /// (`slot_owner.rs`); `None` until its first start.
    pub(crate) node_identity: Option<String>,
    /// Take the publisher's slot over at the next start (`takeover_slot()`,
    /// `adopt_subscription()`).
    pub(crate) slot_takeover: bool,
}

impl Subscription {
    /// The replication origin that records this subscription's progress.
    pub(crate) fn origin_name(id: i32) -> String {
        format!("logical_ext_{id}")
    }
}

const COLUMNS: &str = "id, name, owner, conninfo, publications, slot_name, origin, enabled, options, skip_lsn::text, slot_pending, \
     slot_gap, node_identity, slot_takeover";

fn from_row(row: pgrx::spi::SpiHeapTupleData<'_>) -> Result<Subscription, pgrx::spi::SpiError> {
    let options: pgrx::JsonB = row.get(9)?.expect("options is NOT NULL");
    Ok(Subscription {
        id: row.get(1)?.expect("id is NOT NULL"),
        name: row.get(2)?.expect("name is NOT NULL"),
        owner: row.get(3)?.expect("owner is NOT NULL"),
        conninfo: row.get(4)?.expect("conninfo is NOT NULL"),
        publications: row.get::<Vec<String>>(5)?.unwrap_or_default(),
        slot_name: row.get(6)?,
        origin: Origin::parse(&row.get::<String>(7)?.unwrap_or_default()).unwrap_or(Origin::Any),
        enabled: row.get(8)?.expect("enabled is NOT NULL"),
        options: WorkerOptions::parse(&options.0).unwrap_or_default(),
        skip_lsn: row.get::<String>(10)?.as_deref().and_then(super::protocol::parse_lsn),
        slot_pending: row.get(11)?.unwrap_or(false),
        slot_gap: super::slot_fence::GapPolicy::parse(&row.get::<String>(12)?.unwrap_or_default()),
        node_identity: row.get(13)?,
        slot_takeover: row.get(14)?.unwrap_or(false),
    })
}

/// Load a subscription by id (inside a transaction).
pub(crate) fn by_id(id: i32) -> Option<Subscription> {
    Spi::connect(|c| {
        let q = format!("SELECT {COLUMNS} FROM logical_ext.subscription WHERE id = $1");
        let mut rows = c.select(&q, Some(1), &[id.into()])?;
        rows.next().map(from_row).transpose()
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read subscription {id}: {e}"))
}

/// Load a subscription by name (inside a transaction).
pub(crate) fn by_name(name: &str) -> Option<Subscription> {
    Spi::connect(|c| {
        let q = format!("SELECT {COLUMNS} FROM logical_ext.subscription WHERE name = $1");
        let mut rows = c.select(&q, Some(1), &[name.into()])?;
        rows.next().map(from_row).transpose()
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read subscription \"{name}\": {e}"))
}

/// Ids and owners of the enabled subscriptions (inside a transaction).
pub(crate) fn enabled() -> Vec<(i32, pg_sys::Oid)> {
    Spi::connect(|c| {
        let rows = c.select("SELECT id, owner FROM logical_ext.subscription WHERE enabled", None, &[])?;
        rows.map(|r| Ok((r.get::<i32>(1)?.unwrap_or(0), r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid))))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not list subscriptions: {e}"))
}
