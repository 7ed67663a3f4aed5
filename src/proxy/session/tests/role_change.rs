//! Sentinel's reconfiguration transaction: its `CLIENT KILL TYPE normal`
//! is not sent ([`super::super::role_change`]); any other kill is.

use super::{client, grant, resp, session, to_node};
use crate::guard::lease::LeaseMode;

#[test]
fn a_role_changing_transaction_sends_ping_for_the_kill_of_normal_clients() {
    let (_, gate, mut s) = session(LeaseMode::BlockWrite);
    // The Sentinels' own transaction: they are ordinary clients, their
    // REPLICAOF taken under a Sentinel lease source.
    gate.role()
        .promotion_fence
        .enable(std::time::Duration::from_secs(2), true);
    grant(&gate, 60_000);
    let reconfigure: [&[&str]; 6] = [
        &["MULTI"],
        &["SLAVEOF", "127.0.0.1", "1"],
        &["CONFIG", "REWRITE"],
        &["CLIENT", "KILL", "TYPE", "normal"],
        &["CLIENT", "KILL", "TYPE", "pubsub"],
        &["EXEC"],
    ];
    client(&mut s, &reconfigure);
    let sent = to_node(&mut s);
    let expected = [
        resp(&["MULTI"]),
        resp(&["SLAVEOF", "127.0.0.1", "1"]),
        resp(&["CONFIG", "REWRITE"]),
        resp(&["PING"]),
        resp(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        resp(&["EXEC"]),
    ]
    .concat();
    assert_eq!(
        String::from_utf8_lossy(&sent),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn a_kill_outside_a_role_change_goes_as_it_came() {
    let (_, gate, mut s) = session(LeaseMode::BlockWrite);
    // The Sentinels' own transaction: they are ordinary clients, their
    // REPLICAOF taken under a Sentinel lease source.
    gate.role()
        .promotion_fence
        .enable(std::time::Duration::from_secs(2), true);
    grant(&gate, 60_000);
    let kill: &[&str] = &["CLIENT", "KILL", "TYPE", "normal"];
    client(&mut s, &[&["MULTI"], kill, &["EXEC"], kill]);
    let expected = [resp(&["MULTI"]), resp(kill), resp(&["EXEC"]), resp(kill)].concat();
    assert_eq!(
        String::from_utf8_lossy(&to_node(&mut s)),
        String::from_utf8_lossy(&expected)
    );
}
