//! Parsers of option values that several settings share: durations,
//! counts, addresses. Each error names the option and the bad value.

use std::time::Duration;

use crate::error::{Error, Result};

/// `--http-addr`: HOST:PORT with an IP address (127.0.0.1:9464, [::]:9464,
/// 0.0.0.0:9464 to serve every interface).
pub(crate) fn http_addr(value: &str) -> Result<std::net::SocketAddr> {
    value.trim().parse().map_err(|_| {
        Error::config(
            "--http-addr",
            format!("'{value}' is not IP:PORT (e.g. 127.0.0.1:9464, or 0.0.0.0:9464 for every interface)"),
        )
    })
}

/// Parses a duration that must lie within `(min, max)`, both inclusive.
pub(crate) fn bounded_duration(option: &str, value: &str, (min, max): (Duration, Duration)) -> Result<Duration> {
    let duration = parse_duration(option, value)?;
    if duration < min || duration > max {
        return Err(Error::config(
            option,
            format!(
                "'{}' is out of range: must be between {} and {}",
                value.trim(),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(duration)
}

/// Parses a human-readable duration such as `500ms`, `5s`, `1m` or `0s`.
pub fn parse_duration(option: &str, value: &str) -> Result<Duration> {
    let value = value.trim();
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value)
        .map_err(|e| Error::config(option, format!("'{value}' is not a duration such as 500ms, 5s or 1m: {e}")))
}

/// `--max-offsets-per-trigger`: a positive number or `unlimited`.
pub(crate) fn max_offsets(value: &str) -> Result<Option<u64>> {
    match value.trim() {
        "unlimited" => Ok(None),
        v => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Error::config(
                "--max-offsets-per-trigger",
                format!("'{v}' is not a positive number of offsets or 'unlimited'"),
            )),
        },
    }
}

/// A required text option, trimmed.
pub(crate) fn non_empty(option: &str, value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::config(option, "must not be empty"));
    }
    Ok(value.trim().to_string())
}
