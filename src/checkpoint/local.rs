//! A checkpoint on local disk: how its folders and files are made.
//!
//! Folders are created `0700` and files `0600` whatever the umask: the
//! checkpoint holds the subscribers' client ids (`snapshots/`) and the
//! query's offsets, which are the owner's alone. A file is written to a tmp
//! file beside it, created exclusively (`O_EXCL`, never through a link
//! someone left at that name), fsynced, then linked (create) or renamed
//! (replace) into place, and the folder is fsynced: a crash leaves the old
//! file or the new one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::io_err;
use crate::error::{Error, Result};

/// The mode of the folders sparklet creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The mode of the files sparklet creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents, each `0700`.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path).map_err(io_err("creating", path))
}

/// Options that create a new `0600` file, never following a symbolic link
/// at its name.
pub(crate) fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    options
}

/// Creates `path` holding `bytes`, atomically, failing if it exists: tmp
/// file, fsync, hard link into place (which refuses an existing name), fsync
/// of the parent directory.
pub(crate) fn write_new_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_tmp(path, |file| file.write_all(bytes).map_err(io_err("writing", path)))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::CheckpointConflict { path: path.to_path_buf() })
        }
        other => other.map_err(io_err("creating", path))?,
    }
    sync_parent(path)
}

/// Writes `path` atomically: `write` streams the content into a tmp file,
/// which is fsynced and renamed into place; then the folder is fsynced.
pub(crate) fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = write_tmp(path, write)?;
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    sync_parent(path)
}

/// Writes (with `write`) and syncs `.<name>.tmp` beside `path`; returns its path.
fn write_tmp(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = create_tmp(&tmp)?;
    write(&mut file)?;
    file.sync_all().map_err(io_err("syncing", &tmp))?;
    Ok(tmp)
}

/// Creates `tmp` exclusively. One there already is what an interrupted
/// write left (the folder's owner is the only writer): it is unlinked (a
/// link is removed, not followed) and the file created again, exclusively.
fn create_tmp(tmp: &Path) -> Result<File> {
    let create = || private_file().write(true).create_new(true).open(tmp);
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tracing::debug!(path = %tmp.display(), "removing the tmp file of an interrupted write");
            fs::remove_file(tmp).map_err(io_err("removing", tmp))?;
            create().map_err(io_err("creating", tmp))
        }
        other => other.map_err(io_err("creating", tmp)),
    }
}

/// Fsyncs the folder that holds `path`.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        let dir = File::open(parent).map_err(io_err("opening", parent))?;
        dir.sync_all().map_err(io_err("syncing", parent))?;
    }
    Ok(())
}
