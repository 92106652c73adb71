//! Reading ahead: while a batch is transformed and written, the messages
//! after its end are read, so the next batch finds its input (or the start
//! of it) already in memory instead of waiting for the broker.
//!
//! The next batch's plan still decides what is read: a partition's messages
//! read ahead serve a planned range only if the range starts where the
//! read-ahead started and ends at or after where it ended (the rest is read
//! as usual); anything else is dropped and read again. Only offsets below the
//! last stable offset are read ahead (what a `read_committed` reader can
//! decide for good), so they are the bytes a fresh read returns and a replay
//! stays identical. At most as many offsets per partition as the batch
//! being written had are read ahead, so at most two batches' input is held.

use std::collections::BTreeMap;

use super::decode::RawBatch;
use super::stream_decode::{ReadBatch, StreamDecoder};
use super::KafkaSource;
use crate::batch::{BatchPlan, OffsetRange};
use crate::config::Limits;
use crate::error::Result;
use crate::util::blocking;

/// Messages read ahead, per partition, with the offsets they cover.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    parts: BTreeMap<i32, (OffsetRange, RawBatch)>,
}

impl ReadAhead {
    /// Number of messages held.
    pub(crate) fn len(&self) -> usize {
        self.parts.values().map(|(_, raw)| raw.len()).sum()
    }

    /// Messages read for these ranges (each keyed by its partition).
    pub(super) fn from_parts(parts: BTreeMap<i32, (OffsetRange, RawBatch)>) -> Self {
        ReadAhead { parts }
    }

    /// Splits `ranges` into what this read-ahead serves (per partition, in
    /// partition order) and the ranges still to read from the broker.
    pub(super) fn serve(mut self, ranges: &[OffsetRange]) -> (BTreeMap<i32, RawBatch>, Vec<OffsetRange>) {
        let (mut served, mut to_read) = (BTreeMap::new(), Vec::new());
        for range in ranges.iter().filter(|r| !r.is_empty()) {
            match self.parts.remove(&range.partition) {
                Some((ahead, raw)) if ahead.start == range.start && ahead.end <= range.end => {
                    served.insert(range.partition, raw);
                    to_read.push(OffsetRange { start: ahead.end, ..*range });
                }
                _ => to_read.push(*range),
            }
        }
        (served, to_read.into_iter().filter(|r| !r.is_empty()).collect())
    }
}

impl KafkaSource {
    /// Reads ahead from `plan`'s end offsets: per partition up to the last
    /// stable offset, at most as many offsets as `plan` read there, and at
    /// most `budget` bytes in all ([`super::budget`]).
    pub(crate) async fn read_ahead(&self, plan: &BatchPlan, budget: Option<u64>) -> Result<ReadAhead> {
        let (this, ranges) = (self.clone(), plan.ranges.clone());
        blocking(move || {
            let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
            let stable = this.list_offsets(&partitions, rdkafka::Offset::End)?;
            let ahead: Vec<OffsetRange> = ranges
                .iter()
                .map(|r| {
                    let end = stable.get(&r.partition).copied().unwrap_or(r.end).min(r.end + r.len().max(1));
                    OffsetRange { partition: r.partition, start: r.end, end: end.max(r.end) }
                })
                .filter(|r| !r.is_empty())
                .collect();
            if let Some(budget) = budget {
                return Ok(this.read_within_blocking(ahead, None, budget)?.1);
            }
            let mut read = this.read_partitions(&ahead)?;
            let parts =
                ahead.into_iter().map(|r| (r.partition, (r, read.remove(&r.partition).unwrap_or_default()))).collect();
            Ok(ReadAhead { parts })
        })
        .await
    }

    /// Reads exactly the ranges of `plan`, decoded as they arrive, taking
    /// what `ahead` holds of them first.
    /// Beyond `budget` bytes read from the broker, the read stops and fails
    /// (a replay of a plan larger than the budget: [`super::budget`]).
    pub(crate) async fn read_with(
        &self,
        plan: &BatchPlan,
        ahead: Option<ReadAhead>,
        limits: Limits,
        budget: Option<u64>,
    ) -> Result<ReadBatch> {
        let (served, to_read) = match ahead {
            Some(ahead) => ahead.serve(&plan.ranges),
            None => (BTreeMap::new(), plan.ranges.clone()),
        };
        let partitions = plan.ranges.iter().filter(|r| !r.is_empty()).count();
        let (this, batch_id) = (self.clone(), plan.batch_id);
        blocking(move || {
            let mut decoder = StreamDecoder::new(this.input.clone(), limits, partitions);
            for (partition, raw) in served {
                decoder.push_read(partition, raw);
            }
            if let Some(read) = this.read_into(&to_read, &mut decoder, budget)? {
                return Err(super::budget::over_budget(batch_id, read, budget.unwrap_or(0)));
            }
            decoder.finish()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    use super::*;
    use crate::config::KafkaConfig;

    fn range(partition: i32, start: i64, end: i64) -> OffsetRange {
        OffsetRange { partition, start, end }
    }

    fn ahead(parts: &[(i32, i64, i64)]) -> ReadAhead {
        let parts = parts
            .iter()
            .map(|&(p, start, end)| {
                let mut raw = RawBatch::default();
                for offset in start..end {
                    raw.push(p, offset, None, Some(b"m".as_slice()));
                }
                (p, (range(p, start, end), raw))
            })
            .collect();
        ReadAhead { parts }
    }

    #[test]
    fn a_range_that_starts_where_the_read_ahead_did_takes_it_and_reads_the_rest() {
        let (served, to_read) = ahead(&[(0, 10, 15), (1, 20, 22)]).serve(&[range(0, 10, 18), range(1, 20, 22)]);
        assert_eq!(served.values().map(RawBatch::len).collect::<Vec<_>>(), vec![5, 2]);
        assert_eq!(to_read, vec![range(0, 15, 18)], "partition 1 is served whole");
    }

    #[test]
    fn a_read_ahead_that_does_not_fit_the_plan_is_dropped() {
        let plan = [range(0, 11, 18), range(1, 20, 21), range(2, 0, 4)];
        let (served, to_read) = ahead(&[(0, 10, 15), (1, 20, 22)]).serve(&plan);
        assert!(served.is_empty(), "another start, or past the planned end: read again");
        assert_eq!(to_read, plan.to_vec());
    }

    fn plan(ranges: &[(i32, i64, i64)]) -> BatchPlan {
        BatchPlan {
            batch_id: 0,
            batch_timestamp_ms: 0,
            topic: "in".into(),
            ranges: ranges.iter().map(|&(p, start, end)| range(p, start, end)).collect(),
            subscribers_snapshot: String::new(),
            sql_fingerprint: None,
            job_fingerprint: None,
            hold_future_campaigns: false,
            subscribers_version: None,
            lookups: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_batch_gets_what_was_read_ahead_plus_the_rest_in_order() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("in", 2, 1).unwrap();
        let producer: ThreadedProducer<DefaultProducerContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        for i in 0..20 {
            let value = format!("m{i}");
            producer.send(BaseRecord::<(), str>::to("in").partition(i % 2).payload(&value)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let config = KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            marker_topic: "markers".into(),
            options: Vec::new(),
            timeout: Duration::from_secs(10),
        };
        let source =
            KafkaSource::try_new(&config, "q", std::sync::Arc::new(crate::source::input::Input::seed().unwrap()))
                .unwrap();
        let first = plan(&[(0, 0, 3), (1, 0, 4)]);
        let ahead = source.read_ahead(&first, None).await.unwrap();
        assert_eq!(ahead.len(), 3 + 4, "as many offsets as the batch had, per partition");
        let next = plan(&[(0, 3, 10), (1, 4, 10)]);
        let served = source.read_with(&next, Some(ahead), Limits::default(), None).await.unwrap();
        let fresh = source.read(&next, Limits::default()).await.unwrap();
        // The values are not campaigns: every one is refused, kept whole.
        let values = |read: &ReadBatch| -> Vec<(i32, i64, Option<Vec<u8>>)> {
            read.decoded.bad.iter().map(|m| (m.partition, m.offset, m.value.clone())).collect()
        };
        assert_eq!(values(&served), values(&fresh), "the same messages as a fresh read, in order");
        assert_eq!((served.messages, values(&served).len()), (7 + 6, 7 + 6));
        assert_eq!(values(&served)[0], (0, 3, Some(b"m6".to_vec())));
    }
}
