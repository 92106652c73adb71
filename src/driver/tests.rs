//! The trigger loop on a scripted query, in paused tokio time: when batches
//! start, how failures back off, when the run stops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::error::Error;
use crate::ops::progress::{DurationMs, SubscribersProgress};

/// What the scripted query does on each call of `next_plan`.
enum Step {
    Batch,
    Idle,
    PlanFails,
    /// The batch fails this many times (retryably) before it commits.
    BatchFailsTimes(u32),
}

#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    pending: Option<BatchPlan>,
    next_id: BatchId,
    failures_left: u32,
    /// (time since start, what happened) for every call; shared, since the
    /// driver consumes the script.
    calls: Arc<Mutex<Vec<(Duration, String)>>>,
    start: Option<Instant>,
    /// A batch takes this long.
    batch_time: Duration,
    /// While idle, new data arrives this long after the wait starts (none:
    /// never, the wait runs to its limit).
    data_after: Option<Duration>,
    /// Kafka is down until then: every run fails before, the probe answers
    /// from then on.
    down_until: Option<Duration>,
    /// Reconnects that fail before one works.
    reconnect_failures: u32,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Script { steps: steps.into(), start: Some(Instant::now()), ..Default::default() }
    }

    fn is_down(&self) -> bool {
        let now = self.start.map(|s| s.elapsed()).unwrap_or_default();
        self.down_until.is_some_and(|until| now < until)
    }

    fn log(&mut self, what: String) {
        let at = self.start.map(|s| s.elapsed()).unwrap_or_default();
        self.calls.lock().unwrap().push((at, what));
    }
}

fn plan(id: BatchId) -> BatchPlan {
    BatchPlan {
        batch_id: id,
        batch_timestamp_ms: 0,
        topic: "in".into(),
        ranges: vec![],
        subscribers_snapshot: "s".into(),
        sql_fingerprint: None,
        job_fingerprint: None,
        hold_future_campaigns: false,
        subscribers_version: None,
        lookups: Default::default(),
    }
}

fn progress(id: BatchId) -> BatchProgress {
    BatchProgress {
        id: "q".into(),
        shard: None,
        batch_id: id,
        timestamp: String::new(),
        replayed: false,
        num_input_rows: 1,
        num_malformed_rows: 0,
        bad_records: Default::default(),
        num_dead_lettered_rows: 0,
        num_expired_rows: 0,
        num_held_rows: 0,
        num_output_rows: 2,
        input_rows_per_second: 0.0,
        processed_rows_per_second: 0.0,
        duration_ms: DurationMs::default(),
        sources: vec![],
        sinks: vec![],
        subscribers: SubscribersProgress::default(),
    }
}

fn transient() -> Error {
    Error::KafkaTimeout("the broker did not answer".into())
}

impl Batches for Script {
    fn id(&self) -> &str {
        "q"
    }

    fn take_pending(&mut self) -> Option<BatchPlan> {
        self.pending.take()
    }

    async fn next_plan(&mut self) -> Result<Option<BatchPlan>> {
        match self.steps.pop_front() {
            None | Some(Step::Idle) => {
                self.log("idle".into());
                Ok(None)
            }
            Some(Step::PlanFails) => {
                self.log("plan failed".into());
                Err(transient())
            }
            Some(step) => {
                self.failures_left = if let Step::BatchFailsTimes(n) = step { n } else { 0 };
                self.next_id += 1;
                self.log(format!("plan {}", self.next_id - 1));
                Ok(Some(plan(self.next_id - 1)))
            }
        }
    }

    async fn run(&mut self, plan: &BatchPlan, attempt: Attempt) -> Result<BatchProgress> {
        tokio::time::sleep(self.batch_time).await;
        self.log(format!("run {} {attempt:?}", plan.batch_id));
        if self.is_down() {
            return Err(transient());
        }
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(transient());
        }
        Ok(progress(plan.batch_id))
    }

    async fn reconnect(&mut self) -> Result<()> {
        self.log("reconnect".into());
        if self.reconnect_failures > 0 {
            self.reconnect_failures -= 1;
            return Err(transient());
        }
        Ok(())
    }

    async fn probe(&self, component: &'static str) -> bool {
        component == "kafka" && !self.is_down()
    }

    async fn wait_for_data(&self, limit: Duration) {
        tokio::time::sleep(self.data_after.map_or(limit, |d| d.min(limit))).await
    }
}

fn policy(trigger: Trigger) -> Policy {
    Policy { trigger, retry: RetryPolicy { budget: None, max_retries: Some(3) } }
}

/// Runs the driver over `script` until `stop_after`, returning the calls.
async fn drive(
    trigger: Trigger,
    script: Script,
    stop_after: Duration,
) -> (Result<RunSummary>, Vec<(Duration, String)>) {
    drive_with(policy(trigger), script, stop_after).await
}

async fn drive_with(
    policy: Policy,
    script: Script,
    stop_after: Duration,
) -> (Result<RunSummary>, Vec<(Duration, String)>) {
    let calls = script.calls.clone();
    let result =
        Driver::new(policy, script, crate::ops::status::RunStatus::new(Duration::ZERO, Duration::from_secs(60)))
            .run(tokio::time::sleep(stop_after), &mut crate::ops::progress_bar::ProgressBar::new(false))
            .await;
    let calls = calls.lock().unwrap().clone();
    (result, calls)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(start_paused = true)]
async fn batches_start_every_interval_and_idle_polls_wait_the_interval() {
    let script = Script::new(vec![Step::Batch, Step::Idle, Step::Batch]);
    let (result, calls) = drive(Trigger::ProcessingTime(secs(5.0)), script, secs(12.0)).await;
    let summary = result.unwrap();
    assert_eq!(summary.batches, 2);
    let plans: Vec<_> = calls.iter().filter(|(_, w)| w.starts_with("plan") || w == "idle").collect();
    assert_eq!(plans[0].0, secs(0.0));
    assert_eq!(plans[1], &(secs(5.0), "idle".to_string()));
    assert_eq!(plans[2], &(secs(10.0), "plan 1".to_string()));
}

#[tokio::test(start_paused = true)]
async fn zero_interval_plans_again_every_100ms_when_no_data_comes() {
    let script = Script::new(vec![Step::Idle, Step::Idle, Step::Batch]);
    let (result, calls) = drive(Trigger::ProcessingTime(Duration::ZERO), script, secs(1.0)).await;
    assert_eq!(result.unwrap().batches, 1);
    let times: Vec<Duration> = calls.iter().take(3).map(|(t, _)| *t).collect();
    assert_eq!(times, [secs(0.0), secs(0.1), secs(0.2)]);
}

#[tokio::test(start_paused = true)]
async fn zero_interval_plans_as_soon_as_new_data_arrives() {
    let script = Script { data_after: Some(Duration::from_millis(7)), ..Script::new(vec![Step::Idle, Step::Batch]) };
    let (result, calls) = drive(Trigger::ProcessingTime(Duration::ZERO), script, secs(1.0)).await;
    assert_eq!(result.unwrap().batches, 1);
    let times: Vec<Duration> = calls.iter().take(2).map(|(t, _)| *t).collect();
    assert_eq!(times, [secs(0.0), Duration::from_millis(7)], "planned when the data came, not 100 ms later");
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_backs_off_and_is_replayed_not_replanned() {
    let script = Script::new(vec![Step::BatchFailsTimes(2)]);
    let (result, calls) = drive(Trigger::Once, script, secs(60.0)).await;
    let summary = result.unwrap();
    assert_eq!((summary.batches, summary.failed_attempts), (1, 2));
    let names: Vec<&str> = calls.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(names, ["plan 0", "run 0 New", "reconnect", "run 0 Replay", "reconnect", "run 0 Replay"]);
    assert!((secs(0.4)..=secs(0.5)).contains(&calls[2].0), "first back-off 0.5 s less jitter: {calls:?}");
    let second = calls[4].0 - calls[2].0;
    assert!((secs(0.8)..=secs(1.0)).contains(&second), "second back-off 1 s less jitter: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_plan_is_retried_like_a_failed_batch() {
    let script = Script::new(vec![Step::PlanFails, Step::Batch]);
    let (result, calls) = drive(Trigger::Once, script, secs(60.0)).await;
    assert_eq!(result.unwrap().batches, 1);
    let names: Vec<&str> = calls.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(names, ["plan failed", "reconnect", "plan 0", "run 0 New"]);
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_and_the_error_ends_the_run() {
    let script = Script::new(vec![Step::BatchFailsTimes(10)]);
    let (result, calls) = drive(Trigger::ProcessingTime(secs(1.0)), script, secs(600.0)).await;
    let error = result.unwrap_err();
    assert!(matches!(error, Error::RetriesSpent { attempts: 4, .. }), "{error}");
    assert!(error.chain().to_string().contains("(--retry-for unlimited --max-retries 3)"), "{error}");
    assert_eq!(calls.iter().filter(|(_, w)| w.starts_with("run")).count(), 4, "one try and max_retries = 3");
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_batch_in_flight_finish_then_stops() {
    let mut script = Script::new(vec![Step::Batch, Step::Batch, Step::Batch]);
    script.batch_time = secs(3.0);
    // Shutdown at 1 s, during the first batch.
    let (result, calls) = drive(Trigger::ProcessingTime(Duration::ZERO), script, secs(1.0)).await;
    assert_eq!(result.unwrap().batches, 1);
    assert_eq!(calls.last().unwrap(), &(secs(3.0), "run 0 New".to_string()));
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_back_off_stops_without_waiting_it_out() {
    let script = Script::new(vec![Step::BatchFailsTimes(5)]);
    // Back-offs: 0.5 s, 1 s, 2 s; shutdown at 1 s, inside the second.
    let (result, calls) = drive(Trigger::ProcessingTime(Duration::ZERO), script, secs(1.0)).await;
    let summary = result.unwrap();
    assert!((1..=2).contains(&summary.failed_attempts), "{calls:?}");
    assert_eq!(summary.batches, 0);
    assert!(calls.last().unwrap().0 <= secs(1.0), "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn the_last_runs_batch_is_replayed_first_and_once_then_plans_its_own() {
    let mut script = Script::new(vec![Step::Batch]);
    script.pending = Some(plan(7));
    script.next_id = 8;
    let (result, calls) = drive(Trigger::Once, script, secs(60.0)).await;
    assert_eq!(result.unwrap().last_batch_id, Some(8));
    let names: Vec<&str> = calls.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(names, ["run 7 Replay", "plan 8", "run 8 New"]);
}

#[tokio::test(start_paused = true)]
async fn available_now_stops_when_no_data_is_left() {
    let script = Script::new(vec![Step::Batch, Step::Batch, Step::Idle, Step::Batch]);
    let (result, _) = drive(Trigger::AvailableNow, script, secs(600.0)).await;
    assert_eq!(result.unwrap().batches, 2);
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_retried_for_retry_for_then_the_run_stops_naming_the_component_and_the_wait() {
    let script = Script { down_until: Some(secs(10_000.0)), ..Script::new(vec![Step::Batch]) };
    let retry = RetryPolicy { budget: Some(secs(120.0)), max_retries: None };
    let policy = Policy { trigger: Trigger::ProcessingTime(secs(1.0)), retry };
    let (result, calls) = drive_with(policy, script, secs(10_000.0)).await;
    let error = result.unwrap_err();
    let (last, _) = calls.last().unwrap();
    assert!((secs(120.0)..secs(121.0)).contains(last), "the last attempt at the end of the budget: {calls:?}");
    assert!(!error.is_retryable());
    assert_eq!(error.component(), "kafka");
    let text = error.chain().to_string();
    assert!(text.starts_with("kafka: still failing after waiting 120."), "{text}");
    assert!(text.contains("--retry-for 2m") && text.ends_with("the broker did not answer"), "{text}");
    let runs = calls.iter().filter(|(_, w)| w.starts_with("run")).count();
    assert!((8..=14).contains(&runs), "back-off grows to 30 s: {runs} attempts in 2 min");
}

#[tokio::test(start_paused = true)]
async fn a_back_off_ends_when_the_failed_component_answers_a_probe() {
    // Down for 40 s: the back-off steps would retry at about 31.5 and 61.5 s.
    let script = Script { down_until: Some(secs(40.0)), ..Script::new(vec![Step::Batch]) };
    let retry = RetryPolicy { budget: Some(secs(600.0)), max_retries: None };
    let (result, calls) = drive_with(Policy { trigger: Trigger::Once, retry }, script, secs(600.0)).await;
    assert_eq!(result.unwrap().batches, 1);
    let (at, what) = calls.last().unwrap();
    assert_eq!(what, "run 0 Replay");
    assert!((secs(40.0)..=secs(41.0)).contains(at), "retried within a probe interval of the return: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn every_retry_reconnects_first_and_a_failed_reconnect_is_a_failed_attempt() {
    let script = Script { reconnect_failures: 2, ..Script::new(vec![Step::BatchFailsTimes(1)]) };
    let (result, calls) = drive(Trigger::Once, script, secs(600.0)).await;
    let summary = result.unwrap();
    assert_eq!((summary.batches, summary.failed_attempts), (1, 3));
    let names: Vec<&str> = calls.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(names, ["plan 0", "run 0 New", "reconnect", "reconnect", "reconnect", "run 0 Replay"]);
}

#[tokio::test(start_paused = true)]
async fn the_status_names_what_the_query_waits_for_until_it_answers() {
    let status = crate::ops::status::RunStatus::new(Duration::ZERO, Duration::from_secs(60));
    status.query_started("q");
    let script = Script { down_until: Some(secs(20.0)), ..Script::new(vec![Step::Batch]) };
    let driver = Driver::new(policy(Trigger::Once), script, status.clone());
    let policy = Policy { retry: RetryPolicy { budget: None, max_retries: None }, ..driver.policy };
    let driver = Driver { policy, ..driver };
    let run = tokio::spawn(async move {
        driver.run(std::future::pending(), &mut crate::ops::progress_bar::ProgressBar::new(false)).await
    });
    tokio::time::sleep(secs(10.0)).await;
    let waiting = status.waiting_for().expect("waiting during the outage");
    assert_eq!(waiting.component, "kafka");
    assert!(status.liveness().unwrap().contains("waiting on purpose"));
    assert_eq!(run.await.unwrap().unwrap().batches, 1);
    assert!(status.waiting_for().is_none(), "not waiting once the batch went through");
}
