//! Validated settings of a run, built from [`crate::cli::RunArgs`].
//!
//! Validation only checks and converts; it opens no connection. Every error
//! names the option and the bad value (secrets excepted).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod postgres;

pub use postgres::{url_with_search_path, PostgresConfig};

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
    pub checkpoint_dir: PathBuf,
    pub sql_dir: PathBuf,
    pub trigger: Trigger,
    pub starting_offsets: StartingOffsets,
    pub max_offsets_per_trigger: Option<u64>,
    pub subscribers_refresh: Duration,
    pub max_retries: u32,
    pub guarantee: Guarantee,
    pub progress_json: Option<PathBuf>,
    pub min_batches_to_retain: u64,
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
            options: parse_kafka_options(&args.kafka_options)?,
            timeout: parse_bounded_duration("--kafka-timeout", &args.kafka_timeout, KAFKA_TIMEOUT_RANGE)?,
        };
        if kafka.input_topic == kafka.output_topic {
            return Err(Error::config("--output-topic", format!("'{}' is also the input topic", kafka.output_topic)));
        }
        if args.max_offsets_per_trigger == Some(0) {
            return Err(Error::config("--max-offsets-per-trigger", "must be at least 1, got 0"));
        }
        if args.min_batches_to_retain == 0 {
            return Err(Error::config(
                "--min-batches-to-retain",
                "must be at least 1 (a replay needs the last batch), got 0",
            ));
        }
        Ok(Config {
            kafka,
            postgres: PostgresConfig::parse(&args.database_url)?.with_ca_file(args.database_ca_file)?,
            checkpoint_dir: args.checkpoint_dir,
            sql_dir: args.sql_dir,
            trigger: args.trigger.parse()?,
            starting_offsets: args.starting_offsets.parse()?,
            max_offsets_per_trigger: args.max_offsets_per_trigger,
            subscribers_refresh: parse_bounded_duration(
                "--subscribers-refresh",
                &args.subscribers_refresh,
                SUBSCRIBERS_REFRESH_RANGE,
            )?,
            max_retries: args.max_retries,
            guarantee: args.guarantee.parse()?,
            progress_json: args.progress_json,
            min_batches_to_retain: args.min_batches_to_retain,
        })
    }
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
        let options: Vec<String> = self.kafka.options.iter().map(|(k, v)| format!("{k}={}", redact(k, v))).collect();
        let max_offsets = self.max_offsets_per_trigger.map_or("unlimited".to_string(), |n| n.to_string());
        format!(
            "--trigger {} --starting-offsets {} --guarantee {} --max-offsets-per-trigger {max_offsets} \
             --subscribers-refresh {} --kafka-timeout {} --max-retries {} --min-batches-to-retain {} \
             --bootstrap-servers {} --input-topic {} --output-topic {} --kafka-option [{}]",
            self.trigger,
            self.starting_offsets,
            self.guarantee,
            humantime::format_duration(self.subscribers_refresh),
            humantime::format_duration(self.kafka.timeout),
            self.max_retries,
            self.min_batches_to_retain,
            self.kafka.bootstrap_servers,
            self.kafka.input_topic,
            self.kafka.output_topic,
            options.join(", "),
        )
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: Vec<String> = self.options.iter().map(|(k, v)| format!("{k}={}", redact(k, v))).collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("input_topic", &self.input_topic)
            .field("output_topic", &self.output_topic)
            .field("options", &options)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The value to show for a librdkafka setting: secrets are masked.
pub fn redact<'a>(key: &str, value: &'a str) -> &'a str {
    let key = key.to_ascii_lowercase();
    if key.contains("password") || key.contains("secret") || key.contains("sasl.oauthbearer.config") {
        "***"
    } else {
        value
    }
}

/// `--kafka-timeout` bounds: below 100 ms no broker answers; above 5 minutes
/// the transaction timeout (4x, at most 15 minutes in Kafka) would be exceeded.
const KAFKA_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(300));

/// `--subscribers-refresh` bounds: each reload reads the whole table, so a
/// zero interval would reload it before every batch.
const SUBSCRIBERS_REFRESH_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(7 * 24 * 3600));

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

fn non_empty(option: &str, value: String) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::config(option, "must not be empty"));
    }
    Ok(value.trim().to_string())
}

/// Parses `--kafka-option KEY=VALUE` items: `env:NAME` values are read from
/// the environment; keys sparklet owns are refused.
pub fn parse_kafka_options(raw: &[String]) -> Result<Vec<(String, String)>> {
    let mut options = Vec::new();
    for item in raw.iter().filter(|s| !s.trim().is_empty()) {
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
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Result<Config> {
        let mut argv = vec![
            "sparklet",
            "run",
            "--bootstrap-servers",
            "b:9092",
            "--input-topic",
            "in",
            "--output-topic",
            "out",
            "--database-url",
            "postgres://u:pw@db:5433/app",
            "--checkpoint-dir",
            "cp",
        ];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Run(run) => Config::try_from(*run),
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_match_spark() {
        let config = args(&[]).unwrap();
        assert_eq!(config.trigger, Trigger::ProcessingTime(Duration::ZERO));
        assert_eq!(config.starting_offsets, StartingOffsets::Latest);
        assert_eq!(config.max_offsets_per_trigger, None);
        assert_eq!(config.subscribers_refresh, Duration::from_secs(60));
        assert_eq!(config.sql_dir, PathBuf::from("sql"));
        assert_eq!(config.guarantee, Guarantee::ExactlyOnce);
    }

    #[test]
    fn database_ca_file_requires_tls_and_a_readable_ca() {
        let err = args(&["--database-ca-file", "/no/such/ca.pem"]).unwrap_err().to_string();
        assert!(err.contains("--database-ca-file") && err.contains("/no/such/ca.pem"), "{err}");
        let ca_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/test-ca.crt");
        let config = args(&["--database-ca-file", ca_path]).unwrap();
        assert_eq!(config.postgres.parsed.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let err = PostgresConfig::parse("postgres://db/app?sslmode=disable")
            .unwrap()
            .with_ca_file(Some(ca_path.into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--database-ca-file") && err.contains("sslmode=disable"), "{err}");
    }

    #[test]
    fn database_ca_file_that_holds_no_certificate_is_refused() {
        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = args(&["--database-ca-file", empty.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("--database-ca-file") && err.contains(empty.path().to_str().unwrap()), "{err}");
    }

    #[test]
    fn parses_triggers() {
        assert_eq!("500ms".parse::<Trigger>().unwrap(), Trigger::ProcessingTime(Duration::from_millis(500)));
        assert_eq!("5s".parse::<Trigger>().unwrap(), Trigger::ProcessingTime(Duration::from_secs(5)));
        assert_eq!("0s".parse::<Trigger>().unwrap(), Trigger::ProcessingTime(Duration::ZERO));
        assert_eq!("once".parse::<Trigger>().unwrap(), Trigger::Once);
        assert_eq!("available-now".parse::<Trigger>().unwrap(), Trigger::AvailableNow);
    }

    #[test]
    fn bad_values_name_option_and_value() {
        let err = args(&["--trigger", "soon"]).unwrap_err().to_string();
        assert!(err.contains("--trigger") && err.contains("'soon'"), "{err}");
        let err = args(&["--starting-offsets", "middle"]).unwrap_err().to_string();
        assert!(err.contains("--starting-offsets") && err.contains("'middle'"), "{err}");
        let err = args(&["--max-offsets-per-trigger", "0"]).unwrap_err().to_string();
        assert!(err.contains("--max-offsets-per-trigger"), "{err}");
        let err = args(&["--guarantee", "maybe-once"]).unwrap_err().to_string();
        assert!(err.contains("--guarantee") && err.contains("'maybe-once'"), "{err}");
        let err = args(&["--subscribers-refresh", "often"]).unwrap_err().to_string();
        assert!(err.contains("--subscribers-refresh") && err.contains("'often'"), "{err}");
    }

    #[test]
    fn settings_are_described_as_the_command_line_spells_them() {
        std::env::set_var("SPARKLET_TEST_DESCRIBE_SECRET", "hunter3");
        let config =
            args(&["--trigger", "500ms", "--kafka-option", "sasl.password=env:SPARKLET_TEST_DESCRIBE_SECRET"]).unwrap();
        let shown = config.describe();
        for expected in [
            "--trigger 500ms",
            "--starting-offsets latest",
            "--guarantee exactly-once",
            "--max-offsets-per-trigger unlimited",
            "--subscribers-refresh 1m",
            "sasl.password=***",
        ] {
            assert!(shown.contains(expected), "{expected} in {shown}");
        }
        assert!(!shown.contains("hunter3") && !shown.contains("auto.offset.reset") && !shown.contains("Exactly"));
        for trigger in [Trigger::Once, Trigger::AvailableNow, Trigger::ProcessingTime(Duration::from_secs(90))] {
            assert_eq!(trigger.to_string().parse::<Trigger>().unwrap(), trigger);
        }
    }

    #[test]
    fn zero_or_nonsense_durations_and_counts_are_refused() {
        for (option, value) in [
            ("--kafka-timeout", "0s"),
            ("--kafka-timeout", "0"),
            ("--kafka-timeout", "1ms"),
            ("--kafka-timeout", "2h"),
            ("--subscribers-refresh", "0s"),
            ("--min-batches-to-retain", "0"),
        ] {
            let err = args(&[option, value]).unwrap_err().to_string();
            assert!(err.contains(option) && err.contains(value), "{option} {value}: {err}");
        }
        assert_eq!(args(&["--kafka-timeout", "500ms"]).unwrap().kafka.timeout, Duration::from_millis(500));
        assert_eq!(args(&["--trigger", "0s"]).unwrap().trigger, Trigger::ProcessingTime(Duration::ZERO));
    }

    #[test]
    fn kafka_options_pass_through_and_refuse_reserved_keys() {
        let config =
            args(&["--kafka-option", "security.protocol=SASL_SSL", "--kafka-option", "sasl.mechanisms=SCRAM-SHA-512"])
                .unwrap();
        assert_eq!(config.kafka.options[0], ("security.protocol".into(), "SASL_SSL".into()));
        let err = args(&["--kafka-option", "group.id=x"]).unwrap_err().to_string();
        assert!(err.contains("group.id"), "{err}");
        let err = args(&["--kafka-option", "novalue"]).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn secrets_come_from_env_and_are_never_printed() {
        std::env::set_var("SPARKLET_TEST_SECRET", "hunter2");
        let config = args(&["--kafka-option", "sasl.password=env:SPARKLET_TEST_SECRET"]).unwrap();
        assert_eq!(config.kafka.options[0].1, "hunter2");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains(":pw@"), "{shown}");
        assert!(shown.contains("db:5433/app"), "{shown}");
        let err = args(&["--kafka-option", "sasl.password=env:SPARKLET_TEST_UNSET"]).unwrap_err();
        assert!(err.to_string().contains("SPARKLET_TEST_UNSET"));
    }

    #[test]
    fn same_input_and_output_topic_is_refused() {
        let cli = crate::cli::Cli::try_parse_from([
            "sparklet",
            "run",
            "--bootstrap-servers",
            "b",
            "--input-topic",
            "t",
            "--output-topic",
            "t",
            "--database-url",
            "postgres://localhost/db",
            "--checkpoint-dir",
            "cp",
        ])
        .unwrap();
        let crate::cli::Command::Run(run) = cli.command else { unreachable!() };
        assert!(Config::try_from(*run).unwrap_err().to_string().contains("--output-topic"));
    }
}
