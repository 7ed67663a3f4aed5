//! Carries out Redis's `FAILOVER` command as leasegate answers it
//! ([`crate::guard::failover_command`]) on the master's leasegate:
//!
//! 1. the target (`TO host port`, or the first replica the node lists) must
//!    be behind a leasegate, reached with `control.password`;
//! 2. writes are held here (not failed), and the writes already forwarded
//!    are answered;
//! 3. `waiting-for-sync`: until the target's offset reaches this node's
//!    (`TIMEOUT`; `FORCE` goes on after it, otherwise the failover ends and
//!    the held writes go on here); `FAILOVER ABORT` ends it the same way;
//! 4. `failover-in-progress`: the target's leasegate gets
//!    `REPLICAOF NO ONE`, and once its node reports itself master, this
//!    leasegate revokes its lease, is demoted toward the target (the held
//!    writes go there, `pause.on_demote`) and its node follows the target.
//!
//! It grants no lease: with `lease.mode: block-write` the new master's
//! lease comes from its lease source, as after any failover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::control::ControlContext;
use crate::guard::failover_command::{FailoverAsk, FailoverCommandState};
use crate::guard::pause::PauseMode;
use crate::guard::role::{Demotion, Source};
use crate::kvrocks::topology::Replication;
use crate::proxy::backend::{BackendError, ControlConnection};

/// The wait for the target to catch up without `TIMEOUT`.
const SYNC_WITHIN: Duration = Duration::from_secs(5);
/// How long the target may take to report itself master.
const PROMOTED_WITHIN: Duration = Duration::from_secs(5);
/// How long this node is asked to follow the target (a Kvrocks master
/// refuses while it still lists the target as its replica).
const FOLLOW_WITHIN: Duration = Duration::from_secs(10);

/// Serves `FAILOVER` requests until shutdown.
pub async fn serve(ctx: Arc<ControlContext>) {
    let command = &ctx.role.failover_command;
    loop {
        let ask = tokio::select! {
            a = command.next() => a,
            _ = ctx.shutdown.cancelled() => return,
        };
        match carry_out(&ctx, &ask).await {
            Ok(target) => {
                info!(new_master = %target, "FAILOVER done: this node follows the new master")
            }
            Err(e) => warn!(error = %e, "FAILOVER ended without a switch; writes go on here"),
        }
        command.set_state(FailoverCommandState::NoFailover);
    }
}

async fn carry_out(ctx: &Arc<ControlContext>, ask: &FailoverAsk) -> Result<String, String> {
    let (node_addr, control_login, timeout) = {
        let c = ctx.config.load();
        (
            c.backend.addr.clone(),
            c.control.login(),
            c.backend.connect_timeout,
        )
    };
    let mut node = ctx
        .open_node(timeout)
        .await
        .map_err(|e| format!("node {node_addr}: {e}"))?;
    let (own, info) = replication(&mut node).await?;
    if own.role.as_deref() != Some("master") {
        return Err("FAILOVER is not valid when server is a replica".into());
    }
    let target = match &ask.to {
        Some(t) => t.clone(),
        None => first_replica(&info).ok_or("FAILOVER requires connected replicas")?,
    };
    let peer_tls = ctx.peer_tls();
    let mut peer = ControlConnection::open_leasegate(
        &target,
        peer_tls.as_deref(),
        control_login.as_ref(),
        timeout,
    )
    .await
    .map_err(|e| format!("target {target}: {e}"))?;
    peer.leasegate_info()
        .await
        .map_err(|e| format!("target {target} is not behind a leasegate ({e})"))?;

    // Hold writes here, and let the ones already forwarded be answered.
    let sync_within = ask.timeout.unwrap_or(SYNC_WITHIN);
    let pause = ctx.gate.pause();
    pause.pause(sync_within + PROMOTED_WITHIN, PauseMode::Write);
    let drained = Instant::now() + crate::guard::control::DRAIN_BOUND;
    while ctx.role.writes_in_flight() > 0 && Instant::now() < drained {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let give_back = |why: String| {
        pause.unpause();
        Err(why)
    };

    // waiting-for-sync
    let deadline = Instant::now() + sync_within;
    loop {
        if ctx.role.failover_command.aborted() {
            return give_back("FAILOVER ABORT".into());
        }
        // An error here ends the failover before anything changed: the
        // writes held go on here. (Returned with `?`, it left them held
        // for the pause's whole bound: an audit.)
        let offsets = match (replication(&mut node).await, replication(&mut peer).await) {
            (Ok((m, _)), Ok((t, _))) => (m.offset.unwrap_or(0), t.offset.unwrap_or(0)),
            (Err(e), _) => return give_back(format!("this node: {e}")),
            (_, Err(e)) => return give_back(format!("target {target}: {e}")),
        };
        let (mine, theirs) = offsets;
        if theirs >= mine {
            break;
        }
        if Instant::now() >= deadline {
            if ask.force {
                warn!(target = %target, behind = mine - theirs, "FAILOVER FORCE: promoting a target that has not caught up");
                break;
            }
            return give_back(format!(
                "target {target} did not catch up within {} ms ({theirs} < {mine})",
                sync_within.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // failover-in-progress: from here on there is no way back.
    ctx.role
        .failover_command
        .set_state(FailoverCommandState::FailoverInProgress);
    match peer.call(&["REPLICAOF", "NO", "ONE"]).await {
        Ok(_) => {}
        // Refused: the target stays a replica, and writes go on here. (An
        // answer that could not be read is no refusal: below.)
        Err(e @ BackendError::Reply(_)) if !e.to_string().contains("invalid reply") => {
            return give_back(format!("target {target}: REPLICAOF NO ONE: {e}"));
        }
        // No answer: it may still have been promoted. Never release
        // writes here (two masters would take them).
        Err(e) => {
            ctx.role.revoke(
                &format!("FAILOVER to {target}: no answer to REPLICAOF NO ONE ({e})"),
                Source::Failover,
            );
            return Err(format!("target {target}: REPLICAOF NO ONE not answered ({e}); this node's lease is revoked and writes stay held until the pause ends"));
        }
    }
    let promoted = tokio::time::timeout(PROMOTED_WITHIN, async {
        loop {
            if let Ok((r, _)) = replication(&mut peer).await {
                if r.role.as_deref() == Some("master") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok();
    if !promoted {
        // The target may still become master: never release writes here.
        ctx.role.revoke(
            &format!("FAILOVER to {target}: the target did not report itself master in time"),
            Source::Failover,
        );
        return Err(format!("target {target} did not become master in time; this node's lease is revoked and writes stay held until the pause ends"));
    }
    ctx.role
        .revoke(&format!("FAILOVER to {target}"), Source::Failover);
    ctx.role.demote(Demotion {
        new_master: Some(Arc::from(target.as_str())),
    });
    pause.unpause();
    follow(&mut node, &target).await;
    Ok(target)
}

/// Makes this node a replica of `target`, retrying for a while.
async fn follow(node: &mut ControlConnection, target: &str) {
    let Some((host, port)) = target.rsplit_once(':') else {
        return;
    };
    let give_up = Instant::now() + FOLLOW_WITHIN;
    loop {
        match node.call(&["REPLICAOF", host, port]).await {
            Ok(_) => return,
            Err(e) if Instant::now() >= give_up => {
                warn!(target, error = %e, "this node did not follow the new master; its leasegate sends the writes there anyway");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `INFO replication` of what `conn` reaches, parsed and as text.
async fn replication(conn: &mut ControlConnection) -> Result<(Replication, String), String> {
    conn.replication()
        .await
        .map_err(|e| format!("INFO replication: {e}"))
}

/// The first replica a master's `INFO replication` lists
/// (`slave0:ip=...,port=...`), as `ip:port`.
fn first_replica(info: &str) -> Option<String> {
    info.lines()
        .filter(|l| l.starts_with("slave"))
        .find_map(|l| {
            let fields = l.split_once(':')?.1;
            let get = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            };
            Some(format!("{}:{}", get("ip")?, get("port")?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_listed_replica_is_the_default_target() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=10.0.0.2,port=7000,offset=5,lag=0\r\nslave1:ip=10.0.0.3,port=7000,offset=5,lag=0\r\n";
        assert_eq!(first_replica(info).as_deref(), Some("10.0.0.2:7000"));
        assert_eq!(first_replica("role:master\r\nconnected_slaves:0\r\n"), None);
    }
}
