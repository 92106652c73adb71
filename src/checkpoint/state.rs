//! `state/N`: what a stateful query holds after batch N (the campaigns
//! `--hold-future-campaigns` keeps, [`crate::hold`]), as an Arrow IPC file
//! whose schema metadata carries the format version. Written only when the
//! state changed, atomically, after both sinks and before `commits/N`; the
//! state before batch N is the newest `state/K` with K < N.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::reader::FileReader;

use super::{io_err, CheckpointStore};
use crate::batch::BatchId;
use crate::error::{Error, Result};

/// The schema metadata key of the format version, and the version written.
const VERSION_KEY: &str = "sparklet.state.version";
const VERSION: &str = "1";

impl CheckpointStore {
    /// Records `state` as what is held after batch `id`.
    pub fn write_state(&self, id: BatchId, state: &RecordBatch) -> Result<()> {
        let metadata = HashMap::from([(VERSION_KEY.to_string(), VERSION.to_string())]);
        let schema = Schema::new(state.schema().fields().clone()).with_metadata(metadata);
        let batch = state.clone().with_schema(schema.into()).map_err(|e| Error::arrow("tagging the state", e))?;
        super::write_arrow(&self.files.join("state"), &id.to_string(), &batch)
    }

    /// What was held before batch `id`: the newest `state/K`, K < `id`.
    pub fn read_state_before(&self, id: BatchId) -> Result<Option<RecordBatch>> {
        let Some(k) = self.batch_ids("state")?.into_iter().filter(|k| *k < id).max() else {
            return Ok(None);
        };
        let state_dir = self.files.join("state");
        let path = state_dir.describe(&k.to_string());
        let file = state_dir.open(&k.to_string())?.ok_or_else(|| {
            io_err("opening", &path)(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        })?;
        let reading = |e| Error::arrow(format!("reading {}", path.display()), e);
        let reader = FileReader::try_new(file, None).map_err(reading)?;
        let version = reader.schema().metadata().get(VERSION_KEY).cloned();
        if version.as_deref() != Some(VERSION) {
            return Err(Error::CheckpointMismatch(format!(
                "{} has state format version {version:?}; this sparklet reads version {VERSION}",
                path.display()
            )));
        }
        // The input's declared columns, as written (without the version).
        let schema = std::sync::Arc::new(reader.schema().as_ref().clone().with_metadata(Default::default()));
        let batches: Vec<RecordBatch> = reader
            .map(|b| b.and_then(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec())))
            .collect::<std::result::Result<_, _>>()
            .map_err(reading)?;
        let state = arrow::compute::concat_batches(&schema, &batches).map_err(reading)?;
        Ok(Some(state))
    }

    /// Deletes state files older than `keep_from`, except the newest of
    /// them (the state before batch `keep_from`).
    pub(super) fn purge_state_before(&self, keep_from: BatchId) -> Result<()> {
        let mut old: Vec<BatchId> = self.batch_ids("state")?.into_iter().filter(|k| *k < keep_from).collect();
        old.sort_unstable();
        old.pop();
        for k in old {
            self.files.join("state").remove(&k.to_string())?;
        }
        Ok(())
    }
}
