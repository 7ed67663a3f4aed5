//! Grants from outside the configured lease source: the admin API's
//! `PUT /v1/lease` (what `leasegate failover` and scripts send) and a
//! controller's `CLUSTERX HEARTBEAT`.
//!
//! With a source that leasegate polls, the other leasegates of the shard
//! count on that source's bound when they fence this one:
//!
//! * **`controller.url`**: a leasegate that cannot reach this one waits out
//!   `controller.ttl_ms` (and the margin) since the controller's switch
//!   before its node is promoted ([`crate::control`]'s fence). A longer grant
//!   outlasts that wait: a walkthrough froze a leasegate holding a
//!   failover's 10 s grant for 2.5 s right after a later switch, and on
//!   waking it acknowledged writes beside the promoted node (127 lost). So
//!   an outside grant lasts at most `controller.ttl_ms`; the poll renews it
//!   anyway.
//! * **`sentinel.addrs`**: the Sentinels' lease ends before a quorum of
//!   them could find this node down, which is what makes their automatic
//!   failover safe. No outside grant knows that moment, so none renews
//!   this node's lease; one naming another node still revokes it.
//!
//! Without either, outside grants are the lease's source and stand as sent.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::guard::lease::{Grant, GrantError};

/// What outside grants may do, as the config says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideGrants {
    /// They are the lease's source: as sent.
    AsSent,
    /// A polled controller is the source: at most this many milliseconds.
    AtMost(u64),
    /// Redis Sentinel is the source: none renews this node's lease.
    Refused,
}

/// Stored as one atomic (`u64::MAX`: as sent, `0`: refused), so that a
/// reload changes it without a lock.
#[derive(Debug)]
pub struct OutsideGrantRule(AtomicU64);

impl Default for OutsideGrantRule {
    fn default() -> Self {
        OutsideGrantRule(AtomicU64::new(u64::MAX))
    }
}

impl OutsideGrantRule {
    pub fn set(&self, rule: OutsideGrants) {
        let v = match rule {
            OutsideGrants::AsSent => u64::MAX,
            OutsideGrants::AtMost(ms) => ms.max(1),
            OutsideGrants::Refused => 0,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> OutsideGrants {
        match self.0.load(Ordering::Relaxed) {
            u64::MAX => OutsideGrants::AsSent,
            0 => OutsideGrants::Refused,
            ms => OutsideGrants::AtMost(ms),
        }
    }

    /// The grant to apply in place of `grant`, an outside one that renews
    /// this node (`renews`; one naming another node only revokes and
    /// stands as sent): `None` to apply it as sent.
    pub fn apply(&self, grant: &Grant, renews: bool) -> Result<Option<Grant>, GrantError> {
        if !renews {
            return Ok(None);
        }
        match self.get() {
            OutsideGrants::AsSent => Ok(None),
            OutsideGrants::Refused => Err(GrantError::SentinelOnly),
            OutsideGrants::AtMost(ms) if grant.ttl_ms > ms => Ok(Some(Grant {
                ttl_ms: ms,
                ..grant.clone()
            })),
            OutsideGrants::AtMost(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ttl_ms: u64) -> Grant {
        Grant {
            master_node_id: None,
            ttl_ms,
            epoch: 1,
            nonce: None,
            anchor: None,
        }
    }

    #[test]
    fn a_polled_controllers_ttl_bounds_an_outside_grant() {
        let rule = OutsideGrantRule::default();
        assert_eq!(rule.apply(&grant(10_000), true), Ok(None));
        rule.set(OutsideGrants::AtMost(1_500));
        assert_eq!(
            rule.apply(&grant(10_000), true)
                .map(|g| g.map(|g| g.ttl_ms)),
            Ok(Some(1_500))
        );
        assert_eq!(rule.apply(&grant(1_000), true), Ok(None));
    }

    #[test]
    fn under_sentinel_an_outside_grant_only_revokes() {
        let rule = OutsideGrantRule::default();
        rule.set(OutsideGrants::Refused);
        assert_eq!(
            rule.apply(&grant(1_000), true),
            Err(GrantError::SentinelOnly)
        );
        assert_eq!(rule.apply(&grant(1_000), false), Ok(None));
        rule.set(OutsideGrants::AsSent);
        assert_eq!(rule.get(), OutsideGrants::AsSent);
    }
}
