//! RFC 3339 times, as the API, the delivery log, the dashboard and the CLI write them (UTC, to
//! the millisecond) and as the API reads them (`send_at`, `expiration`).

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `t` in UTC, to the millisecond, always three digits (`2026-12-01T11:38:56.120Z`): every
/// time has the same width, so log lines line up and sort as text.
pub fn format(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// A time with any offset.
pub fn parse(s: &str) -> Result<SystemTime, time::error::Parse> {
    time::OffsetDateTime::parse(s, &Rfc3339).map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trips_to_the_millisecond() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_800_000_000_123_456_789);
        assert_eq!(format(t), "2027-01-15T08:00:00.123Z");
        assert_eq!(
            parse("2027-01-15T09:00:00.123+01:00").unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_800_000_000_123)
        );
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(60)),
            "1970-01-01T00:01:00.000Z"
        );
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_millis(1_800_000_000_440)),
            "2027-01-15T08:00:00.440Z",
            "a fixed width, not .44Z"
        );
        assert!(parse("yesterday").is_err());
    }
}
