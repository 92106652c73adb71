//! `sparklet checkpoint show|verify|rewind|reset|repartition`: looking into
//! and repairing a stopped query's checkpoint. Every command takes the lock
//! of the shard it works on (`--shard`; reset and repartition take every
//! shard's) first, so it refuses, naming the holder, while the query runs.
//! Nothing here rewrites a file the query wrote: a rewind adds a batch, a
//! reset moves the whole checkpoint aside, a repartition moves the old
//! layout to `retired/`.
//!
//! - `show` and `reset`: here; `verify`: [`verify`]; `rewind`: [`rewind`];
//!   `repartition`: [`repartition`].
//! - `sparklet setup` (least privilege for the running role): [`setup`].

mod check;
mod repartition;
mod rewind;
mod setup;
mod verify;

pub use check::check;
pub use setup::{setup, setup_sql};

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::batch::{BatchId, BatchPlan};
use crate::checkpoint::layout::Layout;
use crate::checkpoint::{BatchCommit, CheckpointStore, Files};
use crate::cli::{CheckpointCommand, CheckpointDir, ClusterArgs, ResetArgs, ShowArgs};
use crate::error::{Error, Result};
use crate::shard::Shard;
use crate::util::time::rfc3339_ms;

/// Runs a `sparklet checkpoint` command; returns what to print, and whether
/// it found a problem (`verify`).
pub async fn run(command: CheckpointCommand) -> Result<(String, bool)> {
    match command {
        CheckpointCommand::Show(args) => show(&args).map(|text| (text, true)),
        CheckpointCommand::Verify(args) => verify::run(&args).await,
        CheckpointCommand::Rewind(args) => rewind::run(&args).await.map(|text| (text, true)),
        CheckpointCommand::Reset(args) => reset(&args).map(|text| (text, true)),
        CheckpointCommand::Repartition(args) => repartition::run(&args).await.map(|text| (text, true)),
    }
}

/// Opens the logs of the shard `dir.shard` names (a query with one shard
/// needs no `--shard`), holding its lock.
fn open_shard(dir: &CheckpointDir) -> Result<(CheckpointStore, Shard)> {
    let layout = Layout::open_existing(&root_of(&dir.checkpoint_dir)?)?;
    let id = match (dir.shard, layout.count()) {
        (Some(id), _) => id,
        (None, 1) => 0,
        (None, n) => {
            let why = format!("the query has {n} shards: name one with --shard (0 to {})", n - 1);
            return Err(refuse(layout.root(), why));
        }
    };
    Ok((layout.open_shard(id)?, layout.shard(id)))
}

/// What `show` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    checkpoint: String,
    query_id: String,
    /// Where each partition's next batch starts.
    next_offsets: BTreeMap<i32, i64>,
    last_committed: Option<BatchId>,
    /// A planned batch without a commit: the next run replays it first.
    pending: Option<BatchId>,
    held_campaigns: usize,
    batches: Vec<BatchLine>,
}

/// One batch in `show`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchLine {
    batch_id: BatchId,
    planned_at: String,
    committed_at: Option<String>,
    output_rows: Option<u64>,
    ranges: String,
    subscribers_snapshot: String,
    sql_fingerprint: Option<String>,
    note: Option<String>,
}

fn show(args: &ShowArgs) -> Result<String> {
    let (store, _) = open_shard(&args.dir)?;
    let overview = overview(&store, args.last)?;
    if args.json {
        return serde_json::to_string_pretty(&overview).map_err(|e| Error::Runtime(format!("printing JSON: {e}")));
    }
    Ok(render(&overview))
}

fn overview(store: &CheckpointStore, last: usize) -> Result<Overview> {
    let resume = store.resume()?;
    let mut ids = store.batch_ids("offsets")?;
    ids.sort_unstable();
    let mut batches = Vec::new();
    for id in ids.iter().rev().take(last).rev() {
        batches.push(line(&store.read_offsets(*id)?, store.read_commit(*id)?));
    }
    let next = resume
        .last_committed
        .as_ref()
        .map(|p| p.end_offsets())
        .or_else(|| store.initial_offsets().ok().flatten().map(|starts| starts.into_iter().collect()));
    let next_id = resume.pending.as_ref().map_or(ids.last().map_or(0, |id| id + 1), |p| p.batch_id);
    Ok(Overview {
        checkpoint: store.dir().to_string(),
        query_id: store.query_id().to_string(),
        next_offsets: next.unwrap_or_default().into_iter().collect(),
        last_committed: resume.last_committed.map(|p| p.batch_id),
        pending: resume.pending.map(|p| p.batch_id),
        held_campaigns: store.read_state_before(next_id)?.map_or(0, |s| s.num_rows()),
        batches,
    })
}

fn line(plan: &BatchPlan, commit: Option<BatchCommit>) -> BatchLine {
    BatchLine {
        batch_id: plan.batch_id,
        planned_at: rfc3339_ms(plan.batch_timestamp_ms),
        committed_at: commit.as_ref().map(|c| rfc3339_ms(c.committed_at_ms)),
        output_rows: commit.as_ref().map(|c| c.num_output_rows),
        ranges: plan.describe_ranges(),
        subscribers_snapshot: plan.subscribers_snapshot.clone(),
        sql_fingerprint: plan.sql_fingerprint.clone(),
        note: commit.and_then(|c| c.note),
    }
}

fn render(o: &Overview) -> String {
    let offsets: Vec<String> = o.next_offsets.iter().map(|(p, off)| format!("{p}:{off}")).collect();
    let mut text = format!(
        "checkpoint {}\nquery id   {}\nlast committed batch {}; pending {}; held campaigns {}\nnext batch starts at partition:offset {}\n",
        o.checkpoint,
        o.query_id,
        o.last_committed.map_or("none".to_string(), |b| b.to_string()),
        o.pending.map_or("none".to_string(), |b| format!("batch {b} (replayed first at the next run)")),
        o.held_campaigns,
        if offsets.is_empty() { "(not yet known)".to_string() } else { offsets.join(" ") },
    );
    for b in &o.batches {
        let committed = match (&b.committed_at, b.output_rows) {
            (Some(at), Some(rows)) => format!("committed {at}, {rows} rows out"),
            _ => "NOT COMMITTED".to_string(),
        };
        text.push_str(&format!(
            "\nbatch {} planned {}; {}\n  read {}\n  subscribers {}; sql {}{}",
            b.batch_id,
            b.planned_at,
            committed,
            if b.ranges.is_empty() { "nothing" } else { &b.ranges },
            b.subscribers_snapshot,
            b.sql_fingerprint.as_deref().unwrap_or("unknown"),
            b.note.as_ref().map_or(String::new(), |n| format!("\n  note: {n}")),
        ));
    }
    text.push('\n');
    text
}

/// Moves the checkpoint aside and opens a new one, with as many shards, in
/// its place.
fn reset(args: &ResetArgs) -> Result<String> {
    let dir = root_of(&args.dir.checkpoint_dir)?;
    let old = Layout::open_existing(&dir)?;
    let stores = old.open_all()?;
    let mut starts = BTreeMap::new();
    for store in stores.iter().filter(|_| args.keep_offsets) {
        starts.extend(stopped_at(store)?.ends);
    }
    let aside = aside_path(&dir, old.query_id());
    dir.move_to(&aside)?;
    drop(stores);
    let new = Layout::open(&dir, Some(old.count()))?;
    if args.keep_offsets {
        for id in 0..new.count() {
            let shard = new.shard(id);
            let mine = starts.iter().filter(|(p, _)| shard.owns(**p)).map(|(p, o)| (*p, *o)).collect();
            new.open_shard(id)?.write_initial_offsets(&mine)?;
        }
    }
    Ok(format!(
        "query {} moved to {aside}\nnew query {} ({} shard(s)) in {dir}; it starts {}\n",
        old.query_id(),
        new.query_id(),
        new.count(),
        match args.keep_offsets {
            true => "where the old query's last committed batches ended",
            false => "at --starting-offsets (earliest or latest) at its first run",
        }
    ))
}

/// The Kafka client settings and request timeout of a command that asks the
/// broker: `--bootstrap-servers` (refused when missing, saying `why` it is
/// needed), `--kafka-option`, `--kafka-timeout`.
pub(crate) fn kafka_client(cluster: &ClusterArgs, why: &str) -> Result<(rdkafka::ClientConfig, std::time::Duration)> {
    let servers = cluster
        .bootstrap_servers
        .as_deref()
        .ok_or_else(|| Error::config("--bootstrap-servers", format!("{why}: give --bootstrap-servers")))?;
    let options = crate::config::parse_kafka_options(&cluster.kafka_options)?;
    let timeout = crate::config::parse_duration("--kafka-timeout", &cluster.kafka_timeout)?;
    Ok((crate::kafka::client_config(servers, &options), timeout))
}

/// The checkpoint `--checkpoint-dir` names (a path or an object-store URL).
pub(crate) fn root_of(dir: &Path) -> Result<Files> {
    Files::parse(&dir.to_string_lossy())
}

/// Where a stopped shard's input stands.
struct StoppedAt {
    /// Where each partition's next batch starts (the last committed batch's
    /// ends, or the recorded start of a shard that committed nothing).
    ends: BTreeMap<i32, i64>,
    last: Option<BatchPlan>,
}

/// Where `store`'s shard stopped; refused while a batch is planned but not
/// committed, or campaigns are held (a new layout or query would lose them).
fn stopped_at(store: &CheckpointStore) -> Result<StoppedAt> {
    let resume = store.resume()?;
    if let Some(p) = &resume.pending {
        let why = format!(
            "batch {} is not committed: run the query until it is (a stop finishes the batch, or --trigger available-now), then try again",
            p.batch_id
        );
        return Err(refuse(store.dir(), why));
    }
    let next = resume.last_committed.as_ref().map_or(0, |p| p.batch_id + 1);
    if store.read_state_before(next)?.is_some_and(|h| h.num_rows() > 0) {
        return Err(refuse(store.dir(), "campaigns are held (--hold-future-campaigns): they would be lost; run the query until they are released, or reset without --keep-offsets".into()));
    }
    let ends = match &resume.last_committed {
        Some(last) => last.end_offsets().into_iter().collect(),
        None => store.initial_offsets()?.unwrap_or_default().into_iter().collect(),
    };
    Ok(StoppedAt { ends, last: resume.last_committed })
}

/// `<dir>.<query id>`: where a reset moves the old checkpoint.
fn aside_path(dir: &Files, query_id: &str) -> Files {
    let name = dir.to_string();
    let name = name.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("checkpoint");
    dir.sibling(&format!("{name}.{query_id}"))
}

fn refuse(dir: &impl std::fmt::Display, why: String) -> Error {
    Error::CheckpointMismatch(format!("{dir}: {why}"))
}
