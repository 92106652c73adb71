//! Where checkpoint files live: a local folder, or a prefix in an object
//! store (`s3://`, `gs://`, `az://`, through the `object_store` crate), as
//! Spark's `checkpointLocation` takes a path or an HDFS/S3 URL.
//!
//! Both give the checkpoint the same few operations: read a file, create a
//! file only if it is absent, replace a file whole, list a folder, remove a
//! file, move a folder. Locally a file is written to a tmp file, fsynced and
//! then linked (create) or renamed (replace) into place, and the folder is
//! fsynced, so a crash leaves the old file or the new one; folders are made
//! `0700` and files `0600` ([`super::local`]). In an object
//! store every put is atomic, and create-if-absent is a conditional put
//! (`PutMode::Create`, S3's `If-None-Match: *`): of two owners writing
//! `offsets/N`, exactly one succeeds.
//!
//! The operations are blocking, like the local file system calls they
//! replace: an object-store call runs on the caller's tokio runtime
//! (`block_in_place`), or on a runtime of its own outside one.

use std::fs;
use std::io::{Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::io_err;
use super::object::{bad_url, block_on, child, request_retries, ObjectFolder};
use crate::error::{Error, Result};

/// A folder of checkpoint files.
#[derive(Clone)]
pub enum Files {
    Local(PathBuf),
    Object(ObjectFolder),
}

/// A file opened for reading (Arrow IPC files need `Seek`).
pub(crate) trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

impl std::fmt::Display for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Files::Local(path) => write!(f, "{}", path.display()),
            Files::Object(o) => f.write_str(&o.url),
        }
    }
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Files({self})")
    }
}

impl Files {
    /// `--checkpoint-dir`: a local path (or `file://` URL), or an object
    /// store URL. Credentials and endpoints come from the environment, as
    /// each cloud's tools read them (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
    /// `AWS_REGION`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...).
    pub fn parse(location: &str) -> Result<Files> {
        let Some((scheme, rest)) = location.split_once("://") else {
            return Ok(Files::Local(PathBuf::from(location)));
        };
        let url = location.trim_end_matches('/').to_string();
        let store: Arc<dyn ObjectStore> = match scheme {
            "file" => return Ok(Files::Local(PathBuf::from(rest))),
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(&url)
                    .with_retry(request_retries())
                    .build()
                    .map_err(|e| bad_url(&url, e))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(&url)
                    .with_retry(request_retries())
                    .build()
                    .map_err(|e| bad_url(&url, e))?,
            ),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(&url)
                    .with_retry(request_retries())
                    .build()
                    .map_err(|e| bad_url(&url, e))?,
            ),
            other => {
                return Err(Error::config(
                    "--checkpoint-dir",
                    format!(
                        "'{other}://' is not a supported store: give a path, or an s3://, gs://, az:// or file:// URL"
                    ),
                ))
            }
        };
        let prefix = rest.split_once('/').map_or("", |(_, p)| p).trim_matches('/');
        Ok(Files::Object(ObjectFolder { store, url, prefix: ObjectPath::from(prefix) }))
    }

    /// The local folder, if the files are local.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Files::Local(path) => Some(path),
            Files::Object(_) => None,
        }
    }

    /// The folder `name` inside this one.
    pub fn join(&self, name: &str) -> Files {
        match self {
            Files::Local(path) => Files::Local(path.join(name)),
            Files::Object(o) => Files::Object(ObjectFolder {
                store: o.store.clone(),
                url: format!("{}/{name}", o.url),
                prefix: child(&o.prefix, name),
            }),
        }
    }

    /// The folder beside this one named `name` (a reset's `<dir>.<query id>`).
    pub fn sibling(&self, name: &str) -> Files {
        match self {
            Files::Local(path) => Files::Local(path.with_file_name(name)),
            Files::Object(o) => {
                let parent = o.url.rsplit_once('/').map_or(o.url.as_str(), |(p, _)| p);
                let parts: Vec<_> = o.prefix.parts().collect();
                let prefix = match parts.split_last() {
                    Some((_, rest)) => child(&ObjectPath::from_iter(rest.iter().cloned()), name),
                    None => ObjectPath::from(name),
                };
                Files::Object(ObjectFolder { store: o.store.clone(), url: format!("{parent}/{name}"), prefix })
            }
        }
    }

    /// How messages name file `name` of this folder.
    pub fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{self}/{name}"))
    }

    /// Creates the folder (locally; an object store has no folders).
    pub fn ensure(&self) -> Result<()> {
        match self {
            Files::Local(path) => super::local::create_dir_all(path),
            Files::Object(_) => Ok(()),
        }
    }

    /// The content of file `name`, or `None` if there is none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Files::Local(dir) => match fs::read(dir.join(name)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err("reading", &dir.join(name))(e)),
            },
            Files::Object(o) => Ok(o.get(name)?.map(|b| b.to_vec())),
        }
    }

    /// File `name` opened for reading, or `None` if there is none.
    pub(crate) fn open(&self, name: &str) -> Result<Option<Box<dyn ReadSeek>>> {
        match self {
            Files::Local(dir) => match fs::File::open(dir.join(name)) {
                Ok(file) => Ok(Some(Box::new(file))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err("opening", &dir.join(name))(e)),
            },
            Files::Object(o) => Ok(o.get(name)?.map(|b| Box::new(Cursor::new(b)) as Box<dyn ReadSeek>)),
        }
    }

    /// Whether file `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        match self {
            Files::Local(dir) => Ok(dir.join(name).exists()),
            Files::Object(o) => match block_on(o.store.head(&child(&o.prefix, name))) {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(o.failed("reading", name, e)),
            },
        }
    }

    /// Creates file `name` with `bytes`, failing with
    /// [`Error::CheckpointConflict`] if it exists (in an object store: with
    /// other bytes than these, which only another writer can have put).
    pub fn create_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Files::Local(dir) => super::local::write_new_bytes(&dir.join(name), bytes),
            Files::Object(o) => {
                let options = PutOptions { mode: PutMode::Create, ..Default::default() };
                let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
                match block_on(o.store.put_opts(&child(&o.prefix, name), payload, options)) {
                    Ok(_) => Ok(()),
                    // A retried put whose first attempt landed finds its own
                    // bytes there: that is success, not another writer.
                    Err(object_store::Error::AlreadyExists { .. }) if o.get(name)?.as_deref() == Some(bytes) => Ok(()),
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        Err(Error::CheckpointConflict { path: self.describe(name) })
                    }
                    Err(e) => Err(o.failed("creating", name, e)),
                }
            }
        }
    }

    /// Replaces file `name` with `bytes`, whole.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.put_with(name, |w| w.write_all(bytes).map_err(io_err("writing", &self.describe(name))))
    }

    /// Replaces file `name` with what `write` writes (locally streamed to a
    /// tmp file; for an object store gathered, then put).
    pub fn put_with(&self, name: &str, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match self {
            Files::Local(dir) => super::local::write_atomic_with(&dir.join(name), |file| write(file)),
            Files::Object(o) => {
                let mut buffer = Vec::new();
                write(&mut buffer)?;
                let payload = PutPayload::from(Bytes::from(buffer));
                block_on(o.store.put(&child(&o.prefix, name), payload)).map_err(|e| o.failed("writing", name, e))?;
                Ok(())
            }
        }
    }

    /// The names of the files and folders directly inside; none if the
    /// folder does not exist.
    pub fn list(&self) -> Result<Vec<String>> {
        match self {
            Files::Local(dir) => {
                let entries = match fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io_err("listing", dir)(e)),
                };
                let mut names = Vec::new();
                for entry in entries {
                    names.push(entry.map_err(io_err("listing", dir))?.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            }
            Files::Object(o) => {
                let listed =
                    block_on(o.store.list_with_delimiter(Some(&o.prefix))).map_err(|e| o.failed("listing", "", e))?;
                // Some S3-compatible stores (SeaweedFS) list a folder whose
                // files were deleted as an object named like the folder.
                let files = listed.objects.into_iter().map(|m| m.location).filter(|p| *p != o.prefix);
                let folders = listed.common_prefixes.into_iter();
                Ok(files.chain(folders).filter_map(|p| p.filename().map(str::to_string)).collect())
            }
        }
    }

    /// Removes file `name` (one that is gone already is no error).
    pub fn remove(&self, name: &str) -> Result<()> {
        match self {
            Files::Local(dir) => match fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &dir.join(name))(e)),
                _ => Ok(()),
            },
            Files::Object(o) => match block_on(o.store.delete(&child(&o.prefix, name))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(o.failed("removing", name, e)),
            },
        }
    }

    /// Moves this folder, all it holds, to `to` (which must not exist).
    /// Locally one rename; in an object store each object is copied, then
    /// deleted, so an interrupted move leaves every object in at least one
    /// place and is finished by moving again.
    pub fn move_to(&self, to: &Files) -> Result<()> {
        match (self, to) {
            (Files::Local(from), Files::Local(dest)) => {
                if !from.exists() {
                    return Ok(());
                }
                if let Some(parent) = dest.parent() {
                    super::local::create_dir_all(parent)?;
                }
                fs::rename(from, dest).map_err(io_err("moving", from))?;
                super::local::sync_parent(dest)
            }
            (Files::Object(from), Files::Object(dest)) => from.move_to(dest),
            _ => Err(Error::Runtime(format!("cannot move {self} to {to}: not the same store"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_or_file_url_is_local_and_an_unknown_scheme_is_named() {
        assert_eq!(Files::parse("checkpoints/q").unwrap().local(), Some(Path::new("checkpoints/q")));
        assert_eq!(Files::parse("file:///tmp/q").unwrap().local(), Some(Path::new("/tmp/q")));
        let err = Files::parse("ftp://host/q").unwrap_err().to_string();
        assert!(err.contains("--checkpoint-dir") && err.contains("ftp://"), "{err}");
    }

    #[test]
    fn an_s3_url_names_its_files_under_its_prefix() {
        let files = Files::parse("s3://bucket/queries/q1/").unwrap();
        assert_eq!(files.to_string(), "s3://bucket/queries/q1");
        let Files::Object(o) = files.join("shards").join("0") else { panic!("not an object folder") };
        assert_eq!((o.url.as_str(), o.prefix.as_ref()), ("s3://bucket/queries/q1/shards/0", "queries/q1/shards/0"));
        let Files::Object(o) = files.sibling("q1.old") else { panic!("not an object folder") };
        assert_eq!((o.url.as_str(), o.prefix.as_ref()), ("s3://bucket/queries/q1.old", "queries/q1.old"));
    }

    #[test]
    fn local_files_are_created_once_replaced_listed_and_moved() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::Local(dir.path().join("a"));
        files.ensure().unwrap();
        files.create_new("x", b"1").unwrap();
        assert!(matches!(files.create_new("x", b"2"), Err(Error::CheckpointConflict { .. })));
        files.put("y", b"3").unwrap();
        files.put("y", b"4").unwrap();
        assert_eq!(files.read("y").unwrap(), Some(b"4".to_vec()));
        assert_eq!(files.read("z").unwrap(), None);
        let mut names = files.list().unwrap();
        names.sort();
        assert_eq!(names, ["x", "y"]);
        let moved = Files::Local(dir.path().join("b/c"));
        files.move_to(&moved).unwrap();
        assert!(files.list().unwrap().is_empty() && moved.exists("x").unwrap());
    }
}
