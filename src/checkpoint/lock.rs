//! One owner per checkpoint: an exclusive lock (`flock`) on `<dir>/.lock`,
//! held for the life of the process (released by the kernel when the process
//! exits, however it exits). The file names the holder (host, pid, since
//! when), so a second instance can say who is in the way. It is created
//! `0600` and never opened through a symbolic link.

use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file's name inside the checkpoint directory.
pub(crate) const LOCK_FILE: &str = ".lock";
/// The lock a process holds while it reads or changes a checkpoint's
/// layout (briefly; a repartition for its whole run), apart from the
/// owner's `.lock`, so that opening never waits for a running query.
pub(crate) const LAYOUT_LOCK_FILE: &str = ".layout.lock";

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` or fails at once, naming the holder.
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        Self::acquire_file(dir, LOCK_FILE)
    }

    /// Takes the lock file `name` of `dir` (see [`LAYOUT_LOCK_FILE`]).
    pub(crate) fn acquire_file(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let io = |action| super::io_err(action, &path);
        let mut file = super::local::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = if holder.trim().is_empty() { "unknown".to_string() } else { holder.trim().to_string() };
                return Err(Error::CheckpointInUse { dir: dir.to_path_buf(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io("locking")(e)),
        }
        file.set_len(0).map_err(io("writing"))?;
        let since = crate::util::time::rfc3339_ms(crate::batch::epoch_ms());
        write!(file, "host {}, pid {}, since {since}", crate::util::files::host_name(), std::process::id())
            .map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        Ok(DirLock { _file: file })
    }
}
