//! Giving an idle connection's buffers back, as Redis frees an idle
//! client's query buffer: 10,000 connected-but-quiet clients should cost
//! the proxy little more than their sockets.
//!
//! A session whose four buffers are empty, that owes nothing and holds
//! nothing, and that has read nothing for between one and two
//! [`TRIM_AFTER`] periods drops its buffers; the next read starts small
//! and the buffers grow again as before. The hot path pays one counter
//! increment per read: the timer is looked at only when it fires (at most
//! once a period), never set per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::woken::Woken;

/// How long a session must be quiet before its buffers are dropped.
pub const TRIM_AFTER: Duration = Duration::from_secs(1);

/// Set when some session dropped its buffers: the allocator may hold the
/// freed memory until asked to return it ([`take_trimmed`]).
static TRIMMED: AtomicBool = AtomicBool::new(false);

/// Whether any session dropped its buffers since the last call.
pub fn take_trimmed() -> bool {
    TRIMMED.swap(false, Ordering::AcqRel)
}

/// One session's trim clock.
pub(super) struct Trim {
    /// Polled only once it fired ([`Woken`]): the session's loop polls it
    /// on every turn.
    timer: Woken<Sleep>,
    /// Reads so far, and as seen when the timer last fired.
    reads: u64,
    seen: u64,
    /// The buffers were dropped and not needed since.
    pub(super) trimmed: bool,
    /// Periods in a row, up to the last firing, in which nothing was read.
    quiet_periods: u32,
}

impl Trim {
    pub(super) fn new() -> Trim {
        Trim {
            timer: Woken::new(tokio::time::sleep(TRIM_AFTER)),
            reads: 0,
            seen: 0,
            trimmed: false,
            quiet_periods: 0,
        }
    }

    /// Something was read from either side.
    #[inline]
    pub(super) fn activity(&mut self) {
        self.reads = self.reads.wrapping_add(1);
        if self.trimmed {
            self.trimmed = false;
            // Watch again from now (the timer was parked).
            self.timer.inner().reset(Instant::now() + TRIM_AFTER);
        }
    }

    /// How long nothing has been read from either side, in whole
    /// [`TRIM_AFTER`] periods, as of the timer's last firing.
    pub(super) fn quiet_periods(&self) -> u32 {
        self.quiet_periods
    }

    /// Ready when the timer fires.
    #[inline]
    pub(super) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.timer).poll(cx)
    }

    /// The timer fired: whether to drop the buffers now (`quiet`: nothing
    /// buffered, owed or held). Sets the timer again either way.
    pub(super) fn due(&mut self, quiet: bool) -> bool {
        let idle = self.reads == self.seen;
        self.seen = self.reads;
        self.quiet_periods = if idle {
            self.quiet_periods.saturating_add(1)
        } else {
            0
        };
        if quiet && idle {
            self.trimmed = true;
            TRIMMED.store(true, Ordering::Release);
            // Parked until the next read.
            self.timer
                .inner()
                .reset(Instant::now() + Duration::from_secs(24 * 3600));
            return true;
        }
        self.timer.inner().reset(Instant::now() + TRIM_AFTER);
        false
    }
}
