//! Graceful failover (the states of Kvrocks PR #3295, the options of
//! kvrocks-controller PR #389): move the master role from this proxy's
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
//!    pause ends; the replica is promoted (`SLAVEOF NO ONE`), its leasegate
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
//!   `SLAVEOF NO ONE`, or the connection broke and the node still reports
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
//!
//! Every failure is a [`FailoverError`]; the report's `error` is its text.
//! The request and the report are wire types
//! ([`crate::kvrocks::admin_api`]), and the target's leasegate is spoken to
//! with the typed [`AdminClient`] (its `/v1/status`, then `/v1/lease`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::control::ControlContext;
use crate::guard::pause::PauseMode;
use crate::kvrocks::admin_api::{FailoverReport, FailoverRequest, FailoverState};
use crate::kvrocks::admin_client::AdminClient;
use crate::proxy::backend::ControlConnection;

mod cluster;
pub mod controller_pause;
mod errors;
mod metrics;
mod nodes;
mod promotion;
mod run;
mod switch;
pub mod timing;

pub use errors::{
    FailoverError, GrantUnconfirmed, NotPromoted, PromotionUnknown, Resync, RoleError,
};
pub use metrics::FailoverMetrics;
pub(super) use nodes::{catch_up, info_replication, CatchUp};
use nodes::{offset, same_addr};
use run::{Run, RunGuard, Settings, Target};
use switch::{fence, resync, rollback, switch_standalone, Fencing};

/// The longest lease a failover grants (a leasegate refuses longer ones).
pub const MAX_LEASE_TTL_MS: u64 = crate::guard::lease::MAX_TTL_MS;

/// Runs one failover to completion in a task of its own and returns its
/// report. A second concurrent call fails with "Failover is already in
/// progress". Dropping the returned future (the HTTP caller went away) does
/// not stop the failover.
pub async fn run(shared: &ControlContext, request: FailoverRequest) -> FailoverReport {
    let Some(guard) = RunGuard::acquire(&shared.gate) else {
        return FailoverReport::failed(FailoverError::AlreadyRunning.to_string());
    };
    let config = shared.config.load_full();
    let c = &config.controller;
    let settings = Settings {
        controller: c.url.as_ref().map(|url| cluster::Controller {
            urls: url.as_slice().to_vec(),
            namespace: c.namespace.clone(),
            cluster: c.cluster.clone(),
            timeout: c.timeout,
            switch_timeout: c.switch_timeout,
            tls: shared.controller_tls.load_full(),
        }),
        node: config.backend.addr.clone(),
        login: config.backend.login(),
        node_tls: shared.node_tls(),
        admin_ca: shared.admin_ca.load_full(),
        timeout: config.connect_timeout(),
        admin_token: config.admin.token.clone(),
        listen: config.listen.to_string(),
        memory: Arc::clone(&shared.promotion_memory),
    };
    let gate = Arc::clone(&shared.gate);
    let metrics = Arc::clone(&shared.metrics.failover);
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let report = execute(guard, settings, request).await;
        metrics.record(&report, started.elapsed());
        report
    });
    match task.await {
        Ok(report) => {
            if report.both_fenced {
                // This node stays demoted toward the target, whose leasegate
                // holds no lease: where it would hand the writes back (a
                // replica still, by the controller's word: a switch the
                // controller answered but never carried out), every session
                // went back and forth between the two, a new connection per
                // hop, until both ran out of descriptors (walkthrough 38).
                let target = shared.role.demotion().and_then(|d| d.new_master.clone());
                if let Some(target) = target {
                    crate::control::switch::refuse_if_handed_back(shared, &target).await;
                }
            }
            report
        }
        Err(e) => {
            // The guard has ended the pause and marked the run failed.
            let error = FailoverError::TaskEnded {
                panicked: e.is_panic(),
                lease_valid: gate.lease().snapshot().valid,
                demoted: gate.role().demotion().is_some(),
            };
            FailoverReport::failed(error.to_string())
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
        timing: None,
        promotion: None,
        paused: None,
        earlier_stall: 0.0,
        caught_up: None,
        switched_first: false,
        lease_late_ms: None,
    };
    let outcome = failover(&mut run).await;
    // Whatever happened, the pause ends with the run (the fencing is final by now).
    run.release();
    let (promotion_ms, timing) = run.promotion_report();
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
                promotion_ms,
                timing,
                lease_late_ms: run.lease_late_ms,
            }
        }
        Err(e) => {
            warn!(error = %e, both_fenced = run.both_fenced, "failover failed");
            run.enter(FailoverState::Failed);
            FailoverReport {
                result: FailoverState::Failed,
                error: Some(e.to_string()),
                stall_ms: run.stall(),
                steps: std::mem::take(&mut run.steps),
                epoch: None,
                new_master: None,
                both_fenced: run.both_fenced,
                promotion_ms,
                timing,
                lease_late_ms: run.lease_late_ms,
            }
        }
    }
}

/// The nodes a failover works with, as check_slave found them.
struct Checked {
    admin: AdminClient,
    /// The target leasegate's admin token.
    token: Option<String>,
    target: Target,
    /// This node, and the target's.
    source: ControlConnection,
    replica: ControlConnection,
    /// Cluster mode: this node's place in the controller's topology.
    shard: Option<cluster::Shard>,
    /// Where the replica follows this node through its leasegate, if it may.
    through_me: Option<String>,
}

async fn failover(run: &mut Run) -> Result<(u64, Target), FailoverError> {
    run.enter(FailoverState::Started);
    run.enter(FailoverState::CheckSlave);
    let mut checked = check_slave(run).await?;
    // Cluster mode, timed: the controller switches first, writes going on
    // (its switch is then no part of the stall; `cluster::switch_first`).
    let switched = match checked.shard.as_ref() {
        Some(shard) if run.request.promotion_timing && run.request.cluster_timing => {
            if lease_outlasts_the_run(run) && !verifies_every_write(run) {
                Some(cluster::switch_first(run, &checked.target, shard).await?)
            } else {
                None
            }
        }
        _ => None,
    };
    let Some((topology, took)) = switched else {
        return switch_after_pause(run, checked).await;
    };
    run.switched_first = true;
    // From here on the controller names the target: a failure leaves this
    // node to follow it as after the controller's own failover.
    let after_switch = |source| FailoverError::AfterSwitch {
        source: Box::new(source),
    };
    plan_promotion(run, &mut checked, Some(took)).await;
    let blocking_seen = pause_until_caught_up(run, &mut checked)
        .await
        .map_err(after_switch)?;
    run.enter(FailoverState::Switching);
    let (epoch, fencing) = fence(run, &checked.target);
    resync(run, &mut checked, &fencing, blocking_seen)
        .await
        .map_err(after_switch)?;
    let nodes = cluster::Nodes {
        source: &mut checked.source,
        replica: &mut checked.replica,
        token: checked.token.as_deref(),
    };
    let (admin, target) = (&checked.admin, &checked.target);
    let epoch = cluster::promote_switched(run, admin, target, &topology, epoch, nodes).await?;
    Ok((epoch, checked.target))
}

/// Whether this node's lease lasts long enough for the controller to be
/// asked before the pause: from then on it is no longer renewed (the
/// controller names the target), and the writes going on until the pause
/// need it. Otherwise the controller is asked after the fencing, as
/// without timing (logged).
fn lease_outlasts_the_run(run: &Run) -> bool {
    let left = run.gate.lease().snapshot().remaining_ms;
    let enough = left >= cluster::SWITCH_FIRST_LEASE.as_millis() as u64;
    if !enough {
        warn!(
            lease_left_ms = left,
            "the lease runs out too soon for the controller to be asked before the pause; asked after the fencing"
        );
    }
    enough
}

/// Whether writes are verified with the controller (`verify.mode:
/// every-write`): then the controller is asked after the pause, as without
/// timing. Once it has switched, no write here can be confirmed: every
/// write taken between its switch and a timed pause would be refused
/// (a walkthrough: 328 errors in 6 failovers). Logged.
fn verifies_every_write(run: &Run) -> bool {
    let on = run.gate.verifier().is_some_and(|v| v.enabled());
    if on {
        info!("writes are verified with the controller: it is asked after the pause (a switch before it would refuse every write until the pause)");
    }
    on
}

/// The failover with the switch after the pause: standalone, or in cluster
/// mode through the controller once this node is fenced.
async fn switch_after_pause(
    run: &mut Run,
    mut checked: Checked,
) -> Result<(u64, Target), FailoverError> {
    let kvrocks = plan_promotion(run, &mut checked, None).await;
    let blocking_seen = pause_until_caught_up(run, &mut checked).await?;
    run.enter(FailoverState::Switching);
    let (epoch, fencing) = fence(run, &checked.target);
    resync(run, &mut checked, &fencing, blocking_seen).await?;
    match checked.shard.take() {
        Some(shard) => {
            let nodes = cluster::Nodes {
                source: &mut checked.source,
                replica: &mut checked.replica,
                token: checked.token.as_deref(),
            };
            let (admin, target) = (&checked.admin, &checked.target);
            let epoch = cluster::switch(run, admin, target, &shard, epoch, &fencing, nodes).await?;
            Ok((epoch, checked.target))
        }
        None => switch_standalone(run, checked, epoch, &fencing, kvrocks).await,
    }
}

/// check_slave: the target's leasegate knows its node id, its node is a
/// replica of this node (directly, through this leasegate, or in cluster
/// mode by the address the controller lists) with its link up.
async fn check_slave(run: &mut Run) -> Result<Checked, FailoverError> {
    let gate = Arc::clone(&run.gate);
    let timeout = run.settings.timeout;
    let this_node = run.settings.node.clone();
    let login = run.settings.login.clone();
    let login = login.as_ref();
    let admin = AdminClient::new(
        Duration::from_secs(2),
        run.settings.admin_ca.clone(),
        crate::kvrocks::admin_client::SERVER_CA_MISSING,
    );
    let token = run
        .request
        .target_token
        .clone()
        .or_else(|| run.settings.admin_token.clone());
    let target = check_target(&admin, &run.request.to).await?;
    // The switch grants the target its lease with this token: a token it
    // refuses must stop the failover now, not after its node is promoted.
    admin
        .check_token(&run.request.to, token.as_deref())
        .await
        .map_err(|source| FailoverError::TargetToken {
            to: run.request.to.clone(),
            source: Box::new(source),
        })?;
    let tls = run.settings.node_tls.clone();
    let mut source = ControlConnection::open_node(&this_node, tls.as_deref(), login, timeout)
        .await
        .map_err(|source| FailoverError::SourceUnreachable {
            node: this_node.clone(),
            source,
        })?;
    let mut replica = ControlConnection::open_node(&target.node, tls.as_deref(), login, timeout)
        .await
        .map_err(|source| FailoverError::TargetUnreachable {
            node: target.node.clone(),
            source,
        })?;
    let mine = info_replication(&mut source).await?;
    if mine.is_replica() {
        return Err(FailoverError::NotAMaster);
    }
    // In cluster mode the controller's topology must agree, and the replica
    // follows this node at the address it is registered by (its leasegate).
    let shard = if cluster::enabled(&mut source).await? {
        let shard = cluster::locate(&run.settings, gate.lease().node_id(), &target.node_id).await?;
        // This node is master at that version, whether or not the
        // controller's own push of it has reached the node yet (a peer's
        // failover promotes a node directly, not through its leasegate):
        // that push, should it come after this failover demoted the node,
        // is old news and must not promote it again.
        gate.role().node_accepted_topology(shard.version);
        Some(shard)
    } else {
        None
    };
    let listed = shard.as_ref().map(|s| s.my_addr.as_str());
    let theirs = info_replication(&mut replica).await?;
    // Directly, or through this leasegate (where a failover re-attached it).
    let through_me = promotion::reattach_address(&run.settings.listen, theirs.master.as_deref());
    let follows_me = same_addr(theirs.master.as_deref(), &this_node)
        || listed.is_some_and(|a| same_addr(theirs.master.as_deref(), a))
        || through_me
            .as_deref()
            .is_some_and(|a| same_addr(theirs.master.as_deref(), a));
    if !theirs.is_replica() || !follows_me {
        return Err(FailoverError::NotAReplica {
            target: target.node.clone(),
            node: this_node.clone(),
            role: theirs.role,
            master: theirs.master,
        });
    }
    if theirs.link_status.as_deref() != Some("up") {
        return Err(FailoverError::LinkDown {
            status: theirs.link_status,
        });
    }
    nodes::same_namespaces(&mut source, &mut replica).await?;
    Ok(Checked {
        admin,
        token,
        target,
        source,
        replica,
        shard,
        through_me,
    })
}

/// Learns whether the target is Kvrocks and, if the request asks for
/// promotion timing, plans the pause and waits for its moment
/// ([`promotion`]); returns whether the target is Kvrocks. `switched`: the
/// controller switched the shard before the pause, in that long (cluster
/// mode, timed), so its switch is no part of the plan.
async fn plan_promotion(run: &mut Run, checked: &mut Checked, switched: Option<Duration>) -> bool {
    let gate = Arc::clone(&run.gate);
    let request = run.request.clone();
    let Checked {
        admin,
        target,
        source,
        replica,
        shard,
        through_me,
        ..
    } = checked;
    // A Kvrocks target waits for its replication tick to be promoted (the
    // timing below), and its old master rejoins through its leasegate.
    let kvrocks = match replica.is_kvrocks().await {
        Ok(kvrocks) => kvrocks,
        Err(e) => {
            warn!(error = %e, "cannot tell whether the target is Kvrocks; taken as not");
            false
        }
    };
    // The pause waits for the moment the promotion can follow it at once.
    let mut timing = if shard.is_some() && request.promotion_timing && !request.cluster_timing {
        promotion::Timing::unused(
            "cluster mode: timed only on request (cluster_timing, docs/failover-timing.md)",
        )
    } else if request.promotion_timing {
        let memory = &run.settings.memory;
        // Cluster mode: the controller's switch comes before the promotion;
        // where it came before the pause, only the `SETNODES` does (its
        // topology parsed before the node stops replicating).
        let switch = match (shard.is_some(), switched.is_some()) {
            (true, false) => memory.switch.estimate() + timing::SWITCH_SLACK,
            (true, true) => timing::SETNODES_LEAD,
            (false, _) => Duration::ZERO,
        };
        promotion::prepare(promotion::Prepare {
            gate: &gate,
            admin,
            target_admin: &request.to,
            target_node: &target.node,
            replica,
            source,
            kvrocks,
            // Cluster mode: the controller's topology decides where it follows.
            reattach_to: shard.is_none().then(|| through_me.clone()).flatten(),
            work: memory.catch_up.estimate() + switch,
            switch,
        })
        .await
    } else {
        promotion::Timing::unused("turned off by the request (promotion_timing: false)")
    };
    if let Some(took) = switched {
        timing.switched_before_pause(took);
    }
    timing.wait().await;
    run.timing = Some(timing);
    kvrocks
}

/// pause_write and wait_sync: holds writes, waits for the ones already
/// forwarded and for the replica to reach this node's offset; a catch-up
/// too late for the planned tick ends the pause and tries the next one.
/// Returns the count of completed blocking writes seen at the offset's read.
async fn pause_until_caught_up(run: &mut Run, checked: &mut Checked) -> Result<u64, FailoverError> {
    let gate = Arc::clone(&run.gate);
    let request = run.request.clone();
    let Checked {
        target,
        source,
        replica,
        ..
    } = checked;
    // Paused sessions may open their connections to the new master now.
    gate.role()
        .prepare_handover(Some(target.proxy.clone().into()));
    let pause = Arc::clone(gate.pause());
    let sync_timeout = Duration::from_millis(request.sync_timeout_ms);
    let mut retries = 0;
    loop {
        run.enter(FailoverState::PauseWrite);
        pause.pause(
            Duration::from_millis(request.pause_timeout_ms),
            PauseMode::Write,
        );
        run.guard.paused = true;
        run.paused_at = Some(run.now_ms());
        run.paused = Some(Instant::now());
        let sync_deadline = Instant::now() + sync_timeout;
        // Writes already forwarded must be answered before the offsets mean anything.
        while gate.role().writes_in_flight() > 0 {
            if Instant::now() >= sync_deadline {
                return run.abort(FailoverError::InFlightTimeout);
            }
            tokio::task::yield_now().await;
        }

        run.enter(FailoverState::WaitSync);
        // Blocking writes (BLPOP & co.) are not counted in flight: one that pops
        // after this node's offset is read is seen by this counter moving.
        let blocking_seen = gate.role().blocking_writes_completed();
        let source_offset = offset(source).await?;
        match catch_up(replica, source_offset, sync_deadline).await {
            Ok(CatchUp::Reached) => {}
            Ok(CatchUp::Behind(at)) => {
                let error = FailoverError::SyncTimeout {
                    offset: source_offset,
                    timeout_ms: request.sync_timeout_ms,
                    at,
                };
                if !request.force_on_timeout {
                    return run.abort(error);
                }
                warn!(%error, "sync timeout; switching anyway (force_on_timeout)");
            }
            Err(e) => return run.abort(e),
        }
        // Caught up too late for the tick the pause was timed for: the
        // promotion would wait a whole period with writes held. Nothing was
        // switched yet, so the pause ends (the held writes go to this node)
        // and the next tick is tried.
        // What this attempt took from its pause to here is the work the
        // next plan assumes (late attempts too: they are what a plan misses).
        let work = run.paused.map_or(Duration::ZERO, |p| p.elapsed());
        run.settings.memory.catch_up.record(work);
        run.caught_up = Some(Instant::now());
        let late = run.timing.as_mut().and_then(|t| t.late(Instant::now()));
        match late {
            Some(by) if retries < promotion::MAX_RETRIES => {
                retries += 1;
                info!(
                    late_ms = by.as_secs_f64() * 1000.0,
                    "caught up too late for the planned tick: writes released, the next tick is tried"
                );
                run.release_for_retry();
                if let Some(timing) = run.timing.as_mut() {
                    timing.retry(Instant::now(), work);
                    timing.wait().await;
                }
            }
            _ => return Ok(blocking_seen),
        }
    }
}

async fn check_target(admin: &AdminClient, to: &str) -> Result<Target, FailoverError> {
    let status = admin.status(to).await?;
    let node_id = status
        .lease
        .node_id
        .ok_or_else(|| FailoverError::NoNodeId { to: to.to_string() })?;
    let proxy = client_address(&status.listen, to);
    Ok(Target {
        node_id,
        node: status.backend,
        proxy,
    })
}

/// Where clients reach a leasegate that listens on `listen` and whose admin
/// API is at `admin`: a wildcard listen address is reached at the admin
/// API's host.
fn client_address(listen: &str, admin: &str) -> String {
    match listen.rsplit_once(':') {
        Some((host, port)) if host == "0.0.0.0" || host == "[::]" => {
            // An `https://` (or `http://`) admin address: its host.
            let admin = admin.split_once("://").map_or(admin, |(_, rest)| rest);
            let admin = admin.trim_end_matches('/');
            let admin_host = admin.rsplit_once(':').map_or(admin, |(h, _)| h);
            format!("{admin_host}:{port}")
        }
        _ => listen.to_string(),
    }
}

#[cfg(test)]
mod tests;
