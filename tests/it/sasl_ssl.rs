//! The original deployment's Kafka security settings (SASL_SSL, SCRAM-SHA-512,
//! a CA file, the password read from an environment variable), end to end
//! against Apache Kafka's own broker (its SASL_SSL listener): the `sparklet`
//! binary delivers every pair to both sinks exactly once over them; a wrong
//! password, a CA that did not sign the broker's certificate, and a PLAINTEXT
//! client on the SASL_SSL port each stop it at once with one line naming the
//! broker and the cause; and the password shows up nowhere (logs in both
//! formats, the progress file, the HTTP endpoint, the checkpoint, the errors).
//!
//! The topics are made and the input produced over the PLAINTEXT listener
//! (the tests' own clients); only sparklet speaks SASL_SSL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::child::{child_log, signal, wait, LogOnFailure};
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::http::{endpoint_of, get, wait_for};
use crate::support::*;

/// The environment variable the child reads the password from
/// (`sasl.password=env:...`); set on the child only.
const PASSWORD_VAR: &str = "SPARKLET_IT_KAFKA_PASSWORD";

/// The generous bound on how long a run with a wrong setting may take to stop.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// The original deployment's `--kafka-option`s, one each, for `broker`'s
/// SASL_SSL listener with `ca` as the CA file and `protocol` as
/// `security.protocol`.
fn security_options(broker: &Broker, protocol: &str, ca: &Path) -> Vec<String> {
    [
        format!("security.protocol={protocol}"),
        "sasl.mechanisms=SCRAM-SHA-512".into(),
        format!("sasl.username={}", broker.user),
        format!("sasl.password=env:{PASSWORD_VAR}"),
        format!("ssl.ca.location={}", ca.display()),
    ]
    .into_iter()
    .flat_map(|option| ["--kafka-option".to_string(), option])
    .collect()
}

/// How a test's child is run: its extra `sparklet run` options, the security
/// options, the password its environment holds, and its `RUST_LOG`.
struct Run<'a> {
    extra: &'a [&'a str],
    security: Vec<String>,
    password: &'a str,
    rust_log: &'a str,
}

/// Starts the sparklet binary for `job` over the broker's SASL_SSL listener,
/// stderr appended to `child.log` and stdout to `child.stdout`, both in the
/// checkpoint directory (and so searched for the password with it).
fn spawn(job: &Job, broker: &Broker, run: &Run<'_>) -> Result<Child> {
    let mut extra = vec!["--bootstrap-servers", broker.sasl_ssl.as_str()];
    extra.extend_from_slice(run.extra);
    // `Job::args` replaces a repeated option; each --kafka-option is its own.
    let mut args = job.args(&extra);
    args.extend(run.security.iter().cloned());
    let file =
        |name: &str| std::fs::OpenOptions::new().create(true).append(true).open(job.checkpoint.path().join(name));
    let child = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(&args)
        .stdout(file("child.stdout")?)
        .stderr(file("child.log")?)
        .env("RUST_LOG", run.rust_log)
        .env(PASSWORD_VAR, run.password)
        .env_remove("SPARKLET_CRASH_AT")
        .env_remove("SPARKLET_KAFKA_OPTIONS")
        .env_remove("SPARKLET_LOG_FORMAT")
        .spawn()?;
    Ok(child)
}

/// The child's command line, as `ps` shows it to anyone on the machine.
fn command_line(child: &Child) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Fails naming `what` if `text` holds `secret`.
fn ensure_absent(what: &str, text: &str, secret: &str) -> Result<()> {
    ensure!(!secret.is_empty(), "no secret to look for");
    ensure!(!text.contains(secret), "the Kafka password appears in {what}:\n{text}");
    Ok(())
}

/// Fails if the password is in any file of the checkpoint directory (the
/// child's log and stdout and the progress file included), read as bytes.
fn ensure_absent_from_checkpoint(job: &Job, secret: &str) -> Result<usize> {
    let files = files_under(job.checkpoint.path())?;
    for path in &files {
        let bytes = std::fs::read(path)?;
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        ensure!(!found, "the Kafka password appears in checkpoint file {}", path.display());
    }
    Ok(files.len())
}

/// A job with `clients` subscribed and `campaigns` produced over 2 partitions
/// (over the PLAINTEXT listener: the tests' own client).
async fn job_with(clients: &[String]) -> Result<Job> {
    let job = Job::new(2).await?;
    let refs: Vec<&str> = clients.iter().map(String::as_str).collect();
    job.db.add_subscribers(RESTAURANT, &refs).await?;
    Ok(job)
}

fn produce_campaigns(job: &Job, ids: &[String]) -> Result<()> {
    for (i, id) in ids.iter().enumerate() {
        job.kafka.produce(&job.input, (i % 2) as i32, &[campaign(RESTAURANT, id, 0, FOREVER)])?;
    }
    Ok(())
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Runs a streaming query over SASL_SSL with the HTTP endpoint and a
/// progress file until Postgres holds `rows` feedback rows; returns the
/// bodies of `/progress` and `/metrics` then. Stops it with SIGTERM.
async fn stream_until_done(job: &Job, broker: &Broker, rows: usize, progress: &Path) -> Result<(String, String)> {
    let progress = progress.display().to_string();
    let extra = ["--trigger", "200ms", "--http-addr", "127.0.0.1:0", "--progress-json", &progress];
    let security = security_options(broker, "SASL_SSL", &broker.ca);
    let run = Run { extra: &extra, security, password: &broker.password, rust_log: "info,rdkafka=warn" };
    let mut child = spawn(job, broker, &run)?;
    ensure_absent("the child's command line", &command_line(&child), &broker.password)?;
    let addr = endpoint_of(job, Duration::from_secs(30))?;
    wait_until("every pair in Postgres", Duration::from_secs(60), async || Ok(job.db.feedback().await?.len() >= rows))
        .await?;
    let batches = wait_for(&addr, "/progress", Duration::from_secs(30), |r| r.body.contains("\"batchId\""))?;
    let metrics = get(&addr, "/metrics")?;
    ensure!(metrics.status == 200, "GET /metrics: {} {}", metrics.status, metrics.body);
    ensure!(metrics.body.contains("sparklet_output_rows_total"), "{}", metrics.body);
    signal(&child, "TERM")?;
    let status = wait(&mut child, Duration::from_secs(30))?;
    ensure!(status.success(), "the streaming run ended with {status}:\n{}", child_log(job));
    Ok((batches.body, metrics.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_security_settings_deliver_every_pair_exactly_once_over_sasl_ssl() -> Result<()> {
    let broker = Broker::shared()?;
    let clients = names("client", 0..3);
    let job = job_with(&clients).await?;
    let _log = LogOnFailure(&job);
    let first = names("campaign", 0..8);
    produce_campaigns(&job, &first)?;
    let progress = job.checkpoint.path().join("progress.jsonl");

    // A streaming run (text logs, HTTP endpoint, progress file), stopped by SIGTERM ...
    let (recent, metrics) = stream_until_done(&job, broker, first.len() * clients.len(), &progress).await?;
    // ... then, with more input, a catch-up run with JSON logs, down to
    // debug level (librdkafka's and rdkafka's included), on the same checkpoint.
    let second = names("campaign", 8..14);
    produce_campaigns(&job, &second)?;
    let security = security_options(broker, "SASL_SSL", &broker.ca);
    let extra = ["--trigger", "available-now", "--log-format", "json", "--progress-json", progress.to_str().unwrap()];
    let run = Run { extra: &extra, security, password: &broker.password, rust_log: "debug" };
    let status = wait(&mut spawn(&job, broker, &run)?, Duration::from_secs(60))?;
    ensure!(status.success(), "the catch-up run ended with {status}:\n{}", child_log(&job));

    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let (rows, messages) = assert_exactly_once(&job, &expected_pairs(&all, &clients)).await?;
    ensure!(rows == all.len() * clients.len() && messages == rows);

    // It ran over SASL_SSL with the settings as given, the password masked in the start line.
    let log = child_log(&job);
    ensure!(log.contains(&format!("--bootstrap-servers {}", broker.sasl_ssl)), "{log}");
    ensure!(log.contains("security.protocol=SASL_SSL") && log.contains("sasl.password=***"), "{log}");
    ensure!(log.lines().any(|l| l.starts_with('{')), "the catch-up run logged no JSON:\n{log}");
    ensure!(log.lines().any(|l| !l.is_empty() && !l.starts_with('{')), "the streaming run logged no text:\n{log}");
    let records = std::fs::read_to_string(&progress)?;
    ensure!(records.lines().count() >= 2, "progress records: {records}");

    let secret = &broker.password;
    ensure_absent("the child's log (text and JSON)", &log, secret)?;
    ensure_absent("the progress file", &records, secret)?;
    ensure_absent("GET /progress", &recent, secret)?;
    ensure_absent("GET /metrics", &metrics, secret)?;
    let files = ensure_absent_from_checkpoint(&job, secret)?;
    eprintln!(
        "SASL_SSL: {rows} rows and {messages} messages exactly once; password in none of {files} checkpoint files"
    );
    Ok(())
}

/// A run that must fail: its security options, the password its environment
/// holds, and words of librdkafka's report of the cause.
struct Failing<'a> {
    security: Vec<String>,
    password: &'a str,
    cause: &'a str,
}

/// Runs the binary for `job` as `failing` says, once per log format. Each
/// run must stop non-zero within [`STOP_WITHIN`] with exactly one error line
/// (returned, one per format); librdkafka's report of the cause is in the
/// log for one attempt only besides it (no retry loop); neither the given password
/// nor the broker's is in the log or anywhere in the checkpoint directory.
async fn failing_runs(job: &Job, broker: &Broker, failing: &Failing<'_>) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    for format in ["text", "json"] {
        std::fs::remove_file(job.checkpoint.path().join("child.log")).ok();
        let extra = ["--trigger", "available-now", "--log-format", format];
        let security = failing.security.clone();
        let run = Run { extra: &extra, security, password: failing.password, rust_log: "info,rdkafka=warn" };
        let started = Instant::now();
        let status = wait(&mut spawn(job, broker, &run)?, STOP_WITHIN)?;
        let took = started.elapsed();
        let log = child_log(job);
        ensure!(!status.success(), "the run should have failed:\n{log}");
        let error = one_error_line(&log, format)?;
        eprintln!("{format} run stopped after {took:?} with {status}: {error}");
        let reports = log.lines().filter(|l| l.contains(failing.cause)).count();
        // Sparklet's error line, and librdkafka's report of the one attempt:
        // for a TLS failure that can be two lines (the OpenSSL error, then
        // the failed handshake quoting it). A retry loop would log more.
        ensure!(reports <= 3, "the failure repeats in the log (a retry loop?):\n{log}");
        for secret in [failing.password, broker.password.as_str()] {
            ensure_absent("the failing run's log", &log, secret)?;
            ensure_absent_from_checkpoint(job, secret)?;
        }
        errors.push(error);
    }
    ensure!(errors[0] == errors[1], "the two formats report different errors: {errors:?}");
    ensure!(job.db.feedback().await?.is_empty() && job.output_messages()?.is_empty(), "nothing is written");
    Ok(errors)
}

/// The one error line of a failed run: `sparklet: ...` in text, the
/// `error` field of the one ERROR record in JSON.
fn one_error_line(log: &str, format: &str) -> Result<String> {
    let errors: Vec<String> = if format == "json" {
        let records: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        ensure!(records.len() == log.lines().count(), "not every line is JSON:\n{log}");
        let errors = records.iter().filter(|r| r["level"] == "ERROR");
        errors.map(|r| r["fields"]["error"].as_str().unwrap_or_default().to_string()).collect()
    } else {
        log.lines().filter_map(|l| l.strip_prefix("sparklet: ")).map(str::to_string).collect()
    };
    ensure!(errors.len() == 1, "expected one error line, got {errors:?}:\n{log}");
    Ok(errors[0].clone())
}

/// A job with one subscriber and two campaigns waiting (that a failed run
/// must not write).
async fn job_with_input() -> Result<Job> {
    let job = job_with(&names("client", 0..1)).await?;
    produce_campaigns(&job, &names("campaign", 0..2))?;
    Ok(job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_run_naming_the_broker() -> Result<()> {
    let broker = Broker::shared()?;
    let job = job_with_input().await?;
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let security = security_options(broker, "SASL_SSL", &broker.ca);
    let failing = Failing { security, password: &wrong, cause: "invalid credentials" };
    for error in failing_runs(&job, broker, &failing).await? {
        ensure!(error.starts_with("kafka: SASL authentication with broker "), "{error}");
        ensure!(error.contains(&broker.sasl_ssl), "the error does not name the broker: {error}");
        ensure!(error.contains("invalid credentials"), "the error does not say why: {error}");
        ensure!(error.contains("sasl.password") && error.contains("a retry cannot help"), "{error}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_stops_the_run_with_a_tls_error_naming_the_broker() -> Result<()> {
    let broker = Broker::shared()?;
    let job = job_with_input().await?;
    let security = security_options(broker, "SASL_SSL", &broker.other_ca);
    let failing = Failing { security, password: &broker.password, cause: "certificate verify failed" };
    for error in failing_runs(&job, broker, &failing).await? {
        ensure!(error.starts_with("kafka: TLS handshake with broker "), "{error}");
        ensure!(error.contains(&broker.sasl_ssl), "the error does not name the broker: {error}");
        ensure!(error.contains("certificate verify failed"), "the error does not say why: {error}");
        ensure!(error.contains("ssl.ca.location") && error.contains("a retry cannot help"), "{error}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_on_the_sasl_ssl_port_stops_with_a_clear_error() -> Result<()> {
    let broker = Broker::shared()?;
    let job = job_with_input().await?;
    // The deployment's options with only security.protocol changed.
    let security = security_options(broker, "PLAINTEXT", &broker.ca);
    let failing = Failing { security, password: &broker.password, cause: "connection closed by peer" };
    for error in failing_runs(&job, broker, &failing).await? {
        ensure!(error.starts_with(&format!("kafka: broker {} closed the connection", broker.sasl_ssl)), "{error}");
        ensure!(error.contains("security.protocol is PLAINTEXT"), "the error does not name the setting: {error}");
        ensure!(error.contains("expect TLS") && error.contains("a retry cannot help"), "{error}");
    }
    Ok(())
}
