//! The two sinks of a batch's output: the Kafka output topic and the Postgres
//! table `subscribers_feedback`.
//!
//! Both are exactly-once per batch: each commits the batch's rows together
//! with a marker naming (query, batch) in one transaction, and can tell
//! afterwards whether that transaction landed. Recovery asks each sink and
//! redoes only the one that did not. The output reaches them chunk by chunk
//! ([`fanout`]), so both write while the SQL still runs.

pub mod copy;
mod deliveries;
pub mod fanout;
pub mod kafka;
pub(crate) mod kafka_marker;
pub(crate) mod owner;
pub(crate) mod postgres;

use std::sync::Arc;

use crate::batch::BatchPlan;
use crate::error::Result;
use crate::source::decode::BadMessage;
use fanout::Chunks;

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

    /// Writes the batch's output chunks as they come (and its marker) in one
    /// transaction, committed after [`fanout::Chunk::End`]; `dead_letters`
    /// go with it where the sink keeps them (Kafka). Returns the number of
    /// rows written.
    async fn write(&mut self, plan: &BatchPlan, dead_letters: &Arc<[BadMessage]>, rows: Chunks) -> Result<u64>;
}
