//! Server settings (`logical_ext.*`). The prefix is reserved at load time so
//! a misspelt `logical_ext.*` setting is an error instead of being silently
//! kept as a placeholder. Later parts register their settings here.

use pgrx::pg_sys;

pub(crate) fn register() {
    // Define before reserving: reserving drops placeholders, which would
    // lose values set in postgresql.conf before the library was loaded.
    crate::monitoring::settings::define();
    crate::apply::settings::define();
    crate::ddl::settings::define();
    crate::sequences::settings::define();
    crate::failover::settings::define();
    // SAFETY: called from _PG_init with a static string.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"logical_ext".as_ptr()) }
}
