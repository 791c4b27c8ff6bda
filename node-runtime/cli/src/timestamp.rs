//! Milliseconds since the Unix epoch as UTC text (`2023-11-14T22:13:20.000Z`),
//! without a calendar crate: the days-to-civil conversion of Howard Hinnant's
//! `chrono`-compatible date algorithms.

/// Formats a time in milliseconds since the epoch as RFC 3339 UTC; `-` for 0,
/// which the API uses for "not set".
pub fn format_utc(ms: u64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    let seconds = ms / 1000;
    let millis = ms % 1000;
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day counted from 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days end each 4-year cycle.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn zero_means_not_set() {
        assert_eq!(format_utc(0), "-");
    }
}
