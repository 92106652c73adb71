//! librdkafka's own log lines and error events, routed through `tracing`.
//!
//! librdkafka reports one broken connection twice (a log line and an error
//! event) and again on every reconnect attempt, several times a second. Here
//! both go through one filter: a message is logged the first time it is seen
//! and then at most once a minute with the number of repeats, so an outage
//! shows up as a handful of lines, each naming the broker and the cause.
//! Lines are logged with target `librdkafka`, at the level librdkafka gave
//! them (error events, which librdkafka retries itself, as warnings).
//!
//! Each client also remembers the last connection failure it saw, so the
//! start-up check can say *why* the brokers cannot be reached
//! ([`crate::kafka::check_reachable`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

/// A repeated message is logged again after this long, with its count.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// Per-client log routing and the client's last connection failure.
#[derive(Debug)]
pub(crate) struct KafkaLog {
    /// Which client this is (`input consumer`, `output producer`, ...).
    client: &'static str,
    last_failure: Mutex<Option<String>>,
    /// librdkafka said every broker it knows is down.
    all_down: AtomicBool,
}

/// A client context that only routes logs (for consumers).
pub(crate) struct LoggingContext(pub KafkaLog);

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
}

impl ConsumerContext for LoggingContext {}

impl LoggingContext {
    pub(crate) fn new(client: &'static str) -> Self {
        LoggingContext(KafkaLog::new(client))
    }
}

impl KafkaLog {
    pub(crate) fn new(client: &'static str) -> Self {
        KafkaLog { client, last_failure: Mutex::new(None), all_down: AtomicBool::new(false) }
    }

    /// A librdkafka log line.
    pub(crate) fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let text = normalise(message);
        if matches!(fac, "FAIL" | "ERROR") {
            self.remember_failure(&text);
        }
        let Some(repeats) = first_or_due(&text) else { return };
        let client = self.client;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", client, facility = fac, repeats, "{text}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", client, facility = fac, repeats, "{text}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client, facility = fac, repeats, "{text}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", client, facility = fac, "{text}"),
        }
    }

    /// A librdkafka error event (librdkafka keeps retrying after most).
    pub(crate) fn error(&self, error: &KafkaError, reason: &str) {
        let text = normalise(reason);
        let code = error.rdkafka_error_code();
        if matches!(code, Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown))
            || text.contains("failed:")
        {
            self.remember_failure(&text);
        }
        let Some(repeats) = first_or_due(&text) else { return };
        let client = self.client;
        if matches!(error, KafkaError::MessageConsumptionFatal(_)) || code == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(target: "librdkafka", client, repeats, "{text}");
        } else {
            tracing::warn!(target: "librdkafka", client, repeats, "{text}");
        }
    }

    /// The cause of the last connection failure, e.g. `connection refused`.
    pub(crate) fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Whether every broker was tried and none answered (librdkafka's
    /// "all brokers down"), as opposed to a broker that is merely slow.
    pub(crate) fn all_brokers_down(&self) -> bool {
        self.all_down.load(Ordering::Relaxed)
    }

    fn remember_failure(&self, text: &str) {
        // "1/1 brokers are down" says less than the failure before it.
        if text.contains("brokers are down") {
            self.all_down.store(true, Ordering::Relaxed);
            if self.last_failure().is_some() {
                return;
            }
        }
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(cause_of(text));
        }
    }
}

/// The message without its thread prefix and retry details, so every repeat
/// of one failure has the same text.
fn normalise(message: &str) -> String {
    let mut text = message.trim();
    if text.starts_with("[thrd:") {
        if let Some(at) = text.find("]: ") {
            text = &text[at + 3..];
        }
    }
    if let Some(at) = text.find(" (after ") {
        text = &text[..at];
    }
    text.trim_end_matches(|c: char| c == ',' || c.is_whitespace()).to_string()
}

/// `Connect to ipv4#127.0.0.1:1 failed: Connection refused` -> `connection refused`.
fn cause_of(text: &str) -> String {
    let cause = match text.rfind("failed: ") {
        Some(at) => &text[at + "failed: ".len()..],
        None => text.rsplit_once("/bootstrap: ").map_or(text, |(_, rest)| rest),
    };
    let mut chars = cause.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `Some(repeats since last logged)` if `text` should be logged now.
fn first_or_due(text: &str) -> Option<u64> {
    static SEEN: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().ok()?;
    let now = Instant::now();
    match seen.get_mut(text) {
        Some((last, repeats)) if now.duration_since(*last) < REPEAT_EVERY => {
            *repeats += 1;
            None
        }
        Some((last, repeats)) => {
            let logged = *repeats;
            (*last, *repeats) = (now, 0);
            Some(logged)
        }
        None => {
            seen.insert(text.to_string(), (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: &str = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: \
                        Connection refused (after 0ms in state CONNECT, 4 identical error(s) suppressed)";

    #[test]
    fn repeats_of_one_failure_normalise_to_one_text() {
        let event = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 1ms in state CONNECT)";
        assert_eq!(normalise(FAIL), normalise(event));
        assert_eq!(normalise(event), "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused");
    }

    #[test]
    fn the_cause_is_the_text_after_failed() {
        assert_eq!(cause_of(&normalise(FAIL)), "connection refused");
        assert_eq!(
            cause_of("nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known"),
            "failed to resolve 'nohost:9092': Name or service not known"
        );
    }

    #[test]
    fn a_message_is_logged_once_then_counted() {
        let text = format!("test message {}", uuid::Uuid::new_v4());
        assert_eq!(first_or_due(&text), Some(0));
        assert_eq!(first_or_due(&text), None);
        assert_eq!(first_or_due(&text), None);
    }

    #[test]
    fn a_client_remembers_the_failure_not_the_summary() {
        let log = KafkaLog::new("test");
        log.log(RDKafkaLogLevel::Error, "FAIL", FAIL);
        log.error(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        assert_eq!(log.last_failure().as_deref(), Some("connection refused"));
        assert!(log.all_brokers_down());
    }
}
