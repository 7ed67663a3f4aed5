//! Gates for unit tests, on a hand-driven clock.

use std::sync::Arc;

use super::{Gate, GateParts, Policy};
use crate::command::CommandTable;
use crate::guard::control::ControlPolicy;
use crate::guard::lease::{Lease, LeaseMode};
use crate::guard::pause::{OnDemote, Pause};
use crate::guard::role::Role;
use crate::resp::login::Login;

/// A Gate on a hand-driven clock for unit tests: lease expired, control
/// password `ctl`, node id `me`, pause bounds 10 requests / 1 MiB.
pub(crate) fn for_tests(
    mode: LeaseMode,
    deny: &[&str],
    me: &str,
) -> (Arc<crate::guard::lease::ManualClock>, Gate) {
    for_tests_with_password(mode, deny, me, None)
}

/// `gate` with no control identity (neither `control.password` nor
/// `control.allow_from`): every connection is an ordinary client's, and
/// the controller's pushes come as theirs.
pub(crate) fn without_control_identity(gate: &Gate) {
    gate.reconfigure(ControlPolicy::default(), "READONLY", None);
}

/// [`for_tests`] with `backend.password` set.
pub(crate) fn for_tests_with_password(
    mode: LeaseMode,
    deny: &[&str],
    me: &str,
    backend_password: Option<&str>,
) -> (Arc<crate::guard::lease::ManualClock>, Gate) {
    for_tests_with_login(mode, deny, me, backend_password.map(Login::password))
}

/// [`for_tests`] with the node's login (`backend.user`, `.password`).
pub(crate) fn for_tests_with_login(
    mode: LeaseMode,
    deny: &[&str],
    me: &str,
    backend_login: Option<Login>,
) -> (Arc<crate::guard::lease::ManualClock>, Gate) {
    use crate::guard::lease::{Initial, LeaseTuning, ManualClock};
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let lease = Arc::new(Lease::new(
        clock.clone(),
        mode,
        Initial::Expired,
        LeaseTuning {
            clock_drift: 0.0,
            safety_margin_ms: 0,
        },
        Some(me.into()),
    ));
    let config = crate::command::CommandsConfig {
        deny: deny.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let gate = Gate::new(
        Policy {
            commands: CommandTable::build(&config, &[]),
        },
        Arc::new(Role::new(lease, OnDemote::Forward)),
        GateParts {
            control: ControlPolicy::new(Some("ctl"), &[]),
            reject_prefix: "READONLY".into(),
            backend_login,
            verifier: None,
            pause: Arc::new(Pause::new(10, 1 << 20)),
            fence_reads: false,
        },
    );
    (clock, gate)
}
