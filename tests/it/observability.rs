//! The HTTP endpoint of a running query (a child process, so the metrics
//! are its own): `/metrics` agrees with the progress records, `/readyz`
//! flips when Postgres goes away and comes back, and the metrics the
//! `deploy/` dashboard and alert rules use all exist.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::child::{self, LogOnFailure};
use crate::http::{endpoint_of, get, wait_for};
use crate::proxy::Proxy;
use crate::support::*;

/// Sample values of `name` in a scrape, by their label text (`{sink="kafka"}`).
pub fn samples(scrape: &str, name: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(key, value)| {
            let labels = key.strip_prefix(name)?;
            let ours = labels.is_empty() || labels.starts_with('{');
            Some((labels.to_string(), value.parse().ok().filter(|_| ours)?))
        })
        .collect()
}

pub fn sample(scrape: &str, name: &str, labels: &str) -> f64 {
    samples(scrape, name).get(labels).copied().unwrap_or(0.0)
}

fn progress_records(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn total(records: &[Value], field: &str) -> f64 {
    records.iter().map(|r| r[field].as_f64().unwrap_or(0.0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_over_http_agree_with_the_progress_records() -> Result<()> {
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2", "c3"]).await?;
    job.kafka.produce(
        &job.input,
        0,
        &[campaign(RESTAURANT, "a", 0, FOREVER), campaign(RESTAURANT, "b", 0, FOREVER)],
    )?;
    job.kafka.produce_raw(&job.input, 1, &[b"not json".as_slice()])?;
    let progress = job.checkpoint.path().join("progress.jsonl");
    let progress_arg = progress.display().to_string();
    let _log = LogOnFailure(&job);
    let mut sparklet = child::spawn(
        &job,
        &["--trigger", "200ms", "--http-addr", "127.0.0.1:0", "--progress-json", &progress_arg],
        None,
    )?;
    let addr = endpoint_of(&job, Duration::from_secs(30))?;

    let has_batches = |r: &crate::http::Response| r.body.contains("\"batchId\"");
    wait_for(&addr, "/progress", Duration::from_secs(30), has_batches)?;
    job.kafka.produce(&job.input, 1, &[campaign(RESTAURANT, "c", 0, 1)])?; // expired
    wait_for(&addr, "/progress", Duration::from_secs(30), |r| r.body.contains("\"numExpiredRows\":1"))?;

    let scrape = get(&addr, "/metrics")?;
    ensure!(scrape.status == 200, "GET /metrics: {}", scrape.status);
    let records = progress_records(&progress)?;
    let m = &scrape.body;
    ensure!(sample(m, "sparklet_input_rows_total", "") == total(&records, "numInputRows"), "{m}");
    ensure!(sample(m, "sparklet_input_rows_total", "") == 4.0, "{m}");
    ensure!(sample(m, "sparklet_output_rows_total", "{sink=\"kafka\"}") == 6.0, "{m}");
    ensure!(sample(m, "sparklet_output_rows_total", "{sink=\"postgres\"}") == total(&records, "numOutputRows"), "{m}");
    ensure!(sample(m, "sparklet_malformed_rows_total", "{reason=\"not_json\"}") == 1.0, "{m}");
    ensure!(sample(m, "sparklet_dead_lettered_rows_total", "{reason=\"not_json\"}") == 1.0, "{m}");
    ensure!(sample(m, "sparklet_expired_rows_total", "") == total(&records, "numExpiredRows"), "{m}");
    let last = records.last().context("no progress records")?;
    ensure!(sample(m, "sparklet_last_committed_batch_id", "") == last["batchId"].as_f64().unwrap(), "{m}");
    ensure!(sample(m, "sparklet_batches_committed_total", "") == records.len() as f64, "{m}");
    let trigger_count = sample(m, "sparklet_batch_duration_seconds_count", "{phase=\"trigger\"}");
    ensure!(trigger_count == records.len() as f64, "{m}");
    let input = &job.input;
    for partition in ["0", "1"] {
        let labels = format!("{{topic=\"{input}\",partition=\"{partition}\"}}");
        ensure!(samples(m, "sparklet_source_lag_records").get(&labels) == Some(&0.0), "lag of {partition}: {m}");
    }
    ensure!(sample(m, "sparklet_subscribers_rows", "") == 3.0, "{m}");

    let recent: Value = serde_json::from_str(&get(&addr, "/progress")?.body)?;
    let shown = recent["recentProgress"].as_array().context("recentProgress")?;
    ensure!(shown.last().map(|p| &p["batchId"]) == Some(&last["batchId"]), "{recent}");
    ensure!(recent["status"]["message"].is_string(), "{recent}");
    ensure!(get(&addr, "/livez")?.status == 200);
    let ready = get(&addr, "/readyz")?;
    ensure!(ready.status == 200, "/readyz: {}", ready.body);
    // The probe just answered ready: the gauge says so (present, and 1).
    let after = get(&addr, "/metrics")?.body;
    ensure!(samples(&after, "sparklet_ready").get("") == Some(&1.0), "{after}");
    child::signal(&sparklet, "TERM")?;
    ensure!(child::wait(&mut sparklet, Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_when_postgres_goes_away_and_comes_back() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let proxy = Proxy::start("127.0.0.1:5432").await?;
    let url = proxy.url(&job.db.url);
    let _log = LogOnFailure(&job);
    let args = ["--trigger", "1s", "--http-addr", "127.0.0.1:0", "--database-url", &url, "--max-retries", "50"];
    let mut sparklet = child::spawn(&job, &args, None)?;
    let addr = endpoint_of(&job, Duration::from_secs(30))?;
    wait_for(&addr, "/readyz", Duration::from_secs(30), |r| r.status == 200)?;

    proxy.down();
    let down = wait_for(&addr, "/readyz", Duration::from_secs(30), |r| r.status == 503)?;
    let checks: Value = serde_json::from_str(&down.body)?;
    ensure!(checks["checks"]["postgres"]["ok"] == false, "{checks}");
    ensure!(checks["checks"]["kafka"]["ok"] == true, "{checks}");
    ensure!(checks["checks"]["postgres"]["detail"].as_str().unwrap_or("").contains("postgres"), "{checks}");
    // Liveness is about the trigger loop, which goes on (retrying): still live.
    ensure!(get(&addr, "/livez")?.status == 200);
    ensure!(get(&addr, "/metrics")?.body.contains("sparklet_ready 0"));

    proxy.up();
    wait_for(&addr, "/readyz", Duration::from_secs(30), |r| r.status == 200)?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "after", 0, FOREVER)])?;
    wait_for(&addr, "/progress", Duration::from_secs(60), |r| r.body.contains("\"numOutputRows\":1"))?;
    child::signal(&sparklet, "TERM")?;
    ensure!(child::wait(&mut sparklet, Duration::from_secs(30))?.success());
    Ok(())
}

/// Metric families a scrape declares (`# TYPE name kind`).
fn declared(scrape: &str) -> BTreeSet<String> {
    scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_string)).collect()
}

/// `sparklet_*` names a file uses, as families (suffixes of samples removed).
fn used_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("sparklet_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(family);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_exists() -> Result<()> {
    let job = Job::new(1).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "a", 0, FOREVER)])?;
    let _log = LogOnFailure(&job);
    let mut sparklet = child::spawn(&job, &["--trigger", "1s", "--http-addr", "127.0.0.1:0"], None)?;
    let addr = endpoint_of(&job, Duration::from_secs(30))?;
    // After a batch: the per-partition series exist once a partition is known.
    let scrape =
        wait_for(&addr, "/metrics", Duration::from_secs(30), |r| r.body.contains("sparklet_source_lag_seconds{"))?;
    let declared = declared(&scrape.body);
    for file in ["deploy/grafana/sparklet-dashboard.json", "deploy/prometheus/sparklet-alerts.yml"] {
        let text = std::fs::read_to_string(repo_path(file)).with_context(|| file.to_string())?;
        let used = used_in(&text);
        ensure!(used.len() > 5, "{file} uses only {used:?}");
        let unknown: Vec<_> = used.difference(&declared).collect();
        ensure!(unknown.is_empty(), "{file} uses metrics sparklet does not have: {unknown:?}\ndeclared: {declared:?}");
    }
    child::signal(&sparklet, "TERM")?;
    ensure!(child::wait(&mut sparklet, Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_commits_input_offsets_to_the_query_group_for_lag_tools() -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let job = Job::new(2).await?;
    job.kafka.produce(
        &job.input,
        0,
        &[campaign(RESTAURANT, "a", 0, FOREVER), campaign(RESTAURANT, "b", 0, FOREVER)],
    )?;
    job.kafka.produce(&job.input, 1, &[campaign(RESTAURANT, "c", 0, FOREVER)])?;
    let summary = job.run_available_now(&["--guarantee", "at-least-once"]).await?;
    let group = sparklet::kafka::group_id(&summary.query_id);
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", job.kafka.bootstrap())
        .set("group.id", &group)
        .create()?;
    let mut wanted = rdkafka::TopicPartitionList::new();
    wanted.add_partition(&job.input, 0);
    wanted.add_partition(&job.input, 1);
    let committed = reader.committed_offsets(wanted, Duration::from_secs(10))?;
    let offsets: Vec<_> = committed.elements().iter().map(|e| (e.partition(), e.offset())).collect();
    let expected = vec![(0, rdkafka::Offset::Offset(2)), (1, rdkafka::Offset::Offset(1))];
    ensure!(offsets == expected, "group {group} has {offsets:?}, expected {expected:?}");
    Ok(())
}
