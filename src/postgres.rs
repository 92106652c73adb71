//! Postgres connections: one place that connects, spawns the connection task
//! and words the error so it names the target (never the password).

use tokio_postgres::{Client, NoTls};

use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Connects to Postgres for `purpose` (e.g. "the feedback sink").
///
/// TLS is not negotiated: use a local or tunnelled connection, or
/// `sslmode=disable`/`prefer` (see the README).
pub async fn connect(config: &PostgresConfig, purpose: &str) -> Result<Client> {
    let (client, connection) = config
        .parsed
        .connect(NoTls)
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
