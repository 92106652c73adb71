//! Offset arithmetic of planning: where each partition starts and how far a
//! batch reads, capped by `--max-offsets-per-trigger`. Pure functions, so the
//! rules are unit-tested without a broker.

use std::collections::HashMap;

use crate::batch::OffsetRange;
use crate::config::StartingOffsets;

/// What the broker says about one partition right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    /// Oldest offset still stored.
    pub low: i64,
    /// Offset the next message will get.
    pub high: i64,
}

/// A partition whose next offset to read no longer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataLoss {
    pub partition: i32,
    /// Where the next batch should have started.
    pub expected: i64,
    /// The low watermark (deleted offsets) or the high one (backwards).
    pub available: i64,
    pub kind: LossKind,
}

/// How the offsets went missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossKind {
    /// Deleted (retention) before they were read.
    Deleted,
    /// The partition now ends before where it ended: the topic was deleted
    /// and recreated, or an unclean leader election lost records.
    Backwards,
}

impl DataLoss {
    /// Logs and counts the loss (`--fail-on-data-loss false`).
    pub(crate) fn report(&self, topic: &str) {
        let loss = self.to_string();
        let (partition, expected, available) = (self.partition, self.expected, self.available);
        crate::ops::events::DataLossDetected { topic, partition, expected, available, loss: &loss }.emit();
    }
}

impl std::fmt::Display for DataLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            LossKind::Deleted => write!(
                f,
                "partition {}: offsets {}..{} were deleted before they were read (retention?)",
                self.partition, self.expected, self.available
            ),
            LossKind::Backwards => write!(
                f,
                "partition {}: the next offset was {} but the partition now ends at {} (topic recreated? \
                 unclean leader election?)",
                self.partition, self.expected, self.available
            ),
        }
    }
}

/// The parts of planned `ranges` that can no longer be read (a replay after
/// retention deleted them, or after the topic was recreated), and the ranges
/// clamped to what is left.
pub(crate) fn unreadable(ranges: &[OffsetRange], watermarks: &[Watermarks]) -> (Vec<DataLoss>, Vec<OffsetRange>) {
    let mut losses = Vec::new();
    let mut left = Vec::with_capacity(ranges.len());
    for r in ranges {
        let w = watermarks.iter().find(|w| w.partition == r.partition);
        let (low, high) = w.map_or((r.end, r.end), |w| (w.low, w.high));
        if !r.is_empty() && r.start < low {
            losses.push(DataLoss {
                partition: r.partition,
                expected: r.start,
                available: low,
                kind: LossKind::Deleted,
            });
        } else if !r.is_empty() && r.end > high {
            losses.push(DataLoss {
                partition: r.partition,
                expected: r.end,
                available: high,
                kind: LossKind::Backwards,
            });
        }
        let start = r.start.max(low).min(r.end);
        left.push(OffsetRange { partition: r.partition, start, end: r.end.min(high).max(start) });
    }
    (losses, left)
}

/// Start offset per partition: the previous batch's end where there is one;
/// otherwise `--starting-offsets` for a new query, earliest for a partition
/// added later (Spark's rule). Offsets already deleted, or a partition that
/// now ends before where the last batch ended, are reported as [`DataLoss`];
/// reading then goes on from the earliest offset there is.
pub(crate) fn start_offsets(
    previous_ends: Option<&HashMap<i32, i64>>,
    starting: StartingOffsets,
    watermarks: &[Watermarks],
) -> (Vec<(i32, i64)>, Vec<DataLoss>) {
    let mut starts = Vec::with_capacity(watermarks.len());
    let mut losses = Vec::new();
    for w in watermarks {
        let start = match previous_ends {
            Some(ends) => ends.get(&w.partition).copied().unwrap_or(w.low),
            None => match starting {
                StartingOffsets::Earliest => w.low,
                StartingOffsets::Latest => w.high,
            },
        };
        let loss = if start < w.low {
            Some(DataLoss { partition: w.partition, expected: start, available: w.low, kind: LossKind::Deleted })
        } else if start > w.high {
            Some(DataLoss { partition: w.partition, expected: start, available: w.high, kind: LossKind::Backwards })
        } else {
            None
        };
        losses.extend(loss);
        starts.push((w.partition, if loss.is_some() { w.low } else { start }));
    }
    (starts, losses)
}

/// Ranges from each start to the partition's high watermark, with at most
/// `cap` offsets in total, shared in proportion to each partition's backlog
/// (as Spark's `maxOffsetsPerTrigger`). Every partition with a backlog gets
/// at least one offset, so a small cap never starves a partition (Spark's
/// rule; the total may then exceed the cap by up to one offset per
/// partition). Every partition gets a range, empty ones included.
pub(crate) fn ranges(starts: &[(i32, i64)], watermarks: &[Watermarks], cap: Option<u64>) -> Vec<OffsetRange> {
    let highs: HashMap<i32, i64> = watermarks.iter().map(|w| (w.partition, w.high)).collect();
    let mut ranges: Vec<OffsetRange> = starts
        .iter()
        .map(|&(partition, start)| {
            let high = highs.get(&partition).copied().unwrap_or(start);
            OffsetRange { partition, start, end: high.max(start) }
        })
        .collect();
    ranges.sort_by_key(|r| r.partition);
    let backlog: i64 = ranges.iter().map(OffsetRange::len).sum();
    let Some(cap) = cap.map(|c| i64::try_from(c).unwrap_or(i64::MAX)) else {
        return ranges;
    };
    if backlog <= cap {
        return ranges;
    }
    let share = |r: &OffsetRange| ((r.len() as i128 * cap as i128) / backlog as i128) as i64;
    let mut granted: Vec<i64> = ranges.iter().map(|r| share(r).max(1).min(r.len())).collect();
    // Hand out what integer division left over, one offset at a time.
    let mut left = cap - granted.iter().sum::<i64>();
    while left > 0 {
        for (g, r) in granted.iter_mut().zip(&ranges) {
            if left > 0 && *g < r.len() {
                *g += 1;
                left -= 1;
            }
        }
    }
    for (r, g) in ranges.iter_mut().zip(granted) {
        r.end = r.start + g;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(partition: i32, low: i64, high: i64) -> Watermarks {
        Watermarks { partition, low, high }
    }

    #[test]
    fn a_replay_finds_deleted_or_vanished_offsets_and_what_is_left() {
        let r = |partition, start, end| OffsetRange { partition, start, end };
        let planned = [r(0, 5, 10), r(1, 3, 8), r(2, 4, 4), r(3, 0, 6)];
        let (losses, left) = unreadable(&planned, &[w(0, 7, 20), w(1, 0, 5), w(2, 9, 9), w(3, 0, 6)]);
        let kinds: Vec<_> = losses.iter().map(|l| (l.partition, l.kind, l.available)).collect();
        assert_eq!(kinds, vec![(0, LossKind::Deleted, 7), (1, LossKind::Backwards, 5)], "an empty range loses nothing");
        assert_eq!(left, vec![r(0, 7, 10), r(1, 3, 5), r(2, 4, 4), r(3, 0, 6)]);
    }

    #[test]
    fn new_query_starts_at_earliest_or_latest() {
        let marks = [w(0, 2, 10), w(1, 0, 4)];
        let (starts, _) = start_offsets(None, StartingOffsets::Earliest, &marks);
        assert_eq!(starts, vec![(0, 2), (1, 0)]);
        let (starts, _) = start_offsets(None, StartingOffsets::Latest, &marks);
        assert_eq!(starts, vec![(0, 10), (1, 4)]);
    }

    #[test]
    fn resumed_query_continues_and_new_partitions_start_at_earliest() {
        let ends = HashMap::from([(0, 7)]);
        let (starts, losses) = start_offsets(Some(&ends), StartingOffsets::Latest, &[w(0, 0, 10), w(1, 3, 5)]);
        assert_eq!(starts, vec![(0, 7), (1, 3)]);
        assert!(losses.is_empty());
    }

    #[test]
    fn deleted_offsets_are_reported_as_data_loss() {
        let ends = HashMap::from([(0, 2)]);
        let (starts, losses) = start_offsets(Some(&ends), StartingOffsets::Latest, &[w(0, 5, 9)]);
        assert_eq!(starts, vec![(0, 5)]);
        assert_eq!(losses, vec![DataLoss { partition: 0, expected: 2, available: 5, kind: LossKind::Deleted }]);
    }

    #[test]
    fn a_partition_that_went_backwards_is_data_loss_and_restarts_at_earliest() {
        let ends = HashMap::from([(0, 7)]);
        let (starts, losses) = start_offsets(Some(&ends), StartingOffsets::Latest, &[w(0, 0, 3)]);
        assert_eq!(starts, vec![(0, 0)]);
        assert_eq!(losses, vec![DataLoss { partition: 0, expected: 7, available: 3, kind: LossKind::Backwards }]);
    }

    #[test]
    fn uncapped_ranges_read_to_the_high_watermark() {
        let r = ranges(&[(1, 3), (0, 0)], &[w(0, 0, 5), w(1, 0, 3)], None);
        assert_eq!(
            r,
            vec![OffsetRange { partition: 0, start: 0, end: 5 }, OffsetRange { partition: 1, start: 3, end: 3 },]
        );
    }

    #[test]
    fn cap_is_shared_in_proportion_to_backlog() {
        let r = ranges(&[(0, 0), (1, 0), (2, 0)], &[w(0, 0, 90), w(1, 0, 10), w(2, 0, 0)], Some(10));
        let lens: Vec<i64> = r.iter().map(OffsetRange::len).collect();
        assert_eq!(lens, vec![9, 1, 0]);
        let r = ranges(&[(0, 0), (1, 0)], &[w(0, 0, 100), w(1, 0, 100)], Some(11));
        assert_eq!(r.iter().map(OffsetRange::len).sum::<i64>(), 11);
    }

    #[test]
    fn a_small_cap_never_starves_a_partition() {
        let marks = [w(0, 0, 1000), w(1, 0, 5), w(2, 0, 5), w(3, 0, 0)];
        let mut starts = vec![(0, 0), (1, 0), (2, 0), (3, 0)];
        for _ in 0..3 {
            let r = ranges(&starts, &marks, Some(2));
            let lens: Vec<i64> = r.iter().map(OffsetRange::len).collect();
            assert_eq!(lens, vec![1, 1, 1, 0], "every partition with a backlog moves");
            starts = r.iter().map(|r| (r.partition, r.end)).collect();
        }
    }
}
