//! `sparklet checkpoint rewind`: the query goes back to an earlier point of
//! its input by a new batch, committed without running, that reads nothing
//! and ends where the next batch must start (Spark users delete files from
//! `offsets/` and `commits/` for this; here history stays). The held
//! campaigns go back with it: the new batch's state is the one before the
//! batch it rewinds to (with a time and held campaigns, every partition
//! starts at that one batch's start).

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::batch::{epoch_ms, BatchId, BatchPlan, OffsetRange};
use crate::checkpoint::{BatchCommit, CheckpointStore};
use crate::cli::{ClusterArgs, RewindArgs};
use crate::error::{Error, Result};
use crate::shard::Shard;

use super::refuse;

pub(super) async fn run(args: &RewindArgs) -> Result<String> {
    let (store, shard) = super::open_shard(&args.dir)?;
    let dir = store.dir();
    let last = last_committed(&store)?;
    let (mut starts, mut how) = match (args.to_batch, &args.to_time) {
        (Some(batch), _) => (batch_starts(&store, &last, batch)?, format!("the start of batch {batch}")),
        (None, Some(time)) => {
            (time_starts(&last, &shard, time, &args.cluster).await?, format!("the first messages at or after {time}"))
        }
        (None, None) => return Err(Error::config("--to-batch", "give --to-batch or --to-time")),
    };
    let ends: BTreeMap<i32, i64> = last.end_offsets().into_iter().collect();
    if let Some((p, o)) = starts.iter().find(|(p, o)| ends.get(p).is_some_and(|end| *o > end)) {
        let why = format!(
            "partition {p} would start at {o}, after where the query stands ({}): a rewind never skips input",
            ends[p]
        );
        return Err(refuse(dir, why));
    }
    let again = first_batch_reading(&store, &starts)?;
    // The held campaigns are kept per batch: with any held, a rewind to a
    // time starts every partition at one batch's start, whose state it
    // restores (partitions rewound to different batches could leave a
    // campaign neither held nor read again).
    let state_before = match (args.to_batch, again) {
        (Some(batch), _) => batch,
        (None, Some(first)) if !store.batch_ids("state")?.is_empty() => {
            starts = batch_starts(&store, &last, first)?;
            how = format!(
                "{how}, aligned to the start of batch {first} (campaigns are held, and their state is per batch)"
            );
            first
        }
        (None, Some(first)) => first,
        (None, None) => last.batch_id + 1,
    };
    let rewound = commit_rewind(&store, &last, &starts, state_before, &how)?;
    let again = match again {
        Some(first) => format!("batch {first} and every later batch are read again"),
        None => "nothing is read again".to_string(),
    };
    Ok(format!(
        "batch {} committed: the next run starts at {how} ({}); {again}\n",
        rewound.batch_id,
        starts.iter().map(|(p, o)| format!("{}[{p}] {o}", last.topic)).collect::<Vec<_>>().join(", ")
    ))
}

/// The last committed batch; refused while a batch is pending.
fn last_committed(store: &CheckpointStore) -> Result<BatchPlan> {
    let (dir, resume) = (store.dir(), store.resume()?);
    if let Some(p) = &resume.pending {
        let why = format!(
            "batch {} is not committed: run the query until it is (e.g. --trigger available-now), then rewind",
            p.batch_id
        );
        return Err(refuse(dir, why));
    }
    resume.last_committed.ok_or_else(|| refuse(dir, "no batch is committed yet: nothing to rewind".into()))
}

/// Writes the rewind: a batch after `last` that reads nothing and ends at
/// `starts`, with the state held before batch `state_before`, committed.
fn commit_rewind(
    store: &CheckpointStore,
    last: &BatchPlan,
    starts: &BTreeMap<i32, i64>,
    state_before: BatchId,
    how: &str,
) -> Result<BatchPlan> {
    let rewound = BatchPlan {
        batch_id: last.batch_id + 1,
        batch_timestamp_ms: epoch_ms(),
        ranges: starts.iter().map(|(&partition, &at)| OffsetRange { partition, start: at, end: at }).collect(),
        ..last.clone()
    };
    store.write_offsets(&rewound)?;
    let held = store.read_state_before(state_before)?;
    let held_now = store.read_state_before(rewound.batch_id)?;
    let rows = |h: &Option<arrow::array::RecordBatch>| h.as_ref().map_or(0, |h| h.num_rows());
    if rows(&held) + rows(&held_now) > 0 {
        // Nothing was held then: an empty state of the same columns.
        let state = match (held, held_now) {
            (Some(held), _) => Some(held),
            (None, now) => now.map(|now| arrow::array::RecordBatch::new_empty(now.schema())),
        };
        if let Some(state) = state {
            store.write_state(rewound.batch_id, &state)?;
        }
    }
    let note = Some(format!("rewind to {how}"));
    let commit = BatchCommit { batch_id: rewound.batch_id, committed_at_ms: epoch_ms(), num_output_rows: 0, note };
    store.write_commit(&commit)?;
    Ok(rewound)
}

/// Each partition's start in batch `batch` (a partition it did not read
/// yet starts where the oldest kept batch that reads it does).
fn batch_starts(store: &CheckpointStore, last: &BatchPlan, batch: BatchId) -> Result<BTreeMap<i32, i64>> {
    let dir = store.dir();
    if batch > last.batch_id || store.read_commit(batch)?.is_none() {
        return Err(refuse(dir, format!("batch {batch} is not a committed batch of this checkpoint")));
    }
    let target = store.read_offsets(batch)?;
    let mut starts: BTreeMap<i32, i64> = target.ranges.iter().map(|r| (r.partition, r.start)).collect();
    for id in batch..=last.batch_id {
        for r in store.read_offsets(id)?.ranges {
            starts.entry(r.partition).or_insert(r.start);
        }
    }
    Ok(starts)
}

/// Each partition's first offset at or after `time` (the end for one with
/// nothing that new), from the broker.
async fn time_starts(last: &BatchPlan, shard: &Shard, time: &str, cluster: &ClusterArgs) -> Result<BTreeMap<i32, i64>> {
    let at = humantime::parse_rfc3339_weak(time).map_err(|e| {
        Error::config("--to-time", format!("'{time}' is not an RFC 3339 time (e.g. 2026-11-24T09:00:00Z): {e}"))
    })?;
    let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (client, timeout) = super::kafka_client(cluster, "--to-time asks the broker")?;
    let (topic, shard) = (last.topic.clone(), *shard);
    crate::util::blocking(move || {
        let consumer: BaseConsumer = client.create().map_err(|e| Error::kafka("creating the offsets client", e))?;
        let partitions = crate::kafka::topic_partitions(&consumer, &topic, timeout)?;
        let mut wanted = TopicPartitionList::new();
        for p in partitions.iter().filter(|p| shard.owns(**p)) {
            wanted
                .add_partition_offset(&topic, *p, Offset::Offset(ms))
                .map_err(|e| Error::kafka("building the request", e))?;
        }
        let found = consumer
            .offsets_for_times(wanted, timeout)
            .map_err(|e| Error::kafka(format!("offsets for {} in '{topic}'", time_of(ms)), e))?;
        let mut starts = BTreeMap::new();
        for e in found.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => {
                    consumer
                        .fetch_watermarks(&topic, e.partition(), timeout)
                        .map_err(|e| Error::kafka("reading watermarks", e))?
                        .1
                }
            };
            starts.insert(e.partition(), offset);
        }
        Ok(starts)
    })
    .await
}

fn time_of(ms: i64) -> String {
    crate::util::time::rfc3339_ms(ms)
}

/// The oldest kept batch that read past `starts` in some partition: the
/// first one the rewind makes read again.
fn first_batch_reading(store: &CheckpointStore, starts: &BTreeMap<i32, i64>) -> Result<Option<BatchId>> {
    let mut ids = store.batch_ids("offsets")?;
    ids.sort_unstable();
    for id in ids {
        let plan = store.read_offsets(id)?;
        if plan.ranges.iter().any(|r| starts.get(&r.partition).is_some_and(|s| r.end > *s)) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}
