//! The commit time of a BEGIN/COMMIT/PREPARE document, as a `timestamptz`.
//!
//! Design notes
//! - The publisher writes it with `timestamptz_to_str`, in its walsender's
//!   `DateStyle`: with the default ISO style that is
//!   `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]]` (an explicit UTC offset, so
//!   no time-zone data is needed to read it back). Every applied transaction
//!   carries one; `timestamptz_in` (date-time tokenizer, field decoder, a C
//!   string copy) was a visible part of a small transaction's apply cost.
//! - [`parse_iso`] reads exactly that shape, pure and checked field by
//!   field (month, day of month, hour, minute, second, offset within
//!   `timestamptz_in`'s limits). Anything else — another `DateStyle`, BC
//!   years, years past 9999, `infinity`, more than six fractional digits,
//!   a leap second, `24:00:00` — returns `None`, and [`parse`] hands the
//!   text to `timestamptz_in` as before: the same value or the same ERROR.

use pgrx::pg_sys;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01 (UTC).
const PG_EPOCH_DAYS: i64 = 10_957;
const USECS_PER_DAY: i64 = 86_400_000_000;

/// The commit time `text` as PostgreSQL's `TimestampTz` (microseconds since
/// 2000-01-01 UTC); text the fast path does not read goes to `timestamptz_in`.
pub(crate) fn parse(text: &str) -> i64 {
    parse_iso(text).unwrap_or_else(|| timestamptz_in(text))
}

fn timestamptz_in(text: &str) -> i64 {
    let c = std::ffi::CString::new(text).unwrap_or_default();
    // SAFETY: timestamptz_in with a valid C string; it raises an ERROR on bad input.
    unsafe {
        pgrx::direct_function_call::<i64>(
            pg_sys::timestamptz_in,
            &[Some(pg_sys::Datum::from(c.as_ptr())), Some(pg_sys::Datum::from(0u32)), Some(pg_sys::Datum::from(-1i32))],
        )
        .unwrap_or(0)
    }
}

/// `YYYY-MM-DD HH:MM:SS[.f{1,6}]±HH[:MM[:SS]]` (years 0001–9999), as
/// `timestamptz_in` reads it; `None` for anything else.
pub(crate) fn parse_iso(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b' ') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if sep(at, b'.') {
        at += 1;
        let digits = b[at..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        micros = num(at, digits)? * 10i64.pow(6 - digits as u32);
        at += digits;
    }
    let sign = match b.get(at) {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    let off_h = num(at + 1, 2)?;
    at += 3;
    let (mut off_m, mut off_s) = (0, 0);
    if sep(at, b':') {
        off_m = num(at + 1, 2)?;
        at += 3;
        if sep(at, b':') {
            off_s = num(at + 1, 2)?;
            at += 3;
        }
    }
    // timestamptz_in's limits for an offset (MAX_TZDISP_HOUR is 15).
    if at != b.len() || off_h > 15 || off_m > 59 || off_s > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day) - PG_EPOCH_DAYS;
    let local = days * USECS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    // "+05:30" is five and a half hours ahead of UTC.
    Some(local - sign * ((off_h * 60 + off_m) * 60 + off_s) * 1_000_000)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the proleptic Gregorian date (PostgreSQL's
/// calendar for every year), after H. Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_iso;

    /// Expected values computed independently (Python's datetime: the
    /// microseconds from 2000-01-01 00:00:00 UTC).
    #[test]
    fn reads_the_iso_text_of_timestamptz_to_str() {
        for (text, want) in [
            ("2000-01-01 00:00:00+00", 0),
            ("1999-12-31 23:59:59.999999+00", -1),
            ("2026-11-30 12:20:15.123456+00", 849_356_415_123_456),
            ("2026-11-30 13:20:15.5+01", 849_352_815_500_000 + 3_600_000_000),
            ("2026-11-30 12:20:15.5+01", 849_352_815_500_000),
            ("1970-01-01 00:00:00+00", -946_684_800_000_000),
            ("0001-01-01 00:00:00+00", -63_082_281_600_000_000),
            ("9999-12-31 23:59:59.999999+00", 252_455_615_999_999_999),
            ("2024-02-29 01:02:03.04-03:30", 762_496_323_040_000),
            ("1890-06-01 00:00:00+05:53:28", -3_458_181_208_000_000),
        ] {
            assert_eq!(parse_iso(text), Some(want), "{text}");
        }
    }

    /// What the fast path leaves to timestamptz_in (which gives the value,
    /// or raises the ERROR it always raised).
    #[test]
    fn declines_everything_else() {
        for text in [
            "",
            "infinity",
            "-infinity",
            "2026-11-30T12:00:00+00",
            "0044-03-15 12:00:00+00 BC",
            "12026-11-30 12:00:00+00",
            "Mon Nov 30 12:00:00 2026 UTC",
            "11/30/2026 12:00:00 UTC",
            "2026-11-30 12:00:00",
            "2026-11-30 12:00:00 UTC",
            "2026-11-30 12:00:00.1234567+00",
            "2026-11-30 12:00:00.+00",
            "2026-11-30 12:00:60+00",
            "2026-11-30 24:00:00+00",
            "2026-02-29 12:00:00+00",
            "2026-13-01 12:00:00+00",
            "2026-00-01 12:00:00+00",
            "2026-11-00 12:00:00+00",
            "0000-01-01 12:00:00+00",
            "2026-11-30 12:00:00+16",
            "2026-11-30 12:00:00+1",
            "2026-11-30 12:00:00+01:60",
            "2026-11-30 12:00:00+01:00:00:00",
            "2026-11-30 12:00:00+01x",
            "2026-1a-30 12:00:00+00",
            "2026-11-30 12:00:00-+0",
        ] {
            assert_eq!(parse_iso(text), None, "{text}");
        }
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(parse_iso("2000-02-29 00:00:00+00").is_some());
        assert!(parse_iso("2024-02-29 00:00:00+00").is_some());
        assert!(parse_iso("1900-02-29 00:00:00+00").is_none());
        assert!(parse_iso("2100-02-29 00:00:00+00").is_none());
        assert_eq!(
            parse_iso("2000-03-01 00:00:00+00").unwrap() - parse_iso("2000-02-28 00:00:00+00").unwrap(),
            2 * 86_400_000_000
        );
    }
}
