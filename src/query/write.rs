//! Step 5 of a batch, write: both sinks at once, fed the rows as the SQL
//! computes them ([`crate::sink::feed`]), and which failure explains a
//! failed write.

use std::sync::Arc;
use std::time::Instant;

use super::{Attempt, Query};
use crate::batch::BatchPlan;
use crate::error::{Error, Result};
use crate::ops::events;
use crate::ops::progress::{DurationMs, SinkProgress};
use crate::sink::{write_once, BatchOutput, Sink, SinkOutcome};
use crate::source::decode::BadMessage;

impl Query {
    /// Step 5: both sinks at once, each one transaction with its marker, fed
    /// the rows as they are computed; a replay writes only to the sinks that
    /// do not hold the batch. Returns what each sink did and the row count.
    pub(super) async fn write(
        &mut self,
        plan: &BatchPlan,
        output: BatchOutput,
        dead_letters: Arc<[BadMessage]>,
        attempt: Attempt,
        d: &mut DurationMs,
    ) -> Result<([SinkProgress; 2], u64)> {
        let writes = match attempt {
            Attempt::New => [true, true],
            Attempt::Replay => {
                let held = tokio::try_join!(self.kafka.is_committed(plan), self.postgres.is_committed(plan))?;
                [!held.0, !held.1]
            }
        };
        let (feed, [kafka_rows, postgres_rows]) = output.feed(writes);
        let feed = tokio::spawn(feed.run());
        let kafka = timed(write_once(&mut self.kafka, plan, kafka_rows, &dead_letters));
        let postgres = timed(write_once(&mut self.postgres, plan, postgres_rows, &dead_letters));
        let (fed, (kafka, kafka_time), (postgres, pg_time)) = tokio::join!(feed, kafka, postgres);
        d.kafka_sink = crate::util::time::ms(kafka_time);
        d.postgres_sink = crate::util::time::ms(pg_time);
        let fed = fed.unwrap_or_else(|e| Err(Error::Runtime(format!("the task computing the output failed: {e}"))));
        let (rows, kafka, postgres) = settle(fed, kafka, postgres)?;
        for (name, outcome) in [("kafka", kafka), ("postgres", postgres)] {
            if outcome.skipped {
                events::SinkWriteSkipped { sink: name, batch_id: plan.batch_id }.emit();
            }
        }
        Ok(([sink_progress("kafka", kafka), sink_progress("postgres", postgres)], rows))
    }
}

/// The error that explains a failed write: a fenced sink first (the run
/// must stop, not retry), then the SQL's, then a sink's own; a sink whose
/// input was cut ([`Error::OutputCut`]) only echoes another failure.
fn settle(
    fed: Result<u64>,
    kafka: Result<SinkOutcome>,
    postgres: Result<SinkOutcome>,
) -> Result<(u64, SinkOutcome, SinkOutcome)> {
    for result in [&kafka, &postgres] {
        if let Err(Error::Fenced { sink, query_id }) = result {
            return Err(Error::Fenced { sink, query_id: query_id.clone() });
        }
    }
    let rows = fed?;
    match (kafka, postgres) {
        (Ok(kafka), Ok(postgres)) => Ok((rows, kafka, postgres)),
        (Err(Error::OutputCut), Err(e)) | (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn sink_progress(name: &str, outcome: SinkOutcome) -> SinkProgress {
    SinkProgress { description: name.to_string(), num_output_rows: outcome.rows_written, skipped: outcome.skipped }
}
