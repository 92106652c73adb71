//! The `sparklet` binary as a child process: start it for a job, wait for it,
//! signal it, read its log.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use crate::support::Job;

/// Starts the sparklet binary for `job`, stderr to a log file in the checkpoint dir.
pub fn spawn(job: &Job, extra: &[&str], crash_at: Option<&str>) -> Result<Child> {
    spawn_with_env(job, extra, crash_at, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with_env(job: &Job, extra: &[&str], crash_at: Option<&str>, env: &[(&str, &str)]) -> Result<Child> {
    Ok(command(job, extra, crash_at, env)?.spawn()?)
}

/// The command [`spawn_with_env`] runs, for a test that sets more on it
/// (resource limits) before spawning it.
pub fn command(job: &Job, extra: &[&str], crash_at: Option<&str>, env: &[(&str, &str)]) -> Result<Command> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(job.checkpoint.path().join("child.log"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sparklet"));
    cmd.args(job.args(extra)).stdout(Stdio::null()).stderr(log).env("RUST_LOG", "info,rdkafka=warn");
    cmd.envs(env.iter().copied());
    match crash_at {
        Some(point) => cmd.env("SPARKLET_CRASH_AT", point),
        None => cmd.env_remove("SPARKLET_CRASH_AT"),
    };
    Ok(cmd)
}

pub fn wait(child: &mut Child, limit: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            bail!("sparklet did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn child_log(job: &Job) -> String {
    std::fs::read_to_string(job.checkpoint.path().join("child.log")).unwrap_or_default()
}

/// Runs the binary to completion over what is available now; must exit 0.
pub fn run_to_completion(job: &Job, extra: &[&str]) -> Result<()> {
    let mut args = vec!["--trigger", "available-now"];
    args.extend_from_slice(extra);
    let status = wait(&mut spawn(job, &args, None)?, Duration::from_secs(60))?;
    ensure!(status.success(), "recovery run failed ({status}):\n{}", child_log(job));
    Ok(())
}

/// Checks that a run stopped at crash point `point` while batch `batch` was
/// in flight, not for another reason: it failed, the last crash point its
/// log names is `point`, and the checkpoint holds batch `batch` planned
/// (its write-ahead entry) and not committed, with no later batch planned.
pub fn ensure_crashed_at(job: &Job, status: ExitStatus, point: &str, batch: u64) -> Result<()> {
    let log = child_log(job);
    ensure!(!status.success(), "the run should have crashed at {point}, but exited with {status}:\n{log}");
    let last = log.lines().rev().find(|l| l.contains("crash point "));
    ensure!(
        last.is_some_and(|l| l.contains(&format!("crash point {point} reached"))),
        "the run failed without reaching crash point {point} ({status}):\n{log}"
    );
    let dir = job.checkpoint.path();
    let planned = |n: u64| dir.join(format!("offsets/{n}")).exists();
    ensure!(
        planned(batch) && !planned(batch + 1) && !dir.join(format!("commits/{batch}")).exists(),
        "crash point {point} was reached outside batch {batch} (offsets/{batch} planned, not committed, nothing after):\n{log}"
    );
    Ok(())
}

pub fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status()?;
    ensure!(status.success(), "kill -{name} failed");
    Ok(())
}

/// Prints the child's log if the test fails (panics) while this is alive;
/// a passing test prints nothing.
pub struct LogOnFailure<'a>(pub &'a Job);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("child log:\n{}", child_log(self.0));
        }
    }
}
