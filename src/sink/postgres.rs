//! The Postgres sink: the output's columns, by name, into the job's table
//! (`job.toml`'s `[sink.postgres] table`; the seed's `subscribers_feedback`)
//! with binary COPY, one transaction per batch, together with a row in
//! `sparklet_commits` naming the batch. The table is checked in the catalog
//! at start ([`super::table`]). With an upsert key, the rows are copied into
//! a staging table of the transaction and inserted from there `ON CONFLICT
//! (key) DO UPDATE` (the batch's last row of a key wins) or `DO NOTHING`.
//!
//! The job's table keeps its DDL (no unique key is assumed); the marker's
//! primary key `(query_id, batch_id)` is what makes a batch land at most once,
//! even if a zombie run writes the same batch concurrently, and the owner
//! epoch ([`super::owner`]) makes a zombie's transaction fail altogether.

use std::sync::Arc;

use bytes::BytesMut;
use futures::SinkExt;
use tokio_postgres::Client;

use arrow::datatypes::Schema;

use crate::batch::BatchPlan;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::job::{OnConflict, PostgresSinkOptions};
use crate::sink::table;
use crate::sink::target::Target;
use crate::sink::{copy, owner, Chunks, Sink};
use crate::source::decode::BadMessage;

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

/// Where and how the output's rows are written.
#[derive(Debug, Clone)]
struct Table {
    /// As the catalog names it, quoted where needed (`regclass::text`).
    name: String,
    /// The output's column names, quoted, in the output's order.
    columns: Vec<String>,
    /// Each output column's binary format.
    targets: Vec<Target>,
    /// The quoted upsert key, if any, and what a conflict does.
    upsert: Option<(Vec<String>, OnConflict)>,
}

/// Writes batches into the job's table.
pub(crate) struct PostgresSink {
    client: Client,
    query_id: String,
    target: String,
    table: Table,
    /// Exactly-once: record and check the batch marker.
    markers: bool,
    /// This run's owner epoch ([`owner::claim`]), checked by every batch.
    epoch: i64,
}

impl PostgresSink {
    /// Connects, creates the marker table and checks in the catalog that
    /// the job's table takes `output` ([`table::check`]).
    pub(crate) async fn connect(
        config: &PostgresConfig,
        options: &PostgresSinkOptions,
        output: &Schema,
        query_id: &str,
        markers: bool,
        epoch: i64,
    ) -> Result<Self> {
        let client = crate::postgres::connect(config, "the output sink").await?;
        let target = config.target();
        crate::postgres::ensure_table(&client, "sparklet_commits", MARKER_DDL, &target).await?;
        let targets = table::check(&client, options, output, &target).await?;
        let name: String = client
            .query_one("SELECT pg_catalog.to_regclass($1)::text", &[&options.table])
            .await
            .map_err(|e| Error::postgres(format!("naming table {} on {target}", options.table), e))?
            .get(0);
        let quoted =
            |names: &mut dyn Iterator<Item = &String>| names.map(|n| crate::postgres::quote_ident(n)).collect();
        let upsert =
            (!options.upsert_key.is_empty()).then(|| (quoted(&mut options.upsert_key.iter()), options.on_conflict));
        let columns = quoted(&mut output.fields().iter().map(|f| f.name()));
        let table = Table { name, columns, targets, upsert };
        Ok(PostgresSink { client, query_id: query_id.to_string(), target, table, markers, epoch })
    }
}

/// Streams `rows`, as they arrive, into the job's table (or the upsert's
/// staging table) with binary COPY inside `txn`; then upserts.
async fn copy_rows(txn: &tokio_postgres::Transaction<'_>, rows: Chunks, table: &Table, target: &str) -> Result<u64> {
    let err = |action: &str, e| Error::postgres(format!("{action} into {} on {target}", table.name), e);
    let columns = table.columns.join(", ");
    let Some((key, on_conflict)) = &table.upsert else {
        let statement = format!("COPY {} ({columns}) FROM STDIN (FORMAT binary)", table.name);
        return copy_in(txn, &statement, rows, &table.targets, false).await.map_err(|e| e.with(err));
    };
    let stage = format!(
        "CREATE TEMP TABLE sparklet_stage ON COMMIT DROP AS SELECT {columns}, 0::int8 AS sparklet_row FROM {} WITH NO DATA",
        table.name
    );
    txn.batch_execute(&stage).await.map_err(|e| err("creating the staging table", e))?;
    let statement = format!("COPY sparklet_stage ({columns}, sparklet_row) FROM STDIN (FORMAT binary)");
    copy_in(txn, &statement, rows, &table.targets, true).await.map_err(|e| e.with(err))?;
    let insert = upsert_statement(table, key, *on_conflict);
    txn.execute(insert.as_str(), &[]).await.map_err(|e| err("upserting", e))
}

/// `INSERT ... SELECT` from the staging table: per key the batch's last row
/// (`DISTINCT ON`, or the second row of a key would fail `DO UPDATE`).
fn upsert_statement(table: &Table, key: &[String], on_conflict: OnConflict) -> String {
    let (columns, key_list) = (table.columns.join(", "), key.join(", "));
    let updates: Vec<String> =
        table.columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{c} = EXCLUDED.{c}")).collect();
    let action = match (on_conflict, updates.is_empty()) {
        (OnConflict::Update, false) => format!("DO UPDATE SET {}", updates.join(", ")),
        _ => "DO NOTHING".to_string(),
    };
    format!(
        "INSERT INTO {} AS t ({columns}) SELECT DISTINCT ON ({key_list}) {columns} FROM sparklet_stage \
         ORDER BY {key_list}, sparklet_row DESC ON CONFLICT ({key_list}) {action}",
        table.name
    )
}

/// A failed COPY: Postgres' error, or sparklet's own.
enum CopyFailed {
    Postgres(&'static str, tokio_postgres::Error),
    Other(Error),
}

impl CopyFailed {
    fn with(self, err: impl Fn(&str, tokio_postgres::Error) -> Error) -> Error {
        match self {
            CopyFailed::Postgres(action, e) => err(action, e),
            CopyFailed::Other(e) => e,
        }
    }
}

impl From<Error> for CopyFailed {
    fn from(e: Error) -> Self {
        CopyFailed::Other(e)
    }
}

/// Runs `statement` (a `COPY ... FROM STDIN`), streaming `rows`.
async fn copy_in(
    txn: &tokio_postgres::Transaction<'_>,
    statement: &str,
    mut rows: Chunks,
    targets: &[Target],
    numbered: bool,
) -> std::result::Result<u64, CopyFailed> {
    let pg = |action| move |e| CopyFailed::Postgres(action, e);
    let sink = txn.copy_in::<_, bytes::Bytes>(statement).await.map_err(pg("starting COPY"))?;
    futures::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 4096);
    let mut ordinal = 0i64;
    copy::write_header(&mut buf);
    while let Some(batch) = rows.next().await? {
        let mut row = 0;
        while row < batch.num_rows() {
            let end = (row + 1024).min(batch.num_rows());
            copy::write_rows(&batch, targets, row, end, &mut buf, numbered.then_some(&mut ordinal))?;
            row = end;
            if buf.len() >= CHUNK_BYTES {
                sink.send(buf.split().freeze()).await.map_err(pg("sending COPY data"))?;
            }
        }
    }
    crate::crash::point("pg-mid-copy");
    copy::write_trailer(&mut buf);
    sink.send(buf.split().freeze()).await.map_err(pg("sending COPY data"))?;
    sink.finish().await.map_err(pg("finishing COPY"))
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
        let written = copy_rows(&txn, rows, &self.table, &target).await?;
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
