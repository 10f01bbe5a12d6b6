//! Running code as another role, and back.
//!
//! PostgreSQL 16 applies replicated changes as each table's owner and runs
//! code of less trusted roles under `SECURITY_RESTRICTED_OPERATION` with a
//! safe `search_path` (`SwitchToUntrustedUser`, `utils/init/usercontext.c`).
//! PostgreSQL 15 has no such helper, so [`AsRole`] is ours: a guard that
//! switches the current user id (and, for an untrusted target, restricts the
//! operation and pins `search_path = pg_catalog, pg_temp` in a GUC nest
//! level), and undoes all of it when dropped — on success, and when an ERROR
//! unwinds through it.

use pgrx::pg_sys;

/// The bootstrap superuser (`BOOTSTRAP_SUPERUSERID`): owner of the catalogs,
/// always a superuser, never droppable.
pub(crate) const BOOTSTRAP_SUPERUSER: pg_sys::Oid = pg_sys::Oid::from_u32(10);

/// While alive, the backend runs as another role; dropping it restores the
/// saved user id, security context and settings.
#[must_use = "the role switch lasts as long as the guard"]
pub(crate) struct AsRole {
    user: pg_sys::Oid,
    sec_context: i32,
    guc_nest_level: Option<i32>,
}

impl AsRole {
    /// Become `role`. `SECURITY_LOCAL_USERID_CHANGE` is always set (the code
    /// run cannot `SET ROLE` or `SET SESSION AUTHORIZATION` its way out).
    /// When `role` could not itself become the current user — it is less
    /// trusted — `SECURITY_RESTRICTED_OPERATION` is added and `search_path`
    /// is pinned to `pg_catalog, pg_temp`, exactly as PostgreSQL 16's
    /// `SwitchToUntrustedUser` does.
    pub(crate) fn become_role(role: pg_sys::Oid) -> AsRole {
        // Plain reads/writes of the backend's user id state, without a pgrx
        // guard (they raise nothing; `ffi/unguarded.rs`): a role switch is
        // made per applied change.
        let (user, sec_context) = super::unguarded::user_id_and_sec_context();
        // SAFETY: the previous values are restored by Drop.
        unsafe {
            let trusted = pg_sys::is_member_of_role(role, user);
            let mut new_context = sec_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
            if !trusted {
                new_context |= pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
            }
            let guc_nest_level = if trusted { None } else { Some(pg_sys::NewGUCNestLevel()) };
            super::unguarded::set_user_id_and_sec_context(role, new_context);
            if guc_nest_level.is_some() {
                pin_search_path();
            }
            AsRole { user, sec_context, guc_nest_level }
        }
    }

    /// Become `role` under `SECURITY_RESTRICTED_OPERATION` with `search_path`
    /// pinned to `pg_catalog, pg_temp`, whoever the current user is: for
    /// code that evaluates other roles' functions (a table's types,
    /// operators, row filter) and must not change session state or find
    /// objects by an unpinned path (online reconciliation).
    pub(crate) fn become_role_restricted(role: pg_sys::Oid) -> AsRole {
        let (user, sec_context) = super::unguarded::user_id_and_sec_context();
        // SAFETY: the previous values are restored by Drop; the GUC nest
        // level pushed here is popped there.
        unsafe {
            let nest = pg_sys::NewGUCNestLevel();
            super::unguarded::set_user_id_and_sec_context(
                role,
                sec_context
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            pin_search_path();
            AsRole { user, sec_context, guc_nest_level: Some(nest) }
        }
    }

    /// Become the bootstrap superuser for catalog reads of our own (schema-
    /// qualified SQL of the extension, never user text), restricted so that
    /// nothing run meanwhile can change session state.
    pub(crate) fn bootstrap_superuser() -> AsRole {
        let (mut user, mut sec_context) = (pg_sys::InvalidOid, 0i32);
        // SAFETY: as in `become_role`.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut sec_context);
            let nest = pg_sys::NewGUCNestLevel();
            pg_sys::SetUserIdAndSecContext(
                BOOTSTRAP_SUPERUSER,
                sec_context
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            pin_search_path();
            AsRole { user, sec_context, guc_nest_level: Some(nest) }
        }
    }
}

/// `search_path = pg_catalog, pg_temp`, undone when the caller's GUC nest
/// level is popped.
///
/// # Safety
/// Inside a transaction, with a GUC nest level pushed by the caller.
unsafe fn pin_search_path() {
    // SAFETY: per the contract; the value is a valid search_path.
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

impl Drop for AsRole {
    fn drop(&mut self) {
        // SAFETY: restores what `become_role` saved. AtEOXact_GUC pops only
        // the nest level this guard pushed (and any left above it by an
        // ERROR), as a function's `SET` clause does on exit.
        unsafe {
            if let Some(level) = self.guc_nest_level {
                pg_sys::AtEOXact_GUC(true, level);
            }
            super::unguarded::set_user_id_and_sec_context(self.user, self.sec_context);
        }
    }
}

/// The OID of role `name` on this node, if it exists.
pub(crate) fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: missing_ok = true returns InvalidOid instead of raising.
    let oid = unsafe { pg_sys::get_role_oid(c.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}
