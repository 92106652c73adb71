//! Starting a query's shards: the SQL files, the checkpoint, the
//! subscribers, Kafka and both sinks checked in that order (so the first
//! broken one is named), each shard claimed in Postgres, and each shard's
//! logs compared with what the sinks already hold.

use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::layout::Layout;
use crate::checkpoint::CheckpointStore;
use crate::config::{Config, OnBadRecord};
use crate::error::{Error, Result};
use crate::lookups::Lookups;
use crate::shard::Shard;
use crate::sink::kafka::KafkaSink;
use crate::sink::owner;
use crate::sink::postgres::PostgresSink;
use crate::sink::Sink;
use crate::source::KafkaSource;
use crate::subscribers::refresh::Refresher;
use crate::transform::SqlPipeline;

use super::{hold, OffsetState, Query};

impl Query {
    /// Starts every shard of the query this process runs (`--shard-ids`):
    /// checks the SQL files, opens the checkpoint and each shard's logs,
    /// loads the subscribers once for all of them, checks that Kafka
    /// answers and starts each shard ([`Query::start_shard`]), in that
    /// order, so the first broken one is named.
    pub(crate) async fn start_all(config: Config) -> Result<Vec<Self>> {
        let pipeline = SqlPipeline::load_with(&config.sql_dir, &config.job_overrides)?;
        let lookups = Lookups::start(&config.postgres, pipeline.job(), &config.sql_dir).await?;
        let pipeline = pipeline.with_lookups(lookups.schemas());
        if config.hold_future_campaigns && pipeline.job().options.input.window.is_none() {
            return Err(Error::config(
                "--hold-future-campaigns",
                "the job declares no window to hold by (job.toml: [input] window = { start = ..., end = ... })",
            ));
        }
        let pipeline = pipeline.validated().await?;
        let layout = Layout::open(&config.checkpoint_dir, config.shards)?;
        let pod = config.pod_name.clone().unwrap_or_else(crate::util::files::host_name);
        let ids = config.shard_ids.resolve(layout.count(), &pod)?;
        let mut checkpoints = Vec::with_capacity(ids.len());
        for id in &ids {
            checkpoints.push(open_shard_waiting(&layout, *id).await?);
        }
        let snapshot_dirs = checkpoints.iter().map(CheckpointStore::snapshots_dir).collect();
        let refresher =
            Arc::new(Refresher::start(&config.postgres, &config.sql_dir, snapshot_dirs, config.subscribers).await?);
        crate::kafka::check_reachable(&config.kafka).await?;
        let mut queries = Vec::with_capacity(ids.len());
        for (id, checkpoint) in ids.into_iter().zip(checkpoints) {
            let shard = layout.shard(id);
            let components = (pipeline.clone(), refresher.clone(), lookups.clone());
            queries.push(Self::start_shard(&config, shard, checkpoint, components).await?);
        }
        Ok(queries)
    }

    /// Starts one shard: reads where its logs stand, connects the source
    /// (its partitions only) and both sinks under the shard's key, claims
    /// the shard in Postgres and compares its logs with what the sinks hold.
    async fn start_shard(
        config: &Config,
        shard: Shard,
        checkpoint: CheckpointStore,
        (pipeline, refresher, lookups): (SqlPipeline, Arc<Refresher>, Lookups),
    ) -> Result<Self> {
        let query_id = checkpoint.query_id().to_string();
        let sink_key = shard.sink_key(&query_id);
        let offsets = OffsetState::resume(&checkpoint, &config.kafka.input_topic)?;
        let held = hold::Held::load(&checkpoint, offsets.next_batch_id())?;
        let subscribers = refresher.latest();
        let source = KafkaSource::try_new(&config.kafka, &query_id, pipeline.input().clone())?.for_shard(shard);
        if config.bad_records.on_bad_record == OnBadRecord::DeadLetter {
            let otherwise = "choose --on-bad-record drop or fail";
            source.require_topic(&config.bad_records.dead_letter_topic, "--dead-letter-topic", otherwise).await?;
        }
        if config.guarantee.exactly_once() {
            let otherwise = "run with --guarantee at-least-once";
            source.require_topic(&config.kafka.marker_topic, "--marker-topic", otherwise).await?;
        }
        let ownership = owner::Ownership::claim(&config.postgres, &sink_key).await?;
        let (mut postgres, mut kafka) = connect_sinks(config, &sink_key, &source, ownership.clone(), &pipeline).await?;
        check_sinks_not_ahead(config, &sink_key, &offsets, &mut postgres, &mut kafka).await?;
        if let Some(before) = offsets.last_sql_fingerprint().filter(|f| *f != pipeline.fingerprint()) {
            tracing::info!(before, now = %pipeline.fingerprint(), "the SQL files changed since the last committed batch; new batches use the new files");
        }
        tracing::info!(
            query_id = %query_id,
            shard = %shard.label(),
            checkpoint = %checkpoint.dir(),
            sql_files = pipeline.steps().len(),
            held_campaigns = held.len(),
            postgres = %config.postgres.target(),
            settings = %config.describe(),
            "query started"
        );
        Ok(Query {
            config: config.clone(),
            checkpoint,
            source,
            pipeline,
            kafka,
            postgres,
            subscribers,
            offsets,
            last_trigger: None,
            ownership,
            refresher,
            lookups,
            shard,
            held,
            ahead: None,
        })
    }
}

/// How long a shard's start waits for another process to let go of it (a
/// shard moving between processes: its old process finishes its batch,
/// commits and exits).
const SHARD_HANDOVER_WAIT: Duration = Duration::from_secs(120);

/// Opens shard `id`'s logs; in the sharded layout, waits up to
/// [`SHARD_HANDOVER_WAIT`] while another process still runs it. A query in
/// the root layout is refused at once, as before shards.
async fn open_shard_waiting(layout: &Layout, id: u32) -> Result<CheckpointStore> {
    let deadline = tokio::time::Instant::now() + SHARD_HANDOVER_WAIT;
    let mut logged = false;
    loop {
        match layout.open_shard(id) {
            Err(Error::CheckpointInUse { holder, .. })
                if layout.is_sharded() && tokio::time::Instant::now() < deadline =>
            {
                if !std::mem::replace(&mut logged, true) {
                    tracing::info!(shard = id, %holder, "another process still runs this shard; waiting for it to stop");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Connects both sinks with the configured guarantee.
pub(super) async fn connect_sinks(
    config: &Config,
    sink_key: &str,
    source: &KafkaSource,
    ownership: owner::Ownership,
    pipeline: &SqlPipeline,
) -> Result<(PostgresSink, KafkaSink)> {
    let job = pipeline.job();
    let exactly_once = config.guarantee.exactly_once();
    let output = pipeline.output_schema().await?;
    let options = &job.options.sink.postgres;
    let postgres =
        PostgresSink::connect(&config.postgres, options, &output, sink_key, exactly_once, ownership.epoch()).await?;
    let dead_letter_topic = (config.bad_records.on_bad_record == OnBadRecord::DeadLetter)
        .then(|| config.bad_records.dead_letter_topic.clone());
    let group = source.group_metadata()?;
    let kafka = KafkaSink::try_new(&config.kafka, sink_key, group, exactly_once, dead_letter_topic, ownership)
        .await?
        .keyed_by(job.options.sink.kafka.key.as_deref());
    Ok((postgres, kafka))
}

/// Refuses a checkpoint older than the sinks: one holding a batch of this
/// query that the checkpoint does not know. Postgres answers from its marker
/// table; Kafka's marker scan runs only once the checkpoint has batches (a
/// new query's output is not scanned for an id nobody used).
async fn check_sinks_not_ahead(
    config: &Config,
    query_id: &str,
    offsets: &OffsetState,
    postgres: &mut PostgresSink,
    kafka: &mut KafkaSink,
) -> Result<()> {
    let known = offsets.newest_known();
    let mut held = vec![("postgres", postgres.latest_committed().await?)];
    if known.is_some() {
        held.push(("kafka", kafka.latest_committed().await?));
    }
    for (sink, held) in held {
        if let Some(held) = held.filter(|h| known.is_none_or(|k| *h > k)) {
            return Err(Error::CheckpointBehind {
                dir: config.checkpoint_dir.describe(""),
                query_id: query_id.to_string(),
                known: known.map_or("none (no batch yet)".to_string(), |k| format!("batch {k}")),
                sink,
                held,
            });
        }
    }
    Ok(())
}
