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
//! A positive answer releases every write holding a ticket ≤ that round (a
//! later round was also sent after their arrival). A negative answer revokes
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

/// The result of one confirmation round.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub round: u64,
    /// `Ok` when the controller confirmed this node as master; otherwise the
    /// complete `-TRYAGAIN ...` reply for the writes that waited on it.
    pub outcome: Result<(), Bytes>,
}

#[derive(Debug, Default)]
struct Rounds {
    /// The round that writes arriving now join.
    next: u64,
    /// Whether round `next` has been requested (a write is waiting for it).
    next_wanted: bool,
    /// Rounds on the wire.
    in_flight: usize,
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

/// Batches mastership confirmations for every write.
#[derive(Debug)]
pub struct Verifier {
    rounds: Mutex<Rounds>,
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
    wake: Notify,
    /// The latest finished round (the highest number) and its outcome.
    latest: ArcSwap<RoundResult>,
    /// Where writes wait: round `n`'s waiters on `waiters[n % WAITER_SLOTS]`,
    /// so that a finished round wakes only the writes it settles (and,
    /// rarely, some of a round `WAITER_SLOTS` later, which wait again).
    waiters: Box<[Notify]>,
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
    pub fn new(max_in_flight: usize) -> Verifier {
        let latest = ArcSwap::from_pointee(RoundResult {
            round: 0,
            outcome: Err(Bytes::from_static(
                b"-TRYAGAIN mastership not confirmed by controller\r\n",
            )),
        });
        Verifier {
            rounds: Mutex::new(Rounds {
                next: 1,
                ..Rounds::default()
            }),
            enabled: AtomicBool::new(true),
            holds_acknowledgement: AtomicBool::new(false),
            max_in_flight: AtomicUsize::new(max_in_flight.max(1)),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            highest: AtomicU64::new(0),
            wake: Notify::new(),
            latest,
            waiters: (0..WAITER_SLOTS).map(|_| Notify::new()).collect(),
            metrics: VerifyMetrics::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
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
            .store(max_in_flight.max(1), Ordering::Relaxed);
        self.timeout_ms.store(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            Ordering::Relaxed,
        );
        // A larger max_in_flight may let a waiting round go now.
        self.wake.notify_one();
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
        self.max_in_flight.load(Ordering::Relaxed)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// The round a write arriving now must wait for.
    pub fn ticket(&self) -> u64 {
        self.metrics.writes.inc();
        let mut r = self.lock();
        let ticket = r.next;
        if !r.next_wanted {
            r.next_wanted = true;
            if r.in_flight < self.max_in_flight() {
                self.wake.notify_one();
            }
        }
        ticket
    }

    /// Waits until a round ≥ `ticket` has finished and returns its outcome.
    pub async fn wait(&self, ticket: u64) -> Result<(), Bytes> {
        let slot = &self.waiters[(ticket % WAITER_SLOTS as u64) as usize];
        loop {
            // Registered before looking, so a round finishing in between
            // is not missed.
            let notified = slot.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.confirmation(ticket) {
                return outcome;
            }
            notified.await;
        }
    }

    /// The confirmation of a write holding `ticket`, without waiting: `None`
    /// while no round ≥ `ticket` has finished, then the latest finished
    /// round's outcome (any such round was requested after the write
    /// arrived); a refusal is the complete `-TRYAGAIN ...` reply.
    #[inline]
    pub fn confirmation(&self, ticket: u64) -> Option<Result<(), Bytes>> {
        let latest = self.latest.load();
        (latest.round >= ticket).then(|| latest.outcome.clone())
    }

    /// Takes the next wanted round off the queue and marks it sent.
    fn start_round(&self) -> Option<u64> {
        let mut r = self.lock();
        if !r.next_wanted || r.in_flight >= self.max_in_flight() {
            return None;
        }
        let round = r.next;
        r.in_flight += 1;
        r.next += 1;
        r.next_wanted = false;
        Some(round)
    }

    fn finish_round(&self, result: RoundResult) {
        {
            let mut r = self.lock();
            r.in_flight = r.in_flight.saturating_sub(1);
        }
        self.publish(result);
        self.wake.notify_one();
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

    /// Sends rounds while writes want them, until `shutdown` (the end of the
    /// drain, see [`crate::server`]). Each round is
    /// bounded by the timeout [`Verifier::configure`] set last.
    pub async fn run(
        self: Arc<Self>,
        role: Arc<Role>,
        url: String,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut timeout = self.timeout();
        let mut client = controller::http_client(timeout);
        if self.enabled() {
            info!(%url, timeout_ms = timeout.as_millis() as u64, max_in_flight = self.max_in_flight(), "verifying mastership with the controller on every write");
        }
        let url: Arc<str> = url.into();
        loop {
            if self.timeout() != timeout {
                timeout = self.timeout();
                client = controller::http_client(timeout);
            }
            while let Some(round) = self.start_round() {
                let (this, role, client, url) = (
                    Arc::clone(&self),
                    Arc::clone(&role),
                    client.clone(),
                    Arc::clone(&url),
                );
                tokio::spawn(async move {
                    this.metrics.rounds.inc();
                    let started = Instant::now();
                    let answer =
                        match tokio::time::timeout(timeout, controller::fetch(&client, &url)).await
                        {
                            Ok(a) => a,
                            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                        };
                    this.metrics
                        .round_seconds
                        .observe(started.elapsed().as_secs_f64());
                    let outcome = this.judge(answer, &role);
                    if outcome.is_err() {
                        this.metrics.rounds_failed.inc();
                    }
                    this.finish_round(RoundResult { round, outcome });
                });
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => {
                    // `shutdown` comes when the drain is over (the writes
                    // sessions still owed a reply for kept their
                    // confirmations); any still waiting are refused rather
                    // than left hanging.
                    self.publish(RoundResult {
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

    /// What one answer means for the writes waiting on it.
    fn judge(&self, answer: Result<controller::Cluster, String>, role: &Role) -> Result<(), Bytes> {
        let refuse = |cause: &str| Err(Bytes::from(format!("{NOT_CONFIRMED}: {cause}\r\n")));
        let cluster = match answer {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "mastership verification failed");
                return refuse(&e.replace(['\r', '\n'], " "));
            }
        };
        let Some(me) = role.lease().node_id() else {
            return refuse("this node's id is unknown");
        };
        let seen = self.highest.load(Ordering::Acquire);
        let highest = (seen > 0).then_some(seen);
        match controller::decide(&cluster, &me, highest) {
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

    #[test]
    fn writes_join_the_unsent_round_and_wait_for_the_next_while_one_is_in_flight() {
        let v = Verifier::new(1);
        let a = v.ticket();
        let b = v.ticket();
        assert_eq!(a, b, "both arrived before the round was sent");
        assert_eq!(v.start_round(), Some(a));
        assert_eq!(v.start_round(), None, "one round in flight at a time");
        let c = v.ticket();
        assert_eq!(c, a + 1, "arrived after the request was sent");
        v.finish_round(RoundResult {
            round: a,
            outcome: Ok(()),
        });
        assert_eq!(v.start_round(), Some(c), "the next round goes out at once");
        assert_eq!(v.start_round(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_is_released_by_its_round_or_a_later_one() {
        let v = Arc::new(Verifier::new(1));
        let t = v.ticket();
        let waiter = {
            let v = Arc::clone(&v);
            tokio::spawn(async move { v.wait(t).await })
        };
        let round = v.start_round().expect("round");
        v.finish_round(RoundResult {
            round: round + 1,
            outcome: Err(Bytes::from_static(b"-TRYAGAIN x\r\n")),
        });
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
        let v = Arc::new(Verifier::new(4));
        let early = v.ticket();
        assert_eq!(v.start_round(), Some(early));
        let later = early + WAITER_SLOTS as u64; // the same wait list
        let waiter = {
            let v = Arc::clone(&v);
            tokio::spawn(async move { v.wait(later).await })
        };
        tokio::task::yield_now().await;
        v.finish_round(RoundResult {
            round: early,
            outcome: Ok(()),
        });
        assert_eq!(v.wait(early).await, Ok(()));
        assert_eq!(v.confirmation(later), None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken, but not settled");
        v.finish_round(RoundResult {
            round: later,
            outcome: Err(Bytes::from_static(b"-TRYAGAIN no\r\n")),
        });
        v.finish_round(RoundResult {
            round: early + 1,
            outcome: Ok(()),
        });
        assert_eq!(
            waiter.await.expect("join"),
            Err(Bytes::from_static(b"-TRYAGAIN no\r\n"))
        );
        assert_eq!(
            v.confirmation(early + 1),
            Some(Err(Bytes::from_static(b"-TRYAGAIN no\r\n"))),
            "the older answer came late: the newer one stands"
        );
    }
}
