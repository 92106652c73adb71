//! Kafka's transactions, proven on Apache Kafka's own broker (which the mock
//! cluster could not: it cannot abort a transaction, fence a producer, hold
//! a last stable offset or store transactional offsets):
//!
//! - a batch killed before its commit is invisible to `read_committed`
//!   readers (a `read_uncommitted` reader sees it) and lands once after the
//!   restart;
//! - a zombie paused inside its transaction is fenced by the new owner's
//!   `init_transactions`: what it sent is aborted, its commit fails;
//! - another producer's open transaction on the output topic does not hold
//!   up recovery, and one on the marker topic fails it in time, saying why;
//! - the input offsets a lag tool sees move with a commit, not with an abort;
//! - a compacted marker topic still tells recovery the last batch.
//!
//! Each test checks both sinks exactly once where that applies. The zombie
//! pauses itself with `SPARKLET_STOP_AT` ([`sparklet::crash`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::child::{child_log, run_to_completion, signal, spawn, wait, LogOnFailure};
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::isolation::{read_as, stable_and_high, Seen};
use crate::support::*;

/// Generous limit for one sparklet run of a few batches.
const RUN_LIMIT: Duration = Duration::from_secs(90);

fn of_batch(seen: &[Seen], batch: &str) -> Vec<Seen> {
    seen.iter().filter(|s| s.batch.as_deref() == Some(batch)).cloned().collect()
}

fn sorted_pairs(seen: &[Seen]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = seen.iter().map(|s| s.pair.clone()).collect();
    pairs.sort();
    pairs
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn produce_campaigns(job: &Job, partition: i32, ids: &[String]) -> Result<()> {
    let messages: Vec<_> = ids.iter().map(|id| campaign(RESTAURANT, id, 0, FOREVER)).collect();
    job.kafka.produce(&job.input, partition, &messages)
}

fn clients() -> Vec<String> {
    vec!["c1".to_string(), "c2".to_string()]
}

/// The query id the job's checkpoint holds (`metadata`).
fn query_id(checkpoint: &Path) -> Result<String> {
    let text = std::fs::read_to_string(checkpoint.join("metadata"))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    Ok(json["id"].as_str().context("metadata without an id")?.to_string())
}

/// Starts the sparklet binary with `env` added, stderr appended to `log`.
fn spawn_logged(job: &Job, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sparklet"));
    cmd.args(job.args(extra))
        .stdout(Stdio::null())
        .stderr(file)
        .env("RUST_LOG", "info,rdkafka=warn")
        .env_remove("SPARKLET_CRASH_AT")
        .env_remove("SPARKLET_STOP_AT")
        .envs(env.iter().copied());
    Ok(cmd.spawn()?)
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Runs the binary for `job` until it crashes at `point`.
fn crash_at(job: &Job, extra: &[&str], point: &str) -> Result<()> {
    let mut args = vec!["--trigger", "available-now"];
    args.extend_from_slice(extra);
    let status = wait(&mut spawn(job, &args, Some(point))?, RUN_LIMIT)?;
    ensure!(!status.success(), "the run should have crashed at {point}:\n{}", child_log(job));
    let name = point.split('@').next().unwrap_or(point);
    ensure!(child_log(job).contains(&format!("crash point {name} reached")), "{}", child_log(job));
    Ok(())
}

/// A producer of another application, with a transaction left open on
/// `topic` holding one record.
fn open_foreign_transaction(bootstrap: &str, topic: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", unique("another-application"))
        // Open for the whole test: the broker would abort it after this.
        .set("transaction.timeout.ms", "600000")
        .create()?;
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout)?;
    producer.begin_transaction()?;
    let record = BaseRecord::to(topic).key("another-application").payload(r#"{"other":"application"}"#);
    producer.send(record).map_err(|(e, _)| e)?;
    producer.flush(timeout)?;
    Ok(producer)
}

/// Waits until `log` says the process stopped itself at `point`, and the
/// kernel shows it stopped.
fn wait_until_stopped(child: &Child, log: &Path, point: &str) -> Result<()> {
    let deadline = Instant::now() + RUN_LIMIT;
    let stat = format!("/proc/{}/stat", child.id());
    loop {
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        let stopped = state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T'));
        if stopped && read_log(log).contains(&format!("stop point {point} reached")) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the zombie did not stop at {point}:\n{}", read_log(log));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when dropped: a failed test leaves no stopped
/// zombie behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the progress file holds records whose input adds up to `rows`
/// (fails at once if `child` exits).
fn wait_for_input_rows(child: &mut Child, progress: &Path, rows: u64, log: &Path) -> Result<()> {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("sparklet exited ({status}) before {rows} input rows were processed:\n{}", read_log(log));
        }
        let text = std::fs::read_to_string(progress).unwrap_or_default();
        let seen: u64 = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["numInputRows"].as_u64().unwrap_or(0))
            .sum();
        if seen >= rows {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "only {seen} of {rows} input rows processed:\n{}", read_log(log));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends the Postgres transaction a stopped process left open, as the server
/// would once the connection is cut: a paused process must not hold the
/// owner row or a marker the new owner needs. Returns how many it ended.
async fn end_open_postgres_transactions(job: &Job) -> Result<i64> {
    let row = job
        .db
        .client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid() AND state <> 'idle'",
            &[&job.db.schema],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_batch_is_invisible_to_read_committed_readers_and_replayed_once() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let campaigns = ids("campaign", 4);
    produce_campaigns(&job, 0, &campaigns)?;
    // Batch 0 commits; batch 1 is killed after every record was acknowledged
    // and its offsets added, just before its commit.
    let batches = ["--max-offsets-per-trigger", "2"];
    crash_at(&job, &batches, "kafka-before-commit@2")?;

    let bootstrap = job.kafka.bootstrap();
    let batch_0 = expected_pairs(&campaigns[..2], &clients());
    let batch_1 = expected_pairs(&campaigns[2..], &clients());
    // Its transaction is open: it holds the last stable offset back.
    let (stable, high) = stable_and_high(&bootstrap, &job.output)?;
    ensure!(stable < high, "the killed batch's transaction should be open (LSO {stable}, high watermark {high})");
    let uncommitted = read_as(&bootstrap, &job.output, "read_uncommitted")?;
    assert_eq!(sorted_pairs(&of_batch(&uncommitted, "1")), batch_1, "read_uncommitted sees the killed batch");
    // (Batch 0's commit markers are written just after its commit returned.)
    let committed = eventually("read_committed sees batch 0", || {
        let committed = read_as(&bootstrap, &job.output, "read_committed")?;
        Ok((!of_batch(&committed, "0").is_empty()).then_some(committed))
    })?;
    assert_eq!(of_batch(&committed, "1").len(), 0, "read_committed never sees the killed batch: {committed:?}");
    assert_eq!(sorted_pairs(&committed), batch_0, "read_committed sees batch 0 only");

    run_to_completion(&job, &batches)?;
    assert_exactly_once(&job, &expected_pairs(&campaigns, &clients())).await?;
    // The killed copy is still in the log, aborted: twice there, once visible.
    let killed: BTreeSet<i64> = of_batch(&uncommitted, "1").iter().map(|s| s.offset).collect();
    let committed = read_as(&bootstrap, &job.output, "read_committed")?;
    ensure!(committed.iter().all(|s| !killed.contains(&s.offset)), "an aborted record became visible");
    assert_eq!(of_batch(&read_as(&bootstrap, &job.output, "read_uncommitted")?, "1").len(), 2 * batch_1.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_paused_inside_its_transaction_is_fenced_and_its_records_aborted() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let files = tempfile::tempdir()?;
    let (log_a, log_b) = (files.path().join("zombie.log"), files.path().join("owner.log"));
    let (progress_a, progress_b) = (files.path().join("a.jsonl"), files.path().join("b.jsonl"));
    let bootstrap = job.kafka.bootstrap();
    let first = ids("first", 2);
    produce_campaigns(&job, 0, &first)?;

    // A commits batch 0, then stops itself inside batch 1's Kafka
    // transaction: records acknowledged, offsets added, not committed.
    let progress = progress_a.display().to_string();
    let stop = [("SPARKLET_STOP_AT", "kafka-before-commit@2")];
    let mut a = KillOnDrop(spawn_logged(&job, &["--trigger", "200ms", "--progress-json", &progress], &stop, &log_a)?);
    wait_for_input_rows(&mut a.0, &progress_a, 2, &log_a)?;
    let second = ids("second", 2);
    produce_campaigns(&job, 0, &second)?;
    wait_until_stopped(&a.0, &log_a, "kafka-before-commit")?;
    let sent = of_batch(&read_as(&bootstrap, &job.output, "read_uncommitted")?, "1");
    ensure!(!sent.is_empty(), "the zombie sent batch 1 before it stopped");
    let zombie: BTreeSet<i64> = sent.iter().map(|s| s.offset).collect();
    let ended = end_open_postgres_transactions(&job).await?;
    eprintln!("zombie's open Postgres transactions ended: {ended}");

    // B takes over on a copy of the checkpoint: its init_transactions
    // fences A's producer and aborts A's open transaction.
    let copy = files.path().join("checkpoint-copy");
    copy_dir(job.checkpoint.path(), &copy)?;
    let (copy, progress) = (copy.display().to_string(), progress_b.display().to_string());
    let owner_args = ["--trigger", "200ms", "--checkpoint-dir", &copy, "--progress-json", &progress];
    let mut b = KillOnDrop(spawn_logged(&job, &owner_args, &[], &log_b)?);
    wait_for_input_rows(&mut b.0, &progress_b, 2, &log_b)?;
    let so_far: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once(&job, &expected_pairs(&so_far, &clients())).await?;
    let visible = read_as(&bootstrap, &job.output, "read_committed")?;
    ensure!(visible.iter().all(|s| !zombie.contains(&s.offset)), "the zombie's records are aborted: {visible:?}");

    // A wakes up and tries to commit: fenced, it stops.
    signal(&a.0, "CONT")?;
    let status = wait(&mut a.0, RUN_LIMIT)?;
    let a_log = read_log(&log_a);
    ensure!(!status.success(), "the zombie must stop:\n{a_log}");
    ensure!(a_log.contains("kafka: this process was fenced by a newer owner"), "the zombie says why:\n{a_log}");
    let visible = read_as(&bootstrap, &job.output, "read_committed")?;
    ensure!(visible.iter().all(|s| !zombie.contains(&s.offset)), "nothing of the zombie became visible");

    let third = ids("third", 2);
    produce_campaigns(&job, 0, &third)?;
    wait_for_input_rows(&mut b.0, &progress_b, 4, &log_b)?;
    signal(&b.0, "TERM")?;
    ensure!(wait(&mut b.0, RUN_LIMIT)?.success(), "the owner keeps running:\n{}", read_log(&log_b));
    let all: Vec<String> = so_far.into_iter().chain(third).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &clients())).await?;
    Ok(())
}

/// A job whose batch 0 (two campaigns for c1 and c2) both sinks committed,
/// and whose checkpoint does not record it: the next start recovers it.
async fn batch_0_in_both_sinks_not_in_the_checkpoint() -> Result<(Job, Vec<String>)> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let first = ids("first", 2);
    produce_campaigns(&job, 0, &first)?;
    crash_at(&job, &[], "before-commit-log@1")?;
    Ok((job, first))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_of_another_producer_on_the_output_topic_does_not_hold_up_recovery() -> Result<()> {
    let (job, first) = batch_0_in_both_sinks_not_in_the_checkpoint().await?;
    let _log = LogOnFailure(&job);

    let bootstrap = job.kafka.bootstrap();
    let foreign = open_foreign_transaction(&bootstrap, &job.output)?;
    let second = ids("second", 2);
    produce_campaigns(&job, 0, &second)?;
    run_to_completion(&job, &["--kafka-timeout", "5s"])?;
    let log = child_log(&job);
    ensure!(
        log.contains("kafka batch marker check batch_id=0 latest_committed=Some(0)"),
        "recovery finds batch 0 in the marker topic:\n{log}"
    );
    ensure!(log.matches("batch already committed in sink").count() == 2, "both sinks skipped batch 0:\n{log}");
    let (stable, high) = stable_and_high(&bootstrap, &job.output)?;
    ensure!(stable < high, "the other transaction was open all along (LSO {stable}, high watermark {high})");

    foreign.abort_transaction(Duration::from_secs(30))?;
    let all: Vec<String> = first.into_iter().chain(second).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &clients())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_of_another_producer_on_the_marker_topic_fails_recovery_in_time_saying_why() -> Result<()> {
    let (job, first) = batch_0_in_both_sinks_not_in_the_checkpoint().await?;
    let _log = LogOnFailure(&job);

    let bootstrap = job.kafka.bootstrap();
    let foreign = open_foreign_transaction(&bootstrap, &job.markers)?;
    let log = job.checkpoint.path().join("held.log");
    let mut run = KillOnDrop(spawn_logged(&job, &["--trigger", "available-now", "--kafka-timeout", "3s"], &[], &log)?);
    let status = wait(&mut run.0, RUN_LIMIT).context("recovery must not hang while the marker topic is held")?;
    let said = read_log(&log);
    ensure!(!status.success(), "recovery cannot know what Kafka holds; it must stop:\n{said}");
    let line = said.lines().find(|l| l.starts_with("sparklet: ")).unwrap_or_default();
    for needed in [job.markers.as_str(), "--marker-topic", "3s", "--kafka-timeout", "open transaction"] {
        ensure!(line.contains(needed), "the error names {needed}:\n{said}");
    }
    let (stable, high) = stable_and_high(&bootstrap, &job.markers)?;
    ensure!(stable < high, "the other transaction was open all along (LSO {stable}, high watermark {high})");
    ensure!(job.db.feedback().await?.len() == 4, "nothing was written again");

    // Once the other transaction ends, recovery finds batch 0 and skips it.
    foreign.abort_transaction(Duration::from_secs(30))?;
    run_to_completion(&job, &[])?;
    let log = child_log(&job);
    ensure!(
        log.contains("kafka batch marker check batch_id=0 latest_committed=Some(0)"),
        "recovery finds batch 0 in the marker topic:\n{log}"
    );
    ensure!(log.matches("batch already committed in sink").count() == 2, "both sinks skipped batch 0:\n{log}");
    assert_exactly_once(&job, &expected_pairs(&first, &clients())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lag_tool_sees_the_input_offsets_of_committed_batches_and_not_of_aborted_ones() -> Result<()> {
    let job = Job::new(2).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let broker = Broker::shared()?;
    let (p0, p1) = (ids("p0-first", 3), ids("p1-first", 2));
    produce_campaigns(&job, 0, &p0)?;
    produce_campaigns(&job, 1, &p1)?;
    run_to_completion(&job, &[])?;
    let qid = query_id(job.checkpoint.path())?;
    let group = sparklet::kafka::group_id(&qid);
    let at = |a: i64, b: i64| vec![(job.input.clone(), 0, Some(a)), (job.input.clone(), 1, Some(b))];
    wait_for_offsets(broker, &group, &at(3, 2))?;

    // The next batch is killed with its offsets in its open transaction...
    let (q0, q1) = (ids("p0-second", 2), ids("p1-second", 1));
    produce_campaigns(&job, 0, &q0)?;
    produce_campaigns(&job, 1, &q1)?;
    crash_at(&job, &[], "kafka-before-commit@1")?;
    assert_eq!(broker.committed_offsets(&group)?, at(3, 2), "pending offsets are not committed");
    // ...and aborted, as the next start's init_transactions does.
    let fencer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", job.kafka.bootstrap())
        .set("transactional.id", sparklet::kafka::transactional_id(&qid))
        .create()?;
    fencer.init_transactions(Duration::from_secs(30))?;
    drop(fencer);
    assert_eq!(broker.committed_offsets(&group)?, at(3, 2), "an aborted transaction commits no offsets");

    run_to_completion(&job, &[])?;
    wait_for_offsets(broker, &group, &at(5, 3))?;
    let all: Vec<String> = [p0, p1, q0, q1].concat();
    assert_exactly_once(&job, &expected_pairs(&all, &clients())).await?;
    Ok(())
}

/// Polls `check` every 200 ms until it returns something, for at most 30 s.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check()? {
            return Ok(found);
        }
        ensure!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `kafka-consumer-groups` shows `expected` for `group` (a
/// transaction's offsets are written just after its commit returns).
fn wait_for_offsets(broker: &Broker, group: &str, expected: &[(String, i32, Option<i64>)]) -> Result<()> {
    let mut seen = Vec::new();
    let found = eventually("the group's committed offsets", || {
        seen = broker.committed_offsets(group)?;
        Ok((seen == expected).then_some(()))
    });
    found.with_context(|| format!("kafka-consumer-groups shows {seen:?} for {group}, not {expected:?}"))
}

/// The marker records of `query` readable (read_committed) in `topic`.
fn markers_of(bootstrap: &str, topic: &str, query: &str) -> Result<Vec<Seen>> {
    Ok(read_as(bootstrap, topic, "read_committed")?.into_iter().filter(|s| s.query.as_deref() == Some(query)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_finds_the_last_batch_in_a_compacted_marker_topic() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    // A marker topic whose cleaner runs often: a segment per batch or so.
    let markers = unique("compacted-markers");
    let compact = [
        ("cleanup.policy", "compact"),
        ("segment.ms", "100"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("min.compaction.lag.ms", "0"),
    ];
    job.kafka.create_topic_with(&markers, 1, &compact)?;
    let batches = ["--max-offsets-per-trigger", "1", "--marker-topic", &markers];
    let first = ids("first", 12);
    produce_campaigns(&job, 0, &first)?;
    // Twelve batches, one a campaign; the last one's commit is not recorded.
    crash_at(&job, &batches, "before-commit-log@12")?;

    // The broker's cleaner compacts the marker topic: it says so in its
    // log, and at most half the markers written are left to read.
    let (bootstrap, qid) = (job.kafka.bootstrap(), query_id(job.checkpoint.path())?);
    let deadline = Instant::now() + Duration::from_secs(120);
    let cleaned = format!("cleaned log {markers}-0");
    let left = loop {
        let left = markers_of(&bootstrap, &markers, &qid)?;
        if left.len() <= first.len() / 2 && Broker::shared()?.log().contains(&cleaned) {
            break left;
        }
        if Instant::now() > deadline {
            bail!("the marker topic was not compacted within 120 s ({} of {} markers left)", left.len(), first.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let batches_left: Vec<_> = left.iter().filter_map(|s| s.batch.clone()).collect();
    eprintln!("markers left after compaction: batches {batches_left:?} of 0..={}", first.len() - 1);
    ensure!(batches_left.last().map(String::as_str) == Some("11"), "the newest marker survives: {left:?}");

    run_to_completion(&job, &batches)?;
    assert_exactly_once(&job, &expected_pairs(&first, &clients())).await?;
    let log = child_log(&job);
    ensure!(
        log.contains("kafka batch marker check batch_id=11 latest_committed=Some(11)"),
        "recovery finds batch 11 in the compacted marker topic:\n{log}"
    );
    ensure!(log.matches("batch already committed in sink").count() == 2, "both sinks skipped batch 11:\n{log}");
    let second = ids("second", 3);
    produce_campaigns(&job, 0, &second)?;
    run_to_completion(&job, &batches)?;
    let all: Vec<String> = first.into_iter().chain(second).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &clients())).await?;
    Ok(())
}
