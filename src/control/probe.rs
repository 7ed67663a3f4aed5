//! The node probe: leasegate asks its node for `ROLE` every
//! `lease.probe_interval_ms`. A node that reports itself a replica has its
//! lease revoked at once, whatever the controller last said; the role and
//! offset are also what `/v1/status` reports.
//!
//! The probe is also a **local witness** for a controller's failover vote
//! (kvrocks-controller PR #396): `GET /v1/probe` reports whether the node
//! answers, how many probes in a row failed, how long ago one last
//! succeeded, its role and sequence. Each probe gets at most one interval to
//! answer, so a stopped node is reported within two intervals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use tracing::{debug, warn};

use crate::control::ControlContext;
use crate::guard::role::Source;
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::ControlConnection;

/// The latest the node said about itself, and the probe's record.
#[derive(Debug, Default)]
pub struct NodeStatus {
    inner: Mutex<NodeView>,
    /// `leasegate_node_probe_failures`: failed probes in a row.
    pub failures_gauge: Gauge,
    /// `leasegate_node_is_master`: 1 when the last probe saw `master`.
    pub is_master_gauge: Gauge,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct NodeView {
    pub replication: Option<Replication>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
    /// Failed probes in a row (0 after a success).
    #[serde(skip)]
    pub failures: u64,
    /// When a probe last succeeded.
    #[serde(skip)]
    pub last_success: Option<Instant>,
    /// Probes made so far.
    #[serde(skip)]
    pub probes: u64,
}

impl NodeStatus {
    pub fn view(&self) -> NodeView {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "node_probe_failures",
            "Probes of the node that failed in a row (0 after a success)",
            self.failures_gauge.clone(),
        );
        registry.register(
            "node_is_master",
            "1 when the node's last ROLE said master",
            self.is_master_gauge.clone(),
        );
    }

    fn succeeded(&self, replication: Replication) {
        let master = replication.role.as_deref() == Some("master");
        if let Ok(mut v) = self.inner.lock() {
            v.replication = Some(replication);
            v.error = None;
            v.failures = 0;
            v.last_success = Some(Instant::now());
            v.probes += 1;
        }
        self.failures_gauge.set(0);
        self.is_master_gauge.set(i64::from(master));
    }

    /// Forgets what earlier probes saw (the probe was switched off).
    fn reset(&self) {
        if let Ok(mut v) = self.inner.lock() {
            *v = NodeView::default();
        }
        self.failures_gauge.set(0);
        self.is_master_gauge.set(0);
    }

    fn failed(&self, error: String) {
        let failures = match self.inner.lock() {
            Ok(mut v) => {
                v.replication = None;
                v.error = Some(error);
                v.failures += 1;
                v.probes += 1;
                v.failures
            }
            Err(_) => 0,
        };
        self.failures_gauge
            .set(i64::try_from(failures).unwrap_or(i64::MAX));
        self.is_master_gauge.set(0);
    }
}

/// Probes until `shutdown`; keeps one connection open and reopens it on
/// error. Reads `lease.probe_interval_ms`, `backend.password` and
/// `backend.connect_timeout_ms` from the running config, again after every
/// reload: an interval of 0 idles until a reload sets one.
pub async fn run(shared: Arc<ControlContext>) {
    let status = Arc::clone(&shared.node);
    let mut reloaded = shared.reloaded.subscribe();
    // The connection, and the (password, bound) it was opened with.
    let mut conn: Option<(ControlConnection, Option<String>, Duration)> = None;
    loop {
        let interval = shared.config.load().lease.probe_interval;
        if interval.is_zero() {
            // Disabled: what an earlier probe saw is no longer reported.
            conn = None;
            status.reset();
            tokio::select! {
                r = reloaded.changed() => if r.is_err() { return },
                _ = shared.shutdown.cancelled() => return,
            }
            continue;
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                r = reloaded.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if shared.config.load().lease.probe_interval != interval {
                        break;
                    }
                    continue;
                }
                _ = shared.shutdown.cancelled() => return,
            }
            let config = shared.config.load_full();
            // One interval at most per probe: a stopped node is reported
            // within two.
            let bound = interval
                .min(config.connect_timeout())
                .max(Duration::from_millis(1));
            let password = &config.backend.password;
            if conn
                .as_ref()
                .is_some_and(|(_, p, b)| p != password || *b != bound)
            {
                conn = None;
            }
            if conn.is_none() {
                match ControlConnection::open(&config.backend.addr, password.as_deref(), bound)
                    .await
                {
                    Ok(c) => conn = Some((c, password.clone(), bound)),
                    Err(e) => {
                        debug!(error = %e, "node probe cannot connect");
                        status.failed(e.to_string());
                        continue;
                    }
                }
            }
            let Some((c, _, _)) = conn.as_mut() else {
                continue;
            };
            let answer = match tokio::time::timeout(bound, c.call(&["ROLE"])).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer to ROLE within {} ms", bound.as_millis())),
            };
            match answer {
                Ok(reply) => {
                    let replication = Replication::from_role(&reply);
                    let gate = &shared.gate;
                    if replication.is_replica() && gate.lease().snapshot().valid {
                        warn!(master = ?replication.master, "the node reports itself a replica: revoking the master lease");
                    }
                    if replication.is_replica() {
                        gate.role()
                            .revoke("the node's ROLE is slave", Source::Probe);
                    }
                    status.succeeded(replication);
                }
                Err(e) => {
                    conn = None;
                    status.failed(e);
                }
            }
        }
    }
}
