//! The throughput baseline of `bench_e2e`: a raw binary COPY, on one
//! connection and in one transaction, of exactly the rows sparklet just wrote,
//! into a fresh table of the same shape (primary key and defaults included). Sparklet's Postgres sink does the
//! same work plus its marker, so the ratio of the two is its overhead.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{SinkExt, StreamExt};

/// (rows, time) of a raw COPY of the feedback table's rows.
pub(crate) async fn copy_feedback_rows(url: &str) -> Result<(u64, Duration)> {
    RawCopy::prepare(url).await?.run().await
}

/// A raw COPY made ready: the rows read out, the target table created.
pub(crate) struct RawCopy {
    db: tokio_postgres::Client,
    chunks: Vec<bytes::Bytes>,
    rows: u64,
    columns: String,
}

impl RawCopy {
    pub(crate) async fn prepare(url: &str) -> Result<Self> {
        let db = crate::connect(url).await?;
        let columns: Vec<&str> = sparklet::schema::OUTPUT_FIELDS.iter().map(|(n, _)| *n).collect();
        let columns = columns.join(", ");
        let query = format!("COPY (SELECT {columns} FROM subscribers_feedback) TO STDOUT (FORMAT binary)");
        let chunks = copy_out(&db, &query).await?;
        db.batch_execute(
            "DROP TABLE IF EXISTS feedback_raw_copy;
             CREATE TABLE feedback_raw_copy (LIKE subscribers_feedback INCLUDING ALL)",
        )
        .await?;
        let rows: i64 = db.query_one("SELECT count(*) FROM subscribers_feedback", &[]).await?.get(0);
        Ok(RawCopy { db, chunks, rows: rows as u64, columns })
    }

    /// The timed part: one transaction, one COPY, commit.
    pub(crate) async fn run(mut self) -> Result<(u64, Duration)> {
        let started = Instant::now();
        let txn = self.db.transaction().await?;
        let statement = format!("COPY feedback_raw_copy ({}) FROM STDIN (FORMAT binary)", self.columns);
        let sink = txn.copy_in::<_, bytes::Bytes>(statement.as_str()).await?;
        futures::pin_mut!(sink);
        for chunk in std::mem::take(&mut self.chunks) {
            sink.send(chunk).await?;
        }
        sink.finish().await?;
        txn.commit().await?;
        let elapsed = started.elapsed();
        self.db.batch_execute("DROP TABLE feedback_raw_copy").await?;
        Ok((self.rows, elapsed))
    }
}

/// A COPY TO stream gathered in 1 MiB chunks, as sparklet sends them (COPY
/// TO yields one message per row).
pub(crate) async fn copy_out(db: &tokio_postgres::Client, query: &str) -> Result<Vec<bytes::Bytes>> {
    let out = db.copy_out(query).await?;
    futures::pin_mut!(out);
    let mut chunks = Vec::new();
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    while let Some(chunk) = out.next().await {
        buf.extend_from_slice(&chunk?);
        if buf.len() >= 1 << 20 {
            chunks.push(buf.split().freeze());
        }
    }
    chunks.push(buf.freeze());
    Ok(chunks)
}
