//! The demo's Postgres when none runs: a throwaway server of its own, from the
//! installed PostgreSQL binaries (`initdb` and `pg_ctl` in a new temporary
//! directory), on a free port of 127.0.0.1, the only address it listens on
//! and the only one its `pg_hba.conf` lets in (trust; no Unix socket).
//!
//! The server is stopped (`pg_ctl stop -m immediate`) and its directory
//! removed when the [`Guard`] drops (the demo's end, an error, Ctrl-C), or by
//! [`stop`] when a second signal ends the process without running destructors.
//! Only SIGKILL leaves it behind. PostgreSQL refuses to run as root, so a root
//! process runs the server as the `postgres` system user.

use std::ffi::CString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the demo writes when a server answers at [`DEFAULT_ADDR`].
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5432));
/// The `--database-url` value that always starts a throwaway server.
const AUTO: &str = "auto";
/// Where distributions install the versioned binaries (Debian, Ubuntu).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// The programs a throwaway server needs, all from one folder.
const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// The system user a root process runs the server as.
const SERVER_USER: &str = "postgres";

/// The throwaway server of this process, if one was started: the one place
/// both the guard and [`stop`] find it.
static RUNNING: Mutex<Option<Server>> = Mutex::new(None);

/// Stops the throwaway server and removes its directory when dropped.
pub(crate) struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        stop();
    }
}

/// Stops the throwaway server, if one runs, and removes its directory. A
/// concurrent caller waits until that is done.
pub(crate) fn stop() {
    let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(server) = running.take() else { return };
    let started = Instant::now();
    match server.stop() {
        Ok(()) => println!(
            "== stopped the throwaway PostgreSQL and removed {} ({:.2} s)",
            server.dir.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!(
            "sparklet: the throwaway PostgreSQL in {} was not stopped and removed: {e:#}; stop it with \
             `pg_ctl stop -D {} -m immediate` and remove the directory",
            server.dir.display(),
            server.data().display()
        ),
    }
}

/// The Postgres URL the demo writes to: `requested` (`--database-url`) as
/// given; without it, the local default if a server answers there. Otherwise,
/// and for `auto`, a throwaway server, with the guard that removes it.
pub(crate) fn database(requested: Option<&str>) -> Result<(String, Option<Guard>)> {
    let why = match requested {
        Some(url) if url != AUTO => return Ok((url.to_string(), None)),
        Some(_) => format!("--database-url {AUTO}"),
        None if TcpStream::connect_timeout(&DEFAULT_ADDR, Duration::from_secs(2)).is_ok() => {
            return Ok((DEFAULT_URL.to_string(), None))
        }
        None => format!("no PostgreSQL server answers at {DEFAULT_ADDR}"),
    };
    let (url, guard) = start_throwaway(&why)?;
    Ok((url, Some(guard)))
}

/// Finds the binaries and the user to run them as, then starts the server.
fn start_throwaway(why: &str) -> Result<(String, Guard)> {
    let Some(bin) = find_binaries() else {
        bail!(
            "{why} and no PostgreSQL binaries ({}) were found on PATH or in {VERSIONED_ROOT}/*/bin to start a \
             throwaway server: install them with `apt-get install postgresql`, or pass --database-url \
             postgres://USER@HOST:PORT/DB",
            PROGRAMS.join(", ")
        );
    };
    let user = server_user()?;
    let dir = std::env::temp_dir().join(format!("sparklet-demo-postgres-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let server = Server { dir, bin, user };
    *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) = Some(server.clone());
    // From here on, an error drops the guard, which removes the directory.
    let guard = Guard(());
    let as_user = if user.is_some() { format!(", as user {SERVER_USER}") } else { String::new() };
    println!("== {why}: starting a throwaway PostgreSQL from {}{as_user}", server.bin.display());
    let started = Instant::now();
    let url = server.start()?;
    println!(
        "== throwaway PostgreSQL {} at {url} (data in {}, removed at the end), started in {:.2} s",
        server.version(),
        server.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok((url, guard))
}

/// The folder with all of [`PROGRAMS`]: the one of `initdb` on PATH (links
/// resolved), else the newest version's in [`VERSIONED_ROOT`].
fn find_binaries() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path: Vec<PathBuf> = std::env::split_paths(&path)
        .filter_map(|dir| dir.join("initdb").canonicalize().ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .collect();
    on_path
        .into_iter()
        .chain(versioned_bins(Path::new(VERSIONED_ROOT)))
        .find(|dir| PROGRAMS.iter().all(|program| is_executable(&dir.join(program))))
}

/// `root/<version>/bin` for every version folder in `root`, newest first
/// (numerically: 15 before 9.6).
fn versioned_bins(root: &Path) -> Vec<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name.split('.').map(str::parse).collect::<Result<Vec<u32>, _>>().ok()?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, bin)| bin).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The uid and gid the server runs as: none (this process's) unless this
/// process is root, which PostgreSQL refuses to run as.
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    match system_user(SERVER_USER) {
        Some(ids) => Ok(Some(ids)),
        None => bail!(
            "running as root, and PostgreSQL refuses to run as root: the throwaway server would run as the \
             `{SERVER_USER}` system user, which does not exist (`apt-get install postgresql` creates it); run the \
             demo as another user, or pass --database-url postgres://USER@HOST:PORT/DB"
        ),
    }
}

/// The uid and gid of the system user `name`, if it exists.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is a plain C struct for which all zeroes is a valid value.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf's length is the one
    // passed; getpwnam_r writes only into entry, buf and found.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some((entry.pw_uid, entry.pw_gid))
}

/// One throwaway server: its directory (`data/`, `server.log`), the folder
/// of its binaries, and the uid and gid they run as (when this process is root).
#[derive(Clone)]
struct Server {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl Server {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Creates the cluster, configures it and starts it; returns its URL.
    fn start(&self) -> Result<String> {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to user {SERVER_USER}", self.dir.display()))?;
        }
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(self.data()).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N"]);
        run(initdb, "initdb")?;
        let port = free_port()?;
        self.configure(port)?;
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("start").arg("-D").arg(self.data()).arg("-l").arg(self.log()).args(["-w", "-t", "60"]);
        if let Err(e) = run(pg_ctl, "pg_ctl start") {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            return Err(e.context(format!("the server's log: {}", last_lines(&log))));
        }
        Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
    }

    /// Listens on 127.0.0.1:`port` only (no Unix socket), lets in anyone
    /// from there and nobody else, and trades durability for speed.
    fn configure(&self, port: u16) -> Result<()> {
        let settings = format!(
            "\n# sparklet demo: a throwaway server\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = ''\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        );
        let conf = self.data().join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .with_context(|| format!("writing {}", conf.display()))?;
        let hba = self.data().join("pg_hba.conf");
        std::fs::write(&hba, "# sparklet demo: trust on 127.0.0.1 only\nhost all all 127.0.0.1/32 trust\n")
            .with_context(|| format!("writing {}", hba.display()))
    }

    /// Stops the server if it runs, then removes the directory.
    fn stop(&self) -> Result<()> {
        if self.data().join("postmaster.pid").exists() {
            let mut pg_ctl = self.command("pg_ctl");
            pg_ctl.arg("stop").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "-t", "30"]);
            run(pg_ctl, "pg_ctl stop")?;
        }
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    /// The version `pg_ctl --version` names (e.g. 15.18), or nothing.
    fn version(&self) -> String {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("--version");
        let text = run(pg_ctl, "pg_ctl --version").unwrap_or_default();
        text.split_whitespace().nth(2).unwrap_or_default().to_string()
    }

    /// One of the server's programs, run in its directory as its user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// Runs `command` to its end; its stdout, or an error with the last lines
/// of its output.
fn run(mut command: Command, what: &str) -> Result<String> {
    let out = command.output().with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let text = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        bail!("{what} failed ({}): {}", out.status, last_lines(&text));
    }
    Ok(stdout)
}

/// The last few non-empty lines of `text`, on one line.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// A port of 127.0.0.1 nothing listens on (now).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free local port")?;
    Ok(listener.local_addr().context("finding a free local port")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_binaries_come_newest_first() -> Result<()> {
        let root = tempfile::tempdir()?;
        for version in ["9.6", "15", "13", "17", "notes"] {
            std::fs::create_dir(root.path().join(version))?;
        }
        let found: Vec<PathBuf> = versioned_bins(root.path());
        let expected: Vec<PathBuf> =
            ["17", "15", "13", "9.6"].iter().map(|v| root.path().join(v).join("bin")).collect();
        assert_eq!(found, expected);
        Ok(())
    }

    #[test]
    fn an_explicit_url_is_used_as_given_without_a_server() -> Result<()> {
        let (url, guard) = database(Some("postgres://nobody@db.invalid:5432/x"))?;
        assert_eq!(url, "postgres://nobody@db.invalid:5432/x");
        assert!(guard.is_none());
        Ok(())
    }
}
