//! The master lease: may this node accept writes right now?
//!
//! The controller grants the lease (heartbeats pushed over RESP or HTTP, or
//! leasegate pulling the cluster topology); anything that says this node is no
//! longer master revokes it. Writes are checked against it on every request,
//! so an isolated old master stops accepting writes once the lease runs out,
//! without any timer having to fire.
//!
//! Safety rests on the arithmetic of one grant:
//!
//! ```text
//! deadline = anchor + ttl·(1 − clock_drift) − safety_margin
//! ```
//!
//! where `anchor` is the earliest local instant that provably precedes the
//! controller's decision: the instant leasegate issued the nonce the grant
//! echoes, or the send time of the poll that carried it, else (weaker) the
//! receive time. A grant delayed in the network therefore only shortens the
//! lease. The clock is monotonic and keeps counting through suspend
//! (`CLOCK_BOOTTIME`), behind [`Clock`] so tests can drive it.
//!
//! Hot path ([`Lease::write_allowed`]): one atomic load and one clock read; the
//! mode is a second atomic load in the Gate. Grants and revocations are rare and
//! take a mutex.
//!
//! **Terms.** A write is admitted under the lease, but the node may apply it
//! later (a slow script, `CLIENT PAUSE` on the node, a full socket). Its
//! acknowledgement is therefore checked too ([`Lease::acknowledgeable`]): it
//! may reach the client only if the lease was valid *without interruption*
//! from the admission to the reply. A *term* is one such uninterrupted
//! stretch: every revocation, and every grant that finds the lease lapsed,
//! starts a new one. Within a term the deadline only moves forward, so "the
//! same term as at admission, and valid now" means "valid throughout".
//!
//! **Pulse.** A lease from a source that leasegate polls (Redis Sentinel)
//! is only used while the poll goes on answering ([`Lease::beat`]): a
//! process frozen past the pulse wakes with its deadline ahead, but the
//! source may have moved the lease meanwhile, and its first writes would
//! be admitted before its poll could say so. Until the next poll answers,
//! writes wait ([`Lease::stalled`]) and replies are not acknowledged; the
//! lapse starts a new term.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Deserialize;

pub use crate::guard::clock::{BootClock, Clock, ManualClock, Nanos};
pub use handing::{HandedLease, Saved};
pub use metrics::{LeaseMetrics, REMAINING_FOREVER_SECONDS};

const MS: u64 = 1_000_000;
/// `deadline` meaning "valid until the controller says otherwise" (`lease.initial: valid`).
const FOREVER: Nanos = u64::MAX;
/// How many issued nonces are remembered.
const NONCES_KEPT: usize = 1024;
/// The longest lease a grant may carry (one hour). A controller that asks for
/// more has a bug or is not a controller; such a grant is refused.
pub const MAX_TTL_MS: u64 = 3_600_000;

/// `lease.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseMode {
    /// No gating at all.
    #[default]
    Disabled,
    /// Writes pass; each one that would have been refused is counted and logged.
    LogOnly,
    /// Writes after the deadline are refused.
    BlockWrite,
}

impl LeaseMode {
    fn from_u8(v: u8) -> LeaseMode {
        match v {
            1 => LeaseMode::LogOnly,
            2 => LeaseMode::BlockWrite,
            _ => LeaseMode::Disabled,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            LeaseMode::Disabled => 0,
            LeaseMode::LogOnly => 1,
            LeaseMode::BlockWrite => 2,
        }
    }
}

/// `lease.initial`: the lease before the controller has said anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Initial {
    /// Fail closed: no writes until the first grant.
    #[default]
    Expired,
    /// Writes pass until the first grant or revocation (migration aid; like
    /// the upstream proposal's "deadline 0 allows writes").
    Valid,
}

/// The parameters of the lease arithmetic. A reload may replace them
/// ([`Lease::set_tuning`]); they are read only when a grant's deadline is
/// computed, so a deadline already granted stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseTuning {
    pub clock_drift: f64,
    pub safety_margin_ms: u64,
}

/// One renewal, from whichever source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The node the controller names master; `None` means "this node"
    /// (the two-argument heartbeat form).
    pub master_node_id: Option<String>,
    pub ttl_ms: u64,
    pub epoch: u64,
    /// Anchor the grant at the instant this nonce was issued.
    pub nonce: Option<u64>,
    /// Anchor the grant at this instant (a poll's send time).
    pub anchor: Option<Nanos>,
}

/// What a grant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantOutcome {
    /// The lease now runs until the new deadline (or a later one it already had).
    Renewed,
    /// Another node is master: the lease is revoked.
    Revoked,
    /// The echoed nonce is unknown (issued by an earlier process, or too
    /// old): the lease is left as it was. The next heartbeat, echoing the
    /// fresh nonce of this reply, renews it.
    UnknownNonce,
}

/// Why a grant was refused; the lease is untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("election version mismatch: got {got}, current {current}")]
    EpochMismatch { got: u64, current: u64 },
    #[error("invalid lease_ms (must be between 1 and {MAX_TTL_MS})")]
    InvalidTtl,
    #[error(
        "this node's id is unknown to leasegate (set node_id, or send CLUSTERX SETNODEID first)"
    )]
    UnknownNodeId,
    #[error("this leasegate is handing over to its successor (an upgrade): ask again")]
    HandedOver,
    #[error("the lease comes from Redis Sentinel here (sentinel.addrs): only the Sentinels renew it; a grant naming another node still revokes it")]
    SentinelOnly,
}

/// A consistent view of the lease, for replies and status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseSnapshot {
    pub mode: LeaseMode,
    pub valid: bool,
    pub owner: Option<String>,
    pub node_id: Option<String>,
    pub epoch: u64,
    /// Milliseconds until the deadline; 0 when expired, `u64::MAX` when
    /// valid until told otherwise.
    pub remaining_ms: u64,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Default)]
struct Cold {
    owner: Option<String>,
    node_id: Option<String>,
    revoked_reason: Option<String>,
    nonces: VecDeque<(u64, Nanos)>,
    next_nonce: u64,
    /// Handed to a successor process ([`Lease::export`]): grants are
    /// refused, so the lease the successor took cannot change behind it.
    handed_over: bool,
}

/// The lease of this node.
pub struct Lease {
    clock: Arc<dyn Clock>,
    /// Swapped whole by a reload, so a deadline never mixes old and new values.
    tuning: ArcSwap<LeaseTuning>,
    mode: AtomicU8,
    deadline: AtomicU64,
    epoch: AtomicU64,
    /// The current term (see the module doc): bumped by every revocation and
    /// by every grant that finds the lease lapsed.
    term: AtomicU64,
    /// Revocations so far (role changes, another master named, failover,
    /// a negative verification): a poll must not undo one at the same version.
    revocations: AtomicU64,
    /// Until when the lease may be used without another answer of the poll
    /// that renews it ([`Lease::beat`]); `FOREVER` where no poll is expected.
    pulse: AtomicU64,
    cold: Mutex<Cold>,
}

/// The term a write was admitted in: its acknowledgement must come in the
/// same term, while the lease is still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term(u64);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("mode", &self.mode())
            .field("deadline", &self.deadline.load(Ordering::Relaxed))
            .field("epoch", &self.epoch())
            .finish()
    }
}

impl Lease {
    pub fn new(
        clock: Arc<dyn Clock>,
        mode: LeaseMode,
        initial: Initial,
        tuning: LeaseTuning,
        node_id: Option<String>,
    ) -> Lease {
        let deadline = match initial {
            Initial::Expired => 0,
            Initial::Valid => FOREVER,
        };
        let nonce_seed = clock.now() | 1;
        Lease {
            clock,
            tuning: ArcSwap::from_pointee(tuning),
            mode: AtomicU8::new(mode.as_u8()),
            deadline: AtomicU64::new(deadline),
            epoch: AtomicU64::new(0),
            term: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            pulse: AtomicU64::new(FOREVER),
            cold: Mutex::new(Cold {
                node_id,
                next_nonce: nonce_seed,
                ..Cold::default()
            }),
        }
    }

    #[inline]
    pub fn mode(&self) -> LeaseMode {
        LeaseMode::from_u8(self.mode.load(Ordering::Relaxed))
    }

    pub fn set_mode(&self, mode: LeaseMode) {
        self.mode.store(mode.as_u8(), Ordering::Relaxed);
    }

    /// The lease arithmetic's parameters now.
    pub fn tuning(&self) -> LeaseTuning {
        **self.tuning.load()
    }

    /// Replaces the lease arithmetic's parameters (config reload): grants
    /// from now on use them; a deadline already granted is kept (within a
    /// term a later grant never shortens the lease).
    pub fn set_tuning(&self, tuning: LeaseTuning) {
        self.tuning.store(Arc::new(tuning));
    }

    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Whether a write may be accepted now. The comparison is made at the
    /// moment of asking, on every write: nothing has to fire for a lease to lapse.
    #[inline]
    pub fn write_allowed(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        deadline == FOREVER || self.clock.now() < deadline
    }

    /// The term now; taken when a write is admitted.
    #[inline]
    pub fn term(&self) -> Term {
        Term(self.term.load(Ordering::Acquire))
    }

    /// Whether the lease may be used now: valid, and its poll heard from
    /// within the pulse ([`Lease::beat`]). The Gate's question, on every
    /// write: two atomic loads and one clock read.
    #[inline]
    pub fn usable(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        let pulse = self.pulse.load(Ordering::Acquire);
        if deadline == FOREVER && pulse == FOREVER {
            return true;
        }
        let now = self.clock.now();
        now < deadline && now < pulse
    }

    /// The poll that renews the lease, sent at `sent`, answered (whatever
    /// it said): the lease may be used until `within` after `sent` without
    /// another answer. Anchored at the send time: a poll in flight when
    /// the process froze is answered, on waking, with what the source said
    /// before the freeze, and must not make the lease usable again. A beat
    /// that finds the pulse lapsed starts a new term: writes admitted
    /// before the lapse are not acknowledged.
    pub fn beat(&self, sent: Nanos, within: std::time::Duration) {
        let now = self.clock.now();
        let within = u64::try_from(within.as_nanos()).unwrap_or(u64::MAX);
        // The term first, as a grant does: a reply that sees the new
        // pulse sees the new term too.
        let old = self.pulse.load(Ordering::Acquire);
        if old != FOREVER && old <= now {
            self.next_term();
        }
        self.pulse
            .store(sent.min(now).saturating_add(within), Ordering::Release);
    }

    /// The lease is valid but its poll has not answered within the pulse
    /// (this process, or its control thread, stalled): how long the lease
    /// has left, for writes to wait for the next answer. `None` otherwise.
    pub fn stalled(&self) -> Option<std::time::Duration> {
        let deadline = self.deadline.load(Ordering::Acquire);
        let pulse = self.pulse.load(Ordering::Acquire);
        let now = self.clock.now();
        // A lease valid until told otherwise waits at most a minute.
        (now >= pulse && now < deadline)
            .then(|| std::time::Duration::from_nanos((deadline - now).min(60_000 * MS)))
    }

    /// Whether the acknowledgement of a write admitted in `term` may reach
    /// the client now: the lease is usable and has been, without a break,
    /// since then. Two loads, one clock read, one term load.
    #[inline]
    pub fn acknowledgeable(&self, term: Term) -> bool {
        // Deadline first: a grant bumps the term before it stores the
        // deadline, so a new deadline seen here implies the new term below.
        self.usable() && self.term.load(Ordering::Acquire) == term.0
    }

    /// How many revocations there have been.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Starts a new term (before a new deadline is stored).
    fn next_term(&self) {
        self.term.fetch_add(1, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cold> {
        // A panic while holding this lock cannot leave the lease half
        // updated (atomics are written last), so a poisoned lock is usable.
        self.cold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's id, from `node_id` or a `CLUSTERX SETNODEID` seen passing.
    pub fn node_id(&self) -> Option<String> {
        self.lock().node_id.clone()
    }

    /// Learns this node's id (config `node_id` wins: only set when unknown).
    pub fn learn_node_id(&self, id: &str) {
        let mut cold = self.lock();
        if cold.node_id.is_none() {
            cold.node_id = Some(id.to_string());
        }
    }

    /// Issues a fresh nonce and remembers when: a grant echoing it is
    /// anchored at this instant.
    pub fn issue_nonce(&self) -> u64 {
        let now = self.clock.now();
        let mut cold = self.lock();
        cold.next_nonce = cold.next_nonce.wrapping_add(1);
        let nonce = cold.next_nonce;
        if cold.nonces.len() == NONCES_KEPT {
            cold.nonces.pop_front();
        }
        cold.nonces.push_back((nonce, now));
        nonce
    }

    /// Applies a grant received at `received_at`.
    pub fn grant(&self, grant: &Grant, received_at: Nanos) -> Result<GrantOutcome, GrantError> {
        let mut cold = self.lock();
        if cold.handed_over {
            return Err(GrantError::HandedOver);
        }
        let current = self.epoch();
        if grant.epoch < current {
            return Err(GrantError::EpochMismatch {
                got: grant.epoch,
                current,
            });
        }
        if grant.ttl_ms == 0 || grant.ttl_ms > MAX_TTL_MS {
            return Err(GrantError::InvalidTtl);
        }
        if let Some(master) = &grant.master_node_id {
            let Some(me) = cold.node_id.clone() else {
                return Err(GrantError::UnknownNodeId);
            };
            if *master != me {
                self.epoch.store(grant.epoch, Ordering::Release);
                cold.owner = Some(master.clone());
                cold.revoked_reason = Some(format!("controller named {master} master"));
                self.end_term();
                return Ok(GrantOutcome::Revoked);
            }
        }
        let anchor = match (grant.nonce, grant.anchor) {
            (Some(nonce), _) => match cold.nonces.iter().find(|(n, _)| *n == nonce) {
                Some((_, issued)) => *issued,
                None => return Ok(GrantOutcome::UnknownNonce),
            },
            (None, Some(sent)) => sent.min(received_at),
            (None, None) => received_at,
        };
        let deadline = self.deadline_for(anchor, grant.ttl_ms);
        self.epoch.store(grant.epoch, Ordering::Release);
        cold.owner = cold.node_id.clone();
        cold.revoked_reason = None;
        let old = self.deadline.load(Ordering::Acquire);
        // A later grant never shortens a lease an earlier valid grant gave
        // (both were promises the controller made), except over a revocation
        // or `initial: valid`, which any grant replaces.
        if old == FOREVER || deadline > old {
            if old != FOREVER && old <= self.clock.now() {
                // The lease had lapsed (or was revoked): a new term begins.
                self.next_term();
            }
            self.deadline.store(deadline, Ordering::Release);
        }
        Ok(GrantOutcome::Renewed)
    }

    /// `anchor + ttl·(1 − drift) − margin`, never before the anchor.
    pub fn deadline_for(&self, anchor: Nanos, ttl_ms: u64) -> Nanos {
        let tuning = self.tuning.load();
        let ttl = (ttl_ms as f64 * MS as f64 * (1.0 - tuning.clock_drift)) as u64;
        let usable = ttl.saturating_sub(tuning.safety_margin_ms.saturating_mul(MS));
        anchor.saturating_add(usable).max(anchor)
    }

    /// Revokes the lease at once (role transition, controller's word).
    pub fn revoke(&self, reason: &str) {
        let mut cold = self.lock();
        // Revoked already, for the same reason, and not granted since: the
        // term has ended and nothing new happened (the probe repeats what
        // it sees on every tick). Not counted again, so that a promotion
        // the node accepted since is not taken to be older than it.
        if self.deadline.load(Ordering::Acquire) == 0
            && cold.revoked_reason.as_deref() == Some(reason)
        {
            return;
        }
        self.end_term();
        cold.revoked_reason = Some(reason.to_string());
        if cold.owner == cold.node_id {
            cold.owner = None;
        }
    }

    /// Ends the lease at once: no write is admitted, and no write admitted
    /// before is acknowledged, from now on.
    fn end_term(&self) {
        self.deadline.store(0, Ordering::Release);
        self.next_term();
        self.revocations.fetch_add(1, Ordering::AcqRel);
    }

    pub fn snapshot(&self) -> LeaseSnapshot {
        let cold = self.lock();
        let deadline = self.deadline.load(Ordering::Acquire);
        let now = self.clock.now();
        let remaining_ms = if deadline == FOREVER {
            u64::MAX
        } else {
            deadline.saturating_sub(now) / MS
        };
        LeaseSnapshot {
            mode: self.mode(),
            valid: deadline == FOREVER || now < deadline,
            owner: cold.owner.clone(),
            node_id: cold.node_id.clone(),
            epoch: self.epoch(),
            remaining_ms,
            revoked_reason: cold.revoked_reason.clone(),
        }
    }
}

mod handing;
mod metrics;
#[cfg(test)]
mod tests;
