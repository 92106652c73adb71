//! A job folder other than the seed's: its own input columns, output
//! columns written by name, an upsert key; and the start-up refusals when
//! the Postgres table cannot take the output. Against the real broker and
//! Postgres.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::child::{ensure_crashed_at, run_to_completion, spawn, wait};
use crate::support::*;

const FOREVER: &str = "2100-01-01T00:00:00Z";

fn example_dir() -> String {
    repo_path("examples/city_campaigns").display().to_string()
}

/// A job whose Postgres schema also has the example's tables.
async fn city_job() -> Result<Job> {
    let job = Job::new(2).await?;
    job.db.client.batch_execute(&std::fs::read_to_string(repo_path("examples/city_campaigns/schema.sql"))?).await?;
    job.db.client.batch_execute("INSERT INTO subscriber_profiles VALUES ('c1', 'ru')").await?;
    Ok(job)
}

fn city_campaign(id: &str, city: &str, image_url: Value) -> Value {
    json!({"restaurant_id": "r1", "adv_campaign_id": id, "adv_campaign_content": "Two for one", "city": city,
           "image_url": image_url, "starts_at": "2020-01-01T00:00:00Z", "ends_at": FOREVER})
}

/// `(adv_campaign_id, client_id, title)` of each notification row.
async fn notifications(job: &Job) -> Result<Vec<(String, String, String)>> {
    let rows = job
        .db
        .client
        .query("SELECT adv_campaign_id, client_id, title FROM campaign_notifications ORDER BY 1, 2", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// The city job on 9 campaigns (one in a city it does not serve, one with a
/// bad picture address) in batches of 4, crashed at `point` in the second
/// batch and recovered: each notification once in both sinks.
async fn city_crash_then_recover(point: &str) -> Result<()> {
    let job = city_job().await?;
    job.db.add_subscribers("r1", &["c1", "c2"]).await?;
    let mut ids = Vec::new();
    for i in 0..8 {
        let id = format!("camp-{i}");
        let city = if i == 5 { "Paris" } else { "Kazan" };
        job.kafka.produce(&job.input, i % 2, &[city_campaign(&id, city, json!(format!("https://img/{i}.png")))])?;
        ids.push(id);
    }
    job.kafka.produce(&job.input, 0, &[city_campaign("bad-url", "Kazan", json!("http://img/x.png"))])?;
    let extra = ["--sql-dir", &example_dir(), "--max-offsets-per-trigger", "4"];
    let mut crashed = extra.to_vec();
    crashed.extend(["--trigger", "available-now"]);
    let crash = format!("{point}@2");
    let status = wait(&mut spawn(&job, &crashed, Some(&crash))?, Duration::from_secs(60))?;
    ensure_crashed_at(&job, status, point, 1)?;
    run_to_completion(&job, &extra)?;

    let mut expected: Vec<(String, String, String)> = Vec::new();
    for id in ids.iter().filter(|id| *id != "camp-5") {
        expected.push((id.clone(), "c1".to_string(), "Акция: Two for one (Kazan)".to_string()));
        expected.push((id.clone(), "c2".to_string(), "Deal: Two for one (Kazan)".to_string()));
    }
    expected.sort();
    assert_eq!(notifications(&job).await?, expected, "Postgres: each notification once, Paris filtered out");
    crate::exactly_once::settle_output(&job).await?;
    let mut kafka: Vec<(String, String, String)> = job
        .output_messages()?
        .into_iter()
        .map(|(key, v)| {
            assert_eq!(key, v["client_id"].as_str().unwrap_or_default(), "keyed by client_id");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("adv_campaign_id"), s("client_id"), s("title"))
        })
        .collect();
    kafka.sort();
    assert_eq!(kafka, expected, "Kafka: the same rows, each once");
    let letters = job.kafka.read_committed(&job.dead_letters)?;
    ensure!(letters.len() == 1, "one dead letter: {letters:?}");
    Ok(())
}

/// As the seed job's `a_crash_at_every_crash_point_is_recovered_exactly_once`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_city_job_is_recovered_exactly_once_from_a_crash_at_every_crash_point() -> Result<()> {
    for point in sparklet::crash::POINTS {
        city_crash_then_recover(point).await.with_context(|| format!("crash point {point}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sent_twice_is_upserted_the_last_row_winning() -> Result<()> {
    let job = city_job().await?;
    job.db.add_subscribers("r1", &["c1"]).await?;
    let mut first = city_campaign("camp-1", "Kazan", Value::Null);
    job.kafka.produce(&job.input, 0, &[first.clone()])?;
    first["discount_percent"] = json!(20);
    job.kafka.produce(&job.input, 0, &[first.clone()])?;
    job.run_available_now(&["--sql-dir", &example_dir()]).await?;
    let one = vec![("camp-1".to_string(), "c1".to_string(), "Акция: Two for one (Kazan) -20%".to_string())];
    assert_eq!(notifications(&job).await?, one, "two rows of a key in one batch: one row, the last");
    first["discount_percent"] = json!(30);
    job.kafka.produce(&job.input, 1, &[first])?;
    job.run_available_now(&["--sql-dir", &example_dir()]).await?;
    let rows = notifications(&job).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "Акция: Two for one (Kazan) -30%", "a later batch updates the row");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_output_column_the_table_has_reaches_both_sinks() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers("123e4567-e89b-12d3-a456-426614174000", &["c1"]).await?;
    job.db.client.batch_execute("ALTER TABLE subscribers_feedback ADD COLUMN owner_upper text").await?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    let feedback = std::fs::read_to_string(sql.path().join("20_feedback.sql"))?;
    let feedback = feedback.replace("s.client_id,", "s.client_id, upper(c.adv_campaign_owner) AS owner_upper,");
    std::fs::write(sql.path().join("20_feedback.sql"), feedback)?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    job.run_available_now(&["--sql-dir", sql.path().to_str().unwrap()]).await?;
    let kafka = job.output_messages()?;
    assert_eq!(kafka[0].1["owner_upper"], "IVANOV IVAN IVANOVICH");
    let keys: Vec<&String> = kafka[0].1.as_object().unwrap().keys().collect();
    assert_eq!(keys[8], "owner_upper", "in the query's order: {keys:?}");
    let row = job.db.client.query_one("SELECT owner_upper FROM subscribers_feedback", &[]).await?;
    assert_eq!(row.get::<_, String>(0), "IVANOV IVAN IVANOVICH");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_take_the_output_is_refused_at_start_naming_every_problem() -> Result<()> {
    let job = Job::new(1).await?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    job.db.client.batch_execute("ALTER TABLE subscribers_feedback ADD COLUMN needed text NOT NULL").await?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    let feedback = std::fs::read_to_string(sql.path().join("20_feedback.sql"))?
        .replace("s.client_id,", "s.client_id, upper(c.adv_campaign_owner) AS owner_upper,")
        .replace("c.datetime_created,", "CAST(c.datetime_created AS VARCHAR) AS datetime_created,");
    std::fs::write(sql.path().join("20_feedback.sql"), feedback)?;
    let err = match job.run_available_now(&["--sql-dir", sql.path().to_str().unwrap()]).await {
        Ok(summary) => panic!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.starts_with("postgres: table subscribers_feedback on "), "{err}");
    for problem in [
        "column owner_upper: the table has no such column",
        "column datetime_created: the last step gives text, which cannot be written to bigint",
        "column needed: NOT NULL without a default, and the last step does not fill it",
    ] {
        assert!(err.contains(problem), "{problem}\nin: {err}");
    }
    assert!(!job.checkpoint.path().join("offsets/0").exists(), "nothing planned");
    assert!(job.output_messages()?.is_empty(), "nothing written to Kafka");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_key_without_a_unique_index_is_refused_at_start() -> Result<()> {
    let job = city_job().await?;
    job.db
        .client
        .batch_execute("ALTER TABLE campaign_notifications DROP CONSTRAINT campaign_notifications_pkey")
        .await?;
    let err = match job.run_available_now(&["--sql-dir", &example_dir()]).await {
        Ok(summary) => panic!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("upsert key (adv_campaign_id, client_id): no unique index"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_written_type_round_trips_through_binary_copy() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers("123e4567-e89b-12d3-a456-426614174000", &["c1"]).await?;
    job.db
        .client
        .batch_execute(
            "CREATE TABLE typed (client_id varchar(10) NOT NULL, i2 int2, i4 int8, i8 int8, f4 float8, f8 float8,
             b bool, ts timestamptz, d date, missing text, id serial PRIMARY KEY)",
        )
        .await?;
    let sql = tempfile::tempdir()?;
    copy_sql(sql.path())?;
    std::fs::write(
        sql.path().join("job.toml"),
        "[sink.kafka]\nkey = \"client_id\"\n[sink.postgres]\ntable = \"typed\"\n",
    )?;
    std::fs::write(
        sql.path().join("20_feedback.sql"),
        "SELECT s.client_id, CAST(-2 AS SMALLINT) AS i2, CAST(40000 AS INT) AS i4, CAST(-9000000000 AS BIGINT) AS i8,
                CAST(1.5 AS REAL) AS f4, CAST(2.25 AS DOUBLE) AS f8, true AS b,
                to_timestamp_micros(1704164645123456) AS ts, CAST('2024-01-02' AS DATE) AS d,
                CAST(NULL AS VARCHAR) AS missing
         FROM active_campaigns c JOIN subscribers s ON s.restaurant_id = c.restaurant_id",
    )?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    job.run_available_now(&["--sql-dir", sql.path().to_str().unwrap()]).await?;
    let row = job
        .db
        .client
        .query_one(
            "SELECT client_id, i2, i4, i8, f4, f8, b, extract(epoch FROM ts)::text, d::text, missing IS NULL FROM typed",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "c1");
    assert_eq!((row.get::<_, i16>(1), row.get::<_, i64>(2), row.get::<_, i64>(3)), (-2, 40000, -9_000_000_000));
    assert_eq!((row.get::<_, f64>(4), row.get::<_, f64>(5), row.get::<_, bool>(6)), (1.5, 2.25, true));
    assert_eq!((row.get::<_, String>(7), row.get::<_, String>(8)), ("1704164645.123456".into(), "2024-01-02".into()));
    assert!(row.get::<_, bool>(9), "NULL is written as NULL");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reads_the_lookup_version_its_batch_was_planned_with() -> Result<()> {
    let job = city_job().await?;
    job.db.add_subscribers("r1", &["c1"]).await?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-1", "Kazan", Value::Null)])?;
    let args = ["--sql-dir", &example_dir(), "--trigger", "available-now"];
    let status = wait(&mut spawn(&job, &args, Some("after-write-ahead@1"))?, Duration::from_secs(60))?;
    ensure_crashed_at(&job, status, "after-write-ahead", 0)?;
    let plan: Value = serde_json::from_slice(&std::fs::read(job.checkpoint.path().join("offsets/0"))?)?;
    let pinned = plan["lookups"]["profiles"].as_str().unwrap_or_default().to_string();
    ensure!(pinned.starts_with("profiles-"), "the plan pins the lookup's version: {plan}");
    ensure!(job.checkpoint.path().join(format!("snapshots/lookups/{pinned}.arrow")).exists(), "saved before the plan");

    job.db.client.batch_execute("UPDATE subscriber_profiles SET language = 'de' WHERE client_id = 'c1'").await?;
    job.kafka.produce(&job.input, 1, &[city_campaign("camp-2", "Kazan", Value::Null)])?;
    run_to_completion(&job, &["--sql-dir", &example_dir()])?;
    let titles: Vec<String> = notifications(&job).await?.into_iter().map(|n| n.2).collect();
    assert_eq!(
        titles,
        ["Акция: Two for one (Kazan)", "Angebot: Two for one (Kazan)"],
        "batch 0 replayed with the profiles it was planned with; batch 1 with the new ones"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_query_that_fails_or_gives_an_unread_type_stops_the_start_naming_its_file() -> Result<()> {
    let job = city_job().await?;
    let dir = tempfile::tempdir()?;
    copy_dir(&repo_path("examples/city_campaigns"), dir.path())?;
    let sql_dir = dir.path().display().to_string();
    let start_error = async |job: &Job| match job.run_available_now(&["--sql-dir", &sql_dir]).await {
        Ok(summary) => panic!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    std::fs::write(dir.path().join("profiles.sql"), "SELECT client_id, language FROM no_such_profiles")?;
    let err = start_error(&job).await;
    assert!(
        err.contains("profiles.sql") && err.contains("lookup profiles") && err.contains("no_such_profiles"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("profiles.sql"),
        "SELECT client_id, 1.5::numeric AS language FROM subscriber_profiles",
    )?;
    let err = start_error(&job).await;
    assert!(err.contains("column language is numeric") && err.contains("::float8"), "{err}");
    assert!(!job.checkpoint.path().join("offsets/0").exists(), "nothing planned");
    Ok(())
}

/// Runs `sparklet check` on `dir` against `job`'s database and topics.
fn check(job: &Job, dir: &str, input_topic: &str) -> Result<(bool, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(["check", "--sql-dir", dir, "--database-url", &job.db.url])
        .args([
            "--bootstrap-servers",
            &job.kafka.bootstrap(),
            "--input-topic",
            input_topic,
            "--output-topic",
            &job.output,
        ])
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparklet_check_passes_a_good_job_and_lists_every_problem_of_a_broken_one() -> Result<()> {
    let job = city_job().await?;
    let (ok, text) = check(&job, &example_dir(), &job.input)?;
    assert!(ok, "{text}");
    assert!(text.contains("ok: lookup profiles: 2 columns") && text.contains("can run"), "{text}");
    assert!(text.contains("ok: output: adv_campaign_id, client_id, city, title, language"), "{text}");

    job.db.client.batch_execute("ALTER TABLE campaign_notifications DROP COLUMN language").await?;
    let (ok, text) = check(&job, &example_dir(), "no-such-topic")?;
    assert!(!ok, "{text}");
    assert!(
        text.contains("problem: postgres: table campaign_notifications") && text.contains("column language"),
        "{text}"
    );
    assert!(text.contains("problem: kafka: topic 'no-such-topic' does not exist"), "{text}");
    assert!(text.contains("has 2 problem(s)"), "{text}");

    let dir = tempfile::tempdir()?;
    copy_dir(&repo_path("examples/city_campaigns"), dir.path())?;
    std::fs::write(dir.path().join("input.sql"), "CREATE TABLE campaigns (\n  city TEXT NOT NULL,\n  price MONEY\n)")?;
    let (ok, text) = check(&job, &dir.path().display().to_string(), &job.input)?;
    assert!(!ok && text.contains("input.sql:3:3: column price: type MONEY is not supported"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_options_override_the_job_folders() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers("123e4567-e89b-12d3-a456-426614174000", &["c1"]).await?;
    job.db.client.batch_execute("CREATE TABLE other_feedback (LIKE subscribers_feedback INCLUDING ALL)").await?;
    job.kafka.produce(&job.input, 0, &[example_message()])?;
    let extra = ["--postgres-table", "other_feedback", "--kafka-key-column", "adv_campaign_id"];
    job.run_available_now(&extra).await?;
    let count = |table: &str| format!("SELECT count(*) FROM {table}");
    assert_eq!(job.db.client.query_one(&count("other_feedback"), &[]).await?.get::<_, i64>(0), 1);
    assert_eq!(job.db.client.query_one(&count("subscribers_feedback"), &[]).await?.get::<_, i64>(0), 0);
    let messages = job.output_messages()?;
    assert_eq!(messages[0].0, "123e4567-e89b-12d3-a456-426614174003", "keyed by the overriding column");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reading_a_column_the_input_does_not_declare_is_refused_at_start() -> Result<()> {
    let job = city_job().await?;
    let dir = tempfile::tempdir()?;
    copy_dir(&repo_path("examples/city_campaigns"), dir.path())?;
    let step = std::fs::read_to_string(dir.path().join("10_active.sql"))?;
    std::fs::write(dir.path().join("10_active.sql"), step.replace("AND city IN", "AND country = 'RU' AND city IN"))?;
    let err = match job.run_available_now(&["--sql-dir", &dir.path().display().to_string()]).await {
        Ok(summary) => panic!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("10_active.sql") && err.contains("country"), "{err}");
    Ok(())
}
