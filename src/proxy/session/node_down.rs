//! Clients of a node that is down: they wait for it, or for the new
//! master's leasegate, with their requests unread ([`find_node`]: new
//! clients, and sessions whose node connection closed between requests,
//! `controller.node_lost_wait_ms`), while what they send is looked at
//! without reading it ([`while_node_is_down`], [`while_down`]): a request
//! addressed to the node itself is answered at once that it is down, a
//! client that hangs up leaves. A session's wait ([`outlive`]) ends with its
//! connection state restored on the connection found; at an upgrade it
//! moves to the successor, which waits in its place.

use std::io;

use tokio::net::TcpStream;

use tokio_util::sync::CancellationToken;

use super::{ClientIo, Session, SessionContext};
use crate::proxy::backend::{self, NodeConn, PeerTls};

/// How often a client whose requests wait unread (its node is down, see
/// [`while_node_is_down`]) is looked at again.
const CLIENT_LOOK: std::time::Duration = std::time::Duration::from_millis(100);

/// How much of a waiting client's input [`while_node_is_down`] looks at.
const PEEK_LIMIT: usize = 16 * 1024;

/// What a client waiting for its node asks, as [`while_node_is_down`]
/// looks at it.
pub enum WhileDown {
    /// Nothing that cannot wait.
    Wait,
    /// The request at the head (its length in bytes) gets this reply now.
    Answer(usize, bytes::Bytes),
    /// It cannot be served while the node is down: refused (why).
    Refuse(String),
}

/// Why a client stopped waiting for its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    HungUp,
    Refused(String),
}

/// Serves a client whose requests wait unread while its node is down:
/// over plain TCP, what it sent is looked at without reading it, and
/// `verdict` says whether the request at the head is answered now (taken
/// off the socket, the others wait) or the client refused; resolves when
/// it is refused or hangs up (its FIN or a reset arrived). A check
/// addressed to the node itself (the controller's `CLUSTER INFO`) must
/// fail now, not wait with the data requests; a client gone must not hold
/// its task and `max_clients` place. Over TLS only the hang-up is seen.
///
/// A reply is put in `unsent` in the same step as its request is taken
/// off the socket, and sent from there: whoever stops this wait (the node
/// found) sends what is left before anything else, so no reply is lost or
/// out of turn whenever the wait is dropped.
pub async fn while_node_is_down<C: ClientIo>(
    client: &C,
    verdict: impl Fn(&[u8]) -> WhileDown,
    unsent: &mut Vec<u8>,
) -> Left {
    let socket = client.socket();
    let mut seen = Vec::new();
    loop {
        if send_unsent(socket, unsent).await.is_err() {
            return Left::HungUp;
        }
        match socket.ready(tokio::io::Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => return Left::HungUp,
            Err(_) => return Left::HungUp,
            Ok(_) => {}
        }
        if !C::TLS {
            seen.resize(PEEK_LIMIT, 0);
            let n = match socket.peek(&mut seen).await {
                Ok(0) | Err(_) => return Left::HungUp,
                Ok(n) => n,
            };
            match verdict(&seen[..n]) {
                WhileDown::Wait => {}
                WhileDown::Refuse(why) => return Left::Refused(why),
                WhileDown::Answer(len, reply) => {
                    // No await between taking the request and owing its
                    // reply.
                    if take_head(socket, &mut seen[..len]).is_err() {
                        return Left::HungUp;
                    }
                    unsent.extend_from_slice(&reply);
                    continue;
                }
            }
        }
        // The readiness stays set until a read: it is looked at again
        // later, not awaited again at once (that would spin).
        tokio::time::sleep(CLIENT_LOOK).await;
    }
}

/// Takes the request at the head of `socket`'s input off it (`head`: its
/// length, already peeked, so it is there to read without waiting).
fn take_head(socket: &TcpStream, head: &mut [u8]) -> io::Result<()> {
    let mut taken = 0;
    while taken < head.len() {
        match socket.try_read(&mut head[taken..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => taken += n,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends what `unsent` holds, emptying it as it goes.
async fn send_unsent(socket: &TcpStream, unsent: &mut Vec<u8>) -> io::Result<()> {
    while !unsent.is_empty() {
        socket.writable().await?;
        match socket.try_write(unsent) {
            Ok(n) => {
                unsent.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where a session whose node is lost goes on: the node once it answers
/// again, or the new master's leasegate once it holds the lease (this node
/// demoted toward it: `true` beside the connection). Looked for every
/// [`super::node_search::LOOK_EVERY`], one client at a time, for at most
/// `node_lost_patience` (not at all when it is zero). `Err(None)` when
/// neither came in time, `Err(Some(..))` with what `quit` gave when it
/// resolved first.
pub async fn find_node<Q>(
    ctx: &SessionContext,
    peer: Option<&PeerTls>,
    quit: impl std::future::Future<Output = Q>,
) -> Result<(NodeConn, bool), Option<Q>> {
    if ctx.node_lost_patience.is_zero() {
        return Err(None);
    }
    let deadline = tokio::time::Instant::now() + ctx.node_lost_patience;
    let _waiting = Waiting::on(&ctx.metrics.waiting_for_node);
    tokio::pin!(quit);
    loop {
        // One client looks at a time; after a miss the others wait.
        if let Some(look) = ctx.node_search.turn(std::time::Instant::now()) {
            let found = look_for_node(ctx, peer).await;
            look.ended(found.is_some());
            if let Some(found) = found {
                return Ok(found);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(None);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            _ = ctx.node_search.next_look(super::node_search::LOOK_EVERY.min(left)) => {}
            q = &mut quit => return Err(Some(q)),
        }
    }
}

/// How a session's wait for its node ended ([`outlive`]).
pub enum Outlived {
    /// On this connection: the node, or (`true`) the new master's
    /// leasegate; the session's connection state restored there.
    Found(NodeConn, bool),
    /// leasegate is upgraded: the client moves to the successor, which
    /// takes up the wait (the replies it was owed were sent).
    Moving,
    /// Neither came in time, the client hung up or was refused, its state
    /// could not be restored, or leasegate stops: the session ends.
    Ended,
}

/// The wait of a session whose node connection closed with nothing owed
/// (or that moved here waiting): at most `node_lost_patience`
/// ([`find_node`]) for the new master's leasegate to hold the lease (this
/// node demoted toward it) or for the node to answer again; then its
/// connection state (`AUTH`, `SELECT`, `HELLO`, `CLIENT SETNAME`) is
/// replayed there. The client's requests wait unread meanwhile, except
/// those addressed to the node itself, answered that it is down
/// ([`while_down`]). `stopping`: the drain's signal.
pub async fn outlive<C: ClientIo>(
    client: &mut C,
    s: &Session,
    ctx: &SessionContext,
    stopping: &CancellationToken,
) -> Outlived {
    use tokio::io::AsyncWriteExt;
    let peer = ctx.peer_tls::<C>();
    // A client that asked for no replies is answered none here, nor one
    // with requests already read (a reply now would overtake theirs):
    // its session ends instead, as it did with the node.
    let answers = s.mute.is_on() && s.from_client.is_empty();
    // Replies to node-addressed requests not yet sent when the wait ends.
    let mut unsent = Vec::new();
    // `true`: leasegate drains (it stops, or is upgraded).
    let quit = async {
        tokio::select! {
            _ = stopping.cancelled() => true,
            _ = while_node_is_down(&*client, |input| {
                match while_down(ctx, input) {
                    WhileDown::Answer(..) if !answers => WhileDown::Refuse(String::new()),
                    verdict => verdict,
                }
            }, &mut unsent) => false,
        }
    };
    let found = find_node(ctx, peer.as_deref(), quit).await;
    let moving =
        matches!(found, Err(Some(true))) && ctx.mover.takes_waiting::<C>() && client.may_move();
    if (found.is_ok() || moving) && !unsent.is_empty() && client.write_all(&unsent).await.is_err() {
        return Outlived::Ended;
    }
    if moving {
        return Outlived::Moving;
    }
    let Ok((mut stream, away)) = found else {
        if !ctx.node_lost_patience.is_zero() {
            ctx.metrics.handover(false);
        }
        return Outlived::Ended;
    };
    let replay = s.replay_requests();
    let namespace = s.replay.namespace.as_deref();
    if let Err(why) =
        super::restore::restore(&mut stream, &replay, namespace, ctx.connect_timeout).await
    {
        if super::restore::UNRESTORED_WARNING.due(ctx.gate.lease().now()) {
            tracing::warn!(error = %why, away, "the node connection closed, and the session's connection state could not be restored on a new one: it ends (logged at most once a second)");
        }
        ctx.metrics.handover(false);
        // Its requests wait unread: the first is answered why (one
        // that asked for no replies gets none), then it closes.
        if s.mute.is_on() {
            let _ = client.write_all(&super::restore::refused_reply(&why)).await;
            let _ = client.flush().await;
        }
        return Outlived::Ended;
    }
    tracing::info!(
        away,
        "the node connection closed: the session goes on over a new one"
    );
    ctx.metrics.handover(true);
    Outlived::Found(stream, away)
}

/// One look: the new master's leasegate holding the lease (this node
/// demoted toward it: `true`), else the node answering.
async fn look_for_node(ctx: &SessionContext, peer: Option<&PeerTls>) -> Option<(NodeConn, bool)> {
    match backend::stand_in(ctx.gate.role(), peer, ctx.connect_timeout).await {
        Ok(stream) => Some((stream, true)),
        Err(_) => backend::answering(
            &ctx.backend_addr,
            ctx.node_tls.load_full().as_deref(),
            ctx.connect_timeout,
        )
        .await
        .map(|stream| (stream, false)),
    }
}

/// Counts a client in `leasegate_clients_waiting_for_node` while it lives.
struct Waiting<'g>(&'g prometheus_client::metrics::gauge::Gauge);

impl<'g> Waiting<'g> {
    fn on(gauge: &'g prometheus_client::metrics::gauge::Gauge) -> Waiting<'g> {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a client waiting for its node that is down asks
/// ([`while_node_is_down`]). A request addressed to the node
/// itself ([`crate::command::Special::addresses_node`]: its role, its
/// cluster state), which a node that is down cannot answer and no other
/// node may, is answered that the node is down when it is at the head;
/// behind connection set-up still unanswered (`AUTH`, `HELLO`, `SELECT`,
/// `CLIENT SETNAME`: leasegate's own fence sends its `AUTH` and `INFO
/// leasegate` in one write) the client is refused, as before the wait.
/// `INFO leasegate` at the head is answered (leasegate's own state).
/// Anything else waits. (A controller
/// whose checks of a killed master waited, 3 s probe timeouts each,
/// replaced it after 12 s, not 3; a fence whose `AUTH` waited took 1 s
/// to learn the old master unreachable.)
pub fn while_down(ctx: &SessionContext, input: &[u8]) -> WhileDown {
    use crate::command::Special;
    use WhileDown;
    let policy = ctx.gate.policy();
    let mut framer = crate::resp::request::RequestFramer::new(ctx.limits);
    let mut rest = input;
    let mut set_up = false;
    while let Ok(Some(head)) = framer.next(rest) {
        let words = head.words(&rest[..head.len]);
        let special = policy.commands.classify(&words.name, &words.sub).special;
        // `INFO leasegate` is answered by leasegate, never the node: at the
        // head, it is answered now, as when the node is up (another
        // leasegate's fence asks it: the old master's state, fenced or not,
        // spared the new master a wait for the lease to run out, 1.6 s,
        // at each crash failover in walkthrough 33).
        if special == Special::Info
            && !set_up
            && head.argc == 2
            && words.sub.eq_ignore_ascii_case(b"leasegate")
        {
            // `node_down:1`: this answer comes from a connection that
            // waits for the node (a fence that finds the old master fenced
            // there need not catch up with a node that is gone).
            let section = ctx.gate.info_section() + "node_down:1\r\n";
            let reply = crate::resp::encode::bulk(section.as_bytes());
            return WhileDown::Answer(head.len, reply);
        }
        if special.addresses_node() {
            if set_up {
                // The command's name (and subcommand), not its bytes:
                // the log line is read by people.
                let mut command = String::from_utf8_lossy(&words.name).to_ascii_uppercase();
                if !words.sub.is_empty() {
                    command.push(' ');
                    command.push_str(&String::from_utf8_lossy(&words.sub).to_ascii_lowercase());
                }
                return WhileDown::Refuse(format!(
                    "{} after the connection's set-up",
                    command.escape_debug()
                ));
            }
            let reply = format!(
                "-ERR backend {} unavailable: the node is down (its clients' other requests wait for it or for a new master)\r\n",
                ctx.backend_addr
            );
            return WhileDown::Answer(head.len, bytes::Bytes::from(reply));
        }
        if !matches!(
            special,
            Special::Auth | Special::Hello | Special::Select | Special::SetName
        ) {
            break;
        }
        set_up = true;
        rest = &rest[head.len..];
    }
    WhileDown::Wait
}
