//! A plain HTTP/1.1 GET over a TCP stream, for the tests of sparklet's HTTP
//! endpoint, and finding the endpoint's address in a child's log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::child::child_log;
use crate::support::Job;

/// A response: status code, head (status line and headers) and body.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// The value of header `name` (any case), if the response has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `GET http://{addr}{path}`.
pub fn get(addr: &str, path: &str) -> Result<Response> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.split_whitespace().nth(1).context("no status")?.parse()?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { unchunk(body)? } else { body.to_string() };
    Ok(Response { status, head: head.to_string(), body })
}

/// The body of a chunked response.
fn unchunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// The address the child's HTTP endpoint listens on, from its log.
pub fn endpoint_of(job: &Job, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let log = child_log(job);
        let listening = log.lines().find(|l| l.contains("HTTP endpoint listening"));
        if let Some(addr) = listening.and_then(|l| l.split("addr=").nth(1)).and_then(|a| a.split_whitespace().next()) {
            return Ok(addr.to_string());
        }
        if Instant::now() > deadline {
            bail!("the child never said where its HTTP endpoint listens:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `GET path` until `done` accepts the response.
pub fn wait_for(addr: &str, path: &str, limit: Duration, done: impl Fn(&Response) -> bool) -> Result<Response> {
    let deadline = Instant::now() + limit;
    loop {
        let response = get(addr, path)?;
        if done(&response) {
            return Ok(response);
        }
        if Instant::now() > deadline {
            bail!(
                "GET {path} did not give the expected answer within {limit:?}; last: {} {}",
                response.status,
                response.body
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the child's log holds `line`.
pub fn wait_for_log(job: &Job, line: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !child_log(job).contains(line) {
        if Instant::now() > deadline {
            bail!("the child never logged '{line}':\n{}", child_log(job));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
