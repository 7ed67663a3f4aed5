//! Replica acknowledgements on the session ([`super::super::acks`]): the
//! `WAIT` after a batch of writes, the replies held for it, and what a
//! refusal replaces.

use std::time::Duration;

use super::{client, node, session, to_node};
use crate::guard::lease::LeaseMode;

const WAIT: &[u8] = b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$3\r\n100\r\n";

fn durable() -> (std::sync::Arc<crate::guard::gate::Gate>, super::Session) {
    let (_, gate, s) = session(LeaseMode::Disabled);
    gate.replica_acks().set(1, Duration::from_millis(100));
    (gate, s)
}

/// What may be sent to the client now, taken as sent.
fn sent(s: &mut super::Session) -> Vec<u8> {
    let out = s.client_bytes().to_vec();
    s.client_sent(out.len());
    out
}

fn resp(args: &[&str]) -> Vec<u8> {
    super::resp(args)
}

#[test]
fn a_batch_of_writes_waits_for_one_wait_and_its_replies_are_held_until_it_answers() {
    let (gate, mut s) = durable();
    client(&mut s, &[&["GET", "a"], &["SET", "a", "1"], &["GET", "a"]]);
    let expected = [
        resp(&["GET", "a"]),
        resp(&["SET", "a", "1"]),
        resp(&["GET", "a"]),
        WAIT.to_vec(),
    ]
    .concat();
    assert_eq!(to_node(&mut s), expected, "one WAIT after the batch");
    assert_eq!(gate.role().writes_in_flight(), 1);
    node(&mut s, b"$-1\r\n+OK\r\n");
    assert_eq!(
        sent(&mut s),
        b"$-1\r\n",
        "the read before the write goes at once"
    );
    node(&mut s, b"$1\r\n1\r\n");
    assert_eq!(sent(&mut s), b"", "held behind the write");
    assert_eq!(
        gate.role().writes_in_flight(),
        1,
        "in flight until WAIT answers"
    );
    node(&mut s, b":1\r\n");
    assert_eq!(
        sent(&mut s),
        b"+OK\r\n$1\r\n1\r\n",
        "WAIT's reply swallowed"
    );
    assert_eq!(gate.role().writes_in_flight(), 0);
    assert!(s.owed.is_empty());
}

#[test]
fn too_few_replicas_replace_each_write_success_and_nothing_else() {
    let (gate, mut s) = durable();
    client(
        &mut s,
        &[
            &["SET", "a", "1"],
            &["GET", "a"],
            &["INCR", "n"],
            &["LPUSH"],
        ],
    );
    to_node(&mut s);
    node(
        &mut s,
        b"+OK\r\n$1\r\n1\r\n:1\r\n-ERR wrong number of arguments\r\n:0\r\n",
    );
    let out = String::from_utf8(sent(&mut s)).expect("text");
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(
        lines[0].starts_with(
            "-UNKNOWN write outcome unknown: the node applied it, but only 0 of the 1"
        ),
        "{out}"
    );
    assert_eq!(&lines[1..3], ["$1", "1"], "{out}");
    assert!(
        lines[3].starts_with("-UNKNOWN write outcome unknown"),
        "{out}"
    );
    assert_eq!(lines[4], "-ERR wrong number of arguments", "{out}");
    assert_eq!(lines.len(), 6, "nothing else: {out}");
    assert_eq!(gate.metrics.writes_unreplicated.get(), 2);
}

#[test]
fn wait_goes_before_multi_and_a_blocking_pop_and_after_exec() {
    let (_, mut s) = durable();
    client(
        &mut s,
        &[&["SET", "a", "1"], &["MULTI"], &["SET", "b", "2"]],
    );
    let expected = [
        resp(&["SET", "a", "1"]),
        WAIT.to_vec(),
        resp(&["MULTI"]),
        resp(&["SET", "b", "2"]),
    ]
    .concat();
    assert_eq!(to_node(&mut s), expected, "no WAIT inside the transaction");
    node(&mut s, b"+OK\r\n:1\r\n+OK\r\n+QUEUED\r\n");
    assert_eq!(sent(&mut s), b"+OK\r\n+OK\r\n+QUEUED\r\n");
    client(&mut s, &[&["EXEC"]]);
    assert_eq!(to_node(&mut s), [resp(&["EXEC"]), WAIT.to_vec()].concat());
    node(&mut s, b"*1\r\n+OK\r\n:1\r\n");
    assert_eq!(sent(&mut s), b"*1\r\n+OK\r\n");
    client(&mut s, &[&["SET", "c", "3"], &["BLPOP", "q", "0"]]);
    // The pop is a write too: its own WAIT follows it.
    let expected = [
        resp(&["SET", "c", "3"]),
        WAIT.to_vec(),
        resp(&["BLPOP", "q", "0"]),
        WAIT.to_vec(),
    ]
    .concat();
    assert_eq!(
        to_node(&mut s),
        expected,
        "the SET does not wait for the pop"
    );
}

#[test]
fn without_the_rule_nothing_is_sent_or_held() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(&mut s, &[&["SET", "a", "1"], &["MULTI"]]);
    assert_eq!(
        to_node(&mut s),
        [resp(&["SET", "a", "1"]), resp(&["MULTI"])].concat()
    );
    node(&mut s, b"+OK\r\n");
    assert_eq!(sent(&mut s), b"+OK\r\n");
}
