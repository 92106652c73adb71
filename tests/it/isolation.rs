//! What a reader of a given isolation level sees in a topic on the real
//! broker: `read_committed` (what output consumers must use) against
//! `read_uncommitted` (which also sees aborted transactions' records), and a
//! partition's last stable offset against its high watermark.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use sparklet::batch::OffsetRange;

use crate::support::unique;

/// One record as a reader saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub offset: i64,
    /// (adv_campaign_id, client_id) of an output record; empty otherwise.
    pub pair: (String, String),
    /// The `sparklet.batch` header, if any.
    pub batch: Option<String>,
    /// The `sparklet.query` header, if any.
    pub query: Option<String>,
}

/// Everything a reader with `isolation` (`read_committed` or
/// `read_uncommitted`) sees in `topic` now: all partitions, from the low
/// watermark to the end that isolation level reads to (the last stable
/// offset for `read_committed`, the high watermark otherwise).
pub fn read_as(bootstrap: &str, topic: &str, isolation: &str) -> Result<Vec<Seen>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("transactions-reader"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a reader")?;
    let timeout = Duration::from_secs(20);
    let mut ranges = Vec::new();
    for partition in sparklet::kafka::topic_partitions(&consumer, topic, timeout)? {
        let (start, end) = consumer.fetch_watermarks(topic, partition, timeout)?;
        ranges.push(OffsetRange { partition, start, end });
    }
    let mut seen = Vec::new();
    sparklet::kafka::read_ranges(&consumer, topic, &ranges, timeout, |m| {
        let header = |name: &str| {
            let headers = m.headers()?;
            let h = headers.iter().find(|h| h.key == name)?;
            Some(String::from_utf8_lossy(h.value?).into_owned())
        };
        let value: serde_json::Value = m.payload().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or_default();
        let text = |k: &str| value[k].as_str().unwrap_or("").to_string();
        seen.push(Seen {
            offset: m.offset(),
            pair: (text("adv_campaign_id"), text("client_id")),
            batch: header("sparklet.batch"),
            query: header("sparklet.query"),
        });
    })?;
    Ok(seen)
}

/// (last stable offset, high watermark) of `topic[0]`.
pub fn stable_and_high(bootstrap: &str, topic: &str) -> Result<(i64, i64)> {
    let client = |isolation: &str| -> Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("transactions-offsets"))
            .set("isolation.level", isolation)
            .create()?)
    };
    let timeout = Duration::from_secs(20);
    let (_, stable) = client("read_committed")?.fetch_watermarks(topic, 0, timeout)?;
    let (_, high) = client("read_uncommitted")?.fetch_watermarks(topic, 0, timeout)?;
    Ok((stable, high))
}
