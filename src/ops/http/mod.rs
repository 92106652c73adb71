//! The optional HTTP endpoint (`--http-addr`): what operators and their
//! tools ask a running query.
//!
//! | path        | answers |
//! |-------------|---------|
//! | `/metrics`  | Prometheus metrics ([`crate::ops::metrics`]), OpenMetrics text |
//! | `/livez`    | 200 while the trigger loop advances ([`RunStatus::liveness`]), else 503 |
//! | `/readyz`   | 200 when Kafka and Postgres answer and the query has started ([`health`]), else 503; JSON |
//! | `/progress` | the recent progress records and the status, in Spark's names; JSON |
//! | `/`         | a one-page status view drawn from `/progress` (`status.html`, embedded) |
//!
//! The server runs beside the trigger loop for the life of the run and
//! never touches a batch: a slow scrape cannot delay one. Nor can a client
//! exhaust what the run needs: connections are capped and timed out
//! ([`connections`]), well below the open-files limit. Every response
//! carries security headers, the page a Content-Security-Policy
//! ([`headers`]).

mod connections;
mod headers;
pub(crate) mod health;

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::{Error, Result};
use crate::ops::status::RunStatus;
use health::Probes;

/// The status page, served at `/`.
const STATUS_PAGE: &str = include_str!("status.html");

/// Prometheus's content type for the OpenMetrics text `/metrics` serves.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read.
#[derive(Clone)]
struct Shared {
    status: RunStatus,
    probes: Probes,
}

/// The running server; dropping it stops it.
#[derive(Debug)]
pub(crate) struct HttpServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0 picks a free port; the log says which) and serves
/// the endpoint in the background.
pub(crate) async fn serve(addr: SocketAddr, status: RunStatus, probes: Probes) -> Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config("--http-addr", format!("cannot listen on {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::config("--http-addr", format!("cannot read the bound address: {e}")))?;
    let app = router(Shared { status, probes });
    let open_files = connections::open_files_limit();
    let limits = connections::Limits::for_open_files(open_files.unwrap_or(1024));
    let task = tokio::spawn(connections::serve(listener, app, limits));
    tracing::info!(
        addr = %addr,
        max_connections = limits.max_connections,
        max_per_client = limits.max_per_client,
        open_files_limit = open_files,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        "HTTP endpoint listening: /metrics /livez /readyz /progress and the status page at /"
    );
    Ok(HttpServer { task })
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/progress", get(progress))
        .with_state(shared)
        .layer(axum::middleware::map_response(headers::secure))
}

async fn page() -> Response {
    ([(header::CONTENT_SECURITY_POLICY, headers::PAGE_POLICY.as_str())], Html(STATUS_PAGE)).into_response()
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], crate::ops::metrics::encode()).into_response()
}

async fn livez(State(shared): State<Shared>) -> Response {
    match shared.status.liveness() {
        Ok(detail) => (StatusCode::OK, format!("live: {detail}\n")).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not live: {why}\n")).into_response(),
    }
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let readiness = shared.probes.check(&shared.status).await;
    crate::ops::metrics::metrics().ready.set(i64::from(readiness.ready));
    let code = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::to_string_pretty(&readiness).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn progress(State(shared): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], shared.status.progress_json()).into_response()
}
