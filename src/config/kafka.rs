//! Kafka settings shared by the source and the sink: the topics, the
//! user's librdkafka options (secrets shown only through an allow-list)
//! and the request timeout.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Kafka settings shared by the source and the sink.
#[derive(Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub input_topic: String,
    pub output_topic: String,
    /// Where each batch's marker goes (exactly-once).
    pub marker_topic: String,
    /// Extra librdkafka settings (`--kafka-option`), secrets resolved.
    pub options: Vec<(String, String)>,
    /// Timeout of one Kafka request and of reading one batch.
    pub timeout: Duration,
}

impl KafkaConfig {
    /// The `--kafka-option` settings as `key=value`, secrets masked.
    pub(crate) fn shown_options(&self) -> Vec<String> {
        self.options.iter().map(|(k, v)| format!("{k}={}", redact(k, v))).collect()
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = self.shown_options();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("input_topic", &self.input_topic)
            .field("output_topic", &self.output_topic)
            .field("marker_topic", &self.marker_topic)
            .field("options", &options)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// librdkafka settings whose values may be shown (in the `query started`
/// line, `Debug`, errors): an allow-list, since a secret can hide under many
/// names (`ssl.key.pem`, `sasl.oauthbearer.client.secret`, `ssl.keystore.password`, ...).
/// A key ending in `.` allows every key under it.
const SHOWN_KAFKA_KEYS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
    "client.id",
    "client.rack",
    "acks",
    "compression.type",
    "compression.codec",
    "message.max.bytes",
    "linger.ms",
    "batch.size",
    "batch.num.messages",
    "request.timeout.ms",
    "message.timeout.ms",
    "partitioner",
    "debug",
    "fetch.",
    "queue.",
    "queued.",
    "socket.",
    "reconnect.",
    "retry.",
    "statistics.",
    "metadata.",
    "topic.metadata.",
    "broker.address.",
    "api.version.",
];

/// The value to show for a librdkafka setting: `***` unless the key is in
/// [`SHOWN_KAFKA_KEYS`].
pub fn redact<'a>(key: &str, value: &'a str) -> &'a str {
    let key = key.trim().to_ascii_lowercase();
    let shown = SHOWN_KAFKA_KEYS.iter().any(|k| if k.ends_with('.') { key.starts_with(k) } else { key == *k });
    if shown {
        value
    } else {
        "***"
    }
}

/// librdkafka keys sparklet sets itself; a user value would break offsets or
/// exactly-once, so they are refused with an explanation.
const RESERVED_KAFKA_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use --bootstrap-servers"),
    ("group.id", "sparklet owns its offsets; the group is named after the query id"),
    ("enable.auto.commit", "sparklet commits offsets itself"),
    ("transactional.id", "sparklet derives it from the query id"),
];

/// `--kafka-timeout` bounds: below 100 ms no broker answers; above 5 minutes
/// the transaction timeout (4x, at most 15 minutes in Kafka) would be exceeded.
pub(crate) const KAFKA_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(300));

/// Parses `--kafka-option KEY=VALUE` items: `env:NAME` values are read from
/// the environment; keys sparklet owns are refused.
pub fn parse_kafka_options(raw: &[impl AsRef<str>]) -> Result<Vec<(String, String)>> {
    let mut options = Vec::new();
    for item in raw.iter().map(AsRef::as_ref).filter(|s| !s.trim().is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(Error::config("--kafka-option", format!("'{}' is not KEY=VALUE", redact(item, item))));
        };
        let key = key.trim().to_string();
        if let Some((_, why)) = RESERVED_KAFKA_KEYS.iter().find(|(k, _)| *k == key) {
            return Err(Error::config("--kafka-option", format!("{key} cannot be set: {why}")));
        }
        let value = match value.trim().strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                Error::config("--kafka-option", format!("{key} refers to environment variable {var}, which is not set"))
            })?,
            None => value.trim().to_string(),
        };
        options.push((key, value));
    }
    Ok(options)
}
