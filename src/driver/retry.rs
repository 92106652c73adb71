//! Riding through an outage: a trigger that fails on a transient error is
//! retried on new connections for `--retry-for`, waiting between attempts
//! with capped exponential back-off and jitter; a wait ends early once the
//! failed component answers a probe, so a 20 s outage costs about 20 s.
//! What fails, and since when, is logged once per change ([`Outage`]),
//! shown on `/readyz` and in `sparklet_blocked_seconds`.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::Error;
use crate::ops::events;
use crate::ops::status::{RunStatus, Waiting};
use crate::util::time::rfc3339_ms;

/// How often the failed component is probed during a wait.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One trigger's failures in a row: what fails, since when, how often.
pub(super) struct Outage {
    started: Instant,
    /// The component that fails now, since when, and its last failure
    /// (none before the first retryable failure).
    waiting: Option<Waiting>,
    failures: u32,
}

impl Outage {
    pub(super) fn new() -> Self {
        Outage { started: Instant::now(), waiting: None, failures: 0 }
    }

    pub(super) fn failures(&self) -> u32 {
        self.failures
    }

    /// How long the trigger has been failing.
    pub(super) fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    /// The component that failed last.
    pub(super) fn component(&self) -> &'static str {
        self.waiting.as_ref().map_or("", |w| w.component)
    }

    /// Records a failed attempt: counted and logged at debug level; when the
    /// failing component changes, logged once as [`events::ComponentDown`].
    /// `status` shows what the query waits for, with the latest cause.
    pub(super) fn failed(&mut self, error: &Error, batch_id: Option<u64>, policy: &RetryPolicy, status: &RunStatus) {
        self.failures += 1;
        let retryable = error.is_retryable();
        events::TriggerFailed { batch_id, attempt: self.failures, retryable, error }.emit();
        if !retryable {
            return;
        }
        let (component, cause) = (error.component(), error.chain().to_string());
        match &mut self.waiting {
            Some(waiting) if waiting.component == component => waiting.cause = cause,
            _ => {
                let since_ms = crate::batch::epoch_ms();
                events::ComponentDown { component, since: &rfc3339_ms(since_ms), error, policy }.emit();
                let since = std::time::Instant::now();
                self.waiting = Some(Waiting { component, since_ms, since, cause });
            }
        }
        if let Some(waiting) = &self.waiting {
            status.waiting(waiting.clone());
        }
    }

    /// The trigger went through: the outage is over.
    pub(super) fn ended(self, status: &RunStatus) {
        status.not_waiting();
        if let Some(waiting) = self.waiting {
            let (component, waited, attempts) = (waiting.component, self.started.elapsed(), self.failures);
            events::ComponentBack { component, waited, attempts }.emit();
        }
    }

    /// The error that ends the run once `--retry-for` is spent, with the
    /// last attempt's as its cause.
    pub(super) fn spent(&self, last: Error, policy: &RetryPolicy, status: &RunStatus) -> Error {
        status.not_waiting();
        Error::RetriesSpent {
            component: last.component(),
            waited: format!("{:.1} s", self.started.elapsed().as_secs_f64()),
            attempts: self.failures,
            policy: policy.to_string(),
            source: Box::new(last),
        }
    }
}
