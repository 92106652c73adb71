//! Keeping the subscribers cache fresh, off the batch path.
//!
//! A background task reloads the table and publishes each new version as an
//! immutable [`Subscribers`] snapshot (saved under the checkpoint first); a
//! batch pins the newest published version when it is planned
//! ([`Refresher::current`]). When it reloads depends on
//! `--subscribers-refresh`:
//!
//! - an interval: every interval;
//! - `on-change`: when the table's change version moves past the cache's:
//!   on a notification, after every (re)connect of the listener, and every
//!   `--subscribers-version-check` (notifications sent while the listener
//!   is away are lost). When a batch is planned (after the input's end
//!   offsets are read) the version is read once more and a newer table is
//!   loaded there and then, so a batch never joins with a table older than a
//!   change committed before any message it reads was produced.
//!
//! A failed reload keeps the published version and is retried with
//! back-off; once the cache has gone unconfirmed longer than
//! `--subscribers-max-staleness`, [`Refresher::current`] fails the run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::checkpoint::Files;
use crate::config::{PostgresConfig, RefreshPolicy, SubscribersSettings};
use crate::error::{Error, Result};
use crate::ops::events;
use crate::subscribers::watch::{self as change, Listener};
use crate::subscribers::{self, Subscribers};

/// How long reading the version before a plan may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The newest published version and how sure it is.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub subscribers: Subscribers,
    /// When the table was last known to hold this version.
    pub confirmed_at: Instant,
    /// The last reload failure, while reloads fail.
    pub failure: Option<String>,
}

/// Loads, saves and publishes versions; shared by the task and the planner.
#[derive(Clone)]
struct Loader {
    postgres: PostgresConfig,
    sql_dir: PathBuf,
    /// Each shard's snapshot folder (see [`subscribers::save_snapshots`]).
    snapshots: Vec<Files>,
    versioned: bool,
    published: watch::Sender<Published>,
    /// Held while a version is loaded, saved and published: the background
    /// task and the planner never load at once (on two cores, two loads of
    /// a large table take twice as long each; the second finds the first's
    /// version published), and a purge, which skips its turn while it is
    /// held, never removes a snapshot about to be pinned.
    loading: Arc<tokio::sync::Mutex<()>>,
}

/// The planner's handle on the background refresh; dropping it stops it.
pub(crate) struct Refresher {
    loader: Loader,
    settings: SubscribersSettings,
    published: watch::Receiver<Published>,
    task: tokio::task::JoinHandle<()>,
    /// On-change: a connection for reading the version before a plan.
    probe: crate::postgres::Probe,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Refresher {
    /// Loads the first version (installing the change trigger first with
    /// `on-change`), saves it and starts the background refresh.
    pub(crate) async fn start(
        postgres: &PostgresConfig,
        sql_dir: &Path,
        snapshots: Vec<Files>,
        settings: SubscribersSettings,
    ) -> Result<Self> {
        let versioned = matches!(settings.refresh, RefreshPolicy::OnChange { .. });
        if versioned {
            change::install(postgres, sql_dir).await?;
        }
        let first = subscribers::load(postgres, sql_dir, versioned).await?;
        subscribers::save_snapshots(&snapshots, &first)?;
        events::SubscribersLoaded { subscribers: &first.progress(), reason: "start" }.emit();
        let (published, receiver) =
            watch::channel(Published { subscribers: first, confirmed_at: Instant::now(), failure: None });
        let loader = Loader {
            postgres: postgres.clone(),
            sql_dir: sql_dir.to_path_buf(),
            snapshots,
            versioned,
            published,
            loading: Default::default(),
        };
        let task = tokio::spawn(background(loader.clone(), settings.refresh));
        Ok(Refresher { loader, settings, published: receiver, task, probe: Default::default() })
    }

    /// The version loaded by [`start`](Self::start) or since, as published
    /// (no version check: for the query's start, right after the load).
    pub(crate) fn latest(&self) -> Subscribers {
        self.published.borrow().subscribers.clone()
    }

    /// The version a batch planned now joins with (see the module docs).
    pub(crate) async fn current(&self) -> Result<Subscribers> {
        if self.task.is_finished() {
            return Err(Error::Runtime("subscribers: the background refresh stopped (a bug); restart sparklet".into()));
        }
        if matches!(self.settings.refresh, RefreshPolicy::OnChange { .. }) {
            self.catch_up().await;
        }
        let published = self.published.borrow().clone();
        let unconfirmed = published.confirmed_at.elapsed();
        if let Some(cause) = published.failure.filter(|_| unconfirmed > self.settings.max_staleness) {
            return Err(Error::SubscribersStale {
                age_s: unconfirmed.as_secs(),
                max: humantime::format_duration(self.settings.max_staleness).to_string(),
                cause,
            });
        }
        Ok(published.subscribers)
    }

    /// On-change: reads the table's version and, if it moved past the
    /// published one, loads it now. A failure leaves the published version
    /// (the staleness bound applies).
    async fn catch_up(&self) {
        let version = match self.read_version().await {
            Ok(version) => version,
            Err(e) => return self.loader.failed(&e, "checking the version before a plan"),
        };
        let have = self.published.borrow().subscribers.version;
        if version <= have {
            return self.loader.confirm();
        }
        if let Err(e) = self.loader.reload_unless_at(version, "version check before a plan").await {
            self.loader.failed(&e, "loading a changed table before a plan");
        }
    }

    /// The version, on the probe connection, within [`VERSION_TIMEOUT`]; the
    /// connection is made again after a failure or a timeout.
    async fn read_version(&self) -> Result<i64> {
        let (postgres, purpose) = (&self.loader.postgres, "the subscribers version check");
        self.probe.query_i64(postgres, purpose, change::VERSION_QUERY, VERSION_TIMEOUT).await
    }

    /// Removes the snapshots in one shard's folder `dir` that no replay
    /// needs: all but `pinned` (that shard's last batch's) and the newest
    /// published one. Skipped while a version is being loaded (the next
    /// commit purges).
    pub(crate) fn purge(&self, dir: &Files, pinned: &str) -> Result<()> {
        let Ok(_loading) = self.loader.loading.try_lock() else { return Ok(()) };
        let newest = self.published.borrow().subscribers.id.clone();
        subscribers::purge_snapshots(dir, &HashSet::from([pinned.to_string(), newest]))
    }
}

impl Loader {
    /// Reloads unless version `wanted` (or a newer one) is published by the
    /// time no other load runs.
    async fn reload_unless_at(&self, wanted: i64, reason: &str) -> Result<()> {
        let _loading = self.loading.lock().await;
        if self.published.borrow().subscribers.version >= wanted {
            return Ok(());
        }
        self.load_and_publish(reason).await
    }

    /// Reloads (one load at a time).
    async fn reload(&self, reason: &str) -> Result<()> {
        let _loading = self.loading.lock().await;
        self.load_and_publish(reason).await
    }

    /// Loads the table, saves its snapshot and publishes it (unless a
    /// version at least as new was published meanwhile).
    async fn load_and_publish(&self, reason: &str) -> Result<()> {
        let fresh = subscribers::load(&self.postgres, &self.sql_dir, self.versioned).await?;
        let (dir, subs) = (self.snapshots.clone(), fresh.clone());
        tokio::task::spawn_blocking(move || subscribers::save_snapshots(&dir, &subs))
            .await
            .map_err(|e| Error::Runtime(format!("saving the subscribers snapshot: {e}")))??;
        let published = self.published.send_if_modified(|p| {
            let newer = !self.versioned || fresh.version >= p.subscribers.version;
            if newer {
                *p = Published { subscribers: fresh.clone(), confirmed_at: Instant::now(), failure: None };
            }
            newer
        });
        if published {
            events::SubscribersLoaded { subscribers: &fresh.progress(), reason }.emit();
        }
        Ok(())
    }

    /// The published version is the table's now.
    fn confirm(&self) {
        self.published.send_modify(|p| p.confirmed_at = Instant::now());
        crate::ops::metrics::metrics().subscribers_confirmed(crate::batch::epoch_ms());
    }

    /// Records a failed reload or version check.
    fn failed(&self, error: &Error, doing: &str) {
        let age = self.published.borrow().confirmed_at.elapsed();
        events::SubscribersReloadFailed { error, age, doing }.emit();
        let cause = error.chain().to_string();
        self.published.send_modify(|p| p.failure = Some(cause));
    }
}

/// The background refresh: forever, until the handle is dropped.
async fn background(loader: Loader, policy: RefreshPolicy) {
    match policy {
        RefreshPolicy::Every(interval) => every(loader, interval).await,
        RefreshPolicy::OnChange { check } => on_change(loader, check).await,
    }
}

/// Reloads every `interval`; after a failure, retries with back-off.
async fn every(loader: Loader, interval: Duration) {
    let mut failures = 0;
    loop {
        let wait = if failures == 0 {
            interval
        } else {
            crate::util::backoff::backoff(failures, crate::util::backoff::jitter())
        };
        tokio::time::sleep(wait).await;
        match loader.reload("timer").await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                loader.failed(&e, "reloading on the timer");
            }
        }
    }
}

/// Listens for changes; reconnects with back-off when the listener's
/// connection ends, checking the version after each connect.
async fn on_change(loader: Loader, check: Duration) {
    let mut failures = 0;
    loop {
        match listen(&loader, check).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                loader.failed(&e, "listening for changes");
            }
        }
        tokio::time::sleep(crate::util::backoff::backoff(failures.max(1), crate::util::backoff::jitter())).await;
    }
}

/// The least time between two reads of the version on notifications, so a
/// flood of them (any role that can connect can NOTIFY) costs at most one
/// small query a second, and a reload only when the version really moved.
const NOTICE_SPACING: Duration = Duration::from_secs(1);

/// One listener connection's life: reload when the table's version moves
/// past the published one (read at connect, after notifications, at most
/// once per [`NOTICE_SPACING`], and every `check`). Returns when the
/// connection ends.
async fn listen(loader: &Loader, check: Duration) -> Result<()> {
    let mut listener = Listener::connect(&loader.postgres).await?;
    let mut known = listener.version().await?;
    let mut read_at = Instant::now();
    tracing::info!(version = known, "listening for subscribers changes");
    loop {
        if known > loader.published.borrow().subscribers.version {
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
        known = listener.version().await?;
        read_at = Instant::now();
    }
}
