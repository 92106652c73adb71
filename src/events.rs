//! Observable events. Each struct is one thing that happens; `emit()` both
//! logs it (structured `tracing` fields) and bumps its counter, so logs and
//! counts cannot drift apart. [`counters`] reads the totals of this process.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide totals, one per event kind.
#[derive(Debug, Default)]
pub struct Counters {
    pub batches_committed: AtomicU64,
    pub batches_failed: AtomicU64,
    pub input_rows: AtomicU64,
    pub malformed_messages: AtomicU64,
    pub dead_lettered_messages: AtomicU64,
    pub output_rows: AtomicU64,
    pub sink_writes_skipped: AtomicU64,
    pub subscribers_loads: AtomicU64,
    pub data_loss: AtomicU64,
}

static COUNTERS: Counters = Counters {
    batches_committed: AtomicU64::new(0),
    batches_failed: AtomicU64::new(0),
    input_rows: AtomicU64::new(0),
    malformed_messages: AtomicU64::new(0),
    dead_lettered_messages: AtomicU64::new(0),
    output_rows: AtomicU64::new(0),
    sink_writes_skipped: AtomicU64::new(0),
    subscribers_loads: AtomicU64::new(0),
    data_loss: AtomicU64::new(0),
};

/// The totals of this process.
pub fn counters() -> &'static Counters {
    &COUNTERS
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// An input message that failed validation, and what `--on-bad-record`
/// did with it.
pub(crate) struct BadRecord<'a> {
    pub topic: &'a str,
    pub message: &'a crate::source::decode::BadMessage,
    pub action: crate::config::OnBadRecord,
}

impl BadRecord<'_> {
    pub(crate) fn emit(&self) {
        let m = self.message;
        tracing::warn!(
            topic = self.topic,
            partition = m.partition,
            offset = m.offset,
            reason = m.refusal.reason.code(),
            error = %m.refusal.message,
            action = %self.action,
            "bad record"
        );
        bump(&COUNTERS.malformed_messages, 1);
        if self.action == crate::config::OnBadRecord::DeadLetter {
            bump(&COUNTERS.dead_lettered_messages, 1);
        }
    }
}

/// Input offsets that can no longer be read, with `--fail-on-data-loss
/// false` (otherwise the run stops with the same text).
pub(crate) struct DataLossDetected<'a> {
    pub topic: &'a str,
    pub loss: &'a crate::source::plan::DataLoss,
}

impl DataLossDetected<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(
            topic = self.topic,
            partition = self.loss.partition,
            expected_offset = self.loss.expected,
            available = self.loss.available,
            "data loss: {}; continuing from the earliest offset (--fail-on-data-loss false)",
            self.loss
        );
        bump(&COUNTERS.data_loss, 1);
    }
}

/// The subscribers cache was (re)loaded.
pub(crate) struct SubscribersLoaded<'a> {
    pub snapshot: &'a str,
    pub rows: usize,
    pub duplicates_dropped: usize,
    pub elapsed_ms: u128,
}

impl SubscribersLoaded<'_> {
    pub(crate) fn emit(&self) {
        tracing::info!(
            snapshot = self.snapshot,
            rows = self.rows,
            duplicates_dropped = self.duplicates_dropped,
            elapsed_ms = self.elapsed_ms as u64,
            "subscribers cache loaded"
        );
        bump(&COUNTERS.subscribers_loads, 1);
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
        bump(&COUNTERS.sink_writes_skipped, 1);
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
    pub(crate) fn emit(&self) {
        tracing::error!(
            batch_id = ?self.batch_id,
            attempt = self.attempt,
            retryable = self.retryable,
            error = %self.error.chain(),
            "trigger failed"
        );
        bump(&COUNTERS.batches_failed, 1);
    }
}

/// A batch is in both sinks and its commit is recorded.
pub(crate) struct BatchCommitted<'a> {
    pub progress: &'a crate::progress::BatchProgress,
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
        bump(&COUNTERS.batches_committed, 1);
        bump(&COUNTERS.input_rows, p.num_input_rows);
        bump(&COUNTERS.output_rows, p.num_output_rows);
    }
}
