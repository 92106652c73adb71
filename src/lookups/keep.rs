//! Keeping one lookup fresh, off the batch path: a background task reloads
//! it and publishes each version. When it reloads depends on `refresh`:
//!
//! - an interval: every interval;
//! - `on-change`: when the lookup's version (its watched tables' change
//!   versions, [`super::watch`]) moves past the published one: on a
//!   notification, after every (re)connect of the listener, and every
//!   `version_check` (notifications sent while the listener is away are
//!   lost). Before each plan ([`Loader::catch_up`]) the version is read once
//!   more and a newer table loaded there and then, so a batch never pins a
//!   version older than a change committed before it was planned.
//!
//! A failed reload or version check keeps the published version; the
//! planner fails the run once it has gone unconfirmed longer than the
//! lookup's `max_staleness`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::watch::{self as change, Listener, Watched};
use super::LookupTable;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::job::LookupRefresh;

/// How long reading the version before a plan may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a plan waits for a changed lookup to load (waiting for a load
/// already running included); then it goes on with the loaded version,
/// within `max_staleness`.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// The least time between two reads of the version on notifications, so a
/// flood of them (any role that can connect can NOTIFY) costs at most one
/// small query a second, and a reload only when the version really moved.
const NOTICE_SPACING: Duration = Duration::from_secs(1);

/// A lookup's newest version and how sure it is.
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub table: LookupTable,
    /// The change version the rows were read at (0 for an interval lookup).
    pub version: i64,
    /// When the table was last known to hold this version.
    pub confirmed_at: Instant,
    /// The last reload or version check failure, while they fail.
    pub failure: Option<String>,
}

/// Where a lookup's rows come from.
pub(super) struct Source {
    pub postgres: PostgresConfig,
    pub name: String,
    pub query: String,
    pub path: PathBuf,
}

/// Loads and publishes one lookup's versions; shared by its background
/// task and the planner.
pub(super) struct Loader {
    pub source: Source,
    /// On-change: the watched tables.
    pub watched: Option<Watched>,
    pub published: watch::Sender<Published>,
    /// Held while a version is loaded and published: the task and the
    /// planner never load at once.
    loading: tokio::sync::Mutex<()>,
    /// On-change: a connection for reading the version before a plan.
    probe: crate::postgres::Probe,
}

impl Loader {
    pub(super) fn new(source: Source, watched: Option<Watched>, first: Published) -> Self {
        let (published, _) = watch::channel(first);
        Loader { source, watched, published, loading: Default::default(), probe: Default::default() }
    }

    /// The published version.
    pub(super) fn published(&self) -> Published {
        self.published.borrow().clone()
    }

    /// Reloads unless version `wanted` (or a newer one) is published by the
    /// time no other load runs.
    async fn reload_unless_at(&self, wanted: i64, reason: &str) -> Result<()> {
        let _loading = self.loading.lock().await;
        if self.published.borrow().version >= wanted {
            return Ok(());
        }
        self.load_and_publish(reason).await
    }

    /// Loads the lookup and publishes it (an on-change lookup: unless a
    /// newer version was published meanwhile).
    async fn load_and_publish(&self, reason: &str) -> Result<()> {
        let (table, version) = super::refresh::read(&self.source, self.watched.as_ref()).await?;
        let name = &self.source.name;
        self.published.send_if_modified(|p| {
            if version < p.version {
                return false;
            }
            if table.id != p.table.id {
                tracing::info!(lookup = %name, id = %table.id, version, rows = table.batch.num_rows(), reason, "lookup reloaded: a new version");
            }
            *p = Published { table, version, confirmed_at: Instant::now(), failure: None };
            true
        });
        Ok(())
    }

    /// The published version is the tables' now.
    fn confirm(&self) {
        self.published.send_modify(|p| {
            p.confirmed_at = Instant::now();
            p.failure = None;
        });
    }

    /// Records a failed reload or version check.
    fn failed(&self, error: &Error, doing: &str) {
        let cause = error.chain().to_string();
        let age_s = self.published.borrow().confirmed_at.elapsed().as_secs();
        tracing::warn!(lookup = %self.source.name, doing, age_s, cause = %cause, "a lookup's reload failed; batches go on with the version loaded before");
        self.published.send_modify(|p| p.failure = Some(cause));
    }

    /// On-change, before a plan: reads the version and, if it moved past
    /// the published one, loads it now. A failure leaves the published
    /// version (the staleness bound applies).
    pub(super) async fn catch_up(&self) {
        if tokio::time::timeout(CATCH_UP_TIMEOUT, self.catch_up_now()).await.is_err() {
            let why = format!(
                "postgres: {} did not give lookup {}'s changed rows within {CATCH_UP_TIMEOUT:?}",
                self.source.postgres.target(),
                self.source.name
            );
            self.failed(&Error::Runtime(why), "loading a changed lookup before a plan");
        }
    }

    async fn catch_up_now(&self) {
        let version = match self.read_version().await {
            Ok(version) => version,
            Err(e) => return self.failed(&e, "checking the version before a plan"),
        };
        if version <= self.published.borrow().version {
            return self.confirm();
        }
        if let Err(e) = self.reload_unless_at(version, "version check before a plan").await {
            self.failed(&e, "loading a changed lookup before a plan");
        }
    }

    /// The version, on the probe connection, within [`VERSION_TIMEOUT`]; the
    /// connection is made again after a failure or a timeout.
    async fn read_version(&self) -> Result<i64> {
        let Some(watched) = &self.watched else { return Ok(0) };
        let purpose = format!("lookup {}'s version check", self.source.name);
        self.probe.query_i64(&self.source.postgres, &purpose, &watched.version_query, VERSION_TIMEOUT).await
    }
}

/// The background refresh: forever, until the task is aborted.
pub(super) async fn background(loader: std::sync::Arc<Loader>, refresh: LookupRefresh) {
    match refresh {
        LookupRefresh::Every(interval) => every(&loader, interval).await,
        LookupRefresh::OnChange { version_check, .. } => on_change(&loader, version_check).await,
    }
}

/// Reloads every `interval` (a failure is logged and kept, with the version
/// before it).
async fn every(loader: &Loader, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let _loading = loader.loading.lock().await;
        if let Err(e) = loader.load_and_publish("timer").await {
            loader.failed(&e, "reloading on the timer");
        }
    }
}

/// Listens for changes; reconnects with back-off when the listener's
/// connection ends, checking the version after each connect.
async fn on_change(loader: &Loader, check: Duration) {
    let mut failures = 0;
    loop {
        match listen(loader, check).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                loader.failed(&e, "listening for changes");
            }
        }
        tokio::time::sleep(crate::util::backoff::backoff(failures.max(1), crate::util::backoff::jitter())).await;
    }
}

/// One listener connection's life: reload when the version moves past the
/// published one (read at connect, after notifications, at most once per
/// [`NOTICE_SPACING`], and every `check`). Returns when the connection ends.
async fn listen(loader: &Loader, check: Duration) -> Result<()> {
    let Some(watched) = &loader.watched else { return Ok(()) };
    let name = &loader.source.name;
    let mut listener = Listener::connect(&loader.source.postgres, watched, name).await?;
    let mut known = version_within(&listener.client, loader).await?;
    let mut read_at = Instant::now();
    tracing::info!(lookup = %name, version = known, "listening for lookup changes");
    loop {
        if known > loader.published.borrow().version {
            loader.reload_unless_at(known, "change").await?;
        } else {
            loader.confirm();
        }
        tokio::select! {
            notified = listener.next_notice() => {
                if !notified {
                    return Ok(());
                }
                tokio::time::sleep_until((read_at + NOTICE_SPACING).into()).await;
            }
            _ = tokio::time::sleep(check) => {}
        }
        known = version_within(&listener.client, loader).await?;
        read_at = Instant::now();
    }
}

/// The listener's read of the version, within [`VERSION_TIMEOUT`] (a
/// connection that stopped answering ends the listener, which reconnects).
async fn version_within(client: &tokio_postgres::Client, loader: &Loader) -> Result<i64> {
    let Some(watched) = &loader.watched else { return Ok(0) };
    let name = &loader.source.name;
    let read = tokio::time::timeout(VERSION_TIMEOUT, change::read_version(client, watched, name)).await;
    read.unwrap_or_else(|_| {
        Err(Error::Runtime(format!(
            "postgres: {} did not answer lookup {name}'s version check within {VERSION_TIMEOUT:?}",
            loader.source.postgres.target()
        )))
    })
}
