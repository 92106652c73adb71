//! The outage scenario of `bench_e2e`: how soon a running query is back
//! after Postgres returns. The query (`--trigger 200ms`, default
//! `--retry-for`) reaches Postgres through a TCP proxy; a campaign arrives
//! every 100 ms; the proxy cuts every connection and refuses new ones for
//! each outage length, then lets them through again. The figure is the time
//! from the proxy's return to the first feedback row of a campaign produced
//! during the outage (read straight from Postgres, not through the proxy).
//! The baseline, in the same run, is the produce-to-visible latency of the
//! campaigns before the outage: the figure is how many normal latencies the
//! return costs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::producer::{BaseRecord, ThreadedProducer};

use crate::latency::{percentiles, poll_postgres, Seen};
use crate::proxy::Proxy;
use crate::tools;

/// Prints one line per outage length (seconds).
pub(crate) async fn report(url: &str, outages: &[u64], restaurants: usize) -> Result<()> {
    println!("outage: postgres down s | back to the first commit s | normal latency p50 ms | ratio | attempts");
    for &seconds in outages {
        let run = run(url, Duration::from_secs(seconds), restaurants).await?;
        println!(
            "outage: {seconds} | {:.2} | {:.1} | {:.1} | {}",
            run.back.as_secs_f64(),
            run.normal_ms,
            run.back.as_secs_f64() * 1000.0 / run.normal_ms.max(0.1),
            run.failed_attempts
        );
    }
    Ok(())
}

struct Outcome {
    back: Duration,
    normal_ms: f64,
    failed_attempts: u64,
}

async fn run(url: &str, outage: Duration, restaurants: usize) -> Result<Outcome> {
    let (cluster, topic) = crate::new_cluster(10_000)?;
    let db = crate::connect(url).await?;
    db.batch_execute("TRUNCATE subscribers_feedback").await?;
    let proxy = Proxy::start("127.0.0.1:5432").await?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let args =
        crate::run_args(&cluster, &topic, &proxy.url(url), "exactly-once", "200ms", checkpoint.path(), &progress);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let query = tokio::spawn(sparklet::run(crate::config(args)?, async move {
        let _ = stopped.await;
    }));
    let (seen, done) = (Seen::default(), Arc::new(AtomicBool::new(false)));
    let poller = tokio::spawn(poll_postgres(db, seen.clone(), done.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let producer: ThreadedProducer<_> =
        tools::client_config(&cluster.bootstrap_servers(), &[("linger.ms".into(), "0".into())]).create()?;
    let mut feed = Feed { producer, topic, restaurants, produced: HashMap::new(), next: 0 };
    feed.for_a_while(Duration::from_secs(3)).await?;
    let before: Vec<String> = feed.produced.keys().cloned().collect();
    proxy.down();
    feed.for_a_while(outage).await?;
    let during: Vec<String> = feed.produced.keys().filter(|id| !before.contains(id)).cloned().collect();
    proxy.up();
    let up = Instant::now();
    let deadline = up + Duration::from_secs(120);
    let first_back = loop {
        let first = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            during.iter().filter_map(|id| seen.get(id)).min().copied()
        };
        match first {
            Some(at) => break at,
            None if Instant::now() > deadline => anyhow::bail!("no campaign of the outage committed 120 s after it"),
            None => feed.for_a_while(Duration::from_millis(100)).await?,
        }
    };
    done.store(true, Ordering::Relaxed);
    let _ = stop.send(());
    let summary = query.await??;
    poller.await??;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut normal: Vec<Duration> =
        before.iter().filter_map(|id| Some(seen.get(id)?.saturating_duration_since(feed.produced[id]))).collect();
    normal.sort();
    Ok(Outcome {
        back: first_back.saturating_duration_since(up),
        normal_ms: percentiles(&normal).0,
        failed_attempts: summary.failed_attempts,
    })
}

/// One campaign every 100 ms; remembers when each one with output was sent.
struct Feed {
    producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: String,
    restaurants: usize,
    produced: HashMap<String, Instant>,
    next: usize,
}

impl Feed {
    async fn for_a_while(&mut self, length: Duration) -> Result<()> {
        let end = Instant::now() + length;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
        while Instant::now() < end {
            let (i, id) = (self.next, format!("outage-{}", self.next));
            self.next += 1;
            let value = tools::generated_campaign(i, self.restaurants, &id, now);
            let sent = Instant::now();
            sparklet::kafka::send_when_room(&self.producer, BaseRecord::<str, str>::to(&self.topic).payload(&value))?;
            // Every tenth generated campaign has expired: it has no output.
            if i % 10 != 9 {
                self.produced.insert(id, sent);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
