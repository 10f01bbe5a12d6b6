//! The DDL part's setting, `logical_ext.ddl_capture`, defined by [`define`]
//! from `crate::settings::register` before the prefix is reserved.

use super::policy::Mode;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

pub(crate) static DDL_CAPTURE: GucSetting<Mode> = GucSetting::<Mode>::new(Mode::Published);

pub(crate) fn define() {
    GucRegistry::define_enum_guc(
        c"logical_ext.ddl_capture",
        c"Which DDL commands logical_ext captures and replicates: off, published or all.",
        c"published: commands touching tables in publications, or anything in a schema covered by a FOR TABLES \
IN SCHEMA or FOR ALL TABLES publication. all: every command except on temporary objects, extension members and \
logical_ext's own objects. Superuser-only, so that a session cannot hide its DDL from subscribers.",
        &DDL_CAPTURE,
        GucContext::Suset,
        GucFlags::default(),
    );
}
