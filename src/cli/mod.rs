//! The raw command line, as clap parses it. No I/O and no validation here:
//! [`RunArgs`] become a checked [`crate::config::Config`] (`run.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod checkpoint;
mod run;
#[cfg(test)]
mod run_tests;

pub use checkpoint::{
    CheckpointCommand, CheckpointDir, ClusterArgs, RepartitionArgs, ResetArgs, RewindArgs, ShowArgs, VerifyArgs,
};
pub use run::RunArgs;

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
    /// Check a job folder against the live Postgres (and the Kafka topics,
    /// with --bootstrap-servers) without running it: the declaration and
    /// options, the lookup queries, the SQL steps, the output against the
    /// table's catalog. Lists every problem; exits 1 if there is any.
    Check(CheckArgs),
}

/// Options of `sparklet check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The job folder (as `sparklet run --sql-dir`).
    #[arg(long, env = "SPARKLET_SQL_DIR", default_value = "sql")]
    pub sql_dir: PathBuf,

    /// Postgres connection (as `sparklet run --database-url`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// CA certificate file (PEM) for Postgres (as `sparklet run`).
    #[arg(long, env = "SPARKLET_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// Kafka bootstrap servers: if given, the topics are checked too.
    #[arg(long, env = "SPARKLET_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,

    /// The input topic to check (with --bootstrap-servers).
    #[arg(long, env = "SPARKLET_INPUT_TOPIC")]
    pub input_topic: Option<String>,

    /// The output topic to check (with --bootstrap-servers).
    #[arg(long, env = "SPARKLET_OUTPUT_TOPIC")]
    pub output_topic: Option<String>,
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
