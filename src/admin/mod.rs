//! `sparklet checkpoint show|verify|rewind|reset`: looking into and
//! repairing a stopped query's checkpoint. Every command takes the
//! checkpoint's lock first ([`CheckpointStore::open_existing`]), so it
//! refuses, naming the holder, while the query runs. Nothing here rewrites
//! a file the query wrote: a rewind adds a batch, a reset moves the whole
//! checkpoint aside.
//!
//! - `show` and `reset`: here; `verify`: [`verify`]; `rewind`: [`rewind`].

mod rewind;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::batch::{BatchId, BatchPlan};
use crate::checkpoint::{BatchCommit, CheckpointStore};
use crate::cli::{CheckpointCommand, ResetArgs, ShowArgs};
use crate::error::{Error, Result};
use crate::progress::rfc3339_ms;

/// Runs a `sparklet checkpoint` command; returns what to print, and whether
/// it found a problem (`verify`).
pub async fn run(command: CheckpointCommand) -> Result<(String, bool)> {
    match command {
        CheckpointCommand::Show(args) => show(&args).map(|text| (text, true)),
        CheckpointCommand::Verify(args) => verify::run(&args).await,
        CheckpointCommand::Rewind(args) => rewind::run(&args).await.map(|text| (text, true)),
        CheckpointCommand::Reset(args) => reset(&args).map(|text| (text, true)),
    }
}

/// What `show` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    checkpoint: PathBuf,
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
    let store = CheckpointStore::open_existing(&args.dir.checkpoint_dir)?;
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
        checkpoint: store.dir().to_path_buf(),
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
        o.checkpoint.display(),
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

/// Moves the checkpoint aside and opens a new one in its place.
fn reset(args: &ResetArgs) -> Result<String> {
    let dir = &args.dir.checkpoint_dir;
    let old = CheckpointStore::open_existing(dir)?;
    let resume = old.resume()?;
    let starts = match (&resume.pending, &resume.last_committed, args.keep_offsets) {
        (Some(p), _, true) => {
            return Err(refuse(
                dir,
                format!(
                    "batch {} is not committed: run the query until it is (e.g. --trigger available-now), then reset",
                    p.batch_id
                ),
            ))
        }
        (_, Some(last), true) => Some(last.end_offsets()),
        _ => None,
    };
    let held = old.read_state_before(resume.last_committed.as_ref().map_or(0, |p| p.batch_id + 1))?;
    if args.keep_offsets && held.is_some_and(|h| h.num_rows() > 0) {
        return Err(refuse(dir, "campaigns are held (--hold-future-campaigns): a new query would lose them; reset without --keep-offsets to read the input again".into()));
    }
    let aside = aside_path(dir, old.query_id());
    std::fs::rename(dir, &aside).map_err(crate::checkpoint::io_err("moving aside", dir))?;
    let old_id = old.query_id().to_string();
    drop(old);
    let new = CheckpointStore::open(dir)?;
    if let Some(starts) = &starts {
        new.write_initial_offsets(&starts.iter().copied().collect())?;
    }
    Ok(format!(
        "query {old_id} moved to {}\nnew query {} in {}; it starts {}\n",
        aside.display(),
        new.query_id(),
        dir.display(),
        match starts {
            Some(_) => "where the old query's last committed batch ended".to_string(),
            None => "at --starting-offsets (earliest or latest) at its first run".to_string(),
        }
    ))
}

/// `<dir>.<query id>`: where a reset moves the old checkpoint.
fn aside_path(dir: &Path, query_id: &str) -> PathBuf {
    let name = dir.file_name().map_or("checkpoint".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.{query_id}"))
}

fn refuse(dir: &Path, why: String) -> Error {
    Error::CheckpointMismatch(format!("{}: {why}", dir.display()))
}
