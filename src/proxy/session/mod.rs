//! A session: one client connection paired with one backend connection.
//!
//! This is the hot path, together with [`crate::guard::gate`]. Pairing connections
//! 1:1 is what makes the proxy transparent: SELECT, AUTH, HELLO 3,
//! MULTI/EXEC/WATCH, SUBSCRIBE, blocking commands and MONITOR keep their
//! per-connection meaning on the node.
//!
//! One task drives both directions without blocking on either:
//!
//! * client → backend: read what is available, frame every complete request,
//!   classify it, ask the Gate, and forward the admitted requests' original
//!   bytes in one write;
//! * backend → client: frame replies and write them back in batches.
//!
//! The `owed` queue holds, in request order, what the client is owed: a
//! backend reply, or a local reply (a rejection) that must wait until every
//! earlier backend reply has been written. RESP3 push frames and RESP2 pub/sub
//! messages answer no request and take no place in it.
//!
//! **State follows the node's replies.** What the session believes about the
//! node's connection is a handful of enums with single transitions
//! ([`Transaction`], [`Watch`], [`Stall`], [`Peer`]). Whatever depends on a
//! command taking effect changes when the node's reply says it did: a
//! transaction is open once MULTI got `+OK` (until then writes are judged as
//! writes, the safe reading should MULTI fail), WATCH is in force once it got
//! `+OK`, and role changes and node ids seen passing are applied by the Gate
//! on `+OK`. A write's success reply is itself checked: it reaches the client
//! only if the lease held from the write's admission to the reply.
//!
//! **Held acknowledgements.** A write forwarded before its mastership
//! confirmation (`verify.hold: acknowledgement`) carries its confirmation
//! round in its [`WriteTicket`]. Its reply, and every reply behind it, stays
//! in the node buffer until that round (or a later one) has finished; a
//! refusal then turns a success into the unknown-outcome error. Replies
//! kept back count against the client's output bound.
//!
//! **Backpressure.** A client that does not read its replies stops being
//! read once its unsent replies (from the node and local ones) pass
//! `limits.max_client_output_bytes`; a held request stops reading too, so
//! what the proxy keeps per connection is bounded.
//!
//! **Idle clients.** With `limits.client_idle_timeout_ms`, a client that
//! waits for nothing and has neither completed a request nor read reply
//! bytes for that long is closed ([`idle`]).
//!
//! **The client's end.** After the client's EOF (a half-close, or a client
//! gone) the replies it is owed are still delivered, then the connection
//! closes; a blocking command's reply is not waited for, as Redis drops a
//! client at its EOF: closing the node connection gives the pop up there.
//!
//! **Replica acknowledgements.** With `durability.min_replicas`, a batch of
//! writes is followed by `WAIT`, and the replies from its first write
//! success on stay unsent until `WAIT` answers ([`acks`]).
//!
//! **Reply modes.** `CLIENT REPLY OFF|SKIP` reaches the node as `ON`: it
//! answers every request, and the session drops what the client asked not
//! to be sent, in request order ([`mute`]).
//!
//! A request the Gate holds stays at the head of the client buffer and stops
//! only this connection; when its wait ends it is asked about again. A
//! hand-over swaps the backend connection (to the new master's leasegate, or
//! back home) once every reply owed by the old one has arrived, replaying
//! AUTH, HELLO, SELECT and CLIENT SETNAME first.

mod acks;
mod arrival;
mod blocking;
mod context;
mod driver;
mod handover;
mod idle;
pub mod io;
mod login;
mod modes;
mod moving;
mod mute;
mod node_down;
pub mod node_search;
mod reading;
mod replica;
mod replies;
mod requeue;
mod restore;
mod role_change;
mod state;
mod step;
mod stopping;
mod subscriptions;
mod tagged;
#[cfg(test)]
mod tests;
pub mod trim;
mod woken;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::guard::gate::{Gate, Wait};
use crate::guard::verify::Ticket;
use crate::proxy::backend::NodeConn;
use crate::proxy::tls::ResumedTls;
use crate::resp::reply::ReplyFramer;
use crate::resp::request::{Limits, RequestFramer};
pub use arrival::{refuse, serve_client};
pub use context::SessionContext;
use driver::Driver;
use handover::Replay;
pub use io::ClientIo;
use node_down::{find_node, while_down, while_node_is_down, Left};
#[cfg(test)]
use reading::DISCARD;
use state::{
    Expect, Held, Lifecycle, Owed, Peer, Stall, Stream, Transaction, Watch, WriteTicket, WritesOut,
};

/// Stop reading from the client while this much is queued for the backend.
const HIGH_WATER: usize = 4 * 1024 * 1024;

/// The most requests a session keeps awaiting the node's replies before
/// it stops reading more: each costs an entry in `owed` (tens of bytes)
/// that no byte bound counted. Behind a `BLPOP` that never returns, a
/// client's pipelined `PING`s grew the proxy by ~55 MiB a connection (an
/// attack pass: 20 connections, 1.1 GB); a pipeline this deep gains
/// nothing over a shallower one.
const MAX_OWED: usize = 16 * 1024;

/// Stands in for the wait of a session that holds nothing (that source is not polled).
const NO_WAIT: Wait = Wait::Verification(Ticket::NONE);

pub use moving::{MovedSession, MovedState, Mover, Takes, Waiting};

/// Per-connection protocol state, independent of the sockets.
struct Session {
    from_client: BytesMut,
    /// The first `run` bytes of `from_client` are requests already admitted
    /// and forwarded as they came, waiting to be copied to `to_backend` in
    /// one go ([`Session::forward_run`]); zero outside `on_client_data`.
    run: usize,
    to_backend: BytesMut,
    from_backend: BytesMut,
    to_client: BytesMut,
    requests: RequestFramer,
    replies: ReplyFramer,
    owed: VecDeque<Owed>,
    /// Bytes of the local replies in `owed` (not yet in `to_client`).
    owed_local: usize,
    resp3: bool,
    /// What the node's frames are: replies, or a pub/sub or MONITOR stream.
    stream: Stream,
    /// The subscription counts the node reported (RESP2 subscribe mode).
    subscriptions: i64,
    /// Of `subscriptions`, the patterns (a bare `PUNSUBSCRIBE` is
    /// answered once for each, a bare `UNSUBSCRIBE` once for each of the rest).
    patterns: i64,
    shard_subscriptions: i64,
    transaction: Transaction,
    /// MULTIs sent so far (numbers them, so a late reply finds its own).
    multis: u64,
    watch: Watch,
    peer: Peer,
    stall: Stall,
    /// Bytes at the head of the unhandled requests that arrived before a mastership
    /// confirmation was requested (pipelined writes share it).
    confirmed: usize,
    /// The confirmation round the reply at the head of `from_backend` waits
    /// for (a write forwarded unconfirmed): replies are not framed further
    /// until it is settled.
    unconfirmed: Option<Ticket>,
    /// Counted writes not yet answered.
    writes_out: WritesOut,
    /// Moved to the new master's leasegate, which judges requests from now on.
    handed_over: bool,
    /// Connection state replayed on the new connection at a hand-over.
    replay: Replay,
    /// Whether the client has authenticated where the node requires it.
    login: login::Login,
    /// The decision point every request is put to.
    gate: Arc<Gate>,
    /// `limits.max_client_output_bytes`.
    max_output: usize,
    lifecycle: Lifecycle,
    /// The client as a possible replica (cold).
    replica: replica::ReplicaSide,
    /// `CLIENT REPLY`: which replies the client is not sent.
    mute: mute::Mute,
    /// The open transaction, kept to queue it again at a new master.
    requeue: requeue::Requeue,
    /// `CLIENT TRACKING ON` was sent (and not turned off since): the
    /// invalidations come from this node connection only, so the session
    /// does not go on over another one (it closes, as it would directly).
    tracking: bool,
    /// Writes forwarded since the last `WAIT` ([`acks`]).
    unreplicated: bool,
    /// MONITOR was forwarded, and no RESET since: from its reply on the
    /// node's bytes are a stream, so nothing but RESET and QUIT is sent
    /// there (a request's reply would be taken for a monitor line, and a
    /// write's acknowledgement never checked against the lease).
    monitoring: bool,
    /// A login (AUTH, HELLO with AUTH) was forwarded since the node was
    /// last asked which Kvrocks namespace the connection is in
    /// ([`restore`]): asked at the end of the batch.
    login_unplaced: bool,
    /// Blocking writes (BLPOP & co.) forwarded and not yet answered, as a
    /// hint for the driver (one compare a turn; [`Session::blocked`] is the
    /// truth where it acts).
    blocking_out: u32,
    /// A request waits at the head of the unhandled requests, not read
    /// past meanwhile ([`Session::admit`]): a write, for the blocking
    /// command before it to be answered ([`blocking`]); on Kvrocks, any
    /// request but the subscribe commands, for the (un)subscribe before it
    /// to be confirmed ([`modes`]); on Kvrocks, any request, for a `WAIT`
    /// or blocking command before it to be answered
    /// ([`Session::waits_on_kvrocks`]).
    behind_block: bool,
    /// Subscribe-family requests forwarded and not yet answered, as a hint
    /// (one compare a request; the owed queue is the truth where it acts:
    /// [`modes`]).
    pubsub_owed: u32,
    /// `WAIT`s sent and not yet answered.
    acks_owed: u32,
    /// Replies held for the next `WAIT`'s answer.
    ack_hold: Option<acks::AckHold>,
}

/// Runs one client connection to completion ([`Driver::run`]).
pub async fn serve<C: ClientIo>(
    client: C,
    backend: NodeConn,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    serve_on(client, backend, false, ctx, shutdown).await
}

/// Serves a session that starts handed over: its node cannot be reached
/// and was demoted, so `backend` is the new master's leasegate
/// (`pause.on_demote: forward`). It returns home when the node is master
/// again, as a session handed over during a failover does.
pub async fn serve_handed_over<C: ClientIo>(
    client: C,
    new_master: NodeConn,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    serve_on(client, new_master, true, ctx, shutdown).await
}

async fn serve_on<C: ClientIo>(
    client: C,
    backend: NodeConn,
    handed_over: bool,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    let mut s = Session::new(ctx.limits, Arc::clone(&ctx.gate), ctx.max_client_output);
    s.handed_over = handed_over;
    let peer = client.peer_ip();
    if peer.is_some_and(|ip| ctx.gate.trusts_peer(ip)) {
        s.peer = Peer::Trusted;
    }
    s.login_starts(
        ctx.auth_required
            && s.peer != Peer::Trusted
            && !ctx.gate.role().node.lets_in_without_login(),
    );
    s.replica.peer = peer;
    let moved = Driver::new(client, backend, &ctx, &shutdown)
        .run(s, &ctx)
        .await;
    if let Some(moved) = moved {
        if !ctx.mover.send(moved) {
            tracing::warn!("a session could not move to the successor: closed");
        }
    }
}

/// Serves a session moved here from the predecessor process at an
/// upgrade, from where it stood there (a TLS client's over its moved keys);
/// a client that waited there for its node that is down waits here
/// ([`Waiting`]).
pub async fn serve_moved(
    mut moved: MovedSession,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    let (client, backend) = match (adopt(moved.client), moved.backend.map(adopt).transpose()) {
        (Ok(c), Ok(b)) => (c, b),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "a moved session's sockets cannot be served here: closed");
            return;
        }
    };
    let (client_tls, node_tls) = moved.state.take_tls();
    let backend = match (backend, node_tls) {
        (None, _) => None,
        (Some(backend), None) => Some(NodeConn::Plain(backend)),
        (Some(backend), Some(keys)) => match ResumedTls::new(backend, &keys) {
            Ok(tls) => Some(NodeConn::Resumed(Box::new(tls))),
            Err(e) => {
                tracing::warn!(error = %e, "a moved node connection's TLS keys cannot be used: closed");
                return;
            }
        },
    };
    match client_tls {
        None => serve_moved_on(client, backend, moved.state, ctx, shutdown).await,
        Some(keys) => match ResumedTls::new(client, &keys) {
            Ok(client) => serve_moved_on(client, backend, moved.state, ctx, shutdown).await,
            Err(e) => {
                tracing::warn!(error = %e, "a moved TLS session's keys cannot be used: closed")
            }
        },
    }
}

async fn serve_moved_on<C: ClientIo>(
    mut client: C,
    backend: Option<NodeConn>,
    state: MovedState,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    if state.waiting() == Some(Waiting::NewClient) {
        return serve_client(client, ctx, shutdown).await;
    }
    let mut s = Session::new(ctx.limits, Arc::clone(&ctx.gate), ctx.max_client_output);
    // The peer first: a replica's link is listed again under it.
    s.replica.peer = client.peer_ip();
    s.put_state(state);
    let backend = match backend {
        Some(backend) => backend,
        // Its node is down: it waits here as it did there.
        None => {
            match node_down::outlive(&mut client, &s, &ctx, &shutdown).await {
                node_down::Outlived::Found(stream, away) => {
                    s.attach(away);
                    stream
                }
                node_down::Outlived::Moving => {
                    let moved = MovedSession::node_lost(client, &mut s);
                    if !moved.is_some_and(|moved| ctx.mover.send(moved)) {
                        tracing::warn!("a session waiting for its node could not move to the successor: closed");
                    }
                    return;
                }
                node_down::Outlived::Ended => return,
            }
        }
    };
    // What came buffered: the node's bytes first (replies keep their
    // order), then the requests, which this process's Gate now judges.
    if !s.from_backend.is_empty() && s.on_backend_data().is_err() {
        return;
    }
    s.on_client_data();
    let mut driver = Driver::new(client, backend, &ctx, &shutdown);
    driver.moved_in();
    let moved = driver.run(s, &ctx).await;
    if let Some(moved) = moved {
        if !ctx.mover.send(moved) {
            tracing::warn!("a session could not move to the successor: closed");
        }
    }
}

/// A socket from the predecessor, on this thread's poller.
fn adopt(socket: std::net::TcpStream) -> std::io::Result<TcpStream> {
    socket.set_nonblocking(true)?;
    TcpStream::from_std(socket)
}

impl Session {
    /// Nothing buffered either way, nothing owed, nothing held: the
    /// buffers may be given back ([`trim`]).
    fn is_quiet(&self) -> bool {
        self.from_client.is_empty()
            && self.to_backend.is_empty()
            && self.from_backend.is_empty()
            && self.to_client.is_empty()
            && self.owed.is_empty()
            && matches!(self.stall, Stall::None)
    }

    /// Node replies kept back for a confirmation: they count against the
    /// client's output bound like replies already queued.
    #[inline]
    fn unconfirmed_bytes(&self) -> usize {
        if self.unconfirmed.is_some() {
            self.from_backend.len()
        } else {
            0
        }
    }

    /// Gives the (empty) buffers' memory back.
    fn drop_buffers(&mut self) {
        self.from_client = BytesMut::new();
        self.to_backend = BytesMut::new();
        self.from_backend = BytesMut::new();
        self.to_client = BytesMut::new();
        // Empty too (the session is quiet), however deep its last pipeline.
        self.owed = VecDeque::new();
    }

    fn new(limits: Limits, gate: Arc<Gate>, max_output: usize) -> Session {
        Session {
            // Allocated when first needed (`reserve`, or the first reply).
            from_client: BytesMut::new(),
            run: 0,
            to_backend: BytesMut::new(),
            from_backend: BytesMut::new(),
            to_client: BytesMut::new(),
            requests: RequestFramer::new(limits),
            replies: ReplyFramer::new(),
            owed: VecDeque::new(),
            owed_local: 0,
            resp3: false,
            stream: Stream::Replies,
            subscriptions: 0,
            patterns: 0,
            shard_subscriptions: 0,
            transaction: Transaction::None,
            multis: 0,
            watch: Watch::Off,
            peer: Peer::Ordinary,
            stall: Stall::None,
            confirmed: 0,
            unconfirmed: None,
            writes_out: WritesOut::default(),
            handed_over: false,
            replay: Replay::default(),
            login: login::Login::default(),
            gate,
            max_output,
            lifecycle: Lifecycle::Open,
            replica: replica::ReplicaSide::default(),
            mute: mute::Mute::default(),
            requeue: requeue::Requeue::default(),
            tracking: false,
            unreplicated: false,
            login_unplaced: false,
            monitoring: false,
            blocking_out: 0,
            behind_block: false,
            pubsub_owed: 0,
            acks_owed: 0,
            ack_hold: None,
        }
    }

    /// Whether the session has nothing left to do: no more requests will
    /// come (`client_eof`, or `draining` after SIGTERM) and everything owed
    /// has been written, save, once the client is gone, a blocking
    /// command's reply (see the module documentation).
    fn finished(&self, client_eof: bool, draining: bool, backend_eof: bool) -> bool {
        // Replies held for a `WAIT` the node will never answer are not sent.
        let written = self.client_bytes().is_empty()
            && self.unconfirmed.is_none()
            && (backend_eof || !self.holds_for_replicas());
        if self.lifecycle == Lifecycle::Closing || backend_eof {
            return written;
        }
        (client_eof || draining)
            && written
            && matches!(self.stall, Stall::None)
            && self.to_backend.is_empty()
            && (self.awaits_nothing() || (client_eof && self.blocked()))
    }

    /// Whether the first backend reply owed is a blocking command's (BLPOP
    /// and the like, `XREAD ... BLOCK`): every reply after it waits behind it.
    pub(super) fn blocked(&self) -> bool {
        self.owed
            .iter()
            .find(|o| matches!(o, Owed::Reply(_)))
            .is_some_and(Owed::is_blocking)
    }

    /// Whether the connection waits on the client alone: no reply owed by
    /// the node, nothing held, and no subscriber, MONITOR or replication
    /// stream. Only such a client can be idle.
    fn waits_on_client_only(&self) -> bool {
        self.stream == Stream::Replies
            && self.peer != Peer::Replica
            && matches!(self.stall, Stall::None)
            && self.to_backend.is_empty()
            && self.awaits_nothing()
    }

    /// Whether to read more requests from the client: not while one is
    /// held or the session is moving (what it sent stays in its socket), nor
    /// while its unsent replies are over the bound (backpressure: a client
    /// that does not read cannot grow the proxy), nor while the node is slow
    /// to take what was forwarded or owes [`MAX_OWED`] replies.
    #[inline]
    fn wants_requests(&self) -> bool {
        self.lifecycle == Lifecycle::Open
            && matches!(self.stall, Stall::None)
            && self.to_backend.len() < HIGH_WATER
            && self.owed.len() < MAX_OWED
            && self.to_client.len() + self.owed_local < self.max_output
            && !self.behind_block
    }

    /// The client is not read for the replies it is owed ([`MAX_OWED`]),
    /// the first of them a blocking command's, which may never come.
    fn unread_behind_a_block(&self) -> bool {
        (self.owed.len() >= MAX_OWED || self.behind_block) && self.blocked()
    }

    /// No backend reply is owed (streams such as pub/sub and MONITOR owe none).
    fn awaits_nothing(&self) -> bool {
        !self.owed.iter().any(|o| matches!(o, Owed::Reply(_)))
    }

    /// Queues a local reply in the request's place.
    fn owe_local(&mut self, reply: Bytes) {
        self.owed_local += reply.len();
        self.owed.push_back(Owed::Local(reply));
    }

    /// Takes `len` bytes of handled request off the client buffer.
    #[inline]
    fn consume(&mut self, len: usize) {
        self.from_client.advance(len);
        self.confirmed = self.confirmed.saturating_sub(len);
    }

    /// Whether a write of the session is in flight (counted).
    pub(super) fn has_writes_out(&self) -> bool {
        self.writes_out.any()
    }

    /// Whether the session holds a request for a pause (not for a verification).
    fn held_by_pause(&self) -> bool {
        matches!(
            self.stall,
            Stall::Held(Held {
                wait: Wait::Pause(_),
                ..
            })
        )
    }

    /// EXEC's reply when a WATCH failed.
    fn null_reply(&self) -> Bytes {
        Bytes::from_static(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.writes_out.abandon(&self.gate);
        for owed in &self.owed {
            // A pop whose reply never came may still have taken place
            // (the node answered as the connection closed): the failover
            // hears of it as it would of the reply.
            if let Owed::Reply(Expect::Write(WriteTicket { blocking: true, .. })) = owed {
                self.gate.role().blocking_write_completed();
            }
        }
    }
}
