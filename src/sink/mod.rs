//! The two sinks of a batch's output: the Kafka output topic and the Postgres
//! table `subscribers_feedback`.
//!
//! Both are exactly-once per batch: each commits the batch's rows together
//! with a marker naming (query, batch) in one transaction, and can tell
//! afterwards whether that transaction landed. Recovery asks each sink and
//! redoes only the one that did not.

pub mod copy;
mod deliveries;
pub mod kafka;
pub(crate) mod kafka_marker;
pub(crate) mod postgres;

use arrow::array::RecordBatch;

use crate::batch::BatchPlan;
use crate::error::Result;

/// A destination of the batch output.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Name used in logs and progress (`kafka`, `postgres`).
    fn name(&self) -> &'static str;

    /// Whether batch `plan.batch_id` is already committed in this sink.
    async fn is_committed(&mut self, plan: &BatchPlan) -> Result<bool>;

    /// Writes all `rows` of the batch and its marker in one transaction;
    /// returns the number of rows written.
    async fn write(&mut self, plan: &BatchPlan, rows: &[RecordBatch]) -> Result<u64>;
}

/// What one sink did with one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkOutcome {
    /// Rows written by this run.
    pub rows_written: u64,
    /// Whether the batch was already committed (found by recovery) and skipped.
    pub skipped: bool,
}

/// Writes the batch to `sink` unless it is already committed there.
pub async fn write_once<S: Sink>(
    sink: &mut S,
    plan: &BatchPlan,
    rows: &[RecordBatch],
    check: bool,
) -> Result<SinkOutcome> {
    if check && sink.is_committed(plan).await? {
        return Ok(SinkOutcome { rows_written: 0, skipped: true });
    }
    let rows_written = sink.write(plan, rows).await?;
    Ok(SinkOutcome { rows_written, skipped: false })
}
