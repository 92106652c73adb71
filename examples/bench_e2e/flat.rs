//! The table-size scenario of `bench_e2e`: the per-batch time of small
//! batches (100 campaigns) as the cached subscribers table grows from 10k to
//! 10M rows (10 per restaurant). The baseline is the smallest table, in the
//! same run: the goal is a ratio within 1.5. Kafka: a fresh mock cluster, or
//! the `--bootstrap-servers` broker with topics of its own
//! ([`crate::cluster`]), one per table size.

use std::time::Duration;

use anyhow::Result;

/// Batches timed per table size.
const BATCHES: usize = 20;
/// Campaigns per batch.
const CAMPAIGNS: usize = 100;

/// Median per-batch times (ms) with one table size.
pub(crate) struct Flat {
    pub subscribers: usize,
    /// Whole trigger.
    pub trigger_ms: f64,
    /// The SQL step (join included).
    pub sql_ms: f64,
    /// Loading the table at start (from the progress record).
    pub load_ms: f64,
}

/// Prints the table, one row per table size in `sizes`.
pub(crate) async fn report(url: &str, sizes: &[usize]) -> Result<()> {
    println!("flat: subscribers | load ms | batch ms (median of 20 x 100 campaigns) | SQL ms | batch ratio to the smallest table");
    let mut first = None;
    for &n in sizes {
        let f = run(url, n).await?;
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
    Ok(())
}

/// Fills the table with `subscribers` rows and runs 20 batches of 100
/// campaigns over it with `--max-offsets-per-trigger 100`.
pub(crate) async fn run(url: &str, subscribers: usize) -> Result<Flat> {
    let db = crate::connect(url).await?;
    crate::startup::fill_subscribers(&db, subscribers).await?;
    let (cluster, topic) = crate::new_cluster(BATCHES * CAMPAIGNS)?;
    crate::produce(&cluster, &topic, BATCHES * CAMPAIGNS, (subscribers / 10).max(1))?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let mut args =
        crate::run_args(&cluster, &topic, url, "exactly-once", "available-now", checkpoint.path(), &progress);
    let limit = args.iter().position(|a| a == "--max-offsets-per-trigger").map_or(args.len(), |i| i + 1);
    args[limit] = CAMPAIGNS.to_string();
    sparklet::run(crate::config(args)?, std::future::pending()).await?;
    let batches = crate::read_progress(&progress)?;
    let median = |step: &str| {
        let mut v: Vec<Duration> =
            batches.iter().filter_map(|b| b["durationMs"][step].as_u64()).map(Duration::from_millis).collect();
        v.sort_unstable();
        crate::latency::percentiles(&v).0
    };
    Ok(Flat {
        subscribers,
        trigger_ms: median("triggerExecution"),
        sql_ms: median("queryPlanningAndExecution"),
        load_ms: batches.first().and_then(|b| b["subscribers"]["loadMs"].as_f64()).unwrap_or(f64::NAN),
    })
}
