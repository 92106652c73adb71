//! Bad configuration fails at start, with a message that names what and where,
//! before anything is read or written.

use anyhow::Result;

use crate::support::*;

async fn start_error(job: &Job, extra: &[&str]) -> String {
    match job.run_available_now(extra).await {
        Ok(summary) => panic!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sql_file_fails_at_start_naming_the_file() -> Result<()> {
    let job = Job::new(1).await?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    std::fs::write(sql.path().join("20_feedback.sql"), "SELECT client_id FROM no_such_table")?;
    let err = start_error(&job, &["--sql-dir", sql.path().to_str().unwrap()]).await;
    assert!(err.contains("20_feedback.sql") && err.contains("no_such_table"), "{err}");
    assert!(!job.checkpoint.path().join("offsets/0").exists(), "nothing planned");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_output_without_the_kafka_key_column_fails_at_start_naming_the_file() -> Result<()> {
    let job = Job::new(1).await?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    std::fs::write(sql.path().join("20_feedback.sql"), "SELECT restaurant_id FROM active_campaigns")?;
    let err = start_error(&job, &["--sql-dir", sql.path().to_str().unwrap()]).await;
    assert!(err.contains("20_feedback.sql") && err.contains("has no column client_id, the Kafka key"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_subscribers_query_fails_at_start_naming_the_file() -> Result<()> {
    let job = Job::new(1).await?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    std::fs::remove_file(sql.path().join("subscribers.sql"))?;
    let err = start_error(&job, &["--sql-dir", sql.path().to_str().unwrap()]).await;
    assert!(err.contains("subscribers.sql"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_at_start_naming_it() -> Result<()> {
    let job = Job::new(1).await?;
    let mut args = job.args(&["--trigger", "once"]);
    let at = args.iter().position(|a| a == "--database-url").unwrap() + 1;
    args[at] = "postgres://postgres:secret@127.0.0.1:1/nowhere".into();
    let err = sparklet::run(config_from(args)?, std::future::pending()).await.unwrap_err().to_string();
    assert!(err.starts_with("postgres:") && err.contains("127.0.0.1:1/nowhere"), "{err}");
    assert!(!err.contains("secret"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_feedback_table_fails_at_start_naming_it() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.client.batch_execute("DROP TABLE subscribers_feedback").await?;
    let err = start_error(&job, &[]).await;
    assert!(err.contains("subscribers_feedback") && err.contains("schema.sql"), "{err}");
    Ok(())
}

/// Runs `sparklet run` with otherwise valid options plus `extra`, which must
/// make it stop before connecting; returns its output.
pub(crate) fn run_with_bad_option(extra: &[&str]) -> Result<std::process::Output> {
    let base = ["run", "--bootstrap-servers", "127.0.0.1:9", "--input-topic", "in", "--output-topic", "out"];
    let more = ["--database-url", "postgres://127.0.0.1/x", "--checkpoint-dir", "/tmp/unused"];
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(base.iter().chain(&more).chain(extra))
        .env("RUST_BACKTRACE", "1")
        .output()?)
}

#[test]
fn bad_option_value_exits_non_zero_naming_the_option() -> Result<()> {
    let out = run_with_bad_option(&["--trigger", "soonish"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--trigger") && stderr.contains("soonish"), "{stderr}");
    Ok(())
}
