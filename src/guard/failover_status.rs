//! The state of this proxy's failovers, as the Gate, the poller and the
//! fence read it: whether one runs, the state it entered (reported as
//! `cluster_failover_state`), and whether it had the controller switch the
//! shard before its pause (then the controller's topology that demotes this
//! node is the failover's to bring). Kept in [`crate::guard::role::Role`].

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::kvrocks::admin_api::FailoverState;

/// The state of this proxy's failovers.
#[derive(Debug, Default)]
pub struct FailoverStatus {
    state: AtomicU8,
    running: AtomicBool,
    /// The running failover asks (or asked) the controller to switch the
    /// shard before its pause (cluster mode, timed): it fences this node
    /// and brings the nodes to the new topology itself.
    switch_first: AtomicBool,
}

impl FailoverStatus {
    pub fn state(&self) -> FailoverState {
        FailoverState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether a failover is under way.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Records the state a failover entered.
    pub fn set(&self, state: FailoverState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Claims the right to run a failover; `false` while another one runs.
    pub fn try_start(&self) -> bool {
        !self.running.swap(true, Ordering::AcqRel)
    }

    /// The running failover is about to ask the controller to switch the
    /// shard before fencing this node: until it ends, the controller's
    /// topology that demotes this node is its to bring, from the moment
    /// it asks (a controller may push within its answer).
    pub fn switch_first(&self) {
        self.switch_first.store(true, Ordering::Release);
    }

    /// Whether a running failover asks (or asked) the controller to switch
    /// the shard before fencing this node (and so fences it, and brings its
    /// node to the topology, itself).
    pub fn switches_first(&self) -> bool {
        self.switch_first.load(Ordering::Acquire) && self.is_running()
    }

    /// Frees the next failover.
    pub fn finished(&self) {
        self.switch_first.store(false, Ordering::Release);
        self.running.store(false, Ordering::Release);
    }
}
