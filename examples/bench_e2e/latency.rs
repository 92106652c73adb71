//! The latency scenario of `bench_e2e`: campaigns produced at a steady rate
//! (a burst every 100 ms) into a running query; a campaign's latency is the
//! time from its produce call until a reader of each sink first sees it: a
//! `read_committed` consumer of the output topic (fetching every 2 ms), and a
//! Postgres reader that polls the feedback table every 2 ms (so up to 2 ms of
//! each figure is the reader's). Kafka is the scenario's own mock cluster,
//! or the `--bootstrap-servers` broker with topics of its own
//! ([`crate::cluster`]), one per run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::tools;

/// When each campaign id was first seen.
pub(crate) type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Latencies of the campaigns that produce output, per sink.
pub(crate) struct Latencies {
    pub kafka: Vec<Duration>,
    pub postgres: Vec<Duration>,
    /// Campaigns that never showed up in a sink within the wait.
    pub missing: usize,
}

/// Prints the table: per-campaign latency, produce to visible in each sink,
/// at each of `rates`, with `--trigger 0s` and the `--trigger 100ms` baseline.
pub(crate) async fn report(url: &str, rates: &[usize], seconds: u64, restaurants: usize) -> Result<()> {
    println!("latency: rate/s | trigger | sink | campaigns | p50 ms | p99 ms | max ms | p99 ratio to trigger 100ms");
    for &rate in rates {
        let baseline = run(url, rate, seconds, "100ms", restaurants).await?;
        let fast = run(url, rate, seconds, "0s", restaurants).await?;
        for (sink, base, now) in
            [("kafka", &baseline.kafka, &fast.kafka), ("postgres", &baseline.postgres, &fast.postgres)]
        {
            let (_, base_p99, _) = percentiles(base);
            for (trigger, run) in [("100ms", base), ("0s", now)] {
                let (p50, p99, max) = percentiles(run);
                let ratio = if trigger == "0s" { format!("{:.2}", p99 / base_p99.max(0.001)) } else { "1".into() };
                println!(
                    "latency: {rate} | {trigger} | {sink} | {} | {p50:.1} | {p99:.1} | {max:.1} | {ratio}",
                    run.len()
                );
            }
        }
        if baseline.missing + fast.missing > 0 {
            eprintln!("latency at {rate}/s: {} campaigns never seen in a sink", baseline.missing + fast.missing);
        }
    }
    Ok(())
}

/// Feeds `rate` campaigns/s for `seconds` into a query with `trigger`.
pub(crate) async fn run(url: &str, rate: usize, seconds: u64, trigger: &str, restaurants: usize) -> Result<Latencies> {
    let (cluster, topic) = crate::new_cluster(rate * seconds as usize)?;
    let db = crate::connect(url).await?;
    db.batch_execute("TRUNCATE subscribers_feedback").await?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let args = crate::run_args(&cluster, &topic, url, "exactly-once", trigger, checkpoint.path(), &progress);
    let config = crate::config(args)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let query = tokio::spawn(sparklet::run(config, async move {
        let _ = stopped.await;
    }));
    let done = Arc::new(AtomicBool::new(false));
    let (kafka_seen, pg_seen) = (Seen::default(), Seen::default());
    let reader = read_kafka(cluster.bootstrap_servers(), cluster.output_topic(), kafka_seen.clone(), done.clone());
    let poller = tokio::spawn(poll_postgres(db, pg_seen.clone(), done.clone()));
    // The query has started and both readers are fetching before the first campaign.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let produced = produce_steadily(&cluster.bootstrap_servers(), &topic, rate, seconds, restaurants).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !(all_seen(&produced, &kafka_seen) && all_seen(&produced, &pg_seen)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    let _ = stop.send(());
    query.await??;
    let _ = reader.join();
    poller.await??;
    print_steps(&format!("latency steps: {rate}/s | {trigger}"), &crate::read_progress(&progress)?);
    Ok(latencies(&produced, &kafka_seen, &pg_seen))
}

/// The batches' time per step (p50 / p99 ms), to see where the time goes.
pub(crate) fn print_steps(label: &str, batches: &[serde_json::Value]) {
    let steps = ["triggerExecution", "latestOffset", "walCommit", "getBatch", "decode", "queryPlanningAndExecution"];
    let sinks = ["addBatch", "kafkaSink", "postgresSink", "commitOffsets"];
    let cells: Vec<String> = steps
        .iter()
        .chain(&sinks)
        .map(|step| {
            let mut v: Vec<Duration> =
                batches.iter().filter_map(|b| b["durationMs"][step].as_u64()).map(Duration::from_millis).collect();
            v.sort_unstable();
            let (p50, p99, _) = percentiles(&v);
            format!("{step} {p50:.0}/{p99:.0}")
        })
        .collect();
    println!("{label} | {} batches | p50/p99 ms: {}", batches.len(), cells.join(", "));
}

/// Produces `rate / 10` campaigns every 100 ms; returns when each campaign
/// that will produce output was sent.
async fn produce_steadily(
    bootstrap: &str,
    topic: &str,
    rate: usize,
    seconds: u64,
    restaurants: usize,
) -> Result<HashMap<String, Instant>> {
    let producer: ThreadedProducer<_> =
        tools::client_config(bootstrap, &[("linger.ms".into(), "0".into())]).create()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    // Connect the producer before the clock starts: its first send waits for
    // metadata and a connection (about 50 ms here), which would count as
    // sparklet's latency for the whole first burst (1.1% of the campaigns,
    // so it was the p99). The warm-up campaign has expired: no output.
    let warm_up = tools::generated_campaign(9, restaurants, "latency-warm-up", now);
    sparklet::kafka::send_when_room(&producer, BaseRecord::<str, str>::to(topic).payload(&warm_up))?;
    producer.flush(Duration::from_secs(30))?;
    let mut produced = HashMap::new();
    let per_burst = (rate / 10).max(1);
    let start = tokio::time::Instant::now();
    for burst in 0..seconds * 10 {
        tokio::time::sleep_until(start + Duration::from_millis(100 * burst)).await;
        for j in 0..per_burst {
            let i = burst as usize * per_burst + j;
            let id = format!("latency-{i}");
            let value = tools::generated_campaign(i, restaurants, &id, now);
            let sent = Instant::now();
            sparklet::kafka::send_when_room(&producer, BaseRecord::<str, str>::to(topic).payload(&value))?;
            // Every tenth generated campaign has expired: it has no output.
            if i % 10 != 9 {
                produced.insert(id, sent);
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(produced)
}

/// A `read_committed` consumer of the output topic, on its own thread.
fn read_kafka(bootstrap: String, output: String, seen: Seen, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut config = tools::client_config(&bootstrap, &[]);
        // The mock cluster holds an empty fetch for fetch.wait.max.ms (a real
        // broker answers when data arrives): keep it short so the reader's
        // wait does not count as sparklet's latency; the same on a real
        // broker, so both modes measure with the same reader. Assigned
        // partitions, no offsets committed: the group is a name only.
        config
            .set("group.id", "latency-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "2");
        let Ok(consumer) = config.create::<BaseConsumer>() else { return };
        let mut tpl = TopicPartitionList::new();
        for p in 0..crate::OUTPUT_PARTITIONS {
            let _ = tpl.add_partition_offset(&output, p, Offset::Beginning);
        }
        if consumer.assign(&tpl).is_err() {
            return;
        }
        while !done.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(5)) {
                if let Some(id) = m.payload().and_then(campaign_id) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert_with(Instant::now);
                }
            }
        }
    })
}

fn campaign_id(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(value["adv_campaign_id"].as_str()?.to_string())
}

/// Polls the feedback table every 2 ms for rows after the last seen id.
pub(crate) async fn poll_postgres(db: tokio_postgres::Client, seen: Seen, done: Arc<AtomicBool>) -> Result<()> {
    let mut last = 0i32;
    while !done.load(Ordering::Relaxed) {
        let rows = db
            .query("SELECT id, adv_campaign_id FROM subscribers_feedback WHERE id > $1 ORDER BY id", &[&last])
            .await?;
        let now = Instant::now();
        {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for row in rows {
                last = row.get(0);
                seen.entry(row.get(1)).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn all_seen(produced: &HashMap<String, Instant>, seen: &Seen) -> bool {
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    produced.keys().all(|id| seen.contains_key(id))
}

fn latencies(produced: &HashMap<String, Instant>, kafka: &Seen, postgres: &Seen) -> Latencies {
    let (kafka, postgres) =
        (kafka.lock().unwrap_or_else(|e| e.into_inner()), postgres.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out = Latencies { kafka: Vec::new(), postgres: Vec::new(), missing: 0 };
    for (id, sent) in produced {
        match (kafka.get(id), postgres.get(id)) {
            (Some(k), Some(p)) => {
                out.kafka.push(k.saturating_duration_since(*sent));
                out.postgres.push(p.saturating_duration_since(*sent));
            }
            _ => out.missing += 1,
        }
    }
    out.kafka.sort();
    out.postgres.sort();
    out
}

/// (p50, p99, max) in milliseconds.
pub(crate) fn percentiles(sorted: &[Duration]) -> (f64, f64, f64) {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.50), at(0.99), at(1.0))
}
