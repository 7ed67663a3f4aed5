//! The one sequence of confirmation rounds of a leasegate: which round a
//! write arriving now waits for, when the next round may go out, and where
//! writes wait for their round's answer.
//!
//! A single sequence, whatever the number of session threads, so that the
//! writes of every session share a round: with a sequence per thread (the
//! lanes of an earlier build) 16 threads split 50 clients' writes into
//! rounds of ~3, and the bound on rounds on the wire left each thread one
//! round in sixteen (0.24 of the throughput bound, issue 24).
//!
//! The hot path, a write taking its ticket, is one atomic load while a round
//! is already wanted, and one `fetch_or` for the first write after a round
//! went out: no lock, no cache line written per write.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::Notify;

/// The result of one confirmation round.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub round: u64,
    /// `Ok` when the controller confirmed this node as master; otherwise the
    /// complete `-TRYAGAIN ...` reply for the writes that waited on it.
    pub outcome: Result<(), Bytes>,
}

/// Wait lists of rounds; more than the rounds ever on the wire at once
/// (`verify.max_in_flight` ≤ 64).
const WAITER_SLOTS: usize = 64;

/// The bit of [`Rounds::state`] that says the next round is wanted.
const WANTED: u64 = 1;

/// The round sequence (see the module doc).
#[derive(Debug)]
pub(super) struct Rounds {
    /// `next << 1 | wanted`: the round that writes arriving now join, and
    /// whether a write is waiting for it. Writes only set `wanted`; only
    /// [`Rounds::start`] clears it, by moving to the next round.
    state: AtomicU64,
    /// Rounds on the wire.
    on_the_wire: AtomicUsize,
    /// The latest finished round (the highest number) and its outcome.
    latest: ArcSwap<RoundResult>,
    /// Serialises [`Rounds::publish`]: two rounds finishing at once on
    /// different threads publish in turn.
    publishing: Mutex<()>,
    /// Where writes wait: round `n`'s waiters on `waiters[n % WAITER_SLOTS]`,
    /// so that a finished round wakes only the writes it settles (and,
    /// rarely, some of a round `WAITER_SLOTS` later, which wait again).
    waiters: Box<[Notify]>,
}

impl Rounds {
    pub(super) fn new() -> Rounds {
        Rounds {
            state: AtomicU64::new(1 << 1),
            on_the_wire: AtomicUsize::new(0),
            latest: ArcSwap::from_pointee(RoundResult {
                round: 0,
                outcome: Err(Bytes::from_static(
                    b"-TRYAGAIN mastership not confirmed by controller\r\n",
                )),
            }),
            publishing: Mutex::new(()),
            waiters: (0..WAITER_SLOTS).map(|_| Notify::new()).collect(),
        }
    }

    /// The round a write arriving now must wait for (it is sent after this
    /// call), and whether this write is the first to want it (then a driver
    /// must be woken to send it).
    #[inline]
    pub(super) fn ticket(&self) -> (u64, bool) {
        let seen = self.state.load(Ordering::Acquire);
        if seen & WANTED != 0 {
            return (seen >> 1, false);
        }
        let before = self.state.fetch_or(WANTED, Ordering::AcqRel);
        (before >> 1, before & WANTED == 0)
    }

    /// Whether a write waits for a round not yet sent.
    pub(super) fn wanted(&self) -> bool {
        self.state.load(Ordering::SeqCst) & WANTED != 0
    }

    /// Rounds on the wire now.
    #[cfg(test)]
    fn on_the_wire(&self) -> usize {
        self.on_the_wire.load(Ordering::SeqCst)
    }

    /// Takes the wanted round off the sequence and a place on the wire for
    /// it, if a round is wanted and fewer than `max` are on the wire. The
    /// caller sends it and then calls [`Rounds::finish`].
    pub(super) fn start(&self, max: usize) -> Option<u64> {
        loop {
            if !self.wanted() {
                return None;
            }
            self.on_the_wire
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()?;
            let state = self.state.load(Ordering::SeqCst);
            // `next << 1 | 1` + 1 = `(next + 1) << 1`: the next round, not
            // yet wanted. Fails only if another driver took it first.
            if state & WANTED != 0
                && self
                    .state
                    .compare_exchange(state, state + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Some(state >> 1);
            }
            // Taken by another driver: give the place back and look again
            // (a write may have wanted the round after it meanwhile).
            self.on_the_wire.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Gives up a finished round's place on the wire and publishes its
    /// result. The caller then looks for a wanted round
    /// ([`Rounds::start`]): a write that wanted one while every place was
    /// taken is sent by whoever frees a place.
    pub(super) fn finish(&self, result: RoundResult) {
        self.on_the_wire.fetch_sub(1, Ordering::SeqCst);
        self.publish(result);
    }

    /// The outcome that settles a write waiting for `round`: `None` while no
    /// round ≥ it has finished, then the latest finished round's (any such
    /// round was sent after the write arrived).
    #[inline]
    pub(super) fn confirmation(&self, round: u64) -> Option<Result<(), Bytes>> {
        let latest = self.latest.load();
        (latest.round >= round).then(|| latest.outcome.clone())
    }

    /// Waits until a round ≥ `round` has finished and returns its outcome.
    pub(super) async fn wait(&self, round: u64) -> Result<(), Bytes> {
        let slot = &self.waiters[(round % WAITER_SLOTS as u64) as usize];
        loop {
            // Registered before looking, so a round finishing in between
            // is not missed.
            let notified = slot.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.confirmation(round) {
                return outcome;
            }
            notified.await;
        }
    }

    /// Makes `result` the latest, unless a later round finished first (with
    /// several rounds on the wire, a late answer to an older round must not
    /// replace a newer one), and wakes the writes it settles.
    pub(super) fn publish(&self, result: RoundResult) {
        let (from, to) = {
            let _turn = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
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
        let r = Rounds::new();
        let (a, first) = r.ticket();
        assert!(first, "the first write wakes a driver");
        let (b, first) = r.ticket();
        assert!(!first);
        assert_eq!(a, b, "both arrived before the round was sent");
        assert_eq!(r.start(1), Some(a));
        assert_eq!(r.start(1), None, "nothing wanted");
        let (c, first) = r.ticket();
        assert!(first);
        assert_eq!(c, a + 1, "arrived after the request was sent");
        assert_eq!(r.start(1), None, "one round on the wire at a time");
        r.finish(ok(a));
        assert_eq!(r.confirmation(a), Some(Ok(())));
        assert_eq!(r.confirmation(c), None);
        assert_eq!(r.start(1), Some(c), "the place is free again");
        assert_eq!(r.on_the_wire(), 1);
    }

    /// Two drivers racing for one wanted round: one sends it, the other
    /// gives its place back.
    #[test]
    fn a_wanted_round_is_sent_once_whoever_asks() {
        let r = Arc::new(Rounds::new());
        for _ in 0..200 {
            let (round, _) = r.ticket();
            let sent: Vec<Option<u64>> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4).map(|_| s.spawn(|| r.start(64))).collect();
                racers
                    .into_iter()
                    .map(|h| h.join().expect("racer"))
                    .collect()
            });
            let sent: Vec<u64> = sent.into_iter().flatten().collect();
            assert_eq!(sent, vec![round], "exactly one racer sends it");
            assert_eq!(r.on_the_wire(), 1, "the losers gave their places back");
            r.finish(ok(round));
            assert_eq!(r.on_the_wire(), 0);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_is_released_by_its_round_or_a_later_one() {
        let r = Arc::new(Rounds::new());
        let (t, _) = r.ticket();
        let waiter = {
            let r = Arc::clone(&r);
            tokio::spawn(async move { r.wait(t).await })
        };
        let round = r.start(1).expect("round");
        r.finish(RoundResult {
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
        let r = Arc::new(Rounds::new());
        let (early, _) = r.ticket();
        assert_eq!(r.start(4), Some(early));
        // The same wait list.
        let later = early + WAITER_SLOTS as u64;
        let waiter = {
            let r = Arc::clone(&r);
            tokio::spawn(async move { r.wait(later).await })
        };
        tokio::task::yield_now().await;
        r.finish(ok(early));
        assert_eq!(r.wait(early).await, Ok(()));
        assert_eq!(r.confirmation(later), None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken, but not settled");
        r.publish(RoundResult {
            round: later,
            outcome: Err(Bytes::from_static(b"-TRYAGAIN no\r\n")),
        });
        r.publish(ok(early + 1));
        assert_eq!(
            waiter.await.expect("join"),
            Err(Bytes::from_static(b"-TRYAGAIN no\r\n"))
        );
        assert_eq!(
            r.confirmation(early + 1),
            Some(Err(Bytes::from_static(b"-TRYAGAIN no\r\n"))),
            "the older answer came late: the newer one stands"
        );
    }

    /// Writes on many threads at once all land in rounds sent after they
    /// took their tickets, and each wanted round is sent once.
    #[test]
    fn tickets_from_many_threads_are_never_settled_by_an_earlier_round() {
        let r = Arc::new(Rounds::new());
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let driver = s.spawn(|| {
                let mut sent = Vec::new();
                while !stop.load(Ordering::SeqCst) || r.wanted() {
                    if let Some(round) = r.start(1) {
                        sent.push(round);
                        r.finish(ok(round));
                    }
                }
                sent
            });
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..20_000 {
                            // Rounds finished before this ticket must not settle it.
                            let before = r.latest.load().round;
                            let (t, _) = r.ticket();
                            assert!(t > before, "ticket {t} after round {before} finished");
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("writer");
            }
            stop.store(true, Ordering::SeqCst);
            let sent = driver.join().expect("driver");
            assert!(
                sent.windows(2).all(|w| w[1] == w[0] + 1),
                "rounds go out in order, each once"
            );
        });
    }
}
