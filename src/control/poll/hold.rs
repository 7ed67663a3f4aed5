//! The poller's own holds of this node's writes: while the node named
//! master is not at the controller's topology yet ([`Poller::hold_writes`]),
//! and while the new master named to a demoted node does not take them
//! yet ([`Poller::await_new_master`]). Each ends only itself: a pause set
//! since (the controller's, a failover's) stays. Each is known by its
//! [`PauseOwner`], not by anything this poller remembers: a successor's
//! poller ends a hold its predecessor's set.

use tracing::info;

use super::Poller;
use crate::guard::pause::{PauseMode, PauseOwner};

impl Poller<'_> {
    /// The controller names this node master, but the node is not at its
    /// topology yet: writes are held (not handed back to the old master,
    /// which may be down and point here) for at most twice
    /// `controller.switch_timeout_ms` from the first such poll; the grant
    /// releases them.
    pub(super) fn hold_writes(&mut self) {
        let role = &self.ctx.role;
        role.clear_demotion();
        // A pause already on (this hold, the controller's own, a
        // failover's) holds the writes and is left to whoever set it.
        let pause = self.ctx.gate.pause();
        if !pause.may_hold(role.failover.is_running()) {
            return;
        }
        // The take-over's own bound, plus the node's promotion after it;
        // after a crash, as long as the dead node's clients may wait for
        // this one (`node_lost_wait_ms`): Kvrocks promotes a replica whose
        // master is gone only after seconds of reconnect cycles (8 s seen),
        // and a bound of twice the switch timeout failed those writes.
        let controller = &self.ctx.config.load().controller;
        let bound = (controller.switch_timeout * 2).max(controller.node_lost_wait);
        pause.pause_as(bound, PauseMode::Write, Some(PauseOwner::PollTakeOver));
    }

    /// Ends [`Poller::hold_writes`]'s hold, if it is the pause in force
    /// (its bound may have ended it, another pause replaced it).
    pub(super) fn end_own_hold(&mut self) {
        if !self.ctx.role.failover.is_running() {
            self.ctx.gate.pause().end_owned(PauseOwner::PollTakeOver);
        }
    }

    /// The controller names `new_master`, whose leasegate does not take
    /// this node's writes yet (its node not yet promoted, its lease on
    /// its way): they are held for `controller.switch_timeout_ms`, once per
    /// new master, as a step-down holds them, then refused until it takes
    /// them. (A master's leasegate restarted just after the controller
    /// failed its node over refused them at once: `-READONLY this node was
    /// demoted; the new master is unknown` for 0.93 s, 3,032 errors,
    /// walkthrough 23.)
    pub(super) fn await_new_master(&mut self, new_master: &str) {
        if self.new_master_wait.as_deref() == Some(new_master) {
            return;
        }
        let pause = self.ctx.gate.pause();
        if self.new_master_wait.is_none() && pause.owner() == Some(PauseOwner::PollNewMaster) {
            // The predecessor's hold, taken over at an upgrade: it goes on.
            self.new_master_wait = Some(new_master.to_string());
            return;
        }
        self.end_new_master_wait();
        if pause.may_hold(self.ctx.role.failover.is_running()) {
            let bound = self.ctx.config.load().controller.switch_timeout;
            info!(
                new_master,
                timeout_ms = bound.as_millis() as u64,
                "the controller names another master, whose leasegate does not take this node's writes yet: they are held meanwhile"
            );
            pause.pause_as(bound, PauseMode::Write, Some(PauseOwner::PollNewMaster));
        }
        self.new_master_wait = Some(new_master.to_string());
    }

    /// Ends [`Poller::await_new_master`]'s hold, if it is the pause in force.
    pub(super) fn end_new_master_wait(&mut self) {
        self.new_master_wait = None;
        self.ctx.gate.pause().end_owned(PauseOwner::PollNewMaster);
    }
}
