//! The node probe: leasegate asks its node for `ROLE` every
//! `lease.probe_interval_ms`. A node that reports itself a replica has its
//! lease revoked at once, whatever the controller last said; the role and
//! offset are also what `/v1/status` reports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::guard::gate::Gate;
use crate::guard::role::Source;
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::ControlConnection;

/// The latest the node said about itself.
#[derive(Debug, Default)]
pub struct NodeStatus {
    inner: Mutex<NodeView>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct NodeView {
    pub replication: Option<Replication>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
}

impl NodeStatus {
    pub fn view(&self) -> NodeView {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn set(&self, view: NodeView) {
        if let Ok(mut v) = self.inner.lock() {
            *v = view;
        }
    }
}

/// Probes until `shutdown`; keeps one connection open and reopens it on error.
pub async fn run(
    addr: String,
    password: Option<String>,
    interval: Duration,
    timeout: Duration,
    gate: Arc<Gate>,
    status: Arc<NodeStatus>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<ControlConnection> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if conn.is_none() {
            match ControlConnection::open(&addr, password.as_deref(), timeout).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    debug!(error = %e, "node probe cannot connect");
                    status.set(NodeView {
                        replication: None,
                        error: Some(e.to_string()),
                    });
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.call(&["ROLE"]).await {
            Ok(reply) => {
                let replication = Replication::from_role(&reply);
                if replication.is_replica() && gate.lease().snapshot().valid {
                    warn!(master = ?replication.master, "the node reports itself a replica: revoking the master lease");
                }
                if replication.is_replica() {
                    gate.role()
                        .revoke("the node's ROLE is slave", Source::Probe);
                }
                status.set(NodeView {
                    replication: Some(replication),
                    error: None,
                });
            }
            Err(e) => {
                conn = None;
                status.set(NodeView {
                    replication: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }
}
