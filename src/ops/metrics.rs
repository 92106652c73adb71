//! The process's Prometheus metrics, one registry for the process (as
//! Prometheus clients keep a default registry). The event structs of
//! [`crate::ops::events`] feed them, so a metric and its log line cannot drift
//! apart; `/metrics` ([`crate::ops::http`]) encodes them in the text format.
//!
//! Every name starts with `sparklet_`; counters end in `_total`. The list,
//! with what each counts, is in `docs/operations.md` ("Metrics") and is the one
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

/// Declares every metric once: its field, type, constructor, name (after
/// `sparklet_`) and help text. The struct, its constructor and the
/// registrations all come from this one list, in this order.
macro_rules! metrics {
    ($($field:ident: $ty:ty = $init:expr, $name:literal, $help:literal;)*) => {
        /// Every metric of the process.
        pub(crate) struct Metrics {
            registry: Registry,
            $(pub $field: $ty,)*
            /// When the current subscribers version was loaded, and when it
            /// was last confirmed current (epoch ms), for the age gauges, set
            /// when scraped.
            subscribers_loaded_at_ms: AtomicI64,
            subscribers_confirmed_at_ms: AtomicI64,
        }

        impl Metrics {
            fn new() -> Self {
                let mut m = Metrics {
                    registry: Registry::with_prefix("sparklet"),
                    $($field: $init,)*
                    subscribers_loaded_at_ms: AtomicI64::new(0),
                    subscribers_confirmed_at_ms: AtomicI64::new(0),
                };
                $(m.registry.register($name, $help, m.$field.clone());)*
                m.start_at_zero();
                m
            }
        }
    };
}

metrics! {
    info: Family<InfoLabels, Gauge> = Family::default(),
        "info",
        "The query this process runs and sparklet's version (always 1)";
    input_rows: Counter = Counter::default(),
        "input_rows",
        "Input messages read by committed batches";
    output_rows: Family<SinkLabel, Counter> = Family::default(),
        "output_rows",
        "Rows written by committed batches, per sink";
    malformed_rows: Family<ReasonLabel, Counter> = Family::default(),
        "malformed_rows",
        "Input messages refused by validation, per reason";
    dead_lettered_rows: Family<ReasonLabel, Counter> = Family::default(),
        "dead_lettered_rows",
        "Refused messages written to the dead-letter topic";
    expired_rows: Counter = Counter::default(),
        "expired_rows",
        "Campaigns whose end had passed at their batch's time";
    held_rows: Gauge = Gauge::default(),
        "held_rows",
        "Campaigns held until their start (--hold-future-campaigns)";
    batches_committed: Counter = Counter::default(),
        "batches_committed",
        "Batches in both sinks with their commit recorded";
    batches_replayed: Counter = Counter::default(),
        "batches_replayed",
        "Committed batches that were replays of an earlier attempt";
    batch_duration: Family<PhaseLabel, Histogram, fn() -> Histogram> = Family::new_with_constructor(duration_histogram),
        "batch_duration_seconds",
        "Time per batch phase (trigger: the whole batch)";
    last_committed_batch_id: Gauge = Gauge::default(),
        "last_committed_batch_id",
        "Id of the last committed batch";
    last_committed_batch_timestamp: FloatGauge = FloatGauge::default(),
        "last_committed_batch_timestamp_seconds",
        "Unix time the last batch committed";
    trigger_loop_advanced: FloatGauge = FloatGauge::default(),
        "trigger_loop_last_advanced_timestamp_seconds",
        "Unix time the trigger loop last finished a trigger (a batch, an idle check, a back-off)";
    source_lag_records: Family<PartitionLabels, Gauge> = Family::default(),
        "source_lag_records",
        "Input offsets not yet processed, per partition";
    source_lag_seconds: Family<PartitionLabels, FloatGauge> = Family::default(),
        "source_lag_seconds",
        "How far behind each partition's processing is, in seconds";
    source_data_loss: Counter = Counter::default(),
        "source_data_loss",
        "Times input offsets were gone before they were read";
    subscribers_rows: Gauge = Gauge::default(),
        "subscribers_rows",
        "Rows of the cached subscribers table";
    subscribers_age: FloatGauge = FloatGauge::default(),
        "subscribers_snapshot_age_seconds",
        "Age of the cached subscribers table (since it was loaded)";
    subscribers_unconfirmed: FloatGauge = FloatGauge::default(),
        "subscribers_unconfirmed_seconds",
        "Time since the cached subscribers table was last known to be current (loaded, or its version checked)";
    subscribers_version: Gauge = Gauge::default(),
        "subscribers_version",
        "Change version of the subscribers table the cache holds";
    subscribers_reloads: Family<OutcomeLabel, Counter> = Family::default(),
        "subscribers_reloads",
        "Reloads of the subscribers cache, per outcome";
    failures: Family<FailureLabels, Counter> = Family::default(),
        "failures",
        "Failed trigger attempts, per component";
    retries: Family<ComponentLabel, Counter> = Family::default(),
        "retries",
        "Failed trigger attempts that were retried, per component";
    blocked_seconds: Family<ComponentLabel, FloatGauge> = Family::default(),
        "blocked_seconds",
        "How long the query has been waiting for a component that fails (kafka, postgres, checkpoint), retrying; 0 when it is not waiting";
    transactions_aborted: Counter = Counter::default(),
        "kafka_transactions_aborted",
        "Output transactions aborted";
    producer_fenced: Counter = Counter::default(),
        "kafka_producer_fenced",
        "Times the output producer was fenced by a newer owner";
    sink_writes_skipped: Family<SinkLabel, Counter> = Family::default(),
        "sink_writes_skipped",
        "Replayed batches a sink already held, not written again";
    ready: Gauge = Gauge::default(),
        "ready",
        "1 when Kafka and Postgres answer, the subscribers are loaded and the checkpoint is owned";
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
pub(crate) fn encode() -> String {
    let m = metrics();
    m.refresh_ages();
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &m.registry);
    text
}

impl Metrics {
    /// Creates the series whose labels are known in advance at zero, so
    /// they are scraped (and `rate()` works) before the first event.
    fn start_at_zero(&self) {
        for sink in ["kafka", "postgres"] {
            let label = SinkLabel { sink: sink.to_string() };
            self.output_rows.get_or_create(&label).inc_by(0);
            self.sink_writes_skipped.get_or_create(&label).inc_by(0);
        }
        for reason in crate::schema::Reason::ALL {
            let label = ReasonLabel { reason: reason.code().to_string() };
            self.malformed_rows.get_or_create(&label).inc_by(0);
            self.dead_lettered_rows.get_or_create(&label).inc_by(0);
        }
        for (phase, _) in crate::ops::progress::DurationMs::default().phases() {
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
