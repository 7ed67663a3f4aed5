//! The lease carried across a change of hands: to a successor process at
//! an upgrade ([`Lease::export`], [`Lease::import`]), and saved before a
//! failover fences it, to be put back if the failover changed nothing
//! elsewhere ([`Lease::save`], [`Lease::restore`]).

use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::{Lease, Nanos};

/// The lease as a successor process takes it over at an upgrade
/// ([`Lease::export`], [`Lease::import`]). Instants are on the lease clock
/// (`CLOCK_BOOTTIME`), which both processes on one host share, so the
/// deadline and the nonces' issue times mean the same there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct HandedLease {
    pub deadline: Nanos,
    pub epoch: u64,
    pub revocations: u64,
    pub owner: Option<String>,
    pub node_id: Option<String>,
    pub revoked_reason: Option<String>,
    pub nonces: Vec<(u64, Nanos)>,
    pub next_nonce: u64,
}

/// The lease's state at one moment ([`Lease::save`]), to put it back with
/// [`Lease::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    epoch: u64,
    deadline: Nanos,
    revocations: u64,
    owner: Option<String>,
    revoked_reason: Option<String>,
}

impl Lease {
    /// The lease for a successor process, which from now on holds it: this
    /// one refuses grants until [`Lease::resume`] (the successor failed to
    /// take over). Revocations still apply here (they only shorten).
    pub fn export(&self) -> HandedLease {
        let mut cold = self.lock();
        cold.handed_over = true;
        HandedLease {
            deadline: self.deadline.load(Ordering::Acquire),
            epoch: self.epoch(),
            revocations: self.revocations.load(Ordering::Acquire),
            owner: cold.owner.clone(),
            node_id: cold.node_id.clone(),
            revoked_reason: cold.revoked_reason.clone(),
            nonces: cold.nonces.iter().copied().collect(),
            next_nonce: cold.next_nonce,
        }
    }

    /// The successor did not take the lease over: grants apply again.
    pub fn resume(&self) {
        self.lock().handed_over = false;
    }

    /// Takes over a predecessor's lease (a successor at an upgrade, before
    /// it admits anything): the same deadline, never a longer one; the
    /// same epoch, nonces and node id (this config's `node_id` wins).
    pub fn import(&self, handed: &HandedLease) {
        let mut cold = self.lock();
        self.next_term();
        self.epoch.store(handed.epoch, Ordering::Release);
        self.revocations
            .store(handed.revocations, Ordering::Release);
        cold.owner.clone_from(&handed.owner);
        if cold.node_id.is_none() {
            cold.node_id.clone_from(&handed.node_id);
        }
        cold.revoked_reason.clone_from(&handed.revoked_reason);
        cold.nonces = handed.nonces.iter().copied().collect();
        cold.next_nonce = handed.next_nonce;
        self.deadline.store(handed.deadline, Ordering::Release);
    }

    /// The lease as it stands, for [`Lease::restore`].
    pub fn save(&self) -> Saved {
        let cold = self.lock();
        Saved {
            epoch: self.epoch(),
            deadline: self.deadline.load(Ordering::Acquire),
            revocations: self.revocations.load(Ordering::Acquire),
            owner: cold.owner.clone(),
            revoked_reason: cold.revoked_reason.clone(),
        }
    }

    /// Undoes a local fencing that changed nothing elsewhere (a failover
    /// that failed before anything was switched): if the lease is exactly
    /// as the fencing left it (`fenced`), it goes back to `before`: epoch,
    /// owner, and deadline (one already past stays past). Controller
    /// heartbeats at the old epoch then renew it again. A new term begins,
    /// so nothing admitted before the fencing is acknowledged. Returns
    /// whether it restored; `false` means something else (a grant, a
    /// revocation) changed the lease since, and that word stands.
    pub fn restore(&self, before: &Saved, fenced: &Saved) -> bool {
        let mut cold = self.lock();
        let unchanged = self.epoch() == fenced.epoch
            && self.deadline.load(Ordering::Acquire) == fenced.deadline
            && self.revocations.load(Ordering::Acquire) == fenced.revocations
            && cold.owner == fenced.owner;
        if !unchanged {
            return false;
        }
        self.next_term();
        self.epoch.store(before.epoch, Ordering::Release);
        self.deadline.store(before.deadline, Ordering::Release);
        cold.owner.clone_from(&before.owner);
        cold.revoked_reason.clone_from(&before.revoked_reason);
        true
    }
}
