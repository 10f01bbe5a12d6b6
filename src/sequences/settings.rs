//! The sequence capture's setting (`logical_ext.sequence_capture_interval`),
//! defined from `crate::settings::register` before the prefix is reserved.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Milliseconds between two reads of the replicated sequences; 0 stops the
/// capture.
pub(crate) static CAPTURE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3000);

pub(crate) fn define() {
    GucRegistry::define_int_guc(
        c"logical_ext.sequence_capture_interval",
        c"How often the publisher's sequence capture reads the replicated sequences.",
        c"Sequences that moved are sent in the stream at most this late. 0 stops the capture.",
        &CAPTURE_INTERVAL,
        0,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}
