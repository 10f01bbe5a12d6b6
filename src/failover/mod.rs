//! Issue 16, part 3 and 4: publisher failover on PostgreSQL 15.
//!
//! Design notes
//! - A logical slot is marked for failover in `logical_ext.failover_slot`
//!   (`set_slot_failover()`, sql/failover.sql): a table, so the mark
//!   reaches physical standbys with the WAL.
//! - Primary: `gate.rs` holds a walsender of a marked slot back to what the
//!   standbys of `logical_ext.standby_slot_names` have flushed, while the
//!   walsender keeps answering its client.
//! - Standby: `sync.rs`, a background worker, keeps copies of the marked
//!   slots (temporary until safe, then persistent), one slot at a time
//!   without ever waiting for one; `state.rs` is its shared memory.
//! - `readiness.rs`: `failover_readiness()` and its metrics; `rules.rs`: the
//!   deciding logic, pure; `slots.rs`: the local slots read from shared
//!   memory; `settings.rs`: the three settings.

mod gate;
mod readiness;
pub(crate) mod rules;
pub(crate) mod settings;
mod slots;
mod state;
mod sync;

pub(crate) use gate::install as gate_walsender;
pub(crate) use readiness::metrics_text;

/// From `_PG_init` (after the settings): shared memory and the standby's
/// worker, only when preloaded.
pub(crate) fn init() {
    // SAFETY: reads a flag PostgreSQL sets while loading preload libraries.
    if !unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    state::init_shmem();
    sync::register();
}

pgrx::extension_sql_file!(
    "../../sql/failover.sql",
    name = "failover",
    requires = ["monitoring", readiness::failover_readiness]
);
