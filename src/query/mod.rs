//! One streaming query: its components (checkpoint, source, SQL, sinks,
//! subscribers cache) and its offset state, and one batch through its steps.
//!
//! [`Query::start`] checks and connects everything ([`start`]);
//! [`Query::next_plan`] decides the next batch ([`offsets`]); [`Query::run`]
//! takes a plan through log offsets (write-ahead), read, hold ([`hold`]),
//! transform, write ([`write`]) and commit. A batch planned by an earlier run or a failed attempt is run as
//! [`Attempt::Replay`]: each sink is asked whether it already holds the batch
//! and only the missing writes are redone. When, how often and how many times
//! is the driver's business ([`crate::driver`]).

mod hold;
mod offsets;
mod replay;
mod start;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use futures::StreamExt;
use tracing::Instrument;

use crate::batch::{epoch_ms, BatchPlan};
use crate::checkpoint::{BatchCommit, CheckpointStore};
use crate::config::{Config, OnBadRecord};
use crate::error::{Error, Result};
use crate::lookups::Lookups;
use crate::ops::events;
use crate::ops::progress::{BatchProgress, BatchReport, DurationMs};
use crate::shard::Shard;
use crate::sink::kafka::KafkaSink;
use crate::sink::owner;
use crate::sink::postgres::PostgresSink;
use crate::sink::BatchOutput;
use crate::source::decode::{self, BadMessage, Decoded};
use crate::source::read_ahead::ReadAhead;
use crate::source::KafkaSource;
use crate::subscribers::refresh::Refresher;
use crate::subscribers::{self, Subscribers};
use crate::transform::SqlPipeline;
use crate::util::time::ms;
use start::connect_sinks;

pub(crate) use offsets::OffsetState;

/// How long a retry's probe may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How a plan is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Planned just now: written ahead to `offsets/N`, then run; no sink can
    /// hold it yet.
    New,
    /// Already in `offsets/N` (an earlier run or attempt): each sink is
    /// checked for the batch's marker first.
    Replay,
}

/// The components of a running query and where its offsets stand.
pub(crate) struct Query {
    config: Config,
    checkpoint: CheckpointStore,
    source: KafkaSource,
    pipeline: SqlPipeline,
    kafka: KafkaSink,
    postgres: PostgresSink,
    subscribers: Subscribers,
    offsets: OffsetState,
    last_trigger: Option<Instant>,
    /// This run's claim on the query in Postgres, taken once at start.
    ownership: owner::Ownership,
    /// Reloads the subscribers in the background (one per process, shared
    /// by its shards); `subscribers` is the version the last plan pinned.
    refresher: Arc<Refresher>,
    /// The job's other lookup tables, kept fresh (shared by the shards).
    lookups: Lookups,
    /// Which shard of the query this is ([`crate::shard`]).
    shard: Shard,
    /// Campaigns held until their start (`--hold-future-campaigns`).
    held: hold::Held,
    /// The next batch's input, read while the last one was written.
    ahead: Option<tokio::task::JoinHandle<Result<ReadAhead>>>,
}

impl Query {
    /// The query id (`metadata`).
    pub(crate) fn id(&self) -> &str {
        self.checkpoint.query_id()
    }

    /// A batch the last run planned and did not commit: run it first.
    pub(crate) fn take_pending(&mut self) -> Option<BatchPlan> {
        self.offsets.take_pending()
    }

    /// Re-creates both sinks after a failure (a broken producer, a closed
    /// connection), once Postgres confirms this run still owns the query: a
    /// new producer's `init_transactions` must never fence a newer owner.
    pub(crate) async fn reconnect(&mut self) -> Result<()> {
        let key = &self.shard.sink_key(self.id());
        let ownership = owner::Ownership::connect(&self.config.postgres, key, self.ownership.epoch()).await?;
        let (postgres, kafka) =
            connect_sinks(&self.config, key, &self.source, ownership.clone(), &self.pipeline).await?;
        (self.postgres, self.kafka, self.ownership) = (postgres, kafka, ownership);
        Ok(())
    }

    /// Whether `component` answers now, within [`PROBE_TIMEOUT`] (a retry's
    /// probe, which ends its back-off early): Postgres a new connection's
    /// `SELECT 1`, Kafka a metadata request for the input topic, the
    /// checkpoint store a look at the checkpoint's `metadata` file.
    pub(crate) async fn probe(&self, component: &'static str) -> bool {
        let probe = async {
            match component {
                "postgres" => {
                    let client = crate::postgres::connect(&self.config.postgres, "the retry probe").await?;
                    client.simple_query("SELECT 1").await.map_err(|e| Error::postgres("SELECT 1", e)).map(drop)
                }
                "kafka" => self.source.probe(PROBE_TIMEOUT).await,
                "checkpoint" => {
                    let files = self.checkpoint.dir().clone();
                    crate::util::blocking(move || files.exists("metadata").map(drop)).await
                }
                _ => Err(Error::Runtime(format!("no probe for {component}"))),
            }
        };
        let answer = tokio::time::timeout(PROBE_TIMEOUT, probe).await;
        tracing::debug!(component, answers = matches!(answer, Ok(Ok(()))), "retry probe");
        matches!(answer, Ok(Ok(())))
    }

    /// Runs one batch through its steps and records it as committed. Every
    /// log line of the batch carries its id (the `batch` span).
    pub(crate) async fn run(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress> {
        let replay = attempt == Attempt::Replay;
        let span = match self.shard.sharded_layout {
            true => tracing::info_span!("batch", shard = self.shard.id, batch_id = plan.batch_id, replay),
            false => tracing::info_span!("batch", batch_id = plan.batch_id, replay),
        };
        self.run_steps(plan, attempt).instrument(span).await
    }

    async fn run_steps(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress> {
        let started = Instant::now();
        let mut d = DurationMs::default();
        self.log_offsets(plan, attempt, &mut d)?;
        let readable = match attempt {
            Attempt::Replay => self.check_replay(plan).await?,
            Attempt::New => plan.clone(),
        };
        let subscribers = self.subscribers_for(plan)?;
        let (decoded, input_rows, newest_timestamps) = self.read(&readable, &mut d).await?;
        self.read_ahead_after(plan);
        let (bad_records, dead_letters) = self.screen_bad_records(plan, decoded.bad)?;
        let (campaigns, held) = self.hold(plan, decoded.batch)?;
        let expired_rows = match &self.pipeline.job().options.input.window {
            Some(window) => decode::count_ended_before(&campaigns, &window.end, plan.now_seconds()),
            None => 0,
        };

        let dead_lettered = dead_letters.len() as u64;

        let t = Instant::now();
        let output = self.transform(plan, campaigns, &subscribers).await?;
        d.query_planning_and_execution = ms(t.elapsed());

        let t = Instant::now();
        let (sinks, output_rows) = self.write(plan, output, dead_letters.into(), attempt, &mut d).await?;
        d.add_batch = ms(t.elapsed());

        let t = Instant::now();
        let held_rows = self.commit(plan, held, output_rows).await?;
        d.commit_offsets = ms(t.elapsed());
        d.latest_offset = self.offsets.planning_ms(plan);
        d.trigger_execution = ms(started.elapsed()) + d.latest_offset;

        let since_last_trigger = self.last_trigger.replace(started).map(|t| started - t);
        let progress = BatchProgress::new(
            self.id(),
            BatchReport {
                shard: self.shard.sharded_layout.then(|| self.shard.label()),
                plan,
                replayed: attempt == Attempt::Replay,
                input_rows,
                bad_records,
                dead_lettered,
                expired_rows,
                held_rows,
                output_rows,
                durations: d,
                since_last_trigger,
                elapsed: started.elapsed(),
                latest: self.offsets.latest_for(plan),
                newest_timestamps: &newest_timestamps,
                sinks,
                subscribers: subscribers.progress(),
            },
        );
        self.after_commit(plan, &progress);
        Ok(progress)
    }

    /// Steps 2 and 3, read and decode: the plan's messages (what was read
    /// ahead of them while the last batch was written, then the rest),
    /// validated and decoded as they arrive. `getBatch` is the time spent
    /// waiting for them, `decode` the time spent decoding.
    async fn read(&mut self, plan: &BatchPlan, d: &mut DurationMs) -> Result<(Decoded, u64, BTreeMap<i32, i64>)> {
        let t = Instant::now();
        let ahead = self.take_read_ahead().await;
        let budget = self.config.max_bytes_per_trigger.bytes;
        let read = self.source.read_with(plan, ahead, self.config.bad_records.limits, budget).await?;
        d.decode = ms(read.decode_time);
        d.get_batch = ms(t.elapsed().saturating_sub(read.decode_time));
        Ok((read.decoded, read.messages, read.newest_timestamps))
    }

    /// What was read ahead, once that read is done; a failed read-ahead only
    /// means the batch is read as planned.
    async fn take_read_ahead(&mut self) -> Option<ReadAhead> {
        let task = self.ahead.take()?;
        let ahead = task.await.map_err(|e| Error::Runtime(format!("the read-ahead task failed: {e}"))).and_then(|r| r);
        match ahead {
            Ok(ahead) => {
                tracing::debug!(messages = ahead.len(), "input read ahead while the last batch was written");
                Some(ahead)
            }
            Err(e) => {
                tracing::debug!(cause = %e.chain(), "reading ahead failed; reading the batch as planned");
                None
            }
        }
    }

    /// Starts reading what follows `plan` while it is transformed and
    /// written ([`crate::source::read_ahead`]); the next read takes it.
    fn read_ahead_after(&mut self, plan: &BatchPlan) {
        let (source, plan, budget) = (self.source.clone(), plan.clone(), self.config.max_bytes_per_trigger.bytes);
        self.ahead = Some(tokio::spawn(async move { source.read_ahead(&plan, budget).await }));
    }

    /// Applies `--on-bad-record` to the refused messages: counts per reason,
    /// and the dead letters to write (or the error that stops the batch
    /// before anything is written).
    fn screen_bad_records(
        &self,
        plan: &BatchPlan,
        bad: Vec<BadMessage>,
    ) -> Result<(BTreeMap<String, u64>, Vec<BadMessage>)> {
        let policy = self.config.bad_records.on_bad_record;
        if let Some(first) = bad.first().filter(|_| policy == OnBadRecord::Fail) {
            return Err(Error::BadRecord {
                topic: plan.topic.clone(),
                partition: first.partition,
                offset: first.offset,
                reason: first.refusal.reason.code(),
                message: first.refusal.message.clone(),
                batch_id: plan.batch_id,
            });
        }
        let mut counts = BTreeMap::new();
        for m in &bad {
            *counts.entry(m.refusal.reason.code().to_string()).or_insert(0) += 1;
            events::BadRecord {
                topic: &plan.topic,
                partition: m.partition,
                offset: m.offset,
                reason: m.refusal.reason.code(),
                error: &m.refusal.message,
                action: policy,
            }
            .emit();
        }
        let dead_letters = if policy == OnBadRecord::DeadLetter { bad } else { Vec::new() };
        Ok((counts, dead_letters))
    }

    /// Step 4, transform: the SQL files over the campaigns and the pinned
    /// subscribers, computed up to [`crate::sink::feed::HEAD_ROWS`] rows (the rest is
    /// computed while the sinks write). A failure at run time names the
    /// file, the batch and its offsets; nothing of the batch is committed.
    async fn transform(
        &self,
        plan: &BatchPlan,
        campaigns: RecordBatch,
        subscribers: &Subscribers,
    ) -> Result<BatchOutput> {
        let (batch_id, offsets) = (plan.batch_id, plan.describe_ranges());
        let lookups = self.lookups.tables(&plan.lookups, &self.checkpoint.snapshots_dir())?;
        let rows = self.pipeline.execute(campaigns, subscribers, &lookups, plan.now_seconds(), batch_id).await;
        let rows = rows.map_err(|e| at_run_time(e, batch_id, &offsets))?;
        BatchOutput::start(rows.map(move |r| r.map_err(|e| at_run_time(e, batch_id, &offsets))).boxed()).await
    }

    /// Step 1b, log offsets: a new batch's plan is written ahead, before
    /// anything is read (a replay's is there already).
    fn log_offsets(&self, plan: &BatchPlan, attempt: Attempt, d: &mut DurationMs) -> Result<()> {
        if attempt == Attempt::New {
            let t = Instant::now();
            self.checkpoint.write_offsets(plan)?;
            d.wal_commit = ms(t.elapsed());
            crate::crash::point("after-write-ahead");
        }
        Ok(())
    }

    /// Step 6, commit: the held campaigns' state, then the batch recorded
    /// as done; with at-least-once, the input offsets committed to the
    /// query's consumer group (exactly-once did it in the transaction).
    /// Returns how many campaigns are held.
    async fn commit(&mut self, plan: &BatchPlan, held: Option<hold::Split>, num_output_rows: u64) -> Result<u64> {
        let held_rows = self.record_held(plan, held)?;
        crate::crash::point("before-commit-log");
        self.checkpoint.write_commit(&BatchCommit {
            batch_id: plan.batch_id,
            committed_at_ms: epoch_ms(),
            num_output_rows,
            note: None,
        })?;
        if !self.config.guarantee.exactly_once() {
            self.source.commit_offsets(plan).await;
        }
        Ok(held_rows)
    }

    /// After the commit: report, move the offsets on, drop what no replay
    /// needs any more.
    fn after_commit(&mut self, plan: &BatchPlan, progress: &BatchProgress) {
        events::BatchCommitted { topic: &plan.topic, progress }.emit();
        if let Some(path) = &self.config.progress_json {
            if let Err(e) = progress.append_json(path) {
                tracing::warn!(cause = %e.chain(), "writing the progress record failed");
            }
        }
        self.offsets.advance_past(plan);
        self.offsets.purge(&self.checkpoint, plan.batch_id, self.config.min_batches_to_retain, || {
            let snapshots = self.checkpoint.snapshots_dir();
            self.refresher.purge(&snapshots, &self.subscribers.id)?;
            self.lookups.purge(&snapshots, &plan.lookups)
        });
    }

    /// The subscribers a batch joins with: the snapshot its plan names.
    /// (A replay reports the version its plan recorded.)
    fn subscribers_for(&self, plan: &BatchPlan) -> Result<Subscribers> {
        let mut pinned = match plan.subscribers_snapshot == self.subscribers.id {
            true => self.subscribers.clone(),
            false => subscribers::load_snapshot(&self.checkpoint.snapshots_dir(), &plan.subscribers_snapshot)?,
        };
        pinned.version = plan.subscribers_version.unwrap_or(0);
        Ok(pinned)
    }
}

/// A SQL file's failure while computing a batch, named with the batch.
fn at_run_time(error: Error, batch_id: u64, offsets: &str) -> Error {
    match error {
        Error::SqlStep { path, action: "running", source } => {
            Error::SqlRuntime { path, batch_id, offsets: offsets.to_string(), source }
        }
        other => other,
    }
}
