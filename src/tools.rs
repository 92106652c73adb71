//! Kafka client helpers for the demo, the examples, the benchmarks and the
//! tests: generate and produce campaigns (in kcat's `key:value` form), and
//! read the output topic as a `read_committed` consumer (the only correct way
//! to read it). Not part of the library: the `sparklet` binary, the examples,
//! the benches and the tests each compile this file as their own module.

#![allow(dead_code, unused_imports)]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use anyhow::{Context, Result};
use sparklet::batch::OffsetRange;
use sparklet::kafka::send_when_room;

pub(crate) use sparklet::kafka::client_config;

/// The example input line of the message format (README, "The job"), in
/// kcat's `key:value` form.
pub(crate) const EXAMPLE_LINE: &str = r#"first_message:{"restaurant_id": "123e4567-e89b-12d3-a456-426614174000","adv_campaign_id": "123e4567-e89b-12d3-a456-426614174003","adv_campaign_content": "first campaign","adv_campaign_owner": "Ivanov Ivan Ivanovich","adv_campaign_owner_contact": "iiivanov@restaurant.ru","adv_campaign_datetime_start": 1659203516,"adv_campaign_datetime_end": 2659207116,"datetime_created": 1659131516}"#;

/// Splits a line in kcat's `-K:` form, `key:{json}`, into key and value; a
/// line that starts with `{` has no key.
pub(crate) fn parse_key_value(line: &str) -> (Option<&str>, &str) {
    let line = line.trim();
    if line.starts_with('{') {
        return (None, line);
    }
    match line.split_once(':') {
        Some((key, value)) => (Some(key), value.trim()),
        None => (None, line),
    }
}

/// A generated campaign in the input format, for `restaurant-{i % restaurants}`:
/// valid around `now`, except every tenth, which has expired.
pub(crate) fn generated_campaign(i: usize, restaurants: usize, campaign_id: &str, now: i64) -> String {
    let end = if i % 10 == 9 { now - 1 } else { now + 3600 };
    format!(
        r#"{{"restaurant_id": "restaurant-{}","adv_campaign_id": "{campaign_id}","adv_campaign_content": "first campaign","adv_campaign_owner": "Ivanov Ivan Ivanovich","adv_campaign_owner_contact": "iiivanov@restaurant.ru","adv_campaign_datetime_start": {},"adv_campaign_datetime_end": {end},"datetime_created": 1659131516}}"#,
        i % restaurants,
        now - 60
    )
}

/// Produces `(key, value)` pairs to `topic` and waits until all are delivered.
pub(crate) fn produce(config: &ClientConfig, topic: &str, messages: &[(Option<String>, String)]) -> Result<usize> {
    let producer: ThreadedProducer<_> = config.create().context("creating a producer")?;
    for (key, value) in messages {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value.as_str());
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        send_when_room(&producer, record).with_context(|| format!("producing to '{topic}'"))?;
    }
    producer.flush(Duration::from_secs(30)).with_context(|| format!("flushing to '{topic}'"))?;
    Ok(messages.len())
}

/// Every committed message of `topic`, all partitions, from the beginning.
pub(crate) fn read_committed(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(Option<String>, String)>> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let records = read_committed_records(config, topic, timeout)?;
    Ok(records
        .into_iter()
        .map(|r| (r.key.as_deref().map(text), r.value.as_deref().map(text).unwrap_or_default()))
        .collect())
}

/// A message as read back, byte for byte.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The value of header `name`, as text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        let (_, value) = self.headers.iter().find(|(k, _)| k == name)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }
}

/// [`read_committed`] with keys, values and headers as bytes.
pub(crate) fn read_committed_records(config: &ClientConfig, topic: &str, timeout: Duration) -> Result<Vec<Record>> {
    use rdkafka::message::Headers;
    let mut config = config.clone();
    config
        .set("group.id", format!("sparklet-reader-{}", uuid::Uuid::new_v4()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().context("creating a consumer")?;
    let mut ranges = Vec::new();
    for partition in sparklet::kafka::topic_partitions(&consumer, topic, timeout)? {
        let (start, end) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("offsets of '{topic}'[{partition}]"))?;
        ranges.push(OffsetRange { partition, start, end });
    }
    let mut out = Vec::new();
    sparklet::kafka::read_ranges(&consumer, topic, &ranges, timeout, |m| {
        let headers = m.headers().map_or_else(Vec::new, |h| {
            h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()
        });
        out.push(Record {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        })
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_campaigns_have_the_input_format_and_every_tenth_has_expired() {
        let valid: serde_json::Value = serde_json::from_str(&generated_campaign(12, 10, "c12", 1000)).unwrap();
        assert_eq!(
            (valid["restaurant_id"].as_str(), valid["adv_campaign_id"].as_str()),
            (Some("restaurant-2"), Some("c12"))
        );
        assert_eq!(valid.as_object().unwrap().len(), sparklet::schema::CAMPAIGN_FIELDS.len());
        assert!(valid["adv_campaign_datetime_end"].as_i64() > Some(1000));
        let expired: serde_json::Value = serde_json::from_str(&generated_campaign(9, 10, "c9", 1000)).unwrap();
        assert!(expired["adv_campaign_datetime_end"].as_i64() < Some(1000));
    }

    #[test]
    fn parses_kcat_key_value_lines() {
        assert_eq!(parse_key_value(r#"first_message:{"a": 1}"#), (Some("first_message"), r#"{"a": 1}"#));
        assert_eq!(parse_key_value(r#"key:{"a": "x:y"}"#), (Some("key"), r#"{"a": "x:y"}"#));
        assert_eq!(parse_key_value(r#"{"a": "x:y"}"#), (None, r#"{"a": "x:y"}"#));
    }
}
