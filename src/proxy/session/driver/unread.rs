//! A client that stopped reading while a write of its is in flight, when a
//! pause begins.
//!
//! A session whose unsent replies pass `limits.max_client_output_bytes`
//! stops reading the node's replies until its client reads (backpressure).
//! A write whose reply is behind them stays counted in flight, and every
//! pause waits for the writes in flight to be answered: the controller's
//! `CLIENT PAUSE` (which then answers `-ERR writes already forwarded were
//! not answered in time`), a planned failover, an upgrade's hand-over (which
//! then held every request for `drain_timeout_ms` and gave up). One client
//! that pipelined reads and a write and stopped reading held them all.
//!
//! So while a pause holds requests, such a session reads the node's replies
//! on, up to twice the bound ([`ALLOWANCE`]): a client slow over a reply
//! keeps its connection as long as what it has not read stays within that,
//! and its write is answered. Past it, the client is closed (as Redis
//! closes a client past its output buffer limit): its writes' outcome is
//! unknown to it, and nothing is acknowledged. Its writes leave the count
//! at once; one the node has not run yet may still run after the pause's
//! count reached zero (a failover may then not carry it over), which the
//! guarantee allows: it was never acknowledged. Outside pauses nothing
//! changes: the wait for a pause to begin is made only in that state,
//! never on the hot path.

use std::future::Future;
use std::pin::Pin;

use super::super::{Session, SessionContext};
use super::{ClientIo, Driver};

/// While a pause holds requests, how many times
/// `limits.max_client_output_bytes` a session with a write in flight may
/// have unsent before its client is closed.
const ALLOWANCE: usize = 2;

/// Clients closed this way are logged at most once a second.
static CLOSED_WARNING: crate::guard::clock::EverySecond = crate::guard::clock::EverySecond::new();

/// What a session past its output bound does about the node's replies.
pub(super) enum PastBound {
    /// Not read (no pause holds requests, or no write of the session is in
    /// flight); a pause beginning wakes the session.
    Wait,
    /// Read on: a pause waits for the session's writes.
    ReadOn,
    /// Past the allowance too: the client is closed.
    GiveUp,
}

impl<C: ClientIo> Driver<C> {
    /// The session's unsent replies (`unsent` bytes) passed its bound:
    /// whether the node is read on all the same.
    #[cold]
    pub(super) fn past_bound(
        &mut self,
        s: &Session,
        ctx: &SessionContext,
        unsent: usize,
    ) -> PastBound {
        if !s.has_writes_out() {
            return PastBound::Wait;
        }
        let pause = ctx.gate.pause();
        if self.hold_start.is_none() {
            // Subscribed before the pause is looked at: a start between
            // the two wakes the session.
            let mut starts = pause.hold_starts();
            starts.borrow_and_update();
            self.hold_start = Some(Box::pin(async move {
                let _ = starts.changed().await;
            }));
        }
        if !pause.is_paused() {
            return PastBound::Wait;
        }
        // The wait is kept (made once per stall, not per turn): should it
        // fire for this pause later, the next turn looks again.
        if unsent < s.max_output.saturating_mul(ALLOWANCE) {
            PastBound::ReadOn
        } else {
            PastBound::GiveUp
        }
    }

    /// Polls the wait for a pause to begin; `true` once it has.
    #[inline]
    pub(super) fn poll_hold_start(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let Some(start) = self.hold_start.as_mut() else {
            return false;
        };
        if start.as_mut().poll(cx).is_ready() {
            self.hold_start = None;
            return true;
        }
        false
    }

    /// Closes the session of a client that stopped reading while a pause
    /// waits for its writes ([`PastBound::GiveUp`]): its writes leave the
    /// count at once, and its connection is dropped, not shut down (a TLS
    /// `close_notify` would wait for a client that reads nothing).
    #[cold]
    pub(super) fn give_up(self, s: Session, ctx: &SessionContext) {
        ctx.metrics.unread_closed.inc();
        if CLOSED_WARNING.due(ctx.gate.lease().now()) {
            tracing::warn!(
                "a client that stopped reading, a write of its in flight, was closed: a pause waits for that write (logged at most once a second)"
            );
        }
        drop(s);
        drop(self);
    }
}

/// A wait for a pause to begin.
pub(super) type HoldStart = Option<Pin<Box<dyn Future<Output = ()> + Send>>>;
