//! The library's error type: one variant per component that can fail.
//!
//! Every variant names the component and keeps its cause in the message, so a
//! log line alone says what failed and where. [`Error::is_retryable`] tells the
//! driver whether running the same batch again can help (a broker or database
//! that went away) or not (a broken SQL file, a bad option).

use std::path::PathBuf;

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a sparklet run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line option or environment variable has a bad value.
    #[error("config: option {option}: {message}")]
    Config { option: String, message: String },

    /// Reading or writing the checkpoint directory failed.
    #[error("checkpoint: {action} {path}: {source}")]
    CheckpointIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file exists but cannot be understood.
    #[error("checkpoint: {path} is not a valid sparklet checkpoint file: {message}")]
    CheckpointFormat { path: PathBuf, message: String },

    /// A SQL file is missing, unreadable or does not plan.
    #[error("sql: {path}: {message}")]
    Sql { path: PathBuf, message: String },

    /// DataFusion failed while running the transform.
    #[error("transform: {context}: {source}")]
    Transform {
        context: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// The SQL output does not have the columns the sinks need.
    #[error("transform: the output of {path} {message}")]
    OutputSchema { path: PathBuf, message: String },

    /// Talking to Kafka failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// No bootstrap server answered at start.
    #[error("kafka: cannot reach bootstrap servers {servers}: {cause}")]
    KafkaUnreachable { servers: String, cause: String },

    /// Kafka answered, but not in a way sparklet can work with.
    #[error("kafka: {0}")]
    KafkaState(String),

    /// Talking to Postgres failed. (tokio-postgres words only the kind of
    /// failure; the server's message or the I/O or TLS cause is its source.)
    #[error("postgres: {context}: {}", with_causes(.source))]
    Postgres {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// Building or encoding Arrow data failed.
    #[error("arrow: {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// A background task died.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// Whether running the same batch again may succeed.
    ///
    /// Connection-level failures of Kafka or Postgres are worth a retry; bad
    /// input, bad SQL, a bad checkpoint or a bad option are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka { source, .. } => kafka_retryable(source),
            Error::Postgres { source, .. } => postgres_retryable(source),
            Error::KafkaState(_) => true,
            _ => false,
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
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

fn kafka_retryable(err: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError as K;
    match err {
        K::ClientCreation(_) | K::ClientConfig(..) => false,
        K::Transaction(e) => e.is_retriable() || e.txn_requires_abort(),
        _ => true,
    }
}

/// `err` followed by each of its causes, `: `-separated.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn postgres_retryable(err: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if err.is_closed() {
        return true;
    }
    match err.code() {
        // No SQLSTATE: the connection itself failed (refused, reset, timed out).
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception, 53: insufficient resources,
            // 57: operator intervention (e.g. admin shutdown), 40: rollback.
            matches!(class, "08" | "53" | "57" | "40") || code == &SqlState::T_R_SERIALIZATION_FAILURE
        }
    }
}
