//! Where a query's offsets stand and how the next batch is planned.
//!
//! [`OffsetState`] is read from the checkpoint at start (the last committed
//! batch's ends, a pending batch), resolves the start offsets of a new query
//! once (`sources/0`), caps an `available-now` run at the high watermarks of
//! its first trigger, and moves on after each commit. Planning asks the
//! broker for watermarks; the arithmetic is [`crate::source::plan`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::batch::{epoch_ms, BatchId, BatchPlan};
use crate::checkpoint::CheckpointStore;
use crate::config::Trigger;
use crate::error::{Error, Result};
use crate::ops::events;
use crate::source::plan::{self, Watermarks};

use super::Query;

/// A query's offsets between batches.
#[derive(Debug, Default)]
pub(crate) struct OffsetState {
    /// Where each partition's next batch starts; `None` until known.
    next_starts: Option<HashMap<i32, i64>>,
    next_batch_id: BatchId,
    /// A planned batch without a commit, to run before anything else.
    pending: Option<BatchPlan>,
    /// `available-now`: the high watermarks of the first trigger.
    limit: Option<HashMap<i32, i64>>,
    /// The batch planned last, for its progress record.
    last_planned: Option<Planned>,
    /// The SQL fingerprint of the last committed batch.
    last_sql_fingerprint: Option<String>,
}

/// What planning saw: the high watermarks and how long it took.
#[derive(Debug)]
struct Planned {
    batch_id: BatchId,
    latest: Vec<(i32, i64)>,
    planning_ms: u64,
}

impl OffsetState {
    /// Reads where the checkpoint stands. A checkpoint whose batches read
    /// another topic than `topic` is refused: its offsets mean nothing here.
    pub(crate) fn resume(checkpoint: &CheckpointStore, topic: &str) -> Result<Self> {
        let resume = checkpoint.resume()?;
        for plan in resume.last_committed.iter().chain(&resume.pending) {
            if plan.topic != topic {
                return Err(Error::CheckpointMismatch(format!(
                    "batch {} of this checkpoint read topic '{}', but --input-topic is '{topic}'; \
                     use the original topic, or a new --checkpoint-dir to start a new query",
                    plan.batch_id, plan.topic
                )));
            }
        }
        let mut state = OffsetState { pending: resume.pending, ..Default::default() };
        if let Some(last) = &resume.last_committed {
            state.advance_past(last);
            state.last_sql_fingerprint = last.sql_fingerprint.clone();
        }
        Ok(state)
    }

    /// The SQL fingerprint of the last committed batch, if recorded.
    pub(crate) fn last_sql_fingerprint(&self) -> Option<&str> {
        self.last_sql_fingerprint.as_deref()
    }

    /// The newest batch the checkpoint knows: the pending one, or the last
    /// committed one.
    pub(crate) fn newest_known(&self) -> Option<BatchId> {
        match &self.pending {
            Some(plan) => Some(plan.batch_id),
            None => self.next_batch_id.checked_sub(1).filter(|_| self.next_starts.is_some()),
        }
    }

    /// The id the next batch gets (a pending one has it already).
    pub(crate) fn next_batch_id(&self) -> BatchId {
        self.next_batch_id
    }

    pub(crate) fn take_pending(&mut self) -> Option<BatchPlan> {
        self.pending.take()
    }

    /// Moves past a committed batch.
    pub(crate) fn advance_past(&mut self, plan: &BatchPlan) {
        self.next_starts.get_or_insert_with(HashMap::new).extend(plan.end_offsets());
        self.next_batch_id = plan.batch_id + 1;
    }

    /// The high watermarks seen when `plan` was planned (none for a replay).
    pub(crate) fn latest_for(&self, plan: &BatchPlan) -> Option<Vec<(i32, i64)>> {
        self.planned(plan).map(|p| p.latest.clone())
    }

    /// Milliseconds spent planning `plan` (zero for a replay).
    pub(crate) fn planning_ms(&self, plan: &BatchPlan) -> u64 {
        self.planned(plan).map_or(0, |p| p.planning_ms)
    }

    fn planned(&self, plan: &BatchPlan) -> Option<&Planned> {
        self.last_planned.as_ref().filter(|p| p.batch_id == plan.batch_id)
    }

    /// Drops checkpoint files and snapshots no replay needs any more
    /// (Spark's `minBatchesToRetain`); a failure is logged, not fatal.
    /// `purge_snapshots` removes the snapshots no replay needs.
    pub(crate) fn purge(
        &self,
        checkpoint: &CheckpointStore,
        committed: BatchId,
        retain: u64,
        purge_snapshots: impl FnOnce() -> Result<()>,
    ) {
        let keep_from = (committed + 1).saturating_sub(retain);
        let result = checkpoint.purge_before(keep_from).and_then(|_| purge_snapshots());
        if let Err(e) = result {
            tracing::warn!(cause = %e.chain(), "cleaning the checkpoint failed");
        }
    }
}

/// Between two checks for new data while idle.
const DATA_CHECK: Duration = Duration::from_millis(5);

impl Query {
    /// Returns once the input holds data past where the next batch starts,
    /// or after `limit`: checked every few milliseconds with one ListOffsets
    /// request, so an idle `--trigger 0s` query starts its next batch within
    /// milliseconds of new data without a full planning round each time.
    pub(crate) async fn wait_for_data(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let Some(starts) = self.offsets.next_starts.as_ref() else {
            return tokio::time::sleep_until(deadline).await;
        };
        while tokio::time::Instant::now() < deadline {
            match self.source.has_data_from(starts).await {
                Ok(true) => return,
                Ok(false) => {}
                // Planning reports (and retries) a real failure.
                Err(e) => return tracing::debug!(cause = %e.chain(), "checking for new data failed"),
            }
            tokio::time::sleep(DATA_CHECK.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    /// Step 1, plan: the next batch's ranges from where the last one ended to
    /// the high watermarks (capped by `--max-offsets-per-trigger` and, for
    /// `available-now`, by the first trigger's watermarks), with `now` and
    /// the subscribers snapshot pinned. `None` when there is no new data.
    pub(crate) async fn next_plan(&mut self) -> Result<Option<BatchPlan>> {
        let started = Instant::now();
        let mut marks = self.source.watermarks().await?;
        // After the watermarks: every message the batch reads was produced
        // before the subscribers' version is checked, so a change committed
        // before any of them is in the snapshot the batch pins.
        self.subscribers = self.refresher.current().await?;
        let latest: Vec<(i32, i64)> = marks.iter().map(|w| (w.partition, w.high)).collect();
        self.prepare(&marks)?;
        if let Some(limit) = &self.offsets.limit {
            for w in &mut marks {
                w.high = w.high.min(limit.get(&w.partition).copied().unwrap_or(w.low));
            }
        }
        let (starts, losses) =
            plan::start_offsets(self.offsets.next_starts.as_ref(), self.config.starting_offsets, &marks);
        let lag: Vec<(i32, i64, i64)> = latest
            .iter()
            .filter_map(|&(p, high)| starts.iter().find(|(q, _)| *q == p).map(|&(_, start)| (p, high, start)))
            .collect();
        events::SourceLagObserved { topic: self.source.topic(), partitions: &lag }.emit();
        if let Some(first) = losses.first().filter(|_| self.config.fail_on_data_loss) {
            return Err(Error::DataLoss {
                topic: self.source.topic().to_string(),
                detail: first.to_string(),
                more: losses.len() - 1,
            });
        }
        for loss in &losses {
            loss.report(self.source.topic());
        }
        let mut ranges = plan::ranges(&starts, &marks, self.config.max_offsets_per_trigger);
        let now_ms = epoch_ms();
        if ranges.iter().all(|r| r.is_empty()) && !self.held_due(now_ms.div_euclid(1000)) {
            return Ok(None);
        }
        if let Some(budget) = self.config.max_bytes_per_trigger.bytes.filter(|_| ranges.iter().any(|r| !r.is_empty())) {
            ranges = self.read_within_budget(ranges, budget).await?;
        }
        let plan = BatchPlan {
            batch_id: self.offsets.next_batch_id,
            batch_timestamp_ms: now_ms,
            topic: self.source.topic().to_string(),
            ranges,
            subscribers_snapshot: self.subscribers.id.clone(),
            sql_fingerprint: Some(self.pipeline.fingerprint()),
            job_fingerprint: Some(self.pipeline.job_fingerprint()),
            hold_future_campaigns: self.config.hold_future_campaigns,
            subscribers_version: Some(self.subscribers.version).filter(|v| *v > 0),
            lookups: self.lookups.pin(&self.checkpoint.snapshots_dir()).await?,
        };
        let planning_ms = crate::util::time::ms(started.elapsed());
        self.offsets.last_planned = Some(Planned { batch_id: plan.batch_id, latest, planning_ms });
        Ok(Some(plan))
    }

    /// On the first plan of a run: the start offsets of a new query (from
    /// `sources/0`, or resolved from `--starting-offsets` and recorded there,
    /// so `latest` means the same after a restart), and the end of an
    /// `available-now` run.
    fn prepare(&mut self, marks: &[Watermarks]) -> Result<()> {
        if self.offsets.next_starts.is_none() {
            let starts = match self.checkpoint.initial_offsets()? {
                Some(starts) => starts,
                None => {
                    let (starts, _) = plan::start_offsets(None, self.config.starting_offsets, marks);
                    let starts: HashMap<i32, i64> = starts.into_iter().collect();
                    self.checkpoint.write_initial_offsets(&starts)?;
                    starts
                }
            };
            self.offsets.next_starts = Some(starts);
        }
        if self.config.trigger == Trigger::AvailableNow && self.offsets.limit.is_none() {
            self.offsets.limit = Some(marks.iter().map(|w| (w.partition, w.high)).collect());
        }
        Ok(())
    }
}

impl Query {
    /// Step 1a, size the plan: reads the planned ranges until the byte
    /// budget is spent ([`crate::source::budget`]) and cuts them there; what
    /// was read serves the read step.
    async fn read_within_budget(
        &mut self,
        ranges: Vec<crate::batch::OffsetRange>,
        budget: u64,
    ) -> Result<Vec<crate::batch::OffsetRange>> {
        let ahead = self.take_read_ahead().await;
        let (ranges, read) = self.source.read_within(ranges, ahead, budget).await?;
        self.ahead = Some(tokio::spawn(async move { Ok(read) }));
        Ok(ranges)
    }
}
