//! The stored layout of a `numeric` (PostgreSQL 15,
//! `src/backend/utils/adt/numeric.c`: its header words are defined there,
//! not in a header pgrx binds). Read by the decoder's printer
//! (`decoder/numeric.rs`) and written by the apply worker's reader
//! (`apply/numeric_input.rs`): one set of names for both.

/// Decimal digits per stored base-10000 digit (`DEC_DIGITS`, `NBASE`).
pub(crate) const DEC_DIGITS: usize = 4;

// The first 16-bit word (`n_header` / `n_sign_dscale`), numeric.c's names.
pub(crate) const SIGN_MASK: u16 = 0xC000;
pub(crate) const NEG: u16 = 0x4000;
pub(crate) const SHORT: u16 = 0x8000;
pub(crate) const SPECIAL: u16 = 0xC000;
pub(crate) const NAN: u16 = 0xC000;
pub(crate) const PINF: u16 = 0xD000;
pub(crate) const NINF: u16 = 0xF000;
pub(crate) const SHORT_SIGN_MASK: u16 = 0x2000;
pub(crate) const SHORT_DSCALE_MASK: u16 = 0x1F80;
pub(crate) const SHORT_DSCALE_SHIFT: u16 = 7;
pub(crate) const SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
pub(crate) const SHORT_WEIGHT_MASK: u16 = 0x003F;
/// The weights the short form holds (`NUMERIC_SHORT_WEIGHT_MIN/MAX`).
pub(crate) const SHORT_WEIGHT_MIN: i32 = -0x40;
pub(crate) const SHORT_WEIGHT_MAX: i32 = 0x3F;
/// `NUMERIC_DSCALE_MASK`: the largest display scale the format stores.
pub(crate) const DSCALE_MASK: u16 = 0x3FFF;
