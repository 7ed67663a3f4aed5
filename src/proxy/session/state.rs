//! The session's state, as enums with single transitions: what the client
//! is owed ([`Owed`], [`Expect`]), the transaction and WATCH on the backend
//! connection as its replies have told, why the session reads no further
//! ([`Stall`]), who the peer is ([`Peer`]), what the node's frames are
//! ([`Stream`]) and where the connection is in its life ([`Lifecycle`]).

use bytes::Bytes;

use crate::command::{Class, ReplyMode, Special};
use crate::guard::gate::{Answer, Effect, Gate, Wait};
use crate::guard::lease::Term;
use crate::guard::verify::Ticket;
use crate::resp::reply::PubSubKind;
use crate::resp::request::RequestHead;

use super::handover::{Move, ReplaySlot};
use super::NO_WAIT;

/// What the client is owed next, in request order.
#[derive(Debug)]
pub(super) enum Owed {
    /// One backend reply, handled as `Expect` says.
    Reply(Expect),
    /// A reply made by the proxy.
    Local(Bytes),
    /// A subscribe-family request went out: RESP2 pub/sub frames from here on
    /// answer no request. It is answered by its confirmations: what is
    /// owed after it waits for them (an `UNSUBSCRIBE a b` of a session
    /// subscribed to nothing is answered by two frames, each counting 0:
    /// taken as the end of subscribe mode at the first, the second was
    /// taken for the next request's reply, and every reply after it was
    /// one off: a fenced write's `+OK`, never applied, reached its client
    /// (an attack pass)).
    PubSub(Confirmations),
    /// MONITOR was acknowledged: everything from here on is a stream.
    Monitor,
    /// A replication request went out: from here on the node's bytes are
    /// its stream, passed through unframed.
    Replication,
    /// Close the connection once everything before this has been written.
    Close,
}

#[derive(Debug)]
pub(super) enum Expect {
    Plain,
    /// A write's reply (or an EXEC's with queued writes): counted, and its
    /// acknowledgement checked against the lease.
    Write(WriteTicket),
    /// A read that may block for long (`XREAD ... BLOCK`): counted in the
    /// session's blocking commands, so that a Kvrocks node turning replica
    /// ends it as it ends a blocking write (Kvrocks wakes no reader of a
    /// replica with the entries replication brings: an attack pass's
    /// `XREAD BLOCK 0` in flight at a failover waited for good).
    BlockingRead,
    /// MULTI number `n`: `+OK` opens the transaction, an error ends it.
    Multi(u64),
    /// A request queued in a transaction that may be queued again at a
    /// new master ([`super::requeue`]): anything but `+QUEUED` rules that out.
    Queued,
    /// WATCH: `+OK` puts it in force.
    Watch,
    /// A request the Gate observes: its effect applies on `+OK`.
    Observe(Effect),
    /// Kvrocks' `_db_name`: one bare line, not a RESP frame.
    BareLine,
    /// HELLO: the reply's type tells which protocol the connection now
    /// speaks; a successful HELLO as the client sent it is replayed at a
    /// hand-over.
    Hello(Option<Bytes>),
    /// AUTH, SELECT or CLIENT SETNAME as the client sent it: replayed at a
    /// hand-over once the node has accepted it.
    Remember(ReplaySlot, Bytes),
    /// RESET: the connection is back to its initial state.
    Reset,
    /// The backend's reply is swallowed and this one is sent instead
    /// (EXEC turned into DISCARD).
    Replace(Bytes),
    /// A heartbeat's `INFO replication` becomes the lease report.
    Heartbeat {
        renewed: bool,
    },
    /// `INFO`: the reply's `master_failover_state` is leasegate's, and it
    /// gains the `# Leasegate` section when `section`.
    Info {
        section: bool,
    },
    /// `CLIENT REPLY <mode>`, sent to the node as `CLIENT REPLY ON`: its
    /// `+OK` puts the mode in force ([`super::mute`]).
    ReplyMode(ReplyMode),
    /// The `WAIT` sent after a batch of writes (`durability.min_replicas`,
    /// [`super::acks`]): swallowed; it releases the replies held for it.
    ReplicaAck {
        min_replicas: u32,
        timeout_ms: u64,
        /// Counted in flight: not where a blocking command before it may
        /// keep the node from ever running it ([`super::acks`]).
        counted: bool,
    },
    /// The `CLIENT INFO` sent after a login on a Kvrocks node
    /// ([`super::restore`]): swallowed; its `namespace=` is where the
    /// login put the connection.
    Namespace,
}

/// This session's counted writes in flight. The node's role counts
/// *sessions* with writes in flight (what a failover and the controller's
/// pause wait to reach zero): one shared update when the session's first
/// write is counted and one when its last is answered, rather than two per
/// write of a pipeline.
#[derive(Debug, Default)]
pub(super) struct WritesOut(u32);

impl Owed {
    /// Whether it is a blocking command's reply (BLPOP and the like,
    /// `XREAD ... BLOCK`), which may never come.
    pub(super) fn is_blocking(&self) -> bool {
        matches!(
            self,
            Owed::Reply(Expect::Write(WriteTicket { blocking: true, .. }) | Expect::BlockingRead)
        )
    }
}

impl WritesOut {
    /// A write is counted (before the Gate looks at the pause).
    #[inline]
    pub(super) fn add(&mut self, gate: &Gate) {
        if self.0 == 0 {
            gate.role().write_in_flight(true);
        }
        self.0 += 1;
    }

    /// A counted write was answered, or did not go out after all.
    #[inline]
    pub(super) fn answered(&mut self, gate: &Gate) {
        // Never below zero: the role's count is the failover's to trust.
        debug_assert!(self.0 > 0, "an answer to a write that was not counted");
        if self.0 == 0 {
            return;
        }
        self.0 -= 1;
        if self.0 == 0 {
            gate.role().write_in_flight(false);
        }
    }

    /// Whether a write is unanswered.
    pub(super) fn any(&self) -> bool {
        self.0 > 0
    }

    /// The session ends with writes unanswered.
    pub(super) fn abandon(&mut self, gate: &Gate) {
        if self.0 > 0 {
            self.0 = 0;
            gate.role().write_in_flight(false);
        }
    }
}

/// How a forwarded write's reply is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WriteTicket {
    /// BLPOP and the like: not counted in flight (they may block for long),
    /// but their completion is reported to the failover.
    pub(super) blocking: bool,
    /// Counted in writes in flight until the reply comes (not: blocking
    /// writes, and moved sessions' writes, which the other leasegate counts).
    pub(super) counted: bool,
    /// The lease term the write was admitted in; `None` when nothing is
    /// checked (`lease.mode: disabled`, a moved session).
    pub(super) term: Option<Term>,
    /// Forwarded before its mastership confirmation (`verify.hold:
    /// acknowledgement`): the reply waits for this round, or a later one.
    pub(super) confirm: Option<Ticket>,
}

impl From<Answer> for Expect {
    fn from(a: Answer) -> Expect {
        match a {
            Answer::Hello => Expect::Hello(None),
            Answer::Replace(b) => Expect::Replace(b),
            Answer::Node => Expect::Plain,
            Answer::Heartbeat { renewed } => Expect::Heartbeat { renewed },
            Answer::Info { section } => Expect::Info { section },
            Answer::ReplyMode(mode) => Expect::ReplyMode(mode),
        }
    }
}

/// MULTI on the backend connection, as its replies have told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Transaction {
    /// No MULTI went out (or its EXEC/DISCARD did).
    None,
    /// MULTI number `multi` went out. `open` once the node answered `+OK`:
    /// only then are requests queued rather than run, so only then are
    /// writes judged at EXEC instead of one by one. `writes`: a write was
    /// queued, so EXEC is a write.
    Queued {
        multi: u64,
        open: bool,
        writes: bool,
        /// A `REPLICAOF` was queued: the transaction changes the node's
        /// role (`super::role_change`). Absent in a predecessor's state.
        #[serde(default)]
        role_change: bool,
    },
    /// The proxy refused a request inside the transaction: EXEC must fail
    /// (EXECABORT), as the node's own refusal would make it.
    Aborted { multi: u64, open: bool },
}

impl Transaction {
    pub(super) fn is_none(self) -> bool {
        self == Transaction::None
    }

    /// The node answered MULTI with `+OK`: requests are queued from now on.
    pub(super) fn is_open(self) -> bool {
        matches!(
            self,
            Transaction::Queued { open: true, .. } | Transaction::Aborted { open: true, .. }
        )
    }

    pub(super) fn has_writes(self) -> bool {
        matches!(self, Transaction::Queued { writes: true, .. })
    }

    pub(super) fn multi(self) -> Option<u64> {
        match self {
            Transaction::None => None,
            Transaction::Queued { multi, .. } | Transaction::Aborted { multi, .. } => Some(multi),
        }
    }

    /// A write went out inside the transaction.
    pub(super) fn with_write(self) -> Transaction {
        match self {
            Transaction::Queued {
                multi,
                open,
                role_change,
                ..
            } => Transaction::Queued {
                multi,
                open,
                writes: true,
                role_change,
            },
            other => other,
        }
    }

    /// A role change (`REPLICAOF`) went out inside the transaction.
    pub(super) fn with_role_change(self) -> Transaction {
        match self {
            Transaction::Queued {
                multi,
                open,
                writes,
                ..
            } => Transaction::Queued {
                multi,
                open,
                writes,
                role_change: true,
            },
            other => other,
        }
    }

    /// Whether the transaction changes the node's role.
    pub(super) fn changes_role(self) -> bool {
        matches!(
            self,
            Transaction::Queued {
                role_change: true,
                ..
            }
        )
    }

    /// The proxy refused a request inside the transaction.
    pub(super) fn aborted(self) -> Transaction {
        match self {
            Transaction::Queued { multi, open, .. } | Transaction::Aborted { multi, open } => {
                Transaction::Aborted { multi, open }
            }
            Transaction::None => Transaction::None,
        }
    }

    /// The node answered MULTI number `n`: `+OK` opens, anything else ends it.
    pub(super) fn on_multi_reply(self, n: u64, accepted: bool) -> Transaction {
        match (self, accepted) {
            (t, _) if t.multi() != Some(n) => t,
            (
                Transaction::Queued {
                    multi,
                    writes,
                    role_change,
                    ..
                },
                true,
            ) => Transaction::Queued {
                multi,
                open: true,
                writes,
                role_change,
            },
            (Transaction::Aborted { multi, .. }, true) => {
                Transaction::Aborted { multi, open: true }
            }
            (_, _) => Transaction::None,
        }
    }
}

/// WATCH on the backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Watch {
    Off,
    /// The node confirmed a WATCH.
    On,
    /// The session moved while WATCH was in force: the watched keys were
    /// left behind, so the next EXEC fails as a WATCH conflict would.
    Broken,
}

/// What the node's frames are on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Stream {
    /// Each frame answers a request (pushes aside).
    Replies,
    /// RESP2 subscribe mode: messages and (un)subscribe confirmations answer
    /// no request.
    PubSub,
    /// After MONITOR: everything is a stream until RESET's reply.
    Monitor,
    /// A replication stream (after SYNC/PSYNC, `_fetch_meta`, `_fetch_file`):
    /// the node's bytes go to the client unframed, to the end.
    Replication,
}

/// The connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Requests are read.
    Open,
    /// No more requests are read (a protocol error, or a session that cannot
    /// be moved); what is owed is still delivered.
    Ending,
    /// Everything owed has been queued: close once it is written.
    Closing,
}

/// Why the session reads no further requests for now.
#[derive(Debug)]
pub(super) enum Stall {
    None,
    /// The Gate said to hold the request at the head of `from_client`.
    Held(Held),
    /// Move the session (to the new master's leasegate, or back home) once
    /// every reply owed by the current backend has arrived.
    HandingOver(Move),
}

/// Who is on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Peer {
    Ordinary,
    /// Authenticated with the control password (until RESET).
    Control,
    /// Connected from `control.allow_from` (kept across RESET).
    Trusted,
    /// A replica (or a tool) reading the replication stream: what it sends
    /// from then on (`REPLCONF ACK`) is answered by nothing.
    Replica,
}

impl Stall {
    /// What the held request waits for.
    pub(super) fn wait(&self) -> &Wait {
        match self {
            Stall::Held(held) => &held.wait,
            _ => &NO_WAIT,
        }
    }
}

impl Peer {
    /// After a control AUTH: trusted peers stay trusted.
    pub(super) fn max_control(self) -> Peer {
        match self {
            Peer::Trusted => Peer::Trusted,
            _ => Peer::Control,
        }
    }
}

/// A request the Gate said to hold; it is still at the head of `from_client`
/// and everything the client sent after it waits behind it.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) head: RequestHead,
    pub(super) class: Class,
    pub(super) special: Special,
    pub(super) wait: Wait,
    /// Bytes the client had sent (from this request on) when it was held:
    /// every write among them arrived before the confirmation it waits for
    /// was requested, so that confirmation covers them all.
    pub(super) arrived: usize,
}

/// The confirmation frames a subscribe-family request is answered with:
/// one for each channel or pattern it names, or, naming none (a bare
/// `UNSUBSCRIBE`), one for each subscription of its kind the session has
/// when its turn comes, and at least one (Redis and Kvrocks alike).
#[derive(Debug, Clone, Copy)]
pub(super) struct Confirmations {
    /// The channels or patterns the request names.
    pub(super) named: u32,
    pub(super) kind: PubSubKind,
    /// Frames it is answered with, once its turn has come.
    expected: Option<u32>,
    /// Frames that came.
    came: u32,
}

impl Confirmations {
    pub(super) fn new(named: u32, kind: PubSubKind) -> Confirmations {
        Confirmations {
            named,
            kind,
            expected: None,
            came: 0,
        }
    }

    /// Its turn has come, the session holding `held` subscriptions of its
    /// kind: how many frames are due.
    pub(super) fn reached(&mut self, held: i64) {
        let bare = u32::try_from(held).unwrap_or(u32::MAX).max(1);
        self.expected = Some(if self.named > 0 { self.named } else { bare });
    }

    /// Whether its turn has come (its confirmations are counted).
    pub(super) fn is_reached(&self) -> bool {
        self.expected.is_some()
    }

    /// Whether no confirmation came yet.
    pub(super) fn none_came(&self) -> bool {
        self.came == 0
    }

    /// One frame came: whether it was the last one due.
    pub(super) fn confirmed(&mut self) -> bool {
        self.came = self.came.saturating_add(1);
        self.is_answered()
    }

    /// Whether all its frames came.
    pub(super) fn is_answered(&self) -> bool {
        self.came >= self.expected.unwrap_or(1)
    }
}
