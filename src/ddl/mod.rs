//! Part 4 of the mission: DDL capture on the publisher and replay on the
//! subscriber, in stream order.
//!
//! Design notes
//! - `statement.rs`: a ProcessUtility hook that knows the exact text, the
//!   search_path and the role of each utility statement (a multi-statement
//!   query string is split by the parser's statement locations), and what
//!   was published before a DROP.
//! - `policy.rs`: pure decisions — captured, refused (WARNING, logged, never
//!   blocks the DDL), or ignored — from `logical_ext.ddl_capture` and facts
//!   about the objects touched. `settings.rs`: that setting.
//! - `capture.rs`: what the event triggers of sql/ddl.sql call; writes a
//!   transactional logical message (prefix `logical_ext.ddl`) and a
//!   `logical_ext.ddl_log` row. `replicate.rs`: `replicate_ddl(command)`.
//! - `event.rs`: the event carried by the message, printed by the output
//!   plugin as a `"DDL"` document and replayed by `replay.rs` in the apply
//!   worker before the changes that follow it.

mod authentic;
mod capture;
mod event;
mod policy;
mod replay;
mod replicate;
pub(crate) mod settings;
mod statement;

pub(crate) use authentic::authenticate;
pub(crate) use event::{DdlEvent, PREFIX};
pub(crate) use replay::{forget_failed_replay, log_failed_replay, replay};

/// Called from `_PG_init` (in every process that loads the library).
pub(crate) fn init() {
    statement::install();
}

pgrx::extension_sql_file!(
    "../../sql/ddl.sql",
    name = "ddl",
    requires = [capture::note_dropped, capture::capture, replicate::replicate_ddl]
);
