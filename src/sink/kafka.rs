//! The Kafka sink: one JSON message per output row, keyed by `client_id`,
//! written in one Kafka transaction per batch.
//!
//! Every message carries the query and batch ids as headers: that is the
//! sink's marker, which recovery reads back ([`super::kafka_marker`]). The
//! transaction also commits the batch's input end offsets for the query's
//! consumer group (`sendOffsetsToTransaction`), so lag tools see sparklet's
//! progress. The producer's
//! `transactional.id` is stable per query, so `init_transactions` at start
//! fences a zombie and aborts (or completes) a transaction a crash left open.
//! Consumers of the output topic must use `isolation.level=read_committed`.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::json::LineDelimitedWriter;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::BatchPlan;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::sink::deliveries::Deliveries;
use crate::sink::{kafka_marker, Sink};
use crate::source::blocking;

/// The column whose value is each message's key.
const KEY_COLUMN: &str = "client_id";

/// Writes batches to the output topic, exactly once per batch. Cloning shares
/// the producer.
#[derive(Clone)]
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    /// The input consumer's group, whose offsets each transaction commits.
    group: Arc<ConsumerGroupMetadata>,
    topic: String,
    timeout: Duration,
    /// Exactly-once: one transaction per batch, with the input offsets.
    transactional: bool,
    query_id: String,
    /// Settings of the reader that looks for batch markers on recovery.
    marker_reader: rdkafka::ClientConfig,
}

impl KafkaSink {
    /// Creates the transactional producer and initialises transactions.
    pub async fn try_new(
        kafka: &KafkaConfig,
        query_id: &str,
        group: ConsumerGroupMetadata,
        transactional: bool,
    ) -> Result<Self> {
        let producer: ThreadedProducer<Deliveries> = crate::kafka::producer_config(kafka, query_id, transactional)
            .create_with_context(Deliveries::default())
            .map_err(|e| Error::kafka("creating the output producer", e))?;
        let timeout = kafka.timeout;
        let sink = KafkaSink {
            producer,
            group: Arc::new(group),
            topic: kafka.output_topic.clone(),
            timeout,
            transactional,
            query_id: query_id.to_string(),
            marker_reader: crate::kafka::consumer_config(kafka, query_id),
        };
        if !transactional {
            return Ok(sink);
        }
        let init = sink.producer.clone();
        blocking(move || {
            init.init_transactions(timeout)
                .map_err(|e| Error::kafka("initialising transactions of the output producer", e))
        })
        .await?;
        Ok(sink)
    }

    /// Sends, awaits and commits; blocking, run off the async runtime.
    fn write_blocking(&self, plan: &BatchPlan, rows: &[RecordBatch]) -> Result<u64> {
        self.producer.context().reset();
        if !self.transactional {
            let sent = self.send_all(plan, rows)?;
            self.await_deliveries(sent)?;
            return Ok(sent);
        }
        self.producer.begin_transaction().map_err(|e| Error::kafka("beginning the output transaction", e))?;
        let result = self.send_and_commit(plan, rows);
        if result.is_err() {
            if let Err(e) = self.producer.abort_transaction(self.timeout) {
                tracing::warn!(cause = %e, batch_id = plan.batch_id, "aborting the output transaction failed");
            }
        }
        result
    }

    fn send_and_commit(&self, plan: &BatchPlan, rows: &[RecordBatch]) -> Result<u64> {
        let sent = self.send_all(plan, rows)?;
        if sent > 0 {
            crate::crash::point("kafka-mid-transaction");
        }
        self.await_deliveries(sent)?;
        let offsets = self.input_offsets(plan)?;
        self.producer
            .send_offsets_to_transaction(&offsets, &self.group, self.timeout)
            .map_err(|e| Error::kafka("adding input offsets to the output transaction", e))?;
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| Error::kafka("committing the output transaction", e))?;
        crate::crash::point("after-kafka-commit");
        Ok(sent)
    }

    fn send_all(&self, plan: &BatchPlan, rows: &[RecordBatch]) -> Result<u64> {
        rows.iter().try_fold(0, |sent, batch| Ok(sent + self.send_batch(plan, batch)?))
    }

    /// Encodes a batch as JSON lines and sends one message per line.
    fn send_batch(&self, plan: &BatchPlan, batch: &RecordBatch) -> Result<u64> {
        let json = encode_json_lines(batch)?;
        let keys = batch
            .column_by_name(KEY_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::Runtime(format!("the output has no text column {KEY_COLUMN} for the message key")))?;
        let batch_id = plan.batch_id.to_string();
        let lines = json.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let mut sent = 0u64;
        for (row, payload) in lines.enumerate() {
            let record = BaseRecord::to(&self.topic)
                .key(keys.value(row))
                .payload(payload)
                .headers(kafka_marker::headers(&self.query_id, &batch_id));
            crate::kafka::send_when_room(&self.producer, record)
                .map_err(|e| Error::kafka(format!("sending to '{}'", self.topic), e))?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Waits until every sent message has its delivery report (woken by the
    /// last one), then checks that all were delivered.
    fn await_deliveries(&self, sent: u64) -> Result<()> {
        let reports = self.producer.context().wait_for(sent, self.timeout);
        if reports.failed == 0 && reports.delivered == sent {
            return Ok(());
        }
        let (failed, delivered, topic) = (reports.failed, reports.delivered, &self.topic);
        match reports.first_error {
            Some(first) => Err(Error::kafka(
                format!("{failed} of {sent} output messages to '{topic}' failed ({delivered} delivered)"),
                first,
            )),
            None => Err(Error::KafkaTimeout(format!(
                "timed out after {:?} awaiting delivery of {} output messages to '{topic}'",
                self.timeout,
                sent - delivered
            ))),
        }
    }

    fn input_offsets(&self, plan: &BatchPlan) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for range in &plan.ranges {
            tpl.add_partition_offset(&plan.topic, range.partition, Offset::Offset(range.end))
                .map_err(|e| Error::kafka("building the input offsets", e))?;
        }
        Ok(tpl)
    }
}

/// One JSON object per row, `\n`-separated, fields in the schema's order
/// (JSON strings escape newlines, so `\n` only ever separates rows).
pub fn encode_json_lines(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut json = Vec::with_capacity(batch.num_rows() * 420);
    let mut writer = LineDelimitedWriter::new(&mut json);
    writer.write(batch).map_err(|e| Error::arrow("encoding output messages as JSON", e))?;
    writer.finish().map_err(|e| Error::arrow("encoding output messages as JSON", e))?;
    drop(writer);
    Ok(json)
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn is_committed(&mut self, plan: &BatchPlan) -> Result<bool> {
        if !self.transactional {
            return Ok(false);
        }
        let (config, topic, query_id, timeout) =
            (self.marker_reader.clone(), self.topic.clone(), self.query_id.clone(), self.timeout);
        let latest =
            blocking(move || kafka_marker::latest_committed_batch(&config, &topic, &query_id, timeout)).await?;
        tracing::info!(batch_id = plan.batch_id, latest_committed = ?latest, "kafka batch marker check");
        Ok(latest.is_some_and(|latest| latest >= plan.batch_id))
    }

    async fn write(&mut self, plan: &BatchPlan, rows: &[RecordBatch]) -> Result<u64> {
        let this = self.clone();
        let plan = plan.clone();
        let rows: Arc<[RecordBatch]> = rows.into();
        blocking(move || this.write_blocking(&plan, &rows)).await
    }
}
