//! How the subscribers cache is kept fresh: `--subscribers-refresh`,
//! `--subscribers-version-check` and `--subscribers-max-staleness`.

use std::time::Duration;

use super::parse::{bounded_duration as parse_bounded_duration, parse_duration};
use crate::error::{Error, Result};

/// `--subscribers-refresh`: when the cache is reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// Reload every interval, whether or not the table changed.
    Every(Duration),
    /// Reload when the table's change version moves: on a notification
    /// (LISTEN), after a listener reconnect, every `check` (notifications
    /// are lost while the listener is away) and before planning a batch.
    OnChange { check: Duration },
}

/// The subscribers cache's freshness settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribersSettings {
    pub refresh: RefreshPolicy,
    /// A cache not confirmed current for this long while reloads fail
    /// stops the run.
    pub max_staleness: Duration,
}

/// Shortest and longest reload interval or version check: each reload reads
/// the whole table, so a zero interval would reload it all the time.
const REFRESH_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(7 * 24 * 3600));

impl RefreshPolicy {
    /// The longest time between two looks at the table.
    pub fn interval(&self) -> Duration {
        match *self {
            RefreshPolicy::Every(d) => d,
            RefreshPolicy::OnChange { check } => check,
        }
    }
}

/// As the options are written: `--subscribers-refresh 1m`, or
/// `--subscribers-refresh on-change --subscribers-version-check 1m`.
impl std::fmt::Display for RefreshPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefreshPolicy::Every(d) => write!(f, "--subscribers-refresh {}", humantime::format_duration(*d)),
            RefreshPolicy::OnChange { check } => write!(
                f,
                "--subscribers-refresh on-change --subscribers-version-check {}",
                humantime::format_duration(*check)
            ),
        }
    }
}

impl SubscribersSettings {
    /// Parses the three options; the staleness bound must exceed the
    /// interval between looks at the table.
    pub(crate) fn parse(refresh: &str, version_check: &str, max_staleness: &str) -> Result<Self> {
        let refresh = match refresh.trim() {
            "on-change" => RefreshPolicy::OnChange {
                check: parse_bounded_duration("--subscribers-version-check", version_check, REFRESH_RANGE)?,
            },
            other => RefreshPolicy::Every(
                parse_bounded_duration("--subscribers-refresh", other, REFRESH_RANGE).map_err(|e| match e {
                    Error::Config { option, message } => {
                        Error::Config { option, message: format!("{message}; or on-change") }
                    }
                    other => other,
                })?,
            ),
        };
        let max_staleness = parse_duration("--subscribers-max-staleness", max_staleness)?;
        if max_staleness <= refresh.interval() {
            let (option, interval) = match refresh {
                RefreshPolicy::Every(d) => ("--subscribers-refresh", d),
                RefreshPolicy::OnChange { check } => ("--subscribers-version-check", check),
            };
            return Err(Error::config(
                "--subscribers-max-staleness",
                format!(
                    "'{}' must be longer than {option} ({})",
                    humantime::format_duration(max_staleness),
                    humantime::format_duration(interval)
                ),
            ));
        }
        Ok(SubscribersSettings { refresh, max_staleness })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_change_checks_the_version_and_a_duration_reloads_on_a_timer() {
        let s = SubscribersSettings::parse("on-change", "30s", "1h").unwrap();
        assert_eq!(s.refresh, RefreshPolicy::OnChange { check: Duration::from_secs(30) });
        let s = SubscribersSettings::parse("5m", "30s", "1h").unwrap();
        assert_eq!(s.refresh, RefreshPolicy::Every(Duration::from_secs(300)));
    }

    #[test]
    fn bad_values_name_the_option_and_the_choices() {
        let e = SubscribersSettings::parse("sometimes", "30s", "1h").unwrap_err().to_string();
        assert!(e.contains("--subscribers-refresh") && e.contains("on-change"), "{e}");
        let e = SubscribersSettings::parse("on-change", "2h", "1h").unwrap_err().to_string();
        assert!(e.contains("--subscribers-max-staleness") && e.contains("--subscribers-version-check"), "{e}");
    }
}
