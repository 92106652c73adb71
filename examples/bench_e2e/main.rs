//! End-to-end benchmark: the real pipeline (Kafka over TCP, the local
//! Postgres, the repo's SQL) on generated data, the shape used to compare
//! with Spark Structured Streaming on the same job: 1,000 restaurants x 10
//! subscribers, 10% of the campaigns expired. Prints batch time, rows/s and
//! peak memory per scenario.
//!
//! Kafka is, by default, librdkafka's mock cluster in this process (a new one
//! per scenario); with `--bootstrap-servers` every scenario runs against that
//! broker instead, creating its own topics (input, output, dead-letter and a
//! compacted marker topic, each with a suffix of its own) and deleting them
//! when it ends ([`cluster`]). The broker must allow transactions
//! (`transaction.state.log.replication.factor` and `min.isr` within its
//! size); it need not create topics on use. Postgres is `--database-url` in
//! both cases (schema `sparklet_bench`, recreated).
//!
//! ```text
//! # mock Kafka in this process
//! cargo run --release --example bench_e2e -- --messages 100000
//!
//! # a real broker: Apache Kafka's own, from this repo (or any reachable one)
//! bash tests/kafka/broker start /tmp/bench-kafka     # prints SPARKLET_TEST_KAFKA=127.0.0.1:PORT
//! cargo run --release --example bench_e2e -- --bootstrap-servers 127.0.0.1:PORT --messages 100000
//! bash tests/kafka/broker stop /tmp/bench-kafka
//! ```
//!
//! The memory scenario runs the `sparklet` binary of the same build: add
//! `--bin sparklet` to the build.
//!
//! Scenarios: one large batch with exactly-once, the same with at-least-once
//! (the cost of exactly-once), a run of tiny batches (latency floor),
//! per-campaign latency at steady input rates ([`latency`]), with
//! `--trigger 0s` against `--trigger 100ms` as the baseline in the same run,
//! the time to a first batch with 10k and 1M subscribers against a raw
//! COPY of the table ([`startup`]), peak memory of the binary ([`memory`]),
//! small batches' time as the table grows to 10M rows ([`flat`]), and
//! consecutive batches of 1k to 100k campaigns against raw COPY in
//! transactions of the same size ([`steady`]), and how fresh the
//! subscribers are with `--subscribers-refresh on-change` against a 1 s
//! timer, with the cost of one reload at 10k to 10M rows ([`freshness`]),
//! and how soon a query commits again after a Postgres outage ([`outage`]).

mod cluster;
mod flat;
mod freshness;
mod latency;
mod memory;
mod outage;
#[path = "../../tests/it/proxy.rs"]
mod proxy;
mod raw_copy;
mod raw_produce;
mod shards;
mod startup;
mod steady;
#[path = "../../src/tools.rs"]
mod tools;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;

use cluster::{new_cluster, produce, Cluster, OUTPUT_PARTITIONS};

/// End-to-end throughput and latency of sparklet on this machine.
#[derive(Parser)]
struct Args {
    /// A real Kafka broker, HOST:PORT[,...], to run every scenario against
    /// (its topics are created and deleted by the benchmark); without it, a
    /// mock cluster in this process.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Campaign messages in the large batch.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Restaurants (each campaign belongs to one).
    #[arg(long, default_value_t = 1_000)]
    restaurants: usize,
    /// Subscribers per restaurant (the fan-out).
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Tiny batches to time (10 messages each).
    #[arg(long, default_value_t = 30)]
    tiny_batches: usize,
    /// Postgres to write to (schema sparklet_bench is recreated).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Scenarios to run: throughput, steady, tiny, latency, startup, memory,
    /// flat, freshness, shards, outage (comma-separated; startup, memory, flat and freshness
    /// each fill the subscribers table with their own sizes, so they run
    /// last; freshness is not in the default list: its 10M-row table takes
    /// minutes to fill; nor is shards, which repeats a backlog six times,
    /// nor outage, which waits out its outages).
    #[arg(long, value_delimiter = ',', default_value = "throughput,steady,tiny,latency,startup,memory,flat")]
    scenarios: Vec<String>,
    /// Batch sizes (campaigns) of the steady scenario; each runs
    /// 300,000 / size consecutive batches, at least 3 and at most 30.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    steady_campaigns: Vec<usize>,
    /// Cached subscribers of the flat scenario (100-campaign batches).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000,10000000")]
    flat_subscribers: Vec<usize>,
    /// Batch sizes (campaigns) of the memory scenario.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    memory_campaigns: Vec<usize>,
    /// Cached subscribers of the startup scenario.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    startup_subscribers: Vec<usize>,
    /// Cached subscribers of the freshness scenario's delay runs.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    freshness_subscribers: Vec<usize>,
    /// Table sizes of the freshness scenario's reload costs.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000,10000000")]
    reload_subscribers: Vec<usize>,
    /// Input rates (campaigns/s) of the latency scenario.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    latency_rates: Vec<usize>,
    /// Backlog (campaigns) of the shards scenario's runs.
    #[arg(long, default_value_t = 100_000)]
    shard_campaigns: usize,
    /// Postgres outages (seconds) of the outage scenario.
    #[arg(long, value_delimiter = ',', default_value = "20,60")]
    outage_seconds: Vec<u64>,
    /// How long each latency run produces.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    match &args.bootstrap_servers {
        Some(bootstrap) => {
            cluster::use_broker(bootstrap.clone());
            eprintln!("Kafka: the broker at {bootstrap}");
        }
        None => eprintln!("Kafka: a mock cluster in this process per scenario"),
    }
    let url = prepare_postgres(&args).await?;
    let wants = |s: &str| args.scenarios.iter().any(|w| w == s);
    println!("scenario | batches | input msgs | output rows | batch ms (median) | output rows/s | peak RSS MiB");
    for guarantee in ["exactly-once", "at-least-once"].into_iter().filter(|_| wants("throughput")) {
        throughput(&args, &url, guarantee).await?;
    }
    if wants("steady") {
        steady::report(&url, &args.steady_campaigns, args.restaurants).await?;
    }
    if wants("tiny") {
        let tiny = tiny_batches(&args, &url).await?;
        report("tiny: 10 msgs per batch, exactly-once, trigger 0s", &tiny);
    }
    if wants("latency") {
        latency::report(&url, &args.latency_rates, args.latency_seconds, args.restaurants).await?;
    }
    if wants("startup") {
        startup::report(&url, &args.startup_subscribers).await?;
    }
    if wants("memory") {
        memory::report(&url, &args.startup_subscribers, &args.memory_campaigns).await?;
    }
    if wants("flat") {
        flat::report(&url, &args.flat_subscribers).await?;
    }
    if wants("freshness") {
        freshness::report(&url, &args.freshness_subscribers, &args.reload_subscribers).await?;
    }
    if wants("outage") {
        outage::report(&url, &args.outage_seconds, args.restaurants).await?;
    }
    if wants("shards") {
        shards::report(&url, args.shard_campaigns, args.restaurants).await?;
    }
    Ok(())
}

/// One large batch with `guarantee`, and its baselines: a raw COPY of the
/// same rows, a raw transactional produce of the same messages, both at once.
async fn throughput(args: &Args, url: &str, guarantee: &str) -> Result<()> {
    let (cluster, topic) = new_cluster(args.messages)?;
    let t = Instant::now();
    produce(&cluster, &topic, args.messages, args.restaurants)?;
    eprintln!("produced {} messages in {:?}", args.messages, t.elapsed());
    connect(url).await?.batch_execute("TRUNCATE subscribers_feedback").await?;
    let batches = run_job(&cluster, &topic, url, guarantee).await?;
    report(&format!("1 x {} msgs, {guarantee}", args.messages), &batches);
    let (rows, raw) = raw_copy::copy_feedback_rows(url).await?;
    let raw_rate = rows as f64 / raw.as_secs_f64();
    let (sink_ms, trigger_ms) = (sum_ms(&batches, "postgresSink"), sum_ms(&batches, "triggerExecution"));
    let rate = |ms: u64| rows as f64 / (ms.max(1) as f64 / 1000.0);
    println!(
        "baseline raw COPY of the same {rows} rows: {:.0} ms, {raw_rate:.0} rows/s; sparklet's Postgres sink {:.0} rows/s (ratio {:.2}), whole trigger {:.0} rows/s (ratio {:.2})",
        raw.as_secs_f64() * 1000.0,
        rate(sink_ms),
        rate(sink_ms) / raw_rate,
        rate(trigger_ms),
        rate(trigger_ms) / raw_rate
    );
    let kafka_ms = sum_ms(&batches, "kafkaSink");
    let (messages, raw) = raw_produce::produce_output_again(&cluster, url).await?;
    let raw_ms = raw.as_secs_f64() * 1000.0;
    println!(
        "baseline raw transactional produce of the same {messages} messages: {raw_ms:.0} ms; sparklet's Kafka sink {kafka_ms} ms (ratio {:.2}, goal <= 1.25)",
        kafka_ms as f64 / raw_ms.max(1.0)
    );
    let (both_ms, add_batch_ms) = (raw_produce::both_at_once(&cluster, url).await?, sum_ms(&batches, "addBatch"));
    println!(
        "baseline raw COPY and raw produce at once (both sinks' work, nothing else): {both_ms:.0} ms; sparklet's write step {add_batch_ms} ms (ratio {:.2}), whole trigger {trigger_ms} ms (ratio {:.2})",
        both_ms / add_batch_ms.max(1) as f64,
        both_ms / trigger_ms.max(1) as f64
    );
    Ok(())
}

fn sum_ms(batches: &[Value], step: &str) -> u64 {
    batches.iter().map(|b| b["durationMs"][step].as_u64().unwrap_or(0)).sum()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(db)
}

/// A running query (trigger 0s) fed 10 messages every 200 ms.
async fn tiny_batches(args: &Args, url: &str) -> Result<Vec<Value>> {
    let (cluster, topic) = new_cluster(args.tiny_batches * 10)?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let config = config(run_args(&cluster, &topic, url, "exactly-once", "0s", checkpoint.path(), &progress))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(sparklet::run(config, async move {
        let _ = stopped.await;
    }));
    for _ in 0..args.tiny_batches {
        produce(&cluster, &topic, 10, args.restaurants)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    running.await??;
    read_progress(&progress)
}

async fn prepare_postgres(args: &Args) -> Result<String> {
    let db = connect(&args.database_url).await?;
    db.batch_execute("DROP SCHEMA IF EXISTS sparklet_bench CASCADE; CREATE SCHEMA sparklet_bench").await?;
    let url = sparklet::config::url_with_search_path(&args.database_url, "sparklet_bench");
    let db = connect(&url).await?;
    db.batch_execute(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/schema.sql"))?).await?;
    db.execute(
        "INSERT INTO subscribers_restaurants (client_id, restaurant_id)
         SELECT format('client-%s-%s', r, c), format('restaurant-%s', r)
         FROM generate_series(0, $1::int - 1) r, generate_series(0, $2::int - 1) c",
        &[&(args.restaurants as i32), &(args.subscribers as i32)],
    )
    .await?;
    Ok(url)
}

/// Runs sparklet with available-now over what is in `topic`; returns the
/// progress records of the batches.
async fn run_job(cluster: &Cluster, topic: &str, url: &str, guarantee: &str) -> Result<Vec<Value>> {
    run_job_with(cluster, topic, url, guarantee, "unlimited").await
}

/// [`run_job`] with batches of at most `max_offsets` messages.
async fn run_job_with(
    cluster: &Cluster,
    topic: &str,
    url: &str,
    guarantee: &str,
    max_offsets: &str,
) -> Result<Vec<Value>> {
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let mut args = run_args(cluster, topic, url, guarantee, "available-now", checkpoint.path(), &progress);
    if let Some(at) = args.iter().position(|a| a == "--max-offsets-per-trigger") {
        args[at + 1] = max_offsets.to_string();
    }
    let config = config(args)?;
    sparklet::run(config, std::future::pending()).await?;
    read_progress(&progress)
}

fn read_progress(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).context("progress file")?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// The checked settings of a scenario's [`run_args`].
fn config(args: Vec<String>) -> Result<sparklet::Config> {
    let cli = <sparklet::cli::Cli as Parser>::try_parse_from(std::iter::once("sparklet".to_string()).chain(args))?;
    let sparklet::cli::Command::Run(run) = cli.command else { anyhow::bail!("not a run command") };
    Ok(sparklet::Config::try_from(*run)?)
}

/// `sparklet run` arguments of a scenario: input `topic`, the cluster's
/// output and marker topics.
fn run_args(
    cluster: &Cluster,
    topic: &str,
    url: &str,
    guarantee: &str,
    trigger: &str,
    checkpoint: &std::path::Path,
    progress: &std::path::Path,
) -> Vec<String> {
    let args = [
        "run",
        "--bootstrap-servers",
        &cluster.bootstrap_servers(),
        "--input-topic",
        topic,
        "--output-topic",
        &cluster.output_topic(),
        "--marker-topic",
        &cluster.marker_topic(),
        "--database-url",
        url,
        "--checkpoint-dir",
        &checkpoint.display().to_string(),
        "--sql-dir",
        concat!(env!("CARGO_MANIFEST_DIR"), "/sql"),
        "--trigger",
        trigger,
        "--starting-offsets",
        "earliest",
        "--guarantee",
        guarantee,
        "--progress-json",
        &progress.display().to_string(),
        "--kafka-timeout",
        "120s",
        "--max-offsets-per-trigger",
        "unlimited",
    ];
    args.iter().map(|s| s.to_string()).collect()
}

fn report(name: &str, batches: &[Value]) {
    let num = |b: &Value, k: &str| b[k].as_u64().unwrap_or(0);
    let mut times: Vec<u64> =
        batches.iter().map(|b| b["durationMs"]["triggerExecution"].as_u64().unwrap_or(0)).collect();
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    let input: u64 = batches.iter().map(|b| num(b, "numInputRows")).sum();
    let output: u64 = batches.iter().map(|b| num(b, "numOutputRows")).sum();
    let total_ms: u64 = times.iter().sum();
    let rate = output as f64 / Duration::from_millis(total_ms.max(1)).as_secs_f64();
    println!("{name} | {} | {input} | {output} | {median} | {rate:.0} | {}", batches.len(), peak_rss_mib());
    if let Some(last) = batches.last() {
        eprintln!("{name}: last batch durationMs {}", last["durationMs"]);
    }
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}
