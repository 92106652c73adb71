//! Postgres connections use TLS as libpq would: encrypted when the server
//! offers it, plain with `sslmode=disable`, and verified (certificate and host
//! name) with `--database-ca-file`. The local Postgres serves Debian's
//! self-signed "snakeoil" certificate, so verification must refuse it; with
//! that certificate itself as the CA, libpq's `sslmode=verify-full` in the
//! URL connects by the name it holds (`localhost`) and not by address, and
//! `verify-ca` by either.

use anyhow::Result;
use sparklet::config::PostgresConfig;

use crate::support::*;

async fn uses_tls(url: &str) -> Result<bool> {
    let client = sparklet::postgres::connect(&PostgresConfig::parse(url)?, "a TLS test").await?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn database_connection_is_encrypted_unless_sslmode_is_disable() -> Result<()> {
    let admin = connect(&base_url()).await?;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await?.get(0);
    assert_eq!(ssl, "on", "these tests need a Postgres with ssl = on (Debian's default)");
    assert!(uses_tls(&base_url()).await?, "default sslmode (prefer) should encrypt");
    assert!(uses_tls(&format!("{}?sslmode=require", base_url())).await?);
    assert!(!uses_tls(&format!("{}?sslmode=disable", base_url())).await?);
    Ok(())
}

#[tokio::test]
async fn database_certificate_not_signed_by_the_given_ca_is_refused() -> Result<()> {
    let ca = repo_path("tests/fixtures/tls/test-ca.crt");
    let config = PostgresConfig::parse(&base_url())?.with_ca_file(Some(ca))?;
    let err = match sparklet::postgres::connect(&config, "a TLS test").await {
        Ok(_) => panic!("a self-signed server certificate must not verify"),
        Err(e) => e.chain().to_string(),
    };
    assert!(err.contains(&config.target()) && err.contains("certificate verify failed"), "{err}");
    Ok(())
}

#[tokio::test]
async fn sslmode_verify_full_and_verify_ca_in_the_url_verify_against_the_ca_file() -> Result<()> {
    let admin = connect(&base_url()).await?;
    let cert: String = admin.query_one("SHOW ssl_cert_file", &[]).await?.get(0);
    let names = openssl::x509::X509::from_pem(&std::fs::read(&cert)?)?.subject_alt_names();
    let by_name = names.iter().flatten().any(|n| n.dnsname() == Some("localhost"));
    if !base_url().contains("@127.0.0.1:") || !by_name {
        eprintln!("skipped: needs the server at 127.0.0.1 with a certificate for localhost ({cert})");
        return Ok(());
    }
    let url =
        |host: &str, mode: &str| format!("{}?sslmode={mode}", base_url().replace("@127.0.0.1:", &format!("@{host}:")));
    let config = |url: &str| PostgresConfig::parse(url)?.with_ca_file(Some(cert.clone().into()));
    let encrypted = |url: String| async move {
        let client = sparklet::postgres::connect(&config(&url)?, "a TLS test").await?;
        let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?;
        anyhow::Ok(row.get::<_, bool>(0))
    };
    assert!(encrypted(url("localhost", "verify-full")).await?, "verify-full by the certificate's name");
    assert!(encrypted(url("127.0.0.1", "verify-ca")).await?, "verify-ca does not check the name");
    let err = match sparklet::postgres::connect(&config(&url("127.0.0.1", "verify-full"))?, "a TLS test").await {
        Ok(_) => panic!("verify-full must refuse a certificate that does not name 127.0.0.1"),
        Err(e) => e.chain().to_string(),
    };
    assert!(err.contains("certificate verify failed"), "{err}");
    let err = PostgresConfig::parse(&url("localhost", "verify-full"))?.with_ca_file(None).unwrap_err();
    assert!(err.to_string().contains("needs --database-ca-file"), "{err}");
    Ok(())
}
