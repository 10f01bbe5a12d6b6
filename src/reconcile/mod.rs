//! Part 5 of the mission: online reconciliation (issue 17). Prove that a
//! subscriber's table equals its publisher's, name each differing row, and
//! repair it — while both keep writing, with no false positive.
//!
//! Design notes (docs/RECONCILE.md has the whole story):
//! - The two sides compare the same point of the change stream: the
//!   publisher reads a key range and writes what it read as a transactional
//!   logical message (`publisher.rs`); the apply worker meets it in commit
//!   order and reads the same range there (`apply.rs`). A SHARE lock held
//!   for one chunk's read makes the publisher's read include every write
//!   that commits before the message.
//! - `digest.rs`: the row hash and the order-independent, non-cancelling
//!   chunk digest (count + sum modulo 2^128), pure.
//! - `document.rs`: the message / `"V"` document; `authentic.rs`: the
//!   voucher (`logical_ext.reconcile_log`), as for DDL events.
//! - `driver.rs`: `verify_table`, `verify_subscription`, `repair_table` in
//!   the caller's session (chunk walk, per-key split, waiting for results).
//! - `requests.rs`: the requests the subscriber made (run, relation, random
//!   nonce, chunks asked for), in shared memory; the worker acts only on
//!   documents that answer one of them (docs/RECONCILE.md, "Trust").
//!
//! Hooks elsewhere are one call each: the output plugin prints authentic
//! messages as `"V"` documents (decoder/stream.rs), the worker passes them to
//! [`apply`] (apply/worker/documents.rs).

mod apply;
mod authentic;
mod digest;
mod document;
mod driver;
mod publisher;
mod requests;

pub(crate) use apply::apply;
pub(crate) use authentic::authenticate;
pub(crate) use document::{PREFIX, ReconcileDoc};

/// Called from `_PG_init`: the open requests' shared memory, when preloading.
pub(crate) fn init() {
    if crate::apply::preloaded() {
        requests::init_shmem();
    }
}

/// This node, as reconcile documents name the subscriber that asked:
/// `<system identifier>/<database OID>`.
fn this_node() -> String {
    // SAFETY: reads the backend's database OID.
    let db = unsafe { pgrx::pg_sys::MyDatabaseId };
    format!("{}/{}", crate::ffi::worker::system_identifier(), db.to_u32())
}

/// SQL-facing errors: SQLSTATE, message, hint.
use crate::ffi::fail;

pgrx::extension_sql_file!(
    "../../sql/reconcile.sql",
    name = "reconcile",
    requires = [
        "subscription",
        publisher::reconcile_verify,
        publisher::reconcile_repair,
        driver::verify_table,
        driver::verify_subscription,
        driver::repair_table
    ]
);
