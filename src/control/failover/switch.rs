//! The switching state: this node fenced first, the replica caught up again
//! if writes could have slipped past the first check, the standalone
//! promotion (`SLAVEOF NO ONE`) with its lease grant, release and rejoin,
//! and the rollback that makes this node master again when nothing was
//! switched. Cluster mode switches through the controller
//! ([`super::cluster`]) after the same fencing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::guard::gate::Gate;
use crate::guard::lease::{Grant, Saved};
use crate::guard::role::{Demotion, Source};
use crate::kvrocks::admin_api::{LeaseOutcome, LeaseRequest};

use super::nodes::{offset, promotion_outcome, rejoin, Promotion};
use super::run::{Run, Target};
use super::{catch_up, CatchUp, Checked, FailoverError, GrantUnconfirmed, Resync};

/// Fences this node first: from here on no write reaches it, whatever
/// happens to the pause (its timeout may run out during the switch).
/// Returns the new epoch and how to undo the fencing.
pub(super) fn fence(run: &Run, target: &Target) -> (u64, Fencing) {
    let gate = &run.gate;
    let request = &run.request;
    let lease = Arc::clone(gate.lease());
    let before = lease.save();
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
    let fencing = Fencing {
        before,
        after: lease.save(),
    };
    gate.role().demote(Demotion {
        new_master: Some(target.proxy.clone().into()),
    });
    (epoch, fencing)
}

/// Writes may have reached this node after its offset was read: if the
/// pause ended early (forwarded writes), or a blocking write completed (a
/// pop). Now that this node is fenced no more can: waits for the replica
/// to catch up with its offset again.
pub(super) async fn resync(
    run: &mut Run,
    checked: &mut Checked,
    fencing: &Fencing,
    blocking_seen: u64,
) -> Result<(), FailoverError> {
    let gate = Arc::clone(&run.gate);
    let (sync_timeout_ms, force_on_timeout) =
        (run.request.sync_timeout_ms, run.request.force_on_timeout);
    let Checked {
        source, replica, ..
    } = checked;
    let pause_ended = !gate.pause().is_paused();
    let blocking_moved = gate.role().blocking_writes_completed() != blocking_seen;
    if pause_ended || blocking_moved {
        let why = if pause_ended {
            Resync::PauseEnded
        } else {
            Resync::BlockingWrite
        };
        info!(%why, "waiting for the replica to catch up again");
        let deadline = Instant::now() + Duration::from_millis(sync_timeout_ms);
        let resynced = async {
            while gate.role().writes_in_flight() > 0 {
                if Instant::now() >= deadline {
                    return Ok(CatchUp::Behind(None));
                }
                tokio::task::yield_now().await;
            }
            let offset = offset(&mut *source).await?;
            catch_up(&mut *replica, offset, deadline).await
        };
        let error = match resynced.await {
            Ok(CatchUp::Reached) => None,
            Ok(CatchUp::Behind(_)) => Some(FailoverError::ResyncTimeout {
                why,
                timeout_ms: sync_timeout_ms,
            }),
            Err(e) => Some(FailoverError::ResyncUnchecked {
                why,
                source: Box::new(e),
            }),
        };
        if let Some(error) = error {
            if !force_on_timeout {
                // Nothing was sent to the target yet: this node is master still.
                rollback(&gate, fencing);
                return run.abort(error);
            }
            warn!(%error, "switching anyway (force_on_timeout)");
        }
    }
    Ok(())
}

/// The standalone switch: promotes the target (`SLAVEOF NO ONE`, timed),
/// grants its leasegate the lease at `epoch`, releases the held writes
/// (handed to it) and makes this node its replica.
pub(super) async fn switch_standalone(
    run: &mut Run,
    checked: Checked,
    epoch: u64,
    fencing: &Fencing,
    kvrocks: bool,
) -> Result<(u64, Target), FailoverError> {
    let gate = Arc::clone(&run.gate);
    let request = run.request.clone();
    let timeout = run.settings.timeout;
    let login = run.settings.login.clone();
    let login = login.as_ref();
    let tls = run.settings.node_tls.clone();
    let Checked {
        admin,
        token,
        target,
        mut source,
        mut replica,
        ..
    } = checked;
    let promoted = run.promote(replica.call(&["SLAVEOF", "NO", "ONE"])).await;
    if let Err(e) = promoted {
        match promotion_outcome(
            &e,
            &mut replica,
            (&target.node, tls.as_deref()),
            login,
            timeout,
        )
        .await
        {
            Promotion::Done => {
                warn!(error = %e, "the promotion reported a failure, but the target node is master now: carrying on with the switch");
            }
            Promotion::NotDone(why) => {
                rollback(&gate, fencing);
                return run.abort(FailoverError::PromoteFailed {
                    node: target.node.clone(),
                    source: e,
                    why,
                });
            }
            Promotion::Unknown(why) => {
                return run.both_fenced(FailoverError::PromoteUnknown {
                    node: target.node.clone(),
                    source: e,
                    why,
                    epoch,
                });
            }
        }
    }
    let grant = LeaseRequest {
        master_node_id: target.node_id.clone(),
        epoch,
        ttl_ms: request.lease_ttl_ms,
        nonce: None,
    };
    let granted = match admin
        .grant_lease(&request.to, token.as_deref(), &grant)
        .await
    {
        Ok(answer) if answer.outcome == LeaseOutcome::Renewed => Ok(()),
        Ok(answer) => Err(GrantUnconfirmed::NotApplied(answer.outcome)),
        Err(e) => Err(GrantUnconfirmed::Call(e)),
    };
    if let Err(source) = granted {
        return run.both_fenced(FailoverError::GrantFailed {
            node: target.node.clone(),
            leasegate: request.to.clone(),
            epoch,
            node_id: target.node_id.clone(),
            source: Box::new(source),
        });
    }
    run.release();
    // A Kvrocks node rejoins through the new master's leasegate: the way
    // back is then timed by this link. A Redis node follows the new
    // master's node, as before.
    let via = if kvrocks { &target.proxy } else { &target.node };
    let (host, port) = via
        .rsplit_once(':')
        .ok_or_else(|| FailoverError::BadTargetAddress { node: via.clone() })?;
    rejoin(&mut source, host, port)
        .await
        .map_err(|source| FailoverError::Rejoin { source })?;
    Ok((epoch, target))
}

/// Undoes the fencing of this node when the switch fails and nothing was
/// switched: it is the master still. The lease comes back as it was before
/// the fencing (epoch included, so the controller's heartbeats renew it
/// again), unless something else changed it meanwhile: that word stands.
pub(super) fn rollback(gate: &Gate, fencing: &Fencing) {
    if gate.lease().restore(&fencing.before, &fencing.after) {
        gate.role().clear_demotion();
        info!("the fencing was undone: this node is master again");
    } else {
        warn!("the lease changed during the failover (a grant or revocation from elsewhere); it is left as it is");
    }
}

/// This node's lease before and right after the failover fenced it.
pub(super) struct Fencing {
    before: Saved,
    after: Saved,
}
