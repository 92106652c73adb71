//! Validated settings of a run, built from [`crate::cli::RunArgs`].
//!
//! Validation only checks and converts; it opens no connection. Every error
//! names the option and the bad value (secrets excepted).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod bad_records;
mod byte_budget;
mod postgres;
mod retry;
mod subscribers;

pub use bad_records::{BadRecords, OnBadRecord};
pub use byte_budget::{size, ByteBudget};
pub use postgres::{url_with_search_path, PostgresConfig};
use retry::parse_retry_for;
pub use retry::RetryPolicy;
pub use subscribers::{RefreshPolicy, SubscribersSettings};

use crate::cli::RunArgs;
use crate::error::{Error, Result};

/// When micro-batches run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A batch every interval (zero: as soon as the previous one finished).
    ProcessingTime(Duration),
    /// One batch, then exit.
    Once,
    /// Everything available at start, in capped batches, then exit.
    AvailableNow,
}

/// What the sinks promise when a batch is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Transactions with markers: a batch lands once in each sink.
    ExactlyOnce,
    /// Plain writes: a replayed batch may land twice.
    AtLeastOnce,
}

impl Guarantee {
    /// Whether sinks write and check batch markers.
    pub fn exactly_once(self) -> bool {
        self == Guarantee::ExactlyOnce
    }
}

impl FromStr for Guarantee {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value.trim() {
            "exactly-once" => Ok(Guarantee::ExactlyOnce),
            "at-least-once" => Ok(Guarantee::AtLeastOnce),
            other => {
                Err(Error::config("--guarantee", format!("'{other}' is neither 'exactly-once' nor 'at-least-once'")))
            }
        }
    }
}

/// Where a query with an empty checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingOffsets {
    Earliest,
    Latest,
}

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

/// Everything `sparklet run` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    /// `--checkpoint-dir`: a local folder or an object-store URL.
    pub checkpoint_dir: crate::checkpoint::Files,
    pub sql_dir: PathBuf,
    pub trigger: Trigger,
    pub starting_offsets: StartingOffsets,
    pub max_offsets_per_trigger: Option<u64>,
    /// `--max-bytes-per-trigger`: input bytes per batch.
    pub max_bytes_per_trigger: ByteBudget,
    /// `--on-bad-record`, `--dead-letter-topic`, size limits.
    pub bad_records: BadRecords,
    /// `--subscribers-refresh`, `--subscribers-version-check`,
    /// `--subscribers-max-staleness`.
    pub subscribers: SubscribersSettings,
    /// Stop on lost input offsets (Spark's `failOnDataLoss`).
    pub fail_on_data_loss: bool,
    /// `--retry-for`, `--max-retries`.
    pub retry: RetryPolicy,
    pub guarantee: Guarantee,
    pub progress_json: Option<PathBuf>,
    pub min_batches_to_retain: u64,
    /// `--hold-future-campaigns` ([`crate::hold`]).
    pub hold_future_campaigns: bool,
    /// `--http-addr`: where the HTTP endpoint listens, if anywhere.
    pub http_addr: Option<std::net::SocketAddr>,
    /// `--shards`: the shard count of a new query (checked against an
    /// existing one's).
    pub shards: Option<u32>,
    /// `--shard-ids`, `--replicas`: which shards this process runs.
    pub shard_ids: crate::shard::ShardSelection,
    /// `--pod-name`: where `--shard-ids auto` reads the ordinal (default:
    /// the host name).
    pub pod_name: Option<String>,
}

/// librdkafka keys sparklet sets itself; a user value would break offsets or
/// exactly-once, so they are refused with an explanation.
const RESERVED_KAFKA_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use --bootstrap-servers"),
    ("group.id", "sparklet owns its offsets; the group is named after the query id"),
    ("enable.auto.commit", "sparklet commits offsets itself"),
    ("transactional.id", "sparklet derives it from the query id"),
];

impl TryFrom<RunArgs> for Config {
    type Error = Error;

    fn try_from(args: RunArgs) -> Result<Self> {
        let kafka = KafkaConfig {
            bootstrap_servers: non_empty("--bootstrap-servers", args.bootstrap_servers)?,
            input_topic: non_empty("--input-topic", args.input_topic)?,
            output_topic: non_empty("--output-topic", args.output_topic)?,
            marker_topic: non_empty("--marker-topic", args.marker_topic)?,
            options: parse_kafka_options(&args.kafka_options)?,
            timeout: parse_bounded_duration("--kafka-timeout", &args.kafka_timeout, KAFKA_TIMEOUT_RANGE)?,
        };
        if kafka.input_topic == kafka.output_topic {
            return Err(Error::config("--output-topic", format!("'{}' is also the input topic", kafka.output_topic)));
        }
        if [&kafka.input_topic, &kafka.output_topic].contains(&&kafka.marker_topic) {
            return Err(Error::config(
                "--marker-topic",
                format!("'{}' is also the input or the output topic", kafka.marker_topic),
            ));
        }
        let max_offsets_per_trigger = parse_max_offsets(&args.max_offsets_per_trigger)?;
        let bad_records = BadRecords::parse(
            &args.on_bad_record,
            args.dead_letter_topic.as_deref(),
            args.max_record_bytes,
            (&kafka.input_topic, &kafka.output_topic),
            &kafka.options,
        )?;
        if bad_records.dead_letter_topic == kafka.marker_topic {
            return Err(Error::config("--dead-letter-topic", "must not be the --marker-topic"));
        }
        if args.min_batches_to_retain == 0 {
            return Err(Error::config(
                "--min-batches-to-retain",
                "must be at least 1 (a replay needs the last batch), got 0",
            ));
        }
        let subscribers = SubscribersSettings::parse(
            &args.subscribers_refresh,
            &args.subscribers_version_check,
            &args.subscribers_max_staleness,
        )?;
        Ok(Config {
            kafka,
            postgres: PostgresConfig::parse(args.database_url.expose())?.with_ca_file(args.database_ca_file)?,
            checkpoint_dir: crate::checkpoint::Files::parse(&args.checkpoint_dir.to_string_lossy())?,
            sql_dir: args.sql_dir,
            trigger: args.trigger.parse()?,
            starting_offsets: args.starting_offsets.parse()?,
            max_offsets_per_trigger,
            max_bytes_per_trigger: ByteBudget::parse(&args.max_bytes_per_trigger)?,
            bad_records,
            subscribers,
            fail_on_data_loss: args.fail_on_data_loss,
            retry: RetryPolicy { budget: parse_retry_for(&args.retry_for)?, max_retries: args.max_retries },
            guarantee: args.guarantee.parse()?,
            progress_json: args.progress_json,
            min_batches_to_retain: args.min_batches_to_retain,
            hold_future_campaigns: args.hold_future_campaigns,
            http_addr: args.http_addr.as_deref().map(parse_http_addr).transpose()?,
            shards: match args.shards {
                Some(0) => return Err(Error::config("--shards", "must be at least 1, got 0")),
                shards => shards,
            },
            shard_ids: crate::shard::ShardSelection::parse(&args.shard_ids, args.replicas)?,
            pod_name: args.pod_name.filter(|n| !n.trim().is_empty()),
        })
    }
}

/// `--http-addr`: HOST:PORT with an IP address (127.0.0.1:9464, [::]:9464,
/// 0.0.0.0:9464 to serve every interface).
fn parse_http_addr(value: &str) -> Result<std::net::SocketAddr> {
    value.trim().parse().map_err(|_| {
        Error::config(
            "--http-addr",
            format!("'{value}' is not IP:PORT (e.g. 127.0.0.1:9464, or 0.0.0.0:9464 for every interface)"),
        )
    })
}

impl FromStr for Trigger {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value.trim() {
            "once" => Ok(Trigger::Once),
            "available-now" | "availableNow" => Ok(Trigger::AvailableNow),
            other => parse_duration("--trigger", other).map(Trigger::ProcessingTime).map_err(|_| {
                Error::config(
                    "--trigger",
                    format!("'{other}' is not a duration (500ms, 5s, 1m), 'once' or 'available-now'"),
                )
            }),
        }
    }
}

impl FromStr for StartingOffsets {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value.trim() {
            "earliest" => Ok(StartingOffsets::Earliest),
            "latest" => Ok(StartingOffsets::Latest),
            other => Err(Error::config("--starting-offsets", format!("'{other}' is neither 'earliest' nor 'latest'"))),
        }
    }
}

impl fmt::Display for Trigger {
    /// The command line's spelling, so a logged value can be pasted back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::ProcessingTime(d) if d.is_zero() => f.write_str("0s"),
            Trigger::ProcessingTime(d) => write!(f, "{}", humantime::format_duration(*d)),
            Trigger::Once => f.write_str("once"),
            Trigger::AvailableNow => f.write_str("available-now"),
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        })
    }
}

impl fmt::Display for StartingOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartingOffsets::Earliest => "earliest",
            StartingOffsets::Latest => "latest",
        })
    }
}

impl Config {
    /// The settings in effect, as the command line spells them (secrets
    /// masked), for the start line of the log. librdkafka settings that
    /// sparklet sets itself are not shown: they are not the user's choice.
    pub fn describe(&self) -> String {
        let options = self.kafka.shown_options();
        let max_offsets = self.max_offsets_per_trigger.map_or("unlimited".to_string(), |n| n.to_string());
        format!(
            "--trigger {} --starting-offsets {} --guarantee {} --max-offsets-per-trigger {max_offsets} \
             --max-bytes-per-trigger {} --on-bad-record {} --dead-letter-topic {} --max-record-bytes {} \
             {} --subscribers-max-staleness {} --fail-on-data-loss {} --kafka-timeout {} {} --min-batches-to-retain {} \
             --shards {} --shard-ids {} --bootstrap-servers {} --input-topic {} --output-topic {} --marker-topic {} --kafka-option [{}]",
            self.trigger,
            self.starting_offsets,
            self.guarantee,
            self.max_bytes_per_trigger,
            self.bad_records.on_bad_record,
            self.bad_records.dead_letter_topic,
            self.bad_records.limits.max_record_bytes,
            self.subscribers.refresh,
            humantime::format_duration(self.subscribers.max_staleness),
            self.fail_on_data_loss,
            humantime::format_duration(self.kafka.timeout),
            self.retry,
            self.min_batches_to_retain,
            self.shards.map_or("as recorded".to_string(), |s| s.to_string()),
            self.shard_ids,
            self.kafka.bootstrap_servers,
            self.kafka.input_topic,
            self.kafka.output_topic,
            self.kafka.marker_topic,
            options.join(", "),
        )
    }
}

impl KafkaConfig {
    /// The `--kafka-option` settings as `key=value`, secrets masked.
    fn shown_options(&self) -> Vec<String> {
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

/// `--kafka-timeout` bounds: below 100 ms no broker answers; above 5 minutes
/// the transaction timeout (4x, at most 15 minutes in Kafka) would be exceeded.
const KAFKA_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(300));

/// Parses a duration that must lie within `(min, max)`, both inclusive.
fn parse_bounded_duration(option: &str, value: &str, (min, max): (Duration, Duration)) -> Result<Duration> {
    let duration = parse_duration(option, value)?;
    if duration < min || duration > max {
        return Err(Error::config(
            option,
            format!(
                "'{}' is out of range: must be between {} and {}",
                value.trim(),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(duration)
}

/// Parses a human-readable duration such as `500ms`, `5s`, `1m` or `0s`.
pub fn parse_duration(option: &str, value: &str) -> Result<Duration> {
    let value = value.trim();
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value)
        .map_err(|e| Error::config(option, format!("'{value}' is not a duration such as 500ms, 5s or 1m: {e}")))
}

/// `--max-offsets-per-trigger`: a positive number or `unlimited`.
fn parse_max_offsets(value: &str) -> Result<Option<u64>> {
    match value.trim() {
        "unlimited" => Ok(None),
        v => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Error::config(
                "--max-offsets-per-trigger",
                format!("'{v}' is not a positive number of offsets or 'unlimited'"),
            )),
        },
    }
}

fn non_empty(option: &str, value: String) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::config(option, "must not be empty"));
    }
    Ok(value.trim().to_string())
}

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

#[cfg(test)]
mod tests;
