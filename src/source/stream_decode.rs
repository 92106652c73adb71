//! Decoding a batch while it is read: messages are validated and decoded in
//! small chunks per partition as they arrive, so a batch's raw bytes are
//! never all held at once (a 100k-campaign batch is about 33 MB of JSON;
//! decoded, about half of that).
//!
//! The broker interleaves partitions, so each partition decodes on its own
//! and the chunks are joined in (partition, offset) order at the end: the
//! same batch, and the same refused messages, as decoding the whole batch
//! at once ([`super::decode::decode`]). All partitions together keep about
//! [`PENDING_MESSAGES`] messages undecoded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::decode::{decode_chunks, Chunks, Decoded, RawBatch};
use super::input::Input;
use crate::config::Limits;
use crate::error::Result;

/// Messages kept undecoded across all partitions: one chunk of the decoder.
const PENDING_MESSAGES: usize = 8192;

/// The smallest per-partition chunk; below it the decoder's fixed cost shows.
const MIN_CHUNK: usize = 256;

/// A batch being decoded as its messages arrive.
pub(crate) struct StreamDecoder {
    input: Arc<Input>,
    limits: Limits,
    chunk: usize,
    parts: BTreeMap<i32, Part>,
    messages: u64,
    busy: Duration,
    failed: Option<crate::error::Error>,
}

/// One partition: its decoded chunks and the messages not yet decoded.
#[derive(Default)]
struct Part {
    pending: RawBatch,
    done: Vec<Chunks>,
    /// The newest message timestamp read (epoch ms).
    newest: Option<i64>,
}

/// A decoded batch and what reading it cost.
#[derive(Debug)]
pub struct ReadBatch {
    pub decoded: Decoded,
    /// Messages read (accepted and refused).
    pub messages: u64,
    /// Time spent validating and decoding (the rest was waiting for the broker).
    pub decode_time: Duration,
    /// Per partition, the newest message timestamp read (epoch ms): how old
    /// the data is that the batch brought the partition up to.
    pub newest_timestamps: BTreeMap<i32, i64>,
}

impl StreamDecoder {
    /// A decoder for a batch read from `partitions` partitions at once.
    pub(crate) fn new(input: Arc<Input>, limits: Limits, partitions: usize) -> Self {
        let chunk = (PENDING_MESSAGES / partitions.max(1)).max(MIN_CHUNK);
        StreamDecoder { input, limits, chunk, parts: BTreeMap::new(), messages: 0, busy: Duration::ZERO, failed: None }
    }

    /// Takes one message (its timestamp, epoch ms, if it has one); its
    /// partition's messages must come in offset order.
    pub(crate) fn push(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
    ) {
        self.messages += 1;
        let part = self.parts.entry(partition).or_default();
        part.newest = part.newest.max(timestamp_ms);
        part.pending.push(partition, offset, key, value);
        if part.pending.len() >= self.chunk {
            self.flush(partition);
        }
    }

    /// Takes a partition's messages read earlier (read ahead), which come
    /// before any later [`push`](Self::push) of that partition.
    pub(crate) fn push_read(&mut self, partition: i32, raw: RawBatch) {
        self.messages += raw.len() as u64;
        let part = self.parts.entry(partition).or_default();
        part.newest = part.newest.max(raw.newest_timestamp_ms());
        self.flush(partition);
        let started = Instant::now();
        let decoded = decode_chunks(&raw, &self.input, &self.limits);
        drop(raw);
        self.keep(partition, decoded, started);
    }

    /// The decoded batch: every partition's chunks joined in partition order.
    pub(crate) fn finish(mut self) -> Result<ReadBatch> {
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        for partition in partitions {
            self.flush(partition);
        }
        if let Some(e) = self.failed {
            return Err(e);
        }
        let started = Instant::now();
        let parts = std::mem::take(&mut self.parts);
        let newest_timestamps = parts.iter().filter_map(|(p, part)| Some((*p, part.newest?))).collect();
        let decoded = Chunks::concat(parts.into_values().flat_map(|part| part.done)).join(&self.input.schema())?;
        let decode_time = self.busy + started.elapsed();
        Ok(ReadBatch { decoded, messages: self.messages, decode_time, newest_timestamps })
    }

    /// Decodes what `partition` holds undecoded.
    fn flush(&mut self, partition: i32) {
        let Some(part) = self.parts.get_mut(&partition).filter(|p| !p.pending.is_empty()) else {
            return;
        };
        let started = Instant::now();
        let decoded = decode_chunks(&part.pending, &self.input, &self.limits);
        part.pending.clear();
        self.keep(partition, decoded, started);
    }

    fn keep(&mut self, partition: i32, decoded: Result<Chunks>, started: Instant) {
        match decoded {
            Ok(chunks) => self.parts.entry(partition).or_default().done.push(chunks),
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
        self.busy += started.elapsed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::decode::decode;

    fn campaign(i: usize) -> String {
        format!(
            r#"{{"restaurant_id": "r{}","adv_campaign_id": "c{i}","adv_campaign_content": "x","adv_campaign_owner": "o","adv_campaign_owner_contact": "e","adv_campaign_datetime_start": 1,"adv_campaign_datetime_end": 2,"datetime_created": 1}}"#,
            i % 7
        )
    }

    /// Messages of 3 partitions, every fifth one refused, arriving
    /// interleaved as the broker sends them.
    fn interleaved(n: usize) -> Vec<(i32, i64, Option<Vec<u8>>)> {
        (0..n)
            .map(|i| {
                let value = if i % 5 == 3 { "{broken".to_string() } else { campaign(i) };
                ((i % 3) as i32, (i / 3) as i64, Some(value.into_bytes()))
            })
            .collect()
    }

    fn in_order(messages: &[(i32, i64, Option<Vec<u8>>)]) -> RawBatch {
        let mut sorted: Vec<_> = messages.iter().collect();
        sorted.sort_by_key(|m| (m.0, m.1));
        let mut raw = RawBatch::default();
        for (p, o, v) in sorted {
            raw.push(*p, *o, Some(b"k".as_slice()), v.as_deref());
        }
        raw
    }

    #[test]
    fn decoding_as_messages_arrive_equals_decoding_the_whole_batch() {
        let messages = interleaved(3 * MIN_CHUNK * 2 + 17);
        let whole = decode(&in_order(&messages), &Input::seed().unwrap(), &Limits::default()).unwrap();
        let mut decoder = StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 3);
        for (p, o, v) in &messages {
            decoder.push(*p, *o, Some(b"k".as_slice()), v.as_deref(), None);
        }
        let read = decoder.finish().unwrap();
        assert_eq!(read.messages, messages.len() as u64);
        assert_eq!(read.decoded.batch, whole.batch, "rows in (partition, offset) order");
        assert_eq!(read.decoded.bad, whole.bad);
        assert!(!read.decoded.bad.is_empty() && read.decoded.batch.num_rows() > 2 * MIN_CHUNK);
    }

    #[test]
    fn messages_read_ahead_come_before_the_rest_of_their_partition() {
        let messages = interleaved(40);
        let whole = decode(&in_order(&messages), &Input::seed().unwrap(), &Limits::default()).unwrap();
        let (ahead, rest): (Vec<_>, Vec<_>) = messages.iter().cloned().partition(|m| m.0 == 1 && m.1 < 6);
        let mut decoder = StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 3);
        decoder.push_read(1, in_order(&ahead));
        for (p, o, v) in &rest {
            decoder.push(*p, *o, Some(b"k".as_slice()), v.as_deref(), None);
        }
        let read = decoder.finish().unwrap();
        assert_eq!((read.decoded.batch, read.decoded.bad), (whole.batch, whole.bad));
        assert_eq!(read.messages, 40);
    }

    #[test]
    fn the_newest_timestamp_of_each_partition_is_kept_read_ahead_included() {
        let mut ahead = RawBatch::default();
        ahead.note_timestamp(Some(900));
        ahead.push(1, 0, None, Some(b"x".as_slice()));
        let mut decoder = StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 3);
        decoder.push_read(1, ahead);
        decoder.push(0, 0, None, Some(b"x".as_slice()), Some(500));
        decoder.push(0, 1, None, Some(b"x".as_slice()), Some(400));
        decoder.push(2, 0, None, Some(b"x".as_slice()), None);
        let read = decoder.finish().unwrap();
        assert_eq!(read.newest_timestamps, BTreeMap::from([(0, 500), (1, 900)]));
    }

    #[test]
    fn no_messages_decode_to_no_rows() {
        let read =
            StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 4).finish().unwrap();
        assert_eq!((read.decoded.batch.num_rows(), read.messages), (0, 0));
    }

    #[test]
    fn each_partition_holds_a_share_of_the_pending_messages() {
        assert_eq!(
            StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 1).chunk,
            PENDING_MESSAGES
        );
        assert_eq!(StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 16).chunk, 512);
        assert_eq!(
            StreamDecoder::new(std::sync::Arc::new(Input::seed().unwrap()), Limits::default(), 1000).chunk,
            MIN_CHUNK
        );
    }
}
