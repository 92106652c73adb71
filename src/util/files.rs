//! The job's files and this machine's name.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads a SQL file, naming it when it is missing or empty.
pub(crate) fn read_sql_file(path: &Path) -> Result<String> {
    let sql = fs::read_to_string(path)
        .map_err(|e| Error::Sql { path: path.to_path_buf(), message: format!("cannot read the file: {e}") })?;
    if sql.trim().is_empty() {
        return Err(Error::Sql { path: path.to_path_buf(), message: "the file is empty".into() });
    }
    Ok(sql)
}

/// This machine's host name, for messages naming a process.
pub(crate) fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_string())
}
