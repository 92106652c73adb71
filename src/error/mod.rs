//! The library's error type: one variant per component that can fail.
//!
//! Every variant names the component; its cause, where there is one, is kept
//! typed as the error's `source()` and is not repeated in its own message, so
//! a chain prints each cause once. Logs print the whole chain with
//! [`Error::chain`]. [`Error::is_retryable`] tells the driver whether running
//! the same trigger again can help; it answers yes only for an allowlist of
//! transient failures (timeouts, transport, a broker or coordinator not
//! available, a Postgres connection lost, a serialization failure).

use std::fmt;
use std::path::PathBuf;

use rdkafka::error::KafkaError;

mod retry;

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a sparklet run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line option or environment variable has a bad value.
    #[error("config: option {option}: {message}")]
    Config { option: String, message: String },

    /// Reading or writing the checkpoint directory failed.
    #[error("checkpoint: {action} {path}")]
    CheckpointIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing the `--progress-json` file failed.
    #[error("progress: {action} {path}")]
    ProgressFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The object store that holds the checkpoint failed (a retry can help:
    /// most such failures are the network or the service).
    #[error("checkpoint: {action} {location} in the object store")]
    CheckpointObject {
        action: &'static str,
        location: String,
        #[source]
        source: object_store::Error,
    },

    /// Another process owns the checkpoint directory.
    #[error(
        "checkpoint: {dir} is in use by another sparklet process ({holder}); stop it first, or give this query another --checkpoint-dir"
    )]
    CheckpointInUse { dir: PathBuf, holder: String },

    /// A file that is only ever created already exists: another process wrote
    /// it, so this one no longer owns the query.
    #[error(
        "checkpoint: {path} already exists; another process wrote it, so this one does not own the query any more"
    )]
    CheckpointConflict { path: PathBuf },

    /// A sink holds batches of this query that the checkpoint does not know.
    #[error(
        "checkpoint: {dir} knows batches of query {query_id} up to {known}, but {sink} already holds batch {held}: the checkpoint is older than the sinks (a restored backup or a copied directory?), and running it would write those batches again. Nothing was written. Restore the newest checkpoint of this query, or start a new query with a new --checkpoint-dir"
    )]
    CheckpointBehind { dir: PathBuf, query_id: String, known: String, sink: &'static str, held: u64 },

    /// The checkpoint belongs to a query with other settings.
    #[error("checkpoint: {0}")]
    CheckpointMismatch(String),

    /// A checkpoint file exists but cannot be understood.
    #[error("checkpoint: {path} is not a valid sparklet checkpoint file")]
    CheckpointFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A SQL file or directory is missing, unreadable or empty, or the
    /// subscribers query failed.
    #[error("sql: {path}: {message}")]
    Sql { path: PathBuf, message: String },

    /// The job folder's declaration or options are wrong (`at` is
    /// `file:line:column` where the place is known).
    #[error("job: {at}: {message}")]
    Job { at: String, message: String },

    /// DataFusion could not plan or run a SQL file.
    #[error("sql: {path}: {action} failed")]
    SqlStep {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// A SQL file failed at run time on some batch's data (a failing cast,
    /// a division by zero); nothing of that batch was committed (a large
    /// output's transactions, already started, were aborted).
    #[error(
        "sql: {path}: failed at run time on batch {batch_id} (offsets {offsets}); nothing of the batch was committed. Fix the SQL (for example TRY_CAST instead of CAST) and restart: the batch is replayed with the fixed files"
    )]
    SqlRuntime {
        path: PathBuf,
        batch_id: u64,
        offsets: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// DataFusion failed while setting up the transform.
    #[error("transform: {context}")]
    Transform {
        context: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// The SQL output does not have the columns the sinks need.
    #[error("transform: the output of {path} {message}")]
    OutputSchema { path: PathBuf, message: String },

    /// Talking to Kafka failed.
    #[error("kafka: {context}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },

    /// No bootstrap server answered at start.
    #[error("kafka: cannot reach bootstrap servers {servers}: {cause}")]
    KafkaUnreachable { servers: String, cause: String },

    /// A broker refused the client's SASL credentials or mechanism: a
    /// setting is wrong, so a retry cannot help.
    #[error(
        "kafka: SASL authentication with broker {broker} failed ({cause}); check sasl.username, sasl.password and sasl.mechanisms. Not retried: a retry cannot help"
    )]
    KafkaAuthentication { broker: String, cause: String },

    /// The TLS handshake with a broker failed (a CA that did not sign its
    /// certificate, a name mismatch): a setting is wrong, so a retry cannot help.
    #[error(
        "kafka: TLS handshake with broker {broker} failed ({cause}); check ssl.ca.location and security.protocol. Not retried: a retry cannot help"
    )]
    KafkaTls { broker: String, cause: String },

    /// A broker closed the connection at the client's first request, as a
    /// listener that expects TLS does to a client that does not speak it:
    /// `security.protocol` does not match the listener, so a retry cannot help.
    #[error(
        "kafka: broker {broker} closed the connection at the first request ({cause}): security.protocol is {protocol}, but this listener seems to expect TLS (SSL or SASL_SSL); check security.protocol and the port. Not retried: a retry cannot help"
    )]
    KafkaProtocol { broker: String, protocol: String, cause: String },

    /// A Kafka step did not finish in time (the broker may be away).
    #[error("kafka: {0}")]
    KafkaTimeout(String),

    /// Kafka answered, but not in a way sparklet can work with (a topic that
    /// does not exist, a client without group metadata).
    #[error("kafka: {0}")]
    KafkaState(String),

    /// Talking to Postgres failed.
    #[error("postgres: {context}")]
    Postgres {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A database object sparklet uses (its tables, the change trigger's
    /// function) exists but cannot be trusted: another role owns it, or it
    /// carries triggers sparklet did not create. Not retryable.
    #[error(
        "postgres: {object} {problem}; drop it, or have its owner hand it over (ALTER ... OWNER TO), and start again"
    )]
    PostgresObject { object: String, problem: String },

    /// Input offsets the next batch should read no longer exist (as Spark's
    /// `failOnDataLoss=true`).
    #[error(
        "kafka: data loss in input topic '{topic}': {detail}{}; nothing was written. To skip the lost offsets and go on from the earliest ones, restart with --fail-on-data-loss false",
        if *more > 0 { format!(" (and {more} more partitions)") } else { String::new() }
    )]
    DataLoss { topic: String, detail: String, more: usize },

    /// `--on-bad-record fail` and a message failed validation; nothing of
    /// the batch was written.
    #[error(
        "input: bad record at {topic}[{partition}] offset {offset} ({reason}: {message}); nothing of batch {batch_id} was written. To go past it, restart with --on-bad-record dead-letter (kept in the dead-letter topic) or drop"
    )]
    BadRecord { topic: String, partition: i32, offset: i64, reason: &'static str, message: String, batch_id: u64 },

    /// A newer owner of the query took over (its Kafka producer or its
    /// Postgres owner epoch): this process must stop, never fight back.
    #[error(
        "{sink}: this process was fenced by a newer owner of query {query_id}; it stops without writing (another process started on a copy of the checkpoint?)"
    )]
    Fenced { sink: &'static str, query_id: String },

    /// A transient failure outlasted `--retry-for` (or `--max-retries`): the
    /// run stops; the cause is the last attempt's failure.
    #[error(
        "{component}: still failing after waiting {waited} over {attempts} attempts ({policy}); sparklet stops, and a restart resumes from the checkpoint"
    )]
    RetriesSpent {
        component: &'static str,
        waited: String,
        attempts: u32,
        policy: String,
        #[source]
        source: Box<Error>,
    },

    /// The subscribers cache could not be reloaded for longer than allowed.
    #[error(
        "subscribers: the cache is {age_s} s old and reloading it keeps failing (--subscribers-max-staleness {max}); last failure: {cause}"
    )]
    SubscribersStale { age_s: u64, max: String, cause: String },

    /// Building or encoding Arrow data failed.
    #[error("arrow: {context}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// The job's Postgres table cannot take the output (found in its
    /// catalog at start, before anything is read). Not retryable.
    #[error("postgres: table {table} on {target} cannot take the job's output: {problems}. Nothing was written; fix the table or the last SQL step and start again")]
    PostgresTable { table: String, target: String, problems: String },

    /// The output could not be encoded for Postgres' binary COPY.
    #[error("postgres: encoding rows for COPY")]
    CopyEncoding(#[source] CopyError),

    /// A sink's input stopped before the end of the batch's output, because
    /// the SQL or the other sink failed; the sink aborted its transaction.
    /// The failure that caused it is reported instead.
    #[error("output: the batch's output stopped before its end (the SQL or the other sink failed); the transaction was aborted")]
    OutputCut,

    /// A background task died.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// The error and each of its causes, `: `-separated, for logs.
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }

    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Error::Kafka { context: context.into(), source }
    }

    pub(crate) fn postgres(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Error::Postgres { context: context.into(), source }
    }

    pub(crate) fn transform(context: impl Into<String>, source: datafusion::error::DataFusionError) -> Self {
        Error::Transform { context: context.into(), source }
    }

    pub(crate) fn arrow(context: impl Into<String>, source: arrow::error::ArrowError) -> Self {
        Error::Arrow { context: context.into(), source }
    }

    pub(crate) fn config(option: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { option: option.into(), message: message.into() }
    }
}

/// Displays an error followed by each of its causes (see [`Error::chain`]).
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Why a batch cannot be encoded (the output's schema rules these out, so
/// each is a bug or a changed schema, never bad input).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0} columns are more than COPY's 32767")]
    TooManyColumns(usize),
    #[error("column {0} has a NaN or infinite value, which the Kafka sink's JSON cannot carry (it would write null): filter or replace it in the last step")]
    NotFinite(String),
    #[error("column {column} has type {data_type}, which sparklet does not encode")]
    Type { column: String, data_type: arrow::datatypes::DataType },
}

impl From<CopyError> for Error {
    fn from(e: CopyError) -> Self {
        Error::CopyEncoding(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let err = Error::CheckpointIo { action: "writing", path: "/cp/offsets/3".into(), source: io };
        assert_eq!(err.to_string(), "checkpoint: writing /cp/offsets/3");
        assert_eq!(err.chain().to_string(), "checkpoint: writing /cp/offsets/3: permission denied");
    }
}
