//! Fencing the old master before a controller's topology promotes this
//! node ([`crate::guard::promotion`]).
//!
//! kvrocks-controller 1.2.0 answers its failover call at once and pushes
//! the new topology to each node at its next probe of it, in no set order.
//! Its push may reach this node (the new master) before the old master's
//! leasegate has seen the switch in a poll (every second by default): this
//! node would be promoted at its next replication tick while the old master
//! goes on acknowledging writes that never reach it, lost once the old
//! master follows. Measured before this fence: 11,352 acknowledged writes
//! lost in one such failover (`tests/real_failover.rs`).
//!
//! So the Gate holds a topology that promotes this node while it holds no
//! lease, and this module fences the old master (the master this node's
//! node follows, a leasegate as the controller registers nodes):
//!
//! 1. its writes are paused (`CLIENT PAUSE <ms> WRITE` on a control
//!    connection: the writes it already forwarded are answered first), unless
//!    its leasegate reports itself fenced at that version already;
//! 2. this node reaches the old master's offset: nothing it acknowledged is
//!    missing here;
//! 3. the promotion goes to the node; once the node is master, the same
//!    topology goes to the old master through its leasegate (which revokes
//!    its lease and hands its held writes here), and its pause ends.
//!
//! Where the old master's writes cannot all be here (its node ahead of this
//! one when the bound comes) the promotion is refused: the controller
//! sends it again at its next probe. So is it while the old master runs a
//! failover of its own and still holds its lease (a timed cluster failover
//! has the controller switch before its pause, and promotes this node
//! itself once it has fenced its own). Where the old master's leasegate
//! cannot be reached, or its node does not answer once its writes are
//! paused there (the pause outlasts its lease), the promotion waits until
//! any lease it holds has run out (`controller.ttl_ms` +
//! `lease.safety_margin_ms`); where nothing listens there, or its leasegate
//! says it is fenced at the topology's version, nothing can be
//! acknowledged there and the promotion goes on at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::own_node::{replication_of, OwnNode};
use super::ControlContext;
use crate::guard::promotion::FenceRequest;
use crate::kvrocks::admin_api::FailoverState;
use crate::proxy::backend::{BackendError, ControlConnection};

/// How long the old master's writes are paused at least: until this node
/// is master and the old master follows it; should that fail, the pause ends
/// by itself, after the old master's lease ran out or its poll demoted it.
const FENCE_PAUSE: Duration = Duration::from_secs(8);
/// How long the promoted node may take to report itself master before the
/// old master is left to its own pause.
const PROMOTED_WITHIN: Duration = Duration::from_secs(5);
/// How often this node's offset is read while it catches up.
const CATCH_UP_EVERY: Duration = Duration::from_millis(2);

/// How long a promoting topology is held at most: the wait for an
/// unreachable old master's lease, and room for the catch-up.
pub fn bound(config: &crate::config::Config) -> Duration {
    lease_bound(config) + Duration::from_secs(2)
}

/// How long after the switch a lease the old master held may last.
fn lease_bound(config: &crate::config::Config) -> Duration {
    Duration::from_millis(config.controller.ttl_ms + config.lease.safety_margin_ms)
}

/// Serves the promotion fence for a controller's topologies until shutdown.
pub async fn serve(ctx: Arc<ControlContext>) {
    while let Some(request) = ctx.role.promotion_fence.next_request(&ctx.shutdown).await {
        let started = Instant::now();
        let outcome = fence_old_master(&ctx, &request, started).await;
        match outcome {
            Fenced::Go(why) => {
                info!(
                    why = %why,
                    held_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "the controller's topology naming this node master goes to the node"
                );
                ctx.role.promotion_fence.settle();
            }
            Fenced::Paused(old) => {
                info!(
                    old_master = %old.addr,
                    held_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "old master paused and caught up with: the controller's topology naming this node master goes to the node"
                );
                ctx.role.promotion_fence.settle();
                tokio::spawn(hand_over_old_master(Arc::clone(&ctx), old, request));
            }
            Fenced::Refused(why) => {
                warn!(why = %why, "the controller's topology naming this node master is refused; the controller sends it again");
                ctx.role.promotion_fence.refuse(why);
            }
        }
    }
}

/// What the fence came to.
enum Fenced {
    /// The promotion goes on: nothing to fence, and why.
    Go(String),
    /// The old master's writes are paused and this node has them all.
    Paused(OldMaster),
    /// The promotion is refused, and why.
    Refused(String),
}

/// The old master's leasegate, paused by this fence (`paused`) or fenced
/// already.
struct OldMaster {
    addr: String,
    conn: ControlConnection,
    paused: bool,
}

impl OldMaster {
    /// Ends the pause this fence began there (if it did); `true` when the
    /// old master answered. A failure is logged: the pause ends by itself.
    async fn unpause(&mut self) -> bool {
        if !std::mem::take(&mut self.paused) {
            return false;
        }
        match self.conn.call(&["CLIENT", "UNPAUSE"]).await {
            Ok(_) => true,
            Err(e) => {
                warn!(old_master = %self.addr, error = %e, "CLIENT UNPAUSE at the old master failed; its pause ends by itself");
                false
            }
        }
    }
}

async fn fence_old_master(
    ctx: &ControlContext,
    request: &FenceRequest,
    started: Instant,
) -> Fenced {
    let version = request.topology.as_ref().map_or(0, |(_, v)| *v);
    let config = ctx.config.load_full();
    let timeout = config.connect_timeout();
    let login = config.peer_control_login();
    let mut own = OwnNode::default();
    let addr = match own.followed_master(ctx).await {
        Ok(addr) => addr,
        Err(why) => return Fenced::Go(why.into()),
    };
    let peer = ctx.peer_tls();
    let conn =
        ControlConnection::open_leasegate(&addr, peer.as_deref(), login.as_ref(), timeout).await;
    let mut conn = match conn {
        Ok(c) => c,
        Err(BackendError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Fenced::Go(format!("nothing listens at the old master {addr}"));
        }
        Err(e) => {
            // A leasegate whose node is down holds the login for its node
            // (and refuses it with what follows it), but answers its own
            // state: fenced at this version, it acknowledges nothing more
            // (its lease revoked, its node silent), and nothing is to wait
            // for.
            if let Some(info) = state_without_login(&addr, peer.as_deref(), timeout).await {
                if fenced_at(&info, version) {
                    return Fenced::Go(format!(
                        "the old master {addr} is fenced at version {version}, and cannot be logged in to ({e}): its node is down"
                    ));
                }
            }
            return wait_out_lease(&config, started, request, format!("old master {addr}: {e}"))
                .await;
        }
    };
    // A node followed directly (not through its leasegate) has no lease
    // to fence (Kvrocks answers `INFO leasegate` with nothing).
    let info = match conn.leasegate_info().await {
        Ok(info) if info.contains_key("lease_valid") => info,
        Ok(_) => return Fenced::Go(format!("the old master {addr} is not behind a leasegate")),
        Err(e) => {
            return Fenced::Go(format!(
                "the old master {addr} is not behind a leasegate ({e})"
            ));
        }
    };
    let field = |name: &str| info.get(name).map(String::as_str);
    // A failover from the old master under way, its lease still held:
    // timed in cluster mode, it had the controller switch before its
    // pause, and fences its node and promotes this one itself, at the
    // moment it planned. Pausing it here would stall its writes for an
    // untimed promotion; the controller sends its topology again.
    if field("lease_valid") == Some("1")
        && field("cluster_failover_state").is_some_and(FailoverState::names_a_running_one)
    {
        return Fenced::Refused(format!(
            "the old master {addr} runs a failover and still holds its lease: it fences itself and promotes this node"
        ));
    }
    let fenced_at_version = fenced_at(&info, version);
    if !fenced_at_version {
        let ms = FENCE_PAUSE
            .max(lease_bound(&config))
            .as_millis()
            .to_string();
        if let Err(e) = conn.call(&["CLIENT", "PAUSE", &ms, "WRITE"]).await {
            let why = format!("old master {addr}: CLIENT PAUSE: {e}");
            return wait_out_lease(&config, started, request, why).await;
        }
    }
    let mut old = OldMaster {
        addr,
        conn,
        paused: !fenced_at_version,
    };
    // Its node's own answer: the offset nothing past which was acknowledged.
    let theirs = match replication_of(&mut old.conn).await {
        Ok(r) if r.role.as_deref() == Some("master") => r,
        // Its node is a replica and acknowledges nothing: the pause there
        // is ended (its sessions go on as after a node failure).
        Ok(r) => {
            old.unpause().await;
            return Fenced::Go(format!(
                "the old master {} is not master (role {})",
                old.addr,
                r.role.as_deref().unwrap_or("unknown")
            ));
        }
        // Its node did not answer (slow, frozen, its connection gone): it
        // may be master still, its leasegate holding a lease. The pause
        // stays (it outlasts that lease), and the promotion waits until the
        // lease has run out. (Ending the pause here let the old master
        // acknowledge writes beside the promoted node once its node
        // answered again.)
        Err(e) => {
            let why = format!("the old master {}'s node: {e}", old.addr);
            // Its leasegate said it is fenced at this version (not paused
            // here): it acknowledges nothing (its node down, a crash
            // failover), and there is nothing to wait for.
            if !old.paused {
                return Fenced::Go(format!("{why}; it is fenced at version {version}"));
            }
            drop(old);
            return wait_out_lease(&config, started, request, why).await;
        }
    };
    let target = theirs.offset.unwrap_or(0);
    let deadline = request
        .until
        .checked_sub(Duration::from_millis(100))
        .unwrap_or(request.until);
    loop {
        let at = own.offset(ctx).await;
        if at >= target {
            return Fenced::Paused(old);
        }
        if Instant::now() >= deadline {
            old.unpause().await;
            return Fenced::Refused(format!(
                "this node is at offset {at}, the old master {} at {target}: some of its acknowledged writes are not here yet",
                old.addr
            ));
        }
        tokio::time::sleep(CATCH_UP_EVERY).await;
    }
}

/// Whether a leasegate's `INFO leasegate` says it is fenced at `version`:
/// its lease revoked by a controller topology at least that new.
fn fenced_at(info: &std::collections::HashMap<String, String>, version: u64) -> bool {
    info.get("lease_valid").map(String::as_str) == Some("0")
        && info
            .get("controller_version")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v >= version)
}

/// The `INFO leasegate` of the leasegate at `addr`, asked without a login
/// (it answers that section itself, to anyone); `None` where it does not
/// answer it.
async fn state_without_login(
    addr: &str,
    peer: Option<&crate::proxy::backend::PeerTls>,
    timeout: Duration,
) -> Option<std::collections::HashMap<String, String>> {
    let mut conn = ControlConnection::open_leasegate(addr, peer, None, timeout)
        .await
        .ok()?;
    conn.leasegate_info()
        .await
        .ok()
        .filter(|info| info.contains_key("lease_valid"))
}

/// The old master's leasegate cannot be reached or paused: it may go on
/// acknowledging writes until its lease runs out, which began before the
/// controller switched, so at most `ttl_ms` + margin from now.
async fn wait_out_lease(
    config: &crate::config::Config,
    started: Instant,
    request: &FenceRequest,
    why: String,
) -> Fenced {
    let until = (started + lease_bound(config)).min(request.until);
    warn!(why = %why, wait_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64, "the old master cannot be paused: the promotion waits until any lease it holds has run out");
    tokio::time::sleep_until(until.into()).await;
    Fenced::Go(format!("{why}; its lease has run out"))
}

/// Once this node reports itself master, brings the old master to the same
/// topology through its leasegate (its lease is revoked, its held writes
/// come here) and ends its pause. Should that fail, the pause ends by
/// itself, after the old master's lease ran out or its poll demoted it.
async fn hand_over_old_master(ctx: Arc<ControlContext>, mut old: OldMaster, request: FenceRequest) {
    let promoted = OwnNode::default().until_master(&ctx, PROMOTED_WITHIN).await;
    if !promoted {
        warn!(old_master = %old.addr, "this node did not become master in time; the old master's pause ends by itself");
        return;
    }
    let Some((nodes, version)) = request.topology else {
        return;
    };
    let version = version.to_string();
    match old
        .conn
        .call(&["CLUSTERX", "SETNODES", &nodes, &version])
        .await
    {
        Ok(_) => {}
        Err(e) => {
            warn!(old_master = %old.addr, error = %e, "bringing the old master to the controller's topology failed; its pause ends by itself");
            return;
        }
    }
    if old.unpause().await {
        info!(old_master = %old.addr, version = %version, "the old master follows this node; its held writes come here");
    }
}
