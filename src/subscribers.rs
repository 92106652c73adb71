//! The cached copy of `subscribers_restaurants` and its snapshots.
//!
//! The cache is loaded from Postgres with the query in `sql/subscribers.sql`,
//! at start and again every `--subscribers-refresh`. Each distinct content is
//! saved once as an Arrow IPC file under `<checkpoint>/snapshots/`, named by
//! its content hash; `offsets/N` names the snapshot batch N joined with, so a
//! replay joins with the same rows even if the table changed since.

use std::collections::HashSet;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use crate::checkpoint::{io_err, write_bytes_atomic};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// File (in the SQL directory) with the Postgres query that loads the cache.
pub const SUBSCRIBERS_SQL: &str = "subscribers.sql";

/// One loaded version of the subscribers table.
#[derive(Debug, Clone)]
pub struct Subscribers {
    /// `client_id`, `restaurant_id` rows.
    pub batch: RecordBatch,
    /// Content hash; also the snapshot's file name.
    pub id: String,
    /// When this version was read from Postgres (or from its snapshot).
    pub loaded_at: Instant,
    /// Repeated (client, restaurant) pairs left out when this version was
    /// loaded: a favourite saved twice must not notify twice.
    pub duplicates_dropped: usize,
}

impl Subscribers {
    /// Builds a version from rows, computing its id.
    pub fn from_rows(client_ids: Vec<String>, restaurant_ids: Vec<String>) -> Result<Self> {
        let mut hasher = Fnv64::default();
        for (c, r) in client_ids.iter().zip(&restaurant_ids) {
            hasher.write(c.as_bytes());
            hasher.write(&[0]);
            hasher.write(r.as_bytes());
            hasher.write(&[1]);
        }
        let columns: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(client_ids)), Arc::new(StringArray::from(restaurant_ids))];
        let batch = RecordBatch::try_new(crate::schema::subscribers(), columns)
            .map_err(|e| Error::arrow("building the subscribers table", e))?;
        let id = format!("{:016x}-{}", hasher.finish(), batch.num_rows());
        Ok(Subscribers { batch, id, loaded_at: Instant::now(), duplicates_dropped: 0 })
    }

    /// Number of (client, restaurant) rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Time since this version was loaded.
    pub fn age(&self) -> Duration {
        self.loaded_at.elapsed()
    }
}

/// Loads the subscribers with the query in `<sql_dir>/subscribers.sql`.
pub async fn load(postgres: &PostgresConfig, sql_dir: &Path) -> Result<Subscribers> {
    let path = sql_dir.join(SUBSCRIBERS_SQL);
    let query = crate::transform::read_sql_file(&path)?;
    let client = crate::postgres::connect(postgres, "loading the subscribers cache").await?;
    let rows = client.query(query.as_str(), &[]).await.map_err(|e| Error::Sql {
        path: path.clone(),
        message: format!(
            "the query failed on {}: {}{}",
            postgres.target(),
            postgres_message(&e),
            missing_table_hint(&e, sql_dir)
        ),
    })?;
    let mut pairs = Vec::with_capacity(rows.len());
    for row in &rows {
        let pair =
            row.try_get::<_, String>("client_id").and_then(|c| Ok((c, row.try_get::<_, String>("restaurant_id")?)));
        pairs.push(pair.map_err(|e| Error::Sql {
            path: path.clone(),
            message: format!("must return non-null text columns client_id and restaurant_id: {e}"),
        })?);
    }
    drop(rows);
    let (pairs, duplicates_dropped) = distinct(pairs);
    let (clients, restaurants) = pairs.into_iter().unzip();
    let mut subscribers = Subscribers::from_rows(clients, restaurants)?;
    subscribers.duplicates_dropped = duplicates_dropped;
    Ok(subscribers)
}

/// The pairs without repeats (first occurrence kept, order kept) and the
/// number of repeats left out. `subscribers_restaurants` has no unique key on
/// (client_id, restaurant_id), so a favourite saved twice appears twice.
///
/// `sql/subscribers.sql` returns the rows in byte order of (restaurant_id,
/// client_id), so repeats are neighbours and one pass drops them (27 ms for
/// 1M rows, measured); rows in another order (an edited query) go through a
/// hash set instead (about 0.5 s for 1M rows).
fn distinct(mut pairs: Vec<(String, String)>) -> (Vec<(String, String)>, usize) {
    let total = pairs.len();
    if pairs.windows(2).all(|w| (&w[0].1, &w[0].0) <= (&w[1].1, &w[1].0)) {
        pairs.dedup();
    } else {
        let keep: Vec<bool> = {
            let mut seen = std::collections::HashSet::with_capacity(pairs.len());
            pairs.iter().map(|(c, r)| seen.insert((c.as_str(), r.as_str()))).collect()
        };
        let mut keep = keep.into_iter();
        pairs.retain(|_| keep.next().unwrap_or(true));
    }
    let dropped = total - pairs.len();
    (pairs, dropped)
}

/// Saves `subs` under `dir` unless a snapshot with its id is already there.
pub fn save_snapshot(dir: &Path, subs: &Subscribers) -> Result<()> {
    let path = snapshot_path(dir, &subs.id);
    if path.exists() {
        return Ok(());
    }
    let mut bytes = Vec::new();
    let mut writer = FileWriter::try_new(&mut bytes, &subs.batch.schema())
        .map_err(|e| Error::arrow("encoding the subscribers snapshot", e))?;
    writer.write(&subs.batch).map_err(|e| Error::arrow("encoding the subscribers snapshot", e))?;
    writer.finish().map_err(|e| Error::arrow("encoding the subscribers snapshot", e))?;
    drop(writer);
    write_bytes_atomic(&path, &bytes)
}

/// Reads the snapshot `id` back (for a replayed batch).
pub fn load_snapshot(dir: &Path, id: &str) -> Result<Subscribers> {
    let path = snapshot_path(dir, id);
    let file = fs::File::open(&path).map_err(io_err("opening subscribers snapshot", &path))?;
    let reader = FileReader::try_new(file, None).map_err(|e| Error::arrow(format!("reading {}", path.display()), e))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|e| Error::arrow(format!("reading {}", path.display()), e))?);
    }
    let batch = arrow::compute::concat_batches(&crate::schema::subscribers(), &batches)
        .map_err(|e| Error::arrow(format!("reading {}", path.display()), e))?;
    Ok(Subscribers { batch, id: id.to_string(), loaded_at: Instant::now(), duplicates_dropped: 0 })
}

/// Deletes snapshots whose id is not in `keep`.
pub fn purge_snapshots(dir: &Path, keep: &HashSet<String>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(io_err("listing", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(id) = name.strip_suffix(".arrow") {
            if !keep.contains(id) {
                fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
            }
        }
    }
    Ok(())
}

fn snapshot_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.arrow"))
}

/// How to create the tables when the query names one that does not exist.
fn missing_table_hint(e: &tokio_postgres::Error, sql_dir: &Path) -> String {
    if e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        return String::new();
    }
    let schema = sql_dir.join("schema.sql");
    format!(" (create the tables with: psql \"$DATABASE_URL\" -f {})", schema.display())
}

fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// FNV-1a, 64 bit: stable across runs and platforms (unlike `DefaultHasher`).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(rows: &[(&str, &str)]) -> Subscribers {
        Subscribers::from_rows(
            rows.iter().map(|r| r.0.to_string()).collect(),
            rows.iter().map(|r| r.1.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_pair_saved_twice_is_kept_once() {
        let p = |c: &str, r: &str| (c.to_string(), r.to_string());
        let (kept, dropped) = distinct(vec![p("c1", "r1"), p("c2", "r1"), p("c1", "r1"), p("c1", "r2")]);
        assert_eq!(kept, vec![p("c1", "r1"), p("c2", "r1"), p("c1", "r2")]);
        assert_eq!(dropped, 1);
        let sorted = vec![p("c1", "r1"), p("c1", "r1"), p("c2", "r1"), p("c1", "r2"), p("c1", "r2")];
        assert_eq!(distinct(sorted), (vec![p("c1", "r1"), p("c2", "r1"), p("c1", "r2")], 2));
    }

    #[test]
    fn same_content_same_id_other_content_other_id() {
        let a = subs(&[("c1", "r1"), ("c2", "r1")]);
        assert_eq!(a.id, subs(&[("c1", "r1"), ("c2", "r1")]).id);
        assert_ne!(a.id, subs(&[("c1", "r1")]).id);
        assert_ne!(subs(&[("c1r", "1")]).id, subs(&[("c1", "r1")]).id);
    }

    #[test]
    fn snapshot_round_trips_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let a = subs(&[("c1", "r1"), ("c2", "r1")]);
        let b = subs(&[("c3", "r2")]);
        save_snapshot(dir.path(), &a).unwrap();
        save_snapshot(dir.path(), &b).unwrap();
        let back = load_snapshot(dir.path(), &a.id).unwrap();
        assert_eq!(back.batch, a.batch);
        purge_snapshots(dir.path(), &HashSet::from([b.id.clone()])).unwrap();
        assert!(load_snapshot(dir.path(), &a.id).is_err());
        assert_eq!(load_snapshot(dir.path(), &b.id).unwrap().num_rows(), 1);
    }
}
