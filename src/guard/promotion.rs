//! Fencing the old master before this node is promoted by a command that
//! passes through leasegate (`REPLICAOF NO ONE` / `SLAVEOF NO ONE`, as Redis
//! Sentinel sends it).
//!
//! Sentinel's planned failover promotes the replica without touching the
//! old master, which keeps taking writes until Sentinel reconfigures it:
//! writes that are lost. With a Sentinel lease source, the replica's
//! leasegate holds the promotion (the Gate answers the command with
//! [`crate::guard::gate::Wait::Fence`]) until the control plane has paused
//! writes at the old master's leasegate and seen this node catch up
//! (`control::sentinel`), then lets it through. The hold is bounded: a
//! master that cannot be reached (a crash, which is why Sentinel promotes)
//! holds nothing, and is fenced by its lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No promotion asked about.
    Idle,
    /// A promotion waits, until at most this instant, for the fence.
    Requested(Instant),
    /// The fence is done (or given up): the next ask goes on.
    Settled,
}

/// The promotion fence of one leasegate.
#[derive(Debug)]
pub struct PromotionFence {
    /// Set by a control-plane part that serves the requests (Sentinel).
    enabled: AtomicBool,
    state: Mutex<State>,
    requested: Notify,
}

impl Default for PromotionFence {
    fn default() -> Self {
        PromotionFence {
            enabled: AtomicBool::new(false),
            state: Mutex::new(State::Idle),
            requested: Notify::new(),
        }
    }
}

impl PromotionFence {
    /// Promotions are fenced from now on (someone serves [`Self::requested`]).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A promoting command asks whether it may go to the node: `Some(until)`
    /// to hold it that long (a fence is requested on the first ask), `None`
    /// to go on (the fence settled, or its bound passed).
    pub fn ask(&self, bound: Duration) -> Option<Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Idle => {
                let until = now + bound;
                *state = State::Requested(until);
                self.requested.notify_one();
                Some(until)
            }
            State::Requested(until) if now < until => Some(until),
            State::Requested(_) | State::Settled => {
                *state = State::Idle;
                None
            }
        }
    }

    /// Waits for a fence to be requested; its bound.
    pub async fn requested(&self) -> Instant {
        loop {
            let notified = self.requested.notified();
            if let State::Requested(until) = *self.lock() {
                return until;
            }
            notified.await;
        }
    }

    /// The fence is done, or given up: the held promotion goes on.
    pub fn settle(&self) {
        let mut state = self.lock();
        if matches!(*state, State::Requested(_)) {
            *state = State::Settled;
        }
    }

    /// Whether a held promotion may be asked about again.
    pub fn settled(&self) -> bool {
        !matches!(*self.lock(), State::Requested(until) if Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_promotion_is_held_until_the_fence_settles_then_goes_on_once() {
        let f = PromotionFence::default();
        let until = f.ask(Duration::from_secs(5)).expect("held");
        assert_eq!(
            f.requested().await,
            until,
            "the control plane sees the request"
        );
        assert_eq!(f.ask(Duration::from_secs(5)), Some(until), "still held");
        assert!(!f.settled());
        f.settle();
        assert!(f.settled());
        assert_eq!(f.ask(Duration::from_secs(5)), None, "goes on");
        assert!(
            f.ask(Duration::from_secs(5)).is_some(),
            "a later promotion is fenced again"
        );
    }

    #[test]
    fn an_unserved_fence_ends_at_its_bound() {
        let f = PromotionFence::default();
        assert!(f.ask(Duration::from_millis(1)).is_some());
        std::thread::sleep(Duration::from_millis(5));
        assert!(f.settled());
        assert_eq!(f.ask(Duration::from_millis(1)), None);
    }
}
