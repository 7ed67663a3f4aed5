//! The session state machine fed byte streams, without sockets: what goes
//! to the node, what the client gets, and the state the replies drive.

use std::sync::Arc;

use super::state::{Expect, Owed, Peer, Transaction, Watch};
use super::{Session, DISCARD};
use crate::guard::gate::{for_tests, Effect, Gate, UNKNOWN_OUTCOME};
use crate::guard::lease::{LeaseMode, ManualClock};
use crate::resp::request::Limits;

mod acks;
mod reply_mode;
mod role_change;

pub(super) const ME: &str = "0123456789012345678901234567890123456789";

pub(super) fn session(mode: LeaseMode) -> (Arc<ManualClock>, Arc<Gate>, Session) {
    session_with_output(mode, 1 << 20)
}

pub(super) fn session_with_output(
    mode: LeaseMode,
    max_output: usize,
) -> (Arc<ManualClock>, Arc<Gate>, Session) {
    let (clock, gate) = for_tests(mode, &[], ME);
    let gate = Arc::new(gate);
    let limits = Limits {
        max_bulk_len: 1 << 20,
        max_multibulk_len: 1 << 10,
        max_inline_len: 1 << 10,
        max_request_len: 1 << 30,
    };
    let s = Session::new(limits, Arc::clone(&gate), max_output);
    (clock, gate, s)
}

pub(super) fn resp(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    crate::resp::encode::request(&args).to_vec()
}

/// The client sends these requests (one read).
pub(super) fn client(s: &mut Session, requests: &[&[&str]]) {
    for r in requests {
        s.from_client.extend_from_slice(&resp(r));
    }
    s.on_client_data();
}

/// The node answers with these frames.
pub(super) fn node(s: &mut Session, replies: &[u8]) {
    s.from_backend.extend_from_slice(replies);
    s.on_backend_data().expect("valid replies");
}

/// What went to the node since the last look.
pub(super) fn to_node(s: &mut Session) -> Vec<u8> {
    s.to_backend.split().to_vec()
}

/// What the client got since the last look.
pub(super) fn to_client(s: &mut Session) -> Vec<u8> {
    s.to_client.split().to_vec()
}

pub(super) fn grant(gate: &Gate, ttl_ms: u64) {
    let grant = crate::guard::lease::Grant {
        master_node_id: Some(ME.into()),
        ttl_ms,
        epoch: 0,
        nonce: None,
        anchor: None,
    };
    gate.lease()
        .grant(&grant, gate.lease().now())
        .expect("granted");
}

const OTHER: &str = "9999999999999999999999999999999999999999";
pub(super) const FENCED: &[u8] =
    b"-READONLY master lease expired, writes are fenced on this node (epoch 0)\r\n";

#[test]
fn a_refused_multi_opens_no_path_past_the_gate() {
    let (_, _, mut s) = session(LeaseMode::BlockWrite);
    client(&mut s, &[&["SET", "k", "v"]]);
    assert!(to_node(&mut s).is_empty());
    assert_eq!(to_client(&mut s), FENCED);
    // MULTI with an argument: the node refuses it.
    client(&mut s, &[&["MULTI", "x"], &["SET", "k", "v"]]);
    assert_eq!(
        to_node(&mut s),
        resp(&["MULTI", "x"]),
        "the SET behind an unconfirmed MULTI is judged as a write"
    );
    node(
        &mut s,
        b"-ERR wrong number of arguments for 'multi' command\r\n",
    );
    assert_eq!(s.transaction, Transaction::None);
    let got = to_client(&mut s);
    assert!(got.ends_with(FENCED), "{}", String::from_utf8_lossy(&got));
    client(&mut s, &[&["SET", "k", "v"]]);
    assert!(to_node(&mut s).is_empty(), "still fenced after the refusal");
    assert_eq!(to_client(&mut s), FENCED);
    // NOAUTH refuses MULTI the same way.
    client(&mut s, &[&["MULTI"]]);
    to_node(&mut s);
    node(&mut s, b"-NOAUTH Authentication required.\r\n");
    client(&mut s, &[&["SET", "k", "v"]]);
    assert!(to_node(&mut s).is_empty());
}

#[test]
fn a_confirmed_multi_queues_and_exec_is_judged() {
    let (_, gate, mut s) = session(LeaseMode::BlockWrite);
    grant(&gate, 60_000);
    client(&mut s, &[&["MULTI"]]);
    node(&mut s, b"+OK\r\n");
    assert!(s.transaction.is_open());
    gate.lease().revoke("test");
    // Queued writes are only queued; EXEC is the write and is refused.
    client(&mut s, &[&["SET", "k", "v"]]);
    assert_eq!(
        to_node(&mut s),
        [resp(&["MULTI"]), resp(&["SET", "k", "v"])].concat()
    );
    node(&mut s, b"+QUEUED\r\n");
    client(&mut s, &[&["EXEC"]]);
    assert_eq!(to_node(&mut s), DISCARD, "EXEC turned into DISCARD");
    node(&mut s, b"+OK\r\n");
    assert_eq!(
        to_client(&mut s),
        [
            &b"+OK\r\n+QUEUED\r\n"[..],
            &b"-EXECABORT Transaction discarded because the master lease expired\r\n"[..]
        ]
        .concat()
    );
    assert_eq!(s.transaction, Transaction::None);
}

#[test]
fn a_late_acknowledgement_is_an_unknown_outcome() {
    let (clock, gate, mut s) = session(LeaseMode::BlockWrite);
    grant(&gate, 1000);
    client(&mut s, &[&["SET", "k", "v"], &["INCR", "n"], &["GET", "k"]]);
    assert_eq!(
        gate.role().writes_in_flight(),
        1,
        "one session with writes in flight"
    );
    node(&mut s, b"+OK\r\n");
    assert_eq!(gate.role().writes_in_flight(), 1, "the INCR is still out");
    clock.advance_ms(1000); // the node held the INCR past the deadline
    node(&mut s, b":1\r\n$1\r\nv\r\n");
    assert_eq!(
        to_client(&mut s),
        [&b"+OK\r\n"[..], UNKNOWN_OUTCOME, b"$1\r\nv\r\n"].concat()
    );
    assert_eq!(gate.role().writes_in_flight(), 0);
    assert_eq!(gate.metrics.unknown_outcomes.get(), 1);
    // An error passes as it is: nothing was acknowledged.
    grant(&gate, 1000);
    client(&mut s, &[&["SET", "k", "v"]]);
    gate.lease().revoke("test");
    node(&mut s, b"-OOM no memory\r\n");
    assert_eq!(to_client(&mut s), b"-OOM no memory\r\n");
}

#[test]
fn log_only_counts_late_acknowledgements_and_passes_them() {
    let (clock, gate, mut s) = session(LeaseMode::LogOnly);
    grant(&gate, 1000);
    client(&mut s, &[&["SET", "k", "v"]]);
    clock.advance_ms(2000);
    node(&mut s, b"+OK\r\n");
    assert_eq!(to_client(&mut s), b"+OK\r\n");
    assert_eq!(gate.metrics.late_acknowledgements_log_only.get(), 1);
}

#[test]
fn role_changes_and_node_ids_follow_the_nodes_answer() {
    let (_, gate, mut s) = session(LeaseMode::BlockWrite);
    crate::guard::gate::without_control_identity(&gate);
    grant(&gate, 60_000);
    client(&mut s, &[&["REPLICAOF", "127.0.0.1", "1"]]);
    node(&mut s, b"-NOAUTH Authentication required.\r\n");
    assert!(
        gate.lease().write_allowed(),
        "a refused REPLICAOF changes nothing"
    );
    client(&mut s, &[&["REPLICAOF", "127.0.0.1", "1"]]);
    node(&mut s, b"+OK\r\n");
    assert!(!gate.lease().write_allowed(), "an accepted one revokes");

    // SETNODEID: an ordinary client's never teaches the id, even accepted.
    let (_, gate, mut s) = session(LeaseMode::BlockWrite);
    crate::guard::gate::without_control_identity(&gate);
    client(&mut s, &[&["CLUSTERX", "SETNODEID", OTHER]]);
    node(&mut s, b"+OK\r\n");
    assert_eq!(gate.lease().node_id().as_deref(), Some(ME));
}

#[test]
fn setnodeid_from_the_controller_is_learned_on_ok_only() {
    let (_, _, mut s) = session(LeaseMode::BlockWrite);
    s.peer = Peer::Control;
    client(&mut s, &[&["CLUSTERX", "SETNODEID", OTHER]]);
    assert_eq!(
        s.owed
            .front()
            .map(|o| matches!(o, Owed::Reply(Expect::Observe(Effect::NodeId(_))))),
        Some(true)
    );
    node(&mut s, b"-ERR Invalid node id\r\n");
    assert!(s.owed.is_empty());
}

#[test]
fn a_broken_watch_fails_only_the_next_exec() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(&mut s, &[&["WATCH", "k"]]);
    node(&mut s, b"+OK\r\n");
    assert_eq!(s.watch, Watch::On);
    s.watch = Watch::Broken; // as a hand-over leaves it
    to_node(&mut s);
    to_client(&mut s);
    // MULTI … DISCARD unwatches on the node: the next transaction runs.
    client(&mut s, &[&["MULTI"], &["DISCARD"]]);
    node(&mut s, b"+OK\r\n+OK\r\n");
    assert_eq!(s.watch, Watch::Off);
    client(&mut s, &[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]);
    assert_eq!(
        to_node(&mut s),
        [
            resp(&["MULTI"]),
            resp(&["DISCARD"]),
            resp(&["MULTI"]),
            resp(&["SET", "k", "v"]),
            resp(&["EXEC"])
        ]
        .concat()
    );
    // A broken watch still fails the EXEC it applies to.
    client(&mut s, &[&["WATCH", "k"]]);
    node(&mut s, b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n+OK\r\n");
    s.watch = Watch::Broken;
    to_node(&mut s);
    to_client(&mut s);
    client(&mut s, &[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]);
    let sent = to_node(&mut s);
    assert!(
        sent.ends_with(DISCARD),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    node(&mut s, b"+OK\r\n+QUEUED\r\n+OK\r\n");
    assert_eq!(to_client(&mut s), b"+OK\r\n+QUEUED\r\n*-1\r\n");
}

#[test]
fn a_client_that_does_not_read_stops_being_read() {
    let (_, _, mut s) = session_with_output(LeaseMode::BlockWrite, 4096);
    assert!(s.wants_requests());
    // Pipelined heartbeats from an ordinary client: answered locally.
    let heartbeat: &[&str] = &["CLUSTERX", "HEARTBEAT", ME, "1000", "1"];
    let many: Vec<&[&str]> = std::iter::repeat_n(heartbeat, 200).collect();
    client(&mut s, &many);
    assert!(s.to_client.len() > 4096);
    assert!(!s.wants_requests(), "over the bound: not read");
    to_client(&mut s); // the client reads
    assert!(s.wants_requests());
    // Local replies waiting behind a node reply count too.
    client(&mut s, &[&["GET", "k"]]);
    client(&mut s, &many);
    assert!(s.to_client.is_empty() && s.owed_local > 4096);
    assert!(!s.wants_requests());
    node(&mut s, b"$-1\r\n");
    assert_eq!(s.owed_local, 0);
}

#[test]
fn writes_in_flight_cover_exec_and_blocking_pops() {
    let (_, gate, mut s) = session(LeaseMode::Disabled);
    client(&mut s, &[&["MULTI"]]);
    node(&mut s, b"+OK\r\n");
    client(&mut s, &[&["SET", "k", "v"]]);
    node(&mut s, b"+QUEUED\r\n");
    assert_eq!(
        gate.role().writes_in_flight(),
        0,
        "a queued write is not in flight"
    );
    client(&mut s, &[&["EXEC"]]);
    assert_eq!(
        gate.role().writes_in_flight(),
        1,
        "EXEC of writes is counted"
    );
    node(&mut s, b"*1\r\n+OK\r\n");
    assert_eq!(gate.role().writes_in_flight(), 0);
    // BLPOP is not counted (it may block), but its completion is reported.
    client(&mut s, &[&["BLPOP", "q", "0"]]);
    assert_eq!(gate.role().writes_in_flight(), 0);
    node(&mut s, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    assert_eq!(gate.role().blocking_writes_completed(), 1);
    // XREADGROUP without BLOCK answers at once: an ordinary write.
    client(
        &mut s,
        &[&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]],
    );
    assert_eq!(gate.role().writes_in_flight(), 1);
    node(&mut s, b"*-1\r\n");
    assert_eq!(gate.role().writes_in_flight(), 0);
    client(
        &mut s,
        &[&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ]],
    );
    assert_eq!(gate.role().writes_in_flight(), 0);
}

#[test]
fn only_accepted_connection_state_is_replayed() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    client(
        &mut s,
        &[&["SELECT", "1"], &["SELECT", "99"], &["AUTH", "nope"]],
    );
    node(
        &mut s,
        b"+OK\r\n-ERR DB index is out of range\r\n-WRONGPASS invalid username-password pair\r\n",
    );
    assert_eq!(
        s.replay.select.as_deref(),
        Some(&resp(&["SELECT", "1"])[..])
    );
    assert_eq!(s.replay.auth, None);
    client(&mut s, &[&["HELLO", "3"]]);
    node(&mut s, b"%1\r\n+proto\r\n:3\r\n");
    assert!(s.resp3);
    assert_eq!(s.replay.hello.as_deref(), Some(&resp(&["HELLO", "3"])[..]));
    // A HELLO's login is kept as AUTH; the HELLO as its version alone.
    client(&mut s, &[&["HELLO", "3", "AUTH", "u", "p", "SETNAME", "n"]]);
    node(&mut s, b"%1\r\n+proto\r\n:3\r\n");
    assert_eq!(s.replay.hello.as_deref(), Some(&resp(&["HELLO", "3"])[..]));
    assert_eq!(
        s.replay.auth.as_deref(),
        Some(&resp(&["AUTH", "u", "p"])[..])
    );
    // AUTH then RESET pipelined: the AUTH's +OK comes before RESET's, which
    // logs the connection out: nothing is replayed.
    client(&mut s, &[&["AUTH", "pw"], &["RESET"]]);
    node(&mut s, b"+OK\r\n+RESET\r\n");
    assert_eq!(s.replay.auth, None);
    assert_eq!(s.replay.hello, None);
}

#[test]
fn a_replication_stream_passes_unframed_and_carries_only_replconf() {
    let (_, gate, mut s) = session(LeaseMode::Disabled);
    client(&mut s, &[&["PING"], &["PSYNC", "?", "-1"]]);
    assert_eq!(
        to_node(&mut s),
        [resp(&["PING"]), resp(&["PSYNC", "?", "-1"])].concat()
    );
    // PONG, then the stream: not RESP-terminated (an RDB without CRLF), as it came.
    let stream = b"+FULLRESYNC 8de1 0\r\n$5\r\nREDIS*1\r\n$4\r\nPING\r\n";
    node(&mut s, &[&b"+PONG\r\n"[..], stream].concat());
    assert_eq!(to_client(&mut s), [&b"+PONG\r\n"[..], stream].concat());
    // The replica's ACKs go on, owing nothing; anything else is refused.
    client(
        &mut s,
        &[
            &["REPLCONF", "ACK", "0"],
            &["SET", "k", "v"],
            &["KEYS", "*"],
        ],
    );
    assert_eq!(to_node(&mut s), resp(&["REPLCONF", "ACK", "0"]));
    assert!(s.owed.is_empty());
    assert_eq!(gate.role().writes_in_flight(), 0);
    let refused = to_client(&mut s);
    assert_eq!(
        refused.windows(11).filter(|w| w == b"replication").count(),
        2,
        "{}",
        String::from_utf8_lossy(&refused)
    );
}

#[test]
fn after_the_clients_eof_a_blocking_reply_is_not_waited_for() {
    let (_, gate, mut s) = session(LeaseMode::Disabled);
    let (eof, drain) = ((true, false), (false, true));
    // A reply owed ahead of the pop still comes; the pop's may never.
    client(&mut s, &[&["GET", "k"], &["BLPOP", "q", "0"]]);
    to_node(&mut s);
    assert!(!s.finished(eof.0, eof.1, false), "the GET's reply is owed");
    node(&mut s, b"$-1\r\n");
    to_client(&mut s);
    assert!(s.finished(eof.0, eof.1, false), "only the pop is owed");
    // A drain (SIGTERM) still waits for it, up to its timeout.
    assert!(!s.finished(drain.0, drain.1, false));
    // Whatever is pipelined behind the pop waits behind it.
    client(&mut s, &[&["GET", "k"]]);
    to_node(&mut s);
    assert!(s.finished(eof.0, eof.1, false));
    // The pop may have taken place as the connection closed: the failover
    // hears of it as of a reply.
    drop(s);
    assert_eq!(gate.role().blocking_writes_completed(), 1);
}

#[test]
fn only_a_client_owed_nothing_can_be_idle() {
    let (_, _, mut s) = session(LeaseMode::Disabled);
    assert!(s.waits_on_client_only());
    client(&mut s, &[&["BLPOP", "q", "0"]]);
    to_node(&mut s);
    assert!(!s.waits_on_client_only(), "blocked");
    node(&mut s, b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n");
    assert!(s.waits_on_client_only());
    client(&mut s, &[&["SUBSCRIBE", "ch"]]);
    to_node(&mut s);
    node(&mut s, b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    assert!(!s.waits_on_client_only(), "subscribed");
    client(&mut s, &[&["UNSUBSCRIBE"]]);
    to_node(&mut s);
    node(&mut s, b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n");
    assert!(s.waits_on_client_only());
    client(&mut s, &[&["MONITOR"]]);
    to_node(&mut s);
    node(&mut s, b"+OK\r\n");
    assert!(!s.waits_on_client_only(), "monitoring");
}

/// Requests and replies that go as they came keep their order whether the
/// buffers trade places (nothing waited to be sent) or the run is copied
/// behind what still waits, and an incomplete frame stays behind.
#[test]
fn what_passes_as_it_came_keeps_its_order_with_or_without_a_copy() {
    let (_clock, _gate, mut s) = session(LeaseMode::Disabled);
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|k| resp(&["GET", k]));
    client(&mut s, &[&["GET", "a"], &["GET", "b"]]);
    assert!(s.from_client.is_empty(), "everything forwarded");
    // Not yet taken by the node: the next read goes behind it.
    s.from_client.extend_from_slice(&c);
    s.from_client.extend_from_slice(&d[..d.len() - 3]);
    s.on_client_data();
    assert_eq!(to_node(&mut s), [&a[..], &b[..], &c[..]].concat());
    assert_eq!(
        &s.from_client[..],
        &d[..d.len() - 3],
        "the incomplete request waits"
    );
    s.from_client.extend_from_slice(&d[d.len() - 3..]);
    s.on_client_data();
    assert_eq!(to_node(&mut s), d);
    assert!(s.from_client.is_empty());

    node(&mut s, b"$1\r\nA\r\n$1\r\nB\r\n");
    assert!(s.from_backend.is_empty(), "everything passed");
    node(&mut s, b"$1\r\nC\r\n$1\r\n");
    assert_eq!(to_client(&mut s), b"$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n");
    assert_eq!(&s.from_backend[..], b"$1\r\n", "the incomplete reply waits");
    node(&mut s, b"D\r\n");
    assert_eq!(to_client(&mut s), b"$1\r\nD\r\n");
    assert!(s.owed.is_empty(), "every request answered once");
}
