//! Runs one planned batch through its steps: log offsets, read, transform,
//! write, commit. Owns the components a batch touches; the loop around it is
//! [`crate::driver`].

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use crate::batch::BatchPlan;
use crate::checkpoint::{BatchCommit, CheckpointStore};
use crate::config::Config;
use crate::error::Result;
use crate::events;
use crate::progress::{self, BatchProgress, DurationMs, SinkProgress, SubscribersProgress};
use crate::sink::kafka::KafkaSink;
use crate::sink::postgres::PostgresSink;
use crate::sink::{write_once, SinkOutcome};
use crate::source::decode::{self, Decoded};
use crate::source::KafkaSource;
use crate::subscribers::{self, Subscribers};
use crate::transform::SqlPipeline;

/// The components of a running query.
pub struct BatchRunner {
    checkpoint: CheckpointStore,
    source: KafkaSource,
    pipeline: SqlPipeline,
    kafka: KafkaSink,
    postgres: PostgresSink,
    subscribers: Subscribers,
    config: Config,
    last_trigger: Option<Instant>,
}

impl BatchRunner {
    /// Checks the SQL files, opens the checkpoint, loads the subscribers and
    /// connects both sinks, in that order, so the first broken one is named.
    pub async fn start(config: &Config) -> Result<Self> {
        let pipeline = SqlPipeline::load(&config.sql_dir)?;
        pipeline.validate().await?;
        let checkpoint = CheckpointStore::open(&config.checkpoint_dir)?;
        let query_id = checkpoint.query_id().to_string();
        let subscribers = load_subscribers(config, &checkpoint).await?;
        crate::kafka::check_reachable(&config.kafka).await?;
        let source = KafkaSource::try_new(&config.kafka, &query_id)?;
        let (postgres, kafka) = connect_sinks(config, &query_id, &source).await?;
        tracing::info!(
            query_id = %query_id,
            checkpoint = %config.checkpoint_dir.display(),
            sql_files = pipeline.steps().len(),
            postgres = %config.postgres.target(),
            settings = %config.describe(),
            "query started"
        );
        Ok(BatchRunner {
            checkpoint,
            source,
            pipeline,
            kafka,
            postgres,
            subscribers,
            config: config.clone(),
            last_trigger: None,
        })
    }

    pub fn checkpoint(&self) -> &CheckpointStore {
        &self.checkpoint
    }

    pub fn source(&self) -> &KafkaSource {
        &self.source
    }

    pub fn subscribers(&self) -> &Subscribers {
        &self.subscribers
    }

    /// Reloads the subscribers cache once it is older than `refresh`. A failed
    /// reload keeps the current version (and says so): the next batches still
    /// run, with a growing `subscribers.ageMs` in their progress.
    pub async fn refresh_subscribers_if_stale(&mut self, refresh: Duration) {
        if self.subscribers.age() < refresh {
            return;
        }
        match load_subscribers(&self.config, &self.checkpoint).await {
            Ok(fresh) => self.subscribers = fresh,
            Err(e) => tracing::warn!(
                cause = %e.chain(),
                age_s = self.subscribers.age().as_secs(),
                "reloading the subscribers cache failed; keeping the current version"
            ),
        }
    }

    /// Re-creates both sinks after a failure (a fenced or broken producer, a
    /// closed connection).
    pub async fn reconnect(&mut self) -> Result<()> {
        let (postgres, kafka) = connect_sinks(&self.config, self.checkpoint.query_id(), &self.source).await?;
        self.postgres = postgres;
        self.kafka = kafka;
        Ok(())
    }

    /// A new batch: write-ahead first, then the steps; sinks are not asked
    /// for markers, since nothing can hold a batch that was just planned.
    pub async fn run_new(&mut self, plan: &BatchPlan, latest: Option<&[(i32, i64)]>) -> Result<BatchProgress> {
        let started = Instant::now();
        self.checkpoint.write_offsets(plan)?;
        let wal = started.elapsed();
        crate::crash::point("after-write-ahead");
        let mut progress = self.execute(plan, false, latest, started).await?;
        progress.duration_ms.wal_commit = progress::ms(wal);
        Ok(progress)
    }

    /// A batch planned before (a replay after a crash, or a retry): the same
    /// plan, and each sink skips the write if it already holds the batch.
    pub async fn run_replay(&mut self, plan: &BatchPlan) -> Result<BatchProgress> {
        let mut progress = self.execute(plan, true, None, Instant::now()).await?;
        progress.replayed = true;
        Ok(progress)
    }

    async fn execute(
        &mut self,
        plan: &BatchPlan,
        check_sinks: bool,
        latest: Option<&[(i32, i64)]>,
        started: Instant,
    ) -> Result<BatchProgress> {
        let mut d = DurationMs::default();
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

        let t = Instant::now();
        let output =
            self.pipeline.run(decoded.batch, subscribers.batch.clone(), plan.now_seconds(), plan.batch_id).await?;
        d.query_planning_and_execution = progress::ms(t.elapsed());

        let t = Instant::now();
        let (kafka, postgres) = self.write(plan, &output, check_sinks, &mut d).await?;
        d.add_batch = progress::ms(t.elapsed());

        let t = Instant::now();
        let num_output_rows: u64 = output.iter().map(|b| b.num_rows() as u64).sum();
        self.commit(plan, num_output_rows)?;
        d.commit_offsets = progress::ms(t.elapsed());
        d.trigger_execution = progress::ms(started.elapsed());

        let since_last = self.last_trigger.replace(started).map(|t| started - t);
        let progress = BatchProgress {
            id: self.checkpoint.query_id().to_string(),
            batch_id: plan.batch_id,
            timestamp: progress::rfc3339_ms(plan.batch_timestamp_ms),
            replayed: false,
            num_input_rows,
            num_malformed_rows: decoded.malformed.len() as u64,
            num_output_rows,
            input_rows_per_second: since_last.map_or(0.0, |s| progress::rate(num_input_rows, s)),
            processed_rows_per_second: progress::rate(num_input_rows, started.elapsed()),
            duration_ms: d,
            sources: vec![progress::source_progress(plan, latest, num_input_rows)],
            sinks: vec![sink_progress("kafka", kafka), sink_progress("postgres", postgres)],
            subscribers: SubscribersProgress {
                snapshot: subscribers.id.clone(),
                num_rows: subscribers.num_rows() as u64,
                age_ms: progress::ms(subscribers.age()),
            },
        };
        Ok(progress)
    }

    /// Step 5: both sinks at once; each is one transaction with its marker.
    async fn write(
        &mut self,
        plan: &BatchPlan,
        output: &[RecordBatch],
        check: bool,
        d: &mut DurationMs,
    ) -> Result<(SinkOutcome, SinkOutcome)> {
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
        Ok((kafka, postgres))
    }

    /// Step 6: record the batch as done.
    fn commit(&self, plan: &BatchPlan, num_output_rows: u64) -> Result<()> {
        crate::crash::point("before-commit-log");
        self.checkpoint.write_commit(&BatchCommit {
            batch_id: plan.batch_id,
            committed_at_ms: crate::driver::epoch_ms(),
            num_output_rows,
        })
    }

    /// The subscribers a batch joins with: the snapshot its plan names.
    fn subscribers_for(&self, plan: &BatchPlan) -> Result<Subscribers> {
        if plan.subscribers_snapshot == self.subscribers.id {
            return Ok(self.subscribers.clone());
        }
        subscribers::load_snapshot(&self.checkpoint.snapshots_dir(), &plan.subscribers_snapshot)
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
    let kafka = KafkaSink::try_new(&config.kafka, query_id, source.clone(), exactly_once).await?;
    Ok((postgres, kafka))
}

/// Loads the subscribers from Postgres and saves their snapshot.
async fn load_subscribers(config: &Config, checkpoint: &CheckpointStore) -> Result<Subscribers> {
    let started = Instant::now();
    let subs = subscribers::load(&config.postgres, &config.sql_dir).await?;
    subscribers::save_snapshot(&checkpoint.snapshots_dir(), &subs)?;
    events::SubscribersLoaded { snapshot: &subs.id, rows: subs.num_rows(), elapsed_ms: started.elapsed().as_millis() }
        .emit();
    Ok(subs)
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn sink_progress(name: &str, outcome: SinkOutcome) -> SinkProgress {
    SinkProgress { description: name.to_string(), num_output_rows: outcome.rows_written, skipped: outcome.skipped }
}
