//! Outages while a query runs: Postgres connections cut in the middle of a
//! batch's COPY, and the Kafka broker (a private Apache Kafka broker,
//! SIGKILLed and started again on its data) down during and between
//! batches. Each is retried with back-off; both sinks end up holding every
//! row once. Request errors a real broker cannot be made to return are
//! injected on librdkafka's mock cluster.

use std::time::Duration;

use anyhow::Result;

use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

async fn feedback_rows(job: &Job) -> Result<usize> {
    Ok(job.db.feedback().await?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_mid_copy_are_retried_exactly_once() -> Result<()> {
    let job = Job::new(1).await?;
    let clients = ["c1".to_string(), "c2".to_string()];
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let running = job.start(&["--trigger", "100ms"])?;
    let first = produce_wave(&job, "first", 3)?;
    wait_until("the first wave", Duration::from_secs(30), async || Ok(feedback_rows(&job).await? == 6)).await?;

    // The next batch's COPY waits on a lock; then every connection is cut.
    let locker = connect(&job.db.url).await?;
    locker.batch_execute("BEGIN; LOCK TABLE subscribers_feedback IN SHARE MODE").await?;
    let second = produce_wave(&job, "second", 3)?;
    let copying = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1
                   AND query LIKE 'COPY subscribers_feedback%' AND wait_event_type = 'Lock'";
    wait_until("a COPY waiting on the lock", Duration::from_secs(30), async || {
        Ok(job.db.client.query_one(copying, &[&job.db.schema]).await?.get::<_, i64>(0) == 1)
    })
    .await?;
    assert!(job.db.terminate_other_connections().await? >= 2, "the COPY's and the locker's connections were cut");
    drop(locker);

    let third = produce_wave(&job, "third", 2)?;
    wait_until("every wave", Duration::from_secs(60), async || Ok(feedback_rows(&job).await? >= 16)).await?;
    let summary = running.stop().await?;
    assert!(summary.failed_attempts >= 1, "the cut COPY failed an attempt, which was retried");
    let all: Vec<String> = first.into_iter().chain(second).chain(third).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &clients)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_during_and_between_batches_is_retried_exactly_once() -> Result<()> {
    let broker = Broker::start_private()?;
    let job = Job::on(Kafka::on(&broker.plaintext)?, 1).await?;
    let clients = ["c1".to_string()];
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let running = job.start(&["--trigger", "100ms", "--kafka-timeout", "2s", "--max-retries", "30"])?;
    let first = produce_wave(&job, "first", 3)?;
    wait_until("the first wave", Duration::from_secs(30), async || Ok(feedback_rows(&job).await? == 3)).await?;

    // A batch whose Postgres write is held up: Kafka commits it, then the
    // broker goes down while the batch is still in flight (the batch then
    // completes: its commit log is local).
    let locker = connect(&job.db.url).await?;
    locker.batch_execute("BEGIN; LOCK TABLE subscribers_feedback IN SHARE MODE").await?;
    let second = produce_wave(&job, "second", 3)?;
    wait_until("a batch of the second wave in Kafka", Duration::from_secs(30), async || {
        Ok(job.output_messages()?.len() > 3)
    })
    .await?;
    broker.kill()?;
    locker.batch_execute("COMMIT").await?;
    wait_until("that batch in Postgres", Duration::from_secs(30), async || Ok(feedback_rows(&job).await? > 3)).await?;
    // Planning the next batches fails while the broker is away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.resume()?;

    // The query is stopped once both sinks hold the third wave: Postgres
    // alone is not enough, since a batch can commit there while its Kafka
    // transaction times out on the restarted broker and waits for a retry.
    let third = produce_wave(&job, "third", 2)?;
    wait_until("the third wave in both sinks", Duration::from_secs(90), async || {
        Ok(feedback_rows(&job).await? == 8 && job.output_messages()?.len() == 8)
    })
    .await?;
    let summary = running.stop().await?;
    assert!(summary.failed_attempts >= 1, "the outage failed attempts, which were retried");
    let all: Vec<String> = first.into_iter().chain(second).chain(third).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &clients)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_request_errors_are_retried_exactly_once() -> Result<()> {
    use rdkafka::types::{RDKafkaApiKey as Api, RDKafkaRespErr as E};
    // Only the mock injects errors; it proves the retries, not exactly-once
    // (it cannot abort), which the real-broker tests prove.
    let job = Job::on_mock(1).await?;
    let clients = ["c1".to_string(), "c2".to_string()];
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let ids = produce_wave(&job, "campaign", 6)?;
    let cluster = job.kafka.cluster();
    // Planning (ListOffsets), reading (Fetch: a dropped connection), writing
    // (Produce) and committing (EndTxn) each fail a few times.
    cluster.request_errors(Api::ListOffsets, &[E::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE; 2]);
    cluster.request_errors(Api::Fetch, &[E::RD_KAFKA_RESP_ERR__TRANSPORT]);
    cluster.request_errors(Api::Produce, &[E::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 2]);
    cluster.request_errors(Api::EndTxn, &[E::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE]);
    let summary = job
        .run_available_now(&["--max-offsets-per-trigger", "2", "--kafka-timeout", "3s", "--max-retries", "10"])
        .await?;
    assert!(summary.failed_attempts >= 1, "the refused ListOffsets failed a planning attempt, which was retried");
    assert_exactly_once(&job, &expected_pairs(&ids, &clients)).await?;
    Ok(())
}
