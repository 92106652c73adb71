//! The Kafka source: asks the broker where each partition ends, reads planned
//! offset ranges with `assign()`, and hands back the raw values.
//!
//! Offsets belong to sparklet's checkpoint, not to a consumer group: the
//! consumer never subscribes and never auto-commits. The group named after the
//! query receives each committed batch's end offsets, for lag tools
//! (`kafka-consumer-groups`, Burrow, KEDA) only: inside the sink's
//! transaction with exactly-once (see [`crate::sink::kafka`]), by
//! [`KafkaSource::commit_offsets`] after the commit with at-least-once.

pub(crate) mod budget;
#[cfg(test)]
mod declared_tests;
pub mod decode;
mod finish;
pub mod input;
pub(crate) mod plan;
pub(crate) mod read_ahead;
pub(crate) mod refusal;
pub(crate) mod stream_decode;
pub(crate) mod validate;
#[cfg(test)]
mod validate_tests;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::{BatchPlan, OffsetRange};
use crate::config::KafkaConfig;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::kafka::log::LoggingContext;
use crate::shard::Shard;
use crate::util::blocking;
use decode::RawBatch;
use plan::Watermarks;
pub use stream_decode::ReadBatch;
use stream_decode::StreamDecoder;

/// Reads the input topic.
#[derive(Clone)]
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<LoggingContext>>,
    topic: String,
    timeout: Duration,
    /// The shard whose partitions this source plans ([`crate::shard`]).
    shard: Shard,
    /// What a message must be, and the columns it decodes into.
    input: Arc<input::Input>,
}

impl KafkaSource {
    /// Creates the consumer; connects lazily.
    pub fn try_new(kafka: &KafkaConfig, query_id: &str, input: Arc<input::Input>) -> Result<Self> {
        let consumer: BaseConsumer<LoggingContext> = crate::kafka::consumer_config(kafka, query_id)
            .create_with_context(LoggingContext::new("input consumer"))
            .map_err(|e| Error::kafka("creating the input consumer", e))?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            topic: kafka.input_topic.clone(),
            timeout: kafka.timeout,
            shard: Shard::whole(),
            input,
        })
    }

    /// The same source, planning only the partitions `shard` owns.
    pub fn for_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Whether a broker answers a metadata request for the input topic
    /// within `timeout` (a retry's probe).
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<()> {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        blocking(move || {
            consumer
                .fetch_metadata(Some(&topic), timeout)
                .map(drop)
                .map_err(|e| Error::kafka(format!("fetching metadata of topic '{topic}'"), e))
        })
        .await
    }

    /// The input topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Low and high watermarks of every partition of the input topic that
    /// the source's shard owns; partitions added since the last call are
    /// included.
    pub async fn watermarks(&self) -> Result<Vec<Watermarks>> {
        let this = self.clone();
        blocking(move || this.watermarks_blocking()).await
    }

    /// Whether any partition in `starts` holds data at or after its start:
    /// one ListOffsets request, the cheap check an idle `--trigger 0s` query
    /// repeats between full plannings.
    pub async fn has_data_from(&self, starts: &HashMap<i32, i64>) -> Result<bool> {
        let (this, starts) = (self.clone(), starts.clone());
        blocking(move || {
            let partitions: Vec<i32> = starts.keys().copied().collect();
            let highs = this.list_offsets(&partitions, Offset::End)?;
            Ok(highs.iter().any(|(p, high)| starts.get(p).is_some_and(|start| high > start)))
        })
        .await
    }

    /// Reads exactly the ranges of `plan`, validated and decoded as the
    /// messages arrive, in (partition, offset) order.
    pub async fn read(&self, plan: &BatchPlan, limits: Limits) -> Result<ReadBatch> {
        self.read_with(plan, None, limits, None).await
    }

    /// Fails unless `topic` exists (the dead-letter and marker topics,
    /// checked at start so a batch cannot fail on them instead).
    pub async fn require_topic(&self, topic: &str, option: &'static str, otherwise: &str) -> Result<()> {
        let (this, name) = (self.clone(), topic.to_string());
        let partitions = blocking(move || crate::kafka::topic_partitions(this.consumer.as_ref(), &name, this.timeout));
        if partitions.await?.is_empty() {
            return Err(Error::KafkaState(format!(
                "topic '{topic}' ({option}) does not exist: create it, name another with {option}, or {otherwise}"
            )));
        }
        Ok(())
    }

    /// Commits where the next batch after `plan` starts to the query's
    /// consumer group, outside any transaction (at-least-once; exactly-once
    /// commits them in the output transaction), and waits for the broker's
    /// answer. For lag tools only: sparklet reads its offsets from the
    /// checkpoint, so a failure is only logged.
    pub async fn commit_offsets(&self, plan: &BatchPlan) {
        let (this, plan) = (self.clone(), plan.clone());
        let committed = blocking(move || {
            let offsets = crate::kafka::end_offsets(&plan)?;
            let committed = this.consumer.commit(&offsets, CommitMode::Sync);
            committed.map_err(|e| Error::kafka(format!("committing batch {}'s input offsets", plan.batch_id), e))
        });
        if let Err(e) = committed.await {
            tracing::warn!(cause = %e.chain(), "committing the input offsets to the consumer group failed");
        }
    }

    /// The consumer-group metadata the sink's transaction commits offsets for.
    pub fn group_metadata(&self) -> Result<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer
            .group_metadata()
            .ok_or_else(|| Error::KafkaState("the input consumer has no group metadata".into()))
    }

    fn watermarks_blocking(&self) -> Result<Vec<Watermarks>> {
        let partitions = crate::kafka::topic_partitions(self.consumer.as_ref(), &self.topic, self.timeout)?;
        if partitions.is_empty() {
            return Err(Error::KafkaState(format!(
                "input topic '{}' does not exist (or has no partitions)",
                self.topic
            )));
        }
        let partitions: Vec<i32> = partitions.into_iter().filter(|p| self.shard.owns(*p)).collect();
        if partitions.is_empty() {
            // More shards than partitions: this shard waits for one.
            return Ok(Vec::new());
        }
        // One ListOffsets request per bound for all partitions (the consumer's
        // read_committed isolation makes "latest" the last stable offset).
        let lows = self.list_offsets(&partitions, Offset::Beginning)?;
        let highs = self.list_offsets(&partitions, Offset::End)?;
        let mut marks: Vec<Watermarks> = partitions
            .iter()
            .map(|&partition| {
                let low = lows.get(&partition).copied().unwrap_or(0);
                let high = highs.get(&partition).copied().unwrap_or(low);
                Watermarks { partition, low, high }
            })
            .collect();
        marks.sort_by_key(|w| w.partition);
        Ok(marks)
    }

    /// Offsets of `partitions` at `at` (`Beginning` or `End`).
    fn list_offsets(&self, partitions: &[i32], at: Offset) -> Result<HashMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(&self.topic, *p, at)
                .map_err(|e| Error::kafka("building the offsets request", e))?;
        }
        let listed = self
            .consumer
            .offsets_for_times(tpl, self.timeout)
            .map_err(|e| Error::kafka(format!("listing offsets of input topic '{}'", self.topic), e))?;
        let mut out = HashMap::new();
        for elem in listed.elements() {
            if let Some(err) = elem.error().err() {
                return Err(Error::kafka(format!("listing offsets of {}[{}]", self.topic, elem.partition()), err));
            }
            if let Offset::Offset(o) = elem.offset() {
                out.insert(elem.partition(), o);
            }
        }
        Ok(out)
    }

    /// Reads the ranges into `decoder`, each partition's messages in offset
    /// order.
    /// Stops once more than `budget` bytes were read, besides each
    /// partition's first message (which planning always keeps, however
    /// large): returns how many then.
    fn read_into(
        &self,
        ranges: &[OffsetRange],
        decoder: &mut StreamDecoder,
        budget: Option<u64>,
    ) -> Result<Option<u64>> {
        let (mut read, mut limit) = (0u64, budget.unwrap_or(u64::MAX));
        let mut started = std::collections::HashSet::new();
        crate::kafka::read_ranges_while(&self.consumer, &self.topic, ranges, self.timeout, |message| {
            let size = (message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)) as u64;
            read += size;
            if started.insert(message.partition()) {
                limit = limit.saturating_add(size);
            }
            if read > limit {
                return std::ops::ControlFlow::Break(());
            }
            let timestamp = message.timestamp().to_millis();
            decoder.push(message.partition(), message.offset(), message.key(), message.payload(), timestamp);
            std::ops::ControlFlow::Continue(())
        })?;
        Ok((read > limit).then_some(read))
    }

    /// Reads the ranges; each partition's messages in offset order.
    fn read_partitions(&self, ranges: &[OffsetRange]) -> Result<BTreeMap<i32, RawBatch>> {
        let mut by_partition: BTreeMap<i32, RawBatch> = BTreeMap::new();
        crate::kafka::read_ranges(&self.consumer, &self.topic, ranges, self.timeout, |message| {
            let (partition, offset) = (message.partition(), message.offset());
            let raw = by_partition.entry(partition).or_default();
            raw.note_timestamp(message.timestamp().to_millis());
            raw.push(partition, offset, message.key(), message.payload());
        })?;
        Ok(by_partition)
    }
}
