//! The steady-state scenario of `bench_e2e`: consecutive batches of one size
//! into a growing table (exactly-once, `--max-offsets-per-trigger` = the batch
//! size), against a raw binary COPY of the same rows in transactions of the
//! same size, one after the other, into a growing table of the same shape.
//! Kafka: a fresh mock cluster, or the `--bootstrap-servers` broker with
//! topics of its own ([`crate::cluster`]), one per batch size.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::SinkExt;

/// What one batch size gave.
pub(crate) struct Steady {
    pub batches: usize,
    pub rows: u64,
    /// Sum of the batches' `triggerExecution`.
    pub sparklet: Duration,
    /// The raw COPY transactions, end to end.
    pub raw: Duration,
}

/// Prints the table: each size in `sizes` (campaigns per batch) runs
/// 300,000 / size batches, at least 3 and at most 30.
pub(crate) async fn report(url: &str, sizes: &[usize], restaurants: usize) -> Result<()> {
    println!(
        "steady: campaigns per batch | batches | rows | sparklet rows/s | raw COPY rows/s (same transactions) | ratio"
    );
    for &n in sizes {
        let s = run(url, n, (300_000 / n.max(1)).clamp(3, 30), restaurants).await?;
        let rate = |d: Duration| s.rows as f64 / d.as_secs_f64().max(0.001);
        let (ours, raw) = (rate(s.sparklet), rate(s.raw));
        println!("steady: {n} | {} | {} | {ours:.0} | {raw:.0} | {:.2}", s.batches, s.rows, ours / raw);
    }
    Ok(())
}

/// Runs `batches` batches of `campaigns` campaigns, then the raw baseline.
pub(crate) async fn run(url: &str, campaigns: usize, batches: usize, restaurants: usize) -> Result<Steady> {
    let total = campaigns * batches;
    let (cluster, topic) = crate::new_cluster(total)?;
    crate::produce(&cluster, &topic, total, restaurants)?;
    let db = crate::connect(url).await?;
    db.batch_execute("TRUNCATE subscribers_feedback").await?;
    let progress = crate::run_job_with(&cluster, &topic, url, "exactly-once", &campaigns.to_string()).await?;
    crate::latency::print_steps(&format!("steady steps: {campaigns} campaigns"), &progress);
    let sparklet = progress.iter().map(|b| b["durationMs"]["triggerExecution"].as_u64().unwrap_or(0)).sum();
    let per_batch: Vec<u64> = progress.iter().map(|b| b["numOutputRows"].as_u64().unwrap_or(0)).collect();
    let raw = raw_copy_in_batches(url, &per_batch).await?;
    Ok(Steady { batches: progress.len(), rows: per_batch.iter().sum(), sparklet: Duration::from_millis(sparklet), raw })
}

/// The feedback rows, in insertion order, as one binary COPY stream per
/// batch (`per_batch` rows each), copied one transaction per batch.
async fn raw_copy_in_batches(url: &str, per_batch: &[u64]) -> Result<Duration> {
    let mut db = crate::connect(url).await?;
    let columns = sparklet::schema::OUTPUT_FIELDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let mut streams = Vec::new();
    let mut after = 0i64;
    for &rows in per_batch {
        let ids = format!("SELECT id FROM subscribers_feedback WHERE id > {after} ORDER BY id LIMIT {rows}");
        let last: Option<i32> = db.query_one(&format!("SELECT max(id) FROM ({ids}) b"), &[]).await?.get(0);
        let Some(last) = last else { continue };
        let query = format!(
            "COPY (SELECT {columns} FROM subscribers_feedback WHERE id > {after} AND id <= {last} ORDER BY id) TO STDOUT (FORMAT binary)"
        );
        streams.push(crate::raw_copy::copy_out(&db, &query).await?);
        after = i64::from(last);
    }
    db.batch_execute(
        "DROP TABLE IF EXISTS feedback_raw_copy;
         CREATE TABLE feedback_raw_copy (LIKE subscribers_feedback INCLUDING ALL)",
    )
    .await?;
    let statement = format!("COPY feedback_raw_copy ({columns}) FROM STDIN (FORMAT binary)");
    let started = Instant::now();
    for chunks in streams {
        let txn = db.transaction().await?;
        let sink = txn.copy_in::<_, bytes::Bytes>(statement.as_str()).await?;
        futures::pin_mut!(sink);
        for chunk in chunks {
            sink.send(chunk).await?;
        }
        sink.finish().await?;
        txn.commit().await?;
    }
    let elapsed = started.elapsed();
    db.batch_execute("DROP TABLE feedback_raw_copy").await?;
    Ok(elapsed)
}
