//! Small Kafka client helpers for the demo, the examples and the benchmarks:
//! generate and produce campaigns (in kcat's `key:value` form), and read
//! the output topic as a `read_committed` consumer (the only correct way to
//! read it).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::batch::OffsetRange;
use crate::error::{Error, Result};
use crate::kafka::send_when_room;

pub use crate::kafka::client_config;

/// Splits a line in kcat's `-K:` form, `key:{json}`, into key and value; a
/// line that starts with `{` has no key.
pub fn parse_key_value(line: &str) -> (Option<&str>, &str) {
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
pub fn generated_campaign(i: usize, restaurants: usize, campaign_id: &str, now: i64) -> String {
    let end = if i % 10 == 9 { now - 1 } else { now + 3600 };
    format!(
        r#"{{"restaurant_id": "restaurant-{}","adv_campaign_id": "{campaign_id}","adv_campaign_content": "first campaign","adv_campaign_owner": "Ivanov Ivan Ivanovich","adv_campaign_owner_contact": "iiivanov@restaurant.ru","adv_campaign_datetime_start": {},"adv_campaign_datetime_end": {end},"datetime_created": 1659131516}}"#,
        i % restaurants,
        now - 60
    )
}

/// Produces `(key, value)` pairs to `topic` and waits until all are delivered.
pub fn produce(config: &ClientConfig, topic: &str, messages: &[(Option<String>, String)]) -> Result<usize> {
    let producer: ThreadedProducer<_> = config.create().map_err(|e| Error::kafka("creating a producer", e))?;
    for (key, value) in messages {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value.as_str());
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        send_when_room(&producer, record).map_err(|e| Error::kafka(format!("producing to '{topic}'"), e))?;
    }
    producer.flush(Duration::from_secs(30)).map_err(|e| Error::kafka(format!("flushing to '{topic}'"), e))?;
    Ok(messages.len())
}

/// Every committed message of `topic`, all partitions, from the beginning.
pub fn read_committed(config: &ClientConfig, topic: &str, timeout: Duration) -> Result<Vec<(Option<String>, String)>> {
    let mut config = config.clone();
    config
        .set("group.id", format!("sparklet-reader-{}", uuid::Uuid::new_v4()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().map_err(|e| Error::kafka("creating a consumer", e))?;
    let mut ranges = Vec::new();
    for partition in crate::kafka::topic_partitions(&consumer, topic, timeout)? {
        let (start, end) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| Error::kafka(format!("offsets of '{topic}'[{partition}]"), e))?;
        ranges.push(OffsetRange { partition, start, end });
    }
    let mut out = Vec::new();
    crate::kafka::read_ranges(&consumer, topic, &ranges, timeout, |m| {
        out.push((
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            m.payload().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
        ))
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
        assert_eq!(valid.as_object().unwrap().len(), crate::schema::CAMPAIGN_FIELDS.len());
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
