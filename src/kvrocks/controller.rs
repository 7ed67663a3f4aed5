//! Pull renewal from a stock kvrocks-controller (DESIGN §2, source 3).
//!
//! A controller that knows nothing about leases still knows who the master of
//! each shard is. Every `controller.poll_interval_ms` leasegate asks it for the
//! cluster (`GET {url}/api/v1/namespaces/{ns}/clusters/{cluster}`) and:
//!
//! * this node is `master` of its shard → the lease is renewed for
//!   `controller.ttl_ms`, anchored at the instant the request was *sent* (so a
//!   slow answer only shortens the lease);
//! * this node is listed with another role, or not at all → the lease is
//!   revoked at once;
//! * the cluster version is below the highest this poller has seen → the
//!   answer is stale (an old leader, a lagging replica of etcd) and ignored;
//! * the controller is unreachable or answers an error → nothing happens: the
//!   lease simply runs out, which is the point.
//!
//! Non-leader controllers answer `307` to the leader; up to [`MAX_REDIRECTS`]
//! hops are followed. Safe only if `ttl_ms` + margin stays below the
//! controller's failure detection time; [`crate::config::Config::warnings`]
//! says so at start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::LOCATION;
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tracing::{info, warn};

use crate::guard::lease::{Grant, GrantOutcome};
use crate::server::Shared;

/// Redirect hops followed per poll.
pub const MAX_REDIRECTS: usize = 3;
/// Largest controller answer read (a cluster with thousands of nodes fits).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Failures logged: the first, then every this many.
const LOG_EVERY: u64 = 10;

// ---------------------------------------------------------------------------
// The controller's JSON.

/// `{"data":{"cluster":{...}}}`.
#[derive(Debug, Deserialize)]
pub struct ClusterAnswer {
    pub data: ClusterData,
}

#[derive(Debug, Deserialize)]
pub struct ClusterData {
    pub cluster: Cluster,
}

#[derive(Debug, Deserialize)]
pub struct Cluster {
    pub version: u64,
    #[serde(default)]
    pub shards: Vec<Shard>,
}

#[derive(Debug, Deserialize)]
pub struct Shard {
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug, Deserialize)]
pub struct ClusterNode {
    pub id: String,
    #[serde(default)]
    pub addr: String,
    pub role: String,
}

/// `{"error":{"message":"..."}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    message: String,
}

/// Parses a `200` answer.
pub fn parse_cluster(body: &[u8]) -> Result<Cluster, String> {
    serde_json::from_slice::<ClusterAnswer>(body)
        .map(|a| a.data.cluster)
        .map_err(|e| format!("unexpected answer from the controller: {e}"))
}

/// Describes a non-`200` answer, using the controller's error message when it sent one.
pub fn describe_error(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorAnswer>(body) {
        Ok(e) => format!("controller answered {status}: {}", e.error.message),
        Err(_) => format!(
            "controller answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        ),
    }
}

// ---------------------------------------------------------------------------
// What the topology says about this node.

/// The poller's conclusion from one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Older than an answer already seen: ignored.
    Stale { version: u64, highest: u64 },
    /// This node is master of its shard.
    Renew { version: u64 },
    /// This node is not master: revoke, for this reason.
    Revoke { version: u64, reason: String },
}

/// Decides from `cluster` for node `me`, given the highest version seen so far.
pub fn decide(cluster: &Cluster, me: &str, highest: Option<u64>) -> Decision {
    let version = cluster.version;
    if let Some(highest) = highest {
        if version < highest {
            return Decision::Stale { version, highest };
        }
    }
    let role = cluster
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .find(|n| n.id == me)
        .map(|n| n.role.as_str());
    match role {
        Some(r) if r.eq_ignore_ascii_case("master") => Decision::Renew { version },
        Some(r) => Decision::Revoke {
            version,
            reason: format!("controller lists this node as {r}"),
        },
        None => Decision::Revoke {
            version,
            reason: "not in the cluster topology".to_string(),
        },
    }
}

/// Resolves a `Location` header against the URI that was asked.
pub fn resolve_location(base: &Uri, location: &str) -> Result<Uri, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location
            .parse()
            .map_err(|e| format!("bad redirect location '{location}': {e}"));
    }
    if !location.starts_with('/') {
        return Err(format!("bad redirect location '{location}'"));
    }
    let authority = base
        .authority()
        .ok_or_else(|| format!("cannot resolve '{location}' against {base}"))?;
    format!("http://{authority}{location}")
        .parse()
        .map_err(|e| format!("bad redirect location '{location}': {e}"))
}

/// Percent-encodes a path segment (namespace and cluster names).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{url}/api/v1/namespaces/{ns}/clusters/{cluster}`.
pub fn cluster_url(url: &str, namespace: &str, cluster: &str) -> String {
    format!(
        "{}/api/v1/namespaces/{}/clusters/{}",
        url.trim_end_matches('/'),
        segment(namespace),
        segment(cluster)
    )
}

// ---------------------------------------------------------------------------
// Metrics.

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `renewed`, `revoked`, `stale`, `fenced` (revoked at this version) or `error`.
    pub outcome: &'static str,
}

/// `leasegate_controller_polls_total{outcome}` and
/// `leasegate_controller_poll_duration_seconds`.
#[derive(Debug)]
pub struct PollMetrics {
    pub polls: Family<OutcomeLabels, Counter>,
    pub duration: Histogram,
}

impl Default for PollMetrics {
    fn default() -> Self {
        Self {
            polls: Family::default(),
            duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        }
    }
}

impl PollMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_polls",
            "Controller polls by outcome (renewed, revoked, stale, fenced, error)",
            self.polls.clone(),
        );
        registry.register(
            "controller_poll_duration_seconds",
            "Round-trip time of a controller poll, redirects included",
            self.duration.clone(),
        );
    }

    fn count(&self, outcome: &'static str) {
        self.polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

// ---------------------------------------------------------------------------
// The poller.

/// The pooled keep-alive HTTP client used to talk to the controller.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A keep-alive client whose connects give up after `timeout`.
pub fn http_client(timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Polls the controller until `shared.shutdown` is cancelled. Does nothing
/// when `controller.url` is unset.
pub async fn poll(shared: Arc<Shared>) {
    let config = &shared.config.controller;
    let Some(base) = config.url.as_deref() else {
        return;
    };
    let url = cluster_url(base, &config.namespace, &config.cluster);
    let metrics = PollMetrics::default();
    match shared.registry.lock() {
        Ok(mut registry) => metrics.register(&mut registry),
        Err(_) => warn!("metrics registry unavailable; controller metrics are not exported"),
    }
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    let client = http_client(timeout);
    info!(%url, interval_ms = config.poll_interval_ms, ttl_ms = config.ttl_ms, "polling the controller for the master lease");

    let mut poller = Poller {
        shared: &shared,
        metrics: &metrics,
        highest: None,
        failures: 0,
        revocations_seen: shared.gate.lease().revocations(),
        fenced_at: None,
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(config.poll_interval_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let lease = shared.gate.lease();
        let sent = lease.now();
        let started = Instant::now();
        let answer = tokio::select! {
            a = tokio::time::timeout(timeout, fetch(&client, &url)) => match a {
                Ok(a) => a,
                Err(_) => Err(format!("no answer from the controller within {} ms", timeout.as_millis())),
            },
            _ = shared.shutdown.cancelled() => return,
        };
        metrics.duration.observe(started.elapsed().as_secs_f64());
        poller.apply(answer, sent);
    }
}

struct Poller<'a> {
    shared: &'a Shared,
    metrics: &'a PollMetrics,
    highest: Option<u64>,
    failures: u64,
    /// The lease's revocation count when the poller last looked.
    revocations_seen: u64,
    /// The lease was revoked (by anyone: a role change, a failover, another
    /// master named) while the topology was at this version: a poll renews
    /// again only from a later version, since the controller's view at this
    /// version is older than the revocation.
    fenced_at: Option<u64>,
}

impl Poller<'_> {
    fn apply(&mut self, answer: Result<Cluster, String>, sent: u64) {
        let lease = self.shared.gate.lease();
        let cluster = match answer {
            Ok(c) => c,
            Err(e) => return self.failed(&e),
        };
        let Some(me) = lease.node_id() else {
            return self.failed(
                "this node's id is unknown (set node_id, or let CLUSTERX SETNODEID pass first)",
            );
        };
        if self.failures > 0 {
            info!(failures = self.failures, "the controller answers again");
            self.failures = 0;
        }
        let revocations = lease.revocations();
        if revocations != self.revocations_seen {
            self.revocations_seen = revocations;
            self.fenced_at = Some(self.highest.unwrap_or(0).max(cluster.version));
        }
        match decide(&cluster, &me, self.highest) {
            // Unless a grant since (a push, a failover's rollback) made the
            // lease valid again: then the poll only keeps it going.
            Decision::Renew { version }
                if self.fenced_at.is_some_and(|f| version <= f) && !lease.write_allowed() =>
            {
                self.highest = Some(version);
                self.metrics.count("fenced");
                tracing::debug!(
                    version,
                    fenced_at = ?self.fenced_at,
                    "the lease was revoked at this topology version; a poll renews only from a later one"
                );
            }
            Decision::Stale { version, highest } => {
                self.metrics.count("stale");
                tracing::debug!(
                    version,
                    highest,
                    "stale cluster version from the controller; ignored"
                );
            }
            Decision::Renew { version } => {
                self.highest = Some(version);
                self.fenced_at = None;
                let grant = Grant {
                    master_node_id: Some(me),
                    ttl_ms: self.shared.config.controller.ttl_ms,
                    epoch: lease.epoch(),
                    nonce: None,
                    anchor: Some(sent),
                };
                match lease.grant(&grant, lease.now()) {
                    Ok(GrantOutcome::Renewed) => {
                        self.shared.gate.clear_demotion();
                        self.metrics.count("renewed");
                    }
                    Ok(other) => {
                        self.metrics.count("error");
                        warn!(outcome = ?other, "controller poll did not renew the lease");
                    }
                    // The epoch moved between reading and granting (a push
                    // grant raced this poll); the next poll uses the new one.
                    Err(e) => {
                        self.metrics.count("error");
                        tracing::debug!(error = %e, "controller poll grant refused");
                    }
                }
            }
            Decision::Revoke { version, reason } => {
                self.highest = Some(version);
                self.metrics.count("revoked");
                let snapshot = lease.snapshot();
                if snapshot.valid || snapshot.revoked_reason.as_deref() != Some(reason.as_str()) {
                    info!(version, %reason, "revoking the master lease");
                }
                lease.revoke(&reason);
                self.revocations_seen = lease.revocations();
                self.fenced_at = Some(version);
            }
        }
    }

    fn failed(&mut self, error: &str) {
        self.metrics.count("error");
        self.failures += 1;
        if self.failures == 1 || self.failures % LOG_EVERY == 0 {
            warn!(
                failures = self.failures,
                error, "controller poll failed; the lease is not renewed"
            );
        }
    }
}

/// One request for the cluster topology: GET, following redirects, and parse.
pub async fn fetch(client: &HttpClient, url: &str) -> Result<Cluster, String> {
    let mut uri: Uri = url
        .parse()
        .map_err(|e| format!("bad controller url '{url}': {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        let request = hyper::Request::get(uri.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request to {uri}: {e}"))?;
        let response = client.request(request).await.map_err(|e| {
            format!(
                "cannot reach the controller at {uri}: {}",
                crate::kvrocks::admin_client::error_chain(&e)
            )
        })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("controller answered {status} without a Location"))?;
            uri = resolve_location(&uri, location)?;
            continue;
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("cannot read the controller's answer: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(describe_error(status.as_u16(), &body));
        }
        return parse_cluster(&body);
    }
    Err(format!(
        "more than {MAX_REDIRECTS} redirects from the controller"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn topology(version: u64, me_role: Option<&str>) -> Vec<u8> {
        let mut nodes = vec![format!(
            r#"{{"id":"{OTHER}","addr":"127.0.0.2:6666","role":"{}","password":"","created_at":1}}"#,
            if me_role == Some("master") {
                "slave"
            } else {
                "master"
            }
        )];
        if let Some(role) = me_role {
            nodes.push(format!(
                r#"{{"id":"{ME}","addr":"127.0.0.1:6666","role":"{role}","password":"","created_at":1}}"#
            ));
        }
        format!(
            r#"{{"data":{{"cluster":{{"version":{version},"name":"c1","shards":[
                {{"nodes":[{{"id":"cccccccccccccccccccccccccccccccccccccccc","addr":"127.0.0.3:6666","role":"master"}}],"slot_ranges":["8192-16383"],"target_shard_index":-1,"migrating_slot":null}},
                {{"nodes":[{}],"slot_ranges":["0-8191"],"target_shard_index":-1,"migrating_slot":null}}]}}}}}}"#,
            nodes.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn master_renews_slave_and_absent_revoke() {
        let c = parse_cluster(&topology(3, Some("master"))).expect("parsed");
        assert_eq!(c.version, 3);
        assert_eq!(decide(&c, ME, None), Decision::Renew { version: 3 });
        assert_eq!(decide(&c, ME, Some(3)), Decision::Renew { version: 3 });

        let c = parse_cluster(&topology(4, Some("slave"))).expect("parsed");
        assert_eq!(
            decide(&c, ME, Some(3)),
            Decision::Revoke {
                version: 4,
                reason: "controller lists this node as slave".into()
            }
        );
        let c = parse_cluster(&topology(5, None)).expect("parsed");
        assert_eq!(
            decide(&c, ME, Some(4)),
            Decision::Revoke {
                version: 5,
                reason: "not in the cluster topology".into()
            }
        );
    }

    #[test]
    fn older_versions_are_stale() {
        let c = parse_cluster(&topology(2, Some("master"))).expect("parsed");
        assert_eq!(
            decide(&c, ME, Some(3)),
            Decision::Stale {
                version: 2,
                highest: 3
            }
        );
        let c = parse_cluster(&topology(2, Some("slave"))).expect("parsed");
        assert!(matches!(decide(&c, ME, Some(3)), Decision::Stale { .. }));
    }

    #[test]
    fn errors_are_described() {
        let e = describe_error(404, br#"{"error":{"message":"cluster not found"}}"#);
        assert_eq!(e, "controller answered 404: cluster not found");
        let e = describe_error(502, b"Bad Gateway\n");
        assert_eq!(e, "controller answered 502: Bad Gateway");
        let e = parse_cluster(br#"{"error":{"message":"x"}}"#).unwrap_err();
        assert!(e.contains("missing field `data`"), "{e}");
        assert!(parse_cluster(b"not json").is_err());
    }

    #[test]
    fn urls_and_redirects() {
        assert_eq!(
            cluster_url("http://ctl:9379/", "ns 1", "c/1"),
            "http://ctl:9379/api/v1/namespaces/ns%201/clusters/c%2F1"
        );
        let base: Uri = "http://127.0.0.1:9379/api/v1/namespaces/a/clusters/b"
            .parse()
            .expect("uri");
        assert_eq!(
            resolve_location(&base, "http://127.0.0.2:9379/x")
                .expect("absolute")
                .to_string(),
            "http://127.0.0.2:9379/x"
        );
        assert_eq!(
            resolve_location(&base, "/api/v1/x")
                .expect("relative")
                .to_string(),
            "http://127.0.0.1:9379/api/v1/x"
        );
        assert!(resolve_location(&base, "x y").is_err());
    }
}
