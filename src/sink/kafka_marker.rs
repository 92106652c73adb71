//! How the Kafka sink learns, after a crash, whether a batch landed: one
//! marker record per batch in the marker topic (`--marker-topic`), written in
//! the batch's transaction.
//!
//! The marker is keyed by the query id and carries the headers
//! `sparklet.query` and `sparklet.batch` (the output and dead-letter messages
//! carry them too, for people). Batch N landed iff a `read_committed` reader
//! sees a marker of this query with batch >= N. Only sparklet queries write
//! the marker topic, so recovery reads the tail of its partitions, not the
//! output topic: its cost depends on how many queries share the marker topic
//! (with `cleanup.policy=compact`, about one record per query), never on the
//! size of the output. A batch with no output rows has a marker too.
//!
//! Another query's open transaction on the marker topic holds its last
//! stable offset (LSO) below the high watermark, which would hide a committed
//! marker above it; recovery therefore waits until the LSO reaches the high
//! watermark it saw first (other queries' transactions end within their
//! transaction timeout). Our own earlier transaction is already settled:
//! `init_transactions` completes or aborts it before recovery runs.
//!
//! The input offsets are also committed for the query's consumer group inside
//! the transaction, for lag tools; they are not used here, because not every
//! broker (librdkafka's mock cluster among them) stores transactional offset
//! commits.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::ClientConfig;

use crate::batch::OffsetRange;
use crate::error::{Error, Result};
use crate::kafka::log::LoggingContext;

pub(crate) const QUERY_HEADER: &str = "sparklet.query";
pub(crate) const BATCH_HEADER: &str = "sparklet.batch";

/// First window of offsets read back from the end of a partition.
const FIRST_WINDOW: i64 = 256;

/// The headers of every message of a batch (`batch_id` in decimal).
pub(crate) fn headers(query_id: &str, batch_id: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header { key: QUERY_HEADER, value: Some(query_id) })
        .insert(Header { key: BATCH_HEADER, value: Some(batch_id) })
}

/// The value of a batch's marker record, for people reading the topic.
pub(crate) fn marker_value(query_id: &str, batch_id: u64, rows: u64) -> String {
    serde_json::json!({ "queryId": query_id, "batchId": batch_id, "numOutputRows": rows }).to_string()
}

/// The newest batch of `query_id` whose marker is committed in `topic`.
pub(crate) fn latest_committed_batch(
    consumer_config: &ClientConfig,
    topic: &str,
    query_id: &str,
    timeout: Duration,
) -> Result<Option<u64>> {
    let committed = reader(consumer_config, "read_committed")?;
    let uncommitted = reader(consumer_config, "read_uncommitted")?;
    let partitions = crate::kafka::topic_partitions(&committed, topic, timeout)?;
    let mut latest = None;
    for partition in partitions {
        let (low, stable) = stable_end(&committed, &uncommitted, topic, partition, timeout)?;
        let found = latest_in_partition(&committed, topic, partition, (low, stable), query_id, timeout)?;
        latest = latest.max(found);
    }
    Ok(latest)
}

fn reader(config: &ClientConfig, isolation: &str) -> Result<BaseConsumer<LoggingContext>> {
    let mut config = config.clone();
    config.set("isolation.level", isolation).set("enable.auto.commit", "false");
    config
        .create_with_context(LoggingContext::new("marker reader"))
        .map_err(|e| Error::kafka("creating the marker reader", e))
}

/// (low watermark, last stable offset) once the LSO has reached the high
/// watermark seen first.
fn stable_end(
    committed: &BaseConsumer<LoggingContext>,
    uncommitted: &BaseConsumer<LoggingContext>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64)> {
    let err = |e| Error::kafka(format!("end offsets of marker topic {topic}[{partition}]"), e);
    let (_, high) = uncommitted.fetch_watermarks(topic, partition, timeout).map_err(err)?;
    let deadline = Instant::now() + timeout;
    loop {
        let (low, stable) = committed.fetch_watermarks(topic, partition, timeout).map_err(err)?;
        if stable >= high {
            return Ok((low, stable));
        }
        if Instant::now() > deadline {
            return Err(held_back(topic, partition, (stable, high), timeout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The error when the marker topic's last stable offset stays below the high
/// watermark: what holds it, what recovery cannot do meanwhile, what ends it.
fn held_back(topic: &str, partition: i32, (stable, high): (i64, i64), timeout: Duration) -> Error {
    Error::KafkaTimeout(format!(
        "recovery cannot read the batch markers of marker topic '{topic}' (--marker-topic) partition {partition}: \
         an open transaction, most likely of another producer writing to that topic, has held its last stable \
         offset at {stable} (high watermark {high}) for longer than --kafka-timeout {timeout:?}, and a \
         read_committed reader sees no marker past it. It ends when that producer commits or aborts, or after \
         its transaction.timeout.ms; find it with kafka-transactions.sh describe-producers --topic {topic} \
         --partition {partition} (a hanging one: find-hanging, then abort), or raise --kafka-timeout"
    ))
}

fn latest_in_partition(
    consumer: &BaseConsumer<LoggingContext>,
    topic: &str,
    partition: i32,
    (low, high): (i64, i64),
    query_id: &str,
    timeout: Duration,
) -> Result<Option<u64>> {
    let mut end = high;
    let mut window = FIRST_WINDOW;
    while end > low {
        let start = (end - window).max(low);
        let range = OffsetRange { partition, start, end };
        let mut newest = None;
        crate::kafka::read_ranges(consumer, topic, &[range], timeout, |m| {
            newest = newest.max(batch_of(m, query_id));
        })?;
        if newest.is_some() {
            return Ok(newest);
        }
        end = start;
        window *= 2;
    }
    Ok(None)
}

fn batch_of<M: Message>(message: &M, query_id: &str) -> Option<u64> {
    let headers = message.headers()?;
    let value = |key: &str| headers.iter().find(|h| h.key == key).and_then(|h| h.value);
    if value(QUERY_HEADER)? != query_id.as_bytes() {
        return None;
    }
    std::str::from_utf8(value(BATCH_HEADER)?).ok()?.parse().ok()
}
