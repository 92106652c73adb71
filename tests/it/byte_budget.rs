//! `--max-bytes-per-trigger` (issue 24): a backlog of large, valid campaigns
//! is read in batches that fit the byte budget, so memory stays bounded, and
//! every campaign reaches both sinks exactly once; a batch planned before
//! (under no budget) that exceeds the budget stops the replay with a message
//! saying how to let it finish, and nothing is lost. The runs are child
//! processes; the test prints their peak RSS and time beside an unlimited
//! run over the same input (figures for people, nothing asserted on them).

use anyhow::{ensure, Result};

use crate::bad_records_hostile::measured_run;
use crate::child::*;
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

/// A valid campaign of about `kib` KiB (its content padded).
fn large_campaign(id: &str, kib: usize) -> serde_json::Value {
    let mut c = campaign(RESTAURANT, id, 0, FOREVER);
    c["adv_campaign_content"] = serde_json::Value::String("x".repeat(kib * 1024));
    c
}

/// `n` campaigns of 200 KiB over the job's two partitions; their ids.
fn produce_large(job: &Job, n: usize) -> Result<Vec<String>> {
    let ids: Vec<String> = (0..n).map(|i| format!("big-{i:04}")).collect();
    for (partition, chunk) in ids.chunks(n.div_ceil(2)).enumerate() {
        let messages: Vec<serde_json::Value> = chunk.iter().map(|id| large_campaign(id, 200)).collect();
        job.kafka.produce(&job.input, partition as i32, &messages)?;
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_campaigns_are_read_in_batches_within_the_byte_budget_exactly_once() -> Result<()> {
    const N: usize = 300; // 60 MB of input
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let ids = produce_large(&job, N)?;
    let bounded = measured_run(&job, &["--max-bytes-per-trigger", "8MiB"])?;
    ensure!(
        bounded.batch_ms.len() >= 7,
        "60 MB in batches of at most 8 MiB (and one message) took {} batches",
        bounded.batch_ms.len()
    );
    assert_exactly_once(&job, &expected_pairs(&ids, &["c1".into()])).await?;

    // The same input, one unlimited batch, for the figures.
    let other = Job::new(2).await?;
    other.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let unlimited = measured_run(&other, &["--input-topic", &job.input, "--max-bytes-per-trigger", "unlimited"])?;
    for (what, f) in [("8MiB budget", &bounded), ("unlimited", &unlimited)] {
        println!(
            "figures byte budget, {N} campaigns of 200 KiB: {what}: peak RSS {:.1} MiB, run {} ms, {} batches, batch duration_ms {:?}",
            f.peak_rss_mib,
            f.run_ms,
            f.batch_ms.len(),
            f.batch_ms
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_batch_larger_than_the_budget_stops_its_replay_saying_how_to_finish_it() -> Result<()> {
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let ids = produce_large(&job, 20)?; // 4 MB
    let mut child =
        spawn(&job, &["--trigger", "once", "--max-bytes-per-trigger", "unlimited"], Some("after-write-ahead"))?;
    let status = wait(&mut child, std::time::Duration::from_secs(60))?;
    ensure_crashed_at(&job, status, "after-write-ahead", 0)?;

    let mut child = spawn(&job, &["--trigger", "once", "--max-bytes-per-trigger", "1MiB"], None)?;
    let status = wait(&mut child, std::time::Duration::from_secs(60))?;
    let log = child_log(&job);
    ensure!(!status.success(), "the replay over the budget should stop:\n{log}");
    ensure!(
        log.contains("batch 0, planned before this run (offsets/0), holds more than the budget of 1MiB")
            && log.contains("start once with a larger --max-bytes-per-trigger"),
        "{log}"
    );
    ensure!(job.db.feedback().await?.is_empty(), "the refused replay wrote rows");

    run_to_completion(&job, &["--max-bytes-per-trigger", "unlimited"])?;
    assert_exactly_once(&job, &expected_pairs(&ids, &["c1".into()])).await?;
    Ok(())
}
