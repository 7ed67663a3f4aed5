//! The Gate: the single place that decides whether a request may pass.
//!
//! Every request a session frames is classified (read, write, admin,
//! intercept) and then put to [`Gate::admit`], which answers:
//!
//! * `Forward`: send the client's bytes to the node;
//! * `Reply(bytes)`: forward nothing, answer with `bytes` in the request's
//!   place of the pipeline (a denied command, a fenced write, `-NOPERM`);
//! * `Rewrite`: forward other bytes and build the answer from the node's reply
//!   (a heartbeat is answered from `INFO replication`);
//! * `Hold(wait)`: not yet; the session keeps this request (and everything
//!   behind it on that connection) until a pause ends or a mastership
//!   confirmation arrives, then asks again;
//! * `HandOver` / `ReturnHome`: this node was demoted (or is master again):
//!   the session moves to the new master's leasegate (or back to its node).
//!
//! In order: the deny list; a write pause (writes, or everything under
//! `ALL`); demotion (`pause.on_demote`); the master lease (one mode load, one
//! deadline load, one clock read); verification with the controller. Reads
//! pass unless paused with `ALL`. Admin commands always pass (the controller
//! must be able to reconfigure a fenced node), and the controller's
//! `CLIENT PAUSE` is taken by the proxy. Nothing else in the code decides
//! whether a write may reach the node.
//!
//! **State follows the node's acceptance.** A request that would change what
//! the Gate knows (`REPLICAOF host port` and `CLUSTERX SETNODES` naming this
//! node a slave revoke the lease; a controller's `CLUSTERX SETNODEID` teaches
//! the node id) is answered `Observe(effect)`: it is forwarded, and the
//! effect is applied ([`Gate::accepted`]) only when the node answers `+OK`.
//! A refused command changes nothing.
//!
//! **Acknowledgements are checked too** ([`Gate::acknowledgement`]): a write's
//! success reply reaches the client only if the lease held without a break
//! from the write's admission to the reply; otherwise the client gets
//! [`UNKNOWN_OUTCOME`]: the node may have applied the write, but not under
//! the lease.
//!
//! The policy that a reload may change (command table, deny list) sits behind
//! an `ArcSwap`; a session loads it once per batch of requests. The control
//! credentials, the fenced-write error's prefix and the node password sit
//! behind another ([`Gate::reconfigure`]), read only off the hot path
//! (connection start, AUTH/HELLO, a fenced write).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use tracing::warn;

use crate::command::{Class, CommandTable, Special};
use crate::guard::clock::EverySecond;
use crate::guard::control::ControlPolicy;
use crate::guard::lease::{Lease, LeaseMode};
use crate::guard::pause::{OnDemote, Pause};
use crate::guard::role::Role;
use crate::guard::verify::{Verifier, VerifyHold};
use crate::resp::login::Login;
use crate::resp::request::arguments;

mod acknowledgement;
mod admin;
mod metrics;
mod observe;
mod publish;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod verdict;
mod waiting;

pub use metrics::{GateMetrics, Reason, FENCE_REASONS, HEARTBEAT_REFUSALS};
pub use observe::{PROMOTION_FENCE_BOUND, PROMOTION_LEASE_WAIT};
#[cfg(test)]
pub(crate) use testing::{
    for_tests, for_tests_with_login, for_tests_with_password, without_control_identity,
};
pub use verdict::{Admission, Answer, Effect, TimedPause, Verdict, Wait};

/// Everything the Gate consults that a reload may change.
#[derive(Debug)]
pub struct Policy {
    pub commands: CommandTable,
}

/// Read-class commands that read no keyspace data (connection and server
/// commands, pub/sub publishing): `lease.fence_reads` lets them pass. The
/// connection, transaction and subscription commands the table tags
/// ([`Special`]) pass too.
fn reads_no_data(name: &[u8]) -> bool {
    const NO_DATA: [&[u8]; 14] = [
        b"ping",
        b"echo",
        b"time",
        b"command",
        b"lastsave",
        b"readonly",
        b"readwrite",
        b"asking",
        b"publish",
        b"spublish",
        b"pubsub",
        b"lolwut",
        b"role",
        b"wait",
    ];
    NO_DATA.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// What the Gate is built from besides its policy and lease.
pub struct GateParts {
    pub control: ControlPolicy,
    /// First word of the fenced-write error.
    pub reject_prefix: String,
    /// Login of leasegate's own backend connections.
    pub backend_login: Option<Login>,
    /// Present with `verify.mode: every-write`.
    pub verifier: Option<Arc<Verifier>>,
    pub pause: Arc<Pause>,
    /// `lease.fence_reads`.
    pub fence_reads: bool,
}

/// Decides, for every request, whether it may pass.
pub struct Gate {
    pub(super) policy: ArcSwap<Policy>,
    pub(super) lease: Arc<Lease>,
    /// What a reload may change besides the policy.
    pub(super) settings: ArcSwap<Settings>,
    /// Present with `controller.url`; consulted while it is enabled
    /// (`verify.mode: every-write`).
    pub(super) verifier: Option<Arc<Verifier>>,
    pub(super) pause: Arc<Pause>,
    /// The node's role: demotion, writes in flight, and every lease change.
    pub(super) role: Arc<Role>,
    /// `lease.fence_reads`: reads, too, need the lease on a master.
    fence_reads: std::sync::atomic::AtomicBool,
    /// `durability`: writes acknowledged only once replicas have them.
    replica_acks: crate::guard::durability::ReplicaAcks,
    pub metrics: GateMetrics,
    /// Times the controller's `CLIENT PAUSE` (set by the control plane).
    pub(super) pause_timing: std::sync::OnceLock<Arc<dyn crate::guard::pause_timing::PauseTiming>>,
    last_log_only_warning: EverySecond,
    last_unknown_outcome_warning: EverySecond,
    last_unreplicated_warning: EverySecond,
}

/// The Gate's settings a reload may replace ([`Gate::reconfigure`]).
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) control: ControlPolicy,
    /// `-<prefix> master lease expired, writes are fenced on this node (epoch `
    pub(super) fenced_head: String,
    /// Login of leasegate's own backend connections; a controller
    /// connection authenticates to the node with it.
    pub(super) backend_login: Option<Login>,
}

impl Settings {
    fn new(control: ControlPolicy, reject_prefix: &str, backend_login: Option<Login>) -> Self {
        Settings {
            control,
            fenced_head: format!(
                "-{reject_prefix} master lease expired, writes are fenced on this node (epoch "
            ),
            backend_login,
        }
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("lease", &self.lease).finish()
    }
}

pub(super) const OK: &[u8] = b"+OK\r\n";
const PAUSE_BUFFER_FULL: &[u8] = b"-TRYAGAIN write pause buffer full\r\n";
/// A moved session's request addressed to this node ([`Verdict::Close`]).
/// An ordinary client's control command (CLIENT PAUSE, CLIENT UNPAUSE,
/// FAILOVER) on a session moved to another leasegate.
pub const MOVED_CONTROL: &[u8] = b"-NOPERM this connection was moved to another node's leasegate, which would take this command as its controller's; it is not passed on (reconnect to the node's own leasegate to send it to the node)\r\n";
pub const NODE_ELSEWHERE: &[u8] = b"-ERR leasegate: this connection was moved to another node's leasegate (this node is down or was demoted) and cannot ask this node; reconnect\r\n";
const EXECABORT_LEASE: &[u8] =
    b"-EXECABORT Transaction discarded because the master lease expired\r\n";
/// What a client gets instead of a write's success reply that arrived after
/// the lease ended (or was revoked) — whatever the reply was.
pub const UNKNOWN_OUTCOME: &[u8] = b"-UNKNOWN write outcome unknown: the node answered after this node's master lease ended; the write may or may not have been applied\r\n";
/// The start of what a client gets instead of a write's success reply when
/// the write was forwarded unconfirmed and its confirmation failed.
pub const UNCONFIRMED_HEAD: &str = "-UNKNOWN write outcome unknown: ";

impl Gate {
    pub fn new(policy: Policy, role: Arc<Role>, parts: GateParts) -> Gate {
        Gate {
            policy: ArcSwap::from_pointee(policy),
            lease: Arc::clone(role.lease()),
            settings: ArcSwap::from_pointee(Settings::new(
                parts.control,
                &parts.reject_prefix,
                parts.backend_login,
            )),
            verifier: parts.verifier,
            pause: parts.pause,
            role,
            fence_reads: std::sync::atomic::AtomicBool::new(parts.fence_reads),
            replica_acks: Default::default(),
            metrics: GateMetrics::default(),
            pause_timing: std::sync::OnceLock::new(),
            last_log_only_warning: EverySecond::default(),
            last_unknown_outcome_warning: EverySecond::default(),
            last_unreplicated_warning: EverySecond::default(),
        }
    }

    /// From now on the controller's `CLIENT PAUSE` begins when `timing`
    /// says (once; later calls are ignored).
    pub fn time_controller_pauses(&self, timing: Arc<dyn crate::guard::pause_timing::PauseTiming>) {
        let _ = self.pause_timing.set(timing);
    }

    /// The current policy; hold the guard for one batch of requests.
    #[inline]
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// Replaces the policy (config reload); sessions see it from their next batch.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Replaces the control credentials, the fenced-write error's prefix
    /// and the node login (config reload). Connections already
    /// authenticated as (or trusted as) the controller stay so.
    pub fn reconfigure(
        &self,
        control: ControlPolicy,
        reject_prefix: &str,
        backend_login: Option<Login>,
    ) {
        self.settings.store(Arc::new(Settings::new(
            control,
            reject_prefix,
            backend_login,
        )));
    }

    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// Whether connections from this address are the controller's.
    pub fn trusts_peer(&self, ip: std::net::IpAddr) -> bool {
        self.settings.load().control.trusts(ip)
    }

    /// May this request pass?
    #[inline]
    pub fn admit(&self, r: &Admission<'_>) -> Verdict {
        if let Some(reply) = r.command.denied {
            self.metrics.commands_denied.inc();
            return Verdict::Reply(reply.clone());
        }
        // The reply mode is the client's session's, wherever it was moved:
        // kept by the session the client talks to ([`client_reply`]).
        if r.handed_over && r.class != Class::Intercept && r.command.special != Special::ClientReply
        {
            if r.command.special.addresses_node() {
                // `INFO leasegate` asks this leasegate, not its node: its
                // own answer, wherever the session was moved (a fence asks
                // it of a leasegate whose node is down: walkthrough 35).
                if r.command.special == Special::Info {
                    if let verdict @ Verdict::Reply(_) = self.info(r) {
                        return verdict;
                    }
                }
                // Back to its node, where that answers again: a
                // controller's pooled connections moved while the node was
                // down would otherwise each fail a probe of the restarted
                // node (closed), which then got its topology, and began
                // to replicate, only ~10 probes later (walkthrough 18: its
                // master died meanwhile, and 688 acknowledged writes were
                // lost with it).
                if self.role.node.answers() {
                    return Verdict::ReturnHome;
                }
                self.metrics.addressed_elsewhere.inc();
                return Verdict::Close(Bytes::from_static(NODE_ELSEWHERE));
            }
            if !r.control && r.command.special.is_control() {
                // The moved session's connection comes from this
                // leasegate's address, which the other one may trust as
                // its controller's (`control.allow_from`): an ordinary
                // client's CLIENT PAUSE or FAILOVER would be taken there
                // as the controller's (an attack pass paused the new
                // master's writes, and failed it back, so).
                self.metrics.control_refused.inc();
                return Verdict::Reply(Bytes::from_static(MOVED_CONTROL));
            }
            if self.role.is_demoted() {
                return Verdict::Forward;
            }
            return Verdict::ReturnHome;
        }
        match r.class {
            Class::Read if self.pause.holds(false) => self.hold(r),
            Class::Read if r.command.special == Special::Info => self.info(r),
            Class::Read if r.command.special == Special::Publish => self.publish(r),
            Class::Read if self.fence_reads.load(Ordering::Relaxed) => self.admit_read(r),
            Class::Read => Verdict::Forward,
            Class::Write if self.pause.holds(true) => self.hold(r),
            Class::Write if self.role.is_demoted() => self.demoted(r),
            Class::Write => self.admit_write(r),
            Class::Admin => self.admin(r),
            Class::Intercept => self.intercept(r),
        }
    }

    /// A paused request takes a place in the pause buffer, if there is one.
    #[cold]
    fn hold(&self, r: &Admission<'_>) -> Verdict {
        match self.pause.hold(r.buffered.max(r.bytes.len())) {
            Some(hold) => Verdict::Hold(Wait::Pause(hold)),
            None => Verdict::Reply(Bytes::from_static(PAUSE_BUFFER_FULL)),
        }
    }

    pub fn pause(&self) -> &Arc<Pause> {
        &self.pause
    }

    /// The node's role (demotion, writes in flight, lease changes).
    pub fn role(&self) -> &Arc<Role> {
        &self.role
    }

    /// A write on a demoted node: `pause.on_demote` decides.
    #[cold]
    fn demoted(&self, r: &Admission<'_>) -> Verdict {
        let demotion = self.role.demotion();
        let new_master = demotion.as_ref().and_then(|d| d.new_master.clone());
        match (self.role.on_demote(), new_master) {
            (OnDemote::Forward, Some(addr)) => Verdict::HandOver(addr),
            (OnDemote::Moved, Some(addr)) => {
                self.fenced("demoted");
                let args = arguments(r.bytes, r.head.inline);
                let slot = args
                    .get(1)
                    .map_or(0, |k| crate::kvrocks::topology::key_slot(k));
                Verdict::Reply(crate::resp::encode::error(&format!("MOVED {slot} {addr}")))
            }
            (_, addr) => {
                self.fenced("demoted");
                Verdict::Reply(Bytes::from(format!(
                    "-READONLY this node was demoted; the new master is {}\r\n",
                    addr.as_deref().unwrap_or("unknown")
                )))
            }
        }
    }

    /// A write passes when the lease holds (one mode load, the deadline
    /// and pulse loads, one clock read) and, with verification, once the
    /// controller has confirmed mastership after the write arrived.
    #[inline]
    fn admit_write(&self, r: &Admission<'_>) -> Verdict {
        let mode = self.lease.mode();
        if mode != LeaseMode::Disabled && !self.lease.usable() {
            if mode == LeaseMode::BlockWrite {
                if let Some(wait) = self.lease_wait() {
                    return Verdict::Hold(wait);
                }
                self.fenced("lease");
                return Verdict::Reply(self.fenced_reply(r.command.special));
            }
            self.metrics.writes_unfenced_log_only.inc();
            self.warn_log_only(r);
        }
        match self.verifier.as_ref().filter(|v| v.enabled()) {
            Some(v) if r.covered && !r.verified => {
                v.metrics.writes.inc();
                Verdict::Forward
            }
            Some(v) if !r.verified => match v.hold() {
                // While a switch that verification saw waits for the
                // poller, nothing goes to the node unconfirmed: it could
                // only end in the unknown-outcome error.
                VerifyHold::Acknowledgement if !self.role.switch_pending() => {
                    Verdict::ForwardUnconfirmed(v.ticket())
                }
                _ => Verdict::Hold(Wait::Verification(v.ticket())),
            },
            _ => Verdict::Forward,
        }
    }

    /// `durability`: the replica acknowledgements writes wait for (set at
    /// start and by a reload).
    #[inline]
    pub fn replica_acks(&self) -> &crate::guard::durability::ReplicaAcks {
        &self.replica_acks
    }

    /// The reply a batch of `writes` success replies are replaced with when
    /// the node's `WAIT` answer says too few replicas have them (`None`:
    /// they pass). Counted and logged (rate-limited) when refused.
    pub fn replicated(
        &self,
        wait_reply: &[u8],
        min_replicas: u32,
        timeout_ms: u64,
        writes: usize,
    ) -> Option<Bytes> {
        let refusal = crate::guard::durability::judge(wait_reply, min_replicas, timeout_ms)?;
        self.metrics.writes_unreplicated.inc_by(writes as u64);
        if self.last_unreplicated_warning.due(self.lease.now()) {
            warn!(
                reply = %String::from_utf8_lossy(&refusal).trim_end(),
                "writes not confirmed by replicas were answered as of unknown outcome (durability.min_replicas)"
            );
        }
        Some(refusal)
    }

    /// `lease.fence_reads`: switched on or off (config reload).
    pub fn set_fence_reads(&self, on: bool) {
        self.fence_reads.store(on, Ordering::Relaxed);
    }

    /// Why a request the lease does not allow now waits for it rather than
    /// being fenced: named master by a topology the node accepted (the
    /// lease is on its way), or the lease is valid but its poll has not
    /// answered within the pulse (this process stalled: the next answer
    /// says whether the lease still stands, [`Lease::stalled`]).
    #[cold]
    fn lease_wait(&self) -> Option<Wait> {
        let now = std::time::Instant::now();
        if let Some(until) = self.role.lease_awaited(now) {
            return Some(Wait::Lease { until });
        }
        let left = self.lease.stalled()?;
        self.metrics.stalled_waits.inc();
        Some(Wait::Lease { until: now + left })
    }

    /// A read with `lease.fence_reads`: a master (as far as leasegate
    /// knows) serves it only under a valid lease, so that no read can come
    /// from a node another may have replaced; a replica's reads, and a
    /// demoted node's, pass (they are replica reads), and so do the
    /// commands that read no data ([`reads_no_data`]).
    #[inline]
    fn admit_read(&self, r: &Admission<'_>) -> Verdict {
        if self.lease.mode() != LeaseMode::BlockWrite
            || self.lease.usable()
            || self.role.node.is_replica()
            || self.role.is_demoted()
        {
            return Verdict::Forward;
        }
        self.fence_read(r)
    }

    #[cold]
    fn fence_read(&self, r: &Admission<'_>) -> Verdict {
        if r.command.special != Special::None || reads_no_data(r.head.name(r.bytes).as_bytes()) {
            return Verdict::Forward;
        }
        if let Some(wait) = self.lease_wait() {
            return Verdict::Hold(wait);
        }
        self.fenced("read");
        let head = &self.settings.load().fenced_head;
        let prefix = head.split(' ').next().unwrap_or("-READONLY");
        Verdict::Reply(Bytes::from(format!(
            "{prefix} master lease expired, reads are fenced on this node (lease.fence_reads; epoch {})\r\n",
            self.lease.epoch()
        )))
    }

    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.verifier.as_ref()
    }

    /// Counts a refused write under `reason` ([`FENCE_REASONS`]).
    #[cold]
    fn fenced(&self, reason: &'static str) {
        self.metrics
            .writes_fenced
            .get_or_create(&Reason { reason })
            .inc();
    }

    #[cold]
    fn fenced_reply(&self, special: Special) -> Bytes {
        if special == Special::Exec {
            return Bytes::from_static(EXECABORT_LEASE);
        }
        let settings = self.settings.load();
        Bytes::from(format!(
            "{}{})\r\n",
            settings.fenced_head,
            self.lease.epoch()
        ))
    }

    #[cold]
    fn warn_log_only(&self, r: &Admission<'_>) {
        if self.last_log_only_warning.due(self.lease.now()) {
            warn!(
                command = %r.head.name(r.bytes).display(),
                would_have_fenced = self.metrics.writes_unfenced_log_only.get(),
                "lease.mode is log-only: passing a write that block-write would refuse (master lease expired)"
            );
        }
    }
}
