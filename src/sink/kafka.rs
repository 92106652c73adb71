//! The Kafka sink: one JSON message per output row (the last SQL step's
//! columns, in its order), keyed by the job's key column (`job.toml`'s
//! `[sink.kafka] key`; the seed's `client_id`), written in one Kafka
//! transaction per batch.
//!
//! The batch's dead letters (input messages that failed validation) go to
//! the dead-letter topic in the same transaction, byte for byte with their
//! original key (cut only where they would not fit the producer's
//! `message.max.bytes`: see `dead_letter.rs`), so a replay never
//! duplicates them either.
//!
//! Before it sends a batch and again before it commits, the sink checks the
//! query's owner epoch in Postgres ([`super::owner`]): a zombie stops there
//! even on a broker that would not fence it.
//!
//! Each transaction also writes the batch's marker record to the marker
//! topic, which recovery reads back ([`super::kafka_marker`]); every message
//! carries the query and batch ids as headers too. The
//! transaction also commits the batch's input end offsets for the query's
//! consumer group (`sendOffsetsToTransaction`), so lag tools see sparklet's
//! progress. The producer's
//! `transactional.id` is stable per query, so `init_transactions` at start
//! fences a zombie and aborts (or completes) a transaction a crash left open.
//! Consumers of the output topic must use `isolation.level=read_committed`.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::json::LineDelimitedWriter;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::batch::BatchPlan;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::schema::text::Text;
use crate::sink::dead_letter::{DeadLetter, Origin};
use crate::sink::deliveries::Deliveries;
use crate::sink::owner::Ownership;
use crate::sink::{kafka_marker, Chunks, Sink};
use crate::source::decode::BadMessage;
use crate::util::blocking;

/// Writes batches to the output topic, exactly once per batch. Cloning shares
/// the producer.
#[derive(Clone)]
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    /// The input consumer's group, whose offsets each transaction commits.
    group: Arc<ConsumerGroupMetadata>,
    topic: String,
    /// Where each batch's marker record goes.
    marker_topic: String,
    /// Where dead letters go (`--on-bad-record dead-letter`).
    dead_letter_topic: Option<String>,
    /// The producer's `message.max.bytes`, which each dead letter must fit.
    message_max_bytes: usize,
    /// The output column whose value keys each message (none: no key).
    key: Option<Arc<str>>,
    timeout: Duration,
    /// Exactly-once: one transaction per batch, with the input offsets.
    transactional: bool,
    query_id: String,
    /// Settings of the reader that looks for batch markers on recovery.
    marker_reader: rdkafka::ClientConfig,
    /// Checked before sending a batch and before committing it.
    ownership: Ownership,
}

impl KafkaSink {
    /// Creates the transactional producer and initialises transactions.
    pub(crate) async fn try_new(
        kafka: &KafkaConfig,
        query_id: &str,
        group: ConsumerGroupMetadata,
        transactional: bool,
        dead_letter_topic: Option<String>,
        ownership: Ownership,
    ) -> Result<Self> {
        let producer: ThreadedProducer<Deliveries> = crate::kafka::producer_config(kafka, query_id, transactional)
            .create_with_context(Deliveries::default())
            .map_err(|e| Error::kafka("creating the output producer", e))?;
        let timeout = kafka.timeout;
        let message_max_bytes = crate::config::BadRecords::message_max_bytes(&kafka.options)?;
        let sink = KafkaSink {
            producer,
            group: Arc::new(group),
            topic: kafka.output_topic.clone(),
            marker_topic: kafka.marker_topic.clone(),
            dead_letter_topic,
            message_max_bytes,
            key: None,
            timeout,
            transactional,
            query_id: query_id.to_string(),
            marker_reader: crate::kafka::consumer_config(kafka, query_id),
            ownership,
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

    /// The same sink, keying each message by column `key`'s value.
    pub(crate) fn keyed_by(mut self, key: Option<&str>) -> Self {
        self.key = key.map(Arc::from);
        self
    }

    /// Sends, awaits and commits; blocking, run off the async runtime.
    fn write_blocking(&self, plan: &BatchPlan, rows: Chunks, dead: &[BadMessage]) -> Result<u64> {
        self.ownership.verify_blocking()?;
        self.producer.context().reset();
        if !self.transactional {
            let sent = self.send_all(plan, rows, dead)?;
            self.await_deliveries(sent.0 + sent.1)?;
            return Ok(sent.0);
        }
        self.producer.begin_transaction().map_err(|e| Error::kafka("beginning the output transaction", e))?;
        let result = self.send_and_commit(plan, rows, dead);
        if let Err(cause) = &result {
            match self.producer.abort_transaction(self.timeout) {
                Ok(()) => crate::ops::events::TransactionAborted { batch_id: plan.batch_id, cause }.emit(),
                Err(e) => {
                    tracing::warn!(cause = %e, batch_id = plan.batch_id, "aborting the output transaction failed")
                }
            }
        }
        result
    }

    fn send_and_commit(&self, plan: &BatchPlan, rows: Chunks, dead: &[BadMessage]) -> Result<u64> {
        let (sent, dead) = self.send_all(plan, rows, dead)?;
        if sent > 0 {
            crate::crash::point("kafka-mid-transaction");
        }
        self.send_marker(plan, sent)?;
        self.await_deliveries(sent + dead + 1)?;
        let offsets = crate::kafka::end_offsets(plan)?;
        self.producer
            .send_offsets_to_transaction(&offsets, &self.group, self.timeout)
            .map_err(|e| Error::kafka("adding input offsets to the output transaction", e))?;
        self.ownership.verify_blocking()?;
        crate::crash::point("kafka-before-commit");
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| Error::kafka("committing the output transaction", e))?;
        crate::crash::point("after-kafka-commit");
        Ok(sent)
    }

    /// The batch's marker record ([`kafka_marker`]), keyed by the query id.
    fn send_marker(&self, plan: &BatchPlan, rows: u64) -> Result<()> {
        let value = kafka_marker::marker_value(&self.query_id, plan.batch_id, rows);
        let record = BaseRecord::to(&self.marker_topic)
            .key(&self.query_id)
            .payload(&value)
            .headers(kafka_marker::headers(&self.query_id, &plan.batch_id.to_string()));
        crate::kafka::send_when_room(&self.producer, record)
            .map_err(|e| Error::kafka(format!("sending the batch marker to '{}'", self.marker_topic), e))
    }

    /// Sends the dead letters, then the rows as they arrive; returns (rows,
    /// dead letters).
    fn send_all(&self, plan: &BatchPlan, mut rows: Chunks, dead: &[BadMessage]) -> Result<(u64, u64)> {
        let dead = self.send_dead_letters(plan, dead)?;
        let mut sent = 0;
        while let Some(batch) = rows.next_blocking()? {
            sent += self.send_batch(plan, &batch)?;
        }
        Ok((sent, dead))
    }

    /// Each refused input message, unchanged unless it must be cut to fit
    /// (`DeadLetter`), with headers saying where it came from and why it
    /// was refused.
    fn send_dead_letters(&self, plan: &BatchPlan, bad: &[BadMessage]) -> Result<u64> {
        let Some(topic) = self.dead_letter_topic.as_deref().filter(|_| !bad.is_empty()) else {
            return Ok(0);
        };
        let batch_id = plan.batch_id.to_string();
        let origin = Origin { query_id: &self.query_id, batch_id: &batch_id, topic: &plan.topic };
        for message in bad {
            let letter = DeadLetter::new(message, &origin, self.message_max_bytes);
            if letter.is_cut() {
                tracing::warn!(
                    batch_id = plan.batch_id,
                    partition = message.partition,
                    offset = message.offset,
                    key_bytes = message.key.as_ref().map_or(0, Vec::len),
                    value_bytes = message.value.as_ref().map_or(0, Vec::len),
                    kept_key_bytes = letter.key.map_or(0, <[u8]>::len),
                    kept_value_bytes = letter.value.map_or(0, <[u8]>::len),
                    message_max_bytes = self.message_max_bytes,
                    "dead letter cut to fit the producer's message.max.bytes"
                );
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).headers(letter.record_headers());
            record.key = letter.key;
            record.payload = letter.value;
            crate::kafka::send_when_room(&self.producer, record)
                .map_err(|e| Error::kafka(format!("sending a dead letter to '{topic}'"), e))?;
        }
        Ok(bad.len() as u64)
    }

    /// Encodes a batch as JSON lines, [`JSON_ROWS`] rows at a time, and
    /// sends one message per line (librdkafka copies each).
    fn send_batch(&self, plan: &BatchPlan, batch: &RecordBatch) -> Result<u64> {
        let keys = self.key.as_deref().map(|key| key_column(batch, key)).transpose()?;
        let keys = keys
            .as_ref()
            .map(|k| Text::of(k.as_ref()))
            .map(|k| k.ok_or_else(|| Error::Runtime("the key column is not text after casting".into())));
        let keys = keys.transpose()?;
        let batch_id = plan.batch_id.to_string();
        let mut sent = 0u64;
        for start in (0..batch.num_rows()).step_by(JSON_ROWS) {
            let json = encode_json_lines(&batch.slice(start, JSON_ROWS.min(batch.num_rows() - start)))?;
            let lines = json.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            for (row, payload) in lines.enumerate() {
                let key = keys.as_ref().filter(|k| !k.is_null(start + row)).map(|k| k.value(start + row));
                let mut record = BaseRecord::<str, [u8]>::to(&self.topic)
                    .payload(payload)
                    .headers(kafka_marker::headers(&self.query_id, &batch_id));
                record.key = key;
                crate::kafka::send_when_room(&self.producer, record)
                    .map_err(|e| Error::kafka(format!("sending to '{}'", self.topic), e))?;
                sent += 1;
            }
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
}

/// Rows encoded at a time: a chunk's JSON is about 400 bytes a row, 3 MB
/// for a whole 8,192-row chunk.
const JSON_ROWS: usize = 1024;

/// One JSON object per row, `\n`-separated, fields in the schema's order
/// Column `key` of `batch` as text ([`Text`]): text as it is (plain or
/// shared), anything else (an integer) cast to its decimal digits.
fn key_column(batch: &RecordBatch, key: &str) -> Result<arrow::array::ArrayRef> {
    let column = batch
        .column_by_name(key)
        .ok_or_else(|| Error::Runtime(format!("the output has no column {key} for the message key")))?;
    match Text::is_text(column.data_type()) {
        true => Ok(column.clone()),
        false => arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| Error::arrow(format!("the message key {key} as text"), e)),
    }
}

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

    async fn latest_committed(&mut self) -> Result<Option<u64>> {
        if !self.transactional {
            return Ok(None);
        }
        let (config, topic, query_id, timeout) =
            (self.marker_reader.clone(), self.marker_topic.clone(), self.query_id.clone(), self.timeout);
        blocking(move || kafka_marker::latest_committed_batch(&config, &topic, &query_id, timeout)).await
    }

    async fn is_committed(&mut self, plan: &BatchPlan) -> Result<bool> {
        let latest = self.latest_committed().await?;
        tracing::info!(batch_id = plan.batch_id, latest_committed = ?latest, "kafka batch marker check");
        Ok(latest.is_some_and(|latest| latest >= plan.batch_id))
    }

    async fn write(&mut self, plan: &BatchPlan, rows: Chunks, dead_letters: &Arc<[BadMessage]>) -> Result<u64> {
        let this = self.clone();
        let plan = plan.clone();
        let dead = dead_letters.clone();
        let query_id = self.query_id.clone();
        blocking(move || this.write_blocking(&plan, rows, &dead)).await.map_err(|e| match e.is_kafka_fenced() {
            true => {
                tracing::error!(cause = %e.chain(), "the output producer was fenced");
                crate::ops::events::ProducerFenced { query_id: &query_id }.emit();
                Error::Fenced { sink: "kafka", query_id }
            }
            false => e,
        })
    }
}
