//! `pg_lsn` as a Rust type for `#[pg_extern]` results and SPI arguments
//! (pgrx 0.18 has no mapping for it). A `pg_lsn` Datum is the 64-bit
//! `XLogRecPtr` passed by value.

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, impl_sql_translatable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Lsn(pub(crate) u64);

impl std::fmt::Display for Lsn {
    /// PostgreSQL's `%X/%X` form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl IntoDatum for Lsn {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::PG_LSNOID
    }
}

impl FromDatum for Lsn {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Lsn> {
        (!is_null).then(|| Lsn(datum.value() as u64))
    }
}

impl_sql_translatable!(Lsn, "pg_lsn");

// SAFETY: a pg_lsn is returned by value, exactly as `into_datum` builds it.
unsafe impl BoxRet for Lsn {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a by-value Datum needs no memory context.
            Some(d) => unsafe { fcinfo.return_raw_datum(d) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: a pg_lsn argument is a by-value Datum read with `FromDatum`.
unsafe impl<'fcx> ArgAbi<'fcx> for Lsn {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the argument's type is pg_lsn.
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: as above.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x100).to_string(), "0/100");
    }
}
