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
//! 4. **switching**: this node is fenced first (its lease revoked by a grant
//!    naming the target at epoch+1, the proxy marked demoted), so held writes
//!    are handed to the new master's leasegate (`pause.on_demote`) when the
//!    pause ends; the replica is promoted (`REPLICAOF NO ONE`), its leasegate
//!    granted the lease at epoch+1, the pause ended; then this node
//!    replicates from the new master.
//!
//! **Atomicity.** The failover runs in a task of its own: an HTTP caller
//! that hangs up does not cancel it (the report is still in `/v1/status`).
//! A drop guard ends the pause, withdraws the hand-over target, marks the
//! state `failed` and frees the next failover however the task ends (even by
//! a panic). Every failure ends in one of two defined states, and never in
//! two unfenced masters:
//!
//! * **unchanged**: any failure before the promotion was sent, and a
//!   promotion the target certainly did not carry out (it refused
//!   `REPLICAOF NO ONE`, or the connection broke and the node still reports
//!   itself a replica). This node is unfenced again and stays master; the
//!   held writes go to it.
//! * **both fenced**: the promotion's outcome cannot be determined (no
//!   answer, and the node does not report itself master), or the target was
//!   promoted but its leasegate could not be granted the lease. This node
//!   stays revoked and demoted (held writes are not applied to it: they move
//!   to the target's leasegate, which refuses them until it holds a lease),
//!   and the report says that the controller must grant the lease.
//!
//! A promotion that failed or timed out but did take effect (the target now
//! reports itself master) is carried on: the switch completes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::control::ControlContext;
use crate::guard::gate::Gate;
use crate::guard::lease::{Grant, LeaseSnapshot};
use crate::guard::pause::PauseMode;
use crate::guard::role::{Demotion, FailoverState, Source};
use crate::kvrocks::admin_client::AdminClient;
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::{BackendError, ControlConnection};

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

/// The longest lease a failover grants (a leasegate refuses longer ones).
pub const MAX_LEASE_TTL_MS: u64 = crate::guard::lease::MAX_TTL_MS;

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
    /// The failover ended with this node fenced and the target not granted
    /// the lease: no node accepts writes until the controller grants it.
    pub both_fenced: bool,
}

impl FailoverReport {
    fn failed(error: String) -> FailoverReport {
        FailoverReport {
            result: FailoverState::Failed,
            error: Some(error),
            steps: Vec::new(),
            stall_ms: None,
            epoch: None,
            new_master: None,
            both_fenced: false,
        }
    }
}

/// What the failover needs of this proxy's config.
struct Settings {
    /// This node (`backend.addr`).
    node: String,
    password: Option<String>,
    /// Bound of every request to a node.
    timeout: Duration,
    /// This proxy's admin token (the default for the target's).
    admin_token: Option<String>,
}

/// Owned by a running failover: however the run ends (returns, panics, or
/// its task is dropped), it ends the pause it started, withdraws the
/// hand-over target, reports `failed` unless the run reported its end, and
/// frees the next failover.
struct RunGuard {
    gate: Arc<Gate>,
    /// The failover's pause is on (it has not been ended by the run).
    paused: bool,
}

impl RunGuard {
    /// `None` while another failover runs.
    fn acquire(gate: &Arc<Gate>) -> Option<RunGuard> {
        if !gate.role().failover.try_start() {
            return None;
        }
        gate.role().failover.set(FailoverState::Started);
        Some(RunGuard {
            gate: Arc::clone(gate),
            paused: false,
        })
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        // The lease and the demotion are left as the run left them: a run
        // that stops half-way leaves this node fenced, never unfenced.
        if self.paused {
            self.gate.pause().unpause();
        }
        self.gate.role().prepare_handover(None);
        let status = &self.gate.role().failover;
        if !status.state().is_final() {
            error!(
                state = status.state().as_str(),
                lease_valid = self.gate.lease().write_allowed(),
                "the failover stopped without finishing; it is reported failed"
            );
            status.set(FailoverState::Failed);
        }
        status.finished();
    }
}

struct Run {
    gate: Arc<Gate>,
    guard: RunGuard,
    settings: Settings,
    request: FailoverRequest,
    started: Instant,
    steps: Vec<Step>,
    /// When writes were paused and released, in ms since the start.
    paused_at: Option<f64>,
    released_at: Option<f64>,
    /// The run ended with both nodes fenced.
    both_fenced: bool,
}

impl Run {
    fn enter(&mut self, state: FailoverState) {
        self.gate.role().failover.set(state);
        let at_ms = self.now_ms();
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

    /// Ends the failover's pause (held requests are asked about again).
    fn release(&mut self) {
        if self.guard.paused {
            self.gate.pause().unpause();
            self.guard.paused = false;
            self.released_at = Some(self.now_ms());
        }
    }

    /// Fails with this node unfenced (nothing changed, or rolled back): the
    /// pause ends and the held writes go to this node.
    fn abort<T>(&mut self, error: String) -> Result<T, String> {
        self.release();
        Err(error)
    }

    /// Fails with both nodes fenced: this node stays revoked and demoted,
    /// so the held writes released now are not applied to it.
    fn both_fenced<T>(&mut self, error: String) -> Result<T, String> {
        self.both_fenced = true;
        self.release();
        Err(error)
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

/// Runs one failover to completion in a task of its own and returns its
/// report. A second concurrent call fails with "Failover is already in
/// progress". Dropping the returned future (the HTTP caller went away) does
/// not stop the failover.
pub async fn run(shared: &ControlContext, request: FailoverRequest) -> FailoverReport {
    let Some(guard) = RunGuard::acquire(&shared.gate) else {
        return FailoverReport::failed("Failover is already in progress".into());
    };
    let settings = Settings {
        node: shared.config.backend.addr.clone(),
        password: shared.config.backend.password.clone(),
        timeout: shared.config.connect_timeout(),
        admin_token: shared.config.admin.token.clone(),
    };
    let gate = Arc::clone(&shared.gate);
    let task = tokio::spawn(execute(guard, settings, request));
    match task.await {
        Ok(report) => report,
        Err(e) => {
            // The guard has ended the pause and marked the run failed.
            let lease = gate.lease().snapshot();
            FailoverReport::failed(format!(
                "the failover task {}: this node's lease is {} and it is {}demoted; check /v1/status and let the controller decide",
                if e.is_panic() { "panicked" } else { "was cancelled" },
                if lease.valid { "valid" } else { "revoked" },
                if gate.role().demotion().is_some() { "" } else { "not " },
            ))
        }
    }
}

async fn execute(guard: RunGuard, settings: Settings, request: FailoverRequest) -> FailoverReport {
    let mut run = Run {
        gate: Arc::clone(&guard.gate),
        guard,
        settings,
        request,
        started: Instant::now(),
        steps: Vec::new(),
        paused_at: None,
        released_at: None,
        both_fenced: false,
    };
    let outcome = failover(&mut run).await;
    // Whatever happened, the pause ends with the run (the fencing is final by now).
    run.release();
    match outcome {
        Ok((epoch, target)) => {
            run.enter(FailoverState::Success);
            FailoverReport {
                result: FailoverState::Success,
                error: None,
                stall_ms: run.stall(),
                steps: std::mem::take(&mut run.steps),
                epoch: Some(epoch),
                new_master: Some(target.proxy),
                both_fenced: false,
            }
        }
        Err(e) => {
            warn!(error = %e, both_fenced = run.both_fenced, "failover failed");
            run.enter(FailoverState::Failed);
            FailoverReport {
                result: FailoverState::Failed,
                error: Some(e),
                stall_ms: run.stall(),
                steps: std::mem::take(&mut run.steps),
                epoch: None,
                new_master: None,
                both_fenced: run.both_fenced,
            }
        }
    }
}

async fn failover(run: &mut Run) -> Result<(u64, Target), String> {
    let gate = Arc::clone(&run.gate);
    let request = run.request.clone();
    let timeout = run.settings.timeout;
    let this_node = run.settings.node.clone();
    let password = run.settings.password.clone();
    let password = password.as_deref();
    let admin = AdminClient::new(Duration::from_secs(2));
    let token = request
        .target_token
        .clone()
        .or_else(|| run.settings.admin_token.clone());
    run.enter(FailoverState::Started);

    run.enter(FailoverState::CheckSlave);
    let target = check_target(&admin, &request.to).await?;
    let mut source = ControlConnection::open(&this_node, password, timeout)
        .await
        .map_err(|e| format!("cannot reach this node {this_node}: {e}"))?;
    let mut replica = ControlConnection::open(&target.node, password, timeout)
        .await
        .map_err(|e| format!("cannot reach the target node {}: {e}", target.node))?;
    let mine = info_replication(&mut source).await?;
    if mine.is_replica() {
        return Err("Current node is a slave, can't failover".into());
    }
    let theirs = info_replication(&mut replica).await?;
    if !theirs.is_replica() || !same_addr(theirs.master.as_deref(), &this_node) {
        return Err(format!(
            "the target node {} is not a replica of this node {} (role {}, master {})",
            target.node,
            this_node,
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
    gate.role()
        .prepare_handover(Some(target.proxy.clone().into()));
    run.enter(FailoverState::PauseWrite);
    let pause = Arc::clone(gate.pause());
    pause.pause(
        Duration::from_millis(request.pause_timeout_ms),
        PauseMode::Write,
    );
    run.guard.paused = true;
    run.paused_at = Some(run.now_ms());
    let sync_timeout = Duration::from_millis(request.sync_timeout_ms);
    let sync_deadline = Instant::now() + sync_timeout;
    // Writes already forwarded must be answered before the offsets mean anything.
    while gate.role().writes_in_flight() > 0 {
        if Instant::now() >= sync_deadline {
            return run
                .abort("writes in flight were not answered within sync_timeout_ms".to_string());
        }
        tokio::task::yield_now().await;
    }

    run.enter(FailoverState::WaitSync);
    // Blocking writes (BLPOP & co.) are not counted in flight: one that pops
    // after this node's offset is read is seen by this counter moving.
    let blocking_seen = gate.role().blocking_writes_completed();
    let source_offset = offset(&mut source).await?;
    match catch_up(&mut replica, source_offset, sync_deadline).await {
        Ok(CatchUp::Reached) => {}
        Ok(CatchUp::Behind(at)) => {
            let error = format!(
                "the replica did not reach offset {source_offset} within {} ms (sync timeout; it was at {})",
                request.sync_timeout_ms,
                at.map_or("unknown".to_string(), |o| o.to_string())
            );
            if !request.force_on_timeout {
                return run.abort(error);
            }
            warn!(%error, "sync timeout; switching anyway (force_on_timeout)");
        }
        Err(e) => return run.abort(e),
    }

    run.enter(FailoverState::Switching);
    // Fence this node first: from here on no write reaches it, whatever
    // happens to the pause (its timeout may run out during the switch).
    let lease = Arc::clone(gate.lease());
    let before = lease.snapshot();
    let epoch = lease.epoch() + 1;
    let revoke = Grant {
        master_node_id: Some(target.node_id.clone()),
        ttl_ms: request.lease_ttl_ms,
        epoch,
        nonce: None,
        anchor: None,
    };
    if let Err(e) = gate.role().grant(&revoke, lease.now(), Source::Failover) {
        warn!(error = %e, "revoking this node's lease");
        gate.role()
            .revoke("failover to another node", Source::Failover);
    }
    gate.role().demote(Demotion {
        new_master: Some(target.proxy.clone().into()),
    });
    // Writes may have reached this node after its offset was read: if the
    // pause ended early (forwarded writes), or a blocking write completed
    // (a pop). Now that this node is fenced no more can: wait for the
    // replica to catch up with its offset again.
    let pause_ended = !pause.is_paused();
    let blocking_moved = gate.role().blocking_writes_completed() != blocking_seen;
    if pause_ended || blocking_moved {
        let why = if pause_ended {
            "the pause ended before the switch (pause_timeout_ms is too short)"
        } else {
            "a blocking write (BLPOP & co.) completed on this node after its offset was read"
        };
        info!(why, "waiting for the replica to catch up again");
        let deadline = Instant::now() + sync_timeout;
        let resynced = async {
            while gate.role().writes_in_flight() > 0 {
                if Instant::now() >= deadline {
                    return Ok(CatchUp::Behind(None));
                }
                tokio::task::yield_now().await;
            }
            let offset = offset(&mut source).await?;
            catch_up(&mut replica, offset, deadline).await
        };
        let error = match resynced.await {
            Ok(CatchUp::Reached) => None,
            Ok(CatchUp::Behind(_)) => Some(format!(
                "{why}, and the replica did not catch up with this node again within {} ms (sync timeout)",
                request.sync_timeout_ms
            )),
            Err(e) => Some(format!("{why}, and the replica's catch-up could not be checked: {e}")),
        };
        if let Some(error) = error {
            if !request.force_on_timeout {
                // Nothing was sent to the target yet: this node is master still.
                rollback(&gate, &before, epoch);
                return run.abort(error);
            }
            warn!(%error, "switching anyway (force_on_timeout)");
        }
    }
    if let Err(e) = replica.call(&["REPLICAOF", "NO", "ONE"]).await {
        match promotion_outcome(&e, &mut replica, &target.node, password, timeout).await {
            Promotion::Done => {
                warn!(error = %e, "the promotion reported a failure, but the target node is master now: carrying on with the switch");
            }
            Promotion::NotDone(why) => {
                rollback(&gate, &before, epoch);
                return run.abort(format!(
                    "cannot promote the target node {}: {e}; it is certainly still a replica ({why}), so this node was unfenced and stays master",
                    target.node
                ));
            }
            Promotion::Unknown(why) => {
                return run.both_fenced(format!(
                    "cannot promote the target node {}: {e}; whether it was promoted cannot be determined ({why}). Both nodes are fenced: this node's lease is revoked (epoch {epoch}) and it is marked demoted, and the target's leasegate was not granted the lease. The controller must grant the lease (epoch {epoch} or later) to the node that is to be master",
                    target.node
                ));
            }
        }
    }
    let grant = serde_json::json!({
        "master_node_id": target.node_id,
        "epoch": epoch,
        "ttl_ms": request.lease_ttl_ms,
    });
    let granted = admin
        .json(
            &request.to,
            "POST",
            "/v1/lease",
            token.as_deref(),
            Some(grant.to_string()),
        )
        .await
        .and_then(|answer| match answer["outcome"].as_str() {
            Some("renewed") => Ok(()),
            other => Err(format!(
                "the grant was not applied (outcome {})",
                other.unwrap_or("unknown")
            )),
        });
    if let Err(e) = granted {
        return run.both_fenced(format!(
            "the target node {} was promoted, but its leasegate {} did not confirm the lease grant at epoch {epoch}: {e}. Both nodes are fenced: this node's lease is revoked and it is marked demoted (held writes are not applied to it), and the target's leasegate holds no lease unless the grant got through unconfirmed. The controller must grant the lease (epoch {epoch} or later, to {} if the promoted node is to stay master)",
            target.node, request.to, target.node_id
        ));
    }
    run.release();
    let (host, port) = target
        .node
        .rsplit_once(':')
        .ok_or_else(|| format!("bad target node address {}", target.node))?;
    source.call(&["REPLICAOF", host, port]).await.map_err(|e| {
        format!("the new master serves, but this node could not be made its replica: {e}")
    })?;
    Ok((epoch, target))
}

/// Whether the target node carried out a `REPLICAOF NO ONE` that failed.
#[derive(Debug, PartialEq, Eq)]
enum Promotion {
    /// It is master now.
    Done,
    /// It is a replica, and the request cannot take effect any more.
    NotDone(String),
    /// It may be promoted, now or later.
    Unknown(String),
}

/// Finds out what a failed `REPLICAOF NO ONE` (sent on `conn`) did.
///
/// An error reply means the node refused it. A broken connection means the
/// node either ran it already or never will (it was closed with the request
/// unread). After a timeout the request may still be queued on the node, so
/// its late answer is waited for once more: a reply to a command sent after
/// it cannot arrive before it. Then the node is asked for its `ROLE` on a
/// fresh connection: `master` is final (a master does not turn replica by
/// itself); `slave` is final only when the request can no longer run.
async fn promotion_outcome(
    error: &BackendError,
    conn: &mut ControlConnection,
    node: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Promotion {
    #[derive(PartialEq)]
    enum Fate {
        Refused,
        Lost,
        Pending,
    }
    let fate = |e: &BackendError| match e {
        BackendError::Reply(text) if !text.starts_with("invalid reply") => Fate::Refused,
        BackendError::Io(_) | BackendError::ConnectTimeout(_) => Fate::Lost,
        _ => Fate::Pending,
    };
    let mut request = fate(error);
    if request == Fate::Pending {
        // Returns the late answer to REPLICAOF NO ONE, not ROLE's.
        match conn.call(&["ROLE"]).await {
            Ok(_) => return Promotion::Done,
            Err(e) => request = fate(&e),
        }
    }
    let role = async {
        let mut fresh = ControlConnection::open(node, password, timeout)
            .await
            .map_err(|e| format!("cannot reach it: {e}"))?;
        let reply = fresh
            .call(&["ROLE"])
            .await
            .map_err(|e| format!("ROLE failed: {e}"))?;
        Ok::<_, String>(Replication::from_role(&reply))
    };
    match role.await {
        Ok(r) if r.role.as_deref() == Some("master") => Promotion::Done,
        Ok(r) if r.is_replica() => match request {
            Fate::Refused => Promotion::NotDone("it refused the request and reports itself a replica".into()),
            Fate::Lost => Promotion::NotDone("the connection broke and it reports itself a replica".into()),
            Fate::Pending => Promotion::Unknown("it reports itself a replica, but the request got no answer and may still be carried out".into()),
        },
        Ok(r) => Promotion::Unknown(format!(
            "it reports the role {}",
            r.role.as_deref().unwrap_or("unknown")
        )),
        Err(e) => Promotion::Unknown(format!("its role cannot be read: {e}")),
    }
}

/// The longest lease a rollback restores (a lease valid "forever" comes back
/// as this; the controller renews it).
const ROLLBACK_MAX_TTL_MS: u64 = MAX_LEASE_TTL_MS;

/// Undoes the fencing of this node when the switch fails and the replica
/// certainly was not promoted: it is the master still.
fn rollback(gate: &Gate, before: &LeaseSnapshot, epoch: u64) {
    gate.role().clear_demotion();
    let lease = gate.lease();
    if let (true, Some(me)) = (before.valid, lease.node_id()) {
        let ttl_ms = before.remaining_ms.clamp(1, ROLLBACK_MAX_TTL_MS);
        let regrant = Grant {
            master_node_id: Some(me),
            ttl_ms,
            epoch,
            nonce: None,
            anchor: None,
        };
        if let Err(e) = gate.role().grant(&regrant, lease.now(), Source::Failover) {
            warn!(error = %e, "could not restore this node's lease after a failed switch");
        }
    }
}

/// How the replica's offset compares with the one it must reach.
enum CatchUp {
    Reached,
    /// The deadline passed; the replica was last seen at this offset.
    Behind(Option<u64>),
}

/// Polls the replica's offset until it reaches `target`, until `deadline`.
async fn catch_up(
    replica: &mut ControlConnection,
    target: u64,
    deadline: Instant,
) -> Result<CatchUp, String> {
    let mut seen = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(CatchUp::Behind(seen));
        }
        match tokio::time::timeout(left, info_replication(replica)).await {
            Ok(Ok(r)) if r.offset.unwrap_or(0) >= target => return Ok(CatchUp::Reached),
            Ok(Ok(r)) => seen = r.offset,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(CatchUp::Behind(seen)),
        }
    }
}

/// This node's replication offset.
async fn offset(conn: &mut ControlConnection) -> Result<u64, String> {
    Ok(info_replication(conn).await?.offset.unwrap_or(0))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::guard::lease::ManualClock;

    fn context() -> Arc<ControlContext> {
        let config = Config::parse("backend:\n  addr: 127.0.0.1:1\n", "t").expect("valid config");
        Arc::new(ControlContext::new(
            config,
            Arc::new(ManualClock::new(1_000_000_000)),
        ))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_failover_at_a_time() {
        let ctx = context();
        let gate = &ctx.gate;
        let first = RunGuard::acquire(gate).expect("free");
        assert!(gate.role().failover.is_running());
        assert!(RunGuard::acquire(gate).is_none(), "already in progress");
        drop(first);
        assert!(!gate.role().failover.is_running());
        assert_eq!(gate.role().failover.state(), FailoverState::Failed);
        assert!(RunGuard::acquire(gate).is_some(), "free again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_run_that_panics_is_cleaned_up() {
        let ctx = context();
        let gate = Arc::clone(&ctx.gate);
        let mut guard = RunGuard::acquire(&gate).expect("free");
        gate.role().prepare_handover(Some("127.0.0.1:2".into()));
        gate.pause()
            .pause(Duration::from_secs(60), PauseMode::Write);
        guard.paused = true;
        gate.role().failover.set(FailoverState::WaitSync);
        let task = tokio::spawn(async move {
            let _guard = guard;
            panic!("a bug in the middle of a failover");
        });
        assert!(task.await.expect_err("panicked").is_panic());
        assert!(
            !gate.role().failover.is_running(),
            "the next failover may run"
        );
        assert_eq!(gate.role().failover.state(), FailoverState::Failed);
        assert!(!gate.pause().is_paused(), "the pause ended");
        assert_eq!(
            gate.role().handover_target(),
            None,
            "the hand-over withdrawn"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unreachable_target_fails_cleanly() {
        let shared = context();
        let request: FailoverRequest =
            serde_json::from_str(r#"{"to":"127.0.0.1:1"}"#).expect("request");
        let report = run(&shared, request).await;
        assert_eq!(report.result, FailoverState::Failed);
        assert!(!report.both_fenced);
        assert!(report.error.is_some());
        assert!(!shared.gate.role().failover.is_running());
        assert!(!shared.gate.pause().is_paused());
        assert_eq!(shared.gate.role().failover.state(), FailoverState::Failed);
    }
}
