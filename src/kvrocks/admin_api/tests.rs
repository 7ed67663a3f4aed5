//! Unit tests of [`super`].

use super::*;

#[test]
fn failover_states_round_trip() {
    for v in 0..8u8 {
        let s = FailoverState::from_u8(v);
        assert_eq!(s as u8, v);
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(json, format!("\"{}\"", s.as_str()));
        assert_eq!(serde_json::from_str::<FailoverState>(&json).ok(), Some(s));
    }
    assert_eq!(FailoverState::from_u8(200), FailoverState::None);
}

#[test]
fn requests_keep_their_defaults_and_refuse_unknown_fields() {
    let r: FailoverRequest = serde_json::from_str(r#"{"to":"h:1"}"#).expect("valid");
    assert_eq!(r, FailoverRequest::new("h:1"));
    assert_eq!(
        serde_json::to_string(&r).expect("serializes"),
        r#"{"to":"h:1","sync_timeout_ms":100,"pause_timeout_ms":500,"force_on_timeout":false,"lease_ttl_ms":10000}"#
    );
    assert!(serde_json::from_str::<FailoverRequest>(r#"{"to":"h:1","x":1}"#).is_err());
    let untimed: FailoverRequest =
        serde_json::from_str(r#"{"to":"h:1","promotion_timing":false}"#).expect("valid");
    assert!(!untimed.promotion_timing);
    assert!(serde_json::to_string(&untimed)
        .expect("serializes")
        .contains(r#""promotion_timing":false"#));

    let p: PauseRequest = serde_json::from_str(r#"{"timeout_ms":5}"#).expect("valid");
    assert_eq!(p.mode, PauseMode::Write);
    assert!(serde_json::from_str::<PauseRequest>(r#"{"timeout_ms":5,"mode":"x"}"#).is_err());
    assert_eq!("ALL".parse::<PauseMode>(), Ok(PauseMode::All));
    assert!("some".parse::<PauseMode>().is_err());

    let l = LeaseRequest {
        master_node_id: "n".into(),
        epoch: 2,
        ttl_ms: 3,
        nonce: None,
    };
    let text = serde_json::to_string(&l).expect("serializes");
    assert_eq!(text, r#"{"master_node_id":"n","epoch":2,"ttl_ms":3}"#);
    assert_eq!(serde_json::from_str::<LeaseRequest>(&text).ok(), Some(l));
}

#[test]
fn status_reads_what_it_writes() {
    let status = Status {
        lease: LeaseView {
            mode: LeaseMode::BlockWrite,
            valid: true,
            owner: Some("a".into()),
            node_id: Some("a".into()),
            epoch: 4,
            remaining_ms: None,
            revoked_reason: None,
        },
        node: NodeView {
            replication: Some(Replication {
                role: Some("master".into()),
                offset: Some(9),
                link_status: None,
                master: None,
                replid: None,
            }),
            error: None,
        },
        paused: false,
        pause: PauseView {
            paused: false,
            mode: None,
            held_requests: 0,
            held_bytes: 0,
        },
        failover_state: FailoverState::None,
        demoted: None,
        listen: "0.0.0.0:6380".into(),
        backend: "127.0.0.1:6379".into(),
        clock: Some(ClockView {
            tick_ns: 4_000_000,
            since_tick_ns: 1_234_567,
            lag_ns: 335_000,
            monotonic_ns: 11_000_000_000,
        }),
        pid: Some(42),
    };
    let value = serde_json::to_value(&status).expect("serializes");
    assert_eq!(value["lease"]["mode"], "block-write");
    assert!(value["lease"]["remaining_ms"].is_null());
    assert_eq!(value["failover_state"], "none");
    assert!(value["demoted"].is_null());
    assert_eq!(value["node"]["replication"]["role"], "master");
    assert_eq!(serde_json::from_value::<Status>(value).ok(), Some(status));
}
