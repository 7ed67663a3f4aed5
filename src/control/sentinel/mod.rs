//! Redis Sentinel as the lease's source, and Sentinel seeing nodes through
//! their leasegates.
//!
//! Every `sentinel.poll_interval_ms` leasegate asks each Sentinel in
//! `sentinel.addrs` for `SENTINEL MASTER <master_name>`, all at once, and
//! judges the answers ([`crate::kvrocks::sentinel::judge`]):
//!
//! * the Sentinels name this leasegate (`sentinel.address`) master and
//!   enough of them have heard from it recently → the lease is granted
//!   until the earliest moment a quorum of them could find it down,
//!   anchored at the instant the questions were sent;
//! * a Sentinel names another master at a config epoch at least as new →
//!   the lease is revoked at once and, where this node was master, it is
//!   demoted with that master as the sessions' new home (`pause.on_demote`);
//! * a Sentinel is failing this node over and has sent the promotion (it
//!   still names this node, flagged `failover_in_progress`, its
//!   `failover-state` past `select_slave`) → nothing is renewed and writes are held (a
//!   pause of this leasegate's own) until the Sentinels name the new
//!   master (revoked: the held writes go there) or the failover ends
//!   without one;
//! * otherwise (Sentinels unreachable, or seeing this node down or being
//!   replaced) nothing is renewed and the lease runs out.
//!
//! A node that its probe last saw as a replica is not renewed either.
//!
//! Each answered poll is the lease's pulse ([`crate::guard::lease::Lease::beat`]):
//! a leasegate whose poll has not answered for `poll_interval_ms` +
//! `timeout_ms` + [`PULSE_SLACK`] (frozen, or its control thread stalled)
//! holds writes until it does, rather than use a lease the Sentinels may
//! have moved meanwhile. The fence of a promotion ([`fence`]) waits for the
//! old master's leasegate longer than that, so an old master frozen
//! through a promotion wakes to a lapsed pulse.
//!
//! With `sentinel.announce` (the default) leasegate also makes its node
//! announce the leasegate's address to its master (`CONFIG SET
//! replica-announce-port`, and `replica-announce-ip` when `sentinel.address`
//! names an IP), so that the master's `INFO replication` — where Sentinel
//! discovers replicas — lists the replica by its leasegate, and Sentinel
//! promotes and reconfigures it through leasegate. A replica whose link
//! came up before that is made to reconnect (`CLIENT KILL TYPE master`) so
//! that its master hears the new address.

mod fence;
mod poll;
mod stale;
mod withheld;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::control::own_node::{open_own_node, replication_of};
use crate::control::ControlContext;
use crate::guard::lease::{Grant, MAX_TTL_MS};
use crate::guard::pause::{PauseMode, PauseOwner};
use crate::guard::role::{Demotion, Source};
use crate::kvrocks::sentinel::{check_deployment, judge, Judgement, MasterView};
use crate::proxy::backend::ControlConnection;
use redis_protocol::resp2::types::OwnedFrame;

/// How much longer than one poll (its interval and timeout) the lease may
/// be used without an answer: room for a busy host's scheduling.
pub const PULSE_SLACK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `renewed`, `revoked`, `withheld`, `held`.
    pub outcome: &'static str,
}

/// `leasegate_sentinel_polls_total{outcome}`.
#[derive(Debug, Default)]
pub struct SentinelMetrics {
    pub polls: Family<OutcomeLabels, Counter>,
}

impl SentinelMetrics {
    pub fn register(&self, registry: &mut Registry) {
        for outcome in ["renewed", "revoked", "withheld", "held"] {
            let _ = self.polls.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "sentinel_polls",
            "Polls of the Redis Sentinels by outcome (renewed, revoked, withheld, held: a Sentinel was failing this node over)",
            self.polls.clone(),
        );
    }

    fn count(&self, outcome: &'static str) {
        self.polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Asks the Sentinels until `ctx.shutdown`; does nothing without
/// `sentinel.addrs`. Which Sentinels, which master and this leasegate's
/// address are fixed at start; the interval, timeout and password are read
/// from the running config before each poll.
pub async fn run(ctx: Arc<ControlContext>) {
    let config = ctx.config.load_full();
    let s = &config.sentinel;
    if !s.enabled() {
        return;
    }
    let me = config.sentinel_address();
    if s.announce {
        tokio::spawn(announce(Arc::clone(&ctx), me.clone()));
    }
    ctx.role
        .promotion_fence
        .enable(crate::guard::gate::PROMOTION_FENCE_BOUND, true);
    // An old master's node that has not followed the new master yet is
    // shown to Sentinel as the new master's replica (`stale`).
    ctx.role
        .stale_master_as_replica
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(fence::serve_fences(Arc::clone(&ctx), me.clone()));
    info!(sentinels = ?s.addrs, master = %s.master_name, address = %me, interval_ms = s.poll_interval.as_millis() as u64, "taking the master lease from Redis Sentinel");
    let mut polls = poll::Polls::new(&ctx, &s.addrs, &s.master_name);
    let mut withheld = withheld::Withheld::default();
    // The Sentinels named this node master at the last poll that judged.
    let mut named = false;
    // ...at any poll since start: its node, should it be a master on its
    // own while they name another, is an old master they replaced (not a
    // node they never knew, whose data is left alone).
    let mut ever_named = false;
    // ...or its node was seen following a master at a poll since start: a
    // replica of theirs, which, restarted as a master on its own (its
    // `REPLICAOF` was never written to its config), is made to follow the
    // master they name. (Walkthrough 13: such a node was never made to,
    // and the shard could not fail over to it, planned or not.)
    let mut ever_followed = false;
    // Whether a task is making this node follow the master the Sentinels
    // name (`stale::follow_new_master`).
    let following = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The deployment is checked once, on the first answers.
    let mut checked = false;
    loop {
        let Some(poll::Answered {
            sent,
            revocations,
            answers,
            node_role,
            node_refusal,
        }) = polls.next(&ctx).await
        else {
            return;
        };
        let lease = ctx.gate.lease();
        if !checked {
            let views: Vec<&MasterView> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
            if !views.is_empty() {
                checked = true;
                let c = ctx.config.load();
                let poll_ms =
                    u64::try_from(c.sentinel.poll_interval.as_millis()).unwrap_or(u64::MAX);
                for warning in
                    check_deployment(&views, polls.sentinels(), poll_ms, c.lease.safety_margin_ms)
                {
                    warn!(%warning, "Sentinel deployment check");
                }
            }
        }
        ever_followed |= node_role.as_deref() == Some("slave");
        let judgement = judge(&answers, &me, polls.sentinels());
        let holds = matches!(judgement, Judgement::Hold { .. });
        match judgement {
            // Named, its node up but refusing leasegate's own login or
            // `INFO` (a password or ACL user not what the node has): no
            // crash to wait through, and no telling what it is; the lease
            // lapses and writes are fenced with the cause in the log.
            // (Held as for a silent node, they waited without end, the log
            // saying the node did not answer: walkthrough 37.)
            Judgement::Renew { .. } if node_refusal.is_some() => {
                withheld.poll(
                    &ctx,
                    &format!(
                        "the Sentinels name this node master, but its node refuses leasegate's own connection ({}): check backend.user and backend.password, and the commands that user may run (docs/sentinel.md, ACL users)",
                        node_refusal.as_deref().unwrap_or_default()
                    ),
                );
            }
            // Named, its node silent: still named last, for a crash seen
            // by a leasegate restarted meanwhile, which never renewed
            // (walkthrough 19: without it, such a leasegate never sent its
            // new clients to the new master; they waited 30 s).
            Judgement::Renew { .. } if node_role.is_none() => {
                named = true;
                withheld.poll(
                    &ctx,
                    "the Sentinels name this node master, but its node does not answer",
                );
                // Writes released as the node returns wait for the poll
                // that hears it, rather than meet the lapsed lease
                // (walkthrough 21: fenced for up to a poll interval).
                ctx.role
                    .await_renewal(std::time::Instant::now() + pulse(&ctx));
            }
            Judgement::Renew { .. } if node_role.as_deref() != Some("master") => {
                withheld.poll(
                    &ctx,
                    "the Sentinels name this node master, but its node reports itself a replica",
                );
            }
            // Revoked while the questions were out (the node was made a
            // replica after it said it was master): the answers may
            // predate that, so they renew nothing.
            Judgement::Renew { .. } if lease.revocations() != revocations => {
                withheld.poll(&ctx, "the lease was revoked during the poll");
            }
            Judgement::Renew { valid_ms, .. } => {
                withheld.vouched();
                renew(&ctx, valid_ms, sent);
                ctx.role.promotion_named();
                named = true;
                ever_named = true;
            }
            Judgement::Revoke { master, epoch } => {
                withheld.reset();
                // Named last, its node silent now and to the probe (two in
                // a row): a crash, whose lease ran out since (the Sentinels
                // stopped vouching).
                let crashed = named && node_role.is_none() && ctx.role.node.view().failures >= 2;
                // (Not a node being promoted, which the Sentinels name
                // only a moment later: the fence let its promotion go on.)
                let promoting = ctx.role.promotion_under_way(std::time::Instant::now());
                let replaced = (ever_named || ever_followed)
                    && !promoting
                    && node_role.as_deref() == Some("master");
                revoke(
                    &ctx,
                    &master,
                    epoch,
                    crashed,
                    node_role.as_deref(),
                    replaced,
                );
                named = false;
                // An old master's node (or a replica's, restarted) that is
                // master on its own while the Sentinels name another (after
                // a failover, or restarted) is made to follow it, for as
                // long as that lasts (`stale`).
                if replaced
                    && ctx.role.demotion().is_some()
                    && !following.swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    let following = Arc::clone(&following);
                    let ctx = Arc::clone(&ctx);
                    tokio::spawn(async move {
                        stale::follow_new_master(ctx, master).await;
                        following.store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            }
            Judgement::Hold { why } => hold_writes(&ctx, &why),
            Judgement::Withhold { why } => withheld.poll(&ctx, &why),
        }
        if !holds {
            // The hold ends (this process's, or its predecessor's taken
            // over at an upgrade), if it is the pause in force.
            ctx.gate.pause().end_owned(PauseOwner::Sentinel);
        }
        ctx.gate.lease().beat(sent, pulse(&ctx));
    }
}

/// How long the lease may be used after a poll answered ([`PULSE_SLACK`]).
fn pulse(ctx: &ControlContext) -> Duration {
    let c = ctx.config.load();
    c.sentinel.poll_interval + c.sentinel.timeout + PULSE_SLACK
}

/// A Sentinel is failing this node over: its writes are held (a pause of
/// this leasegate's own, [`PauseOwner::Sentinel`], unless writes are held already) until
/// the Sentinels name the new master or the failover ends without one.
/// Bounded by `sentinel.max_lease_ms`: the lease, not renewed, ends first.
fn hold_writes(ctx: &ControlContext, why: &str) {
    ctx.metrics.sentinel.count("held");
    let pause = ctx.gate.pause();
    if ctx.role.lease().write_allowed() && !ctx.role.is_demoted() && pause.may_hold(false) {
        let bound = Duration::from_millis(ctx.config.load().sentinel.max_lease_ms);
        pause.pause_as(bound, PauseMode::Write, Some(PauseOwner::Sentinel));
        info!(
            why,
            "writes are held until the Sentinels name the new master or the failover ends"
        );
    }
}

fn renew(ctx: &ControlContext, valid_ms: u64, sent: u64) {
    let lease = ctx.role.lease();
    let grant = Grant {
        master_node_id: None,
        ttl_ms: valid_ms
            .min(ctx.config.load().sentinel.max_lease_ms)
            .min(MAX_TTL_MS),
        epoch: lease.epoch(),
        nonce: None,
        anchor: Some(sent),
    };
    match ctx.role.grant(&grant, lease.now(), Source::Sentinel) {
        Ok(_) => ctx.metrics.sentinel.count("renewed"),
        // The epoch moved between reading and granting (a grant raced this
        // poll); the next poll uses the new one.
        Err(e) => {
            ctx.metrics.sentinel.count("withheld");
            tracing::debug!(error = %e, "Sentinel renewal refused");
        }
    }
}

/// Another master is named (`master` at `epoch`): revoke, and where this
/// node was master (or was demoted toward another) send its sessions to
/// the new one. `crashed`: the Sentinels named this node master last, and
/// its node does not answer (its lease ran out since: they stopped
/// vouching); `node_role`: what its node says it is; `replaced`: it says
/// master, and the Sentinels named this node master before.
fn revoke(
    ctx: &Arc<ControlContext>,
    master: &str,
    epoch: u64,
    crashed: bool,
    node_role: Option<&str>,
    replaced: bool,
) {
    ctx.metrics.sentinel.count("revoked");
    let role = &ctx.role;
    let was_master = crashed || role.lease().write_allowed() || role.is_demoted();
    if !was_master {
        // A replica, as the Sentinels say: nothing to revoke. Writes sent
        // here go to the master they name (as before a restart of this
        // leasegate, which forgets an earlier demotion), unless a
        // promotion of this node is under way (its wait for the lease is
        // left alone). So do those of an old master whose lease ran out
        // before the Sentinels named another (frozen past its lease, or
        // cut off): its writes were refused until Sentinel converted its
        // node, 10 s (walkthrough 12).
        let now = std::time::Instant::now();
        let awaiting = role.lease_awaited(now).is_some() || role.promotion_under_way(now);
        let known = role.demotion().and_then(|d| d.new_master.clone());
        let follower = node_role == Some("slave") || replaced;
        if follower && !awaiting && known.as_deref() != Some(master) {
            info!(
                master,
                epoch,
                node_role,
                "the Sentinels name another master of this node: writes sent here go there"
            );
            role.demote(Demotion {
                new_master: Some(Arc::from(master)),
            });
        }
        return;
    }
    let reason = format!("the Sentinels name {master} master (config epoch {epoch})");
    role.revoke(&reason, Source::Sentinel);
    let known = role.demotion().and_then(|d| d.new_master.clone());
    if known.as_deref() != Some(master) {
        info!(
            new_master = master,
            epoch, "demoted by Sentinel: sessions go to the new master"
        );
        role.demote(Demotion {
            new_master: Some(Arc::from(master)),
        });
    }
}

/// Makes the node announce `me` to its master, retrying until the node
/// answers: `replica-announce-port` (and `-ip` when `me` names an IP).
/// A replica already linked is made to reconnect, so that its master lists
/// it by the new address.
async fn announce(ctx: Arc<ControlContext>, me: String) {
    let Some((port, ip)) = announced(&me) else {
        return;
    };
    let mut delay = Duration::from_millis(100);
    // Whether the last attempt failed (logged once until one succeeds).
    let mut failing = false;
    loop {
        let attempt = match open_own_node(&ctx).await {
            Ok(mut conn) => announce_once(&mut conn, port, ip).await,
            Err(e) => Err(e),
        };
        let wait = match attempt {
            Ok(changed) => {
                if let Some(reconnected) = changed {
                    info!(address = %me, reconnected, "the node announces this leasegate's address to its master");
                }
                failing = false;
                delay = Duration::from_millis(100);
                ANNOUNCE_CHECK_EVERY
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cannot make the node announce this leasegate's address yet; retrying");
                }
                failing = true;
                delay = (delay * 2).min(ANNOUNCE_CHECK_EVERY);
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
    }
}

/// The port, and the IP where `me` names one, that the node announces
/// for this leasegate (`me`: its address as the Sentinels know it).
fn announced(me: &str) -> Option<(&str, Option<std::net::IpAddr>)> {
    let (host, port) = me.rsplit_once(':')?;
    let ip = host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok()
        .filter(|ip| !ip.is_unspecified());
    Some((port, ip))
}

/// Makes the node on `conn` announce this leasegate (with
/// `sentinel.announce`) before it is made to follow a master: it follows
/// with this leasegate's address from its first link. (Walkthrough 15: a
/// restarted replica made to follow first was listed by its master, and
/// so learnt by the Sentinels, at the node's own address, and Sentinel
/// later promoted and reconfigured it there, past its leasegate.)
pub(super) async fn announce_before_following(
    ctx: &ControlContext,
    conn: &mut ControlConnection,
) -> Result<(), String> {
    let config = ctx.config.load();
    if !config.sentinel.announce {
        return Ok(());
    }
    let me = config.sentinel_address();
    let Some((port, ip)) = announced(&me) else {
        return Ok(());
    };
    announce_once(conn, port, ip).await.map(|_| ())
}

/// How often the node is checked to still announce this leasegate: a node
/// restarted (its `CONFIG SET` not persisted) announced its own address,
/// and Sentinel, learning the replica by that, later promoted it directly,
/// past the lease (walkthrough 10: clients were given the node's own
/// address for 34 s).
const ANNOUNCE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One attempt of [`announce`]: `None` when the node announced this
/// leasegate already, else whether a linked replica was made to reconnect.
async fn announce_once(
    conn: &mut ControlConnection,
    port: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<Option<bool>, String> {
    let current = |reply: OwnedFrame| match reply {
        OwnedFrame::Array(items) => items.get(1).and_then(|v| match v {
            OwnedFrame::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }),
        _ => None,
    };
    let mut changed = false;
    // The IP before the port. Redis 7.0 decides whether to send `REPLCONF
    // ip-address` in a handshake, and whether to read its reply, by the
    // setting at each moment: an IP set in between makes the replica take
    // the next reply for it and wait for one more until `repl-timeout`
    // (60 s). Set after the port, it caught `REPLICAOF`s sent once the port
    // showed (walkthrough 17: 15 set-ups in 598 never linked).
    let mut wanted = Vec::with_capacity(2);
    if let Some(ip) = ip {
        wanted.push(("replica-announce-ip", ip.to_string()));
    }
    wanted.push(("replica-announce-port", port.to_string()));
    for (name, value) in &wanted {
        let now = conn
            .call(&["CONFIG", "GET", name])
            .await
            .map(current)
            .map_err(|e| format!("node: CONFIG GET {name}: {e}"))?;
        if now.as_deref() != Some(value.as_str()) {
            conn.call(&["CONFIG", "SET", name, value])
                .await
                .map_err(|e| format!("node: CONFIG SET {name} {value}: {e}"))?;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    // A replica whose link is up announced its old address: make it
    // reconnect (it resumes where it was, a partial resync).
    let replication = replication_of(conn)
        .await
        .map_err(|e| format!("node: {e}"))?;
    if replication.role.as_deref() == Some("slave") {
        match conn.call(&["CLIENT", "KILL", "TYPE", "master"]).await {
            Ok(_) => return Ok(Some(true)),
            Err(e) => {
                warn!(error = %e, "the replica's link to its master predates the announced address and could not be restarted (CLIENT KILL TYPE master); its master lists it by the old address until it reconnects")
            }
        }
    }
    Ok(Some(false))
}
