//! Graceful failover (DESIGN §5): move the master role from this proxy's
//! node to its replica with a write stall of a few milliseconds, no client
//! error and no lost write.
//!
//! Run by the old master's leasegate (`POST /v1/failover`, or
//! `leasegate failover --from A --to B`), through the states of Kvrocks
//! PR #3295: `none → started → check_slave → pause_write → wait_sync →
//! switching → success | failed`.
//!
//! 1. **check_slave**: the target's leasegate knows its node id; its node is a
//!    replica of this node with the link up.
//! 2. **pause_write**: writes are held here (not failed) and the writes
//!    already forwarded are waited for.
//! 3. **wait_sync**: the replica's offset is polled (sub-millisecond) until it
//!    reaches this node's, within `sync_timeout_ms`.
//! 4. **switching**: the replica is promoted (`REPLICAOF NO ONE`), its
//!    leasegate granted a lease at epoch+1; this node's lease is revoked and
//!    the proxy marked demoted, so held writes are handed to the new master's
//!    leasegate (`pause.on_demote`) when the pause ends; then this node
//!    replicates from the new master.
//!
//! Any failure before switching ends the pause (unless `force_on_timeout`
//! carries a sync timeout on into switching) and leaves the data untouched.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::admin_client::AdminClient;
use crate::backend::ControlConnection;
use crate::gate::Demotion;
use crate::lease::Grant;
use crate::pause::PauseMode;
use crate::server::Shared;
use crate::topology::Replication;

/// The failover state machine's states, as in Kvrocks' `cluster_failover_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverState {
    None,
    Started,
    CheckSlave,
    PauseWrite,
    WaitSync,
    Switching,
    Success,
    Failed,
}

impl FailoverState {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverState::None => "none",
            FailoverState::Started => "started",
            FailoverState::CheckSlave => "check_slave",
            FailoverState::PauseWrite => "pause_write",
            FailoverState::WaitSync => "wait_sync",
            FailoverState::Switching => "switching",
            FailoverState::Success => "success",
            FailoverState::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> FailoverState {
        match v {
            1 => FailoverState::Started,
            2 => FailoverState::CheckSlave,
            3 => FailoverState::PauseWrite,
            4 => FailoverState::WaitSync,
            5 => FailoverState::Switching,
            6 => FailoverState::Success,
            7 => FailoverState::Failed,
            _ => FailoverState::None,
        }
    }
}

/// The state of this proxy's failovers.
#[derive(Debug, Default)]
pub struct FailoverStatus {
    state: AtomicU8,
    running: AtomicBool,
}

impl FailoverStatus {
    pub fn state(&self) -> FailoverState {
        FailoverState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set(&self, state: FailoverState) {
        self.state.store(state as u8, Ordering::Release);
    }
}

/// `POST /v1/failover` body (the options of kvrocks-controller PR #389).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// Admin address (`host:port`) of the target's leasegate.
    pub to: String,
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    #[serde(default = "default_pause_timeout_ms")]
    pub pause_timeout_ms: u64,
    #[serde(default)]
    pub force_on_timeout: bool,
    /// Lease granted to the new master (the controller renews it afterwards).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// Token for the target's admin API (default: this proxy's admin.token).
    #[serde(default)]
    pub target_token: Option<String>,
}

fn default_sync_timeout_ms() -> u64 {
    100
}
fn default_pause_timeout_ms() -> u64 {
    500
}
fn default_lease_ttl_ms() -> u64 {
    10_000
}

/// One state the failover went through.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub state: FailoverState,
    /// Milliseconds since the failover started.
    pub at_ms: f64,
}

/// What a failover did.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub result: FailoverState,
    pub error: Option<String>,
    pub steps: Vec<Step>,
    /// How long writes were paused, in milliseconds (pause to release).
    pub stall_ms: Option<f64>,
    pub epoch: Option<u64>,
    /// The new master's leasegate (client address).
    pub new_master: Option<String>,
}

struct Run<'a> {
    shared: &'a Shared,
    started: Instant,
    steps: Vec<Step>,
    /// When writes were paused and released, in ms since the start.
    paused_at: Option<f64>,
    released_at: Option<f64>,
}

impl Run<'_> {
    fn enter(&mut self, state: FailoverState) {
        self.shared.gate.failover.set(state);
        let at_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        info!(state = state.as_str(), at_ms, "failover");
        self.steps.push(Step { state, at_ms });
    }

    fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// How long writes were held: from the pause to its release.
    fn stall(&self) -> Option<f64> {
        Some(self.released_at? - self.paused_at?)
    }
}

/// What check_slave learned about the target.
struct Target {
    node_id: String,
    /// The target node (`host:port`).
    node: String,
    /// The target leasegate's client address.
    proxy: String,
}

/// Runs one failover to completion. A second concurrent call fails with
/// "Failover is already in progress".
pub async fn run(shared: &Shared, request: FailoverRequest) -> FailoverReport {
    if shared.gate.failover.running.swap(true, Ordering::AcqRel) {
        return FailoverReport {
            result: FailoverState::Failed,
            error: Some("Failover is already in progress".into()),
            steps: Vec::new(),
            stall_ms: None,
            epoch: None,
            new_master: None,
        };
    }
    let mut run = Run {
        shared,
        started: Instant::now(),
        steps: Vec::new(),
        paused_at: None,
        released_at: None,
    };
    let outcome = failover(&mut run, &request).await;
    let report = match outcome {
        Ok((epoch, target)) => {
            run.enter(FailoverState::Success);
            FailoverReport {
                result: FailoverState::Success,
                error: None,
                stall_ms: run.stall(),
                steps: run.steps,
                epoch: Some(epoch),
                new_master: Some(target.proxy),
            }
        }
        Err(e) => {
            warn!(error = %e, "failover failed");
            run.enter(FailoverState::Failed);
            FailoverReport {
                result: FailoverState::Failed,
                error: Some(e),
                stall_ms: run.stall(),
                steps: run.steps,
                epoch: None,
                new_master: None,
            }
        }
    };
    shared.gate.prepare_handover(None);
    shared.gate.failover.running.store(false, Ordering::Release);
    report
}

async fn failover(run: &mut Run<'_>, request: &FailoverRequest) -> Result<(u64, Target), String> {
    let shared = run.shared;
    let config = &shared.config;
    let timeout = config.connect_timeout();
    let admin = AdminClient::new(Duration::from_secs(2));
    let token = request
        .target_token
        .as_deref()
        .or(config.admin.token.as_deref());
    run.enter(FailoverState::Started);

    run.enter(FailoverState::CheckSlave);
    let target = check_target(&admin, &request.to).await?;
    let password = config.backend.password.as_deref();
    let mut source = ControlConnection::open(&config.backend.addr, password, timeout)
        .await
        .map_err(|e| format!("cannot reach this node {}: {e}", config.backend.addr))?;
    let mut replica = ControlConnection::open(&target.node, password, timeout)
        .await
        .map_err(|e| format!("cannot reach the target node {}: {e}", target.node))?;
    let mine = info_replication(&mut source).await?;
    if mine.is_replica() {
        return Err("Current node is a slave, can't failover".into());
    }
    let theirs = info_replication(&mut replica).await?;
    if !theirs.is_replica() || !same_addr(theirs.master.as_deref(), &config.backend.addr) {
        return Err(format!(
            "the target node {} is not a replica of this node {} (role {}, master {})",
            target.node,
            config.backend.addr,
            theirs.role.as_deref().unwrap_or("unknown"),
            theirs.master.as_deref().unwrap_or("none")
        ));
    }
    if theirs.link_status.as_deref() != Some("up") {
        return Err(format!(
            "the target node's replication link is {}",
            theirs.link_status.as_deref().unwrap_or("unknown")
        ));
    }

    // Paused sessions may open their connections to the new master now.
    shared
        .gate
        .prepare_handover(Some(target.proxy.clone().into()));
    run.enter(FailoverState::PauseWrite);
    let pause = shared.gate.pause();
    pause.pause(
        Duration::from_millis(request.pause_timeout_ms),
        PauseMode::Write,
    );
    run.paused_at = Some(run.now_ms());
    let sync_deadline = Instant::now() + Duration::from_millis(request.sync_timeout_ms);
    // Writes already forwarded must be answered before the offsets mean anything.
    while shared.gate.writes_in_flight() > 0 {
        if Instant::now() >= sync_deadline {
            return abort(
                run,
                "writes in flight were not answered within sync_timeout_ms",
            );
        }
        tokio::task::yield_now().await;
    }

    run.enter(FailoverState::WaitSync);
    let target_offset = info_replication(&mut source).await?.offset.unwrap_or(0);
    let mut replica_offset = None;
    let synced = loop {
        let left = sync_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        match tokio::time::timeout(left, info_replication(&mut replica)).await {
            Ok(Ok(r)) if r.offset.unwrap_or(0) >= target_offset => break true,
            Ok(Ok(r)) => replica_offset = r.offset,
            Ok(Err(e)) => return abort(run, &e),
            Err(_) => break false,
        }
    };
    if !synced {
        if !request.force_on_timeout {
            return abort(
                run,
                &format!(
                    "the replica did not reach offset {target_offset} within {} ms (sync timeout; it was at {})",
                    request.sync_timeout_ms,
                    replica_offset.map_or("unknown".to_string(), |o| o.to_string())
                ),
            );
        }
        warn!("sync timeout; switching anyway (force_on_timeout)");
    }

    run.enter(FailoverState::Switching);
    // Fence this node first: from here on no write reaches it, whatever
    // happens to the pause (its timeout may run out during the switch).
    let lease = shared.gate.lease();
    let before = lease.snapshot();
    let epoch = lease.epoch() + 1;
    let revoke = Grant {
        master_node_id: Some(target.node_id.clone()),
        ttl_ms: request.lease_ttl_ms,
        epoch,
        nonce: None,
        anchor: None,
    };
    if let Err(e) = lease.grant(&revoke, lease.now()) {
        warn!(error = %e, "revoking this node's lease");
        lease.revoke("failover to another node");
    }
    shared.gate.demote(Demotion {
        new_master: Some(target.proxy.clone().into()),
    });
    // If the pause ended early, writes may have reached this node after the
    // sync check: wait for them and for the replica to catch up again.
    if !pause.is_paused() {
        let deadline = Instant::now() + Duration::from_millis(request.sync_timeout_ms);
        let resynced = async {
            while shared.gate.writes_in_flight() > 0 {
                tokio::task::yield_now().await;
            }
            let offset = info_replication(&mut source).await?.offset.unwrap_or(0);
            loop {
                if info_replication(&mut replica).await?.offset.unwrap_or(0) >= offset {
                    return Ok::<(), String>(());
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline.into(), resynced).await;
        if !matches!(outcome, Ok(Ok(()))) {
            rollback(shared, &before, epoch);
            return abort(run, "the pause ended during the switch and the replica did not catch up again; pause_timeout_ms is too short");
        }
    }
    if let Err(e) = replica.call(&["REPLICAOF", "NO", "ONE"]).await {
        rollback(shared, &before, epoch);
        return abort(run, &format!("cannot promote the target node: {e}"));
    }
    let grant = serde_json::json!({
        "master_node_id": target.node_id,
        "epoch": epoch,
        "ttl_ms": request.lease_ttl_ms,
    });
    // Should this fail, both nodes stay fenced (no split brain) until the
    // controller grants the new master its lease.
    admin
        .json(
            &request.to,
            "POST",
            "/v1/lease",
            token,
            Some(grant.to_string()),
        )
        .await
        .map_err(|e| format!("the target node was promoted, but its leasegate could not be granted the lease (both nodes are fenced until the controller grants it): {e}"))?;
    pause.unpause();
    run.released_at = Some(run.now_ms());
    let (host, port) = target
        .node
        .rsplit_once(':')
        .ok_or_else(|| format!("bad target node address {}", target.node))?;
    source.call(&["REPLICAOF", host, port]).await.map_err(|e| {
        format!("the new master serves, but this node could not be made its replica: {e}")
    })?;
    Ok((epoch, target))
}

/// Undoes the fencing of this node when the switch fails before the
/// replica was promoted: it is the master still.
fn rollback(shared: &Shared, before: &crate::lease::LeaseSnapshot, epoch: u64) {
    shared.gate.clear_demotion();
    let lease = shared.gate.lease();
    if let (true, Some(me)) = (before.valid, lease.node_id()) {
        let ttl_ms = before.remaining_ms.clamp(1, 24 * 3600 * 1000);
        let regrant = Grant {
            master_node_id: Some(me),
            ttl_ms,
            epoch,
            nonce: None,
            anchor: None,
        };
        if let Err(e) = lease.grant(&regrant, lease.now()) {
            warn!(error = %e, "could not restore this node's lease after a failed switch");
        }
    }
}

/// Ends the pause and fails (before switching).
fn abort<T>(run: &mut Run<'_>, error: &str) -> Result<T, String> {
    run.shared.gate.pause().unpause();
    run.released_at = Some(run.now_ms());
    Err(error.to_string())
}

async fn check_target(admin: &AdminClient, to: &str) -> Result<Target, String> {
    let status = admin.json(to, "GET", "/v1/status", None, None).await?;
    let node_id = status["lease"]["node_id"]
        .as_str()
        .ok_or_else(|| format!("the target leasegate at {to} has no node_id"))?
        .to_string();
    let node = status["backend"]
        .as_str()
        .ok_or_else(|| format!("the target leasegate at {to} did not report its backend"))?
        .to_string();
    let listen = status["listen"]
        .as_str()
        .ok_or_else(|| format!("the target leasegate at {to} did not report its listen address"))?;
    // A wildcard listen address is reached at the admin API's host.
    let proxy = match listen.rsplit_once(':') {
        Some((host, port)) if host == "0.0.0.0" || host == "[::]" => {
            let admin_host = to.rsplit_once(':').map_or(to, |(h, _)| h);
            format!("{admin_host}:{port}")
        }
        _ => listen.to_string(),
    };
    Ok(Target {
        node_id,
        node,
        proxy,
    })
}

async fn info_replication(conn: &mut ControlConnection) -> Result<Replication, String> {
    use redis_protocol::resp2::types::OwnedFrame;
    match conn.call(&["INFO", "replication"]).await {
        Ok(OwnedFrame::BulkString(text)) => {
            Ok(Replication::parse_info(&String::from_utf8_lossy(&text)))
        }
        Ok(other) => Err(format!("unexpected INFO reply {other:?}")),
        Err(e) => Err(format!("INFO replication failed: {e}")),
    }
}

/// Whether `a` (as a node reports its master) names `b` (`host:port`).
fn same_addr(a: Option<&str>, b: &str) -> bool {
    let Some(a) = a else { return false };
    let norm = |s: &str| s.replace("localhost", "127.0.0.1");
    norm(a) == norm(b)
}
