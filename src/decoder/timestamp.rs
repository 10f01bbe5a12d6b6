//! The text of `timestamptz` and `timestamp` values in `DateStyle` ISO,
//! from their broken-down time.
//!
//! Design notes
//! - This is `EncodeDateTime`'s ISO branch (PostgreSQL 15,
//!   `src/backend/utils/adt/datetime.c`, with `AppendSeconds` and
//!   `EncodeTimezone`): `YYYY-MM-DD HH:MM:SS[.ffffff][+TZ][ BC]`, the
//!   fraction without trailing zeroes, the offset as `+HH`, `+HH:MM` or
//!   `+HH:MM:SS`. The broken-down time itself still comes from PostgreSQL
//!   (`timestamp2tm`, called by `values.rs`), so time zones and DST are
//!   PostgreSQL's (which refuses zones with leap seconds); what is saved is the output function's
//!   call, its `pstrdup`, our `strlen` and a second escaping pass.
//! - Other `DateStyle`s, infinite values' callers aside, are left to the
//!   output function (`values.rs` checks the setting at every value, so a
//!   change of it is seen at once).
//! - Pure and unit-tested; the cluster tests (`decoder_types.rs`) compare it
//!   with the output functions under several time zones.

/// A broken-down time as `timestamp2tm` fills it.
pub(crate) struct Fields {
    /// Astronomical year: 0 is 1 BC.
    pub(crate) year: i32,
    pub(crate) mon: i32,
    pub(crate) mday: i32,
    pub(crate) hour: i32,
    pub(crate) min: i32,
    pub(crate) sec: i32,
    /// Microseconds.
    pub(crate) fsec: i32,
    /// Seconds west of UTC (`timestamp2tm`'s `tz`), `None` for no time zone
    /// (a `timestamp`, or a `timestamptz` outside `pg_time_t`'s range).
    pub(crate) tz: Option<i32>,
}

/// `pg_ultostr_zeropad`: at least `width` digits.
fn push_padded(out: &mut Vec<u8>, v: u32, width: usize) {
    if width == 2 && v < 100 {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
        return;
    }
    if width == 4 && v < 10_000 {
        out.extend_from_slice(&[b'0' + (v / 1000) as u8, b'0' + (v / 100 % 10) as u8]);
        out.extend_from_slice(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
        return;
    }
    let text = itoa::Buffer::new().format(v).as_bytes().to_vec();
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    out.extend_from_slice(&text);
}

/// Append the ISO text; `false` (nothing appended) for values the output
/// function must print (fields out of their ranges).
pub(crate) fn push_iso(out: &mut Vec<u8>, f: &Fields) -> bool {
    let in_range = (1..=12).contains(&f.mon)
        && (0..=31).contains(&f.mday)
        && (0..=24).contains(&f.hour)
        && (0..=59).contains(&f.min)
        && (0..=60).contains(&f.sec)
        && (0..1_000_000).contains(&f.fsec);
    if !in_range {
        return false;
    }
    let year = if f.year > 0 { f.year as u32 } else { (1 - f.year as i64) as u32 };
    out.reserve(40);
    push_padded(out, year, 4);
    out.push(b'-');
    push_padded(out, f.mon as u32, 2);
    out.push(b'-');
    push_padded(out, f.mday as u32, 2);
    out.push(b' ');
    push_padded(out, f.hour as u32, 2);
    out.push(b':');
    push_padded(out, f.min as u32, 2);
    out.push(b':');
    push_padded(out, f.sec as u32, 2);
    if f.fsec != 0 {
        // Six digits, trailing zeroes dropped.
        let mut frac = [0u8; 6];
        let mut v = f.fsec as u32;
        for d in frac.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        let len = 6 - frac.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&frac[..len]);
    }
    if let Some(tz) = f.tz {
        // The offset is stored negated (seconds west).
        let total = tz.unsigned_abs();
        let (hour, min, sec) = (total / 3600, total / 60 % 60, total % 60);
        out.push(if tz <= 0 { b'+' } else { b'-' });
        push_padded(out, hour, 2);
        if sec != 0 || min != 0 {
            out.push(b':');
            push_padded(out, min, 2);
        }
        if sec != 0 {
            out.push(b':');
            push_padded(out, sec, 2);
        }
    }
    if f.year <= 0 {
        out.extend_from_slice(b" BC");
    }
    true
}

/// `EncodeSpecialTimestamp`: the text of `-infinity` and `infinity`.
pub(crate) fn special(ts: i64) -> Option<&'static [u8]> {
    match ts {
        i64::MIN => Some(b"-infinity"),
        i64::MAX => Some(b"infinity"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(year: i32, mon: i32, mday: i32, (hour, min, sec): (i32, i32, i32), fsec: i32, tz: Option<i32>) -> String {
        let mut out = Vec::new();
        assert!(push_iso(&mut out, &Fields { year, mon, mday, hour, min, sec, fsec, tz }));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn iso_texts() {
        assert_eq!(text(2026, 1, 1, (0, 0, 1), 0, Some(0)), "2026-01-01 00:00:01+00");
        assert_eq!(text(2026, 11, 22, (10, 0, 0), 500_000, Some(-7200)), "2026-11-22 10:00:00.5+02");
        assert_eq!(text(2026, 11, 22, (10, 0, 0), 123_456, Some(-19800)), "2026-11-22 10:00:00.123456+05:30");
        assert_eq!(text(1900, 1, 1, (0, 0, 0), 1, Some(2670)), "1900-01-01 00:00:00.000001-00:44:30");
        assert_eq!(text(2026, 3, 8, (23, 59, 59), 100, Some(12600)), "2026-03-08 23:59:59.0001-03:30");
        assert_eq!(text(0, 1, 1, (0, 0, 0), 0, Some(0)), "0001-01-01 00:00:00+00 BC");
        assert_eq!(text(-4712, 11, 24, (12, 0, 0), 0, None), "4713-11-24 12:00:00 BC");
        assert_eq!(text(294276, 12, 31, (23, 59, 59), 999_999, None), "294276-12-31 23:59:59.999999");
        assert_eq!(text(10000, 1, 2, (3, 4, 5), 60, None), "10000-01-02 03:04:05.00006");
        assert_eq!(text(7, 1, 2, (3, 4, 5), 0, Some(-360_000)), "0007-01-02 03:04:05+100");
    }

    #[test]
    fn odd_fields_are_left_to_the_output_function() {
        let mut out = Vec::new();
        let f = Fields { year: 2026, mon: 13, mday: 1, hour: 0, min: 0, sec: 0, fsec: 0, tz: None };
        assert!(!push_iso(&mut out, &f));
        let f = Fields { fsec: 1_000_000, mon: 1, ..f };
        assert!(!push_iso(&mut out, &f));
        assert!(out.is_empty());
        assert_eq!(special(i64::MIN), Some(&b"-infinity"[..]));
        assert_eq!(special(0), None);
    }
}
