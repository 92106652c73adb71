//! The process's Prometheus metrics, one registry for the process (as
//! Prometheus clients keep a default registry). The event structs of
//! [`crate::events`] feed them, so a metric and its log line cannot drift
//! apart; `/metrics` ([`crate::http`]) encodes them in the text format.
//!
//! Every name starts with `sparklet_`; counters end in `_total`. The list,
//! with what each counts, is in the README ("Metrics") and is the one
//! `deploy/` (the Grafana dashboard, the alert rules) may use.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A float gauge (seconds, timestamps).
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Labels of one sink: `kafka` or `postgres`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SinkLabel {
    pub sink: String,
}

/// Labels of a refused input message's reason code (`not_json`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

/// Labels of a batch phase (`get_batch`, `query`, `trigger` for the whole).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PhaseLabel {
    pub phase: &'static str,
}

/// Labels of a failed attempt: the component that failed and whether it is
/// retried.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub component: &'static str,
    pub retryable: &'static str,
}

/// Labels of a retried component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ComponentLabel {
    pub component: &'static str,
}

/// Labels of one input partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

/// Labels of a reload's outcome: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Labels of `sparklet_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InfoLabels {
    pub query_id: String,
    pub version: &'static str,
}

/// Every metric of the process.
pub(crate) struct Metrics {
    registry: Registry,
    pub info: Family<InfoLabels, Gauge>,
    pub input_rows: Counter,
    pub output_rows: Family<SinkLabel, Counter>,
    pub malformed_rows: Family<ReasonLabel, Counter>,
    pub dead_lettered_rows: Family<ReasonLabel, Counter>,
    pub expired_rows: Counter,
    pub held_rows: Gauge,
    pub batches_committed: Counter,
    pub batches_replayed: Counter,
    pub batch_duration: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    pub last_committed_batch_id: Gauge,
    pub last_committed_batch_timestamp: FloatGauge,
    pub trigger_loop_advanced: FloatGauge,
    pub source_lag_records: Family<PartitionLabels, Gauge>,
    pub source_lag_seconds: Family<PartitionLabels, FloatGauge>,
    pub source_data_loss: Counter,
    pub subscribers_rows: Gauge,
    pub subscribers_age: FloatGauge,
    pub subscribers_unconfirmed: FloatGauge,
    pub subscribers_version: Gauge,
    pub subscribers_reloads: Family<OutcomeLabel, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub retries: Family<ComponentLabel, Counter>,
    pub blocked_seconds: Family<ComponentLabel, FloatGauge>,
    pub transactions_aborted: Counter,
    pub producer_fenced: Counter,
    pub sink_writes_skipped: Family<SinkLabel, Counter>,
    pub ready: Gauge,
    /// When the current subscribers version was loaded, and when it was last
    /// confirmed current (epoch ms), for the age gauges, set when scraped.
    subscribers_loaded_at_ms: AtomicI64,
    subscribers_confirmed_at_ms: AtomicI64,
}

/// The components a query can wait for in an outage, each a series of
/// `sparklet_blocked_seconds` from the start.
pub(crate) const BLOCKING_COMPONENTS: [&str; 3] = ["kafka", "postgres", "checkpoint"];

/// Sets `sparklet_blocked_seconds`: `component` blocked for `seconds`, the
/// others not (all 0 with `None`).
pub(crate) fn set_blocked(blocked: Option<(&'static str, f64)>) {
    for component in BLOCKING_COMPONENTS {
        let seconds = blocked.filter(|(c, _)| *c == component).map_or(0.0, |(_, s)| s);
        metrics().blocked_seconds.get_or_create(&ComponentLabel { component }).set(seconds);
    }
}

/// Bounds of the batch-duration histogram: 1 ms to about 66 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The metrics of this process.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// The metrics in Prometheus's text format (what `/metrics` serves).
pub fn encode() -> String {
    let m = metrics();
    m.refresh_ages();
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &m.registry);
    text
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("sparklet"),
            info: Family::default(),
            input_rows: Counter::default(),
            output_rows: Family::default(),
            malformed_rows: Family::default(),
            dead_lettered_rows: Family::default(),
            expired_rows: Counter::default(),
            held_rows: Gauge::default(),
            batches_committed: Counter::default(),
            batches_replayed: Counter::default(),
            batch_duration: Family::new_with_constructor(duration_histogram),
            last_committed_batch_id: Gauge::default(),
            last_committed_batch_timestamp: FloatGauge::default(),
            trigger_loop_advanced: FloatGauge::default(),
            source_lag_records: Family::default(),
            source_lag_seconds: Family::default(),
            source_data_loss: Counter::default(),
            subscribers_rows: Gauge::default(),
            subscribers_age: FloatGauge::default(),
            subscribers_unconfirmed: FloatGauge::default(),
            subscribers_version: Gauge::default(),
            subscribers_reloads: Family::default(),
            failures: Family::default(),
            retries: Family::default(),
            blocked_seconds: Family::default(),
            transactions_aborted: Counter::default(),
            producer_fenced: Counter::default(),
            sink_writes_skipped: Family::default(),
            ready: Gauge::default(),
            subscribers_loaded_at_ms: AtomicI64::new(0),
            subscribers_confirmed_at_ms: AtomicI64::new(0),
        };
        m.register_batch_metrics();
        m.register_component_metrics();
        m.start_at_zero();
        m
    }

    /// Creates the series whose labels are known in advance at zero, so
    /// they are scraped (and `rate()` works) before the first event.
    fn start_at_zero(&self) {
        for sink in ["kafka", "postgres"] {
            let label = SinkLabel { sink: sink.to_string() };
            self.output_rows.get_or_create(&label).inc_by(0);
            self.sink_writes_skipped.get_or_create(&label).inc_by(0);
        }
        for reason in crate::source::validate::Reason::ALL {
            let label = ReasonLabel { reason: reason.code().to_string() };
            self.malformed_rows.get_or_create(&label).inc_by(0);
            self.dead_lettered_rows.get_or_create(&label).inc_by(0);
        }
        for (phase, _) in crate::progress::DurationMs::default().phases() {
            drop(self.batch_duration.get_or_create(&PhaseLabel { phase }));
        }
        for outcome in ["ok", "failed"] {
            self.subscribers_reloads.get_or_create(&OutcomeLabel { outcome }).inc_by(0);
        }
        for component in BLOCKING_COMPONENTS {
            self.blocked_seconds.get_or_create(&ComponentLabel { component }).set(0.0);
        }
        for component in ["kafka", "postgres"] {
            self.retries.get_or_create(&ComponentLabel { component }).inc_by(0);
            for retryable in ["true", "false"] {
                self.failures.get_or_create(&FailureLabels { component, retryable }).inc_by(0);
            }
        }
    }

    /// The metrics of batches: rows, durations, commits, the trigger loop.
    fn register_batch_metrics(&mut self) {
        let r = &mut self.registry;
        r.register("info", "The query this process runs and sparklet's version (always 1)", self.info.clone());
        r.register("input_rows", "Input messages read by committed batches", self.input_rows.clone());
        r.register("output_rows", "Rows written by committed batches, per sink", self.output_rows.clone());
        r.register("malformed_rows", "Input messages refused by validation, per reason", self.malformed_rows.clone());
        r.register(
            "dead_lettered_rows",
            "Refused messages written to the dead-letter topic",
            self.dead_lettered_rows.clone(),
        );
        r.register("expired_rows", "Campaigns whose end had passed at their batch's time", self.expired_rows.clone());
        r.register("held_rows", "Campaigns held until their start (--hold-future-campaigns)", self.held_rows.clone());
        r.register(
            "batches_committed",
            "Batches in both sinks with their commit recorded",
            self.batches_committed.clone(),
        );
        r.register(
            "batches_replayed",
            "Committed batches that were replays of an earlier attempt",
            self.batches_replayed.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Time per batch phase (trigger: the whole batch)",
            self.batch_duration.clone(),
        );
        r.register("last_committed_batch_id", "Id of the last committed batch", self.last_committed_batch_id.clone());
        r.register(
            "last_committed_batch_timestamp_seconds",
            "Unix time the last batch committed",
            self.last_committed_batch_timestamp.clone(),
        );
        r.register(
            "trigger_loop_last_advanced_timestamp_seconds",
            "Unix time the trigger loop last finished a trigger (a batch, an idle check, a back-off)",
            self.trigger_loop_advanced.clone(),
        );
    }

    /// The metrics of the source, the subscribers cache and failures.
    fn register_component_metrics(&mut self) {
        let r = &mut self.registry;
        r.register(
            "source_lag_records",
            "Input offsets not yet processed, per partition",
            self.source_lag_records.clone(),
        );
        r.register(
            "source_lag_seconds",
            "How far behind each partition's processing is, in seconds",
            self.source_lag_seconds.clone(),
        );
        r.register(
            "source_data_loss",
            "Times input offsets were gone before they were read",
            self.source_data_loss.clone(),
        );
        r.register("subscribers_rows", "Rows of the cached subscribers table", self.subscribers_rows.clone());
        r.register(
            "subscribers_snapshot_age_seconds",
            "Age of the cached subscribers table (since it was loaded)",
            self.subscribers_age.clone(),
        );
        r.register(
            "subscribers_unconfirmed_seconds",
            "Time since the cached subscribers table was last known to be current (loaded, or its version checked)",
            self.subscribers_unconfirmed.clone(),
        );
        r.register(
            "subscribers_version",
            "Change version of the subscribers table the cache holds",
            self.subscribers_version.clone(),
        );
        r.register(
            "subscribers_reloads",
            "Reloads of the subscribers cache, per outcome",
            self.subscribers_reloads.clone(),
        );
        r.register("failures", "Failed trigger attempts, per component", self.failures.clone());
        r.register("retries", "Failed trigger attempts that were retried, per component", self.retries.clone());
        r.register(
            "blocked_seconds",
            "How long the query has been waiting for a component that fails (kafka, postgres, checkpoint), retrying; 0 when it is not waiting",
            self.blocked_seconds.clone(),
        );
        r.register("kafka_transactions_aborted", "Output transactions aborted", self.transactions_aborted.clone());
        r.register(
            "kafka_producer_fenced",
            "Times the output producer was fenced by a newer owner",
            self.producer_fenced.clone(),
        );
        r.register(
            "sink_writes_skipped",
            "Replayed batches a sink already held, not written again",
            self.sink_writes_skipped.clone(),
        );
        r.register(
            "ready",
            "1 when Kafka and Postgres answer, the subscribers are loaded and the checkpoint is owned",
            self.ready.clone(),
        );
    }

    /// Records when the current subscribers version was loaded.
    pub(crate) fn subscribers_loaded(&self, loaded_at_ms: i64) {
        self.subscribers_loaded_at_ms.store(loaded_at_ms, Ordering::Relaxed);
        self.subscribers_confirmed(loaded_at_ms);
    }

    /// Records when the cached subscribers were last known to be current.
    pub(crate) fn subscribers_confirmed(&self, at_ms: i64) {
        self.subscribers_confirmed_at_ms.fetch_max(at_ms, Ordering::Relaxed);
        self.refresh_ages();
    }

    /// Sets the gauges that are ages (computed when scraped).
    fn refresh_ages(&self) {
        let now = crate::batch::epoch_ms();
        let since = |at: &AtomicI64| (now - at.load(Ordering::Relaxed)).max(0) as f64 / 1000.0;
        if self.subscribers_loaded_at_ms.load(Ordering::Relaxed) > 0 {
            self.subscribers_age.set(since(&self.subscribers_loaded_at_ms));
            self.subscribers_unconfirmed.set(since(&self.subscribers_confirmed_at_ms));
        }
    }
}

/// Epoch milliseconds as Prometheus's float seconds.
pub(crate) fn seconds(epoch_ms: i64) -> f64 {
    epoch_ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_total_and_histograms_with_buckets() {
        let m = metrics();
        m.output_rows.get_or_create(&SinkLabel { sink: "kafka".into() }).inc_by(3);
        m.batch_duration.get_or_create(&PhaseLabel { phase: "trigger" }).observe(0.02);
        let text = encode();
        assert!(text.contains("sparklet_output_rows_total{sink=\"kafka\"}"), "{text}");
        assert!(text.contains("sparklet_batch_duration_seconds_bucket{le="), "{text}");
        assert!(text.contains("# TYPE sparklet_subscribers_snapshot_age_seconds gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
