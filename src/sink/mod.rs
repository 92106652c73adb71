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
pub(crate) mod owner;
pub(crate) mod postgres;

use arrow::array::RecordBatch;

use crate::batch::BatchPlan;
use crate::error::Result;
use crate::source::decode::BadMessage;

/// What one batch writes, materialised once ("persist") and shared by both
/// sinks.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// The output rows: every sink writes all of them.
    pub rows: Vec<RecordBatch>,
    /// Refused input messages for the dead-letter topic (the Kafka sink
    /// writes them in the batch's transaction); empty unless
    /// `--on-bad-record dead-letter`.
    pub dead_letters: Vec<BadMessage>,
}

impl BatchOutput {
    /// Number of output rows.
    pub fn num_rows(&self) -> u64 {
        self.rows.iter().map(|b| b.num_rows() as u64).sum()
    }
}

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

    /// Writes the batch's output (and its marker) in one transaction;
    /// returns the number of rows written.
    async fn write(&mut self, plan: &BatchPlan, output: &std::sync::Arc<BatchOutput>) -> Result<u64>;
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
    output: &std::sync::Arc<BatchOutput>,
    check: bool,
) -> Result<SinkOutcome> {
    if check && sink.is_committed(plan).await? {
        return Ok(SinkOutcome { rows_written: 0, skipped: true });
    }
    let rows_written = sink.write(plan, output).await?;
    Ok(SinkOutcome { rows_written, skipped: false })
}
