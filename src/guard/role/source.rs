//! Who changed the lease (a heartbeat, a poll, the probe, a failover...),
//! and the counters of those changes by source: one label set for every
//! grant and revocation that goes through [`super::Role`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Who granted or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `CLUSTERX HEARTBEAT` from a control connection.
    Heartbeat,
    /// `POST /v1/lease`.
    Http,
    /// Polling the controller's topology.
    Poll,
    /// Asking the Redis Sentinels who the master is.
    Sentinel,
    /// A mastership confirmation round (`verify.mode: every-write`).
    Verification,
    /// The node probe saw the node's `ROLE`.
    Probe,
    /// The node accepted a role change (`REPLICAOF host port`, `CLUSTERX SETNODES`).
    Node,
    /// This proxy's graceful failover.
    Failover,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Heartbeat => "heartbeat",
            Source::Http => "http",
            Source::Poll => "poll",
            Source::Sentinel => "sentinel",
            Source::Verification => "verification",
            Source::Probe => "probe",
            Source::Node => "node",
            Source::Failover => "failover",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    source: &'static str,
    change: &'static str,
}

/// Counters of mastership changes, registered under `leasegate_`.
#[derive(Debug, Default, Clone)]
pub struct RoleMetrics {
    /// Revocations because the node is (becoming) a replica.
    pub role_revocations: Counter,
    changes: Family<ChangeLabels, Counter>,
}

impl RoleMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "role_revocations",
            "Lease revocations caused by a role change seen passing through",
            self.role_revocations.clone(),
        );
        registry.register(
            "lease_changes",
            "Grants and revocations of the master lease, by source and change (renewed, revoked, refused, unknown_nonce)",
            self.changes.clone(),
        );
    }

    pub(super) fn count(&self, source: Source, change: &'static str) {
        self.changes
            .get_or_create(&ChangeLabels {
                source: source.as_str(),
                change,
            })
            .inc();
    }
}
