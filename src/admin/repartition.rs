//! `sparklet checkpoint repartition --shards S2`: a stopped query's shard
//! count changed. Every old shard must stand at a committed batch (a
//! graceful stop leaves it so). Each new shard starts with one committed
//! batch that reads nothing and ends where the old shards' last committed
//! batches ended for its partitions, with an id after every old batch: its
//! sink key's markers (which an old shard of the same number may have
//! written) are then all older than anything it writes. The retired
//! shards' Kafka transactional ids are settled first: `init_transactions`
//! on each aborts whatever a crashed run of theirs left open, so the new
//! shards' readers are not held behind it. The old layout is kept under
//! `retired/`.

use std::collections::{BTreeMap, HashSet};

use rdkafka::producer::{BaseProducer, Producer};

use crate::batch::{epoch_ms, BatchPlan, OffsetRange};
use crate::checkpoint::layout::Layout;
use crate::checkpoint::{BatchCommit, CheckpointStore};
use crate::cli::{ClusterArgs, RepartitionArgs};
use crate::error::{Error, Result};
use crate::shard::Shard;

use super::stopped_at;

pub(super) async fn run(args: &RepartitionArgs) -> Result<String> {
    let root = &super::root_of(&args.checkpoint_dir)?;
    let to = args.shards;
    if to == 0 {
        return Err(Error::config("--shards", "must be at least 1, got 0"));
    }
    let layout = Layout::open_existing(root)?;
    if to == layout.count() {
        return Ok(format!("the query in {root} has {to} shard(s) already; nothing changed\n"));
    }
    let stores = layout.open_all()?;
    let _layout = layout.lock_root()?;
    let (ends, last) = where_shards_stopped(&stores)?;
    let query_id = layout.query_id().to_string();
    let new_shard = |id| Shard { id, count: to, sharded_layout: true };
    let keep: HashSet<String> = (0..to).map(|id| new_shard(id).sink_key(&query_id)).collect();
    let retired: Vec<String> =
        (0..layout.count()).map(|id| layout.shard(id).sink_key(&query_id)).filter(|k| !keep.contains(k)).collect();
    settle_transactions(&retired, &args.cluster).await?;
    layout.building_dir()?;
    let first_id = last.as_ref().map_or(0, |p| p.batch_id + 1);
    for id in 0..to {
        let shard = new_shard(id);
        let store = layout.building_shard(id, &query_id)?;
        let mine: BTreeMap<i32, i64> = ends.iter().filter(|(p, _)| shard.owns(**p)).map(|(p, o)| (*p, *o)).collect();
        start_shard(&store, &mine, last.as_ref(), first_id, layout.count(), to)?;
    }
    let old = layout.swap_in(to)?;
    drop(stores);
    Ok(format!(
        "query {query_id}: {} shard(s) -> {to}; each new shard starts at batch {first_id}, where the old shards' last \
         committed batches ended ({}); retired transactional ids settled: {}; old layout kept in {}\n",
        layout.count(),
        ends.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>().join(" "),
        if retired.is_empty() { "none".to_string() } else { retired.join(", ") },
        old
    ))
}

/// Every partition's next offset over all old shards, and the newest
/// committed plan (its id and topic carry over).
fn where_shards_stopped(stores: &[CheckpointStore]) -> Result<(BTreeMap<i32, i64>, Option<BatchPlan>)> {
    let mut ends = BTreeMap::new();
    let mut last: Option<BatchPlan> = None;
    for store in stores {
        let stopped = stopped_at(store)?;
        ends.extend(stopped.ends);
        if let Some(plan) = stopped.last.filter(|p| last.as_ref().is_none_or(|l| p.batch_id > l.batch_id)) {
            last = Some(plan);
        }
    }
    Ok((ends, last))
}

/// A new shard's logs: its start offsets and, when the old query had
/// batches, a committed batch `id` that reads nothing and ends there.
fn start_shard(
    store: &CheckpointStore,
    starts: &BTreeMap<i32, i64>,
    last: Option<&BatchPlan>,
    id: u64,
    from: u32,
    to: u32,
) -> Result<()> {
    store.write_initial_offsets(&starts.iter().map(|(p, o)| (*p, *o)).collect())?;
    let Some(last) = last else { return Ok(()) };
    let plan = BatchPlan {
        batch_id: id,
        batch_timestamp_ms: epoch_ms(),
        ranges: starts.iter().map(|(p, o)| OffsetRange { partition: *p, start: *o, end: *o }).collect(),
        ..last.clone()
    };
    store.write_offsets(&plan)?;
    let note = Some(format!("repartition from {from} to {to} shards"));
    store.write_commit(&BatchCommit { batch_id: id, committed_at_ms: epoch_ms(), num_output_rows: 0, note })
}

/// `init_transactions` with each retired shard's transactional id: the
/// broker aborts its open transaction, if any, and fences its producers.
async fn settle_transactions(keys: &[String], cluster: &ClusterArgs) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let (client, timeout) = super::kafka_client(cluster, "repartition settles the retired shards' Kafka transactions")?;
    let keys = keys.to_vec();
    crate::util::blocking(move || {
        for key in keys {
            let producer: BaseProducer = client
                .clone()
                .set("transactional.id", crate::kafka::transactional_id(&key))
                .create()
                .map_err(|e| Error::kafka(format!("creating a producer for retired shard {key}"), e))?;
            producer
                .init_transactions(timeout)
                .map_err(|e| Error::kafka(format!("settling the transactions of retired shard {key}"), e))?;
            tracing::info!(key, "retired shard's transactional id settled");
        }
        Ok(())
    })
    .await
}
