//! A switch of the controller's that verification saw before the poll did.
//!
//! With verification on every write (`verify.mode: every-write`), each
//! batch of writes asks the controller, so a confirmation round learns of a
//! switch (the controller naming another node master of this shard: its
//! failover API, its automatic failover, a `leasegate failover`) long
//! before the next poll. Refusing the writes waiting on that round and
//! revoking the lease, as for any other negative answer, failed every
//! client writing at that moment and fenced the writes behind them
//! (`-READONLY`), where without verification the same failover costs them
//! nothing. Instead the round wakes the poller ([`SwitchWatch::seen`]),
//! which follows the switch as it follows its own answer (a step-down:
//! writes held, those forwarded answered, the lease revoked, the held
//! writes handed to the new master's leasegate once it holds the lease);
//! the refused writes wait for that ([`SwitchWatch::until_followed`]) and
//! are then asked about again, unconfirmed: the demotion decides where they
//! go. Nothing is confirmed meanwhile: every round still refuses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Kept in [`crate::guard::role::Role`] (`Role::saw_switch`).
#[derive(Debug, Default)]
pub struct SwitchWatch {
    /// A round saw a switch that the poller has not followed yet...
    pending: AtomicBool,
    /// ...last at this moment (a poll sent before it follows nothing).
    seen_at: Mutex<Option<Instant>>,
    /// Wakes the poller to ask the controller now.
    poll_now: Notify,
    /// Wakes the writes waiting for the poller to follow.
    followed: Notify,
}

impl SwitchWatch {
    /// A confirmation round saw the controller name another master of
    /// this node's shard.
    pub fn saw(&self) {
        if let Ok(mut at) = self.seen_at.lock() {
            *at = Some(Instant::now());
        }
        self.pending.store(true, Ordering::Release);
        self.poll_now.notify_one();
    }

    /// Whether a round saw a switch the poller has not followed (one load:
    /// the Gate asks on every verified write, before anything else).
    #[inline]
    pub fn flagged(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether a switch seen within `patience` waits for the poller.
    #[inline]
    pub fn pending(&self, patience: Duration) -> bool {
        self.pending.load(Ordering::Acquire) && self.seen_within(patience)
    }

    fn seen_within(&self, patience: Duration) -> bool {
        self.seen_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < patience)
    }

    /// Resolves when a round saw a switch (the poller's cue to ask now).
    pub async fn seen(&self) {
        self.poll_now.notified().await
    }

    /// The poller acted on an answer to a request it sent at `sent`: a
    /// switch seen before that is followed (or was not one), and the
    /// writes waiting for it are asked about again.
    pub fn followed(&self, sent: Instant) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut at) = self.seen_at.lock() {
            if at.is_some_and(|seen| seen > sent) {
                return;
            }
            *at = None;
        }
        self.pending.store(false, Ordering::Release);
        self.followed.notify_waiters();
    }

    /// Waits until the poller followed the switch, at most `patience`
    /// from when it was seen; `false` when it did not.
    pub async fn until_followed(&self, patience: Duration) -> bool {
        let deadline = match self.seen_at.lock().ok().and_then(|at| *at) {
            Some(seen) => seen + patience,
            None => return true,
        };
        loop {
            let followed = self.followed.notified();
            tokio::pin!(followed);
            followed.as_mut().enable();
            if !self.pending.load(Ordering::Acquire) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), followed)
                .await
                .is_err()
            {
                return !self.pending.load(Ordering::Acquire);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_poll_sent_after_the_switch_was_seen_follows_it() {
        let watch = SwitchWatch::default();
        let patience = Duration::from_secs(5);
        assert!(!watch.pending(patience));
        let before = Instant::now();
        watch.saw();
        assert!(watch.pending(patience));
        // An answer to a poll sent before the round saw the switch.
        watch.followed(before);
        assert!(watch.pending(patience), "an older answer follows nothing");
        let waiter = async { watch.until_followed(patience).await };
        let poll = async {
            tokio::task::yield_now().await;
            watch.followed(Instant::now());
        };
        let (followed, ()) = tokio::join!(waiter, poll);
        assert!(followed);
        assert!(!watch.pending(patience));
    }

    #[tokio::test]
    async fn a_switch_never_followed_is_waited_for_only_as_long_as_patience() {
        let watch = SwitchWatch::default();
        watch.saw();
        let patience = Duration::from_millis(30);
        assert!(!watch.until_followed(patience).await);
        assert!(
            !watch.pending(patience),
            "past its patience it holds nothing"
        );
    }
}
