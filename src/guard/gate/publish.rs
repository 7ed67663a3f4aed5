//! `PUBLISH` on a master: a write to the replication stream.
//!
//! Both Redis and Kvrocks replicate a `PUBLISH` taken by a master, so it
//! moves the master's replication offset (Kvrocks: its sequence, as a
//! write to its propagate column family) as a data write does. Sentinel
//! publishes its hellos on every node every 2 s, and two things went wrong
//! while `PUBLISH` passed as a read:
//!
//! * **Kvrocks**: a replaced old master, master on its own until it
//!   follows the new one (Kvrocks refuses that for 2–4 s), took hellos
//!   that moved its sequence, and with `use-rsid-psync no` its later
//!   `PSYNC` by sequence skipped as many of the new master's writes,
//!   silently (a Sentinel failover there and back lost an acknowledged
//!   write); with `yes` it needed a full sync.
//! * **Redis**: a hello taken by the old master after the promotion's
//!   fence read its offset reached the new master too late, and the old
//!   master, made its replica, asked for more than the new master had of
//!   its history: a full resync (5 s in a test, a fork and the whole data
//!   set in production) instead of a partial one.
//!
//! So on a master `PUBLISH` is held by a write pause (as Redis' own
//! `CLIENT PAUSE WRITE` holds it), and on a demoted node until the node
//! follows the new master. It is not handed over: a Sentinel's link to
//! this node would go on at the new master. Nor is it fenced by the
//! lease: Sentinel spreads a failover's new configuration by these hellos,
//! published on the new master too, which gets its lease only once the
//! Sentinels name it (fenced there, no Sentinel but the leader ever named
//! it). A replica's `PUBLISH` reaches its own subscribers and moves
//! nothing: a read.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Admission, Gate, Verdict, Wait};

/// The longest a `PUBLISH` at a demoted node waits for the node to follow
/// the new master (Kvrocks refuses to for 2–4 s after a failover; Sentinel
/// converts an old master within 10 s).
pub(super) const FOLLOW_BOUND: Duration = Duration::from_secs(10);

/// The answer to a `PUBLISH` whose demoted node did not follow in time.
pub(super) const NOT_FOLLOWING: &[u8] =
    b"-TRYAGAIN this node was replaced as master and does not follow the new master yet: PUBLISH there\r\n";

impl Gate {
    /// A `PUBLISH`: held on a paused or demoted master, otherwise a read
    /// (see the module).
    #[cold]
    pub(super) fn publish(&self, r: &Admission<'_>) -> Verdict {
        if self.role.node.is_replica() {
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
