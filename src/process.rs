//! What one `sparklet run` process does: it starts the status the HTTP
//! endpoint serves (`--http-addr`), starts the query (or its shards), and
//! hands them to the trigger loop ([`crate::driver`]) until shutdown.

use std::future::Future;

use crate::config::Config;
use crate::driver::{self, Policy, RunSummary};
use crate::error::Result;
use crate::ops::http::{self, health::Probes};
use crate::ops::status::RunStatus;
use crate::query::Query;

/// Runs the query described by `config` until `shutdown` resolves, or until
/// the data available at start is done for `once` / `available-now`.
///
/// `shutdown` is watched from the start: while sparklet connects (a broker
/// that does not answer can take `--kafka-timeout`), it stops at once, since
/// nothing has been planned yet; once batches run, it stops between them.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<RunSummary> {
    tokio::pin!(shutdown);
    let policy = Policy { trigger: config.trigger, retry: config.retry };
    let status = RunStatus::new(policy.interval(), crate::kafka::transaction_timeout(&config.kafka));
    let _http = match config.http_addr {
        Some(addr) => Some(http::serve(addr, status.clone(), Probes::new(&config.kafka, &config.postgres)?).await?),
        None => None,
    };
    let queries = tokio::select! {
        biased;
        _ = &mut shutdown => {
            tracing::info!("shutdown requested while starting; nothing was planned");
            return Ok(RunSummary::default());
        }
        queries = Query::start_all(config) => queries?,
    };
    let Some(first) = queries.first() else { return Ok(RunSummary::default()) };
    status.query_started(first.id());
    let summary = driver::drive(policy, queries, &status, shutdown).await;
    status.stopped(if summary.is_ok() { "Stopped" } else { "Stopped by a failure" });
    summary
}
