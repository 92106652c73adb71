//! Postgres connection settings: the parsed URL and the TLS connector that
//! follows it, as libpq would.
//!
//! TLS follows the URL's `sslmode`: `disable` connects in plain text;
//! `prefer` (the default) and `require` encrypt without verifying the server,
//! as libpq does without a root certificate. With `--database-ca-file` the
//! connection is always encrypted and the server's certificate and host name
//! are verified against that CA (libpq's `verify-full`). The CA file is read
//! here, once, so a bad one stops sparklet before it connects.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::{Host, SslMode};

use crate::error::{Error, Result};

/// Postgres settings.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection string as given; may hold a password, so never printed.
    pub url: String,
    /// Parsed form, used to connect and to describe the target without secrets.
    pub parsed: tokio_postgres::Config,
    /// TLS for the connection; `None` with `sslmode=disable`.
    pub tls: Option<MakeTlsConnector>,
}

impl PostgresConfig {
    /// Parses a connection string (URL or key=value form).
    pub fn parse(url: &str) -> Result<Self> {
        let parsed = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::config("--database-url", format!("not a valid Postgres connection string: {e}")))?;
        let tls = match parsed.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(tls_connector(None)?),
        };
        Ok(PostgresConfig { url: url.to_string(), parsed, tls })
    }

    /// Requires TLS verified against `ca_file` (libpq's `verify-full`).
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Result<Self> {
        let Some(path) = ca_file else { return Ok(self) };
        if self.parsed.get_ssl_mode() == SslMode::Disable {
            return Err(Error::config("--database-ca-file", "is set but --database-url says sslmode=disable"));
        }
        self.parsed.ssl_mode(SslMode::Require);
        self.tls = Some(tls_connector(Some(&path))?);
        Ok(self)
    }

    /// `host:port/dbname` of the target, without user or password.
    pub fn target(&self) -> String {
        let host = match self.parsed.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.parsed.get_ports().first().copied().unwrap_or(5432);
        let db = self.parsed.get_dbname().unwrap_or("(default)");
        format!("{host}:{port}/{db}")
    }
}

/// `url` with `schema` as the search path of every session (URL form).
pub fn url_with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A TLS connector verifying against `ca_file`, or not verifying without one.
fn tls_connector(ca_file: Option<&PathBuf>) -> Result<MakeTlsConnector> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| Error::config("--database-url", format!("cannot set up TLS: {e}")))?;
    match ca_file {
        Some(path) => {
            readable_file(path)?;
            builder.set_ca_file(path).map_err(|e| {
                Error::config("--database-ca-file", format!("{}: holds no PEM CA certificate ({e})", path.display()))
            })?
        }
        None => builder.set_verify(SslVerifyMode::NONE),
    }
    Ok(MakeTlsConnector::new(builder.build()))
}

/// Checks that `path` is a readable file, wording the failure as a person
/// would (`no such file`), before OpenSSL reports it in its own terms.
fn readable_file(path: &Path) -> Result<()> {
    let words = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    let error = |why: String| Error::config("--database-ca-file", format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| error(words(e)))?;
    if meta.is_dir() {
        return Err(error("is a directory, not a file".into()));
    }
    std::fs::File::open(path).map(drop).map_err(|e| error(words(e)))
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig").field("target", &self.target()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_unreadable_ca_file_is_named_plainly() {
        let config = || PostgresConfig::parse("postgres://db/app").unwrap();
        let err = config().with_ca_file(Some("/x.pem".into())).unwrap_err().to_string();
        assert!(err.contains("--database-ca-file") && err.contains("/x.pem: no such file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = config().with_ca_file(Some(dir.path().into())).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn search_path_is_appended_to_urls_with_or_without_a_query() {
        assert_eq!(url_with_search_path("postgres://h/db", "s"), "postgres://h/db?options=-c%20search_path%3Ds");
        assert_eq!(
            url_with_search_path("postgres://h/db?sslmode=disable", "s"),
            "postgres://h/db?sslmode=disable&options=-c%20search_path%3Ds"
        );
        let config = PostgresConfig::parse(&url_with_search_path("postgres://h/db?sslmode=disable", "s")).unwrap();
        assert_eq!(config.parsed.get_options(), Some("-c search_path=s"));
        assert!(config.tls.is_none(), "sslmode=disable: plain text");
    }
}
