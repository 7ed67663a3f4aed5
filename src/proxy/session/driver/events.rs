//! What woke a session's loop ([`Event`]), and how [`Driver`] hands it to
//! the session and sends at once what the session queued: the other half of
//! the measured loop in [`Driver::run`].

use std::ops::ControlFlow;

use bytes::{Buf, Bytes, BytesMut};
use tracing::debug;

use super::super::idle::IdleTimer;
use super::super::state::Stall;
use super::super::{Session, SessionContext};
use super::{ClientIo, Driver, Preconnect, Woken, CLIENT_GONE_QUIET_PERIODS};
use crate::proxy::backend::NodeConn;

/// What the session's loop was woken for: the first source found ready, in
/// the order [`Driver::run`] polls them.
pub(super) enum Event {
    /// Replies went to the client (`None`: the write failed).
    ClientWrote(Option<usize>),
    /// Requests went to the node (`None`: the write failed).
    BackendWrote(Option<usize>),
    /// The node sent this many bytes (`None`: it closed, or the read failed).
    BackendRead(Option<usize>),
    /// The connection opened ahead of a hand-over is ready (or failed).
    Opened(Result<NodeConn, crate::proxy::backend::BackendError>),
    /// The held request's wait ended.
    Released(Result<(), Bytes>),
    /// The confirmation the head reply waits for was settled, either way.
    Confirmed,
    /// The client sent this many bytes (`None`: it closed, or the read failed).
    ClientRead(Option<usize>),
    /// The trim timer fired.
    Trim,
    /// The idle timer fired.
    Idle,
    /// A failover asked for a `ping` frame in the replication stream.
    Poked,
    /// The probe saw the (Kvrocks) node become a replica while a blocking
    /// command of this session waited there.
    NodeDemoted,
    /// A pause began while the session's client stopped reading with a
    /// write in flight ([`super::unread`]).
    HoldStarted,
    /// The proxy drains (SIGTERM).
    Drain,
    /// The drain's deadline passed ([`super::super::stopping`]).
    Stopped,
}

impl<C: ClientIo> Driver<C> {
    /// Hands `event` to the session and sends at once what it queued;
    /// `Break` when the session is over.
    #[inline]
    pub(super) fn on_event(
        &mut self,
        s: &mut Session,
        ctx: &SessionContext,
        event: Event,
    ) -> ControlFlow<()> {
        match event {
            Event::ClientWrote(None) | Event::BackendWrote(None) => return ControlFlow::Break(()),
            Event::ClientWrote(Some(n)) => {
                s.client_sent(n);
                IdleTimer::interaction(&mut self.idle);
            }
            Event::BackendWrote(Some(n)) => s.to_backend.advance(n),
            Event::BackendRead(None) => self.backend_eof = true,
            Event::BackendRead(Some(_)) => {
                self.trim.activity();
                replies(s)?;
                if send_to_client(s, |b| self.client.try_send(b)) {
                    IdleTimer::interaction(&mut self.idle);
                }
            }
            Event::Opened(r) => Preconnect::opened(&mut self.preconnect, r),
            Event::Released(r) => s.release(r),
            // Settled either way: the replies behind it go on.
            Event::Confirmed => replies(s)?,
            Event::ClientRead(None) => self.client_eof = true,
            Event::ClientRead(Some(_)) => {
                self.trim.activity();
                let buffered = s.from_client.len();
                s.on_client_data();
                if s.from_client.len() < buffered {
                    IdleTimer::interaction(&mut self.idle); // a complete request
                }
                send_now(&mut s.to_backend, |b| self.backend.try_send(b));
                send_to_client(s, |b| self.client.try_send(b));
            }
            Event::Trim => {
                if self.trim.due(s.is_quiet()) {
                    s.drop_buffers();
                    ctx.metrics.buffers_released.inc();
                }
                // Not read, its end would not be seen: looked for here,
                // once a second, as the blocking command may never return.
                if !self.client_eof
                    && s.unread_behind_a_block()
                    && super::super::io::hung_up(self.client.socket())
                {
                    self.client_eof = true;
                }
                // The client is gone and the node has sent nothing for a
                // while: what is still owed (a `WAIT` no replica answers,
                // a request the node never ends) is given up, as the node
                // frees a client at its end. (Waited for, such a session
                // and its node connection stayed for good: an audit.) Not
                // while replies wait to be written (a half-closed client
                // reading slowly: a review) or a request is held (a pause
                // or a confirmation ends that).
                if self.client_eof
                    && self.trim.quiet_periods() >= CLIENT_GONE_QUIET_PERIODS
                    && s.client_bytes().is_empty()
                    && matches!(s.stall, Stall::None)
                {
                    debug!(
                        "the client is gone and the node answers nothing more: closing the session"
                    );
                    return ControlFlow::Break(());
                }
            }
            Event::Idle => {
                let idle = s.waits_on_client_only();
                if self.idle.as_mut().is_some_and(|t| t.expired(idle)) {
                    debug!("closing an idle client");
                    return ControlFlow::Break(());
                }
            }
            // Looked at again in the next turn's plan.
            Event::HoldStarted => {}
            Event::Drain => {
                self.draining = true;
                self.deadline = Some(Woken::new(ctx.stopping.clone().cancelled_owned()));
            }
            Event::Stopped => {
                self.deadline = None;
                debug!("the drain's deadline passed: closing the session with an error");
                s.stop_now();
                send_to_client(s, |b| self.client.try_send(b));
            }
            Event::Poked => {
                s.poked();
                send_to_client(s, |b| self.client.try_send(b));
            }
            // Any reply the node sent first was read first (the node's
            // socket is polled before this wait): its connection is given
            // up, and the blocking command answered
            // ([`Session::unblocked_by_demotion`]).
            Event::NodeDemoted if s.blocked() => {
                debug!("the node became a replica while a blocking command waited: the command ends, the session goes on at a new node connection");
                self.backend_eof = true;
                s.unblocked_by_demotion();
            }
            // Behind other replies: it waits on, and is woken at the node's
            // next demotion.
            Event::NodeDemoted => {}
        }
        ControlFlow::Continue(())
    }
}

/// Frames what the node sent ([`Session::on_backend_data`]); `Break` on a
/// reply that cannot be framed.
#[inline]
fn replies(s: &mut Session) -> ControlFlow<()> {
    match s.on_backend_data() {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            debug!(error = %e, "closing session");
            ControlFlow::Break(())
        }
    }
}

/// Sends what is queued at once if the socket takes it (it usually does),
/// sparing a turn of the loop per batch; whatever is left, and any error,
/// goes to the write branch, which waits until the socket takes more.
/// Whether anything was sent.
#[inline]
pub(super) fn send_now(
    buf: &mut BytesMut,
    send: impl FnOnce(&[u8]) -> std::io::Result<usize>,
) -> bool {
    if buf.is_empty() {
        return false;
    }
    match send(buf) {
        Ok(n) if n > 0 => {
            buf.advance(n);
            true
        }
        _ => false,
    }
}

/// [`send_now`] for the client: only what may be sent now
/// ([`Session::client_bytes`]).
#[inline]
pub(super) fn send_to_client(
    s: &mut Session,
    send: impl FnOnce(&[u8]) -> std::io::Result<usize>,
) -> bool {
    let bytes = s.client_bytes();
    if bytes.is_empty() {
        return false;
    }
    match send(bytes) {
        Ok(n) if n > 0 => {
            s.client_sent(n);
            true
        }
        _ => false,
    }
}
