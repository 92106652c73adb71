//! `sparklet checkpoint verify`: every file of the checkpoint read back,
//! the batch sequence checked (no gaps, at most the newest batch
//! uncommitted, what a replay needs present), and the last committed batch
//! compared with the markers each sink holds for the query.

use std::collections::BTreeSet;

use crate::batch::BatchId;
use crate::checkpoint::CheckpointStore;
use crate::cli::{ClusterArgs, VerifyArgs};
use crate::config::PostgresConfig;
use crate::error::Result;
use crate::shard::Shard;

/// Findings, each `ok`, `note` or `PROBLEM`.
#[derive(Default)]
struct Findings {
    lines: Vec<String>,
    problems: usize,
}

impl Findings {
    fn ok(&mut self, what: String) {
        self.lines.push(format!("ok       {what}"));
    }
    fn note(&mut self, what: String) {
        self.lines.push(format!("note     {what}"));
    }
    fn problem(&mut self, what: String) {
        self.problems += 1;
        self.lines.push(format!("PROBLEM  {what}"));
    }
}

/// Runs the checks; the text, and whether all passed.
pub(super) async fn run(args: &VerifyArgs) -> Result<(String, bool)> {
    let (store, shard) = super::open_shard(&args.dir)?;
    let mut f = Findings::default();
    f.ok(format!("metadata: query {}", store.query_id()));
    let (committed, pending) = check_files(&store, &mut f)?;
    check_sinks(&store, &shard, &args.cluster, committed, pending, &mut f).await;
    let verdict = match f.problems {
        0 => "checkpoint verified: no problem found".to_string(),
        n => format!("{n} problem(s) found"),
    };
    Ok((format!("{}\n{verdict}\n", f.lines.join("\n")), f.problems == 0))
}

/// Reads every file; returns the last committed batch and a pending one.
fn check_files(store: &CheckpointStore, f: &mut Findings) -> Result<(Option<BatchId>, Option<BatchId>)> {
    let offsets: BTreeSet<BatchId> = store.batch_ids("offsets")?.into_iter().collect();
    let commits: BTreeSet<BatchId> = store.batch_ids("commits")?.into_iter().collect();
    let mut readable = 0;
    for id in &offsets {
        match store.read_offsets(*id) {
            Ok(_) => readable += 1,
            Err(e) => f.problem(format!("offsets/{id}: {}", e.chain())),
        }
    }
    for id in &commits {
        if let Err(e) = store.read_commit(*id) {
            f.problem(format!("commits/{id}: {}", e.chain()));
        }
        if !offsets.contains(id) && offsets.first().is_some_and(|first| id >= first) {
            f.problem(format!("commits/{id} has no offsets/{id}"));
        }
    }
    if let (Some(first), Some(last)) = (offsets.first(), offsets.last()) {
        let missing: Vec<BatchId> = (*first..=*last).filter(|id| !offsets.contains(id)).collect();
        match missing.is_empty() {
            true => f.ok(format!("offsets: batches {first}..={last} ({readable} readable)")),
            false => f.problem(format!("offsets: batches {missing:?} missing between {first} and {last}")),
        }
    }
    let uncommitted: Vec<BatchId> = offsets.iter().filter(|id| !commits.contains(id)).copied().collect();
    let pending = offsets.last().copied().filter(|last| uncommitted.contains(last));
    if uncommitted.iter().any(|id| Some(*id) != pending) {
        f.problem(format!("batches {uncommitted:?} are not committed, but only the newest may be"));
    }
    let committed = offsets.iter().rev().find(|id| commits.contains(id)).copied();
    match store.initial_offsets() {
        Ok(start) => f.ok(format!("sources/0: {}", if start.is_some() { "present" } else { "not yet written" })),
        Err(e) => f.problem(format!("sources/0: {}", e.chain())),
    }
    if let Some(p) = pending {
        check_replayable(store, p, f);
    }
    let next = pending.or(committed.map(|c| c + 1)).unwrap_or(0);
    match store.read_state_before(next) {
        Ok(state) => f.ok(format!("state: {} held campaign(s)", state.map_or(0, |s| s.num_rows()))),
        Err(e) => f.problem(format!("state: {}", e.chain())),
    }
    Ok((committed, pending))
}

/// A pending batch is replayed with its plan's subscribers snapshot.
fn check_replayable(store: &CheckpointStore, pending: BatchId, f: &mut Findings) {
    let Ok(plan) = store.read_offsets(pending) else { return };
    let name = format!("{}.arrow", plan.subscribers_snapshot);
    let snapshot = store.snapshots_dir().describe(&name);
    match store.snapshots_dir().exists(&name).unwrap_or(false) {
        true => f.ok(format!("batch {pending} is pending; its subscribers snapshot is there for the replay")),
        false => f.problem(format!("batch {pending} is pending but its snapshot {} is missing", snapshot.display())),
    }
}

/// Compares the checkpoint with each sink's newest marker for the query.
async fn check_sinks(
    store: &CheckpointStore,
    shard: &Shard,
    cluster: &ClusterArgs,
    committed: Option<BatchId>,
    pending: Option<BatchId>,
    f: &mut Findings,
) {
    let query_id = shard.sink_key(store.query_id());
    if let Some(url) = &cluster.database_url {
        let held = postgres_marker(url.expose(), cluster, &query_id).await;
        compare("postgres", held, committed, pending, f);
    } else {
        f.note("postgres: not compared (no --database-url)".into());
    }
    match &cluster.bootstrap_servers {
        Some(_) => {
            let held = kafka_marker(cluster, &query_id).await;
            compare("kafka", held, committed, pending, f);
        }
        None => f.note("kafka: not compared (no --bootstrap-servers)".into()),
    }
}

fn compare(
    sink: &str,
    held: Result<Option<BatchId>>,
    committed: Option<BatchId>,
    pending: Option<BatchId>,
    f: &mut Findings,
) {
    let newest_known = pending.or(committed);
    match held {
        Err(e) => f.problem(format!("{sink}: could not read its markers: {}", e.chain())),
        Ok(Some(h)) if newest_known.is_none_or(|k| h > k) => f.problem(format!(
            "{sink} holds batch {h} of this query, which the checkpoint does not know: the checkpoint is older than the sink (a run refuses it)"
        )),
        Ok(h) if h == committed || (h.is_some() && h == pending) => f.ok(format!(
            "{sink}: newest marker {} agrees with the checkpoint",
            h.map_or("none".to_string(), |h| format!("batch {h}"))
        )),
        Ok(h) => f.note(format!(
            "{sink}: newest marker {} but the checkpoint committed {}: later batches were committed without this sink's marker (a rewind, or an at-least-once run)",
            h.map_or("none".to_string(), |h| format!("batch {h}")),
            committed.map_or("none".to_string(), |c| format!("batch {c}"))
        )),
    }
}

async fn postgres_marker(url: &str, cluster: &ClusterArgs, query_id: &str) -> Result<Option<BatchId>> {
    let config = PostgresConfig::parse(url)?.with_ca_file(cluster.database_ca_file.clone())?;
    let client = crate::postgres::connect(&config, "checking the sink's markers").await?;
    let exists = client
        .query_one("SELECT to_regclass('sparklet_commits') IS NOT NULL", &[])
        .await
        .map_err(|e| crate::Error::postgres("looking for sparklet_commits", e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    crate::sink::postgres::latest_marker(&client, query_id, &config.target()).await
}

async fn kafka_marker(cluster: &ClusterArgs, query_id: &str) -> Result<Option<BatchId>> {
    let (mut config, timeout) = super::kafka_client(cluster, "comparing with the Kafka markers")?;
    // Reading with assign() still needs a group id; nothing is committed.
    config.set("group.id", crate::kafka::group_id(query_id));
    let (topic, query_id) = (cluster.marker_topic.clone(), query_id.to_string());
    crate::util::blocking(move || {
        crate::sink::kafka_marker::latest_committed_batch(&config, &topic, &query_id, timeout)
    })
    .await
}
