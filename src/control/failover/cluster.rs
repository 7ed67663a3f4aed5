//! The switch of a graceful failover in Kvrocks cluster mode.
//!
//! There Kvrocks refuses `SLAVEOF`: roles come only from the topology that
//! kvrocks-controller pushes (`CLUSTERX SETNODES`). So after check_slave,
//! pause_write and wait_sync (shared with the standalone flow) and the
//! fencing of this node, the switch is the controller's:
//!
//! 1. `POST {controller}/…/shards/{i}/failover` with
//!    `{"preferred_node_id": <target>}`: the controller switches the shard
//!    in its store and answers. kvrocks-controller 1.2.0 pushes the new
//!    topology to the nodes only 1–1.5 s later (after pushing the old one
//!    once more), so the stall must not wait for it:
//! 2. the new topology is read back from the controller and brought to the
//!    target's node at once (`CLUSTERX SETNODES` with the controller's
//!    lines and version: its own push is then a no-op, and its stale
//!    re-push of the old version is refused by Kvrocks), and the target's
//!    leasegate is granted the lease at the fencing epoch, as in the
//!    standalone flow (the controller has named it; this node is fenced
//!    and the target caught up).
//! 3. The held writes are released when the target's leasegate holds a
//!    valid lease naming its node (its answer to the grant, or else its
//!    `/v1/status`, polled every millisecond): they are handed to it and
//!    go through at once. Then
//!    this node gets the same topology (it becomes the target's replica
//!    now, not at the controller's push).
//!
//! An answer that says the controller did not act (never delivered, or a
//! 4xx) undoes the fencing; any other failure leaves both fenced for the
//! controller to settle, unless its topology shows the target promoted.
//!
//! **Timed** (`cluster_timing`), step 1 comes first, before the pause,
//! while writes go on under this node's lease ([`switch_first`]): the
//! controller's switch (2–7 ms with 1.2.0, and varying) is then no part of
//! the stall, and the pause is planned as in the standalone flow. Steps 2
//! and 3 follow the fencing as above ([`promote_switched`]). A failure
//! after the switch leaves this node to follow the controller as after its
//! own failover (`control::switch`).

use std::time::{Duration, Instant};

use tracing::warn;

use super::{rollback, FailoverError, Fencing, Run, Settings, Target};
use crate::kvrocks::admin_api::{LeaseOutcome, LeaseRequest};
use crate::kvrocks::admin_client::AdminClient;
use crate::kvrocks::controller::{
    cluster_urls, http_client, request_shard_failover, shard_failover_url, Cluster,
    ShardFailoverError,
};
use crate::kvrocks::controller_group::fetch_led;
use crate::proxy::backend::ControlConnection;

/// The controller a cluster-mode failover goes through.
pub(super) struct Controller {
    /// `controller.url`: one address, or every controller of the group.
    pub urls: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    /// Bound of each request to it.
    pub timeout: Duration,
    /// How long a switch may take (`controller.switch_timeout_ms`): past
    /// the pause, how long the new master's lease is still waited for.
    pub switch_timeout: Duration,
    /// How an `https://` controller is trusted (`controller.ca_file`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// This node's place in the controller's topology.
pub(super) struct Shard {
    /// Index of the shard this node is master of.
    pub index: usize,
    /// The address this node is registered by (its leasegate's), which the
    /// replica follows.
    pub my_addr: String,
    /// The controller's topology version that names this node master.
    pub version: u64,
}

/// How often the target's leasegate is asked whether it holds the lease.
const LEASE_POLL: Duration = Duration::from_millis(1);

/// Whether the node runs in cluster mode (`INFO cluster`: `cluster_enabled:1`,
/// in Kvrocks and Redis alike).
pub(super) async fn enabled(node: &mut ControlConnection) -> Result<bool, FailoverError> {
    use redis_protocol::resp2::types::OwnedFrame;
    match node.call(&["INFO", "cluster"]).await {
        Ok(OwnedFrame::BulkString(text)) => Ok(String::from_utf8_lossy(&text)
            .lines()
            .any(|l| l.trim() == "cluster_enabled:1")),
        Ok(reply) => Err(FailoverError::UnexpectedInfo { reply }),
        Err(source) => Err(FailoverError::Info { source }),
    }
}

/// check_slave in cluster mode: the controller lists this node as the
/// master of a shard and the target as a replica in the same shard.
pub(super) async fn locate(
    settings: &Settings,
    me: Option<String>,
    target: &str,
) -> Result<Shard, FailoverError> {
    let controller = settings
        .controller
        .as_ref()
        .ok_or(FailoverError::NoController)?;
    let me = me.ok_or(FailoverError::NoOwnNodeId)?;
    let client = http_client(controller.timeout, controller.tls.clone());
    let topology = fetch_led(&client, &controller.topology_urls(), controller.timeout)
        .await
        .map_err(FailoverError::Topology)?;
    let mine = topology
        .place(&me)
        .filter(|p| p.role.eq_ignore_ascii_case("master"))
        .ok_or_else(|| FailoverError::NotShardMaster {
            node_id: me.clone(),
        })?;
    let in_shard = topology
        .place(target)
        .is_some_and(|p| p.shard == mine.shard && !p.role.eq_ignore_ascii_case("master"));
    if !in_shard {
        return Err(FailoverError::NotInShard {
            target: target.to_string(),
            shard: mine.shard,
        });
    }
    Ok(Shard {
        index: mine.shard,
        my_addr: mine.addr,
        version: topology.version,
    })
}

/// switching in cluster mode, after this node was fenced: asks the
/// controller to fail the shard over to the target and waits (within the
/// pause's bound) for the target's leasegate to hold the lease. Returns the
/// new master's lease epoch (the topology version).
pub(super) async fn switch(
    run: &mut Run,
    admin: &AdminClient,
    target: &Target,
    shard: &Shard,
    fenced_epoch: u64,
    fencing: &Fencing,
    nodes: Nodes<'_>,
) -> Result<u64, FailoverError> {
    let Some(controller) = run.settings.controller.as_ref() else {
        return Err(FailoverError::NoController);
    };
    match ask_switch(controller, shard, &target.node_id).await {
        Asked::Switched => {}
        Asked::Refused(source) => {
            rollback(&run.gate, fencing);
            return run.abort(FailoverError::ControllerRefused { source });
        }
        Asked::Unknown(source) => {
            return run.both_fenced(FailoverError::ControllerUnknown {
                source,
                epoch: fenced_epoch,
            });
        }
    }
    // The controller has decided; bring the target's node there now. Its
    // store may answer the previous version for a moment (seen with 1.2.0's
    // raft store): read again until it names the target, within the pause.
    let topology = switched_topology(run, controller, shard.index, &target.node_id).await;
    if topology.is_some() {
        // What the switch took, for the next plan.
        if let Some(caught_up) = run.caught_up {
            let took = caught_up.elapsed();
            run.settings.memory.switch.record(took);
            if let Some(timing) = run.timing.as_mut() {
                timing.switched(took);
            }
        }
    }
    finish(run, admin, target, topology.as_ref(), fenced_epoch, nodes).await
}

/// How much lease this node must have left for the controller to be asked
/// before the pause: the wait for the tick (one period), up to three
/// periods more should the catch-up come late, the catch-up itself; the
/// lease is not renewed meanwhile. (`controller.ttl_ms` is 5 s by default.)
pub(super) const SWITCH_FIRST_LEASE: Duration = Duration::from_millis(1000);

/// Cluster mode, timed (`cluster_timing`): the controller is asked to fail
/// the shard over before the pause, while writes go on under this node's
/// lease, so that its switch (2–7 ms with kvrocks-controller 1.2.0, and
/// varying) is no part of the stall; the pause is then timed as in the
/// standalone flow. Safe because nothing can promote the target before
/// this node is fenced: this node's poller leaves the step-down to the
/// running failover; the target's leasegate brings its node to the
/// topology only once this node reports itself fenced
/// ([`crate::control::switch`]), and refuses the controller's own push
/// while this node runs a failover and holds its lease
/// ([`crate::control::fence`]), as this node's Gate refuses it here.
/// Returns the new topology, read back, and what the switch took.
pub(super) async fn switch_first(
    run: &Run,
    target: &Target,
    shard: &Shard,
) -> Result<(Cluster, Duration), FailoverError> {
    let Some(controller) = run.settings.controller.as_ref() else {
        return Err(FailoverError::NoController);
    };
    let started = Instant::now();
    // From the request on, the controller's topology that demotes this
    // node is the failover's to bring (`Gate`, the poller): 1.2.0 pushes
    // it at a later probe, the tests' controller within its answer.
    run.gate.role().failover.switch_first();
    match ask_switch(controller, shard, &target.node_id).await {
        Asked::Switched => {}
        Asked::Refused(source) => return Err(FailoverError::ControllerRefused { source }),
        Asked::Unknown(source) => return Err(FailoverError::SwitchUnanswered { source }),
    }
    let topology = switched_topology(run, controller, shard.index, &target.node_id).await;
    let Some(topology) = topology else {
        return Err(FailoverError::SwitchedUnread {
            last: "it never named the target master".into(),
        });
    };
    Ok((topology, started.elapsed()))
}

/// After [`switch_first`], this node fenced and the target caught up: the
/// promotion, the grant, the release and this node following.
pub(super) async fn promote_switched(
    run: &mut Run,
    admin: &AdminClient,
    target: &Target,
    topology: &Cluster,
    fenced_epoch: u64,
    nodes: Nodes<'_>,
) -> Result<u64, FailoverError> {
    finish(run, admin, target, Some(topology), fenced_epoch, nodes).await
}

/// The switch's end, once the controller named the target (`topology`, as
/// read back; `None`: it could not be read, and the controller's own push
/// promotes): the target's node brought to the topology (the promotion,
/// timed), its leasegate granted the lease at the fencing epoch, the held
/// writes released to it, this node following. Returns the new master's
/// lease epoch.
async fn finish(
    run: &mut Run,
    admin: &AdminClient,
    target: &Target,
    topology: Option<&Cluster>,
    fenced_epoch: u64,
    nodes: Nodes<'_>,
) -> Result<u64, FailoverError> {
    // The target's lease at the grant's epoch, once its leasegate said so.
    let mut granted = None;
    if let Some(topology) = topology {
        // A controller that pushed the new topology already (within its
        // failover call, or its next probe since) has promoted the target:
        // that promotion was not the one timed, and the report says so.
        // Where the controller switched before the pause, nothing promotes
        // the target before this node is fenced (its leasegate refuses the
        // controller's push meanwhile, `control::fence`): no read of its
        // role delays the timed promotion.
        if run.timing.as_ref().is_some_and(|t| t.timed()) && !run.switched_first {
            let role = super::info_replication(nodes.replica).await;
            if role.is_ok_and(|r| r.role.as_deref() == Some("master")) {
                if let Some(timing) = run.timing.as_mut() {
                    timing.preempted("the controller's own push promoted the target first");
                }
            }
        }
        let promoted = run.promote(apply_topology(nodes.replica, topology)).await;
        if promoted.is_ok() {
            let grant = LeaseRequest {
                master_node_id: target.node_id.clone(),
                epoch: fenced_epoch,
                ttl_ms: run.request.lease_ttl_ms,
                nonce: None,
            };
            // Refused only if the target's leasegate saw a higher epoch:
            // then its own poll grants.
            match admin
                .grant_lease(&run.request.to, nodes.token, &grant)
                .await
            {
                // It holds the lease now: no need to ask it again.
                Ok(answer) if answer.outcome == LeaseOutcome::Renewed => {
                    granted = Some(fenced_epoch);
                }
                Ok(answer) => {
                    warn!(
                        outcome = answer.outcome.as_str(),
                        "granting the target's leasegate its lease; waiting for its poll"
                    );
                }
                Err(e) => {
                    warn!(error = %e, "granting the target's leasegate its lease; waiting for its poll");
                }
            }
        }
    }
    let patience = Duration::from_millis(run.request.pause_timeout_ms);
    let lease = match granted {
        Some(epoch) => Ok(epoch),
        None => target_lease(admin, &run.request.to, &target.node_id, patience).await,
    };
    let lease = match lease {
        Ok(epoch) => Ok(epoch),
        Err(_) => late_lease(run, admin, target).await,
    };
    match lease {
        Ok(epoch) => {
            run.release();
            // This node follows the new master now, not at the controller's push.
            if let Some(topology) = topology {
                if apply_topology(nodes.source, topology).await.is_ok() {
                    run.gate.role().node_accepted_topology(topology.version);
                }
            }
            Ok(epoch)
        }
        Err(last) => run.both_fenced(FailoverError::NewMasterNoLease {
            leasegate: run.request.to.clone(),
            timeout_ms: run.request.pause_timeout_ms + late_lease_patience(run).as_millis() as u64,
            last,
        }),
    }
}

/// The controller switched and the target's node was brought to its
/// topology, but its leasegate held no lease within `pause_timeout_ms`
/// (its grant refused or unanswered, and its own poll not there yet: seen
/// under the heaviest load, walkthrough 24). The held writes go to it now
/// (its leasegate holds or refuses them until its lease), and the lease is
/// waited for up to `controller.switch_timeout_ms` more: the switch
/// happened, and a failover that then reported a failure (exit 1) sent
/// operators after a problem that had resolved itself. The report says
/// how late the lease came (`lease_late_ms`).
async fn late_lease(run: &mut Run, admin: &AdminClient, target: &Target) -> Result<u64, String> {
    run.release();
    let released = Instant::now();
    warn!(
        leasegate = %run.request.to,
        pause_timeout_ms = run.request.pause_timeout_ms,
        "the new master's leasegate held no lease within pause_timeout_ms: held writes go to it now, and its lease is waited for up to controller.switch_timeout_ms more"
    );
    let epoch = target_lease(
        admin,
        &run.request.to,
        &target.node_id,
        late_lease_patience(run),
    )
    .await?;
    let late_ms = released.elapsed().as_secs_f64() * 1000.0;
    warn!(late_ms, "the new master's lease came after the pause ended");
    run.lease_late_ms = Some(late_ms);
    Ok(epoch)
}

/// How long past the pause [`late_lease`] waits.
fn late_lease_patience(run: &Run) -> Duration {
    run.settings
        .controller
        .as_ref()
        .map_or(Duration::ZERO, |c| c.switch_timeout)
}

/// What the controller made of a shard failover request.
enum Asked {
    /// It switched the shard (it said so, or its topology names the target).
    Switched,
    /// It refused: nothing was switched.
    Refused(ShardFailoverError),
    /// No clear answer, and its topology does not name the target.
    Unknown(ShardFailoverError),
}

/// Asks `controller` to fail shard `shard` over to `target`; an unclear
/// answer is settled by its topology.
async fn ask_switch(controller: &Controller, shard: &Shard, target: &str) -> Asked {
    let (timeout, tls) = (controller.timeout, controller.tls.clone());
    match request_at_any(controller, shard, target).await {
        Ok(_) => Asked::Switched,
        Err(source @ (ShardFailoverError::Refused(_) | ShardFailoverError::Unreachable(_))) => {
            Asked::Refused(source)
        }
        Err(source) => {
            // Did it switch? Its topology says.
            let switched = fetch_led(
                &http_client(timeout, tls),
                &controller.topology_urls(),
                timeout,
            )
            .await
            .ok()
            .and_then(|c| c.master_of_shard(shard.index).map(|m| m == target))
            .unwrap_or(false);
            if !switched {
                return Asked::Unknown(source);
            }
            warn!(error = %source, "the shard failover reported a failure, but the controller's topology names the target master: carrying on");
            Asked::Switched
        }
    }
}

/// Asks the controllers, in the order configured, to fail the shard over:
/// the first one the request reaches answers it (a follower sends it on
/// to its leader).
async fn request_at_any(
    controller: &Controller,
    shard: &Shard,
    target: &str,
) -> Result<Option<String>, ShardFailoverError> {
    let mut unreachable = Vec::new();
    for base in &controller.urls {
        let url = shard_failover_url(
            base,
            &controller.namespace,
            &controller.cluster,
            shard.index,
        );
        match request_shard_failover(&url, target, controller.timeout, controller.tls.clone()).await
        {
            Err(ShardFailoverError::Unreachable(e)) => unreachable.push(e),
            answered => return answered,
        }
    }
    Err(ShardFailoverError::Unreachable(unreachable.join("; ")))
}

impl Controller {
    /// The cluster's URL at each controller.
    fn topology_urls(&self) -> Vec<String> {
        cluster_urls(&self.urls, &self.namespace, &self.cluster)
    }
}

/// The controller's topology once it names `target` master of shard
/// `shard` (read every millisecond, within the run's `pause_timeout_ms`);
/// `None` (logged) if it does not, and the controller's own push is waited
/// for.
async fn switched_topology(
    run: &Run,
    controller: &Controller,
    shard: usize,
    target: &str,
) -> Option<Cluster> {
    let urls = &controller.topology_urls();
    let client = http_client(controller.timeout, controller.tls.clone());
    let deadline = Instant::now() + Duration::from_millis(run.request.pause_timeout_ms);
    loop {
        let within = deadline
            .saturating_duration_since(Instant::now())
            .min(controller.timeout)
            .max(TOPOLOGY_POLL);
        let last = match fetch_led(&client, urls, within).await {
            Ok(c) if c.master_of_shard(shard) == Some(target) => return Some(c),
            Ok(c) => format!("version {} does not name the target master", c.version),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            warn!(%last, "cannot read the controller's new topology; waiting for its push");
            return None;
        }
        tokio::time::sleep(TOPOLOGY_POLL).await;
    }
}

/// How often the controller's topology is read back after its switch. Its
/// store answers the previous version for a moment about half the time
/// (kvrocks-controller 1.2.0), and every wait here is stall: at 5 ms, the
/// switch took ~3 ms or ~9 ms (one wait), so plans had to allow for 9 and
/// the tick was missed when a wait came after fast ones. Reads are cheap
/// and come only during a failover's switch.
const TOPOLOGY_POLL: Duration = Duration::from_millis(1);

/// The two node connections a cluster-mode switch uses, and the target's
/// admin token.
pub(super) struct Nodes<'a> {
    /// This node.
    pub source: &'a mut ControlConnection,
    /// The target node.
    pub replica: &'a mut ControlConnection,
    pub token: Option<&'a str>,
}

/// Sends the controller's `topology` to a node (`CLUSTERX SETNODES` at the
/// controller's version); a failure is logged (the controller's own push
/// follows).
async fn apply_topology(node: &mut ControlConnection, topology: &Cluster) -> Result<(), ()> {
    let text = topology.setnodes_text().map_err(|e| {
        warn!(error = %e, "the controller's topology cannot be written as SETNODES");
    })?;
    let version = topology.version.to_string();
    node.call(&["CLUSTERX", "SETNODES", &text, &version])
        .await
        .map(|_| ())
        .map_err(|e| {
            warn!(error = %e, version = %version, "bringing a node to the controller's topology; the controller's push follows");
        })
}

/// Polls the target's leasegate until it holds a valid lease naming its
/// node; its epoch, or what was last seen when `patience` ran out.
async fn target_lease(
    admin: &AdminClient,
    leasegate: &str,
    node_id: &str,
    patience: Duration,
) -> Result<u64, String> {
    let deadline = Instant::now() + patience;
    loop {
        let last = match admin.status(leasegate).await {
            Ok(status) => {
                let lease = status.lease;
                if lease.valid && lease.owner.as_deref() == Some(node_id) {
                    return Ok(lease.epoch);
                }
                format!(
                    "lease {} at epoch {}{}",
                    if lease.valid { "valid" } else { "not valid" },
                    lease.epoch,
                    lease
                        .revoked_reason
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}
