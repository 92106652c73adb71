//! `/readyz`: whether this process can do its job now. Each check asks the
//! real thing when probed (a metadata request to Kafka, `SELECT 1` on a new
//! Postgres connection) with a short timeout, so a probe tells the truth
//! even while the trigger loop waits in a back-off; the query's own state
//! says whether it owns its checkpoint and holds its subscribers, and
//! whether it is waiting for a failing component (the checkpoint store
//! included, which has no probe of its own here) between retries.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::config::{KafkaConfig, PostgresConfig};
use crate::kafka::log::LoggingContext;
use crate::ops::status::RunStatus;

/// How long one check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an answer is reused: probes arriving together (several
/// probers, a reload of the page) share one round of checks.
const ANSWER_REUSE: Duration = Duration::from_secs(1);

/// One check's answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub ok: bool,
    pub detail: String,
}

/// Every check's answer; ready when all are ok.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Readiness {
    pub ready: bool,
    /// The component the query waits for in an outage (it fails, and the
    /// trigger is retried), if any.
    pub waiting_for: Option<&'static str>,
    pub checks: std::collections::BTreeMap<&'static str, Check>,
}

/// What the checks talk to.
#[derive(Clone)]
pub(crate) struct Probes {
    postgres: PostgresConfig,
    topic: String,
    kafka: Arc<BaseConsumer<LoggingContext>>,
    /// The last answer and when it was found.
    last: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Readiness)>>>,
}

impl Probes {
    /// A Kafka client for the metadata probe (made once, with the query's
    /// settings: SASL, TLS) and the Postgres settings.
    pub(crate) fn new(kafka: &KafkaConfig, postgres: &PostgresConfig) -> crate::Result<Self> {
        let consumer = crate::kafka::base_config(kafka)
            .create_with_context(LoggingContext::new("readiness probe"))
            .map_err(|e| crate::Error::kafka("creating the readiness probe's Kafka client", e))?;
        Ok(Probes {
            postgres: postgres.clone(),
            topic: kafka.input_topic.clone(),
            kafka: Arc::new(consumer),
            last: Default::default(),
        })
    }

    /// Every check's answer, found at most [`ANSWER_REUSE`] ago.
    pub(crate) async fn check(&self, status: &RunStatus) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref().filter(|(at, _)| at.elapsed() < ANSWER_REUSE) {
            tracing::trace!(age_ms = at.elapsed().as_millis() as u64, "readiness answer reused");
            return answer.clone();
        }
        let answer = self.check_now(status).await;
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }

    /// Runs every check (Kafka and Postgres at once).
    async fn check_now(&self, status: &RunStatus) -> Readiness {
        let (kafka, postgres) = tokio::join!(self.check_kafka(), self.check_postgres());
        let started = status.is_started();
        let query = Check {
            ok: started,
            detail: if started {
                "the checkpoint is owned and the subscribers are loaded".to_string()
            } else {
                "starting: the checkpoint, the subscribers or the sinks are not ready yet".to_string()
            },
        };
        let waiting = status.waiting_for();
        let retries = Check {
            ok: waiting.is_none(),
            detail: match &waiting {
                Some(w) => format!("waiting for {}, retrying", w.describe()),
                None => "no component is failing".to_string(),
            },
        };
        let checks = [("kafka", kafka), ("postgres", postgres), ("query", query), ("retries", retries)];
        let waiting_for = waiting.map(|w| w.component);
        let mut readiness = Readiness { ready: false, waiting_for, checks: checks.into_iter().collect() };
        readiness.ready = readiness.checks.values().all(|c| c.ok);
        readiness
    }

    async fn check_kafka(&self) -> Check {
        let (consumer, topic) = (self.kafka.clone(), self.topic.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), PROBE_TIMEOUT)?;
            let brokers = metadata.brokers().len();
            Ok::<_, rdkafka::error::KafkaError>(format!(
                "{brokers} broker(s) answered a metadata request for '{topic}'"
            ))
        })
        .await;
        match answer {
            Ok(Ok(detail)) => Check { ok: true, detail },
            Ok(Err(e)) => Check { ok: false, detail: format!("kafka: {e}") },
            Err(e) => Check { ok: false, detail: format!("kafka: the probe task failed: {e}") },
        }
    }

    async fn check_postgres(&self) -> Check {
        let probe = async {
            let client = crate::postgres::connect(&self.postgres, "the readiness probe").await?;
            client.simple_query("SELECT 1").await.map_err(|e| crate::Error::postgres("SELECT 1", e))?;
            Ok::<_, crate::Error>(())
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(())) => Check { ok: true, detail: format!("{} answered SELECT 1", self.postgres.target()) },
            Ok(Err(e)) => Check { ok: false, detail: e.chain().to_string() },
            Err(_) => Check {
                ok: false,
                detail: format!("postgres: {} did not answer within {PROBE_TIMEOUT:?}", self.postgres.target()),
            },
        }
    }
}
