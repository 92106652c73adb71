//! `sparklet demo` where no PostgreSQL server runs: it starts a throwaway
//! one from the installed binaries, writes to it, and leaves nothing behind,
//! neither at its end nor on Ctrl-C. `--database-url auto` forces that path
//! (the test machine's shared server answers on 5432); the demo's TMPDIR is
//! the test's own folder, so what it leaves there can be checked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::child::{signal, wait};
use crate::support::repo_path;

/// A demo's folders: TMPDIR, checkpoint, and its stdout and stderr files.
struct Demo {
    dir: tempfile::TempDir,
}

impl Demo {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        // As root the server runs as user postgres, which must reach its folder.
        for path in [dir.path().to_path_buf(), dir.path().join("tmp")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Demo { dir })
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn spawn(&self, extra: &[&str]) -> Result<Child> {
        let out = std::fs::File::create(self.dir.path().join("stdout"))?;
        let err = std::fs::File::create(self.dir.path().join("stderr"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_sparklet"))
            .args(["demo", "--database-url", "auto", "--campaigns", "5", "--checkpoint-dir"])
            .arg(self.dir.path().join("checkpoint"))
            .arg("--sql-dir")
            .arg(repo_path("sql"))
            .args(extra)
            .env("TMPDIR", self.tmp())
            .env("RUST_LOG", "warn")
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(child)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn output(&self) -> String {
        let err = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{err}", self.stdout())
    }

    /// The server's directory the demo named, in this demo's TMPDIR.
    fn server_dir(&self) -> Result<PathBuf> {
        let stdout = self.stdout();
        let line = stdout.lines().find(|l| l.starts_with("== throwaway PostgreSQL ")).context("no server line")?;
        ensure!(line.contains(" at postgres://postgres@127.0.0.1:"), "{line}");
        let dir = line.split_once("(data in ").and_then(|(_, rest)| rest.split_once(',')).context("no data dir")?.0;
        ensure!(Path::new(dir).starts_with(self.tmp()), "{line}");
        Ok(PathBuf::from(dir))
    }

    /// The server's directory is gone, no process runs in or from it, and
    /// the demo said it stopped it.
    fn ensure_nothing_left(&self) -> Result<()> {
        let dir = self.server_dir()?;
        let stdout = self.stdout();
        ensure!(stdout.contains(&format!("== stopped the throwaway PostgreSQL and removed {}", dir.display())));
        ensure!(!dir.exists(), "{} is still there", dir.display());
        ensure!(std::fs::read_dir(self.tmp())?.next().is_none(), "the demo left files in its TMPDIR");
        let processes = processes_of(&dir)?;
        ensure!(processes.is_empty(), "processes of {} remain: {processes:?}", dir.display());
        Ok(())
    }
}

/// The processes whose command line names `dir`, or that run in it
/// (PostgreSQL's children rename themselves but keep the data dir as cwd).
fn processes_of(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let proc_dir = entry?.path();
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
        if cmdline.contains(&*dir.to_string_lossy()) || cwd.to_string_lossy().starts_with(&*dir.to_string_lossy()) {
            found.push(format!("{}: {cmdline}", proc_dir.display()));
        }
    }
    Ok(found)
}

#[test]
fn demo_without_a_server_starts_a_throwaway_postgres_and_removes_it() -> Result<()> {
    let demo = Demo::new()?;
    let status = wait(&mut demo.spawn(&[])?, Duration::from_secs(180))?;
    let output = demo.output();
    ensure!(status.success(), "the demo failed ({status}):\n{output}");
    ensure!(output.contains("== --database-url auto: starting a throwaway PostgreSQL from "), "{output}");
    ensure!(output.contains("== writing to Postgres 127.0.0.1:"), "{output}");
    ensure!(output.contains("  key=") && output.contains("  adv_campaign_id="), "no sample rows:\n{output}");
    ensure!(!output.contains("subscribers_feedback: 0 rows"), "{output}");
    demo.ensure_nothing_left().context(output)
}

#[test]
fn a_live_demo_removes_its_throwaway_postgres_on_ctrl_c() -> Result<()> {
    let demo = Demo::new()?;
    let mut child = demo.spawn(&["--http-addr", "127.0.0.1:0"])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !demo.stdout().contains("== live: ") {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("the live demo did not start:\n{}", demo.output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = demo.server_dir()?;
    ensure!(dir.exists() && !processes_of(&dir)?.is_empty(), "no server runs in {}", dir.display());
    signal(&child, "INT")?;
    let status = wait(&mut child, Duration::from_secs(60))?;
    let output = demo.output();
    ensure!(status.success(), "the demo failed ({status}):\n{output}");
    demo.ensure_nothing_left().context(output)
}
