//! The poller's own holds of this node's writes: while the node named
//! master is not at the controller's topology yet ([`Poller::hold_writes`]),
//! and while the new master named to a demoted node does not take them
//! yet ([`Poller::await_new_master`]). Each ends only itself: a pause set
//! since (the controller's, a failover's) stays.

use std::time::Instant;

use tracing::info;

use super::Poller;
use crate::guard::pause::PauseMode;

impl Poller<'_> {
    /// The controller names this node master, but the node is not at its
    /// topology yet: writes are held (not handed back to the old master,
    /// which may be down and point here) for at most twice
    /// `controller.switch_timeout_ms` from the first such poll; the grant
    /// releases them.
    pub(super) fn hold_writes(&mut self) {
        let role = &self.ctx.role;
        role.clear_demotion();
        // A pause already on (the controller's own, a failover's) holds
        // the writes and is left to whoever set it.
        if self.holding.is_some() || role.failover.is_running() || self.ctx.gate.pause().is_paused()
        {
            return;
        }
        // The take-over's own bound, plus the node's promotion after it;
        // after a crash, as long as the dead node's clients may wait for
        // this one (`node_lost_wait_ms`): Kvrocks promotes a replica whose
        // master is gone only after seconds of reconnect cycles (8 s seen),
        // and a bound of twice the switch timeout failed those writes.
        let controller = &self.ctx.config.load().controller;
        let bound = (controller.switch_timeout * 2).max(controller.node_lost_wait);
        let generation = self.ctx.gate.pause().pause(bound, PauseMode::Write);
        self.holding = Some((Instant::now(), bound, generation));
    }

    /// Ends [`Poller::hold_writes`]'s hold, if its own bound has not ended
    /// it. Only its own: a pause set since (the controller's) stays.
    pub(super) fn end_own_hold(&mut self) {
        if let Some((since, bound, generation)) = self.holding.take() {
            if since.elapsed() < bound && !self.ctx.role.failover.is_running() {
                self.ctx.gate.pause().unpause_own(generation);
            }
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
        if self
            .new_master_wait
            .as_ref()
            .is_some_and(|(named, _)| named == new_master)
        {
            return;
        }
        self.end_new_master_wait();
        let pause = self.ctx.gate.pause();
        let hold = (!self.ctx.role.failover.is_running() && !pause.is_paused()).then(|| {
            let bound = self.ctx.config.load().controller.switch_timeout;
            info!(
                new_master,
                timeout_ms = bound.as_millis() as u64,
                "the controller names another master, whose leasegate does not take this node's writes yet: they are held meanwhile"
            );
            (Instant::now(), bound, pause.pause(bound, PauseMode::Write))
        });
        self.new_master_wait = Some((new_master.to_string(), hold));
    }

    /// Ends [`Poller::await_new_master`]'s hold, if it still holds.
    pub(super) fn end_new_master_wait(&mut self) {
        if let Some((_, Some((since, bound, generation)))) = self.new_master_wait.take() {
            if since.elapsed() < bound {
                self.ctx.gate.pause().unpause_own(generation);
            }
        }
    }
}
