//! The HTTP endpoint cannot be turned against the query: a flood of stalled
//! connections, with the usual limit of 1,024 open files, neither takes the
//! descriptors the checkpoint and the sinks need (batches go on committing)
//! nor keeps `/readyz` from answering; and the status page carries its
//! security headers.

use std::os::unix::process::CommandExt;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::child::{self, LogOnFailure};
use crate::http::{endpoint_of, get, wait_for};
use crate::support::*;

/// The open-files limit the query runs with (soft and hard: it cannot raise it).
const OPEN_FILES: u64 = 1024;
/// The stalled connections: more than the query may open.
const FLOOD: usize = 1_100;
/// Where the flood comes from (loopback too, but another client than the
/// probes' 127.0.0.1).
const FLOOD_FROM: &str = "127.0.0.2:0";

/// Starts the query with `OPEN_FILES` as its limit on open files.
fn spawn_limited(job: &Job, args: &[&str]) -> Result<Child> {
    let mut command = child::command(job, args, None, &[])?;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: OPEN_FILES, rlim_max: OPEN_FILES };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    Ok(command.spawn()?)
}

/// Lets this test process hold the flood's sockets.
fn raise_own_open_files_limit(to: u64) -> Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read or write the struct given.
    ensure!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0, "getrlimit failed");
    if limit.rlim_cur < to {
        let raised = libc::rlimit { rlim_cur: to.min(limit.rlim_max), rlim_max: limit.rlim_max };
        // SAFETY: as above.
        ensure!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0, "setrlimit failed");
    }
    Ok(())
}

/// Opens `n` connections to `addr` that each send one byte and stall.
async fn stall(addr: &str, n: usize) -> Result<Vec<TcpStream>> {
    let addr = addr.parse()?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4()?;
        socket.bind(FLOOD_FROM.parse()?)?;
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await else {
            continue;
        };
        // The endpoint may have closed it already (over its cap): no matter.
        let _ = stream.write_all(b"G").await;
        held.push(stream);
    }
    Ok(held)
}

/// The batches the query has committed.
fn committed(job: &Job) -> Result<usize> {
    let names = std::fs::read_dir(job.checkpoint.path().join("commits"))?;
    Ok(names.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok()).count())
}

/// The descriptors `child` has open.
fn open_files(child: &Child) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{}/fd", child.id()))?.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_connections_neither_stops_batches_nor_readyz() -> Result<()> {
    let job = Job::new(2).await?;
    job.db.add_subscribers(RESTAURANT, &["c1"]).await?;
    let _log = LogOnFailure(&job);
    let mut sparklet = spawn_limited(&job, &["--trigger", "200ms", "--http-addr", "127.0.0.1:0"])?;
    let addr = endpoint_of(&job, Duration::from_secs(30))?;
    job.kafka.produce(&job.input, 0, &[campaign(RESTAURANT, "before", 0, FOREVER)])?;
    wait_for(&addr, "/readyz", Duration::from_secs(30), |r| r.status == 200)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&job)? == 0 {
        ensure!(Instant::now() < deadline, "no batch committed before the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (before, files_before) = (committed(&job)?, open_files(&sparklet)?);

    raise_own_open_files_limit(4 * FLOOD as u64)?;
    let flood = stall(&addr, FLOOD).await?;
    ensure!(flood.len() >= OPEN_FILES as usize, "only {} connections were made", flood.len());
    let mut most_files = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        if let Some(status) = sparklet.try_wait()? {
            let log = child::child_log(&job);
            let last: Vec<&str> = log.lines().rev().take(5).collect();
            bail!("the query stopped during the flood ({status}); its log ends:\n{}", last.join("\n"));
        }
        most_files = most_files.max(open_files(&sparklet)?);
        if committed(&job)? >= before + 3 {
            break;
        }
        ensure!(Instant::now() < deadline, "batches stopped committing during the flood");
        job.kafka.produce(&job.input, i % 2, &[campaign(RESTAURANT, &format!("during-{i}"), 0, FOREVER)])?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ready = get(&addr, "/readyz")?;
    ensure!(ready.status == 200, "/readyz during the flood: {} {}", ready.status, ready.body);
    // The endpoint holds at most 64 connections: the rest stays for the query.
    ensure!(
        most_files <= files_before + 64 + 16,
        "the query had {files_before} files open before the flood, {most_files} during it"
    );
    eprintln!("open files: {files_before} before the flood, at most {most_files} during it");
    drop(flood);

    child::signal(&sparklet, "TERM")?;
    ensure!(child::wait(&mut sparklet, Duration::from_secs(30))?.success(), "the query did not stop cleanly");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_has_a_content_security_policy_and_no_response_can_be_framed() -> Result<()> {
    let job = Job::new(1).await?;
    let _log = LogOnFailure(&job);
    let mut sparklet = child::spawn(&job, &["--trigger", "1s", "--http-addr", "127.0.0.1:0"], None)?;
    let addr = endpoint_of(&job, Duration::from_secs(30))?;
    let page = wait_for(&addr, "/", Duration::from_secs(30), |r| r.status == 200)?;
    let policy = page.header("content-security-policy").context("the page has no Content-Security-Policy")?;
    for directive in ["default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "script-src 'sha256-"] {
        ensure!(policy.contains(directive), "no {directive} in {policy}");
    }
    for path in ["/", "/metrics", "/livez", "/progress", "/nothing-here"] {
        let response = get(&addr, path)?;
        ensure!(response.header("x-frame-options") == Some("DENY"), "{path}:\n{}", response.head);
        ensure!(response.header("x-content-type-options") == Some("nosniff"), "{path}:\n{}", response.head);
        ensure!(response.header("content-security-policy").is_some(), "{path}:\n{}", response.head);
    }
    child::signal(&sparklet, "TERM")?;
    ensure!(child::wait(&mut sparklet, Duration::from_secs(30))?.success());
    Ok(())
}
