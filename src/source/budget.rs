//! The byte budget of a batch (`--max-bytes-per-trigger`), applied when a
//! new batch is planned: its ranges (already capped by offsets) are read,
//! each partition until its share of the budget is spent, and cut there
//! before the plan is written ahead. The messages read serve the batch's
//! read step, so nothing is read twice. Shares follow the ranges' lengths,
//! and every partition keeps at least its first message, so a batch always
//! moves on, even past a message larger than the budget.
//!
//! The read-ahead ([`super::read_ahead`]) is held to the same budget. A
//! replay reads its pinned ranges whatever they hold, but stops (and fails,
//! saying so) once they exceed the budget: a plan cannot shrink.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;

use rdkafka::message::Message;

use super::decode::RawBatch;
use super::read_ahead::ReadAhead;
use super::KafkaSource;
use crate::batch::OffsetRange;
use crate::error::{Error, Result};
use crate::util::blocking;

/// Each non-empty range's share of `budget` bytes, in proportion to its
/// length (at least 1).
pub(crate) fn shares(ranges: &[OffsetRange], budget: u64) -> BTreeMap<i32, u64> {
    let total: u128 = ranges.iter().map(|r| r.len() as u128).sum();
    ranges
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| (r.partition, ((budget as u128 * r.len() as u128) / total.max(1)).max(1) as u64))
        .collect()
}

/// Keeps the first messages of `raw` whose keys and values fit in `share`
/// bytes (at least one); returns the offset of the first one dropped.
pub(crate) fn cut(raw: &mut RawBatch, share: u64) -> Option<i64> {
    let mut total = 0u64;
    let mut cut_at = None;
    for (i, (_, offset, key, value)) in raw.messages().enumerate() {
        total += (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)) as u64;
        if i > 0 && total > share {
            cut_at = Some((i, offset));
            break;
        }
    }
    let (keep, offset) = cut_at?;
    raw.truncate(keep);
    Some(offset)
}

/// A replayed plan read more than `budget` bytes (`read` when it stopped).
pub(crate) fn over_budget(batch_id: u64, read: u64, budget: u64) -> Error {
    Error::config(
        "--max-bytes-per-trigger",
        format!(
            "batch {batch_id}, planned before this run (offsets/{batch_id}), holds more than the budget of {}: \
             {read} bytes were read when the read stopped. A planned batch cannot shrink (part of it may be written \
             already): start once with a larger --max-bytes-per-trigger (or unlimited) so it finishes, then go back \
             to this one",
            crate::config::size(budget)
        ),
    )
}

impl KafkaSource {
    /// Reads `ranges` (taking what `ahead` holds of them first), each
    /// partition until its share of `budget` is spent; returns the ranges
    /// cut where it was, and their messages, to serve the read step.
    pub(crate) async fn read_within(
        &self,
        ranges: Vec<OffsetRange>,
        ahead: Option<ReadAhead>,
        budget: u64,
    ) -> Result<(Vec<OffsetRange>, ReadAhead)> {
        let this = self.clone();
        blocking(move || this.read_within_blocking(ranges, ahead, budget)).await
    }

    pub(super) fn read_within_blocking(
        &self,
        ranges: Vec<OffsetRange>,
        ahead: Option<ReadAhead>,
        budget: u64,
    ) -> Result<(Vec<OffsetRange>, ReadAhead)> {
        let shares = shares(&ranges, budget);
        let (mut read, to_read) = match ahead {
            Some(ahead) => ahead.serve(&ranges),
            None => (BTreeMap::new(), ranges.clone()),
        };
        let mut ends: BTreeMap<i32, i64> = ranges.iter().map(|r| (r.partition, r.end)).collect();
        let mut spent = HashSet::new();
        for (partition, raw) in read.iter_mut() {
            if let Some(end) = cut(raw, shares.get(partition).copied().unwrap_or(1)) {
                ends.insert(*partition, end);
                spent.insert(*partition);
            }
        }
        let to_read: Vec<OffsetRange> = to_read.into_iter().filter(|r| !spent.contains(&r.partition)).collect();
        let mut used: BTreeMap<i32, u64> = read.iter().map(|(p, raw)| (*p, raw.byte_len() as u64)).collect();
        crate::kafka::read_ranges_while(&self.consumer, &self.topic, &to_read, self.timeout, |message| {
            let (partition, offset) = (message.partition(), message.offset());
            let size = (message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)) as u64;
            let raw = read.entry(partition).or_default();
            let used = used.entry(partition).or_default();
            if !raw.is_empty() && *used + size > shares.get(&partition).copied().unwrap_or(1) {
                ends.insert(partition, offset);
                return ControlFlow::Break(());
            }
            *used += size;
            raw.note_timestamp(message.timestamp().to_millis());
            raw.push(partition, offset, message.key(), message.payload());
            ControlFlow::Continue(())
        })?;
        let cut: Vec<OffsetRange> = ranges
            .iter()
            .map(|r| OffsetRange { end: ends.get(&r.partition).copied().unwrap_or(r.end), ..*r })
            .collect();
        let parts = cut
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| (r.partition, (*r, read.remove(&r.partition).unwrap_or_default())))
            .collect();
        Ok((cut, ReadAhead::from_parts(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(partition: i32, start: i64, end: i64) -> OffsetRange {
        OffsetRange { partition, start, end }
    }

    #[test]
    fn shares_follow_the_ranges_lengths_and_are_never_zero() {
        let s = shares(&[range(0, 0, 30), range(1, 5, 15), range(2, 7, 7)], 400);
        assert_eq!(s, BTreeMap::from([(0, 300), (1, 100)]));
        assert_eq!(shares(&[range(0, 0, 1_000_000), range(1, 0, 1)], 10)[&1], 1);
    }

    #[test]
    fn a_cut_keeps_what_fits_and_always_the_first_message() {
        let mut raw = RawBatch::default();
        for offset in 10..15 {
            raw.push(0, offset, Some(b"k"), Some(&[b'v'; 99]));
        }
        assert_eq!(cut(&mut raw, 250), Some(12));
        assert_eq!((raw.len(), raw.byte_len()), (2, 200));
        assert_eq!(cut(&mut raw, 250), None);
        assert_eq!(cut(&mut raw, 1), Some(11));
        assert_eq!(raw.len(), 1, "the first message stays, however large");
    }
}
