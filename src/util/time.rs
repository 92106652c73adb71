//! Time stamps: RFC 3339 text and milliseconds.

use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 rendering of epoch milliseconds.
pub(crate) fn rfc3339_ms(epoch_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(epoch_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds in a duration, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
