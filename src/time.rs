//! Wall-clock time as the store keeps it, integer unix milliseconds, and how it is shown: RFC 3339,
//! UTC text for people, and how long ago.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `wait` after `at_ms`, saturating: a wait that came from outside (a token's `expires_in`, a
/// `Retry-After`) may be anything, and `as i64` would wrap a huge one into the past.
pub fn after(at_ms: i64, wait: Duration) -> i64 {
    at_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

/// A short human description of how far `then_ms` is from now: "3 min ago" for the past,
/// "in 59 min" for the future (expiry times and next tries are usually ahead of us).
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    if then_ms > now_ms {
        return format!("in {}", span((then_ms - now_ms) / 1000));
    }
    format!("{} ago", span((now_ms - then_ms) / 1000))
}

/// Whole seconds as the largest unit that fits: "5 s", "3 min", "2 h", "4 d".
fn span(secs: i64) -> String {
    match secs {
        i64::MIN..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A UTC timestamp for pages and the CLI: `2026-11-23 22:40:05 UTC`.
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 in UTC with milliseconds: `2026-11-23T22:40:05.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_after_a_time_saturates_instead_of_wrapping() {
        assert_eq!(after(1_000, Duration::from_millis(234)), 1_234);
        assert_eq!(after(1_000, Duration::from_secs(u64::MAX)), i64::MAX, "as i64 would be 0 ms");
        assert_eq!(after(1_000, Duration::from_millis(i64::MAX as u64)), i64::MAX, "the sum overflows");
        assert_eq!(after(-5, Duration::ZERO), -5);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_472_405_000), "2026-11-23 22:20:05 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn rfc3339_has_milliseconds_and_a_z() {
        assert_eq!(rfc3339(1_795_472_405_123), "2026-11-23T22:20:05.123Z");
    }

    #[test]
    fn ago_picks_a_readable_unit() {
        assert_eq!(ago(0, 5_000), "5 s ago");
        assert_eq!(ago(0, 180_000), "3 min ago");
        assert_eq!(ago(0, 7_200_000), "2 h ago");
        assert_eq!(ago(0, 3 * 86_400_000), "3 d ago");
        assert_eq!(ago(1_000, 1_000), "0 s ago");
    }

    #[test]
    fn ago_says_in_for_future_times() {
        // A token valid for an hour, read one second after it was issued.
        assert_eq!(ago(3_600_000, 1_000), "in 59 min");
        assert_eq!(ago(65_000, 5_000), "in 1 min");
        assert_eq!(ago(5_999, 0), "in 5 s");
        assert_eq!(ago(7_200_000, 0), "in 2 h");
        assert_eq!(ago(2 * 86_400_000, 0), "in 2 d");
    }

    #[test]
    fn ago_changes_unit_at_the_boundaries() {
        assert_eq!(ago(0, 59_999), "59 s ago");
        assert_eq!(ago(0, 60_000), "1 min ago");
        assert_eq!(ago(0, 3_599_999), "59 min ago");
        assert_eq!(ago(0, 3_600_000), "1 h ago");
        assert_eq!(ago(0, 86_399_999), "23 h ago");
        assert_eq!(ago(0, 86_400_000), "1 d ago");
    }
}
