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
//! Each client also remembers the last connection failure it saw, and what
//! kind it is ([`FailureKind`]: the network, or a setting a retry cannot fix
//! such as a refused password or an unknown CA), so the start-up check can
//! say *why* the brokers cannot be reached ([`crate::kafka::check_reachable`]).

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

/// What a connection failure says about the cause: the network (a retry
/// may help) or a security setting (it cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Refused, unresolvable, reset or timed out: the broker may come back.
    Connection,
    /// The broker refused SASL authentication (credentials or mechanism).
    Authentication,
    /// The TLS handshake failed (an unknown CA, a name mismatch, a TLS
    /// client on a listener without TLS).
    Tls,
    /// The broker closed the connection at the client's first request (the
    /// ApiVersion request): a listener that expects TLS does that to a
    /// client that speaks plain Kafka.
    Protocol,
}

/// One connection failure as librdkafka reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    /// The broker's address as librdkafka names it (`127.0.0.1:9093`), if
    /// the message named one.
    pub(crate) broker: Option<String>,
    /// The cause: `connection refused`; for the other kinds librdkafka's
    /// own words (`Authentication failed during authentication due to ...`).
    pub(crate) cause: String,
}

/// Per-client log routing and the client's last connection failure.
#[derive(Debug)]
pub(crate) struct KafkaLog {
    /// Which client this is (`input consumer`, `output producer`, ...).
    client: &'static str,
    last_failure: Mutex<Option<Failure>>,
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
            self.remember_failure(&text, kind_of(message));
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
        let kind = match code {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                FailureKind::Authentication
            }
            Some(RDKafkaErrorCode::SSL) => FailureKind::Tls,
            _ => kind_of(reason),
        };
        if matches!(code, Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown))
            || text.contains("failed:")
            || kind != FailureKind::Connection
        {
            self.remember_failure(&text, kind);
        }
        let Some(repeats) = first_or_due(&text) else { return };
        let client = self.client;
        if matches!(error, KafkaError::MessageConsumptionFatal(_)) || code == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(target: "librdkafka", client, repeats, "{text}");
        } else {
            tracing::warn!(target: "librdkafka", client, repeats, "{text}");
        }
    }

    /// The last connection failure (e.g. `connection refused`); a failure
    /// a retry cannot fix is kept over later network failures.
    pub(crate) fn last_failure(&self) -> Option<Failure> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Whether every broker was tried and none answered (librdkafka's
    /// "all brokers down"), as opposed to a broker that is merely slow.
    pub(crate) fn all_brokers_down(&self) -> bool {
        self.all_down.load(Ordering::Relaxed)
    }

    fn remember_failure(&self, text: &str, kind: FailureKind) {
        // "1/1 brokers are down" says less than the failure before it.
        if text.contains("brokers are down") {
            self.all_down.store(true, Ordering::Relaxed);
            if self.last_failure().is_some() {
                return;
            }
        }
        let Ok(mut last) = self.last_failure.lock() else { return };
        // A refused password says more than the disconnect that follows it.
        let says_more = last.as_ref().is_some_and(|l| l.kind != FailureKind::Connection);
        if kind == FailureKind::Connection && says_more {
            return;
        }
        *last = Some(failure_of(text, kind));
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

/// The kind of failure a raw librdkafka message (state suffix included)
/// reports. A disconnect is a protocol mismatch only in the ApiVersion
/// state, the client's first request; otherwise it is the network.
fn kind_of(message: &str) -> FailureKind {
    if message.contains("SASL authentication error")
        || message.contains("Authentication failed")
        || (message.contains("SASL ") && message.contains("mechanism handshake failed"))
    {
        FailureKind::Authentication
    } else if message.contains("SSL handshake failed") {
        FailureKind::Tls
    } else if message.contains("Disconnected") && message.contains("in state APIVERSION_QUERY") {
        FailureKind::Protocol
    } else {
        FailureKind::Connection
    }
}

/// librdkafka's own words for a failure of `kind`: from where they begin to
/// the end, without a prefix that only repeats the kind.
fn words_of(text: &str, kind: FailureKind) -> Option<&str> {
    let from = |markers: &[&str]| markers.iter().filter_map(|m| text.find(m)).min().map(|at| &text[at..]);
    let words = match kind {
        FailureKind::Connection => None,
        FailureKind::Authentication => from(&["SASL ", "Authentication failed"]),
        FailureKind::Tls => from(&["SSL handshake failed"]),
        FailureKind::Protocol => from(&["Disconnected"]),
    }?;
    let prefixes = ["SASL authentication error: ", "SSL handshake failed: "];
    Some(prefixes.iter().find_map(|p| words.strip_prefix(p)).unwrap_or(words))
}

/// The failure `text` (normalised) reports, as [`Failure`].
fn failure_of(text: &str, kind: FailureKind) -> Failure {
    let cause = words_of(text, kind).map_or_else(|| cause_of(text), str::to_string);
    Failure { kind, broker: broker_of(text), cause }
}

/// `sasl_ssl://127.0.0.1:9093/bootstrap: ...` -> `127.0.0.1:9093` (the
/// broker name librdkafka puts first: protocol, address, node id).
fn broker_of(text: &str) -> Option<String> {
    let (name, _) = text.split_once(": ")?;
    let name = name.rsplit_once("://").map_or(name, |(_, rest)| rest);
    let address = name.split_once('/').map_or(name, |(address, _)| address);
    (address.contains(':') && !address.contains(' ')).then(|| address.to_string())
}

/// `Connect to ipv4#127.0.0.1:1 failed: Connection refused` -> `connection refused`.
fn cause_of(text: &str) -> String {
    let cause = match text.rfind("failed: ") {
        Some(at) => &text[at + "failed: ".len()..],
        None => text.rsplit_once("/bootstrap: ").map_or(text, |(_, rest)| rest),
    };
    // `Connection refused` -> `connection refused`, but `SASL` stays `SASL`.
    let mut chars = cause.chars();
    match (chars.next(), chars.clone().next()) {
        (Some(first), Some(second)) if !second.is_uppercase() => first.to_lowercase().chain(chars).collect(),
        _ => cause.to_string(),
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
        let failure = log.last_failure().map(|f| (f.kind, f.broker, f.cause));
        assert_eq!(failure, Some((FailureKind::Connection, Some("127.0.0.1:1".into()), "connection refused".into())));
        assert!(log.all_brokers_down());
    }

    // librdkafka 2.12's messages, as logged with facility FAIL.
    const SASL: &str = "[thrd:sasl_ssl://127.0.0.1:40807/bootstrap]: sasl_ssl://127.0.0.1:40807/bootstrap: SASL \
                        authentication error: Authentication failed during authentication due to invalid credentials \
                        with SASL mechanism SCRAM-SHA-512 (after 302ms in state AUTH_REQ)";
    const TLS: &str = "sasl_ssl://127.0.0.1:40807/bootstrap: SSL handshake failed: error:0A000086:SSL \
                       routines::certificate verify failed: broker certificate could not be verified, verify that \
                       ssl.ca.location is correctly configured or root CA certificates are installed (install \
                       ca-certificates package) (after 4ms in state SSL_HANDSHAKE)";
    const CLOSED: &str = "127.0.0.1:40807/bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN \
                          (after 1ms in state APIVERSION_QUERY)";

    #[test]
    fn a_refused_password_an_unknown_ca_and_a_closed_first_request_are_told_apart() {
        let failure = |raw: &str| failure_of(&normalise(raw), kind_of(raw));
        let sasl = failure(SASL);
        assert_eq!(sasl.kind, FailureKind::Authentication);
        assert_eq!(sasl.broker.as_deref(), Some("127.0.0.1:40807"));
        assert_eq!(
            sasl.cause,
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
        );
        let tls = failure(TLS);
        assert_eq!(tls.kind, FailureKind::Tls);
        assert!(tls.cause.starts_with("error:0A000086:SSL routines::certificate verify failed"), "{}", tls.cause);
        assert!(tls.cause.ends_with("(install ca-certificates package)"), "{}", tls.cause);
        let closed = failure(CLOSED);
        assert_eq!(closed.kind, FailureKind::Protocol);
        assert_eq!(closed.cause, "Disconnected: connection closed by peer: receive 0 after POLLIN");
        let later = CLOSED.replace("APIVERSION_QUERY", "UP");
        assert_eq!(failure(&later).kind, FailureKind::Connection, "a broker going away later is the network");
    }

    #[test]
    fn a_failure_a_retry_cannot_fix_is_kept_over_the_disconnects_after_it() {
        let log = KafkaLog::new("test");
        log.log(RDKafkaLogLevel::Error, "FAIL", SASL);
        log.log(RDKafkaLogLevel::Error, "FAIL", FAIL);
        log.error(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        assert_eq!(log.last_failure().map(|f| f.kind), Some(FailureKind::Authentication));
        let log = KafkaLog::new("test");
        log.error(&KafkaError::Global(RDKafkaErrorCode::SSL), TLS);
        assert_eq!(log.last_failure().map(|f| f.kind), Some(FailureKind::Tls));
    }

    #[test]
    fn an_acronym_keeps_its_capitals_in_a_cause() {
        assert_eq!(cause_of("b:1/bootstrap: SASL handshake failed"), "SASL handshake failed");
        assert_eq!(cause_of("b:1/bootstrap: Connection timed out"), "connection timed out");
    }
}
