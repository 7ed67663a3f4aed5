//! What the Gate hands to a successor process at an upgrade
//! ([`crate::control::upgrade`]): the lease (deadline, epoch, nonces), the
//! pause in force, the demotion and the topology versions seen. The
//! predecessor exports it once nothing it admitted is still in flight, and
//! refuses grants from then on; the successor imports it before it admits
//! anything. So at every instant one process decides, and no lease is
//! longer than the controller granted.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guard::gate::Gate;
use crate::guard::lease::HandedLease;
use crate::guard::pause::{PauseMode, PauseOwner};
use crate::guard::role::Demotion;

/// The Gate's state as a successor takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    pub lease: HandedLease,
    /// The pause set and its time left, in milliseconds (an upgrade's
    /// own hold over it is not: the successor does not hold).
    pub pause: Option<(PauseMode, u64)>,
    /// Who set that pause, when only its setter ends it: the successor's
    /// counterpart ends it ([`PauseOwner`]). Absent from an older
    /// predecessor's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_owner: Option<PauseOwner>,
    /// Demoted: the new master's leasegate, when known (`Some(None)`: not known).
    pub demotion: Option<Option<String>>,
    pub controller_version: u64,
    pub node_topology: u64,
    pub kvrocks: bool,
}

impl Gate {
    /// Hands the state over: from now on this Gate refuses grants (until
    /// [`Gate::keep_succession`]).
    pub fn export_succession(&self) -> Succession {
        let role = self.role();
        Succession {
            lease: self.lease().export(),
            pause: self
                .pause()
                .remaining()
                .map(|(mode, left)| (mode, left.as_millis().try_into().unwrap_or(u64::MAX))),
            pause_owner: self.pause().owner(),
            demotion: role
                .demotion()
                .map(|d| d.new_master.as_deref().map(str::to_string)),
            controller_version: role.controller_version(),
            node_topology: role.node_topology(),
            kvrocks: role.node.is_kvrocks(),
        }
    }

    /// The successor did not take over: this Gate goes on deciding.
    pub fn keep_succession(&self) {
        self.lease().resume();
    }

    /// Takes a predecessor's state over, before anything is admitted.
    /// Must be called inside a tokio runtime (a pause's end is a timer).
    pub fn import_succession(&self, s: &Succession) {
        let role = self.role();
        self.lease().import(&s.lease);
        if let Some((mode, left_ms)) = s.pause {
            if left_ms > 0 {
                self.pause()
                    .pause_as(Duration::from_millis(left_ms), mode, s.pause_owner);
                if s.pause_owner == Some(PauseOwner::StepDown) {
                    role.resume_step_down();
                }
            }
        }
        if let Some(new_master) = &s.demotion {
            role.demote(Demotion {
                new_master: new_master.as_deref().map(Arc::from),
            });
        }
        role.saw_controller_version(s.controller_version);
        role.node_accepted_topology(s.node_topology);
        role.node.set_kvrocks(s.kvrocks);
    }
}
