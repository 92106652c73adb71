//! One batch's output, streamed chunk by chunk to every sink that needs it.
//!
//! The SQL output is computed once ("persist") and each chunk is shared by
//! the sinks (a `RecordBatch` clone is a reference count), through bounded
//! channels, so the sinks write while the rest is still being computed and
//! memory holds a few chunks, not the whole output. A sink commits only after
//! [`Chunk::End`]: a channel that closes without it means the output failed
//! (a SQL error at run time), and the sink rolls its transaction back.

use arrow::array::RecordBatch;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::transform::OutputStream;

/// Chunks buffered per sink: a slower sink holds the computation back
/// rather than letting chunks pile up.
const CHANNEL_CHUNKS: usize = 4;

/// What a sink receives.
#[derive(Debug)]
pub enum Chunk {
    /// Output rows, in the sink columns.
    Rows(RecordBatch),
    /// The output is complete: commit.
    End,
}

/// A sink's end of the stream.
pub type Chunks = mpsc::Receiver<Chunk>;

/// A channel for one sink.
pub(crate) fn channel() -> (mpsc::Sender<Chunk>, Chunks) {
    mpsc::channel(CHANNEL_CHUNKS)
}

/// Feeds every chunk of `stream` to each of `sinks`, then [`Chunk::End`];
/// returns the number of output rows. A sink that has gone (it failed and
/// reports its own error) is left out; the others go on. On a stream error
/// no `End` is sent, so every sink rolls back.
pub(crate) async fn feed(mut stream: OutputStream, mut sinks: Vec<mpsc::Sender<Chunk>>) -> Result<u64> {
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        rows += chunk.num_rows() as u64;
        let mut alive = Vec::with_capacity(sinks.len());
        for sink in sinks {
            if sink.send(Chunk::Rows(chunk.clone())).await.is_ok() {
                alive.push(sink);
            }
        }
        sinks = alive;
    }
    for sink in sinks {
        let _ = sink.send(Chunk::End).await;
    }
    Ok(rows)
}

/// The error a sink returns when its stream closed without [`Chunk::End`].
pub(crate) fn ended_early(sink: &str) -> Error {
    Error::Runtime(format!("the batch's output stopped before its end; the {sink} transaction was rolled back"))
}
