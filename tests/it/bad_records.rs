//! Poison input never stalls a query: every bad-record class goes to the
//! dead-letter topic byte for byte (or is dropped, or stops the batch before
//! it writes anything), and the valid messages of the batch flow normally.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::child::*;
use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;
use crate::tools::{read_committed_records, Record};

/// One message of every bad-record class with the reason code it must get;
/// `None` is a null value.
pub(crate) fn bad_messages() -> Vec<(&'static str, Option<Vec<u8>>)> {
    let example = example_message().to_string();
    let with = |field: &str, value: serde_json::Value| {
        let mut m = example_message();
        m[field] = value;
        Some(m.to_string().into_bytes())
    };
    let mut missing = example_message();
    missing.as_object_mut().unwrap().remove("adv_campaign_owner");
    vec![
        ("empty", None),
        ("empty", Some(Vec::new())),
        ("not_utf8", Some(b"{\"restaurant_id\": \"\xff\xfe\"}".to_vec())),
        ("not_json", Some(b"{not json".to_vec())),
        ("truncated", Some(example.as_bytes()[..example.len() - 20].to_vec())),
        ("not_an_object", Some(b"[1, 2, 3]".to_vec())),
        ("several_values", Some(format!("{example}{example}").into_bytes())),
        ("missing_field", Some(missing.to_string().into_bytes())),
        ("null_field", with("adv_campaign_owner", serde_json::Value::Null)),
        ("wrong_type", with("datetime_created", "1659131516".into())),
        ("wrong_type", with("datetime_created", 1.9.into())),
        ("out_of_range", Some(example.replace("1659131516", "9223372036854775808").into_bytes())),
        ("duplicate_field", Some(example.replacen('{', r#"{"adv_campaign_id": "dup", "#, 1).into_bytes())),
        ("nul_character", with("adv_campaign_content", "bad \u{0} text".into())),
        ("ends_before_start", with("adv_campaign_datetime_end", 1659203515.into())),
        ("too_large", Some(example.replace("first campaign", &"x".repeat(300 * 1024)).into_bytes())),
    ]
}

fn dead_letters(job: &Job) -> Result<Vec<Record>> {
    let config = crate::tools::client_config(&job.kafka.bootstrap(), &[]);
    read_committed_records(&config, &job.dead_letters, Duration::from_secs(20))
}

/// Valid campaigns interleaved with every bad class, on one partition:
/// returns the ids of the valid ones and the bad messages in offset order.
async fn job_with_poison() -> Result<(Job, Vec<String>, Vec<(&'static str, Option<Vec<u8>>, i64)>)> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1", "c2"]).await?;
    let mut ids = Vec::new();
    let mut bad = Vec::new();
    let mut offset = 0;
    for (i, (reason, value)) in bad_messages().into_iter().enumerate() {
        let id = format!("valid-{i:02}");
        let valid = campaign(RESTAURANT, &id, 0, FOREVER).to_string();
        let key = format!("key-{i}");
        job.kafka.produce_records(
            &job.input,
            0,
            &[(None, Some(valid.as_bytes())), (Some(key.as_bytes()), value.as_deref())],
        )?;
        ids.push(id);
        bad.push((reason, value, offset + 1));
        offset += 2;
    }
    Ok((job, ids, bad))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_class_is_dead_lettered_byte_for_byte_and_the_rest_flows() -> Result<()> {
    let (job, ids, bad) = job_with_poison().await?;
    let summary = job.run_available_now(&[]).await?;
    assert_eq!(summary.malformed_rows, bad.len() as u64);
    assert_eq!(summary.output_rows, 2 * ids.len() as u64, "the valid campaigns reach both subscribers");
    assert_eq!(job.db.feedback().await?.len(), 2 * ids.len());
    assert_eq!(job.output_messages()?.len(), 2 * ids.len());

    let letters = dead_letters(&job)?;
    assert_eq!(letters.len(), bad.len(), "one dead letter per bad message");
    for ((reason, value, offset), letter) in bad.iter().zip(&letters) {
        let i = (offset - 1) / 2;
        assert_eq!(&letter.value, value, "offset {offset}: the original value byte for byte");
        assert_eq!(letter.key, Some(format!("key-{i}").into_bytes()), "offset {offset}: the original key");
        assert_eq!(letter.header("sparklet.error.reason").as_deref(), Some(*reason), "offset {offset}");
        assert_eq!(letter.header("sparklet.source.topic"), Some(job.input.clone()));
        assert_eq!(letter.header("sparklet.source.partition").as_deref(), Some("0"));
        assert_eq!(letter.header("sparklet.source.offset"), Some(offset.to_string()));
        assert!(letter.header("sparklet.error.message").is_some_and(|m| !m.is_empty()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_writes_its_dead_letters_once() -> Result<()> {
    let (job, ids, bad) = job_with_poison().await?;
    let _log = LogOnFailure(&job);
    // Both sinks commit batch 0, then the process dies before its commit log.
    let mut child = spawn(&job, &["--trigger", "available-now"], Some("before-commit-log@1"))?;
    ensure_crashed_at(&job, wait(&mut child, Duration::from_secs(60))?, "before-commit-log", 0)?;
    run_to_completion(&job, &[])?;
    let log = child_log(&job);
    ensure!(log.matches("batch already committed in sink").count() == 2, "the replay skipped both sinks:\n{log}");
    assert_eq!(dead_letters(&job)?.len(), bad.len(), "no duplicated dead letter");
    let clients = ["c1".to_string(), "c2".to_string()];
    assert_exactly_once(&job, &expected_pairs(&ids, &clients)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_mode_stops_before_writing_and_drop_mode_goes_past() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let valid = |id: &str| campaign(RESTAURANT, id, 0, FOREVER).to_string().into_bytes();
    job.kafka.produce_raw(&job.input, 0, &[&valid("a"), b"{oops", &valid("b")])?;

    let err = match job.run_available_now(&["--on-bad-record", "fail"]).await {
        Ok(summary) => anyhow::bail!("expected a stop, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    let at = format!("{}[0] offset 1", job.input);
    ensure!(err.contains(&at) && err.contains("not_json") && err.contains("--on-bad-record"), "{err}");
    assert!(job.db.feedback().await?.is_empty() && job.output_messages()?.is_empty(), "nothing written");

    let summary = job.run_available_now(&["--on-bad-record", "drop"]).await?;
    assert_eq!((summary.input_rows, summary.malformed_rows, summary.output_rows), (3, 1, 2));
    assert!(dead_letters(&job)?.is_empty(), "drop writes no dead letter");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_is_refused_at_start() -> Result<()> {
    let job = Job::new(1).await?;
    let err = match job.run_available_now(&["--dead-letter-topic", "no-such-topic"]).await {
        Ok(summary) => anyhow::bail!("expected a refusal, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("'no-such-topic' (--dead-letter-topic) does not exist"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cast_in_the_sql_names_file_batch_and_offsets_and_a_fix_replays_it() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    job.kafka.produce(
        &job.input,
        0,
        &[campaign(RESTAURANT, "a", 0, FOREVER), campaign(RESTAURANT, "b", 0, FOREVER)],
    )?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    let step = sql.path().join("10_active_campaigns.sql");
    let original = std::fs::read_to_string(&step)?;
    let failing = original.replacen("WHERE", "WHERE CAST(adv_campaign_content AS BIGINT) > 0 AND", 1);
    std::fs::write(&step, &failing)?;
    let sql_dir = sql.path().display().to_string();

    let err = match job.run_available_now(&["--sql-dir", &sql_dir]).await {
        Ok(summary) => anyhow::bail!("expected a SQL failure, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    let range = format!("{}[0] 0..2", job.input);
    ensure!(err.contains("10_active_campaigns.sql") && err.contains("batch 0") && err.contains(&range), "{err}");
    assert!(job.db.feedback().await?.is_empty());

    std::fs::write(&step, &original)?;
    let summary = job.run_available_now(&["--sql-dir", &sql_dir]).await?;
    assert_eq!((summary.batches, summary.output_rows), (1, 2), "the pending batch replayed with the fixed SQL");
    Ok(())
}
