//! An old master the Sentinels replaced, whose node is still a master on
//! its own.
//!
//! After a failover the new master's leasegate makes the old master follow
//! it ([`super::fence`]), and Sentinel converts an old master that comes
//! back; but Kvrocks refuses `REPLICAOF` to a node it still lists as its
//! own replica ("can't replicate your own replicas") until its liveness
//! ping to the replica's closed link fails, 2–4 s later, and Sentinel
//! converts it only 8 s after it reports itself master. Meanwhile the old
//! master has none of the new master's writes, yet Sentinel lists it as a
//! replica: a failover back in that window promoted it, and the new
//! master, made its replica, lost every write it had acknowledged
//! (walkthrough 10: 733 and 438 lost). So:
//!
//! * [`follow_new_master`]: the old master's leasegate, demoted by the
//!   Sentinels, makes its own node follow the new master, asking again
//!   while the node refuses, for as long as the node is a master on its
//!   own while they name another (the poll starts it again: after a
//!   restart, the node comes back empty and on its own);
//! * until it does, the old master's leasegate answers `INFO` as a replica
//!   of the new master whose link is down ([`crate::guard::info`]), so
//!   Sentinel neither takes it for a promoted replica nor prefers it;
//! * a promotion of it is held until it follows and has caught up, and
//!   refused otherwise ([`super::fence`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::control::own_node::OwnNode;
use crate::control::ControlContext;

/// How often the node is asked again while it refuses.
const ASK_EVERY: Duration = Duration::from_millis(200);
/// How long it is asked: past Kvrocks' refusal (2–4 s), and Sentinel's own
/// conversion (8 s) with room.
const ASK_WITHIN: Duration = Duration::from_secs(15);

/// Makes this node follow `new_master` (its leasegate's address), asking
/// until it does, the demotion changes, or [`ASK_WITHIN`] has passed.
pub(super) async fn follow_new_master(ctx: Arc<ControlContext>, new_master: String) {
    let Some((host, port)) = new_master.rsplit_once(':') else {
        return;
    };
    let give_up = Instant::now() + ASK_WITHIN;
    let mut refused = String::new();
    while Instant::now() < give_up && !ctx.shutdown.is_cancelled() {
        let still_demoted_toward_it = ctx
            .role
            .demotion()
            .and_then(|d| d.new_master.clone())
            .is_some_and(|m| *m == *new_master);
        if !still_demoted_toward_it {
            return;
        }
        let mut own = OwnNode::default();
        match own.role(&ctx).await.as_deref() {
            Some("master") => match replicaof(&ctx, host, port).await {
                Ok(()) => {
                    info!(new_master = %new_master, "this old master's node follows the new master");
                    return;
                }
                Err(e) => refused = e,
            },
            // It follows someone (the new master's leasegate made it, or
            // Sentinel): nothing to do.
            Some(_) => return,
            None => refused = "the node does not answer".into(),
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
    let hint = if refused.contains("NOPERM") {
        "; backend.user needs +replicaof (docs/sentinel.md, ACL users)"
    } else {
        ""
    };
    warn!(new_master = %new_master, last = %refused, "this old master's node did not follow the new master within {} s; it is asked again at the next poll that finds it so. Meanwhile its writes are refused and Sentinel is shown it as the new master's replica with its link down (so Sentinel does not convert it){hint}", ASK_WITHIN.as_secs());
}

/// `REPLICAOF host port` on this leasegate's own node connection.
async fn replicaof(ctx: &ControlContext, host: &str, port: &str) -> Result<(), String> {
    let timeout = ctx.config.load().backend.connect_timeout;
    let mut conn = crate::control::own_node::open_own_node(ctx).await?;
    tokio::time::timeout(timeout, super::announce_before_following(ctx, &mut conn))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    tokio::time::timeout(timeout, conn.call(&["REPLICAOF", host, port]))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
        .map(|_| ())
        .map_err(|e| e.to_string())
}
