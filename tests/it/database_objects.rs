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
