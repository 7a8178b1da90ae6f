//! The `runs` grammar: `every hour`, `every 30min`, `every half day`, ...

use std::time::Duration;

/// Syncs may not run more often than this.
const MIN_INTERVAL: Duration = Duration::from_secs(30);

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
