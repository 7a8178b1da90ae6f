//! The `runs` grammar: `every hour`, `every 30min`, `every half day`, ...

use std::time::Duration;

/// Syncs may not run more often than this.
const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// The longest frequency the API sets for a connection (a century):
/// past it, the dates of a schedule leave what a timestamp holds.
pub const MAX_API_INTERVAL: Duration = Duration::from_secs(100 * 31_557_600);

/// Whether `frequency` has the shape the original's API takes for a
/// connection's own frequency (its `frequencySchema`): an optional
/// `every `, then a whole amount and a unit of seconds to days, or
/// `month`, `week`, `half day`, `half hour`, `quarter hour`.
pub fn api_frequency_shape(frequency: &str) -> bool {
    let rest = frequency.strip_prefix("every ").unwrap_or(frequency);
    if ["month", "week", "half day", "half hour", "quarter hour"].contains(&rest) {
        return true;
    }
    let unit = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let unit = unit.strip_prefix(char::is_whitespace).unwrap_or(unit);
    matches!(
        unit,
        "s" | "sec"
            | "secs"
            | "second"
            | "seconds"
            | "m"
            | "min"
            | "mins"
            | "minute"
            | "minutes"
            | "h"
            | "hr"
            | "hrs"
            | "hour"
            | "hours"
            | "d"
            | "day"
            | "days"
    )
}

/// A frequency as the original's API answers it (`getInterval`'s
/// `interval`): a special phrase as its interval (`every day` → `1d`,
/// `every half hour` → `30m`), anything else without its `every `
/// (`every 2 hours` → `2 hours`).
pub fn interval_text(frequency: &str) -> String {
    let text = frequency.trim();
    let special = match text {
        "every half day" => "12h",
        "every half hour" => "30m",
        "every quarter hour" => "15m",
        "every hour" => "1h",
        "every day" => "1d",
        "every week" => "1w",
        "every month" => "30d",
        _ => return text.strip_prefix("every ").unwrap_or(text).to_string(),
    };
    special.to_string()
}

/// The interval of a `runs` value, or the original's error code
/// (`sync_interval_invalid`, `sync_interval_too_short`).
pub fn parse_interval(runs: &str) -> Result<Duration, &'static str> {
    let text = runs.trim();
    let special = match text {
        "every half day" => Some(12 * 3600),
        "every half hour" => Some(30 * 60),
        "every quarter hour" => Some(15 * 60),
        "every hour" => Some(3600),
        "every day" => Some(24 * 3600),
        "every week" => Some(7 * 24 * 3600),
        "every month" => Some(30 * 24 * 3600),
        _ => None,
    };
    let interval = match special {
        Some(secs) => Duration::from_secs(secs),
        None => {
            let rest = text.strip_prefix("every ").unwrap_or(text);
            ms(rest).ok_or("sync_interval_invalid")?
        }
    };
    if interval < MIN_INTERVAL {
        return Err("sync_interval_too_short");
    }
    Ok(interval)
}

/// The `ms` package's syntax: a number, optional spaces, an optional unit
/// (milliseconds when absent).
fn ms(text: &str) -> Option<Duration> {
    if text.is_empty() || text.len() > 100 {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let unit = unit.trim_start_matches(' ').to_ascii_lowercase();
    let factor = match unit.as_str() {
        "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 0.001,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        "w" | "week" | "weeks" => 604800.0,
        "y" | "yr" | "yrs" | "year" | "years" => 31557600.0,
        _ => return None,
    };
    let secs = value * factor;
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_numbers_are_invalid_not_a_crash() {
        assert_eq!(
            parse_interval("every 99999999999999999999 years"),
            Err("sync_interval_invalid")
        );
        assert_eq!(
            parse_interval("every -5 minutes"),
            Err("sync_interval_invalid")
        );
    }

    #[test]
    fn the_apis_frequency_shape_is_the_originals() {
        for ok in [
            "every hour",
            "every 2h",
            "every 30 minutes",
            "45m",
            "every half day",
            "week",
            "every 1 day",
        ] {
            assert!(api_frequency_shape(ok), "{ok}");
        }
        for bad in [
            "every 0.5 minutes",
            "every 1.5h",
            "every 5000 ms",
            "every 2 weeks",
            "Every hour",
            "every 1  h",
            "every -5 minutes",
            "",
        ] {
            assert!(!api_frequency_shape(bad), "{bad}");
        }
    }

    #[test]
    fn phrases_units_and_limits() {
        assert_eq!(parse_interval("every hour"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_interval("every half day"),
            Ok(Duration::from_secs(43200))
        );
        assert_eq!(
            parse_interval("every 6 hours"),
            Ok(Duration::from_secs(21600))
        );
        assert_eq!(parse_interval("every 5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("every 1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_interval("every 1 day"),
            Ok(Duration::from_secs(86400))
        );
        assert_eq!(parse_interval("every 10s"), Err("sync_interval_too_short"));
        assert_eq!(
            parse_interval("every blue moon"),
            Err("sync_interval_invalid")
        );
    }
}
