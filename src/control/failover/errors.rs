//! Why a failover failed: every failure is a [`FailoverError`], whose text
//! is the report's `error` and says which of the two defined end states
//! the run left (unchanged, or both fenced).

use redis_protocol::resp2::types::OwnedFrame;

use crate::kvrocks::admin_api::LeaseOutcome;
use crate::kvrocks::admin_client::AdminError;
use crate::kvrocks::controller::ShardFailoverError;
use crate::proxy::backend::BackendError;

/// Why a failover failed; the report's `error` is its Display.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("Failover is already in progress")]
    AlreadyRunning,
    /// The failover's task panicked or was cancelled (the drop guard has
    /// ended the pause and marked the run failed).
    #[error(
        "the failover task {}: this node's lease is {} and it is {}demoted; check /v1/status and let the controller decide",
        if *.panicked { "panicked" } else { "was cancelled" },
        if *.lease_valid { "valid" } else { "revoked" },
        if *.demoted { "" } else { "not " }
    )]
    TaskEnded {
        panicked: bool,
        lease_valid: bool,
        demoted: bool,
    },
    /// check_slave: the target's leasegate did not answer its status.
    #[error(transparent)]
    TargetStatus(#[from] AdminError),
    #[error("the target leasegate at {to} has no node_id")]
    NoNodeId { to: String },
    /// check_slave: the target's leasegate refuses the token this failover
    /// would grant its lease with (found before anything was paused).
    #[error(
        "the target leasegate at {to} refuses this failover's admin token (give its own as target_token, or `leasegate failover --target-token`): {source}"
    )]
    TargetToken { to: String, source: Box<AdminError> },
    #[error("cannot reach this node {node}: {source}")]
    SourceUnreachable { node: String, source: BackendError },
    #[error("cannot reach the target node {node}: {source}")]
    TargetUnreachable { node: String, source: BackendError },
    #[error("unexpected INFO reply {reply:?}")]
    UnexpectedInfo { reply: OwnedFrame },
    #[error("INFO replication failed: {source}")]
    Info { source: BackendError },
    #[error("Current node is a slave, can't failover")]
    NotAMaster,
    #[error(
        "the target node {target} is not a replica of this node {node} (role {}, master {})",
        .role.as_deref().unwrap_or("unknown"),
        .master.as_deref().unwrap_or("none")
    )]
    NotAReplica {
        target: String,
        node: String,
        role: Option<String>,
        master: Option<String>,
    },
    #[error(
        "the target node's replication link is {}",
        .status.as_deref().unwrap_or("unknown")
    )]
    LinkDown { status: Option<String> },
    #[error("the target node does not have this node's Kvrocks namespaces with the same tokens ({differ}): a session logged in with such a token could not move there and would fail at every reconnect. Add them there, or run both nodes with repl-namespace-enabled yes (docs/kvrocks-controller.md, Namespaces)")]
    NamespacesDiffer { differ: String },
    #[error("connections are in Kvrocks namespaces this node no longer has ({gone}: deleted while they were connected). Moved, each would log in with that namespace's token wherever the token leads now, another namespace's keys if it was given again: disconnect them first (CLIENT KILL) (docs/kvrocks-controller.md, Namespaces)")]
    NamespacesGone { gone: String },
    #[error("writes in flight were not answered within sync_timeout_ms (a loaded node or long pipelines: raise --sync-timeout-ms, and --pause-timeout-ms above it)")]
    InFlightTimeout,
    #[error(
        "the replica did not reach offset {offset} within {timeout_ms} ms (sync timeout; {}; raise --sync-timeout-ms, and --pause-timeout-ms above it)",
        .at.map_or("its offset could not be read in that time".to_string(), |o| format!("it was at {o}"))
    )]
    SyncTimeout {
        offset: u64,
        timeout_ms: u64,
        /// The replica's offset when last seen.
        at: Option<u64>,
    },
    /// After the fencing, the replica did not catch up again.
    #[error("{why}, and the replica did not catch up with this node again within {timeout_ms} ms (sync timeout)")]
    ResyncTimeout { why: Resync, timeout_ms: u64 },
    #[error("{why}, and the replica's catch-up could not be checked: {source}")]
    ResyncUnchecked {
        why: Resync,
        source: Box<FailoverError>,
    },
    /// `SLAVEOF NO ONE` failed and certainly did not take effect: this
    /// node was unfenced.
    #[error("cannot promote the target node {node}: {source}; it is certainly still a replica ({why}), so this node was unfenced and stays master")]
    PromoteFailed {
        node: String,
        source: BackendError,
        why: NotPromoted,
    },
    /// `SLAVEOF NO ONE` failed and may have taken effect: both fenced.
    #[error("cannot promote the target node {node}: {source}; whether it was promoted cannot be determined ({why}). Both nodes are fenced: this node's lease is revoked (epoch {epoch}) and it is marked demoted, and the target's leasegate was not granted the lease. The controller must grant the lease (epoch {epoch} or later) to the node that is to be master")]
    PromoteUnknown {
        node: String,
        source: BackendError,
        why: PromotionUnknown,
        epoch: u64,
    },
    /// The target was promoted, but its leasegate did not confirm the
    /// grant: both fenced.
    #[error("the target node {node} was promoted, but its leasegate {leasegate} did not confirm the lease grant at epoch {epoch}: {source}. Both nodes are fenced: this node's lease is revoked and it is marked demoted (held writes are not applied to it), and the target's leasegate holds no lease unless the grant got through unconfirmed. The controller must grant the lease (epoch {epoch} or later, to {node_id} if the promoted node is to stay master)")]
    GrantFailed {
        node: String,
        leasegate: String,
        epoch: u64,
        node_id: String,
        source: Box<GrantUnconfirmed>,
    },
    #[error("bad target node address {node}")]
    BadTargetAddress { node: String },
    #[error("the new master serves, but this node could not be made its replica: {source}")]
    Rejoin { source: BackendError },
    /// Cluster mode: the failover goes through the controller.
    #[error("this node runs in cluster mode, where only kvrocks-controller switches a shard (Kvrocks refuses SLAVEOF there), and controller.url is not set")]
    NoController,
    #[error(
        "this node's id is unknown (set node_id, or let the controller send CLUSTERX SETNODEID)"
    )]
    NoOwnNodeId,
    #[error("cannot read the cluster topology from the controller: {0}")]
    Topology(String),
    #[error("the controller does not list this node {node_id} as the master of a shard")]
    NotShardMaster { node_id: String },
    #[error("the target node {target} is not a replica in this node's shard {shard} (controller topology)")]
    NotInShard { target: String, shard: usize },
    #[error("the controller refused the shard failover: {source}; nothing was switched, so this node was unfenced and stays master")]
    ControllerRefused { source: ShardFailoverError },
    #[error("the shard failover got no clear answer from the controller: {source}; whether it switched the shard cannot be determined. Both nodes are fenced: this node's lease is revoked (epoch {epoch}) and it is marked demoted; the controller's next topology and lease decide")]
    ControllerUnknown {
        source: ShardFailoverError,
        epoch: u64,
    },
    /// Cluster mode, timed (`cluster_timing`): the controller is asked
    /// before the pause, and did not say.
    #[error("the shard failover got no clear answer from the controller: {source}, and its topology does not name the target master: nothing was switched and no write was paused")]
    SwitchUnanswered { source: ShardFailoverError },
    #[error(
        "the controller switched the shard, but its new topology could not be read back: {last}"
    )]
    SwitchedUnread { last: String },
    /// A failure after the controller switched the shard (before the pause).
    #[error("{source}. The controller had switched the shard before the pause (cluster_timing): this node follows it as after the controller's own failover — it steps down at its next poll and hands its writes to the new master's leasegate, which brings its node to the topology once this node is fenced and caught up")]
    AfterSwitch { source: Box<FailoverError> },
    #[error("the controller accepted the shard failover, but the new master's leasegate {leasegate} held no lease within {timeout_ms} ms: {last}. Held writes were released to it and are refused there until the controller grants its lease (refused here instead where it would hand them back: a switch the controller answered but never carried out)")]
    NewMasterNoLease {
        leasegate: String,
        timeout_ms: u64,
        last: String,
    },
}

/// Why the replica's offset was checked again after the fencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Resync {
    #[error("the pause ended before the switch (pause_timeout_ms is too short)")]
    PauseEnded,
    #[error("a blocking write (BLPOP & co.) completed on this node after its offset was read")]
    BlockingWrite,
}

/// Why the target's leasegate did not confirm the lease grant.
#[derive(Debug, thiserror::Error)]
pub enum GrantUnconfirmed {
    #[error(transparent)]
    Call(#[from] AdminError),
    #[error("the grant was not applied (outcome {0})")]
    NotApplied(LeaseOutcome),
}

/// How a failed promotion is known not to have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotPromoted {
    #[error("it refused the request and reports itself a replica")]
    Refused,
    #[error("the connection broke and it reports itself a replica")]
    ConnectionBroke,
}

/// Why a failed promotion's outcome cannot be determined.
#[derive(Debug, thiserror::Error)]
pub enum PromotionUnknown {
    #[error(
        "it reports itself a replica, but the request got no answer and may still be carried out"
    )]
    NoAnswer,
    #[error("it reports the role {}", .role.as_deref().unwrap_or("unknown"))]
    OtherRole { role: Option<String> },
    #[error("its role cannot be read: {source}")]
    RoleUnreadable { source: RoleError },
}

/// Why the target node's `ROLE` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("cannot reach it: {source}")]
    Connect { source: BackendError },
    #[error("ROLE failed: {source}")]
    Role { source: BackendError },
}
