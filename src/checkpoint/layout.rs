//! Where a query's shards keep their logs.
//!
//! ```text
//! <root>/metadata            the query id, shared by every shard
//! <root>/offsets, commits... one shard at the root: a query created with
//!                            one shard, or before shards existed
//! <root>/shards/count        {"version":"1","shards":S}: the sharded layout
//! <root>/shards/<s>/         shard s's own offsets/, commits/, sources/,
//!                            state/, snapshots/ and .lock
//! <root>/retired/<name>/     a layout replaced by `checkpoint repartition`
//! ```
//!
//! The shard count is fixed when the query is created and changes only by
//! `sparklet checkpoint repartition` ([`crate::admin`]), which builds the new
//! layout beside the old one (`.shards.tmp`, `count` written last), moves the
//! old one to `retired/` and renames the new one into place. An interrupted
//! repartition is finished, or dropped if its new layout was incomplete, by
//! the next opener. Openers and the repartition hold the root's layout
//! lock (`.layout.lock`) while they read or change the layout; the owner's
//! `.lock` of each shard is apart, so opening never waits for a running
//! query.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock::DirLock;
use super::{read_json_if_there, read_or_create_metadata, to_json, CheckpointStore, Files};
use crate::error::{Error, Result};
use crate::shard::Shard;

/// The folder that keeps replaced layouts.
pub(crate) const RETIRED: &str = "retired";
/// The sharded layout's folder.
const SHARDS: &str = "shards";
/// A repartition's new layout while it is built.
const BUILDING: &str = ".shards.tmp";
/// The count file inside [`SHARDS`].
const COUNT: &str = "count";
/// Inside [`BUILDING`]: the old layout has been moved to `retired/`.
const MOVING: &str = "moving";
/// The root's entries that belong to a shard in the root layout.
const ROOT_SHARD_ENTRIES: &[&str] = &["offsets", "commits", "sources", "state", "snapshots"];
/// How long an opener waits for another opener's hold on the root.
const ROOT_LOCK_WAIT: Duration = Duration::from_secs(15);

/// Versioned content of `shards/count`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum CountFile {
    #[serde(rename = "1")]
    V1 { shards: u32 },
}

/// A query's checkpoint root: its id, its shard count and where each shard
/// keeps its logs.
#[derive(Debug, Clone)]
pub struct Layout {
    root: Files,
    query_id: String,
    count: u32,
    sharded: bool,
}

impl Layout {
    /// Opens the checkpoint at `root`, creating a new query (with
    /// `requested` shards, 1 by default) if it has none. A `requested` count
    /// other than the recorded one is refused: only a repartition changes it.
    pub fn open(root: &Files, requested: Option<u32>) -> Result<Self> {
        if requested == Some(0) {
            return Err(Error::config("--shards", "must be at least 1, got 0"));
        }
        root.ensure()?;
        let _root = lock_root(root)?;
        finish_interrupted_repartition(root)?;
        let query_id = read_or_create_metadata(root)?;
        let (count, sharded) = match recorded_count(root)? {
            Some(count) => (count, true),
            None if has_root_shard(root)? => (1, false),
            None => {
                let count = requested.unwrap_or(1);
                if count > 1 {
                    root.join(SHARDS).ensure()?;
                    write_count(&root.join(SHARDS), count)?;
                }
                (count, count > 1)
            }
        };
        if let Some(requested) = requested.filter(|r| *r != count) {
            return Err(Error::CheckpointMismatch(format!(
                "the query in {root} has {count} shard(s), but --shards is {requested}: stop every process of the \
                 query and run `sparklet checkpoint repartition --checkpoint-dir {root} --shards {requested}` to change it"
            )));
        }
        Ok(Layout { root: root.clone(), query_id, count, sharded })
    }

    /// Opens an existing query's checkpoint (the `sparklet checkpoint`
    /// commands): a directory without `metadata` is refused, never created.
    pub fn open_existing(root: &Files) -> Result<Self> {
        if !root.exists("metadata")? {
            return Err(Error::CheckpointMismatch(format!(
                "{root} is not a sparklet checkpoint (no metadata file); give the --checkpoint-dir a query ran with"
            )));
        }
        Self::open(root, None)
    }

    pub fn root(&self) -> &Files {
        &self.root
    }

    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// The query's number of shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the shards live under `shards/` (else one shard at the root).
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Shard `id` of this query.
    pub fn shard(&self, id: u32) -> Shard {
        Shard { id, count: self.count, sharded_layout: self.sharded }
    }

    /// The folder of shard `id`'s logs.
    pub fn shard_dir(&self, id: u32) -> Files {
        match self.sharded {
            true => self.root.join(SHARDS).join(&id.to_string()),
            false => self.root.clone(),
        }
    }

    /// Opens shard `id`'s logs, holding its lock (a shard runs in one
    /// process at a time; the message names the holder).
    pub fn open_shard(&self, id: u32) -> Result<CheckpointStore> {
        if id >= self.count {
            return Err(Error::CheckpointMismatch(format!(
                "{}: shard {id} does not exist; the query has {} shard(s)",
                self.root, self.count
            )));
        }
        match self.sharded {
            true => CheckpointStore::open_shard_dir(&self.shard_dir(id), &self.query_id),
            false => CheckpointStore::open_files(&self.root),
        }
    }

    /// Every shard's logs, all locked: the query is stopped everywhere.
    pub fn open_all(&self) -> Result<Vec<CheckpointStore>> {
        (0..self.count).map(|id| self.open_shard(id)).collect()
    }

    /// Takes the root's lock for a change of layout (held by the caller
    /// until it drops the guard).
    pub(crate) fn lock_root(&self) -> Result<Option<DirLock>> {
        lock_root(&self.root)
    }

    /// Where a repartition builds its new layout; emptied first.
    pub(crate) fn building_dir(&self) -> Result<Files> {
        let dir = self.root.join(BUILDING);
        dir.move_to(&self.root.join(RETIRED).join(&format!("unfinished-{}", crate::batch::epoch_ms())))?;
        dir.ensure()?;
        Ok(dir)
    }

    /// The new layout's shard folder `id` inside [`building_dir`](Self::building_dir).
    pub(crate) fn building_shard(&self, id: u32, query_id: &str) -> Result<CheckpointStore> {
        CheckpointStore::open_shard_dir(&self.root.join(BUILDING).join(&id.to_string()), query_id)
    }

    /// Completes a repartition: the count written (which makes the new
    /// layout whole), the old layout moved to `retired/`, the new renamed
    /// into place. Returns where the old layout went.
    pub(crate) fn swap_in(&self, count: u32) -> Result<Files> {
        write_count(&self.root.join(BUILDING), count)?;
        finish_interrupted_repartition(&self.root)?
            .ok_or_else(|| Error::Runtime("the repartition's new layout vanished".into()))
    }
}

/// Waits up to [`ROOT_LOCK_WAIT`] for the root's layout lock (another
/// opener holds it only while it reads the layout, a repartition while it
/// runs). An object store has no lock (`None`).
fn lock_root(root: &Files) -> Result<Option<DirLock>> {
    let Some(dir) = root.local() else { return Ok(None) };
    let started = Instant::now();
    loop {
        match DirLock::acquire_file(dir, super::lock::LAYOUT_LOCK_FILE) {
            Err(Error::CheckpointInUse { .. }) if started.elapsed() < ROOT_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other.map(Some),
        }
    }
}

/// The recorded shard count, if the query uses the sharded layout.
fn recorded_count(root: &Files) -> Result<Option<u32>> {
    Ok(read_json_if_there(&root.join(SHARDS), COUNT)?.map(|CountFile::V1 { shards }| shards))
}

fn write_count(dir: &Files, shards: u32) -> Result<()> {
    dir.create_new(COUNT, &to_json(&dir.describe(COUNT), &CountFile::V1 { shards })?)
}

/// Whether the root holds a shard's logs (a query in the root layout that
/// has planned or started something).
fn has_root_shard(root: &Files) -> Result<bool> {
    for sub in ["offsets", "sources"] {
        if !root.join(sub).list()?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A complete new layout in `.shards.tmp` replaces the old one (moved to
/// `retired/`); an incomplete one (no `count`) is moved aside to
/// `retired/` too. Returns where the old layout went, when there was a
/// swap. In an object store the moves copy object by object; the new
/// layout's `count` moves last, so an interrupted swap is finished by the
/// next opener: the old layout is moved first and only then the new one, and
/// `.shards.tmp/moving` records that the old one is gone.
fn finish_interrupted_repartition(root: &Files) -> Result<Option<Files>> {
    let building = root.join(BUILDING);
    if building.list()?.is_empty() {
        return Ok(None);
    }
    if !building.exists(COUNT)? {
        building.move_to(&root.join(RETIRED).join(&format!("unfinished-{}", crate::batch::epoch_ms())))?;
        return Ok(None);
    }
    let retired = root.join(RETIRED).join(&format!("layout-{}", crate::batch::epoch_ms()));
    if !building.exists(MOVING)? {
        for entry in ROOT_SHARD_ENTRIES.iter().chain([&SHARDS]) {
            root.join(entry).move_to(&retired.join(entry))?;
        }
        building.put(MOVING, b"the old layout is in retired/")?;
    }
    let shards = root.join(SHARDS);
    for entry in building.list()?.into_iter().filter(|e| e != COUNT && e != MOVING) {
        building.join(&entry).move_to(&shards.join(&entry))?;
        building.remove(&entry)?;
    }
    shards.ensure()?;
    let count = building.read(COUNT)?.unwrap_or_default();
    shards.put(COUNT, &count)?;
    building.remove(COUNT)?;
    building.remove(MOVING)?;
    if let Some(dir) = building.local() {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(Some(retired))
}
