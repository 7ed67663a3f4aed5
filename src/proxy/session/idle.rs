//! `limits.client_idle_timeout_ms`: a client that waits for nothing and has
//! neither completed a request nor read reply bytes for that long is closed,
//! as Redis's `timeout` closes an idle client.
//!
//! Unlike Redis, whose `timeout` counts any byte read, only a *complete*
//! request counts here: a client that sends a byte at a time, or a request it
//! never finishes, is closed too. Spared, as in Redis: a client waiting for
//! a reply (a blocking or slow command, a held request), a subscriber, a
//! MONITOR and a replication stream; the session says which
//! (`Session::waits_on_client_only`).
//!
//! Cheap on the hot path: an interaction stores one clock reading; the
//! timer is set again only when it fires.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The idle clock of one connection.
pub(super) struct IdleTimer {
    timeout: Duration,
    /// The client's last interaction.
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl IdleTimer {
    /// `None` when the timeout is off (zero, the default).
    pub(super) fn new(timeout: Duration) -> Option<IdleTimer> {
        if timeout.is_zero() {
            return None;
        }
        let last = Instant::now();
        Some(IdleTimer {
            timeout,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + timeout)),
        })
    }

    /// The client completed a request or read reply bytes.
    #[inline]
    pub(super) fn interaction(this: &mut Option<IdleTimer>) {
        if let Some(t) = this {
            t.last = Instant::now();
        }
    }

    /// Ready when the timer fires; never without a timeout.
    pub(super) fn poll_fired(this: &mut Option<IdleTimer>, cx: &mut Context<'_>) -> Poll<()> {
        match this {
            Some(t) => t.timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The timer fired: whether the client has been idle for the whole
    /// timeout. `idle` says whether the connection waits on the client
    /// alone; while it waits on anything else, the client is not idle. If
    /// not expired, the timer is set again.
    pub(super) fn expired(&mut self, idle: bool) -> bool {
        let now = Instant::now();
        if !idle {
            self.last = now;
        }
        let deadline = self.last + self.timeout;
        if deadline <= now {
            return true;
        }
        self.timer.as_mut().reset(deadline);
        false
    }
}
