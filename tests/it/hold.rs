//! `--hold-future-campaigns`: a campaign published before its start is
//! delivered by the first batch at or after its start, once, across a
//! restart and across a crash in the batch that releases it; one whose end
//! passes first is counted as expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::child::{ensure_crashed_at, run_to_completion, spawn, wait, LogOnFailure};
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn progress(path: &std::path::Path) -> Result<Vec<Value>> {
    std::fs::read_to_string(path)?.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_campaign_waits_across_a_restart_and_is_delivered_once_after_its_start() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    // Far enough ahead that the first run is surely over before it.
    let start = now() + 6;
    job.kafka.produce(
        &job.input,
        0,
        &[
            campaign(RESTAURANT, "now", 0, FOREVER),
            campaign(RESTAURANT, "later", start, FOREVER),
            campaign(RESTAURANT, "blink", start, start), // ends at its start
        ],
    )?;
    let log = job.checkpoint.path().join("progress.jsonl");
    let args = ["--hold-future-campaigns", "true", "--progress-json", log.to_str().unwrap()];
    job.run_available_now(&args).await?;
    assert_exactly_once(&job, &expected_pairs(&strings(&["now"]), &strings(&["c1", "c2"]))).await?;
    ensure!(progress(&log)?[0]["numHeldRows"] == 2, "{:?}", progress(&log)?);

    // A new run after the start: nothing new in Kafka, yet a batch runs for
    // the held campaigns; "blink" ended before that batch's now.
    tokio::time::sleep(Duration::from_secs((start + 2 - now()).max(0) as u64)).await;
    job.run_available_now(&args).await?;
    assert_exactly_once(&job, &expected_pairs(&strings(&["later", "now"]), &strings(&["c1", "c2"]))).await?;
    let records = progress(&log)?;
    let release = records.last().unwrap();
    ensure!(release["numInputRows"] == 0 && release["numHeldRows"] == 0, "{release}");
    ensure!(release["numExpiredRows"] == 1, "{release}");

    // And never again.
    let summary = job.run_available_now(&args).await?;
    ensure!(summary.batches == 0, "{summary:?}");
    assert_exactly_once(&job, &expected_pairs(&strings(&["later", "now"]), &strings(&["c1", "c2"]))).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_batch_that_releases_a_held_campaign_delivers_it_once() -> Result<()> {
    for point in ["after-write-ahead", "before-commit-log"] {
        let job = Job::new(1).await?;
        job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
        // Far enough ahead that batch 0 (a child process starting on a
        // loaded machine) surely runs before it.
        let start = now() + 8;
        job.kafka.produce(
            &job.input,
            0,
            &[campaign(RESTAURANT, "now", 0, FOREVER), campaign(RESTAURANT, "later", start, FOREVER)],
        )?;
        let _log = LogOnFailure(&job);
        // Batch 0 holds "later"; batch 1, planned for it alone, crashes.
        let args = ["--trigger", "200ms", "--hold-future-campaigns", "true"];
        let status = wait(&mut spawn(&job, &args, Some(&format!("{point}@2")))?, Duration::from_secs(60))?;
        ensure_crashed_at(&job, status, point, 1)?;
        run_to_completion(&job, &["--hold-future-campaigns", "true"])?;
        assert_exactly_once(&job, &expected_pairs(&strings(&["later", "now"]), &strings(&["c1", "c2"]))).await?;
    }
    Ok(())
}
