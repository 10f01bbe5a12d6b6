//! What PostgreSQL's raw parser says about SQL text we are about to capture
//! or replay: each statement's command tag and whether it carries a secret
//! (a password in role or FDW options, a connection string). Decisions are
//! made elsewhere (`ddl/policy.rs`); this only reads parse trees.

use super::{cstr_to_string, ptr_list};
use pgrx::pg_sys;

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedStatement {
    /// `CREATE TABLE`, `ALTER ROLE`, ... (protocol text, never translated).
    pub(crate) tag: String,
    /// A password, passphrase or connection string appears in it.
    pub(crate) carries_secret: bool,
}

/// Each statement of `sql`; a syntax error is raised as an ERROR.
pub(crate) fn parse_statements(sql: &str) -> Vec<ParsedStatement> {
    let c = std::ffi::CString::new(sql).unwrap_or_else(|_| pgrx::error!("the command contains a NUL byte"));
    // SAFETY: raw_parser returns a List of RawStmt for a valid C string.
    let stmts: Vec<*mut pg_sys::RawStmt> =
        unsafe { ptr_list(pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT)) };
    stmts
        .into_iter()
        .map(|raw| {
            // SAFETY: each RawStmt wraps a raw parse tree CreateCommandTag knows.
            unsafe {
                let node = (*raw).stmt;
                ParsedStatement {
                    tag: cstr_to_string(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(node))),
                    carries_secret: node_carries_secret(node),
                }
            }
        })
        .collect()
}

/// Option names whose values are secrets (role passwords; `password`,
/// `sslpassword`, `passphrase` ... of foreign servers and user mappings).
pub(crate) fn secret_option(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("passphrase") || n.contains("secret")
}

/// Whether a utility statement's parse tree carries a secret.
///
/// # Safety
/// `node` must be NULL or a valid raw or analysed utility parse tree.
pub(crate) unsafe fn node_carries_secret(node: *mut pg_sys::Node) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: the tag says which struct `node` is; option lists are lists of
    // DefElem.
    unsafe {
        let options = match (*node).type_ {
            pg_sys::NodeTag::T_CreateRoleStmt => (*(node as *mut pg_sys::CreateRoleStmt)).options,
            pg_sys::NodeTag::T_AlterRoleStmt => (*(node as *mut pg_sys::AlterRoleStmt)).options,
            pg_sys::NodeTag::T_CreateUserMappingStmt => (*(node as *mut pg_sys::CreateUserMappingStmt)).options,
            pg_sys::NodeTag::T_AlterUserMappingStmt => (*(node as *mut pg_sys::AlterUserMappingStmt)).options,
            pg_sys::NodeTag::T_CreateForeignServerStmt => (*(node as *mut pg_sys::CreateForeignServerStmt)).options,
            pg_sys::NodeTag::T_AlterForeignServerStmt => (*(node as *mut pg_sys::AlterForeignServerStmt)).options,
            pg_sys::NodeTag::T_CreateFdwStmt => (*(node as *mut pg_sys::CreateFdwStmt)).options,
            pg_sys::NodeTag::T_AlterFdwStmt => (*(node as *mut pg_sys::AlterFdwStmt)).options,
            // Connection strings may hold passwords.
            pg_sys::NodeTag::T_CreateSubscriptionStmt | pg_sys::NodeTag::T_AlterSubscriptionStmt => return true,
            _ => return false,
        };
        ptr_list::<pg_sys::DefElem>(options).into_iter().any(|d| secret_option(&cstr_to_string((*d).defname)))
    }
}

#[cfg(test)]
mod tests {
    use super::secret_option;

    #[test]
    fn secret_options() {
        for name in ["password", "PASSWORD", "sslpassword", "passphrase", "client_secret"] {
            assert!(secret_option(name), "{name}");
        }
        for name in ["user", "host", "dbname", "sslmode", "connlimit"] {
            assert!(!secret_option(name), "{name}");
        }
    }
}
