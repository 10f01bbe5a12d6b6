//! The statement being executed, exactly. `debug_query_string` is the whole
//! query string (several statements when a client sends `A; B; C`), so a
//! `ProcessUtility_hook` keeps a stack of what each utility statement is:
//! its own text (`stmt_location`/`stmt_len` of the planned statement), the
//! `search_path` and role it runs with (read here because the event trigger
//! functions run SECURITY DEFINER with their own search_path), whether it is
//! `CONCURRENTLY`, and for DROP statements which objects were published just
//! before they were dropped (the catalog rows saying so are gone when
//! `sql_drop` fires). Statements nest (a DO block's or a function's DDL runs
//! inside another utility statement); the innermost is the one an event
//! trigger fires for.
//!
//! The hook exists only once the library is loaded: with logical_ext in
//! `shared_preload_libraries` (or `session_preload_libraries`) it sees every
//! statement; otherwise the first DDL of a session runs before the library
//! is loaded, and capture falls back to `debug_query_string` when that is
//! exactly the one statement (see `capture.rs`).

use super::policy::{Mode, ObjectFacts};
use super::settings::DDL_CAPTURE;
use crate::ffi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::OnceLock;

/// One utility statement being executed.
pub(crate) struct Statement {
    pub(crate) text: String,
    pub(crate) search_path: String,
    pub(crate) role: pg_sys::Oid,
    pub(crate) concurrent: bool,
    /// A password or connection string appears in it: never captured
    /// verbatim (see `policy.rs`).
    pub(crate) carries_secret: bool,
    /// Only enables, disables or drops tools' triggers (see `policy.rs`);
    /// decided before the statement runs (a dropped trigger's function is
    /// gone from the catalogs when `sql_drop` fires).
    pub(crate) tool_triggers_only: bool,
    /// Taken before a DROP runs.
    pub(crate) before_drop: Option<DropSnapshot>,
    /// Noted by the `sql_drop` trigger.
    pub(crate) dropped: Vec<Dropped>,
}

/// What was published just before a DROP.
#[derive(Default)]
pub(crate) struct DropSnapshot {
    /// (classid, objid) of published tables and what hangs off them.
    pub(crate) objects: HashMap<(u32, u32), Vec<String>>,
    /// Schema name → publications covering it.
    pub(crate) schemas: HashMap<String, Vec<String>>,
}

/// An object the statement dropped.
pub(crate) struct Dropped {
    pub(crate) facts: ObjectFacts,
    /// A root of the deletion (not something dropped along with it).
    pub(crate) original: bool,
    pub(crate) object_type: String,
    pub(crate) identity: String,
    pub(crate) schema: Option<String>,
}

thread_local! {
    static STACK: RefCell<Vec<Statement>> = const { RefCell::new(Vec::new()) };
    static SUPPRESSED: Cell<u32> = const { Cell::new(0) };
}

static PREV_HOOK: OnceLock<pg_sys::ProcessUtility_hook_type> = OnceLock::new();

/// Install the hook (from `_PG_init`), chaining any previous one.
pub(crate) fn install() {
    // SAFETY: _PG_init runs once per process, before any statement.
    unsafe {
        let _ = PREV_HOOK.set(pg_sys::ProcessUtility_hook);
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Run `f` on the innermost statement, if the hook saw one.
pub(crate) fn with_current<R>(f: impl FnOnce(&mut Statement) -> R) -> Option<R> {
    STACK.with(|s| s.borrow_mut().last_mut().map(f))
}

/// While the returned guard lives, capture ignores DDL (`replicate_ddl`
/// replicates its command itself).
pub(crate) fn suppress() -> impl Drop {
    struct Unsuppress;
    impl Drop for Unsuppress {
        fn drop(&mut self) {
            SUPPRESSED.with(|c| c.set(c.get() - 1));
        }
    }
    SUPPRESSED.with(|c| c.set(c.get() + 1));
    Unsuppress
}

pub(crate) fn suppressed() -> bool {
    SUPPRESSED.with(|c| c.get() > 0)
}

/// Pops the statement pushed by the hook, also when an ERROR unwinds.
struct Pop;
impl Drop for Pop {
    fn drop(&mut self) {
        STACK.with(|s| s.borrow_mut().pop());
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL passes a valid planned statement and query string.
    let stmt = unsafe { Statement::of(pstmt, query_string) };
    STACK.with(|s| s.borrow_mut().push(stmt));
    let _pop = Pop;
    let prev = PREV_HOOK.get().copied().flatten();
    // SAFETY: forwarding our arguments unchanged to the previous hook or the
    // standard implementation; the boundary turns an ERROR into a Rust panic
    // so that `_pop` runs.
    unsafe {
        match prev {
            Some(f) => pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
                f(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}

impl Statement {
    /// # Safety
    /// `pstmt` must be a valid utility statement, `query_string` NULL or its
    /// NUL-terminated source text.
    unsafe fn of(pstmt: *mut pg_sys::PlannedStmt, query_string: *const std::ffi::c_char) -> Statement {
        // SAFETY: per the contract above.
        let (location, len, node) = unsafe { ((*pstmt).stmt_location, (*pstmt).stmt_len, (*pstmt).utilityStmt) };
        let text = if query_string.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string per the contract.
            let bytes = unsafe { std::ffi::CStr::from_ptr(query_string) }.to_bytes();
            statement_text(bytes, location, len)
        };
        // SAFETY: reads the current GUC value and user id.
        let (search_path, role) = unsafe { (ffi::cstr_to_string(pg_sys::namespace_search_path), pg_sys::GetUserId()) };
        // SAFETY: `node` is the statement's parse tree; the tags say which
        // struct it is.
        let (concurrent, is_drop) = unsafe {
            if node.is_null() {
                (false, false)
            } else {
                match (*node).type_ {
                    pg_sys::NodeTag::T_IndexStmt => ((*(node as *mut pg_sys::IndexStmt)).concurrent, false),
                    pg_sys::NodeTag::T_DropStmt => ((*(node as *mut pg_sys::DropStmt)).concurrent, true),
                    pg_sys::NodeTag::T_DropOwnedStmt => (false, true),
                    _ => (false, false),
                }
            }
        };
        // SAFETY: `node` is the statement's parse tree (or NULL).
        let carries_secret = unsafe { ffi::parse::node_carries_secret(node) };
        let before_drop = if is_drop { drop_snapshot() } else { None };
        // SAFETY: `node` is the statement's parse tree (or NULL).
        let tool_triggers_only = match unsafe { trigger_references(node) } {
            Some(refs) if !refs.is_empty() && capture_possible() => refs.iter().all(tool_trigger),
            _ => false,
        };
        Statement {
            text,
            search_path,
            role,
            concurrent,
            carries_secret,
            tool_triggers_only,
            before_drop,
            dropped: Vec::new(),
        }
    }
}

/// The statement's own text within the query string (`len` 0: to the end;
/// `location` -1: unknown, the whole string).
pub(crate) fn statement_text(query: &[u8], location: i32, len: i32) -> String {
    let start = usize::try_from(location).unwrap_or(0).min(query.len());
    let end = if location >= 0 && len > 0 { (start + len as usize).min(query.len()) } else { query.len() };
    String::from_utf8_lossy(&query[start..end]).trim().to_string()
}

/// A trigger named by a statement: the relation's name parts and the
/// trigger's name.
type TriggerRef = (Vec<String>, String);

/// The triggers a statement is only about: `ALTER TABLE` whose every
/// subcommand enables or disables a named trigger, or `DROP TRIGGER`.
/// `None` for any other statement.
///
/// # Safety
/// `node` must be NULL or a valid utility parse tree.
unsafe fn trigger_references(node: *mut pg_sys::Node) -> Option<Vec<TriggerRef>> {
    if node.is_null() {
        return None;
    }
    // SAFETY: the tags say which struct each node is; the lists hold what
    // the parser puts there (AlterTableCmd; lists of String for names).
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = node as *mut pg_sys::AlterTableStmt;
                let rv = (*stmt).relation;
                if rv.is_null() {
                    return None;
                }
                let mut rel = Vec::new();
                if !(*rv).schemaname.is_null() {
                    rel.push(ffi::cstr_to_string((*rv).schemaname));
                }
                rel.push(ffi::cstr_to_string((*rv).relname));
                let mut out = Vec::new();
                for cmd in ffi::ptr_list::<pg_sys::AlterTableCmd>((*stmt).cmds) {
                    let trigger_cmd = matches!(
                        (*cmd).subtype,
                        pg_sys::AlterTableType::AT_EnableTrig
                            | pg_sys::AlterTableType::AT_EnableAlwaysTrig
                            | pg_sys::AlterTableType::AT_EnableReplicaTrig
                            | pg_sys::AlterTableType::AT_DisableTrig
                    );
                    if !trigger_cmd || (*cmd).name.is_null() {
                        return None;
                    }
                    out.push((rel.clone(), ffi::cstr_to_string((*cmd).name)));
                }
                Some(out)
            }
            pg_sys::NodeTag::T_DropStmt
                if (*(node as *mut pg_sys::DropStmt)).removeType == pg_sys::ObjectType::OBJECT_TRIGGER =>
            {
                let mut out = Vec::new();
                for names in ffi::ptr_list::<pg_sys::List>((*(node as *mut pg_sys::DropStmt)).objects) {
                    let mut parts: Vec<String> = ffi::ptr_list::<pg_sys::String>(names)
                        .into_iter()
                        .map(|n| ffi::cstr_to_string((*n).sval))
                        .collect();
                    let trigger = parts.pop()?;
                    out.push((parts, trigger));
                }
                Some(out)
            }
            _ => None,
        }
    }
}

/// A relation name as SQL text, each part quoted.
fn quoted_name(parts: &[String]) -> String {
    parts.iter().map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

/// Whether the trigger exists and its function lives in a schema that an
/// extension created (a tool's trigger, see `policy::ObjectFacts::tool`).
fn tool_trigger((relation, trigger): &TriggerRef) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
                        JOIN pg_catalog.pg_depend e ON e.objid = f.pronamespace
                        WHERE t.tgrelid = pg_catalog.to_regclass($1) AND t.tgname = $2
                          AND e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                          AND e.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND e.deptype = 'e')",
        &[quoted_name(relation).into(), trigger.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Capture is on and logical_ext is installed in this database (inside a
/// transaction): only then are catalog questions asked before a statement.
fn capture_possible() -> bool {
    // SAFETY: reads transaction state and the extension catalog.
    let installed = unsafe {
        pg_sys::IsTransactionState() && pg_sys::get_extension_oid(c"logical_ext".as_ptr(), true) != pg_sys::InvalidOid
    };
    DDL_CAPTURE.get() != Mode::Off && installed
}

/// What is published right now, when capture is on and logical_ext is
/// installed in this database.
fn drop_snapshot() -> Option<DropSnapshot> {
    if !capture_possible() {
        return None;
    }
    let mut snap = DropSnapshot::default();
    // Any role may DROP its own objects: the catalog questions of the
    // extension are asked as the bootstrap superuser (restricted operation,
    // pinned search_path), not as the role, who may not call them.
    let _as = ffi::identity::AsRole::bootstrap_superuser();
    Spi::connect(|c| {
        let rows =
            c.select("SELECT classid, objid, publications FROM logical_ext.ddl_published_objects()", None, &[])?;
        for r in rows {
            let (Some(classid), Some(objid)) = (r.get::<pg_sys::Oid>(1)?, r.get::<pg_sys::Oid>(2)?) else { continue };
            let pubs = r.get::<Vec<String>>(3)?.unwrap_or_default();
            snap.objects.insert((classid.to_u32(), objid.to_u32()), pubs);
        }
        let rows =
            c.select("SELECT nspname::text, publications FROM logical_ext.ddl_published_schemas()", None, &[])?;
        for r in rows {
            if let Some(name) = r.get::<String>(1)? {
                snap.schemas.insert(name, r.get::<Vec<String>>(2)?.unwrap_or_default());
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .unwrap_or_else(|e| pgrx::error!("logical_ext: could not read the publications before a DROP: {e}"));
    Some(snap)
}

#[cfg(test)]
mod tests {
    use super::{quoted_name, statement_text};

    #[test]
    fn quotes_names() {
        assert_eq!(quoted_name(&["public".into(), "t".into()]), "\"public\".\"t\"");
        assert_eq!(quoted_name(&["we\"ird".into()]), "\"we\"\"ird\"");
    }

    #[test]
    fn slices() {
        let q = b"CREATE TABLE \"a;b\" (x int);  INSERT INTO \"a;b\" VALUES (1); ALTER TABLE x ADD y int";
        assert_eq!(statement_text(q, 0, 26), "CREATE TABLE \"a;b\" (x int)");
        assert_eq!(statement_text(q, 27, 30), "INSERT INTO \"a;b\" VALUES (1)");
        assert_eq!(statement_text(q, 58, 0), "ALTER TABLE x ADD y int");
        assert_eq!(statement_text(b" DROP TABLE t ", -1, 0), "DROP TABLE t");
        assert_eq!(statement_text(b"x", 5, 3), "");
    }
}
