//! One query in shards over several `sparklet` processes (child processes
//! sharing a checkpoint directory, as pods sharing a volume): 3 shards in 2
//! processes over a 6-partition input; one process SIGKILLed and restarted
//! while the other runs; the shards moved to 3 processes (`--shard-ids auto`
//! with a new `--replicas`) mid-stream; the query repartitioned from 3 to 2
//! shards. After every step both sinks hold every (campaign, subscriber)
//! pair once. Each step's expected/found/duplicated counts are printed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::child::*;
use crate::exactly_once::{check_exactly_once, expected_pairs};
use crate::support::*;

const PARTITIONS: i32 = 6;

/// A `sparklet run` child playing StatefulSet pod `pod`.
fn pod(job: &Job, pod: &str, extra: &[&str]) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(job.checkpoint.path().join("child.log"))?;
    let mut args = vec!["--trigger", "0s", "--max-offsets-per-trigger", "2"];
    args.extend_from_slice(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(job.args(&args))
        .env("SPARKLET_POD_NAME", pod)
        .env("RUST_LOG", "info,rdkafka=warn")
        .env_remove("SPARKLET_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(child)
}

/// SIGTERM: the pod finishes its batches, commits and exits 0.
fn stop(job: &Job, mut child: Child) -> Result<()> {
    signal(&child, "TERM")?;
    let status = wait(&mut child, Duration::from_secs(60))?;
    ensure!(status.success(), "a pod did not stop cleanly ({status}):\n{}", child_log(job));
    Ok(())
}

/// Produces `n` campaigns named `<step>-<i>`, round-robin over every partition.
fn produce(job: &Job, step: &str, n: usize, ids: &mut Vec<String>) -> Result<()> {
    for partition in 0..PARTITIONS {
        let mine: Vec<String> =
            (0..n).filter(|i| *i as i32 % PARTITIONS == partition).map(|i| format!("{step}-{i:03}")).collect();
        let messages: Vec<Value> = mine.iter().map(|id| campaign(RESTAURANT, id, 0, FOREVER)).collect();
        job.kafka.produce(&job.input, partition, &messages)?;
        ids.extend(mine);
    }
    Ok(())
}

/// Whether one of `shards` has a planned batch without a commit.
fn mid_batch(job: &Job, shards: &[u32]) -> bool {
    let latest = |shard: u32, dir: &str| -> Option<u64> {
        std::fs::read_dir(job.checkpoint.path().join(format!("shards/{shard}/{dir}")))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .max()
    };
    shards.iter().any(|s| latest(*s, "offsets") > latest(*s, "commits"))
}

fn pair(v: &Value) -> (String, String) {
    (v["adv_campaign_id"].as_str().unwrap_or("").to_string(), v["client_id"].as_str().unwrap_or("").to_string())
}

/// Waits until both sinks hold as many rows as expected pairs, then checks
/// them exactly once, row for row, with no allowance (a killed process's
/// open transaction is aborted by the broker and hidden from
/// `read_committed` readers). Prints the step's row.
async fn check_step(job: &Job, step: &str, ids: &[String], clients: &[String]) -> Result<()> {
    let expected = expected_pairs(ids, clients);
    let want = expected.len();
    let waited = wait_until(&format!("{step}: {want} rows in both sinks"), Duration::from_secs(150), async || {
        Ok(job.db.feedback().await?.len() >= want && job.output_messages()?.len() >= want)
    })
    .await;
    let pg = job.db.feedback().await?;
    let kafka: Vec<Value> = job.output_messages()?.into_iter().map(|(_, v)| v).collect();
    let distinct = |rows: &[Value]| rows.iter().map(pair).collect::<std::collections::BTreeSet<_>>().len();
    eprintln!(
        "shards step | {step:<34} | expected {want:>4} | postgres found {:>4} duplicated {:>3} | kafka found {:>4} duplicated {:>3}",
        distinct(&pg),
        pg.len() - distinct(&pg),
        distinct(&kafka),
        kafka.len() - distinct(&kafka)
    );
    waited.map_err(|e| anyhow::anyhow!("{e}\n{}", child_log(job)))?;
    check_exactly_once(&pg, &kafka, &expected).with_context(|| step.to_string())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_over_processes_stay_exactly_once_through_kills_moves_and_a_repartition() -> Result<()> {
    let job = Job::new(PARTITIONS).await?;
    let _log = LogOnFailure(&job);
    let clients: Vec<String> = (0..3).map(|i| format!("client-{i}")).collect();
    let refs: Vec<&str> = clients.iter().map(String::as_str).collect();
    job.db.add_subscribers(RESTAURANT, &refs).await?;
    let mut ids = Vec::new();
    let auto = |replicas: &'static str| ["--shards", "3", "--shard-ids", "auto", "--replicas", replicas];

    // 3 shards in 2 processes: pod 0 runs shards 0 and 2, pod 1 shard 1.
    let mut pod0 = pod(&job, "sparklet-0", &auto("2"))?;
    let pod1 = pod(&job, "sparklet-1", &auto("2"))?;
    produce(&job, "start", 60, &mut ids)?;
    check_step(&job, "3 shards in 2 processes", &ids, &clients).await?;
    for shard in 0..3 {
        ensure!(job.checkpoint.path().join(format!("shards/{shard}/commits")).read_dir()?.next().is_some());
    }

    // Pod 0 SIGKILLed mid-stream while pod 1 keeps running, then restarted.
    produce(&job, "kill", 60, &mut ids)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !mid_batch(&job, &[0, 2]) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pod0.kill()?;
    pod0.wait()?;
    ensure!(mid_batch(&job, &[0, 2]), "the kill did not land inside a batch of pod 0's shards");
    produce(&job, "while-down", 30, &mut ids)?;
    // Both of pod 0's shards may have left a transaction open on the shared
    // marker topic; the restarted pod's first shard to recover waits for the
    // other's, which ends only when that shard's producer is initialised or
    // the transaction times out (60 s). A known limit (`docs/limits.md`): the restart
    // gets a --kafka-timeout that outlasts it.
    let restart = [auto("2").as_slice(), &["--kafka-timeout", "70s"]].concat();
    let pod0 = pod(&job, "sparklet-0", &restart)?;
    check_step(&job, "pod 0 SIGKILLed in a batch, restarted", &ids, &clients).await?;

    // Replicas 2 -> 3 mid-stream, one pod at a time: the new pod 2 waits
    // until old pod 0 has handed shard 2 over.
    produce(&job, "move", 60, &mut ids)?;
    let pod2 = pod(&job, "sparklet-2", &auto("3"))?;
    stop(&job, pod0)?;
    let pod0 = pod(&job, "sparklet-0", &auto("3"))?;
    produce(&job, "moving", 30, &mut ids)?;
    stop(&job, pod1)?;
    let pod1 = pod(&job, "sparklet-1", &auto("3"))?;
    check_step(&job, "replicas 2 -> 3 (shards moved)", &ids, &clients).await?;

    // Repartition 3 -> 2 shards: stop every pod, repartition, 2 pods.
    produce(&job, "repartition", 30, &mut ids)?;
    for p in [pod0, pod1, pod2] {
        stop(&job, p)?;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(["checkpoint", "repartition", "--checkpoint-dir"])
        .arg(job.checkpoint.path())
        .args(["--shards", "2", "--bootstrap-servers", &job.kafka.bootstrap()])
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success() && said.contains("3 shard(s) -> 2"), "repartition failed: {said}");
    let two = ["--shards", "2", "--shard-ids", "auto", "--replicas", "2"];
    // The old count is refused now.
    let refused = wait(&mut pod(&job, "sparklet-0", &auto("2"))?, Duration::from_secs(60))?;
    ensure!(!refused.success() && child_log(&job).contains("checkpoint repartition"), "--shards 3 not refused");
    let (pod0, pod1) = (pod(&job, "sparklet-0", &two)?, pod(&job, "sparklet-1", &two)?);
    produce(&job, "after", 30, &mut ids)?;
    check_step(&job, "repartitioned 3 -> 2 shards", &ids, &clients).await?;
    stop(&job, pod0)?;
    stop(&job, pod1)?;
    ensure!(job.checkpoint.path().join("retired").read_dir()?.count() == 1, "the old layout is kept in retired/");
    Ok(())
}
