//! One owner per query in Postgres: an epoch per query, bumped when a run
//! starts and checked by every batch transaction before it commits.
//!
//! The checkpoint lock keeps a second process off one directory, but not a
//! copy of it on another machine, or a process paused for minutes (a zombie)
//! that wakes after a new owner took over. Kafka fences such a zombie's
//! producer (`init_transactions` bumps the producer epoch); this is the same
//! for Postgres. [`Ownership::claim`] bumps `sparklet_owners.epoch` once per
//! run (never on a reconnect, so a zombie that reconnects does not take the
//! query back).
//! [`check`] runs in each batch transaction, just before its marker and
//! commit: an
//! `UPDATE ... WHERE epoch = mine` that finds no row means a newer owner
//! exists, and the transaction is rolled back. The update's row lock orders
//! a batch commit and a new owner's claim, so one of them always sees the
//! other; the lock is held only from the check to the commit.

use std::sync::Arc;

use tokio_postgres::{Client, GenericClient};

use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Sparklet's owners table, created if missing.
pub(crate) const OWNERS_DDL: &str = "CREATE TABLE IF NOT EXISTS sparklet_owners (
    query_id text PRIMARY KEY,
    epoch bigint NOT NULL,
    owner text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
)";

/// How long a claim waits for a batch transaction holding the owner row.
const CLAIM_LOCK_TIMEOUT: &str = "10s";

/// Makes this run the owner of `query_id`; returns its epoch. `owner` names
/// the process (host and pid) for people looking at the table.
async fn claim(client: &mut Client, query_id: &str, owner: &str, target: &str) -> Result<i64> {
    let err = |e| Error::postgres(format!("claiming query {query_id} in sparklet_owners on {target}"), e);
    crate::postgres::ensure_table(client, "sparklet_owners", OWNERS_DDL, target).await?;
    let txn = client.transaction().await.map_err(err)?;
    txn.batch_execute(&format!("SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'")).await.map_err(err)?;
    let row = txn
        .query_one(
            "INSERT INTO sparklet_owners (query_id, epoch, owner) VALUES ($1, 1, $2)
             ON CONFLICT (query_id) DO UPDATE
             SET epoch = sparklet_owners.epoch + 1, owner = excluded.owner, claimed_at = now()
             RETURNING epoch",
            &[&query_id, &owner],
        )
        .await
        .map_err(err)?;
    txn.commit().await.map_err(err)?;
    Ok(row.get(0))
}

/// Inside a batch transaction: fails with [`Error::Fenced`] unless `epoch` is
/// still the query's newest.
pub(crate) async fn check(txn: &impl GenericClient, query_id: &str, epoch: i64, target: &str) -> Result<()> {
    let updated = txn
        .execute("UPDATE sparklet_owners SET epoch = epoch WHERE query_id = $1 AND epoch = $2", &[&query_id, &epoch])
        .await
        .map_err(|e| Error::postgres(format!("checking the owner of query {query_id} on {target}"), e))?;
    if updated == 0 {
        return Err(Error::Fenced { sink: "postgres", query_id: query_id.to_string() });
    }
    Ok(())
}

/// This run's claim on a query, checked outside batch transactions: before
/// the Kafka sink sends a batch and again before it commits, and before a
/// reconnect creates a new producer (whose `init_transactions` would fence
/// the newer owner in turn). Cloning shares the connection.
#[derive(Clone)]
pub(crate) struct Ownership {
    client: Arc<Client>,
    query_id: String,
    epoch: i64,
    target: String,
}

impl Ownership {
    /// Makes this run the owner of `query_id` ([`claim`]) and keeps the
    /// connection for the checks.
    pub(crate) async fn claim(config: &PostgresConfig, query_id: &str) -> Result<Self> {
        let mut client = crate::postgres::connect(config, "the owner check").await?;
        let epoch = claim(&mut client, query_id, &this_process(), &config.target()).await?;
        tracing::info!(query_id, epoch, "owner epoch claimed");
        Ok(Ownership { client: Arc::new(client), query_id: query_id.to_string(), epoch, target: config.target() })
    }

    /// After a failure: a new connection for the checks of the run that
    /// claimed `epoch`, checked once (never a new claim).
    pub(crate) async fn connect(config: &PostgresConfig, query_id: &str, epoch: i64) -> Result<Self> {
        let client = crate::postgres::connect(config, "the owner check").await?;
        let ownership =
            Ownership { client: Arc::new(client), query_id: query_id.to_string(), epoch, target: config.target() };
        ownership.verify().await?;
        Ok(ownership)
    }

    /// Fails with [`Error::Fenced`] unless this run's epoch is still the
    /// query's newest.
    pub(crate) async fn verify(&self) -> Result<()> {
        let row = self
            .client
            .query_opt("SELECT epoch FROM sparklet_owners WHERE query_id = $1", &[&self.query_id])
            .await
            .map_err(|e| {
                Error::postgres(format!("reading the owner of query {} on {}", self.query_id, self.target), e)
            })?;
        match row.map(|r| r.get::<_, i64>(0)) {
            Some(current) if current == self.epoch => Ok(()),
            _ => Err(Error::Fenced { sink: "postgres", query_id: self.query_id.clone() }),
        }
    }

    /// This run's epoch.
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch
    }

    /// [`Ownership::verify`] from a blocking thread (the Kafka sink's).
    pub(crate) fn verify_blocking(&self) -> Result<()> {
        tokio::runtime::Handle::current().block_on(self.verify())
    }
}

/// This process, as `host pid N`, for the owners table.
fn this_process() -> String {
    format!("{} pid {}", crate::util::files::host_name(), std::process::id())
}
