//! `sparklet checkpoint show|verify|rewind|reset` on real checkpoints, run
//! as the binary: each refuses while the query runs, verify compares with
//! both sinks' markers, rewind adds a batch and reprocesses, reset starts a
//! new query.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::child::{self, LogOnFailure};
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

fn sparklet_checkpoint(job: &Job, args: &[&str]) -> Result<Output> {
    let dir = job.checkpoint.path().display().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .arg("checkpoint")
        .args(args)
        .args(["--checkpoint-dir", &dir])
        .env("RUST_LOG", "warn")
        .output()?;
    Ok(output)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A job whose three campaigns ran in three committed batches.
async fn three_batches() -> Result<(Job, Vec<String>)> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let ids: Vec<String> = (1..=3).map(|i| format!("campaign-{i}")).collect();
    for id in &ids {
        job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, id, 0, FOREVER)])?;
    }
    job.run_available_now(&["--max-offsets-per-trigger", "1"]).await?;
    Ok((job, ids))
}

fn clients() -> Vec<String> {
    vec!["c1".into(), "c2".into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_lists_the_batches_and_every_command_refuses_while_the_query_runs() -> Result<()> {
    let (job, _) = three_batches().await?;
    let shown = sparklet_checkpoint(&job, &["show"])?;
    ensure!(shown.status.success(), "{}", text(&shown));
    let out = text(&shown);
    ensure!(out.contains("last committed batch 2; pending none") && out.contains("partition:offset 0:3"), "{out}");
    ensure!(out.contains("batch 1 planned") && out.contains(&format!("read {}[0] 1..2", job.input)), "{out}");
    let json: Value = serde_json::from_slice(&sparklet_checkpoint(&job, &["show", "--json"])?.stdout)?;
    ensure!(json["lastCommitted"] == 2 && json["batches"].as_array().map(Vec::len) == Some(3), "{json}");

    let _log = LogOnFailure(&job);
    let mut running = child::spawn(&job, &["--trigger", "1s"], None)?;
    crate::http::wait_for_log(&job, "query started", Duration::from_secs(30))?;
    for command in [vec!["show"], vec!["verify"], vec!["rewind", "--to-batch", "0"], vec!["reset"]] {
        let refused = sparklet_checkpoint(&job, &command)?;
        ensure!(!refused.status.success(), "{command:?} ran beside the query");
        ensure!(text(&refused).contains("is in use by another sparklet process"), "{command:?}: {}", text(&refused));
    }
    child::signal(&running, "TERM")?;
    ensure!(child::wait(&mut running, Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_agrees_with_both_sinks_and_names_a_damaged_file() -> Result<()> {
    let (job, _) = three_batches().await?;
    let bootstrap = job.kafka.bootstrap();
    let sinks =
        ["verify", "--database-url", &job.db.url, "--bootstrap-servers", &bootstrap, "--marker-topic", &job.markers];
    let verified = sparklet_checkpoint(&job, &sinks)?;
    let out = text(&verified);
    ensure!(verified.status.success(), "{out}");
    ensure!(
        out.contains("postgres: newest marker batch 2 agrees") && out.contains("kafka: newest marker batch 2 agrees"),
        "{out}"
    );

    std::fs::write(job.checkpoint.path().join("commits").join("1"), b"{ not json")?;
    let damaged = sparklet_checkpoint(&job, &["verify"])?;
    ensure!(!damaged.status.success(), "{}", text(&damaged));
    ensure!(text(&damaged).contains("PROBLEM  commits/1"), "{}", text(&damaged));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_to_a_batch_reprocesses_from_its_start_and_keeps_history() -> Result<()> {
    let (job, ids) = three_batches().await?;
    let history = |id: u32| std::fs::read(job.checkpoint.path().join("offsets").join(id.to_string()));
    let before: Vec<Vec<u8>> = (0..3).map(history).collect::<Result<_, _>>()?;
    let rewound = sparklet_checkpoint(&job, &["rewind", "--to-batch", "1"])?;
    ensure!(rewound.status.success(), "{}", text(&rewound));
    ensure!(text(&rewound).contains("batch 3 committed"), "{}", text(&rewound));
    let after: Vec<Vec<u8>> = (0..3).map(history).collect::<Result<_, _>>()?;
    ensure!(before == after, "a rewind rewrote history");

    job.run_available_now(&[]).await?;
    let mut expected = expected_pairs(&ids, &clients());
    expected.extend(expected_pairs(&ids[1..], &clients()));
    expected.sort();
    let mut found: Vec<(String, String)> = job
        .db
        .feedback()
        .await?
        .iter()
        .map(|r| (r["adv_campaign_id"].as_str().unwrap().into(), r["client_id"].as_str().unwrap().into()))
        .collect();
    found.sort();
    ensure!(found == expected, "campaigns 2 and 3 should be there twice: {found:?}");
    let shown = text(&sparklet_checkpoint(&job, &["show"])?);
    ensure!(shown.contains("note: rewind to the start of batch 1"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_keeping_offsets_starts_a_new_query_where_the_old_one_stopped() -> Result<()> {
    let (job, ids) = three_batches().await?;
    let old_id = serde_json::from_slice::<Value>(&sparklet_checkpoint(&job, &["show", "--json"])?.stdout)?["queryId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let reset = sparklet_checkpoint(&job, &["reset", "--keep-offsets"])?;
    ensure!(reset.status.success(), "{}", text(&reset));
    let aside = job
        .checkpoint
        .path()
        .with_file_name(format!("{}.{old_id}", job.checkpoint.path().file_name().unwrap().to_string_lossy()));
    let kept = aside.join("offsets").join("2").exists();
    std::fs::remove_dir_all(&aside)?;
    ensure!(kept, "the old checkpoint was not kept at {}", aside.display());

    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "campaign-4", 0, FOREVER)])?;
    let summary = job.run_available_now(&["--starting-offsets", "earliest"]).await?;
    ensure!(summary.query_id != old_id, "the same query id after a reset");
    ensure!(summary.input_rows == 1, "the new query read {} messages, not just the new one", summary.input_rows);
    let mut all = ids.clone();
    all.push("campaign-4".into());
    assert_exactly_once(&job, &expected_pairs(&all, &clients())).await?;
    Ok(())
}

/// A time after the last message: the broker finds no offset at or after
/// it, so every partition rewinds to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_to_a_time_after_every_message_asks_the_broker_and_reprocesses_nothing() -> Result<()> {
    let (job, ids) = three_batches().await?;
    let later = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(60)).to_string();
    let bootstrap = job.kafka.bootstrap();
    let rewound = sparklet_checkpoint(&job, &["rewind", "--to-time", &later, "--bootstrap-servers", &bootstrap])?;
    ensure!(rewound.status.success(), "{}", text(&rewound));
    ensure!(text(&rewound).contains(&format!("{}[0] 3", job.input)), "{}", text(&rewound));
    ensure!(text(&rewound).contains("nothing is read again"), "{}", text(&rewound));
    let summary = job.run_available_now(&[]).await?;
    ensure!(summary.batches == 0, "{summary:?}");
    assert_exactly_once(&job, &expected_pairs(&ids, &clients())).await?;

    let no_broker = sparklet_checkpoint(&job, &["rewind", "--to-time", &later])?;
    ensure!(!no_broker.status.success() && text(&no_broker).contains("--bootstrap-servers"), "{}", text(&no_broker));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_takes_the_held_campaigns_back_with_the_offsets() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let held = |job: &Job| -> Result<u64> {
        let shown: Value = serde_json::from_slice(&sparklet_checkpoint(job, &["show", "--json"])?.stdout)?;
        Ok(shown["heldCampaigns"].as_u64().unwrap_or(u64::MAX))
    };
    let hold = ["--hold-future-campaigns", "true", "--max-offsets-per-trigger", "1"];
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "later", 3_900_000_000, FOREVER)])?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "now", 0, FOREVER)])?;
    job.run_available_now(&hold).await?;
    ensure!(held(&job)? == 1, "batch 0 holds 'later'");

    // Back to batch 1: 'later' was held before it and stays held.
    ensure!(sparklet_checkpoint(&job, &["rewind", "--to-batch", "1"])?.status.success());
    ensure!(held(&job)? == 1);
    // Back to batch 0: it reads 'later' again, so nothing may be held before it.
    ensure!(sparklet_checkpoint(&job, &["rewind", "--to-batch", "0"])?.status.success());
    ensure!(held(&job)? == 0);
    job.run_available_now(&hold).await?;
    ensure!(held(&job)? == 1, "'later' held once, not twice");
    Ok(())
}

/// A time between two messages: the broker's offsets-for-times lookup finds
/// the first message at or after it (the producer's timestamps), and only
/// what follows is read again, in a new batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_to_a_time_between_messages_reprocesses_what_follows_it() -> Result<()> {
    let (job, ids) = three_batches().await?;
    let between = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "campaign-4", 0, FOREVER)])?;
    job.run_available_now(&[]).await?;
    let at = humantime::format_rfc3339_millis(between).to_string();
    let bootstrap = job.kafka.bootstrap();
    let rewound = sparklet_checkpoint(&job, &["rewind", "--to-time", &at, "--bootstrap-servers", &bootstrap])?;
    ensure!(rewound.status.success(), "{}", text(&rewound));
    ensure!(text(&rewound).contains(&format!("{}[0] 3", job.input)), "offset 3 is campaign-4's: {}", text(&rewound));
    let summary = job.run_available_now(&[]).await?;
    ensure!(summary.input_rows == 1, "only campaign-4 is read again: {summary:?}");
    // campaign-4 twice in each sink (a rewind asks for that), the rest once.
    let count = |rows: &[Value]| rows.iter().filter(|r| r["adv_campaign_id"] == "campaign-4").count();
    let kafka: Vec<Value> = job.output_messages()?.into_iter().map(|(_, v)| v).collect();
    ensure!(count(&job.db.feedback().await?) == 4 && count(&kafka) == 4, "campaign-4 once more for 2 clients");
    ensure!(kafka.len() == 2 * ids.len() + 4, "{} messages", kafka.len());
    Ok(())
}
