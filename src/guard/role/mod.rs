//! The node's role as the guard knows it, and the one way to change it.
//!
//! Every grant and revocation of the master lease — a heartbeat, an HTTP
//! push, a controller poll, a negative verification, the node probe, a role
//! change the node accepted, a failover — goes through [`Role::grant`] or
//! [`Role::revoke`]: they apply it to the [`Lease`], clear the demotion when
//! this node is master again, count it and log it once. Beside that, the
//! role state the failover writes and the Gate reads: the demotion (and
//! where the new master is), the hand-over target, the writes in flight, and
//! the failover's own state.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tracing::{debug, info};

pub use crate::guard::failover_status::FailoverStatus;
use crate::guard::lease::{Grant, GrantError, GrantOutcome, Lease, Nanos};
use crate::guard::outside_grants::OutsideGrantRule;
use crate::guard::pause::OnDemote;
use crate::guard::switch_watch::SwitchWatch;

mod in_flight;
mod source;

use in_flight::InFlight;
pub use source::{RoleMetrics, Source};

/// This node was demoted; where the new master is, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demotion {
    /// The client address of the new master's leasegate (`host:port`).
    pub new_master: Option<Arc<str>>,
}

/// The node's role, and the only way to grant or revoke its lease.
pub struct Role {
    lease: Arc<Lease>,
    /// `pause.on_demote` as a `u8` ([`on_demote_to_u8`]); a reload may change it.
    on_demote: AtomicU8,
    demotion: ArcSwapOption<Demotion>,
    /// What grants from outside the configured lease source may do.
    pub outside_grants: OutsideGrantRule,
    /// Under Sentinel: while demoted and its node still a master on its
    /// own, `INFO` shows the node as the new master's replica
    /// (`control::sentinel::stale`).
    pub stale_master_as_replica: AtomicBool,
    /// `demotion.is_some()`, as one plain load for the hot path.
    demoted: AtomicBool,
    /// Where paused sessions will probably move: set by a failover between
    /// its checks and its switch, so sessions can connect ahead.
    handover_target: std::sync::Mutex<Option<Arc<str>>>,
    /// Sessions with writes forwarded whose replies have not come back yet
    /// (a failover waits for none before it compares offsets). A session
    /// counts once for all its writes in flight, so a pipeline costs two
    /// updates, not two per write.
    writes_in_flight: InFlight,
    /// Replies received to blocking-family writes (BLPOP, BLMOVE, ...): a
    /// failover that read offsets before one of these completed must read
    /// them again, as the pop may have been applied after its reading.
    blocking_writes_completed: AtomicU64,
    /// The state of this proxy's graceful failovers.
    pub failover: FailoverStatus,
    /// A switch of the controller's that verification saw before the
    /// poller ([`Role::saw_switch`]).
    pub switch: SwitchWatch,
    /// The lease poll has had its first answer (or failed to): the server
    /// admits clients after it, so that a restarted leasegate's first
    /// writes meet the controller's word (a demotion, a lease) rather than
    /// the cold start's fenced lease.
    pub first_poll: crate::guard::once::OnceEvent,
    /// What the node said of itself when last probed.
    pub node: crate::guard::node::NodeStatus,
    /// The replicas replicating through this leasegate (a failover times
    /// its pause by their links).
    pub replicas: Arc<crate::guard::replicas::ReplicaLinks>,
    pub metrics: RoleMetrics,
    /// Signalled when the node accepted a topology that lists it as a
    /// master: a poller asks the controller at once instead of at its next tick.
    promoted: tokio::sync::Notify,
    /// The last accepted topology listing this node master: its version,
    /// and the lease's revocation count at that moment.
    promotion: std::sync::Mutex<Option<(u64, u64)>>,
    /// The highest topology version read from the controller (0: none):
    /// another leasegate taking over from this node asks for it (`INFO
    /// leasegate`), since from that version on no older answer renews here.
    controller_version: AtomicU64,
    /// The topology version (the controller's, or the node's where higher)
    /// when a grant last named another node master: a hand-over of the
    /// lease at that version, older than any later one.
    handed_away_at: AtomicU64,
    /// The highest `CLUSTERX SETNODES` version the node was seen to accept
    /// (0: none): Kvrocks takes one at its current version as a no-op.
    node_topology: AtomicU64,
    /// A demoting topology from the controller waits for the writes in
    /// flight ([`crate::guard::gate::Gate`]); its next ask goes on.
    stepping_down: AtomicBool,
    /// A poller follows the controller and ends a step-down's pause
    /// ([`Role::stepped_down`]).
    poller_releases: AtomicBool,
    /// How long a step-down's pause may hold writes with a poller
    /// (`controller.switch_timeout_ms`), in ms.
    step_down_hold_ms: AtomicU64,
    stepped_down: tokio::sync::Notify,
    /// The node accepted a topology naming it master before its lease came:
    /// writes wait for the lease until then instead of being fenced
    /// ([`Role::lease_awaited`]).
    awaiting_lease: std::sync::Mutex<Option<std::time::Instant>>,
    /// Bumped by every [`Role::await_lease`]: a probe whose `ROLE` was
    /// asked before a promotion was accepted must not revoke on its answer.
    lease_awaits: AtomicU64,
    /// A promotion of this node went on at its leasegate's fence (Redis
    /// Sentinel): until then, or until the Sentinels name it, the node's
    /// `ROLE` still saying `slave` or the Sentinels still naming the old
    /// master is the promotion not yet seen everywhere
    /// ([`Role::promotion_under_way`]). Not ended by a revocation, as the
    /// wait for the lease is.
    promoting_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// A promotion passing through, held until the old master is fenced.
    pub promotion_fence: crate::guard::promotion::PromotionFence,
    /// A controller's topology demoting this node while its node is still
    /// master, held until the new master has this node's writes
    /// (`control::step_down_fence`).
    pub step_down_fence: crate::guard::promotion::PromotionFence,
    /// Redis's `FAILOVER` command, as leasegate carries it out.
    pub failover_command: crate::guard::failover_command::FailoverCommand,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role")
            .field("lease", &self.lease)
            .field("demoted", &self.is_demoted())
            .finish()
    }
}

impl Role {
    pub fn new(lease: Arc<Lease>, on_demote: OnDemote) -> Role {
        Role {
            lease,
            on_demote: AtomicU8::new(on_demote_to_u8(on_demote)),
            demotion: ArcSwapOption::empty(),
            outside_grants: OutsideGrantRule::default(),
            stale_master_as_replica: AtomicBool::new(false),
            demoted: AtomicBool::new(false),
            handover_target: std::sync::Mutex::new(None),
            writes_in_flight: InFlight::default(),
            blocking_writes_completed: AtomicU64::new(0),
            failover: FailoverStatus::default(),
            switch: SwitchWatch::default(),
            first_poll: Default::default(),
            node: crate::guard::node::NodeStatus::default(),
            replicas: Arc::default(),
            metrics: RoleMetrics::default(),
            promoted: tokio::sync::Notify::new(),
            promotion: std::sync::Mutex::new(None),
            controller_version: AtomicU64::new(0),
            handed_away_at: AtomicU64::new(0),
            node_topology: AtomicU64::new(0),
            stepping_down: AtomicBool::new(false),
            poller_releases: AtomicBool::new(false),
            step_down_hold_ms: AtomicU64::new(0),
            stepped_down: tokio::sync::Notify::new(),
            awaiting_lease: std::sync::Mutex::new(None),
            lease_awaits: AtomicU64::new(0),
            promoting_until: std::sync::Mutex::new(None),
            promotion_fence: Default::default(),
            step_down_fence: crate::guard::promotion::PromotionFence::refusing_unserved_with(
                "the new master did not get this node's writes in time",
            ),
            failover_command: Default::default(),
        }
    }

    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    pub fn on_demote(&self) -> OnDemote {
        match self.on_demote.load(Ordering::Relaxed) {
            1 => OnDemote::Moved,
            2 => OnDemote::Readonly,
            _ => OnDemote::Forward,
        }
    }

    /// Replaces `pause.on_demote` (config reload): writes asked about from
    /// now on follow it.
    pub fn set_on_demote(&self, on_demote: OnDemote) {
        self.on_demote
            .store(on_demote_to_u8(on_demote), Ordering::Relaxed);
    }

    /// Applies a grant received at `received_at` from `source`. A grant for
    /// this node makes it master again (the demotion is cleared); one naming
    /// another node revokes. A heartbeat's or the admin API's is bounded by
    /// [`Role::outside_grants`].
    pub fn grant(
        &self,
        grant: &Grant,
        received_at: Nanos,
        source: Source,
    ) -> Result<GrantOutcome, GrantError> {
        let bounded = match source {
            Source::Heartbeat | Source::Http => {
                let renews = grant
                    .master_node_id
                    .as_ref()
                    .is_none_or(|m| self.lease.snapshot().node_id.as_ref() == Some(m));
                self.outside_grants.apply(grant, renews)
            }
            _ => Ok(None),
        };
        let was_valid = self.lease.snapshot().valid;
        let outcome = match bounded {
            Ok(bounded) => self
                .lease
                .grant(bounded.as_ref().unwrap_or(grant), received_at),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(GrantOutcome::Renewed) => {
                self.metrics.count(source, "renewed");
                let demoted = self.is_demoted();
                if demoted {
                    info!(
                        source = source.as_str(),
                        "a grant for this node: no longer demoted"
                    );
                }
                self.clear_demotion();
                if demoted || !was_valid {
                    // The node was made master before this grant (a
                    // failover promotes it directly, then grants): the
                    // probe's `ROLE` asked before says nothing of it now
                    // (an attack pass: the stale `slave` revoked the
                    // failover's lease 35 ms after it was granted, 2 in 80
                    // failovers under load).
                    self.lease_awaits.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok(GrantOutcome::Revoked) => {
                let at = self.controller_version.load(Ordering::Acquire);
                self.handed_away_at
                    .fetch_max(at.max(self.node_topology()), Ordering::AcqRel);
                self.stop_awaiting_lease();
                self.metrics.count(source, "revoked");
                info!(
                    source = source.as_str(),
                    master = ?grant.master_node_id,
                    epoch = grant.epoch,
                    "another node was named master: lease revoked"
                );
            }
            Ok(GrantOutcome::UnknownNonce) => self.metrics.count(source, "unknown_nonce"),
            Err(e) => {
                self.metrics.count(source, "refused");
                debug!(source = source.as_str(), error = %e, "grant refused");
            }
        }
        outcome
    }

    /// Revokes the lease because this node is not (or no longer) master.
    /// Logged once per reason while it stays revoked.
    pub fn revoke(&self, reason: &str, source: Source) {
        self.stop_awaiting_lease();
        let snapshot = self.lease.snapshot();
        if snapshot.valid || snapshot.revoked_reason.as_deref() != Some(reason) {
            if matches!(source, Source::Node | Source::Probe) {
                self.metrics.role_revocations.inc();
            }
            self.metrics.count(source, "revoked");
            // A replica is found to be one again and again (the probe and
            // the poller, each with its own words): only the end of a
            // lease is worth an info line.
            if snapshot.valid {
                info!(
                    source = source.as_str(),
                    reason, "revoking the master lease"
                );
            } else {
                debug!(source = source.as_str(), reason, "the lease stays revoked");
            }
        }
        self.lease.revoke(reason);
    }

    /// The node accepted a topology that lists it as a master.
    pub fn topology_promoted(&self, version: Option<u64>) {
        if let (Some(v), Ok(mut p)) = (version, self.promotion.lock()) {
            *p = Some((v, self.lease.revocations()));
        }
        self.promoted.notify_one();
    }

    /// Resolves when the node accepts a topology that lists it as a master.
    /// The last accepted topology that listed this node master: its
    /// version, and how many revocations the lease had seen by then.
    pub fn last_promotion(&self) -> Option<(u64, u64)> {
        self.promotion.lock().ok().and_then(|p| *p)
    }

    pub async fn promoted(&self) {
        self.promoted.notified().await
    }

    /// The topology version at which a grant last named another node
    /// master (0: never).
    pub fn handed_away_at(&self) -> u64 {
        self.handed_away_at.load(Ordering::Acquire)
    }

    /// The controller's topology at `version` was read (a poll) or
    /// accepted by the node (the controller's push).
    pub fn saw_controller_version(&self, version: u64) {
        self.controller_version.fetch_max(version, Ordering::AcqRel);
    }

    /// The node accepted a topology at `version`; `false` when it had one at
    /// that version or later already (Kvrocks: a no-op that changed nothing,
    /// such as the controller's re-push of the previous topology).
    pub fn node_accepted_topology(&self, version: u64) -> bool {
        self.node_topology.fetch_max(version, Ordering::AcqRel) < version
    }

    /// The highest topology version the node was seen to accept (0: none).
    pub fn node_topology(&self) -> u64 {
        self.node_topology.load(Ordering::Acquire)
    }

    /// A demoting topology waits for the writes in flight.
    pub fn stepping_down(&self) {
        self.stepping_down.store(true, Ordering::Release);
    }

    /// Whether a demoting topology has waited already (and now goes on).
    pub fn take_stepping_down(&self) -> bool {
        self.stepping_down.swap(false, Ordering::AcqRel)
    }

    /// An upgrade's successor took over a step-down's hold
    /// ([`crate::guard::pause::PauseOwner::StepDown`]): its poller ends it
    /// once the new master's leasegate holds the lease, as the
    /// predecessor's would have. Before, nothing in the successor ended it,
    /// and writes waited out its bound (`controller.switch_timeout_ms`).
    pub fn resume_step_down(&self) {
        self.stepped_down.notify_one();
    }

    /// A poller runs: it ends a step-down's pause once the new master's
    /// leasegate holds the lease, which may take up to `hold`.
    pub fn poller_releases(&self, hold: std::time::Duration) {
        self.step_down_hold_ms
            .store(hold.as_millis() as u64, Ordering::Release);
        self.poller_releases.store(true, Ordering::Release);
    }

    /// The node was named master by a topology it accepted, and its lease
    /// is expected (a heartbeat, a poll, the failover's grant): writes wait
    /// for it until `until` rather than being fenced in between.
    pub fn await_lease(&self, until: std::time::Instant) {
        if let Ok(mut awaiting) = self.awaiting_lease.lock() {
            *awaiting = Some(until);
        }
        self.lease_awaits.fetch_add(1, Ordering::AcqRel);
    }

    /// The lease source names this node master but could not hear from its
    /// node (down, or restarting): the renewal is withheld, and writes
    /// arriving as the node returns wait for the next poll's until `until`
    /// rather than being fenced in between. Unlike [`Role::await_lease`]
    /// this says nothing of a promotion.
    pub fn await_renewal(&self, until: std::time::Instant) {
        if let Ok(mut awaiting) = self.awaiting_lease.lock() {
            *awaiting = Some(until);
        }
    }

    /// A promotion of this node went on at its fence; taken for under way
    /// until `until` or [`Role::promotion_named`].
    pub fn promotion_goes_on(&self, until: std::time::Instant) {
        if let Ok(mut p) = self.promoting_until.lock() {
            *p = Some(until);
        }
    }

    /// The Sentinels name this node: its promotion is seen everywhere.
    pub fn promotion_named(&self) {
        if let Ok(mut p) = self.promoting_until.lock() {
            *p = None;
        }
    }

    /// Whether a promotion of this node that went on at its fence may not
    /// be seen everywhere yet ([`Role::promotion_goes_on`]).
    pub fn promotion_under_way(&self, now: std::time::Instant) -> bool {
        self.promoting_until
            .lock()
            .ok()
            .and_then(|p| *p)
            .is_some_and(|until| now < until)
    }

    /// How many times writes were made to wait for a promotion's lease
    /// ([`Role::await_lease`]), or a grant made this node master again: a
    /// change between a question to the node and its answer means the
    /// answer may predate a promotion.
    pub fn lease_awaits(&self) -> u64 {
        self.lease_awaits.load(Ordering::Acquire)
    }

    /// Until when writes wait for the lease (`None`: they do not; a
    /// revocation, or the deadline passed). Read only when the lease does
    /// not allow writes (the fenced path).
    pub fn lease_awaited(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        let awaiting = self.awaiting_lease.lock().ok()?;
        awaiting.filter(|until| now < *until)
    }

    fn stop_awaiting_lease(&self) {
        if let Ok(mut awaiting) = self.awaiting_lease.lock() {
            *awaiting = None;
        }
    }

    /// A confirmation round saw the controller name another master of
    /// this node's shard while the lease holds: with a poller to follow it
    /// and writes handed over on a demotion (`pause.on_demote: forward`),
    /// the poller is woken and the writes refused by the round wait for it
    /// (`true`; [`crate::guard::switch_watch`]). `false`: the caller
    /// revokes the lease, as for any other negative answer.
    pub fn saw_switch(&self) -> bool {
        if !self.poller_releases.load(Ordering::Acquire) || self.on_demote() != OnDemote::Forward {
            return false;
        }
        self.switch.saw();
        true
    }

    /// How long writes wait for the poller to follow a switch that
    /// verification saw: its poll, then the step-down's bound.
    pub fn switch_patience(&self) -> std::time::Duration {
        self.step_down_hold(SWITCH_POLL) + SWITCH_POLL
    }

    /// Whether a switch that verification saw waits for the poller.
    #[inline]
    pub fn switch_pending(&self) -> bool {
        self.switch.flagged() && self.switch.pending(self.switch_patience())
    }

    /// How long a step-down's pause may hold writes: `drain` without a
    /// poller, the switch bound with one (never less than `drain`).
    pub fn step_down_hold(&self, drain: std::time::Duration) -> std::time::Duration {
        drain.max(std::time::Duration::from_millis(
            self.step_down_hold_ms.load(Ordering::Acquire),
        ))
    }

    /// The node accepted a demoting topology whose pause is still on:
    /// `true` when a poller ends it (it is woken), `false` when the caller
    /// ends it now.
    pub fn step_down_accepted(&self) -> bool {
        if self.poller_releases.load(Ordering::Acquire) {
            self.stepped_down.notify_one();
            return true;
        }
        false
    }

    /// Resolves when a demoting topology was accepted with its pause on.
    pub async fn stepped_down(&self) {
        self.stepped_down.notified().await
    }

    /// The highest topology version read from the controller (0: none yet).
    pub fn controller_version(&self) -> u64 {
        self.controller_version.load(Ordering::Acquire)
    }

    /// Records that this node was demoted (and where the new master's
    /// leasegate is); the lease must be revoked separately.
    pub fn demote(&self, demotion: Demotion) {
        info!(new_master = ?demotion.new_master, on_demote = ?self.on_demote(), "this node was demoted");
        self.demotion.store(Some(Arc::new(demotion)));
        self.demoted.store(true, Ordering::Release);
    }

    /// The node is master again.
    pub fn clear_demotion(&self) {
        self.demoted.store(false, Ordering::Release);
        self.demotion.store(None);
    }

    /// One load, for the hot path.
    #[inline]
    pub fn is_demoted(&self) -> bool {
        self.demoted.load(Ordering::Acquire)
    }

    pub fn demotion(&self) -> Option<Arc<Demotion>> {
        self.demotion.load_full()
    }

    /// Announces (or, with `None`, withdraws) where paused sessions will
    /// probably be handed over, so they can open their connections ahead.
    pub fn prepare_handover(&self, target: Option<Arc<str>>) {
        if self.on_demote() == OnDemote::Forward {
            if let Ok(mut t) = self.handover_target.lock() {
                *t = target;
            }
        }
    }

    /// See [`Role::prepare_handover`].
    pub fn handover_target(&self) -> Option<Arc<str>> {
        self.handover_target.lock().ok().and_then(|t| t.clone())
    }

    /// A session's first write in flight was counted (`true`; before the
    /// Gate looks at the pause), or its last one was answered (`false`).
    #[inline]
    pub fn write_in_flight(&self, started: bool) {
        self.writes_in_flight.add(if started { 1 } else { -1 });
    }

    /// Sessions with writes in flight: zero means every write forwarded so
    /// far has been answered.
    pub fn writes_in_flight(&self) -> i64 {
        self.writes_in_flight.sum()
    }

    /// A reply to a blocking-family write (which is not counted in flight:
    /// it may block for long) came back from the node.
    #[cold]
    pub fn blocking_write_completed(&self) {
        self.blocking_writes_completed
            .fetch_add(1, Ordering::SeqCst);
    }

    /// How many replies to blocking-family writes have come back so far.
    pub fn blocking_writes_completed(&self) -> u64 {
        self.blocking_writes_completed.load(Ordering::SeqCst)
    }
}

/// Allowed for the poller's question to the controller after a switch that
/// verification saw.
const SWITCH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `pause.on_demote` as stored in [`Role`].
fn on_demote_to_u8(on_demote: OnDemote) -> u8 {
    match on_demote {
        OnDemote::Forward => 0,
        OnDemote::Moved => 1,
        OnDemote::Readonly => 2,
    }
}
