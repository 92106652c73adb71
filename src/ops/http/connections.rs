//! The endpoint's connections, bounded so that no client can take the file
//! descriptors the checkpoint, Kafka and Postgres need.
//!
//! - At most `max_connections` are open at once (64, or an eighth
//!   of the open-files limit if that is less), and one client address (an
//!   IPv6 /64) holds at most half of them, so a flood from one place leaves
//!   room for the probes. A connection over either cap is accepted and
//!   closed at once: its descriptor lives for a moment, never piles up.
//! - A request's headers must arrive within [`HEADER_READ_TIMEOUT`] of the
//!   first read, and a kept-alive connection waits as long for the next
//!   request (hyper's header-read timeout covers both), then is closed.
//! - A connection lives at most [`MAX_CONNECTION_AGE`]: then it is closed
//!   after its current response (a slow body or a reader that never reads
//!   is cut [`CLOSE_GRACE`] later).
//!
//! Clients (Prometheus, probes, the status page) reconnect as they need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to send a request's headers, and how long an
/// idle kept-alive connection stays open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, requests included.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long a connection past its age may take to finish its response.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The most connections open at once, whatever the open-files limit.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// The largest request head read (hyper's read buffer; its minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How often refused connections are logged (with a count), at most.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// The caps of one endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_per_client: usize,
    pub header_read_timeout: Duration,
    pub max_age: Duration,
}

impl Limits {
    /// The caps for a process that may open `open_files` descriptors: an
    /// eighth of them at most, so seven eighths stay for the query.
    pub(crate) fn for_open_files(open_files: u64) -> Self {
        let max_connections = usize::try_from(open_files / 8).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS);
        Limits {
            max_connections,
            max_per_client: (max_connections / 2).max(1),
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_age: MAX_CONNECTION_AGE,
        }
    }
}

/// The soft limit on open files of this process (`RLIMIT_NOFILE`).
pub(crate) fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// Serves `app` on the connections `listener` accepts, within `limits`, until dropped.
pub(crate) async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut refusals = Refusals::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before
                // it was accepted: wait a little rather than spin.
                tracing::warn!(cause = %e, "the HTTP endpoint could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match Slot::take(&open, limits, client(peer.ip())) {
            Ok(slot) => {
                tokio::spawn(serve_connection(stream, app.clone(), limits, slot));
            }
            Err(why) => {
                drop(stream);
                refusals.note(why, limits);
            }
        }
    }
}

/// Serves one connection, then frees its slot.
async fn serve_connection(stream: TcpStream, app: Router, limits: Limits, slot: Slot) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(MAX_REQUEST_HEAD);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut connection = std::pin::pin!(connection);
    let outcome = match tokio::time::timeout(limits.max_age, connection.as_mut()).await {
        Ok(outcome) => outcome,
        Err(_) => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, connection).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(client = %slot.client, cause = %e, "an HTTP connection ended with an error");
    }
    drop(slot);
}

/// Whom a connection is counted against: its address, or its IPv6 /64
/// (one host's usual share).
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// The connections open now: in all and by client.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The endpoint has its most connections open.
    Full,
    /// This client holds its share.
    ClientShare,
}

/// One open connection's place; dropping it frees the place.
#[derive(Debug)]
struct Slot {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Slot {
    fn take(open: &Arc<Mutex<Open>>, limits: Limits, client: IpAddr) -> Result<Slot, Refused> {
        let mut now = open.lock().unwrap_or_else(PoisonError::into_inner);
        if now.total >= limits.max_connections {
            return Err(Refused::Full);
        }
        let held = now.by_client.entry(client).or_insert(0);
        if *held >= limits.max_per_client {
            return Err(Refused::ClientShare);
        }
        *held += 1;
        now.total += 1;
        Ok(Slot { open: open.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut now = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        now.total = now.total.saturating_sub(1);
        if let Some(held) = now.by_client.get_mut(&self.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                now.by_client.remove(&self.client);
            }
        }
    }
}

/// Counts refused connections and logs them now and then, not one line each.
#[derive(Debug, Default)]
struct Refusals {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, why: Refused, limits: Limits) {
        self.since_logged += 1;
        if self.logged_at.is_some_and(|at| at.elapsed() < REFUSALS_LOGGED_EVERY) {
            return;
        }
        let reason = match why {
            Refused::Full => "the endpoint has its most connections open",
            Refused::ClientShare => "one client holds its share of the connections",
        };
        tracing::warn!(
            refused = self.since_logged,
            max_connections = limits.max_connections,
            max_per_client = limits.max_per_client,
            reason,
            "the HTTP endpoint closed connections at once"
        );
        self.since_logged = 0;
        self.logged_at = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_an_eighth_of_the_open_files_limit_and_at_most_64() {
        let caps = |n| {
            let l = Limits::for_open_files(n);
            (l.max_connections, l.max_per_client)
        };
        assert_eq!(caps(1024), (64, 32));
        assert_eq!(caps(1 << 20), (64, 32));
        assert_eq!(caps(u64::MAX), (64, 32));
        assert_eq!(caps(256), (32, 16));
        assert_eq!(caps(8), (1, 1));
        assert_eq!(caps(0), (1, 1));
    }

    #[test]
    fn slots_are_capped_in_all_and_by_client_and_freed_when_dropped() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = Limits { max_connections: 3, max_per_client: 2, ..Limits::for_open_files(1024) };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = Slot::take(&open, limits, a).unwrap();
        let _second = Slot::take(&open, limits, a).unwrap();
        assert_eq!(Slot::take(&open, limits, a).unwrap_err(), Refused::ClientShare);
        let _third = Slot::take(&open, limits, b).unwrap();
        assert_eq!(Slot::take(&open, limits, b).unwrap_err(), Refused::Full);
        drop(first);
        assert!(Slot::take(&open, limits, b).is_ok(), "a freed place is free for anyone");
        assert_eq!(open.lock().unwrap().total, 2, "the slot taken above was dropped at once");
    }

    /// Serves a one-route app within `limits` on a free port of 127.0.0.1.
    async fn endpoint(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    /// A connection to `addr` from `from` (a loopback address).
    async fn connect(addr: std::net::SocketAddr, from: &str) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Reads until the peer closes; how long that took, if within `limit`.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
        use tokio::io::AsyncReadExt;
        let started = Instant::now();
        let mut buffer = [0u8; 1024];
        loop {
            match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    async fn get(stream: &mut TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buffer = vec![0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    fn quick(max_connections: usize, max_per_client: usize) -> Limits {
        let timeout = Duration::from_millis(300);
        Limits { max_connections, max_per_client, header_read_timeout: timeout, max_age: Duration::from_secs(30) }
    }

    #[tokio::test]
    async fn a_stalled_request_and_an_idle_kept_alive_connection_are_closed_after_the_header_timeout() {
        let addr = endpoint(quick(4, 4)).await;
        let mut stalled = connect(addr, "127.0.0.1").await;
        tokio::io::AsyncWriteExt::write_all(&mut stalled, b"G").await.unwrap();
        let took = closed_within(&mut stalled, Duration::from_secs(5)).await.expect("a stalled request stays open");
        assert!(took >= Duration::from_millis(250), "closed after {took:?}, before the timeout");
        let mut idle = connect(addr, "127.0.0.1").await;
        assert!(get(&mut idle).await.starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut idle, Duration::from_secs(5)).await.is_some(), "an idle connection stays open");
    }

    #[tokio::test]
    async fn connections_over_the_caps_are_closed_at_once_and_another_client_is_served() {
        let addr = endpoint(Limits { header_read_timeout: Duration::from_secs(30), ..quick(3, 2) }).await;
        let _held = [connect(addr, "127.0.0.1").await, connect(addr, "127.0.0.1").await];
        let mut over_share = connect(addr, "127.0.0.1").await;
        assert!(closed_within(&mut over_share, Duration::from_secs(5)).await.is_some(), "over the client's share");
        let mut other = connect(addr, "127.0.0.2").await;
        assert!(get(&mut other).await.starts_with("HTTP/1.1 200"), "another client has room");
        let mut over_total = connect(addr, "127.0.0.3").await;
        assert!(closed_within(&mut over_total, Duration::from_secs(5)).await.is_some(), "over the total");
    }

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
    }
}
