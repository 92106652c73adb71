//! The memory scenario of `bench_e2e`: peak RSS of the `sparklet` binary
//! alone (a child process; the mock broker stays in the bench process) for
//! one batch of 1k, 10k and 100k campaigns, so the curve shows whether memory
//! stays flat as the batch grows. Needs the release binary beside the
//! example: `cargo build --release --example bench_e2e --bin sparklet`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Peak RSS in MiB of `sparklet run` over one batch of `campaigns`.
pub(crate) fn peak_rss_mib(url: &str, campaigns: usize, restaurants: usize) -> Result<f64> {
    let (cluster, topic) = crate::new_cluster(campaigns)?;
    crate::produce(&cluster, &topic, campaigns, restaurants)?;
    let checkpoint = tempfile::tempdir()?;
    let progress = checkpoint.path().join("progress.jsonl");
    let args = crate::run_args(
        &cluster.bootstrap_servers(),
        &topic,
        url,
        "exactly-once",
        "available-now",
        checkpoint.path(),
        &progress,
    );
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
