//! Keeping the subscribers cache fresh: a reload once it is older than
//! `--subscribers-refresh`; a failed reload keeps the current version (and
//! says so) and is tried again with back-off (0.5 s, 1 s, 2 s ... 30 s), not
//! at every trigger; a cache older than `--subscribers-max-staleness` while
//! reloads fail stops the run with the last failure.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

use super::{load_subscribers, Query};

/// Failed reloads since the last good one.
#[derive(Debug, Default)]
pub(super) struct Reloads {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

impl Query {
    /// Reloads the subscribers cache if it is due (see the module docs).
    pub(super) async fn refresh_subscribers_if_stale(&mut self) -> Result<()> {
        let age = self.subscribers.age();
        if age < self.config.subscribers_refresh {
            return Ok(());
        }
        if self.reloads.retry_at.is_some_and(|at| Instant::now() < at) {
            return self.check_staleness(age);
        }
        match load_subscribers(&self.config, &self.checkpoint, "timer").await {
            Ok(fresh) => {
                self.subscribers = fresh;
                self.reloads = Reloads::default();
                return Ok(());
            }
            Err(error) => {
                self.reloads.failures += 1;
                let retry_in = crate::driver::backoff(self.reloads.failures);
                self.reloads.retry_at = Some(Instant::now() + retry_in);
                self.reloads.last_error = Some(error.chain().to_string());
                crate::events::SubscribersReloadFailed { error: &error, age, retry_in }.emit();
            }
        }
        self.check_staleness(age)
    }

    /// Stops the run once the cache is older than allowed and reloads fail.
    fn check_staleness(&self, age: Duration) -> Result<()> {
        match &self.reloads.last_error {
            Some(cause) if age > self.config.subscribers_max_staleness => Err(Error::SubscribersStale {
                age_s: age.as_secs(),
                max: humantime::format_duration(self.config.subscribers_max_staleness).to_string(),
                cause: cause.clone(),
            }),
            _ => Ok(()),
        }
    }
}
