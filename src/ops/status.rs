//! What a run is doing right now, shared by the trigger loop (which writes
//! it) and the HTTP endpoint (which reads it): the recent progress records
//! (Spark's `recentProgress`), the status (Spark's `StreamingQueryStatus`),
//! whether the query has started (checkpoint owned, subscribers loaded) and
//! when the trigger loop last advanced, for `/livez`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ops::metrics::{self, metrics, InfoLabels};
use crate::ops::progress::BatchProgress;
use crate::util::time::rfc3339_ms;

/// Progress records kept for `/progress` (Spark keeps 100 too).
pub(crate) const RECENT_PROGRESS: usize = 100;

/// The shared status of one run; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RunStatus {
    inner: Arc<Mutex<State>>,
    /// How long the loop may go without advancing, outside a batch.
    idle_limit: Duration,
    /// How long one batch may take before the loop counts as stuck.
    batch_limit: Duration,
}

#[derive(Debug)]
struct State {
    query_id: Option<String>,
    run_id: String,
    started_at_ms: i64,
    recent: VecDeque<BatchProgress>,
    message: String,
    data_available: bool,
    /// When the running trigger started (none between triggers).
    trigger_since: Option<Instant>,
    last_advanced: Instant,
    /// What the query is waiting for in an outage, if anything.
    waiting: Option<Waiting>,
}

/// A component that fails while the query retries: since when (epoch ms,
/// and as an instant) and the last failure.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub component: &'static str,
    pub since_ms: i64,
    pub since: Instant,
    pub cause: String,
}

impl Waiting {
    /// "postgres since 2026-12-02T10:00:00.000Z (12 s): <cause>".
    pub(crate) fn describe(&self) -> String {
        let (component, since) = (self.component, rfc3339_ms(self.since_ms));
        format!("{component} since {since} ({} s): {}", self.since.elapsed().as_secs(), self.cause)
    }
}

/// `/progress`: Spark's `StreamingQuery` fields a client polls.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgressView<'a> {
    id: Option<&'a str>,
    run_id: &'a str,
    name: &'static str,
    started_at: String,
    status: StatusView<'a>,
    recent_progress: &'a VecDeque<BatchProgress>,
}

/// Spark's `StreamingQueryStatus`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusView<'a> {
    message: &'a str,
    is_data_available: bool,
    is_trigger_active: bool,
}

impl RunStatus {
    /// A run whose trigger interval is `interval` and whose batches may take
    /// up to `batch_limit` (the output transaction's timeout): the loop is
    /// live if it advanced within 3 intervals (at least 60 s: longer than
    /// the longest retry back-off) between batches, or its batch is younger
    /// than `batch_limit`; while the query starts (the subscribers loading,
    /// Kafka checked) it is live for `batch_limit` too.
    pub(crate) fn new(interval: Duration, batch_limit: Duration) -> Self {
        let state = State {
            query_id: None,
            run_id: uuid::Uuid::new_v4().to_string(),
            started_at_ms: crate::batch::epoch_ms(),
            recent: VecDeque::with_capacity(RECENT_PROGRESS),
            message: "Initializing sources".to_string(),
            data_available: false,
            trigger_since: None,
            last_advanced: Instant::now(),
            waiting: None,
        };
        // Above the longest retry back-off (30 s), with a margin.
        let idle_limit = (interval * 3).max(Duration::from_secs(60));
        RunStatus { inner: Arc::new(Mutex::new(state)), idle_limit, batch_limit }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The query started: it owns its checkpoint and holds its subscribers.
    pub(crate) fn query_started(&self, query_id: &str) {
        let mut s = self.state();
        s.query_id = Some(query_id.to_string());
        s.message = "Waiting for next trigger".to_string();
        s.last_advanced = Instant::now();
        let info = InfoLabels { query_id: query_id.to_string(), version: env!("CARGO_PKG_VERSION") };
        metrics().info.get_or_create(&info).set(1);
    }

    /// Whether the query has started (see [`query_started`](Self::query_started)).
    pub(crate) fn is_started(&self) -> bool {
        self.state().query_id.is_some()
    }

    /// A trigger (planning and its batch) begins.
    pub(crate) fn trigger_started(&self) {
        let mut s = self.state();
        s.trigger_since = Some(Instant::now());
        s.message = "Processing new data".to_string();
    }

    /// A trigger ended: with a committed batch, with no new data, or with a
    /// failure that is retried (`message` says which).
    pub(crate) fn trigger_finished(&self, progress: Option<&BatchProgress>, message: &str) {
        let mut s = self.state();
        s.trigger_since = None;
        s.last_advanced = Instant::now();
        s.message = message.to_string();
        s.data_available = progress.is_some();
        if let Some(p) = progress {
            if s.recent.len() == RECENT_PROGRESS {
                s.recent.pop_front();
            }
            s.recent.push_back(p.clone());
        }
        metrics().trigger_loop_advanced.set(metrics::seconds(crate::batch::epoch_ms()));
    }

    /// The query waits for `waiting.component`, which fails (and is
    /// retried); `sparklet_blocked_seconds` says for how long.
    pub(crate) fn waiting(&self, waiting: Waiting) {
        metrics::set_blocked(Some((waiting.component, waiting.since.elapsed().as_secs_f64())));
        self.state().waiting = Some(waiting);
    }

    /// Brings `sparklet_blocked_seconds` up to date while the query waits.
    pub(crate) fn still_waiting(&self) {
        if let Some(w) = &self.state().waiting {
            metrics::set_blocked(Some((w.component, w.since.elapsed().as_secs_f64())));
        }
    }

    /// The outage is over (the trigger went through, or the run stops).
    pub(crate) fn not_waiting(&self) {
        metrics::set_blocked(None);
        self.state().waiting = None;
    }

    /// What the query waits for, if anything.
    pub(crate) fn waiting_for(&self) -> Option<Waiting> {
        self.state().waiting.clone()
    }

    /// The run ended (shutdown or a failure): not live any more.
    pub(crate) fn stopped(&self, message: &str) {
        self.state().message = message.to_string();
    }

    /// `/progress` as JSON.
    pub(crate) fn progress_json(&self) -> String {
        let s = self.state();
        let view = ProgressView {
            id: s.query_id.as_deref(),
            run_id: &s.run_id,
            name: "sparklet",
            started_at: rfc3339_ms(s.started_at_ms),
            status: StatusView {
                message: &s.message,
                is_data_available: s.data_available,
                is_trigger_active: s.trigger_since.is_some(),
            },
            recent_progress: &s.recent,
        };
        serde_json::to_string(&view).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// `Ok(what the loop is doing)` if the trigger loop is advancing, or
    /// `Err(why not)`.
    pub(crate) fn liveness(&self) -> std::result::Result<String, String> {
        let s = self.state();
        if s.query_id.is_none() {
            let starting = s.last_advanced.elapsed();
            return match starting > self.batch_limit {
                true => Err(format!("the query has been starting for {} s", starting.as_secs())),
                false => Ok(format!("the query has been starting for {} ms", starting.as_millis())),
            };
        }
        match s.trigger_since {
            Some(since) if since.elapsed() > self.batch_limit => Err(format!(
                "the current trigger has run for {} s, longer than a batch may take ({} s)",
                since.elapsed().as_secs(),
                self.batch_limit.as_secs()
            )),
            Some(since) => Ok(format!("a trigger has been running for {} ms", since.elapsed().as_millis())),
            None if s.waiting.is_some() => Ok(format!(
                "waiting on purpose, retrying: {}",
                s.waiting.as_ref().map(Waiting::describe).unwrap_or_default()
            )),
            None if s.last_advanced.elapsed() > self.idle_limit => Err(format!(
                "the trigger loop has not advanced for {} s (limit {} s)",
                s.last_advanced.elapsed().as_secs(),
                self.idle_limit.as_secs()
            )),
            None => Ok(format!("the trigger loop advanced {} ms ago", s.last_advanced.elapsed().as_millis())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_is_live_while_it_advances_and_not_once_a_trigger_runs_past_its_limit() {
        let status = RunStatus::new(Duration::from_secs(1), Duration::from_millis(20));
        assert!(status.liveness().is_ok());
        status.query_started("q");
        status.trigger_started();
        assert!(status.liveness().is_ok());
        std::thread::sleep(Duration::from_millis(30));
        let stuck = status.liveness().unwrap_err();
        assert!(stuck.contains("longer than a batch may take"), "{stuck}");
        status.trigger_finished(None, "Waiting for data to arrive");
        assert!(status.liveness().is_ok());
    }

    #[test]
    fn a_query_is_live_while_it_starts_until_a_batch_could_have_run() {
        let status = RunStatus::new(Duration::from_secs(1), Duration::from_millis(20));
        assert!(status.liveness().unwrap().contains("starting"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(status.liveness().unwrap_err().contains("has been starting for"));
    }

    #[test]
    fn progress_lists_the_status_in_spark_names_before_the_query_starts() {
        let status = RunStatus::new(Duration::ZERO, Duration::from_secs(60));
        let json: serde_json::Value = serde_json::from_str(&status.progress_json()).unwrap();
        assert_eq!(json["status"]["message"], "Initializing sources");
        assert_eq!(json["status"]["isTriggerActive"], false);
        assert_eq!(json["recentProgress"], serde_json::json!([]));
        assert!(json["id"].is_null());
    }
}
