//! The Kafka baseline of `bench_e2e`: the messages sparklet just wrote, made
//! again from the rows it wrote to Postgres (the same JSON, the same keys,
//! headers of the same size), produced by a bare transactional producer with
//! sparklet's producer settings into a fresh topic, in one transaction, every
//! delivery awaited. Sparklet's Kafka sink does that plus JSON encoding, its
//! marker and the owner checks, so the ratio of the two is its overhead.
//! (Reading the output topic back is no option: the mock broker keeps about
//! 5 MB per partition.)

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// (messages, time from begin to commit) of producing the output again.
pub(crate) async fn produce_output_again(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    url: &str,
) -> Result<(usize, Duration)> {
    let messages = output_messages(url).await?;
    let topic = "bench_raw_produce";
    cluster.create_topic(topic, crate::OUTPUT_PARTITIONS, 1)?;
    // sparklet's own producer settings (`sparklet::kafka::producer_config`),
    // under a transactional id of its own.
    let dir = tempfile::tempdir()?;
    let args =
        crate::run_args(&cluster.bootstrap_servers(), topic, url, "exactly-once", "once", dir.path(), dir.path());
    let kafka = crate::config(args)?.kafka;
    let query_id = uuid::Uuid::new_v4().to_string();
    let producer: ThreadedProducer<DefaultProducerContext> =
        sparklet::kafka::producer_config(&kafka, &query_id, true).create().context("raw producer")?;
    let timeout = Duration::from_secs(120);
    producer.init_transactions(timeout)?;
    let started = Instant::now();
    producer.begin_transaction()?;
    for (key, value) in &messages {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "sparklet.query", value: Some(query_id.as_str()) })
            .insert(Header { key: "sparklet.batch", value: Some("0") });
        let record = BaseRecord::to(topic).key(key.as_str()).payload(value.as_str()).headers(headers);
        sparklet::kafka::send_when_room(&producer, record)?;
    }
    producer.flush(timeout)?;
    producer.commit_transaction(timeout)?;
    Ok((messages.len(), started.elapsed()))
}

/// (client_id, JSON) of every row of the feedback table, fields in the
/// output message's order, compact as sparklet writes them.
async fn output_messages(url: &str) -> Result<Vec<(String, String)>> {
    let db = crate::connect(url).await?;
    let fields: Vec<String> = sparklet::schema::OUTPUT_FIELDS.iter().map(|(n, _)| format!("'{n}', {n}")).collect();
    let sql = format!("SELECT client_id, json_build_object({})::text FROM subscribers_feedback", fields.join(", "));
    let rows = db.query(sql.as_str(), &[]).await?;
    rows.iter()
        .map(|row| {
            let value: serde_json::Value = serde_json::from_str(row.get::<_, &str>(1))?;
            Ok((row.get::<_, String>(0), serde_json::to_string(&value)?))
        })
        .collect()
}
