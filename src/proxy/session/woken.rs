//! Polling what is rarely ready only when it asked to be polled: the drain
//! signal and the trim timer ([`Woken`]), and a socket's read side that is
//! known to have nothing ([`WokenRead`]).
//!
//! The session's loop turns at least once per read, and each turn would
//! poll every source it waits on. Polling the drain signal
//! (`CancellationToken::cancelled_owned`) takes two mutex locks, its token's
//! and its `Notify`'s, and polling a timer goes through tokio's timer state:
//! callgrind put them at about 330 and 240 instructions per request at
//! `-P 1` (20 and 15 at `-P 16`), for events that come once a second at
//! most. Polling a socket's read side that has nothing to read registers
//! the task's waker again under the socket's mutex, ~110 instructions each
//! time, three times per request and reply at `-P 1`.
//!
//! [`Waking`] gives the source a waker of its own that notes being woken,
//! and polls it again only once that happened (or when the task's waker
//! changed, so that the source always holds a waker that reaches the task,
//! or right after it was ready): every other turn costs a flag swap and a
//! waker comparison.
//!
//! Sound for any source that wakes its waker when it may make progress (the
//! `Future` contract; tokio's readiness for sockets). A future that is
//! changed from outside between polls (a timer set again through
//! [`Woken::inner`]) must wake its waker if the change makes it ready, as
//! tokio's `Sleep::reset` does; after it was ready it is polled again on the
//! next turn, so that a timer set again after firing registers its waker
//! anew. A read side must be made anew ([`WokenRead::default`]) when its
//! socket is replaced.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;

/// The waker of one source, and whether the source needs polling.
#[derive(Default)]
struct Waking {
    /// The waker the source was last polled with, and its flag; `None`
    /// before the first poll.
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

impl Waking {
    /// Polls the source (`poll`, given the source's own waker) if it may
    /// make progress; `Pending` without polling it otherwise.
    #[inline]
    fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let (flag, waker) = match &mut self.waker {
            // The measured hot path: the task's waker is the one the source
            // holds (through the flag), and it was not woken. Cleared
            // before polling, so that a wake during the poll is kept.
            Some((flag, waker)) if cx.waker().will_wake(&flag.task) => {
                if !flag.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                (&*flag, &*waker)
            }
            // First poll, or the task's waker changed: the source gets a
            // new waker that reaches the task.
            slot => {
                let flag = Arc::new(Flag {
                    woken: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                let waker = Waker::from(Arc::clone(&flag));
                let (flag, waker) = slot.insert((flag, waker));
                (&*flag, &*waker)
            }
        };
        let polled = poll(&mut Context::from_waker(waker));
        if polled.is_ready() {
            // Polled again on the next turn: a source ready once may be
            // ready again (more to read; a timer's `reset`), and must
            // register its waker when it is not.
            flag.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// `inner`, polled only when its waker was woken (see the module
/// documentation).
pub(super) struct Woken<F> {
    inner: Pin<Box<F>>,
    waking: Waking,
}

impl<F: Future> Woken<F> {
    pub(super) fn new(inner: F) -> Woken<F> {
        Woken {
            inner: Box::pin(inner),
            waking: Waking::default(),
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
        let inner = &mut this.inner;
        this.waking.poll(cx, |cx| inner.as_mut().poll(cx))
    }
}

/// A socket's read side, read only when it may have something (see the
/// module documentation). Made anew for a new socket.
#[derive(Default)]
pub(super) struct WokenRead {
    waking: Waking,
}

impl WokenRead {
    /// Reads what `socket` has into `buf` (`Ready(Ok(0))`: end of stream),
    /// or `Pending` once the socket has nothing, with the task woken when
    /// it has.
    #[inline]
    pub(super) fn poll_read<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut S,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        self.waking.poll(cx, |cx| {
            tokio_util::io::poll_read_buf(Pin::new(socket), cx, buf)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpStream;

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

    /// One read through `side`, given `ms` milliseconds.
    async fn read(
        side: &mut WokenRead,
        socket: &mut TcpStream,
        buf: &mut BytesMut,
        ms: u64,
    ) -> Result<std::io::Result<usize>, tokio::time::error::Elapsed> {
        let read = std::future::poll_fn(|cx| side.poll_read(cx, socket, buf));
        tokio::time::timeout(Duration::from_millis(ms), read).await
    }

    /// A read side polled (and left pending) many times reads what comes
    /// later, and reads again right after a read, without a new wake.
    #[tokio::test]
    async fn a_read_side_reads_what_comes_later() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut writer = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut side = WokenRead::default();
        let mut buf = BytesMut::with_capacity(64);
        for _ in 0..3 {
            let nothing = read(&mut side, &mut socket, &mut buf, 20).await;
            assert!(nothing.is_err(), "nothing sent yet");
        }
        writer.write_all(b"first").await.expect("write");
        let n = read(&mut side, &mut socket, &mut buf, 5000).await;
        assert_eq!(n.expect("woken by the data").expect("read"), 5);
        writer.write_all(b"second").await.expect("write");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let n = read(&mut side, &mut socket, &mut buf, 5000).await;
        assert_eq!(n.expect("read again after a read").expect("read"), 6);
        assert_eq!(&buf[..], b"firstsecond");
        drop(writer);
        let n = read(&mut side, &mut socket, &mut buf, 5000).await;
        assert_eq!(
            n.expect("woken by the end").expect("read"),
            0,
            "end of stream"
        );
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
