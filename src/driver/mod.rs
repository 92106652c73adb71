//! The trigger loop: when batches run, how failures are retried, when the
//! run stops. The batches themselves are [`crate::query::Query`]'s.
//!
//! Each trigger is: plan (the query's next batch, or none), then run it (log
//! offsets, read, transform, write, commit). A batch the last run left
//! unfinished is replayed first. A retryable failure anywhere in a trigger
//! (planning included) is an outage ([`retry`]): retried for `--retry-for`,
//! each attempt on new connections, with back-off that ends early when the
//! failed component answers again; a batch that failed after its write-ahead
//! is retried as a replay of the same plan. Shutdown is watched while
//! starting, between batches and during a back-off, never inside a batch, so
//! a batch in flight always finishes.

use std::future::Future;
use std::time::Duration;

use crate::batch::{BatchId, BatchPlan};
use crate::config::{RetryPolicy, Trigger};
use crate::error::Result;
use crate::ops::progress::BatchProgress;
use crate::ops::progress_bar::ProgressBar;
use crate::ops::status::RunStatus;
use crate::query::{Attempt, Query};
use retry::Outage;

/// Longest wait between full planning rounds that found no new data with
/// `--trigger 0s`; in between, [`Batches::wait_for_data`] returns as soon as
/// there is some.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// What a finished run did (summed over the shards it ran).
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub query_id: String,
    pub batches: u64,
    pub input_rows: u64,
    pub output_rows: u64,
    pub malformed_rows: u64,
    /// Campaigns whose end had passed at their batch's time.
    pub expired_rows: u64,
    pub last_batch_id: Option<BatchId>,
    /// Attempts that failed (and were retried, or ended the run).
    pub failed_attempts: u64,
}

/// Runs `queries` (one, or several shards) until `shutdown` resolves, or
/// until the data available at start is done for `once` / `available-now`.
pub(crate) async fn drive(
    policy: Policy,
    mut queries: Vec<Query>,
    status: &RunStatus,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary> {
    tokio::pin!(shutdown);
    match queries.len() {
        0 => Ok(RunSummary::default()),
        1 => {
            let query = queries.remove(0);
            let mut bar = ProgressBar::new(policy.trigger == Trigger::AvailableNow);
            let summary = Driver::new(policy, query, status.clone()).run(shutdown, &mut bar).await;
            bar.finish();
            summary
        }
        _ => shards::run_all(policy, queries, status, shutdown.as_mut()).await,
    }
}

/// What the driver needs of a query; [`Query`] in production, a scripted
/// stand-in in the driver's tests.
#[allow(async_fn_in_trait)]
pub(crate) trait Batches {
    fn id(&self) -> &str;
    /// A batch an earlier run planned and did not commit.
    fn take_pending(&mut self) -> Option<BatchPlan>;
    /// The next batch, or `None` when there is no new data.
    async fn next_plan(&mut self) -> Result<Option<BatchPlan>>;
    /// Runs a batch to its commit.
    async fn run(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress>;
    /// Re-creates the connections after a failure.
    async fn reconnect(&mut self) -> Result<()>;
    /// Whether `component` (as [`crate::Error::component`] names it) answers
    /// now: a cheap probe that ends a retry's back-off early.
    async fn probe(&self, component: &'static str) -> bool {
        let _ = component;
        false
    }
    /// Waits until there may be new data, at most `limit`.
    async fn wait_for_data(&self, limit: Duration) {
        tokio::time::sleep(limit).await
    }
}

impl Batches for Query {
    fn id(&self) -> &str {
        Query::id(self)
    }

    fn take_pending(&mut self) -> Option<BatchPlan> {
        Query::take_pending(self)
    }

    async fn next_plan(&mut self) -> Result<Option<BatchPlan>> {
        Query::next_plan(self).await
    }

    async fn run(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress> {
        Query::run(self, plan, attempt).await
    }

    async fn reconnect(&mut self) -> Result<()> {
        Query::reconnect(self).await
    }

    async fn wait_for_data(&self, limit: Duration) {
        Query::wait_for_data(self, limit).await
    }

    async fn probe(&self, component: &'static str) -> bool {
        Query::probe(self, component).await
    }
}

/// When batches run and how long a failure is retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub trigger: Trigger,
    pub retry: RetryPolicy,
}

/// How one trigger ended.
enum Triggered {
    /// A batch committed.
    Batch(Box<BatchProgress>),
    /// No new data.
    Idle,
    /// Shutdown during a back-off: stop now (a failed batch is replayed at
    /// the next start).
    Stopped,
}

/// The trigger loop around a query.
pub(crate) struct Driver<B> {
    policy: Policy,
    batches: B,
    summary: RunSummary,
    status: RunStatus,
}

impl<B: Batches> Driver<B> {
    pub(crate) fn new(policy: Policy, batches: B, status: RunStatus) -> Self {
        let summary = RunSummary { query_id: batches.id().to_string(), ..Default::default() };
        Driver { policy, batches, summary, status }
    }

    /// Runs triggers until shutdown, or the end of `once` / `available-now`.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>, bar: &mut ProgressBar) -> Result<RunSummary> {
        tokio::pin!(shutdown);
        let mut pending = self.batches.take_pending();
        if let Some(plan) = &pending {
            tracing::info!(batch_id = plan.batch_id, "replaying the batch the last run did not commit");
        }
        let mut next_trigger = tokio::time::Instant::now();
        let mut idle = false;
        loop {
            if pending.is_none() {
                tokio::select! {
                    // Shutdown wins over a due trigger: stop between batches.
                    biased;
                    _ = &mut shutdown => break,
                    _ = self.until_next_trigger(next_trigger, idle) => {}
                }
            }
            let started = tokio::time::Instant::now();
            // The last run's batch does not count as `once`'s one batch.
            let from_last_run = pending.is_some();
            self.status.trigger_started();
            let triggered = self.trigger(pending.take(), &mut shutdown).await?;
            self.status.trigger_finished(triggered.progress(), triggered.message());
            match triggered {
                Triggered::Stopped => break,
                Triggered::Idle if self.is_continuous() => {
                    next_trigger = tokio::time::Instant::now() + self.interval();
                    idle = true;
                }
                Triggered::Idle => break,
                Triggered::Batch(progress) => {
                    idle = false;
                    self.record(&progress);
                    bar.update(&progress);
                    if self.policy.trigger == Trigger::Once && !from_last_run {
                        break;
                    }
                    next_trigger = started + self.interval();
                }
            }
        }
        Ok(self.summary)
    }

    /// One trigger: plan (unless a plan is given) and run. A retryable
    /// failure starts an outage: retried on new connections after a back-off
    /// (as a replay once a plan exists) until it goes through or
    /// `--retry-for` is spent.
    async fn trigger(
        &mut self,
        mut plan: Option<BatchPlan>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Triggered> {
        let mut attempt = if plan.is_some() { Attempt::Replay } else { Attempt::New };
        let mut outage: Option<Outage> = None;
        loop {
            let error = match self.attempt(&mut plan, attempt, outage.is_some()).await {
                Ok(triggered) => {
                    if let Some(outage) = outage {
                        outage.ended(&self.status);
                    }
                    return Ok(triggered);
                }
                Err(error) => error,
            };
            let batch_id = plan.as_ref().map(|p| p.batch_id);
            let current = outage.get_or_insert_with(Outage::new);
            if let Some(last) = self.failed(current, error, batch_id) {
                return Err(last);
            }
            tokio::select! {
                biased;
                _ = &mut *shutdown => {
                    tracing::info!(batch_id = ?batch_id, "shutdown during a retry back-off; the next start replays the batch");
                    self.status.not_waiting();
                    return Ok(Triggered::Stopped);
                }
                _ = self.back_off(current) => {}
            }
            self.status.trigger_started();
            attempt = Attempt::Replay;
        }
    }

    /// One attempt: the given plan, or a new one (none: no new data). A
    /// retry first reconnects (it never reuses a connection that failed); a
    /// reconnect that fails is the attempt's failure.
    async fn attempt(&mut self, plan: &mut Option<BatchPlan>, attempt: Attempt, retry: bool) -> Result<Triggered> {
        if retry {
            self.batches.reconnect().await?;
        }
        let progress = match plan.as_ref() {
            Some(p) => self.batches.run(p, attempt).await?,
            None => match self.batches.next_plan().await? {
                None => return Ok(Triggered::Idle),
                Some(p) => self.batches.run(plan.insert(p), Attempt::New).await?,
            },
        };
        Ok(Triggered::Batch(Box::new(progress)))
    }

    /// Counts a failed attempt in `outage`; returns the error that ends the
    /// run if it must end (not retryable, or `--retry-for` spent).
    fn failed(&mut self, outage: &mut Outage, error: crate::Error, batch_id: Option<BatchId>) -> Option<crate::Error> {
        self.summary.failed_attempts += 1;
        let retry = self.policy.retry;
        outage.failed(&error, batch_id, &retry, &self.status);
        if !error.is_retryable() {
            self.status.not_waiting();
            return Some(error);
        }
        if !retry.allows(outage.waited(), outage.failures() - 1) {
            return Some(outage.spent(error, &retry, &self.status));
        }
        self.status.trigger_finished(None, &format!("Waiting to retry after a {} failure", outage.component()));
        None
    }

    /// The wait before the next attempt: the back-off step (at most what is
    /// left of `--retry-for`), ended early once the failed component answers
    /// a probe (one every [`retry::PROBE_EVERY`]).
    async fn back_off(&self, outage: &Outage) {
        let step = crate::util::backoff::backoff(outage.failures(), crate::util::backoff::jitter());
        let wait = self.policy.retry.remaining(outage.waited()).map_or(step, |left| step.min(left));
        let until = tokio::time::Instant::now() + wait;
        loop {
            let next = (tokio::time::Instant::now() + retry::PROBE_EVERY).min(until);
            tokio::time::sleep_until(next).await;
            self.status.still_waiting();
            if next >= until || self.batches.probe(outage.component()).await {
                return;
            }
        }
    }

    fn record(&mut self, progress: &BatchProgress) {
        self.summary.batches += 1;
        self.summary.input_rows += progress.num_input_rows;
        self.summary.output_rows += progress.num_output_rows;
        self.summary.malformed_rows += progress.num_malformed_rows;
        self.summary.expired_rows += progress.num_expired_rows;
        self.summary.last_batch_id = Some(progress.batch_id);
    }

    /// Until the next trigger is due. After a trigger that found no data,
    /// `--trigger 0s` waits for new data (at most [`IDLE_POLL`]); a longer
    /// interval waits for the interval, as Spark does.
    async fn until_next_trigger(&self, next_trigger: tokio::time::Instant, idle: bool) {
        if idle && self.interval().is_zero() {
            return self.batches.wait_for_data(IDLE_POLL).await;
        }
        tokio::time::sleep_until(next_trigger).await
    }

    /// Whether the run goes on when there is no new data.
    fn is_continuous(&self) -> bool {
        matches!(self.policy.trigger, Trigger::ProcessingTime(_))
    }

    fn interval(&self) -> Duration {
        self.policy.interval()
    }
}

impl Policy {
    /// The trigger interval (zero unless a processing-time trigger).
    pub(crate) fn interval(&self) -> Duration {
        match self.trigger {
            Trigger::ProcessingTime(d) => d,
            _ => Duration::ZERO,
        }
    }
}

impl Triggered {
    fn progress(&self) -> Option<&BatchProgress> {
        match self {
            Triggered::Batch(p) => Some(p),
            _ => None,
        }
    }

    /// The status message after this trigger (Spark's words).
    fn message(&self) -> &'static str {
        match self {
            Triggered::Batch(_) => "Waiting for next trigger",
            Triggered::Idle => "Waiting for data to arrive",
            Triggered::Stopped => "Stopped",
        }
    }
}

mod retry;
mod shards;
#[cfg(test)]
mod tests;
