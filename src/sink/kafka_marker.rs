//! How the Kafka sink learns, after a crash, whether a batch landed.
//!
//! Every output message carries two headers, `sparklet.query` (the query id)
//! and `sparklet.batch` (the batch id); all messages of a batch commit in one
//! transaction. So batch N landed iff a `read_committed` reader sees a message
//! of this query with batch >= N. Recovery reads the tail of each output
//! partition backwards, in growing windows, until it finds the query's newest
//! message. (A batch with no output rows leaves no trace; redoing it writes an
//! empty transaction, which is harmless.)
//!
//! The input offsets are also committed for the query's consumer group inside
//! the transaction, for lag tools; they are not used here, because not every
//! broker (librdkafka's mock cluster among them) stores transactional offset
//! commits.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::ClientConfig;

use crate::batch::OffsetRange;
use crate::error::{Error, Result};
use crate::kafka_log::LoggingContext;

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

/// The newest batch id of `query_id` committed in `topic`, if any.
pub(crate) fn latest_committed_batch(
    consumer_config: &ClientConfig,
    topic: &str,
    query_id: &str,
    timeout: Duration,
) -> Result<Option<u64>> {
    let mut config = consumer_config.clone();
    config.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    let consumer: BaseConsumer<LoggingContext> = config
        .create_with_context(LoggingContext::new("marker reader"))
        .map_err(|e| Error::kafka("creating the marker reader", e))?;
    let partitions = crate::kafka::topic_partitions(&consumer, topic, timeout)?;
    let mut latest = None;
    for partition in partitions {
        let found = latest_in_partition(&consumer, topic, partition, query_id, timeout)?;
        latest = latest.max(found);
    }
    Ok(latest)
}

fn latest_in_partition(
    consumer: &BaseConsumer<LoggingContext>,
    topic: &str,
    partition: i32,
    query_id: &str,
    timeout: Duration,
) -> Result<Option<u64>> {
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| Error::kafka(format!("end offsets of output {topic}[{partition}]"), e))?;
    let mut end = high;
    let mut window = FIRST_WINDOW;
    while end > low {
        let start = (end - window).max(low);
        if let Some(batch) = scan(consumer, topic, partition, start, end, query_id, timeout)? {
            return Ok(Some(batch));
        }
        end = start;
        window *= 2;
    }
    Ok(None)
}

/// The newest batch of `query_id` among committed messages in `[start, end)`.
fn scan(
    consumer: &BaseConsumer<LoggingContext>,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    query_id: &str,
    timeout: Duration,
) -> Result<Option<u64>> {
    let mut newest = None;
    let range = OffsetRange { partition, start, end };
    crate::kafka::read_ranges(consumer, topic, &[range], timeout, |m| newest = newest.max(batch_of(m, query_id)))?;
    Ok(newest)
}

fn batch_of<M: Message>(message: &M, query_id: &str) -> Option<u64> {
    let headers = message.headers()?;
    let value = |key: &str| headers.iter().find(|h| h.key == key).and_then(|h| h.value);
    if value(QUERY_HEADER)? != query_id.as_bytes() {
        return None;
    }
    std::str::from_utf8(value(BATCH_HEADER)?).ok()?.parse().ok()
}
