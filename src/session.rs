//! A session: one client connection paired with one backend connection.
//!
//! This is the hot path, together with [`crate::gate`]. Pairing connections
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
//! A request the Gate holds stays at the head of the client buffer and stops
//! only this connection; when its wait ends it is asked about again. A
//! hand-over swaps the backend connection (to the new master's leasegate, or
//! back home) once every reply owed by the old one has arrived, replaying
//! AUTH, HELLO, SELECT and CLIENT SETNAME first.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::command::{Class, Name};
use crate::frame::reply::{pubsub_frame, PubSubFrame, ReplyFramer, ReplyHead};
use crate::frame::request::{Limits, RequestFramer, RequestHead};
use crate::gate::{Admission, Answer, Gate, Policy, Verdict, Wait};

/// Stop reading from a side while this much is queued for the other.
const HIGH_WATER: usize = 4 * 1024 * 1024;
/// Read buffers grow by at least this much.
const READ_CHUNK: usize = 16 * 1024;

const EXECABORT_PREVIOUS_ERRORS: &[u8] =
    b"-EXECABORT Transaction discarded because of previous errors.\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
/// Stands in for the wait of a session that holds nothing (that select branch is disabled).
const NO_WAIT: Wait = Wait::Verification(0);

/// What a session needs from the proxy.
#[derive(Debug)]
pub struct SessionContext {
    pub gate: Arc<Gate>,
    pub limits: Limits,
    /// Bound on opening a connection to the new master's leasegate at a hand-over.
    pub connect_timeout: std::time::Duration,
    /// This proxy's node, where moved sessions return when it is master again.
    pub backend_addr: String,
}

/// What the client is owed next, in request order.
#[derive(Debug)]
enum Owed {
    /// One backend reply, handled as `Expect` says.
    Reply(Expect),
    /// A reply made by the proxy.
    Local(Bytes),
    /// A subscribe-family request went out: RESP2 pub/sub frames from here on
    /// answer no request.
    PubSub,
    /// MONITOR was acknowledged: everything from here on is a stream.
    Monitor,
    /// Close the connection once everything before this has been written.
    Close,
}

#[derive(Debug)]
enum Expect {
    Plain,
    /// A write's reply; `blocking` for BLPOP and the like, which may not
    /// answer for a long time; `counted` when it is counted in flight (writes
    /// of moved sessions are the other leasegate's to count).
    Write {
        blocking: bool,
        counted: bool,
    },
    /// HELLO: the reply's type tells which protocol the connection now speaks.
    Hello,
    /// RESET: the connection is back to its initial state.
    Reset,
    /// The backend's reply is swallowed and this one is sent instead
    /// (EXEC turned into DISCARD).
    Replace(Bytes),
    /// A heartbeat's `INFO replication` becomes the lease report.
    Heartbeat {
        renewed: bool,
    },
}

impl From<Answer> for Expect {
    fn from(a: Answer) -> Expect {
        match a {
            Answer::Hello => Expect::Hello,
            Answer::Replace(b) => Expect::Replace(b),
            Answer::Heartbeat { renewed } => Expect::Heartbeat { renewed },
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Transaction {
    has_write: bool,
    /// A queued command was refused by the proxy: EXEC must fail.
    aborted: bool,
}

/// Per-connection protocol state, independent of the sockets.
struct Session {
    from_client: BytesMut,
    to_backend: BytesMut,
    from_backend: BytesMut,
    to_client: BytesMut,
    requests: RequestFramer,
    replies: ReplyFramer,
    owed: VecDeque<Owed>,
    resp3: bool,
    /// RESP2 subscribe mode, and the subscription counts the node reported.
    pubsub: bool,
    subscriptions: i64,
    shard_subscriptions: i64,
    monitor: bool,
    transaction: Option<Transaction>,
    /// The connection is the controller's (control password or allow_from).
    control: bool,
    /// The peer is in `control.allow_from` (kept across RESET).
    trusted_peer: bool,
    /// The request the Gate said to hold, if any.
    held: Option<Held>,
    /// Bytes at the head of `from_client` that arrived before a mastership
    /// confirmation was requested (pipelined writes share it).
    confirmed: usize,
    /// Move the session (to the new master's leasegate, or back home) once
    /// every reply owed by the current backend has arrived.
    handover: Option<Move>,
    /// Moved to the new master's leasegate, which judges requests from now on.
    handed_over: bool,
    /// Connection state replayed on the new connection at a hand-over.
    replay: Replay,
    /// WATCH is in force on the backend connection.
    watching: bool,
    /// WATCHed keys were left behind on the old node: the next EXEC fails
    /// (null reply), which is WATCH's failure semantics.
    watch_broken: bool,
    /// The decision point every request is put to.
    gate: Arc<Gate>,
    /// A protocol error was found: no more requests are read.
    stop_reading: bool,
    /// Everything owed has been queued: close once `to_client` is written.
    closing: bool,
}

/// Runs one client connection to completion.
pub async fn serve(
    mut client: TcpStream,
    backend: TcpStream,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
) {
    let mut s = Session::new(ctx.limits, Arc::clone(&ctx.gate));
    s.trusted_peer = client
        .peer_addr()
        .is_ok_and(|peer| ctx.gate.trusts_peer(peer.ip()));
    s.control = s.trusted_peer;
    let (mut client_rx, mut client_tx) = client.split();
    let (mut backend_rx, mut backend_tx) = backend.into_split();
    let mut client_eof = false;
    let mut backend_eof = false;
    let mut draining = false;
    let mut preconnect: Option<Preconnect> = None;
    // Created once: a fresh `cancelled()` per iteration would register with,
    // and leave, the token's shared waiter list on every request.
    let mut shutdown = std::pin::pin!(shutdown.cancelled_owned());

    loop {
        if s.finished(client_eof || draining, backend_eof) {
            break;
        }
        if let Some(target) = s.handover_ready() {
            let ready = Preconnect::take_for(&mut preconnect, &target);
            match s
                .hand_over(target, ready, &ctx.backend_addr, ctx.connect_timeout)
                .await
            {
                Some(stream) => {
                    (backend_rx, backend_tx) = stream.into_split();
                    backend_eof = false;
                    s.on_client_data();
                }
                None => s.on_client_data(),
            }
            continue;
        }
        Preconnect::plan(&mut preconnect, &s, &ctx);
        let opening = matches!(preconnect, Some(Preconnect::Opening(..)));
        let read_client = !(s.stop_reading || client_eof || draining)
            && s.to_backend.len() < HIGH_WATER
            && ((s.held.is_none() && s.handover.is_none()) || s.from_client.len() < HIGH_WATER);
        let holding = s.held.is_some();
        let read_backend = !backend_eof && s.to_client.len() < HIGH_WATER;
        reserve(&mut s.from_client);
        reserve(&mut s.from_backend);

        tokio::select! {
            biased;
            r = client_tx.write_buf(&mut s.to_client), if !s.to_client.is_empty() => {
                if r.is_err() || r.is_ok_and(|n| n == 0) {
                    break;
                }
            }
            r = backend_tx.write_buf(&mut s.to_backend), if !s.to_backend.is_empty() => {
                if r.is_err() || r.is_ok_and(|n| n == 0) {
                    break;
                }
            }
            r = backend_rx.read_buf(&mut s.from_backend), if read_backend => match r {
                Ok(0) | Err(_) => backend_eof = true,
                Ok(_) => {
                    if let Err(e) = s.on_backend_data() {
                        debug!(error = %e, "closing session");
                        break;
                    }
                }
            },
            r = async {
                match preconnect.as_mut() {
                    Some(Preconnect::Opening(_, connecting)) => connecting.as_mut().await,
                    _ => std::future::pending().await,
                }
            }, if opening => Preconnect::opened(&mut preconnect, r),
            r = ctx.gate.wait(s.held.as_ref().map_or(&NO_WAIT, |h| &h.wait)), if holding => {
                s.release(r);
            }
            r = client_rx.read_buf(&mut s.from_client), if read_client => match r {
                Ok(0) | Err(_) => client_eof = true,
                Ok(_) => s.on_client_data(),
            },
            // Last: polled only when nothing else is ready.
            _ = &mut shutdown, if !draining => draining = true,
        }
    }
    let _ = client_tx.shutdown().await;
}

/// Makes room for the next read.
#[inline]
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

impl Session {
    fn new(limits: Limits, gate: Arc<Gate>) -> Session {
        Session {
            from_client: BytesMut::with_capacity(READ_CHUNK),
            to_backend: BytesMut::with_capacity(READ_CHUNK),
            from_backend: BytesMut::with_capacity(READ_CHUNK),
            to_client: BytesMut::with_capacity(READ_CHUNK),
            requests: RequestFramer::new(limits),
            replies: ReplyFramer::new(),
            owed: VecDeque::new(),
            resp3: false,
            pubsub: false,
            subscriptions: 0,
            shard_subscriptions: 0,
            monitor: false,
            transaction: None,
            control: false,
            trusted_peer: false,
            held: None,
            confirmed: 0,
            handover: None,
            handed_over: false,
            replay: Replay::default(),
            watching: false,
            watch_broken: false,
            gate,
            stop_reading: false,
            closing: false,
        }
    }

    /// Whether the session has nothing left to do.
    fn finished(&self, no_more_requests: bool, backend_eof: bool) -> bool {
        let written = self.to_client.is_empty();
        if self.closing || backend_eof {
            return written;
        }
        no_more_requests
            && written
            && self.held.is_none()
            && self.handover.is_none()
            && self.to_backend.is_empty()
            && self.awaits_nothing()
    }

    /// No backend reply is owed (streams such as pub/sub and MONITOR owe none).
    fn awaits_nothing(&self) -> bool {
        !self.owed.iter().any(|o| matches!(o, Owed::Reply(_)))
    }

    /// Frames, classifies and admits every complete request the client sent,
    /// in order, until one is held.
    fn on_client_data(&mut self) {
        if self.held.is_some() || self.handover.is_some() {
            return; // framing resumes when the held request is released
        }
        let policy = self.gate.policy();
        while !self.stop_reading {
            let head = match self.requests.next(&self.from_client) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "client protocol error");
                    self.owed.push_back(Owed::Local(e.reply()));
                    self.owed.push_back(Owed::Close);
                    self.stop_reading = true;
                    self.from_client.clear();
                    break;
                }
            };
            if head.argc == 0 {
                // Ignored by the node as well: nothing to forward, nothing owed.
                self.consume(head.len);
                continue;
            }
            if !self.admit(&policy, head, false) {
                break;
            }
        }
        self.settle();
    }

    /// Puts the request at the head of `from_client` to the Gate and carries
    /// out the verdict. Returns `false` when the request is held.
    #[inline]
    fn admit(&mut self, policy: &Policy, head: RequestHead, verified: bool) -> bool {
        let bytes = &self.from_client[..head.len];
        let command = policy.commands.classify(&head.name, &head.sub);
        let class = self.gated_class(&head, command.class);
        // A write is counted in flight *before* the Gate looks at the pause,
        // and the failover pauses before it reads the count: whichever comes
        // second sees the other, so no write slips past a failover's count.
        let counted = class == Class::Write
            && self.transaction.is_none()
            && !self.handed_over
            && !self.monitor
            && !is_blocking(&head.name);
        if counted {
            self.gate.write_in_flight(true);
        }
        let verdict = match authenticate(&self.gate, &head, bytes) {
            Some(v) => {
                self.control = true;
                v
            }
            None => self.gate.admit(&Admission {
                class,
                command,
                head: &head,
                bytes,
                control: self.control,
                verified,
                covered: head.len <= self.confirmed,
                handed_over: self.handed_over,
            }),
        };
        let forwarded = matches!(verdict, Verdict::Forward);
        if counted && !forwarded {
            self.gate.write_in_flight(false);
        }
        self.carry_out(head, command.class, verdict, counted && forwarded)
    }

    /// Carries out a verdict for the request at the head of `from_client`.
    fn carry_out(
        &mut self,
        head: RequestHead,
        class: Class,
        verdict: Verdict,
        counted: bool,
    ) -> bool {
        if matches!(verdict, Verdict::Forward) && self.transaction.is_none() && !self.watch_broken {
            // The common case, kept short: the request goes as it came.
            self.to_backend
                .extend_from_slice(&self.from_client[..head.len]);
            self.forwarded(&head, class, counted);
            self.consume(head.len);
            return true;
        }
        match self.in_transaction(&head, verdict) {
            Step::Hold(wait) => {
                let arrived = self.from_client.len();
                self.held = Some(Held {
                    head,
                    class,
                    wait,
                    arrived,
                });
                return false;
            }
            Step::HandOver(target) => {
                // The request stays at the head until the session has moved.
                self.handover = Some(target);
                return false;
            }
            Step::Forward if self.watch_broken && head.name.is(b"exec") => {
                // The WATCH was on the old node: the transaction fails as a
                // WATCH conflict would, and nothing of it is applied.
                self.watch_broken = false;
                self.to_backend.extend_from_slice(DISCARD);
                self.owed
                    .push_back(Owed::Reply(Expect::Replace(self.null_reply())));
                self.transaction = None;
            }
            Step::Forward => {
                self.to_backend
                    .extend_from_slice(&self.from_client[..head.len]);
                self.forwarded(&head, class, counted);
            }
            Step::Rewrite(request, answer) => {
                self.to_backend.extend_from_slice(&request);
                self.owed.push_back(Owed::Reply(answer.into()));
            }
            Step::Answer(reply) => self.owed.push_back(Owed::Local(reply)),
            Step::Discard(reply) => {
                // The backend holds an open transaction: close it without
                // applying it, and answer EXEC with `reply`.
                self.to_backend.extend_from_slice(DISCARD);
                self.owed.push_back(Owed::Reply(Expect::Replace(reply)));
                self.transaction = None;
                self.watching = false; // DISCARD unwatches on the node
            }
        }
        self.consume(head.len);
        true
    }

    /// The wait of a held request is over: ask again (or refuse), then go on
    /// with the requests behind it.
    fn release(&mut self, outcome: Result<(), Bytes>) {
        let Some(held) = self.held.take() else {
            return;
        };
        // Only a confirmation verifies; a pause's end does not.
        let verified = matches!(held.wait, Wait::Verification(_));
        if outcome.is_ok() && verified {
            self.confirmed = held.arrived;
        }
        // The old place in the pause buffer is given up before asking again.
        drop(held.wait);
        let admitted = match outcome {
            Ok(()) => self.admit(&self.gate.policy(), held.head, verified),
            Err(reply) => self.carry_out(held.head, held.class, Verdict::Reply(reply), false),
        };
        if admitted {
            self.on_client_data();
        } else {
            self.settle();
        }
    }

    /// Inside MULTI, queued commands are only queued: the Gate judges the
    /// transaction at EXEC (a write if a queued command was).
    #[inline]
    fn gated_class(&self, head: &RequestHead, class: Class) -> Class {
        match &self.transaction {
            None => class,
            Some(t) if head.name.is(b"exec") => {
                if t.has_write {
                    Class::Write
                } else {
                    class
                }
            }
            Some(_) if class == Class::Write => Class::Read,
            Some(_) => class,
        }
    }

    /// Book-keeping for a request that goes to the backend.
    #[inline]
    fn forwarded(&mut self, head: &RequestHead, class: Class, counted: bool) {
        let name = &head.name;
        if let Some(t) = self.transaction.as_mut() {
            if class == Class::Write {
                t.has_write = true;
            }
        } else if class == Class::Write {
            // Counted in flight by `admit` (not: a blocked BLPOP, which is no
            // write on its way to the replica, and moved sessions' writes,
            // which the other leasegate counts).
            self.owed.push_back(Owed::Reply(Expect::Write {
                blocking: is_blocking(name),
                counted,
            }));
            return;
        }
        self.remember(head);
        let expect = if name.is(b"multi") {
            self.transaction.get_or_insert_with(Transaction::default);
            Expect::Plain
        } else if name.is(b"exec") || name.is(b"discard") {
            // An EXEC of queued writes is a write in flight like any other.
            let writes = name.is(b"exec") && self.transaction.is_some_and(|t| t.has_write);
            self.transaction = None;
            self.watching = false;
            if writes && !self.handed_over {
                self.gate.write_in_flight(true);
                Expect::Write {
                    blocking: false,
                    counted: true,
                }
            } else {
                Expect::Plain
            }
        } else if name.is(b"hello") {
            Expect::Hello
        } else if name.is(b"reset") {
            self.transaction = None;
            self.watching = false;
            self.replay = Replay::default();
            Expect::Reset
        } else if is_subscribe_family(name, head.argc) {
            self.owed.push_back(Owed::PubSub);
            return;
        } else if name.is(b"monitor") {
            self.owed.push_back(Owed::Reply(Expect::Plain));
            self.owed.push_back(Owed::Monitor);
            return;
        } else {
            Expect::Plain
        };
        self.owed.push_back(Owed::Reply(expect));
    }

    /// What a verdict means for a session inside MULTI: a refused EXEC must
    /// still close the backend's transaction, and a refused queued command
    /// makes the whole transaction fail at EXEC, as the node would.
    #[inline]
    fn in_transaction(&mut self, head: &RequestHead, verdict: Verdict) -> Step {
        let Some(t) = self.transaction.as_mut() else {
            return match verdict {
                Verdict::Forward => Step::Forward,
                Verdict::Reply(reply) => Step::Answer(reply),
                Verdict::Rewrite { request, answer } => Step::Rewrite(request, answer),
                Verdict::Hold(wait) => Step::Hold(wait),
                Verdict::HandOver(addr) => Step::HandOver(Move::Away(addr)),
                Verdict::ReturnHome => Step::HandOver(Move::Home),
            };
        };
        let exec = head.name.is(b"exec");
        match verdict {
            // The transaction is queued on the old node: EXEC fails like a
            // WATCH conflict and the session moves on its next write; other
            // commands keep queueing where the transaction is.
            Verdict::HandOver(_) | Verdict::ReturnHome if exec => Step::Discard(self.null_reply()),
            Verdict::HandOver(_) | Verdict::ReturnHome => Step::Forward,
            Verdict::Hold(wait) => Step::Hold(wait),
            Verdict::Rewrite { request, answer } => Step::Rewrite(request, answer),
            Verdict::Reply(reply) if exec => Step::Discard(reply),
            Verdict::Reply(reply) => {
                t.aborted = true;
                Step::Answer(reply)
            }
            Verdict::Forward if exec && t.aborted => {
                Step::Discard(Bytes::from_static(EXECABORT_PREVIOUS_ERRORS))
            }
            Verdict::Forward => Step::Forward,
        }
    }
}

/// How the session carries out a verdict.
enum Step {
    /// The request's bytes go to the backend.
    Forward,
    /// Nothing is forwarded; the client gets this reply in the request's place.
    Answer(Bytes),
    /// EXEC is replaced by DISCARD; the client gets this reply in its place.
    Discard(Bytes),
    /// Other bytes are forwarded; the answer is made from the node's reply.
    Rewrite(Bytes, Answer),
    /// Nothing yet: the request stays at the head of the buffer.
    Hold(Wait),
    /// Move the session first.
    HandOver(Move),
}

/// A connection opened ahead of a hand-over, while a failover pauses writes.
enum Preconnect {
    Opening(
        Arc<str>,
        std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<TcpStream, crate::backend::BackendError>>
                    + Send,
            >,
        >,
    ),
    Open(Arc<str>, TcpStream),
    /// The hand-over will connect (and report) itself.
    Failed,
}

impl Preconnect {
    /// A failover is under way and the session holds a paused write: open
    /// the connection to the likely new master now, so the hand-over after
    /// the switch costs no connect. Dropped when released without a move.
    fn plan(this: &mut Option<Preconnect>, s: &Session, ctx: &SessionContext) {
        if this.is_none() && s.held_by_pause() {
            if let Some(to) = ctx.gate.handover_target() {
                let (addr, timeout) = (Arc::clone(&to), ctx.connect_timeout);
                let connecting = async move { crate::backend::connect(&addr, timeout).await };
                *this = Some(Preconnect::Opening(to, Box::pin(connecting)));
            }
        } else if s.held.is_none() && s.handover.is_none() {
            *this = None;
        }
    }

    /// The connection attempt finished.
    fn opened(
        this: &mut Option<Preconnect>,
        result: Result<TcpStream, crate::backend::BackendError>,
    ) {
        *this = match (this.take(), result) {
            (Some(Preconnect::Opening(to, _)), Ok(stream)) => Some(Preconnect::Open(to, stream)),
            // The hand-over will connect again (and report a failure).
            (Some(Preconnect::Opening(..)), Err(_)) => Some(Preconnect::Failed),
            (other, _) => other,
        };
    }

    /// The open connection, if it goes where the session moves.
    fn take_for(this: &mut Option<Preconnect>, target: &Move) -> Option<TcpStream> {
        match (target, this.take()) {
            (Move::Away(addr), Some(Preconnect::Open(to, stream))) if to == *addr => Some(stream),
            _ => None,
        }
    }
}

/// Where a session moves at a hand-over.
#[derive(Debug, Clone)]
enum Move {
    /// To the new master's leasegate at this address.
    Away(Arc<str>),
    /// Back to this proxy's own node (it is master again).
    Home,
}

/// What is replayed on the new connection at a hand-over, as the client last
/// sent it.
#[derive(Debug, Default)]
struct Replay {
    auth: Option<Bytes>,
    hello: Option<Bytes>,
    select: Option<Bytes>,
    setname: Option<Bytes>,
}

/// Commands that may block for a long time before they answer.
fn is_blocking(name: &Name) -> bool {
    matches!(
        name.as_bytes(),
        b"blpop"
            | b"brpop"
            | b"brpoplpush"
            | b"blmove"
            | b"blmpop"
            | b"bzpopmin"
            | b"bzpopmax"
            | b"bzmpop"
            | b"xread"
            | b"xreadgroup"
            | b"wait"
            | b"waitaof"
    )
}

/// A request the Gate said to hold; it is still at the head of `from_client`
/// and everything the client sent after it waits behind it.
#[derive(Debug)]
struct Held {
    head: RequestHead,
    class: Class,
    wait: Wait,
    /// Bytes the client had sent (from this request on) when it was held:
    /// every write among them arrived before the confirmation it waits for
    /// was requested, so that confirmation covers them all.
    arrived: usize,
}

/// AUTH/HELLO carrying the control password make the connection the
/// controller's; the password is checked by the Gate and never forwarded.
#[inline]
fn authenticate(gate: &Gate, head: &RequestHead, bytes: &[u8]) -> Option<Verdict> {
    if !(head.name.is(b"auth") || head.name.is(b"hello")) {
        return None;
    }
    gate.authenticate(head, bytes)
}

/// SUBSCRIBE-family requests (with their required arguments): in RESP2 their
/// confirmations, like the messages that follow, answer no request slot.
#[inline]
fn is_subscribe_family(name: &Name, argc: u64) -> bool {
    match name.as_bytes() {
        b"subscribe" | b"psubscribe" | b"ssubscribe" => argc >= 2,
        b"unsubscribe" | b"punsubscribe" | b"sunsubscribe" => true,
        _ => false,
    }
}

/// The reply side.
impl Session {
    /// Frames every complete backend reply and queues it (or its replacement)
    /// for the client, with local replies placed where they are owed.
    fn on_backend_data(&mut self) -> Result<(), crate::frame::reply::ReplyError> {
        let mut pos = 0;
        while let Some(head) = self.replies.next(&self.from_backend[pos..])? {
            let at = pos;
            pos += head.len;
            self.on_reply(head, at..pos);
        }
        self.from_backend.advance(pos);
        Ok(())
    }

    #[inline]
    fn on_reply(&mut self, head: ReplyHead, range: std::ops::Range<usize>) {
        if !self.answers_request(&head, &range) {
            self.to_client.extend_from_slice(&self.from_backend[range]);
            return;
        }
        match self.owed.pop_front() {
            Some(Owed::Reply(Expect::Replace(reply))) => self.to_client.extend_from_slice(&reply),
            Some(Owed::Reply(Expect::Write { counted, .. })) => {
                if counted {
                    self.gate.write_in_flight(false);
                }
                self.to_client.extend_from_slice(&self.from_backend[range]);
            }
            Some(Owed::Reply(Expect::Heartbeat { renewed })) => {
                let report = self
                    .gate
                    .heartbeat_reply(&self.from_backend[range], renewed);
                self.to_client.extend_from_slice(&report);
            }
            Some(Owed::Reply(expect)) => {
                match expect {
                    Expect::Hello if head.kind == b'%' => self.resp3 = true,
                    Expect::Hello if head.kind == b'*' => self.resp3 = false,
                    Expect::Reset if head.kind == b'+' => {
                        // RESET drops the connection's authentication too.
                        self.control = self.trusted_peer;
                        self.resp3 = false;
                        self.pubsub = false;
                        self.monitor = false;
                        self.subscriptions = 0;
                        self.shard_subscriptions = 0;
                    }
                    _ => {}
                }
                self.to_client.extend_from_slice(&self.from_backend[range]);
            }
            other => {
                // A reply nobody asked for (the queue's head is always a
                // backend reply or empty after `settle`): pass it on.
                if let Some(o) = other {
                    self.owed.push_front(o);
                }
                self.to_client.extend_from_slice(&self.from_backend[range]);
            }
        }
        self.settle();
    }

    /// Whether a backend frame answers a request, as opposed to a push, a
    /// pub/sub message or a MONITOR line. Updates the subscribe-mode state.
    #[inline]
    fn answers_request(&mut self, head: &ReplyHead, range: &std::ops::Range<usize>) -> bool {
        if head.kind == b'>' {
            return false;
        }
        if self.monitor {
            // Only RESET's own reply ends a MONITOR stream.
            let is_reset = &self.from_backend[range.clone()] == b"+RESET\r\n";
            return is_reset && matches!(self.owed.front(), Some(Owed::Reply(Expect::Reset)));
        }
        if !self.pubsub || self.resp3 || head.kind != b'*' {
            return true;
        }
        match pubsub_frame(&self.from_backend[range.clone()]) {
            None => true,
            Some(PubSubFrame::Message) => false,
            Some(PubSubFrame::Subscribed { count, shard }) => {
                self.set_subscriptions(count, shard);
                false
            }
            Some(PubSubFrame::Unsubscribed { count, shard }) => {
                self.set_subscriptions(count, shard);
                if self.subscriptions == 0 && self.shard_subscriptions == 0 {
                    self.pubsub = false;
                }
                false
            }
        }
    }

    fn set_subscriptions(&mut self, count: i64, shard: bool) {
        if shard {
            self.shard_subscriptions = count;
        } else {
            self.subscriptions = count;
        }
    }

    /// Writes out local replies and applies mode changes that have reached
    /// the head of the queue, until a backend reply is owed first.
    #[inline]
    fn settle(&mut self) {
        while let Some(front) = self.owed.front() {
            match front {
                Owed::Reply(_) => return,
                Owed::Local(reply) => self.to_client.extend_from_slice(reply),
                Owed::PubSub => self.pubsub = true,
                Owed::Monitor => self.monitor = true,
                Owed::Close => {
                    self.closing = true;
                    self.owed.clear();
                    return;
                }
            }
            self.owed.pop_front();
        }
    }
}

/// Moving a session to the new master's leasegate (`pause.on_demote: forward`).
impl Session {
    /// Where to move, once nothing is owed by the current backend any more.
    fn handover_ready(&mut self) -> Option<Move> {
        self.handover.as_ref()?;
        if self.pubsub
            || self.monitor
            || self
                .owed
                .iter()
                .any(|o| matches!(o, Owed::Reply(Expect::Write { blocking: true, .. })))
        {
            // A subscriber or a blocked client cannot be moved transparently.
            self.owed.push_back(Owed::Local(Bytes::from_static(
                b"-ERR leasegate: this node was demoted during a failover and this connection cannot be moved; reconnect\r\n",
            )));
            self.owed.push_back(Owed::Close);
            self.handover = None;
            self.stop_reading = true;
            self.settle();
            return None;
        }
        if !self.to_backend.is_empty() || !self.awaits_nothing() {
            return None;
        }
        self.handover.take()
    }

    /// Connects to where the session moves and replays the connection
    /// state. On failure the held request is refused and the session stays
    /// where it is.
    async fn hand_over(
        &mut self,
        target: Move,
        ready: Option<TcpStream>,
        home: &str,
        timeout: std::time::Duration,
    ) -> Option<TcpStream> {
        let addr = match &target {
            Move::Away(addr) => addr.as_ref(),
            Move::Home => home,
        };
        let connected = match ready {
            Some(stream) => Ok(stream),
            None => crate::backend::connect(addr, timeout).await,
        };
        match connected {
            Ok(stream) => {
                debug!(%addr, ?target, "session moved");
                self.handed_over = matches!(target, Move::Away(_));
                self.watch_broken = self.watching;
                self.watching = false;
                self.from_backend.clear();
                self.replies = ReplyFramer::new();
                // Kept for the next move (a session may move again, and back).
                let r = &self.replay;
                let replay: Vec<Bytes> = [&r.auth, &r.hello, &r.select, &r.setname]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                for request in replay {
                    self.to_backend.extend_from_slice(&request);
                    self.owed
                        .push_back(Owed::Reply(Expect::Replace(Bytes::new())));
                }
                Some(stream)
            }
            Err(e) => {
                warn!(%addr, error = %e, "cannot move the session to the new master");
                if let Some(held) = self.requests_head() {
                    let reply = Bytes::from(format!(
                        "-TRYAGAIN cannot reach the new master at {addr}: {e}\r\n"
                    ));
                    self.carry_out(held, Class::Write, Verdict::Reply(reply), false);
                }
                None
            }
        }
    }

    /// Frames the request at the head of `from_client` again (it was framed
    /// once and left there for the hand-over).
    fn requests_head(&mut self) -> Option<RequestHead> {
        self.requests.next(&self.from_client).ok().flatten()
    }

    /// Remembers the connection state a hand-over replays (cold: only for
    /// AUTH, HELLO, SELECT and CLIENT SETNAME).
    #[inline]
    fn remember(&mut self, head: &RequestHead) {
        let name = &head.name;
        let slot = if name.is(b"auth") {
            &mut self.replay.auth
        } else if name.is(b"hello") {
            &mut self.replay.hello
        } else if name.is(b"select") {
            &mut self.replay.select
        } else if name.is(b"client") && head.sub.is(b"setname") {
            &mut self.replay.setname
        } else {
            if name.is(b"watch") {
                self.watching = true;
            } else if name.is(b"unwatch") {
                self.watching = false;
                self.watch_broken = false;
            }
            return;
        };
        *slot = Some(Bytes::copy_from_slice(&self.from_client[..head.len]));
    }

    /// Takes `len` bytes of handled request off the client buffer.
    #[inline]
    fn consume(&mut self, len: usize) {
        self.from_client.advance(len);
        self.confirmed = self.confirmed.saturating_sub(len);
    }

    /// Whether the session holds a request for a pause (not for a verification).
    fn held_by_pause(&self) -> bool {
        matches!(
            self.held,
            Some(Held {
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
        for owed in &self.owed {
            if matches!(owed, Owed::Reply(Expect::Write { counted: true, .. })) {
                self.gate.write_in_flight(false);
            }
        }
    }
}
