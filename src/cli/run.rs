//! `sparklet run`'s options (clap), and how they become a checked
//! [`Config`]: validation only checks and converts, it opens no connection;
//! every error names the option and the bad value (secrets excepted).

use std::path::PathBuf;

use clap::Args;

use super::{Secret, DEFAULT_MARKER_TOPIC};
use crate::checkpoint::Files;
use crate::config::kafka::{parse_kafka_options, KAFKA_TIMEOUT_RANGE};
use crate::config::{
    parse, BadRecords, ByteBudget, Config, Guarantee, KafkaConfig, OnBadRecord, PostgresConfig, RetryPolicy,
    StartingOffsets, SubscribersSettings,
};
use crate::error::{Error, Result};
use crate::job::{JobOverrides, OnConflict};
use crate::shard::ShardSelection;

/// Options of `sparklet run`. Every option can also come from the environment
/// variable shown in `--help`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SPARKLET_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: String,

    /// Topic the campaigns are read from.
    #[arg(long, env = "SPARKLET_INPUT_TOPIC")]
    pub input_topic: String,

    /// Topic one JSON message per (campaign, subscriber) is written to.
    #[arg(long, env = "SPARKLET_OUTPUT_TOPIC")]
    pub output_topic: String,

    /// Topic of the batch markers (exactly-once): one record per batch, in
    /// the batch's transaction, which recovery reads to learn whether the
    /// batch reached Kafka. Shared by all sparklet queries of a cluster;
    /// create it with 1 partition and cleanup.policy=compact. Checked at start.
    #[arg(long, env = "SPARKLET_MARKER_TOPIC", default_value = DEFAULT_MARKER_TOPIC)]
    pub marker_topic: String,

    /// Postgres connection, e.g. postgres://user@host:5432/db. The password is
    /// never logged; prefer the env var or PGPASSWORD-style URLs kept out of
    /// shell history.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// CA certificate file (PEM) for Postgres: the connection must use TLS and
    /// the server's certificate and host name are verified against it (libpq's
    /// sslmode=verify-full). Without it, the URL's sslmode applies: disable,
    /// prefer (default) or require, which encrypt without verifying.
    #[arg(long, env = "SPARKLET_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// Checkpoint directory of this query (offsets/, commits/, metadata). Reuse
    /// it to resume; a new directory starts a new query. A path, or an
    /// object-store URL: s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (credentials and endpoint from the cloud's usual
    /// environment variables: AWS_ACCESS_KEY_ID, AWS_ENDPOINT, ...).
    #[arg(long, env = "SPARKLET_CHECKPOINT_DIR")]
    pub checkpoint_dir: PathBuf,

    /// The job folder: input.sql (the input's declaration), job.toml (the
    /// job's options), NN_*.sql transform steps (DataFusion),
    /// subscribers.sql and the lookups' queries (Postgres), schema.sql (DDL,
    /// for people). See docs/sql.md.
    #[arg(long, env = "SPARKLET_SQL_DIR", default_value = "sql")]
    pub sql_dir: PathBuf,

    /// The output column that keys each Kafka message, instead of job.toml's
    /// [sink.kafka] key.
    #[arg(long, env = "SPARKLET_KAFKA_KEY_COLUMN")]
    pub kafka_key_column: Option<String>,

    /// The Postgres table the output is written to, instead of job.toml's
    /// [sink.postgres] table.
    #[arg(long, env = "SPARKLET_POSTGRES_TABLE")]
    pub postgres_table: Option<String>,

    /// Upsert by these columns (comma-separated; a unique index of the
    /// table must have exactly them), instead of job.toml's upsert_key.
    #[arg(long, env = "SPARKLET_UPSERT_KEY")]
    pub upsert_key: Option<String>,

    /// What an upsert does with a row whose key exists: update or nothing,
    /// instead of job.toml's on_conflict.
    #[arg(long, env = "SPARKLET_ON_CONFLICT", value_parser = ["update", "nothing"])]
    pub on_conflict: Option<String>,

    /// How often a micro-batch starts: a duration (500ms, 5s, 1m; 0s = as fast
    /// as possible: when idle, the input's end offsets are checked every 5 ms
    /// with one small request, so a batch starts within milliseconds of new
    /// data), `once` (one batch, then exit) or `available-now`
    /// (everything available at start, in batches of at most
    /// --max-offsets-per-trigger, then exit).
    #[arg(long, env = "SPARKLET_TRIGGER", default_value = "0s")]
    pub trigger: String,

    /// Where a new query starts reading: earliest or latest. Ignored when the
    /// checkpoint already has batches (as in Spark).
    #[arg(long, env = "SPARKLET_STARTING_OFFSETS", value_enum, default_value = "latest")]
    pub starting_offsets: StartingOffsets,

    /// Upper bound of offsets per micro-batch (a number, or `unlimited`),
    /// split across partitions in proportion to their backlog, every
    /// partition with a backlog getting at least one. The default keeps a
    /// first run over a large backlog, or a long outage, in batches that fit
    /// memory and the Kafka transaction timeout (4x --kafka-timeout, at most
    /// 15 minutes): 100k campaigns take about 6 s and 0.5 GiB here.
    #[arg(long, env = "SPARKLET_MAX_OFFSETS_PER_TRIGGER", default_value = "100000")]
    pub max_offsets_per_trigger: String,

    /// Upper bound of input bytes (keys and values) per micro-batch: a size
    /// (64MiB, 1GiB, 500MB), `unlimited`, or `auto`: a sixteenth of the
    /// memory the process may use (its cgroup's limit, else the machine's),
    /// between 16MiB and 256MiB. Planning reads the batch's messages and ends
    /// each partition's range where its share of the budget is spent (every
    /// partition with a backlog gets at least one message), so large messages
    /// make smaller batches, never an out-of-memory crash. A batch planned
    /// before (a replay) cannot shrink: one larger than the budget stops the
    /// query, saying how large a budget lets it finish.
    #[arg(long, env = "SPARKLET_MAX_BYTES_PER_TRIGGER", default_value = "auto")]
    pub max_bytes_per_trigger: String,

    /// librdkafka setting for consumer and producer, KEY=VALUE, repeatable
    /// (e.g. security.protocol=SASL_SSL). A VALUE of the form env:NAME is read
    /// from environment variable NAME, so secrets stay out of the command
    /// line. Only the values of well-known settings that are never secret
    /// (security.protocol, sasl.username, ssl.ca.location, ...) are logged;
    /// every other value shows as ***.
    /// In SPARKLET_KAFKA_OPTIONS, separate settings with `;`
    /// (security.protocol=SASL_SSL;sasl.mechanisms=SCRAM-SHA-512).
    #[arg(long = "kafka-option", env = "SPARKLET_KAFKA_OPTIONS", value_delimiter = ';', hide_env_values = true)]
    pub kafka_options: Vec<Secret>,

    /// Stop when input offsets the next batch should read no longer exist
    /// (deleted by retention, or the topic recreated), as Spark's
    /// failOnDataLoss. With false, log, count and go on from the earliest
    /// offset there is.
    #[arg(long, env = "SPARKLET_FAIL_ON_DATA_LOSS", default_value_t = true, action = clap::ArgAction::Set)]
    pub fail_on_data_loss: bool,

    /// What to do with an input message that is not a valid campaign (not
    /// UTF-8 or JSON, a missing, null, duplicated or mistyped field, a number
    /// out of range, text with a NUL character, an end before the start,
    /// too large): dead-letter (write it byte for byte with its key and
    /// headers saying why to --dead-letter-topic, in the batch's
    /// transaction), drop (log and count it) or fail (stop before the batch
    /// writes anything, naming topic, partition and offset). The other
    /// messages of the batch flow normally.
    #[arg(long, env = "SPARKLET_ON_BAD_RECORD", value_enum, default_value = "dead-letter")]
    pub on_bad_record: OnBadRecord,

    /// Topic dead letters are written to; it must exist (checked at start).
    /// Default: the input topic's name followed by `-dead-letter`.
    #[arg(long, env = "SPARKLET_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,

    /// Largest input message accepted, in bytes; a larger one is a bad record.
    #[arg(long, env = "SPARKLET_MAX_RECORD_BYTES", default_value_t = 262_144)]
    pub max_record_bytes: usize,

    /// When the subscribers cache is reloaded from Postgres: a duration
    /// (every 60s, whether or not the table changed), or `on-change`: a
    /// statement-level trigger on subscribers_restaurants (installed at
    /// start from sql/subscribers_on_change.sql) bumps a version and
    /// notifies; sparklet LISTENs and reloads in the background on a
    /// notification, after a listener reconnect and every
    /// --subscribers-version-check, and checks the version when it plans a
    /// batch (after reading the input's end offsets), so a batch never joins
    /// with a table older than a change committed before any message it reads
    /// was produced. Default: job.toml's `[lookups.subscribers] refresh`,
    /// else 60s.
    #[arg(long, env = "SPARKLET_SUBSCRIBERS_REFRESH")]
    pub subscribers_refresh: Option<String>,

    /// With --subscribers-refresh on-change: how often the version is read
    /// even without a notification (notifications sent while the listener
    /// is away are lost). Default: job.toml's `[lookups.subscribers]
    /// version_check`, else 60s.
    #[arg(long, env = "SPARKLET_SUBSCRIBERS_VERSION_CHECK")]
    pub subscribers_version_check: Option<String>,

    /// How long the subscribers cache may go without being confirmed
    /// current while reloads fail (the database away) before sparklet stops
    /// with an error rather than join with stale data. Must be longer than
    /// --subscribers-refresh (or --subscribers-version-check). Default:
    /// job.toml's `[lookups.subscribers] max_staleness`, else 1h.
    #[arg(long, env = "SPARKLET_SUBSCRIBERS_MAX_STALENESS")]
    pub subscribers_max_staleness: Option<String>,

    /// Timeout of one Kafka request (metadata, offsets, a transaction step) and
    /// of reading a batch's ranges.
    #[arg(long, env = "SPARKLET_KAFKA_TIMEOUT", default_value = "30s")]
    pub kafka_timeout: String,

    /// How long a trigger (planning or its batch) that fails on a transient
    /// error (Kafka, Postgres or the checkpoint store away, a lost
    /// connection, a timeout) is retried before sparklet exits: a duration
    /// (30s, 10m, 1h) or `unlimited`. Each retry uses new connections; the
    /// waits between them grow to 30 s (with jitter) and end early once the
    /// failed component answers again.
    #[arg(long, env = "SPARKLET_RETRY_FOR", default_value = "10m")]
    pub retry_for: String,

    /// At most this many retries of one trigger, also within --retry-for
    /// (default: as many as --retry-for allows).
    #[arg(long, env = "SPARKLET_MAX_RETRIES")]
    pub max_retries: Option<u32>,

    /// Delivery guarantee: exactly-once (both sinks transactional with a batch
    /// marker; output readers must use isolation.level=read_committed) or
    /// at-least-once (no transactions or markers; a replayed batch is written
    /// again, as with Spark's foreachBatch).
    #[arg(long, env = "SPARKLET_GUARANTEE", value_enum, default_value = "exactly-once")]
    pub guarantee: Guarantee,

    /// Append one JSON progress record per batch to this file (`-` for stdout).
    #[arg(long, env = "SPARKLET_PROGRESS_JSON")]
    pub progress_json: Option<PathBuf>,

    /// Hold a valid campaign whose start is still ahead (instead of letting
    /// the SQL's window filter drop it) and deliver it with the first batch
    /// at or after its start, once, as if it had arrived then; one whose end
    /// has passed by then is counted as expired. The held campaigns are
    /// kept in the checkpoint (state/N), so a restart or replay neither
    /// loses nor repeats them. Off by default (the job's original behaviour).
    #[arg(long, env = "SPARKLET_HOLD_FUTURE_CAMPAIGNS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub hold_future_campaigns: bool,

    /// Serve the HTTP endpoint on this address (e.g. 127.0.0.1:9464; port 0
    /// picks a free port, which the log names): /metrics (Prometheus),
    /// /livez, /readyz, /progress (JSON) and a live status page at /.
    /// Off by default.
    #[arg(long, env = "SPARKLET_HTTP_ADDR")]
    pub http_addr: Option<String>,

    /// Number of old batches kept in the checkpoint (Spark's minBatchesToRetain).
    #[arg(long, env = "SPARKLET_MIN_BATCHES_TO_RETAIN", default_value_t = 100)]
    pub min_batches_to_retain: u64,

    /// Number of shards of a new query (default 1): shard s reads every input
    /// partition p with p mod S == s, partitions added later included, with
    /// its own offsets, commits and transactional id, so shards can run in
    /// different processes. Recorded in the checkpoint; a different count is
    /// refused later (change it with `sparklet checkpoint repartition`).
    /// Without it, a query runs with the count it was created with.
    #[arg(long, env = "SPARKLET_SHARDS")]
    pub shards: Option<u32>,

    /// Which shards this process runs: `all` (default), a list (`0,2`), or
    /// `auto` with --replicas R: the shards s with s mod R == i, where i is
    /// the StatefulSet ordinal at the end of the pod's name (`sparklet-1`,
    /// see --pod-name).
    #[arg(long, env = "SPARKLET_SHARD_IDS", default_value = "all")]
    pub shard_ids: String,

    /// With --shard-ids auto: the number of processes (StatefulSet
    /// replicas) the shards are spread over.
    #[arg(long, env = "SPARKLET_REPLICAS")]
    pub replicas: Option<u32>,

    /// The name `--shard-ids auto` reads the ordinal from (default: the host
    /// name, which Kubernetes sets to the pod's name); in a pod, set
    /// SPARKLET_POD_NAME from metadata.name with the downward API.
    #[arg(long, env = "SPARKLET_POD_NAME")]
    pub pod_name: Option<String>,
}

/// The subscribers cache's refresh: each flag, else job.toml's
/// `[lookups.subscribers]`, else the default; a bad value from job.toml is
/// named there.
fn subscribers_settings(args: &RunArgs) -> Result<SubscribersSettings> {
    let job = crate::job::Job::load(&args.sql_dir)?.options.subscribers;
    let from_job = job.is_some()
        && (args.subscribers_refresh.is_none()
            || args.subscribers_version_check.is_none()
            || args.subscribers_max_staleness.is_none());
    let pick = |flag: &Option<String>, in_job: Option<&String>, default: &str| {
        flag.clone().or_else(|| in_job.cloned()).unwrap_or_else(|| default.to_string())
    };
    let settings = SubscribersSettings::parse(
        &pick(&args.subscribers_refresh, job.as_ref().map(|j| &j.refresh), "60s"),
        &pick(&args.subscribers_version_check, job.as_ref().and_then(|j| j.version_check.as_ref()), "60s"),
        &pick(&args.subscribers_max_staleness, job.as_ref().map(|j| &j.max_staleness), "1h"),
    );
    settings.map_err(|e| match from_job {
        true => Error::Job {
            at: args.sql_dir.join("job.toml").display().to_string(),
            message: format!("[lookups.subscribers] (or its --subscribers-* flags): {e}"),
        },
        false => e,
    })
}

impl TryFrom<RunArgs> for Config {
    type Error = Error;

    fn try_from(args: RunArgs) -> Result<Self> {
        let kafka = kafka_config(&args)?;
        let bad_records = BadRecords::parse(
            args.on_bad_record,
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
        if args.shards == Some(0) {
            return Err(Error::config("--shards", "must be at least 1, got 0"));
        }
        let subscribers = subscribers_settings(&args)?;
        Ok(Config {
            kafka,
            postgres: PostgresConfig::parse(args.database_url.expose())?.with_ca_file(args.database_ca_file)?,
            checkpoint_dir: Files::parse(&args.checkpoint_dir.to_string_lossy())?,
            sql_dir: args.sql_dir,
            job_overrides: JobOverrides {
                kafka_key: args.kafka_key_column.map(|k| k.trim().to_string()).filter(|k| !k.is_empty()),
                postgres_table: args.postgres_table.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
                upsert_key: args
                    .upsert_key
                    .as_deref()
                    .map(|k| k.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()),
                on_conflict: args.on_conflict.map(|c| match c.as_str() {
                    "nothing" => OnConflict::Nothing,
                    _ => OnConflict::Update,
                }),
            },
            trigger: args.trigger.parse()?,
            starting_offsets: args.starting_offsets,
            max_offsets_per_trigger: parse::max_offsets(&args.max_offsets_per_trigger)?,
            max_bytes_per_trigger: ByteBudget::parse(&args.max_bytes_per_trigger)?,
            bad_records,
            subscribers,
            fail_on_data_loss: args.fail_on_data_loss,
            retry: RetryPolicy::parse(&args.retry_for, args.max_retries)?,
            guarantee: args.guarantee,
            progress_json: args.progress_json,
            min_batches_to_retain: args.min_batches_to_retain,
            hold_future_campaigns: args.hold_future_campaigns,
            http_addr: args.http_addr.as_deref().map(parse::http_addr).transpose()?,
            shards: args.shards,
            shard_ids: ShardSelection::parse(&args.shard_ids, args.replicas)?,
            pod_name: args.pod_name.filter(|n| !n.trim().is_empty()),
        })
    }
}

/// The Kafka half of the options: non-empty, three distinct topics.
fn kafka_config(args: &RunArgs) -> Result<KafkaConfig> {
    let kafka = KafkaConfig {
        bootstrap_servers: parse::non_empty("--bootstrap-servers", &args.bootstrap_servers)?,
        input_topic: parse::non_empty("--input-topic", &args.input_topic)?,
        output_topic: parse::non_empty("--output-topic", &args.output_topic)?,
        marker_topic: parse::non_empty("--marker-topic", &args.marker_topic)?,
        options: parse_kafka_options(&args.kafka_options)?,
        timeout: parse::bounded_duration("--kafka-timeout", &args.kafka_timeout, KAFKA_TIMEOUT_RANGE)?,
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
    Ok(kafka)
}
