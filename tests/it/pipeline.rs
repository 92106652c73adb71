//! The job end to end: Kafka in, SQL, Kafka and Postgres out.

use anyhow::Result;
use serde_json::{json, Value};

use crate::support::*;

const CLIENTS: [&str; 3] = [
    "023e4567-e89b-12d3-a456-426614174000",
    "023e4567-e89b-12d3-a456-426614174001",
    "023e4567-e89b-12d3-a456-426614174002",
];

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The output row the example message gives for `client`, given `trigger`.
fn expected_row(client: &str, trigger: i64) -> Value {
    let mut row = example_message();
    row["client_id"] = client.into();
    row["trigger_datetime_created"] = trigger.into();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_message_reaches_both_sinks_for_every_subscriber() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS).await?;
    job.db.add_subscribers("other-restaurant", &["someone-else"]).await?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    let before = now();
    let summary = job.run_available_now(&[]).await?;
    let after = now();
    assert_eq!((summary.batches, summary.input_rows, summary.output_rows), (1, 1, 3));

    let messages = job.output_messages()?;
    assert_eq!(messages.len(), 3);
    let trigger = messages[0].1["trigger_datetime_created"].as_i64().unwrap();
    assert!((before..=after).contains(&trigger), "{trigger} not in {before}..={after}");
    let mut keys: Vec<&str> = messages.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, CLIENTS);
    for (key, value) in &messages {
        assert_eq!(value, &expected_row(key, trigger), "kafka message for {key}");
        let fields: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 10, "exactly the output fields: {fields:?}");
    }

    let rows = job.db.feedback().await?;
    assert_eq!(rows.len(), 3);
    for (row, client) in rows.iter().zip(CLIENTS) {
        let mut expected = expected_row(client, trigger);
        expected["feedback"] = Value::Null;
        assert_eq!(row, &expected, "postgres row for {client}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_started_campaigns_produce_nothing() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS).await?;
    let t = now();
    job.kafka.produce(
        &job.input,
        0,
        &[
            campaign(RESTAURANT, "expired", t - 7200, t - 3600),
            campaign(RESTAURANT, "future", t + 3600, t + 7200),
            campaign(RESTAURANT, "valid", t - 60, t + 3600),
        ],
    )?;
    let summary = job.run_available_now(&[]).await?;
    assert_eq!((summary.input_rows, summary.output_rows), (3, 3));
    assert_eq!(summary.expired_rows, 1, "the expired campaign is counted, not dropped without a trace");
    let ids: Vec<String> = job.output_messages()?.iter().map(|(_, v)| v["adv_campaign_id"].to_string()).collect();
    assert_eq!(ids, vec!["\"valid\""; 3]);
    let rows = job.db.feedback().await?;
    assert_eq!(rows.len(), 3, "the valid campaign for each subscriber: {rows:?}");
    assert!(rows.iter().all(|r| r["adv_campaign_id"] == "valid"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restaurant_without_subscribers_produces_nothing() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers("another-restaurant", &CLIENTS).await?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    let summary = job.run_available_now(&[]).await?;
    assert_eq!((summary.batches, summary.input_rows, summary.output_rows), (1, 1, 0));
    assert!(job.output_messages()?.is_empty());
    assert!(job.db.feedback().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_partition_in_capped_batches() -> Result<()> {
    let job = Job::new(3).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..2]).await?;
    for partition in 0..3 {
        let msgs: Vec<Value> =
            (0..4).map(|i| campaign(RESTAURANT, &format!("p{partition}-{i}"), 0, i64::MAX / 2)).collect();
        job.kafka.produce(&job.input, partition, &msgs)?;
    }
    let summary = job.run_available_now(&["--max-offsets-per-trigger", "5"]).await?;
    assert_eq!(summary.input_rows, 12);
    assert_eq!(summary.batches, 3, "12 offsets in batches of at most 5");
    assert_eq!(summary.output_rows, 24);
    let mut ids: Vec<String> =
        job.output_messages()?.iter().map(|(_, v)| v["adv_campaign_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let expected: Vec<String> =
        (0..3).flat_map(|p| (0..4).flat_map(move |i| [format!("p{p}-{i}"), format!("p{p}-{i}")])).collect();
    assert_eq!(ids, expected, "each campaign once per subscriber (2), none repeated");
    assert_eq!(job.db.feedback().await?.len(), 24);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_is_counted_and_the_rest_of_the_batch_flows() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..1]).await?;
    let good = example_message().to_string();
    let mut wrong_type = example_message();
    wrong_type["datetime_created"] = json!("yesterday");
    let wrong_type = wrong_type.to_string();
    job.kafka.produce_raw(&job.input, 0, &[good.as_bytes(), b"{oops", wrong_type.as_bytes(), good.as_bytes()])?;
    let progress = job.checkpoint.path().join("progress.jsonl");
    let summary = job.run_available_now(&["--progress-json", progress.to_str().unwrap()]).await?;
    assert_eq!((summary.input_rows, summary.malformed_rows, summary.output_rows), (4, 2, 2));
    assert_eq!(job.output_messages()?.len(), 2);
    assert_eq!(job.db.feedback().await?.len(), 2);
    let record: Value = serde_json::from_str(std::fs::read_to_string(progress)?.lines().next().unwrap())?;
    assert_eq!(record["numMalformedRows"], 2);
    assert_eq!(record["numInputRows"], 4);
    assert_eq!(record["sources"][0]["endOffset"][&job.input]["0"], 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_reprocessing_committed_batches() -> Result<()> {
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..1]).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "first", 0, i64::MAX / 2)])?;
    assert_eq!(job.run_available_now(&[]).await?.output_rows, 1);
    let again = job.run_available_now(&[]).await?;
    assert_eq!(again.batches, 0, "nothing new, nothing run");
    job.kafka.produce(&job.input, 1, &[campaign(RESTAURANT, "second", 0, i64::MAX / 2)])?;
    let third = job.run_available_now(&[]).await?;
    assert_eq!((third.batches, third.output_rows, third.last_batch_id), (1, 1, Some(1)));
    let ids: Vec<Value> = job.output_messages()?.into_iter().map(|(_, v)| v["adv_campaign_id"].clone()).collect();
    assert_eq!(ids, vec![json!("first"), json!("second")]);
    assert_eq!(job.db.feedback().await?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_time_trigger_runs_batches_until_shutdown() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..1]).await?;
    let running = job.start(&["--trigger", "200ms"])?;
    for i in 0..3 {
        job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, &format!("c{i}"), 0, i64::MAX / 2)])?;
        wait_for_rows(&job, i + 1).await?;
    }
    let summary = running.stop().await?;
    assert_eq!(summary.output_rows, 3);
    assert!(summary.batches >= 1);
    assert_eq!(job.output_messages()?.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_connection_is_retried_and_nothing_is_duplicated() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..2]).await?;
    let running = job.start(&["--trigger", "100ms"])?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "before", 0, i64::MAX / 2)])?;
    wait_for_rows(&job, 2).await?;
    assert!(job.db.terminate_other_connections().await? >= 1, "the sink's connection was cut");
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "after", 0, i64::MAX / 2)])?;
    wait_for_rows(&job, 4).await?;
    let summary = running.stop().await?;
    let mut ids: Vec<String> =
        job.db.feedback().await?.iter().map(|r| r["adv_campaign_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["after", "after", "before", "before"]);
    assert_eq!(job.output_messages()?.len(), 4);
    assert!(summary.failed_attempts >= 1, "the cut connection failed a batch, which was retried");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_cache_is_reloaded_every_refresh_interval() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..1]).await?;
    let progress = job.checkpoint.path().join("progress.jsonl");
    let running = job.start(&[
        "--trigger",
        "100ms",
        "--subscribers-refresh",
        "300ms",
        "--progress-json",
        progress.to_str().unwrap(),
    ])?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "first", 0, i64::MAX / 2)])?;
    wait_for_rows(&job, 1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[1..2]).await?;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "second", 0, i64::MAX / 2)])?;
    wait_for_rows(&job, 3).await?;
    running.stop().await?;
    let records: Vec<Value> =
        std::fs::read_to_string(&progress)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let rows: Vec<&Value> = records.iter().map(|r| &r["subscribers"]["numRows"]).collect();
    assert_eq!(rows, [&json!(1), &json!(2)], "each batch reports the cache it joined with");
    assert!(records.iter().all(|r| r["subscribers"]["ageMs"].as_u64().unwrap() < 5_000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_favourite_saved_twice_notifies_once() -> Result<()> {
    favourite_saved_twice_notifies_once(None).await
}

/// The same with a subscribers query in insertion order (repeats not next
/// to each other): the hash-set path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_favourite_saved_twice_notifies_once_whatever_the_query_order() -> Result<()> {
    favourite_saved_twice_notifies_once(Some(
        "SELECT client_id, restaurant_id FROM subscribers_restaurants ORDER BY id",
    ))
    .await
}

async fn favourite_saved_twice_notifies_once(subscribers_sql: Option<&str>) -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2", "c1"]).await?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    let progress = job.checkpoint.path().join("progress.jsonl");
    let sql = tempfile::tempdir()?;
    for entry in std::fs::read_dir(repo_path("sql"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), sql.path().join(entry.file_name()))?;
    }
    if let Some(query) = subscribers_sql {
        std::fs::write(sql.path().join("subscribers.sql"), query)?;
    }
    let sql_dir = sql.path().display().to_string();
    job.run_available_now(&["--progress-json", progress.to_str().unwrap(), "--sql-dir", &sql_dir]).await?;
    let mut clients: Vec<String> =
        job.db.feedback().await?.iter().map(|r| r["client_id"].as_str().unwrap().to_string()).collect();
    clients.sort();
    assert_eq!(clients, ["c1", "c2"]);
    assert_eq!(job.output_messages()?.len(), 2);
    let record: Value = serde_json::from_str(std::fs::read_to_string(&progress)?.lines().next().unwrap())?;
    assert_eq!(record["subscribers"]["numRows"], 2);
    assert_eq!(record["subscribers"]["duplicatesDropped"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_cache_staler_than_allowed_stops_the_run() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &CLIENTS[..1]).await?;
    let args = ["--trigger", "100ms", "--subscribers-refresh", "200ms", "--subscribers-max-staleness", "1s"];
    let running = job.start(&args)?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "first", 0, i64::MAX / 2)])?;
    wait_for_rows(&job, 1).await?;
    job.db.client.batch_execute("ALTER TABLE subscribers_restaurants RENAME TO gone").await?;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let err = match running.stop().await {
        Ok(summary) => anyhow::bail!("the run should have stopped on a stale cache: {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--subscribers-max-staleness 1s") && err.contains("subscribers_restaurants"), "{err}");
    Ok(())
}

async fn wait_for_rows(job: &Job, n: usize) -> Result<()> {
    for _ in 0..200 {
        if job.db.feedback().await?.len() >= n {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("{n} rows did not arrive")
}
