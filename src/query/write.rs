//! Step 5, write: the batch's output streamed to both sinks at once, each
//! one transaction with its marker, and the sinks a replay finds already
//! committed left out.

use std::sync::Arc;
use std::time::Instant;

use crate::batch::BatchPlan;
use crate::error::{Error, Result};
use crate::events;
use crate::progress::{self, DurationMs, SinkProgress};
use crate::sink::{fanout, Sink};
use crate::source::decode::BadMessage;
use crate::transform::OutputStream;

use super::{sql_runtime, Attempt, Query};

impl Query {
    /// Feeds `output` to every sink that lacks the batch and waits for both;
    /// returns each sink's progress and the number of output rows. A sink
    /// that fails leaves the other to finish (a replay redoes only the one
    /// that failed); a fenced sink, or a SQL error at run time (no sink
    /// commits then), decides the result.
    pub(super) async fn write(
        &mut self,
        plan: &BatchPlan,
        output: OutputStream,
        dead_letters: &Arc<[BadMessage]>,
        attempt: Attempt,
        d: &mut DurationMs,
    ) -> Result<([SinkProgress; 2], u64)> {
        let check = attempt == Attempt::Replay;
        let kafka_done = check && self.kafka.is_committed(plan).await?;
        let postgres_done = check && self.postgres.is_committed(plan).await?;
        let (kafka_tx, kafka_rx) = fanout::channel();
        let (postgres_tx, postgres_rx) = fanout::channel();
        let senders = [(!kafka_done).then_some(kafka_tx), (!postgres_done).then_some(postgres_tx)];
        let (kafka, postgres) = (&mut self.kafka, &mut self.postgres);
        let kafka_write = timed(async {
            if kafka_done {
                return Ok(0);
            }
            kafka.write(plan, dead_letters, kafka_rx).await
        });
        let postgres_write = timed(async {
            if postgres_done {
                return Ok(0);
            }
            postgres.write(plan, dead_letters, postgres_rx).await
        });
        let feed = fanout::feed(output, senders.into_iter().flatten().collect());
        let (fed, (kafka, kafka_ms), (postgres, postgres_ms)) = tokio::join!(feed, kafka_write, postgres_write);
        (d.kafka_sink, d.postgres_sink) = (kafka_ms, postgres_ms);
        // A fenced sink wins over any other error: the run must stop, not retry.
        for result in [&kafka, &postgres] {
            if let Err(Error::Fenced { sink, query_id }) = result {
                return Err(Error::Fenced { sink, query_id: query_id.clone() });
            }
        }
        let rows = fed.map_err(|e| sql_runtime(plan, e))?;
        let (kafka, postgres) = (kafka?, postgres?);
        for (name, skipped) in [("kafka", kafka_done), ("postgres", postgres_done)] {
            if skipped {
                events::SinkWriteSkipped { sink: name, batch_id: plan.batch_id }.emit();
            }
        }
        Ok(([sink_progress("kafka", kafka, kafka_done), sink_progress("postgres", postgres, postgres_done)], rows))
    }
}

/// Runs `f`, returning its output and how long it took in milliseconds.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let started = Instant::now();
    let out = f.await;
    (out, progress::ms(started.elapsed()))
}

fn sink_progress(name: &str, rows: u64, skipped: bool) -> SinkProgress {
    SinkProgress { description: name.to_string(), num_output_rows: rows, skipped }
}
