//! Verification on every write (`verify.mode: every-write`).
//!
//! A write's success reaches the client only after the controller confirmed
//! that this node is the master of its shard, in a request sent *after the
//! write arrived*. What waits for that confirmation is `verify.hold`:
//!
//! * [`VerifyHold::Request`] (the default): the write itself. Nothing is forwarded
//!   before the confirmation; a refusal means the node never saw the write.
//!   A write costs the controller's round trip *plus* the node's time.
//! * [`VerifyHold::Acknowledgement`]: only the node's reply. The write goes to the
//!   node at once and its confirmation is asked in parallel, so a write
//!   costs the larger of the two. A refusal turns a success reply into
//!   [`crate::guard::gate::UNKNOWN_OUTCOME`]'s kind of error: the node may
//!   have applied the write, but the client was never told it had.
//!
//! Asking
//! once per write would cap throughput at one write per controller round trip,
//! so confirmations are batched the way Raft batches ReadIndex:
//!
//! * at most one confirmation request (a *round*) is in flight, or
//!   `verify.max_in_flight` of them;
//! * a write that arrives before the next round's request is sent joins that
//!   round (its ticket); a write that arrives while a round is already on the
//!   wire waits for the one after it;
//! * when a round's answer comes back and writes are waiting, the next round
//!   is sent at once.
//!
//! Rounds are numbered in *lanes*, one per session thread, each driven on
//! its thread ([`Verifier::run_lane`]): a write takes its ticket in the lane
//! of the thread its session runs on, so asking for a round, sending it,
//! and waking the writes it settles never cross threads. The lanes share
//! the bound on rounds on the wire.
//!
//! A positive answer releases every write holding a ticket ≤ that round in
//! its lane (a later round of the lane was also sent after their arrival). A negative answer revokes
//! the lease (a role transition) and, like a timeout or an unreachable
//! controller, rejects the waiting writes with
//! `-TRYAGAIN mastership not confirmed by controller: <cause>`.
//!
//! A reload may switch verification on or off and change its timeout and
//! `max_in_flight` ([`Verifier::configure`]): the verifier exists whenever
//! `controller.url` is set, and the Gate asks it only while it is on. Writes
//! already waiting when it is switched off still get their round's answer.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::guard::role::{Role, Source};
use crate::kvrocks::controller::{self, Decision};

/// What waits for a write's confirmation (`verify.hold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyHold {
    /// The write: forwarded once confirmed (nothing unconfirmed is applied).
    #[default]
    Request,
    /// The write's acknowledgement: forwarded at once, answered once confirmed.
    Acknowledgement,
}

/// A write's place in line for a confirmation: the lane it was admitted on
/// and the lane's round it must wait for (that round, or a later one of the
/// same lane, was requested after the write arrived).
///
/// Packed in one word, the lane in the low [`LANE_BITS`] bits, because it
/// rides in every verified write's entry of a session's owed queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Bits of a [`Ticket`] that name the lane (so at most 256 lanes).
const LANE_BITS: u32 = 8;
const MAX_LANES: usize = 1 << LANE_BITS;

impl Ticket {
    /// No ticket (a placeholder): round 0, which is never handed out.
    pub const NONE: Ticket = Ticket(0);

    fn new(lane: usize, round: u64) -> Ticket {
        Ticket((round << LANE_BITS) | lane as u64)
    }

    fn lane(self) -> usize {
        (self.0 & (MAX_LANES as u64 - 1)) as usize
    }

    fn round(self) -> u64 {
        self.0 >> LANE_BITS
    }
}

/// The result of one confirmation round of a lane.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub round: u64,
    /// `Ok` when the controller confirmed this node as master; otherwise the
    /// complete `-TRYAGAIN ...` reply for the writes that waited on it.
    pub outcome: Result<(), Bytes>,
}

#[derive(Debug)]
struct Rounds {
    /// The round that writes arriving now join.
    next: u64,
    /// Whether round `next` has been requested (a write is waiting for it).
    next_wanted: bool,
}

/// Counters and timings of verification, registered under `leasegate_verify_`.
#[derive(Debug, Clone)]
pub struct VerifyMetrics {
    pub rounds: Counter,
    pub rounds_failed: Counter,
    pub writes: Counter,
    pub round_seconds: Histogram,
}

impl Default for VerifyMetrics {
    fn default() -> Self {
        Self {
            rounds: Counter::default(),
            rounds_failed: Counter::default(),
            writes: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl VerifyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "verify_rounds",
            "Mastership confirmation requests sent to the controller",
            self.rounds.clone(),
        );
        registry.register(
            "verify_rounds_failed",
            "Confirmation rounds that did not confirm (negative, timeout, unreachable)",
            self.rounds_failed.clone(),
        );
        registry.register(
            "verify_writes",
            "Writes released by a mastership confirmation (held for it, or covered by one as part of a pipeline)",
            self.writes.clone(),
        );
        registry.register(
            "verify_round_duration_seconds",
            "Round trip of one confirmation request",
            self.round_seconds.clone(),
        );
    }
}

/// One line of confirmation rounds, driven on one session thread.
///
/// Sessions take their tickets from the lane of the thread they run on, and
/// the lane's driver ([`Verifier::run_lane`]) runs on that same thread with
/// its own connections to the controller. So a write asking for a round,
/// the round's request and answer, and the wake-up of the writes it settles
/// all stay on one thread: a round crosses no thread and wakes no other.
/// Lanes share only the bound on rounds on the wire and the judgement.
#[derive(Debug)]
struct Lane {
    rounds: Mutex<Rounds>,
    /// Wakes the driver: a round is wanted, or a place on the wire is free.
    wake: Notify,
    /// The lane wants a round but every place on the wire was taken: the
    /// next lane to finish a round hands its place over.
    starved: AtomicBool,
    /// A place on the wire handed over by another lane, for the next round.
    granted: AtomicBool,
    /// The latest finished round (the highest number) and its outcome.
    latest: ArcSwap<RoundResult>,
    /// Where writes wait: round `n`'s waiters on `waiters[n % WAITER_SLOTS]`,
    /// so that a finished round wakes only the writes it settles (and,
    /// rarely, some of a round `WAITER_SLOTS` later, which wait again).
    waiters: Box<[Notify]>,
    /// The lane's last controller answer, so that an unchanged topology is
    /// compared rather than parsed again (its rounds run on its thread).
    last_answer: Mutex<controller::LastAnswer>,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            rounds: Mutex::new(Rounds {
                next: 1,
                next_wanted: false,
            }),
            wake: Notify::new(),
            starved: AtomicBool::new(false),
            granted: AtomicBool::new(false),
            latest: ArcSwap::from_pointee(RoundResult {
                round: 0,
                outcome: Err(Bytes::from_static(
                    b"-TRYAGAIN mastership not confirmed by controller\r\n",
                )),
            }),
            waiters: (0..WAITER_SLOTS).map(|_| Notify::new()).collect(),
            last_answer: Mutex::new(controller::LastAnswer::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The round a write arriving now must wait for; wakes the driver when
    /// it is the first to want it.
    fn ticket(&self) -> u64 {
        let (round, first) = {
            let mut r = self.lock();
            let first = !r.next_wanted;
            r.next_wanted = true;
            (r.next, first)
        };
        if first {
            self.wake.notify_one();
        }
        round
    }

    fn confirmation(&self, round: u64) -> Option<Result<(), Bytes>> {
        let latest = self.latest.load();
        (latest.round >= round).then(|| latest.outcome.clone())
    }

    /// Makes `result` the latest, unless a later round finished first (with
    /// several rounds on the wire, a late answer to an older round must not
    /// replace a newer one), and wakes the writes it settles.
    fn publish(&self, result: RoundResult) {
        let (from, to) = {
            // Under the rounds lock: two rounds finishing at once publish in turn.
            let _r = self.lock();
            let previous = self.latest.load().round;
            if result.round <= previous {
                return;
            }
            let to = result.round;
            self.latest.store(Arc::new(result));
            (previous + 1, to)
        };
        if to - from >= WAITER_SLOTS as u64 {
            self.waiters.iter().for_each(Notify::notify_waiters);
            return;
        }
        for round in from..=to {
            self.waiters[(round % WAITER_SLOTS as u64) as usize].notify_waiters();
        }
    }
}

thread_local! {
    /// The lane whose driver runs on this thread; lane 0 elsewhere (any lane
    /// gives a correct ticket, its own is only the cheapest).
    static HOME_LANE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Batches mastership confirmations for every write.
#[derive(Debug)]
pub struct Verifier {
    lanes: Box<[Lane]>,
    /// Rounds on the wire, over all lanes.
    on_the_wire: AtomicUsize,
    /// `verify.mode: every-write`: whether writes wait for a confirmation.
    enabled: AtomicBool,
    /// `verify.hold: acknowledgement`: forward at once, hold the reply.
    holds_acknowledgement: AtomicBool,
    /// Rounds allowed on the wire at once (`verify.max_in_flight`).
    max_in_flight: AtomicUsize,
    /// `verify.timeout_ms`: bound of one round.
    timeout_ms: AtomicU64,
    /// Highest cluster version a confirmation has seen (older answers are stale).
    highest: AtomicU64,
    pub metrics: VerifyMetrics,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(1)
    }
}

/// Wait lists of rounds; more than the rounds ever on the wire at once.
const WAITER_SLOTS: usize = 64;
const NOT_CONFIRMED: &str = "-TRYAGAIN mastership not confirmed by controller";
/// `verify.timeout_ms` until [`Verifier::configure`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

impl Verifier {
    /// A verifier with `lanes` lanes (one per session thread; at least 1, at
    /// most 256), one round on the wire at a time until
    /// [`Verifier::configure`].
    pub fn new(lanes: usize) -> Verifier {
        Verifier {
            lanes: (0..lanes.clamp(1, MAX_LANES))
                .map(|_| Lane::new())
                .collect(),
            on_the_wire: AtomicUsize::new(0),
            enabled: AtomicBool::new(true),
            holds_acknowledgement: AtomicBool::new(false),
            max_in_flight: AtomicUsize::new(1),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            highest: AtomicU64::new(0),
            metrics: VerifyMetrics::default(),
        }
    }

    /// How many lanes there are: [`Verifier::run_lane`] must drive each.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Sets `verify.*` (at start and on a reload): whether writes wait for a
    /// confirmation, what waits, rounds on the wire at once, and the bound
    /// of a round. Writes already admitted keep the hold they were given.
    pub fn configure(
        &self,
        enabled: bool,
        hold: VerifyHold,
        max_in_flight: usize,
        timeout: Duration,
    ) {
        self.enabled.store(enabled, Ordering::Relaxed);
        self.holds_acknowledgement
            .store(hold == VerifyHold::Acknowledgement, Ordering::Relaxed);
        self.max_in_flight
            .store(max_in_flight.max(1), Ordering::SeqCst);
        self.timeout_ms.store(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            Ordering::Relaxed,
        );
        // A larger max_in_flight may let a waiting round go now.
        self.lanes.iter().for_each(|l| l.wake.notify_one());
    }

    /// Whether writes wait for a confirmation (`verify.mode: every-write`).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// What waits for the confirmation (`verify.hold`).
    #[inline]
    pub fn hold(&self) -> VerifyHold {
        if self.holds_acknowledgement.load(Ordering::Relaxed) {
            VerifyHold::Acknowledgement
        } else {
            VerifyHold::Request
        }
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    fn lane(&self, ticket: Ticket) -> &Lane {
        // A ticket names one of these lanes; `%` only keeps a forged one in range.
        &self.lanes[ticket.lane() % self.lanes.len()]
    }

    /// The ticket of a write arriving now, from this thread's lane.
    pub fn ticket(&self) -> Ticket {
        self.metrics.writes.inc();
        let lane = HOME_LANE.with(std::cell::Cell::get) % self.lanes.len();
        Ticket::new(lane, self.lanes[lane].ticket())
    }

    /// Waits until a round ≥ `ticket`'s has finished in its lane and
    /// returns its outcome.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), Bytes> {
        let lane = self.lane(ticket);
        let slot = &lane.waiters[(ticket.round() % WAITER_SLOTS as u64) as usize];
        loop {
            // Registered before looking, so a round finishing in between
            // is not missed.
            let notified = slot.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = lane.confirmation(ticket.round()) {
                return outcome;
            }
            notified.await;
        }
    }

    /// The confirmation of a write holding `ticket`, without waiting: `None`
    /// while no round ≥ `ticket`'s has finished in its lane, then the
    /// lane's latest finished round's outcome (any such round was requested
    /// after the write arrived); a refusal is the complete `-TRYAGAIN ...`
    /// reply.
    #[inline]
    pub fn confirmation(&self, ticket: Ticket) -> Option<Result<(), Bytes>> {
        self.lane(ticket).confirmation(ticket.round())
    }

    /// Takes a place on the wire, if one is free.
    fn take_place(&self) -> bool {
        let max = self.max_in_flight();
        self.on_the_wire
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes lane `lane`'s wanted round off its queue and marks it sent, if
    /// it holds a place on the wire or one is free.
    fn start_round(&self, lane: usize) -> Option<u64> {
        let l = &self.lanes[lane];
        let mut r = l.lock();
        if !r.next_wanted {
            // Handed a place after its want was met with another: pass it on.
            if l.granted.swap(false, Ordering::SeqCst) {
                drop(r);
                self.release_place(lane);
            }
            return None;
        }
        if !(l.granted.swap(false, Ordering::SeqCst) || self.take_place()) {
            // Said before looking again, so that a lane freeing a place in
            // between either is seen here or sees this (both SeqCst).
            l.starved.store(true, Ordering::SeqCst);
            if !self.take_place() {
                return None;
            }
            l.starved.store(false, Ordering::SeqCst);
        }
        let round = r.next;
        r.next += 1;
        r.next_wanted = false;
        Some(round)
    }

    /// Gives up lane `lane`'s place on the wire: to the next lane waiting
    /// for one, in turn, so that a busy lane cannot keep the places to
    /// itself; else frees it, and wakes any lane that began to wait meanwhile.
    fn release_place(&self, lane: usize) {
        let n = self.lanes.len();
        let others = || (1..n).map(|k| &self.lanes[(lane + k) % n]);
        if let Some(other) = others().find(|o| o.starved.swap(false, Ordering::SeqCst)) {
            other.granted.store(true, Ordering::SeqCst);
            other.wake.notify_one();
            return;
        }
        self.on_the_wire.fetch_sub(1, Ordering::SeqCst);
        for other in others() {
            if other.starved.swap(false, Ordering::SeqCst) {
                other.wake.notify_one();
            }
        }
    }

    /// Gives up the round's place on the wire and publishes the result in
    /// its lane.
    fn finish_round(&self, lane: usize, result: RoundResult) {
        self.release_place(lane);
        let l = &self.lanes[lane];
        l.publish(result);
        l.wake.notify_one();
    }

    /// Drives lane `lane`: sends its rounds while writes want them, until
    /// `shutdown` (the end of the drain, see [`crate::server`]). Run it on
    /// the session thread whose lane it is (it makes the lane that
    /// thread's own); each round is bounded by the timeout
    /// [`Verifier::configure`] set last.
    pub async fn run_lane(
        self: Arc<Self>,
        lane: usize,
        role: Arc<Role>,
        url: Arc<str>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let lane = lane % self.lanes.len();
        HOME_LANE.with(|home| home.set(lane));
        let mut timeout = self.timeout();
        // This lane's own connections, driven on this thread.
        let mut client = controller::http_client(timeout);
        if lane == 0 && self.enabled() {
            info!(url = %url, timeout_ms = timeout.as_millis() as u64, max_in_flight = self.max_in_flight(), lanes = self.lanes.len(), "verifying mastership with the controller on every write");
        }
        loop {
            if self.timeout() != timeout {
                timeout = self.timeout();
                client = controller::http_client(timeout);
            }
            while let Some(round) = self.start_round(lane) {
                let (this, role, client, url) = (
                    Arc::clone(&self),
                    Arc::clone(&role),
                    client.clone(),
                    Arc::clone(&url),
                );
                tokio::spawn(async move {
                    let outcome = this.confirm(lane, &client, &url, timeout, &role).await;
                    this.finish_round(lane, RoundResult { round, outcome });
                });
            }
            tokio::select! {
                _ = self.lanes[lane].wake.notified() => {}
                _ = shutdown.cancelled() => {
                    // `shutdown` comes when the drain is over (the writes
                    // sessions still owed a reply for kept their
                    // confirmations); any still waiting are refused rather
                    // than left hanging.
                    self.lanes[lane].publish(RoundResult {
                        round: u64::MAX,
                        outcome: Err(Bytes::from_static(
                            b"-TRYAGAIN mastership not confirmed by controller: leasegate is shutting down\r\n",
                        )),
                    });
                    return;
                }
            }
        }
    }

    /// One round of lane `lane`: asks the controller, within `timeout`,
    /// and judges the answer.
    async fn confirm(
        &self,
        lane: usize,
        client: &controller::HttpClient,
        url: &str,
        timeout: Duration,
        role: &Role,
    ) -> Result<(), Bytes> {
        self.metrics.rounds.inc();
        let started = Instant::now();
        let answer =
            match tokio::time::timeout(timeout, controller::fetch_answer(client, url)).await {
                Ok(a) => a,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            };
        self.metrics
            .round_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = self.judge(lane, answer, role);
        if outcome.is_err() {
            self.metrics.rounds_failed.inc();
        }
        outcome
    }

    /// What one answer (the body of the controller's `200`) means for the
    /// writes waiting on it in lane `lane`.
    fn judge(&self, lane: usize, answer: Result<Bytes, String>, role: &Role) -> Result<(), Bytes> {
        let refuse = |cause: &str| Err(Bytes::from(format!("{NOT_CONFIRMED}: {cause}\r\n")));
        let failed = |e: String| {
            warn!(error = %e, "mastership verification failed");
            refuse(&e.replace(['\r', '\n'], " "))
        };
        let body = match answer {
            Ok(body) => body,
            Err(e) => return failed(e),
        };
        let Some(me) = role.lease().node_id() else {
            return refuse("this node's id is unknown");
        };
        let seen = self.highest.load(Ordering::Acquire);
        let highest = (seen > 0).then_some(seen);
        let decision = {
            let mut last = self.lanes[lane % self.lanes.len()]
                .last_answer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match last.read(body, &me) {
                Ok((version, listed_as)) => controller::decide_role(version, listed_as, highest),
                Err(e) => return failed(e),
            }
        };
        match decision {
            Decision::Renew { version } => {
                self.highest.fetch_max(version, Ordering::AcqRel);
                Ok(())
            }
            Decision::Stale { version, highest } => {
                refuse(&format!("stale cluster version {version} (seen {highest})"))
            }
            Decision::Revoke { version, reason } => {
                self.highest.fetch_max(version, Ordering::AcqRel);
                role.revoke(&reason, Source::Verification);
                refuse(&reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(round: u64) -> RoundResult {
        RoundResult {
            round,
            outcome: Ok(()),
        }
    }

    #[test]
    fn writes_join_the_unsent_round_and_wait_for_the_next_while_one_is_in_flight() {
        let v = Verifier::new(1);
        let a = v.ticket();
        let b = v.ticket();
        assert_eq!(a, b, "both arrived before the round was sent");
        assert_eq!(v.start_round(0), Some(a.round()));
        assert_eq!(v.start_round(0), None, "one round in flight at a time");
        let c = v.ticket();
        assert_eq!(
            c.round(),
            a.round() + 1,
            "arrived after the request was sent"
        );
        v.finish_round(0, ok(a.round()));
        assert_eq!(v.confirmation(a), Some(Ok(())));
        assert_eq!(v.confirmation(c), None);
        assert_eq!(
            v.start_round(0),
            Some(c.round()),
            "the next round goes out at once"
        );
        assert_eq!(v.start_round(0), None);
    }

    #[test]
    fn a_ticket_keeps_its_lane_and_round() {
        for (lane, round) in [(0, 1), (3, 7), (MAX_LANES - 1, u64::MAX >> LANE_BITS)] {
            let t = Ticket::new(lane, round);
            assert_eq!((t.lane(), t.round()), (lane, round));
        }
        assert_eq!(Ticket::NONE.round(), 0, "round 0 is never handed out");
    }

    /// Each lane numbers its own rounds: a round of one lane settles none of
    /// another's writes, whatever its number.
    #[test]
    fn a_round_settles_only_its_own_lanes_writes() {
        let v = Verifier::new(2);
        let mine = v.ticket();
        assert_eq!(mine.lane(), 0, "a thread without a lane driver uses lane 0");
        HOME_LANE.with(|home| home.set(1));
        let theirs = v.ticket();
        HOME_LANE.with(|home| home.set(0));
        assert_eq!(theirs.lane(), 1);
        assert_eq!(mine.round(), theirs.round(), "each lane counts from 1");
        assert_eq!(v.start_round(1), Some(theirs.round()));
        v.finish_round(1, ok(theirs.round() + 10));
        assert_eq!(v.confirmation(theirs), Some(Ok(())));
        assert_eq!(v.confirmation(mine), None, "lane 1's round is not lane 0's");
    }

    /// `max_in_flight` bounds the rounds of all lanes together, and a lane
    /// that found no place is woken when another lane frees one.
    #[tokio::test(flavor = "current_thread")]
    async fn lanes_share_the_places_on_the_wire() {
        let v = Verifier::new(2);
        v.configure(true, VerifyHold::Request, 1, DEFAULT_TIMEOUT);
        let first = v.ticket();
        HOME_LANE.with(|home| home.set(1));
        let second = v.ticket();
        HOME_LANE.with(|home| home.set(0));
        assert!(
            futures_poll_once(v.lanes[1].wake.notified()).await,
            "lane 1's first ticket woke its driver"
        );
        let woken = v.lanes[1].wake.notified();
        let mut woken = std::pin::pin!(woken);
        woken.as_mut().enable();
        assert_eq!(v.start_round(0), Some(first.round()));
        assert_eq!(v.start_round(1), None, "the one place is taken");
        assert!(!futures_poll_once(woken.as_mut()).await);
        v.finish_round(0, ok(first.round()));
        assert!(
            futures_poll_once(woken.as_mut()).await,
            "lane 1 is woken when lane 0 frees the place"
        );
        assert_eq!(v.start_round(1), Some(second.round()));
        assert_eq!(v.start_round(0), None, "nothing wanted in lane 0");
    }

    /// A lane that keeps wanting rounds cannot keep the place from a lane
    /// that waits for one: a finished round's place goes to the waiting
    /// lane; and a lane handed a place it no longer needs passes it on.
    #[test]
    fn a_place_on_the_wire_goes_to_the_lane_that_waited() {
        let v = Verifier::new(2);
        let in_lane = |lane: usize| {
            HOME_LANE.with(|home| home.set(lane));
            let t = v.ticket();
            HOME_LANE.with(|home| home.set(0));
            t
        };
        let first = in_lane(0);
        let waiting = in_lane(1);
        assert_eq!(v.start_round(0), Some(first.round()));
        assert_eq!(v.start_round(1), None, "the one place is taken");
        let again = in_lane(0);
        v.finish_round(0, ok(first.round()));
        assert_eq!(v.start_round(0), None, "lane 1 waited: the place is its");
        assert_eq!(v.start_round(1), Some(waiting.round()));
        v.finish_round(1, ok(waiting.round()));
        assert_eq!(v.start_round(0), Some(again.round()));

        // Lane 1 waits, is handed the place, but wants nothing by then (a
        // place freed elsewhere served it): it passes the place on.
        let _ = in_lane(1);
        assert_eq!(v.start_round(1), None);
        v.lanes[1].lock().next_wanted = false;
        v.finish_round(0, ok(again.round()));
        assert_eq!(
            v.start_round(1),
            None,
            "nothing wanted: the place is given up"
        );
        let last = in_lane(0);
        assert_eq!(
            v.start_round(0),
            Some(last.round()),
            "the place was not lost"
        );
    }

    /// Whether `future` is ready at its first poll.
    async fn futures_poll_once<F: std::future::Future>(future: F) -> bool {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_is_released_by_its_round_or_a_later_one() {
        let v = Arc::new(Verifier::new(1));
        let t = v.ticket();
        let waiter = {
            let v = Arc::clone(&v);
            tokio::spawn(async move { v.wait(t).await })
        };
        let round = v.start_round(0).expect("round");
        v.finish_round(
            0,
            RoundResult {
                round: round + 1,
                outcome: Err(Bytes::from_static(b"-TRYAGAIN x\r\n")),
            },
        );
        assert_eq!(
            waiter.await.expect("join"),
            Err(Bytes::from_static(b"-TRYAGAIN x\r\n"))
        );
    }

    /// A finished round settles the writes at or before it, and only those:
    /// not a write of a later round sharing its wait list, and a late
    /// answer to an older round changes nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn a_round_settles_only_the_writes_at_or_before_it() {
        let v = Arc::new(Verifier::new(1));
        v.configure(true, VerifyHold::Request, 4, DEFAULT_TIMEOUT);
        let early = v.ticket();
        assert_eq!(v.start_round(0), Some(early.round()));
        // The same wait list.
        let later = Ticket::new(0, early.round() + WAITER_SLOTS as u64);
        let waiter = {
            let v = Arc::clone(&v);
            tokio::spawn(async move { v.wait(later).await })
        };
        tokio::task::yield_now().await;
        v.finish_round(0, ok(early.round()));
        assert_eq!(v.wait(early).await, Ok(()));
        assert_eq!(v.confirmation(later), None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken, but not settled");
        v.lanes[0].publish(RoundResult {
            round: later.round(),
            outcome: Err(Bytes::from_static(b"-TRYAGAIN no\r\n")),
        });
        v.lanes[0].publish(ok(early.round() + 1));
        assert_eq!(
            waiter.await.expect("join"),
            Err(Bytes::from_static(b"-TRYAGAIN no\r\n"))
        );
        assert_eq!(
            v.confirmation(Ticket::new(0, early.round() + 1)),
            Some(Err(Bytes::from_static(b"-TRYAGAIN no\r\n"))),
            "the older answer came late: the newer one stands"
        );
    }

    /// A topology answer listing node `me` with `role` at `version`.
    fn answer(version: u64, me: &str, role: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"data":{{"cluster":{{"version":{version},"name":"c","shards":[{{"nodes":[{{"id":"{me}","addr":"127.0.0.1:1","role":"{role}","password":"","created_at":1}}],"slot_ranges":["0-16383"],"target_shard_index":-1,"migrating_slot":null}}]}}}}}}"#
        ))
    }

    fn role_of(me: &str) -> Role {
        use crate::guard::lease::{Initial, Lease, LeaseMode, LeaseTuning, ManualClock};
        let lease = Lease::new(
            Arc::new(ManualClock::new(1_000_000_000)),
            LeaseMode::BlockWrite,
            Initial::Expired,
            LeaseTuning {
                clock_drift: 0.0,
                safety_margin_ms: 0,
            },
            Some(me.into()),
        );
        Role::new(Arc::new(lease), crate::guard::pause::OnDemote::Forward)
    }

    /// An answer byte for byte the same as the last one is not parsed
    /// again, but its version is still judged against the highest seen
    /// since: an old answer that comes back after a newer one is stale
    /// whether it was parsed or remembered.
    #[test]
    fn a_remembered_answer_is_judged_against_the_versions_seen_since() {
        const ME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let v = Verifier::new(1);
        let role = role_of(ME);
        let (v3, v4) = (answer(3, ME, "master"), answer(4, ME, "master"));
        let parses = || v.lanes[0].last_answer.lock().expect("lock").parses();
        assert_eq!(v.judge(0, Ok(v3.clone()), &role), Ok(()));
        assert_eq!(v.judge(0, Ok(v3.clone()), &role), Ok(()), "remembered");
        assert_eq!(parses(), 1);
        assert_eq!(v.judge(0, Ok(v4.clone()), &role), Ok(()));
        for _ in 0..2 {
            // Parsed, then remembered: stale both times.
            let refused = v.judge(0, Ok(v3.clone()), &role).expect_err("stale");
            assert!(
                String::from_utf8_lossy(&refused).contains("stale cluster version 3 (seen 4)"),
                "{refused:?}"
            );
        }
        assert_eq!(v.judge(0, Ok(v4.clone()), &role), Ok(()));
        assert_eq!(parses(), 4, "v3, v4, v3 again, v4 again");
        assert_eq!(role.lease().revocations(), 0);

        // The same version naming this node a replica: refused, lease revoked.
        let demoted = v
            .judge(0, Ok(answer(4, ME, "slave")), &role)
            .expect_err("not master");
        assert!(
            String::from_utf8_lossy(&demoted).contains("controller lists this node as slave"),
            "{demoted:?}"
        );
        assert_eq!(role.lease().revocations(), 1);

        // An answer that is not a topology is refused, and forgets nothing.
        let garbage = v
            .judge(0, Ok(Bytes::from_static(b"{\"data\":1}")), &role)
            .expect_err("garbage");
        assert!(
            String::from_utf8_lossy(&garbage).contains("unexpected answer from the controller"),
            "{garbage:?}"
        );
        assert_eq!(v.judge(0, Ok(v4), &role), Ok(()));
    }
}
