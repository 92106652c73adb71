//! The database objects sparklet installs and the SQL it runs, against a
//! hostile neighbour: a role that can create functions in a schema of
//! sparklet's search_path. Every built-in sparklet calls is qualified with
//! `pg_catalog.`, so an exact-type overload placed in front of it (a
//! `pg_advisory_xact_lock(integer)` beside the catalog's `bigint` one, a
//! `format(text, text)` beside the catalog's variadic one) is never called.

use anyhow::{ensure, Result};

use crate::exactly_once::{assert_exactly_once, expected_pairs};
use crate::support::*;

/// Functions that record each call in `hostile_calls`, then do what the
/// built-in would.
const HOSTILE: &str = "
CREATE TABLE hostile_calls (name text NOT NULL);
CREATE FUNCTION pg_advisory_xact_lock(integer) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO hostile_calls VALUES ('pg_advisory_xact_lock'); SELECT pg_catalog.pg_advisory_xact_lock($1::bigint) $$;
CREATE FUNCTION format(text, text) RETURNS text LANGUAGE sql AS
  $$ INSERT INTO hostile_calls VALUES ('format'); SELECT pg_catalog.format($1, $2) $$;
CREATE FUNCTION format(text, text, text) RETURNS text LANGUAGE sql AS
  $$ INSERT INTO hostile_calls VALUES ('format'); SELECT pg_catalog.format($1, $2, $3) $$;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_type_overloads_in_the_search_path_are_never_called() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    job.db.client.batch_execute(HOSTILE).await?;
    // They would win: an unqualified call resolves to them.
    job.db.client.batch_execute("SELECT format('%s', 'x')").await?;
    let probe: i64 = job.db.client.query_one("SELECT count(*) FROM hostile_calls", &[]).await?.get(0);
    ensure!(probe == 1, "the hostile format(text, text) wins an unqualified call ({probe} calls)");
    job.db.client.batch_execute("TRUNCATE hostile_calls").await?;

    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "a", 0, FOREVER)])?;
    // Installs the sinks' tables and the change trigger, reads the markers.
    job.run_available_now(&["--subscribers-refresh", "on-change"]).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "b", 0, FOREVER)])?;
    job.run_available_now(&["--subscribers-refresh", "on-change"]).await?;

    let calls: Vec<String> =
        job.db.client.query("SELECT name FROM hostile_calls", &[]).await?.iter().map(|r| r.get(0)).collect();
    ensure!(calls.is_empty(), "sparklet called the hostile functions: {calls:?}");
    assert_exactly_once(&job, &expected_pairs(&["a".into(), "b".into()], &["c1".into()])).await?;
    Ok(())
}

/// A role that may create objects in the job's schema, and nothing more.
async fn neighbour(job: &Job, login: bool) -> Result<String> {
    let role = unique("it_role");
    let login = if login { "LOGIN" } else { "NOLOGIN" };
    job.db.client.batch_execute(&format!("CREATE ROLE {role} {login}")).await?;
    Ok(role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_another_role_created_first_are_refused_before_anything_is_written() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let mallory = neighbour(&job, false).await?;
    let schema = &job.db.schema;
    // Mallory makes sparklet's marker table first, with a trigger that would
    // run as sparklet on every batch.
    job.db
        .client
        .batch_execute(&format!(
            "GRANT USAGE, CREATE ON SCHEMA {schema} TO {mallory};
             SET ROLE {mallory};
             CREATE TABLE sparklet_commits (query_id text, batch_id bigint, num_rows bigint,
                 committed_at timestamptz DEFAULT now(), PRIMARY KEY (query_id, batch_id));
             CREATE FUNCTION steal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER steal BEFORE INSERT ON sparklet_commits FOR EACH ROW EXECUTE FUNCTION steal();
             RESET ROLE;"
        ))
        .await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "a", 0, FOREVER)])?;
    let err = job.run_available_now(&[]).await.expect_err("sparklet used mallory's table").to_string();
    ensure!(
        err.contains(&format!("table {schema}.sparklet_commits"))
            && err.contains(&format!("belongs to role {mallory}")),
        "{err}"
    );
    ensure!(job.db.feedback().await?.is_empty() && job.output_messages()?.is_empty(), "something was written");

    // Handed over (owned by sparklet's role now) but still with the trigger.
    job.db.client.batch_execute("ALTER TABLE sparklet_commits OWNER TO CURRENT_USER").await?;
    let err = job.run_available_now(&[]).await.expect_err("sparklet used a table with a trigger").to_string();
    ensure!(err.contains("has triggers sparklet did not create (steal)"), "{err}");

    // The version table of the change trigger, made first by mallory.
    job.db
        .client
        .batch_execute(&format!(
            "DROP TABLE sparklet_commits; SET ROLE {mallory};
             CREATE TABLE sparklet_subscribers_version (one boolean PRIMARY KEY DEFAULT true, version bigint NOT NULL);
             RESET ROLE;"
        ))
        .await?;
    let err = job.run_available_now(&["--subscribers-refresh", "on-change"]).await.expect_err("installed").to_string();
    ensure!(
        err.contains("refusing to install over objects another role made")
            && err.contains(&format!("sparklet_subscribers_version (owner {mallory})")),
        "{err}"
    );
    job.db.client.batch_execute("DROP TABLE sparklet_subscribers_version").await?;
    job.run_available_now(&["--subscribers-refresh", "on-change"]).await?;
    assert_exactly_once(&job, &expected_pairs(&["a".into()], &["c1".into()])).await?;
    job.db.client.batch_execute(&format!("DROP OWNED BY {mallory}; DROP ROLE {mallory}")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_runs_the_job_after_sparklet_setup() -> Result<()> {
    let job = Job::new(1).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let app = neighbour(&job, true).await?;
    let setup = sparklet::cli::SetupArgs {
        role: app.clone(),
        print_sql: false,
        change_trigger: true,
        sql_dir: repo_path("sql"),
        database_url: Some(job.db.url.as_str().into()),
        database_ca_file: None,
    };
    sparklet::admin::setup(setup).await?;
    let can_create: bool =
        job.db.client.query_one("SELECT has_schema_privilege($1, $2, 'CREATE')", &[&app, &job.db.schema]).await?.get(0);
    ensure!(!can_create, "the role may create objects");

    let app_url = job.db.url.replacen("postgres@", &format!("{app}@"), 1);
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "a", 0, FOREVER)])?;
    let as_app = ["--database-url", app_url.as_str(), "--subscribers-refresh", "on-change"];
    job.run_available_now(&as_app).await?;
    // The change trigger works for it too: a new subscriber is in the next batch.
    job.db.add_subscribers(RESTAURANT, &["c2"]).await?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "b", 0, FOREVER)])?;
    job.run_available_now(&as_app).await?;
    let mut expected = expected_pairs(&["a".into()], &["c1".into()]);
    expected.extend(expected_pairs(&["b".into()], &["c1".into(), "c2".into()]));
    expected.sort();
    assert_exactly_once(&job, &expected).await?;
    job.db.client.batch_execute(&format!("DROP OWNED BY {app}; DROP ROLE {app}")).await?;
    Ok(())
}
