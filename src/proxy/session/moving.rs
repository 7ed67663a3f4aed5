//! Moving a session to a successor process at an upgrade
//! ([`crate::control::upgrade`]): its two sockets and its state leave this
//! process and go on in the new one, so the client never sees the upgrade.
//!
//! A session moves only between requests: nothing owed by the node, no
//! write in flight, no acknowledgement held and no hand-over under way. A
//! replica's stream moves too, at any byte (the stream passes unframed):
//! the replica sees no reconnection, and its link is listed again in the
//! successor with its first bytes' time ([`super::replica::MovedReplica`]).
//! What it buffered goes
//! with it: requests not yet admitted (a request held by a pause is
//! admitted again by the successor, under the pause the successor took
//! over), replies not yet sent, and the node's bytes not yet framed.
//! Connection state goes too: protocol, transaction and WATCH, subscribe or
//! MONITOR mode, who the client is (the controller's connection stays the
//! controller's), `CLIENT REPLY` mode, and what a failover's hand-over
//! replays.
//!
//! A client waiting for its node that is down ([`super::node_down`]) moves
//! without a node socket ([`Waiting`]): nothing of its waiting requests was
//! read, and the successor waits for the node (or the new master's
//! leasegate) in its place, for `node_lost_wait_ms` again. Before, such
//! clients were closed at the upgrade (a walkthrough saw 150 reset).

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::handover::Replay;
use super::mute::Mute;
use super::replica::MovedReplica;
use super::state::{Lifecycle, Peer, Stall, Stream, Transaction, Watch};
use super::Session;
use crate::proxy::tls::MovedTls;

/// A session's state as it moves.
#[derive(Debug, Serialize, Deserialize)]
pub struct MovedState {
    #[serde(with = "crate::proxy::hex")]
    from_client: Vec<u8>,
    #[serde(with = "crate::proxy::hex")]
    to_backend: Vec<u8>,
    #[serde(with = "crate::proxy::hex")]
    from_backend: Vec<u8>,
    #[serde(with = "crate::proxy::hex")]
    to_client: Vec<u8>,
    resp3: bool,
    stream: Stream,
    subscriptions: i64,
    /// Absent from a predecessor that did not count them: none.
    #[serde(default)]
    patterns: i64,
    shard_subscriptions: i64,
    transaction: Transaction,
    multis: u64,
    watch: Watch,
    peer: Peer,
    handed_over: bool,
    replay: [Option<Vec<u8>>; 4],
    /// The Kvrocks namespace the login led to, once asked; empty: not
    /// known (absent from a predecessor that did not ask: asked at the
    /// next move). Kvrocks has no namespace without a name.
    #[serde(default, with = "crate::proxy::hex")]
    namespace: Vec<u8>,
    /// Absent from a predecessor that did not say: not set.
    #[serde(default)]
    set_in_transaction: bool,
    /// A login not yet asked about (behind a transaction or a stream).
    #[serde(default)]
    login_unplaced: bool,
    mute: Mute,
    /// `CLIENT TRACKING ON` (absent from a predecessor that kept no such
    /// mark).
    #[serde(default)]
    tracking: bool,
    /// A replica's side (absent from a predecessor that moved no replicas).
    #[serde(default)]
    replica: Option<MovedReplica>,
    /// Whether the client has authenticated (absent from a predecessor
    /// that did not follow it: no limits then).
    #[serde(default)]
    login: super::login::Login,
    /// A TLS client's keys (absent for plaintext, and from a predecessor
    /// that moved no TLS sessions).
    #[serde(default)]
    client_tls: Option<MovedTls>,
    /// The node connection's keys, over TLS (`backend.tls`, or another
    /// leasegate's TLS listener after a hand-over).
    #[serde(default)]
    node_tls: Option<MovedTls>,
    /// It moves without a node socket: its node is down and it waits
    /// (absent from a predecessor that moved no waiting clients).
    #[serde(default)]
    waiting: Option<Waiting>,
}

/// A client that moves while it waits for its node that is down: the
/// successor takes up the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Waiting {
    /// It never had a node connection: the successor serves it as a client
    /// that just arrived.
    NewClient,
    /// Its node connection closed between requests: the successor looks
    /// for the node, replays its connection state there and goes on.
    NodeLost,
}

/// A session on its way to the successor: its sockets and its state.
#[derive(Debug)]
pub struct MovedSession {
    pub client: std::net::TcpStream,
    /// `None` for a client that waits for its node ([`Waiting`]).
    pub backend: Option<std::net::TcpStream>,
    pub state: MovedState,
}

impl MovedSession {
    /// A session that waits for its node that is down
    /// ([`Waiting::NodeLost`]), for the successor: its client's socket and
    /// its state; `None` if the socket cannot leave (it is then closed).
    pub(super) fn node_lost<C: super::ClientIo>(
        client: C,
        s: &mut Session,
    ) -> Option<MovedSession> {
        let client = client.into_moved()?;
        let state = s.take_state().with_tls(client.tls, None);
        Some(MovedSession::waiting(
            client.socket,
            state,
            Waiting::NodeLost,
        ))
    }

    /// A client that waits for its node: its socket and state, no node
    /// socket.
    pub(super) fn waiting(
        client: std::net::TcpStream,
        mut state: MovedState,
        waiting: Waiting,
    ) -> MovedSession {
        state.waiting = Some(waiting);
        MovedSession {
            client,
            backend: None,
            state,
        }
    }
}

impl Session {
    /// Whether the session may move now (see the module documentation).
    pub(super) fn movable(&self) -> bool {
        self.lifecycle == Lifecycle::Open
            && self.owed.is_empty()
            && matches!(self.stall, Stall::None | Stall::Held(_))
            && self.unconfirmed.is_none()
            && self.ack_hold.is_none()
    }

    /// The session's state, taken out of it (the caller has checked
    /// [`Session::movable`]); a held request stays in `from_client`.
    pub(super) fn take_state(&mut self) -> MovedState {
        // A held request gives its place in the pause buffer up here; the
        // successor takes one of its own.
        self.stall = Stall::None;
        let replay = std::mem::take(&mut self.replay);
        let bytes = |b: Option<Bytes>| b.map(|b| b.to_vec());
        MovedState {
            from_client: std::mem::take(&mut self.from_client).to_vec(),
            to_backend: std::mem::take(&mut self.to_backend).to_vec(),
            from_backend: std::mem::take(&mut self.from_backend).to_vec(),
            to_client: std::mem::take(&mut self.to_client).to_vec(),
            resp3: self.resp3,
            stream: self.stream,
            subscriptions: self.subscriptions,
            patterns: self.patterns,
            shard_subscriptions: self.shard_subscriptions,
            transaction: self.transaction,
            multis: self.multis,
            watch: self.watch,
            peer: self.peer,
            handed_over: self.handed_over,
            replay: [
                bytes(replay.auth),
                bytes(replay.hello),
                bytes(replay.select),
                bytes(replay.setname),
            ],
            namespace: replay.namespace.map(|n| n.to_vec()).unwrap_or_default(),
            set_in_transaction: replay.set_in_transaction,
            login_unplaced: self.login_unplaced,
            mute: self.mute,
            tracking: self.tracking,
            login: self.login,
            replica: self.replica.take_moved(),
            client_tls: None,
            node_tls: None,
            waiting: None,
        }
    }

    /// The state of a session that served nothing yet.
    pub(super) fn fresh_state(mut self) -> MovedState {
        self.take_state()
    }

    /// Puts a moved session's state in place (a fresh session of this
    /// process, before its first turn).
    pub(super) fn put_state(&mut self, state: MovedState) {
        let buf = |v: Vec<u8>| BytesMut::from(&v[..]);
        self.from_client = buf(state.from_client);
        self.to_backend = buf(state.to_backend);
        self.from_backend = buf(state.from_backend);
        self.to_client = buf(state.to_client);
        self.resp3 = state.resp3;
        self.stream = state.stream;
        // Nothing is owed at a move: a MONITOR's stream is all there is.
        self.monitoring = state.stream == Stream::Monitor;
        self.login_unplaced = state.login_unplaced;
        self.subscriptions = state.subscriptions;
        self.patterns = state.patterns;
        self.shard_subscriptions = state.shard_subscriptions;
        self.transaction = state.transaction;
        self.multis = state.multis;
        self.watch = state.watch;
        self.peer = state.peer;
        self.handed_over = state.handed_over;
        let [auth, hello, select, setname] = state.replay.map(|b| b.map(Bytes::from));
        self.replay = Replay {
            auth,
            hello,
            select,
            setname,
            namespace: (!state.namespace.is_empty()).then(|| Bytes::from(state.namespace)),
            set_in_transaction: state.set_in_transaction,
        };
        self.mute = state.mute;
        self.tracking = state.tracking;
        self.put_login(state.login);
        if let Some(replica) = state.replica {
            self.put_replica(replica);
        }
    }
}

impl MovedState {
    /// About how many bytes it takes in a message: its buffers go as hex
    /// (two a byte), the replayed requests as JSON numbers (up to four a
    /// byte: a `CLIENT SETNAME` of hundreds of MB is allowed), and the rest
    /// is small.
    pub fn encoded_len(&self) -> usize {
        let buffers = self.from_client.len()
            + self.to_backend.len()
            + self.from_backend.len()
            + self.to_client.len()
            + self.namespace.len();
        let replayed: usize = self.replay.iter().flatten().map(Vec::len).sum();
        buffers
            .saturating_mul(2)
            .saturating_add(replayed.saturating_mul(4))
            .saturating_add(64 * 1024)
    }

    /// With the keys of its TLS connections, the client's and the node's.
    pub(super) fn with_tls(
        mut self,
        client: Option<MovedTls>,
        node: Option<MovedTls>,
    ) -> MovedState {
        self.client_tls = client;
        self.node_tls = node;
        self
    }

    /// Whether it waits for its node, and so came without a node socket.
    pub fn waiting(&self) -> Option<Waiting> {
        self.waiting
    }

    /// The keys of its TLS connections, the client's and the node's,
    /// taken out.
    pub(super) fn take_tls(&mut self) -> (Option<MovedTls>, Option<MovedTls>) {
        (self.client_tls.take(), self.node_tls.take())
    }
}

/// What the successor says it goes on with, beyond plain sessions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Takes {
    /// TLS sessions ([`MovedTls`]).
    pub tls: bool,
    /// Clients waiting for their node ([`Waiting`]).
    pub waiting: bool,
}

/// Where sessions go at an upgrade: set once the successor took over, and
/// read by every session at its next turn ([`Mover::is_moving`]).
#[derive(Debug, Default)]
pub struct Mover {
    moving: std::sync::atomic::AtomicBool,
    /// The successor goes on with TLS sessions ([`MovedTls`]).
    takes_tls: std::sync::atomic::AtomicBool,
    /// The successor takes up the wait of clients whose node is down
    /// ([`Waiting`]).
    takes_waiting: std::sync::atomic::AtomicBool,
    to: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<MovedSession>>>,
}

impl Mover {
    /// Sessions move to `to` from now on (they are told by the drain
    /// signal); TLS sessions too if `takes.tls` (a successor that says so),
    /// or else they are closed between two requests; clients waiting for
    /// their node too if `takes.waiting`, or else they are closed.
    pub fn start(&self, to: tokio::sync::mpsc::UnboundedSender<MovedSession>, takes: Takes) {
        if let Ok(mut slot) = self.to.lock() {
            *slot = Some(to);
        }
        self.takes_tls
            .store(takes.tls, std::sync::atomic::Ordering::Release);
        self.takes_waiting
            .store(takes.waiting, std::sync::atomic::Ordering::Release);
        self.moving
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether sessions move (rather than close) when they drain.
    #[inline]
    pub fn is_moving(&self) -> bool {
        self.moving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether TLS sessions move too.
    pub fn takes_tls(&self) -> bool {
        self.takes_tls.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a client waiting for its node over a `C` connection moves
    /// now (rather than being closed): the drain began, and the successor
    /// takes up such waits (and TLS clients, for one over TLS).
    pub fn takes_waiting<C: super::ClientIo>(&self) -> bool {
        self.is_moving()
            && self
                .takes_waiting
                .load(std::sync::atomic::Ordering::Acquire)
            && (!C::TLS || self.takes_tls())
    }

    /// No more sessions come: the channel closes once those sent are taken.
    pub fn close(&self) {
        if let Ok(mut slot) = self.to.lock() {
            slot.take();
        }
    }

    /// Sends a session on; `false` when there is no one to take it (it is
    /// then closed, as at a drain).
    pub fn send(&self, moved: MovedSession) -> bool {
        let Ok(slot) = self.to.lock() else {
            return false;
        };
        slot.as_ref().is_some_and(|to| to.send(moved).is_ok())
    }
}
