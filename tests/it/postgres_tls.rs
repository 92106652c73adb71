//! Postgres connections use TLS as libpq would: encrypted when the server
//! offers it, plain with `sslmode=disable`, and verified (certificate and host
//! name) with `--database-ca-file`. The local Postgres serves Debian's
//! self-signed "snakeoil" certificate, so verification must refuse it.

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
