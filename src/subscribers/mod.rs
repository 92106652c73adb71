//! The cached copy of `subscribers_restaurants` and its snapshots: loaded
//! by binary COPY straight into Arrow ([`copy`]), scanned by the SQL through
//! a restaurant index ([`scan`]), kept fresh in the background
//! ([`refresh`]) by a timer or on change ([`watch`]).
//!
//! The cache is loaded from Postgres with the query in `sql/subscribers.sql`,
//! at start and again as `--subscribers-refresh` says
//! ([`crate::subscribers::refresh`]). Each distinct content is
//! saved once as an Arrow IPC file under `<checkpoint>/snapshots/`, named by
//! its content hash; `offsets/N` names the snapshot batch N joined with, so a
//! replay joins with the same rows even if the table changed since.

use std::collections::HashSet;
use std::fs;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, DictionaryArray, RecordBatch, StringArray};
use arrow::datatypes::Int32Type;
use arrow::error::ArrowError;
use arrow::ipc::reader::FileReader;
use futures::StreamExt;

use crate::checkpoint::{io_err, Files};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::schema::text::Text;
use crate::util::hash::Fnv64;

mod copy;
pub(crate) mod refresh;
pub(crate) mod scan;
pub(crate) mod watch;

use copy::CopyRows;
use scan::SubscribersTable;

/// File (in the SQL directory) with the Postgres query that loads the cache.
pub const SUBSCRIBERS_SQL: &str = "subscribers.sql";

/// One loaded version of the subscribers table.
#[derive(Debug, Clone)]
pub struct Subscribers {
    /// `client_id`, `restaurant_id` rows.
    pub batch: RecordBatch,
    /// The same rows as the SQL files scan them (indexed by restaurant, see
    /// [`crate::subscribers::scan`]), made once per version, not per batch.
    pub table: SubscribersTable,
    /// Content hash; also the snapshot's file name.
    pub id: String,
    /// When this version was read from Postgres (or from its snapshot).
    pub loaded_at: Instant,
    /// How long reading it took, hashing and sharing included.
    pub load_time: Duration,
    /// Repeated (client, restaurant) pairs left out when this version was
    /// loaded: a favourite saved twice must not notify twice.
    pub duplicates_dropped: usize,
    /// The table's change version this content was read at (the counter
    /// bumped by the on-change trigger, [`crate::subscribers::watch`]); 0
    /// when the counter is not installed or the version is not known.
    pub version: i64,
}

impl Subscribers {
    /// What the progress records and events say about this version.
    pub(crate) fn progress(&self) -> crate::ops::progress::SubscribersProgress {
        crate::ops::progress::SubscribersProgress {
            snapshot: self.id.clone(),
            version: self.version,
            num_rows: self.num_rows() as u64,
            age_ms: crate::util::time::ms(self.age()),
            load_ms: crate::util::time::ms(self.load_time),
            duplicates_dropped: self.duplicates_dropped as u64,
        }
    }

    /// Builds a version from rows, computing its id.
    pub fn from_rows(client_ids: Vec<String>, restaurant_ids: Vec<String>) -> Result<Self> {
        let restaurants: DictionaryArray<Int32Type> = restaurant_ids.iter().map(String::as_str).collect();
        let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(client_ids)), Arc::new(restaurants)];
        let batch = RecordBatch::try_new(crate::schema::subscribers(), columns)
            .map_err(|e| Error::arrow("building the subscribers table", e))?;
        Self::from_batch(batch, 0)
    }

    /// A version holding `batch` (client_id, restaurant_id), its id the hash
    /// of its rows in order.
    fn from_batch(batch: RecordBatch, duplicates_dropped: usize) -> Result<Self> {
        let mut hasher = Fnv64::default();
        for (c, r) in pairs(&batch) {
            hasher.write(c.as_bytes());
            hasher.write(&[0]);
            hasher.write(r.as_bytes());
            hasher.write(&[1]);
        }
        let id = format!("{:016x}-{}", hasher.finish(), batch.num_rows());
        Self::new(batch, id, duplicates_dropped)
    }

    fn new(batch: RecordBatch, id: String, duplicates_dropped: usize) -> Result<Self> {
        let table = SubscribersTable::new(batch.clone());
        let (loaded_at, load_time) = (Instant::now(), Duration::ZERO);
        Ok(Subscribers { batch, table, id, loaded_at, load_time, duplicates_dropped, version: 0 })
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

/// Loads the subscribers with the query in `<sql_dir>/subscribers.sql`,
/// streamed by binary COPY straight into Arrow columns
/// ([`crate::subscribers::copy`]), in one REPEATABLE READ transaction: with
/// `versioned`, the table's change version is read in the same snapshot
/// ([`crate::subscribers::watch`]), so the version names exactly these rows.
pub async fn load(postgres: &PostgresConfig, sql_dir: &Path, versioned: bool) -> Result<Subscribers> {
    let started = Instant::now();
    let mut subs = read_table(postgres, sql_dir, versioned).await?;
    subs.load_time = started.elapsed();
    Ok(subs)
}

async fn read_table(postgres: &PostgresConfig, sql_dir: &Path, versioned: bool) -> Result<Subscribers> {
    let path = sql_dir.join(SUBSCRIBERS_SQL);
    let query = crate::util::files::read_sql_file(&path)?;
    let client = crate::postgres::connect(postgres, "loading the subscribers cache").await?;
    let failed = |e: tokio_postgres::Error| Error::Sql {
        path: path.clone(),
        message: format!(
            "the query failed on {}: {}{}",
            postgres.target(),
            postgres_message(&e),
            missing_table_hint(&e, sql_dir)
        ),
    };
    let snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    client.batch_execute(snapshot).await.map_err(|e| Error::postgres("starting the subscribers read", e))?;
    let version = match versioned {
        true => crate::subscribers::watch::read_version(&client).await?,
        false => 0,
    };
    let copy = format!(
        "COPY (SELECT client_id::text, restaurant_id::text FROM ({}\n) AS subscribers_query) TO STDOUT (FORMAT binary)",
        query.trim().trim_end_matches(';')
    );
    let stream = client.copy_out(copy.as_str()).await.map_err(failed)?;
    futures::pin_mut!(stream);
    let mut rows = CopyRows::default();
    while let Some(chunk) = stream.next().await {
        rows.feed(&chunk.map_err(failed)?).map_err(|e| Error::Sql { path: path.clone(), message: e.to_string() })?;
    }
    client.batch_execute("COMMIT").await.map_err(|e| Error::postgres("ending the subscribers read", e))?;
    let loaded = rows.finish().map_err(|e| Error::Sql { path: path.clone(), message: e.to_string() })?;
    let mut subs = match loaded.sorted {
        true => Subscribers::from_batch(loaded.batch, loaded.duplicates)?,
        false => {
            let (batch, dropped) = distinct_unsorted(&loaded.batch)?;
            Subscribers::from_batch(batch, dropped)?
        }
    };
    subs.version = version;
    Ok(subs)
}

/// The (client_id, restaurant_id) pairs of a subscribers batch.
fn pairs(batch: &RecordBatch) -> impl Iterator<Item = (&str, &str)> {
    let column = |i: usize| Text::of(batch.column(i).as_ref());
    let (clients, restaurants) = (column(0), column(1));
    let n = if clients.is_some() && restaurants.is_some() { batch.num_rows() } else { 0 };
    (0..n).filter_map(move |i| Some((clients?.value(i), restaurants?.value(i))))
}

/// Rows in another order than `sql/subscribers.sql`'s byte order (an edited
/// query): repeats are dropped with a hash set, first occurrence kept, order
/// kept (about 0.5 s for 1M rows; the byte-order path costs nothing extra).
/// `subscribers_restaurants` has no unique key on (client_id,
/// restaurant_id), so a favourite saved twice appears twice.
fn distinct_unsorted(batch: &RecordBatch) -> Result<(RecordBatch, usize)> {
    let mut seen = HashSet::with_capacity(batch.num_rows());
    let keep: BooleanArray = pairs(batch).map(|pair| Some(seen.insert(pair))).collect();
    let kept = arrow::compute::filter_record_batch(batch, &keep)
        .map_err(|e| Error::arrow("dropping repeated subscriber pairs", e))?;
    let dropped = batch.num_rows() - kept.num_rows();
    Ok((kept, dropped))
}

/// Saves `subs` under `dir` unless a snapshot with its id is already there.
pub fn save_snapshot(dir: &Files, subs: &Subscribers) -> Result<()> {
    let name = snapshot_name(&subs.id);
    if dir.exists(&name)? {
        return Ok(());
    }
    crate::checkpoint::write_arrow(dir, &name, &subs.batch)
}

/// Saves `subs` as a snapshot in each of `dirs` (one per shard the process
/// runs, so each shard's checkpoint stands alone): written once, then
/// hard-linked into the other local folders (written where a link cannot
/// be made).
pub fn save_snapshots(dirs: &[Files], subs: &Subscribers) -> Result<()> {
    let Some((first, others)) = dirs.split_first() else { return Ok(()) };
    save_snapshot(first, subs)?;
    let name = snapshot_name(&subs.id);
    for dir in others {
        let linked = match (first.local(), dir.local()) {
            (Some(from), Some(to)) => {
                to.join(&name).exists() || fs::hard_link(from.join(&name), to.join(&name)).is_ok()
            }
            _ => false,
        };
        if !linked {
            save_snapshot(dir, subs)?;
        }
    }
    Ok(())
}

/// Reads the snapshot `id` back (for a replayed batch).
pub fn load_snapshot(dir: &Files, id: &str) -> Result<Subscribers> {
    let started = Instant::now();
    let name = snapshot_name(id);
    let path = dir.describe(&name);
    let file = dir.open(&name)?.ok_or_else(|| {
        io_err("opening subscribers snapshot", &path)(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    })?;
    let reader = FileReader::try_new(file, None).map_err(|e| Error::arrow(format!("reading {}", path.display()), e))?;
    let reading = |e| Error::arrow(format!("reading {}", path.display()), e);
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(compact(batch.map_err(reading)?).map_err(reading)?);
    }
    let batch = arrow::compute::concat_batches(&crate::schema::subscribers(), &batches).map_err(reading)?;
    let mut subs = Subscribers::new(batch, id.to_string(), 0)?;
    subs.load_time = started.elapsed();
    Ok(subs)
}

/// A snapshot batch in the cache's form: snapshots written before the cache
/// kept `restaurant_id` as a dictionary hold it as plain text.
fn compact(batch: RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
    crate::schema::cast_to(&batch, crate::schema::subscribers())
}

/// Deletes snapshots whose id is not in `keep`.
pub fn purge_snapshots(dir: &Files, keep: &HashSet<String>) -> Result<()> {
    for name in dir.list()? {
        if name.strip_suffix(".arrow").is_some_and(|id| !keep.contains(id)) {
            dir.remove(&name)?;
        }
    }
    Ok(())
}

fn snapshot_name(id: &str) -> String {
    format!("{id}.arrow")
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Schema};

    fn subs(rows: &[(&str, &str)]) -> Subscribers {
        Subscribers::from_rows(
            rows.iter().map(|r| r.0.to_string()).collect(),
            rows.iter().map(|r| r.1.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_pair_saved_twice_is_kept_once_in_any_order() {
        let (kept, dropped) =
            distinct_unsorted(&subs(&[("c1", "r1"), ("c2", "r1"), ("c1", "r1"), ("c1", "r2")]).batch).unwrap();
        assert_eq!(kept, subs(&[("c1", "r1"), ("c2", "r1"), ("c1", "r2")]).batch);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn same_content_same_id_other_content_other_id() {
        let a = subs(&[("c1", "r1"), ("c2", "r1")]);
        assert_eq!(a.id, subs(&[("c1", "r1"), ("c2", "r1")]).id);
        assert_ne!(a.id, subs(&[("c1", "r1")]).id);
        assert_ne!(subs(&[("c1r", "1")]).id, subs(&[("c1", "r1")]).id);
    }

    #[test]
    fn restaurants_are_stored_once_each() {
        let a = subs(&[("c1", "r1"), ("c2", "r1"), ("c3", "r2")]);
        let restaurants = a.batch.column(1).as_dictionary::<Int32Type>();
        assert_eq!(restaurants.values().len(), 2);
        assert_eq!(pairs(&a.batch).collect::<Vec<_>>(), [("c1", "r1"), ("c2", "r1"), ("c3", "r2")]);
    }

    #[test]
    fn a_snapshot_with_plain_restaurant_ids_loads_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = subs(&[("c1", "r1"), ("c2", "r1")]);
        let plain = Schema::new(vec![
            Field::new("client_id", DataType::Utf8, false),
            Field::new("restaurant_id", DataType::Utf8, false),
        ]);
        let columns: Vec<ArrayRef> = vec![a.batch.column(0).clone(), Arc::new(StringArray::from(vec!["r1", "r1"]))];
        let old = RecordBatch::try_new(Arc::new(plain), columns).unwrap();
        let mut writer = arrow::ipc::writer::FileWriter::try_new(
            fs::File::create(dir.path().join(snapshot_name(&a.id))).unwrap(),
            &old.schema(),
        )
        .unwrap();
        writer.write(&old).unwrap();
        writer.finish().unwrap();
        let back = load_snapshot(&Files::Local(dir.path().to_path_buf()), &a.id).unwrap();
        assert_eq!(back.batch, a.batch);
    }

    #[test]
    fn snapshot_round_trips_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let a = subs(&[("c1", "r1"), ("c2", "r1")]);
        let b = subs(&[("c3", "r2")]);
        save_snapshot(&Files::Local(dir.path().to_path_buf()), &a).unwrap();
        save_snapshot(&Files::Local(dir.path().to_path_buf()), &b).unwrap();
        let back = load_snapshot(&Files::Local(dir.path().to_path_buf()), &a.id).unwrap();
        assert_eq!(back.batch, a.batch);
        purge_snapshots(&Files::Local(dir.path().to_path_buf()), &HashSet::from([b.id.clone()])).unwrap();
        assert!(load_snapshot(&Files::Local(dir.path().to_path_buf()), &a.id).is_err());
        assert_eq!(load_snapshot(&Files::Local(dir.path().to_path_buf()), &b.id).unwrap().num_rows(), 1);
    }
}
