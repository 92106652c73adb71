//! The checkpoint directory: Spark's offset log and commit log.
//!
//! ```text
//! <dir>/metadata        {"version":"1","id":"<query id>"}   written once
//! <dir>/offsets/<N>     the BatchPlan of batch N, written BEFORE it is read
//! <dir>/commits/<N>     written AFTER both sinks hold batch N
//! <dir>/sources/0       start offsets of a new query (earliest/latest resolved)
//! <dir>/snapshots/      subscriber snapshots referenced from offsets/<N>
//! <dir>/state/<N>       held campaigns after batch N, when they changed (see [`state`])
//! ```
//!
//! Every file is versioned and written atomically (locally: tmp file, fsync,
//! rename, fsync of the directory; in an object store: one put), so a crash
//! leaves either the old state or the new one, never half a file ([`files`]).
//! Locally, folders are created `0700` and files `0600` ([`local`]).
//! `metadata`, `offsets/N` and `commits/N` are created only if absent, never
//! replaced. One process owns a local directory at a time (`.lock`, see
//! [`lock`]). On start, `offsets/N` without `commits/N` means batch N was
//! planned but not finished: it is run again with the same plan.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::batch::{BatchId, BatchPlan};
use crate::error::{Error, Result};

mod files;
pub mod layout;
mod local;
mod lock;
mod object;
mod state;

pub use files::Files;
use lock::DirLock;

/// Versioned content of `metadata`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum MetadataFile {
    #[serde(rename = "1")]
    V1 { id: String },
}

/// Versioned content of `offsets/N`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum OffsetsFile {
    #[serde(rename = "1")]
    V1(BatchPlan),
}

/// Versioned content of `sources/0`: where a new query started.
///
/// Partition ids are JSON object keys, so they are strings on disk
/// (`{"version":"1","offsets":{"0":5}}`). They are read as strings and parsed
/// here: serde cannot read integer map keys back through an internally tagged
/// enum, which made every `sources/0` written by sparklet 0.1.0 unreadable.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum SourceStartFile {
    #[serde(rename = "1")]
    V1 { offsets: BTreeMap<String, i64> },
}

/// Versioned content of `commits/N`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum CommitFile {
    #[serde(rename = "1")]
    V1(BatchCommit),
}

/// What `commits/N` records about a finished batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchCommit {
    pub batch_id: BatchId,
    pub committed_at_ms: i64,
    pub num_output_rows: u64,
    /// Why a batch was committed without running (`sparklet checkpoint
    /// rewind`); absent for a batch that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Where a query stands when it starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The newest batch with a commit: the next batch starts at its ends.
    pub last_committed: Option<BatchPlan>,
    /// A planned batch without a commit: it must be run again first.
    pub pending: Option<BatchPlan>,
}

/// Reads and writes one query's checkpoint folder (of one shard, in the
/// sharded layout), on local disk or in an object store ([`files`]). A
/// local folder is owned (its lock held) for as long as the store lives; an
/// object store has no lock: create-if-absent on `offsets/N` and the
/// owner epoch in Postgres stop a second owner.
#[derive(Debug)]
pub struct CheckpointStore {
    files: Files,
    query_id: String,
    _lock: Option<DirLock>,
}

impl CheckpointStore {
    /// Opens the local folder `dir`, creating it and a new query id if it
    /// is empty. Fails at once, naming the holder, if another process owns
    /// the folder.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_files(&Files::Local(dir.to_path_buf()))
    }

    /// Opens `files` (see [`open`](Self::open)) as the checkpoint root.
    pub fn open_files(files: &Files) -> Result<Self> {
        Self::open_as(files, None)
    }

    /// Opens the folder of one shard of a query in the sharded layout
    /// (`<root>/shards/<s>`, see [`layout`]): its own logs and lock, the
    /// query id of the root's `metadata`.
    pub(crate) fn open_shard_dir(files: &Files, query_id: &str) -> Result<Self> {
        Self::open_as(files, Some(query_id))
    }

    /// Creates the folders, takes the lock (locally), then reads the query
    /// id from `metadata`, or creates it, unless `query_id` is given.
    fn open_as(files: &Files, query_id: Option<&str>) -> Result<Self> {
        files.ensure()?;
        let lock = files.local().map(DirLock::acquire).transpose()?;
        let query_id = match query_id {
            Some(id) => id.to_string(),
            None => read_or_create_metadata(files)?,
        };
        for sub in ["offsets", "commits", "snapshots", "sources", "state"] {
            files.join(sub).ensure()?;
        }
        Ok(CheckpointStore { files: files.clone(), query_id, _lock: lock })
    }

    /// Opens an existing checkpoint (for the `sparklet checkpoint` commands):
    /// a directory that is not one is refused, never created.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        if !dir.join("metadata").is_file() {
            return Err(Error::CheckpointMismatch(format!(
                "{} is not a sparklet checkpoint (no metadata file); give the --checkpoint-dir a query ran with",
                dir.display()
            )));
        }
        Self::open(dir)
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Files {
        &self.files
    }

    /// The query id from `metadata`: stable across restarts.
    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// Finds the last committed batch and a pending one, if any.
    pub fn resume(&self) -> Result<Resume> {
        let Some(latest) = self.latest_id("offsets")? else {
            return Ok(Resume::default());
        };
        if self.files.join("commits").exists(&latest.to_string())? {
            return Ok(Resume { last_committed: Some(self.read_offsets(latest)?), pending: None });
        }
        let last_committed = match latest.checked_sub(1) {
            Some(prev) if self.files.join("offsets").exists(&prev.to_string())? => Some(self.read_offsets(prev)?),
            _ => None,
        };
        Ok(Resume { last_committed, pending: Some(self.read_offsets(latest)?) })
    }

    /// Write-ahead: records the plan of a batch before it runs. An existing
    /// `offsets/N` is never overwritten: a plan, once written, is the batch.
    pub fn write_offsets(&self, plan: &BatchPlan) -> Result<()> {
        let name = plan.batch_id.to_string();
        let offsets = self.files.join("offsets");
        offsets.create_new(&name, &to_json(&offsets.describe(&name), &OffsetsFile::V1(plan.clone()))?)
    }

    /// Reads the plan of batch `id`. Its subscribers snapshot id becomes a
    /// file name (`snapshots/<id>.arrow`), so one that is not a plain name
    /// ([`is_snapshot_id`]) is refused, naming the file.
    pub fn read_offsets(&self, id: BatchId) -> Result<BatchPlan> {
        let offsets = self.files.join("offsets");
        let name = id.to_string();
        let OffsetsFile::V1(plan) = read_json(&offsets, &name)?;
        if !is_snapshot_id(&plan.subscribers_snapshot) {
            let why = format!(
                "subscribersSnapshot {:?} is not a snapshot id (1 to {MAX_SNAPSHOT_ID} letters, digits, '-' or '_')",
                plan.subscribers_snapshot.chars().take(MAX_SNAPSHOT_ID + 1).collect::<String>()
            );
            return Err(Error::CheckpointFormat {
                path: offsets.describe(&name),
                source: serde::de::Error::custom(why),
            });
        }
        Ok(plan)
    }

    /// Records that batch `commit.batch_id` is in both sinks. Created, never
    /// replaced: a second owner committing the same batch is refused
    /// ([`Error::CheckpointConflict`]), as Spark's commit log adds a file
    /// only if absent.
    pub fn write_commit(&self, commit: &BatchCommit) -> Result<()> {
        let name = commit.batch_id.to_string();
        let commits = self.files.join("commits");
        commits.create_new(&name, &to_json(&commits.describe(&name), &CommitFile::V1(commit.clone()))?)
    }

    /// Reads the commit record of batch `id`, if there is one.
    pub fn read_commit(&self, id: BatchId) -> Result<Option<BatchCommit>> {
        let commit = read_json_if_there(&self.files.join("commits"), &id.to_string())?;
        Ok(commit.map(|CommitFile::V1(commit)| commit))
    }

    /// Deletes offset and commit files of batches older than `keep_from`
    /// (Spark's `minBatchesToRetain`).
    pub fn purge_before(&self, keep_from: BatchId) -> Result<()> {
        for sub in ["offsets", "commits"] {
            for id in self.batch_ids(sub)?.into_iter().filter(|id| *id < keep_from) {
                self.files.join(sub).remove(&id.to_string())?;
            }
        }
        self.purge_state_before(keep_from)
    }

    /// The start offsets resolved when the query first ran (`sources/0`), so
    /// `latest` means the same thing after a restart before the first batch.
    pub fn initial_offsets(&self) -> Result<Option<HashMap<i32, i64>>> {
        let sources = self.files.join("sources");
        let Some(SourceStartFile::V1 { offsets }) = read_json_if_there(&sources, "0")? else {
            return Ok(None);
        };
        let parse = |(partition, offset): (String, i64)| match partition.parse::<i32>() {
            Ok(partition) => Ok((partition, offset)),
            Err(_) => Err(Error::CheckpointFormat {
                path: sources.describe("0"),
                source: serde::de::Error::custom(format!("'{partition}' is not a partition id")),
            }),
        };
        offsets.into_iter().map(parse).collect::<Result<_>>().map(Some)
    }

    /// Records the start offsets of a new query.
    pub fn write_initial_offsets(&self, offsets: &HashMap<i32, i64>) -> Result<()> {
        let offsets = offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
        let sources = self.files.join("sources");
        sources.put("0", &to_json(&sources.describe("0"), &SourceStartFile::V1 { offsets })?)
    }

    /// The folder that holds subscriber snapshots.
    pub fn snapshots_dir(&self) -> Files {
        self.files.join("snapshots")
    }

    fn latest_id(&self, sub: &str) -> Result<Option<BatchId>> {
        Ok(self.batch_ids(sub)?.into_iter().max())
    }

    /// Batch ids present in `sub`; tmp files of an interrupted write are ignored.
    pub(crate) fn batch_ids(&self, sub: &str) -> Result<Vec<BatchId>> {
        Ok(self.files.join(sub).list()?.iter().filter_map(|name| name.parse().ok()).collect())
    }
}

/// The longest subscribers snapshot id read from `offsets/N` (sparklet
/// writes 16 hex digits, a dash and a row count).
const MAX_SNAPSHOT_ID: usize = 128;

/// Whether `id` can name a subscribers snapshot: a plain file name of
/// letters, digits, `-` and `_`, so never a path (`/`, `..`), never hidden.
pub(crate) fn is_snapshot_id(id: &str) -> bool {
    (1..=MAX_SNAPSHOT_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The query id in `<root>/metadata`, created with a new id if absent. Two
/// processes creating it at once agree: the second reads the first's.
pub(crate) fn read_or_create_metadata(root: &Files) -> Result<String> {
    if let Some(MetadataFile::V1 { id }) = read_json_if_there(root, "metadata")? {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let json = to_json(&root.describe("metadata"), &MetadataFile::V1 { id: id.clone() })?;
    match root.create_new("metadata", &json) {
        Ok(()) => Ok(id),
        Err(Error::CheckpointConflict { .. }) => read_json(root, "metadata").map(|MetadataFile::V1 { id }| id),
        Err(e) => Err(e),
    }
}

/// Entries a checkpoint directory holds (besides tmp files of interrupted writes).
const CHECKPOINT_ENTRIES: &[&str] =
    &["metadata", "offsets", "commits", "sources", "snapshots", "state", "shards", layout::RETIRED];

/// Whether `dir` is a sparklet checkpoint: a valid `metadata` file and
/// nothing but checkpoint entries. Used before anything deletes a directory.
pub fn is_checkpoint(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    let only_ours = entries.filter_map(|e| e.ok()).all(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        CHECKPOINT_ENTRIES.contains(&name.as_ref())
            || name == lock::LOCK_FILE
            || name == lock::LAYOUT_LOCK_FILE
            || (name.starts_with('.') && name.ends_with(".tmp"))
    });
    only_ours && read_json::<MetadataFile>(&Files::Local(dir.to_path_buf()), "metadata").is_ok()
}

/// `value` as the pretty JSON of a checkpoint file at `path`.
fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| Error::CheckpointFormat { path: path.to_path_buf(), source })
}

/// Writes `batch` as Arrow IPC file `name` of `files`, atomically (see
/// [`files`]): subscriber snapshots and the held campaigns' state.
pub(crate) fn write_arrow(files: &Files, name: &str, batch: &arrow::array::RecordBatch) -> Result<()> {
    let path = files.describe(name);
    let encoding = |e| Error::arrow(format!("writing {}", path.display()), e);
    files.put_with(name, |out| {
        let mut writer =
            arrow::ipc::writer::FileWriter::try_new(std::io::BufWriter::new(out), &batch.schema()).map_err(encoding)?;
        writer.write(batch).map_err(encoding)?;
        writer.finish().map_err(encoding)?;
        let buffered = writer.into_inner().map_err(encoding)?;
        buffered.into_inner().map_err(|e| io_err("flushing", &path)(e.into_error()))?;
        Ok(())
    })
}

/// Reads file `name` of `files` as JSON; a missing file is an error naming it.
pub(crate) fn read_json<T: DeserializeOwned>(files: &Files, name: &str) -> Result<T> {
    read_json_if_there(files, name)?.ok_or_else(|| {
        io_err("reading", &files.describe(name))(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    })
}

/// Reads file `name` of `files` as JSON, or `None` if there is none (one
/// request in an object store, not an existence check and a read).
pub(crate) fn read_json_if_there<T: DeserializeOwned>(files: &Files, name: &str) -> Result<Option<T>> {
    let Some(bytes) = files.read(name)? else { return Ok(None) };
    let parsed = serde_json::from_slice(&bytes);
    parsed.map(Some).map_err(|source| Error::CheckpointFormat { path: files.describe(name), source })
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::CheckpointIo { action, path, source }
}

#[cfg(test)]
mod tests;
