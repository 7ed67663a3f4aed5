//! Promotion timing: when a failover pauses writes, so that a Kvrocks
//! replica's promotion follows the pause at once instead of 0–100 ms later.
//!
//! A Kvrocks replica becomes master only at the next tick of its
//! replication thread's 100 ms timer (`reference/KVROCKS-PROMOTION.md`):
//! `SLAVEOF NO ONE` (or the `CLUSTERX SETNODES` that names it master) sets
//! a stop flag and waits for the thread, whose event loop sees the flag
//! only when that timer fires. Held writes wait all that time.
//!
//! What is known of the tick, and from where:
//!
//! * **Its phase.** The timer is armed just after the replication thread
//!   connects to its master and just before its first bytes leave; libevent
//!   then fires it at `arm + k·100 ms` (a persistent timer is re-armed from
//!   its previous time). That connection passes through the master's
//!   leasegate, which notes the kernel's receive time of its first bytes
//!   ([`crate::guard::replicas`], [`crate::proxy::rxtime`]).
//! * **Its grid.** libevent reads `CLOCK_MONOTONIC_COARSE`, which moves in
//!   steps of one kernel tick (4 ms at HZ 250): the arm time, and so every
//!   tick, is one of that clock's values, and the timer fires at the
//!   replica loop's first wake after the coarse clock reached it. The
//!   target's leasegate (on the replica's host) reports where its coarse
//!   clock ticks (`/v1/status` `clock`), which turns a ±4 ms window into
//!   one grid point ([`Grid`]).
//!
//! The plan ([`plan`]): pause at `tick − margin − work`, where `work` is
//! what recent failovers took from the pause to the promotion's send
//! (waiting for writes in flight, the replica's catch-up, the fencing:
//! [`WorkMemory`]). The wait before the
//! pause is at most one period: part of the failover's run time, never of
//! a client's stall.
//!
//! Where it applies: only a Kvrocks replica whose replication link passes
//! through this leasegate has a known phase. A node that promotes at once
//! (Redis; a Kvrocks that would wake its loop on stop) is not waited for:
//! the failover asks the node what it is first, and reports `unused`.
//! Whether the timing held is judged by the promotion's own time
//! ([`judge`]): a miss costs one period, and the failover completes anyway.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kvrocks::admin_api::{ClockView, TimingOutcome};
use crate::proxy::rxtime;

/// The period of Kvrocks' replication timer (`timeval tmo{0, 100000}`).
pub const PERIOD: Duration = Duration::from_millis(100);

/// The replica arms its timer after its connection is up and before its
/// first bytes leave; they reach this leasegate within this much (the
/// loop's first turn and the one-way delay).
const ARM_WINDOW: Duration = Duration::from_micros(500);

/// The coarse clock's step assumed where the target's is unknown.
const UNKNOWN_STEP: Duration = Duration::from_millis(4);

/// The plan sends the promotion this long before the earliest moment the
/// tick may fire: the command's transit and processing, the clock
/// mapping's error, and room for the work to run long.
const SEND_MARGIN: Duration = Duration::from_millis(1);

/// A promotion sent later than this before the earliest fire may miss the
/// tick: the failover tries the next one instead ([`Plan::send_by`]).
const LATE_MARGIN: Duration = Duration::from_micros(300);

/// A promotion that took longer than this waited for a later tick.
pub const MISSED_AFTER: Duration = Duration::from_millis(50);

/// A replica host's coarse clock ticks, in this process's clock: at
/// `origin + n·step`, each shown `lag` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    origin: Instant,
    step: Duration,
    lag: Duration,
}

impl Grid {
    pub fn new(origin: Instant, step: Duration, lag: Duration) -> Option<Grid> {
        (!step.is_zero() && step <= Duration::from_millis(100) && lag < step).then_some(Grid {
            origin,
            step,
            lag,
        })
    }

    /// The last grid point at or before `t`.
    pub fn floor(&self, t: Instant) -> Instant {
        let step = self.step.as_nanos();
        if t >= self.origin {
            let steps = (t - self.origin).as_nanos() / step;
            self.origin + nanos(steps * step)
        } else {
            let steps = (self.origin - t).as_nanos().div_ceil(step);
            self.origin - nanos(steps * step)
        }
    }

    /// Where a target's coarse clock ticks, from its `clock` answered
    /// within `trip`, and how far off that may be: nothing when the answer's
    /// monotonic time lies within the trip (the same host, the same clock),
    /// else half the round trip (the answer taken as its midpoint).
    pub fn from_view(view: ClockView, trip: &RoundTrip) -> Option<(Grid, Duration)> {
        let rtt = trip.received.saturating_duration_since(trip.sent);
        let theirs = Duration::from_nanos(view.monotonic_ns);
        let (answered, error) = match theirs.checked_sub(trip.sent_monotonic) {
            Some(after) if theirs <= trip.received_monotonic => (trip.sent + after, Duration::ZERO),
            _ => (trip.sent + rtt / 2, rtt / 2),
        };
        let origin = answered.checked_sub(Duration::from_nanos(view.since_tick_ns))?;
        let grid = Grid::new(
            origin,
            Duration::from_nanos(view.tick_ns),
            Duration::from_nanos(view.lag_ns),
        )?;
        Some((grid, error))
    }

    /// What the coarse clock reads at `t`: the last grid point shown by then.
    fn reads(&self, t: Instant) -> Instant {
        self.floor(t.checked_sub(self.lag).unwrap_or(t))
    }
}

/// One request to a target's leasegate: when it left and its answer came
/// back, by this process's clock and by `CLOCK_MONOTONIC`.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    pub sent: Instant,
    pub received: Instant,
    pub sent_monotonic: Duration,
    pub received_monotonic: Duration,
}

impl RoundTrip {
    /// The moment a request leaves (see [`RoundTrip::back`]).
    pub fn start() -> (Instant, Duration) {
        (Instant::now(), monotonic())
    }

    /// The round trip of a request that left at `start`, answered now.
    pub fn back(start: (Instant, Duration)) -> RoundTrip {
        let received_monotonic = monotonic();
        RoundTrip {
            sent: start.0,
            received: Instant::now(),
            sent_monotonic: start.1,
            received_monotonic,
        }
    }

    pub fn rtt(&self) -> Duration {
        self.received.saturating_duration_since(self.sent)
    }
}

fn monotonic() -> Duration {
    rxtime::clock(libc::CLOCK_MONOTONIC).unwrap_or_default()
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// This host's coarse clock now, as `/v1/status` reports it.
pub fn host_clock() -> Option<ClockView> {
    let lag = lag();
    let mono = rxtime::clock(libc::CLOCK_MONOTONIC)?;
    let coarse = rxtime::clock(libc::CLOCK_MONOTONIC_COARSE)?;
    let step = rxtime::resolution(libc::CLOCK_MONOTONIC_COARSE)?;
    Some(ClockView {
        tick_ns: u64::try_from(step.as_nanos()).ok()?,
        since_tick_ns: u64::try_from(mono.saturating_sub(coarse).as_nanos()).ok()?,
        lag_ns: u64::try_from(lag?.as_nanos()).ok()?,
        monotonic_ns: u64::try_from(mono.as_nanos()).ok()?,
    })
}

/// The lag once measured (a failed measurement is not kept: the next
/// caller measures again).
static LAG: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// The lag, measured now if it was not yet.
fn lag() -> Option<Duration> {
    if let Some(lag) = LAG.get() {
        return Some(*lag);
    }
    let measured = measure_lag()?;
    // A lag of a whole step or more is a measurement the scheduler spoiled
    // (the thread ran late after every step seen): not kept.
    let step = rxtime::resolution(libc::CLOCK_MONOTONIC_COARSE)?;
    if measured >= step {
        return None;
    }
    Some(*LAG.get_or_init(|| measured))
}

/// How late the coarse clock shows a tick: the least of five observed
/// steps (watched for at most a few ticks each: a few milliseconds, once
/// per process; more than one, as a thread that ran late after a step
/// sees it late).
fn measure_lag() -> Option<Duration> {
    let mut lag: Option<Duration> = None;
    for _ in 0..5 {
        let before = rxtime::clock(libc::CLOCK_MONOTONIC_COARSE)?;
        let give_up = Instant::now() + Duration::from_millis(50);
        loop {
            // Whether the time is up is decided before the clocks are read:
            // a thread descheduled past the deadline looks once more.
            let late = Instant::now() > give_up;
            let coarse = rxtime::clock(libc::CLOCK_MONOTONIC_COARSE)?;
            let mono = rxtime::clock(libc::CLOCK_MONOTONIC)?;
            if coarse != before {
                let seen = mono.saturating_sub(coarse);
                lag = Some(lag.map_or(seen, |l| l.min(seen)));
                break;
            }
            if late {
                return lag;
            }
            std::hint::spin_loop();
        }
    }
    lag
}

/// Measures the lag now (a server does at start, so that its first
/// `/v1/status` does not wait for it).
pub fn warm_up() {
    // A loaded host's coarse clock can fall a whole step behind, which
    // spoils a measurement: try again a little later (at most ~1 s).
    for _ in 0..20 {
        if lag().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lag measured here, if it was (an upgrade hands it to the successor).
pub fn known_lag() -> Option<Duration> {
    LAG.get().copied()
}

/// Takes the lag the predecessor measured on this host, instead of
/// spinning on a CPU for up to three coarse ticks while clients wait on
/// the same host (an upgrade); no effect once measured here.
pub fn adopt_lag(lag: Duration) {
    let _ = LAG.set(lag);
}

/// A replica's replication ticks as known here: the timer may fire at the
/// earliest at `earliest + k·PERIOD` (the nominal tick as its coarse clock
/// shows it), or up to `spread` later where the arm time is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    earliest: Instant,
    spread: Duration,
}

impl Ticks {
    /// From the moment the link's first bytes arrived, and the replica
    /// host's grid where known (and how far off its mapping may be).
    pub fn from_link(first_bytes: Instant, grid: Option<(Grid, Duration)>) -> Ticks {
        let armed_from = first_bytes.checked_sub(ARM_WINDOW).unwrap_or(first_bytes);
        match grid {
            Some((grid, error)) => {
                // The timer was armed at what the coarse clock read then.
                let early = grid.reads(armed_from.checked_sub(error).unwrap_or(armed_from));
                let late = grid.reads(first_bytes + error);
                Ticks {
                    earliest: early + grid.lag,
                    spread: late - early,
                }
            }
            None => Ticks {
                earliest: armed_from.checked_sub(UNKNOWN_STEP).unwrap_or(armed_from),
                spread: UNKNOWN_STEP + ARM_WINDOW,
            },
        }
    }

    /// How far the nominal tick may lie after the earliest one.
    pub fn spread(&self) -> Duration {
        self.spread
    }

    /// The first (earliest possible) tick at or after `t`.
    pub fn at_or_after(&self, t: Instant) -> Instant {
        if t <= self.earliest {
            return self.earliest;
        }
        let period = PERIOD.as_nanos();
        let periods = (t - self.earliest).as_nanos().div_ceil(period);
        self.earliest + nanos(periods * period)
    }
}

/// When to pause, and the tick the promotion is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub pause_at: Instant,
    /// The earliest moment the aimed-at tick may fire.
    pub tick: Instant,
}

impl Plan {
    /// The promotion must be sent by then to meet the tick.
    pub fn send_by(&self) -> Instant {
        self.tick.checked_sub(LATE_MARGIN).unwrap_or(self.tick)
    }
}

/// The plan for a failover whose pause-to-promotion work takes `work`,
/// planned at `now`: the first tick that can be met, less the work and the
/// margin. `pause_at` is within one period of `now`.
pub fn plan(ticks: &Ticks, now: Instant, work: Duration) -> Plan {
    let lead = SEND_MARGIN + work;
    let tick = ticks.at_or_after(now + lead);
    Plan {
        pause_at: tick - lead,
        tick,
    }
}

/// Whether a promotion that took `promotion` met the tick it was aimed at.
pub fn judge(promotion: Duration) -> TimingOutcome {
    if promotion < MISSED_AFTER {
        TimingOutcome::Held
    } else {
        TimingOutcome::Missed
    }
}

/// What recent failovers took for one part of their work, and what the
/// next plan assumes of it. How much room a plan leaves depends on what a
/// plan too short costs ([`Estimate`]).
#[derive(Debug)]
pub struct WorkMemory {
    samples: Mutex<VecDeque<Duration>>,
    estimate: Estimate,
    /// The estimate before any failover ran.
    first: Duration,
}

/// How [`WorkMemory`] turns its samples into the next plan's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimate {
    /// The median, plus slack: a plan too short costs little (the pause
    /// to the replica's catch-up: a late attempt ends its pause of a few
    /// ms and the next tick is tried), one too long costs its excess in
    /// every stall, so the rare slow attempt (a replica that just
    /// attached) must not lead.
    Median,
    /// The highest, plus slack: a plan too short costs a whole period
    /// (the controller's switch: once it has switched nothing can be
    /// tried again, and the promotion waits for the next tick, ~100 ms),
    /// so the plan leaves room for the slowest recent one. Measured with
    /// the real kvrocks-controller: its shard failover and topology read
    /// took 5–15 ms; planned at the median, 7 of 20 promotions missed.
    Highest,
}

/// How many recent attempts [`WorkMemory`] keeps.
const WORK_SAMPLES: usize = 8;
/// The catch-up's estimate before any failover ran.
const WORK_FIRST: Duration = Duration::from_millis(2);
/// The controller's switch's estimate before any failover ran: generous,
/// as a switch planned too short misses its tick.
const SWITCH_FIRST: Duration = Duration::from_millis(20);
/// Bounds of the estimate.
const WORK_MIN: Duration = Duration::from_micros(500);
const WORK_MAX: Duration = Duration::from_millis(60);
/// Added to the median or the highest: the spread between attempts.
const WORK_SLACK: Duration = Duration::from_micros(500);
/// Added to the controller's switch on top of [`WORK_SLACK`] (2 ms over the
/// slowest recent switch in all, as for the lead of the controller's own
/// `CLIENT PAUSE`): a switch is followed by more than its estimate covers
/// (the target's role read, the `SETNODES` on its way), and a plan a
/// little short costs a whole period. Measured with the real
/// kvrocks-controller 1.2.0 (seed 20261221, 10 timed failovers): at 0.5 ms
/// over the slowest, 3 of 10 missed, most with the switch itself in time.
pub const SWITCH_SLACK: Duration = Duration::from_micros(1500);
/// Cluster mode, the controller asked before the pause: what the
/// promotion's `CLUSTERX SETNODES` needs over a `SLAVEOF NO ONE` (whose
/// sending [`SEND_MARGIN`] covers). Kvrocks parses the topology (~1 ms
/// idle, `../shared/reference/KVROCKS-PROMOTION.md`, more on a busy host)
/// before it stops replication. Measured with the real kvrocks-controller
/// on a loaded 2-core host (3,000 SET/s, 30 timed failovers per run, two
/// runs each): at 1.5 ms 8 of 55 promotions missed their tick, at 3 ms 2
/// of 58 (a miss costs a period, each ms here a ms of every stall).
pub const SETNODES_LEAD: Duration = Duration::from_millis(3);

impl WorkMemory {
    pub fn new(estimate: Estimate, first: Duration) -> WorkMemory {
        WorkMemory {
            samples: Mutex::new(VecDeque::with_capacity(WORK_SAMPLES)),
            estimate,
            first,
        }
    }

    /// The work the next plan assumes: the median (the upper one of an
    /// even count) or the highest of the recent samples, plus slack.
    pub fn estimate(&self) -> Duration {
        let Ok(samples) = self.samples.lock() else {
            return self.first;
        };
        if samples.is_empty() {
            return self.first;
        }
        let mut sorted: Vec<Duration> = samples.iter().copied().collect();
        sorted.sort_unstable();
        let at = match self.estimate {
            Estimate::Median => sorted.len() / 2,
            Estimate::Highest => sorted.len() - 1,
        };
        (sorted[at] + WORK_SLACK).clamp(WORK_MIN, WORK_MAX)
    }

    pub fn record(&self, work: Duration) {
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() == WORK_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(work);
        }
    }
}

/// What this leasegate's failovers took, for the next plan: from the pause
/// to the replica's catch-up, and (cluster mode) from the catch-up to the
/// promotion's send (the fencing, the controller's shard failover and its
/// topology read back).
#[derive(Debug)]
pub struct Memory {
    pub catch_up: WorkMemory,
    pub switch: WorkMemory,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            catch_up: WorkMemory::new(Estimate::Median, WORK_FIRST),
            switch: WorkMemory::new(Estimate::Highest, SWITCH_FIRST),
        }
    }
}

#[cfg(test)]
mod tests;
