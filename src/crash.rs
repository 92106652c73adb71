//! Named crash points for the exactly-once tests.
//!
//! When the environment variable `SPARKLET_CRASH_AT` names a point, the
//! process aborts there at once (no destructors, no flushing, like `kill -9`).
//! `SPARKLET_CRASH_AT=after-pg-commit@2` aborts the second time the point is
//! reached. Unset (the normal case), a point costs one atomic load.
//!
//! Points: `after-write-ahead`, `pg-mid-copy`, `after-pg-commit`,
//! `kafka-mid-transaction`, `after-kafka-commit`, `before-commit-log`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Names of all crash points, for tests and docs.
pub const POINTS: &[&str] = &[
    "after-write-ahead",
    "pg-mid-copy",
    "after-pg-commit",
    "kafka-mid-transaction",
    "after-kafka-commit",
    "before-commit-log",
];

static TARGET: OnceLock<Option<(String, u32)>> = OnceLock::new();
static HITS: AtomicU32 = AtomicU32::new(0);

/// Aborts the process if `SPARKLET_CRASH_AT` names this point (and hit count).
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let raw = std::env::var("SPARKLET_CRASH_AT").ok()?;
        let (point, nth) = match raw.split_once('@') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (raw, 1),
        };
        Some((point, nth))
    });
    if let Some((point, nth)) = target {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            eprintln!("sparklet: crash point {name} reached, aborting (SPARKLET_CRASH_AT)");
            std::process::abort();
        }
    }
}
