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
//! Rounds form one sequence for the whole leasegate ([`rounds`]), so that
//! the writes of every session, on every session thread, share a round.
//! Each session thread runs a *driver* ([`Verifier::run_driver`]) with its
//! own controller connections: the first write that wants a round wakes the
//! driver of its own thread, which sends the round if a place on the wire
//! is free; otherwise the driver that next frees a place sends it. So a
//! round is sent, answered and published on one thread, and only the wake-up
//! of writes on other threads crosses threads (one round settles them all).
//!
//! A positive answer releases every write holding a ticket ≤ that round (a
//! later round was also sent after their arrival). A negative answer revokes
//! the lease (a role transition) and, like a timeout or an unreachable
//! controller, rejects the waiting writes with
//! `-TRYAGAIN mastership not confirmed by controller: <cause>`. Except where
//! it names another master while the lease holds (the controller switched
//! the shard): then the poller follows the switch and the refused writes
//! wait for it, to be handed to the new master ([`crate::guard::switch_watch`]).
//!
//! A reload may switch verification on or off and change its timeout and
//! `max_in_flight` ([`Verifier::configure`]): the verifier exists whenever
//! `controller.url` is set, and the Gate asks it only while it is on. Writes
//! already waiting when it is switched off still get their round's answer.

mod rounds;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::guard::role::{Role, Source};
use crate::kvrocks::controller::{self, Decision};
pub use rounds::RoundResult;
use rounds::Rounds;

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

/// A write's place in line for a confirmation: the round it must wait for
/// (that round, or a later one, was requested after the write arrived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Ticket {
    /// No ticket (a placeholder): round 0, which is never handed out.
    pub const NONE: Ticket = Ticket(0);

    fn round(self) -> u64 {
        self.0
    }
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

/// What a session thread's driver keeps: how to wake it, and its last
/// controller answer (its rounds run on its thread, so an unchanged
/// topology is compared rather than parsed again, without contention).
#[derive(Debug, Default)]
struct Driver {
    /// Wakes the driver: a round is wanted, a place on the wire is free, or
    /// the configuration changed.
    wake: Notify,
    last_answer: Mutex<controller::LastAnswer>,
}

thread_local! {
    /// The driver that runs on this thread; driver 0 elsewhere (any driver
    /// sends a wanted round, its own thread's is only the cheapest to wake).
    static HOME_DRIVER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Batches mastership confirmations for every write.
#[derive(Debug)]
pub struct Verifier {
    rounds: Rounds,
    drivers: Box<[Driver]>,
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

const NOT_CONFIRMED: &str = "-TRYAGAIN mastership not confirmed by controller";
/// `verify.timeout_ms` until [`Verifier::configure`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Drivers at most (session threads beyond it share drivers).
const MAX_DRIVERS: usize = 256;

impl Verifier {
    /// A verifier with `drivers` drivers (one per session thread; at least
    /// 1, at most 256), one round on the wire at a time until
    /// [`Verifier::configure`].
    pub fn new(drivers: usize) -> Verifier {
        Verifier {
            rounds: Rounds::new(),
            drivers: (0..drivers.clamp(1, MAX_DRIVERS))
                .map(|_| Driver::default())
                .collect(),
            enabled: AtomicBool::new(true),
            holds_acknowledgement: AtomicBool::new(false),
            max_in_flight: AtomicUsize::new(1),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            highest: AtomicU64::new(0),
            metrics: VerifyMetrics::default(),
        }
    }

    /// How many drivers there are: [`Verifier::run_driver`] must run each.
    pub fn drivers(&self) -> usize {
        self.drivers.len()
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
        self.drivers.iter().for_each(|d| d.wake.notify_one());
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

    /// The ticket of a write arriving now. The first write to want a round
    /// wakes its own thread's driver to send it.
    pub fn ticket(&self) -> Ticket {
        self.metrics.writes.inc();
        let (round, first) = self.rounds.ticket();
        if first {
            let home = HOME_DRIVER.with(std::cell::Cell::get) % self.drivers.len();
            self.drivers[home].wake.notify_one();
        }
        Ticket(round)
    }

    /// Waits until a round ≥ `ticket`'s has finished and returns its outcome.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), Bytes> {
        self.rounds.wait(ticket.round()).await
    }

    /// The confirmation of a write holding `ticket`, without waiting: `None`
    /// while no round ≥ `ticket`'s has finished, then the latest finished
    /// round's outcome (any such round was requested after the write
    /// arrived); a refusal is the complete `-TRYAGAIN ...` reply.
    #[inline]
    pub fn confirmation(&self, ticket: Ticket) -> Option<Result<(), Bytes>> {
        self.rounds.confirmation(ticket.round())
    }

    /// Runs driver `driver` until `shutdown` (the end of the drain, see
    /// [`crate::server`]): sends the wanted round whenever a place on the
    /// wire is free. Run it on the session thread whose driver it is (it
    /// makes the driver that thread's own); each round is bounded by the
    /// timeout [`Verifier::configure`] set last.
    pub async fn run_driver(
        self: Arc<Self>,
        driver: usize,
        role: Arc<Role>,
        (urls, tls): (
            Arc<[String]>,
            Arc<arc_swap::ArcSwapOption<rustls::ClientConfig>>,
        ),
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let driver = driver % self.drivers.len();
        HOME_DRIVER.with(|home| home.set(driver));
        let mut timeout = self.timeout();
        let mut trusted = tls.load_full();
        // This driver's own connections, driven on this thread.
        let mut client = controller::http_client(timeout, trusted.clone());
        if driver == 0 && self.enabled() {
            info!(url = %urls.join(", "), timeout_ms = timeout.as_millis() as u64, max_in_flight = self.max_in_flight(), drivers = self.drivers.len(), "verifying mastership with the controller on every write");
        }
        loop {
            let now = tls.load_full();
            if self.timeout() != timeout
                || !crate::kvrocks::connector::same_settings(&now, &trusted)
            {
                // A reload changed the bound or the controller's CAs.
                (timeout, trusted) = (self.timeout(), now);
                client = controller::http_client(timeout, trusted.clone());
            }
            while let Some(round) = self.rounds.start(self.max_in_flight()) {
                let (this, role, client, urls) = (
                    Arc::clone(&self),
                    Arc::clone(&role),
                    client.clone(),
                    Arc::clone(&urls),
                );
                tokio::spawn(async move {
                    let outcome = this.confirm(driver, &client, &urls, timeout, &role).await;
                    this.rounds.finish(RoundResult { round, outcome });
                    // A round wanted while every place was taken goes now.
                    this.drivers[driver].wake.notify_one();
                });
            }
            tokio::select! {
                _ = self.drivers[driver].wake.notified() => {}
                _ = shutdown.cancelled() => {
                    // `shutdown` comes when the drain is over (the writes
                    // sessions still owed a reply for kept their
                    // confirmations); any still waiting are refused rather
                    // than left hanging.
                    self.rounds.publish(RoundResult {
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

    /// One round sent by driver `driver`: asks the controller, within `timeout`,
    /// and judges the answer.
    async fn confirm(
        &self,
        driver: usize,
        client: &controller::HttpClient,
        urls: &[String],
        timeout: Duration,
        role: &Role,
    ) -> Result<(), Bytes> {
        self.metrics.rounds.inc();
        let started = Instant::now();
        let answer =
            crate::kvrocks::controller_group::fetch_led_answer(client, urls, timeout).await;
        self.metrics
            .round_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = self.judge(driver, answer, role);
        if outcome.is_err() {
            self.metrics.rounds_failed.inc();
        }
        outcome
    }

    /// What one answer (the body of the controller's `200`), received by
    /// driver `driver`, means for the writes waiting on it.
    fn judge(
        &self,
        driver: usize,
        answer: Result<Bytes, String>,
        role: &Role,
    ) -> Result<(), Bytes> {
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
        let (decision, listed_replica) = {
            let mut last = self.drivers[driver % self.drivers.len()]
                .last_answer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match last.read(body, &me) {
                Ok((version, listed_as)) => (
                    controller::decide_role(version, listed_as, highest),
                    listed_as.is_some_and(|r| !r.eq_ignore_ascii_case("master")),
                ),
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
                // Another node is master of this shard while the lease
                // holds: the controller switched it. The poller follows
                // that switch as for its own answer (writes held and
                // handed over); the writes refused here wait for it
                // (`guard::switch_watch`).
                let switched = listed_replica && role.lease().write_allowed();
                if !(switched && role.saw_switch()) {
                    role.revoke(&reason, Source::Verification);
                }
                refuse(&reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let parses = || v.drivers[0].last_answer.lock().expect("lock").parses();
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
