//! Change detection for a lookup with `refresh = "on-change"`: the trigger
//! installed on each `watch` table (`on_change.sql`, built in), a
//! connection that LISTENs for its notifications, and reading the lookup's
//! version: the sum of its watched tables' change versions, each bumped once
//! per writing transaction when it commits. A notification is only a hint
//! (one sent while the listener is away is lost, and any role can send one,
//! so its payload only says which table to look at); the version is the
//! truth, read in the same REPEATABLE READ snapshot as the rows
//! ([`super::load::rows`]).

use std::collections::HashSet;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::postgres::{check_trusted, quote_ident, Object};

/// The install script, `{table_oid}` to be replaced.
const ON_CHANGE_SQL: &str = include_str!("on_change.sql");

/// The notification channel the trigger notifies (payload: the table's oid).
pub(crate) const CHANNEL: &str = "sparklet_lookups_changed";

/// A lookup's watched tables, as found at start.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    /// Each table's oid (what notifications name).
    oids: HashSet<u32>,
    /// Reads the lookup's version: the sum of its tables' versions.
    pub(crate) version_query: String,
}

/// Where an install failure is reported: the lookup and its `job.toml`.
pub(crate) struct Naming<'a> {
    pub lookup: &'a str,
    pub job_toml: PathBuf,
    pub target: String,
}

impl Naming<'_> {
    fn error(&self, message: String) -> Error {
        Error::Job { at: self.job_toml.display().to_string(), message: format!("[lookups.{}] {message}", self.lookup) }
    }
}

/// Finds each table of `watch`, installs the change trigger on those that
/// lack it and checks that sparklet's objects are trusted.
pub(crate) async fn install(postgres: &PostgresConfig, watch: &[String], naming: &Naming<'_>) -> Result<Watched> {
    let client =
        crate::postgres::connect(postgres, &format!("installing lookup {}'s change trigger", naming.lookup)).await?;
    let mut oids = HashSet::new();
    let mut parts = Vec::new();
    for name in watch {
        let (oid, schema) = find(&client, name, naming).await?;
        if !installed(&client, oid, &schema).await.map_err(|e| install_failed(naming, name, e))? {
            run_install(&client, oid).await.map_err(|e| install_failed(naming, name, e))?;
        }
        let versions = format!("{}.sparklet_lookup_versions", quote_ident(&schema));
        check_trusted(&client, Object::Table(&versions), &naming.target).await?;
        let function = format!("{}.sparklet_lookup_changed", quote_ident(&schema));
        check_trusted(&client, Object::Function(&function), &naming.target).await?;
        parts.push(format!("SELECT version FROM {versions} WHERE table_oid = {oid}"));
        oids.insert(oid);
    }
    let version_query =
        format!("SELECT COALESCE(pg_catalog.sum(version), 0)::int8 FROM ({}) v", parts.join(" UNION ALL "));
    Ok(Watched { oids, version_query })
}

/// The oid and schema of table `name` as the search_path finds it.
pub(crate) async fn find(client: &Client, name: &str, naming: &Naming<'_>) -> Result<(u32, String)> {
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname::text, c.relkind::text FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&name],
        )
        .await
        .map_err(|e| install_failed(naming, name, e))?;
    let Some(row) = row else {
        return Err(naming.error(format!(
            "watch: table {name} does not exist on {} (as the search_path finds it): create it, or fix the name",
            naming.target
        )));
    };
    let kind: String = row.get(2);
    if kind != "r" && kind != "p" {
        return Err(
            naming.error(format!("watch: {name} on {} is not a table (a view?): watch its tables", naming.target))
        );
    }
    Ok((row.get(0), row.get(1)))
}

/// Whether both triggers (calling the schema's function), the version table
/// and the table's row in it are there.
async fn installed(client: &Client, oid: u32, schema: &str) -> std::result::Result<bool, tokio_postgres::Error> {
    let function = format!("{}.sparklet_lookup_changed()", quote_ident(schema));
    let versions = format!("{}.sparklet_lookup_versions", quote_ident(schema));
    let row = client
        .query_one(
            "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = $1
                       AND tgname IN ('sparklet_lookup_changed', 'sparklet_lookup_truncated')
                       AND tgfoid = pg_catalog.to_regprocedure($2)) = 2
                AND pg_catalog.to_regclass($3) IS NOT NULL",
            &[&oid, &function, &versions],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {versions} WHERE table_oid = {oid})");
    Ok(client.query_one(&sql, &[]).await?.get(0))
}

/// Runs the install script for table `oid` in one transaction, under an
/// advisory lock (two starts do not replace the function at once) and a
/// lock timeout (a busy table fails the start instead of queueing every
/// writer behind the trigger's DDL).
async fn run_install(client: &Client, oid: u32) -> std::result::Result<(), tokio_postgres::Error> {
    let ddl = ON_CHANGE_SQL.replace("{table_oid}", &oid.to_string());
    let script = format!(
        "BEGIN;\nSET LOCAL lock_timeout = '10s';\nSELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('{CHANNEL}'));\n{ddl}\n;COMMIT;"
    );
    let result = client.batch_execute(&script).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

fn install_failed(naming: &Naming<'_>, table: &str, e: tokio_postgres::Error) -> Error {
    let why = e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string());
    naming.error(format!(
        "refresh = \"on-change\": installing the change trigger on table {table} on {} failed: {why}; \
         start sparklet once as the table's owner (other roles then need SELECT on sparklet_lookup_versions \
         in its schema), or use an interval refresh",
        naming.target
    ))
}

/// Reads the lookup's version on `client`.
pub(crate) async fn read_version(client: &Client, watched: &Watched, lookup: &str) -> Result<i64> {
    let failed = |e| Error::postgres(format!("reading lookup {lookup}'s change version"), e);
    client.query_one(&watched.version_query, &[]).await.map_err(failed)?.try_get(0).map_err(failed)
}

/// A connection listening on [`CHANNEL`] for one lookup's tables.
pub(crate) struct Listener {
    pub client: Client,
    payloads: mpsc::UnboundedReceiver<String>,
    oids: HashSet<u32>,
}

impl Listener {
    /// Connects and LISTENs.
    pub(crate) async fn connect(postgres: &PostgresConfig, watched: &Watched, lookup: &str) -> Result<Self> {
        let purpose = format!("lookup {lookup}'s changes");
        let (client, payloads) = crate::postgres::listen(postgres, CHANNEL, &purpose).await?;
        Ok(Listener { client, payloads, oids: watched.oids.clone() })
    }

    /// Waits for the next notification naming one of the lookup's tables,
    /// then takes every one already queued with it; `false` once the
    /// connection has ended. Cancel-safe.
    pub(crate) async fn next_notice(&mut self) -> bool {
        loop {
            let Some(payload) = self.payloads.recv().await else { return false };
            if payload.trim().parse::<u32>().is_ok_and(|oid| self.oids.contains(&oid)) {
                while self.payloads.try_recv().is_ok() {}
                return true;
            }
        }
    }
}
