//! The promotion's timing in a failover: before the pause, learn when the
//! target can be promoted at once ([`prepare`]), wait for that moment
//! ([`Timing::wait`]); after the switch, say what the promotion took and
//! whether the timing held ([`Timing::report`]).
//!
//! The model and the plan are in [`super::timing`]; this is what the
//! failover asks the outside for:
//!
//! 1. whether the target is a Kvrocks node (`INFO server` has
//!    `kvrocks_version`); any other node promotes at once and is not
//!    waited for;
//! 2. its replication link at this leasegate ([`crate::guard::replicas`]).
//!    A standalone replica may follow this node's own address (started
//!    with `slaveof`, or demoted by a tool): it is then re-attached to this
//!    leasegate (`SLAVEOF <this leasegate>`), which takes up to a period
//!    before the pause and gives a fresh, exactly known phase. In cluster
//!    mode the controller's topology names leasegates, so the link passes
//!    here; where it does not, the failover goes on untimed;
//! 3. where the target host's coarse clock ticks (its leasegate's
//!    `/v1/status` `clock`, the best of three round trips).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::timing::{self, Grid, Plan, RoundTrip, Ticks};
use crate::guard::gate::Gate;
use crate::guard::replicas::{ReplicaLink, ReplicaLinks};
use crate::kvrocks::admin_api::{TimingOutcome, TimingReport};
use crate::kvrocks::admin_client::AdminClient;
use crate::proxy::backend::ControlConnection;

/// The first poke, after the earliest moment the tick may fire (the coarse
/// clock must show the tick by then).
const POKE_AFTER: Duration = Duration::from_micros(150);
/// Pokes follow each other this often (tokio's timer has millisecond steps)…
const POKE_EVERY: Duration = Duration::from_millis(1);
/// …for this long past the latest moment the tick is expected: the clock
/// mapping's error and the kernel's lag in showing a tick.
const POKE_WINDOW: Duration = Duration::from_millis(3);

/// Pokes `link` from the earliest moment its planned tick may fire, every
/// [`POKE_EVERY`], until the window (the arm time's ambiguity, the clock
/// mapping's error) is past, or until the returned future is dropped.
///
/// From a blocking thread that sleeps to the microsecond: tokio's timer
/// has millisecond steps, and a poke a step late is a promotion (and
/// every held write) up to a millisecond late.
pub(super) async fn poke_at_tick(ticks: &Ticks, plan: &Plan, link: &ReplicaLink) {
    let end = plan.tick + ticks.spread() + POKE_WINDOW;
    let first = plan.tick + POKE_AFTER;
    let link = link.clone();
    let stop = StopOnDrop::default();
    let stopped = std::sync::Arc::clone(&stop.0);
    let pokes = tokio::task::spawn_blocking(move || {
        let mut at = first;
        while at <= end && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            ReplicaLinks::poke(&link);
            at += POKE_EVERY;
        }
    });
    let _ = pokes.await;
    drop(stop);
}

/// Sleeps until `at`, to the tens of microseconds: tokio's timer wakes
/// in millisecond steps (up to a step late, plus the scheduler's lag),
/// and a pause begun a millisecond late has its promotion miss the tick
/// when the plan's margin is thinner. The last stretch is slept on a
/// blocking thread, as the pokes are.
async fn sleep_precisely_until(at: Instant) {
    if let Some(coarse) = at.checked_sub(FINE_SLEEP) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    if let Some(rest) = at.checked_duration_since(Instant::now()) {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// The stretch before a planned moment slept on a blocking thread (longer
/// than the coarse timer's step and its usual lag).
const FINE_SLEEP: Duration = Duration::from_millis(2);

/// Tells the poking thread to stop when the pokes' future is dropped (the
/// promotion was answered first).
#[derive(Default)]
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Added to the work a retry plans for, past what the late attempt took.
const RETRY_SLACK: Duration = Duration::from_micros(500);

/// How long a re-attached replica may take to connect again (its old
/// link stops at its next tick, then it connects and syncs).
const REATTACH_PATIENCE: Duration = Duration::from_secs(3);

/// How many times a failover whose catch-up ran past its planned tick
/// ends the pause and tries the next tick, before it promotes late.
pub(super) const MAX_RETRIES: u32 = 3;

/// The timing a failover runs with.
pub(super) struct Timing {
    /// `None`: untimed (see `note`).
    planned: Option<Planned>,
    /// The pause-to-promotion work planned for.
    work: Duration,
    /// Of it, what comes after the replica's catch-up (cluster mode: the
    /// controller's switch).
    switch: Duration,
    /// Pauses ended because the catch-up ran past the tick.
    retries: u32,
    /// Cluster mode: what the controller's switch took (catch-up to its
    /// topology read back), against `switch` planned.
    switch_took: Option<Duration>,
    /// How the phase was learned, or why there is no plan.
    note: String,
    /// Time spent before the pause: preparing and waiting.
    waited: Duration,
    started: Instant,
}

/// A timed failover's tick, plan and the link it pokes.
struct Planned {
    ticks: Ticks,
    plan: Plan,
    /// The replica's link here, poked at the tick.
    link: ReplicaLink,
}

/// What [`prepare`] needs.
pub(super) struct Prepare<'a> {
    pub gate: &'a Arc<Gate>,
    pub admin: &'a AdminClient,
    /// The target's leasegate (admin API) and node.
    pub target_admin: &'a str,
    pub target_node: &'a str,
    pub replica: &'a mut ControlConnection,
    /// This node (a re-attached replica must catch up with it again).
    pub source: &'a mut ControlConnection,
    /// Whether the target is Kvrocks ([`ControlConnection::is_kvrocks`]).
    pub kvrocks: bool,
    /// Where the replica may re-attach to this leasegate (standalone), or
    /// `None` (cluster mode: the controller's topology decides).
    pub reattach_to: Option<String>,
    /// The pause-to-promotion work the plan assumes, and of it what comes
    /// after the catch-up.
    pub work: Duration,
    pub switch: Duration,
}

impl Timing {
    pub(super) fn unused(note: impl Into<String>) -> Timing {
        Timing {
            planned: None,
            work: Duration::ZERO,
            switch: Duration::ZERO,
            retries: 0,
            switch_took: None,
            note: note.into(),
            waited: Duration::ZERO,
            started: Instant::now(),
        }
    }

    /// Runs `promotion` (the command that makes the target master), and
    /// meanwhile pokes the replica's link from the earliest moment its tick
    /// may fire, every [`POKE_EVERY`], until the promotion is answered or
    /// the window (the arm time's ambiguity, the clock mapping's error) is
    /// past: each `ping` frame wakes its loop, which stops at the first
    /// wake that finds the tick due instead of one coarse step later. A
    /// poke too early is harmless (the loop sleeps again); the frames are
    /// ones Kvrocks masters send themselves.
    pub(super) async fn promote<T>(&self, promotion: impl std::future::Future<Output = T>) -> T {
        let Some(Planned { ticks, plan, link }) = self.planned.as_ref() else {
            return promotion.await;
        };
        let pokes = poke_at_tick(ticks, plan, link);
        tokio::pin!(promotion);
        tokio::select! {
            done = &mut promotion => return done,
            () = pokes => {}
        }
        promotion.await
    }

    /// Whether a plan is being followed.
    pub(super) fn timed(&self) -> bool {
        self.planned.is_some()
    }

    /// The target was promoted by someone else before the timed promotion:
    /// the timing did not apply (reported `unused`, with `why`).
    pub(super) fn preempted(&mut self, why: &str) {
        if self.planned.take().is_some() {
            self.note = format!("{why}; {}", self.note);
        }
    }

    /// How far past the planned send deadline the promotion would be sent,
    /// caught up at `now` with the switch still to come (`None`: in time,
    /// or untimed).
    pub(super) fn late(&self, now: Instant) -> Option<Duration> {
        let send_by = self.planned.as_ref()?.plan.send_by();
        let by = (now + self.switch).checked_duration_since(send_by)?;
        Some(by)
    }

    /// Cluster mode: the controller's switch took `took` (from the
    /// replica's catch-up to its topology read back); the report says it
    /// beside what was planned, so that a missed tick shows its cause.
    pub(super) fn switched(&mut self, took: Duration) {
        self.switch_took = Some(took);
    }

    /// Cluster mode, timed: the controller switched the shard before the
    /// pause, in `took` (so its switch is no part of the plan).
    pub(super) fn switched_before_pause(&mut self, took: Duration) {
        self.note.push_str(&format!(
            "; the controller switched the shard before the pause ({:.1} ms)",
            took.as_secs_f64() * 1000.0
        ));
    }

    /// Plans again for the next tick that `work` (what the last attempt's
    /// pause-to-catch-up took, if longer than planned) can meet.
    pub(super) fn retry(&mut self, now: Instant, work: Duration) {
        if let Some(planned) = self.planned.as_mut() {
            self.retries += 1;
            // From the planned pause, not the actual one: a pause that
            // began late (the wake-up's own lag) is late again at the next
            // tick unless the plan leads by that lag too (seen: late by
            // 0.006-0.65 ms three times in a row).
            let work = work.max(now.saturating_duration_since(planned.plan.pause_at));
            self.work = self.work.max(work + self.switch + RETRY_SLACK);
            planned.plan = timing::plan(&planned.ticks, now, self.work);
        }
    }

    /// Sleeps until the planned pause (if the plan's moment has passed,
    /// a new plan for the next period's tick is not made: the pause comes
    /// at once and the report says whether the tick was met).
    pub(super) async fn wait(&mut self) {
        if let Some(planned) = &self.planned {
            sleep_precisely_until(planned.plan.pause_at).await;
        }
        self.waited = self.started.elapsed();
    }

    /// What the timing did, given the promotion (sent at, took).
    pub(super) fn report(&self, promotion: Option<(Instant, Duration)>) -> TimingReport {
        let outcome = match (self.planned.as_ref().map(|p| p.plan), promotion) {
            (Some(_), Some((_, took))) => timing::judge(took),
            // The failover ended before its promotion.
            (Some(_), None) | (None, _) => TimingOutcome::Unused,
        };
        let after_tick_ms = match (self.planned.as_ref().map(|p| p.plan), promotion) {
            (Some(plan), Some((sent, took))) => {
                let answered = sent + took;
                Some(if answered >= plan.tick {
                    (answered - plan.tick).as_secs_f64() * 1000.0
                } else {
                    -((plan.tick - answered).as_secs_f64() * 1000.0)
                })
            }
            _ => None,
        };
        let mut note = self.note.clone();
        if self.planned.is_some() && promotion.is_none() {
            note.push_str("; the failover ended before its promotion");
        }
        if let (Some(took), Some(_)) = (self.switch_took, self.planned.as_ref()) {
            note.push_str(&format!(
                "; the controller's switch took {:.1} ms (planned {:.1} ms)",
                took.as_secs_f64() * 1000.0,
                self.switch.as_secs_f64() * 1000.0
            ));
        }
        if self.retries > 0 {
            note.push_str(&format!(
                "; the catch-up ran past the planned tick {} time(s): writes were released and the next tick tried",
                self.retries
            ));
        }
        TimingReport {
            outcome,
            wait_ms: self.waited.as_secs_f64() * 1000.0,
            note,
            after_tick_ms,
        }
    }
}

/// Learns what the plan needs and makes it (see the module documentation);
/// never fails the failover: what cannot be learned leaves it untimed.
pub(super) async fn prepare(p: Prepare<'_>) -> Timing {
    let started = Instant::now();
    let (work, switch) = (p.work, p.switch);
    let mut timing = match plan(p).await {
        Ok((planned, note)) => Timing {
            planned: Some(planned),
            work,
            switch,
            retries: 0,
            switch_took: None,
            note,
            waited: Duration::ZERO,
            started,
        },
        Err(why) => Timing::unused(why),
    };
    timing.started = started;
    timing
}

async fn plan(p: Prepare<'_>) -> Result<(Planned, String), String> {
    if !p.kvrocks {
        return Err("the target is not Kvrocks: it promotes at once".into());
    }
    let target = resolve(p.target_node).await?;
    let links = &p.gate.role().replicas;
    let mut reattached = false;
    let link = match links.find(target.ip(), target.port()) {
        Some(link) => link,
        None => {
            let Some(to) = p.reattach_to.as_deref() else {
                return Err(format!(
                    "the target's replication link does not pass through this leasegate (no PSYNC from {target} here)"
                ));
            };
            reattached = true;
            let link = reattach(p.replica, to, || links.find(target.ip(), target.port())).await?;
            // Its master serves a new replica's PSYNC slowly (it reads its
            // WAL to check the sequence): that, and the catch-up, come
            // before the plan, not inside a pause.
            let offset = super::offset(p.source)
                .await
                .map_err(|e| format!("after re-attaching: {e}"))?;
            let deadline = Instant::now() + REATTACH_PATIENCE;
            match super::catch_up(p.replica, offset, deadline).await {
                Ok(super::CatchUp::Reached) => link,
                Ok(super::CatchUp::Behind(_)) => {
                    return Err(format!(
                        "the re-attached replica did not catch up within {} ms",
                        REATTACH_PATIENCE.as_millis()
                    ))
                }
                Err(e) => return Err(format!("after re-attaching: {e}")),
            }
        }
    };
    let grid = target_grid(p.admin, p.target_admin).await;
    let ticks = Ticks::from_link(link.first_bytes, grid);
    let plan = timing::plan(&ticks, Instant::now(), p.work);
    let note = describe(&link, reattached, grid.map(|g| g.1), ticks.spread(), p.work);
    info!(%note, "promotion timing");
    Ok((Planned { ticks, plan, link }, note))
}

fn describe(
    link: &ReplicaLink,
    reattached: bool,
    grid_error: Option<Duration>,
    spread: Duration,
    work: Duration,
) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "phase from the replica's {} link{} ({} time), {}; planned work {:.1} ms",
        link.command,
        if reattached {
            ", re-attached to this leasegate"
        } else {
            ""
        },
        if link.kernel_time {
            "kernel"
        } else {
            "session"
        },
        match grid_error {
            Some(error) if error.is_zero() => format!(
                "its host's clock grid, this host (window {:.1} ms)",
                ms(spread)
            ),
            Some(error) => format!(
                "its host's clock grid, mapped within ±{:.2} ms (window {:.1} ms)",
                ms(error),
                ms(spread)
            ),
            None => "its host's clock unknown (window 4.5 ms)".to_string(),
        },
        ms(work),
    )
}

async fn resolve(node: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(node)
        .await
        .map_err(|e| format!("cannot resolve the target node {node}: {e}"))?
        .next()
        .ok_or_else(|| format!("the target node {node} resolves to nothing"))
}

/// Makes the replica follow this leasegate (`to`) and waits until its new
/// link has started its stream here (`find`).
async fn reattach(
    replica: &mut ControlConnection,
    to: &str,
    find: impl Fn() -> Option<ReplicaLink>,
) -> Result<ReplicaLink, String> {
    let (host, port) = to
        .rsplit_once(':')
        .ok_or_else(|| format!("bad leasegate address {to}"))?;
    info!(
        to,
        "re-attaching the target replica to this leasegate, for a known tick phase"
    );
    replica
        .call(&["SLAVEOF", host, port])
        .await
        .map_err(|e| format!("re-attaching the replica to {to}: {e}"))?;
    let deadline = Instant::now() + REATTACH_PATIENCE;
    loop {
        if let Some(link) = find() {
            return Ok(link);
        }
        if Instant::now() >= deadline {
            warn!(to, "the re-attached replica did not connect in time");
            return Err(format!(
                "the replica, re-attached to {to}, did not start its stream within {} ms",
                REATTACH_PATIENCE.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The target host's coarse clock grid, from its leasegate (the best of
/// three round trips), and how far off its mapping may be; `None` (an
/// older leasegate, or no answer).
async fn target_grid(admin: &AdminClient, target: &str) -> Option<(Grid, Duration)> {
    let mut best: Option<(Duration, (Grid, Duration))> = None;
    for _ in 0..3 {
        let start = RoundTrip::start();
        let Ok(status) = admin.status(target).await else {
            continue;
        };
        let trip = RoundTrip::back(start);
        // No clock: that host could not measure it now (a loaded host's
        // coarse clock can fall a step behind); ask again.
        let Some(view) = status.clock else {
            continue;
        };
        let Some(mapped) = Grid::from_view(view, &trip) else {
            continue;
        };
        // The exact mapping (same host), else the shortest round trip.
        let rank = if mapped.1.is_zero() {
            Duration::ZERO
        } else {
            trip.rtt()
        };
        if best.is_none_or(|(b, _)| rank < b) {
            best = Some((rank, mapped));
        }
    }
    best.map(|(_, mapped)| mapped)
}

/// Where a replica reaches the leasegate that listens on `listen`: its own
/// address, or, for a wildcard, the host the replica follows now.
pub(super) fn reattach_address(listen: &str, following: Option<&str>) -> Option<String> {
    let (host, port) = listen.rsplit_once(':')?;
    let wildcard = host == "0.0.0.0"
        || host == "[::]"
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if !wildcard {
        return Some(listen.to_string());
    }
    let (their_host, _) = following?.rsplit_once(':')?;
    Some(format!("{their_host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_reached_where_the_replica_follows_now() {
        assert_eq!(
            reattach_address("127.0.0.1:6380", Some("10.0.0.1:6379")).as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            reattach_address("0.0.0.0:6380", Some("10.0.0.1:6379")).as_deref(),
            Some("10.0.0.1:6380")
        );
        assert_eq!(reattach_address("0.0.0.0:6380", None), None);
    }

    #[test]
    fn an_untimed_run_reports_unused() {
        let t = Timing::unused("turned off");
        assert!(t.planned.is_none());
        let r = t.report(Some((Instant::now(), Duration::from_millis(80))));
        assert_eq!(r.outcome, TimingOutcome::Unused);
        assert_eq!(r.note, "turned off");
        assert_eq!(r.after_tick_ms, None);
    }

    /// A pause that began late (the wake-up's lag, 1.5 ms here) and whose
    /// catch-up then took the planned work missed its send deadline; the
    /// retry's plan leads by that lag too, so the same again is in time
    /// (planned from the actual pause, it was late again, three times).
    #[test]
    fn a_retry_leads_by_the_late_pauses_lag_too() {
        let origin = Instant::now();
        let ticks = Ticks::from_link(origin, None);
        let work = Duration::from_millis(3);
        let plan = timing::plan(&ticks, origin, work);
        let link = ReplicaLink {
            peer: IpAddr::from([127, 0, 0, 1]),
            listening_port: None,
            first_bytes: origin,
            kernel_time: false,
            command: "psync",
            poke: Arc::default(),
        };
        let mut t = Timing {
            planned: Some(Planned { ticks, plan, link }),
            ..Timing::unused("")
        };
        t.work = work;
        let lag = Duration::from_micros(1500);
        let caught_up = plan.pause_at + lag + work;
        assert!(t.late(caught_up).is_some(), "late by the wake-up's lag");
        t.retry(caught_up, work);
        let next = t.planned.as_ref().map(|p| p.plan).expect("still planned");
        assert!(next.tick > plan.tick);
        assert_eq!(t.late(next.pause_at + lag + work), None);
    }

    /// An untimed run has no plan for the switch to be compared with: its
    /// note says nothing of it.
    #[test]
    fn an_untimed_run_does_not_report_a_switch() {
        let mut t = Timing::unused("cluster mode: timed only on request");
        t.switched(Duration::from_millis(7));
        let r = t.report(None);
        assert_eq!(r.note, "cluster mode: timed only on request");
    }
}
