//! The start-up scenario of `bench_e2e`: how long from `sparklet::run` to
//! the end of a first one-campaign batch, with 10k and 1M cached
//! subscribers, and how long loading the table took of it; the baseline, in
//! the same run, is a raw binary COPY of the same subscribers query to
//! nowhere (the floor of loading the table). Kafka: a fresh mock cluster, or
//! the `--bootstrap-servers` broker with topics of its own
//! ([`crate::cluster`]), one per table size.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;

/// (subscribers, raw COPY time, time to the first batch's end).
pub(crate) struct Startup {
    pub subscribers: usize,
    pub raw_copy: Duration,
    pub first_batch: Duration,
    /// Loading the table (sparklet's progress record).
    pub load_ms: f64,
}

/// Prints the table, one row per table size in `sizes`.
pub(crate) async fn report(url: &str, sizes: &[usize]) -> Result<()> {
    println!("startup: subscribers | raw COPY ms | load ms | ratio | start to first batch done ms");
    for &n in sizes {
        let s = run(url, n).await?;
        let (raw, first) = (s.raw_copy.as_secs_f64() * 1000.0, s.first_batch.as_secs_f64() * 1000.0);
        let load = s.load_ms;
        println!("startup: {} | {raw:.0} | {load:.0} | {:.2} | {first:.0}", s.subscribers, load / raw.max(0.001));
    }
    Ok(())
}

/// Fills `subscribers_restaurants` with `subscribers` rows (10 per
/// restaurant) and times a run over one campaign.
pub(crate) async fn run(url: &str, subscribers: usize) -> Result<Startup> {
    let db = crate::connect(url).await?;
    fill_subscribers(&db, subscribers).await?;
    let raw_copy = raw_copy(&db).await?;

    let (cluster, topic) = crate::new_cluster(1)?;
    crate::produce(&cluster, &topic, 1, subscribers / 10)?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let args = crate::run_args(&cluster, &topic, url, "exactly-once", "available-now", checkpoint.path(), &progress);
    let config = crate::config(args)?;
    let started = Instant::now();
    sparklet::run(config, std::future::pending()).await?;
    let first_batch = started.elapsed();
    let batches = crate::read_progress(&progress)?;
    let load_ms = batches.first().and_then(|b| b["subscribers"]["loadMs"].as_f64()).unwrap_or(f64::NAN);
    Ok(Startup { subscribers, raw_copy, first_batch, load_ms })
}

/// Empties both tables and fills `subscribers_restaurants` with
/// `subscribers` rows, 10 per restaurant.
pub(crate) async fn fill_subscribers(db: &tokio_postgres::Client, subscribers: usize) -> Result<()> {
    db.batch_execute("TRUNCATE subscribers_restaurants, subscribers_feedback").await?;
    db.execute(
        "INSERT INTO subscribers_restaurants (client_id, restaurant_id)
         SELECT format('client-%s', i), format('restaurant-%s', i / 10) FROM generate_series(0, $1::int - 1) i",
        &[&(subscribers as i32)],
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE subscribers_restaurants").await?;
    Ok(())
}

/// The repo's subscribers query, copied out in binary and thrown away.
pub(crate) async fn raw_copy(db: &tokio_postgres::Client) -> Result<Duration> {
    let query = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/subscribers.sql"))?;
    let copy = format!("COPY ({}\n) TO STDOUT (FORMAT binary)", query.trim().trim_end_matches(';'));
    let started = Instant::now();
    let stream = db.copy_out(copy.as_str()).await?;
    futures::pin_mut!(stream);
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len();
    }
    let elapsed = started.elapsed();
    eprintln!("raw COPY of the subscribers query: {bytes} bytes in {elapsed:?}");
    Ok(elapsed)
}
