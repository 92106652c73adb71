//! End-to-end benchmark: the real pipeline (in-process Kafka over TCP, the
//! local Postgres, the repo's SQL) on generated data, the shape used to
//! compare with Spark Structured Streaming on the same job: 1,000 restaurants
//! x 10 subscribers, 10% of the campaigns expired. Prints batch time, rows/s and peak memory per scenario.
//!
//! ```text
//! cargo run --release --example bench_e2e -- --messages 100000
//! ```
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
//! timer, with the cost of one reload at 10k to 10M rows ([`freshness`]).

mod flat;
mod freshness;
mod latency;
mod memory;
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
use rdkafka::mocking::MockCluster;
use serde_json::Value;

/// End-to-end throughput and latency of sparklet on this machine.
#[derive(Parser)]
struct Args {
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
    /// flat, freshness, shards (comma-separated; startup, memory, flat and freshness
    /// each fill the subscribers table with their own sizes, so they run
    /// last; freshness is not in the default list: its 10M-row table takes
    /// minutes to fill; nor is shards, which repeats a backlog six times).
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
    /// How long each latency run produces.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
}

/// The output topic of every scenario, and its partitions.
const OUTPUT: &str = "bench_out";
const OUTPUT_PARTITIONS: i32 = 16;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = prepare_postgres(&args).await?;
    let wants = |s: &str| args.scenarios.iter().any(|w| w == s);
    println!("scenario | batches | input msgs | output rows | batch ms (median) | output rows/s | peak RSS MiB");
    for guarantee in ["exactly-once", "at-least-once"].into_iter().filter(|_| wants("throughput")) {
        let (cluster, topic) = new_cluster(args.messages)?;
        let t = Instant::now();
        produce(&cluster, &topic, args.messages, args.restaurants)?;
        eprintln!("produced {} messages in {:?}", args.messages, t.elapsed());
        connect(&url).await?.batch_execute("TRUNCATE subscribers_feedback").await?;
        let batches = run_job(&cluster, &topic, &url, guarantee).await?;
        report(&format!("1 x {} msgs, {guarantee}", args.messages), &batches);
        let (rows, raw) = raw_copy::copy_feedback_rows(&url).await?;
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
        let (messages, raw) = raw_produce::produce_output_again(&cluster, &url).await?;
        let raw_ms = raw.as_secs_f64() * 1000.0;
        println!(
            "baseline raw transactional produce of the same {messages} messages: {raw_ms:.0} ms; sparklet's Kafka sink {kafka_ms} ms (ratio {:.2}, goal <= 1.25)",
            kafka_ms as f64 / raw_ms.max(1.0)
        );
        let (both_ms, add_batch_ms) = (both_at_once(&cluster, &url).await?, sum_ms(&batches, "addBatch"));
        println!(
            "baseline raw COPY and raw produce at once (both sinks' work, nothing else): {both_ms:.0} ms; sparklet's write step {add_batch_ms} ms (ratio {:.2}), whole trigger {trigger_ms} ms (ratio {:.2})",
            both_ms / add_batch_ms.max(1) as f64,
            both_ms / trigger_ms.max(1) as f64
        );
    }
    if wants("steady") {
        println!("steady: campaigns per batch | batches | rows | sparklet rows/s | raw COPY rows/s (same transactions) | ratio");
        for &n in &args.steady_campaigns {
            let s = steady::run(&url, n, (300_000 / n.max(1)).clamp(3, 30), args.restaurants).await?;
            let rate = |d: Duration| s.rows as f64 / d.as_secs_f64().max(0.001);
            let (ours, raw) = (rate(s.sparklet), rate(s.raw));
            println!("steady: {n} | {} | {} | {ours:.0} | {raw:.0} | {:.2}", s.batches, s.rows, ours / raw);
        }
    }
    if wants("tiny") {
        let tiny = tiny_batches(&args, &url).await?;
        report("tiny: 10 msgs per batch, exactly-once, trigger 0s", &tiny);
    }
    if wants("latency") {
        latency_table(&args, &url).await?;
    }
    if wants("startup") {
        println!("startup: subscribers | raw COPY ms | load ms | ratio | start to first batch done ms");
        for &n in &args.startup_subscribers {
            let s = startup::run(&url, n).await?;
            let (raw, first) = (s.raw_copy.as_secs_f64() * 1000.0, s.first_batch.as_secs_f64() * 1000.0);
            let load = s.load_ms;
            println!("startup: {} | {raw:.0} | {load:.0} | {:.2} | {first:.0}", s.subscribers, load / raw.max(0.001));
        }
    }
    if wants("memory") {
        // Filled here: run alone, the scenario used to find the 10k rows the
        // benchmark starts with, while its label said 1M.
        let subscribers = args.startup_subscribers.iter().max().copied().unwrap_or(0);
        startup::fill_subscribers(&connect(&url).await?, subscribers).await?;
        println!(
            "memory: campaigns | subscribers | peak RSS MiB of the sparklet process | ratio to the smallest batch"
        );
        let mut first = None;
        for &n in &args.memory_campaigns {
            let mib = memory::peak_rss_mib(&url, n, (subscribers / 10).max(1))?;
            let base = *first.get_or_insert(mib);
            println!("memory: {n} | {subscribers} | {mib:.0} | {:.2}", mib / base);
        }
    }
    if wants("flat") {
        println!("flat: subscribers | load ms | batch ms (median of 20 x 100 campaigns) | SQL ms | batch ratio to the smallest table");
        let mut first = None;
        for &n in &args.flat_subscribers {
            let f = flat::run(&url, n).await?;
            let base = *first.get_or_insert(f.trigger_ms);
            println!(
                "flat: {} | {:.0} | {:.1} | {:.1} | {:.2}",
                f.subscribers,
                f.load_ms,
                f.trigger_ms,
                f.sql_ms,
                f.trigger_ms / base
            );
        }
    }
    if wants("freshness") {
        freshness::report(&url, &args.freshness_subscribers, &args.reload_subscribers).await?;
    }
    if wants("shards") {
        shards::report(&url, args.shard_campaigns, args.restaurants).await?;
    }
    Ok(())
}

/// Milliseconds of a raw COPY and a raw produce of the batch's output run
/// concurrently, as sparklet's two sinks run: what the machine does for both
/// sinks without sparklet.
async fn both_at_once(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    url: &str,
) -> Result<f64> {
    let copy = raw_copy::RawCopy::prepare(url).await?;
    let produce = raw_produce::RawProduce::prepare(cluster, url, "bench_raw_both").await?;
    let started = Instant::now();
    let (copied, produced) = tokio::join!(copy.run(), tokio::task::spawn_blocking(move || produce.run()));
    let elapsed = started.elapsed();
    copied?;
    produced??;
    Ok(elapsed.as_secs_f64() * 1000.0)
}

fn sum_ms(batches: &[Value], step: &str) -> u64 {
    batches.iter().map(|b| b["durationMs"][step].as_u64().unwrap_or(0)).sum()
}

/// Per-campaign latency, produce to visible in each sink, at each rate, with
/// `--trigger 0s` and the `--trigger 100ms` baseline.
async fn latency_table(args: &Args, url: &str) -> Result<()> {
    println!("latency: rate/s | trigger | sink | campaigns | p50 ms | p99 ms | max ms | p99 ratio to trigger 100ms");
    for &rate in &args.latency_rates {
        let baseline = latency::run(url, rate, args.latency_seconds, "100ms", args.restaurants).await?;
        let fast = latency::run(url, rate, args.latency_seconds, "0s", args.restaurants).await?;
        for (sink, base, now) in
            [("kafka", &baseline.kafka, &fast.kafka), ("postgres", &baseline.postgres, &fast.postgres)]
        {
            let (_, base_p99, _) = latency::percentiles(base);
            for (trigger, run) in [("100ms", base), ("0s", now)] {
                let (p50, p99, max) = latency::percentiles(run);
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
    let config = config(run_args(
        &cluster.bootstrap_servers(),
        &topic,
        url,
        "exactly-once",
        "0s",
        checkpoint.path(),
        &progress,
    ))?;
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

fn new_cluster(messages: usize) -> Result<(MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String)> {
    let cluster = MockCluster::new(1)?;
    let topic = format!("bench_in_{messages}");
    // The mock cluster keeps about 5 MB per partition: at least 16
    // partitions, and one per 8,000 campaigns (~3.8 MB), so none is dropped.
    cluster.create_topic(&topic, (messages / 8_000 + 1).max(16) as i32, 1)?;
    cluster.create_topic(OUTPUT, OUTPUT_PARTITIONS, 1)?;
    cluster.create_topic(&format!("{topic}-dead-letter"), 1, 1)?;
    cluster.create_topic(sparklet::cli::DEFAULT_MARKER_TOPIC, 1, 1)?;
    Ok((cluster, topic))
}

fn produce(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    n: usize,
    restaurants: usize,
) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let messages: Vec<(Option<String>, String)> = (0..n)
        .map(|i| {
            let id = format!("campaign-{i}-{}", uuid::Uuid::new_v4().simple());
            (Some(format!("message_{i}")), tools::generated_campaign(i, restaurants, &id, now))
        })
        .collect();
    let config = tools::client_config(&cluster.bootstrap_servers(), &[("linger.ms".into(), "5".into())]);
    tools::produce(&config, topic, &messages)?;
    Ok(())
}

/// Runs sparklet with available-now over what is in `topic`; returns the
/// progress records of the batches.
async fn run_job(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    url: &str,
    guarantee: &str,
) -> Result<Vec<Value>> {
    run_job_with(cluster, topic, url, guarantee, "unlimited").await
}

/// [`run_job`] with batches of at most `max_offsets` messages.
async fn run_job_with(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    url: &str,
    guarantee: &str,
    max_offsets: &str,
) -> Result<Vec<Value>> {
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let mut args =
        run_args(&cluster.bootstrap_servers(), topic, url, guarantee, "available-now", checkpoint.path(), &progress);
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

/// `sparklet run` arguments of a scenario.
fn run_args(
    bootstrap: &str,
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
        bootstrap,
        "--input-topic",
        topic,
        "--output-topic",
        OUTPUT,
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
