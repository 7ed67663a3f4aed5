//! A one-time event that tasks wait for: set once (by the node probe's
//! first look at the node, by the lease poll's first answer), awaited by
//! any number. The server admits clients once the events it needs have
//! happened (bounded), so that the first client is served with what the
//! node is and what the controller says, as every later one is.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct OnceEvent {
    happened: AtomicBool,
    waiters: Notify,
}

impl OnceEvent {
    /// It happened (again: nothing changes).
    pub fn set(&self) {
        if !self.happened.swap(true, Ordering::AcqRel) {
            self.waiters.notify_waiters();
        }
    }

    pub fn happened(&self) -> bool {
        self.happened.load(Ordering::Acquire)
    }

    /// Returns once it has happened.
    pub async fn wait(&self) {
        loop {
            let notified = self.waiters.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.happened() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_before_and_one_after_both_return() {
        let event = OnceEvent::default();
        let before = async { event.wait().await };
        let set = async {
            tokio::task::yield_now().await;
            event.set();
        };
        tokio::join!(before, set);
        event.wait().await;
        assert!(event.happened());
    }
}
