//! One streaming query: its components (checkpoint, source, SQL, sinks,
//! subscribers cache) and its offset state, and one batch through its steps.
//!
//! [`Query::next_plan`] decides the next batch ([`offsets`]); [`Query::run`]
//! takes a plan through log offsets (write-ahead), read, transform, write and
//! commit. A batch planned by an earlier run or a failed attempt is run as
//! [`Attempt::Replay`]: each sink is asked whether it already holds the batch
//! and only the missing writes are redone. When, how often and how many times
//! is the driver's business ([`crate::driver`]).

mod offsets;

use std::time::Instant;

use arrow::array::RecordBatch;
use tracing::Instrument;

use crate::batch::{epoch_ms, BatchPlan};
use crate::checkpoint::{BatchCommit, CheckpointStore};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events;
use crate::progress::{self, BatchProgress, BatchReport, DurationMs, SinkProgress};
use crate::sink::kafka::KafkaSink;
use crate::sink::postgres::PostgresSink;
use crate::sink::{write_once, SinkOutcome};
use crate::source::decode::{self, Decoded};
use crate::source::KafkaSource;
use crate::subscribers::{self, Subscribers};
use crate::transform::SqlPipeline;

pub(crate) use offsets::OffsetState;

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
}

impl Query {
    /// Checks the SQL files, opens the checkpoint, loads the subscribers,
    /// checks that Kafka answers and connects both sinks, in that order, so
    /// the first broken one is named. Reads where the checkpoint stands.
    pub(crate) async fn start(config: Config) -> Result<Self> {
        let pipeline = SqlPipeline::load(&config.sql_dir)?;
        pipeline.validate().await?;
        let checkpoint = CheckpointStore::open(&config.checkpoint_dir)?;
        let query_id = checkpoint.query_id().to_string();
        let subscribers = load_subscribers(&config, &checkpoint).await?;
        crate::kafka::check_reachable(&config.kafka).await?;
        let source = KafkaSource::try_new(&config.kafka, &query_id)?;
        let (postgres, kafka) = connect_sinks(&config, &query_id, &source).await?;
        let offsets = OffsetState::resume(&checkpoint, &config.kafka.input_topic)?;
        tracing::info!(
            query_id = %query_id,
            checkpoint = %config.checkpoint_dir.display(),
            sql_files = pipeline.steps().len(),
            postgres = %config.postgres.target(),
            settings = %config.describe(),
            "query started"
        );
        Ok(Query { config, checkpoint, source, pipeline, kafka, postgres, subscribers, offsets, last_trigger: None })
    }

    /// The query id (`metadata`).
    pub(crate) fn id(&self) -> &str {
        self.checkpoint.query_id()
    }

    /// A batch the last run planned and did not commit: run it first.
    pub(crate) fn take_pending(&mut self) -> Option<BatchPlan> {
        self.offsets.take_pending()
    }

    /// Re-creates both sinks after a failure (a broken producer, a closed
    /// connection).
    pub(crate) async fn reconnect(&mut self) -> Result<()> {
        let (postgres, kafka) = connect_sinks(&self.config, self.checkpoint.query_id(), &self.source).await?;
        self.postgres = postgres;
        self.kafka = kafka;
        Ok(())
    }

    /// Runs one batch through its steps and records it as committed. Every
    /// log line of the batch carries its id (the `batch` span).
    pub(crate) async fn run(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress> {
        let span = tracing::info_span!("batch", batch_id = plan.batch_id, replay = attempt == Attempt::Replay);
        self.run_steps(plan, attempt).instrument(span).await
    }

    async fn run_steps(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress> {
        let started = Instant::now();
        let mut d = DurationMs::default();
        if attempt == Attempt::New {
            self.checkpoint.write_offsets(plan)?;
            d.wal_commit = progress::ms(started.elapsed());
            crate::crash::point("after-write-ahead");
        }
        let subscribers = self.subscribers_for(plan)?;

        let t = Instant::now();
        let raw = self.source.read(plan).await?;
        d.get_batch = progress::ms(t.elapsed());
        let num_input_rows = raw.len() as u64;

        let t = Instant::now();
        let decoded = decode::decode(&raw, &crate::schema::campaigns())?;
        drop(raw);
        self.report_malformed(plan, &decoded);
        d.decode = progress::ms(t.elapsed());

        let expired_rows = decode::count_ended_before(&decoded.batch, plan.now_seconds());
        let t = Instant::now();
        let output =
            self.pipeline.run(decoded.batch, subscribers.batch.clone(), plan.now_seconds(), plan.batch_id).await?;
        d.query_planning_and_execution = progress::ms(t.elapsed());

        let t = Instant::now();
        let sinks = self.write(plan, &output, attempt, &mut d).await?;
        d.add_batch = progress::ms(t.elapsed());

        let t = Instant::now();
        let num_output_rows: u64 = output.iter().map(|b| b.num_rows() as u64).sum();
        self.commit(plan, num_output_rows)?;
        d.commit_offsets = progress::ms(t.elapsed());
        d.latest_offset = self.offsets.planning_ms(plan);
        d.trigger_execution = progress::ms(started.elapsed()) + d.latest_offset;

        let since_last_trigger = self.last_trigger.replace(started).map(|t| started - t);
        let progress = BatchProgress::new(
            self.id(),
            BatchReport {
                plan,
                replayed: attempt == Attempt::Replay,
                input_rows: num_input_rows,
                malformed_rows: decoded.malformed.len() as u64,
                expired_rows,
                output_rows: num_output_rows,
                durations: d,
                since_last_trigger,
                elapsed: started.elapsed(),
                latest: self.offsets.latest_for(plan),
                sinks,
                subscribers: &subscribers,
            },
        );
        self.after_commit(plan, &progress);
        Ok(progress)
    }

    /// Step 5: both sinks at once; each is one transaction with its marker.
    async fn write(
        &mut self,
        plan: &BatchPlan,
        output: &[RecordBatch],
        attempt: Attempt,
        d: &mut DurationMs,
    ) -> Result<[SinkProgress; 2]> {
        let check = attempt == Attempt::Replay;
        let kafka = timed(write_once(&mut self.kafka, plan, output, check));
        let postgres = timed(write_once(&mut self.postgres, plan, output, check));
        let ((kafka, kafka_time), (postgres, pg_time)) = tokio::join!(kafka, postgres);
        d.kafka_sink = progress::ms(kafka_time);
        d.postgres_sink = progress::ms(pg_time);
        let (kafka, postgres) = (kafka?, postgres?);
        for (name, outcome) in [("kafka", kafka), ("postgres", postgres)] {
            if outcome.skipped {
                events::SinkWriteSkipped { sink: name, batch_id: plan.batch_id }.emit();
            }
        }
        Ok([sink_progress("kafka", kafka), sink_progress("postgres", postgres)])
    }

    /// Step 6: record the batch as done.
    fn commit(&self, plan: &BatchPlan, num_output_rows: u64) -> Result<()> {
        crate::crash::point("before-commit-log");
        self.checkpoint.write_commit(&BatchCommit {
            batch_id: plan.batch_id,
            committed_at_ms: epoch_ms(),
            num_output_rows,
        })
    }

    /// After the commit: report, move the offsets on, drop what no replay
    /// needs any more.
    fn after_commit(&mut self, plan: &BatchPlan, progress: &BatchProgress) {
        events::BatchCommitted { progress }.emit();
        if let Some(path) = &self.config.progress_json {
            if let Err(e) = progress.append_json(path) {
                tracing::warn!(cause = %e.chain(), "writing the progress record failed");
            }
        }
        self.offsets.advance_past(plan);
        self.offsets.purge(&self.checkpoint, plan.batch_id, self.config.min_batches_to_retain, &self.subscribers.id);
    }

    /// The subscribers a batch joins with: the snapshot its plan names.
    fn subscribers_for(&self, plan: &BatchPlan) -> Result<Subscribers> {
        if plan.subscribers_snapshot == self.subscribers.id {
            return Ok(self.subscribers.clone());
        }
        subscribers::load_snapshot(&self.checkpoint.snapshots_dir(), &plan.subscribers_snapshot)
    }

    /// Reloads the subscribers cache once it is older than
    /// `--subscribers-refresh`. A failed reload keeps the current version
    /// (and says so): the next batches still run, with a growing
    /// `subscribers.ageMs` in their progress, until the cache is older than
    /// `--subscribers-max-staleness`, which stops the run.
    async fn refresh_subscribers_if_stale(&mut self) -> Result<()> {
        let age = self.subscribers.age();
        if age < self.config.subscribers_refresh {
            return Ok(());
        }
        let error = match load_subscribers(&self.config, &self.checkpoint).await {
            Ok(fresh) => {
                self.subscribers = fresh;
                return Ok(());
            }
            Err(e) => e,
        };
        if age > self.config.subscribers_max_staleness {
            return Err(Error::SubscribersStale {
                age_s: age.as_secs(),
                max: humantime::format_duration(self.config.subscribers_max_staleness).to_string(),
                cause: error.chain().to_string(),
            });
        }
        tracing::warn!(
            cause = %error.chain(),
            age_s = age.as_secs(),
            "reloading the subscribers cache failed; keeping the current version"
        );
        Ok(())
    }

    fn report_malformed(&self, plan: &BatchPlan, decoded: &Decoded) {
        for m in &decoded.malformed {
            events::MalformedMessage { topic: &plan.topic, partition: m.partition, offset: m.offset, error: &m.error }
                .emit();
        }
    }
}

/// Connects both sinks with the configured guarantee.
async fn connect_sinks(config: &Config, query_id: &str, source: &KafkaSource) -> Result<(PostgresSink, KafkaSink)> {
    let exactly_once = config.guarantee.exactly_once();
    let postgres = PostgresSink::connect(&config.postgres, query_id, exactly_once).await?;
    let kafka = KafkaSink::try_new(&config.kafka, query_id, source.group_metadata()?, exactly_once).await?;
    Ok((postgres, kafka))
}

/// Loads the subscribers from Postgres and saves their snapshot.
async fn load_subscribers(config: &Config, checkpoint: &CheckpointStore) -> Result<Subscribers> {
    let started = Instant::now();
    let subs = subscribers::load(&config.postgres, &config.sql_dir).await?;
    subscribers::save_snapshot(&checkpoint.snapshots_dir(), &subs)?;
    events::SubscribersLoaded {
        snapshot: &subs.id,
        rows: subs.num_rows(),
        duplicates_dropped: subs.duplicates_dropped,
        elapsed_ms: started.elapsed().as_millis(),
    }
    .emit();
    Ok(subs)
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn sink_progress(name: &str, outcome: SinkOutcome) -> SinkProgress {
    SinkProgress { description: name.to_string(), num_output_rows: outcome.rows_written, skipped: outcome.skipped }
}
