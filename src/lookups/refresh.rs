//! The job's lookups as the planner sees them: each loaded at start (an
//! on-change lookup's trigger installed first), kept fresh by a background
//! task ([`super::keep`]), and pinned per batch; once a lookup has gone
//! unconfirmed longer than its `max_staleness` while reloads fail, planning
//! fails the run (as the subscribers cache does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;

use super::keep::{self, Loader, Published, Source};
use super::load::{self, LoadError};
use super::watch::{self as change, Watched};
use super::{LookupTable, Pinned};
use crate::checkpoint::Files;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::job::{Job, LookupRefresh};

/// One lookup: its columns, bound and loader.
struct Entry {
    name: String,
    path: PathBuf,
    schema: SchemaRef,
    max_staleness: Duration,
    loader: Arc<Loader>,
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
    /// fresh in the background. An on-change lookup's tables get the change
    /// trigger first.
    pub async fn start(postgres: &PostgresConfig, job: &Job, dir: &std::path::Path) -> Result<Lookups> {
        let mut entries = Vec::new();
        for (name, options) in &job.options.lookups {
            let path = dir.join(&options.query);
            let job_toml = dir.join(crate::job::OPTIONS_FILE);
            let query = job.lookup_queries.get(name).cloned().unwrap_or_default();
            let (refresh, max_staleness) = options.schedule().map_err(|e| Error::Job {
                at: job_toml.display().to_string(),
                message: format!("[lookups.{name}] {e}"),
            })?;
            let watched = match &refresh {
                LookupRefresh::OnChange { watch, .. } => {
                    let naming = change::Naming { lookup: name, job_toml, target: postgres.target() };
                    Some(change::install(postgres, watch, &naming).await?)
                }
                LookupRefresh::Every(_) => None,
            };
            let source = Source { postgres: postgres.clone(), name: name.clone(), query, path: path.clone() };
            let (table, version) = read(&source, watched.as_ref()).await?;
            let schema = table.batch.schema();
            let first = Published { table, version, confirmed_at: Instant::now(), failure: None };
            let loader = Arc::new(Loader::new(source, watched, first));
            let task = tokio::spawn(keep::background(loader.clone(), refresh));
            entries.push(Entry { name: name.clone(), path, schema, max_staleness, loader, task });
        }
        Ok(Lookups { entries: Arc::new(entries) })
    }

    /// Each lookup's name and columns (the steps are planned with them).
    pub fn schemas(&self) -> Vec<(String, SchemaRef)> {
        self.entries.iter().map(|e| (e.name.clone(), e.schema.clone())).collect()
    }

    /// Pins each lookup's version for a batch planned now (an on-change
    /// lookup's version read first, and a newer one loaded): saved as a
    /// snapshot in `snapshots` (before the plan is written), ids returned.
    /// Fails a lookup unconfirmed for longer than its bound.
    pub(crate) async fn pin(&self, snapshots: &Files) -> Result<Pinned> {
        let mut pinned = Pinned::new();
        for entry in self.entries.iter() {
            if entry.task.is_finished() {
                let message =
                    format!("lookup {}: the background refresh stopped (a bug); restart sparklet", entry.name);
                return Err(Error::Runtime(message));
            }
            if entry.loader.watched.is_some() {
                entry.loader.catch_up().await;
            }
            let published = entry.loader.published();
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
            let published = entry.loader.published().table;
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
        let published: Vec<String> = self.entries.iter().map(|e| e.loader.published().table.id).collect();
        let keep = pinned.values().chain(&published).map(String::as_str).collect();
        super::purge_snapshots(snapshots, &keep)
    }
}

/// Reads a lookup from `source`, with its version when it is `watched`.
pub(super) async fn read(source: &Source, watched: Option<&Watched>) -> Result<(LookupTable, i64)> {
    let (postgres, name) = (&source.postgres, &source.name);
    let client = crate::postgres::connect(postgres, &format!("loading lookup {name}")).await?;
    let version_query = watched.map(|w| w.version_query.as_str());
    let (batch, version) =
        load::rows(&client, &source.query, version_query).await.map_err(|e| failed(e, postgres, name, &source.path))?;
    Ok((LookupTable::new(name, batch)?, version))
}

/// The columns `job`'s lookup queries give, without running them, and that
/// each on-change lookup's `watch` tables exist: a start-up check (`sparklet
/// check`; the trigger is not installed).
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
        if let Ok((LookupRefresh::OnChange { watch, .. }, _)) = options.schedule() {
            let job_toml = dir.join(crate::job::OPTIONS_FILE);
            let naming = change::Naming { lookup: name, job_toml, target: postgres.target() };
            for table in &watch {
                change::find(&client, table, &naming).await?;
            }
        }
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
