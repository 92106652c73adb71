//! Several shards in one process: one trigger loop per shard, run side by
//! side on the same task. A shutdown reaches every loop (each finishes its
//! batch and commits); a shard that stops on a failure stops the others
//! too, so the process exits and its supervisor (Kubernetes) restarts it
//! rather than letting a shard fall silently behind.

use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use super::{Driver, Policy, RunSummary};
use crate::error::Result;
use crate::ops::progress_bar::ProgressBar;
use crate::ops::status::RunStatus;
use crate::query::Query;

/// Runs every query (one per shard) until shutdown or, for `once` and
/// `available-now`, until each is done; returns the summed summary, or the
/// first failure once every loop has stopped.
pub(super) async fn run_all(
    policy: Policy,
    queries: Vec<Query>,
    status: &RunStatus,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<RunSummary> {
    let (stop, stopping) = watch::channel(false);
    let query_id = queries.first().map(|q| q.id().to_string()).unwrap_or_default();
    let mut running: FuturesUnordered<_> = queries
        .into_iter()
        .map(|query| {
            let mut stopping = stopping.clone();
            let driver = Driver::new(policy, query, status.clone());
            async move {
                let stopped = async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                };
                driver.run(stopped, &mut ProgressBar::new(false)).await
            }
        })
        .collect();
    let mut total = RunSummary { query_id, ..Default::default() };
    let mut failure = None;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown, if !*stop.borrow() => {
                let _ = stop.send(true);
            }
            done = running.next() => match done {
                None => break,
                Some(Ok(summary)) => add(&mut total, &summary),
                Some(Err(e)) => {
                    tracing::error!(cause = %e.chain(), "a shard stopped on a failure; stopping the others after their batch");
                    let _ = stop.send(true);
                    failure.get_or_insert(e);
                }
            },
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Adds one shard's summary to the total.
fn add(total: &mut RunSummary, shard: &RunSummary) {
    total.batches += shard.batches;
    total.input_rows += shard.input_rows;
    total.output_rows += shard.output_rows;
    total.malformed_rows += shard.malformed_rows;
    total.expired_rows += shard.expired_rows;
    total.failed_attempts += shard.failed_attempts;
    total.last_batch_id = total.last_batch_id.max(shard.last_batch_id);
}
