//! What drives one session: its two sockets, its timers and the drain
//! signal, turned into one [`Event`] at a time for the session's state
//! machine ([`Session`]), which never touches a socket itself.
//!
//! Each turn of the loop in [`Driver::run`]:
//!
//! 1. [`Driver::plan`] decides what the turn waits on (whether to read the
//!    client, whether the node's replies are backpressured, a held request,
//!    a held acknowledgement, a connection opened ahead of a hand-over);
//! 2. the loop polls those sources itself, in a fixed order (writes first,
//!    the node's replies before the client's requests, the drain signal
//!    last), and takes the first that is ready;
//! 3. [`Driver::on_event`] hands it to the session and sends at once what
//!    the session queued.
//!
//! Measured hot path: polling the sources by hand replaced `tokio::select!`,
//! which built, polled and dropped ten branch futures on every turn, and a
//! socket's read side is polled only once it was woken ([`WokenRead`]):
//! callgrind, SET at `-P 1`, 4,873 → 4,362 instructions per request; at
//! `-P 16`, 942 → 910. The polling stays in `run`'s own body: behind an
//! `async fn` of its own it cost ~65 more instructions a request at `-P 1`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

mod events;
mod moves;
mod unread;

use events::Event;

use crate::guard::verify::Ticket;

use super::handover::Preconnect;
use super::idle::IdleTimer;
use super::io::ClientIo;
use super::state::Stall;
use super::trim::Trim;
use super::woken::{Woken, WokenRead};
use super::{Session, SessionContext};
use crate::proxy::backend::NodeConn;

/// How long the end of a session may wait for the client's connection to
/// take its last bytes and its shutdown.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// After the client's end, how many quiet [`super::trim::TRIM_AFTER`]
/// periods (seconds) the session waits for the node's replies before it
/// gives them up: a node making progress (a long pipeline after a
/// half-close) keeps it going.
const CLIENT_GONE_QUIET_PERIODS: u32 = 10;

/// Read buffers grow by at least this much.
const READ_CHUNK: usize = 16 * 1024;

/// What one turn waits on besides writes, timers and the drain signal.
#[derive(Clone, Copy)]
struct Turn {
    read_client: bool,
    read_backend: bool,
    opening: bool,
    holding: bool,
    confirming: bool,
    /// The session streams to a replica that a failover may poke.
    pokable: bool,
    /// A blocking command (BLPOP & co.) waits on the node: the wait for the
    /// node's demotion ([`Driver::unblockable`]).
    blocked: bool,
    /// Past its output bound with a write in flight: the wait for a pause
    /// to begin ([`unread`]).
    unread: bool,
    /// Past the allowance during a pause: the client is closed.
    give_up: bool,
}

/// One session's sockets, timers and drain signal, and what the loop knows
/// of them; `C` is the client's connection, plain or TLS ([`ClientIo`]).
pub(super) struct Driver<C: ClientIo> {
    client: C,
    backend: NodeConn,
    client_read: WokenRead,
    backend_read: WokenRead,
    client_eof: bool,
    backend_eof: bool,
    /// SIGTERM came: no more requests are read.
    draining: bool,
    /// Once draining: the drain's deadline ([`super::stopping`]).
    deadline: Option<Woken<WaitForCancellationFutureOwned>>,
    preconnect: Option<Preconnect>,
    idle: Option<IdleTimer>,
    trim: Trim,
    /// Created once: a fresh `cancelled()` per turn would register with,
    /// and leave, the token's shared waiter list on every request. Polled
    /// only once woken ([`Woken`]): the loop turns at least once per read.
    shutdown: Woken<WaitForCancellationFutureOwned>,
    /// The same signal, for the wait of [`Driver::outlive_node`].
    stopping: CancellationToken,
    /// The node's replies are not read (the client's unsent replies are
    /// over the bound): counted once per stall.
    backpressured: bool,
    /// The client's first read is still to come: it asks the kernel when
    /// the bytes arrived ([`crate::proxy::rxtime`]).
    first_read: bool,
    /// A replica's stream: the wait for a failover's poke.
    poked: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// A blocking command waits on the node: the wait for the probe to see
    /// the node demoted.
    demoted: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Past its output bound with a write in flight: the wait for a pause
    /// to begin ([`unread`]).
    hold_start: unread::HoldStart,
}

impl<C: ClientIo> Driver<C> {
    pub(super) fn new(
        client: C,
        backend: NodeConn,
        ctx: &SessionContext,
        shutdown: &CancellationToken,
    ) -> Driver<C> {
        Driver {
            client,
            backend,
            client_read: WokenRead::default(),
            backend_read: WokenRead::default(),
            client_eof: false,
            backend_eof: false,
            draining: false,
            deadline: None,
            preconnect: None,
            idle: IdleTimer::new(ctx.idle_timeout),
            trim: Trim::new(),
            shutdown: Woken::new(shutdown.clone().cancelled_owned()),
            stopping: shutdown.clone(),
            backpressured: false,
            first_read: true,
            poked: None,
            demoted: None,
            hold_start: None,
        }
    }

    /// A session moved here from the predecessor: its first read is not
    /// its first bytes.
    pub(super) fn moved_in(&mut self) {
        self.first_read = false;
    }

    /// What this turn waits on; makes room in the read buffers.
    /// `completing`: about to move at an upgrade, a TLS connection (the
    /// client's or the node's) holds input not yet read
    /// ([`ClientIo::holds_input`]): the client is read on.
    #[inline]
    fn plan(&mut self, s: &mut Session, ctx: &SessionContext, completing: bool) -> Turn {
        if self.preconnect.is_some() || !matches!(s.stall, Stall::None) {
            Preconnect::plan::<C>(&mut self.preconnect, s, ctx);
        }
        // Replies held for a `WAIT` do not count: its answer must be read.
        let unsent = s.client_bytes().len() + s.unconfirmed_bytes();
        let mut read_backend = !self.backend_eof && unsent < s.max_output;
        let (mut unread, mut give_up) = (false, false);
        if !read_backend && !self.backend_eof {
            match self.past_bound(s, ctx, unsent) {
                unread::PastBound::Wait => unread = self.hold_start.is_some(),
                unread::PastBound::ReadOn => read_backend = true,
                unread::PastBound::GiveUp => give_up = true,
            }
        }
        if !self.backend_eof && read_backend == self.backpressured {
            // Entering (or leaving) backpressure: counted once per stall.
            self.backpressured = !read_backend;
            if self.backpressured {
                ctx.metrics.backpressure.inc();
            }
        }
        if !self.trim.trimmed {
            reserve(&mut s.from_client);
            reserve(&mut s.from_backend);
        }
        Turn {
            read_client: !self.client_eof && (!self.draining || completing) && s.wants_requests(),
            read_backend,
            opening: matches!(self.preconnect, Some(Preconnect::Opening(..))),
            holding: matches!(s.stall, Stall::Held(_)),
            confirming: s.unconfirmed.is_some(),
            pokable: self.pokable(s),
            blocked: self.unblockable(s, ctx),
            unread,
            give_up,
        }
    }

    /// Whether a blocking command waits on the node; the wait for the node's
    /// demotion is made when one begins to, and dropped when none does.
    /// Kvrocks keeps a client blocked when the node becomes a replica
    /// (Redis answers it `-UNBLOCKED`): its elements now go to the new
    /// master, and it would wait for good.
    #[inline]
    fn unblockable(&mut self, s: &Session, ctx: &SessionContext) -> bool {
        // A session moved to another node's leasegate blocks there: this
        // node's demotion says nothing of it (answering it "nothing was
        // taken" while its command still waited there lost the element
        // that command then took: walkthrough 22).
        if s.blocking_out == 0 || self.backend_eof || s.handed_over {
            if self.demoted.is_some() {
                self.demoted = None;
            }
            return false;
        }
        if self.demoted.is_none() {
            let role = std::sync::Arc::clone(ctx.gate.role());
            let seen = role.node.demotions();
            self.demoted = Some(Box::pin(async move { role.node.demoted_since(seen).await }));
        }
        true
    }

    /// Whether a failover may poke this session's stream; the wait for it
    /// is made once the session streams to a replica.
    #[inline]
    fn pokable(&mut self, s: &Session) -> bool {
        if self.poked.is_none() {
            let Some(poke) = s.replica.poke() else {
                return false;
            };
            let poke = std::sync::Arc::clone(poke);
            self.poked = Some(Box::pin(async move { poke.notified().await }));
        }
        true
    }

    /// Drives the session turn by turn until it has nothing left to do,
    /// then ends the client's side of the connection; or, at an upgrade,
    /// until it may move to the successor process, and returns it
    /// ([`super::moving`]).
    pub(super) async fn run(
        mut self,
        mut s: Session,
        ctx: &SessionContext,
    ) -> Option<super::moving::MovedSession> {
        loop {
            // At an upgrade: the session moves once it may. Until then a TLS
            // record half received (from the client or the node) is read
            // on, not cut.
            let moving =
                self.draining && !self.client_eof && !self.backend_eof && ctx.mover.is_moving();
            let completing = moving
                && ctx.mover.takes_tls()
                && ((C::TLS && self.client.holds_input()) || self.backend.holds_input());
            if moving && self.may_move(&s, ctx) {
                let moved = self.move_out(s);
                if moved.is_none() {
                    tracing::warn!("a session's sockets could not leave for the successor: closed");
                }
                return moved;
            }
            if self.backend_eof
                && !self.client_eof
                && !self.draining
                && s.may_outlive_node()
                && self.outlive_node(&mut s, ctx).await
            {
                let moved = self.move_waiting(s);
                if moved.is_none() {
                    tracing::warn!(
                        "a session waiting for its node could not leave for the successor: closed"
                    );
                }
                return moved;
            }
            // Not on a node connection that is gone (a Kvrocks node that
            // turned replica under a blocking command): the write goes on
            // the next one.
            if s.behind_block && !self.backend_eof && s.resume_behind_block() {
                continue;
            }
            if s.finished(self.client_eof, self.draining, self.backend_eof) && !completing {
                break;
            }
            if let Some(target) = Self::move_due(&mut s) {
                self.hand_over(target, &mut s, ctx).await;
                continue;
            }
            let turn = self.plan(&mut s, ctx, completing);
            if turn.give_up {
                self.give_up(s, ctx);
                return None;
            }
            // The first of this turn's sources to be ready.
            let event = {
                // The two waits on the Gate are async blocks, built for nothing and
                // polled only while enabled: a wait future built (and dropped) on
                // every turn cost ~100 instructions a request at `-P 1`.
                let held = s.stall.wait();
                let round = s.unconfirmed.unwrap_or(Ticket::NONE);
                let mut released = std::pin::pin!(async { ctx.gate.wait(held).await });
                let mut confirmed = std::pin::pin!(async { ctx.gate.settled(round).await });
                std::future::poll_fn(|cx| {
                    // `poll_write` (one `send`) rather than `write_buf`, which tokio
                    // makes a `writev` through the VFS layers: the buffers are
                    // contiguous anyway.
                    let to_client = super::acks::sendable(&s.to_client, &s.ack_hold);
                    if !to_client.is_empty() {
                        if let Poll::Ready(r) = Pin::new(&mut self.client).poll_write(cx, to_client)
                        {
                            return Poll::Ready(Event::ClientWrote(transferred(r)));
                        }
                    }
                    // TLS records a write left in rustls' buffer (a constant
                    // `false` for plain TCP: no branch there).
                    if self.client.unflushed() {
                        if let Poll::Ready(Err(_)) = Pin::new(&mut self.client).poll_flush(cx) {
                            return Poll::Ready(Event::ClientWrote(None));
                        }
                    }
                    if !s.to_backend.is_empty() {
                        if let Poll::Ready(r) =
                            Pin::new(&mut self.backend).poll_write(cx, &s.to_backend)
                        {
                            return Poll::Ready(Event::BackendWrote(transferred(r)));
                        }
                    }
                    if self.backend.unflushed() {
                        if let Poll::Ready(Err(_)) = Pin::new(&mut self.backend).poll_flush(cx) {
                            return Poll::Ready(Event::BackendWrote(None));
                        }
                    }
                    if turn.read_backend {
                        let read =
                            self.backend_read
                                .poll_read(cx, &mut self.backend, &mut s.from_backend);
                        if let Poll::Ready(r) = read {
                            return Poll::Ready(Event::BackendRead(transferred(r)));
                        }
                    }
                    if turn.opening {
                        if let Some(Preconnect::Opening(_, connecting)) = self.preconnect.as_mut() {
                            if let Poll::Ready(r) = connecting.as_mut().poll(cx) {
                                return Poll::Ready(Event::Opened(r));
                            }
                        }
                    }
                    if turn.holding {
                        if let Poll::Ready(r) = released.as_mut().poll(cx) {
                            return Poll::Ready(Event::Released(r));
                        }
                    }
                    if turn.confirming && confirmed.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Confirmed);
                    }
                    if turn.read_client {
                        if self.first_read {
                            let read = self.client.poll_first_read(cx, &mut s.from_client);
                            if let Poll::Ready(r) = read {
                                self.first_read = false;
                                let r = r.map(|got| {
                                    s.replica.first_bytes = Some(match got.arrived {
                                        Some(at) => (at, true),
                                        None => (std::time::Instant::now(), false),
                                    });
                                    got.read
                                });
                                return Poll::Ready(Event::ClientRead(transferred(r)));
                            }
                        } else {
                            let read = self.client_read.poll_read(
                                cx,
                                &mut self.client,
                                &mut s.from_client,
                            );
                            if let Poll::Ready(r) = read {
                                return Poll::Ready(Event::ClientRead(transferred(r)));
                            }
                        }
                    }
                    if turn.pokable {
                        if let Some(poked) = self.poked.as_mut() {
                            if poked.as_mut().poll(cx).is_ready() {
                                self.poked = None;
                                return Poll::Ready(Event::Poked);
                            }
                        }
                    }
                    if turn.blocked {
                        if let Some(demoted) = self.demoted.as_mut() {
                            if demoted.as_mut().poll(cx).is_ready() {
                                self.demoted = None;
                                return Poll::Ready(Event::NodeDemoted);
                            }
                        }
                    }
                    if turn.unread && self.poll_hold_start(cx) {
                        return Poll::Ready(Event::HoldStarted);
                    }
                    if self.trim.poll_fired(cx).is_ready() {
                        return Poll::Ready(Event::Trim);
                    }
                    if IdleTimer::poll_fired(&mut self.idle, cx).is_ready() {
                        return Poll::Ready(Event::Idle);
                    }
                    // Last: polled only when nothing else is ready.
                    if !self.draining && Pin::new(&mut self.shutdown).poll(cx).is_ready() {
                        return Poll::Ready(Event::Drain);
                    }
                    if let Some(deadline) = self.deadline.as_mut() {
                        if Pin::new(deadline).poll(cx).is_ready() {
                            return Poll::Ready(Event::Stopped);
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            if self.on_event(&mut s, ctx, event).is_break() {
                break;
            }
        }
        // Bounded: over TLS the shutdown writes what rustls still holds
        // and a `close_notify`, which a client that stopped reading would
        // never take.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.client.shutdown()).await;
        None
    }
}

/// Bytes a read or write moved; `None` for the end of the stream, a write
/// the socket took nothing of, or an error, all of which end that direction
/// (the error itself is of no use: the peer is gone). No error is kept in
/// the loop's [`Event`], which so needs no drop glue on every turn (~25
/// instructions a turn).
#[inline]
fn transferred(r: std::io::Result<usize>) -> Option<usize> {
    r.ok().filter(|&n| n > 0)
}

/// Makes room for the next read.
#[inline]
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}
