//! The shards scenario of `bench_e2e`: one backlog read by one process with
//! 1, 2 and 4 shards (`--shards`, all in the process), in two alternating
//! rounds. On 2 cores the point is the cost per shard: output rows per
//! second, and CPU time per output row, should stay flat as shards are
//! added. The baseline is the 1-shard run of the same round. A raw binary
//! COPY of the same rows is the Postgres write limit the 16-machine estimate
//! divides by. With `SPARKLET_TEST_S3` set (an S3 server, as `.ci/run`
//! starts), one shard with its checkpoint there is compared with one on
//! local disk. Kafka: a fresh mock cluster, or the `--bootstrap-servers`
//! broker with topics of its own ([`crate::cluster`]), one per run.

use std::time::Instant;

use anyhow::Result;
use serde_json::Value;

/// What one run with `shards` shards gave.
struct ShardRun {
    shards: u32,
    rows: u64,
    wall_s: f64,
    cpu_s: f64,
}

/// Runs the scenario and prints its table.
pub(crate) async fn report(url: &str, campaigns: usize, restaurants: usize) -> Result<()> {
    println!("shards: round | shards | batches | output rows | wall s | rows/s | ratio to 1 shard | CPU us/row | ratio to 1 shard");
    let mut raw = None;
    for round in 1..=2 {
        let mut base: Option<(f64, f64)> = None;
        for shards in [1, 2, 4] {
            let (run, batches) = run(url, campaigns, restaurants, shards).await?;
            let rate = run.rows as f64 / run.wall_s;
            let cpu_us = run.cpu_s * 1e6 / run.rows.max(1) as f64;
            let (base_rate, base_cpu) = *base.get_or_insert((rate, cpu_us));
            println!(
                "shards: {round} | {} | {batches} | {} | {:.2} | {rate:.0} | {:.2} | {cpu_us:.2} | {:.2}",
                run.shards,
                run.rows,
                run.wall_s,
                rate / base_rate,
                cpu_us / base_cpu
            );
            if raw.is_none() {
                raw = Some(crate::raw_copy::copy_feedback_rows(url).await?);
            }
        }
    }
    if let Ok(bucket) = std::env::var("SPARKLET_TEST_S3") {
        s3_rows(url, campaigns, restaurants, &bucket).await?;
    }
    if let Some((rows, took)) = raw {
        println!(
            "shards: Postgres write limit here: raw binary COPY of {rows} feedback rows in {:.0} ms = {:.0} rows/s",
            took.as_secs_f64() * 1000.0,
            rows as f64 / took.as_secs_f64()
        );
    }
    Ok(())
}

/// With `SPARKLET_TEST_S3` (and the `AWS_*` variables): one shard with its
/// checkpoint in that S3 server against one shard on local disk, twice
/// alternating: rows/s, and the median of the two checkpoint writes per
/// batch (write-ahead, commit).
async fn s3_rows(url: &str, campaigns: usize, restaurants: usize, bucket: &str) -> Result<()> {
    println!("shards: checkpoint | batches | rows/s | ratio to local | median write-ahead ms | median commit ms");
    for _ in 0..2 {
        let mut base = None;
        for place in ["local", "s3"] {
            let dir = format!("{bucket}/bench-{}", uuid::Uuid::new_v4().simple());
            let at = (place == "s3").then_some(dir.as_str());
            let (run, batches) = run_at(url, campaigns, restaurants, 1, at).await?;
            let rate = run.rows as f64 / run.wall_s;
            let base = *base.get_or_insert(rate);
            let median = |key: &str| {
                let mut v: Vec<u64> = batches.iter().map(|b| b["durationMs"][key].as_u64().unwrap_or(0)).collect();
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            };
            println!(
                "shards: {place} | {} | {rate:.0} | {:.2} | {} | {}",
                batches.len(),
                rate / base,
                median("walCommit"),
                median("commitOffsets")
            );
        }
    }
    Ok(())
}

/// One `available-now` run over a fresh backlog of `campaigns` with `shards`
/// shards in this process; returns its figures and its batch count.
async fn run(url: &str, campaigns: usize, restaurants: usize, shards: u32) -> Result<(ShardRun, usize)> {
    let (run, batches) = run_at(url, campaigns, restaurants, shards, None).await?;
    Ok((run, batches.len()))
}

/// [`run`] with the checkpoint at `checkpoint` (a URL) instead of a local
/// folder; returns the progress records.
async fn run_at(
    url: &str,
    campaigns: usize,
    restaurants: usize,
    shards: u32,
    checkpoint_url: Option<&str>,
) -> Result<(ShardRun, Vec<Value>)> {
    let (cluster, topic) = crate::new_cluster(campaigns)?;
    crate::produce(&cluster, &topic, campaigns, restaurants)?;
    crate::connect(url).await?.batch_execute("TRUNCATE subscribers_feedback").await?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let mut args =
        crate::run_args(&cluster, &topic, url, "exactly-once", "available-now", checkpoint.path(), &progress);
    if let Some(at) = args.iter().position(|a| a == "--max-offsets-per-trigger") {
        args[at + 1] = "20000".into();
    }
    args.extend(["--shards".into(), shards.to_string()]);
    if let (Some(dir), Some(at)) = (checkpoint_url, args.iter().position(|a| a == "--checkpoint-dir")) {
        args[at + 1] = dir.to_string();
    }
    let config = crate::config(args)?;
    let (cpu, started) = (cpu_seconds(), Instant::now());
    sparklet::run(config, std::future::pending()).await?;
    let (wall_s, cpu_s) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let batches: Vec<Value> = crate::read_progress(&progress)?;
    let rows = batches.iter().map(|b| b["numOutputRows"].as_u64().unwrap_or(0)).sum();
    Ok((ShardRun { shards, rows, wall_s, cpu_s }, batches))
}

/// User plus system CPU time of this process so far (`/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name,
    // in clock ticks (USER_HZ: 100 on Linux).
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}
