//! Observable events. Each struct is one thing that happens; `emit()` both
//! logs it (structured `tracing` fields) and counts it in the process's
//! Prometheus metrics ([`crate::ops::metrics`]), so logs and metrics cannot drift
//! apart.
//!
//! Text that can come from an input message reaches a log line only escaped
//! and bounded ([`crate::util::text::quote`]): a refusal's sentence, and
//! the error chains of failed batches (a SQL cast error or a database
//! error can quote a campaign's text). A `\n` in a message so never starts a
//! forged line in the text log format. Keys and values are never logged.

use crate::ops::metrics::{
    self, metrics, ComponentLabel, FailureLabels, OutcomeLabel, PhaseLabel, ReasonLabel, SinkLabel,
};
use crate::util::text::{quote, MAX_MESSAGE_BYTES};

/// Longest error chain a log line of a failed batch keeps, in bytes.
const MAX_ERROR_BYTES: usize = 4096;

/// An error chain for one log line: escaped and bounded ([`quote`]).
fn one_line(error: &crate::error::Error) -> String {
    quote(&error.chain().to_string(), MAX_ERROR_BYTES)
}

/// An input message that failed validation, and what `--on-bad-record`
/// did with it (logged here; counted per reason when its batch commits).
pub(crate) struct BadRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The refusal's stable code.
    pub reason: &'static str,
    /// The refusal's sentence (quoted again here: it may hold message text).
    pub error: &'a str,
    pub action: crate::config::OnBadRecord,
}

impl BadRecord<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            error = %quote(self.error, MAX_MESSAGE_BYTES),
            action = %self.action,
            "bad record"
        );
        // Counted when the batch commits ([`BatchCommitted`]): an attempt
        // that fails logs its bad records again when it is retried.
    }
}

/// Input offsets that can no longer be read, with `--fail-on-data-loss
/// false` (otherwise the run stops with the same text).
pub(crate) struct DataLossDetected<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The offset the query expected to read next.
    pub expected: i64,
    /// The earliest offset still in the log.
    pub available: i64,
    /// What was lost, for people.
    pub loss: &'a str,
}

impl DataLossDetected<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(
            topic = self.topic,
            partition = self.partition,
            expected_offset = self.expected,
            available = self.available,
            "data loss: {}; continuing from the earliest offset (--fail-on-data-loss false)",
            self.loss
        );
        metrics().source_data_loss.inc();
    }
}

/// The subscribers cache was (re)loaded.
pub(crate) struct SubscribersLoaded<'a> {
    pub subscribers: &'a crate::ops::progress::SubscribersProgress,
    /// Why it was loaded: `start`, `timer`, `notification`, `version check`.
    pub reason: &'a str,
}

impl SubscribersLoaded<'_> {
    pub(crate) fn emit(&self) {
        let s = self.subscribers;
        tracing::info!(
            snapshot = %s.snapshot,
            version = s.version,
            rows = s.num_rows,
            duplicates_dropped = s.duplicates_dropped,
            elapsed_ms = s.load_ms,
            reason = self.reason,
            "subscribers cache loaded"
        );
        let m = metrics();
        m.subscribers_reloads.get_or_create(&OutcomeLabel { outcome: "ok" }).inc();
        m.subscribers_rows.set(s.num_rows as i64);
        m.subscribers_version.set(s.version);
        m.subscribers_loaded(crate::batch::epoch_ms() - s.age_ms as i64);
    }
}

/// Reloading the subscribers cache (or checking its version) failed; the
/// current version is kept.
pub(crate) struct SubscribersReloadFailed<'a> {
    pub error: &'a crate::error::Error,
    /// Since the cache was last confirmed current.
    pub age: std::time::Duration,
    /// What failed (`reloading on the timer`, ...).
    pub doing: &'a str,
}

impl SubscribersReloadFailed<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            cause = %self.error.chain(),
            unconfirmed_s = self.age.as_secs(),
            doing = self.doing,
            "keeping the current subscribers version: {} failed",
            self.doing
        );
        metrics().subscribers_reloads.get_or_create(&OutcomeLabel { outcome: "failed" }).inc();
    }
}

/// A sink already held a replayed batch, so it was not written again.
pub(crate) struct SinkWriteSkipped<'a> {
    pub sink: &'a str,
    pub batch_id: u64,
}

impl SinkWriteSkipped<'_> {
    pub(crate) fn emit(&self) {
        tracing::info!(
            sink = self.sink,
            batch_id = self.batch_id,
            "batch already committed in sink; not written again"
        );
        metrics().sink_writes_skipped.get_or_create(&SinkLabel { sink: self.sink.to_string() }).inc();
    }
}

/// A trigger (planning, or a batch) failed; it is retried if the error is
/// retryable and retries are left.
pub(crate) struct TriggerFailed<'a> {
    /// The batch, once planned.
    pub batch_id: Option<u64>,
    pub attempt: u32,
    pub retryable: bool,
    pub error: &'a crate::error::Error,
}

impl TriggerFailed<'_> {
    /// Logged as an error when it ends the run; a retried attempt is a
    /// debug line ([`ComponentDown`] says once that something is down).
    pub(crate) fn emit(&self) {
        let (batch_id, attempt, retryable, error) = (self.batch_id, self.attempt, self.retryable, one_line(self.error));
        match self.retryable {
            true => {
                tracing::debug!(batch_id = ?batch_id, attempt, retryable, error = %error, "trigger failed; retrying")
            }
            false => tracing::error!(batch_id = ?batch_id, attempt, retryable, error = %error, "trigger failed"),
        }
        let component = self.error.component();
        let retryable = if self.retryable { "true" } else { "false" };
        metrics().failures.get_or_create(&FailureLabels { component, retryable }).inc();
        if self.retryable {
            metrics().retries.get_or_create(&ComponentLabel { component }).inc();
        }
    }
}

/// A component started failing (or another one did, mid-outage): the query
/// waits and retries. Logged once per change, not per attempt; the wait
/// shows in `sparklet_blocked_seconds` and on `/readyz`.
pub(crate) struct ComponentDown<'a> {
    pub component: &'static str,
    /// When it started failing (RFC 3339).
    pub since: &'a str,
    pub error: &'a crate::error::Error,
    /// `--retry-for` (and `--max-retries`), as the command line spells it.
    pub policy: &'a crate::config::RetryPolicy,
}

impl ComponentDown<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            component = self.component,
            since = self.since,
            cause = %one_line(self.error),
            policy = %self.policy,
            "{} is failing; the query waits and retries on new connections ({})",
            self.component,
            self.policy
        );
    }
}

/// The outage is over: the trigger went through after failing.
pub(crate) struct ComponentBack {
    pub component: &'static str,
    pub waited: std::time::Duration,
    pub attempts: u32,
}

impl ComponentBack {
    pub(crate) fn emit(&self) {
        let waited = format!("{:.1} s", self.waited.as_secs_f64());
        tracing::info!(
            component = self.component,
            waited_ms = self.waited.as_millis() as u64,
            failed_attempts = self.attempts,
            "{} answers again after {waited}; the query goes on",
            self.component
        );
    }
}

/// A batch is in both sinks and its commit is recorded.
pub(crate) struct BatchCommitted<'a> {
    /// The input topic (the lag metrics' label).
    pub topic: &'a str,
    pub progress: &'a crate::ops::progress::BatchProgress,
}

impl BatchCommitted<'_> {
    pub(crate) fn emit(&self) {
        let p = self.progress;
        tracing::info!(
            batch_id = p.batch_id,
            input_rows = p.num_input_rows,
            malformed = p.num_malformed_rows,
            output_rows = p.num_output_rows,
            duration_ms = p.duration_ms.trigger_execution,
            "{}",
            p.summary()
        );
        count_batch(self.topic, p);
    }
}

/// A batch's figures in the metrics.
fn count_batch(topic: &str, p: &crate::ops::progress::BatchProgress) {
    let m = metrics();
    m.batches_committed.inc();
    if p.replayed {
        m.batches_replayed.inc();
    }
    m.input_rows.inc_by(p.num_input_rows);
    let dead_lettered = p.num_dead_lettered_rows > 0 && p.sinks.iter().any(|s| s.description == "kafka" && !s.skipped);
    for (reason, n) in &p.bad_records {
        let label = ReasonLabel { reason: reason.clone() };
        m.malformed_rows.get_or_create(&label).inc_by(*n);
        if dead_lettered {
            m.dead_lettered_rows.get_or_create(&label).inc_by(*n);
        }
    }
    m.expired_rows.inc_by(p.num_expired_rows);
    m.held_rows.set(p.num_held_rows as i64);
    for sink in p.sinks.iter().filter(|s| !s.skipped) {
        m.output_rows.get_or_create(&SinkLabel { sink: sink.description.clone() }).inc_by(sink.num_output_rows);
    }
    for (phase, ms) in p.duration_ms.phases() {
        m.batch_duration.get_or_create(&PhaseLabel { phase }).observe(ms as f64 / 1000.0);
    }
    m.last_committed_batch_id.set(p.batch_id as i64);
    m.last_committed_batch_timestamp.set(metrics::seconds(crate::batch::epoch_ms()));
    for source in &p.sources {
        for (partition, behind) in &source.offsets_behind_latest {
            let labels = metrics::PartitionLabels { topic: topic.to_string(), partition: partition.clone() };
            m.source_lag_records.get_or_create(&labels).set(*behind);
            if let Some(seconds) = source.seconds_behind_latest.get(partition) {
                m.source_lag_seconds.get_or_create(&labels).set(*seconds);
            }
        }
    }
    m.subscribers_rows.set(p.subscribers.num_rows as i64);
}

/// Planning saw the input's high watermarks: the lag of what is committed
/// so far (updated again, after the batch, by [`BatchCommitted`]), so the
/// lag metrics move even while batches fail.
pub(crate) struct SourceLagObserved<'a> {
    pub topic: &'a str,
    /// (partition, high watermark, where the next batch starts).
    pub partitions: &'a [(i32, i64, i64)],
}

impl SourceLagObserved<'_> {
    pub(crate) fn emit(&self) {
        let m = metrics();
        for &(partition, high, next) in self.partitions {
            let labels = metrics::PartitionLabels { topic: self.topic.to_string(), partition: partition.to_string() };
            let behind = (high - next).max(0);
            tracing::trace!(topic = self.topic, partition, behind, "input lag");
            m.source_lag_records.get_or_create(&labels).set(behind);
        }
    }
}

/// An output transaction was aborted (its batch is retried or replayed).
pub(crate) struct TransactionAborted<'a> {
    pub batch_id: u64,
    pub cause: &'a crate::error::Error,
}

impl TransactionAborted<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(batch_id = self.batch_id, cause = %one_line(self.cause), "output transaction aborted");
        metrics().transactions_aborted.inc();
    }
}

/// The output producer was fenced: a newer owner of the query runs.
pub(crate) struct ProducerFenced<'a> {
    pub query_id: &'a str,
}

impl ProducerFenced<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(query_id = self.query_id, "the output producer was fenced by a newer owner of the query");
        metrics().producer_fenced.inc();
    }
}
