//! The object-store half of [`super::files`]: a folder is a key prefix in
//! `s3://`, `gs://` or `az://` (the `object_store` crate); every put is
//! atomic, and blocking callers run each call to its end ([`block_on`]).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// A folder (a key prefix) in an object store.
#[derive(Clone)]
pub struct ObjectFolder {
    pub(super) store: Arc<dyn ObjectStore>,
    /// The folder as a URL, for messages (`s3://bucket/prefix`).
    pub(super) url: String,
    pub(super) prefix: ObjectPath,
}

/// How long the object store's client retries one request itself: a few
/// seconds, for a dropped connection or a throttled call. A longer outage
/// fails the trigger, which the trigger loop retries for `--retry-for`,
/// saying what it waits for (`/readyz`, the log) rather than hanging inside
/// one request for the client's default 3 minutes.
pub(super) fn request_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 4,
        retry_timeout: std::time::Duration::from_secs(10),
    }
}

impl ObjectFolder {
    pub(super) fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let location = child(&self.prefix, name);
        match block_on(async { self.store.get(&location).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("reading", name, e)),
        }
    }

    pub(super) fn move_to(&self, dest: &ObjectFolder) -> Result<()> {
        let objects: Vec<ObjectPath> =
            block_on(self.store.list(Some(&self.prefix)).map_ok(|m| m.location).try_collect())
                .map_err(|e| self.failed("listing", "", e))?;
        for from in objects {
            let relative: Vec<_> = from.prefix_match(&self.prefix).into_iter().flatten().collect();
            let to = relative.into_iter().fold(dest.prefix.clone(), |path, part| path.join(part));
            block_on(self.store.copy(&from, &to)).map_err(|e| self.failed("copying", from.as_ref(), e))?;
            block_on(self.store.delete(&from)).map_err(|e| self.failed("removing", from.as_ref(), e))?;
        }
        Ok(())
    }

    pub(super) fn failed(&self, action: &'static str, name: &str, source: object_store::Error) -> Error {
        let location = if name.is_empty() { self.url.clone() } else { format!("{}/{name}", self.url) };
        Error::CheckpointObject { action, location, source }
    }
}

pub(super) fn child(prefix: &ObjectPath, name: &str) -> ObjectPath {
    name.split('/').filter(|p| !p.is_empty()).fold(prefix.clone(), |path, part| path.join(part))
}

pub(super) fn bad_url(url: &str, e: object_store::Error) -> Error {
    Error::config("--checkpoint-dir", format!("'{url}': {e}"))
}

/// Runs an object-store call to its end from blocking code: inside a
/// multi-threaded tokio runtime with `block_in_place`, elsewhere (a
/// current-thread runtime, or none) on a thread of its own, in one runtime
/// shared by every such call and kept for the process's life. (A runtime per
/// call would drop the tasks that drive the HTTP client's pooled
/// connections, and a later call reusing one fails: "runtime dropped the
/// dispatch task".)
pub(super) fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        _ => std::thread::scope(|scope| {
            let run = scope.spawn(|| shared_runtime().map(|rt| rt.block_on(future)));
            match run.join() {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => panic!("starting a runtime for the object store failed: {e}"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }),
    }
}

/// The runtime of [`block_on`]'s calls made outside a multi-threaded one.
fn shared_runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sparklet-object-store")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(Clone::clone)
}
