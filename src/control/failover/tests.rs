//! The failover's unit tests: its states, errors and rollback against
//! scripted nodes.

use super::*;
use crate::config::Config;
use crate::guard::lease::ManualClock;
use crate::kvrocks::admin_api::LeaseOutcome;
use crate::proxy::backend::BackendError;

fn context() -> Arc<ControlContext> {
    let config = Config::parse("backend:\n  addr: 127.0.0.1:1\n", "t").expect("valid config");
    Arc::new(ControlContext::new(
        config,
        Arc::new(ManualClock::new(1_000_000_000)),
    ))
}

/// The texts are the ones the report's `error` always had (tests,
/// scripts and the README match on them).
#[test]
fn error_texts_are_unchanged() {
    let cases: Vec<(FailoverError, &str)> = vec![
        (
            FailoverError::AlreadyRunning,
            "Failover is already in progress",
        ),
        (
            FailoverError::TaskEnded {
                panicked: true,
                lease_valid: false,
                demoted: true,
            },
            "the failover task panicked: this node's lease is revoked and it is demoted; check /v1/status and let the controller decide",
        ),
        (
            FailoverError::TaskEnded {
                panicked: false,
                lease_valid: true,
                demoted: false,
            },
            "the failover task was cancelled: this node's lease is valid and it is not demoted; check /v1/status and let the controller decide",
        ),
        (
            FailoverError::NoNodeId { to: "h:1".into() },
            "the target leasegate at h:1 has no node_id",
        ),
        (
            FailoverError::NotAMaster,
            "Current node is a slave, can't failover",
        ),
        (
            FailoverError::NotAReplica {
                target: "t:1".into(),
                node: "s:1".into(),
                role: None,
                master: None,
            },
            "the target node t:1 is not a replica of this node s:1 (role unknown, master none)",
        ),
        (
            FailoverError::NotAReplica {
                target: "t:1".into(),
                node: "s:1".into(),
                role: Some("slave".into()),
                master: Some("o:1".into()),
            },
            "the target node t:1 is not a replica of this node s:1 (role slave, master o:1)",
        ),
        (
            FailoverError::LinkDown {
                status: Some("down".into()),
            },
            "the target node's replication link is down",
        ),
        (
            FailoverError::InFlightTimeout,
            "writes in flight were not answered within sync_timeout_ms (a loaded node or long pipelines: raise --sync-timeout-ms, and --pause-timeout-ms above it)",
        ),
        (
            FailoverError::SyncTimeout {
                offset: 10,
                timeout_ms: 100,
                at: None,
            },
            "the replica did not reach offset 10 within 100 ms (sync timeout; its offset could not be read in that time; raise --sync-timeout-ms, and --pause-timeout-ms above it)",
        ),
        (
            FailoverError::SyncTimeout {
                offset: 10,
                timeout_ms: 100,
                at: Some(7),
            },
            "the replica did not reach offset 10 within 100 ms (sync timeout; it was at 7; raise --sync-timeout-ms, and --pause-timeout-ms above it)",
        ),
        (
            FailoverError::ResyncTimeout {
                why: Resync::PauseEnded,
                timeout_ms: 100,
            },
            "the pause ended before the switch (pause_timeout_ms is too short), and the replica did not catch up with this node again within 100 ms (sync timeout)",
        ),
        (
            FailoverError::ResyncUnchecked {
                why: Resync::BlockingWrite,
                source: Box::new(FailoverError::Info {
                    source: BackendError::ReplyTimeout(5),
                }),
            },
            "a blocking write (BLPOP & co.) completed on this node after its offset was read, and the replica's catch-up could not be checked: INFO replication failed: no reply within 5 ms",
        ),
        (
            FailoverError::PromoteFailed {
                node: "t:1".into(),
                source: BackendError::Reply("ERR no".into()),
                why: NotPromoted::Refused,
            },
            "cannot promote the target node t:1: ERR no; it is certainly still a replica (it refused the request and reports itself a replica), so this node was unfenced and stays master",
        ),
        (
            FailoverError::PromoteUnknown {
                node: "t:1".into(),
                source: BackendError::ReplyTimeout(5),
                why: PromotionUnknown::OtherRole { role: None },
                epoch: 3,
            },
            "cannot promote the target node t:1: no reply within 5 ms; whether it was promoted cannot be determined (it reports the role unknown). Both nodes are fenced: this node's lease is revoked (epoch 3) and it is marked demoted, and the target's leasegate was not granted the lease. The controller must grant the lease (epoch 3 or later) to the node that is to be master",
        ),
        (
            FailoverError::GrantFailed {
                node: "t:1".into(),
                leasegate: "a:1".into(),
                epoch: 3,
                node_id: "id".into(),
                source: Box::new(GrantUnconfirmed::NotApplied(LeaseOutcome::Revoked)),
            },
            "the target node t:1 was promoted, but its leasegate a:1 did not confirm the lease grant at epoch 3: the grant was not applied (outcome revoked). Both nodes are fenced: this node's lease is revoked and it is marked demoted (held writes are not applied to it), and the target's leasegate holds no lease unless the grant got through unconfirmed. The controller must grant the lease (epoch 3 or later, to id if the promoted node is to stay master)",
        ),
        (
            FailoverError::BadTargetAddress { node: "t".into() },
            "bad target node address t",
        ),
        (
            FailoverError::Rejoin {
                source: BackendError::Reply("ERR x".into()),
            },
            "the new master serves, but this node could not be made its replica: ERR x",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
    let unreadable = PromotionUnknown::RoleUnreadable {
        source: RoleError::Role {
            source: BackendError::ReplyTimeout(5),
        },
    };
    assert_eq!(
        unreadable.to_string(),
        "its role cannot be read: ROLE failed: no reply within 5 ms"
    );
}

#[test]
fn a_wildcard_listen_address_is_reached_at_the_admin_host() {
    assert_eq!(
        client_address("0.0.0.0:6380", "10.0.0.2:9180"),
        "10.0.0.2:6380"
    );
    assert_eq!(
        client_address("[::]:6380", "10.0.0.2:9180"),
        "10.0.0.2:6380"
    );
    assert_eq!(
        client_address("10.0.0.3:6380", "10.0.0.2:9180"),
        "10.0.0.3:6380"
    );
    assert_eq!(
        client_address("0.0.0.0:6380", "https://10.0.0.2:9180/"),
        "10.0.0.2:6380"
    );
    assert_eq!(
        client_address("10.0.0.3:6380", "https://10.0.0.2:9180"),
        "10.0.0.3:6380"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn one_failover_at_a_time() {
    let ctx = context();
    let gate = &ctx.gate;
    let first = RunGuard::acquire(gate).expect("free");
    assert!(gate.role().failover.is_running());
    assert!(RunGuard::acquire(gate).is_none(), "already in progress");
    drop(first);
    assert!(!gate.role().failover.is_running());
    assert_eq!(gate.role().failover.state(), FailoverState::Failed);
    assert!(RunGuard::acquire(gate).is_some(), "free again");
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_that_panics_is_cleaned_up() {
    let ctx = context();
    let gate = Arc::clone(&ctx.gate);
    let mut guard = RunGuard::acquire(&gate).expect("free");
    gate.role().prepare_handover(Some("127.0.0.1:2".into()));
    gate.pause()
        .pause(Duration::from_secs(60), PauseMode::Write);
    guard.paused = true;
    gate.role().failover.set(FailoverState::WaitSync);
    let task = tokio::spawn(async move {
        let _guard = guard;
        panic!("a bug in the middle of a failover");
    });
    assert!(task.await.expect_err("panicked").is_panic());
    assert!(
        !gate.role().failover.is_running(),
        "the next failover may run"
    );
    assert_eq!(gate.role().failover.state(), FailoverState::Failed);
    assert!(!gate.pause().is_paused(), "the pause ended");
    assert_eq!(
        gate.role().handover_target(),
        None,
        "the hand-over withdrawn"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_target_fails_cleanly() {
    let shared = context();
    let request: FailoverRequest =
        serde_json::from_str(r#"{"to":"127.0.0.1:1"}"#).expect("request");
    let report = run(&shared, request).await;
    assert_eq!(report.result, FailoverState::Failed);
    assert!(!report.both_fenced);
    assert!(report.error.is_some());
    assert!(!shared.gate.role().failover.is_running());
    assert!(!shared.gate.pause().is_paused());
    assert_eq!(shared.gate.role().failover.state(), FailoverState::Failed);
}
