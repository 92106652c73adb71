//! Leaves the whole crate uses: time stamps, back-off, hashing, quoting
//! text for logs, and the job's files. Nothing here knows about Kafka,
//! Postgres or a batch.

pub(crate) mod backoff;
pub(crate) mod files;
pub(crate) mod hash;
pub(crate) mod text;
pub(crate) mod time;

use crate::error::{Error, Result};

/// Runs a blocking call (librdkafka, a file store) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::Runtime(format!("a blocking call (Kafka client or file store) panicked or was cancelled: {e}"))
    })?
}
