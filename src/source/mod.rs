//! The Kafka source: asks the broker where each partition ends, reads planned
//! offset ranges with `assign()`, and hands back the raw values.
//!
//! Offsets belong to sparklet's checkpoint, not to a consumer group: the
//! consumer never subscribes and never auto-commits. The group named after the
//! query only receives offsets inside the sink's transaction (see
//! [`crate::sink::kafka`]), which is also what lag tools read.

pub mod decode;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::{BatchPlan, OffsetRange};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka_log::LoggingContext;
use decode::RawBatch;
use plan::Watermarks;

/// Reads the input topic.
#[derive(Clone)]
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<LoggingContext>>,
    topic: String,
    timeout: Duration,
}

impl KafkaSource {
    /// Creates the consumer; connects lazily.
    pub fn try_new(kafka: &KafkaConfig, query_id: &str) -> Result<Self> {
        let consumer: BaseConsumer<LoggingContext> = crate::kafka::consumer_config(kafka, query_id)
            .create_with_context(LoggingContext::new("input consumer"))
            .map_err(|e| Error::kafka("creating the input consumer", e))?;
        Ok(KafkaSource { consumer: Arc::new(consumer), topic: kafka.input_topic.clone(), timeout: kafka.timeout })
    }

    /// The input topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Low and high watermarks of every partition of the input topic;
    /// partitions added since the last call are included.
    pub async fn watermarks(&self) -> Result<Vec<Watermarks>> {
        let this = self.clone();
        blocking(move || this.watermarks_blocking()).await
    }

    /// Reads exactly the ranges of `plan`, in (partition, offset) order.
    pub async fn read(&self, plan: &BatchPlan) -> Result<RawBatch> {
        let this = self.clone();
        let ranges = plan.ranges.clone();
        blocking(move || this.read_blocking(&ranges)).await
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

    fn read_blocking(&self, ranges: &[OffsetRange]) -> Result<RawBatch> {
        let mut pending: BTreeMap<i32, (OffsetRange, RawBatch)> =
            ranges.iter().filter(|r| !r.is_empty()).map(|r| (r.partition, (*r, RawBatch::default()))).collect();
        let mut done = BTreeMap::new();
        if pending.is_empty() {
            return Ok(RawBatch::default());
        }
        self.assign(pending.values().map(|(r, _)| r))?;
        let mut deadline = Instant::now() + self.timeout;
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(self.read_timeout(&pending));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    if let Some((range, raw)) = pending.get_mut(&partition) {
                        if offset >= range.start && offset < range.end {
                            raw.push(partition, offset, message.payload());
                            deadline = Instant::now() + self.timeout;
                        }
                        if offset + 1 >= range.end {
                            move_done(&mut pending, &mut done, partition);
                        }
                    }
                }
                // Already logged by the client's context (see crate::kafka_log).
                Some(Err(err)) => tracing::debug!(topic = %self.topic, cause = %err, "kafka read error, retrying"),
                // Transaction markers and compacted gaps have no message: the
                // consumer's position tells when a range is fully read.
                None => self.mark_done_by_position(&mut pending, &mut done)?,
            }
        }
        let _ = self.consumer.unassign();
        let mut out = RawBatch::default();
        for (_, raw) in done.into_values() {
            out.append(raw);
        }
        Ok(out)
    }

    fn assign<'a>(&self, ranges: impl Iterator<Item = &'a OffsetRange>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for r in ranges {
            tpl.add_partition_offset(&self.topic, r.partition, Offset::Offset(r.start))
                .map_err(|e| Error::kafka("building the assignment", e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| Error::kafka(format!("assigning partitions of '{}'", self.topic), e))
    }

    fn mark_done_by_position(
        &self,
        pending: &mut BTreeMap<i32, (OffsetRange, RawBatch)>,
        done: &mut BTreeMap<i32, (OffsetRange, RawBatch)>,
    ) -> Result<()> {
        let positions =
            self.consumer.position().map_err(|e: KafkaError| Error::kafka("reading the consumer position", e))?;
        let reached: Vec<i32> = pending
            .iter()
            .filter(|(p, (r, _))| crate::kafka::position_reached(&positions, &self.topic, **p, r.end))
            .map(|(p, _)| *p)
            .collect();
        for partition in reached {
            move_done(pending, done, partition);
        }
        Ok(())
    }

    fn read_timeout(&self, pending: &BTreeMap<i32, (OffsetRange, RawBatch)>) -> Error {
        let missing: Vec<String> = pending
            .values()
            .map(|(r, raw)| format!("[{}] {}..{} ({} read)", r.partition, r.start, r.end, raw.len()))
            .collect();
        Error::KafkaTimeout(format!(
            "timed out after {:?} without progress reading {} partitions {}",
            self.timeout,
            self.topic,
            missing.join(", ")
        ))
    }
}

fn move_done(
    pending: &mut BTreeMap<i32, (OffsetRange, RawBatch)>,
    done: &mut BTreeMap<i32, (OffsetRange, RawBatch)>,
    partition: i32,
) {
    if let Some(entry) = pending.remove(&partition) {
        done.insert(partition, entry);
    }
}

/// Runs a blocking librdkafka call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Runtime(format!("a blocking Kafka call panicked or was cancelled: {e}")))?
}
