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
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
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
use crate::control::probe;
use crate::control::reload::{self, ReloadError};
use crate::control::ControlContext;
use crate::guard::lease::{Grant, GrantError, GrantOutcome, LeaseMode, LeaseSnapshot};
use crate::guard::pause::{PauseMode, PauseStatus};
use crate::guard::role::Source;
use crate::kvrocks::admin_api::{
    self as api, Demoted, ErrorBody, FailoverRequest, FailoverState, LeaseOutcome, LeaseRequest,
    LeaseResponse, LeaseView, PauseRequest, PauseResponse, PauseView, ProbeReport, Status,
    FAILOVER_FAILED_STATUS,
};

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
                    warn!(error = %e, "admin accept failed");
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

/// Why a request was refused; its Display is the answer's `error`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such path")]
    NotFound,
    #[error("{route} accepts {allowed} only")]
    MethodNotAllowed {
        route: &'static str,
        allowed: &'static str,
    },
    #[error("admin.token is not set in the config: mutating calls are disabled")]
    NoToken,
    #[error("missing Authorization: Bearer <admin.token>")]
    MissingToken,
    #[error("wrong admin token")]
    WrongToken,
    #[error("request body over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("cannot read the request body: {source}")]
    BodyUnreadable {
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("body must be {}: {source}", LeaseRequest::SHAPE)]
    BadLeaseRequest { source: serde_json::Error },
    #[error("ttl_ms must be above 0")]
    ZeroTtl,
    /// The lease refused the grant (400 for its TTL, else 409).
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("expected {}: {source}", PauseRequest::SHAPE)]
    BadPauseRequest { source: serde_json::Error },
    #[error("timeout_ms must be above 0")]
    ZeroPauseTimeout,
    #[error("expected {}: {source}", FailoverRequest::SHAPE)]
    BadFailoverRequest { source: serde_json::Error },
    #[error("pause_timeout_ms must exceed sync_timeout_ms")]
    PauseNotAboveSync,
    #[error("lease_ttl_ms must be between 1 and {MAX_LEASE_TTL_MS}")]
    FailoverTtlOutOfRange,
    #[error("{source}")]
    MetricsEncoding { source: std::fmt::Error },
    /// The config file could not be used; nothing changed.
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoToken | ApiError::MissingToken | ApiError::WrongToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable { .. }
            | ApiError::BadLeaseRequest { .. }
            | ApiError::ZeroTtl
            | ApiError::Grant(GrantError::InvalidTtl)
            | ApiError::BadPauseRequest { .. }
            | ApiError::ZeroPauseTimeout
            | ApiError::BadFailoverRequest { .. }
            | ApiError::PauseNotAboveSync
            | ApiError::FailoverTtlOutOfRange
            | ApiError::Reload(_) => StatusCode::BAD_REQUEST,
            ApiError::Grant(GrantError::HandedOver) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Grant(_) => StatusCode::CONFLICT,
            ApiError::MetricsEncoding { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer: [`ErrorBody`] with [`ApiError::status`].
    pub fn response(self) -> Response<Full<Bytes>> {
        json(
            self.status(),
            &ErrorBody {
                error: self.to_string(),
            },
        )
    }
}

/// Checks `Authorization: Bearer <token>`.
fn authorize<B>(req: &Request<B>, token: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::NoToken);
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    match presented {
        None => Err(ApiError::MissingToken),
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::WrongToken),
    }
}

/// The credentials of an `Authorization` value of the `Bearer` scheme,
/// whose name is case-insensitive (RFC 9110 §11.1; `bearer t0k` was
/// refused); surrounding white space is not part of them.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Reads a body of at most [`MAX_BODY`] bytes.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(source) => Err(ApiError::BodyUnreadable { source }),
    }
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

/// The lease as the admin API reports it (`remaining_ms` null when valid
/// until told otherwise).
pub fn lease_view(snapshot: &LeaseSnapshot) -> LeaseView {
    LeaseView {
        mode: match snapshot.mode {
            LeaseMode::Disabled => api::LeaseMode::Disabled,
            LeaseMode::LogOnly => api::LeaseMode::LogOnly,
            LeaseMode::BlockWrite => api::LeaseMode::BlockWrite,
        },
        valid: snapshot.valid,
        owner: snapshot.owner.clone(),
        node_id: snapshot.node_id.clone(),
        epoch: snapshot.epoch,
        remaining_ms: (snapshot.remaining_ms != u64::MAX).then_some(snapshot.remaining_ms),
        revoked_reason: snapshot.revoked_reason.clone(),
    }
}

/// The pause as the admin API reports it.
pub fn pause_view(status: PauseStatus) -> PauseView {
    PauseView {
        paused: status.paused,
        mode: status.mode.map(|m| match m {
            PauseMode::Write => api::PauseMode::Write,
            PauseMode::All => api::PauseMode::All,
        }),
        held_requests: status.held_requests as u64,
        held_bytes: status.held_bytes as u64,
    }
}

fn node_view(view: probe::NodeView) -> api::NodeView {
    api::NodeView {
        replication: view.replication,
        error: view.error,
    }
}

fn probe_report(shared: &ControlContext) -> ProbeReport {
    let view = shared.role.node.view();
    let interval = shared.config.load().lease.probe_interval;
    let replication = view.replication.unwrap_or_default();
    ProbeReport {
        enabled: !interval.is_zero(),
        probe_interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        reachable: view.probes > 0 && view.failures == 0,
        consecutive_failures: view.failures,
        last_success_ms_ago: view
            .last_success
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        probes: view.probes,
        role: replication.role,
        offset: replication.offset,
        error: view.error,
        lease: lease_view(&shared.gate.lease().snapshot()),
    }
}

fn status(shared: &ControlContext) -> Status {
    let pause = shared.gate.pause();
    Status {
        lease: lease_view(&shared.gate.lease().snapshot()),
        node: node_view(shared.role.node.view()),
        paused: pause.is_paused(),
        pause: pause_view(pause.status()),
        failover_state: shared.gate.role().failover.state(),
        demoted: shared.gate.role().demotion().map(|d| Demoted {
            new_master: d.new_master.as_deref().map(str::to_string),
        }),
        listen: shared.config.load().listen.to_string(),
        backend: shared.config.load().backend.addr.clone(),
        clock: crate::control::failover::timing::host_clock(),
        pid: Some(std::process::id()),
    }
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
    use super::*;
    use crate::config::Config;

    #[test]
    fn admin_listens_on_loopback_by_default() {
        let c = Config::parse("backend:\n  addr: 127.0.0.1:6666\n", "t").expect("valid");
        let addr: std::net::SocketAddr = c.admin.listen.parse().expect("an ip:port");
        assert!(addr.ip().is_loopback(), "{addr}");
        assert!(c.admin.token.is_none());
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"t0k", b"t0k"));
        assert!(!constant_time_eq(b"t0k", b"t0K"));
        assert!(!constant_time_eq(b"t0k", b"t0kk"));
        assert!(!constant_time_eq(b"", b"t"));
        assert!(constant_time_eq(b"", b""));
    }

    fn request(auth: Option<&str>) -> Request<()> {
        let mut b = Request::post("/v1/lease");
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).expect("request")
    }

    fn error_text(r: ApiError) -> String {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        r.to_string()
    }

    #[test]
    fn bearer_token_is_required() {
        assert!(authorize(&request(Some("Bearer t0k")), Some("t0k")).is_ok());
        assert!(authorize(&request(Some("bearer t0k")), Some("t0k")).is_ok());
        assert!(authorize(&request(Some("Basic t0k")), Some("t0k")).is_err());
        assert!(authorize(&request(Some("Bearer")), Some("t0k")).is_err());
        let r = authorize(&request(Some("Bearer nope")), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("wrong admin token"));
        let r = authorize(&request(None), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("missing Authorization"));
        let r = authorize(&request(Some("Basic t0k")), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("missing Authorization"));
        let r = authorize(&request(Some("Bearer t0k")), None).unwrap_err();
        assert!(error_text(r).contains("admin.token is not set"));
    }

    /// What `/v1/status` answered when it was built with `json!`.
    fn old_status(shared: &ControlContext) -> serde_json::Value {
        let snapshot = shared.gate.lease().snapshot();
        let mut lease = serde_json::to_value(&snapshot).expect("lease");
        if snapshot.remaining_ms == u64::MAX {
            lease["remaining_ms"] = serde_json::Value::Null;
        }
        serde_json::json!({
            "lease": lease,
            "node": shared.role.node.view(),
            "paused": shared.gate.pause().is_paused(),
            "pause": shared.gate.pause().status(),
            "failover_state": shared.gate.role().failover.state().as_str(),
            "demoted": shared.gate.role().demotion().map(|d| serde_json::json!({"new_master": d.new_master.as_deref()})),
            "listen": shared.config.load().listen,
            "backend": shared.config.load().backend.addr,
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn status_json_is_byte_for_byte_unchanged() {
        let config = Config::parse(
            "backend:\n  addr: 127.0.0.1:1\nnode_id: 0123456789abcdef0123456789abcdef01234567\nlease:\n  mode: block-write\n",
            "t",
        )
        .expect("valid config");
        let shared = ControlContext::new(
            config,
            std::sync::Arc::new(crate::guard::lease::ManualClock::new(1_000_000_000)),
        );
        // The fields added since: this host's coarse clock and the serving
        // process (checked, then set aside for the comparison). The clock
        // is measured first, as a server does at start (with retries: a
        // loaded host's coarse clock can fall a step behind).
        crate::control::failover::timing::warm_up();
        let answer = |shared: &ControlContext| {
            let mut value = serde_json::to_value(status(shared)).expect("serializes");
            let object = value.as_object_mut().expect("an object");
            let clock = object
                .remove("clock")
                .expect("the host's clock is reported");
            assert!(clock["tick_ns"].as_u64().is_some_and(|t| t > 0), "{clock}");
            assert!(clock["since_tick_ns"].as_u64().is_some(), "{clock}");
            let pid = object.remove("pid").expect("the process is reported");
            assert_eq!(pid.as_u64(), Some(u64::from(std::process::id())));
            value.to_string()
        };
        assert_eq!(answer(&shared), old_status(&shared).to_string());
        shared
            .gate
            .pause()
            .pause(Duration::from_secs(60), PauseMode::All);
        shared.gate.role().demote(crate::guard::role::Demotion {
            new_master: Some("127.0.0.1:7".into()),
        });
        shared.gate.role().failover.set(FailoverState::WaitSync);
        let text = answer(&shared);
        assert_eq!(text, old_status(&shared).to_string());
        assert!(
            text.contains(r#""demoted":{"new_master":"127.0.0.1:7"}"#),
            "{text}"
        );
        assert!(text.contains(r#""mode":"all""#), "{text}");
        assert!(text.contains(r#""failover_state":"wait_sync""#), "{text}");
    }

    #[test]
    fn lease_view_nulls_forever() {
        let mut s = LeaseSnapshot {
            mode: crate::guard::lease::LeaseMode::BlockWrite,
            valid: true,
            owner: None,
            node_id: None,
            epoch: 3,
            remaining_ms: u64::MAX,
            revoked_reason: None,
        };
        let v = serde_json::to_value(lease_view(&s)).expect("serializes");
        assert!(v["remaining_ms"].is_null());
        assert_eq!(v["mode"], "block-write");
        s.remaining_ms = 250;
        let v = serde_json::to_value(lease_view(&s)).expect("serializes");
        assert_eq!(v["remaining_ms"], 250);
    }
}
