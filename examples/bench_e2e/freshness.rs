//! The freshness scenario of `bench_e2e`: how long from a subscriber's
//! INSERT committing to the end of the first batch that joins with it, with
//! `--subscribers-refresh on-change` and, as the baseline in the same run,
//! a 1 s reload timer (what a periodic refresh of a cached table does); and
//! what one reload of the table costs at 10k, 1M and 10M rows (time, memory)
//! against a raw binary COPY of the same query. Kafka: a fresh mock cluster,
//! or the `--bootstrap-servers` broker with topics of its own
//! ([`crate::cluster`]), one per delay run.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::producer::{BaseRecord, ThreadedProducer};

use crate::tools;

/// Rounds of insert-then-wait per mode.
const ROUNDS: usize = 7;

/// Prints both tables.
pub(crate) async fn report(url: &str, delay_sizes: &[usize], reload_sizes: &[usize]) -> Result<()> {
    println!("freshness: subscribers | refresh | insert to first batch using it, ms: median | max");
    for &n in delay_sizes {
        crate::startup::fill_subscribers(&crate::connect(url).await?, n).await?;
        for refresh in ["on-change", "1s"] {
            let mut delays = delays(url, refresh).await?;
            delays.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "freshness: {n} | {refresh} | {:.0} | {:.0}",
                ms(delays[delays.len() / 2]),
                ms(delays[delays.len() - 1])
            );
        }
    }
    println!("reload: subscribers | raw COPY ms | sparklet load ms | ratio | table MiB | RSS growth while loading MiB");
    for &n in reload_sizes {
        let db = crate::connect(url).await?;
        crate::startup::fill_subscribers(&db, n).await?;
        let raw = crate::startup::raw_copy(&db).await?.as_secs_f64() * 1000.0;
        let (load, table, growth) = reload_cost(url).await?;
        println!("reload: {n} | {raw:.0} | {load:.0} | {:.2} | {table:.1} | {growth:.1}", load / raw.max(0.001));
    }
    Ok(())
}

/// Starts a query and, each round, inserts a subscriber of `restaurant-0`
/// and produces a campaign of that restaurant every 10 ms until a feedback
/// row for the new subscriber appears.
async fn delays(url: &str, refresh: &str) -> Result<Vec<Duration>> {
    let (cluster, topic) = crate::new_cluster(10_000)?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let mut args = crate::run_args(&cluster, &topic, url, "exactly-once", "0s", checkpoint.path(), &progress);
    args.extend(["--subscribers-refresh", refresh, "--subscribers-version-check", "60s"].map(String::from));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let query = tokio::spawn(sparklet::run(crate::config(args)?, async move {
        let _ = stopped.await;
    }));
    let db = crate::connect(url).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let producer: ThreadedProducer<_> =
        tools::client_config(&cluster.bootstrap_servers(), &[("linger.ms".into(), "0".into())]).create()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let mut delays = Vec::new();
    for round in 0..ROUNDS {
        let client = format!("fresh-{refresh}-{round}");
        db.execute(
            "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ($1, 'restaurant-0')",
            &[&client],
        )
        .await?;
        let committed = Instant::now();
        let mut probe = 0;
        loop {
            let campaign = tools::generated_campaign(0, 1, &format!("probe-{client}-{probe}"), now);
            // No flush (it polls in 100 ms steps): with linger.ms 0 the
            // producer's thread sends at once.
            sparklet::kafka::send_when_room(&producer, BaseRecord::<str, str>::to(&topic).payload(&campaign))?;
            probe += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let seen =
                db.query_one("SELECT count(*) FROM subscribers_feedback WHERE client_id = $1", &[&client]).await?;
            if seen.get::<_, i64>(0) > 0 {
                delays.push(committed.elapsed());
                break;
            }
            if committed.elapsed() > Duration::from_secs(30) {
                bail!("{client} never reached the output");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop.send(());
    query.await??;
    Ok(delays)
}

/// One load of the table as the refresher does it: time, the table's Arrow
/// size, and how much the process's peak RSS grew.
async fn reload_cost(url: &str) -> Result<(f64, f64, f64)> {
    let postgres = sparklet::config::PostgresConfig::parse(url)?;
    let sql_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"));
    std::fs::write("/proc/self/clear_refs", "5")?; // resets the peak (VmHWM) to the current RSS
    let before = crate::peak_rss_mib() as f64;
    let started = Instant::now();
    let subs = sparklet::subscribers::load(&postgres, sql_dir, false).await?;
    let load = started.elapsed().as_secs_f64() * 1000.0;
    let table = subs.batch.get_array_memory_size() as f64 / (1024.0 * 1024.0);
    let growth = crate::peak_rss_mib() as f64 - before;
    drop(subs);
    Ok((load, table, growth))
}
