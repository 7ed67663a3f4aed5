//! `PUBLISH` on Kvrocks: a write to the replication stream.
//!
//! Kvrocks replicates a `PUBLISH` through its write-ahead log (a write to
//! its propagate column family), so on a master each one moves the
//! replication sequence as a data write does. One taken by a node that is
//! not the master any more makes its history diverge from the new
//! master's. Sentinel publishes its hellos on every node every 2 s, so a
//! replaced old master, master on its own until it follows the new one
//! (Kvrocks refuses that for 2–4 s), took a few: with `use-rsid-psync no`
//! its later `PSYNC` by sequence skipped as many of the new master's
//! writes, silently (a Sentinel failover there and back lost an
//! acknowledged write), and with `yes` it needed a full sync. So on a
//! Kvrocks master `PUBLISH` is gated as a write is: held by a write pause,
//! fenced without the lease, and on a demoted node held until the node
//! follows the new master (a replica's `PUBLISH` moves no sequence). It is
//! not handed over: a Sentinel's link to this node would go on at the new
//! master, and its `INFO` describe that node as this one.
//! Redis needs none of this: its `PSYNC` checks the replication id.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Admission, Gate, Verdict, Wait};
use crate::guard::lease::LeaseMode;

/// The longest a `PUBLISH` at a demoted node waits for the node to follow
/// the new master (Kvrocks refuses to for 2–4 s after a failover; Sentinel
/// converts it within 10 s).
pub(super) const FOLLOW_BOUND: Duration = Duration::from_secs(10);

/// The answer to a `PUBLISH` whose demoted node did not follow in time.
pub(super) const NOT_FOLLOWING: &[u8] =
    b"-TRYAGAIN this node was replaced as master and does not follow the new master yet: PUBLISH there\r\n";

impl Gate {
    /// A `PUBLISH`: a read, except on a Kvrocks master (see the module).
    #[cold]
    pub(super) fn publish(&self, r: &Admission<'_>) -> Verdict {
        if !self.role.node.is_kvrocks() || self.role.node.is_replica() {
            return Verdict::Forward;
        }
        if self.pause.holds(true) {
            return self.hold(r);
        }
        if self.role.is_demoted() {
            return Verdict::Hold(Wait::Follow {
                until: Instant::now() + FOLLOW_BOUND,
            });
        }
        if self.lease.mode() == LeaseMode::BlockWrite && !self.lease.usable() {
            if let Some(wait) = self.lease_wait() {
                return Verdict::Hold(wait);
            }
            self.fenced("lease");
            return Verdict::Reply(self.fenced_reply(r.command.special));
        }
        Verdict::Forward
    }

    /// Waits until a demoted node follows a master (or is no longer
    /// demoted); the refusal if it still does not at `until`.
    pub(super) async fn until_following(&self, until: Instant) -> Result<(), Bytes> {
        while self.role.is_demoted() && !self.role.node.is_replica() {
            if Instant::now() >= until {
                return Err(Bytes::from_static(NOT_FOLLOWING));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}
