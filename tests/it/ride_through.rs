//! Riding through outages (`--retry-for`): Postgres (behind a proxy the
//! test takes down) and Apache Kafka's broker (SIGKILLed, then started on
//! its data) away for two minutes, the S3 checkpoint store for one. The
//! query never exits; `/readyz` names what it waits for, `/livez` stays
//! 200, `sparklet_blocked_seconds` counts the wait, the log says once what
//! is down and once that it is back; afterwards both sinks hold every pair
//! once. An outage longer than `--retry-for` ends the run with one line.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::broker::Broker;
use crate::child::{self, child_log};
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::http::{endpoint_of, get, wait_for};
use crate::observability::sample;
use crate::proxy::Proxy;
use crate::support::*;

const OUTAGE: Duration = Duration::from_secs(120);
/// Waits until both sinks hold `n` rows (Kafka `read_committed`).
async fn both_sinks_hold(job: &Job, n: usize, limit: Duration) -> Result<()> {
    wait_until(&format!("{n} rows in both sinks"), limit, async || {
        Ok(job.db.feedback().await?.len() == n && job.output_messages()?.len() == n)
    })
    .await
}

/// Watches the query through an outage of `length`: it stays up, `/livez`
/// 200, `/readyz` 503 with `waiting_for` = `component` once its first
/// attempt has failed (an object store request is retried a few seconds
/// within the attempt first) and from then on, the blocked-seconds metric
/// growing. Returns the longest blocked time scraped.
fn watch_outage(sparklet: &mut Child, addr: &str, component: &str, length: Duration) -> Result<f64> {
    let started = Instant::now();
    let (mut named, mut blocked) = (false, 0.0f64);
    while started.elapsed() < length {
        ensure!(sparklet.try_wait()?.is_none(), "sparklet exited during the {component} outage");
        ensure!(get(addr, "/livez")?.status == 200, "/livez during the {component} outage");
        let ready = get(addr, "/readyz")?;
        let body: Value = serde_json::from_str(&ready.body)?;
        named |= body["waiting_for"] == component;
        ensure!(
            ready.status == 503 || (!named && started.elapsed() < Duration::from_secs(20)),
            "/readyz during the {component} outage: {} {}",
            ready.status,
            ready.body
        );
        let labels = format!("{{component=\"{component}\"}}");
        blocked = blocked.max(sample(&get(addr, "/metrics")?.body, "sparklet_blocked_seconds", &labels));
        std::thread::sleep(Duration::from_secs(2));
    }
    ensure!(named, "/readyz never said it waits for {component}");
    Ok(blocked)
}

/// After the outage: ready again, the log said once what was down and that
/// it was back, the blocked metric is back to 0.
fn after_outage(job: &Job, addr: &str, component: &str) -> Result<()> {
    wait_for(addr, "/readyz", Duration::from_secs(60), |r| r.status == 200)?;
    let log = child_log(job);
    let down = log.matches(&format!("{component} is failing; the query waits and retries")).count();
    ensure!(down == 1, "one line says {component} is down, not one per attempt ({down}):\n{log}");
    ensure!(log.contains(&format!("{component} answers again after")), "no line says {component} is back:\n{log}");
    let labels = format!("{{component=\"{component}\"}}");
    ensure!(sample(&get(addr, "/metrics")?.body, "sparklet_blocked_seconds", &labels) == 0.0);
    Ok(())
}

/// Starts sparklet with its HTTP endpoint (`env` added to its environment)
/// and waits until both sinks hold a first wave of 3 campaigns for
/// `clients` subscribers; returns the child, the endpoint and the wave.
async fn start_with_a_first_wave(
    job: &Job,
    extra: &[&str],
    env: &[(&str, &str)],
    clients: usize,
) -> Result<(Child, String, Vec<String>)> {
    let mut args = vec!["--trigger", "200ms", "--http-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let sparklet = child::spawn_with_env(job, &args, None, env)?;
    let addr = endpoint_of(job, Duration::from_secs(30))?;
    let first = produce_wave(job, "first", 3)?;
    both_sinks_hold(job, 3 * clients, Duration::from_secs(60)).await?;
    Ok((sparklet, addr, first))
}

/// After `component` is back: both sinks catch up on `waves`, the outage's
/// signs clear ([`after_outage`]), a graceful stop, every pair once.
async fn finish(
    job: &Job,
    mut sparklet: Child,
    (addr, component): (&str, &str),
    waves: Vec<String>,
    clients: &[&str],
) -> Result<()> {
    let rows = waves.len() * clients.len();
    both_sinks_hold(job, rows, Duration::from_secs(90)).await.context(child_log(job))?;
    after_outage(job, addr, component)?;
    child::signal(&sparklet, "TERM")?;
    let status = child::wait(&mut sparklet, Duration::from_secs(60))?;
    ensure!(status.success(), "sparklet exited with {status}:\n{}", child_log(job));
    let clients: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
    assert_exactly_once(job, &expected_pairs(&waves, &clients)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_two_minutes_is_waited_out_exactly_once() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let proxy = Proxy::start("127.0.0.1:5432").await?;
    let url = proxy.url(&job.db.url);
    let (mut sparklet, addr, first) = start_with_a_first_wave(&job, &["--database-url", &url], &[], 2).await?;

    proxy.down();
    let second = produce_wave(&job, "second", 3)?;
    let blocked = watch_outage(&mut sparklet, &addr, "postgres", OUTAGE).context(child_log(&job))?;
    ensure!(blocked > 60.0, "sparklet_blocked_seconds{{component=\"postgres\"}} reached only {blocked}");
    proxy.up();
    finish(&job, sparklet, (&addr, "postgres"), [first, second].concat(), &["c1", "c2"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_down_for_two_minutes_is_waited_out_exactly_once() -> Result<()> {
    let broker = Broker::start_private()?;
    let job = Job::on(Kafka::on(&broker.plaintext)?, 1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let (mut sparklet, addr, first) = start_with_a_first_wave(&job, &[], &[], 1).await?;

    broker.kill()?;
    let blocked = watch_outage(&mut sparklet, &addr, "kafka", OUTAGE).context(child_log(&job))?;
    ensure!(blocked > 60.0, "sparklet_blocked_seconds{{component=\"kafka\"}} reached only {blocked}");
    broker.resume()?;
    let second = produce_wave(&job, "second", 3)?;
    finish(&job, sparklet, (&addr, "kafka"), [first, second].concat(), &["c1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_store_down_for_a_minute_is_waited_out_exactly_once() -> Result<()> {
    let Some(location) = crate::object_store::s3_location("ride-through") else { return Ok(()) };
    let endpoint = std::env::var("AWS_ENDPOINT")?;
    let target = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let proxy = Proxy::start(&target).await?;
    let through_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let env = [("AWS_ENDPOINT", through_proxy.as_str())];
    let (mut sparklet, addr, first) = start_with_a_first_wave(&job, &["--checkpoint-dir", &location], &env, 1).await?;

    // New campaigns during the outage: their batch cannot be written ahead.
    proxy.down();
    let second = produce_wave(&job, "second", 3)?;
    let blocked = watch_outage(&mut sparklet, &addr, "checkpoint", Duration::from_secs(60)).context(child_log(&job))?;
    ensure!(blocked > 20.0, "sparklet_blocked_seconds{{component=\"checkpoint\"}} reached only {blocked}");
    proxy.up();
    finish(&job, sparklet, (&addr, "checkpoint"), [first, second].concat(), &["c1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_retry_for_exits_with_one_line_naming_it() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let proxy = Proxy::start("127.0.0.1:5432").await?;
    let url = proxy.url(&job.db.url);
    let first = produce_wave(&job, "first", 2)?;
    let args = ["--trigger", "200ms", "--database-url", &url, "--retry-for", "8s"];
    let mut sparklet = child::spawn(&job, &args, None)?;
    both_sinks_hold(&job, 2, Duration::from_secs(60)).await?;

    // Timed from before the outage: sparklet counts --retry-for from the
    // first failure it sees, which comes after this.
    let started = Instant::now();
    proxy.down();
    let second = produce_wave(&job, "second", 2)?;
    let status = child::wait(&mut sparklet, Duration::from_secs(90))?;
    let waited = started.elapsed();
    let log = child_log(&job);
    ensure!(!status.success(), "sparklet should have given up:\n{log}");
    ensure!(waited >= Duration::from_secs(8), "it gave up after {waited:?}, before --retry-for 8s:\n{log}");
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    ensure!(
        last.starts_with("sparklet: postgres: still failing after waiting ")
            && last.contains("(--retry-for 8s)")
            && last.contains("127.0.0.1:"),
        "one last line names the component, the wait and the cause: {last}"
    );

    // Nothing was lost: the next start, with Postgres back, drains it.
    proxy.up();
    child::run_to_completion(&job, &["--database-url", &url])?;
    let all: Vec<String> = first.into_iter().chain(second).collect();
    assert_exactly_once(&job, &expected_pairs(&all, &["c1".into()])).await?;
    Ok(())
}
