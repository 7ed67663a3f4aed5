//! Fencing the old master before a promotion that passes through this
//! leasegate ([`crate::guard::promotion`]): Sentinel's `REPLICAOF NO ONE`
//! waits until the old master's leasegate holds writes and this node has
//! caught up; once this node is master, the old master follows it and its
//! held writes come here.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::control::own_node::{replication_of, OwnNode};
use crate::control::ControlContext;
use crate::proxy::backend::ControlConnection;

/// How long a fenced old master holds writes at most: the promotion's own
/// bound plus the wait for this node to become master.
const FENCE_PAUSE: Duration = Duration::from_secs(8);
/// How long the promoted node may take to report itself master before the
/// old master is let go again.
const PROMOTED_WITHIN: Duration = Duration::from_secs(5);
/// How long writes at the promoted node wait for the Sentinels to name it
/// (they do once the promotion is seen: about a second).
const NAMED_WITHIN: Duration = Duration::from_secs(5);

/// Serves the promotion fence ([`crate::guard::promotion`]) until shutdown:
/// each promotion passing through (Sentinel's `REPLICAOF NO ONE`) waits
/// until the old master's leasegate holds writes and this node has caught
/// up with it; once this node is master, the old master is made its replica
/// through its leasegate (so its held writes come here) and released.
pub(super) async fn serve_fences(ctx: Arc<ControlContext>, me: String) {
    while let Some(request) = ctx.role.promotion_fence.next_request(&ctx.shutdown).await {
        let until = request.until;
        // Decided a little before the bound, when the held promotion would
        // go on by itself: a refusal must come first.
        let decide_by = until.checked_sub(DECIDE_AHEAD).unwrap_or(until);
        let mut reached = None;
        let fenced =
            tokio::time::timeout_at(decide_by.into(), fence_old_master(&ctx, &mut reached)).await;
        // A node that would come out of it without the old master's
        // writes: one the old master's leasegate paused but that did not
        // catch up in time, a master on its own (an old master the
        // Sentinels replaced, which has not followed the new one yet:
        // Kvrocks refuses that for seconds), or, with the old master out of
        // reach, one that has not been linked to it since it began
        // following it (a full sync under way: walkthrough 13 promoted one
        // whose old master's leasegate was frozen, and 4,045 acknowledged
        // writes were lost). Its promotion is refused; the Sentinels'
        // failover times out, and one later finds it caught up.
        let behind = match &fenced {
            Ok(Ok(_)) => None,
            _ if reached.is_some() => Some(format!(
                "this node did not catch up with the old master {} in time",
                reached.as_deref().unwrap_or_default()
            )),
            _ => match stale_master(&ctx).await {
                Some(why) => Some(why),
                None => unsynced(&ctx),
            },
        };
        if let Some(why) = behind {
            warn!(why = %why, "the promotion of this node is refused: it would lose acknowledged writes");
            if let Some(old) = reached {
                tokio::spawn(unpause_old_master(Arc::clone(&ctx), old));
            }
            ctx.role.promotion_fence.refuse(format!(
                "ERR leasegate refused the promotion: {why} (it would lose acknowledged writes)"
            ));
            continue;
        }
        // The promotion goes on, whatever else the fence came to: writes sent
        // here stop going to the old master (this replica's leasegate sent
        // them there), and wait for the lease instead. Should the node
        // refuse it, the next poll demotes this leasegate again. (Cleared
        // here, before the node accepts: cleared once the node reported
        // itself master instead, a Sentinel poll in between revoked the
        // demoted node's wait for its lease and its writes were fenced.)
        ctx.role.clear_demotion();
        // Writes sent here wait for the Sentinels' lease, and until they
        // name this node the poll takes it for a node being promoted, not
        // for an old master they replaced: walkthrough 13 saw the poll
        // right after a promotion (the Sentinels still naming the dead old
        // master) make the freshly promoted node follow that dead master.
        let named_by = std::time::Instant::now() + NAMED_WITHIN;
        ctx.role.await_lease(named_by);
        ctx.role.promotion_goes_on(named_by);
        match fenced {
            Ok(Ok((old, conn))) => {
                info!(old_master = %old, "old master fenced and caught up: the promotion goes on");
                ctx.role.promotion_fence.settle();
                tokio::spawn(hand_over_old_master(
                    Arc::clone(&ctx),
                    old,
                    conn,
                    me.clone(),
                ));
            }
            Ok(Err(e)) => {
                warn!(error = %e, "the old master could not be fenced; the promotion goes on (a master that cannot be reached is fenced by its lease)");
                ctx.role.promotion_fence.settle();
            }
            Err(_) => {
                warn!("fencing the old master took too long; the promotion goes on");
                ctx.role.promotion_fence.settle();
            }
        }
    }
}

/// How long before the held promotion's bound the fence decides.
const DECIDE_AHEAD: Duration = Duration::from_millis(50);

/// Whether this node is a master on its own that the Sentinels replaced:
/// its leasegate demoted, its node reporting itself master. Why, if so.
async fn stale_master(ctx: &ControlContext) -> Option<String> {
    if !ctx.role.is_demoted() {
        return None;
    }
    let role = OwnNode::default().role(ctx).await?;
    (role == "master").then(|| {
        "this node was replaced as master and has not replicated from the new master since"
            .to_string()
    })
}

/// Why this node, its old master out of reach, must not be promoted: the
/// probe saw it begin to follow that master and has not seen it linked
/// since, so it lacks what that master acknowledged. `None` otherwise (or
/// when the probe cannot say).
fn unsynced(ctx: &ControlContext) -> Option<String> {
    ctx.role.node.unsynced_with_its_master().then(|| {
        "the old master is out of reach and this node has not been linked to it since it began following it (a full sync under way?)"
            .to_string()
    })
}

/// Ends the pause this fence set at the old master's leasegate (`old`),
/// the promotion having been refused.
async fn unpause_old_master(ctx: Arc<ControlContext>, old: String) {
    let login = ctx.config.load().control.login();
    let peer = ctx.peer_tls();
    let timeout = ctx.config.load().sentinel.timeout;
    let unpaused = async {
        let mut conn =
            ControlConnection::open_leasegate(&old, peer.as_deref(), login.as_ref(), timeout)
                .await
                .map_err(|e| e.to_string())?;
        conn.call(&["CLIENT", "UNPAUSE"])
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = unpaused.await {
        warn!(old_master = %old, error = %e, "CLIENT UNPAUSE at the old master failed; its pause ends by itself");
    }
}

/// Pauses writes at the leasegate of the master this node replicates from
/// and waits until this node has all of them; the old master's address and
/// the connection to its leasegate. `reached` names the old master once
/// its writes are paused. A node that follows no master while its
/// leasegate is demoted (an old master the Sentinels replaced) is waited
/// for until it follows one ([`super::stale`] makes it).
async fn fence_old_master(
    ctx: &ControlContext,
    reached: &mut Option<String>,
) -> Result<(String, ControlConnection), String> {
    let control_login = ctx.config.load().control.login();
    // The old master's leasegate gets the fence's whole bound to answer,
    // more than its lease's pulse (`super::PULSE_SLACK`): one frozen until
    // the promotion passes wakes to a lapsed pulse, and asks the Sentinels
    // before its next write (one that wakes sooner is fenced here).
    let timeout = crate::guard::gate::PROMOTION_FENCE_BOUND;
    let mut own = OwnNode::default();
    let old = loop {
        match own.followed_master(ctx).await {
            Ok(old) => break old,
            Err(e) if !ctx.role.is_demoted() => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let peer = ctx.peer_tls();
    let mut conn =
        ControlConnection::open_leasegate(&old, peer.as_deref(), control_login.as_ref(), timeout)
            .await
            .map_err(|e| format!("old master {old}: {e}"))?;
    conn.leasegate_info()
        .await
        .map_err(|e| format!("old master {old} is not behind a leasegate ({e})"))?;
    let ms = FENCE_PAUSE.as_millis().to_string();
    conn.call(&["CLIENT", "PAUSE", &ms, "WRITE"])
        .await
        .map_err(|e| format!("old master {old}: CLIENT PAUSE: {e}"))?;
    *reached = Some(old.clone());
    let theirs = replication_of(&mut conn)
        .await
        .map_err(|e| format!("old master {old}: {e}"))?;
    let target = theirs
        .offset
        .ok_or_else(|| format!("old master {old} reports no offset"))?;
    loop {
        let mine = own.replication(ctx).await.unwrap_or_default();
        // Offsets compare only within one history: an old master
        // restarted empty since this node last synced with it has a new
        // replication id and a small offset, which this node's older,
        // larger one passed at once (walkthrough 15: 5,957 and 6,483
        // acknowledged writes lost). Kvrocks reports no id.
        let same_history = match (&mine.replid, &theirs.replid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if same_history && mine.offset.unwrap_or(0) >= target {
            return Ok((old, conn));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Makes the old master (through `conn`, its leasegate) a replica of `me`,
/// retrying for a while; `true` once it follows, or once its leasegate is
/// demoted toward `me` (the Sentinels named this node): either way its
/// writes come here. A Kvrocks master refuses to follow a node it still
/// lists as its own replica ("can't replicate your own replicas") until its
/// liveness ping to that replica's closed link fails, 2–4 s later; the
/// Sentinels convert it then.
async fn follow_me(conn: &mut ControlConnection, old: &str, me: &str) -> bool {
    let Some((host, port)) = me.rsplit_once(':') else {
        return false;
    };
    let give_up = std::time::Instant::now() + FOLLOW_WITHIN;
    loop {
        let refused = match conn.call(&["REPLICAOF", host, port]).await {
            Ok(_) => {
                info!(old_master = %old, new_master = %me, "the old master follows this node; its held writes come here");
                return true;
            }
            Err(e) => e.to_string(),
        };
        let demoted_toward_me = conn.leasegate_info().await.is_ok_and(|info| {
            info.get("demoted").map(String::as_str) == Some("1")
                && info
                    .get("demoted_new_master")
                    .is_some_and(|m| crate::kvrocks::sentinel::same_addr(m, me))
        });
        if demoted_toward_me {
            info!(old_master = %old, new_master = %me, refused = %refused, "the old master's leasegate is demoted toward this node; its held writes come here (its node follows when the Sentinels convert it)");
            return true;
        }
        if std::time::Instant::now() >= give_up {
            warn!(old_master = %old, error = %refused, "the old master did not follow this node");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the old master is asked to follow this node.
const FOLLOW_WITHIN: Duration = Duration::from_secs(6);

/// Once this node reports itself master, makes the old master its replica
/// through the old master's leasegate (which sends its held writes here)
/// and ends the pause there.
async fn hand_over_old_master(
    ctx: Arc<ControlContext>,
    old: String,
    mut conn: ControlConnection,
    me: String,
) {
    let promoted = OwnNode::default().until_master(&ctx, PROMOTED_WITHIN).await;
    if !promoted {
        warn!(old_master = %old, "this node was not promoted in time; the old master is let go");
    } else if !follow_me(&mut conn, &old, &me).await {
        // Never release the old master's writes while it may still take
        // them: its pause ends by itself, after the Sentinels have named
        // this node and its leasegate demoted it (about a second).
        warn!(old_master = %old, "the old master did not follow this node; its writes stay held until its pause ends, by which time the Sentinels demote it");
        return;
    }
    if let Err(e) = conn.call(&["CLIENT", "UNPAUSE"]).await {
        warn!(old_master = %old, error = %e, "CLIENT UNPAUSE at the old master failed; its pause ends by itself");
    }
}
