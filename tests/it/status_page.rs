//! The status page at `/`, in a real headless browser (Debian's Chromium):
//! it loads without console errors and draws every chart from a running
//! query's `/progress`. Skipped when Chromium is not installed, unless
//! `SPARKLET_REQUIRE_CHROMIUM` is set (CI installs it and sets it).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::child::{self, LogOnFailure};
use crate::http::{endpoint_of, wait_for};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHARTS: [&str; 5] = ["input-rate", "durations", "lag-records", "lag-seconds", "subscribers-age"];

/// Loads `url` in headless Chromium for a few seconds of page time; returns
/// the DOM it ended with and what Chromium logged (console messages as
/// `CONSOLE` lines).
fn load_in_chromium(url: &str) -> Result<(String, String)> {
    let profile = tempfile::tempdir()?;
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=6000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .context("running chromium")?;
    ensure!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok((String::from_utf8(output.stdout)?, String::from_utf8_lossy(&output.stderr).into_owned()))
}

/// The value of `attribute="..."` on the first element whose text holds `marker`.
fn attribute_near(dom: &str, marker: &str, attribute: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let tag_start = dom[..=at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let value = tag.split(&format!("{attribute}=\"")).nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_draws_every_chart_from_a_running_query_without_console_errors() -> Result<()> {
    if !std::path::Path::new(CHROMIUM).exists() {
        ensure!(std::env::var_os("SPARKLET_REQUIRE_CHROMIUM").is_none(), "{CHROMIUM} is required but missing");
        eprintln!("skipped: {CHROMIUM} is not installed (apt-get install chromium)");
        return Ok(());
    }
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let _log = LogOnFailure(&job);
    let args = ["--trigger", "100ms", "--http-addr", "127.0.0.1:0", "--max-offsets-per-trigger", "2"];
    let mut sparklet = child::spawn(&job, &args, None)?;
    let addr = endpoint_of(&job, Duration::from_secs(30))?;
    for i in 0..6 {
        job.kafka.produce(&job.input, i % 2, &[campaign(RESTAURANT, &format!("c{i}"), 0, 4_000_000_000)])?;
    }
    wait_for(&addr, "/progress", Duration::from_secs(30), |r| r.body.matches("\"batchId\"").count() >= 3)?;

    let (dom, log) = load_in_chromium(&format!("http://{addr}/"))?;
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    ensure!(console.is_empty(), "the page logged to the console:\n{}", console.join("\n"));
    ensure!(attribute_near(&dom, "id=\"errors\"", "id").is_some(), "no error panel in:\n{dom}");
    let batches: usize = attribute_near(&dom, "<body", "data-batches").context("data-batches")?.parse()?;
    ensure!(batches >= 3, "the page drew {batches} batches");
    ensure!(attribute_near(&dom, "<body", "data-errors").as_deref() == Some("0"), "page errors:\n{dom}");
    for chart in CHARTS {
        let points = attribute_near(&dom, &format!("data-chart=\"{chart}\""), "data-points");
        let points: usize = points.with_context(|| format!("chart {chart} missing:\n{dom}"))?.parse()?;
        ensure!(points >= 3, "chart {chart} drew {points} points");
    }
    child::signal(&sparklet, "TERM")?;
    ensure!(child::wait(&mut sparklet, Duration::from_secs(30))?.success());
    Ok(())
}
