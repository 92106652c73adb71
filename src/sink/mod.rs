//! The two sinks of a batch's output: the Kafka output topic and the job's
//! Postgres table (the seed's `subscribers_feedback`).
//!
//! Both are exactly-once per batch: each commits the batch's rows together
//! with a marker naming (query, batch) in one transaction, and can tell
//! afterwards whether that transaction landed. Recovery asks each sink and
//! redoes only the one that did not. Both read the batch's rows from one
//! [`feed`] as the SQL computes them.

pub mod copy;
mod dead_letter;
mod deliveries;
pub(crate) mod feed;
pub mod kafka;
pub(crate) mod kafka_marker;
pub(crate) mod owner;
pub(crate) mod postgres;
mod table;
mod target;

use std::sync::Arc;

use crate::batch::BatchPlan;
use crate::error::Result;
use crate::source::decode::BadMessage;

pub use feed::{BatchOutput, Chunks};
pub(crate) use owner::OWNERS_DDL;
pub(crate) use postgres::MARKER_DDL;
pub(crate) use table::check as check_table;
pub use target::{Element, Target};

/// A destination of the batch output.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Name used in logs and progress (`kafka`, `postgres`).
    fn name(&self) -> &'static str;

    /// The newest batch of this query the sink holds (`None`: none, or no
    /// markers with at-least-once).
    async fn latest_committed(&mut self) -> Result<Option<u64>>;

    /// Whether batch `plan.batch_id` is already committed in this sink.
    async fn is_committed(&mut self, plan: &BatchPlan) -> Result<bool>;

    /// Writes the batch's rows as they arrive (and its marker) in one
    /// transaction, committed only once the rows' end has been read; returns
    /// the number of rows written.
    async fn write(&mut self, plan: &BatchPlan, rows: Chunks, dead_letters: &Arc<[BadMessage]>) -> Result<u64>;
}

/// What one sink did with one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkOutcome {
    /// Rows written by this run.
    pub rows_written: u64,
    /// Whether the batch was already committed (found by recovery) and skipped.
    pub skipped: bool,
}

/// Writes the batch to `sink`, or skips it when recovery found it there
/// (`rows` is `None`).
pub async fn write_once<S: Sink>(
    sink: &mut S,
    plan: &BatchPlan,
    rows: Option<Chunks>,
    dead_letters: &Arc<[BadMessage]>,
) -> Result<SinkOutcome> {
    let Some(rows) = rows else {
        return Ok(SinkOutcome { rows_written: 0, skipped: true });
    };
    let rows_written = sink.write(plan, rows, dead_letters).await?;
    Ok(SinkOutcome { rows_written, skipped: false })
}
