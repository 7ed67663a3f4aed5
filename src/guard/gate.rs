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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::command::{Class, Classified, CommandTable, ReplyMode, Special, CLIENT_REPLY_ON};
use crate::guard::control::ControlPolicy;
use crate::guard::lease::{Lease, LeaseMode, Term};
use crate::guard::pause::{Hold, OnDemote, Pause};
use crate::guard::role::{Demotion, Role, Source};
use crate::guard::verify::{Ticket, Verifier, VerifyHold};
use crate::resp::request::{arguments, RequestHead};

/// Everything the Gate consults that a reload may change.
#[derive(Debug)]
pub struct Policy {
    pub commands: CommandTable,
}

/// One request as the Gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    /// The class after session context (EXEC is a write if a queued command was).
    pub class: Class,
    pub command: Classified<'a>,
    pub head: &'a RequestHead,
    /// The request's bytes exactly as the client sent them.
    pub bytes: &'a [u8],
    /// Whether the connection is the controller's.
    pub control: bool,
    /// The request already waited for, and got, a mastership confirmation.
    pub verified: bool,
    /// The request arrived before a confirmation this session already got
    /// was requested (the rest of a pipeline), so that confirmation covers it.
    pub covered: bool,
    /// The session was moved to the new master's leasegate, which judges
    /// its requests from now on.
    pub handed_over: bool,
    /// Bytes the client has sent from this request on that the proxy holds
    /// (a held request keeps them all, so they count against the pause buffer).
    pub buffered: usize,
}

/// The Gate's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the request to the backend.
    Forward,
    /// Send the write to the backend now; its success reply may reach the
    /// client only once confirmation round `n` (or a later one) confirmed
    /// mastership (`verify.hold: acknowledgement`, [`Gate::unconfirmed_reply`]).
    ForwardUnconfirmed(Ticket),
    /// Do not forward; answer with this complete RESP reply in the request's place.
    Reply(Bytes),
    /// Forward `request` instead; answer as `answer` says.
    Rewrite { request: Bytes, answer: Answer },
    /// Not yet: the session holds this request (and everything after it on
    /// the connection) until the wait is over, then asks again.
    Hold(Wait),
    /// This node was demoted and `pause.on_demote: forward` applies: move the
    /// session to the new master's leasegate at this address, then ask again.
    HandOver(Arc<str>),
    /// A session moved to another leasegate earlier, and this node is master
    /// again: move it back to this node (so hand-overs never chain).
    ReturnHome,
    /// Forward the request; if the node accepts it (`+OK`), apply the effect
    /// with [`Gate::accepted`].
    Observe(Effect),
}

/// What a forwarded request changes once the node has accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `REPLICAOF host port`: the node is a replica now; revoke the lease.
    /// From the controller while its pause holds writes, the sessions'
    /// writes then go to `new_master` (`pause.on_demote`).
    Replica {
        reason: String,
        new_master: Option<String>,
    },
    /// `CLUSTERX SETNODES <nodes> ...`: revoke the lease if the topology lists
    /// this node as a slave (decided on the reply, with the node id known then).
    Topology {
        nodes: String,
        /// The topology's version, when it parses.
        version: Option<u64>,
        /// Sent by the controller: only its topologies promote (a
        /// demotion is heeded from anyone, the node having accepted it).
        from_control: bool,
    },
    /// `CLUSTERX SETNODEID <id>` on a control connection: the node's id.
    NodeId(String),
}

/// What a held request waits for.
#[derive(Debug)]
pub enum Wait {
    /// The mastership confirmation round with this ticket.
    Verification(Ticket),
    /// The end of the write pause (holding a place in its buffer).
    Pause(Hold),
    /// Until the writes already forwarded are answered (or `until`). The
    /// controller's `CLIENT PAUSE` is then answered itself (`answer`); a
    /// topology that demotes this node is asked about again (and goes on).
    Drain {
        until: std::time::Instant,
        answer: bool,
    },
    /// Until the lease allows writes, the wait for it is withdrawn (a
    /// revocation), or `until`: then the write is asked about again.
    Lease { until: std::time::Instant },
    /// A promotion (`REPLICAOF NO ONE`), until the old master is fenced
    /// ([`crate::guard::promotion`]) or `until`: then it is asked about again.
    Fence { until: std::time::Instant },
    /// The controller's `CLIENT PAUSE`, timed ([`crate::guard::pause_timing`]):
    /// the pause begins at `at`, then the writes already forwarded are
    /// waited for as with [`Wait::Drain`], and it is answered.
    TimedPause(Box<TimedPause>),
}

/// A `CLIENT PAUSE` that begins later ([`Wait::TimedPause`]).
#[derive(Debug, Clone)]
pub struct TimedPause {
    pub at: std::time::Instant,
    pub timeout: std::time::Duration,
    pub mode: crate::guard::pause::PauseMode,
    /// Set once the pause began: a wait asked again (the session's loop
    /// turns for other events meanwhile) does not begin it twice.
    pub begun: Arc<std::sync::atomic::AtomicBool>,
}

impl PartialEq for Wait {
    fn eq(&self, other: &Wait) -> bool {
        matches!((self, other), (Wait::Verification(a), Wait::Verification(b)) if a == b)
    }
}

impl Eq for Wait {}

/// How long writes wait for the lease of a node that accepted a topology
/// naming it master (or `controller.switch_timeout_ms` with a poller, if
/// longer), before they are fenced.
pub const PROMOTION_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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

/// How long a promotion passing through waits for the old master to be
/// fenced before it goes on anyway.
pub const PROMOTION_FENCE_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// How the answer to a rewritten request is made from the node's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The node's reply to a rewritten HELLO (its type tells the protocol).
    Hello,
    /// The node's reply is dropped; the client gets this instead.
    Replace(Bytes),
    /// A heartbeat: the node's `INFO replication` reply becomes the lease
    /// report (role, sequence, lease fields).
    Heartbeat { renewed: bool },
    /// `INFO`: the node's reply carries leasegate's
    /// `master_failover_state`, and gains the `# Leasegate` section when
    /// `section`.
    Info { section: bool },
    /// `CLIENT REPLY <mode>`, sent as `CLIENT REPLY ON`: on the node's
    /// `+OK` the session's replies follow `mode`; an error goes back as it
    /// came (a node without the command).
    ReplyMode(ReplyMode),
}

/// A counter's `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// Why a write was refused: no valid lease, or this node was demoted.
pub const FENCE_REASONS: [&str; 3] = ["lease", "demoted", "read"];
/// Why a heartbeat was refused.
pub const HEARTBEAT_REFUSALS: [&str; 5] = ["syntax", "epoch", "ttl", "node_id", "upgrade"];

/// Counters of what the Gate decided, registered under `leasegate_`.
#[derive(Debug, Default, Clone)]
pub struct GateMetrics {
    /// `leasegate_writes_fenced_total{reason}` ([`FENCE_REASONS`]).
    pub writes_fenced: Family<Reason, Counter>,
    pub writes_unfenced_log_only: Counter,
    pub commands_denied: Counter,
    pub control_refused: Counter,
    pub heartbeats: Counter,
    /// `leasegate_heartbeats_refused_total{reason}` ([`HEARTBEAT_REFUSALS`]).
    pub heartbeats_refused: Family<Reason, Counter>,
    pub unknown_outcomes: Counter,
    pub late_acknowledgements_log_only: Counter,
    /// `leasegate_writes_unreplicated_total` (`durability.min_replicas`).
    pub writes_unreplicated: Counter,
}

impl GateMetrics {
    pub fn register(&self, registry: &mut Registry) {
        // Every reason exists from the start, at 0.
        for reason in FENCE_REASONS {
            let _ = self.writes_fenced.get_or_create(&Reason { reason });
        }
        for reason in HEARTBEAT_REFUSALS {
            let _ = self.heartbeats_refused.get_or_create(&Reason { reason });
        }
        registry.register(
            "writes_fenced",
            "Writes refused, by reason: lease (no valid master lease), demoted (this node was demoted and the write was not handed over)",
            self.writes_fenced.clone(),
        );
        registry.register(
            "writes_unfenced_log_only",
            "Writes passed in log-only mode that block-write would have refused",
            self.writes_unfenced_log_only.clone(),
        );
        registry.register(
            "commands_denied",
            "Requests refused by commands.deny",
            self.commands_denied.clone(),
        );
        registry.register(
            "control_refused",
            "Control commands refused with NOPERM",
            self.control_refused.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats accepted over RESP",
            self.heartbeats.clone(),
        );
        registry.register(
            "heartbeats_refused",
            "Heartbeats refused, by reason: syntax, epoch (stale election version), ttl, node_id (this node's id unknown)",
            self.heartbeats_refused.clone(),
        );
        registry.register(
            "unknown_outcomes",
            "Write acknowledgements replaced by the unknown-outcome error: the node answered after the master lease ended, or (verify.hold: acknowledgement) the controller did not confirm mastership",
            self.unknown_outcomes.clone(),
        );
        registry.register(
            "writes_unreplicated",
            "Write acknowledgements replaced by an unknown-outcome error because fewer replicas than durability.min_replicas confirmed them in time",
            self.writes_unreplicated.clone(),
        );
        registry.register(
            "late_acknowledgements_log_only",
            "Write acknowledgements passed in log-only mode that block-write would have replaced (lease ended before the reply)",
            self.late_acknowledgements_log_only.clone(),
        );
    }
}

/// What the Gate is built from besides its policy and lease.
pub struct GateParts {
    pub control: ControlPolicy,
    /// First word of the fenced-write error.
    pub reject_prefix: String,
    /// Password of leasegate's own backend connections.
    pub backend_password: Option<String>,
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
    /// Password of leasegate's own backend connections; a controller
    /// connection authenticates to the node with it.
    pub(super) backend_password: Option<String>,
}

impl Settings {
    fn new(control: ControlPolicy, reject_prefix: &str, backend_password: Option<String>) -> Self {
        Settings {
            control,
            fenced_head: format!(
                "-{reject_prefix} master lease expired, writes are fenced on this node (epoch "
            ),
            backend_password,
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
const EXECABORT_LEASE: &[u8] =
    b"-EXECABORT Transaction discarded because the master lease expired\r\n";
/// What a client gets instead of a write's success reply that arrived after
/// the lease ended (or was revoked) — whatever the reply was.
pub const UNKNOWN_OUTCOME: &[u8] = b"-UNKNOWN write outcome unknown: the node answered after this node's master lease ended; the write may or may not have been applied\r\n";
/// The start of what a client gets instead of a write's success reply when
/// the write was forwarded unconfirmed and its confirmation failed.
pub const UNCONFIRMED_HEAD: &str = "-UNKNOWN write outcome unknown: ";
/// Rate-limits a warning to one a second, without a lock: the first caller
/// past the second wins the exchange and logs.
#[derive(Debug, Default)]
struct EverySecond(AtomicU64);

impl EverySecond {
    /// Whether to log now (`now` in nanoseconds on the lease clock).
    fn due(&self, now: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1_000_000_000
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Gate {
    pub fn new(policy: Policy, role: Arc<Role>, parts: GateParts) -> Gate {
        Gate {
            policy: ArcSwap::from_pointee(policy),
            lease: Arc::clone(role.lease()),
            settings: ArcSwap::from_pointee(Settings::new(
                parts.control,
                &parts.reject_prefix,
                parts.backend_password,
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
    /// and the node password (config reload). Connections already
    /// authenticated as (or trusted as) the controller stay so.
    pub fn reconfigure(
        &self,
        control: ControlPolicy,
        reject_prefix: &str,
        backend_password: Option<String>,
    ) {
        self.settings.store(Arc::new(Settings::new(
            control,
            reject_prefix,
            backend_password,
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
            if self.role.is_demoted() {
                return Verdict::Forward;
            }
            return Verdict::ReturnHome;
        }
        match r.class {
            Class::Read if self.pause.holds(false) => self.hold(r),
            Class::Read if r.command.special == Special::Info => self.info(r),
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

    /// Admin commands pass (they are never fenced or paused) after the
    /// controller's own are intercepted and role changes observed.
    #[inline]
    fn admin(&self, r: &Admission<'_>) -> Verdict {
        match r.command.special {
            Special::ClientPause | Special::ClientUnpause if r.control => self.client_pause(r),
            Special::ReplicaOf | Special::SetNodeId | Special::SetNodes => self.observe(r),
            Special::ClientReply => client_reply(r),
            Special::Failover => self.failover_command(r),
            _ => Verdict::Forward,
        }
    }

    /// `FAILOVER ...`: only the controller or an admin (a control
    /// connection) may ask; leasegate carries it out
    /// ([`crate::guard::failover_command`]).
    #[cold]
    fn failover_command(&self, r: &Admission<'_>) -> Verdict {
        use crate::guard::failover_command::parse;
        if !r.control {
            self.metrics.control_refused.inc();
            return Verdict::Reply(Bytes::from_static(
                b"-NOPERM leasegate answers FAILOVER only on a control connection (AUTH with control.password, or control.allow_from)\r\n",
            ));
        }
        let args = arguments(r.bytes, r.head.inline);
        let rest: Vec<&[u8]> = args.iter().skip(1).map(|a| a.as_ref()).collect();
        let reply = |e: &'static str| Verdict::Reply(Bytes::from_static(e.as_bytes()));
        let command = &self.role.failover_command;
        match parse(&rest) {
            Err(e) => reply(e),
            Ok(None) => match command.abort() {
                Ok(()) => Verdict::Reply(Bytes::from_static(OK)),
                Err(e) => reply(e),
            },
            Ok(Some(_)) if self.role.node.is_replica() => {
                reply("-ERR FAILOVER is not valid when server is a replica.\r\n")
            }
            Ok(Some(ask)) => match command.start(ask) {
                Ok(()) => Verdict::Reply(Bytes::from_static(OK)),
                Err(e) => reply(e),
            },
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

    /// A write passes when the lease holds (one mode load, one deadline
    /// load, one clock read) and, with verification, once the controller has
    /// confirmed mastership after the write arrived.
    #[inline]
    fn admit_write(&self, r: &Admission<'_>) -> Verdict {
        let mode = self.lease.mode();
        if mode != LeaseMode::Disabled && !self.lease.write_allowed() {
            if mode == LeaseMode::BlockWrite {
                // Named master by a topology the node accepted: the lease
                // is on its way, and the write waits for it.
                if let Some(until) = self.role.lease_awaited(std::time::Instant::now()) {
                    return Verdict::Hold(Wait::Lease { until });
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
                VerifyHold::Request => Verdict::Hold(Wait::Verification(v.ticket())),
                VerifyHold::Acknowledgement => Verdict::ForwardUnconfirmed(v.ticket()),
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

    /// A read with `lease.fence_reads`: a master (as far as leasegate
    /// knows) serves it only under a valid lease, so that no read can come
    /// from a node another may have replaced; a replica's reads, and a
    /// demoted node's, pass (they are replica reads), and so do the
    /// commands that read no data ([`reads_no_data`]).
    #[inline]
    fn admit_read(&self, r: &Admission<'_>) -> Verdict {
        if self.lease.mode() != LeaseMode::BlockWrite
            || self.lease.write_allowed()
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
        if let Some(until) = self.role.lease_awaited(std::time::Instant::now()) {
            return Verdict::Hold(Wait::Lease { until });
        }
        self.fenced("read");
        let head = &self.settings.load().fenced_head;
        let prefix = head.split(' ').next().unwrap_or("-READONLY");
        Verdict::Reply(Bytes::from(format!(
            "{prefix} master lease expired, reads are fenced on this node (lease.fence_reads; epoch {})\r\n",
            self.lease.epoch()
        )))
    }

    /// The confirmation of a write forwarded unconfirmed: `None` while
    /// pending, then its round's outcome ([`Verifier::confirmation`]).
    /// Only a verifier hands out rounds, so without one there is nothing to
    /// wait for.
    #[inline]
    pub fn confirmation(&self, ticket: Ticket) -> Option<Result<(), Bytes>> {
        match &self.verifier {
            Some(v) => v.confirmation(ticket),
            None => Some(Ok(())),
        }
    }

    /// The reply to a write forwarded unconfirmed, once its confirmation is
    /// settled: `None` passes `reply`; `Some(instead)` replaces it. After a
    /// refusal, only a reply that says nothing took effect (an error,
    /// `+QUEUED`, an aborted EXEC) passes; a success becomes the
    /// unknown-outcome error with the refusal's cause, because the node may
    /// have applied a write the controller did not confirm.
    #[cold]
    pub fn unconfirmed_reply(&self, refusal: &[u8], reply: &[u8]) -> Option<Bytes> {
        if !is_acknowledgement(reply) {
            return None;
        }
        self.metrics.unknown_outcomes.inc();
        let cause = refusal.strip_prefix(b"-TRYAGAIN ").unwrap_or(refusal);
        let cause = cause.strip_suffix(b"\r\n").unwrap_or(cause);
        Some(Bytes::from(format!(
            "{UNCONFIRMED_HEAD}{}; the write may or may not have been applied\r\n",
            String::from_utf8_lossy(cause)
        )))
    }

    /// Waits until a held request may be asked about again. The answer is
    /// the reply to send instead, when the wait ended in a refusal (or, for
    /// a drain, in the held request's own answer).
    pub async fn wait(&self, wait: &Wait) -> Result<(), Bytes> {
        match (wait, &self.verifier) {
            (Wait::Verification(ticket), Some(v)) => v.wait(*ticket).await,
            (Wait::Verification(_), None) => Ok(()),
            (Wait::Pause(hold), _) => {
                self.pause.wait(hold).await;
                Ok(())
            }
            // Ends with the pause's own answer (never asked again, which
            // would restart the pause).
            (Wait::Drain { until, answer }, _) => {
                let drained = self.drained(*until).await;
                if !answer {
                    return Ok(());
                }
                Err(self.pause_answer(drained))
            }
            (Wait::TimedPause(timed), _) => {
                tokio::time::sleep_until(timed.at.into()).await;
                if !timed.begun.swap(true, Ordering::AcqRel) {
                    self.pause.pause(timed.timeout, timed.mode);
                    if let Some(timing) = self.pause_timing.get() {
                        timing.began(std::time::Instant::now());
                    }
                }
                let bound = timed.timeout.min(crate::guard::control::DRAIN_BOUND);
                let drained = self.drained(timed.at + bound).await;
                Err(self.pause_answer(drained))
            }
            (Wait::Fence { until }, _) => {
                while !self.role.promotion_fence.settled() && std::time::Instant::now() < *until {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Ok(())
            }
            (Wait::Lease { until }, _) => {
                while !self.lease.write_allowed() {
                    let now = std::time::Instant::now();
                    if now >= *until || self.role.lease_awaited(now).is_none() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Ok(())
            }
        }
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

    /// Requests that change the node's role or id: forwarded, with the
    /// effect applied once the node accepts them.
    #[cold]
    fn observe(&self, r: &Admission<'_>) -> Verdict {
        let args = arguments(r.bytes, r.head.inline);
        let effect = match r.command.special {
            // Only the controller names the node: an ordinary client's
            // SETNODEID (even one the node accepts) never moves the lease.
            Special::SetNodeId if r.control => args
                .get(2)
                .map(|id| Effect::NodeId(String::from_utf8_lossy(id).into_owned())),
            Special::SetNodeId => None,
            Special::SetNodes => {
                let effect = args.get(2).map(|nodes| Effect::Topology {
                    nodes: String::from_utf8_lossy(nodes).into_owned(),
                    version: args
                        .get(3)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
                    from_control: r.control,
                });
                if let Some(held) = effect.as_ref().and_then(|e| self.step_down_first(e)) {
                    return held;
                }
                effect
            }
            _ => {
                // REPLICAOF host port (but not REPLICAOF NO ONE) makes this node a replica.
                let no_one = args.len() == 3
                    && args[1].eq_ignore_ascii_case(b"no")
                    && args[2].eq_ignore_ascii_case(b"one");
                // A promotion waits for the old master to be fenced, where
                // someone fences it (a Sentinel lease source).
                if no_one && self.role.promotion_fence.enabled() {
                    if let Some(until) = self.role.promotion_fence.ask(PROMOTION_FENCE_BOUND) {
                        return Verdict::Hold(Wait::Fence { until });
                    }
                }
                (args.len() == 3 && !no_one).then(|| Effect::Replica {
                    // The controller's, while its pause holds writes (a
                    // failover's switch): the held writes go to the new
                    // master. Otherwise writes are only fenced.
                    new_master: (r.control && self.pause.is_paused()).then(|| {
                        format!(
                            "{}:{}",
                            String::from_utf8_lossy(&args[1]),
                            String::from_utf8_lossy(&args[2])
                        )
                    }),
                    reason: format!(
                        "{} {} {} accepted by the node",
                        String::from_utf8_lossy(&args[0]).to_ascii_uppercase(),
                        String::from_utf8_lossy(&args[1]),
                        String::from_utf8_lossy(&args[2])
                    ),
                })
            }
        };
        effect.map_or(Verdict::Forward, Verdict::Observe)
    }

    /// The controller's topology that makes this node (master under a
    /// valid lease) a replica: writes are paused first, and the topology
    /// waits until the writes already forwarded are answered (under the
    /// lease), so that none reaches the node after it (the node would answer
    /// it `MOVED`, or take it as a replica). On the node's `+OK` the lease
    /// is revoked, the node marked demoted and the pause ended
    /// ([`Gate::accepted`]): the held writes go to the new master.
    /// `Some(hold)` on the first ask; the second goes on.
    #[cold]
    fn step_down_first(&self, effect: &Effect) -> Option<Verdict> {
        let Effect::Topology {
            nodes,
            version,
            from_control: true,
        } = effect
        else {
            return None;
        };
        if self.role.take_stepping_down() {
            return None;
        }
        let me = self.lease.node_id()?;
        let fresh = version.is_none_or(|v| v > self.role.node_topology());
        if !fresh
            || !self.lease.write_allowed()
            || !crate::kvrocks::topology::listed_as_replica(nodes, &me)
        {
            return None;
        }
        // A pause already on (the controller's own, a failover's) holds
        // the writes and is left to whoever set it.
        if !self.pause.is_paused() {
            self.pause.pause(
                self.role.step_down_hold(crate::guard::control::DRAIN_BOUND),
                crate::guard::pause::PauseMode::Write,
            );
            self.role.paused_for_step_down();
        }
        if self.role.writes_in_flight() == 0 {
            return None;
        }
        self.role.stepping_down();
        Some(Verdict::Hold(Wait::Drain {
            until: std::time::Instant::now() + crate::guard::control::DRAIN_BOUND,
            answer: false,
        }))
    }

    /// The node accepted (`+OK`) a request the Gate observes: apply its effect.
    #[cold]
    pub fn accepted(&self, effect: &Effect) {
        match effect {
            Effect::Replica { reason, new_master } => {
                self.role.revoke(reason, Source::Node);
                if let Some(m) = new_master {
                    self.role.demote(Demotion {
                        new_master: Some(Arc::from(m.as_str())),
                    });
                }
            }
            Effect::Topology {
                nodes,
                version,
                from_control,
            } => {
                let Some(me) = self.lease.node_id() else {
                    return;
                };
                // The controller's at the node's current version (or below,
                // forced) was a no-op there, such as its re-push of the
                // previous topology after a failover: the node, and so
                // leasegate, stays where it is. (An ordinary client's moves
                // nothing toward mastership anyway, below.)
                if *from_control && version.is_some_and(|v| !self.role.node_accepted_topology(v)) {
                    return;
                }
                if crate::kvrocks::topology::listed_as_master(nodes, &me) {
                    if !from_control {
                        // An ordinary client cannot move what leasegate
                        // believes about mastership toward this node.
                        return;
                    }
                    // No longer demoted: writes stop being handed to (or
                    // MOVED toward) another node, which may itself point
                    // back here. The lease still comes only from the
                    // controller (until then writes wait for it, bounded,
                    // then are fenced); a poller asks it now rather than at
                    // its next tick.
                    self.role.clear_demotion();
                    if !self.lease.write_allowed() {
                        // Writes wait for the lease rather than fail.
                        let hold = self.role.step_down_hold(PROMOTION_LEASE_WAIT);
                        self.role.await_lease(std::time::Instant::now() + hold);
                    }
                    self.role.topology_promoted(*version);
                    return;
                }
                if crate::kvrocks::topology::listed_as_replica(nodes, &me) {
                    self.role
                        .revoke("CLUSTERX SETNODES lists this node as a slave", Source::Node);
                    // Held writes go where the topology says the master is
                    // now (its leasegate, as the controller registers nodes).
                    let new_master = crate::kvrocks::topology::master_of(nodes, &me);
                    self.role.demote(Demotion {
                        new_master: new_master.map(Arc::from),
                    });
                    // The held writes go to the new master once its
                    // leasegate holds the lease (the poller looks), else now.
                    if !self.role.step_down_accepted() && self.role.take_step_down_pause() {
                        self.pause.unpause();
                    }
                }
            }
            Effect::NodeId(id) => self.lease.learn_node_id(id),
        }
    }

    /// The term a write is admitted in, when its acknowledgement will be
    /// checked (`None` with `lease.mode: disabled`).
    #[inline]
    pub fn write_term(&self) -> Option<Term> {
        (self.lease.mode() != LeaseMode::Disabled).then(|| self.lease.term())
    }

    /// Checks the reply to a write admitted in `term`: `None` passes it,
    /// `Some(reply)` replaces it. Errors and `+QUEUED` pass (nothing was
    /// acknowledged); a success after the lease ended or was revoked is
    /// replaced by [`UNKNOWN_OUTCOME`] in block-write, counted in log-only.
    #[inline]
    pub fn acknowledgement(&self, term: Term, reply: &[u8]) -> Option<&'static [u8]> {
        if self.lease.acknowledgeable(term) || !is_acknowledgement(reply) {
            return None;
        }
        self.late_acknowledgement()
    }

    #[cold]
    fn late_acknowledgement(&self) -> Option<&'static [u8]> {
        if self.lease.mode() != LeaseMode::BlockWrite {
            self.metrics.late_acknowledgements_log_only.inc();
            return None;
        }
        self.metrics.unknown_outcomes.inc();
        if self.last_unknown_outcome_warning.due(self.lease.now()) {
            warn!(
                unknown_outcomes = self.metrics.unknown_outcomes.get(),
                "the node acknowledged a write after the master lease ended; the client gets an unknown-outcome error instead"
            );
        }
        Some(UNKNOWN_OUTCOME)
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`: the node is sent `ON` whatever the client
/// asked, so that it answers every request (replies stay matched, writes
/// are counted back and their acknowledgements checked); the session drops
/// what the asked mode says the node would not have sent, once the node's
/// `+OK` shows it knows the command. Any other shape goes as it came, for
/// the node's own error.
#[cold]
fn client_reply(r: &Admission<'_>) -> Verdict {
    match ReplyMode::requested(&arguments(r.bytes, r.head.inline)) {
        Some(mode) => Verdict::Rewrite {
            request: Bytes::from_static(CLIENT_REPLY_ON),
            answer: Answer::ReplyMode(mode),
        },
        None => Verdict::Forward,
    }
}

/// Whether a reply may say that a write took effect: anything but an error,
/// `+QUEUED` (not applied yet) or RESP2's null array (an EXEC aborted by
/// WATCH, a blocking pop that timed out: nothing applied). Other nulls count
/// as acknowledgements: `SET k v GET` answers a null bulk after applying.
#[inline]
fn is_acknowledgement(reply: &[u8]) -> bool {
    !matches!(reply, [b'-' | b'!', ..] | b"+QUEUED\r\n" | b"*-1\r\n")
}

/// A Gate on a hand-driven clock for unit tests: lease expired, control
/// password `ctl`, node id `me`, pause bounds 10 requests / 1 MiB.
#[cfg(test)]
pub(crate) fn for_tests(
    mode: LeaseMode,
    deny: &[&str],
    me: &str,
) -> (Arc<crate::guard::lease::ManualClock>, Gate) {
    for_tests_with_password(mode, deny, me, None)
}

/// [`for_tests`] with `backend.password` set.
#[cfg(test)]
pub(crate) fn for_tests_with_password(
    mode: LeaseMode,
    deny: &[&str],
    me: &str,
    backend_password: Option<&str>,
) -> (Arc<crate::guard::lease::ManualClock>, Gate) {
    use crate::guard::lease::{Initial, LeaseTuning, ManualClock};
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let lease = Arc::new(Lease::new(
        clock.clone(),
        mode,
        Initial::Expired,
        LeaseTuning {
            clock_drift: 0.0,
            safety_margin_ms: 0,
        },
        Some(me.into()),
    ));
    let config = crate::command::CommandsConfig {
        deny: deny.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let gate = Gate::new(
        Policy {
            commands: CommandTable::build(&config, &[]),
        },
        Arc::new(Role::new(lease, OnDemote::Forward)),
        GateParts {
            control: ControlPolicy::new(Some("ctl"), &[]),
            reject_prefix: "READONLY".into(),
            backend_password: backend_password.map(str::to_string),
            verifier: None,
            pause: Arc::new(Pause::new(10, 1 << 20)),
            fence_reads: false,
        },
    );
    (clock, gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Name;
    use crate::guard::control::{CONTROL_PASSWORD_MISPLACED, NOPERM};
    use crate::guard::lease::ManualClock;
    use crate::resp::encode::request as encode;
    use crate::resp::request::{Limits, RequestFramer};

    const ME: &str = "0123456789012345678901234567890123456789";

    fn gate(mode: LeaseMode, deny: &[&str]) -> (Arc<ManualClock>, Gate) {
        for_tests(mode, deny, ME)
    }

    fn ask(gate: &Gate, args: &[&str], control: bool) -> Verdict {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let bytes = encode(&raw);
        let mut framer = RequestFramer::new(Limits {
            max_bulk_len: 1 << 20,
            max_multibulk_len: 1 << 10,
            max_inline_len: 1 << 10,
        });
        let head = framer.next(&bytes).expect("valid").expect("complete");
        let policy = gate.policy();
        let words = head.words(&bytes);
        let command = policy.commands.classify(&words.name, &words.sub);
        gate.admit(&Admission {
            class: command.class,
            command,
            head: &head,
            bytes: &bytes,
            control,
            verified: false,
            covered: false,
            handed_over: false,
            buffered: 0,
        })
    }

    #[test]
    fn denied_commands_are_answered_locally() {
        let (_, gate) = gate(LeaseMode::Disabled, &["FLUSHALL"]);
        assert_eq!(
            ask(&gate, &["FlushAll"], false),
            Verdict::Reply(Bytes::from_static(
                b"-ERR command 'flushall' is disabled by leasegate\r\n"
            ))
        );
        assert_eq!(ask(&gate, &["GET", "k"], false), Verdict::Forward);
    }

    /// `lease.fence_reads`: a master without a valid lease refuses reads
    /// too; with the lease, or as a replica, it serves them.
    #[test]
    fn fenced_reads_need_the_lease_on_a_master_only() {
        let (clock, gate) = gate(LeaseMode::BlockWrite, &[]);
        assert_eq!(
            ask(&gate, &["GET", "k"], false),
            Verdict::Forward,
            "off by default"
        );
        gate.set_fence_reads(true);
        assert_eq!(
            ask(&gate, &["GET", "k"], false),
            Verdict::Reply(Bytes::from_static(
                b"-READONLY master lease expired, reads are fenced on this node (lease.fence_reads; epoch 0)\r\n"
            ))
        );
        for no_data in [
            &["PING"][..],
            &["SELECT", "1"],
            &["PUBLISH", "c", "m"],
            &["MULTI"],
        ] {
            assert_eq!(
                ask(&gate, no_data, false),
                Verdict::Forward,
                "{no_data:?} reads no data"
            );
        }
        let hb = ["CLUSTERX", "HEARTBEAT", ME, "1000", "3"];
        assert!(matches!(ask(&gate, &hb, true), Verdict::Rewrite { .. }));
        assert_eq!(
            ask(&gate, &["GET", "k"], false),
            Verdict::Forward,
            "under the lease"
        );
        clock.advance_ms(1000);
        assert!(matches!(
            ask(&gate, &["GET", "k"], false),
            Verdict::Reply(_)
        ));
        // The probe finds the node a replica: its reads are replica reads.
        gate.role()
            .node
            .succeeded(crate::kvrocks::topology::Replication {
                role: Some("slave".into()),
                ..Default::default()
            });
        assert_eq!(ask(&gate, &["GET", "k"], false), Verdict::Forward);
        gate.set_fence_reads(false);
        gate.role()
            .node
            .succeeded(crate::kvrocks::topology::Replication {
                role: Some("master".into()),
                ..Default::default()
            });
        assert_eq!(
            ask(&gate, &["GET", "k"], false),
            Verdict::Forward,
            "off again"
        );
        assert_eq!(
            gate.metrics
                .writes_fenced
                .get_or_create(&Reason { reason: "read" })
                .get(),
            2
        );
    }

    #[test]
    fn writes_need_a_valid_lease_in_block_write() {
        let (clock, gate) = gate(LeaseMode::BlockWrite, &[]);
        assert_eq!(
            ask(&gate, &["SET", "k", "v"], false),
            Verdict::Reply(Bytes::from_static(
                b"-READONLY master lease expired, writes are fenced on this node (epoch 0)\r\n"
            ))
        );
        assert_eq!(
            ask(&gate, &["GET", "k"], false),
            Verdict::Forward,
            "reads pass"
        );
        assert_eq!(
            ask(&gate, &["EVAL_RO", "return 1", "0"], false),
            Verdict::Forward
        );
        assert!(matches!(
            ask(&gate, &["EVAL", "return 1", "0"], false),
            Verdict::Reply(_)
        ));
        assert!(
            matches!(
                ask(&gate, &["CONFIG", "SET", "x", "y"], false),
                Verdict::Forward
            ),
            "admin passes"
        );
        // A heartbeat from the controller opens writes.
        let hb = ["CLUSTERX", "HEARTBEAT", ME, "1000", "3"];
        assert!(matches!(ask(&gate, &hb, true), Verdict::Rewrite { .. }));
        assert_eq!(ask(&gate, &["SET", "k", "v"], false), Verdict::Forward);
        clock.advance_ms(1000);
        assert_eq!(
            ask(&gate, &["SET", "k", "v"], false),
            Verdict::Reply(Bytes::from_static(
                b"-READONLY master lease expired, writes are fenced on this node (epoch 3)\r\n"
            ))
        );
    }

    #[test]
    fn log_only_passes_and_counts() {
        let (_, gate) = gate(LeaseMode::LogOnly, &[]);
        assert_eq!(ask(&gate, &["SET", "k", "v"], false), Verdict::Forward);
        assert_eq!(gate.metrics.writes_unfenced_log_only.get(), 1);
    }

    #[test]
    fn heartbeats_need_control() {
        let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
        let hb = ["CLUSTERX", "HEARTBEAT", ME, "1000", "3"];
        assert_eq!(
            ask(&gate, &hb, false),
            Verdict::Reply(Bytes::from_static(NOPERM))
        );
        assert!(!gate.lease().write_allowed());
        assert!(
            matches!(ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "0", "3"], true), Verdict::Reply(r) if r.starts_with(b"-ERR invalid lease_ms"))
        );
    }

    #[test]
    fn replicaof_revokes() {
        let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
        ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
        assert!(gate.lease().write_allowed());
        assert_eq!(
            ask(&gate, &["REPLICAOF", "NO", "ONE"], false),
            Verdict::Forward
        );
        assert!(gate.lease().write_allowed(), "NO ONE keeps it");
        assert!(matches!(
            ask(&gate, &["REPLICAOF", "127.0.0.1", "6379"], false),
            Verdict::Observe(Effect::Replica { .. })
        ));
    }

    #[test]
    fn control_auth_is_checked_not_forwarded() {
        let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
        let auth = encode(&[b"AUTH", b"ctl"]);
        let mut framer = RequestFramer::new(Limits {
            max_bulk_len: 1 << 20,
            max_multibulk_len: 1 << 10,
            max_inline_len: 1 << 10,
        });
        let head = framer.next(&auth).expect("valid").expect("complete");
        assert_eq!(
            gate.authenticate(Special::Auth, &head, &auth),
            Some((Verdict::Reply(Bytes::from_static(OK)), true))
        );
        let wrong = encode(&[b"AUTH", b"nope"]);
        let head = framer.next(&wrong).expect("valid").expect("complete");
        assert_eq!(gate.authenticate(Special::Auth, &head, &wrong), None);
        let hello = encode(&[
            b"HELLO", b"3", b"AUTH", b"default", b"ctl", b"SETNAME", b"c",
        ]);
        let head = framer.next(&hello).expect("valid").expect("complete");
        assert_eq!(
            gate.authenticate(Special::Hello, &head, &hello),
            Some((
                Verdict::Rewrite {
                    request: encode(&[b"HELLO", b"3", b"SETNAME", b"c"]),
                    answer: Answer::Hello
                },
                true
            ))
        );
        let _ = Name::EMPTY;
    }

    fn authenticate(gate: &Gate, args: &[&[u8]]) -> Option<(Verdict, bool)> {
        let bytes = encode(args);
        let mut framer = RequestFramer::new(Limits {
            max_bulk_len: 1 << 20,
            max_multibulk_len: 1 << 10,
            max_inline_len: 1 << 10,
        });
        let head = framer.next(&bytes).expect("valid").expect("complete");
        let words = head.words(&bytes);
        let special = gate
            .policy()
            .commands
            .classify(&words.name, &words.sub)
            .special;
        gate.authenticate(special, &head, &bytes)
    }

    /// One password for node and controller (the usual Kvrocks
    /// deployment): the AUTH goes to the node unchanged, so the session
    /// remembers it like any client's, and the connection is the
    /// controller's besides. A separate node password is put in its place.
    #[test]
    fn a_control_password_that_is_the_nodes_is_forwarded() {
        let (_, shared) = for_tests_with_password(LeaseMode::BlockWrite, &[], ME, Some("ctl"));
        assert_eq!(
            authenticate(&shared, &[b"AUTH", b"ctl"]),
            Some((Verdict::Forward, true))
        );
        assert_eq!(
            authenticate(&shared, &[b"AUTH", b"default", b"ctl"]),
            Some((Verdict::Forward, true))
        );
        assert_eq!(
            authenticate(&shared, &[b"HELLO", b"3", b"AUTH", b"default", b"ctl"]),
            Some((Verdict::Forward, true))
        );
        assert_eq!(authenticate(&shared, &[b"AUTH", b"other"]), None);
        let (_, separate) = for_tests_with_password(LeaseMode::BlockWrite, &[], ME, Some("node"));
        assert_eq!(
            authenticate(&separate, &[b"AUTH", b"ctl"]),
            Some((
                Verdict::Rewrite {
                    request: encode(&[b"AUTH", b"node"]),
                    answer: Answer::Replace(Bytes::from_static(OK)),
                },
                true
            ))
        );
    }

    #[test]
    fn hello_is_parsed_by_its_grammar() {
        let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
        let misplaced = Some((
            Verdict::Reply(Bytes::from_static(CONTROL_PASSWORD_MISPLACED)),
            false,
        ));
        // `auth` here is a client name, and `u ctl` are not AUTH's arguments.
        assert_eq!(
            authenticate(
                &gate,
                &[b"HELLO", b"3", b"SETNAME", b"auth", b"AUTH", b"u", b"ctl"]
            ),
            Some((
                Verdict::Rewrite {
                    request: encode(&[b"HELLO", b"3", b"SETNAME", b"auth"]),
                    answer: Answer::Hello
                },
                true
            ))
        );
        // Without the grammar's positions, the control password is never forwarded.
        assert_eq!(
            authenticate(&gate, &[b"HELLO", b"3", b"SETNAME", b"AUTH", b"u", b"ctl"]),
            misplaced
        );
        assert_eq!(
            authenticate(&gate, &[b"HELLO", b"AUTH", b"u", b"ctl"]),
            misplaced
        );
        assert_eq!(
            authenticate(&gate, &[b"AUTH", b"a", b"b", b"ctl"]),
            misplaced
        );
        assert_eq!(authenticate(&gate, &[b"CLIENT", b"SETNAME", b"ctl"]), None);
        // Ordinary credentials pass to the node untouched.
        assert_eq!(
            authenticate(&gate, &[b"HELLO", b"3", b"AUTH", b"default", b"secret"]),
            None
        );
        assert_eq!(authenticate(&gate, &[b"AUTH", b"secret"]), None);
    }

    #[test]
    fn role_changes_take_effect_when_the_node_accepts_them() {
        let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
        ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
        let Verdict::Observe(effect) = ask(&gate, &["REPLICAOF", "127.0.0.1", "6379"], false)
        else {
            panic!("REPLICAOF host port is observed");
        };
        assert!(
            gate.lease().write_allowed(),
            "nothing changes on the way in"
        );
        gate.accepted(&effect);
        assert!(!gate.lease().write_allowed(), "the node's +OK revokes");
    }

    #[test]
    fn only_the_controller_names_the_node() {
        let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
        let setnodeid = [
            "CLUSTERX",
            "SETNODEID",
            "9999999999999999999999999999999999999999",
        ];
        assert_eq!(ask(&gate, &setnodeid, false), Verdict::Forward);
        assert_eq!(
            ask(&gate, &setnodeid, true),
            Verdict::Observe(Effect::NodeId(setnodeid[2].to_string()))
        );
    }

    #[test]
    fn acknowledgements_need_the_same_unbroken_term() {
        let (clock, gate) = gate(LeaseMode::BlockWrite, &[]);
        ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
        let term = gate.write_term().expect("block-write checks");
        assert_eq!(gate.acknowledgement(term, b"+OK\r\n"), None);
        // Renewed before it lapsed: the same term.
        clock.advance_ms(900);
        ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
        clock.advance_ms(900);
        assert_eq!(gate.acknowledgement(term, b":1\r\n"), None);
        // Lapsed, then renewed: a write admitted before the gap is not acknowledged.
        clock.advance_ms(200);
        ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
        assert_eq!(
            gate.acknowledgement(term, b"+OK\r\n"),
            Some(UNKNOWN_OUTCOME)
        );
        assert_eq!(
            gate.acknowledgement(term, b"-ERR x\r\n"),
            None,
            "errors pass"
        );
        assert_eq!(gate.acknowledgement(term, b"+QUEUED\r\n"), None);
        let term = gate.write_term().expect("block-write checks");
        gate.role().revoke("test", Source::Node);
        assert_eq!(
            gate.acknowledgement(term, b"*1\r\n:1\r\n"),
            Some(UNKNOWN_OUTCOME)
        );
        assert_eq!(gate.metrics.unknown_outcomes.get(), 2);
    }

    #[test]
    fn client_reply_modes_reach_the_node_as_on() {
        let (_, gate) = gate(LeaseMode::Disabled, &[]);
        for (words, mode) in [
            (["CLIENT", "REPLY", "OFF"], ReplyMode::Off),
            (["client", "reply", "skip"], ReplyMode::Skip),
            (["CLIENT", "REPLY", "ON"], ReplyMode::On),
        ] {
            assert_eq!(
                ask(&gate, &words, false),
                Verdict::Rewrite {
                    request: Bytes::from_static(CLIENT_REPLY_ON),
                    answer: Answer::ReplyMode(mode)
                }
            );
        }
        // The node's own error for any other shape.
        assert_eq!(
            ask(&gate, &["CLIENT", "REPLY", "MAYBE"], false),
            Verdict::Forward
        );
        assert_eq!(ask(&gate, &["CLIENT", "REPLY"], false), Verdict::Forward);
    }

    /// The controller's topology demoting a master with writes in flight
    /// waits for them (writes paused), then goes on; its `+OK` demotes and
    /// ends the pause. Without writes in flight it goes on at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_demoting_topology_waits_for_the_writes_in_flight() {
        let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
        ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
        assert!(gate.lease().write_allowed());
        let other = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let nodes =
            format!("{other} 127.0.0.1 7001 master - 0-16383\n{ME} 127.0.0.1 7000 slave {other}");
        let setnodes = ["CLUSTERX", "SETNODES", nodes.as_str(), "2"];
        gate.role().write_in_flight(true);
        assert!(matches!(
            ask(&gate, &setnodes, true),
            Verdict::Hold(Wait::Drain { answer: false, .. })
        ));
        assert!(gate.pause().is_paused(), "writes wait meanwhile");
        gate.role().write_in_flight(false);
        let Verdict::Observe(effect) = ask(&gate, &setnodes, true) else {
            panic!("asked again, it goes on");
        };
        assert!(gate.lease().write_allowed(), "nothing changes before +OK");
        gate.accepted(&effect);
        assert!(!gate.lease().write_allowed());
        assert!(gate.role().is_demoted());
        assert!(!gate.pause().is_paused(), "the +OK ends the pause");
        // An ordinary client's is not held.
        assert!(matches!(
            ask(&gate, &["CLUSTERX", "SETNODES", nodes.as_str(), "3"], false),
            Verdict::Observe(_)
        ));
    }

    /// A promoting topology counts only from the controller: an ordinary
    /// client's (even one the node accepted) neither ends a demotion nor
    /// tells the poller that a revocation belongs to an earlier version.
    #[test]
    fn only_the_controllers_topology_promotes() {
        let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
        gate.role().demote(Demotion {
            new_master: Some("127.0.0.1:7001".into()),
        });
        let promoting = |from_control| Effect::Topology {
            nodes: format!("{ME} 127.0.0.1 7000 master - 0-16383"),
            version: Some(5),
            from_control,
        };
        gate.accepted(&promoting(false));
        assert!(gate.role().is_demoted());
        assert_eq!(gate.role().last_promotion(), None);
        gate.accepted(&promoting(true));
        assert!(!gate.role().is_demoted());
        assert_eq!(gate.role().last_promotion().map(|(v, _)| v), Some(5));
        // The controller's re-push of an older topology at a version the
        // node already has is a no-op there, and here.
        gate.accepted(&Effect::Topology {
            nodes: format!("{ME} 127.0.0.1 7000 slave bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            version: Some(5),
            from_control: true,
        });
        assert!(!gate.role().is_demoted());
    }

    /// Named master by the controller's topology before its lease came, a
    /// node's writes wait for the lease instead of failing; the grant lets
    /// them go, a revocation fences them again at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_promoted_node_holds_writes_until_its_lease_comes() {
        use crate::guard::lease::Grant;
        let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
        let promoting = Effect::Topology {
            nodes: format!("{ME} 127.0.0.1 7000 master - 0-16383"),
            version: Some(5),
            from_control: true,
        };
        gate.accepted(&promoting);
        let Verdict::Hold(wait) = ask(&gate, &["SET", "k", "v"], false) else {
            panic!("the write waits for the lease");
        };
        assert!(matches!(wait, Wait::Lease { .. }));
        // The grant arrives while it waits: it goes on, and is forwarded.
        let grant = Grant {
            master_node_id: Some(ME.to_string()),
            ttl_ms: 10_000,
            epoch: 1,
            nonce: None,
            anchor: None,
        };
        let waiting = gate.wait(&wait);
        gate.role()
            .grant(&grant, gate.lease().now(), Source::Heartbeat)
            .expect("granted");
        assert_eq!(waiting.await, Ok(()));
        assert!(matches!(
            ask(&gate, &["SET", "k", "v"], false),
            Verdict::Forward
        ));
        // Promoted again (a newer topology), then revoked: fenced at once.
        gate.role().revoke("test", Source::Http);
        gate.accepted(&Effect::Topology {
            nodes: format!("{ME} 127.0.0.1 7000 master - 0-16383"),
            version: Some(6),
            from_control: true,
        });
        assert!(matches!(
            ask(&gate, &["SET", "k", "v"], false),
            Verdict::Hold(Wait::Lease { .. })
        ));
        gate.role().revoke("another node is master", Source::Http);
        assert!(matches!(
            ask(&gate, &["SET", "k", "v"], false),
            Verdict::Reply(_)
        ));
    }
}
