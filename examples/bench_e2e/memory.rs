//! The memory scenario of `bench_e2e`: peak RSS of the `sparklet` binary
//! alone (a child process; the mock broker, when there is no
//! `--bootstrap-servers`, stays in the bench process) for one batch of 1k,
//! 10k and 100k campaigns, so the curve shows whether memory stays flat as
//! the batch grows. Needs the release binary beside the example:
//! `cargo build --release --example bench_e2e --bin sparklet`. Kafka: a fresh
//! mock cluster, or the `--bootstrap-servers` broker with topics of its own
//! ([`crate::cluster`]), one per batch size.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Prints the table: one batch of each size in `campaigns`, with the largest
/// of `subscriber_sizes` cached.
pub(crate) async fn report(url: &str, subscriber_sizes: &[usize], campaigns: &[usize]) -> Result<()> {
    // Filled here: run alone, the scenario used to find the 10k rows the
    // benchmark starts with, while its label said 1M.
    let subscribers = subscriber_sizes.iter().max().copied().unwrap_or(0);
    crate::startup::fill_subscribers(&crate::connect(url).await?, subscribers).await?;
    println!("memory: campaigns | subscribers | peak RSS MiB of the sparklet process | ratio to the smallest batch");
    let mut first = None;
    for &n in campaigns {
        let mib = peak_rss_mib(url, n, (subscribers / 10).max(1))?;
        let base = *first.get_or_insert(mib);
        println!("memory: {n} | {subscribers} | {mib:.0} | {:.2}", mib / base);
    }
    Ok(())
}

/// Peak RSS in MiB of `sparklet run` over one batch of `campaigns`.
pub(crate) fn peak_rss_mib(url: &str, campaigns: usize, restaurants: usize) -> Result<f64> {
    let (cluster, topic) = crate::new_cluster(campaigns)?;
    crate::produce(&cluster, &topic, campaigns, restaurants)?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let args = crate::run_args(&cluster, &topic, url, "exactly-once", "available-now", checkpoint.path(), &progress);
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("peak-rss-kib %M")
        .arg(sparklet_binary()?)
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .context("running /usr/bin/time sparklet (apt install time)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("sparklet failed: {stderr}");
    }
    let kib: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.trim().parse().ok())
        .context("no peak RSS in /usr/bin/time's output")?;
    Ok(kib / 1024.0)
}

/// The `sparklet` binary of the same build as this example.
fn sparklet_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe.parent().and_then(|examples| examples.parent()).map(|dir| dir.join("sparklet"));
    match binary {
        Some(path) if path.exists() => Ok(path),
        _ => bail!("no sparklet binary beside {}: build it with --bin sparklet", exe.display()),
    }
}
