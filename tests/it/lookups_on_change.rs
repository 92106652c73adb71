//! A lookup with `refresh = "on-change"` (the city job's `profiles`,
//! watching `subscriber_profiles`): the trigger installed at start, a
//! profile changed mid-run used by the next batch, one version per writing
//! transaction, forged notifications ignored, and the configurations
//! refused at start before anything is written. Against the real broker and
//! Postgres.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use crate::support::*;

/// On change, with the periodic version check out of the way (1 h), so
/// only notifications, reconnects and the check before a plan can reload.
const ON_CHANGE: &str = "refresh = \"on-change\"\nversion_check = \"1h\"\nwatch = [\"subscriber_profiles\"]\n";

/// The city job's folder in a temporary directory, `[lookups.profiles]`
/// holding its `query` line and then `settings`.
fn city_folder(settings: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    copy_dir(&repo_path("examples/city_campaigns"), dir.path())?;
    let toml = std::fs::read_to_string(dir.path().join("job.toml"))?;
    let mut out = String::new();
    let mut in_profiles = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            in_profiles = line.trim() == "[lookups.profiles]";
        }
        if !in_profiles || line.starts_with('[') || line.starts_with("query") {
            out.push_str(line);
            out.push('\n');
        }
        if in_profiles && line.starts_with("query") {
            out.push_str(settings);
        }
    }
    std::fs::write(dir.path().join("job.toml"), out)?;
    Ok(dir)
}

fn sql_dir(dir: &Path) -> String {
    dir.display().to_string()
}

/// A job whose schema has the city job's tables, `c1` (Russian) subscribed
/// to `r1`.
async fn city_job() -> Result<Job> {
    let job = Job::new(1).await?;
    job.db.client.batch_execute(&std::fs::read_to_string(repo_path("examples/city_campaigns/schema.sql"))?).await?;
    job.db.client.batch_execute("INSERT INTO subscriber_profiles VALUES ('c1', 'ru')").await?;
    job.db.add_subscribers("r1", &["c1"]).await?;
    Ok(job)
}

fn city_campaign(id: &str) -> Value {
    json!({"restaurant_id": "r1", "adv_campaign_id": id, "adv_campaign_content": "Two for one", "city": "Kazan",
           "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2100-01-01T00:00:00Z"})
}

/// The notification titles, by campaign.
async fn titles(job: &Job) -> Result<Vec<String>> {
    let rows = job.db.client.query("SELECT title FROM campaign_notifications ORDER BY adv_campaign_id", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_changed_mid_run_is_used_by_the_next_batch() -> Result<()> {
    let job = city_job().await?;
    let folder = city_folder(ON_CHANGE)?;
    let running = job.start(&["--sql-dir", &sql_dir(folder.path()), "--trigger", "0s"])?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-1")])?;
    wait_until("the first batch", Duration::from_secs(30), async || Ok(titles(&job).await?.len() == 1)).await?;

    // Committed, then at once a campaign: the batch planned after the commit
    // must read the new language, notification or not.
    job.db.client.batch_execute("UPDATE subscriber_profiles SET language = 'de' WHERE client_id = 'c1'").await?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-2")])?;
    wait_until("the second batch", Duration::from_secs(30), async || Ok(titles(&job).await?.len() == 2)).await?;
    running.stop().await?;
    assert_eq!(titles(&job).await?, ["Акция: Two for one (Kazan)", "Angebot: Two for one (Kazan)"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_any_watched_table_even_in_another_schema_reloads_the_lookup() -> Result<()> {
    let job = city_job().await?;
    let other = unique("it_other");
    job.db
        .client
        .batch_execute(&format!(
            "CREATE SCHEMA {other}; CREATE TABLE {other}.overrides (client_id text, language text)"
        ))
        .await?;
    let settings = format!(
        "refresh = \"on-change\"\nversion_check = \"1h\"\nwatch = [\"subscriber_profiles\", \"{other}.overrides\"]\n"
    );
    let folder = city_folder(&settings)?;
    std::fs::write(
        folder.path().join("profiles.sql"),
        format!(
            "SELECT p.client_id, COALESCE(o.language, p.language) AS language
             FROM subscriber_profiles p LEFT JOIN {other}.overrides o USING (client_id)"
        ),
    )?;
    let running = job.start(&["--sql-dir", &sql_dir(folder.path()), "--trigger", "0s"])?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-1")])?;
    wait_until("the first batch", Duration::from_secs(30), async || Ok(titles(&job).await?.len() == 1)).await?;
    job.db.client.batch_execute(&format!("INSERT INTO {other}.overrides VALUES ('c1', 'de')")).await?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-2")])?;
    wait_until("the second batch", Duration::from_secs(30), async || Ok(titles(&job).await?.len() == 2)).await?;
    running.stop().await?;
    let installed: i64 =
        job.db.client.query_one(&format!("SELECT count(*) FROM {other}.sparklet_lookup_versions"), &[]).await?.get(0);
    job.db.client.batch_execute(&format!("DROP SCHEMA {other} CASCADE")).await?;
    assert_eq!(titles(&job).await?, ["Акция: Two for one (Kazan)", "Angebot: Two for one (Kazan)"]);
    assert_eq!(installed, 1, "the other table's version lives in its own schema");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_changes_a_watched_table_twice_bumps_its_version_once() -> Result<()> {
    let job = city_job().await?;
    let folder = city_folder(ON_CHANGE)?;
    let args = ["--sql-dir", &sql_dir(folder.path())];
    job.run_available_now(&args).await?; // installs the trigger
    job.run_available_now(&args).await?; // finds it installed
    let other = connect(&job.db.url).await?;
    let version = async || -> Result<i64> {
        let sql = "SELECT version FROM sparklet_lookup_versions WHERE table_oid = 'subscriber_profiles'::regclass";
        Ok(other.query_one(sql, &[]).await?.get(0))
    };
    assert_eq!(version().await?, 0);
    job.db
        .client
        .batch_execute(
            "BEGIN; INSERT INTO subscriber_profiles VALUES ('c2', 'en');
             UPDATE subscriber_profiles SET language = 'de' WHERE client_id = 'c1'",
        )
        .await?;
    assert_eq!(version().await?, 0, "not before the commit");
    job.db.client.batch_execute("COMMIT").await?;
    assert_eq!(version().await?, 1, "two statements in one transaction are one change");
    // A writer whose search_path does not name the schema still bumps it.
    let schema = &job.db.schema;
    other
        .batch_execute(&format!(
            "SET search_path TO public; DELETE FROM {schema}.subscriber_profiles WHERE client_id = 'c2';
             SET search_path TO {schema}"
        ))
        .await?;
    assert_eq!(version().await?, 2);
    job.db.client.batch_execute("TRUNCATE subscriber_profiles").await?;
    assert_eq!(version().await?, 3, "a TRUNCATE is a change");
    job.db
        .client
        .batch_execute(
            "BEGIN; TRUNCATE subscriber_profiles; INSERT INTO subscriber_profiles VALUES ('c1', 'ru'); COMMIT",
        )
        .await?;
    assert_eq!(version().await?, 4, "a TRUNCATE and a row in one transaction are one change");
    Ok(())
}

/// How often `subscriber_profiles` was read whole (the lookup's query is a
/// sequential scan; Postgres's statistics report it within a second or so).
async fn profile_scans(job: &Job) -> Result<i64> {
    job.db.client.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    let sql = "SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relid = 'subscriber_profiles'::regclass";
    Ok(job.db.client.query_one(sql, &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notifications_cause_no_reload_and_a_committed_change_reloads_without_a_batch() -> Result<()> {
    let job = city_job().await?;
    let folder = city_folder(ON_CHANGE)?;
    // One trigger at start (no data: no plan), then none for 10 minutes.
    let running = job.start(&["--sql-dir", &sql_dir(folder.path()), "--trigger", "10m"])?;
    wait_until("the first load", Duration::from_secs(30), async || Ok(profile_scans(&job).await? >= 1)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the listener is up, the statistics settled
    let before = profile_scans(&job).await?;

    // Any role that can connect can NOTIFY, naming the watched table or not.
    let oid: u32 = job.db.client.query_one("SELECT 'subscriber_profiles'::regclass::oid", &[]).await?.get(0);
    for payload in [oid.to_string(), "garbage".to_string(), "999999999".to_string()] {
        for _ in 0..20 {
            job.db.client.batch_execute(&format!("NOTIFY sparklet_lookups_changed, '{payload}'")).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reloads = profile_scans(&job).await? - before;
    ensure!(reloads == 0, "forged notifications reloaded the lookup {reloads} times");

    // A committed change (an INSERT scans nothing) is loaded with no batch run.
    job.db.client.batch_execute("INSERT INTO subscriber_profiles VALUES ('c2', 'de')").await?;
    wait_until("the change loaded", Duration::from_secs(10), async || Ok(profile_scans(&job).await? > before)).await?;
    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_while_the_listener_was_cut_is_loaded_when_it_reconnects() -> Result<()> {
    let job = city_job().await?;
    let folder = city_folder(ON_CHANGE)?;
    let running = job.start(&["--sql-dir", &sql_dir(folder.path()), "--trigger", "10m"])?;
    wait_until("the first load", Duration::from_secs(30), async || Ok(profile_scans(&job).await? >= 1)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = profile_scans(&job).await?;
    // Its notification may never come: the version read at reconnect finds it.
    ensure!(job.db.terminate_other_connections().await? >= 1, "no listener connection to cut");
    job.db.client.batch_execute("INSERT INTO subscriber_profiles VALUES ('c2', 'de')").await?;
    wait_until("the change loaded after reconnecting", Duration::from_secs(20), async || {
        Ok(profile_scans(&job).await? > before)
    })
    .await?;
    running.stop().await?;
    Ok(())
}

/// The start error of the city job with `[lookups.profiles]` set as
/// `settings`, after checking that nothing was planned or written.
async fn refused(job: &Job, settings: &str, extra: &[&str]) -> Result<String> {
    let folder = city_folder(settings)?;
    let mut args = vec!["--sql-dir".to_string(), sql_dir(folder.path())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = match job.run_available_now(&args).await {
        Ok(summary) => anyhow::bail!("expected a start error, got {summary:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(!job.checkpoint.path().join("offsets/0").exists(), "a batch was planned: {err}");
    ensure!(titles(job).await?.is_empty() && job.output_messages()?.is_empty(), "something was written: {err}");
    Ok(err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_lookup_configuration_fails_the_start_naming_it_and_writes_nothing() -> Result<()> {
    let job = city_job().await?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-1")])?;
    let err = refused(&job, "refresh = \"on-change\"\n", &[]).await?;
    ensure!(err.contains("job.toml: [lookups.profiles] refresh = \"on-change\" needs watch = ["), "{err}");
    let err = refused(&job, "refresh = \"30s\"\nwatch = [\"subscriber_profiles\"]\n", &[]).await?;
    ensure!(err.contains("[lookups.profiles] watch is only read with refresh = \"on-change\""), "{err}");
    let err = refused(&job, "refresh = \"on-change\"\nwatch = [\"no_such_profiles\"]\n", &[]).await?;
    ensure!(err.contains("job.toml: [lookups.profiles] watch: table no_such_profiles does not exist on "), "{err}");
    let installed: bool =
        job.db.client.query_one("SELECT to_regclass('sparklet_lookup_versions') IS NOT NULL", &[]).await?.get(0);
    ensure!(!installed, "a refused configuration installed the version table");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparklet_check_names_a_watched_table_that_does_not_exist() -> Result<()> {
    let job = city_job().await?;
    let folder = city_folder("refresh = \"on-change\"\nwatch = [\"subscriber_profiles\", \"no_such_profiles\"]\n")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(["check", "--sql-dir", &sql_dir(folder.path()), "--database-url", &job.db.url])
        .args(["--bootstrap-servers", &job.kafka.bootstrap(), "--input-topic", &job.input])
        .args(["--output-topic", &job.output])
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(!out.status.success(), "{text}");
    ensure!(text.contains("[lookups.profiles] watch: table no_such_profiles does not exist"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_a_watched_table_is_refused_naming_the_table_and_the_fix() -> Result<()> {
    let job = city_job().await?;
    let role = unique("it_reader");
    let schema = &job.db.schema;
    job.db
        .client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT ON subscriber_profiles TO {role}"
        ))
        .await?;
    let url = job.db.url.replacen("postgres@", &format!("{role}@"), 1);
    let err = refused(&job, ON_CHANGE, &["--database-url", &url]).await?;
    job.db.client.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}")).await?;
    ensure!(
        err.contains(
            "[lookups.profiles] refresh = \"on-change\": installing the change trigger on table subscriber_profiles"
        ) && err.contains("as the table's owner")
            && err.contains("or use an interval refresh"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_straight_into_a_partition_of_a_watched_table_reloads_the_lookup() -> Result<()> {
    let job = city_job().await?;
    job.db
        .client
        .batch_execute(
            "CREATE TABLE overrides (client_id text, language text) PARTITION BY LIST (language);
             CREATE TABLE overrides_de PARTITION OF overrides FOR VALUES IN ('de')",
        )
        .await?;
    let settings = "refresh = \"on-change\"\nversion_check = \"1h\"\nwatch = [\"overrides\"]\n";
    let folder = city_folder(settings)?;
    std::fs::write(
        folder.path().join("profiles.sql"),
        "SELECT p.client_id, COALESCE(o.language, p.language) AS language
         FROM subscriber_profiles p LEFT JOIN overrides o USING (client_id)",
    )?;
    let running = job.start(&["--sql-dir", &sql_dir(folder.path()), "--trigger", "0s"])?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-1")])?;
    wait_until("the first batch", Duration::from_secs(30), async || Ok(titles(&job).await?.len() == 1)).await?;
    job.db.client.batch_execute("INSERT INTO overrides_de VALUES ('c1', 'de')").await?;
    job.kafka.produce(&job.input, 0, &[city_campaign("camp-2")])?;
    wait_until("the second batch", Duration::from_secs(30), async || Ok(titles(&job).await?.len() == 2)).await?;
    running.stop().await?;
    assert_eq!(titles(&job).await?, ["Акция: Two for one (Kazan)", "Angebot: Two for one (Kazan)"]);
    Ok(())
}
