//! Postgres connections: one place that connects (TLS as set up in
//! [`PostgresConfig`]), spawns the connection task and words the error so it
//! names the target (never the password).

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, Socket};

use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Connects to Postgres for `purpose` (e.g. "the feedback sink").
pub async fn connect(config: &PostgresConfig, purpose: &str) -> Result<Client> {
    match &config.tls {
        Some(tls) => connect_with(config, purpose, tls.clone()).await,
        None => connect_with(config, purpose, NoTls).await,
    }
}

async fn connect_with<T>(config: &PostgresConfig, purpose: &str, tls: T) -> Result<Client>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .parsed
        .connect(tls)
        .await
        .map_err(|e| Error::postgres(format!("connecting to {} for {purpose}", config.target()), e))?;
    let target = config.target();
    let purpose = purpose.to_string();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(target = %target, purpose = %purpose, cause = %err, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Runs `CREATE ... IF NOT EXISTS` DDL under a transaction-scoped advisory
/// lock: Postgres's `IF NOT EXISTS` is not safe against a concurrent
/// creation (two shards starting at once: "duplicate key value violates
/// unique constraint pg_type_typname_nsp_index"), so creators take turns.
pub(crate) async fn create_if_missing(client: &Client, ddl: &str) -> std::result::Result<(), tokio_postgres::Error> {
    let script = format!(
        "BEGIN;\nSELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('sparklet-ddl'));\n{ddl};\nCOMMIT;"
    );
    let result = client.batch_execute(&script).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}
