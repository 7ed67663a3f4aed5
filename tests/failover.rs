//! Graceful failover and hand-over: a master and its replica, a leasegate
//! beside each, writers on the master's leasegate.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::load::Writers;
use support::{free_port, http, post_failover, Client, Proxy, RedisServer, Reply, PATIENCE};

const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const TOKEN: &str = "tk";

struct Pair {
    master: RedisServer,
    replica: RedisServer,
    a: Proxy,
    b: Proxy,
}

fn leasegate(node: &str, id: &str, extra: &str) -> Proxy {
    leasegate_with(&format!("backend:\n  addr: {node}\n"), id, extra)
}

/// A leasegate with its `backend:` section given in full.
fn leasegate_with(backend_yaml: &str, id: &str, extra: &str) -> Proxy {
    Proxy::start_with_backend_yaml(
        backend_yaml,
        &format!(
            "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n{extra}",
            free_port()
        ),
    )
}

/// A master (behind `master_addr`, which may be a relay) and its replica,
/// each with a leasegate; A holds the lease.
fn pair_via(master: RedisServer, master_addr: &str, a_extra: &str) -> Pair {
    let port = master_addr.rsplit_once(':').map(|(_, p)| p).expect("port");
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", port]);
    support::wait_link_up(&mut replica.client());
    let a = leasegate(master_addr, A_ID, a_extra);
    let b = leasegate(&replica.addr(), B_ID, "");
    with_leases(master, replica, a, b)
}

/// Gives A the lease (epoch 1) and tells B that A holds it.
fn with_leases(master: RedisServer, replica: RedisServer, a: Proxy, b: Proxy) -> Pair {
    let mut ctl = a.client();
    assert!(!ctl
        .cmd(&["CLUSTERX", "HEARTBEAT", A_ID, "600000", "1"])
        .is_error());
    let mut ctl_b = b.client();
    assert!(!ctl_b
        .cmd(&["CLUSTERX", "HEARTBEAT", A_ID, "600000", "1"])
        .is_error());
    Pair {
        master,
        replica,
        a,
        b,
    }
}

fn pair(a_extra: &str) -> Pair {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let addr = master.addr();
    pair_via(master, &addr, a_extra)
}

fn failover_http(p: &Pair, body: &str) -> (u16, String) {
    let body = body.replace("TARGET", &format!("127.0.0.1:{}", p.b.admin_port()));
    http(
        p.a.admin_port(),
        "POST",
        "/v1/failover",
        Some(TOKEN),
        Some(&body),
    )
}

/// The moved session reaches B's leasegate from A's address, which B
/// trusts as the controller's here (`allow_from: [127.0.0.1]`, as where
/// the controller's host runs a leasegate too). An ordinary client's
/// CLIENT PAUSE paused B's writes, and its FAILOVER failed B back to A,
/// both taken as the controller's there (an attack pass). They are
/// refused at A's leasegate instead; B stays unpaused, with its lease.
#[test]
fn an_ordinary_client_is_not_the_controller_after_its_session_is_handed_over() {
    let p = pair("");
    // An application host's client: ordinary at A.
    let mut app = Client::connect_from("127.0.0.2", p.a.port);
    let refused = app.cmd(&["FAILOVER"]);
    assert!(refused.error_text().starts_with("NOPERM"), "{refused:?}");
    assert_eq!(app.cmd(&["SET", "k", "1"]), Reply::ok());
    let (code, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":4000}"#,
    );
    assert_eq!(code, 200, "{report}");
    // Its next write moves the session to B's leasegate.
    assert_eq!(app.cmd(&["SET", "k", "2"]), Reply::ok());

    for args in [
        &["CLIENT", "PAUSE", "30000", "WRITE"][..],
        &["CLIENT", "UNPAUSE"],
        &["FAILOVER"],
    ] {
        let reply = app.cmd(args);
        assert!(
            reply
                .error_text()
                .starts_with("NOPERM this connection was moved"),
            "{args:?}: {reply:?}"
        );
    }
    let (_, status) = http(p.b.admin_port(), "GET", "/v1/status", None, None);
    assert!(!status.contains(r#""paused":true"#), "B paused: {status}");
    assert!(status.contains(r#""valid":true"#), "B's lease: {status}");
    // B takes writes (not paused), and the moved session goes on there.
    let mut direct = p.b.client();
    assert_eq!(direct.cmd(&["SET", "other", "1"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "k", "3"]), Reply::ok());
    assert_eq!(p.replica.client().cmd(&["GET", "k"]), Reply::bulk("3"));
}

#[test]
fn failover_under_continuous_writes_loses_nothing_and_fails_no_client() {
    let p = pair("");
    let writers = Writers::start(p.a.port, 8, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    let out = support::failover_command(p.a.admin_port(), p.b.admin_port(), TOKEN);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "failover failed: {printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for state in [
        "started",
        "check_slave",
        "pause_write",
        "wait_sync",
        "switching",
        "success",
    ] {
        assert!(
            printed.contains(state),
            "state {state} missing from:\n{printed}"
        );
    }
    assert!(printed.contains("write stall:"), "{printed}");
    // Redis promotes at once: the timing says so.
    assert!(
        printed.contains("promotion timing: unused") && printed.contains("not Kvrocks"),
        "{printed}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // Every acknowledged write is on the new master.
    writers
        .finish()
        .assert_none_failed_or_lost(&mut p.replica.client(), 100);
    // Roles swapped; the old master's leasegate reports the outcome.
    let Reply::Array(role) = p.replica.client().cmd(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::bulk("master"));
    let (_, status) = http(p.a.admin_port(), "GET", "/v1/status", None, None);
    assert!(
        status.contains("\"failover_state\":\"success\""),
        "{status}"
    );
    let mut ctl = p.a.client();
    let report = ctl
        .cmd(&["CLUSTERX", "HEARTBEAT", B_ID, "600000", "2"])
        .text();
    assert!(
        report.contains("cluster_failover_state:success"),
        "{report}"
    );
    drop(p.master);
}

/// Writes sent under `CLIENT REPLY OFF` still count as in flight until the
/// node has processed them (leasegate keeps the node answering and drops
/// the replies): the failover waits for them, the held ones move to the
/// new master, and the sessions keep their reply mode across the
/// hand-over. Every write before an answered `CLIENT REPLY ON` is on the
/// new master; no SET's reply ever reaches a writer.
#[test]
fn fire_and_forget_writes_under_client_reply_off_survive_a_failover() {
    let p = pair("");
    let writers = Writers::start_reply_off(p.a.port, 6, "off", 20);
    std::thread::sleep(Duration::from_millis(300));
    let out = support::failover_command(p.a.admin_port(), p.b.admin_port(), TOKEN);
    assert!(
        out.status.success(),
        "failover failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    writers
        .finish()
        .assert_none_failed_or_lost(&mut p.replica.client(), 200);
    assert!(
        support::kvrocks::handovers(&p.a, "success") > 0,
        "the writers' sessions were handed over"
    );
    drop(p.master);
}

#[test]
fn failover_to_a_node_that_is_not_a_replica_fails_and_unpauses() {
    let p = pair("");
    let stranger = RedisServer::start();
    let c_proxy = leasegate(&stranger.addr(), B_ID, "");
    let mut app = p.a.client();
    assert_eq!(app.cmd(&["SET", "before", "1"]), Reply::ok());
    let (status, report) = post_failover(&p.a, &c_proxy, TOKEN, "");
    assert_eq!(status, 409, "{report}");
    assert!(report.contains("is not a replica of this node"), "{report}");
    assert!(report.contains("\"result\":\"failed\""), "{report}");
    // Not paused, still the master, nothing changed on the stranger.
    assert_eq!(app.cmd(&["SET", "after", "1"]), Reply::ok());
    assert_eq!(stranger.client().cmd(&["DBSIZE"]), Reply::Int(0));
    let Reply::Array(role) = p.master.client().cmd(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::bulk("master"));
}

/// A target whose leasegate has an admin token of its own: without it the
/// failover stops before anything is paused (the switch would grant the
/// target its lease with that token, after promoting its node: both nodes
/// fenced); with `--target-token` it goes through.
#[test]
fn a_target_with_its_own_admin_token_is_refused_before_the_pause() {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master
        .addr()
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("port");
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    support::wait_link_up(&mut replica.client());
    let a = leasegate(&master.addr(), A_ID, "");
    let b = Proxy::start_with_backend_yaml(
        &format!("backend:\n  addr: {}\n", replica.addr()),
        &format!(
            "node_id: {B_ID}\nadmin:\n  listen: 127.0.0.1:{}\n  token: tk-b\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n",
            free_port()
        ),
    );
    let p = with_leases(master, replica, a, b);
    let mut app = p.a.client();
    let out = support::failover_command(p.a.admin_port(), p.b.admin_port(), TOKEN);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("refuses this failover's admin token"),
        "{printed}"
    );
    // Nothing changed: A is master and takes writes, B's node a replica.
    assert_eq!(app.cmd(&["SET", "after-refusal", "1"]), Reply::ok());
    let Reply::Array(role) = p.replica.client().cmd(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::bulk("slave"));

    let out = support::failover_command_with(
        p.a.admin_port(),
        p.b.admin_port(),
        TOKEN,
        &["--target-token", "tk-b"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let Reply::Array(role) = p.replica.client().cmd(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::bulk("master"));
    assert_eq!(app.cmd(&["SET", "after-failover", "1"]), Reply::ok());
    assert_eq!(
        p.replica.client().cmd(&["GET", "after-failover"]),
        Reply::bulk("1")
    );
}

/// A TCP relay to `target` whose first connection's target→client direction
/// can be frozen (the replica's replication link, to make it lag).
struct Relay {
    port: u16,
    freeze_first: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let freeze_first = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let freeze = Arc::clone(&freeze_first);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let first = count.fetch_add(1, Ordering::SeqCst) == 0;
                let (mut up_in, mut up_out) = (
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_in, &mut up_out);
                });
                let (mut down_in, mut down_out) = (outbound, inbound);
                let freeze = Arc::clone(&freeze);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        while first && freeze.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        match down_in.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                while first && freeze.load(Ordering::SeqCst) {
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                                if down_out.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Relay { port, freeze_first }
    }
}

/// A pair whose replica reaches the master through a relay, then stops
/// receiving the replication stream: `key` is written after the freeze, so
/// the replica is behind by one write.
fn pair_with_a_lagging_replica(key: &str) -> (Pair, Relay) {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let relay = Relay::start(master.port);
    let p = pair_via(master, &format!("127.0.0.1:{}", relay.port), "");
    let mut app = p.a.client();
    assert_eq!(app.cmd(&["SET", "synced", "1"]), Reply::ok());
    // Time for the replica to take the first write before the freeze.
    std::thread::sleep(Duration::from_millis(200));
    relay.freeze_first.store(true, Ordering::SeqCst);
    assert_eq!(app.cmd(&["SET", key, "1"]), Reply::ok());
    (p, relay)
}

#[test]
fn a_sync_timeout_fails_and_unpauses() {
    let (p, relay) = pair_with_a_lagging_replica("unsynced");
    let mut app = p.a.client();
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":100,"pause_timeout_ms":2000}"#,
    );
    assert_eq!(status, 409, "{report}");
    assert!(report.contains("sync timeout"), "{report}");
    // Unpaused at once (not after the 2 s pause timeout); roles unchanged.
    let start = Instant::now();
    assert_eq!(app.cmd(&["SET", "after", "1"]), Reply::ok());
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "writes were still paused"
    );
    let Reply::Array(role) = p.replica.client().cmd(&["ROLE"]) else {
        panic!("ROLE")
    };
    assert_eq!(role[0], Reply::bulk("slave"));
    relay.freeze_first.store(false, Ordering::SeqCst);
}

/// Holds `request` on A behind a controller pause, runs the failover, and
/// returns what the client got.
fn held_through_failover(p: &Pair, client: &mut Client, request: &[&str]) -> Reply {
    let mut ctl = p.a.client();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "5000", "WRITE"]), Reply::ok());
    client.send(request);
    assert_eq!(client.try_read(Duration::from_millis(100)), None, "held");
    let (status, report) = failover_http(
        p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":4000}"#,
    );
    assert_eq!(status, 200, "{report}");
    client.read()
}

#[test]
fn held_writes_are_forwarded_to_the_new_master_with_session_state() {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["SELECT", "2"]), Reply::ok());
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "app-1"]), Reply::ok());
    assert_eq!(
        held_through_failover(&p, &mut c, &["SET", "moved", "yes"]),
        Reply::ok()
    );
    // The session now lives on the new master, in db 2, with its name.
    let mut direct = p.replica.client();
    assert_eq!(direct.cmd(&["SELECT", "2"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "moved"]), Reply::bulk("yes"));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("app-1"));
    assert_eq!(c.cmd(&["INCR", "counter"]), Reply::Int(1));
    assert_eq!(direct.cmd(&["GET", "counter"]), Reply::bulk("1"));
}

/// Only the connection state the node accepted is replayed: a failed
/// SELECT does not move the moved session to another database.
#[test]
fn a_refused_select_is_not_replayed_at_a_hand_over() {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["SELECT", "2"]), Reply::ok());
    assert!(c.cmd(&["SELECT", "99"]).is_error());
    assert_eq!(
        held_through_failover(&p, &mut c, &["SET", "where", "db2"]),
        Reply::ok()
    );
    let mut direct = p.replica.client();
    assert_eq!(direct.cmd(&["SELECT", "2"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "where"]), Reply::bulk("db2"));
}

/// AUTH, SELECT or CLIENT SETNAME queued in a transaction takes effect at
/// EXEC, if at all: replayed as if taken, a SELECT inside a DISCARDed
/// transaction put a moved session's write in database 5 while its client
/// was in 0, `+OK` (an attack pass; an AUTH so gave it another user's
/// rights). Such a session now ends where it would move, its write sent
/// nowhere; HELLO inside a transaction is refused.
#[test]
fn state_set_inside_a_transaction_is_not_replayed_at_a_hand_over() {
    let p = pair("");
    let mut discarded = p.a.client();
    assert_eq!(discarded.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        discarded.cmd(&["SELECT", "5"]),
        Reply::Status("QUEUED".into())
    );
    assert_eq!(discarded.cmd(&["DISCARD"]), Reply::ok());
    let mut hello = p.a.client();
    assert_eq!(hello.cmd(&["MULTI"]), Reply::ok());
    let refused = hello.cmd(&["HELLO", "3"]);
    assert!(
        refused
            .error_text()
            .contains("HELLO is not taken inside a transaction"),
        "{refused:?}"
    );
    assert!(hello.cmd(&["EXEC"]).error_text().starts_with("EXECABORT"));
    let reply = held_through_failover(&p, &mut discarded, &["SET", "order:1", "paid"]);
    assert!(reply.is_error(), "the session ends: {reply:?}");
    let mut direct = p.replica.client();
    assert_eq!(direct.cmd(&["GET", "order:1"]), Reply::Nil);
    assert_eq!(direct.cmd(&["SELECT", "5"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "order:1"]), Reply::Nil);
    // A session that set its state outside the transaction moves on.
    assert_eq!(hello.cmd(&["SET", "plain", "1"]), Reply::ok());
    assert_eq!(direct.cmd(&["SELECT", "0"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "plain"]), Reply::bulk("1"));
}

/// After a hand-over that broke a WATCH, MULTI … DISCARD ends it (DISCARD
/// unwatches on the node): the next transaction runs.
#[test]
fn discard_after_a_broken_watch_lets_the_next_transaction_run() {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["WATCH", "guarded"]), Reply::ok());
    assert_eq!(
        held_through_failover(&p, &mut c, &["SET", "moved", "1"]),
        Reply::ok()
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["DISCARD"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SET", "guarded", "x"]),
        Reply::Status("QUEUED".into())
    );
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![Reply::ok()]));
    assert_eq!(
        p.replica.client().cmd(&["GET", "guarded"]),
        Reply::bulk("x")
    );
}

#[test]
fn watch_exec_across_a_hand_over_returns_null() {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["WATCH", "guarded"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SET", "guarded", "x"]),
        Reply::Status("QUEUED".into())
    );
    assert_eq!(held_through_failover(&p, &mut c, &["EXEC"]), Reply::Nil);
    assert_eq!(
        p.replica.client().cmd(&["EXISTS", "guarded"]),
        Reply::Int(0),
        "nothing applied"
    );
    // The connection goes on, on the new master.
    assert_eq!(c.cmd(&["SET", "after", "1"]), Reply::ok());
    assert_eq!(p.replica.client().cmd(&["GET", "after"]), Reply::bulk("1"));
}

/// A transaction open at a failover (MULTI and its requests queued on the
/// old node, EXEC held by the pause) runs at the new master: the old
/// node's is discarded and the transaction queued again there, its EXEC
/// answered as the new master answers it. It was answered null (nothing
/// applied), which redis-py raises as `WatchError` whether or not the
/// client watched (walkthrough 22).
#[test]
fn a_transaction_open_across_a_hand_over_runs_at_the_new_master() {
    let p = pair("");
    let mut c = p.a.client();
    c.cmd(&["SET", "tx-n", "41"]);
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    let queued = Reply::Status("QUEUED".into());
    assert_eq!(c.cmd(&["SET", "tx-a", "1"]), queued);
    assert_eq!(c.cmd(&["INCR", "tx-n"]), queued);
    assert_eq!(c.cmd(&["GET", "tx-a"]), queued);
    assert_eq!(
        held_through_failover(&p, &mut c, &["EXEC"]),
        Reply::Array(vec![Reply::ok(), Reply::Int(42), Reply::bulk("1")]),
        "run at the new master, once"
    );
    let mut direct = p.replica.client();
    assert_eq!(direct.cmd(&["GET", "tx-n"]), Reply::bulk("42"));
    // The connection goes on there, in step: its next replies are its own.
    assert_eq!(c.cmd(&["INCR", "tx-n"]), Reply::Int(43));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", "tx-n"]), queued);
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![Reply::Int(44)]));
}

/// A transaction whose request the old node refused to queue is not
/// queued again at the new master (its client expects EXECABORT, not a
/// run): its EXEC is answered null, and nothing of it runs. (The first
/// transaction of `a_transaction_after_a_failover_runs_on_the_new_master`,
/// refused by the demoted node, would run without that rule.)
#[test]
fn a_transaction_refused_in_part_on_the_old_node_is_not_run_at_the_new_master() {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "tx-b", "1"]), Reply::Status("QUEUED".into()));
    assert!(
        c.cmd(&["NO-SUCH-COMMAND"]).is_error(),
        "refused on the old node"
    );
    let exec = held_through_failover(&p, &mut c, &["EXEC"]);
    assert!(exec == Reply::Nil || exec.is_error(), "not run: {exec:?}");
    assert_eq!(p.replica.client().cmd(&["EXISTS", "tx-b"]), Reply::Int(0));
}

/// A session that sends only transactions after a failover moves once its
/// first one failed. Queued on the old node (a replica now), that one's
/// write is refused by the node and its EXEC answered null (as a WATCH
/// conflict: nothing applied); before, every later transaction failed the
/// same way, for as long as the client sent only transactions (seen on
/// Kvrocks in cluster mode: `-MOVED` per queued write).
#[test]
fn a_transaction_after_a_failover_runs_on_the_new_master() {
    let (p, mut c) = connected_then_failed_over();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert!(c.cmd(&["INCR", "tx"]).is_error(), "queued on the old node");
    assert_eq!(c.cmd(&["EXEC"]), Reply::Nil, "nothing applied");
    for i in 1..=3 {
        assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
        assert_eq!(c.cmd(&["INCR", "tx"]), Reply::Status("QUEUED".into()));
        assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![Reply::Int(i)]));
    }
    assert_eq!(p.replica.client().cmd(&["GET", "tx"]), Reply::bulk("3"));
}

/// A pair, a client of A connected (its session on A's node), then A
/// failed over to B.
fn connected_then_failed_over() -> (Pair, Client) {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":4000}"#,
    );
    assert_eq!(status, 200, "{report}");
    (p, c)
}

/// The same, pipelined: the old node's refusals of the queued writes
/// came after leasegate had read the `EXEC` and taken the transaction to
/// queue it again at the new master, which then ran it: the client was
/// told `-READONLY` for both writes, and EXEC answered their results (an
/// attack pass). Now EXEC is answered null, and nothing runs.
#[test]
fn a_pipelined_transaction_refused_by_the_old_node_is_not_run_at_the_new_master() {
    let (p, mut c) = connected_then_failed_over();
    let mut pipeline = Vec::new();
    for request in [
        &[&b"MULTI"[..]][..],
        &[b"INCR", b"ptx"],
        &[b"RPUSH", b"ptx-list", b"x"],
        &[b"EXEC"],
    ] {
        pipeline.extend(support::encode(request));
    }
    c.send_raw(&pipeline);
    assert_eq!(c.read(), Reply::ok());
    assert!(c.read().is_error(), "INCR refused by the old node");
    assert!(c.read().is_error(), "RPUSH refused by the old node");
    assert_eq!(c.read(), Reply::Nil, "EXEC: nothing applied");
    let mut direct = p.replica.client();
    assert_eq!(direct.cmd(&["EXISTS", "ptx", "ptx-list"]), Reply::Int(0));
    // The session goes on at the new master, in step.
    assert_eq!(c.cmd(&["INCR", "ptx"]), Reply::Int(1));
}

const NODE_PASSWORD: &str = "pair-secret";

/// [`pair`] with `requirepass`/`masterauth` on both nodes and
/// `backend.password` on both leasegates.
fn pair_with_password() -> Pair {
    let pw = NODE_PASSWORD;
    let master = RedisServer::start_with(&["--requirepass", pw, "--repl-diskless-sync-delay", "0"]);
    let port = master.port.to_string();
    let replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--requirepass",
        pw,
        "--masterauth",
        pw,
    ]);
    let mut r = replica.client();
    assert_eq!(r.cmd(&["AUTH", pw]), Reply::ok());
    support::wait_link_up(&mut r);
    let backend = |addr: String| format!("backend:\n  addr: {addr}\n  password: {pw}\n");
    let a = leasegate_with(&backend(master.addr()), A_ID, "");
    let b = leasegate_with(&backend(replica.addr()), B_ID, "");
    with_leases(master, replica, a, b)
}

/// A HELLO without AUTH after one with it leaves the connection
/// authenticated, on the node as in Redis: the hand-over's replay keeps it
/// so (it replayed only the last HELLO, and every request on the moved
/// session got `NOAUTH`; `redis-cli -3` sends a bare HELLO).
#[test]
fn a_bare_hello_after_hello_auth_keeps_a_moved_session_authenticated() {
    let p = pair_with_password();
    let mut c = p.a.client();
    c.resp3 = true;
    let hello = c.cmd(&[
        "HELLO",
        "3",
        "AUTH",
        "default",
        NODE_PASSWORD,
        "SETNAME",
        "app-3",
    ]);
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    assert!(matches!(c.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(
        held_through_failover(&p, &mut c, &["SET", "moved", "1"]),
        Reply::ok()
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("app-3"));
    assert_eq!(c.cmd(&["INCR", "after"]), Reply::Int(1));
    let mut direct = p.replica.client();
    assert_eq!(direct.cmd(&["AUTH", NODE_PASSWORD]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "after"]), Reply::bulk("1"));
}

#[test]
fn on_demote_moved_and_readonly() {
    let p = pair("pause:\n  on_demote: moved\n");
    let mut c = p.a.client();
    let moved = held_through_failover(&p, &mut c, &["SET", "foo", "bar"]);
    assert_eq!(
        moved.error_text(),
        format!("MOVED 12182 127.0.0.1:{}", p.b.port)
    );
    drop(p);

    let p = pair("pause:\n  on_demote: readonly\n");
    let mut c = p.a.client();
    let readonly = held_through_failover(&p, &mut c, &["SET", "foo", "bar"]);
    assert!(
        readonly
            .error_text()
            .starts_with("READONLY this node was demoted"),
        "{readonly:?}"
    );
    assert_eq!(p.replica.client().cmd(&["EXISTS", "foo"]), Reply::Int(0));
}

/// `leasegate_client_connections` of a leasegate.
fn client_connections(proxy: &Proxy) -> i64 {
    let (_, metrics) = http(proxy.admin_port(), "GET", "/metrics", None, None);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("leasegate_client_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("leasegate_client_connections in /metrics")
}

#[test]
fn failover_there_and_back_returns_sessions_home_without_chains() {
    let p = pair("");
    let mut c = p.a.client();
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "app-1"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "0"]), Reply::ok());
    for (round, (from, to, target_node)) in [
        (&p.a, &p.b, &p.replica),
        (&p.b, &p.a, &p.master),
        (&p.a, &p.b, &p.replica),
        (&p.b, &p.a, &p.master),
    ]
    .into_iter()
    .enumerate()
    {
        // The old master re-syncs as a replica after each failover; like an
        // operator, wait for its link before failing over to it.
        support::wait_link_up(&mut target_node.client());
        let (status, report) = post_failover(
            from,
            to,
            TOKEN,
            r#""sync_timeout_ms":2000,"pause_timeout_ms":4000,"lease_ttl_ms":600000"#,
        );
        assert_eq!(status, 200, "failover {round}: {report}");
        assert_eq!(
            c.cmd(&["INCR", "k"]),
            Reply::Int(round as i64 + 1),
            "failover {round}"
        );
        assert_eq!(
            c.cmd(&["INCR", "k"]),
            Reply::Int(round as i64 + 2),
            "failover {round}"
        );
        assert_eq!(c.cmd(&["DECR", "k"]), Reply::Int(round as i64 + 1));
    }
    // Back on A after an even number of failovers: the session talks to node
    // A directly, and no session is left chained through B into A.
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("app-1"));
    let start = Instant::now();
    while client_connections(&p.a) != 1 || client_connections(&p.b) != 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "sessions left: A {}, B {}",
            client_connections(&p.a),
            client_connections(&p.b)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.master.client().cmd(&["GET", "k"]), Reply::bulk("4"));
}

/// A client blocked in `BLPOP` does not stop the failover: the node turned
/// replica under it, and it is told so rather than left waiting for ever.
/// A write pipelined behind the `BLPOP` waits in leasegate, as it would at
/// the node (it was sent to the node and counted in flight, which the
/// failover then waited for; once the node turned replica it ran there and
/// was refused `-READONLY`), and goes to the new master with the session.
#[test]
fn a_client_blocked_in_blpop_gets_an_error_and_its_write_behind_goes_to_the_new_master() {
    let p = pair("");
    let mut blocked = p.a.client();
    blocked.send(&["BLPOP", "jobs", "0"]);
    blocked.send(&["SET", "behind", "1"]);
    assert_eq!(
        blocked.try_read(Duration::from_millis(100)),
        None,
        "blocked"
    );
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":4000}"#,
    );
    assert_eq!(status, 200, "{report}");
    let unblocked = blocked.read();
    assert!(unblocked.is_error(), "{unblocked:?}");
    assert_eq!(blocked.read(), Reply::ok(), "the write behind it");
    assert_eq!(p.replica.client().cmd(&["GET", "behind"]), Reply::bulk("1"));
}

// ---------------------------------------------------------------------------
// Atomicity: a caller that hangs up, a promotion that fails, a lease grant
// that is refused. Whatever happens, never two unfenced masters.

/// A leasegate's `/v1/status`.
fn status_of(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = http(proxy.admin_port(), "GET", "/v1/status", None, None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/v1/status is JSON")
}

/// Whether a leasegate's lease lets writes pass.
fn lease_valid(proxy: &Proxy) -> bool {
    status_of(proxy)["lease"]["valid"]
        .as_bool()
        .expect("lease.valid in /v1/status")
}

/// The role a node reports (`master` or `slave`).
fn role_of(node: &RedisServer) -> String {
    let Reply::Array(role) = node.client().cmd(&["ROLE"]) else {
        panic!("ROLE is an array")
    };
    role[0].text()
}

/// Waits until the leasegate's failover is in a final state and returns it.
fn wait_failover_end(proxy: &Proxy) -> String {
    let start = Instant::now();
    loop {
        let state = status_of(proxy)["failover_state"]
            .as_str()
            .expect("failover_state")
            .to_string();
        if state == "success" || state == "failed" {
            return state;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the failover never finished: still {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `POST /v1/failover` and hangs up without reading the answer.
fn post_failover_and_hang_up(port: u16, body: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin API");
    let request = format!(
        "POST /v1/failover HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    stream.shutdown(std::net::Shutdown::Both).expect("hang up");
}

#[test]
fn a_caller_hanging_up_does_not_stop_the_failover() {
    // The replica lags behind a frozen relay, so the failover waits in
    // wait_sync while its caller hangs up.
    let (p, relay) = pair_with_a_lagging_replica("lagging");
    let body = format!(
        r#"{{"to":"127.0.0.1:{}","sync_timeout_ms":5000,"pause_timeout_ms":8000}}"#,
        p.b.admin_port()
    );
    post_failover_and_hang_up(p.a.admin_port(), &body);
    let start = Instant::now();
    loop {
        let state = status_of(&p.a)["failover_state"].clone();
        if state == "wait_sync" {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the failover stopped at {state} when its caller hung up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Time for the admin server to notice the hang-up and drop the
    // handler, if it has not yet; then the replica catches up.
    std::thread::sleep(Duration::from_millis(300));
    relay.freeze_first.store(false, Ordering::SeqCst);
    assert_eq!(wait_failover_end(&p.a), "success");
    assert_eq!(role_of(&p.replica), "master");
    assert_eq!(
        p.replica.client().cmd(&["GET", "lagging"]),
        Reply::bulk("1"),
        "the acknowledged write reached the new master"
    );
    assert!(!lease_valid(&p.a), "the old master is fenced");
    assert!(lease_valid(&p.b), "the new master holds the lease");
    assert_eq!(status_of(&p.a)["paused"], false);
    // The run is over: another failover is judged on its merits, not
    // refused as "already in progress".
    let (status, report) = http(
        p.a.admin_port(),
        "POST",
        "/v1/failover",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(status, 409, "{report}");
    assert!(!report.contains("already in progress"), "{report}");
    assert!(report.contains("Current node is a slave"), "{report}");
}

/// What a [`PromoteRelay`] does with the connection that sends
/// `SLAVEOF NO ONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnPromote {
    /// The request reaches the node (it is promoted); its answer is held.
    HoldAnswer,
    /// The request (and everything after it) is held before the node.
    HoldRequest,
}

/// A TCP relay in front of a node that holds one `SLAVEOF NO ONE` (or
/// its answer) until released: a promotion that times out.
struct PromoteRelay {
    port: u16,
    seen: Arc<AtomicBool>,
    released: Arc<AtomicBool>,
}

impl PromoteRelay {
    fn start(target: u16, mode: OnPromote) -> PromoteRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let (seen_all, released_all) = (Arc::clone(&seen), Arc::clone(&released));
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let hold = Arc::new(AtomicBool::new(false));
                let wait = {
                    let (hold, released) = (Arc::clone(&hold), Arc::clone(&released_all));
                    move || {
                        while hold.load(Ordering::SeqCst) && !released.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                };
                let (mut up_in, mut up_out) = (
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                );
                let (up_hold, up_seen, up_wait) =
                    (Arc::clone(&hold), Arc::clone(&seen_all), wait.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match up_in.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                up_wait();
                                let _ = up_out.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => n,
                        };
                        let lower = buf[..n].to_ascii_lowercase();
                        if lower.windows(PROMOTE.len()).any(|w| w == PROMOTE) {
                            up_hold.store(true, Ordering::SeqCst);
                            up_seen.store(true, Ordering::SeqCst);
                        }
                        if mode == OnPromote::HoldRequest {
                            up_wait();
                        }
                        if up_out.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
                let (mut down_in, mut down_out) = (outbound, inbound);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match down_in.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                wait();
                                if down_out.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        PromoteRelay {
            port,
            seen,
            released,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lets the held request or answer through.
    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

impl Drop for PromoteRelay {
    fn drop(&mut self) {
        self.release();
    }
}

const PROMOTE: &[u8] = b"slaveof\r\n$2\r\nno\r\n$3\r\none";

/// A master and its replica, B's leasegate reaching its node through a
/// [`PromoteRelay`]; A's requests to nodes time out after 300 ms.
fn pair_with_promote_relay(mode: OnPromote, a_extra: &str) -> (Pair, PromoteRelay) {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    support::wait_link_up(&mut replica.client());
    let relay = PromoteRelay::start(replica.port, mode);
    let a = leasegate_with(
        &format!(
            "backend:\n  addr: {}\n  connect_timeout_ms: 300\n",
            master.addr()
        ),
        A_ID,
        a_extra,
    );
    let b = leasegate(&relay.addr(), B_ID, "");
    (with_leases(master, replica, a, b), relay)
}

#[test]
fn a_promotion_that_times_out_but_took_effect_completes_the_switch() {
    let (p, relay) =
        pair_with_promote_relay(OnPromote::HoldAnswer, "pause:\n  on_demote: readonly\n");
    let mut app = p.a.client();
    assert_eq!(app.cmd(&["SET", "before", "1"]), Reply::ok());
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":8000,"lease_ttl_ms":600000}"#,
    );
    assert!(relay.seen.load(Ordering::SeqCst), "SLAVEOF NO ONE was sent");
    // The target was promoted although its answer never came: rolling this
    // node back to master would make two masters. The switch completes.
    assert_eq!(role_of(&p.replica), "master");
    assert!(
        !lease_valid(&p.a),
        "the target node is master, yet the old master's lease is valid: {report}"
    );
    assert_eq!(status, 200, "{report}");
    assert!(lease_valid(&p.b), "the new master was granted the lease");
    assert_eq!(role_of(&p.master), "slave");
    let refused = app.cmd(&["SET", "after", "1"]);
    assert!(refused.error_text().starts_with("READONLY"), "{refused:?}");
    assert_eq!(p.master.client().cmd(&["EXISTS", "after"]), Reply::Int(0));
    assert_eq!(p.replica.client().cmd(&["GET", "before"]), Reply::bulk("1"));
    assert_eq!(status_of(&p.a)["paused"], false);
}

#[test]
fn a_promotion_of_unknown_outcome_leaves_both_nodes_fenced() {
    let (p, relay) = pair_with_promote_relay(OnPromote::HoldRequest, "");
    // A write held by the failover's pause (behind a controller pause).
    let mut held = p.a.client();
    let mut ctl = p.a.client();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "8000", "WRITE"]), Reply::ok());
    held.send(&["SET", "held", "1"]);
    assert_eq!(held.try_read(Duration::from_millis(100)), None, "held");
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":8000,"lease_ttl_ms":600000}"#,
    );
    assert!(relay.seen.load(Ordering::SeqCst), "SLAVEOF NO ONE was sent");
    assert_eq!(status, 409, "{report}");
    // The target did not answer and still says it is a replica, but the
    // promotion may yet run: this node must not be unfenced.
    assert!(
        !lease_valid(&p.a),
        "the old master was unfenced while the promotion may still run: {report}"
    );
    assert!(!lease_valid(&p.b));
    assert!(report.contains("\"both_fenced\":true"), "{report}");
    assert!(
        report.contains("The controller must grant the lease"),
        "{report}"
    );
    assert_eq!(status_of(&p.a)["paused"], false, "the pause ended");
    // The held write was not applied to the old node (nor anywhere).
    let reply = held.read();
    assert!(reply.is_error(), "{reply:?}");
    let mut other = p.a.client();
    assert!(other.cmd(&["SET", "later", "1"]).is_error());
    assert_eq!(p.master.client().cmd(&["EXISTS", "held"]), Reply::Int(0));
    assert_eq!(p.master.client().cmd(&["EXISTS", "later"]), Reply::Int(0));
    // The queued promotion runs after all: still nobody accepts writes...
    relay.release();
    let start = Instant::now();
    while role_of(&p.replica) != "master" {
        assert!(start.elapsed() < PATIENCE, "the held promotion never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!lease_valid(&p.a) && !lease_valid(&p.b));
    // ...until the controller grants the lease to the new master.
    let grant = format!(r#"{{"master_node_id":"{B_ID}","epoch":3,"ttl_ms":600000}}"#);
    let (code, answer) = http(
        p.b.admin_port(),
        "POST",
        "/v1/lease",
        Some(TOKEN),
        Some(&grant),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(other.cmd(&["SET", "later", "2"]), Reply::ok());
    assert_eq!(p.replica.client().cmd(&["GET", "later"]), Reply::bulk("2"));
    assert_eq!(p.master.client().cmd(&["EXISTS", "later"]), Reply::Int(0));
}

#[test]
fn a_refused_promotion_rolls_back_and_the_held_writes_go_to_the_old_master() {
    let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &master.port.to_string(),
        "--rename-command",
        "SLAVEOF",
        "",
    ]);
    support::wait_link_up(&mut replica.client());
    let a = leasegate(&master.addr(), A_ID, "");
    let b = leasegate(&replica.addr(), B_ID, "");
    let p = with_leases(master, replica, a, b);
    let mut held = p.a.client();
    let mut ctl = p.a.client();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "8000", "WRITE"]), Reply::ok());
    held.send(&["SET", "held", "1"]);
    assert_eq!(held.try_read(Duration::from_millis(100)), None, "held");
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":8000}"#,
    );
    assert_eq!(status, 409, "{report}");
    // Nothing changed: the old master is master, unfenced, not demoted.
    assert_eq!(role_of(&p.replica), "slave");
    assert!(lease_valid(&p.a));
    assert!(!lease_valid(&p.b));
    assert!(status_of(&p.a)["demoted"].is_null());
    assert_eq!(held.read(), Reply::ok());
    assert_eq!(p.master.client().cmd(&["GET", "held"]), Reply::bulk("1"));
    assert!(report.contains("certainly still a replica"), "{report}");
    assert!(report.contains("\"both_fenced\":false"), "{report}");
}

#[test]
fn a_refused_lease_grant_leaves_both_fenced_and_held_writes_off_the_old_node() {
    let p = pair("");
    // B's leasegate has seen a later election (epoch 100, A still master):
    // it refuses the failover's grant at A's epoch + 1, after its node was
    // promoted. (A token it refuses is caught before the pause instead.)
    assert!(!p
        .b
        .client()
        .cmd(&["CLUSTERX", "HEARTBEAT", A_ID, "600000", "100"])
        .is_error());
    let mut held = p.a.client();
    let mut ctl = p.a.client();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "8000", "WRITE"]), Reply::ok());
    held.send(&["SET", "held", "1"]);
    assert_eq!(held.try_read(Duration::from_millis(100)), None, "held");
    let (status, report) = failover_http(
        &p,
        r#"{"to":"TARGET","sync_timeout_ms":2000,"pause_timeout_ms":8000}"#,
    );
    assert_eq!(status, 409, "{report}");
    // The target was promoted but holds no lease; the old master is fenced.
    assert_eq!(role_of(&p.replica), "master");
    assert!(!lease_valid(&p.a));
    assert!(!lease_valid(&p.b));
    // The pause ended with the run, and the held write was not applied to
    // the old node.
    assert_eq!(
        status_of(&p.a)["paused"],
        false,
        "the pause did not end with the run: {report}"
    );
    assert!(report.contains("\"both_fenced\":true"), "{report}");
    assert!(
        report.contains("The controller must grant the lease"),
        "{report}"
    );
    assert!(
        report.contains("did not confirm the lease grant at epoch 2"),
        "{report}"
    );
    let reply = held.read();
    assert!(reply.is_error(), "{reply:?}");
    assert_eq!(p.master.client().cmd(&["EXISTS", "held"]), Reply::Int(0));
    assert_eq!(p.replica.client().cmd(&["EXISTS", "held"]), Reply::Int(0));
    assert!(p.a.client().cmd(&["SET", "later", "1"]).is_error());
    assert_eq!(p.master.client().cmd(&["EXISTS", "later"]), Reply::Int(0));
    // The run is over (not "already in progress").
    let (status, report) = failover_http(&p, r#"{"to":"TARGET"}"#);
    assert_eq!(status, 409, "{report}");
    assert!(!report.contains("already in progress"), "{report}");
}
