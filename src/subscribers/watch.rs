//! Change detection on `subscribers_restaurants` for `--subscribers-refresh
//! on-change`: installing the trigger (`sql/subscribers_on_change.sql`),
//! a connection that LISTENs for its notifications, and reading the
//! table's change version.
//!
//! The trigger bumps a version (one row of `sparklet_subscribers_version`)
//! once per writing transaction, when it commits, and notifies
//! `sparklet_subscribers_changed` with `<schema>:<version>`. A notification is only a hint (one sent
//! while the listener is away is lost, and any role can send one, so its
//! version is never used); the version is the truth, read in
//! the same REPEATABLE READ snapshot as the rows it versions
//! ([`crate::subscribers::load`]).

use std::path::Path;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// The file that installs the trigger, in the SQL directory.
pub(crate) const ON_CHANGE_SQL: &str = "subscribers_on_change.sql";

/// The notification channel the trigger notifies.
pub(crate) const CHANNEL: &str = "sparklet_subscribers_changed";

/// The schema of `subscribers_restaurants` as the search_path finds it: the
/// one its notifications name.
const TABLE_SCHEMA: &str = "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = 'subscribers_restaurants'::regclass";

/// The query that reads the version (in the search_path's schema).
pub(crate) const VERSION_QUERY: &str = "SELECT version FROM sparklet_subscribers_version";

/// Installs the change trigger (`sql/subscribers_on_change.sql`) unless it
/// is there already: in one transaction, under an advisory lock so two
/// starts do not replace the function at once, and with a lock timeout, so
/// a busy table makes the start fail with a clear message instead of
/// queueing every writer behind the trigger's DDL.
pub(crate) async fn install(postgres: &PostgresConfig, sql_dir: &Path) -> Result<()> {
    let client = crate::postgres::connect(postgres, "installing the subscribers change trigger").await?;
    let path = sql_dir.join(ON_CHANGE_SQL);
    let failed = |doing: &str, e: tokio_postgres::Error| Error::Sql {
        path: path.clone(),
        message: format!(
            "{doing} on {} failed: {}; run the file as the table's owner, or use a --subscribers-refresh interval",
            postgres.target(),
            e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string())
        ),
    };
    let installed = client.query_one(INSTALLED, &[]).await.map_err(|e| failed("looking for the change trigger", e))?;
    if !installed.get::<_, bool>(0) {
        run_install(&client, &path, failed).await?;
    }
    let target = postgres.target();
    crate::postgres::check_trusted(&client, crate::postgres::Object::Table("sparklet_subscribers_version"), &target)
        .await?;
    crate::postgres::check_trusted(&client, crate::postgres::Object::Function("sparklet_subscribers_changed"), &target)
        .await
}

/// Runs the install file in one transaction under the advisory lock.
async fn run_install(
    client: &Client,
    path: &Path,
    failed: impl Fn(&str, tokio_postgres::Error) -> Error,
) -> Result<()> {
    let ddl = crate::util::files::read_sql_file(path)?;
    let script = format!(
        "BEGIN;\nSET LOCAL lock_timeout = '10s';\nSELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('{CHANNEL}'));\n{ddl}\n;COMMIT;"
    );
    let result = client.batch_execute(&script).await.map_err(|e| failed("installing the change trigger", e));
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// Whether both triggers and the version table, as this version of the
/// file makes it (with `bumped_by`), are there.
const INSTALLED: &str =
    "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = 'subscribers_restaurants'::regclass
       AND tgname IN ('sparklet_subscribers_changed', 'sparklet_subscribers_truncated')) = 2
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
       WHERE attrelid = pg_catalog.to_regclass('sparklet_subscribers_version') AND attname = 'bumped_by')";

/// A connection listening on [`CHANNEL`]: the client (also for reading the
/// version) and the notifications' payloads; the versions that count are
/// those of the table's schema.
pub(crate) struct Listener {
    pub client: Client,
    payloads: mpsc::UnboundedReceiver<String>,
    schema: String,
}

impl Listener {
    /// Connects and LISTENs.
    pub(crate) async fn connect(postgres: &PostgresConfig) -> Result<Self> {
        let (client, payloads) = crate::postgres::listen(postgres, CHANNEL, "subscribers changes").await?;
        let failed = |e| Error::postgres("listening for subscribers changes", e);
        let schema: String = client.query_one(TABLE_SCHEMA, &[]).await.map_err(failed)?.try_get(0).map_err(failed)?;
        Ok(Listener { client, payloads, schema })
    }

    /// Waits for the next notification for the table's schema (payloads of
    /// other schemas, whose tables share the channel, are skipped), then
    /// takes every one already queued with it; `false` once the connection
    /// has ended. The payload's version is never trusted: any role that can
    /// connect can NOTIFY, so the caller reads the version from the table.
    /// Cancel-safe.
    pub(crate) async fn next_notice(&mut self) -> bool {
        loop {
            let Some(payload) = self.payloads.recv().await else { return false };
            if parse_payload(&payload, &self.schema).is_some() {
                while self.payloads.try_recv().is_ok() {}
                return true;
            }
        }
    }

    /// The table's version now.
    pub(crate) async fn version(&self) -> Result<i64> {
        read_version(&self.client).await
    }
}

/// Reads the version on `client`.
pub(crate) async fn read_version(client: &Client) -> Result<i64> {
    let row = client.query_one(VERSION_QUERY, &[]).await.map_err(|e| {
        Error::postgres("reading the subscribers version (is sql/subscribers_on_change.sql installed?)", e)
    })?;
    row.try_get(0).map_err(|e| Error::postgres("reading the subscribers version", e))
}

/// The version in a `<schema>:<version>` payload, if it is `schema`'s.
fn parse_payload(payload: &str, schema: &str) -> Option<i64> {
    let (of, version) = payload.rsplit_once(':')?;
    (of == schema).then(|| version.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_counts_only_for_its_own_schema() {
        assert_eq!(parse_payload("public:7", "public"), Some(7));
        assert_eq!(parse_payload("it_x:7", "public"), None);
        assert_eq!(parse_payload("garbage", "public"), None);
        assert_eq!(parse_payload("a:b:9", "a:b"), Some(9));
    }
}
