//! State follows the node's acceptance: a request that would change what
//! the Gate knows (`REPLICAOF host port`, `CLUSTERX SETNODES` naming this
//! node a slave, a controller's `CLUSTERX SETNODEID`) is forwarded with its
//! [`Effect`], which is applied ([`Gate::accepted`]) only once the node
//! answers `+OK`; a refused command changes nothing. A demotion from the
//! controller first waits for the writes already forwarded.

use std::sync::Arc;

use crate::command::Special;
use crate::guard::pause::PauseOwner;
use crate::guard::promotion::Ask;
use crate::guard::role::{Demotion, Source};
use crate::resp::request::arguments;

use super::{Admission, Effect, Gate, Verdict, Wait};

/// How long writes wait for the lease of a node that accepted a topology
/// naming it master (or `controller.switch_timeout_ms` with a poller, if
/// longer), before they are fenced.
pub const PROMOTION_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a Sentinel's promotion passing through waits for the old
/// master to be fenced before it goes on anyway.
pub const PROMOTION_FENCE_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// What a promoting (or, `step_down`, demoting) command is answered, as
/// its fence says: held, on its way (`None`), or refused.
fn fence_verdict(ask: Ask, step_down: bool) -> Option<Verdict> {
    match ask {
        Ask::Hold(until) => Some(Verdict::Hold(Wait::Fence { until, step_down })),
        Ask::Go => None,
        Ask::Refuse(why) => Some(Verdict::Reply(crate::resp::encode::error(&format!(
            "TRYAGAIN leasegate: {} refused: {why}",
            if step_down { "step-down" } else { "promotion" }
        )))),
    }
}

impl Gate {
    /// Requests that change the node's role or id: forwarded, with the
    /// effect applied once the node accepts them.
    #[cold]
    pub(super) fn observe(&self, r: &Admission<'_>) -> Verdict {
        let args = arguments(r.bytes, r.head.inline);
        let effect = match r.command.special {
            // Only the controller names the node: an ordinary client's
            // SETNODEID (even one the node accepts) never moves the lease.
            Special::SetNodeId if r.control => args
                .get(2)
                .map(|id| Effect::NodeId(String::from_utf8_lossy(id).into_owned())),
            Special::SetNodeId => None,
            Special::SetNodes => {
                let effect = args.get(2).map(|nodes| Effect::Topology {
                    nodes: String::from_utf8_lossy(nodes).into_owned(),
                    version: args
                        .get(3)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
                    from_control: r.control,
                });
                if let Some(held) = effect.as_ref().and_then(|e| {
                    self.promotion_fenced(e)
                        .or_else(|| self.step_down_first(e))
                        .or_else(|| self.step_down_fenced(e))
                }) {
                    return held;
                }
                let fresh = |e: &Effect| {
                    e.controller_topology()
                        .is_some_and(|(_, v)| v.is_none_or(|v| v > self.role.node_topology()))
                };
                if effect
                    .as_ref()
                    .is_some_and(|e| fresh(e) && self.demotes_this_node(e))
                {
                    self.pause.step_down_sent();
                }
                effect
            }
            _ => {
                // REPLICAOF host port (but not REPLICAOF NO ONE) makes this node a replica.
                let no_one = args.len() == 3
                    && args[1].eq_ignore_ascii_case(b"no")
                    && args[2].eq_ignore_ascii_case(b"one");
                // A promotion waits for the old master to be fenced, where
                // someone fences it (a Sentinel lease source).
                if no_one && self.role.promotion_fence.fences_replicaof() {
                    if let Some(verdict) = fence_verdict(self.role.promotion_fence.ask(None), false)
                    {
                        return verdict;
                    }
                }
                if no_one {
                    // Only a controller's promotion changes what leasegate
                    // believes, or one that waited for the old master to
                    // be fenced (Sentinel's, which need not come on a
                    // control connection): the node is master now, and
                    // this leasegate stops sending writes to the old one.
                    // The lease still comes from the lease source.
                    return if r.control || self.role.promotion_fence.fences_replicaof() {
                        Verdict::Observe(Effect::Promoted)
                    } else {
                        Verdict::Forward
                    };
                }
                (args.len() == 3).then(|| Effect::Replica {
                    // The controller's, while its pause holds writes (a
                    // failover's switch): the held writes go to the new
                    // master. Otherwise writes are only fenced.
                    new_master: (r.control && self.pause.is_paused()).then(|| {
                        format!(
                            "{}:{}",
                            String::from_utf8_lossy(&args[1]),
                            String::from_utf8_lossy(&args[2])
                        )
                    }),
                    reason: format!(
                        "{} {} {} accepted by the node",
                        String::from_utf8_lossy(&args[0]).to_ascii_uppercase(),
                        String::from_utf8_lossy(&args[1]),
                        String::from_utf8_lossy(&args[2])
                    ),
                })
            }
        };
        effect.map_or(Verdict::Forward, Verdict::Observe)
    }

    /// The controller's topology naming this node master, at a version its
    /// node has not accepted, while this leasegate holds no lease (the node
    /// is a replica): held until the old master is fenced, where someone
    /// fences it (a controller's poller, [`crate::guard::promotion`]). Only
    /// the controller's: the fence pauses the old master and relays the
    /// topology to it, which an ordinary client must not make it do.
    #[cold]
    fn promotion_fenced(&self, effect: &Effect) -> Option<Verdict> {
        let (nodes, version) = effect.controller_topology()?;
        let fence = &self.role.promotion_fence;
        if !fence.enabled() || self.lease.write_allowed() {
            return None;
        }
        let me = self.lease.node_id()?;
        let version = version.filter(|v| *v > self.role.node_topology())?;
        if !crate::kvrocks::topology::listed_as_master(nodes, &me) {
            return None;
        }
        fence_verdict(fence.ask(Some((nodes.to_string(), version))), false)
    }

    /// The controller's topology that makes this node a replica, at a
    /// version its node has not accepted, once the writes in flight are
    /// answered ([`Self::step_down_first`]): held until the master it names
    /// has every write this node's node took, where someone checks
    /// (`control::step_down_fence`, with a controller's poller). The push
    /// may reach this node before the new master's, after this node's
    /// poll already revoked its lease (so [`Self::step_down_first`] holds
    /// nothing): let through, the node would resync from a master that
    /// lacks its last acknowledged writes, and discard them. Only the
    /// controller's.
    #[cold]
    fn step_down_fenced(&self, effect: &Effect) -> Option<Verdict> {
        let (nodes, version) = effect.controller_topology()?;
        let fence = &self.role.step_down_fence;
        if !fence.enabled() {
            return None;
        }
        let me = self.lease.node_id()?;
        let version = version.filter(|v| *v > self.role.node_topology())?;
        if !crate::kvrocks::topology::listed_as_replica(nodes, &me) {
            return None;
        }
        fence_verdict(fence.ask(Some((nodes.to_string(), version))), true)
    }

    /// The controller's topology that makes this node (master under a
    /// valid lease) a replica: writes are paused first, and the topology
    /// waits until the writes already forwarded are answered (under the
    /// lease), so that none reaches the node after it (the node would answer
    /// it `MOVED`, or take it as a replica). On the node's `+OK` the lease
    /// is revoked, the node marked demoted and the pause ended
    /// ([`Gate::accepted`]): the held writes go to the new master.
    /// `Some(hold)` on the first ask; the second goes on.
    #[cold]
    fn step_down_first(&self, effect: &Effect) -> Option<Verdict> {
        let (nodes, version) = effect.controller_topology()?;
        if self.role.take_stepping_down() {
            return None;
        }
        let me = self.lease.node_id()?;
        let fresh = version.is_none_or(|v| v > self.role.node_topology());
        if !fresh
            || !self.lease.write_allowed()
            || !crate::kvrocks::topology::listed_as_replica(nodes, &me)
        {
            return None;
        }
        // A failover from here asks the controller to switch before its pause:
        // it fences this node at its planned moment and brings the node to
        // this topology itself (the controller sends it again).
        if self.role.failover.switches_first() {
            return Some(Verdict::Reply(crate::resp::encode::error(
                "TRYAGAIN leasegate: a failover from this node is under way; it fences the node and brings it to the new topology itself",
            )));
        }
        // A pause already on (the controller's own, a failover's) holds
        // the writes and is left to whoever set it.
        if !self.pause.is_paused() {
            // Long enough for the step-down fence after the drain: no
            // write may reach the node between the fence's check and the
            // node's acceptance.
            self.pause.pause_as(
                self.role.step_down_hold(crate::guard::control::DRAIN_BOUND)
                    + self.role.step_down_fence.bound(),
                crate::guard::pause::PauseMode::Write,
                Some(PauseOwner::StepDown),
            );
        }
        if self.role.writes_in_flight() == 0 {
            return None;
        }
        self.role.stepping_down();
        Some(Verdict::Hold(Wait::Drain {
            until: std::time::Instant::now() + crate::guard::control::DRAIN_BOUND,
            answer: false,
        }))
    }

    /// Whether `effect` is the controller's topology listing this node as
    /// a replica.
    fn demotes_this_node(&self, effect: &Effect) -> bool {
        let (Some((nodes, _)), Some(me)) = (effect.controller_topology(), self.lease.node_id())
        else {
            return false;
        };
        crate::kvrocks::topology::listed_as_replica(nodes, &me)
    }

    /// The node refused a request the Gate observes: nothing changes, but a
    /// `CLIENT UNPAUSE` that waited for a demoting topology's answer takes
    /// effect.
    #[cold]
    pub fn refused(&self, effect: &Effect) {
        if self.demotes_this_node(effect) {
            self.pause.step_down_answered();
        }
    }

    /// The node accepted (`+OK`) a request the Gate observes: apply its effect.
    #[cold]
    pub fn accepted(&self, effect: &Effect) {
        match effect {
            Effect::Replica { reason, new_master } => {
                self.role.revoke(reason, Source::Node);
                if let Some(m) = new_master {
                    self.role.demote(Demotion {
                        new_master: Some(Arc::from(m.as_str())),
                    });
                }
            }
            Effect::Topology {
                nodes,
                version,
                from_control,
            } => {
                let Some(me) = self.lease.node_id() else {
                    return;
                };
                // The controller's at the node's current version (or below,
                // forced) was a no-op there, such as its re-push of the
                // previous topology after a failover: the node, and so
                // leasegate, stays where it is. (An ordinary client's moves
                // nothing toward mastership anyway, below.)
                if *from_control && version.is_some_and(|v| !self.role.node_accepted_topology(v)) {
                    return;
                }
                // The controller's word at this version, as a poll's: a
                // leasegate demoted by the push before its poll saw the
                // switch reports itself fenced at it (`INFO leasegate`),
                // and the new master's poll need not wait for this one's,
                // blocked meanwhile until the new master holds the lease
                // (walkthrough 29: both waited switch_timeout_ms).
                if let (true, Some(v)) = (*from_control, version) {
                    self.role.saw_controller_version(*v);
                }
                if crate::kvrocks::topology::listed_as_master(nodes, &me) {
                    if !from_control {
                        // An ordinary client cannot move what leasegate
                        // believes about mastership toward this node.
                        return;
                    }
                    // Older than the controller's word the poll already
                    // has (another master, at a newer version): the
                    // controller's earlier push, delivered late. The node
                    // took it, but mastership follows the newer word; taken
                    // as a promotion, it ended the poll's demotion, and
                    // the writes held for the switch met the lapsed lease.
                    if version.is_some_and(|v| v < self.role.controller_version()) {
                        return;
                    }
                    // A poller asks the controller for the lease now rather
                    // than at its next tick.
                    self.promoted_here();
                    self.role.topology_promoted(*version);
                    return;
                }
                if crate::kvrocks::topology::listed_as_replica(nodes, &me) {
                    self.role
                        .revoke("CLUSTERX SETNODES lists this node as a slave", Source::Node);
                    // Held writes go where the topology says the master is
                    // now (its leasegate, as the controller registers nodes).
                    let new_master = crate::kvrocks::topology::master_of(nodes, &me);
                    self.role.demote(Demotion {
                        new_master: new_master.map(Arc::from),
                    });
                    // The held writes go to the new master once its
                    // leasegate holds the lease (the poller looks), else now.
                    if !self.role.step_down_accepted() {
                        self.pause.end_owned(PauseOwner::StepDown);
                    }
                    // Now that the writes go to the new master, a
                    // `CLIENT UNPAUSE` that waited for this may end the pause.
                    if *from_control {
                        self.pause.step_down_answered();
                    }
                }
            }
            Effect::NodeId(id) => self.lease.learn_node_id(id),
            Effect::Promoted => {
                // The old master's leasegate, demoted toward this one, would
                // hand the writes back, connection after connection.
                self.promoted_here();
            }
        }
    }

    /// The node accepted a controller's promotion (a topology naming it
    /// master, or `REPLICAOF NO ONE`): no longer demoted, so writes stop
    /// being handed to another node, which may point back here. The lease
    /// still comes only from the lease source: until then writes wait for
    /// it (bounded), then are fenced.
    fn promoted_here(&self) {
        self.role.clear_demotion();
        if !self.lease.write_allowed() {
            let hold = self.role.step_down_hold(PROMOTION_LEASE_WAIT);
            self.role.await_lease(std::time::Instant::now() + hold);
        }
    }
}
