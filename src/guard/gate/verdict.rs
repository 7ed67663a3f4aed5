//! What the Gate is asked and what it answers: a request as it sees it
//! ([`Admission`]), its [`Verdict`], what a held request waits for
//! ([`Wait`]), what a forwarded one changes once the node accepts it
//! ([`Effect`]), and how a rewritten request's answer is made ([`Answer`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::command::{Class, Classified, ReplyMode};
use crate::guard::pause::Hold;
use crate::guard::verify::Ticket;
use crate::resp::request::RequestHead;

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
    /// The client's address, where known: named in the log when its
    /// request changes the lease (a heartbeat naming another node).
    pub peer: Option<std::net::IpAddr>,
}

/// The Gate's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the request to the backend.
    Forward,
    /// Send the write to the backend now; its success reply may reach the
    /// client only once confirmation round `n` (or a later one) confirmed
    /// mastership (`verify.hold: acknowledgement`, [`Gate::unconfirmed_reply`](super::Gate::unconfirmed_reply)).
    ForwardUnconfirmed(Ticket),
    /// Do not forward; answer with this complete RESP reply in the request's place.
    Reply(Bytes),
    /// Do not forward; answer with this reply and close the connection (its
    /// client reconnects, and reaches this node again if it answers).
    Close(Bytes),
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
    /// with [`Gate::accepted`](super::Gate::accepted).
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
    /// `REPLICAOF NO ONE` on a control connection (a Sentinel's promotion,
    /// another leasegate's `FAILOVER`): the node is a master now, so it is
    /// no longer demoted toward another node, which may point back here.
    Promoted,
}

impl Effect {
    /// A controller's topology (`CLUSTERX SETNODES` on a control
    /// connection): its nodes text and version.
    pub(super) fn controller_topology(&self) -> Option<(&str, Option<u64>)> {
        match self {
            Effect::Topology {
                nodes,
                version,
                from_control: true,
            } => Some((nodes, *version)),
            _ => None,
        }
    }
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
    /// A `PUBLISH` at a demoted Kvrocks node, until the node follows a
    /// master (then it is asked about again), or refused at `until`
    /// ([`super::publish`]).
    Follow { until: std::time::Instant },
    /// A promotion (`REPLICAOF NO ONE`, a controller's topology), until
    /// the old master is fenced ([`crate::guard::promotion`]), or a
    /// demoting topology, until the new master has this node's writes
    /// (`step_down`); at `until` at the latest it is asked about again.
    Fence {
        until: std::time::Instant,
        step_down: bool,
    },
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

/// How the answer to a rewritten request is made from the node's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The node's reply to a rewritten HELLO (its type tells the protocol).
    Hello,
    /// The node's reply is dropped; the client gets this instead.
    Replace(Bytes),
    /// The node's reply goes to the client as it came (the node judged the
    /// rewritten request: an `AUTH` with the node's password is refused if
    /// that password is wrong).
    Node,
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
