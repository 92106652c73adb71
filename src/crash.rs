//! Named crash points for the exactly-once tests: a test-only facility.
//!
//! Only a build with the `crash-points` feature acts on them (`cargo test`
//! turns it on; `cargo build`, `cargo run` and `cargo install` do not, so the
//! binary users run ignores `SPARKLET_CRASH_AT` and `SPARKLET_STOP_AT`, and a
//! point compiles to nothing). With the feature, when the environment variable
//! `SPARKLET_CRASH_AT` names a point, the process aborts there at once (no
//! destructors, no flushing, like `kill -9`);
//! `SPARKLET_CRASH_AT=after-pg-commit@2` aborts the second time.
//!
//! `SPARKLET_STOP_AT` names a point the same way, and there the process
//! stops itself with SIGSTOP instead (a zombie paused at an exact step, for
//! instance inside its Kafka transaction after its records were sent); the
//! test that set it resumes it with SIGCONT.
//!
//! [`POINTS`] is the one list: the exactly-once test crashes at each of them,
//! and a unit test checks that every point in the code is in the list.

/// Names of all crash points, for tests and docs.
pub const POINTS: &[&str] = &[
    "after-write-ahead",
    "pg-mid-copy",
    "after-pg-commit",
    "kafka-mid-transaction",
    "kafka-before-commit",
    "after-kafka-commit",
    "before-commit-log",
];

/// Does nothing: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Aborts the process if `SPARKLET_CRASH_AT` names this point (and hit
/// count); stops it with SIGSTOP if `SPARKLET_STOP_AT` does.
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    static CRASH: Target = Target::new("SPARKLET_CRASH_AT");
    static STOP: Target = Target::new("SPARKLET_STOP_AT");
    if CRASH.hit(name) {
        eprintln!("sparklet: crash point {name} reached, aborting (SPARKLET_CRASH_AT)");
        std::process::abort();
    }
    if STOP.hit(name) {
        eprintln!("sparklet: stop point {name} reached, stopping (SPARKLET_STOP_AT)");
        stop_self();
        eprintln!("sparklet: continued after stop point {name}");
    }
}

/// The point (and hit count) an environment variable names, and the hits
/// of that point so far.
#[cfg(feature = "crash-points")]
struct Target {
    variable: &'static str,
    target: std::sync::OnceLock<Option<(String, u32)>>,
    hits: std::sync::atomic::AtomicU32,
}

#[cfg(feature = "crash-points")]
impl Target {
    const fn new(variable: &'static str) -> Self {
        Target { variable, target: std::sync::OnceLock::new(), hits: std::sync::atomic::AtomicU32::new(0) }
    }

    /// Whether this hit of `name` is the one the variable names.
    fn hit(&self, name: &str) -> bool {
        let target = self.target.get_or_init(|| {
            let raw = std::env::var(self.variable).ok()?;
            let (point, nth) = match raw.split_once('@') {
                Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
                None => (raw, 1),
            };
            Some((point, nth))
        });
        match target {
            Some((point, nth)) if point == name => {
                self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *nth
            }
            _ => false,
        }
    }
}

/// Stops the whole process (every thread) until it gets SIGCONT.
#[cfg(all(feature = "crash-points", unix))]
fn stop_self() {
    // SAFETY: raise() only sends a signal to this process; SIGSTOP cannot
    // be caught, so no handler runs.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

#[cfg(all(feature = "crash-points", not(unix)))]
fn stop_self() {}

#[cfg(test)]
mod tests {
    use super::POINTS;

    /// Every `crash::point("...")` in the source is in [`POINTS`], so the
    /// exactly-once test (which crashes at each listed point) covers it.
    #[test]
    fn every_point_in_the_code_is_listed() {
        let mut found = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("crash.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for part in text.split("crash::point(\"").skip(1) {
                        found.push(part.split('"').next().unwrap().to_string());
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        let mut listed: Vec<String> = POINTS.iter().map(|p| p.to_string()).collect();
        listed.sort();
        assert_eq!(found, listed);
    }
}
