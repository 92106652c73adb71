//! A batch's output on its way to the sinks: computed once, in chunks, and
//! handed to both sinks as it is computed.
//!
//! The SQL's result is a stream of record batches ([`RowStream`]). The first
//! [`HEAD_ROWS`] rows are computed before any sink starts, so a batch whose
//! whole output fits there (most batches) fails before anything is written
//! when its SQL fails at run time, as a materialised output would. The rest
//! is passed on chunk by chunk ([`Feed::run`]): each chunk is computed once
//! and shared by both sinks through bounded channels, so memory stays flat in
//! the batch size and Postgres and Kafka receive rows while the SQL still
//! runs ("persist" without keeping the whole output).
//!
//! A sink commits only once it has read the end of the output ([`Chunks`]):
//! a failure of the SQL or of the other sink closes the channels without an
//! end, and every sink still writing aborts its transaction
//! ([`Error::OutputCut`]).

use arrow::array::RecordBatch;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::transform::RowStream;

/// Rows computed before the sinks start: a batch's whole output up to this
/// size is known (and its SQL has succeeded) before anything is written.
pub(crate) const HEAD_ROWS: usize = 65_536;

/// Chunks in flight to each sink: the bound on memory between the SQL and a
/// slower sink (DataFusion's chunks hold 8,192 rows).
const CHUNKS_IN_FLIGHT: usize = 4;

/// What one batch writes.
pub struct BatchOutput {
    /// Rows computed before any sink starts.
    head: Vec<RecordBatch>,
    /// The rest, still to be computed; `None` once the head is everything.
    rest: Option<RowStream>,
}

impl BatchOutput {
    /// Computes `rows` up to [`HEAD_ROWS`] (or its end): an SQL error there
    /// stops the batch before any sink starts.
    pub async fn start(mut rows: RowStream) -> Result<Self> {
        let (mut head, mut computed) = (Vec::new(), 0);
        while computed < HEAD_ROWS {
            match rows.next().await {
                Some(batch) => {
                    let batch = batch?;
                    computed += batch.num_rows();
                    head.push(batch);
                }
                None => return Ok(BatchOutput { head, rest: None }),
            }
        }
        Ok(BatchOutput { head, rest: Some(rows) })
    }

    /// A feed of the rows to each sink that `writes`.
    pub fn feed<const N: usize>(self, writes: [bool; N]) -> (Feed, [Option<Chunks>; N]) {
        let mut senders = Vec::with_capacity(N);
        let chunks = writes.map(|writes| {
            writes.then(|| {
                let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
                senders.push(tx);
                Chunks { rx, ended: false }
            })
        });
        (Feed { head: self.head, rest: self.rest, senders }, chunks)
    }
}

/// Computes the rest of an output and hands every chunk to each sink.
pub struct Feed {
    head: Vec<RecordBatch>,
    rest: Option<RowStream>,
    senders: Vec<mpsc::Sender<Chunk>>,
}

impl Feed {
    /// Sends every chunk to every sink, then the end; returns the number of
    /// rows. With no sink (a replay both sinks hold) the rows are still
    /// computed and counted, for the commit log. If a sink stops reading (it
    /// failed), the feed stops too and the other sink sees no end.
    pub async fn run(self) -> Result<u64> {
        let Feed { head, rest, senders } = self;
        let mut rows = 0;
        for batch in head {
            rows += batch.num_rows() as u64;
            if !send(&senders, Chunk::Rows(batch)).await {
                return Ok(rows);
            }
        }
        if let Some(mut rest) = rest {
            while let Some(batch) = rest.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                if !send(&senders, Chunk::Rows(batch)).await {
                    return Ok(rows);
                }
            }
        }
        send(&senders, Chunk::End).await;
        Ok(rows)
    }
}

/// Whether every sink took the chunk.
async fn send(senders: &[mpsc::Sender<Chunk>], chunk: Chunk) -> bool {
    for tx in senders {
        if tx.send(chunk.clone()).await.is_err() {
            return false;
        }
    }
    true
}

#[derive(Clone)]
enum Chunk {
    Rows(RecordBatch),
    End,
}

/// One sink's view of the output: the chunks in order, then the end.
pub struct Chunks {
    rx: mpsc::Receiver<Chunk>,
    ended: bool,
}

impl Chunks {
    /// The next chunk, `None` at the end of the output, or
    /// [`Error::OutputCut`] when the output stopped before its end.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        if self.ended {
            return Ok(None);
        }
        let chunk = self.rx.recv().await;
        self.unpack(chunk)
    }

    /// [`Chunks::next`] for a sink that writes on a blocking thread.
    pub fn next_blocking(&mut self) -> Result<Option<RecordBatch>> {
        if self.ended {
            return Ok(None);
        }
        let chunk = self.rx.blocking_recv();
        self.unpack(chunk)
    }

    fn unpack(&mut self, chunk: Option<Chunk>) -> Result<Option<RecordBatch>> {
        match chunk {
            Some(Chunk::Rows(batch)) => Ok(Some(batch)),
            Some(Chunk::End) => {
                self.ended = true;
                Ok(None)
            }
            None => Err(Error::OutputCut),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(n: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1; n]))]).unwrap()
    }

    fn stream(items: Vec<Result<RecordBatch>>) -> RowStream {
        futures::stream::iter(items).boxed()
    }

    async fn drain(mut chunks: Chunks) -> Result<usize> {
        let mut n = 0;
        while let Some(batch) = chunks.next().await? {
            n += batch.num_rows();
        }
        Ok(n)
    }

    #[tokio::test]
    async fn a_small_output_is_computed_in_full_before_any_sink_starts() {
        let output = BatchOutput::start(stream(vec![Ok(rows(10)), Ok(rows(5))])).await.unwrap();
        let head_rows: usize = output.head.iter().map(RecordBatch::num_rows).sum();
        assert_eq!((head_rows, output.rest.is_none()), (15, true));
        let failing = stream(vec![Ok(rows(10)), Err(Error::Runtime("boom".into()))]);
        assert!(BatchOutput::start(failing).await.is_err(), "the error stops the batch before writing");
    }

    #[tokio::test]
    async fn every_sink_reads_every_chunk_then_the_end() {
        let items = (0..20).map(|_| Ok(rows(8_192))).collect();
        let output = BatchOutput::start(stream(items)).await.unwrap();
        assert!(output.rest.is_some(), "a large output streams");
        let (feed, [a, b]) = output.feed([true, true]);
        let (total, a, b) = tokio::join!(feed.run(), drain(a.unwrap()), drain(b.unwrap()));
        assert_eq!((total.unwrap(), a.unwrap(), b.unwrap()), (163_840, 163_840, 163_840));
    }

    #[tokio::test]
    async fn a_failure_mid_stream_cuts_every_sink_without_an_end() {
        let mut items: Vec<_> = (0..10).map(|_| Ok(rows(8_192))).collect();
        items.push(Err(Error::Runtime("division by zero".into())));
        let output = BatchOutput::start(stream(items)).await.unwrap();
        let (feed, [a, b]) = output.feed([true, true]);
        let (total, a, b) = tokio::join!(feed.run(), drain(a.unwrap()), drain(b.unwrap()));
        assert!(total.unwrap_err().to_string().contains("division by zero"));
        assert!(matches!(a, Err(Error::OutputCut)) && matches!(b, Err(Error::OutputCut)));
    }

    #[tokio::test]
    async fn a_sink_that_stops_reading_stops_the_feed_and_cuts_the_other() {
        let items = (0..20).map(|_| Ok(rows(8_192))).collect();
        let output = BatchOutput::start(stream(items)).await.unwrap();
        let (feed, [a, b]) = output.feed([true, true]);
        drop(a);
        let (total, b) = tokio::join!(feed.run(), drain(b.unwrap()));
        assert!(total.unwrap() < 163_840, "the feed stopped early");
        assert!(matches!(b, Err(Error::OutputCut)));
    }

    #[tokio::test]
    async fn without_sinks_the_rows_are_still_counted() {
        let output = BatchOutput::start(stream(vec![Ok(rows(3)), Ok(rows(4))])).await.unwrap();
        let (feed, chunks) = output.feed([false, false]);
        assert!(chunks.iter().all(Option::is_none));
        assert_eq!(feed.run().await.unwrap(), 7);
    }
}
