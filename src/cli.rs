//! The raw command line, as clap parses it. No I/O and no validation here:
//! [`crate::config::Config`] turns [`RunArgs`] into checked settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod checkpoint;

pub use checkpoint::{
    CheckpointCommand, CheckpointDir, ClusterArgs, RepartitionArgs, ResetArgs, RewindArgs, ShowArgs, VerifyArgs,
};

/// sparklet: a micro-batch stream processor. Every trigger it reads new Kafka
/// campaigns, joins them in SQL with the cached Postgres subscribers table,
/// and writes one row per subscriber to a Kafka topic and to Postgres.
#[derive(Debug, Parser)]
#[command(
    name = "sparklet",
    version,
    about,
    long_about = None,
    after_help = "Logs go to stderr, filtered by RUST_LOG (default: info,rdkafka=warn,tokio_postgres=warn); \
                  colours only on a terminal, and never when NO_COLOR is set."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr: text (for people) or json (one JSON object per
    /// line, for log shippers).
    #[arg(long, global = true, env = "SPARKLET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A value that may hold a secret (a database URL with its password, Kafka
/// settings): `Debug` never shows it, and `--help` hides its environment
/// variable's value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl AsRef<str> for Secret {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The default `--marker-topic`, shared by every sparklet query of a cluster.
pub const DEFAULT_MARKER_TOPIC: &str = "sparklet-markers";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the streaming job against a Kafka cluster and Postgres.
    Run(Box<RunArgs>),
    /// Run the whole job once on this machine: an in-process Kafka (librdkafka's
    /// mock cluster), sample campaigns and subscribers, the local Postgres
    /// (a throwaway one the demo starts when none runs).
    Demo(DemoArgs),
    /// Inspect or repair a stopped query's checkpoint (each command takes the
    /// checkpoint's lock, so it refuses while the query runs).
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Least privilege: create sparklet's own tables (and, with
    /// --change-trigger, the subscribers change trigger) and grant a role
    /// exactly what `sparklet run` needs, so that role runs without CREATE.
    /// Run as an administrator, or print the SQL for one (--print-sql).
    Setup(SetupArgs),
}

/// Options of `sparklet setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The role `sparklet run` connects as (the user of its DATABASE_URL):
    /// it gets USAGE on the schema and the rights on the tables it reads and
    /// writes, nothing else.
    #[arg(long)]
    pub role: String,

    /// Print the SQL instead of running it (nothing is connected to).
    #[arg(long)]
    pub print_sql: bool,

    /// Also install the change trigger on subscribers_restaurants (from
    /// SQL_DIR/subscribers_on_change.sql), for --subscribers-refresh on-change.
    #[arg(long)]
    pub change_trigger: bool,

    /// Directory of the job's SQL files (for the change trigger's file).
    #[arg(long, env = "SPARKLET_SQL_DIR", default_value = "sql")]
    pub sql_dir: PathBuf,

    /// The administrator's Postgres connection (the owner of the schema and
    /// of the job's tables), with the search_path sparklet runs with.
    /// Needed unless --print-sql.
    #[arg(long, env = "SPARKLET_SETUP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// CA certificate file (PEM) for the administrator's connection, as
    /// `sparklet run --database-ca-file`.
    #[arg(long, env = "SPARKLET_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

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

    /// Directory of the SQL files: NN_*.sql transform steps (DataFusion),
    /// subscribers.sql (Postgres query that loads the cache), schema.sql (DDL).
    #[arg(long, env = "SPARKLET_SQL_DIR", default_value = "sql")]
    pub sql_dir: PathBuf,

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
    #[arg(long, env = "SPARKLET_STARTING_OFFSETS", default_value = "latest")]
    pub starting_offsets: String,

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
    #[arg(long, env = "SPARKLET_ON_BAD_RECORD", default_value = "dead-letter")]
    pub on_bad_record: String,

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
    /// was produced.
    #[arg(long, env = "SPARKLET_SUBSCRIBERS_REFRESH", default_value = "60s")]
    pub subscribers_refresh: String,

    /// With --subscribers-refresh on-change: how often the version is read
    /// even without a notification (notifications sent while the listener
    /// is away are lost).
    #[arg(long, env = "SPARKLET_SUBSCRIBERS_VERSION_CHECK", default_value = "60s")]
    pub subscribers_version_check: String,

    /// How long the subscribers cache may go without being confirmed
    /// current while reloads fail (the database away) before sparklet stops
    /// with an error rather than join with stale data. Must be longer than
    /// --subscribers-refresh (or --subscribers-version-check).
    #[arg(long, env = "SPARKLET_SUBSCRIBERS_MAX_STALENESS", default_value = "1h")]
    pub subscribers_max_staleness: String,

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
    #[arg(long, env = "SPARKLET_GUARANTEE", default_value = "exactly-once")]
    pub guarantee: String,

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

/// Options of `sparklet demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Postgres the demo writes to (it uses its own schema, sparklet_demo).
    /// Deliberately not read from DATABASE_URL, which may name a production
    /// database: the demo writes where this option says, or to the local default.
    /// Without it: postgres://postgres@127.0.0.1:5432/postgres if a server
    /// answers there, else a throwaway server the demo starts from the
    /// installed PostgreSQL binaries (initdb and pg_ctl, found on PATH or in
    /// /usr/lib/postgresql/*/bin; apt-get install postgresql), in a temporary
    /// directory, on a free port of 127.0.0.1, and removes at the end.
    /// `auto`: that throwaway server even when one answers on 5432.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Directory of the SQL files.
    #[arg(long, default_value = "sql")]
    pub sql_dir: PathBuf,

    /// Checkpoint directory of the demo query; emptied at start, since the
    /// demo's Kafka is new every run. Must be absent, empty or a sparklet
    /// checkpoint: any other directory is refused and left untouched.
    #[arg(long, default_value = "checkpoints/demo")]
    pub checkpoint_dir: PathBuf,

    /// Number of sample campaigns to produce besides the example message.
    #[arg(long, default_value_t = 20)]
    pub campaigns: usize,

    /// Keep the demo running with the HTTP endpoint on this address (e.g.
    /// 127.0.0.1:9464): a batch every second, a few new campaigns every
    /// second, the live status page at http://ADDR/; Ctrl-C stops it.
    #[arg(long)]
    pub http_addr: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn option<'a>(command: &'a clap::Command, sub: &str, long: &str) -> &'a clap::Arg {
        let sub = command.find_subcommand(sub).unwrap();
        sub.get_arguments().find(|a| a.get_long() == Some(long)).unwrap()
    }

    #[test]
    fn demo_does_not_read_database_url_from_the_environment() {
        let command = Cli::command();
        assert_eq!(option(&command, "demo", "database-url").get_env(), None);
        assert!(option(&command, "run", "database-url").get_env().is_some());
    }

    #[test]
    fn help_documents_the_kafka_options_separator_and_no_color() {
        let mut command = Cli::command();
        let help = command.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        assert!(help.contains("SPARKLET_KAFKA_OPTIONS") && help.contains("separate settings with `;`"), "{help}");
        assert!(Cli::command().render_help().to_string().contains("NO_COLOR"));
    }

    #[test]
    fn secrets_stay_out_of_help_and_debug() {
        let command = Cli::command();
        for (sub, long) in [("run", "kafka-option"), ("run", "database-url"), ("setup", "database-url")] {
            assert!(option(&command, sub, long).is_hide_env_values_set(), "{sub} --{long}");
        }
        let argv = ["sparklet", "run", "--bootstrap-servers", "b", "--input-topic", "i", "--output-topic", "o"];
        let secrets = [
            "--checkpoint-dir",
            "c",
            "--database-url",
            "postgres://u:DB-PASSWORD@h/db",
            "--kafka-option",
            "ssl.key.pem=PRIVATE-KEY",
        ];
        let cli = Cli::try_parse_from(argv.iter().chain(secrets.iter())).unwrap();
        let debug = format!("{cli:?}");
        assert!(
            !debug.contains("PRIVATE-KEY") && !debug.contains("DB-PASSWORD") && debug.contains("Secret(***)"),
            "{debug}"
        );
    }
}
