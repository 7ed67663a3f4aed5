//! Following a switch the controller made on its own.
//!
//! kvrocks-controller moves a shard's master without leasegate's failover
//! too: its failover API called directly (as operators and scripts do), or
//! its automatic failover when a master stops answering its probes. 1.2.0
//! then answers at once and pushes the new topology to the nodes 1–1.5 s
//! later, so the two leasegates' polls see the new version long before the
//! nodes do. Left alone, the old master's leasegate would fence its writes
//! at its next poll while the new master's node stays a replica until the
//! push: a second of client errors. Instead the poller ([`super::poll`])
//! follows the switch:
//!
//! * **Step down** ([`step_down`], the old master's leasegate): writes are
//!   held, not failed; those already forwarded are answered (under the
//!   lease this node still holds); then the lease is revoked and the node
//!   marked demoted, with the new master's leasegate as the hand-over
//!   target. The held writes move there once that leasegate holds the
//!   lease (its `INFO leasegate`, asked every few milliseconds).
//! * **Take over** ([`take_over`], the new master's leasegate): its node is
//!   brought to the controller's topology by leasegate itself
//!   (`CLUSTERX SETNODES` with the controller's lines at the controller's
//!   version; the controller's own push of the same version is then a
//!   no-op), but only once the old master is **fenced at that version** (its
//!   leasegate reports `lease_valid:0` and `controller_version` at least
//!   that version, so no older answer can renew it) and this node has
//!   **caught up** with the old master's offset: nothing the old master
//!   acknowledged is missing here. Until the node is at the controller's
//!   version, the poll grants no lease.
//!
//! Both are bounded by `controller.switch_timeout_ms`. Past it, held writes
//! are released (refused where they land until a lease exists, as
//! before), and a take-over that could not establish its two conditions
//! (the old master dead or cut off) pushes nothing: the controller's own
//! push decides. The lease still comes only from the controller's answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;
use tracing::{info, warn};

use super::failover::{catch_up, info_replication, CatchUp};
use super::ControlContext;
use crate::guard::gate::PROMOTION_LEASE_WAIT;
use crate::guard::pause::{OnDemote, PauseMode, PauseOwner};
use crate::guard::role::{Demotion, Source};
use crate::kvrocks::admin_api::FailoverState;
use crate::kvrocks::controller::Cluster;
use crate::proxy::backend::{BackendError, ControlConnection};

/// How often another leasegate is asked for its `INFO leasegate`.
const ASK_EVERY: Duration = Duration::from_millis(2);
/// How often a connection to it is tried again when one could not be
/// opened or set up: one that refuses (its node down) was asked ~250
/// times a second, a connection each (walkthrough 18).
const RECONNECT_EVERY: Duration = Duration::from_millis(50);
/// How long the poll waits for the old master's leasegate to say whether
/// its failover runs, before it holds the writes here anyway.
const ASK_FAILOVER_WITHIN: Duration = Duration::from_millis(100);
/// How long writes forwarded before a step-down's hold get to be answered
/// under the lease; one still unanswered then gets the unknown-outcome
/// error, as it would have without the hold.
const DRAIN: Duration = Duration::from_millis(500);

/// This node was master, and the controller's topology now names
/// `new_master` (its leasegate's address) master of the shard: revoke the
/// lease without failing a client (module doc).
pub(super) async fn step_down(ctx: &ControlContext, reason: &str, new_master: String) {
    let config = ctx.config.load_full();
    let bound = config.controller.switch_timeout;
    let started = Instant::now();
    let deadline = started + bound;
    let role = &ctx.role;
    let pause = ctx.gate.pause();
    let target: Arc<str> = Arc::from(new_master.as_str());
    let hold = role.on_demote() == OnDemote::Forward && ctx.gate.lease().write_allowed();
    // A pause already on (the controller's own, a failover's) holds the
    // writes and is left to whoever set it.
    let paused_here = hold && !pause.is_paused();
    if hold {
        role.prepare_handover(Some(Arc::clone(&target)));
    }
    if paused_here {
        pause.pause_as(bound, PauseMode::Write, Some(PauseOwner::StepDown));
    }
    if hold {
        let drained = (started + DRAIN).min(deadline);
        while role.writes_in_flight() > 0 && Instant::now() < drained {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    role.revoke(reason, Source::Poll);
    role.demote(Demotion {
        new_master: Some(Arc::clone(&target)),
    });
    if !paused_here {
        role.prepare_handover(None);
        return;
    }
    let peer = ctx.peer_tls();
    match until_leasegate(
        (&new_master, peer.as_deref()),
        config.connect_timeout(),
        deadline,
        |f| field(f, "lease_valid") == Some("1"),
        || false,
    )
    .await
    {
        Ok(_) => info!(
            new_master = %new_master,
            stall_ms = started.elapsed().as_secs_f64() * 1000.0,
            "the controller switched the shard: writes held here go to the new master's leasegate, which holds the lease"
        ),
        Err(last) => {
            warn!(
                new_master = %new_master,
                timeout_ms = bound.as_millis() as u64,
                last = %last,
                "the new master's leasegate held no lease within controller.switch_timeout_ms; held writes go to it now (refused there until it holds one)"
            );
            refuse_if_handed_back(ctx, &new_master).await;
        }
    }
    pause.end_owned(PauseOwner::StepDown);
    role.prepare_handover(None);
}

/// Whether writes may be handed to the leasegate at `addr`: not while it
/// is demoted itself and holds no lease, for it hands them on (back here,
/// as a rule: its poll has not seen the switch yet). Two leasegates
/// demoted toward each other bounced every session between them, a new
/// connection per hop: thousands of sockets within seconds while the
/// controller was frozen right after a switch (walkthrough 8). `true`
/// where it cannot be asked within [`ASK_FAILOVER_WITHIN`] (the hand-over
/// reports what it finds).
pub(super) async fn takes_hand_over(ctx: &ControlContext, addr: &str) -> bool {
    match leasegate_info_within(ctx, addr).await {
        Some(fields) => {
            !(field(&fields, "demoted") == Some("1") && field(&fields, "lease_valid") == Some("0"))
        }
        None => true,
    }
}

/// Where the leasegate at `new_master` would hand writes back, this node's
/// writes are refused (`-READONLY ... the new master is unknown`) instead
/// of being handed over; the poll names the new master again once it
/// takes them ([`takes_hand_over`]).
pub(super) async fn refuse_if_handed_back(ctx: &ControlContext, new_master: &str) {
    if takes_hand_over(ctx, new_master).await {
        return;
    }
    warn!(
        new_master,
        "the new master's leasegate is demoted itself and holds no lease (it would hand the writes back): writes are refused here until it takes them"
    );
    ctx.role.demote(Demotion { new_master: None });
}

/// `INFO leasegate` of the leasegate at `addr`, within
/// [`ASK_FAILOVER_WITHIN`] (`None`: no answer in time).
async fn leasegate_info_within(
    ctx: &ControlContext,
    addr: &str,
) -> Option<HashMap<String, String>> {
    let config = ctx.config.load();
    let timeout = config.connect_timeout().min(ASK_FAILOVER_WITHIN);
    let login = config.backend.login();
    let peer = ctx.peer_tls();
    let asked = async {
        let mut conn =
            ControlConnection::open_leasegate(addr, peer.as_deref(), login.as_ref(), timeout)
                .await
                .map_err(|e| e.to_string())?;
        conn.leasegate_info().await
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(fields)) => Some(fields),
        _ => None,
    }
}

/// The controller's topology demoting this node passed through the Gate,
/// which held writes while it went to the node ([`crate::guard::gate`]):
/// they go to the new master once its leasegate holds the lease (at most
/// `controller.switch_timeout_ms`).
pub(super) async fn release_to_new_master(ctx: &ControlContext) {
    let config = ctx.config.load_full();
    let started = Instant::now();
    if let Some(to) = ctx.role.demotion().and_then(|d| d.new_master.clone()) {
        let deadline = started + config.controller.switch_timeout;
        let peer = ctx.peer_tls();
        let seen = until_leasegate(
            (&to, peer.as_deref()),
            config.connect_timeout(),
            deadline,
            |f| field(f, "lease_valid") == Some("1"),
            || false,
        )
        .await;
        match seen {
            Ok(_) => {
                info!(new_master = %to, stall_ms = started.elapsed().as_secs_f64() * 1000.0, "the controller's topology made this node a replica: held writes go to the new master's leasegate, which holds the lease")
            }
            Err(last) => {
                warn!(new_master = %to, last = %last, "the new master's leasegate held no lease within controller.switch_timeout_ms; held writes go to it now");
                refuse_if_handed_back(ctx, &to).await;
            }
        }
    }
    // A step-down's hold, if one is in force (the pause's owner says).
    ctx.gate.pause().end_owned(PauseOwner::StepDown);
}

/// What [`take_over`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TakeOver {
    /// The node is not in cluster mode: there is no topology to follow.
    Ready,
    /// The node is at the controller's version (or a later one).
    AtVersion,
    /// Leasegate brought the node to the controller's version just now.
    Pushed,
    /// The node is not at the controller's topology yet; why.
    NotYet(String),
}

/// Whether the node is at a newer cluster topology than `version`
/// (`CLUSTERX VERSION`): then an answer of the controller at `version` is
/// older than what the node has accepted since (a failover's push), and
/// must not promote anything. `false` when the node does not say (not in
/// cluster mode, or unreachable: the take-over decides).
pub(super) async fn node_is_past(ctx: &ControlContext, version: u64) -> bool {
    let timeout = ctx.config.load().connect_timeout();
    let Ok(mut node) = ctx.open_node(timeout).await else {
        return false;
    };
    match node.call(&["CLUSTERX", "VERSION"]).await {
        Ok(reply) => integer(&reply).is_some_and(|at| at > version as i64),
        Err(_) => false,
    }
}

/// Whether the old master's leasegate at `old_master` runs a failover
/// (its `INFO leasegate` reports a running `cluster_failover_state`). That
/// failover promotes this node and grants its lease itself, and in a timed
/// one the controller switched before its pause (`--cluster-timing`): the
/// old master still acknowledges writes under its lease. Writes sent here
/// meanwhile go on to it (this node's demotion), to be handed back with its
/// sessions, rather than wait here from the controller's switch to the
/// failover's end (0.2–0.4 s seen). `false` where it cannot be asked
/// within [`ASK_FAILOVER_WITHIN`] (a frozen old master: the writes are
/// held here, as before).
pub(super) async fn old_master_fails_over(ctx: &ControlContext, old_master: Option<&str>) -> bool {
    let Some(old_master) = old_master else {
        return false;
    };
    leasegate_info_within(ctx, old_master)
        .await
        .is_some_and(|fields| {
            field(&fields, "cluster_failover_state").is_some_and(FailoverState::names_a_running_one)
        })
}

/// The controller's topology `cluster` names this node master, but the
/// lease is not valid: make sure the node is at that topology, bringing it
/// there when the old master (its leasegate at `old_master`) is fenced and
/// caught up with (module doc).
pub(super) async fn take_over(
    ctx: &ControlContext,
    cluster: &Cluster,
    old_master: Option<&str>,
) -> TakeOver {
    let version = cluster.version;
    let config = ctx.config.load_full();
    let timeout = config.connect_timeout();
    let login = config.backend.login();
    let mut node = match ctx.open_node(timeout).await {
        Ok(c) => c,
        Err(e) => return TakeOver::NotYet(format!("cannot reach the node: {e}")),
    };
    let at = match node.call(&["CLUSTERX", "VERSION"]).await {
        Ok(reply) => match integer(&reply) {
            Some(v) => v,
            None => return TakeOver::Ready,
        },
        // Not in cluster mode (Redis, standalone Kvrocks): nothing to follow.
        Err(BackendError::Reply(_)) => return TakeOver::Ready,
        Err(e) => return TakeOver::NotYet(format!("CLUSTERX VERSION: {e}")),
    };
    if at >= version as i64 {
        return TakeOver::AtVersion;
    }
    // A poller that never saw the topology before this one (an upgrade's
    // successor, a restarted leasegate) does not know the old master: the
    // master the node follows is it, where the controller lists that
    // address (the checks below make sure it is a leasegate in front of a
    // master). Left unknown, the switch waited for the controller's own
    // push, up to its next check a second later, with the old master's
    // writes held meanwhile (walkthrough 30: 0.7 and 0.97 s when an
    // upgrade came at the switch).
    let me = ctx.role.lease().node_id();
    let followed = match old_master {
        Some(_) => None,
        None => info_replication(&mut node)
            .await
            .ok()
            .filter(|r| r.is_replica())
            .and_then(|r| r.master)
            .filter(|m| cluster.id_at(m).is_some_and(|id| Some(id) != me.as_deref())),
    };
    let Some(old_master) = old_master.or(followed.as_deref()) else {
        return TakeOver::NotYet(format!(
            "the node is at topology version {at}, below the controller's {version}, and the old master is unknown: the controller's push decides"
        ));
    };
    let deadline = Instant::now() + config.controller.switch_timeout;
    let peer = ctx.peer_tls();
    // The controller's own push of this topology reaching the node ends
    // the wait: its promotion fence checked the old master, and the node
    // is at the version now. Waited out, it kept this poller from granting
    // the lease for switch_timeout_ms while the node was master already,
    // and the old master's writes, held until this node held the lease,
    // with it (walkthrough 29: 2 s).
    let pushed = || ctx.role.node_topology() >= version;
    let fenced = until_leasegate(
        (old_master, peer.as_deref()),
        timeout,
        deadline,
        |f| {
            field(f, "lease_valid") == Some("0")
                && field(f, "controller_version")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v >= version)
        },
        pushed,
    )
    .await;
    let fenced = match fenced {
        Ok(fields) => fields,
        Err(Unseen::Superseded) => return TakeOver::AtVersion,
        Err(Unseen::TimedOut(last)) => {
            return TakeOver::NotYet(format!(
                "the old master's leasegate {old_master} did not report itself fenced at version {version} ({last}): the controller's push decides"
            ))
        }
    };
    // Nothing the old master acknowledged may be missing here.
    let caught_up = async {
        let mut old =
            ControlConnection::open_leasegate(old_master, peer.as_deref(), login.as_ref(), timeout)
                .await
                .map_err(|e| format!("cannot reach the old master {old_master}: {e}"))?;
        // Its node's own answer: a master (a leasegate whose node is down
        // may serve a new client at the new master, this very node).
        let theirs = info_replication(&mut old)
            .await
            .map_err(|e| e.to_string())?;
        if theirs.is_replica() || theirs.role.as_deref() != Some("master") {
            return Err(format!(
                "the old master's leasegate {old_master} does not reach a master (role {})",
                theirs.role.as_deref().unwrap_or("unknown")
            ));
        }
        let target = theirs.offset.unwrap_or(0);
        match catch_up(&mut node, target, deadline).await {
            Ok(CatchUp::Reached) => Ok(target),
            Ok(CatchUp::Behind(seen)) => Err(format!(
                "the node did not reach the old master's offset {target} (at {seen:?})"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
    .await;
    let (target, old_state) = match caught_up {
        Ok(t) => (t, "the old master is fenced and caught up with"),
        // Its leasegate, fenced, answered from a connection waiting for
        // its node (`node_down`), and the node does not answer now
        // either: it acknowledges nothing, and nothing more can come from
        // it (what it acknowledged before it died and no replica had is
        // lost with it, as without leasegate). Waited out, the controller's
        // push decided, at its next check of this node: about a second of
        // each crash failover (walkthrough 35).
        Err(e) if field(&fenced, "node_down") == Some("1") => {
            info!(old_master = %old_master, error = %e, "the old master is fenced and its node is down: nothing to catch up with");
            (0, "the old master is fenced and its node is down")
        }
        Err(e) => return TakeOver::NotYet(format!("{e}: the controller's push decides")),
    };
    let text = match cluster.setnodes_text() {
        Ok(t) => t,
        Err(e) => return TakeOver::NotYet(format!("the controller's topology: {e}")),
    };
    let started = Instant::now();
    let version_arg = version.to_string();
    match node
        .call(&["CLUSTERX", "SETNODES", &text, &version_arg])
        .await
    {
        Ok(_) => {
            info!(
                version,
                offset = target,
                promote_ms = started.elapsed().as_secs_f64() * 1000.0,
                old_master = old_state,
                "the controller named this node master: its topology applied here"
            );
            ctx.role.node_accepted_topology(version);
            ctx.role.clear_demotion();
            // The node is master now; writes wait for the lease (the next
            // poll grants it) rather than being fenced in between.
            if !ctx.gate.lease().write_allowed() {
                let hold = ctx.role.step_down_hold(PROMOTION_LEASE_WAIT);
                ctx.role.await_lease(Instant::now() + hold);
            }
            TakeOver::Pushed
        }
        Err(e) => TakeOver::NotYet(format!("CLUSTERX SETNODES at version {version}: {e}")),
    }
}

/// Why [`until_leasegate`] stopped asking before its answer came.
#[derive(Debug)]
enum Unseen {
    /// The deadline passed; what was last seen.
    TimedOut(String),
    /// What was waited for no longer matters (`superseded` said so).
    Superseded,
}

impl std::fmt::Display for Unseen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unseen::TimedOut(last) => f.write_str(last),
            Unseen::Superseded => f.write_str("no longer waited for"),
        }
    }
}

/// Asks the leasegate at `addr` for its `INFO leasegate` until `done` says
/// yes (the fields that did), `deadline` passes or `superseded` says the
/// answer no longer matters (checked between asks). Without a login: a
/// leasegate answers that section to anyone, also while its node is down,
/// when it holds a login for the node (walkthrough 35: a new master's
/// poll, refused by the dead old master's leasegate 21 times a run,
/// waited for the controller's push).
async fn until_leasegate(
    (addr, peer): (&str, Option<&crate::proxy::backend::PeerTls>),
    timeout: Duration,
    deadline: Instant,
    done: impl Fn(&HashMap<String, String>) -> bool,
    superseded: impl Fn() -> bool,
) -> Result<HashMap<String, String>, Unseen> {
    let mut conn: Option<ControlConnection> = None;
    let mut last = "not asked".to_string();
    loop {
        if superseded() {
            return Err(Unseen::Superseded);
        }
        if conn.is_none() {
            match ControlConnection::open_leasegate(addr, peer, None, timeout).await {
                Ok(c) => conn = Some(c),
                Err(e) => last = format!("cannot reach it: {e}"),
            }
        }
        if let Some(c) = conn.as_mut() {
            match c.leasegate_info().await {
                Ok(fields) if done(&fields) => return Ok(fields),
                Ok(fields) => {
                    last = format!(
                        "lease_valid:{} controller_version:{}",
                        field(&fields, "lease_valid").unwrap_or("?"),
                        field(&fields, "controller_version").unwrap_or("?")
                    )
                }
                Err(e) => {
                    last = e;
                    conn = None;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Unseen::TimedOut(last));
        }
        let pause = if conn.is_some() {
            ASK_EVERY
        } else {
            RECONNECT_EVERY
        };
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

/// An integer reply, or a bulk string holding one (`CLUSTERX VERSION`).
fn integer(reply: &OwnedFrame) -> Option<i64> {
    match reply {
        OwnedFrame::Integer(i) => Some(*i),
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            std::str::from_utf8(b).ok()?.trim().parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_reads_from_either_form() {
        assert_eq!(integer(&OwnedFrame::Integer(7)), Some(7));
        assert_eq!(integer(&OwnedFrame::BulkString(b"-1".to_vec())), Some(-1));
        assert_eq!(integer(&OwnedFrame::BulkString(b"x".to_vec())), None);
        assert_eq!(integer(&OwnedFrame::Null), None);
    }
}
