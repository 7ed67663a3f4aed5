//! The HTTP admin API (`admin.listen`, loopback by default).
//!
//! Operators, scripts and the controller talk to a running proxy here:
//!
//! * `GET /healthz` — the process is up (`200 ok`);
//! * `GET /readyz` — the node probe's last `ROLE` succeeded (`200`), else `503`
//!   with the reason;
//! * `GET /metrics` — Prometheus/OpenMetrics text of everything under `leasegate_`;
//! * `GET /v1/status` — the lease, the node's replication state, pause and
//!   failover state as JSON;
//! * `GET /v1/probe` — the node probe's record (reachable, failures in a
//!   row, last success age, role, offset, lease): a local witness for a
//!   controller's failover vote;
//! * `POST /v1/lease` — push renewal over HTTP, the same
//!   grant a `CLUSTERX HEARTBEAT` carries: `{"master_node_id", "epoch",
//!   "ttl_ms", "nonce"?}`. A grant naming another node revokes the lease.
//! * `POST /v1/pause`, `POST /v1/unpause` — hold writes (or everything), and
//!   let them go;
//! * `POST /v1/failover` — a graceful failover to the leasegate named in the body;
//! * `POST /v1/reload` — re-read the config file, as SIGHUP does
//!   ([`crate::control::reload`]): `200 {"applied": [...], "needs_restart":
//!   [...], "unchanged": bool}`, or `400 {"error": "..."}` for a file that
//!   cannot be used (nothing changes).
//!
//! Every mutating call needs `Authorization: Bearer <admin.token>`, compared
//! in constant time; without a configured token, mutating calls are refused,
//! so a proxy can never be renewed by whoever reaches its admin port. The
//! token is read from the running config on every request, so a reload
//! that changes it takes effect for the next request. Request
//! bodies are bounded ([`MAX_BODY`]) and headers must arrive within
//! [`HEADER_TIMEOUT`], so a slow or hostile client cannot hold memory.
//! Answers to mutating calls and errors are JSON (`{"error": "..."}`); the
//! request and answer types are the wire model in
//! [`crate::kvrocks::admin_api`], and every refusal is an [`ApiError`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::control::failover::{self, MAX_LEASE_TTL_MS};
use crate::control::reload;
use crate::control::ControlContext;
use crate::guard::lease::{Grant, GrantOutcome};
use crate::guard::pause::PauseMode;
use crate::guard::role::Source;
use crate::kvrocks::admin_api::{
    self as api, ErrorBody, FailoverRequest, FailoverState, LeaseOutcome, LeaseRequest,
    LeaseResponse, PauseRequest, PauseResponse, FAILOVER_FAILED_STATUS,
};

mod access;
mod errors;
mod views;

use access::{authorize, read_body};
pub use errors::ApiError;
pub use views::{lease_view, pause_view};
use views::{probe_report, status};

/// Largest request body accepted (`413` beyond it).
pub const MAX_BODY: usize = 64 * 1024;
/// Time allowed for a request's headers to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// `leasegate_admin_requests_total{route, status}`.
#[derive(Debug, Default)]
pub struct AdminMetrics {
    pub requests: Family<RequestLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route (`/v1/lease`), or `other` for unknown paths.
    pub route: &'static str,
    pub status: u16,
}

impl AdminMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "admin_requests",
            "Admin API requests by route and HTTP status",
            self.requests.clone(),
        );
    }
}

/// The last time a failed accept of the admin API was logged.
static ADMIN_ACCEPT_FAILED: crate::guard::clock::EverySecond =
    crate::guard::clock::EverySecond::new();

/// Serves the admin API on `listener` until `shared.shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<ControlContext>) {
    let metrics = Arc::clone(&shared.metrics.admin);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin API listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors: once a second at most.
                    if ADMIN_ACCEPT_FAILED.due(shared.gate.lease().now()) {
                        warn!(error = %e, "admin accept failed (logged at most once a second)");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return,
        };
        let shared = Arc::clone(&shared);
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            // `admin.tls` as the last reload left it.
            match shared.admin_tls.load_full() {
                None => serve_connection(TokioIo::new(stream), peer, shared, metrics).await,
                Some(tls) => {
                    let accepting = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accepting).await {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), peer, shared, metrics).await
                        }
                        Ok(Err(e)) => {
                            info!(%peer, error = %e, "admin API: TLS handshake failed: connection closed")
                        }
                        Err(_) => {
                            info!(%peer, "admin API: no TLS handshake in time: connection closed")
                        }
                    }
                }
            }
        });
    }
}

/// How long an admin API client has to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one admin connection (plain or TLS) until it ends or the proxy
/// stops.
async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    shared: Arc<ControlContext>,
    metrics: Arc<AdminMetrics>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let shutdown = shared.shutdown.clone();
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let metrics = Arc::clone(&metrics);
        // Each request runs as its own task: a caller that hangs up
        // (hyper then drops this future) cannot cut a change short,
        // e.g. a failover between its claim and its start.
        async move {
            let task = tokio::spawn(async move { handle(req, &shared, &metrics).await });
            Ok::<_, Infallible>(task.await.unwrap_or_else(|e| {
                let mut r = Response::new(Full::new(Bytes::from(format!(
                    "{{\"error\":\"the request handler failed: {e}\"}}"
                ))));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // half_close: a caller that sends its request and closes its side
    // still has the request read and carried out (a change is never cut
    // short by the caller going away).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .half_close(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

/// Routes one request and counts it.
async fn handle(
    req: Request<Incoming>,
    shared: &ControlContext,
    metrics: &AdminMetrics,
) -> Response<Full<Bytes>> {
    let (route, response) = route(req, shared).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn route(
    req: Request<Incoming>,
    shared: &ControlContext,
) -> (&'static str, Response<Full<Bytes>>) {
    // Taken before anything else: the grant's receive time.
    let received_at = shared.gate.lease().now();
    let path = req.uri().path();
    let (route, allowed): (&'static str, &'static str) = match path {
        "/healthz" => ("/healthz", "GET"),
        "/readyz" => ("/readyz", "GET"),
        "/metrics" => ("/metrics", "GET"),
        "/v1/status" => ("/v1/status", "GET"),
        "/v1/probe" => ("/v1/probe", "GET"),
        "/v1/lease" => ("/v1/lease", "POST"),
        "/v1/pause" => ("/v1/pause", "POST"),
        "/v1/unpause" => ("/v1/unpause", "POST"),
        "/v1/failover" => ("/v1/failover", "POST"),
        "/v1/reload" => ("/v1/reload", "POST"),
        _ => return ("other", ApiError::NotFound.response()),
    };
    if req.method().as_str() != allowed {
        let mut r = ApiError::MethodNotAllowed { route, allowed }.response();
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        return (route, r);
    }
    if is_mutating(req.method()) {
        let token = shared.config.load().admin.token.clone();
        if let Err(e) = authorize(&req, token.as_deref()) {
            return (route, e.response());
        }
    }
    let response = match route {
        "/healthz" => Ok(text(StatusCode::OK, "ok\n")),
        "/readyz" => Ok(readyz(shared)),
        "/metrics" => metrics(shared),
        "/v1/status" => Ok(json(StatusCode::OK, &status(shared))),
        "/v1/probe" => Ok(json(StatusCode::OK, &probe_report(shared))),
        _ => match read_body(req).await {
            Ok(body) if route == "/v1/pause" => post_pause(shared, &body),
            Ok(body) if route == "/v1/failover" => post_failover(shared, &body).await,
            Ok(_) if route == "/v1/reload" => reload::reload(shared)
                .map(|answer| json(StatusCode::OK, &answer))
                .map_err(ApiError::from),
            Ok(_) if route == "/v1/unpause" => {
                shared.gate.pause().unpause();
                Ok(json(
                    StatusCode::OK,
                    &PauseResponse {
                        pause: pause_view(shared.gate.pause().status()),
                    },
                ))
            }
            Ok(body) => post_lease(shared, &body, received_at),
            Err(e) => Err(e),
        },
    };
    (route, response.unwrap_or_else(ApiError::response))
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn readyz(shared: &ControlContext) -> Response<Full<Bytes>> {
    let view = shared.role.node.view();
    let reason = match (&view.error, &view.replication) {
        (None, Some(_)) => return text(StatusCode::OK, "ready\n"),
        (Some(e), _) => format!("node probe failed: {e}"),
        (None, None) if shared.config.load().lease.probe_interval.is_zero() => {
            "the node probe is disabled (lease.probe_interval_ms: 0)".to_string()
        }
        (None, None) => "the node has not answered a probe yet".to_string(),
    };
    text(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n"))
}

fn metrics(shared: &ControlContext) -> Result<Response<Full<Bytes>>, ApiError> {
    shared.metrics.lease.refresh(shared.gate.lease());
    shared.metrics.failover.refresh(&shared.gate);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &shared.registry)
        .map_err(|source| ApiError::MetricsEncoding { source })?;
    Ok(with_type(StatusCode::OK, OPENMETRICS, out.into()))
}

/// Runs a graceful failover to the leasegate named in the body; answers
/// with the report when it has finished (200 on success, 409 on failure).
async fn post_failover(
    shared: &ControlContext,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: FailoverRequest =
        serde_json::from_slice(body).map_err(|source| ApiError::BadFailoverRequest { source })?;
    if request.pause_timeout_ms <= request.sync_timeout_ms {
        return Err(ApiError::PauseNotAboveSync);
    }
    if request.lease_ttl_ms == 0 || request.lease_ttl_ms > MAX_LEASE_TTL_MS {
        // Refused here rather than by the target's leasegate mid-switch.
        return Err(ApiError::FailoverTtlOutOfRange);
    }
    // The failover runs in a task of its own: if this caller goes away, it
    // still completes (its outcome stays in /v1/status).
    let report = failover::run(shared, request).await;
    let status = if report.result == FailoverState::Success {
        StatusCode::OK
    } else {
        StatusCode::from_u16(FAILOVER_FAILED_STATUS).unwrap_or(StatusCode::CONFLICT)
    };
    Ok(json(status, &report))
}

fn post_pause(shared: &ControlContext, body: &[u8]) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: PauseRequest =
        serde_json::from_slice(body).map_err(|source| ApiError::BadPauseRequest { source })?;
    if request.timeout_ms == 0 {
        return Err(ApiError::ZeroPauseTimeout);
    }
    let mode = match request.mode {
        api::PauseMode::Write => PauseMode::Write,
        api::PauseMode::All => PauseMode::All,
    };
    let pause = shared.gate.pause();
    pause.pause(std::time::Duration::from_millis(request.timeout_ms), mode);
    tracing::info!(timeout_ms = request.timeout_ms, mode = ?mode, "paused over the admin API");
    Ok(json(
        StatusCode::OK,
        &PauseResponse {
            pause: pause_view(pause.status()),
        },
    ))
}

fn post_lease(
    shared: &ControlContext,
    body: &[u8],
    received_at: u64,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: LeaseRequest =
        serde_json::from_slice(body).map_err(|source| ApiError::BadLeaseRequest { source })?;
    if request.ttl_ms == 0 {
        return Err(ApiError::ZeroTtl);
    }
    let grant = Grant {
        master_node_id: Some(request.master_node_id),
        ttl_ms: request.ttl_ms,
        epoch: request.epoch,
        nonce: request.nonce,
        anchor: None,
    };
    let lease = shared.gate.lease();
    let outcome = match shared.role.grant(&grant, received_at, Source::Http)? {
        GrantOutcome::Renewed => LeaseOutcome::Renewed,
        GrantOutcome::Revoked => LeaseOutcome::Revoked,
        GrantOutcome::UnknownNonce => LeaseOutcome::UnknownNonce,
    };
    Ok(json(
        StatusCode::OK,
        &LeaseResponse {
            outcome,
            lease: lease_view(&lease.snapshot()),
            nonce: lease.issue_nonce(),
        },
    ))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, TEXT, Bytes::copy_from_slice(body.as_bytes()))
}

/// `value` as one line of JSON. It goes through [`serde_json::Value`] so that
/// object keys come out sorted, as they always have: answers stay
/// byte-for-byte what scripts have seen.
fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let (status, mut body) = match serde_json::to_value(value) {
        Ok(v) => (status, v.to_string()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::to_string(&ErrorBody {
                error: format!("cannot encode the answer: {e}"),
            })
            .unwrap_or_else(|_| r#"{"error":"cannot encode the answer"}"#.to_string()),
        ),
    };
    body.push('\n');
    with_type(status, JSON, body.into())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn admin_listens_on_loopback_by_default() {
        let c = Config::parse("backend:\n  addr: 127.0.0.1:6666\n", "t").expect("valid");
        let addr: std::net::SocketAddr = c.admin.listen.parse().expect("an ip:port");
        assert!(addr.ip().is_loopback(), "{addr}");
        assert!(c.admin.token.is_none());
    }
}
