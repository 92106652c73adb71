//! The catch-up progress bar: drawn on a terminal (a pseudo-terminal made
//! by util-linux's `script`), absent from a log file.

use std::process::Command;

use anyhow::{ensure, Result};

use crate::child::{self, child_log};
use crate::support::*;

/// `arg` quoted for `sh -c`.
fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

async fn backlog() -> Result<Job> {
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    for i in 0..40 {
        job.kafka.produce(&job.input, i % 2, &[campaign(RESTAURANT, &format!("c{i}"), 0, 4_000_000_000)])?;
    }
    Ok(job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_run_draws_a_progress_bar_on_a_terminal_only() -> Result<()> {
    // util-linux's `script` (essential on Debian) makes the terminal; its
    // absence fails the test rather than skipping it.
    ensure!(Command::new("script").arg("--version").output().is_ok(), "util-linux's script is not installed");
    let job = backlog().await?;
    let mut args = job.args(&["--trigger", "available-now", "--max-offsets-per-trigger", "10"]);
    args.insert(0, env!("CARGO_BIN_EXE_sparklet").to_string());
    let line: Vec<String> = args.iter().map(|a| quoted(a)).collect();
    let terminal =
        Command::new("script").args(["-qec", &line.join(" "), "/dev/null"]).env_remove("NO_COLOR").output()?;
    let shown = String::from_utf8_lossy(&terminal.stdout);
    ensure!(terminal.status.success(), "{shown}");
    ensure!(shown.contains("offsets left") && shown.contains("batch 4"), "no bar on the terminal:\n{shown}");
    ensure!(shown.contains("[########################] 100%"), "the bar did not reach the end:\n{shown}");

    let quiet = backlog().await?;
    child::run_to_completion(&quiet, &["--max-offsets-per-trigger", "10"])?;
    let log = child_log(&quiet);
    ensure!(log.contains("batch 3") && !log.contains("offsets left"), "a bar in a log file:\n{log}");
    Ok(())
}
