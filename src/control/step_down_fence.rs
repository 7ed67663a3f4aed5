//! The old master's side of a controller's switch: its topology making
//! this node a replica waits until the master it names has this node's
//! writes ([`crate::guard::gate`] holds it, `Role::step_down_fence`).
//!
//! kvrocks-controller 1.2.0 pushes a switch to each node at its next probe
//! of it, in no set order. The new master's leasegate holds the push that
//! promotes its node until the old master is paused and caught up with
//! ([`super::fence`]), but it can check that only while the old master's
//! node is still master. When the push reaches the old master first —
//! after its poll has already revoked its lease, so no write is taken
//! here any more — its node becomes a replica of a node that is itself
//! still a replica and lacks this node's last acknowledged writes; the new
//! master's fence then finds this node "not master" and lets the promotion
//! go on, and this node's next sync from it discards those writes.
//! Walkthroughs 24 and 25 lost 309 and 15,205 acknowledged writes that way.
//!
//! So the push is held here while this node's node is master, until the
//! master it names reports an offset at least this node's (it replicates
//! from here until its own push comes), or reports itself master already
//! (its promotion fenced this node first, [`super::fence`]). Where that
//! does not come within [`BOUND`], the push is refused (`-TRYAGAIN`) and
//! the controller sends it again at its next probe: the node stays master
//! without a lease, which takes no write, and keeps the writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::own_node::{replication_of, OwnNode};
use super::ControlContext;
use crate::proxy::backend::ControlConnection;

/// How long a demoting topology is held at most for the new master to
/// catch up: it replicates from here, with this node's writes held, so a
/// healthy replica needs milliseconds. Below kvrocks-controller's 3 s
/// timeout for its push, which a held push must be answered within.
pub const BOUND: Duration = Duration::from_secs(2);
/// How often the new master's offset is read while it catches up.
const CATCH_UP_EVERY: Duration = Duration::from_millis(2);
/// How often a connection to the new master's leasegate is tried again.
const RECONNECT_EVERY: Duration = Duration::from_millis(50);

/// Serves the step-down fence until shutdown.
pub async fn serve(ctx: Arc<ControlContext>) {
    while let Some(request) = ctx.role.step_down_fence.next_request(&ctx.shutdown).await {
        let started = Instant::now();
        let deadline = request
            .until
            .checked_sub(Duration::from_millis(50))
            .unwrap_or(request.until);
        let nodes = request.topology.as_ref().map(|(nodes, _)| nodes.as_str());
        match new_master_has_this_nodes_writes(&ctx, nodes.unwrap_or(""), deadline).await {
            Ok(why) => {
                info!(
                    why = %why,
                    held_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "the controller's topology making this node a replica goes to the node"
                );
                ctx.role.step_down_fence.settle();
            }
            Err(why) => {
                warn!(why = %why, "the controller's topology making this node a replica is refused; the controller sends it again");
                ctx.role.step_down_fence.refuse(why);
            }
        }
    }
}

/// `Ok(why)` once the topology may go to the node (nothing here is
/// missing at the new master, or nothing here can be), `Err(why)` at
/// `deadline` if the new master still lacks some of this node's writes.
async fn new_master_has_this_nodes_writes(
    ctx: &ControlContext,
    nodes: &str,
    deadline: Instant,
) -> Result<String, String> {
    let Some(me) = ctx.gate.lease().node_id() else {
        return Ok("this node's id is unknown".into());
    };
    let Some(new_master) = crate::kvrocks::topology::master_of(nodes, &me) else {
        return Ok("the topology names no master for this node".into());
    };
    let config = ctx.config.load_full();
    let timeout = config.connect_timeout();
    let login = config.peer_control_login();
    let peer = ctx.peer_tls();
    let mut own = OwnNode::default();
    let mut theirs: Option<ControlConnection> = None;
    loop {
        // This node's offset first, then the new master's: every write
        // this node's node took before the first read is at the new
        // master when its offset is as high.
        let mine = match own.replication(ctx).await {
            Some(r) if r.role.as_deref() == Some("master") => r.offset.unwrap_or(0),
            Some(r) => {
                return Ok(format!(
                    "this node's node is not master (role {}): it took no write the new master may lack",
                    r.role.as_deref().unwrap_or("unknown")
                ));
            }
            None => return Ok("this node's node does not answer".into()),
        };
        let last = match theirs.as_mut() {
            None => {
                match ControlConnection::open_leasegate(
                    &new_master,
                    peer.as_deref(),
                    login.as_ref(),
                    timeout,
                )
                .await
                {
                    Ok(c) => {
                        theirs = Some(c);
                        continue;
                    }
                    Err(e) => format!("cannot reach the new master {new_master}: {e}"),
                }
            }
            Some(conn) => match replication_of(conn).await {
                Ok(r) if r.role.as_deref() == Some("master") => {
                    return Ok(format!(
                        "the new master {new_master} is master already (its promotion fenced this node)"
                    ));
                }
                Ok(r) if r.offset.unwrap_or(0) >= mine => {
                    return Ok(format!(
                        "the new master {new_master} has this node's writes (offset {} >= {mine})",
                        r.offset.unwrap_or(0)
                    ));
                }
                Ok(r) => format!(
                    "the new master {new_master} is at offset {}, this node at {mine}",
                    r.offset.unwrap_or(0)
                ),
                Err(e) => {
                    theirs = None;
                    format!("the new master {new_master}: {e}")
                }
            },
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{last}: some writes this node acknowledged are not there yet"
            ));
        }
        let pause = if theirs.is_some() {
            CATCH_UP_EVERY
        } else {
            RECONNECT_EVERY
        };
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
