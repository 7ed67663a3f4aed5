//! The Gate's counters: what it decided, registered under `leasegate_`,
//! next to the decisions they count.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A counter's `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// Why a write was refused: no valid lease, or this node was demoted.
pub const FENCE_REASONS: [&str; 3] = ["lease", "demoted", "read"];
/// Why a heartbeat was refused.
pub const HEARTBEAT_REFUSALS: [&str; 6] =
    ["syntax", "epoch", "ttl", "node_id", "upgrade", "sentinel"];

/// Counters of what the Gate decided, registered under `leasegate_`.
#[derive(Debug, Default, Clone)]
pub struct GateMetrics {
    /// `leasegate_writes_fenced_total{reason}` ([`FENCE_REASONS`]).
    pub writes_fenced: Family<Reason, Counter>,
    pub writes_unfenced_log_only: Counter,
    pub commands_denied: Counter,
    pub control_refused: Counter,
    pub heartbeats: Counter,
    /// `leasegate_heartbeats_refused_total{reason}` ([`HEARTBEAT_REFUSALS`]).
    pub heartbeats_refused: Family<Reason, Counter>,
    pub unknown_outcomes: Counter,
    pub late_acknowledgements_log_only: Counter,
    /// `leasegate_writes_unreplicated_total` (`durability.min_replicas`).
    pub writes_unreplicated: Counter,
    /// `leasegate_writes_waited_for_switch_total`: writes whose
    /// confirmation was refused because the controller switched the
    /// shard, that waited for the poller to follow (then handed over).
    pub writes_waited_for_switch: Counter,
    /// `leasegate_stalled_waits_total`: requests that waited because the
    /// lease's poll had not answered within its pulse (a stalled process).
    pub stalled_waits: Counter,
    /// `leasegate_commands_addressed_elsewhere_total`: a moved session's
    /// request addressed to this node, answered by closing the connection.
    pub addressed_elsewhere: Counter,
}

impl GateMetrics {
    pub fn register(&self, registry: &mut Registry) {
        // Every reason exists from the start, at 0.
        for reason in FENCE_REASONS {
            let _ = self.writes_fenced.get_or_create(&Reason { reason });
        }
        for reason in HEARTBEAT_REFUSALS {
            let _ = self.heartbeats_refused.get_or_create(&Reason { reason });
        }
        registry.register(
            "stalled_waits",
            "Requests that waited for the lease's poll to answer again: the lease was valid, but the poll had not answered within its pulse (this process or its control thread stalled, e.g. frozen)",
            self.stalled_waits.clone(),
        );
        registry.register(
            "writes_fenced",
            "Writes refused, by reason: lease (no valid master lease), demoted (this node was demoted and the write was not handed over)",
            self.writes_fenced.clone(),
        );
        registry.register(
            "writes_unfenced_log_only",
            "Writes passed in log-only mode that block-write would have refused",
            self.writes_unfenced_log_only.clone(),
        );
        registry.register(
            "commands_denied",
            "Requests refused by commands.deny",
            self.commands_denied.clone(),
        );
        registry.register(
            "control_refused",
            "Control commands refused with NOPERM",
            self.control_refused.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats accepted over RESP",
            self.heartbeats.clone(),
        );
        registry.register(
            "heartbeats_refused",
            "Heartbeats refused, by reason: syntax, epoch (stale election version), ttl, node_id (this node's id unknown)",
            self.heartbeats_refused.clone(),
        );
        registry.register(
            "unknown_outcomes",
            "Write acknowledgements replaced by the unknown-outcome error: the node answered after the master lease ended, or (verify.hold: acknowledgement) the controller did not confirm mastership",
            self.unknown_outcomes.clone(),
        );
        registry.register(
            "writes_unreplicated",
            "Write acknowledgements replaced by an unknown-outcome error because fewer replicas than durability.min_replicas confirmed them in time",
            self.writes_unreplicated.clone(),
        );
        registry.register(
            "writes_waited_for_switch",
            "Writes whose mastership confirmation was refused because the controller switched the shard, which waited for the poller to follow the switch (and were then handed to the new master)",
            self.writes_waited_for_switch.clone(),
        );
        registry.register(
            "commands_addressed_elsewhere",
            "Requests addressed to this node (ROLE, CLUSTER INFO, CLUSTERX, REPLICAOF) on a session served by another node's leasegate: refused and the connection closed, so that the client reconnects here",
            self.addressed_elsewhere.clone(),
        );
        registry.register(
            "late_acknowledgements_log_only",
            "Write acknowledgements passed in log-only mode that block-write would have replaced (lease ended before the reply)",
            self.late_acknowledgements_log_only.clone(),
        );
    }
}
