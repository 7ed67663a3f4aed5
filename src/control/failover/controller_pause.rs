//! Timing the controller's `CLIENT PAUSE` (`pause.promotion_timing`): the
//! failover of kvrocks-controller PR #389, run by the controller, with the
//! promotion at once instead of 0–100 ms after the pause.
//!
//! That controller pauses this (the master's) leasegate with `CLIENT PAUSE
//! <ms> WRITE`, polls both nodes' offsets until the replica caught up, and
//! pushes the topology that makes the replica master. A Kvrocks replica
//! becomes master at the next tick of its replication timer
//! ([`super::timing`]), so the held writes wait for that tick. Here the
//! pause begins (and the `CLIENT PAUSE` is answered) at `tick − lead`, where
//! `lead` is what the controller is expected to take from its `CLIENT
//! PAUSE`'s answer to the promotion's arrival; writes go on meanwhile,
//! under the lease. At the tick the replica's link is poked as in
//! leasegate's own failover.
//!
//! What is known here, and what is not:
//!
//! * **The tick's phase**: from the replica's link through this leasegate
//!   ([`crate::guard::replicas`]), as for leasegate's own failover. The
//!   controller does not say which replica it promotes: the pause is timed
//!   only when exactly one replica replicates through this leasegate (a
//!   shard of a master and one replica), and only for a Kvrocks node.
//! * **The tick's grid**: this host's coarse clock where the replica is on
//!   this host (a loopback link), else the whole window of a coarse step
//!   (the replica's leasegate, which reports its grid, is not known here).
//! * **The controller's time**: its push goes to the replica's leasegate,
//!   not here; but after the pause it reads this node's offset (`INFO`, on
//!   a control connection) before it promotes: the last such read before
//!   the promotion, plus [`PUSH_AFTER_READ`] (its read of the replica and
//!   the push), is what one run took. The lead is the slowest of the last
//!   eight, plus 2 ms of slack ([`WorkMemory`], `Estimate::Highest`: a
//!   miss costs a whole period, each ms of lead a ms of every stall).
//! * **The promotion**: a Kvrocks replica that becomes master closes its
//!   replication link. A link that closes at the planned tick counts
//!   `held`, a period later `missed`. A controller that reads no offset
//!   here leaves only that: then a miss adds half the lead, a hit takes
//!   0.5 ms off it.
//!
//! A controller that promotes another node, or none, leaves the link open:
//! the outcome is `unknown` and nothing is learned. A pause that is not
//! timed begins at once, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{debug, info};

use super::promotion::poke_at_tick;
use super::timing::{self, Estimate, Grid, Plan, RoundTrip, Ticks, WorkMemory};
use crate::guard::pause_timing::PauseTiming;
use crate::guard::replicas::ReplicaLink;
use crate::guard::role::Role;

/// The lead before any timed pause ran: the controller's offset polls
/// (every 10 ms in PR #389) and its push.
const LEAD_FIRST: Duration = Duration::from_millis(20);
const LEAD_MIN: Duration = Duration::from_millis(2);
/// Past this a timed pause saves little over an untimed one (50 ms on
/// average).
const LEAD_MAX: Duration = Duration::from_millis(60);
/// What a hit takes off the lead, where no offset read was seen.
const LEAD_STEP_DOWN: Duration = Duration::from_micros(500);
/// From the controller's last read of this node's offset to its
/// promotion's arrival at the replica: its read of the replica's offset
/// and its push, over the network.
pub const PUSH_AFTER_READ: Duration = Duration::from_millis(2);
/// Added to the slowest recent run: the controller's runs vary by a few
/// ms (a fake PR #389 controller on a 2-core host: 2.1–5.8 ms; planned
/// with 0.5 ms over the slowest, 2 of 10 missed by 0.2–1.2 ms).
const LEAD_SLACK: Duration = Duration::from_micros(1500);
/// How long after the planned tick the link is watched for the promotion.
const WATCH_AFTER: Duration = Duration::from_millis(1000);

/// Times the controller's `CLIENT PAUSE` ([`PauseTiming`]).
#[derive(Debug)]
pub struct ControllerPause {
    role: Arc<Role>,
    enabled: AtomicBool,
    learned: Arc<Learned>,
    /// The plan of the last [`PauseTiming::begin_at`], until it begins.
    planned: Mutex<Option<Planned>>,
}

#[derive(Debug, Clone)]
struct Planned {
    ticks: Ticks,
    plan: Plan,
    link: ReplicaLink,
    lead: Duration,
}

/// What timed pauses taught, and their count by outcome.
#[derive(Debug)]
struct Learned {
    /// What the controller took from the pause to the promotion's arrival.
    lead: WorkMemory,
    /// The controller's last read of this node's offset (`INFO` on a
    /// control connection).
    last_read: Mutex<Option<Instant>>,
    /// `leasegate_controller_pause_timing_total{outcome}`.
    outcomes: Family<Vec<(String, String)>, Counter>,
}

/// The outcomes counted, each from the start.
const OUTCOMES: [&str; 3] = ["held", "missed", "unknown"];

impl ControllerPause {
    pub fn new(role: Arc<Role>, enabled: bool) -> ControllerPause {
        ControllerPause {
            role,
            enabled: AtomicBool::new(enabled),
            learned: Arc::new(Learned {
                lead: WorkMemory::new(Estimate::Highest, LEAD_FIRST),
                last_read: Mutex::new(None),
                outcomes: Family::default(),
            }),
            planned: Mutex::new(None),
        }
    }

    /// `pause.promotion_timing` (reload).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    pub fn register(&self, registry: &mut Registry) {
        for outcome in OUTCOMES {
            let _ = self.learned.outcomes.get_or_create(&label(outcome));
        }
        registry.register(
            "controller_pause_timing",
            "The controller's CLIENT PAUSE begun so that a Kvrocks replica's promotion follows at once (pause.promotion_timing), by outcome: held (the replica was promoted at the tick planned for), missed (a later one), unknown (no promotion seen)",
            self.learned.outcomes.clone(),
        );
    }

    /// The one replica link whose tick a pause can be timed for, or why not.
    fn link(&self) -> Result<ReplicaLink, &'static str> {
        // Kvrocks: as the probe found, or a node that took a `CLUSTERX
        // SETNODES` (the probe may be off in cluster mode).
        if !self.role.node.is_kvrocks() && self.role.node_topology() == 0 {
            return Err("the node is not known to be Kvrocks");
        }
        let mut links = self.role.replicas.list().into_iter();
        match (links.next(), links.next()) {
            (Some(link), None) => Ok(link),
            (None, _) => Err("no replica replicates through this leasegate"),
            (Some(_), Some(_)) => {
                Err("several replicas: the controller does not say which it promotes")
            }
        }
    }
}

impl PauseTiming for ControllerPause {
    fn begin_at(&self, now: Instant) -> Option<Instant> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let link = match self.link() {
            Ok(link) => link,
            Err(why) => {
                debug!(why, "the controller's CLIENT PAUSE is not timed");
                return None;
            }
        };
        let ticks = Ticks::from_link(link.first_bytes, local_grid(&link));
        let lead = (self.learned.lead.estimate() + LEAD_SLACK).min(LEAD_MAX);
        let plan = timing::plan(&ticks, now, lead);
        if let Ok(mut planned) = self.planned.lock() {
            *planned = Some(Planned {
                ticks,
                plan,
                link,
                lead,
            });
        }
        Some(plan.pause_at)
    }

    fn began(&self, at: Instant) {
        let Some(planned) = self.planned.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        if let Ok(mut read) = self.learned.last_read.lock() {
            *read = None;
        }
        let (role, learned) = (Arc::clone(&self.role), Arc::clone(&self.learned));
        // On the session's runtime: pokes at the tick, then the promotion
        // watched for.
        tokio::spawn(async move {
            let pokes = poke_at_tick(&planned.ticks, &planned.plan, &planned.link);
            let closed = link_closed(&role, &planned.link, planned.plan.tick + WATCH_AFTER);
            let (_, closed) = tokio::join!(pokes, closed);
            learned.judge(&planned, at, closed);
        });
    }

    fn offset_read(&self, at: Instant) {
        if let Ok(mut read) = self.learned.last_read.lock() {
            *read = Some(at);
        }
    }
}

impl Learned {
    /// What came of a pause begun at `began` for `planned`: the link closed
    /// at `closed` (the promotion), or not at all.
    fn judge(&self, planned: &Planned, began: Instant, closed: Option<Instant>) {
        let Some(closed) = closed else {
            self.count("unknown");
            info!(
                lead_ms = ms(planned.lead),
                "timed CLIENT PAUSE: the replica's link stayed open (no promotion, or another node's)"
            );
            return;
        };
        let after_tick = closed.saturating_duration_since(planned.plan.tick);
        let held = timing::judge(after_tick) == crate::kvrocks::admin_api::TimingOutcome::Held;
        // What the controller took: seen in its last offset read, else
        // only bounded by the outcome.
        let read = self.last_read.lock().ok().and_then(|r| *r);
        let took = match read.filter(|r| *r >= began && *r <= closed) {
            Some(read) => read - began + PUSH_AFTER_READ,
            None if held => planned.lead.saturating_sub(LEAD_STEP_DOWN).max(LEAD_MIN),
            None => (planned.lead + planned.lead / 2).min(LEAD_MAX),
        };
        self.lead.record(took);
        let outcome = if held { "held" } else { "missed" };
        self.count(outcome);
        info!(
            outcome,
            lead_ms = ms(planned.lead),
            controller_ms = ms(took),
            offset_read_seen = read.is_some(),
            next_lead_ms = ms(self.lead.estimate() + LEAD_SLACK),
            pause_to_promotion_ms = ms(closed.saturating_duration_since(began)),
            after_tick_ms = ms(after_tick),
            "timed CLIENT PAUSE: the replica's promotion closed its link"
        );
    }

    fn count(&self, outcome: &str) {
        self.outcomes.get_or_create(&label(outcome)).inc();
    }
}

fn label(outcome: &str) -> Vec<(String, String)> {
    vec![("outcome".to_string(), outcome.to_string())]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// This host's coarse-clock grid, for a replica on this host (a loopback
/// link); `None` elsewhere, or while the clock's lag is not yet measured
/// (measuring it spins the CPU: not on a session's thread).
fn local_grid(link: &ReplicaLink) -> Option<(Grid, Duration)> {
    if !link.peer.is_loopback() || timing::known_lag().is_none() {
        return None;
    }
    let start = RoundTrip::start();
    let view = timing::host_clock()?;
    Grid::from_view(view, &RoundTrip::back(start))
}

/// When `link` left the registry (its session ended: the replica closed
/// it), if before `deadline`.
async fn link_closed(role: &Role, link: &ReplicaLink, deadline: Instant) -> Option<Instant> {
    loop {
        let open = role
            .replicas
            .list()
            .iter()
            .any(|l| Arc::ptr_eq(&l.poke, &link.poke));
        let now = Instant::now();
        if !open {
            return Some(now);
        }
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(lead: Duration) -> Planned {
        let link = ReplicaLink {
            peer: "10.0.0.2".parse().expect("ip"),
            listening_port: Some(6666),
            first_bytes: Instant::now(),
            kernel_time: true,
            command: "psync",
            poke: Arc::default(),
        };
        let ticks = Ticks::from_link(link.first_bytes, None);
        let plan = timing::plan(&ticks, Instant::now(), lead);
        Planned {
            ticks,
            plan,
            link,
            lead,
        }
    }

    fn learned() -> Learned {
        Learned {
            lead: WorkMemory::new(Estimate::Highest, LEAD_FIRST),
            last_read: Mutex::new(None),
            outcomes: Family::default(),
        }
    }

    fn count(l: &Learned, outcome: &str) -> u64 {
        l.outcomes.get_or_create(&label(outcome)).get()
    }

    #[test]
    fn the_controllers_offset_read_is_what_it_took() {
        let l = learned();
        let p = planned(Duration::from_millis(20));
        let began = p.plan.pause_at;
        *l.last_read.lock().expect("lock") = Some(began + Duration::from_millis(3));
        l.judge(&p, began, Some(p.plan.tick + Duration::from_micros(300)));
        assert_eq!(count(&l, "held"), 1);
        // 3 ms to the read, the push after it, and the estimate's slack.
        let expected = Duration::from_millis(3) + PUSH_AFTER_READ + Duration::from_micros(500);
        assert_eq!(l.lead.estimate(), expected);
        // A read from before the pause is not this run's.
        *l.last_read.lock().expect("lock") = Some(began - Duration::from_millis(1));
        l.judge(&p, began, Some(p.plan.tick + Duration::from_millis(100)));
        assert_eq!(count(&l, "missed"), 1);
        assert!(
            l.lead.estimate() >= Duration::from_millis(30),
            "a miss grows the lead by half"
        );
    }

    #[test]
    fn without_a_read_a_hit_shrinks_the_lead_and_an_open_link_teaches_nothing() {
        let l = learned();
        let p = planned(Duration::from_millis(10));
        let began = p.plan.pause_at;
        l.judge(&p, began, None);
        assert_eq!(count(&l, "unknown"), 1);
        assert_eq!(l.lead.estimate(), LEAD_FIRST, "nothing recorded");
        l.judge(&p, began, Some(p.plan.tick));
        assert_eq!(
            l.lead.estimate(),
            Duration::from_millis(10) - LEAD_STEP_DOWN + Duration::from_micros(500)
        );
    }
}
