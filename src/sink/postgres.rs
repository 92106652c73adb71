//! The Postgres sink: binary COPY into `subscribers_feedback`, one transaction
//! per batch, together with a row in `sparklet_commits` naming the batch.
//!
//! The job's table keeps its DDL (no unique key is assumed); the marker's
//! primary key `(query_id, batch_id)` is what makes a batch land at most once,
//! even if a zombie run writes the same batch concurrently, and the owner
//! epoch ([`super::owner`]) makes a zombie's transaction fail altogether.

use std::sync::Arc;

use bytes::BytesMut;
use futures::SinkExt;
use tokio_postgres::Client;

use crate::batch::BatchPlan;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::schema::OUTPUT_FIELDS;
use crate::sink::{copy, owner, Chunks, Sink};
use crate::source::decode::BadMessage;

/// The job's target table.
pub(crate) const FEEDBACK_TABLE: &str = "subscribers_feedback";

/// Sparklet's marker table, created if missing.
pub(crate) const MARKER_DDL: &str = "CREATE TABLE IF NOT EXISTS sparklet_commits (
    query_id text NOT NULL,
    batch_id bigint NOT NULL,
    num_rows bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (query_id, batch_id)
)";

/// Bytes buffered before a chunk is sent to the server.
const CHUNK_BYTES: usize = 1 << 20;

/// Writes batches into `subscribers_feedback`.
pub(crate) struct PostgresSink {
    client: Client,
    query_id: String,
    target: String,
    /// Exactly-once: record and check the batch marker.
    markers: bool,
    /// This run's owner epoch ([`owner::claim`]), checked by every batch.
    epoch: i64,
}

impl PostgresSink {
    /// Connects, creates the marker table and checks that the feedback table
    /// exists with the columns sparklet writes.
    pub(crate) async fn connect(config: &PostgresConfig, query_id: &str, markers: bool, epoch: i64) -> Result<Self> {
        let client = crate::postgres::connect(config, "the feedback sink").await?;
        let target = config.target();
        crate::postgres::ensure_table(&client, "sparklet_commits", MARKER_DDL, &target).await?;
        let probe = format!("SELECT {} FROM {FEEDBACK_TABLE} LIMIT 0", column_list());
        client.simple_query(&probe).await.map_err(|e| {
            Error::postgres(format!("checking table {FEEDBACK_TABLE} on {target} (create it with sql/schema.sql)"), e)
        })?;
        Ok(PostgresSink { client, query_id: query_id.to_string(), target, markers, epoch })
    }
}

/// Streams `rows`, as they arrive, into the feedback table with binary COPY
/// inside `txn`.
async fn copy_rows(txn: &tokio_postgres::Transaction<'_>, mut rows: Chunks, target: &str) -> Result<u64> {
    let err = |action: &str, e| Error::postgres(format!("{action} into {FEEDBACK_TABLE} on {target}"), e);
    let statement = format!("COPY {FEEDBACK_TABLE} ({}) FROM STDIN (FORMAT binary)", column_list());
    let sink = txn.copy_in::<_, bytes::Bytes>(statement.as_str()).await.map_err(|e| err("starting COPY", e))?;
    futures::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 4096);
    copy::write_header(&mut buf);
    while let Some(batch) = rows.next().await? {
        let mut row = 0;
        while row < batch.num_rows() {
            let end = (row + 1024).min(batch.num_rows());
            copy::write_rows(&batch, row, end, &mut buf)?;
            row = end;
            if buf.len() >= CHUNK_BYTES {
                sink.send(buf.split().freeze()).await.map_err(|e| err("sending COPY data", e))?;
            }
        }
    }
    crate::crash::point("pg-mid-copy");
    copy::write_trailer(&mut buf);
    sink.send(buf.split().freeze()).await.map_err(|e| err("sending COPY data", e))?;
    sink.finish().await.map_err(|e| err("finishing COPY", e))
}

/// The newest batch of `query_id` whose marker `sparklet_commits` holds
/// (also what `sparklet checkpoint verify` compares with).
pub(crate) async fn latest_marker(
    client: &tokio_postgres::Client,
    query_id: &str,
    target: &str,
) -> Result<Option<u64>> {
    let row = client
        .query_one("SELECT pg_catalog.max(batch_id) FROM sparklet_commits WHERE query_id = $1", &[&query_id])
        .await
        .map_err(|e| Error::postgres(format!("reading sparklet_commits on {target}"), e))?;
    Ok(row.get::<_, Option<i64>>(0).map(|b| b as u64))
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn latest_committed(&mut self) -> Result<Option<u64>> {
        if !self.markers {
            return Ok(None);
        }
        latest_marker(&self.client, &self.query_id, &self.target).await
    }

    async fn is_committed(&mut self, plan: &BatchPlan) -> Result<bool> {
        if !self.markers {
            return Ok(false);
        }
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM sparklet_commits WHERE query_id = $1 AND batch_id = $2)",
                &[&self.query_id, &(plan.batch_id as i64)],
            )
            .await
            .map_err(|e| Error::postgres(format!("reading sparklet_commits on {}", self.target), e))?;
        Ok(row.get(0))
    }

    async fn write(&mut self, plan: &BatchPlan, rows: Chunks, _dead_letters: &Arc<[BadMessage]>) -> Result<u64> {
        let target = self.target.clone();
        let txn = self
            .client
            .transaction()
            .await
            .map_err(|e| Error::postgres(format!("beginning a transaction on {target}"), e))?;
        let written = copy_rows(&txn, rows, &target).await?;
        owner::check(&txn, &self.query_id, self.epoch, &target).await?;
        if self.markers {
            record_marker(&txn, &self.query_id, plan, written, &target).await?;
        }
        txn.commit()
            .await
            .map_err(|e| Error::postgres(format!("committing batch {} on {target}", plan.batch_id), e))?;
        crate::crash::point("after-pg-commit");
        Ok(written)
    }
}

/// Inserts the (query, batch) marker inside the batch's transaction.
async fn record_marker(
    txn: &tokio_postgres::Transaction<'_>,
    query_id: &str,
    plan: &BatchPlan,
    written: u64,
    target: &str,
) -> Result<()> {
    txn.execute(
        "INSERT INTO sparklet_commits (query_id, batch_id, num_rows) VALUES ($1, $2, $3)",
        &[&query_id, &(plan.batch_id as i64), &(written as i64)],
    )
    .await
    .map_err(|e| Error::postgres(format!("recording batch {} in sparklet_commits on {target}", plan.batch_id), e))?;
    Ok(())
}

/// The columns sparklet writes, in the output schema's order.
fn column_list() -> String {
    OUTPUT_FIELDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}
