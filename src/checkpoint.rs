//! The checkpoint directory: Spark's offset log and commit log.
//!
//! ```text
//! <dir>/metadata        {"version":"1","id":"<query id>"}   written once
//! <dir>/offsets/<N>     the BatchPlan of batch N, written BEFORE it is read
//! <dir>/commits/<N>     written AFTER both sinks hold batch N
//! <dir>/sources/0       start offsets of a new query (earliest/latest resolved)
//! <dir>/snapshots/      subscriber snapshots referenced from offsets/<N>
//! ```
//!
//! Every file is versioned and written atomically (tmp file, fsync, rename,
//! fsync of the directory), so a crash leaves either the old state or the new
//! one, never half a file. On start, `offsets/N` without `commits/N` means
//! batch N was planned but not finished: it is run again with the same plan.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::batch::{BatchId, BatchPlan};
use crate::error::{Error, Result};

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
}

/// Where a query stands when it starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The newest batch with a commit: the next batch starts at its ends.
    pub last_committed: Option<BatchPlan>,
    /// A planned batch without a commit: it must be run again first.
    pub pending: Option<BatchPlan>,
}

/// Reads and writes one query's checkpoint directory.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    query_id: String,
}

impl CheckpointStore {
    /// Opens `dir`, creating it and a new query id if it is empty.
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["offsets", "commits", "snapshots", "sources"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        let meta_path = dir.join("metadata");
        let query_id = if meta_path.exists() {
            let MetadataFile::V1 { id } = read_json(&meta_path)?;
            id
        } else {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&meta_path, &MetadataFile::V1 { id: id.clone() })?;
            id
        };
        Ok(CheckpointStore { dir: dir.to_path_buf(), query_id })
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
        if self.commit_path(latest).exists() {
            return Ok(Resume { last_committed: Some(self.read_offsets(latest)?), pending: None });
        }
        let last_committed = match latest.checked_sub(1) {
            Some(prev) if self.offsets_path(prev).exists() => Some(self.read_offsets(prev)?),
            _ => None,
        };
        Ok(Resume { last_committed, pending: Some(self.read_offsets(latest)?) })
    }

    /// Write-ahead: records the plan of a batch before it runs.
    pub fn write_offsets(&self, plan: &BatchPlan) -> Result<()> {
        write_atomic(&self.offsets_path(plan.batch_id), &OffsetsFile::V1(plan.clone()))
    }

    /// Reads the plan of batch `id`.
    pub fn read_offsets(&self, id: BatchId) -> Result<BatchPlan> {
        let OffsetsFile::V1(plan) = read_json(&self.offsets_path(id))?;
        Ok(plan)
    }

    /// Records that batch `commit.batch_id` is in both sinks.
    pub fn write_commit(&self, commit: &BatchCommit) -> Result<()> {
        write_atomic(&self.commit_path(commit.batch_id), &CommitFile::V1(commit.clone()))
    }

    /// Reads the commit record of batch `id`, if there is one.
    pub fn read_commit(&self, id: BatchId) -> Result<Option<BatchCommit>> {
        let path = self.commit_path(id);
        if !path.exists() {
            return Ok(None);
        }
        let CommitFile::V1(commit) = read_json(&path)?;
        Ok(Some(commit))
    }

    /// Deletes offset and commit files of batches older than `keep_from`
    /// (Spark's `minBatchesToRetain`).
    pub fn purge_before(&self, keep_from: BatchId) -> Result<()> {
        for sub in ["offsets", "commits"] {
            for id in self.batch_ids(sub)?.into_iter().filter(|id| *id < keep_from) {
                let path = self.dir.join(sub).join(id.to_string());
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        Ok(())
    }

    /// The start offsets resolved when the query first ran (`sources/0`), so
    /// `latest` means the same thing after a restart before the first batch.
    pub fn initial_offsets(&self) -> Result<Option<HashMap<i32, i64>>> {
        let path = self.dir.join("sources").join("0");
        if !path.exists() {
            return Ok(None);
        }
        let SourceStartFile::V1 { offsets } = read_json(&path)?;
        let parse = |(partition, offset): (String, i64)| match partition.parse::<i32>() {
            Ok(partition) => Ok((partition, offset)),
            Err(_) => Err(Error::CheckpointFormat {
                path: path.clone(),
                source: serde::de::Error::custom(format!("'{partition}' is not a partition id")),
            }),
        };
        offsets.into_iter().map(parse).collect::<Result<_>>().map(Some)
    }

    /// Records the start offsets of a new query.
    pub fn write_initial_offsets(&self, offsets: &HashMap<i32, i64>) -> Result<()> {
        let offsets = offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
        write_atomic(&self.dir.join("sources").join("0"), &SourceStartFile::V1 { offsets })
    }

    /// The folder that holds subscriber snapshots.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    fn offsets_path(&self, id: BatchId) -> PathBuf {
        self.dir.join("offsets").join(id.to_string())
    }

    fn commit_path(&self, id: BatchId) -> PathBuf {
        self.dir.join("commits").join(id.to_string())
    }

    fn latest_id(&self, sub: &str) -> Result<Option<BatchId>> {
        Ok(self.batch_ids(sub)?.into_iter().max())
    }

    /// Batch ids present in `sub`; tmp files of an interrupted write are ignored.
    fn batch_ids(&self, sub: &str) -> Result<Vec<BatchId>> {
        let path = self.dir.join(sub);
        let entries = fs::read_dir(&path).map_err(io_err("listing", &path))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &path))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// Entries a checkpoint directory holds (besides tmp files of interrupted writes).
const CHECKPOINT_ENTRIES: &[&str] = &["metadata", "offsets", "commits", "sources", "snapshots"];

/// Whether `dir` is a sparklet checkpoint: a valid `metadata` file and
/// nothing but checkpoint entries. Used before anything deletes a directory.
pub fn is_checkpoint(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    let only_ours = entries.filter_map(|e| e.ok()).all(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        CHECKPOINT_ENTRIES.contains(&name.as_ref()) || (name.starts_with('.') && name.ends_with(".tmp"))
    });
    only_ours && read_json::<MetadataFile>(&dir.join("metadata")).is_ok()
}

/// Writes `value` as JSON to `path` atomically: tmp file, fsync, rename,
/// fsync of the parent directory.
pub(crate) fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| Error::CheckpointFormat { path: path.to_path_buf(), source })?;
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (see [`write_atomic`]).
pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    file.write_all(bytes).map_err(io_err("writing", &tmp))?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    if let Some(parent) = path.parent() {
        let dir = fs::File::open(parent).map_err(io_err("opening", parent))?;
        dir.sync_all().map_err(io_err("syncing", parent))?;
    }
    Ok(())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::CheckpointFormat { path: path.to_path_buf(), source })
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::CheckpointIo { action, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::OffsetRange;

    fn plan(id: BatchId, end: i64) -> BatchPlan {
        BatchPlan {
            batch_id: id,
            batch_timestamp_ms: 1_000 * id as i64,
            topic: "in".into(),
            ranges: vec![OffsetRange { partition: 0, start: 0, end }],
            subscribers_snapshot: "snap".into(),
        }
    }

    fn commit(id: BatchId) -> BatchCommit {
        BatchCommit { batch_id: id, committed_at_ms: 1, num_output_rows: 2 }
    }

    #[test]
    fn every_file_kind_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let reopened = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(reopened.query_id(), store.query_id(), "metadata");

        store.write_offsets(&plan(7, 42)).unwrap();
        assert_eq!(reopened.read_offsets(7).unwrap(), plan(7, 42), "offsets/N");

        store.write_commit(&commit(7)).unwrap();
        assert_eq!(reopened.read_commit(7).unwrap(), Some(commit(7)), "commits/N");

        let starts = HashMap::from([(0, 5), (1, 0), (12, 1 << 40)]);
        store.write_initial_offsets(&starts).unwrap();
        assert_eq!(reopened.initial_offsets().unwrap(), Some(starts), "sources/0");
    }

    #[test]
    fn reads_sources_file_written_by_release_0_1_0() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        // Byte for byte what sparklet 0.1.0 wrote (and could not read back).
        let old = "{\n  \"version\": \"1\",\n  \"offsets\": {\n    \"0\": 3,\n    \"2\": 0\n  }\n}";
        fs::write(dir.path().join("sources/0"), old).unwrap();
        assert_eq!(store.initial_offsets().unwrap(), Some(HashMap::from([(0, 3), (2, 0)])));
    }

    #[test]
    fn sources_file_with_a_bad_partition_id_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("sources/0"), r#"{"version":"1","offsets":{"x":3}}"#).unwrap();
        let err = store.initial_offsets().unwrap_err().chain().to_string();
        assert!(err.contains("sources/0") && err.contains("'x'"), "{err}");
    }

    #[test]
    fn only_a_checkpoint_is_recognised_as_one() {
        let dir = tempfile::tempdir().unwrap();
        CheckpointStore::open(dir.path()).unwrap();
        assert!(is_checkpoint(dir.path()));
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        assert!(!is_checkpoint(dir.path()), "a foreign file");
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("metadata"), b"{}").unwrap();
        assert!(!is_checkpoint(other.path()), "a metadata file that is not ours");
        assert!(!is_checkpoint(&other.path().join("absent")));
    }

    #[test]
    fn keeps_query_id_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = CheckpointStore::open(dir.path()).unwrap();
        let second = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(first.query_id(), second.query_id());
    }

    #[test]
    fn empty_checkpoint_resumes_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.resume().unwrap(), Resume::default());
    }

    #[test]
    fn offsets_without_commit_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write_offsets(&plan(0, 5)).unwrap();
        store.write_commit(&commit(0)).unwrap();
        store.write_offsets(&plan(1, 9)).unwrap();
        let resume = CheckpointStore::open(dir.path()).unwrap().resume().unwrap();
        assert_eq!(resume.last_committed, Some(plan(0, 5)));
        assert_eq!(resume.pending, Some(plan(1, 9)));
    }

    #[test]
    fn committed_batch_is_not_pending_and_tmp_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write_offsets(&plan(0, 5)).unwrap();
        store.write_commit(&commit(0)).unwrap();
        fs::write(dir.path().join("offsets/.1.tmp"), b"{half").unwrap();
        let resume = store.resume().unwrap();
        assert_eq!(resume.last_committed, Some(plan(0, 5)));
        assert_eq!(resume.pending, None);
        assert_eq!(store.read_commit(0).unwrap(), Some(commit(0)));
    }

    #[test]
    fn files_are_versioned_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write_offsets(&plan(0, 5)).unwrap();
        let text = fs::read_to_string(dir.path().join("offsets/0")).unwrap();
        assert!(text.contains("\"version\": \"1\""), "{text}");
        assert!(text.contains("\"batchTimestampMs\": 0"), "{text}");
    }

    #[test]
    fn corrupt_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("offsets/0"), b"not json").unwrap();
        let err = store.resume().unwrap_err().to_string();
        assert!(err.contains("offsets/0"), "{err}");
    }

    #[test]
    fn purge_keeps_recent_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for id in 0..5 {
            store.write_offsets(&plan(id, id as i64)).unwrap();
            store.write_commit(&commit(id)).unwrap();
        }
        store.purge_before(3).unwrap();
        assert!(store.read_commit(2).unwrap().is_none());
        assert_eq!(store.resume().unwrap().last_committed, Some(plan(4, 4)));
    }
}
