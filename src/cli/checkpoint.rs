//! The raw arguments of `sparklet checkpoint show|verify|rewind|reset|repartition`
//! (clap, no I/O); the commands are [`crate::admin`]'s.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Secret, DEFAULT_MARKER_TOPIC};

/// `sparklet checkpoint ...`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// The query id, where each partition stands, the last batches (offsets,
    /// times, rows, subscribers snapshot, SQL fingerprint), a batch waiting
    /// to be replayed, held campaigns.
    Show(ShowArgs),
    /// Checks every checkpoint file and the batch sequence, and compares
    /// the last committed batch with both sinks' markers when
    /// --database-url and --bootstrap-servers are given. Exits 1 on a problem.
    Verify(VerifyArgs),
    /// Makes the query start again from an earlier committed batch's start
    /// offsets, or from the first offsets at or after a time, by writing a
    /// new committed batch that reads nothing and ends there (history is
    /// kept: no file is rewritten). The next run reprocesses from there.
    Rewind(RewindArgs),
    /// Starts a new query (new id, so new transactional id and markers): the
    /// old checkpoint is moved aside to <dir>.<old query id>, kept whole.
    /// With --keep-offsets the new query starts where the old one stopped;
    /// otherwise --starting-offsets applies at the next run.
    Reset(ResetArgs),
    /// Changes a stopped query's number of shards: every shard must have
    /// committed its last batch; the new shards start where the old ones'
    /// last committed batches ended (nothing read twice, nothing skipped),
    /// with batch ids after every old one. The retired shards' Kafka
    /// transactional ids are settled first (init_transactions aborts what
    /// they left open), which needs --bootstrap-servers. The old layout is
    /// kept under retired/.
    Repartition(RepartitionArgs),
}

/// The checkpoint a `sparklet checkpoint` command works on.
#[derive(Debug, Args)]
pub struct CheckpointDir {
    /// The query's checkpoint directory (as given to `sparklet run`).
    #[arg(long, env = "SPARKLET_CHECKPOINT_DIR")]
    pub checkpoint_dir: PathBuf,
    /// Which shard's logs (a query with several shards; see `run --shards`).
    #[arg(long)]
    pub shard: Option<u32>,
}

/// Options of `sparklet checkpoint repartition`.
#[derive(Debug, Args)]
pub struct RepartitionArgs {
    /// The query's checkpoint directory (as given to `sparklet run`).
    #[arg(long, env = "SPARKLET_CHECKPOINT_DIR")]
    pub checkpoint_dir: PathBuf,
    /// The new number of shards.
    #[arg(long)]
    pub shards: u32,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Options of `sparklet checkpoint show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub dir: CheckpointDir,
    /// How many of the last batches to list.
    #[arg(long, default_value_t = 10)]
    pub last: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How to reach the sinks and the input, for the commands that ask them.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Postgres of the feedback sink (its sparklet_commits markers).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// CA certificate file (PEM) for Postgres, as for `sparklet run`.
    #[arg(long, env = "SPARKLET_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SPARKLET_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Topic of the batch markers.
    #[arg(long, env = "SPARKLET_MARKER_TOPIC", default_value = DEFAULT_MARKER_TOPIC)]
    pub marker_topic: String,
    /// librdkafka setting, KEY=VALUE, repeatable, as for `sparklet run`.
    #[arg(long = "kafka-option", env = "SPARKLET_KAFKA_OPTIONS", value_delimiter = ';', hide_env_values = true)]
    pub kafka_options: Vec<Secret>,
    /// Timeout of one Kafka request.
    #[arg(long, env = "SPARKLET_KAFKA_TIMEOUT", default_value = "30s")]
    pub kafka_timeout: String,
}

/// Options of `sparklet checkpoint verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dir: CheckpointDir,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Options of `sparklet checkpoint rewind`.
#[derive(Debug, Args)]
pub struct RewindArgs {
    #[command(flatten)]
    pub dir: CheckpointDir,
    /// Start again at this committed batch's start offsets (it and every
    /// later batch are reprocessed).
    #[arg(long, conflicts_with = "to_time", required_unless_present = "to_time")]
    pub to_batch: Option<u64>,
    /// Start again at each partition's first message at or after this time
    /// (RFC 3339, e.g. 2026-11-24T09:00:00Z), found with the broker's
    /// offsets-for-times; needs --bootstrap-servers.
    #[arg(long)]
    pub to_time: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Options of `sparklet checkpoint reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub dir: CheckpointDir,
    /// The new query starts where the old one's last committed batch ended
    /// (nothing reprocessed, nothing skipped).
    #[arg(long)]
    pub keep_offsets: bool,
}
