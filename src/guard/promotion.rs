//! Fencing the old master before this node is promoted by a command that
//! passes through leasegate: `REPLICAOF NO ONE` / `SLAVEOF NO ONE`, as Redis
//! Sentinel sends it, or a controller's `CLUSTERX SETNODES` naming this node
//! master.
//!
//! Neither Sentinel's failover nor kvrocks-controller's waits for the old
//! master: the replica is promoted while the old master keeps taking
//! writes until it is reconfigured (kvrocks-controller 1.2.0 pushes to
//! each node at its next probe, in any order) — writes that are lost. So
//! the replica's leasegate holds the promotion (the Gate answers the
//! command with [`crate::guard::gate::Wait::Fence`]) until the control
//! plane has paused writes at the old master's leasegate and seen this
//! node catch up (`control::sentinel`, `control::fence`), then lets it
//! through; where the old master's writes cannot all be here, the
//! promotion is refused (the controller sends it again). The hold is
//! bounded: a master that cannot be reached (a crash, which is why the
//! promotion comes) holds nothing, and is fenced by its lease.
//!
//! The same state machine holds the other side of a controller's switch:
//! its topology making this node a replica while the node is still master
//! waits until the new master has this node's writes
//! (`Role::step_down_fence`, served by `control::step_down_fence`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A promotion held for the fence: until when, and the topology that
/// promotes (a controller's `CLUSTERX SETNODES`: its nodes text and
/// version), which the old master is brought to once this node is master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRequest {
    pub until: Instant,
    pub topology: Option<(String, u64)>,
}

/// What a promoting command is told when it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Held until at most this instant.
    Hold(Instant),
    /// Goes to the node.
    Go,
    /// Refused with this reason: the old master still takes writes, or
    /// this node lacks some it acknowledged (the promotion is sent again).
    Refuse(String),
}

/// Where a promotion stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No promotion asked about.
    Idle,
    /// A promotion waits for the fence.
    Requested(FenceRequest),
    /// The fence for `topology` is done (or given up) at `at`: the next
    /// ask for the same topology, within the bound, goes on.
    Settled {
        topology: Option<(String, u64)>,
        at: Instant,
    },
    /// The fence for `topology` failed where going on would lose writes:
    /// the next ask for it is refused with `why`.
    Refused {
        topology: Option<(String, u64)>,
        why: String,
    },
}

/// The promotion fence of one leasegate.
#[derive(Debug)]
pub struct PromotionFence {
    /// Set by a control-plane part that serves the requests (Sentinel, the
    /// controller's poller).
    enabled: AtomicBool,
    /// `REPLICAOF NO ONE` is fenced too (Sentinel's promotion), not only a
    /// controller's topology.
    replicaof: AtomicBool,
    /// How long a promotion is held at most, in ms.
    bound_ms: AtomicU64,
    state: Mutex<State>,
    requested: Notify,
    /// Why a controller's topology is refused when its fence was not
    /// served within the bound.
    unserved: &'static str,
}

impl Default for PromotionFence {
    fn default() -> Self {
        PromotionFence::refusing_unserved_with("the old master was not fenced in time")
    }
}

impl PromotionFence {
    /// A fence whose unserved topology is refused with `why` (the same
    /// state machine holds a demoting topology: `Role::step_down_fence`).
    pub fn refusing_unserved_with(why: &'static str) -> Self {
        PromotionFence {
            enabled: AtomicBool::new(false),
            replicaof: AtomicBool::new(false),
            bound_ms: AtomicU64::new(0),
            state: Mutex::new(State::Idle),
            requested: Notify::new(),
            unserved: why,
        }
    }

    /// Promotions are fenced from now on (someone serves [`Self::requested`]),
    /// each held at most `bound`: `REPLICAOF NO ONE` too where `replicaof`
    /// (Sentinel), else only a controller's topology.
    pub fn enable(&self, bound: Duration, replicaof: bool) {
        self.bound_ms
            .store(bound.as_millis() as u64, Ordering::Release);
        self.replicaof.store(replicaof, Ordering::Release);
        self.enabled.store(true, Ordering::Release);
    }

    /// Whether `REPLICAOF NO ONE` passing through is fenced.
    pub fn fences_replicaof(&self) -> bool {
        self.enabled() && self.replicaof.load(Ordering::Acquire)
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// How long a promotion is held at most.
    pub fn bound(&self) -> Duration {
        Duration::from_millis(self.bound_ms.load(Ordering::Acquire))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A promoting command asks whether it may go to the node: held (a
    /// fence is requested on the first ask), on its way once the fence
    /// settled or its bound passed, or refused once.
    ///
    /// An outcome answers only the topology it was reached for, and a
    /// settled fence only within the bound: a held command that never
    /// asked again (its node took that version by another way, or the
    /// lease came first) left its `Settled` behind, and the next, later
    /// topology went to the node unfenced (walkthrough 26: 1,888 and 4,466
    /// acknowledged writes lost).
    pub fn ask(&self, topology: Option<(String, u64)>) -> Ask {
        let mut state = self.lock();
        let now = Instant::now();
        match &*state {
            State::Requested(r) if now < r.until => Ask::Hold(r.until),
            // A controller's topology goes on only once fenced (it is sent
            // again); Sentinel's promotion goes on (its old master is
            // fenced by its lease).
            State::Requested(r) if r.topology.is_some() => {
                *state = State::Idle;
                Ask::Refuse(self.unserved.into())
            }
            State::Requested(_) => {
                *state = State::Idle;
                Ask::Go
            }
            State::Settled { topology: t, at } if *t == topology && now < *at + self.bound() => {
                *state = State::Idle;
                Ask::Go
            }
            State::Refused { topology: t, why } if *t == topology => {
                let why = why.clone();
                *state = State::Idle;
                Ask::Refuse(why)
            }
            // Nothing asked about, or an outcome for another topology (or
            // a stale one): this one is fenced afresh.
            State::Idle | State::Settled { .. } | State::Refused { .. } => {
                let until = now + self.bound();
                *state = State::Requested(FenceRequest { until, topology });
                self.requested.notify_one();
                Ask::Hold(until)
            }
        }
    }

    /// Waits for a fence to be requested.
    pub async fn requested(&self) -> FenceRequest {
        loop {
            let notified = self.requested.notified();
            if let State::Requested(r) = &*self.lock() {
                return r.clone();
            }
            notified.await;
        }
    }

    /// The next fence requested; `None` once `shutdown` is cancelled.
    pub async fn next_request(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<FenceRequest> {
        tokio::select! {
            r = self.requested() => Some(r),
            _ = shutdown.cancelled() => None,
        }
    }

    /// The fence is done, or given up: the held promotion goes on.
    pub fn settle(&self) {
        let mut state = self.lock();
        if let State::Requested(r) = &*state {
            *state = State::Settled {
                topology: r.topology.clone(),
                at: Instant::now(),
            };
        }
    }

    /// The fence failed where the promotion would lose writes: it is
    /// refused, with `why`.
    pub fn refuse(&self, why: String) {
        let mut state = self.lock();
        if let State::Requested(r) = &*state {
            *state = State::Refused {
                topology: r.topology.clone(),
                why,
            };
        }
    }

    /// Whether a held promotion may be asked about again.
    pub fn settled(&self) -> bool {
        !matches!(&*self.lock(), State::Requested(r) if Instant::now() < r.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_promotion_is_held_until_the_fence_settles_then_goes_on_once() {
        let f = PromotionFence::default();
        f.enable(Duration::from_secs(5), true);
        let topology = Some(("nodes".to_string(), 7));
        let Ask::Hold(until) = f.ask(topology.clone()) else {
            panic!("held");
        };
        assert_eq!(
            f.requested().await,
            FenceRequest {
                until,
                topology: topology.clone()
            },
            "the control plane sees the request"
        );
        assert_eq!(f.ask(topology.clone()), Ask::Hold(until), "still held");
        assert!(!f.settled());
        f.settle();
        assert!(f.settled());
        assert_eq!(f.ask(topology.clone()), Ask::Go, "goes on");
        assert!(
            matches!(f.ask(topology), Ask::Hold(_)),
            "a later promotion is fenced again"
        );
    }

    #[test]
    fn a_settled_fence_lets_only_its_own_topology_through() {
        let f = PromotionFence::default();
        f.enable(Duration::from_secs(5), false);
        let v7 = Some(("nodes".to_string(), 7));
        let v9 = Some(("other nodes".to_string(), 9));
        assert!(matches!(f.ask(v7.clone()), Ask::Hold(_)));
        f.settle();
        // The command held for v7 never asks again (its node took v7 by
        // another way): a later topology is fenced afresh.
        assert!(
            matches!(f.ask(v9.clone()), Ask::Hold(_)),
            "v9 is not let through by v7's fence"
        );
        f.settle();
        assert_eq!(f.ask(v9), Ask::Go);
    }

    #[test]
    fn a_settled_fence_goes_stale_at_its_bound() {
        let f = PromotionFence::default();
        f.enable(Duration::from_millis(20), false);
        let v7 = Some(("nodes".to_string(), 7));
        assert!(matches!(f.ask(v7.clone()), Ask::Hold(_)));
        f.settle();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            matches!(f.ask(v7), Ask::Hold(_)),
            "asked again long after, it is fenced again"
        );
    }

    #[test]
    fn a_refusal_answers_only_its_own_topology() {
        let f = PromotionFence::default();
        f.enable(Duration::from_secs(5), false);
        let v7 = Some(("nodes".to_string(), 7));
        let v9 = Some(("other nodes".to_string(), 9));
        assert!(matches!(f.ask(v7), Ask::Hold(_)));
        f.refuse("behind".into());
        assert!(
            matches!(f.ask(v9), Ask::Hold(_)),
            "v9 is fenced, not refused"
        );
    }

    #[test]
    fn an_unserved_fence_ends_at_its_bound() {
        let f = PromotionFence::default();
        f.enable(Duration::from_millis(1), true);
        assert!(matches!(f.ask(None), Ask::Hold(_)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(f.settled());
        assert_eq!(f.ask(None), Ask::Go);
    }

    #[test]
    fn an_unserved_topology_fence_refuses_at_its_bound() {
        let f = PromotionFence::default();
        f.enable(Duration::from_millis(1), false);
        assert!(matches!(f.ask(Some(("n".into(), 2))), Ask::Hold(_)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(f.ask(None), Ask::Refuse(_)));
    }

    #[test]
    fn a_refused_fence_refuses_the_promotion_once() {
        let f = PromotionFence::default();
        f.enable(Duration::from_secs(5), true);
        assert!(matches!(f.ask(None), Ask::Hold(_)));
        f.refuse("behind".into());
        assert!(f.settled());
        assert_eq!(f.ask(None), Ask::Refuse("behind".into()));
        assert!(
            matches!(f.ask(None), Ask::Hold(_)),
            "the next is held again"
        );
    }
}
