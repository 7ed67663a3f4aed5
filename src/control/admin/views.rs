//! The guard's state as the admin API reports it: the lease, the pause,
//! the node probe's record and `/v1/status`, in the wire model of
//! [`crate::kvrocks::admin_api`].

use crate::control::probe;
use crate::control::ControlContext;
use crate::guard::lease::{LeaseMode, LeaseSnapshot};
use crate::guard::pause::{PauseMode, PauseStatus};
use crate::kvrocks::admin_api::{self as api, Demoted, LeaseView, PauseView, ProbeReport, Status};

/// The lease as the admin API reports it (`remaining_ms` null when valid
/// until told otherwise).
pub fn lease_view(snapshot: &LeaseSnapshot) -> LeaseView {
    LeaseView {
        mode: match snapshot.mode {
            LeaseMode::Disabled => api::LeaseMode::Disabled,
            LeaseMode::LogOnly => api::LeaseMode::LogOnly,
            LeaseMode::BlockWrite => api::LeaseMode::BlockWrite,
        },
        valid: snapshot.valid,
        owner: snapshot.owner.clone(),
        node_id: snapshot.node_id.clone(),
        epoch: snapshot.epoch,
        remaining_ms: (snapshot.remaining_ms != u64::MAX).then_some(snapshot.remaining_ms),
        revoked_reason: snapshot.revoked_reason.clone(),
    }
}

/// The pause as the admin API reports it.
pub fn pause_view(status: PauseStatus) -> PauseView {
    PauseView {
        paused: status.paused,
        mode: status.mode.map(|m| match m {
            PauseMode::Write => api::PauseMode::Write,
            PauseMode::All => api::PauseMode::All,
        }),
        held_requests: status.held_requests as u64,
        held_bytes: status.held_bytes as u64,
    }
}

fn node_view(view: probe::NodeView) -> api::NodeView {
    api::NodeView {
        replication: view.replication,
        error: view.error,
    }
}

pub(super) fn probe_report(shared: &ControlContext) -> ProbeReport {
    let view = shared.role.node.view();
    let interval = shared.config.load().lease.probe_interval;
    let replication = view.replication.unwrap_or_default();
    ProbeReport {
        enabled: !interval.is_zero(),
        probe_interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        reachable: view.probes > 0 && view.failures == 0,
        consecutive_failures: view.failures,
        last_success_ms_ago: view
            .last_success
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        probes: view.probes,
        role: replication.role,
        offset: replication.offset,
        error: view.error,
        lease: lease_view(&shared.gate.lease().snapshot()),
    }
}

pub(super) fn status(shared: &ControlContext) -> Status {
    let pause = shared.gate.pause();
    Status {
        lease: lease_view(&shared.gate.lease().snapshot()),
        node: node_view(shared.role.node.view()),
        paused: pause.is_paused(),
        pause: pause_view(pause.status()),
        failover_state: shared.gate.role().failover.state(),
        demoted: shared.gate.role().demotion().map(|d| Demoted {
            new_master: d.new_master.as_deref().map(str::to_string),
        }),
        listen: shared.config.load().listen.to_string(),
        backend: shared.config.load().backend.addr.clone(),
        clock: crate::control::failover::timing::host_clock(),
        pid: Some(std::process::id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::kvrocks::admin_api::FailoverState;
    use std::time::Duration;

    /// What `/v1/status` answered when it was built with `json!`.
    fn old_status(shared: &ControlContext) -> serde_json::Value {
        let snapshot = shared.gate.lease().snapshot();
        let mut lease = serde_json::to_value(&snapshot).expect("lease");
        if snapshot.remaining_ms == u64::MAX {
            lease["remaining_ms"] = serde_json::Value::Null;
        }
        serde_json::json!({
            "lease": lease,
            "node": shared.role.node.view(),
            "paused": shared.gate.pause().is_paused(),
            "pause": shared.gate.pause().status(),
            "failover_state": shared.gate.role().failover.state().as_str(),
            "demoted": shared.gate.role().demotion().map(|d| serde_json::json!({"new_master": d.new_master.as_deref()})),
            "listen": shared.config.load().listen,
            "backend": shared.config.load().backend.addr,
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn status_json_is_byte_for_byte_unchanged() {
        let config = Config::parse(
            "backend:\n  addr: 127.0.0.1:1\nnode_id: 0123456789abcdef0123456789abcdef01234567\nlease:\n  mode: block-write\n",
            "t",
        )
        .expect("valid config");
        let shared = ControlContext::new(
            config,
            std::sync::Arc::new(crate::guard::lease::ManualClock::new(1_000_000_000)),
        );
        // The fields added since: this host's coarse clock and the serving
        // process (checked, then set aside for the comparison). The clock
        // is measured first, as a server does at start (with retries: a
        // loaded host's coarse clock can fall a step behind).
        crate::control::failover::timing::warm_up();
        let answer = |shared: &ControlContext| {
            let mut value = serde_json::to_value(status(shared)).expect("serializes");
            let object = value.as_object_mut().expect("an object");
            let clock = object
                .remove("clock")
                .expect("the host's clock is reported");
            assert!(clock["tick_ns"].as_u64().is_some_and(|t| t > 0), "{clock}");
            assert!(clock["since_tick_ns"].as_u64().is_some(), "{clock}");
            let pid = object.remove("pid").expect("the process is reported");
            assert_eq!(pid.as_u64(), Some(u64::from(std::process::id())));
            value.to_string()
        };
        assert_eq!(answer(&shared), old_status(&shared).to_string());
        shared
            .gate
            .pause()
            .pause(Duration::from_secs(60), PauseMode::All);
        shared.gate.role().demote(crate::guard::role::Demotion {
            new_master: Some("127.0.0.1:7".into()),
        });
        shared.gate.role().failover.set(FailoverState::WaitSync);
        let text = answer(&shared);
        assert_eq!(text, old_status(&shared).to_string());
        assert!(
            text.contains(r#""demoted":{"new_master":"127.0.0.1:7"}"#),
            "{text}"
        );
        assert!(text.contains(r#""mode":"all""#), "{text}");
        assert!(text.contains(r#""failover_state":"wait_sync""#), "{text}");
    }

    #[test]
    fn lease_view_nulls_forever() {
        let mut s = LeaseSnapshot {
            mode: crate::guard::lease::LeaseMode::BlockWrite,
            valid: true,
            owner: None,
            node_id: None,
            epoch: 3,
            remaining_ms: u64::MAX,
            revoked_reason: None,
        };
        let v = serde_json::to_value(lease_view(&s)).expect("serializes");
        assert!(v["remaining_ms"].is_null());
        assert_eq!(v["mode"], "block-write");
        s.remaining_ms = 250;
        let v = serde_json::to_value(lease_view(&s)).expect("serializes");
        assert_eq!(v["remaining_ms"], 250);
    }
}
