//! Starting a query: the SQL files, the checkpoint, the subscribers, Kafka
//! and both sinks checked in that order (so the first broken one is named),
//! the query claimed in Postgres, and the checkpoint compared with what the
//! sinks already hold.

use crate::checkpoint::CheckpointStore;
use crate::config::{Config, OnBadRecord};
use crate::error::{Error, Result};
use crate::sink::kafka::KafkaSink;
use crate::sink::owner;
use crate::sink::postgres::PostgresSink;
use crate::sink::Sink;
use crate::source::KafkaSource;
use crate::subscribers_refresh::Refresher;
use crate::transform::SqlPipeline;

use super::{hold, OffsetState, Query};

impl Query {
    /// Checks the SQL files, opens the checkpoint, loads the subscribers,
    /// checks that Kafka answers and connects both sinks, in that order, so
    /// the first broken one is named. Reads where the checkpoint stands.
    pub(crate) async fn start(config: Config) -> Result<Self> {
        let pipeline = SqlPipeline::load(&config.sql_dir)?;
        pipeline.validate().await?;
        let checkpoint = CheckpointStore::open(&config.checkpoint_dir)?;
        let query_id = checkpoint.query_id().to_string();
        let offsets = OffsetState::resume(&checkpoint, &config.kafka.input_topic)?;
        let held = hold::Held::load(&checkpoint, offsets.next_batch_id())?;
        let refresher =
            Refresher::start(&config.postgres, &config.sql_dir, checkpoint.snapshots_dir(), config.subscribers).await?;
        let subscribers = refresher.latest();
        crate::kafka::check_reachable(&config.kafka).await?;
        let source = KafkaSource::try_new(&config.kafka, &query_id)?;
        if config.bad_records.on_bad_record == OnBadRecord::DeadLetter {
            let otherwise = "choose --on-bad-record drop or fail";
            source.require_topic(&config.bad_records.dead_letter_topic, "--dead-letter-topic", otherwise).await?;
        }
        if config.guarantee.exactly_once() {
            let otherwise = "run with --guarantee at-least-once";
            source.require_topic(&config.kafka.marker_topic, "--marker-topic", otherwise).await?;
        }
        let ownership = owner::Ownership::claim(&config.postgres, &query_id).await?;
        let (mut postgres, mut kafka) = connect_sinks(&config, &query_id, &source, ownership.clone()).await?;
        check_sinks_not_ahead(&config, &query_id, &offsets, &mut postgres, &mut kafka).await?;
        if let Some(before) = offsets.last_sql_fingerprint().filter(|f| *f != pipeline.fingerprint()) {
            tracing::info!(before, now = %pipeline.fingerprint(), "the SQL files changed since the last committed batch; new batches use the new files");
        }
        tracing::info!(
            query_id = %query_id,
            checkpoint = %config.checkpoint_dir.display(),
            sql_files = pipeline.steps().len(),
            held_campaigns = held.len(),
            postgres = %config.postgres.target(),
            settings = %config.describe(),
            "query started"
        );
        Ok(Query {
            config,
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
            held,
            ahead: None,
        })
    }
}

/// Connects both sinks with the configured guarantee.
pub(super) async fn connect_sinks(
    config: &Config,
    query_id: &str,
    source: &KafkaSource,
    ownership: owner::Ownership,
) -> Result<(PostgresSink, KafkaSink)> {
    let exactly_once = config.guarantee.exactly_once();
    let postgres = PostgresSink::connect(&config.postgres, query_id, exactly_once, ownership.epoch()).await?;
    let dead_letter_topic = (config.bad_records.on_bad_record == OnBadRecord::DeadLetter)
        .then(|| config.bad_records.dead_letter_topic.clone());
    let group = source.group_metadata()?;
    let kafka = KafkaSink::try_new(&config.kafka, query_id, group, exactly_once, dead_letter_topic, ownership).await?;
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
                dir: config.checkpoint_dir.clone(),
                query_id: query_id.to_string(),
                known: known.map_or("none (no batch yet)".to_string(), |k| format!("batch {k}")),
                sink,
                held,
            });
        }
    }
    Ok(())
}
