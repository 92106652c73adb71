//! Keeping each lookup fresh, off the batch path: a background task per
//! lookup reloads it every `refresh` and publishes the version; a failed
//! reload keeps the published one, and once a lookup has gone unconfirmed
//! longer than its `max_staleness`, planning fails the run (as the
//! subscribers cache does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use tokio::sync::watch;

use super::load::{self, LoadError};
use super::{LookupTable, Pinned};
use crate::checkpoint::Files;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::job::Job;

/// A lookup's newest version and how sure it is.
#[derive(Debug, Clone)]
struct Published {
    table: LookupTable,
    confirmed_at: Instant,
    failure: Option<String>,
}

/// One lookup: where it comes from and its published version.
struct Entry {
    name: String,
    path: PathBuf,
    schema: SchemaRef,
    max_staleness: Duration,
    published: watch::Receiver<Published>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The job's lookups, loaded and kept fresh. Cloning shares them.
#[derive(Clone, Default)]
pub struct Lookups {
    entries: Arc<Vec<Entry>>,
}

impl Lookups {
    /// Loads every lookup of `job` (from folder `dir`) once, then keeps each
    /// fresh in the background.
    pub async fn start(postgres: &PostgresConfig, job: &Job, dir: &std::path::Path) -> Result<Lookups> {
        let mut entries = Vec::new();
        for (name, options) in &job.options.lookups {
            let path = dir.join(&options.query);
            let query = job.lookup_queries.get(name).cloned().unwrap_or_default();
            let (refresh, max_staleness) =
                options.durations().map_err(|e| Error::Sql { path: path.clone(), message: e })?;
            let table = read(postgres, name, &query, &path).await?;
            let schema = table.batch.schema();
            let first = Published { table, confirmed_at: Instant::now(), failure: None };
            let (sender, published) = watch::channel(first);
            let source = Source { postgres: postgres.clone(), name: name.clone(), query, path: path.clone() };
            let task = tokio::spawn(source.keep_fresh(refresh, sender));
            entries.push(Entry { name: name.clone(), path, schema, max_staleness, published, task });
        }
        Ok(Lookups { entries: Arc::new(entries) })
    }

    /// Each lookup's name and columns (the steps are planned with them).
    pub fn schemas(&self) -> Vec<(String, SchemaRef)> {
        self.entries.iter().map(|e| (e.name.clone(), e.schema.clone())).collect()
    }

    /// Pins each lookup's published version for a batch planned now: saved
    /// as a snapshot in `snapshots` (before the plan is written), ids
    /// returned. Fails a lookup unconfirmed for longer than its bound.
    pub(crate) fn pin(&self, snapshots: &Files) -> Result<Pinned> {
        let mut pinned = Pinned::new();
        for entry in self.entries.iter() {
            let published = entry.published.borrow().clone();
            let unconfirmed = published.confirmed_at.elapsed();
            if let Some(cause) = published.failure.filter(|_| unconfirmed > entry.max_staleness) {
                let message = format!(
                    "lookup {}: not reloaded for {} s, more than its max_staleness {}; last failure: {cause}",
                    entry.name,
                    unconfirmed.as_secs(),
                    humantime::format_duration(entry.max_staleness)
                );
                return Err(Error::Sql { path: entry.path.clone(), message });
            }
            super::save_snapshot(snapshots, &published.table)?;
            pinned.insert(entry.name.clone(), published.table.id.clone());
        }
        Ok(pinned)
    }

    /// The versions a plan pinned: the published one where it is the same,
    /// else its snapshot.
    pub(crate) fn tables(&self, pinned: &Pinned, snapshots: &Files) -> Result<Vec<LookupTable>> {
        let mut tables = Vec::new();
        for entry in self.entries.iter() {
            let published = entry.published.borrow().table.clone();
            let table = match pinned.get(&entry.name) {
                Some(id) if *id == published.id => published,
                Some(id) => super::load_snapshot(snapshots, &entry.name, id)?,
                // Planned before the lookup was added to the job: nothing of
                // the batch was written (the job's fingerprint changed, see
                // the replay check), so it runs with the new job.
                None => published,
            };
            tables.push(table);
        }
        Ok(tables)
    }

    /// Removes the lookup snapshots no replay needs: all but `pinned` (the
    /// last committed batch's) and the published versions.
    pub(crate) fn purge(&self, snapshots: &Files, pinned: &Pinned) -> Result<()> {
        let published: Vec<String> = self.entries.iter().map(|e| e.published.borrow().table.id.clone()).collect();
        let keep = pinned.values().chain(&published).map(String::as_str).collect();
        super::purge_snapshots(snapshots, &keep)
    }
}

/// Where a lookup's rows come from.
struct Source {
    postgres: PostgresConfig,
    name: String,
    query: String,
    path: PathBuf,
}

impl Source {
    /// Reloads every `refresh`, publishing each version (a failure is
    /// logged and kept, with the version before it).
    async fn keep_fresh(self, refresh: Duration, sender: watch::Sender<Published>) {
        loop {
            tokio::time::sleep(refresh).await;
            match read(&self.postgres, &self.name, &self.query, &self.path).await {
                Ok(table) => {
                    if table.id != sender.borrow().table.id {
                        tracing::info!(lookup = %self.name, id = %table.id, rows = table.batch.num_rows(), "lookup reloaded: a new version");
                    }
                    sender.send_replace(Published { table, confirmed_at: Instant::now(), failure: None });
                }
                Err(e) => {
                    let cause = e.chain().to_string();
                    tracing::warn!(lookup = %self.name, cause = %cause, "reloading a lookup failed; batches go on with the version loaded before");
                    sender.send_modify(|p| p.failure = Some(cause));
                }
            }
        }
    }
}

/// Reads lookup `name` with `query` (from file `path`).
async fn read(postgres: &PostgresConfig, name: &str, query: &str, path: &std::path::Path) -> Result<LookupTable> {
    let client = crate::postgres::connect(postgres, &format!("loading lookup {name}")).await?;
    let batch = load::rows(&client, query).await.map_err(|e| failed(e, postgres, name, path))?;
    LookupTable::new(name, batch)
}

/// The columns `job`'s lookup queries give, without running them: a start-up
/// check (`sparklet check`).
pub async fn check_queries(
    postgres: &PostgresConfig,
    job: &Job,
    dir: &std::path::Path,
) -> Result<Vec<(String, SchemaRef)>> {
    let client = crate::postgres::connect(postgres, "checking the lookup queries").await?;
    let mut schemas = Vec::new();
    for (name, options) in &job.options.lookups {
        let query = job.lookup_queries.get(name).cloned().unwrap_or_default();
        let path = dir.join(&options.query);
        let schema = load::schema(&client, &query).await.map_err(|e| failed(e, postgres, name, &path))?;
        schemas.push((name.clone(), schema));
    }
    Ok(schemas)
}

fn failed(e: LoadError, postgres: &PostgresConfig, name: &str, path: &std::path::Path) -> Error {
    let why = match e {
        LoadError::Postgres(e) => match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        },
        LoadError::Other(why) => why,
    };
    Error::Sql {
        path: path.to_path_buf(),
        message: format!("lookup {name}: the query failed on {}: {why}", postgres.target()),
    }
}
