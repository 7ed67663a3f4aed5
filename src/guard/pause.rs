//! Write pauses: hold clients instead of failing them.
//!
//! During a planned failover the controller (or `leasegate failover`) pauses
//! writes on the old master's proxy. Matching requests are *held*: the session
//! stops at that request, keeping its order, and other connections go on until
//! they too send a matching request. When the pause ends (unpause, or its
//! timeout) every held request is asked about again, in arrival order per
//! connection.
//!
//! Holding costs no busy loop and no per-request timer: held sessions wait on
//! one `watch` channel, and one timer task per pause ends it at its timeout.
//! Held requests are bounded (`pause.max_buffered_requests`,
//! `pause.max_buffered_bytes`); past the bound a request gets
//! `-TRYAGAIN write pause buffer full`. Every hold's duration is recorded in
//! `leasegate_pause_hold_duration_seconds`.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::watch;

/// Which requests a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Writes are held; reads pass.
    Write,
    /// Every request from clients is held.
    All,
}

impl PauseMode {
    /// Parses `WRITE` / `ALL` (any case).
    pub fn parse(text: &[u8]) -> Option<PauseMode> {
        if text.eq_ignore_ascii_case(b"write") {
            Some(PauseMode::Write)
        } else if text.eq_ignore_ascii_case(b"all") {
            Some(PauseMode::All)
        } else {
            None
        }
    }
}

/// What held requests get when the node was demoted during the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDemote {
    /// Move the session to the new master (through its leasegate), replaying
    /// AUTH, SELECT, HELLO and CLIENT SETNAME, then release the requests there.
    #[default]
    Forward,
    /// `-MOVED <slot> <host>:<port>` for cluster clients.
    Moved,
    /// `-READONLY ...`.
    Readonly,
}

const NONE: u8 = 0;
const WRITE: u8 = 1;
const ALL: u8 = 2;

/// Who set a pause that only its setter ends (the others are ended by
/// anyone's unpause). Carried to a successor at an upgrade, so that its
/// own poller ends a hold its predecessor's poller set (walkthrough 27: a
/// hold inherited without its owner stalled every write for 30 s and
/// stranded the sessions still waiting on it until the drain timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseOwner {
    /// The poller's hold while its node is not yet at the topology naming
    /// it master.
    PollTakeOver,
    /// The poller's hold while the new master named to this demoted node
    /// does not take its writes yet.
    PollNewMaster,
    /// The Sentinel poller's hold while a Sentinel fails this node over.
    Sentinel,
    /// A step-down's hold (the controller demoted this master): its writes
    /// wait until the new master's leasegate holds the lease
    /// (`control::switch`). A successor's poller ends one it took over
    /// the same way ([`crate::guard::role::Role::resume_step_down`]).
    StepDown,
}

/// The pause set (by a pause, ended by an unpause or its timeout) and the
/// upgrade's freeze over it, changed together under the generation's lock.
#[derive(Debug, Default)]
struct State {
    /// The pause in force: its mode, end and owner.
    set: Option<(PauseMode, Instant, Option<PauseOwner>)>,
    /// An upgrade holds every request whatever the pause ([`Pause::freeze`]).
    frozen: bool,
}

impl State {
    /// The value of [`Pause::active`] for this state.
    fn active(&self) -> u8 {
        match (self.frozen, self.set) {
            (true, _) => ALL,
            (false, Some((PauseMode::All, ..))) => ALL,
            (false, Some((PauseMode::Write, ..))) => WRITE,
            (false, None) => NONE,
        }
    }
}

/// The pause state the admin API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PauseStatus {
    pub paused: bool,
    pub mode: Option<PauseMode>,
    pub held_requests: usize,
    pub held_bytes: usize,
}

/// Counters and timings of pauses.
#[derive(Debug, Clone)]
pub struct PauseMetrics {
    pub hold_seconds: Histogram,
    pub held: Counter,
    pub overflow: Counter,
    pub pauses: Counter,
}

impl Default for PauseMetrics {
    fn default() -> Self {
        Self {
            // 10 µs .. ~20 s
            hold_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 22)),
            held: Counter::default(),
            overflow: Counter::default(),
            pauses: Counter::default(),
        }
    }
}

impl PauseMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pause_hold_duration_seconds",
            "How long each held request was held by a pause",
            self.hold_seconds.clone(),
        );
        registry.register(
            "pause_held_requests",
            "Requests held by a pause",
            self.held.clone(),
        );
        registry.register(
            "pause_buffer_full",
            "Requests refused with TRYAGAIN because the pause buffer was full",
            self.overflow.clone(),
        );
        registry.register("pauses", "Pauses started", self.pauses.clone());
    }
}

/// The write pause of this proxy.
#[derive(Debug)]
pub struct Pause {
    /// `NONE`, `WRITE` or `ALL`: the hot-path check is one load of this.
    active: AtomicU8,
    /// Bumped by every pause and unpause; a timer only ends its own pause.
    generation: watch::Sender<u64>,
    /// Bumped each time requests begin to be held (nothing held before):
    /// what a session whose client stopped reading waits for
    /// ([`Pause::hold_starts`]).
    starts: watch::Sender<u64>,
    held_requests: AtomicUsize,
    held_bytes: AtomicUsize,
    /// `pause.max_buffered_requests` / `_bytes`; a reload may change them
    /// ([`Pause::set_bounds`]).
    max_requests: AtomicUsize,
    max_bytes: AtomicUsize,
    /// The pause set and the freeze; `active` follows it.
    state: std::sync::Mutex<State>,
    /// A demoting topology went to the node at this instant and its answer
    /// is not applied yet ([`Pause::unpause_after_step_down`]).
    step_down_sent: std::sync::Mutex<Option<Instant>>,
    /// A `CLIENT UNPAUSE` waits for that answer: the generation of the
    /// pause it ends (0: none waits). A pause set since stays.
    unpause_deferred: AtomicU64,
    pub metrics: PauseMetrics,
}

impl Pause {
    pub fn new(max_requests: usize, max_bytes: usize) -> Pause {
        Pause {
            active: AtomicU8::new(NONE),
            generation: watch::channel(0).0,
            starts: watch::channel(0).0,
            held_requests: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            max_requests: AtomicUsize::new(max_requests),
            max_bytes: AtomicUsize::new(max_bytes),
            state: std::sync::Mutex::new(State::default()),
            step_down_sent: std::sync::Mutex::new(None),
            unpause_deferred: AtomicU64::new(0),
            metrics: PauseMetrics::default(),
        }
    }

    /// Whether a request (a write, or any request when `write` is false) is held now.
    #[inline]
    pub fn holds(&self, write: bool) -> bool {
        // SeqCst pairs with the writes-in-flight count (see `Session::admit`).
        match self.active.load(Ordering::SeqCst) {
            NONE => false,
            WRITE => write,
            _ => true,
        }
    }

    /// Replaces the buffer bounds (config reload). Requests already held
    /// stay held; new holds are checked against the new bounds.
    pub fn set_bounds(&self, max_requests: usize, max_bytes: usize) {
        self.max_requests.store(max_requests, Ordering::Relaxed);
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    pub fn is_paused(&self) -> bool {
        self.active.load(Ordering::Acquire) != NONE
    }

    /// Whether a pause is set, an upgrade's freeze aside.
    pub fn is_set(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.set.is_some())
    }

    /// Whether a hold of its own may be set now by a component that
    /// leaves a pause already on (and a failover's slot) to their owners:
    /// nothing is set, and no failover runs, unless it is an upgrade
    /// (its freeze): a hold set under the freeze goes to the successor,
    /// which would otherwise start without it (a poll's take-over that
    /// came during an upgrade left the promoted node's writes neither held
    /// nor leased in the successor: `-READONLY master lease expired`).
    pub fn may_hold(&self, failover_running: bool) -> bool {
        !self.is_set() && (!failover_running || self.is_frozen())
    }

    /// Pauses `mode` requests for `timeout`; a later pause replaces this one.
    /// Must be called inside a tokio runtime (the timeout is a task).
    /// Returns the pause's generation (its timer ends only that one).
    pub fn pause(self: &Arc<Self>, timeout: Duration, mode: PauseMode) -> u64 {
        self.pause_as(timeout, mode, None)
    }

    /// [`Pause::pause`], by `owner` when given: then only
    /// [`Pause::end_owned`] with that owner (or an unpause, or its timeout)
    /// ends it.
    pub fn pause_as(
        self: &Arc<Self>,
        timeout: Duration,
        mode: PauseMode,
        owner: Option<PauseOwner>,
    ) -> u64 {
        let mut generation = 0;
        // Subscribed first: an end that comes right after the pause is
        // set is seen by its timer (subscribed after, it was taken as
        // seen, and the timer slept its timeout out: a review).
        let mut changes = self.generation.subscribe();
        self.generation.send_modify(|g| {
            self.change(|state| state.set = Some((mode, Instant::now() + timeout, owner)));
            *g += 1;
            generation = *g;
        });
        self.metrics.pauses.inc();
        let pause = Arc::clone(self);
        tokio::spawn(async move {
            // The timer goes with its pause: ended or replaced, there is
            // nothing left for it to end. (Left to sleep out its timeout,
            // each pause kept ~430 bytes until then: an audit saw 180 MB
            // after 400,000 long pauses, each unpaused at once.)
            let timed_out = tokio::time::sleep(timeout);
            tokio::pin!(timed_out);
            loop {
                tokio::select! {
                    _ = &mut timed_out => {
                        if pause.end(Some(generation)) {
                            tracing::info!(timeout_ms = timeout.as_millis() as u64, "pause timed out");
                        }
                        return;
                    }
                    changed = changes.changed() => {
                        if changed.is_err() || *changes.borrow_and_update() != generation {
                            return;
                        }
                    }
                }
            }
        });
        generation
    }

    /// Ends the pause in force if `owner` set it (in this process, or in
    /// the predecessor this one took over from). Whether it ended one.
    pub fn end_owned(&self, owner: PauseOwner) -> bool {
        let mine = self.owner() == Some(owner);
        mine && self.generation.send_if_modified(|g| {
            // Looked at again under the lock: a pause set meanwhile stays.
            if self.owner() != Some(owner) {
                return false;
            }
            self.change(|state| state.set = None);
            *g += 1;
            true
        })
    }

    /// Whether an upgrade's freeze holds every request (a hold set now is
    /// set under it, for the successor to take).
    fn is_frozen(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.frozen)
    }

    /// Who set the pause in force, when one of [`PauseOwner`].
    pub fn owner(&self) -> Option<PauseOwner> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.set.and_then(|(.., o)| o))
    }

    /// An upgrade holds every request from now on, whatever pauses and
    /// unpauses come meanwhile (the controller's `CLIENT UNPAUSE` ended the
    /// upgrade's hold when it was a pause, and the predecessor admitted
    /// writes after it had handed its lease over). They change the pause
    /// set under the freeze, which goes to the successor as it is then.
    /// Ended by [`Pause::thaw`] if the take-over fails; never otherwise.
    pub fn freeze(&self) {
        // Held requests are not woken: they stay held.
        self.generation.send_if_modified(|_| {
            self.change(|state| state.frozen = true);
            false
        });
    }

    /// The take-over failed: the pause set (if any) is what holds again.
    pub fn thaw(&self) {
        // Every held request is asked about again (the generation stays
        // the same: owners still end their own pauses).
        self.generation
            .send_modify(|_| self.change(|state| state.frozen = false));
    }

    /// Applies `f` to the state and `active` to match (under the
    /// generation's lock, which every caller holds).
    fn change(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
            // SeqCst pairs with the writes-in-flight count (see `Session::admit`).
            let was = self.active.swap(state.active(), Ordering::SeqCst);
            if was == NONE && state.active() != NONE {
                self.starts.send_modify(|n| *n += 1);
            }
        }
    }

    /// The hold starts to come: subscribed before [`Pause::is_paused`] is
    /// looked at, a start between the two is not missed. Waited for only
    /// by a session whose client stopped reading while a write of its is
    /// in flight (its replies are then read past the bound, as a pause
    /// waits for that write: see `proxy::session::unread`).
    pub fn hold_starts(&self) -> watch::Receiver<u64> {
        self.starts.subscribe()
    }

    /// Ends the pause; held requests are asked about again.
    pub fn unpause(&self) {
        self.end(None);
    }

    /// A demoting topology goes to the node: until its answer is applied
    /// ([`Pause::step_down_answered`]), a `CLIENT UNPAUSE` waits for it.
    pub fn step_down_sent(&self) {
        if let Ok(mut sent) = self.step_down_sent.lock() {
            *sent = Some(Instant::now());
        }
    }

    /// The node's answer to the demoting topology is applied (its `+OK`:
    /// the lease revoked and the node marked demoted; or its refusal): a
    /// `CLIENT UNPAUSE` that waited for it takes effect now.
    pub fn step_down_answered(&self) {
        if let Ok(mut sent) = self.step_down_sent.lock() {
            *sent = None;
        }
        self.end_deferred();
    }

    /// `CLIENT UNPAUSE` from whoever paused this proxy (a new master's
    /// fence, the controller): at once, unless a demoting topology is on
    /// its way to the node. Then it waits for the node's answer (at most
    /// `within`): writes released in between would reach a node that may
    /// be a replica already, which answers them `MOVED` (walkthrough 26: 37
    /// errors, the new master's fence having ended this node's pause as
    /// soon as the node reported itself a replica). It ends the pause in
    /// force when it came, not one set while it waits (that one's owner
    /// ends it). Whether it waits.
    pub fn unpause_after_step_down(self: &Arc<Self>, within: Duration) -> bool {
        let sent = self.step_down_sent.lock().ok().and_then(|s| *s);
        let deadline = sent.map(|at| at + within).filter(|d| *d > Instant::now());
        let generation = *self.generation.borrow();
        let (Some(deadline), Some(_)) = (deadline, self.remaining()) else {
            self.unpause();
            return false;
        };
        self.unpause_deferred.store(generation, Ordering::Release);
        let pause = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            pause.end_deferred();
        });
        true
    }

    /// Ends the pause a deferred `CLIENT UNPAUSE` waits to end, if it is
    /// still the one in force.
    fn end_deferred(&self) {
        let generation = self.unpause_deferred.swap(0, Ordering::AcqRel);
        if generation != 0 {
            self.end(Some(generation));
        }
    }

    /// Ends the pause (only the pause of `generation`, when given: a timer
    /// never ends a later pause). Returns whether it ended one.
    fn end(&self, generation: Option<u64>) -> bool {
        self.generation.send_if_modified(|g| {
            if generation.is_some_and(|mine| mine != *g) {
                return false;
            }
            self.change(|state| state.set = None);
            *g += 1;
            true
        })
    }

    /// The pause set and how long it has left (`None`: none), whether or
    /// not an upgrade's freeze is over it.
    pub fn remaining(&self) -> Option<(PauseMode, Duration)> {
        let (mode, until, _) = self.state.lock().ok()?.set?;
        Some((mode, until.saturating_duration_since(Instant::now())))
    }

    /// Takes a place in the pause buffer for a request of `bytes`, or `None`
    /// when the buffer is full.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Option<Hold> {
        let requests = self.held_requests.fetch_add(1, Ordering::AcqRel) + 1;
        let total = self.held_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if requests > self.max_requests.load(Ordering::Relaxed)
            || total > self.max_bytes.load(Ordering::Relaxed)
        {
            self.held_requests.fetch_sub(1, Ordering::AcqRel);
            self.held_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.metrics.overflow.inc();
            return None;
        }
        self.metrics.held.inc();
        Some(Hold {
            pause: Arc::clone(self),
            bytes,
            since: Instant::now(),
            generation: *self.generation.borrow(),
            frozen: self.is_frozen(),
        })
    }

    /// Waits until the pause that `hold` was taken under has ended.
    pub async fn wait(&self, hold: &Hold) {
        let mut rx = self.generation.subscribe();
        // A request held by an upgrade's freeze is asked about again at
        // its thaw, which leaves the generation as it was.
        let _ = rx
            .wait_for(|g| {
                *g != hold.generation || !self.is_paused() || (hold.frozen && !self.is_frozen())
            })
            .await;
    }

    pub fn status(&self) -> PauseStatus {
        let mode = match self.active.load(Ordering::Acquire) {
            WRITE => Some(PauseMode::Write),
            ALL => Some(PauseMode::All),
            _ => None,
        };
        PauseStatus {
            paused: mode.is_some(),
            mode,
            held_requests: self.held_requests.load(Ordering::Acquire),
            held_bytes: self.held_bytes.load(Ordering::Acquire),
        }
    }
}

/// A held request's place in the pause buffer; dropping it (release, or the
/// client going away) frees the place and records the hold time.
#[derive(Debug)]
pub struct Hold {
    pause: Arc<Pause>,
    bytes: usize,
    since: Instant,
    generation: u64,
    /// Taken under an upgrade's freeze.
    frozen: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.pause.held_requests.fetch_sub(1, Ordering::AcqRel);
        self.pause
            .held_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
        self.pause
            .metrics
            .hold_seconds
            .observe(self.since.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests;
