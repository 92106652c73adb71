//! Validated settings of a run: what each option means once checked, and
//! the parsers of option values. The command line ([`crate::cli`]) builds a
//! [`Config`] from them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod bad_records;
mod byte_budget;
pub(crate) mod kafka;
pub(crate) mod parse;
mod postgres;
mod retry;
mod subscribers;

pub use bad_records::{BadRecords, Limits, OnBadRecord, MAX_CLIENT_ID_BYTES, OUTPUT_OVERHEAD};
pub use byte_budget::{size, ByteBudget};
pub use kafka::{parse_kafka_options, redact, KafkaConfig};
pub use parse::parse_duration;
pub use postgres::{url_with_search_path, PostgresConfig};
pub use retry::RetryPolicy;
pub use subscribers::{RefreshPolicy, SubscribersSettings};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// Where a query with an empty checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartingOffsets {
    Earliest,
    Latest,
}

/// Everything `sparklet run` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    /// `--checkpoint-dir`: a local folder or an object-store URL.
    pub checkpoint_dir: crate::checkpoint::Files,
    pub sql_dir: PathBuf,
    /// `--kafka-key-column`, `--postgres-table`, `--upsert-key`,
    /// `--on-conflict`: over `job.toml`'s values.
    pub job_overrides: crate::job::JobOverrides,
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
        value_name(self, f)
    }
}

impl fmt::Display for StartingOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        value_name(self, f)
    }
}

/// An option value as the command line spells it (`exactly-once`).
fn value_name(value: &impl clap::ValueEnum, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match value.to_possible_value() {
        Some(v) => f.write_str(v.get_name()),
        None => Ok(()),
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
