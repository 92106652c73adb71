//! A query can be stopped and started again at every stage of its life, with
//! the default `--starting-offsets latest`: before its first batch, after an
//! empty `available-now` run, after a committed batch and after a crash in
//! the middle of a batch. Each restart is a new `sparklet` process.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::child::*;
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

/// Runs the binary with `extra` until it exits; it must exit 0.
fn run_ok(job: &Job, extra: &[&str]) -> Result<()> {
    let mut args = vec!["--starting-offsets", "latest"];
    args.extend_from_slice(extra);
    let status = wait(&mut spawn(job, &args, None)?, Duration::from_secs(60))?;
    ensure!(status.success(), "run {extra:?} failed ({status}):\n{}", child_log(job));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_at_every_stage_of_a_query() -> Result<()> {
    let job = Job::new(2).await?;
    let clients = vec!["c1".to_string(), "c2".to_string()];
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "before-start", 0, FOREVER)])?;
    let produce =
        |id: &str, partition: i32| job.kafka.produce(&job.input, partition, &[campaign(RESTAURANT, id, 0, FOREVER)]);

    // Before the first batch: `latest` is resolved once, into sources/0.
    run_ok(&job, &["--trigger", "available-now"])?;
    ensure!(job.checkpoint.path().join("sources/0").exists() && !job.checkpoint.path().join("offsets/0").exists());
    run_ok(&job, &["--trigger", "once"])?;
    run_ok(&job, &["--trigger", "available-now"])?;

    // After a committed batch: data produced after the first start is read.
    produce("first", 0)?;
    run_ok(&job, &["--trigger", "once"])?;
    ensure!(job.checkpoint.path().join("commits/0").exists(), "{}", child_log(&job));
    run_ok(&job, &["--trigger", "available-now"])?;
    assert_exactly_once(&job, &expected_pairs(&["first".into()], &clients)).await?;

    // After a crash in the middle of a batch (Postgres committed; Kafka's
    // transaction may or may not have): batch 1, after batch 0 of "first".
    produce("second", 1)?;
    let status = wait(&mut spawn(&job, &["--trigger", "once"], Some("after-pg-commit"))?, Duration::from_secs(60))?;
    ensure_crashed_at(&job, status, "after-pg-commit", 1)?;
    run_ok(&job, &["--trigger", "available-now"])?;
    assert_exactly_once(&job, &expected_pairs(&["first".into(), "second".into()], &clients)).await?;

    // After an empty available-now run, twice, then new data again.
    run_ok(&job, &["--trigger", "available-now"])?;
    run_ok(&job, &["--trigger", "available-now"])?;
    produce("third", 0)?;
    run_ok(&job, &["--trigger", "available-now"])?;
    let all = ["first".into(), "second".into(), "third".into()];
    assert_exactly_once(&job, &expected_pairs(&all, &clients)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_checkpoint_exits_naming_the_first() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let mut first = spawn(&job, &["--trigger", "1s"], None)?;
    let _log = LogOnFailure(&job);
    for _ in 0..500 {
        if child_log(&job).contains("query started") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second =
        std::process::Command::new(env!("CARGO_BIN_EXE_sparklet")).args(job.args(&["--trigger", "1s"])).output()?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    ensure!(!second.status.success(), "{stderr}");
    ensure!(stderr.contains("is in use by another sparklet process"), "{stderr}");
    ensure!(stderr.contains(&format!("pid {}", first.id())), "names the holder: {stderr}");
    ensure!(first.try_wait()?.is_none(), "the first instance runs on");
    signal(&first, "TERM")?;
    ensure!(wait(&mut first, Duration::from_secs(30))?.success());
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "after", 0, FOREVER)])?;
    run_ok(&job, &["--trigger", "available-now"])?;
    assert_exactly_once(&job, &expected_pairs(&["after".into()], &["c1".to_string()])).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_input_topic_is_refused() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "first", 0, FOREVER)])?;
    job.run_available_now(&[]).await?;
    let other = unique("other_in");
    job.kafka.create_topic(&other, 1)?;
    let err = match job.run_available_now(&["--input-topic", &other]).await {
        Ok(summary) => anyhow::bail!("expected a refusal, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains(&job.input) && err.contains(&other) && err.contains("--checkpoint-dir"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_input_topic_stops_the_query_unless_data_loss_is_allowed() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let before: Vec<_> = (0..5).map(|i| campaign(RESTAURANT, &format!("old-{i}"), 0, FOREVER)).collect();
    job.kafka.produce(&job.input, 0, &before)?;
    job.run_available_now(&[]).await?;
    // The input topic deleted and created again: it now ends at 2, before 5.
    let recreated = &job.kafka;
    recreated.delete_topic(&job.input)?;
    recreated.create_topic(&job.input, 1)?;
    recreated.produce(
        &job.input,
        0,
        &[campaign(RESTAURANT, "new-0", 0, FOREVER), campaign(RESTAURANT, "new-1", 0, FOREVER)],
    )?;
    let bootstrap = recreated.bootstrap();
    let err = match job.run_available_now(&["--bootstrap-servers", &bootstrap]).await {
        Ok(summary) => anyhow::bail!("expected a data-loss stop, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("data loss") && err.contains("now ends at 2") && err.contains("--fail-on-data-loss false"),
        "{err}"
    );
    ensure!(!job.checkpoint.path().join("offsets/1").exists(), "nothing planned");
    let summary = job.run_available_now(&["--bootstrap-servers", &bootstrap, "--fail-on-data-loss", "false"]).await?;
    ensure!(summary.input_rows == 2, "the recreated topic is read from its start: {summary:?}");
    let out = recreated.read_committed(&job.output)?;
    let mut ids: Vec<&str> = out.iter().map(|(_, v)| v["adv_campaign_id"].as_str().unwrap_or("")).collect();
    ids.sort();
    ensure!(ids == ["new-0", "new-1", "old-0", "old-1", "old-2", "old-3", "old-4"], "{ids:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_batch_whose_input_is_gone_is_never_written_differently() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let before: Vec<_> = (0..4).map(|i| campaign(RESTAURANT, &format!("old-{i}"), 0, FOREVER)).collect();
    job.kafka.produce(&job.input, 0, &before)?;
    // Postgres commits batch 0 (4 rows), then the process dies.
    let mut child = spawn(&job, &["--trigger", "available-now"], Some("after-pg-commit@1"))?;
    ensure_crashed_at(&job, wait(&mut child, Duration::from_secs(60))?, "after-pg-commit", 0)?;

    // The input topic is deleted and created again with fewer messages.
    let recreated = &job.kafka;
    recreated.delete_topic(&job.input)?;
    recreated.create_topic(&job.input, 1)?;
    recreated.produce(&job.input, 0, &before[..2])?;
    let bootstrap = recreated.bootstrap();
    for allow_loss in ["true", "false"] {
        let err = match job
            .run_available_now(&["--bootstrap-servers", &bootstrap, "--fail-on-data-loss", allow_loss])
            .await
        {
            Ok(summary) => anyhow::bail!("expected a refusal, got {summary:?}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(err.contains("can no longer be read back") && err.contains("postgres already holds it"), "{err}");
    }
    assert_eq!(job.db.feedback().await?.len(), 4, "Postgres keeps the first version only");
    // Kafka holds batch 0 as first written (its transaction may have
    // committed before the crash, beside Postgres's) or nothing of it:
    // nothing is written from what is left.
    let mut kafka: Vec<String> = recreated
        .read_committed(&job.output)?
        .iter()
        .map(|(_, v)| v["adv_campaign_id"].as_str().unwrap_or("").to_string())
        .collect();
    kafka.sort();
    ensure!(kafka.is_empty() || kafka == ["old-0", "old-1", "old-2", "old-3"], "{kafka:?}");
    Ok(())
}
