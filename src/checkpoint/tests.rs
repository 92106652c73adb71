//! Unit tests of the checkpoint files: each kind round-trips, old files are
//! read, one owner at a time.

use super::*;
use crate::batch::OffsetRange;

fn plan(id: BatchId, end: i64) -> BatchPlan {
    BatchPlan {
        batch_id: id,
        batch_timestamp_ms: 1_000 * id as i64,
        topic: "in".into(),
        ranges: vec![OffsetRange { partition: 0, start: 0, end }],
        subscribers_snapshot: "snap".into(),
        sql_fingerprint: None,
        job_fingerprint: None,
        hold_future_campaigns: false,
        subscribers_version: None,
        lookups: Default::default(),
    }
}

fn commit(id: BatchId) -> BatchCommit {
    BatchCommit { batch_id: id, committed_at_ms: 1, num_output_rows: 2, note: None }
}

#[test]
fn every_file_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    let id = store.query_id().to_string();
    let starts = HashMap::from([(0, 5), (1, 0), (12, 1 << 40)]);
    store.write_offsets(&plan(7, 42)).unwrap();
    store.write_commit(&commit(7)).unwrap();
    store.write_initial_offsets(&starts).unwrap();
    drop(store);

    let reopened = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(reopened.query_id(), id, "metadata");
    assert_eq!(reopened.read_offsets(7).unwrap(), plan(7, 42), "offsets/N");
    assert_eq!(reopened.read_commit(7).unwrap(), Some(commit(7)), "commits/N");
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
    let first = CheckpointStore::open(dir.path()).unwrap().query_id().to_string();
    let second = CheckpointStore::open(dir.path()).unwrap().query_id().to_string();
    assert_eq!(first, second);
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
    drop(store);
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

#[test]
fn a_second_owner_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = CheckpointStore::open(dir.path()).unwrap();
    let err = CheckpointStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("in use by another sparklet process"), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    drop(first);
    CheckpointStore::open(dir.path()).unwrap();
}

#[test]
fn an_existing_plan_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    store.write_offsets(&plan(3, 5)).unwrap();
    let err = store.write_offsets(&plan(3, 9)).unwrap_err().to_string();
    assert!(err.contains("offsets/3") && err.contains("already exists"), "{err}");
    assert_eq!(store.read_offsets(3).unwrap(), plan(3, 5));
    assert!(!dir.path().join("offsets/.3.tmp").exists(), "no tmp file left");
}

#[test]
fn the_state_before_a_batch_is_the_newest_older_state_file_and_survives_purging() {
    use arrow::array::RecordBatch;
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    let empty = RecordBatch::new_empty(crate::schema::campaigns());
    assert!(store.read_state_before(5).unwrap().is_none());
    store.write_state(2, &empty).unwrap();
    store.write_state(6, &empty).unwrap();
    assert!(store.read_state_before(2).unwrap().is_none(), "state/2 is what batch 2 left");
    assert_eq!(store.read_state_before(6).unwrap().map(|b| b.schema()), Some(crate::schema::campaigns()));
    store.purge_before(5).unwrap();
    assert!(store.read_state_before(6).unwrap().is_some(), "the state before the kept batches stays");
    store.purge_before(7).unwrap();
    assert!(store.read_state_before(7).unwrap().is_some());
    assert!(dir.path().join("state").join("6").exists() && !dir.path().join("state").join("2").exists());
}

mod layouts {
    use super::*;
    use crate::checkpoint::layout::Layout;

    fn local(dir: &Path) -> Files {
        Files::Local(dir.to_path_buf())
    }

    #[test]
    fn a_new_query_records_its_shard_count_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(&local(dir.path()), Some(3)).unwrap();
        assert!(layout.is_sharded() && layout.count() == 3);
        assert_eq!(layout.shard_dir(2).local(), Some(dir.path().join("shards/2").as_path()));
        let shard = layout.open_shard(2).unwrap();
        assert_eq!(shard.query_id(), layout.query_id());
        assert!(matches!(layout.open_shard(2), Err(Error::CheckpointInUse { .. })), "one process per shard");
        assert!(layout.open_shard(1).is_ok(), "other shards are free");
        assert!(layout.open_shard(3).is_err());
        assert_eq!(Layout::open(&local(dir.path()), None).unwrap().count(), 3, "no --shards: as recorded");
        let err = Layout::open(&local(dir.path()), Some(2)).unwrap_err().to_string();
        assert!(err.contains("has 3 shard(s)") && err.contains("checkpoint repartition"), "{err}");
        assert!(is_checkpoint(dir.path()));
    }

    #[test]
    fn a_query_from_before_shards_stays_one_shard_at_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let old = CheckpointStore::open(dir.path()).unwrap();
        old.write_offsets(&plan(0, 5)).unwrap();
        let id = old.query_id().to_string();
        drop(old);
        let layout = Layout::open(&local(dir.path()), None).unwrap();
        assert!(!layout.is_sharded() && layout.count() == 1 && layout.query_id() == id);
        assert_eq!(layout.shard(0).sink_key(&id), id, "its markers keep their key");
        assert_eq!(layout.open_shard(0).unwrap().dir().local(), Some(dir.path()));
        assert!(Layout::open(&local(dir.path()), Some(4)).is_err(), "a count is not changed by a flag");
    }

    #[test]
    fn an_interrupted_repartition_is_finished_or_dropped_by_the_next_opener() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(&local(dir.path()), Some(2)).unwrap();
        drop(layout.open_all().unwrap());
        // Incomplete (no count yet): dropped, the old layout stays.
        layout.building_dir().unwrap();
        drop(layout.building_shard(0, layout.query_id()).unwrap());
        assert_eq!(Layout::open(&local(dir.path()), None).unwrap().count(), 2);
        assert!(!dir.path().join(".shards.tmp").exists());
        // Complete: swapped in, the old layout kept under retired/.
        layout.building_dir().unwrap();
        for id in 0..3 {
            drop(layout.building_shard(id, layout.query_id()).unwrap());
        }
        let retired = layout.swap_in(3).unwrap();
        assert!(retired.join("shards").exists("count").unwrap());
        let now = Layout::open(&local(dir.path()), None).unwrap();
        assert_eq!((now.count(), now.query_id()), (3, layout.query_id()));
        assert!(is_checkpoint(dir.path()));
    }
}

/// Who may read what a checkpoint holds, and what it accepts as a name.
mod private_files {
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::PathBuf;

    use super::*;
    use crate::checkpoint::layout::Layout;

    /// Every path under `dir` with its permission bits.
    fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            found.push((path.clone(), meta.is_dir(), meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                found.extend(modes(&path));
            }
        }
        found
    }

    #[test]
    fn every_folder_is_0700_and_every_file_0600_under_umask_022() {
        // SAFETY: umask has no preconditions; 022 is the usual default.
        let old = unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/query");
        let layout = Layout::open(&Files::Local(root.clone()), Some(2)).unwrap();
        let empty = arrow::array::RecordBatch::new_empty(crate::schema::campaigns());
        for shard in layout.open_all().unwrap() {
            shard.write_initial_offsets(&HashMap::from([(0, 0)])).unwrap();
            shard.write_offsets(&plan(0, 5)).unwrap();
            write_arrow(&shard.snapshots_dir(), "snap.arrow", &empty).unwrap();
            shard.write_state(0, &empty).unwrap();
            shard.write_commit(&commit(0)).unwrap();
        }
        let single = CheckpointStore::open(&dir.path().join("single")).unwrap();
        single.write_offsets(&plan(0, 5)).unwrap();
        // SAFETY: as above, the mask this process had.
        unsafe { libc::umask(old) };

        let found = modes(dir.path());
        assert!(found.len() > 30, "{found:?}");
        let open: Vec<_> = found
            .iter()
            .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
            .map(|(path, _, mode)| format!("{} {mode:o}", path.display()))
            .collect();
        assert!(open.is_empty(), "readable beyond the owner:\n{}", open.join("\n"));
    }

    #[test]
    fn a_link_or_file_left_at_a_tmp_name_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().join("q")).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        symlink(&victim, dir.path().join("q/offsets/.0.tmp")).unwrap();
        store.write_offsets(&plan(0, 5)).unwrap();
        symlink(&victim, dir.path().join("q/sources/.0.tmp")).unwrap();
        store.write_initial_offsets(&HashMap::from([(0, 1)])).unwrap();
        fs::write(dir.path().join("q/commits/.0.tmp"), b"{half").unwrap();
        store.write_commit(&commit(0)).unwrap();

        assert_eq!(fs::read(&victim).unwrap(), b"precious", "written through a link");
        assert_eq!(store.read_offsets(0).unwrap(), plan(0, 5));
        assert_eq!(store.initial_offsets().unwrap(), Some(HashMap::from([(0, 1)])));
        assert_eq!(store.read_commit(0).unwrap(), Some(commit(0)));
        let left: Vec<_> = modes(&dir.path().join("q")).into_iter().filter(|(p, ..)| p.ends_with(".0.tmp")).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_snapshot_id_that_is_not_a_plain_name_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.write_offsets(&BatchPlan { subscribers_snapshot: "../../etc/passwd".into(), ..plan(0, 5) }).unwrap();
        let err = store.read_offsets(0).unwrap_err();
        assert!(matches!(err, Error::CheckpointFormat { .. }), "{err:?}");
        let text = err.chain().to_string();
        assert!(text.contains("offsets/0") && text.contains("\"../../etc/passwd\" is not a snapshot id"), "{text}");
        assert!(store.resume().is_err(), "a restart stops there too");
    }

    #[test]
    fn a_snapshot_id_is_letters_digits_dashes_and_underscores_of_bounded_length() {
        for good in ["00ab12cd34ef5678-42", "snap", "a_b", &"f".repeat(128)] {
            assert!(is_snapshot_id(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "/etc/passwd", ".hidden", "a.b", "a\0b", "é", &"f".repeat(129)] {
            assert!(!is_snapshot_id(bad), "{bad:?}");
        }
    }
}
