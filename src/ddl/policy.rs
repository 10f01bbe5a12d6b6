//! What capture does with one command: pure decisions over facts gathered
//! from the catalogs (`capture.rs` gathers them, this decides).
//!
//! Order of the rules: a command touching temporary objects, objects of an
//! extension, a tool's working objects, or logical_ext's own objects, and
//! commands on publications and subscriptions (each node's own set-up) are
//! never captured; then the
//! `logical_ext.ddl_capture` mode says whether it concerns subscribers; only
//! then are commands that cannot be replayed safely refused (so a refused
//! command is one that really would have been replicated).

use crate::ffi::parse::ParsedStatement;
use pgrx::PostgresGucEnum;

/// `logical_ext.ddl_capture`.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    #[name = c"off"]
    Off,
    /// DDL touching published tables, or anything in a schema a FOR TABLES
    /// IN SCHEMA / FOR ALL TABLES publication covers.
    #[name = c"published"]
    Published,
    /// Every command but the never-captured ones.
    #[name = c"all"]
    All,
}

/// What capture knows about one object a command touched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ObjectFacts {
    pub(crate) temporary: bool,
    pub(crate) in_extension: bool,
    /// In the logical_ext schema.
    pub(crate) own: bool,
    /// A tool's working object: it lives in a schema that an extension
    /// created (pg_repack's `repack`: its log tables, key types, work
    /// tables and their indexes), or it is a trigger whose function lives in
    /// such a schema (pg_repack's `repack_trigger` on the table it rebuilds).
    /// Such a schema exists only where the extension is installed, and the
    /// objects are the tool's scaffolding on this node, never the user's
    /// schema.
    pub(crate) tool: bool,
    pub(crate) publications: Vec<String>,
}

/// Facts about the statement itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StatementFacts {
    /// `CONCURRENTLY`: it runs outside a transaction block, so it cannot be
    /// replayed inside the apply transaction.
    pub(crate) concurrent: bool,
    /// The statement's exact text could not be isolated.
    pub(crate) text_unknown: bool,
    /// A password or connection string appears in it.
    pub(crate) carries_secret: bool,
    /// It only enables, disables or drops triggers, and each is a tool's
    /// trigger (see [`ObjectFacts::tool`]): `ALTER TABLE t ENABLE ALWAYS
    /// TRIGGER repack_trigger` reports the table, not the trigger.
    pub(crate) tool_triggers_only: bool,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Not for subscribers: nothing is logged.
    Ignore,
    Capture {
        publications: Vec<String>,
    },
    /// Would be replicated but cannot be: a WARNING and a log row.
    Refuse {
        reason: String,
        hint: &'static str,
    },
}

/// Commands whose replay would not reproduce the publisher's state.
fn unsafe_to_replay(tag: &str) -> Option<&'static str> {
    match tag {
        "CREATE TABLE AS" | "SELECT INTO" => Some(
            "it creates a table together with its rows, which would reach subscribers twice (rows in the change \
             stream and rows made by the replayed command)",
        ),
        _ => None,
    }
}

/// Commands about this node's own replication set-up: a subscriber has its
/// own publications and subscriptions.
fn node_local(tag: &str) -> bool {
    matches!(
        tag,
        "CREATE PUBLICATION"
            | "ALTER PUBLICATION"
            | "DROP PUBLICATION"
            | "CREATE SUBSCRIPTION"
            | "ALTER SUBSCRIPTION"
            | "DROP SUBSCRIPTION"
    )
}

pub(crate) fn decide(mode: Mode, tag: &str, stmt: StatementFacts, objects: &[ObjectFacts]) -> Decision {
    if mode == Mode::Off
        || node_local(tag)
        || stmt.tool_triggers_only
        || objects.iter().any(|o| o.temporary || o.in_extension || o.own || o.tool)
    {
        return Decision::Ignore;
    }
    let mut publications: Vec<String> = objects.iter().flat_map(|o| o.publications.iter().cloned()).collect();
    publications.sort();
    publications.dedup();
    if mode == Mode::Published && publications.is_empty() {
        return Decision::Ignore;
    }
    if let Some(why) = unsafe_to_replay(tag) {
        return Decision::Refuse {
            reason: format!("{tag} is not replicated: {why}"),
            hint: "Create the table with CREATE TABLE (replicated), then fill it with INSERT ... SELECT.",
        };
    }
    if stmt.carries_secret {
        return Decision::Refuse {
            reason: format!(
                "{tag} is not replicated: it carries a password, and logical_ext never writes secrets into WAL, \
                 ddl_log or its messages"
            ),
            hint: "Run the command on each node yourself (ddl_log records it without its text).",
        };
    }
    if stmt.concurrent {
        return Decision::Refuse {
            reason: format!("{tag} ... CONCURRENTLY is not replicated: it cannot run inside the apply transaction"),
            hint: "Run the same command on each subscriber, or use logical_ext.replicate_ddl() with the \
                   non-concurrent form.",
        };
    }
    if stmt.text_unknown {
        return Decision::Refuse {
            reason: format!(
                "{tag} is not replicated: the statement's text could not be told apart from the rest of the query \
                 string"
            ),
            hint: "Add logical_ext to shared_preload_libraries (or session_preload_libraries) so that capture sees \
                   each statement, and replay this one with logical_ext.replicate_ddl().",
        };
    }
    Decision::Capture { publications }
}

/// The text logged for a command that carries a secret: its tag only.
pub(crate) fn redacted_command(tag: &str) -> String {
    format!("{tag} (statement text not recorded: it carries a password)")
}

/// Replay on a subscriber re-checks what arrives, whatever the publisher
/// says: exactly one statement, schema DDL (or GRANT/REVOKE/COMMENT and role
/// commands), never row changes, transaction control, code blocks, session
/// or server settings, COPY, or anything carrying a secret. `None`: may be
/// replayed (as the role the subscription says, with that role's
/// privileges); `Some(why)`: refused.
pub(crate) fn replay_refusal(statements: &[ParsedStatement]) -> Option<String> {
    let [one] = statements else {
        return Some(format!("it carries {} statements; DDL events carry exactly one", statements.len()));
    };
    if one.carries_secret {
        return Some(format!("{} carries a password or connection string", one.tag));
    }
    let tag = one.tag.as_str();
    let schema_ddl = ["CREATE ", "ALTER ", "DROP "].iter().any(|p| tag.starts_with(p))
        || matches!(
            tag,
            "GRANT"
                | "REVOKE"
                | "GRANT ROLE"
                | "REVOKE ROLE"
                | "COMMENT"
                | "SECURITY LABEL"
                | "REFRESH MATERIALIZED VIEW"
                | "IMPORT FOREIGN SCHEMA"
        );
    let never = node_local(tag)
        || unsafe_to_replay(tag).is_some()
        || matches!(
            tag,
            "ALTER SYSTEM"
                | "CREATE DATABASE"
                | "DROP DATABASE"
                | "ALTER DATABASE"
                | "CREATE TABLESPACE"
                | "DROP TABLESPACE"
                | "ALTER TABLESPACE"
                | "DROP OWNED"
                | "REASSIGN OWNED"
        );
    if schema_ddl && !never { None } else { Some(format!("{tag} is not a DDL command logical_ext replays")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(pubs: &[&str]) -> ObjectFacts {
        ObjectFacts { publications: pubs.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }
    const PLAIN: StatementFacts =
        StatementFacts { concurrent: false, text_unknown: false, carries_secret: false, tool_triggers_only: false };

    #[test]
    fn modes() {
        let published = [obj(&["b", "a"]), obj(&["a"])];
        let unpublished = [obj(&[])];
        assert_eq!(decide(Mode::Off, "ALTER TABLE", PLAIN, &published), Decision::Ignore);
        assert_eq!(
            decide(Mode::Published, "ALTER TABLE", PLAIN, &published),
            Decision::Capture { publications: vec!["a".into(), "b".into()] }
        );
        assert_eq!(decide(Mode::Published, "ALTER TABLE", PLAIN, &unpublished), Decision::Ignore);
        assert_eq!(decide(Mode::Published, "GRANT", PLAIN, &[]), Decision::Ignore);
        assert_eq!(
            decide(Mode::All, "CREATE FUNCTION", PLAIN, &unpublished),
            Decision::Capture { publications: vec![] }
        );
    }

    #[test]
    fn never_captured() {
        assert_eq!(decide(Mode::All, "ALTER PUBLICATION", PLAIN, &[obj(&["p"])]), Decision::Ignore);
        for o in [
            ObjectFacts { temporary: true, ..obj(&["p"]) },
            ObjectFacts { in_extension: true, ..obj(&["p"]) },
            ObjectFacts { own: true, ..obj(&["p"]) },
            ObjectFacts { tool: true, ..obj(&["p"]) },
        ] {
            assert_eq!(decide(Mode::All, "CREATE TABLE", PLAIN, &[obj(&["p"]), o]), Decision::Ignore);
        }
    }

    #[test]
    fn tools_working_objects_are_never_captured() {
        // pg_repack: CREATE TABLE repack.log_N, CREATE TRIGGER on the
        // published table, CREATE TABLE repack.table_N AS (would otherwise
        // be refused), then ALTER TABLE t ENABLE ALWAYS TRIGGER and DROP
        // TRIGGER, which touch only the table or nothing the catalogs tie
        // to the tool.
        let tool = ObjectFacts { tool: true, ..obj(&["p"]) };
        for tag in ["CREATE TABLE", "CREATE TYPE", "CREATE TRIGGER", "CREATE INDEX", "CREATE TABLE AS"] {
            assert_eq!(decide(Mode::All, tag, PLAIN, std::slice::from_ref(&tool)), Decision::Ignore, "{tag}");
        }
        let triggers = StatementFacts { tool_triggers_only: true, ..PLAIN };
        assert_eq!(decide(Mode::Published, "ALTER TABLE", triggers, &[obj(&["p"])]), Decision::Ignore);
        assert_eq!(decide(Mode::Published, "DROP TRIGGER", triggers, &[obj(&["p"])]), Decision::Ignore);
        // The user's own trigger commands on the same table still go.
        assert!(matches!(decide(Mode::Published, "ALTER TABLE", PLAIN, &[obj(&["p"])]), Decision::Capture { .. }));
    }

    #[test]
    fn refusals_only_for_what_would_be_replicated() {
        assert!(matches!(decide(Mode::Published, "CREATE TABLE AS", PLAIN, &[obj(&["p"])]), Decision::Refuse { .. }));
        assert!(matches!(decide(Mode::All, "SELECT INTO", PLAIN, &[obj(&[])]), Decision::Refuse { .. }));
        assert_eq!(decide(Mode::Published, "CREATE TABLE AS", PLAIN, &[obj(&[])]), Decision::Ignore);
        let conc = StatementFacts { concurrent: true, ..PLAIN };
        assert!(matches!(decide(Mode::Published, "CREATE INDEX", conc, &[obj(&["p"])]), Decision::Refuse { .. }));
        let unknown = StatementFacts { text_unknown: true, ..PLAIN };
        assert!(matches!(decide(Mode::Published, "ALTER TABLE", unknown, &[obj(&["p"])]), Decision::Refuse { .. }));
        let secret = StatementFacts { carries_secret: true, ..PLAIN };
        assert!(matches!(decide(Mode::All, "ALTER ROLE", secret, &[]), Decision::Refuse { .. }));
        assert_eq!(decide(Mode::Published, "ALTER ROLE", secret, &[]), Decision::Ignore);
        assert!(!redacted_command("ALTER ROLE").contains('\''));
    }

    fn stmt(tag: &str) -> ParsedStatement {
        ParsedStatement { tag: tag.to_string(), carries_secret: false }
    }

    #[test]
    fn replay_accepts_schema_ddl_only() {
        for tag in [
            "CREATE TABLE",
            "ALTER TABLE",
            "DROP TABLE",
            "CREATE INDEX",
            "CREATE FUNCTION",
            "GRANT",
            "REVOKE",
            "COMMENT",
            "CREATE ROLE",
            "ALTER ROLE",
            "GRANT ROLE",
            "REFRESH MATERIALIZED VIEW",
        ] {
            assert_eq!(replay_refusal(&[stmt(tag)]), None, "{tag}");
        }
        for tag in [
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "COPY",
            "DO",
            "CALL",
            "EXECUTE",
            "SET",
            "RESET",
            "LOAD",
            "ALTER SYSTEM",
            "BEGIN",
            "COMMIT",
            "CREATE TABLE AS",
            "SELECT INTO",
            "CREATE SUBSCRIPTION",
            "DROP DATABASE",
            "DROP OWNED",
            "REASSIGN OWNED",
            "CHECKPOINT",
            "VACUUM",
            "LOCK TABLE",
            "DISCARD ALL",
            "NOTIFY",
        ] {
            assert!(replay_refusal(&[stmt(tag)]).is_some(), "{tag}");
        }
        assert!(replay_refusal(&[]).is_some());
        assert!(replay_refusal(&[stmt("CREATE TABLE"), stmt("CREATE TABLE")]).is_some());
        let secret = ParsedStatement { tag: "ALTER ROLE".into(), carries_secret: true };
        assert!(replay_refusal(&[secret]).is_some());
    }
}
