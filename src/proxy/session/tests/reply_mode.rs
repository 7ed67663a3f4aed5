//! `CLIENT REPLY ON|OFF|SKIP` fed as byte streams: the node is sent `ON`,
//! answers everything, and the client gets only what the node would have
//! sent it; writes stay counted and checked.

use super::*;
use crate::command::CLIENT_REPLY_ON;

const OK: &[u8] = b"+OK\r\n";

#[test]
fn off_reaches_the_node_as_on_and_drops_every_reply_until_on() {
    let (_, gate, mut s) = session(LeaseMode::Disabled);
    client(
        &mut s,
        &[
            &["CLIENT", "REPLY", "OFF"],
            &["SET", "k", "v"],
            &["GET", "k"],
        ],
    );
    assert_eq!(
        to_node(&mut s),
        [
            CLIENT_REPLY_ON,
            &resp(&["SET", "k", "v"]),
            &resp(&["GET", "k"])
        ]
        .concat()
    );
    assert_eq!(gate.role().writes_in_flight(), 1, "the SET is out");
    node(&mut s, b"+OK\r\n+OK\r\n$1\r\nv\r\n");
    assert_eq!(to_client(&mut s), b"", "nothing while OFF");
    assert_eq!(
        gate.role().writes_in_flight(),
        0,
        "the SET's reply counted it back"
    );
    assert!(s.owed.is_empty());
    client(&mut s, &[&["CLIENT", "REPLY", "ON"], &["GET", "k"]]);
    assert_eq!(
        to_node(&mut s),
        [CLIENT_REPLY_ON, &resp(&["GET", "k"])].concat()
    );
    node(&mut s, b"+OK\r\n$1\r\nv\r\n");
    assert_eq!(to_client(&mut s), b"+OK\r\n$1\r\nv\r\n");
}

#[test]
fn skip_drops_its_own_reply_and_the_next_requests_only() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(
        &mut s,
        &[
            &["CLIENT", "REPLY", "SKIP"],
            &["PING", "a"],
            &["PING", "b"],
            &["CLIENT", "REPLY", "SKIP"],
            &["CLIENT", "REPLY", "SKIP"],
            &["PING", "c"],
            &["PING", "d"],
        ],
    );
    node(
        &mut s,
        b"+OK\r\n$1\r\na\r\n$1\r\nb\r\n+OK\r\n+OK\r\n$1\r\nc\r\n$1\r\nd\r\n",
    );
    assert_eq!(to_client(&mut s), b"$1\r\nb\r\n$1\r\nd\r\n");
}

#[test]
fn a_node_without_the_command_answers_its_error_and_nothing_is_muted() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(&mut s, &[&["CLIENT", "REPLY", "OFF"], &["PING"]]);
    node(&mut s, b"-ERR Syntax error, try CLIENT LIST\r\n+PONG\r\n");
    assert_eq!(
        to_client(&mut s),
        b"-ERR Syntax error, try CLIENT LIST\r\n+PONG\r\n"
    );
}

#[test]
fn fenced_writes_and_late_acknowledgements_stay_unsent_while_off() {
    let (clock, gate, mut s) = session(LeaseMode::BlockWrite);
    client(&mut s, &[&["CLIENT", "REPLY", "OFF"]]);
    node(&mut s, OK);
    // No lease: the write is refused by leasegate, and its error dropped.
    client(&mut s, &[&["SET", "k", "v"], &["PING"]]);
    assert_eq!(
        to_node(&mut s),
        [CLIENT_REPLY_ON, &resp(&["PING"])].concat(),
        "the fenced SET never reached the node"
    );
    node(&mut s, b"+PONG\r\n");
    assert_eq!(to_client(&mut s), b"");
    // A write acknowledged after the lease ended: not sent either.
    grant(&gate, 1000);
    client(&mut s, &[&["SET", "k", "v"]]);
    assert_eq!(gate.role().writes_in_flight(), 1, "counted while OFF");
    clock.advance_ms(1000);
    node(&mut s, OK);
    assert_eq!(to_client(&mut s), b"");
    assert_eq!(gate.metrics.unknown_outcomes.get(), 1, "still judged");
    assert_eq!(gate.role().writes_in_flight(), 0);
    // Back ON: the next fenced write is answered.
    client(&mut s, &[&["CLIENT", "REPLY", "ON"], &["SET", "k", "v"]]);
    node(&mut s, OK);
    assert_eq!(to_client(&mut s), [OK, FENCED].concat());
}

#[test]
fn skip_covers_a_local_reply_in_its_place() {
    let (_, _, mut s) = session(LeaseMode::BlockWrite);
    client(
        &mut s,
        &[&["CLIENT", "REPLY", "SKIP"], &["SET", "k", "v"], &["PING"]],
    );
    node(&mut s, b"+OK\r\n+PONG\r\n");
    assert_eq!(
        to_client(&mut s),
        b"+PONG\r\n",
        "the fenced SET's error skipped"
    );
}

#[test]
fn inside_a_transaction_it_is_refused_and_exec_aborts() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(&mut s, &[&["MULTI"]]);
    node(&mut s, OK);
    assert_eq!(to_client(&mut s), OK);
    client(
        &mut s,
        &[&["CLIENT", "REPLY", "OFF"], &["PING"], &["EXEC"], &["PING"]],
    );
    let sent = to_node(&mut s);
    assert!(
        !sent.windows(5).any(|w| w == b"REPLY"),
        "nothing of it reached the node"
    );
    assert!(sent.ends_with(&[DISCARD, &resp(&["PING"])].concat()));
    node(&mut s, b"+QUEUED\r\n+OK\r\n+PONG\r\n");
    let got = String::from_utf8(to_client(&mut s)).expect("text");
    assert!(
        got.starts_with("-ERR Command not allowed inside a transaction"),
        "{got}"
    );
    assert!(got.contains("+QUEUED\r\n-EXECABORT"), "{got}");
    assert!(got.ends_with("+PONG\r\n"), "{got}");
}

#[test]
fn reset_ends_off_and_is_answered() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(
        &mut s,
        &[
            &["CLIENT", "REPLY", "OFF"],
            &["PING"],
            &["RESET"],
            &["PING"],
        ],
    );
    node(&mut s, b"+OK\r\n+PONG\r\n+RESET\r\n+PONG\r\n");
    assert_eq!(to_client(&mut s), b"+RESET\r\n+PONG\r\n");
}

const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
const MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";

#[test]
fn messages_pass_while_off_and_confirmations_follow_the_node() {
    for kvrocks in [false, true] {
        let (_, gate, mut s) = session(LeaseMode::Disabled);
        gate.role().node.set_kvrocks(kvrocks);
        client(&mut s, &[&["CLIENT", "REPLY", "OFF"], &["SUBSCRIBE", "ch"]]);
        node(&mut s, &[OK, SUBSCRIBED, MESSAGE].concat());
        let want = if kvrocks {
            MESSAGE.to_vec()
        } else {
            [SUBSCRIBED, MESSAGE].concat()
        };
        assert_eq!(to_client(&mut s), want, "kvrocks: {kvrocks}");
    }
}

#[test]
fn kvrocks_resp3_messages_are_arrays_and_answer_no_request() {
    let (_, gate, mut s) = session(LeaseMode::Disabled);
    gate.role().node.set_kvrocks(true);
    client(&mut s, &[&["HELLO", "3"]]);
    node(&mut s, b"%1\r\n$5\r\nproto\r\n:3\r\n");
    to_client(&mut s);
    client(&mut s, &[&["SUBSCRIBE", "ch"], &["PING"]]);
    let pushed = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
    node(&mut s, &[&pushed[..], MESSAGE, b"+PONG\r\n"].concat());
    assert_eq!(
        to_client(&mut s),
        [&pushed[..], MESSAGE, b"+PONG\r\n"].concat()
    );
    assert!(
        s.owed.is_empty(),
        "the message was not taken for PING's reply"
    );
    // Unsubscribed from everything: arrays are replies again.
    client(
        &mut s,
        &[&["UNSUBSCRIBE", "ch"], &["LRANGE", "l", "0", "-1"]],
    );
    node(
        &mut s,
        &[
            &b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"[..],
            MESSAGE,
        ]
        .concat(),
    );
    assert!(s.owed.is_empty(), "the array answered LRANGE");
}
