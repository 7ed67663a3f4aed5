//! Unit tests of the Gate's decisions, on a hand-driven clock.

use super::*;
use crate::command::{Name, ReplyMode, CLIENT_REPLY_ON};
use crate::guard::control::{CONTROL_PASSWORD_MISPLACED, NOPERM};
use crate::guard::lease::ManualClock;
use crate::guard::role::{Demotion, Source};
use crate::resp::encode::request as encode;
use crate::resp::request::{Limits, RequestFramer};

const ME: &str = "0123456789012345678901234567890123456789";

fn gate(mode: LeaseMode, deny: &[&str]) -> (Arc<ManualClock>, Gate) {
    for_tests(mode, deny, ME)
}

/// A grant naming this node master for 10 s, at epoch 1.
fn ten_seconds_for_me() -> crate::guard::lease::Grant {
    crate::guard::lease::Grant {
        master_node_id: Some(ME.to_string()),
        ttl_ms: 10_000,
        epoch: 1,
        nonce: None,
        anchor: None,
    }
}

fn ask(gate: &Gate, args: &[&str], control: bool) -> Verdict {
    ask_as(gate, args, control, false)
}

/// [`ask`] for a session that was moved to another leasegate or not.
fn ask_as(gate: &Gate, args: &[&str], control: bool, handed_over: bool) -> Verdict {
    let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let bytes = encode(&raw);
    let mut framer = RequestFramer::new(Limits {
        max_bulk_len: 1 << 20,
        max_multibulk_len: 1 << 10,
        max_inline_len: 1 << 10,
        max_request_len: 1 << 30,
    });
    let head = framer.next(&bytes).expect("valid").expect("complete");
    let policy = gate.policy();
    let words = head.words(&bytes);
    let command = policy.commands.classify(&words.name, &words.sub);
    gate.admit(&Admission {
        class: command.class,
        command,
        head: &head,
        bytes: &bytes,
        control,
        verified: false,
        covered: false,
        handed_over,
        buffered: 0,
        peer: Some(std::net::Ipv4Addr::new(192, 0, 2, 7).into()),
    })
}

/// A session moved to another leasegate reaches it from this leasegate's
/// address, which that one may trust as its controller's
/// (`control.allow_from`): an ordinary client's CLIENT PAUSE, CLIENT
/// UNPAUSE and FAILOVER are refused here, not passed on to be taken there
/// as the controller's (an attack pass paused the new master's writes and
/// failed it back so). The controller's own go on as before.
#[test]
fn a_moved_ordinary_session_passes_on_no_control_command() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    gate.role().demote(Demotion {
        new_master: Some("127.0.0.1:7002".into()),
    });
    for args in [
        &["CLIENT", "PAUSE", "1000", "WRITE"][..],
        &["client", "unpause"],
        &["FAILOVER"],
        &["failover", "to", "127.0.0.1", "7001"],
    ] {
        assert_eq!(
            ask_as(&gate, args, false, true),
            Verdict::Reply(Bytes::from_static(super::MOVED_CONTROL)),
            "{args:?}"
        );
        assert_eq!(
            ask_as(&gate, args, true, true),
            Verdict::Forward,
            "{args:?} from the controller"
        );
    }
    // Not moved, an ordinary client's CLIENT PAUSE is its node's.
    assert_eq!(
        ask_as(&gate, &["CLIENT", "PAUSE", "1000"], false, false),
        Verdict::Forward
    );
    assert_eq!(gate.metrics.control_refused.get(), 4);
}

/// A session moved to the new master's leasegate sends it its requests,
/// but never what is addressed to this node itself: the other node's
/// answer would be taken for this one's. Those close the connection.
/// `INFO` among them: Sentinel's links to a replica whose node was down
/// were served by the master's node, and Sentinel took the master's
/// `INFO` for the replica's (walkthrough 13: the shard could no longer
/// fail over). Once its node answers again, they take the session home.
#[test]
fn a_moved_session_never_asks_the_other_node_what_is_addressed_to_this_one() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    gate.role().demote(Demotion {
        new_master: Some("127.0.0.1:7002".into()),
    });
    for args in [
        &["ROLE"][..],
        &["CLUSTER", "INFO"],
        &["cluster", "myid"],
        &["CLUSTERX", "VERSION"],
        &["CLUSTERX", "SETNODES", "x", "2"],
        &["CLUSTERX", "SETNODEID", ME],
        &["REPLICAOF", "NO", "ONE"],
        &["SLAVEOF", "h", "1"],
        &["INFO"],
        &["info", "replication"],
    ] {
        assert!(
            matches!(ask_as(&gate, args, true, true), Verdict::Close(r) if r.starts_with(b"-ERR leasegate: this connection was moved")),
            "{args:?}"
        );
        // Not moved: as before.
        assert!(
            !matches!(ask_as(&gate, args, true, false), Verdict::Close(_)),
            "{args:?}"
        );
    }
    for args in [&["GET", "k"][..], &["SET", "k", "v"], &["CLUSTER", "SLOTS"]] {
        assert_eq!(
            ask_as(&gate, args, false, true),
            Verdict::Forward,
            "{args:?}"
        );
    }
    assert_eq!(gate.metrics.addressed_elsewhere.get(), 10);
    // Its node answers again (the probe says so): such a request takes the
    // session back there, outside a transaction.
    gate.role()
        .node
        .succeeded(crate::kvrocks::topology::Replication::default());
    for args in [&["CLUSTER", "INFO"][..], &["ROLE"], &["INFO"]] {
        assert_eq!(
            ask_as(&gate, args, true, true),
            Verdict::ReturnHome,
            "{args:?}"
        );
    }
    assert_eq!(gate.metrics.addressed_elsewhere.get(), 10);
}

#[test]
fn denied_commands_are_answered_locally() {
    let (_, gate) = gate(LeaseMode::Disabled, &["FLUSHALL"]);
    assert_eq!(
        ask(&gate, &["FlushAll"], false),
        Verdict::Reply(Bytes::from_static(
            b"-ERR command 'flushall' is disabled by leasegate\r\n"
        ))
    );
    assert_eq!(ask(&gate, &["GET", "k"], false), Verdict::Forward);
}

/// `lease.fence_reads`: a master without a valid lease refuses reads
/// too; with the lease, or as a replica, it serves them.
#[test]
fn fenced_reads_need_the_lease_on_a_master_only() {
    let (clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    assert_eq!(
        ask(&gate, &["GET", "k"], false),
        Verdict::Forward,
        "off by default"
    );
    gate.set_fence_reads(true);
    assert_eq!(
        ask(&gate, &["GET", "k"], false),
        Verdict::Reply(Bytes::from_static(
            b"-READONLY master lease expired, reads are fenced on this node (lease.fence_reads; epoch 0)\r\n"
        ))
    );
    for no_data in [
        &["PING"][..],
        &["SELECT", "1"],
        &["PUBLISH", "c", "m"],
        &["MULTI"],
    ] {
        assert_eq!(
            ask(&gate, no_data, false),
            Verdict::Forward,
            "{no_data:?} reads no data"
        );
    }
    let hb = ["CLUSTERX", "HEARTBEAT", ME, "1000", "3"];
    assert!(matches!(ask(&gate, &hb, true), Verdict::Rewrite { .. }));
    assert_eq!(
        ask(&gate, &["GET", "k"], false),
        Verdict::Forward,
        "under the lease"
    );
    clock.advance_ms(1000);
    assert!(matches!(
        ask(&gate, &["GET", "k"], false),
        Verdict::Reply(_)
    ));
    // The probe finds the node a replica: its reads are replica reads.
    gate.role()
        .node
        .succeeded(crate::kvrocks::topology::Replication {
            role: Some("slave".into()),
            ..Default::default()
        });
    assert_eq!(ask(&gate, &["GET", "k"], false), Verdict::Forward);
    gate.set_fence_reads(false);
    gate.role()
        .node
        .succeeded(crate::kvrocks::topology::Replication {
            role: Some("master".into()),
            ..Default::default()
        });
    assert_eq!(
        ask(&gate, &["GET", "k"], false),
        Verdict::Forward,
        "off again"
    );
    assert_eq!(
        gate.metrics
            .writes_fenced
            .get_or_create(&Reason { reason: "read" })
            .get(),
        2
    );
}

#[test]
fn writes_need_a_valid_lease_in_block_write() {
    let (clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    assert_eq!(
        ask(&gate, &["SET", "k", "v"], false),
        Verdict::Reply(Bytes::from_static(
            b"-READONLY master lease expired, writes are fenced on this node (epoch 0)\r\n"
        ))
    );
    assert_eq!(
        ask(&gate, &["GET", "k"], false),
        Verdict::Forward,
        "reads pass"
    );
    assert_eq!(
        ask(&gate, &["EVAL_RO", "return 1", "0"], false),
        Verdict::Forward
    );
    assert!(matches!(
        ask(&gate, &["EVAL", "return 1", "0"], false),
        Verdict::Reply(_)
    ));
    assert!(
        matches!(
            ask(&gate, &["CONFIG", "SET", "x", "y"], false),
            Verdict::Forward
        ),
        "admin passes"
    );
    // A heartbeat from the controller opens writes.
    let hb = ["CLUSTERX", "HEARTBEAT", ME, "1000", "3"];
    assert!(matches!(ask(&gate, &hb, true), Verdict::Rewrite { .. }));
    assert_eq!(ask(&gate, &["SET", "k", "v"], false), Verdict::Forward);
    clock.advance_ms(1000);
    assert_eq!(
        ask(&gate, &["SET", "k", "v"], false),
        Verdict::Reply(Bytes::from_static(
            b"-READONLY master lease expired, writes are fenced on this node (epoch 3)\r\n"
        ))
    );
}

#[test]
fn log_only_passes_and_counts() {
    let (_, gate) = gate(LeaseMode::LogOnly, &[]);
    assert_eq!(ask(&gate, &["SET", "k", "v"], false), Verdict::Forward);
    assert_eq!(gate.metrics.writes_unfenced_log_only.get(), 1);
}

#[test]
fn heartbeats_need_control() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    let hb = ["CLUSTERX", "HEARTBEAT", ME, "1000", "3"];
    assert_eq!(
        ask(&gate, &hb, false),
        Verdict::Reply(Bytes::from_static(NOPERM))
    );
    assert!(!gate.lease().write_allowed());
    assert!(
        matches!(ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "0", "3"], true), Verdict::Reply(r) if r.starts_with(b"-ERR invalid lease_ms"))
    );
}

#[test]
fn replicaof_revokes() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    without_control_identity(&gate);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
    assert!(gate.lease().write_allowed());
    assert_eq!(
        ask(&gate, &["REPLICAOF", "NO", "ONE"], false),
        Verdict::Forward
    );
    assert!(gate.lease().write_allowed(), "NO ONE keeps it");
    assert!(matches!(
        ask(&gate, &["REPLICAOF", "127.0.0.1", "6379"], false),
        Verdict::Observe(Effect::Replica { .. })
    ));
}

/// A controller's `REPLICAOF NO ONE` that the node accepts ends a
/// demotion (the node is a master now: writes must not be handed to the
/// old master, which may hand them back); writes then wait for the lease.
/// An ordinary client's changes nothing leasegate believes.
#[test]
fn a_controllers_promotion_ends_the_demotion() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    without_control_identity(&gate);
    gate.role().demote(Demotion {
        new_master: Some("127.0.0.1:7002".into()),
    });
    assert_eq!(
        ask(&gate, &["REPLICAOF", "NO", "ONE"], false),
        Verdict::Forward
    );
    let promoted = ask(&gate, &["replicaof", "no", "one"], true);
    assert_eq!(promoted, Verdict::Observe(Effect::Promoted));
    assert!(gate.role().is_demoted(), "only once the node accepts it");
    gate.accepted(&Effect::Promoted);
    assert!(!gate.role().is_demoted());
    assert!(
        !gate.lease().write_allowed(),
        "the lease is the lease source's"
    );
    assert!(matches!(
        ask(&gate, &["SET", "k", "v"], false),
        Verdict::Hold(_)
    ));
}

#[test]
fn control_auth_is_checked_not_forwarded() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    let auth = encode(&[b"AUTH", b"ctl"]);
    let mut framer = RequestFramer::new(Limits {
        max_bulk_len: 1 << 20,
        max_multibulk_len: 1 << 10,
        max_inline_len: 1 << 10,
        max_request_len: 1 << 30,
    });
    let head = framer.next(&auth).expect("valid").expect("complete");
    assert_eq!(
        gate.authenticate(Special::Auth, &head, &auth),
        Some((Verdict::Reply(Bytes::from_static(OK)), true))
    );
    let wrong = encode(&[b"AUTH", b"nope"]);
    let head = framer.next(&wrong).expect("valid").expect("complete");
    assert_eq!(gate.authenticate(Special::Auth, &head, &wrong), None);
    let hello = encode(&[
        b"HELLO", b"3", b"AUTH", b"default", b"ctl", b"SETNAME", b"c",
    ]);
    let head = framer.next(&hello).expect("valid").expect("complete");
    assert_eq!(
        gate.authenticate(Special::Hello, &head, &hello),
        Some((
            Verdict::Rewrite {
                request: encode(&[b"HELLO", b"3", b"SETNAME", b"c"]),
                answer: Answer::Hello
            },
            true
        ))
    );
    let _ = Name::EMPTY;
}

fn authenticate(gate: &Gate, args: &[&[u8]]) -> Option<(Verdict, bool)> {
    let bytes = encode(args);
    let mut framer = RequestFramer::new(Limits {
        max_bulk_len: 1 << 20,
        max_multibulk_len: 1 << 10,
        max_inline_len: 1 << 10,
        max_request_len: 1 << 30,
    });
    let head = framer.next(&bytes).expect("valid").expect("complete");
    let words = head.words(&bytes);
    let special = gate
        .policy()
        .commands
        .classify(&words.name, &words.sub)
        .special;
    gate.authenticate(special, &head, &bytes)
}

/// One password for node and controller (the usual Kvrocks
/// deployment): the AUTH goes to the node unchanged, so the session
/// remembers it like any client's, and the connection is the
/// controller's besides. A separate node password is put in its place.
#[test]
fn a_control_password_that_is_the_nodes_is_forwarded() {
    let (_, shared) = for_tests_with_password(LeaseMode::BlockWrite, &[], ME, Some("ctl"));
    assert_eq!(
        authenticate(&shared, &[b"AUTH", b"ctl"]),
        Some((Verdict::Forward, true))
    );
    assert_eq!(
        authenticate(&shared, &[b"AUTH", b"default", b"ctl"]),
        Some((Verdict::Forward, true))
    );
    assert_eq!(
        authenticate(&shared, &[b"HELLO", b"3", b"AUTH", b"default", b"ctl"]),
        Some((Verdict::Forward, true))
    );
    assert_eq!(authenticate(&shared, &[b"AUTH", b"other"]), None);
    let (_, separate) = for_tests_with_password(LeaseMode::BlockWrite, &[], ME, Some("node"));
    assert_eq!(
        authenticate(&separate, &[b"AUTH", b"ctl"]),
        Some((
            Verdict::Rewrite {
                request: encode(&[b"AUTH", b"node"]),
                answer: Answer::Node,
            },
            true
        ))
    );
}

/// A node whose login names an ACL user (`backend.user`): a bare
/// `AUTH <password>` would name the `default` user there (off, as a rule,
/// where users are named), so the controller's `AUTH` reaches the node as
/// `AUTH <user> <password>`, the node's password alone included; an `AUTH`
/// or `HELLO` that names a user itself goes as it came.
#[test]
fn a_controller_reaches_a_node_with_acl_users_as_the_nodes_user() {
    let login = |password: &str| {
        Some(crate::resp::login::Login {
            user: Some("lg".into()),
            password: password.into(),
        })
    };
    let as_node_user = |password: &[u8]| {
        Some((
            Verdict::Rewrite {
                request: encode(&[b"AUTH", b"lg", password]),
                answer: Answer::Node,
            },
            true,
        ))
    };
    let (_, separate) = for_tests_with_login(LeaseMode::BlockWrite, &[], ME, login("node"));
    assert_eq!(
        authenticate(&separate, &[b"AUTH", b"ctl"]),
        as_node_user(b"node")
    );
    assert_eq!(
        authenticate(&separate, &[b"HELLO", b"3", b"AUTH", b"x", b"ctl"]),
        Some((
            Verdict::Rewrite {
                request: encode(&[b"HELLO", b"3", b"AUTH", b"lg", b"node"]),
                answer: Answer::Hello,
            },
            true
        ))
    );
    let (_, shared) = for_tests_with_login(LeaseMode::BlockWrite, &[], ME, login("ctl"));
    assert_eq!(
        authenticate(&shared, &[b"AUTH", b"ctl"]),
        as_node_user(b"ctl")
    );
    assert_eq!(
        authenticate(&shared, &[b"AUTH", b"lg", b"ctl"]),
        Some((Verdict::Forward, true))
    );
    assert_eq!(
        authenticate(&shared, &[b"HELLO", b"3", b"AUTH", b"lg", b"ctl"]),
        Some((Verdict::Forward, true))
    );
}

#[test]
fn hello_is_parsed_by_its_grammar() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    let misplaced = Some((
        Verdict::Reply(Bytes::from_static(CONTROL_PASSWORD_MISPLACED)),
        false,
    ));
    // `auth` here is a client name, and `u ctl` are not AUTH's arguments.
    assert_eq!(
        authenticate(
            &gate,
            &[b"HELLO", b"3", b"SETNAME", b"auth", b"AUTH", b"u", b"ctl"]
        ),
        Some((
            Verdict::Rewrite {
                request: encode(&[b"HELLO", b"3", b"SETNAME", b"auth"]),
                answer: Answer::Hello
            },
            true
        ))
    );
    // Without the grammar's positions, the control password is never forwarded.
    assert_eq!(
        authenticate(&gate, &[b"HELLO", b"3", b"SETNAME", b"AUTH", b"u", b"ctl"]),
        misplaced
    );
    assert_eq!(
        authenticate(&gate, &[b"HELLO", b"AUTH", b"u", b"ctl"]),
        misplaced
    );
    assert_eq!(
        authenticate(&gate, &[b"AUTH", b"a", b"b", b"ctl"]),
        misplaced
    );
    assert_eq!(authenticate(&gate, &[b"CLIENT", b"SETNAME", b"ctl"]), None);
    // Ordinary credentials pass to the node untouched.
    assert_eq!(
        authenticate(&gate, &[b"HELLO", b"3", b"AUTH", b"default", b"secret"]),
        None
    );
    assert_eq!(authenticate(&gate, &[b"AUTH", b"secret"]), None);
}

#[test]
fn role_changes_take_effect_when_the_node_accepts_them() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    without_control_identity(&gate);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
    let Verdict::Observe(effect) = ask(&gate, &["REPLICAOF", "127.0.0.1", "6379"], false) else {
        panic!("REPLICAOF host port is observed");
    };
    assert!(
        gate.lease().write_allowed(),
        "nothing changes on the way in"
    );
    gate.accepted(&effect);
    assert!(!gate.lease().write_allowed(), "the node's +OK revokes");
}

#[test]
fn only_the_controller_names_the_node() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    without_control_identity(&gate);
    let setnodeid = [
        "CLUSTERX",
        "SETNODEID",
        "9999999999999999999999999999999999999999",
    ];
    assert_eq!(ask(&gate, &setnodeid, false), Verdict::Forward);
    assert_eq!(
        ask(&gate, &setnodeid, true),
        Verdict::Observe(Effect::NodeId(setnodeid[2].to_string()))
    );
}

#[test]
fn acknowledgements_need_the_same_unbroken_term() {
    let (clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
    let term = gate.write_term().expect("block-write checks");
    assert_eq!(gate.acknowledgement(term, b"+OK\r\n"), None);
    // Renewed before it lapsed: the same term.
    clock.advance_ms(900);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
    clock.advance_ms(900);
    assert_eq!(gate.acknowledgement(term, b":1\r\n"), None);
    // Lapsed, then renewed: a write admitted before the gap is not acknowledged.
    clock.advance_ms(200);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
    assert_eq!(
        gate.acknowledgement(term, b"+OK\r\n"),
        Some(UNKNOWN_OUTCOME)
    );
    assert_eq!(
        gate.acknowledgement(term, b"-ERR x\r\n"),
        None,
        "errors pass"
    );
    assert_eq!(gate.acknowledgement(term, b"+QUEUED\r\n"), None);
    let term = gate.write_term().expect("block-write checks");
    gate.role().revoke("test", Source::Node);
    assert_eq!(
        gate.acknowledgement(term, b"*1\r\n:1\r\n"),
        Some(UNKNOWN_OUTCOME)
    );
    assert_eq!(gate.metrics.unknown_outcomes.get(), 2);
}

#[test]
fn client_reply_modes_reach_the_node_as_on() {
    let (_, gate) = gate(LeaseMode::Disabled, &[]);
    for (words, mode) in [
        (["CLIENT", "REPLY", "OFF"], ReplyMode::Off),
        (["client", "reply", "skip"], ReplyMode::Skip),
        (["CLIENT", "REPLY", "ON"], ReplyMode::On),
    ] {
        assert_eq!(
            ask(&gate, &words, false),
            Verdict::Rewrite {
                request: Bytes::from_static(CLIENT_REPLY_ON),
                answer: Answer::ReplyMode(mode)
            }
        );
    }
    // The node's own error for any other shape.
    assert_eq!(
        ask(&gate, &["CLIENT", "REPLY", "MAYBE"], false),
        Verdict::Forward
    );
    assert_eq!(ask(&gate, &["CLIENT", "REPLY"], false), Verdict::Forward);
}

/// The controller's topology demoting a master with writes in flight
/// waits for them (writes paused), then goes on; its `+OK` demotes and
/// ends the pause. Without writes in flight it goes on at once.
#[tokio::test(flavor = "current_thread")]
async fn a_demoting_topology_waits_for_the_writes_in_flight() {
    let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
    assert!(gate.lease().write_allowed());
    let other = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let nodes =
        format!("{other} 127.0.0.1 7001 master - 0-16383\n{ME} 127.0.0.1 7000 slave {other}");
    let setnodes = ["CLUSTERX", "SETNODES", nodes.as_str(), "2"];
    gate.role().write_in_flight(true);
    assert!(matches!(
        ask(&gate, &setnodes, true),
        Verdict::Hold(Wait::Drain { answer: false, .. })
    ));
    assert!(gate.pause().is_paused(), "writes wait meanwhile");
    gate.role().write_in_flight(false);
    let Verdict::Observe(effect) = ask(&gate, &setnodes, true) else {
        panic!("asked again, it goes on");
    };
    assert!(gate.lease().write_allowed(), "nothing changes before +OK");
    gate.accepted(&effect);
    assert!(!gate.lease().write_allowed());
    assert!(gate.role().is_demoted());
    assert!(!gate.pause().is_paused(), "the +OK ends the pause");
    // An ordinary client's is not held (where there is no telling the
    // controller's connections from others').
    without_control_identity(&gate);
    assert!(matches!(
        ask(&gate, &["CLUSTERX", "SETNODES", nodes.as_str(), "3"], false),
        Verdict::Observe(_)
    ));
}

/// A pause someone else set (the new master's fence, the controller's)
/// holds the writes while the controller's demoting topology goes to the
/// node; a `CLIENT UNPAUSE` before the node's answer is applied waits for
/// it. Released in between, writes reached a node that was a replica
/// already, and were answered `MOVED` (walkthrough 26: 37 errors).
#[tokio::test(flavor = "current_thread")]
async fn an_unpause_waits_for_the_answer_to_a_demoting_topology_on_its_way() {
    let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "100000", "1"], true);
    let other = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let nodes =
        format!("{other} 127.0.0.1 7001 master - 0-16383\n{ME} 127.0.0.1 7000 slave {other}");
    let setnodes = ["CLUSTERX", "SETNODES", nodes.as_str(), "2"];
    gate.pause().pause(
        std::time::Duration::from_secs(8),
        crate::guard::pause::PauseMode::Write,
    );
    let Verdict::Observe(effect) = ask(&gate, &setnodes, true) else {
        panic!("no writes in flight: it goes to the node");
    };
    assert_eq!(
        ask(&gate, &["CLIENT", "UNPAUSE"], true),
        Verdict::Reply(Bytes::from_static(b"+OK\r\n"))
    );
    assert!(
        gate.pause().is_paused(),
        "the unpause waits for the node's answer"
    );
    gate.accepted(&effect);
    assert!(gate.role().is_demoted());
    assert!(!gate.pause().is_paused(), "then it takes effect");
    // Without a demoting topology on its way, an unpause is at once.
    gate.pause().pause(
        std::time::Duration::from_secs(8),
        crate::guard::pause::PauseMode::Write,
    );
    ask(&gate, &["CLIENT", "UNPAUSE"], true);
    assert!(!gate.pause().is_paused());
}

/// A promoting topology counts only from the controller: an ordinary
/// client's (even one the node accepted) neither ends a demotion nor
/// tells the poller that a revocation belongs to an earlier version.
#[test]
fn only_the_controllers_topology_promotes() {
    let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    gate.role().demote(Demotion {
        new_master: Some("127.0.0.1:7001".into()),
    });
    let promoting = |from_control| Effect::Topology {
        nodes: format!("{ME} 127.0.0.1 7000 master - 0-16383"),
        version: Some(5),
        from_control,
    };
    gate.accepted(&promoting(false));
    assert!(gate.role().is_demoted());
    assert_eq!(gate.role().last_promotion(), None);
    gate.accepted(&promoting(true));
    assert!(!gate.role().is_demoted());
    assert_eq!(gate.role().last_promotion().map(|(v, _)| v), Some(5));
    // The controller's re-push of an older topology at a version the
    // node already has is a no-op there, and here.
    gate.accepted(&Effect::Topology {
        nodes: format!("{ME} 127.0.0.1 7000 slave bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        version: Some(5),
        from_control: true,
    });
    assert!(!gate.role().is_demoted());
}

/// Named master by the controller's topology before its lease came, a
/// node's writes wait for the lease instead of failing; the grant lets
/// them go, a revocation fences them again at once.
#[tokio::test(flavor = "current_thread")]
async fn a_promoted_node_holds_writes_until_its_lease_comes() {
    let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    let promoting = Effect::Topology {
        nodes: format!("{ME} 127.0.0.1 7000 master - 0-16383"),
        version: Some(5),
        from_control: true,
    };
    gate.accepted(&promoting);
    let Verdict::Hold(wait) = ask(&gate, &["SET", "k", "v"], false) else {
        panic!("the write waits for the lease");
    };
    assert!(matches!(wait, Wait::Lease { .. }));
    // The grant arrives while it waits: it goes on, and is forwarded.
    let grant = ten_seconds_for_me();
    let waiting = gate.wait(&wait);
    gate.role()
        .grant(&grant, gate.lease().now(), Source::Heartbeat)
        .expect("granted");
    assert_eq!(waiting.await, Ok(()));
    assert!(matches!(
        ask(&gate, &["SET", "k", "v"], false),
        Verdict::Forward
    ));
    // Promoted again (a newer topology), then revoked: fenced at once.
    gate.role().revoke("test", Source::Http);
    gate.accepted(&Effect::Topology {
        nodes: format!("{ME} 127.0.0.1 7000 master - 0-16383"),
        version: Some(6),
        from_control: true,
    });
    assert!(matches!(
        ask(&gate, &["SET", "k", "v"], false),
        Verdict::Hold(Wait::Lease { .. })
    ));
    gate.role().revoke("another node is master", Source::Http);
    assert!(matches!(
        ask(&gate, &["SET", "k", "v"], false),
        Verdict::Reply(_)
    ));
}

/// `PUBLISH` moves a master's replication offset (Redis and Kvrocks both
/// replicate it): a write pause holds it, and a demoted master holds it
/// until its node follows the new master, where it passes (a replica's
/// `PUBLISH` moves nothing). The lease does not fence it.
#[tokio::test(flavor = "current_thread")]
async fn publish_on_a_paused_or_demoted_master_is_held() {
    use crate::kvrocks::topology::Replication;
    let (_clock, gate) = gate(LeaseMode::BlockWrite, &[]);
    let publish = ["PUBLISH", "ch", "m"];
    let as_role = |role: &str| {
        gate.role().node.succeeded(Replication {
            role: Some(role.into()),
            ..Default::default()
        })
    };
    as_role("master");
    assert!(
        matches!(ask(&gate, &["SET", "k", "v"], false), Verdict::Reply(_)),
        "writes are fenced without the lease"
    );
    assert_eq!(
        ask(&gate, &publish, false),
        Verdict::Forward,
        "not PUBLISH: Sentinel spreads a failover by it, before the new master's lease"
    );
    gate.role()
        .grant(&ten_seconds_for_me(), gate.lease().now(), Source::Heartbeat)
        .expect("granted");
    assert_eq!(ask(&gate, &publish, false), Verdict::Forward, "leased");
    gate.pause().pause(
        std::time::Duration::from_secs(1),
        crate::guard::pause::PauseMode::Write,
    );
    assert!(
        matches!(ask(&gate, &publish, false), Verdict::Hold(Wait::Pause(_))),
        "a write pause holds it"
    );
    gate.pause().unpause();
    gate.role().demote(Demotion {
        new_master: Some("127.0.0.1:7002".into()),
    });
    let Verdict::Hold(wait) = ask(&gate, &publish, false) else {
        panic!("a demoted master's PUBLISH waits for its node to follow");
    };
    assert!(matches!(wait, Wait::Follow { .. }));
    let waiting = gate.wait(&wait);
    as_role("slave");
    assert_eq!(waiting.await, Ok(()));
    assert_eq!(ask(&gate, &publish, false), Verdict::Forward, "a replica");
    as_role("master");
    let refused = gate
        .wait(&Wait::Follow {
            until: std::time::Instant::now(),
        })
        .await;
    assert_eq!(refused, Err(Bytes::from_static(publish::NOT_FOLLOWING)));
}

/// A log writer into a shared buffer, for tests that read what was logged.
#[derive(Clone, Default)]
struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A heartbeat naming another node revokes the lease; the log line says
/// which client sent it (walkthrough 23: one sent by hand fenced a master
/// for good, and nothing said where it came from).
#[test]
fn a_heartbeat_revoking_the_lease_is_logged_with_its_sender() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    ask(&gate, &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"], true);
    assert!(gate.lease().write_allowed());
    let logged = Logged::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logged = logged.clone();
            move || logged.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        ask(
            &gate,
            &[
                "CLUSTERX",
                "HEARTBEAT",
                "9999999999999999999999999999999999999999",
                "1000",
                "2",
            ],
            true,
        );
    });
    assert!(!gate.lease().write_allowed(), "revoked");
    let log = String::from_utf8_lossy(&logged.0.lock().expect("log")).to_string();
    assert!(
        log.contains("another node was named master") && log.contains("peer=192.0.2.7"),
        "{log}"
    );
}

/// Where the controller is known by its connections (`control.password`
/// here), an ordinary client's command changing the node's role, id or
/// slots is refused: a topology promoting a replica, sent so, lost 19,141
/// acknowledged writes in an attack pass. The controller's pass; so does
/// REPLICAOF under a Sentinel lease source (the Sentinels are ordinary
/// clients).
#[test]
fn an_ordinary_client_does_not_reconfigure_the_node() {
    let (_, gate) = gate(LeaseMode::BlockWrite, &[]);
    let nodes = format!("{ME} 127.0.0.1 7001 master - 0-16383");
    for (args, named) in [
        (
            &["CLUSTERX", "SETNODES", nodes.as_str(), "50"][..],
            "CLUSTERX SETNODES",
        ),
        (&["clusterx", "setnodeid", ME], "CLUSTERX SETNODEID"),
        (
            &["CLUSTERX", "SETSLOT", "1", "NODE", ME, "51"],
            "CLUSTERX SETSLOT",
        ),
        (&["CLUSTERX", "MIGRATE", "1", ME], "CLUSTERX MIGRATE"),
        (&["REPLICAOF", "NO", "ONE"], "REPLICAOF"),
        (&["slaveof", "127.0.0.1", "7002"], "SLAVEOF"),
    ] {
        let Verdict::Reply(refused) = ask(&gate, args, false) else {
            panic!("{args:?} is refused to an ordinary client");
        };
        let text = String::from_utf8_lossy(&refused);
        assert!(
            text.starts_with(&format!(
                "-NOPERM leasegate: {named} changes the node's role"
            )),
            "{text}"
        );
        assert!(
            !matches!(ask(&gate, args, true), Verdict::Reply(_)),
            "{args:?} passes for the controller"
        );
    }
    // Under a Sentinel lease source, REPLICAOF passes (fenced as a
    // promotion where it is one); the cluster's commands are still refused.
    gate.role()
        .promotion_fence
        .enable(std::time::Duration::from_secs(2), true);
    assert!(matches!(
        ask(&gate, &["SLAVEOF", "127.0.0.1", "7002"], false),
        Verdict::Observe(Effect::Replica { .. })
    ));
    let setnodes = ["CLUSTERX", "SETNODES", nodes.as_str(), "50"];
    assert!(matches!(ask(&gate, &setnodes, false), Verdict::Reply(_)));
}
