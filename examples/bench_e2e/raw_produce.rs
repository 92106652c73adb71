//! The Kafka baseline of `bench_e2e`: the messages sparklet just wrote, made
//! again from the rows it wrote to Postgres (the same JSON, the same keys,
//! headers of the same size), produced by a bare transactional producer with
//! sparklet's producer settings into a fresh topic, in one transaction, every
//! delivery awaited. Sparklet's Kafka sink does that plus JSON encoding, its
//! marker and the owner checks, so the ratio of the two is its overhead.
//! (Reading the output topic back is no option: the mock broker keeps about
//! 5 MB per partition.) The fresh topic is created in the scenario's
//! [`Cluster`], the mock or the real broker, with a name of its own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::cluster::Cluster;

/// (messages, time from begin to commit) of producing the output again.
pub(crate) async fn produce_output_again(cluster: &Cluster, url: &str) -> Result<(usize, Duration)> {
    let raw = RawProduce::prepare(cluster, url, "bench_raw_produce").await?;
    tokio::task::spawn_blocking(move || raw.run()).await?
}

/// Milliseconds of a raw COPY and a raw produce of the batch's output run
/// concurrently, as sparklet's two sinks run: what the machine does for both
/// sinks without sparklet.
pub(crate) async fn both_at_once(cluster: &Cluster, url: &str) -> Result<f64> {
    let copy = crate::raw_copy::RawCopy::prepare(url).await?;
    let produce = RawProduce::prepare(cluster, url, "bench_raw_both").await?;
    let started = Instant::now();
    let (copied, produced) = tokio::join!(copy.run(), tokio::task::spawn_blocking(move || produce.run()));
    let elapsed = started.elapsed();
    copied?;
    produced??;
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// A raw produce made ready: the messages rebuilt, the producer initialised.
pub(crate) struct RawProduce {
    producer: ThreadedProducer<DefaultProducerContext>,
    messages: Vec<(String, String)>,
    topic: String,
    query_id: String,
}

impl RawProduce {
    /// `base`: the fresh topic's name, before the cluster's suffix.
    pub(crate) async fn prepare(cluster: &Cluster, url: &str, base: &str) -> Result<Self> {
        let messages = output_messages(url).await?;
        let topic = cluster.name(base);
        cluster.create_topic(&topic, crate::OUTPUT_PARTITIONS, &[])?;
        // sparklet's own producer settings (`sparklet::kafka::producer_config`),
        // under a transactional id of its own.
        let dir = tempfile::tempdir()?;
        let args = crate::run_args(cluster, &topic, url, "exactly-once", "once", dir.path(), dir.path());
        let kafka = crate::config(args)?.kafka;
        let query_id = uuid::Uuid::new_v4().to_string();
        let producer: ThreadedProducer<DefaultProducerContext> =
            sparklet::kafka::producer_config(&kafka, &query_id, true).create().context("raw producer")?;
        producer.init_transactions(TIMEOUT)?;
        Ok(RawProduce { producer, messages, topic, query_id })
    }

    /// The timed part (blocking): begin, send every message, flush, commit.
    pub(crate) fn run(self) -> Result<(usize, Duration)> {
        let started = Instant::now();
        self.producer.begin_transaction()?;
        for (key, value) in &self.messages {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "sparklet.query", value: Some(self.query_id.as_str()) })
                .insert(Header { key: "sparklet.batch", value: Some("0") });
            let record = BaseRecord::to(&self.topic).key(key.as_str()).payload(value.as_str()).headers(headers);
            sparklet::kafka::send_when_room(&self.producer, record)?;
        }
        self.producer.flush(TIMEOUT)?;
        self.producer.commit_transaction(TIMEOUT)?;
        Ok((self.messages.len(), started.elapsed()))
    }
}

const TIMEOUT: Duration = Duration::from_secs(120);

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
