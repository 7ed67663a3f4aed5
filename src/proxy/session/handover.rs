//! Moving a session to the new master's leasegate (`pause.on_demote:
//! forward`) or back home: once the old backend owes nothing, connect (or
//! take the connection opened ahead while the pause held), replay the
//! accepted AUTH/HELLO/SELECT/SETNAME, and go on with the held request.

use std::sync::Arc;

use bytes::Bytes;

use crate::proxy::backend::{BackendError, NodeConn, NodeTls, PeerTls};
use tracing::{debug, warn};

use crate::command::{Class, Special};
use crate::guard::gate::Verdict;
use crate::resp::encode;
use crate::resp::reply::ReplyFramer;
use crate::resp::request::RequestHead;

use super::state::{Lifecycle, Owed, Stall, Stream, Watch};

/// How long a hand-over asks again a new master's leasegate that refuses
/// the connection (restarting), and how often.
const PEER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
const PEER_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
use super::{Session, SessionContext};

const CANNOT_MOVE: &[u8] = b"-ERR leasegate: this node was demoted during a failover and this connection cannot be moved; reconnect\r\n";

/// A connection opened ahead of a hand-over, while a failover pauses
/// writes (its TLS handshake too, for a TLS client's session).
pub(super) enum Preconnect {
    Opening(
        Arc<str>,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<NodeConn, BackendError>> + Send>>,
    ),
    Open(Arc<str>, NodeConn),
    /// The hand-over will connect (and report) itself.
    Failed,
}

impl Preconnect {
    /// A failover is under way and the session holds a paused write: open
    /// the connection to the likely new master now, so the hand-over after
    /// the switch costs no connect. Dropped when released without a move.
    /// (`C`: the client's connection, which decides whether the new
    /// connection is TLS: [`SessionContext::peer_tls`].)
    pub(super) fn plan<C: super::ClientIo>(
        this: &mut Option<Preconnect>,
        s: &Session,
        ctx: &SessionContext,
    ) {
        if this.is_none() && s.held_by_pause() {
            if let Some(to) = ctx.gate.role().handover_target() {
                let (addr, timeout) = (Arc::clone(&to), ctx.connect_timeout);
                let peer = ctx.peer_tls::<C>();
                let connecting = async move {
                    crate::proxy::backend::connect_peer(&addr, peer.as_deref(), timeout)
                        .await
                        .1
                };
                *this = Some(Preconnect::Opening(to, Box::pin(connecting)));
            }
        } else if matches!(s.stall, Stall::None) {
            *this = None;
        }
    }

    /// The connection attempt finished.
    pub(super) fn opened(this: &mut Option<Preconnect>, result: Result<NodeConn, BackendError>) {
        *this = match (this.take(), result) {
            (Some(Preconnect::Opening(to, _)), Ok(stream)) => Some(Preconnect::Open(to, stream)),
            // The hand-over will connect again (and report a failure).
            (Some(Preconnect::Opening(..)), Err(_)) => Some(Preconnect::Failed),
            (other, _) => other,
        };
    }

    /// The open connection, if it goes where the session moves.
    pub(super) fn take_for(this: &mut Option<Preconnect>, target: &Move) -> Option<NodeConn> {
        match (target, this.take()) {
            (Move::Away(addr), Some(Preconnect::Open(to, stream))) if to == *addr => Some(stream),
            _ => None,
        }
    }
}

/// Where a session moves at a hand-over.
#[derive(Debug, Clone)]
pub(super) enum Move {
    /// To the new master's leasegate at this address.
    Away(Arc<str>),
    /// Back to this proxy's own node (it is master again).
    Home,
}

/// What is replayed on the new connection at a hand-over: the last AUTH,
/// HELLO, SELECT and CLIENT SETNAME the node accepted, as the client sent them.
#[derive(Debug, Default)]
pub(super) struct Replay {
    pub(super) auth: Option<Bytes>,
    pub(super) hello: Option<Bytes>,
    pub(super) select: Option<Bytes>,
    pub(super) setname: Option<Bytes>,
    /// Not replayed: the Kvrocks namespace the login put the session in,
    /// once asked (after the login, else at its first move, of the node
    /// it leaves), which the replayed login must lead to again
    /// ([`super::restore`]). Forgotten at each new login.
    pub(super) namespace: Option<Bytes>,
    /// An AUTH, SELECT or CLIENT SETNAME was queued in a transaction:
    /// whether EXEC ran it or not (DISCARD, an aborted EXEC), the requests
    /// above may not be the connection's state, and the session cannot go
    /// on over another connection (it ends there, as a subscriber does).
    /// Replayed as if taken, a SELECT inside a DISCARDed transaction put a
    /// moved session's writes in another database, and an AUTH another
    /// user's rights on them (an attack pass). Forgotten at RESET.
    pub(super) set_in_transaction: bool,
}

/// Which connection state a request sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplaySlot {
    Auth,
    Hello,
    Select,
    SetName,
}

impl ReplaySlot {
    #[inline]
    pub(super) fn of(special: Special) -> Option<ReplaySlot> {
        match special {
            Special::Auth => Some(ReplaySlot::Auth),
            Special::Hello => Some(ReplaySlot::Hello),
            Special::Select => Some(ReplaySlot::Select),
            Special::SetName => Some(ReplaySlot::SetName),
            _ => None,
        }
    }
}

impl Replay {
    /// An accepted HELLO, replayed as its protocol version alone. What its
    /// `AUTH` and `SETNAME` set outlasts a later HELLO without them (on the
    /// node as in Redis), so they are remembered as `AUTH` and `CLIENT
    /// SETNAME`: replaying only the last HELLO, a bare `HELLO 3` after
    /// `HELLO 3 AUTH ...`, lost the authentication at a hand-over; and
    /// replayed whole after a later `AUTH` (replayed first), its own login
    /// undid that one's (a review: another Kvrocks namespace).
    pub(super) fn hello_accepted(&mut self, request: Bytes) {
        let inline = request.first() != Some(&b'*');
        let args = crate::resp::request::arguments(&request, inline);
        // HELLO <protover> [AUTH <username> <password>] [SETNAME <name>]
        let mut i = 2;
        while i < args.len() {
            let option = &args[i];
            if option.eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
                self.auth = Some(auth_request(&args[i + 1], &args[i + 2]));
                self.namespace = None;
                i += 3;
            } else if option.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
                self.setname = Some(encode::request(&[b"CLIENT", b"SETNAME", &args[i + 1]]));
                i += 2;
            } else {
                i += 1;
            }
        }
        self.hello = Some(match args.get(1) {
            Some(protover) => encode::request(&[b"HELLO", protover]),
            None => request,
        });
    }

    /// Where an accepted request of `slot` is kept (a login forgets the
    /// namespace the last one led to).
    pub(super) fn slot(&mut self, slot: ReplaySlot) -> &mut Option<Bytes> {
        match slot {
            ReplaySlot::Auth => {
                self.namespace = None;
                &mut self.auth
            }
            ReplaySlot::Hello => &mut self.hello,
            ReplaySlot::Select => &mut self.select,
            ReplaySlot::SetName => &mut self.setname,
        }
    }
}

/// The `AUTH` that does what `HELLO ... AUTH <user> <password>` did. The
/// default user's is `AUTH <password>`: the same on Redis, and the only
/// form Kvrocks takes (its `AUTH` has one argument; redis-py 8.2's default
/// login, `HELLO 3 AUTH default <password>`, replayed as `AUTH default
/// <password>`, was refused at every hand-over: walkthroughs 22 and 23).
fn auth_request(user: &[u8], password: &[u8]) -> Bytes {
    if user == b"default" {
        encode::request(&[b"AUTH", password])
    } else {
        encode::request(&[b"AUTH", user, password])
    }
}

/// Moving a session to the new master's leasegate (`pause.on_demote: forward`).
impl Session {
    /// Where to move, once nothing is owed by the current backend any more.
    pub(super) fn handover_ready(&mut self) -> Option<Move> {
        if !matches!(self.stall, Stall::HandingOver(_)) {
            return None;
        }
        if self.stream != Stream::Replies
            || self.tracking
            || self.replay.set_in_transaction
            || self.owed.iter().any(Owed::is_blocking)
        {
            // A subscriber, a tracking client, a blocked client or one
            // whose state a transaction set cannot be moved transparently.
            self.owe_local(Bytes::from_static(CANNOT_MOVE));
            self.owed.push_back(Owed::Close);
            self.stall = Stall::None;
            self.lifecycle = Lifecycle::Ending;
            self.settle();
            return None;
        }
        if !self.to_backend.is_empty() || !self.awaits_nothing() {
            return None;
        }
        if self.transaction.is_open() {
            // The node confirmed a MULTI sent before the move was decided:
            // the request is queued there (see `in_transaction`).
            self.stall = Stall::None;
            self.on_client_data();
            return None;
        }
        match std::mem::replace(&mut self.stall, Stall::None) {
            Stall::HandingOver(target) => Some(target),
            other => {
                self.stall = other;
                None
            }
        }
    }

    /// Connects to where the session moves and replays the connection
    /// state. On failure the held request is refused and the session stays
    /// where it is.
    pub(super) async fn hand_over(
        &mut self,
        target: Move,
        ready: Option<NodeConn>,
        home: (&str, Option<&NodeTls>),
        peer: Option<&PeerTls>,
        (timeout, node_lost_patience): (std::time::Duration, std::time::Duration),
    ) -> Option<NodeConn> {
        let (addr, connected) = match (ready, &target) {
            (Some(stream), Move::Away(addr)) => (addr.to_string(), Ok(stream)),
            // Another leasegate: on its `listen`, or its TLS listener.
            // Asked again for a moment: one being restarted by its
            // supervisor refuses connections for a few hundred ms, and
            // every write refused meanwhile was an error (walkthrough 11:
            // 790 `-TRYAGAIN` in under a second).
            (None, Move::Away(addr)) => {
                let give_up = std::time::Instant::now() + PEER_PATIENCE;
                loop {
                    let (at, connected) =
                        crate::proxy::backend::connect_peer(addr, peer, timeout).await;
                    if connected.is_ok() || std::time::Instant::now() + PEER_RETRY >= give_up {
                        break (at, connected);
                    }
                    tokio::time::sleep(PEER_RETRY).await;
                }
            }
            (_, Move::Home) => (
                home.0.to_string(),
                crate::proxy::backend::connect_node(home.0, home.1, timeout).await,
            ),
        };
        match connected {
            Ok(mut stream) => {
                let replay = self.replay_requests();
                // Another leasegate whose node is down holds a new login
                // as it holds its own clients' (`node_lost_wait_ms`), and
                // moves it on to the master named next: the session waits
                // there as they do. Given up after `timeout`, it ended with
                // an error, and every reconnect of its client the same a
                // second later, until the shard's failover (walkthrough 31:
                // 80 errors for 20 clients of a replica's leasegate in a
                // crash of the master's node).
                let patience = match target {
                    Move::Away(_) => timeout.max(node_lost_patience),
                    Move::Home => timeout,
                };
                let namespace = self.replay.namespace.clone();
                if let Err(why) =
                    super::restore::restore(&mut stream, &replay, namespace.as_deref(), patience)
                        .await
                {
                    if super::restore::UNRESTORED_WARNING.due(self.gate.lease().now()) {
                        warn!(%addr, error = %why, "the session's connection state could not be restored where it moves: it ends (logged at most once a second)");
                    }
                    self.requeue_after_move(false);
                    self.end_unrestored(&why);
                    return None;
                }
                debug!(%addr, ?target, "session moved");
                let away = matches!(target, Move::Away(_));
                self.attach(away);
                self.requeue_after_move(away);
                Some(stream)
            }
            Err(e) => {
                // Back home is this node (its leasegate no longer demoted,
                // its node down): not "the new master" (walkthrough 14).
                let whom = match target {
                    Move::Away(_) => "the new master",
                    Move::Home => "this node",
                };
                warn!(%addr, error = %e, "cannot move the session to {whom}");
                self.requeue_after_move(false);
                let reply =
                    Bytes::from(format!("-TRYAGAIN cannot reach {whom} at {addr}: {e}\r\n"));
                self.answer_held(Verdict::Reply(reply));
                None
            }
        }
    }

    /// The session goes on over a new connection (`away`: to the new
    /// master's leasegate, else to its own node), its connection state
    /// restored there ([`Session::replay_requests`], [`super::restore`]):
    /// what the old one had pending is dropped, and a WATCH is broken
    /// (EXEC then fails, as WATCH does).
    pub(super) fn attach(&mut self, away: bool) {
        self.handed_over = away;
        if self.watch == Watch::On {
            self.watch = Watch::Broken;
        }
        self.from_backend.clear();
        self.replies = ReplyFramer::new();
    }

    /// Ends the session, its connection state not restored on the new
    /// connection (`why`): the held request, if any, is answered so and
    /// the connection closes, as the node would have closed it.
    pub(super) fn end_unrestored(&mut self, why: &str) {
        let reply = super::restore::refused_reply(why);
        if !self.answer_held(Verdict::Close(reply.clone())) {
            self.owe_local(reply);
            self.owed.push_back(Owed::Close);
            self.lifecycle = Lifecycle::Ending;
            self.settle();
        }
    }

    /// Carries out `verdict` for the request held at the head of
    /// `from_client`; `false` when none is held.
    pub(super) fn answer_held(&mut self, verdict: Verdict) -> bool {
        let Some(held) = self.requests_head() else {
            return false;
        };
        let words = held.words(&self.from_client[..held.len]);
        let special = self
            .gate
            .policy()
            .commands
            .classify(&words.name, &words.sub)
            .special;
        self.carry_out(held, Class::Write, special, verdict, None);
        true
    }

    /// The requests that restore this session's connection state on a new
    /// connection (kept for the next move: a session may move again, and
    /// back).
    pub(super) fn replay_requests(&self) -> Vec<Bytes> {
        let r = &self.replay;
        [&r.auth, &r.hello, &r.select, &r.setname]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The node connection closed with nothing owed and nothing pending
    /// (no request in flight, no transaction, no subscription or stream):
    /// the session can wait for a node instead of ending with it.
    pub(super) fn may_outlive_node(&self) -> bool {
        self.lifecycle == Lifecycle::Open
            && self.stream == Stream::Replies
            && !self.tracking
            && !self.replay.set_in_transaction
            && matches!(self.stall, Stall::None)
            && self.owed.is_empty()
            && self.to_backend.is_empty()
            && self.to_client.is_empty()
            && self.transaction.is_none()
            && self.unconfirmed.is_none()
    }

    /// Frames the request at the head of `from_client` again (it was framed
    /// once and left there for the hand-over).
    pub(super) fn requests_head(&mut self) -> Option<RequestHead> {
        self.requests.next(&self.from_client).ok().flatten()
    }
}
