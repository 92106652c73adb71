//! Capped exponential back-off with jitter, for whatever retries: the
//! trigger loop after a failure, the subscribers cache after a failed
//! reload. A leaf: it uses nothing of the crate but the clock.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The longest wait between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait after the `failures`th failure in a row: 0.5 s, 1 s, 2 s, ...
/// at most [`MAX_BACKOFF`], less up to a fifth (`jitter` in 0..=1), so
/// replicas that failed together do not retry together.
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let step = Duration::from_millis(500 * 2u64.saturating_pow(failures.saturating_sub(1).min(16))).min(MAX_BACKOFF);
    step.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// A number in 0..1 that differs between calls and processes (each
/// `RandomState` has keys of its own).
pub(crate) fn jitter() -> f64 {
    let hash = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (hash % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_30_s_less_up_to_a_fifth_of_jitter() {
        let waits: Vec<f64> = (1..=8).map(|n| backoff(n, 0.0).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        assert_eq!(backoff(1_000, 0.0), MAX_BACKOFF, "no overflow");
        assert_eq!(backoff(7, 1.0), Duration::from_secs(24));
        let jitters: std::collections::HashSet<u64> = (0..20).map(|_| (jitter() * 10_000.0) as u64).collect();
        assert!(jitters.len() > 1, "jitter varies: {jitters:?}");
        assert!(jitters.iter().all(|j| *j < 10_000));
    }
}
