//! What a new user meets in the first hour: Kafka that cannot be reached, a
//! bad option, a database without the tables, a demo pointed at the wrong
//! directory. Each gets one clear message, once, and nothing is lost.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::child::*;
use crate::support::*;

/// A local port nothing listens on.
fn closed_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `job`'s arguments with other bootstrap servers.
fn with_bootstrap(job: &Job, servers: &str, extra: &[&str]) -> Vec<String> {
    let mut args = job.args(extra);
    let at = args.iter().position(|a| a == "--bootstrap-servers").unwrap() + 1;
    args[at] = servers.to_string();
    args
}

/// Log lines without their timestamp, so repeats can be compared.
fn lines_without_time(log: &str) -> Vec<String> {
    log.lines().map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).trim().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_fails_fast_naming_servers_and_cause_once() -> Result<()> {
    let job = Job::new(1).await?;
    let servers = format!("127.0.0.1:{}", closed_port()?);
    let log = std::fs::File::create(job.checkpoint.path().join("child.log"))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(with_bootstrap(&job, &servers, &["--trigger", "once", "--kafka-timeout", "60s"]))
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    // Well before --kafka-timeout: the check gives up once every broker was tried.
    let status = wait(&mut child, Duration::from_secs(30))?;
    let log = child_log(&job);
    ensure!(!status.success(), "{log}");
    let expected = format!("kafka: cannot reach bootstrap servers {servers}: connection refused");
    ensure!(log.matches(&expected).count() == 1, "expected '{expected}' once:\n{log}");
    ensure!(!log.contains("backtrace") && !log.contains("Caused by"), "{log}");
    ensure!(!log.contains('\x1b'), "no colour codes when stderr is a file:\n{log}");
    let lines = lines_without_time(&log);
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == lines.len(), "a line was printed twice:\n{log}");
    ensure!(!job.checkpoint.path().join("offsets/0").exists(), "nothing planned");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() -> Result<()> {
    let job = Job::new(1).await?;
    let servers = format!("127.0.0.1:{}", closed_port()?);
    let out = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(with_bootstrap(&job, &servers, &["--trigger", "once", "--log-format", "json"]))
        .env("RUST_LOG", "info")
        .output()?;
    ensure!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}: {stderr}"))?;
    ensure!(lines.len() >= 2, "{stderr}");
    ensure!(lines.iter().all(|l| l["level"].is_string() && l["fields"].is_object()), "{stderr}");
    let last = &lines[lines.len() - 1]["fields"];
    ensure!(last["error"].as_str().is_some_and(|e| e.contains("cannot reach bootstrap servers")), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_kafka_stops_at_once() -> Result<()> {
    let job = Job::new(1).await?;
    // Accepts connections and never answers: the start-up check waits.
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let servers = silent.local_addr()?.to_string();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(8).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let log = std::fs::File::create(job.checkpoint.path().join("child.log"))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(with_bootstrap(&job, &servers, &["--trigger", "1s", "--kafka-timeout", "120s"]))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    for _ in 0..300 {
        if child_log(&job).contains("subscribers cache loaded") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    ensure!(child.try_wait()?.is_none(), "still waiting for Kafka:\n{}", child_log(&job));
    signal(&child, "TERM")?;
    let status = wait(&mut child, Duration::from_secs(20))?;
    ensure!(status.success(), "a stop before anything was planned exits 0, got {status}:\n{}", child_log(&job));
    ensure!(child_log(&job).contains("shutdown requested while starting"), "{}", child_log(&job));
    Ok(())
}

#[test]
fn bad_option_prints_one_line_without_backtrace() -> Result<()> {
    let out = crate::startup_errors::run_with_bad_option(&["--kafka-timeout", "0s"])?;
    ensure!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.trim().lines().count() == 1, "one line:\n{stderr}");
    ensure!(stderr.starts_with("sparklet: config: option --kafka-timeout: '0s' is out of range"), "{stderr}");
    ensure!(!stderr.contains("acktrace"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_subscribers_table_says_how_to_create_it() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.client.batch_execute("DROP TABLE subscribers_restaurants").await?;
    let err = match job.run_available_now(&[]).await {
        Ok(summary) => anyhow::bail!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("subscribers.sql") && err.contains("subscribers_restaurants"), "{err}");
    ensure!(err.contains("psql \"$DATABASE_URL\" -f") && err.contains("sql/schema.sql"), "{err}");
    Ok(())
}

#[test]
fn demo_refuses_a_checkpoint_dir_that_is_not_a_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let precious = dir.path().join("thesis.tex");
    std::fs::write(&precious, "years of work")?;
    let out = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(["demo", "--checkpoint-dir", dir.path().to_str().unwrap(), "--sql-dir"])
        .arg(repo_path("sql"))
        .env("DATABASE_URL", "postgres://nobody@db.invalid:5432/production")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{stderr}");
    ensure!(stderr.contains("--checkpoint-dir") && stderr.contains("neither empty nor a sparklet checkpoint"));
    ensure!(std::fs::read_to_string(&precious)? == "years of work");
    Ok(())
}
