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
//! **Backpressure.** A client that does not read its replies stops being
//! read once its unsent replies (from the node and local ones) pass
//! `limits.max_client_output_bytes`; a held request stops reading too, so
//! what the proxy keeps per connection is bounded.
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
use crate::frame::request::{arguments, Limits, RequestFramer, RequestHead};
use crate::guard::gate::{Admission, Answer, Effect, Gate, Policy, Verdict, Wait};
use crate::guard::lease::Term;

/// Stop reading from the client while this much is queued for the backend.
const HIGH_WATER: usize = 4 * 1024 * 1024;
/// Read buffers grow by at least this much.
const READ_CHUNK: usize = 16 * 1024;

const EXECABORT_PREVIOUS_ERRORS: &[u8] =
    b"-EXECABORT Transaction discarded because of previous errors.\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
const CANNOT_MOVE: &[u8] = b"-ERR leasegate: this node was demoted during a failover and this connection cannot be moved; reconnect\r\n";
/// Stands in for the wait of a session that holds nothing (that select branch is disabled).
const NO_WAIT: Wait = Wait::Verification(0);

/// What a session needs from the proxy.
#[derive(Debug)]
pub struct SessionContext {
    pub gate: Arc<Gate>,
    pub limits: Limits,
    /// `limits.max_client_output_bytes`: past this much unsent reply data a
    /// client is not read from (nor its node replies) until it reads.
    pub max_client_output: usize,
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
    /// A write's reply (or an EXEC's with queued writes): counted, and its
    /// acknowledgement checked against the lease.
    Write(WriteTicket),
    /// MULTI number `n`: `+OK` opens the transaction, an error ends it.
    Multi(u64),
    /// WATCH: `+OK` puts it in force.
    Watch,
    /// A request the Gate observes: its effect applies on `+OK`.
    Observe(Effect),
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
}

/// How a forwarded write's reply is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteTicket {
    /// BLPOP and the like: not counted in flight (they may block for long),
    /// but their completion is reported to the failover.
    blocking: bool,
    /// Counted in writes in flight until the reply comes (not: blocking
    /// writes, and moved sessions' writes, which the other leasegate counts).
    counted: bool,
    /// The lease term the write was admitted in; `None` when nothing is
    /// checked (`lease.mode: disabled`, a moved session).
    term: Option<Term>,
}

impl From<Answer> for Expect {
    fn from(a: Answer) -> Expect {
        match a {
            Answer::Hello => Expect::Hello(None),
            Answer::Replace(b) => Expect::Replace(b),
            Answer::Heartbeat { renewed } => Expect::Heartbeat { renewed },
        }
    }
}

/// MULTI on the backend connection, as its replies have told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
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
    },
    /// The proxy refused a request inside the transaction: EXEC must fail
    /// (EXECABORT), as the node's own refusal would make it.
    Aborted { multi: u64, open: bool },
}

impl Transaction {
    fn is_none(self) -> bool {
        self == Transaction::None
    }

    /// The node answered MULTI with `+OK`: requests are queued from now on.
    fn is_open(self) -> bool {
        matches!(
            self,
            Transaction::Queued { open: true, .. } | Transaction::Aborted { open: true, .. }
        )
    }

    fn has_writes(self) -> bool {
        matches!(self, Transaction::Queued { writes: true, .. })
    }

    fn multi(self) -> Option<u64> {
        match self {
            Transaction::None => None,
            Transaction::Queued { multi, .. } | Transaction::Aborted { multi, .. } => Some(multi),
        }
    }

    /// A write went out inside the transaction.
    fn with_write(self) -> Transaction {
        match self {
            Transaction::Queued { multi, open, .. } => Transaction::Queued {
                multi,
                open,
                writes: true,
            },
            other => other,
        }
    }

    /// The proxy refused a request inside the transaction.
    fn aborted(self) -> Transaction {
        match self {
            Transaction::Queued { multi, open, .. } | Transaction::Aborted { multi, open } => {
                Transaction::Aborted { multi, open }
            }
            Transaction::None => Transaction::None,
        }
    }

    /// The node answered MULTI number `n`: `+OK` opens, anything else ends it.
    fn on_multi_reply(self, n: u64, accepted: bool) -> Transaction {
        match (self, accepted) {
            (t, _) if t.multi() != Some(n) => t,
            (Transaction::Queued { multi, writes, .. }, true) => Transaction::Queued {
                multi,
                open: true,
                writes,
            },
            (Transaction::Aborted { multi, .. }, true) => {
                Transaction::Aborted { multi, open: true }
            }
            (_, _) => Transaction::None,
        }
    }
}

/// WATCH on the backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Off,
    /// The node confirmed a WATCH.
    On,
    /// The session moved while WATCH was in force: the watched keys were
    /// left behind, so the next EXEC fails as a WATCH conflict would.
    Broken,
}

/// Why the session reads no further requests for now.
#[derive(Debug)]
enum Stall {
    None,
    /// The Gate said to hold the request at the head of `from_client`.
    Held(Held),
    /// Move the session (to the new master's leasegate, or back home) once
    /// every reply owed by the current backend has arrived.
    HandingOver(Move),
}

/// Who is on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ordinary,
    /// Authenticated with the control password (until RESET).
    Control,
    /// Connected from `control.allow_from` (kept across RESET).
    Trusted,
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
    /// Bytes of the local replies in `owed` (not yet in `to_client`).
    owed_local: usize,
    resp3: bool,
    /// RESP2 subscribe mode, and the subscription counts the node reported.
    pubsub: bool,
    subscriptions: i64,
    shard_subscriptions: i64,
    monitor: bool,
    transaction: Transaction,
    /// MULTIs sent so far (numbers them, so a late reply finds its own).
    multis: u64,
    watch: Watch,
    peer: Peer,
    stall: Stall,
    /// Bytes at the head of `from_client` that arrived before a mastership
    /// confirmation was requested (pipelined writes share it).
    confirmed: usize,
    /// Moved to the new master's leasegate, which judges requests from now on.
    handed_over: bool,
    /// Connection state replayed on the new connection at a hand-over.
    replay: Replay,
    /// The decision point every request is put to.
    gate: Arc<Gate>,
    /// `limits.max_client_output_bytes`.
    max_output: usize,
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
    let mut s = Session::new(ctx.limits, Arc::clone(&ctx.gate), ctx.max_client_output);
    if client
        .peer_addr()
        .is_ok_and(|peer| ctx.gate.trusts_peer(peer.ip()))
    {
        s.peer = Peer::Trusted;
    }
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
        let read_client = !(client_eof || draining) && s.wants_requests();
        let holding = matches!(s.stall, Stall::Held(_));
        let read_backend = !backend_eof && s.to_client.len() < s.max_output;
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
            r = ctx.gate.wait(s.stall.wait()), if holding => {
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
    fn new(limits: Limits, gate: Arc<Gate>, max_output: usize) -> Session {
        Session {
            from_client: BytesMut::with_capacity(READ_CHUNK),
            to_backend: BytesMut::with_capacity(READ_CHUNK),
            from_backend: BytesMut::with_capacity(READ_CHUNK),
            to_client: BytesMut::with_capacity(READ_CHUNK),
            requests: RequestFramer::new(limits),
            replies: ReplyFramer::new(),
            owed: VecDeque::new(),
            owed_local: 0,
            resp3: false,
            pubsub: false,
            subscriptions: 0,
            shard_subscriptions: 0,
            monitor: false,
            transaction: Transaction::None,
            multis: 0,
            watch: Watch::Off,
            peer: Peer::Ordinary,
            stall: Stall::None,
            confirmed: 0,
            handed_over: false,
            replay: Replay::default(),
            gate,
            max_output,
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
            && matches!(self.stall, Stall::None)
            && self.to_backend.is_empty()
            && self.awaits_nothing()
    }

    /// Whether to read more requests from the client: not while one is
    /// held or the session is moving (what it sent stays in its socket), nor
    /// while its unsent replies are over the bound (backpressure: a client
    /// that does not read cannot grow the proxy), nor while the node is slow
    /// to take what was forwarded.
    #[inline]
    fn wants_requests(&self) -> bool {
        !self.stop_reading
            && matches!(self.stall, Stall::None)
            && self.to_backend.len() < HIGH_WATER
            && self.to_client.len() + self.owed_local < self.max_output
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

    /// Frames, classifies and admits every complete request the client sent,
    /// in order, until one is held.
    fn on_client_data(&mut self) {
        if !matches!(self.stall, Stall::None) {
            return; // framing resumes when the held request is released
        }
        let policy = self.gate.policy();
        while !self.stop_reading {
            let head = match self.requests.next(&self.from_client) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "client protocol error");
                    self.owe_local(e.reply());
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
        let blocking = class == Class::Write && is_blocking(&head, bytes);
        // A write is counted in flight *before* the Gate looks at the pause,
        // and the failover pauses before it reads the count: whichever comes
        // second sees the other, so no write slips past a failover's count.
        let counted = class == Class::Write && !self.handed_over && !self.monitor && !blocking;
        if counted {
            self.gate.role().write_in_flight(true);
        }
        let verdict = match authenticate(&self.gate, &head, bytes) {
            Some((verdict, control)) => {
                if control {
                    self.peer = self.peer.max_control();
                }
                verdict
            }
            None => self.gate.admit(&Admission {
                class,
                command,
                head: &head,
                bytes,
                control: self.peer != Peer::Ordinary,
                verified,
                covered: head.len <= self.confirmed,
                handed_over: self.handed_over,
                buffered: self.from_client.len(),
            }),
        };
        let forwarded = matches!(verdict, Verdict::Forward);
        if counted && !forwarded {
            self.gate.role().write_in_flight(false);
        }
        // Taken after the Gate's lease check and before the write goes out:
        // the node applies it later, within this term if it is acknowledged.
        let write = (class == Class::Write && forwarded).then(|| WriteTicket {
            blocking,
            counted,
            term: if self.handed_over {
                None
            } else {
                self.gate.write_term()
            },
        });
        self.carry_out(head, command.class, verdict, write)
    }

    /// Carries out a verdict for the request at the head of `from_client`.
    /// `class` is the command's own class; `write` is set for a forwarded
    /// request the Gate judged as a write.
    fn carry_out(
        &mut self,
        head: RequestHead,
        class: Class,
        verdict: Verdict,
        write: Option<WriteTicket>,
    ) -> bool {
        if matches!(verdict, Verdict::Forward)
            && self.transaction.is_none()
            && self.watch != Watch::Broken
        {
            // The common case, kept short: the request goes as it came.
            self.to_backend
                .extend_from_slice(&self.from_client[..head.len]);
            self.forwarded(&head, class, write);
            self.consume(head.len);
            return true;
        }
        match self.in_transaction(&head, verdict) {
            Step::Hold(wait) => {
                let arrived = self.from_client.len();
                self.stall = Stall::Held(Held {
                    head,
                    class,
                    wait,
                    arrived,
                });
                return false;
            }
            Step::HandOver(target) => {
                // The request stays at the head until the session has moved.
                self.stall = Stall::HandingOver(target);
                return false;
            }
            Step::Forward
                if self.watch == Watch::Broken
                    && head.name.is(b"exec")
                    && !self.transaction.is_none() =>
            {
                // The WATCH was on the old node: the transaction fails as a
                // WATCH conflict would, and nothing of it is applied.
                if write.is_some_and(|w| w.counted) {
                    self.gate.role().write_in_flight(false);
                }
                self.to_backend.extend_from_slice(DISCARD);
                self.owed
                    .push_back(Owed::Reply(Expect::Replace(self.null_reply())));
                self.transaction = Transaction::None;
                self.watch = Watch::Off;
            }
            Step::Forward => {
                self.to_backend
                    .extend_from_slice(&self.from_client[..head.len]);
                self.forwarded(&head, class, write);
            }
            Step::Observe(effect) => {
                self.to_backend
                    .extend_from_slice(&self.from_client[..head.len]);
                self.owed.push_back(Owed::Reply(Expect::Observe(effect)));
            }
            Step::Rewrite(request, answer) => {
                self.to_backend.extend_from_slice(&request);
                self.owed.push_back(Owed::Reply(answer.into()));
            }
            Step::Answer(reply) => self.owe_local(reply),
            Step::Discard(reply) => {
                // The backend holds an open transaction: close it without
                // applying it, and answer EXEC with `reply`.
                self.to_backend.extend_from_slice(DISCARD);
                self.owed.push_back(Owed::Reply(Expect::Replace(reply)));
                self.transaction = Transaction::None;
                self.watch = Watch::Off; // DISCARD unwatches on the node
            }
        }
        self.consume(head.len);
        true
    }

    /// The wait of a held request is over: ask again (or refuse), then go on
    /// with the requests behind it.
    fn release(&mut self, outcome: Result<(), Bytes>) {
        let Stall::Held(held) = std::mem::replace(&mut self.stall, Stall::None) else {
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
            Err(reply) => self.carry_out(held.head, held.class, Verdict::Reply(reply), None),
        };
        if admitted {
            self.on_client_data();
        } else {
            self.settle();
        }
    }

    /// Inside an open transaction, queued commands are only queued: the Gate
    /// judges the transaction at EXEC (a write if a queued command was).
    /// Before the node has confirmed MULTI, writes are judged one by one.
    #[inline]
    fn gated_class(&self, head: &RequestHead, class: Class) -> Class {
        match self.transaction {
            Transaction::None => class,
            t if head.name.is(b"exec") => {
                if t.has_writes() {
                    Class::Write
                } else {
                    class
                }
            }
            t if t.is_open() && class == Class::Write => Class::Read,
            _ => class,
        }
    }

    /// Book-keeping for a request that goes to the backend as it came.
    #[inline]
    fn forwarded(&mut self, head: &RequestHead, class: Class, write: Option<WriteTicket>) {
        if class == Class::Write {
            self.transaction = self.transaction.with_write();
        }
        if let Some(ticket) = write {
            if head.name.is(b"exec") {
                // An EXEC of queued writes: the transaction ends on the node.
                self.transaction = Transaction::None;
                self.watch = Watch::Off;
            }
            self.owed.push_back(Owed::Reply(Expect::Write(ticket)));
            return;
        }
        let name = &head.name;
        let expect = if let Some(slot) = ReplaySlot::of(head) {
            let request = Bytes::copy_from_slice(&self.from_client[..head.len]);
            match slot {
                ReplaySlot::Hello => Expect::Hello(Some(request)),
                slot => Expect::Remember(slot, request),
            }
        } else if name.is(b"multi") {
            if self.transaction.is_none() {
                self.multis += 1;
                self.transaction = Transaction::Queued {
                    multi: self.multis,
                    open: false,
                    writes: false,
                };
                Expect::Multi(self.multis)
            } else {
                Expect::Plain // nested: the node refuses it, the transaction stays
            }
        } else if name.is(b"exec") || name.is(b"discard") {
            if !self.transaction.is_none() {
                // EXEC and DISCARD end a transaction and its WATCH; without
                // MULTI the node refuses them and WATCH stays.
                self.transaction = Transaction::None;
                self.watch = Watch::Off;
            }
            Expect::Plain
        } else if name.is(b"watch") {
            Expect::Watch
        } else if name.is(b"unwatch") {
            self.watch = Watch::Off;
            Expect::Plain
        } else if name.is(b"reset") {
            self.transaction = Transaction::None;
            self.watch = Watch::Off;
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
        if self.transaction.is_none() {
            return match verdict {
                Verdict::Forward => Step::Forward,
                Verdict::Observe(effect) => Step::Observe(effect),
                Verdict::Reply(reply) => Step::Answer(reply),
                Verdict::Rewrite { request, answer } => Step::Rewrite(request, answer),
                Verdict::Hold(wait) => Step::Hold(wait),
                Verdict::HandOver(addr) => Step::HandOver(Move::Away(addr)),
                Verdict::ReturnHome => Step::HandOver(Move::Home),
            };
        }
        let exec = head.name.is(b"exec");
        match verdict {
            // The transaction is queued on the old node: EXEC fails like a
            // WATCH conflict and the session moves on its next write; other
            // commands keep queueing where the transaction is.
            Verdict::HandOver(_) | Verdict::ReturnHome if exec => Step::Discard(self.null_reply()),
            Verdict::HandOver(_) | Verdict::ReturnHome if self.transaction.is_open() => {
                Step::Forward
            }
            // MULTI is not confirmed yet: wait for the node's answer before
            // deciding (see `handover_ready`); forwarding could run the write.
            Verdict::HandOver(addr) => Step::HandOver(Move::Away(addr)),
            Verdict::ReturnHome => Step::HandOver(Move::Home),
            Verdict::Hold(wait) => Step::Hold(wait),
            Verdict::Rewrite { request, answer } => Step::Rewrite(request, answer),
            Verdict::Reply(reply) if exec => Step::Discard(reply),
            Verdict::Reply(reply) => {
                self.transaction = self.transaction.aborted();
                Step::Answer(reply)
            }
            Verdict::Forward if exec && matches!(self.transaction, Transaction::Aborted { .. }) => {
                Step::Discard(Bytes::from_static(EXECABORT_PREVIOUS_ERRORS))
            }
            Verdict::Forward => Step::Forward,
            Verdict::Observe(effect) => Step::Observe(effect),
        }
    }
}

impl Stall {
    /// What the held request waits for.
    fn wait(&self) -> &Wait {
        match self {
            Stall::Held(held) => &held.wait,
            _ => &NO_WAIT,
        }
    }
}

impl Peer {
    /// After a control AUTH: trusted peers stay trusted.
    fn max_control(self) -> Peer {
        match self {
            Peer::Trusted => Peer::Trusted,
            _ => Peer::Control,
        }
    }
}

/// How the session carries out a verdict.
enum Step {
    /// The request's bytes go to the backend.
    Forward,
    /// The request's bytes go to the backend; the Gate applies the effect
    /// if the node accepts it.
    Observe(Effect),
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
                dyn std::future::Future<
                        Output = Result<TcpStream, crate::proxy::backend::BackendError>,
                    > + Send,
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
            if let Some(to) = ctx.gate.role().handover_target() {
                let (addr, timeout) = (Arc::clone(&to), ctx.connect_timeout);
                let connecting =
                    async move { crate::proxy::backend::connect(&addr, timeout).await };
                *this = Some(Preconnect::Opening(to, Box::pin(connecting)));
            }
        } else if matches!(s.stall, Stall::None) {
            *this = None;
        }
    }

    /// The connection attempt finished.
    fn opened(
        this: &mut Option<Preconnect>,
        result: Result<TcpStream, crate::proxy::backend::BackendError>,
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

/// What is replayed on the new connection at a hand-over: the last AUTH,
/// HELLO, SELECT and CLIENT SETNAME the node accepted, as the client sent them.
#[derive(Debug, Default)]
struct Replay {
    auth: Option<Bytes>,
    hello: Option<Bytes>,
    select: Option<Bytes>,
    setname: Option<Bytes>,
}

/// Which connection state a request sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplaySlot {
    Auth,
    Hello,
    Select,
    SetName,
}

impl ReplaySlot {
    #[inline]
    fn of(head: &RequestHead) -> Option<ReplaySlot> {
        let name = &head.name;
        if name.is(b"auth") {
            Some(ReplaySlot::Auth)
        } else if name.is(b"hello") {
            Some(ReplaySlot::Hello)
        } else if name.is(b"select") {
            Some(ReplaySlot::Select)
        } else if name.is(b"client") && head.sub.is(b"setname") {
            Some(ReplaySlot::SetName)
        } else {
            None
        }
    }
}

impl Replay {
    fn slot(&mut self, slot: ReplaySlot) -> &mut Option<Bytes> {
        match slot {
            ReplaySlot::Auth => &mut self.auth,
            ReplaySlot::Hello => &mut self.hello,
            ReplaySlot::Select => &mut self.select,
            ReplaySlot::SetName => &mut self.setname,
        }
    }
}

/// Writes that may block for a long time before they answer (so they are
/// not counted in flight). XREADGROUP blocks only with a `BLOCK` option.
#[inline]
fn is_blocking(head: &RequestHead, bytes: &[u8]) -> bool {
    match head.name.as_bytes() {
        b"blpop" | b"brpop" | b"brpoplpush" | b"blmove" | b"blmpop" | b"bzpopmin" | b"bzpopmax"
        | b"bzmpop" => true,
        b"xreadgroup" | b"xread" => arguments(bytes, head.inline)
            .iter()
            .any(|a| a.eq_ignore_ascii_case(b"block")),
        _ => false,
    }
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
/// Returns what to do instead, and whether the connection is now the
/// controller's.
#[inline]
fn authenticate(gate: &Gate, head: &RequestHead, bytes: &[u8]) -> Option<(Verdict, bool)> {
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
            Some(Owed::Reply(Expect::Write(ticket))) => self.on_write_reply(ticket, range),
            Some(Owed::Reply(Expect::Replace(reply))) => self.to_client.extend_from_slice(&reply),
            Some(Owed::Reply(Expect::Heartbeat { renewed })) => {
                let report = self
                    .gate
                    .heartbeat_reply(&self.from_backend[range], renewed);
                self.to_client.extend_from_slice(&report);
            }
            Some(Owed::Reply(expect)) => {
                self.on_state_reply(expect, &head, &range);
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

    /// A write's reply: counted back, and passed on only if it came while
    /// the lease it was admitted under still held (else: unknown outcome).
    #[inline]
    fn on_write_reply(&mut self, ticket: WriteTicket, range: std::ops::Range<usize>) {
        if ticket.counted {
            self.gate.role().write_in_flight(false);
        }
        if ticket.blocking {
            self.gate.role().blocking_write_completed();
        }
        let reply = &self.from_backend[range];
        match ticket
            .term
            .and_then(|t| self.gate.acknowledgement(t, reply))
        {
            Some(instead) => self.to_client.extend_from_slice(instead),
            None => self.to_client.extend_from_slice(reply),
        }
    }

    /// Replies that change what the session knows about the connection.
    fn on_state_reply(&mut self, expect: Expect, head: &ReplyHead, range: &std::ops::Range<usize>) {
        let ok = &self.from_backend[range.clone()] == b"+OK\r\n";
        match expect {
            Expect::Multi(n) => self.transaction = self.transaction.on_multi_reply(n, ok),
            Expect::Watch if ok && self.watch == Watch::Off => self.watch = Watch::On,
            Expect::Observe(effect) if ok => self.gate.accepted(&effect),
            Expect::Hello(request) if !matches!(head.kind, b'-' | b'!') => {
                self.resp3 = head.kind == b'%';
                if request.is_some() {
                    self.replay.hello = request;
                }
            }
            Expect::Remember(slot, request) if !matches!(head.kind, b'-' | b'!') => {
                *self.replay.slot(slot) = Some(request);
            }
            Expect::Reset if head.kind == b'+' => {
                // RESET drops the connection's authentication too.
                if self.peer == Peer::Control {
                    self.peer = Peer::Ordinary;
                }
                self.resp3 = false;
                self.pubsub = false;
                self.monitor = false;
                self.subscriptions = 0;
                self.shard_subscriptions = 0;
            }
            _ => {}
        }
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
                Owed::Local(reply) => {
                    self.owed_local -= reply.len();
                    self.to_client.extend_from_slice(reply);
                }
                Owed::PubSub => self.pubsub = true,
                Owed::Monitor => self.monitor = true,
                Owed::Close => {
                    self.closing = true;
                    self.owed.clear();
                    self.owed_local = 0;
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
        if !matches!(self.stall, Stall::HandingOver(_)) {
            return None;
        }
        if self.pubsub
            || self.monitor
            || self.owed.iter().any(|o| {
                matches!(
                    o,
                    Owed::Reply(Expect::Write(WriteTicket { blocking: true, .. }))
                )
            })
        {
            // A subscriber or a blocked client cannot be moved transparently.
            self.owe_local(Bytes::from_static(CANNOT_MOVE));
            self.owed.push_back(Owed::Close);
            self.stall = Stall::None;
            self.stop_reading = true;
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
            None => crate::proxy::backend::connect(addr, timeout).await,
        };
        match connected {
            Ok(stream) => {
                debug!(%addr, ?target, "session moved");
                self.handed_over = matches!(target, Move::Away(_));
                if self.watch == Watch::On {
                    self.watch = Watch::Broken;
                }
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
                    self.carry_out(held, Class::Write, Verdict::Reply(reply), None);
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

    /// Takes `len` bytes of handled request off the client buffer.
    #[inline]
    fn consume(&mut self, len: usize) {
        self.from_client.advance(len);
        self.confirmed = self.confirmed.saturating_sub(len);
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
        for owed in &self.owed {
            if matches!(
                owed,
                Owed::Reply(Expect::Write(WriteTicket { counted: true, .. }))
            ) {
                self.gate.role().write_in_flight(false);
            }
        }
    }
}

/// The session state machine fed byte streams, without sockets: what goes
/// to the node, what the client gets, and the state the replies drive.
#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::guard::gate::for_tests;
    use crate::guard::lease::{LeaseMode, ManualClock};

    pub const ME: &str = "0123456789012345678901234567890123456789";

    pub fn session(mode: LeaseMode) -> (Arc<ManualClock>, Arc<Gate>, Session) {
        session_with_output(mode, 1 << 20)
    }

    pub fn session_with_output(
        mode: LeaseMode,
        max_output: usize,
    ) -> (Arc<ManualClock>, Arc<Gate>, Session) {
        let (clock, gate) = for_tests(mode, &[], ME);
        let gate = Arc::new(gate);
        let limits = Limits {
            max_bulk_len: 1 << 20,
            max_multibulk_len: 1 << 10,
            max_inline_len: 1 << 10,
        };
        let s = Session::new(limits, Arc::clone(&gate), max_output);
        (clock, gate, s)
    }

    pub fn resp(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    }

    /// The client sends these requests (one read).
    pub fn client(s: &mut Session, requests: &[&[&str]]) {
        for r in requests {
            s.from_client.extend_from_slice(&resp(r));
        }
        s.on_client_data();
    }

    /// The node answers with these frames.
    pub fn node(s: &mut Session, replies: &[u8]) {
        s.from_backend.extend_from_slice(replies);
        s.on_backend_data().expect("valid replies");
    }

    /// What went to the node since the last look.
    pub fn to_node(s: &mut Session) -> Vec<u8> {
        s.to_backend.split().to_vec()
    }

    /// What the client got since the last look.
    pub fn to_client(s: &mut Session) -> Vec<u8> {
        s.to_client.split().to_vec()
    }

    pub fn grant(gate: &Gate, ttl_ms: u64) {
        let grant = crate::guard::lease::Grant {
            master_node_id: Some(ME.into()),
            ttl_ms,
            epoch: 0,
            nonce: None,
            anchor: None,
        };
        gate.lease()
            .grant(&grant, gate.lease().now())
            .expect("granted");
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::guard::gate::UNKNOWN_OUTCOME;
    use crate::guard::lease::LeaseMode;

    const OTHER: &str = "9999999999999999999999999999999999999999";
    const FENCED: &[u8] =
        b"-READONLY master lease expired, writes are fenced on this node (epoch 0)\r\n";

    #[test]
    fn a_refused_multi_opens_no_path_past_the_gate() {
        let (_, _, mut s) = session(LeaseMode::BlockWrite);
        client(&mut s, &[&["SET", "k", "v"]]);
        assert!(to_node(&mut s).is_empty());
        assert_eq!(to_client(&mut s), FENCED);
        // MULTI with an argument: the node refuses it.
        client(&mut s, &[&["MULTI", "x"], &["SET", "k", "v"]]);
        assert_eq!(
            to_node(&mut s),
            resp(&["MULTI", "x"]),
            "the SET behind an unconfirmed MULTI is judged as a write"
        );
        node(
            &mut s,
            b"-ERR wrong number of arguments for 'multi' command\r\n",
        );
        assert_eq!(s.transaction, Transaction::None);
        let got = to_client(&mut s);
        assert!(got.ends_with(FENCED), "{}", String::from_utf8_lossy(&got));
        client(&mut s, &[&["SET", "k", "v"]]);
        assert!(to_node(&mut s).is_empty(), "still fenced after the refusal");
        assert_eq!(to_client(&mut s), FENCED);
        // NOAUTH refuses MULTI the same way.
        client(&mut s, &[&["MULTI"]]);
        to_node(&mut s);
        node(&mut s, b"-NOAUTH Authentication required.\r\n");
        client(&mut s, &[&["SET", "k", "v"]]);
        assert!(to_node(&mut s).is_empty());
    }

    #[test]
    fn a_confirmed_multi_queues_and_exec_is_judged() {
        let (_, gate, mut s) = session(LeaseMode::BlockWrite);
        grant(&gate, 60_000);
        client(&mut s, &[&["MULTI"]]);
        node(&mut s, b"+OK\r\n");
        assert!(s.transaction.is_open());
        gate.lease().revoke("test");
        // Queued writes are only queued; EXEC is the write and is refused.
        client(&mut s, &[&["SET", "k", "v"]]);
        assert_eq!(
            to_node(&mut s),
            [resp(&["MULTI"]), resp(&["SET", "k", "v"])].concat()
        );
        node(&mut s, b"+QUEUED\r\n");
        client(&mut s, &[&["EXEC"]]);
        assert_eq!(to_node(&mut s), DISCARD, "EXEC turned into DISCARD");
        node(&mut s, b"+OK\r\n");
        assert_eq!(
            to_client(&mut s),
            [
                &b"+OK\r\n+QUEUED\r\n"[..],
                &b"-EXECABORT Transaction discarded because the master lease expired\r\n"[..]
            ]
            .concat()
        );
        assert_eq!(s.transaction, Transaction::None);
    }

    #[test]
    fn a_late_acknowledgement_is_an_unknown_outcome() {
        let (clock, gate, mut s) = session(LeaseMode::BlockWrite);
        grant(&gate, 1000);
        client(&mut s, &[&["SET", "k", "v"], &["INCR", "n"], &["GET", "k"]]);
        assert_eq!(gate.role().writes_in_flight(), 2);
        node(&mut s, b"+OK\r\n");
        clock.advance_ms(1000); // the node held the INCR past the deadline
        node(&mut s, b":1\r\n$1\r\nv\r\n");
        assert_eq!(
            to_client(&mut s),
            [&b"+OK\r\n"[..], UNKNOWN_OUTCOME, b"$1\r\nv\r\n"].concat()
        );
        assert_eq!(gate.role().writes_in_flight(), 0);
        assert_eq!(gate.metrics.unknown_outcomes.get(), 1);
        // An error passes as it is: nothing was acknowledged.
        grant(&gate, 1000);
        client(&mut s, &[&["SET", "k", "v"]]);
        gate.lease().revoke("test");
        node(&mut s, b"-OOM no memory\r\n");
        assert_eq!(to_client(&mut s), b"-OOM no memory\r\n");
    }

    #[test]
    fn log_only_counts_late_acknowledgements_and_passes_them() {
        let (clock, gate, mut s) = session(LeaseMode::LogOnly);
        grant(&gate, 1000);
        client(&mut s, &[&["SET", "k", "v"]]);
        clock.advance_ms(2000);
        node(&mut s, b"+OK\r\n");
        assert_eq!(to_client(&mut s), b"+OK\r\n");
        assert_eq!(gate.metrics.late_acknowledgements_log_only.get(), 1);
    }

    #[test]
    fn role_changes_and_node_ids_follow_the_nodes_answer() {
        let (_, gate, mut s) = session(LeaseMode::BlockWrite);
        grant(&gate, 60_000);
        client(&mut s, &[&["REPLICAOF", "127.0.0.1", "1"]]);
        node(&mut s, b"-NOAUTH Authentication required.\r\n");
        assert!(
            gate.lease().write_allowed(),
            "a refused REPLICAOF changes nothing"
        );
        client(&mut s, &[&["REPLICAOF", "127.0.0.1", "1"]]);
        node(&mut s, b"+OK\r\n");
        assert!(!gate.lease().write_allowed(), "an accepted one revokes");

        // SETNODEID: an ordinary client's never teaches the id, even accepted.
        let (_, gate, mut s) = session(LeaseMode::BlockWrite);
        client(&mut s, &[&["CLUSTERX", "SETNODEID", OTHER]]);
        node(&mut s, b"+OK\r\n");
        assert_eq!(gate.lease().node_id().as_deref(), Some(ME));
    }

    #[test]
    fn setnodeid_from_the_controller_is_learned_on_ok_only() {
        let (_, _, mut s) = session(LeaseMode::BlockWrite);
        s.peer = Peer::Control;
        client(&mut s, &[&["CLUSTERX", "SETNODEID", OTHER]]);
        assert_eq!(
            s.owed
                .front()
                .map(|o| matches!(o, Owed::Reply(Expect::Observe(Effect::NodeId(_))))),
            Some(true)
        );
        node(&mut s, b"-ERR Invalid node id\r\n");
        assert!(s.owed.is_empty());
    }

    #[test]
    fn a_broken_watch_fails_only_the_next_exec() {
        let (_, _, mut s) = session(LeaseMode::Disabled);
        client(&mut s, &[&["WATCH", "k"]]);
        node(&mut s, b"+OK\r\n");
        assert_eq!(s.watch, Watch::On);
        s.watch = Watch::Broken; // as a hand-over leaves it
        to_node(&mut s);
        to_client(&mut s);
        // MULTI … DISCARD unwatches on the node: the next transaction runs.
        client(&mut s, &[&["MULTI"], &["DISCARD"]]);
        node(&mut s, b"+OK\r\n+OK\r\n");
        assert_eq!(s.watch, Watch::Off);
        client(&mut s, &[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]);
        assert_eq!(
            to_node(&mut s),
            [
                resp(&["MULTI"]),
                resp(&["DISCARD"]),
                resp(&["MULTI"]),
                resp(&["SET", "k", "v"]),
                resp(&["EXEC"])
            ]
            .concat()
        );
        // A broken watch still fails the EXEC it applies to.
        client(&mut s, &[&["WATCH", "k"]]);
        node(&mut s, b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n+OK\r\n");
        s.watch = Watch::Broken;
        to_node(&mut s);
        to_client(&mut s);
        client(&mut s, &[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]);
        let sent = to_node(&mut s);
        assert!(
            sent.ends_with(DISCARD),
            "{}",
            String::from_utf8_lossy(&sent)
        );
        node(&mut s, b"+OK\r\n+QUEUED\r\n+OK\r\n");
        assert_eq!(to_client(&mut s), b"+OK\r\n+QUEUED\r\n*-1\r\n");
    }

    #[test]
    fn a_client_that_does_not_read_stops_being_read() {
        let (_, _, mut s) = session_with_output(LeaseMode::BlockWrite, 4096);
        assert!(s.wants_requests());
        // Pipelined heartbeats from an ordinary client: answered locally.
        let heartbeat: &[&str] = &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"];
        let many: Vec<&[&str]> = std::iter::repeat_n(heartbeat, 200).collect();
        client(&mut s, &many);
        assert!(s.to_client.len() > 4096);
        assert!(!s.wants_requests(), "over the bound: not read");
        to_client(&mut s); // the client reads
        assert!(s.wants_requests());
        // Local replies waiting behind a node reply count too.
        client(&mut s, &[&["GET", "k"]]);
        client(&mut s, &many);
        assert!(s.to_client.is_empty() && s.owed_local > 4096);
        assert!(!s.wants_requests());
        node(&mut s, b"$-1\r\n");
        assert_eq!(s.owed_local, 0);
    }

    #[test]
    fn writes_in_flight_cover_exec_and_blocking_pops() {
        let (_, gate, mut s) = session(LeaseMode::Disabled);
        client(&mut s, &[&["MULTI"]]);
        node(&mut s, b"+OK\r\n");
        client(&mut s, &[&["SET", "k", "v"]]);
        node(&mut s, b"+QUEUED\r\n");
        assert_eq!(
            gate.role().writes_in_flight(),
            0,
            "a queued write is not in flight"
        );
        client(&mut s, &[&["EXEC"]]);
        assert_eq!(
            gate.role().writes_in_flight(),
            1,
            "EXEC of writes is counted"
        );
        node(&mut s, b"*1\r\n+OK\r\n");
        assert_eq!(gate.role().writes_in_flight(), 0);
        // BLPOP is not counted (it may block), but its completion is reported.
        client(&mut s, &[&["BLPOP", "q", "0"]]);
        assert_eq!(gate.role().writes_in_flight(), 0);
        node(&mut s, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
        assert_eq!(gate.role().blocking_writes_completed(), 1);
        // XREADGROUP without BLOCK answers at once: an ordinary write.
        client(
            &mut s,
            &[&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]],
        );
        assert_eq!(gate.role().writes_in_flight(), 1);
        node(&mut s, b"*-1\r\n");
        assert_eq!(gate.role().writes_in_flight(), 0);
        client(
            &mut s,
            &[&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">",
            ]],
        );
        assert_eq!(gate.role().writes_in_flight(), 0);
    }

    #[test]
    fn client_reply_off_is_refused_so_replies_stay_matched() {
        let (_, gate, mut s) = session(LeaseMode::Disabled);
        client(&mut s, &[&["CLIENT", "REPLY", "OFF"], &["SET", "k", "v"]]);
        assert_eq!(to_node(&mut s), resp(&["SET", "k", "v"]));
        node(&mut s, b"+OK\r\n");
        let got = to_client(&mut s);
        assert!(got.starts_with(b"-ERR leasegate does not support CLIENT REPLY"));
        assert!(got.ends_with(b"+OK\r\n"));
        assert_eq!(gate.role().writes_in_flight(), 0);
        assert!(s.owed.is_empty());
    }

    #[test]
    fn only_accepted_connection_state_is_replayed() {
        let (_, _, mut s) = session(LeaseMode::Disabled);
        client(
            &mut s,
            &[&["SELECT", "1"], &["SELECT", "99"], &["AUTH", "nope"]],
        );
        node(
            &mut s,
            b"+OK\r\n-ERR DB index is out of range\r\n-WRONGPASS invalid username-password pair\r\n",
        );
        assert_eq!(
            s.replay.select.as_deref(),
            Some(&resp(&["SELECT", "1"])[..])
        );
        assert_eq!(s.replay.auth, None);
        client(&mut s, &[&["HELLO", "3"]]);
        node(&mut s, b"%1\r\n+proto\r\n:3\r\n");
        assert!(s.resp3);
        assert_eq!(s.replay.hello.as_deref(), Some(&resp(&["HELLO", "3"])[..]));
    }
}
