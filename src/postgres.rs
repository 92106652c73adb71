//! Postgres connections: one place that connects (with TLS as libpq would),
//! spawns the connection task and words the error so it names the target
//! (never the password).
//!
//! TLS follows the URL's `sslmode`: `disable` connects in plain text;
//! `prefer` (the default) and `require` encrypt without verifying the server,
//! as libpq does without a root certificate. With `--database-ca-file` the
//! connection is always encrypted and the server's certificate and host name
//! are verified against that CA (libpq's `verify-full`).

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, Socket};

use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Connects to Postgres for `purpose` (e.g. "the feedback sink").
pub async fn connect(config: &PostgresConfig, purpose: &str) -> Result<Client> {
    if config.parsed.get_ssl_mode() == SslMode::Disable {
        connect_with(config, purpose, NoTls).await
    } else {
        connect_with(config, purpose, tls_connector(config)?).await
    }
}

/// The TLS connector for `config`: verifying against its CA file, if any.
fn tls_connector(config: &PostgresConfig) -> Result<MakeTlsConnector> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| Error::config("--database-url", format!("cannot set up TLS: {e}")))?;
    match &config.ca_file {
        Some(path) => builder.set_ca_file(path).map_err(|e| {
            Error::config("--database-ca-file", format!("cannot read CA certificates from {}: {e}", path.display()))
        })?,
        None => builder.set_verify(SslVerifyMode::NONE),
    }
    Ok(MakeTlsConnector::new(builder.build()))
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
