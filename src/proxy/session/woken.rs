//! Polling a future that is rarely ready (the drain signal, the trim timer)
//! only when it asked to be polled.
//!
//! `tokio::select!` polls every enabled branch each time the session's loop
//! turns, and the loop turns at least once per read. Polling the drain
//! signal (`CancellationToken::cancelled_owned`) takes two mutex locks, its
//! token's and its `Notify`'s, and polling a timer goes through tokio's
//! timer state: callgrind put them at about 330 and 240 instructions per
//! request at `-P 1` (20 and 15 at `-P 16`), for events that come once a
//! second at most. [`Woken`] polls the inner future with a waker of its own
//! that notes being woken, and polls it again only once that happened (or
//! when the task's waker changed, so that the inner future always holds a
//! waker that reaches the task, or right after it was ready): every other
//! turn costs a flag load and a waker comparison.
//!
//! Sound for any future that wakes its waker when it may make progress (the
//! `Future` contract). A future that is changed from outside between polls
//! (a timer set again through [`Woken::inner`]) must wake its waker if the
//! change makes it ready, as tokio's `Sleep::reset` does; after it was
//! ready it is polled again on the next turn, so that a timer set again
//! after firing registers its waker anew.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// `inner`, polled only when its waker was woken (see the module
/// documentation).
pub(super) struct Woken<F> {
    inner: Pin<Box<F>>,
    /// The waker `inner` was last polled with, and its flag; `None` before
    /// the first poll.
    waker: Option<(Arc<Flag>, Waker)>,
}

/// A waker that notes it was woken, then wakes the task.
struct Flag {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl<F: Future> Woken<F> {
    pub(super) fn new(inner: F) -> Woken<F> {
        Woken {
            inner: Box::pin(inner),
            waker: None,
        }
    }

    /// The inner future, to change it (e.g. set a timer again).
    pub(super) fn inner(&mut self) -> Pin<&mut F> {
        self.inner.as_mut()
    }
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Everything is behind a `Box` or plain data: `Woken` is `Unpin`.
        let this = self.get_mut();
        let waker = match &mut this.waker {
            // The measured hot path: the task's waker is the one `inner`
            // holds (through the flag), and it was not woken. Cleared
            // before polling, so that a wake during the poll is kept.
            Some((flag, waker)) if cx.waker().will_wake(&flag.task) => {
                if !flag.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                waker
            }
            // First poll, or the task's waker changed: `inner` gets a new
            // waker that reaches the task.
            slot => {
                let flag = Arc::new(Flag {
                    woken: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                let waker = Waker::from(Arc::clone(&flag));
                &slot.insert((flag, waker)).1
            }
        };
        let poll = this.inner.as_mut().poll(&mut Context::from_waker(waker));
        if poll.is_ready() {
            // Polled again on the next turn: a future ready once may be
            // set again (a timer's `reset`), and must register its waker.
            if let Some((flag, _)) = &this.waker {
                flag.woken.store(true, Ordering::Release);
            }
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A cancellation reaches a session whose signal was polled (and left
    /// pending) many times, and one cancelled before its first poll.
    #[tokio::test]
    async fn a_cancellation_is_not_missed() {
        let token = tokio_util::sync::CancellationToken::new();
        let mut signal = std::pin::pin!(Woken::new(token.clone().cancelled_owned()));
        for _ in 0..3 {
            let idle = tokio::time::timeout(Duration::from_millis(5), &mut signal).await;
            assert!(idle.is_err(), "not cancelled yet");
        }
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cancel.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), &mut signal)
            .await
            .expect("the cancellation wakes the signal");
        let early = tokio_util::sync::CancellationToken::new();
        early.cancel();
        tokio::time::timeout(Duration::from_secs(5), Woken::new(early.cancelled_owned()))
            .await
            .expect("already cancelled: ready at the first poll");
    }

    /// A timer set again after it fired, and one set again (earlier) while
    /// pending, still fire.
    #[tokio::test]
    async fn a_timer_set_again_fires() {
        let mut timer = Woken::new(tokio::time::sleep(Duration::from_millis(5)));
        tokio::time::timeout(Duration::from_secs(5), &mut timer)
            .await
            .expect("fires");
        for _ in 0..3 {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
            timer.inner().reset(deadline);
            tokio::time::timeout(Duration::from_secs(5), &mut timer)
                .await
                .expect("set again after firing, fires");
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        timer.inner().reset(far);
        let pending = tokio::time::timeout(Duration::from_millis(5), &mut timer).await;
        assert!(pending.is_err(), "an hour away");
        let soon = tokio::time::Instant::now() + Duration::from_millis(5);
        timer.inner().reset(soon);
        tokio::time::timeout(Duration::from_secs(5), &mut timer)
            .await
            .expect("set earlier while pending, fires");
    }
}
