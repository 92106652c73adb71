//! One owner per query, and a checkpoint that cannot silently lie: a paused
//! process (a zombie) that wakes after a new owner took over is fenced in
//! both sinks, a checkpoint older than the sinks is refused, and so is a
//! half-written batch replayed with other SQL files.
//!
//! Here the Postgres owner epoch stops a zombie before it sends to Kafka,
//! and rolls back its Postgres transaction when the owner changed while its
//! COPY ran; a zombie fenced by Kafka itself (paused inside its Kafka
//! transaction) is in `transactions.rs`. Both sinks are checked exactly
//! once on Apache Kafka's own broker, with no allowance.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use crate::child::*;
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

fn produce_campaigns(job: &Job, ids: &[String]) -> Result<()> {
    for id in ids {
        job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, id, 0, FOREVER)])?;
    }
    Ok(())
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Waits until the progress file holds records whose input adds up to `rows`.
fn wait_for_input_rows(progress: &Path, rows: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(progress).unwrap_or_default();
        let seen: u64 = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["numInputRows"].as_u64().unwrap_or(0))
            .sum();
        if seen >= rows {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {rows} input rows processed within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_zombie_is_fenced_by_the_new_owner_in_both_sinks() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let files = tempfile::tempdir()?;
    let (progress_a, progress_b) = (files.path().join("a.jsonl"), files.path().join("b.jsonl"));
    let first = ids("first", 3);
    produce_campaigns(&job, &first)?;

    // A processes the first campaigns, then is paused between batches.
    let progress = progress_a.display().to_string();
    let mut a = spawn(&job, &["--trigger", "200ms", "--progress-json", &progress], None)?;
    wait_for_input_rows(&progress_a, 3, Duration::from_secs(60))?;
    signal(&a, "STOP")?;

    // B starts on a copy of A's checkpoint (another machine, say) and takes over.
    let copy = files.path().join("checkpoint-copy");
    copy_dir(job.checkpoint.path(), &copy)?;
    let (copy, progress) = (copy.display().to_string(), progress_b.display().to_string());
    let mut b = spawn(&job, &["--trigger", "200ms", "--checkpoint-dir", &copy, "--progress-json", &progress], None)?;
    let second = ids("second", 3);
    produce_campaigns(&job, &second)?;
    wait_for_input_rows(&progress_b, 3, Duration::from_secs(60))?;

    // A wakes up, plans a batch of the second campaigns and is fenced.
    signal(&a, "CONT")?;
    let status = wait(&mut a, Duration::from_secs(60))?;
    ensure!(!status.success(), "the zombie must stop:\n{}", child_log(&job));
    ensure!(child_log(&job).contains("fenced by a newer owner"), "{}", child_log(&job));

    let third = ids("third", 2);
    produce_campaigns(&job, &third)?;
    wait_for_input_rows(&progress_b, 5, Duration::from_secs(60))?;
    signal(&b, "TERM")?;
    ensure!(wait(&mut b, Duration::from_secs(30))?.success(), "the owner keeps running:\n{}", child_log(&job));

    let all: Vec<String> = first.into_iter().chain(second).chain(third).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &["c1".to_string(), "c2".to_string()])).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_older_than_the_sinks_is_refused_before_writing() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let first = ids("first", 2);
    produce_campaigns(&job, &first)?;
    job.run_available_now(&[]).await?;
    let backup = tempfile::tempdir()?;
    copy_dir(job.checkpoint.path(), backup.path())?;
    let second = ids("second", 2);
    produce_campaigns(&job, &second)?;
    job.run_available_now(&[]).await?;

    let restored = backup.path().display().to_string();
    let err = match job.run_available_now(&["--checkpoint-dir", &restored]).await {
        Ok(summary) => bail!("expected a refusal, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("up to batch 0") && err.contains("holds batch 1") && err.contains("older than the sinks"),
        "{err}"
    );
    let all: Vec<String> = first.into_iter().chain(second).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &["c1".to_string()])).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_batch_replayed_with_a_changed_job_is_refused() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let first = ids("first", 2);
    produce_campaigns(&job, &first)?;
    let sql = tempfile::tempdir()?;
    copy_dir(&repo_path("sql"), sql.path())?;
    let sql_dir = sql.path().display().to_string();
    // Postgres commits batch 0, then the process dies.
    let mut child = spawn(&job, &["--trigger", "available-now", "--sql-dir", &sql_dir], Some("after-pg-commit@1"))?;
    ensure_crashed_at(&job, wait(&mut child, Duration::from_secs(60))?, "after-pg-commit", 0)?;

    let step = sql.path().join("20_feedback.sql");
    let original = std::fs::read_to_string(&step)?;
    std::fs::write(&step, format!("-- edited\n{original}"))?;
    let err = match job.run_available_now(&["--sql-dir", &sql_dir]).await {
        Ok(summary) => bail!("expected a refusal, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("batch 0 was written to postgres by a job (SQL files, input.sql, job.toml) with fingerprint"),
        "{err}"
    );
    std::fs::write(&step, &original)?;

    // A changed declaration is a changed job too; a comment in job.toml is not.
    let input = sql.path().join("input.sql");
    let declared = std::fs::read_to_string(&input)?;
    std::fs::write(&input, declared.replace("adv_campaign_owner TEXT NOT NULL", "adv_campaign_owner TEXT"))?;
    let err = match job.run_available_now(&["--sql-dir", &sql_dir]).await {
        Ok(summary) => bail!("expected a refusal, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("batch 0 was written to postgres by a job"), "{err}");
    std::fs::write(&input, declared)?;
    let toml = sql.path().join("job.toml");
    std::fs::write(&toml, format!("# a comment\n{}", std::fs::read_to_string(&toml)?))?;
    job.run_available_now(&["--sql-dir", &sql_dir]).await?;
    assert_exactly_once(&job, &expected_pairs(&first, &["c1".to_string()])).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_owner_changed_during_its_copy_is_rolled_back() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    let clients = ["c1".to_string(), "c2".to_string()];
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let first = ids("first", 2);
    produce_campaigns(&job, &first)?;
    // The batch's COPY waits on a lock, after the checks before it started.
    let locker = connect(&job.db.url).await?;
    locker.batch_execute("BEGIN; LOCK TABLE subscribers_feedback IN SHARE MODE").await?;
    let mut run = spawn(&job, &["--trigger", "available-now"], None)?;
    let copying = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1
                   AND query LIKE 'COPY subscribers_feedback%' AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while job.db.client.query_one(copying, &[&job.db.schema]).await?.get::<_, i64>(0) == 0
        || job.output_messages()?.len() < 4
    {
        ensure!(Instant::now() < deadline, "no COPY waiting with Kafka committed:\n{}", child_log(&job));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A newer owner claims the query meanwhile (as a run on a copied checkpoint would).
    job.db.client.execute("UPDATE sparklet_owners SET epoch = epoch + 1", &[]).await?;
    locker.batch_execute("COMMIT").await?;

    ensure!(!wait(&mut run, Duration::from_secs(30))?.success(), "the fenced run must stop:\n{}", child_log(&job));
    ensure!(child_log(&job).contains("postgres: this process was fenced by a newer owner"), "{}", child_log(&job));
    assert!(job.db.feedback().await?.is_empty(), "its Postgres transaction was rolled back");
    // The owner's next run replays the batch: Postgres gets it once, Kafka keeps its one copy.
    run_to_completion(&job, &[])?;
    assert_exactly_once(&job, &expected_pairs(&first, &clients)).await?;
    Ok(())
}
