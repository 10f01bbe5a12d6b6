//! Capture on the publisher: the functions the event triggers of
//! sql/ddl.sql call. `sql_drop` fires first and notes what the statement
//! dropped; `ddl_command_end` gathers the objects the command touched, asks
//! `policy::decide`, and either replicates the command (a transactional
//! logical message, ordered with the transaction's DML and gone if it aborts,
//! plus a `ddl_log` row in the same transaction), refuses it (WARNING and a
//! `ddl_log` row saying why; the DDL itself goes ahead), or ignores it.

use super::event::{DdlEvent, PREFIX, Source};
use super::policy::{self, Decision, Mode, ObjectFacts, StatementFacts};
use super::settings::DDL_CAPTURE;
use super::statement::{self, Dropped};
use crate::ffi::{self, lsn::Lsn};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiError;

/// An object `pg_event_trigger_ddl_commands()` reports.
struct Touched {
    command_tag: String,
    object_type: Option<String>,
    identity: Option<String>,
    schema: Option<String>,
    facts: ObjectFacts,
}

const TOUCHED_SQL: &str = "\
WITH extension_schemas AS (SELECT objid FROM pg_catalog.pg_depend
    WHERE classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
      AND refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND deptype = 'e')
SELECT c.command_tag, c.object_type, c.object_identity, c.schema_name,
       coalesce(c.schema_name ~ '^pg_temp', false)
         OR coalesce((SELECT r.relpersistence = 't' FROM pg_catalog.pg_class r
                      WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND r.oid = c.objid), false),
       c.in_extension OR logical_ext.ddl_object_in_extension(c.classid, c.objid),
       coalesce(c.schema_name = 'logical_ext', false),
       logical_ext.ddl_object_publications(c.classid, c.objid, c.schema_name),
       coalesce((SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = c.schema_name)
                IN (SELECT objid FROM extension_schemas), false)
         OR (c.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
             AND EXISTS (SELECT FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
                         WHERE t.oid = c.objid AND f.pronamespace IN (SELECT objid FROM extension_schemas)))
FROM pg_catalog.pg_event_trigger_ddl_commands() c";

/// Roots of the deletion and what they took along through normal
/// dependencies (an extension's members, which are neither, stay out).
const DROPPED_SQL: &str = "\
SELECT d.classid, d.objid, d.object_type, d.object_identity,
       CASE WHEN d.object_type = 'schema' THEN d.address_names[1] ELSE d.schema_name END,
       d.is_temporary, d.original,
       logical_ext.ddl_schema_publications(
           CASE WHEN d.object_type = 'schema' THEN d.address_names[1] ELSE d.schema_name END),
       EXISTS (SELECT FROM pg_catalog.pg_depend e JOIN pg_catalog.pg_namespace n ON n.oid = e.objid
               WHERE e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                 AND e.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND e.deptype = 'e'
                 AND n.nspname = d.schema_name AND d.object_type <> 'schema')
FROM pg_catalog.pg_event_trigger_dropped_objects() d
WHERE d.original OR d.normal";

fn active() -> bool {
    // SAFETY: reads a backend global.
    let creating_extension = unsafe { pg_sys::creating_extension };
    DDL_CAPTURE.get() != Mode::Off && !statement::suppressed() && !creating_extension && ffi::wal_is_logical()
}

/// Called by the `sql_drop` event trigger.
#[pg_extern(name = "_ddl_note_dropped", volatile, parallel_unsafe)]
fn note_dropped() {
    if !active() {
        return;
    }
    let mut dropped = Vec::new();
    Spi::connect(|c| {
        for r in c.select(DROPPED_SQL, None, &[])? {
            let classid = r.get::<pg_sys::Oid>(1)?.map(|o| o.to_u32()).unwrap_or(0);
            let objid = r.get::<pg_sys::Oid>(2)?.map(|o| o.to_u32()).unwrap_or(0);
            let schema = r.get::<String>(5)?;
            let original = r.get::<bool>(7)?.unwrap_or(false);
            let current = r.get::<Vec<String>>(8)?.unwrap_or_default();
            let temporary = r.get::<bool>(6)?.unwrap_or(false);
            let tool = r.get::<bool>(9)?.unwrap_or(false);
            dropped.push((
                classid,
                objid,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                schema,
                temporary,
                tool,
                original,
                current,
            ));
        }
        Ok::<_, SpiError>(())
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read the dropped objects: {e}"));
    statement::with_current(|s| {
        for (classid, objid, object_type, identity, schema, temporary, tool, original, current) in dropped {
            // Publications as they were before the DROP when the hook took
            // a snapshot; otherwise what the schema still says.
            let publications = match &s.before_drop {
                Some(snap) => {
                    let mut p = snap.objects.get(&(classid, objid)).cloned().unwrap_or_default();
                    if let Some(nsp) = &schema {
                        p.extend(snap.schemas.get(nsp).cloned().unwrap_or_default());
                    }
                    p
                }
                None => current,
            };
            let facts = ObjectFacts {
                temporary,
                in_extension: false,
                own: schema.as_deref() == Some("logical_ext"),
                tool,
                publications,
            };
            s.dropped.push(Dropped {
                facts,
                original,
                object_type: object_type.unwrap_or_default(),
                identity: identity.unwrap_or_default(),
                schema,
            });
        }
    });
}

/// Called by the `ddl_command_end` event trigger with its command tag.
#[pg_extern(name = "_ddl_capture", volatile, parallel_unsafe)]
fn capture(tag: &str) {
    if !active() {
        return;
    }
    let touched = touched_objects();
    let current = statement::with_current(|s| {
        (
            s.text.clone(),
            s.search_path.clone(),
            s.role,
            StatementFacts {
                concurrent: s.concurrent,
                text_unknown: false,
                carries_secret: s.carries_secret,
                tool_triggers_only: s.tool_triggers_only,
            },
            std::mem::take(&mut s.dropped),
        )
    });
    // Without the hook (library loaded by this very command) only the whole
    // query string is known: logged with the refusal, never replayed.
    let (command, search_path, role, stmt, dropped) = current.unwrap_or_else(|| {
        // SAFETY: debug_query_string is NULL or the current query's text.
        let whole = unsafe { ffi::cstr_to_string(pg_sys::debug_query_string) };
        let secret = ffi::parse::parse_statements(&whole).iter().any(|s| s.carries_secret);
        let stmt = StatementFacts { text_unknown: true, carries_secret: secret, ..StatementFacts::default() };
        // SAFETY: reads the current user id.
        (whole, String::new(), unsafe { pg_sys::GetSessionUserId() }, stmt, Vec::new())
    });
    let carries_secret = stmt.carries_secret;
    let facts: Vec<ObjectFacts> =
        touched.iter().map(|t| t.facts.clone()).chain(dropped.iter().map(|d| d.facts.clone())).collect();
    let mode = DDL_CAPTURE.get();
    let decision = policy::decide(mode, tag, stmt, &facts);
    let publications = match &decision {
        Decision::Ignore => return,
        Decision::Capture { publications } => publications.clone(),
        Decision::Refuse { .. } => Vec::new(),
    };
    // The object the command is about: the first one reported under its
    // own tag (CREATE TABLE also reports the sequences and indexes it made).
    let main = touched.iter().find(|t| t.command_tag == tag).or(touched.first());
    let root = dropped.iter().find(|d| d.original).or(dropped.first());
    let (object_type, object_identity, schema) = match (main, root) {
        (Some(t), _) => (t.object_type.clone(), t.identity.clone(), t.schema.clone()),
        (None, Some(d)) => (Some(d.object_type.clone()), Some(d.identity.clone()), d.schema.clone()),
        (None, None) => (None, None, None),
    };
    let event = DdlEvent {
        source: Source::EventTrigger,
        command_tag: tag.to_string(),
        object_type,
        object_identity,
        schema,
        search_path,
        role: role_name(role),
        // Under `all`, commands published nowhere concern every consumer.
        publications,
        // A password never reaches WAL, ddl_log or a WARNING.
        command: if carries_secret { policy::redacted_command(tag) } else { command },
        log_id: None,
    };
    match decision {
        Decision::Capture { .. } if !super::authentic::ddl_log_ready() => {
            // The library was upgraded, the extension's SQL objects not yet:
            // never fail the user's DDL, never write an unverifiable event.
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{tag} is not replicated: logical_ext's SQL objects are older than its library"),
                function_name!(),
            )
            .set_hint("Run ALTER EXTENSION logical_ext UPDATE in this database.")
            .report(PgLogLevel::WARNING);
        }
        Decision::Capture { .. } => {
            publish(&event);
        }
        Decision::Refuse { reason, hint } => {
            ErrorReport::new(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, reason.clone(), function_name!())
                .set_hint(hint)
                .report(PgLogLevel::WARNING);
            log_row(&event, event.source.as_str(), None, None, Some(&reason));
        }
        Decision::Ignore => {}
    }
}

fn touched_objects() -> Vec<Touched> {
    Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(TOUCHED_SQL, None, &[])? {
            out.push(Touched {
                command_tag: r.get::<String>(1)?.unwrap_or_default(),
                object_type: r.get::<String>(2)?,
                identity: r.get::<String>(3)?,
                schema: r.get::<String>(4)?,
                facts: ObjectFacts {
                    temporary: r.get::<bool>(5)?.unwrap_or(false),
                    in_extension: r.get::<bool>(6)?.unwrap_or(false),
                    own: r.get::<bool>(7)?.unwrap_or(false),
                    publications: r.get::<Vec<String>>(8)?.unwrap_or_default(),
                    tool: r.get::<bool>(9)?.unwrap_or(false),
                },
            });
        }
        Ok::<_, SpiError>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read the DDL command's objects: {e}"))
}

pub(super) fn role_name(role: pg_sys::Oid) -> String {
    if role == pg_sys::InvalidOid {
        return String::new();
    }
    // SAFETY: noerr=true returns NULL for a missing role.
    unsafe { ffi::cstr_to_string(pg_sys::GetUserNameFromId(role, true)) }
}

/// Replicate: the `ddl_log` row, then the logical message (same
/// transaction). The row is what makes the message authentic: it carries the
/// transaction's id and the SHA-256 of the message, and only this code (run
/// by the event triggers or `replicate_ddl`, as the bootstrap superuser) can
/// write it; the output plugin prints a DDL document only for a message whose
/// row it finds, under the decoding snapshot, written by the same
/// transaction (`authentic.rs`). Returns the message's position.
pub(super) fn publish(event: &DdlEvent) -> u64 {
    let _as = ffi::identity::AsRole::bootstrap_superuser();
    let id = Spi::get_one::<i64>(
        "SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('logical_ext.ddl_log', 'id'))",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| pgrx::error!("logical_ext: could not number a logical_ext.ddl_log row"));
    let event = DdlEvent { log_id: Some(id), ..event.clone() };
    let content = event.to_json();
    insert_row(
        &event,
        event.source.as_str(),
        None,
        None,
        None,
        Some((id, super::authentic::digest(content.as_bytes()))),
    );
    // The row is visible to the decoding snapshot at the message's place.
    // SAFETY: inside a transaction, as every SQL function call is.
    unsafe { pg_sys::CommandCounterIncrement() };
    let prefix = std::ffi::CString::new(PREFIX).expect("static prefix");
    let lsn = ffi::log_logical_message(&prefix, content.as_bytes(), true);
    Spi::run_with_args("UPDATE logical_ext.ddl_log SET lsn = $1 WHERE id = $2", &[Lsn(lsn).into(), id.into()])
        .unwrap_or_else(|e| pgrx::error!("logical_ext: could not write logical_ext.ddl_log: {e}"));
    lsn
}

/// One `logical_ext.ddl_log` row; `reason` set means not replicated.
pub(crate) fn log_row(
    event: &DdlEvent,
    source: &str,
    subscription: Option<&str>,
    lsn: Option<u64>,
    reason: Option<&str>,
) {
    let _as = ffi::identity::AsRole::bootstrap_superuser();
    insert_row(event, source, subscription, lsn, reason, None);
}

/// `authentic`: the row's id and the digest of the message it vouches for.
fn insert_row(
    event: &DdlEvent,
    source: &str,
    subscription: Option<&str>,
    lsn: Option<u64>,
    reason: Option<&str>,
    authentic: Option<(i64, Vec<u8>)>,
) {
    let (id, digest) = authentic.unzip();
    Spi::run_with_args(
        "INSERT INTO logical_ext.ddl_log (id, source, subscription, lsn, command_tag, object_type, object_identity, \
         schema_name, publications, search_path, role_name, command, replicated, reason, capture_xid, digest) \
         OVERRIDING SYSTEM VALUE \
         VALUES (coalesce($15, pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('logical_ext.ddl_log', 'id'))), \
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 CASE WHEN $14::bytea IS NULL THEN NULL ELSE pg_catalog.pg_current_xact_id() END, $14)",
        &[
            source.into(),
            subscription.into(),
            lsn.map(Lsn).into(),
            event.command_tag.as_str().into(),
            event.object_type.as_deref().into(),
            event.object_identity.as_deref().into(),
            event.schema.as_deref().into(),
            event.publications.clone().into(),
            event.search_path.as_str().into(),
            event.role.as_str().into(),
            event.command.as_str().into(),
            reason.is_none().into(),
            reason.into(),
            digest.into(),
            id.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not write logical_ext.ddl_log: {e}"));
}
