//! Postgres connection settings: the parsed URL and the TLS connector that
//! follows it, as libpq would.
//!
//! TLS follows the URL's `sslmode`: `disable` connects in plain text;
//! `prefer` (the default) and `require` encrypt without verifying the server,
//! as libpq does without a root certificate. With `--database-ca-file` the
//! connection is always encrypted and the server's certificate and host name
//! are verified against that CA (libpq's `verify-full`). The CA file is read
//! here, once, so a bad one stops sparklet before it connects.
//!
//! `sslmode=verify-full` and `sslmode=verify-ca`, which libpq users write
//! and tokio-postgres does not parse, are taken out of the URL here (the
//! connection then requires TLS) and need `--database-ca-file`: sparklet
//! verifies against that file only, never a default location, so without
//! it they are a config error rather than a connection that does not
//! verify. `verify-full` checks the certificate and the host name;
//! `verify-ca` the certificate only, as in libpq (for a server reached by a
//! name its certificate does not hold).

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
    /// The verifying `sslmode` the URL asked for, if any.
    verify: Option<Verify>,
}

/// libpq's verifying `sslmode`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// The certificate against the CA, and the host name against it.
    Full,
    /// The certificate against the CA only.
    Ca,
}

impl Verify {
    fn from_mode(mode: &str) -> Option<Self> {
        match mode {
            "verify-full" => Some(Verify::Full),
            "verify-ca" => Some(Verify::Ca),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verify::Full => "verify-full",
            Verify::Ca => "verify-ca",
        }
    }
}

impl PostgresConfig {
    /// Parses a connection string (URL or key=value form). A verifying
    /// `sslmode` is taken out and recorded: [`with_ca_file`](Self::with_ca_file)
    /// then insists on a CA. Until it has one, such a connection verifies
    /// against the system's default CAs, never not at all.
    pub fn parse(url: &str) -> Result<Self> {
        let (understood, verify) = take_verify_mode(url);
        let mut parsed = tokio_postgres::Config::from_str(&understood)
            .map_err(|e| Error::config("--database-url", format!("not a valid Postgres connection string: {e}")))?;
        let tls = match (verify, parsed.get_ssl_mode()) {
            (Some(verify), _) => {
                parsed.ssl_mode(SslMode::Require);
                Some(tls_connector(Trust::SystemDefault, verify)?)
            }
            (None, SslMode::Disable) => None,
            (None, _) => Some(tls_connector(Trust::Anyone, Verify::Full)?),
        };
        Ok(PostgresConfig { url: url.to_string(), parsed, tls, verify })
    }

    /// Requires TLS verified against `ca_file` (libpq's `verify-full`, or
    /// `verify-ca` if the URL says so). Without one, a URL that asks for
    /// verification is refused.
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Result<Self> {
        let Some(path) = ca_file else {
            return match self.verify {
                Some(verify) => Err(Error::config(
                    "--database-ca-file",
                    format!(
                        "--database-url says sslmode={}, which needs --database-ca-file (the CA certificate, PEM, \
                         that signed the Postgres server's certificate): sparklet verifies against that file only",
                        verify.name()
                    ),
                )),
                None => Ok(self),
            };
        };
        if self.parsed.get_ssl_mode() == SslMode::Disable {
            return Err(Error::config("--database-ca-file", "is set but --database-url says sslmode=disable"));
        }
        self.parsed.ssl_mode(SslMode::Require);
        self.tls = Some(tls_connector(Trust::CaFile(&path), self.verify.unwrap_or(Verify::Full))?);
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

/// Whose certificates a TLS connection accepts.
enum Trust<'a> {
    /// Those `--database-ca-file` signed.
    CaFile(&'a Path),
    /// Those the system's default CAs signed.
    SystemDefault,
    /// Any (encryption without verification: `prefer`, `require`).
    Anyone,
}

/// A TLS connector for `trust`; a verifying one checks the host name too,
/// unless `verify` is [`Verify::Ca`].
fn tls_connector(trust: Trust<'_>, verify: Verify) -> Result<MakeTlsConnector> {
    let setup = |e: openssl::error::ErrorStack| Error::config("--database-url", format!("cannot set up TLS: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
    match trust {
        Trust::CaFile(path) => {
            readable_file(path)?;
            builder.set_ca_file(path).map_err(|e| {
                Error::config("--database-ca-file", format!("{}: holds no PEM CA certificate ({e})", path.display()))
            })?
        }
        Trust::SystemDefault => builder.set_default_verify_paths().map_err(setup)?,
        Trust::Anyone => builder.set_verify(SslVerifyMode::NONE),
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if verify == Verify::Ca {
        connector.set_callback(|connection, _host| {
            connection.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}

/// `url` without a verifying `sslmode` (which tokio-postgres refuses), and
/// the one it had: the last `sslmode` wins, as in libpq. The URL form's
/// query parameters (`?sslmode=verify-full`) and the key=value form's
/// `sslmode=verify-full` words are understood (not `sslmode = verify-full`
/// with spaces: tokio-postgres then refuses the value, as before); nothing
/// else of the string changes.
fn take_verify_mode(url: &str) -> (String, Option<Verify>) {
    let is_url = ["postgres://", "postgresql://"].iter().any(|p| url.starts_with(p));
    // tokio-postgres's reading of a URL: the credentials end at the first
    // '@', the parameters start at the next '?'.
    let query = is_url.then(|| {
        let from = url.find('@').unwrap_or(0);
        url[from..].find('?').map(|at| from + at)
    });
    let (head, params) = match query {
        Some(Some(at)) => (&url[..=at], &url[at + 1..]),
        Some(None) => return (url.to_string(), None),
        None => ("", url),
    };
    let pieces: Vec<&str> = match is_url {
        true => params.split_inclusive('&').collect(),
        false => params.split_inclusive(char::is_whitespace).collect(),
    };
    let mode = |piece: &str| -> Option<String> {
        let (key, value) = piece.trim_end_matches('&').trim().split_once('=')?;
        (percent_decoded(key) == "sslmode").then(|| percent_decoded(value.trim_matches('\'')))
    };
    let verify = pieces.iter().filter_map(|p| mode(p)).next_back().and_then(|m| Verify::from_mode(&m));
    let verifying = |piece: &&str| mode(piece).is_some_and(|m| Verify::from_mode(&m).is_some());
    if !pieces.iter().any(verifying) {
        return (url.to_string(), verify);
    }
    let kept: String = pieces.into_iter().filter(|p| !verifying(p)).collect();
    let kept = if is_url { kept.trim_end_matches('&') } else { kept.as_str() };
    let understood = format!("{head}{kept}");
    (understood.strip_suffix('?').unwrap_or(&understood).to_string(), verify)
}

/// `text` with its `%XX` escapes decoded (as far as they make UTF-8).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/test-ca.crt");

    #[test]
    fn a_verifying_sslmode_is_taken_out_of_the_url_and_the_rest_kept() {
        let take = |url| take_verify_mode(url);
        assert_eq!(
            take("postgres://u:p@db/app?sslmode=verify-full"),
            ("postgres://u:p@db/app".into(), Some(Verify::Full))
        );
        assert_eq!(
            take("postgresql://db/app?application_name=x&sslmode=verify-ca&connect_timeout=5"),
            ("postgresql://db/app?application_name=x&connect_timeout=5".into(), Some(Verify::Ca))
        );
        assert_eq!(
            take("postgres://db/app?sslmode=verify%2Dfull&a=b"),
            ("postgres://db/app?a=b".into(), Some(Verify::Full))
        );
        // The credentials end at the first '@': a '?' in a password is not the query.
        assert_eq!(
            take("postgres://u:a?b@db/app?sslmode=verify-full"),
            ("postgres://u:a?b@db/app".into(), Some(Verify::Full))
        );
        assert_eq!(
            take("host=db  password='a  b' sslmode=verify-full"),
            ("host=db  password='a  b' ".into(), Some(Verify::Full))
        );
        assert_eq!(take("host=db sslmode='verify-ca' user=u"), ("host=db user=u".into(), Some(Verify::Ca)));
        // The last sslmode wins, as in libpq.
        assert_eq!(
            take("postgres://db/app?sslmode=verify-full&sslmode=disable"),
            ("postgres://db/app?sslmode=disable".into(), None)
        );
        for kept in [
            "postgres://db/app?sslmode=require",
            "postgres://db/app",
            "host=db sslmode=prefer",
            "postgres://u:sslmode=verify-full@db/x",
        ] {
            assert_eq!(take(kept), (kept.to_string(), None), "{kept}");
        }
    }

    #[test]
    fn sslmode_verify_full_requires_tls_and_a_ca_file() {
        for url in ["postgres://db/app?sslmode=verify-full", "host=db dbname=app sslmode=verify-full"] {
            let config = PostgresConfig::parse(url).unwrap();
            assert_eq!(config.parsed.get_ssl_mode(), SslMode::Require, "{url}");
            assert_eq!(config.parsed.get_dbname(), Some("app"), "{url}");
            assert!(config.tls.is_some(), "{url}: verifying against the default CAs until given one");
            assert_eq!(config.url, url, "kept as given");
            let err = config.with_ca_file(None).unwrap_err().to_string();
            assert!(err.contains("sslmode=verify-full, which needs --database-ca-file"), "{err}");
            let config = PostgresConfig::parse(url).unwrap().with_ca_file(Some(CA.into())).unwrap();
            assert_eq!((config.parsed.get_ssl_mode(), config.verify), (SslMode::Require, Some(Verify::Full)));
        }
        let err = PostgresConfig::parse("postgres://db/app?sslmode=verify-ca").unwrap().with_ca_file(None).unwrap_err();
        assert!(err.to_string().contains("sslmode=verify-ca, which needs --database-ca-file"), "{err}");
        let config = PostgresConfig::parse("postgres://db/app?sslmode=verify-ca").unwrap();
        assert_eq!(config.with_ca_file(Some(CA.into())).unwrap().verify, Some(Verify::Ca));
        let err = PostgresConfig::parse("postgres://db/app?sslmode=verify-everything").unwrap_err().to_string();
        assert!(err.contains("--database-url"), "{err}");
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
