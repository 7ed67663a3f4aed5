//! How a held request waits, and what ends the wait: its confirmation
//! (and, refused because the controller switched the shard, the poller's
//! step-down), a pause's end, a drain, a timed pause's moment, a promotion
//! fence, a promotion's lease, a demoted node's following. The session
//! asks the Gate again once [`Gate::wait`] returns, unless it returned the
//! reply to send instead.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Gate, Wait};
use crate::guard::pause::OnDemote;

impl Gate {
    /// A write's confirmation was refused. Where the controller switched
    /// the shard, the write waits for the poller to follow the switch and
    /// is then asked about again (unconfirmed: `release` asks the round):
    /// on a demoted node it goes where the demotion says, as any write
    /// arriving then (`guard::switch_watch`). Otherwise the refusal is the
    /// answer.
    async fn after_refusal(&self, refusal: Bytes) -> Result<(), Bytes> {
        if !self.role.is_demoted()
            && self.role.switch_pending()
            && self
                .role
                .switch
                .until_followed(self.role.switch_patience())
                .await
        {
            self.metrics.writes_waited_for_switch.inc();
        }
        // A failover from here fenced this node and had the controller
        // switch: the write goes where the failover hands the held writes.
        let patience = std::time::Instant::now() + self.role.switch_patience();
        while self.role.failover.is_running()
            && !self.role.is_demoted()
            && std::time::Instant::now() < patience
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        if self.role.is_demoted() && self.role.on_demote() == OnDemote::Forward {
            return Ok(());
        }
        Err(refusal)
    }

    /// Waits until the confirmation round of `ticket` settled, confirmed or
    /// refused: the replies of writes forwarded unconfirmed (`verify.hold:
    /// acknowledgement`) wait for it. Unlike a held write's wait, a refusal
    /// ends it at once, even where the controller switched the shard: the
    /// write is at this node already, and its reply gets the
    /// unknown-outcome error whatever the poller does. Waiting for the
    /// poller to follow the switch (as [`Gate::wait`] does) kept the write
    /// counted in flight, and the poller's step-down waits for the writes
    /// in flight before it revokes: each waited for the other until the
    /// step-down's 500 ms bound (walkthrough 32: writers stalled 0.5–0.6 s
    /// at 7 of 10 controller switches).
    pub async fn settled(&self, ticket: crate::guard::verify::Ticket) {
        if let Some(v) = &self.verifier {
            let _ = v.wait(ticket).await;
        }
    }

    /// Waits until a held request may be asked about again. The answer is
    /// the reply to send instead, when the wait ended in a refusal (or, for
    /// a drain, in the held request's own answer).
    pub async fn wait(&self, wait: &Wait) -> Result<(), Bytes> {
        match (wait, &self.verifier) {
            (Wait::Verification(ticket), Some(v)) => match v.wait(*ticket).await {
                Err(refusal) => self.after_refusal(refusal).await,
                confirmed => confirmed,
            },
            (Wait::Verification(_), None) => Ok(()),
            (Wait::Pause(hold), _) => {
                self.pause.wait(hold).await;
                Ok(())
            }
            // Ends with the pause's own answer (never asked again, which
            // would restart the pause).
            (Wait::Drain { until, answer }, _) => {
                let drained = self.drained(*until).await;
                if !answer {
                    return Ok(());
                }
                Err(self.pause_answer(drained))
            }
            (Wait::TimedPause(timed), _) => {
                tokio::time::sleep_until(timed.at.into()).await;
                if !timed.begun.swap(true, Ordering::AcqRel) {
                    self.pause.pause(timed.timeout, timed.mode);
                    if let Some(timing) = self.pause_timing.get() {
                        timing.began(std::time::Instant::now());
                    }
                }
                let bound = timed.timeout.min(crate::guard::control::DRAIN_BOUND);
                let drained = self.drained(timed.at + bound).await;
                Err(self.pause_answer(drained))
            }
            (Wait::Follow { until }, _) => self.until_following(*until).await,
            (Wait::Fence { until, step_down }, _) => {
                let fence = if *step_down {
                    &self.role.step_down_fence
                } else {
                    &self.role.promotion_fence
                };
                while !fence.settled() && std::time::Instant::now() < *until {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Ok(())
            }
            (Wait::Lease { until }, _) => {
                while !self.lease.usable() {
                    let now = std::time::Instant::now();
                    if now >= *until
                        || (self.role.lease_awaited(now).is_none()
                            && self.lease.stalled().is_none())
                    {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Ok(())
            }
        }
    }
}
