//! What other leasegates say: the admin HTTP API's wire model.
//!
//! The requests and answers of `/v1/status`, `/v1/lease`, `/v1/pause`,
//! `/v1/unpause`, `/v1/failover` and `/v1/reload`, defined once: the server
//! ([`crate::control::admin`]) parses requests and builds answers with them,
//! and the [`admin_client`](super::admin_client) (the failover, the
//! `leasegate ctl` / `failover` commands) sends and reads the same types.
//!
//! These are wire types, not the guard's own: the guard's state (the lease
//! snapshot, the pause status, the node probe's view) is converted into them
//! by the control plane, which sees both layers. Field names and values are
//! the JSON's; renaming one is an API change.
//!
//! [`FailoverState`] lives here too: it is Kvrocks' `cluster_failover_state`
//! vocabulary, which the guard records and the admin API reports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kvrocks::topology::Replication;

/// The failover state machine's states, as in Kvrocks' `cluster_failover_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverState {
    None,
    Started,
    CheckSlave,
    PauseWrite,
    WaitSync,
    Switching,
    Success,
    Failed,
}

impl FailoverState {
    /// Every state, in the machine's order.
    pub const ALL: [FailoverState; 8] = [
        FailoverState::None,
        FailoverState::Started,
        FailoverState::CheckSlave,
        FailoverState::PauseWrite,
        FailoverState::WaitSync,
        FailoverState::Switching,
        FailoverState::Success,
        FailoverState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailoverState::None => "none",
            FailoverState::Started => "started",
            FailoverState::CheckSlave => "check_slave",
            FailoverState::PauseWrite => "pause_write",
            FailoverState::WaitSync => "wait_sync",
            FailoverState::Switching => "switching",
            FailoverState::Success => "success",
            FailoverState::Failed => "failed",
        }
    }

    /// The inverse of `state as u8` (for an atomic store); unknown values
    /// are `None`.
    pub fn from_u8(v: u8) -> FailoverState {
        match v {
            1 => FailoverState::Started,
            2 => FailoverState::CheckSlave,
            3 => FailoverState::PauseWrite,
            4 => FailoverState::WaitSync,
            5 => FailoverState::Switching,
            6 => FailoverState::Success,
            7 => FailoverState::Failed,
            _ => FailoverState::None,
        }
    }

    /// The state named `text` (`cluster_failover_state`), if any.
    pub fn parse(text: &str) -> Option<FailoverState> {
        FailoverState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a failover in `text` (a `cluster_failover_state`, as
    /// another leasegate's `INFO leasegate` reports it) is under way.
    pub fn names_a_running_one(text: &str) -> bool {
        FailoverState::parse(text).is_some_and(|s| !s.is_final())
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            FailoverState::None | FailoverState::Success | FailoverState::Failed
        )
    }
}

impl fmt::Display for FailoverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

// ---------------------------------------------------------------- /v1/status

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub lease: LeaseView,
    /// What the node probe last saw.
    pub node: NodeView,
    /// `pause.paused`, at the top level for scripts.
    pub paused: bool,
    pub pause: PauseView,
    /// The last (or current) graceful failover's state.
    pub failover_state: FailoverState,
    /// `null` unless this node was demoted.
    pub demoted: Option<Demoted>,
    /// The proxy's client address (`listen`).
    pub listen: String,
    /// The node (`backend.addr`).
    pub backend: String,
    /// This host's coarse clock, which times a Kvrocks replica's
    /// replication tick (a failover to this node reads it); `null` where
    /// it cannot be read, or from older leasegates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockView>,
    /// The serving process (it changes at an in-place upgrade); `null`
    /// from older leasegates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Where this host's `CLOCK_MONOTONIC_COARSE` ticks, at the moment of the
/// answer: it last ticked `since_tick_ns` ago, and ticks every `tick_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockView {
    pub tick_ns: u64,
    pub since_tick_ns: u64,
    /// How long after a tick's nominal time the clock shows it (the
    /// kernel's timer interrupt runs that much later).
    #[serde(default)]
    pub lag_ns: u64,
    /// `CLOCK_MONOTONIC` at the answer: a leasegate on the same host (the
    /// same clock) places the answer exactly.
    #[serde(default)]
    pub monotonic_ns: u64,
}

/// `lease.mode`, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseMode {
    Disabled,
    LogOnly,
    BlockWrite,
}

/// The lease (in `/v1/status` and the `/v1/lease` answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub mode: LeaseMode,
    pub valid: bool,
    /// The node named master by the last grant.
    pub owner: Option<String>,
    /// This node's id, when known.
    pub node_id: Option<String>,
    pub epoch: u64,
    /// Milliseconds until the deadline, 0 when expired; `null` when valid
    /// until told otherwise.
    pub remaining_ms: Option<u64>,
    pub revoked_reason: Option<String>,
}

/// What the node probe last saw (`ROLE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub replication: Option<Replication>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
}

/// `GET /v1/probe`: the node probe's record, so that a controller (or a
/// peer voting on a failover, kvrocks-controller PR #396) can ask the
/// node's neighbour before declaring the node dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Whether the probe runs (`lease.probe_interval_ms` > 0).
    pub enabled: bool,
    pub probe_interval_ms: u64,
    /// The last probe got an answer.
    pub reachable: bool,
    /// Failed probes in a row (0 after a success).
    pub consecutive_failures: u64,
    /// Milliseconds since a probe last succeeded; `null` if none has.
    pub last_success_ms_ago: Option<u64>,
    /// Probes made since start.
    pub probes: u64,
    /// `master` / `slave`, from the last successful probe.
    pub role: Option<String>,
    /// Replication offset (Kvrocks: sequence number).
    pub offset: Option<u64>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
    pub lease: LeaseView,
}

/// The pause (in `/v1/status` and the `/v1/pause`, `/v1/unpause` answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseView {
    pub paused: bool,
    /// `null` when not paused.
    pub mode: Option<PauseMode>,
    pub held_requests: u64,
    pub held_bytes: u64,
}

/// This node was demoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demoted {
    /// The client address of the new master's leasegate, when known.
    pub new_master: Option<String>,
}

// Serialize is derived in `topology`; the status answer also reads it.
impl<'de> Deserialize<'de> for Replication {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            role: Option<String>,
            offset: Option<u64>,
            link_status: Option<String>,
            master: Option<String>,
        }
        let w = Wire::deserialize(d)?;
        Ok(Replication {
            role: w.role,
            offset: w.offset,
            link_status: w.link_status,
            master: w.master,
            replid: None,
        })
    }
}

// ----------------------------------------------------------------- /v1/lease

/// `POST /v1/lease`: push renewal, the grant a `CLUSTERX HEARTBEAT` carries.
/// A grant naming another node revokes the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub master_node_id: String,
    pub epoch: u64,
    pub ttl_ms: u64,
    /// A nonce from an earlier answer: the lease runs from when it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
}

impl LeaseRequest {
    /// The body's shape, for error messages.
    pub const SHAPE: &'static str =
        r#"{"master_node_id": "...", "epoch": N, "ttl_ms": N, "nonce": N?}"#;
}

/// What a grant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOutcome {
    /// The lease runs until the new deadline.
    Renewed,
    /// Another node is master: the lease is revoked.
    Revoked,
    /// The echoed nonce is unknown: the lease is left as it was.
    UnknownNonce,
}

impl LeaseOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseOutcome::Renewed => "renewed",
            LeaseOutcome::Revoked => "revoked",
            LeaseOutcome::UnknownNonce => "unknown_nonce",
        }
    }
}

impl fmt::Display for LeaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to an applied `POST /v1/lease` (a refused grant is an
/// [`ErrorBody`] with 400 or 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    pub outcome: LeaseOutcome,
    /// The lease after the grant.
    pub lease: LeaseView,
    /// A fresh nonce to echo in the next grant.
    pub nonce: u64,
}

// ----------------------------------------------------------------- /v1/pause

/// Which requests a pause holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Writes are held; reads pass.
    #[default]
    Write,
    /// Every request from clients is held.
    All,
}

impl PauseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Write => "write",
            PauseMode::All => "all",
        }
    }
}

impl fmt::Display for PauseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pause mode other than `write` or `all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pause mode '{0}' (expected write or all)")]
pub struct UnknownPauseMode(pub String);

impl FromStr for PauseMode {
    type Err = UnknownPauseMode;

    /// `write` or `all`, any case.
    fn from_str(s: &str) -> Result<PauseMode, UnknownPauseMode> {
        if s.eq_ignore_ascii_case("write") {
            Ok(PauseMode::Write)
        } else if s.eq_ignore_ascii_case("all") {
            Ok(PauseMode::All)
        } else {
            Err(UnknownPauseMode(s.to_string()))
        }
    }
}

/// `POST /v1/pause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub timeout_ms: u64,
    #[serde(default)]
    pub mode: PauseMode,
}

impl PauseRequest {
    /// The body's shape, for error messages.
    pub const SHAPE: &'static str = r#"{"timeout_ms": N, "mode": "write"|"all"}"#;
}

/// The answer to `POST /v1/pause` and `POST /v1/unpause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseResponse {
    pub pause: PauseView,
}

// ---------------------------------------------------------------- /v1/reload

/// The answer to `POST /v1/reload` (and what a SIGHUP reload logs): the
/// config keys (`lease.mode`, `commands.deny`, ...) that differ between the
/// file and the running config. A file that cannot be used is answered
/// `400` with an [`ErrorBody`] instead, and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// Changed and now in force.
    pub applied: Vec<String>,
    /// Changed in the file but not applied: they take a restart.
    pub needs_restart: Vec<String>,
    /// Nothing differed.
    pub unchanged: bool,
    /// The TLS settings whose certificate files were read again (`tls`,
    /// `backend.tls`, `controller`, `admin.tls`): every reload reads them,
    /// so a certificate renewed in place is in force even when no key
    /// changed.
    #[serde(default)]
    pub certificates: Vec<String>,
}

// -------------------------------------------------------------- /v1/failover

/// `POST /v1/failover` (the options of kvrocks-controller PR #389).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// Admin address (`host:port`) of the target's leasegate.
    pub to: String,
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    #[serde(default = "default_pause_timeout_ms")]
    pub pause_timeout_ms: u64,
    #[serde(default)]
    pub force_on_timeout: bool,
    /// Lease granted to the new master (the controller renews it afterwards).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// Token for the target's admin API (default: this proxy's admin.token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_token: Option<String>,
    /// Time the pause to the target's replication tick where the target is
    /// a Kvrocks replica (`reference/KVROCKS-PROMOTION.md`); `false` pauses
    /// at once.
    #[serde(
        default = "default_promotion_timing",
        skip_serializing_if = "is_default_promotion_timing"
    )]
    pub promotion_timing: bool,
    /// Cluster mode: time the pause there too (with `promotion_timing`).
    /// Off by default: measured, but not yet proven under every race.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_timing: bool,
}

impl FailoverRequest {
    /// The body's shape, for error messages.
    pub const SHAPE: &'static str = r#"{"to": "<target admin host:port>", "sync_timeout_ms"?, "pause_timeout_ms"?, "force_on_timeout"?}"#;

    /// A request to fail over to `to`, with every default.
    pub fn new(to: impl Into<String>) -> FailoverRequest {
        FailoverRequest {
            to: to.into(),
            sync_timeout_ms: default_sync_timeout_ms(),
            pause_timeout_ms: default_pause_timeout_ms(),
            force_on_timeout: false,
            lease_ttl_ms: default_lease_ttl_ms(),
            target_token: None,
            promotion_timing: default_promotion_timing(),
            cluster_timing: false,
        }
    }
}

/// `sync_timeout_ms` when not given.
pub const DEFAULT_SYNC_TIMEOUT_MS: u64 = 100;
/// `pause_timeout_ms` when not given.
pub const DEFAULT_PAUSE_TIMEOUT_MS: u64 = 500;
/// `lease_ttl_ms` when not given.
pub const DEFAULT_LEASE_TTL_MS: u64 = 10_000;

fn default_sync_timeout_ms() -> u64 {
    DEFAULT_SYNC_TIMEOUT_MS
}
fn default_pause_timeout_ms() -> u64 {
    DEFAULT_PAUSE_TIMEOUT_MS
}
fn default_lease_ttl_ms() -> u64 {
    DEFAULT_LEASE_TTL_MS
}
fn default_promotion_timing() -> bool {
    true
}
fn is_default_promotion_timing(on: &bool) -> bool {
    *on
}

/// The HTTP status of a `/v1/failover` answer whose report says `failed`
/// (a successful failover answers 200; both carry a [`FailoverReport`]).
pub const FAILOVER_FAILED_STATUS: u16 = 409;

/// One state the failover went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub state: FailoverState,
    /// Milliseconds since the failover started.
    pub at_ms: f64,
}

/// What a failover did: the answer to `POST /v1/failover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// `success` or `failed`.
    pub result: FailoverState,
    /// Why it failed.
    pub error: Option<String>,
    pub steps: Vec<Step>,
    /// How long writes were paused, in milliseconds (pause to release).
    pub stall_ms: Option<f64>,
    pub epoch: Option<u64>,
    /// The new master's leasegate (client address).
    pub new_master: Option<String>,
    /// The failover ended with this node fenced and the target not granted
    /// the lease: no node accepts writes until the controller grants it.
    pub both_fenced: bool,
    /// How long the promotion itself took, in milliseconds: from the
    /// command that makes the target master (`SLAVEOF NO ONE`, or its
    /// `CLUSTERX SETNODES`) to its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_ms: Option<f64>,
    /// What the promotion timing did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<TimingReport>,
    /// Cluster mode: the new master's leasegate held no lease within
    /// `pause_timeout_ms`, so the held writes went to it before it could
    /// take them (held or refused there); its lease came this many
    /// milliseconds after the pause ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_late_ms: Option<f64>,
}

/// Whether a failover timed its pause to the target's replication tick,
/// and whether that held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingReport {
    pub outcome: TimingOutcome,
    /// Milliseconds waited before the pause so that the promotion could
    /// follow it at once (part of the failover's run time, not of the stall).
    pub wait_ms: f64,
    /// How the tick's phase was learned, or why the timing was not used.
    pub note: String,
    /// How long after the planned tick the promotion was answered (the
    /// timing's own error; negative: before it, so the target did not wait
    /// for a tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_tick_ms: Option<f64>,
}

/// What the promotion timing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingOutcome {
    /// The promotion completed at the tick the pause was timed for.
    Held,
    /// The promotion waited for a later tick (the phase was wrong, or the
    /// pause took longer than planned); the failover still completed.
    Missed,
    /// The timing was not applied (see the note): the target promotes at
    /// once, its phase is unknown, or the request turned it off.
    Unused,
}

impl TimingOutcome {
    pub const ALL: [TimingOutcome; 3] = [
        TimingOutcome::Held,
        TimingOutcome::Missed,
        TimingOutcome::Unused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimingOutcome::Held => "held",
            TimingOutcome::Missed => "missed",
            TimingOutcome::Unused => "unused",
        }
    }
}

impl FailoverReport {
    /// A failover that failed before it took a step.
    pub fn failed(error: impl Into<String>) -> FailoverReport {
        FailoverReport {
            result: FailoverState::Failed,
            error: Some(error.into()),
            steps: Vec::new(),
            stall_ms: None,
            epoch: None,
            new_master: None,
            both_fenced: false,
            promotion_ms: None,
            timing: None,
            lease_late_ms: None,
        }
    }
}

#[cfg(test)]
mod tests;
