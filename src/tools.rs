//! Small Kafka client helpers for the demo, the examples and the benchmarks:
//! generate and produce campaigns (in kcat's `key:value` form), and read
//! the output topic as a `read_committed` consumer (the only correct way to
//! read it).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// Client settings for `bootstrap` plus `--kafka-option` pairs (see
/// [`crate::config::parse_kafka_options`]).
pub fn client_config(bootstrap: &str, options: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

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
    let producer: BaseProducer = config.create().map_err(|e| Error::kafka("creating a producer", e))?;
    for (key, value) in messages {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value.as_str());
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) if is_queue_full(&e) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to '{topic}'"), e)),
            }
        }
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
    let ends = end_offsets(&consumer, topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for (p, _) in &ends {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).map_err(|e| Error::kafka("assigning", e))?;
    }
    consumer.assign(&tpl).map_err(|e| Error::kafka(format!("assigning '{topic}'"), e))?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
            )),
            Some(Err(e)) => return Err(Error::kafka(format!("reading '{topic}'"), e)),
            None if reached(&consumer, topic, &ends)? => return Ok(out),
            None => {}
        }
    }
    Err(Error::KafkaTimeout(format!("timed out after {timeout:?} reading '{topic}'")))
}

fn end_offsets(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Vec<(i32, i64)>> {
    let partitions = crate::kafka::topic_partitions(consumer, topic, timeout)?;
    partitions
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(|e| Error::kafka(format!("end offset of '{topic}'[{p}]"), e))?;
            Ok((p, high))
        })
        .collect()
}

fn reached(consumer: &BaseConsumer, topic: &str, ends: &[(i32, i64)]) -> Result<bool> {
    let positions = consumer.position().map_err(|e| Error::kafka("reading positions", e))?;
    Ok(ends.iter().all(|(p, end)| *end == 0 || crate::kafka::position_reached(&positions, topic, *p, *end)))
}

fn is_queue_full(e: &rdkafka::error::KafkaError) -> bool {
    matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull))
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
