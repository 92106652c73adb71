//! A batch whose output is larger than what sparklet computes before the
//! sinks start (65,536 rows) is streamed to both sinks chunk by chunk while
//! DataFusion computes it; a failure after the sinks started commits nothing.

use std::collections::HashSet;

use anyhow::{bail, ensure, Result};

use crate::support::*;

/// Subscribers of the one restaurant: the output of one campaign.
const SUBSCRIBERS: i64 = 70_000;

/// A job whose one campaign fans out to [`SUBSCRIBERS`] rows, and an output
/// output topic of 12 partitions.
async fn job_with_a_wide_campaign() -> Result<(Job, String)> {
    let job = Job::new(1).await?;
    let output = format!("{}-wide", job.output);
    job.kafka.create_topic(&output, 12)?;
    job.db
        .client
        .execute(
            "INSERT INTO subscribers_restaurants (client_id, restaurant_id)
             SELECT 'client-' || lpad(i::text, 6, '0'), $1 FROM generate_series(1, $2) i",
            &[&RESTAURANT, &(SUBSCRIBERS as i32)],
        )
        .await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "wide", 0, FOREVER)])?;
    Ok((job, output))
}

/// (rows, distinct clients) in `subscribers_feedback`.
async fn feedback_counts(job: &Job) -> Result<(i64, i64)> {
    let row =
        job.db.client.query_one("SELECT count(*), count(DISTINCT client_id) FROM subscribers_feedback", &[]).await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_larger_than_the_head_streams_to_both_sinks_exactly_once() -> Result<()> {
    let (job, output) = job_with_a_wide_campaign().await?;
    let summary = job.run_available_now(&["--output-topic", &output]).await?;
    assert_eq!((summary.batches, summary.output_rows), (1, SUBSCRIBERS as u64));
    assert_eq!(feedback_counts(&job).await?, (SUBSCRIBERS, SUBSCRIBERS));
    assert_wide_output(&job, &output)
}

/// The failing row is the table's last (subscribers are cached in
/// restaurant, client order and the join keeps that order), so the failure
/// comes after both sinks started writing: Postgres rolls back, and the
/// Kafka transaction is aborted, its records hidden from `read_committed`
/// readers; after the fix each sink holds every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_failure_after_the_sinks_started_commits_nothing_and_a_fix_replays_it() -> Result<()> {
    let (job, output) = job_with_a_wide_campaign().await?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    let step = sql.path().join("20_feedback.sql");
    let original = std::fs::read_to_string(&step)?;
    let last = format!("client-{SUBSCRIBERS:06}");
    let failing = original.replace(
        "CAST($now AS INT) AS trigger_datetime_created",
        &format!("CAST(CASE WHEN s.client_id = '{last}' THEN 'late' ELSE CAST($now AS VARCHAR) END AS INT) AS trigger_datetime_created"),
    );
    ensure!(failing != original, "the SQL to break was found");
    std::fs::write(&step, &failing)?;
    let args = ["--output-topic", output.as_str(), "--sql-dir", &sql.path().display().to_string()];

    let err = match job.run_available_now(&args).await {
        Ok(summary) => bail!("expected a SQL failure, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("20_feedback.sql")
            && err.contains("batch 0")
            && err.contains("nothing of the batch was committed"),
        "{err}"
    );
    assert_eq!(feedback_counts(&job).await?, (0, 0), "Postgres rolled the batch back");
    assert!(!job.checkpoint.path().join("commits/0").exists());
    assert!(job.kafka.read_committed(&output)?.is_empty(), "the Kafka transaction was aborted");

    std::fs::write(&step, &original)?;
    let summary = job.run_available_now(&args).await?;
    assert_eq!((summary.batches, summary.output_rows), (1, SUBSCRIBERS as u64), "the batch replayed");
    assert_eq!(feedback_counts(&job).await?, (SUBSCRIBERS, SUBSCRIBERS));
    assert_wide_output(&job, &output)
}

/// The output topic holds one message per subscriber, keyed by its client.
fn assert_wide_output(job: &Job, output: &str) -> Result<()> {
    let messages = job.kafka.read_committed(output)?;
    let clients: HashSet<&str> = messages.iter().filter_map(|(_, v)| v["client_id"].as_str()).collect();
    assert_eq!((messages.len(), clients.len()), (SUBSCRIBERS as usize, SUBSCRIBERS as usize));
    ensure!(messages.iter().all(|(key, v)| v["client_id"] == key.as_str()), "every message is keyed by its client");
    Ok(())
}
