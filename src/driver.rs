//! The micro-batch loop. Each trigger runs six named steps:
//!
//! 1. **plan**: end offsets from the broker, ranges from where the last batch
//!    ended, capped by `--max-offsets-per-trigger`; no new data, no batch;
//! 2. **log offsets**: write `offsets/N` (write-ahead), with `now` and the
//!    subscribers snapshot pinned;
//! 3. **read**: exactly those ranges, decoded to one Arrow batch;
//! 4. **transform**: the SQL files, collected once ("persist");
//! 5. **write**: both sinks concurrently, each in one transaction with its marker;
//! 6. **commit**: write `commits/N`.
//!
//! On start, `offsets/N` without `commits/N` is replayed first with the same
//! plan; each sink is asked whether it already holds the batch and only the
//! missing writes are redone. Shutdown is checked between batches only, so a
//! batch in flight always finishes and commits.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::batch::{BatchId, BatchPlan};
use crate::checkpoint::CheckpointStore;
use crate::config::{Config, Trigger};
use crate::error::Result;
use crate::events;
use crate::progress::BatchProgress;
use crate::runner::BatchRunner;
use crate::source::plan::{self, Watermarks};
use crate::subscribers;

/// Wait between planning rounds that found no new data with `--trigger 0s`.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// What a finished run did.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub query_id: String,
    pub batches: u64,
    pub input_rows: u64,
    pub output_rows: u64,
    pub malformed_rows: u64,
    pub last_batch_id: Option<BatchId>,
}

/// Runs the query described by `config` until `shutdown` resolves, or until
/// the data available at start is done for `once` / `available-now`.
///
/// `shutdown` is watched from the start: while sparklet connects (a broker
/// that does not answer can take `--kafka-timeout`), it stops at once, since
/// nothing has been planned yet; once batches run, it stops between them.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<RunSummary> {
    tokio::pin!(shutdown);
    let mut driver = tokio::select! {
        biased;
        _ = &mut shutdown => {
            tracing::info!("shutdown requested while starting; nothing was planned");
            return Ok(RunSummary::default());
        }
        driver = Driver::start(config) => driver?,
    };
    driver.run(shutdown).await
}

/// The state of a running query between batches.
pub struct Driver {
    config: Config,
    runner: BatchRunner,
    /// Where each partition's next batch starts.
    next_starts: HashMap<i32, i64>,
    next_batch_id: BatchId,
    /// A batch planned by an earlier run and not committed: run first.
    pending: Option<BatchPlan>,
    summary: RunSummary,
}

impl Driver {
    /// Loads SQL, checkpoint and subscribers and connects both sinks; any of
    /// them failing stops here with an error naming it.
    pub async fn start(config: Config) -> Result<Self> {
        let runner = BatchRunner::start(&config).await?;
        let resume = runner.checkpoint().resume()?;
        let mut driver = Driver {
            summary: RunSummary { query_id: runner.checkpoint().query_id().to_string(), ..Default::default() },
            config,
            runner,
            next_starts: HashMap::new(),
            next_batch_id: 0,
            pending: resume.pending,
        };
        if let Some(last) = &resume.last_committed {
            driver.advance_past(last);
        }
        Ok(driver)
    }

    /// The trigger loop, after the replay of a batch the last run left.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<RunSummary> {
        tokio::pin!(shutdown);
        if let Some(pending) = self.pending.take() {
            tracing::info!(batch_id = pending.batch_id, "replaying the batch the last run did not commit");
            let progress = self.run_with_retries(&pending, true, None).await?;
            self.record(&progress);
            self.advance_past(&pending);
        }
        if self.next_batch_id == 0 {
            self.next_starts = self.initial_offsets().await?;
        }
        let limit = match self.config.trigger {
            Trigger::AvailableNow => Some(self.highs().await?),
            _ => None,
        };
        let mut next_trigger = tokio::time::Instant::now();
        loop {
            tokio::select! {
                // Shutdown wins over a due trigger: stop between batches.
                biased;
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next_trigger) => {}
            }
            let trigger_started = Instant::now();
            self.runner.refresh_subscribers_if_stale(self.config.subscribers_refresh).await;
            let planning = Instant::now();
            let Some((plan, latest)) = self.plan(limit.as_ref()).await? else {
                if !matches!(self.config.trigger, Trigger::ProcessingTime(_)) {
                    break;
                }
                next_trigger = tokio::time::Instant::now() + self.interval().max(IDLE_POLL);
                continue;
            };
            let planned = planning.elapsed();
            let mut progress = self.run_with_retries(&plan, false, Some(&latest)).await?;
            progress.duration_ms.latest_offset = crate::progress::ms(planned);
            progress.duration_ms.trigger_execution += progress.duration_ms.latest_offset;
            self.record(&progress);
            self.advance_past(&plan);
            if self.config.trigger == Trigger::Once {
                break;
            }
            next_trigger = (trigger_started + self.interval()).into();
        }
        Ok(self.summary.clone())
    }

    /// Step 1: the next batch's plan, or `None` when there is no new data.
    async fn plan(&mut self, limit: Option<&HashMap<i32, i64>>) -> Result<Option<(BatchPlan, Vec<(i32, i64)>)>> {
        let mut marks = self.runner.source().watermarks().await?;
        let latest: Vec<(i32, i64)> = marks.iter().map(|w| (w.partition, w.high)).collect();
        if let Some(limit) = limit {
            for w in &mut marks {
                w.high = w.high.min(limit.get(&w.partition).copied().unwrap_or(w.low));
            }
        }
        let (starts, losses) = plan::start_offsets(Some(&self.next_starts), self.config.starting_offsets, &marks);
        for loss in losses {
            events::DataLossDetected {
                topic: self.runner.source().topic(),
                partition: loss.partition,
                expected: loss.expected,
                earliest_available: loss.earliest_available,
            }
            .emit();
        }
        let ranges = plan::ranges(&starts, &marks, self.config.max_offsets_per_trigger);
        if ranges.iter().all(|r| r.is_empty()) {
            return Ok(None);
        }
        let plan = BatchPlan {
            batch_id: self.next_batch_id,
            batch_timestamp_ms: epoch_ms(),
            topic: self.runner.source().topic().to_string(),
            ranges,
            subscribers_snapshot: self.runner.subscribers().id.clone(),
        };
        Ok(Some((plan, latest)))
    }

    /// Runs one batch; retryable failures are retried with back-off after
    /// reconnecting the sinks, and recovery then checks each sink's marker.
    async fn run_with_retries(
        &mut self,
        plan: &BatchPlan,
        replay: bool,
        latest: Option<&[(i32, i64)]>,
    ) -> Result<BatchProgress> {
        let mut attempt = 0;
        loop {
            let result = match attempt {
                0 if !replay => self.runner.run_new(plan, latest).await,
                _ => self.runner.run_replay(plan).await,
            };
            let error = match result {
                Ok(progress) => return Ok(progress),
                Err(error) => error,
            };
            attempt += 1;
            let retryable = error.is_retryable() && attempt <= self.config.max_retries;
            events::BatchFailed { batch_id: plan.batch_id, attempt, retryable, error: &error }.emit();
            if !retryable {
                return Err(error);
            }
            tokio::time::sleep(backoff(attempt)).await;
            if let Err(e) = self.runner.reconnect().await {
                tracing::warn!(cause = %e.chain(), "reconnecting the sinks failed; retrying the batch anyway");
            }
        }
    }

    /// Start offsets of a new query: from `sources/0`, or resolved now from
    /// `--starting-offsets` and recorded there.
    async fn initial_offsets(&mut self) -> Result<HashMap<i32, i64>> {
        if let Some(offsets) = self.runner.checkpoint().initial_offsets()? {
            return Ok(offsets);
        }
        let marks: Vec<Watermarks> = self.runner.source().watermarks().await?;
        let (starts, _) = plan::start_offsets(None, self.config.starting_offsets, &marks);
        let starts: HashMap<i32, i64> = starts.into_iter().collect();
        self.runner.checkpoint().write_initial_offsets(&starts)?;
        Ok(starts)
    }

    /// High watermarks now: the end of `available-now`.
    async fn highs(&self) -> Result<HashMap<i32, i64>> {
        let marks = self.runner.source().watermarks().await?;
        Ok(marks.iter().map(|w| (w.partition, w.high)).collect())
    }

    fn advance_past(&mut self, plan: &BatchPlan) {
        self.next_starts.extend(plan.end_offsets());
        self.next_batch_id = plan.batch_id + 1;
    }

    fn record(&mut self, progress: &BatchProgress) {
        events::BatchCommitted { progress }.emit();
        self.summary.batches += 1;
        self.summary.input_rows += progress.num_input_rows;
        self.summary.output_rows += progress.num_output_rows;
        self.summary.malformed_rows += progress.num_malformed_rows;
        self.summary.last_batch_id = Some(progress.batch_id);
        if let Some(path) = &self.config.progress_json {
            if let Err(e) = progress.append_json(path) {
                tracing::warn!(cause = %e.chain(), "writing the progress record failed");
            }
        }
        self.purge(progress.batch_id);
    }

    /// Drops checkpoint files and snapshots no longer needed for a replay.
    fn purge(&self, committed: BatchId) {
        let checkpoint: &CheckpointStore = self.runner.checkpoint();
        let keep_from = (committed + 1).saturating_sub(self.config.min_batches_to_retain);
        let keep = HashSet::from([self.runner.subscribers().id.clone()]);
        let result = checkpoint
            .purge_before(keep_from)
            .and_then(|_| subscribers::purge_snapshots(&checkpoint.snapshots_dir(), &keep));
        if let Err(e) = result {
            tracing::warn!(cause = %e.chain(), "cleaning the checkpoint failed");
        }
    }

    fn interval(&self) -> Duration {
        match self.config.trigger {
            Trigger::ProcessingTime(d) => d,
            _ => Duration::ZERO,
        }
    }
}

/// Current time in epoch milliseconds.
pub fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * 2u64.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(30))
}
