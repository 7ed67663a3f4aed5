//! One poll's answer acted on: the lease renewed, revoked or left alone,
//! a take-over or a step-down followed ([`Poller::apply`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::metrics::PollMetrics;
use crate::control::lasting::{Lasting, Sighting};
use crate::control::{switch, ControlContext};
use crate::guard::lease::{Grant, GrantOutcome};
use crate::guard::role::{Demotion, Source};
use crate::kvrocks::controller::{decide, Cluster, Decision};

/// Failures logged: the first, then every this many.
const LOG_EVERY: u64 = 10;
/// How long the controller may name this node master while its lease
/// stays revoked at that version before it is worth a warning: a planned
/// failover's old master is fenced at the version that still names it
/// until the controller switches, well within this.
pub(super) const FENCED_WARN_AFTER: Duration = Duration::from_secs(5);

pub(super) struct Poller<'a> {
    pub(super) ctx: &'a ControlContext,
    pub(super) metrics: &'a PollMetrics,
    pub(super) highest: Option<u64>,
    pub(super) failures: u64,
    /// The lease's revocation count when the poller last looked.
    pub(super) revocations_seen: u64,
    /// The lease was revoked (by anyone: a role change, a failover, another
    /// master named) while the topology was at this version: a poll renews
    /// again only from a later version, since the controller's view at this
    /// version is older than the revocation.
    pub(super) fenced_at: Option<u64>,
    /// The address of this node's shard master in the last answer, when
    /// another node: the old master a take-over checks ([`switch`]).
    pub(super) other_master: Option<String>,
    /// The version whose wait for the node was last logged: logged once
    /// per version, not at every poll.
    pub(super) pending_logged: Option<u64>,
    /// Polls naming this node master while its lease stays revoked at
    /// that version: warned of once they last ([`FENCED_WARN_AFTER`]).
    pub(super) fenced: Lasting,
    /// The new master named to this node, already demoted, whose
    /// leasegate does not take its writes yet: they are held meanwhile
    /// ([`Poller::await_new_master`]).
    pub(super) new_master_wait: Option<String>,
}

impl Poller<'_> {
    /// Acts on one answer; `true` when it followed a switch of the
    /// controller's ([`switch`]).
    pub(super) async fn apply(&mut self, answer: Result<Cluster, String>, sent: u64) -> bool {
        let lease = self.ctx.role.lease();
        let cluster = match answer {
            Ok(c) => c,
            Err(e) => {
                self.failed(&e);
                return false;
            }
        };
        // Not learnt yet (from `node_id`, the controller's `SETNODEID` or the
        // node itself): the node the controller lists at this leasegate's
        // address is this one. A leasegate restarted while its node is down
        // cannot ask the node, and never followed the shard's failover: its
        // clients waited out node_lost_wait_ms, then were refused
        // (walkthrough 23).
        if lease.node_id().is_none() {
            let listen = self.ctx.config.load().listen.to_string();
            if let Some(id) = cluster.id_at(&listen) {
                info!(id, address = %listen, "this node's id learnt from the controller's topology, which lists it at this leasegate's address");
                lease.learn_node_id(id);
            }
        }
        let Some(me) = lease.node_id() else {
            self.failed(
                "this node's id is unknown (set node_id, or let CLUSTERX SETNODEID pass, or let the node probe ask the node: lease.probe_interval_ms)",
            );
            return false;
        };
        // The master of this node's shard when it is another node: the old
        // master of a take-over, the new one of a step-down.
        let other_master = cluster
            .place(&me)
            .and_then(|p| cluster.shard_master(p.shard))
            .filter(|m| m.id != me)
            .map(|m| m.addr.clone());
        if self.failures > 0 {
            info!(failures = self.failures, "the controller answers again");
            self.failures = 0;
        }
        let revocations = lease.revocations();
        if revocations != self.revocations_seen {
            self.revocations_seen = revocations;
            let at = self.highest.unwrap_or(0).max(cluster.version);
            self.fenced_at = Some(match self.ctx.role.last_promotion() {
                // Every revocation so far came before the node accepted a
                // topology listing it master at version `p`: they belong
                // to an earlier version, and the controller's answer at
                // `p` or later postdates them.
                Some((p, seen)) if seen == revocations && p > 0 => at.min(p - 1),
                _ => at,
            });
        }
        // An answer older than a topology the node has accepted from the
        // controller since (its push raced this poll) is stale too: acting
        // on it would revoke the lease the push's promotion awaits.
        let accepted = Some(self.ctx.role.node_topology()).filter(|v| *v > 0);
        let decision = decide(&cluster, &me, self.highest.max(accepted));
        if !matches!(decision, Decision::Stale { .. }) {
            self.ctx.role.saw_controller_version(cluster.version);
        }
        let previous_master = match decision {
            Decision::Stale { .. } => self.other_master.clone(),
            _ => std::mem::replace(&mut self.other_master, other_master.clone()),
        };
        match decision {
            Decision::Stale { version, highest } => {
                self.metrics.count("stale");
                tracing::debug!(
                    version,
                    highest,
                    "stale cluster version from the controller; ignored"
                );
            }
            // Becoming master (or master again): only once the node is at
            // this topology. A lease revoked at this version is renewed
            // only from a later one, unless leasegate brought the node to
            // it just now (that acceptance postdates every revocation).
            // A grant since (a push, a failover's rollback) that made the
            // lease valid again is only kept going.
            // The node has accepted a newer topology than this answer
            // (pushed by a failover since the poll was sent): the answer is
            // stale, and must neither hold writes nor renew.
            Decision::Renew { version }
                if !lease.write_allowed() && switch::node_is_past(self.ctx, version).await =>
            {
                self.metrics.count("stale");
                tracing::debug!(
                    version,
                    "the node is at a newer topology than the controller's answer; ignored"
                );
            }
            Decision::Renew { version } if !lease.write_allowed() => {
                self.highest = Some(version);
                let fenced = self.fenced_at.is_some_and(|f| version <= f);
                // Revoked by a grant naming another node (a failover away
                // from here) at this version: that is newer than this answer.
                // Only a hand-over at this version or later counts: the
                // lease still named for the other node by an earlier
                // failover kept a node promoted since from ever being
                // renewed (seen after a failover that failed past the
                // controller's switch: no writable master). Where this
                // process did not see the hand-over (an upgrade's
                // successor: 0), any version counts, as before.
                let away_at = self.ctx.role.handed_away_at();
                let handed_away = fenced
                    && lease.snapshot().owner.is_some_and(|o| o != me)
                    && (away_at == 0 || away_at >= version);
                // Named master: writes wait here for the node, rather
                // than go to the old master (which may be gone), unless
                // the old master's own failover promotes this node.
                if !handed_away
                    && !switch::old_master_fails_over(self.ctx, previous_master.as_deref()).await
                {
                    self.hold_writes();
                }
                match switch::take_over(self.ctx, &cluster, previous_master.as_deref()).await {
                    switch::TakeOver::Pushed => self.renew(me, sent),
                    switch::TakeOver::Ready if !fenced => self.renew(me, sent),
                    // The node itself is at this topology, which names it
                    // master: a revocation of its own (it was a replica)
                    // is past.
                    switch::TakeOver::AtVersion if !handed_away => self.renew(me, sent),
                    switch::TakeOver::Ready | switch::TakeOver::AtVersion => {
                        self.metrics.count("fenced");
                        self.fenced_notice(version);
                    }
                    switch::TakeOver::NotYet(why) => {
                        self.metrics.count("pending");
                        if self.pending_logged.replace(version) != Some(version) {
                            info!(version, %why, "the controller names this node master; no lease until its node is at that topology, writes held meanwhile");
                        } else {
                            tracing::debug!(version, %why, "still waiting for the node to be at the topology naming it master");
                        }
                    }
                }
            }
            Decision::Renew { version } => {
                self.highest = Some(version);
                self.renew(me, sent);
            }
            Decision::Revoke { version, reason } => {
                self.highest = Some(version);
                self.metrics.count("revoked");
                let role = &self.ctx.role;
                let followed = match other_master {
                    // A failover from here asked the controller to switch
                    // before its pause (`cluster_timing`): it fences this
                    // node at its planned moment, and hands the writes
                    // over itself. Until then the lease runs on, renewed
                    // no more; nothing promotes the new master before this
                    // node reports itself fenced (`control::switch`,
                    // `control::fence`).
                    Some(_) if lease.write_allowed() && role.failover.switches_first() => {
                        tracing::debug!(
                            version,
                            "the controller switched the shard during a failover from here; the failover fences this node"
                        );
                        false
                    }
                    // This node was master, and another node of its shard
                    // is now: hand the sessions over without an error.
                    Some(new_master) if lease.write_allowed() => {
                        switch::step_down(self.ctx, &reason, new_master).await;
                        true
                    }
                    // Another node is master of this node's shard: writes
                    // go where the controller says the master is
                    // (`pause.on_demote`), as after a topology push that
                    // lists this node a slave. Also for a replica that
                    // always was one: a leasegate restarted beside it saw
                    // no push, and its clients' writes would be fenced.
                    Some(new_master) => {
                        role.revoke(&reason, Source::Poll);
                        let known = role.demotion().and_then(|d| d.new_master.clone());
                        if known.as_deref() != Some(new_master.as_str()) {
                            // Not toward a leasegate that would hand the
                            // writes back (its poll has not seen the switch):
                            // held, then refused here until it takes them.
                            let takes = switch::takes_hand_over(self.ctx, &new_master).await;
                            if takes || known.is_some() || !role.is_demoted() {
                                role.demote(Demotion {
                                    new_master: takes.then(|| Arc::from(new_master.as_str())),
                                });
                            }
                            // Before a hold of the new master's own: the
                            // writes held for this node's promotion go on.
                            self.end_own_hold();
                            if takes {
                                self.end_new_master_wait();
                            } else {
                                self.await_new_master(&new_master);
                            }
                        } else {
                            self.end_new_master_wait();
                        }
                        false
                    }
                    _ => {
                        role.revoke(&reason, Source::Poll);
                        false
                    }
                };
                // Named master no longer: the writes held for this node's
                // promotion go on, where the demotion sends them. (Dropped
                // without being ended, the hold stalled every write until
                // its bound, `node_lost_wait_ms`: 30 s for all 34 clients
                // in walkthrough 26.)
                self.end_own_hold();
                self.revocations_seen = lease.revocations();
                self.fenced_at = Some(version);
                return followed;
            }
        }
        false
    }

    /// The controller names this node master at `version`, but its lease
    /// was revoked at that version. Once per version at warn if it lasts:
    /// writes stay fenced until the controller's next topology change, and
    /// the operator must see why (walkthrough 23: a hand-sent heartbeat
    /// naming another node, logged at debug only, fenced a master for
    /// good). Briefly it is normal: a planned failover fences the old
    /// master before the controller switches.
    fn fenced_notice(&mut self, version: u64) {
        let snapshot = self.ctx.role.lease().snapshot();
        let owner = snapshot.owner.as_deref().unwrap_or("");
        match self.fenced.seen(version, Instant::now()) {
            Sighting::Lasted(lasted) => warn!(
                version,
                lease_owner = owner,
                lease_epoch = snapshot.epoch,
                lasted_ms = lasted.as_millis() as u64,
                "the controller names this node master, but its lease was revoked at this topology version (by a failover away, a heartbeat or the admin API naming another node): writes stay fenced until the controller's topology changes"
            ),
            Sighting::Brief => tracing::debug!(
                version,
                lease_owner = owner,
                "the controller still names this node master at the version its lease was revoked at (a failover away under way?)"
            ),
            Sighting::Reported => {}
        }
    }

    /// Grants the lease for `controller.ttl_ms` from `sent`, when the poll
    /// that named this node master was sent.
    fn renew(&mut self, me: String, sent: u64) {
        let lease = self.ctx.role.lease();
        self.fenced_at = None;
        self.fenced.ended();
        let grant = Grant {
            master_node_id: Some(me),
            ttl_ms: self.ctx.config.load().controller.ttl_ms,
            epoch: lease.epoch(),
            nonce: None,
            anchor: Some(sent),
        };
        match self.ctx.role.grant(&grant, lease.now(), Source::Poll) {
            Ok(GrantOutcome::Renewed) => {
                self.metrics.count("renewed");
                // The holds end with the grant, not before it: writes
                // released first met no lease (`-READONLY master lease
                // expired`), and a grant refused left them so until the
                // next poll.
                self.end_new_master_wait();
                self.end_own_hold();
            }
            Ok(other) => {
                self.metrics.count("error");
                warn!(outcome = ?other, "controller poll did not renew the lease");
            }
            // The epoch moved between reading and granting (a push grant
            // raced this poll; the next poll uses the new one), or this
            // process handed its state to a successor (an upgrade).
            Err(e) => {
                self.metrics.count("error");
                tracing::debug!(error = %e, "controller poll grant refused");
            }
        }
    }

    fn failed(&mut self, error: &str) {
        self.metrics.count("error");
        self.failures += 1;
        if self.failures == 1 || self.failures % LOG_EVERY == 0 {
            warn!(
                failures = self.failures,
                error, "controller poll failed; the lease is not renewed"
            );
        }
    }
}
