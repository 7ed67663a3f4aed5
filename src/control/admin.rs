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
//! * `POST /v1/lease` — push renewal over HTTP (DESIGN §2, source 2), the same
//!   grant a `CLUSTERX HEARTBEAT` carries: `{"master_node_id", "epoch",
//!   "ttl_ms", "nonce"?}`. A grant naming another node revokes the lease.
//!
//! Every mutating call needs `Authorization: Bearer <admin.token>`, compared
//! in constant time; without a configured token, mutating calls are refused,
//! so a proxy can never be renewed by whoever reaches its admin port. Request
//! bodies are bounded ([`MAX_BODY`]) and headers must arrive within
//! [`HEADER_TIMEOUT`], so a slow or hostile client cannot hold memory.
//! Answers to mutating calls and errors are JSON (`{"error": "..."}`).

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
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::control::ControlContext;
use crate::guard::lease::{Grant, GrantError, GrantOutcome, LeaseSnapshot};
use crate::guard::role::Source;

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
    let metrics = Arc::new(AdminMetrics::default());
    match shared.registry.lock() {
        Ok(mut registry) => metrics.register(&mut registry),
        Err(_) => warn!("metrics registry unavailable; admin metrics are not exported"),
    }
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
            let shutdown = shared.shutdown.clone();
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(handle(req, &shared, &metrics).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
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
        });
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
        "/v1/lease" => ("/v1/lease", "POST"),
        "/v1/pause" => ("/v1/pause", "POST"),
        "/v1/unpause" => ("/v1/unpause", "POST"),
        "/v1/failover" => ("/v1/failover", "POST"),
        _ => return ("other", error(StatusCode::NOT_FOUND, "no such path")),
    };
    if req.method().as_str() != allowed {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{route} accepts {allowed} only"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        return (route, r);
    }
    if is_mutating(req.method()) {
        if let Err(r) = authorize(&req, shared.config.admin.token.as_deref()) {
            return (route, r.response());
        }
    }
    let response = match route {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(shared),
        "/metrics" => metrics(shared),
        "/v1/status" => json(StatusCode::OK, &status(shared)),
        _ => match read_body(req).await {
            Ok(body) if route == "/v1/pause" => post_pause(shared, &body),
            Ok(body) if route == "/v1/failover" => post_failover(shared, &body).await,
            Ok(_) if route == "/v1/unpause" => {
                shared.gate.pause().unpause();
                json(
                    StatusCode::OK,
                    &serde_json::json!({"pause": shared.gate.pause().status()}),
                )
            }
            Ok(body) => post_lease(shared, &body, received_at),
            Err(r) => r.response(),
        },
    };
    (route, response)
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks `Authorization: Bearer <token>`.
fn authorize<B>(req: &Request<B>, token: Option<&str>) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "admin.token is not set in the config: mutating calls are disabled".into(),
        ));
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <admin.token>".into(),
        )),
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "wrong admin token".into(),
        )),
    }
}

/// A request refused before it reached its handler.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn response(self) -> Response<Full<Bytes>> {
        error(self.0, &self.1)
    }
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
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn readyz(shared: &ControlContext) -> Response<Full<Bytes>> {
    let view = shared.node.view();
    let reason = match (&view.error, &view.replication) {
        (None, Some(_)) => return text(StatusCode::OK, "ready\n"),
        (Some(e), _) => format!("node probe failed: {e}"),
        (None, None) if shared.config.lease.probe_interval_ms == 0 => {
            "the node probe is disabled (lease.probe_interval_ms: 0)".to_string()
        }
        (None, None) => "the node has not answered a probe yet".to_string(),
    };
    text(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n"))
}

fn metrics(shared: &ControlContext) -> Response<Full<Bytes>> {
    let mut out = String::new();
    let encoded = match shared.registry.lock() {
        Ok(registry) => prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| e.to_string()),
        Err(_) => Err("metrics registry poisoned".to_string()),
    };
    match encoded {
        Ok(()) => with_type(StatusCode::OK, OPENMETRICS, out.into()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// The lease as JSON, `remaining_ms` null when valid until told otherwise.
pub fn lease_json(snapshot: &LeaseSnapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(snapshot).unwrap_or(serde_json::Value::Null);
    if snapshot.remaining_ms == u64::MAX {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("remaining_ms".into(), serde_json::Value::Null);
        }
    }
    v
}

fn status(shared: &ControlContext) -> serde_json::Value {
    serde_json::json!({
        "lease": lease_json(&shared.gate.lease().snapshot()),
        "node": shared.node.view(),
        "paused": shared.gate.pause().is_paused(),
        "pause": shared.gate.pause().status(),
        "failover_state": shared.gate.role().failover.state().as_str(),
        "demoted": shared.gate.role().demotion().map(|d| serde_json::json!({"new_master": d.new_master.as_deref()})),
        "listen": shared.config.listen,
        "backend": shared.config.backend.addr,
    })
}

/// Runs a graceful failover to the leasegate named in the body; answers
/// with the report when it has finished (200 on success, 409 on failure).
async fn post_failover(shared: &ControlContext, body: &[u8]) -> Response<Full<Bytes>> {
    let request: crate::control::failover::FailoverRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"to\": \"<target admin host:port>\", \"sync_timeout_ms\"?, \"pause_timeout_ms\"?, \"force_on_timeout\"?}}: {e}"),
            )
        }
    };
    if request.pause_timeout_ms <= request.sync_timeout_ms {
        return error(
            StatusCode::BAD_REQUEST,
            "pause_timeout_ms must exceed sync_timeout_ms",
        );
    }
    if request.lease_ttl_ms == 0
        || request.lease_ttl_ms > crate::control::failover::MAX_LEASE_TTL_MS
    {
        // Refused here rather than by the target's leasegate mid-switch.
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "lease_ttl_ms must be between 1 and {}",
                crate::control::failover::MAX_LEASE_TTL_MS
            ),
        );
    }
    // The failover runs in a task of its own: if this caller goes away, it
    // still completes (its outcome stays in /v1/status).
    let report = crate::control::failover::run(shared, request).await;
    let status = if report.result == crate::guard::role::FailoverState::Success {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    json(status, &serde_json::to_value(&report).unwrap_or_default())
}

/// `POST /v1/pause` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    timeout_ms: u64,
    #[serde(default = "default_pause_mode")]
    mode: crate::guard::pause::PauseMode,
}

fn default_pause_mode() -> crate::guard::pause::PauseMode {
    crate::guard::pause::PauseMode::Write
}

fn post_pause(shared: &ControlContext, body: &[u8]) -> Response<Full<Bytes>> {
    let request: PauseRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"timeout_ms\": N, \"mode\": \"write\"|\"all\"}}: {e}"),
            )
        }
    };
    if request.timeout_ms == 0 {
        return error(StatusCode::BAD_REQUEST, "timeout_ms must be above 0");
    }
    let pause = shared.gate.pause();
    pause.pause(
        std::time::Duration::from_millis(request.timeout_ms),
        request.mode,
    );
    tracing::info!(timeout_ms = request.timeout_ms, mode = ?request.mode, "paused over the admin API");
    json(
        StatusCode::OK,
        &serde_json::json!({"pause": pause.status()}),
    )
}

/// `POST /v1/lease` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    master_node_id: String,
    epoch: u64,
    ttl_ms: u64,
    #[serde(default)]
    nonce: Option<u64>,
}

fn post_lease(shared: &ControlContext, body: &[u8], received_at: u64) -> Response<Full<Bytes>> {
    let request: LeaseRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "body must be {{\"master_node_id\": \"...\", \"epoch\": N, \"ttl_ms\": N, \"nonce\": N?}}: {e}"
                ),
            )
        }
    };
    if request.ttl_ms == 0 {
        return error(StatusCode::BAD_REQUEST, "ttl_ms must be above 0");
    }
    let grant = Grant {
        master_node_id: Some(request.master_node_id),
        ttl_ms: request.ttl_ms,
        epoch: request.epoch,
        nonce: request.nonce,
        anchor: None,
    };
    let lease = shared.gate.lease();
    match shared.role.grant(&grant, received_at, Source::Http) {
        Ok(outcome) => {
            let outcome = match outcome {
                GrantOutcome::Renewed => "renewed",
                GrantOutcome::Revoked => "revoked",
                GrantOutcome::UnknownNonce => "unknown_nonce",
            };
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "outcome": outcome,
                    "lease": lease_json(&lease.snapshot()),
                    "nonce": lease.issue_nonce(),
                }),
            )
        }
        Err(e @ GrantError::InvalidTtl) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
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

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    with_type(status, JSON, body.into())
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
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

    fn error_text(r: Refusal) -> String {
        assert_eq!(r.0, StatusCode::UNAUTHORIZED);
        r.1
    }

    #[test]
    fn bearer_token_is_required() {
        assert!(authorize(&request(Some("Bearer t0k")), Some("t0k")).is_ok());
        let r = authorize(&request(Some("Bearer nope")), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("wrong admin token"));
        let r = authorize(&request(None), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("missing Authorization"));
        let r = authorize(&request(Some("Basic t0k")), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("missing Authorization"));
        let r = authorize(&request(Some("Bearer t0k")), None).unwrap_err();
        assert!(error_text(r).contains("admin.token is not set"));
    }

    #[test]
    fn lease_json_nulls_forever() {
        let mut s = LeaseSnapshot {
            mode: crate::guard::lease::LeaseMode::BlockWrite,
            valid: true,
            owner: None,
            node_id: None,
            epoch: 3,
            remaining_ms: u64::MAX,
            revoked_reason: None,
        };
        let v = lease_json(&s);
        assert!(v["remaining_ms"].is_null());
        assert_eq!(v["mode"], "block-write");
        s.remaining_ms = 250;
        assert_eq!(lease_json(&s)["remaining_ms"], 250);
    }
}
