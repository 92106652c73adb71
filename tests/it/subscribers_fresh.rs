//! `--subscribers-refresh on-change`: the trigger installed at start, a
//! subscriber inserted mid-run used by the next batch, changes loaded in the
//! background on a notification and after the listener reconnects.

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::support::*;

/// On change, with the slow periodic check out of the way (1 h), so only
/// notifications, reconnects and the check before a plan can reload.
const ON_CHANGE: [&str; 6] =
    ["--subscribers-refresh", "on-change", "--subscribers-version-check", "1h", "--subscribers-max-staleness", "2h"];

fn snapshots(job: &Job) -> usize {
    std::fs::read_dir(job.checkpoint.path().join("snapshots")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_inserted_mid_run_is_used_by_the_next_batch() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let progress = job.checkpoint.path().join("progress.jsonl");
    let mut args = vec!["--trigger", "0s", "--progress-json", progress.to_str().unwrap()];
    args.extend(ON_CHANGE);
    let running = job.start(&args)?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "before", 0, FOREVER)])?;
    wait_until("the first batch", Duration::from_secs(30), async || Ok(job.db.feedback().await?.len() == 1)).await?;

    // Committed, then at once a campaign: the batch planned after the
    // commit must join with the new row, notification or not.
    job.db.add_subscribers(RESTAURANT, &["c2"]).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "after", 0, FOREVER)])?;
    wait_until("the second batch", Duration::from_secs(30), async || Ok(job.db.feedback().await?.len() >= 3)).await?;
    running.stop().await?;

    let rows = job.db.feedback().await?;
    let after: Vec<&str> = rows
        .iter()
        .filter(|r| r["adv_campaign_id"] == "after")
        .map(|r| r["client_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(after, ["c1", "c2"]);
    let records: Vec<Value> =
        std::fs::read_to_string(&progress)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let versions: Vec<&Value> = records.iter().map(|r| &r["subscribers"]["version"]).collect();
    assert_eq!(versions, [&serde_json::json!(0), &serde_json::json!(1)], "{records:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_loaded_in_the_background_on_notification_and_after_a_reconnect() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    // One trigger at start, then none for 10 minutes: no plan (and so no
    // version check before a plan) can load what follows.
    let mut args = vec!["--trigger", "10m"];
    args.extend(ON_CHANGE);
    let running = job.start(&args)?;
    wait_until("the first snapshot", Duration::from_secs(30), async || Ok(snapshots(&job) == 1)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // the first trigger is done

    // No batch runs: only the notification can cause this load.
    job.db.add_subscribers(RESTAURANT, &["c2"]).await?;
    wait_until("the notified change loaded", Duration::from_secs(10), async || Ok(snapshots(&job) == 2)).await?;

    // The listener's connection is cut; a change made meanwhile is found
    // when it reconnects (its notification may never come).
    ensure!(job.db.terminate_other_connections().await? >= 1, "no listener connection to cut");
    job.db.add_subscribers(RESTAURANT, &["c3"]).await?;
    wait_until("the change loaded after reconnecting", Duration::from_secs(20), async || Ok(snapshots(&job) == 3))
        .await?;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_trigger_counts_each_writing_transaction_once_when_it_commits() -> Result<()> {
    let job = Job::new(1).await?;
    let sql = std::fs::read_to_string(repo_path("sql/subscribers_on_change.sql"))?;
    job.db.client.batch_execute(&sql).await?;
    job.db.client.batch_execute(&sql).await?; // idempotent
    let other = connect(&job.db.url).await?;
    let version = async || -> Result<i64> {
        Ok(other.query_one("SELECT version FROM sparklet_subscribers_version", &[]).await?.get(0))
    };
    assert_eq!(version().await?, 0);
    let insert = "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ('a', 'r'), ('b', 'r')";
    job.db.client.batch_execute(&format!("BEGIN; {insert}; {insert}")).await?;
    assert_eq!(version().await?, 0, "not before the commit");
    job.db.client.batch_execute("COMMIT").await?;
    assert_eq!(version().await?, 1, "two statements of two rows in one transaction are one change");
    // A writer whose search_path does not name the schema still bumps it.
    let schema = &job.db.schema;
    let elsewhere =
        format!("SET search_path TO public; DELETE FROM {schema}.subscribers_restaurants WHERE client_id = 'a'");
    other.batch_execute(&elsewhere).await?;
    other.batch_execute(&format!("SET search_path TO {schema}")).await?;
    assert_eq!(version().await?, 2);
    job.db.client.batch_execute("TRUNCATE subscribers_restaurants").await?;
    assert_eq!(version().await?, 3);
    // Two writers with open transactions do not wait for each other.
    job.db.client.batch_execute(&format!("BEGIN; {insert}")).await?;
    tokio::time::timeout(Duration::from_secs(5), other.batch_execute(insert)).await??;
    job.db.client.batch_execute("COMMIT").await?;
    assert_eq!(version().await?, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_cause_no_reload_and_no_writer_can_silence_its_change() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let mut args = vec!["--trigger", "10m"];
    args.extend(ON_CHANGE);
    let running = job.start(&args)?;
    wait_until("the first snapshot", Duration::from_secs(30), async || Ok(snapshots(&job) == 1)).await?;

    // Any role that can connect can NOTIFY: a flood naming a huge version.
    // A reload scans the table (the same rows make the same snapshot file, so
    // the table's scan count is what shows a reload).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = table_scans(&job).await?;
    for _ in 0..50 {
        let forged = format!("NOTIFY sparklet_subscribers_changed, '{}:999999999'", job.db.schema);
        job.db.client.batch_execute(&forged).await?;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reloads = table_scans(&job).await? - before;
    ensure!(reloads == 0, "forged notifications reloaded the table {reloads} times");

    // A writer that sets the old "already bumped" flag (for the session,
    // or to its own transaction id) is still counted.
    job.db
        .client
        .batch_execute(&format!(
            "SET sparklet.subscribers_bumped = 'yes';
             BEGIN;
             SELECT set_config('sparklet.subscribers_bumped', pg_current_xact_id()::text, true);
             INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ('c2', '{RESTAURANT}');
             COMMIT;"
        ))
        .await?;
    wait_until("the change loaded", Duration::from_secs(10), async || Ok(snapshots(&job) == 2)).await?;
    running.stop().await?;
    Ok(())
}

/// How often `subscribers_restaurants` was scanned (Postgres's statistics,
/// which a backend reports within a second or so).
async fn table_scans(job: &Job) -> Result<i64> {
    job.db.client.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    let row = job
        .db
        .client
        .query_one(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables
             WHERE relid = 'subscribers_restaurants'::regclass",
            &[],
        )
        .await?;
    Ok(row.get(0))
}
