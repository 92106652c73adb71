//! The job's lookup tables (`job.toml`'s `[lookups.NAME]`), besides the
//! subscribers cache: each a Postgres query whose rows the SQL steps read as
//! the table `NAME`. Loaded at start (a query that fails stops the start,
//! naming its file), reloaded in the background every `refresh` or, with
//! `refresh = "on-change"`, when a transaction that changed one of its
//! `watch` tables commits ([`keep`], [`watch`]), and pinned per batch:
//! planning saves the version each lookup has as a snapshot
//! (`snapshots/lookups/<id>.arrow`, the id a hash of its rows) and the plan
//! records the ids, so a replay reads the same rows even if the tables
//! changed since.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hasher;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;

use crate::checkpoint::{io_err, Files};
use crate::error::{Error, Result};
use crate::util::hash::Fnv64;

mod keep;
mod load;
mod refresh;
mod watch;

pub use refresh::{check_queries, Lookups};

/// One loaded version of a lookup.
#[derive(Debug, Clone)]
pub struct LookupTable {
    /// The name the SQL steps read it under.
    pub name: String,
    pub batch: RecordBatch,
    /// `<name>-<hash of the rows>-<rows>`: also the snapshot's file name.
    pub id: String,
}

impl LookupTable {
    /// A version of lookup `name` holding `batch`, its id computed.
    pub(crate) fn new(name: &str, batch: RecordBatch) -> Result<Self> {
        let bytes = ipc_bytes(&batch)?;
        let mut hasher = Fnv64::default();
        hasher.write(&bytes);
        let id = format!("{name}-{:016x}-{}", hasher.finish(), batch.num_rows());
        Ok(LookupTable { name: name.to_string(), batch, id })
    }

    /// An empty table of `schema` (start-up planning of the steps).
    pub fn empty(name: &str, schema: SchemaRef) -> Self {
        LookupTable { name: name.to_string(), batch: RecordBatch::new_empty(schema), id: String::new() }
    }
}

/// `batch` as an Arrow IPC file in memory.
fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let encoding = |e| Error::arrow("encoding a lookup table", e);
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::FileWriter::try_new(&mut out, &batch.schema()).map_err(encoding)?;
    writer.write(batch).map_err(encoding)?;
    writer.finish().map_err(encoding)?;
    drop(writer);
    Ok(out)
}

/// Where lookup snapshots live inside a shard's `snapshots/` folder.
fn folder(snapshots: &Files) -> Files {
    snapshots.join("lookups")
}

/// Saves `table` under `snapshots` unless it is there already.
pub(crate) fn save_snapshot(snapshots: &Files, table: &LookupTable) -> Result<()> {
    let dir = folder(snapshots);
    let name = format!("{}.arrow", table.id);
    if dir.exists(&name)? {
        return Ok(());
    }
    dir.ensure()?;
    crate::checkpoint::write_arrow(&dir, &name, &table.batch)
}

/// Reads snapshot `id` of lookup `name` back (for a replayed batch).
pub(crate) fn load_snapshot(snapshots: &Files, name: &str, id: &str) -> Result<LookupTable> {
    let dir = folder(snapshots);
    let file_name = format!("{id}.arrow");
    let path: PathBuf = dir.describe(&file_name);
    let file = dir.open(&file_name)?.ok_or_else(|| {
        io_err("opening lookup snapshot", &path)(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    })?;
    let reading = |e| Error::arrow(format!("reading {}", path.display()), e);
    let reader = FileReader::try_new(file, None).map_err(reading)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(reading)?;
    let batch = arrow::compute::concat_batches(&schema, &batches).map_err(reading)?;
    Ok(LookupTable { name: name.to_string(), batch, id: id.to_string() })
}

/// Deletes the lookup snapshots whose id is not in `keep`.
pub(crate) fn purge_snapshots(snapshots: &Files, keep: &HashSet<&str>) -> Result<()> {
    let dir = folder(snapshots);
    for name in dir.list()? {
        if name.strip_suffix(".arrow").is_some_and(|id| !keep.contains(id)) {
            dir.remove(&name)?;
        }
    }
    Ok(())
}

/// The ids a plan pins, by lookup name.
pub type Pinned = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn table(rows: &[(&str, i64)]) -> LookupTable {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("k", arrow::datatypes::DataType::Utf8, true),
            arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, true),
        ]));
        let keys = StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let values = Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        LookupTable::new("t", RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(values)]).unwrap()).unwrap()
    }

    #[test]
    fn same_rows_same_id_and_snapshots_round_trip_and_purge() {
        let (a, b) = (table(&[("x", 1)]), table(&[("x", 2)]));
        assert_eq!(a.id, table(&[("x", 1)]).id);
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("t-") && a.id.ends_with("-1"), "{}", a.id);
        let dir = tempfile::tempdir().unwrap();
        let files = Files::Local(dir.path().to_path_buf());
        save_snapshot(&files, &a).unwrap();
        save_snapshot(&files, &b).unwrap();
        assert_eq!(load_snapshot(&files, "t", &a.id).unwrap().batch, a.batch);
        purge_snapshots(&files, &HashSet::from([b.id.as_str()])).unwrap();
        assert!(load_snapshot(&files, "t", &a.id).is_err());
        assert_eq!(load_snapshot(&files, "t", &b.id).unwrap().batch, b.batch);
    }
}
